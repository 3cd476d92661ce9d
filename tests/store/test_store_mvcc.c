/*
 * test_store_mvcc.c -- revisions and versions: what a read at revision R
 * sees, and how CREATE, TOUCH and DELETE create and end versions.
 */
#include "store_fixture.h"

static const store_filter doc1 = {.resource_type = "document",
                                  .resource_id = "1"};

static void read_at_revision_is_unchanged_by_later_writes(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_revision r1 =
	    fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	pemba_revision r2 =
	    fixture_write(s, 'c', "document:1#viewer@user:bob", NULL);
	pemba_revision r3 =
	    fixture_write(s, 'd', "document:1#viewer@user:anne", NULL);
	assert_int_equal(r1, 1);
	assert_int_equal(r2, 2);
	assert_int_equal(r3, 3);

	assert_query(s, r1, &doc1, "document:1#viewer@user:anne");
	assert_query(s, r2, &doc1,
	             "document:1#viewer@user:anne;document:1#viewer@user:bob");
	assert_query(s, r3, &doc1, "document:1#viewer@user:bob");

	/* More writes later do not change what r1 and r2 show. */
	fixture_write(s, 'c', "document:1#viewer@user:carl", NULL);
	fixture_write(s, 'd', "document:1#viewer@user:bob", NULL);
	assert_query(s, r1, &doc1, "document:1#viewer@user:anne");
	assert_query(s, r2, &doc1,
	             "document:1#viewer@user:anne;document:1#viewer@user:bob");
	assert_query(s, PEMBA_REVISION_HEAD, &doc1,
	             "document:1#viewer@user:carl");

	pemba_revision head;
	assert_int_equal(store_head_revision(s, &head, NULL), 0);
	assert_int_equal(head, 5);
	store_close(s);
}

static void deleted_then_recreated_keeps_both_versions(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL); /* 1 */
	fixture_write(s, 'd', "document:1#viewer@user:anne", NULL); /* 2 */
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL); /* 3 */
	assert_query(s, 1, &doc1, "document:1#viewer@user:anne");
	assert_query(s, 2, &doc1, "");
	assert_query(s, 3, &doc1, "document:1#viewer@user:anne");

	/* The row read at 3 is the new version. */
	store_iter *it;
	const store_rel *row;
	assert_int_equal(store_query(s, 3, &doc1, NULL, 0, &it, NULL), 0);
	assert_int_equal(store_iter_next(it, &row, NULL), 1);
	assert_int_equal(row->created_rev, 3);
	store_iter_close(it);
	assert_int_equal(store_query(s, 1, &doc1, NULL, 0, &it, NULL), 0);
	assert_int_equal(store_iter_next(it, &row, NULL), 1);
	assert_int_equal(row->created_rev, 1);
	store_iter_close(it);
	store_close(s);
}

static void create_of_live_duplicate_fails_with_eexists(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);

	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	fixture_rel a, b;
	fixture_parse(&a, "document:1#viewer@user:zoe");
	fixture_parse(&b, "document:1#viewer@user:anne");
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_create(t, &a.rel, &err), 0);
	assert_int_equal(store_txn_create(t, &b.rel, &err), PEMBA_EEXISTS);
	assert_non_null(strstr(err.message, "document:1#viewer@user:anne"));
	store_txn_abort(t);

	/* Nothing of the aborted transaction is left, not even its
	 * revision. */
	pemba_revision head;
	assert_int_equal(store_head_revision(s, &head, NULL), 0);
	assert_int_equal(head, 1);
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");

	/* A dead version does not block a new CREATE. */
	fixture_write(s, 'd', "document:1#viewer@user:anne", NULL);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");
	store_close(s);
}

/* created_rev of the single live row matching f. */
static pemba_revision created_rev_of(store *s, const store_filter *f)
{
	store_iter *it;
	const store_rel *row;
	assert_int_equal(store_query(s, 0, f, NULL, 0, &it, NULL), 0);
	assert_int_equal(store_iter_next(it, &row, NULL), 1);
	pemba_revision rev = row->created_rev;
	assert_int_equal(store_iter_next(it, &row, NULL), 0);
	store_iter_close(it);
	return rev;
}

static void touch_of_identical_row_creates_no_new_version(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 't', "document:1#viewer@user:anne", NULL);
	fixture_write(s, 't', "document:1#viewer@user:anne", NULL);
	fixture_write(s, 't', "document:1#viewer@user:anne", NULL);
	assert_int_equal(created_rev_of(s, &doc1), 1);
	assert_query(s, 1, &doc1, "document:1#viewer@user:anne");
	store_close(s);
}

static void touch_with_new_caveat_replaces_the_version(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	fixture_rel a;
	fixture_parse(&a, "document:1#viewer@user:anne");
	fixture_write(s, 't', "document:1#viewer@user:anne", NULL); /* 1 */

	a.rel.caveat_name = "on_weekdays";
	a.rel.caveat_context = "{\"day\":1}";
	a.rel.expiration_ms = 4102444800000;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_touch(t, &a.rel, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_int_equal(rev, 2);

	store_iter *it;
	const store_rel *row;
	assert_int_equal(store_query(s, 2, &doc1, NULL, 0, &it, NULL), 0);
	assert_int_equal(store_iter_next(it, &row, NULL), 1);
	assert_string_equal(row->caveat_name, "on_weekdays");
	assert_string_equal(row->caveat_context, "{\"day\":1}");
	assert_int_equal(row->expiration_ms, 4102444800000);
	assert_int_equal(row->created_rev, 2);
	assert_int_equal(store_iter_next(it, &row, NULL), 0);
	store_iter_close(it);

	/* Revision 1 still sees the version without a caveat. */
	assert_int_equal(store_query(s, 1, &doc1, NULL, 0, &it, NULL), 0);
	assert_int_equal(store_iter_next(it, &row, NULL), 1);
	assert_string_equal(row->caveat_name, "");
	assert_string_equal(row->caveat_context, "");
	assert_int_equal(row->expiration_ms, 0);
	store_iter_close(it);

	/* Touching twice in one transaction keeps one live version, with
	 * the last caveat. */
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	a.rel.caveat_context = "{\"day\":2}";
	assert_int_equal(store_txn_touch(t, &a.rel, &err), 0);
	a.rel.caveat_context = "{\"day\":3}";
	assert_int_equal(store_txn_touch(t, &a.rel, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_int_equal(store_query(s, rev, &doc1, NULL, 0, &it, NULL), 0);
	assert_int_equal(store_iter_next(it, &row, NULL), 1);
	assert_string_equal(row->caveat_context, "{\"day\":3}");
	assert_int_equal(store_iter_next(it, &row, NULL), 0);
	store_iter_close(it);
	store_close(s);
}

static void row_created_and_deleted_in_one_txn_is_never_visible(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL); /* 1 */

	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	fixture_rel a, b;
	fixture_parse(&a, "document:1#viewer@user:bob");
	fixture_parse(&b, "document:1#viewer@user:anne");
	int deleted;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_create(t, &a.rel, &err), 0);
	assert_int_equal(store_txn_delete(t, &a.rel, &deleted, &err), 0);
	assert_int_equal(deleted, 1);
	/* And an old row deleted, re-created and deleted again. */
	assert_int_equal(store_txn_delete(t, &b.rel, &deleted, &err), 0);
	assert_int_equal(store_txn_create(t, &b.rel, &err), 0);
	assert_int_equal(store_txn_delete(t, &b.rel, &deleted, &err), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(store_txn_commit(t, &err), 0);

	for (pemba_revision r = 1; r <= rev; r++)
		assert_query(s, r, &doc1,
		             r == 1 ? "document:1#viewer@user:anne" : "");
	fixture_write(s, 'c', "document:2#viewer@user:x", NULL);
	assert_query(s, 0, &doc1, "");
	store_close(s);
}

static void delete_by_exact_key_reports_whether_it_deleted(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:1#viewer@user:anne",
	              "document:1#viewer@group:eng#member", NULL);
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	fixture_rel a, b, c;
	fixture_parse(&a, "document:1#viewer@group:eng#member");
	fixture_parse(&b, "document:1#viewer@group:eng");
	fixture_parse(&c, "nosuchtype:1#viewer@user:anne");
	int deleted;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_delete(t, &b.rel, &deleted, &err), 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(store_txn_delete(t, &c.rel, &deleted, &err), 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(store_txn_delete(t, &a.rel, &deleted, &err), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(store_txn_delete(t, &a.rel, &deleted, &err), 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");
	/* Types compare by their interned number on SQLite ("user" came
	 * first), as bytes on PostgreSQL. */
	assert_query(s, 1, &doc1,
	             pg_fixture_enabled()
	                 ? "document:1#viewer@group:eng#member;"
	                   "document:1#viewer@user:anne"
	                 : "document:1#viewer@user:anne;"
	                   "document:1#viewer@group:eng#member");
	store_close(s);
}

static void delete_by_filter_honours_limit_and_reports_more(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	for (int i = 0; i < 1200; i++) {
		char text[100];
		fixture_rel r;
		snprintf(text, sizeof(text), "document:%d#viewer@user:u%d",
		         i % 3, i);
		fixture_parse(&r, text);
		assert_int_equal(store_txn_create(t, &r.rel, &err), 0);
	}
	assert_int_equal(store_txn_commit(t, &err), 0);

	store_filter viewers = {.resource_type = "document",
	                        .relation = "viewer"};
	size_t deleted;
	int more;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(
	    store_txn_delete_filter(t, &viewers, 700, &deleted, &more, &err),
	    0);
	assert_int_equal(deleted, 700);
	assert_int_equal(more, 1);
	assert_int_equal(store_txn_commit(t, &err), 0);

	/* Exactly the limit left: all deleted, none more. */
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(
	    store_txn_delete_filter(t, &viewers, 500, &deleted, &more, &err),
	    0);
	assert_int_equal(deleted, 500);
	assert_int_equal(more, 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_query(s, 0, &viewers, "");

	/* Revision 1 still has all 1200. */
	store_iter *it;
	const store_rel *row;
	size_t n = 0;
	assert_int_equal(store_query(s, 1, &viewers, NULL, 0, &it, NULL), 0);
	while (store_iter_next(it, &row, NULL) == 1)
		n++;
	store_iter_close(it);
	assert_int_equal(n, 1200);

	/* Unlimited delete of a narrower filter. */
	fixture_write(s, 'c', "document:9#viewer@user:a",
	              "document:9#viewer@user:b", "document:9#owner@user:a",
	              NULL);
	store_filter nine = {.resource_type = "document",
	                     .resource_id = "9",
	                     .relation = "viewer"};
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(
	    store_txn_delete_filter(t, &nine, 0, &deleted, &more, &err), 0);
	assert_int_equal(deleted, 2);
	assert_int_equal(more, 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	store_filter nine_all = {.resource_type = "document",
	                         .resource_id = "9"};
	assert_query(s, 0, &nine_all, "document:9#owner@user:a");
	store_close(s);
}

static void txn_query_sees_the_transactions_own_writes(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	fixture_write(s, 'c', "document:1#viewer@user:anne",
	              "document:1#viewer@user:bob", NULL);
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	fixture_rel c, b;
	fixture_parse(&c, "document:1#viewer@user:carl");
	fixture_parse(&b, "document:1#viewer@user:bob");
	int deleted;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_create(t, &c.rel, &err), 0);
	assert_int_equal(store_txn_delete(t, &b.rel, &deleted, &err), 0);

	store_iter *it;
	const store_rel *row;
	assert_int_equal(store_txn_query(t, &doc1, 0, &it, &err), 0);
	assert_int_equal(store_iter_next(it, &row, &err), 1);
	assert_string_equal(row->subject_id, "anne");
	assert_int_equal(store_iter_next(it, &row, &err), 1);
	assert_string_equal(row->subject_id, "carl");
	assert_int_equal(row->created_rev, rev);
	assert_int_equal(store_iter_next(it, &row, &err), 0);
	store_iter_close(it);

	/* A read at the last committed revision, meanwhile, is not
	 * disturbed by the open transaction. */
	assert_query(s, rev - 1, &doc1,
	             "document:1#viewer@user:anne;document:1#viewer@user:bob");
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_query(s, rev, &doc1,
	             "document:1#viewer@user:anne;document:1#viewer@user:carl");
	store_close(s);
}

static void aborted_txn_leaves_no_trace_and_names_still_work(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	fixture_rel a;
	fixture_parse(&a, "folder:1#parent@space:x");
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(rev, 1);
	assert_int_equal(store_txn_create(t, &a.rel, &err), 0);
	store_txn_abort(t);

	/* The names interned by the aborted transaction are gone; new
	 * names may get their numbers, and both must read back right. */
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	fixture_write(s, 'c', "folder:1#parent@space:x", NULL);
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");
	store_filter folders = {.resource_type = "folder"};
	assert_query(s, 0, &folders, "folder:1#parent@space:x");
	pemba_revision head;
	assert_int_equal(store_head_revision(s, &head, NULL), 0);
	assert_int_equal(head, 2);
	store_close(s);
}

static void schema_is_read_as_of_a_revision(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	char *text;
	pemba_revision written;
	assert_int_equal(store_read_schema(s, 0, &text, &written, &err),
	                 PEMBA_ENOTFOUND);

	store_txn *t;
	pemba_revision r1, r3;
	assert_int_equal(store_txn_begin(s, &t, &r1, &err), 0);
	assert_int_equal(
	    store_txn_write_schema(t, "definition user {}", 18, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL); /* 2 */
	assert_int_equal(store_txn_begin(s, &t, &r3, &err), 0);
	/* Written twice in one transaction: the last text wins. */
	assert_int_equal(store_txn_write_schema(t, "draft", 5, &err), 0);
	assert_int_equal(
	    store_txn_write_schema(t, "definition doc {}", 17, &err), 0);
	assert_int_equal(store_txn_commit(t, &err), 0);

	assert_int_equal(store_read_schema(s, 2, &text, &written, &err), 0);
	assert_string_equal(text, "definition user {}");
	assert_int_equal(written, r1);
	free(text);
	assert_int_equal(store_read_schema(s, r3, &text, &written, &err), 0);
	assert_string_equal(text, "definition doc {}");
	assert_int_equal(written, r3);
	free(text);
	assert_int_equal(store_read_schema(s, 0, &text, NULL, &err), 0);
	assert_string_equal(text, "definition doc {}");
	free(text);
	store_close(s);
}

static void check_revision_refuses_future_revisions(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(store_check_revision(s, 0, &err), 0);
	assert_int_equal(store_check_revision(s, 1, &err), PEMBA_EREVISION);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	fixture_write(s, 'c', "document:2#viewer@user:anne", NULL);
	fixture_write(s, 'c', "document:3#viewer@user:anne", NULL);
	assert_int_equal(store_check_revision(s, 3, &err), 0);
	assert_int_equal(store_check_revision(s, 5, &err), PEMBA_EREVISION);
	assert_string_equal(err.message,
	                    "revision 5 is in the future (head is 3)");
	assert_int_equal(err.code, PEMBA_EREVISION);
	store_close(s);
}

static void second_txn_on_one_handle_is_refused(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_txn *t, *t2;
	pemba_revision rev;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	assert_int_equal(store_txn_begin(s, &t2, &rev, &err), PEMBA_EINVAL);
	store_txn_abort(t);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(read_at_revision_is_unchanged_by_later_writes),
	    cmocka_unit_test(deleted_then_recreated_keeps_both_versions),
	    cmocka_unit_test(create_of_live_duplicate_fails_with_eexists),
	    cmocka_unit_test(touch_of_identical_row_creates_no_new_version),
	    cmocka_unit_test(touch_with_new_caveat_replaces_the_version),
	    cmocka_unit_test(
	        row_created_and_deleted_in_one_txn_is_never_visible),
	    cmocka_unit_test(delete_by_exact_key_reports_whether_it_deleted),
	    cmocka_unit_test(delete_by_filter_honours_limit_and_reports_more),
	    cmocka_unit_test(txn_query_sees_the_transactions_own_writes),
	    cmocka_unit_test(aborted_txn_leaves_no_trace_and_names_still_work),
	    cmocka_unit_test(schema_is_read_as_of_a_revision),
	    cmocka_unit_test(check_revision_refuses_future_revisions),
	    cmocka_unit_test(second_txn_on_one_handle_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
