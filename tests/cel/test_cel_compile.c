/*
 * test_cel_compile.c -- compiling caveat expressions: type errors worded
 * and positioned as SpiceDB's CEL reports them, parameter use, canonical
 * printing (as SpiceDB's ReadSchema re-prints expressions), context
 * conversion rules and their messages, and every caveat of SpiceDB's
 * validation files.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <yaml.h>

#include "cel/cel.h"
#include "schema/schema.h"

static cel_program *compile(const char *expr, const cel_param *params, size_t n)
{
	cel_program *p = NULL;
	pemba_error err;
	if (cel_compile(expr, params, n, &p, &err) != 0) {
		print_error("%s: %s\n", expr, err.message);
		fail();
	}
	return p;
}

static void expect_type_error(const char *expr, const cel_param *params,
                              size_t n, int line, int column,
                              const char *message)
{
	cel_program *p = NULL;
	pemba_error err;
	int rc = cel_compile(expr, params, n, &p, &err);
	if (rc != PEMBA_EINVAL || err.line != line || err.column != column ||
	    strcmp(err.message, message) != 0) {
		print_error("%s: rc %d at %d:%d: %s\nwant %d:%d: %s\n", expr,
		            rc, err.line, err.column, err.message, line, column,
		            message);
		fail();
	}
}

static void test_type_errors_use_cel_wording(void **state)
{
	(void)state;
	const cel_param a_int[] = {{"a", "int"}};
	expect_type_error("a == \"x\"", a_int, 1, 1, 3,
	                  "found no matching overload for '_==_' applied to "
	                  "'(int, string)'");
	expect_type_error("b == 1", a_int, 1, 1, 1,
	                  "undeclared reference to 'b' (in container '')");
	expect_type_error("a + 1", a_int, 1, 1, 1,
	                  "caveat expression must result in a boolean value: "
	                  "found `int`");
	const cel_param a_str[] = {{"a", "string"}};
	expect_type_error("a.lowerAscii() == \"x\"", a_str, 1, 1, 13,
	                  "undeclared reference to 'lowerAscii' (in container "
	                  "'')");
	expect_type_error("a.contains(1)", a_str, 1, 1, 11,
	                  "found no matching overload for 'contains' applied "
	                  "to 'string.(int)'");
	const cel_param a_uint[] = {{"a", "uint"}};
	/* SpiceDB declares uint parameters as CEL ints. */
	expect_type_error("a == 1u", a_uint, 1, 1, 3,
	                  "found no matching overload for '_==_' applied to "
	                  "'(int, uint)'");
	cel_program_free(compile("a == 1", a_uint, 1));
	const cel_param a_list[] = {{"a", "list<int>"}};
	expect_type_error("a.foo == 1", a_list, 1, 1, 2,
	                  "type 'list(int)' does not support field selection");
	expect_type_error("a == [1] &&\n  a == 2", a_list, 1, 2, 5,
	                  "found no matching overload for '_==_' applied to "
	                  "'(list(int), int)'");
	const cel_param ts[] = {{"t", "timestamp"}};
	expect_type_error("t + t > t", ts, 1, 1, 3,
	                  "found no matching overload for '_+_' applied to "
	                  "'(google.protobuf.Timestamp, "
	                  "google.protobuf.Timestamp)'");
	const cel_param bad[] = {{"a", "integer"}};
	cel_program *p = NULL;
	pemba_error err;
	assert_int_equal(cel_compile("a == 1", bad, 1, &p, &err), PEMBA_EINVAL);
}

static void test_uses_param(void **state)
{
	(void)state;
	const cel_param ps[] = {{"a", "list<int>"},
	                        {"b", "int"},
	                        {"c", "string"},
	                        {"d", "map<int>"}};
	cel_program *p =
	    compile("a.all(b, b > 1) && d.c == 1 && 'c' != \"b\"", ps, 4);
	assert_true(cel_program_uses_param(p, "a"));
	/* A macro variable named like a parameter counts, as in SpiceDB. */
	assert_true(cel_program_uses_param(p, "b"));
	/* Field names and strings do not. */
	assert_false(cel_program_uses_param(p, "c"));
	assert_true(cel_program_uses_param(p, "d"));
	assert_false(cel_program_uses_param(p, "nope"));
	cel_program_free(p);
}

/* -------------------------------------------------------------- printing */

static void expect_print(const char *expr, const char *want)
{
	const cel_param ps[] = {
	    {"a", "int"},        {"b", "bool"},      {"s", "string"},
	    {"l", "list<int>"},  {"m", "map<int>"},  {"y", "bytes"},
	    {"d", "double"},     {"t", "timestamp"}, {"du", "duration"},
	    {"ip", "ipaddress"}, {"x", "any"}};
	cel_program *p = compile(expr, ps, sizeof(ps) / sizeof(ps[0]));
	strbuf sb;
	strbuf_init(&sb);
	cel_program_print(p, &sb);
	if (strcmp(sb.data, want) != 0) {
		print_error("%s\n got: %s\nwant: %s\n", expr, sb.data, want);
		fail();
	}
	/* Printing is a fixed point. */
	cel_program *again = compile(sb.data, ps, sizeof(ps) / sizeof(ps[0]));
	strbuf sb2;
	strbuf_init(&sb2);
	cel_program_print(again, &sb2);
	assert_string_equal(sb.data, sb2.data);
	strbuf_free(&sb);
	strbuf_free(&sb2);
	cel_program_free(p);
	cel_program_free(again);
}

static void test_printing_matches_spicedb(void **state)
{
	(void)state;
	/* Each pair observed from SpiceDB's ReadSchema. */
	expect_print("a   ==  1 &&\n s.size()>0", "a == 1 && s.size() > 0");
	expect_print("(a + 1) * 2 == 6 && a - (1 - 2) == 3 && -a == -1 && "
	             "!(a == 2) && (a == 1 ? true : false)",
	             "(a + 1) * 2 == 6 && a - (1 - 2) == 3 && -a == -1 && "
	             "!(a == 2) && ((a == 1) ? true : false)");
	expect_print("y == b'abc' || y == b\"\\xff\"",
	             "y == b\"\\141\\142\\143\" || y == b\"\\377\"");
	expect_print("d == 1.0 || d == 1e3 || d == 0.5 || d == 1.5e-7 || d == "
	             "100000000000000000000.0",
	             "d == 1.0 || d == 1000.0 || d == 0.5 || d == 1.5e-07 || "
	             "d == 1e+20"); /* SpiceDB: 1e+20.0, which does not parse */
	expect_print("a in [1, 2, 3] && {\"a\": 1, 'b': 2}[\"a\"] == a",
	             "a in [1, 2, 3] && {\"a\": 1, \"b\": 2}[\"a\"] == a");
	expect_print("a == 1 || a == 2 && a == 3",
	             "a == 1 || a == 2 && a == 3");
	expect_print("(a == 1 || a == 2) && a == 3",
	             "(a == 1 || a == 2) && a == 3");
	expect_print("a == 1 && (a == 2 && a == 3)",
	             "a == 1 && a == 2 && a == 3");
	expect_print("!!b", "b");
	expect_print("a - (-1) == 2", "a - -1 == 2");
	expect_print("(a == 1) == true", "a == 1 == true");
	expect_print("a == 1 ? a > 0 : a < 0", "(a == 1) ? (a > 0) : (a < 0)");
	expect_print("(a == 1 ? a : 2) == 1", "((a == 1) ? a : 2) == 1");
	expect_print("[1,2,3].map(x, x*2).size() == a",
	             "[1, 2, 3].map(x, x * 2).size() == a");
	expect_print("has(m.foo) && m.foo == 1 && 'k' in m",
	             "has(m.foo) && m.foo == 1 && \"k\" in m");
	expect_print("l.filter(x, x > 1).size() == 1 && l.exists_one(x, x == "
	             "1) && l.exists(x, x == 2) && l.all(x, x < 10)",
	             "l.filter(x, x > 1).size() == 1 && l.exists_one(x, x == "
	             "1) && l.exists(x, x == 2) &&\nl.all(x, x < 10)");
	expect_print("t + du > timestamp(\"2020-01-01T00:00:00Z\") && "
	             "ip.in_cidr('10.0.0.0/8')",
	             "t + du > timestamp(\"2020-01-01T00:00:00Z\") && "
	             "ip.in_cidr(\"10.0.0.0/8\")");
	expect_print("int(\"5\") == a && uint(a) == 5u && double(a) == 5.0 && "
	             "string(a) == \"5\"",
	             "int(\"5\") == a && uint(a) == 5u && double(a) == 5.0 && "
	             "string(a) == \"5\"");
	expect_print("s == 'it\\'s \"q\"\\n\\u00e9'",
	             "s == \"it's \\\"q\\\"\\n\u00e9\"");
	expect_print("(s + \"x\").size() == 1 || true",
	             "(s + \"x\").size() == 1 || true");
	/* A NUL inside a literal prints escaped, whatever escape wrote it,
	 * so the canonical schema text never holds a NUL byte. */
	expect_print("s == 'a\\u0000b' || s == \"\\000\" || s == \"\\x00z\"",
	             "s == \"a\\x00b\" || s == \"\\x00\" || s == \"\\x00z\"");
	expect_print("b'\\x00a' == bytes(s)", "b\"\\000\\141\" == bytes(s)");
}

/* -------------------------------------------------------- contexts */

static void expect_context(const char *type, const char *context, int rc,
                           const char *message)
{
	const cel_param ps[] = {{"p", type}};
	char expr[64];
	snprintf(expr, sizeof(expr), "p == p");
	cel_program *prog = compile(expr, ps, 1);
	pemba_error err;
	int got = cel_validate_context(prog, context, &err);
	if (got != rc || (rc && strcmp(err.message, message) != 0)) {
		print_error("%s with %s: %d %s\nwant %d %s\n", type, context,
		            got, got ? err.message : "", rc, message);
		fail();
	}
	cel_program_free(prog);
}

static void test_context_conversion(void **state)
{
	(void)state;
	expect_context("int", "{\"p\": 1}", 0, "");
	expect_context("int", "{\"p\": 1.0}", 0, "");
	expect_context("int", "{\"p\": \"42\"}", 0, "");
	expect_context("int", "{\"p\": 1.5}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: a int value "
	               "is required, but found numeric value `1.5`");
	expect_context("int", "{\"p\": \"abc\"}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: a int64 "
	               "value is required, but found invalid string value "
	               "`abc`");
	expect_context("int", "{\"p\": true}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: a int64 "
	               "value is required, but found bool `true`");
	expect_context("uint", "{\"p\": -1}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: a uint value "
	               "is required, but found int64 value `-1`");
	expect_context("bool", "{\"p\": 1}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: a bool value "
	               "is required, but found float64 `1`");
	expect_context("string", "{\"p\": null}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: a string "
	               "value is required, but found <nil> `<nil>`");
	expect_context("bytes", "{\"p\": \"YWJj\"}", 0, "");
	expect_context("bytes", "{\"p\": \"YWJ\"}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: bytes "
	               "requires a base64 encoded string: illegal base64 data "
	               "at input byte 0");
	expect_context("timestamp", "{\"p\": \"2020-01-01T00:00:00+01:00\"}", 0,
	               "");
	expect_context("timestamp", "{\"p\": \"2020-13-01T00:00:00Z\"}",
	               PEMBA_EINVAL,
	               "could not convert context parameter `p`: could not "
	               "parse RFC 3339 formatted timestamp string "
	               "`2020-13-01T00:00:00Z`: timestamp field out of range");
	expect_context("duration", "{\"p\": \"1h2m3.5s\"}", 0, "");
	expect_context("duration", "{\"p\": \"10\"}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: could not "
	               "parse duration string `10`: missing unit in duration");
	expect_context("ipaddress", "{\"p\": \"::1\"}", 0, "");
	expect_context("ipaddress", "{\"p\": \"1.2.3.04\"}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: could not "
	               "parse ip address string `1.2.3.04`: invalid IP "
	               "address");
	expect_context("list<int>", "{\"p\": [1, 2.5]}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: found an "
	               "invalid value for item at index 1: a int value is "
	               "required, but found numeric value `2.5`");
	expect_context("map<bool>", "{\"p\": {\"k\": 1}}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: found an "
	               "invalid value for key `k`: a bool value is required, "
	               "but found float64 `1`");
	expect_context("list<int>", "{\"p\": {}}", PEMBA_EINVAL,
	               "could not convert context parameter `p`: list "
	               "requires a list, found: map[string]interface {}");
	/* Keys that are not parameters are skipped. */
	expect_context("int", "{\"q\": \"anything\"}", 0, "");
	expect_context("any", "{\"p\": [1, {\"a\": null}]}", 0, "");
	expect_context("int", "[]", PEMBA_EINVAL,
	               "caveat context must be a JSON object");
}

/* --------------------------------------- SpiceDB's validation files */

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
		if (root && root->type == YAML_MAPPING_NODE)
			for (yaml_node_pair_t *pair =
			         root->data.mapping.pairs.start;
			     pair < root->data.mapping.pairs.top; pair++) {
				yaml_node_t *k =
				    yaml_document_get_node(&doc, pair->key);
				yaml_node_t *v =
				    yaml_document_get_node(&doc, pair->value);
				if (k->type == YAML_SCALAR_NODE &&
				    strcmp((char *)k->data.scalar.value,
				           "schema") == 0 &&
				    v->type == YAML_SCALAR_NODE)
					result = strdup(
					    (char *)v->data.scalar.value);
			}
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return result;
}

static void test_every_testconfig_caveat_compiles(void **state)
{
	(void)state;
	DIR *dir = opendir(PEMBA_TESTDATA);
	assert_non_null(dir);
	struct dirent *e;
	size_t caveats = 0;
	while ((e = readdir(dir))) {
		size_t n = strlen(e->d_name);
		if (n < 5 || strcmp(e->d_name + n - 5, ".yaml") != 0)
			continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", PEMBA_TESTDATA,
		         e->d_name);
		char *text = yaml_schema(path);
		if (!text)
			continue;
		schema *s = NULL;
		pemba_error err;
		if (schema_compile(text, strlen(text), &s, &err) == 0) {
			for (size_t i = 0; i < s->ncaveats; i++) {
				assert_non_null(s->caveats[i]->program);
				caveats++;
			}
			schema_free(s);
		} else if (strstr(text, "caveat ")) {
			/* Files meant to fail must not fail in CEL. */
			if (strstr(err.message, "invalid expression")) {
				print_error("%s: %s\n", e->d_name, err.message);
				fail();
			}
		}
		free(text);
	}
	closedir(dir);
	assert_true(caveats > 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_type_errors_use_cel_wording),
	    cmocka_unit_test(test_uses_param),
	    cmocka_unit_test(test_printing_matches_spicedb),
	    cmocka_unit_test(test_context_conversion),
	    cmocka_unit_test(test_every_testconfig_caveat_compiles),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
