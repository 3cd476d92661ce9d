/*
 * test_grpc_mux.c -- the relay path of `pemba proxy` in the transport
 * (src/api/grpc.h): the multiplexing client (grpc_mux) and deferred calls
 * answered from the event loop (methods_on_loop, grpc_call_defer).  A
 * server on 127.0.0.1 with an ephemeral port, in-process.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/grpc.h"

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ===================================================================== */
/* Test service                                                          */
/* ===================================================================== */

static void echo_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	grpc_call_send(call, data, len);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Request: decimal milliseconds to wait before answering "slept". */
static void slow_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	int ms = atoi((const char *)data);
	for (int waited = 0; waited < ms && !grpc_call_cancelled(call);
	     waited += 5)
		sleep_ms(5);
	grpc_call_send(call, "slept", 5);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void error_handler(grpc_call *call, void *ctx)
{
	grpc_call_add_trailer(call, "grpc-status-details-bin", "\x08\x03", 2);
	grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "bad request");
}

/* Deferred calls: the on-loop handler hands the call to a thread of its
 * own, which answers after `delay` ms (the request's text). */
typedef struct deferred_job {
	grpc_call *call;
	char text[64];
	int delay_ms;
} deferred_job;

static pthread_mutex_t deferred_mu = PTHREAD_MUTEX_INITIALIZER;
static int deferred_finish_failed; /* finish refused: the call was over */
static int deferred_released;
static pthread_t loop_thread;
static bool loop_thread_known;
static int on_loop_elsewhere; /* on-loop handlers seen on another thread */

static void *deferred_answer(void *arg)
{
	deferred_job *j = arg;
	sleep_ms(j->delay_ms);
	grpc_call_send(j->call, j->text, strlen(j->text));
	int rv = grpc_call_finish(j->call, GRPC_STATUS_OK, NULL);
	/* counted before the release, which may let the server stop */
	pthread_mutex_lock(&deferred_mu);
	deferred_finish_failed += rv != 0;
	deferred_released++;
	pthread_mutex_unlock(&deferred_mu);
	grpc_call_release(j->call);
	free(j);
	return NULL;
}

static void note_loop_thread(void)
{
	pthread_mutex_lock(&deferred_mu);
	if (!loop_thread_known) {
		loop_thread = pthread_self();
		loop_thread_known = true;
	} else if (!pthread_equal(loop_thread, pthread_self())) {
		on_loop_elsewhere++;
	}
	pthread_mutex_unlock(&deferred_mu);
}

static void deferred_handler(grpc_call *call, void *ctx)
{
	note_loop_thread();
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	deferred_job *j = calloc(1, sizeof(*j));
	j->call = call;
	snprintf(j->text, sizeof(j->text), "%.*s", (int)len,
	         (const char *)data);
	j->delay_ms = atoi(j->text);
	assert_int_equal(grpc_call_defer(call), 0);
	/* a second defer is refused */
	assert_int_equal(grpc_call_defer(call), GRPC_ESTATE);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, deferred_answer, j), 0);
	pthread_detach(t);
}

/* On the loop, answered at once. */
static void loop_echo_handler(grpc_call *call, void *ctx)
{
	note_loop_thread();
	echo_handler(call, ctx);
}

static const grpc_method methods[] = {
    {"/test.Echo/Unary", GRPC_METHOD_UNARY, echo_handler, NULL},
    {"/test.Echo/Slow", GRPC_METHOD_UNARY, slow_handler, NULL},
    {"/test.Echo/Error", GRPC_METHOD_UNARY, error_handler, NULL},
    {"/test.Echo/Deferred", GRPC_METHOD_UNARY, deferred_handler, NULL},
    {"/test.Echo/LoopEcho", GRPC_METHOD_UNARY, loop_echo_handler, NULL},
};
static const bool on_loop[] = {false, false, false, true, true};

/* ===================================================================== */
/* Fixture                                                               */
/* ===================================================================== */

typedef struct fixture {
	grpc_server *server;
	pthread_t thread;
	int port;
	int run_result;
	char target[64];
} fixture;

static void *server_thread(void *arg)
{
	fixture *f = arg;
	pemba_error err;
	f->run_result = grpc_server_run(f->server, &err);
	return NULL;
}

/* port 0: ephemeral. */
static fixture *start_server_on(int port, int idle_timeout_ms)
{
	grpc_server_options o;
	grpc_server_options_init(&o);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	o.listen_addr = addr;
	o.methods = methods;
	o.method_count = sizeof(methods) / sizeof(methods[0]);
	o.methods_on_loop = on_loop;
	o.worker_threads = 4;
	o.idle_timeout_ms = idle_timeout_ms;
	fixture *f = calloc(1, sizeof(*f));
	pemba_error err;
	if (grpc_server_new(&o, &f->server, &err) != 0)
		fail_msg("grpc_server_new: %s", err.message);
	f->port = grpc_server_port(f->server);
	snprintf(f->target, sizeof(f->target), "127.0.0.1:%d", f->port);
	assert_int_equal(pthread_create(&f->thread, NULL, server_thread, f), 0);
	return f;
}

static void stop_server(fixture *f)
{
	grpc_server_shutdown(f->server);
	pthread_join(f->thread, NULL);
	assert_int_equal(f->run_result, 0);
	grpc_server_free(f->server);
	free(f);
}

/* Outcomes of mux calls, collected by mux_done. */
typedef struct outcome {
	int code;
	bool local;
	char *message;
	char *response;
	char *request;
	uint8_t *details;
	size_t details_len;
	double at;
} outcome;

typedef struct results {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	outcome *o;
} results;

typedef struct slot {
	results *r;
	int i;
} slot;

static void mux_done(void *ctx, int code, uint8_t *resp, size_t resp_len,
                     grpc_status *st, const uint8_t *req, size_t req_len)
{
	slot *s = ctx;
	results *r = s->r;
	pthread_mutex_lock(&r->mu);
	outcome *o = &r->o[s->i];
	o->code = code;
	o->local = st->local;
	o->message = st->message ? strdup(st->message) : NULL;
	o->response = resp ? strndup((const char *)resp, resp_len) : NULL;
	o->request = strndup((const char *)req, req_len);
	if (st->details) {
		o->details = malloc(st->details_len);
		memcpy(o->details, st->details, st->details_len);
		o->details_len = st->details_len;
	}
	o->at = now_s();
	r->done++;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	free(resp);
	grpc_status_clear(st);
	free(s);
}

static results *results_new(int n)
{
	results *r = calloc(1, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->o = calloc((size_t)n, sizeof(*r->o));
	for (int i = 0; i < n; i++)
		r->o[i].code = -1;
	return r;
}

/* Waits (at most 20 s) until n outcomes arrived. */
static void results_wait(results *r, int n)
{
	double until = now_s() + 20;
	pthread_mutex_lock(&r->mu);
	while (r->done < n && now_s() < until) {
		pthread_mutex_unlock(&r->mu);
		sleep_ms(2);
		pthread_mutex_lock(&r->mu);
	}
	int done = r->done;
	pthread_mutex_unlock(&r->mu);
	if (done < n)
		fail_msg("only %d of %d calls finished", done, n);
}

static void results_free(results *r, int n)
{
	for (int i = 0; i < n; i++) {
		free(r->o[i].message);
		free(r->o[i].response);
		free(r->o[i].request);
		free(r->o[i].details);
	}
	free(r->o);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
}

static void submit(grpc_mux *m, results *r, int i, const char *path,
                   const char *text, int timeout_ms)
{
	slot *s = malloc(sizeof(*s));
	*s = (slot){r, i};
	grpc_metadata md[1] = {{"authorization", "Bearer k", 0}};
	grpc_mux_unary(m, path, md, 1, timeout_ms, text, strlen(text),
	               mux_done, s);
}

static grpc_mux *mux_to(const char *target)
{
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = target;
	o.connect_timeout_ms = 2000;
	grpc_mux *m;
	pemba_error err;
	if (grpc_mux_new(&o, &m, &err) != 0)
		fail_msg("grpc_mux_new: %s", err.message);
	return m;
}

/* ===================================================================== */
/* Tests                                                                 */
/* ===================================================================== */

static void test_mux_answers_many_concurrent_calls(void **unused)
{
	fixture *f = start_server_on(0, 0);
	grpc_mux *m = mux_to(f->target);
	enum { N = 600 };
	results *r = results_new(N);
	char text[32];
	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof(text), "call %d", i);
		submit(m, r, i, "/test.Echo/Unary", text, 10000);
	}
	results_wait(r, N);
	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof(text), "call %d", i);
		assert_int_equal(r->o[i].code, GRPC_STATUS_OK);
		assert_string_equal(r->o[i].response, text);
		assert_string_equal(r->o[i].request, text);
	}
	results_free(r, N);
	grpc_mux_free(m);
	stop_server(f);
}

static void test_mux_relays_status_message_and_details(void **unused)
{
	fixture *f = start_server_on(0, 0);
	grpc_mux *m = mux_to(f->target);
	results *r = results_new(2);
	submit(m, r, 0, "/test.Echo/Error", "x", 5000);
	submit(m, r, 1, "/test.Nope/Missing", "x", 5000);
	results_wait(r, 2);
	assert_int_equal(r->o[0].code, GRPC_STATUS_INVALID_ARGUMENT);
	assert_false(r->o[0].local);
	assert_string_equal(r->o[0].message, "bad request");
	assert_int_equal(r->o[0].details_len, 2);
	assert_memory_equal(r->o[0].details, "\x08\x03", 2);
	assert_int_equal(r->o[1].code, GRPC_STATUS_UNIMPLEMENTED);
	assert_null(r->o[1].response);
	results_free(r, 2);
	grpc_mux_free(m);
	stop_server(f);
}

static void test_mux_deadline_ends_a_slow_call_alone(void **unused)
{
	fixture *f = start_server_on(0, 0);
	grpc_mux *m = mux_to(f->target);
	results *r = results_new(2);
	double t0 = now_s();
	submit(m, r, 0, "/test.Echo/Slow", "3000", 100);
	submit(m, r, 1, "/test.Echo/Unary", "quick", 5000);
	results_wait(r, 2);
	assert_int_equal(r->o[0].code, GRPC_STATUS_DEADLINE_EXCEEDED);
	assert_true(r->o[0].at - t0 < 2.0);
	assert_int_equal(r->o[1].code, GRPC_STATUS_OK);
	results_free(r, 2);
	grpc_mux_free(m);
	stop_server(f);
}

/* The server goes away: calls fail UNAVAILABLE, decided locally; a new
 * server on the same port is used without a new mux. */
static void test_mux_reconnects_after_the_server_restarts(void **unused)
{
	fixture *f = start_server_on(0, 0);
	int port = f->port;
	grpc_mux *m = mux_to(f->target);
	results *r = results_new(3);
	submit(m, r, 0, "/test.Echo/Unary", "before", 5000);
	results_wait(r, 1);
	assert_int_equal(r->o[0].code, GRPC_STATUS_OK);
	stop_server(f);
	submit(m, r, 1, "/test.Echo/Unary", "down", 5000);
	results_wait(r, 2);
	assert_int_equal(r->o[1].code, GRPC_STATUS_UNAVAILABLE);
	assert_true(r->o[1].local);
	assert_non_null(r->o[1].message);
	f = start_server_on(port, 0);
	submit(m, r, 2, "/test.Echo/Unary", "after", 5000);
	results_wait(r, 3);
	assert_int_equal(r->o[2].code, GRPC_STATUS_OK);
	assert_string_equal(r->o[2].response, "after");
	results_free(r, 3);
	grpc_mux_free(m);
	stop_server(f);
}

/* An idle connection gets the server's graceful GOAWAY and is closed; the
 * next calls go to a new connection and succeed.  (The window between a
 * GOAWAY and the close, where new calls wait for the old connection's last
 * call, is not reproduced here: the mux sees both before these calls.) */
static void test_mux_moves_on_after_a_goaway(void **unused)
{
	fixture *f = start_server_on(0, 150);
	grpc_mux *m = mux_to(f->target);
	results *r = results_new(3);
	submit(m, r, 0, "/test.Echo/Unary", "one", 5000);
	results_wait(r, 1);
	sleep_ms(600); /* idle past 150 ms: GOAWAY, then the close */
	submit(m, r, 1, "/test.Echo/Unary", "two", 5000);
	submit(m, r, 2, "/test.Echo/Unary", "three", 5000);
	results_wait(r, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(r->o[i].code, GRPC_STATUS_OK);
	assert_string_equal(r->o[2].response, "three");
	results_free(r, 3);
	grpc_mux_free(m);
	stop_server(f);
}

static void test_mux_free_cancels_calls_in_flight(void **unused)
{
	fixture *f = start_server_on(0, 0);
	grpc_mux *m = mux_to(f->target);
	results *r = results_new(1);
	submit(m, r, 0, "/test.Echo/Slow", "5000", 10000);
	sleep_ms(100);
	double t0 = now_s();
	grpc_mux_free(m);
	assert_true(now_s() - t0 < 2.0);
	results_wait(r, 1);
	assert_int_equal(r->o[0].code, GRPC_STATUS_CANCELLED);
	results_free(r, 1);
	stop_server(f);
}

static void test_unreachable_target_fails_every_call_locally(void **unused)
{
	/* A port nobody listens on: bind, learn it, close. */
	fixture *f = start_server_on(0, 0);
	char target[64];
	snprintf(target, sizeof(target), "%s", f->target);
	stop_server(f);
	grpc_mux *m = mux_to(target);
	enum { N = 50 };
	results *r = results_new(N);
	for (int i = 0; i < N; i++)
		submit(m, r, i, "/test.Echo/Unary", "x", 5000);
	results_wait(r, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(r->o[i].code, GRPC_STATUS_UNAVAILABLE);
		assert_true(r->o[i].local);
	}
	results_free(r, N);
	grpc_mux_free(m);
}

/* Deferred calls answered from other threads, many at once, each with its
 * own answer; the on-loop handlers all ran on one thread (the loop). */
static void test_deferred_calls_are_answered_from_elsewhere(void **unused)
{
	fixture *f = start_server_on(0, 0);
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = f->target;
	grpc_client *c;
	pemba_error err;
	assert_int_equal(grpc_client_connect(&o, &c, &err), 0);
	enum { N = 64 };
	grpc_unary_call calls[N];
	char texts[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(texts[i], sizeof(texts[i]), "%d", 20 + i % 7);
		calls[i] = (grpc_unary_call){
		    .path = i % 2 ? "/test.Echo/Deferred" : "/test.Echo/LoopEcho",
		    .request = texts[i],
		    .request_len = strlen(texts[i])};
	}
	assert_int_equal(grpc_client_unary_batch(c, NULL, 0, 10000, calls, N),
	                 N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(calls[i].response_len, strlen(texts[i]));
		assert_memory_equal(calls[i].response, texts[i],
		                    calls[i].response_len);
		free(calls[i].response);
		grpc_status_clear(&calls[i].status);
	}
	pthread_mutex_lock(&deferred_mu);
	assert_int_equal(on_loop_elsewhere, 0);
	assert_true(loop_thread_known);
	pthread_mutex_unlock(&deferred_mu);
	grpc_client_close(c);
	stop_server(f);
}

/* The client gives up before the owner answers: the transport ends the
 * call, the owner's finish is refused, its release still frees it (ASan
 * checks), and the server's shutdown waits for the owner. */
static void test_deferred_call_outlived_by_its_client(void **unused)
{
	fixture *f = start_server_on(0, 0);
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = f->target;
	grpc_client *c;
	pemba_error err;
	assert_int_equal(grpc_client_connect(&o, &c, &err), 0);
	pthread_mutex_lock(&deferred_mu);
	int failed0 = deferred_finish_failed, released0 = deferred_released;
	pthread_mutex_unlock(&deferred_mu);
	uint8_t *resp = NULL;
	size_t len = 0;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Deferred", NULL, 0, 50,
	                             "400", 3, &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_DEADLINE_EXCEEDED);
	grpc_status_clear(&st);
	free(resp);
	grpc_client_close(c);
	/* the owner still holds the call: shutdown waits for it */
	stop_server(f);
	pthread_mutex_lock(&deferred_mu);
	assert_int_equal(deferred_released, released0 + 1);
	assert_int_equal(deferred_finish_failed, failed0 + 1);
	pthread_mutex_unlock(&deferred_mu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mux_answers_many_concurrent_calls),
	    cmocka_unit_test(test_mux_relays_status_message_and_details),
	    cmocka_unit_test(test_mux_deadline_ends_a_slow_call_alone),
	    cmocka_unit_test(test_mux_reconnects_after_the_server_restarts),
	    cmocka_unit_test(test_mux_moves_on_after_a_goaway),
	    cmocka_unit_test(test_mux_free_cancels_calls_in_flight),
	    cmocka_unit_test(test_unreachable_target_fails_every_call_locally),
	    cmocka_unit_test(test_deferred_calls_are_answered_from_elsewhere),
	    cmocka_unit_test(test_deferred_call_outlived_by_its_client),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
