/*
 * test_migration_schema.c -- over gRPC: WriteSchema's refusals (status and
 * message as SpiceDB's), MigrationService.DryRunWriteSchema and
 * PlanSchema, and SchemaService.DiffSchema, ReflectSchema,
 * ComputablePermissions and DependentRelations.
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
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "grpc_fixture.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "pg_fixture.h"
#include "server/server.h"

#define SCHEMA_PATH "/authzed.api.v1.SchemaService/"
#define MIGRATION_PATH "/pemba.v1.MigrationService/"

static const char *SCHEMA = "definition user {}\n"
                            "definition group {\n\trelation member: user\n}\n"
                            "/** a document */\n"
                            "definition doc {\n"
                            "\trelation owner: user\n"
                            "\trelation viewer: user | group#member | user:*\n"
                            "\tpermission view = viewer + owner\n"
                            "\tpermission edit = owner\n"
                            "\tpermission read = view & edit\n"
                            "}\n"
                            "definition folder {\n"
                            "\trelation doc: doc\n"
                            "\tpermission see = doc->view\n"
                            "}\n";

/* ============================================================ fixture */

typedef struct fixture {
	test_server srv;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	test_server_start(&f->srv,
	                  (server_options){
	                      .datastore = pg_fixture_uri("sqlite::memory:"),
	                      .testing = true,
	                  });
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	test_server_stop(&f->srv);
	free(f);
	return 0;
}

typedef test_result result;

/* Unary call; each test uses its own bearer token, hence datastore. */
static result call(fixture *f, const char *token, const char *path,
                   const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *d)
{
	char auth[200];
	snprintf(auth, sizeof(auth), "Bearer %s", token);
	grpc_metadata md[1] = {{"authorization", auth, 0}};
	return test_call(f->srv.client, md, 1, path, req, d);
}

#define done test_result_done

#define expect_status(r, want)                                                 \
	do {                                                                   \
		if ((r).code != (want))                                        \
			fail_msg("status %s (%s), want %s",                    \
			         grpc_status_name((r).code), (r).message,      \
			         grpc_status_name(want));                      \
	} while (0)

static result write_schema(fixture *f, const char *token, const char *text)
{
	Authzed__Api__V1__WriteSchemaRequest req =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	req.schema = (char *)text;
	return call(f, token, SCHEMA_PATH "WriteSchema", &req.base,
	            &authzed__api__v1__write_schema_response__descriptor);
}

static void touch(fixture *f, const char *token, const char *rt,
                  const char *rid, const char *rel, const char *st,
                  const char *sid)
{
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	res.object_type = (char *)rt;
	res.object_id = (char *)rid;
	Authzed__Api__V1__ObjectReference so =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	so.object_type = (char *)st;
	so.object_id = (char *)sid;
	Authzed__Api__V1__SubjectReference sub =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	sub.object = &so;
	Authzed__Api__V1__Relationship r = AUTHZED__API__V1__RELATIONSHIP__INIT;
	r.resource = &res;
	r.relation = (char *)rel;
	r.subject = &sub;
	Authzed__Api__V1__RelationshipUpdate u =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	u.operation =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
	u.relationship = &r;
	Authzed__Api__V1__RelationshipUpdate *ups[1] = {&u};
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = ups;
	req.n_updates = 1;
	result x = call(
	    f, token, "/authzed.api.v1.PermissionsService/WriteRelationships",
	    &req.base,
	    &authzed__api__v1__write_relationships_response__descriptor);
	expect_status(x, GRPC_STATUS_OK);
	done(&x);
}

static const char *WITHOUT_OWNER =
    "definition user {}\n"
    "definition group {\n\trelation member: user\n}\n"
    "definition doc {\n"
    "\trelation viewer: user | group#member | user:*\n"
    "\tpermission view = viewer\n"
    "}\n";

/* ============================================================ tests */

static void test_write_schema_refusal_is_invalid_argument(void **state)
{
	fixture *f = *state;
	result r = write_schema(f, "t1", SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	touch(f, "t1", "doc", "1", "owner", "user", "anne");
	r = write_schema(f, "t1", WITHOUT_OWNER);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_string_equal(r.message,
	                    "cannot delete relation `owner` in object "
	                    "definition `doc`, as at least one relationship "
	                    "exists under it: doc:1#owner@user:anne");
}

static void test_dry_run_reports_changes_and_writes_nothing(void **state)
{
	fixture *f = *state;
	result r = write_schema(f, "t2", SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	Pemba__V1__DryRunWriteSchemaRequest req =
	    PEMBA__V1__DRY_RUN_WRITE_SCHEMA_REQUEST__INIT;
	req.schema = (char *)WITHOUT_OWNER;
	r = call(f, "t2", MIGRATION_PATH "DryRunWriteSchema", &req.base,
	         &pemba__v1__dry_run_write_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Pemba__V1__DryRunWriteSchemaResponse *resp =
	    (Pemba__V1__DryRunWriteSchemaResponse *)r.resp;
	assert_non_null(resp->checked_at);
	bool removed_owner = false, removed_folder = false;
	for (size_t i = 0; i < resp->n_changes; i++) {
		const Pemba__V1__SchemaChange *c = resp->changes[i];
		if (c->kind ==
		        PEMBA__V1__SCHEMA_CHANGE__KIND__REMOVE_RELATION &&
		    !strcmp(c->definition, "doc") && !strcmp(c->name, "owner"))
			removed_owner = true;
		if (c->kind ==
		        PEMBA__V1__SCHEMA_CHANGE__KIND__REMOVE_DEFINITION &&
		    !strcmp(c->definition, "folder"))
			removed_folder = true;
	}
	assert_true(removed_owner);
	assert_true(removed_folder);
	done(&r);
	/* Nothing was written: the owner relation is still there. */
	Authzed__Api__V1__ReadSchemaRequest rs =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	r = call(f, "t2", SCHEMA_PATH "ReadSchema", &rs.base,
	         &authzed__api__v1__read_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	assert_non_null(strstr(
	    ((Authzed__Api__V1__ReadSchemaResponse *)r.resp)->schema_text,
	    "relation owner"));
	done(&r);
	/* With a relationship in the way the dry run refuses like the
	 * write does. */
	touch(f, "t2", "doc", "1", "owner", "user", "anne");
	r = call(f, "t2", MIGRATION_PATH "DryRunWriteSchema", &req.base,
	         &pemba__v1__dry_run_write_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(r.message, "doc:1#owner@user:anne"));
}

static void test_plan_schema_lists_steps_with_counts(void **state)
{
	fixture *f = *state;
	result r = write_schema(f, "t3", SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	touch(f, "t3", "doc", "1", "owner", "user", "anne");
	touch(f, "t3", "doc", "2", "owner", "user", "bob");
	Pemba__V1__PlanSchemaRequest req = PEMBA__V1__PLAN_SCHEMA_REQUEST__INIT;
	req.target_schema = (char *)WITHOUT_OWNER;
	r = call(f, "t3", MIGRATION_PATH "PlanSchema", &req.base,
	         &pemba__v1__plan_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Pemba__V1__PlanSchemaResponse *p =
	    (Pemba__V1__PlanSchemaResponse *)r.resp;
	assert_int_equal(p->n_steps, 3);
	assert_int_equal(p->steps[0]->kind,
	                 PEMBA__V1__PLAN_STEP__KIND__WRITE_SCHEMA);
	const Pemba__V1__PlanStep *del = p->steps[1];
	assert_int_equal(del->kind,
	                 PEMBA__V1__PLAN_STEP__KIND__DELETE_RELATIONSHIPS);
	assert_string_equal(del->filter->resource_type, "doc");
	assert_string_equal(del->filter->optional_relation, "owner");
	assert_int_equal(del->n_counts, 1);
	assert_string_equal(del->counts[0]->subject_type, "user");
	assert_int_equal(del->counts[0]->count, 2);
	assert_int_equal(p->steps[2]->kind,
	                 PEMBA__V1__PLAN_STEP__KIND__WRITE_SCHEMA);
	/* The intermediate schema is accepted now. */
	result w = write_schema(f, "t3", p->steps[0]->schema);
	expect_status(w, GRPC_STATUS_OK);
	done(&w);
	done(&r);
	/* A target that does not compile is refused as WriteSchema would. */
	req.target_schema = "definition doc {\n\trelation xyz: nope\n}\n";
	r = call(f, "t3", MIGRATION_PATH "PlanSchema", &req.base,
	         &pemba__v1__plan_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
}

static void test_diff_schema(void **state)
{
	fixture *f = *state;
	result r = write_schema(f, "t4", SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	Authzed__Api__V1__DiffSchemaRequest req =
	    AUTHZED__API__V1__DIFF_SCHEMA_REQUEST__INIT;
	req.comparison_schema = (char *)WITHOUT_OWNER;
	r = call(f, "t4", SCHEMA_PATH "DiffSchema", &req.base,
	         &authzed__api__v1__diff_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__DiffSchemaResponse *d =
	    (Authzed__Api__V1__DiffSchemaResponse *)r.resp;
	bool rel_removed = false, def_removed = false, expr = false,
	     perm_removed = false;
	for (size_t i = 0; i < d->n_diffs; i++) {
		const Authzed__Api__V1__ReflectionSchemaDiff *x = d->diffs[i];
		switch (x->diff_case) {
		case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_RELATION_REMOVED:
			rel_removed =
			    !strcmp(x->relation_removed->name, "owner");
			break;
		case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_DEFINITION_REMOVED:
			def_removed =
			    !strcmp(x->definition_removed->name, "folder");
			break;
		case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_PERMISSION_EXPR_CHANGED:
			expr =
			    !strcmp(x->permission_expr_changed->name, "view");
			break;
		case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_PERMISSION_REMOVED:
			perm_removed = true;
			break;
		default:
			break;
		}
	}
	assert_true(rel_removed && def_removed && expr && perm_removed);
	assert_non_null(d->read_at);
	done(&r);
	/* The same schema reformatted: no differences. */
	req.comparison_schema =
	    "definition folder {\n relation doc: doc\n permission see = "
	    "doc->view\n}\n/** a document */\ndefinition doc {\n relation "
	    "owner: user\n relation viewer: user:* | group#member | user\n "
	    "permission view = (viewer + owner)\n permission edit = owner\n "
	    "permission read = view & edit\n}\ndefinition group {\n relation "
	    "member: user\n}\ndefinition user {}\n";
	r = call(f, "t4", SCHEMA_PATH "DiffSchema", &req.base,
	         &authzed__api__v1__diff_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	assert_int_equal(
	    ((Authzed__Api__V1__DiffSchemaResponse *)r.resp)->n_diffs, 0);
	done(&r);
}

static void test_reflect_schema(void **state)
{
	fixture *f = *state;
	result r = write_schema(f, "t5", SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	Authzed__Api__V1__ReflectSchemaRequest req =
	    AUTHZED__API__V1__REFLECT_SCHEMA_REQUEST__INIT;
	r = call(f, "t5", SCHEMA_PATH "ReflectSchema", &req.base,
	         &authzed__api__v1__reflect_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__ReflectSchemaResponse *s =
	    (Authzed__Api__V1__ReflectSchemaResponse *)r.resp;
	assert_int_equal(s->n_definitions, 4);
	const Authzed__Api__V1__ReflectionDefinition *doc = NULL;
	for (size_t i = 0; i < s->n_definitions; i++)
		if (!strcmp(s->definitions[i]->name, "doc"))
			doc = s->definitions[i];
	assert_non_null(doc);
	assert_string_equal(doc->comment, "/** a document */");
	assert_int_equal(doc->n_relations, 2);
	assert_int_equal(doc->n_permissions, 3);
	const Authzed__Api__V1__ReflectionRelation *viewer = doc->relations[1];
	assert_string_equal(viewer->name, "viewer");
	assert_int_equal(viewer->n_subject_types, 3);
	assert_int_equal(
	    viewer->subject_types[1]->typeref_case,
	    AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_OPTIONAL_RELATION_NAME);
	assert_string_equal(viewer->subject_types[1]->optional_relation_name,
	                    "member");
	assert_true(viewer->subject_types[2]->is_public_wildcard);
	done(&r);
	/* A filter keeps one definition. */
	Authzed__Api__V1__ReflectionSchemaFilter filter =
	    AUTHZED__API__V1__REFLECTION_SCHEMA_FILTER__INIT;
	filter.optional_definition_name_filter = "fold";
	Authzed__Api__V1__ReflectionSchemaFilter *filters[1] = {&filter};
	req.optional_filters = filters;
	req.n_optional_filters = 1;
	r = call(f, "t5", SCHEMA_PATH "ReflectSchema", &req.base,
	         &authzed__api__v1__reflect_schema_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	s = (Authzed__Api__V1__ReflectSchemaResponse *)r.resp;
	assert_int_equal(s->n_definitions, 1);
	assert_string_equal(s->definitions[0]->name, "folder");
	done(&r);
}

static void test_computable_and_dependent(void **state)
{
	fixture *f = *state;
	result r = write_schema(f, "t6", SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	Authzed__Api__V1__ComputablePermissionsRequest cp =
	    AUTHZED__API__V1__COMPUTABLE_PERMISSIONS_REQUEST__INIT;
	cp.definition_name = "doc";
	cp.relation_name = "owner";
	r = call(
	    f, "t6", SCHEMA_PATH "ComputablePermissions", &cp.base,
	    &authzed__api__v1__computable_permissions_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__ComputablePermissionsResponse *c =
	    (Authzed__Api__V1__ComputablePermissionsResponse *)r.resp;
	/* doc#edit, doc#read, doc#view and, through the arrow, folder#see. */
	assert_int_equal(c->n_permissions, 4);
	assert_string_equal(c->permissions[0]->definition_name, "doc");
	assert_string_equal(c->permissions[0]->relation_name, "edit");
	assert_string_equal(c->permissions[3]->definition_name, "folder");
	assert_string_equal(c->permissions[3]->relation_name, "see");
	done(&r);
	Authzed__Api__V1__DependentRelationsRequest dr =
	    AUTHZED__API__V1__DEPENDENT_RELATIONS_REQUEST__INIT;
	dr.definition_name = "folder";
	dr.permission_name = "see";
	r = call(f, "t6", SCHEMA_PATH "DependentRelations", &dr.base,
	         &authzed__api__v1__dependent_relations_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Authzed__Api__V1__DependentRelationsResponse *d =
	    (Authzed__Api__V1__DependentRelationsResponse *)r.resp;
	/* doc#owner, doc#view, doc#viewer, folder#doc. */
	assert_int_equal(d->n_relations, 4);
	assert_string_equal(d->relations[3]->definition_name, "folder");
	assert_string_equal(d->relations[3]->relation_name, "doc");
	assert_false(d->relations[3]->is_permission);
	done(&r);
	dr.definition_name = "doc";
	dr.permission_name = "owner";
	r = call(f, "t6", SCHEMA_PATH "DependentRelations", &dr.base,
	         &authzed__api__v1__dependent_relations_response__descriptor);
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
	dr.permission_name = "nope";
	r = call(f, "t6", SCHEMA_PATH "DependentRelations", &dr.base,
	         &authzed__api__v1__dependent_relations_response__descriptor);
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_write_schema_refusal_is_invalid_argument),
	    cmocka_unit_test(test_dry_run_reports_changes_and_writes_nothing),
	    cmocka_unit_test(test_plan_schema_lists_steps_with_counts),
	    cmocka_unit_test(test_diff_schema),
	    cmocka_unit_test(test_reflect_schema),
	    cmocka_unit_test(test_computable_and_dependent),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
