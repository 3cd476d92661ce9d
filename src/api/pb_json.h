/*
 * pb_json.h -- proto3 JSON for any protobuf-c message, driven by its
 * ProtobufCMessageDescriptor (the HTTP/JSON gateway, src/gateway/).
 *
 * The mapping is the one protojson (Go) implements and grpc-gateway uses:
 *  - field names: lowerCamelCase JSON names on output; on input both the
 *    JSON name and the original proto field name are accepted;
 *  - enums as their value names (numbers accepted on input; a number
 *    with no name is written as a number);
 *  - int64, uint64 (and their fixed/sint variants) as decimal strings on
 *    output; strings or JSON numbers on input;
 *  - bytes as standard base64 (URL-safe and unpadded accepted on input);
 *  - float/double as JSON numbers, "NaN", "Infinity", "-Infinity";
 *  - google.protobuf.Timestamp as RFC 3339 ("2024-01-02T03:04:05.5Z"),
 *    Duration as "1.500s", Struct / Value / ListValue as plain JSON,
 *    the wrapper types (google.protobuf.*Value) as their bare value,
 *    Any as {"@type": URL, ...fields of the packed message} when the
 *    type is one pb_json knows (pbj_register_any), else with "value"
 *    holding the base64 bytes;
 *  - oneofs: only the member that is set is written; two members of one
 *    oneof in the input are an error;
 *  - maps (repeated *Entry messages with key = 1 and value = 2) as JSON
 *    objects.
 *
 * With PBJ_EMIT_UNPOPULATED (grpc-gateway's default, which SpiceDB's
 * gateway keeps) fields without presence are written even when they hold
 * their default: "" / 0 / false / the zero enum's name / [] / {} / null for
 * an unset message field.  Oneof members and proto3 `optional` fields that
 * are not set are never written.
 */
#ifndef PEMBA_API_PB_JSON_H
#define PEMBA_API_PB_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "pemba.h"
#include "util/strbuf.h"

enum {
	/* Output: write fields that hold their default (see above). */
	PBJ_EMIT_UNPOPULATED = 1u << 0,
	/* Input: skip JSON members that name no field (grpc-gateway's
	 * DiscardUnknown).  Without it they are an error. */
	PBJ_DISCARD_UNKNOWN = 1u << 1,
};

/* Deepest nesting of messages (and JSON values inside Struct fields)
 * accepted on input or written on output. */
#define PBJ_MAX_DEPTH 64

/* Appends the proto3 JSON object for msg. */
void pbj_encode(strbuf *sb, const ProtobufCMessage *msg, unsigned flags);

/* Unpacks data[0..len) as a message of type desc and appends its JSON.
 * 0, or PEMBA_EINVAL with *err filled when the bytes do not parse. */
int pbj_encode_bytes(strbuf *sb, const ProtobufCMessageDescriptor *desc,
                     const uint8_t *data, size_t len, unsigned flags,
                     pemba_error *err);

/* Parses the JSON text json[0..len) (one JSON object; an empty or
 * all-whitespace text is the empty message) as a message of type desc and
 * appends its protobuf wire encoding to *wire.  0, or PEMBA_EINVAL with
 * *err naming the problem (and the field's path, e.g.
 * `resource.objectType`). */
int pbj_decode(const ProtobufCMessageDescriptor *desc, const char *json,
               size_t len, unsigned flags, strbuf *wire, pemba_error *err);

/* The same from a parsed jansson value (a json_t *; void * here so users
 * need not include jansson). */
int pbj_decode_json(const ProtobufCMessageDescriptor *desc, const void *json,
                    unsigned flags, strbuf *wire, pemba_error *err);

/* pbj_decode, then protobuf_c_message_unpack: the message (free with
 * protobuf_c_message_free_unpacked(msg, NULL)), or NULL with *err. */
ProtobufCMessage *pbj_decode_message(const ProtobufCMessageDescriptor *desc,
                                     const char *json, size_t len,
                                     unsigned flags, pemba_error *err);

/* The lowerCamelCase JSON name of a proto field name ("object_type" ->
 * "objectType"), as protoc computes it, into buf (size cap). */
void pbj_json_name(const char *proto_name, char *buf, size_t cap);

/* Makes desc known to google.protobuf.Any ("type.googleapis.com/" +
 * desc->name).  The well-known types and google.rpc.Status are known
 * from the start.  Not thread-safe: register before serving. */
void pbj_register_any(const ProtobufCMessageDescriptor *desc);

#endif
