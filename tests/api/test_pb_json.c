/*
 * test_pb_json.c -- proto3 JSON <-> protobuf-c messages (src/api/pb_json.c),
 * the HTTP gateway's mapping: every scalar type (through a hand-made
 * descriptor), oneofs, enums, Struct, Timestamp, Duration, Any, maps, the
 * unpopulated-field rule, and the errors input can raise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/pb_json.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/rpc/error_details.pb-c.h"

/* ---- a message with the scalar types the API protos do not use ------ */

typedef struct all_types {
	ProtobufCMessage base;
	int64_t i64;
	int32_t s32;  /* sint32 */
	uint64_t f64; /* fixed64 */
	double d;
	float f;
	ProtobufCBinaryData b;
	size_t n_ri64;
	int64_t *ri64;
	int32_t sf32; /* sfixed32 */
	uint64_t u64;
} all_types;

#define F(name, id, label, type, q, member)                                    \
	{                                                                      \
		name, id, label, type, q, offsetof(all_types, member), NULL,   \
		    NULL, 0, 0, NULL, NULL                                     \
	}
static const ProtobufCFieldDescriptor all_fields[] = {
    F("i64", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT64, 0, i64),
    F("s32", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_SINT32, 0, s32),
    F("f64", 3, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_FIXED64, 0, f64),
    F("d", 4, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_DOUBLE, 0, d),
    F("f", 5, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_FLOAT, 0, f),
    F("b", 6, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_BYTES, 0, b),
    F("ri64", 7, PROTOBUF_C_LABEL_REPEATED, PROTOBUF_C_TYPE_INT64,
      offsetof(all_types, n_ri64), ri64),
    F("sf32", 8, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_SFIXED32, 0, sf32),
    F("u64", 9, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_UINT64, 0, u64),
};
static const unsigned all_by_name[] = {5, 3, 4, 2, 0, 6, 1, 7, 8};
static const ProtobufCIntRange all_ranges[] = {{1, 0}, {0, 9}};
static void all_init(ProtobufCMessage *m);
static const ProtobufCMessageDescriptor all_desc = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "test.AllTypes",
    "AllTypes",
    "AllTypes",
    "test",
    sizeof(all_types),
    9,
    all_fields,
    all_by_name,
    1,
    all_ranges,
    (ProtobufCMessageInit)all_init,
    NULL,
    NULL,
    NULL};
static void all_init(ProtobufCMessage *m)
{
	static const all_types init = {.base =
	                                   PROTOBUF_C_MESSAGE_INIT(&all_desc)};
	memcpy(m, &init, sizeof(init));
}

/* JSON -> wire -> message -> JSON. */
static char *round_trip(const ProtobufCMessageDescriptor *d, const char *json,
                        unsigned out_flags)
{
	pemba_error err = {0};
	ProtobufCMessage *m =
	    pbj_decode_message(d, json, strlen(json), 0, &err);
	if (!m)
		fail_msg("%s: %s", json, err.message);
	strbuf sb;
	strbuf_init(&sb);
	pbj_encode(&sb, m, out_flags);
	protobuf_c_message_free_unpacked(m, NULL);
	return strbuf_detach(&sb, NULL);
}

static void expect_json(const ProtobufCMessageDescriptor *d, const char *in,
                        unsigned flags, const char *want)
{
	char *got = round_trip(d, in, flags);
	assert_string_equal(got, want);
	free(got);
}

/* Input that must be refused, with `want` in the message. */
static void expect_error(const ProtobufCMessageDescriptor *d, const char *in,
                         unsigned flags, const char *want)
{
	pemba_error err = {0};
	strbuf w;
	strbuf_init(&w);
	int rc = pbj_decode(d, in, strlen(in), flags, &w, &err);
	strbuf_free(&w);
	if (rc == 0)
		fail_msg("accepted: %s", in);
	if (!strstr(err.message, want))
		fail_msg("%s: message `%s` lacks `%s`", in, err.message, want);
}

static void test_scalars(void **state)
{
	expect_json(&all_desc,
	            "{\"i64\":\"-9007199254740993\",\"s32\":-5,"
	            "\"f64\":\"18446744073709551615\",\"d\":1.5,\"f\":\"NaN\","
	            "\"b\":\"aGVsbG8=\",\"ri64\":[1,\"2\"],\"sf32\":-7,"
	            "\"u64\":42}",
	            0,
	            "{\"i64\":\"-9007199254740993\",\"s32\":-5,"
	            "\"f64\":\"18446744073709551615\",\"d\":1.5,\"f\":\"NaN\","
	            "\"b\":\"aGVsbG8=\",\"ri64\":[\"1\",\"2\"],\"sf32\":-7,"
	            "\"u64\":\"42\"}");
	/* Floats: shortest text; infinities as strings; integral reals
	 * accepted for integers; numeric strings for doubles. */
	expect_json(
	    &all_desc,
	    "{\"d\":\"-Infinity\",\"f\":0.1,\"i64\":3.0,\"u64\":\"7\"}", 0,
	    "{\"i64\":\"3\",\"d\":\"-Infinity\",\"f\":0.1,\"u64\":\"7\"}");
	expect_json(&all_desc, "{\"d\":\"2.5e3\"}", 0, "{\"d\":2500}");
	/* bytes: URL-safe and unpadded base64 accepted. */
	expect_json(&all_desc, "{\"b\":\"-_8\"}", 0, "{\"b\":\"+/8=\"}");
	/* Default values: omitted, or written with EMIT_UNPOPULATED. */
	expect_json(&all_desc, "{\"i64\":0,\"ri64\":[]}", 0, "{}");
	expect_json(&all_desc, "{}", PBJ_EMIT_UNPOPULATED,
	            "{\"i64\":\"0\",\"s32\":0,\"f64\":\"0\",\"d\":0,\"f\":0,"
	            "\"b\":\"\",\"ri64\":[],\"sf32\":0,\"u64\":\"0\"}");
	/* An empty body is the empty message; null keeps the default. */
	expect_json(&all_desc, "  ", 0, "{}");
	expect_json(&all_desc, "{\"i64\":null}", 0, "{}");
}

static void test_scalar_errors(void **state)
{
	expect_error(&all_desc, "{\"s32\":2147483648}", 0,
	             "field `s32`: 2147483648 is out of range");
	expect_error(&all_desc, "{\"u64\":-1}", 0, "out of range");
	expect_error(&all_desc, "{\"i64\":1.5}", 0, "expected an integer");
	expect_error(&all_desc, "{\"i64\":\"12x\"}", 0, "expected an integer");
	expect_error(&all_desc, "{\"i64\":true}", 0,
	             "expected an integer, got a boolean");
	expect_error(&all_desc, "{\"d\":\"abc\"}", 0, "expected a number");
	expect_error(&all_desc, "{\"f\":1e39}", 0, "out of range for a float");
	expect_error(&all_desc, "{\"b\":\"a$b\"}", 0, "invalid base64");
	expect_error(&all_desc, "{\"ri64\":5}", 0, "expected an array");
	expect_error(&all_desc, "{\"ri64\":[1,null]}", 0,
	             "field `ri64[1]`: null is not allowed");
	expect_error(&all_desc, "{\"i64\":1,", 0, "malformed JSON");
	expect_error(&all_desc, "[]", 0, "expected an object");
	expect_error(&all_desc, "{\"zzz\":1}", 0,
	             "unknown field \"zzz\" in test.AllTypes");
	/* ... unless unknown fields are discarded (grpc-gateway's setting). */
	pemba_error err = {0};
	strbuf w;
	strbuf_init(&w);
	const char *unknown = "{\"zzz\":{\"a\":[1]},\"u64\":1}";
	assert_int_equal(pbj_decode(&all_desc, unknown, strlen(unknown),
	                            PBJ_DISCARD_UNKNOWN, &w, &err),
	                 0);
	assert_int_equal(w.len, 2); /* just u64 = 1 */
	strbuf_free(&w);
}

static void test_authzed_messages(void **state)
{
	const ProtobufCMessageDescriptor *d =
	    &authzed__api__v1__check_permission_request__descriptor;
	/* Both JSON and proto names in; enums by name; oneof; Struct. */
	expect_json(
	    d,
	    "{\"consistency\":{\"fully_consistent\":true},"
	    "\"resource\":{\"objectType\":\"doc\",\"object_id\":\"1\"},"
	    "\"permission\":\"view\",\"subject\":{\"object\":{\"objectType\":"
	    "\"user\",\"objectId\":\"a\"}},\"context\":{\"n\":1,\"s\":\"x\","
	    "\"l\":[true,null,{\"k\":2.5}]}}",
	    0,
	    "{\"consistency\":{\"fullyConsistent\":true},\"resource\":{"
	    "\"objectType\":\"doc\",\"objectId\":\"1\"},\"permission\":"
	    "\"view\","
	    "\"subject\":{\"object\":{\"objectType\":\"user\",\"objectId\":"
	    "\"a\"}},\"context\":{\"n\":1,\"s\":\"x\",\"l\":[true,null,{\"k\":"
	    "2.5}]}}");
	/* EMIT_UNPOPULATED: unset messages null, zero enums by name, oneof
	 * members that are not set never written. */
	expect_json(
	    &authzed__api__v1__check_permission_response__descriptor,
	    "{\"permissionship\":2}", PBJ_EMIT_UNPOPULATED,
	    "{\"checkedAt\":null,\"permissionship\":"
	    "\"PERMISSIONSHIP_HAS_PERMISSION\",\"partialCaveatInfo\":null,"
	    "\"debugTrace\":null,\"optionalExpiresAt\":null}");
	expect_json(&authzed__api__v1__consistency__descriptor, "{}",
	            PBJ_EMIT_UNPOPULATED, "{}");
	expect_json(&authzed__api__v1__check_permission_response__descriptor,
	            "{\"permissionship\":\"PERMISSIONSHIP_UNSPECIFIED\"}",
	            PBJ_EMIT_UNPOPULATED,
	            "{\"checkedAt\":null,\"permissionship\":"
	            "\"PERMISSIONSHIP_UNSPECIFIED\",\"partialCaveatInfo\":null,"
	            "\"debugTrace\":null,\"optionalExpiresAt\":null}");
	/* A number with no enum name stays a number. */
	expect_json(&authzed__api__v1__check_permission_response__descriptor,
	            "{\"permissionship\":77}", 0, "{\"permissionship\":77}");
	expect_error(d,
	             "{\"consistency\":{\"fullyConsistent\":true,"
	             "\"minimizeLatency\":true}}",
	             0, "members of one oneof");
	expect_error(d, "{\"resource\":{\"objectType\":7}}", 0,
	             "field `resource.objectType`: expected a string, got a "
	             "number");
	expect_error(d, "{\"resource\":\"doc:1\"}", 0,
	             "field `resource`: expected an object for "
	             "authzed.api.v1.ObjectReference");
	expect_error(&authzed__api__v1__check_permission_response__descriptor,
	             "{\"permissionship\":\"YES\"}", 0,
	             "\"YES\" is not a value of enum");
	expect_error(d, "{\"context\":[1]}", 0,
	             "field `context`: expected an "
	             "object");
	expect_error(d, "{\"withTracing\":\"yes\"}", 0,
	             "expected true or false");
	/* Timestamps inside messages. */
	expect_json(&authzed__api__v1__relationship__descriptor,
	            "{\"optionalExpiresAt\":\"2030-01-02T03:04:05.120+01:00\"}",
	            0, "{\"optionalExpiresAt\":\"2030-01-02T02:04:05.120Z\"}");
}

static void test_well_known(void **state)
{
	const ProtobufCMessageDescriptor *ts =
	    &google__protobuf__timestamp__descriptor;
	const ProtobufCMessageDescriptor *du =
	    &google__protobuf__duration__descriptor;
	expect_json(ts, "\"1970-01-01T00:00:00Z\"", 0,
	            "\"1970-01-01T00:00:00Z\"");
	expect_json(ts, "\"2024-02-29T23:59:59.000000001Z\"", 0,
	            "\"2024-02-29T23:59:59.000000001Z\"");
	expect_json(ts, "\"2024-02-29T23:59:59.5Z\"", 0,
	            "\"2024-02-29T23:59:59.500Z\"");
	expect_json(ts, "\"2024-02-29T23:59:59.000123-00:30\"", 0,
	            "\"2024-03-01T00:29:59.000123Z\"");
	expect_error(ts, "\"2024-02-29 23:59:59Z\"", 0, "invalid RFC 3339");
	expect_error(ts, "\"2024-02-29T23:59:59\"", 0, "invalid RFC 3339");
	expect_error(ts, "12", 0, "expected an RFC 3339 timestamp string");
	expect_json(du, "\"1.5s\"", 0, "\"1.500s\"");
	expect_json(du, "\"-0.000000001s\"", 0, "\"-0.000000001s\"");
	expect_json(du, "\"3600s\"", 0, "\"3600s\"");
	expect_error(du, "\"1.5\"", 0, "invalid duration");
	expect_error(du, "\"1m\"", 0, "invalid duration");

	/* Any: a registered type's fields beside "@type"; a map field. */
	pbj_register_any(&google__rpc__error_info__descriptor);
	const char *any =
	    "{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\","
	    "\"reason\":\"ERROR_REASON_SCHEMA_PARSE_ERROR\",\"domain\":"
	    "\"authzed.com\",\"metadata\":{\"line\":\"3\",\"column\":\"4\"}}";
	expect_json(&google__protobuf__any__descriptor, any, 0, any);
	expect_json(
	    &google__protobuf__any__descriptor,
	    "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\","
	    "\"value\":\"2s\"}",
	    0,
	    "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\","
	    "\"value\":\"2s\"}");
	expect_error(&google__protobuf__any__descriptor,
	             "{\"@type\":\"type.googleapis.com/x.Unknown\"}", 0,
	             "unknown Any type");
	expect_error(&google__protobuf__any__descriptor, "{\"reason\":\"x\"}",
	             0, "needs a string \"@type\"");
	/* An unknown type in output: its bytes, base64. */
	Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT;
	a.type_url = "type.googleapis.com/x.Unknown";
	a.value.data = (uint8_t *)"\x08\x01";
	a.value.len = 2;
	strbuf sb;
	strbuf_init(&sb);
	pbj_encode(&sb, &a.base, 0);
	assert_string_equal(sb.data, "{\"@type\":\"type.googleapis.com/"
	                             "x.Unknown\",\"value\":\"CAE=\"}");
	strbuf_free(&sb);
	/* Struct nesting is bounded. */
	char deep[600];
	size_t n = 0;
	n += (size_t)sprintf(deep, "{\"context\":");
	for (int i = 0; i < 80; i++)
		deep[n++] = '[';
	for (int i = 0; i < 80; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n] = '\0';
	expect_error(&authzed__api__v1__check_permission_request__descriptor,
	             deep, 0, "expected an object");
	n = (size_t)sprintf(deep, "{\"context\":{\"a\":");
	for (int i = 0; i < 80; i++)
		deep[n++] = '[';
	for (int i = 0; i < 80; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n++] = '}';
	deep[n] = '\0';
	expect_error(&authzed__api__v1__check_permission_request__descriptor,
	             deep, 0, "nested too deeply");
}

static void test_json_name(void **state)
{
	char buf[64];
	pbj_json_name("optional_resource_id_prefix", buf, sizeof(buf));
	assert_string_equal(buf, "optionalResourceIdPrefix");
	pbj_json_name("schema", buf, sizeof(buf));
	assert_string_equal(buf, "schema");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scalars),
	    cmocka_unit_test(test_scalar_errors),
	    cmocka_unit_test(test_authzed_messages),
	    cmocka_unit_test(test_well_known),
	    cmocka_unit_test(test_json_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
