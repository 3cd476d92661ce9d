/*
 * test_watch.c -- the change feed (pemba_watch_changes), waiting for new
 * revisions (pemba_wait_revision) and exports with resumable cursors
 * (pemba_export_relationships).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "pemba.h"
#include "pg_fixture.h"

static const char *SCHEMA = "definition user {}\n"
                            "definition group {\n"
                            "  relation member: user\n"
                            "}\n"
                            "definition document {\n"
                            "  relation viewer: user | group#member\n"
                            "  permission view = viewer\n"
                            "}\n";

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

/* Writes "+rel" (TOUCH) / "-rel" (DELETE) items, separated by spaces, as
 * one revision; returns it. */
static pemba_revision write_ops(pemba_db *db, const char *ops)
{
	pemba_update u[16];
	char *storage[16];
	size_t n = 0;
	char *copy = strdup(ops), *save = NULL;
	for (char *tok = strtok_r(copy, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save), n++) {
		pemba_error err;
		u[n].op = tok[0] == '-' ? PEMBA_OP_DELETE : PEMBA_OP_TOUCH;
		assert_int_equal(pemba_parse_relationship(tok + 1, &u[n].rel,
		                                          &storage[n], &err),
		                 0);
	}
	pemba_revision rev;
	pemba_error err;
	int rc = pemba_write_relationships(db, u, n, NULL, 0, &rev, &err);
	if (rc)
		fail_msg("write failed: %s", err.message);
	for (size_t i = 0; i < n; i++)
		pemba_free(storage[i]);
	free(copy);
	return rev;
}

/* Collects events as text: "3:+document:1#viewer@user:a -...;" with
 * "S" for a schema change, "C" for a checkpoint, ">" for "more follows". */
typedef struct log {
	char text[8192];
	size_t events;
	size_t stop_after; /* 0: never stop */
} log;

static int log_fn(void *ctx, const pemba_watch_event *ev)
{
	log *l = ctx;
	size_t len = strlen(l->text);
	len += snprintf(l->text + len, sizeof(l->text) - len,
	                "%llu:", (unsigned long long)ev->revision);
	if (ev->schema_updated)
		len += snprintf(l->text + len, sizeof(l->text) - len, "S");
	if (ev->is_checkpoint)
		len += snprintf(l->text + len, sizeof(l->text) - len, "C");
	for (size_t i = 0; i < ev->nupdates && len < sizeof(l->text); i++) {
		char *s = pemba_format_relationship(&ev->updates[i].rel);
		len += snprintf(l->text + len, sizeof(l->text) - len, "%s%s%s",
		                i ? " " : "",
		                ev->updates[i].op == PEMBA_OP_TOUCH ? "+" : "-",
		                s);
		pemba_free(s);
	}
	if (len < sizeof(l->text))
		snprintf(l->text + len, sizeof(l->text) - len, "%s;",
		         ev->more_in_revision ? ">" : "");
	l->events++;
	return l->stop_after && l->events >= l->stop_after;
}

static void watch(pemba_db *db, pemba_revision after,
                  const pemba_watch_filter *f, uint64_t max, log *l,
                  pemba_revision *last)
{
	pemba_error err;
	memset(l->text, 0, sizeof(l->text));
	l->events = 0;
	int rc = pemba_watch_changes(db, after, f, max, log_fn, l, last, &err);
	if (rc)
		fail_msg("watch failed: %s", err.message);
}

/* ================================================================ watch */

static void watch_reports_touches_and_deletes_per_revision(void **state)
{
	pemba_db *db = setup(); /* schema at 1 */
	write_ops(db, "+document:1#viewer@user:a +document:2#viewer@user:b");
	write_ops(db, "-document:1#viewer@user:a "
	              "+document:3#viewer@group:g#member");
	write_ops(db, "-document:9#viewer@user:nobody"); /* no-op */
	log l = {0};
	pemba_revision last;
	watch(db, 1, NULL, 0, &l, &last);
	assert_string_equal(l.text, "2:+document:1#viewer@user:a "
	                            "+document:2#viewer@user:b;"
	                            "3:+document:3#viewer@group:g#member "
	                            "-document:1#viewer@user:a;");
	assert_int_equal(last, 4);
	/* Nothing new: no events, position unchanged. */
	watch(db, 4, NULL, 0, &l, &last);
	assert_string_equal(l.text, "");
	assert_int_equal(last, 4);
	pemba_close(db);
}

static void watch_from_zero_includes_schema_when_asked(void **state)
{
	pemba_db *db = setup();
	write_ops(db, "+document:1#viewer@user:a");
	log l = {0};
	pemba_revision last;
	watch(db, 0, NULL, 0, &l, &last);
	assert_string_equal(l.text, "2:+document:1#viewer@user:a;");
	pemba_watch_filter f = {.kinds = PEMBA_WATCH_RELATIONSHIPS |
	                                 PEMBA_WATCH_SCHEMA};
	watch(db, 0, &f, 0, &l, &last);
	assert_string_equal(l.text, "1:S;2:+document:1#viewer@user:a;");
	f.kinds = PEMBA_WATCH_SCHEMA;
	watch(db, 0, &f, 0, &l, &last);
	assert_string_equal(l.text, "1:S;");
	assert_int_equal(last, 2);
	pemba_close(db);
}

static void watch_filters_by_object_type_and_relationship_filter(void **state)
{
	pemba_db *db = setup();
	write_ops(db, "+document:1#viewer@user:a +group:g#member@user:a");
	write_ops(db, "+document:2#viewer@user:b");
	log l = {0};
	pemba_revision last;
	const char *types[] = {"group"};
	pemba_watch_filter f = {.object_types = types, .nobject_types = 1};
	watch(db, 1, &f, 0, &l, &last);
	assert_string_equal(l.text, "2:+group:g#member@user:a;");
	assert_int_equal(last, 3); /* revision 3 was seen, nothing matched */

	pemba_filter rf[2] = {
	    {.resource_type = "document",
	     .subject_type = "user",
	     .subject_id = "b"},
	    {.resource_type = "group", .relation = "viewer"},
	};
	pemba_watch_filter g = {.filters = rf, .nfilters = 2};
	watch(db, 1, &g, 0, &l, &last);
	assert_string_equal(l.text, "3:+document:2#viewer@user:b;");

	/* A resource id prefix narrows its filter (SpiceDB's
	 * optional_resource_id_prefix). */
	pemba_filter doc = {.resource_type = "document"};
	const char *const prefixes[] = {"2"};
	pemba_watch_filter p = {
	    .filters = &doc, .nfilters = 1, .resource_id_prefixes = prefixes};
	watch(db, 1, &p, 0, &l, &last);
	assert_string_equal(l.text, "3:+document:2#viewer@user:b;");

	pemba_watch_filter both = {.object_types = types,
	                           .nobject_types = 1,
	                           .filters = rf,
	                           .nfilters = 1};
	pemba_error err;
	assert_int_equal(
	    pemba_watch_changes(db, 1, &both, 0, log_fn, &l, &last, &err),
	    PEMBA_EINVAL);
	pemba_close(db);
}

static void watch_checkpoint_follows_every_revision(void **state)
{
	pemba_db *db = setup();
	write_ops(db, "+document:1#viewer@user:a");
	write_ops(db, "+group:g#member@user:a");
	log l = {0};
	pemba_revision last;
	const char *types[] = {"document"};
	pemba_watch_filter f = {.object_types = types,
	                        .nobject_types = 1,
	                        .kinds = PEMBA_WATCH_RELATIONSHIPS |
	                                 PEMBA_WATCH_CHECKPOINTS};
	/* Every revision ends with a checkpoint, after its changes (as
	 * SpiceDB's Watch). */
	watch(db, 1, &f, 0, &l, &last);
	assert_string_equal(l.text, "2:+document:1#viewer@user:a;2:C;3:C;");
	assert_int_equal(last, 3);
	watch(db, 1, &f, 1, &l, &last);
	assert_string_equal(l.text, "2:+document:1#viewer@user:a;2:C;");
	assert_int_equal(last, 2);
	/* Nothing after the head: nothing at all. */
	watch(db, 3, &f, 0, &l, &last);
	assert_string_equal(l.text, "");
	pemba_close(db);
}

static void watch_max_revisions_bounds_the_range(void **state)
{
	pemba_db *db = setup();
	for (int i = 0; i < 5; i++) {
		char op[64];
		snprintf(op, sizeof(op), "+document:%d#viewer@user:a", i);
		write_ops(db, op);
	}
	log l = {0};
	pemba_revision last, after = 1;
	size_t events = 0;
	for (int round = 0; round < 10 && after < 6; round++) {
		watch(db, after, NULL, 2, &l, &last);
		assert_true(last > after && last <= after + 2);
		events += l.events;
		after = last;
	}
	assert_int_equal(after, 6);
	assert_int_equal(events, 5);
	pemba_close(db);
}

static void watch_splits_large_revisions_into_chunks(void **state)
{
	pemba_db *db = setup();
	pemba_import *imp;
	pemba_error err;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err),
	                 0);
	size_t total = PEMBA_WATCH_CHUNK * 2 + 7;
	for (size_t i = 0; i < total; i++) {
		char id[32];
		snprintf(id, sizeof(id), "u%zu", i);
		pemba_relationship r = {.resource_type = "document",
		                        .resource_id = "big",
		                        .relation = "viewer",
		                        .subject_type = "user",
		                        .subject_id = id};
		assert_int_equal(pemba_import_add(imp, &r, 1, &err), 0);
	}
	pemba_revision rev;
	assert_int_equal(pemba_import_commit(imp, &rev, NULL, &err), 0);
	log l = {0};
	pemba_revision last;
	watch(db, 1, NULL, 0, &l, &last);
	assert_int_equal(l.events, 3);
	assert_int_equal(last, rev);
	/* Stopping after the first chunk: the revision is not complete. */
	l.stop_after = 1;
	pemba_error err2;
	memset(l.text, 0, sizeof(l.text));
	l.events = 0;
	assert_int_equal(
	    pemba_watch_changes(db, 1, NULL, 0, log_fn, &l, &last, &err2), 0);
	assert_int_equal(l.events, 1);
	assert_int_equal(last, 1);
	pemba_close(db);
}

static void watch_refuses_future_and_collected_revisions(void **state)
{
	pemba_db *db;
	pemba_error err;
	char dir[] = "/tmp/pemba-watch-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char uri[128];
	snprintf(uri, sizeof(uri), "sqlite://%s/w.db", dir);
	/* A one-second GC window: wait it out, then collect. */
	pemba_options o = {.gc_window_seconds = 1};
	assert_int_equal(pemba_open(pg_fixture_uri(uri), &o, &db, &err), 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	write_ops(db, "+document:1#viewer@user:a");
	write_ops(db, "-document:1#viewer@user:a");
	log l = {0};
	pemba_revision last;
	assert_int_equal(
	    pemba_watch_changes(db, 9, NULL, 0, log_fn, &l, &last, &err),
	    PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "future"));
	struct timespec ts = {1, 200 * 1000 * 1000};
	nanosleep(&ts, NULL);
	write_ops(db, "+document:2#viewer@user:a");
	uint64_t removed;
	assert_int_equal(pemba_gc(db, &removed, &err), 0);
	assert_int_equal(
	    pemba_watch_changes(db, 1, NULL, 0, log_fn, &l, &last, &err),
	    PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "garbage-collected"));
	/* The message names the window (1 s here). */
	assert_non_null(strstr(err.message, "GC window of 1 s"));
	pemba_close(db);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void wait_revision_returns_at_once_or_after_timeout(void **state)
{
	pemba_db *db = setup();
	pemba_revision head;
	pemba_error err;
	assert_int_equal(pemba_wait_revision(db, 0, 1000, &head, &err), 0);
	assert_int_equal(head, 1);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(pemba_wait_revision(db, 1, 60, &head, &err), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_int_equal(head, 1);
	long ms =
	    (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	assert_true(ms >= 55 && ms < 2000);
	pemba_close(db);
}

/* =============================================================== export */

typedef struct collect {
	char text[16384];
	size_t n, stop_after;
} collect;

static int collect_fn(void *ctx, const pemba_relationship *rel)
{
	collect *c = ctx;
	char *s = pemba_format_relationship(rel);
	size_t len = strlen(c->text);
	snprintf(c->text + len, sizeof(c->text) - len, "%s\n", s);
	pemba_free(s);
	c->n++;
	return c->stop_after && c->n >= c->stop_after;
}

static void export_pages_through_every_type_at_one_revision(void **state)
{
	pemba_db *db = setup();
	write_ops(db, "+document:1#viewer@user:a +document:2#viewer@user:b "
	              "+group:g#member@user:c "
	              "+document:3#viewer@group:g#member");
	pemba_revision at = 2;
	/* Everything in one call. */
	collect all = {0};
	char *next;
	pemba_revision rev;
	pemba_error err;
	assert_int_equal(pemba_export_relationships(db, 0, NULL, 0, collect_fn,
	                                            &all, &rev, &next, &err),
	                 0);
	assert_int_equal(all.n, 4);
	assert_int_equal(rev, at);
	assert_null(next);
	/* Later writes do not show in a resumed export. */
	collect paged = {0};
	char *cursor = NULL;
	int pages = 0;
	do {
		char *prev = cursor;
		assert_int_equal(
		    pemba_export_relationships(db, 0, prev, 3, collect_fn,
		                               &paged, &rev, &cursor, &err),
		    0);
		assert_int_equal(rev, at);
		pemba_free(prev);
		if (pages++ == 0)
			write_ops(db, "+document:0#viewer@user:late "
			              "-document:2#viewer@user:b");
	} while (cursor && pages < 10);
	assert_int_equal(pages, 2);
	assert_string_equal(paged.text, all.text);
	pemba_close(db);
}

static void export_resumes_after_an_early_stop(void **state)
{
	pemba_db *db = setup();
	write_ops(db, "+document:1#viewer@user:a +document:2#viewer@user:b "
	              "+document:3#viewer@user:c");
	collect c = {.stop_after = 1};
	char *next;
	pemba_revision rev;
	pemba_error err;
	assert_int_equal(pemba_export_relationships(db, 0, NULL, 0, collect_fn,
	                                            &c, &rev, &next, &err),
	                 0);
	assert_non_null(next);
	c.stop_after = 0;
	char *end;
	assert_int_equal(pemba_export_relationships(db, rev, next, 0,
	                                            collect_fn, &c, &rev, &end,
	                                            &err),
	                 0);
	assert_null(end);
	assert_int_equal(c.n, 3);
	/* A cursor for another revision than asked for is refused. */
	assert_int_equal(pemba_export_relationships(db, 1, next, 0, collect_fn,
	                                            &c, &rev, &end, &err),
	                 PEMBA_EINVAL);
	pemba_free(next);
	pemba_close(db);
}

static void export_refuses_malformed_cursors(void **state)
{
	pemba_db *db = setup();
	write_ops(db, "+document:1#viewer@user:a");
	const char *bad[] = {"",        "x",           "e1:",
	                     "e1:2",    "e1:2:",       "e1:2:zz",
	                     "e1:0:00", "e1:2:616263", "e1:-1:00"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		collect c = {0};
		char *next;
		pemba_error err;
		assert_int_equal(pemba_export_relationships(db, 0, bad[i], 0,
		                                            collect_fn, &c,
		                                            NULL, &next, &err),
		                 PEMBA_EINVAL);
		assert_null(next);
	}
	pemba_close(db);
}

static void export_of_an_empty_datastore_is_empty(void **state)
{
	pemba_db *db;
	pemba_error err;
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err), 0);
	collect c = {0};
	char *next;
	pemba_revision rev = 99;
	assert_int_equal(pemba_export_relationships(db, 0, NULL, 10, collect_fn,
	                                            &c, &rev, &next, &err),
	                 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(rev, 0);
	assert_null(next);
	pemba_close(db);
}

static int metadata_fn(void *ctx, const pemba_watch_event *ev)
{
	char *out = ctx;
	if (ev->nupdates && ev->metadata)
		snprintf(out, 256, "%s", ev->metadata);
	return 0;
}

static void watch_reports_transaction_metadata_of_a_write(void **state)
{
	pemba_db *db = setup();
	pemba_error err;
	pemba_revision before, last;
	assert_int_equal(pemba_head_revision(db, &before, &err), 0);
	pemba_update u = {.op = PEMBA_OP_TOUCH,
	                  .rel = {.resource_type = "document",
	                          .resource_id = "1",
	                          .relation = "viewer",
	                          .subject_type = "user",
	                          .subject_id = "anne"}};
	pemba_write_options opts = {.metadata =
	                                "{\"transaction_id\":\"tx-1\"}"};
	assert_int_equal(
	    pemba_write_relationships_ex(db, &u, 1, NULL, 0, &opts, NULL, &err),
	    0);
	char seen[256] = "";
	assert_int_equal(pemba_watch_changes(db, before, NULL, 0, metadata_fn,
	                                     seen, &last, &err),
	                 0);
	assert_string_equal(seen, "{\"transaction_id\":\"tx-1\"}");

	/* Oversized metadata is refused and changes nothing. */
	size_t big = 70 * 1024;
	char *huge = malloc(big + 1);
	memset(huge, 'x', big);
	huge[big] = '\0';
	opts.metadata = huge;
	u.rel.subject_id = "bob";
	assert_int_equal(
	    pemba_write_relationships_ex(db, &u, 1, NULL, 0, &opts, NULL, &err),
	    PEMBA_ELIMIT);
	free(huge);
	pemba_revision head;
	assert_int_equal(pemba_head_revision(db, &head, &err), 0);
	assert_int_equal(head, before + 1);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(watch_reports_touches_and_deletes_per_revision),
	    cmocka_unit_test(watch_from_zero_includes_schema_when_asked),
	    cmocka_unit_test(
	        watch_filters_by_object_type_and_relationship_filter),
	    cmocka_unit_test(watch_checkpoint_follows_every_revision),
	    cmocka_unit_test(watch_max_revisions_bounds_the_range),
	    cmocka_unit_test(watch_splits_large_revisions_into_chunks),
	    cmocka_unit_test(watch_refuses_future_and_collected_revisions),
	    cmocka_unit_test(wait_revision_returns_at_once_or_after_timeout),
	    cmocka_unit_test(export_pages_through_every_type_at_one_revision),
	    cmocka_unit_test(export_resumes_after_an_early_stop),
	    cmocka_unit_test(export_refuses_malformed_cursors),
	    cmocka_unit_test(export_of_an_empty_datastore_is_empty),
	    cmocka_unit_test(watch_reports_transaction_metadata_of_a_write),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
