/*
 * store_cache.c -- the process-wide cache of query results at a revision.
 *
 * Why it is correct: rows visible at a committed revision R never change
 * (MVCC, store.h), so the result of store_query(R, filter, after, limit)
 * is a constant -- except for expiration, which is judged by the clock:
 * a result holding a row with an expiration is never stored (an already
 * expired row stays hidden forever, so results without such rows stay
 * valid).  Reads inside a write transaction never come here.  README.md,
 * "Query cache", has the whole design.
 *
 * Layout: STORE_CACHE_SHARDS shards, chosen by the key's hash, each with
 * its own mutex, chained hash table, LRU list and byte budget (the total
 * budget divided evenly).  An entry is one malloc'd block: the header,
 * the store_rel array, the key bytes, then the strings the rows point to.
 * Entries are reference-counted (the shard's link is one reference, each
 * open iterator over it another), so eviction never pulls rows from under
 * a reader.
 */
#include "store/store_cache.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/hash.h"
#include "util/xalloc.h"

#define STORE_CACHE_SHARDS 16
/* No entry may take more than this share of its shard's budget. */
#define ENTRY_CAP_DIVISOR 4
#define KEY_INLINE 512

/* A link of a shard's LRU list; first in an entry, so a link that is not
 * the shard's sentinel is its entry. */
typedef struct qc_lru {
	struct qc_lru *prev, *next;
} qc_lru;

typedef struct qc_entry qc_entry;
struct qc_entry {
	qc_lru lru;      /* first: see qc_lru */
	qc_entry *chain; /* next in the hash bucket */
	uint64_t hash;
	pemba_revision at;
	size_t bytes;    /* the whole block: what budgets count */
	atomic_int refs; /* the shard's link + open iterators */
	size_t key_len;
	const unsigned char *key; /* in the block */
	size_t nrows;
	store_rel rows[]; /* then the key, then the strings */
};

typedef struct qc_shard {
	alignas(64) pthread_mutex_t mu;
	qc_entry **buckets;
	size_t nbuckets, nentries;
	qc_lru lru; /* sentinel: lru.next is the most recently used */
	size_t bytes, budget;
	uint64_t hits, misses, evictions, inserts;
} qc_shard;

struct store_cache {
	store_cache *next; /* in the registry */
	char *datastore_id;
	int refs; /* handles; guarded by registry_mu */
	size_t budget, entry_cap;
	_Atomic pemba_revision floor;
	atomic_uint_fast64_t uncacheable;
	qc_shard shards[STORE_CACHE_SHARDS];
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static store_cache *registry;

/* ============================================================ entries */

static void entry_unref(qc_entry *e)
{
	if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
		free(e);
}

static void lru_unlink(qc_entry *e)
{
	e->lru.prev->next = e->lru.next;
	e->lru.next->prev = e->lru.prev;
}

static void lru_push_front(qc_shard *sh, qc_entry *e)
{
	e->lru.next = sh->lru.next;
	e->lru.prev = &sh->lru;
	sh->lru.next->prev = &e->lru;
	sh->lru.next = &e->lru;
}

/* Removes e from its bucket and the LRU list; the caller holds sh->mu and
 * drops the shard's reference afterwards (outside the lock if it can). */
static void shard_unlink(qc_shard *sh, qc_entry *e)
{
	qc_entry **p = &sh->buckets[e->hash & (sh->nbuckets - 1)];
	while (*p != e)
		p = &(*p)->chain;
	*p = e->chain;
	lru_unlink(e);
	sh->nentries--;
	sh->bytes -= e->bytes;
}

static qc_entry *shard_find(qc_shard *sh, uint64_t hash,
                            const unsigned char *key, size_t key_len)
{
	for (qc_entry *e = sh->buckets[hash & (sh->nbuckets - 1)]; e;
	     e = e->chain)
		if (e->hash == hash && e->key_len == key_len &&
		    memcmp(e->key, key, key_len) == 0)
			return e;
	return NULL;
}

/* Doubles the bucket array once entries outnumber buckets (sh->mu held). */
static void shard_grow(qc_shard *sh)
{
	size_t n = sh->nbuckets * 2;
	qc_entry **b = xcalloc(n, sizeof(*b));
	for (size_t i = 0; i < sh->nbuckets; i++) {
		qc_entry *e = sh->buckets[i];
		while (e) {
			qc_entry *next = e->chain;
			e->chain = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
			e = next;
		}
	}
	free(sh->buckets);
	sh->buckets = b;
	sh->nbuckets = n;
}

/* ========================================================== registry */

store_cache *store_cache_acquire(const char *datastore_id, size_t budget)
{
	pthread_mutex_lock(&registry_mu);
	store_cache *c = registry;
	while (c && strcmp(c->datastore_id, datastore_id) != 0)
		c = c->next;
	if (c) {
		c->refs++;
		pthread_mutex_unlock(&registry_mu);
		return c;
	}
	c = xcalloc(1, sizeof(*c));
	c->datastore_id = xstrdup(datastore_id);
	c->refs = 1;
	c->budget = budget;
	size_t per_shard = budget / STORE_CACHE_SHARDS;
	c->entry_cap = per_shard / ENTRY_CAP_DIVISOR;
	for (int i = 0; i < STORE_CACHE_SHARDS; i++) {
		qc_shard *sh = &c->shards[i];
		pthread_mutex_init(&sh->mu, NULL);
		sh->nbuckets = 64;
		sh->buckets = xcalloc(sh->nbuckets, sizeof(*sh->buckets));
		sh->lru.next = sh->lru.prev = &sh->lru;
		sh->budget = per_shard;
	}
	c->next = registry;
	registry = c;
	pthread_mutex_unlock(&registry_mu);
	return c;
}

void store_cache_retain(store_cache *c)
{
	pthread_mutex_lock(&registry_mu);
	c->refs++;
	pthread_mutex_unlock(&registry_mu);
}

void store_cache_release(store_cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&registry_mu);
	if (--c->refs > 0) {
		pthread_mutex_unlock(&registry_mu);
		return;
	}
	store_cache **p = &registry;
	while (*p != c)
		p = &(*p)->next;
	*p = c->next;
	pthread_mutex_unlock(&registry_mu);
	for (int i = 0; i < STORE_CACHE_SHARDS; i++) {
		qc_shard *sh = &c->shards[i];
		qc_lru *l = sh->lru.next;
		while (l != &sh->lru) {
			qc_lru *next = l->next;
			entry_unref((qc_entry *)l);
			l = next;
		}
		free(sh->buckets);
		pthread_mutex_destroy(&sh->mu);
	}
	free(c->datastore_id);
	free(c);
}

void store_cache_set_floor(store_cache *c, pemba_revision floor)
{
	pemba_revision old = atomic_load(&c->floor);
	while (floor > old &&
	       !atomic_compare_exchange_weak(&c->floor, &old, floor))
		;
}

void store_cache_stats(store_cache *c, store_query_cache_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->budget = c->budget;
	out->uncacheable = atomic_load(&c->uncacheable);
	for (int i = 0; i < STORE_CACHE_SHARDS; i++) {
		qc_shard *sh = &c->shards[i];
		pthread_mutex_lock(&sh->mu);
		out->hits += sh->hits;
		out->misses += sh->misses;
		out->evictions += sh->evictions;
		out->inserts += sh->inserts;
		out->bytes += sh->bytes;
		out->entries += sh->nentries;
		pthread_mutex_unlock(&sh->mu);
	}
}

/* ================================================================ keys */

/* The key: revision, nonce, limit, then the six filter fields and (if
 * given) the six cursor fields, each as a presence byte and, when
 * present, a length and the bytes: NULL, "" and "x" are three keys. */
typedef struct qc_key {
	unsigned char inline_buf[KEY_INLINE];
	unsigned char *bytes;
	size_t len, cap;
	uint64_t hash;
} qc_key;

static void key_put(qc_key *k, const void *p, size_t n)
{
	if (k->len + n > k->cap) {
		size_t cap = (k->len + n) * 2;
		if (k->bytes == k->inline_buf) {
			k->bytes = xmalloc(cap);
			memcpy(k->bytes, k->inline_buf, k->len);
		} else {
			k->bytes = xrealloc(k->bytes, cap);
		}
		k->cap = cap;
	}
	memcpy(k->bytes + k->len, p, n);
	k->len += n;
}

static void key_put_str(qc_key *k, const char *s)
{
	unsigned char present = s != NULL;
	key_put(k, &present, 1);
	if (s) {
		uint32_t n = (uint32_t)strlen(s);
		key_put(k, &n, sizeof(n));
		key_put(k, s, n);
	}
}

static void key_build(qc_key *k, pemba_revision at, uint64_t nonce,
                      const store_filter *f, const store_rel *after,
                      size_t limit)
{
	k->bytes = k->inline_buf;
	k->len = 0;
	k->cap = sizeof(k->inline_buf);
	uint64_t nums[3] = {at, nonce, (uint64_t)limit};
	key_put(k, nums, sizeof(nums));
	const char *fs[6] = {f->resource_type, f->resource_id,
	                     f->relation,      f->subject_type,
	                     f->subject_id,    f->subject_relation};
	for (int i = 0; i < 6; i++)
		key_put_str(k, fs[i]);
	unsigned char has_after = after != NULL;
	key_put(k, &has_after, 1);
	if (after) {
		const char *as[6] = {
		    after->resource_type, after->resource_id,
		    after->relation,      after->subject_type,
		    after->subject_id,    after->subject_relation};
		for (int i = 0; i < 6; i++)
			key_put_str(k, as[i]);
	}
	/* FNV-1a's low bits depend only on the low bits of each byte, and
	 * the bucket index is the low bits: mix them (MurmurHash3's
	 * finalizer) so keys that differ in high bits spread too. */
	uint64_t h = hash_bytes(k->bytes, k->len, 0);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	k->hash = h;
}

static void key_free(qc_key *k)
{
	if (k->bytes != k->inline_buf)
		free(k->bytes);
}

static qc_shard *shard_of(store_cache *c, uint64_t hash)
{
	/* The high bits pick the shard, the low ones the bucket. */
	return &c->shards[(hash >> 56) % STORE_CACHE_SHARDS];
}

/* =========================================================== iterators */

/* A hit: the rows of one entry, which it holds a reference to. */
typedef struct qc_reader {
	store_iter base;
	qc_entry *e;
	size_t next;
} qc_reader;

/* A miss: the engine's iterator, with the rows recorded as they pass. */
typedef struct qc_recorder {
	store_iter base;
	store_iter *inner;
	store_cache *c;
	qc_key key;
	pemba_revision at;
	size_t limit;
	/* Recorded rows: for each, the offsets of its 8 strings in buf. */
	size_t (*offsets)[8];
	int64_t *expirations;
	pemba_revision *created;
	size_t nrows, rows_cap;
	char *buf;
	size_t buf_len, buf_cap;
	bool exhausted, recording;
} qc_recorder;

static int reader_next(store_iter *base, const store_rel **row,
                       pemba_error *err)
{
	(void)err;
	qc_reader *r = (qc_reader *)base;
	if (r->next >= r->e->nrows) {
		*row = NULL;
		return 0;
	}
	*row = &r->e->rows[r->next++];
	return 1;
}

static void reader_close(store_iter *base)
{
	qc_reader *r = (qc_reader *)base;
	entry_unref(r->e);
	free(r);
}

static const store_ops reader_ops = {
    .scheme = "query-cache",
    .iter_next = reader_next,
    .iter_close = reader_close,
};

/* Stops recording for good (the result will not be stored). */
static void recorder_drop(qc_recorder *r)
{
	if (!r->recording)
		return;
	r->recording = false;
	atomic_fetch_add_explicit(&r->c->uncacheable, 1, memory_order_relaxed);
	free(r->offsets);
	free(r->expirations);
	free(r->created);
	free(r->buf);
	r->offsets = NULL;
	r->expirations = NULL;
	r->created = NULL;
	r->buf = NULL;
}

static size_t recorder_entry_bytes(const qc_recorder *r)
{
	return sizeof(qc_entry) + r->nrows * sizeof(store_rel) + r->key.len +
	       r->buf_len;
}

/* Appends row to the recording, or drops the recording when the row has
 * an expiration or the entry would pass the cap. */
static void recorder_add(qc_recorder *r, const store_rel *row)
{
	if (row->expiration_ms != 0) {
		recorder_drop(r);
		return;
	}
	const char *s[8] = {row->resource_type, row->resource_id,
	                    row->relation,      row->subject_type,
	                    row->subject_id,    row->subject_relation,
	                    row->caveat_name,   row->caveat_context};
	size_t lens[8], total = 0;
	for (int i = 0; i < 8; i++)
		total += (lens[i] = strlen(s[i] ? s[i] : "")) + 1;
	if (recorder_entry_bytes(r) + sizeof(store_rel) + total >
	    r->c->entry_cap) {
		recorder_drop(r);
		return;
	}
	if (r->nrows == r->rows_cap) {
		r->rows_cap = r->rows_cap ? r->rows_cap * 2 : 8;
		r->offsets =
		    xrealloc(r->offsets, r->rows_cap * sizeof(*r->offsets));
		r->expirations = xrealloc(
		    r->expirations, r->rows_cap * sizeof(*r->expirations));
		r->created =
		    xrealloc(r->created, r->rows_cap * sizeof(*r->created));
	}
	if (r->buf_len + total > r->buf_cap) {
		r->buf_cap = (r->buf_len + total) * 2;
		r->buf = xrealloc(r->buf, r->buf_cap);
	}
	for (int i = 0; i < 8; i++) {
		r->offsets[r->nrows][i] = r->buf_len;
		memcpy(r->buf + r->buf_len, s[i] ? s[i] : "", lens[i] + 1);
		r->buf_len += lens[i] + 1;
	}
	r->expirations[r->nrows] = row->expiration_ms;
	r->created[r->nrows] = row->created_rev;
	r->nrows++;
}

/* Builds the entry of a complete recording and links it into its shard,
 * evicting from the cold end of the LRU list down to the shard's budget.
 * A key another iterator stored meanwhile keeps the older entry. */
static void recorder_store(qc_recorder *r)
{
	store_cache *c = r->c;
	size_t bytes = recorder_entry_bytes(r);
	qc_entry *e = xmalloc(bytes);
	memset(e, 0, sizeof(*e));
	e->hash = r->key.hash;
	e->at = r->at;
	e->bytes = bytes;
	atomic_init(&e->refs, 1);
	e->nrows = r->nrows;
	unsigned char *key = (unsigned char *)&e->rows[r->nrows];
	memcpy(key, r->key.bytes, r->key.len);
	e->key = key;
	e->key_len = r->key.len;
	char *strings = (char *)key + r->key.len;
	if (r->buf_len)
		memcpy(strings, r->buf, r->buf_len);
	for (size_t i = 0; i < r->nrows; i++) {
		store_rel *row = &e->rows[i];
		const size_t *o = r->offsets[i];
		row->resource_type = strings + o[0];
		row->resource_id = strings + o[1];
		row->relation = strings + o[2];
		row->subject_type = strings + o[3];
		row->subject_id = strings + o[4];
		row->subject_relation = strings + o[5];
		row->caveat_name = strings + o[6];
		row->caveat_context = strings + o[7];
		row->expiration_ms = r->expirations[i];
		row->created_rev = r->created[i];
	}

	qc_shard *sh = shard_of(c, e->hash);
	qc_entry *victims = NULL;
	pthread_mutex_lock(&sh->mu);
	if (shard_find(sh, e->hash, e->key, e->key_len)) {
		pthread_mutex_unlock(&sh->mu);
		free(e);
		return;
	}
	if (sh->nentries >= sh->nbuckets)
		shard_grow(sh);
	qc_entry **b = &sh->buckets[e->hash & (sh->nbuckets - 1)];
	e->chain = *b;
	*b = e;
	lru_push_front(sh, e);
	sh->nentries++;
	sh->bytes += e->bytes;
	sh->inserts++;
	while (sh->bytes > sh->budget && sh->lru.prev != &e->lru) {
		qc_entry *old = (qc_entry *)sh->lru.prev;
		shard_unlink(sh, old);
		sh->evictions++;
		old->chain = victims;
		victims = old;
	}
	pthread_mutex_unlock(&sh->mu);
	while (victims) {
		qc_entry *next = victims->chain;
		entry_unref(victims);
		victims = next;
	}
}

static int recorder_next(store_iter *base, const store_rel **row,
                         pemba_error *err)
{
	qc_recorder *r = (qc_recorder *)base;
	int rc = r->inner->ops->iter_next(r->inner, row, err);
	if (rc == 1) {
		if (r->recording)
			recorder_add(r, *row);
	} else if (rc == 0) {
		r->exhausted = true;
	} else {
		recorder_drop(r);
	}
	return rc;
}

static void recorder_close(store_iter *base)
{
	qc_recorder *r = (qc_recorder *)base;
	bool complete = r->exhausted || (r->limit && r->nrows == r->limit);
	if (r->recording && complete)
		recorder_store(r);
	else if (r->recording)
		recorder_drop(r); /* closed early: the result is unknown */
	r->inner->ops->iter_close(r->inner);
	free(r->offsets);
	free(r->expirations);
	free(r->created);
	free(r->buf);
	key_free(&r->key);
	free(r);
}

static const store_ops recorder_ops = {
    .scheme = "query-cache",
    .iter_next = recorder_next,
    .iter_close = recorder_close,
};

/* ============================================================== queries */

int store_cache_query(store_cache *c, pemba_revision at, uint64_t nonce,
                      const store_filter *f, const store_rel *after,
                      size_t limit, store_cache_miss_fn miss, void *ctx,
                      store_iter **out, pemba_error *err)
{
	*out = NULL;
	qc_key key;
	key_build(&key, at, nonce, f, after, limit);
	qc_shard *sh = shard_of(c, key.hash);
	bool below_floor = at < atomic_load(&c->floor);
	pthread_mutex_lock(&sh->mu);
	qc_entry *e =
	    below_floor ? NULL : shard_find(sh, key.hash, key.bytes, key.len);
	if (e) {
		sh->hits++;
		lru_unlink(e);
		lru_push_front(sh, e);
		atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
	} else {
		sh->misses++;
	}
	pthread_mutex_unlock(&sh->mu);
	if (e) {
		key_free(&key);
		qc_reader *r = xmalloc(sizeof(*r));
		r->base.ops = &reader_ops;
		r->e = e;
		r->next = 0;
		*out = &r->base;
		return PEMBA_OK;
	}

	store_iter *inner;
	int rc = miss(ctx, &inner, err);
	if (rc < 0) {
		key_free(&key);
		return rc;
	}
	qc_recorder *r = xcalloc(1, sizeof(*r));
	r->base.ops = &recorder_ops;
	r->inner = inner;
	r->c = c;
	r->key = key;
	if (key.bytes == key.inline_buf)
		r->key.bytes = r->key.inline_buf; /* it moved with the copy */
	r->at = at;
	r->limit = limit;
	/* An entry never outlives the floor: below it nothing is stored. */
	r->recording = !below_floor && c->entry_cap > 0;
	*out = &r->base;
	return PEMBA_OK;
}
