/*
 * proxy.h -- `pemba proxy`: a gRPC proxy for dual running (design in
 * src/proxy/README.md).
 *
 * Every call goes to the primary, whose answer the client gets; writes are
 * replayed on the shadow in order and reads are replayed on the shadow
 * (sampled) and compared, from one bounded queue and one shadow thread,
 * so the shadow never slows, blocks or fails the primary path.
 *
 * The proxy never prints: it reports through the log callback (mismatches
 * at level 1, shadow errors at level 1, the rest at 2).
 */
#ifndef PEMBA_PROXY_H
#define PEMBA_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/grpc.h"
#include "pemba.h"

/* One upstream server. */
typedef struct proxy_upstream {
	const char *endpoint; /* "host:port" or "unix:PATH"; required */
	const char *token;    /* bearer token sent to it; NULL or "": none */
	bool tls;             /* TLS with ALPN h2; false: h2c */
	const char *ca_path;  /* PEM CA bundle; NULL: system CAs */
	bool skip_verify_ca;  /* TLS without verifying the certificate */
} proxy_upstream;

typedef struct proxy_options {
	const char *listen_addr;   /* required ("127.0.0.1:0" picks a port) */
	const char *preshared_key; /* required: the proxy's own clients' key */
	const char *tls_cert_path, *tls_key_path; /* the listener's TLS */
	proxy_upstream primary;
	proxy_upstream shadow;
	double shadow_read_sample; /* 0..1: share of reads replayed */
	size_t shadow_queue_max;   /* 0: 10000 jobs */
	size_t shadow_queue_bytes; /* 0: 64 MiB of queued requests */
	int shadow_timeout_ms;     /* 0: 5000, per shadow call */
	int primary_timeout_ms;    /* 0: 30000 when the client set none */
	int workers;               /* 0: 16 (they wait on the primary) */
	size_t max_message_size;   /* 0: transport default (4 MiB) */
	int shutdown_timeout_ms;   /* 0: transport default */
	int max_watch_streams;     /* 0: 100 Watch streams open at once;
	                              more -> RESOURCE_EXHAUSTED */
	grpc_log_fn log;
	void *log_ctx;
} proxy_options;

/* The counters (a snapshot; each counter exact, the set not atomic). */
typedef struct proxy_stats {
	uint64_t calls;          /* calls forwarded to the primary */
	uint64_t primary_errors; /* of those, transport failures
	                            (UNAVAILABLE from the client side) */
	uint64_t unimplemented;  /* calls refused: method not proxied */
	uint64_t shadow_writes;  /* writes replayed on the shadow */
	uint64_t shadow_reads;   /* reads replayed and compared */
	uint64_t sampled_out;    /* reads not replayed (sampling) */
	uint64_t mismatches;     /* reads whose answers differed, and writes
	                            the shadow refused with another status */
	uint64_t shadow_errors;  /* shadow unreachable / timed out */
	uint64_t dropped;        /* jobs dropped: queue full */
	uint64_t stale;          /* read differences explained by a stale
	                            primary answer (not mismatches) */
	uint64_t queued;         /* jobs waiting now */
} proxy_stats;

/* The proxy's own RPC (pemba.v1.ProxyService, proxy_service.proto),
 * answered by the proxy with its counters, never forwarded. */
#define PROXY_STATS_PATH "/pemba.v1.ProxyService/GetProxyStats"

typedef struct pemba_proxy pemba_proxy;

/* Validates the options, binds the listener.  Copies what it needs.  0 and
 * *out, or a negative pemba_code with *err filled. */
int proxy_new(const proxy_options *options, pemba_proxy **out,
              pemba_error *err);
/* The bound port. */
int proxy_port(const pemba_proxy *proxy);
/* Serves until proxy_shutdown; then finishes in-flight calls, lets the
 * shadow thread drain what is queued (at most shadow_timeout_ms) and
 * returns 0. */
int proxy_run(pemba_proxy *proxy, pemba_error *err);
/* Async-signal-safe. */
void proxy_shutdown(pemba_proxy *proxy);
/* Any thread. */
void proxy_stats_get(pemba_proxy *proxy, proxy_stats *out);
/* Formats the counters as one line ("calls=N ... mismatches=N ...") into
 * buf (size n). */
void proxy_stats_format(const proxy_stats *s, char *buf, size_t n);
/* The proxy must not be running. NULL is a no-op. */
void proxy_free(pemba_proxy *proxy);

#endif
