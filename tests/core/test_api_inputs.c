/*
 * test_api_inputs.c -- every public function of pemba.h fed hostile input.
 *
 * Each bad call must return the right pemba_code, fill the error with a
 * message naming what is wrong, leave the datastore exactly as it was (head
 * revision, every relationship and the schema compared before and after)
 * and never crash (this suite runs under ASan/UBSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "pemba.h"

/* ============================================================ fixture */

static const char *SCHEMA = "definition user {}\n"
                            "definition group {\n"
                            "\trelation member: user | group#member\n"
                            "}\n"
                            "definition document {\n"
                            "\trelation viewer: user | user:* | "
                            "group#member\n"
                            "\trelation owner: user\n"
                            "\tpermission view = viewer + owner\n"
                            "}\n";

static const char *const TYPES[] = {"user", "group", "document"};

/* A relationship with every field set to something valid. */
static pemba_relationship good_rel(void)
{
	pemba_relationship r = {
	    .resource_type = "document",
	    .resource_id = "doc1",
	    .relation = "viewer",
	    .subject_type = "user",
	    .subject_id = "anne",
	};
	return r;
}

static pemba_db *open_fixture(void)
{
	pemba_db *db = NULL;
	pemba_error err;
	assert_int_equal(pemba_open("sqlite::memory:", NULL, &db, &err), 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	const char *rels[][6] = {
	    {"document", "doc1", "viewer", "user", "bob", NULL},
	    {"document", "doc1", "owner", "user", "carl", NULL},
	    {"document", "doc2", "viewer", "group", "eng", "member"},
	    {"group", "eng", "member", "user", "dana", NULL},
	};
	pemba_update u[4];
	for (int i = 0; i < 4; i++) {
		u[i].op = PEMBA_OP_CREATE;
		u[i].rel = (pemba_relationship){
		    .resource_type = rels[i][0],
		    .resource_id = rels[i][1],
		    .relation = rels[i][2],
		    .subject_type = rels[i][3],
		    .subject_id = rels[i][4],
		    .subject_relation = rels[i][5],
		};
	}
	assert_int_equal(
	    pemba_write_relationships(db, u, 4, NULL, 0, NULL, &err), 0);
	return db;
}

static int setup(void **state)
{
	*state = open_fixture();
	return 0;
}

static int teardown(void **state)
{
	pemba_close(*state);
	return 0;
}

/* ============================================================ snapshots */

/* Everything observable about a datastore, as text. */
typedef struct snapshot {
	pemba_revision head;
	char *schema;
	char *rels; /* every relationship, formatted, one per line */
	size_t rels_len, rels_cap;
} snapshot;

static int collect(void *ctx, const pemba_relationship *rel)
{
	snapshot *s = ctx;
	char *text = pemba_format_relationship(rel);
	size_t n = strlen(text);
	if (s->rels_len + n + 2 > s->rels_cap) {
		s->rels_cap = 2 * (s->rels_cap + n + 2);
		s->rels = realloc(s->rels, s->rels_cap);
		assert_non_null(s->rels);
	}
	memcpy(s->rels + s->rels_len, text, n);
	s->rels_len += n;
	s->rels[s->rels_len++] = '\n';
	s->rels[s->rels_len] = '\0';
	pemba_free(text);
	return 0;
}

static void take_snapshot(pemba_db *db, snapshot *s)
{
	pemba_error err;
	memset(s, 0, sizeof(*s));
	assert_int_equal(pemba_head_revision(db, &s->head, &err), 0);
	if (pemba_read_schema(db, 0, &s->schema, &err) != 0)
		assert_int_equal(err.code, PEMBA_ENOTFOUND);
	for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++) {
		pemba_filter f = {.resource_type = TYPES[i]};
		int rc = pemba_read_relationships(db, 0, &f, NULL, 0, collect,
		                                  s, &err);
		/* An empty datastore knows no definitions. */
		assert_true(rc == 0 || rc == PEMBA_EPRECONDITION);
	}
}

static void free_snapshot(snapshot *s)
{
	pemba_free(s->schema);
	free(s->rels);
}

static void assert_same_snapshot(const snapshot *a, const snapshot *b)
{
	assert_int_equal(a->head, b->head);
	if (a->schema || b->schema) {
		assert_non_null(a->schema);
		assert_non_null(b->schema);
		assert_string_equal(a->schema, b->schema);
	}
	assert_int_equal(a->rels_len, b->rels_len);
	if (a->rels_len)
		assert_memory_equal(a->rels, b->rels, a->rels_len);
}

/* Asserts a failed call: code, error filled in, message mentions
 * `needle` (if non-NULL), and the datastore unchanged since `before`. */
static void expect_failure_(int rc, const pemba_error *err, int code,
                            const char *needle, pemba_db *db,
                            const snapshot *before, const char *file, int line)
{
	if (rc != code || err->code != code ||
	    (needle && !strstr(err->message, needle)) || !err->message[0])
		fail_msg("%s:%d: want %d (%s) mentioning \"%s\"; got rc %d, "
		         "err.code %d, message \"%s\"",
		         file, line, code, pemba_strerror(code),
		         needle ? needle : "", rc, err->code, err->message);
	if (db && before) {
		snapshot after;
		take_snapshot(db, &after);
		assert_same_snapshot(before, &after);
		free_snapshot(&after);
	}
}
#define expect_failure(rc, err, code, needle, db, before)                      \
	expect_failure_((rc), (err), (code), (needle), (db), (before),         \
	                __FILE__, __LINE__)

/* Writes one update; returns the code (err filled). */
static int write_one(pemba_db *db, pemba_operation op,
                     const pemba_relationship *rel, pemba_error *err)
{
	pemba_update u = {.op = op, .rel = *rel};
	return pemba_write_relationships(db, &u, 1, NULL, 0, NULL, err);
}

/* A string of n copies of c. */
static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* ============================================================ NULLs */

static int never_called(void *ctx, const pemba_relationship *rel)
{
	(void)ctx;
	(void)rel;
	fail_msg("callback called");
	return 1;
}

static void test_null_handle_is_refused_by_every_function(void **state)
{
	(void)state;
	pemba_error err;
	pemba_revision rev = 99;
	char *text = (char *)"untouched";
	pemba_relationship rel = good_rel();
	pemba_update u = {.op = PEMBA_OP_TOUCH, .rel = rel};
	pemba_filter f = {.resource_type = "document"};
	pemba_check_request req = {"document", "doc1", "view", "user",
	                           "anne",     NULL,   NULL};
	pemba_permissionship perm = 0;
	pemba_import *imp = (pemba_import *)&err;
	uint64_t removed = 7;

	expect_failure(pemba_head_revision(NULL, &rev, &err), &err,
	               PEMBA_EINVAL, "handle", NULL, NULL);
	assert_int_equal(rev, 99);
	expect_failure(
	    pemba_write_schema(NULL, SCHEMA, strlen(SCHEMA), &rev, &err), &err,
	    PEMBA_EINVAL, NULL, NULL, NULL);
	expect_failure(pemba_read_schema(NULL, 0, &text, &err), &err,
	               PEMBA_EINVAL, NULL, NULL, NULL);
	assert_string_equal(text, "untouched");
	expect_failure(
	    pemba_write_relationships(NULL, &u, 1, NULL, 0, &rev, &err), &err,
	    PEMBA_EINVAL, "handle", NULL, NULL);
	expect_failure(pemba_delete_relationships(NULL, &f, NULL, 0, 0, 0, &rev,
	                                          NULL, NULL, &err),
	               &err, PEMBA_EINVAL, NULL, NULL, NULL);
	expect_failure(pemba_read_relationships(NULL, 0, &f, NULL, 0,
	                                        never_called, NULL, &err),
	               &err, PEMBA_EINVAL, NULL, NULL, NULL);
	expect_failure(pemba_check_permission(NULL, 0, &req, &perm, &err), &err,
	               PEMBA_EINVAL, NULL, NULL, NULL);
	assert_int_equal(perm, 0);
	expect_failure(pemba_gc(NULL, &removed, &err), &err, PEMBA_EINVAL,
	               "handle", NULL, NULL);
	assert_int_equal(removed, 7);
	expect_failure(pemba_import_begin(NULL, PEMBA_OP_TOUCH, &imp, &err),
	               &err, PEMBA_EINVAL, NULL, NULL, NULL);
	expect_failure(pemba_import_add(NULL, &rel, 1, &err), &err,
	               PEMBA_EINVAL, NULL, NULL, NULL);
	expect_failure(pemba_import_commit(NULL, &rev, NULL, &err), &err,
	               PEMBA_EINVAL, NULL, NULL, NULL);
	assert_int_equal(rev, 99);

	/* The void ones just return. */
	pemba_close(NULL);
	pemba_free(NULL);
	pemba_import_abort(NULL);
	assert_null(pemba_format_relationship(NULL));

	/* NULL error pointers are allowed everywhere. */
	assert_int_equal(pemba_head_revision(NULL, &rev, NULL), PEMBA_EINVAL);
	assert_int_equal(pemba_open(NULL, NULL, NULL, NULL), PEMBA_EINVAL);
	assert_int_equal(pemba_check_schema(NULL, 0, NULL, NULL), PEMBA_EINVAL);
}

static void test_null_out_pointers_are_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	pemba_check_request req = {"document", "doc1", "view", "user",
	                           "bob",      NULL,   NULL};
	pemba_filter f = {.resource_type = "document"};

	expect_failure(pemba_head_revision(db, NULL, &err), &err, PEMBA_EINVAL,
	               NULL, db, &before);
	expect_failure(pemba_read_schema(db, 0, NULL, &err), &err, PEMBA_EINVAL,
	               "`text_out`", db, &before);
	expect_failure(pemba_check_permission(db, 0, &req, NULL, &err), &err,
	               PEMBA_EINVAL, "`out`", db, &before);
	expect_failure(pemba_check_permission(db, 0, NULL, NULL, &err), &err,
	               PEMBA_EINVAL, "`req`", db, &before);
	expect_failure(pemba_import_begin(db, PEMBA_OP_TOUCH, NULL, &err), &err,
	               PEMBA_EINVAL, "`out`", db, &before);
	expect_failure(
	    pemba_read_relationships(db, 0, &f, NULL, 0, NULL, NULL, &err),
	    &err, PEMBA_EINVAL, "`fn`", db, &before);
	expect_failure(pemba_read_relationships(db, 0, NULL, NULL, 0,
	                                        never_called, NULL, &err),
	               &err, PEMBA_EINVAL, "filter", db, &before);
	expect_failure(pemba_delete_relationships(db, NULL, NULL, 0, 0, 0, NULL,
	                                          NULL, NULL, &err),
	               &err, PEMBA_EINVAL, "filter", db, &before);
	expect_failure(pemba_write_schema(db, NULL, 10, NULL, &err), &err,
	               PEMBA_EINVAL, "`text`", db, &before);
	/* Optional outputs may be NULL on success. */
	pemba_relationship rel = good_rel();
	assert_int_equal(write_one(db, PEMBA_OP_TOUCH, &rel, NULL), 0);
	assert_int_equal(pemba_gc(db, NULL, NULL), 0);
	free_snapshot(&before);
}

static void test_strerror_never_returns_null(void **state)
{
	(void)state;
	for (int code = -100; code <= 100; code++)
		assert_non_null(pemba_strerror(code));
	assert_non_null(pemba_strerror(INT32_MIN));
	assert_non_null(pemba_strerror(INT32_MAX));
	assert_string_equal(pemba_strerror(PEMBA_EINVAL), "invalid argument");
}

/* ====================================================== relationship fields */

/* Which field of a relationship a case breaks. */
enum field {
	F_RESOURCE_TYPE,
	F_RESOURCE_ID,
	F_RELATION,
	F_SUBJECT_TYPE,
	F_SUBJECT_ID,
	F_SUBJECT_RELATION,
};

static const char *const FIELD_WORDS[] = {
    "resource type", "resource id", "relation",
    "subject type",  "subject id",  "subject relation",
};

static void set_field(pemba_relationship *r, enum field f, const char *v)
{
	switch (f) {
	case F_RESOURCE_TYPE:
		r->resource_type = v;
		break;
	case F_RESOURCE_ID:
		r->resource_id = v;
		break;
	case F_RELATION:
		r->relation = v;
		break;
	case F_SUBJECT_TYPE:
		r->subject_type = v;
		break;
	case F_SUBJECT_ID:
		r->subject_id = v;
		break;
	case F_SUBJECT_RELATION:
		r->subject_relation = v;
		break;
	}
}

/* Writes `rel` with each operation and expects EINVAL naming `needle`,
 * with the datastore unchanged. */
static void expect_write_refused(pemba_db *db, const snapshot *before,
                                 const pemba_relationship *rel,
                                 const char *needle)
{
	static const pemba_operation ops[] = {PEMBA_OP_CREATE, PEMBA_OP_TOUCH,
	                                      PEMBA_OP_DELETE};
	for (int i = 0; i < 3; i++) {
		pemba_error err;
		expect_failure(write_one(db, ops[i], rel, &err), &err,
		               PEMBA_EINVAL, needle, db, before);
	}
}

static void test_missing_relationship_fields_are_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	/* subject_relation is optional; every other field is required. */
	for (int f = F_RESOURCE_TYPE; f <= F_SUBJECT_ID; f++) {
		pemba_relationship r = good_rel();
		set_field(&r, (enum field)f, NULL);
		expect_write_refused(db, &before, &r, FIELD_WORDS[f]);
		set_field(&r, (enum field)f, "");
		expect_write_refused(db, &before, &r, FIELD_WORDS[f]);
	}
	free_snapshot(&before);
}

static void test_invalid_names_are_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	char *long_name = repeat('a', 129);
	/* Each breaks ^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}
	 * [a-z0-9]$ (types) or ^[a-z][a-z0-9_]{1,62}[a-z0-9]$ (relations). */
	const char *bad[] = {"a",
	                     "ab_",
	                     "Abc",
	                     "1abc",
	                     "_abc",
	                     "ab-c",
	                     "ab c",
	                     "ab.c",
	                     "abc/",
	                     "/abc",
	                     "ab//cd",
	                     "...",
	                     "a#b",
	                     "a:b",
	                     "a@b",
	                     "ab\tc",
	                     "\xc3\xa9t\xc3\xa9",
	                     "ab*",
	                     long_name};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		static const enum field fields[] = {F_RESOURCE_TYPE, F_RELATION,
		                                    F_SUBJECT_TYPE,
		                                    F_SUBJECT_RELATION};
		for (size_t k = 0; k < 4; k++) {
			pemba_relationship r = good_rel();
			/* "..." is the subject itself, not a bad name. */
			if (fields[k] == F_SUBJECT_RELATION &&
			    strcmp(bad[i], "...") == 0)
				continue;
			set_field(&r, fields[k], bad[i]);
			expect_write_refused(db, &before, &r,
			                     FIELD_WORDS[fields[k]]);
		}
	}
	/* A relation name is not a path: "a/b" is refused there. */
	pemba_relationship r = good_rel();
	r.relation = "doc/viewer";
	expect_write_refused(db, &before, &r, "relation");
	free(long_name);
	free_snapshot(&before);
}

static void test_object_id_length_limit(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	char *id1024 = repeat('x', PEMBA_MAX_OBJECT_ID);
	char *id1025 = repeat('y', PEMBA_MAX_OBJECT_ID + 1);

	for (int f = F_RESOURCE_ID; f <= F_SUBJECT_ID; f += 3) {
		pemba_relationship r = good_rel();
		set_field(&r, (enum field)f, id1025);
		expect_write_refused(db, &before, &r, "1025 bytes");
		expect_write_refused(db, &before, &r, FIELD_WORDS[f]);
	}

	/* 1024 bytes is allowed, and reads back intact. */
	pemba_relationship r = good_rel();
	r.resource_id = id1024;
	r.subject_id = id1024;
	pemba_error err;
	assert_int_equal(write_one(db, PEMBA_OP_CREATE, &r, &err), 0);
	snapshot after;
	take_snapshot(db, &after);
	assert_int_equal(after.head, before.head + 1);
	assert_non_null(strstr(after.rels, id1024));
	free_snapshot(&after);

	/* Filters and checks apply the same limit. */
	pemba_filter f = {.resource_type = "document", .resource_id = id1025};
	take_snapshot(db, &after);
	expect_failure(pemba_read_relationships(db, 0, &f, NULL, 0,
	                                        never_called, NULL, &err),
	               &err, PEMBA_EINVAL, "resource id", db, &after);
	pemba_check_request req = {"document", id1025, "view", "user",
	                           "anne",     NULL,   NULL};
	pemba_permissionship perm;
	expect_failure(pemba_check_permission(db, 0, &req, &perm, &err), &err,
	               PEMBA_EINVAL, "resource", db, &after);
	req.resource_id = id1024;
	req.subject_id = id1024;
	assert_int_equal(pemba_check_permission(db, 0, &req, &perm, &err), 0);
	assert_int_equal(perm, PEMBA_HAS_PERMISSION);

	free_snapshot(&after);
	free(id1024);
	free(id1025);
	free_snapshot(&before);
}

static bool allowed_id_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("/_|-=+", c) != NULL;
}

static void test_every_forbidden_id_character_is_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	int refused = 0;
	for (int c = 1; c < 256; c++) {
		if (allowed_id_char(c))
			continue;
		char id[8];
		snprintf(id, sizeof(id), "a%cb", c);
		for (int f = F_RESOURCE_ID; f <= F_SUBJECT_ID; f += 3) {
			pemba_relationship r = good_rel();
			set_field(&r, (enum field)f, id);
			pemba_error err;
			expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err),
			               &err, PEMBA_EINVAL, FIELD_WORDS[f], NULL,
			               NULL);
			refused++;
		}
	}
	/* `*` alone is the wildcard, never a resource id. */
	pemba_relationship r = good_rel();
	r.resource_id = "*";
	expect_write_refused(db, &before, &r, "wildcard");
	/* A wildcard subject has no relation. */
	r = good_rel();
	r.subject_id = "*";
	r.subject_relation = "member";
	expect_write_refused(db, &before, &r, "wildcard");

	snapshot after;
	take_snapshot(db, &after);
	assert_same_snapshot(&before, &after);
	assert_true(refused > 300);
	free_snapshot(&after);
	free_snapshot(&before);
}

static void test_subject_relation_ellipsis_empty_and_null_are_one(void **state)
{
	pemba_db *db = *state;
	pemba_error err;
	pemba_relationship r = good_rel();
	r.subject_id = "erin";
	r.subject_relation = "...";
	assert_int_equal(write_one(db, PEMBA_OP_CREATE, &r, &err), 0);

	snapshot before;
	take_snapshot(db, &before);
	const char *same[] = {"", NULL, "..."};
	for (int i = 0; i < 3; i++) {
		r.subject_relation = same[i];
		expect_failure(write_one(db, PEMBA_OP_CREATE, &r, &err), &err,
		               PEMBA_EEXISTS, "document:doc1#viewer@user:erin",
		               db, &before);
	}
	/* Read back as NULL, the subject itself. */
	assert_non_null(
	    strstr(before.rels, "document:doc1#viewer@user:erin\n"));
	pemba_filter f = {.resource_type = "document",
	                  .subject_type = "user",
	                  .subject_id = "erin",
	                  .subject_relation = "..."};
	snapshot one = {0};
	assert_int_equal(
	    pemba_read_relationships(db, 0, &f, NULL, 0, collect, &one, &err),
	    0);
	assert_string_equal(one.rels, "document:doc1#viewer@user:erin\n");
	free(one.rels);
	free_snapshot(&before);
}

static void test_unknown_operations_are_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	int ops[] = {0, 4, -1, 1000, INT32_MAX, INT32_MIN};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		pemba_relationship r = good_rel();
		expect_failure(write_one(db, (pemba_operation)ops[i], &r, &err),
		               &err, PEMBA_EINVAL, "unknown operation", db,
		               &before);
		/* Also when the bad one is last in a valid batch. */
		pemba_update u[2] = {{PEMBA_OP_TOUCH, good_rel()},
		                     {(pemba_operation)ops[i], good_rel()}};
		u[1].rel.resource_id = "other";
		expect_failure(
		    pemba_write_relationships(db, u, 2, NULL, 0, NULL, &err),
		    &err, PEMBA_EINVAL, "update 2", db, &before);
		pemba_import *imp = NULL;
		expect_failure(
		    pemba_import_begin(db, (pemba_operation)ops[i], &imp, &err),
		    &err, PEMBA_EINVAL, "operation", db, &before);
		assert_null(imp);
		pemba_precondition pre = {
		    .op = (pemba_precondition_op)ops[i],
		    .filter = {.resource_type = "document"}};
		expect_failure(
		    pemba_write_relationships(db, u, 1, &pre, 1, NULL, &err),
		    &err, PEMBA_EINVAL, "precondition 1", db, &before);
	}
	/* An import cannot delete. */
	pemba_import *imp = NULL;
	expect_failure(pemba_import_begin(db, PEMBA_OP_DELETE, &imp, &err),
	               &err, PEMBA_EINVAL, "operation", db, &before);
	free_snapshot(&before);
}

static void test_caveat_and_expiration_traits_checked(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	pemba_relationship r = good_rel();
	r.caveat_name = "some_caveat";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EINVAL, "with some_caveat", db, &before);
	r = good_rel();
	r.caveat_context = "{\"a\": 1}";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EINVAL, "needs a caveat name", db, &before);
	/* An expiration is checked against the schema: this relation does
	 * not allow `user with expiration`. */
	r = good_rel();
	r.expiration_ms = INT64_MIN;
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EINVAL, "with expiration", db, &before);
	/* Formatting extreme expirations must not overflow. */
	int64_t extremes[] = {INT64_MIN, INT64_MAX, -1, 1};
	for (size_t i = 0; i < 4; i++) {
		r.expiration_ms = extremes[i];
		char *text = pemba_format_relationship(&r);
		assert_non_null(strstr(text, "[expiration:"));
		pemba_free(text);
	}
	free_snapshot(&before);
}

static void test_schema_violations_name_the_relationship(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	pemba_relationship r = good_rel();
	r.resource_type = "folder";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EPRECONDITION, "`folder` not found", db, &before);
	r = good_rel();
	r.relation = "editor";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EPRECONDITION, "`editor` not found", db, &before);
	r = good_rel();
	r.relation = "view";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EINVAL, "permission `view`", db, &before);
	r = good_rel();
	r.subject_type = "group";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EINVAL, "not allowed", db, &before);
	r = good_rel();
	r.relation = "owner";
	r.subject_id = "*";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EINVAL, "user:*", db, &before);
	r = good_rel();
	r.subject_type = "group";
	r.subject_relation = "nosuch";
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EPRECONDITION, "`nosuch` not found", db, &before);
	/* A bad update late in a batch refuses the whole batch. */
	pemba_update u[3] = {{PEMBA_OP_TOUCH, good_rel()},
	                     {PEMBA_OP_DELETE, good_rel()},
	                     {PEMBA_OP_TOUCH, good_rel()}};
	u[0].rel.subject_id = "new1";
	u[1].rel.subject_id = "bob";
	u[2].rel.relation = "editor";
	expect_failure(pemba_write_relationships(db, u, 3, NULL, 0, NULL, &err),
	               &err, PEMBA_EPRECONDITION, "editor", db, &before);
	/* The same relationship twice in one batch. */
	u[2] = u[0];
	u[2].op = PEMBA_OP_DELETE;
	expect_failure(pemba_write_relationships(db, u, 3, NULL, 0, NULL, &err),
	               &err, PEMBA_EINVAL, "more than one update", db, &before);
	free_snapshot(&before);
}

/* ====================================================== counts */

static void test_update_count_limit(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	size_t n = PEMBA_MAX_UPDATES + 1;
	pemba_update *u = calloc(n, sizeof(*u));
	char(*ids)[16] = calloc(n, sizeof(*ids));
	assert_non_null(u);
	assert_non_null(ids);
	for (size_t i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "bulk%zu", i);
		u[i].op = PEMBA_OP_TOUCH;
		u[i].rel = good_rel();
		u[i].rel.resource_id = ids[i];
	}
	expect_failure(pemba_write_relationships(db, u, n, NULL, 0, NULL, &err),
	               &err, PEMBA_ELIMIT, "1001", db, &before);
	expect_failure(
	    pemba_write_relationships(db, u, SIZE_MAX, NULL, 0, NULL, &err),
	    &err, PEMBA_ELIMIT, "too many updates", db, &before);
	expect_failure(
	    pemba_write_relationships(db, NULL, 1, NULL, 0, NULL, &err), &err,
	    PEMBA_EINVAL, "updates", db, &before);

	pemba_revision rev;
	assert_int_equal(
	    pemba_write_relationships(db, u, n - 1, NULL, 0, &rev, &err), 0);
	assert_int_equal(rev, before.head + 1);
	/* Zero updates is a valid (empty) write. */
	assert_int_equal(
	    pemba_write_relationships(db, NULL, 0, NULL, 0, &rev, &err), 0);
	free(ids);
	free(u);
	free_snapshot(&before);
}

static void test_precondition_count_limit(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	size_t n = PEMBA_MAX_PRECONDITIONS + 1;
	pemba_precondition *pre = calloc(n, sizeof(*pre));
	assert_non_null(pre);
	for (size_t i = 0; i < n; i++) {
		pre[i].op = PEMBA_PRECONDITION_MUST_NOT_MATCH;
		pre[i].filter.resource_type = "document";
		pre[i].filter.resource_id = "absent";
	}
	pemba_update u = {PEMBA_OP_TOUCH, good_rel()};
	expect_failure(pemba_write_relationships(db, &u, 1, pre, n, NULL, &err),
	               &err, PEMBA_ELIMIT, "1001", db, &before);
	pemba_filter f = {.resource_type = "document"};
	expect_failure(pemba_delete_relationships(db, &f, pre, n, 0, 0, NULL,
	                                          NULL, NULL, &err),
	               &err, PEMBA_ELIMIT, "preconditions", db, &before);
	expect_failure(
	    pemba_write_relationships(db, &u, 1, NULL, 3, NULL, &err), &err,
	    PEMBA_EINVAL, "preconditions", db, &before);
	expect_failure(pemba_delete_relationships(db, &f, NULL, 3, 0, 0, NULL,
	                                          NULL, NULL, &err),
	               &err, PEMBA_EINVAL, "preconditions", db, &before);

	/* The 1000th failing refuses the write. */
	pre[n - 2].filter.resource_id = "doc1";
	expect_failure(
	    pemba_write_relationships(db, &u, 1, pre, n - 1, NULL, &err), &err,
	    PEMBA_EPRECONDITION, "precondition 1000", db, &before);
	pre[n - 2].filter.resource_id = "absent";
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, pre, n - 1, NULL, &err), 0);
	free(pre);
	free_snapshot(&before);
}

/* ====================================================== filters */

static void test_bad_filters_are_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	pemba_filter empty = {0};
	pemba_update u = {PEMBA_OP_TOUCH, good_rel()};

	expect_failure(pemba_read_relationships(db, 0, &empty, NULL, 0,
	                                        never_called, NULL, &err),
	               &err, PEMBA_EINVAL, "type", db, &before);
	expect_failure(pemba_delete_relationships(db, &empty, NULL, 0, 0, 0,
	                                          NULL, NULL, NULL, &err),
	               &err, PEMBA_EINVAL, "resource type", db, &before);
	pemba_precondition pre = {PEMBA_PRECONDITION_MUST_NOT_MATCH, {0}};
	expect_failure(
	    pemba_write_relationships(db, &u, 1, &pre, 1, NULL, &err), &err,
	    PEMBA_EINVAL, "resource type", db, &before);

	struct {
		pemba_filter f;
		int code;
		const char *needle;
	} cases[] = {
	    {{.resource_type = "Document"}, PEMBA_EINVAL, "resource type"},
	    {{.resource_type = ""}, PEMBA_EINVAL, "resource type"},
	    {{.resource_type = "folder"}, PEMBA_EPRECONDITION, "`folder`"},
	    {{.resource_type = "document", .resource_id = ""},
	     PEMBA_EINVAL,
	     "resource id"},
	    {{.resource_type = "document", .resource_id = "a b"},
	     PEMBA_EINVAL,
	     "resource id"},
	    {{.resource_type = "document", .relation = "Viewer"},
	     PEMBA_EINVAL,
	     "relation"},
	    {{.resource_type = "document", .relation = "editor"},
	     PEMBA_EPRECONDITION,
	     "`editor`"},
	    {{.resource_type = "document", .subject_id = "anne"},
	     PEMBA_EINVAL,
	     "subject type"},
	    {{.resource_type = "document", .subject_relation = "member"},
	     PEMBA_EINVAL,
	     "subject type"},
	    {{.resource_type = "document", .subject_type = "u"},
	     PEMBA_EINVAL,
	     "subject type"},
	    {{.resource_type = "document",
	      .subject_type = "user",
	      .subject_id = "a\nb"},
	     PEMBA_EINVAL,
	     "subject id"},
	    {{.resource_type = "document",
	      .subject_type = "group",
	      .subject_relation = "Member"},
	     PEMBA_EINVAL,
	     "subject relation"},
	    {{.resource_type = "document",
	      .subject_type = "group",
	      .subject_relation = "nosuch"},
	     PEMBA_EPRECONDITION,
	     "`nosuch`"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		expect_failure(
		    pemba_read_relationships(db, 0, &cases[i].f, NULL, 0,
		                             never_called, NULL, &err),
		    &err, cases[i].code, cases[i].needle, db, &before);
		expect_failure(
		    pemba_delete_relationships(db, &cases[i].f, NULL, 0, 0, 0,
		                               NULL, NULL, NULL, &err),
		    &err, cases[i].code, cases[i].needle, db, &before);
		pre.filter = cases[i].f;
		expect_failure(
		    pemba_write_relationships(db, &u, 1, &pre, 1, NULL, &err),
		    &err, cases[i].code, cases[i].needle, db, &before);
	}
	/* A delete over its limit without allow_partial deletes nothing. */
	pemba_filter all_docs = {.resource_type = "document"};
	expect_failure(pemba_delete_relationships(db, &all_docs, NULL, 0, 1, 0,
	                                          NULL, NULL, NULL, &err),
	               &err, PEMBA_ELIMIT, "more than 1", db, &before);
	free_snapshot(&before);
}

/* ====================================================== revisions */

static void test_future_and_head_revisions(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	pemba_filter f = {.resource_type = "document"};
	pemba_check_request req = {"document", "doc1", "view", "user",
	                           "bob",      NULL,   NULL};
	pemba_permissionship perm = 0;
	char *text = NULL;
	pemba_revision future[] = {before.head + 1, before.head + 1000,
	                           UINT64_MAX, (pemba_revision)INT64_MAX + 1};
	for (size_t i = 0; i < 4; i++) {
		expect_failure(pemba_read_relationships(db, future[i], &f, NULL,
		                                        0, never_called, NULL,
		                                        &err),
		               &err, PEMBA_EREVISION, "revision", db, &before);
		expect_failure(
		    pemba_check_permission(db, future[i], &req, &perm, &err),
		    &err, PEMBA_EREVISION, "revision", db, &before);
		expect_failure(pemba_read_schema(db, future[i], &text, &err),
		               &err, PEMBA_EREVISION, "revision", db, &before);
		assert_null(text);
	}
	/* 0 is the head; the head itself and older revisions are readable. */
	assert_int_equal(pemba_check_permission(db, 0, &req, &perm, &err), 0);
	assert_int_equal(perm, PEMBA_HAS_PERMISSION);
	assert_int_equal(
	    pemba_check_permission(db, before.head, &req, &perm, &err), 0);
	assert_int_equal(perm, PEMBA_HAS_PERMISSION);
	/* Revision 1 holds the schema only: no relationships yet. */
	assert_int_equal(pemba_check_permission(db, 1, &req, &perm, &err), 0);
	assert_int_equal(perm, PEMBA_NO_PERMISSION);
	free_snapshot(&before);
}

static void test_empty_datastore_refuses_cleanly(void **state)
{
	(void)state;
	pemba_db *db;
	pemba_error err;
	assert_int_equal(pemba_open("sqlite::memory:", NULL, &db, &err), 0);
	snapshot before;
	take_snapshot(db, &before);
	assert_int_equal(before.head, 0);
	char *text = NULL;
	expect_failure(pemba_read_schema(db, 0, &text, &err), &err,
	               PEMBA_ENOTFOUND, "schema", db, &before);
	expect_failure(pemba_read_schema(db, 1, &text, &err), &err,
	               PEMBA_EREVISION, "revision", db, &before);
	pemba_check_request req = {"document", "doc1", "view", "user",
	                           "bob",      NULL,   NULL};
	pemba_permissionship perm;
	expect_failure(pemba_check_permission(db, 0, &req, &perm, &err), &err,
	               PEMBA_EPRECONDITION, "`document` not found", db,
	               &before);
	pemba_relationship r = good_rel();
	expect_failure(write_one(db, PEMBA_OP_TOUCH, &r, &err), &err,
	               PEMBA_EPRECONDITION, "`document` not found", db,
	               &before);
	pemba_filter f = {.resource_type = "document"};
	expect_failure(pemba_delete_relationships(db, &f, NULL, 0, 0, 0, NULL,
	                                          NULL, NULL, &err),
	               &err, PEMBA_EPRECONDITION, "`document` not found", db,
	               &before);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	expect_failure(pemba_import_add(imp, &r, 1, &err), &err,
	               PEMBA_EPRECONDITION, "`document` not found", NULL, NULL);
	expect_failure(pemba_import_commit(imp, NULL, NULL, &err), &err,
	               PEMBA_EINVAL, "failed", db, &before);
	free_snapshot(&before);
	pemba_close(db);
}

/* ====================================================== reads */

static void test_read_after_a_cursor_that_does_not_exist(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	pemba_filter f = {.resource_type = "document"};

	/* A cursor between two rows: reading resumes after its place. */
	pemba_relationship after = good_rel();
	after.resource_id = "doc1z";
	snapshot page = {0};
	assert_int_equal(pemba_read_relationships(db, 0, &f, &after, 0, collect,
	                                          &page, &err),
	                 0);
	assert_string_equal(page.rels,
	                    "document:doc2#viewer@group:eng#member\n");
	free(page.rels);

	/* Past the end: nothing. */
	after.resource_id = "zzzz";
	assert_int_equal(pemba_read_relationships(db, 0, &f, &after, 0,
	                                          never_called, NULL, &err),
	                 0);

	/* Names the schema does not know, or that are not names at all:
	 * refused or read past, never a crash, never a change. */
	const char *odd[] = {"nosuch_type", "Bad Type", "", "...", "x\xff\xfe"};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		for (int field = F_RESOURCE_TYPE; field <= F_SUBJECT_RELATION;
		     field++) {
			after = good_rel();
			set_field(&after, (enum field)field, odd[i]);
			snapshot seen = {0};
			int rc = pemba_read_relationships(db, 0, &f, &after, 0,
			                                  collect, &seen, &err);
			if (rc != 0) {
				if (rc != PEMBA_EINVAL ||
				    err.code != PEMBA_EINVAL ||
				    (!strstr(err.message, "after") &&
				     !strstr(err.message, "cursor")))
					fail_msg(
					    "after with %s = \"%s\": rc %d, "
					    "message \"%s\"",
					    FIELD_WORDS[field], odd[i], rc,
					    err.message);
			}
			free(seen.rels);
		}
	}
	after = good_rel();
	after.subject_id = NULL;
	expect_failure(pemba_read_relationships(db, 0, &f, &after, 0,
	                                        never_called, NULL, &err),
	               &err, PEMBA_EINVAL, "after", db, &before);
	snapshot now;
	take_snapshot(db, &now);
	assert_same_snapshot(&before, &now);
	free_snapshot(&now);
	free_snapshot(&before);
}

/* ====================================================== checks */

static void test_bad_check_requests_are_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	pemba_permissionship perm = 0;
	struct {
		pemba_check_request req;
		int code;
		const char *needle;
	} cases[] = {
	    {{NULL, "doc1", "view", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "resource"},
	    {{"", "doc1", "view", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "resource"},
	    {{"Doc", "doc1", "view", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "resource"},
	    {{"document", NULL, "view", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "resource"},
	    {{"document", "a b", "view", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "resource"},
	    {{"document", "doc1", NULL, "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "permission"},
	    {{"document", "doc1", "", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "permission"},
	    {{"document", "doc1", "View!", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "permission"},
	    {{"document", "doc1", "view", NULL, "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "subject"},
	    {{"document", "doc1", "view", "user", NULL, NULL, NULL},
	     PEMBA_EINVAL,
	     "subject"},
	    {{"document", "doc1", "view", "user", "", NULL, NULL},
	     PEMBA_EINVAL,
	     "subject"},
	    {{"document", "doc1", "view", "user", "bob", "Member", NULL},
	     PEMBA_EINVAL,
	     "subject relation"},
	    {{"document", "*", "view", "user", "bob", NULL, NULL},
	     PEMBA_EINVAL,
	     "wildcard"},
	    {{"document", "doc1", "view", "user", "*", NULL, NULL},
	     PEMBA_EINVAL,
	     "wildcard"},
	    {{"folder", "doc1", "view", "user", "bob", NULL, NULL},
	     PEMBA_EPRECONDITION,
	     "`folder`"},
	    {{"document", "doc1", "edit", "user", "bob", NULL, NULL},
	     PEMBA_EPRECONDITION,
	     "`edit`"},
	    {{"document", "doc1", "view", "robot", "bob", NULL, NULL},
	     PEMBA_EPRECONDITION,
	     "`robot`"},
	    {{"document", "doc1", "view", "group", "eng", "nosuch", NULL},
	     PEMBA_EPRECONDITION,
	     "`nosuch`"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		expect_failure(
		    pemba_check_permission(db, 0, &cases[i].req, &perm, &err),
		    &err, cases[i].code, cases[i].needle, db, &before);
		assert_int_equal(perm, 0);
	}
	/* "", NULL and "..." all mean the subject itself. */
	const char *selves[] = {NULL, "", "..."};
	for (int i = 0; i < 3; i++) {
		pemba_check_request req = {
		    "document", "doc1", "view", "user", "bob", selves[i], NULL};
		assert_int_equal(
		    pemba_check_permission(db, 0, &req, &perm, &err), 0);
		assert_int_equal(perm, PEMBA_HAS_PERMISSION);
	}
	free_snapshot(&before);
}

/* ====================================================== schema text */

static void test_bad_schema_text_is_refused(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	char *canonical = NULL;

	/* Embedded NUL bytes, wherever they are. */
	static const char with_nul[] = "definition user {}\0definition x {}";
	expect_failure(
	    pemba_write_schema(db, with_nul, sizeof(with_nul) - 1, NULL, &err),
	    &err, PEMBA_EINVAL, NULL, db, &before);
	assert_true(err.line >= 1);
	static const char nul_in_comment[] = "// a \0 b\ndefinition user {}";
	expect_failure(pemba_write_schema(db, nul_in_comment,
	                                  sizeof(nul_in_comment) - 1, NULL,
	                                  &err),
	               &err, PEMBA_EINVAL, NULL, db, &before);
	expect_failure(pemba_check_schema(with_nul, sizeof(with_nul) - 1,
	                                  &canonical, &err),
	               &err, PEMBA_EINVAL, NULL, NULL, NULL);
	assert_null(canonical);

	/* Garbage, and a schema that does not type-check. */
	static const char garbage[] = "\xff\xfe{{{ definition";
	expect_failure(
	    pemba_write_schema(db, garbage, sizeof(garbage) - 1, NULL, &err),
	    &err, PEMBA_EINVAL, NULL, db, &before);
	static const char unknown[] =
	    "definition doc {\n\trelation viewer: nosuch\n}\n";
	expect_failure(
	    pemba_write_schema(db, unknown, sizeof(unknown) - 1, NULL, &err),
	    &err, PEMBA_EPRECONDITION, "`nosuch`", db, &before);

	/* Deep nesting of a permission expression. */
	size_t depth = 100000;
	char *deep = malloc(2 * depth + 200);
	assert_non_null(deep);
	size_t n = (size_t)sprintf(deep, "definition user {}\ndefinition doc "
	                                 "{\nrelation viewer: user\n"
	                                 "permission view = ");
	memset(deep + n, '(', depth);
	n += depth;
	n += (size_t)sprintf(deep + n, "viewer");
	memset(deep + n, ')', depth);
	n += depth;
	n += (size_t)sprintf(deep + n, "\n}\n");
	expect_failure(pemba_write_schema(db, deep, n, NULL, &err), &err,
	               PEMBA_EINVAL, "depth", db, &before);
	free(deep);

	/* A very long flat expression: no recursion per term. */
	size_t terms = 100000;
	char *wide = malloc(terms * 10 + 200);
	assert_non_null(wide);
	n = (size_t)sprintf(wide, "definition user {}\ndefinition doc "
	                          "{\nrelation viewer: user\n"
	                          "permission view = viewer");
	for (size_t i = 1; i < terms; i++)
		n += (size_t)sprintf(wide + n, " %c viewer", "+&-"[i % 3]);
	n += (size_t)sprintf(wide + n, "\n}\n");
	int rc = pemba_check_schema(wide, n, NULL, &err);
	assert_true(rc == 0 || rc == PEMBA_EINVAL || rc == PEMBA_ELIMIT);
	if (rc)
		assert_true(err.message[0] != '\0');
	free(wide);

	/* 10 MB: comment, then an unterminated definition. */
	size_t big = 10u << 20;
	char *huge = malloc(big);
	assert_non_null(huge);
	memset(huge, ' ', big);
	memcpy(huge, "definition user {\n", 18);
	expect_failure(pemba_write_schema(db, huge, big, NULL, &err), &err,
	               PEMBA_ELIMIT, "at most", db, &before);
	/* 10 MB of valid definitions: refused by size, before parsing. */
	n = 0;
	for (size_t i = 0; n + 64 < big; i++)
		n += (size_t)sprintf(huge + n, "definition type%zu {}\n", i);
	expect_failure(pemba_write_schema(db, huge, n, NULL, &err), &err,
	               PEMBA_ELIMIT, "bytes", db, &before);
	expect_failure(pemba_check_schema(huge, n, NULL, &err), &err,
	               PEMBA_ELIMIT, "bytes", db, &before);
	/* Just under the limit is parsed. */
	n = 0;
	for (size_t i = 0; n + 64 < (4u << 20) - 64; i++)
		n += (size_t)sprintf(huge + n, "definition type%zu {}\n", i);
	char *text = NULL;
	assert_int_equal(pemba_check_schema(huge, n, &text, &err), 0);
	assert_non_null(strstr(text, "definition type0 {}"));
	pemba_free(text);
	free(huge);
	free_snapshot(&before);
}

static void test_empty_schema_text(void **state)
{
	pemba_db *db = *state;
	snapshot before;
	take_snapshot(db, &before);
	pemba_error err;
	/* An empty schema would orphan every stored relationship. */
	int rc = pemba_write_schema(db, "", 0, NULL, &err);
	if (rc != 0) {
		assert_true(err.message[0] != '\0');
		snapshot after;
		take_snapshot(db, &after);
		assert_same_snapshot(&before, &after);
		free_snapshot(&after);
	}
	char *canonical = NULL;
	rc = pemba_check_schema("", 0, &canonical, &err);
	if (rc == 0)
		pemba_free(canonical);
	free_snapshot(&before);
}

/* ====================================================== pemba_open */

static void expect_open_fails(const char *uri, const pemba_options *opts,
                              int code, const char *needle)
{
	pemba_db *db = (pemba_db *)&db; /* must come back NULL or untouched */
	pemba_db *sentinel = db;
	pemba_error err;
	int rc = pemba_open(uri, opts, &db, &err);
	if (rc == 0)
		pemba_close(db);
	expect_failure(rc, &err, code, needle, NULL, NULL);
	assert_true(db == NULL || db == sentinel);
}

static void test_bad_uris_are_refused(void **state)
{
	(void)state;
	char dir[] = "/tmp/pemba-api-inputs-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char uri[600], path[512];

	expect_open_fails(NULL, NULL, PEMBA_EINVAL, "URI");
	expect_open_fails("", NULL, PEMBA_EINVAL, "URI");
	expect_open_fails("sqlite:", NULL, PEMBA_EINVAL, "sqlite:");
	expect_open_fails("sqlite://", NULL, PEMBA_EINVAL, "sqlite://");
	expect_open_fails("sqlite:///", NULL, PEMBA_EINVAL, "sqlite:///");
	expect_open_fails("sqlite:memory", NULL, PEMBA_EINVAL, "URI");
	expect_open_fails("sqlite://rel.db", NULL, PEMBA_EINVAL, "URI");
	expect_open_fails("mysql://x", NULL, PEMBA_EINVAL, "mysql");
	expect_open_fails("postgres://127.0.0.1:1/none", NULL, PEMBA_EIO,
	                  "datastore unavailable");
	expect_open_fails("\xff\xfe garbage \x01", NULL, PEMBA_EINVAL, "URI");
	expect_open_fails("SQLITE::memory:", NULL, PEMBA_EINVAL, "URI");

	/* A directory, with and without a trailing slash. */
	snprintf(uri, sizeof(uri), "sqlite://%s/", dir);
	expect_open_fails(uri, NULL, PEMBA_EINVAL, dir);
	snprintf(uri, sizeof(uri), "sqlite://%s", dir);
	expect_open_fails(uri, NULL, PEMBA_EIO, dir);
	/* A file in a directory that does not exist, and one that cannot
	 * be created at all. */
	snprintf(uri, sizeof(uri), "sqlite://%s/no/such/dir/x.db", dir);
	expect_open_fails(uri, NULL, PEMBA_EIO, "x.db");
	expect_open_fails("sqlite:///proc/pemba-test.db", NULL, PEMBA_EIO,
	                  "/proc/pemba-test.db");

	/* A file that is not an SQLite database is left as it was. */
	snprintf(path, sizeof(path), "%s/garbage.db", dir);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	char junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 7 + 3);
	assert_int_equal(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
	fclose(f);
	snprintf(uri, sizeof(uri), "sqlite://%s", path);
	/* Not a datastore: the caller named the wrong file (EINVAL, as for
	 * an SQLite database that is not pemba's), not an I/O failure. */
	expect_open_fails(uri, NULL, PEMBA_EINVAL,
	                  "is not an SQLite database file");
	f = fopen(path, "rb");
	char back[sizeof(junk) + 1];
	assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(junk));
	fclose(f);
	assert_memory_equal(back, junk, sizeof(junk));
	unlink(path);

	/* A text file. */
	snprintf(path, sizeof(path), "%s/text.db", dir);
	f = fopen(path, "w");
	fputs("definition user {}\n", f);
	fclose(f);
	snprintf(uri, sizeof(uri), "sqlite://%s", path);
	expect_open_fails(uri, NULL, PEMBA_EINVAL, "text.db");
	unlink(path);

	/* Bad options. */
	pemba_options opts = {.gc_window_seconds = -1};
	expect_open_fails("sqlite::memory:", &opts, PEMBA_EINVAL, "gc window");
	opts.gc_window_seconds = INT64_MIN;
	expect_open_fails("sqlite::memory:", &opts, PEMBA_EINVAL, "gc window");
	/* A huge window is clamped, not overflowed. */
	opts.gc_window_seconds = INT64_MAX;
	pemba_db *db;
	pemba_error err;
	assert_int_equal(pemba_open("sqlite::memory:", &opts, &db, &err), 0);
	assert_int_equal(pemba_gc(db, NULL, &err), 0);
	pemba_close(db);

	/* No out pointer. */
	pemba_error err2;
	expect_failure(pemba_open("sqlite::memory:", NULL, NULL, &err2), &err2,
	               PEMBA_EINVAL, NULL, NULL, NULL);
	rmdir(dir);
}

/* Reads n bytes of a file's start. */
static void read_head(const char *path, unsigned char *buf, size_t n)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(buf, 1, n, f), n);
	fclose(f);
}

/* An SQLite database that some other program owns must not be touched by
 * a failed open: not switched to WAL, not given pemba's tables. */
static void test_foreign_sqlite_database_is_left_alone(void **state)
{
	(void)state;
	char dir[] = "/tmp/pemba-api-inputs-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[512], uri[600];
	snprintf(path, sizeof(path), "%s/foreign.db", dir);
	snprintf(uri, sizeof(uri), "sqlite://%s", path);

	sqlite3 *other;
	assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
	assert_int_equal(sqlite3_exec(other,
	                              "CREATE TABLE t(x); "
	                              "INSERT INTO t VALUES (1);",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(other);

	unsigned char before[100], after[100];
	read_head(path, before, sizeof(before));
	expect_open_fails(uri, NULL, PEMBA_EINVAL, "not a pemba datastore");
	read_head(path, after, sizeof(after));
	/* Bytes 18 and 19 are 2 for WAL; the rest must not move either. */
	assert_memory_equal(before, after, sizeof(before));

	char side[600];
	snprintf(side, sizeof(side), "%s-wal", path);
	assert_int_not_equal(access(side, F_OK), 0);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", path);
	unlink(side);
	unlink(path);
	rmdir(dir);
}

/* ====================================================== relationship text */

static void test_parse_relationship_garbage(void **state)
{
	(void)state;
	pemba_relationship rel;
	char *storage = (char *)"x";
	pemba_error err;

	expect_failure(pemba_parse_relationship(NULL, &rel, &storage, &err),
	               &err, PEMBA_EINVAL, "NULL", NULL, NULL);
	assert_null(storage);
	expect_failure(pemba_parse_relationship("document:1#viewer@user:anne",
	                                        NULL, &storage, &err),
	               &err, PEMBA_EINVAL, "NULL", NULL, NULL);
	expect_failure(pemba_parse_relationship("document:1#viewer@user:anne",
	                                        &rel, NULL, &err),
	               &err, PEMBA_EINVAL, "NULL", NULL, NULL);

	char *long_id = repeat('x', PEMBA_MAX_OBJECT_ID + 1);
	char long_rel[PEMBA_MAX_OBJECT_ID + 64];
	snprintf(long_rel, sizeof(long_rel), "document:%s#viewer@user:anne",
	         long_id);
	char *huge = repeat('a', (2u << 20));
	const char *garbage[] = {
	    "",
	    "   ",
	    "document",
	    "document:",
	    "document:1",
	    "document:1#",
	    "document:1#viewer",
	    "document:1#viewer@",
	    "document:1#viewer@user",
	    "document:1#viewer@user:",
	    "document:1#viewer@user:anne#",
	    "document:1#viewer@user:anne#Member",
	    "document:1#viewer@user:anne[",
	    "document:1#viewer@user:anne[]",
	    "document:1#viewer@user:anne[c:{]",
	    "document:1#viewer@user:anne[c:{\"a\":]",
	    "document:1#viewer@user:anne[expiration:]",
	    "document:1#viewer@user:anne[expiration:yesterday]",
	    "document:1#viewer@user:anne[expiration:2024-13-45T99:99:99Z]",
	    "document:1#viewer@user:anne[expiration:99999999999-01-01T00:00:"
	    "00Z]",
	    "document:1#viewer@user:anne trailing",
	    "document:*#viewer@user:anne",
	    "document:1#viewer@user:*#member",
	    "Document:1#viewer@user:anne",
	    "document:a b#viewer@user:anne",
	    "document:1#viewer@user:an\xffne",
	    "document:1#viewer@user:an\x01ne",
	    "@@@@:::###",
	    "\xff\xfe\xfd",
	    long_rel,
	    huge,
	};
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		storage = (char *)"x";
		int rc =
		    pemba_parse_relationship(garbage[i], &rel, &storage, &err);
		if (rc != PEMBA_EINVAL || err.code != PEMBA_EINVAL ||
		    !err.message[0] || storage != NULL)
			fail_msg("input %zu (%.40s): rc %d, message \"%s\"", i,
			         garbage[i], rc, err.message);
	}
	/* Deeply nested caveat context. */
	size_t depth = 10000;
	char *nested = malloc(2 * depth + 64);
	size_t n = (size_t)sprintf(nested, "document:1#viewer@user:anne[c:");
	for (size_t i = 0; i < depth; i++)
		nested[n++] = i == 0 ? '{' : '[';
	nested[n] = '\0';
	assert_int_equal(pemba_parse_relationship(nested, &rel, &storage, &err),
	                 PEMBA_EINVAL);
	free(nested);
	free(huge);
	free(long_id);
}

/* ====================================================== imports */

static void test_import_with_bad_input_changes_nothing(void **state)
{
	pemba_db *db = *state;
	pemba_error err;
	pemba_import *imp;

	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	/* An open import holds no lock: the handle's other writes work
	 * meanwhile, and a second import may begin. */
	pemba_relationship r = good_rel();
	r.subject_id = "bob"; /* stored already: the TOUCH changes nothing */
	assert_int_equal(write_one(db, PEMBA_OP_TOUCH, &r, &err), 0);
	pemba_import *second = NULL;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &second, &err),
	                 0);
	pemba_import_abort(second);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	snapshot before;
	take_snapshot(db, &before);

	expect_failure(pemba_import_add(imp, NULL, 2, &err), &err, PEMBA_EINVAL,
	               NULL, NULL, NULL);
	assert_int_equal(pemba_import_add(imp, NULL, 0, &err), 0);
	pemba_relationship rels[2] = {good_rel(), good_rel()};
	rels[0].subject_id = "imported";
	rels[1].subject_id = "bad id";
	expect_failure(pemba_import_add(imp, rels, 2, &err), &err, PEMBA_EINVAL,
	               "subject id", NULL, NULL);
	/* After a failure only abort/commit-as-abort is possible. */
	expect_failure(pemba_import_add(imp, rels, 1, &err), &err, PEMBA_EINVAL,
	               "abort", NULL, NULL);
	expect_failure(pemba_import_commit(imp, NULL, NULL, &err), &err,
	               PEMBA_EINVAL, "nothing was written", db, &before);

	/* Aborted imports leave nothing behind either. */
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(pemba_import_add(imp, rels, 1, &err), 0);
	pemba_import_abort(imp);
	snapshot after;
	take_snapshot(db, &after);
	assert_same_snapshot(&before, &after);
	free_snapshot(&after);

	/* CREATE of an existing relationship fails the import when it
	 * commits (rows are staged without looking at the datastore). */
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	r = good_rel();
	r.subject_id = "bob";
	pemba_relationship both[2] = {rels[0], r};
	assert_int_equal(pemba_import_add(imp, both, 2, &err), 0);
	expect_failure(pemba_import_commit(imp, NULL, NULL, &err), &err,
	               PEMBA_EEXISTS, "document:doc1#viewer@user:bob", db,
	               &before);
	free_snapshot(&before);
}

/* ====================================================== main */

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_null_handle_is_refused_by_every_function),
	    cmocka_unit_test_setup_teardown(test_null_out_pointers_are_refused,
	                                    setup, teardown),
	    cmocka_unit_test(test_strerror_never_returns_null),
	    cmocka_unit_test_setup_teardown(
	        test_missing_relationship_fields_are_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_invalid_names_are_refused,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_object_id_length_limit, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        test_every_forbidden_id_character_is_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_subject_relation_ellipsis_empty_and_null_are_one, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_operations_are_refused,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_caveat_and_expiration_traits_checked, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_schema_violations_name_the_relationship, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_update_count_limit, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_precondition_count_limit,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_filters_are_refused, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_future_and_head_revisions,
	                                    setup, teardown),
	    cmocka_unit_test(test_empty_datastore_refuses_cleanly),
	    cmocka_unit_test_setup_teardown(
	        test_read_after_a_cursor_that_does_not_exist, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_check_requests_are_refused,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_schema_text_is_refused,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_schema_text, setup,
	                                    teardown),
	    cmocka_unit_test(test_bad_uris_are_refused),
	    cmocka_unit_test(test_foreign_sqlite_database_is_left_alone),
	    cmocka_unit_test(test_parse_relationship_garbage),
	    cmocka_unit_test_setup_teardown(
	        test_import_with_bad_input_changes_nothing, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
