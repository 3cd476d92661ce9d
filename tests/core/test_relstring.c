/*
 * test_relstring.c -- the relationship text syntax: parsing every accepted
 * form, canonical formatting, round trips and the errors of malformed input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pemba.h"

/* ============================================================ helpers */

/* A parsed relationship and the storage it points into. */
typedef struct parsed {
	pemba_relationship rel;
	char *storage;
} parsed;

static void parse_ok(const char *text, parsed *out)
{
	pemba_error err = {0};
	int rc = pemba_parse_relationship(text, &out->rel, &out->storage, &err);
	if (rc != 0)
		fail_msg("parse of \"%s\" failed: %s", text, err.message);
	assert_non_null(out->storage);
}

static void parsed_free(parsed *p)
{
	pemba_free(p->storage);
	p->storage = NULL;
}

/* Parses text, expecting PEMBA_EINVAL with a message containing every
 * non-NULL substring given. */
static void parse_fails(const char *text, const char *want1, const char *want2)
{
	pemba_relationship rel;
	char *storage = (char *)1;
	pemba_error err = {0};
	int rc = pemba_parse_relationship(text, &rel, &storage, &err);
	if (rc == 0)
		fail_msg("parse of \"%s\" unexpectedly succeeded", text);
	assert_int_equal(rc, PEMBA_EINVAL);
	assert_int_equal(err.code, PEMBA_EINVAL);
	assert_null(storage);
	if (want1 && !strstr(err.message, want1))
		fail_msg("message for \"%s\" lacks \"%s\": %s", text, want1,
		         err.message);
	if (want2 && !strstr(err.message, want2))
		fail_msg("message for \"%s\" lacks \"%s\": %s", text, want2,
		         err.message);
}

/* Formats text's parse and compares it with want. */
static void assert_formats_as(const char *text, const char *want)
{
	parsed p;
	parse_ok(text, &p);
	char *s = pemba_format_relationship(&p.rel);
	assert_non_null(s);
	assert_string_equal(s, want);
	pemba_free(s);
	parsed_free(&p);
}

static int str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static int rel_equal(const pemba_relationship *a, const pemba_relationship *b)
{
	return str_eq(a->resource_type, b->resource_type) &&
	       str_eq(a->resource_id, b->resource_id) &&
	       str_eq(a->relation, b->relation) &&
	       str_eq(a->subject_type, b->subject_type) &&
	       str_eq(a->subject_id, b->subject_id) &&
	       str_eq(a->subject_relation, b->subject_relation) &&
	       str_eq(a->caveat_name, b->caveat_name) &&
	       str_eq(a->caveat_context, b->caveat_context) &&
	       a->expiration_ms == b->expiration_ms;
}

/* ============================================================ valid forms */

static void test_parses_plain_relationship(void **state)
{
	parsed p;
	parse_ok("document:readme#viewer@user:anne", &p);
	assert_string_equal(p.rel.resource_type, "document");
	assert_string_equal(p.rel.resource_id, "readme");
	assert_string_equal(p.rel.relation, "viewer");
	assert_string_equal(p.rel.subject_type, "user");
	assert_string_equal(p.rel.subject_id, "anne");
	assert_null(p.rel.subject_relation);
	assert_null(p.rel.caveat_name);
	assert_null(p.rel.caveat_context);
	assert_int_equal(p.rel.expiration_ms, 0);
	parsed_free(&p);
}

static void test_parses_subject_relation(void **state)
{
	parsed p;
	parse_ok("group:eng#member@group:platform#member", &p);
	assert_string_equal(p.rel.subject_type, "group");
	assert_string_equal(p.rel.subject_id, "platform");
	assert_string_equal(p.rel.subject_relation, "member");
	parsed_free(&p);
}

static void test_ellipsis_subject_relation_means_none(void **state)
{
	parsed p;
	parse_ok("document:companyplan#parent@folder:company#...", &p);
	assert_string_equal(p.rel.subject_id, "company");
	assert_null(p.rel.subject_relation);
	parsed_free(&p);
}

static void test_parses_wildcard_subject(void **state)
{
	parsed p;
	parse_ok("test/resource:first#viewer@test/user:*", &p);
	assert_string_equal(p.rel.subject_id, "*");
	assert_string_equal(p.rel.subject_type, "test/user");
	parsed_free(&p);
}

static void test_parses_prefixed_types(void **state)
{
	parsed p;
	parse_ok("org/docs_team/resource:someresource#viewer@org/identity_team/"
	         "group:subgroup#member",
	         &p);
	assert_string_equal(p.rel.resource_type, "org/docs_team/resource");
	assert_string_equal(p.rel.subject_type, "org/identity_team/group");
	assert_string_equal(p.rel.subject_relation, "member");
	parsed_free(&p);
}

static void test_parses_extended_id_characters(void **state)
{
	parsed p;
	parse_ok("document:--=base64YWZzZGZh-ZHNmZHPwn5iK8J+YivC/fmIrwn5iK==#"
	         "writer@user:authn|someuser",
	         &p);
	assert_string_equal(
	    p.rel.resource_id,
	    "--=base64YWZzZGZh-ZHNmZHPwn5iK8J+YivC/fmIrwn5iK==");
	assert_string_equal(p.rel.subject_id, "authn|someuser");
	parsed_free(&p);
}

static void test_accepts_id_of_1024_bytes(void **state)
{
	char text[1200];
	char id[1025];
	memset(id, 'a', 1024);
	id[1024] = '\0';
	snprintf(text, sizeof(text), "document:%s#viewer@user:x", id);
	parsed p;
	parse_ok(text, &p);
	assert_int_equal(strlen(p.rel.resource_id), 1024);
	parsed_free(&p);
}

static void test_parses_caveat_without_context(void **state)
{
	parsed p;
	parse_ok("document:firstdoc#viewer@user:sarah[some_caveat]", &p);
	assert_string_equal(p.rel.caveat_name, "some_caveat");
	assert_null(p.rel.caveat_context);
	parsed_free(&p);
}

static void test_parses_caveat_with_context(void **state)
{
	parsed p;
	parse_ok("document:firstdoc#viewer@user:tom[some_caveat:{\"somelist\": "
	         "[42, 43], \"s\": \"a]}\\\"b\"}]",
	         &p);
	assert_string_equal(p.rel.caveat_name, "some_caveat");
	assert_string_equal(p.rel.caveat_context,
	                    "{\"somelist\": [42, 43], \"s\": \"a]}\\\"b\"}");
	parsed_free(&p);
}

static void test_parses_prefixed_caveat_name(void **state)
{
	parsed p;
	parse_ok("org/r:x#viewer@org/g:y#member[foo/bar/only_on_tuesday]", &p);
	assert_string_equal(p.rel.caveat_name, "foo/bar/only_on_tuesday");
	parsed_free(&p);
}

static void test_parses_expiration(void **state)
{
	parsed p;
	parse_ok(
	    "document:firstdoc#viewer@user:tom[expiration:2023-12-01T00:00:"
	    "00Z]",
	    &p);
	assert_null(p.rel.caveat_name);
	/* 2023-12-01T00:00:00Z */
	assert_int_equal(p.rel.expiration_ms, 1701388800000LL);
	parsed_free(&p);
}

static void test_expiration_offsets_and_fractions(void **state)
{
	parsed p;
	parse_ok("a:b#c@d:e[expiration:2023-12-01T02:30:00.5+02:30]", &p);
	assert_int_equal(p.rel.expiration_ms, 1701388800500LL);
	parsed_free(&p);
	parse_ok("a:b#c@d:e[expiration:2023-11-30T23:00:00.123456789-01:00]",
	         &p);
	assert_int_equal(p.rel.expiration_ms, 1701388800123LL);
	parsed_free(&p);
	parse_ok("a:b#c@d:e[expiration:1969-12-31T23:59:59Z]", &p);
	assert_int_equal(p.rel.expiration_ms, -1000);
	parsed_free(&p);
	parse_ok("a:b#c@d:e[expiration:2024-02-29T00:00:00Z]", &p);
	assert_int_equal(p.rel.expiration_ms, 1709164800000LL);
	parsed_free(&p);
}

static void test_parses_caveat_and_expiration(void **state)
{
	parsed p;
	parse_ok(
	    "document:firstdoc#viewer@user:sarah[somecaveat:{\"somecondition"
	    "\":42}][expiration:2300-12-01T00:00:00Z]",
	    &p);
	assert_string_equal(p.rel.caveat_name, "somecaveat");
	assert_string_equal(p.rel.caveat_context, "{\"somecondition\":42}");
	assert_int_equal(p.rel.expiration_ms, 10442649600000LL);
	parsed_free(&p);
}

static void test_caveat_named_expiration_is_a_caveat(void **state)
{
	parsed p;
	parse_ok("a:b#c@d:e[expiration]", &p);
	assert_string_equal(p.rel.caveat_name, "expiration");
	assert_int_equal(p.rel.expiration_ms, 0);
	parsed_free(&p);
	parse_ok("a:b#c@d:e[expiration:{\"x\":1}]", &p);
	assert_string_equal(p.rel.caveat_name, "expiration");
	assert_string_equal(p.rel.caveat_context, "{\"x\":1}");
	parsed_free(&p);
}

static void test_trims_surrounding_whitespace(void **state)
{
	parsed p;
	parse_ok("  \tdocument:1#viewer@user:2 \r\n", &p);
	assert_string_equal(p.rel.resource_type, "document");
	assert_string_equal(p.rel.subject_id, "2");
	parsed_free(&p);
}

/* ============================================================ formatting */

static void test_formats_canonically(void **state)
{
	assert_formats_as("document:1#viewer@user:anne",
	                  "document:1#viewer@user:anne");
	assert_formats_as("document:1#parent@folder:x#...",
	                  "document:1#parent@folder:x");
	assert_formats_as("group:a#member@group:b#member",
	                  "group:a#member@group:b#member");
	assert_formats_as("a:b#c@d:*", "a:b#c@d:*");
	assert_formats_as("a:b#c@d:e[cav]", "a:b#c@d:e[cav]");
	assert_formats_as("a:b#c@d:e[cav:{\"a\": [1, 2]}]",
	                  "a:b#c@d:e[cav:{\"a\": [1, 2]}]");
	assert_formats_as("a:b#c@d:e[expiration:2023-12-01T02:00:00+02:00]",
	                  "a:b#c@d:e[expiration:2023-12-01T00:00:00Z]");
	assert_formats_as("a:b#c@d:e[expiration:2023-12-01t00:00:00.25z]",
	                  "a:b#c@d:e[expiration:2023-12-01T00:00:00.250Z]");
	assert_formats_as("a:b#c@d:e[cav][expiration:1969-07-20T20:17:40Z]",
	                  "a:b#c@d:e[cav][expiration:1969-07-20T20:17:40Z]");
}

static void test_format_treats_empty_subject_relation_as_none(void **state)
{
	pemba_relationship rel = {
	    .resource_type = "document",
	    .resource_id = "1",
	    .relation = "viewer",
	    .subject_type = "user",
	    .subject_id = "anne",
	    .subject_relation = "",
	};
	char *s = pemba_format_relationship(&rel);
	assert_string_equal(s, "document:1#viewer@user:anne");
	pemba_free(s);
	rel.subject_relation = "...";
	s = pemba_format_relationship(&rel);
	assert_string_equal(s, "document:1#viewer@user:anne");
	pemba_free(s);
	assert_null(pemba_format_relationship(NULL));
}

static void test_round_trips_through_format(void **state)
{
	static const char *inputs[] = {
	    "document:readme#viewer@user:anne",
	    "document:readme#viewer@user:anne#...",
	    "group:a#member@group:b#member",
	    "test/resource:first#viewer@test/user:*",
	    "org/a/b:x|y#rel_1@org/c:z=+/-#member",
	    "a:b#c@d:e[foo/bar_baz]",
	    "a:b#c@d:e[cav:{}]",
	    "a:b#c@d:e[cav:{\"k\":\"v\\u00e9\\n\", \"l\":[{},[]]}]",
	    "a:b#c@d:e[expiration:0001-01-01T00:00:00Z]",
	    "a:b#c@d:e[expiration:9999-12-31T23:59:59.999Z]",
	    ("a:b#c@d:e[cav:{\"x\":1}]"
	     "[expiration:2100-02-28T13:14:15.016-07:00]"),
	};
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		parsed a, b;
		parse_ok(inputs[i], &a);
		char *s = pemba_format_relationship(&a.rel);
		parse_ok(s, &b);
		if (!rel_equal(&a.rel, &b.rel))
			fail_msg("round trip of \"%s\" via \"%s\" differs",
			         inputs[i], s);
		/* Formatting is idempotent. */
		char *s2 = pemba_format_relationship(&b.rel);
		assert_string_equal(s, s2);
		pemba_free(s);
		pemba_free(s2);
		parsed_free(&a);
		parsed_free(&b);
	}
}

/* ============================================================ malformed input
 */

static void test_rejects_missing_parts(void **state)
{
	parse_fails("", "expected resource type", "offset 0");
	parse_fails("document", "expected ':' after the resource type",
	            "offset 8");
	parse_fails("document:", "expected resource id", "offset 9");
	parse_fails("document:1", "expected '#' after the resource id",
	            "offset 10");
	parse_fails("document:1#", "expected relation", "offset 11");
	parse_fails("document:1#viewer", "expected '@' after the relation",
	            "offset 17");
	parse_fails("document:1#viewer@", "expected subject type", "offset 18");
	parse_fails("document:1#viewer@user", "expected ':' after the subject",
	            "offset 22");
	parse_fails("document:1#viewer@user:", "expected subject id",
	            "offset 23");
	parse_fails("document:1#viewer@user:2#", "expected subject relation",
	            "offset 25");
}

static void test_rejects_wrong_delimiters(void **state)
{
	parse_fails("document:1@user:2", "expected '#' after the resource id",
	            "found '@'");
	parse_fails("document#viewer@user:2", "expected ':'", "found '#'");
	parse_fails("document:1#viewer:user:2", "expected '@'", "offset 17");
	parse_fails("document:1#viewer@user:2@x", "unexpected '@'",
	            "offset 24");
	parse_fails("document:1#viewer@user:2]", "unexpected ']'", NULL);
}

static void test_rejects_bad_identifier_characters(void **state)
{
	parse_fails("Document:1#viewer@user:2",
	            "resource type must start with a lowercase letter",
	            "offset 0");
	parse_fails("doc-ument:1#viewer@user:2",
	            "invalid character '-' in "
	            "resource type",
	            "offset 3");
	parse_fails("document:a b#viewer@user:2",
	            "invalid character ' ' in resource id", "offset 10");
	parse_fails("document:a.b#viewer@user:2",
	            "invalid character '.' in resource id", NULL);
	parse_fails("document:1#View@user:2",
	            "relation must start with a lowercase letter", NULL);
	parse_fails("document:1#vi-ew@user:2",
	            "invalid character '-' in "
	            "relation",
	            "offset 13");
	parse_fails("document:1#viewer@user:caf\xc3\xa9",
	            "invalid character \\xc3 in subject id", "offset 26");
	parse_fails("document:1#viewer@us/er:2#Member",
	            "subject relation must start with a lowercase letter",
	            "offset 26");
	parse_fails("document:1#viewer@user:2#....",
	            "subject relation must start with a lowercase letter",
	            "found '.'");
	parse_fails("/document:1#viewer@user:2", "empty name segment",
	            "offset 0");
	parse_fails("org//document:1#viewer@user:2", "empty name segment",
	            "offset 4");
	parse_fails("document/:1#viewer@user:2", "ends with '/'", NULL);
	parse_fails("org/1doc:1#viewer@user:2", "must start with a lowercase",
	            "offset 4");
}

static void test_rejects_misplaced_wildcards(void **state)
{
	parse_fails("document:*#viewer@user:2",
	            "resource id cannot be the wildcard", "offset 9");
	parse_fails("document:1#viewer@user:*#member",
	            "wildcard subject cannot have a relation", NULL);
	parse_fails("document:1#viewer@user:a*",
	            "invalid character '*' in subject id", NULL);
	parse_fails("document:1#...@user:a",
	            "relation must start with a lowercase letter", "offset 11");
}

static void test_rejects_overlong_id(void **state)
{
	char text[1200];
	char id[1026];
	memset(id, 'a', 1025);
	id[1025] = '\0';
	snprintf(text, sizeof(text), "document:1#viewer@user:%s", id);
	parse_fails(text, "subject id is longer than 1024 bytes", "offset 23");
}

static void test_rejects_bad_caveats(void **state)
{
	parse_fails("a:b#c@d:e[]", "expected caveat name", "offset 10");
	parse_fails("a:b#c@d:e[cav", "expected ']' after the caveat",
	            "found end");
	parse_fails("a:b#c@d:e[Cav]",
	            "caveat name must start with a "
	            "lowercase letter",
	            NULL);
	parse_fails("a:b#c@d:e[cav:]", "expected '{'", "offset 14");
	parse_fails("a:b#c@d:e[cav:[1]]", "expected '{'", NULL);
	parse_fails("a:b#c@d:e[cav:{\"a\":1]", "unbalanced ']'", "offset 20");
	parse_fails("a:b#c@d:e[cav:{\"a\":1", "unterminated caveat context",
	            NULL);
	parse_fails("a:b#c@d:e[cav:{\"a:1}]", "unterminated string",
	            "offset 15");
	parse_fails("a:b#c@d:e[cav:{\"a\\q\":1}]", "bad escape", NULL);
	parse_fails("a:b#c@d:e[cav:{\"\\u12g4\":1}]", "bad \\u escape", NULL);
	parse_fails("a:b#c@d:e[cav:{\"a\nb\":1}]", "control character", NULL);
	parse_fails("a:b#c@d:e[cav:{\"a\":1}x]",
	            "expected ']' after the caveat", "found 'x'");
	parse_fails("a:b#c@d:e[cav][cav2]", "more than one caveat",
	            "offset 14");
}

static void test_rejects_bad_expirations(void **state)
{
	parse_fails("a:b#c@d:e[expiration:]", "invalid expiration",
	            "offset 21");
	parse_fails("a:b#c@d:e[expiration:2023-12-01]", "invalid expiration",
	            "offset 31");
	parse_fails("a:b#c@d:e[expiration:2023-12-01T00:00:00]",
	            "expected time zone", "offset 40");
	parse_fails("a:b#c@d:e[expiration:2023-13-01T00:00:00Z]",
	            "month out of range", "offset 26");
	parse_fails("a:b#c@d:e[expiration:2023-02-29T00:00:00Z]",
	            "day out of range", "offset 29");
	parse_fails("a:b#c@d:e[expiration:2023-01-01T24:00:00Z]",
	            "hour out of range", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:60:00Z]",
	            "minute out of range", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:00:60Z]",
	            "second out of range", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:00:00.Z]",
	            "fraction of a second", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:00:00+24:00]",
	            "offset out of range", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:00:00Zjunk]",
	            "unexpected text after the time", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01 00:00:00Z]",
	            "expected RFC 3339 time", "offset 31");
	parse_fails("a:b#c@d:e[expiration:0000-01-01T00:00:00+01:00]",
	            "outside years 0000-9999", NULL);
	parse_fails("a:b#c@d:e[expiration:1970-01-01T00:00:00Z]", "Unix epoch",
	            NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:00:00Z",
	            "unterminated '[expiration:'", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:00:00Z][cav]",
	            "caveat must come before the expiration", NULL);
	parse_fails("a:b#c@d:e[expiration:2023-01-01T00:00:00Z][expiration:"
	            "2024-01-01T00:00:00Z]",
	            "more than one expiration", NULL);
}

static void test_rejects_null_arguments(void **state)
{
	pemba_relationship rel;
	char *storage;
	pemba_error err = {0};
	assert_int_equal(pemba_parse_relationship(NULL, &rel, &storage, &err),
	                 PEMBA_EINVAL);
	assert_int_equal(
	    pemba_parse_relationship("a:b#c@d:e", NULL, &storage, &err),
	    PEMBA_EINVAL);
	assert_int_equal(
	    pemba_parse_relationship("a:b#c@d:e", &rel, NULL, &err),
	    PEMBA_EINVAL);
	/* A NULL error pointer is allowed. */
	assert_int_equal(pemba_parse_relationship("bad", &rel, &storage, NULL),
	                 PEMBA_EINVAL);
}

static void test_error_quotes_long_input_in_part(void **state)
{
	size_t n = 5000;
	char *text = malloc(n + 1);
	memset(text, 'a', n);
	text[n] = '\0';
	pemba_relationship rel;
	char *storage;
	pemba_error err = {0};
	assert_int_equal(pemba_parse_relationship(text, &rel, &storage, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "...\""));
	assert_non_null(strstr(err.message, "offset 5000"));
	assert_true(strlen(err.message) < 400);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parses_plain_relationship),
	    cmocka_unit_test(test_parses_subject_relation),
	    cmocka_unit_test(test_ellipsis_subject_relation_means_none),
	    cmocka_unit_test(test_parses_wildcard_subject),
	    cmocka_unit_test(test_parses_prefixed_types),
	    cmocka_unit_test(test_parses_extended_id_characters),
	    cmocka_unit_test(test_accepts_id_of_1024_bytes),
	    cmocka_unit_test(test_parses_caveat_without_context),
	    cmocka_unit_test(test_parses_caveat_with_context),
	    cmocka_unit_test(test_parses_prefixed_caveat_name),
	    cmocka_unit_test(test_parses_expiration),
	    cmocka_unit_test(test_expiration_offsets_and_fractions),
	    cmocka_unit_test(test_parses_caveat_and_expiration),
	    cmocka_unit_test(test_caveat_named_expiration_is_a_caveat),
	    cmocka_unit_test(test_trims_surrounding_whitespace),
	    cmocka_unit_test(test_formats_canonically),
	    cmocka_unit_test(test_format_treats_empty_subject_relation_as_none),
	    cmocka_unit_test(test_round_trips_through_format),
	    cmocka_unit_test(test_rejects_missing_parts),
	    cmocka_unit_test(test_rejects_wrong_delimiters),
	    cmocka_unit_test(test_rejects_bad_identifier_characters),
	    cmocka_unit_test(test_rejects_misplaced_wildcards),
	    cmocka_unit_test(test_rejects_overlong_id),
	    cmocka_unit_test(test_rejects_bad_caveats),
	    cmocka_unit_test(test_rejects_bad_expirations),
	    cmocka_unit_test(test_rejects_null_arguments),
	    cmocka_unit_test(test_error_quotes_long_input_in_part),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
