/*
 * deprecation_usage.c -- finding the callers of a deprecated relation or
 * permission: the requests that name one are counted per caller, logged
 * (rate-limited) and, in REJECT mode, refused.
 *
 * Deprecations live in the datastore (store.h, "datastore settings");
 * writes read them inside their own transaction (core/settings.c).  Reads
 * must not pay a datastore query for them, so each server keeps a copy of
 * the set, re-read at most every SVC_DEPRECATIONS_POLL_MS by whichever
 * call finds it stale (the others go on with the old copy), and at once
 * after this server changed it (svc_deprecations_reload).  With nothing
 * deprecated, a read pays three atomic loads and a coarse clock read.
 *
 * Usage counters are kept here, in memory, per (target, caller, method):
 * a caller is the peer's IP address (no port: each connection has a new
 * one) and the name of the preshared key it presented (server.c).  At
 * most SVC_USAGE_MAX_CALLERS rows (caller, method) per target; further
 * callers are counted under the caller "other", one row per method.
 * Nothing is written on the read path, so the counts are those of this
 * server process since it first saw the deprecation; with several
 * servers, ask each.  A target's counters are dropped when its
 * deprecation is lifted.
 *
 * Locking: `lock` guards the targets and their rows; `reload_lock` lets
 * one call at a time re-read the set (taken before `lock`, never inside
 * it).  The log callback runs with no lock held.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/services.h"
#include "util/error.h"
#include "util/xalloc.h"

typedef struct usage_target {
	char *resource_type;
	char *name;
	pemba_deprecation_mode mode;
	bool in_set; /* scratch during a reload */
	svc_usage_row *rows;
	size_t nrows, cap;
	size_t ncallers; /* rows that are not "other" */
	/* Per row: rate limiting of its log line. */
	int64_t *logged_ms; /* monotonic ms of its last line, 0: none */
	uint64_t *unlogged; /* uses since that line */
} usage_target;

struct svc_deprecations {
	pthread_mutex_t lock;
	pthread_mutex_t reload_lock;
	_Atomic int64_t loaded_ms; /* monotonic ms of the last read, 0: never
	                              (or invalidated) */
	atomic_bool any;           /* the copy is not empty */
	int64_t since_ms;          /* wall clock when counting began */
	usage_target *targets;
	size_t ntargets;
};

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

/* ============================================================= clocks */

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	/* +1: 0 means "never" in loaded_ms and logged_ms. */
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ====================================================== the per-backend */

static struct svc_deprecations *get(svc_backend *b)
{
	struct svc_deprecations *d =
	    __atomic_load_n(&b->deprecations, __ATOMIC_ACQUIRE);
	if (d != NULL)
		return d;
	pthread_mutex_lock(&create_lock);
	d = b->deprecations;
	if (d == NULL) {
		d = xcalloc(1, sizeof(*d));
		pthread_mutex_init(&d->lock, NULL);
		pthread_mutex_init(&d->reload_lock, NULL);
		atomic_init(&d->loaded_ms, 0);
		atomic_init(&d->any, false);
		d->since_ms = wall_ms();
		__atomic_store_n(&b->deprecations, d, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&create_lock);
	return d;
}

static void target_clear(usage_target *t)
{
	free(t->resource_type);
	free(t->name);
	free(t->rows);
	free(t->logged_ms);
	free(t->unlogged);
}

void svc_deprecations_free(svc_backend *b)
{
	pthread_mutex_lock(&create_lock);
	struct svc_deprecations *d = b->deprecations;
	b->deprecations = NULL;
	pthread_mutex_unlock(&create_lock);
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->ntargets; i++)
		target_clear(&d->targets[i]);
	free(d->targets);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->reload_lock);
	free(d);
}

/* Under d->lock. */
static usage_target *find_target(struct svc_deprecations *d, const char *type,
                                 const char *name)
{
	for (size_t i = 0; i < d->ntargets; i++)
		if (strcmp(d->targets[i].name, name) == 0 &&
		    strcmp(d->targets[i].resource_type, type) == 0)
			return &d->targets[i];
	return NULL;
}

/* ============================================================ reloads */

/* Re-reads the set through db when it is older than the poll interval
 * (or never read, or invalidated).  `wait`: block for a reload another
 * call is doing; otherwise leave it to that call and use the old copy.
 * A failed read keeps the old copy until the next interval. */
static void reload(struct svc_deprecations *d, pemba_db *db, bool wait)
{
	if (wait)
		pthread_mutex_lock(&d->reload_lock);
	else if (pthread_mutex_trylock(&d->reload_lock) != 0)
		return;
	int64_t now = monotonic_ms();
	int64_t loaded = atomic_load(&d->loaded_ms);
	if (loaded != 0 && now - loaded < SVC_DEPRECATIONS_POLL_MS) {
		pthread_mutex_unlock(&d->reload_lock);
		return; /* another call just did it */
	}
	pemba_deprecation *list = NULL;
	size_t n = 0;
	pemba_error err = {0};
	if (db == NULL || pemba_list_deprecations(db, &list, &n, &err) < 0) {
		atomic_store(&d->loaded_ms, now);
		pthread_mutex_unlock(&d->reload_lock);
		return;
	}
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->ntargets; i++)
		d->targets[i].in_set = false;
	for (size_t i = 0; i < n; i++) {
		usage_target *t =
		    find_target(d, list[i].resource_type, list[i].relation);
		if (t == NULL) {
			d->targets =
			    xrealloc(d->targets,
			             (d->ntargets + 1) * sizeof(*d->targets));
			t = &d->targets[d->ntargets++];
			memset(t, 0, sizeof(*t));
			t->resource_type = xstrdup(list[i].resource_type);
			t->name = xstrdup(list[i].relation);
		}
		/* A new mode is news: each caller's next use is logged. */
		if (t->mode != list[i].mode)
			for (size_t k = 0; k < t->nrows; k++)
				t->logged_ms[k] = 0;
		t->mode = list[i].mode;
		t->in_set = true;
	}
	/* Lifted deprecations take their counters with them. */
	size_t kept = 0;
	for (size_t i = 0; i < d->ntargets; i++) {
		if (d->targets[i].in_set)
			d->targets[kept++] = d->targets[i];
		else
			target_clear(&d->targets[i]);
	}
	d->ntargets = kept;
	atomic_store(&d->any, kept > 0);
	pthread_mutex_unlock(&d->lock);
	atomic_store(&d->loaded_ms, now);
	pthread_mutex_unlock(&d->reload_lock);
	pemba_free(list);
}

void svc_deprecations_reload(svc_backend *b, pemba_db *db)
{
	struct svc_deprecations *d = get(b);
	atomic_store(&d->loaded_ms, 0);
	reload(d, db, true);
}

/* ================================================================ uses */

/* Copies at most size-1 bytes of src (NULL: "") into dst. */
static void copy_text(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

/* The method of a call: the last part of its path. */
static const char *call_method(grpc_call *call)
{
	const char *path = call ? grpc_call_path(call) : NULL;
	if (path == NULL)
		return "";
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* Under d->lock: the row of (peer, key, method) in t, added when new
 * (as "other" once t has SVC_USAGE_MAX_CALLERS callers); its index. */
static size_t find_row(usage_target *t, const char *peer, const char *key,
                       const char *method, int64_t now_wall)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < t->nrows; i++) {
			const svc_usage_row *r = &t->rows[i];
			if (strcmp(r->peer, peer) == 0 &&
			    strcmp(r->key, key) == 0 &&
			    strcmp(r->method, method) == 0)
				return i;
		}
		if (pass == 0 && t->ncallers >= SVC_USAGE_MAX_CALLERS) {
			peer = SVC_USAGE_OTHER;
			key = "";
			continue;
		}
		break;
	}
	if (t->nrows == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 8;
		t->rows = xrealloc(t->rows, t->cap * sizeof(*t->rows));
		t->logged_ms =
		    xrealloc(t->logged_ms, t->cap * sizeof(*t->logged_ms));
		t->unlogged =
		    xrealloc(t->unlogged, t->cap * sizeof(*t->unlogged));
	}
	size_t i = t->nrows++;
	svc_usage_row *r = &t->rows[i];
	memset(r, 0, sizeof(*r));
	copy_text(r->peer, sizeof(r->peer), peer);
	copy_text(r->key, sizeof(r->key), key);
	copy_text(r->method, sizeof(r->method), method);
	r->first_ms = now_wall;
	t->logged_ms[i] = 0;
	t->unlogged[i] = 0;
	if (strcmp(peer, SVC_USAGE_OTHER) != 0)
		t->ncallers++;
	return i;
}

/* Counts one use of type#name by call (when it is in the copy) and logs
 * it when its row's line is due.  *mode_out: the deprecation's mode, 0
 * when type#name is not deprecated. */
static void count_use(svc_backend *b, grpc_call *call, const char *type,
                      const char *name, bool may_log,
                      pemba_deprecation_mode *mode_out)
{
	struct svc_deprecations *d = get(b);
	const char *peer = call ? grpc_call_peer(call) : "";
	const char *key = call ? grpc_call_principal(call) : NULL;
	const char *method = call_method(call);
	*mode_out = 0;
	char line[640];
	line[0] = '\0';
	pthread_mutex_lock(&d->lock);
	usage_target *t = find_target(d, type, name);
	if (t != NULL) {
		*mode_out = t->mode;
		int64_t now = monotonic_ms();
		size_t i = find_row(t, peer[0] ? peer : "unknown",
		                    key ? key : "", method, wall_ms());
		svc_usage_row *r = &t->rows[i];
		r->count++;
		r->last_ms = wall_ms();
		if (!may_log) {
			/* the caller logs it */
		} else if (t->logged_ms[i] == 0 ||
		           now - t->logged_ms[i] >= SVC_USAGE_LOG_INTERVAL_MS) {
			char more[64] = "";
			if (t->unlogged[i] > 0)
				snprintf(more, sizeof(more),
				         " (and %llu time%s since the last "
				         "warning)",
				         (unsigned long long)t->unlogged[i],
				         t->unlogged[i] == 1 ? "" : "s");
			char who[128] = "";
			if (r->key[0])
				snprintf(who, sizeof(who), " (key \"%s\")",
				         r->key);
			snprintf(line, sizeof(line),
			         "deprecated %s#%s %s %s from %s%s%s", type,
			         name,
			         t->mode == PEMBA_DEPRECATION_REJECT
			             ? "(reject) refused to"
			             : "used by",
			         r->method[0] ? r->method : "a call", r->peer,
			         who, more);
			t->logged_ms[i] = now;
			t->unlogged[i] = 0;
		} else {
			t->unlogged[i]++;
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (line[0] && b->log != NULL)
		b->log(b->log_ctx, 1, line);
}

int svc_deprecation_use(svc_request *req, const char *resource_type,
                        const char *name, bool refuse, pemba_error *err)
{
	if (resource_type == NULL || resource_type[0] == '\0' || name == NULL ||
	    name[0] == '\0' || req->backend->private_datastores)
		return PEMBA_OK;
	struct svc_deprecations *d = get(req->backend);
	int64_t loaded =
	    atomic_load_explicit(&d->loaded_ms, memory_order_relaxed);
	if (loaded == 0 || monotonic_ms() - loaded >= SVC_DEPRECATIONS_POLL_MS)
		reload(d, req->db, loaded == 0);
	if (!atomic_load_explicit(&d->any, memory_order_acquire))
		return PEMBA_OK; /* the usual case */
	pemba_deprecation_mode mode;
	count_use(req->backend, req->call, resource_type, name, true, &mode);
	if (mode == PEMBA_DEPRECATION_REJECT && refuse)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "`%s#%s` is deprecated (reject): %s naming it "
		                 "is refused; `pemba relation undeprecate "
		                 "%s#%s` lifts the deprecation",
		                 resource_type, name, call_method(req->call),
		                 resource_type, name);
	return PEMBA_OK;
}

void svc_log_deprecation(void *ctx, const pemba_deprecation_warning *w)
{
	const svc_write_caller *c = ctx;
	if (c == NULL || c->backend == NULL)
		return;
	svc_backend *b = c->backend;
	/* The write is counted as a use by its caller (when this server's
	 * copy of the set has caught up with the deprecation). */
	pemba_deprecation_mode mode;
	count_use(b, c->call, w->resource_type, w->relation, false, &mode);
	if (b->log == NULL)
		return;
	char line[1400];
	const char *key = c->call ? grpc_call_principal(c->call) : NULL;
	const char *peer = c->call ? grpc_call_peer(c->call) : "";
	char who[128] = "";
	if (key)
		snprintf(who, sizeof(who), " (key \"%s\")", key);
	/* Level 1: a warning, printed by `pemba serve` (one line per write
	 * and deprecated relation). */
	snprintf(line, sizeof(line), "%s; by %s from %s%s", w->message,
	         call_method(c->call), peer[0] ? peer : "unknown", who);
	b->log(b->log_ctx, 1, line);
}

/* ============================================================= reports */

size_t svc_deprecation_usage(svc_backend *b, const char *resource_type,
                             const char *name, svc_usage_row **out,
                             int64_t *since_ms)
{
	struct svc_deprecations *d = get(b);
	*out = NULL;
	size_t n = 0;
	pthread_mutex_lock(&d->lock);
	if (since_ms)
		*since_ms = d->since_ms;
	usage_target *t = find_target(d, resource_type, name);
	if (t != NULL && t->nrows > 0) {
		n = t->nrows;
		*out = xmalloc(n * sizeof(**out));
		memcpy(*out, t->rows, n * sizeof(**out));
	}
	pthread_mutex_unlock(&d->lock);
	return n;
}
