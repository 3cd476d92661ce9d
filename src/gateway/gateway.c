/*
 * gateway.c -- SpiceDB's grpc-gateway mapping over libmicrohttpd (see
 * gateway.h and README.md).
 *
 * One MHD thread per connection: a request is read whole (at most
 * max_body bytes), its JSON turned into the gRPC request's bytes
 * (pb_json), and the call made on a pooled blocking gRPC client connected
 * to the server's own listener, with the request's Authorization header
 * as the call's metadata.  The answer goes back as proto3 JSON; a gRPC
 * error as {"code", "message", "details"} with grpc-gateway's HTTP status.
 * Server-streaming calls run on a producer thread of their own that
 * queues newline-delimited {"result": ...} objects for MHD to send
 * (chunked), and a final {"error": ...} when the stream fails.
 *
 * HTTP/2 (h2c prior knowledge, ALPN h2 with TLS) is served on the same
 * port with nghttp2: see the HTTP/2 section below and README.md.
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "api/pb_json.h"
#include "api/struct_json.h"
#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "gateway/gateway.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define JSON_FLAGS_OUT PBJ_EMIT_UNPOPULATED
/* grpc-gateway's default unmarshaler (SpiceDB keeps it): DiscardUnknown. */
#define JSON_FLAGS_IN PBJ_DISCARD_UNKNOWN

/* ===================================================================== */
/* Routes (google.api.http annotations of authzed/api v1; all POST, "*")  */
/* ===================================================================== */

typedef enum route_kind {
	R_UNARY,
	R_SERVER_STREAM,
	R_CLIENT_STREAM
} route_kind;

typedef struct route {
	const char *http_path;
	const char *grpc_path;
	route_kind kind;
	const ProtobufCMessageDescriptor *req;
	const ProtobufCMessageDescriptor *resp;
	const char *method; /* NULL: POST */
} route;

#define PS "/authzed.api.v1.PermissionsService/"
#define SS "/authzed.api.v1.SchemaService/"
#define XS "/authzed.api.v1.ExperimentalService/"
#define D(x) &authzed__api__v1__##x##__descriptor
static const route routes[] = {
    {"/v1/relationships/read", PS "ReadRelationships", R_SERVER_STREAM,
     D(read_relationships_request), D(read_relationships_response), NULL},
    {"/v1/relationships/write", PS "WriteRelationships", R_UNARY,
     D(write_relationships_request), D(write_relationships_response), NULL},
    {"/v1/relationships/delete", PS "DeleteRelationships", R_UNARY,
     D(delete_relationships_request), D(delete_relationships_response), NULL},
    {"/v1/permissions/check", PS "CheckPermission", R_UNARY,
     D(check_permission_request), D(check_permission_response), NULL},
    {"/v1/permissions/checkbulk", PS "CheckBulkPermissions", R_UNARY,
     D(check_bulk_permissions_request), D(check_bulk_permissions_response),
     NULL},
    {"/v1/permissions/expand", PS "ExpandPermissionTree", R_UNARY,
     D(expand_permission_tree_request), D(expand_permission_tree_response),
     NULL},
    {"/v1/permissions/resources", PS "LookupResources", R_SERVER_STREAM,
     D(lookup_resources_request), D(lookup_resources_response), NULL},
    {"/v1/permissions/subjects", PS "LookupSubjects", R_SERVER_STREAM,
     D(lookup_subjects_request), D(lookup_subjects_response), NULL},
    {"/v1/relationships/importbulk", PS "ImportBulkRelationships",
     R_CLIENT_STREAM, D(import_bulk_relationships_request),
     D(import_bulk_relationships_response), NULL},
    {"/v1/relationships/exportbulk", PS "ExportBulkRelationships",
     R_SERVER_STREAM, D(export_bulk_relationships_request),
     D(export_bulk_relationships_response), NULL},
    {"/v1/schema/read", SS "ReadSchema", R_UNARY, D(read_schema_request),
     D(read_schema_response), NULL},
    {"/v1/schema/write", SS "WriteSchema", R_UNARY, D(write_schema_request),
     D(write_schema_response), NULL},
    {"/v1/schema/reflectschema", SS "ReflectSchema", R_UNARY,
     D(reflect_schema_request), D(reflect_schema_response), NULL},
    {"/v1/schema/permissions/computable", SS "ComputablePermissions", R_UNARY,
     D(computable_permissions_request), D(computable_permissions_response),
     NULL},
    {"/v1/schema/permissions/dependent", SS "DependentRelations", R_UNARY,
     D(dependent_relations_request), D(dependent_relations_response), NULL},
    {"/v1/schema/diffschema", SS "DiffSchema", R_UNARY, D(diff_schema_request),
     D(diff_schema_response), NULL},
    {"/v1/watch", "/authzed.api.v1.WatchService/Watch", R_SERVER_STREAM,
     D(watch_request), D(watch_response), NULL},
    {"/v1/experimental/relationships/bulkimport", XS "BulkImportRelationships",
     R_CLIENT_STREAM, D(bulk_import_relationships_request),
     D(bulk_import_relationships_response), NULL},
    {"/v1/experimental/relationships/bulkexport", XS "BulkExportRelationships",
     R_SERVER_STREAM, D(bulk_export_relationships_request),
     D(bulk_export_relationships_response), NULL},
    {"/v1/experimental/permissions/bulkcheckpermission",
     XS "BulkCheckPermission", R_UNARY, D(bulk_check_permission_request),
     D(bulk_check_permission_response), NULL},
    {"/v1/experimental/reflectschema", XS "ExperimentalReflectSchema", R_UNARY,
     D(experimental_reflect_schema_request),
     D(experimental_reflect_schema_response), NULL},
    {"/v1/experimental/permissions/computable",
     XS "ExperimentalComputablePermissions", R_UNARY,
     D(experimental_computable_permissions_request),
     D(experimental_computable_permissions_response), NULL},
    {"/v1/experimental/permissions/dependent",
     XS "ExperimentalDependentRelations", R_UNARY,
     D(experimental_dependent_relations_request),
     D(experimental_dependent_relations_response), NULL},
    {"/v1/experimental/diffschema", XS "ExperimentalDiffSchema", R_UNARY,
     D(experimental_diff_schema_request), D(experimental_diff_schema_response),
     NULL},
    {"/v1/experimental/registerrelationshipcounter",
     XS "ExperimentalRegisterRelationshipCounter", R_UNARY,
     D(experimental_register_relationship_counter_request),
     D(experimental_register_relationship_counter_response), NULL},
    {"/v1/experimental/countrelationships", XS "ExperimentalCountRelationships",
     R_UNARY, D(experimental_count_relationships_request),
     D(experimental_count_relationships_response), NULL},
    {"/v1/experimental/unregisterrelationshipcounter",
     XS "ExperimentalUnregisterRelationshipCounter", R_UNARY,
     D(experimental_unregister_relationship_counter_request),
     D(experimental_unregister_relationship_counter_response), NULL},
    /* grpc-gateway's WithHealthzEndpoint, as SpiceDB's gateway has it. */
    {"/healthz", "/grpc.health.v1.Health/Check", R_UNARY,
     &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, "GET"},
};
#undef D

static const route *route_of(const char *path)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (strcmp(routes[i].http_path, path) == 0)
			return &routes[i];
	return NULL;
}

/* grpc-gateway's runtime.HTTPStatusFromCode. */
int gateway_http_status(int code)
{
	switch (code) {
	case GRPC_STATUS_OK:
		return 200;
	case GRPC_STATUS_CANCELLED:
		return 499;
	case GRPC_STATUS_INVALID_ARGUMENT:
	case GRPC_STATUS_FAILED_PRECONDITION:
	case GRPC_STATUS_OUT_OF_RANGE:
		return 400;
	case GRPC_STATUS_DEADLINE_EXCEEDED:
		return 504;
	case GRPC_STATUS_NOT_FOUND:
		return 404;
	case GRPC_STATUS_ALREADY_EXISTS:
	case GRPC_STATUS_ABORTED:
		return 409;
	case GRPC_STATUS_PERMISSION_DENIED:
		return 403;
	case GRPC_STATUS_UNAUTHENTICATED:
		return 401;
	case GRPC_STATUS_RESOURCE_EXHAUSTED:
		return 429;
	case GRPC_STATUS_UNIMPLEMENTED:
		return 501;
	case GRPC_STATUS_UNAVAILABLE:
		return 503;
	default: /* UNKNOWN, INTERNAL, DATA_LOSS */
		return 500;
	}
}

/* ===================================================================== */
/* The gateway                                                           */
/* ===================================================================== */

/* Threads serving HTTP/2 unary and client-streaming requests. */
#define H2_WORKERS 64

struct gateway {
	gateway_options o;
	char *upstream;
	struct MHD_Daemon *mhd;
	SSL_CTX *ssl_ctx; /* HTTPS: the gateway does TLS (ALPN h2, http/1.1) */
	int port;
	pthread_mutex_t mu;
	grpc_client **idle;
	size_t n_idle;
	pthread_mutex_t streams_mu;
	pthread_cond_t streams_cv;
	size_t n_streams; /* producer threads alive */
	bool stopping;
	int listen_fd;
	int stop_pipe[2]; /* readable once stopping */
	pthread_t acceptor;
	bool acceptor_started;
	size_t n_threads; /* sniffing / HTTP/2 connection threads */
	size_t n_h2;      /* connections sniffing or served as HTTP/2 */
	size_t n_jobs;    /* HTTP/2 requests in progress */
	/* The HTTP/2 worker pool (unary and client-streaming requests). */
	pthread_mutex_t pool_mu;
	pthread_cond_t pool_cv;
	struct h2_req *pool_head, *pool_tail;
	bool pool_stop;
	pthread_t pool[H2_WORKERS];
	size_t n_pool;
};

/* HTTP/2 requests in progress over all connections; more are answered
 * 429 at once. */
#define H2_MAX_JOBS 1024

static void gw_log(gateway *g, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void gw_log(gateway *g, int level, const char *fmt, ...)
{
	if (!g->o.log)
		return;
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	g->o.log(g->o.log_ctx, level, text);
}

/* --- upstream connections ---------------------------------------------- */

static grpc_client *client_get(gateway *g, grpc_status *st)
{
	pthread_mutex_lock(&g->mu);
	grpc_client *c = g->n_idle ? g->idle[--g->n_idle] : NULL;
	pthread_mutex_unlock(&g->mu);
	if (c)
		return c;
	grpc_client_options co;
	grpc_client_options_init(&co);
	co.target = g->upstream;
	co.tls = g->o.upstream_tls;
	co.insecure_skip_verify = true;
	pemba_error err = {0};
	if (grpc_client_connect(&co, &c, &err) < 0) {
		st->code = GRPC_STATUS_UNAVAILABLE;
		st->message = xstrdup(err.message);
		return NULL;
	}
	return c;
}

/* Back to the pool, unless the call broke the connection. */
static void client_put(gateway *g, grpc_client *c, int code)
{
	if (!c)
		return;
	if (code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_INTERNAL ||
	    code == GRPC_STATUS_DEADLINE_EXCEEDED ||
	    code == GRPC_STATUS_CANCELLED) {
		grpc_client_close(c);
		return;
	}
	pthread_mutex_lock(&g->mu);
	if (g->n_idle < g->o.max_idle_upstream && !g->stopping) {
		g->idle[g->n_idle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&g->mu);
	grpc_client_close(c);
}

/* --- error bodies -------------------------------------------------------- */

/* {"code":N,"message":"...","details":[...]} from a call's status; the
 * details are those of its grpc-status-details-bin, when it has one. */
static void status_json(strbuf *sb, const grpc_status *st)
{
	const char *msg = st->message ? st->message : "";
	strbuf_printf(sb, "{\"code\":%d,\"message\":", st->code);
	api_json_string(sb, msg, strlen(msg));
	strbuf_puts(sb, ",\"details\":[");
	Google__Rpc__Status *rs =
	    st->details ? google__rpc__status__unpack(NULL, st->details_len,
	                                              st->details)
	                : NULL;
	if (rs) {
		for (size_t i = 0; i < rs->n_details; i++) {
			if (i)
				strbuf_putc(sb, ',');
			pbj_encode(sb, &rs->details[i]->base, JSON_FLAGS_OUT);
		}
		google__rpc__status__free_unpacked(rs, NULL);
	}
	strbuf_puts(sb, "]}");
}

/* ===================================================================== */
/* HTTP plumbing                                                         */
/* ===================================================================== */

typedef struct req {
	const route *route;
	strbuf body;
	bool too_big;
	bool answered;
} req;

static enum MHD_Result send_text(struct MHD_Connection *conn, int status,
                                 const char *text, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    len, (void *)text, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        "application/json");
	enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

/* A locally decided error, as grpc-gateway writes it. */
static enum MHD_Result send_error(struct MHD_Connection *conn, int code,
                                  int http_status, const char *message)
{
	grpc_status st = {.code = code, .message = (char *)message};
	strbuf sb;
	strbuf_init(&sb);
	status_json(&sb, &st);
	enum MHD_Result r = send_text(conn, http_status, sb.data, sb.len);
	strbuf_free(&sb);
	return r;
}

/* The metadata forwarded: authorization (as grpc-gateway forwards it). */
static size_t request_metadata(struct MHD_Connection *conn, grpc_metadata md[2],
                               int *timeout_ms)
{
	size_t n = 0;
	const char *auth =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	if (auth)
		md[n++] = (grpc_metadata){"authorization", auth, 0};
	*timeout_ms = 0;
	const char *to =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Grpc-Timeout");
	int64_t ns;
	if (to && grpc_parse_timeout(to, &ns) == 0) {
		int64_t ms = ns / 1000000;
		*timeout_ms = ms < 1 ? 1 : ms > 86400000 ? 86400000 : (int)ms;
	}
	return n;
}

/* --- unary and client streaming (transport-neutral) -------------------- */

/* The answer to a finished call: 200 and the response's JSON, or the
 * error body with its mapped status.  Returns the HTTP status. */
static int answer(const route *rt, const grpc_status *st, const uint8_t *resp,
                  size_t resp_len, strbuf *out)
{
	if (st->code != GRPC_STATUS_OK) {
		status_json(out, st);
		return gateway_http_status(st->code);
	}
	pemba_error err = {0};
	if (pbj_encode_bytes(out, rt->resp, resp ? resp : (const uint8_t *)"",
	                     resp_len, JSON_FLAGS_OUT, &err) < 0) {
		grpc_status ie = {.code = GRPC_STATUS_INTERNAL,
		                  .message = err.message};
		strbuf_reset(out);
		status_json(out, &ie);
		return 500;
	}
	if (rt->resp == &grpc__health__v1__health_check_response__descriptor &&
	    !strstr(out->data, "\"SERVING\"")) {
		grpc_status un = {.code = GRPC_STATUS_UNAVAILABLE,
		                  .message = out->data};
		strbuf tmp;
		strbuf_init(&tmp);
		status_json(&tmp, &un);
		strbuf_reset(out);
		strbuf_append(out, tmp.data, tmp.len);
		strbuf_free(&tmp);
		return 503;
	}
	return 200;
}

/* A locally decided error body; returns http_status. */
static int local_error(strbuf *out, int code, int http_status,
                       const char *message)
{
	grpc_status st = {.code = code, .message = (char *)message};
	status_json(out, &st);
	return http_status;
}

/* Where a call's upstream connection is published while the call runs, so
 * that another thread can abort it (an HTTP/2 stream reset): NULL for
 * HTTP/1.1. */
typedef struct abort_slot {
	pthread_mutex_t *mu;
	grpc_client **client;
	const bool *cancelled;
} abort_slot;

/* Publishes c; false when the call is cancelled already. */
static bool slot_enter(const abort_slot *a, grpc_client *c)
{
	if (!a)
		return true;
	pthread_mutex_lock(a->mu);
	*a->client = c;
	bool go = !*a->cancelled;
	pthread_mutex_unlock(a->mu);
	return go;
}

/* Withdraws it; true when the call was cancelled meanwhile (the
 * connection may be aborted: not to be reused). */
static bool slot_leave(const abort_slot *a)
{
	if (!a)
		return false;
	pthread_mutex_lock(a->mu);
	*a->client = NULL;
	bool cancelled = *a->cancelled;
	pthread_mutex_unlock(a->mu);
	return cancelled;
}

static int unary_call(gateway *g, const route *rt, const strbuf *wire,
                      const grpc_metadata *md, size_t nmd, int timeout_ms,
                      const abort_slot *slot, strbuf *out)
{
	grpc_status st = {0};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_client *c = client_get(g, &st);
	if (c) {
		if (slot_enter(slot, c))
			grpc_client_unary(c, rt->grpc_path, md, nmd, timeout_ms,
			                  wire->data, wire->len, &resp,
			                  &resp_len, &st);
		else
			st.code = GRPC_STATUS_CANCELLED;
		client_put(g, c,
		           slot_leave(slot) ? GRPC_STATUS_CANCELLED : st.code);
	}
	int http = answer(rt, &st, resp, resp_len, out);
	free(resp);
	grpc_status_clear(&st);
	return http;
}

typedef struct cs_ctx {
	strbuf *msgs;
	size_t n, next;
} cs_ctx;

static int cs_next(void *ctx, const void **data, size_t *len)
{
	cs_ctx *c = ctx;
	if (c->next == c->n)
		return 0;
	*data = c->msgs[c->next].data;
	*len = c->msgs[c->next].len;
	c->next++;
	return 1;
}

/* A client-streaming call: the body is consecutive JSON objects, one
 * request each. */
static int client_stream_call(gateway *g, const route *rt, const strbuf *body,
                              const grpc_metadata *md, size_t nmd,
                              int timeout_ms, const abort_slot *slot,
                              strbuf *out)
{
	cs_ctx cs = {0};
	size_t cap = 0, pos = 0;
	int http;
	while (pos < body->len) {
		while (pos < body->len && strchr(" \t\r\n", body->data[pos]))
			pos++;
		if (pos == body->len)
			break;
		json_error_t je;
		json_t *j = json_loadb(body->data + pos, body->len - pos,
		                       JSON_DISABLE_EOF_CHECK, &je);
		char msg[1200];
		if (!j) {
			snprintf(msg, sizeof(msg),
			         "malformed JSON in request %zu: %s", cs.n + 1,
			         je.text);
			http = local_error(out, GRPC_STATUS_INVALID_ARGUMENT,
			                   400, msg);
			goto done;
		}
		if (cs.n == cap) {
			cap = cap ? cap * 2 : 8;
			cs.msgs = xrealloc(cs.msgs, cap * sizeof(*cs.msgs));
		}
		strbuf_init(&cs.msgs[cs.n]);
		pemba_error err = {0};
		int rc = pbj_decode_json(rt->req, j, JSON_FLAGS_IN,
		                         &cs.msgs[cs.n], &err);
		cs.n++;
		json_decref(j);
		if (rc < 0) {
			snprintf(msg, sizeof(msg), "request %zu: %s", cs.n,
			         err.message);
			http = local_error(out, GRPC_STATUS_INVALID_ARGUMENT,
			                   400, msg);
			goto done;
		}
		pos += je.position;
	}
	grpc_status st = {0};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_client *c = client_get(g, &st);
	if (c) {
		if (slot_enter(slot, c))
			grpc_client_streaming(c, rt->grpc_path, md, nmd,
			                      timeout_ms, cs_next, &cs, NULL,
			                      NULL, &resp, &resp_len, &st);
		else
			st.code = GRPC_STATUS_CANCELLED;
		client_put(g, c,
		           slot_leave(slot) ? GRPC_STATUS_CANCELLED : st.code);
	}
	http = answer(rt, &st, resp, resp_len, out);
	free(resp);
	grpc_status_clear(&st);
done:
	for (size_t i = 0; i < cs.n; i++)
		strbuf_free(&cs.msgs[i]);
	free(cs.msgs);
	return http;
}

static enum MHD_Result do_call(gateway *g, struct MHD_Connection *conn,
                               const route *rt, const strbuf *data)
{
	grpc_metadata md[2];
	int timeout_ms;
	size_t nmd = request_metadata(conn, md, &timeout_ms);
	strbuf out;
	strbuf_init(&out);
	int http =
	    rt->kind == R_UNARY
	        ? unary_call(g, rt, data, md, nmd, timeout_ms, NULL, &out)
	        : client_stream_call(g, rt, data, md, nmd, timeout_ms, NULL,
	                             &out);
	enum MHD_Result r = send_text(conn, http, out.data, out.len);
	strbuf_free(&out);
	return r;
}

/* --- server streaming ---------------------------------------------------- */

#define STREAM_HIGH_WATER (1u << 20)

typedef struct stream {
	gateway *g;
	const route *rt;
	struct MHD_Connection *conn;
	int fd;
	strbuf wire;
	grpc_metadata md[2];
	size_t nmd;
	char *auth; /* copy of the Authorization value */
	int timeout_ms;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	strbuf out;      /* queued NDJSON not yet handed to MHD */
	size_t out_off;  /* bytes of out already handed over */
	size_t messages; /* responses received */
	bool done;       /* the call ended; st holds its status */
	bool cancelled;  /* the HTTP side went away */
	bool error_sent;
	grpc_client *client; /* while the call runs */
	grpc_status st;
} stream;

static int on_stream_message(void *ctx, const uint8_t *data, size_t len)
{
	stream *s = ctx;
	strbuf sb;
	strbuf_init(&sb);
	strbuf_puts(&sb, "{\"result\":");
	pemba_error err = {0};
	if (pbj_encode_bytes(&sb, s->rt->resp, data, len, JSON_FLAGS_OUT,
	                     &err) < 0)
		strbuf_puts(&sb, "null");
	strbuf_puts(&sb, "}\n");
	pthread_mutex_lock(&s->mu);
	while (!s->cancelled && s->out.len - s->out_off > STREAM_HIGH_WATER)
		pthread_cond_wait(&s->cv, &s->mu);
	bool cancelled = s->cancelled;
	if (!cancelled) {
		strbuf_append(&s->out, sb.data, sb.len);
		s->messages++;
		pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	strbuf_free(&sb);
	return cancelled ? 1 : 0;
}

static void *stream_main(void *arg)
{
	stream *s = arg;
	grpc_status st = {0};
	grpc_client *c = client_get(s->g, &st);
	if (c) {
		pthread_mutex_lock(&s->mu);
		s->client = c;
		bool cancelled = s->cancelled;
		pthread_mutex_unlock(&s->mu);
		if (!cancelled)
			grpc_client_server_streaming(c, s->rt->grpc_path, s->md,
			                             s->nmd, s->timeout_ms,
			                             s->wire.data, s->wire.len,
			                             on_stream_message, s, &st);
		else
			st.code = GRPC_STATUS_CANCELLED;
		pthread_mutex_lock(&s->mu);
		s->client = NULL;
		cancelled = s->cancelled;
		pthread_mutex_unlock(&s->mu);
		/* An aborted connection is not reused. */
		client_put(s->g, c,
		           cancelled ? GRPC_STATUS_CANCELLED : st.code);
	}
	pthread_mutex_lock(&s->mu);
	s->st = st;
	s->done = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void stream_free(stream *s)
{
	pthread_mutex_lock(&s->mu);
	s->cancelled = true;
	if (s->client)
		grpc_client_abort(s->client);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	gateway *g = s->g;
	pthread_mutex_lock(&g->streams_mu);
	g->n_streams--;
	pthread_cond_broadcast(&g->streams_cv);
	pthread_mutex_unlock(&g->streams_mu);
	grpc_status_clear(&s->st);
	strbuf_free(&s->wire);
	strbuf_free(&s->out);
	free(s->auth);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

/* True when the client closed its side (or the socket failed). */
static bool peer_gone(int fd)
{
	if (fd < 0)
		return false;
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};
	if (poll(&p, 1, 0) <= 0)
		return false;
	return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	stream *s = cls;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (s->out.len > s->out_off) {
			size_t n = s->out.len - s->out_off;
			if (n > max)
				n = max;
			memcpy(buf, s->out.data + s->out_off, n);
			s->out_off += n;
			if (s->out_off == s->out.len) {
				strbuf_reset(&s->out);
				s->out_off = 0;
			}
			pthread_cond_broadcast(&s->cv);
			pthread_mutex_unlock(&s->mu);
			return (ssize_t)n;
		}
		if (s->done) {
			if (s->st.code != GRPC_STATUS_OK && !s->error_sent) {
				s->error_sent = true;
				strbuf_puts(&s->out, "{\"error\":");
				status_json(&s->out, &s->st);
				strbuf_puts(&s->out, "}\n");
				continue;
			}
			pthread_mutex_unlock(&s->mu);
			return MHD_CONTENT_READER_END_OF_STREAM;
		}
		if (__atomic_load_n(&s->g->stopping, __ATOMIC_RELAXED) ||
		    peer_gone(s->fd)) {
			pthread_mutex_unlock(&s->mu);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000000L;
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec++, ts.tv_nsec -= 1000000000L;
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
}

static void stream_release(void *cls)
{
	stream_free(cls);
}

static enum MHD_Result do_server_stream(gateway *g, struct MHD_Connection *conn,
                                        const route *rt, strbuf *wire)
{
	stream *s = xcalloc(1, sizeof(*s));
	s->g = g;
	s->rt = rt;
	s->conn = conn;
	s->wire = *wire;
	strbuf_init(wire);
	strbuf_init(&s->out);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->nmd = request_metadata(conn, s->md, &s->timeout_ms);
	if (s->nmd) {
		s->auth = xstrdup(s->md[0].value);
		s->md[0].value = s->auth;
	}
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	s->fd = ci ? ci->connect_fd : -1;
	pthread_mutex_lock(&g->streams_mu);
	g->n_streams++;
	pthread_mutex_unlock(&g->streams_mu);
	if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
		pthread_mutex_lock(&g->streams_mu);
		g->n_streams--;
		pthread_mutex_unlock(&g->streams_mu);
		strbuf_free(&s->wire);
		strbuf_free(&s->out);
		free(s->auth);
		free(s);
		return send_error(conn, GRPC_STATUS_RESOURCE_EXHAUSTED, 429,
		                  "could not start a stream");
	}
	/* As grpc-gateway: a failure before the first response is answered
	 * with its own HTTP status (and the {"error": ...} chunk). */
	pthread_mutex_lock(&s->mu);
	while (!s->done && s->messages == 0) {
		if (__atomic_load_n(&g->stopping, __ATOMIC_RELAXED) ||
		    peer_gone(s->fd)) {
			/* The client left (or the server stops) before the
			 * first response: end the call, close. */
			pthread_mutex_unlock(&s->mu);
			stream_free(s);
			return MHD_NO;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000000L;
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec++, ts.tv_nsec -= 1000000000L;
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	bool early_error =
	    s->messages == 0 && s->done && s->st.code != GRPC_STATUS_OK;
	pthread_mutex_unlock(&s->mu);
	if (early_error) {
		strbuf sb;
		strbuf_init(&sb);
		strbuf_puts(&sb, "{\"error\":");
		status_json(&sb, &s->st);
		strbuf_puts(&sb, "}\n");
		enum MHD_Result r = send_text(
		    conn, gateway_http_status(s->st.code), sb.data, sb.len);
		strbuf_free(&sb);
		stream_free(s);
		return r;
	}
	struct MHD_Response *resp = MHD_create_response_from_callback(
	    MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, s, stream_release);
	if (!resp) {
		stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        "application/json");
	enum MHD_Result r = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	return r;
}

/* --- the access handler -------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
	gateway *g = cls;
	req *r = *con_cls;
	if (!r) {
		r = xcalloc(1, sizeof(*r));
		strbuf_init(&r->body);
		*con_cls = r;
		r->route = route_of(url);
		if (!r->route) {
			r->answered = true;
			return send_error(conn, GRPC_STATUS_NOT_FOUND, 404,
			                  "Not Found");
		}
		if (strcmp(method,
		           r->route->method ? r->route->method : "POST") != 0) {
			r->answered = true;
			return send_error(conn, GRPC_STATUS_UNIMPLEMENTED, 501,
			                  "Method Not Allowed");
		}
		const char *cl = MHD_lookup_connection_value(
		    conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > g->o.max_body) {
			r->answered = true;
			return send_error(conn, GRPC_STATUS_RESOURCE_EXHAUSTED,
			                  413, "request body too large");
		}
		return MHD_YES;
	}
	if (r->answered) {
		*upload_size = 0; /* discard the rest */
		return MHD_YES;
	}
	if (*upload_size) {
		if (r->body.len + *upload_size > g->o.max_body)
			r->too_big = true;
		else
			strbuf_append(&r->body, upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	r->answered = true;
	if (r->too_big)
		return send_error(conn, GRPC_STATUS_RESOURCE_EXHAUSTED, 413,
		                  "request body too large");
	const route *rt = r->route;
	if (rt->kind == R_CLIENT_STREAM)
		return do_call(g, conn, rt, &r->body);
	strbuf wire;
	strbuf_init(&wire);
	pemba_error err = {0};
	if (pbj_decode(rt->req, r->body.data, r->body.len, JSON_FLAGS_IN, &wire,
	               &err) < 0) {
		strbuf_free(&wire);
		return send_error(conn, GRPC_STATUS_INVALID_ARGUMENT, 400,
		                  err.message);
	}
	enum MHD_Result ret = rt->kind == R_UNARY
	                          ? do_call(g, conn, rt, &wire)
	                          : do_server_stream(g, conn, rt, &wire);
	strbuf_free(&wire);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode t)
{
	req *r = *con_cls;
	if (!r)
		return;
	strbuf_free(&r->body);
	free(r);
	*con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	gateway *g = cls;
	if (!g->o.log)
		return;
	char text[512];
	vsnprintf(text, sizeof(text), fmt, ap);
	size_t n = strlen(text);
	while (n && text[n - 1] == '\n')
		text[--n] = '\0';
	g->o.log(g->o.log_ctx, 3, text); /* MHD's notes: debug */
}

/* ===================================================================== */
/* HTTP/2 (h2c with prior knowledge) on the same port                    */
/* ===================================================================== */

/*
 * The gateway accepts connections itself.  A cleartext connection whose
 * first bytes are the HTTP/2 client preface is served here with nghttp2,
 * one thread per connection; any other goes to libmicrohttpd
 * (MHD_add_connection).  With TLS every connection goes to libmicrohttpd,
 * which does the TLS (and so HTTP/1.1 only).  Each HTTP/2 request runs as
 * a job on a thread of its own that answers into the stream's buffer; the
 * connection thread sends what is buffered as flow control allows.
 */

typedef struct h2_conn h2_conn;
typedef struct h2_req {
	h2_conn *c;
	int32_t id;
	char *path, *method, *auth, *timeout;
	strbuf body;
	bool too_big;
	/* job state, under c->mu */
	pthread_t thread;
	bool started;
	bool no_thread; /* answered without a job (at the job cap) */
	bool pooled;    /* runs on the worker pool, not a thread of its own */
	bool picked;    /* a worker took it (under g->pool_mu) */
	bool pool_done; /* the worker is finished with it (under c->mu) */
	struct h2_req *qnext; /* the pool's queue */
	strbuf out;
	size_t out_off;
	size_t messages;
	int http_status; /* 0 until decided */
	bool done;       /* the job finished; out is complete */
	bool submitted;  /* response headers handed to nghttp2 */
	bool cancelled;  /* the stream closed: stop */
	grpc_client *client;
	struct h2_req *next;
} h2_req;

struct h2_conn {
	gateway *g;
	int fd;
	SSL *ssl;    /* HTTPS (ALPN h2), or NULL */
	int wake[2]; /* job -> connection thread */
	nghttp2_session *ng;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* stream buffers drained */
	h2_req *reqs;
};

static void h2_wake(h2_conn *c)
{
	char b = 1;
	ssize_t n = write(c->wake[1], &b, 1);
	(void)n;
}

static void h2_cancel_and_join(h2_req *r)
{
	h2_conn *c = r->c;
	pthread_mutex_lock(&c->mu);
	r->cancelled = true;
	if (r->client)
		grpc_client_abort(r->client);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (r->started && r->pooled) {
		gateway *g = c->g;
		pthread_mutex_lock(&g->pool_mu);
		bool picked = r->picked;
		if (!picked) {
			h2_req **pp = &g->pool_head;
			while (*pp && *pp != r)
				pp = &(*pp)->qnext;
			if (*pp)
				*pp = r->qnext;
			if (g->pool_tail == r) {
				g->pool_tail = NULL;
				for (h2_req *q = g->pool_head; q; q = q->qnext)
					g->pool_tail = q;
			}
			__atomic_sub_fetch(&g->n_jobs, 1, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&g->pool_mu);
		if (picked) {
			pthread_mutex_lock(&c->mu);
			while (!r->pool_done)
				pthread_cond_wait(&c->cv, &c->mu);
			pthread_mutex_unlock(&c->mu);
		}
	} else if (r->started && !r->no_thread) {
		pthread_join(r->thread, NULL);
	}
	r->started = false;
}

static void h2_req_free(h2_req *r)
{
	h2_cancel_and_join(r);
	free(r->path);
	free(r->method);
	free(r->auth);
	free(r->timeout);
	strbuf_free(&r->body);
	strbuf_free(&r->out);
	free(r);
}

/* A job's answer: status and body at once. */
static void h2_finish(h2_req *r, int http, strbuf *out)
{
	h2_conn *c = r->c;
	pthread_mutex_lock(&c->mu);
	strbuf_append(&r->out, out->data, out->len);
	r->http_status = http;
	r->done = true;
	pthread_mutex_unlock(&c->mu);
	h2_wake(c);
}

static int h2_on_message(void *ctx, const uint8_t *data, size_t len)
{
	h2_req *r = ctx;
	h2_conn *c = r->c;
	const route *rt = route_of(r->path);
	strbuf sb;
	strbuf_init(&sb);
	strbuf_puts(&sb, "{\"result\":");
	pemba_error err = {0};
	if (pbj_encode_bytes(&sb, rt->resp, data, len, JSON_FLAGS_OUT, &err) <
	    0)
		strbuf_puts(&sb, "null");
	strbuf_puts(&sb, "}\n");
	pthread_mutex_lock(&c->mu);
	while (!r->cancelled && r->out.len - r->out_off > STREAM_HIGH_WATER)
		pthread_cond_wait(&c->cv, &c->mu);
	bool cancelled = r->cancelled;
	if (!cancelled) {
		strbuf_append(&r->out, sb.data, sb.len);
		r->messages++;
		if (!r->http_status)
			r->http_status = 200;
	}
	pthread_mutex_unlock(&c->mu);
	strbuf_free(&sb);
	h2_wake(c);
	return cancelled ? 1 : 0;
}

static void *h2_job(void *arg)
{
	h2_req *r = arg;
	gateway *g = r->c->g;
	strbuf out;
	strbuf_init(&out);
	const route *rt = r->path ? route_of(r->path) : NULL;
	grpc_metadata md[2];
	size_t nmd = 0;
	int timeout_ms = 0;
	if (r->auth)
		md[nmd++] = (grpc_metadata){"authorization", r->auth, 0};
	int64_t ns;
	if (r->timeout && grpc_parse_timeout(r->timeout, &ns) == 0) {
		int64_t ms = ns / 1000000;
		timeout_ms = ms < 1 ? 1 : ms > 86400000 ? 86400000 : (int)ms;
	}
	/* A reset of the stream aborts the upstream call (h2_close). */
	abort_slot slot = {&r->c->mu, &r->client, &r->cancelled};
	int http;
	if (!rt) {
		http =
		    local_error(&out, GRPC_STATUS_NOT_FOUND, 404, "Not Found");
	} else if (!r->method ||
	           strcmp(r->method, rt->method ? rt->method : "POST") != 0) {
		http = local_error(&out, GRPC_STATUS_UNIMPLEMENTED, 501,
		                   "Method Not Allowed");
	} else if (r->too_big) {
		http = local_error(&out, GRPC_STATUS_RESOURCE_EXHAUSTED, 413,
		                   "request body too large");
	} else if (rt->kind == R_CLIENT_STREAM) {
		http = client_stream_call(g, rt, &r->body, md, nmd, timeout_ms,
		                          &slot, &out);
	} else {
		strbuf wire;
		strbuf_init(&wire);
		pemba_error err = {0};
		if (pbj_decode(rt->req, r->body.data, r->body.len,
		               JSON_FLAGS_IN, &wire, &err) < 0) {
			http = local_error(&out, GRPC_STATUS_INVALID_ARGUMENT,
			                   400, err.message);
		} else if (rt->kind == R_UNARY) {
			http = unary_call(g, rt, &wire, md, nmd, timeout_ms,
			                  &slot, &out);
		} else {
			grpc_status st = {0};
			grpc_client *cl = client_get(g, &st);
			if (cl) {
				pthread_mutex_lock(&r->c->mu);
				r->client = cl;
				bool cancelled = r->cancelled;
				pthread_mutex_unlock(&r->c->mu);
				if (!cancelled)
					grpc_client_server_streaming(
					    cl, rt->grpc_path, md, nmd,
					    timeout_ms, wire.data, wire.len,
					    h2_on_message, r, &st);
				pthread_mutex_lock(&r->c->mu);
				r->client = NULL;
				cancelled = r->cancelled;
				pthread_mutex_unlock(&r->c->mu);
				client_put(g, cl,
				           cancelled ? GRPC_STATUS_CANCELLED
				                     : st.code);
			}
			http = 200;
			if (st.code != GRPC_STATUS_OK) {
				strbuf_puts(&out, "{\"error\":");
				status_json(&out, &st);
				strbuf_puts(&out, "}\n");
				pthread_mutex_lock(&r->c->mu);
				if (r->messages == 0)
					http = gateway_http_status(st.code);
				pthread_mutex_unlock(&r->c->mu);
			}
			grpc_status_clear(&st);
		}
		strbuf_free(&wire);
	}
	pthread_mutex_lock(&r->c->mu);
	if (r->http_status)
		http = r->http_status; /* already answered 200 */
	pthread_mutex_unlock(&r->c->mu);
	h2_finish(r, http, &out);
	strbuf_free(&out);
	__atomic_sub_fetch(&g->n_jobs, 1, __ATOMIC_RELAXED);
	return NULL;
}

/* The worker pool of HTTP/2 unary and client-streaming requests (server
 * streams, which may last, get a thread each). */
static void *pool_main(void *arg)
{
	gateway *g = arg;
	for (;;) {
		pthread_mutex_lock(&g->pool_mu);
		while (!g->pool_head && !g->pool_stop)
			pthread_cond_wait(&g->pool_cv, &g->pool_mu);
		h2_req *r = g->pool_head;
		if (!r) {
			pthread_mutex_unlock(&g->pool_mu);
			return NULL;
		}
		g->pool_head = r->qnext;
		if (!g->pool_head)
			g->pool_tail = NULL;
		r->picked = true;
		pthread_mutex_unlock(&g->pool_mu);
		h2_job(r);
		h2_conn *c = r->c;
		pthread_mutex_lock(&c->mu);
		r->pool_done = true; /* r may be freed once c->mu is let go */
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
	}
}

static void pool_push(gateway *g, h2_req *r)
{
	pthread_mutex_lock(&g->pool_mu);
	r->qnext = NULL;
	if (g->pool_tail)
		g->pool_tail->qnext = r;
	else
		g->pool_head = r;
	g->pool_tail = r;
	pthread_cond_signal(&g->pool_cv);
	pthread_mutex_unlock(&g->pool_mu);
}

static h2_req *h2_find(h2_conn *c, int32_t id)
{
	for (h2_req *r = c->reqs; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

static ssize_t h2_send_cb(nghttp2_session *ng, const uint8_t *data, size_t len,
                          int flags, void *user)
{
	h2_conn *c = user;
	if (c->ssl) {
		int n =
		    SSL_write(c->ssl, data, (int)(len > 65536 ? 65536 : len));
		if (n > 0)
			return n;
		int e = SSL_get_error(c->ssl, n);
		return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ
		           ? NGHTTP2_ERR_WOULDBLOCK
		           : NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK
		           ? NGHTTP2_ERR_WOULDBLOCK
		           : NGHTTP2_ERR_CALLBACK_FAILURE;
	return n;
}

static int h2_begin_headers(nghttp2_session *ng, const nghttp2_frame *f,
                            void *user)
{
	h2_conn *c = user;
	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	h2_req *r = xcalloc(1, sizeof(*r));
	r->c = c;
	r->id = f->hd.stream_id;
	strbuf_init(&r->body);
	strbuf_init(&r->out);
	pthread_mutex_lock(&c->mu);
	r->next = c->reqs;
	c->reqs = r;
	pthread_mutex_unlock(&c->mu);
	return 0;
}

static int h2_header(nghttp2_session *ng, const nghttp2_frame *f,
                     const uint8_t *name, size_t nl, const uint8_t *value,
                     size_t vl, uint8_t flags, void *user)
{
	h2_req *r = h2_find(user, f->hd.stream_id);
	if (!r)
		return 0;
	char **slot = NULL;
	if (nl == 5 && !memcmp(name, ":path", 5))
		slot = &r->path;
	else if (nl == 7 && !memcmp(name, ":method", 7))
		slot = &r->method;
	else if (nl == 13 && !memcmp(name, "authorization", 13))
		slot = &r->auth;
	else if (nl == 12 && !memcmp(name, "grpc-timeout", 12))
		slot = &r->timeout;
	if (slot && !*slot)
		*slot = xstrndup((const char *)value, vl);
	if (r->path) {
		/* A query string is not part of the route. */
		char *q = strchr(r->path, '?');
		if (q)
			*q = '\0';
	}
	return 0;
}

static int h2_data(nghttp2_session *ng, uint8_t flags, int32_t id,
                   const uint8_t *data, size_t len, void *user)
{
	h2_conn *c = user;
	h2_req *r = h2_find(c, id);
	if (!r)
		return 0;
	if (r->body.len + len > c->g->o.max_body)
		r->too_big = true;
	else if (!r->too_big)
		strbuf_append(&r->body, (const char *)data, len);
	return 0;
}

static int h2_frame(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
	h2_conn *c = user;
	if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	h2_req *r = h2_find(c, f->hd.stream_id);
	if (!r || r->started)
		return 0;
	gateway *g = c->g;
	const route *rt = r->path ? route_of(r->path) : NULL;
	bool own_thread = rt && rt->kind == R_SERVER_STREAM;
	if (__atomic_add_fetch(&g->n_jobs, 1, __ATOMIC_RELAXED) <=
	        H2_MAX_JOBS &&
	    !own_thread) {
		r->pooled = true;
		r->started = true;
		pool_push(g, r);
		return 0;
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	int created =
	    own_thread &&
	            __atomic_load_n(&g->n_jobs, __ATOMIC_RELAXED) <= H2_MAX_JOBS
	        ? pthread_create(&r->thread, &attr, h2_job, r)
	        : -1;
	pthread_attr_destroy(&attr);
	if (created != 0) {
		__atomic_sub_fetch(&g->n_jobs, 1, __ATOMIC_RELAXED);
		pthread_mutex_lock(&c->mu);
		r->http_status =
		    local_error(&r->out, GRPC_STATUS_RESOURCE_EXHAUSTED, 429,
		                "too many HTTP/2 requests in progress");
		r->done = true;
		r->no_thread = true;
		pthread_mutex_unlock(&c->mu);
	}
	r->started = true;
	return 0;
}

static int h2_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user)
{
	h2_conn *c = user;
	pthread_mutex_lock(&c->mu);
	h2_req **pp = &c->reqs;
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	h2_req *r = *pp;
	if (r)
		*pp = r->next;
	pthread_mutex_unlock(&c->mu);
	if (r)
		h2_req_free(r);
	return 0;
}

static ssize_t h2_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf,
                            size_t len, uint32_t *flags,
                            nghttp2_data_source *src, void *user)
{
	h2_req *r = src->ptr;
	h2_conn *c = r->c;
	pthread_mutex_lock(&c->mu);
	size_t have = r->out.len - r->out_off;
	ssize_t ret;
	if (have) {
		size_t n = have < len ? have : len;
		memcpy(buf, r->out.data + r->out_off, n);
		r->out_off += n;
		if (r->out_off == r->out.len) {
			strbuf_reset(&r->out);
			r->out_off = 0;
		}
		pthread_cond_broadcast(&c->cv);
		if (r->done && r->out.len == 0)
			*flags |= NGHTTP2_DATA_FLAG_EOF;
		ret = (ssize_t)n;
	} else if (r->done) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		ret = 0;
	} else {
		ret = NGHTTP2_ERR_DEFERRED;
	}
	pthread_mutex_unlock(&c->mu);
	return ret;
}

/* Hands decided answers to nghttp2 and resumes streams with new data. */
static void h2_flush_jobs(h2_conn *c)
{
	pthread_mutex_lock(&c->mu);
	for (h2_req *r = c->reqs; r; r = r->next) {
		if (!r->started)
			continue;
		if (!r->submitted && r->http_status) {
			char status[8];
			snprintf(status, sizeof(status), "%d", r->http_status);
			nghttp2_nv hdrs[] = {
			    {(uint8_t *)":status", (uint8_t *)status, 7,
			     strlen(status), NGHTTP2_NV_FLAG_NONE},
			    {(uint8_t *)"content-type",
			     (uint8_t *)"application/json", 12, 16,
			     NGHTTP2_NV_FLAG_NONE}};
			nghttp2_data_provider dp = {
			    .source.ptr = r, .read_callback = h2_read_body};
			r->submitted = true;
			nghttp2_submit_response(c->ng, r->id, hdrs, 2, &dp);
		} else if (r->submitted) {
			nghttp2_session_resume_data(c->ng, r->id);
		}
	}
	pthread_mutex_unlock(&c->mu);
}

static void h2_serve(gateway *g, int fd, SSL *ssl)
{
	h2_conn *c = xcalloc(1, sizeof(*c));
	c->g = g;
	c->fd = fd;
	c->ssl = ssl;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		close(fd);
		free(c);
		return;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	/* Frames go out in several writes: no Nagle delay between them. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, h2_send_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(
	    cb, h2_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, h2_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_close);
	nghttp2_session_server_new(&c->ng, cb, c);
	nghttp2_session_callbacks_del(cb);
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384}};
	nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2);
	double idle_since = 0;
	for (;;) {
		h2_flush_jobs(c);
		if (nghttp2_session_send(c->ng) != 0)
			break;
		if (!nghttp2_session_want_read(c->ng) &&
		    !nghttp2_session_want_write(c->ng))
			break;
		struct pollfd p[3] = {
		    {.fd = fd,
		     .events =
		         (short)(POLLIN |
		                 (nghttp2_session_want_write(c->ng) ? POLLOUT
		                                                    : 0))},
		    {.fd = c->wake[0], .events = POLLIN},
		    {.fd = g->stop_pipe[0], .events = POLLIN}};
		bool pending = c->ssl && SSL_pending(c->ssl) > 0;
		int n = poll(p, 3, pending ? 0 : 1000);
		if (n < 0 && errno != EINTR)
			break;
		if (pending)
			p[0].revents |= POLLIN;
		if (p[2].revents)
			break;
		if (p[1].revents) {
			char buf[256];
			while (read(c->wake[0], buf, sizeof(buf)) > 0)
				;
		}
		pthread_mutex_lock(&c->mu);
		bool busy = c->reqs != NULL;
		pthread_mutex_unlock(&c->mu);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
		if (busy || p[0].revents)
			idle_since = now;
		else if (idle_since == 0)
			idle_since = now;
		else if (now - idle_since > g->o.idle_timeout_s)
			break;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			uint8_t buf[16384];
			bool closed = false;
			/* Drain: TLS may hold decrypted bytes poll cannot see.
			 */
			for (;;) {
				ssize_t got;
				if (c->ssl) {
					int k =
					    SSL_read(c->ssl, buf, sizeof(buf));
					if (k > 0) {
						got = k;
					} else {
						int e =
						    SSL_get_error(c->ssl, k);
						closed =
						    e != SSL_ERROR_WANT_READ &&
						    e != SSL_ERROR_WANT_WRITE;
						break;
					}
				} else {
					got = recv(fd, buf, sizeof(buf), 0);
					if (got <= 0) {
						closed = got == 0 ||
						         (errno != EAGAIN &&
						          errno != EINTR);
						break;
					}
				}
				if (nghttp2_session_mem_recv(c->ng, buf,
				                             (size_t)got) < 0) {
					closed = true;
					break;
				}
				if (!c->ssl && (size_t)got < sizeof(buf))
					break;
			}
			if (closed)
				break;
		}
	}
	/* End every request (their threads first), then the session. */
	for (;;) {
		pthread_mutex_lock(&c->mu);
		h2_req *r = c->reqs;
		if (r)
			c->reqs = r->next;
		pthread_mutex_unlock(&c->mu);
		if (!r)
			break;
		h2_req_free(r);
	}
	nghttp2_session_del(c->ng);
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	close(c->wake[0]);
	close(c->wake[1]);
	close(fd);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}

/* ---- accepting ----------------------------------------------------------- */

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

typedef struct accepted {
	gateway *g;
	int fd;
	struct sockaddr_storage addr;
	socklen_t len;
} accepted;

static void thread_done(gateway *g)
{
	pthread_mutex_lock(&g->streams_mu);
	g->n_threads--;
	pthread_cond_broadcast(&g->streams_cv);
	pthread_mutex_unlock(&g->streams_mu);
}

/* HTTPS: the gateway does the TLS handshake (OpenSSL) and offers ALPN h2
 * and http/1.1.  h2 is served here; HTTP/1.1 is relayed in clear through
 * a socket pair to libmicrohttpd. */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
	static const unsigned char prefs[] = "\x02h2\x08http/1.1";
	if (SSL_select_next_proto((unsigned char **)out, outlen, prefs,
	                          sizeof(prefs) - 1, in,
	                          inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	return SSL_TLSEXT_ERR_OK;
}

static void tls_relay(gateway *g, int fd, SSL *ssl, const struct sockaddr *addr,
                      socklen_t len)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return;
	if (MHD_add_connection(g->mhd, sp[1], addr, len) != MHD_YES) {
		close(sp[0]);
		return; /* MHD closed sp[1] */
	}
	char buf[16384];
	for (;;) {
		struct pollfd p[3] = {
		    {.fd = fd, .events = POLLIN},
		    {.fd = sp[0], .events = POLLIN},
		    {.fd = g->stop_pipe[0], .events = POLLIN}};
		bool pending = SSL_pending(ssl) > 0;
		if (poll(p, 3, pending ? 0 : -1) < 0 && errno != EINTR)
			break;
		if (p[2].revents)
			break;
		if (pending || p[0].revents) {
			int n = SSL_read(ssl, buf, sizeof(buf));
			if (n <= 0) {
				int e = SSL_get_error(ssl, n);
				if (e == SSL_ERROR_WANT_READ ||
				    e == SSL_ERROR_WANT_WRITE)
					continue;
				break;
			}
			size_t off = 0;
			while (off < (size_t)n) {
				ssize_t w = send(sp[0], buf + off,
				                 (size_t)n - off, MSG_NOSIGNAL);
				if (w <= 0)
					goto out;
				off += (size_t)w;
			}
		}
		if (p[1].revents) {
			ssize_t n = read(sp[0], buf, sizeof(buf));
			if (n <= 0)
				break;
			if (SSL_write(ssl, buf, (int)n) <= 0)
				break;
		}
	}
out:
	close(sp[0]);
}

static void tls_serve(accepted *a)
{
	gateway *g = a->g;
	SSL *ssl = SSL_new(g->ssl_ctx);
	if (!ssl) {
		close(a->fd);
		return;
	}
	SSL_set_fd(ssl, a->fd);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(a->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(a->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (SSL_accept(ssl) != 1) {
		ERR_clear_error();
		SSL_free(ssl);
		close(a->fd);
		return;
	}
	tv.tv_sec = 0;
	setsockopt(a->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(a->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	const unsigned char *proto = NULL;
	unsigned plen = 0;
	SSL_get0_alpn_selected(ssl, &proto, &plen);
	if (plen == 2 && memcmp(proto, "h2", 2) == 0) {
		h2_serve(g, a->fd, ssl); /* frees ssl, closes fd */
		return;
	}
	tls_relay(g, a->fd, ssl, (struct sockaddr *)&a->addr, a->len);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(a->fd);
}

/* Reads the first bytes (without taking them): the HTTP/2 preface goes
 * to h2_serve, anything else to libmicrohttpd. */
static void *sniff_main(void *arg)
{
	accepted *a = arg;
	gateway *g = a->g;
	size_t want = sizeof(h2_preface) - 1;
	char buf[sizeof(h2_preface)];
	bool h2 = false;
	if (g->ssl_ctx) {
		tls_serve(a);
		goto done;
	}
	for (int waited = 0; waited < 10000; waited += 50) {
		struct pollfd p[2] = {
		    {.fd = a->fd, .events = POLLIN},
		    {.fd = g->stop_pipe[0], .events = POLLIN}};
		if (poll(p, 2, 50) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		ssize_t n = recv(a->fd, buf, want, MSG_PEEK);
		if (n <= 0)
			break;
		if (memcmp(buf, h2_preface, (size_t)n) != 0)
			break; /* not HTTP/2 */
		if ((size_t)n == want) {
			h2 = true;
			break;
		}
	}
	if (h2) {
		h2_serve(g, a->fd, NULL);
	} else {
		/* MHD takes (and closes) the socket in any case. */
		MHD_add_connection(g->mhd, a->fd, (struct sockaddr *)&a->addr,
		                   a->len);
	}
done:
	pthread_mutex_lock(&g->streams_mu);
	g->n_h2--;
	pthread_mutex_unlock(&g->streams_mu);
	free(a);
	thread_done(g);
	return NULL;
}

static void *accept_main(void *arg)
{
	gateway *g = arg;
	for (;;) {
		struct pollfd p[2] = {
		    {.fd = g->listen_fd, .events = POLLIN},
		    {.fd = g->stop_pipe[0], .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		accepted *a = xcalloc(1, sizeof(*a));
		a->g = g;
		a->len = sizeof(a->addr);
		a->fd = accept4(g->listen_fd, (struct sockaddr *)&a->addr,
		                &a->len, SOCK_CLOEXEC);
		if (a->fd < 0) {
			free(a);
			if (errno == EMFILE || errno == ENFILE)
				usleep(100000);
			continue;
		}
		pthread_mutex_lock(&g->streams_mu);
		bool full = g->n_h2 >= g->o.max_connections;
		if (!full) {
			g->n_h2++; /* counted while sniffing too */
			g->n_threads++;
		}
		pthread_mutex_unlock(&g->streams_mu);
		pthread_t t;
		if (full) {
			close(a->fd);
			free(a);
		} else if (pthread_create(&t, NULL, sniff_main, a) != 0) {
			close(a->fd);
			free(a);
			pthread_mutex_lock(&g->streams_mu);
			g->n_h2--;
			pthread_mutex_unlock(&g->streams_mu);
			thread_done(g);
		} else {
			pthread_detach(t);
		}
	}
	return NULL;
}

/* ===================================================================== */
/* Start / stop                                                          */
/* ===================================================================== */

/* "host:port" -> a socket address (numeric hosts and names). */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
                      pemba_error *err)
{
	char host[256] = "";
	const char *port;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':' ||
		    (size_t)(end - addr) > sizeof(host))
			goto bad;
		memcpy(host, addr + 1, end - addr - 1);
		port = end + 2;
	} else {
		const char *colon = strrchr(addr, ':');
		if (!colon || (size_t)(colon - addr) >= sizeof(host))
			goto bad;
		memcpy(host, addr, colon - addr);
		port = colon + 1;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE};
	struct addrinfo *ai = NULL;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, &ai) != 0 || !ai)
		goto bad;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	return 0;
bad:
	return error_set(err, PEMBA_EINVAL,
	                 "invalid --http-addr `%s` (expected HOST:PORT)", addr);
}

int gateway_start(const gateway_options *options, gateway **out,
                  pemba_error *err)
{
	*out = NULL;
	if ((options->tls_cert_path == NULL) != (options->tls_key_path == NULL))
		return error_set(err, PEMBA_EINVAL,
		                 "--http-tls-cert-path and --http-tls-key-path "
		                 "go together");
	static int registered;
	if (!__atomic_exchange_n(&registered, 1, __ATOMIC_SEQ_CST))
		pbj_register_any(&google__rpc__error_info__descriptor);
	gateway *g = xcalloc(1, sizeof(*g));
	g->o = *options;
	g->listen_fd = -1;
	g->stop_pipe[0] = g->stop_pipe[1] = -1;
	if (!g->o.max_body)
		g->o.max_body = 4u << 20;
	if (!g->o.max_connections)
		g->o.max_connections = 512;
	if (!g->o.idle_timeout_s)
		g->o.idle_timeout_s = 60;
	if (!g->o.max_idle_upstream)
		g->o.max_idle_upstream = 64;
	g->upstream = xstrdup(options->upstream);
	g->idle = xcalloc(g->o.max_idle_upstream, sizeof(*g->idle));
	pthread_mutex_init(&g->mu, NULL);
	pthread_mutex_init(&g->streams_mu, NULL);
	pthread_cond_init(&g->streams_cv, NULL);
	pthread_mutex_init(&g->pool_mu, NULL);
	pthread_cond_init(&g->pool_cv, NULL);
	for (size_t i = 0; i < H2_WORKERS; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 512 * 1024);
		int prc =
		    pthread_create(&g->pool[g->n_pool], &attr, pool_main, g);
		pthread_attr_destroy(&attr);
		if (prc != 0)
			break;
		g->n_pool++;
	}
	struct sockaddr_storage ss;
	int rc = parse_addr(options->listen_addr, &ss, err);
	if (rc < 0)
		goto fail;
	g->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(g->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (g->listen_fd < 0 ||
	    bind(g->listen_fd, (struct sockaddr *)&ss,
	         ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                  : sizeof(struct sockaddr_in)) < 0 ||
	    listen(g->listen_fd, 1024) < 0) {
		rc = error_set(err, PEMBA_EIO,
		               "could not listen on --http-addr %s: %s",
		               options->listen_addr, strerror(errno));
		goto fail;
	}
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	getsockname(g->listen_fd, (struct sockaddr *)&bound, &blen);
	g->port = ntohs(bound.ss_family == AF_INET6
	                    ? ((struct sockaddr_in6 *)&bound)->sin6_port
	                    : ((struct sockaddr_in *)&bound)->sin_port);
	if (pipe2(g->stop_pipe, O_CLOEXEC) < 0) {
		rc = error_set(err, PEMBA_EIO, "pipe: %s", strerror(errno));
		goto fail;
	}
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
	                 MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
	                 MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
	if (options->tls_cert_path) {
		g->ssl_ctx = SSL_CTX_new(TLS_server_method());
		if (!g->ssl_ctx) {
			rc = error_set(err, PEMBA_EIO, "TLS: no context");
			goto fail;
		}
		SSL_CTX_set_min_proto_version(g->ssl_ctx, TLS1_2_VERSION);
		SSL_CTX_set_mode(g->ssl_ctx,
		                 SSL_MODE_ENABLE_PARTIAL_WRITE |
		                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		if (SSL_CTX_use_certificate_chain_file(
		        g->ssl_ctx, options->tls_cert_path) != 1 ||
		    SSL_CTX_use_PrivateKey_file(g->ssl_ctx,
		                                options->tls_key_path,
		                                SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(g->ssl_ctx) != 1) {
			char why[256];
			ERR_error_string_n(ERR_get_error(), why, sizeof(why));
			ERR_clear_error();
			rc = error_set(err, PEMBA_EIO,
			               "cannot load --http-tls-cert-path %s / "
			               "--http-tls-key-path %s: %s",
			               options->tls_cert_path,
			               options->tls_key_path, why);
			goto fail;
		}
		SSL_CTX_set_alpn_select_cb(g->ssl_ctx, alpn_select, NULL);
	}
	g->mhd = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, g, MHD_OPTION_EXTERNAL_LOGGER,
	    on_mhd_log, g, MHD_OPTION_CONNECTION_LIMIT, g->o.max_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, g->o.idle_timeout_s,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, g,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
	    MHD_OPTION_THREAD_STACK_SIZE, (size_t)512 * 1024, MHD_OPTION_END);
	if (!g->mhd) {
		rc = error_set(err, PEMBA_EIO,
		               "could not start the HTTP gateway on %s",
		               options->listen_addr);
		goto fail;
	}
	if (pthread_create(&g->acceptor, NULL, accept_main, g) != 0) {
		rc = error_set(err, PEMBA_EIO, "could not start a thread");
		goto fail;
	}
	g->acceptor_started = true;
	gw_log(g, 3, "HTTP gateway listening on %s (port %d)",
	       options->listen_addr, g->port);
	*out = g;
	return 0;
fail:
	gateway_stop(g);
	return rc;
}

int gateway_port(const gateway *g)
{
	return g->port;
}

void gateway_stop(gateway *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	__atomic_store_n(&g->stopping, true, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&g->mu);
	if (g->stop_pipe[1] >= 0) {
		char b = 1;
		ssize_t n = write(g->stop_pipe[1], &b, 1);
		(void)n;
	}
	if (g->acceptor_started)
		pthread_join(g->acceptor, NULL);
	pthread_mutex_lock(&g->streams_mu);
	while (g->n_threads > 0)
		pthread_cond_wait(&g->streams_cv, &g->streams_mu);
	pthread_mutex_unlock(&g->streams_mu);
	if (g->mhd)
		MHD_stop_daemon(g->mhd);
	pthread_mutex_lock(&g->pool_mu);
	g->pool_stop = true;
	pthread_cond_broadcast(&g->pool_cv);
	pthread_mutex_unlock(&g->pool_mu);
	for (size_t i = 0; i < g->n_pool; i++)
		pthread_join(g->pool[i], NULL);
	pthread_mutex_destroy(&g->pool_mu);
	pthread_cond_destroy(&g->pool_cv);
	if (g->listen_fd >= 0)
		close(g->listen_fd);
	if (g->stop_pipe[0] >= 0) {
		close(g->stop_pipe[0]);
		close(g->stop_pipe[1]);
	}
	for (size_t i = 0; i < g->n_idle; i++)
		grpc_client_close(g->idle[i]);
	free(g->idle);
	free(g->upstream);
	SSL_CTX_free(g->ssl_ctx);
	pthread_mutex_destroy(&g->mu);
	pthread_mutex_destroy(&g->streams_mu);
	pthread_cond_destroy(&g->streams_cv);
	free(g);
}
