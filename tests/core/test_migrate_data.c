/*
 * test_migrate_data.c -- the data steps of a migration through the public
 * API: pemba_copy_relationships (every field preserved, subject-type
 * filter, subject mappings, idempotent re-runs, resuming from every
 * cursor, a copy racing a dual-writing thread that never writes back a
 * revoke, refusals before anything is written, cursors of another
 * datastore or a garbage-collected revision) and pemba_verify_permission (equal
 * and unequal permissions with wildcards, exclusions, caveats and nested
 * groups; limits; paging).
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
#include <pthread.h>
#include <stdatomic.h>

#include "pemba.h"
#include "pg_fixture.h"

static const char *SCHEMA =
    "use expiration\n"
    "caveat only_on(day int) {\n"
    "  day == 1\n"
    "}\n"
    "definition user {}\n"
    "definition user2 {}\n"
    "definition team {\n"
    "  relation member: user2\n"
    "}\n"
    "definition group {\n"
    "  relation member: user | group#member\n"
    "}\n"
    "definition document {\n"
    "  relation viewer: user | user:* | group#member | user with only_on | "
    "user with expiration\n"
    "  relation reader: user | user:* | group#member | user with only_on | "
    "user with expiration\n"
    "  relation limited: user | user:*\n"
    "  relation plain: user | group#member\n"
    "  relation banned: user\n"
    "  relation new_viewer: user2 | user2:* | team#member | user2 with "
    "only_on | user2 with expiration\n"
    "  permission view = viewer\n"
    "  permission read = reader\n"
    "  permission view_unbanned = viewer - banned\n"
    "  permission read_unbanned = reader - banned\n"
    "}\n"
    "definition folder {\n"
    "  relation viewer: user | user:* | group#member | user with only_on | "
    "user with expiration\n"
    "}\n";

/* ------------------------------------------------------------ helpers */

static pemba_db *open_db(const char *uri, int64_t gc_window)
{
	pemba_db *db;
	pemba_error err;
	pemba_options o = {.gc_window_seconds = gc_window};
	if (pemba_open(pg_fixture_uri(uri), &o, &db, &err) != 0)
		fail_msg("open: %s", err.message);
	if (pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err) != 0)
		fail_msg("schema: %s", err.message);
	return db;
}

/* TOUCHes (or DELETEs, op 3) the relationships given as strings. */
static void write_op(pemba_db *db, pemba_operation op, const char *const *texts,
                     size_t n)
{
	pemba_update u[64];
	char *storage[64];
	pemba_error err;
	assert_true(n <= 64);
	for (size_t i = 0; i < n; i++) {
		u[i].op = op;
		if (pemba_parse_relationship(texts[i], &u[i].rel, &storage[i],
		                             &err) != 0)
			fail_msg("parse %s: %s", texts[i], err.message);
	}
	if (pemba_write_relationships(db, u, n, NULL, 0, NULL, &err) != 0)
		fail_msg("write: %s", err.message);
	for (size_t i = 0; i < n; i++)
		pemba_free(storage[i]);
}

#define WRITE(db, ...)                                                         \
	do {                                                                   \
		const char *const t_[] = {__VA_ARGS__};                        \
		write_op(db, PEMBA_OP_TOUCH, t_, sizeof(t_) / sizeof(*t_));    \
	} while (0)
#define DELETE(db, ...)                                                        \
	do {                                                                   \
		const char *const t_[] = {__VA_ARGS__};                        \
		write_op(db, PEMBA_OP_DELETE, t_, sizeof(t_) / sizeof(*t_));   \
	} while (0)

/* The relationships of type#relation, formatted with the relation
 * replaced by "R" (so source and target compare), sorted, one per line. */
typedef struct dump {
	char *lines[4096];
	size_t n;
} dump;

static int dump_fn(void *ctx, const pemba_relationship *rel)
{
	dump *d = ctx;
	pemba_relationship r = *rel;
	r.relation = "rr";
	r.resource_type = "t";
	assert_true(d->n < 4096);
	d->lines[d->n++] = pemba_format_relationship(&r);
	return 0;
}

static int line_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *dump_relation(pemba_db *db, const char *type, const char *relation)
{
	dump *d = calloc(1, sizeof(*d));
	pemba_filter f = {.resource_type = type, .relation = relation};
	pemba_error err;
	assert_int_equal(
	    pemba_read_relationships(db, 0, &f, NULL, 0, dump_fn, d, &err), 0);
	qsort(d->lines, d->n, sizeof(char *), line_cmp);
	size_t len = 1;
	for (size_t i = 0; i < d->n; i++)
		len += strlen(d->lines[i]) + 1;
	char *out = calloc(1, len), *p = out;
	for (size_t i = 0; i < d->n; i++) {
		p += sprintf(p, "%s\n", d->lines[i]);
		pemba_free(d->lines[i]);
	}
	free(d);
	return out;
}

static size_t count_relation(pemba_db *db, const char *type,
                             const char *relation)
{
	char *text = dump_relation(db, type, relation);
	size_t n = 0;
	for (char *p = text; *p; p++)
		n += *p == '\n';
	free(text);
	return n;
}

static pemba_revision head(pemba_db *db)
{
	pemba_revision r;
	pemba_error err;
	assert_int_equal(pemba_head_revision(db, &r, &err), 0);
	return r;
}

static int copy(pemba_db *db, const char *from, const char *to,
                const char *subject_type, size_t batch, const char *cursor,
                pemba_copy_fn fn, void *ctx, pemba_copy_result *out,
                pemba_error *err)
{
	pemba_copy_request req = {.resource_type = "document",
	                          .relation = from,
	                          .to_relation = to,
	                          .subject_type = subject_type,
	                          .batch_size = batch,
	                          .cursor = cursor};
	return pemba_copy_relationships(db, &req, fn, ctx, out, err);
}

/* A mixed source: plain users, a userset, a wildcard, a caveat with and
 * without context, an expiration in the future. */
static void write_mixed_source(pemba_db *db)
{
	WRITE(db, "document:1#viewer@user:anne", "document:1#viewer@user:*",
	      "document:1#viewer@group:eng#member",
	      "document:2#viewer@user:bob[only_on]",
	      "document:2#viewer@user:carl[only_on:{\"day\":1}]",
	      "document:3#viewer@user:dana[expiration:2300-01-01T00:00:00Z]",
	      "document:3#plain@user:erin", "group:eng#member@user:fred");
}

/* ================================================================ copy */

static void test_copy_preserves_every_field(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	write_mixed_source(db);
	pemba_copy_result res;
	pemba_error err;
	if (copy(db, "viewer", "reader", NULL, 0, NULL, NULL, NULL, &res,
	         &err) != 0)
		fail_msg("copy: %s", err.message);
	assert_int_equal(res.copied, 6);
	assert_true(res.done);
	assert_non_null(res.cursor);
	char *src = dump_relation(db, "document", "viewer");
	char *dst = dump_relation(db, "document", "reader");
	assert_string_equal(src, dst);
	/* Caveat context and expiration really are in the text compared. */
	assert_non_null(strstr(dst, "[only_on:{\"day\":1}]"));
	assert_non_null(strstr(dst, "[expiration:2300-01-01T00:00:00Z]"));
	/* The other relations are untouched. */
	assert_int_equal(count_relation(db, "document", "plain"), 1);
	free(src);
	free(dst);
	pemba_free(res.cursor);
	pemba_close(db);
}

static void test_copy_to_another_resource_type(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	write_mixed_source(db);
	pemba_copy_request req = {.resource_type = "document",
	                          .relation = "viewer",
	                          .to_resource_type = "folder",
	                          .to_relation = "viewer"};
	pemba_copy_result res;
	pemba_error err;
	if (pemba_copy_relationships(db, &req, NULL, NULL, &res, &err) != 0)
		fail_msg("copy: %s", err.message);
	char *src = dump_relation(db, "document", "viewer");
	char *dst = dump_relation(db, "folder", "viewer");
	assert_string_equal(src, dst);
	free(src);
	free(dst);
	pemba_free(res.cursor);
	pemba_close(db);
}

static void test_copy_subject_type_filter_copies_only_that_type(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	write_mixed_source(db);
	pemba_copy_result res;
	pemba_error err;
	/* `plain` allows no caveats, wildcards or expiration, but it does
	 * allow group#member: copying only the groups is fine. */
	if (copy(db, "viewer", "plain", "group", 0, NULL, NULL, NULL, &res,
	         &err) != 0)
		fail_msg("copy: %s", err.message);
	assert_int_equal(res.copied, 1);
	char *dst = dump_relation(db, "document", "plain");
	assert_string_equal(dst, "t:1#rr@group:eng#member\nt:3#rr@user:erin\n");
	free(dst);
	pemba_free(res.cursor);
	pemba_close(db);
}

static void test_copy_twice_changes_nothing(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	write_mixed_source(db);
	pemba_copy_result res;
	pemba_error err;
	assert_int_equal(
	    copy(db, "viewer", "reader", NULL, 2, NULL, NULL, NULL, &res, &err),
	    0);
	pemba_free(res.cursor);
	char *first = dump_relation(db, "document", "reader");
	assert_int_equal(
	    copy(db, "viewer", "reader", NULL, 2, NULL, NULL, NULL, &res, &err),
	    0);
	assert_int_equal(res.copied, 6);
	pemba_free(res.cursor);
	char *second = dump_relation(db, "document", "reader");
	assert_string_equal(first, second);
	free(first);
	free(second);
	pemba_close(db);
}

typedef struct progress_log {
	char *cursors[64];
	uint64_t copied[64];
	size_t n;
	size_t stop_after; /* return 1 after this many reports (0: never) */
	int done_seen;
	pemba_revision snapshot;
	pemba_db *writer; /* writes to the source after the first batch */
} progress_log;

static int log_progress(void *ctx, const pemba_copy_progress *p)
{
	progress_log *l = ctx;
	assert_true(l->n < 64);
	l->cursors[l->n] = strdup(p->cursor);
	l->copied[l->n] = p->copied;
	l->n++;
	l->done_seen += p->done;
	if (l->snapshot)
		assert_int_equal(l->snapshot, p->snapshot);
	l->snapshot = p->snapshot;
	if (l->writer && l->n == 1) {
		/* After the copy started: a new relationship before and one
		 * after the cursor, and a deletion of one not yet copied. */
		WRITE(l->writer, "document:0#viewer@user:early",
		      "document:9#viewer@user:late");
		DELETE(l->writer, "document:3#viewer@user:r3");
	}
	return l->stop_after && l->n >= l->stop_after;
}

static void log_free(progress_log *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->cursors[i]);
}

/* 25 relationships over 5 documents. */
static void write_numbered_source(pemba_db *db)
{
	for (int d = 1; d <= 5; d++)
		for (int u = 0; u < 5; u++) {
			char text[96];
			snprintf(text, sizeof(text),
			         "document:%d#viewer@user:u%d%s", d, u,
			         u == 4 ? "[only_on]" : "");
			const char *t[] = {text};
			write_op(db, PEMBA_OP_TOUCH, t, 1);
		}
}

/* A copy cursor past its datastore field ("c2:<16 hex>:"). */
static const char *past_datastore(const char *cursor)
{
	assert_true(strncmp(cursor, "c2:", 3) == 0 && strlen(cursor) > 20);
	return cursor + 20;
}

static void test_copy_resumes_from_every_cursor(void **state)
{
	(void)state;
	/* The reference: one uninterrupted copy, batches of 4. */
	pemba_db *db = open_db("sqlite::memory:", 0);
	write_numbered_source(db);
	progress_log full = {0};
	pemba_copy_result res;
	pemba_error err;
	assert_int_equal(copy(db, "viewer", "reader", NULL, 4, NULL,
	                      log_progress, &full, &res, &err),
	                 0);
	pemba_free(res.cursor);
	/* 25 rows in batches of 4: 7 batches, the last one short. */
	assert_int_equal(full.n, 7);
	assert_int_equal(full.done_seen, 1);
	assert_int_equal(full.copied[6], 25);
	char *want = dump_relation(db, "document", "reader");
	pemba_close(db);

	/* Interrupted after k batches, then resumed from the cursor the
	 * interruption left: the same end state, the same count. */
	for (size_t k = 1; k <= full.n; k++) {
		pemba_db *d = open_db("sqlite::memory:", 0);
		write_numbered_source(d);
		progress_log part = {.stop_after = k};
		assert_int_equal(copy(d, "viewer", "reader", NULL, 4, NULL,
		                      log_progress, &part, &res, &err),
		                 0);
		/* Same data, same revisions: the same cursors, but for
		 * the datastore they are bound to. */
		assert_string_equal(past_datastore(part.cursors[k - 1]),
		                    past_datastore(full.cursors[k - 1]));
		assert_string_equal(res.cursor, part.cursors[k - 1]);
		assert_int_equal(res.done, k == full.n);
		pemba_copy_result rest;
		if (copy(d, "viewer", "reader", NULL, 4, res.cursor, NULL, NULL,
		         &rest, &err) != 0)
			fail_msg("resume from %zu: %s", k, err.message);
		pemba_free(res.cursor);
		assert_true(rest.done);
		assert_int_equal(rest.copied, 25);
		char *got = dump_relation(d, "document", "reader");
		assert_string_equal(got, want);
		free(got);
		pemba_free(rest.cursor);
		log_free(&part);
		pemba_close(d);
	}
	free(want);
	log_free(&full);
}

static void
test_copy_refuses_a_subject_type_the_target_does_not_allow(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	/* 2500 allowed rows first, so a per-batch check would have written
	 * some before meeting the group. */
	for (int i = 0; i < 2500; i += 50) {
		const char *t[50];
		char buf[50][64];
		for (int k = 0; k < 50; k++) {
			snprintf(buf[k], sizeof(buf[k]),
			         "document:a%04d#viewer@user:u", i + k);
			t[k] = buf[k];
		}
		write_op(db, PEMBA_OP_TOUCH, t, 50);
	}
	WRITE(db, "document:z#viewer@group:eng#member");
	pemba_revision before = head(db);
	pemba_copy_result res;
	pemba_error err;
	assert_int_equal(copy(db, "viewer", "limited", NULL, 0, NULL, NULL,
	                      NULL, &res, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "`group#member`"));
	assert_non_null(
	    strstr(err.message, "document:z#viewer@group:eng#member"));
	assert_non_null(strstr(err.message, "`document#limited`"));
	assert_int_equal(head(db), before);
	assert_int_equal(count_relation(db, "document", "limited"), 0);
	assert_int_equal(res.copied, 0);
	pemba_free(res.cursor);

	/* A caveated source relationship refused the same way. */
	DELETE(db, "document:z#viewer@group:eng#member");
	WRITE(db, "document:z#viewer@user:x[only_on]");
	before = head(db);
	assert_int_equal(copy(db, "viewer", "limited", NULL, 0, NULL, NULL,
	                      NULL, &res, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "`user with only_on`"));
	assert_int_equal(head(db), before);
	pemba_free(res.cursor);

	/* Types the target lacks but no relationship uses do not block:
	 * `limited` allows neither group#member nor caveats nor expiration,
	 * and with those rows gone the copy goes through. */
	DELETE(db, "document:z#viewer@user:x[only_on]");
	assert_int_equal(copy(db, "viewer", "limited", NULL, 0, NULL, NULL,
	                      NULL, &res, &err),
	                 0);
	assert_int_equal(res.copied, 2500);
	assert_int_equal(count_relation(db, "document", "limited"), 2500);
	pemba_free(res.cursor);
	pemba_close(db);
}

static void test_copy_resume_after_gc_fails_clearly(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 1);
	write_numbered_source(db);
	progress_log log = {.stop_after = 1};
	pemba_copy_result res;
	pemba_error err;
	assert_int_equal(copy(db, "viewer", "reader", NULL, 4, NULL,
	                      log_progress, &log, &res, &err),
	                 0);
	assert_false(res.done);
	usleep(1300 * 1000);
	WRITE(db, "document:7#viewer@user:new");
	assert_int_equal(pemba_gc(db, NULL, &err), 0);
	pemba_copy_result again;
	assert_int_equal(copy(db, "viewer", "reader", NULL, 4, res.cursor, NULL,
	                      NULL, &again, &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "restart the copy without a "
	                                    "cursor"));
	pemba_free(again.cursor);
	/* A restart is safe and complete. */
	assert_int_equal(copy(db, "viewer", "reader", NULL, 4, NULL, NULL, NULL,
	                      &again, &err),
	                 0);
	assert_int_equal(again.copied, 26);
	assert_int_equal(count_relation(db, "document", "reader"), 26);
	pemba_free(again.cursor);
	pemba_free(res.cursor);
	log_free(&log);
	pemba_close(db);
}

static void expect_copy_error(pemba_db *db, const pemba_copy_request *req,
                              int code, const char *text)
{
	pemba_error err;
	pemba_copy_result res;
	int rc = pemba_copy_relationships(db, req, NULL, NULL, &res, &err);
	if (rc != code || !strstr(err.message, text))
		fail_msg("got %d (%s), want %d with `%s`", rc, err.message,
		         code, text);
	pemba_free(res.cursor);
}

/* ------------------------------------------- dual writes during a copy */

/* Another thread plays a dual-writing application: between two batches of
 * a copy (the progress callback hands it a round and waits for it), it
 * revokes, touches, recreates and adds relationships, each change written
 * to both relations in one write.  Whatever it does, the copy must end
 * with the target exactly equal to the source as of now. */
typedef struct dual_writer {
	pemba_db *db; /* the writer's own handle, used by its thread only */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int asked, finished; /* rounds */
	bool stop;
	char revoked[32][32]; /* "dNN uNN": revoked ahead of the copy */
	int nrevoked;
} dual_writer;

/* One write of `op` on resource dNN, subject `subject`, to viewer and to
 * reader (the dual write). */
static void dual_write(pemba_db *db, pemba_operation op, int doc,
                       const char *subject)
{
	char a[128], b[128];
	snprintf(a, sizeof(a), "document:d%02d#viewer@%s", doc, subject);
	snprintf(b, sizeof(b), "document:d%02d#reader@%s", doc, subject);
	const char *t[] = {a, b};
	write_op(db, op, t, 2);
}

/* Round k, after k batches of 4: documents d00..d(4k-1) are about copied,
 * so 4k+1.. are ahead of the copy and 4k-2 behind it. */
static void dual_round(dual_writer *w, int k)
{
	char subject[64];
	int ahead = 4 * k + 2, behind = 4 * k - 2;
	/* A revoke ahead of the copy: the snapshot still has it. */
	snprintf(subject, sizeof(subject), "user:u%02d", ahead);
	dual_write(w->db, PEMBA_OP_DELETE, ahead, subject);
	snprintf(w->revoked[w->nrevoked++], 32, "d%02d u%02d", ahead, ahead);
	/* A revoke behind it (already copied). */
	snprintf(subject, sizeof(subject), "user:u%02d", behind);
	dual_write(w->db, PEMBA_OP_DELETE, behind, subject);
	/* A touch ahead: now caveated. */
	snprintf(subject, sizeof(subject), "user:u%02d[only_on]", ahead + 1);
	dual_write(w->db, PEMBA_OP_TOUCH, ahead + 1, subject);
	/* Deleted in this round, recreated (with an expiration) in the
	 * next: the copy may pass it while it is gone or after. */
	snprintf(subject, sizeof(subject), "user:u%02d", ahead + 3);
	dual_write(w->db, PEMBA_OP_DELETE, ahead + 3, subject);
	if (k > 1) {
		snprintf(subject, sizeof(subject),
		         "user:u%02d[expiration:2300-01-01T00:00:00Z]",
		         ahead - 1);
		dual_write(w->db, PEMBA_OP_TOUCH, ahead - 1, subject);
	}
	/* New grants ahead of and behind the copy. */
	snprintf(subject, sizeof(subject), "user:new%02d", k);
	dual_write(w->db, PEMBA_OP_TOUCH, ahead + 4, subject);
	dual_write(w->db, PEMBA_OP_TOUCH, behind - 1, subject);
}

static void *dual_writer_main(void *arg)
{
	dual_writer *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (w->asked == w->finished && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->asked == w->finished)
			break;
		int k = w->finished + 1;
		pthread_mutex_unlock(&w->lock);
		if (k <= 8)
			dual_round(w, k);
		pthread_mutex_lock(&w->lock);
		w->finished = k;
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* The copy's progress callback: between two batches, one round of the
 * writer thread, waited for. */
static int dual_pause(void *ctx, const pemba_copy_progress *p)
{
	dual_writer *w = ctx;
	if (p->done)
		return 0;
	pthread_mutex_lock(&w->lock);
	w->asked++;
	pthread_cond_broadcast(&w->cond);
	while (w->finished < w->asked)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

static void test_copy_never_writes_back_a_revoke(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:copy_dual_writes", 0);
	for (int d = 0; d < 40; d++) {
		char text[64];
		snprintf(text, sizeof(text), "document:d%02d#viewer@user:u%02d",
		         d, d);
		const char *t[] = {text};
		write_op(db, PEMBA_OP_TOUCH, t, 1);
	}
	dual_writer w = {.lock = PTHREAD_MUTEX_INITIALIZER,
	                 .cond = PTHREAD_COND_INITIALIZER};
	pemba_error err;
	assert_int_equal(pemba_clone(db, &w.db, &err), 0);
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, dual_writer_main, &w),
	                 0);
	pemba_copy_result res;
	int rc = copy(db, "viewer", "reader", NULL, 4, NULL, dual_pause, &w,
	              &res, &err);
	pthread_mutex_lock(&w.lock);
	w.stop = true;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.lock);
	pthread_join(thread, NULL);
	if (rc != 0)
		fail_msg("copy: %s", err.message);
	assert_true(res.done);
	assert_true(w.finished >= 8);
	pemba_free(res.cursor);

	/* The target is exactly the source as of now... */
	char *src = dump_relation(db, "document", "viewer");
	char *dst = dump_relation(db, "document", "reader");
	assert_string_equal(dst, src);
	assert_non_null(strstr(dst, "[only_on]"));
	assert_non_null(strstr(dst, "[expiration:2300-01-01T00:00:00Z]"));
	free(src);
	free(dst);
	/* ...as permission verify proves... */
	pemba_verify_request vr = {
	    .resource_type = "document", .first = "view", .second = "read"};
	pemba_verify_summary sum;
	assert_int_equal(
	    pemba_verify_permission(db, 0, &vr, NULL, NULL, &sum, &err), 0);
	assert_true(sum.equal);
	assert_int_equal(sum.differences, 0);
	/* ...and no revoked subject is granted by the new relation. */
	for (int i = 0; i < w.nrevoked; i++) {
		char doc[8], user[8];
		assert_int_equal(sscanf(w.revoked[i], "%7s %7s", doc, user), 2);
		pemba_check_request cr = {.resource_type = "document",
		                          .resource_id = doc,
		                          .permission = "read",
		                          .subject_type = "user",
		                          .subject_id = user};
		pemba_permissionship got;
		assert_int_equal(pemba_check_permission(db, 0, &cr, &got, &err),
		                 0);
		assert_int_equal(got, PEMBA_NO_PERMISSION);
	}
	pemba_close(w.db);
	pemba_close(db);
}

/* A writer thread that does not wait for the copy: dual writes (revokes,
 * caveat changes, re-creations, new grants) as fast as it can while a
 * copy runs, blocked only by the write lock.  Whatever the interleaving,
 * the target ends equal to the source. */
typedef struct free_writer {
	pemba_db *db;
	atomic_bool stop;
	int ops;
} free_writer;

static void *free_writer_main(void *arg)
{
	free_writer *w = arg;
	while (!atomic_load(&w->stop) && w->ops < 4000) {
		int i = w->ops * 37 % 120, kind = w->ops % 4;
		char subject[64];
		snprintf(subject, sizeof(subject), "user:u%02d%s", i,
		         kind == 1 ? "[only_on]" : "");
		dual_write(w->db, kind == 0 ? PEMBA_OP_DELETE : PEMBA_OP_TOUCH,
		           i, subject);
		w->ops++;
	}
	return NULL;
}

/* Lets the writer in between two batches. */
static int yield_progress(void *ctx, const pemba_copy_progress *p)
{
	(void)ctx;
	(void)p;
	usleep(500);
	return 0;
}

static void test_copy_races_a_free_running_dual_writer(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:copy_free_writer", 0);
	for (int d = 0; d < 100; d++) {
		char text[64];
		snprintf(text, sizeof(text), "document:d%02d#viewer@user:u%02d",
		         d, d);
		const char *t[] = {text};
		write_op(db, PEMBA_OP_TOUCH, t, 1);
	}
	free_writer w = {0};
	pemba_error err;
	assert_int_equal(pemba_clone(db, &w.db, &err), 0);
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, free_writer_main, &w),
	                 0);
	pemba_copy_result res;
	int rc = copy(db, "viewer", "reader", NULL, 3, NULL, yield_progress,
	              NULL, &res, &err);
	atomic_store(&w.stop, true);
	pthread_join(thread, NULL);
	if (rc != 0)
		fail_msg("copy: %s", err.message);
	assert_true(res.done);
	pemba_free(res.cursor);
	char *src = dump_relation(db, "document", "viewer");
	char *dst = dump_relation(db, "document", "reader");
	assert_string_equal(dst, src);
	free(src);
	free(dst);
	pemba_verify_request vr = {
	    .resource_type = "document", .first = "view", .second = "read"};
	pemba_verify_summary sum;
	assert_int_equal(
	    pemba_verify_permission(db, 0, &vr, NULL, NULL, &sum, &err), 0);
	assert_true(sum.equal);
	pemba_close(w.db);
	pemba_close(db);
}

/* --------------------------------------------------- subject mappings */

static pemba_copy_request new_viewer_request(const pemba_subject_mapping *m,
                                             size_t n)
{
	return (pemba_copy_request){.resource_type = "document",
	                            .relation = "viewer",
	                            .to_relation = "new_viewer",
	                            .batch_size = 2,
	                            .subject_mappings = m,
	                            .nsubject_mappings = n};
}

/* SpiceDB's guide example: `viewer: user` moved to `new_viewer: user2`,
 * and a userset moved with its relation (group#member to team#member). */
static void test_copy_maps_subject_types(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	WRITE(db, "document:1#viewer@user:anne", "document:1#viewer@user:*",
	      "document:1#viewer@group:eng#member",
	      "document:2#viewer@user:bob[only_on]",
	      "document:3#viewer@user:dana[expiration:2300-01-01T00:00:00Z]",
	      "team:eng#member@user2:fred");
	const pemba_subject_mapping maps[] = {
	    {.from_type = "user", .to_type = "user2"},
	    {.from_type = "group",
	     .from_relation = "member",
	     .to_type = "team",
	     .to_relation = "member"},
	};
	pemba_copy_request req = new_viewer_request(maps, 2);
	pemba_copy_result res;
	pemba_error err;
	if (pemba_copy_relationships(db, &req, NULL, NULL, &res, &err) != 0)
		fail_msg("copy: %s", err.message);
	assert_true(res.done);
	assert_int_equal(res.copied, 5);
	char *dst = dump_relation(db, "document", "new_viewer");
	assert_string_equal(
	    dst, "t:1#rr@team:eng#member\n"
	         "t:1#rr@user2:*\n"
	         "t:1#rr@user2:anne\n"
	         "t:2#rr@user2:bob[only_on]\n"
	         "t:3#rr@user2:dana[expiration:2300-01-01T00:00:00Z]\n");
	free(dst);
	pemba_check_request cr = {.resource_type = "document",
	                          .resource_id = "1",
	                          .permission = "new_viewer",
	                          .subject_type = "user2",
	                          .subject_id = "fred"};
	pemba_permissionship got;
	assert_int_equal(pemba_check_permission(db, 0, &cr, &got, &err), 0);
	assert_int_equal(got, PEMBA_HAS_PERMISSION);
	/* A cursor binds the mappings: without them it is another copy. */
	pemba_copy_request other = new_viewer_request(maps, 1);
	other.cursor = res.cursor;
	pemba_copy_result again;
	assert_int_equal(
	    pemba_copy_relationships(db, &other, NULL, NULL, &again, &err),
	    PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "belongs to another copy"));
	pemba_free(again.cursor);
	pemba_free(res.cursor);
	pemba_close(db);

	/* The subject-type filter still names a source type. */
	db = open_db("sqlite::memory:", 0);
	WRITE(db, "document:1#viewer@user:anne",
	      "document:1#viewer@group:eng#member");
	req = new_viewer_request(maps, 2);
	req.subject_type = "group";
	if (pemba_copy_relationships(db, &req, NULL, NULL, &res, &err) != 0)
		fail_msg("copy: %s", err.message);
	assert_int_equal(res.copied, 1);
	dst = dump_relation(db, "document", "new_viewer");
	assert_string_equal(dst, "t:1#rr@team:eng#member\n");
	free(dst);
	pemba_free(res.cursor);
	pemba_close(db);
}

static void test_copy_refuses_bad_subject_mappings(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	WRITE(db, "document:1#viewer@user:anne",
	      "document:1#viewer@group:eng#member");
	pemba_revision before = head(db);
	/* No mapping: the target does not allow `user`. */
	pemba_copy_request req = new_viewer_request(NULL, 0);
	expect_copy_error(db, &req, PEMBA_EINVAL,
	                  "subjects of type `user` are not allowed on relation "
	                  "`document#new_viewer`");
	/* A type the target does not allow. */
	pemba_subject_mapping m[2] = {
	    {.from_type = "user", .to_type = "user3"}};
	req = new_viewer_request(m, 1);
	expect_copy_error(db, &req, PEMBA_EINVAL,
	                  "cannot map subject type `user` to `user3`: relation "
	                  "`document#new_viewer` does not allow subjects of "
	                  "type `user3`");
	/* A type the source does not have. */
	m[0] =
	    (pemba_subject_mapping){.from_type = "folder", .to_type = "user2"};
	req = new_viewer_request(m, 1);
	expect_copy_error(db, &req, PEMBA_EINVAL,
	                  "cannot map subject type `folder`");
	/* The groups are left unmapped, and the target has no group. */
	m[0] = (pemba_subject_mapping){.from_type = "user", .to_type = "user2"};
	req = new_viewer_request(m, 1);
	expect_copy_error(db, &req, PEMBA_EINVAL, "`group#member`");
	/* Syntax: a target relation needs a source one; one source twice. */
	m[0] = (pemba_subject_mapping){
	    .from_type = "group", .to_type = "team", .to_relation = "member"};
	req = new_viewer_request(m, 1);
	expect_copy_error(db, &req, PEMBA_EINVAL, "needs a source one");
	m[0] = (pemba_subject_mapping){.from_type = "user", .to_type = "user2"};
	m[1] = m[0];
	req = new_viewer_request(m, 2);
	expect_copy_error(db, &req, PEMBA_EINVAL, "mapped twice");
	m[1] = (pemba_subject_mapping){.from_type = "Bad!", .to_type = "x"};
	expect_copy_error(db, &req, PEMBA_EINVAL, "invalid subject mapping");
	assert_int_equal(head(db), before);
	assert_int_equal(count_relation(db, "document", "new_viewer"), 0);
	pemba_close(db);
}

/* ------------------------------------------------------------ cursors */

static void test_copy_refuses_a_cursor_of_another_datastore(void **state)
{
	(void)state;
	pemba_db *a = open_db("sqlite::memory:", 0);
	pemba_db *b = open_db("sqlite::memory:", 0);
	write_numbered_source(a);
	write_numbered_source(b);
	progress_log log = {.stop_after = 1};
	pemba_copy_result res, again;
	pemba_error err;
	assert_int_equal(copy(a, "viewer", "reader", NULL, 4, NULL,
	                      log_progress, &log, &res, &err),
	                 0);
	assert_false(res.done);
	/* The same data and revisions elsewhere: refused all the same. */
	assert_int_equal(copy(b, "viewer", "reader", NULL, 4, res.cursor, NULL,
	                      NULL, &again, &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message,
	                       "cannot resume the copy from this cursor: it "
	                       "was made on another datastore; restart the "
	                       "copy without a cursor"));
	assert_int_equal(count_relation(b, "document", "reader"), 0);
	pemba_free(again.cursor);
	/* A revision range beyond this datastore's head (the datastore was
	 * restored from an older backup, say): the cursor's last written
	 * revision is made larger than the head. */
	char forged[512];
	unsigned long long ds, start, last, count;
	char rest[400];
	assert_int_equal(sscanf(res.cursor, "c2:%16llx:%llu:%llu:%llu:%399s",
	                        &ds, &start, &last, &count, rest),
	                 5);
	snprintf(forged, sizeof(forged), "c2:%016llx:%llu:%llu:%llu:%s", ds,
	         start, last + 1000, count, rest);
	assert_int_equal(copy(a, "viewer", "reader", NULL, 4, forged, NULL,
	                      NULL, &again, &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message,
	                       "cannot resume the copy from this cursor: it "
	                       "names revision"));
	pemba_free(again.cursor);
	/* A cursor of the format before datastores were bound. */
	assert_int_equal(copy(a, "viewer", "reader", NULL, 4,
	                      "c1:3:4:0123456789abcdef:", NULL, NULL, &again,
	                      &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "cannot resume the copy from this "
	                                    "cursor"));
	pemba_free(again.cursor);
	/* Its own datastore resumes it. */
	assert_int_equal(copy(a, "viewer", "reader", NULL, 4, res.cursor, NULL,
	                      NULL, &again, &err),
	                 0);
	assert_true(again.done);
	assert_int_equal(again.copied, 25);
	pemba_free(again.cursor);
	pemba_free(res.cursor);
	log_free(&log);
	pemba_close(a);
	pemba_close(b);
}

static void test_copy_rejects_bad_requests(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	write_mixed_source(db);
	pemba_copy_request r = {.resource_type = "document",
	                        .relation = "viewer",
	                        .to_relation = "reader"};
	pemba_copy_request bad = r;
	bad.to_relation = "view";
	expect_copy_error(db, &bad, PEMBA_EINVAL, "permission `view`");
	bad = r;
	bad.relation = "view";
	expect_copy_error(db, &bad, PEMBA_EINVAL, "is a permission");
	bad = r;
	bad.to_relation = "nope";
	expect_copy_error(db, &bad, PEMBA_EPRECONDITION, "`nope` not found");
	bad = r;
	bad.to_resource_type = "nothing";
	expect_copy_error(db, &bad, PEMBA_EPRECONDITION,
	                  "definition `nothing` not found");
	bad = r;
	bad.to_relation = "viewer";
	expect_copy_error(db, &bad, PEMBA_EINVAL, "same relation");
	bad = r;
	bad.batch_size = PEMBA_COPY_MAX_BATCH + 1;
	expect_copy_error(db, &bad, PEMBA_ELIMIT, "batch size 100001");
	bad = r;
	bad.subject_type = "folder";
	expect_copy_error(db, &bad, PEMBA_EPRECONDITION,
	                  "does not allow subjects of type `folder`");
	bad = r;
	bad.relation = "Bad";
	expect_copy_error(db, &bad, PEMBA_EINVAL, "invalid source relation");
	bad = r;
	bad.cursor = "e1:3:abcd";
	expect_copy_error(db, &bad, PEMBA_EINVAL, "invalid copy cursor");
	/* A cursor of another copy request. */
	pemba_copy_result res;
	pemba_error err;
	assert_int_equal(
	    pemba_copy_relationships(db, &r, NULL, NULL, &res, &err), 0);
	bad = r;
	bad.subject_type = "user";
	bad.cursor = res.cursor;
	expect_copy_error(db, &bad, PEMBA_EINVAL, "belongs to another copy");
	/* The cursor of a finished copy resumes to nothing new. */
	pemba_revision before = head(db);
	pemba_copy_result again;
	r.cursor = res.cursor;
	assert_int_equal(
	    pemba_copy_relationships(db, &r, NULL, NULL, &again, &err), 0);
	assert_true(again.done);
	assert_int_equal(again.copied, 6);
	assert_int_equal(again.written_at, 0);
	assert_int_equal(head(db), before);
	pemba_free(again.cursor);
	pemba_free(res.cursor);
	pemba_close(db);
}

static void test_copy_of_an_empty_relation_is_done_at_once(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	WRITE(db, "document:1#plain@user:a");
	progress_log log = {0};
	pemba_copy_result res;
	pemba_error err;
	assert_int_equal(copy(db, "viewer", "reader", NULL, 0, NULL,
	                      log_progress, &log, &res, &err),
	                 0);
	assert_true(res.done);
	assert_int_equal(res.copied, 0);
	assert_int_equal(log.n, 1);
	assert_int_equal(log.done_seen, 1);
	pemba_free(res.cursor);
	log_free(&log);
	pemba_close(db);
}


static int count_batches(void *ctx, const pemba_copy_progress *p)
{
	size_t *n = ctx;
	if (p->batch > 0)
		(*n)++;
	return 0;
}

/* --max-batch-ms: a batch also ends once its time is up (its first rows
 * are always written), so writers wait about that long at most; the copy
 * still copies everything, exactly once. */
static void test_copy_batches_end_when_their_time_is_up(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	enum { N = 4000 }; /* dump_relation's limit is 4096 rows */
	pemba_import *imp;
	pemba_error err;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	static char ids[N][2][16];
	static pemba_relationship rels[N];
	for (int i = 0; i < N; i++) {
		snprintf(ids[i][0], 16, "d%05d", i / 4);
		snprintf(ids[i][1], 16, "u%05d", i);
		rels[i] = (pemba_relationship){.resource_type = "document",
		                               .resource_id = ids[i][0],
		                               .relation = "viewer",
		                               .subject_type = "user",
		                               .subject_id = ids[i][1]};
	}
	assert_int_equal(pemba_import_add(imp, rels, N, &err), 0);
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);

	pemba_copy_request req = {.resource_type = "document",
	                          .relation = "viewer",
	                          .to_relation = "reader",
	                          .max_batch_ms = PEMBA_COPY_MAX_BATCH_MS + 1};
	pemba_copy_result res;
	assert_int_equal(pemba_copy_relationships(db, &req, NULL, NULL, &res,
	                                          &err),
	                 PEMBA_ELIMIT);
	assert_non_null(strstr(err.message, "max batch time"));

	/* One batch by size would hold all N; a 1 ms budget, looked at
	 * every 1024 rows, splits it. */
	req.max_batch_ms = 1;
	size_t batches = 0;
	assert_int_equal(pemba_copy_relationships(db, &req, count_batches,
	                                          &batches, &res, &err),
	                 0);
	assert_true(res.done);
	assert_int_equal(res.copied, N);
	assert_true(batches >= 2);
	pemba_free(res.cursor);
	char *src = dump_relation(db, "document", "viewer");
	char *dst = dump_relation(db, "document", "reader");
	assert_string_equal(dst, src);
	free(src);
	free(dst);
	pemba_close(db);
}

/* ============================================================== verify */

typedef struct diff_log {
	char lines[64][160];
	size_t n;
} diff_log;

static const char *ps_name(pemba_permissionship p)
{
	return p == PEMBA_HAS_PERMISSION           ? "has"
	       : p == PEMBA_CONDITIONAL_PERMISSION ? "conditional"
	                                           : "no";
}

static int log_diff(void *ctx, const pemba_verify_difference *d)
{
	diff_log *l = ctx;
	assert_true(l->n < 64);
	snprintf(l->lines[l->n++], 160, "%s %s %s/%s", d->resource_id,
	         d->subject, ps_name(d->first), ps_name(d->second));
	return 0;
}

static pemba_verify_summary verify(pemba_db *db, const char *a, const char *b,
                                   diff_log *log)
{
	pemba_verify_request req = {
	    .resource_type = "document", .first = a, .second = b};
	pemba_verify_summary sum;
	pemba_error err;
	memset(log, 0, sizeof(*log));
	if (pemba_verify_permission(db, 0, &req, log_diff, log, &sum, &err) !=
	    0)
		fail_msg("verify: %s", err.message);
	return sum;
}

static bool logged(const diff_log *l, const char *line)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->lines[i], line) == 0)
			return true;
	return false;
}

static void test_verify_after_copy_is_equal(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	write_mixed_source(db);
	WRITE(db, "document:1#banned@user:anne",
	      "group:eng#member@group:core#member",
	      "group:core#member@user:gus");
	pemba_copy_result res;
	pemba_error err;
	assert_int_equal(
	    copy(db, "viewer", "reader", NULL, 0, NULL, NULL, NULL, &res, &err),
	    0);
	pemba_free(res.cursor);
	diff_log log;
	pemba_verify_summary s = verify(db, "viewer", "reader", &log);
	assert_true(s.equal);
	assert_true(s.complete);
	assert_int_equal(s.differences, 0);
	assert_int_equal(s.resources, 3);
	assert_int_equal(s.revision, head(db));
	assert_int_equal(log.n, 0);
	s = verify(db, "view", "read", &log);
	assert_true(s.equal);
	s = verify(db, "view_unbanned", "read_unbanned", &log);
	assert_true(s.equal);
	pemba_close(db);
}

static void test_verify_reports_missing_and_extra_subjects(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	WRITE(db, "document:1#viewer@user:anne", "document:1#reader@user:anne",
	      "document:2#viewer@user:bob", "document:3#reader@user:carl");
	diff_log log;
	pemba_verify_summary s = verify(db, "view", "read", &log);
	assert_false(s.equal);
	assert_int_equal(s.differences, 2);
	assert_int_equal(s.resources, 3);
	assert_int_equal(log.n, 2);
	assert_string_equal(log.lines[0], "2 user:bob has/no");
	assert_string_equal(log.lines[1], "3 user:carl no/has");
	pemba_close(db);
}

static void test_verify_compares_wildcards_and_exclusions(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	/* 1: a wildcard on one side only. */
	WRITE(db, "document:1#viewer@user:*", "document:1#reader@user:anne");
	/* 2: the same wildcard, one side excluding bob. */
	WRITE(db, "document:2#viewer@user:*", "document:2#reader@user:*",
	      "document:2#banned@user:bob");
	diff_log log;
	pemba_verify_summary s = verify(db, "view", "read", &log);
	assert_int_equal(s.differences, 1);
	assert_true(logged(&log, "1 user:* has/no"));
	/* Covered by the wildcard on the left, named on the right. */
	assert_true(logged(&log, "1 user:anne has/has") == false);
	s = verify(db, "view_unbanned", "read", &log);
	/* document:2: `* - {bob}` against `*`: only bob differs. */
	assert_true(logged(&log, "2 user:bob no/has"));
	assert_int_equal(s.differences, 2);
	/* The same exclusion on both sides is no difference. */
	WRITE(db, "document:1#reader@user:*");
	s = verify(db, "view_unbanned", "read_unbanned", &log);
	assert_true(s.equal);
	pemba_close(db);
}

static void test_verify_compares_caveats_by_permissionship(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	WRITE(db, "document:1#viewer@user:anne[only_on]",
	      "document:1#reader@user:anne",
	      "document:2#viewer@user:bob[only_on]",
	      "document:2#reader@user:bob[only_on]");
	diff_log log;
	pemba_verify_summary s = verify(db, "view", "read", &log);
	assert_int_equal(s.differences, 1);
	assert_string_equal(log.lines[0], "1 user:anne conditional/has");
	/* A context that decides the caveat makes it an ordinary grant. */
	WRITE(db, "document:1#viewer@user:anne[only_on:{\"day\":1}]");
	s = verify(db, "view", "read", &log);
	assert_true(s.equal);
	pemba_close(db);
}

static void test_verify_expands_nested_groups(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	WRITE(db, "group:eng#member@group:core#member",
	      "group:core#member@user:carl",
	      "document:1#viewer@group:eng#member",
	      "document:1#reader@user:carl");
	diff_log log;
	pemba_verify_summary s = verify(db, "view", "read", &log);
	/* carl reaches both; the usersets only the first. */
	assert_false(logged(&log, "1 user:carl has/no"));
	assert_true(logged(&log, "1 group:eng#member has/no"));
	assert_true(logged(&log, "1 group:core#member has/no"));
	assert_int_equal(s.differences, 2);
	/* Once carl leaves core, he differs too. */
	DELETE(db, "group:core#member@user:carl");
	s = verify(db, "view", "read", &log);
	assert_true(logged(&log, "1 user:carl no/has"));
	pemba_close(db);
}

static void test_verify_limits_reports_but_counts_all(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	for (int i = 0; i < 30; i++) {
		char text[64];
		snprintf(text, sizeof(text), "document:d%02d#viewer@user:u", i);
		const char *t[] = {text};
		write_op(db, PEMBA_OP_TOUCH, t, 1);
	}
	pemba_verify_request req = {.resource_type = "document",
	                            .first = "viewer",
	                            .second = "reader",
	                            .max_differences = 5};
	diff_log log = {0};
	pemba_verify_summary s;
	pemba_error err;
	assert_int_equal(
	    pemba_verify_permission(db, 0, &req, log_diff, &log, &s, &err), 0);
	assert_int_equal(log.n, 5);
	assert_int_equal(s.differences, 30);
	assert_false(s.equal);
	assert_true(s.complete);
	/* Resource order: by id. */
	assert_string_equal(log.lines[0], "d00 user:u has/no");
	assert_string_equal(log.lines[4], "d04 user:u has/no");
	pemba_close(db);
}

static void test_verify_pages_over_many_resources(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	/* 1500 resources with one row each, and one resource with 2100 rows
	 * spanning page boundaries: 1501 resources. */
	pemba_import *imp;
	pemba_error err;
	assert_int_equal(pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err), 0);
	char id[32], user[32];
	for (int i = 0; i < 1500; i++) {
		snprintf(id, sizeof(id), "r%04d", i);
		pemba_relationship r = {.resource_type = "document",
		                        .resource_id = id,
		                        .relation = i % 2 ? "viewer" : "reader",
		                        .subject_type = "user",
		                        .subject_id = "u"};
		assert_int_equal(pemba_import_add(imp, &r, 1, &err), 0);
	}
	for (int i = 0; i < 2100; i++) {
		snprintf(user, sizeof(user), "u%04d", i);
		pemba_relationship r[2] = {{.resource_type = "document",
		                            .resource_id = "big",
		                            .relation = "viewer",
		                            .subject_type = "user",
		                            .subject_id = user},
		                           {.resource_type = "document",
		                            .resource_id = "big",
		                            .relation = "reader",
		                            .subject_type = "user",
		                            .subject_id = user}};
		assert_int_equal(pemba_import_add(imp, r, 2, &err), 0);
	}
	assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	pemba_verify_request req = {
	    .resource_type = "document", .first = "view", .second = "read"};
	pemba_verify_summary s;
	assert_int_equal(
	    pemba_verify_permission(db, 0, &req, NULL, NULL, &s, &err), 0);
	assert_int_equal(s.resources, 1501);
	assert_int_equal(s.differences, 1500);
	pemba_close(db);
}

static void test_verify_rejects_bad_requests(void **state)
{
	(void)state;
	pemba_db *db = open_db("sqlite::memory:", 0);
	pemba_verify_request req = {
	    .resource_type = "document", .first = "view", .second = "nope"};
	pemba_verify_summary s;
	pemba_error err;
	assert_int_equal(
	    pemba_verify_permission(db, 0, &req, NULL, NULL, &s, &err),
	    PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "`nope` not found"));
	req.second = "read";
	req.resource_type = "nothing";
	assert_int_equal(
	    pemba_verify_permission(db, 0, &req, NULL, NULL, &s, &err),
	    PEMBA_EPRECONDITION);
	req.resource_type = "document";
	req.first = "Bad!";
	assert_int_equal(
	    pemba_verify_permission(db, 0, &req, NULL, NULL, &s, &err),
	    PEMBA_EINVAL);
	req.first = "view";
	assert_int_equal(
	    pemba_verify_permission(db, 999, &req, NULL, NULL, &s, &err),
	    PEMBA_EREVISION);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_copy_preserves_every_field),
	    cmocka_unit_test(test_copy_to_another_resource_type),
	    cmocka_unit_test(
	        test_copy_subject_type_filter_copies_only_that_type),
	    cmocka_unit_test(test_copy_twice_changes_nothing),
	    cmocka_unit_test(test_copy_resumes_from_every_cursor),
	    cmocka_unit_test(test_copy_never_writes_back_a_revoke),
	    cmocka_unit_test(test_copy_races_a_free_running_dual_writer),
	    cmocka_unit_test(test_copy_maps_subject_types),
	    cmocka_unit_test(test_copy_refuses_bad_subject_mappings),
	    cmocka_unit_test(test_copy_refuses_a_cursor_of_another_datastore),
	    cmocka_unit_test(
	        test_copy_refuses_a_subject_type_the_target_does_not_allow),
	    cmocka_unit_test(test_copy_resume_after_gc_fails_clearly),
	    cmocka_unit_test(test_copy_rejects_bad_requests),
	    cmocka_unit_test(test_copy_of_an_empty_relation_is_done_at_once),
	    cmocka_unit_test(test_copy_batches_end_when_their_time_is_up),
	    cmocka_unit_test(test_verify_after_copy_is_equal),
	    cmocka_unit_test(test_verify_reports_missing_and_extra_subjects),
	    cmocka_unit_test(test_verify_compares_wildcards_and_exclusions),
	    cmocka_unit_test(test_verify_compares_caveats_by_permissionship),
	    cmocka_unit_test(test_verify_expands_nested_groups),
	    cmocka_unit_test(test_verify_limits_reports_but_counts_all),
	    cmocka_unit_test(test_verify_pages_over_many_resources),
	    cmocka_unit_test(test_verify_rejects_bad_requests),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
