/*
 * internal.h -- what proxy.c (the front: listener, auth, forwarding to the
 * primary) and shadow.c (the queue, the shadow thread, the comparisons)
 * share.  Not part of the proxy's interface (proxy.h).
 */
#ifndef PEMBA_PROXY_INTERNAL_H
#define PEMBA_PROXY_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/proxy.h"

/* What the shadow does with a method's calls. */
typedef enum proxy_method_class {
	PROXY_PASS = 0,      /* primary only (expand, reflection, health) */
	PROXY_WRITE,         /* replayed on the shadow, every one, in order */
	PROXY_CHECK,         /* CheckPermission: sampled, compared */
	PROXY_CHECK_BULK,    /* CheckBulkPermissions: sampled, compared */
	PROXY_READ_SCHEMA,   /* ReadSchema: sampled, schema text compared */
	PROXY_LOOKUP,        /* Lookup{Resources,Subjects}: streamed;
	                        sampled, compared as sets */
	PROXY_STREAM,        /* other server streams: primary only */
	PROXY_IMPORT,        /* client-streaming imports: relayed; replayed
	                        on the shadow as one write job holding all
	                        the messages */
	PROXY_WATCH,         /* Watch: a suspended call fed by a thread
	                        holding the primary's stream; not replayed */
	PROXY_UNIMPLEMENTED, /* not proxied: refused */
	PROXY_LOCAL,         /* the proxy's own (GetProxyStats) */
	PROXY_REFLECTION,    /* server reflection: answered here, for the
	                        proxy's own method table */
} proxy_method_class;

/* A method the proxy knows. */
typedef struct proxy_method {
	const char *path;
	grpc_method_kind kind;
	proxy_method_class cls;
	const char *name; /* short name for logs ("CheckPermission") */
} proxy_method;

/* Counters, updated with __atomic builtins (relaxed). */
typedef struct proxy_counters {
	uint64_t calls, primary_errors, unimplemented;
	uint64_t shadow_writes, shadow_reads, sampled_out;
	uint64_t mismatches, shadow_errors, dropped, stale, queued;
} proxy_counters;

#define PROXY_COUNT(p, field)                                                  \
	__atomic_add_fetch(&(p)->counters.field, 1, __ATOMIC_RELAXED)

/* One job for the shadow thread: the request as the client sent it and,
 * for reads, the primary's answer to compare with.  One malloc block. */
typedef struct shadow_job {
	struct shadow_job *next;
	const proxy_method *method;
	uint8_t *request; /* owned */
	size_t request_len;
	uint8_t *primary_response; /* owned; NULL for writes */
	size_t primary_response_len;
	bool retried; /* a read that differed, queued again once */
} shadow_job;

/* The shadow side: a FIFO of jobs bounded in number and bytes, drained by
 * one thread over one connection. */
typedef struct shadow {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	shadow_job *head, *tail;
	size_t count, bytes;
	size_t max_count, max_bytes;
	bool stopping;
	bool started;
	pthread_t thread;
	grpc_client *client;  /* the shadow thread's own */
	grpc_client *primary; /* the shadow thread's, to confirm mismatches */
	int64_t last_connect_fail_ns;
	int64_t drain_deadline_ns; /* set by shadow_stop */
	int64_t last_drop_log_ns;  /* atomic: rate limit of drop logs */
	bool down;                 /* the last connect failed */
	uint64_t sample_seq;       /* atomic: sampling sequence */
} shadow;

struct pemba_proxy {
	proxy_options o; /* strings point into the caller's (see proxy_new) */
	char *key;       /* the proxy's own preshared key */
	char *primary_auth, *shadow_auth; /* "Bearer T" or NULL */
	grpc_server *server;
	grpc_method *table;
	size_t ntable;
	/* Idle connections to the primary: each worker borrows one for a
	 * call, so there are at most as many as workers. */
	pthread_mutex_t pool_mu;
	grpc_client **idle;
	size_t nidle, idle_cap;
	/* Unary calls: every one multiplexed on one connection to the
	 * primary, driven by the mux's thread (README: the primary path). */
	grpc_mux *mux;
	bool *on_loop; /* per row of table: grpc_server_options.methods_on_loop */
	proxy_counters counters;
	shadow sh;
	/* Bytes of import messages being gathered for the shadow by the
	 * imports in flight (atomic); at most o.shadow_queue_bytes over all
	 * of them, past which an import is not replayed (dropped). */
	size_t import_bytes;
	/* Watch streams: open ones (counted against o.max_watch_streams),
	 * the threads holding the primary's side (proxy_run waits for them
	 * at exit) and their list (to break their connections then). */
	pthread_mutex_t watch_mu;
	pthread_cond_t watch_cv;
	int watches, watch_threads;
	struct watch_relay *watch_list;
};

/* shadow.c */
int shadow_start(pemba_proxy *p, pemba_error *err);
/* Sets stopping, lets the thread drain what is queued (at most the shadow
 * timeout), joins it and frees what is left. */
void shadow_stop(pemba_proxy *p);
/* Whether the shadow gets this call: true for writes; for reads, the
 * sampler's draw (a read left out is counted in sampled_out).  Ask before
 * doing work for the comparison. */
bool shadow_wants(pemba_proxy *p, const proxy_method *m);
/* Counts a job that is not queued (the queue full, or an import too big
 * to hold); a dropped write or import is logged (rate-limited). */
void shadow_drop(pemba_proxy *p, const proxy_method *m);
/* An import's messages, as they are queued in a job's request: each one
 * a 4-byte big-endian length, then its bytes. */
#define SHADOW_FRAME_HEADER 4
/* From a worker, after the primary answered OK and shadow_wants said yes:
 * queues the job, copying request and primary response (for lookups, the
 * sorted result keys: shadow_keys_join).  Never blocks beyond a short
 * mutex hold; a full queue drops and counts. */
void shadow_submit(pemba_proxy *p, const proxy_method *m,
                   const uint8_t *request, size_t request_len,
                   const uint8_t *response, size_t response_len);

/* The results of a lookup as comparable keys, one per response message
 * (the object id, its permissionship when conditional, excluded ids),
 * without ZedTokens and cursors.  Bounded: past max_bytes the list gives
 * up (overflow) and the call is not compared. */
typedef struct shadow_keys {
	char **v;
	size_t n, cap, bytes, max_bytes;
	bool overflow;
} shadow_keys;
/* Adds the key of one response message of m; false on overflow or an
 * undecodable message (then the list is no longer comparable). */
bool shadow_keys_add(shadow_keys *k, const proxy_method *m, const uint8_t *data,
                     size_t len);
/* Sorts the keys and joins them with '\n' (malloc'd; *len set). */
char *shadow_keys_join(shadow_keys *k, size_t *len);
void shadow_keys_free(shadow_keys *k);

/* proxy.c: a log line through the options' callback (printf-style). */
void proxy_logf(pemba_proxy *p, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fills client options for an upstream. */
void proxy_client_options(const proxy_upstream *u, grpc_client_options *out);
int64_t proxy_now_ns(void);

#endif
