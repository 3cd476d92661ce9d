/*
 * lookup.c -- pemba_lookup_resources and pemba_lookup_subjects: resolve the
 * revision, fetch the schema current at it, and hand over to the engine
 * inside one store read transaction (a lookup issues many queries).
 */
#include "core/lookup.h"
#include "engine/engine.h"
#include "util/error.h"

/* Opens the read transaction and resolves `at` and its schema.  On
 * success the caller must call store_read_end(). */
int core_begin_read(pemba_db *db, pemba_revision at, pemba_revision *rev_out,
                    const schema **sc_out, pemba_error *err)
{
	int rc = store_read_begin(db->st, err);
	if (rc < 0)
		return rc;
	if ((rc = core_resolve_revision(db, at, rev_out, err)) < 0 ||
	    (rc = core_schema_at(db, *rev_out, sc_out, err)) < 0) {
		store_read_end(db->st);
		return rc;
	}
	return PEMBA_OK;
}

int pemba_lookup_resources(pemba_db *db, pemba_revision at,
                           const pemba_lookup_resources_request *req,
                           pemba_lookup_resource_fn fn, void *ctx,
                           pemba_revision *at_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, req);
	if (req->on_item == NULL)
		CORE_REQUIRE(err, fn);
	pemba_revision rev;
	const schema *sc;
	int rc = core_begin_read(db, at, &rev, &sc, err);
	if (rc < 0)
		return rc;
	rc = engine_lookup_resources(db->check_arena, db->st, sc, rev, req, fn,
	                             ctx, err);
	store_read_end(db->st);
	if (rc == PEMBA_OK && at_out)
		*at_out = rev;
	return rc;
}

int pemba_lookup_subjects(pemba_db *db, pemba_revision at,
                          const pemba_lookup_subjects_request *req,
                          pemba_lookup_subject_fn fn, void *ctx,
                          pemba_revision *at_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, req);
	if (req->on_item == NULL)
		CORE_REQUIRE(err, fn);
	pemba_revision rev;
	const schema *sc;
	int rc = core_begin_read(db, at, &rev, &sc, err);
	if (rc < 0)
		return rc;
	rc = engine_lookup_subjects(db->check_arena, db->st, sc, rev, req, fn,
	                            ctx, err);
	store_read_end(db->st);
	if (rc == PEMBA_OK && at_out)
		*at_out = rev;
	return rc;
}
