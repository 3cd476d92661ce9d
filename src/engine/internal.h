/*
 * internal.h -- helpers shared by the files of src/engine (request
 * validation, the check session used by LookupResources, cursors).  Not
 * used outside the engine.
 */
#ifndef PEMBA_ENGINE_INTERNAL_H
#define PEMBA_ENGINE_INTERNAL_H

#include <stddef.h>

#include "engine/engine.h"

/* "" for "no subject relation"; the API also accepts NULL and "...". */
const char *engine_normalize_relation(const char *s);

/* Identifier checks with the messages of a check request
 * (PEMBA_EINVAL); `what` names the field ("resource", "subject"). */
int engine_validate_type(pemba_error *err, const char *what, const char *s);
int engine_validate_id(pemba_error *err, const char *what, const char *s);
int engine_validate_relation(pemba_error *err, const char *what, const char *s);

/* Schema lookups failing with PEMBA_EPRECONDITION "object definition `x`
 * not found" / "relation/permission `p` not found under definition `d`".
 * sc may be NULL (no schema: every definition is unknown). */
int engine_find_definition(const schema *sc, const char *name,
                           const schema_definition **out, pemba_error *err);
int engine_find_relation(const schema_definition *def, const char *name,
                         const schema_relation **out, pemba_error *err);

/* Cursors: "v1." followed by the lower-case hex of the last id returned.
 * engine_cursor_encode returns an arena string; engine_cursor_decode
 * returns PEMBA_OK with *id_out NULL for a NULL/"" cursor, the decoded id
 * (arena string) otherwise, or PEMBA_EINVAL for a malformed cursor. */
const char *engine_cursor_encode(arena *a, const char *id);
int engine_cursor_decode(arena *a, const char *cursor, const char **id_out,
                         pemba_error *err);

#endif
