/*
 * test_store_query_cache.c -- the process-wide cache of query results at a
 * revision (src/store/README.md, "Query cache"): hits return what the
 * engine returns, revisions keep their own results, expiring rows are
 * never cached, the budget holds, handles share entries, and concurrent
 * readers are safe.
 */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "store_fixture.h"

static store *open_with_cache(const char *uri, int64_t bytes)
{
	store_options so = {.query_cache_bytes = bytes};
	store *s = NULL;
	pemba_error err = {0};
	if (store_open(fixture_uri(uri), &so, &s, &err))
		fail_msg("store_open(%s): %s", fixture_uri(uri), err.message);
	return s;
}

static store_query_cache_stats stats_of(store *s)
{
	store_query_cache_stats st;
	assert_true(store_query_cache_report(s, &st));
	return st;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Two documents, a group, a folder chain: what a check walks. */
static pemba_revision populate(store *s)
{
	return fixture_write(
	    s, 'c', "document:d1#viewer@user:u1", "document:d1#viewer@user:u2",
	    "document:d1#viewer@group:eng#member",
	    "document:d1#parent@folder:f1", "document:d2#viewer@user:u3",
	    "folder:f1#parent@folder:f0", "folder:f0#viewer@group:eng#member",
	    "group:eng#member@user:u1", "group:eng#member@user:u4", NULL);
}

/* The filters the tests run: forward, exact, reverse, empty. */
static const store_filter filters[] = {
    {.resource_type = "document", .resource_id = "d1", .relation = "viewer"},
    {.resource_type = "document",
     .resource_id = "d1",
     .relation = "viewer",
     .subject_type = "user",
     .subject_id = "u2",
     .subject_relation = ""},
    {.resource_type = "folder", .resource_id = "f1", .relation = "parent"},
    {.subject_type = "user", .subject_id = "u1"},
    {.resource_type = "group", .resource_id = "eng", .relation = "member"},
    {.resource_type = "document", .resource_id = "nope"},
    {.resource_type = "document"},
};
#define NFILTERS (sizeof(filters) / sizeof(filters[0]))

/* A hit returns exactly the rows the engine returns at that revision:
 * compared with a handle of the same datastore that has no cache. */
static void test_query_cache_hit_returns_engine_rows(void **state)
{
	(void)state;
	store *s = open_with_cache("sqlite::memory:qc_hit", 1 << 20);
	store *plain = open_with_cache("sqlite::memory:qc_hit", -1);
	store_query_cache_stats none;
	assert_false(store_query_cache_report(plain, &none));
	pemba_revision r = populate(s);
	for (size_t i = 0; i < NFILTERS; i++) {
		char *want = fixture_query(plain, r, &filters[i], NULL, 0);
		char *cold = fixture_query(s, r, &filters[i], NULL, 0);
		char *warm = fixture_query(s, r, &filters[i], NULL, 0);
		assert_string_equal(cold, want);
		assert_string_equal(warm, want);
		free(want);
		free(cold);
		free(warm);
	}
	/* limit and cursor are part of the key. */
	char *one = fixture_query(s, r, &filters[0], NULL, 1);
	char *one_again = fixture_query(s, r, &filters[0], NULL, 1);
	char *want_one = fixture_query(plain, r, &filters[0], NULL, 1);
	assert_string_equal(one, want_one);
	assert_string_equal(one_again, want_one);
	fixture_rel after;
	fixture_parse(&after, want_one);
	char *rest = fixture_query(s, r, &filters[0], &after.rel, 0);
	char *rest_again = fixture_query(s, r, &filters[0], &after.rel, 0);
	char *want_rest = fixture_query(plain, r, &filters[0], &after.rel, 0);
	assert_string_equal(rest, want_rest);
	assert_string_equal(rest_again, want_rest);
	free(one);
	free(one_again);
	free(want_one);
	free(rest);
	free(rest_again);
	free(want_rest);

	store_query_cache_stats st = stats_of(s);
	assert_int_equal(st.misses, NFILTERS + 2);
	assert_int_equal(st.hits, NFILTERS + 2);
	assert_int_equal(st.inserts, NFILTERS + 2);
	assert_int_equal(st.entries, NFILTERS + 2);
	assert_true(st.bytes > 0 && st.bytes <= st.budget);
	/* The head (revision 0) moves: never cached. */
	char *head = fixture_query(s, 0, &filters[0], NULL, 0);
	free(head);
	assert_int_equal(stats_of(s).entries, NFILTERS + 2);
	store_close(plain);
	store_close(s);
}

/* A write after a result was cached shows at the new revision only. */
static void test_query_cache_write_visible_only_at_new_revision(void **state)
{
	(void)state;
	store *s = open_with_cache("sqlite::memory:qc_write", 1 << 20);
	pemba_revision r1 = populate(s);
	const store_filter users = {.resource_type = "document",
	                            .resource_id = "d1",
	                            .relation = "viewer",
	                            .subject_type = "user"};
	const store_filter *f = &users;
	char *before = fixture_query(s, r1, f, NULL, 0);
	pemba_revision r2 =
	    fixture_write(s, 'c', "document:d1#viewer@user:u9", NULL);
	pemba_revision r3 =
	    fixture_write(s, 'd', "document:d1#viewer@user:u1", NULL);
	assert_query(s, r1, f, before);
	assert_string_equal(
	    before, "document:d1#viewer@user:u1;document:d1#viewer@user:u2");
	assert_query(s, r2, f,
	             "document:d1#viewer@user:u1;document:d1#viewer@user:u2;"
	             "document:d1#viewer@user:u9");
	assert_query(s, r3, f,
	             "document:d1#viewer@user:u2;document:d1#viewer@user:u9");
	/* Again, from the cache. */
	uint64_t hits = stats_of(s).hits;
	assert_query(s, r1, f, before);
	assert_query(s, r3, f,
	             "document:d1#viewer@user:u2;document:d1#viewer@user:u9");
	assert_int_equal(stats_of(s).hits, hits + 2);
	free(before);
	store_close(s);
}

/* A result holding a row with an expiration is not stored, so the row
 * disappears from the same query at the same revision once expired. */
static void test_query_cache_skips_expiring_rows(void **state)
{
	(void)state;
	store *s = open_with_cache("sqlite::memory:qc_expire", 1 << 20);
	pemba_error err = {0};
	store_txn *t;
	pemba_revision r;
	assert_int_equal(store_txn_begin(s, &t, &r, &err), 0);
	fixture_rel a, b;
	fixture_parse(&a, "document:e1#viewer@user:u1");
	fixture_parse(&b, "document:e1#viewer@user:u2");
	b.rel.expiration_ms = now_ms() + 1500;
	assert_int_equal(store_txn_create(t, &a.rel, &err), 0);
	assert_int_equal(store_txn_create(t, &b.rel, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);

	store_filter f = {.resource_type = "document",
	                  .resource_id = "e1",
	                  .relation = "viewer"};
	store_filter only_u1 = f;
	only_u1.subject_type = "user";
	only_u1.subject_id = "u1";
	only_u1.subject_relation = "";
	assert_query(s, r, &f,
	             "document:e1#viewer@user:u1;document:e1#viewer@user:u2");
	assert_query(s, r, &only_u1, "document:e1#viewer@user:u1");
	store_query_cache_stats st = stats_of(s);
	assert_int_equal(st.uncacheable, 1);
	assert_int_equal(st.inserts, 1); /* only_u1: no expiring row */
	while (now_ms() <= b.rel.expiration_ms + 50)
		usleep(50 * 1000);
	assert_query(s, r, &f, "document:e1#viewer@user:u1");
	assert_query(s, r, &only_u1, "document:e1#viewer@user:u1");
	st = stats_of(s);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.inserts, 2); /* f, now without the expired row */
	store_close(s);
}

/* Many distinct results through a small budget: entries are evicted and
 * the bytes held never pass the budget; evicted results still read. */
static void test_query_cache_eviction_keeps_budget(void **state)
{
	(void)state;
	const int64_t budget = 64 << 10;
	store *s = open_with_cache("sqlite::memory:qc_evict", budget);
	pemba_error err = {0};
	store_txn *t;
	pemba_revision r;
	assert_int_equal(store_txn_begin(s, &t, &r, &err), 0);
	for (int i = 0; i < 400; i++) {
		char text[128];
		fixture_rel fr;
		snprintf(text, sizeof(text), "document:doc%03d#viewer@user:u%d",
		         i, i % 7);
		fixture_parse(&fr, text);
		assert_int_equal(store_txn_create(t, &fr.rel, &err), 0);
	}
	assert_int_equal(store_txn_commit(t, &err), 0);
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 400; i++) {
			char id[16], want[128];
			snprintf(id, sizeof(id), "doc%03d", i);
			snprintf(want, sizeof(want),
			         "document:doc%03d#viewer@user:u%d", i, i % 7);
			store_filter f = {.resource_type = "document",
			                  .resource_id = id,
			                  .relation = "viewer"};
			assert_query(s, r, &f, want);
			store_query_cache_stats st = stats_of(s);
			assert_true(st.bytes <= (uint64_t)budget);
		}
	store_query_cache_stats st = stats_of(s);
	assert_true(st.evictions > 0);
	assert_true(st.entries < 800);
	assert_int_equal(st.budget, (uint64_t)budget);
	/* A result larger than one entry may hold is served, not stored. */
	store_filter all = {.resource_type = "document"};
	char *rows = fixture_query(s, r, &all, NULL, 0);
	assert_true(strlen(rows) > 400 * 20);
	free(rows);
	assert_true(stats_of(s).uncacheable >= 1);
	store_close(s);
}

/* Handles from store_reopen, and handles opened separately on the same
 * datastore, answer from one cache. */
static void test_query_cache_shared_by_handles(void **state)
{
	(void)state;
	store *a = open_with_cache("sqlite::memory:qc_share", 1 << 20);
	pemba_revision r = populate(a);
	store *b = NULL;
	pemba_error err = {0};
	assert_int_equal(store_reopen(a, &b, &err), 0);
	store *c = open_with_cache("sqlite::memory:qc_share", 1 << 20);

	char *first = fixture_query(a, r, &filters[0], NULL, 0);
	char *from_b = fixture_query(b, r, &filters[0], NULL, 0);
	char *from_c = fixture_query(c, r, &filters[0], NULL, 0);
	assert_string_equal(from_b, first);
	assert_string_equal(from_c, first);
	store_query_cache_stats sa = stats_of(a), sb = stats_of(b),
	                        sc = stats_of(c);
	assert_int_equal(sa.misses, 1);
	assert_int_equal(sa.hits, 2);
	assert_memory_equal(&sa, &sb, sizeof(sa));
	assert_memory_equal(&sa, &sc, sizeof(sa));
	/* The cache outlives the handle that made it. */
	store_close(a);
	char *again = fixture_query(b, r, &filters[0], NULL, 0);
	assert_string_equal(again, first);
	assert_int_equal(stats_of(c).hits, 3);
	free(first);
	free(from_b);
	free(from_c);
	free(again);
	store_close(b);
	store_close(c);
}

/* An iterator over a cached entry keeps its rows while the entry is
 * evicted, and across other handles' queries. */
static void test_query_cache_iterator_outlives_eviction(void **state)
{
	(void)state;
	store *s = open_with_cache("sqlite::memory:qc_pin", 64 << 10);
	pemba_revision r = populate(s);
	char *want = fixture_query(s, r, &filters[0], NULL, 0);
	assert_int_equal(stats_of(s).inserts, 1);
	store_iter *it;
	pemba_error err = {0};
	assert_int_equal(store_query(s, r, &filters[0], NULL, 0, &it, &err), 0);
	const store_rel *row;
	assert_int_equal(store_iter_next(it, &row, &err), 1);
	assert_int_equal(stats_of(s).hits, 1);
	/* Push everything else through the small cache. */
	for (int i = 0; i < 1000; i++) {
		char id[16];
		snprintf(id, sizeof(id), "x%d", i);
		store_filter f = {.resource_type = "document",
		                  .resource_id = id};
		assert_query(s, r, &f, "");
	}
	char got[4096] = "", line[600];
	do {
		fixture_format(line, sizeof(line), row);
		if (*got)
			strcat(got, ";");
		strcat(got, line);
	} while (store_iter_next(it, &row, &err) == 1);
	store_iter_close(it);
	assert_string_equal(got, want);
	assert_true(stats_of(s).evictions > 0);
	/* Evicted: read from the engine again. */
	assert_query(s, r, &filters[0], want);
	free(want);
	store_close(s);
}

/* A revision GC has passed is refused, not answered from the cache. */
static void test_query_cache_refuses_collected_revision(void **state)
{
	(void)state;
	store *s = open_with_cache("sqlite::memory:qc_gc", 1 << 20);
	pemba_revision r1 = populate(s);
	fixture_write(s, 'd', "document:d1#viewer@user:u1", NULL);
	char *rows = fixture_query(s, r1, &filters[0], NULL, 0);
	free(rows);
	pemba_error err = {0};
	uint64_t removed;
	/* Two days on: everything but the head is below the window. */
	assert_int_equal(
	    store_gc(s, now_ms() + 2 * 86400 * 1000LL, &removed, &err), 0);
	assert_int_equal(store_check_revision(s, r1, &err), PEMBA_EREVISION);
	store_iter *it = NULL;
	int rc = store_query(s, r1, &filters[0], NULL, 0, &it, &err);
	if (rc == PEMBA_OK) {
		const store_rel *row;
		rc = store_iter_next(it, &row, &err);
		store_iter_close(it);
	}
	assert_int_equal(rc, PEMBA_EREVISION);
	store_close(s);
}

/* ------------------------------------------------------- concurrency */

typedef struct reader_arg {
	store *s;
	int id;
	pemba_revision rev;
	char **want; /* per filter */
	int failures;
} reader_arg;

static void *reader_main(void *p)
{
	reader_arg *a = p;
	pemba_error err = {0};
	for (int round = 0; round < 150; round++) {
		for (size_t i = 0; i < NFILTERS; i++) {
			size_t k = (i + (size_t)round) % NFILTERS;
			store_iter *it;
			if (store_query(a->s, a->rev, &filters[k], NULL, 0, &it,
			                &err)) {
				a->failures++;
				continue;
			}
			char got[4096] = "", line[600];
			const store_rel *row;
			while (store_iter_next(it, &row, &err) == 1) {
				fixture_format(line, sizeof(line), row);
				if (*got)
					strcat(got, ";");
				strcat(got, line);
			}
			store_iter_close(it);
			if (strcmp(got, a->want[k]) != 0)
				a->failures++;
		}
		/* A result of its own: entries come and go meanwhile. */
		char id[32];
		snprintf(id, sizeof(id), "t%d-%d", a->id, round);
		store_filter mine = {.resource_type = "document",
		                     .resource_id = id};
		store_iter *it;
		const store_rel *row;
		if (store_query(a->s, a->rev, &mine, NULL, 0, &it, &err) ||
		    store_iter_next(it, &row, &err) != 0)
			a->failures++;
		store_iter_close(it);
	}
	return NULL;
}

/* Four threads, each on its own handle, read the same results through a
 * cache small enough to evict while they read. */
static void test_query_cache_concurrent_readers(void **state)
{
	(void)state;
	store *s = open_with_cache("sqlite::memory:qc_threads", 64 << 10);
	pemba_revision r = populate(s);
	char *want[NFILTERS];
	store *plain = open_with_cache("sqlite::memory:qc_threads", -1);
	for (size_t i = 0; i < NFILTERS; i++)
		want[i] = fixture_query(plain, r, &filters[i], NULL, 0);
	store_close(plain);
	enum { NTHREADS = 4 };
	pthread_t th[NTHREADS];
	reader_arg args[NTHREADS];
	pemba_error err = {0};
	for (int i = 0; i < NTHREADS; i++) {
		args[i] = (reader_arg){.id = i, .rev = r, .want = want};
		assert_int_equal(store_reopen(s, &args[i].s, &err), 0);
		assert_int_equal(
		    pthread_create(&th[i], NULL, reader_main, &args[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].failures, 0);
		store_close(args[i].s);
	}
	store_query_cache_stats st = stats_of(s);
	assert_true(st.hits > 0);
	assert_true(st.evictions > 0);
	assert_true(st.bytes <= st.budget);
	for (size_t i = 0; i < NFILTERS; i++)
		free(want[i]);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_query_cache_hit_returns_engine_rows),
	    cmocka_unit_test(
	        test_query_cache_write_visible_only_at_new_revision),
	    cmocka_unit_test(test_query_cache_skips_expiring_rows),
	    cmocka_unit_test(test_query_cache_eviction_keeps_budget),
	    cmocka_unit_test(test_query_cache_shared_by_handles),
	    cmocka_unit_test(test_query_cache_iterator_outlives_eviction),
	    cmocka_unit_test(test_query_cache_refuses_collected_revision),
	    cmocka_unit_test(test_query_cache_concurrent_readers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
