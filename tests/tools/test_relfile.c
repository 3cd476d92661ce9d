/*
 * test_relfile.c -- reading relationship files (src/tools/relfile.h):
 * lines with comments and blanks, the line numbers errors name, YAML
 * recognized by its first significant line, literal and folded blocks,
 * and inputs with nothing in them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/relfile.h"

/* A reader over text (fmemopen). */
typedef struct reader {
	FILE *in;
	relfile *f;
	char *error; /* of relfile_open */
} reader;

static int open_text(reader *r, const char *text)
{
	r->in = fmemopen((void *)text, strlen(text), "r");
	assert_non_null(r->in);
	r->f = NULL;
	r->error = NULL;
	return relfile_open(r->in, &r->f, &r->error);
}

static void close_reader(reader *r)
{
	relfile_close(r->f);
	free(r->error);
	fclose(r->in);
}

/* The next relationship's resource id and line; asserts there is one. */
static void expect_next(reader *r, const char *resource_id, int want_line)
{
	pemba_relationship rel;
	int line = 0;
	const char *error = NULL;
	int rc = relfile_next(r->f, &rel, &line, &error);
	if (rc != 1)
		fail_msg("expected %s, got %d (%s)", resource_id, rc,
		         error ? error : "end");
	assert_string_equal(rel.resource_id, resource_id);
	assert_int_equal(line, want_line);
}

static void expect_end(reader *r)
{
	pemba_relationship rel;
	int line;
	const char *error = NULL;
	assert_int_equal(relfile_next(r->f, &rel, &line, &error), 0);
}

static void expect_error(reader *r, const char *prefix)
{
	pemba_relationship rel;
	int line;
	const char *error = NULL;
	assert_int_equal(relfile_next(r->f, &rel, &line, &error), -1);
	assert_non_null(error);
	if (strncmp(error, prefix, strlen(prefix)) != 0)
		fail_msg("error '%s' does not start with '%s'", error, prefix);
}

static void test_lines_skip_blanks_and_comments(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(open_text(&r, "# a comment\n"
	                               "\n"
	                               "doc:1#viewer@user:anne\n"
	                               "   // indented comment\n"
	                               "  doc:2#viewer@user:bob  \r\n"
	                               "doc:3#viewer@user:carl[expiration:"
	                               "2030-01-01T00:00:00Z]"),
	                 0);
	assert_false(relfile_is_yaml(r.f));
	expect_next(&r, "1", 3);
	expect_next(&r, "2", 5);
	expect_next(&r, "3", 6);
	expect_end(&r);
	close_reader(&r);
}

static void test_a_malformed_line_is_named(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(open_text(&r, "doc:1#viewer@user:anne\n"
	                               "\n"
	                               "doc:2#viewer user:bob\n"),
	                 0);
	expect_next(&r, "1", 1);
	expect_error(&r, "line 3: malformed relationship 'doc:2#viewer "
	                 "user:bob'");
	close_reader(&r);
}

static void test_the_caveat_context_is_kept(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(
	    open_text(&r, "doc:1#viewer@user:anne[only:{\"day\": 1}]\n"), 0);
	pemba_relationship rel;
	int line;
	const char *error;
	assert_int_equal(relfile_next(r.f, &rel, &line, &error), 1);
	assert_string_equal(rel.caveat_name, "only");
	assert_non_null(strstr(rel.caveat_context, "\"day\""));
	close_reader(&r);
}

static void test_yaml_literal_block_lines_map_to_the_file(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(open_text(&r, "# validation file\n"
	                               "schema: |-\n"
	                               "  definition user {}\n"
	                               "relationships: |\n"
	                               "  doc:1#viewer@user:anne\n"
	                               "\n"
	                               "  // a comment\n"
	                               "  doc:2#viewer@user:bob\n"
	                               "  doc:3#viewer@@user:carl\n"
	                               "assertions: {}\n"),
	                 0);
	assert_true(relfile_is_yaml(r.f));
	expect_next(&r, "1", 5);
	expect_next(&r, "2", 8);
	expect_error(&r, "line 9: malformed relationship");
	close_reader(&r);
}

static void test_yaml_folded_block_names_the_key_line(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(open_text(&r, "---\n"
	                               "relationships: \"doc:1#viewer@user:a"
	                               "\\ndoc:2#viewer@user:b\"\n"),
	                 0);
	assert_true(relfile_is_yaml(r.f));
	expect_next(&r, "1", 2);
	expect_next(&r, "2", 2);
	expect_end(&r);
	close_reader(&r);
}

static void test_yaml_without_relationships_is_empty(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(open_text(&r, "schema: definition user {}\n"), 0);
	expect_end(&r);
	close_reader(&r);
	assert_int_equal(open_text(&r, "relationships: ~\n"), 0);
	expect_end(&r);
	close_reader(&r);
	assert_int_equal(open_text(&r, "relationships:\nschema: x\n"), 0);
	expect_end(&r);
	close_reader(&r);
}

static void test_malformed_yaml_is_refused_with_its_line(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(open_text(&r, "relationships: |\n"
	                               "  doc:1#viewer@user:a\n"
	                               "schema: [\n"),
	                 -1);
	assert_non_null(r.error);
	assert_non_null(strstr(r.error, "malformed YAML"));
	close_reader(&r);
	assert_int_equal(open_text(&r, "relationships:\n  - doc:1#v@user:a\n"),
	                 -1);
	assert_non_null(strstr(r.error, "line 2: relationships must be a "
	                                "string"));
	close_reader(&r);
	assert_int_equal(open_text(&r, "relationships: doc:1#v@user:a\n"
	                               "relationships: doc:2#v@user:a\n"),
	                 -1);
	assert_non_null(
	    strstr(r.error, "line 2: relationships is given twice"));
	close_reader(&r);
}

static void test_empty_inputs_have_nothing(void **state)
{
	(void)state;
	reader r;
	assert_int_equal(open_text(&r, ""), 0);
	expect_end(&r);
	close_reader(&r);
	assert_int_equal(open_text(&r, "\n# only a comment\n\n"), 0);
	expect_end(&r);
	close_reader(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lines_skip_blanks_and_comments),
	    cmocka_unit_test(test_a_malformed_line_is_named),
	    cmocka_unit_test(test_the_caveat_context_is_kept),
	    cmocka_unit_test(test_yaml_literal_block_lines_map_to_the_file),
	    cmocka_unit_test(test_yaml_folded_block_names_the_key_line),
	    cmocka_unit_test(test_yaml_without_relationships_is_empty),
	    cmocka_unit_test(test_malformed_yaml_is_refused_with_its_line),
	    cmocka_unit_test(test_empty_inputs_have_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
