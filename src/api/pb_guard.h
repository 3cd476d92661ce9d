/*
 * pb_guard.h -- checks untrusted protobuf bytes before protobuf-c unpacks
 * them.  Two things protobuf-c does not do:
 *
 *   - Nesting.  protobuf-c's unpacker recurses once per nested message and
 *     has no depth limit, so a request of a few megabytes of nested
 *     google.protobuf.Struct/Value could exhaust a worker thread's stack.
 *   - Strings.  protobuf-c unpacks a `string` field as a NUL-terminated
 *     char *, so a NUL byte inside one silently truncates it
 *     (`doc:"secret\0junk"` would reach the handler as `doc:secret`), and
 *     it does not check that the bytes are UTF-8, which proto3 requires.
 *
 * pb_guard walks the wire format with the message descriptors (recursion
 * bounded by the depth limit), descending into every length-delimited
 * field whose descriptor says "message" -- repeated fields, map entries,
 * google.protobuf.Struct / Value / ListValue, oneofs alike -- and looks at
 * every field whose descriptor says "string".  Unknown fields and `bytes`
 * are skipped: protobuf-c keeps them as (pointer, length).
 *
 * Handlers do not call this directly: svc_unpack() (services.h) is the
 * one way request bytes become a message.
 */
#ifndef PEMBA_API_PB_GUARD_H
#define PEMBA_API_PB_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "pemba.h"

/* Nesting allowed in requests: far above any real message (a caveat
 * context is rarely deeper than a handful of levels). */
#define PB_GUARD_MAX_DEPTH 64

/* Checks data[0..len) as a message of type d: messages nest at most
 * max_depth deep, the wire format is well-formed as far as the walk needs
 * (tags, varints, lengths within their message), and every string field
 * at every level is valid UTF-8 without a NUL byte.  Returns 0, or
 * PEMBA_EINVAL with err's message one of
 *   "malformed <type>: messages nested more than <max_depth> deep"
 *   "malformed <type>: could not decode protobuf message"
 *   "invalid argument: field <path> contains a NUL byte"
 *   "invalid argument: field <path> is not valid UTF-8"
 * where <path> names the field from the top message down, as the .proto
 * spells it: `updates[0].relationship.resource.object_id`,
 * `context.fields["k"].list_value.values[2].string_value` (a map entry is
 * shown by its key when the key is printable, else by its position:
 * `fields[3].key`).  Bytes the walk accepts may still fail protobuf-c's
 * unpack (wrong wire type for a field, ...); bytes the walk refuses never
 * reach it, so every string protobuf-c then returns has strlen() equal to
 * its length on the wire. */
int pb_guard_check(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                   size_t len, int max_depth, pemba_error *err);

/* For callers written before svc_unpack() existed (`depth_ok ? unpack :
 * NULL`): true only when pb_guard_check accepts, so such code still
 * refuses bad strings, though it cannot say which field.  New code calls
 * svc_unpack(). */
bool pb_guard_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                       size_t len, int max_depth);

#endif
