/*
 * test_grpc_transport.c -- the gRPC transport (src/api/grpc.h): a server on
 * 127.0.0.1 with an ephemeral port, in-process, with a test service table,
 * driven by the project's client and by raw HTTP/2 (nghttp2) where the
 * client cannot misbehave on purpose.
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
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "api/grpc.h"

/* ===================================================================== */
/* Test service                                                          */
/* ===================================================================== */

typedef struct service_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int echoes_done; /* Unary calls completed */
	int gate_target; /* Gate waits for this many echoes */
	bool slow_started;
	bool slow_saw_deadline;
	bool slow_saw_cancel;
	bool slow_returned;
} service_state;

static service_state state = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static void echo_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	grpc_call_send(call, data, len);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	pthread_mutex_lock(&state.lock);
	state.echoes_done++;
	pthread_cond_broadcast(&state.cond);
	pthread_mutex_unlock(&state.lock);
}

/* Request: decimal count; responds with that many "message N". */
static void server_stream_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	int count = atoi((const char *)data);
	for (int i = 0; i < count; i++) {
		char text[32];
		int n = snprintf(text, sizeof(text), "message %d", i);
		if (grpc_call_send(call, text, (size_t)n) != 0)
			return;
	}
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Reads every request; responds "count=N bytes=M". */
static void client_stream_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len, count = 0, bytes = 0;
	int rv;
	while ((rv = grpc_call_read(call, &data, &len)) == 1) {
		count++;
		bytes += len;
	}
	if (rv < 0)
		return;
	char text[64];
	int n =
	    snprintf(text, sizeof(text), "count=%zu bytes=%zu", count, bytes);
	grpc_call_send(call, text, (size_t)n);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void bidi_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	int rv;
	while ((rv = grpc_call_read(call, &data, &len)) == 1)
		grpc_call_send(call, data, len);
	if (rv == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Request: milliseconds to sleep, polling for cancellation. */
static void slow_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	int ms = atoi((const char *)data);
	pthread_mutex_lock(&state.lock);
	state.slow_started = true;
	state.slow_saw_deadline = grpc_call_deadline(call) != 0;
	pthread_cond_broadcast(&state.cond);
	pthread_mutex_unlock(&state.lock);
	bool cancelled = false;
	for (int waited = 0; waited < ms; waited += 10) {
		if (grpc_call_cancelled(call)) {
			cancelled = true;
			break;
		}
		sleep_ms(10);
	}
	if (!cancelled) {
		grpc_call_send(call, "slept", 5);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	} else {
		/* the transport decided the status already: this must fail */
		if (grpc_call_finish(call, GRPC_STATUS_OK, NULL) == 0)
			cancelled = false;
	}
	pthread_mutex_lock(&state.lock);
	state.slow_saw_cancel = cancelled;
	state.slow_returned = true;
	pthread_cond_broadcast(&state.cond);
	pthread_mutex_unlock(&state.lock);
}

/* Blocks until gate_target unary echoes completed (or 10 s). */
static void gate_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&state.lock);
	int rv = 0;
	while (state.echoes_done < state.gate_target && rv == 0)
		rv = pthread_cond_timedwait(&state.cond, &state.lock, &until);
	bool ok = state.echoes_done >= state.gate_target;
	pthread_mutex_unlock(&state.lock);
	if (!ok) {
		grpc_call_finish(call, GRPC_STATUS_ABORTED,
		                 "other streams were blocked");
		return;
	}
	grpc_call_send(call, "opened", 6);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void metadata_handler(grpc_call *call, void *ctx)
{
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1)
		return;
	const char *value = grpc_call_metadata(call, "x-test");
	if (value == NULL)
		value = "(none)";
	grpc_call_send(call, value, strlen(value));
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void error_handler(grpc_call *call, void *ctx)
{
	grpc_call_add_trailer(call, "x-detail-bin", "\x01\x02\x03", 3);
	grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
	                 "bad 100% caf\xc3\xa9\nline two");
}

static void silent_handler(grpc_call *call, void *ctx)
{
	/* returns without a status */
}

static const grpc_method test_methods[] = {
    {"/test.Echo/Unary", GRPC_METHOD_UNARY, echo_handler, NULL},
    {"/test.Echo/ServerStream", GRPC_METHOD_SERVER_STREAMING,
     server_stream_handler, NULL},
    {"/test.Echo/ClientStream", GRPC_METHOD_CLIENT_STREAMING,
     client_stream_handler, NULL},
    {"/test.Echo/Bidi", GRPC_METHOD_BIDI_STREAMING, bidi_handler, NULL},
    {"/test.Echo/Slow", GRPC_METHOD_UNARY, slow_handler, NULL},
    {"/test.Echo/Gate", GRPC_METHOD_UNARY, gate_handler, NULL},
    {"/test.Echo/Metadata", GRPC_METHOD_UNARY, metadata_handler, NULL},
    {"/test.Echo/Error", GRPC_METHOD_UNARY, error_handler, NULL},
    {"/test.Echo/Silent", GRPC_METHOD_UNARY, silent_handler, NULL},
};

/* ===================================================================== */
/* Server fixture                                                        */
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

static fixture *start_server_with(grpc_server_options *o)
{
	o->listen_addr = "127.0.0.1:0";
	o->methods = test_methods;
	o->method_count = sizeof(test_methods) / sizeof(test_methods[0]);
	fixture *f = calloc(1, sizeof(*f));
	pemba_error err;
	int rv = grpc_server_new(o, &f->server, &err);
	if (rv != 0)
		fail_msg("grpc_server_new: %s", err.message);
	f->port = grpc_server_port(f->server);
	assert_true(f->port > 0);
	snprintf(f->target, sizeof(f->target), "127.0.0.1:%d", f->port);
	assert_int_equal(pthread_create(&f->thread, NULL, server_thread, f), 0);
	pthread_mutex_lock(&state.lock);
	state.echoes_done = 0;
	state.gate_target = 0;
	state.slow_started = state.slow_saw_deadline = false;
	state.slow_saw_cancel = state.slow_returned = false;
	pthread_mutex_unlock(&state.lock);
	return f;
}

static fixture *start_server(void)
{
	grpc_server_options o;
	grpc_server_options_init(&o);
	o.worker_threads = 4;
	return start_server_with(&o);
}

static void stop_server(fixture *f)
{
	grpc_server_shutdown(f->server);
	pthread_join(f->thread, NULL);
	assert_int_equal(f->run_result, 0);
	grpc_server_free(f->server);
	free(f);
}

static grpc_client *connect_to(fixture *f)
{
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = f->target;
	grpc_client *c;
	pemba_error err;
	if (grpc_client_connect(&o, &c, &err) != 0)
		fail_msg("connect: %s", err.message);
	return c;
}

/* Unary echo of text; asserts OK and the echoed bytes. */
static void assert_echo(grpc_client *c, const char *text)
{
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Unary", NULL, 0, 5000, text,
	                             strlen(text), &resp, &len, &st);
	if (code != GRPC_STATUS_OK)
		fail_msg("echo: %s %s", grpc_status_name(code),
		         st.message ? st.message : "");
	assert_int_equal(len, strlen(text));
	assert_memory_equal(resp, text, len);
	free(resp);
	grpc_status_clear(&st);
}

/* ===================================================================== */
/* Raw HTTP/2 client: sends exactly the body bytes given                 */
/* ===================================================================== */

typedef struct raw_result {
	int grpc_status;
	int http_status;
	char message[256];
	bool closed;
	const uint8_t *body;
	size_t body_len, body_sent;
} raw_result;

static int raw_on_header(nghttp2_session *s, const nghttp2_frame *frame,
                         const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *user_data)
{
	raw_result *r = user_data;
	char text[256];
	size_t n = valuelen < sizeof(text) - 1 ? valuelen : sizeof(text) - 1;
	memcpy(text, value, n);
	text[n] = 0;
	if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
		r->grpc_status = atoi(text);
	else if (namelen == 7 && memcmp(name, ":status", 7) == 0)
		r->http_status = atoi(text);
	else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
		memcpy(r->message, text, n + 1);
	return 0;
}

static int raw_on_close(nghttp2_session *s, int32_t id, uint32_t code,
                        void *user_data)
{
	((raw_result *)user_data)->closed = true;
	return 0;
}

static ssize_t raw_body(nghttp2_session *s, int32_t id, uint8_t *buf,
                        size_t length, uint32_t *flags,
                        nghttp2_data_source *src, void *user_data)
{
	raw_result *r = user_data;
	size_t n = r->body_len - r->body_sent;
	if (n > length)
		n = length;
	memcpy(buf, r->body + r->body_sent, n);
	r->body_sent += n;
	if (r->body_sent == r->body_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* One request on a fresh connection with exactly body[0..len) as DATA;
 * extra_name/extra_value add one header (may be NULL). */
static raw_result raw_call(int port, const char *path, const void *body,
                           size_t len, const char *extra_name,
                           const char *extra_value)
{
	raw_result r = {.grpc_status = -1, .body = body, .body_len = len};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET,
	                           .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)),
	                 0);
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, raw_on_header);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb,
	                                                       raw_on_close);
	nghttp2_session *s;
	nghttp2_session_client_new(&s, cb, &r);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
#define RAW_NV(a, b)                                                           \
	{(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b),                 \
	 NGHTTP2_NV_FLAG_NONE}
	nghttp2_nv nv[] = {
	    RAW_NV(":method", "POST"),
	    RAW_NV(":scheme", "http"),
	    RAW_NV(":path", path),
	    RAW_NV(":authority", "localhost"),
	    RAW_NV("content-type", "application/grpc"),
	    RAW_NV("te", "trailers"),
	    RAW_NV(extra_name ? extra_name : "x-none",
	           extra_value ? extra_value : ""),
	};
#undef RAW_NV
	nghttp2_data_provider provider = {.read_callback = raw_body};
	assert_true(nghttp2_submit_request(s, NULL, nv, 7, &provider, NULL) >
	            0);
	for (int rounds = 0; !r.closed && rounds < 1000; rounds++) {
		const uint8_t *out;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(s, &out)) > 0)
			assert_int_equal(send(fd, out, (size_t)n, MSG_NOSIGNAL),
			                 n);
		if (r.closed)
			break;
		uint8_t buf[16384];
		struct timeval tv = {5, 0};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ssize_t got = recv(fd, buf, sizeof(buf), 0);
		if (got <= 0)
			break;
		assert_true(nghttp2_session_mem_recv(s, buf, (size_t)got) >= 0);
	}
	nghttp2_session_del(s);
	close(fd);
	return r;
}

/* ===================================================================== */
/* Helpers under test                                                    */
/* ===================================================================== */

static void test_timeout_parsing_accepts_every_unit(void **unused)
{
	int64_t ns;
	assert_int_equal(grpc_parse_timeout("2H", &ns), 0);
	assert_true(ns == 2LL * 3600 * 1000000000LL);
	assert_int_equal(grpc_parse_timeout("3M", &ns), 0);
	assert_true(ns == 180LL * 1000000000LL);
	assert_int_equal(grpc_parse_timeout("5S", &ns), 0);
	assert_true(ns == 5000000000LL);
	assert_int_equal(grpc_parse_timeout("250m", &ns), 0);
	assert_true(ns == 250000000LL);
	assert_int_equal(grpc_parse_timeout("7u", &ns), 0);
	assert_true(ns == 7000);
	assert_int_equal(grpc_parse_timeout("99999999n", &ns), 0);
	assert_true(ns == 99999999);
	assert_int_equal(grpc_parse_timeout("99999999H", &ns), 0);
	assert_true(ns > 0); /* clamped, not overflowed */
	assert_int_equal(grpc_parse_timeout("123456789S", &ns), -1);
	assert_int_equal(grpc_parse_timeout("10", &ns), -1);
	assert_int_equal(grpc_parse_timeout("S", &ns), -1);
	assert_int_equal(grpc_parse_timeout("1x", &ns), -1);
	assert_int_equal(grpc_parse_timeout("-1S", &ns), -1);
}

static void test_grpc_message_percent_encoding_round_trips(void **unused)
{
	const char *text = "100% caf\xc3\xa9\nok";
	char *encoded = grpc_percent_encode(text);
	assert_string_equal(encoded, "100%25 caf%C3%A9%0Aok");
	char *decoded = grpc_percent_decode(encoded);
	assert_string_equal(decoded, text);
	free(encoded);
	free(decoded);
	decoded = grpc_percent_decode("bad %zz and %4");
	assert_string_equal(decoded, "bad %zz and %4");
	free(decoded);
}

static void test_const_time_equal_compares_content_and_length(void **unused)
{
	assert_true(grpc_const_time_equal("secret", 6, "secret", 6));
	assert_false(grpc_const_time_equal("secret", 6, "secreT", 6));
	assert_false(grpc_const_time_equal("secret", 6, "secret2", 7));
	assert_false(grpc_const_time_equal("", 0, "a", 1));
	assert_true(grpc_const_time_equal("", 0, "", 0));
}

/* ===================================================================== */
/* Calls                                                                 */
/* ===================================================================== */

static void test_unary_echo_round_trips_bytes(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	assert_echo(c, "hello");
	assert_echo(c, "");
	/* binary, with NULs, bigger than one DATA frame */
	size_t n = 200000;
	uint8_t *big = malloc(n);
	for (size_t i = 0; i < n; i++)
		big[i] = (uint8_t)(i * 7);
	uint8_t *resp;
	size_t len;
	grpc_status st;
	assert_int_equal(grpc_client_unary(c, "/test.Echo/Unary", NULL, 0, 0,
	                                   big, n, &resp, &len, &st),
	                 GRPC_STATUS_OK);
	assert_int_equal(len, n);
	assert_memory_equal(resp, big, n);
	free(resp);
	free(big);
	grpc_client_close(c);
	stop_server(f);
}

static void test_status_message_is_percent_encoded_with_trailers(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Error", NULL, 0, 0, "x", 1,
	                             &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
	assert_null(resp);
	assert_string_equal(st.message, "bad 100% caf\xc3\xa9\nline two");
	grpc_status_clear(&st);
	/* on the wire: percent-encoded */
	uint8_t frame[6] = {0, 0, 0, 0, 1, 'x'};
	raw_result r =
	    raw_call(f->port, "/test.Echo/Error", frame, 6, NULL, NULL);
	assert_int_equal(r.grpc_status, GRPC_STATUS_INVALID_ARGUMENT);
	assert_string_equal(r.message, "bad 100%25 caf%C3%A9%0Aline two");
	/* a handler that forgets the status */
	code = grpc_client_unary(c, "/test.Echo/Silent", NULL, 0, 0, "x", 1,
	                         &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_INTERNAL);
	grpc_status_clear(&st);
	grpc_client_close(c);
	stop_server(f);
}

static void test_metadata_reaches_the_handler(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	grpc_metadata md[] = {{"x-test", "value 1", 0},
	                      {"authorization", "Bearer k", 0}};
	uint8_t *resp;
	size_t len;
	grpc_status st;
	assert_int_equal(grpc_client_unary(c, "/test.Echo/Metadata", md, 2, 0,
	                                   "", 0, &resp, &len, &st),
	                 GRPC_STATUS_OK);
	assert_int_equal(len, 7);
	assert_memory_equal(resp, "value 1", 7);
	free(resp);
	grpc_client_close(c);
	stop_server(f);
}

typedef struct stream_count {
	int count;
	bool in_order;
} stream_count;

static int count_message(void *ctx, const uint8_t *data, size_t len)
{
	stream_count *sc = ctx;
	char expected[32];
	int n = snprintf(expected, sizeof(expected), "message %d", sc->count);
	if ((size_t)n != len || memcmp(expected, data, len) != 0)
		sc->in_order = false;
	sc->count++;
	return 0;
}

static void test_server_streaming_delivers_10k_messages_in_order(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	stream_count sc = {0, true};
	grpc_status st;
	int code = grpc_client_server_streaming(c, "/test.Echo/ServerStream",
	                                        NULL, 0, 30000, "10000", 5,
	                                        count_message, &sc, &st);
	assert_int_equal(code, GRPC_STATUS_OK);
	assert_int_equal(sc.count, 10000);
	assert_true(sc.in_order);
	/* the connection still serves */
	assert_echo(c, "after stream");
	grpc_client_close(c);
	stop_server(f);
}

/* ------------------------------------------------- unix-domain sockets */

/* The server listens on TCP only, so the unix-socket test puts a relay in
 * front of it: one accepted unix connection, copied both ways to a TCP
 * connection to the server until either side closes. */
typedef struct unix_bridge {
	int listen_fd;
	int tcp_port;
	char path[108];
	pthread_t thread;
} unix_bridge;

static void *bridge_thread(void *arg)
{
	unix_bridge *b = arg;
	int ufd = accept(b->listen_fd, NULL, NULL);
	if (ufd < 0)
		return NULL;
	int tfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)b->tcp_port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(tfd, (struct sockaddr *)&a, sizeof(a)) == 0) {
		struct pollfd p[2] = {{.fd = ufd, .events = POLLIN},
		                      {.fd = tfd, .events = POLLIN}};
		char buf[16384];
		for (bool open = true; open;) {
			if (poll(p, 2, -1) < 0)
				break;
			for (int i = 0; i < 2 && open; i++) {
				if (!(p[i].revents &
				      (POLLIN | POLLHUP | POLLERR)))
					continue;
				ssize_t n = read(p[i].fd, buf, sizeof(buf));
				if (n <= 0 ||
				    write(p[1 - i].fd, buf, (size_t)n) != n)
					open = false;
			}
		}
	}
	close(tfd);
	close(ufd);
	return NULL;
}

static void test_client_connects_to_a_unix_socket_target(void **unused)
{
	fixture *f = start_server();
	unix_bridge b = {.tcp_port = f->port};
	snprintf(b.path, sizeof(b.path), "/tmp/pemba-grpc-test-%d.sock",
	         (int)getpid());
	unlink(b.path);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", b.path);
	b.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(
	    bind(b.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(b.listen_fd, 1), 0);
	assert_int_equal(pthread_create(&b.thread, NULL, bridge_thread, &b), 0);

	char target[128];
	snprintf(target, sizeof(target), "unix:%s", b.path);
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = target;
	grpc_client *c;
	pemba_error err;
	if (grpc_client_connect(&o, &c, &err) != 0)
		fail_msg("connect: %s", err.message);
	assert_echo(c, "over a unix socket");
	stream_count sc = {0, true};
	grpc_status st;
	assert_int_equal(grpc_client_server_streaming(
	                     c, "/test.Echo/ServerStream", NULL, 0, 30000,
	                     "100", 3, count_message, &sc, &st),
	                 GRPC_STATUS_OK);
	assert_int_equal(sc.count, 100);
	assert_true(sc.in_order);
	grpc_status_clear(&st);
	grpc_client_close(c);
	pthread_join(b.thread, NULL);
	close(b.listen_fd);

	/* nobody listening: a clear connection error, not a hang */
	unlink(b.path);
	assert_int_equal(grpc_client_connect(&o, &c, &err), PEMBA_EIO);
	assert_non_null(strstr(err.message, b.path));
	o.target = "unix:";
	assert_int_equal(grpc_client_connect(&o, &c, &err), PEMBA_EINVAL);
	stop_server(f);
}

static int stop_after_three(void *ctx, const uint8_t *data, size_t len)
{
	return ++*(int *)ctx >= 3;
}

static void test_client_cancelling_a_stream_keeps_the_connection(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	int seen = 0;
	grpc_status st;
	int code = grpc_client_server_streaming(c, "/test.Echo/ServerStream",
	                                        NULL, 0, 30000, "1000000", 7,
	                                        stop_after_three, &seen, &st);
	assert_int_equal(code, GRPC_STATUS_CANCELLED);
	assert_int_equal(seen, 3);
	grpc_status_clear(&st);
	assert_echo(c, "still here");
	grpc_client_close(c);
	stop_server(f);
}

typedef struct producer {
	int left;
	char text[32];
} producer;

static int next_request(void *ctx, const void **data, size_t *len)
{
	producer *p = ctx;
	if (p->left == 0)
		return 0;
	p->left--;
	memset(p->text, 'a', 10);
	*data = p->text;
	*len = 10;
	return 1;
}

static void test_client_streaming_counts_every_request(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	/* 300k messages of 15 wire bytes: several times the stream window,
	 * so stream flow control must be given back as the handler reads */
	producer p = {.left = 300000};
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_streaming(c, "/test.Echo/ClientStream", NULL, 0,
	                                 60000, next_request, &p, NULL, NULL,
	                                 &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_OK);
	assert_int_equal(len, strlen("count=300000 bytes=3000000"));
	assert_memory_equal(resp, "count=300000 bytes=3000000", len);
	free(resp);
	/* zero requests is a valid client stream */
	p.left = 0;
	code = grpc_client_streaming(c, "/test.Echo/ClientStream", NULL, 0,
	                             5000, next_request, &p, NULL, NULL, &resp,
	                             &len, &st);
	assert_int_equal(code, GRPC_STATUS_OK);
	assert_memory_equal(resp, "count=0 bytes=0", len);
	free(resp);
	grpc_client_close(c);
	stop_server(f);
}

static int count_any(void *ctx, const uint8_t *data, size_t len)
{
	++*(int *)ctx;
	return 0;
}

static void test_bidi_streaming_echoes_each_request(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	producer p = {.left = 500};
	int echoed = 0;
	grpc_status st;
	int code = grpc_client_streaming(c, "/test.Echo/Bidi", NULL, 0, 10000,
	                                 next_request, &p, count_any, &echoed,
	                                 NULL, NULL, &st);
	assert_int_equal(code, GRPC_STATUS_OK);
	assert_int_equal(echoed, 500);
	grpc_client_close(c);
	stop_server(f);
}

static void
test_200_concurrent_streams_are_not_blocked_by_a_slow_one(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	enum { N = 200 };
	pthread_mutex_lock(&state.lock);
	state.gate_target = N - 1;
	pthread_mutex_unlock(&state.lock);
	grpc_unary_call calls[N];
	char texts[N][16];
	memset(calls, 0, sizeof(calls));
	/* The gate handler holds its worker until the 199 echoes finished:
	 * it can only succeed if they ran while it was blocked. */
	calls[0].path = "/test.Echo/Gate";
	calls[0].request = "";
	for (int i = 1; i < N; i++) {
		snprintf(texts[i], sizeof(texts[i]), "call %d", i);
		calls[i].path = "/test.Echo/Unary";
		calls[i].request = texts[i];
		calls[i].request_len = strlen(texts[i]);
	}
	int ok = grpc_client_unary_batch(c, NULL, 0, 30000, calls, N);
	if (calls[0].status.code != GRPC_STATUS_OK)
		fail_msg("gate: %s", calls[0].status.message);
	assert_int_equal(ok, N);
	for (int i = 1; i < N; i++) {
		assert_int_equal(calls[i].response_len, strlen(texts[i]));
		assert_memory_equal(calls[i].response, texts[i],
		                    calls[i].response_len);
	}
	for (int i = 0; i < N; i++) {
		free(calls[i].response);
		grpc_status_clear(&calls[i].status);
	}
	grpc_client_close(c);
	stop_server(f);
}

static void
test_deadline_exceeded_finishes_the_call_and_tells_the_handler(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Slow", NULL, 0, 200, "5000",
	                             4, &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_DEADLINE_EXCEEDED);
	/* sent by the server, not the client's own give-up */
	assert_string_equal(st.message, "deadline exceeded");
	grpc_status_clear(&st);
	pthread_mutex_lock(&state.lock);
	while (!state.slow_returned)
		pthread_cond_wait(&state.cond, &state.lock);
	assert_true(state.slow_saw_deadline);
	assert_true(state.slow_saw_cancel);
	pthread_mutex_unlock(&state.lock);
	assert_echo(c, "after deadline");
	grpc_client_close(c);
	stop_server(f);
}

static void
test_unknown_method_is_unimplemented_and_connection_serves_on(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Nope", NULL, 0, 0, "x", 1,
	                             &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_UNIMPLEMENTED);
	assert_non_null(strstr(st.message, "/test.Echo/Nope"));
	grpc_status_clear(&st);
	assert_echo(c, "next call");
	grpc_client_close(c);
	stop_server(f);
}

static void test_oversize_message_is_resource_exhausted(void **unused)
{
	grpc_server_options o;
	grpc_server_options_init(&o);
	o.max_receive_message_size = 1000;
	fixture *f = start_server_with(&o);
	grpc_client *c = connect_to(f);
	char big[1001];
	memset(big, 'x', sizeof(big));
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Unary", NULL, 0, 0, big,
	                             sizeof(big), &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(st.message, "larger than max (1001 vs. 1000)"));
	grpc_status_clear(&st);
	/* client streaming: refused mid-stream, handler sees an error */
	code = grpc_client_unary(c, "/test.Echo/ClientStream", NULL, 0, 0, big,
	                         sizeof(big), &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	grpc_status_clear(&st);
	/* exactly the limit passes */
	big[1000] = 0;
	assert_echo(c, big);
	grpc_client_close(c);
	stop_server(f);
}

static void test_default_limit_is_4_mib(void **unused)
{
	fixture *f = start_server();
	grpc_client *c = connect_to(f);
	size_t n = 4 * 1024 * 1024 + 1;
	char *big = calloc(1, n);
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Unary", NULL, 0, 0, big, n,
	                             &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	grpc_status_clear(&st);
	assert_int_equal(grpc_client_unary(c, "/test.Echo/Unary", NULL, 0, 0,
	                                   big, n - 1, &resp, &len, &st),
	                 GRPC_STATUS_OK);
	assert_int_equal(len, n - 1);
	free(resp);
	free(big);
	grpc_client_close(c);
	stop_server(f);
}

static void
test_malformed_framing_gets_an_error_and_server_serves_on(void **unused)
{
	fixture *f = start_server();
	/* prefix declares 100 bytes, 3 follow, then END_STREAM */
	uint8_t truncated[] = {0, 0, 0, 0, 100, 'a', 'b', 'c'};
	raw_result r = raw_call(f->port, "/test.Echo/Unary", truncated,
	                        sizeof(truncated), NULL, NULL);
	assert_int_equal(r.grpc_status, GRPC_STATUS_INTERNAL);
	/* a prefix cut short */
	uint8_t short_prefix[] = {0, 0, 0};
	r = raw_call(f->port, "/test.Echo/Unary", short_prefix,
	             sizeof(short_prefix), NULL, NULL);
	assert_int_equal(r.grpc_status, GRPC_STATUS_INTERNAL);
	/* no message at all for a unary call */
	r = raw_call(f->port, "/test.Echo/Unary", "", 0, NULL, NULL);
	assert_int_equal(r.grpc_status, GRPC_STATUS_INTERNAL);
	/* two messages for a unary call */
	uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
	r = raw_call(f->port, "/test.Echo/Unary", two, sizeof(two), NULL, NULL);
	assert_int_equal(r.grpc_status, GRPC_STATUS_INTERNAL);
	/* compressed flag without an encoding */
	uint8_t compressed[] = {1, 0, 0, 0, 1, 'a'};
	r = raw_call(f->port, "/test.Echo/Unary", compressed,
	             sizeof(compressed), NULL, NULL);
	assert_int_equal(r.grpc_status, GRPC_STATUS_INTERNAL);
	/* an encoding we do not have */
	r = raw_call(f->port, "/test.Echo/Unary", compressed,
	             sizeof(compressed), "grpc-encoding", "gzip");
	assert_int_equal(r.grpc_status, GRPC_STATUS_UNIMPLEMENTED);
	/* malformed grpc-timeout */
	uint8_t good[] = {0, 0, 0, 0, 2, 'o', 'k'};
	r = raw_call(f->port, "/test.Echo/Unary", good, sizeof(good),
	             "grpc-timeout", "soon");
	assert_int_equal(r.grpc_status, GRPC_STATUS_INTERNAL);
	/* a huge header block */
	char *huge = malloc(20000);
	memset(huge, 'h', 19999);
	huge[19999] = 0;
	r = raw_call(f->port, "/test.Echo/Unary", good, sizeof(good), "x-big",
	             huge);
	free(huge);
	assert_int_not_equal(r.grpc_status, GRPC_STATUS_OK);
	/* and the server still serves, raw and through the client */
	r = raw_call(f->port, "/test.Echo/Unary", good, sizeof(good), NULL,
	             NULL);
	assert_int_equal(r.grpc_status, GRPC_STATUS_OK);
	assert_int_equal(r.http_status, 200);
	grpc_client *c = connect_to(f);
	assert_echo(c, "still serving");
	grpc_client_close(c);
	stop_server(f);
}

/* ===================================================================== */
/* TLS                                                                   */
/* ===================================================================== */

static void test_tls_with_alpn_h2_and_a_self_signed_certificate(void **unused)
{
	char dir[] = "/tmp/pemba-grpc-tls-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char cert[128], key[128], cmd[1024];
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(
	    cmd, sizeof(cmd),
	    "openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost "
	    "-addext subjectAltName=IP:127.0.0.1,DNS:localhost "
	    "-keyout %s -out %s 2>/dev/null",
	    key, cert);
	assert_int_equal(system(cmd), 0);

	grpc_server_options o;
	grpc_server_options_init(&o);
	o.tls_cert_path = cert;
	o.tls_key_path = key;
	fixture *f = start_server_with(&o);

	grpc_client_options co;
	grpc_client_options_init(&co);
	co.target = f->target;
	co.tls = true;
	co.ca_file = cert;
	grpc_client *c;
	pemba_error err;
	if (grpc_client_connect(&co, &c, &err) != 0)
		fail_msg("tls connect: %s", err.message);
	assert_echo(c, "over tls");
	stream_count sc = {0, true};
	grpc_status st;
	assert_int_equal(grpc_client_server_streaming(
	                     c, "/test.Echo/ServerStream", NULL, 0, 30000,
	                     "2000", 4, count_message, &sc, &st),
	                 GRPC_STATUS_OK);
	assert_int_equal(sc.count, 2000);
	grpc_client_close(c);

	/* verification on without the CA: refused */
	co.ca_file = NULL;
	assert_int_not_equal(grpc_client_connect(&co, &c, &err), 0);
	assert_non_null(strstr(err.message, "TLS handshake"));
	/* skip-verify: accepted */
	co.insecure_skip_verify = true;
	assert_int_equal(grpc_client_connect(&co, &c, &err), 0);
	assert_echo(c, "insecure");
	grpc_client_close(c);
	/* cleartext client on a TLS port fails, server keeps serving */
	co.tls = false;
	if (grpc_client_connect(&co, &c, &err) == 0) {
		uint8_t *resp;
		size_t len;
		assert_int_not_equal(grpc_client_unary(c, "/test.Echo/Unary",
		                                       NULL, 0, 2000, "x", 1,
		                                       &resp, &len, &st),
		                     GRPC_STATUS_OK);
		grpc_status_clear(&st);
		grpc_client_close(c);
	}
	co.tls = true;
	assert_int_equal(grpc_client_connect(&co, &c, &err), 0);
	assert_echo(c, "again");
	grpc_client_close(c);
	stop_server(f);

	/* a certificate without its key is refused at creation */
	grpc_server_options_init(&o);
	o.listen_addr = "127.0.0.1:0";
	o.tls_cert_path = cert;
	grpc_server *s;
	assert_int_equal(grpc_server_new(&o, &s, &err), PEMBA_EINVAL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* ===================================================================== */
/* Shutdown and authentication                                           */
/* ===================================================================== */

typedef struct slow_client {
	fixture *f;
	int code;
	char response[16];
} slow_client;

static void *slow_client_thread(void *arg)
{
	slow_client *sc = arg;
	grpc_client *c = connect_to(sc->f);
	uint8_t *resp = NULL;
	size_t len = 0;
	grpc_status st;
	sc->code = grpc_client_unary(c, "/test.Echo/Slow", NULL, 0, 10000,
	                             "400", 3, &resp, &len, &st);
	if (resp != NULL && len < sizeof(sc->response))
		memcpy(sc->response, resp, len);
	free(resp);
	grpc_status_clear(&st);
	grpc_client_close(c);
	return NULL;
}

static void test_graceful_shutdown_finishes_an_in_flight_call(void **unused)
{
	fixture *f = start_server();
	slow_client sc = {.f = f, .code = -1};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, slow_client_thread, &sc), 0);
	pthread_mutex_lock(&state.lock);
	while (!state.slow_started)
		pthread_cond_wait(&state.cond, &state.lock);
	pthread_mutex_unlock(&state.lock);
	grpc_server_shutdown(f->server);
	grpc_server_shutdown(f->server); /* twice is harmless */
	pthread_join(f->thread, NULL);
	assert_int_equal(f->run_result, 0);
	pthread_join(t, NULL);
	assert_int_equal(sc.code, GRPC_STATUS_OK);
	assert_string_equal(sc.response, "slept");
	/* no longer accepting */
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = f->target;
	grpc_client *c;
	pemba_error err;
	assert_int_not_equal(grpc_client_connect(&o, &c, &err), 0);
	grpc_server_free(f->server);
	free(f);
}

static void test_shutdown_grace_is_bounded(void **unused)
{
	grpc_server_options o;
	grpc_server_options_init(&o);
	o.shutdown_timeout_ms = 200;
	fixture *f = start_server_with(&o);
	slow_client sc = {.f = f, .code = -1};
	pthread_t t;
	struct timespec t0, t1;
	assert_int_equal(pthread_create(&t, NULL, slow_client_thread, &sc), 0);
	pthread_mutex_lock(&state.lock);
	while (!state.slow_started)
		pthread_cond_wait(&state.cond, &state.lock);
	pthread_mutex_unlock(&state.lock);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	grpc_server_shutdown(f->server);
	pthread_join(f->thread, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_join(t, NULL);
	/* Slow asked for 400 ms, grace is 200 ms: cut off */
	assert_int_not_equal(sc.code, GRPC_STATUS_OK);
	double secs = (double)(t1.tv_sec - t0.tv_sec) +
	              (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs < 2.0);
	pthread_mutex_lock(&state.lock);
	while (!state.slow_returned)
		pthread_cond_wait(&state.cond, &state.lock);
	assert_true(state.slow_saw_cancel);
	pthread_mutex_unlock(&state.lock);
	grpc_server_free(f->server);
	free(f);
}

static int auth_hook(grpc_call *call, void *ctx, const char **message)
{
	const char *want = ctx;
	const char *got = grpc_call_metadata(call, "authorization");
	if (got == NULL) {
		*message = "missing authorization";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	if (!grpc_const_time_equal(got, strlen(got), want, strlen(want))) {
		*message = "invalid preshared key";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	return GRPC_STATUS_OK;
}

static void test_auth_hook_refusal_is_unauthenticated(void **unused)
{
	grpc_server_options o;
	grpc_server_options_init(&o);
	o.auth = auth_hook;
	o.auth_ctx = "Bearer s3cret";
	fixture *f = start_server_with(&o);
	grpc_client *c = connect_to(f);
	uint8_t *resp;
	size_t len;
	grpc_status st;
	int code = grpc_client_unary(c, "/test.Echo/Unary", NULL, 0, 0, "x", 1,
	                             &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_UNAUTHENTICATED);
	assert_string_equal(st.message, "missing authorization");
	grpc_status_clear(&st);
	grpc_metadata wrong = {"authorization", "Bearer nope", 0};
	code = grpc_client_unary(c, "/test.Echo/Unary", &wrong, 1, 0, "x", 1,
	                         &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_UNAUTHENTICATED);
	grpc_status_clear(&st);
	grpc_metadata right = {"authorization", "Bearer s3cret", 0};
	code = grpc_client_unary(c, "/test.Echo/Unary", &right, 1, 0, "x", 1,
	                         &resp, &len, &st);
	assert_int_equal(code, GRPC_STATUS_OK);
	free(resp);
	grpc_client_close(c);
	stop_server(f);
}

static void test_many_connections_are_served(void **unused)
{
	fixture *f = start_server();
	enum { N = 50 };
	grpc_client *clients[N];
	for (int i = 0; i < N; i++)
		clients[i] = connect_to(f);
	for (int i = N - 1; i >= 0; i--)
		assert_echo(clients[i], "conn");
	for (int i = 0; i < N; i++)
		grpc_client_close(clients[i]);
	stop_server(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_timeout_parsing_accepts_every_unit),
	    cmocka_unit_test(test_grpc_message_percent_encoding_round_trips),
	    cmocka_unit_test(test_const_time_equal_compares_content_and_length),
	    cmocka_unit_test(test_unary_echo_round_trips_bytes),
	    cmocka_unit_test(
	        test_status_message_is_percent_encoded_with_trailers),
	    cmocka_unit_test(test_metadata_reaches_the_handler),
	    cmocka_unit_test(
	        test_server_streaming_delivers_10k_messages_in_order),
	    cmocka_unit_test(
	        test_client_cancelling_a_stream_keeps_the_connection),
	    cmocka_unit_test(test_client_connects_to_a_unix_socket_target),
	    cmocka_unit_test(test_client_streaming_counts_every_request),
	    cmocka_unit_test(test_bidi_streaming_echoes_each_request),
	    cmocka_unit_test(
	        test_200_concurrent_streams_are_not_blocked_by_a_slow_one),
	    cmocka_unit_test(
	        test_deadline_exceeded_finishes_the_call_and_tells_the_handler),
	    cmocka_unit_test(
	        test_unknown_method_is_unimplemented_and_connection_serves_on),
	    cmocka_unit_test(test_oversize_message_is_resource_exhausted),
	    cmocka_unit_test(test_default_limit_is_4_mib),
	    cmocka_unit_test(
	        test_malformed_framing_gets_an_error_and_server_serves_on),
	    cmocka_unit_test(
	        test_tls_with_alpn_h2_and_a_self_signed_certificate),
	    cmocka_unit_test(test_graceful_shutdown_finishes_an_in_flight_call),
	    cmocka_unit_test(test_shutdown_grace_is_bounded),
	    cmocka_unit_test(test_auth_hook_refusal_is_unauthenticated),
	    cmocka_unit_test(test_many_connections_are_served),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
