/*
 * db.c -- the pemba_db handle: open, close, revisions, garbage collection.
 */
#include <stdlib.h>

#include "core/core.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ------------------------------------------------------------ lifecycle */

int pemba_open(const char *uri, const pemba_options *opts, pemba_db **out,
               pemba_error *err)
{
	error_clear(err);
	if (uri == NULL || out == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "a datastore URI is required");
	store_options so = {0};
	if (opts) {
		if (opts->gc_window_seconds < 0)
			return error_set(err, PEMBA_EINVAL,
			                 "gc window must not be negative "
			                 "(got %lld seconds)",
			                 (long long)opts->gc_window_seconds);
		so.gc_window_seconds = opts->gc_window_seconds;
		so.migrate = opts->no_auto_migrate ? STORE_MIGRATE_REQUIRE
		                                   : STORE_MIGRATE_AUTO;
	}
	store *st;
	int rc = store_open(uri, &so, &st, err);
	if (rc < 0)
		return rc;
	pemba_db *db = xcalloc(1, sizeof(*db));
	db->st = st;
	/* 16 KiB covers the memo and row copies of typical checks. */
	db->check_arena = arena_create(16 * 1024);
	db->write_arena = arena_create(0);
	*out = db;
	return PEMBA_OK;
}

void pemba_close(pemba_db *db)
{
	if (db == NULL)
		return;
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
	if (db == NULL || out == NULL)
		return error_set(err, PEMBA_EINVAL, "missing argument");
	return store_head_revision(db->st, out, err);
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
