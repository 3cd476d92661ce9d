/*
 * test_store_lifecycle.c -- opening by URI, reopening file datastores,
 * garbage collection and layout migrations.
 */
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>

#include "store_fixture.h"

static const store_filter doc1 = {.resource_type = "document",
                                  .resource_id = "1"};

/* The newest layout version this binary knows. */
static int head_version(void)
{
	store *s = fixture_open("sqlite::memory:");
	int head = 0;
	pemba_error err = {0};
	assert_int_equal(store_migrate_status(s, NULL, &head, NULL, NULL, &err),
	                 0);
	store_close(s);
	return head;
}

static char *file_uri(const char *dir, const char *name)
{
	char *uri = malloc(strlen(dir) + strlen(name) + 16);
	sprintf(uri, "sqlite://%s/%s", dir, name);
	return uri;
}

/* Runs SQL directly on a datastore file, behind the store's back. */
static void raw_sql(const char *dir, const char *name, const char *sql)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

/* The integer the SQL query returns, read behind the store's back. */
static int raw_count(const char *dir, const char *name, const char *sql)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* =========================================================== URIs */

static void bad_uris_are_refused_naming_the_accepted_forms(void **state)
{
	const char *bad[] = {
	    "",
	    "postgres://localhost/db",
	    "sqlite:",
	    "sqlite://",
	    "sqlite:///",
	    "sqlite://relative.db",
	    "sqlite:/abs.db",
	    "sqlite::memory",
	    "memory",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		store *s = (store *)1;
		pemba_error err = {0};
		assert_int_equal(store_open(bad[i], NULL, &s, &err),
		                 PEMBA_EINVAL);
		assert_null(s);
		if (*bad[i])
			assert_non_null(strstr(err.message, bad[i]));
		assert_non_null(strstr(err.message, "sqlite::memory:"));
		assert_non_null(strstr(err.message, "sqlite:///"));
	}
}

static void relative_uri_opens_in_the_working_directory(void **state)
{
	char *dir = fixture_tmpdir();
	char old[4096];
	assert_non_null(getcwd(old, sizeof(old)));
	assert_int_equal(chdir(dir), 0);
	store *s = fixture_open("sqlite://./rel.db");
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	store_close(s);
	assert_int_equal(access("rel.db", F_OK), 0);
	assert_int_equal(chdir(old), 0);
	fixture_rmdir(dir);
}

static void must_exist_refuses_a_missing_file(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "missing.db");
	store_options opts = {.must_exist = 1};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(uri, &opts, &s, &err), PEMBA_ENOTFOUND);
	char path[600];
	snprintf(path, sizeof(path), "%s/missing.db", dir);
	assert_int_equal(access(path, F_OK), -1);
	free(uri);
	fixture_rmdir(dir);
}

static void foreign_sqlite_database_is_refused(void **state)
{
	char *dir = fixture_tmpdir();
	raw_sql(dir, "other.db", "CREATE TABLE t(x)");
	char *uri = file_uri(dir, "other.db");
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(uri, NULL, &s, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "not a pemba datastore"));
	free(uri);
	fixture_rmdir(dir);
}

/* ======================================================== reopening */

static void reopened_file_datastore_keeps_everything(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "p.db");
	store *s = fixture_open(uri);
	char id[64];
	snprintf(id, sizeof(id), "%s", store_datastore_id(s));
	assert_int_equal(strlen(id), 32);
	assert_int_equal(strspn(id, "0123456789abcdef"), 32);

	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL); /* 1 */
	store_txn *t;
	pemba_revision rev;
	pemba_error err = {0};
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(
	    store_txn_write_schema(t, "definition user {}", 18, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);             /* 2 */
	fixture_write(s, 'd', "document:1#viewer@user:anne", NULL); /* 3 */
	fixture_write(s, 'c', "document:1#viewer@user:bob", NULL);  /* 4 */
	store_close(s);

	s = fixture_open(uri);
	assert_string_equal(store_datastore_id(s), id);
	pemba_revision head;
	assert_int_equal(store_head_revision(s, &head, &err), 0);
	assert_int_equal(head, 4);
	assert_query(s, 1, &doc1, "document:1#viewer@user:anne");
	assert_query(s, 3, &doc1, "");
	assert_query(s, 4, &doc1, "document:1#viewer@user:bob");
	char *text;
	assert_int_equal(store_read_schema(s, 4, &text, NULL, &err), 0);
	assert_string_equal(text, "definition user {}");
	free(text);
	/* New names after reopening get numbers that do not collide. */
	fixture_write(s, 'c', "folder:1#parent@space:x", NULL);
	store_filter folders = {.resource_type = "folder"};
	assert_query(s, 0, &folders, "folder:1#parent@space:x");
	assert_query(s, 0, &doc1, "document:1#viewer@user:bob");
	store_close(s);

	/* A second store of the same file gets a different id. */
	char *uri2 = file_uri(dir, "q.db");
	s = fixture_open(uri2);
	assert_string_not_equal(store_datastore_id(s), id);
	store_close(s);
	free(uri2);
	free(uri);
	fixture_rmdir(dir);
}

static void two_handles_on_one_file_see_each_others_commits(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "p.db");
	store *a = fixture_open(uri), *b = fixture_open(uri);
	fixture_write(a, 'c', "document:1#viewer@user:anne", NULL);
	/* b has never seen these names; it must look them up. */
	assert_query(b, 0, &doc1, "document:1#viewer@user:anne");
	fixture_write(b, 'c', "document:1#owner@team:x", NULL);
	assert_query(a, 0, &doc1,
	             "document:1#viewer@user:anne;document:1#owner@team:x");
	store_close(a);
	store_close(b);
	free(uri);
	fixture_rmdir(dir);
}

/* =============================================================== GC */

static void gc_drops_old_versions_and_old_reads_fail(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_write_schema(t, "v1", 2, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);             /* 1 */
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL); /* 2 */
	fixture_write(s, 'd', "document:1#viewer@user:anne", NULL); /* 3 */
	usleep(30 * 1000);
	int64_t between = wall_ms();
	usleep(30 * 1000);
	fixture_write(s, 'c', "document:1#viewer@user:bob", NULL); /* 4 */
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_write_schema(t, "v2", 2, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0); /* 5 */

	/* Nothing is older than the default window of a day. */
	uint64_t removed = 99;
	assert_int_equal(store_gc(s, 0, &removed, &err), 0);
	assert_int_equal(removed, 0);
	assert_int_equal(store_check_revision(s, 1, &err), 0);

	/* Pretend a day has passed since `between`: revisions 1-3 fall out
	 * of the window, the floor becomes 3. */
	int64_t day = 24 * 3600 * 1000LL;
	assert_int_equal(store_gc(s, between + day, &removed, &err), 0);
	assert_int_equal(removed, 1); /* anne's version ended at 3 */
	assert_int_equal(store_check_revision(s, 2, &err), PEMBA_EREVISION);
	assert_string_equal(err.message, "revision 2 has been garbage-"
	                                 "collected (oldest available is 3)");
	store_iter *it;
	assert_int_equal(store_query(s, 2, &doc1, NULL, 0, &it, &err),
	                 PEMBA_EREVISION);
	assert_int_equal(store_check_revision(s, 3, &err), 0);
	assert_query(s, 3, &doc1, "");
	assert_query(s, 4, &doc1, "document:1#viewer@user:bob");
	char *text;
	assert_int_equal(store_read_schema(s, 3, &text, NULL, &err), 0);
	assert_string_equal(text, "v1"); /* still current at the floor */
	free(text);

	/* Far in the future: everything up to the head goes, the head
	 * stays readable. */
	assert_int_equal(store_gc(s, wall_ms() + 2 * day, &removed, &err), 0);
	assert_int_equal(removed, 1); /* schema v1, superseded at 5 */
	assert_int_equal(store_check_revision(s, 4, &err), PEMBA_EREVISION);
	assert_int_equal(store_check_revision(s, 5, &err), 0);
	assert_query(s, 5, &doc1, "document:1#viewer@user:bob");
	assert_int_equal(store_read_schema(s, 0, &text, NULL, &err), 0);
	assert_string_equal(text, "v2");
	free(text);
	pemba_revision head;
	assert_int_equal(store_head_revision(s, &head, &err), 0);
	assert_int_equal(head, 5);

	/* Writing continues from the head. */
	assert_int_equal(
	    fixture_write(s, 'c', "document:2#viewer@user:c", NULL), 6);
	store_close(s);
}

/* ======================================================== migrations */

static void migrate_status_up_down_and_rerun(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "m.db");
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(uri, &none, &s, &err), 0);

	int current, head;
	store_migration_info *list;
	size_t n;
	assert_int_equal(
	    store_migrate_status(s, &current, &head, &list, &n, &err), 0);
	assert_int_equal(current, 0);
	assert_true(head >= 2);
	assert_int_equal(n, (size_t)head);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(list[i].version, (int)i + 1);
		assert_false(list[i].applied);
		assert_non_null(list[i].name);
		assert_non_null(list[i].description);
	}
	free(list);

	/* Not at the newest layout: ordinary operations refuse. */
	pemba_revision rev;
	assert_int_equal(store_head_revision(s, &rev, &err), PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "pemba datastore migrate head"));

	assert_int_equal(store_migrate_up(s, 1, &err), 0);
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, &list, &n, &err), 0);
	assert_int_equal(current, 1);
	assert_true(list[0].applied);
	assert_false(list[1].applied);
	free(list);

	assert_int_equal(store_migrate_up(s, 0, &err), 0);
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, head);
	/* Re-running is a no-op. */
	assert_int_equal(store_migrate_up(s, 0, &err), 0);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");

	/* One step down and up again keeps the data (indexes only). */
	assert_int_equal(store_migrate_down(s, head - 1, &err), 0);
	assert_int_equal(store_head_revision(s, &rev, &err), PEMBA_EVERSION);
	assert_int_equal(store_migrate_up(s, 0, &err), 0);
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");
	store_filter by_subject = {.subject_type = "user",
	                           .subject_id = "anne"};
	assert_query(s, 0, &by_subject, "document:1#viewer@user:anne");

	/* All the way down leaves an empty database. */
	assert_int_equal(store_migrate_down(s, 0, &err), 0);
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, 0);
	store_close(s);

	/* Auto-migration on open brings it back to the newest. */
	s = fixture_open(uri);
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, head);
	assert_query(s, 0, &doc1, "");
	store_close(s);
	free(uri);
	fixture_rmdir(dir);
}

static void failed_migration_keeps_version_and_rerun_continues(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "m.db");
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(uri, &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 1, &err), 0);
	store_close(s);

	/* Sabotage migration 2's second statement: a table with the name of
	 * the index it creates.  Its first statement must be rolled back. */
	raw_sql(dir, "m.db", "CREATE TABLE relationships_deleted(x)");
	assert_int_equal(store_open(uri, &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 0, &err), PEMBA_EIO);
	assert_non_null(strstr(err.message, "migration 2"));
	assert_non_null(strstr(err.message, "stays at layout version 1"));
	int current;
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, 1);
	store_close(s);

	/* Auto-migration also fails, cleanly. */
	assert_int_equal(store_open(uri, NULL, &s, &err), PEMBA_EIO);

	/* The index of migration 2's first statement was rolled back. */
	assert_int_equal(raw_count(dir, "m.db",
	                           "SELECT count(*) FROM sqlite_master WHERE "
	                           "name = 'relationships_by_subject'"),
	                 0);
	raw_sql(dir, "m.db", "DROP TABLE relationships_deleted");
	s = fixture_open(uri);
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, head_version());
	store_close(s);
	free(uri);
	fixture_rmdir(dir);
}

static void newer_layout_than_known_is_refused(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "n.db");
	store *s = fixture_open(uri);
	store_close(s);
	raw_sql(dir, "n.db", "PRAGMA user_version = 99");
	store_options modes[] = {{.migrate = STORE_MIGRATE_AUTO},
	                         {.migrate = STORE_MIGRATE_REQUIRE},
	                         {.migrate = STORE_MIGRATE_NONE}};
	for (int i = 0; i < 3; i++) {
		pemba_error err = {0};
		assert_int_equal(store_open(uri, &modes[i], &s, &err),
		                 PEMBA_EVERSION);
		assert_non_null(strstr(err.message, "99"));
	}
	free(uri);
	fixture_rmdir(dir);
}

static void require_mode_refuses_an_old_layout(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "r.db");
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store_options require = {.migrate = STORE_MIGRATE_REQUIRE};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(uri, &require, &s, &err), PEMBA_EVERSION);
	assert_int_equal(store_open(uri, &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 1, &err), 0);
	store_close(s);
	assert_int_equal(store_open(uri, &require, &s, &err), PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "version 1"));
	assert_int_equal(store_open(uri, NULL, &s, &err), 0);
	store_close(s);
	assert_int_equal(store_open(uri, &require, &s, &err), 0);
	store_close(s);
	free(uri);
	fixture_rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(bad_uris_are_refused_naming_the_accepted_forms),
	    cmocka_unit_test(relative_uri_opens_in_the_working_directory),
	    cmocka_unit_test(must_exist_refuses_a_missing_file),
	    cmocka_unit_test(foreign_sqlite_database_is_refused),
	    cmocka_unit_test(reopened_file_datastore_keeps_everything),
	    cmocka_unit_test(two_handles_on_one_file_see_each_others_commits),
	    cmocka_unit_test(gc_drops_old_versions_and_old_reads_fail),
	    cmocka_unit_test(migrate_status_up_down_and_rerun),
	    cmocka_unit_test(
	        failed_migration_keeps_version_and_rerun_continues),
	    cmocka_unit_test(newer_layout_than_known_is_refused),
	    cmocka_unit_test(require_mode_refuses_an_old_layout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
