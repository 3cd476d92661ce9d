/*
 * test_debug_trace.c -- CheckPermission and CheckBulkPermissions with
 * with_tracing: the debug trace (authzed.api.v1.DebugInformation) of a
 * nested example -- a permission through a relation and a group (userset),
 * an arrow, a union, an intersection, an exclusion, one caveated branch --
 * checked over gRPC against an in-process server; the tree's shape,
 * results, permission types, cached nodes, caveat information, subject
 * and schema_used.
 */
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
#include "authzed/api/v1/debug.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "grpc_fixture.h"
#include "pg_fixture.h"
#include "server/server.h"
#include "util/strbuf.h"

#define KEY "trace-key"
#define PS "/authzed.api.v1.PermissionsService/"

static const char *SCHEMA = "caveat weekday(day int) {\n\tday < 6\n}\n"
                            "definition user {}\n"
                            "definition group {\n"
                            "\trelation member: user | group#member\n"
                            "}\n"
                            "definition folder {\n"
                            "\trelation viewer: user | user with weekday\n"
                            "\tpermission view = viewer\n"
                            "}\n"
                            "definition document {\n"
                            "\trelation parent: folder\n"
                            "\trelation owner: user\n"
                            "\trelation editor: user | group#member\n"
                            "\trelation banned: user\n"
                            "\tpermission edit = editor - banned\n"
                            "\tpermission view = owner + parent->view + edit\n"
                            "\tpermission audit = view & edit\n"
                            "}\n";

static const char *const RELS[] = {
    "group:eng#member@user:anne",
    "group:all#member@group:eng#member",
    "document:readme#editor@group:all#member",
    "document:readme#parent@folder:f",
    "folder:f#viewer@user:bob[weekday]",
    "document:readme#banned@user:carl",
    "document:readme#editor@user:carl",
};

#define HAS                                                                    \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION
#define NO                                                                     \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION
#define CONDITIONAL                                                            \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION
#define TOUCH AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH

typedef Authzed__Api__V1__CheckDebugTrace trace_msg;

/* ============================================================ fixture */

typedef struct fixture {
	test_server srv;
	char dir[64];
} fixture;

static fixture *start(void)
{
	static const char *const keys[] = {KEY};
	fixture *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/pemba-trace-XXXXXX");
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

static const grpc_metadata auth_md[1] = {{"authorization", "Bearer " KEY, 0}};

static result call(fixture *f, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *d)
{
	return test_call(f->srv.client, auth_md, 1, path, req, d);
}

#define done test_result_done

#define expect_status(r, want)                                                 \
	do {                                                                   \
		if ((r).code != (want))                                        \
			fail_msg("status %s (%s), want %s",                    \
			         grpc_status_name((r).code), (r).message,      \
			         grpc_status_name(want));                      \
	} while (0)

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
	r = write_rels(f, RELS, sizeof(RELS) / sizeof(RELS[0]));
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
}

/* CheckPermission "doc:1#view@user:anne" with a context (NULL: none),
 * with_tracing. */
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
	req.with_tracing = 1;
	result r =
	    call(f, PS "CheckPermission", &req.base,
	         &authzed__api__v1__check_permission_response__descriptor);
	api_struct_free(req.context);
	rel_free(&m);
	return r;
}

/* ============================================================ shape */

/* The tree as text: "+" has, "-" not, "?" conditional, then
 * type:id#permission, "R" or "P" (relation / permission), "*" cached, and
 * the children in parentheses. */
static void shape(strbuf *sb, const trace_msg *t)
{
	char mark =
	    t->result ==
	            AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION
	        ? '+'
	    : t->result ==
	            AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION
	        ? '-'
	    : t->result ==
	            AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION
	        ? '?'
	        : '!';
	strbuf_printf(
	    sb, "%c%s:%s#%s%c", mark, t->resource->object_type,
	    t->resource->object_id, t->permission,
	    t->permission_type ==
	            AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSION_TYPE__PERMISSION_TYPE_PERMISSION
	        ? 'P'
	        : 'R');
	if (t->resolution_case ==
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_WAS_CACHED_RESULT)
		strbuf_putc(sb, '*');
	if (t->resolution_case ==
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS) {
		strbuf_putc(sb, '(');
		for (size_t i = 0; i < t->sub_problems->n_traces; i++) {
			if (i)
				strbuf_putc(sb, ',');
			shape(sb, t->sub_problems->traces[i]);
		}
		strbuf_putc(sb, ')');
	}
}

static void expect_shape(const trace_msg *t, const char *want)
{
	strbuf sb;
	strbuf_init(&sb);
	shape(&sb, t);
	char *got = strbuf_detach(&sb, NULL);
	if (strcmp(got, want) != 0)
		fail_msg("trace\n  got  %s\n  want %s", got, want);
	free(got);
}

/* Every node names the request's subject and has a duration. */
static void expect_subject_everywhere(const trace_msg *t, const char *type,
                                      const char *id)
{
	assert_non_null(t->subject);
	assert_string_equal(t->subject->object->object_type, type);
	assert_string_equal(t->subject->object->object_id, id);
	assert_non_null(t->duration);
	assert_true(t->duration->seconds >= 0 && t->duration->nanos >= 0);
	if (t->resolution_case ==
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS)
		for (size_t i = 0; i < t->sub_problems->n_traces; i++)
			expect_subject_everywhere(t->sub_problems->traces[i],
			                          type, id);
}

static const trace_msg *child(const trace_msg *t, size_t i)
{
	assert_int_equal(
	    t->resolution_case,
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS);
	assert_true(i < t->sub_problems->n_traces);
	return t->sub_problems->traces[i];
}

/* ============================================================ tests */

static void test_nested_grant_through_group_arrow_union_intersection(void **s)
{
	fixture *f = start();
	setup(f);
	result r = check(f, "document:readme#audit@user:anne", NULL);
	expect_status(r, GRPC_STATUS_OK);
	const Authzed__Api__V1__CheckPermissionResponse *resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, HAS);
	assert_non_null(resp->debug_trace);
	assert_non_null(
	    strstr(resp->debug_trace->schema_used, "definition document"));
	const trace_msg *t = resp->debug_trace->check;
	/* audit = view & edit: view is a union (owner, the arrow to the
	 * folder, edit); edit = editor - banned, editor through group:all,
	 * which holds group:eng, which holds anne; the intersection's
	 * second operand edit is then answered from the memo. */
	expect_shape(t, "+document:readme#auditP("
	                "+document:readme#viewP(-document:readme#ownerR,"
	                "-folder:f#viewP,"
	                "+document:readme#editP(+document:readme#editorR("
	                "+group:all#memberR(+group:eng#memberR)),"
	                "-document:readme#bannedR)),"
	                "+document:readme#editP*)");
	expect_subject_everywhere(t, "user", "anne");
	/* The leaf that found anne has no sub-problems (the subject). */
	const trace_msg *eng =
	    child(child(child(child(child(t, 0), 2), 0), 0), 0);
	assert_string_equal(eng->resource->object_id, "eng");
	assert_int_equal(
	    eng->resolution_case,
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION__NOT_SET);
	assert_null(eng->caveat_evaluation_info);
	done(&r);

	/* Without with_tracing: no trace. */
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	Authzed__Api__V1__ObjectReference
	    res = AUTHZED__API__V1__OBJECT_REFERENCE__INIT,
	    so = AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__SubjectReference sub =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	res.object_type = "document";
	res.object_id = "readme";
	so.object_type = "user";
	so.object_id = "anne";
	sub.object = &so;
	req.resource = &res;
	req.permission = "audit";
	req.subject = &sub;
	r = call(f, PS "CheckPermission", &req.base,
	         &authzed__api__v1__check_permission_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, HAS);
	assert_null(resp->debug_trace);
	done(&r);
	stop(f);
}

static void test_exclusion_denies_and_names_both_sides(void **s)
{
	fixture *f = start();
	setup(f);
	result r = check(f, "document:readme#audit@user:carl", NULL);
	expect_status(r, GRPC_STATUS_OK);
	const Authzed__Api__V1__CheckPermissionResponse *resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, NO);
	/* The intersection stops at its first denial: edit is not
	 * evaluated a second time. */
	expect_shape(resp->debug_trace->check,
	             "-document:readme#auditP("
	             "-document:readme#viewP(-document:readme#ownerR,"
	             "-folder:f#viewP,"
	             "-document:readme#editP(+document:readme#editorR,"
	             "+document:readme#bannedR)))");
	done(&r);
	stop(f);
}

static void test_caveated_branch_reports_its_caveat(void **s)
{
	fixture *f = start();
	setup(f);
	/* No context: CONDITIONAL through the folder's caveated viewer. */
	result r = check(f, "document:readme#view@user:bob", NULL);
	expect_status(r, GRPC_STATUS_OK);
	const Authzed__Api__V1__CheckPermissionResponse *resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, CONDITIONAL);
	const trace_msg *t = resp->debug_trace->check;
	expect_shape(t, "?document:readme#viewP(-document:readme#ownerR,"
	                "?folder:f#viewP,"
	                "-document:readme#editP(-document:readme#editorR("
	                "-group:all#memberR(-group:eng#memberR))))");
	const trace_msg *folder = child(t, 1);
	const Authzed__Api__V1__CaveatEvalInfo *ci =
	    folder->caveat_evaluation_info;
	assert_non_null(ci);
	assert_string_equal(ci->caveat_name, "weekday");
	assert_string_equal(ci->expression, "day < 6");
	assert_int_equal(
	    ci->result,
	    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_MISSING_SOME_CONTEXT);
	assert_non_null(ci->partial_caveat_info);
	assert_int_equal(ci->partial_caveat_info->n_missing_required_context,
	                 1);
	assert_string_equal(
	    ci->partial_caveat_info->missing_required_context[0], "day");
	done(&r);

	/* With the context: the caveat is decided, and its context shown. */
	r = check(f, "document:readme#view@user:bob", "{\"day\":3}");
	expect_status(r, GRPC_STATUS_OK);
	resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, HAS);
	t = resp->debug_trace->check;
	expect_shape(t, "+document:readme#viewP(-document:readme#ownerR,"
	                "+folder:f#viewP)");
	ci = child(t, 1)->caveat_evaluation_info;
	assert_non_null(ci);
	assert_int_equal(
	    ci->result,
	    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_TRUE);
	assert_non_null(ci->context);
	assert_int_equal(ci->context->n_fields, 1);
	assert_string_equal(ci->context->fields[0]->key, "day");
	assert_true(ci->context->fields[0]->value->number_value == 3);
	assert_null(ci->partial_caveat_info);
	done(&r);

	r = check(f, "document:readme#view@user:bob", "{\"day\":7}");
	expect_status(r, GRPC_STATUS_OK);
	resp = (void *)r.resp;
	assert_int_equal(resp->permissionship, NO);
	ci = child(resp->debug_trace->check, 1)->caveat_evaluation_info;
	assert_int_equal(
	    ci->result,
	    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_FALSE);
	done(&r);
	stop(f);
}

static void test_bulk_items_carry_their_own_traces(void **s)
{
	fixture *f = start();
	setup(f);
	const char *texts[] = {"document:readme#edit@user:anne",
	                       "document:readme#edit@user:carl",
	                       "nosuchtype:x#edit@user:anne"};
	rel_msg m[3];
	Authzed__Api__V1__CheckBulkPermissionsRequestItem items[3], *pitems[3];
	for (size_t i = 0; i < 3; i++) {
		rel_init(&m[i], texts[i]);
		authzed__api__v1__check_bulk_permissions_request_item__init(
		    &items[i]);
		items[i].resource = &m[i].res;
		items[i].permission = m[i].rel.relation;
		items[i].subject = &m[i].subj;
		pitems[i] = &items[i];
	}
	Authzed__Api__V1__CheckBulkPermissionsRequest req =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST__INIT;
	req.items = pitems;
	req.n_items = 3;
	req.with_tracing = 1;
	result r = call(
	    f, PS "CheckBulkPermissions", &req.base,
	    &authzed__api__v1__check_bulk_permissions_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	const Authzed__Api__V1__CheckBulkPermissionsResponse *resp =
	    (void *)r.resp;
	assert_int_equal(resp->n_pairs, 3);
	const Authzed__Api__V1__CheckBulkPermissionsResponseItem *a =
	    resp->pairs[0]->item;
	assert_non_null(a);
	assert_int_equal(a->permissionship, HAS);
	assert_non_null(a->debug_trace);
	assert_non_null(strstr(a->debug_trace->schema_used, "caveat weekday"));
	expect_shape(a->debug_trace->check,
	             "+document:readme#editP(+document:readme#editorR("
	             "+group:all#memberR(+group:eng#memberR)),"
	             "-document:readme#bannedR)");
	expect_subject_everywhere(a->debug_trace->check, "user", "anne");
	const Authzed__Api__V1__CheckBulkPermissionsResponseItem *b =
	    resp->pairs[1]->item;
	assert_non_null(b);
	assert_int_equal(b->permissionship, NO);
	expect_shape(b->debug_trace->check,
	             "-document:readme#editP(+document:readme#editorR,"
	             "+document:readme#bannedR)");
	expect_subject_everywhere(b->debug_trace->check, "user", "carl");
	/* A failed item has an error, no trace. */
	assert_int_equal(
	    resp->pairs[2]->response_case,
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR);
	done(&r);

	/* Without with_tracing: none. */
	req.with_tracing = 0;
	r = call(
	    f, PS "CheckBulkPermissions", &req.base,
	    &authzed__api__v1__check_bulk_permissions_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	resp = (void *)r.resp;
	assert_null(resp->pairs[0]->item->debug_trace);
	done(&r);
	for (size_t i = 0; i < 3; i++)
		rel_free(&m[i]);
	stop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_nested_grant_through_group_arrow_union_intersection),
	    cmocka_unit_test(test_exclusion_denies_and_names_both_sides),
	    cmocka_unit_test(test_caveated_branch_reports_its_caveat),
	    cmocka_unit_test(test_bulk_items_carry_their_own_traces),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
