/*
 * test_concurrency.c -- one handle per thread over one datastore (a file,
 * or a named memory datastore): concurrent writers and checkers lose no
 * write, revisions are gapless and strictly increasing, nobody sees
 * "database is locked", and a waiter wakes when another thread commits.
 */
#include <pthread.h>
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

#define THREADS 4
#define WRITES 60

static const char *SCHEMA = "definition user {}\n"
                            "definition document {\n"
                            "  relation viewer: user\n"
                            "  permission view = viewer\n"
                            "}\n";

typedef struct worker {
	pemba_db *db;
	int index;
	pemba_revision revs[WRITES];
	char failure[1100]; /* empty when everything went right */
} worker;

static void *write_and_check(void *arg)
{
	worker *w = arg;
	pemba_error err;
	for (int j = 0; j < WRITES; j++) {
		char doc[32], user[32];
		snprintf(doc, sizeof(doc), "t%d-%d", w->index, j);
		snprintf(user, sizeof(user), "u%d", j % 7);
		pemba_update u = {.op = PEMBA_OP_CREATE,
		                  .rel = {.resource_type = "document",
		                          .resource_id = doc,
		                          .relation = "viewer",
		                          .subject_type = "user",
		                          .subject_id = user}};
		pemba_revision rev;
		if (pemba_write_relationships(w->db, &u, 1, NULL, 0, &rev,
		                              &err)) {
			snprintf(w->failure, sizeof(w->failure), "write: %s",
			         err.message);
			return NULL;
		}
		w->revs[j] = rev;
		if (j > 0 && rev <= w->revs[j - 1]) {
			snprintf(w->failure, sizeof(w->failure),
			         "revision %llu after %llu",
			         (unsigned long long)rev,
			         (unsigned long long)w->revs[j - 1]);
			return NULL;
		}
		/* Read your own write, at its revision and at the head. */
		pemba_check_request req = {.resource_type = "document",
		                           .resource_id = doc,
		                           .permission = "view",
		                           .subject_type = "user",
		                           .subject_id = user};
		pemba_revision ats[2] = {rev, PEMBA_REVISION_HEAD};
		for (int k = 0; k < 2; k++) {
			pemba_permissionship p;
			if (pemba_check_permission(w->db, ats[k], &req, &p,
			                           &err)) {
				snprintf(w->failure, sizeof(w->failure),
				         "check: %s", err.message);
				return NULL;
			}
			if (p != PEMBA_HAS_PERMISSION) {
				snprintf(w->failure, sizeof(w->failure),
				         "lost write %s at %llu", doc,
				         (unsigned long long)ats[k]);
				return NULL;
			}
		}
	}
	return NULL;
}

static int count_fn(void *ctx, const pemba_relationship *rel)
{
	(*(size_t *)ctx)++;
	return 0;
}

static int cmp_rev(const void *a, const void *b)
{
	pemba_revision x = *(const pemba_revision *)a,
	               y = *(const pemba_revision *)b;
	return (x > y) - (x < y);
}

static int count_touches(void *ctx, const pemba_watch_event *ev)
{
	for (size_t i = 0; i < ev->nupdates; i++)
		if (ev->updates[i].op == PEMBA_OP_TOUCH)
			(*(size_t *)ctx)++;
	return 0;
}

static void run_writers(const char *uri)
{
	pemba_db *first;
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &first, &err),
	                 0);
	assert_int_equal(
	    pemba_write_schema(first, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	worker w[THREADS];
	pthread_t tid[THREADS];
	for (int i = 0; i < THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].index = i;
		assert_int_equal(pemba_clone(first, &w[i].db, &err), 0);
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(
		    pthread_create(&tid[i], NULL, write_and_check, &w[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(tid[i], NULL);

	pemba_revision all[THREADS * WRITES];
	for (int i = 0; i < THREADS; i++) {
		if (w[i].failure[0])
			fail_msg("thread %d: %s", i, w[i].failure);
		memcpy(&all[i * WRITES], w[i].revs, sizeof(w[i].revs));
		pemba_close(w[i].db);
	}
	/* Every write got its own revision, without gaps: 2 .. 1 + N. */
	qsort(all, THREADS * WRITES, sizeof(all[0]), cmp_rev);
	for (int i = 0; i < THREADS * WRITES; i++)
		assert_int_equal(all[i], (pemba_revision)i + 2);
	pemba_revision head;
	assert_int_equal(pemba_head_revision(first, &head, &err), 0);
	assert_int_equal(head, THREADS * WRITES + 1);
	size_t n = 0;
	pemba_filter f = {.resource_type = "document"};
	assert_int_equal(
	    pemba_read_relationships(first, 0, &f, NULL, 0, count_fn, &n, &err),
	    0);
	assert_int_equal(n, THREADS * WRITES);
	/* The change feed saw every one of them. */
	size_t touches = 0;
	pemba_revision last;
	assert_int_equal(pemba_watch_changes(first, 1, NULL, 0, count_touches,
	                                     &touches, &last, &err),
	                 0);
	assert_int_equal(touches, THREADS * WRITES);
	assert_int_equal(last, head);
	pemba_close(first);
}

static void concurrent_writers_on_a_file_datastore(void **state)
{
	char dir[] = "/tmp/pemba-conc-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char uri[128];
	snprintf(uri, sizeof(uri), "sqlite://%s/c.db", dir);
	run_writers(uri);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void concurrent_writers_on_a_shared_memory_datastore(void **state)
{
	run_writers("sqlite::memory:conc-test");
	if (pg_fixture_enabled())
		return; /* the rest is about SQLite memory datastores */
	/* Closing the last handle dropped it: a new open starts empty. */
	pemba_db *db;
	pemba_error err;
	pemba_revision head;
	assert_int_equal(pemba_open(pg_fixture_uri("sqlite::memory:conc-test"),
	                            NULL, &db, &err),
	                 0);
	assert_int_equal(pemba_head_revision(db, &head, &err), 0);
	assert_int_equal(head, 0);
	pemba_close(db);
}

static void named_memory_datastores_are_separate_by_name(void **state)
{
	if (pg_fixture_enabled()) {
		print_message("skipped on PostgreSQL: SQLite memory datastore "
		              "names\n");
		skip();
	}
	pemba_db *a, *a2, *b, *priv;
	pemba_error err;
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:one"), NULL, &a, &err),
	    0);
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:one"), NULL, &a2, &err),
	    0);
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:two"), NULL, &b, &err),
	    0);
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &priv, &err),
	    0);
	assert_int_equal(
	    pemba_write_schema(a, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	pemba_revision head;
	assert_int_equal(pemba_head_revision(a2, &head, &err), 0);
	assert_int_equal(head, 1);
	assert_int_equal(pemba_head_revision(b, &head, &err), 0);
	assert_int_equal(head, 0);
	pemba_db *clone;
	assert_int_equal(pemba_clone(priv, &clone, &err), PEMBA_EUNSUPPORTED);
	assert_non_null(strstr(err.message, "sqlite::memory:NAME"));
	assert_int_equal(pemba_open(pg_fixture_uri("sqlite::memory:bad/name"),
	                            NULL, &clone, &err),
	                 PEMBA_EINVAL);
	pemba_close(a);
	pemba_close(a2);
	pemba_close(b);
	pemba_close(priv);
}

typedef struct waiter {
	pemba_db *db;
	pemba_revision after, seen;
	int rc;
	long waited_ms;
} waiter;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *wait_for_revision(void *arg)
{
	waiter *w = arg;
	pemba_error err;
	long start = now_ms();
	w->rc = pemba_wait_revision(w->db, w->after, 10000, &w->seen, &err);
	w->waited_ms = now_ms() - start;
	return NULL;
}

static void waiter_wakes_when_another_handle_commits(void **state)
{
	pemba_db *db;
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri("sqlite::memory:wait-test"),
	                            NULL, &db, &err),
	                 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	waiter w = {.after = 1};
	assert_int_equal(pemba_clone(db, &w.db, &err), 0);
	pthread_t tid;
	assert_int_equal(pthread_create(&tid, NULL, wait_for_revision, &w), 0);
	struct timespec pause = {0, 100 * 1000 * 1000};
	nanosleep(&pause, NULL);
	pemba_update u = {.op = PEMBA_OP_TOUCH,
	                  .rel = {.resource_type = "document",
	                          .resource_id = "1",
	                          .relation = "viewer",
	                          .subject_type = "user",
	                          .subject_id = "a"}};
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err), 0);
	pthread_join(tid, NULL);
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.seen, 2);
	assert_true(w.waited_ms >= 90 && w.waited_ms < 5000);
	pemba_close(w.db);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(concurrent_writers_on_a_file_datastore),
	    cmocka_unit_test(concurrent_writers_on_a_shared_memory_datastore),
	    cmocka_unit_test(named_memory_datastores_are_separate_by_name),
	    cmocka_unit_test(waiter_wakes_when_another_handle_commits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
