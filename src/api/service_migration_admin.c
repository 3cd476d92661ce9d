/*
 * service_migration_admin.c -- pemba.v1.MigrationService: SetReadOnly,
 * GetMigrationStatus, DeprecateRelation and UndeprecateRelation.  The
 * uses of deprecated names are counted and logged by
 * deprecation_usage.c; GetMigrationStatus reports the counts.
 *
 * Two read-only switches exist and either one stops writes:
 *   - the datastore's stored flag (pemba_set_read_only): every handle and
 *     every server on the datastore sees it; writes fail in core with
 *     PEMBA_EREADONLY -> UNAVAILABLE;
 *   - `pemba serve --read-only` (svc_backend.read_only): this process
 *     refuses every write RPC with UNAVAILABLE before touching the
 *     datastore, whatever the stored flag says.
 * The admin RPCs themselves are not writes: they work in both modes (an
 * operator must be able to turn read-only off), and report the process
 * switch as forced_by_server.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/error.h"
#include "util/xalloc.h"

#define MIGRATION_SERVICE "/pemba.v1.MigrationService/"

/* ===================================================================== */
/* Read-only mode                                                        */
/* ===================================================================== */

static void handle_set_read_only(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx, &pemba__v1__set_read_only_request__descriptor,
	              0, &req) != 0)
		return;
	const Pemba__V1__SetReadOnlyRequest *m = (const void *)req.message;
	pemba_error err = {0};
	int stored = 0;
	int rc = pemba_set_read_only(req.db, m->read_only, &err);
	if (rc == 0)
		rc = pemba_get_read_only(req.db, &stored, &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		Pemba__V1__SetReadOnlyResponse resp =
		    PEMBA__V1__SET_READ_ONLY_RESPONSE__INIT;
		resp.read_only = stored != 0;
		resp.forced_by_server = req.backend->read_only;
		svc_reply(call, &resp.base);
	}
	svc_end(&req);
}

/* ===================================================================== */
/* Status                                                                */
/* ===================================================================== */

static Pemba__V1__Deprecation__Mode mode_to_proto(pemba_deprecation_mode m)
{
	return m == PEMBA_DEPRECATION_REJECT
	           ? PEMBA__V1__DEPRECATION__MODE__REJECT
	           : PEMBA__V1__DEPRECATION__MODE__WARN;
}

static void handle_get_migration_status(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__get_migration_status_request__descriptor, 0,
	              &req) != 0)
		return;
	pemba_error err = {0};
	int stored = 0;
	pemba_deprecation *list = NULL;
	size_t n = 0;
	int rc = pemba_get_read_only(req.db, &stored, &err);
	if (rc == 0)
		rc = pemba_list_deprecations(req.db, &list, &n, &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
		svc_end(&req);
		return;
	}
	/* Everything points into `list` or these arrays: nothing to free
	 * per element. */
	Pemba__V1__Deprecation *items = xcalloc(n + 1, sizeof(*items));
	Pemba__V1__Deprecation **ptrs = xcalloc(n + 1, sizeof(*ptrs));
	svc_zedtoken *tokens = xcalloc(n + 1, sizeof(*tokens));
	/* Per deprecation: its usage rows, their messages and pointers. */
	svc_usage_row **rows = xcalloc(n + 1, sizeof(*rows));
	Pemba__V1__DeprecationUse **uses = xcalloc(n + 1, sizeof(*uses));
	Pemba__V1__DeprecationUse ***use_ptrs =
	    xcalloc(n + 1, sizeof(*use_ptrs));
	int64_t since_ms = 0;
	for (size_t i = 0; i < n; i++) {
		Pemba__V1__Deprecation d = PEMBA__V1__DEPRECATION__INIT;
		d.resource_type = (char *)list[i].resource_type;
		d.relation = (char *)list[i].relation;
		d.mode = mode_to_proto(list[i].mode);
		if (list[i].set_at > 0)
			d.set_at = svc_zedtoken_make(&tokens[i], req.db,
			                             list[i].set_at);
		d.set_at_unix_ms = list[i].set_at_ms;
		size_t nrows = svc_deprecation_usage(
		    req.backend, list[i].resource_type, list[i].relation,
		    &rows[i], &since_ms);
		uses[i] = xcalloc(nrows + 1, sizeof(*uses[i]));
		use_ptrs[i] = xcalloc(nrows + 1, sizeof(*use_ptrs[i]));
		for (size_t k = 0; k < nrows; k++) {
			const svc_usage_row *r = &rows[i][k];
			Pemba__V1__DeprecationUse *u = &uses[i][k];
			pemba__v1__deprecation_use__init(u);
			u->peer = (char *)r->peer;
			u->key_name = (char *)r->key;
			u->method = (char *)r->method;
			u->count = r->count;
			u->first_unix_ms = r->first_ms;
			u->last_unix_ms = r->last_ms;
			use_ptrs[i][k] = u;
		}
		d.n_uses = nrows;
		d.uses = use_ptrs[i];
		items[i] = d;
		ptrs[i] = &items[i];
	}
	Pemba__V1__GetMigrationStatusResponse resp =
	    PEMBA__V1__GET_MIGRATION_STATUS_RESPONSE__INIT;
	resp.read_only = stored != 0;
	resp.forced_by_server = req.backend->read_only;
	resp.n_deprecations = n;
	resp.deprecations = ptrs;
	if (n == 0)
		svc_deprecation_usage(req.backend, "", "", &rows[0], &since_ms);
	resp.usage_since_unix_ms = since_ms;
	svc_reply(call, &resp.base);
	for (size_t i = 0; i < n; i++) {
		free(rows[i]);
		free(uses[i]);
		free(use_ptrs[i]);
	}
	free(rows);
	free(uses);
	free(use_ptrs);
	free(tokens);
	free(ptrs);
	free(items);
	pemba_free(list);
	svc_end(&req);
}

/* ===================================================================== */
/* Deprecation                                                           */
/* ===================================================================== */

static void handle_deprecate_relation(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__deprecate_relation_request__descriptor, 0,
	              &req) != 0)
		return;
	const Pemba__V1__DeprecateRelationRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	pemba_deprecation_mode mode;
	switch (m->mode) {
	case PEMBA__V1__DEPRECATION__MODE__WARN:
		mode = PEMBA_DEPRECATION_WARN;
		break;
	case PEMBA__V1__DEPRECATION__MODE__REJECT:
		mode = PEMBA_DEPRECATION_REJECT;
		break;
	default:
		svc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
		         "invalid argument: mode must be WARN or REJECT");
		svc_end(&req);
		return;
	}
	if (pemba_deprecate_relation(req.db, m->resource_type, m->relation,
	                             mode, &err) < 0) {
		svc_finish_error(call, &err);
	} else {
		/* This server's reads see the change at once; other
		 * servers within SVC_DEPRECATIONS_POLL_MS. */
		svc_deprecations_reload(req.backend, req.db);
		Pemba__V1__DeprecateRelationResponse resp =
		    PEMBA__V1__DEPRECATE_RELATION_RESPONSE__INIT;
		svc_reply(call, &resp.base);
	}
	svc_end(&req);
}

static void handle_undeprecate_relation(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__undeprecate_relation_request__descriptor, 0,
	              &req) != 0)
		return;
	const Pemba__V1__UndeprecateRelationRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	int was = 0;
	if (pemba_undeprecate_relation(req.db, m->resource_type, m->relation,
	                               &was, &err) < 0) {
		svc_finish_error(call, &err);
	} else {
		svc_deprecations_reload(req.backend, req.db);
		Pemba__V1__UndeprecateRelationResponse resp =
		    PEMBA__V1__UNDEPRECATE_RELATION_RESPONSE__INIT;
		resp.was_deprecated = was != 0;
		svc_reply(call, &resp.base);
	}
	svc_end(&req);
}

/* ===================================================================== */
/* Dispatch table                                                        */
/* ===================================================================== */

size_t svc_migration_admin_methods(svc_backend *b, grpc_method *out)
{
	out[0] = (grpc_method){MIGRATION_SERVICE "SetReadOnly",
	                       GRPC_METHOD_UNARY, handle_set_read_only, b};
	out[1] =
	    (grpc_method){MIGRATION_SERVICE "GetMigrationStatus",
	                  GRPC_METHOD_UNARY, handle_get_migration_status, b};
	out[2] = (grpc_method){MIGRATION_SERVICE "DeprecateRelation",
	                       GRPC_METHOD_UNARY, handle_deprecate_relation, b};
	out[3] =
	    (grpc_method){MIGRATION_SERVICE "UndeprecateRelation",
	                  GRPC_METHOD_UNARY, handle_undeprecate_relation, b};
	return 4;
}
