/*
 * struct_json.c -- see struct_json.h.
 */
#include "api/struct_json.h"

#include <math.h>
#include <string.h>

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

void api_json_double(strbuf *sb, double v)
{
	if (isnan(v))
		strbuf_puts(sb, "\"NaN\"");
	else if (isinf(v))
		strbuf_puts(sb, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	else if (v == floor(v) && fabs(v) < 1e15)
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
		api_json_string(sb, v->string_value,
		                   strlen(v->string_value));
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

