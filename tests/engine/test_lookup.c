/*
 * test_lookup.c -- LookupResources, LookupSubjects, ExpandPermissionTree and
 * CheckBulkPermissions through the public API over an in-memory SQLite
 * datastore: hand-made semantics cases (wildcards, exclusions,
 * intersections, arrows, nested groups, cycles, pagination) and a property
 * test tying both lookups to CheckPermission on random small datasets.
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
#include "pg_fixture.h"

/* ------------------------------------------------------------- helpers */

static pemba_db *open_db(void)
{
	pemba_db *db = NULL;
	pemba_error err;
	if (pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err) != 0)
		fail_msg("open: %s", err.message);
	return db;
}

static void write_schema(pemba_db *db, const char *text)
{
	pemba_error err;
	if (pemba_write_schema(db, text, strlen(text), NULL, &err) != 0)
		fail_msg("write schema: %s", err.message);
}

/* TOUCHes a NULL-terminated list of relationship strings in one write. */
static void touch(pemba_db *db, const char *const *rels)
{
	size_t n = 0;
	while (rels[n])
		n++;
	pemba_update *u = calloc(n + 1, sizeof(*u));
	char **storage = calloc(n + 1, sizeof(*storage));
	pemba_error err;
	for (size_t i = 0; i < n; i++) {
		if (pemba_parse_relationship(rels[i], &u[i].rel, &storage[i],
		                             &err) != 0)
			fail_msg("parse %s: %s", rels[i], err.message);
		u[i].op = PEMBA_OP_TOUCH;
	}
	if (n && pemba_write_relationships(db, u, n, NULL, 0, NULL, &err) != 0)
		fail_msg("write: %s", err.message);
	for (size_t i = 0; i < n; i++)
		pemba_free(storage[i]);
	free(storage);
	free(u);
}

/* Results joined by ",", with the last cursor seen. */
typedef struct collected {
	char text[8192];
	char cursor[4096];
	size_t n;
	size_t stop_after; /* 0: never stop */
} collected;

static void append(collected *c, const char *s)
{
	if (c->text[0])
		strcat(c->text, ",");
	strcat(c->text, s);
}

static int on_resource(void *ctx, const char *id, pemba_permissionship p,
                       const char *cursor)
{
	collected *c = ctx;
	assert_int_equal(p, PEMBA_HAS_PERMISSION);
	append(c, id);
	snprintf(c->cursor, sizeof(c->cursor), "%s", cursor);
	c->n++;
	return c->stop_after && c->n >= c->stop_after;
}

static int on_subject(void *ctx, const char *id, pemba_permissionship p,
                      const char *const *excluded, size_t nexcluded,
                      const char *cursor)
{
	collected *c = ctx;
	assert_int_equal(p, PEMBA_HAS_PERMISSION);
	char buf[2048];
	snprintf(buf, sizeof(buf), "%s", id);
	for (size_t i = 0; i < nexcluded; i++) {
		strcat(buf, i ? " " : "[-");
		strcat(buf, excluded[i]);
	}
	if (nexcluded)
		strcat(buf, "]");
	append(c, buf);
	snprintf(c->cursor, sizeof(c->cursor), "%s", cursor);
	c->n++;
	return c->stop_after && c->n >= c->stop_after;
}

/* LookupResources of type#perm for "type:id[#rel]"; returns the ids. */
static const char *lr(pemba_db *db, const char *type, const char *perm,
                      const char *subject)
{
	static collected c;
	memset(&c, 0, sizeof(c));
	char st[256], sid[256], srel[256] = "";
	if (sscanf(subject, "%255[^:]:%255[^#]#%255s", st, sid, srel) < 2)
		fail_msg("bad subject %s", subject);
	pemba_lookup_resources_request req = {
	    .resource_type = type,
	    .permission = perm,
	    .subject_type = st,
	    .subject_id = sid,
	    .subject_relation = srel,
	};
	pemba_error err;
	if (pemba_lookup_resources(db, 0, &req, on_resource, &c, NULL, &err))
		fail_msg("lookup resources: %s", err.message);
	return c.text;
}

static const char *ls_opts(pemba_db *db, const char *resource, const char *perm,
                           const char *subject_type, int exclude_wildcards)
{
	static collected c;
	memset(&c, 0, sizeof(c));
	char rt[256], rid[256], st[256], srel[256] = "";
	if (sscanf(resource, "%255[^:]:%255s", rt, rid) != 2)
		fail_msg("bad resource %s", resource);
	sscanf(subject_type, "%255[^#]#%255s", st, srel);
	pemba_lookup_subjects_request req = {
	    .resource_type = rt,
	    .resource_id = rid,
	    .permission = perm,
	    .subject_type = st,
	    .subject_relation = srel,
	    .exclude_wildcards = exclude_wildcards,
	};
	pemba_error err;
	if (pemba_lookup_subjects(db, 0, &req, on_subject, &c, NULL, &err))
		fail_msg("lookup subjects: %s", err.message);
	return c.text;
}

static const char *ls(pemba_db *db, const char *resource, const char *perm,
                      const char *subject_type)
{
	return ls_opts(db, resource, perm, subject_type, 0);
}

static const char *const GROUPS_SCHEMA =
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | group#member\n"
    "  relation manager: user\n"
    "}\n"
    "definition folder {\n"
    "  relation parent: folder\n"
    "  relation viewer: user | group#member\n"
    "  permission view = viewer + parent->view\n"
    "}\n"
    "definition document {\n"
    "  relation parent: folder\n"
    "  relation viewer: user | user:* | group#member\n"
    "  relation editor: user | group#member\n"
    "  relation banned: user | user:* | group#member\n"
    "  permission edit = editor\n"
    "  permission view = viewer + edit + parent->view\n"
    "  permission safe_view = view - banned\n"
    "  permission both = viewer & editor\n"
    "}\n";

/* --------------------------------------------------- LookupResources */

static void test_lookup_resources_follows_groups_and_arrows(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	touch(db, (const char *const[]){"group:eng#member@user:anne",
	                                "group:all#member@group:eng#member",
	                                "document:d1#viewer@group:all#member",
	                                "document:d2#editor@user:anne",
	                                "folder:f1#viewer@group:eng#member",
	                                "folder:f2#parent@folder:f1",
	                                "document:d3#parent@folder:f2",
	                                "document:d4#viewer@user:bob", NULL});
	assert_string_equal(lr(db, "document", "view", "user:anne"),
	                    "d1,d2,d3");
	assert_string_equal(lr(db, "document", "edit", "user:anne"), "d2");
	assert_string_equal(lr(db, "folder", "view", "user:anne"), "f1,f2");
	assert_string_equal(lr(db, "document", "view", "user:bob"), "d4");
	assert_string_equal(lr(db, "document", "view", "user:carl"), "");
	/* A userset subject: the group's members as a set. */
	assert_string_equal(lr(db, "document", "view", "group:eng#member"),
	                    "d1,d3");
	/* A userset is a member of itself. */
	assert_string_equal(lr(db, "group", "member", "group:eng#member"),
	                    "all,eng");
	pemba_close(db);
}

static void
test_lookup_resources_wildcards_exclusions_intersections(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	touch(db,
	      (const char *const[]){
	          "document:pub#viewer@user:*", "document:pub2#viewer@user:*",
	          "document:pub2#banned@user:eve", "document:x#viewer@user:eve",
	          "document:x#editor@user:eve", "document:y#viewer@user:eve",
	          "document:z#viewer@user:eve", "document:z#banned@user:*",
	          NULL});
	assert_string_equal(lr(db, "document", "view", "user:someone"),
	                    "pub,pub2");
	assert_string_equal(lr(db, "document", "safe_view", "user:someone"),
	                    "pub,pub2");
	assert_string_equal(lr(db, "document", "safe_view", "user:eve"),
	                    "pub,x,y");
	assert_string_equal(lr(db, "document", "both", "user:eve"), "x");
	pemba_close(db);
}

static void test_lookup_resources_paginates_exactly(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	const char *rels[40];
	char buf[40][64];
	for (int i = 0; i < 37; i++) {
		snprintf(buf[i], sizeof(buf[i]), "document:d%02d#viewer@%s", i,
		         i % 3 ? "user:anne" : "group:g#member");
		rels[i] = buf[i];
	}
	rels[37] = "group:g#member@user:anne";
	rels[38] = "document:other#viewer@user:bob";
	rels[39] = NULL;
	touch(db, rels);

	char all[8192] = "";
	char cursor[4096] = "";
	int pages = 0;
	for (;;) {
		collected c;
		memset(&c, 0, sizeof(c));
		pemba_lookup_resources_request req = {
		    .resource_type = "document",
		    .permission = "view",
		    .subject_type = "user",
		    .subject_id = "anne",
		    .limit = 5,
		    .cursor = cursor,
		};
		pemba_error err;
		assert_int_equal(pemba_lookup_resources(
		                     db, 0, &req, on_resource, &c, NULL, &err),
		                 0);
		assert_true(c.n <= 5);
		if (c.n == 0)
			break;
		if (all[0])
			strcat(all, ",");
		strcat(all, c.text);
		strcpy(cursor, c.cursor);
		pages++;
	}
	assert_int_equal(pages, 8);
	char want[8192] = "";
	for (int i = 0; i < 37; i++) {
		char id[16];
		snprintf(id, sizeof(id), "%sd%02d", i ? "," : "", i);
		strcat(want, id);
	}
	assert_string_equal(all, want);

	/* Stopping early from the callback, then resuming. */
	collected c;
	memset(&c, 0, sizeof(c));
	c.stop_after = 3;
	pemba_lookup_resources_request req = {.resource_type = "document",
	                                      .permission = "view",
	                                      .subject_type = "user",
	                                      .subject_id = "anne"};
	pemba_error err;
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &req, on_resource, &c, NULL, &err),
	    0);
	assert_string_equal(c.text, "d00,d01,d02");
	req.cursor = c.cursor;
	collected rest;
	memset(&rest, 0, sizeof(rest));
	rest.stop_after = 1;
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &req, on_resource, &rest, NULL, &err),
	    0);
	assert_string_equal(rest.text, "d03");

	req.cursor = "garbage";
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &req, on_resource, &rest, NULL, &err),
	    PEMBA_EINVAL);
	pemba_close(db);
}

static void test_lookup_resources_rejects_bad_requests(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	collected c;
	memset(&c, 0, sizeof(c));
	pemba_error err;
	pemba_revision at = 99;
	pemba_lookup_resources_request req = {.resource_type = "nope",
	                                      .permission = "view",
	                                      .subject_type = "user",
	                                      .subject_id = "anne"};
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &req, on_resource, &c, &at, &err),
	    PEMBA_EPRECONDITION);
	assert_string_equal(err.message, "object definition `nope` not found");
	req.resource_type = "document";
	req.permission = "nope";
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &req, on_resource, &c, &at, &err),
	    PEMBA_EPRECONDITION);
	req.permission = "view";
	req.subject_id = "*";
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &req, on_resource, &c, &at, &err),
	    PEMBA_EINVAL);
	req.subject_id = "anne";
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &req, on_resource, &c, &at, &err), 0);
	assert_int_equal(at, 1); /* the schema write */
	pemba_close(db);
}

/* ---------------------------------------------------- LookupSubjects */

static void test_lookup_subjects_nested_groups_and_arrows(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	touch(db, (const char *const[]){"group:eng#member@user:anne",
	                                "group:eng#member@user:bob",
	                                "group:all#member@group:eng#member",
	                                "group:all#member@user:carl",
	                                "folder:f1#viewer@group:all#member",
	                                "folder:f2#parent@folder:f1",
	                                "document:d#parent@folder:f2",
	                                "document:d#editor@user:dan", NULL});
	assert_string_equal(ls(db, "document:d", "view", "user"),
	                    "anne,bob,carl,dan");
	assert_string_equal(ls(db, "document:d", "edit", "user"), "dan");
	assert_string_equal(ls(db, "document:d", "view", "group#member"),
	                    "all,eng");
	assert_string_equal(ls(db, "group:all", "member", "group#member"),
	                    "all,eng");
	pemba_close(db);
}

static const char *const WILDCARD_SCHEMA =
    "definition user {}\n"
    "definition document {\n"
    "  relation aaa: user | user:*\n"
    "  relation bbb: user | user:*\n"
    "  relation ccc: user | user:*\n"
    "  permission a_minus_c = aaa - ccc\n"
    "  permission b_minus_c = bbb - ccc\n"
    "  permission a_or_b = aaa + bbb\n"
    "  permission a_and_b = aaa & bbb\n"
    "  permission a_minus_b = aaa - bbb\n"
    "  permission a_minus_bc = aaa - b_minus_c\n"
    "  permission union_of_exclusions = a_minus_c + b_minus_c\n"
    "  permission and_of_exclusion = a_minus_c & bbb\n"
    "}\n";

static void test_lookup_subjects_wildcard_algebra(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, WILDCARD_SCHEMA);
	touch(db, (const char *const[]){
	              "document:1#aaa@user:*", "document:1#aaa@user:tom",
	              "document:1#bbb@user:jerry", "document:1#bbb@user:tom",
	              "document:1#ccc@user:tom", "document:1#ccc@user:spike",
	              "document:2#aaa@user:*", "document:2#bbb@user:*",
	              "document:2#ccc@user:x", NULL});
	/* A wildcard and a concrete subject are both reported. */
	assert_string_equal(ls(db, "document:1", "aaa", "user"), "*,tom");
	assert_string_equal(ls_opts(db, "document:1", "aaa", "user", 1), "tom");
	/* Exclusion from a wildcard lists the excluded subjects. */
	assert_string_equal(ls(db, "document:1", "a_minus_c", "user"),
	                    "*[-spike tom]");
	assert_string_equal(ls(db, "document:1", "b_minus_c", "user"), "jerry");
	/* A concrete member removes its exclusion from a union. */
	assert_string_equal(ls(db, "document:1", "union_of_exclusions", "user"),
	                    "*[-spike tom],jerry");
	assert_string_equal(ls(db, "document:1", "a_or_b", "user"),
	                    "*,jerry,tom");
	/* Intersection with a wildcard keeps the other side's concretes. */
	assert_string_equal(ls(db, "document:1", "a_and_b", "user"),
	                    "jerry,tom");
	assert_string_equal(ls(db, "document:1", "and_of_exclusion", "user"),
	                    "jerry");
	assert_string_equal(ls(db, "document:1", "a_minus_b", "user"),
	                    "*[-jerry tom]");
	/* Wildcard minus wildcard: only what the subtracted one excludes. */
	assert_string_equal(ls(db, "document:2", "a_minus_b", "user"), "");
	assert_string_equal(ls(db, "document:2", "a_minus_bc", "user"), "x");
	assert_string_equal(ls(db, "document:2", "a_and_b", "user"), "*");
	assert_string_equal(ls(db, "document:2", "a_minus_c", "user"), "*[-x]");
	pemba_close(db);
}

static void test_lookup_subjects_cycle_finds_every_member(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	touch(db, (const char *const[]){
	              "group:a#member@group:b#member",
	              "group:b#member@group:c#member",
	              "group:c#member@group:a#member", "group:a#member@user:1",
	              "group:b#member@user:2", "group:c#member@user:3",
	              "document:d#viewer@group:b#member", NULL});
	assert_string_equal(ls(db, "document:d", "view", "user"), "1,2,3");
	assert_string_equal(ls(db, "group:c", "member", "user"), "1,2,3");
	assert_string_equal(ls(db, "group:a", "member", "group#member"),
	                    "a,b,c");
	assert_string_equal(lr(db, "group", "member", "user:2"), "a,b,c");
	pemba_close(db);
}

static void test_lookup_subjects_paginates_exactly(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, WILDCARD_SCHEMA);
	touch(db, (const char *const[]){
	              "document:1#aaa@user:*", "document:1#aaa@user:u3",
	              "document:1#aaa@user:u1", "document:1#aaa@user:u2",
	              "document:1#bbb@user:u4", NULL});
	char all[1024] = "", cursor[256] = "";
	for (int page = 0; page < 10; page++) {
		collected c;
		memset(&c, 0, sizeof(c));
		pemba_lookup_subjects_request req = {
		    .resource_type = "document",
		    .resource_id = "1",
		    .permission = "a_or_b",
		    .subject_type = "user",
		    .limit = 2,
		    .cursor = cursor,
		};
		pemba_error err;
		assert_int_equal(pemba_lookup_subjects(db, 0, &req, on_subject,
		                                       &c, NULL, &err),
		                 0);
		if (c.n == 0)
			break;
		assert_true(c.n <= 2);
		if (all[0])
			strcat(all, ",");
		strcat(all, c.text);
		strcpy(cursor, c.cursor);
	}
	assert_string_equal(all, "*,u1,u2,u3,u4");
	pemba_close(db);
}

/* ------------------------------------------------------------- Expand */

static void print_tree(const pemba_expand_node *n, char *out)
{
	static const char *const kinds[] = {"leaf", "union", "intersection",
	                                    "exclusion"};
	char buf[512];
	snprintf(buf, sizeof(buf), "%s(%s:%s#%s)", kinds[n->kind],
	         n->object_type, n->object_id, n->relation);
	strcat(out, buf);
	if (n->kind == PEMBA_EXPAND_LEAF) {
		strcat(out, "[");
		for (size_t i = 0; i < n->nsubjects; i++) {
			snprintf(buf, sizeof(buf), "%s%s:%s%s%s", i ? " " : "",
			         n->subjects[i].type, n->subjects[i].id,
			         n->subjects[i].relation ? "#" : "",
			         n->subjects[i].relation
			             ? n->subjects[i].relation
			             : "");
			strcat(out, buf);
		}
		strcat(out, "]");
		return;
	}
	strcat(out, "{");
	for (size_t i = 0; i < n->nchildren; i++) {
		if (i)
			strcat(out, " ");
		print_tree(n->children[i], out);
	}
	strcat(out, "}");
}

static void test_expand_builds_the_permission_tree(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	touch(db, (const char *const[]){"document:d#viewer@group:eng#member",
	                                "document:d#viewer@user:anne",
	                                "document:d#parent@folder:f",
	                                "folder:f#viewer@user:bob",
	                                "document:d#banned@user:*", NULL});
	pemba_expand_node *t;
	pemba_error err;
	pemba_revision at = 0;
	assert_int_equal(
	    pemba_expand(db, 0, "document", "d", "safe_view", &t, &at, &err),
	    0);
	assert_int_equal(at, 2);
	char out[4096] = "";
	print_tree(t, out);
	assert_string_equal(
	    out, "exclusion(document:d#safe_view){"
	         "union(document:d#view){"
	         "leaf(document:d#viewer)[user:anne group:eng#member] "
	         "union(document:d#edit){leaf(document:d#editor)[]} "
	         "union(document:d#view){"
	         "union(folder:f#view){leaf(folder:f#viewer)[user:bob] "
	         "union(folder:f#view){}}}} "
	         "leaf(document:d#banned)[user:*]}");
	pemba_expand_free(t);

	/* A relation is a leaf; unknown names are refused. */
	assert_int_equal(
	    pemba_expand(db, 0, "document", "d", "parent", &t, NULL, &err), 0);
	out[0] = '\0';
	print_tree(t, out);
	assert_string_equal(out, "leaf(document:d#parent)[folder:f]");
	pemba_expand_free(t);
	assert_int_equal(
	    pemba_expand(db, 0, "document", "d", "nope", &t, NULL, &err),
	    PEMBA_EPRECONDITION);
	assert_null(t);
	pemba_close(db);
}

static void test_expand_fails_on_arrow_cycle_with_depth_error(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	touch(db, (const char *const[]){"folder:a#parent@folder:b",
	                                "folder:b#parent@folder:a", NULL});
	pemba_expand_node *t;
	pemba_error err;
	assert_int_equal(
	    pemba_expand(db, 0, "folder", "a", "view", &t, NULL, &err),
	    PEMBA_EDEPTH);
	pemba_close(db);
}

/* --------------------------------------------------------- bulk check */

static void test_check_bulk_answers_each_item_on_its_own(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, GROUPS_SCHEMA);
	touch(db, (const char *const[]){"document:d#viewer@user:anne", NULL});
	pemba_check_request items[] = {
	    {"document", "d", "view", "user", "anne", NULL, NULL},
	    {"document", "d", "nope", "user", "anne", NULL, NULL},
	    {"document", "d", "view", "user", "bob", NULL, NULL},
	    {"document", "d", "view", "user", "*", NULL, NULL},
	    {"nope", "d", "view", "user", "anne", NULL, NULL},
	};
	pemba_check_result r[5];
	pemba_error err;
	pemba_revision at = 0;
	assert_int_equal(pemba_check_bulk(db, 0, items, 5, r, &at, &err), 0);
	assert_int_equal(at, 2);
	assert_int_equal(r[0].error.code, 0);
	assert_int_equal(r[0].permissionship, PEMBA_HAS_PERMISSION);
	assert_int_equal(r[1].error.code, PEMBA_EPRECONDITION);
	assert_non_null(strstr(r[1].error.message, "nope"));
	assert_int_equal(r[2].error.code, 0);
	assert_int_equal(r[2].permissionship, PEMBA_NO_PERMISSION);
	assert_int_equal(r[3].error.code, PEMBA_EINVAL);
	assert_int_equal(r[4].error.code, PEMBA_EPRECONDITION);
	/* A bad revision fails the whole request. */
	assert_int_equal(pemba_check_bulk(db, 99, items, 5, r, NULL, &err),
	                 PEMBA_EREVISION);
	pemba_close(db);
}

/* ------------------------------------------------------ property test */

static const char *const PROPERTY_SCHEMA =
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | group#member\n"
    "  relation owner: user\n"
    "  permission admin = owner & member\n"
    "}\n"
    "definition folder {\n"
    "  relation parent: folder\n"
    "  relation viewer: user | group#member\n"
    "  relation banned: user | group#member\n"
    "  permission view = (viewer + parent->view) - banned\n"
    "}\n"
    "definition document {\n"
    "  relation parent: folder\n"
    "  relation viewer: user | user:* | group#member\n"
    "  relation editor: user | group#member | group#owner\n"
    "  relation banned: user | user:* | group#member\n"
    "  permission edit = editor - banned\n"
    "  permission view = viewer + edit + parent->view\n"
    "  permission strict = view & editor\n"
    "  permission all_view = parent.all(view)\n"
    "  permission safe = view - banned\n"
    "}\n";

#define NIDS 4

static unsigned rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)(*s >> 33);
}

/* A random acyclic relationship (groups and folders only point at lower
 * ids), as a string in buf. */
static void random_rel(uint64_t *s, char *buf, size_t n)
{
	int r = (int)(rnd(s) % NIDS), o = (int)(rnd(s) % NIDS);
	int lower = r ? (int)(rnd(s) % (unsigned)r) : -1;
	switch (rnd(s) % 14) {
	case 0:
	case 1:
		snprintf(buf, n, "group:g%d#member@user:u%d", r, o);
		break;
	case 2:
		if (lower >= 0) {
			snprintf(buf, n, "group:g%d#member@group:g%d#member", r,
			         lower);
			break;
		}
		/* fall through */
	case 3:
		snprintf(buf, n, "group:g%d#owner@user:u%d", r, o);
		break;
	case 4:
		snprintf(buf, n, "folder:f%d#viewer@user:u%d", r, o);
		break;
	case 5:
		if (lower >= 0) {
			snprintf(buf, n, "folder:f%d#parent@folder:f%d", r,
			         lower);
			break;
		}
		/* fall through */
	case 6:
		snprintf(buf, n, "folder:f%d#%s@group:g%d#member", r,
		         rnd(s) % 3 ? "viewer" : "banned", o);
		break;
	case 7:
		snprintf(buf, n, "document:d%d#parent@folder:f%d", r, o);
		break;
	case 8:
		snprintf(buf, n, "document:d%d#viewer@%s", r,
		         rnd(s) % 5 == 0 ? "user:*" : "user:u0");
		if (strstr(buf, "u0"))
			buf[strlen(buf) - 1] = (char)('0' + o);
		break;
	case 9:
		snprintf(buf, n, "document:d%d#viewer@group:g%d#member", r, o);
		break;
	case 10:
		snprintf(buf, n, "document:d%d#editor@user:u%d", r, o);
		break;
	case 11:
		snprintf(buf, n, "document:d%d#editor@group:g%d#%s", r, o,
		         rnd(s) % 2 ? "member" : "owner");
		break;
	case 12:
		snprintf(buf, n, "document:d%d#banned@user:u%d", r, o);
		break;
	default:
		if (rnd(s) % 3 == 0)
			snprintf(buf, n, "document:d%d#banned@user:*", r);
		else
			snprintf(buf, n, "document:d%d#banned@group:g%d#member",
			         r, o);
		break;
	}
}

static int check(pemba_db *db, const char *rt, const char *rid,
                 const char *perm, const char *st, const char *sid,
                 const char *srel)
{
	pemba_check_request req = {rt, rid, perm, st, sid, srel, NULL};
	pemba_permissionship p;
	pemba_error err;
	if (pemba_check_permission(db, 0, &req, &p, &err) != 0)
		fail_msg("check: %s", err.message);
	return p == PEMBA_HAS_PERMISSION;
}

/* Is `id` a member of a LookupSubjects answer (comma list, `*[-a b]`)? */
static int ls_contains(const char *answer, const char *id)
{
	char copy[8192];
	snprintf(copy, sizeof(copy), "%s", answer);
	int wildcard = 0, excluded = 0, concrete = 0;
	for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
		if (tok[0] == '*') {
			wildcard = 1;
			char *p = strstr(tok, "[-");
			if (p) {
				char *list = p + 2;
				list[strlen(list) - 1] = '\0';
				for (char *e = strtok_r(list, " ", &p); e;
				     e = strtok_r(NULL, " ", &p))
					if (strcmp(e, id) == 0)
						excluded = 1;
			}
		} else if (strcmp(tok, id) == 0) {
			concrete = 1;
		}
	}
	return concrete || (wildcard && !excluded);
}

/* Found by the differential test against SpiceDB (tests/diff, seeds 27
 * and 109): where SpiceDB's lookups differ from its own CheckPermission,
 * pemba's lookups follow its lookups. */
static void test_lookups_ignore_wildcards_for_userset_subjects(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, "definition user {}\n"
	                 "definition group {\n"
	                 "  relation member: user | group#member\n"
	                 "  relation owner: group:*\n"
	                 "}\n"
	                 "definition document {\n"
	                 "  relation viewer: user | group | group:*\n"
	                 "  permission view = viewer\n"
	                 "}\n");
	touch(db, (const char *const[]){"document:a#viewer@group:*",
	                                "document:b#viewer@group:g",
	                                "group:g#owner@group:*", NULL});
	/* A check lets group:* grant the userset group:g#member ... */
	assert_true(check(db, "document", "a", "view", "group", "g", "member"));
	/* ... SpiceDB's lookups do not. */
	assert_string_equal(lr(db, "document", "view", "group:g#member"), "");
	assert_string_equal(ls(db, "document:a", "view", "group#member"), "");
	/* Not even for the subject's own object (seed 29). */
	assert_true(check(db, "group", "g", "owner", "group", "g", "member"));
	assert_string_equal(lr(db, "group", "owner", "group:g#member"), "");
	/* For subject objects the wildcard counts as always. */
	assert_string_equal(lr(db, "document", "view", "group:g"), "a,b");
	assert_string_equal(ls(db, "document:a", "view", "group"), "*");
	pemba_close(db);
}

static void
test_lookup_subjects_all_arrow_skips_types_without_target(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, "definition user {}\n"
	                 "definition group {\n"
	                 "  relation member: user | group#member\n"
	                 "  permission view = member.all(member)\n"
	                 "}\n");
	touch(db, (const char *const[]){"group:b#member@group:a#member",
	                                "group:a#member@user:u",
	                                "group:b#member@user:c", NULL});
	/* user:c has no `member`: a check counts it as FALSE in .all() ... */
	assert_false(check(db, "group", "b", "view", "user", "u", NULL));
	/* ... SpiceDB's LookupSubjects intersects over group:a only. */
	assert_string_equal(ls(db, "group:b", "view", "user"), "u");
	pemba_close(db);
}

/* LookupResources for a userset subject `T:id#rel` starts where SpiceDB's
 * does (tests/diff: token.yaml, seeds 109 and 717). */
static void test_lookup_resources_walks_from_the_userset_subject(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	write_schema(db, "definition token {}\n"
	                 "definition user {\n"
	                 "  relation supertoken: token\n"
	                 "  relation direct_token: token\n"
	                 "  permission token = direct_token + supertoken\n"
	                 "}\n"
	                 "definition group {\n"
	                 "  relation member: user | group#member\n"
	                 "}\n"
	                 "definition folder {\n"
	                 "  relation viewer: user\n"
	                 "  relation owner: user | group | group:*\n"
	                 "  permission edit = viewer\n"
	                 "}\n"
	                 "definition resource {\n"
	                 "  relation admin: user#token | user#supertoken\n"
	                 "  relation parent: folder\n"
	                 "  permission edit = parent.any(edit)\n"
	                 "}\n");
	touch(db, (const char *const[]){"resource:r1#admin@user:u#token",
	                                "resource:r2#parent@folder:f",
	                                "folder:g#owner@group:a",
	                                "folder:g#owner@group:*", NULL});
	/* user:u#supertoken is in user:u#token, which r1 names. */
	assert_string_equal(lr(db, "resource", "admin", "user:u#supertoken"),
	                    "r1");
	/* folder:f#edit through the arrow on the object folder:f. */
	assert_string_equal(lr(db, "resource", "edit", "folder:f#edit"), "r2");
	/* The row names group:a, not group:a#member: only the wildcard
	 * could grant it, and it does not in a lookup. */
	assert_true(check(db, "folder", "g", "owner", "group", "a", "member"));
	assert_string_equal(lr(db, "folder", "owner", "group:a#member"), "");
	assert_string_equal(lr(db, "folder", "owner", "group:a"), "g");
	pemba_close(db);
}

static void test_lookups_agree_with_check_on_random_data(void **state)
{
	(void)state;
	static const struct {
		const char *type;
		const char *perms[6];
	} types[] = {
	    {"group", {"member", "owner", "admin", NULL}},
	    {"folder", {"view", "viewer", "parent", NULL}},
	    {"document", {"view", "edit", "strict", "all_view", "safe", NULL}},
	};
	const char *users[] = {"u0", "u1", "u2", "u3", "stranger"};
	int seeds = getenv("PEMBA_LOOKUP_SEEDS")
	                ? atoi(getenv("PEMBA_LOOKUP_SEEDS"))
	                : 60;
	size_t compared = 0;
	for (int seed = 1; seed <= seeds; seed++) {
		uint64_t s = (uint64_t)seed * 7919;
		pemba_db *db = open_db();
		write_schema(db, PROPERTY_SCHEMA);
		char buf[24][96];
		const char *rels[25];
		int n = 6 + (int)(rnd(&s) % 18);
		for (int i = 0; i < n; i++) {
			random_rel(&s, buf[i], sizeof(buf[i]));
			rels[i] = buf[i];
			for (int j = 0; j < i; j++)
				if (strcmp(buf[j], buf[i]) == 0) {
					i--; /* a write takes each once */
					break;
				}
		}
		rels[n] = NULL;
		touch(db, rels);

		for (size_t t = 0; t < 3; t++) {
			const char *rt = types[t].type;
			for (size_t p = 0; types[t].perms[p]; p++) {
				const char *perm = types[t].perms[p];
				if (strcmp(perm, "parent") == 0)
					continue;
				/* LookupResources == {r : check HAS}. */
				for (size_t u = 0; u < 5; u++) {
					char subj[64], want[256] = "";
					snprintf(subj, sizeof(subj), "user:%s",
					         users[u]);
					for (int i = 0; i < NIDS; i++) {
						char rid[8];
						snprintf(rid, sizeof(rid),
						         "%c%d", rt[0], i);
						if (!check(db, rt, rid, perm,
						           "user", users[u],
						           NULL))
							continue;
						if (want[0])
							strcat(want, ",");
						strcat(want, rid);
					}
					const char *got =
					    lr(db, rt, perm, subj);
					if (strcmp(got, want) != 0)
						fail_msg("seed %d: LR %s#%s "
						         "for %s: got [%s] "
						         "want [%s]",
						         seed, rt, perm, subj,
						         got, want);
					compared++;
				}
				/* LookupSubjects vs check, per resource. */
				for (int i = 0; i < NIDS; i++) {
					char res[16];
					snprintf(res, sizeof(res), "%s:%c%d",
					         rt, rt[0], i);
					const char *got =
					    ls(db, res, perm, "user");
					char answer[8192];
					strcpy(answer, got);
					for (size_t u = 0; u < 5; u++) {
						int in = ls_contains(answer,
						                     users[u]);
						int want = check(
						    db, rt,
						    res + strlen(rt) + 1, perm,
						    "user", users[u], NULL);
						if (in != want)
							fail_msg(
							    "seed %d: LS %s#%s "
							    "= [%s], check "
							    "user:%s = %d",
							    seed, res, perm,
							    answer, users[u],
							    want);
						compared++;
					}
					/* Usersets: group#member subjects. */
					got = ls(db, res, perm, "group#member");
					strcpy(answer, got);
					for (int g = 0; g < NIDS; g++) {
						char gid[8];
						snprintf(gid, sizeof(gid),
						         "g%d", g);
						int in =
						    ls_contains(answer, gid);
						int want = check(
						    db, rt,
						    res + strlen(rt) + 1, perm,
						    "group", gid, "member");
						if (in != want)
							fail_msg(
							    "seed %d: LS %s#%s "
							    "group#member = "
							    "[%s], check "
							    "group:%s#member "
							    "= %d",
							    seed, res, perm,
							    answer, gid, want);
						compared++;
					}
				}
			}
		}
		pemba_close(db);
	}
	print_message("compared %zu lookup answers with checks\n", compared);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lookup_resources_follows_groups_and_arrows),
	    cmocka_unit_test(
	        test_lookup_resources_wildcards_exclusions_intersections),
	    cmocka_unit_test(test_lookup_resources_paginates_exactly),
	    cmocka_unit_test(test_lookup_resources_rejects_bad_requests),
	    cmocka_unit_test(test_lookup_subjects_nested_groups_and_arrows),
	    cmocka_unit_test(test_lookup_subjects_wildcard_algebra),
	    cmocka_unit_test(test_lookup_subjects_cycle_finds_every_member),
	    cmocka_unit_test(test_lookup_subjects_paginates_exactly),
	    cmocka_unit_test(test_expand_builds_the_permission_tree),
	    cmocka_unit_test(test_expand_fails_on_arrow_cycle_with_depth_error),
	    cmocka_unit_test(test_check_bulk_answers_each_item_on_its_own),
	    cmocka_unit_test(
	        test_lookups_ignore_wildcards_for_userset_subjects),
	    cmocka_unit_test(
	        test_lookup_subjects_all_arrow_skips_types_without_target),
	    cmocka_unit_test(
	        test_lookup_resources_walks_from_the_userset_subject),
	    cmocka_unit_test(test_lookups_agree_with_check_on_random_data),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
