/*
 * test_proto.c -- the generated authzed.api.v1 messages: they round-trip
 * through pack/unpack, decode bytes written by hand from the public wire
 * contract (field numbers, enum values), and pack to exactly those bytes.
 * A wrong field number in src/api/proto would fail here, not in a client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "authzed/api/v1/core.pb-c.h"
#include "authzed/api/v1/error_reason.pb-c.h"
#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

/* ============================================================ helpers */

/* Packs msg into a fresh buffer; *len receives its size. */
static uint8_t *pack(const ProtobufCMessage *msg, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(*len ? *len : 1);
	assert_non_null(buf);
	assert_int_equal(protobuf_c_message_pack(msg, buf), *len);
	return buf;
}

/* The field number of `name` in desc (fails the test if absent). */
static unsigned field_number(const ProtobufCMessageDescriptor *desc,
                             const char *name)
{
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field_by_name(desc, name);
	if (f == NULL)
		fail_msg("%s has no field %s", desc->name, name);
	return f->id;
}

/* The number of the enum value `name` in desc. */
static int enum_number(const ProtobufCEnumDescriptor *desc, const char *name)
{
	for (unsigned i = 0; i < desc->n_values; i++)
		if (strcmp(desc->values[i].name, name) == 0)
			return desc->values[i].value;
	fail_msg("%s has no value %s", desc->name, name);
	return -1;
}

/* ============================================================ round trips */

static void check_permission_request_round_trips(void **state)
{
	Authzed__Api__V1__ZedToken token = AUTHZED__API__V1__ZED_TOKEN__INIT;
	token.token = "AQARxuZcAE4ChHxkVP4";
	Authzed__Api__V1__Consistency cons =
	    AUTHZED__API__V1__CONSISTENCY__INIT;
	cons.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH;
	cons.at_least_as_fresh = &token;

	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	res.object_type = "document";
	res.object_id = "readme";
	Authzed__Api__V1__ObjectReference subj_obj =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	subj_obj.object_type = "group";
	subj_obj.object_id = "eng";
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	subj.object = &subj_obj;
	subj.optional_relation = "member";

	/* context = {"ip": "10.0.0.1", "attempts": 3, "admin": true} */
	Google__Protobuf__Value v_ip = GOOGLE__PROTOBUF__VALUE__INIT;
	v_ip.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v_ip.string_value = "10.0.0.1";
	Google__Protobuf__Value v_n = GOOGLE__PROTOBUF__VALUE__INIT;
	v_n.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
	v_n.number_value = 3;
	Google__Protobuf__Value v_b = GOOGLE__PROTOBUF__VALUE__INIT;
	v_b.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
	v_b.bool_value = 1;
	Google__Protobuf__Struct__FieldsEntry e_ip =
	    GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	e_ip.key = "ip";
	e_ip.value = &v_ip;
	Google__Protobuf__Struct__FieldsEntry e_n =
	    GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	e_n.key = "attempts";
	e_n.value = &v_n;
	Google__Protobuf__Struct__FieldsEntry e_b =
	    GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	e_b.key = "admin";
	e_b.value = &v_b;
	Google__Protobuf__Struct__FieldsEntry *entries[] = {&e_ip, &e_n, &e_b};
	Google__Protobuf__Struct ctx = GOOGLE__PROTOBUF__STRUCT__INIT;
	ctx.n_fields = 3;
	ctx.fields = entries;

	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	req.consistency = &cons;
	req.resource = &res;
	req.permission = "view";
	req.subject = &subj;
	req.context = &ctx;
	req.with_tracing = 1;

	size_t len;
	uint8_t *buf = pack(&req.base, &len);
	Authzed__Api__V1__CheckPermissionRequest *got =
	    authzed__api__v1__check_permission_request__unpack(NULL, len, buf);
	assert_non_null(got);
	assert_int_equal(
	    got->consistency->requirement_case,
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH);
	assert_string_equal(got->consistency->at_least_as_fresh->token,
	                    "AQARxuZcAE4ChHxkVP4");
	assert_string_equal(got->resource->object_type, "document");
	assert_string_equal(got->resource->object_id, "readme");
	assert_string_equal(got->permission, "view");
	assert_string_equal(got->subject->object->object_type, "group");
	assert_string_equal(got->subject->object->object_id, "eng");
	assert_string_equal(got->subject->optional_relation, "member");
	assert_true(got->with_tracing);
	assert_non_null(got->context);
	assert_int_equal(got->context->n_fields, 3);
	int seen = 0;
	for (size_t i = 0; i < got->context->n_fields; i++) {
		Google__Protobuf__Struct__FieldsEntry *e =
		    got->context->fields[i];
		if (strcmp(e->key, "ip") == 0) {
			assert_int_equal(
			    e->value->kind_case,
			    GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
			assert_string_equal(e->value->string_value, "10.0.0.1");
			seen |= 1;
		} else if (strcmp(e->key, "attempts") == 0) {
			assert_int_equal(
			    e->value->kind_case,
			    GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
			assert_true(e->value->number_value == 3.0);
			seen |= 2;
		} else if (strcmp(e->key, "admin") == 0) {
			assert_int_equal(
			    e->value->kind_case,
			    GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
			assert_true(e->value->bool_value);
			seen |= 4;
		}
	}
	assert_int_equal(seen, 7);
	/* Packing the decoded message again gives the same bytes. */
	size_t len2;
	uint8_t *buf2 = pack(&got->base, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(buf2, buf, len);
	free(buf2);
	authzed__api__v1__check_permission_request__free_unpacked(got, NULL);
	free(buf);
}

static void write_relationships_request_round_trips(void **state)
{
	Authzed__Api__V1__ObjectReference doc =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	doc.object_type = "document";
	doc.object_id = "1";
	Authzed__Api__V1__ObjectReference anne =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	anne.object_type = "user";
	anne.object_id = "anne";
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	subj.object = &anne;
	Authzed__Api__V1__ContextualizedCaveat cav =
	    AUTHZED__API__V1__CONTEXTUALIZED_CAVEAT__INIT;
	cav.caveat_name = "on_weekdays";
	Authzed__Api__V1__Relationship rel =
	    AUTHZED__API__V1__RELATIONSHIP__INIT;
	rel.resource = &doc;
	rel.relation = "viewer";
	rel.subject = &subj;
	Authzed__Api__V1__Relationship rel2 = rel;
	rel2.relation = "editor";
	rel2.optional_caveat = &cav;
	Authzed__Api__V1__RelationshipUpdate u1 =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	u1.operation =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE;
	u1.relationship = &rel;
	Authzed__Api__V1__RelationshipUpdate u2 =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	u2.operation =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
	u2.relationship = &rel2;
	Authzed__Api__V1__RelationshipUpdate *updates[] = {&u1, &u2};

	Authzed__Api__V1__SubjectFilter__RelationFilter rf =
	    AUTHZED__API__V1__SUBJECT_FILTER__RELATION_FILTER__INIT;
	rf.relation = "member";
	Authzed__Api__V1__SubjectFilter sf =
	    AUTHZED__API__V1__SUBJECT_FILTER__INIT;
	sf.subject_type = "group";
	sf.optional_subject_id = "eng";
	sf.optional_relation = &rf;
	Authzed__Api__V1__RelationshipFilter filter =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	filter.resource_type = "document";
	filter.optional_resource_id_prefix = "1";
	filter.optional_relation = "viewer";
	filter.optional_subject_filter = &sf;
	Authzed__Api__V1__Precondition pre =
	    AUTHZED__API__V1__PRECONDITION__INIT;
	pre.operation =
	    AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_NOT_MATCH;
	pre.filter = &filter;
	Authzed__Api__V1__Precondition *pres[] = {&pre};

	Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v.string_value = "migration-42";
	Google__Protobuf__Struct__FieldsEntry e =
	    GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	e.key = "source";
	e.value = &v;
	Google__Protobuf__Struct__FieldsEntry *es[] = {&e};
	Google__Protobuf__Struct meta = GOOGLE__PROTOBUF__STRUCT__INIT;
	meta.n_fields = 1;
	meta.fields = es;

	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.n_updates = 2;
	req.updates = updates;
	req.n_optional_preconditions = 1;
	req.optional_preconditions = pres;
	req.optional_transaction_metadata = &meta;

	size_t len;
	uint8_t *buf = pack(&req.base, &len);
	Authzed__Api__V1__WriteRelationshipsRequest *got =
	    authzed__api__v1__write_relationships_request__unpack(NULL, len,
	                                                          buf);
	assert_non_null(got);
	assert_int_equal(got->n_updates, 2);
	assert_int_equal(got->updates[0]->operation, 1);
	assert_int_equal(got->updates[1]->operation, 2);
	assert_string_equal(got->updates[0]->relationship->relation, "viewer");
	assert_null(got->updates[0]->relationship->optional_caveat);
	assert_string_equal(got->updates[1]->relationship->relation, "editor");
	assert_string_equal(
	    got->updates[1]->relationship->optional_caveat->caveat_name,
	    "on_weekdays");
	assert_string_equal(
	    got->updates[1]->relationship->subject->object->object_id, "anne");
	assert_string_equal(
	    got->updates[1]->relationship->subject->optional_relation, "");
	assert_int_equal(got->n_optional_preconditions, 1);
	Authzed__Api__V1__Precondition *p = got->optional_preconditions[0];
	assert_int_equal(p->operation, 1);
	assert_string_equal(p->filter->resource_type, "document");
	assert_string_equal(p->filter->optional_resource_id, "");
	assert_string_equal(p->filter->optional_resource_id_prefix, "1");
	assert_string_equal(p->filter->optional_relation, "viewer");
	assert_string_equal(p->filter->optional_subject_filter->subject_type,
	                    "group");
	assert_string_equal(
	    p->filter->optional_subject_filter->optional_subject_id, "eng");
	assert_string_equal(
	    p->filter->optional_subject_filter->optional_relation->relation,
	    "member");
	assert_int_equal(got->optional_transaction_metadata->n_fields, 1);
	assert_string_equal(got->optional_transaction_metadata->fields[0]->key,
	                    "source");
	assert_string_equal(
	    got->optional_transaction_metadata->fields[0]->value->string_value,
	    "migration-42");
	authzed__api__v1__write_relationships_request__free_unpacked(got, NULL);
	free(buf);
}

static void lookup_resources_response_round_trips(void **state)
{
	Authzed__Api__V1__ZedToken tok = AUTHZED__API__V1__ZED_TOKEN__INIT;
	tok.token = "t";
	Authzed__Api__V1__Cursor cur = AUTHZED__API__V1__CURSOR__INIT;
	cur.token = "after-doc-7";
	char *missing[] = {"ip", "now"};
	Authzed__Api__V1__PartialCaveatInfo pci =
	    AUTHZED__API__V1__PARTIAL_CAVEAT_INFO__INIT;
	pci.n_missing_required_context = 2;
	pci.missing_required_context = missing;
	Authzed__Api__V1__LookupResourcesResponse resp =
	    AUTHZED__API__V1__LOOKUP_RESOURCES_RESPONSE__INIT;
	resp.looked_up_at = &tok;
	resp.resource_object_id = "doc-7";
	resp.permissionship =
	    AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION;
	resp.partial_caveat_info = &pci;
	resp.after_result_cursor = &cur;

	size_t len;
	uint8_t *buf = pack(&resp.base, &len);
	Authzed__Api__V1__LookupResourcesResponse *got =
	    authzed__api__v1__lookup_resources_response__unpack(NULL, len, buf);
	assert_non_null(got);
	assert_string_equal(got->looked_up_at->token, "t");
	assert_string_equal(got->resource_object_id, "doc-7");
	assert_int_equal(got->permissionship, 2);
	assert_int_equal(got->partial_caveat_info->n_missing_required_context,
	                 2);
	assert_string_equal(
	    got->partial_caveat_info->missing_required_context[1], "now");
	assert_string_equal(got->after_result_cursor->token, "after-doc-7");
	authzed__api__v1__lookup_resources_response__free_unpacked(got, NULL);
	free(buf);
}

/* ============================================================ wire bytes */

/* CheckPermissionRequest written byte by byte from the public contract:
 * consistency = 1 {fully_consistent = 4}, resource = 2 {object_type = 1,
 * object_id = 2}, permission = 3, subject = 4 {object = 1,
 * optional_relation = 2}, with_tracing = 6. */
static void check_permission_request_decodes_hand_encoded_bytes(void **state)
{
	static const uint8_t wire[] = {
	    0x0a, 0x02, 0x20, 0x01,                     /* 1: {4: true} */
	    0x12, 0x08, 0x0a, 0x03, 'd', 'o', 'c',      /* 2: {1: "doc", */
	    0x12, 0x01, '1',                            /*     2: "1"}   */
	    0x1a, 0x04, 'v',  'i',  'e', 'w',           /* 3: "view" */
	    0x22, 0x12,                                 /* 4: { */
	    0x0a, 0x0a, 0x0a, 0x04, 'u', 's', 'e', 'r', /* 1: {1: "user", */
	    0x12, 0x02, 'a',  'n',                      /*     2: "an"} */
	    0x12, 0x04, 'm',  'e',  'm', 'b',           /* 2: "memb" } */
	    0x30, 0x01,                                 /* 6: true */
	};
	Authzed__Api__V1__CheckPermissionRequest *got =
	    authzed__api__v1__check_permission_request__unpack(
	        NULL, sizeof(wire), wire);
	assert_non_null(got);
	assert_int_equal(
	    got->consistency->requirement_case,
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT);
	assert_true(got->consistency->fully_consistent);
	assert_string_equal(got->resource->object_type, "doc");
	assert_string_equal(got->resource->object_id, "1");
	assert_string_equal(got->permission, "view");
	assert_string_equal(got->subject->object->object_type, "user");
	assert_string_equal(got->subject->object->object_id, "an");
	assert_string_equal(got->subject->optional_relation, "memb");
	assert_true(got->with_tracing);
	assert_null(got->context);
	/* Our encoder writes fields in number order, as the bytes above. */
	size_t len;
	uint8_t *buf = pack(&got->base, &len);
	assert_int_equal(len, sizeof(wire));
	assert_memory_equal(buf, wire, len);
	free(buf);
	authzed__api__v1__check_permission_request__free_unpacked(got, NULL);
}

/* Responses pack to the bytes a client expects. */
static void responses_pack_to_the_public_wire_format(void **state)
{
	/* CheckPermissionResponse {checked_at = 1 {token = 1 "ab"},
	 * permissionship = 2 HAS_PERMISSION (2)}. */
	Authzed__Api__V1__ZedToken tok = AUTHZED__API__V1__ZED_TOKEN__INIT;
	tok.token = "ab";
	Authzed__Api__V1__CheckPermissionResponse resp =
	    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__INIT;
	resp.checked_at = &tok;
	resp.permissionship =
	    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION;
	static const uint8_t want[] = {0x0a, 0x04, 0x0a, 0x02,
	                               'a',  'b',  0x10, 0x02};
	size_t len;
	uint8_t *buf = pack(&resp.base, &len);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(buf, want, len);
	free(buf);

	/* ReadSchemaResponse {schema_text = 1 "x", read_at = 2 {"z"}}. */
	Authzed__Api__V1__ReadSchemaResponse rs =
	    AUTHZED__API__V1__READ_SCHEMA_RESPONSE__INIT;
	rs.schema_text = "x";
	tok.token = "z";
	rs.read_at = &tok;
	static const uint8_t want_rs[] = {0x0a, 0x01, 'x',  0x12,
	                                  0x03, 0x0a, 0x01, 'z'};
	buf = pack(&rs.base, &len);
	assert_int_equal(len, sizeof(want_rs));
	assert_memory_equal(buf, want_rs, len);
	free(buf);

	/* grpc.health.v1.HealthCheckResponse {status = 1 SERVING (1)}. */
	Grpc__Health__V1__HealthCheckResponse h =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	h.status =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	static const uint8_t want_h[] = {0x08, 0x01};
	buf = pack(&h.base, &len);
	assert_int_equal(len, sizeof(want_h));
	assert_memory_equal(buf, want_h, len);
	free(buf);

	/* google.rpc.Status {code = 1 (9), message = 2 "no"}. */
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	st.code = 9;
	st.message = "no";
	static const uint8_t want_st[] = {0x08, 0x09, 0x12, 0x02, 'n', 'o'};
	buf = pack(&st.base, &len);
	assert_int_equal(len, sizeof(want_st));
	assert_memory_equal(buf, want_st, len);
	free(buf);
}

/* Unknown fields (a newer client) are kept, not an error; truncated
 * input is an error. */
static void unknown_fields_pass_and_truncation_fails(void **state)
{
	static const uint8_t wire[] = {0x1a, 0x04, 'v',  'i', 'e',
	                               'w',  0xf8, 0x06, 0x01 /* field 111 */};
	Authzed__Api__V1__CheckPermissionRequest *got =
	    authzed__api__v1__check_permission_request__unpack(
	        NULL, sizeof(wire), wire);
	assert_non_null(got);
	assert_string_equal(got->permission, "view");
	authzed__api__v1__check_permission_request__free_unpacked(got, NULL);
	assert_null(
	    authzed__api__v1__check_permission_request__unpack(NULL, 5, wire));
}

/* ============================================================ numbers */

typedef struct field_case {
	const ProtobufCMessageDescriptor *desc;
	const char *name;
	unsigned number;
} field_case;

/* Field numbers clients depend on, checked against the descriptors
 * protoc-c generated from our .proto text. */
static void field_numbers_match_the_public_api(void **state)
{
	const field_case cases[] = {
	    {&authzed__api__v1__relationship__descriptor, "optional_caveat", 4},
	    {&authzed__api__v1__relationship__descriptor, "optional_expires_at",
	     5},
	    {&authzed__api__v1__relationship_filter__descriptor,
	     "optional_resource_id_prefix", 5},
	    {&authzed__api__v1__relationship_filter__descriptor,
	     "optional_subject_filter", 4},
	    {&authzed__api__v1__permission_relationship_tree__descriptor,
	     "expanded_relation", 4},
	    {&authzed__api__v1__check_permission_response__descriptor,
	     "optional_expires_at", 5},
	    {&authzed__api__v1__delete_relationships_request__descriptor,
	     "optional_transaction_metadata", 5},
	    {&authzed__api__v1__delete_relationships_response__descriptor,
	     "relationships_deleted_count", 3},
	    {&authzed__api__v1__lookup_resources_request__descriptor,
	     "optional_cursor", 7},
	    {&authzed__api__v1__lookup_subjects_request__descriptor,
	     "wildcard_option", 9},
	    {&authzed__api__v1__lookup_subjects_response__descriptor,
	     "after_result_cursor", 8},
	    {&authzed__api__v1__check_bulk_permissions_pair__descriptor,
	     "error", 3},
	    {&authzed__api__v1__export_bulk_relationships_request__descriptor,
	     "optional_relationship_filter", 4},
	    {&authzed__api__v1__watch_request__descriptor,
	     "optional_start_cursor", 2},
	    {&authzed__api__v1__watch_request__descriptor,
	     "optional_update_kinds", 4},
	    {&authzed__api__v1__watch_response__descriptor, "changes_through",
	     2},
	    {&authzed__api__v1__watch_response__descriptor, "is_checkpoint", 5},
	    {&authzed__api__v1__write_schema_request__descriptor, "schema", 1},
	    {&authzed__api__v1__bulk_check_permission_pair__descriptor, "error",
	     3},
	    {&authzed__api__v1__bulk_export_relationships_response__descriptor,
	     "relationships", 2},
	    {&authzed__api__v1__check_debug_trace__descriptor, "sub_problems",
	     7},
	    {&authzed__api__v1__reflection_schema_diff__descriptor,
	     "caveat_parameter_type_changed", 19},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned got = field_number(cases[i].desc, cases[i].name);
		if (got != cases[i].number)
			fail_msg("%s.%s is field %u, want %u",
			         cases[i].desc->name, cases[i].name, got,
			         cases[i].number);
	}
	/* Enum values. */
	assert_int_equal(enum_number(&authzed__api__v1__watch_kind__descriptor,
	                             "WATCH_KIND_INCLUDE_CHECKPOINTS"),
	                 3);
	assert_int_equal(
	    enum_number(
	        &authzed__api__v1__delete_relationships_response__deletion_progress__descriptor,
	        "DELETION_PROGRESS_PARTIAL"),
	    2);
	assert_int_equal(
	    enum_number(
	        &authzed__api__v1__algebraic_subject_set__operation__descriptor,
	        "OPERATION_EXCLUSION"),
	    3);
	assert_int_equal(
	    enum_number(&authzed__api__v1__error_reason__descriptor,
	                "ERROR_REASON_WRITE_OR_DELETE_PRECONDITION_FAILURE"),
	    7);
	assert_int_equal(
	    enum_number(&authzed__api__v1__error_reason__descriptor,
	                "ERROR_REASON_TRANSACTION_METADATA_TOO_LARGE"),
	    29);
	assert_int_equal(
	    enum_number(
	        &grpc__health__v1__health_check_response__serving_status__descriptor,
	        "SERVICE_UNKNOWN"),
	    3);
}

/* Service and method names form the gRPC paths
 * ("/authzed.api.v1.PermissionsService/CheckPermission"). */
static void services_have_the_public_names(void **state)
{
	assert_string_equal(
	    authzed__api__v1__permissions_service__descriptor.name,
	    "authzed.api.v1.PermissionsService");
	assert_int_equal(
	    authzed__api__v1__permissions_service__descriptor.n_methods, 10);
	assert_non_null(protobuf_c_service_descriptor_get_method_by_name(
	    &authzed__api__v1__permissions_service__descriptor,
	    "CheckBulkPermissions"));
	assert_non_null(protobuf_c_service_descriptor_get_method_by_name(
	    &authzed__api__v1__permissions_service__descriptor,
	    "ExportBulkRelationships"));
	assert_string_equal(authzed__api__v1__schema_service__descriptor.name,
	                    "authzed.api.v1.SchemaService");
	assert_string_equal(authzed__api__v1__watch_service__descriptor.name,
	                    "authzed.api.v1.WatchService");
	assert_string_equal(
	    authzed__api__v1__experimental_service__descriptor.name,
	    "authzed.api.v1.ExperimentalService");
	assert_non_null(protobuf_c_service_descriptor_get_method_by_name(
	    &authzed__api__v1__experimental_service__descriptor,
	    "BulkCheckPermission"));
	assert_string_equal(grpc__health__v1__health__descriptor.name,
	                    "grpc.health.v1.Health");
	assert_int_equal(grpc__health__v1__health__descriptor.n_methods, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(check_permission_request_round_trips),
	    cmocka_unit_test(write_relationships_request_round_trips),
	    cmocka_unit_test(lookup_resources_response_round_trips),
	    cmocka_unit_test(
	        check_permission_request_decodes_hand_encoded_bytes),
	    cmocka_unit_test(responses_pack_to_the_public_wire_format),
	    cmocka_unit_test(unknown_fields_pass_and_truncation_fails),
	    cmocka_unit_test(field_numbers_match_the_public_api),
	    cmocka_unit_test(services_have_the_public_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
