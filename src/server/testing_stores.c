/*
 * testing_stores.c -- serve-testing's datastores: one empty in-memory
 * datastore per distinct bearer token (as `spicedb serve-testing`), so
 * test suites running in parallel never see each other's data.  Calls
 * without a token share the store of "".
 *
 * Memory is bounded: at most max_stores stores exist.  A store nobody has
 * used for idle_seconds is dropped (its data is gone; the next call with
 * that token starts empty), and when the table is full the least recently
 * used idle store makes room.  A store with calls in flight is never
 * dropped; if all max_stores are busy, a new token is refused
 * (PEMBA_ELIMIT -> RESOURCE_EXHAUSTED).
 *
 * Each store is a db_pool over "sqlite::memory:pemba-testing-<pid>-<n>":
 * a named memory datastore, so every worker can hold its own clone.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"
#include "util/error.h"
#include "util/xalloc.h"

typedef struct store_entry {
	char *token;
	size_t len;
	db_pool *pool;
	int calls;            /* calls in flight */
	struct timespec last; /* CLOCK_MONOTONIC of the last release */
} store_entry;

struct testing_stores {
	pthread_mutex_t mu;
	store_entry **entries;
	size_t n, max;
	int idle_seconds;
	unsigned long next_id;
};

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double entry_last(const store_entry *e)
{
	return (double)e->last.tv_sec + e->last.tv_nsec / 1e9;
}

testing_stores *testing_stores_new(size_t max_stores, int idle_seconds)
{
	testing_stores *ts = xcalloc(1, sizeof(*ts));
	pthread_mutex_init(&ts->mu, NULL);
	ts->max = max_stores ? max_stores : TESTING_DEFAULT_MAX_STORES;
	ts->idle_seconds =
	    idle_seconds > 0 ? idle_seconds : TESTING_DEFAULT_IDLE_SECONDS;
	ts->entries = xcalloc(ts->max, sizeof(*ts->entries));
	return ts;
}

static void entry_free(store_entry *e)
{
	db_pool_close(e->pool);
	free(e->token);
	free(e);
}

/* Removes entry i (the caller holds the mutex). */
static void drop_entry(testing_stores *ts, size_t i)
{
	entry_free(ts->entries[i]);
	ts->entries[i] = ts->entries[--ts->n];
}

static store_entry *find_entry(testing_stores *ts, const char *token,
                               size_t len)
{
	for (size_t i = 0; i < ts->n; i++) {
		store_entry *e = ts->entries[i];
		if (e->len == len && memcmp(e->token, token, len) == 0)
			return e;
	}
	return NULL;
}

/* Drops idle stores past the idle timeout, and when the table is still
 * full the least recently used idle one. */
static void make_room(testing_stores *ts)
{
	double now = now_seconds();
	for (size_t i = 0; i < ts->n;) {
		store_entry *e = ts->entries[i];
		if (e->calls == 0 && now - entry_last(e) >= ts->idle_seconds)
			drop_entry(ts, i);
		else
			i++;
	}
	if (ts->n < ts->max)
		return;
	size_t victim = ts->n;
	for (size_t i = 0; i < ts->n; i++) {
		store_entry *e = ts->entries[i];
		if (e->calls == 0 &&
		    (victim == ts->n ||
		     entry_last(e) < entry_last(ts->entries[victim])))
			victim = i;
	}
	if (victim < ts->n)
		drop_entry(ts, victim);
}

int testing_stores_acquire(testing_stores *ts, const char *token, size_t len,
                           bool long_lived, pemba_db **out, pemba_error *err)
{
	int rc = 0;
	pthread_mutex_lock(&ts->mu);
	store_entry *e = find_entry(ts, token, len);
	if (!e) {
		make_room(ts);
		if (ts->n >= ts->max) {
			pthread_mutex_unlock(&ts->mu);
			return error_set(err, PEMBA_ELIMIT,
			                 "too many serve-testing datastores in "
			                 "use (at most %zu)",
			                 ts->max);
		}
		char uri[96];
		snprintf(uri, sizeof(uri),
		         "sqlite::memory:pemba-testing-%ld-%lu", (long)getpid(),
		         ++ts->next_id);
		db_pool *pool;
		rc = db_pool_open(uri, NULL, 8, &pool, err);
		if (rc < 0) {
			pthread_mutex_unlock(&ts->mu);
			return rc;
		}
		e = xcalloc(1, sizeof(*e));
		e->token = xmalloc(len + 1);
		memcpy(e->token, token, len);
		e->token[len] = '\0';
		e->len = len;
		e->pool = pool;
		clock_gettime(CLOCK_MONOTONIC, &e->last);
		ts->entries[ts->n++] = e;
	}
	e->calls++;
	pthread_mutex_unlock(&ts->mu);
	/* The entry cannot go away while calls > 0. */
	rc = db_pool_acquire(e->pool, long_lived, out, err);
	if (rc < 0) {
		pthread_mutex_lock(&ts->mu);
		e->calls--;
		pthread_mutex_unlock(&ts->mu);
	}
	return rc;
}

void testing_stores_release(testing_stores *ts, const char *token, size_t len,
                            bool long_lived, pemba_db *db)
{
	pthread_mutex_lock(&ts->mu);
	store_entry *e = find_entry(ts, token, len);
	pthread_mutex_unlock(&ts->mu);
	if (!e) { /* cannot happen: calls > 0 pins it */
		pemba_close(db);
		return;
	}
	db_pool_release(e->pool, db, long_lived);
	pthread_mutex_lock(&ts->mu);
	e->calls--;
	clock_gettime(CLOCK_MONOTONIC, &e->last);
	pthread_mutex_unlock(&ts->mu);
}

size_t testing_stores_count(testing_stores *ts)
{
	pthread_mutex_lock(&ts->mu);
	size_t n = ts->n;
	pthread_mutex_unlock(&ts->mu);
	return n;
}

void testing_stores_free(testing_stores *ts)
{
	if (!ts)
		return;
	for (size_t i = 0; i < ts->n; i++)
		entry_free(ts->entries[i]);
	pthread_mutex_destroy(&ts->mu);
	free(ts->entries);
	free(ts);
}
