/*
 * engine.h -- permission evaluation over a store and a compiled schema.
 *
 * The engine reads relationships only through the store interface
 * (src/store/store.h) and meaning only through the compiled schema
 * (src/schema/schema.h).  It knows nothing of gRPC, YAML or SQL.
 *
 * Every request allocates from its own arena, released when it returns;
 * subproblems (resource, relation, subject) are memoized within one request
 * and never across requests.  See src/engine/README.md for the semantics
 * (self-membership of usersets, cycles, the depth limit).
 */
#ifndef PEMBA_ENGINE_H
#define PEMBA_ENGINE_H

#include <stdint.h>

#include "pemba.h"
#include "schema/schema.h"
#include "store/store.h"
#include "util/arena.h"

typedef struct engine_stats {
	uint64_t dispatches; /* sub-checks evaluated (memo misses) */
	uint64_t memo_hits;
	uint64_t queries; /* store queries issued */
} engine_stats;

/* Evaluates req as of revision `at` (already validated by the caller with
 * store_check_revision) using schema `sc` (the schema current at `at`; NULL
 * when no schema exists, which makes every definition unknown).
 *
 * Errors: PEMBA_EPRECONDITION for an unknown resource type or
 * permission/relation, or unknown subject type; PEMBA_EINVAL for a
 * malformed request (bad identifiers, wildcard subject); PEMBA_EDEPTH when
 * evaluation needs more than PEMBA_MAX_DEPTH nested dispatches or runs into
 * a cycle in the data that no other path decides;
 * PEMBA_EUNSUPPORTED when a caveated relationship is reached (until
 * caveats land); expired relationships are hidden by the store.  stats may be NULL. */
int engine_check(store *st, const schema *sc, pemba_revision at,
                 const pemba_check_request *req, pemba_permissionship *out,
                 engine_stats *stats, pemba_error *err);

/* Checks a request's caveat context: NULL, "" or a JSON object of at most
 * CEL_MAX_CONTEXT_BYTES (PEMBA_EINVAL otherwise). */
int engine_validate_context(const char *context, pemba_error *err);

/* Same as engine_check(), but allocates from `scratch`, a caller-owned
 * arena that is reset before this function returns (its first chunk is
 * kept), so repeated checks on one handle do no per-check malloc once the
 * arena has warmed up.  scratch must not hold anything the caller still
 * needs. */
int engine_check_in(arena *scratch, store *st, const schema *sc,
                    pemba_revision at, const pemba_check_request *req,
                    pemba_permissionship *out, engine_stats *stats,
                    pemba_error *err);

/* engine_check_in() that also reports the missing caveat parameters of a
 * CONDITIONAL answer into out->missing (see pemba_check_result; the
 * caller releases it with pemba_check_result_clear()).  out->error is not
 * touched. */
int engine_check_result_in(arena *scratch, store *st, const schema *sc,
                           pemba_revision at, const pemba_check_request *req,
                           pemba_check_result *out, engine_stats *stats,
                           pemba_error *err);

/* engine_check_result_in() that also records the debug trace when
 * trace_out is non-NULL: *trace_out (release with pemba_check_trace_free)
 * on success, NULL on failure.  The trace has its own arena; without
 * trace_out nothing is recorded or allocated for it. */
int engine_check_trace_in(arena *scratch, store *st, const schema *sc,
                          pemba_revision at, const pemba_check_request *req,
                          pemba_check_result *out,
                          pemba_check_trace **trace_out, engine_stats *stats,
                          pemba_error *err);

/* ------------------------------------------------------------ sessions */

/* A check session answers many checks for one subject with a shared memo
 * (LookupResources verifies its candidates with it).  Everything lives in
 * arena `a`, which the caller resets when done.  After a check fails the
 * session must not be used again. */
typedef struct engine_session engine_session;
int engine_session_begin(arena *a, store *st, const schema *sc,
                         pemba_revision at, const char *subject_type,
                         const char *subject_id, const char *subject_relation,
                         engine_session **out, pemba_error *err);
/* Does the session's subject have `rel` on (rel's definition, id)?
 * CONDITIONAL when caveat parameters missing from the contexts decide it:
 * engine_session_missing() then names them (valid until the next check
 * on the session). */
int engine_session_check(engine_session *s, const schema_relation *rel,
                         const char *id, pemba_permissionship *out);
/* Sets the request's caveat context (JSON object text; NULL or "" for
 * none) for the session's following checks.  PEMBA_EINVAL if malformed. */
int engine_session_set_context(engine_session *s, const char *context,
                               pemba_error *err);
void engine_session_missing(const engine_session *s,
                            const char *const **names, size_t *n);
/* Releases what the session holds outside its arena (the caveat
 * evaluator's scratch).  Call once when done, before resetting the
 * arena; NULL is a no-op. */
void engine_session_end(engine_session *s);
void engine_session_stats(const engine_session *s, engine_stats *out);

/* --------------------------------------------- lookups and expansion */

/* The following validate their request as engine_check does and read at
 * revision `at` (validated by the caller) with schema `sc`.  They allocate
 * from `scratch` and reset it before returning. */

/* LookupResources (pemba_lookup_resources): walks relationships
 * backwards from the subject to the intermediate objects, then merges
 * per-edge streams of candidate resources in id order (each a store query
 * after the cursor), verifies each candidate with a check session and
 * streams the results: memory is bounded by the walk and the page, not by
 * the number of results (README.md). */
int engine_lookup_resources(arena *scratch, store *st, const schema *sc,
                            pemba_revision at,
                            const pemba_lookup_resources_request *req,
                            pemba_lookup_resource_fn fn, void *ctx,
                            pemba_error *err);

/* LookupSubjects (pemba_lookup_subjects): forward expansion of the
 * permission into subject sets with wildcard/exclusion algebra. */
int engine_lookup_subjects(arena *scratch, store *st, const schema *sc,
                           pemba_revision at,
                           const pemba_lookup_subjects_request *req,
                           pemba_lookup_subject_fn fn, void *ctx,
                           pemba_error *err);

/* ExpandPermissionTree (pemba_expand).  The tree is allocated from
 * `out_arena` (not reset); scratch is. */
int engine_expand(arena *out_arena, arena *scratch, store *st,
                  const schema *sc, pemba_revision at,
                  const char *resource_type, const char *resource_id,
                  const char *permission, pemba_expand_node **tree_out,
                  pemba_error *err);

#endif
