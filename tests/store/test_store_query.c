/*
 * test_store_query.c -- filters, order, pagination cursors, reverse
 * (by subject) queries and several iterators open at once.
 */
#include "store_fixture.h"

/* 3 documents x 2 relations x 20 users, plus group usersets. */
static store *populated_store(void)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	for (int d = 0; d < 3; d++)
		for (int u = 0; u < 20; u++)
			for (int r = 0; r < 2; r++) {
				char text[128];
				fixture_rel fr;
				snprintf(text, sizeof(text),
				         "document:d%d#%s@user:u%02d", d,
				         r ? "editor" : "viewer", u);
				fixture_parse(&fr, text);
				assert_int_equal(
				    store_txn_create(t, &fr.rel, &err), 0);
			}
	const char *extra[] = {
	    "document:d0#viewer@group:eng#member",
	    "document:d1#viewer@group:eng#member",
	    "document:d1#viewer@group:eng",
	    "group:eng#member@user:u01",
	    "folder:f1#viewer@user:u01",
	};
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		fixture_rel fr;
		fixture_parse(&fr, extra[i]);
		assert_int_equal(store_txn_create(t, &fr.rel, &err), 0);
	}
	assert_int_equal(store_txn_commit(t, &err), 0);
	return s;
}

static size_t count_rows(store *s, const store_filter *f)
{
	store_iter *it;
	const store_rel *row;
	size_t n = 0;
	assert_int_equal(store_query(s, 0, f, NULL, 0, &it, NULL), 0);
	while (store_iter_next(it, &row, NULL) == 1)
		n++;
	store_iter_close(it);
	return n;
}

/*
 * Pages through f with `page` rows at a time, passing the last row of
 * each page as the cursor; checks every row comes exactly once, in the
 * same order as an unpaginated read.
 */
static void check_pagination(store *s, const store_filter *f, size_t page)
{
	char *all = fixture_query(s, 0, f, NULL, 0);
	size_t cap = strlen(all) + 2, len = 0;
	char *paged = calloc(1, cap);
	fixture_rel last;
	bool have_last = false;
	for (;;) {
		store_iter *it;
		const store_rel *row;
		size_t n = 0;
		assert_int_equal(store_query(s, 0, f,
		                             have_last ? &last.rel : NULL, page,
		                             &it, NULL),
		                 0);
		while (store_iter_next(it, &row, NULL) == 1) {
			char line[600];
			fixture_format(line, sizeof(line), row);
			assert_true(len + strlen(line) + 2 <= cap);
			len += (size_t)sprintf(paged + len, "%s%s",
			                       len ? ";" : "", line);
			fixture_parse(&last, line);
			have_last = true;
			n++;
		}
		store_iter_close(it);
		assert_true(n <= page);
		if (n < page)
			break;
	}
	assert_string_equal(paged, all);
	free(paged);
	free(all);
}

static void pagination_with_cursor_returns_every_row_once(void **state)
{
	store *s = populated_store();
	store_filter by_type = {.resource_type = "document"};
	store_filter by_object = {.resource_type = "document",
	                          .resource_id = "d1"};
	store_filter by_relation = {.resource_type = "document",
	                            .relation = "viewer"};
	store_filter by_subject = {.subject_type = "user", .subject_id = "u01"};
	store_filter by_subject_type = {.subject_type = "user"};
	store_filter type_and_subject = {.resource_type = "document",
	                                 .subject_type = "user",
	                                 .subject_id = "u03"};
	assert_int_equal(count_rows(s, &by_type), 123);
	check_pagination(s, &by_type, 7);
	check_pagination(s, &by_type, 1);
	check_pagination(s, &by_type, 1000);
	check_pagination(s, &by_object, 5);
	check_pagination(s, &by_relation, 9);
	check_pagination(s, &by_subject, 2);
	check_pagination(s, &by_subject_type, 13);
	check_pagination(s, &type_and_subject, 1);
	store_close(s);
}

static void cursor_on_fully_fixed_filter_returns_nothing_after(void **state)
{
	store *s = populated_store();
	store_filter exact = {.resource_type = "document",
	                      .resource_id = "d0",
	                      .relation = "viewer",
	                      .subject_type = "user",
	                      .subject_id = "u05",
	                      .subject_relation = ""};
	assert_query(s, 0, &exact, "document:d0#viewer@user:u05");
	fixture_rel cursor;
	fixture_parse(&cursor, "document:d0#viewer@user:u05");
	char *got = fixture_query(s, 0, &exact, &cursor.rel, 0);
	assert_string_equal(got, "");
	free(got);
	store_close(s);
}

static void reverse_query_finds_resources_of_a_subject(void **state)
{
	store *s = populated_store();
	store_filter f = {.resource_type = "document",
	                  .relation = "viewer",
	                  .subject_type = "user",
	                  .subject_id = "u01",
	                  .subject_relation = ""};
	assert_query(s, 0, &f,
	             "document:d0#viewer@user:u01;document:d1#viewer@user:u01;"
	             "document:d2#viewer@user:u01");

	/* Only a subject: every resource type, in reverse-index order. */
	store_filter subject_only = {.subject_type = "user",
	                             .subject_id = "u01"};
	assert_int_equal(count_rows(s, &subject_only), 8);

	/* A userset subject. */
	store_filter userset = {.subject_type = "group",
	                        .subject_id = "eng",
	                        .subject_relation = "member"};
	assert_query(s, 0, &userset,
	             "document:d0#viewer@group:eng#member;"
	             "document:d1#viewer@group:eng#member");
	store_close(s);
}

static void subject_relation_empty_matches_only_direct_subjects(void **state)
{
	store *s = populated_store();
	store_filter any = {.resource_type = "document",
	                    .resource_id = "d1",
	                    .relation = "viewer",
	                    .subject_type = "group"};
	store_filter direct = any, ellipsis = any, member = any;
	direct.subject_relation = "";
	ellipsis.subject_relation = "...";
	member.subject_relation = "member";
	assert_query(s, 0, &any,
	             "document:d1#viewer@group:eng;"
	             "document:d1#viewer@group:eng#member");
	assert_query(s, 0, &direct, "document:d1#viewer@group:eng");
	assert_query(s, 0, &ellipsis, "document:d1#viewer@group:eng");
	assert_query(s, 0, &member, "document:d1#viewer@group:eng#member");
	store_close(s);
}

static void exact_subject_probe_and_subjects_of_object(void **state)
{
	store *s = populated_store();
	/* The check engine's two hot queries. */
	store_filter exact = {.resource_type = "document",
	                      .resource_id = "d2",
	                      .relation = "editor",
	                      .subject_type = "user",
	                      .subject_id = "u19",
	                      .subject_relation = ""};
	assert_query(s, 0, &exact, "document:d2#editor@user:u19");
	store_filter subjects = {.resource_type = "document",
	                         .resource_id = "d2",
	                         .relation = "editor"};
	assert_int_equal(count_rows(s, &subjects), 20);
	store_close(s);
}

static void limit_caps_the_rows_returned(void **state)
{
	store *s = populated_store();
	store_filter f = {.resource_type = "document"};
	store_iter *it;
	const store_rel *row;
	size_t n = 0;
	assert_int_equal(store_query(s, 0, &f, NULL, 10, &it, NULL), 0);
	while (store_iter_next(it, &row, NULL) == 1)
		n++;
	store_iter_close(it);
	assert_int_equal(n, 10);
	store_close(s);
}

static void many_iterators_may_be_open_at_once(void **state)
{
	store *s = populated_store();
	enum { DEPTH = 60 };
	store_iter *its[DEPTH];
	const store_rel *row;
	store_filter f = {.resource_type = "document",
	                  .resource_id = "d0",
	                  .relation = "viewer"};
	/* Same shape, opened one inside the other like a recursing check:
	 * each iterator advances independently. */
	for (int i = 0; i < DEPTH; i++) {
		assert_int_equal(store_query(s, 0, &f, NULL, 0, &its[i], NULL),
		                 0);
		for (int k = 0; k <= i % 20; k++)
			assert_int_equal(store_iter_next(its[i], &row, NULL),
			                 1);
	}
	for (int i = DEPTH - 1; i >= 0; i--) {
		/* Row i%20 + 1 comes next: the first 20 are users (ordered
		 * u00..u19), the 21st is the group userset. */
		int rc = store_iter_next(its[i], &row, NULL);
		if (pg_fixture_enabled()) {
			/* Names order as bytes: the group userset first. */
			char want[16];
			snprintf(want, sizeof(want), "u%02d", i % 20);
			assert_int_equal(rc, 1);
			assert_string_equal(row->subject_id, want);
		} else if (i % 20 == 19) {
			assert_int_equal(rc, 1);
			assert_string_equal(row->subject_type, "group");
		} else {
			char want[16];
			snprintf(want, sizeof(want), "u%02d", i % 20 + 1);
			assert_int_equal(rc, 1);
			assert_string_equal(row->subject_id, want);
		}
		store_iter_close(its[i]);
	}
	/* And nested queries of different shapes while iterating. */
	store_iter *outer;
	store_filter groups = {.subject_type = "group", .subject_id = "eng"};
	assert_int_equal(store_query(s, 0, &groups, NULL, 0, &outer, NULL), 0);
	int outer_rows = 0, inner_rows = 0;
	while (store_iter_next(outer, &row, NULL) == 1) {
		outer_rows++;
		store_filter members = {.resource_type = "group",
		                        .resource_id = "eng",
		                        .relation = "member"};
		store_iter *inner;
		const store_rel *irow;
		assert_int_equal(
		    store_query(s, 0, &members, NULL, 0, &inner, NULL), 0);
		while (store_iter_next(inner, &irow, NULL) == 1) {
			inner_rows++;
			assert_string_equal(irow->subject_id, "u01");
		}
		store_iter_close(inner);
		/* The outer row's strings are still intact. */
		assert_string_equal(row->subject_id, "eng");
	}
	store_iter_close(outer);
	assert_int_equal(outer_rows, 3);
	assert_int_equal(inner_rows, 3);
	store_close(s);
}

static void filter_without_any_type_is_refused(void **state)
{
	store *s = populated_store();
	store_filter f = {.resource_id = "d0", .subject_id = "u01"};
	store_iter *it;
	pemba_error err = {0};
	assert_int_equal(store_query(s, 0, &f, NULL, 0, &it, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "resource type"));
	assert_null(it);
	store_close(s);
}

static void unknown_names_match_nothing(void **state)
{
	store *s = populated_store();
	store_filter f1 = {.resource_type = "nosuch"};
	store_filter f2 = {.resource_type = "document", .relation = "nosuch"};
	store_filter f3 = {.subject_type = "user",
	                   .subject_id = "u01",
	                   .subject_relation = "nosuch"};
	assert_query(s, 0, &f1, "");
	assert_query(s, 0, &f2, "");
	assert_query(s, 0, &f3, "");

	/* A cursor naming an unknown type cannot be placed (SQLite compares
	 * interned numbers): refused.  PostgreSQL compares the names
	 * themselves: "nosuch" sorts after every document. */
	fixture_rel cursor;
	fixture_parse(&cursor, "nosuch:x#viewer@user:u01");
	store_filter docs = {.resource_type = "document"};
	store_iter *it;
	pemba_error err = {0};
	if (pg_fixture_enabled()) {
		char *got = fixture_query(s, 0, &docs, &cursor.rel, 0);
		assert_string_equal(got, "");
		free(got);
		store_close(s);
		return;
	}
	assert_int_equal(store_query(s, 0, &docs, &cursor.rel, 0, &it, &err),
	                 PEMBA_EINVAL);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(pagination_with_cursor_returns_every_row_once),
	    cmocka_unit_test(
	        cursor_on_fully_fixed_filter_returns_nothing_after),
	    cmocka_unit_test(reverse_query_finds_resources_of_a_subject),
	    cmocka_unit_test(
	        subject_relation_empty_matches_only_direct_subjects),
	    cmocka_unit_test(exact_subject_probe_and_subjects_of_object),
	    cmocka_unit_test(limit_caps_the_rows_returned),
	    cmocka_unit_test(many_iterators_may_be_open_at_once),
	    cmocka_unit_test(filter_without_any_type_is_refused),
	    cmocka_unit_test(unknown_names_match_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
