/*
 * test_store_snapshot.c -- copies of a datastore: a snapshot taken while
 * another thread keeps writing is exactly the original at the snapshot's
 * revision (relationships, schema, revision nonces, identity); it never
 * overwrites a file and leaves nothing behind on failure; --new-identity
 * and store_new_identity give a copy its own identity.
 */
#include <dirent.h>
#include <pthread.h>
#include <unistd.h>

#include "store_fixture.h"

static char *file_uri(const char *dir, const char *name)
{
	char *uri = malloc(strlen(dir) + strlen(name) + 16);
	sprintf(uri, "sqlite://%s/%s", dir, name);
	return uri;
}

/* Every relationship visible at `at`, as "a;b;c" (caller frees). */
static char *scan_all(store *s, pemba_revision at)
{
	pemba_error err = {0};
	store_iter *it;
	if (store_scan(s, at, NULL, 0, &it, &err))
		fail_msg("store_scan: %s", err.message);
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap);
	out[0] = '\0';
	const store_rel *row;
	int rc;
	while ((rc = store_iter_next(it, &row, &err)) == 1) {
		char line[600];
		fixture_format(line, sizeof(line), row);
		size_t l = strlen(line);
		if (len + l + 2 > cap) {
			cap = (cap + l) * 2;
			out = realloc(out, cap);
		}
		if (len)
			out[len++] = ';';
		memcpy(out + len, line, l + 1);
		len += l;
	}
	assert_int_equal(rc, 0);
	store_iter_close(it);
	return out;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

typedef struct progress {
	uint64_t calls, last_done, total;
	bool monotonic;
} progress;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	progress *p = ctx;
	if (done < p->last_done || done > total)
		p->monotonic = false;
	p->calls++;
	p->last_done = done;
	p->total = total;
}

/* ====================================================== under writes */

typedef struct writer {
	const char *uri;
	int stop;   /* atomic */
	int writes; /* atomic: revisions written so far */
} writer;

static int writes_so_far(writer *w)
{
	return __atomic_load_n(&w->writes, __ATOMIC_ACQUIRE);
}

/* Keeps writing: each revision touches two relationships and deletes
 * one written earlier, until told to stop. */
static void *write_loop(void *arg)
{
	writer *w = arg;
	store *s = fixture_open(w->uri);
	char a[64], b[64], c[64];
	for (int i = 0;
	     !__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE) && i < 100000; i++) {
		snprintf(a, sizeof(a), "document:%d#viewer@user:u%d", i, i);
		snprintf(b, sizeof(b), "folder:%d#owner@user:u%d", i, i % 7);
		fixture_write(s, 't', a, b, NULL);
		if (i >= 3) {
			snprintf(c, sizeof(c), "document:%d#viewer@user:u%d",
			         i - 3, i - 3);
			fixture_write(s, 'd', c, NULL);
		}
		__atomic_store_n(&w->writes, i + 1, __ATOMIC_RELEASE);
	}
	store_close(s);
	return NULL;
}

static void snapshot_under_writes_is_the_original_at_its_revision(void **state)
{
	FIXTURE_SQLITE_ONLY("snapshots are SQLite files (PostgreSQL: pg_dump)");
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "orig.db");
	store *s = fixture_open(uri);
	pemba_error err = {0};
	store_txn *t;
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), 0);
	assert_int_equal(store_txn_write_schema(t, "schema v1", 9, &err), 0);
	/* Enough pages that the copy takes many steps while the writer
	 * commits between them. */
	for (int i = 0; i < 40000; i++) {
		fixture_rel fr;
		char text[128];
		snprintf(text, sizeof(text),
		         "bulk:%08d-padding-padding-padding#viewer@user:%d", i,
		         i % 100);
		fixture_parse(&fr, text);
		assert_int_equal(store_txn_create(t, &fr.rel, &err), 0);
	}
	assert_int_equal(store_txn_commit(t, &err), 0);

	writer w = {.uri = uri};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, write_loop, &w), 0);
	while (writes_so_far(&w) < 50)
		usleep(1000);

	char path[600];
	snprintf(path, sizeof(path), "%s/copy.db", dir);
	store_snapshot_info info;
	progress p = {.monotonic = true};
	int before_snapshot = writes_so_far(&w);
	assert_int_equal(
	    store_snapshot(s, path, false, on_progress, &p, &info, &err), 0);
	int at_snapshot = writes_so_far(&w);
	/* (How many commits landed during the copy depends on the
	 * machine; the point is that they could.) */
	print_message("snapshot: %llu steps, %d writes during the copy\n",
	              (unsigned long long)p.calls,
	              at_snapshot - before_snapshot);
	/* Let the writer go on a while, so the original moves past. */
	while (writes_so_far(&w) < at_snapshot + 20)
		usleep(1000);
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	assert_true(p.calls > 2); /* several steps, writes between them */
	assert_true(p.monotonic);

	pemba_revision head;
	assert_int_equal(store_head_revision(s, &head, &err), 0);
	assert_true(info.revision > 50);
	assert_true(head > info.revision);
	assert_true(info.bytes > 0);
	assert_string_equal(info.datastore_id, store_datastore_id(s));

	char *copy_uri = file_uri(dir, "copy.db");
	store *c = fixture_open(copy_uri);
	pemba_revision copy_head;
	assert_int_equal(store_head_revision(c, &copy_head, &err), 0);
	assert_int_equal(copy_head, info.revision);
	assert_string_equal(store_datastore_id(c), store_datastore_id(s));
	char *want = scan_all(s, info.revision);
	char *got = scan_all(c, 0);
	assert_true(strlen(want) > 100);
	assert_string_equal(got, want);
	free(want);
	free(got);
	/* Older revisions too: the copy is the history, not only the head. */
	want = scan_all(s, info.revision - 10);
	got = scan_all(c, info.revision - 10);
	assert_string_equal(got, want);
	free(want);
	free(got);
	char *text;
	assert_int_equal(store_read_schema(c, 0, &text, NULL, &err), 0);
	assert_string_equal(text, "schema v1");
	free(text);
	uint64_t n1, n2;
	assert_int_equal(store_revision_nonce(s, info.revision, &n1, &err), 0);
	assert_int_equal(store_revision_nonce(c, info.revision, &n2, &err), 0);
	assert_true(n1 != 0 && n1 == n2 && n1 == info.nonce);
	/* The copy is a datastore like any: it takes writes. */
	fixture_write(c, 't', "document:x#viewer@user:y", NULL);
	store_close(c);
	store_close(s);
	free(copy_uri);
	free(uri);
	fixture_rmdir(dir);
}

/* ============================================ refusals, identity, progress */

static void snapshot_never_overwrites_and_reports_progress(void **state)
{
	FIXTURE_SQLITE_ONLY("snapshots are SQLite files (PostgreSQL: pg_dump)");
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "o.db");
	store *s = fixture_open(uri);
	for (int i = 0; i < 20; i++) {
		char r[64];
		snprintf(r, sizeof(r), "document:%d#viewer@user:%d", i, i);
		fixture_write(s, 'c', r, NULL);
	}
	char path[600];
	snprintf(path, sizeof(path), "%s/taken.db", dir);
	FILE *f = fopen(path, "w");
	fputs("precious", f);
	fclose(f);
	int before = count_entries(dir);
	pemba_error err = {0};
	store_snapshot_info info;
	assert_int_equal(
	    store_snapshot(s, path, false, NULL, NULL, &info, &err),
	    PEMBA_EEXISTS);
	assert_non_null(strstr(err.message, "already exists"));
	f = fopen(path, "r");
	char buf[16] = "";
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "precious");
	assert_int_equal(count_entries(dir), before);

	/* A directory that does not exist: nothing is left behind. */
	snprintf(path, sizeof(path), "%s/missing/x.db", dir);
	assert_int_equal(
	    store_snapshot(s, path, false, NULL, NULL, &info, &err), PEMBA_EIO);
	assert_int_equal(count_entries(dir), before);

	snprintf(path, sizeof(path), "%s/p.db", dir);
	progress p = {.monotonic = true};
	assert_int_equal(
	    store_snapshot(s, path, false, on_progress, &p, &info, &err), 0);
	assert_true(p.calls >= 1);
	assert_true(p.monotonic);
	assert_true(p.total > 0 && p.last_done == p.total);
	assert_int_equal(info.revision, 20);
	/* Only the copy appeared: no temporary file, no WAL. */
	assert_int_equal(count_entries(dir), before + 1);
	store_close(s);
	free(uri);
	fixture_rmdir(dir);
}

static void new_identity_makes_a_separate_datastore(void **state)
{
	FIXTURE_SQLITE_ONLY(
	    "starts from a snapshot; see "
	    "postgres_snapshot_names_pg_dump_and_new_identity_works");
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "i.db");
	store *s = fixture_open(uri);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	char path[600];
	snprintf(path, sizeof(path), "%s/n.db", dir);
	pemba_error err = {0};
	store_snapshot_info info;
	assert_int_equal(store_snapshot(s, path, true, NULL, NULL, &info, &err),
	                 0);
	assert_int_equal(strlen(info.datastore_id), 32);
	assert_string_not_equal(info.datastore_id, store_datastore_id(s));
	char *copy_uri = file_uri(dir, "n.db");
	store *c = fixture_open(copy_uri);
	assert_string_equal(store_datastore_id(c), info.datastore_id);
	store_filter doc = {.resource_type = "document"};
	assert_query(c, 0, &doc, "document:1#viewer@user:anne");

	/* store_new_identity on an existing datastore: this handle and any
	 * opened later see the new one. */
	char before[64], id[64];
	snprintf(before, sizeof(before), "%s", store_datastore_id(c));
	assert_int_equal(store_new_identity(c, id, &err), 0);
	assert_string_not_equal(id, before);
	assert_string_equal(store_datastore_id(c), id);
	store_close(c);
	c = fixture_open(copy_uri);
	assert_string_equal(store_datastore_id(c), id);
	store_close(c);
	/* Not on a read-only handle. */
	char ro[700];
	snprintf(ro, sizeof(ro), "%s?mode=ro", copy_uri);
	c = fixture_open(ro);
	assert_int_equal(store_new_identity(c, id, &err), PEMBA_EREADONLY);
	store_close(c);
	store_close(s);
	free(copy_uri);
	free(uri);
	fixture_rmdir(dir);
}

/* A snapshot before an upgrade is the point: any layout is copied as is. */
static void snapshot_copies_an_old_layout_as_is(void **state)
{
	FIXTURE_SQLITE_ONLY("snapshots are SQLite files (PostgreSQL: pg_dump)");
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "old.db");
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);
	assert_int_equal(store_migrate_up(s, 3, &err), 0);
	char path[600];
	snprintf(path, sizeof(path), "%s/old-copy.db", dir);
	store_snapshot_info info;
	assert_int_equal(
	    store_snapshot(s, path, false, NULL, NULL, &info, &err), 0);
	assert_int_equal(info.nonce, 0);
	store_close(s);
	char *copy_uri = file_uri(dir, "old-copy.db");
	assert_int_equal(store_open(fixture_uri(copy_uri), &none, &s, &err), 0);
	int current;
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, 3);
	store_close(s);
	free(copy_uri);
	free(uri);
	fixture_rmdir(dir);
}

/* PostgreSQL datastores are copied with pg_dump; a copy gets a new
 * identity with store_new_identity. */
static void postgres_snapshot_names_pg_dump_and_new_identity_works(void **state)
{
	if (!pg_fixture_enabled()) {
		print_message("skipped on SQLite: about PostgreSQL\n");
		skip();
	}
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	pemba_error err = {0};
	store_snapshot_info info;
	assert_int_equal(store_snapshot(s, "/tmp/never-written.db", false, NULL,
	                                NULL, &info, &err),
	                 PEMBA_EUNSUPPORTED);
	assert_non_null(strstr(err.message, "pg_dump"));
	char before[64], id[64];
	snprintf(before, sizeof(before), "%s", store_datastore_id(s));
	assert_int_equal(strlen(before), 32);
	assert_int_equal(store_new_identity(s, id, &err), 0);
	assert_string_not_equal(id, before);
	assert_string_equal(store_datastore_id(s), id);
	store *o;
	assert_int_equal(store_reopen(s, &o, &err), 0);
	assert_string_equal(store_datastore_id(o), id);
	store_close(o);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        snapshot_under_writes_is_the_original_at_its_revision),
	    cmocka_unit_test(snapshot_never_overwrites_and_reports_progress),
	    cmocka_unit_test(new_identity_makes_a_separate_datastore),
	    cmocka_unit_test(snapshot_copies_an_old_layout_as_is),
	    cmocka_unit_test(
	        postgres_snapshot_names_pg_dump_and_new_identity_works),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
