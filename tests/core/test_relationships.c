/*
 * test_relationships.c -- the relationship and schema parts of the public
 * API: writes (CREATE / TOUCH / DELETE), preconditions, validation,
 * deletes by filter, reads with pagination, MVCC, and persistence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pemba.h"
#include "pg_fixture.h"

/* ------------------------------------------------------------- helpers */

/* "type:id#rel@type:id[#rel]" parsed into its own buffer; this test does
 * not depend on the real parser in src/core/relstring.c. */
typedef struct test_rel {
	char buf[4096];
	pemba_relationship rel;
} test_rel;

static void test_rel_parse(test_rel *t, const char *s)
{
	memset(t, 0, sizeof(*t));
	assert_true(strlen(s) < sizeof(t->buf));
	strcpy(t->buf, s);
	char *p = t->buf;
	char *at = strchr(p, '@');
	assert_non_null(at);
	*at = '\0';
	char *colon = strchr(p, ':'), *hash = strchr(p, '#');
	assert_non_null(colon);
	assert_non_null(hash);
	*colon = *hash = '\0';
	t->rel.resource_type = p;
	t->rel.resource_id = colon + 1;
	t->rel.relation = hash + 1;
	p = at + 1;
	colon = strchr(p, ':');
	assert_non_null(colon);
	*colon = '\0';
	t->rel.subject_type = p;
	t->rel.subject_id = colon + 1;
	hash = strchr(colon + 1, '#');
	if (hash) {
		*hash = '\0';
		t->rel.subject_relation = hash + 1;
	}
}

static const char *SCHEMA = "definition user {}\n"
                            "definition bot {}\n"
                            "definition group {\n"
                            "  relation member: user | group#member\n"
                            "}\n"
                            "definition document {\n"
                            "  relation viewer: user | group#member\n"
                            "  relation public: user:*\n"
                            "  relation banned: user\n"
                            "  permission view = viewer + public - banned\n"
                            "}\n";

static pemba_db *open_db(void)
{
	pemba_db *db = NULL;
	pemba_error err;
	if (pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err) != 0)
		fail_msg("open: %s", err.message);
	return db;
}

static pemba_revision write_schema(pemba_db *db, const char *text)
{
	pemba_error err;
	pemba_revision rev = 0;
	if (pemba_write_schema(db, text, strlen(text), &rev, &err) != 0)
		fail_msg("write schema: %s", err.message);
	return rev;
}

static pemba_db *setup(void)
{
	pemba_db *db = open_db();
	write_schema(db, SCHEMA);
	return db;
}

/* One update of `op` for each relationship in a NULL-terminated list. */
static int write_op(pemba_db *db, pemba_operation op, const char *const *rels,
                    pemba_revision *rev, pemba_error *err)
{
	size_t n = 0;
	while (rels[n])
		n++;
	test_rel *t = calloc(n ? n : 1, sizeof(*t));
	pemba_update *u = calloc(n ? n : 1, sizeof(*u));
	for (size_t i = 0; i < n; i++) {
		test_rel_parse(&t[i], rels[i]);
		u[i].op = op;
		u[i].rel = t[i].rel;
	}
	int rc = pemba_write_relationships(db, u, n, NULL, 0, rev, err);
	free(t);
	free(u);
	return rc;
}

static pemba_revision write_ok(pemba_db *db, pemba_operation op,
                               const char *const *rels)
{
	pemba_error err;
	pemba_revision rev = 0;
	if (write_op(db, op, rels, &rev, &err) != 0)
		fail_msg("write: %s", err.message);
	return rev;
}

static int write_one(pemba_db *db, pemba_operation op, const char *rel,
                     pemba_error *err)
{
	const char *rels[] = {rel, NULL};
	return write_op(db, op, rels, NULL, err);
}

/* Collects what a read returns as text, one relationship a line. */
typedef struct collected {
	char text[65536];
	size_t len;
	int count;
	test_rel last;
	char last_text[512];
} collected;

static int collect(void *ctx, const pemba_relationship *r)
{
	collected *c = ctx;
	char line[512];
	snprintf(line, sizeof(line), "%s:%s#%s@%s:%s%s%s%s\n", r->resource_type,
	         r->resource_id, r->relation, r->subject_type, r->subject_id,
	         r->subject_relation ? "#" : "",
	         r->subject_relation ? r->subject_relation : "",
	         r->caveat_name ? "[caveat]" : "");
	/* The contract: no subject relation is NULL, never "" or "...". */
	if (r->subject_relation)
		assert_true(r->subject_relation[0] != '\0' &&
		            strcmp(r->subject_relation, "...") != 0);
	size_t n = strlen(line);
	assert_true(c->len + n < sizeof(c->text));
	memcpy(c->text + c->len, line, n + 1);
	c->len += n;
	c->count++;
	line[n - 1] = '\0';
	snprintf(c->last_text, sizeof(c->last_text), "%s", line);
	return 0;
}

static void read_all(pemba_db *db, pemba_revision at, const char *type,
                     collected *c)
{
	memset(c, 0, sizeof(*c));
	pemba_filter f = {.resource_type = type};
	pemba_error err;
	if (pemba_read_relationships(db, at, &f, NULL, 0, collect, c, &err))
		fail_msg("read: %s", err.message);
}

/* Everything in the datastore, as text, for before/after comparisons. */
static char *snapshot(pemba_db *db)
{
	collected *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	read_all(db, 0, "document", a);
	read_all(db, 0, "group", b);
	size_t n = a->len + b->len + 64;
	char *s = malloc(n);
	pemba_revision head = 0;
	pemba_head_revision(db, &head, NULL);
	snprintf(s, n, "head=%llu\n%s%s", (unsigned long long)head, a->text,
	         b->text);
	free(a);
	free(b);
	return s;
}

static int check_at(pemba_db *db, pemba_revision at, const char *resource,
                    const char *perm, const char *subject_id)
{
	char type[64], id[256];
	assert_int_equal(sscanf(resource, "%63[^:]:%255s", type, id), 2);
	pemba_check_request req = {
	    .resource_type = type,
	    .resource_id = id,
	    .permission = perm,
	    .subject_type = "user",
	    .subject_id = subject_id,
	};
	pemba_permissionship p;
	pemba_error err;
	int rc = pemba_check_permission(db, at, &req, &p, &err);
	if (rc < 0)
		fail_msg("check: %s", err.message);
	return p == PEMBA_HAS_PERMISSION;
}

/* Asserts a single-relationship write fails with `code`, a message
 * containing `needle`, and leaves the datastore unchanged. */
static void expect_refused(pemba_db *db, pemba_operation op, const char *rel,
                           int code, const char *needle)
{
	char *before = snapshot(db);
	pemba_error err;
	int rc = write_one(db, op, rel, &err);
	if (rc != code)
		fail_msg("%s: expected %d, got %d (%s)", rel, code, rc,
		         rc ? err.message : "ok");
	if (strstr(err.message, needle) == NULL)
		fail_msg("%s: message `%s` lacks `%s`", rel, err.message,
		         needle);
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

/* ----------------------------------------------------------- operations */

static void test_create_of_existing_relationship_fails(void **state)
{
	pemba_db *db = setup();
	const char *rels[] = {"document:1#viewer@user:anne", NULL};
	write_ok(db, PEMBA_OP_CREATE, rels);
	expect_refused(db, PEMBA_OP_CREATE, "document:1#viewer@user:anne",
	               PEMBA_EEXISTS, "document:1#viewer@user:anne");
	/* a batch with one conflicting CREATE writes none of the others */
	const char *batch[] = {"document:2#viewer@user:bob",
	                       "document:1#viewer@user:anne", NULL};
	char *before = snapshot(db);
	pemba_error err;
	assert_int_equal(write_op(db, PEMBA_OP_CREATE, batch, NULL, &err),
	                 PEMBA_EEXISTS);
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	pemba_close(db);
}

static void test_touch_is_idempotent(void **state)
{
	pemba_db *db = setup();
	const char *rels[] = {"document:1#viewer@user:anne", NULL};
	pemba_revision r1 = write_ok(db, PEMBA_OP_TOUCH, rels);
	pemba_revision r2 = write_ok(db, PEMBA_OP_TOUCH, rels);
	assert_true(r2 > r1);
	collected *c = calloc(1, sizeof(*c));
	read_all(db, 0, "document", c);
	assert_int_equal(c->count, 1);
	assert_string_equal(c->text, "document:1#viewer@user:anne\n");
	free(c);
	pemba_close(db);
}

static void test_delete_of_absent_relationship_is_a_noop(void **state)
{
	pemba_db *db = setup();
	const char *keep[] = {"document:1#viewer@user:anne", NULL};
	write_ok(db, PEMBA_OP_TOUCH, keep);
	const char *gone[] = {"document:1#viewer@user:bob", NULL};
	pemba_revision r = write_ok(db, PEMBA_OP_DELETE, gone);
	pemba_revision head;
	assert_int_equal(pemba_head_revision(db, &head, NULL), 0);
	assert_int_equal(r, head);
	write_ok(db, PEMBA_OP_DELETE, keep);
	collected *c = calloc(1, sizeof(*c));
	read_all(db, 0, "document", c);
	assert_int_equal(c->count, 0);
	free(c);
	pemba_close(db);
}

/* -------------------------------------------------------- preconditions */

static int write_with_precondition(pemba_db *db, const char *rel,
                                   pemba_precondition_op op,
                                   const pemba_filter *f, pemba_error *err)
{
	test_rel t;
	test_rel_parse(&t, rel);
	pemba_update u = {.op = PEMBA_OP_TOUCH, .rel = t.rel};
	pemba_precondition p = {.op = op, .filter = *f};
	return pemba_write_relationships(db, &u, 1, &p, 1, NULL, err);
}

static void test_must_match_precondition(void **state)
{
	pemba_db *db = setup();
	pemba_filter f = {.resource_type = "document",
	                  .resource_id = "1",
	                  .relation = "viewer",
	                  .subject_type = "user",
	                  .subject_id = "anne"};
	char *before = snapshot(db);
	pemba_error err;
	assert_int_equal(
	    write_with_precondition(db, "document:1#viewer@user:bob",
	                            PEMBA_PRECONDITION_MUST_MATCH, &f, &err),
	    PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "precondition"));
	assert_non_null(strstr(err.message, "resource_id=1"));
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);

	const char *anne[] = {"document:1#viewer@user:anne", NULL};
	write_ok(db, PEMBA_OP_TOUCH, anne);
	assert_int_equal(
	    write_with_precondition(db, "document:1#viewer@user:bob",
	                            PEMBA_PRECONDITION_MUST_MATCH, &f, &err),
	    0);
	assert_int_equal(check_at(db, 0, "document:1", "view", "bob"), 1);
	pemba_close(db);
}

static void test_must_not_match_precondition(void **state)
{
	pemba_db *db = setup();
	pemba_filter f = {.resource_type = "document", .relation = "banned"};
	pemba_error err;
	assert_int_equal(write_with_precondition(
	                     db, "document:1#viewer@user:bob",
	                     PEMBA_PRECONDITION_MUST_NOT_MATCH, &f, &err),
	                 0);
	const char *ban[] = {"document:7#banned@user:eve", NULL};
	write_ok(db, PEMBA_OP_TOUCH, ban);
	char *before = snapshot(db);
	assert_int_equal(write_with_precondition(
	                     db, "document:1#viewer@user:carl",
	                     PEMBA_PRECONDITION_MUST_NOT_MATCH, &f, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "MUST_NOT_MATCH"));
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	pemba_close(db);
}

static void test_precondition_on_unknown_type_is_refused(void **state)
{
	pemba_db *db = setup();
	pemba_filter f = {.resource_type = "widget"};
	pemba_error err;
	assert_int_equal(write_with_precondition(
	                     db, "document:1#viewer@user:bob",
	                     PEMBA_PRECONDITION_MUST_NOT_MATCH, &f, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "`widget` not found"));
	pemba_close(db);
}

/* ---------------------------------------------------- delete by filter */

static void write_five_viewers(pemba_db *db)
{
	const char *rels[] = {"document:1#viewer@user:a",
	                      "document:1#viewer@user:b",
	                      "document:1#viewer@user:c",
	                      "document:1#viewer@user:d",
	                      "document:1#viewer@user:e",
	                      "document:2#viewer@user:a",
	                      NULL};
	write_ok(db, PEMBA_OP_TOUCH, rels);
}

static void test_delete_by_filter_deletes_matches_only(void **state)
{
	pemba_db *db = setup();
	write_five_viewers(db);
	pemba_filter f = {.resource_type = "document", .resource_id = "1"};
	size_t deleted = 99;
	int more = 7;
	pemba_revision rev = 0;
	pemba_error err;
	assert_int_equal(pemba_delete_relationships(db, &f, NULL, 0, 0, 0, &rev,
	                                            &deleted, &more, &err),
	                 0);
	assert_int_equal(deleted, 5);
	assert_int_equal(more, 0);
	assert_true(rev > 0);
	collected *c = calloc(1, sizeof(*c));
	read_all(db, 0, "document", c);
	assert_string_equal(c->text, "document:2#viewer@user:a\n");
	free(c);
	pemba_close(db);
}

static void test_delete_over_limit_without_partial_deletes_nothing(void **state)
{
	pemba_db *db = setup();
	write_five_viewers(db);
	pemba_filter f = {.resource_type = "document", .relation = "viewer"};
	char *before = snapshot(db);
	size_t deleted;
	int more;
	pemba_error err;
	assert_int_equal(pemba_delete_relationships(db, &f, NULL, 0, 2, 0, NULL,
	                                            &deleted, &more, &err),
	                 PEMBA_ELIMIT);
	assert_non_null(strstr(err.message, "more than 2"));
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	pemba_close(db);
}

static void test_delete_with_partial_deletes_up_to_limit(void **state)
{
	pemba_db *db = setup();
	write_five_viewers(db);
	pemba_filter f = {.resource_type = "document", .relation = "viewer"};
	size_t deleted = 0;
	int more = 0;
	pemba_error err;
	assert_int_equal(pemba_delete_relationships(db, &f, NULL, 0, 4, 1, NULL,
	                                            &deleted, &more, &err),
	                 0);
	assert_int_equal(deleted, 4);
	assert_int_equal(more, 1);
	assert_int_equal(pemba_delete_relationships(db, &f, NULL, 0, 4, 1, NULL,
	                                            &deleted, &more, &err),
	                 0);
	assert_int_equal(deleted, 2);
	assert_int_equal(more, 0);
	/* exactly `limit` matches is not "more than limit" */
	write_five_viewers(db);
	f.resource_id = "1";
	assert_int_equal(pemba_delete_relationships(db, &f, NULL, 0, 5, 0, NULL,
	                                            &deleted, &more, &err),
	                 0);
	assert_int_equal(deleted, 5);
	pemba_close(db);
}

static void test_delete_filter_is_validated(void **state)
{
	pemba_db *db = setup();
	write_five_viewers(db);
	pemba_error err;
	pemba_filter unknown = {.resource_type = "widget"};
	assert_int_equal(pemba_delete_relationships(db, &unknown, NULL, 0, 0, 0,
	                                            NULL, NULL, NULL, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "object definition `widget`"));
	pemba_filter bad_rel = {.resource_type = "document",
	                        .relation = "owner"};
	assert_int_equal(pemba_delete_relationships(db, &bad_rel, NULL, 0, 0, 0,
	                                            NULL, NULL, NULL, &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "`owner` not found"));
	pemba_filter no_type = {.subject_type = "user"};
	assert_int_equal(pemba_delete_relationships(db, &no_type, NULL, 0, 0, 0,
	                                            NULL, NULL, NULL, &err),
	                 PEMBA_EINVAL);
	/* with a failing precondition nothing is deleted */
	pemba_filter all = {.resource_type = "document"};
	pemba_precondition p = {
	    .op = PEMBA_PRECONDITION_MUST_MATCH,
	    .filter = {.resource_type = "group"},
	};
	char *before = snapshot(db);
	assert_int_equal(pemba_delete_relationships(db, &all, &p, 1, 0, 0, NULL,
	                                            NULL, NULL, &err),
	                 PEMBA_EPRECONDITION);
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	pemba_close(db);
}

/* ----------------------------------------------------------- validation */

static void test_every_validation_error_names_the_relationship(void **state)
{
	pemba_db *db = setup();
	const char *seed[] = {"document:1#viewer@user:anne", NULL};
	write_ok(db, PEMBA_OP_TOUCH, seed);

	expect_refused(db, PEMBA_OP_TOUCH, "widget:1#viewer@user:anne",
	               PEMBA_EPRECONDITION, "object definition `widget`");
	expect_refused(db, PEMBA_OP_TOUCH, "widget:1#viewer@user:anne",
	               PEMBA_EPRECONDITION, "widget:1#viewer@user:anne");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewr@user:anne",
	               PEMBA_EPRECONDITION,
	               "relation/permission `viewr` not found under "
	               "definition `document`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#view@user:anne",
	               PEMBA_EINVAL,
	               "cannot write a relationship to permission `view`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewer@bot:b1",
	               PEMBA_EINVAL,
	               "subjects of type `bot` are not allowed on relation "
	               "`document#viewer`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewer@bot:b1",
	               PEMBA_EINVAL, "document:1#viewer@bot:b1");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewer@user:*",
	               PEMBA_EINVAL, "subjects of type `user:*`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#public@user:anne",
	               PEMBA_EINVAL, "subjects of type `user` are not allowed");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#banned@group:g#member",
	               PEMBA_EINVAL, "subjects of type `group#member`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewer@robot:r",
	               PEMBA_EPRECONDITION, "object definition `robot`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewer@group:g#owner",
	               PEMBA_EPRECONDITION,
	               "relation/permission `owner` not found under "
	               "definition `group`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:a b#viewer@user:anne",
	               PEMBA_EINVAL, "invalid resource id `a b`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:*#viewer@user:anne",
	               PEMBA_EINVAL, "wildcard");
	expect_refused(db, PEMBA_OP_TOUCH, "Document:1#viewer@user:anne",
	               PEMBA_EINVAL, "invalid resource type `Document`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#Viewer@user:anne",
	               PEMBA_EINVAL, "invalid relation `Viewer`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewer@user:an!ne",
	               PEMBA_EINVAL, "invalid subject id `an!ne`");
	expect_refused(db, PEMBA_OP_TOUCH, "document:1#viewer@user:*#member",
	               PEMBA_EINVAL, "wildcard");

	/* object ids longer than 1024 bytes */
	char *rel = malloc(2048);
	strcpy(rel, "document:");
	memset(rel + 9, 'x', 1025);
	strcpy(rel + 9 + 1025, "#viewer@user:anne");
	expect_refused(db, PEMBA_OP_TOUCH, rel, PEMBA_EINVAL,
	               "more than the limit of 1024");
	/* exactly 1024 is fine */
	strcpy(rel + 9 + 1024, "#viewer@user:anne");
	pemba_error err;
	assert_int_equal(write_one(db, PEMBA_OP_TOUCH, rel, &err), 0);
	free(rel);
	pemba_close(db);
}

static void test_caveat_and_expiration_need_their_traits(void **state)
{
	pemba_db *db = setup();
	test_rel t;
	test_rel_parse(&t, "document:1#viewer@user:anne");
	pemba_update u = {.op = PEMBA_OP_TOUCH, .rel = t.rel};
	u.rel.caveat_name = "only_weekdays";
	char *before = snapshot(db);
	pemba_error err;
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err),
	    PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "user with only_weekdays"));
	assert_non_null(strstr(err.message, "document:1#viewer@user:anne"));
	u.rel.caveat_name = NULL;
	u.rel.expiration_ms = 1700000000000LL;
	/* document#viewer does not allow `user with expiration`. */
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, NULL, &err),
	    PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "`user with expiration` are not "
	                                    "allowed on relation "
	                                    "`document#viewer`"));
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	pemba_close(db);
}

static void test_duplicate_in_one_batch_is_refused(void **state)
{
	pemba_db *db = setup();
	const char *rels[] = {"document:1#viewer@user:anne",
	                      "document:2#viewer@user:anne",
	                      "document:1#viewer@user:anne", NULL};
	char *before = snapshot(db);
	pemba_error err;
	assert_int_equal(write_op(db, PEMBA_OP_TOUCH, rels, NULL, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "more than one update"));
	assert_non_null(strstr(err.message, "document:1#viewer@user:anne"));
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	/* "..." and no subject relation are the same relationship */
	const char *same[] = {"document:1#viewer@user:anne",
	                      "document:1#viewer@user:anne#...", NULL};
	assert_int_equal(write_op(db, PEMBA_OP_TOUCH, same, NULL, &err),
	                 PEMBA_EINVAL);
	pemba_close(db);
}

static void test_invalid_relationship_late_in_batch_writes_nothing(void **state)
{
	pemba_db *db = setup();
	const char *rels[] = {"document:1#viewer@user:anne",
	                      "document:2#viewer@user:bob",
	                      "document:3#viewer@bot:b", NULL};
	char *before = snapshot(db);
	pemba_error err;
	assert_int_equal(write_op(db, PEMBA_OP_TOUCH, rels, NULL, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "document:3#viewer@bot:b"));
	char *after = snapshot(db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	pemba_close(db);
}

static void test_write_without_schema_is_refused(void **state)
{
	pemba_db *db = open_db();
	pemba_error err;
	assert_int_equal(
	    write_one(db, PEMBA_OP_TOUCH, "document:1#viewer@user:anne", &err),
	    PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "object definition `document`"));
	char *text = NULL;
	assert_int_equal(pemba_read_schema(db, 0, &text, &err),
	                 PEMBA_ENOTFOUND);
	assert_string_equal(err.message, "no schema has been written");
	pemba_close(db);
}

/* --------------------------------------------------------------- limits */

static void test_update_and_precondition_limits(void **state)
{
	pemba_db *db = setup();
	size_t n = PEMBA_MAX_UPDATES + 1;
	pemba_update *u = calloc(n, sizeof(*u));
	char(*ids)[16] = calloc(n, sizeof(*ids));
	for (size_t i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "d%zu", i);
		u[i].op = PEMBA_OP_TOUCH;
		u[i].rel = (pemba_relationship){
		    .resource_type = "document",
		    .resource_id = ids[i],
		    .relation = "viewer",
		    .subject_type = "user",
		    .subject_id = "anne",
		};
	}
	pemba_error err;
	assert_int_equal(
	    pemba_write_relationships(db, u, n, NULL, 0, NULL, &err),
	    PEMBA_ELIMIT);
	assert_non_null(strstr(err.message, "1000"));
	assert_int_equal(
	    pemba_write_relationships(db, u, n - 1, NULL, 0, NULL, &err), 0);

	pemba_precondition *p = calloc(PEMBA_MAX_PRECONDITIONS + 1, sizeof(*p));
	for (size_t i = 0; i <= PEMBA_MAX_PRECONDITIONS; i++) {
		p[i].op = PEMBA_PRECONDITION_MUST_MATCH;
		p[i].filter.resource_type = "document";
	}
	assert_int_equal(pemba_write_relationships(db, u, 1, p,
	                                           PEMBA_MAX_PRECONDITIONS + 1,
	                                           NULL, &err),
	                 PEMBA_ELIMIT);
	assert_non_null(strstr(err.message, "preconditions"));
	assert_int_equal(pemba_write_relationships(
	                     db, u, 1, p, PEMBA_MAX_PRECONDITIONS, NULL, &err),
	                 0);
	free(p);
	free(u);
	free(ids);
	pemba_close(db);
}

/* ---------------------------------------------------------------- reads */

static void test_pagination_returns_every_row_once_in_order(void **state)
{
	pemba_db *db = setup();
	char buf[25][64];
	const char *rels[26];
	for (int i = 0; i < 25; i++) {
		snprintf(buf[i], sizeof(buf[i]),
		         "document:%c%d#viewer@user:u%d", 'a' + i % 3, i, i);
		rels[i] = buf[i];
	}
	rels[25] = NULL;
	write_ok(db, PEMBA_OP_TOUCH, rels);

	collected *all = calloc(1, sizeof(*all));
	read_all(db, 0, "document", all);
	assert_int_equal(all->count, 25);

	collected *pages = calloc(1, sizeof(*pages));
	pemba_filter f = {.resource_type = "document"};
	pemba_error err;
	int npages = 0;
	test_rel after;
	bool have_after = false;
	for (;;) {
		collected *page = calloc(1, sizeof(*page));
		assert_int_equal(pemba_read_relationships(
		                     db, 0, &f, have_after ? &after.rel : NULL,
		                     10, collect, page, &err),
		                 0);
		npages++;
		memcpy(pages->text + pages->len, page->text, page->len + 1);
		pages->len += page->len;
		pages->count += page->count;
		if (page->count < 10) {
			free(page);
			break;
		}
		test_rel_parse(&after, page->last_text);
		have_after = true;
		free(page);
	}
	assert_int_equal(npages, 3);
	assert_int_equal(pages->count, 25);
	assert_string_equal(pages->text, all->text);
	free(all);
	free(pages);
	pemba_close(db);
}

static int stop_after_one(void *ctx, const pemba_relationship *r)
{
	(void)r;
	++*(int *)ctx;
	return 1;
}

static void test_read_filters_and_early_stop(void **state)
{
	pemba_db *db = setup();
	const char *rels[] = {"document:1#viewer@user:anne",
	                      "document:1#viewer@group:eng#member",
	                      "group:eng#member@user:anne", NULL};
	write_ok(db, PEMBA_OP_TOUCH, rels);
	pemba_error err;

	collected *c = calloc(1, sizeof(*c));
	pemba_filter usersets = {.resource_type = "document",
	                         .subject_type = "group",
	                         .subject_relation = "member"};
	assert_int_equal(pemba_read_relationships(db, 0, &usersets, NULL, 0,
	                                          collect, c, &err),
	                 0);
	assert_string_equal(c->text, "document:1#viewer@group:eng#member\n");

	memset(c, 0, sizeof(*c));
	pemba_filter direct = {.resource_type = "document",
	                       .subject_type = "user",
	                       .subject_relation = "..."};
	assert_int_equal(
	    pemba_read_relationships(db, 0, &direct, NULL, 0, collect, c, &err),
	    0);
	assert_string_equal(c->text, "document:1#viewer@user:anne\n");

	/* subject-only filters use the reverse direction */
	memset(c, 0, sizeof(*c));
	pemba_filter by_subject = {.subject_type = "user",
	                           .subject_id = "anne"};
	assert_int_equal(pemba_read_relationships(db, 0, &by_subject, NULL, 0,
	                                          collect, c, &err),
	                 0);
	assert_int_equal(c->count, 2);

	int n = 0;
	pemba_filter all = {.resource_type = "document"};
	assert_int_equal(pemba_read_relationships(db, 0, &all, NULL, 0,
	                                          stop_after_one, &n, &err),
	                 0);
	assert_int_equal(n, 1);

	pemba_filter unknown = {.resource_type = "widget"};
	assert_int_equal(pemba_read_relationships(db, 0, &unknown, NULL, 0,
	                                          collect, c, &err),
	                 PEMBA_EPRECONDITION);
	pemba_filter none = {0};
	assert_int_equal(
	    pemba_read_relationships(db, 0, &none, NULL, 0, collect, c, &err),
	    PEMBA_EINVAL);
	free(c);
	pemba_close(db);
}

/* ----------------------------------------------------------------- MVCC */

static void test_old_revision_keeps_old_answers(void **state)
{
	pemba_db *db = setup();
	const char *anne[] = {"document:1#viewer@user:anne", NULL};
	pemba_revision r1 = write_ok(db, PEMBA_OP_TOUCH, anne);
	const char *ban[] = {"document:1#banned@user:anne", NULL};
	pemba_revision r2 = write_ok(db, PEMBA_OP_TOUCH, ban);
	assert_int_equal(check_at(db, r1, "document:1", "view", "anne"), 1);
	assert_int_equal(check_at(db, r2, "document:1", "view", "anne"), 0);
	assert_int_equal(check_at(db, 0, "document:1", "view", "anne"), 0);
	pemba_revision r3 = write_ok(db, PEMBA_OP_DELETE, anne);
	assert_int_equal(check_at(db, r1, "document:1", "view", "anne"), 1);
	assert_int_equal(check_at(db, r3, "document:1", "viewer", "anne"), 0);

	/* reads see the same history */
	collected *c = calloc(1, sizeof(*c));
	read_all(db, r1, "document", c);
	assert_string_equal(c->text, "document:1#viewer@user:anne\n");
	read_all(db, r3, "document", c);
	assert_string_equal(c->text, "document:1#banned@user:anne\n");
	free(c);

	/* a revision in the future is refused */
	pemba_check_request req = {.resource_type = "document",
	                           .resource_id = "1",
	                           .permission = "view",
	                           .subject_type = "user",
	                           .subject_id = "anne"};
	pemba_permissionship p;
	pemba_error err;
	assert_int_equal(pemba_check_permission(db, r3 + 100, &req, &p, &err),
	                 PEMBA_EREVISION);
	pemba_close(db);
}

static void test_schema_change_applies_from_its_revision(void **state)
{
	pemba_db *db = setup();
	const char *rels[] = {"document:1#viewer@user:anne",
	                      "document:1#banned@user:anne", NULL};
	pemba_revision r1 = write_ok(db, PEMBA_OP_TOUCH, rels);
	assert_int_equal(check_at(db, 0, "document:1", "view", "anne"), 0);

	/* view no longer subtracts banned */
	const char *v2 = "definition user {}\n"
	                 "definition bot {}\n"
	                 "definition group {\n"
	                 "  relation member: user | group#member\n"
	                 "}\n"
	                 "definition document {\n"
	                 "  relation viewer: user | group#member\n"
	                 "  relation public: user:*\n"
	                 "  relation banned: user\n"
	                 "  permission view = viewer\n"
	                 "  permission audit = banned\n"
	                 "}\n";
	pemba_revision r2 = write_schema(db, v2);
	assert_true(r2 > r1);
	assert_int_equal(check_at(db, 0, "document:1", "view", "anne"), 1);
	assert_int_equal(check_at(db, r1, "document:1", "view", "anne"), 0);
	assert_int_equal(check_at(db, r2, "document:1", "audit", "anne"), 1);

	/* `audit` does not exist at r1 */
	pemba_check_request req = {.resource_type = "document",
	                           .resource_id = "1",
	                           .permission = "audit",
	                           .subject_type = "user",
	                           .subject_id = "anne"};
	pemba_permissionship p;
	pemba_error err;
	assert_int_equal(pemba_check_permission(db, r1, &req, &p, &err),
	                 PEMBA_EPRECONDITION);

	/* the schema text follows the revision too */
	char *old_text = NULL, *new_text = NULL;
	assert_int_equal(pemba_read_schema(db, r1, &old_text, &err), 0);
	assert_int_equal(pemba_read_schema(db, 0, &new_text, &err), 0);
	assert_null(strstr(old_text, "audit"));
	assert_non_null(strstr(new_text, "audit"));
	pemba_free(old_text);
	pemba_free(new_text);
	pemba_close(db);
}

static void test_schema_written_by_another_handle_is_seen(void **state)
{
	char path[] = "/tmp/pemba_core_test_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	char uri[256];
	snprintf(uri, sizeof(uri), "sqlite://%s", path);

	pemba_db *a = NULL, *b = NULL;
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &a, &err), 0);
	write_schema(a, SCHEMA);
	const char *rels[] = {"document:1#viewer@user:anne",
	                      "document:1#banned@user:anne", NULL};
	write_ok(a, PEMBA_OP_TOUCH, rels);
	assert_int_equal(check_at(a, 0, "document:1", "view", "anne"), 0);

	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &b, &err), 0);
	const char *v2 = "definition user {}\n"
	                 "definition bot {}\n"
	                 "definition group {\n"
	                 "  relation member: user | group#member\n"
	                 "}\n"
	                 "definition document {\n"
	                 "  relation viewer: user | group#member\n"
	                 "  relation public: user:*\n"
	                 "  relation banned: user\n"
	                 "  permission view = viewer\n"
	                 "}\n";
	write_schema(b, v2);
	/* a's cache must not hide b's schema change */
	assert_int_equal(check_at(a, 0, "document:1", "view", "anne"), 1);
	pemba_close(a);
	pemba_close(b);
	unlink(path);
}

static void test_file_datastore_survives_reopen(void **state)
{
	char path[] = "/tmp/pemba_core_test_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	char uri[256];
	snprintf(uri, sizeof(uri), "sqlite://%s", path);

	pemba_db *db = NULL;
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &db, &err), 0);
	write_schema(db, SCHEMA);
	const char *rels[] = {"document:1#viewer@group:eng#member",
	                      "group:eng#member@user:anne", NULL};
	pemba_revision rev = write_ok(db, PEMBA_OP_TOUCH, rels);
	char *text1 = NULL;
	assert_int_equal(pemba_read_schema(db, 0, &text1, &err), 0);
	pemba_close(db);

	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &db, &err), 0);
	pemba_revision head = 0;
	assert_int_equal(pemba_head_revision(db, &head, &err), 0);
	assert_int_equal(head, rev);
	char *text2 = NULL;
	assert_int_equal(pemba_read_schema(db, 0, &text2, &err), 0);
	assert_string_equal(text1, text2);
	assert_int_equal(check_at(db, 0, "document:1", "view", "anne"), 1);
	assert_int_equal(check_at(db, 0, "document:1", "view", "bob"), 0);
	collected *c = calloc(1, sizeof(*c));
	read_all(db, 0, "group", c);
	assert_string_equal(c->text, "group:eng#member@user:anne\n");
	free(c);
	pemba_free(text1);
	pemba_free(text2);
	pemba_close(db);
	unlink(path);
}

static void test_check_schema_does_not_store(void **state)
{
	char *canonical = NULL;
	pemba_error err;
	assert_int_equal(
	    pemba_check_schema(SCHEMA, strlen(SCHEMA), &canonical, &err), 0);
	assert_non_null(strstr(canonical, "definition document"));
	pemba_free(canonical);
	const char *bad = "definition document { relation viewer: nobody }";
	assert_int_equal(pemba_check_schema(bad, strlen(bad), NULL, &err),
	                 PEMBA_EINVAL);
	pemba_db *db = open_db();
	assert_int_equal(pemba_write_schema(db, bad, strlen(bad), NULL, &err),
	                 PEMBA_EINVAL);
	pemba_revision head = 1;
	assert_int_equal(pemba_head_revision(db, &head, &err), 0);
	assert_int_equal(head, 0);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_of_existing_relationship_fails),
	    cmocka_unit_test(test_touch_is_idempotent),
	    cmocka_unit_test(test_delete_of_absent_relationship_is_a_noop),
	    cmocka_unit_test(test_must_match_precondition),
	    cmocka_unit_test(test_must_not_match_precondition),
	    cmocka_unit_test(test_precondition_on_unknown_type_is_refused),
	    cmocka_unit_test(test_delete_by_filter_deletes_matches_only),
	    cmocka_unit_test(
	        test_delete_over_limit_without_partial_deletes_nothing),
	    cmocka_unit_test(test_delete_with_partial_deletes_up_to_limit),
	    cmocka_unit_test(test_delete_filter_is_validated),
	    cmocka_unit_test(
	        test_every_validation_error_names_the_relationship),
	    cmocka_unit_test(test_caveat_and_expiration_need_their_traits),
	    cmocka_unit_test(test_duplicate_in_one_batch_is_refused),
	    cmocka_unit_test(
	        test_invalid_relationship_late_in_batch_writes_nothing),
	    cmocka_unit_test(test_write_without_schema_is_refused),
	    cmocka_unit_test(test_update_and_precondition_limits),
	    cmocka_unit_test(test_pagination_returns_every_row_once_in_order),
	    cmocka_unit_test(test_read_filters_and_early_stop),
	    cmocka_unit_test(test_old_revision_keeps_old_answers),
	    cmocka_unit_test(test_schema_change_applies_from_its_revision),
	    cmocka_unit_test(test_schema_written_by_another_handle_is_seen),
	    cmocka_unit_test(test_file_datastore_survives_reopen),
	    cmocka_unit_test(test_check_schema_does_not_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
