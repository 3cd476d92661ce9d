/*
 * db_pool.c -- handles over one datastore, lent to calls one at a time.
 *
 * pemba_db handles are single-threaded; pemba_clone gives independent
 * handles on the same file or named memory datastore.  The pool keeps a
 * primary handle that is never lent (it is the clone source, used only
 * under the pool mutex, and keeps a memory datastore alive) and a stack of
 * idle clones.  A call takes an idle clone or a new one, so the number of
 * clones settles at the peak number of concurrent calls (the worker count).
 */
#include <pthread.h>
#include <stdlib.h>

#include "server/server.h"
#include "util/xalloc.h"

struct db_pool {
	pthread_mutex_t mu;
	pemba_db *primary;
	pemba_db **idle;
	size_t nidle, max_idle;
	size_t in_use;
};

int db_pool_open(const char *uri, const pemba_options *opts, size_t max_idle,
                 db_pool **out, pemba_error *err)
{
	pemba_db *db;
	int rc = pemba_open(uri, opts, &db, err);
	if (rc < 0)
		return rc;
	db_pool *p = xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
	p->primary = db;
	p->max_idle = max_idle ? max_idle : 1;
	p->idle = xcalloc(p->max_idle, sizeof(*p->idle));
	*out = p;
	return 0;
}

int db_pool_acquire(db_pool *p, bool long_lived, pemba_db **out,
                    pemba_error *err)
{
	int rc = 0;
	pthread_mutex_lock(&p->mu);
	if (!long_lived && p->nidle > 0)
		*out = p->idle[--p->nidle];
	else
		rc = pemba_clone(p->primary, out, err);
	if (rc == 0)
		p->in_use++;
	pthread_mutex_unlock(&p->mu);
	return rc;
}

void db_pool_release(db_pool *p, pemba_db *db, bool long_lived)
{
	pthread_mutex_lock(&p->mu);
	p->in_use--;
	if (!long_lived && p->nidle < p->max_idle) {
		p->idle[p->nidle++] = db;
		db = NULL;
	}
	pthread_mutex_unlock(&p->mu);
	pemba_close(db); /* NULL is a no-op */
}

size_t db_pool_in_use(db_pool *p)
{
	pthread_mutex_lock(&p->mu);
	size_t n = p->in_use;
	pthread_mutex_unlock(&p->mu);
	return n;
}

void db_pool_close(db_pool *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nidle; i++)
		pemba_close(p->idle[i]);
	pemba_close(p->primary);
	pthread_mutex_destroy(&p->mu);
	free(p->idle);
	free(p);
}
