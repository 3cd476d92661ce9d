/*
 * service_common.c -- plumbing shared by every service handler: reading and
 * unpacking requests, lending datastore handles, Consistency, ZedTokens and
 * the conversions between wire messages and pemba.h structures.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/foreign_token.h"
#include "api/pb_guard.h"
#include "api/reflection.h"
#include "api/services.h"
#include "api/struct_json.h"
#include "api/zedtoken.h"
#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

/* ===================================================================== */
/* Dispatch table                                                        */
/* ===================================================================== */

size_t services_methods(svc_backend *backend, grpc_method *out, size_t cap)
{
	grpc_method all[SERVICES_MAX_METHODS];
	size_t n = 0;
	n += svc_schema_methods(backend, all + n);
	n += svc_permissions_methods(backend, all + n);
	n += svc_experimental_methods(backend, all + n);
	n += svc_watch_methods(backend, all + n);
	n += svc_health_methods(backend, all + n);
	n += svc_migration_schema_methods(backend, all + n);
	n += svc_migration_admin_methods(backend, all + n);
	n += svc_migration_data_methods(backend, all + n);
	n += svc_mirror_methods(backend, all + n);
	n += svc_reflection_methods(backend, all + n);
	if (n > cap)
		n = cap;
	memcpy(out, all, n * sizeof(*out));
	return n;
}

const ProtobufCMessageDescriptor *svc_request_descriptor(const char *path)
{
	static const ProtobufCServiceDescriptor *const services[] = {
	    &authzed__api__v1__schema_service__descriptor,
	    &authzed__api__v1__permissions_service__descriptor,
	    &authzed__api__v1__experimental_service__descriptor,
	    &authzed__api__v1__watch_service__descriptor,
	    &grpc__health__v1__health__descriptor,
	    &pemba__v1__migration_service__descriptor,
	    &grpc__reflection__v1__server_reflection__descriptor,
	    &grpc__reflection__v1alpha__server_reflection__descriptor,
	};
	if (!path || path[0] != '/')
		return NULL;
	const char *slash = strchr(path + 1, '/');
	if (!slash)
		return NULL;
	size_t service_len = (size_t)(slash - path - 1);
	for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
		const ProtobufCServiceDescriptor *s = services[i];
		if (strlen(s->name) != service_len ||
		    memcmp(s->name, path + 1, service_len) != 0)
			continue;
		const ProtobufCMethodDescriptor *m =
		    protobuf_c_service_descriptor_get_method_by_name(s,
		                                                     slash + 1);
		return m ? m->input : NULL;
	}
	return NULL;
}

/* ===================================================================== */
/* Request bytes                                                         */
/* ===================================================================== */

int svc_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data,
               size_t len, ProtobufCMessage **out, pemba_error *err)
{
	*out = NULL;
	if (!data)
		data = (const uint8_t *)"";
	int rc = pb_guard_check(d, data, len, PB_GUARD_MAX_DEPTH, err);
	if (rc < 0)
		return rc;
	*out = protobuf_c_message_unpack(d, NULL, len, data);
	if (!*out)
		return error_set(err, PEMBA_EINVAL,
		                 "malformed %s: could not decode protobuf "
		                 "message",
		                 d->name);
	return 0;
}

int svc_read(grpc_call *call, const ProtobufCMessageDescriptor *d,
             ProtobufCMessage **out)
{
	*out = NULL;
	const uint8_t *data;
	size_t len;
	int rc = grpc_call_read(call, &data, &len);
	if (rc <= 0)
		return rc < 0 ? -1 : 0; /* < 0: the transport finished it */
	pemba_error err = {0};
	if (svc_unpack(d, data, len, out, &err) != 0) {
		svc_finish_error(call, &err);
		return -1;
	}
	return 1;
}

/* ===================================================================== */
/* Calls                                                                 */
/* ===================================================================== */

static int acquire_handle(svc_request *req)
{
	const char *message = NULL;
	int status = req->backend->acquire(req->backend->ctx, req->call,
	                                   req->flags, &req->db, &message);
	if (status != GRPC_STATUS_OK) {
		req->db = NULL;
		grpc_call_finish(req->call, status,
		                 message ? message : "no datastore available");
		return -1;
	}
	return 0;
}

int svc_begin(grpc_call *call, void *ctx, const ProtobufCMessageDescriptor *d,
              unsigned flags, svc_request *req)
{
	memset(req, 0, sizeof(*req));
	req->call = call;
	req->backend = ctx;
	req->flags = flags;
	const uint8_t *data;
	size_t len;
	int rc = grpc_call_read(call, &data, &len);
	if (rc < 0)
		return -1; /* the transport finished the call already */
	if (rc == 0) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
		                 "missing request message");
		return -1;
	}
	pemba_error err = {0};
	if (svc_unpack(d, data, len, &req->message, &err) != 0) {
		svc_finish_error(call, &err);
		return -1;
	}
	if (acquire_handle(req) != 0) {
		svc_end(req);
		return -1;
	}
	return 0;
}

int svc_begin_stream(grpc_call *call, void *ctx, unsigned flags,
                     svc_request *req)
{
	memset(req, 0, sizeof(*req));
	req->call = call;
	req->backend = ctx;
	req->flags = flags;
	return acquire_handle(req);
}

void svc_end(svc_request *req)
{
	if (req->db) {
		req->backend->release(req->backend->ctx, req->call, req->flags,
		                      req->db);
		req->db = NULL;
	}
	if (req->message) {
		protobuf_c_message_free_unpacked(req->message, NULL);
		req->message = NULL;
	}
}

/* ===================================================================== */
/* Event-driven streams                                                  */
/* ===================================================================== */

typedef struct svc_stream {
	svc_backend *backend;
	const svc_stream_ops *ops;
	void *state;
	ProtobufCMessage *message;
	unsigned flags;
	pemba_db *db; /* SVC_ACQUIRE_LONG streams: held for the stream */
} svc_stream;

static grpc_step stream_step(grpc_call *call, void *arg)
{
	svc_stream *st = arg;
	pemba_db *db = st->db;
	if (db == NULL) {
		const char *message = NULL;
		int status = st->backend->acquire(st->backend->ctx, call, 0,
		                                  &db, &message);
		if (status != GRPC_STATUS_OK) {
			grpc_call_finish(call, status,
			                 message ? message
			                         : "no datastore available");
			return GRPC_STEP_DONE;
		}
	}
	grpc_step r = st->ops->step(call, db, st->state);
	if (st->db == NULL)
		st->backend->release(st->backend->ctx, call, 0, db);
	return r;
}

static void stream_release(grpc_call *call, void *arg)
{
	svc_stream *st = arg;
	st->ops->free_state(call, st->db, st->state);
	if (st->db != NULL)
		st->backend->release(st->backend->ctx, call, st->flags, st->db);
	if (st->message != NULL)
		protobuf_c_message_free_unpacked(st->message, NULL);
	free(st);
}

void svc_stream_start(svc_request *req, const svc_stream_ops *ops, void *state)
{
	svc_stream *st = xcalloc(1, sizeof(*st));
	st->backend = req->backend;
	st->ops = ops;
	st->state = state;
	st->message = req->message;
	st->flags = req->flags;
	req->message = NULL;
	if (req->flags & SVC_ACQUIRE_LONG) {
		st->db = req->db;
		req->db = NULL;
	}
	grpc_call *call = req->call;
	svc_end(req); /* releases a short-lived handle */
	if (grpc_call_suspend(call, stream_step, stream_release, st) != 0)
		stream_release(call, st);
}

int64_t svc_step_begin(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool svc_step_expired(int64_t began)
{
	return svc_step_begin() - began > (int64_t)SVC_STEP_SLICE_MS * 1000000;
}

int svc_send(grpc_call *call, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t stack[512];
	uint8_t *buf = len <= sizeof(stack) ? stack : xmalloc(len);
	protobuf_c_message_pack(m, buf);
	int rc = grpc_call_send(call, buf, len);
	if (buf != stack)
		free(buf);
	return rc;
}

void svc_reply(grpc_call *call, const ProtobufCMessage *m)
{
	if (svc_send(call, m) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

int svc_refuse_write(svc_request *req)
{
	if (!req->backend->read_only)
		return 0;
	grpc_call_finish(req->call, GRPC_STATUS_UNAVAILABLE,
	                 "service read-only: this server was started with "
	                 "--read-only and refuses writes");
	return 1;
}

const char *svc_bearer_token(grpc_call *call, size_t *len)
{
	const char *value = grpc_call_metadata(call, "authorization");
	*len = 0;
	/* Exactly "Bearer <token>" (the scheme in any case), as gRPC's auth
	 * middleware splits it: white space is part of the token, so a key
	 * with a stray space does not match (UNAUTHENTICATED). */
	if (!value || strncasecmp(value, "bearer ", 7) != 0)
		return "";
	value += 7;
	*len = strlen(value);
	return value;
}

/* ===================================================================== */
/* Consistency and ZedTokens                                             */
/* ===================================================================== */

int svc_decode_token(pemba_db *db, const char *token, pemba_source_lookup mode,
                     pemba_revision *rev, bool *foreign, pemba_error *err)
{
	if (foreign)
		*foreign = false;
	if (!token || !token[0])
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: the ZedToken is empty");
	size_t len = strlen(token);
	zedtoken_info info;
	pemba_error perr = {0};
	if (zedtoken_parse(token, len, &info, &perr) == 0 &&
	    info.datastore_digest ==
	        zedtoken_datastore_digest(pemba_datastore_id(db)))
		return zedtoken_decode_db(db, token, len, rev, err);
	/* Another datastore's token (pemba's or SpiceDB's): honoured when
	 * this datastore was mirrored from it (src/core/positions.c). */
	foreign_token ft;
	if (foreign_token_decode(token, len, &ft, err) < 0)
		return err ? err->code : PEMBA_EINVAL;
	if (foreign)
		*foreign = true;
	int rc = pemba_resolve_source_position(db, &ft.pos, mode, rev, err);
	if (rc == PEMBA_EINVAL && strncmp(ft.source, "pemba:", 6) == 0)
		/* Never mirrored from it: the message tokens always gave. */
		return error_set(err, PEMBA_EINVAL,
		                 "ZedToken is for another datastore: it was "
		                 "issued by a different pemba datastore than "
		                 "the one serving this request");
	return rc;
}

static int decode_token(pemba_db *db, const Authzed__Api__V1__ZedToken *tok,
                        pemba_source_lookup mode, pemba_revision *rev,
                        pemba_error *err)
{
	return svc_decode_token(db, tok ? tok->token : NULL, mode, rev, NULL,
	                        err);
}

bool svc_consistency_is_head(const Authzed__Api__V1__Consistency *consistency)
{
	int kind = consistency ? (int)consistency->requirement_case : 0;
	return kind !=
	           AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT &&
	       kind !=
	           AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH;
}

int svc_resolve_consistency(pemba_db *db,
                            const Authzed__Api__V1__Consistency *consistency,
                            pemba_revision *at, pemba_error *err)
{
	pemba_revision head = 0, token = 0;
	int rc;
	int kind = consistency ? (int)consistency->requirement_case : 0;

	switch (kind) {
	case AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT:
		rc = decode_token(db, consistency->at_exact_snapshot,
		                  PEMBA_SOURCE_EXACT, &token, err);
		if (rc < 0)
			return rc;
		if (token != 0) {
			*at = token;
			return 0;
		}
		/* Revision 0 is the empty datastore: readable only while
		 * nothing was written (0 means "head" to pemba_*). */
		rc = pemba_head_revision(db, &head, err);
		if (rc < 0)
			return rc;
		if (head != 0)
			return error_set(
			    err, PEMBA_EREVISION,
			    "invalid revision: the ZedToken names "
			    "the empty datastore before its first "
			    "write, which cannot be read any more");
		*at = 0;
		return 0;
	case AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH:
		rc = decode_token(db, consistency->at_least_as_fresh,
		                  PEMBA_SOURCE_AT_LEAST, &token, err);
		if (rc < 0)
			return rc;
		rc = pemba_head_revision(db, &head, err);
		if (rc < 0)
			return rc;
		if (token > head) {
			/* Another process may have committed it a moment ago
			 * (file datastores); give it a short while. */
			rc =
			    pemba_wait_revision(db, token - 1, 100, &head, err);
			if (rc < 0)
				return rc;
			if (token > head)
				return error_set(
				    err, PEMBA_EREVISION,
				    "invalid revision: the ZedToken names "
				    "revision %llu, which is in the future "
				    "(head is %llu)",
				    (unsigned long long)token,
				    (unsigned long long)head);
			/* It exists now: the history check it skipped. */
			rc = decode_token(db, consistency->at_least_as_fresh,
			                  PEMBA_SOURCE_AT_LEAST, &token, err);
			if (rc < 0)
				return rc;
		}
		*at = head;
		return 0;
	default: /* minimize_latency, fully_consistent, none */
		rc = pemba_head_revision(db, &head, err);
		if (rc < 0)
			return rc;
		*at = head;
		return 0;
	}
}

Authzed__Api__V1__ZedToken *svc_zedtoken_make(svc_zedtoken *zt, pemba_db *db,
                                              pemba_revision rev)
{
	authzed__api__v1__zed_token__init(&zt->msg);
	zedtoken_encode_db(db, rev, zt->text);
	zt->msg.token = zt->text;
	return &zt->msg;
}

/* ===================================================================== */
/* Conversions                                                           */
/* ===================================================================== */

static const char *nonempty(const char *s)
{
	return s && s[0] ? s : NULL;
}

const char *svc_context_from_proto(const Google__Protobuf__Struct *context,
                                   arena *a)
{
	if (!context || context->n_fields == 0)
		return NULL;
	/* The request passed the nesting guard, so the recursion in
	 * api_json_struct is bounded. */
	strbuf sb;
	strbuf_init(&sb);
	api_json_struct(&sb, context);
	char *text = arena_strndup(a, sb.data, sb.len);
	strbuf_free(&sb);
	return text;
}

int svc_relationship_from_proto(const Authzed__Api__V1__Relationship *rel,
                                const char *where, arena *a,
                                pemba_relationship *out, pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!rel)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: %s: a relationship is "
		                 "required",
		                 where);
	if (!rel->resource)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: %s: resource is required",
		                 where);
	if (!rel->subject || !rel->subject->object)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: %s: subject is required",
		                 where);
	out->resource_type = rel->resource->object_type;
	out->resource_id = rel->resource->object_id;
	out->relation = rel->relation;
	out->subject_type = rel->subject->object->object_type;
	out->subject_id = rel->subject->object->object_id;
	out->subject_relation = nonempty(rel->subject->optional_relation);
	if (rel->optional_caveat) {
		/* SpiceDB requires a name whenever the message is present. */
		if (!nonempty(rel->optional_caveat->caveat_name))
			return error_set(
			    err, PEMBA_EINVAL,
			    "invalid argument: %s: optional_caveat "
			    "needs a caveat_name",
			    where);
		out->caveat_name = rel->optional_caveat->caveat_name;
		out->caveat_context =
		    svc_context_from_proto(rel->optional_caveat->context, a);
	}
	if (rel->optional_expires_at) {
		const Google__Protobuf__Timestamp *ts =
		    rel->optional_expires_at;
		/* Timestamp's valid range (years 1..9999); outside it the
		 * milliseconds could overflow. */
		if (ts->seconds < -62135596800LL ||
		    ts->seconds > 253402300799LL || ts->nanos < 0 ||
		    ts->nanos > 999999999)
			return error_set(err, PEMBA_EINVAL,
			                 "invalid argument: %s: "
			                 "optional_expires_at is not a valid "
			                 "timestamp",
			                 where);
		out->expiration_ms = ts->seconds * 1000 + ts->nanos / 1000000;
		if (out->expiration_ms == 0)
			out->expiration_ms = 1; /* 0 would mean "none" */
	}
	return 0;
}

Authzed__Api__V1__Relationship *
svc_relationship_to_proto(const pemba_relationship *rel)
{
	/* One allocation for the messages and the six strings after them
	 * (one malloc instead of seven per relationship: allocation was ~20%
	 * of an export's CPU, perf).  The caveat's name and context are
	 * allocated separately. */
	struct all {
		Authzed__Api__V1__Relationship rel;
		Authzed__Api__V1__ObjectReference resource;
		Authzed__Api__V1__SubjectReference subject;
		Authzed__Api__V1__ObjectReference subject_object;
		Google__Protobuf__Timestamp expires_at;
		Authzed__Api__V1__ContextualizedCaveat caveat;
	} * a;
	const char *srel = rel->subject_relation;
	const char *text[6] = {
	    rel->resource_type, rel->resource_id,
	    rel->relation,      rel->subject_type,
	    rel->subject_id,    srel && strcmp(srel, "...") != 0 ? srel : ""};
	size_t len[6], total = 0;
	for (int i = 0; i < 6; i++) {
		len[i] = text[i] ? strlen(text[i]) : 0;
		total += len[i] + 1;
	}
	a = xmalloc(sizeof(*a) + total);
	memset(a, 0, sizeof(*a));
	char *strings[6], *p = (char *)(a + 1);
	for (int i = 0; i < 6; i++) {
		strings[i] = p;
		memcpy(p, text[i] ? text[i] : "", len[i]);
		p[len[i]] = '\0';
		p += len[i] + 1;
	}
	authzed__api__v1__relationship__init(&a->rel);
	authzed__api__v1__object_reference__init(&a->resource);
	authzed__api__v1__subject_reference__init(&a->subject);
	authzed__api__v1__object_reference__init(&a->subject_object);
	a->resource.object_type = strings[0];
	a->resource.object_id = strings[1];
	a->rel.relation = strings[2];
	a->subject_object.object_type = strings[3];
	a->subject_object.object_id = strings[4];
	a->subject.optional_relation = strings[5];
	a->subject.object = &a->subject_object;
	a->rel.resource = &a->resource;
	a->rel.subject = &a->subject;
	if (rel->expiration_ms != 0) {
		/* Timestamp nanos are never negative: floor the seconds. */
		int64_t ms = rel->expiration_ms, sec = ms / 1000;
		int64_t rest = ms % 1000;
		if (rest < 0)
			sec--, rest += 1000;
		google__protobuf__timestamp__init(&a->expires_at);
		a->expires_at.seconds = sec;
		a->expires_at.nanos = (int32_t)(rest * 1000000);
		a->rel.optional_expires_at = &a->expires_at;
	}
	if (nonempty(rel->caveat_name)) {
		authzed__api__v1__contextualized_caveat__init(&a->caveat);
		a->caveat.caveat_name = xstrdup(rel->caveat_name);
		/* Stored contexts were validated as JSON objects when written;
		 * should one not convert, the caveat still goes out, with an
		 * empty context, rather than failing the whole read. */
		const char *ctx = rel->caveat_context;
		if (nonempty(ctx))
			a->caveat.context =
			    api_struct_from_json(ctx, strlen(ctx));
		if (!a->caveat.context) {
			a->caveat.context = xmalloc(sizeof(*a->caveat.context));
			google__protobuf__struct__init(a->caveat.context);
		}
		a->rel.optional_caveat = &a->caveat;
	}
	return &a->rel;
}

void svc_relationship_free(Authzed__Api__V1__Relationship *rel)
{
	if (!rel)
		return;
	/* The strings live in the single allocation. */
	if (rel->optional_caveat) {
		free(rel->optional_caveat->caveat_name);
		api_struct_free(rel->optional_caveat->context);
	}
	free(rel); /* first member of the single allocation */
}

int svc_filter_from_proto(const Authzed__Api__V1__RelationshipFilter *f,
                          bool allow_no_resource_type, pemba_filter *out,
                          const char **prefix_out, pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	*prefix_out = "";
	if (!f)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: a relationship filter is "
		                 "required");
	out->resource_type = nonempty(f->resource_type);
	out->resource_id = nonempty(f->optional_resource_id);
	out->relation = nonempty(f->optional_relation);
	if (nonempty(f->optional_resource_id_prefix)) {
		if (out->resource_id)
			return error_set(err, PEMBA_EINVAL,
			                 "invalid argument: the relationship "
			                 "filter provided "
			                 "is not valid: cannot specify both "
			                 "optional_resource_id and "
			                 "optional_resource_id_prefix");
		*prefix_out = f->optional_resource_id_prefix;
	}
	const Authzed__Api__V1__SubjectFilter *s = f->optional_subject_filter;
	if (s) {
		if (!nonempty(s->subject_type))
			return error_set(err, PEMBA_EINVAL,
			                 "invalid argument: the relationship "
			                 "filter provided is not valid: the "
			                 "subject filter needs a subject_type");
		out->subject_type = s->subject_type;
		out->subject_id = nonempty(s->optional_subject_id);
		if (s->optional_relation)
			out->subject_relation =
			    s->optional_relation->relation
			        ? s->optional_relation->relation
			        : "";
	}
	if (!out->resource_type && !allow_no_resource_type)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: the relationship filter "
		                 "provided is not valid: resource_type is "
		                 "required");
	if (!out->resource_type && !out->subject_type && !out->resource_id &&
	    !out->relation && !(*prefix_out)[0])
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: the relationship filter "
		                 "provided is not valid: at least one field "
		                 "must be specified");
	return 0;
}

int svc_preconditions_from_proto(Authzed__Api__V1__Precondition *const *pre,
                                 size_t n, pemba_precondition *out,
                                 pemba_error *err)
{
	for (size_t i = 0; i < n; i++) {
		const char *prefix;
		switch (pre[i]->operation) {
		case AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_MATCH:
			out[i].op = PEMBA_PRECONDITION_MUST_MATCH;
			break;
		case AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_NOT_MATCH:
			out[i].op = PEMBA_PRECONDITION_MUST_NOT_MATCH;
			break;
		default:
			return error_set(err, PEMBA_EINVAL,
			                 "invalid argument: precondition %zu: "
			                 "operation must be MUST_MATCH or "
			                 "MUST_NOT_MATCH",
			                 i);
		}
		if (!pre[i]->filter)
			return error_set(
			    err, PEMBA_EINVAL,
			    "invalid argument: one of the specified "
			    "preconditions is empty");
		int rc = svc_filter_from_proto(pre[i]->filter, false,
		                               &out[i].filter, &prefix, err);
		if (rc < 0)
			return rc;
		if (prefix[0])
			return error_set(err, PEMBA_EUNSUPPORTED,
			                 "preconditions with "
			                 "optional_resource_id_prefix are not "
			                 "supported yet");
	}
	return 0;
}
