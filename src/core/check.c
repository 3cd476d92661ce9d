/*
 * check.c -- pemba_check_permission: resolve the revision, fetch the
 * compiled schema current at it (cached), and hand over to the engine.
 */
#include "core/core.h"
#include "engine/engine.h"
#include "metrics/metrics.h"
#include "util/error.h"

int pemba_check_permission(pemba_db *db, pemba_revision at,
                           const pemba_check_request *req,
                           pemba_permissionship *out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, req);
	CORE_REQUIRE(err, out);
	pemba_check_result r = {0};
	int rc = pemba_check_permission_ex(db, at, req, &r, err);
	if (rc == PEMBA_OK)
		*out = r.permissionship;
	pemba_check_result_clear(&r);
	return rc;
}

int pemba_check_permission_ex(pemba_db *db, pemba_revision at,
                              const pemba_check_request *req,
                              pemba_check_result *out, pemba_error *err)
{
	return pemba_check_permission_trace(db, at, req, out, NULL, err);
}

int pemba_check_permission_trace(pemba_db *db, pemba_revision at,
                                 const pemba_check_request *req,
                                 pemba_check_result *out,
                                 pemba_check_trace **trace_out,
                                 pemba_error *err)
{
	if (trace_out)
		*trace_out = NULL;
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, req);
	CORE_REQUIRE(err, out);
	/* One read transaction for the whole check: the engine issues a
	 * few dozen index probes, each of which would otherwise take and
	 * release the datastore's read lock. */
	int rc = store_read_begin(db->st, err);
	if (rc < 0)
		return rc;
	pemba_revision rev;
	rc = core_resolve_revision(db, at, &rev, err);
	if (rc < 0)
		goto done;
	const schema *sc;
	rc = core_schema_at(db, rev, &sc, err);
	if (rc < 0)
		goto done;
	/* With no schema the engine reports the unknown definition before
	 * it would query anything, so revision 0 is never queried. */
	engine_stats stats = {0};
	rc = engine_check_trace_in(db->check_arena, db->st, sc, rev, req, out,
	                           trace_out, &stats, err);
	out->checked_at = rev;
	metrics_process_figures *m = metrics_process();
	metrics_counter_add(&m->checks, 1);
	metrics_counter_add(&m->check_dispatches, stats.dispatches);
done:
	store_read_end(db->st);
	return rc;
}
