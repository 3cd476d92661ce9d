/*
 * grpc_fixture.c -- see grpc_fixture.h.
 */
#include "grpc_fixture.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALL_TIMEOUT_MS 10000

/* A fixture that cannot be set up ends the test program: nothing after
 * it could mean anything. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("grpc_fixture: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static void *run_thread(void *arg)
{
	pemba_error err = {0};
	server_run(arg, &err);
	return NULL;
}

void test_server_start(test_server *t, server_options o)
{
	memset(t, 0, sizeof(*t));
	o.grpc_addr = "127.0.0.1:0";
	if (o.workers == 0)
		o.workers = 2;
	if (o.shutdown_timeout_ms == 0)
		o.shutdown_timeout_ms = 2000;
	pemba_error err = {0};
	if (server_new(&o, &t->server, &err) != 0)
		die("server_new: %s", err.message);
	if (pthread_create(&t->thread, NULL, run_thread, t->server) != 0)
		die("pthread_create failed");
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d",
	         server_port(t->server));
	grpc_client_options co;
	grpc_client_options_init(&co);
	co.target = target;
	if (grpc_client_connect(&co, &t->client, &err) != 0)
		die("connect: %s", err.message);
}

void test_server_stop(test_server *t)
{
	if (t->client)
		grpc_client_close(t->client);
	if (t->server) {
		server_shutdown(t->server);
		pthread_join(t->thread, NULL);
		server_free(t->server);
	}
	memset(t, 0, sizeof(*t));
}

static void take_status(test_result *r, grpc_status *st)
{
	r->code = st->code;
	snprintf(r->message, sizeof(r->message), "%s",
	         st->message ? st->message : "");
	grpc_status_clear(st);
}

static uint8_t *pack(const ProtobufCMessage *req, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(*len + 1);
	if (buf == NULL)
		die("out of memory");
	protobuf_c_message_pack(req, buf);
	return buf;
}

test_result test_call(grpc_client *c, const grpc_metadata *md, size_t nmd,
                      const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *d)
{
	test_result r = {0};
	size_t len;
	uint8_t *buf = pack(req, &len);
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	grpc_client_unary(c, path, md, nmd, CALL_TIMEOUT_MS, buf, len, &resp,
	                  &resp_len, &st);
	take_status(&r, &st);
	if (r.code == GRPC_STATUS_OK && d) {
		r.resp = protobuf_c_message_unpack(d, NULL, resp_len, resp);
		if (r.resp == NULL)
			die("%s: cannot unpack the response", path);
	}
	free(resp);
	free(buf);
	return r;
}

void test_result_done(test_result *r)
{
	if (r->resp)
		protobuf_c_message_free_unpacked(r->resp, NULL);
	r->resp = NULL;
}

static int on_stream_message(void *ctx, const uint8_t *data, size_t len)
{
	test_stream *s = ctx;
	ProtobufCMessage *m = protobuf_c_message_unpack(s->d, NULL, len, data);
	if (m == NULL)
		die("cannot unpack a streamed message");
	if (s->n < TEST_STREAM_MAX)
		s->msgs[s->n++] = m;
	else
		protobuf_c_message_free_unpacked(m, NULL);
	return s->stop_after && s->n >= s->stop_after;
}

void test_call_stream(grpc_client *c, const grpc_metadata *md, size_t nmd,
                      const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *d, test_stream *s)
{
	size_t len;
	uint8_t *buf = pack(req, &len);
	grpc_status st = {0};
	s->d = d;
	grpc_client_server_streaming(c, path, md, nmd, CALL_TIMEOUT_MS, buf,
	                             len, on_stream_message, s, &st);
	take_status(&s->r, &st);
	free(buf);
}

void test_stream_done(test_stream *s)
{
	for (size_t i = 0; i < s->n; i++)
		protobuf_c_message_free_unpacked(s->msgs[i], NULL);
	s->n = 0;
}
