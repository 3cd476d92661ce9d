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
    {PS "ImportBulkRelationships", GRPC_METHOD_CLIENT_STREAMING,
     PROXY_UNIMPLEMENTED, "ImportBulkRelationships"},
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
    {XS "BulkImportRelationships", GRPC_METHOD_CLIENT_STREAMING,
     PROXY_UNIMPLEMENTED, "BulkImportRelationships"},
    {XS "BulkExportRelationships", GRPC_METHOD_SERVER_STREAMING, PROXY_STREAM,
     "BulkExportRelationships"},
    {"/authzed.api.v1.WatchService/Watch", GRPC_METHOD_SERVER_STREAMING,
     PROXY_UNIMPLEMENTED, "Watch"},
    {"/grpc.health.v1.Health/Check", GRPC_METHOD_UNARY, PROXY_PASS,
     "Health.Check"},
    {PROXY_STATS_PATH, GRPC_METHOD_UNARY, PROXY_LOCAL, "GetProxyStats"},
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

static void handle_unimplemented(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	PROXY_COUNT(p, unimplemented);
	grpc_call_finishf(call, GRPC_STATUS_UNIMPLEMENTED,
	                  "pemba proxy: %s is not proxied yet (streaming calls "
	                  "are not supported; call the primary directly)",
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

static const proxy_method *method_of(const grpc_call *call)
{
	const char *path = grpc_call_path(call);
	for (size_t i = 0; i < NMETHODS; i++)
		if (strcmp(methods[i].path, path) == 0)
			return &methods[i];
	return NULL;
}

/*
 * A unary call: the request's bytes go to the primary unchanged (with the
 * primary's token instead of the client's), and the primary's response
 * bytes and status come back unchanged.  Then, when the primary said OK,
 * the call is handed to the shadow (shadow_submit), which never blocks.
 */
static void handle_unary(grpc_call *call, void *ctx)
{
	pemba_proxy *p = ctx;
	const proxy_method *m = method_of(call);
	const uint8_t *req;
	size_t req_len;
	if (grpc_call_read(call, &req, &req_len) != 1)
		return; /* the transport finished the call */
	int timeout_ms = p->o.primary_timeout_ms;
	int64_t deadline = grpc_call_deadline(call);
	if (deadline) {
		int64_t left = (deadline - proxy_now_ns()) / 1000000;
		if (left <= 0) {
			grpc_call_finish(call, GRPC_STATUS_DEADLINE_EXCEEDED,
			                 "deadline exceeded");
			return;
		}
		timeout_ms = left > 0x7fffffff ? 0x7fffffff : (int)left;
	}
	PROXY_COUNT(p, calls);
	pemba_error err = {0};
	grpc_client *c = pool_acquire(p, &err);
	if (!c) {
		PROXY_COUNT(p, primary_errors);
		grpc_call_finishf(call, GRPC_STATUS_UNAVAILABLE,
		                  "pemba proxy: primary %s unreachable: %s",
		                  p->o.primary.endpoint, err.message);
		return;
	}
	grpc_metadata md[1];
	size_t nmd = 0;
	if (p->primary_auth)
		md[nmd++] =
		    (grpc_metadata){"authorization", p->primary_auth, 0};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	int code =
	    grpc_client_unary(c, grpc_call_path(call), md, nmd, timeout_ms, req,
	                      req_len, &resp, &resp_len, &st);
	/* A connection that saw a transport-level failure may be broken;
	 * a new one is cheap next to serving on a dead one. */
	bool reuse = code != GRPC_STATUS_UNAVAILABLE &&
	             code != GRPC_STATUS_DEADLINE_EXCEEDED &&
	             code != GRPC_STATUS_INTERNAL &&
	             code != GRPC_STATUS_CANCELLED;
	pool_release(p, c, reuse);
	if (code == GRPC_STATUS_OK) {
		grpc_call_send(call, resp, resp_len);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
		if (m && m->cls != PROXY_PASS && shadow_wants(p, m))
			shadow_submit(p, m, req, req_len, resp, resp_len);
	} else {
		if (code == GRPC_STATUS_UNAVAILABLE)
			PROXY_COUNT(p, primary_errors);
		grpc_call_finish(call, code, st.message);
	}
	free(resp);
	grpc_status_clear(&st);
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
	int timeout_ms = 0;
	int64_t deadline = grpc_call_deadline(call);
	if (deadline) {
		int64_t left = (deadline - proxy_now_ns()) / 1000000;
		if (left <= 0) {
			grpc_call_finish(call, GRPC_STATUS_DEADLINE_EXCEEDED,
			                 "deadline exceeded");
			return;
		}
		timeout_ms = left > 0x7fffffff ? 0x7fffffff : (int)left;
	}
	PROXY_COUNT(p, calls);
	pemba_error err = {0};
	grpc_client *c = pool_acquire(p, &err);
	if (!c) {
		PROXY_COUNT(p, primary_errors);
		grpc_call_finishf(call, GRPC_STATUS_UNAVAILABLE,
		                  "pemba proxy: primary %s unreachable: %s",
		                  p->o.primary.endpoint, err.message);
		return;
	}
	grpc_metadata md[1];
	size_t nmd = 0;
	if (p->primary_auth)
		md[nmd++] =
		    (grpc_metadata){"authorization", p->primary_auth, 0};
	relay r = {.call = call, .m = m};
	r.collect = m->cls == PROXY_LOOKUP && shadow_wants(p, m);
	r.keys.max_bytes = p->o.shadow_queue_bytes;
	grpc_status st = {0};
	int code =
	    grpc_client_server_streaming(c, m->path, md, nmd, timeout_ms, req,
	                                 req_len, relay_message, &r, &st);
	bool reuse = !r.client_gone && code != GRPC_STATUS_UNAVAILABLE &&
	             code != GRPC_STATUS_DEADLINE_EXCEEDED &&
	             code != GRPC_STATUS_INTERNAL &&
	             code != GRPC_STATUS_CANCELLED;
	pool_release(p, c, reuse);
	if (!r.client_gone) {
		if (code == GRPC_STATUS_UNAVAILABLE)
			PROXY_COUNT(p, primary_errors);
		grpc_call_finish(call, code,
		                 code == GRPC_STATUS_OK ? NULL : st.message);
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
	p->key = xstrdup(o->preshared_key);
	p->primary_auth = bearer(o->primary.token);
	p->shadow_auth = bearer(o->shadow.token);
	pthread_mutex_init(&p->pool_mu, NULL);
	pthread_mutex_init(&p->sh.mu, NULL);
	pthread_cond_init(&p->sh.cv, NULL);

	p->table = xcalloc(NMETHODS, sizeof(*p->table));
	for (size_t i = 0; i < NMETHODS; i++)
		p->table[i] = (grpc_method){
		    methods[i].path, methods[i].kind,
		    methods[i].cls == PROXY_UNIMPLEMENTED ? handle_unimplemented
		    : methods[i].cls == PROXY_LOCAL       ? handle_stats
		    : methods[i].kind == GRPC_METHOD_SERVER_STREAMING
		        ? handle_server_stream
		        : handle_unary,
		    p};
	p->ntable = NMETHODS;

	grpc_server_options g;
	grpc_server_options_init(&g);
	g.listen_addr = o->listen_addr;
	g.tls_cert_path = o->tls_cert_path;
	g.tls_key_path = o->tls_key_path;
	g.methods = p->table;
	g.method_count = p->ntable;
	g.worker_threads = o->workers;
	g.max_receive_message_size = o->max_message_size;
	g.shutdown_timeout_ms = o->shutdown_timeout_ms;
	g.auth = check_key;
	g.auth_ctx = p;
	g.log = log_to_proxy;
	g.log_ctx = p;
	int rc = grpc_server_new(&g, &p->server, err);
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
	grpc_server_free(p->server);
	for (size_t i = 0; i < p->nidle; i++)
		grpc_client_close(p->idle[i]);
	free(p->idle);
	free(p->table);
	free(p->key);
	free(p->primary_auth);
	free(p->shadow_auth);
	pthread_mutex_destroy(&p->pool_mu);
	pthread_mutex_destroy(&p->sh.mu);
	pthread_cond_destroy(&p->sh.cv);
	free(p);
}
