/*
 * context.c -- caveat contexts (JSON objects) to parameter values.
 *
 * Conversion follows SpiceDB's: a context arrives as a protobuf Struct,
 * where every number is a double, so JSON is read with every number as a
 * double (JSON_DECODE_INT_AS_REAL) and converted per declared type:
 *   int, uint   an integral number, or a string holding one ("42");
 *               1.5 is refused ("a int value is required, but found
 *               numeric value `1.5`"); uint refuses negatives
 *   double      a number or a numeric string
 *   bool, string  exactly that JSON type
 *   bytes       a base64 string (standard alphabet, padded)
 *   timestamp   an RFC 3339 string; duration: Go syntax ("1h30m", "1.5s")
 *   ipaddress   an IPv4 or IPv6 address string
 *   list<T>, map<T>  arrays and objects, element by element
 *   any         the JSON value as is (numbers are doubles)
 * Messages follow SpiceDB's ("could not convert context parameter `x`:
 * ...").  Keys that are not parameters are skipped.  Duplicate keys are
 * refused (the protobuf JSON reader SpiceDB's HTTP gateway uses refuses
 * them too); nesting is limited to CEL_MAX_CONTEXT_DEPTH.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel/internal.h"
#include "util/error.h"

/* Go's %T of a JSON value, as SpiceDB's messages print it. */
static const char *go_type(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "map[string]interface {}";
	case JSON_ARRAY:
		return "[]interface {}";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "float64";
	case JSON_TRUE:
	case JSON_FALSE:
		return "bool";
	default:
		return "<nil>";
	}
}

/* Go's %v of a JSON value (scalars only; containers abbreviated). */
static const char *go_value(arena *a, const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_STRING: {
		size_t n = json_string_length(j);
		return arena_printf(a, "%.*s", (int)(n > 100 ? 100 : n),
		                    json_string_value(j));
	}
	case JSON_INTEGER:
	case JSON_REAL: {
		strbuf sb;
		strbuf_init(&sb);
		cel_format_double(json_number_value(j), &sb);
		char *s = arena_strdup(a, sb.data);
		strbuf_free(&sb);
		return s;
	}
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	case JSON_NULL:
		return "<nil>";
	case JSON_ARRAY:
		return "[...]";
	default:
		return "map[...]";
	}
}

static const char *number_of(arena *a, const json_t *j, const char *want,
                             double *out)
{
	if (json_is_number(j)) {
		*out = json_number_value(j);
		return NULL;
	}
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		size_t n = json_string_length(j);
		char *end;
		bool plain = n > 0 && strlen(s) == n;
		/* Base 10 only: no hex, infinities or NaN. */
		for (size_t i = 0; plain && i < n; i++)
			if (!strchr("0123456789+-.eE", s[i]))
				plain = false;
		if (plain) {
			*out = strtod(s, &end);
			if (*end == '\0')
				return NULL;
		}
		return arena_printf(a,
		                    "a %s value is required, but found "
		                    "invalid string value `%s`",
		                    want, go_value(a, j));
	}
	return arena_printf(a, "a %s value is required, but found %s `%s`",
	                    want, go_type(j), go_value(a, j));
}

static const char *decode_base64(arena *a, const char *s, size_t n,
                                 cel_value *out)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	if (n % 4 != 0)
		return arena_printf(a,
		                    "bytes requires a base64 encoded "
		                    "string: illegal base64 data at input "
		                    "byte %zu",
		                    n - n % 4);
	char *bytes = arena_alloc(a, n / 4 * 3 + 1);
	size_t len = 0;
	for (size_t i = 0; i < n; i += 4) {
		uint32_t v = 0;
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			char c = s[i + k];
			const char *p = c ? strchr(alphabet, c) : NULL;
			if (c == '=' && i + 4 == n && k >= 2 &&
			    (k == 3 || s[i + 3] == '=')) {
				pad++;
				v <<= 6;
				continue;
			}
			if (!p || pad)
				return arena_printf(a,
				                    "bytes requires a base64 "
				                    "encoded string: illegal "
				                    "base64 data at input byte "
				                    "%zu",
				                    i + (size_t)k);
			v = (v << 6) | (uint32_t)(p - alphabet);
		}
		bytes[len++] = (char)(v >> 16);
		if (pad < 2)
			bytes[len++] = (char)(v >> 8);
		if (pad < 1)
			bytes[len++] = (char)v;
	}
	out->kind = CEL_V_BYTES;
	out->str.s = bytes;
	out->str.len = len;
	return NULL;
}

const char *cel_convert_json(arena *a, const void *json, const cel_type *t,
                             cel_value *out)
{
	const json_t *j = json;
	memset(out, 0, sizeof(*out));
	switch (t->kind) {
	case CEL_T_DYN:
		switch (json_typeof(j)) {
		case JSON_NULL:
			out->kind = CEL_V_NULL;
			return NULL;
		case JSON_TRUE:
		case JSON_FALSE:
			out->kind = CEL_V_BOOL;
			out->b = json_is_true(j);
			return NULL;
		case JSON_INTEGER:
		case JSON_REAL:
			out->kind = CEL_V_DOUBLE;
			out->d = json_number_value(j);
			return NULL;
		case JSON_STRING:
			out->kind = CEL_V_STRING;
			out->str.len = json_string_length(j);
			out->str.s = arena_strndup(a, json_string_value(j),
			                           out->str.len);
			return NULL;
		case JSON_ARRAY: {
			static const cel_type list_dyn = {CEL_T_LIST, NULL,
			                                  &cel_type_dyn};
			return cel_convert_json(a, j, &list_dyn, out);
		}
		default: {
			static const cel_type map_dyn = {
			    CEL_T_MAP, &cel_type_string, &cel_type_dyn};
			return cel_convert_json(a, j, &map_dyn, out);
		}
		}
	case CEL_T_INT:
	case CEL_T_UINT: {
		/* `uint` parameters are CEL ints holding a non-negative
		 * value (t is the declared type, not the CEL one). */
		bool is_uint = t->kind == CEL_T_UINT;
		double d;
		const char *why =
		    number_of(a, j, is_uint ? "uint64" : "int64", &d);
		if (why)
			return why;
		strbuf sb;
		strbuf_init(&sb);
		cel_format_double(d, &sb);
		const char *text = arena_strdup(a, sb.data);
		strbuf_free(&sb);
		if (d != trunc(d) || isinf(d))
			return arena_printf(a,
			                    "a %s value is required, but found "
			                    "numeric value `%s`",
			                    is_uint ? "uint" : "int", text);
		if (is_uint && d < 0)
			return arena_printf(
			    a,
			    "a uint value is required, but found "
			    "int64 value `%s`",
			    text);
		if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
			return arena_printf(a,
			                    "a %s value is required, but found "
			                    "out-of-range value `%s`",
			                    is_uint ? "uint" : "int", text);
		out->kind = CEL_V_INT;
		out->i = (int64_t)d;
		return NULL;
	}
	case CEL_T_DOUBLE: {
		double d;
		const char *why = number_of(a, j, "float64", &d);
		if (why)
			return why;
		out->kind = CEL_V_DOUBLE;
		out->d = d;
		return NULL;
	}
	case CEL_T_BOOL:
		if (!json_is_boolean(j))
			return arena_printf(
			    a,
			    "a bool value is required, but found "
			    "%s `%s`",
			    go_type(j), go_value(a, j));
		out->kind = CEL_V_BOOL;
		out->b = json_is_true(j);
		return NULL;
	case CEL_T_STRING:
		if (!json_is_string(j))
			return arena_printf(a,
			                    "a string value is required, but "
			                    "found %s `%s`",
			                    go_type(j), go_value(a, j));
		out->kind = CEL_V_STRING;
		out->str.len = json_string_length(j);
		out->str.s =
		    arena_strndup(a, json_string_value(j), out->str.len);
		return NULL;
	case CEL_T_BYTES:
		if (!json_is_string(j))
			return arena_printf(a,
			                    "bytes requires a base64 unicode "
			                    "string, found: %s `%s`",
			                    go_type(j), go_value(a, j));
		return decode_base64(a, json_string_value(j),
		                     json_string_length(j), out);
	case CEL_T_DURATION: {
		if (!json_is_string(j))
			return arena_printf(a,
			                    "durations requires a duration "
			                    "string, found: %s",
			                    go_type(j));
		const char *why =
		    cel_parse_duration(json_string_value(j),
		                       json_string_length(j), &out->duration);
		if (why)
			return arena_printf(
			    a,
			    "could not parse duration string `%s`: "
			    "%s",
			    go_value(a, j), why);
		out->kind = CEL_V_DURATION;
		return NULL;
	}
	case CEL_T_TIMESTAMP: {
		if (!json_is_string(j))
			return arena_printf(
			    a,
			    "timestamps requires a RFC 3339 "
			    "formatted timestamp string, found: "
			    "%s `%s`",
			    go_type(j), go_value(a, j));
		const char *why = cel_parse_timestamp(
		    json_string_value(j), json_string_length(j),
		    &out->ts.seconds, &out->ts.nanos);
		if (why)
			return arena_printf(
			    a,
			    "could not parse RFC 3339 formatted "
			    "timestamp string `%s`: %s",
			    go_value(a, j), why);
		out->kind = CEL_V_TIMESTAMP;
		return NULL;
	}
	case CEL_T_IPADDRESS: {
		if (!json_is_string(j))
			return arena_printf(a,
			                    "ipaddress requires an ipaddress "
			                    "string, found: %s `%s`",
			                    go_type(j), go_value(a, j));
		cel_ip *ip = arena_alloc(a, sizeof(*ip));
		const char *why = cel_parse_ip(json_string_value(j),
		                               json_string_length(j), ip);
		if (why)
			return arena_printf(a,
			                    "could not parse ip address string "
			                    "`%s`: %s",
			                    go_value(a, j), why);
		out->kind = CEL_V_IPADDRESS;
		out->ip = ip;
		return NULL;
	}
	case CEL_T_LIST: {
		if (!json_is_array(j))
			return arena_printf(
			    a, "list requires a list, found: %s", go_type(j));
		size_t n = json_array_size(j);
		cel_list *list = arena_alloc(a, sizeof(*list));
		list->items = arena_alloc(a, (n ? n : 1) * sizeof(cel_value));
		for (size_t i = 0; i < n; i++) {
			const char *why = cel_convert_json(
			    a, json_array_get(j, i), t->elem, &list->items[i]);
			if (why)
				return arena_printf(
				    a,
				    "found an invalid value for "
				    "item at index %zu: %s",
				    i, why);
		}
		list->n = n;
		out->kind = CEL_V_LIST;
		out->list = list;
		return NULL;
	}
	case CEL_T_MAP: {
		if (!json_is_object(j))
			return arena_printf(a, "map requires a map, found: %s",
			                    go_type(j));
		size_t n = json_object_size(j);
		cel_map *map = arena_alloc(a, sizeof(*map));
		map->keys = arena_alloc(a, (n ? n : 1) * sizeof(cel_value));
		map->values = arena_alloc(a, (n ? n : 1) * sizeof(cel_value));
		const char *key;
		json_t *value;
		json_object_foreach((json_t *)j, key, value)
		{
			const char *why = cel_convert_json(
			    a, value, t->elem, &map->values[map->n]);
			if (why)
				return arena_printf(
				    a,
				    "found an invalid value for "
				    "key `%s`: %s",
				    key, why);
			cel_value *k = &map->keys[map->n];
			k->kind = CEL_V_STRING;
			k->str.s = arena_strdup(a, key);
			k->str.len = strlen(key);
			map->n++;
		}
		out->kind = CEL_V_MAP;
		out->map = map;
		return NULL;
	}
	default:
		return "unsupported parameter type";
	}
}
