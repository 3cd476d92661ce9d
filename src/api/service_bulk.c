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

/* An import stream between steps.  The import is tied to the stream's
 * handle (SVC_ACQUIRE_LONG); its rows are staged by core outside the
 * datastore's write lock, so a slow or stalled client blocks no writer. */
typedef struct import_state {
	pemba_import *imp;
	pemba_relationship *rels;
	size_t cap;
	size_t index; /* relationships received so far */
	/* Caveat contexts of one message, as JSON text; reset per message
	 * (pemba_import_add copies what it keeps). */
	arena *contexts;
	svc_write_caller caller; /* on_deprecated_ctx */
} import_state;

/* Decodes one request message (string and nesting guard first); NULL
 * (call finished) when malformed. */
static Authzed__Api__V1__ImportBulkRelationshipsRequest *
import_decode(grpc_call *call, const uint8_t *data, size_t len)
{
	ProtobufCMessage *m = NULL;
	pemba_error err = {0};
	if (svc_unpack(
	        &authzed__api__v1__import_bulk_relationships_request__descriptor,
	        data, len, &m, &err) != 0) {
		svc_finish_error(call, &err);
		return NULL;
	}
	return (Authzed__Api__V1__ImportBulkRelationshipsRequest *)m;
}

/* Stages one message's relationships. */
static int
import_message(import_state *is,
               const Authzed__Api__V1__ImportBulkRelationshipsRequest *m,
               pemba_error *err)
{
	if (m->n_relationships > is->cap) {
		is->cap = m->n_relationships;
		free(is->rels);
		is->rels = xcalloc(is->cap, sizeof(*is->rels));
	}
	int rc = 0;
	for (size_t i = 0; i < m->n_relationships && rc == 0; i++) {
		char where[48];
		snprintf(where, sizeof(where), "relationships[%zu]",
		         is->index + i);
		rc = svc_relationship_from_proto(m->relationships[i], where,
		                                 is->contexts, &is->rels[i],
		                                 err);
	}
	if (rc == 0 && m->n_relationships > 0)
		rc = pemba_import_add(is->imp, is->rels, m->n_relationships,
		                      err);
	arena_reset(is->contexts);
	is->index += m->n_relationships;
	return rc;
}

/* One step: stage the messages that have arrived; at the end of the
 * request stream commit them as one revision and reply.  A client that
 * sends nothing for the stall timeout is ended by the transport
 * (DEADLINE_EXCEEDED) and the import aborted. */
static grpc_step import_step(grpc_call *call, pemba_db *db, void *arg)
{
	import_state *is = arg;
	int64_t began = svc_step_begin();
	for (;;) {
		const uint8_t *data;
		size_t len;
		pemba_error err = {0};
		int rc = grpc_call_try_read(call, &data, &len);
		if (rc == GRPC_EAGAIN)
			return GRPC_STEP_WAIT;
		if (rc < 0)
			return GRPC_STEP_DONE; /* the transport finished it */
		if (rc == 0) {
			pemba_revision rev = 0;
			uint64_t count = 0;
			rc = pemba_import_commit(is->imp, &rev, &count, &err);
			is->imp = NULL;
			if (rc < 0) {
				svc_finish_error(call, &err);
				return GRPC_STEP_DONE;
			}
			Authzed__Api__V1__ImportBulkRelationshipsResponse resp =
			    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_RESPONSE__INIT;
			resp.num_loaded = count;
			svc_reply(call, &resp.base);
			return GRPC_STEP_DONE;
		}
		Authzed__Api__V1__ImportBulkRelationshipsRequest *m =
		    import_decode(call, data, len);
		if (!m)
			return GRPC_STEP_DONE;
		rc = import_message(is, m, &err);
		authzed__api__v1__import_bulk_relationships_request__free_unpacked(
		    m, NULL);
		if (rc < 0) {
			svc_finish_error(call, &err);
			return GRPC_STEP_DONE;
		}
		if (svc_step_expired(began))
			return GRPC_STEP_MORE;
	}
}

static void import_free(grpc_call *call, pemba_db *db, void *arg)
{
	import_state *is = arg;
	if (is->imp)
		pemba_import_abort(is->imp);
	free(is->rels);
	arena_destroy(is->contexts);
	free(is);
}

static const svc_stream_ops import_ops = {import_step, import_free};

/* Every message's relationships go into one open import, committed as one
 * revision when the client half-closes.  CREATE semantics, as SpiceDB: an
 * existing relationship fails the whole import with ALREADY_EXISTS. */
void svc_handle_import(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin_stream(call, ctx, SVC_ACQUIRE_LONG, &req) != 0)
		return;
	if (svc_refuse_write(&req)) {
		svc_end(&req);
		return;
	}
	pemba_error err = {0};
	import_state *is = xcalloc(1, sizeof(*is));
	is->caller = (svc_write_caller){.backend = req.backend, .call = call};
	pemba_write_options opts = {.on_deprecated = svc_log_deprecation,
	                            .on_deprecated_ctx = &is->caller};
	if (pemba_import_begin_ex(req.db, PEMBA_OP_CREATE, &opts, &is->imp,
	                          &err) < 0) {
		svc_finish_error(call, &err);
		free(is);
		svc_end(&req);
		return;
	}
	is->contexts = arena_create(0);
	svc_stream_start(&req, &import_ops, is);
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

/* An export stream between steps. */
typedef struct export_state {
	pemba_filter filter;
	export_batch batch;
	pemba_revision at;
	char *cursor; /* core's export cursor; NULL: start at `at` */
	size_t limit;
} export_state;

/* One step: batches until the client's queue is full or the time slice
 * is over; each response carries the cursor that resumes after it. */
static grpc_step export_step(grpc_call *call, pemba_db *db, void *arg)
{
	export_state *es = arg;
	int64_t began = svc_step_begin();
	for (;;) {
		char *next = NULL;
		pemba_revision rev = 0;
		pemba_error err = {0};
		export_batch_clear(&es->batch);
		if (pemba_export_relationships(
		        db, es->cursor ? 0 : es->at, es->cursor, es->limit,
		        export_add, &es->batch, &rev, &next, &err) < 0) {
			svc_finish_error(call, &err);
			return GRPC_STEP_DONE;
		}
		free(es->cursor);
		es->cursor = next;
		if (es->batch.n > 0) {
			Authzed__Api__V1__ExportBulkRelationshipsResponse resp =
			    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_RESPONSE__INIT;
			Authzed__Api__V1__Cursor c =
			    AUTHZED__API__V1__CURSOR__INIT;
			c.token = es->cursor ? es->cursor : "";
			resp.after_result_cursor = &c;
			resp.relationships = es->batch.rels;
			resp.n_relationships = es->batch.n;
			if (svc_send(call, &resp.base) < 0)
				return GRPC_STEP_DONE;
		}
		if (!es->cursor) {
			grpc_call_finish(call, GRPC_STATUS_OK, NULL);
			return GRPC_STEP_DONE;
		}
		if (!grpc_call_writable(call) || svc_step_expired(began))
			return GRPC_STEP_MORE;
	}
}

static void export_free(grpc_call *call, pemba_db *db, void *arg)
{
	export_state *es = arg;
	export_batch_clear(&es->batch);
	free(es->batch.rels);
	free(es->cursor);
	free(es);
}

static const svc_stream_ops export_ops = {export_step, export_free};

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
	export_state *es = xcalloc(1, sizeof(*es));
	int rc = 0;
	if (m->optional_relationship_filter) {
		rc =
		    svc_filter_from_proto(m->optional_relationship_filter, true,
		                          &es->filter, &es->batch.prefix, &err);
		es->batch.filter = &es->filter;
		es->batch.prefix_len = rc == 0 ? strlen(es->batch.prefix) : 0;
	}
	const char *start = m->optional_cursor && m->optional_cursor->token &&
	                            m->optional_cursor->token[0]
	                        ? m->optional_cursor->token
	                        : NULL;
	if (rc == 0 && !start)
		rc = svc_resolve_consistency(req.db, m->consistency, &es->at,
		                             &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
		free(es);
		svc_end(&req);
		return;
	}
	es->limit =
	    m->optional_limit ? m->optional_limit : EXPORT_BATCH_DEFAULT;
	if (es->limit > EXPORT_BATCH_MAX)
		es->limit = EXPORT_BATCH_MAX;
	es->batch.rels = xcalloc(es->limit + 1, sizeof(*es->batch.rels));
	es->cursor = start ? xstrdup(start) : NULL;
	svc_stream_start(&req, &export_ops, es);
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
