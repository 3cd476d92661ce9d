/*
 * grpc_server.c -- the gRPC server: one epoll event loop doing all socket,
 * TLS and HTTP/2 (nghttp2) work, plus a pool of worker threads running the
 * method handlers.
 *
 * Threads and ownership.  nghttp2 sessions, connections and the loop-only
 * fields of a call are touched only by the loop thread.  A handler on a
 * worker talks to the loop through the call's shared fields (under
 * call->lock) and by "kicking" the call: putting it on the server's pending
 * list and writing the wake eventfd; the loop then submits headers, resumes
 * the data provider, returns flow-control credit, and so on.
 *
 * A call is reference-counted: one reference while its HTTP/2 stream is
 * open (dropped on stream close), one while a worker owns it (queued or
 * running), one while it sits on the pending list.  The last release frees
 * it.
 *
 * Flow control.  Automatic WINDOW_UPDATEs are off: connection-level credit
 * is returned as soon as bytes arrive (so one stalled stream cannot starve
 * the others), stream-level credit only when a streaming handler takes a
 * message with grpc_call_read, so a client that uploads faster than the
 * handler consumes is slowed down by HTTP/2 instead of growing memory.
 * Unary requests are bounded by the message size limit and credited at once.
 * In the other direction grpc_call_send blocks while more than
 * SEND_HIGH_WATER bytes wait for the client's window.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "api/grpc_internal.h"
#include "util/error.h"
#include "util/xalloc.h"

#define DEFAULT_MAX_MESSAGE (4u * 1024 * 1024)
#define DEFAULT_MAX_HEADER_LIST (16u * 1024)
#define DEFAULT_MAX_STREAMS 1024u
#define DEFAULT_MAX_CONNECTIONS 4096
#define DEFAULT_SHUTDOWN_MS 10000
#define DEFAULT_MAX_OPEN_STREAMS 10000
#define DEFAULT_STALL_MS 60000
#define DEFAULT_HANDSHAKE_MS 10000
#define DEFAULT_IDLE_MS (15 * 60 * 1000)
#define DEFAULT_KEEPALIVE_MS 120000
#define DEFAULT_KEEPALIVE_TIMEOUT_MS 20000
#define DEFAULT_KEEPALIVE_MIN_MS 10000
#define PING_STRIKES_ALLOWED 2
#define STREAM_WINDOW (1 << 20)
#define CONNECTION_WINDOW (16 << 20)
#define SEND_HIGH_WATER (1u << 20)
/* Suspended calls queue less: a stream that stopped reading costs at most
 * about this much memory (plus HTTP/2 windows), and the work to produce
 * it.  Resumed when the client has read down to STEP_LOW_WATER. */
#define STEP_HIGH_WATER (256u * 1024)
#define STEP_LOW_WATER (64u * 1024)
#define STREAM_BUFFER_CAP (4u << 20)
#define OUTBUF_FILL 65536
/* Coarse timers (stalls, idle connections, keepalive, handshakes) are
 * checked this often; call deadlines and step timers exactly. */
#define TIMER_SCAN_NS (100 * 1000000LL)
/* After this many new calls in a row a worker takes a waiting step, so
 * streams progress under a flood of unary calls. */
#define STARTS_PER_STEP 4
#define LIMIT_LOG_NS (10 * 1000000000LL)

/* ===================================================================== */
/* Types                                                                 */
/* ===================================================================== */

/* What an epoll registration points at; the first member of each. */
enum { EV_LISTEN = 1, EV_SHUTDOWN, EV_WAKE, EV_CONN };

typedef struct in_message {
	struct in_message *next;
	uint8_t *data;
	size_t len;
} in_message;

typedef struct conn conn;

struct grpc_call {
	grpc_server *server;
	atomic_int refs;

	/* --- loop thread only ---------------------------------------- */
	conn *conn; /* NULL once the stream is closed */
	int32_t stream_id;
	grpc_call *conn_prev, *conn_next;
	char *path;
	const grpc_method *method;
	bool method_post;     /* :method was POST */
	bool content_type_ok; /* content-type application/grpc[+...|;...] */
	bool bad_timeout;     /* unparsable grpc-timeout */
	bool headers_too_big;
	bool headers_done;
	size_t header_bytes;
	char *encoding; /* grpc-encoding, if any */
	grpc_deframer deframer;
	bool rx_failed; /* framing error seen: ignore further data */
	bool dispatched;
	bool response_submitted;
	bool data_deferred;
	bool deadline_done;
	bool counted_stream;  /* counted in server->open_streams */
	bool bad_auth_header; /* authorization header nghttp2 found invalid */
	int http_status;      /* for transport-generated errors; 200 normally */

	/* --- set before dispatch, then read-only --------------------- */
	grpc_metadata *md;
	size_t md_count, md_cap;
	int64_t deadline;
	char peer[INET6_ADDRSTRLEN]; /* the connection's (conn->peer) */

	int64_t started_ns;         /* headers complete (observer only) */
	bool observed;              /* on_call_start ran */
	uint64_t messages_received; /* loop thread */
	uint64_t messages_sent;     /* under lock */
	char request_id[65];        /* grpc_call_set_request_id, or "" */

	/* --- set by the auth hook on the worker, then read-only ------ */
	const char *principal; /* grpc_call_set_principal, or NULL */

	/* --- shared: under lock -------------------------------------- */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	in_message *in_head, *in_tail;
	size_t in_count;
	bool in_end;       /* client half-closed: no more requests */
	int in_error;      /* GRPC_E* once the request stream failed */
	uint8_t *current;  /* message last returned by grpc_call_read */
	size_t to_consume; /* stream credit to give back (loop applies it) */
	grpc_buf out;      /* framed response messages not yet sent */
	bool finished;     /* status decided; immutable from here on */
	bool handler_finished; /* ... by the handler (not the transport) */
	bool deferred;         /* grpc_call_defer: finished from elsewhere */
	bool cancelled;
	bool deadline_hit;
	bool stream_gone;
	int status;
	char *status_message;
	grpc_metadata *trailers;
	size_t trailer_count;
	/* Suspension (grpc_call_suspend): the step machine. */
	grpc_step_fn step_fn;
	grpc_release_fn release_fn;
	void *step_state;
	int step_phase;       /* STEP_* */
	bool step_rerun;      /* woken while running or queued */
	bool want_writable;   /* idle until the client drains the queue */
	int64_t wake_at;      /* step timer (CLOCK_MONOTONIC ns), 0: none */
	int64_t out_progress; /* last drain of out, or when it filled */
	int64_t in_progress;  /* last request message (client streaming) */
	/* RST_STREAM to send instead of trailers that flow control would
	 * hold back (a stalled reader): ENHANCE_YOUR_CALM, which gRPC
	 * clients report as RESOURCE_EXHAUSTED.  0: none. */
	uint32_t rst_code;
	bool rst_sent; /* loop only */

	/* --- under server->pending_lock ------------------------------ */
	bool in_pending;
	grpc_call *pending_next;
	grpc_call *drain_next; /* loop only: the batch being processed, since
	                          pending_next is reused by a new kick */
	grpc_call *job_next;   /* under server->jobs_lock */
	bool job_is_step;      /* under server->jobs_lock */
};

/* Step machine of a suspended call (call->step_phase). */
enum {
	STEP_NONE = 0, /* not suspended: the handler owns the call */
	STEP_STARTING, /* suspended, the handler not returned yet: run_call
	                  queues the first step, which sees every event that
	                  came meanwhile (wakes are not needed, nor taken) */
	STEP_IDLE,     /* waiting for a wake, a timer or writability */
	STEP_QUEUED,   /* on the step queue */
	STEP_RUNNING,  /* a worker runs step() */
	STEP_RELEASED, /* release() ran; the call is dead to the handler */
};

enum { CONN_HANDSHAKE, CONN_OPEN };

struct conn {
	int kind; /* EV_CONN */
	grpc_server *server;
	grpc_io io;
	int state;
	nghttp2_session *session;
	grpc_buf outbuf;
	uint32_t events; /* currently registered epoll events */
	grpc_call *calls;
	conn *prev, *next;
	conn *dirty_next;
	bool dirty;
	bool dead;               /* close at the end of this iteration */
	bool evicted;            /* dead to make room (server->dying) */
	bool close_when_flushed; /* after a GOAWAY with an error */
	int64_t accepted;        /* when accept() returned */
	bool preface_done;       /* a frame arrived after the client preface */
	int64_t last_recv;       /* last bytes from the peer */
	int64_t idle_since;      /* when the last call ended (0: calls open) */
	bool goaway_sent;        /* graceful GOAWAY for idleness */
	int64_t ping_sent;       /* our keepalive PING in flight since, or 0 */
	int64_t last_client_ping;
	int ping_strikes;
	/* The client's IP address, "" if unknown. */
	char peer[INET6_ADDRSTRLEN];
};

struct grpc_server {
	grpc_server_options options;
	SSL_CTX *ssl_ctx;
	int listen_fd;
	int port;
	int shutdown_fd;
	int wake_fd;
	int epoll_fd;
	int ev_listen, ev_shutdown, ev_wake; /* epoll tags */
	bool started;

	/* loop only */
	conn *conns;
	int conn_count;
	conn *dirty;
	bool shutting_down;
	int64_t grace_deadline;

	atomic_int live_calls;
	atomic_int stat_connections; /* conn_count, for other threads */
	atomic_int stat_streams;     /* open_streams, for other threads */
	int open_streams;        /* loop only: streaming calls open */
	int64_t next_scan;       /* loop only: next coarse timer scan */
	int64_t last_limit_log;  /* loop only */
	int refused_since_log;   /* loop only */
	int dying;               /* loop only: evicted, not yet closed */
	int64_t next_due;        /* loop only: next exact timer (0: none) */
	int64_t iteration_start; /* loop only: when epoll_wait returned */
	int reserve_fd;          /* spare fd, given up to shed on EMFILE */

	pthread_mutex_t pending_lock;
	grpc_call *pending_head, *pending_tail;

	pthread_mutex_t jobs_lock;
	pthread_cond_t jobs_cond;
	grpc_call *jobs_head, *jobs_tail;   /* new calls */
	grpc_call *steps_head, *steps_tail; /* steps of suspended calls */
	int starts_in_a_row;
	int steps_running;     /* under jobs_lock */
	int max_steps_running; /* half the workers: the rest serve calls */
	bool jobs_stop;
	pthread_t *workers;
	int worker_count;
};

static void call_process(grpc_call *call);
static void conn_mark_dirty(conn *c);
static void step_schedule(grpc_call *call);

/* The earlier of two instants, 0 meaning "none". */
static int64_t earlier(int64_t a, int64_t b)
{
	return a == 0 || (b != 0 && b < a) ? b : a;
}

/* ===================================================================== */
/* Logging                                                               */
/* ===================================================================== */

__attribute__((format(printf, 3, 4))) static void
server_log(grpc_server *s, int level, const char *fmt, ...)
{
	if (s->options.log == NULL)
		return;
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	s->options.log(s->options.log_ctx, level, text);
}

/* ===================================================================== */
/* Call lifetime                                                         */
/* ===================================================================== */

static grpc_call *call_new(conn *c, int32_t stream_id)
{
	grpc_call *call = xcalloc(1, sizeof(*call));
	call->server = c->server;
	atomic_init(&call->refs, 1); /* the stream's reference */
	call->conn = c;
	call->stream_id = stream_id;
	call->http_status = 200;
	memcpy(call->peer, c->peer, sizeof(call->peer));
	pthread_mutex_init(&call->lock, NULL);
	pthread_cond_init(&call->cond, NULL);
	call->conn_next = c->calls;
	if (c->calls != NULL)
		c->calls->conn_prev = call;
	c->calls = call;
	c->idle_since = 0;
	atomic_fetch_add(&c->server->live_calls, 1);
	return call;
}

static void call_ref(grpc_call *call)
{
	atomic_fetch_add(&call->refs, 1);
}

static void call_unref(grpc_call *call)
{
	if (atomic_fetch_sub(&call->refs, 1) != 1)
		return;
	grpc_server *s = call->server;
	if (call->observed) {
		/* The status is immutable once finished; nobody else holds
		 * the call any more. */
		grpc_call_outcome o = {
		    .status =
		        call->finished ? call->status : GRPC_STATUS_CANCELLED,
		    .duration_ns = grpc_now_ns() - call->started_ns,
		    .messages_received = call->messages_received,
		    .messages_sent = call->messages_sent,
		};
		s->options.on_call_end(
		    s->options.observer_ctx, call,
		    (size_t)(call->method - s->options.methods), &o);
	}
	free(call->path);
	free(call->encoding);
	grpc_deframer_free(&call->deframer);
	for (size_t i = 0; i < call->md_count; i++) {
		free((char *)call->md[i].name);
		free((char *)call->md[i].value);
	}
	free(call->md);
	for (in_message *m = call->in_head, *next; m != NULL; m = next) {
		next = m->next;
		free(m->data);
		free(m);
	}
	free(call->current);
	grpc_buf_free(&call->out);
	free(call->status_message);
	for (size_t i = 0; i < call->trailer_count; i++) {
		free((char *)call->trailers[i].name);
		free((char *)call->trailers[i].value);
	}
	free(call->trailers);
	pthread_mutex_destroy(&call->lock);
	pthread_cond_destroy(&call->cond);
	free(call);
	atomic_fetch_sub(&s->live_calls, 1);
}

/* Asks the loop to look at call (from a worker).  Takes a reference that
 * the loop drops after processing. */
static void call_kick(grpc_call *call)
{
	grpc_server *s = call->server;
	bool wake = false;
	pthread_mutex_lock(&s->pending_lock);
	if (!call->in_pending) {
		call->in_pending = true;
		call_ref(call);
		call->pending_next = NULL;
		wake = s->pending_head == NULL;
		if (s->pending_tail != NULL)
			s->pending_tail->pending_next = call;
		else
			s->pending_head = call;
		s->pending_tail = call;
	}
	pthread_mutex_unlock(&s->pending_lock);
	if (wake) {
		uint64_t one = 1;
		ssize_t n = write(s->wake_fd, &one, sizeof(one));
		(void)n; /* EAGAIN: counter saturated, loop wakes anyway */
	}
}

/* Decides the call's status from the transport (deadline, bad request,
 * oversize message, ...) unless it is decided already; wakes a handler
 * blocked on the call.  Loop thread; then processes the call. */
static void call_fail(grpc_call *call, int status, const char *message,
                      int in_error)
{
	pthread_mutex_lock(&call->lock);
	if (!call->finished) {
		call->finished = true;
		call->status = status;
		call->status_message = message ? xstrdup(message) : NULL;
		call->cancelled = true;
		if (status == GRPC_STATUS_DEADLINE_EXCEEDED)
			call->deadline_hit = true;
		/* Queued responses would only delay the status. */
		grpc_buf_free(&call->out);
	}
	if (in_error && !call->in_error)
		call->in_error = in_error;
	pthread_cond_broadcast(&call->cond);
	pthread_mutex_unlock(&call->lock);
	step_schedule(call); /* a suspended call is released */
	call_process(call);
}

static bool call_is_finished(grpc_call *call)
{
	pthread_mutex_lock(&call->lock);
	bool f = call->finished;
	pthread_mutex_unlock(&call->lock);
	return f;
}

/* ===================================================================== */
/* Worker pool                                                           */
/* ===================================================================== */

/* Appends call to the new-call or the step queue and wakes a worker.  The
 * caller hands over one reference, which the worker drops. */
static void enqueue_job(grpc_call *call, bool step)
{
	grpc_server *s = call->server;
	pthread_mutex_lock(&s->jobs_lock);
	call->job_next = NULL;
	call->job_is_step = step;
	grpc_call **head = step ? &s->steps_head : &s->jobs_head;
	grpc_call **tail = step ? &s->steps_tail : &s->jobs_tail;
	if (*tail != NULL)
		(*tail)->job_next = call;
	else
		*head = call;
	*tail = call;
	pthread_cond_signal(&s->jobs_cond);
	pthread_mutex_unlock(&s->jobs_lock);
}

static void run_call(grpc_call *call);

static void dispatch(grpc_call *call)
{
	call->dispatched = true;
	call_ref(call); /* the worker's reference */
	const grpc_server_options *o = &call->server->options;
	if (o->methods_on_loop != NULL &&
	    o->methods_on_loop[call->method - o->methods] &&
	    call->method->kind == GRPC_METHOD_UNARY)
		run_call(call); /* here, on the loop: it never blocks */
	else
		enqueue_job(call, false);
}

/* Runs the step of a suspended call soon: queues it when idle, or makes a
 * running step run again.  Any thread, no lock held. */
static void step_schedule(grpc_call *call)
{
	bool queue = false;
	pthread_mutex_lock(&call->lock);
	if (call->step_phase == STEP_IDLE) {
		call->step_phase = STEP_QUEUED;
		call->want_writable = false;
		queue = true;
	} else if (call->step_phase == STEP_RUNNING) {
		call->step_rerun = true;
	}
	pthread_mutex_unlock(&call->lock);
	if (queue) {
		call_ref(call);
		enqueue_job(call, true);
	}
}

/* Bytes of responses queued.  Under call->lock. */
static size_t out_size_locked(grpc_call *call)
{
	return grpc_buf_size(&call->out);
}

/* A step job: runs step() (or release() once the call is over) and decides
 * when the call runs next.  Holds the job's reference. */
static void run_step(grpc_call *call)
{
	pthread_mutex_lock(&call->lock);
	assert(call->step_phase == STEP_QUEUED);
	call->step_phase = STEP_RUNNING;
	call->step_rerun = false;
	bool over = call->finished || call->cancelled;
	pthread_mutex_unlock(&call->lock);

	grpc_step r = GRPC_STEP_DONE;
	if (!over)
		r = call->step_fn(call, call->step_state);

	bool requeue = false, release = false;
	pthread_mutex_lock(&call->lock);
	free(call->current);
	call->current = NULL;
	if (r == GRPC_STEP_DONE || call->finished || call->cancelled) {
		release = true;
		call->step_phase = STEP_RELEASED;
	} else if (r == GRPC_STEP_MORE) {
		if (call->step_rerun ||
		    out_size_locked(call) <= STEP_HIGH_WATER) {
			requeue = true;
			call->step_phase = STEP_QUEUED;
		} else {
			call->want_writable = true;
			call->step_phase = STEP_IDLE;
		}
	} else {
		requeue = call->step_rerun;
		call->step_phase = requeue ? STEP_QUEUED : STEP_IDLE;
	}
	pthread_mutex_unlock(&call->lock);

	if (requeue) {
		call_kick(call);         /* push what the step queued */
		enqueue_job(call, true); /* keeps the job's reference */
		return;
	}
	if (release) {
		call->release_fn(call, call->step_state);
		call->step_state = NULL;
		pthread_mutex_lock(&call->lock);
		bool finished = call->finished;
		pthread_mutex_unlock(&call->lock);
		if (!finished)
			grpc_call_finish(call, GRPC_STATUS_INTERNAL,
			                 "stream ended without a status");
		call_unref(call); /* the suspension's reference */
	}
	call_kick(call);
	call_unref(call);
}

static void run_call(grpc_call *call)
{
	grpc_server *s = call->server;
	if (!grpc_call_cancelled(call)) {
		int status = GRPC_STATUS_OK;
		const char *message = NULL;
		if (call->bad_auth_header) {
			status = GRPC_STATUS_UNAUTHENTICATED;
			message = "malformed authorization header";
		} else if (s->options.auth != NULL) {
			status = s->options.auth(call, s->options.auth_ctx,
			                         &message);
		}
		if (status != GRPC_STATUS_OK)
			grpc_call_finish(call, status, message);
		else
			call->method->handler(call, call->method->ctx);
	}
	pthread_mutex_lock(&call->lock);
	bool finished = call->finished || call->deferred;
	bool suspended = call->step_phase != STEP_NONE;
	free(call->current);
	call->current = NULL;
	if (suspended) {
		/* The handler handed the call over: its first step (or its
		 * release, if it is over already) runs as a step job. */
		assert(call->step_phase == STEP_STARTING);
		call->step_phase = STEP_QUEUED;
	}
	pthread_mutex_unlock(&call->lock);
	if (suspended) {
		call_kick(call);
		enqueue_job(call, true); /* the worker's reference moves on */
		return;
	}
	if (!finished)
		grpc_call_finish(call, GRPC_STATUS_INTERNAL,
		                 "handler returned without a status");
	call_kick(call);
	call_unref(call);
}

/* Takes the next job: new calls first (they are short, and latency is
 * what their clients measure), but a waiting step every
 * STARTS_PER_STEP new calls so streams are never starved; and never
 * more than max_steps_running steps at once, so streams (filling the
 * buffers of slow readers, fanning a commit out to every watcher)
 * cannot occupy every worker or core.  Under jobs_lock; NULL when
 * nothing may run. */
static grpc_call *next_job(grpc_server *s)
{
	bool step =
	    s->steps_head != NULL && s->steps_running < s->max_steps_running &&
	    (s->jobs_head == NULL || s->starts_in_a_row >= STARTS_PER_STEP);
	grpc_call **head = step ? &s->steps_head : &s->jobs_head;
	grpc_call **tail = step ? &s->steps_tail : &s->jobs_tail;
	grpc_call *call = *head;
	if (call == NULL)
		return NULL;
	*head = call->job_next;
	if (*head == NULL)
		*tail = NULL;
	s->starts_in_a_row = step ? 0 : s->starts_in_a_row + 1;
	if (step)
		s->steps_running++;
	return call;
}

static void *worker_main(void *arg)
{
	grpc_server *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->jobs_lock);
		grpc_call *call;
		while ((call = next_job(s)) == NULL && !s->jobs_stop)
			pthread_cond_wait(&s->jobs_cond, &s->jobs_lock);
		if (call == NULL) {
			pthread_mutex_unlock(&s->jobs_lock);
			return NULL;
		}
		bool step = call->job_is_step;
		pthread_mutex_unlock(&s->jobs_lock);
		if (!step) {
			run_call(call);
			continue;
		}
		run_step(call);
		pthread_mutex_lock(&s->jobs_lock);
		s->steps_running--;
		if (s->steps_head != NULL)
			pthread_cond_signal(&s->jobs_cond);
		pthread_mutex_unlock(&s->jobs_lock);
	}
}

/* ===================================================================== */
/* Handler-side API                                                      */
/* ===================================================================== */

const char *grpc_call_path(const grpc_call *call)
{
	return call->path;
}

const char *grpc_call_peer(const grpc_call *call)
{
	return call->peer;
}

void grpc_call_set_principal(grpc_call *call, const char *name)
{
	call->principal = name;
}

const char *grpc_call_principal(const grpc_call *call)
{
	return call->principal;
}

int grpc_call_set_request_id(grpc_call *call, const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n >= sizeof(call->request_id) || call->response_submitted)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char ch = id[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == ':' || ch == '-'))
			return -1;
	}
	memcpy(call->request_id, id, n + 1);
	return 0;
}

const char *grpc_call_request_id(const grpc_call *call)
{
	return call->request_id;
}

const char *grpc_call_metadata(const grpc_call *call, const char *name)
{
	for (size_t i = 0; i < call->md_count; i++)
		if (strcmp(call->md[i].name, name) == 0)
			return call->md[i].value;
	return NULL;
}

const grpc_metadata *grpc_call_metadata_all(const grpc_call *call,
                                            size_t *count)
{
	*count = call->md_count;
	return call->md;
}

int64_t grpc_call_deadline(const grpc_call *call)
{
	return call->deadline;
}

bool grpc_call_cancelled(const grpc_call *call)
{
	grpc_call *c = (grpc_call *)call;
	pthread_mutex_lock(&c->lock);
	bool cancelled = c->cancelled;
	pthread_mutex_unlock(&c->lock);
	return cancelled;
}

/* The error a cancelled call reports.  Under call->lock. */
static int cancel_code(const grpc_call *call)
{
	return call->deadline_hit ? GRPC_EDEADLINE : GRPC_ECANCELLED;
}

static int call_read(grpc_call *call, const uint8_t **data, size_t *len,
                     bool wait)
{
	int rv;
	bool kick = false;
	pthread_mutex_lock(&call->lock);
	free(call->current);
	call->current = NULL;
	for (;;) {
		in_message *m = call->in_head;
		if (m != NULL) {
			call->in_head = m->next;
			if (call->in_head == NULL)
				call->in_tail = NULL;
			call->in_count--;
			call->current = m->data;
			*data = m->data;
			*len = m->len;
			/* Streaming kinds return stream credit now that the
			 * handler has taken the message. */
			if (call->method->kind ==
			        GRPC_METHOD_CLIENT_STREAMING ||
			    call->method->kind == GRPC_METHOD_BIDI_STREAMING) {
				call->to_consume += m->len + GRPC_PREFIX_LEN;
				kick = true;
			}
			free(m);
			rv = 1;
			break;
		}
		if (call->in_error) {
			rv = call->in_error;
			break;
		}
		if (call->cancelled) {
			rv = cancel_code(call);
			break;
		}
		if (call->in_end) {
			rv = 0;
			break;
		}
		if (!wait) {
			rv = GRPC_EAGAIN;
			break;
		}
		pthread_cond_wait(&call->cond, &call->lock);
	}
	pthread_mutex_unlock(&call->lock);
	if (kick)
		call_kick(call);
	return rv;
}

int grpc_call_read(grpc_call *call, const uint8_t **data, size_t *len)
{
	return call_read(call, data, len, true);
}

int grpc_call_try_read(grpc_call *call, const uint8_t **data, size_t *len)
{
	return call_read(call, data, len, false);
}

int grpc_call_add_trailer(grpc_call *call, const char *name, const void *value,
                          size_t value_len)
{
	int rv = 0;
	pthread_mutex_lock(&call->lock);
	if (call->finished) {
		rv = GRPC_ESTATE;
	} else {
		call->trailers =
		    xrealloc(call->trailers, (call->trailer_count + 1) *
		                                 sizeof(*call->trailers));
		grpc_metadata *t = &call->trailers[call->trailer_count++];
		size_t n = strlen(name);
		t->name = xstrdup(name);
		if (n > 4 && strcmp(name + n - 4, "-bin") == 0) {
			t->value = grpc_base64_encode(value, value_len);
		} else {
			t->value = xstrndup(value, value_len);
		}
		t->value_len = strlen(t->value);
	}
	pthread_mutex_unlock(&call->lock);
	return rv;
}

int grpc_call_send(grpc_call *call, const void *data, size_t len)
{
	pthread_mutex_lock(&call->lock);
	if (call->finished || call->cancelled) {
		int rv = call->cancelled ? cancel_code(call) : GRPC_ESTATE;
		pthread_mutex_unlock(&call->lock);
		return rv;
	}
	if (grpc_buf_size(&call->out) == 0)
		call->out_progress = grpc_now_ns();
	grpc_buf_append_message(&call->out, data, len);
	call->messages_sent++;
	size_t queued = grpc_buf_size(&call->out);
	bool suspended = call->step_phase != STEP_NONE;
	bool deferred = call->deferred;
	if (suspended && queued > STREAM_BUFFER_CAP) {
		/* A step that ignores grpc_call_writable: end it rather than
		 * grow without bound. */
		call->finished = true;
		call->cancelled = true;
		call->status = GRPC_STATUS_RESOURCE_EXHAUSTED;
		call->status_message =
		    xstrdup("stream buffer limit exceeded: the client is not "
		            "reading responses");
		call->rst_code = NGHTTP2_ENHANCE_YOUR_CALM;
		grpc_buf_free(&call->out);
		pthread_mutex_unlock(&call->lock);
		call_kick(call);
		return GRPC_ECANCELLED;
	}
	pthread_mutex_unlock(&call->lock);
	/* Steps never block, and the end of the step pushes what they
	 * queued (one wake-up of the loop per step, not per message);
	 * plain handlers push now and wait for the client when it lags. */
	if (suspended)
		return 0;
	call_kick(call);
	if (queued <= SEND_HIGH_WATER || deferred)
		return 0;
	int rv = 0;
	pthread_mutex_lock(&call->lock);
	while (grpc_buf_size(&call->out) > SEND_HIGH_WATER && !call->cancelled)
		pthread_cond_wait(&call->cond, &call->lock);
	if (call->cancelled)
		rv = cancel_code(call);
	pthread_mutex_unlock(&call->lock);
	return rv;
}

int grpc_call_suspend(grpc_call *call, grpc_step_fn step,
                      grpc_release_fn release, void *state)
{
	pthread_mutex_lock(&call->lock);
	if (call->finished || call->step_phase != STEP_NONE) {
		pthread_mutex_unlock(&call->lock);
		return GRPC_ESTATE;
	}
	call->step_fn = step;
	call->release_fn = release;
	call->step_state = state;
	/* run_call queues the first step when the handler returns; until
	 * then no other thread may queue it (input, a wake or writability
	 * arriving now would run the step beside the handler). */
	call->step_phase = STEP_STARTING;
	call->in_progress = grpc_now_ns();
	pthread_mutex_unlock(&call->lock);
	call_ref(call); /* the suspension's reference, dropped after release */
	/* Tests widen the window between suspending and returning to
	 * run_call, where input and wakes must not queue the step
	 * (tests/api/test_server_robustness.c); not an option for people. */
	const char *delay = getenv("PEMBA_TEST_SUSPEND_DELAY_MS");
	if (delay && *delay)
		usleep((useconds_t)atoi(delay) * 1000u);
	return 0;
}

int grpc_call_defer(grpc_call *call)
{
	pthread_mutex_lock(&call->lock);
	if (call->finished || call->step_phase != STEP_NONE ||
	    call->deferred) {
		pthread_mutex_unlock(&call->lock);
		return GRPC_ESTATE;
	}
	call->deferred = true;
	pthread_mutex_unlock(&call->lock);
	call_ref(call); /* the owner's, dropped by grpc_call_release */
	return 0;
}

void grpc_call_release(grpc_call *call)
{
	call_unref(call);
}

bool grpc_call_writable(grpc_call *call)
{
	pthread_mutex_lock(&call->lock);
	size_t high =
	    call->step_phase != STEP_NONE ? STEP_HIGH_WATER : SEND_HIGH_WATER;
	bool w = !call->finished && !call->cancelled &&
	         grpc_buf_size(&call->out) <= high;
	pthread_mutex_unlock(&call->lock);
	return w;
}

void grpc_call_wake(grpc_call *call)
{
	step_schedule(call);
}

void grpc_call_wake_after(grpc_call *call, int ms)
{
	pthread_mutex_lock(&call->lock);
	call->wake_at = ms > 0 ? grpc_now_ns() + (int64_t)ms * 1000000 : 0;
	pthread_mutex_unlock(&call->lock);
	call_kick(call); /* the loop learns the new timer */
}

int grpc_call_finish(grpc_call *call, int status, const char *message)
{
	pthread_mutex_lock(&call->lock);
	if (call->finished) {
		int rv =
		    call->handler_finished ? GRPC_ESTATE : cancel_code(call);
		pthread_mutex_unlock(&call->lock);
		return rv;
	}
	call->finished = true;
	call->handler_finished = true;
	call->status = status;
	call->status_message =
	    message != NULL && message[0] ? xstrdup(message) : NULL;
	bool gone = call->stream_gone;
	pthread_mutex_unlock(&call->lock);
	if (gone)
		return GRPC_ECANCELLED;
	call_kick(call);
	return 0;
}

int grpc_call_finishf(grpc_call *call, int status, const char *fmt, ...)
{
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	return grpc_call_finish(call, status, text);
}

/* ===================================================================== */
/* Responses (loop thread)                                               */
/* ===================================================================== */

#define NV(n, v, vlen)                                                         \
	((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), (vlen),       \
	              NGHTTP2_NV_FLAG_NONE})

/* Appends grpc-status, grpc-message and the handler's trailers to nv;
 * returns the new count.  *to_free receives an allocation to release after
 * submission.  status_text must hold 16 bytes. */
static size_t status_headers(grpc_call *call, nghttp2_nv *nv, size_t n,
                             char *status_text, char **to_free)
{
	snprintf(status_text, 16, "%d", call->status);
	nv[n++] = NV("grpc-status", status_text, strlen(status_text));
	*to_free = NULL;
	if (call->status_message != NULL) {
		*to_free = grpc_percent_encode(call->status_message);
		nv[n++] = NV("grpc-message", *to_free, strlen(*to_free));
	}
	for (size_t i = 0; i < call->trailer_count; i++)
		nv[n++] = NV(call->trailers[i].name, call->trailers[i].value,
		             call->trailers[i].value_len);
	return n;
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id,
                            uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data)
{
	grpc_call *call = source->ptr;
	pthread_mutex_lock(&call->lock);
	size_t n = grpc_buf_size(&call->out);
	if (n > length)
		n = length;
	if (n > 0) {
		memcpy(buf, call->out.data + call->out.head, n);
		grpc_buf_consume(&call->out, n);
		call->out_progress = grpc_now_ns();
	}
	if (grpc_buf_size(&call->out) <= SEND_HIGH_WATER)
		pthread_cond_broadcast(&call->cond);
	bool wake =
	    call->want_writable && grpc_buf_size(&call->out) <= STEP_LOW_WATER;
	bool finished = call->finished && grpc_buf_size(&call->out) == 0;
	pthread_mutex_unlock(&call->lock);
	if (wake)
		step_schedule(call);
	if (n > 0 && !finished)
		return (ssize_t)n;
	if (!finished) {
		call->data_deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	/* All data out: end the body and send the status as trailers.  The
	 * status fields are immutable once finished is set. */
	*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
	nghttp2_nv nv[4 + call->trailer_count];
	char status_text[16];
	char *encoded;
	size_t count = status_headers(call, nv, 0, status_text, &encoded);
	int rv = nghttp2_submit_trailer(session, stream_id, nv, count);
	free(encoded);
	if (rv != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return (ssize_t)n;
}

/* Pushes whatever the call has ready onto its stream: flow-control credit,
 * response headers, resumed data, the final status. */
static void call_process(grpc_call *call)
{
	conn *c = call->conn;
	if (c == NULL || c->session == NULL)
		return;
	pthread_mutex_lock(&call->lock);
	size_t consume = call->to_consume;
	call->to_consume = 0;
	bool finished = call->finished;
	size_t pending = grpc_buf_size(&call->out);
	size_t trailers = call->trailer_count;
	int64_t wake_at = call->wake_at;
	uint32_t rst_code = call->rst_code;
	pthread_mutex_unlock(&call->lock);
	call->server->next_due = earlier(call->server->next_due, wake_at);
	if (rst_code != 0) {
		if (!call->rst_sent) {
			call->rst_sent = true;
			nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE,
			                          call->stream_id, rst_code);
			conn_mark_dirty(c);
		}
		return;
	}

	if (consume > 0)
		nghttp2_session_consume_stream(c->session, call->stream_id,
		                               consume);
	if (!call->response_submitted) {
		char status_text[16], http_text[16];
		snprintf(http_text, sizeof(http_text), "%d", call->http_status);
		nghttp2_nv nv[7 + trailers];
		size_t n = 0;
		nv[n++] = NV(":status", http_text, strlen(http_text));
		nv[n++] = NV("content-type", "application/grpc", 16);
		if (call->request_id[0])
			nv[n++] = NV("x-request-id", call->request_id,
			             strlen(call->request_id));
		if (finished && pending == 0) {
			/* Trailers-Only: one HEADERS frame with the status. */
			char *encoded;
			n = status_headers(call, nv, n, status_text, &encoded);
			nghttp2_submit_response(c->session, call->stream_id, nv,
			                        n, NULL);
			free(encoded);
			call->response_submitted = true;
		} else if (pending > 0 || finished) {
			nghttp2_data_provider provider = {
			    .source.ptr = call,
			    .read_callback = data_read_cb,
			};
			nghttp2_submit_response(c->session, call->stream_id, nv,
			                        n, &provider);
			call->response_submitted = true;
		}
	} else if (call->data_deferred && (pending > 0 || finished)) {
		call->data_deferred = false;
		nghttp2_session_resume_data(c->session, call->stream_id);
	}
	conn_mark_dirty(c);
}

/* ===================================================================== */
/* Request handling (nghttp2 callbacks, loop thread)                     */
/* ===================================================================== */

static const grpc_method *find_method(grpc_server *s, const char *path)
{
	for (size_t i = 0; i < s->options.method_count; i++)
		if (strcmp(s->options.methods[i].path, path) == 0)
			return &s->options.methods[i];
	return NULL;
}

static bool content_type_is_grpc(const uint8_t *v, size_t n)
{
	static const char base[] = "application/grpc";
	size_t b = sizeof(base) - 1;
	if (n < b || memcmp(v, base, b) != 0)
		return false;
	return n == b || v[b] == '+' || v[b] == ';';
}

static int on_begin_headers(nghttp2_session *session,
                            const nghttp2_frame *frame, void *user_data)
{
	conn *c = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	grpc_call *call = call_new(c, frame->hd.stream_id);
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id,
	                                     call);
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data)
{
	conn *c = user_data;
	grpc_call *call =
	    nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (call == NULL || call->headers_done)
		return 0; /* client trailers carry nothing for us */
	call->header_bytes += namelen + valuelen + 32;
	if (call->header_bytes > c->server->options.max_header_list_size) {
		call->headers_too_big = true;
		return 0;
	}
	if (namelen > 0 && name[0] == ':') {
		if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
			free(call->path);
			call->path = xstrndup((const char *)value, valuelen);
		} else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
			call->method_post =
			    valuelen == 4 && memcmp(value, "POST", 4) == 0;
		}
		return 0;
	}
	if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
		call->content_type_ok = content_type_is_grpc(value, valuelen);
	if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
		char text[32];
		int64_t ns;
		if (valuelen >= sizeof(text)) {
			call->bad_timeout = true;
		} else {
			memcpy(text, value, valuelen);
			text[valuelen] = 0;
			if (grpc_parse_timeout(text, &ns) != 0)
				call->bad_timeout = true;
			else {
				call->deadline = grpc_now_ns() + ns;
				c->server->next_due = earlier(
				    c->server->next_due, call->deadline);
			}
		}
	}
	if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0) {
		free(call->encoding);
		call->encoding = xstrndup((const char *)value, valuelen);
	}
	if (call->md_count == call->md_cap) {
		call->md_cap = call->md_cap ? 2 * call->md_cap : 8;
		call->md = xrealloc(call->md, call->md_cap * sizeof(*call->md));
	}
	grpc_metadata *m = &call->md[call->md_count++];
	m->name = xstrndup((const char *)name, namelen);
	m->value = xstrndup((const char *)value, valuelen);
	m->value_len = valuelen;
	return 0;
}

/* The request headers are complete: validate them and pick the method. */
static void headers_complete(grpc_call *call)
{
	grpc_server *s = call->server;
	call->headers_done = true;
	if (call->headers_too_big) {
		call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
		          "request header list too large", GRPC_EPROTOCOL);
		return;
	}
	if (!call->method_post) {
		call->http_status = 405;
		call_fail(call, GRPC_STATUS_INTERNAL,
		          "gRPC requires the POST method", GRPC_EPROTOCOL);
		return;
	}
	if (!call->content_type_ok) {
		call->http_status = 415;
		call_fail(call, GRPC_STATUS_INTERNAL,
		          "invalid gRPC request content-type", GRPC_EPROTOCOL);
		return;
	}
	if (call->bad_timeout) {
		call_fail(call, GRPC_STATUS_INTERNAL, "malformed grpc-timeout",
		          GRPC_EPROTOCOL);
		return;
	}
	if (call->encoding != NULL && strcmp(call->encoding, "identity") != 0) {
		char text[160];
		snprintf(
		    text, sizeof(text),
		    "grpc: Decompressor is not installed for grpc-encoding "
		    "\"%.64s\"",
		    call->encoding);
		call_fail(call, GRPC_STATUS_UNIMPLEMENTED, text,
		          GRPC_EPROTOCOL);
		return;
	}
	call->method = call->path ? find_method(s, call->path) : NULL;
	if (call->method == NULL) {
		char text[300];
		snprintf(text, sizeof(text), "unknown method %.256s",
		         call->path ? call->path : "(none)");
		call_fail(call, GRPC_STATUS_UNIMPLEMENTED, text, 0);
		return;
	}
	if (s->options.on_call_start != NULL &&
	    s->options.on_call_end != NULL) {
		call->observed = true;
		call->started_ns = grpc_now_ns();
		s->options.on_call_start(
		    s->options.observer_ctx, call,
		    (size_t)(call->method - s->options.methods));
	}
	if (call->method->kind != GRPC_METHOD_UNARY) {
		if (s->open_streams >= s->options.max_streams) {
			char text[160];
			snprintf(
			    text, sizeof(text),
			    "too many open streams (limit %d): retry later",
			    s->options.max_streams);
			call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, text,
			          GRPC_EPROTOCOL);
			return;
		}
		s->open_streams++;
		atomic_store_explicit(&s->stat_streams, s->open_streams,
		                      memory_order_relaxed);
		call->counted_stream = true;
	}
	if (call->method->kind == GRPC_METHOD_CLIENT_STREAMING ||
	    call->method->kind == GRPC_METHOD_BIDI_STREAMING)
		dispatch(call);
}

/* The client half-closed its side. */
static void remote_end(grpc_call *call)
{
	if (call->method == NULL || call->rx_failed || call_is_finished(call))
		return;
	if (grpc_deframer_partial(&call->deframer)) {
		call->rx_failed = true;
		call_fail(call, GRPC_STATUS_INTERNAL,
		          "grpc: request ended inside a message (bad length "
		          "prefix?)",
		          GRPC_EPROTOCOL);
		return;
	}
	if (call->dispatched) {
		pthread_mutex_lock(&call->lock);
		call->in_end = true;
		pthread_cond_broadcast(&call->cond);
		pthread_mutex_unlock(&call->lock);
		step_schedule(call);
		return;
	}
	/* Unary and server-streaming: exactly one request message. */
	if (call->in_count != 1) {
		call_fail(call, GRPC_STATUS_INTERNAL,
		          call->in_count == 0
		              ? "grpc: no request message for a unary "
		                "request"
		              : "grpc: too many request messages for a "
		                "unary request",
		          GRPC_EPROTOCOL);
		return;
	}
	call->in_end = true;
	dispatch(call);
}

/* A header field nghttp2 finds invalid (control characters, leading or
 * trailing white space...) is ignored, not a stream reset; an invalid
 * authorization header makes the call UNAUTHENTICATED (run_call), which
 * is what a client can act on. */
static int on_invalid_header(nghttp2_session *session,
                             const nghttp2_frame *frame, const uint8_t *name,
                             size_t namelen, const uint8_t *value,
                             size_t valuelen, uint8_t flags, void *user_data)
{
	grpc_call *call =
	    nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (call != NULL && !call->headers_done && namelen == 13 &&
	    memcmp(name, "authorization", 13) == 0)
		call->bad_auth_header = true;
	return 0;
}

/* A PING from the client: gRPC's enforcement policy.  Pings closer
 * together than keepalive_min_time_ms are strikes; past
 * PING_STRIKES_ALLOWED the connection ends with GOAWAY ENHANCE_YOUR_CALM
 * and the debug data "too_many_pings", which gRPC clients recognize
 * (they back off their keepalive interval). */
static void client_ping(conn *c)
{
	grpc_server *s = c->server;
	int64_t now = grpc_now_ns();
	if (c->last_client_ping != 0 &&
	    now - c->last_client_ping <
	        (int64_t)s->options.keepalive_min_time_ms * 1000000)
		c->ping_strikes++;
	c->last_client_ping = now;
	if (c->ping_strikes > PING_STRIKES_ALLOWED && !c->dead) {
		static const char debug[] = "too_many_pings";
		nghttp2_submit_goaway(
		    c->session, NGHTTP2_FLAG_NONE,
		    nghttp2_session_get_last_proc_stream_id(c->session),
		    NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)debug,
		    sizeof(debug) - 1);
		c->close_when_flushed = true;
		server_log(s, 1,
		           "closing a connection: too many pings (more than "
		           "one per %d ms)",
		           s->options.keepalive_min_time_ms);
	}
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user_data)
{
	conn *c = user_data;
	c->preface_done = true;
	if (frame->hd.type == NGHTTP2_PING) {
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			c->ping_sent = 0;
		else
			client_ping(c);
		return 0;
	}
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	grpc_call *call =
	    nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (call == NULL)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && !call->headers_done)
		headers_complete(call);
	if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
		remote_end(call);
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags,
                         int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data)
{
	conn *c = user_data;
	nghttp2_session_consume_connection(session, len);
	grpc_call *call =
	    nghttp2_session_get_stream_user_data(session, stream_id);
	bool streaming = call != NULL && call->dispatched &&
	                 (call->method->kind == GRPC_METHOD_CLIENT_STREAMING ||
	                  call->method->kind == GRPC_METHOD_BIDI_STREAMING);
	if (!streaming || call->rx_failed)
		nghttp2_session_consume_stream(session, stream_id, len);
	if (call == NULL || call->rx_failed || call->method == NULL)
		return 0;
	if (!streaming && call_is_finished(call))
		return 0;
	while (len > 0) {
		uint8_t *msg;
		size_t msg_len;
		uint32_t declared = 0;
		int rv =
		    grpc_deframe(&call->deframer, &data, &len,
		                 c->server->options.max_receive_message_size,
		                 &msg, &msg_len, &declared);
		if (rv == GRPC_DEFRAME_MORE)
			break;
		if (rv == GRPC_DEFRAME_TOOBIG ||
		    rv == GRPC_DEFRAME_COMPRESSED ||
		    rv == GRPC_DEFRAME_BADFLAG) {
			char text[160];
			int status;
			int in_error;
			if (rv == GRPC_DEFRAME_TOOBIG) {
				snprintf(text, sizeof(text),
				         "grpc: received message larger than "
				         "max (%u vs. %zu)",
				         declared,
				         c->server->options
				             .max_receive_message_size);
				status = GRPC_STATUS_RESOURCE_EXHAUSTED;
				in_error = GRPC_ETOOBIG;
			} else if (rv == GRPC_DEFRAME_BADFLAG) {
				snprintf(text, sizeof(text),
				         "grpc: received unexpected payload "
				         "format %u (the compressed flag must "
				         "be 0 or 1)",
				         declared);
				status = GRPC_STATUS_INTERNAL;
				in_error = GRPC_EPROTOCOL;
			} else {
				snprintf(
				    text, sizeof(text),
				    "grpc: compressed flag set with identity "
				    "or empty encoding");
				status = GRPC_STATUS_INTERNAL;
				in_error = GRPC_EPROTOCOL;
			}
			call->rx_failed = true;
			/* Give back the credit of what is already queued. */
			if (streaming)
				nghttp2_session_consume_stream(session,
				                               stream_id, len);
			call_fail(call, status, text, in_error);
			return 0;
		}
		in_message *m = xmalloc(sizeof(*m));
		m->next = NULL;
		m->data = msg;
		m->len = msg_len;
		pthread_mutex_lock(&call->lock);
		if (call->in_tail != NULL)
			call->in_tail->next = m;
		else
			call->in_head = m;
		call->in_tail = m;
		call->in_count++;
		call->messages_received++;
		call->in_progress = grpc_now_ns();
		pthread_cond_broadcast(&call->cond);
		pthread_mutex_unlock(&call->lock);
		if (streaming)
			step_schedule(call);
		/* A unary request is one message: refuse more right away
		 * rather than buffering whatever the client streams. */
		if (!streaming && call->in_count > 1) {
			call->rx_failed = true;
			call_fail(call, GRPC_STATUS_INTERNAL,
			          "grpc: too many request messages for a unary "
			          "request",
			          GRPC_EPROTOCOL);
			return 0;
		}
	}
	return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user_data)
{
	/* Response complete while the client is still sending (early status,
	 * oversize message...): tell it to stop, as HTTP/2 allows. */
	if ((frame->hd.type == NGHTTP2_HEADERS ||
	     frame->hd.type == NGHTTP2_DATA) &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    !nghttp2_session_get_stream_remote_close(session,
	                                             frame->hd.stream_id))
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE,
		                          frame->hd.stream_id,
		                          NGHTTP2_NO_ERROR);
	return 0;
}

/* Detaches call from its stream: the handler sees cancellation unless the
 * call completed.  Drops the stream's reference. */
static void call_detach(grpc_call *call, bool error)
{
	conn *c = call->conn;
	pthread_mutex_lock(&call->lock);
	call->stream_gone = true;
	if (error || !call->finished)
		call->cancelled = true;
	pthread_cond_broadcast(&call->cond);
	pthread_mutex_unlock(&call->lock);
	step_schedule(call);
	if (call->counted_stream) {
		call->counted_stream = false;
		call->server->open_streams--;
		atomic_store_explicit(&call->server->stat_streams,
		                      call->server->open_streams,
		                      memory_order_relaxed);
	}
	if (call->conn_prev != NULL)
		call->conn_prev->conn_next = call->conn_next;
	else
		c->calls = call->conn_next;
	if (call->conn_next != NULL)
		call->conn_next->conn_prev = call->conn_prev;
	if (c->calls == NULL)
		c->idle_since = grpc_now_ns();
	call->conn = NULL;
	call_unref(call);
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id,
                           uint32_t error_code, void *user_data)
{
	grpc_call *call =
	    nghttp2_session_get_stream_user_data(session, stream_id);
	if (call == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	call_detach(call, error_code != NGHTTP2_NO_ERROR);
	return 0;
}

/* ===================================================================== */
/* Connections                                                           */
/* ===================================================================== */

static void conn_set_events(conn *c, uint32_t events)
{
	if (c->events == events)
		return;
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(c->server->epoll_fd, EPOLL_CTL_MOD, c->io.fd, &ev);
	c->events = events;
}

static void conn_mark_dirty(conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->server->dirty;
	c->server->dirty = c;
}

static void conn_close(conn *c)
{
	grpc_server *s = c->server;
	while (c->calls != NULL) {
		grpc_call *call = c->calls;
		if (c->session != NULL)
			nghttp2_session_set_stream_user_data(
			    c->session, call->stream_id, NULL);
		call_detach(call, true);
	}
	if (c->session != NULL)
		nghttp2_session_del(c->session);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->io.fd, NULL);
	if (c->io.ssl != NULL)
		SSL_free(c->io.ssl);
	close(c->io.fd);
	grpc_buf_free(&c->outbuf);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->conn_count--;
	atomic_store_explicit(&s->stat_connections, s->conn_count,
	                      memory_order_relaxed);
	if (c->evicted)
		s->dying--;
	free(c);
}

static int conn_start_session(conn *c)
{
	grpc_server *s = c->server;
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(
	    cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
	    cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb,
	                                                       on_stream_close);
	nghttp2_session_callbacks_set_on_invalid_header_callback(
	    cb, on_invalid_header);
	nghttp2_option *opt;
	nghttp2_option_new(&opt);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* White space around a value is the application's business (an
	 * authorization header with a stray space is UNAUTHENTICATED, not a
	 * reset stream). */
	nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(opt,
	                                                                 1);
	int rv = nghttp2_session_server_new2(&c->session, cb, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (rv != 0)
		return -1;
	nghttp2_settings_entry settings[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
	     s->options.max_concurrent_streams},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
	     s->options.max_header_list_size},
	};
	nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 3);
	nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
	                                      CONNECTION_WINDOW);
	c->state = CONN_OPEN;
	if (s->shutting_down)
		nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, 0,
		                      NGHTTP2_NO_ERROR, NULL, 0);
	conn_mark_dirty(c);
	return 0;
}

/* Writes what nghttp2 has to send until the socket would block.  0, or -1
 * when the connection is broken. */
static int conn_flush(conn *c)
{
	for (;;) {
		while (grpc_buf_size(&c->outbuf) > 0) {
			ssize_t n = grpc_io_write(
			    &c->io, c->outbuf.data + c->outbuf.head,
			    grpc_buf_size(&c->outbuf));
			if (n == GRPC_IO_AGAIN) {
				conn_set_events(c, EPOLLIN | EPOLLOUT);
				return 0;
			}
			if (n < 0)
				return -1;
			grpc_buf_consume(&c->outbuf, (size_t)n);
		}
		bool any = false;
		while (grpc_buf_size(&c->outbuf) < OUTBUF_FILL) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->session, &data);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
			grpc_buf_append(&c->outbuf, data, (size_t)n);
			any = true;
		}
		if (!any)
			break;
	}
	conn_set_events(c, EPOLLIN);
	return 0;
}

static int conn_handshake(conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->io.ssl);
	if (r == 1) {
		const unsigned char *alpn = NULL;
		unsigned int alpn_len = 0;
		SSL_get0_alpn_selected(c->io.ssl, &alpn, &alpn_len);
		/* Clients without ALPN are taken to mean h2 (prior knowledge
		 * over TLS); any other protocol was refused in the selection
		 * callback. */
		if (alpn_len != 0 && (alpn_len != 2 || memcmp(alpn, "h2", 2)))
			return -1;
		if (conn_start_session(c) != 0)
			return -1;
		return 1;
	}
	int e = SSL_get_error(c->io.ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		conn_set_events(c, EPOLLIN);
		return 0;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		conn_set_events(c, EPOLLIN | EPOLLOUT);
		return 0;
	}
	return -1;
}

static void conn_on_event(conn *c, uint32_t events)
{
	if (c->state == CONN_HANDSHAKE) {
		int r = conn_handshake(c);
		if (r < 0) {
			c->dead = true;
			return;
		}
		if (r == 0)
			return;
		/* The handshake's last read may have brought data too. */
		events |= EPOLLIN;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		uint8_t buf[16384];
		for (;;) {
			ssize_t n = grpc_io_read(&c->io, buf, sizeof(buf));
			if (n == GRPC_IO_AGAIN)
				break;
			if (n <= 0) {
				c->dead = true;
				return;
			}
			c->last_recv = grpc_now_ns();
			ssize_t used = nghttp2_session_mem_recv(c->session, buf,
			                                        (size_t)n);
			if (used < 0) {
				server_log(c->server, 1, "http2 error: %s",
				           nghttp2_strerror((int)used));
				c->dead = true;
				return;
			}
		}
	}
	conn_mark_dirty(c);
}

/* Flushes every connection touched in this iteration and closes the ones
 * that are finished or broken. */
static void flush_dirty(grpc_server *s)
{
	while (s->dirty != NULL) {
		conn *c = s->dirty;
		s->dirty = c->dirty_next;
		c->dirty = false;
		if (!c->dead && c->state == CONN_OPEN) {
			if (conn_flush(c) != 0)
				c->dead = true;
			else if ((c->close_when_flushed ||
			          !nghttp2_session_want_read(c->session)) &&
			         !nghttp2_session_want_write(c->session) &&
			         grpc_buf_size(&c->outbuf) == 0)
				c->dead = true;
		}
		if (c->dead)
			conn_close(c);
	}
}

/* Logs that connections were refused, at most every LIMIT_LOG_NS. */
static void note_refused(grpc_server *s, const char *why)
{
	s->refused_since_log++;
	int64_t now = grpc_now_ns();
	if (s->last_limit_log != 0 && now - s->last_limit_log < LIMIT_LOG_NS)
		return;
	server_log(s, 1,
	           "%s: refused %d connection(s) since the last report "
	           "(%d open, limit %d)",
	           why, s->refused_since_log, s->conn_count,
	           s->options.max_connections);
	s->last_limit_log = now;
	s->refused_since_log = 0;
}

/* At the connection cap: marks the oldest connection that has not
 * completed its handshake and preface for closing, so a silent flood
 * cannot lock real clients out.  Connections accepted in this loop
 * iteration had no chance to be read yet and are spared.  True if one
 * was found. */
static bool evict_unestablished(grpc_server *s)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		conn *oldest = NULL;
		for (conn *c = s->conns; c != NULL; c = c->next)
			if (!c->preface_done && !c->dead &&
			    c->accepted < s->iteration_start &&
			    (oldest == NULL || c->accepted <= oldest->accepted))
				oldest = c;
		if (oldest == NULL)
			return false;
		/* Its preface may be waiting in the socket, its event not
		 * yet handled in this iteration: read it first. */
		conn_on_event(oldest, EPOLLIN);
		if (oldest->dead) {
			oldest->evicted = true;
			s->dying++;
			conn_mark_dirty(oldest);
			return true; /* it went away by itself */
		}
		if (oldest->preface_done)
			continue; /* a real client: look further */
		oldest->dead = true;
		oldest->evicted = true;
		s->dying++;
		conn_mark_dirty(oldest);
		return true;
	}
	return false;
}

/* The client's IP address as text, without the port (an IPv4 address
 * mapped into IPv6 is shown as IPv4); "" when unknown. */
static void peer_address(const struct sockaddr_storage *a, socklen_t len,
                         char *out, size_t size)
{
	out[0] = '\0';
	if (a->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *v4 = (const void *)a;
		inet_ntop(AF_INET, &v4->sin_addr, out, (socklen_t)size);
	} else if (a->ss_family == AF_INET6 &&
	           len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *v6 = (const void *)a;
		if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr))
			inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], out,
			          (socklen_t)size);
		else
			inet_ntop(AF_INET6, &v6->sin6_addr, out,
			          (socklen_t)size);
	}
}

static void accept_connections(grpc_server *s)
{
	for (;;) {
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof(peer);
		int fd = accept4(s->listen_fd, (struct sockaddr *)&peer,
		                 &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if ((errno == EMFILE || errno == ENFILE) &&
			    s->reserve_fd >= 0) {
				/* Out of descriptors: the listen socket would
				 * stay readable and spin the loop.  Use the
				 * spare descriptor to take the connection and
				 * drop it. */
				close(s->reserve_fd);
				fd = accept4(s->listen_fd, NULL, NULL,
				             SOCK_CLOEXEC);
				if (fd >= 0)
					close(fd);
				s->reserve_fd =
				    open("/dev/null", O_RDONLY | O_CLOEXEC);
				evict_unestablished(s);
				note_refused(s, "out of file descriptors");
				return;
			}
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				server_log(s, 0, "accept: %s", strerror(errno));
			return;
		}
		if (s->conn_count - s->dying >= s->options.max_connections &&
		    !evict_unestablished(s)) {
			note_refused(s, "connection limit reached");
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		conn *c = xcalloc(1, sizeof(*c));
		c->kind = EV_CONN;
		c->server = s;
		c->io.fd = fd;
		c->events = EPOLLIN;
		c->accepted = c->last_recv = c->idle_since = grpc_now_ns();
		peer_address(&peer, peer_len, c->peer, sizeof(c->peer));
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = s->conns;
		if (s->conns != NULL)
			s->conns->prev = c;
		s->conns = c;
		s->conn_count++;
		atomic_store_explicit(&s->stat_connections, s->conn_count,
		                      memory_order_relaxed);
		if (s->ssl_ctx != NULL) {
			c->state = CONN_HANDSHAKE;
			c->io.ssl = SSL_new(s->ssl_ctx);
			if (c->io.ssl == NULL ||
			    grpc_io_attach_ssl(c->io.ssl, fd) != 0) {
				c->dead = true;
				conn_mark_dirty(c);
				continue;
			}
			SSL_set_accept_state(c->io.ssl);
		} else if (conn_start_session(c) != 0) {
			c->dead = true;
			conn_mark_dirty(c);
		}
	}
}

/* ===================================================================== */
/* Event loop                                                            */
/* ===================================================================== */

static void drain_pending(grpc_server *s)
{
	pthread_mutex_lock(&s->pending_lock);
	grpc_call *list = s->pending_head;
	s->pending_head = s->pending_tail = NULL;
	for (grpc_call *call = list; call != NULL; call = call->pending_next) {
		call->in_pending = false;
		call->drain_next = call->pending_next;
	}
	pthread_mutex_unlock(&s->pending_lock);
	while (list != NULL) {
		grpc_call *call = list;
		list = call->drain_next;
		call_process(call);
		call_unref(call);
	}
}

/* The timers of one call: its deadline, its step timer, a stalled
 * response or request stream.  Returns the next instant this call needs
 * looking at (0: none).  Loop thread. */
static int64_t call_timers(grpc_server *s, grpc_call *call, int64_t now,
                           bool coarse)
{
	int64_t next = 0;
	if (call->deadline != 0 && !call->deadline_done) {
		if (call->deadline <= now) {
			call->deadline_done = true;
			call_fail(call, GRPC_STATUS_DEADLINE_EXCEEDED,
			          "deadline exceeded", 0);
			return 0;
		}
		next = call->deadline;
	}
	pthread_mutex_lock(&call->lock);
	int64_t wake_at = call->wake_at;
	bool fire = wake_at != 0 && wake_at <= now;
	if (fire)
		call->wake_at = 0;
	bool over = call->finished;
	size_t out = grpc_buf_size(&call->out);
	int64_t out_progress = call->out_progress;
	bool waits_input = call->step_phase != STEP_NONE && !call->in_end &&
	                   call->in_head == NULL && call->method != NULL &&
	                   call->method->kind != GRPC_METHOD_SERVER_STREAMING;
	int64_t in_progress = call->in_progress;
	pthread_mutex_unlock(&call->lock);
	if (fire)
		step_schedule(call);
	else
		next = earlier(next, wake_at);
	int64_t stall = (int64_t)s->options.stream_stall_timeout_ms * 1000000;
	if (!coarse || over || s->options.stream_stall_timeout_ms < 0)
		return next;
	if (out > 0 && now - out_progress > stall) {
		char text[160];
		snprintf(text, sizeof(text),
		         "stream stalled: the client read no response for "
		         "%d ms",
		         s->options.stream_stall_timeout_ms);
		/* The status cannot pass the client's closed window: reset
		 * the stream (ENHANCE_YOUR_CALM -> RESOURCE_EXHAUSTED). */
		pthread_mutex_lock(&call->lock);
		call->rst_code = NGHTTP2_ENHANCE_YOUR_CALM;
		pthread_mutex_unlock(&call->lock);
		call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, text, 0);
	} else if (waits_input && now - in_progress > stall) {
		char text[160];
		snprintf(text, sizeof(text),
		         "stream stalled: the client sent no request message "
		         "for %d ms",
		         s->options.stream_stall_timeout_ms);
		call_fail(call, GRPC_STATUS_DEADLINE_EXCEEDED, text,
		          GRPC_EDEADLINE);
	}
	return next;
}

/* Connection timers: handshake/preface, idleness, keepalive.  Loop
 * thread, coarse scans only. */
static void conn_timers(grpc_server *s, conn *c, int64_t now)
{
	const grpc_server_options *o = &s->options;
	if (c->dead)
		return;
	if (!c->preface_done) {
		if (now - c->accepted >
		    (int64_t)o->handshake_timeout_ms * 1000000) {
			c->dead = true;
			conn_mark_dirty(c);
		}
		return;
	}
	if (c->state != CONN_OPEN)
		return;
	if (c->calls == NULL && !c->goaway_sent && o->idle_timeout_ms > 0 &&
	    c->idle_since != 0 &&
	    now - c->idle_since > (int64_t)o->idle_timeout_ms * 1000000) {
		nghttp2_submit_goaway(
		    c->session, NGHTTP2_FLAG_NONE,
		    nghttp2_session_get_last_proc_stream_id(c->session),
		    NGHTTP2_NO_ERROR, (const uint8_t *)"idle", 4);
		c->goaway_sent = true;
		conn_mark_dirty(c);
	}
	if (c->ping_sent != 0) {
		if (now - c->ping_sent >
		    (int64_t)o->keepalive_timeout_ms * 1000000) {
			server_log(s, 2,
			           "closing a connection: keepalive ping not "
			           "acknowledged within %d ms",
			           o->keepalive_timeout_ms);
			c->dead = true;
			conn_mark_dirty(c);
		}
	} else if (now - c->last_recv >
	           (int64_t)o->keepalive_time_ms * 1000000) {
		nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL);
		c->ping_sent = now;
		conn_mark_dirty(c);
	}
}

/* Runs every timer that is due and returns the epoll timeout (ms) until
 * the next one.  Call deadlines and step timers are exact; the coarse
 * ones (stalls, connection timers) are scanned every TIMER_SCAN_NS. */
static int check_timers(grpc_server *s)
{
	int64_t now = grpc_now_ns();
	bool coarse = now >= s->next_scan;
	if (!coarse && (s->next_due == 0 || now < s->next_due)) {
		int64_t next = earlier(s->next_due, s->next_scan);
		int64_t ms = (next - now + 999999) / 1000000;
		return ms > 60000 ? 60000 : (int)ms;
	}
	int64_t next = 0;
	for (conn *c = s->conns; c != NULL; c = c->next) {
		grpc_call *call = c->calls;
		while (call != NULL) {
			grpc_call *following = call->conn_next;
			next = earlier(next, call_timers(s, call, now, coarse));
			call = following;
		}
		if (coarse)
			conn_timers(s, c, now);
	}
	if (coarse)
		s->next_scan = now + TIMER_SCAN_NS;
	s->next_due = next;
	next = earlier(next, s->next_scan);
	if (s->shutting_down)
		next = earlier(next, s->grace_deadline);
	int64_t ms = (next - now + 999999) / 1000000;
	if (ms < 0)
		ms = 0;
	return ms > 60000 ? 60000 : (int)ms;
}

/* Graceful shutdown: stop accepting, GOAWAY everywhere (clients open new
 * calls elsewhere at once), end every streaming call with UNAVAILABLE
 * "server shutting down" (a Watch client reconnects and resumes from its
 * last token); unary calls in flight finish within the grace period. */
static void begin_shutdown(grpc_server *s)
{
	if (s->shutting_down)
		return;
	s->shutting_down = true;
	s->grace_deadline =
	    grpc_now_ns() + (int64_t)s->options.shutdown_timeout_ms * 1000000;
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
	close(s->listen_fd);
	s->listen_fd = -1;
	for (conn *c = s->conns; c != NULL; c = c->next) {
		if (c->state != CONN_OPEN) {
			c->dead = true;
		} else {
			nghttp2_submit_goaway(
			    c->session, NGHTTP2_FLAG_NONE,
			    nghttp2_session_get_last_proc_stream_id(c->session),
			    NGHTTP2_NO_ERROR, NULL, 0);
			grpc_call *call = c->calls;
			while (call != NULL) {
				grpc_call *following = call->conn_next;
				if (call->method != NULL &&
				    call->method->kind != GRPC_METHOD_UNARY)
					call_fail(call, GRPC_STATUS_UNAVAILABLE,
					          "server shutting down", 0);
				call = following;
			}
		}
		conn_mark_dirty(c);
	}
}

static void event_loop(grpc_server *s)
{
	struct epoll_event events[64];
	for (;;) {
		int timeout = check_timers(s);
		flush_dirty(s);
		if (s->shutting_down) {
			if (s->conns == NULL &&
			    atomic_load(&s->live_calls) == 0)
				return;
			if (grpc_now_ns() >= s->grace_deadline) {
				server_log(s, 1,
				           "shutdown grace over: "
				           "cancelling remaining calls");
				while (s->conns != NULL)
					conn_close(s->conns);
				s->dirty = NULL;
				return;
			}
		}
		int n = epoll_wait(s->epoll_fd, events, 64, timeout);
		s->iteration_start = grpc_now_ns();
		if (n < 0 && errno != EINTR) {
			server_log(s, 0, "epoll_wait: %s", strerror(errno));
			return;
		}
		for (int i = 0; i < n; i++) {
			void *tag = events[i].data.ptr;
			if (tag == &s->ev_listen) {
				accept_connections(s);
			} else if (tag == &s->ev_shutdown) {
				uint64_t v;
				ssize_t r = read(s->shutdown_fd, &v, sizeof(v));
				(void)r;
				begin_shutdown(s);
			} else if (tag == &s->ev_wake) {
				uint64_t v;
				ssize_t r = read(s->wake_fd, &v, sizeof(v));
				(void)r;
			} else {
				conn *c = tag;
				if (!c->dead)
					conn_on_event(c, events[i].events);
				conn_mark_dirty(c);
			}
		}
		drain_pending(s);
	}
}

/* ===================================================================== */
/* Server lifecycle                                                      */
/* ===================================================================== */

void grpc_server_options_init(grpc_server_options *options)
{
	memset(options, 0, sizeof(*options));
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
	static const unsigned char h2[] = "\x02h2";
	unsigned char *selected;
	if (SSL_select_next_proto(&selected, outlen, h2, sizeof(h2) - 1, in,
	                          inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = selected;
	return SSL_TLSEXT_ERR_OK;
}

static int tls_setup(grpc_server *s, pemba_error *err)
{
	const grpc_server_options *o = &s->options;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return error_set(err, PEMBA_EIO, "cannot create TLS context");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx,
	                    SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert_path) != 1) {
		SSL_CTX_free(ctx);
		return error_set(err, PEMBA_EIO,
		                 "cannot load TLS certificate \"%s\"",
		                 o->tls_cert_path);
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, o->tls_key_path,
	                                SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		SSL_CTX_free(ctx);
		return error_set(err, PEMBA_EIO,
		                 "cannot load TLS key \"%s\" (or it does not "
		                 "match the certificate)",
		                 o->tls_key_path);
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	s->ssl_ctx = ctx;
	return 0;
}

static int listen_on(grpc_server *s, pemba_error *err)
{
	char *host;
	int port;
	if (grpc_split_host_port(s->options.listen_addr, &host, &port) != 0)
		return error_set(err, PEMBA_EINVAL,
		                 "bad listen address \"%s\" (want host:port)",
		                 s->options.listen_addr);
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	char port_text[16];
	snprintf(port_text, sizeof(port_text), "%d", port);
	int rv = getaddrinfo(host[0] ? host : NULL, port_text, &hints, &res);
	if (rv != 0) {
		error_set(err, PEMBA_EINVAL, "cannot resolve \"%s\": %s", host,
		          gai_strerror(rv));
		free(host);
		return PEMBA_EINVAL;
	}
	int fd = -1, saved = 0;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
		            ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 1024) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		error_set(err, PEMBA_EIO, "cannot listen on \"%s\": %s",
		          s->options.listen_addr, strerror(saved));
		free(host);
		return PEMBA_EIO;
	}
	free(host);
	struct sockaddr_storage addr;
	socklen_t len = sizeof(addr);
	getsockname(fd, (struct sockaddr *)&addr, &len);
	if (addr.ss_family == AF_INET6)
		s->port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
	else
		s->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
	s->listen_fd = fd;
	return 0;
}

/* Every connection is a descriptor: raise the soft limit to the hard one
 * so max_connections is reachable, and lower max_connections (with a log
 * line) when even the hard limit is too small. */
static void raise_fd_limit(grpc_server *s)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rlim_t want = (rlim_t)s->options.max_connections + 256;
	if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		int cap = rl.rlim_cur > 512 ? (int)rl.rlim_cur - 256
		                            : (int)rl.rlim_cur / 2;
		server_log(s, 1,
		           "file descriptor limit %llu: serving at most %d "
		           "connections (not %d)",
		           (unsigned long long)rl.rlim_cur, cap,
		           s->options.max_connections);
		s->options.max_connections = cap;
	}
}

int grpc_server_new(const grpc_server_options *options, grpc_server **out,
                    pemba_error *err)
{
	*out = NULL;
	if (options->listen_addr == NULL)
		return error_set(err, PEMBA_EINVAL, "no listen address");
	if ((options->tls_cert_path == NULL) != (options->tls_key_path == NULL))
		return error_set(err, PEMBA_EINVAL,
		                 "TLS needs both a certificate and a key path");
	for (size_t i = 0; i < options->method_count; i++)
		if (options->methods[i].path == NULL ||
		    options->methods[i].handler == NULL)
			return error_set(err, PEMBA_EINVAL,
			                 "method %zu has no path or handler",
			                 i);
	grpc_server *s = xcalloc(1, sizeof(*s));
	s->options = *options;
	grpc_server_options *o = &s->options;
	if (o->worker_threads <= 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		o->worker_threads = cpus > 1 ? (int)(2 * cpus) : 2;
	}
	if (o->max_receive_message_size == 0)
		o->max_receive_message_size = DEFAULT_MAX_MESSAGE;
	if (o->max_header_list_size == 0)
		o->max_header_list_size = DEFAULT_MAX_HEADER_LIST;
	if (o->max_concurrent_streams == 0)
		o->max_concurrent_streams = DEFAULT_MAX_STREAMS;
	if (o->max_connections <= 0)
		o->max_connections = DEFAULT_MAX_CONNECTIONS;
	if (o->shutdown_timeout_ms <= 0)
		o->shutdown_timeout_ms = DEFAULT_SHUTDOWN_MS;
	if (o->max_streams <= 0)
		o->max_streams = DEFAULT_MAX_OPEN_STREAMS;
	if (o->stream_stall_timeout_ms == 0)
		o->stream_stall_timeout_ms = DEFAULT_STALL_MS;
	if (o->handshake_timeout_ms <= 0)
		o->handshake_timeout_ms = DEFAULT_HANDSHAKE_MS;
	if (o->idle_timeout_ms == 0)
		o->idle_timeout_ms = DEFAULT_IDLE_MS;
	if (o->keepalive_time_ms <= 0)
		o->keepalive_time_ms = DEFAULT_KEEPALIVE_MS;
	if (o->keepalive_timeout_ms <= 0)
		o->keepalive_timeout_ms = DEFAULT_KEEPALIVE_TIMEOUT_MS;
	if (o->keepalive_min_time_ms <= 0)
		o->keepalive_min_time_ms = DEFAULT_KEEPALIVE_MIN_MS;
	raise_fd_limit(s);
	s->listen_fd = s->shutdown_fd = s->wake_fd = s->epoll_fd = -1;
	s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pthread_mutex_init(&s->pending_lock, NULL);
	pthread_mutex_init(&s->jobs_lock, NULL);
	pthread_cond_init(&s->jobs_cond, NULL);
	atomic_init(&s->live_calls, 0);
	atomic_init(&s->stat_connections, 0);
	atomic_init(&s->stat_streams, 0);
	int rv = 0;
	if (o->tls_cert_path != NULL && (rv = tls_setup(s, err)) != 0)
		goto fail;
	if ((rv = listen_on(s, err)) != 0)
		goto fail;
	s->shutdown_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (s->shutdown_fd < 0 || s->wake_fd < 0 || s->epoll_fd < 0) {
		rv = error_set(err, PEMBA_EIO, "cannot create event fds: %s",
		               strerror(errno));
		goto fail;
	}
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.ptr = &s->ev_listen;
	epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &ev);
	ev.data.ptr = &s->ev_shutdown;
	epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->shutdown_fd, &ev);
	ev.data.ptr = &s->ev_wake;
	epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->wake_fd, &ev);
	*out = s;
	return 0;
fail:
	grpc_server_free(s);
	return rv;
}

int grpc_server_port(const grpc_server *server)
{
	return server->port;
}

void grpc_server_stats_get(const grpc_server *server, grpc_server_stats *out)
{
	grpc_server *s = (grpc_server *)server; /* atomics only */
	out->connections =
	    atomic_load_explicit(&s->stat_connections, memory_order_relaxed);
	out->open_streams =
	    atomic_load_explicit(&s->stat_streams, memory_order_relaxed);
	out->calls = atomic_load_explicit(&s->live_calls, memory_order_relaxed);
}

int grpc_server_run(grpc_server *s, pemba_error *err)
{
	if (s->started)
		return error_set(err, PEMBA_EINVAL, "server already ran");
	s->started = true;
	s->workers =
	    xcalloc((size_t)s->options.worker_threads, sizeof(pthread_t));
	/* Streams never take every worker: new calls always find one. */
	s->max_steps_running = s->options.worker_threads / 2;
	if (s->max_steps_running < 1)
		s->max_steps_running = 1;
	for (int i = 0; i < s->options.worker_threads; i++) {
		if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0)
			break;
		s->worker_count++;
	}
	if (s->worker_count == 0)
		return error_set(err, PEMBA_EIO, "cannot start worker threads");
	event_loop(s);
	/* Any handler still running sees its call cancelled; wait for it. */
	pthread_mutex_lock(&s->jobs_lock);
	s->jobs_stop = true;
	pthread_cond_broadcast(&s->jobs_cond);
	pthread_mutex_unlock(&s->jobs_lock);
	for (int i = 0; i < s->worker_count; i++)
		pthread_join(s->workers[i], NULL);
	drain_pending(s);
	return 0;
}

void grpc_server_shutdown(grpc_server *server)
{
	uint64_t one = 1;
	ssize_t n = write(server->shutdown_fd, &one, sizeof(one));
	(void)n;
}

void grpc_server_free(grpc_server *s)
{
	if (s == NULL)
		return;
	while (s->conns != NULL)
		conn_close(s->conns);
	drain_pending(s);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->shutdown_fd >= 0)
		close(s->shutdown_fd);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	if (s->epoll_fd >= 0)
		close(s->epoll_fd);
	if (s->reserve_fd >= 0)
		close(s->reserve_fd);
	if (s->ssl_ctx != NULL)
		SSL_CTX_free(s->ssl_ctx);
	free(s->workers);
	pthread_mutex_destroy(&s->pending_lock);
	pthread_mutex_destroy(&s->jobs_lock);
	pthread_cond_destroy(&s->jobs_cond);
	free(s);
}
