/*
 * service_permissions.c -- authzed.api.v1.PermissionsService: relationship
 * writes, deletes and reads, checks (single and bulk), lookups, expand.
 * Bulk import and export live in service_bulk.c.
 *
 * Every response names the revision it was computed at as a ZedToken;
 * reads resolve their Consistency first (svc_resolve_consistency) and then
 * pass that explicit revision to pemba_*.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/debug_trace.h"
#include "api/foreign_token.h"
#include "api/services.h"
#include "api/struct_json.h"
#include "google/rpc/status.pb-c.h"
#include "util/arena.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

typedef Authzed__Api__V1__CheckPermissionResponse__Permissionship wire_perm;

/* ===================================================================== */
/* WriteRelationships                                                    */
/* ===================================================================== */

static int operation_from_proto(int op, pemba_operation *out)
{
	switch (op) {
	case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE:
		*out = PEMBA_OP_CREATE;
		return 0;
	case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH:
		*out = PEMBA_OP_TOUCH;
		return 0;
	case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE:
		*out = PEMBA_OP_DELETE;
		return 0;
	default:
		return -1;
	}
}

static void handle_write_relationships(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(
	        call, ctx,
	        &authzed__api__v1__write_relationships_request__descriptor, 0,
	        &req) != 0)
		return;
	const Authzed__Api__V1__WriteRelationshipsRequest *m =
	    (const void *)req.message;
	pemba_update *updates = NULL;
	pemba_precondition *pre = NULL;
	pemba_error err = {0};
	/* Caveat contexts as JSON text, alive until the write is done. */
	arena *contexts = arena_create(0);
	int rc = 0;
	if (svc_refuse_write(&req))
		goto out;
	/* Counts first, as SpiceDB does, before converting anything. */
	if (m->n_updates > PEMBA_MAX_UPDATES) {
		svc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
		         "update count of %zu is greater than maximum allowed "
		         "of %d",
		         m->n_updates, PEMBA_MAX_UPDATES);
		goto out;
	}
	if (m->n_optional_preconditions > PEMBA_MAX_PRECONDITIONS) {
		svc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
		         "precondition count of %zu is greater than maximum "
		         "allowed of %d",
		         m->n_optional_preconditions, PEMBA_MAX_PRECONDITIONS);
		goto out;
	}
	updates = xcalloc(m->n_updates + 1, sizeof(*updates));
	pre = xcalloc(m->n_optional_preconditions + 1, sizeof(*pre));
	for (size_t i = 0; i < m->n_updates && rc == 0; i++) {
		char where[48];
		snprintf(where, sizeof(where), "updates[%zu]", i);
		if (operation_from_proto(m->updates[i]->operation,
		                         &updates[i].op) < 0)
			rc =
			    error_set(&err, PEMBA_EINVAL,
			              "invalid argument: %s: operation must be "
			              "CREATE, TOUCH or DELETE",
			              where);
		else
			rc = svc_relationship_from_proto(
			    m->updates[i]->relationship, where, contexts,
			    &updates[i].rel, &err);
	}
	if (rc == 0)
		rc = svc_preconditions_from_proto(m->optional_preconditions,
		                                  m->n_optional_preconditions,
		                                  pre, &err);
	/* optional_transaction_metadata is stored with the revision as
	 * JSON and reported by Watch. */
	pemba_revision rev = 0;
	strbuf metadata;
	strbuf_init(&metadata);
	svc_write_caller caller = {.backend = req.backend, .call = call};
	pemba_write_options opts = {.on_deprecated = svc_log_deprecation,
	                            .on_deprecated_ctx = &caller};
	foreign_token mirrored;
	bool is_mirrored = false;
	if (m->optional_transaction_metadata) {
		api_json_struct(&metadata, m->optional_transaction_metadata);
		opts.metadata = metadata.data;
		if (rc == 0)
			rc = svc_mirror_position(
			    m->optional_transaction_metadata, &mirrored,
			    &is_mirrored, &err);
		if (is_mirrored)
			opts.source_position = &mirrored.pos;
	}
	if (rc == 0)
		rc = pemba_write_relationships_ex(
		    req.db, updates, m->n_updates, pre,
		    m->n_optional_preconditions, &opts, &rev, &err);
	strbuf_free(&metadata);
	if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		Authzed__Api__V1__WriteRelationshipsResponse resp =
		    AUTHZED__API__V1__WRITE_RELATIONSHIPS_RESPONSE__INIT;
		svc_zedtoken zt;
		resp.written_at = svc_zedtoken_make(&zt, req.db, rev);
		svc_reply(call, &resp.base);
	}
out:
	free(updates);
	free(pre);
	arena_destroy(contexts);
	svc_end(&req);
}

/* ===================================================================== */
/* DeleteRelationships                                                   */
/* ===================================================================== */

static void handle_delete_relationships(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(
	        call, ctx,
	        &authzed__api__v1__delete_relationships_request__descriptor, 0,
	        &req) != 0)
		return;
	const Authzed__Api__V1__DeleteRelationshipsRequest *m =
	    (const void *)req.message;
	pemba_precondition *pre = NULL;
	pemba_error err = {0};
	pemba_filter filter;
	const char *prefix;
	int rc;
	if (svc_refuse_write(&req))
		goto out;
	if (m->n_optional_preconditions > PEMBA_MAX_PRECONDITIONS) {
		svc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
		         "precondition count of %zu is greater than maximum "
		         "allowed of %d",
		         m->n_optional_preconditions, PEMBA_MAX_PRECONDITIONS);
		goto out;
	}
	pre = xcalloc(m->n_optional_preconditions + 1, sizeof(*pre));
	rc = svc_filter_from_proto(m->relationship_filter, true, &filter,
	                           &prefix, &err);
	if (rc == 0 && prefix[0])
		rc = error_set(&err, PEMBA_EUNSUPPORTED,
		               "DeleteRelationships with "
		               "optional_resource_id_prefix is not supported "
		               "yet");
	if (rc == 0)
		rc = svc_preconditions_from_proto(m->optional_preconditions,
		                                  m->n_optional_preconditions,
		                                  pre, &err);
	pemba_revision rev = 0;
	size_t deleted = 0;
	int more = 0;
	if (rc == 0)
		rc = pemba_delete_relationships(
		    req.db, &filter, pre, m->n_optional_preconditions,
		    m->optional_limit, m->optional_allow_partial_deletions,
		    &rev, &deleted, &more, &err);
	if (rc == PEMBA_ELIMIT && m->optional_limit > 0) {
		/* SpiceDB's wording for a transactional delete over the
		 * limit. */
		svc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
		         "found more than %u relationships to be deleted and "
		         "partial deletion was not requested",
		         m->optional_limit);
	} else if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		Authzed__Api__V1__DeleteRelationshipsResponse resp =
		    AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__INIT;
		svc_zedtoken zt;
		if (rev == 0) /* nothing matched: no new revision */
			pemba_head_revision(req.db, &rev, &err);
		resp.deleted_at = svc_zedtoken_make(&zt, req.db, rev);
		resp.relationships_deleted_count = deleted;
		resp.deletion_progress =
		    more
		        ? AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__DELETION_PROGRESS__DELETION_PROGRESS_PARTIAL
		        : AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__DELETION_PROGRESS__DELETION_PROGRESS_COMPLETE;
		svc_reply(call, &resp.base);
	}
out:
	free(pre);
	svc_end(&req);
}

/* ===================================================================== */
/* ReadRelationships                                                     */
/* ===================================================================== */

/* Cursor: "r1:<revision>:<hex of the six key fields, each followed by a
 * NUL>".  It pins the revision, so paging is one snapshot. */
static char *read_cursor_encode(pemba_revision rev, const pemba_relationship *r)
{
	static const char hex[] = "0123456789abcdef";
	const char *fields[6] = {r->resource_type, r->resource_id,
	                         r->relation,      r->subject_type,
	                         r->subject_id,    r->subject_relation};
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb, "r1:%" PRIu64 ":", (uint64_t)rev);
	for (int i = 0; i < 6; i++) {
		const char *s = fields[i] ? fields[i] : "";
		for (; *s; s++) {
			strbuf_putc(&sb, hex[(unsigned char)*s >> 4]);
			strbuf_putc(&sb, hex[(unsigned char)*s & 15]);
		}
		strbuf_append(&sb, "00", 2);
	}
	return strbuf_detach(&sb, NULL);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes a read cursor into *rev and *after, whose strings point into
 * *storage (free it). */
static int read_cursor_decode(const char *text, pemba_revision *rev,
                              pemba_relationship *after, char **storage,
                              pemba_error *err)
{
	*storage = NULL;
	char *end;
	if (strncmp(text, "r1:", 3) != 0)
		goto bad;
	unsigned long long r = strtoull(text + 3, &end, 10);
	if (end == text + 3 || *end != ':' || r == 0)
		goto bad;
	const char *h = end + 1;
	size_t hlen = strlen(h);
	if (hlen % 2 != 0)
		goto bad;
	char *buf = xmalloc(hlen / 2 + 1);
	const char *fields[6];
	int nfields = 0;
	size_t n = 0;
	fields[0] = buf;
	for (size_t i = 0; i < hlen; i += 2) {
		int hi = hexval(h[i]), lo = hexval(h[i + 1]);
		if (hi < 0 || lo < 0 || nfields >= 6) {
			free(buf);
			goto bad;
		}
		buf[n++] = (char)(hi << 4 | lo);
		if (buf[n - 1] == '\0' && ++nfields < 6)
			fields[nfields] = buf + n;
	}
	if (nfields != 6) {
		free(buf);
		goto bad;
	}
	memset(after, 0, sizeof(*after));
	after->resource_type = fields[0];
	after->resource_id = fields[1];
	after->relation = fields[2];
	after->subject_type = fields[3];
	after->subject_id = fields[4];
	after->subject_relation = fields[5][0] ? fields[5] : NULL;
	*rev = r;
	*storage = buf;
	return 0;
bad:
	return error_set(err, PEMBA_EINVAL,
	                 "invalid argument: the cursor provided is not valid");
}

#define READ_PAGE 512

typedef struct read_page {
	pemba_relationship *rels; /* deep copies (strings in one buffer each) */
	char **storage;
	size_t n;
} read_page;

static int read_page_add(void *ctx, const pemba_relationship *rel)
{
	read_page *p = ctx;
	/* The six key fields, then the caveat's name and context. */
	const char *f[8] = {rel->resource_type, rel->resource_id,
	                    rel->relation,      rel->subject_type,
	                    rel->subject_id,    rel->subject_relation,
	                    rel->caveat_name,   rel->caveat_context};
	size_t len[8], total = 0;
	for (int i = 0; i < 8; i++) {
		len[i] = f[i] ? strlen(f[i]) : 0;
		total += len[i] + 1;
	}
	char *buf = xmalloc(total), *q = buf;
	const char *copy[8];
	for (int i = 0; i < 8; i++) {
		copy[i] = q;
		if (len[i])
			memcpy(q, f[i], len[i]);
		q[len[i]] = '\0';
		q += len[i] + 1;
	}
	pemba_relationship *r = &p->rels[p->n];
	memset(r, 0, sizeof(*r));
	r->resource_type = copy[0];
	r->resource_id = copy[1];
	r->relation = copy[2];
	r->subject_type = copy[3];
	r->subject_id = copy[4];
	r->subject_relation = copy[5][0] ? copy[5] : NULL;
	r->caveat_name = copy[6][0] ? copy[6] : NULL;
	r->caveat_context = copy[7][0] ? copy[7] : NULL;
	r->expiration_ms = rel->expiration_ms;
	p->storage[p->n++] = buf;
	return 0;
}

static void read_page_clear(read_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->storage[i]);
	p->n = 0;
}

/* A ReadRelationships stream between steps: the filter points into the
 * request, which the stream owns. */
typedef struct read_state {
	pemba_filter filter;
	const char *prefix;
	size_t prefix_len;
	pemba_revision at;
	pemba_relationship after; /* resume strictly after it */
	char *after_storage;
	bool have_after;
	size_t limit, sent;
	svc_zedtoken read_at;
	read_page page;
} read_state;

/* One step: pages of READ_PAGE at the stream's revision until the
 * client's queue is full or the time slice is over. */
static grpc_step read_step(grpc_call *call, pemba_db *db, void *arg)
{
	read_state *rs = arg;
	int64_t began = svc_step_begin();
	for (;;) {
		pemba_error err = {0};
		read_page_clear(&rs->page);
		if (pemba_read_relationships(db, rs->at, &rs->filter,
		                             rs->have_after ? &rs->after : NULL,
		                             READ_PAGE, read_page_add,
		                             &rs->page, &err) < 0) {
			svc_finish_error(call, &err);
			return GRPC_STEP_DONE;
		}
		for (size_t i = 0; i < rs->page.n; i++) {
			const pemba_relationship *r = &rs->page.rels[i];
			if (rs->prefix_len &&
			    strncmp(r->resource_id, rs->prefix,
			            rs->prefix_len) != 0)
				continue;
			Authzed__Api__V1__ReadRelationshipsResponse resp =
			    AUTHZED__API__V1__READ_RELATIONSHIPS_RESPONSE__INIT;
			Authzed__Api__V1__Cursor cursor =
			    AUTHZED__API__V1__CURSOR__INIT;
			cursor.token = read_cursor_encode(rs->at, r);
			resp.read_at = &rs->read_at.msg;
			resp.relationship = svc_relationship_to_proto(r);
			resp.after_result_cursor = &cursor;
			int sr = svc_send(call, &resp.base);
			svc_relationship_free(resp.relationship);
			free(cursor.token);
			if (sr < 0)
				return GRPC_STEP_DONE;
			if (rs->limit && ++rs->sent >= rs->limit) {
				grpc_call_finish(call, GRPC_STATUS_OK, NULL);
				return GRPC_STEP_DONE;
			}
		}
		if (rs->page.n < READ_PAGE) {
			grpc_call_finish(call, GRPC_STATUS_OK, NULL);
			return GRPC_STEP_DONE;
		}
		/* Continue after the page's last relationship. */
		free(rs->after_storage);
		rs->after_storage = rs->page.storage[rs->page.n - 1];
		rs->after = rs->page.rels[rs->page.n - 1];
		rs->page.n--; /* its storage now belongs to after_storage */
		rs->have_after = true;
		if (!grpc_call_writable(call) || svc_step_expired(began))
			return GRPC_STEP_MORE;
	}
}

static void read_free(grpc_call *call, pemba_db *db, void *arg)
{
	read_state *rs = arg;
	read_page_clear(&rs->page);
	free(rs->page.rels);
	free(rs->page.storage);
	free(rs->after_storage);
	free(rs);
}

static const svc_stream_ops read_ops = {read_step, read_free};

static void handle_read_relationships(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__read_relationships_request__descriptor,
	              0, &req) != 0)
		return;
	const Authzed__Api__V1__ReadRelationshipsRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	read_state *rs = xcalloc(1, sizeof(*rs));
	int rc = svc_filter_from_proto(m->relationship_filter, true,
	                               &rs->filter, &rs->prefix, &err);
	/* Reading a deprecated relation's relationships is how data moves
	 * off it: counted, never refused. */
	if (rc == 0)
		rc = svc_deprecation_use(&req, rs->filter.resource_type,
		                         rs->filter.relation, false, &err);
	if (rc == 0)
		rc = svc_resolve_consistency(req.db, m->consistency, &rs->at,
		                             &err);
	if (rc == 0 && m->optional_cursor && m->optional_cursor->token &&
	    m->optional_cursor->token[0]) {
		pemba_revision cursor_rev = 0;
		rc = read_cursor_decode(m->optional_cursor->token, &cursor_rev,
		                        &rs->after, &rs->after_storage, &err);
		if (rc == 0) {
			rs->have_after = true;
			rs->at = cursor_rev;
		}
	}
	if (rc < 0) {
		svc_finish_error(call, &err);
		free(rs->after_storage);
		free(rs);
		svc_end(&req);
		return;
	}
	rs->prefix_len = strlen(rs->prefix);
	rs->limit = m->optional_limit;
	rs->page.rels = xcalloc(READ_PAGE, sizeof(*rs->page.rels));
	rs->page.storage = xcalloc(READ_PAGE, sizeof(*rs->page.storage));
	svc_zedtoken_make(&rs->read_at, req.db, rs->at);
	svc_stream_start(&req, &read_ops, rs);
}

/* ===================================================================== */
/* CheckPermission, CheckBulkPermissions                                 */
/* ===================================================================== */

/* Fills *out from a request's parts; the context's JSON text is allocated
 * in `a`. */
static int
check_request_from_proto(const Authzed__Api__V1__ObjectReference *res,
                         const char *permission,
                         const Authzed__Api__V1__SubjectReference *sub,
                         const Google__Protobuf__Struct *context, arena *a,
                         pemba_check_request *out, pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!res)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: resource is required");
	if (!sub || !sub->object)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: subject is required");
	out->resource_type = res->object_type;
	out->resource_id = res->object_id;
	out->permission = permission;
	out->subject_type = sub->object->object_type;
	out->subject_id = sub->object->object_id;
	out->subject_relation =
	    sub->optional_relation && sub->optional_relation[0]
	        ? sub->optional_relation
	        : NULL;
	out->context = svc_context_from_proto(context, a);
	return 0;
}

/* PartialCaveatInfo naming the missing parameters of a CONDITIONAL
 * answer, in *info (whose array points into `missing`); NULL for other
 * answers. */
static Authzed__Api__V1__PartialCaveatInfo *
partial_info(Authzed__Api__V1__PartialCaveatInfo *info, pemba_permissionship p,
             char **missing, size_t nmissing)
{
	if (p != PEMBA_CONDITIONAL_PERMISSION)
		return NULL;
	authzed__api__v1__partial_caveat_info__init(info);
	info->missing_required_context = missing;
	info->n_missing_required_context = nmissing;
	return info;
}

/* The deprecated names a check request uses: its permission, and its
 * subject's relation (svc_deprecation_use). */
static int check_deprecations(svc_request *req, const pemba_check_request *c,
                              pemba_error *err)
{
	int rc = svc_deprecation_use(req, c->resource_type, c->permission, true,
	                             err);
	if (rc == 0)
		rc = svc_deprecation_use(req, c->subject_type,
		                         c->subject_relation, true, err);
	return rc;
}

/* The schema text a traced check used (SpiceDB's schema_used): "" when it
 * cannot be read.  Free with pemba_free. */
static char *schema_used(pemba_db *db, pemba_revision at)
{
	char *text = NULL;
	pemba_error err = {0};
	if (pemba_read_schema(db, at, &text, &err) != 0)
		text = NULL;
	return text;
}

static void handle_check_permission(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__check_permission_request__descriptor,
	              0, &req) != 0)
		return;
	const Authzed__Api__V1__CheckPermissionRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	pemba_check_request check;
	pemba_revision at = 0;
	pemba_check_result result = {0};
	/* with_tracing: the evaluation tree too (debug_trace.h). */
	pemba_check_trace *trace = NULL;
	pemba_check_trace **trace_out = m->with_tracing ? &trace : NULL;
	arena *a = arena_create(0);
	int rc =
	    check_request_from_proto(m->resource, m->permission, m->subject,
	                             m->context, a, &check, &err);
	if (rc == 0)
		rc = check_deprecations(&req, &check, &err);
	if (rc == 0 && svc_consistency_is_head(m->consistency)) {
		/* The head is read inside the check's read transaction: on
		 * PostgreSQL two round trips fewer (bench/README.md,
		 * "bench_postgres"). */
		rc = pemba_check_permission_trace(req.db, PEMBA_REVISION_HEAD,
		                                  &check, &result, trace_out,
		                                  &err);
		at = result.checked_at;
	} else if (rc == 0) {
		rc = svc_resolve_consistency(req.db, m->consistency, &at, &err);
		if (rc == 0)
			rc = pemba_check_permission_trace(
			    req.db, at, &check, &result, trace_out, &err);
	}
	if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		Authzed__Api__V1__CheckPermissionResponse resp =
		    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__INIT;
		Authzed__Api__V1__PartialCaveatInfo info;
		svc_zedtoken zt;
		resp.checked_at = svc_zedtoken_make(&zt, req.db, at);
		resp.permissionship = (wire_perm)result.permissionship;
		resp.partial_caveat_info =
		    partial_info(&info, result.permissionship, result.missing,
		                 result.nmissing);
		svc_trace_builder tb = {.a = a,
		                        .subject = m->subject,
		                        .request_context = check.context};
		char *schema = trace ? schema_used(req.db, at) : NULL;
		resp.debug_trace = svc_debug_information(&tb, trace, schema);
		svc_reply(call, &resp.base);
		svc_trace_builder_end(&tb);
		pemba_free(schema);
	}
	pemba_check_trace_free(trace);
	pemba_check_result_clear(&result);
	arena_destroy(a);
	svc_end(&req);
}

#define MAX_BULK_CHECKS 10000

void svc_handle_check_bulk(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(
	        call, ctx,
	        &authzed__api__v1__check_bulk_permissions_request__descriptor,
	        0, &req) != 0)
		return;
	const Authzed__Api__V1__CheckBulkPermissionsRequest *m =
	    (const void *)req.message;
	size_t n = m->n_items;
	pemba_error err = {0};
	pemba_revision at = 0;
	if (n > MAX_BULK_CHECKS) {
		svc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
		         "check count of %zu is greater than maximum allowed "
		         "of %d",
		         n, MAX_BULK_CHECKS);
		svc_end(&req);
		return;
	}
	pemba_check_request *items = xcalloc(n + 1, sizeof(*items));
	pemba_check_result *results = xcalloc(n + 1, sizeof(*results));
	/* Items that fail conversion get their error here; the rest are
	 * evaluated together at one revision. */
	pemba_error *conv = xcalloc(n + 1, sizeof(*conv));
	size_t *index = xcalloc(n + 1, sizeof(*index));
	size_t nvalid = 0;
	arena *contexts = arena_create(0);
	for (size_t i = 0; i < n; i++) {
		const Authzed__Api__V1__CheckBulkPermissionsRequestItem *it =
		    m->items[i];
		/* A deprecated name (REJECT) fails its item only. */
		if (check_request_from_proto(it->resource, it->permission,
		                             it->subject, it->context, contexts,
		                             &items[nvalid], &conv[i]) == 0 &&
		    check_deprecations(&req, &items[nvalid], &conv[i]) == 0)
			index[nvalid++] = i;
	}
	pemba_check_trace **traces =
	    m->with_tracing ? xcalloc(n + 1, sizeof(*traces)) : NULL;
	int rc = svc_resolve_consistency(req.db, m->consistency, &at, &err);
	if (rc == 0 && nvalid > 0)
		rc = pemba_check_bulk_trace(req.db, at, items, nvalid, results,
		                            traces, NULL, &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
		goto out;
	}
	Authzed__Api__V1__CheckBulkPermissionsResponse resp =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_RESPONSE__INIT;
	svc_zedtoken zt;
	resp.checked_at = svc_zedtoken_make(&zt, req.db, at);
	resp.n_pairs = n;
	resp.pairs = xcalloc(n + 1, sizeof(*resp.pairs));
	Authzed__Api__V1__CheckBulkPermissionsPair *pairs =
	    xcalloc(n + 1, sizeof(*pairs));
	Authzed__Api__V1__CheckBulkPermissionsResponseItem *answers =
	    xcalloc(n + 1, sizeof(*answers));
	Google__Rpc__Status *errors = xcalloc(n + 1, sizeof(*errors));
	Authzed__Api__V1__PartialCaveatInfo *infos =
	    xcalloc(n + 1, sizeof(*infos));
	const pemba_error **item_err = xcalloc(n + 1, sizeof(*item_err));
	const pemba_check_result **answer = xcalloc(n + 1, sizeof(*answer));
	const pemba_check_trace **answer_trace =
	    xcalloc(n + 1, sizeof(*answer_trace));
	const pemba_check_request **answer_req =
	    xcalloc(n + 1, sizeof(*answer_req));
	for (size_t i = 0; i < n; i++)
		item_err[i] = &conv[i];
	for (size_t k = 0; k < nvalid; k++) {
		item_err[index[k]] = &results[k].error;
		answer[index[k]] = &results[k];
		answer_trace[index[k]] = traces ? traces[k] : NULL;
		answer_req[index[k]] = &items[k];
	}
	svc_trace_builder tb = {.a = contexts};
	char *schema = traces ? schema_used(req.db, at) : NULL;
	for (size_t i = 0; i < n; i++) {
		Authzed__Api__V1__CheckBulkPermissionsPair *p = &pairs[i];
		authzed__api__v1__check_bulk_permissions_pair__init(p);
		p->request = m->items[i];
		if (item_err[i]->code != 0) {
			google__rpc__status__init(&errors[i]);
			errors[i].code =
			    svc_status_from_code(item_err[i]->code);
			errors[i].message = (char *)item_err[i]->message;
			p->response_case =
			    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR;
			p->error = &errors[i];
		} else {
			const pemba_check_result *res = answer[i];
			authzed__api__v1__check_bulk_permissions_response_item__init(
			    &answers[i]);
			answers[i].permissionship =
			    (wire_perm)res->permissionship;
			answers[i].partial_caveat_info =
			    partial_info(&infos[i], res->permissionship,
			                 res->missing, res->nmissing);
			tb.subject = m->items[i]->subject;
			tb.request_context = answer_req[i]->context;
			answers[i].debug_trace =
			    svc_debug_information(&tb, answer_trace[i], schema);
			p->response_case =
			    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM;
			p->item = &answers[i];
		}
		resp.pairs[i] = p;
	}
	svc_reply(call, &resp.base);
	svc_trace_builder_end(&tb);
	pemba_free(schema);
	free(resp.pairs);
	free(pairs);
	free(answers);
	free(errors);
	free(infos);
	free(item_err);
	free(answer);
	free(answer_trace);
	free(answer_req);
out:
	for (size_t k = 0; k < nvalid; k++) {
		pemba_check_result_clear(&results[k]);
		if (traces)
			pemba_check_trace_free(traces[k]);
	}
	free(traces);
	free(items);
	free(results);
	free(conv);
	free(index);
	arena_destroy(contexts);
	svc_end(&req);
}

/* ===================================================================== */
/* LookupResources, LookupSubjects                                       */
/* ===================================================================== */

/* Lookup cursors: "<revision>.<core cursor>", so a resumed lookup reads
 * the same snapshot as the first page. */
static char *lookup_cursor_encode(pemba_revision at, const char *core)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb, "%" PRIu64 ".%s", (uint64_t)at, core ? core : "");
	return strbuf_detach(&sb, NULL);
}

static int lookup_cursor_decode(const Authzed__Api__V1__Cursor *c,
                                pemba_revision *at, const char **core,
                                pemba_error *err)
{
	*core = NULL;
	if (!c || !c->token || !c->token[0])
		return 0;
	char *end;
	unsigned long long r = strtoull(c->token, &end, 10);
	if (end == c->token || *end != '.' || r == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: the cursor provided is not "
		                 "valid");
	*at = r;
	*core = end + 1;
	return 0;
}

/* A LookupResources / LookupSubjects stream between steps.  Each step
 * runs the lookup from the cursor of the last result sent and stops it
 * (the callback returns non-zero) when the client's queue is full or the
 * time slice is over; core's cursors resume strictly after a result, at
 * the same revision. */
typedef struct lookup_stream {
	grpc_call *call;
	Authzed__Api__V1__ZedToken *token;
	pemba_revision at;
	int failed;    /* the client went away */
	bool paused;   /* stopped early: resume from `cursor` */
	int64_t began; /* this step's time slice */
	char *cursor;  /* after the last result sent; NULL: start */
	size_t limit;  /* 0: none; else results still to send */
	svc_zedtoken zt;
	arena *arena; /* the request's caveat context */
	pemba_lookup_resources_request lr;
	pemba_lookup_subjects_request ls;
} lookup_stream;

/* After a result was sent: remember where to resume, and whether to
 * pause.  Returns the callback's answer (non-zero stops the lookup). */
static int lookup_sent(lookup_stream *ls, int send_rc, const char *cursor,
                       bool counts)
{
	if (send_rc < 0) {
		ls->failed = 1;
		return 1;
	}
	free(ls->cursor);
	ls->cursor = xstrdup(cursor ? cursor : "");
	if (counts && ls->limit && --ls->limit == 0)
		return 1; /* the lookup would stop here anyway */
	if (!grpc_call_writable(ls->call) || svc_step_expired(ls->began)) {
		ls->paused = true;
		return 1;
	}
	return 0;
}

/* The end of a lookup step. */
static grpc_step lookup_step_end(lookup_stream *ls, int rc,
                                 const pemba_error *err)
{
	if (ls->failed)
		return GRPC_STEP_DONE; /* the call is gone */
	if (rc < 0) {
		svc_finish_error(ls->call, err);
		return GRPC_STEP_DONE;
	}
	if (ls->paused) {
		ls->paused = false;
		return GRPC_STEP_MORE;
	}
	grpc_call_finish(ls->call, GRPC_STATUS_OK, NULL);
	return GRPC_STEP_DONE;
}

static void lookup_free(grpc_call *call, pemba_db *db, void *arg)
{
	lookup_stream *ls = arg;
	free(ls->cursor);
	arena_destroy(ls->arena);
	free(ls);
}

static Authzed__Api__V1__LookupPermissionship
lookup_perm(pemba_permissionship p)
{
	return p == PEMBA_CONDITIONAL_PERMISSION
	           ? AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION
	           : AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_HAS_PERMISSION;
}

static int send_resource(void *ctx, const pemba_lookup_item *item)
{
	lookup_stream *ls = ctx;
	Authzed__Api__V1__LookupResourcesResponse resp =
	    AUTHZED__API__V1__LOOKUP_RESOURCES_RESPONSE__INIT;
	Authzed__Api__V1__Cursor c = AUTHZED__API__V1__CURSOR__INIT;
	Authzed__Api__V1__PartialCaveatInfo info;
	c.token = lookup_cursor_encode(ls->at, item->cursor);
	resp.looked_up_at = ls->token;
	resp.resource_object_id = (char *)item->id;
	resp.permissionship = lookup_perm(item->permissionship);
	resp.partial_caveat_info =
	    partial_info(&info, item->permissionship, (char **)item->missing,
	                 item->nmissing);
	resp.after_result_cursor = &c;
	int rc = svc_send(ls->call, &resp.base);
	free(c.token);
	return lookup_sent(ls, rc, item->cursor, true);
}

static grpc_step lookup_resources_step(grpc_call *call, pemba_db *db, void *arg)
{
	lookup_stream *ls = arg;
	pemba_error err = {0};
	ls->call = call;
	ls->began = svc_step_begin();
	ls->lr.cursor = ls->cursor;
	ls->lr.limit = ls->limit;
	int rc =
	    pemba_lookup_resources(db, ls->at, &ls->lr, NULL, ls, NULL, &err);
	return lookup_step_end(ls, rc, &err);
}

static const svc_stream_ops lookup_resources_ops = {lookup_resources_step,
                                                    lookup_free};

static void handle_lookup_resources(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__lookup_resources_request__descriptor,
	              0, &req) != 0)
		return;
	const Authzed__Api__V1__LookupResourcesRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	lookup_stream *ls = xcalloc(1, sizeof(*ls));
	ls->arena = arena_create(0);
	const char *cursor = NULL;
	int rc = 0;
	if (!m->subject || !m->subject->object)
		rc = error_set(&err, PEMBA_EINVAL,
		               "invalid argument: subject is required");
	if (rc == 0)
		rc = svc_deprecation_use(&req, m->resource_object_type,
		                         m->permission, true, &err);
	if (rc == 0)
		rc = svc_deprecation_use(&req, m->subject->object->object_type,
		                         m->subject->optional_relation, true,
		                         &err);
	if (rc == 0)
		rc = svc_resolve_consistency(req.db, m->consistency, &ls->at,
		                             &err);
	if (rc == 0)
		rc = lookup_cursor_decode(m->optional_cursor, &ls->at, &cursor,
		                          &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
		lookup_free(call, NULL, ls);
		svc_end(&req);
		return;
	}
	pemba_lookup_resources_request *lr = &ls->lr;
	lr->resource_type = m->resource_object_type;
	lr->permission = m->permission;
	lr->subject_type = m->subject->object->object_type;
	lr->subject_id = m->subject->object->object_id;
	lr->subject_relation = m->subject->optional_relation;
	lr->context = svc_context_from_proto(m->context, ls->arena);
	lr->on_item = send_resource;
	ls->limit = m->optional_limit;
	ls->cursor = cursor && cursor[0] ? xstrdup(cursor) : NULL;
	ls->token = svc_zedtoken_make(&ls->zt, req.db, ls->at);
	svc_stream_start(&req, &lookup_resources_ops, ls);
}

/* A ResolvedSubject for a lookup result (partial caveat info in *info). */
static void resolved_subject(Authzed__Api__V1__ResolvedSubject *out,
                             Authzed__Api__V1__PartialCaveatInfo *info,
                             const pemba_lookup_item *item)
{
	authzed__api__v1__resolved_subject__init(out);
	out->subject_object_id = (char *)item->id;
	out->permissionship = lookup_perm(item->permissionship);
	out->partial_caveat_info = partial_info(
	    info, item->permissionship, (char **)item->missing, item->nmissing);
}

static int send_subject(void *ctx, const pemba_lookup_item *item)
{
	lookup_stream *ls = ctx;
	size_t nex = item->nexcluded;
	Authzed__Api__V1__LookupSubjectsResponse resp =
	    AUTHZED__API__V1__LOOKUP_SUBJECTS_RESPONSE__INIT;
	Authzed__Api__V1__ResolvedSubject subject;
	Authzed__Api__V1__PartialCaveatInfo info;
	Authzed__Api__V1__Cursor c = AUTHZED__API__V1__CURSOR__INIT;
	Authzed__Api__V1__ResolvedSubject *ex = xcalloc(nex + 1, sizeof(*ex));
	Authzed__Api__V1__PartialCaveatInfo *exinfo =
	    xcalloc(nex + 1, sizeof(*exinfo));
	Authzed__Api__V1__ResolvedSubject **exp =
	    xcalloc(nex + 1, sizeof(*exp));
	char **exids = xcalloc(nex + 1, sizeof(*exids));
	for (size_t i = 0; i < nex; i++) {
		resolved_subject(&ex[i], &exinfo[i], &item->excluded[i]);
		exp[i] = &ex[i];
		exids[i] = (char *)item->excluded[i].id;
	}
	resolved_subject(&subject, &info, item);
	c.token = lookup_cursor_encode(ls->at, item->cursor);
	resp.looked_up_at = ls->token;
	/* The deprecated flat fields too, for older clients. */
	resp.subject_object_id = (char *)item->id;
	resp.excluded_subject_ids = exids;
	resp.n_excluded_subject_ids = nex;
	resp.permissionship = lookup_perm(item->permissionship);
	resp.subject = &subject;
	resp.excluded_subjects = exp;
	resp.n_excluded_subjects = nex;
	resp.after_result_cursor = &c;
	int rc = svc_send(ls->call, &resp.base);
	free(c.token);
	free(ex);
	free(exinfo);
	free(exp);
	free(exids);
	/* optional_concrete_limit: the wildcard does not count. */
	return lookup_sent(ls, rc, item->cursor, strcmp(item->id, "*") != 0);
}

static grpc_step lookup_subjects_step(grpc_call *call, pemba_db *db, void *arg)
{
	lookup_stream *ls = arg;
	pemba_error err = {0};
	ls->call = call;
	ls->began = svc_step_begin();
	ls->ls.cursor = ls->cursor;
	ls->ls.limit = ls->limit;
	int rc =
	    pemba_lookup_subjects(db, ls->at, &ls->ls, NULL, ls, NULL, &err);
	return lookup_step_end(ls, rc, &err);
}

static const svc_stream_ops lookup_subjects_ops = {lookup_subjects_step,
                                                   lookup_free};

static void handle_lookup_subjects(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__lookup_subjects_request__descriptor, 0,
	              &req) != 0)
		return;
	const Authzed__Api__V1__LookupSubjectsRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	lookup_stream *ls = xcalloc(1, sizeof(*ls));
	ls->arena = arena_create(0);
	const char *cursor = NULL;
	int rc = 0;
	if (!m->resource)
		rc = error_set(&err, PEMBA_EINVAL,
		               "invalid argument: resource is required");
	if (rc == 0)
		rc = svc_deprecation_use(&req, m->resource->object_type,
		                         m->permission, true, &err);
	if (rc == 0)
		rc = svc_deprecation_use(&req, m->subject_object_type,
		                         m->optional_subject_relation, true,
		                         &err);
	if (rc == 0)
		rc = svc_resolve_consistency(req.db, m->consistency, &ls->at,
		                             &err);
	if (rc == 0)
		rc = lookup_cursor_decode(m->optional_cursor, &ls->at, &cursor,
		                          &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
		lookup_free(call, NULL, ls);
		svc_end(&req);
		return;
	}
	pemba_lookup_subjects_request *q = &ls->ls;
	q->resource_type = m->resource->object_type;
	q->resource_id = m->resource->object_id;
	q->permission = m->permission;
	q->subject_type = m->subject_object_type;
	q->subject_relation = m->optional_subject_relation;
	q->exclude_wildcards =
	    m->wildcard_option ==
	    AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__WILDCARD_OPTION__WILDCARD_OPTION_EXCLUDE_WILDCARDS;
	q->context = svc_context_from_proto(m->context, ls->arena);
	q->on_item = send_subject;
	ls->limit = m->optional_concrete_limit;
	ls->cursor = cursor && cursor[0] ? xstrdup(cursor) : NULL;
	ls->token = svc_zedtoken_make(&ls->zt, req.db, ls->at);
	svc_stream_start(&req, &lookup_subjects_ops, ls);
}

/* ===================================================================== */
/* ExpandPermissionTree                                                  */
/* ===================================================================== */

static Authzed__Api__V1__PermissionRelationshipTree *
tree_to_proto(arena *a, const pemba_expand_node *node)
{
	Authzed__Api__V1__PermissionRelationshipTree *t =
	    arena_alloc(a, sizeof(*t));
	authzed__api__v1__permission_relationship_tree__init(t);
	Authzed__Api__V1__ObjectReference *obj = arena_alloc(a, sizeof(*obj));
	authzed__api__v1__object_reference__init(obj);
	obj->object_type = (char *)node->object_type;
	obj->object_id = (char *)node->object_id;
	t->expanded_object = obj;
	t->expanded_relation = (char *)node->relation;
	if (node->kind == PEMBA_EXPAND_LEAF) {
		Authzed__Api__V1__DirectSubjectSet *leaf =
		    arena_alloc(a, sizeof(*leaf));
		authzed__api__v1__direct_subject_set__init(leaf);
		leaf->n_subjects = node->nsubjects;
		leaf->subjects = arena_alloc(a, (node->nsubjects + 1) *
		                                    sizeof(*leaf->subjects));
		for (size_t i = 0; i < node->nsubjects; i++) {
			const pemba_subject_ref *s = &node->subjects[i];
			Authzed__Api__V1__SubjectReference *sr =
			    arena_alloc(a, sizeof(*sr));
			Authzed__Api__V1__ObjectReference *so =
			    arena_alloc(a, sizeof(*so));
			authzed__api__v1__subject_reference__init(sr);
			authzed__api__v1__object_reference__init(so);
			so->object_type = (char *)s->type;
			so->object_id = (char *)s->id;
			sr->object = so;
			if (s->relation && strcmp(s->relation, "...") != 0)
				sr->optional_relation = (char *)s->relation;
			leaf->subjects[i] = sr;
		}
		t->tree_type_case =
		    AUTHZED__API__V1__PERMISSION_RELATIONSHIP_TREE__TREE_TYPE_LEAF;
		t->leaf = leaf;
		return t;
	}
	Authzed__Api__V1__AlgebraicSubjectSet *set =
	    arena_alloc(a, sizeof(*set));
	authzed__api__v1__algebraic_subject_set__init(set);
	switch (node->kind) {
	case PEMBA_EXPAND_INTERSECTION:
		set->operation =
		    AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_INTERSECTION;
		break;
	case PEMBA_EXPAND_EXCLUSION:
		set->operation =
		    AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_EXCLUSION;
		break;
	default:
		set->operation =
		    AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_UNION;
	}
	set->n_children = node->nchildren;
	set->children =
	    arena_alloc(a, (node->nchildren + 1) * sizeof(*set->children));
	for (size_t i = 0; i < node->nchildren; i++)
		set->children[i] = tree_to_proto(a, node->children[i]);
	t->tree_type_case =
	    AUTHZED__API__V1__PERMISSION_RELATIONSHIP_TREE__TREE_TYPE_INTERMEDIATE;
	t->intermediate = set;
	return t;
}

static void handle_expand(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(
	        call, ctx,
	        &authzed__api__v1__expand_permission_tree_request__descriptor,
	        0, &req) != 0)
		return;
	const Authzed__Api__V1__ExpandPermissionTreeRequest *m =
	    (const void *)req.message;
	pemba_error err = {0};
	pemba_revision at = 0;
	pemba_expand_node *tree = NULL;
	int rc = 0;
	if (!m->resource)
		rc = error_set(&err, PEMBA_EINVAL,
		               "invalid argument: resource is required");
	if (rc == 0)
		rc = svc_deprecation_use(&req, m->resource->object_type,
		                         m->permission, true, &err);
	if (rc == 0)
		rc = svc_resolve_consistency(req.db, m->consistency, &at, &err);
	if (rc == 0)
		rc = pemba_expand(req.db, at, m->resource->object_type,
		                  m->resource->object_id, m->permission, &tree,
		                  NULL, &err);
	if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		arena *a = arena_create(0);
		Authzed__Api__V1__ExpandPermissionTreeResponse resp =
		    AUTHZED__API__V1__EXPAND_PERMISSION_TREE_RESPONSE__INIT;
		svc_zedtoken zt;
		resp.expanded_at = svc_zedtoken_make(&zt, req.db, at);
		resp.tree_root = tree_to_proto(a, tree);
		svc_reply(call, &resp.base);
		arena_destroy(a);
		pemba_expand_free(tree);
	}
	svc_end(&req);
}

/* ===================================================================== */
/* Table                                                                 */
/* ===================================================================== */

#define PS "/authzed.api.v1.PermissionsService/"

size_t svc_permissions_methods(svc_backend *b, grpc_method *out)
{
	size_t n = 0;
	out[n++] = (grpc_method){PS "WriteRelationships", GRPC_METHOD_UNARY,
	                         handle_write_relationships, b};
	out[n++] = (grpc_method){PS "DeleteRelationships", GRPC_METHOD_UNARY,
	                         handle_delete_relationships, b};
	out[n++] =
	    (grpc_method){PS "ReadRelationships", GRPC_METHOD_SERVER_STREAMING,
	                  handle_read_relationships, b};
	out[n++] = (grpc_method){PS "CheckPermission", GRPC_METHOD_UNARY,
	                         handle_check_permission, b};
	out[n++] = (grpc_method){PS "CheckBulkPermissions", GRPC_METHOD_UNARY,
	                         svc_handle_check_bulk, b};
	out[n++] =
	    (grpc_method){PS "LookupResources", GRPC_METHOD_SERVER_STREAMING,
	                  handle_lookup_resources, b};
	out[n++] =
	    (grpc_method){PS "LookupSubjects", GRPC_METHOD_SERVER_STREAMING,
	                  handle_lookup_subjects, b};
	out[n++] = (grpc_method){PS "ExpandPermissionTree", GRPC_METHOD_UNARY,
	                         handle_expand, b};
	out[n++] =
	    (grpc_method){PS "ImportBulkRelationships",
	                  GRPC_METHOD_CLIENT_STREAMING, svc_handle_import, b};
	out[n++] =
	    (grpc_method){PS "ExportBulkRelationships",
	                  GRPC_METHOD_SERVER_STREAMING, svc_handle_export, b};
	return n;
}
