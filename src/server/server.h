/*
 * server.h -- the pemba gRPC server: the transport (api/grpc.h), the
 * service handlers (api/services.h) and the datastores they run on.
 *
 * Two modes:
 *   - serve: one datastore (a URI), a pool of pemba_db handles over it so
 *     every worker thread has its own (db_pool), optional preshared keys;
 *   - testing: like `spicedb serve-testing`, every distinct bearer token
 *     gets its own empty in-memory datastore (testing_stores), bounded in
 *     number, idle ones evicted.
 *
 * The server never prints: it reports through the log callback.  Signal
 * handling is the caller's: server_shutdown is async-signal-safe.
 */
#ifndef PEMBA_SERVER_H
#define PEMBA_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "api/grpc.h"
#include "pemba.h"
#include "util/strbuf.h"

/* ===================================================================== */
/* Handle pools                                                          */
/* ===================================================================== */

/* A pool of handles over one datastore.  A primary handle stays open for
 * the pool's life (it keeps a memory datastore alive and is the source of
 * pemba_clone); callers borrow clones, one per thread at a time. */
typedef struct db_pool db_pool;

/* Opens `uri` with `opts` (may be NULL) and makes a pool; keeps at most
 * max_idle idle clones. */
int db_pool_open(const char *uri, const pemba_options *opts, size_t max_idle,
                 db_pool **out, pemba_error *err);
/* Borrows a handle (an idle one, or a new clone).  long_lived handles are
 * fresh clones closed on release, so a Watch never starves short calls. */
int db_pool_acquire(db_pool *pool, bool long_lived, pemba_db **out,
                    pemba_error *err);
void db_pool_release(db_pool *pool, pemba_db *db, bool long_lived);
/* Number of handles currently lent out. */
size_t db_pool_in_use(db_pool *pool);
/* Closes every handle; nothing may be lent out. */
void db_pool_close(db_pool *pool);

/* ===================================================================== */
/* serve-testing stores                                                  */
/* ===================================================================== */

#define TESTING_DEFAULT_MAX_STORES 1024
#define TESTING_DEFAULT_IDLE_SECONDS 600

typedef struct testing_stores testing_stores;

testing_stores *testing_stores_new(size_t max_stores, int idle_seconds);
/* Borrows a handle on the store of `token` (len bytes; "" is the shared
 * store of calls without a token), creating the store on first use.
 * PEMBA_ELIMIT when max_stores stores are all busy. */
int testing_stores_acquire(testing_stores *ts, const char *token, size_t len,
                           bool long_lived, pemba_db **out, pemba_error *err);
void testing_stores_release(testing_stores *ts, const char *token, size_t len,
                            bool long_lived, pemba_db *db);
size_t testing_stores_count(testing_stores *ts);
void testing_stores_free(testing_stores *ts);

/* ===================================================================== */
/* The server                                                            */
/* ===================================================================== */

/* One finished call, for the request log (--log-level debug). */
typedef struct server_request_record {
	const char *method; /* "/pkg.Service/Method" */
	int status;         /* grpc-status */
	int64_t duration_ns;
	const char *request_id; /* the client's x-request-id, or generated */
	const char *peer;       /* client IP, "" unknown */
	const char *principal;  /* name of the key used, or NULL */
} server_request_record;
typedef void (*server_request_log_fn)(void *ctx,
                                      const server_request_record *r);

typedef struct server_options {
	const char *grpc_addr;   /* default "127.0.0.1:50051" */
	const char *datastore;   /* serve: URI (default sqlite://./pemba.db) */
	bool testing;            /* serve-testing mode (datastore ignored) */
	const char *const *keys; /* preshared keys; nkeys 0: no auth */
	size_t nkeys;
	const char *tls_cert_path, *tls_key_path;
	/* The HTTP/JSON gateway (src/gateway): off unless http_enabled;
	 * http_addr default "127.0.0.1:8443"; TLS with both paths. */
	bool http_enabled;
	const char *http_addr;
	const char *http_tls_cert_path, *http_tls_key_path;
	size_t max_message_size; /* 0: transport default (4 MiB) */
	int workers;             /* 0: transport default */
	/* Transport limits and timers (grpc.h, grpc_server_options): 0
	 * for the transport's default, -1 for "never" where it allows. */
	int max_connections;
	int max_streams;
	int stream_stall_timeout_ms;
	int handshake_timeout_ms;
	int idle_timeout_ms;
	int keepalive_time_ms;
	int keepalive_timeout_ms;
	int keepalive_min_time_ms;
	bool read_only;
	size_t testing_max_stores; /* 0: TESTING_DEFAULT_MAX_STORES */
	int testing_idle_seconds;  /* 0: TESTING_DEFAULT_IDLE_SECONDS */
	int shutdown_timeout_ms;   /* 0: transport default */
	/* serve: garbage collection every gc_interval_ms (0: never) of
	 * what is older than gc_window_seconds (0: 24 h). */
	int64_t gc_interval_ms;
	int64_t gc_window_seconds;
	/* serve on PostgreSQL: connection pool sizes (0: the store's
	 * defaults; pemba_options.conn_pool_*). */
	int conn_pool_read_max_open;
	int conn_pool_write_max_open;
	/* serve on PostgreSQL: read replicas (pemba_options). */
	const char *const *read_replica_uris;
	int n_read_replica_uris;
	/* serve: pemba_options.query_cache_bytes of every handle (0: the
	 * engine's default, < 0: off). */
	int64_t query_cache_bytes;
	grpc_log_fn log;
	void *log_ctx;
	/* Metrics and health over HTTP/1.1 (observe.c): GET /metrics and
	 * GET /healthz on metrics_addr ("host:port", port 0: ephemeral);
	 * NULL: none, and calls are not counted.  When the address cannot
	 * be bound: an error if metrics_addr_required, else the server goes
	 * on without metrics and server_metrics_error says why. */
	const char *metrics_addr;
	bool metrics_addr_required;
	/* Called once per finished call (NULL: no request log). */
	server_request_log_fn request_log;
	void *request_log_ctx;
} server_options;

typedef struct pemba_server pemba_server;

/* The longest name of a preshared key. */
#define SERVER_KEY_NAME_MAX 64

/* Checks the preshared keys of server_options: a key is "NAME=SECRET",
 * named, when NAME is [A-Za-z0-9_.-]{1,64} and SECRET is neither empty
 * nor only '=' characters; otherwise the whole text is the secret of an
 * unnamed key (a base64 key ending in '=' or '==' stays a key).
 * PEMBA_EINVAL for an empty key, two keys with the same name, or two with
 * the same secret; messages never show a secret.  server_new runs it
 * too. */
int server_check_keys(const char *const *keys, size_t n, pemba_error *err);
/* The length of the NAME of a key given as "NAME=SECRET" by the rule
 * above, 0 for an unnamed key. */
size_t server_key_name_length(const char *key);
/* The name of the key a call presented ("NAME=SECRET") is the call's
 * principal (grpc_call_principal); NULL for an unnamed key. */

/* Opens the datastore (serve mode), binds the address.  Copies what it
 * needs from options. */
int server_new(const server_options *options, pemba_server **out,
               pemba_error *err);
int server_port(const pemba_server *server);
/* The HTTP gateway's bound port (after server_start_http), or 0. */
int server_http_port(const pemba_server *server);
/* Starts the HTTP gateway when options->http_enabled (server_run does it
 * itself when not done before).  0 or a negative pemba_code. */
int server_start_http(pemba_server *server, pemba_error *err);
/* Serves until server_shutdown; then finishes in-flight calls. */
int server_run(pemba_server *server, pemba_error *err);
/* Async-signal-safe. */
void server_shutdown(pemba_server *server);
/* Closes the datastores; the server must not be running. */
void server_free(pemba_server *server);

/* The bound port of the metrics endpoint, or 0 when there is none. */
int server_metrics_port(const pemba_server *server);
/* Why metrics_addr (not required) could not be served, or NULL. */
const char *server_metrics_error(const pemba_server *server);

/* True for 127.0.0.0/8, ::1 and "localhost" addresses ("host:port"). */
bool server_addr_is_loopback(const char *addr);

/* ===================================================================== */
/* The datastore's lifecycle under `serve` (lifecycle.c)                 */
/* ===================================================================== */

/* The server's own handle on its datastore.  Opening it creates a new
 * datastore, or refuses one with pending layout migrations
 * (PEMBA_EVERSION naming `pemba datastore migrate head --datastore URI`);
 * it then attaches to the datastore (pemba_attach: `pemba datastore
 * migrate` refuses while it is held) and, with o->gc_interval_ms > 0,
 * starts the GC thread, which logs one line per run through o->log (level
 * 2; errors level 0), plus one line of query cache figures (hits, misses,
 * evictions, bytes: pemba_query_cache_stats_get) per run and at stop. */
typedef struct server_lifecycle server_lifecycle;
int server_lifecycle_start(const char *uri, const server_options *o,
                           server_lifecycle **out, pemba_error *err);
/* Completed GC runs so far. */
uint64_t server_lifecycle_gc_runs(server_lifecycle *l);
/* GC figures for /metrics (all zero for NULL). */
typedef struct server_gc_figures {
	uint64_t runs, failures;
	uint64_t relationships_deleted; /* versions and expired ones */
	int64_t last_run_ms; /* wall clock of the last successful run, 0 */
} server_gc_figures;
void server_lifecycle_gc_figures(server_lifecycle *l, server_gc_figures *out);
/* Stops the GC thread at once (a run in progress finishes), detaches and
 * closes the handle.  NULL is a no-op. */
void server_lifecycle_stop(server_lifecycle *l);

/* ===================================================================== */
/* /metrics and /healthz over HTTP/1.1 (http_endpoint.c)                  */
/* ===================================================================== */

typedef struct server_http server_http;
/* Writes the whole /metrics page (text exposition format) into out. */
typedef void (*server_http_render_fn)(void *ctx, strbuf *out);
/* 0 (200 "ok"), or -1 with *reason (503 "reason"). */
typedef int (*server_http_health_fn)(void *ctx, const char **reason);

/* Binds addr ("host:port", "[v6]:port", ":port"; port 0: ephemeral) and
 * serves GET /metrics (render, then the endpoint's own figures:
 * pemba_http_connections, pemba_http_requests_total) and GET /healthz
 * (health; NULL: always ok) on a thread of its own; render and health
 * run on that thread.
 * Returns the endpoint and *port_out, or NULL with why[] filled (e.g.
 * "Address already in use"). */
server_http *server_http_start(const char *addr, server_http_render_fn render,
                               server_http_health_fn health, void *ctx,
                               int *port_out, char *why, size_t why_len);
/* Stops serving and frees.  NULL is a no-op. */
void server_http_stop(server_http *h);

/* ===================================================================== */
/* Metrics, health and request ids (observe.c)                           */
/* ===================================================================== */

/* Watches one server: counts its calls per method (grpc.h's call
 * observer), gives every call a request id, probes the datastore once a
 * second for health, and serves /metrics and /healthz. */
typedef struct server_observer server_observer;

/* What the observer reads figures from; every pointer may be NULL. */
typedef struct server_observer_sources {
	const grpc_method *methods; /* the dispatch table */
	size_t nmethods;
	db_pool *pool;          /* serve: health probes borrow from it */
	server_lifecycle *life; /* serve: GC figures */
} server_observer_sources;

/* Makes an observer; counting on when o->metrics_addr is set.  Starts the
 * health probe thread when src->pool is set.  Binds nothing yet. */
server_observer *server_observer_new(const server_options *o,
                                     const server_observer_sources *src);
/* grpc_server_options hooks; ctx is the observer. */
void server_observer_call_start(void *ctx, grpc_call *call,
                                size_t method_index);
void server_observer_call_end(void *ctx, grpc_call *call, size_t method_index,
                              const grpc_call_outcome *outcome);
/* Binds o->metrics_addr and serves HTTP (after the gRPC server exists:
 * its connection figures are read from grpc).  0, or a negative
 * pemba_code with *err naming --metrics-addr (only when required; else
 * 0, and server_observer_error says why there are no metrics). */
int server_observer_listen(server_observer *obs, grpc_server *grpc,
                           pemba_error *err);
int server_observer_port(const server_observer *obs);
/* Why an address that was not required could not be served, or NULL. */
const char *server_observer_error(const server_observer *obs);
/* 0 when the datastore answered the last probe (within 5 s), else -1
 * with *reason (static or owned by the observer, valid until the next
 * call).  Always 0 without a pool (serve-testing). */
int server_observer_health(server_observer *obs, const char **reason);
/* Stops HTTP and the probe thread and forgets the pool and lifecycle
 * (call before closing them); the call hooks keep working.  Idempotent;
 * NULL is a no-op. */
void server_observer_stop(server_observer *obs);
/* Stops and frees, after the gRPC server is freed.  NULL is a no-op. */
void server_observer_free(server_observer *obs);

#endif
