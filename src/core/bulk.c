/*
 * bulk.c -- pemba_check_bulk (CheckBulkPermissions): many checks at one
 * revision inside one read transaction, each item answered or failed on
 * its own.
 */
#include <string.h>

#include "core/lookup.h"
#include "engine/engine.h"
#include "metrics/metrics.h"
#include "util/error.h"

int pemba_check_bulk(pemba_db *db, pemba_revision at,
                     const pemba_check_request *items, size_t n,
                     pemba_check_result *results, pemba_revision *at_out,
                     pemba_error *err)
{
	return pemba_check_bulk_trace(db, at, items, n, results, NULL, at_out,
	                              err);
}

int pemba_check_bulk_trace(pemba_db *db, pemba_revision at,
                           const pemba_check_request *items, size_t n,
                           pemba_check_result *results,
                           pemba_check_trace **traces, pemba_revision *at_out,
                           pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	if (n > 0) {
		CORE_REQUIRE(err, items);
		CORE_REQUIRE(err, results);
	}
	pemba_revision rev;
	const schema *sc;
	int rc = core_begin_read(db, at, &rev, &sc, err);
	if (rc < 0)
		return rc;
	engine_stats total = {0};
	for (size_t i = 0; i < n; i++) {
		pemba_check_result *r = &results[i];
		memset(r, 0, sizeof(*r));
		r->permissionship = PEMBA_NO_PERMISSION;
		/* One arena reset per item (engine_check_in does it), so
		 * memory does not grow with the number of items. */
		engine_stats stats = {0};
		if (engine_check_trace_in(
		        db->check_arena, db->st, sc, rev, &items[i], r,
		        traces ? &traces[i] : NULL, &stats, &r->error) < 0)
			r->permissionship = 0;
		total.dispatches += stats.dispatches;
	}
	/* For /metrics: every item is a check (metrics.h). */
	metrics_process_figures *m = metrics_process();
	metrics_counter_add(&m->checks, n);
	metrics_counter_add(&m->check_dispatches, total.dispatches);
	store_read_end(db->st);
	if (at_out)
		*at_out = rev;
	return PEMBA_OK;
}
