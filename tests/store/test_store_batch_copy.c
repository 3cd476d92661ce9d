/*
 * test_store_batch_copy.c -- the batch writes with batches large enough
 * for PostgreSQL's COPY path (store_postgres.c, COPY_MIN_ROWS): every case
 * of test_store_batch.c again with 2048-row batches (results identical to
 * the single-row calls: TOUCH over stored rows, repeats inside a batch,
 * CREATE conflicts in the middle naming the right row), plus what only the
 * COPY encoding can break: ids and caveat contexts with tabs, newlines,
 * backslashes, quotes, `\N` and non-ASCII come back byte for byte; and an
 * aborted load leaves no row and the indexes as they were.  Runs on both
 * engines (on SQLite the same results through its own batch path).
 */
#define NROWS 2048
#define STORE_BATCH_NO_MAIN
#include "test_store_batch.c"

/* Ids COPY's text format must escape (and `\N`, its NULL marker). */
static const char *const awkward_ids[] = {
    "tab\there",  "new\nline", "back\\slash", "\\N",           "quote\"'s",
    "cr\rlf\r\n", "é€😀",       "end\\",       "\\t not a tab", "sp ace",
};
#define NAWKWARD (sizeof(awkward_ids) / sizeof(awkward_ids[0]))

/* Caveat contexts with JSON escapes (kept as text, byte for byte). */
static const char *const awkward_contexts[] = {
    "{\"s\":\"a\\tb\\nc\\\\d\\\"e\\u00e9\"}",
    "{\"raw\":\"tab\tnl\ncr\r\"}",
    "{\"path\":\"C:\\\\dir\\\\N\",\"q\":\"\\u0000x\"}",
    "{\"uni\":\"ü€😀\",\"n\":[1,2.5,null,true]}",
};
#define NCONTEXTS (sizeof(awkward_contexts) / sizeof(awkward_contexts[0]))

typedef struct awkward_rows {
	char rid[NROWS][48], sid[NROWS][48];
	store_rel flat[NROWS];
} awkward_rows;

/* Row i: document:<awkward id>-i#viewer@user:<awkward id>-i, every fourth
 * with a caveat and one of the contexts, every fifth with an
 * expiration (far in the future). */
static awkward_rows *awkward_make(void)
{
	awkward_rows *r = calloc(1, sizeof(*r));
	for (size_t i = 0; i < NROWS; i++) {
		snprintf(r->rid[i], sizeof(r->rid[i]), "%s-%zu",
		         awkward_ids[i % NAWKWARD], i);
		snprintf(r->sid[i], sizeof(r->sid[i]), "%s%zu",
		         awkward_ids[(i / NAWKWARD) % NAWKWARD], i);
		store_rel *f = &r->flat[i];
		f->resource_type = "document";
		f->resource_id = r->rid[i];
		f->relation = "viewer";
		f->subject_type = "user";
		f->subject_id = r->sid[i];
		f->subject_relation = i % 7 == 0 ? "member" : "";
		f->caveat_name = i % 4 == 0 ? "cav" : "";
		f->caveat_context =
		    i % 4 == 0 ? awkward_contexts[i % NCONTEXTS] : "";
		f->expiration_ms = i % 5 == 0 ? 4102444800000 + (int64_t)i : 0;
	}
	return r;
}

static int compare_rel(const void *a, const void *b)
{
	const store_rel *x = a, *y = b;
	int c = strcmp(x->resource_id, y->resource_id);
	return c ? c : strcmp(x->subject_id, y->subject_id);
}

/* Every row of r is stored exactly once, every field byte for byte. */
static void expect_stored(store *s, pemba_revision at, const awkward_rows *r)
{
	pemba_error err = {0};
	store_iter *it;
	const store_rel *row;
	store_rel *got = calloc(NROWS + 1, sizeof(*got));
	size_t n = 0;
	assert_int_equal(store_scan(s, at, NULL, 0, &it, &err), 0);
	while (store_iter_next(it, &row, &err) == 1) {
		assert_true(n < NROWS);
		got[n] = *row;
		got[n].resource_id = strdup(row->resource_id);
		got[n].subject_id = strdup(row->subject_id);
		got[n].subject_relation = strdup(row->subject_relation);
		got[n].caveat_name = strdup(row->caveat_name);
		got[n].caveat_context = strdup(row->caveat_context);
		n++;
	}
	store_iter_close(it);
	assert_int_equal(n, NROWS);
	store_rel *want = malloc(NROWS * sizeof(*want));
	memcpy(want, r->flat, NROWS * sizeof(*want));
	qsort(want, NROWS, sizeof(*want), compare_rel);
	qsort(got, NROWS, sizeof(*got), compare_rel);
	for (size_t i = 0; i < NROWS; i++) {
		const char *wsr = want[i].subject_relation;
		const char *gsr = got[i].subject_relation;
		if (strcmp(gsr, "...") == 0)
			gsr = "";
		assert_string_equal(got[i].resource_id, want[i].resource_id);
		assert_string_equal(got[i].subject_id, want[i].subject_id);
		assert_string_equal(gsr, wsr);
		assert_string_equal(got[i].caveat_name, want[i].caveat_name);
		assert_string_equal(got[i].caveat_context,
		                    want[i].caveat_context);
		assert_int_equal(got[i].expiration_ms, want[i].expiration_ms);
		free((char *)got[i].resource_id);
		free((char *)got[i].subject_id);
		free((char *)got[i].subject_relation);
		free((char *)got[i].caveat_name);
		free((char *)got[i].caveat_context);
	}
	free(got);
	free(want);
}

/* CREATE then TOUCH of the same awkward rows: stored exactly; the TOUCH
 * (every row identical) changes nothing. */
static void copy_batch_round_trips_awkward_ids_and_contexts(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	awkward_rows *r = awkward_make();
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev, rev2;
	size_t done = 0;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	assert_int_equal(done, NROWS);
	assert_int_equal(store_txn_commit(t, &err), 0);
	expect_stored(s, rev, r);

	assert_int_equal(store_txn_begin(s, &t, &rev2, &err), 0);
	assert_int_equal(store_txn_touch_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	assert_int_equal(done, NROWS);
	assert_int_equal(store_txn_commit(t, &err), 0);
	expect_stored(s, rev2, r);
	/* Identical rows were skipped: every live version is rev's. */
	store_iter *it;
	const store_rel *row;
	assert_int_equal(store_scan(s, rev2, NULL, 0, &it, &err), 0);
	while (store_iter_next(it, &row, &err) == 1)
		assert_int_equal(row->created_rev, rev);
	store_iter_close(it);
	free(r);
	store_close(s);
	(void)state;
}

/* Indexes of `relationships` (PostgreSQL: pg_indexes; SQLite: 0). */
static long index_count(const char *uri)
{
	if (!pg_fixture_enabled())
		return 0;
	return pg_fixture_exec(uri, "SELECT count(*) FROM pg_indexes WHERE "
	                            "tablename = 'relationships'");
}

/* An aborted load (deferred indexes asked for, a CREATE conflict at the
 * end) leaves no row and every index; a committed one after it works. */
static void copy_batch_abort_leaves_nothing_and_the_indexes(void **state)
{
	const char *uri = fixture_uri("sqlite::memory:copyabort");
	store *s = fixture_open("sqlite::memory:copyabort");
	long before = index_count(uri);
	if (pg_fixture_enabled())
		assert_true(before >= 3);
	awkward_rows *r = awkward_make();
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	size_t done = 0;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_defer_indexes(t, &err), 0);
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	r->flat[NROWS - 1] = r->flat[NROWS / 2];
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 PEMBA_EEXISTS);
	assert_int_equal(done, 0);
	store_txn_abort(t);
	assert_int_equal(index_count(uri), before);
	/* No revision committed, no row (PostgreSQL: not even a dead one). */
	pemba_revision head = 0;
	assert_int_equal(store_head_revision(s, &head, &err), 0);
	assert_int_equal(head, 0);
	if (pg_fixture_enabled())
		assert_int_equal(
		    pg_fixture_exec(uri, "SELECT count(*) FROM relationships"),
		    0);
	free(r);

	r = awkward_make();
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_defer_indexes(t, &err), 0);
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_int_equal(index_count(uri), before);
	expect_stored(s, rev, r);
	free(r);
	store_close(s);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(touch_batch_matches_single_touches),
	    cmocka_unit_test(touch_batch_repeated_key_keeps_the_last_caveat),
	    cmocka_unit_test(create_batch_conflict_with_stored_row_names_it),
	    cmocka_unit_test(create_batch_duplicate_inside_the_batch_names_it),
	    cmocka_unit_test(generic_fallback_loops_with_the_same_results),
	    cmocka_unit_test(deferred_indexes_give_the_same_data_and_indexes),
	    cmocka_unit_test(copy_batch_round_trips_awkward_ids_and_contexts),
	    cmocka_unit_test(copy_batch_abort_leaves_nothing_and_the_indexes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
