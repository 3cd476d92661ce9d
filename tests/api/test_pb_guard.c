/*
 * test_pb_guard.c -- the checks request bytes pass before protobuf-c
 * unpacks them (src/api/pb_guard.c, svc_unpack): every string field, at
 * every level, is valid UTF-8 without a NUL byte, and a refusal names the
 * field by its path; nesting and malformed bytes are refused too.
 *
 * Requests are built with protobuf-c using marker strings, packed, and the
 * marker bytes replaced by the bad ones (protobuf-c itself cannot pack a
 * string holding a NUL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/pb_guard.h"
#include "api/services.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"

/* ============================================================ helpers */

typedef struct packed {
	uint8_t *data;
	size_t len;
} packed;

static packed pack(const ProtobufCMessage *m)
{
	packed p;
	p.len = protobuf_c_message_get_packed_size(m);
	p.data = malloc(p.len + 1);
	assert_non_null(p.data);
	protobuf_c_message_pack(m, p.data);
	return p;
}

/* Replaces every occurrence of `marker` by `with` (same length). */
static void replace(packed *p, const char *marker, const char *with, size_t n)
{
	int found = 0;
	for (size_t i = 0; i + n <= p->len; i++)
		if (memcmp(p->data + i, marker, n) == 0) {
			memcpy(p->data + i, with, n);
			found++;
		}
	assert_true(found > 0);
}

/* pb_guard_check's message, or "" when it accepts. */
static const char *check(const ProtobufCMessageDescriptor *d, packed p)
{
	static pemba_error err;
	memset(&err, 0, sizeof(err));
	int rc = pb_guard_check(d, p.data, p.len, PB_GUARD_MAX_DEPTH, &err);
	if (rc == 0)
		return "";
	assert_int_equal(rc, PEMBA_EINVAL);
	assert_int_equal(err.code, PEMBA_EINVAL);
	return err.message;
}

#define expect_message(got, want)                                              \
	do {                                                                   \
		const char *g_ = (got);                                        \
		if (strcmp(g_, (want)) != 0)                                   \
			fail_msg("got \"%s\"\nwant \"%s\"", g_, (want));       \
	} while (0)

/* A Struct with one entry per key, each a string value. */
typedef struct small_struct {
	Google__Protobuf__Struct s;
	Google__Protobuf__Struct__FieldsEntry entries[4];
	Google__Protobuf__Struct__FieldsEntry *ptrs[4];
	Google__Protobuf__Value values[4];
} small_struct;

static Google__Protobuf__Struct *small_struct_init(small_struct *ss,
                                                   const char *const *keys,
                                                   const char *const *strings,
                                                   size_t n)
{
	google__protobuf__struct__init(&ss->s);
	for (size_t i = 0; i < n; i++) {
		google__protobuf__struct__fields_entry__init(&ss->entries[i]);
		google__protobuf__value__init(&ss->values[i]);
		ss->values[i].kind_case =
		    GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		ss->values[i].string_value = (char *)strings[i];
		ss->entries[i].key = (char *)keys[i];
		ss->entries[i].value = &ss->values[i];
		ss->ptrs[i] = &ss->entries[i];
	}
	ss->s.n_fields = n;
	ss->s.fields = ss->ptrs;
	return &ss->s;
}

/* A WriteRelationshipsRequest of three TOUCHes of doc:dN#viewer@user:uN,
 * the second caveated with `ctx`, plus transaction metadata `meta`. */
typedef struct write_request {
	Authzed__Api__V1__WriteRelationshipsRequest req;
	Authzed__Api__V1__RelationshipUpdate updates[3];
	Authzed__Api__V1__RelationshipUpdate *ptrs[3];
	Authzed__Api__V1__Relationship rels[3];
	Authzed__Api__V1__ObjectReference resources[3], subjects[3];
	Authzed__Api__V1__SubjectReference subject_refs[3];
	Authzed__Api__V1__ContextualizedCaveat caveat;
	char ids[3][16], sids[3][16];
} write_request;

static void write_request_init(write_request *w, Google__Protobuf__Struct *ctx,
                               Google__Protobuf__Struct *meta)
{
	authzed__api__v1__write_relationships_request__init(&w->req);
	for (int i = 0; i < 3; i++) {
		snprintf(w->ids[i], sizeof(w->ids[i]), "d%d", i);
		snprintf(w->sids[i], sizeof(w->sids[i]), "u%d", i);
		authzed__api__v1__object_reference__init(&w->resources[i]);
		w->resources[i].object_type = "doc";
		w->resources[i].object_id = w->ids[i];
		authzed__api__v1__object_reference__init(&w->subjects[i]);
		w->subjects[i].object_type = "user";
		w->subjects[i].object_id = w->sids[i];
		authzed__api__v1__subject_reference__init(&w->subject_refs[i]);
		w->subject_refs[i].object = &w->subjects[i];
		authzed__api__v1__relationship__init(&w->rels[i]);
		w->rels[i].resource = &w->resources[i];
		w->rels[i].relation = "viewer";
		w->rels[i].subject = &w->subject_refs[i];
		authzed__api__v1__relationship_update__init(&w->updates[i]);
		w->updates[i].operation =
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		w->updates[i].relationship = &w->rels[i];
		w->ptrs[i] = &w->updates[i];
	}
	if (ctx) {
		authzed__api__v1__contextualized_caveat__init(&w->caveat);
		w->caveat.caveat_name = "tagged";
		w->caveat.context = ctx;
		w->rels[1].optional_caveat = &w->caveat;
	}
	w->req.n_updates = 3;
	w->req.updates = w->ptrs;
	w->req.optional_transaction_metadata = meta;
}

#define WRITE_D &authzed__api__v1__write_relationships_request__descriptor

/* `inner` wrapped as a length-delimited field with the given tag byte. */
static packed wrap(uint8_t tag, packed inner)
{
	packed out = {malloc(inner.len + 12), 0};
	assert_non_null(out.data);
	out.data[out.len++] = tag;
	size_t v = inner.len;
	while (v >= 0x80) {
		out.data[out.len++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out.data[out.len++] = (uint8_t)v;
	memcpy(out.data + out.len, inner.data, inner.len);
	out.len += inner.len;
	free(inner.data);
	return out;
}

/* A google.protobuf.Value holding `levels` lists each holding the next:
 * Value { list_value(6) = ListValue { values(1) = Value { ... } } }. */
static packed nested_values(int levels)
{
	packed p = {malloc(1), 0};
	for (int i = 0; i < levels; i++)
		p = wrap(0x32, wrap(0x0a, p));
	return p;
}

/* ============================================================ tests */

static void test_clean_requests_pass(void **state)
{
	write_request w;
	small_struct ctx;
	static const char *const keys[] = {"tag", "h\xc3\xa9"};
	static const char *const strs[] = {"\xf0\x9f\x98\x80", "caf\xc3\xa9"};
	write_request_init(&w, small_struct_init(&ctx, keys, strs, 2), NULL);
	packed p = pack(&w.req.base);
	expect_message(check(WRITE_D, p), "");
	free(p.data);
	/* An empty message is fine. */
	expect_message(check(WRITE_D, (packed){(uint8_t *)"", 0}), "");
}

static void test_nul_in_a_string_field_names_its_path(void **state)
{
	write_request w;
	write_request_init(&w, NULL, NULL);
	w.resources[2].object_id = "secret~junk";
	packed p = pack(&w.req.base);
	replace(&p, "secret~junk", "secret\0junk", 11);
	expect_message(check(WRITE_D, p),
	               "invalid argument: field "
	               "updates[2].relationship.resource.object_id contains a "
	               "NUL byte");
	/* Code written before svc_unpack (depth_ok ? unpack : NULL) refuses
	 * it too. */
	assert_false(
	    pb_guard_depth_ok(WRITE_D, p.data, p.len, PB_GUARD_MAX_DEPTH));
	/* protobuf-c alone would have handed the handler "secret". */
	Authzed__Api__V1__WriteRelationshipsRequest *m =
	    authzed__api__v1__write_relationships_request__unpack(NULL, p.len,
	                                                          p.data);
	assert_non_null(m);
	assert_string_equal(m->updates[2]->relationship->resource->object_id,
	                    "secret");
	authzed__api__v1__write_relationships_request__free_unpacked(m, NULL);
	free(p.data);

	write_request_init(&w, NULL, NULL);
	w.subject_refs[0].optional_relation = "mem~";
	p = pack(&w.req.base);
	replace(&p, "mem~", "mem\0", 4);
	expect_message(check(WRITE_D, p),
	               "invalid argument: field "
	               "updates[0].relationship.subject.optional_relation "
	               "contains a NUL byte");
	free(p.data);

	/* A NUL alone, at the start, at the end. */
	static const char *const nuls[] = {"\0~~~", "~~~\0", "~\0~~"};
	for (size_t i = 0; i < 3; i++) {
		write_request_init(&w, NULL, NULL);
		w.rels[1].relation = "~~~~";
		p = pack(&w.req.base);
		replace(&p, "~~~~", nuls[i], 4);
		expect_message(check(WRITE_D, p),
		               "invalid argument: field "
		               "updates[1].relationship.relation contains a "
		               "NUL byte");
		free(p.data);
	}
}

static void test_invalid_utf8_is_refused(void **state)
{
	/* Overlong NUL, surrogate, beyond U+10FFFF, a lone continuation
	 * byte, 0xFF, a truncated sequence, an overlong '/'. */
	static const char *const bad[] = {
	    "x\xc0\x80x", "\xed\xa0\x80x", "\xf4\x90\x80\x80", "xx\x80x",
	    "xxx\xff",    "xx\xe2\x82",    "x\xc0\xafx",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_request w;
		write_request_init(&w, NULL, NULL);
		w.subjects[1].object_type = "~~~~";
		packed p = pack(&w.req.base);
		replace(&p, "~~~~", bad[i], 4);
		expect_message(check(WRITE_D, p),
		               "invalid argument: field "
		               "updates[1].relationship.subject.object.object_"
		               "type is not valid UTF-8");
		free(p.data);
	}
}

static void test_struct_paths_name_map_keys(void **state)
{
	/* A string value in a caveat context. */
	write_request w;
	small_struct ctx;
	static const char *const keys[] = {"level", "tag"};
	static const char *const strs[] = {"x", "~~"};
	write_request_init(&w, small_struct_init(&ctx, keys, strs, 2), NULL);
	packed p = pack(&w.req.base);
	replace(&p, "~~", "a\0", 2);
	expect_message(check(WRITE_D, p),
	               "invalid argument: field "
	               "updates[1].relationship.optional_caveat.context."
	               "fields[\"tag\"].string_value contains a NUL byte");
	free(p.data);

	/* A NUL in a key: the entry is named by its position. */
	static const char *const keys2[] = {"ok", "t~g"};
	static const char *const strs2[] = {"x", "y"};
	write_request_init(&w, small_struct_init(&ctx, keys2, strs2, 2), NULL);
	p = pack(&w.req.base);
	replace(&p, "t~g", "t\0g", 3);
	expect_message(check(WRITE_D, p),
	               "invalid argument: field "
	               "updates[1].relationship.optional_caveat.context."
	               "fields[1].key contains a NUL byte");
	free(p.data);

	/* A key that does not print well is shown by position too. */
	static const char *const keys3[] = {"a\"b"};
	static const char *const strs3[] = {"\xc3~"};
	write_request_init(&w, small_struct_init(&ctx, keys3, strs3, 1), NULL);
	p = pack(&w.req.base);
	replace(&p, "\xc3~", "\xc3(", 2);
	expect_message(check(WRITE_D, p),
	               "invalid argument: field "
	               "updates[1].relationship.optional_caveat.context."
	               "fields[0].string_value is not valid UTF-8");
	free(p.data);

	/* Transaction metadata, a list inside a struct inside a struct. */
	Google__Protobuf__Value item0 = GOOGLE__PROTOBUF__VALUE__INIT,
	                        item1 = GOOGLE__PROTOBUF__VALUE__INIT;
	item0.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	item0.string_value = "fine";
	item1.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	item1.string_value = "no~";
	Google__Protobuf__Value *items[] = {&item0, &item1};
	Google__Protobuf__ListValue list = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
	list.n_values = 2;
	list.values = items;
	small_struct inner;
	static const char *const ikeys[] = {"l"};
	static const char *const istrs[] = {""};
	small_struct_init(&inner, ikeys, istrs, 1);
	inner.values[0].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
	inner.values[0].list_value = &list;
	small_struct outer;
	static const char *const okeys[] = {"o"};
	small_struct_init(&outer, okeys, istrs, 1);
	outer.values[0].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
	outer.values[0].struct_value = &inner.s;
	write_request_init(&w, NULL, &outer.s);
	p = pack(&w.req.base);
	replace(&p, "no~", "no\0", 3);
	expect_message(check(WRITE_D, p),
	               "invalid argument: field "
	               "optional_transaction_metadata.fields[\"o\"].struct_"
	               "value.fields[\"l\"].list_value.values[1].string_value "
	               "contains a NUL byte");
	free(p.data);
}

static void test_top_level_fields_and_other_messages(void **state)
{
	Authzed__Api__V1__WriteSchemaRequest ws =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	ws.schema = "definition user {}\n~";
	packed p = pack(&ws.base);
	replace(&p, "\n~", "\n\0", 2);
	expect_message(
	    check(&authzed__api__v1__write_schema_request__descriptor, p),
	    "invalid argument: field schema contains a NUL byte");
	free(p.data);

	Authzed__Api__V1__ZedToken tok = AUTHZED__API__V1__ZED_TOKEN__INIT;
	tok.token = "GgoK~";
	Authzed__Api__V1__Consistency cons =
	    AUTHZED__API__V1__CONSISTENCY__INIT;
	cons.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
	cons.at_exact_snapshot = &tok;
	Authzed__Api__V1__CheckPermissionRequest cp =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	cp.consistency = &cons;
	cp.permission = "view";
	p = pack(&cp.base);
	replace(&p, "GgoK~", "GgoK\0", 5);
	expect_message(
	    check(&authzed__api__v1__check_permission_request__descriptor, p),
	    "invalid argument: field consistency.at_exact_snapshot.token "
	    "contains a NUL byte");
	free(p.data);
}

/* Unknown fields and fields whose wire type does not say "string" are
 * not strings: protobuf-c keeps or refuses them itself. */
static void test_unknown_fields_are_not_checked(void **state)
{
	/* field 15 (unknown to ObjectReference), length 2, "a\0" */
	static const uint8_t unknown[] = {0x7a, 0x02, 'a', 0x00};
	expect_message(check(&authzed__api__v1__object_reference__descriptor,
	                     (packed){(uint8_t *)unknown, sizeof(unknown)}),
	               "");
	/* object_type (1) sent as a varint: not checked here, refused by
	 * the unpacker. */
	static const uint8_t varint[] = {0x08, 0x00};
	expect_message(check(&authzed__api__v1__object_reference__descriptor,
	                     (packed){(uint8_t *)varint, sizeof(varint)}),
	               "");
	ProtobufCMessage *m;
	pemba_error err;
	assert_int_equal(
	    svc_unpack(&authzed__api__v1__object_reference__descriptor, varint,
	               sizeof(varint), &m, &err),
	    PEMBA_EINVAL);
	assert_null(m);
	assert_non_null(strstr(err.message, "could not decode"));
}

static void test_malformed_and_deep_bytes_are_refused(void **state)
{
	const ProtobufCMessageDescriptor *d =
	    &authzed__api__v1__object_reference__descriptor;
	/* Truncated length, truncated varint, a group, a non-canonical
	 * five-byte length of 3 + 2^32 (past the end). */
	static const uint8_t truncated[] = {0x0a, 0x05, 'a'};
	static const uint8_t open_varint[] = {0x08, 0x80};
	static const uint8_t group[] = {0x0b, 0x0c};
	static const uint8_t huge[] = {0x0a, 0x83, 0x80, 0x80, 0x80,
	                               0x10, 'a',  'b',  'c'};
	/* Field number 0 written in two bytes, and 2^29 (one past the
	 * largest): protobuf-c would keep them as unknown fields it cannot
	 * pack back. */
	static const uint8_t field_zero[] = {0x80, 0x00, 0x00};
	static const uint8_t field_big[] = {0x80, 0x80, 0x80, 0x80, 0x10, 0x00};
	const packed cases[] = {
	    {(uint8_t *)truncated, sizeof(truncated)},
	    {(uint8_t *)open_varint, sizeof(open_varint)},
	    {(uint8_t *)group, sizeof(group)},
	    {(uint8_t *)huge, sizeof(huge)},
	    {(uint8_t *)field_zero, sizeof(field_zero)},
	    {(uint8_t *)field_big, sizeof(field_big)},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_message(
		    check(d, cases[i]),
		    "malformed authzed.api.v1.ObjectReference: could "
		    "not decode protobuf message");

	/* Values nested in lists: 2 messages per level. */
	packed deep = nested_values(100);
	expect_message(check(&google__protobuf__value__descriptor, deep),
	               "malformed google.protobuf.Value: messages nested "
	               "more than 64 deep");
	assert_true(pb_guard_depth_ok(&google__protobuf__value__descriptor,
	                              deep.data, deep.len, 1000));
	assert_false(pb_guard_depth_ok(&google__protobuf__value__descriptor,
	                               deep.data, deep.len, 64));
	free(deep.data);
	packed shallow = nested_values(30);
	expect_message(check(&google__protobuf__value__descriptor, shallow),
	               "");
	free(shallow.data);
}

static void test_every_method_has_a_request_descriptor(void **state)
{
	svc_backend backend = {0};
	grpc_method methods[SERVICES_MAX_METHODS];
	size_t n = services_methods(&backend, methods, SERVICES_MAX_METHODS);
	assert_true(n > 20);
	for (size_t i = 0; i < n; i++)
		if (!svc_request_descriptor(methods[i].path))
			fail_msg("no request type for %s", methods[i].path);
	assert_ptr_equal(
	    svc_request_descriptor(
	        "/authzed.api.v1.PermissionsService/CheckPermission"),
	    &authzed__api__v1__check_permission_request__descriptor);
	assert_null(svc_request_descriptor("/authzed.api.v1.Nope/Check"));
	assert_null(
	    svc_request_descriptor("/authzed.api.v1.PermissionsService/Nope"));
	assert_null(svc_request_descriptor("nonsense"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clean_requests_pass),
	    cmocka_unit_test(test_nul_in_a_string_field_names_its_path),
	    cmocka_unit_test(test_invalid_utf8_is_refused),
	    cmocka_unit_test(test_struct_paths_name_map_keys),
	    cmocka_unit_test(test_top_level_fields_and_other_messages),
	    cmocka_unit_test(test_unknown_fields_are_not_checked),
	    cmocka_unit_test(test_malformed_and_deep_bytes_are_refused),
	    cmocka_unit_test(test_every_method_has_a_request_descriptor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
