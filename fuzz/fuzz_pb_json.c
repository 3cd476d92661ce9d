/*
 * fuzz_pb_json.c -- libFuzzer target for the HTTP gateway's JSON mapping
 * (src/api/pb_json.h): arbitrary bytes as the JSON body of the requests the
 * gateway parses most (WriteRelationships, CheckPermission, Watch: every
 * field type they hold, oneofs, Struct, Timestamp).  Whatever is accepted
 * must unpack with protobuf-c and encode back to JSON that decodes to the
 * same wire bytes; whatever is refused must come with a message.  abort()
 * flags a violation.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/pb_json.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	static const ProtobufCMessageDescriptor *const descs[] = {
	    &authzed__api__v1__write_relationships_request__descriptor,
	    &authzed__api__v1__check_permission_request__descriptor,
	    &authzed__api__v1__watch_request__descriptor,
	    &authzed__api__v1__check_bulk_permissions_response__descriptor,
	};
	const ProtobufCMessageDescriptor *d = descs[data[0] % 4];
	const char *json = (const char *)data + 1;
	size_t len = size - 1;
	pemba_error err = {0};
	strbuf w1;
	strbuf_init(&w1);
	if (pbj_decode(d, json, len, PBJ_DISCARD_UNKNOWN, &w1, &err) < 0) {
		if (err.message[0] == '\0')
			abort();
		strbuf_free(&w1);
		return 0;
	}
	ProtobufCMessage *m = protobuf_c_message_unpack(
	    d, NULL, w1.len, (const uint8_t *)w1.data);
	if (!m)
		abort(); /* accepted JSON must make a message */
	strbuf out;
	strbuf_init(&out);
	pbj_encode(&out, m, PBJ_EMIT_UNPOPULATED);
	protobuf_c_message_free_unpacked(m, NULL);
	/* The JSON written reads back (to the same message: compare the
	 * re-encoded JSON, wire bytes may order map entries alike). */
	strbuf w2;
	strbuf_init(&w2);
	if (pbj_decode(d, out.data, out.len, 0, &w2, &err) < 0)
		abort();
	ProtobufCMessage *m2 = protobuf_c_message_unpack(
	    d, NULL, w2.len, (const uint8_t *)w2.data);
	if (!m2)
		abort();
	strbuf out2;
	strbuf_init(&out2);
	pbj_encode(&out2, m2, PBJ_EMIT_UNPOPULATED);
	protobuf_c_message_free_unpacked(m2, NULL);
	if (out.len != out2.len || memcmp(out.data, out2.data, out.len) != 0)
		abort();
	strbuf_free(&w1);
	strbuf_free(&w2);
	strbuf_free(&out);
	strbuf_free(&out2);
	return 0;
}
