/*
 * struct_json.c -- see struct_json.h.
 */
#include "api/struct_json.h"

#include <math.h>
#include <string.h>

#include <jansson.h>

#include "util/xalloc.h"

void api_json_string(strbuf *sb, const char *s, size_t len)
{
	strbuf_putc(sb, '"');
	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)s[k];
		switch (c) {
		case '"':
			strbuf_puts(sb, "\\\"");
			break;
		case '\\':
			strbuf_puts(sb, "\\\\");
			break;
		case '\n':
			strbuf_puts(sb, "\\n");
			break;
		case '\r':
			strbuf_puts(sb, "\\r");
			break;
		case '\t':
			strbuf_puts(sb, "\\t");
			break;
		default:
			if (c < 0x20)
				strbuf_printf(sb, "\\u%04x", c);
			else
				strbuf_putc(sb, (char)c);
		}
	}
	strbuf_putc(sb, '"');
}

/* 2^63: integral doubles below it in magnitude print as JSON integers. */
#define INTEGRAL_LIMIT 9223372036854775808.0

void api_json_double(strbuf *sb, double v)
{
	/* A Struct holds every number as a double, but a caveat parameter
	 * of type int or uint accepts only a JSON integer: so an integral
	 * value is written without a fraction or exponent (42, not 42.0 or
	 * 4.2e1), as long as a 64-bit integer holds it (beyond that JSON
	 * readers would refuse the integer).  -0 is written as 0. */
	if (isnan(v))
		strbuf_puts(sb, "\"NaN\"");
	else if (isinf(v))
		strbuf_puts(sb, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	else if (v == 0)
		strbuf_putc(sb, '0');
	else if (v == floor(v) && fabs(v) < INTEGRAL_LIMIT)
		strbuf_printf(sb, "%.0f", v);
	else
		strbuf_printf(sb, "%.17g", v);
}

void api_json_value(strbuf *sb, const Google__Protobuf__Value *v)
{
	switch (v->kind_case) {
	case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
		api_json_double(sb, v->number_value);
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
		api_json_string(sb, v->string_value, strlen(v->string_value));
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
		strbuf_puts(sb, v->bool_value ? "true" : "false");
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
		api_json_struct(sb, v->struct_value);
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
		strbuf_putc(sb, '[');
		for (size_t k = 0; k < v->list_value->n_values; k++) {
			if (k)
				strbuf_putc(sb, ',');
			api_json_value(sb, v->list_value->values[k]);
		}
		strbuf_putc(sb, ']');
		break;
	default:
		strbuf_puts(sb, "null");
	}
}

void api_json_struct(strbuf *sb, const Google__Protobuf__Struct *s)
{
	strbuf_putc(sb, '{');
	for (size_t k = 0; k < s->n_fields; k++) {
		const Google__Protobuf__Struct__FieldsEntry *e = s->fields[k];
		if (k)
			strbuf_putc(sb, ',');
		api_json_string(sb, e->key, strlen(e->key));
		strbuf_putc(sb, ':');
		if (e->value)
			api_json_value(sb, e->value);
		else
			strbuf_puts(sb, "null");
	}
	strbuf_putc(sb, '}');
}

/* ===================================================================== */
/* JSON text -> Struct                                                   */
/* ===================================================================== */

static void value_free(Google__Protobuf__Value *v);

static void list_free(Google__Protobuf__ListValue *l)
{
	if (!l)
		return;
	for (size_t k = 0; k < l->n_values; k++)
		value_free(l->values[k]);
	free(l->values);
	free(l);
}

static void value_free(Google__Protobuf__Value *v)
{
	if (!v)
		return;
	switch (v->kind_case) {
	case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
		free(v->string_value);
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
		api_struct_free(v->struct_value);
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
		list_free(v->list_value);
		break;
	default:
		break;
	}
	free(v);
}

void api_struct_free(Google__Protobuf__Struct *s)
{
	if (!s)
		return;
	for (size_t k = 0; k < s->n_fields; k++) {
		Google__Protobuf__Struct__FieldsEntry *e = s->fields[k];
		free(e->key);
		value_free(e->value);
		free(e);
	}
	free(s->fields);
	free(s);
}

static Google__Protobuf__Struct *struct_from_json(json_t *object, int depth);

/* depth: the nesting level of the container holding j (the top-level
 * object is level 1). */
static Google__Protobuf__Value *value_from_json(json_t *j, int depth)
{
	Google__Protobuf__Value *v = xmalloc(sizeof(*v));
	google__protobuf__value__init(v);
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		v->struct_value = struct_from_json(j, depth + 1);
		if (!v->struct_value)
			goto fail;
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
		break;
	case JSON_ARRAY: {
		if (depth + 1 > API_STRUCT_MAX_DEPTH)
			goto fail;
		size_t n = json_array_size(j);
		Google__Protobuf__ListValue *l = xmalloc(sizeof(*l));
		google__protobuf__list_value__init(l);
		l->values = xcalloc(n + 1, sizeof(*l->values));
		v->list_value = l;
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
		for (size_t k = 0; k < n; k++) {
			l->values[k] =
			    value_from_json(json_array_get(j, k), depth + 1);
			if (!l->values[k])
				goto fail;
			l->n_values++;
		}
		break;
	}
	case JSON_STRING:
		v->string_value = xstrdup(json_string_value(j));
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		break;
	case JSON_INTEGER:
		v->number_value = (double)json_integer_value(j);
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
		break;
	case JSON_REAL:
		v->number_value = json_real_value(j);
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		v->bool_value = json_is_true(j);
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
		break;
	default:
		v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
		break;
	}
	return v;
fail:
	value_free(v);
	return NULL;
}

static Google__Protobuf__Struct *struct_from_json(json_t *object, int depth)
{
	if (depth > API_STRUCT_MAX_DEPTH)
		return NULL;
	Google__Protobuf__Struct *s = xmalloc(sizeof(*s));
	google__protobuf__struct__init(s);
	s->fields = xcalloc(json_object_size(object) + 1, sizeof(*s->fields));
	const char *key;
	json_t *value;
	json_object_foreach(object, key, value)
	{
		Google__Protobuf__Struct__FieldsEntry *e = xmalloc(sizeof(*e));
		google__protobuf__struct__fields_entry__init(e);
		e->key = xstrdup(key);
		s->fields[s->n_fields++] = e; /* freed with s on failure */
		e->value = value_from_json(value, depth);
		if (!e->value) {
			api_struct_free(s);
			return NULL;
		}
	}
	return s;
}

Google__Protobuf__Struct *api_struct_from_json(const char *text, size_t len)
{
	/* Numbers as reals: a Struct has only doubles, and an integer too
	 * large for jansson's integers must not fail the parse. */
	json_error_t error;
	json_t *root = json_loadb(text, len, JSON_DECODE_INT_AS_REAL, &error);
	if (!root)
		return NULL;
	Google__Protobuf__Struct *s =
	    json_is_object(root) ? struct_from_json(root, 1) : NULL;
	json_decref(root);
	return s;
}
