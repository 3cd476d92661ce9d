/*
 * test_import.c -- bulk import (pemba_import_*): one revision for any
 * number of relationships, validation as for writes, all-or-nothing, and
 * idempotent re-runs with TOUCH; rows staged outside the datastore's write
 * lock, so a stalled import blocks no other writer, and checked again at
 * commit against what changed meanwhile; staging memory bounded and its
 * temporary file gone on commit, abort, close and process death.
 *
 * SQLITE_TMPDIR points at a directory of this test (set before SQLite
 * starts), so the staging files can be watched.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "pemba.h"
#include "pg_fixture.h"
#include "store/stage.h"

static const char *SCHEMA = "use expiration\n"
                            "definition user {}\n"
                            "definition document {\n"
                            "  relation viewer: user\n"
                            "  relation editor: user\n"
                            "  relation reader: user with expiration\n"
                            "  permission view = viewer + editor\n"
                            "}\n";

/* Where SQLite puts temporary files in this test (main sets it). */
static char stage_dir[] = "/tmp/pemba-stage-XXXXXX";

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
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err), 0);
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
		assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	}
	assert_int_equal(count_rels(db), 2000);
	pemba_close(db);
}

/* ------------------------------------------------------------ helpers */

static double seconds_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) +
	       (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A file datastore in a fresh directory, with SCHEMA. */
typedef struct file_ds {
	char dir[64];
	char uri[128];
} file_ds;

static pemba_db *file_setup(file_ds *f)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/pemba-import-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->uri, sizeof(f->uri), "sqlite://%s/i.db", f->dir);
	pemba_db *db;
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri(f->uri), NULL, &db, &err),
	                 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	return db;
}

static void file_cleanup(file_ds *f)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
}

static pemba_revision head(pemba_db *db)
{
	pemba_revision rev;
	pemba_error err;
	assert_int_equal(pemba_head_revision(db, &rev, &err), 0);
	return rev;
}

static size_t count_at(pemba_db *db, pemba_revision at)
{
	size_t n = 0;
	pemba_error err;
	pemba_filter f = {.resource_type = "document"};
	assert_int_equal(
	    pemba_read_relationships(db, at, &f, NULL, 0, count_fn, &n, &err),
	    0);
	return n;
}

static int write_rel(pemba_db *db, pemba_operation op, size_t i,
                     pemba_error *err)
{
	rel_buf b;
	make_rel(&b, i);
	pemba_update u = {.op = op, .rel = b.rel};
	return pemba_write_relationships(db, &u, 1, NULL, 0, NULL, err);
}

/* Entries of stage_dir besides . and .. (a staging file is unlinked as
 * soon as it is opened, so there should never be any). */
static int stage_dir_entries(void)
{
	DIR *d = opendir(stage_dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Open descriptors of this process on deleted files in stage_dir, and the
 * size of the largest (the spilled staging database). */
static int open_staging_files(off_t *largest)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	*largest = 0;
	struct dirent *e;
	size_t dir_len = strlen(stage_dir);
	while ((e = readdir(d))) {
		char path[300], target[PATH_MAX];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		if (strncmp(target, stage_dir, dir_len) != 0 ||
		    !strstr(target, "(deleted)"))
			continue;
		n++;
		struct stat st;
		if (stat(path, &st) == 0 && st.st_size > *largest)
			*largest = st.st_size;
	}
	closedir(d);
	return n;
}

/* ------------------------------------------------- import semantics */

/* A CREATE of a relationship stored before the import began fails the
 * commit, naming it; the import's other rows are not written. */
static void test_import_create_of_existing_fails_at_commit(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 0, 10, &err), 0);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);

	pemba_revision before = head(db);
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 10, 100, &err), 0);
	assert_int_equal(add_range(imp, 5, 1, &err), 0); /* stored already */
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err),
	                 PEMBA_EEXISTS);
	assert_non_null(strstr(err.message, "document:d0#viewer@user:u5"));
	assert_non_null(strstr(err.message, "already exists"));
	assert_int_equal(count_rels(db), 10);
	assert_int_equal(head(db), before);
	pemba_close(db);
}

/* CREATE of one relationship twice in one import fails at the second add,
 * as it did when rows were written as they came; the import is then
 * failed: only abort (or a commit that aborts) is accepted. */
static void test_import_create_twice_in_one_import_fails_at_add(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_revision before = head(db);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 0, 100, &err), 0);
	assert_int_equal(add_range(imp, 5, 1, &err), PEMBA_EEXISTS);
	assert_non_null(strstr(err.message, "document:d0#viewer@user:u5"));
	assert_non_null(strstr(err.message, "earlier in this import"));
	assert_int_equal(add_range(imp, 200, 1, &err), PEMBA_EINVAL);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "nothing was written"));
	assert_int_equal(count_rels(db), 0);
	assert_int_equal(head(db), before);
	pemba_close(db);
}

/* TOUCH of one relationship twice in one import: the last one wins, and
 * both count as loaded, as when rows were written as they came. */
static int expiration_fn(void *ctx, const pemba_relationship *rel)
{
	*(int64_t *)ctx = rel->expiration_ms;
	return 0;
}

static void test_import_touch_twice_keeps_the_last(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	pemba_relationship r = {.resource_type = "document",
	                        .resource_id = "d1",
	                        .relation = "reader",
	                        .subject_type = "user",
	                        .subject_id = "anne",
	                        .expiration_ms = 4102444800000}; /* 2100 */
	assert_int_equal(pemba_import_add(imp, &r, 1, &err), 0);
	r.expiration_ms = 4133980800000; /* 2101 */
	assert_int_equal(pemba_import_add(imp, &r, 1, &err), 0);
	uint64_t count;
	assert_int_equal(pemba_import_commit(imp, NULL, &count, &err), 0);
	assert_int_equal(count, 2);
	assert_int_equal(count_rels(db), 1);
	int64_t expiration = 0;
	pemba_filter f = {.resource_type = "document", .relation = "reader"};
	assert_int_equal(pemba_read_relationships(db, 0, &f, NULL, 0,
	                                          expiration_fn, &expiration,
	                                          &err),
	                 0);
	assert_int_equal(expiration, 4133980800000);
	pemba_close(db);
}

static void test_import_validates_like_writes(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
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

/* One add call with a duplicate and an invalid row: the error is the one
 * of the earlier row, as if the rows were staged one at a time. */
static void test_import_reports_the_first_failing_row(void **state)
{
	pemba_relationship bad = {.resource_type = "document",
	                          .resource_id = "x",
	                          .relation = "view", /* a permission */
	                          .subject_type = "user",
	                          .subject_id = "anne"};
	/* {duplicate, invalid}: duplicate at 70 then invalid at 300 (other
	 * rounds); invalid at 20 then duplicate at 30 (one round). */
	const size_t dup_at[2] = {70, 30}, bad_at[2] = {300, 20};
	const int want[2] = {PEMBA_EEXISTS, PEMBA_EINVAL};
	for (int k = 0; k < 2; k++) {
		pemba_db *db = setup();
		pemba_error err;
		pemba_import *imp;
		assert_int_equal(
		    pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err), 0);
		assert_int_equal(add_range(imp, 5, 1, &err), 0);
		rel_buf bufs[400];
		pemba_relationship rels[400];
		for (size_t i = 0; i < 400; i++) {
			make_rel(&bufs[i], 1000 + i);
			rels[i] = bufs[i].rel;
		}
		make_rel(&bufs[dup_at[k]], 5);
		rels[dup_at[k]] = bufs[dup_at[k]].rel;
		rels[bad_at[k]] = bad;
		assert_int_equal(pemba_import_add(imp, rels, 400, &err),
		                 want[k]);
		assert_non_null(
		    strstr(err.message, k == 0 ? "document:d0#viewer@user:u5"
		                               : "document:x#view@user:anne"));
		pemba_import_abort(imp);
		assert_int_equal(count_rels(db), 0);
		pemba_close(db);
	}
}

/* An open import holds no lock, so the handle it was begun on serves
 * other writes meanwhile, a second import included. */
static void test_import_leaves_its_handle_free_for_other_writes(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_import *imp, *second;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	assert_int_equal(add_range(imp, 0, 100, &err), 0);
	assert_int_equal(write_rel(db, PEMBA_OP_TOUCH, 1000, &err), 0);
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &second, &err),
	                 0);
	assert_int_equal(add_range(second, 2000, 10, &err), 0);
	assert_int_equal(pemba_import_commit(second, NULL, NULL, &err), 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	assert_int_equal(add_range(imp, 100, 100, &err), 0);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	assert_int_equal(count_rels(db), 211);
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

/* ------------------------------------------ a stalled import blocks no one */

/*
 * An import on handle A has staged rows and stalls.  Writes through handle
 * B on the same file go through at once (they used to wait for the busy
 * timeout, 5 s, and fail); so does another import.  A's commit then lands
 * as one new revision on top of them.
 */
static void test_stalled_import_does_not_block_other_writers(void **state)
{
	file_ds f;
	pemba_db *a = file_setup(&f);
	pemba_db *b;
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri(f.uri), NULL, &b, &err), 0);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(a, PEMBA_OP_CREATE, &imp, &err), 0);
	assert_int_equal(add_range(imp, 0, 5000, &err), 0);

	for (size_t i = 0; i < 5; i++) {
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(write_rel(b, PEMBA_OP_CREATE, 10000 + i, &err),
		                 0);
		assert_true(seconds_since(&t0) < 1.0);
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pemba_import *other;
	assert_int_equal(pemba_import_begin(b, PEMBA_OP_TOUCH, &other, &err),
	                 0);
	assert_int_equal(add_range(other, 20000, 100, &err), 0);
	assert_int_equal(pemba_import_commit(other, NULL, NULL, &err), 0);
	assert_true(seconds_since(&t0) < 1.0);

	/* More rows after the others wrote: still one import. */
	assert_int_equal(add_range(imp, 5000, 1000, &err), 0);
	pemba_revision before = head(b), rev;
	uint64_t count;
	assert_int_equal(pemba_import_commit(imp, &rev, &count, &err), 0);
	assert_int_equal(rev, before + 1);
	assert_int_equal(count, 6000);
	assert_int_equal(count_at(b, before), 105);
	assert_int_equal(count_at(b, rev), 6105);
	pemba_close(b);
	pemba_close(a);
	file_cleanup(&f);
}

/* A relationship CREATEd by someone else while the import was staged fails
 * the import's commit, naming it; the other's write stays, nothing of the
 * import is written. */
static void test_commit_detects_a_create_written_meanwhile(void **state)
{
	file_ds f;
	pemba_db *a = file_setup(&f);
	pemba_db *b;
	pemba_error err;
	assert_int_equal(pemba_clone(a, &b, &err), 0);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(a, PEMBA_OP_CREATE, &imp, &err), 0);
	assert_int_equal(add_range(imp, 0, 3000, &err), 0);
	assert_int_equal(write_rel(b, PEMBA_OP_CREATE, 2345, &err), 0);
	pemba_revision before = head(b);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err),
	                 PEMBA_EEXISTS);
	assert_non_null(strstr(err.message, "document:d234#viewer@user:u2345"));
	assert_int_equal(head(b), before);
	assert_int_equal(count_at(b, 0), 1);

	/* TOUCH commits over it. */
	assert_int_equal(pemba_import_begin(a, PEMBA_OP_TOUCH, &imp, &err), 0);
	assert_int_equal(add_range(imp, 0, 3000, &err), 0);
	assert_int_equal(write_rel(b, PEMBA_OP_CREATE, 5000, &err), 0);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	assert_int_equal(count_at(b, 0), 3001);
	pemba_close(b);
	pemba_close(a);
	file_cleanup(&f);
}

/* Abort discards the staged rows: no row, no revision, no file. */
static void test_abort_leaves_the_datastore_unchanged(void **state)
{
	file_ds f;
	pemba_db *db = file_setup(&f);
	pemba_error err;
	assert_int_equal(write_rel(db, PEMBA_OP_CREATE, 1, &err), 0);
	pemba_revision before = head(db);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	assert_int_equal(add_range(imp, 100, 50000, &err), 0);
	pemba_import_abort(imp);
	assert_int_equal(head(db), before);
	assert_int_equal(count_at(db, 0), 1);
	off_t size;
	assert_int_equal(open_staging_files(&size), 0);
	assert_int_equal(stage_dir_entries(), 0);
	pemba_close(db);
	file_cleanup(&f);
}

/*
 * The schema changes between staging and commit.  A change that keeps
 * the staged rows valid does not matter (they are checked again against
 * it); one that removes the relation of staged rows fails the commit,
 * naming a row and saying why, and writes nothing.
 */
static void test_schema_change_before_commit_is_checked(void **state)
{
	file_ds f;
	pemba_db *a = file_setup(&f);
	pemba_db *b;
	pemba_error err;
	assert_int_equal(pemba_clone(a, &b, &err), 0);
	static const char *grown = "use expiration\n"
	                           "definition user {}\n"
	                           "definition folder {}\n"
	                           "definition document {\n"
	                           "  relation viewer: user\n"
	                           "  relation editor: user\n"
	                           "  relation reader: user with expiration\n"
	                           "  permission view = viewer + editor\n"
	                           "}\n";
	static const char *shrunk = "use expiration\n"
	                            "definition user {}\n"
	                            "definition folder {}\n"
	                            "definition document {\n"
	                            "  relation viewer: user\n"
	                            "  relation reader: user with expiration\n"
	                            "  permission view = viewer\n"
	                            "}\n";
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(a, PEMBA_OP_CREATE, &imp, &err), 0);
	assert_int_equal(add_range(imp, 0, 500, &err), 0);
	assert_int_equal(
	    pemba_write_schema(b, grown, strlen(grown), NULL, &err), 0);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	assert_int_equal(count_at(b, 0), 500);

	/* Now rows of document#editor, and a schema without it. */
	assert_int_equal(pemba_import_begin(a, PEMBA_OP_CREATE, &imp, &err), 0);
	assert_int_equal(add_range(imp, 1000, 300, &err), 0);
	pemba_relationship ed = {.resource_type = "document",
	                         .resource_id = "e1",
	                         .relation = "editor",
	                         .subject_type = "user",
	                         .subject_id = "ed"};
	assert_int_equal(pemba_import_add(imp, &ed, 1, &err), 0);
	assert_int_equal(
	    pemba_write_schema(b, shrunk, strlen(shrunk), NULL, &err), 0);
	pemba_revision before = head(b);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "document:e1#editor@user:ed"));
	assert_non_null(strstr(err.message, "`editor` not found"));
	assert_non_null(strstr(err.message, "schema changed"));
	assert_non_null(strstr(err.message, "nothing was written"));
	assert_int_equal(head(b), before);
	assert_int_equal(count_at(b, 0), 500);
	pemba_close(b);
	pemba_close(a);
	file_cleanup(&f);
}

/*
 * 200 000 rows (about 12 MiB staged): the staging area keeps at most its
 * page cache in memory (SQLite's own allocation count; the pemba side is
 * one round of rows) and spills the rest to an unlinked file; commit writes all
 * of them in one revision, and no file is left, open or not.
 */
static void test_large_import_memory_is_bounded(void **state)
{
	file_ds f;
	pemba_db *db = file_setup(&f);
	pemba_error err;
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	sqlite3_int64 used0 = sqlite3_memory_used();
	sqlite3_int64 peak = 0;
	enum { TOTAL = 200000, STEP = 20000 };
	for (size_t first = 0; first < TOTAL; first += STEP) {
		assert_int_equal(add_range(imp, first, STEP, &err), 0);
		sqlite3_int64 used = sqlite3_memory_used() - used0;
		if (used > peak)
			peak = used;
	}
	/* The page cache, plus SQLite's statements and bookkeeping. */
	assert_true(peak < (sqlite3_int64)STAGE_CACHE_KIB * 1024 + (4 << 20));
	off_t spilled;
	int nfiles = open_staging_files(&spilled);
	print_message("staged %d rows: SQLite memory +%.1f MiB, staging file "
	              "%.1f MiB\n",
	              TOTAL, (double)peak / (1 << 20),
	              (double)spilled / (1 << 20));
	assert_int_equal(nfiles, 1);
	assert_true(spilled > (1 << 20)); /* what did not fit */
	assert_int_equal(stage_dir_entries(), 0);

	uint64_t count;
	pemba_revision rev;
	assert_int_equal(pemba_import_commit(imp, &rev, &count, &err), 0);
	assert_int_equal(count, TOTAL);
	assert_int_equal(count_at(db, rev), TOTAL);
	assert_int_equal(count_at(db, rev - 1), 0);
	assert_int_equal(open_staging_files(&spilled), 0);
	assert_int_equal(stage_dir_entries(), 0);
	pemba_close(db);
	file_cleanup(&f);
}

/* pemba_close aborts every import open on the handle. */
static void test_close_aborts_open_imports(void **state)
{
	file_ds f;
	pemba_db *db = file_setup(&f);
	pemba_error err;
	pemba_import *imp, *second;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &second, &err),
	                 0);
	assert_int_equal(add_range(imp, 0, 100, &err), 0);
	assert_int_equal(add_range(second, 0, 50000, &err), 0);
	pemba_close(db); /* aborts both */
	off_t size;
	assert_int_equal(open_staging_files(&size), 0);
	assert_int_equal(stage_dir_entries(), 0);
	assert_int_equal(pemba_open(pg_fixture_uri(f.uri), NULL, &db, &err), 0);
	assert_int_equal(count_rels(db), 0);
	pemba_close(db);
	file_cleanup(&f);
}

/* A process killed while its import is staged leaves no file behind and
 * the datastore as it was. */
static void test_process_death_leaves_nothing(void **state)
{
	file_ds f;
	pemba_db *db = file_setup(&f);
	pemba_revision before = head(db);
	pemba_close(db);
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The child: no cmocka here, only exit codes. */
		pemba_error err;
		pemba_import *imp;
		char ok = 0;
		off_t size;
		/* 12 000 rows of ~1 KiB: more than the cache holds. */
		static char ids[100][1000];
		rel_buf b[100];
		pemba_relationship rels[100];
		int rc = pemba_open(pg_fixture_uri(f.uri), NULL, &db, &err);
		if (rc == 0)
			rc = pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err);
		for (size_t first = 0; first < 12000 && rc == 0; first += 100) {
			for (size_t i = 0; i < 100; i++) {
				make_rel(&b[i], first + i);
				memset(ids[i], 'x', sizeof(ids[i]) - 1);
				memcpy(ids[i], b[i].user, strlen(b[i].user));
				b[i].rel.subject_id = ids[i];
				rels[i] = b[i].rel;
			}
			rc = pemba_import_add(imp, rels, 100, &err);
		}
		if (rc == 0)
			ok = (char)(1 + open_staging_files(&size));
		if (write(ready[1], &ok, 1) != 1)
			_exit(2);
		pause();
		_exit(3);
	}
	close(ready[1]);
	char ok = 0;
	assert_int_equal(read(ready[0], &ok, 1), 1);
	close(ready[0]);
	kill(pid, SIGKILL);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(ok, 2); /* the child had one staging file */
	assert_true(WIFSIGNALED(status));
	assert_int_equal(stage_dir_entries(), 0);
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri(f.uri), NULL, &db, &err), 0);
	assert_int_equal(head(db), before);
	assert_int_equal(count_rels(db), 0);
	pemba_close(db);
	file_cleanup(&f);
}

int main(void)
{
	/* Before SQLite starts: it reads the variable once. */
	if (!mkdtemp(stage_dir) || setenv("SQLITE_TMPDIR", stage_dir, 1)) {
		perror("test_import: staging directory");
		return 1;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_import_commits_everything_as_one_revision),
	    cmocka_unit_test(test_import_touch_rerun_is_idempotent),
	    cmocka_unit_test(test_import_create_of_existing_fails_at_commit),
	    cmocka_unit_test(
	        test_import_create_twice_in_one_import_fails_at_add),
	    cmocka_unit_test(test_import_touch_twice_keeps_the_last),
	    cmocka_unit_test(test_import_validates_like_writes),
	    cmocka_unit_test(test_import_reports_the_first_failing_row),
	    cmocka_unit_test(
	        test_import_leaves_its_handle_free_for_other_writes),
	    cmocka_unit_test(test_import_rejects_delete_operation),
	    cmocka_unit_test(test_stalled_import_does_not_block_other_writers),
	    cmocka_unit_test(test_commit_detects_a_create_written_meanwhile),
	    cmocka_unit_test(test_abort_leaves_the_datastore_unchanged),
	    cmocka_unit_test(test_schema_change_before_commit_is_checked),
	    cmocka_unit_test(test_large_import_memory_is_bounded),
	    cmocka_unit_test(test_close_aborts_open_imports),
	    cmocka_unit_test(test_process_death_leaves_nothing),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (rmdir(stage_dir) != 0) {
		perror("test_import: staging directory not empty");
		failed++;
	}
	return failed;
}
