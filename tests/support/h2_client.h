/*
 * h2_client.h -- a raw HTTP/2 gRPC client for load and adversarial tests:
 * many streams on one connection, driven by hand (h2_pump), with control
 * over flow control (a client that stops reading grants no window) and
 * over the exact bytes and headers sent.  Single-threaded; one h2_conn per
 * thread.
 */
#ifndef PEMBA_TEST_H2_CLIENT_H
#define PEMBA_TEST_H2_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct h2_conn h2_conn;

/* One stream's outcome so far. */
typedef struct h2_stream_info {
	int grpc_status;   /* -1 until the trailers (or a reset) arrive */
	char message[256]; /* grpc-message, percent-decoding not applied */
	uint32_t rst_code; /* RST_STREAM error code, if reset */
	bool closed;
	size_t messages; /* complete gRPC messages received */
	size_t bytes;    /* DATA bytes received */
} h2_stream_info;

/* Connects to 127.0.0.1:port and sends the preface.  reading=false makes
 * a client that never grants flow-control window beyond the initial
 * 64 KiB (a stalled reader).  NULL on failure. */
h2_conn *h2_connect(int port, bool reading);

/* Starts a call: headers (plus `authorization` when auth is non-NULL and
 * one extra header when extra_name is non-NULL), then the framed message
 * (flag byte `flag`, normally 0) when msg is non-NULL; end_stream
 * half-closes.  Returns the stream id (> 0) or -1. */
int32_t h2_start(h2_conn *c, const char *path, const char *auth,
                 const char *extra_name, const char *extra_value,
                 const void *msg, size_t len, uint8_t flag, bool end_stream);

/* Sends one more framed message on a stream (client streaming). */
int h2_send(h2_conn *c, int32_t id, const void *msg, size_t len,
            bool end_stream);

/* Sends what is queued and processes what arrives for up to timeout_ms
 * (returns early once something arrived).  -1 when the connection is
 * closed or broken. */
int h2_pump(h2_conn *c, int timeout_ms);

/* Sends a PING. */
void h2_ping(h2_conn *c);

/* The GOAWAY error code received (-1: none) and its debug data. */
int h2_goaway(h2_conn *c, char *debug, size_t cap);

/* What stream id has seen so far (NULL for an unknown id). */
const h2_stream_info *h2_stream(h2_conn *c, int32_t id);

bool h2_closed(h2_conn *c);
void h2_close(h2_conn *c);

#endif
