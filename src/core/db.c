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
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ------------------------------------------------------------ lifecycle */

#define CORE_MAX_GC_WINDOW_SECONDS ((int64_t)1000 * 366 * 24 * 3600)

/* Makes sure a failed open's message says which datastore it was about:
 * the engine names it in most messages, but not in every one that comes
 * from the database library ("file is not a database").  The URI is named
 * as store_display_uri() shows it: never with its password. */
static void name_uri_in_error(const char *uri, pemba_error *err)
{
	if (err == NULL)
		return;
	char *shown = store_display_uri(uri);
	if (strstr(err->message, uri) == NULL &&
	    strstr(err->message, shown) == NULL) {
		char original[sizeof(err->message)];
		memcpy(original, err->message, sizeof(original));
		snprintf(err->message, sizeof(err->message),
		         "cannot open datastore \"%.256s\": %.700s", shown,
		         original);
	}
	free(shown);
}

/* A new handle around an open store (which it then owns).  The schema
 * cache starts empty: each handle has its own. */
pemba_db *core_db_wrap(store *st)
{
	pemba_db *db = xcalloc(1, sizeof(*db));
	db->st = st;
	/* 16 KiB covers the memo and row copies of typical checks. */
	db->check_arena = arena_create(16 * 1024);
	db->write_arena = arena_create(0);
	return db;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The layout version `uri` is at now, or -1 when it cannot be read. */
static int layout_version_now(const char *uri)
{
	store_options so = {.migrate = STORE_MIGRATE_NONE, .must_exist = 1};
	store *st;
	pemba_error ignored = {0};
	int current = -1;
	if (store_open(uri, &so, &st, &ignored) != 0)
		return -1;
	if (store_migrate_status(st, &current, NULL, NULL, NULL, &ignored))
		current = -1;
	store_close(st);
	return current;
}

/* How long an open waits for a layout version that does not move. */
#define LAYOUT_SETTLE_MS 2000

/*
 * A new datastore is migrated by the first process that opens it, one
 * step (one transaction) at a time; a second process opening it
 * meanwhile (several servers started at once on one new PostgreSQL
 * database) sees a version between 0 and the newest and would refuse it
 * as "needs migrating".  While the version keeps moving, wait for it
 * (it stops moving for LAYOUT_SETTLE_MS: refuse as before).  Returns
 * true when the version reached `head`, so the open is worth retrying.
 */
static bool wait_for_migration(const char *uri, int head)
{
	int last = layout_version_now(uri);
	int64_t moved = mono_ms();
	while (last >= 0 && last < head &&
	       mono_ms() - moved < LAYOUT_SETTLE_MS) {
		usleep(50 * 1000);
		int v = layout_version_now(uri);
		if (v != last) {
			last = v;
			moved = mono_ms();
		}
	}
	return last == head;
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
		if (opts->conn_pool_read_max_open < 0 ||
		    opts->conn_pool_write_max_open < 0)
			return error_set(
			    err, PEMBA_EINVAL,
			    "connection pool sizes must be positive "
			    "(got read %d, write %d)",
			    opts->conn_pool_read_max_open,
			    opts->conn_pool_write_max_open);
		if (opts->n_read_replica_uris > 0 &&
		    strncmp(uri, "postgres://", 11) != 0 &&
		    strncmp(uri, "postgresql://", 13) != 0)
			return error_set(err, PEMBA_EINVAL,
			                 "read replicas need a PostgreSQL "
			                 "datastore (postgres://...)");
		so.replica_uris = opts->read_replica_uris;
		so.n_replicas = opts->n_read_replica_uris;
		so.log = opts->log;
		so.log_ctx = opts->log_ctx;
		so.pool_read_max = opts->conn_pool_read_max_open;
		so.pool_write_max = opts->conn_pool_write_max_open;
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
	if (rc == PEMBA_EVERSION && so.migrate == STORE_MIGRATE_NEW_ONLY &&
	    err && strstr(err->message, "but this binary needs version")) {
		/* Maybe another process is migrating it right now. */
		int head = 0;
		store_options none = {.migrate = STORE_MIGRATE_NONE,
		                      .must_exist = 1};
		store *probe;
		pemba_error ignored = {0};
		if (store_open(uri, &none, &probe, &ignored) == 0) {
			store_migrate_status(probe, NULL, &head, NULL, NULL,
			                     &ignored);
			store_close(probe);
		}
		if (head > 0 && wait_for_migration(uri, head)) {
			error_clear(err);
			rc = store_open(uri, &so, &st, err);
		}
	}
	if (rc < 0) {
		name_uri_in_error(uri, err);
		return rc;
	}
	*out = core_db_wrap(st);
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
	*out = core_db_wrap(st);
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
	out->skipped = st.skipped;
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
