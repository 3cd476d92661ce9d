/*
 * grpc_fixture.h -- a pemba server on 127.0.0.1 (ephemeral port) in a
 * thread of the test process, a client connected to it, and protobuf
 * calls that return the status and the unpacked response.  Used by the
 * API tests; a fixture that cannot be set up aborts the program.
 */
#ifndef PEMBA_TEST_GRPC_FIXTURE_H
#define PEMBA_TEST_GRPC_FIXTURE_H

#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stddef.h>

#include "api/grpc.h"
#include "server/server.h"

typedef struct test_server {
	pemba_server *server;
	pthread_t thread;
	grpc_client *client;
} test_server;

/* Starts a server with `o` (grpc_addr is forced to 127.0.0.1:0), runs it
 * in a thread and connects a client. */
void test_server_start(test_server *t, server_options o);
/* Closes the client, shuts the server down and frees it (t zeroed). */
void test_server_stop(test_server *t);

/* The outcome of a call: status code and message, and the response
 * (unpacked when the status is OK and a descriptor was given). */
typedef struct test_result {
	int code;
	char message[1024];
	ProtobufCMessage *resp;
} test_result;

/* A unary call with `nmd` metadata entries (e.g. the authorization). */
test_result test_call(grpc_client *c, const grpc_metadata *md, size_t nmd,
                      const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *d);
/* Frees r->resp. */
void test_result_done(test_result *r);

/* The messages of a server-streaming call (up to TEST_STREAM_MAX kept). */
#define TEST_STREAM_MAX 64
typedef struct test_stream {
	test_result r;
	ProtobufCMessage *msgs[TEST_STREAM_MAX];
	size_t n;
	size_t stop_after; /* cancel after this many (0: never) */
	const ProtobufCMessageDescriptor *d;
} test_stream;

void test_call_stream(grpc_client *c, const grpc_metadata *md, size_t nmd,
                      const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *d, test_stream *s);
/* Frees the messages (s->r keeps the status). */
void test_stream_done(test_stream *s);

#endif
