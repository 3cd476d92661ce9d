/*
 * import.c -- bulk import (pemba_import_*): any number of relationships
 * committed atomically as one revision, without holding the datastore's
 * write lock while they arrive.
 *
 * An import has two phases (README.md, "Bulk import"):
 *
 *   staging   pemba_import_begin reads what a cheap early check needs (the
 *             head's schema, compiled into the import's own copy; read-only
 *             mode; the deprecations) in one read transaction, and takes no
 *             lock.  pemba_import_add checks each row (syntax, that schema,
 *             REJECT deprecations) and puts it into the import's staging
 *             area (store/stage.h: a private temporary database, bounded
 *             memory, unlinked file), deduplicated and kept in key order.
 *             add touches neither the datastore nor the pemba_db handle.
 *
 *   commit    pemba_import_commit opens the write transaction and copies the
 *             staged rows in, in key order, through the store's batch
 *             writes: the rows are validated again against the schema
 *             current in that transaction (skipped when it is the very
 *             schema the rows were checked against), read-only mode and
 *             the deprecations are read in it, CREATE conflicts with stored
 *             relationships surface here, and the revision commits.  The
 *             lock is held only for this copy.
 *
 * core_import_rows is the commit phase alone, for rows already in memory
 * (the batches of pemba_copy_relationships).
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "store/stage.h"
#include "util/error.h"
#include "util/xalloc.h"

/* Rows checked, then staged or written, per round: the store writes a
 * round with few statements.  A round's strings come from one arena
 * reset, so memory does not grow with the import. */
#define IMPORT_CHUNK 256

/* Rows per round of the write phase (heap buffers): large, so that an
 * engine with a per-batch fixed cost and a cheap per-row one (PostgreSQL's
 * COPY path, store_postgres.c) gets whole batches; SQLite is indifferent.
 * A round's strings stay in the arena until the next round (a few MiB). */
#define IMPORT_WRITE_CHUNK 16384

struct pemba_import {
	pemba_db *db; /* commit and abort use it; add never does */
	struct pemba_import *next_open; /* the handle's list of open imports */
	pemba_operation op;
	arena *scratch; /* one round of add or commit */
	/* The schema current when the import began (the import's own
	 * compiled copy, NULL when there was none) and the revision that
	 * wrote it: every staged row passed it. */
	schema *sc;
	pemba_revision sc_written;
	core_write_guard early;   /* read-only and deprecations at begin */
	store_stage *stage;       /* NULL until the first row */
	uint64_t count;           /* rows accepted by add */
	bool failed;              /* an add failed: only abort is allowed */
	char *metadata;           /* NULL: none */
	pemba_write_options opts; /* the caller's callbacks (no metadata) */
};

/* ============================================================= the write */

/* Where the write phase takes its rows from: core_row_source_fn
 * (core.h), called inside the write transaction. */
typedef core_row_source_fn import_source_fn;

/* How the write phase validates. */
typedef struct import_plan {
	pemba_operation op;
	/* Rows were checked against the schema written at this revision:
	 * when that is still the schema current in the transaction, the
	 * schema checks are not repeated.  0: always check. */
	pemba_revision validated_against;
	const char *metadata;
	const pemba_write_options *opts;
	/* Many rows (IMPORT_BULK_ROWS or more): into an empty datastore the
	 * store may build its secondary indexes at commit instead of row by
	 * row (store_txn_defer_indexes). */
	bool bulk;
	/* No row at all: abort instead of committing an empty revision
	 * (*rev_out is then 0). */
	bool skip_empty;
} import_plan;

#define IMPORT_BULK_ROWS 10000

/* Appended to a schema refusal of a staged row at commit. */
#define SCHEMA_CHANGED_NOTE                                                    \
	"; the schema changed after this import began, nothing was written"

/* Writes rows[0..n) (checked) through the store's batch write; a CREATE
 * conflict names the row. */
static int write_rows(store_txn *t, pemba_operation op, arena *a,
                      const store_rel *rows, const pemba_relationship *rels,
                      size_t n, pemba_error *err)
{
	size_t done = 0;
	int rc = op == PEMBA_OP_CREATE
	             ? store_txn_create_batch(t, rows, n, &done, err)
	             : store_txn_touch_batch(t, rows, n, &done, err);
	if (rc == PEMBA_EEXISTS && op == PEMBA_OP_CREATE && done < n)
		return error_set(err, PEMBA_EEXISTS,
		                 "could not CREATE relationship `%s`, as "
		                 "it already exists; use TOUCH to write "
		                 "it regardless",
		                 core_rel_text(a, &rels[done]));
	return rc;
}

/*
 * The write phase: one transaction, one revision.  Rows come from `next`
 * in rounds of IMPORT_WRITE_CHUNK; each round is checked (schema unless the
 * plan says it is unchanged, then the write guard), then written.  Any failure
 * aborts: nothing is written and the revision is not used.
 */
static int import_write(pemba_db *db, const import_plan *plan,
                        import_source_fn next, void *ctx, arena *a,
                        pemba_revision *rev_out, pemba_error *err)
{
	store_txn *t;
	pemba_revision rev;
	core_write_guard guard;
	int rc = store_txn_begin(db->st, &t, &rev, err);
	if (rc < 0)
		return rc;
	/* Read-only mode and deprecations, read in this transaction. */
	rc = core_write_guard_begin(db, &guard, err);
	const schema *sc = NULL;
	pemba_revision written = 0;
	/* Writers are serialized: the schema current in this transaction
	 * is the one at the head it started from. */
	if (rc >= 0)
		rc = core_schema_version_at(db, rev - 1, &sc, &written, err);
	bool check_schema =
	    plan->validated_against == 0 || written != plan->validated_against;
	if (rc >= 0 && !core_is_empty(plan->metadata))
		rc = store_txn_set_metadata(t, plan->metadata, err);
	if (rc >= 0 && plan->bulk)
		rc = store_txn_defer_indexes(t, err);

	store_rel *rows = xmalloc(IMPORT_WRITE_CHUNK * sizeof(*rows));
	pemba_relationship *rels = xmalloc(IMPORT_WRITE_CHUNK * sizeof(*rels));
	size_t total = 0;
	while (rc >= 0) {
		arena_reset(a);
		size_t n;
		if ((rc = next(ctx, t, rev - 1, a, rows, IMPORT_WRITE_CHUNK, &n,
		               err)) < 0 ||
		    n == 0)
			break;
		total += n;
		size_t valid = 0;
		for (; valid < n; valid++) {
			core_from_store_rel(&rows[valid], &rels[valid]);
			if (check_schema &&
			    (rc = core_check_rel_schema(a, sc, &rels[valid],
			                                true, err)) < 0) {
				if (plan->validated_against && err &&
				    strlen(err->message) +
				            sizeof(SCHEMA_CHANGED_NOTE) <=
				        sizeof(err->message))
					strcat(err->message,
					       SCHEMA_CHANGED_NOTE);
				break;
			}
			if ((rc = core_write_guard_check(&guard, &rels[valid],
			                                 err)) < 0)
				break;
		}
		/* Rows before an invalid one are written first, so that a
		 * conflict among them is the error reported, as one row at
		 * a time would report it. */
		if (valid > 0) {
			pemba_error werr;
			error_clear(&werr);
			int wrc = write_rows(t, plan->op, a, rows, rels, valid,
			                     rc < 0 ? &werr : err);
			if (wrc < 0) {
				if (rc < 0 && err)
					*err = werr;
				rc = wrc;
			}
		}
	}
	free(rows);
	free(rels);
	if (rc < 0 || (total == 0 && plan->skip_empty)) {
		store_txn_abort(t);
		core_write_guard_end(&guard);
		if (rc >= 0 && rev_out)
			*rev_out = 0;
		return rc < 0 ? rc : PEMBA_OK;
	}
	rc = store_txn_commit(t, err);
	if (rc >= 0)
		core_write_guard_report(&guard, plan->opts);
	core_write_guard_end(&guard);
	if (rc < 0)
		return rc;
	core_schema_note_revision(db, rev);
	if (rev_out)
		*rev_out = rev;
	return PEMBA_OK;
}

/* ------------------------------------------------ rows already in memory */

typedef struct memory_source {
	const pemba_relationship *rels;
	size_t n, next;
} memory_source;

static int memory_next(void *ctx, store_txn *t, pemba_revision head, arena *a,
                       store_rel *rows, size_t max, size_t *n_out,
                       pemba_error *err)
{
	(void)t;
	(void)head;
	(void)err;
	memory_source *m = ctx;
	size_t n = m->n - m->next < max ? m->n - m->next : max;
	for (size_t i = 0; i < n; i++)
		core_to_store_rel(&m->rels[m->next + i], &rows[i]);
	m->next += n;
	*n_out = n;
	return PEMBA_OK;
}

int core_import_rows(pemba_db *db, pemba_operation op,
                     const pemba_relationship *rels, size_t n,
                     const pemba_write_options *opts, pemba_revision *rev_out,
                     pemba_error *err)
{
	assert(op == PEMBA_OP_CREATE || op == PEMBA_OP_TOUCH);
	arena *a = db->write_arena;
	/* What needs no schema, before taking the lock. */
	for (size_t i = 0; i < n; i++) {
		arena_reset(a);
		int rc = core_check_rel_syntax(a, &rels[i], err);
		if (rc < 0)
			return rc;
	}
	import_plan plan = {.op = op,
	                    .metadata = opts ? opts->metadata : NULL,
	                    .opts = opts,
	                    .bulk = n >= IMPORT_BULK_ROWS};
	memory_source src = {.rels = rels, .n = n};
	return import_write(db, &plan, memory_next, &src, a, rev_out, err);
}

int core_import_from(pemba_db *db, pemba_operation op, core_row_source_fn next,
                     void *ctx, bool bulk, const pemba_write_options *opts,
                     pemba_revision *rev_out, pemba_error *err)
{
	assert(op == PEMBA_OP_CREATE || op == PEMBA_OP_TOUCH);
	import_plan plan = {.op = op,
	                    .metadata = opts ? opts->metadata : NULL,
	                    .opts = opts,
	                    .bulk = bulk,
	                    .skip_empty = true};
	return import_write(db, &plan, next, ctx, db->write_arena, rev_out,
	                    err);
}

/* ============================================================ the import */

/* Reads the schema, read-only mode and deprecations of the head into the
 * import, in one read transaction (no write lock). */
static int import_snapshot(pemba_import *imp, pemba_error *err)
{
	pemba_db *db = imp->db;
	int rc = store_read_begin(db->st, err);
	if (rc < 0)
		return rc;
	pemba_revision head = 0;
	char *text = NULL;
	if ((rc = core_write_guard_begin(db, &imp->early, err)) < 0 ||
	    (rc = store_head_revision(db->st, &head, err)) < 0 || head == 0)
		goto out;
	rc = store_read_schema(db->st, head, &text, &imp->sc_written, err);
	if (rc == PEMBA_ENOTFOUND) {
		error_clear(err);
		rc = PEMBA_OK;
		goto out;
	}
	if (rc < 0)
		goto out;
	pemba_error cerr;
	if (schema_compile(text, strlen(text), &imp->sc, &cerr) < 0)
		rc = error_set(err, PEMBA_EIO,
		               "the schema stored at revision %llu does not "
		               "compile: %s",
		               (unsigned long long)imp->sc_written,
		               cerr.message);
out:
	free(text);
	store_read_end(db->st);
	return rc;
}

static void import_free(pemba_import *imp)
{
	pemba_import **p = &imp->db->imports;
	while (*p != imp)
		p = &(*p)->next_open;
	*p = imp->next_open;
	store_stage_close(imp->stage);
	schema_free(imp->sc);
	core_write_guard_end(&imp->early);
	arena_destroy(imp->scratch);
	free(imp->metadata);
	free(imp);
}

int pemba_import_begin(pemba_db *db, pemba_operation op, pemba_import **out,
                       pemba_error *err)
{
	return pemba_import_begin_ex(db, op, NULL, out, err);
}

int pemba_import_begin_ex(pemba_db *db, pemba_operation op,
                          const pemba_write_options *opts, pemba_import **out,
                          pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, out);
	*out = NULL;
	if (op != PEMBA_OP_CREATE && op != PEMBA_OP_TOUCH)
		return error_set(err, PEMBA_EINVAL,
		                 "an import creates or touches relationships "
		                 "(operation %d is neither)",
		                 (int)op);
	const char *metadata = opts ? opts->metadata : NULL;
	if (metadata && strlen(metadata) > CORE_MAX_METADATA_BYTES)
		return error_set(
		    err, PEMBA_ELIMIT,
		    "transaction metadata is %zu bytes; at most %d "
		    "are accepted",
		    strlen(metadata), CORE_MAX_METADATA_BYTES);
	pemba_import *imp = xcalloc(1, sizeof(*imp));
	imp->db = db;
	imp->op = op;
	imp->scratch = arena_create(0);
	if (opts) {
		imp->opts = *opts;
		imp->opts.metadata = NULL;
	}
	if (!core_is_empty(metadata))
		imp->metadata = xstrdup(metadata);
	imp->next_open = db->imports;
	db->imports = imp;
	int rc = import_snapshot(imp, err);
	if (rc < 0) {
		import_free(imp);
		return rc;
	}
	*out = imp;
	return PEMBA_OK;
}

/* Stages rels[0..n) (checked); a CREATE of a key staged before names the
 * row, as a conflict with a stored relationship would. */
static int stage_rows(pemba_import *imp, const pemba_relationship *rels,
                      size_t n, pemba_error *err)
{
	int rc;
	if (!imp->stage && (rc = store_stage_open(&imp->stage, err)) < 0)
		return rc;
	store_rel rows[IMPORT_CHUNK];
	for (size_t i = 0; i < n; i++)
		core_to_store_rel(&rels[i], &rows[i]);
	size_t done = 0;
	rc = store_stage_put(imp->stage, rows, n, imp->op == PEMBA_OP_TOUCH,
	                     &done, err);
	imp->count += done;
	if (rc == PEMBA_EEXISTS && done < n)
		return error_set(err, PEMBA_EEXISTS,
		                 "could not CREATE relationship `%s`, as it "
		                 "already exists earlier in this import; use "
		                 "TOUCH to write it regardless",
		                 core_rel_text(imp->scratch, &rels[done]));
	return rc;
}

int pemba_import_add(pemba_import *imp, const pemba_relationship *rels,
                     size_t n, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, imp);
	if (n > 0)
		CORE_REQUIRE(err, rels);
	if (imp->failed)
		return error_set(err, PEMBA_EINVAL,
		                 "this import already failed; abort it");
	arena *a = imp->scratch;
	/*
	 * Rounds of up to IMPORT_CHUNK rows: check them, then stage them.
	 * The outcome is the same as one row at a time: the rows before an
	 * invalid one are staged first, so a duplicate among them is the
	 * error reported.
	 */
	for (size_t start = 0; start < n; start += IMPORT_CHUNK) {
		arena_reset(a);
		size_t m = n - start < IMPORT_CHUNK ? n - start : IMPORT_CHUNK;
		const pemba_relationship *chunk = rels + start;
		size_t valid = 0;
		int rc = PEMBA_OK;
		for (; valid < m; valid++) {
			rc = core_check_rel_syntax(a, &chunk[valid], err);
			if (rc >= 0)
				rc = core_check_rel_schema(
				    a, imp->sc, &chunk[valid], true, err);
			if (rc >= 0)
				rc = core_write_guard_check(&imp->early,
				                            &chunk[valid], err);
			if (rc < 0)
				break;
		}
		if (valid > 0) {
			pemba_error serr;
			error_clear(&serr);
			int src =
			    stage_rows(imp, chunk, valid, rc < 0 ? &serr : err);
			if (src < 0) {
				if (rc < 0 && err)
					*err = serr;
				rc = src;
			}
		}
		if (rc < 0) {
			imp->failed = true;
			return rc;
		}
	}
	return PEMBA_OK;
}

static int stage_next(void *ctx, store_txn *t, pemba_revision head, arena *a,
                      store_rel *rows, size_t max, size_t *n_out,
                      pemba_error *err)
{
	(void)t;
	(void)head;
	pemba_import *imp = ctx;
	*n_out = 0;
	return imp->stage
	           ? store_stage_read(imp->stage, a, rows, max, n_out, err)
	           : PEMBA_OK;
}

int pemba_import_commit(pemba_import *imp, pemba_revision *rev_out,
                        uint64_t *count_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, imp);
	if (imp->failed) {
		import_free(imp);
		return error_set(err, PEMBA_EINVAL,
		                 "this import failed earlier; nothing was "
		                 "written");
	}
	/* A staged row passed the schema written at sc_written; with no
	 * schema at begin, no row was staged. */
	import_plan plan = {.op = imp->op,
	                    .validated_against = imp->sc_written,
	                    .metadata = imp->metadata,
	                    .opts = &imp->opts,
	                    .bulk = imp->count >= IMPORT_BULK_ROWS};
	if (imp->stage)
		store_stage_rewind(imp->stage);
	pemba_revision rev = 0;
	uint64_t count = imp->count;
	int rc = import_write(imp->db, &plan, stage_next, imp, imp->scratch,
	                      &rev, err);
	import_free(imp);
	if (rc < 0)
		return rc;
	if (rev_out)
		*rev_out = rev;
	if (count_out)
		*count_out = count;
	return PEMBA_OK;
}

void pemba_import_abort(pemba_import *imp)
{
	if (imp == NULL)
		return;
	import_free(imp);
}
