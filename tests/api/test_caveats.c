/*
 * test_caveats.c -- caveats through the gRPC API, end to end: a pemba
 * server in-process on an ephemeral port, driven with the transport's
 * client.  Caveated relationships written with a google.protobuf.Struct
 * context and read back (ReadRelationships, export, watch, import), checks
 * with and without a request context (HAS / NO / CONDITIONAL with
 * partial_caveat_info), bulk checks per item, lookups with a context, and
 * contexts whose values do not suit the caveat's parameter types.
 */
#include <math.h>
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
#include "api/struct_json.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "grpc_fixture.h"
#include "pg_fixture.h"
#include "server/server.h"

#define KEY "caveat-key"
#define PS "/authzed.api.v1.PermissionsService/"

static const char *SCHEMA =
    "definition user {}\n"
    "caveat has_level(level int, min int) {\n\tlevel >= min\n}\n"
    "caveat tagged(tag string, tags list<string>) {\n\ttag in tags\n}\n"
    "definition doc {\n"
    "\trelation viewer: user | user with has_level\n"
    "\trelation tagger: user with tagged\n"
    "\tpermission view = viewer\n"
    "\tpermission tag = tagger\n"
    "}\n";

#define HAS                                                                    \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION
#define NO                                                                     \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION
#define CONDITIONAL                                                            \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION
#define TOUCH AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH

/* ============================================================ fixture */

typedef struct fixture {
	test_server srv;
	char dir[64];
} fixture;

static fixture *start(void)
{
	static const char *const keys[] = {KEY};
	fixture *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/pemba-caveats-XXXXXX");
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

/* ============================================================ calls */

typedef test_result result;
typedef test_stream stream_result;

static const grpc_metadata auth_md[1] = {{"authorization", "Bearer " KEY, 0}};

static result call(fixture *f, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *d)
{
	return test_call(f->srv.client, auth_md, 1, path, req, d);
}

#define done test_result_done
#define stream_done test_stream_done

#define expect_status(r, want)                                                 \
	do {                                                                   \
		if ((r).code != (want))                                        \
			fail_msg("status %s (%s), want %s",                    \
			         grpc_status_name((r).code), (r).message,      \
			         grpc_status_name(want));                      \
	} while (0)

static void call_stream(fixture *f, const char *path,
                        const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *d, stream_result *s)
{
	test_call_stream(f->srv.client, auth_md, 1, path, req, d, s);
}

/* ============================================================ builders */

/* A Struct from JSON object text (test input: must parse). */
static Google__Protobuf__Struct *json(const char *text)
{
	Google__Protobuf__Struct *s = api_struct_from_json(text, strlen(text));
	if (!s)
		fail_msg("not a JSON object: %s", text);
	return s;
}

/* A wire relationship parsed from the relationship syntax, caveat and
 * context included: "doc:1#viewer@user:anne[has_level:{\"min\":3}]". */
typedef struct rel_msg {
	Authzed__Api__V1__Relationship rel;
	Authzed__Api__V1__ObjectReference res, subj_obj;
	Authzed__Api__V1__SubjectReference subj;
	Authzed__Api__V1__ContextualizedCaveat caveat;
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
	if (p->subject_relation && strcmp(p->subject_relation, "...") != 0)
		m->subj.optional_relation = (char *)p->subject_relation;
	m->subj.object = &m->subj_obj;
	m->rel.resource = &m->res;
	m->rel.subject = &m->subj;
	if (p->caveat_name && p->caveat_name[0]) {
		authzed__api__v1__contextualized_caveat__init(&m->caveat);
		m->caveat.caveat_name = (char *)p->caveat_name;
		if (p->caveat_context && p->caveat_context[0])
			m->caveat.context = json(p->caveat_context);
		m->rel.optional_caveat = &m->caveat;
	}
}

static void rel_free(rel_msg *m)
{
	if (m->rel.optional_caveat)
		api_struct_free(m->caveat.context);
	pemba_free(m->storage);
}

/* TOUCHes the relationships in one WriteRelationships call. */
static result write_rels(fixture *f, const char *const *texts, size_t n)
{
	rel_msg *msgs = calloc(n + 1, sizeof(*msgs));
	Authzed__Api__V1__RelationshipUpdate *ups = calloc(n + 1, sizeof(*ups));
	Authzed__Api__V1__RelationshipUpdate **pups =
	    calloc(n + 1, sizeof(*pups));
	for (size_t i = 0; i < n; i++) {
		rel_init(&msgs[i], texts[i]);
		authzed__api__v1__relationship_update__init(&ups[i]);
		ups[i].operation = TOUCH;
		ups[i].relationship = &msgs[i].rel;
		pups[i] = &ups[i];
	}
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = pups;
	req.n_updates = n;
	result r =
	    call(f, PS "WriteRelationships", &req.base,
	         &authzed__api__v1__write_relationships_response__descriptor);
	for (size_t i = 0; i < n; i++)
		rel_free(&msgs[i]);
	free(msgs);
	free(ups);
	free(pups);
	return r;
}

static void setup(fixture *f)
{
	Authzed__Api__V1__WriteSchemaRequest ws =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	ws.schema = (char *)SCHEMA;
	result r =
	    call(f, "/authzed.api.v1.SchemaService/WriteSchema", &ws.base,
	         &authzed__api__v1__write_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	static const char *const rels[] = {
	    "doc:1#viewer@user:anne[has_level:{\"min\":3}]",
	    "doc:2#viewer@user:bob[has_level]",
	    "doc:3#viewer@user:carl",
	    "doc:4#tagger@user:dan[tagged:{\"tags\":[\"red\",\"blue\"]}]",
	};
	r = write_rels(f, rels, 4);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
}

/* CheckPermission "doc:1#view@user:anne" with a context (NULL: none). */
static result check(fixture *f, const char *text, const char *context)
{
	rel_msg m;
	rel_init(&m, text);
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	Authzed__Api__V1__Consistency c = AUTHZED__API__V1__CONSISTENCY__INIT;
	c.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
	c.fully_consistent = 1;
	req.consistency = &c;
	req.resource = &m.res;
	req.permission = m.rel.relation;
	req.subject = &m.subj;
	req.context = context ? json(context) : NULL;
	result r =
	    call(f, PS "CheckPermission", &req.base,
	         &authzed__api__v1__check_permission_response__descriptor);
	api_struct_free(req.context);
	rel_free(&m);
	return r;
}

/* The missing parameter names of a PartialCaveatInfo, comma-separated
 * ("" when absent), in buf. */
static const char *missing_text(const Authzed__Api__V1__PartialCaveatInfo *in,
                                char *buf, size_t n)
{
	buf[0] = '\0';
	for (size_t k = 0; in && k < in->n_missing_required_context; k++)
		snprintf(buf + strlen(buf), n - strlen(buf), "%s%s",
		         k ? "," : "", in->missing_required_context[k]);
	return buf;
}

/* Checks and compares the permissionship and the missing names. */
static void expect_permission(fixture *f, const char *text, const char *context,
                              int want, const char *want_missing)
{
	result r = check(f, text, context);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__CheckPermissionResponse *resp = (void *)r.resp;
	char buf[256];
	if ((int)resp->permissionship != want)
		fail_msg("%s with %s: permissionship %d, want %d", text,
		         context ? context : "no context",
		         (int)resp->permissionship, want);
	assert_string_equal(
	    missing_text(resp->partial_caveat_info, buf, sizeof(buf)),
	    want_missing);
	if (want != CONDITIONAL)
		assert_null(resp->partial_caveat_info);
	assert_non_null(resp->checked_at);
	done(&r);
}

static const Google__Protobuf__Value *field(const Google__Protobuf__Struct *s,
                                            const char *key)
{
	for (size_t k = 0; s && k < s->n_fields; k++)
		if (strcmp(s->fields[k]->key, key) == 0)
			return s->fields[k]->value;
	return NULL;
}

/* ReadRelationships of doc:ID (every relation). */
static void read_doc(fixture *f, const char *id, stream_result *s)
{
	Authzed__Api__V1__ReadRelationshipsRequest req =
	    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
	Authzed__Api__V1__RelationshipFilter filter =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	filter.resource_type = "doc";
	filter.optional_resource_id = (char *)id;
	req.relationship_filter = &filter;
	call_stream(f, PS "ReadRelationships", &req.base,
	            &authzed__api__v1__read_relationships_response__descriptor,
	            s);
	expect_status(s->r, GRPC_STATUS_OK);
}

static const Authzed__Api__V1__Relationship *read_one(const stream_result *s)
{
	assert_int_equal(s->n, 1);
	return ((Authzed__Api__V1__ReadRelationshipsResponse *)s->msgs[0])
	    ->relationship;
}

/* ============================================================ tests */

static void test_read_returns_caveat_name_and_context_as_written(void **state)
{
	fixture *f = start();
	setup(f);
	stream_result s = {0};

	read_doc(f, "1", &s);
	const Authzed__Api__V1__Relationship *rel = read_one(&s);
	assert_non_null(rel->optional_caveat);
	assert_string_equal(rel->optional_caveat->caveat_name, "has_level");
	const Google__Protobuf__Struct *ctx = rel->optional_caveat->context;
	assert_non_null(ctx);
	assert_int_equal(ctx->n_fields, 1);
	const Google__Protobuf__Value *min = field(ctx, "min");
	assert_non_null(min);
	assert_int_equal(min->kind_case,
	                 GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
	assert_true(min->number_value == 3.0);
	stream_done(&s);

	/* A list survives the round trip, in order. */
	read_doc(f, "4", &s);
	rel = read_one(&s);
	assert_string_equal(rel->optional_caveat->caveat_name, "tagged");
	const Google__Protobuf__Value *tags =
	    field(rel->optional_caveat->context, "tags");
	assert_non_null(tags);
	assert_int_equal(tags->kind_case,
	                 GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
	assert_int_equal(tags->list_value->n_values, 2);
	assert_string_equal(tags->list_value->values[0]->string_value, "red");
	assert_string_equal(tags->list_value->values[1]->string_value, "blue");
	stream_done(&s);

	/* Written without a context: the caveat comes back with an empty
	 * context, as SpiceDB answers. */
	read_doc(f, "2", &s);
	rel = read_one(&s);
	assert_non_null(rel->optional_caveat);
	assert_string_equal(rel->optional_caveat->caveat_name, "has_level");
	assert_non_null(rel->optional_caveat->context);
	assert_int_equal(rel->optional_caveat->context->n_fields, 0);
	stream_done(&s);

	/* No caveat: no optional_caveat. */
	read_doc(f, "3", &s);
	assert_null(read_one(&s)->optional_caveat);
	stream_done(&s);
	stop(f);
}

static void test_touch_replaces_the_caveat_context(void **state)
{
	fixture *f = start();
	setup(f);
	static const char *const rel[] = {
	    "doc:1#viewer@user:anne[has_level:{\"min\":10}]"};
	result r = write_rels(f, rel, 1);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	stream_result s = {0};
	read_doc(f, "1", &s);
	const Google__Protobuf__Value *min =
	    field(read_one(&s)->optional_caveat->context, "min");
	assert_non_null(min);
	assert_true(min->number_value == 10.0);
	stream_done(&s);
	expect_permission(f, "doc:1#view@user:anne", "{\"level\":5}", NO, "");
	stop(f);
}

static void test_check_evaluates_caveats_with_request_context(void **state)
{
	fixture *f = start();
	setup(f);
	/* The relationship's context gives min; the request gives level. */
	expect_permission(f, "doc:1#view@user:anne", "{\"level\":5}", HAS, "");
	expect_permission(f, "doc:1#view@user:anne", "{\"level\":1}", NO, "");
	/* Integral numbers reach an int parameter whatever their form. */
	expect_permission(f, "doc:1#view@user:anne", "{\"level\":3.0}", HAS,
	                  "");
	/* The relationship's value wins over the request's. */
	expect_permission(f, "doc:1#view@user:anne", "{\"level\":5,\"min\":9}",
	                  HAS, "");
	/* Without the parameter: CONDITIONAL, naming what is missing. */
	expect_permission(f, "doc:1#view@user:anne", NULL, CONDITIONAL,
	                  "level");
	expect_permission(f, "doc:1#view@user:anne", "{}", CONDITIONAL,
	                  "level");
	/* Both parameters missing: SpiceDB names only the first one the
	 * expression needs. */
	expect_permission(f, "doc:2#view@user:bob", NULL, CONDITIONAL, "level");
	expect_permission(f, "doc:2#view@user:bob", "{\"level\":1}",
	                  CONDITIONAL, "min");
	expect_permission(f, "doc:2#view@user:bob", "{\"level\":2,\"min\":2}",
	                  HAS, "");
	/* Uncaveated relationships ignore the context. */
	expect_permission(f, "doc:3#view@user:carl", "{\"level\":0}", HAS, "");
	expect_permission(f, "doc:3#view@user:anne", "{\"level\":9}", NO, "");
	/* Lists. */
	expect_permission(f, "doc:4#tag@user:dan", "{\"tag\":\"red\"}", HAS,
	                  "");
	expect_permission(f, "doc:4#tag@user:dan", "{\"tag\":\"green\"}", NO,
	                  "");
	expect_permission(f, "doc:4#tag@user:dan", NULL, CONDITIONAL, "tag");
	stop(f);
}

static void test_check_context_of_wrong_type_is_invalid_argument(void **state)
{
	fixture *f = start();
	setup(f);
	result r = check(f, "doc:1#view@user:anne", "{\"level\":\"high\"}");
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	if (!strstr(r.message, "level"))
		fail_msg("message does not name the parameter: %s", r.message);
	done(&r);
	stop(f);
}

static void test_write_context_of_wrong_type_is_invalid_argument(void **state)
{
	fixture *f = start();
	setup(f);
	static const char *const bad[] = {
	    "doc:5#viewer@user:erin[has_level:{\"min\":\"high\"}]",
	    "doc:5#viewer@user:erin[has_level:{\"min\":1.5}]",
	    "doc:5#tagger@user:erin[tagged:{\"tags\":\"red\"}]",
	};
	static const char *const param[] = {"min", "min", "tags"};
	for (size_t i = 0; i < 3; i++) {
		result r = write_rels(f, &bad[i], 1);
		expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
		if (!strstr(r.message, param[i]))
			fail_msg("%s: message does not name `%s`: %s", bad[i],
			         param[i], r.message);
		done(&r);
	}
	/* Nothing was written. */
	stream_result s = {0};
	read_doc(f, "5", &s);
	assert_int_equal(s.n, 0);
	stop(f);
}

static void
test_write_unknown_caveat_nameless_caveat_or_wrong_relation_fails(void **state)
{
	fixture *f = start();
	setup(f);
	static const char *const unknown[] = {
	    "doc:5#viewer@user:erin[no_such_caveat]"};
	/* As SpiceDB: "subjects of type `user with no_such_caveat` are not
	 * allowed on relation `doc#viewer`". */
	result r = write_rels(f, unknown, 1);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(r.message, "no_such_caveat"));
	done(&r);
	/* A caveat message without a name. */
	rel_msg m;
	rel_init(&m, "doc:5#viewer@user:erin");
	authzed__api__v1__contextualized_caveat__init(&m.caveat);
	m.caveat.caveat_name = "";
	m.rel.optional_caveat = &m.caveat;
	Authzed__Api__V1__RelationshipUpdate up =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	up.operation = TOUCH;
	up.relationship = &m.rel;
	Authzed__Api__V1__RelationshipUpdate *ups[] = {&up};
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = ups;
	req.n_updates = 1;
	r = call(f, PS "WriteRelationships", &req.base, NULL);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(r.message, "caveat_name"));
	done(&r);
	m.rel.optional_caveat = NULL;
	rel_free(&m);
	/* A relation that does not allow the caveat. */
	static const char *const wrong[] = {
	    "doc:5#tagger@user:erin[has_level]"};
	r = write_rels(f, wrong, 1);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	done(&r);
	stop(f);
}

/* CheckBulkPermissions item. */
typedef struct bulk_item {
	const char *check;
	const char *context;
	int want;
	const char *want_missing;
} bulk_item;

static void test_bulk_check_uses_each_items_context(void **state)
{
	fixture *f = start();
	setup(f);
	static const bulk_item items[] = {
	    {"doc:1#view@user:anne", "{\"level\":5}", HAS, ""},
	    {"doc:1#view@user:anne", "{\"level\":1}", NO, ""},
	    {"doc:1#view@user:anne", NULL, CONDITIONAL, "level"},
	    {"doc:2#view@user:bob", "{\"level\":1}", CONDITIONAL, "min"},
	    {"doc:2#view@user:bob", NULL, CONDITIONAL, "level"},
	    {"doc:3#view@user:carl", NULL, HAS, ""},
	    {"doc:4#tag@user:dan", "{\"tag\":\"blue\"}", HAS, ""},
	};
	enum { N = sizeof(items) / sizeof(items[0]) };
	rel_msg msgs[N];
	Authzed__Api__V1__CheckBulkPermissionsRequestItem it[N], *pit[N];
	for (size_t i = 0; i < N; i++) {
		rel_init(&msgs[i], items[i].check);
		authzed__api__v1__check_bulk_permissions_request_item__init(
		    &it[i]);
		it[i].resource = &msgs[i].res;
		it[i].permission = msgs[i].rel.relation;
		it[i].subject = &msgs[i].subj;
		it[i].context =
		    items[i].context ? json(items[i].context) : NULL;
		pit[i] = &it[i];
	}
	Authzed__Api__V1__CheckBulkPermissionsRequest req =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST__INIT;
	req.items = pit;
	req.n_items = N;
	result r = call(
	    f, PS "CheckBulkPermissions", &req.base,
	    &authzed__api__v1__check_bulk_permissions_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__CheckBulkPermissionsResponse *resp = (void *)r.resp;
	assert_int_equal(resp->n_pairs, N);
	for (size_t i = 0; i < N; i++) {
		const Authzed__Api__V1__CheckBulkPermissionsPair *p =
		    resp->pairs[i];
		if (p->response_case !=
		    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM)
			fail_msg("item %zu: error %s", i,
			         p->error ? p->error->message : "?");
		char buf[256];
		if ((int)p->item->permissionship != items[i].want)
			fail_msg("item %zu (%s): permissionship %d, want %d", i,
			         items[i].check, (int)p->item->permissionship,
			         items[i].want);
		assert_string_equal(missing_text(p->item->partial_caveat_info,
		                                 buf, sizeof(buf)),
		                    items[i].want_missing);
		/* The request item is echoed with its context. */
		assert_non_null(p->request);
		assert_int_equal(p->request->context != NULL,
		                 items[i].context != NULL);
	}
	done(&r);
	for (size_t i = 0; i < N; i++) {
		api_struct_free(it[i].context);
		rel_free(&msgs[i]);
	}
	stop(f);
}

static void test_bulk_check_bad_context_fails_only_its_item(void **state)
{
	fixture *f = start();
	setup(f);
	rel_msg m[2];
	Authzed__Api__V1__CheckBulkPermissionsRequestItem it[2], *pit[2];
	static const char *const ctx[2] = {"{\"level\":\"x\"}",
	                                   "{\"level\":7}"};
	for (size_t i = 0; i < 2; i++) {
		rel_init(&m[i], "doc:1#view@user:anne");
		authzed__api__v1__check_bulk_permissions_request_item__init(
		    &it[i]);
		it[i].resource = &m[i].res;
		it[i].permission = m[i].rel.relation;
		it[i].subject = &m[i].subj;
		it[i].context = json(ctx[i]);
		pit[i] = &it[i];
	}
	Authzed__Api__V1__CheckBulkPermissionsRequest req =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST__INIT;
	req.items = pit;
	req.n_items = 2;
	result r = call(
	    f, PS "CheckBulkPermissions", &req.base,
	    &authzed__api__v1__check_bulk_permissions_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__CheckBulkPermissionsResponse *resp = (void *)r.resp;
	assert_int_equal(resp->n_pairs, 2);
	assert_int_equal(
	    resp->pairs[0]->response_case,
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR);
	assert_int_equal(resp->pairs[0]->error->code,
	                 GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(resp->pairs[0]->error->message, "level"));
	assert_int_equal(
	    resp->pairs[1]->response_case,
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM);
	assert_int_equal(resp->pairs[1]->item->permissionship, HAS);
	done(&r);
	for (size_t i = 0; i < 2; i++) {
		api_struct_free(it[i].context);
		rel_free(&m[i]);
	}
	stop(f);
}

#define LOOKUP_HAS                                                             \
	AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_HAS_PERMISSION
#define LOOKUP_CONDITIONAL                                                     \
	AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION

/* LookupResources doc#view for user:ID with a context: "1=H,2=C" lists. */
static void lookup_resources(fixture *f, const char *user, const char *context,
                             char *out, size_t n)
{
	Authzed__Api__V1__LookupResourcesRequest req =
	    AUTHZED__API__V1__LOOKUP_RESOURCES_REQUEST__INIT;
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	Authzed__Api__V1__ObjectReference obj =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	obj.object_type = "user";
	obj.object_id = (char *)user;
	subj.object = &obj;
	req.resource_object_type = "doc";
	req.permission = "view";
	req.subject = &subj;
	req.context = context ? json(context) : NULL;
	stream_result s = {0};
	call_stream(f, PS "LookupResources", &req.base,
	            &authzed__api__v1__lookup_resources_response__descriptor,
	            &s);
	expect_status(s.r, GRPC_STATUS_OK);
	out[0] = '\0';
	for (size_t i = 0; i < s.n; i++) {
		Authzed__Api__V1__LookupResourcesResponse *lr =
		    (void *)s.msgs[i];
		snprintf(out + strlen(out), n - strlen(out), "%s%s=%s",
		         i ? "," : "", lr->resource_object_id,
		         lr->permissionship == LOOKUP_HAS           ? "H"
		         : lr->permissionship == LOOKUP_CONDITIONAL ? "C"
		                                                    : "?");
	}
	stream_done(&s);
	api_struct_free(req.context);
}

/* LookupSubjects doc:ID#view for users with a context. */
static void lookup_subjects(fixture *f, const char *doc, const char *context,
                            char *out, size_t n)
{
	Authzed__Api__V1__LookupSubjectsRequest req =
	    AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__INIT;
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	res.object_type = "doc";
	res.object_id = (char *)doc;
	req.resource = &res;
	req.permission = "view";
	req.subject_object_type = "user";
	req.context = context ? json(context) : NULL;
	stream_result s = {0};
	call_stream(f, PS "LookupSubjects", &req.base,
	            &authzed__api__v1__lookup_subjects_response__descriptor,
	            &s);
	expect_status(s.r, GRPC_STATUS_OK);
	out[0] = '\0';
	for (size_t i = 0; i < s.n; i++) {
		Authzed__Api__V1__LookupSubjectsResponse *ls =
		    (void *)s.msgs[i];
		assert_non_null(ls->subject);
		int p = ls->subject->permissionship;
		snprintf(out + strlen(out), n - strlen(out), "%s%s=%s",
		         i ? "," : "", ls->subject->subject_object_id,
		         p == LOOKUP_HAS           ? "H"
		         : p == LOOKUP_CONDITIONAL ? "C"
		                                   : "?");
	}
	stream_done(&s);
	api_struct_free(req.context);
}

static void test_lookups_pass_the_request_context(void **state)
{
	fixture *f = start();
	setup(f);
	char out[256];
	lookup_resources(f, "anne", "{\"level\":5}", out, sizeof(out));
	assert_string_equal(out, "1=H");
	lookup_resources(f, "anne", "{\"level\":1}", out, sizeof(out));
	assert_string_equal(out, "");
	lookup_resources(f, "anne", NULL, out, sizeof(out));
	assert_string_equal(out, "1=C");
	lookup_resources(f, "bob", "{\"level\":4,\"min\":4}", out, sizeof(out));
	assert_string_equal(out, "2=H");
	lookup_subjects(f, "1", "{\"level\":5}", out, sizeof(out));
	assert_string_equal(out, "anne=H");
	lookup_subjects(f, "1", "{\"level\":0}", out, sizeof(out));
	assert_string_equal(out, "");
	lookup_subjects(f, "1", NULL, out, sizeof(out));
	assert_string_equal(out, "anne=C");
	stop(f);
}

/* ExportBulkRelationships, then ImportBulkRelationships of the same
 * relationships into a fresh server: caveats and contexts survive. */
typedef struct feed {
	uint8_t *buf;
	size_t len;
	int sent;
} feed;

static int next_message(void *ctx, const void **data, size_t *len)
{
	feed *fd = ctx;
	if (fd->sent)
		return 0;
	fd->sent = 1;
	*data = fd->buf;
	*len = fd->len;
	return 1;
}

static void test_export_then_import_keeps_caveats(void **state)
{
	fixture *f = start();
	setup(f);
	Authzed__Api__V1__ExportBulkRelationshipsRequest ex =
	    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	stream_result s = {0};
	call_stream(
	    f, PS "ExportBulkRelationships", &ex.base,
	    &authzed__api__v1__export_bulk_relationships_response__descriptor,
	    &s);
	expect_status(s.r, GRPC_STATUS_OK);
	assert_int_equal(s.n, 1);
	Authzed__Api__V1__ExportBulkRelationshipsResponse *er =
	    (void *)s.msgs[0];
	assert_int_equal(er->n_relationships, 4);
	size_t caveated = 0;
	for (size_t i = 0; i < er->n_relationships; i++) {
		const Authzed__Api__V1__Relationship *rel =
		    er->relationships[i];
		if (strcmp(rel->resource->object_id, "1") == 0) {
			assert_non_null(rel->optional_caveat);
			assert_true(field(rel->optional_caveat->context, "min")
			                ->number_value == 3.0);
		}
		caveated += rel->optional_caveat != NULL;
	}
	assert_int_equal(caveated, 3);

	/* Into a second server. */
	fixture *g = start();
	Authzed__Api__V1__WriteSchemaRequest ws =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	ws.schema = (char *)SCHEMA;
	result r = call(g, "/authzed.api.v1.SchemaService/WriteSchema",
	                &ws.base, NULL);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__ImportBulkRelationshipsRequest im =
	    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	im.relationships = er->relationships;
	im.n_relationships = er->n_relationships;
	feed fd = {0};
	fd.len = protobuf_c_message_get_packed_size(&im.base);
	fd.buf = malloc(fd.len);
	protobuf_c_message_pack(&im.base, fd.buf);
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	grpc_client_streaming(g->srv.client, PS "ImportBulkRelationships",
	                      auth_md, 1, 10000, next_message, &fd, NULL, NULL,
	                      &resp, &resp_len, &st);
	if (st.code != 0)
		fail_msg("import: %s", st.message);
	grpc_status_clear(&st);
	free(resp);
	free(fd.buf);
	stream_done(&s);
	expect_permission(g, "doc:1#view@user:anne", "{\"level\":3}", HAS, "");
	expect_permission(g, "doc:1#view@user:anne", "{\"level\":2}", NO, "");
	expect_permission(g, "doc:2#view@user:bob", NULL, CONDITIONAL, "level");
	read_doc(g, "4", &s);
	const Google__Protobuf__Value *tags =
	    field(read_one(&s)->optional_caveat->context, "tags");
	assert_int_equal(tags->list_value->n_values, 2);
	stream_done(&s);
	stop(g);
	stop(f);
}

static void test_watch_reports_caveats(void **state)
{
	fixture *f = start();
	setup(f);
	Authzed__Api__V1__WatchRequest req =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	Authzed__Api__V1__ZedToken zt = AUTHZED__API__V1__ZED_TOKEN__INIT;
	/* Watch from the head's token, then write one more relationship. */
	stream_result s = {0};
	read_doc(f, "1", &s);
	zt.token =
	    strdup(((Authzed__Api__V1__ReadRelationshipsResponse *)s.msgs[0])
	               ->read_at->token);
	stream_done(&s);
	static const char *const rel[] = {
	    "doc:6#viewer@user:fay[has_level:{\"min\":42}]"};
	result r = write_rels(f, rel, 1);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	req.optional_start_cursor = &zt;
	s.stop_after = 1;
	call_stream(f, "/authzed.api.v1.WatchService/Watch", &req.base,
	            &authzed__api__v1__watch_response__descriptor, &s);
	assert_int_equal(s.n, 1);
	Authzed__Api__V1__WatchResponse *w = (void *)s.msgs[0];
	assert_int_equal(w->n_updates, 1);
	const Authzed__Api__V1__Relationship *got = w->updates[0]->relationship;
	assert_string_equal(got->resource->object_id, "6");
	assert_non_null(got->optional_caveat);
	assert_string_equal(got->optional_caveat->caveat_name, "has_level");
	assert_true(field(got->optional_caveat->context, "min")->number_value ==
	            42.0);
	stream_done(&s);
	free(zt.token);
	stop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_read_returns_caveat_name_and_context_as_written),
	    cmocka_unit_test(test_touch_replaces_the_caveat_context),
	    cmocka_unit_test(test_check_evaluates_caveats_with_request_context),
	    cmocka_unit_test(
	        test_check_context_of_wrong_type_is_invalid_argument),
	    cmocka_unit_test(
	        test_write_context_of_wrong_type_is_invalid_argument),
	    cmocka_unit_test(
	        test_write_unknown_caveat_nameless_caveat_or_wrong_relation_fails),
	    cmocka_unit_test(test_bulk_check_uses_each_items_context),
	    cmocka_unit_test(test_bulk_check_bad_context_fails_only_its_item),
	    cmocka_unit_test(test_lookups_pass_the_request_context),
	    cmocka_unit_test(test_export_then_import_keeps_caveats),
	    cmocka_unit_test(test_watch_reports_caveats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
