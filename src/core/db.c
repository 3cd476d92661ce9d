/*
 * db.c -- the pemba_db handle: open, clone, close, revisions, waiting for
 * new revisions, garbage collection.
 *
 * Concurrency model (README.md): one handle per thread.  pemba_clone
 * opens another handle on the same datastore for a worker thread; the
 * store serializes writers across handles and processes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ------------------------------------------------------------ lifecycle */

#define CORE_MAX_GC_WINDOW_SECONDS ((int64_t)1000 * 366 * 24 * 3600)

/* Makes sure a failed open's message says which datastore it was about:
 * the engine names it in most messages, but not in every one that comes
 * from the database library ("file is not a database"). */
static void name_uri_in_error(const char *uri, pemba_error *err)
{
	if (err == NULL || strstr(err->message, uri) != NULL)
		return;
	char original[sizeof(err->message)];
	memcpy(original, err->message, sizeof(original));
	snprintf(err->message, sizeof(err->message),
	         "cannot open datastore \"%.256s\": %.700s", uri, original);
}

/* A new handle around an open store (which it then owns).  The schema
 * cache starts empty: each handle has its own. */
static pemba_db *db_wrap(store *st)
{
	pemba_db *db = xcalloc(1, sizeof(*db));
	db->st = st;
	/* 16 KiB covers the memo and row copies of typical checks. */
	db->check_arena = arena_create(16 * 1024);
	db->write_arena = arena_create(0);
	return db;
}

int pemba_open(const char *uri, const pemba_options *opts, pemba_db **out,
               pemba_error *err)
{
	error_clear(err);
	if (out == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "pemba_open: the handle out pointer is NULL");
	if (uri == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "a datastore URI is required (got NULL)");
	store_options so = {0};
	if (opts) {
		if (opts->gc_window_seconds < 0)
			return error_set(err, PEMBA_EINVAL,
			                 "gc window must not be negative "
			                 "(got %lld seconds)",
			                 (long long)opts->gc_window_seconds);
		/* The store works in milliseconds: a window of "forever"
		 * (INT64_MAX seconds) is held to 1000 years so that the
		 * conversion cannot overflow. */
		so.gc_window_seconds =
		    opts->gc_window_seconds > CORE_MAX_GC_WINDOW_SECONDS
		        ? CORE_MAX_GC_WINDOW_SECONDS
		        : opts->gc_window_seconds;
		so.query_cache_bytes = opts->query_cache_bytes;
		switch (opts->no_auto_migrate) {
		case PEMBA_MIGRATE_AUTO:
			so.migrate = STORE_MIGRATE_AUTO;
			break;
		case PEMBA_MIGRATE_NEW_ONLY:
			so.migrate = STORE_MIGRATE_NEW_ONLY;
			break;
		default:
			so.migrate = STORE_MIGRATE_REQUIRE;
			break;
		}
	}
	store *st;
	int rc = store_open(uri, &so, &st, err);
	if (rc < 0) {
		name_uri_in_error(uri, err);
		return rc;
	}
	*out = db_wrap(st);
	return PEMBA_OK;
}

int pemba_query_cache_stats_get(pemba_db *db, pemba_query_cache_stats *out)
{
	store_query_cache_stats st;
	bool on = db && store_query_cache_report(db->st, &st);
	memset(out, 0, sizeof(*out));
	if (!on)
		return 0;
	out->hits = st.hits;
	out->misses = st.misses;
	out->inserts = st.inserts;
	out->uncacheable = st.uncacheable;
	out->evictions = st.evictions;
	out->entries = st.entries;
	out->bytes = st.bytes;
	out->budget = st.budget;
	return 1;
}

int pemba_clone(pemba_db *db, pemba_db **out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, out);
	*out = NULL;
	store *st;
	int rc = store_reopen(db->st, &st, err);
	if (rc < 0)
		return rc;
	*out = db_wrap(st);
	return PEMBA_OK;
}

void pemba_close(pemba_db *db)
{
	if (db == NULL)
		return;
	/* Imports still open are aborted (their staged rows discarded):
	 * they would commit through db. */
	while (db->imports)
		pemba_import_abort(db->imports);
	core_schema_cache_clear(db);
	store_close(db->st);
	arena_destroy(db->check_arena);
	arena_destroy(db->write_arena);
	free(db);
}

void pemba_free(void *ptr)
{
	free(ptr);
}

/* ------------------------------------------------------------ revisions */

int pemba_head_revision(pemba_db *db, pemba_revision *out, pemba_error *err)
{
	error_clear(err);
	if (db == NULL)
		return error_set(
		    err, PEMBA_EINVAL,
		    "pemba_head_revision: missing database handle");
	if (out == NULL)
		return error_set(
		    err, PEMBA_EINVAL,
		    "pemba_head_revision: the revision out pointer "
		    "is NULL");
	return store_head_revision(db->st, out, err);
}

const char *pemba_datastore_id(pemba_db *db)
{
	if (db == NULL)
		return "";
	const char *id = store_datastore_id(db->st);
	return id ? id : "";
}

int pemba_wait_revision(pemba_db *db, pemba_revision after, int timeout_ms,
                        pemba_revision *head_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, head_out);
	*head_out = 0;
	return store_wait_revision(db->st, after, timeout_ms, head_out, err);
}

uint64_t pemba_commit_generation(void)
{
	return store_commit_generation();
}

uint64_t pemba_wait_commit(uint64_t seen, int timeout_ms)
{
	return store_commit_wait(seen, timeout_ms);
}

int pemba_revision_nonce(pemba_db *db, pemba_revision rev, uint64_t *nonce_out,
                         pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, nonce_out);
	return store_revision_nonce(db->st, rev, nonce_out, err);
}

int core_resolve_revision(pemba_db *db, pemba_revision at,
                          pemba_revision *rev_out, pemba_error *err)
{
	if (at == PEMBA_REVISION_HEAD)
		return store_head_revision(db->st, rev_out, err);
	int rc = store_check_revision(db->st, at, err);
	if (rc < 0)
		return rc;
	*rev_out = at;
	return PEMBA_OK;
}

/* ---------------------------------------------------------- maintenance */

int pemba_gc(pemba_db *db, uint64_t *removed_out, pemba_error *err)
{
	error_clear(err);
	if (db == NULL)
		return error_set(err, PEMBA_EINVAL, "missing database handle");
	uint64_t removed = 0;
	int rc = store_gc(db->st, 0, &removed, err);
	if (rc < 0)
		return rc;
	if (removed_out)
		*removed_out = removed;
	return PEMBA_OK;
}

int pemba_gc_ex(pemba_db *db, pemba_gc_stats *out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, out);
	memset(out, 0, sizeof(*out));
	store_gc_stats st;
	int rc = store_gc_report(db->st, 0, &st, err);
	if (rc < 0)
		return rc;
	out->relationships = st.relationships;
	out->expired = st.expired;
	out->schemas = st.schemas;
	out->revisions = st.revisions;
	out->oldest = st.floor;
	return PEMBA_OK;
}

int pemba_attach(pemba_db *db, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	return store_attach(db->st, "serve", err);
}

int pemba_snapshot(pemba_db *db, const char *path, int new_identity,
                   pemba_progress_fn progress, void *ctx,
                   pemba_snapshot_info *info, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, path);
	if (info)
		memset(info, 0, sizeof(*info));
	store_snapshot_info si;
	int rc = store_snapshot(db->st, path, new_identity != 0, progress, ctx,
	                        &si, err);
	if (rc < 0)
		return rc;
	if (info) {
		info->revision = si.revision;
		info->nonce = si.nonce;
		info->bytes = si.bytes;
		memcpy(info->datastore_id, si.datastore_id,
		       sizeof(info->datastore_id));
	}
	return PEMBA_OK;
}
