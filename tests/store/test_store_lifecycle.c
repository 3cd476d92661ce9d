/*
 * test_store_lifecycle.c -- opening by URI (and URI parameters), reopening
 * file datastores, garbage collection, layout migrations, handles whose
 * layout changes under them, new-only opens, revision nonces.
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
	    "mysql://localhost/db",
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

/* A PostgreSQL datastore that cannot be reached: PEMBA_EIO "datastore
 * unavailable", naming the URI without its password. */
static void
unreachable_postgres_is_unavailable_without_the_password(void **state)
{
	const char *uris[] = {
	    "postgres://anne:s3cret@127.0.0.1:1/pemba",
	    "postgresql://127.0.0.1:1/pemba?user=anne&password=s3cret",
	};
	for (size_t i = 0; i < 2; i++) {
		store *s = (store *)1;
		pemba_error err = {0};
		assert_int_equal(store_open(uris[i], NULL, &s, &err),
		                 PEMBA_EIO);
		assert_null(s);
		if (!strstr(err.message, "datastore unavailable") ||
		    strstr(err.message, "s3cret") ||
		    !strstr(err.message, "***"))
			fail_msg("%s: %s", uris[i], err.message);
	}
}

/* mode=ro on PostgreSQL: reads work, every write is refused up front;
 * other parameters go to libpq. */
static void postgres_mode_ro_refuses_writes(void **state)
{
	if (!pg_fixture_enabled()) {
		print_message(
		    "skipped on SQLite: about PostgreSQL URIs (see "
		    "uri_parameters_are_parsed_or_refused_by_name)\n");
		skip();
	}
	const char *uri = fixture_uri("sqlite::memory:");
	store *s = fixture_open(uri);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	store_close(s);
	char ro[700];
	snprintf(ro, sizeof(ro), "%s%smode=ro", uri,
	         strchr(uri, '?') ? "&" : "?");
	pemba_error err = {0};
	assert_int_equal(store_open(ro, NULL, &s, &err), 0);
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");
	store_txn *t;
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), PEMBA_EREADONLY);
	assert_non_null(strstr(err.message, "read-only (mode=ro)"));
	uint64_t removed;
	assert_int_equal(store_gc(s, 0, &removed, &err), PEMBA_EREADONLY);
	assert_int_equal(store_set_read_only(s, true, &err), PEMBA_EREADONLY);
	char id[64];
	assert_int_equal(store_new_identity(s, id, &err), PEMBA_EREADONLY);
	store *clone;
	assert_int_equal(store_reopen(s, &clone, &err), 0);
	assert_int_equal(store_txn_begin(clone, &t, NULL, &err),
	                 PEMBA_EREADONLY);
	store_close(clone);
	store_close(s);
	snprintf(ro, sizeof(ro), "%s%smode=bogus", uri,
	         strchr(uri, '?') ? "&" : "?");
	assert_int_equal(store_open(ro, NULL, &s, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "\"bogus\""));
}

static void relative_uri_opens_in_the_working_directory(void **state)
{
	FIXTURE_SQLITE_ONLY("relative file names");
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
	FIXTURE_SQLITE_ONLY(
	    "a missing file; a PostgreSQL database is created by its owner");
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "missing.db");
	store_options opts = {.must_exist = 1};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(fixture_uri(uri), &opts, &s, &err),
	                 PEMBA_ENOTFOUND);
	char path[600];
	snprintf(path, sizeof(path), "%s/missing.db", dir);
	assert_int_equal(access(path, F_OK), -1);
	free(uri);
	fixture_rmdir(dir);
}

static void foreign_sqlite_database_is_refused(void **state)
{
	FIXTURE_SQLITE_ONLY("an SQLite file of another application");
	char *dir = fixture_tmpdir();
	raw_sql(dir, "other.db", "CREATE TABLE t(x)");
	char *uri = file_uri(dir, "other.db");
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(fixture_uri(uri), NULL, &s, &err),
	                 PEMBA_EINVAL);
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
	/* Names order by SQLite's interned numbers, PostgreSQL's bytes. */
	assert_query(
	    a, 0, &doc1,
	    pg_fixture_enabled()
	        ? "document:1#owner@team:x;document:1#viewer@user:anne"
	        : "document:1#viewer@user:anne;document:1#owner@team:x");
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
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);

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
	FIXTURE_SQLITE_ONLY(
	    "sabotages the SQLite file (tests/cli/test_postgres_serve.sh "
	    "covers PostgreSQL migrations)");
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "m.db");
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 1, &err), 0);
	store_close(s);

	/* Sabotage migration 2's second statement: a table with the name of
	 * the index it creates.  Its first statement must be rolled back. */
	raw_sql(dir, "m.db", "CREATE TABLE relationships_deleted(x)");
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 0, &err), PEMBA_EIO);
	assert_non_null(strstr(err.message, "migration 2"));
	assert_non_null(strstr(err.message, "stays at layout version 1"));
	int current;
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, 1);
	store_close(s);

	/* Auto-migration also fails, cleanly. */
	assert_int_equal(store_open(fixture_uri(uri), NULL, &s, &err),
	                 PEMBA_EIO);

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
	FIXTURE_SQLITE_ONLY("writes PRAGMA user_version");
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
		assert_int_equal(
		    store_open(fixture_uri(uri), &modes[i], &s, &err),
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
	assert_int_equal(store_open(fixture_uri(uri), &require, &s, &err),
	                 PEMBA_EVERSION);
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 1, &err), 0);
	store_close(s);
	assert_int_equal(store_open(fixture_uri(uri), &require, &s, &err),
	                 PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "version 1"));
	assert_int_equal(store_open(fixture_uri(uri), NULL, &s, &err), 0);
	store_close(s);
	assert_int_equal(store_open(fixture_uri(uri), &require, &s, &err), 0);
	store_close(s);
	free(uri);
	fixture_rmdir(dir);
}

/* ==================================================== URI parameters */

/* The names of the files in dir, ";"-separated, sorted by readdir. */
static int dir_has_question_mark(const char *dir)
{
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -q '[?]'", dir);
	return system(cmd) == 0;
}

static void uri_parameters_are_parsed_or_refused_by_name(void **state)
{
	FIXTURE_SQLITE_ONLY("SQLite URI parameters (mode=ro)");
	char *dir = fixture_tmpdir();
	char old[4096];
	assert_non_null(getcwd(old, sizeof(old)));
	assert_int_equal(chdir(dir), 0);
	store *s = (store *)1;
	pemba_error err = {0};

	/* mode=ro never creates a datastore. */
	assert_int_equal(store_open("sqlite://./x.db?mode=ro", NULL, &s, &err),
	                 PEMBA_ENOTFOUND);
	assert_non_null(strstr(err.message, "mode=ro never creates"));
	assert_int_equal(access("x.db", F_OK), -1);

	s = fixture_open("sqlite://./x.db?mode=rw");
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	store_close(s);
	assert_int_equal(access("x.db", F_OK), 0);

	/* Read-only: reads work, every kind of write is refused. */
	s = fixture_open("sqlite://./x.db?mode=ro");
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");
	store_txn *t;
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), PEMBA_EREADONLY);
	assert_non_null(strstr(err.message, "read-only (mode=ro)"));
	uint64_t removed;
	assert_int_equal(store_gc(s, 0, &removed, &err), PEMBA_EREADONLY);
	assert_int_equal(store_set_read_only(s, true, &err), PEMBA_EREADONLY);
	char id[64];
	assert_int_equal(store_new_identity(s, id, &err), PEMBA_EREADONLY);
	store *clone;
	assert_int_equal(store_reopen(s, &clone, &err), 0);
	assert_int_equal(store_txn_begin(clone, &t, NULL, &err),
	                 PEMBA_EREADONLY);
	store_close(clone);
	store_close(s);

	/* Anything else is refused by name, never put in the file name. */
	const struct {
		const char *uri, *want;
	} bad[] = {
	    {"sqlite://./x.db?cache=shared", "`cache`"},
	    {"sqlite://./x.db?mode=ro&journal=off", "`journal`"},
	    {"sqlite://./x.db?mode=bogus", "\"bogus\""},
	    {"sqlite://./x.db?mode", "`mode`"},
	    {"sqlite://./y.db?", "empty parameter"},
	    {"sqlite://./y.db?&mode=ro", "empty parameter"},
	    {"sqlite::memory:?mode=ro", "parameters are for files"},
	    {"sqlite::memory:name?mode=ro", "parameters are for files"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = (store *)1;
		assert_int_equal(store_open(bad[i].uri, NULL, &s, &err),
		                 PEMBA_EINVAL);
		assert_null(s);
		if (!strstr(err.message, bad[i].want) ||
		    !strstr(err.message, bad[i].uri))
			fail_msg("%s: %s", bad[i].uri, err.message);
	}
	assert_false(dir_has_question_mark("."));
	assert_int_equal(access("y.db", F_OK), -1);

	/* A read-only handle does not migrate: an old layout is refused
	 * with the command to run. */
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	assert_int_equal(store_open("sqlite://./old.db", &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 3, &err), 0);
	store_close(s);
	assert_int_equal(
	    store_open("sqlite://./old.db?mode=ro", NULL, &s, &err),
	    PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "pemba datastore migrate head"));
	assert_int_equal(chdir(old), 0);
	fixture_rmdir(dir);
}

/* ================================== the layout changes under a handle */

static void a_layout_changed_under_a_handle_refuses_everything(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "u.db");
	int head = head_version();
	store *a = fixture_open(uri);
	store *b = fixture_open(uri);
	fixture_write(a, 'c', "document:1#viewer@user:anne", NULL);
	assert_query(b, 1, &doc1, "document:1#viewer@user:anne");

	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *m;
	pemba_error err = {0};
	assert_int_equal(store_open(fixture_uri(uri), &none, &m, &err), 0);
	assert_int_equal(store_migrate_down(m, head - 1, &err), 0);

	/* The next head read notices, with the command to run. */
	pemba_revision rev = 99;
	assert_int_equal(store_head_revision(a, &rev, &err), PEMBA_EVERSION);
	char want[200];
	snprintf(want, sizeof(want),
	         "datastore layout changed under this server (now %d, "
	         "expected %d): restart it after `pemba datastore migrate "
	         "head --datastore %s`",
	         head - 1, head, fixture_uri(uri));
	assert_string_equal(err.message, want);
	/* From then on everything is refused, whatever still works. */
	store_iter *it;
	assert_int_equal(store_query(a, 1, &doc1, NULL, 0, &it, &err),
	                 PEMBA_EVERSION);
	store_txn *t;
	assert_int_equal(store_txn_begin(a, &t, NULL, &err), PEMBA_EVERSION);
	assert_int_equal(store_check_revision(a, 1, &err), PEMBA_EVERSION);
	uint64_t n;
	assert_int_equal(store_gc(a, 0, &n, &err), PEMBA_EVERSION);
	assert_int_equal(store_revision_nonce(a, 1, &n, &err), PEMBA_EVERSION);
	char *text;
	assert_int_equal(store_read_schema(a, 0, &text, NULL, &err),
	                 PEMBA_EVERSION);
	store *clone;
	assert_int_equal(store_reopen(a, &clone, &err), PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "changed under this server"));
	/* A write transaction notices too (b has not read the head). */
	assert_int_equal(store_txn_begin(b, &t, NULL, &err), PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "changed under this server"));

	/* Migrating back does not revive them: their caches may be stale
	 * (a down to 0 and up again is a new, empty datastore). */
	assert_int_equal(store_migrate_up(m, 0, &err), 0);
	assert_int_equal(store_head_revision(a, &rev, &err), PEMBA_EVERSION);
	/* Without the query cache: a hit makes no datastore call, so with
	 * it the change shows at the next head read instead (store.h). */
	store_options uncached = {.query_cache_bytes = -1};
	store *fresh;
	assert_int_equal(store_open(fixture_uri(uri), &uncached, &fresh, &err),
	                 0);
	assert_query(fresh, 0, &doc1, "document:1#viewer@user:anne");

	/* Every table dropped: an SQL error is reported as the layout
	 * change, never as "no such table". */
	assert_query(fresh, 1, &doc1, "document:1#viewer@user:anne");
	assert_int_equal(store_migrate_down(m, 0, &err), 0);
	/* (The statement is prepared already: the step fails.) */
	int rc = store_query(fresh, 1, &doc1, NULL, 0, &it, &err);
	if (rc == 0) {
		const store_rel *row;
		rc = store_iter_next(it, &row, &err);
		store_iter_close(it);
	}
	assert_int_equal(rc, PEMBA_EVERSION);
	assert_null(strstr(err.message, "no such"));
	assert_non_null(strstr(err.message, "(now 0, expected"));
	store_close(fresh);

	/* A newer binary migrated it: says so. */
	assert_int_equal(store_migrate_up(m, 0, &err), 0);
	store_close(m);
	fresh = fixture_open(uri);
	if (pg_fixture_enabled())
		assert_int_equal(
		    pg_fixture_exec(
		        fixture_uri(uri),
		        "UPDATE pemba_schema_version SET version = 99"),
		    0);
	else
		raw_sql(dir, "u.db", "PRAGMA user_version = 99");
	assert_int_equal(store_txn_begin(fresh, &t, NULL, &err),
	                 PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "a newer pemba migrated it"));
	store_close(fresh);
	store_close(a);
	store_close(b);
	free(uri);
	fixture_rmdir(dir);
}

static void new_only_creates_but_refuses_pending_migrations(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "n.db");
	store_options new_only = {.migrate = STORE_MIGRATE_NEW_ONLY};
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *s;
	pemba_error err = {0};
	int head = head_version();

	/* A missing file: created at the newest layout. */
	assert_int_equal(store_open(fixture_uri(uri), &new_only, &s, &err), 0);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	store_close(s);
	assert_int_equal(store_open(fixture_uri(uri), &new_only, &s, &err), 0);
	store_close(s);

	/* An existing one with pending migrations: refused, unchanged. */
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);
	assert_int_equal(store_migrate_down(s, 3, &err), 0);
	store_close(s);
	assert_int_equal(store_open(fixture_uri(uri), &new_only, &s, &err),
	                 PEMBA_EVERSION);
	char want[300];
	snprintf(want, sizeof(want),
	         "datastore %s is at layout version 3 but this binary needs "
	         "version %d: run `pemba datastore migrate head --datastore "
	         "%s`",
	         fixture_uri(uri), head, fixture_uri(uri));
	assert_string_equal(err.message, want);
	if (pg_fixture_enabled()) {
		/* The rest is about empty SQLite files. */
		free(uri);
		fixture_rmdir(dir);
		return;
	}
	assert_int_equal(raw_count(dir, "n.db", "PRAGMA user_version"), 3);

	/* An empty file counts as new. */
	char path[600];
	snprintf(path, sizeof(path), "%s/empty.db", dir);
	FILE *f = fopen(path, "w");
	fclose(f);
	char *empty = file_uri(dir, "empty.db");
	assert_int_equal(store_open(fixture_uri(empty), &new_only, &s, &err),
	                 0);
	store_close(s);
	assert_int_equal(raw_count(dir, "empty.db", "PRAGMA user_version"),
	                 head);
	free(empty);
	free(uri);
	fixture_rmdir(dir);
}

/* ============================================== nonces, GC reports */

static void revision_nonces_are_recorded_per_commit(void **state)
{
	store *s = fixture_open("sqlite::memory:nonces");
	pemba_error err = {0};
	pemba_revision r1 =
	    fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	pemba_revision r2 =
	    fixture_write(s, 'c', "document:2#viewer@user:anne", NULL);
	uint64_t n1, n2, n;
	assert_int_equal(store_revision_nonce(s, r1, &n1, &err), 0);
	assert_int_equal(store_revision_nonce(s, r2, &n2, &err), 0);
	assert_true(n1 != 0 && n2 != 0 && n1 != n2);
	assert_int_equal(store_revision_nonce(s, r1, &n, &err), 0);
	assert_true(n == n1); /* cached or not, the same */
	assert_int_equal(store_revision_nonce(s, 0, &n, &err), 0);
	assert_true(n == 0);
	assert_int_equal(store_revision_nonce(s, 1000, &n, &err), 0);
	assert_true(n == 0);
	/* Another handle reads the same. */
	store *o = fixture_open("sqlite::memory:nonces");
	assert_int_equal(store_revision_nonce(o, r2, &n, &err), 0);
	assert_true(n == n2);
	/* An aborted revision leaves no nonce behind. */
	store_txn *t;
	pemba_revision r3;
	assert_int_equal(store_txn_begin(s, &t, &r3, &err), 0);
	assert_int_equal(store_revision_nonce(s, r3, &n, &err), 0);
	store_txn_abort(t);
	assert_int_equal(store_revision_nonce(s, r3, &n, &err), 0);
	assert_true(n == 0);
	/* GC removes old revision records: a handle that never saw them
	 * knows no nonce any more. */
	fixture_write(s, 'c', "document:3#viewer@user:anne", NULL);
	uint64_t removed;
	assert_int_equal(
	    store_gc(s, wall_ms() + 2 * 24 * 3600 * 1000LL, &removed, &err), 0);
	store *late = fixture_open("sqlite::memory:nonces");
	assert_int_equal(store_revision_nonce(late, r1, &n, &err), 0);
	assert_true(n == 0);
	store_close(late);
	store_close(o);
	store_close(s);
}

static void gc_report_says_what_was_removed(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), 0);
	assert_int_equal(store_txn_write_schema(t, "v1", 2, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);             /* 1 */
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL); /* 2 */
	fixture_write(s, 'd', "document:1#viewer@user:anne", NULL); /* 3 */
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), 0);
	assert_int_equal(store_txn_write_schema(t, "v2", 2, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0); /* 4 */
	store_gc_stats st;
	assert_int_equal(store_gc_report(s, 0, &st, &err), 0);
	assert_int_equal(st.relationships + st.schemas + st.revisions, 0);
	assert_int_equal(st.floor, 0);
	assert_int_equal(
	    store_gc_report(s, wall_ms() + 2 * 24 * 3600 * 1000LL, &st, &err),
	    0);
	assert_int_equal(st.relationships, 1);
	assert_int_equal(st.schemas, 1);
	assert_int_equal(st.revisions, 3);
	assert_int_equal(st.expired, 0);
	assert_int_equal(st.floor, 4);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(bad_uris_are_refused_naming_the_accepted_forms),
	    cmocka_unit_test(
	        unreachable_postgres_is_unavailable_without_the_password),
	    cmocka_unit_test(postgres_mode_ro_refuses_writes),
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
	    cmocka_unit_test(uri_parameters_are_parsed_or_refused_by_name),
	    cmocka_unit_test(
	        a_layout_changed_under_a_handle_refuses_everything),
	    cmocka_unit_test(new_only_creates_but_refuses_pending_migrations),
	    cmocka_unit_test(revision_nonces_are_recorded_per_commit),
	    cmocka_unit_test(gc_report_says_what_was_removed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
