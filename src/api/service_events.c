/*
 * service_events.c -- revision events for Watch streams.
 *
 * A waiting Watch stream holds no worker and no thread: it registers its
 * call here and returns GRPC_STEP_WAIT.  One notifier thread per backend
 * sleeps on the process-wide commit generation (pemba_wait_commit); when
 * it moves -- or, for a datastore other processes may write, when the
 * polled head moved -- it bumps `generation` and wakes every registered
 * call, which then looks for changes itself.  Wakes are one-shot: a call
 * that finds nothing registers again.
 *
 * No lost wakeups: a stream reads the generation *before* it looks for
 * changes and registers only if the generation is still the one it read;
 * the notifier bumps the generation (under the lock) before it wakes the
 * registered calls, and only after the commit it reacts to is visible.
 *
 * Lock order: events->lock, then (inside grpc_call_wake) the call's and
 * the transport's locks.  Nothing here is called with a call lock held.
 * A call is woken only while registered, and svc_events_forget (run by
 * the stream's release, under events->lock) unregisters it before the
 * call can be freed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "util/xalloc.h"

struct svc_events {
	svc_backend *backend;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool stop;
	uint64_t generation;
	grpc_call **waiters;
	size_t nwaiters, cap;
};

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

/* Wakes every registered call and forgets them.  Under ev->lock. */
static void wake_all(struct svc_events *ev)
{
	ev->generation++;
	for (size_t i = 0; i < ev->nwaiters; i++)
		grpc_call_wake(ev->waiters[i]);
	ev->nwaiters = 0;
}

static void *notifier_main(void *arg)
{
	struct svc_events *ev = arg;
	svc_backend *b = ev->backend;
	pemba_db *db = NULL;
	pemba_revision polled = 0;
	bool have_polled = false;
	uint64_t seen = pemba_commit_generation();
	for (;;) {
		pthread_mutex_lock(&ev->lock);
		bool stop = ev->stop;
		bool idle = ev->nwaiters == 0;
		pthread_mutex_unlock(&ev->lock);
		if (stop)
			break;
		uint64_t now = pemba_wait_commit(seen, SVC_EVENTS_POLL_MS);
		bool moved = now != seen;
		seen = now;
		if (!moved && !idle && b->shared_datastore) {
			/* Another process may have committed. */
			if (db == NULL) {
				const char *message;
				if (b->acquire(b->ctx, NULL, SVC_ACQUIRE_LONG,
				               &db, &message) != GRPC_STATUS_OK)
					db = NULL;
			}
			pemba_revision head = 0;
			pemba_error err = {0};
			if (db != NULL &&
			    pemba_head_revision(db, &head, &err) == 0) {
				moved = have_polled && head != polled;
				polled = head;
				have_polled = true;
			}
		}
		if (moved) {
			pthread_mutex_lock(&ev->lock);
			wake_all(ev);
			pthread_mutex_unlock(&ev->lock);
		}
	}
	if (db != NULL)
		b->release(b->ctx, NULL, SVC_ACQUIRE_LONG, db);
	return NULL;
}

struct svc_events *svc_events_get(svc_backend *backend)
{
	pthread_mutex_lock(&create_lock);
	struct svc_events *ev = backend->events;
	if (ev == NULL) {
		ev = xcalloc(1, sizeof(*ev));
		ev->backend = backend;
		pthread_mutex_init(&ev->lock, NULL);
		pthread_cond_init(&ev->cond, NULL);
		if (pthread_create(&ev->thread, NULL, notifier_main, ev) != 0)
			abort(); /* as out of memory: nothing sane to do */
		backend->events = ev;
	}
	pthread_mutex_unlock(&create_lock);
	return ev;
}

uint64_t svc_events_generation(struct svc_events *ev)
{
	pthread_mutex_lock(&ev->lock);
	uint64_t g = ev->generation;
	pthread_mutex_unlock(&ev->lock);
	return g;
}

bool svc_events_wait(struct svc_events *ev, grpc_call *call, uint64_t gen)
{
	pthread_mutex_lock(&ev->lock);
	if (ev->generation != gen) {
		pthread_mutex_unlock(&ev->lock);
		return false;
	}
	for (size_t i = 0; i < ev->nwaiters; i++)
		if (ev->waiters[i] == call) {
			pthread_mutex_unlock(&ev->lock);
			return true;
		}
	if (ev->nwaiters == ev->cap) {
		ev->cap = ev->cap ? 2 * ev->cap : 64;
		ev->waiters =
		    xrealloc(ev->waiters, ev->cap * sizeof(*ev->waiters));
	}
	ev->waiters[ev->nwaiters++] = call;
	pthread_mutex_unlock(&ev->lock);
	return true;
}

void svc_events_forget(struct svc_events *ev, grpc_call *call)
{
	pthread_mutex_lock(&ev->lock);
	for (size_t i = 0; i < ev->nwaiters; i++)
		if (ev->waiters[i] == call) {
			ev->waiters[i] = ev->waiters[--ev->nwaiters];
			break;
		}
	pthread_mutex_unlock(&ev->lock);
}

void services_stop(svc_backend *backend)
{
	svc_deprecations_free(backend);
	pthread_mutex_lock(&create_lock);
	struct svc_events *ev = backend->events;
	backend->events = NULL;
	pthread_mutex_unlock(&create_lock);
	if (ev == NULL)
		return;
	pthread_mutex_lock(&ev->lock);
	ev->stop = true;
	pthread_mutex_unlock(&ev->lock);
	pthread_join(ev->thread, NULL);
	free(ev->waiters);
	pthread_mutex_destroy(&ev->lock);
	pthread_cond_destroy(&ev->cond);
	free(ev);
}
