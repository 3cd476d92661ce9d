/*
 * test_proxy_relay.c -- what `pemba proxy` relays beyond status codes and
 * messages, against an in-process upstream (a test service on the gRPC
 * transport, api/grpc.h) and an in-process proxy (proxy/proxy.h):
 *
 *  - the primary's grpc-status-details-bin (a google.rpc.Status with
 *    ErrorInfo, as SpiceDB sends) reaches the client as the same bytes,
 *    for unary, server-streaming and client-streaming (import) calls;
 *  - the transport's client decodes the trailer whether padded or not;
 *  - a Watch client that goes away ends the primary's stream at once,
 *    even when the primary is silent;
 *  - Watch streams past --max-watch-streams are refused with
 *    RESOURCE_EXHAUSTED while the open one keeps streaming.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "api/grpc.h"
#include "api/grpc_internal.h"
#include "proxy/proxy.h"

#define PS "/authzed.api.v1.PermissionsService/"
#define WATCH "/authzed.api.v1.WatchService/Watch"

/* Bytes that stand for a google.rpc.Status: NULs, high bytes, and a length
 * that needs base64 padding. */
static const uint8_t DETAILS[] = {0x08, 0x09, 0x12, 0x00, 0xff, 0x1a,
                                  0x80, 0x7f, 0x00, 0x41, 0x42};

/* ===================================================================== */
/* The upstream                                                          */
/* ===================================================================== */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int watch_open;      /* Watch handlers running */
	bool watch_saw_gone; /* a Watch handler saw its call cancelled */
	bool watch_release;  /* tells the held Watch handlers to finish */
} up = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, false};

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static void fail_with_details(grpc_call *call)
{
	grpc_call_add_trailer(call, "grpc-status-details-bin", DETAILS,
	                      sizeof(DETAILS));
	grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
	                 "object definition `nosuch` not found");
}

static void check_handler(grpc_call *call, void *ctx)
{
	(void)ctx;
	const uint8_t *d;
	size_t n;
	if (grpc_call_read(call, &d, &n) == 1)
		fail_with_details(call);
}

static void read_handler(grpc_call *call, void *ctx)
{
	(void)ctx;
	const uint8_t *d;
	size_t n;
	if (grpc_call_read(call, &d, &n) != 1)
		return;
	grpc_call_send(call, "first", 5);
	fail_with_details(call);
}

/* Reads every message; "bad" among them fails the import with details. */
static void import_handler(grpc_call *call, void *ctx)
{
	(void)ctx;
	const uint8_t *d;
	size_t n;
	int rv, count = 0;
	bool bad = false;
	while ((rv = grpc_call_read(call, &d, &n)) == 1) {
		count++;
		if (n == 3 && memcmp(d, "bad", 3) == 0)
			bad = true;
	}
	if (rv < 0)
		return;
	if (bad) {
		fail_with_details(call);
		return;
	}
	char text[16];
	int len = snprintf(text, sizeof(text), "%d", count);
	grpc_call_send(call, text, (size_t)len);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Sends one event, then is silent until its client goes away (or the
 * test releases it, or 10 s pass). */
static void watch_handler(grpc_call *call, void *ctx)
{
	(void)ctx;
	const uint8_t *d;
	size_t n;
	if (grpc_call_read(call, &d, &n) != 1)
		return;
	pthread_mutex_lock(&up.mu);
	up.watch_open++;
	pthread_cond_broadcast(&up.cv);
	pthread_mutex_unlock(&up.mu);
	grpc_call_send(call, "event 1", 7);
	bool gone = false, released = false;
	for (int i = 0; i < 1000 && !gone && !released; i++) {
		sleep_ms(10);
		gone = grpc_call_cancelled(call);
		pthread_mutex_lock(&up.mu);
		released = up.watch_release;
		pthread_mutex_unlock(&up.mu);
	}
	if (!gone)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	pthread_mutex_lock(&up.mu);
	up.watch_open--;
	if (gone)
		up.watch_saw_gone = true;
	pthread_cond_broadcast(&up.cv);
	pthread_mutex_unlock(&up.mu);
}

static const grpc_method upstream_methods[] = {
    {PS "CheckPermission", GRPC_METHOD_UNARY, check_handler, NULL},
    {PS "ReadRelationships", GRPC_METHOD_SERVER_STREAMING, read_handler, NULL},
    {PS "ImportBulkRelationships", GRPC_METHOD_CLIENT_STREAMING, import_handler,
     NULL},
    {WATCH, GRPC_METHOD_SERVER_STREAMING, watch_handler, NULL},
};

typedef struct server_fixture {
	grpc_server *server;
	pthread_t thread;
	char target[64];
} server_fixture;

static void *server_main(void *arg)
{
	server_fixture *f = arg;
	pemba_error err;
	grpc_server_run(f->server, &err);
	return NULL;
}

static void upstream_start(server_fixture *f)
{
	grpc_server_options o;
	grpc_server_options_init(&o);
	o.listen_addr = "127.0.0.1:0";
	o.methods = upstream_methods;
	o.method_count = sizeof(upstream_methods) / sizeof(upstream_methods[0]);
	o.worker_threads = 4;
	pemba_error err;
	if (grpc_server_new(&o, &f->server, &err) != 0)
		fail_msg("grpc_server_new: %s", err.message);
	snprintf(f->target, sizeof(f->target), "127.0.0.1:%d",
	         grpc_server_port(f->server));
	assert_int_equal(pthread_create(&f->thread, NULL, server_main, f), 0);
}

static void upstream_stop(server_fixture *f)
{
	grpc_server_shutdown(f->server);
	pthread_join(f->thread, NULL);
	grpc_server_free(f->server);
}

/* ===================================================================== */
/* The proxy                                                             */
/* ===================================================================== */

typedef struct fixture {
	server_fixture primary, shadow;
	pemba_proxy *proxy;
	pthread_t thread;
	char target[64];
} fixture;

static void *proxy_main(void *arg)
{
	fixture *f = arg;
	pemba_error err;
	proxy_run(f->proxy, &err);
	return NULL;
}

/* The proxy's log, for the tests that look for a line. */
static struct {
	pthread_mutex_t mu;
	char text[8192];
} logged = {PTHREAD_MUTEX_INITIALIZER, ""};

static void log_line(void *ctx, int level, const char *message)
{
	(void)ctx;
	(void)level;
	pthread_mutex_lock(&logged.mu);
	size_t n = strlen(logged.text);
	snprintf(logged.text + n, sizeof(logged.text) - n, "%s\n", message);
	pthread_mutex_unlock(&logged.mu);
}

static bool log_has(const char *text)
{
	pthread_mutex_lock(&logged.mu);
	bool found = strstr(logged.text, text) != NULL;
	pthread_mutex_unlock(&logged.mu);
	return found;
}

static fixture *start_with(int max_watch_streams, size_t queue_bytes)
{
	fixture *f = calloc(1, sizeof(*f));
	upstream_start(&f->primary);
	upstream_start(&f->shadow);
	proxy_options o = {0};
	o.listen_addr = "127.0.0.1:0";
	o.preshared_key = "kp";
	o.primary.endpoint = f->primary.target;
	o.shadow.endpoint = f->shadow.target;
	o.shadow_read_sample = 1;
	o.workers = 4;
	o.max_watch_streams = max_watch_streams;
	o.shadow_queue_bytes = queue_bytes;
	o.log = log_line;
	logged.text[0] = 0;
	pemba_error err;
	if (proxy_new(&o, &f->proxy, &err) != 0)
		fail_msg("proxy_new: %s", err.message);
	snprintf(f->target, sizeof(f->target), "127.0.0.1:%d",
	         proxy_port(f->proxy));
	assert_int_equal(pthread_create(&f->thread, NULL, proxy_main, f), 0);
	pthread_mutex_lock(&up.mu);
	up.watch_open = 0;
	up.watch_saw_gone = up.watch_release = false;
	pthread_mutex_unlock(&up.mu);
	return f;
}

static fixture *start(int max_watch_streams)
{
	return start_with(max_watch_streams, 0);
}

static void stop(fixture *f)
{
	proxy_shutdown(f->proxy);
	pthread_join(f->thread, NULL);
	proxy_free(f->proxy);
	upstream_stop(&f->primary);
	upstream_stop(&f->shadow);
	free(f);
}

static grpc_client *connect_to(const char *target)
{
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = target;
	grpc_client *c;
	pemba_error err;
	if (grpc_client_connect(&o, &c, &err) != 0)
		fail_msg("connect %s: %s", target, err.message);
	return c;
}

static const grpc_metadata proxy_auth[] = {{"authorization", "Bearer kp", 0}};

/* Asserts the primary's failure as sent: code, message, details bytes. */
static void assert_primary_failure(const grpc_status *st)
{
	assert_int_equal(st->code, GRPC_STATUS_FAILED_PRECONDITION);
	assert_string_equal(st->message,
	                    "object definition `nosuch` not found");
	assert_non_null(st->details);
	assert_int_equal(st->details_len, sizeof(DETAILS));
	assert_memory_equal(st->details, DETAILS, sizeof(DETAILS));
}

/* ===================================================================== */
/* Error details                                                         */
/* ===================================================================== */

static void test_base64_decode_accepts_padded_and_unpadded(void **unused)
{
	(void)unused;
	char *text = grpc_base64_encode(DETAILS, sizeof(DETAILS));
	size_t n = 0;
	uint8_t *b = grpc_base64_decode(text, strlen(text), &n);
	assert_non_null(b);
	assert_int_equal(n, sizeof(DETAILS));
	assert_memory_equal(b, DETAILS, n);
	free(b);
	char padded[64];
	snprintf(padded, sizeof(padded), "%s=", text); /* 11 bytes: one = */
	b = grpc_base64_decode(padded, strlen(padded), &n);
	assert_non_null(b);
	assert_int_equal(n, sizeof(DETAILS));
	assert_memory_equal(b, DETAILS, n);
	free(b);
	free(text);
	b = grpc_base64_decode("-_8", 3, &n); /* URL alphabet */
	assert_non_null(b);
	assert_int_equal(n, 2);
	assert_int_equal(b[0], 0xfb);
	assert_int_equal(b[1], 0xff);
	free(b);
	assert_null(grpc_base64_decode("a*bc", 4, &n));
	assert_null(grpc_base64_decode("abcde", 5, &n));
}

static void test_unary_error_details_reach_the_client_unchanged(void **unused)
{
	(void)unused;
	fixture *f = start(0);
	grpc_client *direct = connect_to(f->primary.target);
	grpc_client *proxied = connect_to(f->target);
	uint8_t *resp;
	size_t resp_len;
	grpc_status a = {0}, b = {0};
	grpc_client_unary(direct, PS "CheckPermission", NULL, 0, 5000, "x", 1,
	                  &resp, &resp_len, &a);
	assert_primary_failure(&a);
	grpc_client_unary(proxied, PS "CheckPermission", proxy_auth, 1, 5000,
	                  "x", 1, &resp, &resp_len, &b);
	assert_primary_failure(&b);
	assert_null(resp);
	grpc_status_clear(&a);
	grpc_status_clear(&b);
	assert_null(b.details);
	/* A local failure (the proxy's own auth) carries no details. */
	grpc_client_unary(proxied, PS "CheckPermission", NULL, 0, 5000, "x", 1,
	                  &resp, &resp_len, &b);
	assert_int_equal(b.code, GRPC_STATUS_UNAUTHENTICATED);
	assert_null(b.details);
	grpc_status_clear(&b);
	grpc_client_close(direct);
	grpc_client_close(proxied);
	stop(f);
}

static int count_message(void *ctx, const uint8_t *data, size_t len)
{
	(void)data;
	(void)len;
	(*(int *)ctx)++;
	return 0;
}

static void test_stream_error_details_reach_the_client_unchanged(void **unused)
{
	(void)unused;
	fixture *f = start(0);
	grpc_client *proxied = connect_to(f->target);
	int messages = 0;
	grpc_status st = {0};
	grpc_client_server_streaming(proxied, PS "ReadRelationships",
	                             proxy_auth, 1, 5000, "r", 1, count_message,
	                             &messages, &st);
	assert_int_equal(messages, 1);
	assert_primary_failure(&st);
	grpc_status_clear(&st);
	grpc_client_close(proxied);
	stop(f);
}

typedef struct messages {
	const char **v;
	size_t n, i;
} messages;

static int next_message(void *ctx, const void **data, size_t *len)
{
	messages *m = ctx;
	if (m->i == m->n)
		return 0;
	*data = m->v[m->i];
	*len = strlen(m->v[m->i]);
	m->i++;
	return 1;
}

static void test_import_is_relayed_and_its_error_details_too(void **unused)
{
	(void)unused;
	fixture *f = start(0);
	grpc_client *proxied = connect_to(f->target);
	const char *good[] = {"one", "two", "three"};
	messages m = {good, 3, 0};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	int code = grpc_client_streaming(proxied, PS "ImportBulkRelationships",
	                                 proxy_auth, 1, 5000, next_message, &m,
	                                 NULL, NULL, &resp, &resp_len, &st);
	assert_int_equal(code, GRPC_STATUS_OK);
	assert_non_null(resp);
	assert_string_equal((char *)resp, "3"); /* the primary saw all 3 */
	free(resp);
	grpc_status_clear(&st);
	const char *bad[] = {"one", "bad"};
	m = (messages){bad, 2, 0};
	code = grpc_client_streaming(proxied, PS "ImportBulkRelationships",
	                             proxy_auth, 1, 5000, next_message, &m,
	                             NULL, NULL, &resp, &resp_len, &st);
	assert_primary_failure(&st);
	assert_null(resp);
	grpc_status_clear(&st);
	/* The good import was queued for the shadow as one write, the
	 * failed one not at all. */
	proxy_stats s;
	for (int i = 0; i < 200; i++) {
		proxy_stats_get(f->proxy, &s);
		if (s.shadow_writes == 1 && s.queued == 0)
			break;
		sleep_ms(10);
	}
	assert_int_equal(s.shadow_writes, 1);
	assert_int_equal(s.mismatches, 0);
	assert_int_equal(s.dropped, 0);
	grpc_client_close(proxied);
	stop(f);
}

static void test_import_past_the_byte_limit_is_dropped_and_logged(void **unused)
{
	(void)unused;
	fixture *f = start_with(0, 64); /* 64 bytes for the shadow */
	grpc_client *proxied = connect_to(f->target);
	const char *big[] = {"0123456789012345678901234567890123456789",
	                     "0123456789012345678901234567890123456789"};
	messages m = {big, 2, 0};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	int code = grpc_client_streaming(proxied, PS "ImportBulkRelationships",
	                                 proxy_auth, 1, 5000, next_message, &m,
	                                 NULL, NULL, &resp, &resp_len, &st);
	/* The client is served by the primary all the same. */
	assert_int_equal(code, GRPC_STATUS_OK);
	assert_string_equal((char *)resp, "2");
	free(resp);
	grpc_status_clear(&st);
	/* The proxy drops it after answering the client: wait for it. */
	proxy_stats s;
	for (int i = 0; i < 200; i++) {
		proxy_stats_get(f->proxy, &s);
		if (s.dropped == 1)
			break;
		sleep_ms(10);
	}
	assert_int_equal(s.dropped, 1);
	assert_int_equal(s.shadow_writes, 0);
	assert_true(log_has("shadow queue full: ImportBulkRelationships "
	                    "dropped (1 jobs dropped so far); the shadow now "
	                    "lacks a write of the primary"));
	grpc_client_close(proxied);
	stop(f);
}

/* ===================================================================== */
/* Watch                                                                 */
/* ===================================================================== */

/* Cancels the call at its first message. */
static int cancel_at_first(void *ctx, const uint8_t *data, size_t len)
{
	(void)ctx;
	assert_int_equal(len, 7);
	assert_memory_equal(data, "event 1", 7);
	return 1;
}

static bool wait_for(bool (*cond)(void), int ms)
{
	pthread_mutex_lock(&up.mu);
	for (int waited = 0; !cond() && waited < ms; waited += 10) {
		pthread_mutex_unlock(&up.mu);
		sleep_ms(10);
		pthread_mutex_lock(&up.mu);
	}
	bool ok = cond();
	pthread_mutex_unlock(&up.mu);
	return ok;
}

static bool upstream_saw_gone(void)
{
	return up.watch_saw_gone && up.watch_open == 0;
}

static void test_watch_client_gone_ends_the_primary_stream(void **unused)
{
	(void)unused;
	fixture *f = start(0);
	grpc_client *proxied = connect_to(f->target);
	grpc_status st = {0};
	int code =
	    grpc_client_server_streaming(proxied, WATCH, proxy_auth, 1, 0, "w",
	                                 1, cancel_at_first, NULL, &st);
	assert_int_equal(code, GRPC_STATUS_CANCELLED);
	grpc_status_clear(&st);
	/* The primary is silent after its first event: only the proxy
	 * breaking its connection can end the stream this soon. */
	assert_true(wait_for(upstream_saw_gone, 3000));
	grpc_client_close(proxied);
	stop(f);
}

typedef struct watcher {
	const char *target;
	int messages;
	int code;
	pthread_t thread;
} watcher;

static void *watch_main(void *arg)
{
	watcher *w = arg;
	grpc_client *c = connect_to(w->target);
	grpc_status st = {0};
	w->code =
	    grpc_client_server_streaming(c, WATCH, proxy_auth, 1, 0, "w", 1,
	                                 count_message, &w->messages, &st);
	grpc_status_clear(&st);
	grpc_client_close(c);
	return NULL;
}

static bool one_watch_open(void)
{
	return up.watch_open == 1;
}

static void test_watch_streams_past_the_cap_are_refused(void **unused)
{
	(void)unused;
	fixture *f = start(1);
	watcher first = {.target = f->target};
	assert_int_equal(
	    pthread_create(&first.thread, NULL, watch_main, &first), 0);
	assert_true(wait_for(one_watch_open, 3000));
	grpc_client *c = connect_to(f->target);
	grpc_status st = {0};
	int messages = 0;
	int code =
	    grpc_client_server_streaming(c, WATCH, proxy_auth, 1, 5000, "w", 1,
	                                 count_message, &messages, &st);
	assert_int_equal(code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(st.message, "too many Watch streams open"));
	assert_int_equal(messages, 0);
	grpc_status_clear(&st);
	/* The open stream ends normally when the primary ends it. */
	pthread_mutex_lock(&up.mu);
	up.watch_release = true;
	pthread_mutex_unlock(&up.mu);
	pthread_join(first.thread, NULL);
	assert_int_equal(first.code, GRPC_STATUS_OK);
	assert_int_equal(first.messages, 1);
	/* Its slot is free again. */
	pthread_mutex_lock(&up.mu);
	up.watch_release = true; /* the next one ends at once too */
	pthread_mutex_unlock(&up.mu);
	code = GRPC_STATUS_RESOURCE_EXHAUSTED;
	for (int i = 0; i < 100 && code == GRPC_STATUS_RESOURCE_EXHAUSTED;
	     i++) {
		messages = 0;
		code = grpc_client_server_streaming(c, WATCH, proxy_auth, 1,
		                                    5000, "w", 1, count_message,
		                                    &messages, &st);
		grpc_status_clear(&st);
		if (code == GRPC_STATUS_RESOURCE_EXHAUSTED)
			sleep_ms(20);
	}
	assert_int_equal(code, GRPC_STATUS_OK);
	grpc_client_close(c);
	stop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_base64_decode_accepts_padded_and_unpadded),
	    cmocka_unit_test(
	        test_unary_error_details_reach_the_client_unchanged),
	    cmocka_unit_test(
	        test_stream_error_details_reach_the_client_unchanged),
	    cmocka_unit_test(test_import_is_relayed_and_its_error_details_too),
	    cmocka_unit_test(
	        test_import_past_the_byte_limit_is_dropped_and_logged),
	    cmocka_unit_test(test_watch_client_gone_ends_the_primary_stream),
	    cmocka_unit_test(test_watch_streams_past_the_cap_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
