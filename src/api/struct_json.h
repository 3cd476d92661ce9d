/*
 * struct_json.h -- google.protobuf.Struct / Value as JSON text (proto3 JSON
 * forms), shared by the service handlers (transaction metadata, caveat
 * contexts) and the CLI's --json output.
 */
#ifndef PEMBA_API_STRUCT_JSON_H
#define PEMBA_API_STRUCT_JSON_H

#include <stddef.h>

#include "google/protobuf/struct.pb-c.h"
#include "util/strbuf.h"

/* Appends the JSON string literal for s[0..len). */
void api_json_string(strbuf *sb, const char *s, size_t len);
/* Appends a number as proto3 JSON writes doubles ("NaN", "Infinity"...). */
void api_json_double(strbuf *sb, double v);
/* Appends a Value / a Struct (an object). */
void api_json_value(strbuf *sb, const Google__Protobuf__Value *v);
void api_json_struct(strbuf *sb, const Google__Protobuf__Struct *s);

#endif
