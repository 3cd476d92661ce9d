/*
 * metrics.h -- counters, gauges and histograms for Prometheus, and the
 * text exposition format (version 0.0.4) that /metrics serves.
 *
 * Hot-path updates are one relaxed atomic add each: no lock, no
 * allocation, no lookup by name.  Callers resolve "which series" once
 * (a per-method slot, an array index) and keep the pointer; this module
 * never hashes label values at update time.
 *
 * A scrape walks the figures and writes text with the metrics_write_*
 * functions; what a series is called and which labels it has is the
 * caller's business (src/server/metrics_http.c for the server's).
 *
 * The process-wide figures of layers below the server (datastore queries,
 * check dispatches) live in metrics_process(): those layers know nothing
 * of a server, like Prometheus client libraries' default registry.
 */
#ifndef PEMBA_METRICS_H
#define PEMBA_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/strbuf.h"

/* ===================================================================== */
/* Figures                                                               */
/* ===================================================================== */

/* A monotonic count.  Zero-initialised storage is a valid counter. */
typedef struct metrics_counter {
	_Atomic uint64_t value;
} metrics_counter;

static inline void metrics_counter_add(metrics_counter *c, uint64_t n)
{
	atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

static inline uint64_t metrics_counter_get(const metrics_counter *c)
{
	return atomic_load_explicit(&c->value, memory_order_relaxed);
}

/* A value that goes up and down. */
typedef struct metrics_gauge {
	_Atomic int64_t value;
} metrics_gauge;

static inline void metrics_gauge_add(metrics_gauge *g, int64_t n)
{
	atomic_fetch_add_explicit(&g->value, n, memory_order_relaxed);
}

static inline void metrics_gauge_set(metrics_gauge *g, int64_t v)
{
	atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

static inline int64_t metrics_gauge_get(const metrics_gauge *g)
{
	return atomic_load_explicit(&g->value, memory_order_relaxed);
}

/* Most upper bounds a histogram may have (+Inf not counted). */
#define METRICS_MAX_BUCKETS 20

/* A latency histogram in nanoseconds, shown in seconds.  bucket[i] counts
 * observations <= bound_ns[i] and > bound_ns[i-1] (not cumulative: the
 * writer adds them up), bucket[nbounds] those above the last bound. */
typedef struct metrics_histogram {
	const int64_t *bound_ns; /* ascending, nbounds entries; not owned */
	size_t nbounds;
	_Atomic uint64_t bucket[METRICS_MAX_BUCKETS + 1];
	_Atomic uint64_t sum_ns;
	_Atomic uint64_t count;
} metrics_histogram;

/* Sets the bounds (bound_ns must outlive h) and zeroes the counts. */
void metrics_histogram_init(metrics_histogram *h, const int64_t *bound_ns,
                            size_t nbounds);

/* Records one observation of ns nanoseconds (negative counts as 0). */
void metrics_histogram_observe(metrics_histogram *h, int64_t ns);

/* SpiceDB's buckets for grpc_server_handling_seconds (1 ms to 5 s), which
 * suit datastore queries too. */
extern const int64_t metrics_latency_bounds_ns[];
extern const size_t metrics_latency_nbounds;

/* Nanoseconds on CLOCK_MONOTONIC. */
int64_t metrics_now_ns(void);

/* ===================================================================== */
/* Process-wide figures                                                  */
/* ===================================================================== */

typedef struct metrics_process_figures {
	/* store_query calls (cached results included) and their latency
	 * up to the first row being ready for the caller. */
	metrics_counter datastore_queries;
	metrics_counter datastore_query_errors;
	metrics_histogram datastore_query_seconds;
	/* pemba_check calls and the sub-problems they evaluated
	 * (engine_stats.dispatches: SpiceDB's dispatches). */
	metrics_counter checks;
	metrics_counter check_dispatches;
} metrics_process_figures;

/* The one instance; its histogram is ready on first use.  Never NULL. */
metrics_process_figures *metrics_process(void);

/* ===================================================================== */
/* Text exposition format 0.0.4                                          */
/* ===================================================================== */

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A label: name="value".  Names must match [a-zA-Z_][a-zA-Z0-9_]*; values
 * are escaped (backslash, double quote, newline). */
typedef struct metrics_label {
	const char *name;
	const char *value;
} metrics_label;

/* "# HELP name help" (help escaped: backslash, newline) and "# TYPE name
 * type" (type: counter, gauge, histogram, untyped).  Once per metric
 * name, before its samples. */
void metrics_write_header(strbuf *out, const char *name, const char *type,
                          const char *help);

/* One sample line: name{labels} value.  Integral values are written
 * without a fraction; others with up to 17 significant digits. */
void metrics_write_sample(strbuf *out, const char *name,
                          const metrics_label *labels, size_t nlabels,
                          double value);

/* The samples of one histogram series: name_bucket{labels,le="..."}
 * (cumulative, ending with le="+Inf"), name_sum (seconds), name_count.
 * The figures are read once each, so a scrape beside updates may be
 * slightly inconsistent between lines but +Inf always equals _count. */
void metrics_write_histogram(strbuf *out, const char *name,
                             const metrics_label *labels, size_t nlabels,
                             const metrics_histogram *h);

/* Writes a label value escaped as the format asks. */
void metrics_write_escaped(strbuf *out, const char *value, bool help);

#endif
