/*
 * test_integrity.c -- the datastore check (core/integrity.c): orphans are
 * exactly what a write refuses, classified per rule; the removal deletes
 * exactly them in one revision, and refuses (deleting nothing) when a row
 * changed, vanished or became valid again since the check, or when the
 * datastore is read-only.  Orphans are planted by writing a schema
 * through the store, below core's safety rules (as a hand-edited
 * datastore has them).  Runs on SQLite and, as core_test_integrity_postgres,
 * on PostgreSQL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/integrity.h"
#include "pemba.h"
#include "pg_fixture.h"
#include "store/store.h"

static const char GOOD[] =
    "use expiration\n"
    "definition user {}\n"
    "caveat has_level(level int, min int) { level >= min }\n"
    "caveat other(x int) { x > 0 }\n"
    "definition group {\n  relation member: user\n}\n"
    "definition team {\n  relation member: user\n}\n"
    "definition doc {\n"
    "  relation viewer: user | user with has_level | user with other | "
    "user:* | group#member | team#member\n"
    "  relation editor: user | user with expiration\n"
    "  relation reader: user\n"
    "  relation old: user\n"
    "  relation owner: user\n"
    "  permission view = viewer + editor\n"
    "}\n";

/* has_level and group gone, team#member renamed, owner a permission,
 * reader needs an expiration, editor refuses one, viewer narrower. */
static const char BROKEN[] = "use expiration\n"
                             "definition user {}\n"
                             "caveat other(x int) { x > 0 }\n"
                             "definition team {\n  relation members: user\n}\n"
                             "definition doc {\n"
                             "  relation viewer: user | team#members\n"
                             "  relation editor: user\n"
                             "  relation reader: user with expiration\n"
                             "  permission owner = viewer\n"
                             "  permission view = viewer + editor\n"
                             "}\n";

static const char *const CLEAN[] = {
    "doc:1#viewer@user:anne",
    "doc:1#editor@user:ed",
};

static const struct {
	const char *rel;
	core_rel_problem kind;
} ORPHANS[] = {
    {"doc:1#viewer@user:bob[has_level:{\"min\":3}]", CORE_REL_CAVEAT_UNKNOWN},
    {"doc:1#viewer@user:zed[other]", CORE_REL_CAVEAT_NOT_ALLOWED},
    {"doc:1#viewer@user:*", CORE_REL_SUBJECT_NOT_ALLOWED},
    {"doc:1#viewer@group:eng#member", CORE_REL_UNKNOWN_SUBJECT_TYPE},
    {"doc:1#viewer@team:t#member", CORE_REL_UNKNOWN_SUBJECT_RELATION},
    {"doc:1#editor@user:carl[expiration:2099-01-02T03:04:05Z]",
     CORE_REL_EXPIRATION_NOT_ALLOWED},
    {"doc:1#reader@user:dan", CORE_REL_EXPIRATION_REQUIRED},
    {"doc:2#old@user:x", CORE_REL_UNKNOWN_RELATION},
    {"doc:3#owner@user:y", CORE_REL_PERMISSION},
    {"group:eng#member@user:anne", CORE_REL_UNKNOWN_RESOURCE_TYPE},
    {"team:t#member@user:anne", CORE_REL_UNKNOWN_RELATION},
};
#define NORPHANS (sizeof(ORPHANS) / sizeof(ORPHANS[0]))

/* ------------------------------------------------------------ helpers */

static void write_rel(pemba_db *db, pemba_operation op, const char *text)
{
	pemba_relationship rel;
	char *storage;
	pemba_error err = {0};
	assert_int_equal(pemba_parse_relationship(text, &rel, &storage, &err),
	                 0);
	pemba_update u = {.op = op, .rel = rel};
	int rc = pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err);
	if (rc)
		fail_msg("write %s: %s", text, err.message);
	pemba_free(storage);
}

/* Writes schema text through the store, below core's safety rules. */
static void plant_schema(const char *uri, const char *text)
{
	store *st;
	store_txn *t;
	pemba_revision rev;
	pemba_error err = {0};
	if (store_open(uri, NULL, &st, &err))
		fail_msg("store_open: %s", err.message);
	assert_int_equal(store_txn_begin(st, &t, &rev, &err), 0);
	assert_int_equal(store_txn_write_schema(t, text, strlen(text), &err),
	                 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	store_close(st);
}

/* A datastore with GOOD, the clean rows and the orphans-to-be, then
 * BROKEN planted.  *uri_out: its URI (static storage). */
static pemba_db *setup(const char *name, const char **uri_out)
{
	static char memory[64]; /* pg_fixture_uri may return it */
	snprintf(memory, sizeof(memory), "sqlite::memory:%s", name);
	const char *uri = pg_fixture_uri(memory);
	pemba_db *db;
	pemba_error err = {0};
	if (pemba_open(uri, NULL, &db, &err))
		fail_msg("open: %s", err.message);
	if (pemba_write_schema(db, GOOD, strlen(GOOD), NULL, &err))
		fail_msg("schema: %s", err.message);
	for (size_t i = 0; i < sizeof(CLEAN) / sizeof(CLEAN[0]); i++)
		write_rel(db, PEMBA_OP_CREATE, CLEAN[i]);
	for (size_t i = 0; i < NORPHANS; i++)
		write_rel(db, PEMBA_OP_CREATE, ORPHANS[i].rel);
	plant_schema(uri, BROKEN);
	*uri_out = uri;
	return db;
}

/* The orphans a check reported, as text. */
typedef struct found {
	char *text[64];
	core_rel_problem kind[64];
	size_t n;
} found;

static int collect(void *ctx, const core_orphan *o)
{
	found *f = ctx;
	assert_true(f->n < 64);
	f->text[f->n] = pemba_format_relationship(o->rel);
	f->kind[f->n++] = o->kind;
	assert_non_null(o->message);
	return 0;
}

static void found_free(found *f)
{
	for (size_t i = 0; i < f->n; i++)
		pemba_free(f->text[i]);
	f->n = 0;
}

static core_integrity_report check(pemba_db *db, size_t page, found *f)
{
	core_integrity_report rep;
	pemba_error err = {0};
	int rc = core_integrity_check(db, page, f ? collect : NULL, f, NULL,
	                              NULL, &rep, &err);
	if (rc)
		fail_msg("check: %s", err.message);
	return rep;
}

/* Feeds core_integrity_remove from a list of relationship texts. */
typedef struct text_source {
	char **text;
	size_t n, next;
	char *storage;
} text_source;

static int next_text(void *ctx, pemba_relationship *rel, pemba_error *err)
{
	text_source *s = ctx;
	pemba_free(s->storage);
	s->storage = NULL;
	if (s->next == s->n)
		return 0;
	return pemba_parse_relationship(s->text[s->next++], rel, &s->storage,
	                                err) == 0
	           ? 1
	           : -1;
}

static int remove_found(pemba_db *db, found *f, pemba_revision *rev,
                        uint64_t *removed, pemba_error *err)
{
	text_source src = {.text = f->text, .n = f->n};
	int rc = core_integrity_remove(db, next_text, &src, rev, removed, err);
	pemba_free(src.storage);
	return rc;
}

static pemba_revision head(pemba_db *db)
{
	pemba_revision rev;
	pemba_error err = {0};
	assert_int_equal(pemba_head_revision(db, &rev, &err), 0);
	return rev;
}

/* -------------------------------------------------------------- tests */

static void orphans_are_what_writes_refuse(void **state)
{
	(void)state;
	const char *uri;
	pemba_db *db = setup("integrity_kinds", &uri);
	found f = {0};
	core_integrity_report rep = check(db, 0, &f);
	assert_int_equal(rep.checked, NORPHANS + 2);
	assert_int_equal(rep.orphans, NORPHANS);
	assert_int_equal(f.n, NORPHANS);
	for (size_t i = 0; i < NORPHANS; i++) {
		size_t k = 0;
		while (k < f.n && strcmp(f.text[k], ORPHANS[i].rel) != 0)
			k++;
		if (k == f.n)
			fail_msg("orphan %s not reported", ORPHANS[i].rel);
		if (f.kind[k] != ORPHANS[i].kind)
			fail_msg("%s: %s, expected %s", ORPHANS[i].rel,
			         core_rel_problem_name(f.kind[k]),
			         core_rel_problem_name(ORPHANS[i].kind));
		/* The same row written now is refused. */
		pemba_relationship rel;
		char *storage;
		pemba_error err = {0};
		assert_int_equal(pemba_parse_relationship(ORPHANS[i].rel, &rel,
		                                          &storage, &err),
		                 0);
		pemba_update u = {.op = PEMBA_OP_TOUCH, .rel = rel};
		assert_true(pemba_write_relationships(db, &u, 1, NULL, 0, NULL,
		                                      &err) < 0);
		pemba_free(storage);
	}
	/* The clean rows are accepted by a write. */
	for (size_t i = 0; i < sizeof(CLEAN) / sizeof(CLEAN[0]); i++)
		write_rel(db, PEMBA_OP_TOUCH, CLEAN[i]);
	assert_int_equal(rep.by_kind[CORE_REL_UNKNOWN_RELATION], 2);
	assert_int_equal(rep.by_kind[CORE_REL_OK], 0);
	found_free(&f);
	pemba_close(db);
}

static void pages_do_not_change_the_answer(void **state)
{
	(void)state;
	const char *uri;
	pemba_db *db = setup("integrity_pages", &uri);
	core_integrity_report whole = check(db, 0, NULL);
	for (size_t page = 1; page <= 4; page++) {
		core_integrity_report paged = check(db, page, NULL);
		assert_int_equal(paged.checked, whole.checked);
		assert_int_equal(paged.orphans, whole.orphans);
		assert_memory_equal(paged.by_kind, whole.by_kind,
		                    sizeof(whole.by_kind));
	}
	pemba_close(db);
}

static int count_deletes(void *ctx, const store_change *c)
{
	if (c->kind == STORE_CHANGE_DELETE)
		(*(int *)ctx)++;
	return 0;
}

static void remove_deletes_exactly_the_orphans_in_one_revision(void **state)
{
	(void)state;
	const char *uri;
	pemba_db *db = setup("integrity_remove", &uri);
	found f = {0};
	check(db, 0, &f);
	pemba_revision before = head(db), rev = 0;
	uint64_t removed = 0;
	pemba_error err = {0};
	int rc = remove_found(db, &f, &rev, &removed, &err);
	if (rc)
		fail_msg("remove: %s", err.message);
	assert_int_equal(removed, NORPHANS);
	assert_int_equal(rev, before + 1);
	assert_int_equal(head(db), rev);
	core_integrity_report after = check(db, 0, NULL);
	assert_int_equal(after.orphans, 0);
	assert_int_equal(after.checked, 2);
	/* One revision of deletes in the change feed (what Watch reads). */
	store *st;
	if (store_open(uri, NULL, &st, &err))
		fail_msg("store_open: %s", err.message);
	int deletes = 0;
	assert_int_equal(
	    store_changes(st, before, rev, count_deletes, &deletes, &err), 0);
	assert_int_equal(deletes, (int)NORPHANS);
	store_close(st);
	/* Again: nothing to remove, no revision. */
	found again = {0};
	check(db, 0, &again);
	assert_int_equal(again.n, 0);
	assert_int_equal(remove_found(db, &again, &rev, &removed, &err), 0);
	assert_int_equal(rev, 0);
	assert_int_equal(head(db), before + 1);
	found_free(&f);
	pemba_close(db);
}

/* Expects a refused removal that deleted nothing. */
static void expect_refused(pemba_db *db, found *f, int code, const char *text)
{
	pemba_revision before = head(db), rev = 99;
	core_integrity_report was = check(db, 0, NULL);
	uint64_t removed = 99;
	pemba_error err = {0};
	int rc = remove_found(db, f, &rev, &removed, &err);
	if (rc != code)
		fail_msg("expected %d, got %d: %s", code, rc, err.message);
	if (text && !strstr(err.message, text))
		fail_msg("message lacks `%s`: %s", text, err.message);
	assert_int_equal(removed, 0);
	assert_int_equal(rev, 0);
	assert_int_equal(head(db), before);
	core_integrity_report now = check(db, 0, NULL);
	assert_int_equal(now.checked, was.checked);
	assert_int_equal(now.orphans, was.orphans);
}

static void remove_refuses_a_row_changed_since_the_check(void **state)
{
	(void)state;
	const char *uri;
	pemba_db *db = setup("integrity_changed", &uri);
	found f = {0};
	check(db, 0, &f);
	/* Another writer gives one orphan another expiration. */
	store *st;
	store_txn *t;
	pemba_revision rev;
	pemba_error err = {0};
	if (store_open(uri, NULL, &st, &err))
		fail_msg("store_open: %s", err.message);
	assert_int_equal(store_txn_begin(st, &t, &rev, &err), 0);
	store_rel r = {.resource_type = "doc",
	               .resource_id = "1",
	               .relation = "editor",
	               .subject_type = "user",
	               .subject_id = "carl",
	               .subject_relation = "",
	               .caveat_name = "",
	               .caveat_context = "",
	               .expiration_ms = 4102444800000};
	assert_int_equal(store_txn_touch(t, &r, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	store_close(st);
	expect_refused(db, &f, PEMBA_EPRECONDITION, "changed since the check");
	found_free(&f);
	pemba_close(db);
}

static void remove_refuses_a_row_deleted_since_the_check(void **state)
{
	(void)state;
	const char *uri;
	pemba_db *db = setup("integrity_deleted", &uri);
	found f = {0};
	check(db, 0, &f);
	write_rel(db, PEMBA_OP_DELETE, "doc:1#viewer@user:*");
	expect_refused(db, &f, PEMBA_EPRECONDITION, "no longer stored");
	found_free(&f);
	pemba_close(db);
}

static void remove_refuses_when_the_schema_was_fixed_meanwhile(void **state)
{
	(void)state;
	const char *uri;
	pemba_db *db = setup("integrity_fixed", &uri);
	found f = {0};
	check(db, 0, &f);
	plant_schema(uri, GOOD);
	expect_refused(db, &f, PEMBA_EPRECONDITION, "no longer an orphan");
	found_free(&f);
	pemba_close(db);
}

static void remove_refuses_a_read_only_datastore(void **state)
{
	(void)state;
	const char *uri;
	pemba_db *db = setup("integrity_ro", &uri);
	found f = {0};
	check(db, 0, &f);
	pemba_error err = {0};
	assert_int_equal(core_integrity_writable(db, &err), 0);
	assert_int_equal(pemba_set_read_only(db, 1, &err), 0);
	assert_int_equal(core_integrity_writable(db, &err), PEMBA_EREADONLY);
	expect_refused(db, &f, PEMBA_EREADONLY, "read-only");
	assert_int_equal(pemba_set_read_only(db, 0, &err), 0);
	found_free(&f);
	pemba_close(db);
}

/* Rows a hand edit may leave that no write could make: identifiers
 * breaking the syntax rules are reported as `invalid`. */
static void bad_identifiers_are_invalid(void **state)
{
	(void)state;
	const char *uri = pg_fixture_uri("sqlite::memory:integrity_invalid");
	pemba_db *db;
	pemba_error err = {0};
	assert_int_equal(pemba_open(uri, NULL, &db, &err), 0);
	if (pemba_write_schema(db, GOOD, strlen(GOOD), NULL, &err))
		fail_msg("schema: %s", err.message);
	write_rel(db, PEMBA_OP_CREATE, "doc:ok#viewer@user:anne");
	store *st;
	store_txn *t;
	pemba_revision rev;
	assert_int_equal(store_open(uri, NULL, &st, &err), 0);
	assert_int_equal(store_txn_begin(st, &t, &rev, &err), 0);
	store_rel r = {.resource_type = "doc",
	               .resource_id = "a b",
	               .relation = "viewer",
	               .subject_type = "user",
	               .subject_id = "anne",
	               .subject_relation = "",
	               .caveat_name = "",
	               .caveat_context = ""};
	assert_int_equal(store_txn_create(t, &r, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	store_close(st);
	found f = {0};
	core_integrity_report rep = check(db, 0, &f);
	assert_int_equal(rep.checked, 2);
	assert_int_equal(rep.orphans, 1);
	assert_int_equal(rep.by_kind[CORE_REL_INVALID], 1);
	assert_int_equal(f.kind[0], CORE_REL_INVALID);
	found_free(&f);
	pemba_close(db);
}

/* A context that no longer suits its caveat (a parameter renamed by
 * hand): `caveat_context_invalid`. */
static void context_not_suiting_the_caveat_is_reported(void **state)
{
	(void)state;
	static const char before[] = "definition user {}\n"
	                             "caveat c(x int) {\n  x > 0\n}\n"
	                             "definition doc {\n"
	                             "  relation viewer: user with c\n}\n";
	static const char after[] = "definition user {}\n"
	                            "caveat c(y int) {\n  y > 0\n}\n"
	                            "definition doc {\n"
	                            "  relation viewer: user with c\n}\n";
	const char *uri = pg_fixture_uri("sqlite::memory:integrity_context");
	pemba_db *db;
	pemba_error err = {0};
	assert_int_equal(pemba_open(uri, NULL, &db, &err), 0);
	if (pemba_write_schema(db, before, strlen(before), NULL, &err))
		fail_msg("schema: %s", err.message);
	write_rel(db, PEMBA_OP_CREATE, "doc:1#viewer@user:a[c:{\"x\":1}]");
	write_rel(db, PEMBA_OP_CREATE, "doc:2#viewer@user:b[c]");
	plant_schema(uri, after);
	found f = {0};
	core_integrity_report rep = check(db, 0, &f);
	assert_int_equal(rep.checked, 2);
	assert_int_equal(rep.orphans, 1);
	assert_int_equal(f.kind[0], CORE_REL_CAVEAT_CONTEXT);
	assert_string_equal(f.text[0], "doc:1#viewer@user:a[c:{\"x\":1}]");
	found_free(&f);
	pemba_close(db);
}

static void empty_datastore_is_clean(void **state)
{
	(void)state;
	const char *uri = pg_fixture_uri("sqlite::memory:integrity_empty");
	pemba_db *db;
	pemba_error err = {0};
	assert_int_equal(pemba_open(uri, NULL, &db, &err), 0);
	core_integrity_report rep = check(db, 0, NULL);
	assert_int_equal(rep.revision, 0);
	assert_int_equal(rep.checked, 0);
	assert_int_equal(rep.orphans, 0);
	assert_string_equal(core_rel_problem_name(CORE_REL_PERMISSION),
	                    "relation_is_permission");
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(orphans_are_what_writes_refuse),
	    cmocka_unit_test(pages_do_not_change_the_answer),
	    cmocka_unit_test(
	        remove_deletes_exactly_the_orphans_in_one_revision),
	    cmocka_unit_test(remove_refuses_a_row_changed_since_the_check),
	    cmocka_unit_test(remove_refuses_a_row_deleted_since_the_check),
	    cmocka_unit_test(
	        remove_refuses_when_the_schema_was_fixed_meanwhile),
	    cmocka_unit_test(remove_refuses_a_read_only_datastore),
	    cmocka_unit_test(bad_identifiers_are_invalid),
	    cmocka_unit_test(context_not_suiting_the_caveat_is_reported),
	    cmocka_unit_test(empty_datastore_is_clean),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
