/*
 * store_sqlite.c -- the SQLite datastore engine.
 *
 * Layout, MVCC representation and the reasons behind them are in
 * README.md; the tables themselves are created by the numbered migrations
 * in sqlite_migrations.c.  In short:
 *
 *   - relationships is a WITHOUT ROWID table keyed by (resource_type,
 *     resource_id, relation, subject_type, subject_id, subject_relation,
 *     deleted_rev): the table is the forward index, and since deleted_rev
 *     is 0 for the live version the key makes live rows unique.
 *   - type, relation and caveat names are interned into small integers
 *     (table `names`, cached in memory in `name_cache`).
 *   - a version is visible at R iff created_rev <= R and (deleted_rev = 0
 *     or deleted_rev > R).
 *
 * Statements: every fixed statement is prepared once and cached in
 * `stmts[]`.  Queries are built per *shape* (which filter fields are set,
 * whether there is a cursor, live or at-revision) and pooled per shape;
 * a pooled statement in use by an open iterator is never reused, so any
 * number of iterators may be open at once.
 *
 * Threads: a handle is used by one thread at a time (SQLITE_OPEN_NOMUTEX).
 * Several handles may share one datastore (README.md, "Concurrency"):
 * writers serialize on BEGIN IMMEDIATE with a busy timeout and read the
 * head inside that transaction, so revisions stay gapless across handles.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/file_lease.h"
#include "store/sqlite_migrations.h"
#include "store/store.h"
#include "util/arena.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define DEFAULT_GC_WINDOW_SECONDS (24 * 60 * 60)
#define WAL_AUTOCHECKPOINT_PAGES 10000
#define BUSY_TIMEOUT_MS 5000
/* Page cache per connection, in KiB (negative cache_size is KiB). */
#define CACHE_SIZE_KIB 65536
/* Rows collected per round by a delete-by-filter. */
#define DELETE_CHUNK 512
/* Rows per multi-row INSERT of the batch writes (10 parameters a row).
 * Measured bare: 64 rows a statement cost about 1.24 us/row against
 * about 1.8 us/row one row at a time (src/store/README.md). */
#define BATCH_ROWS 64
/* Page cache of a connection to a named memory datastore, in KiB: the
 * pages already live in process memory, so a connection's cache only saves
 * a memcpy per page, and each connection has its own. */
#define MEMDB_CACHE_SIZE_KIB 8192
/* Largest named memory datastore (SQLite's memdb default is 1 GiB). */
#define MEMDB_MAX_BYTES ((sqlite3_int64)1 << 40)
#define MEMORY_NAME_MAX 128
/* Revision nonces cached per handle (direct-mapped by revision). */
#define NONCE_CACHE 64
/* Pages copied per step of a snapshot (between progress reports). */
#define SNAPSHOT_STEP_PAGES 256

typedef struct sqlite_store sqlite_store;

/* ========================================================= name interning */

/*
 * Type, relation and caveat names are stored as small integers (ids of the
 * `names` table; 0 is the empty name, i.e. "no subject relation" / "no
 * caveat").  The cache maps both ways.  Names are never removed from the
 * table, so a cached mapping can only become wrong when the transaction
 * that created it rolls back: then the whole cache is dropped.  The strings
 * live in an arena that is only released with the handle, so pointers
 * handed out in rows survive a cache drop.
 */
typedef struct name_slot {
	const char *name; /* NULL: empty slot */
	uint64_t hash;
	int64_t id;
} name_slot;

typedef struct name_cache {
	name_slot *slots; /* open addressing, capacity a power of two */
	size_t cap, count;
	const char **by_id; /* by_id[id], NULL if not cached */
	size_t by_id_cap;
	arena *strings;
} name_cache;

/* =============================================================== handles */

/* Fixed statements, prepared on first use. */
enum stmt_id {
	ST_BEGIN,
	ST_READ_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_HEAD,
	ST_FLOOR,
	ST_NAME_BY_STRING,
	ST_NAME_BY_ID,
	ST_NAME_INSERT,
	ST_REV_INSERT,
	ST_REL_INSERT,
	ST_REL_INSERT_IGNORE,
	ST_REL_LIVE,
	ST_REL_CLOSE,
	ST_REL_DROP_NEW,
	ST_REL_SET_CAVEAT,
	ST_SCHEMA_AT,
	ST_SCHEMA_CLOSE,
	ST_SCHEMA_PUT,
	ST_CHANGES_CREATED,
	ST_CHANGES_DELETED,
	ST_CHANGES_REVISION,
	ST_SET_METADATA,
	ST_READ_ONLY_GET,
	ST_DEPRECATIONS_LIST,
	ST_NONCE,
	ST_LAYOUT,
	ST_COUNT
};

/* The columns every relationship row is read with (see row_decode). */
#define ROW_COLUMNS                                                            \
	"resource_type, resource_id, relation, subject_type, subject_id, "     \
	"subject_relation, caveat_name, caveat_context, expiration_ms, "       \
	"created_rev"

#define KEY_WHERE                                                              \
	"resource_type = ?1 AND resource_id = ?2 AND relation = ?3 AND "       \
	"subject_type = ?4 AND subject_id = ?5 AND subject_relation = ?6"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_READ_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_HEAD] = "SELECT rev, timestamp_ms FROM revisions "
                "ORDER BY rev DESC LIMIT 1",
    [ST_FLOOR] = "SELECT value FROM meta WHERE key = 'gc_floor'",
    [ST_NAME_BY_STRING] = "SELECT id FROM names WHERE name = ?1",
    [ST_NAME_BY_ID] = "SELECT name FROM names WHERE id = ?1",
    [ST_NAME_INSERT] = "INSERT INTO names(name) VALUES (?1)",
    /* random(): SQLite's PRNG, seeded from the OS per process, so two
     * copies of a datastore give the same revision different nonces. */
    [ST_REV_INSERT] = "INSERT INTO revisions(rev, timestamp_ms, nonce) "
                      "VALUES (?1, ?2, random())",
    [ST_REL_INSERT] =
        "INSERT INTO relationships(resource_type, resource_id, "
        "relation, subject_type, subject_id, subject_relation, "
        "deleted_rev, created_rev, caveat_name, caveat_context, "
        "expiration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, "
        "?10)",
    [ST_REL_INSERT_IGNORE] =
        "INSERT INTO relationships(resource_type, resource_id, "
        "relation, subject_type, subject_id, subject_relation, "
        "deleted_rev, created_rev, caveat_name, caveat_context, "
        "expiration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, "
        "?10) ON CONFLICT DO NOTHING",
    [ST_REL_LIVE] = "SELECT created_rev, caveat_name, caveat_context, "
                    "expiration_ms FROM relationships WHERE " KEY_WHERE
                    " AND deleted_rev = 0",
    [ST_REL_CLOSE] =
        "UPDATE relationships SET deleted_rev = ?7 WHERE " KEY_WHERE
        " AND deleted_rev = 0 AND created_rev < ?7",
    [ST_REL_DROP_NEW] = "DELETE FROM relationships WHERE " KEY_WHERE
                        " AND deleted_rev = 0 AND created_rev = ?7",
    [ST_REL_SET_CAVEAT] = "UPDATE relationships SET caveat_name = ?8, "
                          "caveat_context = ?9, expiration_ms = ?10 "
                          "WHERE " KEY_WHERE " AND deleted_rev = 0",
    [ST_SCHEMA_AT] = "SELECT text, created_rev, deleted_rev "
                     "FROM schema_versions WHERE created_rev <= ?1 "
                     "ORDER BY created_rev DESC LIMIT 1",
    [ST_SCHEMA_CLOSE] = "UPDATE schema_versions SET deleted_rev = ?1 "
                        "WHERE deleted_rev IS NULL AND created_rev < ?1",
    [ST_SCHEMA_PUT] = "INSERT INTO schema_versions(created_rev, "
                      "deleted_rev, text) VALUES (?1, NULL, ?2) "
                      "ON CONFLICT(created_rev) DO UPDATE "
                      "SET text = excluded.text",
    /* The change feed, one revision at a time.  Versions created in ?1,
     * in primary-key order (the index carries the key after
     * created_rev). */
    [ST_CHANGES_CREATED] =
        "SELECT " ROW_COLUMNS " FROM relationships "
        "INDEXED BY relationships_created WHERE created_rev = ?1 "
        "ORDER BY created_rev, resource_type, resource_id, relation, "
        "subject_type, subject_id, subject_relation",
    /* Versions ended in ?1, except those replaced in ?1 by a newer
     * version of the same key (a TOUCH that changed the caveat or the
     * expiration): that is one TOUCH, reported with the new version.
     * `deleted_rev > 0` lets SQLite use the partial index. */
    [ST_CHANGES_DELETED] =
        "SELECT " ROW_COLUMNS " FROM relationships AS r "
        "INDEXED BY relationships_deleted "
        "WHERE deleted_rev > 0 AND deleted_rev = ?1 AND NOT EXISTS ("
        "SELECT 1 FROM relationships AS n WHERE "
        "n.resource_type = r.resource_type AND "
        "n.resource_id = r.resource_id AND n.relation = r.relation AND "
        "n.subject_type = r.subject_type AND "
        "n.subject_id = r.subject_id AND "
        "n.subject_relation = r.subject_relation AND "
        "n.created_rev = ?1) "
        "ORDER BY resource_type, resource_id, relation, subject_type, "
        "subject_id, subject_relation",
    [ST_CHANGES_REVISION] =
        "SELECT timestamp_ms, metadata, EXISTS (SELECT 1 FROM "
        "schema_versions WHERE created_rev = ?1) FROM revisions "
        "WHERE rev = ?1",
    [ST_SET_METADATA] = "UPDATE revisions SET metadata = ?2 WHERE rev = ?1",
    /* Datastore settings: read in every write transaction. */
    [ST_READ_ONLY_GET] = "SELECT value FROM settings WHERE key = 'read_only'",
    [ST_DEPRECATIONS_LIST] = "SELECT resource_type, relation, mode, set_rev, "
                             "set_ms FROM relation_deprecations "
                             "ORDER BY resource_type, relation",
    [ST_NONCE] = "SELECT nonce FROM revisions WHERE rev = ?1",
    /* ~0.07 us inside a transaction: read at the start of every read
     * and write transaction (see layout_check). */
    [ST_LAYOUT] = "PRAGMA user_version",
};

/*
 * Query shapes.  The six low bits say which filter fields are set; the
 * others whether a pagination cursor is bound and whether the query reads
 * the live rows (inside a write transaction) instead of a revision.
 */
enum {
	SHAPE_RESOURCE_TYPE = 1 << 0,
	SHAPE_RESOURCE_ID = 1 << 1,
	SHAPE_RELATION = 1 << 2,
	SHAPE_SUBJECT_TYPE = 1 << 3,
	SHAPE_SUBJECT_ID = 1 << 4,
	SHAPE_SUBJECT_RELATION = 1 << 5,
	SHAPE_AFTER = 1 << 6,
	SHAPE_LIVE = 1 << 7,
	SHAPE_COUNT = 1 << 8,
	SHAPE_EMPTY = SHAPE_COUNT, /* pool of iterators that return nothing */
};

/* The six key columns, in table order; indexes into key_columns[]. */
enum { COL_RT, COL_RID, COL_REL, COL_ST, COL_SID, COL_SREL, NKEY };
static const char *const key_columns[NKEY] = {
    "resource_type", "resource_id", "relation",
    "subject_type",  "subject_id",  "subject_relation",
};
/* Column orders of the two indexes. */
static const int forward_order[NKEY] = {COL_RT, COL_RID, COL_REL,
                                        COL_ST, COL_SID, COL_SREL};
static const int reverse_order[NKEY] = {COL_ST, COL_SID, COL_SREL,
                                        COL_RT, COL_REL, COL_RID};
/* Query parameters: ?1..?6 filter, ?7 revision, ?8..?13 cursor, ?14 limit,
 * ?15 the time (Unix ms) at or before which expiring rows are hidden. */
#define PARAM_FILTER(col) ((col) + 1)
#define PARAM_AT 7
#define PARAM_AFTER(col) ((col) + 8)
#define PARAM_LIMIT 14
#define PARAM_NOW 15
/* Bound as PARAM_NOW where expired rows must stay visible (delete by
 * filter, which also closes expired rows). */
#define NOW_SHOW_EXPIRED INT64_MIN

/* An iterator; pooled per shape and reused once closed. */
typedef struct sqlite_iter {
	store_iter base;
	sqlite_store *s;
	struct sqlite_iter *next; /* next in its shape's pool */
	unsigned shape;
	sqlite3_stmt *stmt; /* NULL for SHAPE_EMPTY */
	bool in_use;
	bool done;
	store_rel row;
} sqlite_iter;

typedef struct sqlite_txn {
	store_txn base;
	sqlite_store *s;
	pemba_revision rev;
	char *deferred_indexes; /* heap: CREATE INDEX statements to run at
	                           commit (store_txn_defer_indexes), or NULL */
} sqlite_txn;

struct sqlite_store {
	store base;
	int64_t busy_since_ms; /* busy_wait: when this wait began */
	struct write_gate *gate; /* this datastore's writers in this process */
	bool gate_held;
	sqlite3 *db;
	bool memory;        /* private or named memory datastore */
	bool shared_memory; /* named: reachable by other handles */
	bool read_only;     /* opened with ?mode=ro */
	bool group_sync;    /* commits synced by group_sync_wait (?sync=group) */
	int wal_pages;      /* WAL size after this handle's last commit */
	bool ready;         /* open finished: layout checks apply */
	char *uri;          /* for store_reopen and messages */
	char *path;         /* the database file; NULL for memory */
	file_lease *lease;  /* store_attach / store_lock_exclusive */
	store_options opts;
	int64_t gc_window_ms;
	int layout_version;
	/* Another process migrated the layout after this handle opened it:
	 * every operation fails (check_layout); layout_now is what it saw. */
	bool layout_changed;
	int layout_now;
	int head_reprepares; /* of ST_HEAD, last seen (see read_head) */
	struct {
		pemba_revision rev; /* 0: empty */
		uint64_t nonce;
	} nonces[NONCE_CACHE];
	char datastore_id[64];
	pemba_revision cached_floor; /* last gc_floor seen; only grows */
	sqlite3_stmt *stmts[ST_COUNT];
	/* Multi-row INSERTs of the batch writes: [on conflict do nothing]
	 * [rows]; prepared on first use. */
	sqlite3_stmt *batch_stmts[2][BATCH_ROWS + 1];
	sqlite_iter *pools[SHAPE_COUNT + 1];
	int open_iters;
	name_cache names;
	arena *scratch; /* per delete-by-filter round */
	bool in_txn;
	int read_depth; /* nesting of store_read_begin outside a write txn */
	int64_t read_now_ms; /* wall clock when the read transaction began */
	sqlite_txn txn;
};

/* A relationship key with its names interned. */
typedef struct rel_key {
	int64_t ids[NKEY]; /* for COL_RID / COL_SID unused */
	const char *resource_id;
	const char *subject_id;
} rel_key;

/* ================================================================ errors */

/*
 * Layout versions.  A handle works with the layout it opened (and checked,
 * or migrated to).  When another process migrates the datastore under it
 * (`pemba datastore migrate --force`, or an older or newer binary), the
 * handle's statements, name cache and revision numbers may mean nothing
 * any more, so from the moment it notices -- the head read of the next
 * request, or any database error -- it refuses everything with one clear
 * message instead of "no such table".  It stays refused: a restart
 * (a new handle) is the only way back.
 */
static int layout_changed_error(sqlite_store *s, pemba_error *err)
{
	if (s->layout_now < s->layout_version)
		return error_set(
		    err, PEMBA_EVERSION,
		    "datastore layout changed under this server (now %d, "
		    "expected %d): restart it after `pemba datastore migrate "
		    "head --datastore %s`",
		    s->layout_now, s->layout_version, s->uri);
	return error_set(err, PEMBA_EVERSION,
	                 "datastore layout changed under this server (now %d, "
	                 "expected %d): a newer pemba migrated it; run that "
	                 "version instead, or restart this one after `pemba "
	                 "datastore migrate down --to %d --datastore %s` with "
	                 "the newer binary",
	                 s->layout_now, s->layout_version, s->layout_version,
	                 s->uri);
}

/* The layout at open is older than this binary's: what to run. */
static int layout_pending_error(sqlite_store *s, int version, pemba_error *err)
{
	return error_set(err, PEMBA_EVERSION,
	                 "datastore %s is at layout version %d but this "
	                 "binary needs version %d: run `pemba datastore "
	                 "migrate head --datastore %s`",
	                 s->uri, version, sqlite_migration_count, s->uri);
}

static int check_layout(sqlite_store *s, pemba_error *err)
{
	if (s->layout_changed)
		return layout_changed_error(s, err);
	if (s->layout_version == sqlite_migration_count)
		return PEMBA_OK;
	return layout_pending_error(s, s->layout_version, err);
}

/* Records a layout version read from the file; true (and the handle is
 * refused from now on) if it is not the one the handle works with. */
static bool layout_seen(sqlite_store *s, int version)
{
	if (!s->ready || s->layout_changed)
		return s->layout_changed;
	if (version == s->layout_version)
		return false;
	s->layout_changed = true;
	s->layout_now = version;
	return true;
}

/* After a database error: was it because the layout moved?  Reads the
 * version with a one-off statement (the cached ones may be what failed). */
static bool layout_moved(sqlite_store *s)
{
	if (!s->ready || s->layout_changed)
		return s->layout_changed;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) !=
	    SQLITE_OK)
		return false;
	bool moved = false;
	if (sqlite3_step(st) == SQLITE_ROW)
		moved = layout_seen(s, sqlite3_column_int(st, 0));
	sqlite3_finalize(st);
	return moved;
}

static int db_error(sqlite_store *s, pemba_error *err, const char *what)
{
	int code = sqlite3_extended_errcode(s->db);
	if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED)
		/* Another handle held the datastore for longer than the
		 * busy timeout: the caller may retry. */
		return error_set(err, PEMBA_EIO,
		                 "datastore busy: %s: another writer held the "
		                 "datastore for more than %d ms",
		                 what, BUSY_TIMEOUT_MS);
	char message[512];
	snprintf(message, sizeof(message), "%s", sqlite3_errmsg(s->db));
	if (layout_moved(s))
		return layout_changed_error(s, err);
	if ((code & 0xff) == SQLITE_READONLY)
		return error_set(err, PEMBA_EREADONLY, "datastore: %s: %s%s",
		                 what, message,
		                 s->read_only ? " (opened with mode=ro)" : "");
	return error_set(err, PEMBA_EIO, "datastore: %s: %s", what, message);
}

/* Writes are refused up front on a handle opened with ?mode=ro. */
static int check_writable(sqlite_store *s, pemba_error *err)
{
	if (!s->read_only)
		return PEMBA_OK;
	return error_set(err, PEMBA_EREADONLY,
	                 "datastore %s was opened read-only (mode=ro): "
	                 "writes are refused",
	                 s->uri);
}

static int64_t now_ms_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ============================================================ statements */

/* The cached statement `id`, prepared on first use; NULL on error. */
static sqlite3_stmt *stmt_get(sqlite_store *s, enum stmt_id id,
                              pemba_error *err)
{
	if (!s->stmts[id] &&
	    sqlite3_prepare_v3(s->db, stmt_sql[id], -1,
	                       SQLITE_PREPARE_PERSISTENT, &s->stmts[id],
	                       NULL) != SQLITE_OK) {
		db_error(s, err, "preparing a statement");
		return NULL;
	}
	return s->stmts[id];
}

/* Runs a cached statement that returns no rows; resets it. */
static int stmt_run(sqlite_store *s, sqlite3_stmt *st, const char *what,
                    pemba_error *err)
{
	int rc = sqlite3_step(st);
	int ret = PEMBA_OK;
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		ret = db_error(s, err, what);
	sqlite3_reset(st);
	return ret;
}


/*
 * The write gate: writers of one datastore within one process take turns
 * in arrival order before BEGIN IMMEDIATE.  SQLite's write lock has no
 * queue: a waiter polls (busy_wait), and a writer that commits and begins
 * again at once -- a `relationship copy`, batch after batch -- keeps
 * winning against writers that polled a moment too late.  With the gate,
 * every write that arrived during a batch goes before the next batch, so
 * an application's writes wait at most one batch however long the copy
 * runs (bench_migrate --dual-writes).  Other processes on the same file
 * still meet only SQLite's lock.  Keyed by the file's device and inode
 * (or a named memory datastore's URI); private memory datastores have a
 * single handle and no gate.  A waiter gives up after BUSY_TIMEOUT_MS
 * with the same "datastore busy" error as SQLite's lock.
 */
typedef struct gate_waiter {
	pthread_cond_t cv;
	bool granted;
	struct gate_waiter *next;
} gate_waiter;

typedef struct write_gate {
	char *key;
	int refs;
	bool busy;                 /* a writer holds it */
	gate_waiter *head, *tail; /* FIFO of waiters */
	struct write_gate *next;
	/* Group sync (group_sync_wait), under sync_mu. */
	pthread_mutex_t sync_mu;
	pthread_cond_t sync_cv;
	uint64_t committed; /* commits that asked to be made durable */
	uint64_t synced;    /* ... of which an fdatasync covered this many */
	bool syncing;       /* a committer is in fdatasync for the others */
	int wal_fd;         /* the WAL file, or -1 */
	dev_t wal_dev;
	ino_t wal_ino;
	uint64_t syncs; /* fdatasync calls made (tests, benchmarks) */
} write_gate;

static pthread_mutex_t gates_mutex = PTHREAD_MUTEX_INITIALIZER;
static write_gate *gates;

static write_gate *gate_acquire_ref(const char *key)
{
	pthread_mutex_lock(&gates_mutex);
	write_gate *g = gates;
	while (g && strcmp(g->key, key) != 0)
		g = g->next;
	if (!g) {
		g = xcalloc(1, sizeof(*g));
		g->key = xstrdup(key);
		g->next = gates;
		pthread_mutex_init(&g->sync_mu, NULL);
		pthread_cond_init(&g->sync_cv, NULL);
		g->wal_fd = -1;
		gates = g;
	}
	g->refs++;
	pthread_mutex_unlock(&gates_mutex);
	return g;
}

static void gate_release_ref(write_gate *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&gates_mutex);
	if (--g->refs == 0) {
		write_gate **pp = &gates;
		while (*pp != g)
			pp = &(*pp)->next;
		*pp = g->next;
		if (g->wal_fd >= 0)
			close(g->wal_fd);
		pthread_mutex_destroy(&g->sync_mu);
		pthread_cond_destroy(&g->sync_cv);
		free(g->key);
		free(g);
	}
	pthread_mutex_unlock(&gates_mutex);
}

/* Waits for the handle's turn (FIFO), at most BUSY_TIMEOUT_MS.  true when
 * it holds the gate (or has none). */
static bool gate_enter(sqlite_store *s)
{
	write_gate *g = s->gate;
	if (!g || s->gate_held)
		return true;
	pthread_mutex_lock(&gates_mutex);
	if (!g->busy && !g->head) {
		g->busy = true;
		s->gate_held = true;
		pthread_mutex_unlock(&gates_mutex);
		return true;
	}
	gate_waiter w = {.granted = false};
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w.cv, &ca);
	pthread_condattr_destroy(&ca);
	if (g->tail)
		g->tail->next = &w;
	else
		g->head = &w;
	g->tail = &w;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += BUSY_TIMEOUT_MS / 1000;
	until.tv_nsec += (long)(BUSY_TIMEOUT_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (!w.granted &&
	       pthread_cond_timedwait(&w.cv, &gates_mutex, &until) == 0)
		;
	if (!w.granted) {
		/* Timed out: leave the queue (it is not at its head with
		 * the gate granted, or granted would be set). */
		gate_waiter **pp = &g->head;
		gate_waiter *prev = NULL;
		while (*pp != &w) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		*pp = w.next;
		if (g->tail == &w)
			g->tail = prev;
	}
	pthread_mutex_unlock(&gates_mutex);
	pthread_cond_destroy(&w.cv);
	s->gate_held = w.granted;
	return w.granted;
}

/* Hands the gate to the longest waiter, if the handle holds it. */
static void gate_leave(sqlite_store *s)
{
	write_gate *g = s->gate;
	if (!g || !s->gate_held)
		return;
	s->gate_held = false;
	pthread_mutex_lock(&gates_mutex);
	gate_waiter *w = g->head;
	if (w) {
		g->head = w->next;
		if (!g->head)
			g->tail = NULL;
		w->next = NULL;
		w->granted = true; /* busy stays true: passed on */
		pthread_cond_signal(&w->cv);
	} else {
		g->busy = false;
	}
	pthread_mutex_unlock(&gates_mutex);
}

/* The gate of the datastore s opened (none for a private memory one). */
static void gate_attach(sqlite_store *s)
{
	char key[64];
	if (s->memory) {
		if (!s->shared_memory)
			return;
		s->gate = gate_acquire_ref(s->uri);
		return;
	}
	struct stat st;
	if (!s->path || stat(s->path, &st) != 0)
		return;
	snprintf(key, sizeof(key), "file:%ju:%ju", (uintmax_t)st.st_dev,
	         (uintmax_t)st.st_ino);
	s->gate = gate_acquire_ref(key);
}

/*
 * Group sync.  A file datastore runs SQLite with synchronous=NORMAL: a
 * COMMIT appends its pages to the WAL and returns without fsync, and the
 * write lock (and the gate) are released at once.  Only then does the
 * committer make its commit durable: it takes a ticket and waits until an
 * fdatasync of the WAL file that began after its COMMIT returned has
 * finished; if no sync is running it runs one itself, for every commit
 * ticketed so far.  So writers of one process share fsyncs instead of
 * queueing one each behind the write lock (on the benchmark VM a WAL
 * fsync takes milliseconds), and nothing is acknowledged before it is on
 * disk.  WAL frames carry cumulative checksums, so after a power loss a
 * commit is recovered only with every commit before it: an acknowledged
 * commit never depends on a later sync.  The one weakening: another
 * reader may see a commit during the milliseconds before it is durable;
 * a power loss then loses a write its writer was never told succeeded.
 * `?sync=full` keeps SQLite's synchronous=FULL (fsync inside COMMIT,
 * under the lock) for those who want no such window.  README.md.
 */
static int wal_sync(write_gate *g, const char *path, pemba_error *err)
{
	char wal[4200];
	snprintf(wal, sizeof(wal), "%s-wal", path);
	struct stat st;
	if (stat(wal, &st) != 0)
		return error_set(err, PEMBA_EIO,
		                 "commit written but not made durable: cannot "
		                 "find the write-ahead log %s: %s",
		                 wal, strerror(errno));
	if (g->wal_fd < 0 || st.st_dev != g->wal_dev ||
	    st.st_ino != g->wal_ino) {
		/* First sync, or SQLite removed the log (last connection
		 * closed) and made a new one: sync the new file's directory
		 * entry too. */
		if (g->wal_fd >= 0)
			close(g->wal_fd);
		g->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
		if (g->wal_fd < 0)
			return error_set(err, PEMBA_EIO,
			                 "commit written but not made durable: "
			                 "cannot open %s: %s",
			                 wal, strerror(errno));
		g->wal_dev = st.st_dev;
		g->wal_ino = st.st_ino;
		char dir[4200];
		snprintf(dir, sizeof(dir), "%s", path);
		char *slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
		int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY |
		                                       O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	if (fdatasync(g->wal_fd) != 0)
		return error_set(err, PEMBA_EIO,
		                 "commit written but not made durable: fdatasync "
		                 "of %s failed: %s",
		                 wal, strerror(errno));
	return PEMBA_OK;
}

/* After a COMMIT of a group-sync handle: returns once the commit is on
 * disk (see above). */
static int group_sync_wait(sqlite_store *s, pemba_error *err)
{
	write_gate *g = s->gate;
	if (!s->group_sync)
		return PEMBA_OK;
	if (!g) {
		/* Before the gate is attached (layout migrations at open):
		 * a sync of its own. */
		write_gate alone = {.wal_fd = -1};
		int rc = wal_sync(&alone, s->path, err);
		if (alone.wal_fd >= 0)
			close(alone.wal_fd);
		return rc;
	}
	int rc = PEMBA_OK;
	pthread_mutex_lock(&g->sync_mu);
	uint64_t ticket = ++g->committed;
	while (g->synced < ticket) {
		if (g->syncing) {
			pthread_cond_wait(&g->sync_cv, &g->sync_mu);
			continue;
		}
		g->syncing = true;
		uint64_t target = g->committed;
		pthread_mutex_unlock(&g->sync_mu);
		rc = wal_sync(g, s->path, err);
		pthread_mutex_lock(&g->sync_mu);
		g->syncing = false;
		g->syncs++;
		if (rc == PEMBA_OK && target > g->synced)
			g->synced = target;
		pthread_cond_broadcast(&g->sync_cv);
		if (rc != PEMBA_OK)
			break;
	}
	pthread_mutex_unlock(&g->sync_mu);
	return rc;
}

int store_sqlite_sync_counts(store *base, uint64_t *commits, uint64_t *syncs)
{
	if (base->ops != &store_sqlite_ops)
		return -1;
	sqlite_store *s = (sqlite_store *)base;
	write_gate *g = s->gate;
	if (!s->group_sync || !g)
		return -1;
	pthread_mutex_lock(&g->sync_mu);
	*commits = g->committed;
	*syncs = g->syncs;
	pthread_mutex_unlock(&g->sync_mu);
	return 0;
}

/*
 * Checkpoints.  SQLite's automatic checkpoint runs inside the COMMIT that
 * grows the WAL past the limit, that is while this process's write gate
 * is still held: every other writer of the process waited for it (tens of
 * megabytes written back during a relationship copy).  Instead a WAL hook
 * notes the WAL's size, and the committer checkpoints (PASSIVE: it never
 * waits for readers or writers) after it left the gate and its commit is
 * durable.  Another process's commits still checkpoint in that process.
 */
static int wal_hook(void *ctx, sqlite3 *db, const char *name, int pages)
{
	(void)db;
	(void)name;
	sqlite_store *s = ctx;
	s->wal_pages = pages;
	return SQLITE_OK;
}

static void checkpoint_if_due(sqlite_store *s)
{
	if (s->wal_pages < WAL_AUTOCHECKPOINT_PAGES)
		return;
	s->wal_pages = 0;
	/* SQLITE_BUSY (another checkpoint running) is fine: it does it. */
	sqlite3_wal_checkpoint_v2(s->db, "main", SQLITE_CHECKPOINT_PASSIVE,
	                          NULL, NULL);
}

static int exec_simple(sqlite_store *s, enum stmt_id id, pemba_error *err)
{
	sqlite3_stmt *st = stmt_get(s, id, err);
	if (!st)
		return err ? err->code : PEMBA_EIO;
	if (id == ST_BEGIN && !gate_enter(s))
		return error_set(err, PEMBA_EIO,
		                 "datastore busy: %s: another writer held the "
		                 "datastore for more than %d ms",
		                 stmt_sql[id], BUSY_TIMEOUT_MS);
	int rc = stmt_run(s, st, stmt_sql[id], err);
	bool ended = (id == ST_BEGIN || id == ST_COMMIT || id == ST_ROLLBACK) &&
	             sqlite3_get_autocommit(s->db);
	/* Only a write transaction (BEGIN IMMEDIATE, through the gate) has
	 * anything to make durable: a read transaction ends with COMMIT too. */
	bool wrote = s->gate_held;
	if (ended)
		gate_leave(s);
	if (id == ST_COMMIT && rc == PEMBA_OK && ended && wrote) {
		rc = group_sync_wait(s, err);
		checkpoint_if_due(s);
	}
	return rc;
}

static void finalize_all(sqlite_store *s)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(s->stmts[i]);
		s->stmts[i] = NULL;
	}
	for (int i = 0; i < 2; i++)
		for (int n = 0; n <= BATCH_ROWS; n++) {
			sqlite3_finalize(s->batch_stmts[i][n]);
			s->batch_stmts[i][n] = NULL;
		}
	for (int i = 0; i <= SHAPE_COUNT; i++) {
		sqlite_iter *it = s->pools[i];
		while (it) {
			sqlite_iter *next = it->next;
			sqlite3_finalize(it->stmt);
			free(it);
			it = next;
		}
		s->pools[i] = NULL;
	}
}

/*
 * Reads the layout version the file has now and refuses (for good) when
 * it is not the handle's (see check_layout).  Called at the start of every
 * read transaction (store_read_begin) and write transaction, where it
 * costs a cached statement reading a header field already in memory, and
 * by read_head when SQLite saw the schema change.
 */
static int layout_check(sqlite_store *s, pemba_error *err)
{
	if (s->layout_changed)
		return layout_changed_error(s, err);
	sqlite3_stmt *st = stmt_get(s, ST_LAYOUT, err);
	if (!st)
		return err ? err->code : PEMBA_EIO;
	int rc = sqlite3_step(st);
	int version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW)
		return db_error(s, err, "reading the layout version");
	if (layout_seen(s, version))
		return layout_changed_error(s, err);
	return PEMBA_OK;
}

/* ========================================================= names (cache) */

static void names_init(name_cache *c)
{
	c->cap = 256;
	c->count = 0;
	c->slots = xcalloc(c->cap, sizeof(*c->slots));
	c->by_id_cap = 64;
	c->by_id = xcalloc(c->by_id_cap, sizeof(*c->by_id));
	c->strings = arena_create(0);
}

static void names_free(name_cache *c)
{
	free(c->slots);
	free(c->by_id);
	arena_destroy(c->strings);
}

/* Forgets every mapping (the strings stay allocated; see above). */
static void names_clear(name_cache *c)
{
	memset(c->slots, 0, c->cap * sizeof(*c->slots));
	memset(c->by_id, 0, c->by_id_cap * sizeof(*c->by_id));
	c->count = 0;
}

static const name_slot *names_find(const name_cache *c, const char *name,
                                   uint64_t h)
{
	size_t mask = c->cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		const name_slot *sl = &c->slots[i];
		if (!sl->name)
			return NULL;
		if (sl->hash == h && strcmp(sl->name, name) == 0)
			return sl;
	}
}

static void names_put_slot(name_slot *slots, size_t cap, const name_slot *n)
{
	size_t mask = cap - 1;
	size_t i = n->hash & mask;
	while (slots[i].name)
		i = (i + 1) & mask;
	slots[i] = *n;
}

/* Adds name <-> id; returns the cached copy of the name. */
static const char *names_add(name_cache *c, const char *name, int64_t id)
{
	assert(id > 0);
	if ((size_t)id < c->by_id_cap && c->by_id[id])
		return c->by_id[id];
	if ((c->count + 1) * 2 > c->cap) {
		size_t cap = c->cap * 2;
		name_slot *slots = xcalloc(cap, sizeof(*slots));
		for (size_t i = 0; i < c->cap; i++)
			if (c->slots[i].name)
				names_put_slot(slots, cap, &c->slots[i]);
		free(c->slots);
		c->slots = slots;
		c->cap = cap;
	}
	if ((size_t)id >= c->by_id_cap) {
		size_t cap = c->by_id_cap;
		while ((size_t)id >= cap)
			cap *= 2;
		c->by_id = xrealloc(c->by_id, cap * sizeof(*c->by_id));
		memset(c->by_id + c->by_id_cap, 0,
		       (cap - c->by_id_cap) * sizeof(*c->by_id));
		c->by_id_cap = cap;
	}
	char *copy = arena_strdup(c->strings, name);
	name_slot n = {.name = copy, .hash = hash_str(name, 0), .id = id};
	names_put_slot(c->slots, c->cap, &n);
	c->count++;
	c->by_id[id] = copy;
	return copy;
}

/*
 * The id of `name` (NULL and "" are id 0).  With `create`, a missing name
 * is added to the names table (inside the caller's write transaction).
 * Returns 0 with *id set, 1 if the name is unknown and !create, or a
 * negative code.
 */
static int name_id(sqlite_store *s, const char *name, bool create, int64_t *id,
                   pemba_error *err)
{
	if (!name || !*name) {
		*id = 0;
		return 0;
	}
	uint64_t h = hash_str(name, 0);
	const name_slot *sl = names_find(&s->names, name, h);
	if (sl) {
		*id = sl->id;
		return 0;
	}
	sqlite3_stmt *st = stmt_get(s, ST_NAME_BY_STRING, err);
	if (!st)
		return PEMBA_EIO;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
		names_add(&s->names, name, *id);
		return 0;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return db_error(s, err, "looking up a name");
	if (!create)
		return 1;
	st = stmt_get(s, ST_NAME_INSERT, err);
	if (!st)
		return PEMBA_EIO;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	if (stmt_run(s, st, "adding a name", err))
		return PEMBA_EIO;
	*id = sqlite3_last_insert_rowid(s->db);
	names_add(&s->names, name, *id);
	return 0;
}

/* The name with `id` ("" for 0), or NULL (error set) if there is none. */
static const char *name_of(sqlite_store *s, int64_t id, pemba_error *err)
{
	if (id == 0)
		return "";
	if (id > 0 && (size_t)id < s->names.by_id_cap && s->names.by_id[id])
		return s->names.by_id[id];
	sqlite3_stmt *st = stmt_get(s, ST_NAME_BY_ID, err);
	if (!st)
		return NULL;
	sqlite3_bind_int64(st, 1, id);
	const char *out = NULL;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && id > 0)
		out = names_add(&s->names,
		                (const char *)sqlite3_column_text(st, 0), id);
	else if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		error_set(err, PEMBA_EIO,
		          "datastore: corrupt: no name with id %" PRId64, id);
	else
		db_error(s, err, "looking up a name");
	sqlite3_reset(st);
	return out;
}

/* subject_relation "" and "..." both mean "the subject itself" (id 0). */
static const char *normalize_subject_relation(const char *r)
{
	return (r && strcmp(r, "...") == 0) ? "" : r;
}

/*
 * Interns the names of r's key.  Returns 0, 1 if a name is unknown and
 * !create (no row can match), or a negative code.
 */
static int key_intern(sqlite_store *s, const store_rel *r, bool create,
                      rel_key *k, pemba_error *err)
{
	int rc;
	if ((rc = name_id(s, r->resource_type, create, &k->ids[COL_RT], err)) ||
	    (rc = name_id(s, r->relation, create, &k->ids[COL_REL], err)) ||
	    (rc = name_id(s, r->subject_type, create, &k->ids[COL_ST], err)) ||
	    (rc = name_id(s, normalize_subject_relation(r->subject_relation),
	                  create, &k->ids[COL_SREL], err)))
		return rc;
	k->resource_id = r->resource_id ? r->resource_id : "";
	k->subject_id = r->subject_id ? r->subject_id : "";
	return 0;
}

/* Binds a key to ?1..?6 (the strings must outlive the statement's run). */
static void key_bind(sqlite3_stmt *st, const rel_key *k)
{
	sqlite3_bind_int64(st, 1, k->ids[COL_RT]);
	sqlite3_bind_text(st, 2, k->resource_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, k->ids[COL_REL]);
	sqlite3_bind_int64(st, 4, k->ids[COL_ST]);
	sqlite3_bind_text(st, 5, k->subject_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, k->ids[COL_SREL]);
}

/* ============================================================ revisions */

/* Newest committed revision and its timestamp (0, 0 when empty).  Inside
 * this handle's write transaction the transaction's own revision is not
 * committed yet and is not reported. */
static int read_head(sqlite_store *s, pemba_revision *head, int64_t *ts,
                     pemba_error *err)
{
	if (s->in_txn) {
		*head = s->txn.rev - 1;
		if (ts)
			*ts = 0;
		return PEMBA_OK;
	}
	sqlite3_stmt *st = stmt_get(s, ST_HEAD, err);
	if (!st)
		return err ? err->code : PEMBA_EIO;
	int rc = sqlite3_step(st);
	*head = 0;
	if (ts)
		*ts = 0;
	if (rc == SQLITE_ROW) {
		*head = (pemba_revision)sqlite3_column_int64(st, 0);
		if (ts)
			*ts = sqlite3_column_int64(st, 1);
	}
	/* SQLite re-prepares a statement when the schema changed under it
	 * (every layout migration changes it): then look at the layout. */
	int reprepares =
	    sqlite3_stmt_status(st, SQLITE_STMTSTATUS_REPREPARE, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(s, err, "reading the head revision");
	if (reprepares != s->head_reprepares) {
		s->head_reprepares = reprepares;
		if ((rc = layout_check(s, err))) {
			*head = 0;
			return rc;
		}
	}
	return PEMBA_OK;
}

static int read_floor(sqlite_store *s, pemba_revision *floor, pemba_error *err)
{
	sqlite3_stmt *st = stmt_get(s, ST_FLOOR, err);
	if (!st)
		return PEMBA_EIO;
	int rc = sqlite3_step(st);
	*floor =
	    rc == SQLITE_ROW ? (pemba_revision)sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(s, err, "reading the GC floor");
	if (*floor > s->cached_floor)
		s->cached_floor = *floor;
	return PEMBA_OK;
}

static int sqlite_head_revision(store *base, pemba_revision *out,
                                pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	*out = 0;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	return read_head(s, out, NULL, err);
}

static int sqlite_check_revision(store *base, pemba_revision rev,
                                 pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	pemba_revision head, floor;
	int rc = check_layout(s, err);
	if (rc || rev == PEMBA_REVISION_HEAD)
		return rc;
	if ((rc = read_head(s, &head, NULL, err)) ||
	    (rc = read_floor(s, &floor, err)))
		return rc;
	if (rev > head)
		return error_set(err, PEMBA_EREVISION,
		                 "revision %" PRIu64 " is in the future (head "
		                 "is %" PRIu64 ")",
		                 rev, head);
	if (rev < floor)
		return error_set(err, PEMBA_EREVISION,
		                 "revision %" PRIu64 " has been garbage-"
		                 "collected (oldest available is %" PRIu64 ")",
		                 rev, floor);
	return PEMBA_OK;
}

/* The nonce recorded with revision rev (0: none known); see store.h. */
static int sqlite_revision_nonce(store *base, pemba_revision rev,
                                 uint64_t *nonce_out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	*nonce_out = 0;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	size_t slot = (size_t)(rev % NONCE_CACHE);
	if (s->nonces[slot].rev == rev) {
		*nonce_out = s->nonces[slot].nonce;
		return PEMBA_OK;
	}
	sqlite3_stmt *st = stmt_get(s, ST_NONCE, err);
	if (!st)
		return err ? err->code : PEMBA_EIO;
	sqlite3_bind_int64(st, 1, (int64_t)rev);
	int step = sqlite3_step(st);
	uint64_t nonce =
	    step == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		return db_error(s, err, "reading a revision nonce");
	/* A committed revision's nonce never changes; this transaction's
	 * own revision is not committed yet. */
	if (nonce != 0 && !(s->in_txn && rev >= s->txn.rev)) {
		s->nonces[slot].rev = rev;
		s->nonces[slot].nonce = nonce;
	}
	*nonce_out = nonce;
	return PEMBA_OK;
}

/* ================================================================ queries */

/* Whether a shape is answered from the reverse (by subject) index: when
 * there is no resource type (but some filter), or a subject is named but
 * no resource id. */
static bool shape_reverse(unsigned shape)
{
	if (!(shape & (SHAPE_AFTER - 1)))
		return false; /* no filter at all: store_scan, key order */
	if (!(shape & SHAPE_RESOURCE_TYPE))
		return true;
	return (shape & SHAPE_SUBJECT_TYPE) && (shape & SHAPE_SUBJECT_ID) &&
	       !(shape & SHAPE_RESOURCE_ID);
}

static bool shape_has(unsigned shape, int col)
{
	return shape & (1u << col);
}

/* Number of leading index columns the shape fixes by equality. */
static int shape_fixed_prefix(unsigned shape, const int *order)
{
	int n = 0;
	while (n < NKEY && shape_has(shape, order[n]))
		n++;
	return n;
}

static char *build_query_sql(unsigned shape)
{
	bool reverse = shape_reverse(shape);
	const int *order = reverse ? reverse_order : forward_order;
	strbuf sb;
	strbuf_init(&sb);
	/* The index is named, not left to the planner: without statistics
	 * it happily scans every row of a resource type through the primary
	 * key when the reverse index would take it straight to a subject.
	 * (sqlite_autoindex_relationships_1 is SQLite's name for the primary
	 * key of a WITHOUT ROWID table.) */
	strbuf_printf(&sb,
	              "SELECT " ROW_COLUMNS
	              " FROM relationships INDEXED BY %s WHERE ",
	              reverse ? "relationships_by_subject"
	                      : "sqlite_autoindex_relationships_1");
	/* Fixed columns past the index prefix are plain filters; the unary
	 * plus keeps the planner from treating them as ORDER BY constants,
	 * which would make it sort what the index already orders. */
	int fixed = shape_fixed_prefix(shape, order);
	for (int i = 0; i < NKEY; i++)
		if (shape_has(shape, order[i]))
			strbuf_printf(
			    &sb, "%s%s = ?%d AND ", i < fixed ? "" : "+",
			    key_columns[order[i]], PARAM_FILTER(order[i]));
	if (shape & SHAPE_LIVE)
		strbuf_puts(&sb, "deleted_rev = 0");
	else
		strbuf_printf(&sb,
		              "created_rev <= ?%d AND (deleted_rev = 0 OR "
		              "deleted_rev > ?%d)",
		              PARAM_AT, PARAM_AT);
	/* Expired relationships are invisible to every read.  The row is
	 * read anyway (the primary key is the table; the reverse index
	 * fetches it for the caveat columns), so this costs no I/O. */
	strbuf_printf(&sb,
	              " AND (expiration_ms IS NULL OR expiration_ms > ?%d)",
	              PARAM_NOW);
	if (shape & SHAPE_AFTER) {
		/* Only the columns after the fixed prefix: the prefix is
		 * compared in C (see bind_after), and a row value that starts
		 * right after the equality prefix is a range on the index. */
		assert(fixed < NKEY);
		strbuf_puts(&sb, " AND (");
		for (int i = fixed; i < NKEY; i++)
			strbuf_printf(&sb, "%s%s", i > fixed ? ", " : "",
			              key_columns[order[i]]);
		strbuf_puts(&sb, ") > (");
		for (int i = fixed; i < NKEY; i++)
			strbuf_printf(&sb, "%s?%d", i > fixed ? ", " : "",
			              PARAM_AFTER(order[i]));
		strbuf_puts(&sb, ")");
	}
	/* ORDER BY leaves out the fixed prefix (constant) and names every
	 * later column, fixed or not, so that it is exactly a suffix of the
	 * index and the planner never adds a sort. */
	const char *sep = " ORDER BY ";
	for (int i = fixed; i < NKEY; i++) {
		strbuf_printf(&sb, "%s%s", sep, key_columns[order[i]]);
		sep = ", ";
	}
	strbuf_printf(&sb, " LIMIT ?%d", PARAM_LIMIT);
	char *sql = strbuf_detach(&sb, NULL);
	strbuf_free(&sb); /* detach leaves an empty buffer behind */
	return sql;
}

/* Takes a free iterator of `shape` from its pool, preparing a new one when
 * all are busy.  NULL on error. */
static sqlite_iter *iter_acquire(sqlite_store *s, unsigned shape,
                                 pemba_error *err)
{
	sqlite_iter *it;
	for (it = s->pools[shape]; it; it = it->next)
		if (!it->in_use)
			goto found;
	it = xcalloc(1, sizeof(*it));
	it->base.ops = &store_sqlite_ops;
	it->s = s;
	it->shape = shape;
	if (shape != SHAPE_EMPTY) {
		char *sql = build_query_sql(shape);
		int rc = sqlite3_prepare_v3(
		    s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &it->stmt, NULL);
		free(sql);
		if (rc != SQLITE_OK) {
			db_error(s, err, "preparing a query");
			free(it);
			return NULL;
		}
	}
	it->next = s->pools[shape];
	s->pools[shape] = it;
found:
	it->in_use = true;
	it->done = false;
	s->open_iters++;
	return it;
}

static void iter_release(sqlite_iter *it)
{
	if (!it->in_use)
		return;
	if (it->stmt)
		sqlite3_reset(it->stmt);
	it->in_use = false;
	it->s->open_iters--;
}

/* Filter names interned; `known` false when a name is unknown (empty). */
typedef struct filter_ids {
	unsigned shape;
	int64_t ids[NKEY];
	const char *strs[NKEY];
	bool known;
} filter_ids;

static int filter_intern(sqlite_store *s, const store_filter *f,
                         filter_ids *out, pemba_error *err)
{
	const char *v[NKEY] = {
	    f->resource_type, f->resource_id, f->relation,
	    f->subject_type,  f->subject_id,  f->subject_relation,
	};
	/* A NULL field matches anything; so does "" except for
	 * subject_relation, where "" means "no subject relation". */
	v[COL_SREL] = normalize_subject_relation(v[COL_SREL]);
	memset(out, 0, sizeof(*out));
	out->known = true;
	for (int c = 0; c < NKEY; c++) {
		if (!v[c] || (!*v[c] && c != COL_SREL))
			continue;
		out->shape |= 1u << c;
		out->strs[c] = v[c];
		if (c == COL_RID || c == COL_SID)
			continue;
		int rc = name_id(s, v[c], false, &out->ids[c], err);
		if (rc < 0)
			return rc;
		if (rc == 1)
			out->known = false;
	}
	return PEMBA_OK;
}

static void bind_column(sqlite3_stmt *st, int param, int col,
                        const int64_t *ids, const char *const *strs)
{
	if (col == COL_RID || col == COL_SID)
		sqlite3_bind_text(st, param, strs[col], -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int64(st, param, ids[col]);
}

static int compare_column(int col, const int64_t *a_ids,
                          const char *const *a_strs, const int64_t *b_ids,
                          const char *const *b_strs)
{
	if (col == COL_RID || col == COL_SID) {
		int c = strcmp(a_strs[col], b_strs[col]);
		return (c > 0) - (c < 0);
	}
	return (a_ids[col] > b_ids[col]) - (a_ids[col] < b_ids[col]);
}

/*
 * Starts a query (the core of store_query, store_txn_query and the
 * delete-by-filter loop).  `live` reads the live rows, else the rows
 * visible at `at`.  limit 0 = unlimited.
 */
static int query_start(sqlite_store *s, const store_filter *f, bool live,
                       pemba_revision at, const store_rel *after, size_t limit,
                       int64_t now_ms, sqlite_iter **out, pemba_error *err)
{
	filter_ids fi;
	int64_t after_ids[NKEY] = {0};
	const char *after_strs[NKEY] = {0};
	int rc = filter_intern(s, f, &fi, err);
	if (rc)
		return rc;
	unsigned shape = fi.shape | (live ? SHAPE_LIVE : 0);
	bool empty = !fi.known;

	if (after && !empty) {
		rel_key k;
		rc = key_intern(s, after, false, &k, err);
		if (rc < 0)
			return rc;
		if (rc == 1)
			return error_set(err, PEMBA_EINVAL,
			                 "pagination cursor names a type or "
			                 "relation that was never stored");
		memcpy(after_ids, k.ids, sizeof(after_ids));
		after_strs[COL_RID] = k.resource_id;
		after_strs[COL_SID] = k.subject_id;
		/* Rows matching the filter all share the fixed prefix;
		 * compare the cursor's prefix here so SQL only sees the
		 * rest, which makes the cursor an index range. */
		const int *order =
		    shape_reverse(shape) ? reverse_order : forward_order;
		int fixed = shape_fixed_prefix(shape, order), cmp = 0;
		for (int i = 0; i < fixed && !cmp; i++)
			cmp = compare_column(order[i], fi.ids, fi.strs,
			                     after_ids, after_strs);
		if (cmp > 0)
			; /* every matching row is after the cursor */
		else if (cmp < 0 || fixed == NKEY)
			empty = true;
		else
			shape |= SHAPE_AFTER;
	}

	sqlite_iter *it = iter_acquire(s, empty ? SHAPE_EMPTY : shape, err);
	if (!it)
		return PEMBA_EIO;
	if (!empty) {
		sqlite3_stmt *st = it->stmt;
		for (int c = 0; c < NKEY; c++)
			if (fi.shape & (1u << c))
				bind_column(st, PARAM_FILTER(c), c, fi.ids,
				            fi.strs);
		if (!live)
			sqlite3_bind_int64(st, PARAM_AT, (int64_t)at);
		if (shape & SHAPE_AFTER)
			for (int c = 0; c < NKEY; c++)
				bind_column(st, PARAM_AFTER(c), c, after_ids,
				            after_strs);
		sqlite3_bind_int64(st, PARAM_LIMIT,
		                   limit ? (int64_t)limit : -1);
		sqlite3_bind_int64(st, PARAM_NOW, now_ms);
	}
	*out = it;
	return PEMBA_OK;
}

/* The time expiring rows are compared with: fixed for a whole read
 * transaction (store_read_begin), so one request sees one instant;
 * otherwise the current time. */
static int64_t request_now(sqlite_store *s)
{
	return s->read_depth > 0 && !s->in_txn ? s->read_now_ms : now_ms_wall();
}

static int sqlite_query(store *base, pemba_revision at, const store_filter *f,
                        const store_rel *after, size_t limit, store_iter **out,
                        pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if (at == PEMBA_REVISION_HEAD) {
		if ((rc = read_head(s, &at, NULL, err)))
			return rc;
	} else if (at < s->cached_floor) {
		return error_set(err, PEMBA_EREVISION,
		                 "revision %" PRIu64 " has been garbage-"
		                 "collected (oldest available is %" PRIu64 ")",
		                 at, s->cached_floor);
	}
	sqlite_iter *it;
	rc = query_start(s, f, false, at, after, limit, request_now(s), &it,
	                 err);
	if (rc)
		return rc;
	*out = &it->base;
	return PEMBA_OK;
}

/* A query with an empty filter: query shape 0, the primary key from its
 * start (or from `after`, as a row-value range over the whole key). */
static int sqlite_scan(store *base, pemba_revision at, const store_rel *after,
                       size_t limit, store_iter **out, pemba_error *err)
{
	static const store_filter everything;
	return sqlite_query(base, at, &everything, after, limit, out, err);
}

/* Fills r from the current row of a statement selecting ROW_COLUMNS.
 * The strings stay valid until the statement is stepped or reset. */
static int row_decode(sqlite_store *s, sqlite3_stmt *st, store_rel *r,
                      pemba_error *err)
{
	if (!(r->resource_type =
	          name_of(s, sqlite3_column_int64(st, 0), err)) ||
	    !(r->relation = name_of(s, sqlite3_column_int64(st, 2), err)) ||
	    !(r->subject_type = name_of(s, sqlite3_column_int64(st, 3), err)) ||
	    !(r->subject_relation =
	          name_of(s, sqlite3_column_int64(st, 5), err)) ||
	    !(r->caveat_name = name_of(s, sqlite3_column_int64(st, 6), err)))
		return err ? err->code : PEMBA_EIO;
	r->resource_id = (const char *)sqlite3_column_text(st, 1);
	r->subject_id = (const char *)sqlite3_column_text(st, 4);
	const unsigned char *ctx = sqlite3_column_text(st, 7);
	r->caveat_context = ctx ? (const char *)ctx : "";
	r->expiration_ms = sqlite3_column_int64(st, 8);
	r->created_rev = (pemba_revision)sqlite3_column_int64(st, 9);
	return PEMBA_OK;
}

static int sqlite_iter_next(store_iter *base, const store_rel **row,
                            pemba_error *err)
{
	sqlite_iter *it = (sqlite_iter *)base;
	sqlite_store *s = it->s;
	*row = NULL;
	if (it->done || !it->stmt)
		return 0;
	int rc = sqlite3_step(it->stmt);
	if (rc == SQLITE_DONE) {
		it->done = true;
		return 0;
	}
	if (rc != SQLITE_ROW) {
		it->done = true;
		return db_error(s, err, "reading relationships");
	}
	if ((rc = row_decode(s, it->stmt, &it->row, err))) {
		it->done = true;
		return rc;
	}
	*row = &it->row;
	return 1;
}

static void sqlite_iter_close(store_iter *base)
{
	iter_release((sqlite_iter *)base);
}

static int sqlite_read_schema(store *base, pemba_revision at, char **text_out,
                              pemba_revision *written_rev_out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	*text_out = NULL;
	if (written_rev_out)
		*written_rev_out = 0;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if (at == PEMBA_REVISION_HEAD && (rc = read_head(s, &at, NULL, err)))
		return rc;
	sqlite3_stmt *st = stmt_get(s, ST_SCHEMA_AT, err);
	if (!st)
		return PEMBA_EIO;
	sqlite3_bind_int64(st, 1, (int64_t)at);
	int step = sqlite3_step(st);
	if (step == SQLITE_ROW &&
	    (sqlite3_column_type(st, 2) == SQLITE_NULL ||
	     (pemba_revision)sqlite3_column_int64(st, 2) > at)) {
		*text_out = xstrdup((const char *)sqlite3_column_text(st, 0));
		if (written_rev_out)
			*written_rev_out =
			    (pemba_revision)sqlite3_column_int64(st, 1);
		rc = PEMBA_OK;
	} else if (step == SQLITE_ROW || step == SQLITE_DONE) {
		rc = error_set(err, PEMBA_ENOTFOUND,
		               "no schema has been written (at revision "
		               "%" PRIu64 ")",
		               at);
	} else {
		rc = db_error(s, err, "reading the schema");
	}
	sqlite3_reset(st);
	return rc;
}

/* ==================================================== read transactions */

/*
 * A deferred BEGIN takes SQLite's WAL read lock at the first SELECT and
 * keeps it until COMMIT, instead of taking and dropping it around every
 * statement (two fcntl calls and an fstat each).
 */
static int sqlite_read_begin(store *base, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	if (s->in_txn)
		return PEMBA_OK;
	if (s->read_depth++ > 0)
		return PEMBA_OK;
	s->read_now_ms = now_ms_wall();
	int rc = exec_simple(s, ST_READ_BEGIN, err);
	/* (Its first read also starts the transaction's snapshot, which
	 * the next statement would have done.) */
	if (!rc && (rc = layout_check(s, err)))
		exec_simple(s, ST_COMMIT, NULL);
	if (rc)
		s->read_depth = 0;
	return rc;
}

static void sqlite_read_end(store *base)
{
	sqlite_store *s = (sqlite_store *)base;
	if (s->in_txn || s->read_depth == 0)
		return;
	if (--s->read_depth == 0)
		exec_simple(s, ST_COMMIT, NULL);
}

/* ====================================================== commit signal */

/*
 * Waiters for new revisions (store_wait_revision) sleep on the
 * process-wide commit signal of store.c, which every successful commit of
 * any handle in this process raises; its generation counts commits
 * so a waiter never misses one between reading the head and sleeping.
 * Commits by other processes are not signalled: waiters also wake every
 * STORE_WAIT_POLL_MS and re-read the head.
 */
static void commit_signal(void)
{
	store_commit_signal();
}

static uint64_t commit_generation_now(void)
{
	return store_commit_generation();
}

static int64_t now_ms_monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The busy handler of a handle's connection: retries every millisecond
 * for up to BUSY_TIMEOUT_MS.  SQLite's own (sqlite3_busy_timeout) sleeps
 * ever longer, up to 100 ms a try, so a writer that has waited a while
 * keeps missing the moment the lock is free when another writer takes it
 * again at once -- a long `relationship copy` committing batch after
 * batch starved an application's writes for seconds (bench_migrate
 * --dual-writes).  Polling the lock costs a waiting writer a little CPU,
 * nothing to anyone else.
 */
static int busy_wait(void *ctx, int count)
{
	sqlite_store *s = ctx;
	int64_t now = now_ms_monotonic();
	if (count == 0)
		s->busy_since_ms = now;
	if (now - s->busy_since_ms >= BUSY_TIMEOUT_MS)
		return 0;
	struct timespec ts = {0, 1000 * 1000};
	nanosleep(&ts, NULL);
	return 1;
}

/* Sleeps until a commit newer than generation `seen` or `ms` pass. */
static void commit_wait(uint64_t seen, int64_t ms)
{
	store_commit_wait(seen, (int)ms);
}

static int sqlite_wait_revision(store *base, pemba_revision after,
                                int timeout_ms, pemba_revision *head_out,
                                pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	*head_out = 0;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if (s->in_txn || s->read_depth)
		return error_set(err, PEMBA_EINVAL,
		                 "waiting for a revision inside a transaction "
		                 "(the head cannot move in it)");
	int64_t deadline = now_ms_monotonic() + timeout_ms;
	for (;;) {
		/* The generation is taken before the head is read: a commit
		 * after this read bumps it and ends the wait below. */
		uint64_t seen = commit_generation_now();
		if ((rc = read_head(s, head_out, NULL, err)))
			return rc;
		if (*head_out > after || timeout_ms == 0)
			return PEMBA_OK;
		int64_t slice = STORE_WAIT_POLL_MS;
		if (timeout_ms > 0) {
			int64_t left = deadline - now_ms_monotonic();
			if (left <= 0)
				return PEMBA_OK;
			if (left < slice)
				slice = left;
		}
		commit_wait(seen, slice);
	}
}

/* ========================================================== change feed */

/* Streams the rows of a prepared change statement as `kind` items. */
static int changes_rows(sqlite_store *s, enum stmt_id id, pemba_revision rev,
                        store_change_kind kind, store_change_fn fn, void *ctx,
                        pemba_error *err)
{
	sqlite3_stmt *st = stmt_get(s, id, err);
	if (!st)
		return PEMBA_EIO;
	sqlite3_bind_int64(st, 1, (int64_t)rev);
	store_rel rel;
	store_change c = {.kind = kind, .rev = rev, .rel = &rel};
	int step, rc = 0;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if ((rc = row_decode(s, st, &rel, err)) || (rc = fn(ctx, &c)))
			break;
	}
	if (!rc && step != SQLITE_DONE)
		rc = db_error(s, err, "reading changes");
	sqlite3_reset(st);
	return rc;
}

static int changes_in(sqlite_store *s, pemba_revision after,
                      pemba_revision upto, store_change_fn fn, void *ctx,
                      pemba_error *err)
{
	pemba_revision head, floor;
	int rc;
	if ((rc = read_head(s, &head, NULL, err)) ||
	    (rc = read_floor(s, &floor, err)))
		return rc;
	if (upto > head)
		return error_set(err, PEMBA_EREVISION,
		                 "revision %" PRIu64 " is in the future (head "
		                 "is %" PRIu64 ")",
		                 upto, head);
	/* Versions ended at or before the floor are gone, so only a range
	 * starting at or above it is complete. */
	if (after < floor)
		return error_set(err, PEMBA_EREVISION,
		                 "revision %" PRIu64 " has been garbage-"
		                 "collected: it is older than the GC window "
		                 "of %" PRId64 " s (oldest available is "
		                 "%" PRIu64 ")",
		                 after, s->gc_window_ms / 1000, floor);
	for (pemba_revision rev = after + 1; rev <= upto; rev++) {
		if ((rc = changes_rows(s, ST_CHANGES_CREATED, rev,
		                       STORE_CHANGE_TOUCH, fn, ctx, err)) ||
		    (rc = changes_rows(s, ST_CHANGES_DELETED, rev,
		                       STORE_CHANGE_DELETE, fn, ctx, err)))
			return rc;
		sqlite3_stmt *st = stmt_get(s, ST_CHANGES_REVISION, err);
		if (!st)
			return PEMBA_EIO;
		sqlite3_bind_int64(st, 1, (int64_t)rev);
		store_change c = {.kind = STORE_CHANGE_REVISION, .rev = rev};
		int step = sqlite3_step(st);
		if (step == SQLITE_ROW) {
			c.timestamp_ms = sqlite3_column_int64(st, 0);
			c.metadata = (const char *)sqlite3_column_text(st, 1);
			c.schema_changed = sqlite3_column_int(st, 2) != 0;
			rc = fn(ctx, &c);
		} else if (step == SQLITE_DONE) {
			rc = error_set(err, PEMBA_EIO,
			               "datastore: corrupt: no record of "
			               "revision %" PRIu64,
			               rev);
		} else {
			rc = db_error(s, err, "reading changes");
		}
		sqlite3_reset(st);
		if (rc)
			return rc;
	}
	return PEMBA_OK;
}

static int sqlite_changes(store *base, pemba_revision after,
                          pemba_revision upto, store_change_fn fn, void *ctx,
                          pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if (s->in_txn)
		return error_set(err, PEMBA_EINVAL,
		                 "reading changes inside a write transaction");
	/* One snapshot for the head check and every revision. */
	if ((rc = sqlite_read_begin(base, err)))
		return rc;
	rc = changes_in(s, after, upto, fn, ctx, err);
	sqlite_read_end(base);
	return rc;
}

/* ========================================================= transactions */

static int sqlite_txn_begin(store *base, store_txn **out,
                            pemba_revision *rev_out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc || (rc = check_writable(s, err)))
		return rc;
	if (s->in_txn)
		return error_set(err, PEMBA_EINVAL,
		                 "a write transaction is already open on this "
		                 "datastore handle");
	if (s->read_depth)
		return error_set(
		    err, PEMBA_EINVAL,
		    "cannot begin a write transaction inside a read "
		    "transaction");
	if ((rc = exec_simple(s, ST_BEGIN, err)))
		return rc;
	pemba_revision head;
	int64_t last_ts;
	if ((rc = layout_check(s, err)) ||
	    (rc = read_head(s, &head, &last_ts, err)))
		goto fail;
	/* Timestamps never go backwards, even if the clock does: the GC
	 * floor search relies on them growing with the revision. */
	int64_t ts = now_ms_wall();
	if (ts < last_ts)
		ts = last_ts;
	sqlite3_stmt *st = stmt_get(s, ST_REV_INSERT, err);
	if (!st) {
		rc = PEMBA_EIO;
		goto fail;
	}
	sqlite3_bind_int64(st, 1, (int64_t)head + 1);
	sqlite3_bind_int64(st, 2, ts);
	if ((rc = stmt_run(s, st, "recording the revision", err)))
		goto fail;
	s->txn.base.ops = &store_sqlite_ops;
	s->txn.s = s;
	s->txn.rev = head + 1;
	s->txn.deferred_indexes = NULL;
	s->in_txn = true;
	*out = &s->txn.base;
	if (rev_out)
		*rev_out = head + 1;
	return PEMBA_OK;
fail:
	exec_simple(s, ST_ROLLBACK, NULL);
	names_clear(&s->names);
	return rc;
}

static sqlite_store *txn_store(store_txn *base)
{
	sqlite_txn *t = (sqlite_txn *)base;
	assert(t->s->in_txn && &t->s->txn == t);
	return t->s;
}

static int sqlite_txn_query(store_txn *base, const store_filter *f,
                            size_t limit, store_iter **out, pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	sqlite_iter *it;
	int rc =
	    query_start(s, f, true, 0, NULL, limit, now_ms_wall(), &it, err);
	if (rc)
		return rc;
	*out = &it->base;
	return PEMBA_OK;
}

/* Binds a row's caveat and expiration to ?8..?10. */
static void caveat_bind(sqlite3_stmt *st, int64_t caveat_id, const store_rel *r)
{
	if (caveat_id)
		sqlite3_bind_int64(st, 8, caveat_id);
	else
		sqlite3_bind_null(st, 8);
	if (r->caveat_context && *r->caveat_context)
		sqlite3_bind_text(st, 9, r->caveat_context, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 9);
	if (r->expiration_ms)
		sqlite3_bind_int64(st, 10, r->expiration_ms);
	else
		sqlite3_bind_null(st, 10);
}

/* Inserts the live version of r; `ignore` makes a live duplicate a no-op
 * (*inserted 0) instead of PEMBA_EEXISTS. */
static int rel_insert(sqlite_store *s, const rel_key *k, int64_t caveat_id,
                      const store_rel *r, bool ignore, int *inserted,
                      pemba_error *err)
{
	sqlite3_stmt *st =
	    stmt_get(s, ignore ? ST_REL_INSERT_IGNORE : ST_REL_INSERT, err);
	if (!st)
		return PEMBA_EIO;
	key_bind(st, k);
	sqlite3_bind_int64(st, 7, (int64_t)s->txn.rev);
	caveat_bind(st, caveat_id, r);
	int rc = sqlite3_step(st);
	int ret = PEMBA_OK;
	if (rc == SQLITE_DONE) {
		*inserted = sqlite3_changes(s->db);
	} else if (sqlite3_extended_errcode(s->db) ==
	           SQLITE_CONSTRAINT_PRIMARYKEY) {
		ret = error_set(err, PEMBA_EEXISTS,
		                "relationship %s:%s#%s@%s:%s%s%s already "
		                "exists",
		                r->resource_type, r->resource_id, r->relation,
		                r->subject_type, r->subject_id,
		                k->ids[COL_SREL] ? "#" : "",
		                k->ids[COL_SREL] ? r->subject_relation : "");
	} else {
		ret = db_error(s, err, "writing a relationship");
	}
	sqlite3_reset(st);
	return ret;
}

/*
 * Ends the live version of key k in this transaction: a version created
 * by an earlier revision gets deleted_rev = this one; a version created by
 * this very transaction was never visible to anyone and is removed.
 */
static int rel_close(sqlite_store *s, const rel_key *k, int *closed,
                     pemba_error *err)
{
	static const enum stmt_id steps[2] = {ST_REL_CLOSE, ST_REL_DROP_NEW};
	*closed = 0;
	for (int i = 0; i < 2 && !*closed; i++) {
		sqlite3_stmt *st = stmt_get(s, steps[i], err);
		if (!st)
			return PEMBA_EIO;
		key_bind(st, k);
		sqlite3_bind_int64(st, 7, (int64_t)s->txn.rev);
		if (stmt_run(s, st, "deleting a relationship", err))
			return PEMBA_EIO;
		*closed = sqlite3_changes(s->db);
	}
	return PEMBA_OK;
}

static int sqlite_txn_create(store_txn *base, const store_rel *r,
                             pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	rel_key k;
	int64_t caveat_id;
	int inserted, rc;
	if ((rc = key_intern(s, r, true, &k, err)) ||
	    (rc = name_id(s, r->caveat_name, true, &caveat_id, err)))
		return rc;
	return rel_insert(s, &k, caveat_id, r, false, &inserted, err);
}

static bool same_text(const unsigned char *stored, const char *given)
{
	if (!given)
		given = "";
	return strcmp(stored ? (const char *)stored : "", given) == 0;
}

static int touch_live(sqlite_store *s, const rel_key *k, int64_t caveat_id,
                      const store_rel *r, pemba_error *err);

static int sqlite_txn_touch(store_txn *base, const store_rel *r,
                            pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	rel_key k;
	int64_t caveat_id;
	int inserted, rc;
	if ((rc = key_intern(s, r, true, &k, err)) ||
	    (rc = name_id(s, r->caveat_name, true, &caveat_id, err)))
		return rc;
	/* The common case (bulk loads) is a new relationship: one
	 * statement.  Only on a conflict look at the live version. */
	if ((rc = rel_insert(s, &k, caveat_id, r, true, &inserted, err)) ||
	    inserted)
		return rc;
	return touch_live(s, &k, caveat_id, r, err);
}

/*
 * The rest of a TOUCH of r (key k) once a live version of the key exists:
 * nothing if it is identical, else update it in place (created by this
 * transaction) or close it and insert r's version.
 */
static int touch_live(sqlite_store *s, const rel_key *k, int64_t caveat_id,
                      const store_rel *r, pemba_error *err)
{
	int inserted, rc;
	sqlite3_stmt *st = stmt_get(s, ST_REL_LIVE, err);
	if (!st)
		return PEMBA_EIO;
	key_bind(st, k);
	int step = sqlite3_step(st);
	if (step != SQLITE_ROW) {
		sqlite3_reset(st);
		return step == SQLITE_DONE
		           ? error_set(err, PEMBA_EIO,
		                       "datastore: live relationship "
		                       "vanished during TOUCH")
		           : db_error(s, err, "reading a relationship");
	}
	pemba_revision created = (pemba_revision)sqlite3_column_int64(st, 0);
	bool same = sqlite3_column_int64(st, 1) == caveat_id &&
	            same_text(sqlite3_column_text(st, 2), r->caveat_context) &&
	            sqlite3_column_int64(st, 3) == r->expiration_ms;
	sqlite3_reset(st);
	if (same)
		return PEMBA_OK; /* identical: no new version */
	if (created == s->txn.rev) {
		/* Written earlier in this transaction: nobody saw it yet. */
		st = stmt_get(s, ST_REL_SET_CAVEAT, err);
		if (!st)
			return PEMBA_EIO;
		key_bind(st, k);
		caveat_bind(st, caveat_id, r);
		return stmt_run(s, st, "updating a relationship", err);
	}
	int closed;
	if ((rc = rel_close(s, k, &closed, err)))
		return rc;
	return rel_insert(s, k, caveat_id, r, false, &inserted, err);
}

/* ========================================================= batch writes */

/*
 * Bulk loads spend much of their time in SQLite's per-statement work
 * (bind, step, reset, opening the table and index cursors), not in the
 * B-trees: one INSERT of up to BATCH_ROWS rows pays it once per chunk.
 * Row i binds ?(10i+1)..?(10i+10) in the order of ST_REL_INSERT.
 */
static sqlite3_stmt *batch_stmt(sqlite_store *s, bool ignore, size_t n,
                                pemba_error *err)
{
	sqlite3_stmt **slot = &s->batch_stmts[ignore][n];
	if (*slot)
		return *slot;
	char sql[128 + BATCH_ROWS * 80];
	size_t len = (size_t)snprintf(
	    sql, sizeof(sql),
	    "INSERT INTO relationships(resource_type, resource_id, relation, "
	    "subject_type, subject_id, subject_relation, deleted_rev, "
	    "created_rev, caveat_name, caveat_context, expiration_ms) "
	    "VALUES ");
	for (size_t i = 0; i < n; i++) {
		size_t p = i * 10;
		len += (size_t)snprintf(
		    sql + len, sizeof(sql) - len,
		    "%s(?%zu,?%zu,?%zu,?%zu,?%zu,?%zu,0,?%zu,?%zu,?%zu,?%zu)",
		    i ? "," : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6,
		    p + 7, p + 8, p + 9, p + 10);
	}
	if (ignore)
		snprintf(sql + len, sizeof(sql) - len,
		         " ON CONFLICT DO NOTHING");
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot,
	                       NULL) != SQLITE_OK) {
		db_error(s, err, "preparing a statement");
		*slot = NULL;
	}
	return *slot;
}

/* Binds row i of a batch statement (see batch_stmt). */
static void batch_bind(sqlite3_stmt *st, int i, const rel_key *k,
                       pemba_revision rev, int64_t caveat_id,
                       const store_rel *r)
{
	int p = i * 10;
	sqlite3_bind_int64(st, p + 1, k->ids[COL_RT]);
	sqlite3_bind_text(st, p + 2, k->resource_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, p + 3, k->ids[COL_REL]);
	sqlite3_bind_int64(st, p + 4, k->ids[COL_ST]);
	sqlite3_bind_text(st, p + 5, k->subject_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, p + 6, k->ids[COL_SREL]);
	sqlite3_bind_int64(st, p + 7, (int64_t)rev);
	if (caveat_id)
		sqlite3_bind_int64(st, p + 8, caveat_id);
	else
		sqlite3_bind_null(st, p + 8);
	if (r->caveat_context && *r->caveat_context)
		sqlite3_bind_text(st, p + 9, r->caveat_context, -1,
		                  SQLITE_STATIC);
	else
		sqlite3_bind_null(st, p + 9);
	if (r->expiration_ms)
		sqlite3_bind_int64(st, p + 10, r->expiration_ms);
	else
		sqlite3_bind_null(st, p + 10);
}

/*
 * CREATE (touch false) or TOUCH of rels[0..n), BATCH_ROWS per statement.
 * A chunk that cannot be written as one statement is redone one row at
 * a time, which yields exactly the single-row behaviour: a failed INSERT
 * statement leaves nothing behind (SQLite undoes the statement), so a
 * CREATE conflict is found again, row by row, and named.  For TOUCH the
 * chunk is inserted with ON CONFLICT DO NOTHING (a duplicate key keeps
 * its first row, as one row at a time would); if fewer rows went in than
 * were given, every row of the chunk is compared with the live version
 * (the rows just inserted are identical, so nothing happens to them; the
 * others are replaced or updated as by store_txn_touch, in order).
 */
static int write_batch(sqlite_store *s, bool touch, const store_rel *rels,
                       size_t n, size_t *done_out, pemba_error *err)
{
	rel_key keys[BATCH_ROWS];
	int64_t caveats[BATCH_ROWS];
	size_t done = 0;
	int rc = PEMBA_OK;
	while (done < n && !rc) {
		const store_rel *r = rels + done;
		size_t m = n - done < BATCH_ROWS ? n - done : BATCH_ROWS;
		sqlite3_stmt *st = NULL;
		bool whole = true;
		for (size_t i = 0; i < m && whole; i++)
			whole =
			    key_intern(s, &r[i], true, &keys[i], NULL) == 0 &&
			    name_id(s, r[i].caveat_name, true, &caveats[i],
			            NULL) == 0;
		if (whole && (st = batch_stmt(s, touch, m, NULL))) {
			for (size_t i = 0; i < m; i++)
				batch_bind(st, (int)i, &keys[i], s->txn.rev,
				           caveats[i], &r[i]);
			whole = sqlite3_step(st) == SQLITE_DONE;
			size_t inserted =
			    whole ? (size_t)sqlite3_changes(s->db) : 0;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			if (whole && inserted < m) {
				for (size_t i = 0; i < m && !rc; i++)
					if ((rc = touch_live(s, &keys[i],
					                     caveats[i], &r[i],
					                     err)))
						done += i;
				if (rc)
					break;
			}
		} else {
			whole = false;
		}
		if (!whole) {
			/* One row at a time, reporting as the single-row
			 * calls do (errors of the attempt above included). */
			for (size_t i = 0; i < m && !rc; i++)
				if ((rc = touch
				              ? sqlite_txn_touch(&s->txn.base,
				                                 &r[i], err)
				              : sqlite_txn_create(&s->txn.base,
				                                  &r[i], err)))
					done += i;
			if (rc)
				break;
		}
		done += m;
	}
	if (done_out)
		*done_out = done;
	return rc;
}

static int sqlite_txn_create_batch(store_txn *base, const store_rel *rels,
                                   size_t n, size_t *done_out, pemba_error *err)
{
	return write_batch(txn_store(base), false, rels, n, done_out, err);
}

static int sqlite_txn_touch_batch(store_txn *base, const store_rel *rels,
                                  size_t n, size_t *done_out, pemba_error *err)
{
	return write_batch(txn_store(base), true, rels, n, done_out, err);
}

static int sqlite_txn_delete(store_txn *base, const store_rel *key,
                             int *deleted_out, pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	rel_key k;
	int closed = 0;
	int rc = key_intern(s, key, false, &k, err);
	if (rc == 0)
		rc = rel_close(s, &k, &closed, err);
	else if (rc == 1)
		rc = PEMBA_OK; /* a name never stored: nothing to delete */
	if (deleted_out)
		*deleted_out = closed;
	return rc;
}

static int sqlite_txn_delete_filter(store_txn *base, const store_filter *f,
                                    size_t limit, size_t *deleted_out,
                                    int *more_out, pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	size_t deleted = 0;
	int more = 0, rc = PEMBA_OK;

	/*
	 * Rounds of: collect up to DELETE_CHUNK live matching keys, close
	 * the iterator, end those versions.  Ended versions are no longer
	 * live, so each round's query starts over without a cursor, and no
	 * statement is stepped while the table under it changes.
	 */
	for (;;) {
		size_t want = DELETE_CHUNK;
		if (limit && limit - deleted < want)
			want = limit - deleted;
		if (want == 0)
			break;
		sqlite_iter *it;
		if ((rc = query_start(s, f, true, 0, NULL, want,
		                      NOW_SHOW_EXPIRED, &it, err)))
			break;
		arena_reset(s->scratch);
		rel_key *keys = arena_alloc(s->scratch, want * sizeof(*keys));
		size_t n = 0;
		int step = SQLITE_DONE;
		while (it->stmt &&
		       (step = sqlite3_step(it->stmt)) == SQLITE_ROW) {
			rel_key *k = &keys[n++];
			k->ids[COL_RT] = sqlite3_column_int64(it->stmt, 0);
			k->resource_id = arena_strdup(
			    s->scratch,
			    (const char *)sqlite3_column_text(it->stmt, 1));
			k->ids[COL_REL] = sqlite3_column_int64(it->stmt, 2);
			k->ids[COL_ST] = sqlite3_column_int64(it->stmt, 3);
			k->subject_id = arena_strdup(
			    s->scratch,
			    (const char *)sqlite3_column_text(it->stmt, 4));
			k->ids[COL_SREL] = sqlite3_column_int64(it->stmt, 5);
		}
		if (it->stmt && step != SQLITE_DONE)
			rc = db_error(s, err, "reading relationships");
		iter_release(it);
		for (size_t i = 0; i < n && !rc; i++) {
			int closed;
			rc = rel_close(s, &keys[i], &closed, err);
			deleted += (size_t)closed;
		}
		if (rc || n < want)
			break;
	}
	if (!rc && limit && deleted == limit) {
		sqlite_iter *it;
		if (!(rc = query_start(s, f, true, 0, NULL, 1, NOW_SHOW_EXPIRED,
		                       &it, err))) {
			int step =
			    it->stmt ? sqlite3_step(it->stmt) : SQLITE_DONE;
			if (step == SQLITE_ROW)
				more = 1;
			else if (step != SQLITE_DONE)
				rc = db_error(s, err, "reading relationships");
			iter_release(it);
		}
	}
	arena_reset(s->scratch);
	if (deleted_out)
		*deleted_out = deleted;
	if (more_out)
		*more_out = more;
	return rc;
}

static int sqlite_txn_write_schema(store_txn *base, const char *text,
                                   size_t len, pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	sqlite3_stmt *st = stmt_get(s, ST_SCHEMA_CLOSE, err);
	if (!st)
		return PEMBA_EIO;
	sqlite3_bind_int64(st, 1, (int64_t)s->txn.rev);
	if (stmt_run(s, st, "writing the schema", err))
		return PEMBA_EIO;
	if (!(st = stmt_get(s, ST_SCHEMA_PUT, err)))
		return PEMBA_EIO;
	sqlite3_bind_int64(st, 1, (int64_t)s->txn.rev);
	sqlite3_bind_text(st, 2, text, (int)len, SQLITE_STATIC);
	return stmt_run(s, st, "writing the schema", err);
}

static int sqlite_txn_set_metadata(store_txn *base, const char *json,
                                   pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	sqlite3_stmt *st = stmt_get(s, ST_SET_METADATA, err);
	if (!st)
		return PEMBA_EIO;
	sqlite3_bind_int64(st, 1, (int64_t)s->txn.rev);
	if (json && *json)
		sqlite3_bind_text(st, 2, json, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	return stmt_run(s, st, "recording transaction metadata", err);
}

/* ---------------------------------------- positions of a mirrored source */

static int insert_position(sqlite_store *s, const store_position *p,
                           pemba_revision target, pemba_error *err)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db,
	                       "INSERT INTO source_positions(source, revision, "
	                       "order_key, target_rev, exact) VALUES "
	                       "(?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
	                       -1, &st, NULL) != SQLITE_OK)
		return db_error(s, err, "recording a source position");
	sqlite3_bind_text(st, 1, p->source, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, p->revision, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, p->order_key);
	sqlite3_bind_int64(st, 4, (int64_t)target);
	sqlite3_bind_int(st, 5, p->exact ? 1 : 0);
	int rc = sqlite3_step(st) == SQLITE_DONE
	             ? PEMBA_OK
	             : db_error(s, err, "recording a source position");
	sqlite3_finalize(st);
	return rc;
}

static int sqlite_txn_record_position(store_txn *base, const store_position *p,
                                      pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	return insert_position(s, p, s->txn.rev, err);
}

static int sqlite_record_position(store *base, const store_position *p,
                                  pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc || (rc = check_writable(s, err)))
		return rc;
	if (s->in_txn)
		return error_set(err, PEMBA_EINVAL,
		                 "recording a source position inside a write "
		                 "transaction");
	if ((rc = exec_simple(s, ST_BEGIN, err)))
		return rc;
	pemba_revision target = p->target_rev;
	if (target == 0 && (rc = read_head(s, &target, NULL, err)))
		goto fail;
	if ((rc = insert_position(s, p, target, err)) ||
	    (rc = exec_simple(s, ST_COMMIT, err)))
		goto fail;
	return PEMBA_OK;
fail:
	exec_simple(s, ST_ROLLBACK, NULL);
	return rc;
}

/* Runs one lookup query binding source, then `key` (when bind_key) or
 * `text`; *found and the first two columns of its row. */
static int position_query(sqlite_store *s, const char *sql, const char *source,
                          const char *text, int64_t key, bool *found,
                          int64_t *c0, int64_t *c1, pemba_error *err)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_error(s, err, "looking up a source position");
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(st) < 2)
		;
	else if (text)
		sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 2, key);
	int step = sqlite3_step(st);
	*found = false;
	if (step == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*found = true;
		*c0 = sqlite3_column_int64(st, 0);
		if (c1)
			*c1 = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		return db_error(s, err, "looking up a source position");
	return PEMBA_OK;
}

static int sqlite_lookup_position(store *base, const char *source,
                                  const char *revision, int64_t lower,
                                  int64_t upper, store_position_lookup *out,
                                  pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	int64_t a = 0, b = 0;
	bool found;
	rc = position_query(s,
	                    "SELECT min(order_key), max(order_key) FROM "
	                    "source_positions WHERE source = ?1",
	                    source, NULL, 0, &found, &a, &b, err);
	if (rc || !found)
		return rc;
	out->known = true;
	out->min_key = a;
	out->max_key = b;
	rc = position_query(s,
	                    "SELECT min(target_rev), 0 FROM source_positions "
	                    "WHERE source = ?1 AND order_key = ?2",
	                    source, NULL, out->max_key, &found, &a, NULL, err);
	if (rc)
		return rc;
	out->max_target = (pemba_revision)a;
	if (revision) {
		rc = position_query(s,
		                    "SELECT target_rev, exact FROM "
		                    "source_positions WHERE source = ?1 AND "
		                    "revision = ?2",
		                    source, revision, 0, &out->exact_found, &a,
		                    &b, err);
		if (rc)
			return rc;
		out->exact_target = (pemba_revision)a;
		out->exact_is_exact = b != 0;
	}
	rc = position_query(s,
	                    "SELECT target_rev, 0 FROM source_positions WHERE "
	                    "source = ?1 AND order_key >= ?2 ORDER BY "
	                    "order_key, target_rev LIMIT 1",
	                    source, NULL, upper, &out->covering_found, &a, NULL,
	                    err);
	if (rc)
		return rc;
	out->covering_target = (pemba_revision)a;
	rc = position_query(s,
	                    "SELECT target_rev, 0 FROM source_positions WHERE "
	                    "source = ?1 AND order_key <= ?2 ORDER BY "
	                    "order_key DESC, target_rev DESC LIMIT 1",
	                    source, NULL, lower, &out->before_found, &a, NULL,
	                    err);
	out->before_target = (pemba_revision)a;
	return rc;
}

/*
 * Deferred indexes: a bulk load into a datastore without any relationship
 * row drops the secondary indexes of `relationships` inside its
 * transaction and creates them again, with the same SQL, just before it
 * commits: SQLite then builds each from sorted keys instead of inserting
 * into it row by row at random places (the by-subject index) and writing
 * most of its pages to the WAL at every commit.  DDL is transactional, so
 * a rollback brings the indexes back; other handles see either the old
 * state with its indexes or the new one with them (their statements are
 * prepared again, once; the layout version does not change).
 */
static int sqlite_txn_defer_indexes(store_txn *base, pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	if (s->txn.deferred_indexes)
		return PEMBA_OK;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM relationships LIMIT 1", -1,
	                       &st, NULL) != SQLITE_OK)
		return db_error(s, err, "checking for an empty datastore");
	int step = sqlite3_step(st);
	sqlite3_finalize(st);
	if (step == SQLITE_ROW)
		return PEMBA_OK; /* not empty: maintain the indexes */
	if (step != SQLITE_DONE)
		return db_error(s, err, "checking for an empty datastore");
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT name, sql FROM sqlite_master WHERE "
	                       "type = 'index' AND tbl_name = 'relationships' "
	                       "AND sql IS NOT NULL ORDER BY name",
	                       -1, &st, NULL) != SQLITE_OK)
		return db_error(s, err, "listing the indexes");
	strbuf create, drop;
	strbuf_init(&create);
	strbuf_init(&drop);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		const char *sql = (const char *)sqlite3_column_text(st, 1);
		strbuf_printf(&create, "%s;\n", sql);
		strbuf_printf(&drop, "DROP INDEX \"%s\";\n", name);
	}
	sqlite3_finalize(st);
	int rc = PEMBA_OK;
	if (step != SQLITE_DONE)
		rc = db_error(s, err, "listing the indexes");
	else if (create.len &&
	         sqlite3_exec(s->db, drop.data, NULL, NULL, NULL) != SQLITE_OK)
		rc = db_error(s, err, "deferring the indexes");
	if (rc == PEMBA_OK && create.len)
		s->txn.deferred_indexes = strbuf_detach(&create, NULL);
	strbuf_free(&create);
	strbuf_free(&drop);
	return rc;
}

static int sqlite_txn_commit(store_txn *base, pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	char *deferred = s->txn.deferred_indexes;
	s->txn.deferred_indexes = NULL;
	if (deferred) {
		int ok = sqlite3_exec(s->db, deferred, NULL, NULL, NULL);
		free(deferred);
		if (ok != SQLITE_OK) {
			int rc = db_error(s, err, "building the indexes");
			exec_simple(s, ST_ROLLBACK, NULL);
			names_clear(&s->names);
			s->in_txn = false;
			return rc;
		}
	}
	int rc = exec_simple(s, ST_COMMIT, err);
	if (rc) {
		exec_simple(s, ST_ROLLBACK, NULL);
		names_clear(&s->names);
	}
	s->in_txn = false;
	if (!rc)
		commit_signal();
	return rc;
}

static void sqlite_txn_abort(store_txn *base)
{
	sqlite_store *s = txn_store(base);
	free(s->txn.deferred_indexes);
	s->txn.deferred_indexes = NULL;
	exec_simple(s, ST_ROLLBACK, NULL);
	/* Names interned by this transaction are gone with it. */
	names_clear(&s->names);
	s->in_txn = false;
}

/* ============================================ probes for schema changes */

/*
 * store_txn_probe and store_count_groups build a one-off statement per
 * call: they serve schema writes and migration plans, which are rare, so
 * pooling them would only cost memory.  Names that were never interned
 * cannot be in any row: the probe answers "none" without a statement.
 */

typedef struct probe_sql {
	strbuf sql;
	int64_t ids[6]; /* bound in order: ?1.. */
	int nids;
	bool empty; /* a name is unknown: nothing can match */
} probe_sql;

/* Appends "AND column = ?N" for an interned name (NULL: no condition). */
static int probe_name(sqlite_store *s, probe_sql *q, const char *column,
                      const char *name, pemba_error *err)
{
	if (!name)
		return 0;
	int64_t id;
	int rc = name_id(s, name, false, &id, err);
	if (rc < 0)
		return rc;
	if (rc == 1) {
		q->empty = true;
		return 0;
	}
	q->ids[q->nids++] = id;
	if (strcmp(column, "caveat_name") == 0)
		strbuf_printf(&q->sql, " AND IFNULL(caveat_name, 0) = ?%d",
		              q->nids);
	else
		strbuf_printf(&q->sql, " AND %s = ?%d", column, q->nids);
	return 0;
}

/* The WHERE conditions of a probe (after a leading visibility test). */
static int probe_where(sqlite_store *s, probe_sql *q, const store_probe *p,
                       pemba_error *err)
{
	int rc;
	if ((rc = probe_name(s, q, "resource_type", p->resource_type, err)) ||
	    (rc = probe_name(s, q, "relation", p->relation, err)) ||
	    (rc = probe_name(s, q, "subject_type", p->subject_type, err)))
		return rc;
	if (p->wildcard)
		strbuf_puts(&q->sql, " AND subject_id = '*'");
	if (p->subject_relation) {
		const char *r = normalize_subject_relation(p->subject_relation);
		if ((rc =
		         probe_name(s, q, "subject_relation", r ? r : "", err)))
			return rc;
	}
	if (p->caveat_name &&
	    (rc = probe_name(s, q, "caveat_name", p->caveat_name, err)))
		return rc;
	if (p->expiration == STORE_EXPIRATION_WITHOUT)
		strbuf_puts(&q->sql, " AND expiration_ms IS NULL");
	else if (p->expiration == STORE_EXPIRATION_WITH)
		strbuf_puts(&q->sql, " AND expiration_ms IS NOT NULL");
	return 0;
}

/* The index a probe reads: see store_txn_probe. */
static const char *probe_index(const store_probe *p)
{
	if (p->subject_type && (p->wildcard || !p->resource_type))
		return "relationships_by_subject";
	return "sqlite_autoindex_relationships_1";
}

static int probe_prepare(sqlite_store *s, probe_sql *q, sqlite3_stmt **st,
                         pemba_error *err)
{
	if (sqlite3_prepare_v2(s->db, q->sql.data, -1, st, NULL) != SQLITE_OK)
		return db_error(s, err, "preparing a relationship probe");
	for (int i = 0; i < q->nids; i++)
		sqlite3_bind_int64(*st, i + 1, q->ids[i]);
	return 0;
}

static int sqlite_txn_probe(store_txn *base, const store_probe *p,
                            store_probe_fn fn, void *ctx, pemba_error *err)
{
	sqlite_store *s = txn_store(base);
	probe_sql q = {0};
	strbuf_init(&q.sql);
	strbuf_printf(&q.sql,
	              "SELECT " ROW_COLUMNS
	              " FROM relationships INDEXED BY %s WHERE deleted_rev = 0",
	              probe_index(p));
	int rc = probe_where(s, &q, p, err);
	if (rc || q.empty) {
		strbuf_free(&q.sql);
		return rc < 0 ? rc : 0;
	}
	strbuf_printf(&q.sql,
	              " AND (expiration_ms IS NULL OR expiration_ms > %lld)"
	              " LIMIT 1",
	              (long long)now_ms_wall());
	sqlite3_stmt *st = NULL;
	rc = probe_prepare(s, &q, &st, err);
	strbuf_free(&q.sql);
	if (rc)
		return rc;
	int found = 0;
	int step = sqlite3_step(st);
	if (step == SQLITE_ROW) {
		store_rel row;
		memset(&row, 0, sizeof(row));
		rc = row_decode(s, st, &row, err);
		if (rc == 0) {
			found = 1;
			if (fn)
				fn(ctx, &row);
		}
	} else if (step != SQLITE_DONE) {
		rc = db_error(s, err, "probing relationships");
	}
	sqlite3_finalize(st);
	return rc ? rc : found;
}

static int sqlite_count_groups(store *base, pemba_revision at,
                               const store_probe *p, store_group_fn fn,
                               void *ctx, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if ((rc = sqlite_read_begin(base, err)))
		return rc;
	if (at == PEMBA_REVISION_HEAD && (rc = read_head(s, &at, NULL, err)))
		goto out;
	probe_sql q = {0};
	strbuf_init(&q.sql);
	strbuf_printf(&q.sql,
	              "SELECT relation, subject_type, subject_relation, "
	              "subject_id = '*', IFNULL(caveat_name, 0), count(*), "
	              "resource_type "
	              "FROM relationships INDEXED BY %s "
	              "WHERE created_rev <= %llu AND (deleted_rev = 0 OR "
	              "deleted_rev > %llu)",
	              probe_index(p), (unsigned long long)at,
	              (unsigned long long)at);
	rc = probe_where(s, &q, p, err);
	if (rc || q.empty) {
		strbuf_free(&q.sql);
		goto out;
	}
	strbuf_printf(&q.sql,
	              " AND (expiration_ms IS NULL OR expiration_ms > %lld)"
	              " GROUP BY 7, 1, 2, 3, 4, 5 ORDER BY 7, 1, 2, 3, 4, 5",
	              (long long)request_now(s));
	sqlite3_stmt *st = NULL;
	rc = probe_prepare(s, &q, &st, err);
	strbuf_free(&q.sql);
	if (rc)
		goto out;
	int step;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		store_group_count g;
		if (!(g.resource_type =
		          name_of(s, sqlite3_column_int64(st, 6), err)) ||
		    !(g.relation =
		          name_of(s, sqlite3_column_int64(st, 0), err)) ||
		    !(g.subject_type =
		          name_of(s, sqlite3_column_int64(st, 1), err)) ||
		    !(g.subject_relation =
		          name_of(s, sqlite3_column_int64(st, 2), err)) ||
		    !(g.caveat_name =
		          name_of(s, sqlite3_column_int64(st, 4), err))) {
			rc = err ? err->code : PEMBA_EIO;
			break;
		}
		g.wildcard = sqlite3_column_int(st, 3) != 0;
		g.count = (uint64_t)sqlite3_column_int64(st, 5);
		if ((rc = fn(ctx, &g)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE && step != SQLITE_ROW)
		rc = db_error(s, err, "counting relationships");
	sqlite3_finalize(st);
out:
	sqlite_read_end(base);
	return rc;
}

/* ================================================================== GC */

/* Runs a one-off statement binding ?1 to `value`; adds its changes. */
static int exec_bound(sqlite_store *s, const char *sql, int64_t value,
                      uint64_t *changes, pemba_error *err)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_error(s, err, "garbage collection");
	sqlite3_bind_int64(st, 1, value);
	int rc = sqlite3_step(st);
	int ret = PEMBA_OK;
	if (rc != SQLITE_DONE)
		ret = db_error(s, err, "garbage collection");
	else if (changes)
		*changes += (uint64_t)sqlite3_changes(s->db);
	sqlite3_finalize(st);
	return ret;
}

static int sqlite_gc(store *base, int64_t now_ms, store_gc_stats *out,
                     pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	store_gc_stats st0;
	memset(&st0, 0, sizeof(st0));
	int rc = check_layout(s, err);
	if (rc || (rc = check_writable(s, err)))
		return rc;
	if (s->in_txn)
		return error_set(err, PEMBA_EINVAL,
		                 "garbage collection inside a write "
		                 "transaction");
	if (now_ms == 0)
		now_ms = now_ms_wall();
	if ((rc = exec_simple(s, ST_BEGIN, err)))
		return rc;
	pemba_revision head, floor, cand = 0;
	if ((rc = layout_check(s, err)) ||
	    (rc = read_head(s, &head, NULL, err)) ||
	    (rc = read_floor(s, &floor, err)))
		goto fail;

	/* The new floor: the newest revision committed before the window,
	 * but never above the head, which must stay readable. */
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT rev FROM revisions WHERE timestamp_ms "
	                       "< ?1 ORDER BY timestamp_ms DESC, rev DESC "
	                       "LIMIT 1",
	                       -1, &st, NULL) != SQLITE_OK) {
		rc = db_error(s, err, "garbage collection");
		goto fail;
	}
	sqlite3_bind_int64(st, 1, now_ms - s->gc_window_ms);
	int step = sqlite3_step(st);
	if (step == SQLITE_ROW)
		cand = (pemba_revision)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (step != SQLITE_ROW && step != SQLITE_DONE) {
		rc = db_error(s, err, "garbage collection");
		goto fail;
	}
	if (cand > head)
		cand = head;
	/* Relationships that expired before the window are invisible to
	 * every read (expiry is judged by the current time, whatever the
	 * revision), so dropping them changes no answer.  A full scan: GC
	 * is maintenance, not a request. */
	if ((rc = exec_bound(s,
	                     "DELETE FROM relationships WHERE expiration_ms "
	                     "IS NOT NULL AND expiration_ms < ?1",
	                     now_ms - s->gc_window_ms, &st0.expired, err)))
		goto fail;
	if (cand <= floor) {
		if ((rc = exec_simple(s, ST_COMMIT, err)))
			goto fail;
		st0.floor = floor;
		*out = st0;
		return PEMBA_OK;
	}
	/* Versions that ended at or before the floor are visible at no
	 * readable revision. */
	if ((rc = exec_bound(s,
	                     "DELETE FROM relationships WHERE deleted_rev > 0 "
	                     "AND deleted_rev <= ?1",
	                     (int64_t)cand, &st0.relationships, err)) ||
	    (rc = exec_bound(s,
	                     "DELETE FROM schema_versions WHERE deleted_rev "
	                     "IS NOT NULL AND deleted_rev <= ?1",
	                     (int64_t)cand, &st0.schemas, err)) ||
	    (rc = exec_bound(s, "DELETE FROM revisions WHERE rev < ?1",
	                     (int64_t)cand, &st0.revisions, err)) ||
	    /* Positions of a mirrored source that land below the floor
	     * go with their revisions, except each source's newest, which
	     * still says how far this datastore includes that source. */
	    (rc = exec_bound(s,
	                     "DELETE FROM source_positions WHERE target_rev "
	                     "< ?1 AND EXISTS (SELECT 1 FROM source_positions "
	                     "AS q WHERE q.source = source_positions.source "
	                     "AND q.order_key > source_positions.order_key)",
	                     (int64_t)cand, NULL, err)) ||
	    (rc = exec_bound(s,
	                     "UPDATE meta SET value = ?1 WHERE key = "
	                     "'gc_floor'",
	                     (int64_t)cand, NULL, err)))
		goto fail;
	if ((rc = exec_simple(s, ST_COMMIT, err)))
		goto fail;
	s->cached_floor = cand;
	st0.floor = cand;
	*out = st0;
	return PEMBA_OK;
fail:
	exec_simple(s, ST_ROLLBACK, NULL);
	return rc;
}

/* ==================================================== datastore settings */

/*
 * The read-only flag and relation deprecations (store.h, "datastore
 * settings").  Reads use cached statements: core runs them in every write
 * transaction.  Writes are rare: one-off statements, each in its own
 * BEGIN IMMEDIATE transaction, so they serialize with every writer and a
 * write transaction that checked the settings commits before they change.
 * They record no revision.
 */

static int sqlite_get_read_only(store *base, bool *out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt_get(s, ST_READ_ONLY_GET, err);
	if (!st)
		return PEMBA_EIO;
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW && sqlite3_column_int64(st, 0) != 0;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(s, err, "reading the read-only setting");
	return PEMBA_OK;
}

static int sqlite_list_deprecations(store *base, store_deprecation **out,
                                    size_t *n_out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt_get(s, ST_DEPRECATIONS_LIST, err);
	if (!st)
		return PEMBA_EIO;
	/* One block: the array first, then the strings, so the caller
	 * frees it with one free().  Rows are collected in a strbuf, then
	 * laid out once their number is known. */
	strbuf names;
	strbuf_init(&names);
	store_deprecation *rows = NULL;
	size_t n = 0, cap = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			rows = xrealloc(rows, cap * sizeof(*rows));
		}
		const char *type = (const char *)sqlite3_column_text(st, 0);
		const char *rel = (const char *)sqlite3_column_text(st, 1);
		const char *mode = (const char *)sqlite3_column_text(st, 2);
		type = type ? type : "";
		rel = rel ? rel : "";
		/* Offsets into `names` until the block is built. */
		rows[n].resource_type = (const char *)(uintptr_t)names.len;
		strbuf_append(&names, type, strlen(type) + 1);
		rows[n].relation = (const char *)(uintptr_t)names.len;
		strbuf_append(&names, rel, strlen(rel) + 1);
		rows[n].mode = mode && strcmp(mode, "reject") == 0
		                   ? STORE_DEPRECATION_REJECT
		                   : STORE_DEPRECATION_WARN;
		rows[n].set_rev = (pemba_revision)sqlite3_column_int64(st, 3);
		rows[n].set_ms = sqlite3_column_int64(st, 4);
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(rows);
		strbuf_free(&names);
		return db_error(s, err, "reading the relation deprecations");
	}
	if (n > 0) {
		size_t array = n * sizeof(*rows);
		char *block = xmalloc(array + names.len);
		store_deprecation *list = (store_deprecation *)block;
		memcpy(block + array, names.data, names.len);
		for (size_t i = 0; i < n; i++) {
			list[i] = rows[i];
			list[i].resource_type =
			    block + array + (uintptr_t)rows[i].resource_type;
			list[i].relation =
			    block + array + (uintptr_t)rows[i].relation;
		}
		*out = list;
		*n_out = n;
	}
	free(rows);
	strbuf_free(&names);
	return PEMBA_OK;
}

/* Runs `sql` (parameters: ?1 text, ?2 text, ?3 text, ?4 head revision,
 * ?5 wall clock; unused ones are ignored by SQLite) in its own write
 * transaction; *changes_out (may be NULL) gets the number of rows it
 * changed.  `what` names the setting in messages. */
static int settings_write(sqlite_store *s, const char *sql, const char *p1,
                          const char *p2, const char *p3, int *changes_out,
                          const char *what, pemba_error *err)
{
	int rc = check_layout(s, err);
	if (rc || (rc = check_writable(s, err)))
		return rc;
	if (s->in_txn || s->read_depth)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot change %s inside a transaction", what);
	if ((rc = exec_simple(s, ST_BEGIN, err)))
		return rc;
	pemba_revision head;
	sqlite3_stmt *st = NULL;
	if ((rc = layout_check(s, err)) ||
	    (rc = read_head(s, &head, NULL, err)))
		goto fail;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		rc = db_error(s, err, what);
		goto fail;
	}
	if (p1)
		sqlite3_bind_text(st, 1, p1, -1, SQLITE_STATIC);
	if (p2)
		sqlite3_bind_text(st, 2, p2, -1, SQLITE_STATIC);
	if (p3)
		sqlite3_bind_text(st, 3, p3, -1, SQLITE_STATIC);
	int last = sqlite3_bind_parameter_count(st);
	if (last >= 4)
		sqlite3_bind_int64(st, 4, (int64_t)head);
	if (last >= 5)
		sqlite3_bind_int64(st, 5, now_ms_wall());
	if (sqlite3_step(st) != SQLITE_DONE) {
		rc = db_error(s, err, what);
		goto fail;
	}
	if (changes_out)
		*changes_out = sqlite3_changes(s->db);
	sqlite3_finalize(st);
	st = NULL;
	if ((rc = exec_simple(s, ST_COMMIT, err)))
		goto fail;
	return PEMBA_OK;
fail:
	sqlite3_finalize(st);
	exec_simple(s, ST_ROLLBACK, NULL);
	return rc;
}

static int sqlite_set_read_only(store *base, bool read_only, pemba_error *err)
{
	return settings_write(
	    (sqlite_store *)base,
	    "INSERT INTO settings(key, value) VALUES ('read_only', ?1 + 0) "
	    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	    read_only ? "1" : "0", NULL, NULL, NULL, "the read-only setting",
	    err);
}

static int sqlite_set_deprecation(store *base, const char *resource_type,
                                  const char *relation,
                                  store_deprecation_mode mode, pemba_error *err)
{
	return settings_write(
	    (sqlite_store *)base,
	    "INSERT INTO relation_deprecations(resource_type, relation, mode, "
	    "set_rev, set_ms) VALUES (?1, ?2, ?3, ?4, ?5) "
	    "ON CONFLICT(resource_type, relation) DO UPDATE SET "
	    "mode = excluded.mode, set_rev = excluded.set_rev, "
	    "set_ms = excluded.set_ms",
	    resource_type, relation,
	    mode == STORE_DEPRECATION_REJECT ? "reject" : "warn", NULL,
	    "a relation deprecation", err);
}

static int sqlite_remove_deprecation(store *base, const char *resource_type,
                                     const char *relation, bool *removed_out,
                                     pemba_error *err)
{
	int changes = 0;
	int rc = settings_write(
	    (sqlite_store *)base,
	    "DELETE FROM relation_deprecations WHERE resource_type = ?1 AND "
	    "relation = ?2",
	    resource_type, relation, NULL, &changes, "a relation deprecation",
	    err);
	if (rc == PEMBA_OK && removed_out)
		*removed_out = changes > 0;
	return rc;
}

/* =========================================================== migrations */

static int read_pragma_int(sqlite_store *s, const char *sql, int *out,
                           pemba_error *err)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_error(s, err, "reading the layout version");
	int rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return db_error(s, err, "reading the layout version");
	return PEMBA_OK;
}

/* Loads what the handle caches from `meta` (datastore id, GC floor). */
static int load_meta(sqlite_store *s, pemba_error *err)
{
	s->datastore_id[0] = '\0';
	s->cached_floor = 0;
	if (s->layout_version < 1)
		return PEMBA_OK;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT value FROM meta WHERE key = "
	                       "'datastore_id'",
	                       -1, &st, NULL) != SQLITE_OK)
		return db_error(s, err, "reading the datastore id");
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(s->datastore_id, sizeof(s->datastore_id), "%s",
		         (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	pemba_revision floor;
	return read_floor(s, &floor, err);
}

/* Before the layout changes, drop everything that depends on it. */
static int migrate_prepare(sqlite_store *s, pemba_error *err)
{
	if (s->in_txn || s->open_iters)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot migrate the datastore layout with a "
		                 "transaction or query open");
	int rc = check_writable(s, err);
	if (rc)
		return rc;
	finalize_all(s);
	names_clear(&s->names);
	memset(s->nonces, 0, sizeof(s->nonces));
	/* A migration knows the layout moves: it re-reads the version in
	 * each step. */
	s->layout_changed = false;
	return PEMBA_OK;
}

/*
 * Moves the layout one step: from `from` to `from + 1` (up) or `from - 1`
 * (down), in one transaction together with the version bump.  The version
 * is re-read inside the transaction so that two processes migrating at
 * once do not apply a step twice.
 */
static int migrate_step(sqlite_store *s, int from, bool up, pemba_error *err)
{
	const sqlite_migration *m = &sqlite_migrations[up ? from : from - 1];
	int to = up ? from + 1 : from - 1, current, rc;
	char *msg = NULL;
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return db_error(s, err, "starting a migration");
	if ((rc = read_pragma_int(s, "PRAGMA user_version", &current, err)))
		goto fail;
	if (current != from) {
		/* Someone else moved it meanwhile: nothing to do here. */
		sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
		s->layout_version = current;
		return PEMBA_OK;
	}
	char bump[64];
	snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", to);
	if (sqlite3_exec(s->db, up ? m->up_sql : m->down_sql, NULL, NULL,
	                 &msg) != SQLITE_OK ||
	    sqlite3_exec(s->db, bump, NULL, NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(s->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
		rc = error_set(err, PEMBA_EIO,
		               "migration %d (%s) %s failed: %s; the datastore "
		               "stays at layout version %d",
		               m->version, m->name, up ? "up" : "down",
		               msg ? msg : sqlite3_errmsg(s->db), from);
		sqlite3_free(msg);
		goto fail;
	}
	s->layout_version = to;
	/* Not through exec_simple: make the step durable here. */
	if (s->group_sync)
		return group_sync_wait(s, err);
	return PEMBA_OK;
fail:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

static int sqlite_migrate_up(store *base, int target, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int head = sqlite_migration_count, rc;
	if (target == 0)
		target = head;
	if (target < 0 || target > head)
		return error_set(err, PEMBA_EINVAL,
		                 "no layout version %d (this binary knows 1 to "
		                 "%d)",
		                 target, head);
	if (s->layout_version > head)
		return error_set(err, PEMBA_EVERSION,
		                 "datastore layout version %d is newer than "
		                 "this binary knows (%d)",
		                 s->layout_version, head);
	if (s->layout_version >= target)
		return PEMBA_OK;
	if ((rc = migrate_prepare(s, err)))
		return rc;
	while (!rc && s->layout_version < target)
		rc = migrate_step(s, s->layout_version, true, err);
	int meta_rc = load_meta(s, rc ? NULL : err);
	return rc ? rc : meta_rc;
}

static int sqlite_migrate_down(store *base, int target, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int head = sqlite_migration_count, rc;
	if (target < 0 || target > head)
		return error_set(err, PEMBA_EINVAL,
		                 "no layout version %d (this binary knows 0 to "
		                 "%d)",
		                 target, head);
	if (s->layout_version > head)
		return error_set(err, PEMBA_EVERSION,
		                 "datastore layout version %d is newer than "
		                 "this binary knows (%d)",
		                 s->layout_version, head);
	if (s->layout_version <= target)
		return PEMBA_OK;
	if ((rc = migrate_prepare(s, err)))
		return rc;
	while (!rc && s->layout_version > target)
		rc = migrate_step(s, s->layout_version, false, err);
	int meta_rc = load_meta(s, rc ? NULL : err);
	return rc ? rc : meta_rc;
}

static int sqlite_migrate_status(store *base, int *current_out, int *head_out,
                                 store_migration_info **list, size_t *nlist,
                                 pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	/* Re-read: another process may have migrated since open. */
	int current, rc;
	if ((rc = read_pragma_int(s, "PRAGMA user_version", &current, err)))
		return rc;
	if (current != s->layout_version && !s->in_txn && !s->open_iters &&
	    s->opts.migrate == STORE_MIGRATE_NONE) {
		finalize_all(s);
		s->layout_version = current;
		s->layout_changed = false;
		load_meta(s, NULL);
	} else if (current != s->layout_version) {
		layout_seen(s, current);
	}
	if (current_out)
		*current_out = current;
	if (head_out)
		*head_out = sqlite_migration_count;
	if (list) {
		size_t n = (size_t)sqlite_migration_count;
		store_migration_info *l = xcalloc(n, sizeof(*l));
		for (size_t i = 0; i < n; i++) {
			l[i].version = sqlite_migrations[i].version;
			l[i].name = sqlite_migrations[i].name;
			l[i].description = sqlite_migrations[i].description;
			l[i].applied = sqlite_migrations[i].version <= current;
		}
		*list = l;
		if (nlist)
			*nlist = n;
	}
	return PEMBA_OK;
}

/* ============================================================ lifecycle */

/* Names of shared memory datastores: letters, digits, '_', '-', '.'. */
static bool valid_memory_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > MEMORY_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		      c == '.'))
			return false;
	}
	return true;
}

/* A parsed datastore URI. */
#define PATH_BYTES 4096
typedef struct sqlite_uri {
	char path[PATH_BYTES]; /* for sqlite3_open_v2 */
	bool memory, shared;
	bool read_only; /* ?mode=ro */
	bool sync_full; /* ?sync=full */
} sqlite_uri;

#define URI_FORMS                                                              \
	"sqlite:///abs/path.db, sqlite://./rel/path.db, sqlite::memory:, "     \
	"sqlite::memory:NAME"

/*
 * Query parameters of a file URI ("?mode=ro&..."): each one is understood
 * or refused by name, never left in the file name.
 */
static int parse_uri_params(const char *uri, const char *params,
                            sqlite_uri *out, pemba_error *err)
{
	const char *p = params;
	for (;;) {
		size_t n = strcspn(p, "&");
		const char *eq = memchr(p, '=', n);
		size_t klen = eq ? (size_t)(eq - p) : n;
		const char *val = eq ? eq + 1 : "";
		size_t vlen = eq ? n - klen - 1 : 0;
		if (klen == 4 && strncmp(p, "mode", 4) == 0 && eq) {
			if (vlen == 2 && strncmp(val, "ro", 2) == 0)
				out->read_only = true;
			else if (vlen == 2 && strncmp(val, "rw", 2) == 0)
				out->read_only = false;
			else
				return error_set(
				    err, PEMBA_EINVAL,
				    "invalid value for datastore URI "
				    "parameter `mode` in \"%s\": \"%.*s\" "
				    "(accepted: mode=ro, mode=rw, sync=group, sync=full)",
				    uri, (int)vlen, val);
		} else if (klen == 4 && strncmp(p, "sync", 4) == 0 && eq) {
			if (vlen == 4 && strncmp(val, "full", 4) == 0)
				out->sync_full = true;
			else if (vlen == 5 && strncmp(val, "group", 5) == 0)
				out->sync_full = false;
			else
				return error_set(
				    err, PEMBA_EINVAL,
				    "invalid value for datastore URI "
				    "parameter `sync` in \"%s\": \"%.*s\" "
				    "(accepted: sync=group, sync=full)",
				    uri, (int)vlen, val);
		} else if (klen == 0) {
			return error_set(err, PEMBA_EINVAL,
			                 "empty parameter in datastore URI "
			                 "\"%s\" (accepted: mode=ro, mode=rw, sync=group, sync=full)",
			                 uri);
		} else {
			return error_set(
			    err, PEMBA_EINVAL,
			    "unknown datastore URI parameter `%.*s` "
			    "in \"%s\" (accepted: mode=ro, mode=rw, sync=group, sync=full)",
			    (int)klen, p, uri);
		}
		if (p[n] == '\0')
			return PEMBA_OK;
		p += n + 1;
	}
}

/*
 * Turns the part of the URI after "sqlite:" into a file name for
 * sqlite3_open_v2: "///abs" -> "/abs", "//./rel" and "//../rel" ->
 * relative to the working directory, ":memory:" -> a private in-memory
 * database, ":memory:NAME" -> the process-wide memory database NAME
 * (SQLite's memdb VFS: a database whose name starts with '/' is shared by
 * every connection of the process that opens it, and freed with the last
 * one).  A file URI may end in "?" and parameters (parse_uri_params).
 */
static int parse_uri(const char *uri, sqlite_uri *out, pemba_error *err)
{
	const char *rest = uri + strlen("sqlite:");
	memset(out, 0, sizeof(*out));
	const char *q = strchr(rest, '?');
	size_t len = q ? (size_t)(q - rest) : strlen(rest);
	if (len == 8 && strncmp(rest, ":memory:", 8) == 0) {
		if (q)
			return error_set(err, PEMBA_EINVAL,
			                 "datastore URI parameters are for "
			                 "files, not \"%s\"",
			                 uri);
		snprintf(out->path, PATH_BYTES, ":memory:");
		out->memory = true;
		return PEMBA_OK;
	}
	if (strncmp(rest, ":memory:", 8) == 0) {
		if (q)
			return error_set(err, PEMBA_EINVAL,
			                 "datastore URI parameters are for "
			                 "files, not \"%s\"",
			                 uri);
		if (!valid_memory_name(rest + 8))
			return error_set(err, PEMBA_EINVAL,
			                 "invalid memory datastore name in "
			                 "\"%s\" (1 to %d letters, digits, "
			                 "'_', '-' or '.')",
			                 uri, MEMORY_NAME_MAX);
		snprintf(out->path, PATH_BYTES,
		         "file:/pemba-memory-%s?vfs=memdb", rest + 8);
		out->memory = out->shared = true;
		return PEMBA_OK;
	}
	if (len > 2 && strncmp(rest, "//", 2) == 0 && len - 2 < PATH_BYTES) {
		const char *p = rest + 2;
		size_t n = len - 2;
		if ((p[0] == '/' && n > 1 && p[n - 1] != '/') ||
		    ((strncmp(p, "./", 2) == 0 || strncmp(p, "../", 3) == 0) &&
		     p[n - 1] != '/')) {
			snprintf(out->path, PATH_BYTES, "%.*s", (int)n, p);
			return q ? parse_uri_params(uri, q + 1, out, err)
			         : PEMBA_OK;
		}
	}
	return error_set(
	    err, PEMBA_EINVAL,
	    "invalid SQLite datastore URI \"%s\" (accepted: " URI_FORMS
	    "; files take ?mode=ro)",
	    uri);
}

static int exec_setup(sqlite_store *s, const char *sql, pemba_error *err)
{
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		/* The first statement on a file that is no SQLite database:
		 * name the file, not the statement. */
		if ((sqlite3_errcode(s->db) & 0xff) == SQLITE_NOTADB)
			return error_set(err, PEMBA_EINVAL,
			                 "\"%s\" is not a pemba datastore: %s "
			                 "is not an SQLite database file",
			                 s->uri, s->path ? s->path : "it");
		return db_error(s, err, sql);
	}
	return PEMBA_OK;
}

static void sqlite_close(store *base)
{
	sqlite_store *s = (sqlite_store *)base;
	if (!s)
		return;
	if (s->in_txn)
		sqlite_txn_abort(&s->txn.base);
	finalize_all(s);
	sqlite3_close_v2(s->db);
	gate_leave(s);
	gate_release_ref(s->gate);
	file_lease_release(s->lease);
	names_free(&s->names);
	arena_destroy(s->scratch);
	free(s->uri);
	free(s->path);
	free(s);
}

/* Reads the identity of the file (application id, layout version, whether
 * it has tables) in one read transaction, so that another handle creating
 * the datastore right now is seen before or after, never half-way. */
static int read_identity(sqlite_store *s, int *app_id, int *version,
                         int *ntables, pemba_error *err)
{
	if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return db_error(s, err, "reading the datastore identity");
	int rc;
	if (!(rc = read_pragma_int(s, "PRAGMA application_id", app_id, err)) &&
	    !(rc = read_pragma_int(s, "PRAGMA user_version", version, err)))
		rc = read_pragma_int(s, "SELECT count(*) FROM sqlite_master",
		                     ntables, err);
	sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	return rc;
}

static int sqlite_open(const char *uri, const store_options *opts, store **out,
                       pemba_error *err)
{
	sqlite_uri u;
	int rc = parse_uri(uri, &u, err);
	if (rc)
		return rc;
	bool memory = u.memory, shared = u.shared;
	const char *path = u.path;
	if (u.read_only && access(path, F_OK) != 0)
		return error_set(err, PEMBA_ENOTFOUND,
		                 "cannot open datastore \"%s\": %s does not "
		                 "exist (mode=ro never creates one)",
		                 uri, path);

	sqlite_store *s = xcalloc(1, sizeof(*s));
	s->base.ops = &store_sqlite_ops;
	s->memory = memory;
	s->shared_memory = shared;
	s->read_only = u.read_only;
	s->uri = xstrdup(uri);
	s->path = memory ? NULL : xstrdup(path);
	s->opts = *opts;
	s->gc_window_ms =
	    (opts->gc_window_seconds > 0 ? opts->gc_window_seconds
	                                 : DEFAULT_GC_WINDOW_SECONDS) *
	    1000;
	names_init(&s->names);
	s->scratch = arena_create(0);

	int flags =
	    (u.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
	    SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
	if ((!opts->must_exist || memory) && !u.read_only)
		flags |= SQLITE_OPEN_CREATE;
	if (shared)
		flags |= SQLITE_OPEN_URI;
	if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
		int code = sqlite3_errcode(s->db);
		rc = error_set(err,
		               code == SQLITE_CANTOPEN && opts->must_exist
		                   ? PEMBA_ENOTFOUND
		                   : PEMBA_EIO,
		               "cannot open datastore \"%s\": %s", uri,
		               s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_handler(s->db, busy_wait, s);
	if (shared) {
		sqlite3_int64 limit = MEMDB_MAX_BYTES;
		sqlite3_file_control(s->db, "main", SQLITE_FCNTL_SIZE_LIMIT,
		                     &limit);
	}
	char pragmas[160];
	snprintf(pragmas, sizeof(pragmas),
	         "PRAGMA cache_size = -%d; PRAGMA temp_store = MEMORY; "
	         "PRAGMA wal_autocheckpoint = %d",
	         shared ? MEMDB_CACHE_SIZE_KIB : CACHE_SIZE_KIB,
	         WAL_AUTOCHECKPOINT_PAGES);
	if ((rc = exec_setup(s, pragmas, err)))
		goto fail;
	/* Replaces the automatic checkpoint (checkpoint_if_due). */
	if (!memory)
		sqlite3_wal_hook(s->db, wal_hook, s);

	/* Is this a pemba datastore, and at which layout version?  Asked
	 * before anything that writes (switching to WAL rewrites the file
	 * header), so a failed open leaves someone else's file untouched. */
	int app_id, version, ntables;
	if ((rc = read_identity(s, &app_id, &version, &ntables, err)))
		goto fail;
	if ((app_id != 0 && app_id != SQLITE_PEMBA_APPLICATION_ID) ||
	    (app_id == 0 && (version != 0 || ntables != 0))) {
		rc = error_set(err, PEMBA_EINVAL,
		               "\"%s\" is an SQLite database but not a pemba "
		               "datastore",
		               uri);
		goto fail;
	}
	/*
	 * WAL: readers never block the writer and a commit is one append.
	 * Every commit is on disk before it is acknowledged, so a revision
	 * returned to a caller survives a power loss: by default through a
	 * sync shared by the process's committers after the lock is
	 * released (synchronous=NORMAL + group_sync_wait), with ?sync=full
	 * by SQLite's fsync inside the commit (README.md has the costs).
	 * A larger autocheckpoint keeps bulk loads from rewriting the same
	 * B-tree pages into the database file over and over.
	 */
	s->group_sync = !memory && !u.read_only && !u.sync_full;
	if (!memory && !u.read_only &&
	    ((rc = exec_setup(s, "PRAGMA journal_mode = WAL", err)) ||
	     (rc = exec_setup(s, s->group_sync ? "PRAGMA synchronous = NORMAL"
	                                       : "PRAGMA synchronous = FULL",
	                      err))))
		goto fail;
	s->layout_version = version;
	if (version > sqlite_migration_count) {
		rc = error_set(err, PEMBA_EVERSION,
		               "datastore layout version %d is newer than this "
		               "binary knows (newest is %d); upgrade pemba",
		               version, sqlite_migration_count);
		goto fail;
	}
	if (version < sqlite_migration_count) {
		/* A new datastore: no table yet (a missing or empty file, or
		 * one migrated down to 0). */
		bool fresh = version == 0 && ntables == 0;
		if ((opts->migrate == STORE_MIGRATE_AUTO ||
		     (opts->migrate == STORE_MIGRATE_NEW_ONLY && fresh)) &&
		    !u.read_only) {
			if ((rc = sqlite_migrate_up(&s->base, 0, err)))
				goto fail;
		} else if (opts->migrate != STORE_MIGRATE_NONE) {
			rc = layout_pending_error(s, version, err);
			goto fail;
		}
	}
	if ((rc = load_meta(s, err)))
		goto fail;
	if (!u.read_only)
		gate_attach(s);
	s->ready = true;
	*out = &s->base;
	return PEMBA_OK;
fail:
	sqlite_close(&s->base);
	return rc;
}

static const char *sqlite_datastore_id(store *base)
{
	return ((sqlite_store *)base)->datastore_id;
}

/* ====================================================== snapshots */

/*
 * A snapshot is SQLite's online backup of the source connection into a
 * new file, page by page, inside one read transaction on the source that
 * the copy keeps open from its first page to its last.  In WAL mode that
 * transaction pins one snapshot of the database (the main file plus the
 * WAL frames committed before it began), so the copy is exactly the
 * datastore at one revision, whatever other handles and processes commit
 * meanwhile (they append to the WAL; a checkpoint cannot overwrite pages
 * an open reader still needs).  The backup never restarts: restarts only
 * happen when the source changes through the source connection itself,
 * and this handle does not write while it copies.
 */

/* Runs one statement on a raw connection; 0 or an SQLite code. */
static int raw_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Writes the copy's file to disk (the data, then its directory entry). */
static int sync_path(const char *path, bool directory)
{
	int fd = open(path, (directory ? O_RDONLY | O_DIRECTORY : O_RDWR) |
	                        O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

static void dir_of(const char *path, char *dir, size_t n)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, n, ".");
	else if (slash == path)
		snprintf(dir, n, "/");
	else
		snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

/* Copies s into the new file tmp; *rev_out: the revision copied, *nonce_out
 * its nonce. */
static int snapshot_copy(sqlite_store *s, const char *tmp, store_progress_fn fn,
                         void *ctx, pemba_revision *rev_out,
                         uint64_t *nonce_out, pemba_error *err)
{
	sqlite3 *dst = NULL;
	int rc = PEMBA_OK;
	if (sqlite3_open_v2(tmp, &dst,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
	                    NULL) != SQLITE_OK) {
		rc = error_set(err, PEMBA_EIO, "cannot create %s: %s", tmp,
		               dst ? sqlite3_errmsg(dst) : "out of memory");
		sqlite3_close(dst);
		return rc;
	}
	/* The read transaction every backup step runs in. */
	if (raw_exec(s->db, "BEGIN") != SQLITE_OK) {
		rc = db_error(s, err, "starting the snapshot");
		sqlite3_close(dst);
		return rc;
	}
	s->read_depth++;
	pemba_revision head = 0;
	uint64_t nonce = 0;
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT ifnull(max(rev), 0) FROM revisions", -1,
	                       &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		head = (pemba_revision)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	/* (No nonce column before layout 5: the prepare fails, nonce 0.) */
	if (head && sqlite3_prepare_v2(s->db,
	                               "SELECT nonce FROM revisions WHERE "
	                               "rev = ?1",
	                               -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (int64_t)head);
		if (sqlite3_step(st) == SQLITE_ROW)
			nonce = (uint64_t)sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);

	sqlite3_backup *b = sqlite3_backup_init(dst, "main", s->db, "main");
	if (!b) {
		rc = error_set(err, PEMBA_EIO, "cannot start the snapshot: %s",
		               sqlite3_errmsg(dst));
	} else {
		int step;
		while ((step = sqlite3_backup_step(b, SNAPSHOT_STEP_PAGES)) ==
		           SQLITE_OK ||
		       step == SQLITE_BUSY || step == SQLITE_LOCKED) {
			if (step != SQLITE_OK)
				sqlite3_sleep(10);
			if (fn) {
				int total = sqlite3_backup_pagecount(b);
				int left = sqlite3_backup_remaining(b);
				fn(ctx, (uint64_t)(total - left),
				   (uint64_t)total);
			}
		}
		if (fn && step == SQLITE_DONE) {
			int total = sqlite3_backup_pagecount(b);
			fn(ctx, (uint64_t)total, (uint64_t)total);
		}
		if (sqlite3_backup_finish(b) != SQLITE_OK ||
		    step != SQLITE_DONE)
			rc = error_set(err, PEMBA_EIO,
			               "snapshot of %s failed: %s", s->uri,
			               sqlite3_errmsg(dst));
	}
	s->read_depth--;
	raw_exec(s->db, "COMMIT");
	if (sqlite3_close(dst) != SQLITE_OK && !rc)
		rc = error_set(err, PEMBA_EIO, "cannot close %s", tmp);
	*rev_out = head;
	*nonce_out = nonce;
	return rc;
}

/* Gives the copy at tmp a new identity if asked, and reads it. */
static int snapshot_identity(const char *tmp, bool new_identity,
                             store_snapshot_info *out, pemba_error *err)
{
	sqlite3 *db = NULL;
	int rc = PEMBA_OK;
	/* Reopened: the copy's header says WAL now (the source's), which
	 * the connection that wrote it did not know. */
	if (sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK) {
		rc = error_set(err, PEMBA_EIO, "cannot open the copy %s: %s",
		               tmp, db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return rc;
	}
	sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
	if (new_identity &&
	    raw_exec(db, "UPDATE meta SET value = lower(hex(randomblob(16))) "
	                 "WHERE key = 'datastore_id'") != SQLITE_OK)
		rc = error_set(err, PEMBA_EIO,
		               "cannot give the copy a new identity: %s",
		               sqlite3_errmsg(db));
	sqlite3_stmt *st = NULL;
	if (!rc &&
	    sqlite3_prepare_v2(db,
	                       "SELECT value FROM meta WHERE key = "
	                       "'datastore_id'",
	                       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		snprintf(out->datastore_id, sizeof(out->datastore_id), "%s",
		         (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	/* The last connection to close checkpoints and removes the WAL,
	 * so the copy is one file. */
	if (sqlite3_close(db) != SQLITE_OK && !rc)
		rc = error_set(err, PEMBA_EIO, "cannot close the copy %s", tmp);
	return rc;
}

static int sqlite_snapshot(store *base, const char *path, bool new_identity,
                           store_progress_fn fn, void *ctx,
                           store_snapshot_info *out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	if (s->layout_changed)
		return layout_changed_error(s, err);
	if (s->layout_version < 1)
		return error_set(err, PEMBA_EINVAL,
		                 "datastore %s is empty (layout version 0): "
		                 "nothing to copy",
		                 s->uri);
	if (s->in_txn || s->read_depth || s->open_iters)
		return error_set(err, PEMBA_EINVAL,
		                 "a snapshot needs a handle without an open "
		                 "transaction or query");
	struct stat sb;
	if (stat(path, &sb) == 0)
		return error_set(err, PEMBA_EEXISTS,
		                 "%s already exists: a snapshot never "
		                 "overwrites a file",
		                 path);
	size_t n = strlen(path) + 64;
	char *tmp = xmalloc(n);
	snprintf(tmp, n, "%s.partial-%ld", path, (long)getpid());
	unlink(tmp);
	pemba_revision rev = 0;
	uint64_t nonce = 0;
	int rc = snapshot_copy(s, tmp, fn, ctx, &rev, &nonce, err);
	if (!rc)
		rc = snapshot_identity(tmp, new_identity, out, err);
	if (!rc && sync_path(tmp, false) != 0)
		rc = error_set(err, PEMBA_EIO, "cannot sync %s: %s", tmp,
		               strerror(errno));
	/* link() fails rather than replace a file that appeared under
	 * `path` meanwhile. */
	if (!rc && link(tmp, path) != 0)
		rc = errno == EEXIST
		         ? error_set(err, PEMBA_EEXISTS,
		                     "%s already exists: a snapshot never "
		                     "overwrites a file",
		                     path)
		         : error_set(err, PEMBA_EIO, "cannot create %s: %s",
		                     path, strerror(errno));
	if (!rc) {
		char dir[PATH_BYTES];
		dir_of(path, dir, sizeof(dir));
		sync_path(dir, true);
		if (stat(path, &sb) == 0)
			out->bytes = (uint64_t)sb.st_size;
		out->revision = rev;
		out->nonce = nonce;
	}
	unlink(tmp);
	free(tmp);
	return rc;
}

static int sqlite_new_identity(store *base, char id_out[64], pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	int rc;
	if (s->layout_changed)
		return layout_changed_error(s, err);
	if ((rc = check_writable(s, err)))
		return rc;
	if (s->layout_version < 1)
		return error_set(err, PEMBA_EINVAL,
		                 "datastore %s is empty (layout version 0): it "
		                 "has no identity yet",
		                 s->uri);
	if (s->in_txn || s->read_depth)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot change the identity inside a "
		                 "transaction");
	if (raw_exec(s->db, "UPDATE meta SET value = lower(hex(randomblob(16)))"
	                    " WHERE key = 'datastore_id'") != SQLITE_OK)
		return db_error(s, err, "writing a new identity");
	if ((rc = load_meta(s, err)))
		return rc;
	snprintf(id_out, 64, "%s", s->datastore_id);
	return PEMBA_OK;
}

/* ======================================== processes using a datastore */

static char *lock_path(const sqlite_store *s)
{
	size_t n = strlen(s->path) + sizeof(FILE_LEASE_SUFFIX);
	char *p = xmalloc(n);
	snprintf(p, n, "%s" FILE_LEASE_SUFFIX, s->path);
	return p;
}

static int sqlite_lease(store *base, const char *role, bool exclusive,
                        pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	if (s->memory)
		return PEMBA_OK; /* nobody else can reach it */
	if (s->lease)
		return error_set(err, PEMBA_EINVAL,
		                 "this handle already holds a lease on %s",
		                 s->uri);
	char *path = lock_path(s);
	int rc = file_lease_take(path, s->uri, role, exclusive, &s->lease, err);
	free(path);
	/* A read-only server on a read-only directory cannot create the
	 * lock file: it serves without a lease. */
	if (rc == PEMBA_EIO && s->read_only && !exclusive)
		rc = PEMBA_OK;
	return rc;
}

static int sqlite_list_users(store *base, store_user *out, size_t cap,
                             size_t *n_out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	if (s->memory)
		return PEMBA_OK;
	char *path = lock_path(s);
	int rc = file_lease_list(path, s->lease, out, cap, n_out, err);
	free(path);
	return rc;
}

static int sqlite_reopen(store *base, store **out, pemba_error *err)
{
	sqlite_store *s = (sqlite_store *)base;
	if (s->memory && !s->shared_memory)
		return error_set(err, PEMBA_EUNSUPPORTED,
		                 "a private memory datastore (sqlite::memory:) "
		                 "cannot be opened twice; name it "
		                 "(sqlite::memory:NAME) to share it between "
		                 "handles");
	/* The datastore exists and is at the layout s works with: never
	 * create or migrate it here (a clone made after someone migrated
	 * the datastore under a server must not migrate it back). */
	store_options opts = s->opts;
	if (opts.migrate != STORE_MIGRATE_NONE)
		opts.migrate = STORE_MIGRATE_REQUIRE;
	opts.must_exist = 1;
	int rc = sqlite_open(s->uri, &opts, out, err);
	if (rc == PEMBA_EVERSION && layout_moved(s))
		return layout_changed_error(s, err);
	if (rc == 0 && s->layout_changed) {
		sqlite_close(*out);
		*out = NULL;
		return layout_changed_error(s, err);
	}
	return rc;
}

const store_ops store_sqlite_ops = {
    .scheme = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .datastore_id = sqlite_datastore_id,
    .head_revision = sqlite_head_revision,
    .check_revision = sqlite_check_revision,
    .reopen = sqlite_reopen,
    .wait_revision = sqlite_wait_revision,
    .scan = sqlite_scan,
    .changes = sqlite_changes,
    .txn_set_metadata = sqlite_txn_set_metadata,
    .txn_defer_indexes = sqlite_txn_defer_indexes,
    .txn_record_position = sqlite_txn_record_position,
    .record_position = sqlite_record_position,
    .lookup_position = sqlite_lookup_position,
    .read_begin = sqlite_read_begin,
    .read_end = sqlite_read_end,
    .query = sqlite_query,
    .iter_next = sqlite_iter_next,
    .iter_close = sqlite_iter_close,
    .read_schema = sqlite_read_schema,
    .txn_begin = sqlite_txn_begin,
    .txn_query = sqlite_txn_query,
    .txn_create = sqlite_txn_create,
    .txn_touch = sqlite_txn_touch,
    .txn_create_batch = sqlite_txn_create_batch,
    .txn_touch_batch = sqlite_txn_touch_batch,
    .txn_delete = sqlite_txn_delete,
    .txn_delete_filter = sqlite_txn_delete_filter,
    .txn_write_schema = sqlite_txn_write_schema,
    .txn_commit = sqlite_txn_commit,
    .txn_abort = sqlite_txn_abort,
    .gc = sqlite_gc,
    .revision_nonce = sqlite_revision_nonce,
    .snapshot = sqlite_snapshot,
    .new_identity = sqlite_new_identity,
    .lease = sqlite_lease,
    .list_users = sqlite_list_users,
    .migrate_status = sqlite_migrate_status,
    .migrate_up = sqlite_migrate_up,
    .migrate_down = sqlite_migrate_down,
    .get_read_only = sqlite_get_read_only,
    .set_read_only = sqlite_set_read_only,
    .list_deprecations = sqlite_list_deprecations,
    .set_deprecation = sqlite_set_deprecation,
    .remove_deprecation = sqlite_remove_deprecation,
    .txn_probe = sqlite_txn_probe,
    .count_groups = sqlite_count_groups,
};
