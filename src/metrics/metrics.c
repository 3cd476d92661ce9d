/*
 * metrics.c -- figures and the Prometheus text exposition format.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "metrics/metrics.h"

/* ===================================================================== */
/* Figures                                                               */
/* ===================================================================== */

#define MS(x) ((int64_t)((x)*1000000.0 + 0.5))

/* SpiceDB's grpc_server_handling_seconds buckets, in seconds:
 * .001 .003 .006 .010 .018 .024 .032 .042 .056 .075 .100 .178 .316 .562
 * 1 5. */
const int64_t metrics_latency_bounds_ns[] = {
    MS(1),  MS(3),  MS(6),   MS(10),  MS(18),  MS(24),  MS(32),   MS(42),
    MS(56), MS(75), MS(100), MS(178), MS(316), MS(562), MS(1000), MS(5000),
};
const size_t metrics_latency_nbounds =
    sizeof(metrics_latency_bounds_ns) / sizeof(metrics_latency_bounds_ns[0]);

void metrics_histogram_init(metrics_histogram *h, const int64_t *bound_ns,
                            size_t nbounds)
{
	if (nbounds > METRICS_MAX_BUCKETS)
		nbounds = METRICS_MAX_BUCKETS;
	h->bound_ns = bound_ns;
	h->nbounds = nbounds;
	for (size_t i = 0; i <= METRICS_MAX_BUCKETS; i++)
		atomic_init(&h->bucket[i], 0);
	atomic_init(&h->sum_ns, 0);
	atomic_init(&h->count, 0);
}

void metrics_histogram_observe(metrics_histogram *h, int64_t ns)
{
	if (ns < 0)
		ns = 0;
	/* A linear scan: 16 bounds, most observations stop early. */
	size_t i = 0;
	while (i < h->nbounds && ns > h->bound_ns[i])
		i++;
	atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)ns,
	                          memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

int64_t metrics_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ===================================================================== */
/* Process-wide figures                                                  */
/* ===================================================================== */

static metrics_process_figures process_figures;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

static void process_init(void)
{
	metrics_histogram_init(&process_figures.datastore_query_seconds,
	                       metrics_latency_bounds_ns,
	                       metrics_latency_nbounds);
}

metrics_process_figures *metrics_process(void)
{
	pthread_once(&process_once, process_init);
	return &process_figures;
}

/* ===================================================================== */
/* Exposition                                                            */
/* ===================================================================== */

void metrics_write_escaped(strbuf *out, const char *value, bool help)
{
	for (const char *p = value; *p; p++) {
		if (*p == '\\')
			strbuf_puts(out, "\\\\");
		else if (*p == '\n')
			strbuf_puts(out, "\\n");
		else if (*p == '"' && !help)
			strbuf_puts(out, "\\\"");
		else
			strbuf_putc(out, *p);
	}
}

void metrics_write_header(strbuf *out, const char *name, const char *type,
                          const char *help)
{
	strbuf_printf(out, "# HELP %s ", name);
	metrics_write_escaped(out, help, true);
	strbuf_printf(out, "\n# TYPE %s %s\n", name, type);
}

static void write_labels(strbuf *out, const metrics_label *labels,
                         size_t nlabels, const char *le)
{
	if (nlabels == 0 && le == NULL)
		return;
	strbuf_putc(out, '{');
	for (size_t i = 0; i < nlabels; i++) {
		strbuf_printf(out, "%s%s=\"", i ? "," : "", labels[i].name);
		metrics_write_escaped(out, labels[i].value, false);
		strbuf_putc(out, '"');
	}
	if (le != NULL)
		strbuf_printf(out, "%sle=\"%s\"", nlabels ? "," : "", le);
	strbuf_putc(out, '}');
}

static void write_value(strbuf *out, double v)
{
	if (isnan(v))
		strbuf_puts(out, "NaN");
	else if (isinf(v))
		strbuf_puts(out, v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 9.007199254740992e15)
		strbuf_printf(out, "%.0f", v);
	else
		strbuf_printf(out, "%.17g", v);
}

void metrics_write_sample(strbuf *out, const char *name,
                          const metrics_label *labels, size_t nlabels,
                          double value)
{
	strbuf_puts(out, name);
	write_labels(out, labels, nlabels, NULL);
	strbuf_putc(out, ' ');
	write_value(out, value);
	strbuf_putc(out, '\n');
}

void metrics_write_histogram(strbuf *out, const char *name,
                             const metrics_label *labels, size_t nlabels,
                             const metrics_histogram *h)
{
	uint64_t cumulative = 0;
	char le[32];
	for (size_t i = 0; i <= h->nbounds; i++) {
		cumulative +=
		    atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		if (i < h->nbounds)
			snprintf(le, sizeof(le), "%g",
			         (double)h->bound_ns[i] / 1e9);
		else
			strcpy(le, "+Inf");
		strbuf_printf(out, "%s_bucket", name);
		write_labels(out, labels, nlabels, le);
		strbuf_printf(out, " %llu\n", (unsigned long long)cumulative);
	}
	uint64_t sum_ns =
	    atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
	strbuf_printf(out, "%s_sum", name);
	write_labels(out, labels, nlabels, NULL);
	/* Exact: whole seconds and nanoseconds, no binary rounding. */
	strbuf_printf(out, " %llu.%09llu\n",
	              (unsigned long long)(sum_ns / 1000000000u),
	              (unsigned long long)(sum_ns % 1000000000u));
	/* _count is the +Inf bucket, so the two never disagree. */
	strbuf_printf(out, "%s_count", name);
	write_labels(out, labels, nlabels, NULL);
	strbuf_printf(out, " %llu\n", (unsigned long long)cumulative);
}
