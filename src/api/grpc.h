/*
 * grpc.h -- gRPC transport over HTTP/2 (nghttp2 + OpenSSL): a server and a
 * blocking client.
 *
 * The transport knows nothing of pemba's services or protobuf: a message is
 * an opaque byte string.  The server dispatches calls by method path
 * ("/authzed.api.v1.PermissionsService/CheckPermission") from a table the
 * caller supplies; handlers run on a worker pool and use blocking calls
 * (read the next request, send a response, finish with a status).  One
 * event-loop thread (the one that calls grpc_server_run) does all socket and
 * HTTP/2 work, so a slow handler never blocks other streams.
 *
 * Conventions: functions returning int return 0 (or a count) on success and
 * a negative GRPC_E* code on failure unless stated otherwise.  Every string
 * the transport hands out is NUL-terminated.  Names of metadata are
 * lower-case, as HTTP/2 requires.
 */
#ifndef PEMBA_API_GRPC_H
#define PEMBA_API_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pemba.h"

/* ===================================================================== */
/* Status codes and errors                                               */
/* ===================================================================== */

/* The gRPC status codes (the grpc-status trailer). */
typedef enum grpc_status_code {
	GRPC_STATUS_OK = 0,
	GRPC_STATUS_CANCELLED = 1,
	GRPC_STATUS_UNKNOWN = 2,
	GRPC_STATUS_INVALID_ARGUMENT = 3,
	GRPC_STATUS_DEADLINE_EXCEEDED = 4,
	GRPC_STATUS_NOT_FOUND = 5,
	GRPC_STATUS_ALREADY_EXISTS = 6,
	GRPC_STATUS_PERMISSION_DENIED = 7,
	GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
	GRPC_STATUS_FAILED_PRECONDITION = 9,
	GRPC_STATUS_ABORTED = 10,
	GRPC_STATUS_OUT_OF_RANGE = 11,
	GRPC_STATUS_UNIMPLEMENTED = 12,
	GRPC_STATUS_INTERNAL = 13,
	GRPC_STATUS_UNAVAILABLE = 14,
	GRPC_STATUS_DATA_LOSS = 15,
	GRPC_STATUS_UNAUTHENTICATED = 16,
} grpc_status_code;

/* Upper-case name of a status code ("DEADLINE_EXCEEDED"); "UNKNOWN" for
 * values outside 0..16.  Never NULL. */
const char *grpc_status_name(int code);

/* Negative results of the call-side functions below. */
enum {
	GRPC_ECANCELLED = -1, /* peer reset the stream or closed the connection,
	                         or the call is finished already */
	GRPC_EDEADLINE = -2,  /* the call's deadline passed */
	GRPC_ETOOBIG = -3,    /* message above the receive limit */
	GRPC_EPROTOCOL = -4,  /* malformed framing or compressed message */
	GRPC_ESTATE = -5,     /* misuse: e.g. finish called twice */
	GRPC_EAGAIN = -6,     /* nothing to read yet (suspended calls) */
};

/* Compares a and b (lengths a_len, b_len) in time that depends only on the
 * lengths, not on where they differ.  For checking preshared keys.  Returns
 * true when they are equal. */
bool grpc_const_time_equal(const void *a, size_t a_len, const void *b,
                           size_t b_len);

/* ===================================================================== */
/* Metadata                                                              */
/* ===================================================================== */

/* One header.  For names ending in "-bin" the value is raw bytes of length
 * value_len (the transport base64-encodes on the wire); otherwise it is
 * text.  value_len == 0 with a non-empty value means strlen(value). */
typedef struct grpc_metadata {
	const char *name;
	const char *value;
	size_t value_len;
} grpc_metadata;

/* ===================================================================== */
/* Server                                                                */
/* ===================================================================== */

typedef struct grpc_server grpc_server;
/* One in-progress call on the server.  Owned by the server; valid from the
 * start of the handler until the handler returns. */
typedef struct grpc_call grpc_call;

typedef enum grpc_method_kind {
	/* One request, one response.  The handler starts only after the whole
	 * request arrived; a client sending zero or several messages gets
	 * INTERNAL (as grpc-go does) without the handler running. */
	GRPC_METHOD_UNARY = 0,
	/* One request (received before the handler starts, as for unary),
	 * any number of responses. */
	GRPC_METHOD_SERVER_STREAMING = 1,
	/* Any number of requests (read with grpc_call_read), one response.
	 * The handler starts as soon as the request headers arrived. */
	GRPC_METHOD_CLIENT_STREAMING = 2,
	/* Any number each way, interleaved freely. */
	GRPC_METHOD_BIDI_STREAMING = 3,
} grpc_method_kind;

/* A method handler.  Runs on a worker thread; may block (the store, the
 * engine, grpc_call_read, grpc_call_send).  It should end the call with
 * grpc_call_finish; if it returns without doing so the client gets
 * GRPC_STATUS_INTERNAL "handler returned without a status".  ctx is the
 * grpc_method's ctx. */
typedef void (*grpc_handler_fn)(grpc_call *call, void *ctx);

/* One row of the dispatch table.  path is the full ":path",
 * "/package.Service/Method".  The table and its strings must outlive the
 * server. */
typedef struct grpc_method {
	const char *path;
	grpc_method_kind kind;
	grpc_handler_fn handler;
	void *ctx;
} grpc_method;

/* Optional per-call authentication hook, run on the worker before the
 * handler.  Return GRPC_STATUS_OK to let the call proceed, or a status code
 * (normally GRPC_STATUS_UNAUTHENTICATED) to finish the call with it; *message
 * may then be set to a static string for grpc-message.  Use
 * grpc_call_metadata() to read "authorization". */
typedef int (*grpc_auth_fn)(grpc_call *call, void *ctx, const char **message);

/* Optional diagnostic sink (the transport never prints).  level: 0 error,
 * 1 warning, 2 info, 3 debug (the datastore's and GC's details; `serve`
 * prints them with --log-level debug).  Called from the event loop or a worker;
 * must be thread-safe and quick. */
typedef void (*grpc_log_fn)(void *ctx, int level, const char *message);

/* What became of one call, for a call observer. */
typedef struct grpc_call_outcome {
	int status;                 /* grpc-status sent (CANCELLED when the
	                               client went away first) */
	int64_t duration_ns;        /* from the request headers to the end */
	uint64_t messages_received; /* request messages */
	uint64_t messages_sent;     /* response messages */
} grpc_call_outcome;

/* Optional call observer (metrics, request logs).  on_call_start runs on
 * the event loop once a call's headers are complete and name a method of
 * the table (method_index is its row), before any handler; it may call
 * grpc_call_set_request_id.  on_call_end runs exactly once for each call
 * that started, on any thread, when the transport lets go of the call;
 * the call's metadata and request id are still readable then.  Both must
 * be quick and thread-safe (no lock held by the transport). */
typedef void (*grpc_call_start_fn)(void *ctx, grpc_call *call,
                                   size_t method_index);
typedef void (*grpc_call_end_fn)(void *ctx, grpc_call *call,
                                 size_t method_index,
                                 const grpc_call_outcome *outcome);

typedef struct grpc_server_options {
	/* "host:port", "[v6addr]:port" or ":port" (all interfaces); port 0
	 * picks an ephemeral port (see grpc_server_port).  Required. */
	const char *listen_addr;
	/* Both set: TLS with ALPN "h2" (PEM files).  Both NULL: cleartext h2c
	 * with prior knowledge.  One without the other is an error. */
	const char *tls_cert_path;
	const char *tls_key_path;
	const grpc_method *methods; /* dispatch table, method_count rows */
	size_t method_count;
	/* NULL, or method_count flags: for a unary method whose flag is
	 * set, the auth hook and the handler run on the event-loop thread as
	 * soon as the request is complete, instead of on a worker (no thread
	 * hand-off).  Such a handler must never block: it answers at once or
	 * defers the call (grpc_call_defer) to finish it from elsewhere, as
	 * `pemba proxy` does with the primary's answer. */
	const bool *methods_on_loop;
	int worker_threads;              /* 0: 2 * online CPUs (at least 2) */
	size_t max_receive_message_size; /* 0: 4 MiB; bigger ->
	                                    RESOURCE_EXHAUSTED */
	uint32_t max_header_list_size;   /* 0: 16 KiB (HTTP/2 setting) */
	uint32_t max_concurrent_streams; /* 0: 1024 per connection */
	/* 0: 4096.  At the cap, a new connection replaces the oldest one
	 * that has not completed its handshake and HTTP/2 preface; when
	 * there is none it is closed (logged at most every 10 s). */
	int max_connections;
	/* 0: 10000.  Streaming calls (any kind but unary) open at once
	 * over all connections; more -> RESOURCE_EXHAUSTED. */
	int max_streams;
	/* 0: 60000; -1: never.  A streaming call whose client reads none
	 * of the queued responses, or (client streaming) sends nothing, for
	 * this long is ended with RESOURCE_EXHAUSTED (reading) or
	 * DEADLINE_EXCEEDED (sending). */
	int stream_stall_timeout_ms;
	/* 0: 10000.  TLS handshake plus the client's HTTP/2 preface must
	 * complete within this, or the connection is closed. */
	int handshake_timeout_ms;
	/* 0: 900000 (15 min); -1: never.  A connection with no call open
	 * for this long gets a graceful GOAWAY. */
	int idle_timeout_ms;
	/* 0: 120000.  A connection silent for this long is pinged; no
	 * acknowledgement within keepalive_timeout_ms (0: 20000) closes it. */
	int keepalive_time_ms;
	int keepalive_timeout_ms;
	/* 0: 10000.  Client PINGs closer together than this are strikes;
	 * the third strike ends the connection with GOAWAY
	 * ENHANCE_YOUR_CALM "too_many_pings" (gRPC's enforcement policy,
	 * pings without calls permitted). */
	int keepalive_min_time_ms;
	int shutdown_timeout_ms; /* 0: 10000; grace for in-flight calls */
	grpc_auth_fn auth;       /* NULL: no authentication */
	void *auth_ctx;
	grpc_log_fn log; /* NULL: silent */
	void *log_ctx;
	grpc_call_start_fn on_call_start; /* NULL: none */
	grpc_call_end_fn on_call_end;     /* NULL: none */
	void *observer_ctx;
} grpc_server_options;

/* Fills *options with the defaults (all zero / NULL). */
void grpc_server_options_init(grpc_server_options *options);

/* Creates a server: validates the options, loads the TLS certificate and
 * key, binds and listens (so the port is known and connections queue before
 * grpc_server_run).  Starts no thread yet.  On success *out owns the server
 * (free with grpc_server_free) and 0 is returned; on failure a negative
 * pemba_code (PEMBA_EINVAL for bad options, PEMBA_EIO for socket/TLS
 * errors) with *err filled. */
int grpc_server_new(const grpc_server_options *options, grpc_server **out,
                    pemba_error *err);

/* The bound TCP port (useful with port 0). */
int grpc_server_port(const grpc_server *server);

/* Runs the server on the calling thread: starts the worker pool and serves
 * until grpc_server_shutdown is called; then stops accepting, sends GOAWAY
 * on every connection, lets in-flight calls finish (at most
 * shutdown_timeout_ms; the rest are cancelled and their handlers see
 * grpc_call_cancelled), joins the workers and returns 0.  Returns a
 * negative pemba_code with *err filled if it cannot start.  Call once. */
int grpc_server_run(grpc_server *server, pemba_error *err);

/* Figures of the moment, for metrics: any thread, no lock. */
typedef struct grpc_server_stats {
	int connections;  /* open connections */
	int open_streams; /* streaming calls open (max_streams counts these) */
	int calls;        /* calls of any kind not yet released */
} grpc_server_stats;
void grpc_server_stats_get(const grpc_server *server, grpc_server_stats *out);

/* Asks a running (or about to run) server to shut down gracefully.
 * Async-signal-safe (a write to an eventfd) and callable from any thread;
 * calling it more than once is harmless. */
void grpc_server_shutdown(grpc_server *server);

/* Frees a server that is not running (never started or returned from
 * grpc_server_run).  NULL is a no-op. */
void grpc_server_free(grpc_server *server);

/* --- inside a handler ------------------------------------------------- */

/* The method path of the call ("/pkg.Service/Method"). */
const char *grpc_call_path(const grpc_call *call);

/* The client's IP address, without the port ("127.0.0.1", "::1"; an
 * IPv4-mapped IPv6 address is shown as IPv4), or "" when unknown.  Valid
 * for the life of the call. */
const char *grpc_call_peer(const grpc_call *call);

/* Who the auth hook found the caller to be (e.g. the name of the
 * preshared key that matched): set by the hook, read by handlers.
 * `name` is not copied and must outlive the call; NULL (the default):
 * nobody in particular. */
void grpc_call_set_principal(grpc_call *call, const char *name);
const char *grpc_call_principal(const grpc_call *call);

/* The call's request id, sent to the client as the "x-request-id"
 * response header: set from on_call_start only (id is copied, at most 64
 * bytes of [A-Za-z0-9._:-]; anything else is refused with -1).  Read
 * anywhere: "" when none was set. */
int grpc_call_set_request_id(grpc_call *call, const char *id);
const char *grpc_call_request_id(const grpc_call *call);

/* The first request header named name (lower-case), or NULL.  The pointer is
 * valid for the life of the call.  Binary ("-bin") values are returned as
 * sent (base64 text); pseudo-headers (":path", ...) are not metadata. */
const char *grpc_call_metadata(const grpc_call *call, const char *name);

/* All request headers, in arrival order: *count receives the number;
 * returns the array (owned by the call). */
const grpc_metadata *grpc_call_metadata_all(const grpc_call *call,
                                            size_t *count);

/* Absolute deadline from grpc-timeout, in nanoseconds on CLOCK_MONOTONIC,
 * or 0 when the client set none.  When it passes, the transport finishes
 * the call with DEADLINE_EXCEEDED by itself; later sends fail with
 * GRPC_EDEADLINE. */
int64_t grpc_call_deadline(const grpc_call *call);

/* True once the call cannot deliver a response any more: the client reset
 * the stream or closed the connection, the deadline passed, or the server is
 * past its shutdown grace.  Long-running handlers should poll it. */
bool grpc_call_cancelled(const grpc_call *call);

/* Reads the next request message.  For unary and server-streaming calls
 * the single request is returned at once.  Otherwise blocks until a message,
 * the end of the request stream, or an error.  Returns 1 with *data / *len
 * set (the buffer is owned by the call and valid until the next
 * grpc_call_read or the handler's return; *data is never NULL, and is NUL
 * terminated for convenience), 0 at the end of the request stream, or a
 * negative GRPC_E* code (GRPC_ECANCELLED, GRPC_EDEADLINE, GRPC_ETOOBIG,
 * GRPC_EPROTOCOL: in the last two cases the transport has already finished
 * the call with RESOURCE_EXHAUSTED / INTERNAL or UNIMPLEMENTED). */
int grpc_call_read(grpc_call *call, const uint8_t **data, size_t *len);

/* Adds a trailing metadata entry sent with the final status (e.g.
 * "grpc-status-details-bin").  Copies name and value.  Must precede
 * grpc_call_finish. */
int grpc_call_add_trailer(grpc_call *call, const char *name, const void *value,
                          size_t value_len);

/* Sends one response message (copied).  Sends the response headers first
 * if not yet sent.  Returns once the message is queued; blocks while more
 * than a bounded amount (about 1 MiB) is waiting for HTTP/2 flow control, so
 * a slow reader slows the handler instead of growing memory.  0 or
 * GRPC_ECANCELLED / GRPC_EDEADLINE / GRPC_ESTATE (after finish). */
int grpc_call_send(grpc_call *call, const void *data, size_t len);

/* --- deferred calls ----------------------------------------------------- */

/*
 * A handler whose answer comes from elsewhere (another thread, another
 * server) defers its call and returns at once; the call stays alive, and
 * its owner later sends the response and finishes it from any thread with
 * grpc_call_send / grpc_call_finish (neither blocks for a deferred call),
 * then calls grpc_call_release exactly once.  A call cancelled meanwhile
 * (client reset, deadline, shutdown) is finished by the transport: the
 * owner's send and finish then fail harmlessly, and it still releases.
 * The server's shutdown waits for deferred calls (within its grace).
 * grpc_call_defer returns 0, or GRPC_ESTATE when the call is finished,
 * suspended or deferred already (then nothing is to be released).
 */
int grpc_call_defer(grpc_call *call);
void grpc_call_release(grpc_call *call);

/* --- suspended (event-driven) calls ------------------------------------ */

/*
 * A long-lived call must not hold a worker while it waits for its client
 * or for an event.  Its handler does the first part of the work (read and
 * validate the request), then hands the call to the transport with
 * grpc_call_suspend and returns; the worker is free.  From then on the
 * transport runs step(call, state) on a worker whenever the call can make
 * progress, and release(call, state) exactly once at the end.
 *
 * What step returns decides when it runs next:
 *  - GRPC_STEP_MORE: as soon as the call is writable again (at once if it
 *    is; otherwise when the client has read the queued responses down to
 *    the low-water mark).  Client-streaming steps use it to go on reading.
 *  - GRPC_STEP_WAIT: after grpc_call_wake (any thread), a new request
 *    message or the end of the request stream, or the timer set with
 *    grpc_call_wake_after.
 *  - GRPC_STEP_DONE: never; the step has finished the call (if it did
 *    not, the client gets INTERNAL).
 * A step should do a bounded amount of work (a page, a few milliseconds)
 * and stop sending when grpc_call_writable() turns false (256 KiB queued
 * for a suspended call).  Inside steps grpc_call_send never blocks, and
 * what a step queued leaves when the step returns; a call that queues
 * more than the stream buffer cap (4 MiB) regardless is ended with
 * RESOURCE_EXHAUSTED.  Steps
 * of one call never run concurrently; a wake that arrives while a step
 * runs makes it run again.
 *
 * release runs on a worker after the last step, or instead of the next
 * step once the call is cancelled (client reset, deadline, stall, server
 * shutdown); it must free `state` and undo any registration that could
 * still wake the call.  After release the call pointer is dead.
 *
 * grpc_call_suspend returns 0, or GRPC_ESTATE when the call is already
 * finished or suspended (then release is NOT called; the handler cleans
 * up itself).
 */
typedef enum grpc_step {
	GRPC_STEP_DONE = 0,
	GRPC_STEP_MORE = 1,
	GRPC_STEP_WAIT = 2,
} grpc_step;
typedef grpc_step (*grpc_step_fn)(grpc_call *call, void *state);
typedef void (*grpc_release_fn)(grpc_call *call, void *state);

int grpc_call_suspend(grpc_call *call, grpc_step_fn step,
                      grpc_release_fn release, void *state);

/* True while the call's queued responses are below the high-water mark
 * (256 KiB for suspended calls, 1 MiB otherwise) and the call is not
 * finished. */
bool grpc_call_writable(grpc_call *call);

/* Runs the suspended call's step soon (a no-op for calls that are not
 * suspended or are finished).  Any thread; never blocks. */
void grpc_call_wake(grpc_call *call);

/* From a step: run the step again after ms milliseconds even if nothing
 * else wakes it (replaces an earlier timer; <= 0 clears it). */
void grpc_call_wake_after(grpc_call *call, int ms);

/* Non-blocking grpc_call_read for steps: 1 (message), 0 (end of the
 * request stream), GRPC_EAGAIN (nothing yet: return GRPC_STEP_WAIT) or a
 * negative GRPC_E* as grpc_call_read. */
int grpc_call_try_read(grpc_call *call, const uint8_t **data, size_t *len);

/* Finishes the call with a status and an optional human-readable message
 * (NULL or "" for none; sent percent-encoded in grpc-message).  Does not
 * wait for the bytes to leave.  0, or GRPC_ESTATE if already finished,
 * GRPC_ECANCELLED if the stream is gone. */
int grpc_call_finish(grpc_call *call, int status, const char *message);

/* printf-style grpc_call_finish. */
int grpc_call_finishf(grpc_call *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ===================================================================== */
/* Client (blocking; one connection)                                     */
/* ===================================================================== */

typedef struct grpc_client grpc_client;

typedef struct grpc_client_options {
	/* "host:port", "[v6addr]:port" or "unix:PATH" (a unix-domain socket;
	 * "unix://ABSOLUTE_PATH" too).  Required. */
	const char *target;
	bool tls;                  /* TLS with ALPN "h2"; otherwise h2c */
	const char *ca_file;       /* PEM; NULL: system default CAs */
	bool insecure_skip_verify; /* accept any certificate (tests) */
	const char *server_name;   /* SNI / verification name; NULL: host */
	int connect_timeout_ms;    /* 0: 10000 */
	size_t max_receive_message_size; /* 0: 64 MiB */
} grpc_client_options;

/* The outcome of a call.  message is heap-allocated (free with
 * grpc_status_clear) and NULL when the server sent none.  details holds the
 * server's grpc-status-details-bin trailer, base64-decoded (a serialized
 * google.rpc.Status: code, message, ErrorInfo and other details), or NULL
 * when it sent none or the status was decided locally; heap-allocated too.
 * Transport failures (connection refused, reset, bad framing from the
 * server) are reported as GRPC_STATUS_UNAVAILABLE / INTERNAL with a
 * message, as gRPC libraries do; a local timeout as DEADLINE_EXCEEDED. */
typedef struct grpc_status {
	int code;
	char *message;
	uint8_t *details;
	size_t details_len;
	/* Decided on this side (connection failure, local deadline,
	 * cancellation), not sent by the server. */
	bool local;
} grpc_status;

void grpc_status_clear(grpc_status *status);

void grpc_client_options_init(grpc_client_options *options);

/* Connects (TCP, then TLS if asked) and performs the HTTP/2 preface.  0 and
 * *out (free with grpc_client_close), or a negative pemba_code (PEMBA_EIO,
 * PEMBA_EINVAL) with *err filled. */
int grpc_client_connect(const grpc_client_options *options, grpc_client **out,
                        pemba_error *err);

/* Closes the connection and frees the client.  NULL is a no-op. */
void grpc_client_close(grpc_client *client);

/* Breaks the connection from outside: shuts its socket down (shutdown(2)),
 * so that a call blocked on it in another thread (e.g. a server stream
 * whose server is silent) ends at once with UNAVAILABLE, and later calls
 * fail.  Any thread; never blocks.  The client must not be closed
 * concurrently, and must still be closed with grpc_client_close. */
void grpc_client_abort(grpc_client *client);

/* A client's calls run one at a time (a mutex serializes callers from
 * different threads); use grpc_client_unary_batch or several clients for
 * concurrency.  For every call: metadata is md[0..md_count) (e.g.
 * {"authorization", "Bearer KEY"}); timeout_ms > 0 sends grpc-timeout and
 * abandons the call (RST_STREAM) locally a little after it; the return
 * value is status->code, and status must be cleared by the caller. */

/* Unary call.  On GRPC_STATUS_OK *response / *response_len hold the single
 * response (malloc'd, caller frees with free(); NUL-terminated); otherwise
 * *response is NULL. */
int grpc_client_unary(grpc_client *client, const char *path,
                      const grpc_metadata *md, size_t md_count, int timeout_ms,
                      const void *request, size_t request_len,
                      uint8_t **response, size_t *response_len,
                      grpc_status *status);

/* Called for each response message of a server-streaming call; data is
 * valid only during the call.  Return 0 to continue, non-zero to cancel the
 * call (it then ends with GRPC_STATUS_CANCELLED). */
typedef int (*grpc_message_fn)(void *ctx, const uint8_t *data, size_t len);

/* Server-streaming call: sends request, calls on_message per response. */
int grpc_client_server_streaming(grpc_client *client, const char *path,
                                 const grpc_metadata *md, size_t md_count,
                                 int timeout_ms, const void *request,
                                 size_t request_len, grpc_message_fn on_message,
                                 void *ctx, grpc_status *status);

/* Supplies the next request of a client-streaming call: return 1 with
 * *data / *len set (the bytes must stay valid until the next call), 0 at
 * the end of the requests, or negative to cancel the call. */
typedef int (*grpc_next_message_fn)(void *ctx, const void **data, size_t *len);

/* Client-streaming (or bidi, responses collected by on_message) call:
 * requests come from next_message; each response goes to on_message (NULL:
 * only the last one is kept in *response when response is non-NULL). */
int grpc_client_streaming(grpc_client *client, const char *path,
                          const grpc_metadata *md, size_t md_count,
                          int timeout_ms, grpc_next_message_fn next_message,
                          void *next_ctx, grpc_message_fn on_message,
                          void *message_ctx, uint8_t **response,
                          size_t *response_len, grpc_status *status);

/* One call of a batch. */
typedef struct grpc_unary_call {
	const char *path;    /* in */
	const void *request; /* in */
	size_t request_len;  /* in */
	uint8_t *response;   /* out: malloc'd on OK, else NULL */
	size_t response_len; /* out */
	grpc_status status;  /* out: caller clears */
} grpc_unary_call;

/* Runs calls[0..count) concurrently as streams of the one connection and
 * waits for all of them.  Returns the number that ended with
 * GRPC_STATUS_OK. */
int grpc_client_unary_batch(grpc_client *client, const grpc_metadata *md,
                            size_t md_count, int timeout_ms,
                            grpc_unary_call *calls, size_t count);

/* ===================================================================== */
/* Multiplexing client (asynchronous; one connection, one thread)        */
/* ===================================================================== */

/*
 * For a relay that must not hold a thread per call in flight: unary calls
 * are submitted from any thread and run concurrently as streams of one
 * connection, driven by the mux's own thread, which calls `done` with each
 * outcome.  The connection is made at the first call and remade after it
 * breaks (calls in flight then end UNAVAILABLE; a call the server refused
 * unprocessed, REFUSED_STREAM, e.g. past a GOAWAY, is sent again once on
 * the new connection).  `done` runs on the mux thread: it must be quick
 * and must not call the mux's free.
 *
 * done(ctx, code, response, response_len, status): on GRPC_STATUS_OK
 * `response` holds the single response message (malloc'd; the callee
 * frees it), otherwise NULL; `status` as for grpc_client_unary (the callee
 * clears it).  `request` is the request the call was given, valid during
 * done only (a relay can hand it on without keeping its own copy).
 */
typedef struct grpc_mux grpc_mux;
typedef void (*grpc_mux_done_fn)(void *ctx, int code, uint8_t *response,
                                 size_t response_len, grpc_status *status,
                                 const uint8_t *request, size_t request_len);

/* Validates the options and starts the thread (no connection yet).  0, or
 * a negative pemba_code with *err.  The option strings are copied. */
int grpc_mux_new(const grpc_client_options *options, grpc_mux **out,
                 pemba_error *err);

/* Queues one unary call: path, metadata and request are copied;
 * timeout_ms as for grpc_client_unary.  Never blocks; any thread.  After
 * grpc_mux_free began, done is called at once with CANCELLED. */
void grpc_mux_unary(grpc_mux *mux, const char *path, const grpc_metadata *md,
                    size_t md_count, int timeout_ms, const void *request,
                    size_t request_len, grpc_mux_done_fn done, void *ctx);

/* Ends every call still queued or in flight with CANCELLED (their done
 * runs), closes the connection, joins the thread and frees.  NULL is a
 * no-op. */
void grpc_mux_free(grpc_mux *mux);

/* Percent-encodes / decodes grpc-message text as the gRPC HTTP/2 protocol
 * specifies (bytes outside 0x20..0x7E and '%' become %XX).  Return
 * malloc'd, NUL-terminated strings.  Exposed for tests. */
char *grpc_percent_encode(const char *text);
char *grpc_percent_decode(const char *text);

/* Parses a grpc-timeout value ("100m", "5S", "1H"...; at most 8 digits and
 * one unit of H M S m u n) into nanoseconds.  Returns 0 and *ns, or -1 when
 * malformed. */
int grpc_parse_timeout(const char *text, int64_t *ns);

#endif
