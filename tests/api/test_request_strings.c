/*
 * test_request_strings.c -- strings in gRPC requests are lengths, not C
 * strings: a NUL byte or invalid UTF-8 in any string field of any request
 * is refused with INVALID_ARGUMENT naming the field, before anything is
 * read or written (protobuf-c would otherwise hand the handler the text
 * before the NUL: `doc:"secret\0junk"` stored as `doc:secret`).
 *
 * The table test walks the request type of every method in the dispatch
 * table (services_methods()) with the protobuf-c descriptors, builds one
 * request per string field path -- nested messages, repeated fields, map
 * entries, google.protobuf.Struct values, oneofs -- with a NUL, and one
 * with an overlong (invalid) UTF-8 sequence, sends each through a real
 * server, and expects INVALID_ARGUMENT naming that path with the
 * datastore's head revision unchanged.  Focused cases follow: a write, a
 * check with a caveat context, an import, and metadata.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/grpc.h"
#include "api/services.h"
#include "api/struct_json.h"
#include "api/zedtoken.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "grpc_fixture.h"
#include "pg_fixture.h"
#include "server/server.h"

#define KEY "strings-key"
#define PS "/authzed.api.v1.PermissionsService/"
#define CALL_TIMEOUT_MS 10000

static const char *SCHEMA =
    "definition user {}\n"
    "caveat tagged(tag string, tags list<string>) {\n\ttag in tags\n}\n"
    "definition doc {\n"
    "\trelation viewer: user | user with tagged\n"
    "\tpermission view = viewer\n"
    "}\n";

static const grpc_metadata auth_md[1] = {{"authorization", "Bearer " KEY, 0}};

/* ============================================================ fixture */

typedef struct fixture {
	test_server srv;
	char dir[64];
} fixture;

static fixture *start(void)
{
	static const char *const keys[] = {KEY};
	fixture *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/pemba-strings-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	char uri[160];
	snprintf(uri, sizeof(uri), "sqlite://%s/p.db", f->dir);
	test_server_start(&f->srv, (server_options){
	                               .datastore = pg_fixture_uri(uri),
	                               .keys = keys,
	                               .nkeys = 1,
	                           });
	return f;
}

static void stop(fixture *f)
{
	test_server_stop(&f->srv);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

#define expect_status(r, want)                                                 \
	do {                                                                   \
		if ((r).code != (want))                                        \
			fail_msg("status %s (%s), want %s",                    \
			         grpc_status_name((r).code), (r).message,      \
			         grpc_status_name(want));                      \
	} while (0)

static test_result call(fixture *f, const char *path,
                        const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *d)
{
	return test_call(f->srv.client, auth_md, 1, path, req, d);
}

/* The head revision, from ReadSchema's read_at. */
static pemba_revision head(fixture *f)
{
	Authzed__Api__V1__ReadSchemaRequest rs =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	test_result r =
	    call(f, "/authzed.api.v1.SchemaService/ReadSchema", &rs.base,
	         &authzed__api__v1__read_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__ReadSchemaResponse *resp = (void *)r.resp;
	assert_non_null(resp->read_at);
	zedtoken_info info;
	pemba_error err;
	assert_int_equal(zedtoken_parse(resp->read_at->token,
	                                strlen(resp->read_at->token), &info,
	                                &err),
	                 0);
	test_result_done(&r);
	return info.revision;
}

/* A wire relationship from the relationship syntax. */
typedef struct rel_msg {
	Authzed__Api__V1__Relationship rel;
	Authzed__Api__V1__ObjectReference res, subj_obj;
	Authzed__Api__V1__SubjectReference subj;
	pemba_relationship parsed;
	char *storage;
} rel_msg;

static void rel_init(rel_msg *m, const char *text)
{
	pemba_error err;
	if (pemba_parse_relationship(text, &m->parsed, &m->storage, &err) != 0)
		fail_msg("bad test relationship %s: %s", text, err.message);
	const pemba_relationship *p = &m->parsed;
	authzed__api__v1__relationship__init(&m->rel);
	authzed__api__v1__object_reference__init(&m->res);
	authzed__api__v1__object_reference__init(&m->subj_obj);
	authzed__api__v1__subject_reference__init(&m->subj);
	m->res.object_type = (char *)p->resource_type;
	m->res.object_id = (char *)p->resource_id;
	m->rel.relation = (char *)p->relation;
	m->subj_obj.object_type = (char *)p->subject_type;
	m->subj_obj.object_id = (char *)p->subject_id;
	m->subj.object = &m->subj_obj;
	m->rel.resource = &m->res;
	m->rel.subject = &m->subj;
}

static void setup(fixture *f)
{
	Authzed__Api__V1__WriteSchemaRequest ws =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	ws.schema = (char *)SCHEMA;
	test_result r =
	    call(f, "/authzed.api.v1.SchemaService/WriteSchema", &ws.base,
	         &authzed__api__v1__write_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	test_result_done(&r);
	rel_msg m;
	rel_init(&m, "doc:readme#viewer@user:anne");
	Authzed__Api__V1__RelationshipUpdate up =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	up.operation =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
	up.relationship = &m.rel;
	Authzed__Api__V1__RelationshipUpdate *ups[] = {&up};
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = ups;
	req.n_updates = 1;
	r = call(f, PS "WriteRelationships", &req.base,
	         &authzed__api__v1__write_relationships_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	test_result_done(&r);
	pemba_free(m.storage);
}

/* ============================================================ raw calls */

typedef struct bytes {
	uint8_t *data;
	size_t len;
} bytes;

static bytes pack(const ProtobufCMessage *m)
{
	bytes b = {malloc(protobuf_c_message_get_packed_size(m) + 1), 0};
	assert_non_null(b.data);
	b.len = protobuf_c_message_pack(m, b.data);
	return b;
}

/* Replaces every occurrence of `marker` by `with` (same length). */
static void replace(bytes *b, const char *marker, const char *with, size_t n)
{
	int found = 0;
	for (size_t i = 0; i + n <= b->len; i++)
		if (memcmp(b->data + i, marker, n) == 0) {
			memcpy(b->data + i, with, n);
			found++;
		}
	assert_true(found > 0);
}

static int count_message(void *ctx, const uint8_t *data, size_t len)
{
	(*(size_t *)ctx)++;
	return 0;
}

typedef struct one_message {
	const bytes *b;
	bool sent;
} one_message;

static int next_message(void *ctx, const void **data, size_t *len)
{
	one_message *o = ctx;
	if (o->sent)
		return 0;
	o->sent = true;
	*data = o->b->data;
	*len = o->b->len;
	return 1;
}

/* Sends request bytes to a method as its kind asks; the status, and in
 * *responses how many messages came back. */
static test_result call_bytes(fixture *f, const grpc_metadata *md,
                              const char *path, grpc_method_kind kind,
                              const bytes *b, size_t *responses)
{
	test_result r = {0};
	grpc_status st = {0};
	size_t n = 0;
	if (kind == GRPC_METHOD_UNARY) {
		uint8_t *resp = NULL;
		size_t resp_len = 0;
		grpc_client_unary(f->srv.client, path, md, 1, CALL_TIMEOUT_MS,
		                  b->data, b->len, &resp, &resp_len, &st);
		n = resp != NULL;
		free(resp);
	} else if (kind == GRPC_METHOD_SERVER_STREAMING) {
		grpc_client_server_streaming(f->srv.client, path, md, 1,
		                             CALL_TIMEOUT_MS, b->data, b->len,
		                             count_message, &n, &st);
	} else {
		one_message o = {b, false};
		grpc_client_streaming(f->srv.client, path, md, 1,
		                      CALL_TIMEOUT_MS, next_message, &o,
		                      count_message, &n, NULL, NULL, &st);
	}
	r.code = st.code;
	snprintf(r.message, sizeof(r.message), "%s",
	         st.message ? st.message : "");
	grpc_status_clear(&st);
	if (responses)
		*responses = n;
	return r;
}

/* ============================================================ field paths */

#define MAX_PATH 16

/* A string field reached from a request type: step i is field f[i] of
 * message in[i]. */
typedef struct field_path {
	const ProtobufCMessageDescriptor *in[MAX_PATH];
	const ProtobufCFieldDescriptor *f[MAX_PATH];
	size_t n;
} field_path;

static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
	size_t n = strlen(d->short_name);
	return n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 &&
	       d->n_fields == 2 && strcmp(d->fields[0].name, "key") == 0 &&
	       strcmp(d->fields[1].name, "value") == 0;
}

typedef void (*path_fn)(const field_path *p, void *ctx);

/* Calls fn for every string field reachable from d.  A message type is
 * entered at most twice on one path, which bounds the recursive types
 * (Struct -> Value -> Struct) while still reaching a Struct inside a
 * Struct and a list inside a list. */
static void each_string_path(const ProtobufCMessageDescriptor *d, field_path *p,
                             path_fn fn, void *ctx)
{
	if (p->n == MAX_PATH)
		return;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		p->in[p->n] = d;
		p->f[p->n] = f;
		p->n++;
		if (f->type == PROTOBUF_C_TYPE_STRING) {
			fn(p, ctx);
		} else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			int seen = 0;
			for (size_t k = 0; k < p->n; k++)
				seen += p->in[k] == f->descriptor;
			if (seen < 2)
				each_string_path(f->descriptor, p, fn, ctx);
		}
		p->n--;
	}
}

static size_t put_field(uint8_t *out, uint32_t number, const uint8_t *payload,
                        size_t len)
{
	size_t n = 0;
	uint64_t key = (uint64_t)number << 3 | 2;
	for (uint64_t v = key;; v >>= 7) {
		out[n++] = (uint8_t)(v < 0x80 ? v : (v & 0x7f) | 0x80);
		if (v < 0x80)
			break;
	}
	for (uint64_t v = len;; v >>= 7) {
		out[n++] = (uint8_t)(v < 0x80 ? v : (v & 0x7f) | 0x80);
		if (v < 0x80)
			break;
	}
	memcpy(out + n, payload, len);
	return n + len;
}

/* The request bytes setting only p's field, to `value`; a map entry on
 * the way gets the key "k". */
static bytes encode_path(const field_path *p, const char *value, size_t len)
{
	bytes b = {malloc(len + 1), len};
	memcpy(b.data, value, len);
	for (size_t i = p->n; i-- > 0;) {
		uint8_t *out = malloc(b.len + 32);
		size_t n = 0;
		if (is_map_entry(p->in[i]) && p->f[i]->id == 2)
			n += put_field(out, 1, (const uint8_t *)"k", 1);
		n += put_field(out + n, p->f[i]->id, b.data, b.len);
		free(b.data);
		b.data = out;
		b.len = n;
	}
	return b;
}

/* The name the server must give p's field. */
static void path_name(const field_path *p, char *out, size_t cap)
{
	size_t n = 0;
	out[0] = '\0';
	for (size_t i = 0; i < p->n; i++) {
		if (is_map_entry(p->in[i]) && p->f[i]->id == 2)
			continue; /* fields["k"], not fields["k"].value */
		const ProtobufCFieldDescriptor *f = p->f[i];
		n += snprintf(out + n, cap - n, "%s%s", n ? "." : "", f->name);
		if (f->label != PROTOBUF_C_LABEL_REPEATED)
			continue;
		bool entry = f->type == PROTOBUF_C_TYPE_MESSAGE &&
		             is_map_entry(f->descriptor);
		bool key = i + 1 < p->n && p->f[i + 1]->id == 1;
		n += snprintf(out + n, cap - n, "%s",
		              entry && !key ? "[\"k\"]" : "[0]");
	}
}

typedef struct table_run {
	fixture *f;
	const grpc_method *method;
	size_t paths, calls;
} table_run;

static void send_bad_string(const field_path *p, void *ctx)
{
	table_run *t = ctx;
	static const struct {
		const char *value;
		size_t len;
		const char *problem;
	} bad[] = {
	    {"a\0b", 3, "contains a NUL byte"},
	    {"a\xc0\x80z", 4, "is not valid UTF-8"}, /* overlong NUL */
	};
	char name[512];
	path_name(p, name, sizeof(name));
	t->paths++;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bytes b = encode_path(p, bad[i].value, bad[i].len);
		size_t responses = 0;
		test_result r = call_bytes(t->f, auth_md, t->method->path,
		                           t->method->kind, &b, &responses);
		free(b.data);
		t->calls++;
		char want[768];
		snprintf(want, sizeof(want), "invalid argument: field %s %s",
		         name, bad[i].problem);
		if (r.code != GRPC_STATUS_INVALID_ARGUMENT ||
		    strcmp(r.message, want) != 0 || responses != 0)
			fail_msg("%s with %s: status %s (%s), %zu responses; "
			         "want INVALID_ARGUMENT (%s)",
			         t->method->path, name,
			         grpc_status_name(r.code), r.message, responses,
			         want);
	}
}

/* ============================================================ tests */

static void test_every_string_field_of_every_request_is_checked(void **s)
{
	fixture *f = start();
	setup(f);
	pemba_revision before = head(f);
	assert_true(before > 0);

	svc_backend backend = {0};
	grpc_method methods[SERVICES_MAX_METHODS];
	size_t n = services_methods(&backend, methods, SERVICES_MAX_METHODS);
	size_t total_paths = 0, total_calls = 0;
	for (size_t i = 0; i < n; i++) {
		const ProtobufCMessageDescriptor *d =
		    svc_request_descriptor(methods[i].path);
		if (!d)
			fail_msg("no request type for %s", methods[i].path);
		table_run t = {.f = f, .method = &methods[i]};
		field_path p = {.n = 0};
		each_string_path(d, &p, send_bad_string, &t);
		total_paths += t.paths;
		total_calls += t.calls;
		/* Nothing was written, whatever the method. */
		if (head(f) != before)
			fail_msg("%s: the head moved from %llu to %llu",
			         methods[i].path, (unsigned long long)before,
			         (unsigned long long)head(f));
	}
	/* Every method of the table was tried, and the walk reached the
	 * deep paths (a caveat context's Struct in a relationship). */
	assert_true(n > 20);
	assert_true(total_paths > 200);
	print_message("%zu methods, %zu string field paths, %zu calls\n", n,
	              total_paths, total_calls);

	/* The server is still serving, the data still there. */
	assert_int_equal(head(f), before);
	stop(f);
}

static void test_write_with_nul_in_object_id_creates_nothing(void **s)
{
	fixture *f = start();
	setup(f);
	pemba_revision before = head(f);

	rel_msg m;
	rel_init(&m, "doc:secret=junk#viewer@user:anne");
	Authzed__Api__V1__RelationshipUpdate up =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	up.operation =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
	up.relationship = &m.rel;
	Authzed__Api__V1__RelationshipUpdate *ups[] = {&up};
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = ups;
	req.n_updates = 1;
	bytes b = pack(&req.base);
	replace(&b, "secret=junk", "secret\0junk", 11);
	test_result r = call_bytes(f, auth_md, PS "WriteRelationships",
	                           GRPC_METHOD_UNARY, &b, NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_string_equal(r.message,
	                    "invalid argument: field "
	                    "updates[0].relationship.resource.object_id "
	                    "contains a NUL byte");
	free(b.data);
	pemba_free(m.storage);
	assert_int_equal(head(f), before);

	/* doc:secret was not created: no permission, nothing to read. */
	rel_init(&m, "doc:secret#view@user:anne");
	Authzed__Api__V1__CheckPermissionRequest cp =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	cp.resource = &m.res;
	cp.permission = "view";
	cp.subject = &m.subj;
	r = call(f, PS "CheckPermission", &cp.base,
	         &authzed__api__v1__check_permission_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	assert_int_equal(
	    ((Authzed__Api__V1__CheckPermissionResponse *)r.resp)
	        ->permissionship,
	    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION);
	test_result_done(&r);
	Authzed__Api__V1__RelationshipFilter filter =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	filter.resource_type = "doc";
	filter.optional_resource_id = "secret";
	Authzed__Api__V1__ReadRelationshipsRequest rr =
	    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
	rr.relationship_filter = &filter;
	test_stream st = {0};
	test_call_stream(
	    f->srv.client, auth_md, 1, PS "ReadRelationships", &rr.base,
	    &authzed__api__v1__read_relationships_response__descriptor, &st);
	expect_status(st.r, GRPC_STATUS_OK);
	assert_int_equal(st.n, 0);
	test_stream_done(&st);
	pemba_free(m.storage);
	stop(f);
}

static void test_check_with_nul_in_caveat_context_is_refused(void **s)
{
	fixture *f = start();
	setup(f);
	rel_msg m;
	rel_init(&m, "doc:readme#view@user:anne");
	Authzed__Api__V1__CheckPermissionRequest cp =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	cp.resource = &m.res;
	cp.permission = "view";
	cp.subject = &m.subj;
	const char *json = "{\"tags\":[\"r~~~\"],\"tag\":\"red~junk\"}";
	cp.context = api_struct_from_json(json, strlen(json));
	assert_non_null(cp.context);
	bytes b = pack(&cp.base);
	replace(&b, "red~junk", "red\0junk", 8);
	test_result r = call_bytes(f, auth_md, PS "CheckPermission",
	                           GRPC_METHOD_UNARY, &b, NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_string_equal(r.message, "invalid argument: field "
	                               "context.fields[\"tag\"].string_value "
	                               "contains a NUL byte");
	free(b.data);
	/* The same in a list, and invalid UTF-8. */
	b = pack(&cp.base);
	replace(&b, "r~~~", "r\xed\xa0\x80", 4); /* a surrogate */
	r = call_bytes(f, auth_md, PS "CheckPermission", GRPC_METHOD_UNARY, &b,
	               NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_string_equal(r.message,
	                    "invalid argument: field "
	                    "context.fields[\"tags\"].list_value.values[0]."
	                    "string_value is not valid UTF-8");
	free(b.data);
	api_struct_free(cp.context);
	pemba_free(m.storage);
	stop(f);
}

static void test_import_with_nul_imports_nothing(void **s)
{
	fixture *f = start();
	setup(f);
	pemba_revision before = head(f);
	rel_msg a, b2;
	rel_init(&a, "doc:one#viewer@user:anne");
	rel_init(&b2, "doc:two#viewer@user:bob=x");
	Authzed__Api__V1__Relationship *rels[] = {&a.rel, &b2.rel};
	Authzed__Api__V1__ImportBulkRelationshipsRequest req =
	    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	req.relationships = rels;
	req.n_relationships = 2;
	bytes b = pack(&req.base);
	replace(&b, "bob=x", "bob\0x", 5);
	static const char *const paths[] = {
	    PS "ImportBulkRelationships",
	    "/authzed.api.v1.ExperimentalService/BulkImportRelationships",
	};
	for (size_t i = 0; i < 2; i++) {
		test_result r =
		    call_bytes(f, auth_md, paths[i],
		               GRPC_METHOD_CLIENT_STREAMING, &b, NULL);
		expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
		assert_string_equal(r.message,
		                    "invalid argument: field "
		                    "relationships[1].subject.object.object_id "
		                    "contains a NUL byte");
		assert_int_equal(head(f), before);
	}
	free(b.data);
	pemba_free(a.storage);
	pemba_free(b2.storage);
	stop(f);
}

/* Header values are not protobuf, but the same trick must not work
 * there: HTTP/2 refuses a NUL in a field value (RFC 9113, 8.2.1), so the
 * key "KEY\0junk" never reaches the comparison as "KEY". */
static void test_nul_in_metadata_is_refused(void **s)
{
	fixture *f = start();
	static const char value[] = "Bearer " KEY "\0junk";
	const grpc_metadata md[1] = {
	    {"authorization", value, sizeof(value) - 1}};
	Authzed__Api__V1__ReadSchemaRequest rs =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	bytes b = pack(&rs.base);
	test_result r =
	    call_bytes(f, md, "/authzed.api.v1.SchemaService/ReadSchema",
	               GRPC_METHOD_UNARY, &b, NULL);
	free(b.data);
	if (r.code == GRPC_STATUS_OK || r.code == GRPC_STATUS_NOT_FOUND)
		fail_msg("a key with a NUL was accepted: %s (%s)",
		         grpc_status_name(r.code), r.message);
	/* The server still serves well-formed calls. */
	grpc_client_close(f->srv.client);
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d",
	         server_port(f->srv.server));
	grpc_client_options co;
	grpc_client_options_init(&co);
	co.target = target;
	pemba_error err;
	assert_int_equal(grpc_client_connect(&co, &f->srv.client, &err), 0);
	r = call(f, "/authzed.api.v1.SchemaService/ReadSchema", &rs.base, NULL);
	expect_status(r, GRPC_STATUS_NOT_FOUND); /* no schema yet */
	stop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_every_string_field_of_every_request_is_checked),
	    cmocka_unit_test(test_write_with_nul_in_object_id_creates_nothing),
	    cmocka_unit_test(test_check_with_nul_in_caveat_context_is_refused),
	    cmocka_unit_test(test_import_with_nul_imports_nothing),
	    cmocka_unit_test(test_nul_in_metadata_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
