/*
 * test_import.c -- bulk import (pemba_import_*): one revision for any
 * number of relationships, validation as for writes, all-or-nothing, and
 * idempotent re-runs with TOUCH.
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

static const char *SCHEMA = "definition user {}\n"
                            "definition document {\n"
                            "  relation viewer: user\n"
                            "  permission view = viewer\n"
                            "}\n";

typedef struct rel_buf {
	char doc[32], user[32];
	pemba_relationship rel;
} rel_buf;

/* Relationship i: document:d<i/10>#viewer@user:u<i>. */
static void make_rel(rel_buf *b, size_t i)
{
	snprintf(b->doc, sizeof(b->doc), "d%zu", i / 10);
	snprintf(b->user, sizeof(b->user), "u%zu", i);
	b->rel = (pemba_relationship){.resource_type = "document",
	                              .resource_id = b->doc,
	                              .relation = "viewer",
	                              .subject_type = "user",
	                              .subject_id = b->user};
}

static pemba_db *setup(void)
{
	pemba_db *db;
	pemba_error err;
	assert_int_equal(pemba_open("sqlite::memory:", NULL, &db, &err), 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	return db;
}

static int count_fn(void *ctx, const pemba_relationship *rel)
{
	(*(size_t *)ctx)++;
	return 0;
}

static size_t count_rels(pemba_db *db)
{
	size_t n = 0;
	pemba_error err;
	pemba_filter f = {.resource_type = "document"};
	assert_int_equal(pemba_read_relationships(db, PEMBA_REVISION_HEAD, &f,
	                                          NULL, 0, count_fn, &n, &err),
	                 0);
	return n;
}

/* Adds relationships [first, first + n) in chunks of 1000. */
static int add_range(pemba_import *imp, size_t first, size_t n,
                     pemba_error *err)
{
	rel_buf *bufs = calloc(1000, sizeof(*bufs));
	pemba_relationship *rels = calloc(1000, sizeof(*rels));
	int rc = 0;
	for (size_t done = 0; done < n && rc == 0;) {
		size_t k = n - done < 1000 ? n - done : 1000;
		for (size_t i = 0; i < k; i++) {
			make_rel(&bufs[i], first + done + i);
			rels[i] = bufs[i].rel;
		}
		rc = pemba_import_add(imp, rels, k, err);
		done += k;
	}
	free(bufs);
	free(rels);
	return rc;
}

static void test_import_commits_everything_as_one_revision(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_revision before, rev;
	assert_int_equal(pemba_head_revision(db, &before, &err), 0);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 0, 2500, &err), 0);
	uint64_t count = 0;
	assert_int_equal(pemba_import_commit(imp, &rev, &count, &err), 0);
	assert_int_equal(count, 2500);
	assert_int_equal(rev, before + 1);
	assert_int_equal(count_rels(db), 2500);

	pemba_check_request q = {.resource_type = "document",
	                         .resource_id = "d249",
	                         .permission = "view",
	                         .subject_type = "user",
	                         .subject_id = "u2499"};
	pemba_permissionship p;
	assert_int_equal(pemba_check_permission(db, 0, &q, &p, &err), 0);
	assert_int_equal(p, PEMBA_HAS_PERMISSION);
	/* The revision before the import sees none of it. */
	assert_int_equal(pemba_check_permission(db, before, &q, &p, &err), 0);
	assert_int_equal(p, PEMBA_NO_PERMISSION);
	pemba_close(db);
}

static void test_import_touch_rerun_is_idempotent(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	for (int round = 0; round < 2; round++) {
		pemba_import *imp;
		assert_int_equal(
		    pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
		/* The second round overlaps the first and extends it. */
		assert_int_equal(add_range(imp, 0, 1500 + 500 * round, &err),
		                 0);
		assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err),
		                 0);
	}
	assert_int_equal(count_rels(db), 2000);
	pemba_close(db);
}

static void test_import_create_of_existing_fails_and_changes_nothing(
    void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 0, 10, &err), 0);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);

	pemba_revision head;
	assert_int_equal(pemba_head_revision(db, &head, &err), 0);
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 10, 100, &err), 0);
	assert_int_equal(add_range(imp, 5, 1, &err), PEMBA_EEXISTS);
	assert_non_null(strstr(err.message, "document:d0#viewer@user:u5"));
	/* A failed import can only be aborted; commit refuses. */
	assert_int_equal(add_range(imp, 200, 1, &err), PEMBA_EINVAL);
	assert_int_not_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	assert_int_equal(count_rels(db), 10);
	pemba_revision after;
	assert_int_equal(pemba_head_revision(db, &after, &err), 0);
	assert_int_equal(after, head);
	pemba_close(db);
}

static void test_import_validates_like_writes(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 0, 50, &err), 0);
	pemba_relationship bad = {.resource_type = "document",
	                          .resource_id = "x",
	                          .relation = "view", /* a permission */
	                          .subject_type = "user",
	                          .subject_id = "anne"};
	assert_int_equal(pemba_import_add(imp, &bad, 1, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "document:x#view@user:anne"));
	pemba_import_abort(imp);
	assert_int_equal(count_rels(db), 0);
	pemba_close(db);
}

/* One add call with a conflict and an invalid row: the error is the one
 * of the earlier row, as if the rows were written one at a time. */
static void test_import_reports_the_first_failing_row(void **state)
{
	pemba_relationship bad = {.resource_type = "document",
	                          .resource_id = "x",
	                          .relation = "view", /* a permission */
	                          .subject_type = "user",
	                          .subject_id = "anne"};
	/* {conflict, invalid}: conflict at 70 then invalid at 100 (other
	 * chunks); invalid at 20 then conflict at 30 (one chunk). */
	const size_t conflict_at[2] = {70, 30}, bad_at[2] = {100, 20};
	const int want[2] = {PEMBA_EEXISTS, PEMBA_EINVAL};
	for (int k = 0; k < 2; k++) {
		pemba_db *db = setup();
		pemba_error err;
		pemba_import *imp;
		assert_int_equal(
		    pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err), 0);
		assert_int_equal(add_range(imp, 5, 1, &err), 0);
		rel_buf bufs[150];
		pemba_relationship rels[150];
		for (size_t i = 0; i < 150; i++) {
			make_rel(&bufs[i], 1000 + i);
			rels[i] = bufs[i].rel;
		}
		make_rel(&bufs[conflict_at[k]], 5);
		rels[conflict_at[k]] = bufs[conflict_at[k]].rel;
		rels[bad_at[k]] = bad;
		assert_int_equal(pemba_import_add(imp, rels, 150, &err),
		                 want[k]);
		assert_non_null(strstr(err.message,
		                       k == 0 ? "document:d0#viewer@user:u5"
		                              : "document:x#view@user:anne"));
		pemba_import_abort(imp);
		assert_int_equal(count_rels(db), 0);
		pemba_close(db);
	}
}

static void test_import_blocks_other_writes_on_the_handle(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err),
	                 0);
	rel_buf b;
	make_rel(&b, 1);
	pemba_update u = {.op = PEMBA_OP_TOUCH, .rel = b.rel};
	assert_int_not_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err), 0);
	pemba_import_abort(imp);
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err), 0);
	assert_int_equal(count_rels(db), 1);
	pemba_close(db);
}

static void test_import_rejects_delete_operation(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp = NULL;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_DELETE, &imp, &err),
	                 PEMBA_EINVAL);
	assert_null(imp);
	pemba_close(db);
}

static void test_close_aborts_an_open_import(void **state)
{
	char dir[] = "/tmp/pemba-import-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char uri[128];
	snprintf(uri, sizeof(uri), "sqlite://%s/i.db", dir);
	pemba_db *db;
	pemba_error err;
	assert_int_equal(pemba_open(uri, NULL, &db, &err), 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	pemba_import *imp, *second;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err),
	                 0);
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &second, &err),
	                 PEMBA_EINVAL);
	assert_int_equal(add_range(imp, 0, 100, &err), 0);
	pemba_close(db); /* aborts the import */
	assert_int_equal(pemba_open(uri, NULL, &db, &err), 0);
	assert_int_equal(count_rels(db), 0);
	pemba_close(db);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_import_commits_everything_as_one_revision),
	    cmocka_unit_test(test_import_touch_rerun_is_idempotent),
	    cmocka_unit_test(
		test_import_create_of_existing_fails_and_changes_nothing),
	    cmocka_unit_test(test_import_validates_like_writes),
	    cmocka_unit_test(test_import_reports_the_first_failing_row),
	    cmocka_unit_test(test_import_blocks_other_writes_on_the_handle),
	    cmocka_unit_test(test_import_rejects_delete_operation),
	    cmocka_unit_test(test_close_aborts_an_open_import),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
