/*
 * store.c -- the engine-independent half of the datastore interface.
 *
 * store_open() picks an engine by the URI's scheme; every other store_*
 * function checks what can be checked without an engine (NULL arguments,
 * filters without a type) and forwards to the engine's store_ops through
 * the `ops` header every handle, iterator and transaction starts with.
 *
 * With a query cache (store_cache.c; README.md, "Query cache") this layer
 * also answers store_query from the cache, defers the engine's read
 * transaction until a request first needs the engine, and trusts a
 * revision this handle just read as the head without asking again: a
 * request whose queries all hit makes one datastore call, its head read.
 */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "metrics/metrics.h"
#include "store/store_cache.h"
#include "util/error.h"
#include "util/strbuf.h"

/* Every engine this binary knows, matched by URI scheme (an engine may
 * answer to several). */
static const struct {
	const char *scheme;
	const store_ops *ops;
} engines[] = {
    {"sqlite", &store_sqlite_ops},
    {"postgres", &store_postgres_ops},
    {"postgresql", &store_postgres_ops},
};

#define ACCEPTED_URIS                                                          \
	"sqlite:///abs/path.db, sqlite://./rel/path.db, sqlite::memory:, "     \
	"sqlite::memory:NAME; files take ?mode=ro; "                           \
	"postgres://user@host:port/database?sslmode=... (libpq URI)"

/* ========================================================= query cache */

/* Round trips make a cache worth its memory: on by default where every
 * query is one (PostgreSQL); SQLite answers from its own page cache in a
 * few microseconds, and its read transaction per request is what keeps
 * that cheap (README.md, "Query cache": measured). */
static size_t cache_budget(const store_ops *ops, const store_options *opts)
{
	int64_t b = opts->query_cache_bytes;
	if (b == 0)
		b = ops == &store_postgres_ops ? STORE_QUERY_CACHE_DEFAULT_BYTES
		                               : 0;
	return b > 0 ? (size_t)b : 0;
}

/* Gives the new handle s its datastore's cache (budget 0: none).  A
 * datastore without an identity (a layout too old to have one) gets
 * none: the identity is what tells datastores apart. */
static void attach_cache(store *s, size_t budget)
{
	if (budget == 0)
		return;
	const char *id = s->ops->datastore_id(s);
	if (!id || !*id)
		return;
	s->cache = store_cache_acquire(id, budget);
}

/* Bumped by every GC run in the process: a head seen before a GC is not
 * trusted to be readable after it (a GC may be run with any `now`). */
static atomic_uint_fast64_t gc_generation;

/* A head read this long ago or less is still readable (store_check_revision
 * need not ask): GC moves the floor only past revisions whose successor is
 * older than the GC window (at least 1 s), and the head had no successor
 * a moment ago.  A request checks right after its head read; the margin
 * is for clocks. */
#define HEAD_TRUST_MS 250

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * With a cache, store_read_begin only counts; the engine's read
 * transaction starts here, on the first call of the request that reaches
 * the engine (a cache miss, a schema read, ...).  Head reads, revision
 * checks and nonces run outside it: each is one statement, and reads are
 * by revision.  Without a cache, or outside store_read_begin, a no-op.
 */
static int engine_read(store *s, pemba_error *err)
{
	if (!s->cache || s->read_depth == 0 || s->engine_reading)
		return PEMBA_OK;
	int rc = s->ops->read_begin ? s->ops->read_begin(s, err) : PEMBA_OK;
	if (rc == PEMBA_OK)
		s->engine_reading = true;
	return rc;
}

bool store_query_cache_report(store *s, store_query_cache_stats *out)
{
	if (!s->cache) {
		memset(out, 0, sizeof(*out));
		return false;
	}
	store_cache_stats(s->cache, out);
	return true;
}

/* ============================================================ lifecycle */

int store_open(const char *uri, const store_options *opts, store **out,
               pemba_error *err)
{
	static const store_options defaults;

	*out = NULL;
	if (!uri || !*uri)
		return error_set(err, PEMBA_EINVAL,
		                 "empty datastore URI (accepted: " ACCEPTED_URIS
		                 ")");
	if (!opts)
		opts = &defaults;
	for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
		size_t n = strlen(engines[i].scheme);
		if (strncmp(uri, engines[i].scheme, n) != 0 || uri[n] != ':')
			continue;
		int rc = engines[i].ops->open(uri, opts, out, err);
		if (rc == PEMBA_OK)
			attach_cache(*out, cache_budget(engines[i].ops, opts));
		return rc;
	}
	return error_set(
	    err, PEMBA_EINVAL,
	    "unsupported datastore URI \"%s\" (accepted: " ACCEPTED_URIS ")",
	    uri);
}

char *store_display_uri(const char *uri)
{
	strbuf sb;
	strbuf_init(&sb);
	const char *p = uri ? uri : "";
	const char *scheme_end = strstr(p, "://");
	if (scheme_end) {
		const char *user = scheme_end + 3;
		size_t authority = strcspn(user, "/?");
		const char *at = memchr(user, '@', authority);
		const char *colon =
		    at ? memchr(user, ':', (size_t)(at - user)) : NULL;
		if (colon) { /* user:password@ */
			strbuf_append(&sb, p, (size_t)(colon + 1 - p));
			strbuf_puts(&sb, "***");
			p = at;
		}
	}
	const char *pw;
	while ((pw = strstr(p, "password=")) != NULL) {
		strbuf_append(&sb, p, (size_t)(pw - p) + 9);
		strbuf_puts(&sb, "***");
		p = pw + 9 + strcspn(pw + 9, "&");
	}
	strbuf_puts(&sb, p);
	char *out = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return out;
}

void store_close(store *s)
{
	if (!s)
		return;
	store_cache *c = s->cache;
	s->ops->close(s);
	store_cache_release(c);
}

int store_reopen(store *s, store **out, pemba_error *err)
{
	*out = NULL;
	int rc = s->ops->reopen(s, out, err);
	if (rc == PEMBA_OK && s->cache) {
		store_cache_retain(s->cache);
		(*out)->cache = s->cache;
	}
	return rc;
}

const char *store_datastore_id(store *s)
{
	return s->ops->datastore_id(s);
}

int store_head_revision(store *s, pemba_revision *out, pemba_error *err)
{
	int rc = s->ops->head_revision(s, out, err);
	if (rc == PEMBA_OK && s->cache) {
		s->head_seen = *out;
		s->head_seen_ms = monotonic_ms();
		s->head_seen_gc = atomic_load(&gc_generation);
	}
	return rc;
}

int store_revision_nonce(store *s, pemba_revision rev, uint64_t *nonce_out,
                         pemba_error *err)
{
	*nonce_out = 0;
	if (rev == 0 || !s->ops->revision_nonce)
		return PEMBA_OK;
	return s->ops->revision_nonce(s, rev, nonce_out, err);
}

int store_check_revision(store *s, pemba_revision rev, pemba_error *err)
{
	/* The revision a request just resolved as the head (the common
	 * case: the API layer reads the head, then checks at it). */
	if (s->cache && rev != 0 && rev == s->head_seen &&
	    s->head_seen_gc == atomic_load(&gc_generation) &&
	    monotonic_ms() - s->head_seen_ms <= HEAD_TRUST_MS)
		return PEMBA_OK;
	return s->ops->check_revision(s, rev, err);
}

int store_wait_revision(store *s, pemba_revision after, int timeout_ms,
                        pemba_revision *head_out, pemba_error *err)
{
	return s->ops->wait_revision(s, after, timeout_ms, head_out, err);
}

/* The commit signal: one mutex, one condition variable, one counter for
 * the whole process. */
static pthread_mutex_t commit_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t commit_cond = PTHREAD_COND_INITIALIZER;
static uint64_t commit_generation;

void store_commit_signal(void)
{
	pthread_mutex_lock(&commit_mutex);
	commit_generation++;
	pthread_cond_broadcast(&commit_cond);
	pthread_mutex_unlock(&commit_mutex);
}

uint64_t store_commit_generation(void)
{
	pthread_mutex_lock(&commit_mutex);
	uint64_t g = commit_generation;
	pthread_mutex_unlock(&commit_mutex);
	return g;
}

uint64_t store_commit_wait(uint64_t seen, int ms)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&commit_mutex);
	while (commit_generation == seen &&
	       pthread_cond_timedwait(&commit_cond, &commit_mutex, &until) !=
	           ETIMEDOUT)
		;
	uint64_t g = commit_generation;
	pthread_mutex_unlock(&commit_mutex);
	return g;
}

int store_read_begin(store *s, pemba_error *err)
{
	if (s->cache) {
		s->read_depth++;
		return PEMBA_OK;
	}
	return s->ops->read_begin ? s->ops->read_begin(s, err) : PEMBA_OK;
}

void store_read_end(store *s)
{
	if (s->cache) {
		assert(s->read_depth > 0);
		if (s->read_depth > 0 && --s->read_depth == 0 &&
		    s->engine_reading) {
			s->engine_reading = false;
			if (s->ops->read_end)
				s->ops->read_end(s);
		}
		return;
	}
	if (s->ops->read_end)
		s->ops->read_end(s);
}

/* ================================================================ reads */

/*
 * A filter must name a resource type or a subject type: with neither, the
 * only plan is a scan of every relationship, which no API call needs.
 */
static int check_filter(const store_filter *f, pemba_error *err)
{
	if (!f)
		return error_set(err, PEMBA_EINVAL, "missing filter");
	if ((!f->resource_type || !*f->resource_type) &&
	    (!f->subject_type || !*f->subject_type))
		return error_set(err, PEMBA_EINVAL,
		                 "a relationship filter needs a resource type "
		                 "or a subject type");
	return PEMBA_OK;
}

/* What a cache miss needs to start the engine's query. */
typedef struct query_args {
	store *s;
	pemba_revision at;
	const store_filter *f;
	const store_rel *after;
	size_t limit;
} query_args;

static int query_engine(void *ctx, store_iter **out, pemba_error *err)
{
	query_args *q = ctx;
	int rc = engine_read(q->s, err);
	if (rc)
		return rc;
	return q->s->ops->query(q->s, q->at, q->f, q->after, q->limit, out,
	                        err);
}

int store_query(store *s, pemba_revision at, const store_filter *f,
                const store_rel *after, size_t limit, store_iter **out,
                pemba_error *err)
{
	*out = NULL;
	int rc = check_filter(f, err);
	if (rc)
		return rc;
	query_args q = {s, at, f, after, limit};
	/* Counted for /metrics (metrics.h): two relaxed atomic adds and a
	 * clock read around each query, cached or not. */
	metrics_process_figures *m = metrics_process();
	int64_t started = metrics_now_ns();
	/* The head (0) moves: only a concrete revision has a fixed
	 * result. */
	if (!s->cache || at == PEMBA_REVISION_HEAD) {
		rc = query_engine(&q, out, err);
	} else {
		uint64_t nonce;
		rc = store_revision_nonce(s, at, &nonce, err);
		if (rc == 0)
			rc = store_cache_query(s->cache, at, nonce, f, after,
			                       limit, query_engine, &q, out,
			                       err);
	}
	metrics_counter_add(&m->datastore_queries, 1);
	if (rc < 0)
		metrics_counter_add(&m->datastore_query_errors, 1);
	metrics_histogram_observe(&m->datastore_query_seconds,
	                          metrics_now_ns() - started);
	return rc;
}

int store_iter_next(store_iter *it, const store_rel **row, pemba_error *err)
{
	return it->ops->iter_next(it, row, err);
}

void store_iter_close(store_iter *it)
{
	if (it)
		it->ops->iter_close(it);
}

int store_read_schema(store *s, pemba_revision at, char **text_out,
                      pemba_revision *written_rev_out, pemba_error *err)
{
	*text_out = NULL;
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->read_schema(s, at, text_out, written_rev_out, err);
}

int store_scan(store *s, pemba_revision at, const store_rel *after,
               size_t limit, store_iter **out, pemba_error *err)
{
	*out = NULL;
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->scan(s, at, after, limit, out, err);
}

int store_changes(store *s, pemba_revision after, pemba_revision upto,
                  store_change_fn fn, void *ctx, pemba_error *err)
{
	if (!fn)
		return error_set(err, PEMBA_EINVAL, "missing change callback");
	if (upto < after)
		return error_set(err, PEMBA_EINVAL,
		                 "change range ends before it starts");
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->changes(s, after, upto, fn, ctx, err);
}

/* =============================================================== writes */

int store_txn_begin(store *s, store_txn **out, pemba_revision *rev_out,
                    pemba_error *err)
{
	*out = NULL;
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->txn_begin(s, out, rev_out, err);
}

int store_txn_query(store_txn *t, const store_filter *f, size_t limit,
                    store_iter **out, pemba_error *err)
{
	*out = NULL;
	int rc = check_filter(f, err);
	if (rc)
		return rc;
	return t->ops->txn_query(t, f, limit, out, err);
}

int store_txn_create(store_txn *t, const store_rel *r, pemba_error *err)
{
	return t->ops->txn_create(t, r, err);
}

int store_txn_touch(store_txn *t, const store_rel *r, pemba_error *err)
{
	return t->ops->txn_touch(t, r, err);
}

/* The generic batch: one row at a time, for engines without their own. */
static int batch_loop(store_txn *t,
                      int (*one)(store_txn *, const store_rel *, pemba_error *),
                      const store_rel *rels, size_t n, size_t *done_out,
                      pemba_error *err)
{
	size_t i = 0;
	int rc = PEMBA_OK;
	for (; i < n; i++)
		if ((rc = one(t, &rels[i], err)))
			break;
	if (done_out)
		*done_out = i;
	return rc;
}

int store_txn_create_batch(store_txn *t, const store_rel *rels, size_t n,
                           size_t *done_out, pemba_error *err)
{
	if (t->ops->txn_create_batch)
		return t->ops->txn_create_batch(t, rels, n, done_out, err);
	return batch_loop(t, t->ops->txn_create, rels, n, done_out, err);
}

int store_txn_touch_batch(store_txn *t, const store_rel *rels, size_t n,
                          size_t *done_out, pemba_error *err)
{
	if (t->ops->txn_touch_batch)
		return t->ops->txn_touch_batch(t, rels, n, done_out, err);
	return batch_loop(t, t->ops->txn_touch, rels, n, done_out, err);
}

int store_txn_delete(store_txn *t, const store_rel *key, int *deleted_out,
                     pemba_error *err)
{
	return t->ops->txn_delete(t, key, deleted_out, err);
}

int store_txn_delete_filter(store_txn *t, const store_filter *f, size_t limit,
                            size_t *deleted_out, int *more_out,
                            pemba_error *err)
{
	int rc = check_filter(f, err);
	if (rc)
		return rc;
	return t->ops->txn_delete_filter(t, f, limit, deleted_out, more_out,
	                                 err);
}

int store_txn_write_schema(store_txn *t, const char *text, size_t len,
                           pemba_error *err)
{
	return t->ops->txn_write_schema(t, text, len, err);
}

int store_txn_set_metadata(store_txn *t, const char *json, pemba_error *err)
{
	return t->ops->txn_set_metadata(t, json, err);
}

int store_txn_defer_indexes(store_txn *t, pemba_error *err)
{
	return t->ops->txn_defer_indexes ? t->ops->txn_defer_indexes(t, err)
	                                 : PEMBA_OK;
}

int store_txn_record_position(store_txn *t, const store_position *p,
                              pemba_error *err)
{
	return t->ops->txn_record_position(t, p, err);
}

int store_record_position(store *s, const store_position *p, pemba_error *err)
{
	return s->ops->record_position(s, p, err);
}

int store_lookup_position(store *s, const char *source, const char *revision,
                          int64_t lower, int64_t upper,
                          store_position_lookup *out, pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->lookup_position(s, source, revision, lower, upper, out,
	                               err);
}

int store_txn_commit(store_txn *t, pemba_error *err)
{
	return t->ops->txn_commit(t, err);
}

void store_txn_abort(store_txn *t)
{
	if (t)
		t->ops->txn_abort(t);
}

/* ========================================================== maintenance */

int store_gc(store *s, int64_t now_ms, uint64_t *removed_out, pemba_error *err)
{
	store_gc_stats st;
	int rc = store_gc_report(s, now_ms, &st, err);
	if (removed_out)
		*removed_out =
		    rc ? 0 : st.relationships + st.expired + st.schemas;
	return rc;
}

int store_gc_report(store *s, int64_t now_ms, store_gc_stats *out,
                    pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	atomic_fetch_add(&gc_generation, 1);
	int rc = s->ops->gc(s, now_ms, out, err);
	atomic_fetch_add(&gc_generation, 1);
	if (rc == PEMBA_OK && s->cache)
		store_cache_set_floor(s->cache, out->floor);
	return rc;
}

/* ============================================== copies and identity */

int store_snapshot(store *s, const char *path, bool new_identity,
                   store_progress_fn fn, void *ctx, store_snapshot_info *out,
                   pemba_error *err)
{
	if (out)
		memset(out, 0, sizeof(*out));
	if (!path || !*path)
		return error_set(err, PEMBA_EINVAL,
		                 "a snapshot needs a destination file");
	if (!s->ops->snapshot)
		return error_set(err, PEMBA_EUNSUPPORTED,
		                 "this datastore cannot take snapshots");
	store_snapshot_info info;
	memset(&info, 0, sizeof(info));
	int rc = s->ops->snapshot(s, path, new_identity, fn, ctx, &info, err);
	if (rc == 0 && out)
		*out = info;
	return rc;
}

int store_new_identity(store *s, char id_out[64], pemba_error *err)
{
	id_out[0] = '\0';
	if (!s->ops->new_identity)
		return error_set(err, PEMBA_EUNSUPPORTED,
		                 "this datastore cannot change its identity");
	return s->ops->new_identity(s, id_out, err);
}

/* ======================================= processes using a datastore */

int store_attach(store *s, const char *role, pemba_error *err)
{
	return s->ops->lease ? s->ops->lease(s, role, false, err) : PEMBA_OK;
}

int store_lock_exclusive(store *s, const char *role, pemba_error *err)
{
	return s->ops->lease ? s->ops->lease(s, role, true, err) : PEMBA_OK;
}

int store_list_users(store *s, store_user *out, size_t cap, size_t *n_out,
                     pemba_error *err)
{
	*n_out = 0;
	return s->ops->list_users ? s->ops->list_users(s, out, cap, n_out, err)
	                          : PEMBA_OK;
}

int store_migrate_status(store *s, int *current_out, int *head_out,
                         store_migration_info **list, size_t *nlist,
                         pemba_error *err)
{
	return s->ops->migrate_status(s, current_out, head_out, list, nlist,
	                              err);
}

int store_migrate_up(store *s, int target, pemba_error *err)
{
	return s->ops->migrate_up(s, target, err);
}

int store_migrate_down(store *s, int target, pemba_error *err)
{
	return s->ops->migrate_down(s, target, err);
}

/* ==================================================== datastore settings */

/* Names in a deprecation: the store keeps whatever core validated, but
 * refuses the empty name so a row can never match every relation. */
static int check_deprecation_names(const char *resource_type,
                                   const char *relation, pemba_error *err)
{
	if (!resource_type || !*resource_type || !relation || !*relation)
		return error_set(err, PEMBA_EINVAL,
		                 "a deprecation needs a resource type and a "
		                 "relation");
	return PEMBA_OK;
}

int store_get_read_only(store *s, bool *out, pemba_error *err)
{
	*out = false;
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->get_read_only(s, out, err);
}

int store_set_read_only(store *s, bool read_only, pemba_error *err)
{
	return s->ops->set_read_only(s, read_only, err);
}

int store_list_deprecations(store *s, store_deprecation **out, size_t *n_out,
                            pemba_error *err)
{
	*out = NULL;
	*n_out = 0;
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->list_deprecations(s, out, n_out, err);
}

int store_set_deprecation(store *s, const char *resource_type,
                          const char *relation, store_deprecation_mode mode,
                          pemba_error *err)
{
	int rc = check_deprecation_names(resource_type, relation, err);
	if (rc)
		return rc;
	if (mode != STORE_DEPRECATION_WARN && mode != STORE_DEPRECATION_REJECT)
		return error_set(err, PEMBA_EINVAL,
		                 "unknown deprecation mode %d", (int)mode);
	return s->ops->set_deprecation(s, resource_type, relation, mode, err);
}

int store_remove_deprecation(store *s, const char *resource_type,
                             const char *relation, bool *removed_out,
                             pemba_error *err)
{
	if (removed_out)
		*removed_out = false;
	int rc = check_deprecation_names(resource_type, relation, err);
	if (rc)
		return rc;
	return s->ops->remove_deprecation(s, resource_type, relation,
	                                  removed_out, err);
}

/* ------------------------------------------- probes for schema changes */

int store_txn_probe(store_txn *t, const store_probe *p, store_probe_fn fn,
                    void *ctx, pemba_error *err)
{
	if (!p->resource_type && !p->subject_type)
		return error_set(err, PEMBA_EINVAL,
		                 "a probe needs a resource type or a subject "
		                 "type");
	if (!t->ops->txn_probe)
		return error_set(err, PEMBA_EUNSUPPORTED,
		                 "this datastore cannot probe relationships");
	return t->ops->txn_probe(t, p, fn, ctx, err);
}

int store_count_groups(store *s, pemba_revision at, const store_probe *p,
                       store_group_fn fn, void *ctx, pemba_error *err)
{
	if (!p->resource_type && !p->subject_type)
		return error_set(err, PEMBA_EINVAL,
		                 "a count needs a resource type or a subject "
		                 "type");
	if (!s->ops->count_groups)
		return error_set(err, PEMBA_EUNSUPPORTED,
		                 "this datastore cannot count relationships");
	int rc = engine_read(s, err);
	if (rc)
		return rc;
	return s->ops->count_groups(s, at, p, fn, ctx, err);
}
