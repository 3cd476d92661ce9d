/*
 * test_settings.c -- datastore settings: read-only mode refuses every
 * write path and changes nothing while reads keep working, is stored in
 * the datastore (other handles, reopen), and relation deprecation warns
 * or rejects writes, imports and touches but lets deletes through; an
 * old datastore gains the settings by its layout migration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pemba.h"
#include "pg_fixture.h"
#include "store/store.h"

static const char *SCHEMA = "definition user {}\n"
                            "definition group {\n"
                            "  relation member: user\n"
                            "}\n"
                            "definition document {\n"
                            "  relation viewer: user | group#member\n"
                            "  relation reader: user | group#member\n"
                            "  permission view = viewer + reader\n"
                            "}\n";

/* ============================================================ helpers */

static char tmpdir[256];

static void make_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/pemba-settings-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	assert_int_equal(system(cmd), 0);
}

static char *file_uri(const char *name)
{
	static char uri[512];
	snprintf(uri, sizeof(uri), "sqlite://%s/%s", tmpdir, name);
	return uri;
}

static pemba_db *open_db(const char *uri)
{
	pemba_db *db;
	pemba_error err = {0};
	int rc = pemba_open(pg_fixture_uri(uri), NULL, &db, &err);
	if (rc != 0)
		fail_msg("open %s: %s", uri, err.message);
	return db;
}

static pemba_db *setup(const char *uri)
{
	pemba_db *db = open_db(uri);
	pemba_error err = {0};
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	return db;
}

static pemba_relationship rel(const char *doc, const char *relation,
                              const char *user)
{
	return (pemba_relationship){.resource_type = "document",
	                            .resource_id = doc,
	                            .relation = relation,
	                            .subject_type = "user",
	                            .subject_id = user};
}

static int write_one(pemba_db *db, pemba_operation op, pemba_relationship r,
                     const pemba_write_options *opts, pemba_error *err)
{
	pemba_update u = {.op = op, .rel = r};
	return pemba_write_relationships_ex(db, &u, 1, NULL, 0, opts, NULL,
	                                    err);
}

static int count_fn(void *ctx, const pemba_relationship *r)
{
	(*(size_t *)ctx)++;
	return 0;
}

static size_t count_docs(pemba_db *db)
{
	size_t n = 0;
	pemba_error err = {0};
	pemba_filter f = {.resource_type = "document"};
	assert_int_equal(pemba_read_relationships(db, PEMBA_REVISION_HEAD, &f,
	                                          NULL, 0, count_fn, &n, &err),
	                 0);
	return n;
}

static pemba_revision head(pemba_db *db)
{
	pemba_revision rev;
	pemba_error err = {0};
	assert_int_equal(pemba_head_revision(db, &rev, &err), 0);
	return rev;
}

static int is_read_only(pemba_db *db)
{
	int on = -1;
	pemba_error err = {0};
	assert_int_equal(pemba_get_read_only(db, &on, &err), 0);
	return on;
}

#define READ_ONLY_TEXT "read-only mode: writes are refused until"

/* ====================================================== read-only mode */

static void read_only_refuses_every_write_and_changes_nothing(void **state)
{
	pemba_db *db = setup("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 0);
	assert_int_equal(is_read_only(db), 0);
	assert_int_equal(pemba_set_read_only(db, 1, &err), 0);
	assert_int_equal(is_read_only(db), 1);
	pemba_revision before = head(db);

	/* Relationship writes: CREATE, TOUCH and DELETE. */
	pemba_operation ops[] = {PEMBA_OP_CREATE, PEMBA_OP_TOUCH,
	                         PEMBA_OP_DELETE};
	for (size_t i = 0; i < 3; i++) {
		memset(&err, 0, sizeof(err));
		assert_int_equal(
		    write_one(db, ops[i],
		              rel("1", "viewer", i == 2 ? "anne" : "bob"), NULL,
		              &err),
		    PEMBA_EREADONLY);
		assert_int_equal(err.code, PEMBA_EREADONLY);
		assert_non_null(strstr(err.message, READ_ONLY_TEXT));
		assert_non_null(
		    strstr(err.message, "`pemba admin read-only off`"));
	}

	/* Delete by filter. */
	pemba_filter f = {.resource_type = "document"};
	size_t deleted = 99;
	assert_int_equal(pemba_delete_relationships(db, &f, NULL, 0, 0, 0, NULL,
	                                            &deleted, NULL, &err),
	                 PEMBA_EREADONLY);
	assert_non_null(strstr(err.message, READ_ONLY_TEXT));

	/* Bulk import: refused when it begins. */
	pemba_import *imp = NULL;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err),
	                 PEMBA_EREADONLY);
	assert_null(imp);
	assert_non_null(strstr(err.message, READ_ONLY_TEXT));

	/* Nothing changed, no revision was used, reads work. */
	assert_int_equal(head(db), before);
	assert_int_equal(count_docs(db), 1);
	pemba_check_request req = {.resource_type = "document",
	                           .resource_id = "1",
	                           .permission = "view",
	                           .subject_type = "user",
	                           .subject_id = "anne"};
	pemba_permissionship p;
	assert_int_equal(pemba_check_permission(db, 0, &req, &p, &err), 0);
	assert_int_equal(p, PEMBA_HAS_PERMISSION);
	char *text = NULL;
	assert_int_equal(pemba_read_schema(db, 0, &text, &err), 0);
	pemba_free(text);

	/* Off again: writes go through. */
	assert_int_equal(pemba_set_read_only(db, 0, &err), 0);
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("1", "viewer", "bob"), NULL, &err),
	                 0);
	assert_int_equal(count_docs(db), 2);
	pemba_close(db);
}

/* Schema writes check the flag inside their transaction too
 * (core_check_writable, called by src/core/schema_ops.c). */
static void read_only_refuses_schema_writes(void **state)
{
	pemba_db *db = setup("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(pemba_set_read_only(db, 1, &err), 0);
	pemba_revision before = head(db);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err),
	    PEMBA_EREADONLY);
	assert_non_null(strstr(err.message, READ_ONLY_TEXT));
	assert_int_equal(head(db), before);
	assert_int_equal(pemba_set_read_only(db, 0, &err), 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	pemba_close(db);
}

static void read_only_is_stored_in_the_datastore(void **state)
{
	make_tmpdir();
	const char *uri = file_uri("ro.db");
	pemba_db *db = setup(uri);
	pemba_db *clone = NULL;
	pemba_error err = {0};
	assert_int_equal(pemba_clone(db, &clone, &err), 0);

	/* Set through one handle: the other one refuses at once. */
	assert_int_equal(pemba_set_read_only(db, 1, &err), 0);
	assert_int_equal(is_read_only(clone), 1);
	assert_int_equal(write_one(clone, PEMBA_OP_TOUCH,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 PEMBA_EREADONLY);
	pemba_close(clone);
	pemba_close(db);

	/* Survives closing and reopening. */
	db = open_db(uri);
	assert_int_equal(is_read_only(db), 1);
	assert_int_equal(write_one(db, PEMBA_OP_TOUCH,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 PEMBA_EREADONLY);
	assert_int_equal(pemba_set_read_only(db, 0, &err), 0);
	pemba_close(db);
	db = open_db(uri);
	assert_int_equal(is_read_only(db), 0);
	assert_int_equal(write_one(db, PEMBA_OP_TOUCH,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 0);
	pemba_close(db);
	remove_tmpdir();
}

/* The flag is read inside the write transaction.  An open import holds
 * no lock, so a toggle made meanwhile through another handle goes through
 * at once, and binds the import: its commit is refused whole. */
static void toggle_binds_an_open_import_at_commit(void **state)
{
	make_tmpdir();
	pemba_db *db = setup(file_uri("race.db"));
	pemba_db *other;
	pemba_error err = {0};
	assert_int_equal(pemba_clone(db, &other, &err), 0);
	pemba_import *imp;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	pemba_relationship r = rel("9", "viewer", "zoe");
	assert_int_equal(pemba_import_add(imp, &r, 1, &err), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(pemba_set_read_only(other, 1, &err), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 2); /* not the 5 s busy wait */
	pemba_revision before = head(db);
	size_t docs = count_docs(db);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err),
	                 PEMBA_EREADONLY);
	assert_non_null(strstr(err.message, READ_ONLY_TEXT));
	assert_int_equal(head(db), before);
	assert_int_equal(count_docs(db), docs);
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err),
	                 PEMBA_EREADONLY);
	pemba_close(other);
	pemba_close(db);
	remove_tmpdir();
}

/* ======================================================== deprecation */

typedef struct warnings {
	int calls;
	uint64_t count;
	char relation[64];
	char example[256];
	char message[1024];
} warnings;

static void on_deprecated(void *ctx, const pemba_deprecation_warning *w)
{
	warnings *seen = ctx;
	seen->calls++;
	seen->count = w->count;
	snprintf(seen->relation, sizeof(seen->relation), "%s#%s",
	         w->resource_type, w->relation);
	snprintf(seen->example, sizeof(seen->example), "%s", w->example);
	snprintf(seen->message, sizeof(seen->message), "%s", w->message);
}

static void deprecating_needs_a_relation_of_the_schema(void **state)
{
	pemba_db *db = open_db("sqlite::memory:");
	pemba_error err = {0};
	/* No schema yet. */
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "`document` not found"));
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	assert_int_equal(pemba_deprecate_relation(db, "document", "owner",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(
	    strstr(err.message, "relation or permission `owner` not found"));
	assert_int_equal(pemba_deprecate_relation(db, "folder", "viewer",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 PEMBA_EPRECONDITION);
	/* A permission can be deprecated (its reads are what servers
	 * count), and lifted again. */
	assert_int_equal(pemba_deprecate_relation(db, "document", "view",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	int was = 0;
	assert_int_equal(
	    pemba_undeprecate_relation(db, "document", "view", &was, &err), 0);
	assert_int_equal(was, 1);
	assert_int_equal(pemba_deprecate_relation(db, "Document", "viewer",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 PEMBA_EINVAL);
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          (pemba_deprecation_mode)7,
	                                          &err),
	                 PEMBA_EINVAL);
	pemba_deprecation *list;
	size_t n = 9;
	assert_int_equal(pemba_list_deprecations(db, &list, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_null(list);
	pemba_close(db);
}

static void deprecations_are_listed_replaced_and_lifted(void **state)
{
	pemba_db *db = setup("sqlite::memory:");
	pemba_error err = {0};
	pemba_revision at = head(db);
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 0);
	assert_int_equal(pemba_deprecate_relation(db, "group", "member",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	/* Again, with another mode: replaces it. */
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	/* Settings are not revisions. */
	assert_int_equal(head(db), at);
	pemba_deprecation *list;
	size_t n;
	assert_int_equal(pemba_list_deprecations(db, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].resource_type, "document");
	assert_string_equal(list[0].relation, "viewer");
	assert_int_equal(list[0].mode, PEMBA_DEPRECATION_REJECT);
	assert_int_equal(list[0].set_at, at);
	assert_true(list[0].set_at_ms > 1700000000000LL);
	assert_string_equal(list[1].resource_type, "group");
	assert_string_equal(list[1].relation, "member");
	pemba_free(list);

	int was = -1;
	assert_int_equal(
	    pemba_undeprecate_relation(db, "group", "member", &was, &err), 0);
	assert_int_equal(was, 1);
	assert_int_equal(
	    pemba_undeprecate_relation(db, "group", "member", &was, &err), 0);
	assert_int_equal(was, 0);
	assert_int_equal(
	    pemba_undeprecate_relation(db, "group", "", &was, &err),
	    PEMBA_EINVAL);
	assert_int_equal(pemba_list_deprecations(db, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].relation, "viewer");
	pemba_free(list);
	pemba_close(db);
}

static void reject_mode_refuses_create_and_touch_but_not_delete(void **state)
{
	pemba_db *db = setup("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 0);
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	pemba_revision before = head(db);
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("2", "viewer", "bob"), NULL, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "`document#viewer` is "
	                                    "deprecated (reject)"));
	assert_non_null(strstr(err.message, "document:2#viewer@user:bob"));
	/* TOUCH of an existing relationship is a write too. */
	assert_int_equal(write_one(db, PEMBA_OP_TOUCH,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 PEMBA_EPRECONDITION);
	/* A batch with one refused update changes nothing. */
	pemba_update batch[2] = {
	    {.op = PEMBA_OP_CREATE, .rel = rel("3", "reader", "carl")},
	    {.op = PEMBA_OP_TOUCH, .rel = rel("3", "viewer", "carl")},
	};
	assert_int_equal(
	    pemba_write_relationships(db, batch, 2, NULL, 0, NULL, &err),
	    PEMBA_EPRECONDITION);
	assert_int_equal(head(db), before);
	assert_int_equal(count_docs(db), 1);
	/* Other relations of the type are not affected. */
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("3", "reader", "carl"), NULL, &err),
	                 0);
	/* A subject relation that is deprecated does not matter. */
	assert_int_equal(pemba_deprecate_relation(db, "group", "member",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	pemba_update via_group = {.op = PEMBA_OP_CREATE,
	                          .rel = {.resource_type = "document",
	                                  .resource_id = "4",
	                                  .relation = "reader",
	                                  .subject_type = "group",
	                                  .subject_id = "eng",
	                                  .subject_relation = "member"}};
	assert_int_equal(
	    pemba_write_relationships(db, &via_group, 1, NULL, 0, NULL, &err),
	    0);

	/* Deleting is how data moves off it: allowed, by update and by
	 * filter. */
	assert_int_equal(write_one(db, PEMBA_OP_DELETE,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 0);
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("5", "reader", "erin"), NULL, &err),
	                 0);
	pemba_filter f = {.resource_type = "document", .relation = "viewer"};
	size_t deleted = 9;
	assert_int_equal(pemba_delete_relationships(db, &f, NULL, 0, 0, 0, NULL,
	                                            &deleted, NULL, &err),
	                 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(count_docs(db), 3);

	/* Lifted: writes are accepted again. */
	assert_int_equal(
	    pemba_undeprecate_relation(db, "document", "viewer", NULL, &err),
	    0);
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("2", "viewer", "bob"), NULL, &err),
	                 0);
	pemba_close(db);
}

static void warn_mode_writes_and_reports_once_per_relation(void **state)
{
	pemba_db *db = setup("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 0);
	warnings seen = {0};
	pemba_write_options opts = {.on_deprecated = on_deprecated,
	                            .on_deprecated_ctx = &seen};
	pemba_update batch[4] = {
	    {.op = PEMBA_OP_CREATE, .rel = rel("1", "viewer", "anne")},
	    {.op = PEMBA_OP_TOUCH, .rel = rel("2", "viewer", "bob")},
	    {.op = PEMBA_OP_CREATE, .rel = rel("1", "reader", "carl")},
	    {.op = PEMBA_OP_DELETE, .rel = rel("9", "viewer", "nobody")},
	};
	assert_int_equal(pemba_write_relationships_ex(db, batch, 4, NULL, 0,
	                                              &opts, NULL, &err),
	                 0);
	assert_int_equal(count_docs(db), 3);
	assert_int_equal(seen.calls, 1);
	assert_int_equal(seen.count, 2); /* the DELETE does not count */
	assert_string_equal(seen.relation, "document#viewer");
	assert_string_equal(seen.example, "document:1#viewer@user:anne");
	assert_non_null(strstr(seen.message, "document#viewer"));
	assert_non_null(strstr(seen.message, "2 relationships"));

	/* A write that fails reports nothing. */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("1", "viewer", "anne"), &opts, &err),
	                 PEMBA_EEXISTS);
	assert_int_equal(seen.calls, 0);
	/* Writes without the callback simply succeed. */
	assert_int_equal(write_one(db, PEMBA_OP_TOUCH,
	                           rel("3", "viewer", "anne"), NULL, &err),
	                 0);
	/* Deletes report nothing. */
	assert_int_equal(write_one(db, PEMBA_OP_DELETE,
	                           rel("3", "viewer", "anne"), &opts, &err),
	                 0);
	assert_int_equal(seen.calls, 0);
	pemba_close(db);
}

static void import_obeys_deprecations(void **state)
{
	pemba_db *db = setup("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 0);
	assert_int_equal(pemba_deprecate_relation(db, "document", "reader",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	warnings seen = {0};
	pemba_write_options opts = {.on_deprecated = on_deprecated,
	                            .on_deprecated_ctx = &seen};

	/* WARN: imported, reported at commit with the count. */
	pemba_import *imp;
	assert_int_equal(
	    pemba_import_begin_ex(db, PEMBA_OP_CREATE, &opts, &imp, &err), 0);
	char ids[200][8];
	pemba_relationship rels[200];
	for (int i = 0; i < 200; i++) {
		snprintf(ids[i], sizeof(ids[i]), "u%d", i);
		rels[i] = rel("1", "viewer", ids[i]);
	}
	assert_int_equal(pemba_import_add(imp, rels, 200, &err), 0);
	assert_int_equal(seen.calls, 0); /* not before the commit */
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	assert_int_equal(seen.calls, 1);
	assert_int_equal(seen.count, 200);
	assert_string_equal(seen.example, "document:1#viewer@user:u0");
	assert_int_equal(count_docs(db), 200);

	/* REJECT: the row fails the import, nothing is written. */
	memset(&seen, 0, sizeof(seen));
	pemba_revision before = head(db);
	assert_int_equal(
	    pemba_import_begin_ex(db, PEMBA_OP_TOUCH, &opts, &imp, &err), 0);
	pemba_relationship mixed[2] = {rel("2", "viewer", "ann"),
	                               rel("2", "reader", "ann")};
	assert_int_equal(pemba_import_add(imp, mixed, 2, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "document:2#reader@user:ann"));
	pemba_import_abort(imp);
	assert_int_equal(seen.calls, 0);
	assert_int_equal(head(db), before);
	assert_int_equal(count_docs(db), 200);
	pemba_close(db);
}

/* The settings live in the datastore: a deprecation made through one
 * handle binds the writes of another. */
static void deprecation_is_seen_by_other_handles(void **state)
{
	pemba_db *db = setup("sqlite::memory:shared-dep");
	pemba_db *other = NULL;
	pemba_error err = {0};
	assert_int_equal(pemba_clone(db, &other, &err), 0);
	/* Warm the other handle's schema cache first. */
	assert_int_equal(write_one(other, PEMBA_OP_CREATE,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 0);
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	assert_int_equal(write_one(other, PEMBA_OP_CREATE,
	                           rel("2", "viewer", "anne"), NULL, &err),
	                 PEMBA_EPRECONDITION);
	pemba_close(other);
	pemba_close(db);
}

/* ======================================================= old datastores */

/* A datastore at layout 3 (before the settings) keeps its data, gains
 * the settings when opened (auto-migration), and a handle that refuses
 * to migrate refuses to open it, as for every older layout. */
static void old_datastore_is_migrated_on_open(void **state)
{
	make_tmpdir();
	const char *uri = file_uri("old.db");
	store_options none = {.migrate = STORE_MIGRATE_NONE};
	store *st;
	pemba_error err = {0};
	assert_int_equal(store_open(pg_fixture_uri(uri), &none, &st, &err), 0);
	assert_int_equal(store_migrate_up(st, 3, &err), 0);
	store_close(st);
	/* A layout-3 datastore has no settings table yet. */
	assert_int_equal(store_open(pg_fixture_uri(uri), &none, &st, &err), 0);
	bool on;
	assert_int_equal(store_get_read_only(st, &on, &err), PEMBA_EVERSION);
	store_close(st);

	pemba_options strict = {.no_auto_migrate = 1};
	pemba_db *db;
	assert_int_equal(pemba_open(pg_fixture_uri(uri), &strict, &db, &err),
	                 PEMBA_EVERSION);
	assert_non_null(strstr(err.message, "version 3"));

	db = setup(uri);
	assert_int_equal(is_read_only(db), 0);
	assert_int_equal(write_one(db, PEMBA_OP_CREATE,
	                           rel("1", "viewer", "anne"), NULL, &err),
	                 0);
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	assert_int_equal(pemba_set_read_only(db, 1, &err), 0);
	pemba_close(db);

	/* Down to 3 drops the settings (and only them); up again starts
	 * from the defaults. */
	assert_int_equal(store_open(pg_fixture_uri(uri), &none, &st, &err), 0);
	assert_int_equal(store_migrate_down(st, 3, &err), 0);
	store_close(st);
	db = open_db(uri);
	assert_int_equal(is_read_only(db), 0);
	pemba_deprecation *list;
	size_t n;
	assert_int_equal(pemba_list_deprecations(db, &list, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_int_equal(count_docs(db), 1);
	pemba_close(db);
	remove_tmpdir();
}

/* A deprecation does not outlive its relation: removing the relation from
 * the schema lifts it, so a relation of the same name added later starts
 * clean. */
static void deprecation_is_lifted_when_the_relation_goes(void **state)
{
	(void)state;
	pemba_db *db = setup("sqlite::memory:");
	pemba_error err = {0};
	assert_int_equal(pemba_deprecate_relation(db, "document", "reader",
	                                          PEMBA_DEPRECATION_REJECT,
	                                          &err),
	                 0);
	assert_int_equal(pemba_deprecate_relation(db, "document", "viewer",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 0);
	assert_int_equal(pemba_deprecate_relation(db, "document", "view",
	                                          PEMBA_DEPRECATION_WARN, &err),
	                 0);
	const char *without = "definition user {}\n"
	                      "definition group {\n  relation member: user\n}\n"
	                      "definition document {\n"
	                      "  relation viewer: user | group#member\n"
	                      "  permission view = viewer\n}\n";
	assert_int_equal(
	    pemba_write_schema(db, without, strlen(without), NULL, &err), 0);
	pemba_deprecation *deps = NULL;
	size_t n = 0;
	assert_int_equal(pemba_list_deprecations(db, &deps, &n, &err), 0);
	assert_int_equal(n, 2); /* the permission stays too */
	assert_string_equal(deps[0].relation, "view");
	assert_string_equal(deps[1].relation, "viewer");
	pemba_free(deps);
	/* `reader` comes back: writes to it are not refused. */
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	pemba_relationship r = rel("d1", "reader", "anne");
	pemba_update u = {.op = PEMBA_OP_TOUCH, .rel = r};
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err), 0);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(read_only_refuses_every_write_and_changes_nothing),
	    cmocka_unit_test(read_only_refuses_schema_writes),
	    cmocka_unit_test(read_only_is_stored_in_the_datastore),
	    cmocka_unit_test(toggle_binds_an_open_import_at_commit),
	    cmocka_unit_test(deprecating_needs_a_relation_of_the_schema),
	    cmocka_unit_test(deprecations_are_listed_replaced_and_lifted),
	    cmocka_unit_test(
	        reject_mode_refuses_create_and_touch_but_not_delete),
	    cmocka_unit_test(warn_mode_writes_and_reports_once_per_relation),
	    cmocka_unit_test(import_obeys_deprecations),
	    cmocka_unit_test(deprecation_is_seen_by_other_handles),
	    cmocka_unit_test(old_datastore_is_migrated_on_open),
	    cmocka_unit_test(deprecation_is_lifted_when_the_relation_goes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
