/*
 * test_check.c -- CheckPermission semantics on small hand-made cases,
 * through the public API over an in-memory SQLite datastore.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "pemba.h"
#include "pg_fixture.h"

/* ------------------------------------------------------------- helpers */

/* A relationship parsed from "type:id#rel@type:id[#rel]" into its own
 * buffer (the real parser lives in src/core/relstring.c; these tests do
 * not depend on it). */
typedef struct test_rel {
	char buf[4096];
	pemba_relationship rel;
} test_rel;

static void test_rel_parse(test_rel *t, const char *s)
{
	memset(t, 0, sizeof(*t));
	assert_true(strlen(s) < sizeof(t->buf));
	strcpy(t->buf, s);
	char *p = t->buf;
	char *at = strchr(p, '@');
	assert_non_null(at);
	*at = '\0';
	char *colon = strchr(p, ':'), *hash = strchr(p, '#');
	assert_non_null(colon);
	assert_non_null(hash);
	*colon = *hash = '\0';
	t->rel.resource_type = p;
	t->rel.resource_id = colon + 1;
	t->rel.relation = hash + 1;
	p = at + 1;
	colon = strchr(p, ':');
	assert_non_null(colon);
	*colon = '\0';
	t->rel.subject_type = p;
	t->rel.subject_id = colon + 1;
	hash = strchr(colon + 1, '#');
	if (hash) {
		*hash = '\0';
		t->rel.subject_relation = hash + 1;
	}
}

static pemba_db *open_db(void)
{
	pemba_db *db = NULL;
	pemba_error err;
	int rc = pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err);
	if (rc != 0)
		fail_msg("open: %s", err.message);
	return db;
}

static void write_schema(pemba_db *db, const char *text)
{
	pemba_error err;
	int rc = pemba_write_schema(db, text, strlen(text), NULL, &err);
	if (rc != 0)
		fail_msg("write schema: %s", err.message);
}

/* TOUCHes a NULL-terminated list of relationships in one write. */
static void touch(pemba_db *db, const char *const *rels)
{
	size_t n = 0;
	while (rels[n])
		n++;
	test_rel *t = calloc(n ? n : 1, sizeof(*t));
	pemba_update *u = calloc(n ? n : 1, sizeof(*u));
	for (size_t i = 0; i < n; i++) {
		test_rel_parse(&t[i], rels[i]);
		u[i].op = PEMBA_OP_TOUCH;
		u[i].rel = t[i].rel;
	}
	pemba_error err;
	int rc = pemba_write_relationships(db, u, n, NULL, 0, NULL, &err);
	if (rc != 0)
		fail_msg("write: %s", err.message);
	free(t);
	free(u);
}

static pemba_db *setup(const char *schema_text, const char *const *rels)
{
	pemba_db *db = open_db();
	write_schema(db, schema_text);
	if (rels)
		touch(db, rels);
	return db;
}

/* Checks "type:id#permission@type:id[#rel]" at the head.  Returns 1 (has
 * permission), 0 (no permission) or the negative error, with the error
 * message in *err. */
static int check_err(pemba_db *db, const char *q, pemba_error *err)
{
	test_rel t;
	test_rel_parse(&t, q);
	pemba_check_request req = {
	    .resource_type = t.rel.resource_type,
	    .resource_id = t.rel.resource_id,
	    .permission = t.rel.relation,
	    .subject_type = t.rel.subject_type,
	    .subject_id = t.rel.subject_id,
	    .subject_relation = t.rel.subject_relation,
	};
	pemba_permissionship p = 0;
	int rc = pemba_check_permission(db, 0, &req, &p, err);
	if (rc < 0)
		return rc;
	assert_true(p == PEMBA_HAS_PERMISSION || p == PEMBA_NO_PERMISSION);
	return p == PEMBA_HAS_PERMISSION;
}

static int check(pemba_db *db, const char *q)
{
	pemba_error err;
	int rc = check_err(db, q, &err);
	if (rc < 0)
		fail_msg("check %s: %s", q, err.message);
	return rc;
}

/* ------------------------------------------------------------ operators */

static const char *DOC_SCHEMA =
    "definition user {}\n"
    "definition document {\n"
    "  relation viewer: user\n"
    "  relation editor: user\n"
    "  relation banned: user\n"
    "  permission any = viewer + editor\n"
    "  permission both = viewer & editor\n"
    "  permission allowed = viewer - banned\n"
    "  permission nothing = nil\n"
    "  permission viewer_or_nil = viewer + nil\n"
    "  permission nested = (viewer + editor) - (banned & editor)\n"
    "}\n";

static void test_union_grants_through_either_branch(void **state)
{
	const char *rels[] = {"document:1#viewer@user:anne",
	                      "document:1#editor@user:bob", NULL};
	pemba_db *db = setup(DOC_SCHEMA, rels);
	assert_int_equal(check(db, "document:1#any@user:anne"), 1);
	assert_int_equal(check(db, "document:1#any@user:bob"), 1);
	assert_int_equal(check(db, "document:1#any@user:carl"), 0);
	assert_int_equal(check(db, "document:2#any@user:anne"), 0);
	pemba_close(db);
}

static void test_intersection_needs_every_branch(void **state)
{
	const char *rels[] = {"document:1#viewer@user:anne",
	                      "document:1#editor@user:anne",
	                      "document:1#viewer@user:bob", NULL};
	pemba_db *db = setup(DOC_SCHEMA, rels);
	assert_int_equal(check(db, "document:1#both@user:anne"), 1);
	assert_int_equal(check(db, "document:1#both@user:bob"), 0);
	assert_int_equal(check(db, "document:1#both@user:carl"), 0);
	pemba_close(db);
}

static void test_exclusion_removes_subtracted_subjects(void **state)
{
	const char *rels[] = {
	    "document:1#viewer@user:anne", "document:1#viewer@user:bob",
	    "document:1#banned@user:bob", "document:1#banned@user:carl", NULL};
	pemba_db *db = setup(DOC_SCHEMA, rels);
	assert_int_equal(check(db, "document:1#allowed@user:anne"), 1);
	assert_int_equal(check(db, "document:1#allowed@user:bob"), 0);
	/* banned alone grants nothing */
	assert_int_equal(check(db, "document:1#allowed@user:carl"), 0);
	pemba_close(db);
}

static void test_nested_parenthesized_expression(void **state)
{
	const char *rels[] = {
	    "document:1#viewer@user:anne", "document:1#editor@user:bob",
	    "document:1#banned@user:bob", "document:1#banned@user:anne", NULL};
	pemba_db *db = setup(DOC_SCHEMA, rels);
	/* anne is banned but not an editor, so (banned & editor) is false */
	assert_int_equal(check(db, "document:1#nested@user:anne"), 1);
	assert_int_equal(check(db, "document:1#nested@user:bob"), 0);
	pemba_close(db);
}

static void test_nil_is_never_granted(void **state)
{
	const char *rels[] = {"document:1#viewer@user:anne", NULL};
	pemba_db *db = setup(DOC_SCHEMA, rels);
	assert_int_equal(check(db, "document:1#nothing@user:anne"), 0);
	assert_int_equal(check(db, "document:1#viewer_or_nil@user:anne"), 1);
	assert_int_equal(check(db, "document:1#viewer_or_nil@user:bob"), 0);
	pemba_close(db);
}

static void test_checking_a_relation_directly(void **state)
{
	const char *rels[] = {"document:1#viewer@user:anne", NULL};
	pemba_db *db = setup(DOC_SCHEMA, rels);
	assert_int_equal(check(db, "document:1#viewer@user:anne"), 1);
	assert_int_equal(check(db, "document:1#editor@user:anne"), 0);
	pemba_close(db);
}

/* ---------------------------------------------------------------- arrows */

static const char *FOLDER_SCHEMA = "definition user {}\n"
                                   "definition org {\n"
                                   "  relation member: user\n"
                                   "}\n"
                                   "definition folder {\n"
                                   "  relation parent: folder | org\n"
                                   "  relation viewer: user\n"
                                   "  permission view = viewer + parent->view\n"
                                   "}\n"
                                   "definition document {\n"
                                   "  relation folder: folder | org\n"
                                   "  relation viewer: user\n"
                                   "  permission view = viewer + folder->view\n"
                                   "  permission view_any = folder.any(view)\n"
                                   "  permission view_all = folder.all(view)\n"
                                   "  permission in_org = folder->member\n"
                                   "}\n";

static void test_arrow_follows_tupleset_to_parent(void **state)
{
	const char *rels[] = {"document:d#folder@folder:f",
	                      "folder:f#viewer@user:anne", NULL};
	pemba_db *db = setup(FOLDER_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view@user:anne"), 1);
	assert_int_equal(check(db, "document:d#view@user:bob"), 0);
	assert_int_equal(check(db, "document:d#view_any@user:anne"), 1);
	pemba_close(db);
}

static void test_folder_chain_grants_from_the_top(void **state)
{
	const char *rels[] = {"document:d#folder@folder:f0",
	                      "folder:f0#parent@folder:f1",
	                      "folder:f1#parent@folder:f2",
	                      "folder:f2#parent@folder:f3",
	                      "folder:f3#viewer@user:anne",
	                      "folder:f1#viewer@user:bob",
	                      NULL};
	pemba_db *db = setup(FOLDER_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view@user:anne"), 1);
	assert_int_equal(check(db, "document:d#view@user:bob"), 1);
	assert_int_equal(check(db, "folder:f2#view@user:bob"), 0);
	assert_int_equal(check(db, "folder:f2#view@user:anne"), 1);
	pemba_close(db);
}

static void test_arrow_skips_subjects_without_the_target(void **state)
{
	/* org has no `view`, so that subject contributes false rather than
	 * an error; org has `member`, folder does not. */
	const char *rels[] = {
	    "document:d#folder@org:acme", "org:acme#member@user:anne",
	    "document:e#folder@folder:f", "folder:f#viewer@user:anne", NULL};
	pemba_db *db = setup(FOLDER_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view@user:anne"), 0);
	assert_int_equal(check(db, "document:d#in_org@user:anne"), 1);
	assert_int_equal(check(db, "document:e#in_org@user:anne"), 0);
	assert_int_equal(check(db, "document:e#view@user:anne"), 1);
	pemba_close(db);
}

static void test_arrow_all_needs_every_subject(void **state)
{
	const char *rels[] = {
	    "document:d#folder@folder:f1", "document:d#folder@folder:f2",
	    "folder:f1#viewer@user:anne",  "folder:f2#viewer@user:anne",
	    "folder:f1#viewer@user:bob",   NULL};
	pemba_db *db = setup(FOLDER_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view_all@user:anne"), 1);
	assert_int_equal(check(db, "document:d#view_all@user:bob"), 0);
	assert_int_equal(check(db, "document:d#view_any@user:bob"), 1);
	pemba_close(db);
}

static void test_arrow_all_with_zero_subjects_is_false(void **state)
{
	const char *rels[] = {"document:other#viewer@user:anne", NULL};
	pemba_db *db = setup(FOLDER_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view_all@user:anne"), 0);
	assert_int_equal(check(db, "document:d#view_any@user:anne"), 0);
	pemba_close(db);
}

static void test_arrow_all_with_a_subject_lacking_target_is_false(void **state)
{
	const char *rels[] = {"document:d#folder@folder:f1",
	                      "document:d#folder@org:acme",
	                      "folder:f1#viewer@user:anne", NULL};
	pemba_db *db = setup(FOLDER_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view_all@user:anne"), 0);
	assert_int_equal(check(db, "document:d#view_any@user:anne"), 1);
	pemba_close(db);
}

/* ------------------------------------------------------------ wildcards */

static const char *PUBLIC_SCHEMA = "definition user {}\n"
                                   "definition bot {}\n"
                                   "definition document {\n"
                                   "  relation viewer: user | user:* | bot\n"
                                   "  relation banned: user\n"
                                   "  relation owner: user\n"
                                   "  permission view = viewer - banned\n"
                                   "  permission edit = owner & viewer\n"
                                   "}\n";

static void test_wildcard_grants_every_subject_of_its_type(void **state)
{
	const char *rels[] = {"document:pub#viewer@user:*",
	                      "document:priv#viewer@bot:b1", NULL};
	pemba_db *db = setup(PUBLIC_SCHEMA, rels);
	assert_int_equal(check(db, "document:pub#viewer@user:anyone"), 1);
	assert_int_equal(check(db, "document:pub#view@user:anyone"), 1);
	/* user:* does not cover bots */
	assert_int_equal(check(db, "document:pub#view@bot:b2"), 0);
	assert_int_equal(check(db, "document:priv#view@user:anyone"), 0);
	assert_int_equal(check(db, "document:priv#view@bot:b1"), 1);
	pemba_close(db);
}

static void test_wildcard_with_exclusion_still_excludes(void **state)
{
	const char *rels[] = {"document:pub#viewer@user:*",
	                      "document:pub#banned@user:mallory",
	                      "document:pub#owner@user:anne", NULL};
	pemba_db *db = setup(PUBLIC_SCHEMA, rels);
	assert_int_equal(check(db, "document:pub#view@user:anne"), 1);
	assert_int_equal(check(db, "document:pub#view@user:mallory"), 0);
	assert_int_equal(check(db, "document:pub#edit@user:anne"), 1);
	assert_int_equal(check(db, "document:pub#edit@user:bob"), 0);
	pemba_close(db);
}

/* Found by the differential test (tests/diff): SpiceDB lets `group:*` grant
 * a userset subject of type group, not only group objects. */
static void test_wildcard_grants_userset_subjects_of_its_type(void **state)
{
	const char *schema_text = "definition user {}\n"
	                          "definition group {\n"
	                          "  relation member: user\n"
	                          "}\n"
	                          "definition document {\n"
	                          "  relation viewer: user | group:*\n"
	                          "  permission view = viewer\n"
	                          "}\n";
	const char *rels[] = {"document:d#viewer@group:*", NULL};
	pemba_db *db = setup(schema_text, rels);
	assert_int_equal(check(db, "document:d#viewer@group:eng#member"), 1);
	assert_int_equal(check(db, "document:d#view@group:eng#member"), 1);
	assert_int_equal(check(db, "document:d#view@group:eng"), 1);
	/* group:* is not user:* */
	assert_int_equal(check(db, "document:d#view@user:anne"), 0);
	assert_int_equal(check(db, "document:e#view@group:eng#member"), 0);
	pemba_close(db);
}

static void test_wildcard_subject_in_check_is_invalid(void **state)
{
	pemba_db *db = setup(PUBLIC_SCHEMA, NULL);
	pemba_error err;
	assert_int_equal(check_err(db, "document:pub#view@user:*", &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "wildcard"));
	pemba_close(db);
}

/* ------------------------------------------------------------- usersets */

static const char *GROUP_SCHEMA =
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | group#member\n"
    "  relation manager: user\n"
    "  permission admin = manager\n"
    "}\n"
    "definition document {\n"
    "  relation viewer: user | group#member | group#admin\n"
    "  permission view = viewer\n"
    "}\n";

static void test_nested_groups_grant_membership(void **state)
{
	const char *rels[] = {"document:d#viewer@group:all#member",
	                      "group:all#member@group:eng#member",
	                      "group:eng#member@group:backend#member",
	                      "group:backend#member@user:anne",
	                      "group:eng#member@user:bob",
	                      NULL};
	pemba_db *db = setup(GROUP_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view@user:anne"), 1);
	assert_int_equal(check(db, "document:d#view@user:bob"), 1);
	assert_int_equal(check(db, "document:d#view@user:carl"), 0);
	assert_int_equal(check(db, "group:eng#member@user:anne"), 1);
	assert_int_equal(check(db, "group:backend#member@user:bob"), 0);
	pemba_close(db);
}

static void test_userset_through_a_permission(void **state)
{
	const char *rels[] = {"document:d#viewer@group:eng#admin",
	                      "group:eng#manager@user:anne",
	                      "group:eng#member@user:bob", NULL};
	pemba_db *db = setup(GROUP_SCHEMA, rels);
	assert_int_equal(check(db, "document:d#view@user:anne"), 1);
	assert_int_equal(check(db, "document:d#view@user:bob"), 0);
	pemba_close(db);
}

static void test_subject_with_relation(void **state)
{
	const char *rels[] = {"document:d#viewer@group:all#member",
	                      "group:all#member@group:eng#member",
	                      "document:e#viewer@group:ops#member", NULL};
	pemba_db *db = setup(GROUP_SCHEMA, rels);
	/* direct row */
	assert_int_equal(check(db, "document:d#view@group:all#member"), 1);
	/* group:eng#member is inside group:all#member */
	assert_int_equal(check(db, "document:d#view@group:eng#member"), 1);
	assert_int_equal(check(db, "document:e#view@group:eng#member"), 0);
	/* the object group:eng itself is not its member set */
	assert_int_equal(check(db, "document:d#view@group:eng#admin"), 0);
	pemba_close(db);
}

static void test_userset_is_a_member_of_itself(void **state)
{
	pemba_db *db = setup(GROUP_SCHEMA, NULL);
	assert_int_equal(check(db, "group:eng#member@group:eng#member"), 1);
	assert_int_equal(check(db, "group:eng#admin@group:eng#admin"), 1);
	assert_int_equal(check(db, "group:eng#member@group:ops#member"), 0);
	pemba_close(db);
}

static void test_large_group_with_nested_group(void **state)
{
	pemba_db *db = setup(GROUP_SCHEMA, NULL);
	char buf[80][64];
	const char *rels[82];
	int k = 0;
	for (int i = 0; i < 80; i++) {
		snprintf(buf[i], sizeof(buf[i]), "group:big#member@user:u%d",
		         i);
		rels[k++] = buf[i];
	}
	rels[k++] = "group:big#member@group:small#member";
	rels[k] = NULL;
	touch(db, rels);
	const char *small[] = {"group:small#member@user:anne",
	                       "document:d#viewer@group:big#member", NULL};
	touch(db, small);
	assert_int_equal(check(db, "document:d#view@user:u79"), 1);
	assert_int_equal(check(db, "document:d#view@user:anne"), 1);
	assert_int_equal(check(db, "document:d#view@user:u80"), 0);
	pemba_close(db);
}

/* ---------------------------------------------------- depth and cycles */

static void write_group_chain(pemba_db *db, int n)
{
	/* group:g0 <- g1 <- ... <- g(n-1) <- user:anne, in chunks */
	for (int base = 0; base < n; base += 100) {
		char *rels[102];
		char buf[101][64];
		int k = 0;
		for (int i = base; i < n && i < base + 100; i++) {
			if (i + 1 < n)
				snprintf(buf[k], sizeof(buf[k]),
				         "group:g%d#member@group:g%d#member", i,
				         i + 1);
			else
				snprintf(buf[k], sizeof(buf[k]),
				         "group:g%d#member@user:anne", i);
			rels[k] = buf[k];
			k++;
		}
		rels[k] = NULL;
		touch(db, (const char *const *)rels);
	}
}

static void test_deep_chain_within_limit_is_granted(void **state)
{
	pemba_db *db = setup(GROUP_SCHEMA, NULL);
	write_group_chain(db, 40);
	assert_int_equal(check(db, "group:g0#member@user:anne"), 1);
	assert_int_equal(check(db, "group:g0#member@user:bob"), 0);
	pemba_close(db);
}

static void test_chain_deeper_than_limit_fails_with_depth_error(void **state)
{
	pemba_db *db = setup(GROUP_SCHEMA, NULL);
	write_group_chain(db, 60);
	pemba_error err;
	assert_int_equal(check_err(db, "group:g0#member@user:anne", &err),
	                 PEMBA_EDEPTH);
	assert_non_null(strstr(err.message, "max depth exceeded"));
	assert_int_equal(check_err(db, "group:g0#member@user:bob", &err),
	                 PEMBA_EDEPTH);
	/* from the middle of the chain the grant is within reach */
	assert_int_equal(check(db, "group:g30#member@user:anne"), 1);
	pemba_close(db);
}

/* Found by the differential test: a permission that only names another
 * relation (`permission member = direct`) is an alias, evaluated within the
 * same dispatch as SpiceDB does, so a chain of groups through it is as deep
 * as the chain of relations, not twice as deep. */
static const char *ALIAS_SCHEMA = "definition user {}\n"
                                  "definition group {\n"
                                  "  relation direct: user | group#member\n"
                                  "  permission member = direct\n"
                                  "  permission again = member\n"
                                  "}\n";

static void write_alias_chain(pemba_db *db, int n)
{
	/* group:g0 <- g1 <- ... <- g(n-1) <- user:anne */
	char *rels[101];
	char buf[100][64];
	assert_true(n <= 100);
	for (int i = 0; i < n; i++) {
		if (i + 1 < n)
			snprintf(buf[i], sizeof(buf[i]),
			         "group:g%d#direct@group:g%d#member", i, i + 1);
		else
			snprintf(buf[i], sizeof(buf[i]),
			         "group:g%d#direct@user:anne", i);
		rels[i] = buf[i];
	}
	rels[n] = NULL;
	touch(db, (const char *const *)rels);
}

static void test_alias_permission_costs_no_depth(void **state)
{
	pemba_db *db = setup(ALIAS_SCHEMA, NULL);
	write_alias_chain(db, 55);
	/* g5 .. g54: 50 groups, one dispatch each, as SpiceDB counts */
	assert_int_equal(check(db, "group:g5#member@user:anne"), 1);
	assert_int_equal(check(db, "group:g5#again@user:anne"), 1);
	assert_int_equal(check(db, "group:g5#direct@user:anne"), 1);
	/* 51 groups: one too many */
	pemba_error err;
	assert_int_equal(check_err(db, "group:g4#member@user:anne", &err),
	                 PEMBA_EDEPTH);
	assert_int_equal(check_err(db, "group:g4#direct@user:anne", &err),
	                 PEMBA_EDEPTH);
	pemba_close(db);
}

static void test_alias_permission_keeps_self_membership(void **state)
{
	/* With a subject of the resource's type the alias is not taken, so
	 * the userset-is-a-member-of-itself rule still sees `member`. */
	pemba_db *db = setup(ALIAS_SCHEMA, NULL);
	assert_int_equal(check(db, "group:g#member@group:g#member"), 1);
	assert_int_equal(check(db, "group:g#again@group:g#member"), 1);
	assert_int_equal(check(db, "group:g#direct@group:g#member"), 0);
	pemba_close(db);
}

static void test_unresolved_cycle_fails_with_depth_error(void **state)
{
	const char *rels[] = {"group:a#member@group:b#member",
	                      "group:b#member@group:a#member", NULL};
	pemba_db *db = setup(GROUP_SCHEMA, rels);
	pemba_error err;
	assert_int_equal(check_err(db, "group:a#member@user:anne", &err),
	                 PEMBA_EDEPTH);
	assert_non_null(strstr(err.message, "max depth exceeded"));
	assert_non_null(strstr(err.message, "cycle"));
	pemba_close(db);
}

static void test_cycle_with_a_grant_resolves_true(void **state)
{
	const char *rels[] = {"group:a#member@group:b#member",
	                      "group:b#member@group:a#member",
	                      "group:b#member@user:anne",
	                      "document:d#viewer@group:a#member", NULL};
	pemba_db *db = setup(GROUP_SCHEMA, rels);
	assert_int_equal(check(db, "group:a#member@user:anne"), 1);
	assert_int_equal(check(db, "group:b#member@user:anne"), 1);
	assert_int_equal(check(db, "document:d#view@user:anne"), 1);
	pemba_close(db);
}

static void test_self_referencing_relationship_without_grant(void **state)
{
	/* group:a#member@group:a#member loops on itself, as SpiceDB's
	 * max-depth example does. */
	const char *rels[] = {"group:a#member@group:a#member",
	                      "group:a#member@user:bob", NULL};
	pemba_db *db = setup(GROUP_SCHEMA, rels);
	pemba_error err;
	assert_int_equal(check(db, "group:a#member@user:bob"), 1);
	assert_int_equal(check_err(db, "group:a#member@user:anne", &err),
	                 PEMBA_EDEPTH);
	pemba_close(db);
}

static void test_cycle_under_intersection_with_false_branch(void **state)
{
	/* (member & manager): manager is false for anne, which decides
	 * the intersection whatever the cycle would say. */
	const char *text = "definition user {}\n"
	                   "definition group {\n"
	                   "  relation member: user | group#member\n"
	                   "  relation manager: user\n"
	                   "  permission both = member & manager\n"
	                   "  permission either = member + manager\n"
	                   "}\n";
	const char *rels[] = {"group:a#member@group:b#member",
	                      "group:b#member@group:a#member",
	                      "group:a#manager@user:boss", NULL};
	pemba_db *db = setup(text, rels);
	pemba_error err;
	assert_int_equal(check(db, "group:a#both@user:anne"), 0);
	assert_int_equal(check(db, "group:a#either@user:boss"), 1);
	assert_int_equal(check_err(db, "group:a#either@user:anne", &err),
	                 PEMBA_EDEPTH);
	pemba_close(db);
}

static void test_cyclic_folders_with_grant_outside_cycle(void **state)
{
	const char *rels[] = {
	    "folder:x#parent@folder:y", "folder:y#parent@folder:x",
	    "folder:y#parent@folder:top", "folder:top#viewer@user:anne", NULL};
	pemba_db *db = setup(FOLDER_SCHEMA, rels);
	assert_int_equal(check(db, "folder:x#view@user:anne"), 1);
	assert_int_equal(check(db, "folder:y#view@user:anne"), 1);
	pemba_close(db);
}

/* --------------------------------------------------------------- errors */

static void test_unknown_names_are_precondition_errors(void **state)
{
	pemba_db *db = setup(DOC_SCHEMA, NULL);
	pemba_error err;
	assert_int_equal(check_err(db, "widget:1#view@user:anne", &err),
	                 PEMBA_EPRECONDITION);
	assert_string_equal(err.message,
	                    "object definition `widget` not found");
	assert_int_equal(check_err(db, "document:1#viewr@user:anne", &err),
	                 PEMBA_EPRECONDITION);
	assert_string_equal(err.message,
	                    "relation/permission `viewr` not found under "
	                    "definition `document`");
	assert_int_equal(check_err(db, "document:1#any@robot:r2", &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "`robot` not found"));
	assert_int_equal(check_err(db, "document:1#any@user:anne#friend", &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "`friend` not found"));
	pemba_close(db);
}

static void test_malformed_request_is_invalid(void **state)
{
	pemba_db *db = setup(DOC_SCHEMA, NULL);
	pemba_error err;
	assert_int_equal(check_err(db, "document:bad id#any@user:anne", &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "bad id"));
	assert_int_equal(check_err(db, "Document:1#any@user:anne", &err),
	                 PEMBA_EINVAL);
	pemba_close(db);
}

static void test_check_without_schema_names_the_definition(void **state)
{
	pemba_db *db = open_db();
	pemba_error err;
	assert_int_equal(check_err(db, "document:1#view@user:anne", &err),
	                 PEMBA_EPRECONDITION);
	assert_string_equal(err.message,
	                    "object definition `document` not found");
	pemba_close(db);
}

/* ----------------------------------------------------- engine internals */

/* A raw store holding `schema_text` and `rels` (written in one
 * transaction, caveat `caveat` on every row if non-NULL), for tests that
 * call the engine directly and look at its statistics. */
static store *raw_store(const char *schema_text, const char *const *rels,
                        const char *caveat, pemba_revision *rev)
{
	pemba_error err;
	store *st;
	assert_int_equal(
	    store_open(pg_fixture_uri("sqlite::memory:"), NULL, &st, &err), 0);
	store_txn *t;
	assert_int_equal(store_txn_begin(st, &t, rev, &err), 0);
	assert_int_equal(
	    store_txn_write_schema(t, schema_text, strlen(schema_text), &err),
	    0);
	for (int i = 0; rels[i]; i++) {
		test_rel tr;
		test_rel_parse(&tr, rels[i]);
		store_rel sr = {
		    .resource_type = tr.rel.resource_type,
		    .resource_id = tr.rel.resource_id,
		    .relation = tr.rel.relation,
		    .subject_type = tr.rel.subject_type,
		    .subject_id = tr.rel.subject_id,
		    .subject_relation =
		        tr.rel.subject_relation ? tr.rel.subject_relation : "",
		    .caveat_name = caveat ? caveat : "",
		    .caveat_context = "",
		};
		assert_int_equal(store_txn_touch(t, &sr, &err), 0);
	}
	assert_int_equal(store_txn_commit(t, &err), 0);
	return st;
}

static int engine_run(store *st, const char *schema_text, pemba_revision rev,
                      const char *subject_id, engine_stats *stats,
                      pemba_error *err)
{
	schema *sc;
	assert_int_equal(
	    schema_compile(schema_text, strlen(schema_text), &sc, err), 0);
	pemba_check_request req = {
	    .resource_type = "document",
	    .resource_id = "d",
	    .permission = "view",
	    .subject_type = "user",
	    .subject_id = subject_id,
	};
	pemba_permissionship p = 0;
	int rc = engine_check(st, sc, rev, &req, &p, stats, err);
	schema_free(sc);
	if (rc < 0)
		return rc;
	return p == PEMBA_HAS_PERMISSION;
}

static void test_memo_shares_subproblems_within_a_request(void **state)
{
	/* A diamond: d's viewers are groups a and b, both containing
	 * group:shared, which is therefore reached twice but evaluated
	 * once. */
	const char *rels[] = {"document:d#viewer@group:a#member",
	                      "document:d#viewer@group:b#member",
	                      "group:a#member@group:shared#member",
	                      "group:b#member@group:shared#member", NULL};
	pemba_revision rev;
	store *st = raw_store(GROUP_SCHEMA, rels, NULL, &rev);
	engine_stats stats;
	pemba_error err;
	assert_int_equal(
	    engine_run(st, GROUP_SCHEMA, rev, "nobody", &stats, &err), 0);
	/* viewer (view is an alias of it, evaluated in the same dispatch),
	 * a#member, b#member, shared#member */
	assert_int_equal(stats.dispatches, 4);
	assert_int_equal(stats.memo_hits, 1);
	/* viewer: the user probe, then rows of group#member and group#admin;
	 * each group#member: the user probe and its group#member rows.  No
	 * wildcard probe: the schema allows no `user:*` here. */
	assert_int_equal(stats.queries, 3 + 2 * 3);
	store_close(st);
}

static void test_row_with_caveat_missing_from_schema_fails(void **state)
{
	const char *rels[] = {"document:d#viewer@user:anne", NULL};
	pemba_revision rev;
	store *st = raw_store(GROUP_SCHEMA, rels, "only_weekdays", &rev);
	pemba_error err;
	assert_int_equal(engine_run(st, GROUP_SCHEMA, rev, "anne", NULL, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "caveat `only_weekdays`"));
	/* a check that never reaches the row is unaffected */
	assert_int_equal(engine_run(st, GROUP_SCHEMA, rev, "bob", NULL, &err),
	                 0);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_union_grants_through_either_branch),
	    cmocka_unit_test(test_intersection_needs_every_branch),
	    cmocka_unit_test(test_exclusion_removes_subtracted_subjects),
	    cmocka_unit_test(test_nested_parenthesized_expression),
	    cmocka_unit_test(test_nil_is_never_granted),
	    cmocka_unit_test(test_checking_a_relation_directly),
	    cmocka_unit_test(test_arrow_follows_tupleset_to_parent),
	    cmocka_unit_test(test_folder_chain_grants_from_the_top),
	    cmocka_unit_test(test_arrow_skips_subjects_without_the_target),
	    cmocka_unit_test(test_arrow_all_needs_every_subject),
	    cmocka_unit_test(test_arrow_all_with_zero_subjects_is_false),
	    cmocka_unit_test(
	        test_arrow_all_with_a_subject_lacking_target_is_false),
	    cmocka_unit_test(test_wildcard_grants_every_subject_of_its_type),
	    cmocka_unit_test(test_wildcard_with_exclusion_still_excludes),
	    cmocka_unit_test(test_wildcard_grants_userset_subjects_of_its_type),
	    cmocka_unit_test(test_wildcard_subject_in_check_is_invalid),
	    cmocka_unit_test(test_nested_groups_grant_membership),
	    cmocka_unit_test(test_userset_through_a_permission),
	    cmocka_unit_test(test_subject_with_relation),
	    cmocka_unit_test(test_userset_is_a_member_of_itself),
	    cmocka_unit_test(test_large_group_with_nested_group),
	    cmocka_unit_test(test_deep_chain_within_limit_is_granted),
	    cmocka_unit_test(
	        test_chain_deeper_than_limit_fails_with_depth_error),
	    cmocka_unit_test(test_alias_permission_costs_no_depth),
	    cmocka_unit_test(test_alias_permission_keeps_self_membership),
	    cmocka_unit_test(test_unresolved_cycle_fails_with_depth_error),
	    cmocka_unit_test(test_cycle_with_a_grant_resolves_true),
	    cmocka_unit_test(test_self_referencing_relationship_without_grant),
	    cmocka_unit_test(test_cycle_under_intersection_with_false_branch),
	    cmocka_unit_test(test_cyclic_folders_with_grant_outside_cycle),
	    cmocka_unit_test(test_unknown_names_are_precondition_errors),
	    cmocka_unit_test(test_malformed_request_is_invalid),
	    cmocka_unit_test(test_check_without_schema_names_the_definition),
	    cmocka_unit_test(test_memo_shares_subproblems_within_a_request),
	    cmocka_unit_test(test_row_with_caveat_missing_from_schema_fails),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
