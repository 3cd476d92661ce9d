/*
 * pb_json.c -- proto3 JSON <-> protobuf-c messages (see pb_json.h).
 *
 * Output walks an unpacked message through its descriptor.  Input walks
 * the jansson tree and writes protobuf wire bytes directly (no message
 * struct is built, so nothing has to be freed field by field); callers
 * that want a struct unpack those bytes (pbj_decode_message).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api/pb_json.h"
#include "api/struct_json.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "util/error.h"

#define MEMBER(type, msg, off) (*(type *)((char *)(msg) + (off)))
#define CMEMBER(type, msg, off) (*(const type *)((const char *)(msg) + (off)))

/* ===================================================================== */
/* Any registry                                                          */
/* ===================================================================== */

#define ANY_MAX 64
static const ProtobufCMessageDescriptor *any_types[ANY_MAX];
static size_t n_any_types;

void pbj_register_any(const ProtobufCMessageDescriptor *desc)
{
	for (size_t i = 0; i < n_any_types; i++)
		if (any_types[i] == desc)
			return;
	if (n_any_types < ANY_MAX)
		any_types[n_any_types++] = desc;
}

static const ProtobufCMessageDescriptor *any_lookup(const char *url)
{
	const char *slash = strrchr(url, '/');
	const char *name = slash ? slash + 1 : url;
	static const ProtobufCMessageDescriptor *const builtin[] = {
	    &google__protobuf__struct__descriptor,
	    &google__protobuf__value__descriptor,
	    &google__protobuf__list_value__descriptor,
	    &google__protobuf__timestamp__descriptor,
	    &google__protobuf__duration__descriptor,
	    &google__protobuf__any__descriptor,
	    &google__rpc__status__descriptor,
	};
	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (strcmp(builtin[i]->name, name) == 0)
			return builtin[i];
	for (size_t i = 0; i < n_any_types; i++)
		if (strcmp(any_types[i]->name, name) == 0)
			return any_types[i];
	return NULL;
}

/* ===================================================================== */
/* Names                                                                 */
/* ===================================================================== */

void pbj_json_name(const char *proto_name, char *buf, size_t cap)
{
	size_t n = 0;
	bool upper = false;
	for (const char *p = proto_name; *p && n + 1 < cap; p++) {
		if (*p == '_') {
			upper = true;
			continue;
		}
		char c = *p;
		if (upper && c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		upper = false;
		buf[n++] = c;
	}
	buf[n] = '\0';
}

typedef enum wkt {
	WKT_NONE,
	WKT_STRUCT,
	WKT_VALUE,
	WKT_LIST,
	WKT_TIMESTAMP,
	WKT_DURATION,
	WKT_ANY,
	WKT_WRAPPER,
} wkt;

static wkt wkt_of(const ProtobufCMessageDescriptor *d)
{
	if (strncmp(d->name, "google.protobuf.", 16) != 0)
		return WKT_NONE;
	const char *n = d->name + 16;
	if (strcmp(n, "Struct") == 0)
		return WKT_STRUCT;
	if (strcmp(n, "Value") == 0)
		return WKT_VALUE;
	if (strcmp(n, "ListValue") == 0)
		return WKT_LIST;
	if (strcmp(n, "Timestamp") == 0)
		return WKT_TIMESTAMP;
	if (strcmp(n, "Duration") == 0)
		return WKT_DURATION;
	if (strcmp(n, "Any") == 0)
		return WKT_ANY;
	static const char *const wrappers[] = {
	    "DoubleValue", "FloatValue",  "Int64Value",
	    "UInt64Value", "Int32Value",  "UInt32Value",
	    "BoolValue",   "StringValue", "BytesValue"};
	for (size_t i = 0; i < sizeof(wrappers) / sizeof(wrappers[0]); i++)
		if (strcmp(n, wrappers[i]) == 0)
			return WKT_WRAPPER;
	return WKT_NONE;
}

/* A map field: repeated, of a message type "<CamelName>Entry" whose two
 * fields are key = 1 and value = 2 (protoc-c keeps no map flag). */
static bool is_map_field(const ProtobufCFieldDescriptor *f)
{
	if (f->label != PROTOBUF_C_LABEL_REPEATED ||
	    f->type != PROTOBUF_C_TYPE_MESSAGE)
		return false;
	const ProtobufCMessageDescriptor *e = f->descriptor;
	if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
	    strcmp(e->fields[0].name, "key") != 0 ||
	    strcmp(e->fields[1].name, "value") != 0)
		return false;
	char camel[256];
	pbj_json_name(f->name, camel, sizeof(camel));
	if (camel[0] >= 'a' && camel[0] <= 'z')
		camel[0] = (char)(camel[0] - 'a' + 'A');
	size_t cl = strlen(camel);
	size_t sl = strlen(e->short_name);
	return sl == cl + 5 && strncmp(e->short_name, camel, cl) == 0 &&
	       strcmp(e->short_name + cl, "Entry") == 0;
}

/* ===================================================================== */
/* Output                                                                */
/* ===================================================================== */

static const char b64std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_base64(strbuf *sb, const uint8_t *p, size_t n)
{
	strbuf_putc(sb, '"');
	size_t i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v =
		    (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		char o[4] = {b64std[v >> 18], b64std[(v >> 12) & 63],
		             b64std[(v >> 6) & 63], b64std[v & 63]};
		strbuf_append(sb, o, 4);
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		char o[4] = {b64std[v >> 18], b64std[(v >> 12) & 63], '=', '='};
		strbuf_append(sb, o, 4);
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		char o[4] = {b64std[v >> 18], b64std[(v >> 12) & 63],
		             b64std[(v >> 6) & 63], '='};
		strbuf_append(sb, o, 4);
	}
	strbuf_putc(sb, '"');
}

/* Shortest text that reads back as the same double (or float). */
static void put_float(strbuf *sb, double v, bool is_float)
{
	if (isnan(v)) {
		strbuf_puts(sb, "\"NaN\"");
		return;
	}
	if (isinf(v)) {
		strbuf_puts(sb, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
		return;
	}
	char buf[64];
	for (int prec = is_float ? 6 : 15; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (is_float ? (float)strtod(buf, NULL) == (float)v
		             : strtod(buf, NULL) == v)
			break;
	}
	strbuf_puts(sb, buf);
}

/* "" / ".5" / ".500" / ".500001" / ".000000001" as protojson. */
static void put_nanos(strbuf *sb, int32_t nanos)
{
	if (nanos == 0)
		return;
	if (nanos % 1000000 == 0)
		strbuf_printf(sb, ".%03d", nanos / 1000000);
	else if (nanos % 1000 == 0)
		strbuf_printf(sb, ".%06d", nanos / 1000);
	else
		strbuf_printf(sb, ".%09d", nanos);
}

static void put_timestamp(strbuf *sb, const Google__Protobuf__Timestamp *t)
{
	time_t secs = (time_t)t->seconds;
	struct tm tm;
	if (!gmtime_r(&secs, &tm)) {
		strbuf_puts(sb, "null");
		return;
	}
	strbuf_printf(sb, "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
	              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	              tm.tm_sec);
	put_nanos(sb, t->nanos);
	strbuf_puts(sb, "Z\"");
}

static void put_duration(strbuf *sb, const Google__Protobuf__Duration *d)
{
	int64_t s = d->seconds;
	int32_t n = d->nanos;
	strbuf_putc(sb, '"');
	if (s < 0 || n < 0) {
		strbuf_putc(sb, '-');
		s = s < 0 ? -s : s;
		n = n < 0 ? -n : n;
	}
	strbuf_printf(sb, "%" PRId64, s);
	put_nanos(sb, n);
	strbuf_puts(sb, "s\"");
}

static void encode_message(strbuf *sb, const ProtobufCMessage *msg,
                           unsigned flags, int depth);

/* One value of a field (an element, for repeated fields) at p. */
static void encode_scalar(strbuf *sb, const ProtobufCFieldDescriptor *f,
                          const void *p, unsigned flags, int depth)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		strbuf_printf(sb, "%" PRId32, *(const int32_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		strbuf_printf(sb, "%" PRIu32, *(const uint32_t *)p);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		strbuf_printf(sb, "\"%" PRId64 "\"", *(const int64_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		strbuf_printf(sb, "\"%" PRIu64 "\"", *(const uint64_t *)p);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		put_float(sb, *(const float *)p, true);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		put_float(sb, *(const double *)p, false);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		strbuf_puts(sb,
		            *(const protobuf_c_boolean *)p ? "true" : "false");
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		const ProtobufCEnumValue *ev =
		    protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		if (ev)
			api_json_string(sb, ev->name, strlen(ev->name));
		else
			strbuf_printf(sb, "%d", v);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		if (!s)
			s = "";
		api_json_string(sb, s, strlen(s));
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;
		put_base64(sb, b->data, b->len);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
		if (!m)
			strbuf_puts(sb, "null");
		else
			encode_message(sb, m, flags, depth + 1);
		break;
	}
	}
}

static size_t scalar_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

/* Whether the value at p is its type's default (proto3 "unpopulated"). */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return !s || !*s;
	}
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)p)->len == 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(ProtobufCMessage *const *)p == NULL;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)p == 0 && !signbit(*(const float *)p);
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)p == 0 && !signbit(*(const double *)p);
	default: {
		size_t n = scalar_size(f->type);
		static const uint8_t zero[8];
		return memcmp(p, zero, n) == 0;
	}
	}
}

static void encode_wkt(strbuf *sb, const ProtobufCMessage *msg, wkt w,
                       unsigned flags, int depth)
{
	switch (w) {
	case WKT_STRUCT:
		api_json_struct(sb, (const Google__Protobuf__Struct *)msg);
		return;
	case WKT_VALUE:
		api_json_value(sb, (const Google__Protobuf__Value *)msg);
		return;
	case WKT_LIST: {
		const Google__Protobuf__ListValue *l = (const void *)msg;
		strbuf_putc(sb, '[');
		for (size_t k = 0; k < l->n_values; k++) {
			if (k)
				strbuf_putc(sb, ',');
			api_json_value(sb, l->values[k]);
		}
		strbuf_putc(sb, ']');
		return;
	}
	case WKT_TIMESTAMP:
		put_timestamp(sb, (const Google__Protobuf__Timestamp *)msg);
		return;
	case WKT_DURATION:
		put_duration(sb, (const Google__Protobuf__Duration *)msg);
		return;
	case WKT_WRAPPER: {
		const ProtobufCFieldDescriptor *f = &msg->descriptor->fields[0];
		encode_scalar(sb, f, (const char *)msg + f->offset, flags,
		              depth);
		return;
	}
	case WKT_ANY: {
		const Google__Protobuf__Any *a = (const void *)msg;
		const char *url = a->type_url ? a->type_url : "";
		const ProtobufCMessageDescriptor *d = any_lookup(url);
		ProtobufCMessage *inner =
		    d ? protobuf_c_message_unpack(d, NULL, a->value.len,
		                                  a->value.data)
		      : NULL;
		strbuf_puts(sb, "{\"@type\":");
		api_json_string(sb, url, strlen(url));
		if (!inner) {
			strbuf_puts(sb, ",\"value\":");
			put_base64(sb, a->value.data, a->value.len);
			strbuf_putc(sb, '}');
			return;
		}
		wkt iw = wkt_of(d);
		if (iw != WKT_NONE) {
			strbuf_puts(sb, ",\"value\":");
			encode_wkt(sb, inner, iw, flags, depth + 1);
			strbuf_putc(sb, '}');
		} else {
			strbuf tmp;
			strbuf_init(&tmp);
			encode_message(&tmp, inner, flags, depth + 1);
			/* Splice the inner object's members after @type. */
			if (tmp.len > 2) {
				strbuf_putc(sb, ',');
				strbuf_append(sb, tmp.data + 1, tmp.len - 1);
			} else {
				strbuf_putc(sb, '}');
			}
			strbuf_free(&tmp);
		}
		protobuf_c_message_free_unpacked(inner, NULL);
		return;
	}
	default:
		return;
	}
}

static void encode_message(strbuf *sb, const ProtobufCMessage *msg,
                           unsigned flags, int depth)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	if (depth > PBJ_MAX_DEPTH) {
		strbuf_puts(sb, "null");
		return;
	}
	wkt w = wkt_of(d);
	if (w != WKT_NONE) {
		encode_wkt(sb, msg, w, flags, depth);
		return;
	}
	bool emit = flags & PBJ_EMIT_UNPOPULATED;
	bool first = true;
	strbuf_putc(sb, '{');
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = (const char *)msg + f->offset;
		char jname[256];
		pbj_json_name(f->name, jname, sizeof(jname));
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = CMEMBER(size_t, msg, f->quantifier_offset);
			if (n == 0 && !emit)
				continue;
			if (!first)
				strbuf_putc(sb, ',');
			first = false;
			api_json_string(sb, jname, strlen(jname));
			strbuf_putc(sb, ':');
			const char *arr = *(char *const *)p;
			size_t sz = scalar_size(f->type);
			if (is_map_field(f)) {
				const ProtobufCFieldDescriptor *kf =
				    &((const ProtobufCMessageDescriptor *)
				          f->descriptor)
				         ->fields[0];
				const ProtobufCFieldDescriptor *vf =
				    &((const ProtobufCMessageDescriptor *)
				          f->descriptor)
				         ->fields[1];
				strbuf_putc(sb, '{');
				for (size_t k = 0; k < n; k++) {
					const ProtobufCMessage *e =
					    ((ProtobufCMessage *const *)arr)[k];
					if (k)
						strbuf_putc(sb, ',');
					const void *kp =
					    (const char *)e + kf->offset;
					if (kf->type ==
					    PROTOBUF_C_TYPE_STRING) {
						encode_scalar(sb, kf, kp, flags,
						              depth);
					} else {
						strbuf tmp;
						strbuf_init(&tmp);
						encode_scalar(&tmp, kf, kp,
						              flags, depth);
						const char *t = tmp.data;
						size_t tl = tmp.len;
						if (tl && t[0] == '"') {
							t++;
							tl -= 2;
						}
						api_json_string(sb, t, tl);
						strbuf_free(&tmp);
					}
					strbuf_putc(sb, ':');
					const void *vp =
					    (const char *)e + vf->offset;
					if (vf->type ==
					        PROTOBUF_C_TYPE_MESSAGE &&
					    *(ProtobufCMessage *const *)vp ==
					        NULL)
						strbuf_puts(sb, "{}");
					else
						encode_scalar(sb, vf, vp, flags,
						              depth);
				}
				strbuf_putc(sb, '}');
				continue;
			}
			strbuf_putc(sb, '[');
			for (size_t k = 0; k < n; k++) {
				if (k)
					strbuf_putc(sb, ',');
				encode_scalar(sb, f, arr + k * sz, flags,
				              depth);
			}
			strbuf_putc(sb, ']');
			continue;
		}
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t c =
			    CMEMBER(uint32_t, msg, f->quantifier_offset);
			if (c != f->id)
				continue;
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
			/* proto3 `optional` (or proto2): presence decides. */
			if (f->type == PROTOBUF_C_TYPE_STRING ||
			    f->type == PROTOBUF_C_TYPE_MESSAGE) {
				if (*(void *const *)p == NULL)
					continue;
			} else if (!CMEMBER(protobuf_c_boolean, msg,
			                    f->quantifier_offset)) {
				continue;
			}
		} else if (!emit && is_default(f, p)) {
			continue;
		}
		if (!first)
			strbuf_putc(sb, ',');
		first = false;
		api_json_string(sb, jname, strlen(jname));
		strbuf_putc(sb, ':');
		if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
		    *(ProtobufCMessage *const *)p == NULL &&
		    (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
			/* A set oneof member with no message: empty. */
			wkt fw = wkt_of(f->descriptor);
			strbuf_puts(sb, fw == WKT_NONE || fw == WKT_STRUCT
			                    ? "{}"
			                    : "null");
			continue;
		}
		encode_scalar(sb, f, p, flags, depth);
	}
	strbuf_putc(sb, '}');
}

void pbj_encode(strbuf *sb, const ProtobufCMessage *msg, unsigned flags)
{
	encode_message(sb, msg, flags, 0);
}

int pbj_encode_bytes(strbuf *sb, const ProtobufCMessageDescriptor *desc,
                     const uint8_t *data, size_t len, unsigned flags,
                     pemba_error *err)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
	if (!m)
		return error_set(err, PEMBA_EINVAL,
		                 "could not decode a %s message", desc->name);
	pbj_encode(sb, m, flags);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

/* ===================================================================== */
/* Input: wire writing                                                   */
/* ===================================================================== */

static void put_varint(strbuf *w, uint64_t v)
{
	char b[10];
	size_t n = 0;
	do {
		b[n] = (char)(v & 0x7f);
		v >>= 7;
		if (v)
			b[n] |= (char)0x80;
		n++;
	} while (v);
	strbuf_append(w, b, n);
}

static void put_tag(strbuf *w, uint32_t id, int wire_type)
{
	put_varint(w, ((uint64_t)id << 3) | (uint64_t)wire_type);
}

static void put_fixed(strbuf *w, uint64_t v, int bytes)
{
	char b[8];
	for (int i = 0; i < bytes; i++)
		b[i] = (char)((v >> (8 * i)) & 0xff);
	strbuf_append(w, b, (size_t)bytes);
}

static void put_len(strbuf *w, uint32_t id, const char *data, size_t n)
{
	put_tag(w, id, 2);
	put_varint(w, n);
	strbuf_append(w, data, n);
}

/* ===================================================================== */
/* Input: decoding                                                       */
/* ===================================================================== */

typedef struct dec {
	unsigned flags;
	pemba_error *err;
	char path[512]; /* the field path, for messages */
} dec;

static int fail(dec *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(dec *d, const char *fmt, ...)
{
	char text[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (d->path[0])
		return error_set(d->err, PEMBA_EINVAL, "field `%s`: %s",
		                 d->path, text);
	return error_set(d->err, PEMBA_EINVAL, "%s", text);
}

static const char *type_word(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

static int decode_message(dec *d, const ProtobufCMessageDescriptor *desc,
                          const json_t *j, strbuf *w, int depth);

/* A JSON number or numeric string as a signed / unsigned integer within
 * [lo, hi] (signed) or [0, uhi] (unsigned). */
static int get_int(dec *d, const json_t *j, bool is_unsigned, int64_t lo,
                   int64_t hi, uint64_t uhi, int64_t *sv, uint64_t *uv)
{
	if (json_is_integer(j)) {
		json_int_t v = json_integer_value(j);
		if (is_unsigned) {
			if (v < 0 || (uint64_t)v > uhi)
				return fail(d, "%lld is out of range",
				            (long long)v);
			*uv = (uint64_t)v;
		} else {
			if (v < lo || v > hi)
				return fail(d, "%lld is out of range",
				            (long long)v);
			*sv = v;
		}
		return 0;
	}
	if (json_is_real(j)) {
		double v = json_real_value(j);
		if (v != floor(v))
			return fail(d, "expected an integer, got %g", v);
		if (is_unsigned) {
			if (v < 0 || v >= 18446744073709551616.0 ||
			    (uint64_t)v > uhi)
				return fail(d, "%g is out of range", v);
			*uv = (uint64_t)v;
		} else {
			if (v < -9223372036854775808.0 ||
			    v >= 9223372036854775808.0 || (int64_t)v < lo ||
			    (int64_t)v > hi)
				return fail(d, "%g is out of range", v);
			*sv = (int64_t)v;
		}
		return 0;
	}
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		char *end;
		errno = 0;
		if (!*s || *s == ' ' || *s == '+')
			return fail(d, "expected an integer, got \"%s\"", s);
		if (is_unsigned) {
			if (*s == '-')
				return fail(d, "\"%s\" is out of range", s);
			unsigned long long v = strtoull(s, &end, 10);
			if (*end || errno || v > uhi)
				return fail(d,
				            "expected an integer in range, "
				            "got \"%s\"",
				            s);
			*uv = v;
		} else {
			long long v = strtoll(s, &end, 10);
			if (*end || errno || v < lo || v > hi)
				return fail(d,
				            "expected an integer in range, "
				            "got \"%s\"",
				            s);
			*sv = v;
		}
		return 0;
	}
	return fail(d, "expected an integer, got %s", type_word(j));
}

static int get_double(dec *d, const json_t *j, double *out)
{
	if (json_is_number(j)) {
		*out = json_number_value(j);
		return 0;
	}
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		if (strcmp(s, "NaN") == 0)
			*out = NAN;
		else if (strcmp(s, "Infinity") == 0)
			*out = INFINITY;
		else if (strcmp(s, "-Infinity") == 0)
			*out = -INFINITY;
		else {
			char *end;
			if (!*s || *s == ' ')
				return fail(d, "expected a number, got \"%s\"",
				            s);
			*out = strtod(s, &end);
			if (*end || isnan(*out) || isinf(*out))
				return fail(d, "expected a number, got \"%s\"",
				            s);
		}
		return 0;
	}
	return fail(d, "expected a number, got %s", type_word(j));
}

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Standard or URL-safe base64, padding optional.  -1 when malformed. */
static int base64_decode(const char *s, size_t n, strbuf *out)
{
	while (n > 0 && s[n - 1] == '=')
		n--;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64val((unsigned char)s[i]);
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			strbuf_putc(out, (char)((acc >> bits) & 0xff));
		}
	}
	if (n % 4 == 1)
		return -1;
	return 0;
}

static int parse_digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (**p < '0' || **p > '9')
			return -1;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	*out = v;
	return 0;
}

/* ".123456789" -> nanos; *p past it.  0 when there is no fraction. */
static int parse_frac(const char **p, int32_t *nanos)
{
	*nanos = 0;
	if (**p != '.')
		return 0;
	(*p)++;
	int digits = 0;
	int32_t v = 0;
	while (**p >= '0' && **p <= '9') {
		if (digits == 9)
			return -1;
		v = v * 10 + (**p - '0');
		digits++;
		(*p)++;
	}
	if (digits == 0)
		return -1;
	for (int i = digits; i < 9; i++)
		v *= 10;
	*nanos = v;
	return 0;
}

static int decode_timestamp(dec *d, const json_t *j, strbuf *w)
{
	if (!json_is_string(j))
		return fail(d, "expected an RFC 3339 timestamp string, got %s",
		            type_word(j));
	const char *s = json_string_value(j), *p = s;
	int Y, M, D, h, m, sec;
	int32_t nanos;
	if (parse_digits(&p, 4, &Y) || *p++ != '-' || parse_digits(&p, 2, &M) ||
	    *p++ != '-' || parse_digits(&p, 2, &D) ||
	    (*p != 'T' && *p != 't') || !*p++ || parse_digits(&p, 2, &h) ||
	    *p++ != ':' || parse_digits(&p, 2, &m) || *p++ != ':' ||
	    parse_digits(&p, 2, &sec) || parse_frac(&p, &nanos))
		goto bad;
	int offset = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om;
		if (parse_digits(&p, 2, &oh) || *p++ != ':' ||
		    parse_digits(&p, 2, &om) || oh > 23 || om > 59)
			goto bad;
		offset = sign * (oh * 3600 + om * 60);
	} else {
		goto bad;
	}
	if (*p || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 ||
	    sec > 59)
		goto bad;
	struct tm tm = {.tm_year = Y - 1900,
	                .tm_mon = M - 1,
	                .tm_mday = D,
	                .tm_hour = h,
	                .tm_min = m,
	                .tm_sec = sec};
	int64_t secs = (int64_t)timegm(&tm) - offset;
	/* 0001-01-01 .. 9999-12-31, as protojson. */
	if (secs < -62135596800LL || secs > 253402300799LL)
		goto bad;
	if (secs)
		put_tag(w, 1, 0), put_varint(w, (uint64_t)secs);
	if (nanos)
		put_tag(w, 2, 0), put_varint(w, (uint64_t)(int64_t)nanos);
	return 0;
bad:
	return fail(d, "invalid RFC 3339 timestamp \"%s\"", s);
}

static int decode_duration(dec *d, const json_t *j, strbuf *w)
{
	if (!json_is_string(j))
		return fail(d,
		            "expected a duration string like \"1.5s\", got %s",
		            type_word(j));
	const char *s = json_string_value(j), *p = s;
	bool neg = false;
	if (*p == '-')
		neg = true, p++;
	if (*p < '0' || *p > '9')
		goto bad;
	int64_t secs = 0;
	while (*p >= '0' && *p <= '9') {
		if (secs > 315576000000LL)
			goto bad;
		secs = secs * 10 + (*p++ - '0');
	}
	int32_t nanos;
	if (parse_frac(&p, &nanos) || *p != 's' || p[1] ||
	    secs > 315576000000LL)
		goto bad;
	if (neg)
		secs = -secs, nanos = -nanos;
	if (secs)
		put_tag(w, 1, 0), put_varint(w, (uint64_t)secs);
	if (nanos)
		put_tag(w, 2, 0), put_varint(w, (uint64_t)(int64_t)nanos);
	return 0;
bad:
	return fail(d, "invalid duration \"%s\" (expected e.g. \"1.5s\")", s);
}

static int decode_value(dec *d, const json_t *j, strbuf *w, int depth);

static int decode_struct(dec *d, const json_t *j, strbuf *w, int depth)
{
	if (!json_is_object(j))
		return fail(d, "expected an object, got %s", type_word(j));
	if (depth > PBJ_MAX_DEPTH)
		return fail(d, "nested too deeply");
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)j, key, v)
	{
		strbuf entry, val;
		strbuf_init(&entry);
		strbuf_init(&val);
		put_len(&entry, 1, key, strlen(key));
		int rc = decode_value(d, v, &val, depth + 1);
		if (rc == 0) {
			put_len(&entry, 2, val.data, val.len);
			put_len(w, 1, entry.data, entry.len);
		}
		strbuf_free(&entry);
		strbuf_free(&val);
		if (rc)
			return rc;
	}
	return 0;
}

static int decode_list(dec *d, const json_t *j, strbuf *w, int depth)
{
	if (!json_is_array(j))
		return fail(d, "expected an array, got %s", type_word(j));
	if (depth > PBJ_MAX_DEPTH)
		return fail(d, "nested too deeply");
	size_t i;
	json_t *v;
	json_array_foreach(j, i, v)
	{
		strbuf val;
		strbuf_init(&val);
		int rc = decode_value(d, v, &val, depth + 1);
		if (rc == 0)
			put_len(w, 1, val.data, val.len);
		strbuf_free(&val);
		if (rc)
			return rc;
	}
	return 0;
}

/* google.protobuf.Value: null_value 1, number 2, string 3, bool 4,
 * struct 5, list 6. */
static int decode_value(dec *d, const json_t *j, strbuf *w, int depth)
{
	if (depth > PBJ_MAX_DEPTH)
		return fail(d, "nested too deeply");
	switch (json_typeof(j)) {
	case JSON_NULL:
		put_tag(w, 1, 0);
		put_varint(w, 0);
		return 0;
	case JSON_INTEGER:
	case JSON_REAL: {
		double v = json_number_value(j);
		uint64_t bits;
		memcpy(&bits, &v, 8);
		put_tag(w, 2, 1);
		put_fixed(w, bits, 8);
		return 0;
	}
	case JSON_STRING:
		put_len(w, 3, json_string_value(j), json_string_length(j));
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		put_tag(w, 4, 0);
		put_varint(w, json_is_true(j));
		return 0;
	case JSON_OBJECT:
	case JSON_ARRAY: {
		strbuf sub;
		strbuf_init(&sub);
		int rc = json_is_object(j) ? decode_struct(d, j, &sub, depth)
		                           : decode_list(d, j, &sub, depth);
		if (rc == 0)
			put_len(w, json_is_object(j) ? 5 : 6, sub.data,
			        sub.len);
		strbuf_free(&sub);
		return rc;
	}
	}
	return fail(d, "unsupported JSON value");
}

/* One value of field f (an element, for repeated fields) to w, with its
 * tag. */
static int decode_field_value(dec *d, const ProtobufCFieldDescriptor *f,
                              const json_t *j, strbuf *w, int depth)
{
	int64_t sv = 0;
	uint64_t uv = 0;
	int rc;
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		if ((rc = get_int(d, j, false, INT32_MIN, INT32_MAX, 0, &sv,
		                  &uv)))
			return rc;
		if (f->type == PROTOBUF_C_TYPE_INT32)
			put_tag(w, f->id, 0), put_varint(w, (uint64_t)sv);
		else if (f->type == PROTOBUF_C_TYPE_SINT32)
			put_tag(w, f->id, 0),
			    put_varint(w, (uint32_t)(((uint32_t)sv << 1) ^
			                             (uint32_t)(sv >> 31)));
		else
			put_tag(w, f->id, 5), put_fixed(w, (uint32_t)sv, 4);
		return 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		if ((rc = get_int(d, j, false, INT64_MIN, INT64_MAX, 0, &sv,
		                  &uv)))
			return rc;
		if (f->type == PROTOBUF_C_TYPE_INT64)
			put_tag(w, f->id, 0), put_varint(w, (uint64_t)sv);
		else if (f->type == PROTOBUF_C_TYPE_SINT64)
			put_tag(w, f->id, 0),
			    put_varint(w, ((uint64_t)sv << 1) ^
			                      (uint64_t)(sv >> 63));
		else
			put_tag(w, f->id, 1), put_fixed(w, (uint64_t)sv, 8);
		return 0;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		if ((rc = get_int(d, j, true, 0, 0, UINT32_MAX, &sv, &uv)))
			return rc;
		if (f->type == PROTOBUF_C_TYPE_UINT32)
			put_tag(w, f->id, 0), put_varint(w, uv);
		else
			put_tag(w, f->id, 5), put_fixed(w, uv, 4);
		return 0;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		if ((rc = get_int(d, j, true, 0, 0, UINT64_MAX, &sv, &uv)))
			return rc;
		if (f->type == PROTOBUF_C_TYPE_UINT64)
			put_tag(w, f->id, 0), put_varint(w, uv);
		else
			put_tag(w, f->id, 1), put_fixed(w, uv, 8);
		return 0;
	case PROTOBUF_C_TYPE_FLOAT: {
		double v;
		if ((rc = get_double(d, j, &v)))
			return rc;
		if (isfinite(v) && fabs(v) > 3.4028234663852886e38)
			return fail(d, "%g is out of range for a float", v);
		float fv = (float)v;
		uint32_t bits;
		memcpy(&bits, &fv, 4);
		put_tag(w, f->id, 5), put_fixed(w, bits, 4);
		return 0;
	}
	case PROTOBUF_C_TYPE_DOUBLE: {
		double v;
		if ((rc = get_double(d, j, &v)))
			return rc;
		uint64_t bits;
		memcpy(&bits, &v, 8);
		put_tag(w, f->id, 1), put_fixed(w, bits, 8);
		return 0;
	}
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(j))
			return fail(d, "expected true or false, got %s",
			            type_word(j));
		put_tag(w, f->id, 0), put_varint(w, json_is_true(j));
		return 0;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		if (json_is_string(j)) {
			const ProtobufCEnumValue *ev =
			    protobuf_c_enum_descriptor_get_value_by_name(
			        ed, json_string_value(j));
			if (!ev)
				return fail(d,
				            "\"%s\" is not a value of enum %s",
				            json_string_value(j), ed->name);
			put_tag(w, f->id, 0),
			    put_varint(w, (uint64_t)(int64_t)ev->value);
			return 0;
		}
		if (json_is_integer(j)) {
			if ((rc = get_int(d, j, false, INT32_MIN, INT32_MAX, 0,
			                  &sv, &uv)))
				return rc;
			put_tag(w, f->id, 0), put_varint(w, (uint64_t)sv);
			return 0;
		}
		return fail(d, "expected a name of enum %s, got %s", ed->name,
		            type_word(j));
	}
	case PROTOBUF_C_TYPE_STRING:
		if (!json_is_string(j))
			return fail(d, "expected a string, got %s",
			            type_word(j));
		put_len(w, f->id, json_string_value(j), json_string_length(j));
		return 0;
	case PROTOBUF_C_TYPE_BYTES: {
		if (!json_is_string(j))
			return fail(d, "expected a base64 string, got %s",
			            type_word(j));
		strbuf raw;
		strbuf_init(&raw);
		if (base64_decode(json_string_value(j), json_string_length(j),
		                  &raw) < 0) {
			strbuf_free(&raw);
			return fail(d, "invalid base64");
		}
		put_len(w, f->id, raw.data, raw.len);
		strbuf_free(&raw);
		return 0;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		strbuf sub;
		strbuf_init(&sub);
		rc = decode_message(d, f->descriptor, j, &sub, depth + 1);
		if (rc == 0)
			put_len(w, f->id, sub.data, sub.len);
		strbuf_free(&sub);
		return rc;
	}
	}
	return fail(d, "unsupported field type");
}

static int decode_any(dec *d, const json_t *j, strbuf *w, int depth)
{
	if (!json_is_object(j))
		return fail(d, "expected an object, got %s", type_word(j));
	const json_t *t = json_object_get(j, "@type");
	if (!t || !json_is_string(t))
		return fail(d, "an Any needs a string \"@type\"");
	const char *url = json_string_value(t);
	const ProtobufCMessageDescriptor *inner = any_lookup(url);
	if (!inner)
		return fail(d, "unknown Any type \"%s\"", url);
	strbuf sub;
	strbuf_init(&sub);
	int rc;
	if (wkt_of(inner) != WKT_NONE) {
		const json_t *v = json_object_get(j, "value");
		rc = v ? decode_message(d, inner, v, &sub, depth + 1) : 0;
	} else {
		json_t *copy = json_copy((json_t *)j);
		json_object_del(copy, "@type");
		rc = decode_message(d, inner, copy, &sub, depth + 1);
		json_decref(copy);
	}
	if (rc == 0) {
		put_len(w, 1, url, strlen(url));
		put_len(w, 2, sub.data, sub.len);
	}
	strbuf_free(&sub);
	return rc;
}

static const ProtobufCFieldDescriptor *
find_field(const ProtobufCMessageDescriptor *desc, const char *key)
{
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		char jname[256];
		pbj_json_name(f->name, jname, sizeof(jname));
		if (strcmp(jname, key) == 0 || strcmp(f->name, key) == 0)
			return f;
	}
	return NULL;
}

/* A map key as JSON gives it (always a string) to the key field. */
static int decode_map_key(dec *d, const ProtobufCFieldDescriptor *kf,
                          const char *key, strbuf *w)
{
	if (kf->type == PROTOBUF_C_TYPE_STRING) {
		put_len(w, 1, key, strlen(key));
		return 0;
	}
	json_t *kj;
	if (kf->type == PROTOBUF_C_TYPE_BOOL) {
		if (strcmp(key, "true") && strcmp(key, "false"))
			return fail(d, "map key \"%s\" is not a boolean", key);
		kj = json_boolean(strcmp(key, "true") == 0);
	} else {
		kj = json_string(key);
	}
	int rc = decode_field_value(d, kf, kj, w, 0);
	json_decref(kj);
	return rc;
}

static int decode_message(dec *d, const ProtobufCMessageDescriptor *desc,
                          const json_t *j, strbuf *w, int depth)
{
	if (depth > PBJ_MAX_DEPTH)
		return fail(d, "nested too deeply");
	switch (wkt_of(desc)) {
	case WKT_STRUCT:
		return decode_struct(d, j, w, depth);
	case WKT_LIST:
		return decode_list(d, j, w, depth);
	case WKT_VALUE:
		return decode_value(d, j, w, depth);
	case WKT_TIMESTAMP:
		return decode_timestamp(d, j, w);
	case WKT_DURATION:
		return decode_duration(d, j, w);
	case WKT_ANY:
		return decode_any(d, j, w, depth);
	case WKT_WRAPPER:
		if (json_is_null(j))
			return 0;
		return decode_field_value(d, &desc->fields[0], j, w, depth);
	default:
		break;
	}
	if (!json_is_object(j))
		return fail(d, "expected an object for %s, got %s", desc->name,
		            type_word(j));
	size_t path_len = strlen(d->path);
	/* Which oneof (by its case member's offset) is already set. */
	unsigned oneof_seen[64];
	const char *oneof_name[64];
	size_t n_oneof = 0;
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)j, key, v)
	{
		const ProtobufCFieldDescriptor *f = find_field(desc, key);
		snprintf(d->path + path_len, sizeof(d->path) - path_len, "%s%s",
		         path_len ? "." : "", key);
		if (!f) {
			if (d->flags & PBJ_DISCARD_UNKNOWN)
				continue;
			d->path[path_len] = '\0';
			return fail(d, "unknown field \"%s\" in %s", key,
			            desc->name);
		}
		bool value_wkt = f->type == PROTOBUF_C_TYPE_MESSAGE &&
		                 wkt_of(f->descriptor) == WKT_VALUE;
		if (json_is_null(v) && !value_wkt)
			continue; /* null: the field keeps its default */
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			for (size_t k = 0; k < n_oneof; k++)
				if (oneof_seen[k] == f->quantifier_offset) {
					d->path[path_len] = '\0';
					return fail(
					    d,
					    "fields \"%s\" and \"%s\" are "
					    "members of one oneof; set at "
					    "most one",
					    oneof_name[k], key);
				}
			if (n_oneof < 64) {
				oneof_seen[n_oneof] = f->quantifier_offset;
				oneof_name[n_oneof++] = key;
			}
		}
		int rc = 0;
		if (f->label == PROTOBUF_C_LABEL_REPEATED && is_map_field(f)) {
			if (!json_is_object(v))
				return fail(
				    d, "expected an object (a map), got %s",
				    type_word(v));
			const char *mk;
			json_t *mv;
			size_t plen2 = strlen(d->path);
			json_object_foreach(v, mk, mv)
			{
				snprintf(d->path + plen2,
				         sizeof(d->path) - plen2, "[\"%s\"]",
				         mk);
				strbuf entry;
				strbuf_init(&entry);
				rc = decode_map_key(
				    d,
				    &((const ProtobufCMessageDescriptor *)
				          f->descriptor)
				         ->fields[0],
				    mk, &entry);
				if (rc == 0 && !json_is_null(mv))
					rc = decode_field_value(
					    d,
					    &((const ProtobufCMessageDescriptor
					           *)f->descriptor)
					         ->fields[1],
					    mv, &entry, depth + 1);
				if (rc == 0)
					put_len(w, f->id, entry.data,
					        entry.len);
				strbuf_free(&entry);
				if (rc)
					return rc;
			}
		} else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			if (!json_is_array(v))
				return fail(d, "expected an array, got %s",
				            type_word(v));
			size_t i;
			json_t *e;
			size_t plen2 = strlen(d->path);
			json_array_foreach(v, i, e)
			{
				snprintf(d->path + plen2,
				         sizeof(d->path) - plen2, "[%zu]", i);
				if (json_is_null(e) && !value_wkt)
					return fail(d, "null is not allowed "
					               "in a list");
				if ((rc =
				         decode_field_value(d, f, e, w, depth)))
					return rc;
			}
		} else {
			rc = decode_field_value(d, f, v, w, depth);
			if (rc)
				return rc;
		}
	}
	d->path[path_len] = '\0';
	return 0;
}

int pbj_decode_json(const ProtobufCMessageDescriptor *desc, const void *json,
                    unsigned flags, strbuf *wire, pemba_error *err)
{
	dec d = {.flags = flags, .err = err};
	return decode_message(&d, desc, json, wire, 0);
}

int pbj_decode(const ProtobufCMessageDescriptor *desc, const char *json,
               size_t len, unsigned flags, strbuf *wire, pemba_error *err)
{
	size_t i = 0;
	while (i < len && (json[i] == ' ' || json[i] == '\t' ||
	                   json[i] == '\n' || json[i] == '\r'))
		i++;
	if (i == len)
		return 0; /* an empty body: the empty message */
	json_error_t je;
	json_t *root = json_loadb(json, len, JSON_DECODE_ANY, &je);
	if (!root)
		return error_set(err, PEMBA_EINVAL,
		                 "malformed JSON at line %d, column %d: %s",
		                 je.line, je.column, je.text);
	int rc = pbj_decode_json(desc, root, flags, wire, err);
	json_decref(root);
	return rc;
}

ProtobufCMessage *pbj_decode_message(const ProtobufCMessageDescriptor *desc,
                                     const char *json, size_t len,
                                     unsigned flags, pemba_error *err)
{
	strbuf w;
	strbuf_init(&w);
	ProtobufCMessage *m = NULL;
	if (pbj_decode(desc, json, len, flags, &w, err) == 0) {
		m = protobuf_c_message_unpack(desc, NULL, w.len,
		                              (const uint8_t *)w.data);
		if (!m)
			error_set(err, PEMBA_EINVAL,
			          "the %s message did not encode", desc->name);
	}
	strbuf_free(&w);
	return m;
}
