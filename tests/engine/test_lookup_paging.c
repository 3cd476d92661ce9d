/*
 * test_lookup_paging.c -- LookupResources at scale: memory bounded by the
 * page (not by the number of matching resources), exact resumption across
 * many pages when candidates come from many merged sources, and byte order
 * of ids.  Through the public API over an in-memory SQLite datastore.
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pemba.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEAP_FROM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define HEAP_FROM_ASAN 1
#endif
#ifdef HEAP_FROM_ASAN
#include "pg_fixture.h"
#include <sanitizer/allocator_interface.h>
#endif

/* ------------------------------------------------------------- helpers */

/* Bytes currently allocated on the heap by the process (ASan's count
 * when it owns malloc, glibc's otherwise). */
static size_t heap_in_use(void)
{
#ifdef HEAP_FROM_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
#endif
}

/* A fresh datastore with `schema`; query_cache_bytes as in
 * pemba_options (0: the engine's default). */
static pemba_db *open_db(const char *schema, int64_t query_cache_bytes)
{
	pemba_db *db = NULL;
	pemba_error err;
	pemba_options opts = {.query_cache_bytes = query_cache_bytes};
	if (pemba_open(pg_fixture_uri("sqlite::memory:"), &opts, &db, &err) !=
	    0)
		fail_msg("open: %s", err.message);
	if (pemba_write_schema(db, schema, strlen(schema), NULL, &err) != 0)
		fail_msg("write schema: %s", err.message);
	return db;
}

/* Bulk loads rels[0..n) (TOUCH) in one import. */
static void import(pemba_db *db, const pemba_relationship *rels, size_t n)
{
	pemba_import *imp;
	pemba_error err;
	if (pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err) != 0)
		fail_msg("import: %s", err.message);
	for (size_t i = 0; i < n; i += 1000)
		if (pemba_import_add(imp, rels + i, n - i < 1000 ? n - i : 1000,
		                     &err) != 0)
			fail_msg("import add: %s", err.message);
	if (pemba_import_commit(imp, NULL, NULL, &err) != 0)
		fail_msg("import commit: %s", err.message);
}

static pemba_relationship rel(const char *rtype, const char *rid,
                              const char *relation, const char *stype,
                              const char *sid, const char *srel)
{
	pemba_relationship r = {.resource_type = rtype,
	                        .resource_id = rid,
	                        .relation = relation,
	                        .subject_type = stype,
	                        .subject_id = sid,
	                        .subject_relation = srel};
	return r;
}

/* What a lookup delivered: ids (copied), the last cursor, and the heap's
 * high-water mark above `baseline` seen at each result. */
typedef struct results {
	char **ids;
	size_t n, cap;
	char cursor[4096];
	size_t baseline, peak;
	int other_permissionship;
	int keep_ids;
	char **cursors;  /* with keep_ids */
	char last[1100]; /* the previous id (order check without keep_ids) */
	int out_of_order;
} results;

static int on_resource(void *ctx, const char *id, pemba_permissionship p,
                       const char *cursor)
{
	results *r = ctx;
	size_t used = heap_in_use();
	if (used > r->baseline && used - r->baseline > r->peak)
		r->peak = used - r->baseline;
	if (p != PEMBA_HAS_PERMISSION)
		r->other_permissionship++;
	if (r->n > 0 && strcmp(r->last, id) >= 0)
		r->out_of_order++;
	snprintf(r->last, sizeof(r->last), "%s", id);
	if (r->keep_ids) {
		if (r->n == r->cap) {
			r->cap = r->cap ? 2 * r->cap : 256;
			r->ids = realloc(r->ids, r->cap * sizeof(*r->ids));
			r->cursors =
			    realloc(r->cursors, r->cap * sizeof(*r->cursors));
		}
		r->ids[r->n] = strdup(id);
		r->cursors[r->n] = strdup(cursor);
	}
	r->n++;
	snprintf(r->cursor, sizeof(r->cursor), "%s", cursor);
	return 0;
}

static void results_free(results *r)
{
	for (size_t i = 0; r->keep_ids && i < r->n; i++) {
		free(r->ids[i]);
		free(r->cursors[i]);
	}
	free(r->ids);
	free(r->cursors);
	memset(r, 0, sizeof(*r));
}

static void lookup(pemba_db *db, const char *type, const char *perm,
                   const char *subject_type, const char *subject_id,
                   size_t limit, const char *cursor, results *out)
{
	pemba_lookup_resources_request req = {.resource_type = type,
	                                      .permission = perm,
	                                      .subject_type = subject_type,
	                                      .subject_id = subject_id,
	                                      .limit = limit,
	                                      .cursor = cursor};
	pemba_error err;
	if (pemba_lookup_resources(db, 0, &req, on_resource, out, NULL, &err))
		fail_msg("lookup resources: %s", err.message);
}

/* ------------------------------------------------------ memory bound */

#define MANY 200000

static const char *const MANY_SCHEMA =
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | group#member\n"
    "}\n"
    "definition document {\n"
    "  relation viewer: user | group#member\n"
    "  relation banned: user\n"
    "  permission view = viewer - banned\n"
    "}\n";

/* 200 000 documents anne may view (directly, or through a group for one
 * in ten), plus bob's: a page of 100, and the whole result streamed
 * without a limit, must stay within a couple of MiB of heap, where
 * collecting the candidates alone would take tens. */
static void test_lookup_resources_memory_is_bounded_by_the_page(void **state)
{
	(void)state;
	/* Without the query cache: it holds results up to its own budget
	 * (64 MiB on PostgreSQL), which is not the engine memory bounded
	 * here; tests/store/test_store_query_cache.c tests its budget. */
	pemba_db *db = open_db(MANY_SCHEMA, -1);
	char(*ids)[16] = malloc((size_t)MANY * sizeof(*ids));
	pemba_relationship *rels = malloc(((size_t)MANY + 8) * sizeof(*rels));
	size_t n = 0;
	for (size_t i = 0; i < MANY; i++) {
		snprintf(ids[i], sizeof(ids[i]), "d%06zu", i);
		rels[n++] = i % 10 ? rel("document", ids[i], "viewer", "user",
		                         "anne", NULL)
		                   : rel("document", ids[i], "viewer", "group",
		                         "eng", "member");
	}
	rels[n++] = rel("group", "eng", "member", "user", "anne", NULL);
	rels[n++] = rel("document", "bobs", "viewer", "user", "bob", NULL);
	rels[n++] = rel("document", "d000003", "banned", "user", "anne", NULL);
	import(db, rels, n);

	/* Warm up (statements prepared, caches filled), then measure. */
	results r = {.keep_ids = 1};
	lookup(db, "document", "view", "user", "anne", 100, NULL, &r);
	results_free(&r);

	r = (results){.keep_ids = 1, .baseline = heap_in_use()};
	lookup(db, "document", "view", "user", "anne", 100, NULL, &r);
	assert_int_equal(r.n, 100);
	assert_string_equal(r.ids[0], "d000000");
	assert_string_equal(r.ids[3], "d000004"); /* d000003: banned */
	assert_string_equal(r.ids[99], "d000100");
	size_t page_peak = r.peak;
	results_free(&r);

	/* A page deep into the result set costs the same. */
	r = (results){.keep_ids = 1};
	lookup(db, "document", "view", "user", "anne", 1, NULL, &r);
	results_free(&r);

	r = (results){.baseline = heap_in_use()};
	lookup(db, "document", "view", "user", "anne", 0, NULL, &r);
	assert_int_equal(r.n, MANY - 1);
	assert_int_equal(r.out_of_order, 0);
	assert_int_equal(r.other_permissionship, 0);
	size_t all_peak = r.peak;
	results_free(&r);

	print_message("heap above baseline: page of 100 %zu KiB, all %d "
	              "results %zu KiB\n",
	              page_peak / 1024, MANY - 1, all_peak / 1024);
	assert_true(page_peak < (size_t)2 << 20);
	assert_true(all_peak < (size_t)4 << 20);
	free(rels);
	free(ids);
	pemba_close(db);
}

/* ------------------------------------------------ resumption, merging */

static const char *const MERGE_SCHEMA =
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | group#member\n"
    "}\n"
    "definition folder {\n"
    "  relation parent: folder\n"
    "  relation viewer: user | group#member\n"
    "  permission view = viewer + parent->view\n"
    "}\n"
    "definition document {\n"
    "  relation parent: folder\n"
    "  relation viewer: user | user:* | group#member\n"
    "  relation editor: user | group#member\n"
    "  relation banned: user | group#member\n"
    "  permission view = (viewer + editor + parent->view) - banned\n"
    "}\n";

#define NDOCS 3000

/* Document i's id: mixed case and lengths, so byte order differs from
 * numeric and alphabetical order ("B..." sorts before "a..."). */
static void doc_id(char *buf, size_t len, size_t i)
{
	static const char *const prefixes[] = {"a", "B", "a-", "aa", "Z_", "b"};
	snprintf(buf, len, "%s%zu", prefixes[i % 6], i * 7919 % 10007);
}

/* Each document reaches anne through several sources at once, so the
 * merge sees the same id from many streams (direct viewer, editor through
 * a nested group, a folder chain, the wildcard), and some are banned. */
static pemba_db *merge_dataset(char (*ids)[32])
{
	pemba_db *db = open_db(MERGE_SCHEMA, 0);
	pemba_relationship *rels = malloc((size_t)NDOCS * 8 * sizeof(*rels));
	size_t n = 0;
	static char folders[40][8];
	for (int f = 0; f < 40; f++) {
		snprintf(folders[f], sizeof(folders[f]), "f%d", f);
		if (f > 0)
			rels[n++] = rel("folder", folders[f], "parent",
			                "folder", folders[(f - 1) / 2], NULL);
	}
	rels[n++] = rel("folder", "f1", "viewer", "group", "outer", "member");
	rels[n++] = rel("group", "outer", "member", "group", "inner", "member");
	rels[n++] = rel("group", "inner", "member", "user", "anne", NULL);
	for (size_t i = 0; i < NDOCS; i++) {
		doc_id(ids[i], sizeof(ids[i]), i);
		if (i % 3 == 0)
			rels[n++] = rel("document", ids[i], "viewer", "user",
			                "anne", NULL);
		if (i % 5 == 0)
			rels[n++] = rel("document", ids[i], "editor", "group",
			                "inner", "member");
		rels[n++] = rel("document", ids[i], "parent", "folder",
		                folders[i % 40], NULL);
		if (i % 97 == 0)
			rels[n++] = rel("document", ids[i], "viewer", "user",
			                "*", NULL);
		if (i % 11 == 0)
			rels[n++] = rel("document", ids[i], "banned", "user",
			                "anne", NULL);
		if (i % 13 == 0)
			rels[n++] = rel("document", ids[i], "viewer", "user",
			                "bob", NULL);
	}
	import(db, rels, n);
	free(rels);
	return db;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The answer by checks, sorted by id bytes. */
static size_t expected_by_checks(pemba_db *db, char (*ids)[32],
                                 const char *subject, char **out)
{
	size_t n = 0;
	for (size_t i = 0; i < NDOCS; i++) {
		pemba_check_request req = {.resource_type = "document",
		                           .resource_id = ids[i],
		                           .permission = "view",
		                           .subject_type = "user",
		                           .subject_id = subject};
		pemba_permissionship p;
		pemba_error err;
		if (pemba_check_permission(db, 0, &req, &p, &err) != 0)
			fail_msg("check: %s", err.message);
		if (p == PEMBA_HAS_PERMISSION)
			out[n++] = ids[i];
	}
	qsort(out, n, sizeof(*out), compare_strings);
	return n;
}

static void
test_lookup_resources_resumes_across_pages_with_many_matches(void **state)
{
	(void)state;
	char(*ids)[32] = malloc((size_t)NDOCS * sizeof(*ids));
	pemba_db *db = merge_dataset(ids);
	char **want = malloc((size_t)NDOCS * sizeof(*want));
	static const char *const subjects[] = {"anne", "bob", "carol"};
	for (size_t s = 0; s < 3; s++) {
		size_t nwant = expected_by_checks(db, ids, subjects[s], want);
		/* anne: most documents, through every source; bob: his own
		 * and the wildcard's; carol: the wildcard's only. */
		assert_true(nwant > (s == 0 ? NDOCS / 2 : 20));
		static const size_t pages[] = {0, 1, 7, 100, 1000};
		for (size_t k = 0; k < sizeof(pages) / sizeof(pages[0]); k++) {
			if (pages[k] == 1 && s == 0)
				continue; /* thousands of lookups: slow */
			results all = {.keep_ids = 1};
			char cursor[4096] = "";
			size_t npages = 0;
			for (;;) {
				results page = {.keep_ids = 1};
				lookup(db, "document", "view", "user",
				       subjects[s], pages[k], cursor, &page);
				assert_true(pages[k] == 0 ||
				            page.n <= pages[k]);
				for (size_t i = 0; i < page.n; i++)
					on_resource(&all, page.ids[i],
					            PEMBA_HAS_PERMISSION,
					            page.cursors[i]);
				snprintf(cursor, sizeof(cursor), "%s",
				         page.cursor);
				size_t got = page.n;
				results_free(&page);
				npages++;
				if (got < pages[k] || pages[k] == 0)
					break;
			}
			assert_int_equal(all.n, nwant);
			for (size_t i = 0; i < nwant; i++)
				assert_string_equal(all.ids[i], want[i]);
			if (pages[k])
				assert_int_equal(
				    npages, (nwant + pages[k] - 1) / pages[k] +
				                (nwant % pages[k] == 0));
			results_free(&all);
		}
	}
	free(want);
	free(ids);
	pemba_close(db);
}

/* Cursors are exact even when the next page starts in the middle of a
 * stream's batch or when the last id returned also comes from other
 * streams: resuming from every single result gives the rest of the
 * answer. */
static void test_lookup_resources_resumes_after_every_result(void **state)
{
	(void)state;
	char(*ids)[32] = malloc((size_t)NDOCS * sizeof(*ids));
	pemba_db *db = merge_dataset(ids);
	results full = {.keep_ids = 1};
	lookup(db, "document", "view", "user", "anne", 0, NULL, &full);
	assert_true(full.n > NDOCS / 2);
	for (size_t i = 0; i < full.n; i++) {
		results next = {.keep_ids = 1};
		lookup(db, "document", "view", "user", "anne", 2,
		       i ? full.cursors[i - 1] : NULL, &next);
		assert_int_equal(next.n, i + 1 < full.n ? 2 : 1);
		for (size_t k = 0; k < next.n; k++) {
			assert_string_equal(next.ids[k], full.ids[i + k]);
			assert_string_equal(next.cursors[k],
			                    full.cursors[i + k]);
		}
		results_free(&next);
	}
	results last = {.keep_ids = 1};
	lookup(db, "document", "view", "user", "anne", 5,
	       full.cursors[full.n - 1], &last);
	assert_int_equal(last.n, 0);
	results_free(&last);
	results_free(&full);
	free(ids);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_lookup_resources_memory_is_bounded_by_the_page),
	    cmocka_unit_test(
	        test_lookup_resources_resumes_across_pages_with_many_matches),
	    cmocka_unit_test(test_lookup_resources_resumes_after_every_result),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
