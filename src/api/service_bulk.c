/*
 * service_bulk.c -- bulk import (client streaming) and export (server
 * streaming) of relationships, served under both names:
 * PermissionsService.ImportBulkRelationships / ExportBulkRelationships and
 * ExperimentalService.BulkImportRelationships / BulkExportRelationships
 * (identical wire layouts).  Also ExperimentalService's table, whose
 * BulkCheckPermission is CheckBulkPermissions (service_permissions.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ===================================================================== */
/* Import                                                                */
/* ===================================================================== */

/* Every message's relationships go into one open import, committed as one
 * revision when the client half-closes.  CREATE semantics, as SpiceDB: an
 * existing relationship fails the whole import with ALREADY_EXISTS. */
void svc_handle_import(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin_stream(call, ctx, 0, &req) != 0)
		return;
	pemba_error err = {0};
	pemba_import *imp = NULL;
	pemba_relationship *rels = NULL;
	size_t cap = 0;
	/* Caveat contexts of one message, as JSON text; reset per message
	 * (pemba_import_add copies what it keeps). */
	arena *contexts = arena_create(0);
	if (svc_refuse_write(&req))
		goto out;
	pemba_write_options opts = {.on_deprecated = svc_log_deprecation,
	                            .on_deprecated_ctx = req.backend};
	if (pemba_import_begin_ex(req.db, PEMBA_OP_CREATE, &opts, &imp,
	                          &err) < 0) {
		svc_finish_error(call, &err);
		goto out;
	}
	size_t index = 0;
	for (;;) {
		Authzed__Api__V1__ImportBulkRelationshipsRequest *m;
		int rc = svc_read(
		    call,
		    &authzed__api__v1__import_bulk_relationships_request__descriptor,
		    (ProtobufCMessage **)&m);
		if (rc < 0)
			goto abort; /* the call is finished */
		if (rc == 0)
			break;
		if (m->n_relationships > cap) {
			cap = m->n_relationships;
			free(rels);
			rels = xcalloc(cap, sizeof(*rels));
		}
		rc = 0;
		for (size_t i = 0; i < m->n_relationships && rc == 0; i++) {
			char where[48];
			snprintf(where, sizeof(where), "relationships[%zu]",
			         index + i);
			rc = svc_relationship_from_proto(m->relationships[i],
			                                 where, contexts,
			                                 &rels[i], &err);
		}
		if (rc == 0 && m->n_relationships > 0)
			rc = pemba_import_add(imp, rels, m->n_relationships,
			                      &err);
		arena_reset(contexts);
		index += m->n_relationships;
		authzed__api__v1__import_bulk_relationships_request__free_unpacked(
		    m, NULL);
		if (rc < 0) {
			svc_finish_error(call, &err);
			goto abort;
		}
	}
	pemba_revision rev = 0;
	uint64_t count = 0;
	int rc = pemba_import_commit(imp, &rev, &count, &err);
	imp = NULL;
	if (rc < 0) {
		svc_finish_error(call, &err);
		goto out;
	}
	Authzed__Api__V1__ImportBulkRelationshipsResponse resp =
	    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_RESPONSE__INIT;
	resp.num_loaded = count;
	svc_reply(call, &resp.base);
	goto out;
abort:
	if (imp)
		pemba_import_abort(imp);
out:
	free(rels);
	arena_destroy(contexts);
	svc_end(&req);
}

/* ===================================================================== */
/* Export                                                                */
/* ===================================================================== */

#define EXPORT_BATCH_DEFAULT 1000
#define EXPORT_BATCH_MAX 10000

typedef struct export_batch {
	Authzed__Api__V1__Relationship **rels;
	size_t n;
	const pemba_filter *filter; /* NULL: everything */
	const char *prefix;
	size_t prefix_len;
} export_batch;

static int eq_or_any(const char *want, const char *have)
{
	return !want || strcmp(want, have ? have : "") == 0;
}

static int filter_matches(const export_batch *b, const pemba_relationship *r)
{
	const pemba_filter *f = b->filter;
	if (!f)
		return 1;
	if (!eq_or_any(f->resource_type, r->resource_type) ||
	    !eq_or_any(f->resource_id, r->resource_id) ||
	    !eq_or_any(f->relation, r->relation))
		return 0;
	if (b->prefix_len &&
	    strncmp(r->resource_id, b->prefix, b->prefix_len) != 0)
		return 0;
	if (f->subject_type) {
		if (!eq_or_any(f->subject_type, r->subject_type) ||
		    !eq_or_any(f->subject_id, r->subject_id))
			return 0;
		if (f->subject_relation) {
			const char *want = f->subject_relation;
			const char *have = r->subject_relation;
			if (strcmp(want, "...") == 0)
				want = "";
			if (!have || strcmp(have, "...") == 0)
				have = "";
			if (strcmp(want, have) != 0)
				return 0;
		}
	}
	return 1;
}

static int export_add(void *ctx, const pemba_relationship *rel)
{
	export_batch *b = ctx;
	if (filter_matches(b, rel))
		b->rels[b->n++] = svc_relationship_to_proto(rel);
	return 0;
}

static void export_batch_clear(export_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		svc_relationship_free(b->rels[i]);
	b->n = 0;
}

/* Streams every relationship at the requested revision in batches of
 * optional_limit (default 1000); each response carries the cursor that
 * resumes after it (core's export cursor, which pins the revision). */
void svc_handle_export(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(
	        call, ctx,
	        &authzed__api__v1__export_bulk_relationships_request__descriptor,
	        0, &req) != 0)
		return;
	const Authzed__Api__V1__ExportBulkRelationshipsRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	pemba_revision at = 0;
	pemba_filter filter;
	export_batch batch = {0};
	char *cursor = NULL;
	int rc = 0;
	if (m->optional_relationship_filter) {
		rc = svc_filter_from_proto(m->optional_relationship_filter,
		                           true, &filter, &batch.prefix, &err);
		batch.filter = &filter;
		batch.prefix_len = rc == 0 ? strlen(batch.prefix) : 0;
	}
	const char *start = m->optional_cursor && m->optional_cursor->token &&
	                            m->optional_cursor->token[0]
	                        ? m->optional_cursor->token
	                        : NULL;
	if (rc == 0 && !start)
		rc = svc_resolve_consistency(req.db, m->consistency, &at, &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
		goto out;
	}
	size_t limit =
	    m->optional_limit ? m->optional_limit : EXPORT_BATCH_DEFAULT;
	if (limit > EXPORT_BATCH_MAX)
		limit = EXPORT_BATCH_MAX;
	batch.rels = xcalloc(limit + 1, sizeof(*batch.rels));
	cursor = start ? xstrdup(start) : NULL;
	for (;;) {
		char *next = NULL;
		pemba_revision rev = 0;
		export_batch_clear(&batch);
		rc = pemba_export_relationships(req.db, cursor ? 0 : at, cursor,
		                                limit, export_add, &batch, &rev,
		                                &next, &err);
		if (rc < 0) {
			svc_finish_error(call, &err);
			goto out;
		}
		free(cursor);
		cursor = next;
		if (batch.n > 0) {
			Authzed__Api__V1__ExportBulkRelationshipsResponse resp =
			    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_RESPONSE__INIT;
			Authzed__Api__V1__Cursor c =
			    AUTHZED__API__V1__CURSOR__INIT;
			c.token = cursor ? cursor : "";
			resp.after_result_cursor = &c;
			resp.relationships = batch.rels;
			resp.n_relationships = batch.n;
			if (svc_send(call, &resp.base) < 0)
				goto out;
		}
		if (!cursor)
			break;
		if (grpc_call_cancelled(call))
			goto out;
	}
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
out:
	export_batch_clear(&batch);
	free(batch.rels);
	free(cursor);
	svc_end(&req);
}

/* ===================================================================== */
/* ExperimentalService                                                   */
/* ===================================================================== */

#define XS "/authzed.api.v1.ExperimentalService/"

size_t svc_experimental_methods(svc_backend *b, grpc_method *out)
{
	size_t n = 0;
	out[n++] =
	    (grpc_method){XS "BulkImportRelationships",
	                  GRPC_METHOD_CLIENT_STREAMING, svc_handle_import, b};
	out[n++] =
	    (grpc_method){XS "BulkExportRelationships",
	                  GRPC_METHOD_SERVER_STREAMING, svc_handle_export, b};
	out[n++] = (grpc_method){XS "BulkCheckPermission", GRPC_METHOD_UNARY,
	                         svc_handle_check_bulk, b};
	return n;
}
