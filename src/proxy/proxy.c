/*
 * proxy.c -- the front of `pemba proxy`: the listener (the gRPC transport,
 * api/grpc.h), authentication of the proxy's own clients, and forwarding
 * of every call to the primary over a pool of connections.  The shadow
 * side is shadow.c; the design is in README.md.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/reflection.h"
#include "api/services.h"
#include "pemba/v1/proxy_service.pb-c.h"
#include "proxy/internal.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ===================================================================== */
/* Methods                                                               */
/* ===================================================================== */

#define PS "/authzed.api.v1.PermissionsService/"
#define SS "/authzed.api.v1.SchemaService/"
#define XS "/authzed.api.v1.ExperimentalService/"

/* Every method the proxy answers.  Unknown paths get the transport's own
 * UNIMPLEMENTED. */
static const proxy_method methods[] = {
    {PS "CheckPermission", GRPC_METHOD_UNARY, PROXY_CHECK, "CheckPermission"},
    {PS "CheckBulkPermissions", GRPC_METHOD_UNARY, PROXY_CHECK_BULK,
     "CheckBulkPermissions"},
    {PS "WriteRelationships", GRPC_METHOD_UNARY, PROXY_WRITE,
     "WriteRelationships"},
    {PS "DeleteRelationships", GRPC_METHOD_UNARY, PROXY_WRITE,
     "DeleteRelationships"},
    {PS "ExpandPermissionTree", GRPC_METHOD_UNARY, PROXY_PASS,
     "ExpandPermissionTree"},
    {PS "ReadRelationships", GRPC_METHOD_SERVER_STREAMING, PROXY_STREAM,
     "ReadRelationships"},
    {PS "LookupResources", GRPC_METHOD_SERVER_STREAMING, PROXY_LOOKUP,
     "LookupResources"},
    {PS "LookupSubjects", GRPC_METHOD_SERVER_STREAMING, PROXY_LOOKUP,
     "LookupSubjects"},
    {PS "ImportBulkRelationships", GRPC_METHOD_CLIENT_STREAMING, PROXY_IMPORT,
     "ImportBulkRelationships"},
    {PS "ExportBulkRelationships", GRPC_METHOD_SERVER_STREAMING, PROXY_STREAM,
     "ExportBulkRelationships"},
    {SS "ReadSchema", GRPC_METHOD_UNARY, PROXY_READ_SCHEMA, "ReadSchema"},
    {SS "WriteSchema", GRPC_METHOD_UNARY, PROXY_WRITE, "WriteSchema"},
    {SS "ReflectSchema", GRPC_METHOD_UNARY, PROXY_PASS, "ReflectSchema"},
    {SS "ComputablePermissions", GRPC_METHOD_UNARY, PROXY_PASS,
     "ComputablePermissions"},
    {SS "DependentRelations", GRPC_METHOD_UNARY, PROXY_PASS,
     "DependentRelations"},
    {SS "DiffSchema", GRPC_METHOD_UNARY, PROXY_PASS, "DiffSchema"},
    {XS "BulkCheckPermission", GRPC_METHOD_UNARY, PROXY_PASS,
     "BulkCheckPermission"},
    {XS "BulkImportRelationships", GRPC_METHOD_CLIENT_STREAMING, PROXY_IMPORT,
     "BulkImportRelationships"},
    {XS "BulkExportRelationships", GRPC_METHOD_SERVER_STREAMING, PROXY_STREAM,
     "BulkExportRelationships"},
    {"/authzed.api.v1.WatchService/Watch", GRPC_METHOD_SERVER_STREAMING,
     PROXY_WATCH, "Watch"},
    {"/grpc.health.v1.Health/Check", GRPC_METHOD_UNARY, PROXY_PASS,
     "Health.Check"},
    {PROXY_STATS_PATH, GRPC_METHOD_UNARY, PROXY_LOCAL, "GetProxyStats"},
    {SVC_REFLECTION_V1_PATH, GRPC_METHOD_BIDI_STREAMING, PROXY_REFLECTION,
     "ServerReflectionInfo"},
    {SVC_REFLECTION_V1ALPHA_PATH, GRPC_METHOD_BIDI_STREAMING,
     PROXY_REFLECTION, "ServerReflectionInfo"},
};

#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

/* ===================================================================== */
/* Helpers                                                               */
/* ===================================================================== */

int64_t proxy_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void proxy_logf(pemba_proxy *p, int level, const char *fmt, ...)
{
	if (!p->o.log)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	p->o.log(p->o.log_ctx, level, buf);
}

void proxy_client_options(const proxy_upstream *u, grpc_client_options *out)
{
	grpc_client_options_init(out);
	out->target = u->endpoint;
	out->tls = u->tls;
	out->ca_file = u->ca_path;
	out->insecure_skip_verify = u->skip_verify_ca;
}

static char *bearer(const char *token)
{
	if (!token || !*token)
		return NULL;
	size_t n = strlen(token) + 8;
	char *s = xmalloc(n);
	snprintf(s, n, "Bearer %s", token);
	return s;
}

/* ===================================================================== */
/* Authentication (as `serve`: constant-time compare)                    */
/* ===================================================================== */

static int check_key(grpc_call *call, void *ctx, const char **message)
{
	pemba_proxy *p = ctx;
	if (strncmp(grpc_call_path(call), "/grpc.health.v1.Health/", 23) == 0)
		return GRPC_STATUS_OK;
	if (svc_reflection_path(grpc_call_path(call)))
		return GRPC_STATUS_OK; /* as pemba serve and SpiceDB */
	if (!grpc_call_metadata(call, "authorization")) {
		*message = "missing authorization: expected "
		           "'authorization: Bearer <preshared key>'";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	size_t len;
	const char *token = svc_bearer_token(call, &len);
	if (len == 0 ||
	    !grpc_const_time_equal(token, len, p->key, strlen(p->key))) {
		*message = "invalid preshared key";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	return GRPC_STATUS_OK;
}

/* ===================================================================== */
/* The primary's connection pool                                         */
/* ===================================================================== */

/* Borrows an idle connection or makes one.  NULL with *err on failure. */
static grpc_client *pool_acquire(pemba_proxy *p, pemba_error *err)
{
	pthread_mutex_lock(&p->pool_mu);
	grpc_client *c = p->nidle ? p->idle[--p->nidle] : NULL;
	pthread_mutex_unlock(&p->pool_mu);
	if (c)
		return c;
	grpc_client_options co;
	proxy_client_options(&p->o.primary, &co);
	if (grpc_client_connect(&co, &c, err) != 0)
		return NULL;
	return c;
}

/* Returns a connection; broken ones (reuse = false) are closed. */
static void pool_release(pemba_proxy *p, grpc_client *c, bool reuse)
{
	if (!reuse) {
		grpc_client_close(c);
		return;
	}
	pthread_mutex_lock(&p->pool_mu);
	if (p->nidle == p->idle_cap) {
		p->idle_cap = p->idle_cap ? 2 * p->idle_cap : 16;
		p->idle = xrealloc(p->idle, p->idle_cap * sizeof(*p->idle));
	}
	p->idle[p->nidle++] = c;
	pthread_mutex_unlock(&p->pool_mu);
}

/* ===================================================================== */
/* Handlers                                                              */
/* ===================================================================== */

/* The upstream timeout of a call: what is left of the client's deadline,
 * none_ms without one.  false when the deadline has passed (the call is
 * finished here with DEADLINE_EXCEEDED). */
static bool call_timeout(grpc_call *call, int none_ms, int *out)
{
	*out = none_ms;
	int64_t deadline = grpc_call_deadline(call);
	if (!deadline)
		return true;
	int64_t left = (deadline - proxy_now_ns()) / 1000000;
	if (left <= 0) {
		grpc_call_finish(call, GRPC_STATUS_DEADLINE_EXCEEDED,
		                 "deadline exceeded");
		return false;
	}
	*out = left > 0x7fffffff ? 0x7fffffff : (int)left;
	return true;
}

/* The primary's authorization, as call metadata: md[0..return). */
static size_t primary_metadata(const pemba_proxy *p, grpc_metadata md[1])
{
	if (!p->primary_auth)
		return 0;
	md[0] = (grpc_metadata){"authorization", p->primary_auth, 0};
	return 1;
}

/* What a forwarded call holds of the primary. */
typedef struct primary_call {
	grpc_client *c;
	int timeout_ms;
	grpc_metadata md[1];
	size_t nmd;
} primary_call;

/* The start of every forwarded call: its timeout (call_timeout), the
 * count, a primary connection and the primary's authorization.  false
 * when the call was finished here (deadline passed, primary
 * unreachable). */
static bool primary_begin(pemba_proxy *p, grpc_call *call, int none_ms,
                          primary_call *pc)
{
	if (!call_timeout(call, none_ms, &pc->timeout_ms))
		return false;
	PROXY_COUNT(p, calls);
	pemba_error err = {0};
	pc->c = pool_acquire(p, &err);
	if (!pc->c) {
		PROXY_COUNT(p, primary_errors);
		grpc_call_finishf(call, GRPC_STATUS_UNAVAILABLE,
		                  "pemba proxy: primary %s unreachable: %s",
		                  p->o.primary.endpoint, err.message);
		return false;
	}
	pc->nmd = primary_metadata(p, pc->md);
	return true;
}

/* Gives the connection back after the primary answered `code`.  A
 * connection that saw a transport-level failure, or whose call the client
 * abandoned mid-stream, may be broken: a new one is cheap next to serving
 * on a dead one. */
static void primary_end(pemba_proxy *p, primary_call *pc, int code,
                        bool client_gone)
{
	bool reuse = !client_gone && code != GRPC_STATUS_UNAVAILABLE &&
	             code != GRPC_STATUS_DEADLINE_EXCEEDED &&
	             code != GRPC_STATUS_INTERNAL &&
	             code != GRPC_STATUS_CANCELLED;
	pool_release(p, pc->c, reuse);
	pc->c = NULL;
}

static void handle_unimplemented(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	PROXY_COUNT(p, unimplemented);
	grpc_call_finishf(call, GRPC_STATUS_UNIMPLEMENTED,
	                  "pemba proxy: %s is not proxied (call the primary "
	                  "directly)",
	                  grpc_call_path(call));
}

/* pemba.v1.ProxyService/GetProxyStats: answered here, never forwarded. */
static void handle_stats(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	proxy_stats s;
	proxy_stats_get(p, &s);
	Pemba__V1__GetProxyStatsResponse r =
	    PEMBA__V1__GET_PROXY_STATS_RESPONSE__INIT;
	r.calls = s.calls;
	r.primary_errors = s.primary_errors;
	r.unimplemented = s.unimplemented;
	r.shadow_writes = s.shadow_writes;
	r.shadow_reads = s.shadow_reads;
	r.sampled_out = s.sampled_out;
	r.mismatches = s.mismatches;
	r.shadow_errors = s.shadow_errors;
	r.dropped = s.dropped;
	r.stale = s.stale;
	r.queued = s.queued;
	uint8_t buf[128];
	size_t n = pemba__v1__get_proxy_stats_response__pack(&r, buf);
	grpc_call_send(call, buf, n);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Server reflection, answered here: list_services names the services of
 * the proxy's own table (what a client can call through it). */
static void handle_reflection(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	svc_reflection_serve(call, p->table, p->ntable);
}

/* Ends the client's call with the primary's outcome: its status code and
 * message, and its grpc-status-details-bin (google.rpc.Status with ErrorInfo
 * and the like) as the same bytes. */
static void finish_as_primary(grpc_call *call, int code, const grpc_status *st)
{
	if (code != GRPC_STATUS_OK && st->details != NULL)
		grpc_call_add_trailer(call, "grpc-status-details-bin",
		                      st->details, st->details_len);
	grpc_call_finish(call, code,
	                 code == GRPC_STATUS_OK ? NULL : st->message);
}

static const proxy_method *method_of(const grpc_call *call)
{
	const char *path = grpc_call_path(call);
	for (size_t i = 0; i < NMETHODS; i++)
		if (strcmp(methods[i].path, path) == 0)
			return &methods[i];
	return NULL;
}

/* A unary call on its way through the mux. */
typedef struct unary_relay {
	pemba_proxy *p;
	grpc_call *call; /* deferred */
	const proxy_method *m;
} unary_relay;

/* The primary's answer (on the mux thread): relayed unchanged, then, when
 * it is OK, handed to the shadow (shadow_submit never blocks). */
static void unary_done(void *ctx, int code, uint8_t *resp, size_t resp_len,
                       grpc_status *st, const uint8_t *req, size_t req_len)
{
	unary_relay *r = ctx;
	pemba_proxy *p = r->p;
	if (code == GRPC_STATUS_OK) {
		grpc_call_send(r->call, resp, resp_len);
		grpc_call_finish(r->call, GRPC_STATUS_OK, NULL);
		if (r->m && r->m->cls != PROXY_PASS && shadow_wants(p, r->m))
			shadow_submit(p, r->m, req, req_len, resp, resp_len);
	} else if (code == GRPC_STATUS_UNAVAILABLE && st->local) {
		PROXY_COUNT(p, primary_errors);
		grpc_call_finishf(r->call, GRPC_STATUS_UNAVAILABLE,
		                  "pemba proxy: primary %s unreachable: %s",
		                  p->o.primary.endpoint,
		                  st->message ? st->message : "");
	} else {
		if (code == GRPC_STATUS_UNAVAILABLE)
			PROXY_COUNT(p, primary_errors);
		finish_as_primary(r->call, code, st);
	}
	grpc_call_release(r->call);
	free(resp);
	grpc_status_clear(st);
	free(r);
}

/*
 * A unary call, on the transport's event loop (on_loop: no worker): the
 * request's bytes go to the primary unchanged (with the primary's token
 * instead of the client's) through the mux, and the call is deferred;
 * unary_done relays the primary's response bytes and status unchanged.
 */
static void handle_unary(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	const uint8_t *req;
	size_t req_len;
	if (grpc_call_read(call, &req, &req_len) != 1)
		return; /* the transport finished the call */
	int timeout_ms;
	if (!call_timeout(call, p->o.primary_timeout_ms, &timeout_ms))
		return;
	PROXY_COUNT(p, calls);
	if (grpc_call_defer(call) != 0)
		return; /* finished meanwhile */
	unary_relay *r = xmalloc(sizeof(*r));
	*r = (unary_relay){p, call, method_of(call)};
	grpc_metadata md[1];
	size_t nmd = primary_metadata(p, md);
	grpc_mux_unary(p->mux, grpc_call_path(call), md, nmd, timeout_ms, req,
	               req_len, unary_done, r);
}

/* One server-streaming call being relayed from the primary. */
typedef struct relay {
	grpc_call *call;
	const proxy_method *m;
	bool collect; /* gathering lookup keys for the shadow */
	bool client_gone;
	shadow_keys keys;
} relay;

static int relay_message(void *ctx, const uint8_t *data, size_t len)
{
	relay *r = ctx;
	/* Blocks while the client is slow to read (bounded by the
	 * transport), which slows the primary's stream, not memory. */
	if (grpc_call_send(r->call, data, len) != 0) {
		r->client_gone = true;
		return 1; /* cancels the primary's stream */
	}
	if (r->collect && !shadow_keys_add(&r->keys, r->m, data, len))
		r->collect = false; /* too big or undecodable: not compared */
	return 0;
}

/*
 * A server-streaming call (ReadRelationships, Lookup*, exports): the
 * request's bytes go to the primary, each response message is relayed
 * unchanged as it arrives, then the primary's status.  The worker and one
 * primary connection are held for the stream's life; without a client
 * deadline there is none upstream either (an export may be long).  For a
 * sampled lookup the results are also gathered as keys (bounded by the
 * shadow queue's byte limit) and handed to the shadow at the end.
 */
static void handle_server_stream(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	const proxy_method *m = method_of(call);
	const uint8_t *req;
	size_t req_len;
	if (!m || grpc_call_read(call, &req, &req_len) != 1)
		return;
	primary_call pc;
	if (!primary_begin(p, call, 0, &pc))
		return;
	relay r = {.call = call, .m = m};
	r.collect = m->cls == PROXY_LOOKUP && shadow_wants(p, m);
	r.keys.max_bytes = p->o.shadow_queue_bytes;
	grpc_status st = {0};
	int code = grpc_client_server_streaming(pc.c, m->path, pc.md, pc.nmd,
	                                        pc.timeout_ms, req, req_len,
	                                        relay_message, &r, &st);
	primary_end(p, &pc, code, r.client_gone);
	if (!r.client_gone) {
		if (code == GRPC_STATUS_UNAVAILABLE)
			PROXY_COUNT(p, primary_errors);
		finish_as_primary(call, code, &st);
		if (code == GRPC_STATUS_OK && r.collect) {
			size_t len;
			char *joined = shadow_keys_join(&r.keys, &len);
			shadow_submit(p, m, req, req_len, (uint8_t *)joined,
			              len);
			free(joined);
		}
	}
	shadow_keys_free(&r.keys);
	grpc_status_clear(&st);
}

/* ===================================================================== */
/* Client-streaming imports                                              */
/* ===================================================================== */

/* One import being relayed to the primary, its messages gathered for the
 * shadow as one job (framed: SHADOW_FRAME_HEADER). */
typedef struct import_relay {
	pemba_proxy *p;
	grpc_call *call;
	bool client_gone; /* the client's stream failed: primary cancelled */
	bool collect;     /* still gathering (within the byte budget) */
	bool overflow;    /* gave up gathering: the import is dropped */
	uint8_t *buf;
	size_t len, cap;
	size_t reserved; /* bytes taken from p->import_bytes */
} import_relay;

/* Takes n bytes from the shared budget of gathered import messages. */
static bool import_reserve(import_relay *r, size_t n)
{
	size_t max = r->p->o.shadow_queue_bytes;
	size_t now =
	    __atomic_add_fetch(&r->p->import_bytes, n, __ATOMIC_RELAXED);
	if (now > max) {
		__atomic_sub_fetch(&r->p->import_bytes, n, __ATOMIC_RELAXED);
		return false;
	}
	r->reserved += n;
	return true;
}

static void import_unreserve(import_relay *r)
{
	__atomic_sub_fetch(&r->p->import_bytes, r->reserved, __ATOMIC_RELAXED);
	r->reserved = 0;
	free(r->buf);
	r->buf = NULL;
	r->len = r->cap = 0;
}

/* grpc_next_message_fn of the primary's stream: the client's next
 * message, read as it comes (blocking; a client that sends nothing is
 * ended by the transport's stall timeout). */
static int import_next(void *ctx, const void **data, size_t *len)
{
	import_relay *r = ctx;
	const uint8_t *d;
	size_t n;
	int rv = grpc_call_read(r->call, &d, &n);
	if (rv < 0) {
		r->client_gone = true; /* or the transport finished it */
		return -1;
	}
	if (rv == 0)
		return 0;
	if (r->collect) {
		size_t need = SHADOW_FRAME_HEADER + n;
		if (n > 0xffffffffu || !import_reserve(r, need)) {
			r->collect = false;
			r->overflow = true;
			import_unreserve(r);
		} else {
			if (r->len + need > r->cap) {
				r->cap = r->cap ? r->cap : 4096;
				while (r->len + need > r->cap)
					r->cap *= 2;
				r->buf = xrealloc(r->buf, r->cap);
			}
			uint8_t *o = r->buf + r->len;
			o[0] = (uint8_t)(n >> 24);
			o[1] = (uint8_t)(n >> 16);
			o[2] = (uint8_t)(n >> 8);
			o[3] = (uint8_t)n;
			memcpy(o + SHADOW_FRAME_HEADER, d, n);
			r->len += need;
		}
	}
	*data = d;
	*len = n;
	return 1;
}

/*
 * ImportBulkRelationships, Experimental BulkImportRelationships: each
 * message of the client is relayed to the primary as it arrives (one
 * primary connection held for the stream), the primary's response and
 * status come back unchanged.  The messages are also gathered, within a
 * byte budget shared by all imports in flight (the shadow queue's byte
 * limit), and when the primary said OK they are queued for the shadow as
 * one write job, replayed there as one stream.  An import past the budget
 * is not replayed: dropped, counted and logged like a dropped write.
 */
static void handle_import(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	const proxy_method *m = method_of(call);
	if (!m)
		return;
	primary_call pc;
	if (!primary_begin(p, call, 0, &pc))
		return;
	import_relay r = {.p = p, .call = call, .collect = true};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	int code = grpc_client_streaming(pc.c, m->path, pc.md, pc.nmd,
	                                 pc.timeout_ms, import_next, &r, NULL,
	                                 NULL, &resp, &resp_len, &st);
	primary_end(p, &pc, code, r.client_gone);
	if (!r.client_gone) {
		if (code == GRPC_STATUS_OK && !resp) {
			code = GRPC_STATUS_INTERNAL;
			grpc_status_clear(&st);
			st.message = xstrdup("pemba proxy: the primary sent no "
			                     "response to the import");
		}
		if (code == GRPC_STATUS_UNAVAILABLE)
			PROXY_COUNT(p, primary_errors);
		if (code == GRPC_STATUS_OK)
			grpc_call_send(call, resp, resp_len);
		finish_as_primary(call, code, &st);
		if (code == GRPC_STATUS_OK) {
			if (r.overflow)
				shadow_drop(p, m);
			else if (r.len > 0) /* nothing to replay otherwise */
				shadow_submit(p, m, r.buf, r.len, NULL, 0);
		}
	}
	import_unreserve(&r);
	free(resp);
	grpc_status_clear(&st);
}

/* ===================================================================== */
/* Watch                                                                 */
/* ===================================================================== */

/*
 * A Watch through the proxy holds no worker: the handler suspends the
 * call (grpc_call_suspend) and a thread of its own holds the primary's
 * stream on a dedicated connection (a Watch may last days; the pool's
 * connections serve short calls).  The thread queues each message of the
 * primary here and wakes the call; the call's step, on a worker, sends
 * what is queued.  The queue is bounded (WATCH_BUFFER): past it the
 * thread waits, which stops reading the primary's stream (HTTP/2 flow
 * control slows the primary, not memory).  When the client goes away (or
 * its deadline passes, or it reads nothing for the transport's stall
 * timeout) release breaks the dedicated connection, so the primary's
 * stream ends at once even when the primary is silent.  At most
 * o.max_watch_streams are open (each holds a thread and a connection);
 * more are refused with RESOURCE_EXHAUSTED.  Watch is not replayed on the
 * shadow: it is a read of the primary's own history.
 */
#define WATCH_BUFFER ((size_t)1 << 20)

typedef struct watch_msg {
	struct watch_msg *next;
	size_t len;
	uint8_t data[];
} watch_msg;

typedef struct watch_relay {
	pemba_proxy *p;
	struct watch_relay *prev, *next; /* p->watch_list, under watch_mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;   /* space in the queue, or released */
	grpc_call *call;     /* valid while !released */
	grpc_client *client; /* valid while !upstream_done */
	uint8_t *request;
	size_t request_len;
	int timeout_ms;
	watch_msg *head, *tail;
	size_t bytes;
	bool released;      /* the call is over (release ran) */
	bool upstream_done; /* the primary's stream ended */
	int code;           /* its status, once upstream_done */
	grpc_status st;
	int refs; /* the call's (until release) and the thread's */
} watch_relay;

static void watch_unref(watch_relay *w)
{
	pthread_mutex_lock(&w->mu);
	bool last = --w->refs == 0;
	pthread_mutex_unlock(&w->mu);
	if (!last)
		return;
	pemba_proxy *p = w->p;
	while (w->head) {
		watch_msg *m = w->head;
		w->head = m->next;
		free(m);
	}
	grpc_status_clear(&w->st);
	free(w->request);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
	pthread_mutex_lock(&p->watch_mu);
	p->watches--;
	pthread_cond_broadcast(&p->watch_cv);
	pthread_mutex_unlock(&p->watch_mu);
}

/* The thread's grpc_message_fn: queues one message of the primary. */
static int watch_message(void *ctx, const uint8_t *data, size_t len)
{
	watch_relay *w = ctx;
	watch_msg *m = xmalloc(sizeof(*m) + len);
	m->next = NULL;
	m->len = len;
	memcpy(m->data, data, len);
	pthread_mutex_lock(&w->mu);
	while (w->bytes >= WATCH_BUFFER && !w->released)
		pthread_cond_wait(&w->cv, &w->mu);
	if (w->released) {
		pthread_mutex_unlock(&w->mu);
		free(m);
		return 1; /* the client is gone: cancel the stream */
	}
	if (w->tail)
		w->tail->next = m;
	else
		w->head = m;
	w->tail = m;
	w->bytes += len;
	grpc_call_wake(w->call);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

static void *watch_main(void *arg)
{
	watch_relay *w = arg;
	pemba_proxy *p = w->p;
	grpc_metadata md[1];
	size_t nmd = primary_metadata(p, md);
	grpc_status st = {0};
	int code = grpc_client_server_streaming(
	    w->client, "/authzed.api.v1.WatchService/Watch", md, nmd,
	    w->timeout_ms, w->request, w->request_len, watch_message, w, &st);
	pthread_mutex_lock(&w->mu);
	bool gone = w->released;
	if (!gone && code == GRPC_STATUS_UNAVAILABLE)
		PROXY_COUNT(p, primary_errors);
	w->code = code;
	w->st = st;
	w->upstream_done = true;
	if (!gone)
		grpc_call_wake(w->call);
	pthread_mutex_unlock(&w->mu);
	grpc_client_close(w->client); /* nobody aborts it any more */
	w->client = NULL;
	pthread_mutex_lock(&p->watch_mu);
	if (w->prev)
		w->prev->next = w->next;
	else
		p->watch_list = w->next;
	if (w->next)
		w->next->prev = w->prev;
	int open = p->watches;
	p->watch_threads--;
	pthread_cond_broadcast(&p->watch_cv);
	pthread_mutex_unlock(&p->watch_mu);
	proxy_logf(p, 2, "Watch: the primary's stream ended (%s%s), %d open",
	           gone ? "the client went away" : grpc_status_name(code),
	           gone ? "" : " from the primary", open - 1);
	watch_unref(w);
	return NULL;
}

static grpc_step watch_step(grpc_call *call, void *state)
{
	watch_relay *w = state;
	pthread_mutex_lock(&w->mu);
	while (w->head && grpc_call_writable(call)) {
		watch_msg *m = w->head;
		w->head = m->next;
		if (!w->head)
			w->tail = NULL;
		w->bytes -= m->len;
		/* Never blocks inside a step. */
		grpc_call_send(call, m->data, m->len);
		free(m);
	}
	pthread_cond_broadcast(&w->cv);
	grpc_step r = GRPC_STEP_WAIT;
	if (w->head)
		r = GRPC_STEP_MORE;
	else if (w->upstream_done) {
		finish_as_primary(call, w->code, &w->st);
		r = GRPC_STEP_DONE;
	}
	pthread_mutex_unlock(&w->mu);
	return r;
}

static void watch_release(grpc_call *call, void *state)
{
	(void)call;
	watch_relay *w = state;
	pthread_mutex_lock(&w->mu);
	w->released = true;
	if (!w->upstream_done)
		grpc_client_abort(w->client); /* ends a silent stream too */
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	watch_unref(w);
}

static void handle_watch(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	const uint8_t *req;
	size_t req_len;
	if (grpc_call_read(call, &req, &req_len) != 1)
		return;
	int timeout_ms;
	if (!call_timeout(call, 0, &timeout_ms))
		return;
	pthread_mutex_lock(&p->watch_mu);
	bool full = p->watches >= p->o.max_watch_streams;
	if (!full) {
		p->watches++;
		p->watch_threads++;
	}
	int open = p->watches;
	pthread_mutex_unlock(&p->watch_mu);
	if (full) {
		grpc_call_finishf(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                  "pemba proxy: too many Watch streams open "
		                  "(%d, --max-watch-streams); retry later",
		                  p->o.max_watch_streams);
		return;
	}
	PROXY_COUNT(p, calls);
	proxy_logf(p, 2, "Watch: stream opened, %d open", open);
	watch_relay *w = xcalloc(1, sizeof(*w));
	w->p = p;
	w->call = call;
	w->refs = 2;
	w->timeout_ms = timeout_ms;
	w->request = xmalloc(req_len ? req_len : 1);
	memcpy(w->request, req, req_len);
	w->request_len = req_len;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	/* Connect here, so that an unreachable primary is answered at once
	 * as for any other call. */
	pemba_error err = {0};
	grpc_client_options co;
	proxy_client_options(&p->o.primary, &co);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t thread;
	bool started = false;
	if (grpc_client_connect(&co, &w->client, &err) != 0) {
		PROXY_COUNT(p, primary_errors);
		grpc_call_finishf(call, GRPC_STATUS_UNAVAILABLE,
		                  "pemba proxy: primary %s unreachable: %s",
		                  p->o.primary.endpoint, err.message);
	} else if (grpc_call_suspend(call, watch_step, watch_release, w) == 0) {
		/* From here the call is the transport's: w->call only under
		 * w->mu while !released. */
		pthread_mutex_lock(&p->watch_mu);
		w->next = p->watch_list;
		if (w->next)
			w->next->prev = w;
		p->watch_list = w;
		pthread_mutex_unlock(&p->watch_mu);
		started = pthread_create(&thread, &attr, watch_main, w) == 0;
		if (!started) {
			pthread_mutex_lock(&p->watch_mu);
			if (w->prev)
				w->prev->next = w->next;
			else
				p->watch_list = w->next;
			if (w->next)
				w->next->prev = w->prev;
			p->watch_threads--;
			pthread_mutex_unlock(&p->watch_mu);
			pthread_mutex_lock(&w->mu);
			w->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
			w->st.message = xstrdup("pemba proxy: cannot start a "
			                        "Watch thread");
			w->upstream_done = true;
			if (!w->released)
				grpc_call_wake(w->call);
			pthread_mutex_unlock(&w->mu);
			grpc_client_close(w->client);
			w->client = NULL;
			watch_unref(w); /* the thread's */
		}
		pthread_attr_destroy(&attr);
		return;
	}
	pthread_attr_destroy(&attr);
	/* Not suspended (the client left, or no primary): both refs here. */
	grpc_client_close(w->client);
	w->client = NULL;
	pthread_mutex_lock(&p->watch_mu);
	p->watch_threads--;
	pthread_mutex_unlock(&p->watch_mu);
	w->refs = 1;
	watch_unref(w);
}

/* At exit, after the transport stopped: breaks the primary connections of
 * the Watch threads still running and waits for them (a few seconds at
 * most), so that none outlives the proxy. */
static void watch_stop_all(pemba_proxy *p)
{
	pthread_mutex_lock(&p->watch_mu);
	for (watch_relay *w = p->watch_list; w; w = w->next) {
		pthread_mutex_lock(&w->mu);
		w->released = true; /* the call is over too */
		if (!w->upstream_done)
			grpc_client_abort(w->client);
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
	}
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	while (p->watch_threads > 0)
		if (pthread_cond_timedwait(&p->watch_cv, &p->watch_mu,
		                           &until) != 0)
			break;
	pthread_mutex_unlock(&p->watch_mu);
}

/* ===================================================================== */
/* Lifecycle                                                             */
/* ===================================================================== */

static void log_to_proxy(void *ctx, int level, const char *message)
{
	pemba_proxy *p = ctx;
	if (p->o.log)
		p->o.log(p->o.log_ctx, level, message);
}

int proxy_new(const proxy_options *options, pemba_proxy **out, pemba_error *err)
{
	*out = NULL;
	const proxy_options *o = options;
	if (!o->listen_addr || !*o->listen_addr)
		return error_set(err, PEMBA_EINVAL,
		                 "proxy: a listen address is required");
	if (!o->preshared_key || !*o->preshared_key)
		return error_set(err, PEMBA_EINVAL,
		                 "proxy: a preshared key is required");
	if (!o->primary.endpoint || !*o->primary.endpoint ||
	    !o->shadow.endpoint || !*o->shadow.endpoint)
		return error_set(err, PEMBA_EINVAL,
		                 "proxy: the primary and the shadow "
		                 "endpoints are required");
	if (!(o->shadow_read_sample >= 0 && o->shadow_read_sample <= 1))
		return error_set(err, PEMBA_EINVAL,
		                 "proxy: the shadow read sample must be "
		                 "between 0 and 1");
	pemba_proxy *p = xcalloc(1, sizeof(*p));
	p->o = *o;
	if (!p->o.shadow_queue_max)
		p->o.shadow_queue_max = 10000;
	if (!p->o.shadow_queue_bytes)
		p->o.shadow_queue_bytes = (size_t)64 << 20;
	if (p->o.shadow_timeout_ms <= 0)
		p->o.shadow_timeout_ms = 5000;
	if (p->o.primary_timeout_ms <= 0)
		p->o.primary_timeout_ms = 30000;
	/* A worker spends a relayed call waiting on the primary, so it
	 * needs more of them than the transport's default (2 per CPU) to
	 * keep the primary busy; but each one more contends for the job
	 * queue: bench/bench_proxy.sh on 2 CPUs, 64 checks in flight, cost
	 * 49 us of proxy CPU per call with 16 workers, 50 with 32, 77 with
	 * 64, and gave the best throughput with 16 to 32. */
	if (p->o.workers <= 0)
		p->o.workers = 16;
	if (p->o.max_watch_streams <= 0)
		p->o.max_watch_streams = 100;
	p->key = xstrdup(o->preshared_key);
	p->primary_auth = bearer(o->primary.token);
	p->shadow_auth = bearer(o->shadow.token);
	pthread_mutex_init(&p->pool_mu, NULL);
	pthread_mutex_init(&p->watch_mu, NULL);
	pthread_cond_init(&p->watch_cv, NULL);
	pthread_mutex_init(&p->sh.mu, NULL);
	pthread_cond_init(&p->sh.cv, NULL);

	p->table = xcalloc(NMETHODS, sizeof(*p->table));
	for (size_t i = 0; i < NMETHODS; i++)
		p->table[i] = (grpc_method){
		    methods[i].path, methods[i].kind,
		    methods[i].cls == PROXY_UNIMPLEMENTED ? handle_unimplemented
		    : methods[i].cls == PROXY_LOCAL       ? handle_stats
		    : methods[i].cls == PROXY_REFLECTION  ? handle_reflection
		    : methods[i].cls == PROXY_IMPORT      ? handle_import
		    : methods[i].cls == PROXY_WATCH       ? handle_watch
		    : methods[i].kind == GRPC_METHOD_SERVER_STREAMING
		        ? handle_server_stream
		        : handle_unary,
		    p};
	/* Relayed unary calls never block (the mux answers): they run on
	 * the transport's event loop. */
	p->on_loop = xcalloc(NMETHODS, sizeof(*p->on_loop));
	for (size_t i = 0; i < NMETHODS; i++)
		p->on_loop[i] = methods[i].kind == GRPC_METHOD_UNARY &&
		                methods[i].cls != PROXY_UNIMPLEMENTED &&
		                methods[i].cls != PROXY_LOCAL;
	p->ntable = NMETHODS;

	grpc_server_options g;
	grpc_server_options_init(&g);
	g.listen_addr = o->listen_addr;
	g.tls_cert_path = o->tls_cert_path;
	g.tls_key_path = o->tls_key_path;
	g.methods = p->table;
	g.method_count = p->ntable;
	g.methods_on_loop = p->on_loop;
	g.worker_threads = p->o.workers;
	g.max_receive_message_size = o->max_message_size;
	g.shutdown_timeout_ms = o->shutdown_timeout_ms;
	g.auth = check_key;
	g.auth_ctx = p;
	g.log = log_to_proxy;
	g.log_ctx = p;
	int rc = grpc_server_new(&g, &p->server, err);
	if (rc == 0) {
		grpc_client_options co;
		proxy_client_options(&p->o.primary, &co);
		rc = grpc_mux_new(&co, &p->mux, err);
	}
	if (rc != 0) {
		proxy_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

int proxy_port(const pemba_proxy *proxy)
{
	return grpc_server_port(proxy->server);
}

int proxy_run(pemba_proxy *p, pemba_error *err)
{
	int rc = shadow_start(p, err);
	if (rc != 0)
		return rc;
	rc = grpc_server_run(p->server, err);
	/* Calls still waiting for the primary past the shutdown grace end
	 * CANCELLED here, while the server they belong to still exists. */
	grpc_mux_free(p->mux);
	p->mux = NULL;
	watch_stop_all(p);
	shadow_stop(p);
	return rc;
}

void proxy_shutdown(pemba_proxy *p)
{
	grpc_server_shutdown(p->server);
}

void proxy_stats_get(pemba_proxy *p, proxy_stats *s)
{
	const proxy_counters *c = &p->counters;
#define GET(f) __atomic_load_n(&c->f, __ATOMIC_RELAXED)
	*s = (proxy_stats){
	    .calls = GET(calls),
	    .primary_errors = GET(primary_errors),
	    .unimplemented = GET(unimplemented),
	    .shadow_writes = GET(shadow_writes),
	    .shadow_reads = GET(shadow_reads),
	    .sampled_out = GET(sampled_out),
	    .mismatches = GET(mismatches),
	    .shadow_errors = GET(shadow_errors),
	    .dropped = GET(dropped),
	    .stale = GET(stale),
	    .queued = GET(queued),
	};
#undef GET
}

void proxy_stats_format(const proxy_stats *s, char *buf, size_t n)
{
	snprintf(buf, n,
	         "calls=%llu primary_errors=%llu unimplemented=%llu "
	         "shadow_writes=%llu shadow_reads=%llu sampled_out=%llu "
	         "mismatches=%llu shadow_errors=%llu dropped=%llu stale=%llu "
	         "queued=%llu",
	         (unsigned long long)s->calls,
	         (unsigned long long)s->primary_errors,
	         (unsigned long long)s->unimplemented,
	         (unsigned long long)s->shadow_writes,
	         (unsigned long long)s->shadow_reads,
	         (unsigned long long)s->sampled_out,
	         (unsigned long long)s->mismatches,
	         (unsigned long long)s->shadow_errors,
	         (unsigned long long)s->dropped, (unsigned long long)s->stale,
	         (unsigned long long)s->queued);
}

void proxy_free(pemba_proxy *p)
{
	if (!p)
		return;
	grpc_mux_free(p->mux);
	grpc_server_free(p->server);
	for (size_t i = 0; i < p->nidle; i++)
		grpc_client_close(p->idle[i]);
	free(p->idle);
	free(p->table);
	free(p->on_loop);
	free(p->key);
	free(p->primary_auth);
	free(p->shadow_auth);
	pthread_mutex_destroy(&p->pool_mu);
	pthread_mutex_destroy(&p->watch_mu);
	pthread_cond_destroy(&p->watch_cv);
	pthread_mutex_destroy(&p->sh.mu);
	pthread_cond_destroy(&p->sh.cv);
	free(p);
}
