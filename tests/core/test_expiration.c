/*
 * test_expiration.c -- relationship expiration through the public API:
 * which writes the schema accepts (the `with expiration` trait must match
 * exactly, as in SpiceDB), expired relationships invisible to every read
 * (check, lookups, expand, reads, export, preconditions) while unexpired
 * ones count, expiry judged by the current time, and GC removing expired
 * relationships.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pemba.h"
#include "pg_fixture.h"

/* ------------------------------------------------------------- helpers */

/* 2001-09-09T01:46:40Z: long before any GC window. */
#define PAST "[expiration:2001-09-09T01:46:40Z]"
/* 2300-01-01: far in the future. */
#define FUTURE "[expiration:2300-01-01T00:00:00Z]"

static const char *SCHEMA =
    "use expiration\n"
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user with expiration\n"
    "}\n"
    "definition document {\n"
    "  relation exp: user with expiration | group#member with expiration\n"
    "  relation plain: user\n"
    "  relation both: user | user with expiration\n"
    "  permission view = exp + both\n"
    "}\n";

static pemba_db *setup(void)
{
	pemba_db *db = NULL;
	pemba_error err;
	if (pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err) != 0)
		fail_msg("open: %s", err.message);
	if (pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err) != 0)
		fail_msg("schema: %s", err.message);
	return db;
}

/* TOUCHes one relationship given as text; returns the write's code. */
static int touch(pemba_db *db, const char *text, pemba_error *err)
{
	pemba_update u = {.op = PEMBA_OP_TOUCH};
	char *storage = NULL;
	if (pemba_parse_relationship(text, &u.rel, &storage, err) != 0)
		fail_msg("parse %s: %s", text, err->message);
	int rc = pemba_write_relationships(db, &u, 1, NULL, 0, NULL, err);
	pemba_free(storage);
	return rc;
}

static void must_touch(pemba_db *db, const char *text)
{
	pemba_error err;
	if (touch(db, text, &err) != 0)
		fail_msg("touch %s: %s", text, err.message);
}

static pemba_permissionship check(pemba_db *db, const char *permission,
                                  const char *subject_id)
{
	pemba_check_request q = {
	    .resource_type = "document",
	    .resource_id = "1",
	    .permission = permission,
	    .subject_type = "user",
	    .subject_id = subject_id,
	};
	pemba_permissionship out;
	pemba_error err;
	if (pemba_check_permission(db, 0, &q, &out, &err) != 0)
		fail_msg("check: %s", err.message);
	return out;
}

/* Collects relationships as formatted text, one per line. */
typedef struct collected {
	char text[4096];
	int n;
} collected;

static int collect_rel(void *ctx, const pemba_relationship *rel)
{
	collected *c = ctx;
	char *s = pemba_format_relationship(rel);
	strncat(c->text, s, sizeof(c->text) - strlen(c->text) - 2);
	strcat(c->text, "\n");
	pemba_free(s);
	c->n++;
	return 0;
}

static int collect_id(void *ctx, const char *id, pemba_permissionship p,
                      const char *cursor)
{
	(void)p, (void)cursor;
	collected *c = ctx;
	strncat(c->text, id, sizeof(c->text) - strlen(c->text) - 2);
	strcat(c->text, "\n");
	c->n++;
	return 0;
}

static int collect_subject(void *ctx, const char *id, pemba_permissionship p,
                           const char *const *excluded, size_t nexcluded,
                           const char *cursor)
{
	(void)excluded, (void)nexcluded;
	return collect_id(ctx, id, p, cursor);
}

/* -------------------------------------------------------------- writes */

static void test_expiration_trait_must_match_exactly(void **state)
{
	(void)state;
	pemba_db *db = setup();
	pemba_error err;
	/* `user with expiration` refuses a relationship without one and
	 * hints at the trait, as SpiceDB does. */
	assert_int_equal(touch(db, "document:1#exp@user:anne", &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "subjects of type `user` are not "
	                                    "allowed on relation "
	                                    "`document#exp`"));
	assert_non_null(
	    strstr(err.message, "did you mean `user with expiration`?"));
	/* `user` refuses one with an expiration. */
	assert_int_equal(touch(db, "document:1#plain@user:anne" FUTURE, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "`user with expiration` are not "
	                                    "allowed on relation "
	                                    "`document#plain`"));
	/* Accepted: matching traits, an already expired one included. */
	must_touch(db, "document:1#exp@user:anne" FUTURE);
	must_touch(db, "document:1#exp@user:bob" PAST);
	must_touch(db, "document:1#exp@group:eng#member" FUTURE);
	must_touch(db, "document:1#plain@user:anne");
	must_touch(db, "document:1#both@user:anne");
	must_touch(db, "document:1#both@user:bob" FUTURE);
	/* A caveat the relation does not allow is refused. */
	pemba_update u = {.op = PEMBA_OP_TOUCH};
	char *storage = NULL;
	assert_int_equal(
	    pemba_parse_relationship("document:1#exp@user:carl" FUTURE, &u.rel,
	                             &storage, &err),
	    0);
	u.rel.caveat_name = "weekdays";
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err),
	    PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "with weekdays and expiration"));
	pemba_free(storage);
	pemba_close(db);
}

static void test_import_checks_the_expiration_trait(void **state)
{
	(void)state;
	pemba_db *db = setup();
	pemba_error err;
	pemba_relationship rels[2];
	char *storage[2] = {NULL, NULL};
	assert_int_equal(
	    pemba_parse_relationship("document:1#exp@user:anne" FUTURE,
	                             &rels[0], &storage[0], &err),
	    0);
	assert_int_equal(pemba_parse_relationship("document:2#exp@user:anne",
	                                          &rels[1], &storage[1], &err),
	                 0);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(pemba_import_add(imp, &rels[0], 1, &err), 0);
	uint64_t count = 0;
	assert_int_equal(pemba_import_commit(imp, NULL, &count, &err), 0);
	assert_int_equal(count, 1);
	assert_int_equal(check(db, "view", "anne"), PEMBA_HAS_PERMISSION);

	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	int rc = pemba_import_add(imp, &rels[1], 1, &err);
	if (rc == 0)
		rc = pemba_import_commit(imp, NULL, &count, &err);
	else
		pemba_import_abort(imp);
	assert_int_equal(rc, PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "not allowed"));
	pemba_free(storage[0]);
	pemba_free(storage[1]);
	pemba_close(db);
}

/* --------------------------------------------------------------- reads */

/* anne: unexpired; bob: expired; eng's member carl unexpired but the
 * document's link to eng expired; ops: both links unexpired. */
static pemba_db *setup_data(void)
{
	pemba_db *db = setup();
	must_touch(db, "document:1#exp@user:anne" FUTURE);
	must_touch(db, "document:1#exp@user:bob" PAST);
	must_touch(db, "group:eng#member@user:carl" FUTURE);
	must_touch(db, "document:1#exp@group:eng#member" PAST);
	must_touch(db, "group:ops#member@user:dana" FUTURE);
	must_touch(db, "document:1#exp@group:ops#member" FUTURE);
	must_touch(db, "document:2#exp@user:bob" FUTURE);
	return db;
}

static void test_expired_relationships_are_invisible_to_check(void **state)
{
	(void)state;
	pemba_db *db = setup_data();
	assert_int_equal(check(db, "view", "anne"), PEMBA_HAS_PERMISSION);
	assert_int_equal(check(db, "exp", "anne"), PEMBA_HAS_PERMISSION);
	assert_int_equal(check(db, "view", "bob"), PEMBA_NO_PERMISSION);
	assert_int_equal(check(db, "exp", "bob"), PEMBA_NO_PERMISSION);
	assert_int_equal(check(db, "view", "carl"), PEMBA_NO_PERMISSION);
	assert_int_equal(check(db, "view", "dana"), PEMBA_HAS_PERMISSION);
	pemba_close(db);
}

static void test_expired_relationships_are_invisible_to_lookups(void **state)
{
	(void)state;
	pemba_db *db = setup_data();
	pemba_error err;
	collected c = {0};
	pemba_lookup_resources_request lr = {
	    .resource_type = "document",
	    .permission = "view",
	    .subject_type = "user",
	    .subject_id = "bob",
	};
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &lr, collect_id, &c, NULL, &err), 0);
	assert_string_equal(c.text, "2\n");

	memset(&c, 0, sizeof(c));
	pemba_lookup_subjects_request ls = {
	    .resource_type = "document",
	    .resource_id = "1",
	    .permission = "view",
	    .subject_type = "user",
	};
	assert_int_equal(
	    pemba_lookup_subjects(db, 0, &ls, collect_subject, &c, NULL, &err),
	    0);
	assert_string_equal(c.text, "anne\ndana\n");

	pemba_expand_node *tree = NULL;
	assert_int_equal(
	    pemba_expand(db, 0, "document", "1", "exp", &tree, NULL, &err), 0);
	assert_int_equal(tree->kind, PEMBA_EXPAND_LEAF);
	assert_int_equal(tree->nsubjects, 2); /* anne, group:ops#member */
	for (size_t i = 0; i < tree->nsubjects; i++) {
		assert_string_not_equal(tree->subjects[i].id, "bob");
		assert_string_not_equal(tree->subjects[i].id, "eng");
	}
	pemba_expand_free(tree);
	pemba_close(db);
}

static void test_expired_relationships_are_invisible_to_reads(void **state)
{
	(void)state;
	pemba_db *db = setup_data();
	pemba_error err;
	collected c = {0};
	pemba_filter f = {.resource_type = "document", .resource_id = "1"};
	assert_int_equal(
	    pemba_read_relationships(db, 0, &f, NULL, 0, collect_rel, &c, &err),
	    0);
	assert_int_equal(c.n, 2);
	assert_null(strstr(c.text, "bob"));
	assert_null(strstr(c.text, "eng"));
	/* The expiration is read back with the relationship. */
	assert_non_null(strstr(c.text, "user:anne[expiration:2300-01-01"));

	/* By subject (the reverse index) too. */
	memset(&c, 0, sizeof(c));
	pemba_filter by_subject = {.subject_type = "user", .subject_id = "bob"};
	assert_int_equal(pemba_read_relationships(db, 0, &by_subject, NULL, 0,
	                                          collect_rel, &c, &err),
	                 0);
	assert_int_equal(c.n, 1);
	assert_non_null(strstr(c.text, "document:2#exp@user:bob"));

	memset(&c, 0, sizeof(c));
	char *cursor = NULL;
	assert_int_equal(pemba_export_relationships(db, 0, NULL, 0, collect_rel,
	                                            &c, NULL, &cursor, &err),
	                 0);
	pemba_free(cursor);
	assert_int_equal(c.n, 5);
	assert_null(strstr(c.text, "document:1#exp@user:bob"));
	assert_null(strstr(c.text, "document:1#exp@group:eng"));
	pemba_close(db);
}

static void test_preconditions_ignore_expired_relationships(void **state)
{
	(void)state;
	pemba_db *db = setup_data();
	pemba_error err;
	pemba_update u = {.op = PEMBA_OP_TOUCH};
	char *storage = NULL;
	assert_int_equal(pemba_parse_relationship("document:3#plain@user:erin",
	                                          &u.rel, &storage, &err),
	                 0);
	pemba_precondition must = {
	    .op = PEMBA_PRECONDITION_MUST_MATCH,
	    .filter = {.resource_type = "document",
	               .resource_id = "1",
	               .subject_type = "user",
	               .subject_id = "bob"},
	};
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, &must, 1, NULL, &err),
	    PEMBA_EPRECONDITION);
	pemba_precondition must_not = must;
	must_not.op = PEMBA_PRECONDITION_MUST_NOT_MATCH;
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, &must_not, 1, NULL, &err), 0);
	pemba_free(storage);
	pemba_close(db);
}

/* Expiry is judged by the current time, not by the revision read: a
 * relationship that expires while nothing is written disappears. */
static void test_relationship_disappears_when_it_expires(void **state)
{
	(void)state;
	pemba_db *db = setup();
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t soon = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 800;
	pemba_update u = {.op = PEMBA_OP_TOUCH,
	                  .rel = {.resource_type = "document",
	                          .resource_id = "1",
	                          .relation = "exp",
	                          .subject_type = "user",
	                          .subject_id = "anne",
	                          .expiration_ms = soon}};
	pemba_error err;
	pemba_revision rev = 0;
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, &rev, &err), 0);
	assert_int_equal(check(db, "view", "anne"), PEMBA_HAS_PERMISSION);
	usleep(1200 * 1000);
	assert_int_equal(check(db, "view", "anne"), PEMBA_NO_PERMISSION);
	/* Also at the revision that wrote it. */
	pemba_check_request q = {.resource_type = "document",
	                         .resource_id = "1",
	                         .permission = "view",
	                         .subject_type = "user",
	                         .subject_id = "anne"};
	pemba_permissionship out;
	assert_int_equal(pemba_check_permission(db, rev, &q, &out, &err), 0);
	assert_int_equal(out, PEMBA_NO_PERMISSION);
	pemba_close(db);
}

/* ------------------------------------------------------------------ GC */

static void test_gc_removes_expired_relationships(void **state)
{
	(void)state;
	pemba_db *db = setup_data();
	pemba_error err;
	uint64_t removed = 0;
	assert_int_equal(pemba_gc(db, &removed, &err), 0);
	/* bob's and eng's links to document:1 expired in 2001. */
	assert_int_equal(removed, 2);
	removed = 0;
	assert_int_equal(pemba_gc(db, &removed, &err), 0);
	assert_int_equal(removed, 0);
	/* Unexpired ones are kept. */
	assert_int_equal(check(db, "view", "anne"), PEMBA_HAS_PERMISSION);
	assert_int_equal(check(db, "view", "dana"), PEMBA_HAS_PERMISSION);
	/* The key is free again: CREATE succeeds. */
	pemba_update u = {.op = PEMBA_OP_CREATE};
	char *storage = NULL;
	assert_int_equal(
	    pemba_parse_relationship("document:1#exp@user:bob" FUTURE, &u.rel,
	                             &storage, &err),
	    0);
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err), 0);
	pemba_free(storage);
	assert_int_equal(check(db, "view", "bob"), PEMBA_HAS_PERMISSION);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_expiration_trait_must_match_exactly),
	    cmocka_unit_test(test_import_checks_the_expiration_trait),
	    cmocka_unit_test(test_expired_relationships_are_invisible_to_check),
	    cmocka_unit_test(
	        test_expired_relationships_are_invisible_to_lookups),
	    cmocka_unit_test(test_expired_relationships_are_invisible_to_reads),
	    cmocka_unit_test(test_preconditions_ignore_expired_relationships),
	    cmocka_unit_test(test_relationship_disappears_when_it_expires),
	    cmocka_unit_test(test_gc_removes_expired_relationships),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
