/*
 * observe.c -- what an operator sees of a running server besides its
 * answers: Prometheus metrics and health over HTTP/1.1 (http_endpoint.c),
 * the datastore's health for the gRPC health service, request ids, and
 * the request log.
 *
 * Hot path: every call to a method of the table gets a slot resolved at
 * start (the table's row); the end adds to that slot's counters and
 * histogram with relaxed atomics (metrics.h).  No lock, no allocation,
 * no lookup by name per call.  When metrics are off the counting is
 * skipped; request ids and the request log work either way.
 *
 * Health: a thread borrows a handle once a second and reads the head
 * revision.  The datastore is healthy while the last probe succeeded and
 * ended less than HEALTH_STALE_MS ago, so a probe that hangs (a datastore
 * that stopped answering) turns health off within that time without any
 * caller waiting on the datastore.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics/metrics.h"
#include "server/server.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define HEALTH_INTERVAL_MS 1000
#define HEALTH_STALE_MS 5000
#define NCODES 17

/* The figures of one method (a row of the dispatch table). */
typedef struct method_slot {
	char service[128];
	char method[96];
	const char *type; /* go-grpc-prometheus's grpc_type */
	metrics_counter started;
	metrics_counter handled[NCODES];
	metrics_counter received, sent;
	metrics_histogram seconds;
} method_slot;

struct server_observer {
	bool counting; /* metrics on */
	method_slot *slots;
	size_t nslots;
	server_request_log_fn request_log;
	void *request_log_ctx;
	grpc_log_fn log;
	void *log_ctx;
	char *metrics_addr;
	bool metrics_required;
	server_lifecycle *life;
	grpc_server *grpc;
	server_http *http;
	int http_port;
	char http_error[300]; /* why the default address could not serve */
	/* Request ids: a per-process seed and a sequence. */
	uint64_t id_seed;
	_Atomic uint64_t id_seq;
	/* Health (under mu). */
	db_pool *pool;
	pthread_t prober;
	bool prober_running;
	bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	bool healthy;
	int64_t probed_ms; /* CLOCK_MONOTONIC end of the last probe */
	char reason[256];
	pemba_revision head;
	metrics_counter probes, probe_failures;
};

static int64_t monotonic_ms(void)
{
	return metrics_now_ns() / 1000000;
}

/* ===================================================================== */
/* Calls                                                                 */
/* ===================================================================== */

static const char *kind_name(grpc_method_kind k)
{
	switch (k) {
	case GRPC_METHOD_UNARY:
		return "unary";
	case GRPC_METHOD_SERVER_STREAMING:
		return "server_stream";
	case GRPC_METHOD_CLIENT_STREAMING:
		return "client_stream";
	default:
		return "bidi_stream";
	}
}

/* splitmix64: spreads a sequence number over 64 bits. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

void server_observer_call_start(void *ctx, grpc_call *call, size_t method_index)
{
	server_observer *obs = ctx;
	/* The client's id when it sent a usable one (as SpiceDB does), else
	 * a fresh one; either way it comes back as x-request-id. */
	const char *theirs = grpc_call_metadata(call, "x-request-id");
	if (!theirs || grpc_call_set_request_id(call, theirs) != 0) {
		uint64_t n = atomic_fetch_add_explicit(&obs->id_seq, 1,
		                                       memory_order_relaxed);
		char id[17];
		snprintf(id, sizeof(id), "%016" PRIx64,
		         mix64(obs->id_seed ^ n));
		grpc_call_set_request_id(call, id);
	}
	if (obs->counting && method_index < obs->nslots)
		metrics_counter_add(&obs->slots[method_index].started, 1);
}

void server_observer_call_end(void *ctx, grpc_call *call, size_t method_index,
                              const grpc_call_outcome *o)
{
	server_observer *obs = ctx;
	if (obs->counting && method_index < obs->nslots) {
		method_slot *m = &obs->slots[method_index];
		int code = o->status >= 0 && o->status < NCODES
		               ? o->status
		               : GRPC_STATUS_UNKNOWN;
		metrics_counter_add(&m->handled[code], 1);
		if (o->messages_received)
			metrics_counter_add(&m->received, o->messages_received);
		if (o->messages_sent)
			metrics_counter_add(&m->sent, o->messages_sent);
		metrics_histogram_observe(&m->seconds, o->duration_ns);
	}
	if (obs->request_log) {
		server_request_record r = {
		    .method = grpc_call_path(call),
		    .status = o->status,
		    .duration_ns = o->duration_ns,
		    .request_id = grpc_call_request_id(call),
		    .peer = grpc_call_peer(call),
		    .principal = grpc_call_principal(call),
		};
		obs->request_log(obs->request_log_ctx, &r);
	}
}

/* ===================================================================== */
/* Health                                                                */
/* ===================================================================== */

static void probe_once(server_observer *obs)
{
	pemba_db *db = NULL;
	pemba_error err = {0};
	pemba_revision head = 0;
	int rc = db_pool_acquire(obs->pool, false, &db, &err);
	if (rc == 0) {
		rc = pemba_head_revision(db, &head, &err);
		db_pool_release(obs->pool, db, false);
	}
	metrics_counter_add(&obs->probes, 1);
	if (rc < 0)
		metrics_counter_add(&obs->probe_failures, 1);
	pthread_mutex_lock(&obs->mu);
	bool first = obs->probed_ms == 0;
	bool was = obs->healthy;
	obs->healthy = rc == 0;
	obs->probed_ms = monotonic_ms();
	if (rc == 0)
		obs->head = head;
	else
		snprintf(obs->reason, sizeof(obs->reason),
		         "datastore unreachable: %.200s", err.message);
	pthread_mutex_unlock(&obs->mu);
	if (((first && rc != 0) || (!first && was != (rc == 0))) && obs->log) {
		char line[400];
		snprintf(line, sizeof(line), "health: %s",
		         rc == 0 ? "datastore reachable again: SERVING"
		                 : obs->reason);
		obs->log(obs->log_ctx, rc == 0 ? 2 : 1, line);
	}
}

static void *prober_main(void *arg)
{
	server_observer *obs = arg;
	pthread_mutex_lock(&obs->mu);
	while (!obs->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += HEALTH_INTERVAL_MS / 1000;
		while (!obs->stop &&
		       pthread_cond_timedwait(&obs->cond, &obs->mu, &ts) !=
		           ETIMEDOUT)
			;
		if (obs->stop)
			break;
		pthread_mutex_unlock(&obs->mu);
		probe_once(obs);
		pthread_mutex_lock(&obs->mu);
	}
	pthread_mutex_unlock(&obs->mu);
	return NULL;
}

int server_observer_health(server_observer *obs, const char **reason)
{
	static _Thread_local char text[256];
	if (!obs || !obs->pool)
		return 0;
	pthread_mutex_lock(&obs->mu);
	bool ok = obs->healthy;
	int64_t age = monotonic_ms() - obs->probed_ms;
	if (!ok)
		memcpy(text, obs->reason, sizeof(text));
	pthread_mutex_unlock(&obs->mu);
	if (ok && age > HEALTH_STALE_MS) {
		snprintf(text, sizeof(text),
		         "datastore unreachable: no answer for %" PRId64 " ms",
		         age);
		ok = false;
	}
	if (ok)
		return 0;
	*reason = text;
	return -1;
}

/* ===================================================================== */
/* Exposition                                                            */
/* ===================================================================== */

static void write_grpc(server_observer *obs, strbuf *out)
{
	static const char *const families[4][3] = {
	    {"grpc_server_started_total", "counter",
	     "Total number of RPCs started on the server."},
	    {"grpc_server_handled_total", "counter",
	     "Total number of RPCs completed on the server, regardless of "
	     "success or failure."},
	    {"grpc_server_msg_received_total", "counter",
	     "Total number of RPC stream messages received on the server."},
	    {"grpc_server_msg_sent_total", "counter",
	     "Total number of gRPC stream messages sent by the server."},
	};
	for (int f = 0; f < 4; f++) {
		metrics_write_header(out, families[f][0], families[f][1],
		                     families[f][2]);
		for (size_t i = 0; i < obs->nslots; i++) {
			method_slot *m = &obs->slots[i];
			metrics_label l[4] = {{"grpc_method", m->method},
			                      {"grpc_service", m->service},
			                      {"grpc_type", m->type},
			                      {NULL, NULL}};
			if (f == 0 || f >= 2) {
				metrics_counter *c = f == 0   ? &m->started
				                     : f == 2 ? &m->received
				                              : &m->sent;
				metrics_write_sample(
				    out, families[f][0], l, 3,
				    (double)metrics_counter_get(c));
				continue;
			}
			/* OK always (a series that starts at 0), other
			 * codes once seen. */
			for (int code = 0; code < NCODES; code++) {
				uint64_t n =
				    metrics_counter_get(&m->handled[code]);
				if (n == 0 && code != GRPC_STATUS_OK)
					continue;
				metrics_label lc[4] = {
				    {"grpc_code", grpc_status_name(code)},
				    l[0],
				    l[1],
				    l[2]};
				metrics_write_sample(out, families[f][0], lc, 4,
				                     (double)n);
			}
		}
	}
	metrics_write_header(out, "grpc_server_handling_seconds", "histogram",
	                     "Histogram of response latency (seconds) of gRPC "
	                     "that had been application-level handled by the "
	                     "server.");
	for (size_t i = 0; i < obs->nslots; i++) {
		method_slot *m = &obs->slots[i];
		metrics_label l[3] = {{"grpc_method", m->method},
		                      {"grpc_service", m->service},
		                      {"grpc_type", m->type}};
		metrics_write_histogram(out, "grpc_server_handling_seconds", l,
		                        3, &m->seconds);
	}
}

static void gauge(strbuf *out, const char *name, const char *help, double v)
{
	metrics_write_header(out, name, "gauge", help);
	metrics_write_sample(out, name, NULL, 0, v);
}

static void counter(strbuf *out, const char *name, const char *help, double v)
{
	metrics_write_header(out, name, "counter", help);
	metrics_write_sample(out, name, NULL, 0, v);
}

/* The whole /metrics page.  Caller frees *out's text. */
static void render(server_observer *obs, strbuf *out)
{
	write_grpc(obs, out);
	if (obs->grpc) {
		grpc_server_stats st;
		grpc_server_stats_get(obs->grpc, &st);
		gauge(out, "pemba_grpc_connections",
		      "Open gRPC (HTTP/2) connections.", st.connections);
		gauge(out, "pemba_grpc_open_streams",
		      "Streaming gRPC calls open (Watch, bulk import and "
		      "export, ...).",
		      st.open_streams);
		gauge(out, "pemba_grpc_calls_in_flight",
		      "gRPC calls of any kind not yet finished.", st.calls);
	}
	metrics_process_figures *p = metrics_process();
	counter(out, "pemba_datastore_queries_total",
	        "Relationship queries sent to the datastore (query cache "
	        "hits included).",
	        (double)metrics_counter_get(&p->datastore_queries));
	counter(out, "pemba_datastore_query_errors_total",
	        "Relationship queries that failed.",
	        (double)metrics_counter_get(&p->datastore_query_errors));
	metrics_write_header(out, "pemba_datastore_query_seconds", "histogram",
	                     "Latency of relationship queries until their "
	                     "first row is ready.");
	metrics_write_histogram(out, "pemba_datastore_query_seconds", NULL, 0,
	                        &p->datastore_query_seconds);
	counter(out, "pemba_check_requests_total",
	        "Permission checks evaluated (one per item of a bulk "
	        "check).",
	        (double)metrics_counter_get(&p->checks));
	counter(out, "pemba_check_dispatches_total",
	        "Sub-problems the checks evaluated (SpiceDB's dispatches; "
	        "memoized ones not counted).",
	        (double)metrics_counter_get(&p->check_dispatches));
	if (obs->pool) {
		pthread_mutex_lock(&obs->mu);
		pemba_revision head = obs->head;
		pthread_mutex_unlock(&obs->mu);
		const char *reason;
		gauge(out, "pemba_datastore_up",
		      "1 when the datastore answered the last health probe "
		      "(within 5 s), else 0.",
		      server_observer_health(obs, &reason) == 0 ? 1 : 0);
		counter(out, "pemba_datastore_health_probes_total",
		        "Health probes of the datastore (one a second).",
		        (double)metrics_counter_get(&obs->probes));
		counter(out, "pemba_datastore_health_probe_failures_total",
		        "Health probes the datastore did not answer.",
		        (double)metrics_counter_get(&obs->probe_failures));
		gauge(out, "pemba_revision_head",
		      "The datastore's head revision at the last health "
		      "probe.",
		      (double)head);
	}
	if (obs->life) {
		server_gc_figures g;
		server_lifecycle_gc_figures(obs->life, &g);
		counter(out, "pemba_gc_runs_total",
		        "Completed garbage collection runs.", (double)g.runs);
		counter(out, "pemba_gc_failures_total",
		        "Garbage collection runs that failed.",
		        (double)g.failures);
		counter(out, "pemba_gc_relationships_deleted_total",
		        "Relationship versions (and expired relationships) "
		        "removed by garbage collection.",
		        (double)g.relationships_deleted);
		gauge(out, "pemba_gc_last_run_timestamp_seconds",
		      "Unix time of the last successful garbage collection "
		      "run (0: none yet).",
		      (double)g.last_run_ms / 1000.0);
	}
}

/* ===================================================================== */
/* HTTP                                                                  */
/* ===================================================================== */

static void render_page(void *ctx, strbuf *out)
{
	render(ctx, out);
}

static int health_page(void *ctx, const char **reason)
{
	return server_observer_health(ctx, reason);
}

int server_observer_listen(server_observer *obs, grpc_server *grpc,
                           pemba_error *err)
{
	obs->grpc = grpc;
	if (!obs->metrics_addr)
		return 0;
	char why[200];
	obs->http =
	    server_http_start(obs->metrics_addr, render_page, health_page, obs,
	                      &obs->http_port, why, sizeof(why));
	if (obs->http)
		return 0;
	obs->counting = false;
	obs->http_port = 0;
	if (obs->metrics_required)
		return error_set(err, PEMBA_EIO,
		                 "--metrics-addr %s: cannot listen: %s",
		                 obs->metrics_addr, why);
	snprintf(obs->http_error, sizeof(obs->http_error),
	         "cannot listen on the default --metrics-addr %.100s: %.150s",
	         obs->metrics_addr, why);
	return 0;
}

int server_observer_port(const server_observer *obs)
{
	return obs && obs->http ? obs->http_port : 0;
}

const char *server_observer_error(const server_observer *obs)
{
	return obs && obs->http_error[0] ? obs->http_error : NULL;
}

/* ===================================================================== */
/* Lifetime                                                              */
/* ===================================================================== */

server_observer *server_observer_new(const server_options *o,
                                     const server_observer_sources *src)
{
	server_observer *obs = xcalloc(1, sizeof(*obs));
	obs->counting = o->metrics_addr != NULL;
	obs->metrics_addr = o->metrics_addr ? xstrdup(o->metrics_addr) : NULL;
	obs->metrics_required = o->metrics_addr_required;
	obs->request_log = o->request_log;
	obs->request_log_ctx = o->request_log_ctx;
	obs->log = o->log;
	obs->log_ctx = o->log_ctx;
	obs->life = src->life;
	obs->pool = src->pool;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	obs->id_seed = mix64((uint64_t)ts.tv_nsec ^
	                     ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid());
	atomic_init(&obs->id_seq, 0);
	obs->nslots = src->nmethods;
	obs->slots =
	    xcalloc(obs->nslots ? obs->nslots : 1, sizeof(method_slot));
	for (size_t i = 0; i < obs->nslots; i++) {
		method_slot *m = &obs->slots[i];
		const char *path = src->methods[i].path;
		const char *slash = strrchr(path, '/');
		const char *svc = path[0] == '/' ? path + 1 : path;
		if (slash && slash > svc) {
			snprintf(m->service, sizeof(m->service), "%.*s",
			         (int)(slash - svc), svc);
			snprintf(m->method, sizeof(m->method), "%s", slash + 1);
		} else {
			snprintf(m->method, sizeof(m->method), "%s", svc);
		}
		m->type = kind_name(src->methods[i].kind);
		metrics_histogram_init(&m->seconds, metrics_latency_bounds_ns,
		                       metrics_latency_nbounds);
	}
	pthread_mutex_init(&obs->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&obs->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (obs->pool) {
		/* The first answer before any caller asks. */
		probe_once(obs);
		if (pthread_create(&obs->prober, NULL, prober_main, obs) == 0)
			obs->prober_running = true;
	}
	return obs;
}

void server_observer_stop(server_observer *obs)
{
	if (!obs)
		return;
	server_http_stop(obs->http);
	obs->http = NULL;
	if (obs->prober_running) {
		pthread_mutex_lock(&obs->mu);
		obs->stop = true;
		pthread_cond_signal(&obs->cond);
		pthread_mutex_unlock(&obs->mu);
		pthread_join(obs->prober, NULL);
		obs->prober_running = false;
	}
	obs->life = NULL;
	obs->pool = NULL;
}

void server_observer_free(server_observer *obs)
{
	if (!obs)
		return;
	server_observer_stop(obs);
	pthread_cond_destroy(&obs->cond);
	pthread_mutex_destroy(&obs->mu);
	free(obs->slots);
	free(obs->metrics_addr);
	free(obs);
}
