/*
 * test_exposition.c -- metrics.h: the Prometheus text format that /metrics
 * serves (HELP/TYPE lines, label escaping, histogram buckets) and the
 * figures behind it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "metrics/metrics.h"
#include "util/strbuf.h"

static void header_has_help_and_type_and_escapes_help(void **state)
{
	(void)state;
	strbuf sb;
	strbuf_init(&sb);
	metrics_write_header(&sb, "x_total", "counter",
	                     "a \\ backslash\nand \"quotes\"");
	assert_string_equal(sb.data, "# HELP x_total a \\\\ backslash\\nand "
	                             "\"quotes\"\n# TYPE x_total counter\n");
	strbuf_free(&sb);
}

static void sample_escapes_label_values(void **state)
{
	(void)state;
	strbuf sb;
	strbuf_init(&sb);
	metrics_label l[2] = {{"a", "plain"}, {"b", "q\"u\\o\nte"}};
	metrics_write_sample(&sb, "m", l, 2, 42);
	assert_string_equal(sb.data,
	                    "m{a=\"plain\",b=\"q\\\"u\\\\o\\nte\"} 42\n");
	strbuf_reset(&sb);
	metrics_write_sample(&sb, "g", NULL, 0, 0.25);
	assert_string_equal(sb.data, "g 0.25\n");
	strbuf_reset(&sb);
	metrics_write_sample(&sb, "g", NULL, 0, -3);
	assert_string_equal(sb.data, "g -3\n");
	strbuf_free(&sb);
}

static void histogram_buckets_are_cumulative_and_end_in_inf(void **state)
{
	(void)state;
	static const int64_t bounds[] = {1000000, 10000000}; /* 1ms, 10ms */
	metrics_histogram h;
	metrics_histogram_init(&h, bounds, 2);
	metrics_histogram_observe(&h, 500000);     /* 0.5 ms */
	metrics_histogram_observe(&h, 1000000);    /* on the bound: le */
	metrics_histogram_observe(&h, 5000000);    /* 5 ms */
	metrics_histogram_observe(&h, 2000000000); /* 2 s */
	metrics_histogram_observe(&h, -7);         /* clamped to 0 */
	strbuf sb;
	strbuf_init(&sb);
	metrics_label l[1] = {{"op", "read"}};
	metrics_write_histogram(&sb, "lat_seconds", l, 1, &h);
	assert_string_equal(sb.data,
	                    "lat_seconds_bucket{op=\"read\",le=\"0.001\"} 3\n"
	                    "lat_seconds_bucket{op=\"read\",le=\"0.01\"} 4\n"
	                    "lat_seconds_bucket{op=\"read\",le=\"+Inf\"} 5\n"
	                    "lat_seconds_sum{op=\"read\"} 2.006500000\n"
	                    "lat_seconds_count{op=\"read\"} 5\n");
	strbuf_reset(&sb);
	metrics_write_histogram(&sb, "bare", NULL, 0, &h);
	assert_non_null(strstr(sb.data, "bare_bucket{le=\"+Inf\"} 5\n"));
	assert_non_null(strstr(sb.data, "bare_count 5\n"));
	strbuf_free(&sb);
}

static void spicedb_latency_buckets_span_1ms_to_5s(void **state)
{
	(void)state;
	assert_int_equal(metrics_latency_nbounds, 16);
	assert_int_equal(metrics_latency_bounds_ns[0], 1000000);
	assert_int_equal(metrics_latency_bounds_ns[15], 5000000000LL);
	for (size_t i = 1; i < metrics_latency_nbounds; i++)
		assert_true(metrics_latency_bounds_ns[i] >
		            metrics_latency_bounds_ns[i - 1]);
}

static void counters_and_gauges_move(void **state)
{
	(void)state;
	metrics_counter c = {0};
	metrics_counter_add(&c, 2);
	metrics_counter_add(&c, 3);
	assert_int_equal(metrics_counter_get(&c), 5);
	metrics_gauge g = {0};
	metrics_gauge_add(&g, 4);
	metrics_gauge_add(&g, -6);
	assert_int_equal(metrics_gauge_get(&g), -2);
	metrics_gauge_set(&g, 9);
	assert_int_equal(metrics_gauge_get(&g), 9);
	metrics_process_figures *p = metrics_process();
	assert_ptr_equal(p, metrics_process());
	assert_int_equal(p->datastore_query_seconds.nbounds, 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(header_has_help_and_type_and_escapes_help),
	    cmocka_unit_test(sample_escapes_label_values),
	    cmocka_unit_test(histogram_buckets_are_cumulative_and_end_in_inf),
	    cmocka_unit_test(spicedb_latency_buckets_span_1ms_to_5s),
	    cmocka_unit_test(counters_and_gauges_move),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
