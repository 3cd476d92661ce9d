/*
 * test_store_batch.c -- store_txn_create_batch / store_txn_touch_batch
 * behave exactly like the single-row calls in order: conflicts inside a
 * batch and with stored rows, across the engine's chunk boundaries, and
 * through the generic fallback loop; and a bulk load into an empty
 * datastore that builds the secondary indexes at commit
 * (store_txn_defer_indexes) ends with the same data and the same indexes.
 */
#include <sqlite3.h>

#include "store_fixture.h"

/* More rows than two of the engine's statements hold, with a tail
 * (test_store_batch_copy.c includes this file with more). */
#ifndef NROWS
#define NROWS 150
#endif

typedef struct rows {
	char text[NROWS][64];
	fixture_rel rel[NROWS];
	store_rel flat[NROWS];
	char context[NROWS][64];
} rows;

/* Row i is document:<i % distinct>#viewer@user:u<i % distinct>, so
 * distinct < NROWS repeats keys inside the batch. */
static rows *rows_make(size_t distinct)
{
	rows *r = calloc(1, sizeof(*r));
	for (size_t i = 0; i < NROWS; i++) {
		snprintf(r->text[i], sizeof(r->text[i]),
		         "document:d%zu#viewer@user:u%zu", i % distinct,
		         i % distinct);
		fixture_parse(&r->rel[i], r->text[i]);
		r->flat[i] = r->rel[i].rel;
	}
	return r;
}

/* Every version of the datastore with caveat, expiration and created_rev,
 * as of each revision up to the head, plus the change feed (caller
 * frees). */
static int dump_change(void *ctx, const store_change *c)
{
	FILE *f = ctx;
	if (c->kind == STORE_CHANGE_REVISION) {
		fprintf(f, "rev %llu;", (unsigned long long)c->rev);
		return 0;
	}
	char line[600];
	fixture_format(line, sizeof(line), c->rel);
	fprintf(f, "%s %s[%s|%s|%lld];",
	        c->kind == STORE_CHANGE_TOUCH ? "T" : "D", line,
	        c->rel->caveat_name, c->rel->caveat_context,
	        (long long)c->rel->expiration_ms);
	return 0;
}

static char *dump(store *s)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	pemba_error err = {0};
	pemba_revision head;
	assert_int_equal(store_head_revision(s, &head, &err), 0);
	for (pemba_revision at = 1; at <= head; at++) {
		store_iter *it;
		const store_rel *row;
		assert_int_equal(store_scan(s, at, NULL, 0, &it, &err), 0);
		fprintf(f, "@%llu:", (unsigned long long)at);
		while (store_iter_next(it, &row, &err) == 1) {
			char line[600];
			fixture_format(line, sizeof(line), row);
			fprintf(f, "%s[%s|%s|%lld|%llu];", line,
			        row->caveat_name, row->caveat_context,
			        (long long)row->expiration_ms,
			        (unsigned long long)row->created_rev);
		}
		store_iter_close(it);
	}
	assert_int_equal(store_changes(s, 0, head, dump_change, f, &err), 0);
	fclose(f);
	return out;
}

/* Gives row i a caveat context unless i % 3 == 0, so repeated keys in a
 * batch differ and some stored rows are replaced. */
static void vary_caveats(rows *r, const char *tag)
{
	for (size_t i = 0; i < NROWS; i++) {
		if (i % 3 == 0)
			continue;
		snprintf(r->context[i], sizeof(r->context[i]), "{\"%s\":%zu}",
		         tag, i);
		r->flat[i].caveat_name = "cav";
		r->flat[i].caveat_context = r->context[i];
	}
}

/* Runs the same three transactions through the batch call and one row at
 * a time; the datastores must end up identical, version for version. */
static void touch_batch_matches_single_touches(void **state)
{
	store *a = fixture_open("sqlite::memory:");
	store *b = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;

	/* 1: stored rows; 2: same keys repeated with other caveats (some
	 * identical, some replaced, repeated keys inside the batch); 3: a
	 * mix of new keys and stored ones. */
	rows *r1 = rows_make(NROWS);
	rows *r2 = rows_make(40);
	vary_caveats(r2, "x");
	rows *r3 = rows_make(NROWS);
	vary_caveats(r3, "y");
	rows *sets[3] = {r1, r2, r3};
	for (int k = 0; k < 3; k++) {
		size_t done = 0;
		assert_int_equal(store_txn_begin(a, &t, &rev, &err), 0);
		assert_int_equal(
		    store_txn_touch_batch(t, sets[k]->flat, NROWS, &done, &err),
		    0);
		assert_int_equal(done, NROWS);
		assert_int_equal(store_txn_commit(t, &err), 0);

		assert_int_equal(store_txn_begin(b, &t, &rev, &err), 0);
		for (size_t i = 0; i < NROWS; i++)
			assert_int_equal(
			    store_txn_touch(t, &sets[k]->flat[i], &err), 0);
		assert_int_equal(store_txn_commit(t, &err), 0);
	}
	char *da = dump(a), *db = dump(b);
	assert_string_equal(da, db);
	/* The data really has replaced versions and in-batch repeats. */
	assert_non_null(strstr(da, "{\"x\":"));
	assert_non_null(strstr(da, "{\"y\":"));
	free(da);
	free(db);
	free(r1);
	free(r2);
	free(r3);
	store_close(a);
	store_close(b);
}

/* A repeated key inside one batch keeps one live version, with the last
 * caveat, as two touches in one transaction do. */
static void touch_batch_repeated_key_keeps_the_last_caveat(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	fixture_rel fr[3];
	store_rel flat[3];
	const char *ctx[3] = {"{\"n\":1}", "{\"n\":2}", "{\"n\":3}"};
	for (int i = 0; i < 3; i++) {
		fixture_parse(&fr[i], "document:1#viewer@user:anne");
		flat[i] = fr[i].rel;
		flat[i].caveat_name = "cav";
		flat[i].caveat_context = ctx[i];
	}
	size_t done = 0;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_touch_batch(t, flat, 3, &done, &err), 0);
	assert_int_equal(done, 3);
	assert_int_equal(store_txn_commit(t, &err), 0);
	char *d = dump(s);
	assert_string_equal(
	    d, "@1:document:1#viewer@user:anne[cav|{\"n\":3}|0|1];"
	       "T document:1#viewer@user:anne[cav|{\"n\":3}|0];rev 1;");
	free(d);
	store_close(s);
}

/* Checks a CREATE batch that must fail at row `at` with `text`; the rows
 * before it are in the transaction, the rest are not. */
static void expect_create_conflict(store *s, store_txn *t, rows *r, size_t at,
                                   size_t written_before)
{
	pemba_error err = {0};
	size_t done = 12345;
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 PEMBA_EEXISTS);
	assert_int_equal(done, at);
	char want[128];
	snprintf(want, sizeof(want), "relationship %s already exists",
	         r->text[at]);
	assert_string_equal(err.message, want);
	store_filter f = {.resource_type = "document"};
	store_iter *it;
	const store_rel *row;
	size_t n = 0;
	assert_int_equal(store_txn_query(t, &f, 0, &it, &err), 0);
	while (store_iter_next(it, &row, &err) == 1)
		n++;
	store_iter_close(it);
	assert_int_equal(n, written_before + at);
	(void)s;
}

/* A stored row in the middle of the batch (past the first chunk). */
static void create_batch_conflict_with_stored_row_names_it(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:d100#viewer@user:u100", NULL);
	rows *r = rows_make(NROWS);
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	expect_create_conflict(s, t, r, 100, 1);
	store_txn_abort(t);
	free(r);
	store_close(s);
}

/* The same key twice in one batch: in one chunk, and across chunks. */
static void create_batch_duplicate_inside_the_batch_names_it(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;

	rows *r = rows_make(NROWS);
	r->flat[7] = r->flat[3]; /* same chunk */
	snprintf(r->text[7], sizeof(r->text[7]), "%s", r->text[3]);
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	expect_create_conflict(s, t, r, 7, 0);
	store_txn_abort(t);
	free(r);

	r = rows_make(NROWS);
	r->flat[140] = r->flat[5]; /* last chunk repeats the first */
	snprintf(r->text[140], sizeof(r->text[140]), "%s", r->text[5]);
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	expect_create_conflict(s, t, r, 140, 0);
	store_txn_abort(t);

	/* Without the conflict the whole batch goes in. */
	snprintf(r->text[140], sizeof(r->text[140]),
	         "document:d140#viewer@user:u140");
	fixture_parse(&r->rel[140], r->text[140]);
	r->flat[140] = r->rel[140].rel;
	size_t done = 0;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	assert_int_equal(done, NROWS);
	assert_int_equal(store_txn_commit(t, &err), 0);
	store_filter f = {.resource_type = "document", .resource_id = "d140"};
	assert_query(s, rev, &f, "document:d140#viewer@user:u140");
	free(r);
	store_close(s);
}

/* The engine's operations (every handle starts with them). */
static const store_ops *t_ops_of(store *s)
{
	return s->ops;
}

/* An engine without batch functions gets the generic loop, with the same
 * results. */
static void generic_fallback_loops_with_the_same_results(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:d100#viewer@user:u100", NULL);
	rows *r = rows_make(NROWS);
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	store_ops plain = *t_ops_of(s);
	plain.txn_create_batch = NULL;
	plain.txn_touch_batch = NULL;

	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	const store_ops *saved = t->ops;
	t->ops = &plain;
	expect_create_conflict(s, t, r, 100, 1);
	size_t done = 0;
	assert_int_equal(store_txn_touch_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	assert_int_equal(done, NROWS);
	t->ops = saved;
	assert_int_equal(store_txn_commit(t, &err), 0);
	store_filter f = {.resource_type = "document"};
	char *got = fixture_query(s, rev, &f, NULL, 0);
	size_t n = 1;
	for (const char *p = got; *p; p++)
		n += *p == ';';
	assert_int_equal(n, NROWS);
	free(got);
	free(r);
	store_close(s);
}

/* The CREATE INDEX statements of `relationships` in the file, in name
 * order, read with a connection of its own (caller frees). */
static char *index_sql(const char *path)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
	                 SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(
	    sqlite3_prepare_v2(db,
	                       "SELECT group_concat(sql, ';') FROM (SELECT sql "
	                       "FROM sqlite_master WHERE type = 'index' AND "
	                       "tbl_name = 'relationships' AND sql IS NOT NULL "
	                       "ORDER BY name)",
	                       -1, &st, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	const char *t = (const char *)sqlite3_column_text(st, 0);
	char *out = strdup(t ? t : "");
	sqlite3_finalize(st);
	sqlite3_close(db);
	return out;
}

static void deferred_indexes_give_the_same_data_and_indexes(void **state)
{
	FIXTURE_SQLITE_ONLY("SQLite's index list (the engine's deferral)");
	char *dir = fixture_tmpdir();
	char pa[512], pb[512], ua[600], ub[600];
	snprintf(pa, sizeof(pa), "%s/a.db", dir);
	snprintf(pb, sizeof(pb), "%s/b.db", dir);
	snprintf(ua, sizeof(ua), "sqlite://%s", pa);
	snprintf(ub, sizeof(ub), "sqlite://%s", pb);
	store *a = fixture_open(ua);
	store *b = fixture_open(ub);
	char *before = index_sql(pa);
	assert_non_null(strstr(before, "CREATE INDEX"));
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	rows *r = rows_make(NROWS);
	vary_caveats(r, "z");

	/* An aborted bulk load leaves the indexes as they were. */
	size_t done = 0;
	assert_int_equal(store_txn_begin(a, &t, &rev, &err), 0);
	assert_int_equal(store_txn_defer_indexes(t, &err), 0);
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	store_txn_abort(t);
	char *after_abort = index_sql(pa);
	assert_string_equal(before, after_abort);

	/* A committed one: same data as without deferring, same indexes,
	 * and queries by subject (the by-subject index) answer. */
	assert_int_equal(store_txn_begin(a, &t, &rev, &err), 0);
	assert_int_equal(store_txn_defer_indexes(t, &err), 0);
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_int_equal(store_txn_begin(b, &t, &rev, &err), 0);
	assert_int_equal(store_txn_create_batch(t, r->flat, NROWS, &done, &err),
	                 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	char *after = index_sql(pa);
	assert_string_equal(before, after);
	char *da = dump(a), *db = dump(b);
	assert_string_equal(da, db);
	pemba_revision head = 0;
	assert_int_equal(store_head_revision(a, &head, &err), 0);
	store_filter by_subject = {.subject_type = "user", .subject_id = "u7"};
	char *qa = fixture_query(a, head, &by_subject, NULL, 0);
	char *qb = fixture_query(b, head, &by_subject, NULL, 0);
	assert_string_equal(qa, qb);
	assert_non_null(strstr(qa, "document:d7#viewer@user:u7"));

	/* Not empty any more: deferring is a no-op, writes go on. */
	assert_int_equal(store_txn_begin(a, &t, &rev, &err), 0);
	assert_int_equal(store_txn_defer_indexes(t, &err), 0);
	assert_int_equal(store_txn_touch_batch(t, r->flat, 10, &done, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	char *later = index_sql(pa);
	assert_string_equal(before, later);

	free(before);
	free(after_abort);
	free(after);
	free(later);
	free(da);
	free(db);
	free(qa);
	free(qb);
	free(r);
	store_close(a);
	store_close(b);
	fixture_rmdir(dir);
	(void)state;
}

#ifndef STORE_BATCH_NO_MAIN
int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(touch_batch_matches_single_touches),
	    cmocka_unit_test(touch_batch_repeated_key_keeps_the_last_caveat),
	    cmocka_unit_test(create_batch_conflict_with_stored_row_names_it),
	    cmocka_unit_test(create_batch_duplicate_inside_the_batch_names_it),
	    cmocka_unit_test(generic_fallback_loops_with_the_same_results),
	    cmocka_unit_test(deferred_indexes_give_the_same_data_and_indexes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
