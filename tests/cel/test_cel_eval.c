/*
 * test_cel_eval.c -- evaluation of caveat expressions: every construct,
 * partial evaluation and its missing-parameter sets, evaluation errors,
 * and hostile inputs that must end in a clear error, never a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cel/cel.h"

/* The fixed parameter set every test evaluates against. */
static const cel_param params[] = {
    {"i", "int"},           {"j", "int"},       {"u", "uint"},
    {"d", "double"},        {"b", "bool"},      {"s", "string"},
    {"t", "string"},        {"by", "bytes"},    {"l", "list<int>"},
    {"ls", "list<string>"}, {"m", "map<int>"},  {"mm", "map<list<string>>"},
    {"ts", "timestamp"},    {"du", "duration"}, {"ip", "ipaddress"},
    {"x", "any"},
};
#define NPARAMS (sizeof(params) / sizeof(params[0]))

typedef struct outcome {
	int rc;
	cel_outcome value;
	char missing[256]; /* names joined by "," */
	char message[1024];
} outcome;

static outcome run(const char *expr, const char *rel, const char *req,
                   uint64_t limit)
{
	outcome o = {0};
	cel_program *p;
	pemba_error err;
	o.rc = cel_compile(expr, params, NPARAMS, &p, &err);
	if (o.rc) {
		snprintf(o.message, sizeof(o.message), "compile: %s",
		         err.message);
		return o;
	}
	arena *a = arena_create(0);
	cel_result r;
	o.rc = cel_evaluate(p, rel, req, limit, a, &r, &err);
	if (o.rc == 0) {
		o.value = r.outcome;
		for (size_t k = 0; k < r.nmissing; k++) {
			if (k)
				strcat(o.missing, ",");
			strcat(o.missing, r.missing[k]);
		}
	} else {
		snprintf(o.message, sizeof(o.message), "%s", err.message);
	}
	arena_destroy(a);
	cel_program_free(p);
	return o;
}

static void expect(const char *expr, const char *ctx, cel_outcome want)
{
	outcome o = run(expr, ctx, NULL, CEL_DEFAULT_COST_LIMIT);
	if (o.rc != 0 || o.value != want) {
		print_error("%s with %s: rc %d value %d (%s)\n", expr,
		            ctx ? ctx : "-", o.rc, o.value, o.message);
		fail();
	}
}

static void expect_partial(const char *expr, const char *ctx,
                           const char *missing)
{
	outcome o = run(expr, ctx, NULL, CEL_DEFAULT_COST_LIMIT);
	if (o.rc != 0 || o.value != CEL_PARTIAL ||
	    strcmp(o.missing, missing) != 0) {
		print_error("%s with %s: rc %d value %d missing [%s] (%s), "
		            "want [%s]\n",
		            expr, ctx ? ctx : "-", o.rc, o.value, o.missing,
		            o.message, missing);
		fail();
	}
}

static void expect_error(const char *expr, const char *ctx, int rc,
                         const char *fragment)
{
	outcome o = run(expr, ctx, NULL, CEL_DEFAULT_COST_LIMIT);
	if (o.rc != rc || !strstr(o.message, fragment)) {
		print_error("%s with %s: rc %d (%s), want %d with \"%s\"\n",
		            expr, ctx ? ctx : "-", o.rc, o.message, rc,
		            fragment);
		fail();
	}
}

/* --------------------------------------------------------- constructs */

static void test_arithmetic_and_comparisons(void **state)
{
	(void)state;
	const char *c = "{\"i\": 7, \"j\": -2, \"u\": 3, \"d\": 1.5}";
	expect("i + j == 5 && i - j == 9 && i * j == -14", c, CEL_TRUE);
	expect("i / j == -3 && i % j == 1 && -i == -7", c, CEL_TRUE);
	expect("d * 2.0 == 3.0 && d / 0.0 > 1e308", c, CEL_TRUE);
	expect("u + 1 == 4", c, CEL_TRUE); /* uint params are CEL ints */
	expect("1u + 2u == 3u && 7u / 2u == 3u && 7u % 2u == 1u", c, CEL_TRUE);
	expect("i > j && i >= 7 && j < 0 && j <= -2 && i != j", c, CEL_TRUE);
	expect("'abc' < 'abd' && b'a' < b'b' && false < true", c, CEL_TRUE);
	expect("dyn(1) == 1.0 && dyn(1u) == 1 && dyn(2) > 1.5", c, CEL_TRUE);
	expect("(i == 7 ? 'a' : 'b') == 'a'", c, CEL_TRUE);
	expect("!(i == 7)", c, CEL_FALSE);
	expect("0x10 == 16 && -9223372036854775808 < 0", c, CEL_TRUE);
}

static void test_strings_lists_maps(void **state)
{
	(void)state;
	const char *c = "{\"s\": \"h\\u00e9llo\", \"l\": [1, 2, 3], "
	                "\"m\": {\"a\": 1, \"b\": 2}, "
	                "\"mm\": {\"k\": [\"x\", \"y\"]}, \"ls\": []}";
	expect("s.size() == 5 && size(s) == 5 && s + '!' == 'h\\u00e9llo!'", c,
	       CEL_TRUE);
	expect("s.contains('ll') && s.startsWith('h') && s.endsWith('lo')", c,
	       CEL_TRUE);
	expect("'hello'.matches('^h.llo$') && matches(s, 'l+')", c, CEL_TRUE);
	/* POSIX matching is bytewise: `.` is one byte, not one code point
	 * as in RE2 (a documented difference). */
	expect("s.matches('^h.llo$')", c, CEL_FALSE);
	expect("'a' + 'b' == \"ab\" && r'\\n' == '\\\\n' && '''x''' == 'x'", c,
	       CEL_TRUE);
	expect("l + [4] == [1, 2, 3, 4] && l[0] == 1 && 2 in l && !(9 in l)", c,
	       CEL_TRUE);
	expect("size(l) == 3 && ls.size() == 0 && [] == ls", c, CEL_TRUE);
	expect("'a' in m && m.a == 1 && m['b'] == 2 && has(m.a) && "
	       "!has(m.z)",
	       c, CEL_TRUE);
	expect("mm.k[1] == 'y' && {'x': 1, 'y': [2]}.y[0] == 2", c, CEL_TRUE);
	expect("{1: 'a', 2u: 'b', true: 'c'}[1] == 'a'", c, CEL_TRUE);
	expect("b'abc'.size() == 3 && bytes('é').size() == 2", c, CEL_TRUE);
}

static void test_macros(void **state)
{
	(void)state;
	const char *c = "{\"l\": [1, 2, 3], \"m\": {\"a\": 1, \"b\": 2}}";
	expect("l.all(v, v > 0) && l.exists(v, v == 2) && "
	       "l.exists_one(v, v > 2)",
	       c, CEL_TRUE);
	expect("l.exists_one(v, v > 1)", c, CEL_FALSE);
	expect("l.map(v, v * 2) == [2, 4, 6] && l.filter(v, v % 2 == 1) == "
	       "[1, 3]",
	       c, CEL_TRUE);
	expect("l.map(v, v > 1, v * 10) == [20, 30]", c, CEL_TRUE);
	expect("m.all(k, k in ['a', 'b']) && m.map(k, m[k]).size() == 2", c,
	       CEL_TRUE);
	expect("[[1, 2], [3]].map(v, v.map(w, w + 1)) == [[2, 3], [4]]", c,
	       CEL_TRUE);
	/* A macro variable shadows a parameter of the same name. */
	expect("l.all(i, i < 4)", c, CEL_TRUE);
}

static void test_conversions_and_time(void **state)
{
	(void)state;
	const char *c = "{\"ts\": \"2021-03-04T05:06:07.5Z\", "
	                "\"du\": \"1h30m\", \"ip\": \"10.1.2.3\"}";
	expect("int('12') == 12 && uint(3) == 3u && double(1) == 1.0 && "
	       "string(1.5) == '1.5' && string(3u) == '3'",
	       c, CEL_TRUE);
	expect("int(2.9) == 2 && int(-2.9) == -2 && bool('true')", c, CEL_TRUE);
	expect("ts > timestamp('2021-01-01T00:00:00Z') && "
	       "ts - duration('1h') < ts",
	       c, CEL_TRUE);
	expect("ts.getFullYear() == 2021 && ts.getMonth() == 2 && "
	       "ts.getDate() == 4 && ts.getDayOfMonth() == 3 && "
	       "ts.getHours() == 5 && ts.getMilliseconds() == 500",
	       c, CEL_TRUE);
	expect("ts.getDayOfWeek() == 4 && ts.getDayOfYear() == 62 && "
	       "ts.getHours('+02:00') == 7",
	       c, CEL_TRUE);
	expect("du.getMinutes() == 90 && du + du == duration('3h') && "
	       "string(du) == '5400s'",
	       c, CEL_TRUE);
	expect("timestamp('2021-03-04T05:06:07Z') - "
	       "timestamp('2021-03-04T04:06:07Z') == duration('1h')",
	       c, CEL_TRUE);
	expect("string(timestamp(0)) == '1970-01-01T00:00:00Z'", c, CEL_TRUE);
	expect("ip.in_cidr('10.0.0.0/8') && !ip.in_cidr('192.168.0.0/16')", c,
	       CEL_TRUE);
	expect("ip.in_cidr('2001:db8::/32')", "{\"ip\": \"2001:db8::1\"}",
	       CEL_TRUE);
	expect("ip.in_cidr('10.0.0.0/8')", "{\"ip\": \"2001:db8::1\"}",
	       CEL_FALSE);
}

/* ------------------------------------------------- partial evaluation */

static void test_partial_evaluation(void **state)
{
	(void)state;
	/* The known side decides && and ||. */
	expect("i == 1 || b", "{\"i\": 1}", CEL_TRUE);
	expect("b || i == 1", "{\"i\": 1}", CEL_TRUE);
	expect("i == 1 && b", "{\"i\": 2}", CEL_FALSE);
	expect("b && i == 1", "{\"i\": 2}", CEL_FALSE);
	expect_partial("i == 1 && b", "{\"i\": 1}", "b");
	/* Two unknowns merge, sorted and without duplicates. */
	expect_partial("j == 1 && i == 2 && j == 3", NULL, "i,j");
	expect_partial("s == 'a' || b", NULL, "b,s");
	/* Strict operators keep the first unknown, left to right. */
	expect_partial("i + j == 3", NULL, "i");
	expect_partial("j + i == 3", NULL, "j");
	expect_partial("size(ls) + i == 3", "{\"i\": 1}", "ls");
	/* An unknown beats an error in && and ||; false beats both. */
	expect_partial("1 / 0 == 1 || b", NULL, "b");
	expect("1 / 0 == 1 && false", NULL, CEL_FALSE);
	expect("b && 1 / 0 == 1 && false", NULL, CEL_FALSE);
	/* The conditional passes an undecided condition through. */
	expect_partial("b ? i == 1 : j == 1", NULL, "b");
	expect_partial("true ? i == 1 : j == 1", NULL, "i");
	/* Macros over unknown ranges or with unknown predicates. */
	expect_partial("l.all(v, v > 0)", NULL, "l");
	expect_partial("[1, 2].exists(v, v == i)", NULL, "i");
	expect("[1, 2].exists(v, v == 1 || v == i)", NULL, CEL_TRUE);
	/* The relationship's value wins over the request's. */
	outcome o =
	    run("i == 1", "{\"i\": 1}", "{\"i\": 2}", CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.value, CEL_TRUE);
	o = run("i == 1 && j == 2", "{\"i\": 1}", "{\"j\": 2, \"zz\": 1}",
	        CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.value, CEL_TRUE);
	o = run("i == 1 && j == 2", "", "", CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.value, CEL_PARTIAL);
	assert_string_equal(o.missing, "i,j");
}

/* --------------------------------------------------- evaluation errors */

static void test_evaluation_errors(void **state)
{
	(void)state;
	expect_error("i / 0 == 1", "{\"i\": 1}", PEMBA_EPRECONDITION,
	             "division by zero");
	expect_error("i % 0 == 1", "{\"i\": 1}", PEMBA_EPRECONDITION,
	             "modulus by zero");
	expect_error("i * 9223372036854775807 > 0", "{\"i\": 2}",
	             PEMBA_EPRECONDITION, "integer overflow");
	expect_error("-i > 0", "{\"i\": -9223372036854775808}",
	             PEMBA_EPRECONDITION, "integer overflow");
	expect_error("1u - 2u == 0u", NULL, PEMBA_EPRECONDITION,
	             "unsigned integer overflow");
	expect_error("l[3] == 1", "{\"l\": [1]}", PEMBA_EPRECONDITION,
	             "out of range");
	expect_error("m.zz == 1", "{\"m\": {}}", PEMBA_EPRECONDITION,
	             "no such key: zz");
	expect_error("m['zz'] == 1", "{\"m\": {}}", PEMBA_EPRECONDITION,
	             "no such key: zz");
	expect_error("ip.in_cidr('10.0.0.0/33')", "{\"ip\": \"10.0.0.1\"}",
	             PEMBA_EPRECONDITION, "invalid CIDR string");
	expect_error("s.matches('(')", "{\"s\": \"a\"}", PEMBA_EPRECONDITION,
	             "regexp");
	expect_error("s.matches('(a)\\\\1')", "{\"s\": \"aa\"}",
	             PEMBA_EPRECONDITION, "back-references");
	expect_error("int('x') == 1", NULL, PEMBA_EPRECONDITION, "string");
	expect_error("timestamp('yesterday') < ts", NULL, PEMBA_EPRECONDITION,
	             "timestamp");
	expect_error("{'a': 1, 'a': 2}.size() == 2", NULL, PEMBA_EPRECONDITION,
	             "repeated key");
	expect_error("ts + duration('2562047h') > ts",
	             "{\"ts\": \"9999-01-01T00:00:00Z\"}", PEMBA_EPRECONDITION,
	             "timestamp overflow");
	/* Type confusion through `any` is an error, not a crash. */
	expect_error("x + 1 == 2", "{\"x\": 1}", PEMBA_EPRECONDITION,
	             "no such overload");
	expect_error("x.foo == 1", "{\"x\": [1]}", PEMBA_EPRECONDITION,
	             "non-map");
	expect_error("x[0] == 1", "{\"x\": \"abc\"}", PEMBA_EPRECONDITION,
	             "no such overload");
	expect_error("x.all(v, v)", "{\"x\": [1]}", PEMBA_EPRECONDITION,
	             "no such overload");
	expect_error("x && true", "{\"x\": \"yes\"}", PEMBA_EPRECONDITION,
	             "no such overload");
	/* `any` numbers are doubles, as in SpiceDB's Struct contexts. */
	expect("x == 1 && x == 1.0 && x < 2u", "{\"x\": 1}", CEL_TRUE);
}

/* ----------------------------------------------------- hostile inputs */

static char *repeat(const char *prefix, const char *unit, size_t n,
                    const char *suffix)
{
	size_t len = strlen(prefix) + strlen(unit) * n + strlen(suffix) + 1;
	char *s = malloc(len);
	strcpy(s, prefix);
	size_t at = strlen(prefix), ul = strlen(unit);
	for (size_t i = 0; i < n; i++, at += ul)
		memcpy(s + at, unit, ul);
	strcpy(s + at, suffix);
	return s;
}

static void expect_compile_error(const char *expr, const char *fragment)
{
	cel_program *p = NULL;
	pemba_error err;
	int rc = cel_compile(expr, params, NPARAMS, &p, &err);
	if (rc != PEMBA_EINVAL || !strstr(err.message, fragment) ||
	    err.line < 1 || err.column < 1) {
		print_error("%.60s: rc %d (%s), want \"%s\"\n", expr, rc,
		            err.message, fragment);
		fail();
	}
	assert_null(p);
}

static void test_hostile_expressions(void **state)
{
	(void)state;
	char *s = repeat("", "(", 10000, "true");
	expect_compile_error(s, "maximum depth");
	free(s);
	s = repeat("", "!", 10001, "b");
	expect(s, "{\"b\": true}", CEL_FALSE); /* even runs disappear */
	free(s);
	s = repeat("i", " + i", 5000, " == 0");
	expect_compile_error(s, "maximum depth");
	free(s);
	s = repeat("", "[", 100, "]");
	expect_compile_error(s, "maximum depth");
	free(s);
	/* A long but flat && chain is balanced, so it is fine. */
	s = repeat("true", " && true", 3000, "");
	expect(s, NULL, CEL_TRUE);
	free(s);
	/* A huge list literal costs its size. */
	s = repeat("[0", ", 1", 30000, "].size() == 30001");
	expect(s, NULL, CEL_TRUE);
	free(s);
	s = repeat("", "1", 200000, " == 1");
	expect_compile_error(s, "maximum allowed size");
	free(s);
	expect_compile_error("s == \"\xff\"", "UTF-8");
	expect_compile_error("s == '\\ud800'", "code point");
	expect_compile_error("i == 99999999999999999999", "int literal");
	expect_compile_error("i ==", "EOF");
	expect_compile_error("i == 1 )", "extraneous");
	expect_compile_error("i = 1", "token recognition");
	expect_compile_error("'abc", "unterminated");
}

static void test_cost_limit_stops_blowups(void **state)
{
	(void)state;
	/* Nested maps multiply: 20^5 elements. */
	const char *blowup =
	    "l.map(a, l.map(b, l.map(c, l.map(d, l.map(e, e))))).size() > 0";
	char ctx[256] = "{\"l\": [";
	for (int k = 0; k < 20; k++)
		strcat(ctx, k ? ",1" : "1");
	strcat(ctx, "]}");
	outcome o = run(blowup, ctx, NULL, CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_ELIMIT);
	/* String doubling inside a macro. */
	o = run("l.map(a, s + s + s + s + s + s + s + s).size() > 0",
	        "{\"l\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], "
	        "\"s\": \"" /* filled below */ "\"}",
	        NULL, 100);
	assert_int_equal(o.rc, PEMBA_ELIMIT);
	/* A small limit applies to anything. */
	o = run("i == 1", "{\"i\": 1}", NULL, 1);
	assert_int_equal(o.rc, PEMBA_ELIMIT);
	/* Equality of large values is charged per element. */
	o = run("l.map(a, l) == l.map(a, l)", ctx, NULL, 200);
	assert_int_equal(o.rc, PEMBA_ELIMIT);
	o = run("l.map(a, l) == l.map(a, l)", ctx, NULL,
	        CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.value, CEL_TRUE);
}

static void test_hostile_contexts(void **state)
{
	(void)state;
	/* A context larger than the limit. */
	char *big = repeat("{\"l\": [0", ",1", 1000000, "]}");
	outcome o = run("l.size() > 0", big, NULL, CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	assert_non_null(strstr(o.message, "larger than"));
	free(big);
	/* Deep nesting. */
	char *deep = repeat("{\"x\": ", "[", 100, "");
	char *deeper = repeat(deep, "]", 100, "}");
	o = run("x == 1", deeper, NULL, CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	assert_non_null(strstr(o.message, "deeper"));
	free(deep);
	free(deeper);
	o = run("i == 1", "[1]", NULL, CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	o = run("i == 1", "{\"i\": 1", NULL, CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	o = run("i == 1", "{\"i\": 1, \"i\": 2}", NULL, CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	/* Invalid UTF-8 in a context is refused by the JSON reader. */
	o = run("s == 'a'", "{\"s\": \"\xff\"}", NULL, CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	/* A big string within the limit works, and costs its bytes. */
	char *str = repeat("{\"s\": \"", "a", 60000, "\"}");
	o = run("s.size() == 60000 && s.contains('b') == false", str, NULL,
	        CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.value, CEL_TRUE);
	free(str);
}

/* ------------------------------------------------- strings are lengths */

/* Strings and bytes carry their length: a NUL inside one (from the
 * escapes \x00, \u0000, \000, or string(bytes)) is a character like any
 * other, as in cel-go, never the end of the value. */
static void test_strings_with_nul_keep_their_length(void **state)
{
	(void)state;
	/* Equality and ordering at full length. */
	expect("\"abc\\x00zzz\" == \"abc\"", NULL, CEL_FALSE);
	expect("\"abc\\x00zzz\" != \"abc\"", NULL, CEL_TRUE);
	expect("\"abc\\x00\" == \"abc\"", NULL, CEL_FALSE);
	expect("\"abc\" < \"abc\\x00\" && \"a\\x00b\" < \"a\\x00c\"", NULL,
	       CEL_TRUE);
	expect("\"\\x00\" == \"\\u0000\" && \"\\u0000\" == \"\\000\" && "
	       "\"\\000\" == \"\\U00000000\"",
	       NULL, CEL_TRUE);
	expect("s == \"abc\\x00zzz\"", "{\"s\": \"abc\"}", CEL_FALSE);
	/* Sizes count past the NUL (code points for strings, bytes). */
	expect("size(\"a\\x00b\") == 3 && \"\\x00\".size() == 1", NULL,
	       CEL_TRUE);
	expect("size(b\"a\\x00b\") == 3 && size(b\"\\000\\000\") == 2", NULL,
	       CEL_TRUE);
	/* Concatenation keeps both halves. */
	expect("\"a\\x00\" + \"b\" == \"a\\x00b\" && size(\"a\\x00\" + "
	       "\"b\") == 3",
	       NULL, CEL_TRUE);
	expect("b\"a\\x00\" + b\"b\" == b\"a\\000b\"", NULL, CEL_TRUE);
	/* contains / startsWith / endsWith look past the NUL. */
	expect("\"abc\\x00zzz\".contains(\"zzz\") && "
	       "\"abc\\x00zzz\".endsWith(\"\\x00zzz\") && "
	       "\"\\x00abc\".startsWith(\"\\x00\")",
	       NULL, CEL_TRUE);
	expect(
	    "\"abc\".contains(\"c\\x00\") || \"abc\".startsWith(\"abc\\x00\") "
	    "|| \"abc\".endsWith(\"\\x00\")",
	    NULL, CEL_FALSE);
	/* matches: RE2's `.` is any character but a newline, NUL included. */
	expect("\"a\\x00b\".matches(\"^a.b$\") && \"a\\x00b\".matches(\"b$\")",
	       NULL, CEL_TRUE);
	expect("\"a\\nb\".matches(\"^a.b$\")", NULL, CEL_FALSE);
	expect("\"a.b\".matches(\"^a[.]b$\") && \"a.b\".matches(\"^a\\\\.b$\") "
	       "&& !\"axb\".matches(\"^a\\\\.b$\") && "
	       "\"a]b\".matches(\"^a[].]b$\") && "
	       "\"a1b\".matches(\"^a[[:digit:].]b$\")",
	       NULL, CEL_TRUE);
	expect_error("\"a\".matches(\"a\\x00\")", NULL, PEMBA_EPRECONDITION,
	             "NUL byte in pattern");
	/* in, lists and map keys compare at full length. */
	expect("\"a\\x00\" in [\"a\"]", NULL, CEL_FALSE);
	expect("\"a\\x00\" in [\"a\", \"a\\x00\"]", NULL, CEL_TRUE);
	expect("\"a\" in {\"a\\x00\": 1}", NULL, CEL_FALSE);
	expect("size({\"a\": 1, \"a\\x00\": 2}) == 2 && "
	       "{\"a\": 1, \"a\\x00\": 2}[\"a\\x00\"] == 2",
	       NULL, CEL_TRUE);
	expect_error("{\"a\\x00\": 1}[\"a\"] == 1", NULL, PEMBA_EPRECONDITION,
	             "no such key");
	/* Conversions: bytes <-> string keep the NUL; numbers, addresses,
	 * timestamps and durations do not stop at it. */
	expect("string(b\"a\\000b\") == \"a\\x00b\" && bytes(\"a\\x00b\") == "
	       "b\"a\\x00b\"",
	       NULL, CEL_TRUE);
	expect_error("int(\"12\\x00\") == 12", NULL, PEMBA_EPRECONDITION,
	             "cannot convert");
	expect_error("uint(\"12\\x003\") == 12u", NULL, PEMBA_EPRECONDITION,
	             "cannot convert");
	expect_error("double(\"1.5\\x00\") == 1.5", NULL, PEMBA_EPRECONDITION,
	             "cannot convert");
	expect_error("timestamp(\"2024-01-01T00:00:00Z\\x00\") == "
	             "timestamp(\"2024-01-01T00:00:00Z\")",
	             NULL, PEMBA_EPRECONDITION, "timestamp");
	expect_error("duration(\"1s\\x00\") == duration(\"1s\")", NULL,
	             PEMBA_EPRECONDITION, "duration");
	expect_error("ip.in_cidr(\"10.0.0.0\\x00junk/8\")",
	             "{\"ip\": \"10.1.2.3\"}", PEMBA_EPRECONDITION,
	             "invalid CIDR");
	expect_error("bool(\"true\\x00\")", NULL, PEMBA_EPRECONDITION,
	             "conversion error");
	/* A context cannot carry \u0000 (see docs/compatibility.md): the
	 * refusal says so instead of naming jansson's flag. */
	outcome o = run("s == 'a'", "{\"s\": \"a\\u0000b\"}", NULL,
	                CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	assert_non_null(strstr(o.message, "\\u0000 (NUL)"));
	assert_null(strstr(o.message, "JSON_ALLOW_NUL"));
	o = run("s == 'a'", "{\"s\\u0000\": \"a\"}", NULL,
	        CEL_DEFAULT_COST_LIMIT);
	assert_int_equal(o.rc, PEMBA_EINVAL);
	assert_non_null(strstr(o.message, "\\u0000 (NUL)"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_arithmetic_and_comparisons),
	    cmocka_unit_test(test_strings_lists_maps),
	    cmocka_unit_test(test_macros),
	    cmocka_unit_test(test_conversions_and_time),
	    cmocka_unit_test(test_partial_evaluation),
	    cmocka_unit_test(test_evaluation_errors),
	    cmocka_unit_test(test_hostile_expressions),
	    cmocka_unit_test(test_cost_limit_stops_blowups),
	    cmocka_unit_test(test_hostile_contexts),
	    cmocka_unit_test(test_strings_with_nul_keep_their_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
