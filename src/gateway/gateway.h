/*
 * gateway.h -- the HTTP/JSON gateway of `pemba serve --http-enabled`:
 * SpiceDB's grpc-gateway mapping (POST /v1/permissions/check, ...) served
 * with libmicrohttpd (HTTP/1.1) and nghttp2 (HTTP/2: h2c with prior
 * knowledge, ALPN h2 over TLS; same port), each request forwarded to the
 * server's own gRPC listener (see README.md beside this file).
 */
#ifndef PEMBA_GATEWAY_H
#define PEMBA_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

#include "api/grpc.h"
#include "pemba.h"

typedef struct gateway gateway;

typedef struct gateway_options {
	/* "host:port", "[v6]:port" or ":port"; port 0 picks one.  Required. */
	const char *listen_addr;
	/* Both set: HTTPS (PEM files).  Both NULL: cleartext. */
	const char *tls_cert_path;
	const char *tls_key_path;
	/* The gRPC listener the gateway forwards to ("127.0.0.1:50051"). */
	const char *upstream;
	bool upstream_tls;        /* the listener speaks TLS (certificate not
	                             verified: it is this process's own) */
	size_t max_body;          /* 0: 4 MiB; bigger -> 413 */
	unsigned max_connections; /* 0: 512 HTTP/1.1 and 512 HTTP/2
	                             connections (one thread each) */
	unsigned idle_timeout_s;  /* 0: 60; idle keep-alive connections */
	size_t max_idle_upstream; /* 0: 64 pooled gRPC connections */
	grpc_log_fn log;
	void *log_ctx;
} gateway_options;

/* Binds, listens and starts serving on threads of its own.  0 and *out, or
 * a negative pemba_code with *err. */
int gateway_start(const gateway_options *options, gateway **out,
                  pemba_error *err);

/* The bound TCP port. */
int gateway_port(const gateway *g);

/* Stops accepting, ends open connections (streams too) and frees.  NULL is
 * a no-op. */
void gateway_stop(gateway *g);

/* The HTTP status grpc-gateway answers a gRPC status code with. */
int gateway_http_status(int grpc_code);

#endif
