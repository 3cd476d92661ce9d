/*
 * pb_guard.c -- see pb_guard.h.
 *
 * The walk reads each field's tag; a length-delimited field whose
 * descriptor says "message" is walked with that message's descriptor one
 * level deeper.  Everything else is skipped.  The walker's own recursion
 * is bounded by max_depth, so it cannot overflow the stack itself.
 */
#include "api/pb_guard.h"

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t c = *(*p)++;
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*out = v;
			return true;
		}
	}
	return false;
}

static const ProtobufCFieldDescriptor *
find_field(const ProtobufCMessageDescriptor *d, uint32_t number)
{
	for (unsigned i = 0; i < d->n_fields; i++)
		if (d->fields[i].id == number)
			return &d->fields[i];
	return NULL;
}

/* Returns false only when nesting exceeds the limit. */
static bool walk(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                 const uint8_t *end, int depth_left)
{
	if (depth_left < 0)
		return false;
	while (p < end) {
		uint64_t key, v;
		if (!read_varint(&p, end, &key))
			return true; /* malformed: the unpacker reports it */
		switch (key & 7) {
		case 0:
			if (!read_varint(&p, end, &v))
				return true;
			break;
		case 1:
			if (end - p < 8)
				return true;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				return true;
			p += 4;
			break;
		case 2: {
			if (!read_varint(&p, end, &v) ||
			    v > (uint64_t)(end - p))
				return true;
			const ProtobufCFieldDescriptor *f =
			    find_field(d, (uint32_t)(key >> 3));
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
			    !walk(f->descriptor, p, p + v, depth_left - 1))
				return false;
			p += v;
			break;
		}
		default:
			return true;
		}
	}
	return true;
}

bool pb_guard_depth_ok(const ProtobufCMessageDescriptor *d,
                       const uint8_t *data, size_t len, int max_depth)
{
	return walk(d, data, data + len, max_depth);
}
