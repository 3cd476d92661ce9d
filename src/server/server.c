/*
 * server.c -- wires the transport, the service handlers and the datastores
 * together for `pemba serve` and `pemba serve-testing`.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/services.h"
#include "api/reflection.h"
#include "gateway/gateway.h"
#include "server/server.h"
#include "util/error.h"
#include "util/xalloc.h"

struct pemba_server {
	server_options options;
	char **keys;      /* the secrets */
	char **key_names; /* per key: its name, or NULL when unnamed */
	size_t nkeys;
	db_pool *pool;          /* serve */
	server_lifecycle *life; /* serve: attachment and GC (lifecycle.c) */
	testing_stores *stores; /* serve-testing */
	server_observer *observer; /* metrics, health, request ids */
	svc_backend backend;
	grpc_method methods[SERVICES_MAX_METHODS];
	size_t nmethods;
	grpc_server *grpc;
	gateway *http;
};

/* ===================================================================== */
/* Backends                                                              */
/* ===================================================================== */

static int pool_acquire(void *ctx, grpc_call *call, unsigned flags,
                        pemba_db **out, const char **message)
{
	pemba_server *s = ctx;
	pemba_error err = {0};
	if (db_pool_acquire(s->pool, flags & SVC_ACQUIRE_LONG, out, &err) < 0) {
		if (err.code == PEMBA_EVERSION) {
			/* The layout changed under the server: say so, as
			 * every handle that already exists does. */
			static _Thread_local char text[sizeof(err.message)];
			memcpy(text, err.message, sizeof(text));
			*message = text;
			return GRPC_STATUS_FAILED_PRECONDITION;
		}
		*message = "could not open a datastore handle";
		return GRPC_STATUS_UNAVAILABLE;
	}
	return GRPC_STATUS_OK;
}

static void pool_release(void *ctx, grpc_call *call, unsigned flags,
                         pemba_db *db)
{
	pemba_server *s = ctx;
	db_pool_release(s->pool, db, flags & SVC_ACQUIRE_LONG);
}

static int testing_acquire(void *ctx, grpc_call *call, unsigned flags,
                           pemba_db **out, const char **message)
{
	pemba_server *s = ctx;
	pemba_error err = {0};
	size_t len;
	const char *token = svc_bearer_token(call, &len);
	int rc = testing_stores_acquire(s->stores, token, len,
	                                flags & SVC_ACQUIRE_LONG, out, &err);
	if (rc == PEMBA_ELIMIT) {
		*message = "too many serve-testing datastores in use; retry "
		           "when idle ones have been evicted";
		return GRPC_STATUS_RESOURCE_EXHAUSTED;
	}
	if (rc < 0) {
		*message = "could not open a serve-testing datastore";
		return GRPC_STATUS_UNAVAILABLE;
	}
	return GRPC_STATUS_OK;
}

static void testing_release(void *ctx, grpc_call *call, unsigned flags,
                            pemba_db *db)
{
	pemba_server *s = ctx;
	size_t len;
	const char *token = svc_bearer_token(call, &len);
	testing_stores_release(s->stores, token, len, flags & SVC_ACQUIRE_LONG,
	                       db);
}

static int backend_health(void *ctx, const char **reason)
{
	pemba_server *s = ctx;
	return server_observer_health(s->observer, reason);
}

/* ===================================================================== */
/* Authentication                                                        */
/* ===================================================================== */

/* Length of the NAME of "NAME=SECRET" when text names its key: NAME is
 * [A-Za-z0-9_.-]{1,SERVER_KEY_NAME_MAX} and SECRET is not empty nor only
 * '=' characters.  0 otherwise: the whole text is the secret (so a base64
 * key ending in '=' or '==' stays a key). */
size_t server_key_name_length(const char *text)
{
	size_t n = 0;
	while (n <= SERVER_KEY_NAME_MAX &&
	       ((text[n] >= 'a' && text[n] <= 'z') ||
	        (text[n] >= 'A' && text[n] <= 'Z') ||
	        (text[n] >= '0' && text[n] <= '9') || text[n] == '_' ||
	        text[n] == '.' || text[n] == '-'))
		n++;
	if (n == 0 || n > SERVER_KEY_NAME_MAX || text[n] != '=')
		return 0;
	/* Base64 padding is not a secret. */
	if (text[n + 1 + strspn(text + n + 1, "=")] == '\0')
		return 0;
	return n;
}

int server_check_keys(const char *const *keys, size_t n, pemba_error *err)
{
	for (size_t i = 0; i < n; i++) {
		if (keys[i] == NULL || keys[i][0] == '\0')
			return error_set(err, PEMBA_EINVAL,
			                 "a preshared key must not be empty");
		size_t ni = server_key_name_length(keys[i]);
		const char *si = keys[i] + (ni ? ni + 1 : 0);
		for (size_t j = 0; j < i; j++) {
			size_t nj = server_key_name_length(keys[j]);
			const char *sj = keys[j] + (nj ? nj + 1 : 0);
			/* Never a secret in a message: positions only. */
			if (strcmp(si, sj) == 0)
				return error_set(
				    err, PEMBA_EINVAL,
				    "preshared keys %zu and %zu have the same "
				    "secret; give each key its own",
				    j + 1, i + 1);
			if (ni && ni == nj && memcmp(keys[i], keys[j], ni) == 0)
				return error_set(
				    err, PEMBA_EINVAL,
				    "two preshared keys are named `%.*s`; "
				    "names must be unique",
				    (int)ni, keys[i]);
		}
	}
	return PEMBA_OK;
}

/* Every key is compared, in constant time each, so the time taken does
 * not tell which key (or which prefix) was close; nor does finding which
 * one matched (a mask, not a branch), whose name becomes the call's
 * principal (grpc_call_set_principal). */
static int check_key(grpc_call *call, void *ctx, const char **message)
{
	pemba_server *s = ctx;
	/* Health probes need no key (load balancers, orchestrators). */
	if (strncmp(grpc_call_path(call), "/grpc.health.v1.Health/", 23) == 0)
		return GRPC_STATUS_OK;
	/* Nor does reflection, as in SpiceDB: the API's shape is public. */
	if (svc_reflection_path(grpc_call_path(call)))
		return GRPC_STATUS_OK;
	if (!grpc_call_metadata(call, "authorization")) {
		*message = "missing authorization: expected "
		           "'authorization: Bearer <preshared key>'";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	size_t len;
	const char *token = svc_bearer_token(call, &len);
	bool ok = false;
	size_t matched = 0;
	for (size_t i = 0; i < s->nkeys; i++) {
		bool eq = grpc_const_time_equal(token, len, s->keys[i],
		                                strlen(s->keys[i]));
		size_t mask = (size_t)0 - (size_t)eq;
		matched = (matched & ~mask) | (i & mask);
		ok |= eq;
	}
	if (!ok || len == 0) {
		*message = "invalid preshared key";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	grpc_call_set_principal(call, s->key_names[matched]);
	return GRPC_STATUS_OK;
}

/* ===================================================================== */
/* Lifecycle                                                             */
/* ===================================================================== */

bool server_addr_is_loopback(const char *addr)
{
	if (!addr)
		return false;
	char host[256];
	const char *colon;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || (size_t)(end - addr - 1) >= sizeof(host))
			return false;
		memcpy(host, addr + 1, end - addr - 1);
		host[end - addr - 1] = '\0';
	} else {
		colon = strrchr(addr, ':');
		size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
		if (n >= sizeof(host))
			return false;
		memcpy(host, addr, n);
		host[n] = '\0';
	}
	if (strcmp(host, "localhost") == 0)
		return true;
	struct in_addr v4;
	struct in6_addr v6;
	if (inet_pton(AF_INET, host, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &v6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&v6);
	return false; /* "" (all interfaces) and names are not loopback */
}

/* "sqlite::memory:" is private to one handle and cannot be cloned; give
 * it a process-unique name so every worker can share it. */
static char *shareable_uri(const char *uri)
{
	if (strcmp(uri, "sqlite::memory:") != 0)
		return xstrdup(uri);
	static unsigned long seq;
	char buf[96];
	snprintf(buf, sizeof(buf), "sqlite::memory:pemba-serve-%ld-%lu",
	         (long)getpid(), __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	return xstrdup(buf);
}

int server_new(const server_options *options, pemba_server **out,
               pemba_error *err)
{
	int rc = server_check_keys(options->keys, options->nkeys, err);
	if (rc < 0) {
		*out = NULL;
		return rc;
	}
	pemba_server *s = xcalloc(1, sizeof(*s));
	s->options = *options;
	if (!s->options.grpc_addr)
		s->options.grpc_addr = "127.0.0.1:50051";
	s->keys = xcalloc(options->nkeys + 1, sizeof(*s->keys));
	s->key_names = xcalloc(options->nkeys + 1, sizeof(*s->key_names));
	for (size_t i = 0; i < options->nkeys; i++) {
		const char *text = options->keys[i];
		size_t n = server_key_name_length(text);
		if (n > 0)
			s->key_names[i] = xstrndup(text, n);
		s->keys[s->nkeys++] = xstrdup(text + (n ? n + 1 : 0));
	}
	s->options.keys = NULL;
	s->backend.ctx = s;
	s->backend.read_only = options->read_only;
	s->backend.log = options->log;
	s->backend.log_ctx = options->log_ctx;
	if (options->testing) {
		s->stores = testing_stores_new(options->testing_max_stores,
		                               options->testing_idle_seconds);
		s->backend.acquire = testing_acquire;
		s->backend.release = testing_release;
		s->backend.private_datastores = true;
	} else {
		char *uri =
		    shareable_uri(options->datastore ? options->datastore
		                                     : "sqlite://./pemba.db");
		size_t idle =
		    options->workers > 0 ? (size_t)options->workers : 64;
		/* The lifecycle handle first: it creates a new datastore or
		 * refuses an old layout; the pool then finds it ready. */
		/* The pool's handles know the GC window too, so that a
		 * refused old revision names the window in force. */
		pemba_options po = {
		    .no_auto_migrate = PEMBA_MIGRATE_REFUSE,
		    .gc_window_seconds = options->gc_window_seconds,
		    .conn_pool_read_max_open = options->conn_pool_read_max_open,
		    .conn_pool_write_max_open =
		        options->conn_pool_write_max_open,
		    .read_replica_uris = options->read_replica_uris,
		    .n_read_replica_uris = options->n_read_replica_uris,
		    .log = options->log,
		    .log_ctx = options->log_ctx,

		    .query_cache_bytes = options->query_cache_bytes};
		rc = server_lifecycle_start(uri, &s->options, &s->life, err);
		if (rc == 0)
			rc = db_pool_open(uri, &po, idle, &s->pool, err);
		free(uri);
		if (rc < 0)
			goto fail;
		s->backend.acquire = pool_acquire;
		s->backend.release = pool_release;
		/* Another server or tool may write the same file. */
		s->backend.shared_datastore =
		    strncmp(options->datastore ? options->datastore : "",
		            "sqlite::memory:", 15) != 0;
	}
	s->nmethods =
	    services_methods(&s->backend, s->methods, SERVICES_MAX_METHODS);
	server_observer_sources src = {s->methods, s->nmethods, s->pool,
	                               s->life};
	s->observer = server_observer_new(&s->options, &src);
	s->backend.datastore_health = backend_health;

	grpc_server_options g;
	grpc_server_options_init(&g);
	g.listen_addr = s->options.grpc_addr;
	g.tls_cert_path = options->tls_cert_path;
	g.tls_key_path = options->tls_key_path;
	g.methods = s->methods;
	g.method_count = s->nmethods;
	g.worker_threads = options->workers;
	g.max_receive_message_size = options->max_message_size;
	g.shutdown_timeout_ms = options->shutdown_timeout_ms;
	g.max_connections = options->max_connections;
	g.max_streams = options->max_streams;
	g.stream_stall_timeout_ms = options->stream_stall_timeout_ms;
	g.handshake_timeout_ms = options->handshake_timeout_ms;
	g.idle_timeout_ms = options->idle_timeout_ms;
	g.keepalive_time_ms = options->keepalive_time_ms;
	g.keepalive_timeout_ms = options->keepalive_timeout_ms;
	g.keepalive_min_time_ms = options->keepalive_min_time_ms;
	if (s->nkeys > 0 && !options->testing) {
		g.auth = check_key;
		g.auth_ctx = s;
	}
	g.log = options->log;
	g.log_ctx = options->log_ctx;
	g.on_call_start = server_observer_call_start;
	g.on_call_end = server_observer_call_end;
	g.observer_ctx = s->observer;
	rc = grpc_server_new(&g, &s->grpc, err);
	if (rc == 0)
		rc = server_observer_listen(s->observer, s->grpc, err);
	if (rc < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	server_free(s);
	*out = NULL;
	return rc;
}

int server_port(const pemba_server *s)
{
	return grpc_server_port(s->grpc);
}

int server_metrics_port(const pemba_server *s)
{
	return server_observer_port(s->observer);
}

const char *server_metrics_error(const pemba_server *s)
{
	return server_observer_error(s->observer);
}

int server_http_port(const pemba_server *s)
{
	return s->http ? gateway_port(s->http) : 0;
}

/* The gRPC listener as this process reaches it: the listen host (a
 * wildcard becomes loopback) and the bound port. */
static void upstream_addr(const pemba_server *s, char *buf, size_t cap)
{
	const char *addr = s->options.grpc_addr;
	const char *colon = strrchr(addr, ':');
	size_t hl = colon ? (size_t)(colon - addr) : 0;
	char host[256];
	if (hl >= sizeof(host))
		hl = 0;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	int port = grpc_server_port(s->grpc);
	if (hl == 0 || strcmp(host, "0.0.0.0") == 0)
		snprintf(buf, cap, "127.0.0.1:%d", port);
	else if (strcmp(host, "[::]") == 0)
		snprintf(buf, cap, "[::1]:%d", port);
	else
		snprintf(buf, cap, "%s:%d", host, port);
}

int server_start_http(pemba_server *s, pemba_error *err)
{
	if (!s->options.http_enabled || s->http)
		return 0;
	char upstream[300];
	upstream_addr(s, upstream, sizeof(upstream));
	gateway_options o = {
	    .listen_addr =
	        s->options.http_addr ? s->options.http_addr : "127.0.0.1:8443",
	    .tls_cert_path = s->options.http_tls_cert_path,
	    .tls_key_path = s->options.http_tls_key_path,
	    .upstream = upstream,
	    .upstream_tls = s->options.tls_cert_path != NULL,
	    .max_body = s->options.max_message_size,
	    .log = s->options.log,
	    .log_ctx = s->options.log_ctx,
	};
	return gateway_start(&o, &s->http, err);
}

int server_run(pemba_server *s, pemba_error *err)
{
	int rc = server_start_http(s, err);
	if (rc < 0)
		return rc;
	rc = grpc_server_run(s->grpc, err);
	gateway_stop(s->http);
	s->http = NULL;
	services_stop(&s->backend);
	/* No call in flight any more: stop collecting and detach now
	 * rather than at server_free (metrics first: they read GC
	 * figures). */
	server_observer_stop(s->observer);
	server_lifecycle_stop(s->life);
	s->life = NULL;
	return rc;
}

void server_shutdown(pemba_server *s)
{
	grpc_server_shutdown(s->grpc);
}

void server_free(pemba_server *s)
{
	if (!s)
		return;
	gateway_stop(s->http);
	grpc_server_free(s->grpc);
	services_stop(&s->backend);
	server_observer_free(s->observer);
	server_lifecycle_stop(s->life);
	db_pool_close(s->pool);
	testing_stores_free(s->stores);
	for (size_t i = 0; i < s->nkeys; i++) {
		free(s->keys[i]);
		free(s->key_names[i]);
	}
	free(s->keys);
	free(s->key_names);
	free(s);
}
