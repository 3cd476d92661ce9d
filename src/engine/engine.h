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
 * PEMBA_EUNSUPPORTED when a caveated or expiring relationship is reached
 * (until caveats land).  stats may be NULL. */
int engine_check(store *st, const schema *sc, pemba_revision at,
                 const pemba_check_request *req, pemba_permissionship *out,
                 engine_stats *stats, pemba_error *err);

/* Same as engine_check(), but allocates from `scratch`, a caller-owned
 * arena that is reset before this function returns (its first chunk is
 * kept), so repeated checks on one handle do no per-check malloc once the
 * arena has warmed up.  scratch must not hold anything the caller still
 * needs. */
int engine_check_in(arena *scratch, store *st, const schema *sc,
                    pemba_revision at, const pemba_check_request *req,
                    pemba_permissionship *out, engine_stats *stats,
                    pemba_error *err);

#endif
