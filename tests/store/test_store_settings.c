/*
 * test_store_settings.c -- the datastore settings of layout migration 4:
 * the read-only flag and relation deprecations, stored in the datastore
 * (every handle sees them), changed outside revisions, refused inside a
 * write transaction, and read inside one; migration 4 up and down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"
#include "store_fixture.h"

static void read_only_flag_defaults_off_and_round_trips(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	bool on = true;
	assert_int_equal(store_get_read_only(s, &on, &err), 0);
	assert_false(on);
	assert_int_equal(store_set_read_only(s, true, &err), 0);
	assert_int_equal(store_get_read_only(s, &on, &err), 0);
	assert_true(on);
	/* Setting it twice is fine. */
	assert_int_equal(store_set_read_only(s, true, &err), 0);
	assert_int_equal(store_set_read_only(s, false, &err), 0);
	assert_int_equal(store_get_read_only(s, &on, &err), 0);
	assert_false(on);
	/* Settings are not revisions. */
	pemba_revision head = 9;
	assert_int_equal(store_head_revision(s, &head, &err), 0);
	assert_int_equal(head, 0);
	store_close(s);
}

static void settings_are_shared_by_every_handle(void **state)
{
	store *a = fixture_open("sqlite::memory:settings-shared");
	store *b = NULL;
	pemba_error err = {0};
	assert_int_equal(store_reopen(a, &b, &err), 0);
	assert_int_equal(store_set_read_only(a, true, &err), 0);
	assert_int_equal(store_set_deprecation(b, "document", "viewer",
	                                       STORE_DEPRECATION_REJECT, &err),
	                 0);
	bool on = false;
	assert_int_equal(store_get_read_only(b, &on, &err), 0);
	assert_true(on);
	store_deprecation *list;
	size_t n;
	assert_int_equal(store_list_deprecations(a, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].resource_type, "document");
	assert_string_equal(list[0].relation, "viewer");
	assert_int_equal(list[0].mode, STORE_DEPRECATION_REJECT);
	free(list);
	store_close(b);
	store_close(a);
}

static void deprecations_upsert_list_in_order_and_remove(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	store_deprecation *list = (store_deprecation *)1;
	size_t n = 7;
	assert_int_equal(store_list_deprecations(s, &list, &n, &err), 0);
	assert_null(list);
	assert_int_equal(n, 0);

	pemba_revision rev =
	    fixture_write(s, 'c', "folder:1#owner@user:a", NULL);
	assert_int_equal(store_set_deprecation(s, "folder", "owner",
	                                       STORE_DEPRECATION_WARN, &err),
	                 0);
	assert_int_equal(store_set_deprecation(s, "document", "viewer",
	                                       STORE_DEPRECATION_WARN, &err),
	                 0);
	/* Again: the mode is replaced, not a second row. */
	assert_int_equal(store_set_deprecation(s, "folder", "owner",
	                                       STORE_DEPRECATION_REJECT, &err),
	                 0);
	assert_int_equal(store_list_deprecations(s, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].resource_type, "document");
	assert_int_equal(list[0].mode, STORE_DEPRECATION_WARN);
	assert_string_equal(list[1].resource_type, "folder");
	assert_string_equal(list[1].relation, "owner");
	assert_int_equal(list[1].mode, STORE_DEPRECATION_REJECT);
	assert_int_equal(list[1].set_rev, rev);
	assert_true(list[1].set_ms > 0);
	free(list);

	bool removed = false;
	assert_int_equal(
	    store_remove_deprecation(s, "folder", "owner", &removed, &err), 0);
	assert_true(removed);
	assert_int_equal(
	    store_remove_deprecation(s, "folder", "owner", &removed, &err), 0);
	assert_false(removed);
	assert_int_equal(store_list_deprecations(s, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	free(list);

	/* Empty names and unknown modes are refused. */
	assert_int_equal(
	    store_set_deprecation(s, "", "owner", STORE_DEPRECATION_WARN, &err),
	    PEMBA_EINVAL);
	assert_int_equal(store_set_deprecation(s, "folder", "owner",
	                                       (store_deprecation_mode)3, &err),
	                 PEMBA_EINVAL);
	store_close(s);
}

/* Inside a write transaction the settings are read in it; changing them
 * there is refused (a settings change is its own transaction). */
static void settings_inside_a_write_transaction(void **state)
{
	store *s = fixture_open("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(store_set_read_only(s, true, &err), 0);
	store_txn *t;
	assert_int_equal(store_txn_begin(s, &t, NULL, &err), 0);
	bool on = false;
	assert_int_equal(store_get_read_only(s, &on, &err), 0);
	assert_true(on);
	assert_int_equal(store_set_read_only(s, false, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "inside a transaction"));
	assert_int_equal(
	    store_set_deprecation(s, "a", "b", STORE_DEPRECATION_WARN, &err),
	    PEMBA_EINVAL);
	store_txn_abort(t);
	assert_int_equal(store_set_read_only(s, false, &err), 0);
	store_close(s);
}

static void migration_4_adds_and_drops_the_settings(void **state)
{
	char *dir = fixture_tmpdir();
	char uri[600];
	snprintf(uri, sizeof(uri), "sqlite://%s/m.db", dir);
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *s;
	pemba_error err = {0};
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);
	int current, head;
	store_migration_info *list;
	size_t n;
	assert_int_equal(
	    store_migrate_status(s, &current, &head, &list, &n, &err), 0);
	assert_true(head >= 4);
	assert_string_equal(list[3].name, "settings");
	assert_non_null(strstr(list[3].description, "read-only"));
	free(list);
	assert_int_equal(store_migrate_up(s, 3, &err), 0);
	bool on;
	assert_int_equal(store_get_read_only(s, &on, &err), PEMBA_EVERSION);
	assert_int_equal(store_migrate_up(s, 0, &err), 0);
	assert_int_equal(store_get_read_only(s, &on, &err), 0);
	assert_false(on);
	assert_int_equal(store_set_read_only(s, true, &err), 0);
	assert_int_equal(store_set_deprecation(s, "document", "viewer",
	                                       STORE_DEPRECATION_WARN, &err),
	                 0);
	assert_int_equal(store_set_read_only(s, false, &err), 0);
	fixture_write(s, 'c', "document:1#viewer@user:anne", NULL);
	store_close(s);

	/* Down to 3 keeps the relationships and drops the settings. */
	assert_int_equal(store_open(fixture_uri(uri), &none, &s, &err), 0);
	assert_int_equal(store_migrate_down(s, 3, &err), 0);
	assert_int_equal(
	    store_migrate_status(s, &current, NULL, NULL, NULL, &err), 0);
	assert_int_equal(current, 3);
	store_close(s);
	s = fixture_open(uri); /* auto-migrates up again */
	assert_int_equal(store_get_read_only(s, &on, &err), 0);
	assert_false(on);
	store_deprecation *deps;
	assert_int_equal(store_list_deprecations(s, &deps, &n, &err), 0);
	assert_int_equal(n, 0);
	store_filter doc1 = {.resource_type = "document", .resource_id = "1"};
	assert_query(s, 0, &doc1, "document:1#viewer@user:anne");
	store_close(s);
	fixture_rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(read_only_flag_defaults_off_and_round_trips),
	    cmocka_unit_test(settings_are_shared_by_every_handle),
	    cmocka_unit_test(deprecations_upsert_list_in_order_and_remove),
	    cmocka_unit_test(settings_inside_a_write_transaction),
	    cmocka_unit_test(migration_4_adds_and_drops_the_settings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
