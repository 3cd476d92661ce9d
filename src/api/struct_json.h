/*
 * struct_json.h -- google.protobuf.Struct / Value as JSON text (proto3 JSON
 * forms) and back, shared by the service handlers (transaction metadata,
 * caveat contexts) and the CLI's --json output.
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

/* Deepest nesting of JSON objects and arrays api_struct_from_json accepts.
 * Each JSON level is two protobuf message levels (Struct or ListValue, then
 * Value), so the result stays well inside clients' decoding limits. */
#define API_STRUCT_MAX_DEPTH 32

/* Parses `text` (len bytes), which must be one JSON object, into a Struct
 * (numbers become doubles, as a Struct holds them).  Returns NULL when the
 * text is not a JSON object or nests deeper than API_STRUCT_MAX_DEPTH.  The
 * result is a malloc'd tree owned by the caller: release it with
 * api_struct_free() (not protobuf-c's free_unpacked). */
Google__Protobuf__Struct *api_struct_from_json(const char *text, size_t len);
void api_struct_free(Google__Protobuf__Struct *s);

#endif
