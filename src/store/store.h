/*
 * store.h -- the datastore interface.
 *
 * A store keeps relationships and schema text under MVCC: every write
 * transaction gets the next revision (a 64-bit logical counter starting at
 * 1; 0 is "nothing written yet"), each relationship version carries the
 * revision that created it and the one that deleted it, and a read at
 * revision R sees exactly the state committed at R, repeatably, until
 * garbage collection drops versions older than the GC window.
 *
 * The store knows nothing of permissions or schema meaning: it stores schema
 * text as an opaque blob and relationships as strings.  Validation against
 * the schema is the caller's job (src/core).
 *
 * Engines implement `store_ops` (one file per engine: store_sqlite.c, later
 * store_postgres.c); callers use only the store_* functions below, so a new
 * engine needs no caller changes.
 *
 * Threads: one store handle is used by one thread at a time.  Several
 * handles on the same datastore (a file, or a named memory datastore) may
 * be used from different threads or processes at once: writers are
 * serialized by the engine and revisions stay gapless and strictly
 * increasing across all of them.
 */
#ifndef PEMBA_STORE_H
#define PEMBA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pemba.h"

typedef struct store store;
typedef struct store_iter store_iter;
typedef struct store_txn store_txn;

/* A relationship row.  Strings are never NULL: "" stands for "none"
 * (subject_relation "" is the subject object itself, SpiceDB's "...";
 * caveat_name "" means no caveat).  When returned by an iterator, the
 * pointers stay valid until the next store_iter_next() or
 * store_iter_close() on that iterator. */
typedef struct store_rel {
	const char *resource_type;
	const char *resource_id;
	const char *relation;
	const char *subject_type;
	const char *subject_id;
	const char *subject_relation;
	const char *caveat_name;
	const char *caveat_context; /* JSON text; "" if none */
	int64_t expiration_ms;      /* 0 if none */
	pemba_revision created_rev; /* set on rows read back */
} store_rel;

/* A filter.  NULL matches anything; subject_relation "" matches only rows
 * without a subject relation.  Either resource_type or subject_type must be
 * set (store_query refuses a filter with neither: full scans are not an
 * API).  Queries with resource_type (+ id + relation) use the forward
 * index; queries with only subject fields use the reverse index. */
typedef struct store_filter {
	const char *resource_type;
	const char *resource_id;
	const char *relation;
	const char *subject_type;
	const char *subject_id;
	const char *subject_relation;
} store_filter;

typedef struct store_options {
	int64_t gc_window_seconds; /* 0: default 24 h */
	enum {
		STORE_MIGRATE_AUTO = 0, /* apply pending layout migrations */
		STORE_MIGRATE_REQUIRE, /* refuse unless at the newest version */
		STORE_MIGRATE_NONE,    /* open as is (for `datastore migrate`);
		                          until the layout is at the newest
		                          version every operation other than
		                          store_migrate_* and store_close fails
		                          with PEMBA_EVERSION */
		STORE_MIGRATE_NEW_ONLY, /* create a new, empty datastore at the
		                           newest version; refuse an existing
		                           one with pending migrations, naming
		                           the command that applies them */
	} migrate;
	/* 1: do not create a missing datastore file; store_open fails with
	 * PEMBA_ENOTFOUND instead (`datastore migrate status` must not leave
	 * an empty file behind). */
	int must_exist;
	/* PostgreSQL: the most connections the process opens to the
	 * datastore for reads and for writes (0: 20 and 10, SpiceDB's
	 * defaults); see README.md, "connection pools".  SQLite ignores
	 * them (one connection per handle). */
	int pool_read_max;
	int pool_write_max;
	/* PostgreSQL: read replicas (libpq URIs, at most 16; copied at
	 * open): a read transaction at a revision a replica has replayed
	 * may be served by it (README.md, "read replicas").  SQLite: must
	 * be 0. */
	const char *const *replica_uris;
	int n_replicas;
	/* Optional diagnostics (may be NULL), called from any thread:
	 * level 1 warning (a read replica skipped after a failure), 3 debug
	 * (which node served a read at a revision). */
	void (*log)(void *ctx, int level, const char *message);
	void *log_ctx;
	/* The process-wide cache of query results at a revision (README.md,
	 * "Query cache"): its budget in bytes, shared by every handle of
	 * the process on the same datastore (the first handle's budget
	 * wins).  0: the engine's default (STORE_QUERY_CACHE_DEFAULT_BYTES
	 * on PostgreSQL, off on SQLite); < 0: off. */
	int64_t query_cache_bytes;
} store_options;

/* The default query cache budget on engines where a query is a network
 * round trip (PostgreSQL). */
#define STORE_QUERY_CACHE_DEFAULT_BYTES ((int64_t)64 << 20)

/* ------------------------------------------------------------ lifecycle */

/* Opens by URI ("sqlite:///abs.db", "sqlite://./rel.db", "sqlite::memory:"
 * (private to this handle), "sqlite::memory:NAME" (shared by every handle
 * of this process that opens the same NAME; it lives while one is open)).
 * A file URI may end in query parameters: `?mode=ro` opens read-only (the
 * file must exist; every write fails with PEMBA_EREADONLY), `?mode=rw` is
 * the default; any other parameter is PEMBA_EINVAL naming it.
 * PEMBA_EINVAL for a malformed or unknown URI scheme, PEMBA_EIO if the file
 * cannot be opened, PEMBA_EVERSION if the layout is newer than this binary
 * knows or (with STORE_MIGRATE_REQUIRE / _NEW_ONLY) older than the newest.
 *
 * A handle that finds the layout changed under it after opening (another
 * process migrated the datastore up or down) fails every later operation
 * with PEMBA_EVERSION ("datastore layout changed under this ...") instead
 * of whatever the database would say about missing tables: its statements,
 * caches and revision numbers may no longer mean anything.  The check
 * rides on the head-revision read every request makes, and on every
 * database error (a query answered by the query cache makes no database
 * call: the request's head read notices). */
int store_open(const char *uri, const store_options *opts, store **out,
               pemba_error *err);
void store_close(store *s);

/* The datastore URI as it may be shown in messages and logs: a password
 * in it ("scheme://user:PASSWORD@host", "password=...") replaced by
 * "***".  Malloc'd; the caller frees it. */
char *store_display_uri(const char *uri);

/* Opens another handle on the datastore `s` is open on, with the same
 * options (a worker thread's own handle).  PEMBA_EUNSUPPORTED for a
 * private memory datastore, which no other handle can reach. */
int store_reopen(store *s, store **out, pemba_error *err);

/* A random identifier fixed when the datastore was created (for ZedTokens
 * later).  Owned by the store. */
const char *store_datastore_id(store *s);

/* Newest committed revision (0 when nothing was written). */
int store_head_revision(store *s, pemba_revision *out, pemba_error *err);

/* The random nonce recorded when revision `rev` committed (layout 5), so
 * that two copies of one datastore that diverged can tell their revisions
 * apart (ZedTokens carry a fingerprint of it).  *nonce_out is 0 when none
 * is known: revision 0, a revision committed before layout 5, one not
 * committed (yet), or one removed by GC (a handle that looked it up before
 * may still answer from its cache: a committed revision's nonce never
 * changes).  One primary-key lookup, cached per handle. */
int store_revision_nonce(store *s, pemba_revision rev, uint64_t *nonce_out,
                         pemba_error *err);

/* PEMBA_OK if revision `rev` can be read (0 < rev <= head and not
 * garbage-collected), else PEMBA_EREVISION with a clear message.  rev 0
 * (PEMBA_REVISION_HEAD) is always readable. */
int store_check_revision(store *s, pemba_revision rev, pemba_error *err);

/* Waits until the head is newer than `after` or timeout_ms elapses (0: no
 * wait; < 0: no limit); *head_out is the head seen last.  Commits through
 * any handle of this process wake waiters at once; commits by other
 * processes are seen by polling every STORE_WAIT_POLL_MS.  Must not be
 * called inside a read or write transaction (the head would not move). */
#define STORE_WAIT_POLL_MS 25
int store_wait_revision(store *s, pemba_revision after, int timeout_ms,
                        pemba_revision *head_out, pemba_error *err);

/* Process-wide commit signal, shared by every engine: each engine calls
 * store_commit_signal() after every successful commit; the generation
 * counts them.  store_commit_wait sleeps until the generation differs
 * from `seen` or ms pass, and returns the generation.  Lets an event
 * loop (the server's Watch streams) learn of new revisions without a
 * thread per waiter.  Commits by other processes are not counted. */
void store_commit_signal(void);
uint64_t store_commit_generation(void);
uint64_t store_commit_wait(uint64_t seen, int ms);

/* ----------------------------------------------------------------- reads */

/* Starts a query at revision `at` (must pass store_check_revision; 0 means
 * the newest committed revision).  Rows come in a stable total order for
 * the filter's shape; with `after` non-NULL, only rows strictly after that
 * key (resource and subject fields only) are returned.  limit 0 =
 * unlimited.  Several iterators may be open at once (the check engine
 * recurses with one open); each must be closed.  The filter and `after`
 * are copied: the caller may release them once store_query returns.
 *
 * Expired relationships (expiration_ms != 0 and <= now) are hidden from
 * every read (store_query, store_scan, store_txn_query), as SpiceDB does:
 * "now" is the wall clock when the enclosing store_read_begin() began (so
 * one request sees one instant), else the time of the query.  Expiry is
 * judged by the current time whatever revision is read.  The change feed
 * (store_changes) and delete-by-filter still see expired rows.
 *
 * Order: with resource_id given, or without a subject_id, rows come in
 * (resource_type, resource_id, relation, subject_type, subject_id,
 * subject_relation) order; otherwise in (subject_type, subject_id,
 * subject_relation, resource_type, relation, resource_id) order.  Type,
 * relation and caveat names compare by an internal number, ids as bytes:
 * the order is stable, not alphabetical. */
int store_query(store *s, pemba_revision at, const store_filter *f,
                const store_rel *after, size_t limit, store_iter **out,
                pemba_error *err);
/* What the query cache of s's datastore did so far, summed over every
 * handle of the process sharing it. */
typedef struct store_query_cache_stats {
	uint64_t hits;        /* queries answered from the cache */
	uint64_t misses;      /* queries that went to the engine */
	uint64_t inserts;     /* results stored */
	uint64_t uncacheable; /* complete results not stored: a row with an
	                         expiration, or larger than the entry cap */
	uint64_t evictions;   /* entries dropped to keep the budget */
	uint64_t entries;     /* entries now */
	uint64_t bytes;       /* bytes held by entries now */
	uint64_t budget;      /* the byte budget */
} store_query_cache_stats;

/* false (and *out zeroed) when s has no query cache. */
bool store_query_cache_report(store *s, store_query_cache_stats *out);

/* 1: *row is the next row; 0: exhausted; <0: error. */
int store_iter_next(store_iter *it, const store_rel **row, pemba_error *err);
void store_iter_close(store_iter *it);

/* Groups the reads that follow, up to store_read_end(), into one read
 * transaction, so a request that issues many queries pays for the
 * datastore's snapshot/locking once (for SQLite: one WAL read lock instead
 * of one per statement).  Calls nest; inside a write transaction they are
 * no-ops.  Visibility is unchanged: reads are still by revision. */
int store_read_begin(store *s, pemba_error *err);
void store_read_end(store *s);

/* Schema text current at `at` (NUL-terminated, caller frees with free()),
 * and the revision that wrote it.  PEMBA_ENOTFOUND if none by then. */
int store_read_schema(store *s, pemba_revision at, char **text_out,
                      pemba_revision *written_rev_out, pemba_error *err);

/* Every relationship visible at `at` (0 = head), whatever its type, in
 * primary (resource_type, resource_id, relation, subject_type, subject_id,
 * subject_relation) order, strictly after `after` when given.  The one
 * full scan of the interface: for exports (ExportBulkRelationships). */
int store_scan(store *s, pemba_revision at, const store_rel *after,
               size_t limit, store_iter **out, pemba_error *err);

/* One item of a change feed (store_changes). */
typedef enum store_change_kind {
	STORE_CHANGE_TOUCH = 1,    /* rel created (or replaced) in rev */
	STORE_CHANGE_DELETE = 2,   /* rel deleted in rev */
	STORE_CHANGE_REVISION = 3, /* end of rev: after all its changes */
} store_change_kind;

typedef struct store_change {
	store_change_kind kind;
	pemba_revision rev;
	const store_rel *rel; /* TOUCH / DELETE: valid during the call */
	bool schema_changed;  /* REVISION: a schema was written in rev */
	const char *metadata; /* REVISION: transaction metadata, or NULL */
	int64_t timestamp_ms; /* REVISION: commit time */
} store_change;

/* Return 0 to continue; anything else stops store_changes, which then
 * returns that value. */
typedef int (*store_change_fn)(void *ctx, const store_change *c);

/* The change feed of revisions (after, upto], from the MVCC history:
 * for each revision in order, its TOUCH items (versions created in it,
 * in primary-key order), its DELETE items (versions it ended, except
 * those it replaced by a new version of the same relationship: a TOUCH
 * that changed a caveat or expiration is one TOUCH), then one REVISION
 * item.  PEMBA_EREVISION if `after` is below the GC floor (changes were
 * dropped) or `upto` beyond the head.  Runs in one read transaction. */
int store_changes(store *s, pemba_revision after, pemba_revision upto,
                  store_change_fn fn, void *ctx, pemba_error *err);

/* ---------------------------------------------------------------- writes */

/* Begins the single write transaction (writers are serialized).  *rev_out
 * is the revision the transaction will commit as (head + 1).  Reads via
 * store_txn_query see the transaction's own writes. */
int store_txn_begin(store *s, store_txn **out, pemba_revision *rev_out,
                    pemba_error *err);
int store_txn_query(store_txn *t, const store_filter *f, size_t limit,
                    store_iter **out, pemba_error *err);
/* CREATE: PEMBA_EEXISTS if a live row with the same key exists. */
int store_txn_create(store_txn *t, const store_rel *r, pemba_error *err);
/* TOUCH: insert, or replace a live row whose caveat/expiration differ;
 * a byte-identical live row is left as is. */
int store_txn_touch(store_txn *t, const store_rel *r, pemba_error *err);
/* CREATE / TOUCH of rels[0..n), in order: exactly the same as calling
 * store_txn_create / store_txn_touch on each row and stopping at the first
 * failure (the rows before it stay written in the transaction; a CREATE
 * conflict is PEMBA_EEXISTS naming that row), but engines may write many
 * rows per statement.  *done_out (may be NULL): rows applied, which on
 * failure is the index of the failing row.  For bulk loads. */
int store_txn_create_batch(store_txn *t, const store_rel *rels, size_t n,
                           size_t *done_out, pemba_error *err);
int store_txn_touch_batch(store_txn *t, const store_rel *rels, size_t n,
                          size_t *done_out, pemba_error *err);
/* DELETE by exact key; *deleted_out = 1 if a live row was deleted. */
int store_txn_delete(store_txn *t, const store_rel *key, int *deleted_out,
                     pemba_error *err);
/* DELETE by filter.  limit 0 = all.  *deleted_out: how many; *more_out: 1
 * if rows matching the filter remain because of the limit. */
int store_txn_delete_filter(store_txn *t, const store_filter *f, size_t limit,
                            size_t *deleted_out, int *more_out,
                            pemba_error *err);
int store_txn_write_schema(store_txn *t, const char *text, size_t len,
                           pemba_error *err);
/* Attaches transaction metadata (a JSON object's text; "" or NULL clears)
 * to the revision being written; store_changes reports it. */
int store_txn_set_metadata(store_txn *t, const char *json, pemba_error *err);
/* ------------------------------------------ positions of a mirrored source
 *
 * When `pemba mirror` copies another datastore (the *source*) into this
 * one, it records for each source revision it applied (or passed, at a
 * checkpoint) the revision here that holds it, so the source's ZedTokens
 * can be honoured after a move.  The store keeps rows; what a token means
 * is decided above it (src/api/foreign_token.c, src/core/positions.c).
 * A source revision is recorded once: a replay keeps the first row.
 */
typedef struct store_position {
	const char *source;   /* the source datastore ("pemba:HEX", ...) */
	const char *revision; /* the source's revision text: exact lookups */
	int64_t order_key;    /* orders that source's revisions */
	bool exact;           /* target holds exactly the source's state */
	pemba_revision target_rev; /* store_record_position: 0 = the head */
} store_position;

/* Records p at the revision being written (p->target_rev is ignored). */
int store_txn_record_position(store_txn *t, const store_position *p,
                              pemba_error *err);
/* Records p outside a write (no new revision): at p->target_rev, or at the
 * head when 0. */
int store_record_position(store *s, const store_position *p, pemba_error *err);

typedef struct store_position_lookup {
	bool known;                     /* the source has rows */
	int64_t min_key, max_key;       /* its oldest and newest recorded */
	pemba_revision max_target;      /* target of the newest */
	bool exact_found;               /* a row with this revision text */
	bool exact_is_exact;            /* ... whose target holds exactly it */
	pemba_revision exact_target;    /* ... and its target */
	bool covering_found;            /* a row with order_key >= upper */
	pemba_revision covering_target; /* the smallest such: its target */
	bool before_found;              /* a row with order_key <= lower */
	pemba_revision before_target;   /* the largest such: its target */
} store_position_lookup;

/* What is recorded about `revision` (may be NULL) of `source`, whose
 * order keys are bounded by lower <= upper. */
int store_lookup_position(store *s, const char *source, const char *revision,
                          int64_t lower, int64_t upper,
                          store_position_lookup *out, pemba_error *err);

/* A bulk load is about to write many rows in t.  When the datastore holds
 * no relationship row at all (not even deleted versions), the engine may
 * drop its secondary indexes now and build them again at commit, from
 * sorted data, instead of maintaining them row by row (a restore into an
 * empty datastore).  Optional for engines (a no-op then); reads inside t
 * stay correct either way. */
int store_txn_defer_indexes(store_txn *t, pemba_error *err);

/* Commits; on failure everything is rolled back and the revision is not
 * used.  The txn is freed either way. */
int store_txn_commit(store_txn *t, pemba_error *err);
void store_txn_abort(store_txn *t);

/* ------------------------------------------------------------ maintenance */

/* Drops row versions and schema versions no longer visible at any revision
 * newer than (now - window), and relationships that expired before
 * (now - window).  Reads below the new floor then fail with
 * PEMBA_EREVISION.  now_ms 0 = the current time. */
int store_gc(store *s, int64_t now_ms, uint64_t *removed_out, pemba_error *err);

/* What one GC run removed. */
typedef struct store_gc_stats {
	uint64_t relationships; /* versions ended at or before the floor */
	uint64_t expired;       /* relationships expired before the window */
	uint64_t schemas;       /* schema versions replaced before the floor */
	uint64_t revisions;     /* revision records below the floor */
	pemba_revision floor;   /* oldest readable revision afterwards */
	/* PostgreSQL: another node held the GC lock, this run did
	 * nothing. */
	bool skipped;
} store_gc_stats;

/* store_gc with the details (out may not be NULL). */
int store_gc_report(store *s, int64_t now_ms, store_gc_stats *out,
                    pemba_error *err);

/* ---------------------------------------------- copies and identity */

/* Progress of a snapshot: units (pages for SQLite) copied of total. */
typedef void (*store_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct store_snapshot_info {
	pemba_revision revision; /* the head the copy holds */
	uint64_t nonce;          /* that revision's (store_revision_nonce) */
	uint64_t bytes;          /* size of the copy */
	char datastore_id[64];   /* the copy's identity */
} store_snapshot_info;

/*
 * Writes a consistent copy of the datastore, as of one revision (the head
 * when the copy starts), to the new file `path`, while other handles and
 * processes keep reading and writing.  Refuses (PEMBA_EEXISTS) to
 * overwrite an existing file; the copy is written under a temporary name
 * next to `path` and appears under `path` only when complete.  With
 * new_identity the copy gets a new random datastore identity (a separate
 * instance: ZedTokens of the original are refused by it and vice versa);
 * without it, it keeps the original's (a backup, or a replacement of the
 * original).  fn (may be NULL) is called as the copy progresses.
 */
int store_snapshot(store *s, const char *path, bool new_identity,
                   store_progress_fn fn, void *ctx, store_snapshot_info *out,
                   pemba_error *err);

/* Gives the datastore a new random identity (written to id_out, 64
 * bytes); handles opened afterwards see it.  For a copy that is to run as
 * a separate instance: callers hold the exclusive lease
 * (store_lock_exclusive) so no server keeps issuing tokens under the old
 * identity. */
int store_new_identity(store *s, char id_out[64], pemba_error *err);

/* ------------------------------------------- processes using a datastore */

/*
 * A server attaches to the datastore it serves (a shared lease); an
 * operation that must not run under a server (layout migrations, a new
 * identity) takes the exclusive lease, which is refused while anyone is
 * attached.  Leases end when the handle closes or the process dies in
 * any way, so a killed server never blocks anything.  Each holder leaves a
 * record so a refusal can name it.  Memory datastores have no leases
 * (these calls succeed and list nobody).  README.md, "Processes using a
 * datastore".
 */
typedef struct store_user {
	char role[16]; /* "serve", "migrate", "new-identity" */
	long pid;
	char host[64];
	int64_t started_ms; /* Unix ms */
} store_user;

/* Shared lease for `role`, held until store_close.  PEMBA_EPRECONDITION
 * while an exclusive lease is held (a migration is running), naming its
 * holder.  A read-only handle (mode=ro) that cannot create the lock file
 * goes without a lease. */
int store_attach(store *s, const char *role, pemba_error *err);
/* Exclusive lease for `role`, held until store_close.
 * PEMBA_EPRECONDITION while any lease is held, naming a holder: "datastore
 * URI is in use by pemba serve (pid P on host H, since TIME)". */
int store_lock_exclusive(store *s, const char *role, pemba_error *err);
/* Who holds a lease now (other handles' leases; the caller's own are
 * not listed): up to cap records in out, *n_out how many there are. */
int store_list_users(store *s, store_user *out, size_t cap, size_t *n_out,
                     pemba_error *err);

/* -------------------------------------------- probes for schema changes */

/*
 * What a schema write needs to know about the relationships it could
 * orphan (src/core/schema_ops.c) and what a migration plan counts: "does
 * any live relationship match this" and "how many, per relation and
 * subject type".  A probe is more selective than a store_filter: it can
 * ask for wildcard subjects only, for a caveat (or none), and for rows with
 * or without an expiration, as SpiceDB's schema checks do.
 */

typedef enum store_expiration_match {
	STORE_EXPIRATION_ANY = 0,
	STORE_EXPIRATION_WITHOUT = 1, /* only rows without an expiration */
	STORE_EXPIRATION_WITH = 2,    /* only rows with one */
} store_expiration_match;

typedef struct store_probe {
	const char *resource_type;    /* NULL: any (subject_type needed) */
	const char *relation;         /* NULL: any */
	const char *subject_type;     /* NULL: any */
	const char *subject_relation; /* NULL: any; "" the subject itself */
	bool wildcard;                /* only subject_id "*" */
	const char *caveat_name;      /* NULL: any; "": no caveat */
	store_expiration_match expiration;
} store_probe;

/* Called with a matching row (valid during the call only). */
typedef void (*store_probe_fn)(void *ctx, const store_rel *row);

/* Inside a write transaction: 1 if a live, unexpired relationship matching
 * p exists in the transaction's state (the head plus its own writes), and
 * then fn (may be NULL) is called once with one such row; 0 if none.  One
 * indexed statement with LIMIT 1: through the reverse index when p names
 * a subject type and asks for wildcards (the whole key prefix is fixed),
 * else the primary key from the resource type, else the reverse index
 * from the subject type.  PEMBA_EINVAL without a resource or subject
 * type. */
int store_txn_probe(store_txn *t, const store_probe *p, store_probe_fn fn,
                    void *ctx, pemba_error *err);

/* One group of store_count_groups. */
typedef struct store_group_count {
	const char *resource_type;
	const char *relation;
	const char *subject_type;
	const char *subject_relation; /* "" for none */
	bool wildcard;
	const char *caveat_name; /* "" for none */
	uint64_t count;
} store_group_count;

/* Return 0 to continue, anything else to stop (store_count_groups then
 * returns that value). */
typedef int (*store_group_fn)(void *ctx, const store_group_count *g);

/* Counts the relationships visible at `at` (0 = head) that match p,
 * grouped by (resource type, relation, subject type, subject relation,
 * wildcard or not, caveat), in a stable order.  One aggregate statement over
 * the same index a probe uses; runs in its own read snapshot. */
int store_count_groups(store *s, pemba_revision at, const store_probe *p,
                       store_group_fn fn, void *ctx, pemba_error *err);

/* ------------------------------------------------------ datastore settings */

/*
 * Settings that belong to the datastore, so that every handle and every
 * process serving it sees them: the read-only flag and relation
 * deprecations.  Changing a setting is its own small transaction (writers
 * are serialized with relationship and schema writes) but is not a
 * revision: it changes no relationship and no schema, must work while the
 * datastore is read-only, and does not show in the change feed.
 *
 * Reads (store_get_read_only, store_list_deprecations) see the newest
 * committed settings; called on a handle with a write transaction open
 * they read inside that transaction, and since writers are serialized no
 * setting can change before it commits: that is how core checks them
 * without a race.  The setters refuse to run inside a write transaction.
 */

typedef enum store_deprecation_mode {
	STORE_DEPRECATION_WARN = 1,   /* writes succeed; the caller is told */
	STORE_DEPRECATION_REJECT = 2, /* writes are refused */
} store_deprecation_mode;

typedef struct store_deprecation {
	const char *resource_type;
	const char *relation;
	store_deprecation_mode mode;
	pemba_revision set_rev; /* the head revision when it was set */
	int64_t set_ms;         /* wall clock (Unix ms) when it was set */
} store_deprecation;

/* The read-only flag (false on a datastore that never set it). */
int store_get_read_only(store *s, bool *out, pemba_error *err);
int store_set_read_only(store *s, bool read_only, pemba_error *err);

/* Every deprecation, ordered by (resource_type, relation).  *out is one
 * malloc'd block holding the array and its strings (caller frees it with
 * free()); NULL with *n_out 0 when there are none. */
int store_list_deprecations(store *s, store_deprecation **out, size_t *n_out,
                            pemba_error *err);
/* Deprecates resource_type#relation in `mode`, replacing an earlier
 * deprecation of it (its set_rev / set_ms are renewed).  The store does
 * not look at the schema: core checks that the relation exists. */
int store_set_deprecation(store *s, const char *resource_type,
                          const char *relation, store_deprecation_mode mode,
                          pemba_error *err);
/* Removes the deprecation of resource_type#relation; *removed_out (may be
 * NULL) says whether there was one. */
int store_remove_deprecation(store *s, const char *resource_type,
                             const char *relation, bool *removed_out,
                             pemba_error *err);

/* ------------------------------------------------ layout (table) versions */

typedef struct store_migration_info {
	int version;
	const char *name;
	bool applied;
	const char *description; /* one line: what the migration changes */
} store_migration_info;

/* Current layout version of the datastore and the newest this binary
 * knows; *list (may be NULL) gets a static array of all known migrations
 * with `applied` filled in (caller frees the array with free()). */
int store_migrate_status(store *s, int *current_out, int *head_out,
                         store_migration_info **list, size_t *nlist,
                         pemba_error *err);
/* Applies pending migrations up to `target` (0 = newest), each in its own
 * transaction; safe to re-run after a failure. */
int store_migrate_up(store *s, int target, pemba_error *err);
/* Reverts applied migrations down to `target` (>= 0). */
int store_migrate_down(store *s, int target, pemba_error *err);

/* ------------------------------------------------- engine implementation */

/* What an engine provides; see store_sqlite.c.  store_open dispatches on
 * the URI scheme. */
typedef struct store_ops {
	const char *scheme; /* "sqlite" */
	int (*open)(const char *uri, const store_options *opts, store **out,
	            pemba_error *err);
	void (*close)(store *s);
	const char *(*datastore_id)(store *s);
	int (*head_revision)(store *s, pemba_revision *out, pemba_error *err);
	int (*check_revision)(store *s, pemba_revision rev, pemba_error *err);
	int (*reopen)(store *s, store **out, pemba_error *err);
	int (*wait_revision)(store *s, pemba_revision after, int timeout_ms,
	                     pemba_revision *head_out, pemba_error *err);
	int (*scan)(store *s, pemba_revision at, const store_rel *after,
	            size_t limit, store_iter **out, pemba_error *err);
	int (*changes)(store *s, pemba_revision after, pemba_revision upto,
	               store_change_fn fn, void *ctx, pemba_error *err);
	int (*txn_set_metadata)(store_txn *t, const char *json,
	                        pemba_error *err);
	int (*txn_defer_indexes)(store_txn *t, pemba_error *err); /* opt. */
	int (*txn_record_position)(store_txn *t, const store_position *p,
	                           pemba_error *err);
	int (*record_position)(store *s, const store_position *p,
	                       pemba_error *err);
	int (*lookup_position)(store *s, const char *source,
	                       const char *revision, int64_t lower,
	                       int64_t upper, store_position_lookup *out,
	                       pemba_error *err);
	int (*query)(store *s, pemba_revision at, const store_filter *f,
	             const store_rel *after, size_t limit, store_iter **out,
	             pemba_error *err);
	int (*iter_next)(store_iter *it, const store_rel **row,
	                 pemba_error *err);
	void (*iter_close)(store_iter *it);
	int (*read_begin)(store *s, pemba_error *err);
	void (*read_end)(store *s);
	int (*read_schema)(store *s, pemba_revision at, char **text_out,
	                   pemba_revision *written_rev_out, pemba_error *err);
	int (*txn_begin)(store *s, store_txn **out, pemba_revision *rev_out,
	                 pemba_error *err);
	int (*txn_query)(store_txn *t, const store_filter *f, size_t limit,
	                 store_iter **out, pemba_error *err);
	int (*txn_create)(store_txn *t, const store_rel *r, pemba_error *err);
	int (*txn_touch)(store_txn *t, const store_rel *r, pemba_error *err);
	/* Optional (NULL: the generic layer loops over txn_create /
	 * txn_touch). */
	int (*txn_create_batch)(store_txn *t, const store_rel *rels, size_t n,
	                        size_t *done_out, pemba_error *err);
	int (*txn_touch_batch)(store_txn *t, const store_rel *rels, size_t n,
	                       size_t *done_out, pemba_error *err);
	int (*txn_delete)(store_txn *t, const store_rel *key, int *deleted_out,
	                  pemba_error *err);
	int (*txn_delete_filter)(store_txn *t, const store_filter *f,
	                         size_t limit, size_t *deleted_out,
	                         int *more_out, pemba_error *err);
	int (*txn_write_schema)(store_txn *t, const char *text, size_t len,
	                        pemba_error *err);
	int (*txn_commit)(store_txn *t, pemba_error *err);
	void (*txn_abort)(store_txn *t);
	int (*gc)(store *s, int64_t now_ms, store_gc_stats *out,
	          pemba_error *err);
	int (*revision_nonce)(store *s, pemba_revision rev, uint64_t *nonce_out,
	                      pemba_error *err);
	/* Optional (NULL: PEMBA_EUNSUPPORTED, or no leases). */
	int (*snapshot)(store *s, const char *path, bool new_identity,
	                store_progress_fn fn, void *ctx,
	                store_snapshot_info *out, pemba_error *err);
	int (*new_identity)(store *s, char id_out[64], pemba_error *err);
	int (*lease)(store *s, const char *role, bool exclusive,
	             pemba_error *err);
	int (*list_users)(store *s, store_user *out, size_t cap, size_t *n_out,
	                  pemba_error *err);
	int (*migrate_status)(store *s, int *current_out, int *head_out,
	                      store_migration_info **list, size_t *nlist,
	                      pemba_error *err);
	int (*migrate_up)(store *s, int target, pemba_error *err);
	int (*migrate_down)(store *s, int target, pemba_error *err);
	int (*get_read_only)(store *s, bool *out, pemba_error *err);
	int (*set_read_only)(store *s, bool read_only, pemba_error *err);
	int (*list_deprecations)(store *s, store_deprecation **out,
	                         size_t *n_out, pemba_error *err);
	int (*set_deprecation)(store *s, const char *resource_type,
	                       const char *relation,
	                       store_deprecation_mode mode, pemba_error *err);
	int (*remove_deprecation)(store *s, const char *resource_type,
	                          const char *relation, bool *removed_out,
	                          pemba_error *err);
	/* Probes for schema changes (see store_txn_probe). */
	int (*txn_probe)(store_txn *t, const store_probe *p, store_probe_fn fn,
	                 void *ctx, pemba_error *err);
	int (*count_groups)(store *s, pemba_revision at, const store_probe *p,
	                    store_group_fn fn, void *ctx, pemba_error *err);
} store_ops;

/* Every engine's handle starts with this header so the generic layer can
 * dispatch; same for iterators and transactions.  Engines allocate the
 * handle zeroed and set only `ops`: the rest belongs to store.c (the
 * query cache and the read transaction it defers). */
struct store {
	const store_ops *ops;
	struct store_cache *cache; /* NULL: no query cache */
	int read_depth;            /* store_read_begin nesting (cache on) */
	bool engine_reading;       /* ops->read_begin forwarded, not ended */
	pemba_revision head_seen;  /* last head read through this handle */
	int64_t head_seen_ms;      /* when (monotonic ms) */
	uint64_t head_seen_gc;     /* the GC generation then */
};
struct store_iter {
	const store_ops *ops;
};
struct store_txn {
	const store_ops *ops;
};

extern const store_ops store_sqlite_ops;
extern const store_ops store_postgres_ops; /* postgres:// and postgresql:// */

/* For tests and benchmarks: on an SQLite file datastore with group sync
 * (store_sqlite.c), the commits of this process that waited to be made
 * durable and the fdatasync calls that did it.  -1 for other stores. */
int store_sqlite_sync_counts(store *s, uint64_t *commits, uint64_t *syncs);

#endif
