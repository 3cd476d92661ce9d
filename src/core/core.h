/*
 * core.h -- the pemba_db handle and helpers shared by the files of
 * src/core (the implementation of include/pemba.h).
 *
 * Not a public header: only the files of src/core include it.
 */
#ifndef PEMBA_CORE_H
#define PEMBA_CORE_H

#include <stdbool.h>

#include "core/integrity.h"
#include "pemba.h"
#include "schema/schema.h"
#include "store/store.h"
#include "util/arena.h"

/* How many compiled schemas a handle keeps.  Checks almost always use the
 * newest one; the others serve reads at older revisions. */
#define CORE_SCHEMA_CACHE_SIZE 8

/* A compiled schema and the revisions it is known to be current at: it was
 * written at `written_rev` and no schema write happened in
 * (written_rev, known_until].  Revisions past known_until may or may not
 * still have it (another handle may have written a schema since). */
typedef struct core_schema_entry {
	schema *sc; /* NULL: free slot */
	pemba_revision written_rev;
	pemba_revision known_until;
	uint64_t last_used; /* for LRU eviction */
} core_schema_entry;

struct pemba_db {
	store *st;
	/* Per-request scratch for checks, reset after every check and
	 * reused so a warm handle does not malloc per check. */
	arena *check_arena;
	/* Scratch for writes (duplicate detection, messages). */
	arena *write_arena;
	core_schema_entry schemas[CORE_SCHEMA_CACHE_SIZE];
	/* The bulk imports begun on this handle and not yet committed or
	 * aborted (linked by their next_open); pemba_close aborts them. */
	struct pemba_import *imports;
	uint64_t use_clock;
};

/* A handle on an open store (takes ownership of st: pemba_close closes
 * it).  For callers that open the store themselves with options
 * pemba_open does not offer (core_integrity_open). */
pemba_db *core_db_wrap(store *st);

/* Resolves `at` (0 = head) to a readable revision.  With at == 0 and an
 * empty datastore, *rev_out is 0 and the caller must not query. */
int core_resolve_revision(pemba_db *db, pemba_revision at,
                          pemba_revision *rev_out, pemba_error *err);

/* The compiled schema current at revision `rev` (already resolved), from
 * the cache when possible.  *out is NULL (and PEMBA_OK returned) when no
 * schema had been written by then.  The schema is owned by the cache and
 * stays valid until the handle is closed or CORE_SCHEMA_CACHE_SIZE other
 * schemas have been loaded since: use it within one API call. */
int core_schema_at(pemba_db *db, pemba_revision rev, const schema **out,
                   pemba_error *err);
/* core_schema_at, also giving the revision that wrote that schema (0 when
 * *out is NULL): two revisions with the same writer have the same
 * schema. */
int core_schema_version_at(pemba_db *db, pemba_revision rev, const schema **out,
                           pemba_revision *written_out, pemba_error *err);

/* Tells the cache that revision `rev` was committed by this handle without
 * a schema change, so the schema known at rev - 1 is still current. */
void core_schema_note_revision(pemba_db *db, pemba_revision rev);

/* Adds a schema this handle just wrote at `rev` (takes ownership). */
void core_schema_add(pemba_db *db, schema *sc, pemba_revision rev);

void core_schema_cache_clear(pemba_db *db);

/* Validation of identifiers shared by writes, deletes and reads. */
/* Fails the calling API function with PEMBA_EINVAL naming a NULL
 * argument, e.g. "argument `req` is NULL". */
#define CORE_REQUIRE(err, arg)                                                 \
	do {                                                                   \
		if ((arg) == NULL)                                             \
			return error_set((err), PEMBA_EINVAL,                  \
			                 "argument `%s` is NULL", #arg);       \
	} while (0)

/* Schema text larger than this is refused (PEMBA_ELIMIT): 4 MiB, gRPC's
 * default message limit, is far above any real schema and bounds the
 * parser's work and memory. */
#define CORE_MAX_SCHEMA_BYTES (4u << 20)

/* Transaction metadata (pemba_write_options.metadata) larger than this is
 * refused (PEMBA_ELIMIT). */
#define CORE_MAX_METADATA_BYTES (64 * 1024)

bool core_is_empty(const char *s);
/* "" for NULL and "..." (the subject itself). */
const char *core_subject_relation(const char *s);

/* Checks a filter's identifiers and that every name it mentions exists in
 * schema `sc` (NULL = no schema).  `what` names the filter in messages
 * ("filter", "precondition 3").  require_resource_type: deletes and
 * preconditions need one; reads accept a subject type instead. */
int core_validate_filter(const schema *sc, const pemba_filter *f,
                         const char *what, bool require_resource_type,
                         pemba_error *err);
/* Converts a validated filter to the store's form. */
void core_store_filter(const pemba_filter *f, store_filter *out);

/* ---------------------------------- relationships (relationships.c) */

/* Checks of one relationship that need no schema: identifier syntax and
 * lengths, wildcard placement, caveat name and context presence.  `a`
 * holds the message's relationship text (built only on failure). */
int core_check_rel_syntax(arena *a, const pemba_relationship *r,
                          pemba_error *err);
/* Checks r (syntax already checked) against schema sc (NULL: none):
 * definitions and relations exist, the relation is not a permission and,
 * with check_subject_type (CREATE / TOUCH), the subject, caveat, context
 * and expiration suit one of its allowed types. */
int core_check_rel_schema(arena *a, const schema *sc,
                          const pemba_relationship *r, bool check_subject_type,
                          pemba_error *err);
/* core_check_rel_schema, telling in *kind (may be NULL) which rule
 * failed; the message is the same. */
int core_classify_rel_schema(arena *a, const schema *sc,
                             const pemba_relationship *r,
                             bool check_subject_type, core_rel_problem *kind,
                             pemba_error *err);
/* `type:id#rel@type:id[#rel]` for messages (long ids shortened), in a. */
const char *core_rel_text(arena *a, const pemba_relationship *r);
/* Between the public and the store's form of a relationship: the store
 * has "" where the public form has NULL (or "..." as subject relation).
 * The strings are shared, not copied. */
void core_to_store_rel(const pemba_relationship *r, store_rel *out);
void core_from_store_rel(const store_rel *r, pemba_relationship *out);

/* ------------------------------------------------ bulk import (import.c) */

/* Writes rels[0..n) (op CREATE or TOUCH) as one revision, checked as an
 * import checks them: the write phase of pemba_import_commit for rows
 * already in memory (pemba_copy_relationships' batches), without staging.
 * The write transaction is held only while the rows are checked against
 * the schema and written; the syntax checks come before it. */
int core_import_rows(pemba_db *db, pemba_operation op,
                     const pemba_relationship *rels, size_t n,
                     const pemba_write_options *opts, pemba_revision *rev_out,
                     pemba_error *err);

/* Where a write takes its rows from, called inside its write transaction
 * t (head: the revision it started from, the newest committed; reads at
 * head with store_query see exactly what the transaction will commit
 * over, since writers are serialized).  Fills rows[0..*n_out) (up to
 * max; 0 at the end), strings in `a` (reset before each call). */
typedef int (*core_row_source_fn)(void *ctx, store_txn *t, pemba_revision head,
                                  arena *a, store_rel *rows, size_t max,
                                  size_t *n_out, pemba_error *err);

/* Like core_import_rows, with the rows produced inside the write
 * transaction by `next` (pemba_copy_relationships reads its source at the
 * head there, so it never writes what was deleted meanwhile).  No row at
 * all: nothing is committed, *rev_out is 0.  The rows are checked against
 * the schema and the write guard, not for syntax (they come from the
 * store).  bulk: many rows (store_txn_defer_indexes may apply). */
int core_import_from(pemba_db *db, pemba_operation op, core_row_source_fn next,
                     void *ctx, bool bulk, const pemba_write_options *opts,
                     pemba_revision *rev_out, pemba_error *err);

/* ------------------------------------ schema changes (schema_ops.c) */

/* Copies a diff's changes into one malloc'd block (array + strings) for
 * the public API; returns their number (*out NULL when 0). */
size_t core_pack_changes(const schema_diff *d, pemba_schema_change **out);

/* SpiceDB's data rules for replacing the stored schema by `new` (d is the
 * diff from the stored schema): PEMBA_EINVAL naming one blocking
 * relationship, or PEMBA_OK.  txn is the write transaction the schema
 * will be written in. */
int core_check_schema_change(store_txn *txn, const schema *new,
                             const schema_diff *d, pemba_error *err);

/* The probe matching the relationships an allowed type admits, as
 * SpiceDB matches them when the type is removed from
 * resource_type#relation. */
void core_probe_for_type(const char *resource_type, const char *relation,
                         const schema_allowed_type *t, store_probe *p);

/* ------------------------------------ datastore settings (settings.c) */

/* PEMBA_OK, or PEMBA_EREADONLY with a message saying how to lift it when
 * the datastore is in read-only mode.  Call it inside the write
 * transaction (after store_txn_begin on db->st): the flag is then read in
 * that transaction, and writers being serialized, nobody can set it
 * between the check and the commit. */
int core_check_writable(pemba_db *db, pemba_error *err);

/* What a relationship write must enforce, read inside its transaction:
 * read-only mode and the relation deprecations.  Usage:
 *
 *   core_write_guard g;
 *   rc = core_write_guard_begin(db, &g, err);   after store_txn_begin
 *   rc = core_write_guard_check(&g, rel, err);  each CREATE / TOUCH
 *   ... commit ...
 *   core_write_guard_report(&g, opts);          only after a commit
 *   core_write_guard_end(&g);                   always (also after begin
 *                                               failed)
 */
typedef struct core_write_guard {
	store_deprecation *deprecations; /* one malloc'd block, or NULL */
	size_t ndeprecations;
	uint64_t *hits;  /* per deprecation: relationships written to it */
	char **examples; /* per deprecation: the first of them, malloc'd */
} core_write_guard;

int core_write_guard_begin(pemba_db *db, core_write_guard *g, pemba_error *err);

/* positions.c: records p (checked) as held by t's revision. */
int core_record_source_position(store_txn *t, const pemba_source_position *p,
                                pemba_error *err);
/* For a CREATE / TOUCH of r (syntax already checked): PEMBA_EPRECONDITION
 * naming the relation and r when r's relation is deprecated in REJECT
 * mode; counted for the report in WARN mode. */
int core_write_guard_check(core_write_guard *g, const pemba_relationship *r,
                           pemba_error *err);
/* Calls opts->on_deprecated once per WARN deprecation that was hit. */
void core_write_guard_report(const core_write_guard *g,
                             const pemba_write_options *opts);
void core_write_guard_end(core_write_guard *g);

#endif
