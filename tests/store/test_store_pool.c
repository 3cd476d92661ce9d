/*
 * test_store_pool.c -- the PostgreSQL engine's connection pools and GC on
 * one node at a time (store/README.md, "PostgreSQL engine"):
 *
 *   - handles of one process on one datastore share a read pool and a
 *     write pool; a handle holds a connection only while it needs one, so
 *     many handles cost at most the pools' sizes in connections;
 *   - a borrower that finds the pool exhausted waits, then fails with
 *     PEMBA_EIO "datastore busy: no free connection ..." naming the flag
 *     that raises the limit; once a connection comes back it succeeds;
 *   - a GC run skips (stats.skipped) while another session holds the GC
 *     advisory lock, and collects once it is free.
 *
 * PostgreSQL only (SQLite has one connection per handle and one process
 * per file for GC; nothing to pool).
 */
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "store_fixture.h"

#define PG_ONLY()                                                              \
	do {                                                                   \
		if (!pg_fixture_enabled()) {                                   \
			print_message("skipped on SQLite: pools are the "      \
			              "PostgreSQL engine's\n");                \
			skip();                                                \
		}                                                              \
	} while (0)

/* A handle on `uri` (a name fixture_uri maps to one database) with pools
 * of the given sizes (the first handle's sizes are the pools'). */
static store *open_pooled(const char *uri, int read_max, int write_max)
{
	store_options o = {0};
	o.pool_read_max = read_max;
	o.pool_write_max = write_max;
	o.query_cache_bytes = -1; /* a cache hit borrows no connection */
	store *s = NULL;
	pemba_error err = {0};
	if (store_open(fixture_uri(uri), &o, &s, &err))
		fail_msg("store_open(%s): %s", fixture_uri(uri), err.message);
	return s;
}

/* Connections pemba has open to the database of `uri` right now. */
static long pemba_connections(const char *uri)
{
	const char *slash = strrchr(uri, '/');
	char db[128], sql[256];
	snprintf(db, sizeof(db), "%.*s", (int)strcspn(slash + 1, "?"),
	         slash + 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' "
	         "AND application_name = 'pemba'",
	         db);
	return pg_fixture_exec(pg_fixture_admin_uri(), sql);
}

static void many_handles_share_the_pools(void **state)
{
	(void)state;
	PG_ONLY();
	const char *name = "sqlite::memory:pool_share";
	store *h[8];
	for (int i = 0; i < 8; i++)
		h[i] = open_pooled(name, 2, 1);
	fixture_write(h[0], 'c', "doc:a#viewer@user:anne", NULL);
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 8; i++) {
			pemba_revision head = 0;
			pemba_error err = {0};
			assert_int_equal(store_head_revision(h[i], &head, &err),
			                 0);
			assert_int_equal(head, 1);
		}
	fixture_write(h[7], 'c', "doc:b#viewer@user:bob", NULL);
	/* Eight handles, at most 2 + 1 connections (reads, writes). */
	long n = pemba_connections(fixture_uri(name));
	if (n < 1 || n > 3)
		fail_msg("8 handles hold %ld connections (pools: 2 + 1)", n);
	for (int i = 0; i < 8; i++)
		store_close(h[i]);
	/* The last close closes them (a backend leaves pg_stat_activity a
	 * moment after its client went). */
	for (int i = 0; i < 50 && pemba_connections(fixture_uri(name)); i++)
		usleep(20 * 1000);
	assert_int_equal(pemba_connections(fixture_uri(name)), 0);
}

static void an_exhausted_pool_fails_busy_then_recovers(void **state)
{
	(void)state;
	PG_ONLY();
	const char *name = "sqlite::memory:pool_busy";
	/* Without group commit (read when the pools are made): with it, b's
	 * write transaction would wait to join a's instead of asking the
	 * write pool (test_store_group_commit.c). */
	setenv("PEMBA_PG_GROUP_COMMIT", "0", 1);
	store *a = open_pooled(name, 1, 1);
	store *b = open_pooled(name, 1, 1);
	unsetenv("PEMBA_PG_GROUP_COMMIT");
	pemba_error err = {0};
	pemba_revision head;

	/* a's read transaction holds the one read connection. */
	assert_int_equal(store_read_begin(a, &err), 0);
	assert_int_equal(store_head_revision(a, &head, &err), 0);
	assert_int_equal(store_head_revision(b, &head, &err), PEMBA_EIO);
	if (!strstr(err.message, "datastore busy: no free connection in the "
	                         "read pool") ||
	    !strstr(err.message, "--datastore-conn-pool-read-max-open"))
		fail_msg("unexpected message: %s", err.message);
	store_read_end(a);
	assert_int_equal(store_head_revision(b, &head, &err), 0);

	/* a's write transaction holds the one write connection. */
	store_txn *ta, *tb;
	assert_int_equal(store_txn_begin(a, &ta, NULL, &err), 0);
	assert_int_equal(store_txn_begin(b, &tb, NULL, &err), PEMBA_EIO);
	if (!strstr(err.message, "no free connection in the write pool"))
		fail_msg("unexpected message: %s", err.message);
	/* Reads are not blocked by a full write pool. */
	assert_int_equal(store_head_revision(b, &head, &err), 0);
	assert_int_equal(store_txn_commit(ta, &err), 0);
	assert_int_equal(store_txn_begin(b, &tb, NULL, &err), 0);
	assert_int_equal(store_txn_commit(tb, &err), 0);
	store_close(a);
	store_close(b);
}

static void gc_skips_while_another_node_collects(void **state)
{
	(void)state;
	PG_ONLY();
	const char *name = "sqlite::memory:pool_gc";
	store *s = open_pooled(name, 0, 0);
	fixture_write(s, 'c', "doc:a#viewer@user:anne", NULL);
	fixture_write(s, 'd', "doc:a#viewer@user:anne", NULL);

	/* "Another node": a session holding the GC lock. */
	PGconn *other = PQconnectdb(fixture_uri(name));
	assert_int_equal(PQstatus(other), CONNECTION_OK);
	PGresult *r = PQexec(other, "SELECT pg_try_advisory_lock("
	                            "8098999772569927685)");
	assert_string_equal(PQgetvalue(r, 0, 0), "t");
	PQclear(r);

	store_gc_stats st;
	pemba_error err = {0};
	int64_t later = (int64_t)time(NULL) * 1000 + 48LL * 3600 * 1000;
	assert_int_equal(store_gc_report(s, later, &st, &err), 0);
	assert_true(st.skipped);
	assert_int_equal(st.relationships, 0);

	/* The other node is done.  (Unlocked explicitly: a closed session
	 * releases its locks only once its backend has noticed.) */
	PQclear(PQexec(other, "SELECT pg_advisory_unlock_all()"));
	PQfinish(other);
	assert_int_equal(store_gc_report(s, later, &st, &err), 0);
	assert_false(st.skipped);
	assert_int_equal(st.relationships, 1);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(many_handles_share_the_pools),
	    cmocka_unit_test(an_exhausted_pool_fails_busy_then_recovers),
	    cmocka_unit_test(gc_skips_while_another_node_collects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
