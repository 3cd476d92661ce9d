/*
 * lifecycle.c -- what `pemba serve` does to its datastore besides serving
 * calls: opens it first (creating a new one, refusing one with pending
 * layout migrations), attaches to it for as long as it runs (so `pemba
 * datastore migrate` refuses while it does), and garbage-collects it at
 * an interval.
 *
 * The server's own handle.  It is opened before the handle pool, so the
 * refusal of an old layout happens once, with the command to run; and it
 * holds the datastore's shared lease (pemba_attach) until server_free.
 * Its only user afterwards is the GC thread.
 *
 * The GC thread sleeps on a condition variable for `interval`, runs
 * pemba_gc_ex, logs one line (what it removed and how long it took; an
 * error is logged and the next run goes ahead as planned), and sleeps
 * again.  server_lifecycle_stop wakes it at once: a stopping server never
 * waits for an interval to end, only for a GC run in progress (one
 * transaction).  A datastore opened read-only (?mode=ro) cannot be
 * collected: the first refusal is logged and the thread ends.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server.h"
#include "util/error.h"
#include "util/xalloc.h"

struct server_lifecycle {
	pemba_db *db;
	int64_t interval_ms; /* 0: no GC thread */
	grpc_log_fn log;
	void *log_ctx;
	pthread_t thread;
	bool running; /* the thread was started */
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	bool stop;
	uint64_t runs; /* completed GC runs, for tests */
	/* For /metrics (server_lifecycle_gc_figures), under mu. */
	uint64_t failures;
	uint64_t relationships_deleted;
	int64_t last_run_ms; /* CLOCK_REALTIME of the last run's end */
};

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void lifecycle_log(server_lifecycle *l, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void lifecycle_log(server_lifecycle *l, int level, const char *fmt, ...)
{
	if (!l->log)
		return;
	char line[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	l->log(l->log_ctx, level, line);
}

/* ================================================================= GC */

/* One line of query cache figures (level 2), if the datastore has one.
 * The cache is shared by every handle of the process on this datastore,
 * so the lifecycle handle sees the workers'. */
static void log_query_cache(server_lifecycle *l)
{
	pemba_query_cache_stats qc;
	if (pemba_query_cache_stats_get(l->db, &qc))
		lifecycle_log(l, 2,
		              "query cache: %" PRIu64 " hits, %" PRIu64
		              " misses, %" PRIu64 " stored, %" PRIu64
		              " not cacheable, %" PRIu64 " evicted; %" PRIu64
		              " entries, %" PRIu64 " of %" PRIu64 " bytes",
		              qc.hits, qc.misses, qc.inserts, qc.uncacheable,
		              qc.evictions, qc.entries, qc.bytes, qc.budget);
}

/* One run: returns false when collecting can never work here. */
static bool gc_run(server_lifecycle *l)
{
	pemba_gc_stats st;
	pemba_error err = {0};
	int64_t start = monotonic_ms();
	int rc = pemba_gc_ex(l->db, &st, &err);
	int64_t took = monotonic_ms() - start;
	if (rc == PEMBA_EREADONLY) {
		lifecycle_log(l, 1,
		              "gc: disabled, the datastore cannot be written: "
		              "%s",
		              err.message);
		return false;
	}
	if (rc < 0) {
		pthread_mutex_lock(&l->mu);
		l->failures++;
		pthread_mutex_unlock(&l->mu);
		lifecycle_log(l, 0, "gc: failed after %" PRId64 " ms: %s", took,
		              err.message);
		return true;
	}
	if (st.skipped) {
		/* Quietly: every node's timer fires; one collects. */
		lifecycle_log(l, 3,
		              "gc: skipped, another process is collecting "
		              "this datastore");
		return true;
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	pthread_mutex_lock(&l->mu);
	l->relationships_deleted += st.relationships + st.expired;
	l->last_run_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	pthread_mutex_unlock(&l->mu);
	lifecycle_log(l, 2,
	              "gc: removed %" PRIu64 " relationship versions, %" PRIu64
	              " expired relationships, %" PRIu64
	              " schema versions, %" PRIu64
	              " revisions; oldest readable revision %" PRIu64
	              "; took %" PRId64 " ms",
	              st.relationships, st.expired, st.schemas, st.revisions,
	              (uint64_t)st.oldest, took);
	log_query_cache(l);
	return true;
}

static void *gc_main(void *arg)
{
	server_lifecycle *l = arg;
	pthread_mutex_lock(&l->mu);
	while (!l->stop) {
		int64_t due = monotonic_ms() + l->interval_ms;
		struct timespec until = {.tv_sec = due / 1000,
		                         .tv_nsec = (due % 1000) * 1000000};
		while (!l->stop && pthread_cond_timedwait(&l->cond, &l->mu,
		                                          &until) != ETIMEDOUT)
			;
		if (l->stop)
			break;
		pthread_mutex_unlock(&l->mu);
		bool again = gc_run(l);
		pthread_mutex_lock(&l->mu);
		l->runs++;
		if (!again)
			break;
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

/* ========================================================== lifecycle */

int server_lifecycle_start(const char *uri, const server_options *o,
                           server_lifecycle **out, pemba_error *err)
{
	*out = NULL;
	pemba_options po = {
	    .gc_window_seconds = o->gc_window_seconds,
	    .no_auto_migrate = PEMBA_MIGRATE_NEW_ONLY,
	    .conn_pool_read_max_open = o->conn_pool_read_max_open,
	    .conn_pool_write_max_open = o->conn_pool_write_max_open,
	    .read_replica_uris = o->read_replica_uris,
	    .n_read_replica_uris = o->n_read_replica_uris,
	    .log = o->log,
	    .log_ctx = o->log_ctx,
	    .query_cache_bytes = o->query_cache_bytes,
	};
	pemba_db *db;
	int rc = pemba_open(uri, &po, &db, err);
	if (rc < 0)
		return rc;
	if ((rc = pemba_attach(db, err)) < 0) {
		pemba_close(db);
		return rc;
	}
	server_lifecycle *l = xcalloc(1, sizeof(*l));
	l->db = db;
	l->interval_ms = o->gc_interval_ms;
	l->log = o->log;
	l->log_ctx = o->log_ctx;
	pthread_mutex_init(&l->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (l->interval_ms > 0) {
		if (pthread_create(&l->thread, NULL, gc_main, l) != 0) {
			server_lifecycle_stop(l);
			return error_set(err, PEMBA_EIO,
			                 "cannot start the garbage collection "
			                 "thread");
		}
		l->running = true;
	}
	*out = l;
	return PEMBA_OK;
}

uint64_t server_lifecycle_gc_runs(server_lifecycle *l)
{
	if (!l)
		return 0;
	pthread_mutex_lock(&l->mu);
	uint64_t n = l->runs;
	pthread_mutex_unlock(&l->mu);
	return n;
}

void server_lifecycle_gc_figures(server_lifecycle *l, server_gc_figures *out)
{
	memset(out, 0, sizeof(*out));
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	out->runs = l->runs;
	out->failures = l->failures;
	out->relationships_deleted = l->relationships_deleted;
	out->last_run_ms = l->last_run_ms;
	pthread_mutex_unlock(&l->mu);
}

void server_lifecycle_stop(server_lifecycle *l)
{
	if (!l)
		return;
	if (l->running) {
		pthread_mutex_lock(&l->mu);
		l->stop = true;
		pthread_cond_signal(&l->cond);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
	}
	log_query_cache(l); /* the figures of the whole run */
	pemba_close(l->db); /* ends the lease */
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->mu);
	free(l);
}
