/*
 * test_caveats.c -- caveats in checks and lookups through the public API:
 * three-valued results (has / no / conditional with the missing parameter
 * names, as SpiceDB reports partial_caveat_info) through relations,
 * unions, intersections, exclusions, arrows, usersets and wildcards; the
 * relationship's context winning over the request's; evaluation errors and
 * malformed contexts failing cleanly; writes validating caveated
 * relationships.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pemba.h"
#include "pg_fixture.h"

static const char *SCHEMA =
    "caveat is_42(n int) { n == 42 }\n"
    "caveat is_tuesday(day string) { day == \"tuesday\" }\n"
    "caveat ratio(a int, b int) { a / b > 1 }\n"
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | user with is_42 | group#member\n"
    "}\n"
    "definition folder {\n"
    "  relation viewer: user | user with is_tuesday\n"
    "}\n"
    "definition document {\n"
    "  relation folder: folder | folder with is_42\n"
    "  relation viewer: user | user with is_42 | user:* with is_tuesday |"
    " group#member with is_tuesday | user with ratio\n"
    "  relation editor: user | user with is_tuesday\n"
    "  relation banned: user | user with is_tuesday\n"
    "  permission both = viewer & editor\n"
    "  permission either = viewer + editor\n"
    "  permission allowed = viewer - banned\n"
    "  permission via_folder = folder->viewer\n"
    "}\n";

static int setup(void **state)
{
	pemba_db *db = NULL;
	pemba_error err;
	if (pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err) != 0)
		fail_msg("open: %s", err.message);
	if (pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err) != 0)
		fail_msg("schema: %s", err.message);
	*state = db;
	return 0;
}

static int teardown(void **state)
{
	pemba_close(*state);
	return 0;
}

static int touch(pemba_db *db, const char *text, pemba_error *err)
{
	pemba_update u = {.op = PEMBA_OP_TOUCH};
	char *storage = NULL;
	if (pemba_parse_relationship(text, &u.rel, &storage, err) != 0)
		fail_msg("parse %s: %s", text, err->message);
	int rc = pemba_write_relationships(db, &u, 1, NULL, 0, NULL, err);
	pemba_free(storage);
	return rc;
}

static void must_touch(pemba_db *db, const char *text)
{
	pemba_error err;
	if (touch(db, text, &err) != 0)
		fail_msg("touch %s: %s", text, err.message);
}

/* Checks document:doc#permission@user:subject with `context` and returns
 * "has", "no" or "cond[a,b]" (the missing names), or "error: ...". */
static const char *check(pemba_db *db, const char *permission,
                         const char *subject, const char *context)
{
	static char out[512];
	pemba_check_request q = {
	    .resource_type = "document",
	    .resource_id = "doc",
	    .permission = permission,
	    .subject_type = "user",
	    .subject_id = subject,
	    .context = context,
	};
	pemba_check_result r = {0};
	pemba_error err;
	if (pemba_check_permission_ex(db, 0, &q, &r, &err) != 0) {
		snprintf(out, sizeof(out), "error %d: %s", err.code,
		         err.message);
		return out;
	}
	/* At PEMBA_REVISION_HEAD the result names the head it read (the
	 * revision CheckPermission's ZedToken carries). */
	pemba_revision head;
	assert_int_equal(pemba_head_revision(db, &head, &err), 0);
	assert_int_equal(r.checked_at, head);
	if (r.permissionship == PEMBA_HAS_PERMISSION) {
		assert_int_equal(r.nmissing, 0);
		snprintf(out, sizeof(out), "has");
	} else if (r.permissionship == PEMBA_NO_PERMISSION) {
		assert_int_equal(r.nmissing, 0);
		snprintf(out, sizeof(out), "no");
	} else {
		size_t n = snprintf(out, sizeof(out), "cond[");
		for (size_t i = 0; i < r.nmissing; i++)
			n += snprintf(out + n, sizeof(out) - n, "%s%s",
			              i ? "," : "", r.missing[i]);
		snprintf(out + n, sizeof(out) - n, "]");
	}
	pemba_check_result_clear(&r);
	return out;
}

/* ------------------------------------------------------------- checks */

static void
test_single_caveat_is_conditional_until_context_decides(void **state)
{
	pemba_db *db = *state;
	must_touch(db, "document:doc#viewer@user:anne[is_42]");
	assert_string_equal(check(db, "viewer", "anne", NULL), "cond[n]");
	assert_string_equal(check(db, "viewer", "anne", "{\"n\": 42}"), "has");
	assert_string_equal(check(db, "viewer", "anne", "{\"n\": 41}"), "no");
	/* Keys that are not parameters are ignored. */
	assert_string_equal(check(db, "viewer", "anne", "{\"x\": 1}"),
	                    "cond[n]");
	/* A subject without a relationship is simply not a member. */
	assert_string_equal(check(db, "viewer", "bob", NULL), "no");
}

static void test_relationship_context_wins_over_request(void **state)
{
	pemba_db *db = *state;
	must_touch(db, "document:doc#viewer@user:anne[is_42:{\"n\": 42}]");
	must_touch(db, "document:doc#viewer@user:bob[is_42:{\"n\": 1}]");
	assert_string_equal(check(db, "viewer", "anne", "{\"n\": 1}"), "has");
	assert_string_equal(check(db, "viewer", "bob", "{\"n\": 42}"), "no");
}

static void test_union_intersection_exclusion(void **state)
{
	pemba_db *db = *state;
	must_touch(db, "document:doc#viewer@user:anne[is_42]");
	must_touch(db, "document:doc#editor@user:anne[is_tuesday]");
	/* Missing names are the union over the undecided branches. */
	assert_string_equal(check(db, "either", "anne", NULL), "cond[day,n]");
	assert_string_equal(check(db, "both", "anne", NULL), "cond[day,n]");
	/* One decided branch settles a union / an intersection. */
	assert_string_equal(check(db, "either", "anne", "{\"n\": 42}"), "has");
	assert_string_equal(check(db, "both", "anne", "{\"n\": 41}"), "no");
	assert_string_equal(check(db, "both", "anne", "{\"n\": 42}"),
	                    "cond[day]");
	assert_string_equal(
	    check(db, "both", "anne", "{\"n\": 42, \"day\": \"tuesday\"}"),
	    "has");
	/* A definite member of one branch needs no context. */
	must_touch(db, "document:doc#editor@user:bob");
	must_touch(db, "document:doc#viewer@user:bob[is_42]");
	assert_string_equal(check(db, "either", "bob", NULL), "has");
	assert_string_equal(check(db, "both", "bob", NULL), "cond[n]");

	/* Exclusion: base AND NOT banned. */
	must_touch(db, "document:doc#viewer@user:carl");
	must_touch(db, "document:doc#banned@user:carl[is_tuesday]");
	assert_string_equal(check(db, "allowed", "carl", NULL), "cond[day]");
	assert_string_equal(
	    check(db, "allowed", "carl", "{\"day\": \"tuesday\"}"), "no");
	assert_string_equal(
	    check(db, "allowed", "carl", "{\"day\": \"monday\"}"), "has");
	assert_string_equal(check(db, "allowed", "anne", NULL), "cond[n]");
	must_touch(db, "document:doc#banned@user:dana");
	must_touch(db, "document:doc#viewer@user:dana[is_42]");
	assert_string_equal(check(db, "allowed", "dana", NULL), "no");
}

static void test_arrows_usersets_and_wildcards(void **state)
{
	pemba_db *db = *state;
	/* The arrow's own relationship is caveated, and so is the target. */
	must_touch(db, "document:doc#folder@folder:f[is_42]");
	must_touch(db, "folder:f#viewer@user:anne[is_tuesday]");
	must_touch(db, "folder:f#viewer@user:bob");
	assert_string_equal(check(db, "via_folder", "anne", NULL),
	                    "cond[day,n]");
	assert_string_equal(check(db, "via_folder", "bob", NULL), "cond[n]");
	assert_string_equal(check(db, "via_folder", "bob", "{\"n\": 42}"),
	                    "has");
	assert_string_equal(check(db, "via_folder", "anne", "{\"n\": 7}"),
	                    "no");

	/* A userset reached through a caveated relationship. */
	must_touch(db, "document:doc#viewer@group:g#member[is_tuesday]");
	must_touch(db, "group:g#member@user:erin[is_42]");
	must_touch(db, "group:g#member@user:finn");
	assert_string_equal(check(db, "viewer", "erin", NULL), "cond[day,n]");
	assert_string_equal(check(db, "viewer", "finn", NULL), "cond[day]");

	/* A caveated wildcard covers everyone, conditionally. */
	must_touch(db, "document:doc#viewer@user:*[is_tuesday]");
	assert_string_equal(check(db, "viewer", "zed", NULL), "cond[day]");
	assert_string_equal(
	    check(db, "viewer", "zed", "{\"day\": \"tuesday\"}"), "has");
}

static void test_evaluation_errors_and_bad_contexts(void **state)
{
	pemba_db *db = *state;
	must_touch(db, "document:doc#viewer@user:anne[ratio:{\"b\": 0}]");
	/* Division by zero is an error of the request, not a crash. */
	const char *got = check(db, "viewer", "anne", "{\"a\": 5}");
	assert_non_null(strstr(got, "error"));
	assert_string_equal(check(db, "viewer", "anne", NULL), "cond[a]");

	/* A request context must be a JSON object. */
	got = check(db, "viewer", "anne", "[1, 2]");
	assert_non_null(strstr(got, "error -"));
	assert_non_null(strstr(got, "JSON object"));
	got = check(db, "viewer", "anne", "{\"a\": ");
	assert_non_null(strstr(got, "not valid JSON"));
	/* A value of the wrong type for its parameter. */
	got = check(db, "viewer", "anne", "{\"a\": \"five\"}");
	assert_non_null(strstr(got, "error"));
	assert_non_null(strstr(got, "a"));
}

static void test_writes_validate_caveats(void **state)
{
	pemba_db *db = *state;
	pemba_error err;
	/* A caveat the relation does not allow. */
	assert_int_equal(
	    touch(db, "document:doc#editor@user:anne[is_42]", &err),
	    PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "user with is_42"));
	/* A caveat the relation requires cannot be left out... unless the
	 * plain type is allowed too (it is for viewer). */
	assert_int_equal(touch(db, "folder:f#viewer@user:anne", &err), 0);
	/* A context value that does not convert to its parameter's type. */
	assert_int_equal(
	    touch(db, "document:doc#viewer@user:anne[is_42:{\"n\": \"x\"}]",
	          &err),
	    PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "n"));
	/* Nothing was written by the refused writes. */
	assert_string_equal(check(db, "viewer", "anne", NULL), "no");
}

/* ------------------------------------------------------------ lookups */

typedef struct found {
	char text[2048];
	size_t n;
} found;

static int on_item(void *ctx, const pemba_lookup_item *item)
{
	found *f = ctx;
	f->n += snprintf(f->text + f->n, sizeof(f->text) - f->n, "%s%s",
	                 f->n ? " " : "", item->id);
	if (item->permissionship == PEMBA_CONDITIONAL_PERMISSION) {
		f->n += snprintf(f->text + f->n, sizeof(f->text) - f->n, "?");
		for (size_t i = 0; i < item->nmissing; i++)
			f->n +=
			    snprintf(f->text + f->n, sizeof(f->text) - f->n,
			             "%s%s", i ? "," : "", item->missing[i]);
	}
	if (item->nexcluded) {
		f->n += snprintf(f->text + f->n, sizeof(f->text) - f->n, "-{");
		for (size_t i = 0; i < item->nexcluded; i++) {
			const pemba_lookup_item *ex = &item->excluded[i];
			f->n += snprintf(f->text + f->n, sizeof(f->text) - f->n,
			                 "%s%s%s", i ? "," : "", ex->id,
			                 ex->permissionship ==
			                         PEMBA_CONDITIONAL_PERMISSION
			                     ? "?"
			                     : "");
		}
		f->n += snprintf(f->text + f->n, sizeof(f->text) - f->n, "}");
	}
	return 0;
}

static const char *lookup_subjects(pemba_db *db, const char *permission,
                                   const char *context)
{
	static found f;
	memset(&f, 0, sizeof(f));
	pemba_lookup_subjects_request q = {
	    .resource_type = "document",
	    .resource_id = "doc",
	    .permission = permission,
	    .subject_type = "user",
	    .context = context,
	    .on_item = on_item,
	};
	pemba_error err;
	if (pemba_lookup_subjects(db, 0, &q, NULL, &f, NULL, &err) != 0)
		fail_msg("lookup subjects: %s", err.message);
	return f.text;
}

static void test_lookup_subjects_reports_conditions(void **state)
{
	pemba_db *db = *state;
	must_touch(db, "document:doc#viewer@user:anne[is_42]");
	must_touch(db, "document:doc#viewer@user:bob");
	must_touch(db, "document:doc#viewer@user:carl[is_42:{\"n\": 1}]");
	must_touch(db, "document:doc#banned@user:bob[is_tuesday]");
	assert_string_equal(lookup_subjects(db, "viewer", NULL), "anne?n bob");
	assert_string_equal(lookup_subjects(db, "viewer", "{\"n\": 42}"),
	                    "anne bob");
	assert_string_equal(lookup_subjects(db, "allowed", NULL),
	                    "anne?n bob?day");
	assert_string_equal(
	    lookup_subjects(db, "allowed", "{\"day\": \"tuesday\"}"), "anne?n");

	/* A caveated wildcard, with a conditional exclusion. */
	must_touch(db, "document:doc#viewer@user:*[is_tuesday]");
	assert_string_equal(lookup_subjects(db, "allowed", NULL),
	                    "*?day-{bob?} anne?n bob?day");
}

static void test_lookup_resources_reports_conditions(void **state)
{
	pemba_db *db = *state;
	must_touch(db, "document:doc#viewer@user:anne[is_42]");
	found f = {0};
	pemba_lookup_resources_request q = {
	    .resource_type = "document",
	    .permission = "viewer",
	    .subject_type = "user",
	    .subject_id = "anne",
	    .on_item = on_item,
	};
	pemba_error err;
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &q, NULL, &f, NULL, &err), 0);
	assert_string_equal(f.text, "doc?n");
	memset(&f, 0, sizeof(f));
	q.context = "{\"n\": 3}";
	assert_int_equal(
	    pemba_lookup_resources(db, 0, &q, NULL, &f, NULL, &err), 0);
	assert_string_equal(f.text, "");
}

static void test_bulk_check_reports_missing_per_item(void **state)
{
	pemba_db *db = *state;
	must_touch(db, "document:doc#viewer@user:anne[is_42]");
	pemba_check_request items[2] = {
	    {.resource_type = "document",
	     .resource_id = "doc",
	     .permission = "viewer",
	     .subject_type = "user",
	     .subject_id = "anne"},
	    {.resource_type = "document",
	     .resource_id = "doc",
	     .permission = "viewer",
	     .subject_type = "user",
	     .subject_id = "anne",
	     .context = "{\"n\": 42}"},
	};
	pemba_check_result results[2];
	pemba_error err;
	assert_int_equal(pemba_check_bulk(db, 0, items, 2, results, NULL, &err),
	                 0);
	assert_int_equal(results[0].permissionship,
	                 PEMBA_CONDITIONAL_PERMISSION);
	assert_int_equal(results[0].nmissing, 1);
	assert_string_equal(results[0].missing[0], "n");
	assert_int_equal(results[1].permissionship, PEMBA_HAS_PERMISSION);
	pemba_check_result_clear(&results[0]);
	pemba_check_result_clear(&results[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        test_single_caveat_is_conditional_until_context_decides, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        test_relationship_context_wins_over_request, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_union_intersection_exclusion,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_arrows_usersets_and_wildcards,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_evaluation_errors_and_bad_contexts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writes_validate_caveats, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        test_lookup_subjects_reports_conditions, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_lookup_resources_reports_conditions, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_bulk_check_reports_missing_per_item, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
