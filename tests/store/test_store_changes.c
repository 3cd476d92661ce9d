/*
 * test_store_changes.c -- the change feed (store_changes), transaction
 * metadata, the full scan (store_scan), reopening a datastore
 * (store_reopen) and named memory datastores.
 */
#include "store/store_fixture.h"

/* Collects a change feed as text: "+rel" / "-rel" per change, "|N[S][m]"
 * at the end of revision N (S: schema written, m: metadata present). */
typedef struct feed {
	char text[4096];
} feed;

static int feed_fn(void *ctx, const store_change *c)
{
	feed *f = ctx;
	size_t len = strlen(f->text);
	char line[600];
	if (c->kind == STORE_CHANGE_REVISION) {
		snprintf(line, sizeof(line), "|%llu%s%s%s%s ",
		         (unsigned long long)c->rev,
		         c->schema_changed ? "S" : "", c->metadata ? "m=" : "",
		         c->metadata ? c->metadata : "",
		         c->timestamp_ms > 0 ? "" : "(no time)");
	} else {
		fixture_format(line + 1, sizeof(line) - 1, c->rel);
		line[0] = c->kind == STORE_CHANGE_TOUCH ? '+' : '-';
		if (*c->rel->caveat_name)
			snprintf(line + strlen(line),
			         sizeof(line) - strlen(line), "[%s]",
			         c->rel->caveat_name);
		strcat(line, " ");
	}
	snprintf(f->text + len, sizeof(f->text) - len, "%s", line);
	return 0;
}

static const char *changes(store *s, pemba_revision after, pemba_revision upto,
                           feed *f)
{
	pemba_error err = {0};
	memset(f->text, 0, sizeof(f->text));
	int rc = store_changes(s, after, upto, feed_fn, f, &err);
	if (rc)
		fail_msg("store_changes: %s", err.message);
	return f->text;
}

static void feed_reports_creates_deletes_and_replacements(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "doc:1#viewer@user:a", "doc:2#viewer@user:b",
	              NULL); /* 1 */
	/* 2: a caveat added by TOUCH replaces the version: one TOUCH. */
	pemba_error err = {0};
	store_txn *t;
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), 0);
	fixture_rel r;
	fixture_parse(&r, "doc:1#viewer@user:a");
	r.rel.caveat_name = "only_weekdays";
	assert_int_equal(store_txn_touch(t, &r.rel, &err), 0);
	fixture_parse(&r, "doc:2#viewer@user:b");
	int deleted;
	assert_int_equal(store_txn_delete(t, &r.rel, &deleted, &err), 0);
	/* Created and deleted in one transaction: never visible, no change. */
	fixture_parse(&r, "doc:3#viewer@user:c");
	assert_int_equal(store_txn_create(t, &r.rel, &err), 0);
	assert_int_equal(store_txn_delete(t, &r.rel, &deleted, &err), 0);
	assert_int_equal(store_txn_set_metadata(t, "{\"k\":\"v\"}", &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	/* 3: a schema. */
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), 0);
	assert_int_equal(
	    store_txn_write_schema(t, "definition user {}", 18, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);

	feed f;
	assert_string_equal(changes(s, 0, 3, &f),
	                    "+doc:1#viewer@user:a +doc:2#viewer@user:b |1 "
	                    "+doc:1#viewer@user:a[only_weekdays] "
	                    "-doc:2#viewer@user:b |2m={\"k\":\"v\"} |3S ");
	assert_string_equal(changes(s, 2, 3, &f), "|3S ");
	assert_string_equal(changes(s, 3, 3, &f), "");
	assert_int_equal(store_changes(s, 0, 4, feed_fn, &f, &err),
	                 PEMBA_EREVISION);
	store_close(s);
}

static void feed_below_the_gc_floor_is_refused(void **state)
{
	store_options o = {.gc_window_seconds = 1};
	store *s;
	pemba_error err = {0};
	assert_int_equal(
	    store_open(fixture_uri("sqlite::memory:"), &o, &s, &err), 0);
	fixture_write(s, 'c', "doc:1#viewer@user:a", NULL);
	fixture_write(s, 'd', "doc:1#viewer@user:a", NULL);
	fixture_write(s, 'c', "doc:2#viewer@user:a", NULL);
	uint64_t removed;
	/* "now" far ahead: everything but the head is outside the window. */
	assert_int_equal(store_gc(s, (int64_t)1 << 50, &removed, &err), 0);
	feed f;
	assert_int_equal(store_changes(s, 1, 3, feed_fn, &f, &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "garbage-collected"));
	assert_string_equal(changes(s, 3, 3, &f), "");
	store_close(s);
}

static void scan_returns_every_type_in_key_order_with_a_cursor(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "doc:2#viewer@user:a", "folder:1#owner@user:b",
	              "doc:1#viewer@group:g#member", NULL);
	fixture_write(s, 'd', "doc:2#viewer@user:a", NULL);
	pemba_error err = {0};
	store_iter *it;
	const store_rel *row;
	char all[3][600];
	int n = 0;
	assert_int_equal(store_scan(s, 1, NULL, 0, &it, &err), 0);
	while (store_iter_next(it, &row, &err) == 1 && n < 3)
		fixture_format(all[n++], sizeof(all[0]), row);
	store_iter_close(it);
	assert_int_equal(n, 3);
	/* Interned order: doc (first name stored) before folder. */
	assert_string_equal(all[0], "doc:1#viewer@group:g#member");
	assert_string_equal(all[1], "doc:2#viewer@user:a");
	assert_string_equal(all[2], "folder:1#owner@user:b");
	/* Resume after the first row, one at a time. */
	fixture_rel after;
	fixture_parse(&after, all[0]);
	assert_int_equal(store_scan(s, 1, &after.rel, 1, &it, &err), 0);
	assert_int_equal(store_iter_next(it, &row, &err), 1);
	char got[600];
	fixture_format(got, sizeof(got), row);
	assert_string_equal(got, all[1]);
	assert_int_equal(store_iter_next(it, &row, &err), 0);
	store_iter_close(it);
	/* At the head the deleted one is gone. */
	n = 0;
	assert_int_equal(store_scan(s, 0, NULL, 0, &it, &err), 0);
	while (store_iter_next(it, &row, &err) == 1)
		n++;
	store_iter_close(it);
	assert_int_equal(n, 2);
	store_close(s);
}

static void named_memory_datastore_is_shared_and_reopenable(void **state)
{
	store *a = fixture_open("sqlite::memory:store-test");
	store *b;
	pemba_error err = {0};
	assert_int_equal(store_reopen(a, &b, &err), 0);
	fixture_write(a, 'c', "doc:1#viewer@user:a", NULL);
	pemba_revision head;
	assert_int_equal(store_head_revision(b, &head, &err), 0);
	assert_int_equal(head, 1);
	assert_query(b, 0, &(store_filter){.resource_type = "doc"},
	             "doc:1#viewer@user:a");
	assert_string_equal(store_datastore_id(a), store_datastore_id(b));
	store_close(a);
	store_close(b);

	if (pg_fixture_enabled())
		return; /* the rest is about SQLite's private memory URIs */
	store *p = fixture_open("sqlite::memory:");
	assert_int_equal(store_reopen(p, &b, &err), PEMBA_EUNSUPPORTED);
	store_close(p);
	assert_int_equal(store_open("sqlite::memory:a?b", NULL, &b, &err),
	                 PEMBA_EINVAL);
}

static void reopened_file_store_sees_the_same_datastore(void **state)
{
	char *dir = fixture_tmpdir();
	char uri[600];
	snprintf(uri, sizeof(uri), "sqlite://%s/r.db", dir);
	store *a = fixture_open(uri), *b;
	pemba_error err = {0};
	assert_int_equal(store_reopen(a, &b, &err), 0);
	fixture_write(b, 'c', "doc:1#viewer@user:a", NULL);
	pemba_revision head;
	assert_int_equal(store_wait_revision(a, 0, 0, &head, &err), 0);
	assert_int_equal(head, 1);
	store_close(a);
	store_close(b);
	fixture_rmdir(dir);
}

/* PostgreSQL: a commit by another process (here: a NOTIFY from another
 * session, which is what every commit sends) raises this process's
 * commit signal at once, through the handle's commit listener. */
static void commits_of_other_processes_raise_the_commit_signal(void **state)
{
	if (!pg_fixture_enabled()) {
		print_message("skipped on SQLite: commits by other processes "
		              "are seen by polling\n");
		skip();
	}
	const char *uri = fixture_uri("sqlite::memory:");
	store *s = fixture_open(uri);
	/* A handle starts listening when it first waits for a revision (or
	 * reads changes). */
	pemba_revision head;
	pemba_error err = {0};
	assert_int_equal(store_wait_revision(s, 0, 0, &head, &err), 0);
	/* The listener's session is up once a notification gets through:
	 * send until one does (each try waits 200 ms). */
	bool heard = false;
	for (int i = 0; i < 50 && !heard; i++) {
		uint64_t g = store_commit_generation();
		assert_int_equal(pg_fixture_exec(uri, "NOTIFY pemba_commit"),
		                 0);
		heard = store_commit_wait(g, 200) != g;
	}
	assert_true(heard);
	/* And a real commit through another handle is one too. */
	store *o = fixture_open(uri);
	uint64_t g = store_commit_generation();
	fixture_write(o, 'c', "doc:1#viewer@user:a", NULL);
	assert_true(store_commit_wait(g, 2000) != g);
	store_close(o);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(feed_reports_creates_deletes_and_replacements),
	    cmocka_unit_test(feed_below_the_gc_floor_is_refused),
	    cmocka_unit_test(
	        scan_returns_every_type_in_key_order_with_a_cursor),
	    cmocka_unit_test(named_memory_datastore_is_shared_and_reopenable),
	    cmocka_unit_test(reopened_file_store_sees_the_same_datastore),
	    cmocka_unit_test(
	        commits_of_other_processes_raise_the_commit_signal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
