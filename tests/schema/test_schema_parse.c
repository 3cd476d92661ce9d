/*
 * test_schema_parse.c -- the schema parser and type checker: trees built
 * for every construct, and every kind of rejected input with its message
 * and position.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "schema/schema.h"

/* ------------------------------------------------------------ helpers */

static schema *compile_ok(const char *text)
{
	schema *s = NULL;
	pemba_error err;
	int rc = schema_compile(text, strlen(text), &s, &err);
	if (rc != 0)
		fail_msg("unexpected error %d at %d:%d: %s\n--- input:\n%s", rc,
		         err.line, err.column, err.message, text);
	assert_non_null(s);
	return s;
}

static void expect_error(const char *text, int code, int line, int column,
                         const char *substring)
{
	schema *s = NULL;
	pemba_error err;
	int rc = schema_compile(text, strlen(text), &s, &err);
	if (rc == 0) {
		schema_free(s);
		fail_msg("expected an error for:\n%s", text);
	}
	assert_null(s);
	if (rc != code || err.code != code || err.line != line ||
	    err.column != column || !strstr(err.message, substring))
		fail_msg("for input:\n%s\nwant code %d at %d:%d containing "
		         "\"%s\"\ngot  code %d at %d:%d: %s",
		         text, code, line, column, substring, rc, err.line,
		         err.column, err.message);
}

static const schema_relation *relation_of(const schema *s, const char *def,
                                          const char *rel)
{
	const schema_definition *d = schema_find_definition(s, def);
	assert_non_null(d);
	const schema_relation *r = schema_find_relation(d, rel);
	assert_non_null(r);
	return r;
}

/* Renders an expression tree in prefix form, e.g. "U(a,X(b,c))". */
static void render(const schema_expr *e, char *out, size_t cap)
{
	size_t n = strlen(out);
	const char *tag = NULL;
	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		snprintf(out + n, cap - n, "nil");
		return;
	case SCHEMA_EXPR_REF:
		snprintf(out + n, cap - n, "%s", e->name);
		return;
	case SCHEMA_EXPR_ARROW:
		snprintf(out + n, cap - n, "%s->%s", e->name, e->target);
		return;
	case SCHEMA_EXPR_ARROW_ANY:
		snprintf(out + n, cap - n, "%s.any(%s)", e->name, e->target);
		return;
	case SCHEMA_EXPR_ARROW_ALL:
		snprintf(out + n, cap - n, "%s.all(%s)", e->name, e->target);
		return;
	case SCHEMA_EXPR_UNION:
		tag = "U";
		break;
	case SCHEMA_EXPR_INTERSECT:
		tag = "I";
		break;
	case SCHEMA_EXPR_EXCLUDE:
		tag = "X";
		break;
	}
	snprintf(out + n, cap - n, "%s(", tag);
	for (size_t i = 0; i < e->nchildren; i++) {
		if (i)
			strncat(out, ",", cap - strlen(out) - 1);
		render(e->children[i], out, cap);
	}
	strncat(out, ")", cap - strlen(out) - 1);
}

/* Compiles `definition thing { relation aaa..fff: thing; permission
 * result = <expr> }` and checks the tree of `result`. */
static void expect_tree(const char *expr, const char *want)
{
	char text[2048];
	snprintf(text, sizeof(text),
	         "definition thing {\n"
	         "\trelation aaa: thing\n\trelation bbb: thing\n"
	         "\trelation ccc: thing\n\trelation ddd: thing\n"
	         "\trelation eee: thing\n\trelation fff: thing\n"
	         "\tpermission result = %s\n}\n",
	         expr);
	schema *s = compile_ok(text);
	char got[2048] = "";
	render(relation_of(s, "thing", "result")->expr, got, sizeof(got));
	if (strcmp(got, want) != 0)
		fail_msg("expression %s\nwant %s\ngot  %s", expr, want, got);
	schema_free(s);
}

/* -------------------------------------------------------- structures */

static void test_definitions_relations_and_types_build_the_tree(void **state)
{
	(void)state;
	schema *s = compile_ok(
	    "use expiration\n"
	    "\n"
	    "/** the user */\n"
	    "definition user {}\n"
	    "\n"
	    "caveat only_ours(names list<string>, limit map<list<int>>, "
	    "ok bool) {\n"
	    "\tnames.exists(n, n == \"}\") && ok && limit.size() > 0\n"
	    "}\n"
	    "\n"
	    "definition org/team/group {\n"
	    "\trelation member: user | org/team/group#member\n"
	    "}\n"
	    "\n"
	    "definition document {\n"
	    "\t// who may read\n"
	    "\trelation viewer: user | user:* | org/team/group#member | "
	    "org/team/group#... | user with only_ours | user with expiration | "
	    "user:* with only_ours and expiration\n"
	    "\tpermission view = viewer + nil\n"
	    "}\n");

	assert_int_equal(s->ndefinitions, 3);
	assert_int_equal(s->ncaveats, 1);
	assert_true(s->use_expiration);
	assert_true(schema_uses_caveats(s));
	assert_true(schema_uses_expiration(s));

	const schema_definition *user = schema_find_definition(s, "user");
	assert_non_null(user);
	assert_string_equal(user->doc, "/** the user */");
	assert_int_equal(user->line, 4);
	assert_int_equal(user->column, 1);
	assert_int_equal(user->nrelations, 0);

	const schema_definition *group =
	    schema_find_definition(s, "org/team/group");
	assert_non_null(group);
	const schema_relation *member = schema_find_relation(group, "member");
	assert_non_null(member);
	assert_ptr_equal(member->types[1].definition, group);
	assert_string_equal(member->types[1].relation, "member");

	const schema_relation *viewer = relation_of(s, "document", "viewer");
	assert_false(viewer->is_permission);
	assert_string_equal(viewer->doc, "// who may read");
	assert_int_equal(viewer->ntypes, 7);
	const schema_allowed_type *t = viewer->types;
	assert_string_equal(t[0].type, "user");
	assert_null(t[0].relation);
	assert_false(t[0].wildcard);
	assert_ptr_equal(t[0].definition, user);
	assert_true(t[1].wildcard);
	assert_string_equal(t[2].relation, "member");
	assert_ptr_equal(t[2].definition, group);
	assert_null(t[3].relation); /* group#... is the object itself */
	assert_ptr_equal(t[3].definition, group);
	assert_string_equal(t[4].caveat, "only_ours");
	assert_false(t[4].expiration);
	assert_null(t[5].caveat);
	assert_true(t[5].expiration);
	assert_true(t[6].wildcard);
	assert_string_equal(t[6].caveat, "only_ours");
	assert_true(t[6].expiration);
	assert_int_equal(t[2].line, 16);
	assert_int_equal(t[2].column, 35);

	const schema_caveat *c = schema_find_caveat(s, "only_ours");
	assert_non_null(c);
	assert_int_equal(c->nparams, 3);
	assert_string_equal(c->params[0].name, "names");
	assert_string_equal(c->params[0].type, "list<string>");
	assert_string_equal(c->params[1].type, "map<list<int>>");
	assert_string_equal(c->params[2].type, "bool");
	assert_string_equal(c->expression,
	                    "names.exists(n, n == \"}\") && ok && "
	                    "limit.size() > 0");
	assert_int_equal(c->expr_line, 7);
	assert_int_equal(c->expr_column, 2);

	const schema_relation *view = relation_of(s, "document", "view");
	assert_true(view->is_permission);
	assert_int_equal(view->expr->kind, SCHEMA_EXPR_UNION);
	assert_ptr_equal(view->expr->children[0]->ref, viewer);
	assert_int_equal(view->expr->children[1]->kind, SCHEMA_EXPR_NIL);
	assert_ptr_equal(view->definition,
	                 schema_find_definition(s, "document"));
	assert_int_equal(view->index, 1);

	assert_null(schema_find_definition(s, "nope"));
	assert_null(schema_find_relation(user, "viewer"));
	assert_null(schema_find_caveat(s, "user"));
	schema_free(s);
}

static void test_empty_schema_compiles_to_nothing(void **state)
{
	(void)state;
	schema *s = compile_ok("");
	assert_int_equal(s->ndefinitions, 0);
	schema_free(s);
	s = compile_ok("  // only a comment\n/* and another */\n");
	assert_int_equal(s->ndefinitions, 0);
	assert_false(schema_uses_caveats(s));
	schema_free(s);
}

static void test_statements_end_with_newlines_or_semicolons(void **state)
{
	(void)state;
	schema *s = compile_ok("definition user {}; definition doc { "
	                       "relation viewer: user; permission view = "
	                       "viewer; }");
	assert_non_null(relation_of(s, "doc", "view"));
	schema_free(s);
	/* An operator at the end of a line continues the statement. */
	s = compile_ok("definition user {}\ndefinition doc {\n"
	               "\trelation viewer: user |\n\t\tuser:*\n"
	               "\tpermission view = viewer +\n\t\tviewer\n}");
	assert_int_equal(relation_of(s, "doc", "viewer")->ntypes, 2);
	schema_free(s);
	/* Windows line ends. */
	s = compile_ok("definition user {}\r\ndefinition doc {\r\n"
	               "\trelation viewer: user\r\n}\r\n");
	schema_free(s);
}

static void
test_precedence_is_exclusion_then_intersection_then_union(void **state)
{
	(void)state;
	expect_tree("aaa", "aaa");
	expect_tree("aaa + bbb & ccc", "I(U(aaa,bbb),ccc)");
	expect_tree("aaa & bbb + ccc", "I(aaa,U(bbb,ccc))");
	expect_tree("aaa - bbb + ccc", "X(aaa,U(bbb,ccc))");
	expect_tree("aaa - bbb & ccc", "X(aaa,I(bbb,ccc))");
	expect_tree("aaa + bbb - ccc & ddd", "X(U(aaa,bbb),I(ccc,ddd))");
	expect_tree("aaa - bbb - ccc", "X(X(aaa,bbb),ccc)");
	expect_tree("aaa - (bbb - ccc)", "X(aaa,X(bbb,ccc))");
	expect_tree("(aaa + bbb) & ccc", "I(U(aaa,bbb),ccc)");
	expect_tree("aaa + (bbb & ccc)", "U(aaa,I(bbb,ccc))");
}

static void test_union_and_intersection_chains_are_flattened(void **state)
{
	(void)state;
	expect_tree("aaa + bbb + ccc", "U(aaa,bbb,ccc)");
	expect_tree("(aaa + bbb) + (ccc + ddd)", "U(aaa,bbb,ccc,ddd)");
	expect_tree("aaa & (bbb & ccc) & ddd", "I(aaa,bbb,ccc,ddd)");
	expect_tree("((aaa))", "aaa");
	expect_tree("aaa + (bbb & (ccc - ddd) & eee) + fff",
	            "U(aaa,I(bbb,X(ccc,ddd),eee),fff)");
}

static void test_arrows_and_arrow_functions(void **state)
{
	(void)state;
	expect_tree("aaa->view", "aaa->view");
	expect_tree("aaa.any(view) + bbb.all(view)",
	            "U(aaa.any(view),bbb.all(view))");
	expect_tree("aaa->bbb - nil", "X(aaa->bbb,nil)");
	schema *s = compile_ok("definition folder {\n"
	                       "\trelation parent: folder\n"
	                       "\tpermission view = parent->view\n}");
	const schema_relation *view = relation_of(s, "folder", "view");
	assert_int_equal(view->expr->kind, SCHEMA_EXPR_ARROW);
	assert_ptr_equal(view->expr->tupleset,
	                 relation_of(s, "folder", "parent"));
	assert_null(view->expr->ref);
	assert_int_equal(view->expr->line, 3);
	assert_int_equal(view->expr->column, 20);
	schema_free(s);
}

static void test_arrow_target_missing_on_subject_types_is_accepted(void **state)
{
	(void)state;
	/* SpiceDB does not check arrow targets against subject types. */
	schema *s = compile_ok("definition user {}\ndefinition doc {\n"
	                       "\trelation owner: user\n"
	                       "\tpermission view = owner->nothing\n}");
	schema_free(s);
}

static void test_expiration_and_and_are_keywords_only_after_use(void **state)
{
	(void)state;
	schema *s = compile_ok("definition user {}\ndefinition doc {\n"
	                       "\trelation expiration: user\n"
	                       "\trelation and: user\n"
	                       "\tpermission any = expiration.any(and)\n}");
	schema_free(s);
	expect_error("use expiration\ndefinition user {}\ndefinition doc {\n"
	             "\trelation expiration: user\n}",
	             PEMBA_EINVAL, 4, 11,
	             "expected a relation name, found "
	             "`expiration`");
}

static void test_doc_comments_attach_to_the_following_item(void **state)
{
	(void)state;
	schema *s = compile_ok("/**\n * multi\n *   line\n */\n"
	                       "definition user {\n"
	                       "\t/** first */ relation one: user // tail\n"
	                       "\t// a\n\t/* b */\n"
	                       "\tpermission two = one\n"
	                       "\t// dangling\n}\n// end\n");
	const schema_definition *d = schema_find_definition(s, "user");
	assert_int_equal(d->ncomments, 1);
	assert_string_equal(d->comments[0], "/**\n* multi\n*   line\n*/");
	const schema_relation *one = relation_of(s, "user", "one");
	assert_string_equal(one->doc, "/** first */");
	const schema_relation *two = relation_of(s, "user", "two");
	assert_int_equal(two->ncomments, 2);
	assert_string_equal(two->doc, "// a\n/* b */");
	schema_free(s);
}

static void test_caveat_bodies_keep_braces_strings_and_comments(void **state)
{
	(void)state;
	schema *s = compile_ok("caveat tricky(m map<any>) {\n"
	                       "  m == {\"}\": '{'} // }\n"
	                       "    && m != {}\n"
	                       "}\ndefinition user {}");
	/* The expression is kept in its canonical form (cel_program_print). */
	assert_string_equal(schema_find_caveat(s, "tricky")->expression,
	                    "m == {\"}\": \"{\"} && m != {}");
	schema_free(s);
}

/* ------------------------------------------------------ syntax errors */

static void test_syntax_errors_name_the_expected_token(void **state)
{
	(void)state;
	expect_error("foo", PEMBA_EINVAL, 1, 1,
	             "parse error at 1:1: expected `definition`, `caveat` or "
	             "`use`, found `foo`");
	expect_error("definition {}", PEMBA_EINVAL, 1, 12,
	             "expected a definition name, found `{`");
	expect_error("definition user", PEMBA_EINVAL, 1, 16,
	             "expected `{`, found end of input");
	expect_error("definition user {", PEMBA_EINVAL, 1, 18,
	             "expected `}`, found end of input");
	expect_error("definition user {\n\trelation\n}", PEMBA_EINVAL, 2, 10,
	             "expected a relation name, found newline");
	expect_error("definition user {\n\trelation viewer user\n}",
	             PEMBA_EINVAL, 2, 18, "expected `:`, found `user`");
	/* A newline after `:` does not end the statement. */
	expect_error("definition user {\n\trelation viewer:\n}", PEMBA_EINVAL,
	             3, 1, "expected a definition name, found `}`");
	expect_error("definition doc { relation viewer: doc }", PEMBA_EINVAL, 1,
	             39,
	             "expected a newline or `;` ending the statement, found "
	             "`}`");
	expect_error("definition doc {\n\tpermission view viewer\n}",
	             PEMBA_EINVAL, 2, 18, "expected `=`, found `viewer`");
	expect_error("definition doc {\n\tpermission view =\n}", PEMBA_EINVAL,
	             3, 1,
	             "expected a relation or permission name, `nil` or `(`, "
	             "found `}`");
	expect_error("definition doc {\n\tpermission view = (aaa + bbb\n}",
	             PEMBA_EINVAL, 2, 30, "expected `)`, found newline");
	expect_error("definition doc {\n\tpermission view = aaa\n\t\t+ bbb\n}",
	             PEMBA_EINVAL, 3, 3,
	             "expected `relation`, `permission` or `}`, found `+`");
	expect_error("definition doc {\n\trelation viewer: doc:\n}",
	             PEMBA_EINVAL, 3, 1, "expected `*`, found `}`");
	expect_error("definition doc {\n\trelation viewer: doc#;\n}",
	             PEMBA_EINVAL, 2, 23,
	             "expected a relation name or `...`, found `;`");
	expect_error("definition doc {\n\trelation viewer: doc with\n}",
	             PEMBA_EINVAL, 2, 27,
	             "expected a caveat name, found newline");
	/* A dangling `and` is accepted (and dropped) as in SpiceDB, so the
	 * error is the unknown caveat. */
	expect_error("use expiration\ndefinition doc {\n"
	             "\trelation viewer: doc with cav and\n}",
	             PEMBA_EPRECONDITION, 3, 19,
	             "caveat with name `cav` not found");
	expect_error("use expiration\ndefinition doc {\n"
	             "\trelation viewer: doc with cav and and\n}",
	             PEMBA_EINVAL, 3, 36,
	             "expected a newline or `;` ending the statement, found "
	             "`and`");
	expect_error("definition us\xe2\x98\x95"
	             "er {}",
	             PEMBA_EINVAL, 1, 14, "unrecognized character (byte 0xe2)");
	expect_error("definition us\xc3 {}", PEMBA_EINVAL, 1, 14,
	             "unrecognized character (byte 0xc3)");
	expect_error("definition us\xc3\xa9r {}", PEMBA_EINVAL, 1, 1,
	             "invalid definition name `us\xc3\xa9r`");
	expect_error("definition doc {\n\tpermission nil = doc\n}",
	             PEMBA_EINVAL, 2, 13,
	             "expected a permission name, found `nil`");
	expect_error("definition doc @ {}", PEMBA_EINVAL, 1, 16,
	             "unrecognized character `@`");
	expect_error("/* never closed", PEMBA_EINVAL, 1, 1,
	             "unterminated multiline comment");
	static const char nul[] = "definition user {}\n\tdefinition x\0y {}";
	pemba_error err;
	schema *s = NULL;
	assert_int_equal(schema_compile(nul, sizeof(nul) - 1, &s, &err),
	                 PEMBA_EINVAL);
	assert_int_equal(err.line, 2);
	assert_int_equal(err.column, 14);
	assert_non_null(strstr(err.message, "byte 0x00"));
	expect_error("caveat cav(x int) {\n  x ==\x01 1 }", PEMBA_EINVAL, 2, 7,
	             "control character in caveat expression");
}

static void test_arrow_errors(void **state)
{
	(void)state;
	expect_error("definition doc {\n\trelation parent: doc\n"
	             "\tpermission view = parent->view->view\n}",
	             PEMBA_EINVAL, 3, 20, "nested arrows not yet supported");
	expect_error("definition doc {\n\trelation parent: doc\n"
	             "\tpermission view = parent.some(view)\n}",
	             PEMBA_EINVAL, 3, 27,
	             "expected `any` or `all` for arrow function, found "
	             "`some`");
	expect_error("definition doc {\n\trelation parent: doc\n"
	             "\tpermission view = parent->\n}",
	             PEMBA_EINVAL, 4, 1,
	             "expected a relation or permission name after `->`");
}

static void test_use_directive_errors(void **state)
{
	(void)state;
	expect_error("use fancy\ndefinition doc {}", PEMBA_EINVAL, 1, 5,
	             "unknown use flag `fancy`; options are: expiration, "
	             "import, partial, self, typechecking");
	/* Every flag SpiceDB knows is accepted and makes its name a
	 * keyword; the syntax of `import`, `partial` and `self` is refused
	 * where it appears. */
	expect_error("use typechecking\ndefinition typechecking {}",
	             PEMBA_EINVAL, 2, 12, "expected a definition name");
	expect_error("use import\nimport \"x.zed\"", PEMBA_EINVAL, 2, 1,
	             "import statements are not allowed in this context");
	expect_error("use partial\npartial shared {}", PEMBA_EINVAL, 2, 1,
	             "partial definitions are not supported");
	expect_error("use self\ndefinition doc {\n\tpermission view = self\n}",
	             PEMBA_EINVAL, 3, 20,
	             "`self` in permissions is not supported");
	expect_error("definition doc {}\nuse expiration", PEMBA_EINVAL, 2, 1,
	             "`use` expressions must be declared before any "
	             "definition");
	expect_error("use\n", PEMBA_EINVAL, 1, 4,
	             "expected a use flag such as `expiration`");
}

static void test_caveat_errors(void **state)
{
	(void)state;
	expect_error("caveat cav() { true }", PEMBA_EINVAL, 1, 12,
	             "expected a parameter name, found `)`");
	expect_error("caveat cav(x int, x int) { x == 1 }", PEMBA_EINVAL, 1, 19,
	             "duplicate parameter `x` defined on caveat `cav`");
	expect_error("caveat cav(x foo) { x }", PEMBA_EINVAL, 1, 12,
	             "invalid type for caveat parameter `x` on caveat `cav`: "
	             "unknown type `foo`");
	expect_error("caveat cav(x list) { x }", PEMBA_EINVAL, 1, 12,
	             "type `list` requires 1 generic types; found 0");
	/* The generic arguments of a simple type are checked, then dropped
	 * (see test_caveat_types_normalize). */
	expect_error("caveat cav(x int<foo>) { x }", PEMBA_EINVAL, 1, 12,
	             "unknown type `foo`");
	expect_error("caveat cav(x int, y int) { x == 1 }", PEMBA_EPRECONDITION,
	             1, 19, "parameter `y` for caveat `cav` is unused");
	expect_error("caveat cav(x int, y int, m map<int>) {\n"
	             "x == 1 && 'y' == \"y\" && m.y == 1 // y\n}",
	             PEMBA_EPRECONDITION, 1, 19,
	             "parameter `y` for caveat `cav` is unused");
	expect_error("caveat cav(x list<int) { x }", PEMBA_EINVAL, 1, 22,
	             "expected `>` or `,`, found `)`");
	expect_error("caveat cav(x int) {\n  x == 1\n", PEMBA_EINVAL, 1, 19,
	             "unterminated caveat expression");
	expect_error("caveat cav(x int) { \n }", PEMBA_EINVAL, 1, 19,
	             "missing caveat expression");
	expect_error("caveat cav(x int) { x == \"}\n }", PEMBA_EINVAL, 1, 19,
	             "unterminated caveat expression");
}

static void test_deep_nesting_is_refused_not_overflowed(void **state)
{
	(void)state;
	enum { N = 100000 };
	static char text[3 * N + 200];
	strcpy(text, "definition doc {\n\trelation aaa: doc\n"
	             "\tpermission view = ");
	size_t n = strlen(text);
	memset(text + n, '(', N);
	n += N;
	strcpy(text + n, "aaa");
	n += 3;
	memset(text + n, ')', N);
	n += N;
	strcpy(text + n, "\n}");
	expect_error(text, PEMBA_EINVAL, 3, 20 + SCHEMA_MAX_EXPR_DEPTH,
	             "expression nesting exceeds the maximum depth of 256");

	/* A long exclusion chain is deep without any parentheses. */
	strcpy(text, "definition doc {\n\trelation aaa: doc\n"
	             "\tpermission view = aaa");
	n = strlen(text);
	for (int i = 0; i < 300; i++) {
		strcpy(text + n, " - aaa");
		n += 6;
	}
	strcpy(text + n, "\n}");
	expect_error(text, PEMBA_EINVAL, 3, 20,
	             "expression nesting exceeds the maximum depth");

	expect_error("caveat cav(x list<list<list<list<list<list<list<list<"
	             "list<list<list<list<list<list<list<list<list<list<list<"
	             "list<list<list<list<list<list<list<list<list<list<list<"
	             "list<list<list<list<int>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>"
	             ">>>>) { x }",
	             PEMBA_EINVAL, 1, 179, "maximum depth of 32");
}

static void test_truncated_input_always_fails_cleanly(void **state)
{
	(void)state;
	static const char full[] =
	    "use expiration\n"
	    "/** doc */\n"
	    "caveat cav(a list<int>, b string) {\n"
	    "\ta.all(i, i > 1) && b == \"}\"\n"
	    "}\n"
	    "definition user {}\n"
	    "definition org/group {\n"
	    "\trelation member: user | org/group#member | user with cav\n"
	    "}\n"
	    "definition doc {\n"
	    "\trelation parent: doc\n"
	    "\trelation viewer: user with cav and expiration | "
	    "org/group#member\n"
	    "\tpermission view = (viewer + parent->view) - nil & "
	    "parent.all(viewer)\n"
	    "}\n";
	schema *s = compile_ok(full);
	schema_free(s);
	size_t len = strlen(full);
	size_t failures = 0;
	for (size_t cut = 0; cut < len; cut++) {
		pemba_error err;
		s = NULL;
		int rc = schema_compile(full, cut, &s, &err);
		if (rc == 0) {
			schema_free(s);
			continue;
		}
		failures++;
		assert_null(s);
		assert_true(rc == PEMBA_EINVAL || rc == PEMBA_EPRECONDITION);
		assert_int_equal(err.code, rc);
		assert_true(err.line >= 1 && err.column >= 1);
		assert_true(err.message[0] != '\0');
	}
	assert_true(failures > len / 2);
	/* Cut inside the permission expression. */
	size_t at = (size_t)(strstr(full, "parent->view") - full) + 8;
	pemba_error err;
	assert_int_equal(schema_compile(full, at, &s, &err), PEMBA_EINVAL);
	assert_int_equal(err.line, 13);
	assert_int_equal(err.column, 38);
	assert_non_null(strstr(err.message, "expected a relation or permission "
	                                    "name after `->`, found end of "
	                                    "input"));
}

/* ------------------------------------------------------- name errors */

static void test_bad_identifiers_are_refused_with_their_position(void **state)
{
	(void)state;
	expect_error("definition Doc {}", PEMBA_EINVAL, 1, 1,
	             "invalid definition name `Doc`");
	expect_error("definition ab/document {}", PEMBA_EINVAL, 1, 1,
	             "invalid definition name `ab/document`");
	expect_error("definition doc {\n\trelation ab: doc\n}", PEMBA_EINVAL, 2,
	             2, "invalid relation name `ab`");
	expect_error("definition doc {\n\trelation viewer: doc\n"
	             "\tpermission v = viewer\n}",
	             PEMBA_EINVAL, 3, 2, "invalid permission name `v`");
	expect_error("definition doc {\n\trelation viewer: Doc\n}",
	             PEMBA_EINVAL, 2, 19, "invalid definition name `Doc`");
	expect_error("definition doc {\n\trelation viewer: doc#Viewer\n}",
	             PEMBA_EINVAL, 2, 19, "invalid relation name `Viewer`");
	expect_error("definition doc {\n\trelation viewer: doc\n"
	             "\tpermission view = viewer + x_\n}",
	             PEMBA_EINVAL, 3, 29,
	             "invalid relation or permission name `x_`");
	expect_error("definition doc_\u00e9t\u00e9 {}", PEMBA_EINVAL, 1, 1,
	             "invalid definition name");
}

static void test_names_reused_between_definitions_and_caveats(void **state)
{
	(void)state;
	expect_error("definition user {}\ndefinition user {}", PEMBA_EINVAL, 2,
	             1,
	             "found name reused between multiple definitions and/or "
	             "caveats: user");
	expect_error("caveat user(x int) { x == 1 }\n  definition user {}",
	             PEMBA_EINVAL, 2, 3,
	             "found name reused between multiple definitions and/or "
	             "caveats: user");
}

/* ------------------------------------------------------- type errors */

static void test_type_errors(void **state)
{
	(void)state;
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user\n\trelation viewer: user\n}",
	             PEMBA_EPRECONDITION, 4, 2,
	             "found duplicate relation/permission name `viewer` under "
	             "definition `doc`");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user\n\tpermission viewer = viewer\n}",
	             PEMBA_EPRECONDITION, 4, 2,
	             "found duplicate relation/permission name `viewer`");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user | user\n}",
	             PEMBA_EPRECONDITION, 3, 26,
	             "found duplicate allowed subject type `user` on relation "
	             "`viewer` under definition `doc`");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: usr\n}",
	             PEMBA_EPRECONDITION, 3, 19,
	             "could not lookup definition `usr` for relation `viewer`: "
	             "object definition `usr` not found");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user#member\n}",
	             PEMBA_EPRECONDITION, 3, 19,
	             "relation/permission `member` not found under definition "
	             "`user`");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user with nocav\n}",
	             PEMBA_EPRECONDITION, 3, 19,
	             "could not lookup caveat `nocav` for relation `viewer`");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user with expiration\n}",
	             PEMBA_EPRECONDITION, 3, 19, "declare `use expiration`");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user\n\tpermission view = viewr\n}",
	             PEMBA_EPRECONDITION, 4, 20,
	             "relation/permission `viewr` not found under definition "
	             "`doc`");
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user\n"
	             "\tpermission view = viewer + missing->view\n}",
	             PEMBA_EPRECONDITION, 4, 29,
	             "relation/permission `missing` not found under "
	             "definition `doc`");
}

static void test_arrow_over_a_permission_is_refused(void **state)
{
	(void)state;
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user\n\tpermission view = viewer\n"
	             "\tpermission edit = view->view\n}",
	             PEMBA_EPRECONDITION, 5, 20,
	             "under permission `edit` under definition `doc`: "
	             "permissions cannot be used on the left hand side of an "
	             "arrow (found `view`)");
}

static void test_wildcards_cannot_feed_arrows_or_subject_relations(void **state)
{
	(void)state;
	expect_error("definition user {}\ndefinition doc {\n"
	             "\trelation viewer: user:*\n"
	             "\tpermission view = viewer.any(view)\n}",
	             PEMBA_EPRECONDITION, 4, 20,
	             "for arrow under permission `view`: relation `doc#viewer` "
	             "includes wildcard type `user` via relation `doc#viewer`: "
	             "wildcard relations cannot be used on the left side of "
	             "arrows");
	expect_error("definition user {\n\trelation friend: user:*\n}\n"
	             "definition group {\n\trelation member: group | "
	             "group#member\n}\n"
	             "definition doc {\n\trelation viewer: user | "
	             "group#member\n"
	             "\trelation editor: group#member\n}\n"
	             "definition folder {\n\trelation viewer: group#member\n"
	             "\trelation owner: user#friend | group:*\n}",
	             PEMBA_EPRECONDITION, 13, 18,
	             "for relation `owner`: relation/permission "
	             "`user#friend` includes wildcard type `user` via "
	             "relation `user#friend`: wildcard relations cannot be "
	             "transitively included");
	/* Recursion through a cycle without wildcards is fine. */
	schema *s = compile_ok("definition group {\n"
	                       "\trelation member: group#member | group\n"
	                       "\tpermission all = member->member\n}");
	schema_free(s);
}

static void test_permission_alias_cycles_are_refused(void **state)
{
	(void)state;
	expect_error("definition doc {\n\trelation viewer: doc\n"
	             "\tpermission view = view\n}",
	             PEMBA_EINVAL, 3, 2,
	             "under definition `doc`, there exists a cycle in "
	             "permissions: view");
	expect_error("definition doc {\n\trelation viewer: doc\n"
	             "\tpermission ccc = aaa\n\tpermission bbb = (aaa)\n"
	             "\tpermission aaa = bbb\n}",
	             PEMBA_EINVAL, 3, 2,
	             "there exists a cycle in permissions: aaa, bbb, ccc");
	/* SpiceDB accepts a self reference that is not a pure alias. */
	schema *s = compile_ok("definition doc {\n\trelation viewer: doc\n"
	                       "\tpermission view = viewer + view\n"
	                       "\tpermission edit = view\n"
	                       "\tpermission admin = edit\n}");
	schema_free(s);
}

static void test_identifier_rules(void **state)
{
	(void)state;
	assert_true(schema_valid_type_name("user", 4));
	assert_true(schema_valid_type_name("org/team/user", 13));
	assert_false(schema_valid_type_name("us", 2));
	assert_false(schema_valid_type_name("User", 4));
	assert_false(schema_valid_type_name("user_", 5));
	assert_false(schema_valid_type_name("org//user", 9));
	assert_false(schema_valid_type_name("org/", 4));
	assert_false(schema_valid_type_name("/user", 5));
	char name[200];
	memset(name, 'a', sizeof(name));
	assert_true(schema_valid_type_name(name, 64));
	assert_false(schema_valid_type_name(name, 65));
	name[63] = '/'; /* a 63-byte prefix segment, then "aaa" */
	assert_true(schema_valid_type_name(name, 67));
	assert_false(schema_valid_type_name(name, 66));
	memset(name, 'a', sizeof(name));
	name[64] = '/';
	assert_false(schema_valid_type_name(name, 70)); /* prefix of 64 */
	assert_true(schema_valid_relation_name("viewer", 6));
	assert_true(schema_valid_relation_name("can_view2", 9));
	assert_false(schema_valid_relation_name("ab", 2));
	assert_false(schema_valid_relation_name("_view", 5));
	assert_false(schema_valid_relation_name("view-er", 7));
	assert_true(schema_valid_object_id("*", 1));
	assert_true(schema_valid_object_id("a/b_c|d-e=f+G9", 14));
	assert_false(schema_valid_object_id("", 0));
	assert_false(schema_valid_object_id("a b", 3));
	assert_false(schema_valid_object_id("a*", 2));
	static char id[PEMBA_MAX_OBJECT_ID + 1];
	memset(id, 'x', sizeof(id));
	assert_true(schema_valid_object_id(id, PEMBA_MAX_OBJECT_ID));
	assert_false(schema_valid_object_id(id, PEMBA_MAX_OBJECT_ID + 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_definitions_relations_and_types_build_the_tree),
	    cmocka_unit_test(test_empty_schema_compiles_to_nothing),
	    cmocka_unit_test(test_statements_end_with_newlines_or_semicolons),
	    cmocka_unit_test(
	        test_precedence_is_exclusion_then_intersection_then_union),
	    cmocka_unit_test(test_union_and_intersection_chains_are_flattened),
	    cmocka_unit_test(test_arrows_and_arrow_functions),
	    cmocka_unit_test(
	        test_arrow_target_missing_on_subject_types_is_accepted),
	    cmocka_unit_test(
	        test_expiration_and_and_are_keywords_only_after_use),
	    cmocka_unit_test(test_doc_comments_attach_to_the_following_item),
	    cmocka_unit_test(
	        test_caveat_bodies_keep_braces_strings_and_comments),
	    cmocka_unit_test(test_syntax_errors_name_the_expected_token),
	    cmocka_unit_test(test_arrow_errors),
	    cmocka_unit_test(test_use_directive_errors),
	    cmocka_unit_test(test_caveat_errors),
	    cmocka_unit_test(test_deep_nesting_is_refused_not_overflowed),
	    cmocka_unit_test(test_truncated_input_always_fails_cleanly),
	    cmocka_unit_test(
	        test_bad_identifiers_are_refused_with_their_position),
	    cmocka_unit_test(test_names_reused_between_definitions_and_caveats),
	    cmocka_unit_test(test_type_errors),
	    cmocka_unit_test(test_arrow_over_a_permission_is_refused),
	    cmocka_unit_test(
	        test_wildcards_cannot_feed_arrows_or_subject_relations),
	    cmocka_unit_test(test_permission_alias_cycles_are_refused),
	    cmocka_unit_test(test_identifier_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
