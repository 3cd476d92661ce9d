/*
 * test_services.c -- the gRPC services end to end: a pemba server started
 * in-process on an ephemeral port (src/server) over a file datastore and a
 * memory datastore, driven with the transport's client and protobuf-c
 * messages.  Success paths of every RPC, SpiceDB's status codes for bad
 * input, ZedTokens and consistency, auth, restart durability, malformed
 * bytes, serve-testing isolation.
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

#include <cmocka.h>

#include "api/grpc.h"
#include "api/struct_json.h"
#include "api/zedtoken.h"
#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "pg_fixture.h"
#include "server/server.h"

#define KEY "test-key-1"
#define PS "/authzed.api.v1.PermissionsService/"
#define SCHEMA_PATH "/authzed.api.v1.SchemaService/"

static const char *SCHEMA = "definition user {}\n"
                            "definition group {\n\trelation member: user\n}\n"
                            "definition doc {\n"
                            "\trelation owner: user\n"
                            "\trelation viewer: user | group#member | user:*\n"
                            "\tpermission view = viewer + owner\n"
                            "\tpermission edit = owner\n"
                            "}\n";

/* ============================================================ fixture */

typedef struct fixture {
	pemba_server *server;
	pthread_t thread;
	grpc_client *client;
	char token[128]; /* bearer token sent, "" for none */
	char dir[64];
	char uri[160];
} fixture;

static void *run_thread(void *arg)
{
	pemba_error err = {0};
	server_run(arg, &err);
	return NULL;
}

static bool start_read_only;
static int64_t start_gc_window_seconds, start_gc_interval_ms;

static void start(fixture *f, const char *uri, bool testing, bool keys)
{
	static const char *const key_list[] = {KEY, "other-key"};
	server_options o = {0};
	o.grpc_addr = "127.0.0.1:0";
	o.datastore = pg_fixture_uri(uri);
	o.testing = testing;
	o.keys = key_list;
	o.nkeys = keys ? 2 : 0;
	o.workers = 4;
	o.shutdown_timeout_ms = 2000;
	o.read_only = start_read_only;
	o.gc_window_seconds = start_gc_window_seconds;
	o.gc_interval_ms = start_gc_interval_ms;
	pemba_error err = {0};
	if (server_new(&o, &f->server, &err) != 0)
		fail_msg("server_new: %s", err.message);
	assert_int_equal(
	    pthread_create(&f->thread, NULL, run_thread, f->server), 0);
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d",
	         server_port(f->server));
	grpc_client_options co;
	grpc_client_options_init(&co);
	co.target = target;
	if (grpc_client_connect(&co, &f->client, &err) != 0)
		fail_msg("connect: %s", err.message);
}

static void stop(fixture *f)
{
	grpc_client_close(f->client);
	f->client = NULL;
	server_shutdown(f->server);
	pthread_join(f->thread, NULL);
	server_free(f->server);
	f->server = NULL;
}

static fixture *new_file_fixture(void)
{
	fixture *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/pemba-svc-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->uri, sizeof(f->uri), "sqlite://%s/p.db", f->dir);
	snprintf(f->token, sizeof(f->token), "%s", KEY);
	start(f, f->uri, false, true);
	return f;
}

static void free_file_fixture(fixture *f)
{
	stop(f);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

/* ============================================================ calls */

typedef struct result {
	int code;
	char message[1024];
	ProtobufCMessage *resp;
} result;

static size_t metadata(fixture *f, grpc_metadata *md, char *buf, size_t n)
{
	if (!f->token[0])
		return 0;
	snprintf(buf, n, "Bearer %s", f->token);
	md[0] = (grpc_metadata){"authorization", buf, 0};
	return 1;
}

static void take_status(result *r, grpc_status *st)
{
	r->code = st->code;
	snprintf(r->message, sizeof(r->message), "%s",
	         st->message ? st->message : "");
	grpc_status_clear(st);
}

/* Unary call with raw request bytes. */
static result call_raw(fixture *f, const char *path, const void *req,
                       size_t len, const ProtobufCMessageDescriptor *d)
{
	result r = {0};
	grpc_metadata md[1];
	char auth[200];
	size_t nmd = metadata(f, md, auth, sizeof(auth));
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	grpc_client_unary(f->client, path, md, nmd, 10000, req, len, &resp,
	                  &resp_len, &st);
	take_status(&r, &st);
	if (r.code == GRPC_STATUS_OK && d) {
		r.resp = protobuf_c_message_unpack(d, NULL, resp_len, resp);
		assert_non_null(r.resp);
	}
	free(resp);
	return r;
}

static result call(fixture *f, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *d)
{
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(len + 1);
	protobuf_c_message_pack(req, buf);
	result r = call_raw(f, path, buf, len, d);
	free(buf);
	return r;
}

static void done(result *r)
{
	if (r->resp)
		protobuf_c_message_free_unpacked(r->resp, NULL);
	r->resp = NULL;
}

#define expect_status(r, want)                                                 \
	do {                                                                   \
		if ((r).code != (want))                                        \
			fail_msg("status %s (%s), want %s",                    \
			         grpc_status_name((r).code), (r).message,      \
			         grpc_status_name(want));                      \
	} while (0)

/* Collects the messages of a server-streaming call. */
typedef struct stream_result {
	result r;
	ProtobufCMessage *msgs[256];
	size_t n;
	size_t stop_after; /* cancel after this many (0: never) */
	const ProtobufCMessageDescriptor *d;
} stream_result;

static int on_stream_message(void *ctx, const uint8_t *data, size_t len)
{
	stream_result *s = ctx;
	ProtobufCMessage *m = protobuf_c_message_unpack(s->d, NULL, len, data);
	assert_non_null(m);
	if (s->n < 256)
		s->msgs[s->n++] = m;
	else
		protobuf_c_message_free_unpacked(m, NULL);
	return s->stop_after && s->n >= s->stop_after;
}

static void call_stream(fixture *f, const char *path,
                        const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *d, stream_result *s,
                        int timeout_ms)
{
	grpc_metadata md[1];
	char auth[200];
	size_t nmd = metadata(f, md, auth, sizeof(auth));
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(len + 1);
	protobuf_c_message_pack(req, buf);
	grpc_status st = {0};
	s->d = d;
	grpc_client_server_streaming(f->client, path, md, nmd, timeout_ms, buf,
	                             len, on_stream_message, s, &st);
	take_status(&s->r, &st);
	free(buf);
}

static void stream_done(stream_result *s)
{
	for (size_t i = 0; i < s->n; i++)
		protobuf_c_message_free_unpacked(s->msgs[i], NULL);
	s->n = 0;
}

/* ============================================================ builders */

static result write_schema(fixture *f, const char *text)
{
	Authzed__Api__V1__WriteSchemaRequest req =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	req.schema = (char *)text;
	return call(f, SCHEMA_PATH "WriteSchema", &req.base,
	            &authzed__api__v1__write_schema_response__descriptor);
}

/* A relationship message with storage. */
typedef struct rel_msg {
	Authzed__Api__V1__Relationship rel;
	Authzed__Api__V1__ObjectReference res, subj_obj;
	Authzed__Api__V1__SubjectReference subj;
	Authzed__Api__V1__RelationshipUpdate update;
	char buf[1100]; /* ids up to about 1000 bytes */
} rel_msg;

/* Parses "type:id#rel@type:id[#rel]" (test input, trusted). */
static void rel_init(rel_msg *m, const char *text)
{
	authzed__api__v1__relationship__init(&m->rel);
	authzed__api__v1__object_reference__init(&m->res);
	authzed__api__v1__object_reference__init(&m->subj_obj);
	authzed__api__v1__subject_reference__init(&m->subj);
	authzed__api__v1__relationship_update__init(&m->update);
	snprintf(m->buf, sizeof(m->buf), "%s", text);
	char *at = strchr(m->buf, '@');
	*at = '\0';
	char *hash = strchr(m->buf, '#');
	*hash = '\0';
	char *colon = strchr(m->buf, ':');
	*colon = '\0';
	m->res.object_type = m->buf;
	m->res.object_id = colon + 1;
	m->rel.relation = hash + 1;
	char *s = at + 1;
	char *shash = strchr(s, '#');
	if (shash) {
		*shash = '\0';
		m->subj.optional_relation = shash + 1;
	}
	colon = strchr(s, ':');
	*colon = '\0';
	m->subj_obj.object_type = s;
	m->subj_obj.object_id = colon + 1;
	m->subj.object = &m->subj_obj;
	m->rel.resource = &m->res;
	m->rel.subject = &m->subj;
	m->update.relationship = &m->rel;
}

static result write_rels(fixture *f, int op, const char *const *rels, size_t n)
{
	rel_msg *msgs = calloc(n + 1, sizeof(*msgs));
	Authzed__Api__V1__RelationshipUpdate **ups =
	    calloc(n + 1, sizeof(*ups));
	for (size_t i = 0; i < n; i++) {
		rel_init(&msgs[i], rels[i]);
		msgs[i].update.operation = op;
		ups[i] = &msgs[i].update;
	}
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = ups;
	req.n_updates = n;
	result r =
	    call(f, PS "WriteRelationships", &req.base,
	         &authzed__api__v1__write_relationships_response__descriptor);
	free(msgs);
	free(ups);
	return r;
}

#define CREATE                                                                 \
	AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE
#define TOUCH AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH
#define DELETE                                                                 \
	AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE

/* Writes and returns the written_at token (caller frees). */
static char *write_ok(fixture *f, int op, const char *rel)
{
	result r = write_rels(f, op, &rel, 1);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__WriteRelationshipsResponse *resp = (void *)r.resp;
	assert_non_null(resp->written_at);
	char *tok = strdup(resp->written_at->token);
	done(&r);
	return tok;
}

enum { AT_HEAD, AT_EXACT, AT_LEAST };

/* CheckPermission "doc:id#perm@user:id" with a consistency. */
static result check(fixture *f, const char *text, int mode, const char *token)
{
	rel_msg m;
	rel_init(&m, text);
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	Authzed__Api__V1__Consistency c = AUTHZED__API__V1__CONSISTENCY__INIT;
	Authzed__Api__V1__ZedToken zt = AUTHZED__API__V1__ZED_TOKEN__INIT;
	zt.token = (char *)token;
	if (mode == AT_EXACT) {
		c.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
		c.at_exact_snapshot = &zt;
	} else if (mode == AT_LEAST) {
		c.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH;
		c.at_least_as_fresh = &zt;
	} else {
		c.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
		c.fully_consistent = 1;
	}
	req.consistency = &c;
	req.resource = &m.res;
	req.permission = m.rel.relation;
	req.subject = &m.subj;
	return call(f, PS "CheckPermission", &req.base,
	            &authzed__api__v1__check_permission_response__descriptor);
}

#define HAS                                                                    \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION
#define NO                                                                     \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION

static int check_answer(fixture *f, const char *text)
{
	result r = check(f, text, AT_HEAD, NULL);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__CheckPermissionResponse *resp = (void *)r.resp;
	assert_non_null(resp->checked_at);
	assert_true(strlen(resp->checked_at->token) > 0);
	int p = resp->permissionship;
	done(&r);
	return p;
}

static void setup_data(fixture *f)
{
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	static const char *const rels[] = {
	    "doc:readme#owner@user:anne",         "doc:readme#viewer@user:bob",
	    "doc:readme#viewer@group:eng#member", "group:eng#member@user:carl",
	    "doc:other#viewer@user:bob",          "doc:public#viewer@user:*",
	};
	r = write_rels(f, TOUCH, rels, 6);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
}

/* ============================================================ tests */

static void test_schema_read_write_and_not_found(void **state)
{
	fixture *f = new_file_fixture();
	Authzed__Api__V1__ReadSchemaRequest rs =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	result r = call(f, SCHEMA_PATH "ReadSchema", &rs.base,
	                &authzed__api__v1__read_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_NOT_FOUND);
	r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	assert_non_null(
	    ((Authzed__Api__V1__WriteSchemaResponse *)r.resp)->written_at);
	done(&r);
	r = call(f, SCHEMA_PATH "ReadSchema", &rs.base,
	         &authzed__api__v1__read_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__ReadSchemaResponse *resp = (void *)r.resp;
	assert_non_null(strstr(resp->schema_text, "permission view"));
	assert_non_null(resp->read_at);
	done(&r);
	/* A syntax error names line:column; a type error is
	 * FAILED_PRECONDITION. */
	r = write_schema(f, "definition user {\n\trelation x: \n}\n");
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	r = write_schema(f, "definition doc {\n\trelation viewer: usr\n}\n");
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
	free_file_fixture(f);
}

static void test_write_check_and_error_statuses(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	assert_int_equal(check_answer(f, "doc:readme#view@user:anne"), HAS);
	assert_int_equal(check_answer(f, "doc:readme#view@user:carl"), HAS);
	assert_int_equal(check_answer(f, "doc:readme#edit@user:bob"), NO);
	assert_int_equal(check_answer(f, "doc:public#view@user:zed"), HAS);

	/* CREATE of an existing relationship. */
	const char *dup = "doc:readme#owner@user:anne";
	result r = write_rels(f, CREATE, &dup, 1);
	expect_status(r, GRPC_STATUS_ALREADY_EXISTS);
	/* Unknown definition. */
	const char *unknown = "folder:x#owner@user:anne";
	r = write_rels(f, TOUCH, &unknown, 1);
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
	r = check(f, "folder:x#view@user:anne", AT_HEAD, NULL);
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
	/* Malformed identifier. */
	const char *bad = "doc:has space#owner@user:anne";
	r = write_rels(f, TOUCH, &bad, 1);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	/* Missing operation. */
	r = write_rels(f, 0, &dup, 1);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);

	/* A failed precondition changes nothing. */
	rel_msg m;
	rel_init(&m, "doc:readme#owner@user:zoe");
	m.update.operation = TOUCH;
	Authzed__Api__V1__RelationshipUpdate *ups[] = {&m.update};
	Authzed__Api__V1__RelationshipFilter flt =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	flt.resource_type = "doc";
	flt.optional_resource_id = "nonexistent";
	Authzed__Api__V1__Precondition pre =
	    AUTHZED__API__V1__PRECONDITION__INIT;
	pre.operation =
	    AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_MATCH;
	pre.filter = &flt;
	Authzed__Api__V1__Precondition *pres[] = {&pre};
	Authzed__Api__V1__WriteRelationshipsRequest wr =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	wr.updates = ups;
	wr.n_updates = 1;
	wr.optional_preconditions = pres;
	wr.n_optional_preconditions = 1;
	r = call(f, PS "WriteRelationships", &wr.base, NULL);
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
	assert_int_equal(check_answer(f, "doc:readme#view@user:zoe"), NO);
	/* MUST_NOT_MATCH on a missing relationship passes. */
	pre.operation =
	    AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_NOT_MATCH;
	r = call(f, PS "WriteRelationships", &wr.base,
	         &authzed__api__v1__write_relationships_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	assert_int_equal(check_answer(f, "doc:readme#view@user:zoe"), HAS);
	free_file_fixture(f);
}

static void test_zedtokens_and_consistency(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	char *t1 = write_ok(f, TOUCH, "doc:snap#viewer@user:dan");
	char *t2 = write_ok(f, DELETE, "doc:snap#viewer@user:dan");
	assert_string_not_equal(t1, t2);
	/* At the older snapshot the old answer; at the head the new one. */
	result r = check(f, "doc:snap#view@user:dan", AT_EXACT, t1);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__CheckPermissionResponse *resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, HAS);
	assert_string_equal(resp->checked_at->token, t1);
	done(&r);
	r = check(f, "doc:snap#view@user:dan", AT_LEAST, t1);
	expect_status(r, GRPC_STATUS_OK);
	resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, NO);
	assert_string_equal(resp->checked_at->token, t2);
	done(&r);
	/* Garbage and foreign tokens are INVALID_ARGUMENT. */
	r = check(f, "doc:snap#view@user:dan", AT_EXACT, "not-a-token");
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	free(t1);
	free(t2);
	free_file_fixture(f);
}

/* A token of one file datastore used against another. */
static void test_foreign_zedtoken_is_invalid_argument(void **state)
{
	fixture *a = new_file_fixture();
	fixture *b = new_file_fixture();
	setup_data(a);
	setup_data(b);
	char *ta = write_ok(a, TOUCH, "doc:x#viewer@user:a");
	result r = check(b, "doc:x#view@user:a", AT_EXACT, ta);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(r.message, "another datastore"));
	r = check(b, "doc:x#view@user:a", AT_LEAST, ta);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	free(ta);
	free_file_fixture(a);
	free_file_fixture(b);
}

static void test_auth_missing_or_wrong_key_unauthenticated(void **state)
{
	fixture *f = new_file_fixture();
	Authzed__Api__V1__ReadSchemaRequest rs =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	f->token[0] = '\0';
	result r = call(f, SCHEMA_PATH "ReadSchema", &rs.base, NULL);
	expect_status(r, GRPC_STATUS_UNAUTHENTICATED);
	strcpy(f->token, "test-key-2");
	r = call(f, SCHEMA_PATH "ReadSchema", &rs.base, NULL);
	expect_status(r, GRPC_STATUS_UNAUTHENTICATED);
	strcpy(f->token, "test-key-");
	r = call(f, SCHEMA_PATH "ReadSchema", &rs.base, NULL);
	expect_status(r, GRPC_STATUS_UNAUTHENTICATED);
	/* Health needs no key and answers SERVING. */
	f->token[0] = '\0';
	Grpc__Health__V1__HealthCheckRequest hc =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	r = call(f, "/grpc.health.v1.Health/Check", &hc.base,
	         &grpc__health__v1__health_check_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	assert_int_equal(
	    ((Grpc__Health__V1__HealthCheckResponse *)r.resp)->status,
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	done(&r);
	/* Both keys work. */
	strcpy(f->token, "other-key");
	r = call(f, SCHEMA_PATH "ReadSchema", &rs.base, NULL);
	expect_status(r, GRPC_STATUS_NOT_FOUND);
	free_file_fixture(f);
}

static void
test_malformed_protobuf_invalid_argument_server_keeps_serving(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01};
	result r = call_raw(f, PS "CheckPermission", junk, sizeof(junk), NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	r = call_raw(f, PS "WriteRelationships", junk, sizeof(junk), NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	r = call_raw(f, PS "NoSuchMethod", "", 0, NULL);
	expect_status(r, GRPC_STATUS_UNIMPLEMENTED);
	/* Missing parts of a request. */
	Authzed__Api__V1__CheckPermissionRequest empty =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	r = call(f, PS "CheckPermission", &empty.base, NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_int_equal(check_answer(f, "doc:readme#view@user:anne"), HAS);
	free_file_fixture(f);
}

/* Appends a varint / a length-delimited field to buf. */
static size_t put_varint(uint8_t *buf, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		buf[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	buf[n++] = (uint8_t)v;
	return n;
}

/* A CheckPermissionRequest for doc:readme#view@user:anne whose context
 * Struct nests `levels` Structs: {"k": {"k": {...}}}.  Built inside out. */
static uint8_t *nested_context_request(size_t levels, size_t *len_out)
{
	size_t cap = levels * 16 + 256;
	uint8_t *a = malloc(cap), *b = malloc(cap);
	size_t n = 0; /* a[0..n): the innermost Struct, empty */
	uint8_t hdr[16];
	for (size_t i = 0; i < levels; i++) {
		/* Value { struct_value(5) = a }, then
		 * FieldsEntry { key(1) = "k", value(2) = Value }, then
		 * Struct { fields(1) = FieldsEntry }. */
		size_t m = 0, h;
		b[m++] = 0x0a; /* Struct.fields */
		size_t value_len = 1 + put_varint(hdr, n) + n;
		size_t entry_len =
		    3 + 1 + put_varint(hdr, value_len) + value_len;
		h = put_varint(b + m, entry_len);
		m += h;
		b[m++] = 0x0a; /* FieldsEntry.key */
		b[m++] = 1;
		b[m++] = 'k';
		b[m++] = 0x12; /* FieldsEntry.value */
		m += put_varint(b + m, value_len);
		b[m++] = 0x2a; /* Value.struct_value */
		m += put_varint(b + m, n);
		memcpy(b + m, a, n);
		m += n;
		uint8_t *t = a;
		a = b;
		b = t;
		n = m;
	}
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	res.object_type = "doc";
	res.object_id = "readme";
	Authzed__Api__V1__ObjectReference obj =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	obj.object_type = "user";
	obj.object_id = "anne";
	Authzed__Api__V1__SubjectReference sub =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	sub.object = &obj;
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	req.resource = &res;
	req.permission = "view";
	req.subject = &sub;
	size_t base = protobuf_c_message_get_packed_size(&req.base);
	uint8_t *out = malloc(base + n + 16);
	protobuf_c_message_pack(&req.base, out);
	size_t m = base;
	out[m++] = 0x2a; /* CheckPermissionRequest.context */
	m += put_varint(out + m, n);
	memcpy(out + m, a, n);
	m += n;
	free(a);
	free(b);
	*len_out = m;
	return out;
}

static void test_deeply_nested_context_is_refused_not_a_crash(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	size_t len;
	/* 200k levels (~2.6 MB) would overflow a worker's stack inside the
	 * protobuf unpacker without the depth guard. */
	uint8_t *deep = nested_context_request(200000, &len);
	result r = call_raw(f, PS "CheckPermission", deep, len, NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(r.message, "nested"));
	free(deep);
	/* A shallow context is fine, and the server still answers. */
	uint8_t *shallow = nested_context_request(5, &len);
	r = call_raw(f, PS "CheckPermission", shallow, len,
	             &authzed__api__v1__check_permission_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	protobuf_c_message_free_unpacked(r.resp, NULL);
	free(shallow);
	assert_int_equal(check_answer(f, "doc:readme#view@user:anne"), HAS);
	free_file_fixture(f);
}

static void test_read_and_delete_relationships(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	Authzed__Api__V1__RelationshipFilter flt =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	flt.resource_type = "doc";
	Authzed__Api__V1__ReadRelationshipsRequest rr =
	    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
	rr.relationship_filter = &flt;
	stream_result s = {0};
	call_stream(f, PS "ReadRelationships", &rr.base,
	            &authzed__api__v1__read_relationships_response__descriptor,
	            &s, 10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 5);
	stream_done(&s);
	/* Pages of 2 with the cursor give the same 5, no repeats. */
	rr.optional_limit = 2;
	size_t total = 0;
	char cursor_text[512] = "";
	Authzed__Api__V1__Cursor cur = AUTHZED__API__V1__CURSOR__INIT;
	for (int page = 0; page < 5; page++) {
		stream_result p = {0};
		call_stream(
		    f, PS "ReadRelationships", &rr.base,
		    &authzed__api__v1__read_relationships_response__descriptor,
		    &p, 10000);
		expect_status(p.r, GRPC_STATUS_OK);
		total += p.n;
		if (p.n == 0)
			break;
		Authzed__Api__V1__ReadRelationshipsResponse *last =
		    (void *)p.msgs[p.n - 1];
		assert_non_null(last->read_at);
		snprintf(cursor_text, sizeof(cursor_text), "%s",
		         last->after_result_cursor->token);
		cur.token = cursor_text;
		rr.optional_cursor = &cur;
		stream_done(&p);
	}
	assert_int_equal(total, 5);
	/* Prefix filter. */
	rr.optional_limit = 0;
	rr.optional_cursor = NULL;
	flt.optional_resource_id_prefix = "read";
	call_stream(f, PS "ReadRelationships", &rr.base,
	            &authzed__api__v1__read_relationships_response__descriptor,
	            &s, 10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 3);
	stream_done(&s);
	flt.optional_resource_id_prefix = "";

	/* Delete with a limit: refused without partial, partial with. */
	Authzed__Api__V1__DeleteRelationshipsRequest dr =
	    AUTHZED__API__V1__DELETE_RELATIONSHIPS_REQUEST__INIT;
	flt.optional_relation = "viewer";
	dr.relationship_filter = &flt;
	dr.optional_limit = 1;
	result r = call(f, PS "DeleteRelationships", &dr.base, NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	dr.optional_allow_partial_deletions = 1;
	r = call(f, PS "DeleteRelationships", &dr.base,
	         &authzed__api__v1__delete_relationships_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__DeleteRelationshipsResponse *d = (void *)r.resp;
	assert_int_equal(d->relationships_deleted_count, 1);
	assert_int_equal(
	    d->deletion_progress,
	    AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__DELETION_PROGRESS__DELETION_PROGRESS_PARTIAL);
	assert_non_null(d->deleted_at);
	done(&r);
	dr.optional_limit = 0;
	dr.optional_allow_partial_deletions = 0;
	r = call(f, PS "DeleteRelationships", &dr.base,
	         &authzed__api__v1__delete_relationships_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	d = (void *)r.resp;
	assert_int_equal(d->relationships_deleted_count, 3);
	done(&r);
	assert_int_equal(check_answer(f, "doc:readme#view@user:bob"), NO);
	assert_int_equal(check_answer(f, "doc:readme#view@user:anne"), HAS);
	free_file_fixture(f);
}

/* Expiration round-trips: written with optional_expires_at, read back
 * with it; an expired relationship is invisible to reads and checks. */
static void test_expiration_round_trips(void **state)
{
	(void)state;
	fixture *f = new_file_fixture();
	result r = write_schema(f, "use expiration\n"
	                           "definition user {}\n"
	                           "definition doc {\n"
	                           "  relation viewer: user with expiration\n"
	                           "  permission view = viewer\n"
	                           "}\n");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	/* 2300-01-01T00:00:00.5Z and 2001-09-09T01:46:40Z. */
	Google__Protobuf__Timestamp future = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	future.seconds = 10413792000LL;
	future.nanos = 500000000;
	Google__Protobuf__Timestamp past = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	past.seconds = 1000000000LL;
	rel_msg a, b;
	rel_init(&a, "doc:1#viewer@user:anne");
	rel_init(&b, "doc:1#viewer@user:bob");
	a.rel.optional_expires_at = &future;
	b.rel.optional_expires_at = &past;
	a.update.operation = b.update.operation = TOUCH;
	Authzed__Api__V1__RelationshipUpdate *ups[] = {&a.update, &b.update};
	Authzed__Api__V1__WriteRelationshipsRequest wr =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	wr.updates = ups;
	wr.n_updates = 2;
	r = call(f, PS "WriteRelationships", &wr.base,
	         &authzed__api__v1__write_relationships_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	/* Without the expiration the relation refuses the subject. */
	a.rel.optional_expires_at = NULL;
	wr.n_updates = 1;
	r = call(f, PS "WriteRelationships", &wr.base, NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	done(&r);

	assert_int_equal(check_answer(f, "doc:1#view@user:anne"), HAS);
	assert_int_equal(check_answer(f, "doc:1#view@user:bob"), NO);
	Authzed__Api__V1__RelationshipFilter flt =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	flt.resource_type = "doc";
	Authzed__Api__V1__ReadRelationshipsRequest rr =
	    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
	rr.relationship_filter = &flt;
	stream_result s = {0};
	call_stream(f, PS "ReadRelationships", &rr.base,
	            &authzed__api__v1__read_relationships_response__descriptor,
	            &s, 10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 1);
	Authzed__Api__V1__ReadRelationshipsResponse *got = (void *)s.msgs[0];
	assert_string_equal(got->relationship->subject->object->object_id,
	                    "anne");
	assert_non_null(got->relationship->optional_expires_at);
	assert_int_equal(got->relationship->optional_expires_at->seconds,
	                 10413792000LL);
	assert_int_equal(got->relationship->optional_expires_at->nanos,
	                 500000000);
	stream_done(&s);
	free_file_fixture(f);
}

static void test_bulk_check_lookups_expand(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	/* CheckBulkPermissions: one good item, one unknown definition. */
	rel_msg a, b;
	rel_init(&a, "doc:readme#view@user:carl");
	rel_init(&b, "nope:x#view@user:carl");
	Authzed__Api__V1__CheckBulkPermissionsRequestItem ia =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST_ITEM__INIT;
	Authzed__Api__V1__CheckBulkPermissionsRequestItem ib =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST_ITEM__INIT;
	ia.resource = &a.res;
	ia.permission = "view";
	ia.subject = &a.subj;
	ib.resource = &b.res;
	ib.permission = "view";
	ib.subject = &b.subj;
	Authzed__Api__V1__CheckBulkPermissionsRequestItem *items[] = {&ia, &ib};
	Authzed__Api__V1__CheckBulkPermissionsRequest cb =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST__INIT;
	cb.items = items;
	cb.n_items = 2;
	const char *paths[] = {PS "CheckBulkPermissions",
	                       "/authzed.api.v1.ExperimentalService/"
	                       "BulkCheckPermission"};
	for (int p = 0; p < 2; p++) {
		result r = call(
		    f, paths[p], &cb.base,
		    &authzed__api__v1__check_bulk_permissions_response__descriptor);
		expect_status(r, GRPC_STATUS_OK);
		Authzed__Api__V1__CheckBulkPermissionsResponse *resp =
		    (void *)r.resp;
		assert_non_null(resp->checked_at);
		assert_int_equal(resp->n_pairs, 2);
		assert_int_equal(
		    resp->pairs[0]->response_case,
		    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM);
		assert_int_equal(resp->pairs[0]->item->permissionship, HAS);
		assert_int_equal(
		    resp->pairs[1]->response_case,
		    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR);
		assert_int_equal(resp->pairs[1]->error->code,
		                 GRPC_STATUS_FAILED_PRECONDITION);
		assert_string_equal(
		    resp->pairs[0]->request->resource->object_id, "readme");
		done(&r);
	}

	/* LookupResources: bob can view readme and other. */
	Authzed__Api__V1__LookupResourcesRequest lr =
	    AUTHZED__API__V1__LOOKUP_RESOURCES_REQUEST__INIT;
	rel_msg bob;
	rel_init(&bob, "doc:x#view@user:bob");
	lr.resource_object_type = "doc";
	lr.permission = "view";
	lr.subject = &bob.subj;
	stream_result s = {0};
	call_stream(f, PS "LookupResources", &lr.base,
	            &authzed__api__v1__lookup_resources_response__descriptor,
	            &s, 10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 3); /* other, public (wildcard), readme */
	Authzed__Api__V1__LookupResourcesResponse *lr0 = (void *)s.msgs[0];
	assert_string_equal(lr0->resource_object_id, "other");
	assert_non_null(lr0->looked_up_at);
	assert_non_null(lr0->after_result_cursor);
	stream_done(&s);
	/* With limit 1 and the cursor: the next one. */
	lr.optional_limit = 1;
	call_stream(f, PS "LookupResources", &lr.base,
	            &authzed__api__v1__lookup_resources_response__descriptor,
	            &s, 10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 1);
	char cursor[512];
	snprintf(cursor, sizeof(cursor), "%s",
	         ((Authzed__Api__V1__LookupResourcesResponse *)s.msgs[0])
	             ->after_result_cursor->token);
	stream_done(&s);
	Authzed__Api__V1__Cursor cur = AUTHZED__API__V1__CURSOR__INIT;
	cur.token = cursor;
	lr.optional_cursor = &cur;
	call_stream(f, PS "LookupResources", &lr.base,
	            &authzed__api__v1__lookup_resources_response__descriptor,
	            &s, 10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 1);
	assert_string_equal(
	    ((Authzed__Api__V1__LookupResourcesResponse *)s.msgs[0])
	        ->resource_object_id,
	    "public");
	stream_done(&s);

	/* LookupSubjects: viewers of readme. */
	Authzed__Api__V1__LookupSubjectsRequest ls =
	    AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__INIT;
	ls.resource = &a.res;
	ls.permission = "view";
	ls.subject_object_type = "user";
	call_stream(f, PS "LookupSubjects", &ls.base,
	            &authzed__api__v1__lookup_subjects_response__descriptor, &s,
	            10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 3); /* anne, bob, carl */
	Authzed__Api__V1__LookupSubjectsResponse *ls0 = (void *)s.msgs[0];
	assert_string_equal(ls0->subject->subject_object_id, "anne");
	assert_non_null(ls0->looked_up_at);
	stream_done(&s);

	/* Expand: view = viewer + owner, a union of two leaves. */
	Authzed__Api__V1__ExpandPermissionTreeRequest ex =
	    AUTHZED__API__V1__EXPAND_PERMISSION_TREE_REQUEST__INIT;
	ex.resource = &a.res;
	ex.permission = "view";
	result r = call(
	    f, PS "ExpandPermissionTree", &ex.base,
	    &authzed__api__v1__expand_permission_tree_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__ExpandPermissionTreeResponse *er = (void *)r.resp;
	assert_non_null(er->expanded_at);
	assert_int_equal(
	    er->tree_root->tree_type_case,
	    AUTHZED__API__V1__PERMISSION_RELATIONSHIP_TREE__TREE_TYPE_INTERMEDIATE);
	assert_int_equal(
	    er->tree_root->intermediate->operation,
	    AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_UNION);
	assert_int_equal(er->tree_root->intermediate->n_children, 2);
	assert_string_equal(er->tree_root->expanded_relation, "view");
	done(&r);
	free_file_fixture(f);
}

/* Client-streaming requests from an array of packed messages. */
typedef struct feed {
	uint8_t *bufs[8];
	size_t lens[8];
	size_t n, next;
} feed;

static int next_message(void *ctx, const void **data, size_t *len)
{
	feed *fd = ctx;
	if (fd->next >= fd->n)
		return 0;
	*data = fd->bufs[fd->next];
	*len = fd->lens[fd->next];
	fd->next++;
	return 1;
}

static void test_import_export_and_watch(void **state)
{
	fixture *f = new_file_fixture();
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	char *before = strdup(((Authzed__Api__V1__WriteSchemaResponse *)r.resp)
	                          ->written_at->token);
	done(&r);

	/* Import 2 messages of 3 relationships each. */
	feed fd = {0};
	for (int m = 0; m < 2; m++) {
		rel_msg rels[3];
		Authzed__Api__V1__Relationship *rp[3];
		for (int i = 0; i < 3; i++) {
			char text[64];
			snprintf(text, sizeof(text), "doc:d%d#viewer@user:u%d",
			         m, i);
			rel_init(&rels[i], text);
			rp[i] = &rels[i].rel;
		}
		Authzed__Api__V1__ImportBulkRelationshipsRequest im =
		    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
		im.relationships = rp;
		im.n_relationships = 3;
		fd.lens[fd.n] = protobuf_c_message_get_packed_size(&im.base);
		fd.bufs[fd.n] = malloc(fd.lens[fd.n]);
		protobuf_c_message_pack(&im.base, fd.bufs[fd.n]);
		fd.n++;
	}
	grpc_metadata md[1];
	char auth[200];
	size_t nmd = metadata(f, md, auth, sizeof(auth));
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	grpc_client_streaming(f->client, PS "ImportBulkRelationships", md, nmd,
	                      10000, next_message, &fd, NULL, NULL, &resp,
	                      &resp_len, &st);
	if (st.code != 0)
		fail_msg("import: %s", st.message);
	grpc_status_clear(&st);
	Authzed__Api__V1__ImportBulkRelationshipsResponse *ir =
	    authzed__api__v1__import_bulk_relationships_response__unpack(
	        NULL, resp_len, resp);
	assert_int_equal(ir->num_loaded, 6);
	authzed__api__v1__import_bulk_relationships_response__free_unpacked(
	    ir, NULL);
	free(resp);
	/* The same import again fails: CREATE semantics. */
	fd.next = 0;
	resp = NULL;
	grpc_client_streaming(f->client,
	                      "/authzed.api.v1.ExperimentalService/"
	                      "BulkImportRelationships",
	                      md, nmd, 10000, next_message, &fd, NULL, NULL,
	                      &resp, &resp_len, &st);
	assert_int_equal(st.code, GRPC_STATUS_ALREADY_EXISTS);
	grpc_status_clear(&st);
	free(resp);
	for (size_t i = 0; i < fd.n; i++)
		free(fd.bufs[i]);
	assert_int_equal(check_answer(f, "doc:d1#view@user:u2"), HAS);

	/* Export in batches of 4: 6 relationships in 2 responses. */
	Authzed__Api__V1__ExportBulkRelationshipsRequest ex =
	    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	ex.optional_limit = 4;
	stream_result s = {0};
	call_stream(
	    f, PS "ExportBulkRelationships", &ex.base,
	    &authzed__api__v1__export_bulk_relationships_response__descriptor,
	    &s, 10000);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 2);
	assert_int_equal(
	    ((Authzed__Api__V1__ExportBulkRelationshipsResponse *)s.msgs[0])
	        ->n_relationships,
	    4);
	assert_int_equal(
	    ((Authzed__Api__V1__ExportBulkRelationshipsResponse *)s.msgs[1])
	        ->n_relationships,
	    2);
	stream_done(&s);

	/* Watch from the schema write: the import's revision arrives, with
	 * changes_through; the client then stops. */
	char *after = write_ok(f, DELETE, "doc:d0#viewer@user:u0");
	Authzed__Api__V1__WatchRequest wr =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	Authzed__Api__V1__ZedToken zt = AUTHZED__API__V1__ZED_TOKEN__INIT;
	zt.token = before;
	wr.optional_start_cursor = &zt;
	s.stop_after = 2;
	call_stream(f, "/authzed.api.v1.WatchService/Watch", &wr.base,
	            &authzed__api__v1__watch_response__descriptor, &s, 5000);
	assert_int_equal(s.n, 2);
	Authzed__Api__V1__WatchResponse *w0 = (void *)s.msgs[0];
	Authzed__Api__V1__WatchResponse *w1 = (void *)s.msgs[1];
	assert_int_equal(w0->n_updates, 6);
	assert_int_equal(w1->n_updates, 1);
	assert_int_equal(w1->updates[0]->operation, DELETE);
	assert_string_equal(w1->changes_through->token, after);
	stream_done(&s);
	/* Watch filtered to another type sees nothing before the timeout. */
	char *types[] = {"group"};
	wr.optional_object_types = types;
	wr.n_optional_object_types = 1;
	s.stop_after = 1;
	call_stream(f, "/authzed.api.v1.WatchService/Watch", &wr.base,
	            &authzed__api__v1__watch_response__descriptor, &s, 700);
	assert_int_equal(s.n, 0);
	assert_int_equal(s.r.code, GRPC_STATUS_DEADLINE_EXCEEDED);
	free(before);
	free(after);
	free_file_fixture(f);
}

/* ============================================================ watch */

#define WATCH_PATH "/authzed.api.v1.WatchService/Watch"

static void watch_from(fixture *f, const char *token, unsigned kinds,
                       stream_result *s, size_t stop_after, int timeout_ms)
{
	Authzed__Api__V1__WatchRequest wr =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	Authzed__Api__V1__ZedToken zt = AUTHZED__API__V1__ZED_TOKEN__INIT;
	Authzed__Api__V1__WatchKind k[2];
	zt.token = (char *)token;
	wr.optional_start_cursor = token ? &zt : NULL;
	if (kinds) {
		k[0] =
		    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES;
		k[1] =
		    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_CHECKPOINTS;
		wr.optional_update_kinds = k;
		wr.n_optional_update_kinds = 2;
	}
	s->stop_after = stop_after;
	call_stream(f, WATCH_PATH, &wr.base,
	            &authzed__api__v1__watch_response__descriptor, s,
	            timeout_ms);
}

/* Resuming from the token of every revision of a history -- one with
 * changes, one that changed nothing, the schema write -- gives exactly
 * the changes after it, each once, in revision order; with checkpoints,
 * every revision is followed by one, and an idle stream gets one at the
 * head within WATCH_CHECKPOINT_MS (1 s). */
static void test_watch_resumes_from_every_token(void **state)
{
	fixture *f = new_file_fixture();
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	char *tok[8];
	tok[0] = strdup(((Authzed__Api__V1__WriteSchemaResponse *)r.resp)
	                    ->written_at->token);
	done(&r);
	/* Revisions 1..5; `changed` says which report a change. */
	tok[1] = write_ok(f, TOUCH, "doc:a#viewer@user:u1");
	tok[2] = write_ok(f, TOUCH, "doc:a#viewer@user:u1"); /* no change */
	tok[3] = write_ok(f, TOUCH, "doc:b#viewer@user:u2");
	tok[4] = write_ok(f, DELETE, "doc:zz#viewer@user:u9"); /* none */
	tok[5] = write_ok(f, DELETE, "doc:a#viewer@user:u1");
	const bool changed[6] = {false, true, false, true, false, true};
	const size_t ntok = 6;
	for (size_t i = 0; i < ntok; i++) {
		size_t want = 0;
		for (size_t j = i + 1; j < ntok; j++)
			want += changed[j];
		/* Without checkpoints: the changes, then nothing more. */
		stream_result s = {0};
		watch_from(f, tok[i], 0, &s, want + 1, 400);
		assert_int_equal(s.r.code, GRPC_STATUS_DEADLINE_EXCEEDED);
		assert_int_equal(s.n, want);
		size_t k = 0;
		for (size_t j = i + 1; j < ntok; j++) {
			if (!changed[j])
				continue;
			Authzed__Api__V1__WatchResponse *w =
			    (void *)s.msgs[k++];
			assert_int_equal(w->n_updates, 1);
			assert_false(w->is_checkpoint);
			assert_string_equal(w->changes_through->token, tok[j]);
		}
		stream_done(&s);
		/* With checkpoints: every revision's changes, then its
		 * checkpoint, then an idle checkpoint at the head. */
		size_t nrev = ntok - 1 - i;
		stream_result c = {0};
		watch_from(f, tok[i], 1, &c, want + nrev + 1, 3000);
		expect_status(c.r, GRPC_STATUS_CANCELLED); /* stop_after */
		assert_int_equal(c.n, want + nrev + 1);
		k = 0;
		for (size_t j = i + 1; j < ntok; j++) {
			Authzed__Api__V1__WatchResponse *w;
			if (changed[j]) {
				w = (void *)c.msgs[k++];
				assert_false(w->is_checkpoint);
				assert_string_equal(w->changes_through->token,
				                    tok[j]);
			}
			w = (void *)c.msgs[k++];
			assert_true(w->is_checkpoint);
			assert_int_equal(w->n_updates, 0);
			assert_string_equal(w->changes_through->token, tok[j]);
		}
		Authzed__Api__V1__WatchResponse *idle = (void *)c.msgs[k];
		assert_true(idle->is_checkpoint);
		assert_string_equal(idle->changes_through->token,
		                    tok[ntok - 1]);
		stream_done(&c);
	}
	for (size_t i = 0; i < ntok; i++)
		free(tok[i]);
	free_file_fixture(f);
}

/* A revision over the split size (3.5 MiB of updates) comes in several
 * responses with one changes_through: together they hold each of its
 * changes once; resuming from that token gives what followed it; with
 * checkpoints, its checkpoint follows the last part. */
static void test_watch_split_revision_resumes(void **state)
{
	fixture *f = new_file_fixture();
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	char *t0 = strdup(((Authzed__Api__V1__WriteSchemaResponse *)r.resp)
	                      ->written_at->token);
	done(&r);
	/* 4 import messages of 1000 relationships with 1000-byte ids: one
	 * revision of about 4 MiB. */
	enum { PER = 1000, MSGS = 4, N = PER * MSGS };
	feed fd = {0};
	char pad[990];
	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	rel_msg *rels = calloc(PER, sizeof(*rels));
	Authzed__Api__V1__Relationship **rp = calloc(PER, sizeof(*rp));
	for (int m = 0; m < MSGS; m++) {
		for (int i = 0; i < PER; i++) {
			char text[1100];
			snprintf(text, sizeof(text), "doc:%s%05d#viewer@user:u",
			         pad, m * PER + i);
			rel_init(&rels[i], text);
			rp[i] = &rels[i].rel;
		}
		Authzed__Api__V1__ImportBulkRelationshipsRequest im =
		    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
		im.relationships = rp;
		im.n_relationships = PER;
		fd.lens[fd.n] = protobuf_c_message_get_packed_size(&im.base);
		fd.bufs[fd.n] = malloc(fd.lens[fd.n]);
		protobuf_c_message_pack(&im.base, fd.bufs[fd.n]);
		fd.n++;
	}
	free(rels);
	free(rp);
	grpc_metadata md[1];
	char auth[200];
	size_t nmd = metadata(f, md, auth, sizeof(auth));
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	grpc_client_streaming(f->client, PS "ImportBulkRelationships", md, nmd,
	                      30000, next_message, &fd, NULL, NULL, &resp,
	                      &resp_len, &st);
	if (st.code != 0)
		fail_msg("import: %s", st.message);
	grpc_status_clear(&st);
	free(resp);
	for (size_t i = 0; i < fd.n; i++)
		free(fd.bufs[i]);
	char *t2 = write_ok(f, TOUCH, "doc:after#viewer@user:u");

	stream_result s = {0};
	watch_from(f, t0, 0, &s, 20, 3000);
	assert_int_equal(s.r.code, GRPC_STATUS_DEADLINE_EXCEEDED);
	assert_true(s.n >= 3); /* at least two parts, then t2 */
	const char *split_token = ((Authzed__Api__V1__WatchResponse *)s.msgs[0])
	                              ->changes_through->token;
	char *seen = calloc(N, 1);
	size_t total = 0;
	for (size_t i = 0; i + 1 < s.n; i++) {
		Authzed__Api__V1__WatchResponse *w = (void *)s.msgs[i];
		assert_string_equal(w->changes_through->token, split_token);
		for (size_t u = 0; u < w->n_updates; u++) {
			const char *id =
			    w->updates[u]->relationship->resource->object_id;
			int k = atoi(id + strlen(pad));
			assert_true(k >= 0 && k < N);
			assert_int_equal(seen[k], 0);
			seen[k] = 1;
			total++;
		}
	}
	assert_int_equal(total, N);
	free(seen);
	Authzed__Api__V1__WatchResponse *last = (void *)s.msgs[s.n - 1];
	assert_string_equal(last->changes_through->token, t2);
	size_t parts = s.n - 1;
	char *split = strdup(split_token);
	stream_done(&s);

	/* From the split revision's token: only what followed. */
	watch_from(f, split, 0, &s, 2, 800);
	assert_int_equal(s.r.code, GRPC_STATUS_DEADLINE_EXCEEDED);
	assert_int_equal(s.n, 1);
	assert_string_equal(((Authzed__Api__V1__WatchResponse *)s.msgs[0])
	                        ->changes_through->token,
	                    t2);
	stream_done(&s);

	/* With checkpoints: the parts, then the revision's checkpoint. */
	watch_from(f, t0, 1, &s, parts + 1, 3000);
	assert_int_equal(s.n, parts + 1);
	for (size_t i = 0; i < parts; i++)
		assert_false(((Authzed__Api__V1__WatchResponse *)s.msgs[i])
		                 ->is_checkpoint);
	Authzed__Api__V1__WatchResponse *cp = (void *)s.msgs[parts];
	assert_true(cp->is_checkpoint);
	assert_string_equal(cp->changes_through->token, split);
	stream_done(&s);
	free(split);
	free(t0);
	free(t2);
	free_file_fixture(f);
}

/* Idle checkpoints keep coming, about one a second. */
static void test_watch_idle_checkpoints_are_periodic(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	stream_result s = {0};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	watch_from(f, NULL, 1, &s, 3, 6000);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	expect_status(s.r, GRPC_STATUS_CANCELLED); /* stop_after */
	assert_int_equal(s.n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_true(((Authzed__Api__V1__WatchResponse *)s.msgs[i])
		                ->is_checkpoint);
	double secs = (double)(t1.tv_sec - t0.tv_sec) +
	              (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs > 2.5 && secs < 5.0);
	stream_done(&s);
	free_file_fixture(f);
}

/* Relationship filters with a resource id prefix, and the write's
 * transaction metadata on the response. */
static void test_watch_filters_and_metadata(void **state)
{
	fixture *f = new_file_fixture();
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	char *start = strdup(((Authzed__Api__V1__WriteSchemaResponse *)r.resp)
	                         ->written_at->token);
	done(&r);
	free(write_ok(f, TOUCH, "doc:other#viewer@user:u1"));
	/* A write with metadata, matching the filter. */
	rel_msg m;
	rel_init(&m, "doc:team-1#viewer@user:u2");
	m.update.operation = TOUCH;
	Authzed__Api__V1__RelationshipUpdate *ups[] = {&m.update};
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = ups;
	req.n_updates = 1;
	static const char meta_json[] = "{\"tx\":\"t-42\"}";
	Google__Protobuf__Struct *meta =
	    api_struct_from_json(meta_json, strlen(meta_json));
	req.optional_transaction_metadata = meta;
	r = call(f, PS "WriteRelationships", &req.base,
	         &authzed__api__v1__write_relationships_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	api_struct_free(meta);

	Authzed__Api__V1__WatchRequest wr =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	Authzed__Api__V1__ZedToken zt = AUTHZED__API__V1__ZED_TOKEN__INIT;
	zt.token = start;
	wr.optional_start_cursor = &zt;
	Authzed__Api__V1__RelationshipFilter rf =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	rf.resource_type = "doc";
	rf.optional_resource_id_prefix = "team-";
	Authzed__Api__V1__RelationshipFilter *rfs[] = {&rf};
	wr.optional_relationship_filters = rfs;
	wr.n_optional_relationship_filters = 1;
	stream_result s = {0};
	s.stop_after = 2;
	call_stream(f, WATCH_PATH, &wr.base,
	            &authzed__api__v1__watch_response__descriptor, &s, 500);
	assert_int_equal(s.n, 1);
	Authzed__Api__V1__WatchResponse *w = (void *)s.msgs[0];
	assert_int_equal(w->n_updates, 1);
	assert_string_equal(w->updates[0]->relationship->resource->object_id,
	                    "team-1");
	assert_non_null(w->optional_transaction_metadata);
	strbuf sb;
	strbuf_init(&sb);
	api_json_struct(&sb, w->optional_transaction_metadata);
	assert_string_equal(sb.data, meta_json);
	strbuf_free(&sb);
	stream_done(&s);
	free(start);
	free_file_fixture(f);
}

/* A cursor older than the GC window is OUT_OF_RANGE naming the window;
 * a future one is refused too. */
static void test_watch_refuses_collected_and_future_cursors(void **state)
{
	start_gc_window_seconds = 1;
	start_gc_interval_ms = 100;
	fixture *f = new_file_fixture();
	start_gc_window_seconds = 0;
	start_gc_interval_ms = 0;
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	char *old = strdup(((Authzed__Api__V1__WriteSchemaResponse *)r.resp)
	                       ->written_at->token);
	done(&r);
	free(write_ok(f, TOUCH, "doc:a#viewer@user:u1"));
	usleep(1300 * 1000);
	free(write_ok(f, TOUCH, "doc:b#viewer@user:u1"));
	usleep(400 * 1000); /* a GC run or more */
	stream_result s = {0};
	watch_from(f, old, 0, &s, 1, 3000);
	expect_status(s.r, GRPC_STATUS_OUT_OF_RANGE);
	if (!strstr(s.r.message, "GC window of 1 s"))
		fail_msg("message: %s", s.r.message);
	stream_done(&s);
	/* A token of this datastore from the future: refused too. */
	pemba_db *db;
	pemba_error err = {0};
	if (pemba_open(pg_fixture_uri(f->uri), NULL, &db, &err) != 0)
		fail_msg("open: %s", err.message);
	pemba_revision head;
	assert_int_equal(pemba_head_revision(db, &head, &err), 0);
	char future[ZEDTOKEN_BUFSIZE];
	zedtoken_encode_db(db, head + 10, future);
	pemba_close(db);
	watch_from(f, future, 0, &s, 1, 3000);
	expect_status(s.r, GRPC_STATUS_OUT_OF_RANGE);
	if (!strstr(s.r.message, "in the future"))
		fail_msg("message: %s", s.r.message);
	stream_done(&s);
	free(old);
	free_file_fixture(f);
}

static void test_restart_keeps_everything(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	char *tok = write_ok(f, TOUCH, "doc:kept#viewer@user:eve");
	stop(f);
	start(f, f->uri, false, true);
	assert_int_equal(check_answer(f, "doc:kept#view@user:eve"), HAS);
	assert_int_equal(check_answer(f, "doc:readme#view@user:carl"), HAS);
	/* Tokens survive the restart too (same datastore identity). */
	result r = check(f, "doc:kept#view@user:eve", AT_EXACT, tok);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	free(tok);
	free_file_fixture(f);
}

static void test_memory_datastore_serves(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	start(f, "sqlite::memory:", false, false);
	setup_data(f);
	assert_int_equal(check_answer(f, "doc:readme#view@user:carl"), HAS);
	stop(f);
	free(f);
}

static void test_read_only_refuses_writes_unavailable(void **state)
{
	fixture *f = new_file_fixture();
	setup_data(f);
	stop(f);
	start_read_only = true;
	start(f, f->uri, false, true);
	start_read_only = false;
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	assert_non_null(strstr(r.message, "read-only"));
	const char *rel = "doc:ro#viewer@user:x";
	r = write_rels(f, TOUCH, &rel, 1);
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	assert_int_equal(check_answer(f, "doc:readme#view@user:anne"), HAS);
	free_file_fixture(f);
}

static void test_serve_testing_isolates_tokens(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	start(f, NULL, true, false);
	strcpy(f->token, "alpha");
	setup_data(f);
	assert_int_equal(check_answer(f, "doc:readme#view@user:anne"), HAS);
	Authzed__Api__V1__ReadSchemaRequest rs =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	strcpy(f->token, "beta");
	result r = call(f, SCHEMA_PATH "ReadSchema", &rs.base, NULL);
	expect_status(r, GRPC_STATUS_NOT_FOUND);
	f->token[0] = '\0';
	r = call(f, SCHEMA_PATH "ReadSchema", &rs.base, NULL);
	expect_status(r, GRPC_STATUS_NOT_FOUND);
	strcpy(f->token, "alpha");
	r = call(f, SCHEMA_PATH "ReadSchema", &rs.base,
	         &authzed__api__v1__read_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	stop(f);
	free(f);
}

static void test_testing_stores_evict_idle_lru(void **state)
{
	testing_stores *ts = testing_stores_new(2, 3600);
	pemba_db *db, *busy;
	pemba_error err = {0};
	assert_int_equal(testing_stores_acquire(ts, "a", 1, false, &busy, &err),
	                 0);
	assert_int_equal(testing_stores_acquire(ts, "b", 1, false, &db, &err),
	                 0);
	testing_stores_release(ts, "b", 1, false, db);
	/* Full: "b" is idle and goes; "a" is busy and stays. */
	assert_int_equal(testing_stores_acquire(ts, "c", 1, false, &db, &err),
	                 0);
	assert_int_equal(testing_stores_count(ts), 2);
	/* All busy: a new token is refused. */
	pemba_db *db2;
	assert_int_equal(testing_stores_acquire(ts, "d", 1, false, &db2, &err),
	                 PEMBA_ELIMIT);
	testing_stores_release(ts, "c", 1, false, db);
	testing_stores_release(ts, "a", 1, false, busy);
	testing_stores_free(ts);
}

static void test_loopback_addresses(void **state)
{
	assert_true(server_addr_is_loopback("127.0.0.1:50051"));
	assert_true(server_addr_is_loopback("127.1.2.3:1"));
	assert_true(server_addr_is_loopback("[::1]:50051"));
	assert_true(server_addr_is_loopback("localhost:50051"));
	assert_false(server_addr_is_loopback("0.0.0.0:50051"));
	assert_false(server_addr_is_loopback(":50051"));
	assert_false(server_addr_is_loopback("10.0.0.1:50051"));
	assert_false(server_addr_is_loopback("[::]:50051"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_schema_read_write_and_not_found),
	    cmocka_unit_test(test_write_check_and_error_statuses),
	    cmocka_unit_test(test_zedtokens_and_consistency),
	    cmocka_unit_test(test_foreign_zedtoken_is_invalid_argument),
	    cmocka_unit_test(test_auth_missing_or_wrong_key_unauthenticated),
	    cmocka_unit_test(
	        test_malformed_protobuf_invalid_argument_server_keeps_serving),
	    cmocka_unit_test(test_deeply_nested_context_is_refused_not_a_crash),
	    cmocka_unit_test(test_read_and_delete_relationships),
	    cmocka_unit_test(test_expiration_round_trips),
	    cmocka_unit_test(test_bulk_check_lookups_expand),
	    cmocka_unit_test(test_import_export_and_watch),
	    cmocka_unit_test(test_watch_resumes_from_every_token),
	    cmocka_unit_test(test_watch_split_revision_resumes),
	    cmocka_unit_test(test_watch_idle_checkpoints_are_periodic),
	    cmocka_unit_test(test_watch_filters_and_metadata),
	    cmocka_unit_test(test_watch_refuses_collected_and_future_cursors),
	    cmocka_unit_test(test_restart_keeps_everything),
	    cmocka_unit_test(test_memory_datastore_serves),
	    cmocka_unit_test(test_read_only_refuses_writes_unavailable),
	    cmocka_unit_test(test_serve_testing_isolates_tokens),
	    cmocka_unit_test(test_testing_stores_evict_idle_lru),
	    cmocka_unit_test(test_loopback_addresses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
