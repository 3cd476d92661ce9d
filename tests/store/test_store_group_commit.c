/*
 * test_store_group_commit.c -- concurrent write transactions of one
 * process (store/README.md, PostgreSQL engine, "group commit"): many
 * threads, each with its own handle (store_reopen), write at once.
 *
 *   - every committed transaction has its own revision, and the committed
 *     revisions are exactly head - n + 1 .. head (gapless, consecutive);
 *   - a transaction's row is visible from its revision on, not before;
 *   - an aborted transaction leaves nothing (its revision is taken by the
 *     next one);
 *   - a transaction whose precondition fails (it read and gave up)
 *     affects no other;
 *   - the change feed reports each revision's change exactly once, and
 *     each revision's nonce is the one any handle reads;
 *   - the settings a write transaction reads are the newest, even when
 *     another handle changed them just before.
 *
 * On PostgreSQL concurrent writers share transactions (group commit, on
 * by default); on SQLite they serialize on the file: the contract is the
 * same.
 */
#include <pthread.h>
#include <unistd.h>

#include "store_fixture.h"

#define THREADS 8
#define ROUNDS 25

/* What one transaction of one thread did. */
typedef struct outcome {
	pemba_revision rev; /* 0: not committed */
	char resource_id[32];
	char error[256]; /* an unexpected failure, "" if none */
} outcome;

typedef struct worker {
	store *s;
	int index;
	outcome out[ROUNDS];
} worker;

/* Round k of a thread: k % 5 == 3 aborts after writing; k % 7 == 4 reads
 * a row that does not exist (a failed precondition) and aborts; the
 * others commit. */
static bool round_commits(int k)
{
	return k % 5 != 3 && k % 7 != 4;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	for (int k = 0; k < ROUNDS; k++) {
		outcome *o = &w->out[k];
		pemba_error err = {0};
		store_txn *t;
		pemba_revision rev = 0;
		snprintf(o->resource_id, sizeof(o->resource_id), "t%d_%d",
		         w->index, k);
		if (store_txn_begin(w->s, &t, &rev, &err)) {
			snprintf(o->error, sizeof(o->error), "begin: %s",
			         err.message);
			continue;
		}
		char text[96];
		snprintf(text, sizeof(text), "doc:%s#viewer@user:u%d",
		         o->resource_id, w->index);
		fixture_rel fr;
		fixture_parse(&fr, text);
		if (store_txn_touch(t, &fr.rel, &err)) {
			snprintf(o->error, sizeof(o->error), "touch: %s",
			         err.message);
			store_txn_abort(t);
			continue;
		}
		if (k % 7 == 4) {
			/* The precondition "doc:missing has a viewer" fails. */
			store_filter f = {.resource_type = "doc",
			                  .resource_id = "missing"};
			store_iter *it;
			const store_rel *row;
			int n = -1;
			if (store_txn_query(t, &f, 1, &it, &err) == 0) {
				n = store_iter_next(it, &row, &err);
				store_iter_close(it);
			}
			if (n != 0)
				snprintf(o->error, sizeof(o->error),
				         "precondition read: %d %s", n,
				         err.message);
			store_txn_abort(t);
			continue;
		}
		if (!round_commits(k)) {
			store_txn_abort(t);
			continue;
		}
		if (store_txn_commit(t, &err)) {
			snprintf(o->error, sizeof(o->error), "commit: %s",
			         err.message);
			continue;
		}
		o->rev = rev;
	}
	return NULL;
}

/* Rows of doc:<id> visible at `at`. */
static int rows_at(store *s, pemba_revision at, const char *id)
{
	store_filter f = {.resource_type = "doc", .resource_id = id};
	char *rows = fixture_query(s, at, &f, NULL, 0);
	int n = *rows ? 1 : 0;
	for (char *p = rows; *p; p++)
		n += *p == ';';
	free(rows);
	return n;
}

typedef struct feed {
	pemba_revision base;
	int touches[THREADS * ROUNDS + 1]; /* per revision - base */
	int revisions[THREADS * ROUNDS + 1];
	char ids[THREADS * ROUNDS + 1][32];
	char bad[256];
} feed;

static int on_change(void *ctx, const store_change *c)
{
	feed *f = ctx;
	pemba_revision i = c->rev - f->base;
	if (c->rev <= f->base || i > THREADS * ROUNDS) {
		snprintf(f->bad, sizeof(f->bad), "revision %llu out of range",
		         (unsigned long long)c->rev);
		return 1;
	}
	if (c->kind == STORE_CHANGE_TOUCH) {
		f->touches[i]++;
		snprintf(f->ids[i], sizeof(f->ids[i]), "%s",
		         c->rel->resource_id);
	} else if (c->kind == STORE_CHANGE_REVISION) {
		f->revisions[i]++;
	} else {
		snprintf(f->bad, sizeof(f->bad), "unexpected change kind %d",
		         (int)c->kind);
	}
	return 0;
}

static void concurrent_writers_get_consecutive_revisions(void **state)
{
	(void)state;
	store *s = fixture_open("sqlite::memory:group_commit");
	pemba_revision base =
	    fixture_write(s, 't', "doc:seed#viewer@user:u", NULL);
	pemba_error err = {0};
	static worker w[THREADS];
	pthread_t th[THREADS];
	for (int i = 0; i < THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].index = i;
		if (store_reopen(s, &w[i].s, &err))
			fail_msg("store_reopen: %s", err.message);
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(
		    pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);

	/* Every committed transaction: its own revision, in base+1..head. */
	static bool seen[THREADS * ROUNDS + 1];
	memset(seen, 0, sizeof(seen));
	int committed = 0;
	pemba_revision head = 0;
	assert_int_equal(store_head_revision(s, &head, &err), 0);
	for (int i = 0; i < THREADS; i++)
		for (int k = 0; k < ROUNDS; k++) {
			const outcome *o = &w[i].out[k];
			if (o->error[0])
				fail_msg("thread %d round %d: %s", i, k,
				         o->error);
			if (round_commits(k) != (o->rev != 0))
				fail_msg("thread %d round %d: committed %d", i,
				         k, o->rev != 0);
			if (!o->rev) {
				/* Aborted: nothing of it at the head. */
				assert_int_equal(rows_at(s, 0, o->resource_id),
				                 0);
				continue;
			}
			committed++;
			if (o->rev <= base || o->rev > head)
				fail_msg("revision %llu outside %llu..%llu",
				         (unsigned long long)o->rev,
				         (unsigned long long)base + 1,
				         (unsigned long long)head);
			if (seen[o->rev - base])
				fail_msg("revision %llu committed twice",
				         (unsigned long long)o->rev);
			seen[o->rev - base] = true;
			/* Visible exactly from its revision on. */
			assert_int_equal(rows_at(s, o->rev, o->resource_id), 1);
			assert_int_equal(rows_at(s, o->rev - 1, o->resource_id),
			                 0);
		}
	/* Gapless: n commits are exactly the n revisions after base. */
	assert_int_equal(head - base, (pemba_revision)committed);

	/* The change feed: each revision once, with its one TOUCH. */
	static feed f;
	memset(&f, 0, sizeof(f));
	f.base = base;
	assert_int_equal(store_changes(s, base, head, on_change, &f, &err), 0);
	if (f.bad[0])
		fail_msg("change feed: %s", f.bad);
	for (int i = 0; i < THREADS; i++)
		for (int k = 0; k < ROUNDS; k++) {
			const outcome *o = &w[i].out[k];
			if (!o->rev)
				continue;
			pemba_revision j = o->rev - base;
			assert_int_equal(f.revisions[j], 1);
			assert_int_equal(f.touches[j], 1);
			assert_string_equal(f.ids[j], o->resource_id);
		}

	/* Nonces: what the writer's handle answers (from its cache) is what
	 * a handle that never saw the revision reads. */
	store *fresh;
	assert_int_equal(store_reopen(s, &fresh, &err), 0);
	for (int i = 0; i < THREADS; i++) {
		const outcome *o = &w[i].out[0];
		assert_true(o->rev != 0);
		uint64_t a = 0, b = 0;
		assert_int_equal(store_revision_nonce(w[i].s, o->rev, &a, &err),
		                 0);
		assert_int_equal(store_revision_nonce(fresh, o->rev, &b, &err),
		                 0);
		assert_true(a != 0);
		assert_true(a == b);
	}
	store_close(fresh);
	for (int i = 0; i < THREADS; i++)
		store_close(w[i].s);
	store_close(s);
}

/* Settings changed by another handle just before are what the next write
 * transaction reads (nothing is cached across transactions). */
static void a_write_reads_the_newest_settings(void **state)
{
	(void)state;
	store *a = fixture_open("sqlite::memory:group_settings");
	store *b;
	pemba_error err = {0};
	assert_int_equal(store_reopen(a, &b, &err), 0);
	for (int round = 0; round < 2; round++) {
		bool on = round == 0;
		assert_int_equal(store_set_read_only(b, on, &err), 0);
		assert_int_equal(
		    store_set_deprecation(b, "doc", "viewer",
		                          on ? STORE_DEPRECATION_REJECT
		                             : STORE_DEPRECATION_WARN,
		                          &err),
		    0);
		store_txn *t;
		assert_int_equal(store_txn_begin(a, &t, NULL, &err), 0);
		bool ro = !on;
		assert_int_equal(store_get_read_only(a, &ro, &err), 0);
		assert_true(ro == on);
		store_deprecation *list = NULL;
		size_t n = 0;
		assert_int_equal(store_list_deprecations(a, &list, &n, &err),
		                 0);
		assert_int_equal(n, 1);
		assert_int_equal(list[0].mode, on ? STORE_DEPRECATION_REJECT
		                                  : STORE_DEPRECATION_WARN);
		free(list);
		store_txn_abort(t);
	}
	store_close(b);
	store_close(a);
}


/* ------------------------------------------- SQLite: writers take turns */

/* The order in which write transactions got the write lock. */
static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static char order[16];

static void note_turn(char who)
{
	pthread_mutex_lock(&order_mu);
	size_t n = strlen(order);
	if (n + 1 < sizeof(order))
		order[n] = who;
	pthread_mutex_unlock(&order_mu);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

typedef struct turn_writer {
	store *s;
	char name;
	long start_ms; /* begins after this long */
	char error[256];
} turn_writer;

/* One write transaction (noted when it holds the lock). */
static void *turn_main(void *arg)
{
	turn_writer *w = arg;
	sleep_ms(w->start_ms);
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	if (store_txn_begin(w->s, &t, &rev, &err)) {
		snprintf(w->error, sizeof(w->error), "begin: %s", err.message);
		return NULL;
	}
	note_turn(w->name);
	if (store_txn_commit(t, &err))
		snprintf(w->error, sizeof(w->error), "commit: %s",
		         err.message);
	return NULL;
}

/*
 * A writer that commits and begins again at once (a relationship copy,
 * batch after batch) must not starve writers that were already waiting:
 * within one process, writers of a SQLite datastore take the lock in
 * arrival order (src/store/store_sqlite.c, "the write gate").  A holds
 * the lock, B and then C start waiting, A commits and begins again at
 * once: the order is A B C A.  (SQLite's own busy wait let A win again.)
 */
static void waiting_writers_go_before_a_writer_that_returns(void **state)
{
	(void)state;
	FIXTURE_SQLITE_ONLY("PostgreSQL queues lock waiters itself and groups "
	                 "concurrent writers into one commit");
	store *s = fixture_open("sqlite::memory:turns");
	fixture_write(s, 't', "doc:seed#viewer@user:u", NULL);
	pemba_error err = {0};
	store *a = s, *b, *c;
	assert_int_equal(store_reopen(s, &b, &err), 0);
	assert_int_equal(store_reopen(s, &c, &err), 0);
	memset(order, 0, sizeof(order));
	store_txn *t;
	pemba_revision rev;
	assert_int_equal(store_txn_begin(a, &t, &rev, &err), 0);
	note_turn('A');
	turn_writer wb = {.s = b, .name = 'B', .start_ms = 0};
	turn_writer wc = {.s = c, .name = 'C', .start_ms = 100};
	pthread_t tb, tc;
	assert_int_equal(pthread_create(&tb, NULL, turn_main, &wb), 0);
	assert_int_equal(pthread_create(&tc, NULL, turn_main, &wc), 0);
	sleep_ms(400); /* B and C wait (C after B) */
	assert_int_equal(store_txn_commit(t, &err), 0);
	assert_int_equal(store_txn_begin(a, &t, &rev, &err), 0);
	note_turn('A');
	assert_int_equal(store_txn_commit(t, &err), 0);
	pthread_join(tb, NULL);
	pthread_join(tc, NULL);
	assert_string_equal(wb.error, "");
	assert_string_equal(wc.error, "");
	assert_string_equal(order, "ABCA");
	store_close(b);
	store_close(c);
	store_close(s);
}

/* Group sync on an SQLite file (store_sqlite.c, "Group sync"): 8 threads
 * x 25 commits, each acknowledged only after an fdatasync that began
 * after it; with commits arriving together, fewer syncs than commits.
 * Then every handle is closed (SQLite removes the WAL file), a new handle
 * writes, and its commit is synced through the new WAL file. */
typedef struct sync_writer {
	store *s;
	int index;
	int failures;
} sync_writer;

static void *sync_writer_main(void *arg)
{
	sync_writer *w = arg;
	for (int k = 0; k < ROUNDS; k++) {
		char text[96];
		snprintf(text, sizeof(text), "doc:s%d_%d#viewer@user:u", w->index,
		         k);
		fixture_rel fr;
		fixture_parse(&fr, text);
		pemba_error err = {0};
		store_txn *t;
		pemba_revision rev;
		if (store_txn_begin(w->s, &t, &rev, &err) ||
		    store_txn_touch(t, &fr.rel, &err) ||
		    store_txn_commit(t, &err))
			w->failures++;
	}
	return NULL;
}

static void file_writers_share_syncs(void **state)
{
	(void)state;
	FIXTURE_SQLITE_ONLY("group sync is the SQLite file engine's");
	char *dir = fixture_tmpdir();
	char uri[600];
	snprintf(uri, sizeof(uri), "sqlite://%s/sync.db", dir);
	store *s = fixture_open(uri);
	uint64_t commits0, syncs0, commits, syncs;
	fixture_write(s, 't', "doc:seed#viewer@user:u", NULL);
	assert_int_equal(store_sqlite_sync_counts(s, &commits0, &syncs0), 0);
	assert_true(commits0 >= 1 && syncs0 >= 1);
	sync_writer w[THREADS];
	pthread_t tid[THREADS];
	pemba_error err = {0};
	for (int i = 0; i < THREADS; i++) {
		w[i] = (sync_writer){.index = i};
		assert_int_equal(store_reopen(s, &w[i].s, &err), 0);
		assert_int_equal(
		    pthread_create(&tid[i], NULL, sync_writer_main, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(tid[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(store_sqlite_sync_counts(s, &commits, &syncs), 0);
	assert_int_equal(commits - commits0, THREADS * ROUNDS);
	/* every commit waited for a sync; concurrent ones shared */
	assert_true(syncs - syncs0 >= 1);
	assert_true(syncs - syncs0 < (uint64_t)(THREADS * ROUNDS));
	/* Read transactions end with COMMIT too: they sync nothing. */
	for (int i = 0; i < 50; i++) {
		assert_int_equal(store_read_begin(s, &err), 0);
		char *rows = fixture_query(
		    s, 0, &(store_filter){.resource_type = "doc"}, NULL, 1);
		free(rows);
		store_read_end(s);
	}
	uint64_t commits2, syncs2;
	assert_int_equal(store_sqlite_sync_counts(s, &commits2, &syncs2), 0);
	assert_int_equal(commits2, commits);
	assert_int_equal(syncs2, syncs);
	for (int i = 0; i < THREADS; i++)
		store_close(w[i].s);
	store_close(s);
	/* The last close removed the WAL; a new one is made and synced. */
	char wal[640];
	snprintf(wal, sizeof(wal), "%s/sync.db-wal", dir);
	assert_int_not_equal(access(wal, F_OK), 0);
	s = fixture_open(uri);
	pemba_revision head =
	    fixture_write(s, 't', "doc:after#viewer@user:u", NULL);
	assert_int_equal(store_sqlite_sync_counts(s, &commits, &syncs), 0);
	assert_true(commits >= 1 && syncs >= 1);
	assert_int_equal(access(wal, F_OK), 0);
	char *rows = fixture_query(
	    s, head, &(store_filter){.resource_type = "doc"}, NULL, 0);
	size_t nrows = 1;
	for (const char *p = rows; *p; p++)
		nrows += *p == ';';
	assert_int_equal(nrows, 1 + THREADS * ROUNDS + 1);
	free(rows);
	store_close(s);
	/* ?sync=full: SQLite syncs in the commit; no group sync. */
	snprintf(uri, sizeof(uri), "sqlite://%s/sync.db?sync=full", dir);
	s = fixture_open(uri);
	fixture_write(s, 't', "doc:full#viewer@user:u", NULL);
	assert_int_equal(store_sqlite_sync_counts(s, &commits, &syncs), -1);
	store_close(s);
	snprintf(uri, sizeof(uri), "sqlite://%s/sync.db?sync=often", dir);
	store *bad = NULL;
	assert_int_not_equal(store_open(uri, NULL, &bad, &err), 0);
	assert_non_null(strstr(err.message, "sync=group, sync=full"));
	fixture_rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(concurrent_writers_get_consecutive_revisions),
	    cmocka_unit_test(a_write_reads_the_newest_settings),
	    cmocka_unit_test(
	        waiting_writers_go_before_a_writer_that_returns),
	    cmocka_unit_test(file_writers_share_syncs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
