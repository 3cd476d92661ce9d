/*
 * test_schema_print.c -- canonical printing: golden outputs (checked
 * against SpiceDB's ReadSchema), round trip and fixed point on every
 * schema of the SpiceDB validation files, and structural equality.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <yaml.h>

#include "schema/schema.h"

#ifndef PEMBA_TESTDATA
#define PEMBA_TESTDATA "/work/shared/testdata/spicedb-testconfigs"
#endif

/* ------------------------------------------------------------ helpers */

static schema *compile_ok(const char *text, const char *label)
{
	schema *s = NULL;
	pemba_error err;
	int rc = schema_compile(text, strlen(text), &s, &err);
	if (rc != 0)
		fail_msg("%s: unexpected error %d at %d:%d: %s", label, rc,
		         err.line, err.column, err.message);
	return s;
}

static char *print_text(const schema *s)
{
	strbuf sb;
	strbuf_init(&sb);
	schema_print(s, &sb);
	char *text = strbuf_detach(&sb, NULL);
	strbuf_free(&sb); /* detach leaves a fresh empty buffer behind */
	return text;
}

/* Checks print(compile(text)) == want, then round trip and fixed point. */
static void check_canonical(const char *label, const char *text,
                            const char *want)
{
	schema *s = compile_ok(text, label);
	char *printed = print_text(s);
	if (want && strcmp(printed, want) != 0)
		fail_msg(
		    "%s: canonical text differs\n--- want:\n%s\n--- got:\n%s",
		    label, want, printed);
	schema *again = compile_ok(printed, label);
	if (!schema_equal(s, again))
		fail_msg("%s: reparsed schema differs:\n%s", label, printed);
	char *twice = print_text(again);
	if (strcmp(printed, twice) != 0)
		fail_msg("%s: printing is not a fixed point\n--- first:\n%s\n"
		         "--- second:\n%s",
		         label, printed, twice);
	free(twice);
	free(printed);
	schema_free(again);
	schema_free(s);
}

/* ----------------------------------------------------------- goldens */

static void test_definitions_and_caveats_print_sorted_with_tabs(void **state)
{
	(void)state;
	check_canonical("sorted",
	                "definition user {}\n"
	                "definition doc { relation viewer: user; "
	                "permission view = viewer; }\n"
	                "caveat bbb(z int, a list<int>) { z == 1 && a == [] }\n"
	                "caveat aaa(x int) {\n   x == 1\n}\n",
	                "caveat aaa(x int) {\n\tx == 1\n}\n\n"
	                "caveat bbb(a list<int>, z int) {\n"
	                "\tz == 1 && a == []\n}\n\n"
	                "definition doc {\n\trelation viewer: user\n"
	                "\tpermission view = viewer\n}\n\n"
	                "definition user {}");
}

static void test_allowed_types_print_in_source_order(void **state)
{
	(void)state;
	check_canonical(
	    "types",
	    "use expiration\n"
	    "caveat cav(x int) { x == 1 }\n"
	    "definition user {}\n"
	    "definition org/group { relation member: user | "
	    "org/group#member; }\n"
	    "definition doc {\n"
	    "\trelation viewer: user with cav | user:* with cav | "
	    "org/group#... | user:* | org/group#member with expiration | "
	    "user with cav and expiration\n}\n",
	    "use expiration\n\n"
	    "caveat cav(x int) {\n\tx == 1\n}\n\n"
	    "definition doc {\n"
	    "\trelation viewer: user with cav | user:* with cav | org/group "
	    "| user:* | org/group#member with expiration | user with cav "
	    "and expiration\n}\n\n"
	    "definition org/group {\n"
	    "\trelation member: user | org/group#member\n}\n\n"
	    "definition user {}");
}

static void test_unused_use_expiration_is_not_printed(void **state)
{
	(void)state;
	check_canonical("unused use", "use expiration\ndefinition user {}\n",
	                "definition user {}");
}

static void test_expressions_print_with_spicedb_parentheses(void **state)
{
	(void)state;
	check_canonical(
	    "parens",
	    "definition doc {\n"
	    "\trelation rel: doc\n"
	    "\trelation parent: doc\n"
	    "\tpermission perm1 = rel + (parent->perm1 - rel) & rel\n"
	    "\tpermission perm2 = (rel + rel) + (rel + parent.any(perm1)) "
	    "- (rel - rel) - nil\n"
	    "\tpermission perm3 = rel & (rel & rel) & parent.all(rel)\n"
	    "\tpermission perm4 = rel - (rel - rel)\n"
	    "\tpermission perm5 = (rel - rel) - rel\n"
	    "\tpermission perm6 = rel + (rel & rel)\n"
	    "\tpermission perm7 = (rel + rel) & rel\n"
	    "\tpermission perm8 = rel & (rel & rel) - rel\n"
	    "\tpermission perm9 = ((rel))\n"
	    "}\n",
	    "definition doc {\n"
	    "\trelation rel: doc\n"
	    "\trelation parent: doc\n"
	    "\tpermission perm1 = (rel + (parent->perm1 - rel)) & rel\n"
	    "\tpermission perm2 = (rel + rel + rel + parent.any(perm1) - "
	    "(rel - rel)) - nil\n"
	    "\tpermission perm3 = rel & rel & rel & parent.all(rel)\n"
	    "\tpermission perm4 = rel - (rel - rel)\n"
	    "\tpermission perm5 = (rel - rel) - rel\n"
	    "\tpermission perm6 = rel + (rel & rel)\n"
	    "\tpermission perm7 = rel + rel & rel\n"
	    "\tpermission perm8 = (rel & rel & rel) - rel\n"
	    "\tpermission perm9 = rel\n"
	    "}");
}

static void test_comments_print_normalized_before_their_item(void **state)
{
	(void)state;
	check_canonical(
	    "comments",
	    "/**\n   * alpha is a thing\n   * second line\n   */\n"
	    "definition alpha {\n"
	    "\t//c1\n\t/* c2 */\n"
	    "\trelation rel: alpha // trailing comments are dropped\n"
	    "\t/** a very long doc comment that exceeds the seventy "
	    "character limit for single lines */\n"
	    "\tpermission perm = rel\n"
	    "\t// dangling\n"
	    "}\n"
	    "/** zeta doc */ definition zeta {}\n",
	    "/**\n * alpha is a thing\n * second line\n */\n"
	    "definition alpha {\n"
	    "\t// c1\n\t/* c2 */\n"
	    "\trelation rel: alpha\n"
	    "\n"
	    "\t/**\n\t * a very long doc comment that exceeds the seventy "
	    "character limit for single lines\n\t */\n"
	    "\tpermission perm = rel\n"
	    "}\n\n"
	    "/** zeta doc */\n"
	    "definition zeta {}");
}

static void test_comment_normalization_is_a_fixed_point(void **state)
{
	(void)state;
	check_canonical("stars", "/** ** starry */\ndefinition user {}",
	                "/** starry */\ndefinition user {}");
	check_canonical("short block", "/**\n * short\n */\ndefinition user {}",
	                "/** short */\ndefinition user {}");
	check_canonical("slashes", "////x\n/**/\ndefinition user {}", NULL);
}

static void test_multiline_caveat_expression_is_reindented(void **state)
{
	(void)state;
	check_canonical("caveat lines",
	                "caveat cav(x int, y string) {\n"
	                "        x == 1 &&\n"
	                "            y == \"a\"\n\n   || x == 2\n}\n",
	                "caveat cav(x int, y string) {\n"
	                "\tx == 1 && y == \"a\" || x == 2\n}");
}

static void test_caveat_types_normalize(void **state)
{
	(void)state;
	/* As SpiceDB's ReadSchema prints them: spaces dropped, and the
	 * generic arguments of a type that takes none dropped. */
	check_canonical(
	    "caveat types",
	    "caveat cav(x map< int<string> >, y list<int<bool>>) {\n"
	    " x == {} && y == []\n}",
	    "caveat cav(x map<int>, y list<int>) {\n"
	    "\tx == {} && y == []\n}");
}

static void test_definition_prefix_may_have_64_bytes(void **state)
{
	(void)state;
	/* SpiceDB's pattern for a definition's own name allows a 64-byte
	 * prefix segment; type references (and the API) allow 63. */
	static const char name[] = "a12345678901234567890123456789012345678901"
	                           "2345678901234567890123/user";
	char text[256];
	snprintf(text, sizeof(text), "definition %s {}", name);
	check_canonical("long prefix", text, text);
	assert_false(schema_valid_type_name(name, strlen(name)));
}

static void test_empty_schema_prints_nothing(void **state)
{
	(void)state;
	check_canonical("empty", "", "");
}

/* --------------------------------------------------------- equality */

static void test_equality_is_structural(void **state)
{
	(void)state;
	schema *a = compile_ok("definition user {}\ndefinition doc {\n"
	                       "\trelation viewer: user\n"
	                       "\tpermission view = viewer + nil\n}",
	                       "a");
	schema *b = compile_ok("// other layout\ndefinition doc {\n"
	                       "\trelation viewer: user\n"
	                       "\tpermission view = (viewer) + (nil)\n}\n"
	                       "definition user {}",
	                       "b");
	schema *c = compile_ok("definition user {}\ndefinition doc {\n"
	                       "\trelation viewer: user\n"
	                       "\tpermission view = nil + viewer\n}",
	                       "c");
	schema *d = compile_ok("definition user {}\ndefinition doc {\n"
	                       "\trelation viewer: user | user:*\n"
	                       "\tpermission view = viewer + nil\n}",
	                       "d");
	assert_true(schema_equal(a, b));
	assert_true(schema_equal(b, a));
	assert_false(schema_equal(a, c));
	assert_false(schema_equal(a, d));
	assert_true(schema_equal(a, a));
	schema_free(a);
	schema_free(b);
	schema_free(c);
	schema_free(d);

	a = compile_ok("caveat cav(x int, y bool) { x == 1 || y }", "a");
	b = compile_ok("caveat cav(y bool, x int) {\n  x == 1 ||   y\n}", "b");
	c = compile_ok("caveat cav(x int, y any) { x == 1 || y }", "c");
	d = compile_ok("caveat cav(x int, y bool) { x == 2 || y }", "d");
	assert_true(schema_equal(a, b));
	assert_false(schema_equal(a, c));
	assert_false(schema_equal(a, d));
	assert_false(schema_uses_expiration(a));
	assert_true(schema_uses_caveats(a));
	schema_free(a);
	schema_free(b);
	schema_free(c);
	schema_free(d);
}

/* ------------------------------------------- SpiceDB validation files */

/* Returns the value of the top-level `schema` key of a YAML file (heap
 * string) or NULL. */
static char *yaml_schema(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	yaml_parser_t parser;
	yaml_document_t doc;
	char *result = NULL;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (yaml_parser_load(&parser, &doc)) {
		yaml_node_t *root = yaml_document_get_root_node(&doc);
		if (root && root->type == YAML_MAPPING_NODE) {
			for (yaml_node_pair_t *p =
			         root->data.mapping.pairs.start;
			     p < root->data.mapping.pairs.top; p++) {
				yaml_node_t *k =
				    yaml_document_get_node(&doc, p->key);
				yaml_node_t *v =
				    yaml_document_get_node(&doc, p->value);
				if (k && v && k->type == YAML_SCALAR_NODE &&
				    v->type == YAML_SCALAR_NODE &&
				    strcmp((char *)k->data.scalar.value,
				           "schema") == 0) {
					result = strdup(
					    (char *)v->data.scalar.value);
					break;
				}
			}
		}
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return result;
}

static void test_every_validation_file_schema_round_trips(void **state)
{
	(void)state;
	const char *dir = getenv("PEMBA_TESTDATA");
	if (!dir || !*dir)
		dir = PEMBA_TESTDATA;
	DIR *d = opendir(dir);
	if (!d)
		fail_msg("cannot open test data directory %s", dir);
	int files = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n < 5 || strcmp(e->d_name + n - 5, ".yaml") != 0)
			continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		char *text = yaml_schema(path);
		if (!text)
			fail_msg("%s: no top-level `schema` key", path);
		check_canonical(e->d_name, text, NULL);
		free(text);
		files++;
	}
	closedir(d);
	assert_true(files >= 40);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_definitions_and_caveats_print_sorted_with_tabs),
	    cmocka_unit_test(test_allowed_types_print_in_source_order),
	    cmocka_unit_test(test_unused_use_expiration_is_not_printed),
	    cmocka_unit_test(test_expressions_print_with_spicedb_parentheses),
	    cmocka_unit_test(test_comments_print_normalized_before_their_item),
	    cmocka_unit_test(test_caveat_types_normalize),
	    cmocka_unit_test(test_definition_prefix_may_have_64_bytes),
	    cmocka_unit_test(test_multiline_caveat_expression_is_reindented),
	    cmocka_unit_test(test_empty_schema_prints_nothing),
	    cmocka_unit_test(test_comment_normalization_is_a_fixed_point),
	    cmocka_unit_test(test_equality_is_structural),
	    cmocka_unit_test(test_every_validation_file_schema_round_trips),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
