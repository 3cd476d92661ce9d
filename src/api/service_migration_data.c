/*
 * service_migration_data.c -- pemba.v1.MigrationService: CopyRelationships
 * and VerifyPermission, the data steps of a migration (backfill one
 * relation into another, then prove two permissions agree), over
 * pemba_copy_relationships and pemba_verify_permission.
 *
 * Both are server-streaming and may run for minutes, so they take their
 * handle with SVC_ACQUIRE_LONG (as Watch does) and stop as soon as the
 * client cancels: a copy stops after the batch in progress, and its last
 * progress message holds the cursor that resumes it.
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

typedef struct copy_stream {
	svc_request *req;
	bool gone; /* the client cancelled or the stream broke */
} copy_stream;

/* One progress message per batch written, and the last with done. */
static int send_progress(void *ctx, const pemba_copy_progress *p)
{
	copy_stream *cs = ctx;
	svc_zedtoken snapshot, written;
	Pemba__V1__CopyRelationshipsProgress m =
	    PEMBA__V1__COPY_RELATIONSHIPS_PROGRESS__INIT;
	m.copied = p->copied;
	m.cursor = (char *)p->cursor;
	m.snapshot = svc_zedtoken_make(&snapshot, cs->req->db, p->snapshot);
	if (p->written_at)
		m.written_at =
		    svc_zedtoken_make(&written, cs->req->db, p->written_at);
	m.done = p->done != 0;
	if (svc_send(cs->req->call, &m.base) < 0 ||
	    grpc_call_cancelled(cs->req->call)) {
		cs->gone = true;
		return 1;
	}
	return 0;
}

static void handle_copy(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__copy_relationships_request__descriptor,
	              SVC_ACQUIRE_LONG, &req) != 0)
		return;
	const Pemba__V1__CopyRelationshipsRequest *m =
	    (const void *)req.message;
	if (svc_refuse_write(&req))
		goto out;
	pemba_write_options opts = {.on_deprecated = svc_log_deprecation,
	                            .on_deprecated_ctx = req.backend};
	pemba_copy_request cr = {
	    .resource_type = m->resource_type,
	    .relation = m->from_relation,
	    .to_resource_type = m->to_resource_type,
	    .to_relation = m->to_relation,
	    .subject_type = m->optional_subject_type,
	    .batch_size = m->batch_size,
	    .cursor = m->cursor,
	    .write_options = &opts,
	};
	copy_stream cs = {.req = &req};
	pemba_copy_result res;
	pemba_error err = {0};
	int rc = pemba_copy_relationships(req.db, &cr, send_progress, &cs, &res,
	                                  &err);
	pemba_free(res.cursor);
	if (cs.gone)
		goto out; /* nobody to answer */
	if (rc < 0)
		svc_finish_error(call, &err);
	else
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
out:
	svc_end(&req);
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
