/*
 * test_struct_json.c -- google.protobuf.Struct <-> JSON text
 * (src/api/struct_json.c): caveat contexts travel as Structs on the wire and
 * as JSON object text inside pemba, so the two conversions must agree, write
 * integral numbers as JSON integers (int parameters accept only those), and
 * refuse what is not a bounded JSON object.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/struct_json.h"

/* JSON text -> Struct -> JSON text. */
static char *round_trip(const char *text)
{
	Google__Protobuf__Struct *s = api_struct_from_json(text, strlen(text));
	if (!s)
		fail_msg("not converted: %s", text);
	strbuf sb;
	strbuf_init(&sb);
	api_json_struct(&sb, s);
	api_struct_free(s);
	return strbuf_detach(&sb, NULL);
}

static void expect_round_trip(const char *text, const char *want)
{
	char *got = round_trip(text);
	assert_string_equal(got, want);
	free(got);
}

static void test_round_trip_keeps_every_json_kind(void **state)
{
	expect_round_trip("{}", "{}");
	expect_round_trip("{\"a\":1}", "{\"a\":1}");
	expect_round_trip(
	    "{\"s\":\"x\\\"y\\n\",\"t\":true,\"f\":false,\"n\":null}",
	    "{\"s\":\"x\\\"y\\n\",\"t\":true,\"f\":false,\"n\":null}");
	expect_round_trip("{\"l\":[1,\"two\",[3],{\"four\":4}],\"o\":{}}",
	                  "{\"l\":[1,\"two\",[3],{\"four\":4}],\"o\":{}}");
	expect_round_trip("{\"u\":\"h\\u00e9\"}", "{\"u\":\"h\xc3\xa9\"}");
	/* Key order is kept. */
	expect_round_trip("{\"b\":1,\"a\":2,\"c\":3}",
	                  "{\"b\":1,\"a\":2,\"c\":3}");
}

static void test_integral_numbers_are_written_as_integers(void **state)
{
	expect_round_trip("{\"a\":42.0}", "{\"a\":42}");
	expect_round_trip("{\"a\":4.2e1}", "{\"a\":42}");
	expect_round_trip("{\"a\":-7}", "{\"a\":-7}");
	expect_round_trip("{\"a\":-0.0}", "{\"a\":0}");
	expect_round_trip("{\"a\":1e17}", "{\"a\":100000000000000000}");
	expect_round_trip("{\"a\":9007199254740993}",
	                  "{\"a\":9007199254740992}"); /* nearest double */
	expect_round_trip("{\"a\":1.5}", "{\"a\":1.5}");
	expect_round_trip("{\"a\":0.1}", "{\"a\":0.10000000000000001}");
	/* Beyond 64-bit integers: an exponent, which still parses. */
	char *big = round_trip("{\"a\":1e20}");
	assert_string_equal(big, "{\"a\":1e+20}");
	free(big);
	/* An integer too large for 64 bits still converts (as a double). */
	expect_round_trip("{\"a\":123456789012345678901234567890}",
	                  "{\"a\":1.2345678901234568e+29}");
}

static void test_numbers_become_double_values(void **state)
{
	const char *text = "{\"n\":3,\"x\":2.5}";
	Google__Protobuf__Struct *s = api_struct_from_json(text, strlen(text));
	assert_non_null(s);
	assert_int_equal(s->n_fields, 2);
	assert_string_equal(s->fields[0]->key, "n");
	assert_int_equal(s->fields[0]->value->kind_case,
	                 GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
	assert_true(s->fields[0]->value->number_value == 3.0);
	assert_true(s->fields[1]->value->number_value == 2.5);
	/* A packed Struct unpacks to the same fields. */
	size_t len = google__protobuf__struct__get_packed_size(s);
	uint8_t *buf = malloc(len);
	google__protobuf__struct__pack(s, buf);
	Google__Protobuf__Struct *u =
	    google__protobuf__struct__unpack(NULL, len, buf);
	assert_non_null(u);
	assert_int_equal(u->n_fields, 2);
	google__protobuf__struct__free_unpacked(u, NULL);
	free(buf);
	api_struct_free(s);
}

static void test_non_objects_and_malformed_text_are_refused(void **state)
{
	static const char *const bad[] = {
	    "",      "[]",      "1",           "\"s\"",
	    "null",  "{",       "{\"a\":}",    "{\"a\" 1}",
	    "{} {}", "{'a':1}", "{\"a\":NaN}", "{\"a\":01}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (api_struct_from_json(bad[i], strlen(bad[i])))
			fail_msg("converted: %s", bad[i]);
	/* Only len bytes are read. */
	const char *text = "{\"a\":1}garbage";
	Google__Protobuf__Struct *s = api_struct_from_json(text, 7);
	assert_non_null(s);
	api_struct_free(s);
}

/* {"a":{"a":...{}}} with `levels` objects, or arrays [[...]] inside one
 * object. */
static char *nested(int levels, int arrays)
{
	size_t n = (size_t)levels * 8 + 16;
	char *t = malloc(n), *p = t;
	if (arrays) {
		p += sprintf(p, "{\"a\":");
		for (int i = 1; i < levels; i++)
			*p++ = '[';
		for (int i = 1; i < levels; i++)
			*p++ = ']';
		p += sprintf(p, "}");
	} else {
		for (int i = 1; i < levels; i++)
			p += sprintf(p, "{\"a\":");
		p += sprintf(p, "{}");
		for (int i = 1; i < levels; i++)
			*p++ = '}';
		*p = '\0';
	}
	return t;
}

static void test_nesting_is_bounded(void **state)
{
	for (int arrays = 0; arrays <= 1; arrays++) {
		char *ok = nested(API_STRUCT_MAX_DEPTH, arrays);
		Google__Protobuf__Struct *s =
		    api_struct_from_json(ok, strlen(ok));
		if (!s)
			fail_msg("refused %d levels (arrays %d)",
			         API_STRUCT_MAX_DEPTH, arrays);
		api_struct_free(s);
		free(ok);
		char *deep = nested(API_STRUCT_MAX_DEPTH + 1, arrays);
		assert_null(api_struct_from_json(deep, strlen(deep)));
		free(deep);
	}
	/* Very deep input fails cleanly too. */
	char *deep = nested(100000, 1);
	assert_null(api_struct_from_json(deep, strlen(deep)));
	free(deep);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_keeps_every_json_kind),
	    cmocka_unit_test(test_integral_numbers_are_written_as_integers),
	    cmocka_unit_test(test_numbers_become_double_values),
	    cmocka_unit_test(test_non_objects_and_malformed_text_are_refused),
	    cmocka_unit_test(test_nesting_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
