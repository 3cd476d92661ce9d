/*
 * store_cache.h -- the process-wide cache of query results at a revision
 * (README.md, "Query cache").  Internal to src/store: store.c is its only
 * caller; callers above the store see only store_options.query_cache_bytes
 * and store_query_cache_stats().
 *
 * One cache per datastore identity per process, shared by every handle on
 * that datastore (reference-counted by handle).  An entry is the complete
 * result of one store_query(at, filter, after, limit) at a concrete
 * revision, in one allocation; a hit is an iterator over it that makes no
 * datastore call.  Thread-safe: entries live in shards, each behind its own
 * mutex, held only to look up, link or unlink an entry.
 */
#ifndef PEMBA_STORE_CACHE_H
#define PEMBA_STORE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct store_cache store_cache;

/* The cache of datastore `datastore_id`, created with a budget of
 * `budget` bytes if this process has none yet (an existing cache keeps its
 * first budget).  Never NULL; release it with store_cache_release. */
store_cache *store_cache_acquire(const char *datastore_id, size_t budget);
/* Another reference to c (a handle from store_reopen). */
void store_cache_retain(store_cache *c);
/* Drops a reference; the last frees every entry not held by an open
 * iterator (those go when their iterator closes). */
void store_cache_release(store_cache *c);

/* Starts the engine's query on a miss: fills *out with an engine iterator
 * over exactly the rows store_query(at, f, after, limit) returns. */
typedef int (*store_cache_miss_fn)(void *ctx, store_iter **out,
                                   pemba_error *err);

/*
 * store_query through the cache.  `at` must be a concrete revision (not
 * 0) that the caller has checked is readable, `nonce` its nonce
 * (store_revision_nonce; part of the key so two histories sharing an
 * identity never share entries).  On a hit *out iterates the cached rows
 * (the pointers stay valid until the iterator closes) and `miss` is not
 * called.  On a miss `miss` starts the engine query and *out wraps it,
 * recording the rows as they pass; when the iterator closes having seen
 * the complete result (exhausted, or `limit` rows), no row with an
 * expiration, and no more than the entry cap, the result becomes an entry.
 * Errors are the engine's.
 */
int store_cache_query(store_cache *c, pemba_revision at, uint64_t nonce,
                      const store_filter *f, const store_rel *after,
                      size_t limit, store_cache_miss_fn miss, void *ctx,
                      store_iter **out, pemba_error *err);

/* Entries at revisions below `floor` are no longer served (GC moved the
 * floor there: store_check_revision refuses them anyway) and are dropped
 * as shards are next visited or evicted.  The floor only rises. */
void store_cache_set_floor(store_cache *c, pemba_revision floor);

/* Sums of every shard (see store_query_cache_report in store.h). */
void store_cache_stats(store_cache *c, store_query_cache_stats *out);

#endif
