/*
 * internal.h -- helpers shared by the files of src/engine (request
 * validation, the check session used by LookupResources, cursors).  Not
 * used outside the engine.
 */
#ifndef PEMBA_ENGINE_INTERNAL_H
#define PEMBA_ENGINE_INTERNAL_H

#include <stddef.h>

#include "engine/engine.h"
#include "store/store.h"

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

/* ------------------------------------------------------------- caveats */

/* A set of missing caveat parameter names: sorted, no duplicates.
 * Immutable once built; shared freely within a request arena. */
typedef struct nameset {
	size_t n;
	const char *names[];
} nameset;

/* The union of two sets (either may be NULL; the result is never NULL). */
const nameset *nameset_union(arena *a, const nameset *x, const nameset *y);

/* Three-valued caveat outcomes (the check engine's VALUE_* agree on
 * FALSE and TRUE). */
enum { KLEENE_FALSE = 0, KLEENE_TRUE = 1, KLEENE_COND = 3 };

typedef struct caveat_cache_entry caveat_cache_entry;

/* Evaluates the caveats of relationships for one request: the request's
 * context, a cache keyed by (caveat, relationship context) -- many rows
 * share a context, each distinct one is evaluated once -- and a scratch
 * arena for the evaluator's temporaries.  Results live in `arena`. */
typedef struct caveat_eval {
	arena *arena;
	const schema *sc;
	pemba_error *err;
	const char *context; /* "" if none */
	arena *scratch;      /* created on first use */
	caveat_cache_entry *buckets[64];
} caveat_eval;

void caveat_eval_init(caveat_eval *ce, arena *a, const schema *sc,
                      pemba_error *err);
/* context: JSON object text already validated (engine_validate_context). */
void caveat_eval_set_context(caveat_eval *ce, const char *context);
/* KLEENE_TRUE for a row without caveat, KLEENE_FALSE, KLEENE_COND
 * (*missing set) or a negative error (PEMBA_EPRECONDITION for a caveat
 * the schema lacks, the evaluator's errors). */
int caveat_eval_row(caveat_eval *ce, const store_rel *row,
                    const nameset **missing);
/* Releases the scratch arena. */
void caveat_eval_end(caveat_eval *ce);

#endif
