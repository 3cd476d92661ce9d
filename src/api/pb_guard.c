/*
 * pb_guard.c -- see pb_guard.h.
 *
 * The walk reads each field's tag; a length-delimited field whose
 * descriptor says "message" is walked with that message's descriptor one
 * level deeper, one whose descriptor says "string" is checked.  Everything
 * else is skipped.  The walker's own recursion is bounded by max_depth, so
 * it cannot overflow the stack itself.
 *
 * Every level keeps a frame on the C stack (its bytes, and which field of
 * the level above holds it), linked upwards.  Nothing is allocated while
 * walking; only a refusal builds the field path, by walking the frames
 * back up and re-reading the bytes before each tag to count the
 * position of a repeated field.
 *
 * The walk is never more lenient than protobuf-c: whatever it cannot
 * parse it refuses, rather than leaving the rest unchecked for an
 * unpacker that might read it differently (older protobuf-c releases kept
 * only 32 bits of a length prefix, for one).
 */
#include <string.h>

#include "api/pb_guard.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/utf8.h"

/* protobuf's largest field number. */
#define PB_MAX_FIELD_NUMBER ((1u << 29) - 1)

/* Longest map key shown in a path; longer ones are shown by position. */
#define PATH_MAX_KEY 64

typedef enum walk_result {
	WALK_OK,
	WALK_MALFORMED,
	WALK_TOO_DEEP,
	WALK_BAD_STRING, /* err filled */
} walk_result;

/* One message being walked. */
typedef struct frame {
	const struct frame *up; /* the message holding this one; NULL: top */
	const ProtobufCMessageDescriptor *desc;
	const uint8_t *start, *end;            /* this message's bytes */
	const ProtobufCFieldDescriptor *field; /* up's field holding it */
	const uint8_t *tag;                    /* that field's tag in up */
} frame;

typedef struct walker {
	pemba_error *err;
} walker;

/* ===================================================================== */
/* Wire format                                                           */
/* ===================================================================== */

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

/* Reads one field at *p: its number, wire type and, for length-delimited
 * fields, its payload.  Advances *p past the field.  False if malformed. */
static bool next_field(const uint8_t **p, const uint8_t *end, uint32_t *number,
                       int *wire_type, const uint8_t **payload,
                       size_t *payload_len)
{
	uint64_t key, v;
	/* Field numbers are 1 to 2^29 - 1.  protobuf-c reads 0 written in
	 * two bytes (0x80 0x00) as an unknown field, and a larger one in
	 * five bytes, and cannot pack either back. */
	if (!read_varint(p, end, &key) || key >> 3 == 0 ||
	    key >> 3 > PB_MAX_FIELD_NUMBER)
		return false;
	*number = (uint32_t)(key >> 3);
	*wire_type = (int)(key & 7);
	*payload = NULL;
	*payload_len = 0;
	switch (key & 7) {
	case 0:
		return read_varint(p, end, &v);
	case 1:
		if (end - *p < 8)
			return false;
		*p += 8;
		return true;
	case 5:
		if (end - *p < 4)
			return false;
		*p += 4;
		return true;
	case 2:
		if (!read_varint(p, end, &v) || v > (uint64_t)(end - *p))
			return false;
		*payload = *p;
		*payload_len = (size_t)v;
		*p += v;
		return true;
	default: /* groups: protobuf-c refuses them too */
		return false;
	}
}

static const ProtobufCFieldDescriptor *
find_field(const ProtobufCMessageDescriptor *d, uint32_t number)
{
	for (unsigned i = 0; i < d->n_fields; i++)
		if (d->fields[i].id == number)
			return &d->fields[i];
	return NULL;
}

/* protoc-c turns `map<K, V> name` into a repeated nested message
 * `NameEntry { K key = 1; V value = 2; }`. */
static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
	size_t n = d ? strlen(d->short_name) : 0;
	return n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 &&
	       d->n_fields == 2 && d->fields[0].id == 1 &&
	       strcmp(d->fields[0].name, "key") == 0 && d->fields[1].id == 2 &&
	       strcmp(d->fields[1].name, "value") == 0;
}

/* ===================================================================== */
/* Field paths (only built for a refusal)                                */
/* ===================================================================== */

/* How many times field `number` occurs in fr's bytes before `tag`. */
static size_t position_of(const frame *fr, uint32_t number, const uint8_t *tag)
{
	size_t count = 0;
	const uint8_t *p = fr->start;
	while (p < tag) {
		uint32_t n;
		int wt;
		const uint8_t *payload;
		size_t plen;
		if (!next_field(&p, fr->end, &n, &wt, &payload, &plen))
			break; /* cannot happen: the walk got past it */
		if (n == number)
			count++;
	}
	return count;
}

/* The key of a map entry (its last field 1), if it is worth printing:
 * short valid UTF-8 without controls, quotes or backslashes. */
static bool printable_key(const frame *entry, const uint8_t **key, size_t *len)
{
	const uint8_t *p = entry->start;
	*key = (const uint8_t *)"";
	*len = 0;
	while (p < entry->end) {
		uint32_t n;
		int wt;
		const uint8_t *payload;
		size_t plen;
		if (!next_field(&p, entry->end, &n, &wt, &payload, &plen))
			return false;
		if (n == 1 && wt == 2) {
			*key = payload;
			*len = plen;
		}
	}
	if (*len > PATH_MAX_KEY || utf8_check((const char *)*key, *len) != *len)
		return false;
	for (size_t i = 0; i < *len; i++)
		if ((*key)[i] < 0x20 || (*key)[i] == 0x7f || (*key)[i] == '"' ||
		    (*key)[i] == '\\')
			return false;
	return true;
}

/* Appends the segment for field f of message `in` (tag at `tag`); `held`
 * is the frame of the message f holds, NULL for a string. */
static void append_segment(strbuf *sb, const frame *in,
                           const ProtobufCFieldDescriptor *f,
                           const uint8_t *tag, const frame *held)
{
	/* A map's value is named by the entry's key: fields["k"], not
	 * fields["k"].value. */
	if (is_map_entry(in->desc) && f->id == 2)
		return;
	if (sb->len > 0)
		strbuf_putc(sb, '.');
	strbuf_puts(sb, f->name);
	if (f->label != PROTOBUF_C_LABEL_REPEATED)
		return;
	const uint8_t *key;
	size_t key_len;
	if (held && is_map_entry(held->desc) &&
	    printable_key(held, &key, &key_len)) {
		strbuf_puts(sb, "[\"");
		strbuf_append(sb, (const char *)key, key_len);
		strbuf_puts(sb, "\"]");
		return;
	}
	strbuf_printf(sb, "[%zu]", position_of(in, f->id, tag));
}

/* Appends the path from the top message down to fr. */
static void append_path(strbuf *sb, const frame *fr)
{
	if (!fr->up)
		return;
	append_path(sb, fr->up);
	append_segment(sb, fr->up, fr->field, fr->tag, fr);
}

/* ===================================================================== */
/* The walk                                                              */
/* ===================================================================== */

static walk_result check_string(walker *w, const frame *fr,
                                const ProtobufCFieldDescriptor *f,
                                const uint8_t *tag, const uint8_t *s,
                                size_t len)
{
	const char *problem = NULL;
	if (memchr(s, '\0', len))
		problem = "contains a NUL byte";
	else if (utf8_check((const char *)s, len) != len)
		problem = "is not valid UTF-8";
	if (!problem)
		return WALK_OK;
	strbuf path;
	strbuf_init(&path);
	append_path(&path, fr);
	append_segment(&path, fr, f, tag, NULL);
	error_set(w->err, PEMBA_EINVAL, "invalid argument: field %s %s",
	          path.data, problem);
	strbuf_free(&path);
	return WALK_BAD_STRING;
}

static walk_result walk(walker *w, const frame *fr, int depth_left)
{
	if (depth_left < 0)
		return WALK_TOO_DEEP;
	const uint8_t *p = fr->start;
	while (p < fr->end) {
		const uint8_t *tag = p, *payload;
		uint32_t number;
		int wire_type;
		size_t len;
		if (!next_field(&p, fr->end, &number, &wire_type, &payload,
		                &len))
			return WALK_MALFORMED;
		if (wire_type != 2)
			continue;
		const ProtobufCFieldDescriptor *f =
		    find_field(fr->desc, number);
		if (!f)
			continue; /* unknown: kept as bytes */
		walk_result rc = WALK_OK;
		if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			frame child = {.up = fr,
			               .desc = f->descriptor,
			               .start = payload,
			               .end = payload + len,
			               .field = f,
			               .tag = tag};
			rc = walk(w, &child, depth_left - 1);
		} else if (f->type == PROTOBUF_C_TYPE_STRING) {
			rc = check_string(w, fr, f, tag, payload, len);
		}
		if (rc != WALK_OK)
			return rc;
	}
	return WALK_OK;
}

int pb_guard_check(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                   size_t len, int max_depth, pemba_error *err)
{
	walker w = {.err = err};
	frame top = {.desc = d, .start = data, .end = data + len};
	switch (walk(&w, &top, max_depth)) {
	case WALK_OK:
		return 0;
	case WALK_TOO_DEEP:
		return error_set(err, PEMBA_EINVAL,
		                 "malformed %s: messages nested more than %d "
		                 "deep",
		                 d->name, max_depth);
	case WALK_MALFORMED:
		return error_set(err, PEMBA_EINVAL,
		                 "malformed %s: could not decode protobuf "
		                 "message",
		                 d->name);
	default:
		return PEMBA_EINVAL;
	}
}

bool pb_guard_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                       size_t len, int max_depth)
{
	pemba_error ignored;
	return pb_guard_check(d, data, len, max_depth, &ignored) == 0;
}
