/*
 * pb_guard.h -- checks untrusted protobuf bytes before protobuf-c unpacks
 * them.  protobuf-c's unpacker recurses once per nested message and has no
 * depth limit, so a request of a few megabytes of nested
 * google.protobuf.Struct/Value could exhaust a worker thread's stack.
 * pb_guard walks the wire format with the message descriptors, iteratively
 * bounded, and refuses nesting deeper than a limit.
 */
#ifndef PEMBA_API_PB_GUARD_H
#define PEMBA_API_PB_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Nesting allowed in requests: far above any real message (a caveat
 * context is rarely deeper than a handful of levels). */
#define PB_GUARD_MAX_DEPTH 64

/* True if data[0..len) nests messages at most max_depth deep (and is
 * well-formed enough to walk).  Malformed bytes return true: the
 * unpacker reports those itself. */
bool pb_guard_depth_ok(const ProtobufCMessageDescriptor *d,
                       const uint8_t *data, size_t len, int max_depth);

#endif
