/*
 * service_migration_data.c -- pemba.v1.MigrationService: CopyRelationships
 * and VerifyPermission, the data steps of a migration (backfill one
 * relation into another, then prove two permissions agree), over
 * pemba_copy_relationships and pemba_verify_permission.
 *
 * Both are server-streaming and may run for minutes.  A copy is an
 * event-driven stream (svc_stream_start): one batch per step, resumed
 * from the cursor the last batch reported, so it frees its worker
 * between batches; it stops after the batch in progress when the client
 * cancels, and its last progress message holds the cursor that resumes
 * it.  A verify cannot be resumed midway (core has no cursor for it): it
 * runs on a worker with its own handle (SVC_ACQUIRE_LONG) and stops as
 * soon as the client cancels.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/error.h"

#define MIGRATION_SERVICE "/pemba.v1.MigrationService/"

/* ===================================================================== */
/* CopyRelationships                                                     */
/* ===================================================================== */

/* A copy between steps: each step writes one batch (one transaction) and
 * resumes from the cursor the previous one reported, so a copy of
 * millions of relationships frees its worker between batches. */
typedef struct copy_stream {
	grpc_call *call;
	pemba_db *db; /* the step's handle */
	pemba_copy_request cr;
	/* cr's mappings (heap), pointing into the request message, which
	 * the stream keeps until copy_free. */
	pemba_subject_mapping *maps;
	pemba_write_options opts;
	svc_write_caller caller; /* opts.on_deprecated_ctx */
	char *cursor;            /* after the last batch written; NULL: start */
	bool gone;               /* the client cancelled or the stream broke */
	bool done;
} copy_stream;

/* One progress message per batch written, and the last with done; stops
 * the copy after each batch so the next step resumes it. */
static int send_progress(void *ctx, const pemba_copy_progress *p)
{
	copy_stream *cs = ctx;
	svc_zedtoken snapshot, written;
	Pemba__V1__CopyRelationshipsProgress m =
	    PEMBA__V1__COPY_RELATIONSHIPS_PROGRESS__INIT;
	m.copied = p->copied;
	m.cursor = (char *)p->cursor;
	m.snapshot = svc_zedtoken_make(&snapshot, cs->db, p->snapshot);
	if (p->written_at)
		m.written_at =
		    svc_zedtoken_make(&written, cs->db, p->written_at);
	m.done = p->done != 0;
	if (svc_send(cs->call, &m.base) < 0 || grpc_call_cancelled(cs->call)) {
		cs->gone = true;
		return 1;
	}
	cs->done = p->done != 0;
	return 1; /* one batch per step */
}

static grpc_step copy_step(grpc_call *call, pemba_db *db, void *arg)
{
	copy_stream *cs = arg;
	cs->call = call;
	cs->db = db;
	cs->cr.cursor = cs->cursor;
	pemba_copy_result res = {0};
	pemba_error err = {0};
	int rc = pemba_copy_relationships(db, &cs->cr, send_progress, cs, &res,
	                                  &err);
	if (res.cursor) {
		free(cs->cursor);
		cs->cursor = strdup(res.cursor);
	}
	pemba_free(res.cursor);
	if (cs->gone)
		return GRPC_STEP_DONE; /* nobody to answer */
	if (rc < 0) {
		svc_finish_error(call, &err);
		return GRPC_STEP_DONE;
	}
	if (!cs->done && !res.done)
		return GRPC_STEP_MORE;
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	return GRPC_STEP_DONE;
}

static void copy_free(grpc_call *call, pemba_db *db, void *arg)
{
	copy_stream *cs = arg;
	free(cs->cursor);
	free(cs->maps);
	free(cs);
}

static const svc_stream_ops copy_ops = {copy_step, copy_free};

static void handle_copy(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__copy_relationships_request__descriptor, 0,
	              &req) != 0)
		return;
	const Pemba__V1__CopyRelationshipsRequest *m =
	    (const void *)req.message;
	if (svc_refuse_write(&req)) {
		svc_end(&req);
		return;
	}
	copy_stream *cs = calloc(1, sizeof(*cs));
	if (!cs)
		abort();
	cs->caller = (svc_write_caller){.backend = req.backend, .call = call};
	cs->opts = (pemba_write_options){.on_deprecated = svc_log_deprecation,
	                                 .on_deprecated_ctx = &cs->caller};
	cs->cr = (pemba_copy_request){
	    .resource_type = m->resource_type,
	    .relation = m->from_relation,
	    .to_resource_type = m->to_resource_type,
	    .to_relation = m->to_relation,
	    .subject_type = m->optional_subject_type,
	    .batch_size = m->batch_size,
	    .max_batch_ms = m->max_batch_ms,
	    .write_options = &cs->opts,
	};
	if (m->n_subject_mappings) {
		cs->maps = calloc(m->n_subject_mappings, sizeof(*cs->maps));
		if (!cs->maps)
			abort();
		for (size_t i = 0; i < m->n_subject_mappings; i++) {
			const Pemba__V1__SubjectMapping *sm =
			    m->subject_mappings[i];
			cs->maps[i] = (pemba_subject_mapping){
			    .from_type = sm->from_type,
			    .from_relation = sm->from_relation,
			    .to_type = sm->to_type,
			    .to_relation = sm->to_relation,
			};
		}
		cs->cr.subject_mappings = cs->maps;
		cs->cr.nsubject_mappings = m->n_subject_mappings;
	}
	cs->cursor = m->cursor && m->cursor[0] ? strdup(m->cursor) : NULL;
	svc_stream_start(&req, &copy_ops, cs);
}

/* ===================================================================== */
/* VerifyPermission                                                      */
/* ===================================================================== */

#define VERIFY_DEFAULT_DIFFERENCES 100

typedef struct verify_stream {
	svc_request *req;
	bool gone;
} verify_stream;

static Authzed__Api__V1__CheckPermissionResponse__Permissionship
wire_permissionship(pemba_permissionship p)
{
	switch (p) {
	case PEMBA_HAS_PERMISSION:
		return AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION;
	case PEMBA_CONDITIONAL_PERMISSION:
		return AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION;
	default:
		return AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION;
	}
}

static int send_difference(void *ctx, const pemba_verify_difference *d)
{
	verify_stream *vs = ctx;
	Pemba__V1__VerifyDifference diff = PEMBA__V1__VERIFY_DIFFERENCE__INIT;
	diff.resource_id = (char *)d->resource_id;
	diff.subject = (char *)d->subject;
	diff.in_first = d->first != PEMBA_NO_PERMISSION;
	diff.in_second = d->second != PEMBA_NO_PERMISSION;
	diff.first_permissionship = wire_permissionship(d->first);
	diff.second_permissionship = wire_permissionship(d->second);
	Pemba__V1__VerifyPermissionResponse m =
	    PEMBA__V1__VERIFY_PERMISSION_RESPONSE__INIT;
	m.result_case =
	    PEMBA__V1__VERIFY_PERMISSION_RESPONSE__RESULT_DIFFERENCE;
	m.difference = &diff;
	if (svc_send(vs->req->call, &m.base) < 0 ||
	    grpc_call_cancelled(vs->req->call)) {
		vs->gone = true;
		return 1;
	}
	return 0;
}

static void handle_verify(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__verify_permission_request__descriptor,
	              SVC_ACQUIRE_LONG, &req) != 0)
		return;
	const Pemba__V1__VerifyPermissionRequest *m = (const void *)req.message;
	pemba_error err = {0};
	pemba_revision at = 0;
	if (svc_resolve_consistency(req.db, m->consistency, &at, &err) < 0) {
		svc_finish_error(call, &err);
		goto out;
	}
	pemba_verify_request vr = {
	    .resource_type = m->resource_type,
	    .first = m->first,
	    .second = m->second,
	    .max_differences = m->max_differences ? m->max_differences
	                                          : VERIFY_DEFAULT_DIFFERENCES,
	};
	verify_stream vs = {.req = &req};
	pemba_verify_summary sum;
	int rc = pemba_verify_permission(req.db, at, &vr, send_difference, &vs,
	                                 &sum, &err);
	if (vs.gone)
		goto out;
	if (rc < 0) {
		svc_finish_error(call, &err);
		goto out;
	}
	svc_zedtoken zt;
	Pemba__V1__VerifySummary s = PEMBA__V1__VERIFY_SUMMARY__INIT;
	s.checked_at = svc_zedtoken_make(&zt, req.db, sum.revision);
	s.resources = sum.resources;
	s.differences = sum.differences;
	s.equal = sum.equal != 0;
	Pemba__V1__VerifyPermissionResponse resp =
	    PEMBA__V1__VERIFY_PERMISSION_RESPONSE__INIT;
	resp.result_case =
	    PEMBA__V1__VERIFY_PERMISSION_RESPONSE__RESULT_SUMMARY;
	resp.summary = &s;
	if (svc_send(call, &resp.base) < 0)
		goto out;
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
out:
	svc_end(&req);
}

/* ===================================================================== */
/* Dispatch                                                              */
/* ===================================================================== */

size_t svc_migration_data_methods(svc_backend *b, grpc_method *out)
{
	out[0] = (grpc_method){MIGRATION_SERVICE "CopyRelationships",
	                       GRPC_METHOD_SERVER_STREAMING, handle_copy, b};
	out[1] = (grpc_method){MIGRATION_SERVICE "VerifyPermission",
	                       GRPC_METHOD_SERVER_STREAMING, handle_verify, b};
	return 2;
}
