/*
 * store_postgres.c -- the PostgreSQL datastore engine (libpq).
 *
 * The same MVCC representation as the SQLite engine (README.md,
 * "PostgreSQL engine"): revisions are data, a relationship version is
 * visible at R iff created_rev <= R AND (deleted_rev = 0 OR deleted_rev >
 * R), deleted_rev 0 marks the live version and is part of the primary
 * key.  Names are stored as text (no interning).  The tables are created
 * by the numbered migrations in postgres_migrations.c.
 *
 *   - Writers serialize on pg_advisory_xact_lock(PG_WRITE_LOCK), taken
 *     first in every write transaction; the head (max(rev)) is read after
 *     it, so revisions are gapless and commit in order, and revision R
 *     committed implies every revision below it committed.  A write
 *     transaction's begin (BEGIN, the lock, its revision row, the
 *     settings) is one round trip (txn_start).
 *   - Concurrent write transactions of one process share one PostgreSQL
 *     transaction, one savepoint each, and one COMMIT (see "group
 *     commit").
 *   - A handle (used by one thread at a time) borrows a connection from
 *     the process's read or write pool of the datastore for a read
 *     transaction, a write transaction or one statement, and gives it
 *     back after (see "connection pools").  Fixed statements and query
 *     shapes are prepared per connection on first use (PQprepare) and
 *     forgotten when it is reset or the layout migrates.
 *   - A read transaction at a revision a read replica has replayed may
 *     run on the replica (see "read replicas").
 *   - GC runs on one node at a time (a session try-lock, see pg_gc).
 *   - A connection that broke (PQstatus CONNECTION_BAD) is reset on its
 *     next use; a statement outside a transaction that fails because the
 *     connection dropped is retried once on the new connection.  Calls
 *     while PostgreSQL is unreachable fail with PEMBA_EIO "datastore
 *     unavailable: ..." and succeed again once it is back.
 *   - Iterators read in pages of PAGE_ROWS rows, each page a query that
 *     resumes after the last row of the previous one (the same row-value
 *     cursor as `after`): memory per iterator is bounded and any number
 *     of iterators may be open on the one connection.
 *   - Leases are session advisory locks on a second, dedicated connection
 *     (shared for servers, exclusive try-lock for migrations) with a
 *     record per holder in pemba_users.
 *   - Every revision commits with NOTIFY pemba_commit; a listener thread
 *     per datastore per process turns notifications into the process-wide
 *     commit signal, so waiters hear other processes' commits at once.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "store/file_lease.h"
#include "store/postgres_migrations.h"
#include "store/store.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define DEFAULT_GC_WINDOW_SECONDS (24 * 60 * 60)
/* Every statement is cancelled after this long (a stuck query must not
 * hold a server worker forever). */
#define STATEMENT_TIMEOUT_MS 30000
/* How long a writer waits for the write lock (the SQLite engine's busy
 * timeout): then PEMBA_EIO "datastore busy". */
#define LOCK_TIMEOUT_MS 5000
#define CONNECT_TIMEOUT_S "10"
#define RESET_BACKOFF_MS 1000
/* Every commit of a revision notifies this channel (see commit
 * listeners). */
#define COMMIT_CHANNEL "pemba_commit"
/* Rows fetched per query of an iterator or of the change feed. */
#define PAGE_ROWS 1000
/* Rows collected per round by a delete-by-filter. */
#define DELETE_CHUNK 512
#define NONCE_CACHE 64
/* Connection pools (see "connection pools"): SpiceDB's defaults for
 * --datastore-conn-pool-read-max-open / --datastore-conn-pool-write-max-open,
 * and how long a borrower waits for a free connection before PEMBA_EIO
 * "datastore busy" (as long as a writer waits for the write lock). */
#define DEFAULT_POOL_READ_MAX 20
#define DEFAULT_POOL_WRITE_MAX 10
#define POOL_WAIT_MS 5000
/* Read replicas (see "read replicas"): a replica that failed is skipped
 * this long; one found behind a wanted revision is not asked again for
 * REPLICA_RECHECK_MS (the primary serves meanwhile); connecting to one
 * gives up after REPLICA_CONNECT_TIMEOUT_S (a replica is optional: the
 * primary is the fallback). */
#define REPLICA_DOWN_MS 5000
#define REPLICA_RECHECK_MS 50
#define REPLICA_CONNECT_TIMEOUT_S "2"
#define MAX_REPLICAS 16

/* Advisory lock keys (one 64-bit space per database): "pemb" in the high
 * half, so pg_locks shows classid 1885695330 and objid 1..4. */
#define PG_LOCK_CLASSID 1885695330 /* 0x70656d62 */
#define PG_WRITE_LOCK 8098999772569927681
#define PG_MIGRATE_LOCK 8098999772569927682
#define PG_LEASE_LOCK 8098999772569927683
#define PG_USERS_LOCK 8098999772569927684
#define PG_GC_LOCK 8098999772569927685
#define STR_(x) #x
#define STR(x) STR_(x)

/* Type OIDs for PQprepare (pg_type.h is server-side only). */
#define OID_INT8 20
#define OID_TEXT 25

/* clang-format off */
/* Session settings of every connection (see session_setup). */
#define SESSION_SETUP_SQL                                                      \
	"SET statement_timeout = " STR(STATEMENT_TIMEOUT_MS) "; "              \
	"SET lock_timeout = " STR(LOCK_TIMEOUT_MS) "; "                        \
	"SET client_min_messages = warning"
/* Every writer's first statement (see begin_write). */
#define WRITE_BEGIN_SQL                                                        \
	"BEGIN; SELECT pg_advisory_xact_lock(" STR(PG_WRITE_LOCK) ")"
/* A migration step's first statements (see migrate_step): no statement
 * timeout (an index over a big table takes what it takes), the
 * migration lock, the write lock, the version table. */
#define MIGRATE_BEGIN_SQL                                                      \
	"BEGIN; SET LOCAL statement_timeout = 0; "                             \
	"SELECT pg_advisory_xact_lock(" STR(PG_MIGRATE_LOCK) "), "             \
	"pg_advisory_xact_lock(" STR(PG_WRITE_LOCK) "); "                      \
	"CREATE TABLE IF NOT EXISTS pemba_schema_version "                     \
	"(version integer NOT NULL); "                                         \
	"INSERT INTO pemba_schema_version SELECT 0 WHERE NOT EXISTS "          \
	"(SELECT 1 FROM pemba_schema_version)"
/* The lease records' table, created once (under a lock: two sessions
 * creating it at once would collide in the catalog). */
#define USERS_TABLE_SQL                                                        \
	"BEGIN; SELECT pg_advisory_xact_lock(" STR(PG_USERS_LOCK) "); "        \
	"CREATE TABLE IF NOT EXISTS pemba_users (backend_pid integer PRIMARY " \
	"KEY, role text NOT NULL, pid bigint NOT NULL, host text NOT NULL, "   \
	"started_ms bigint NOT NULL); COMMIT"
#define LEASE_EXCLUSIVE_SQL                                                    \
	"SELECT pg_try_advisory_lock(" STR(PG_LEASE_LOCK) "), pg_backend_pid()"
#define LEASE_SHARED_SQL                                                       \
	"SELECT pg_try_advisory_lock_shared(" STR(PG_LEASE_LOCK) "), "         \
	"pg_backend_pid()"
/* clang-format on */

typedef struct pg_store pg_store;

/* ============================================================ statements */

enum stmt_id {
	ST_HEAD,
	ST_FLOOR,
	ST_REV_INSERT,
	ST_REL_INSERT,
	ST_REL_LIVE,
	ST_REL_CLOSE,
	ST_REL_DROP_NEW,
	ST_REL_SET_CAVEAT,
	ST_SCHEMA_AT,
	ST_SCHEMA_CLOSE,
	ST_SCHEMA_PUT,
	ST_CHANGES_CREATED,
	ST_CHANGES_CREATED_AFTER,
	ST_CHANGES_DELETED,
	ST_CHANGES_DELETED_AFTER,
	ST_CHANGES_REVISION,
	ST_SET_METADATA,
	ST_READ_ONLY_GET,
	ST_DEPRECATIONS_LIST,
	ST_NONCE,
	ST_COUNT
};

#define ROW_COLUMNS                                                            \
	"resource_type, resource_id, relation, subject_type, subject_id, "     \
	"subject_relation, caveat_name, caveat_context, expiration_ms, "       \
	"created_rev"

#define KEY_WHERE                                                              \
	"resource_type = $1 AND resource_id = $2 AND relation = $3 AND "       \
	"subject_type = $4 AND subject_id = $5 AND subject_relation = $6"

#define KEY_ORDER                                                              \
	"resource_type, resource_id, relation, subject_type, subject_id, "     \
	"subject_relation"

/* The change feed pages by key: $2..$7 the last key of the previous page. */
#define CHANGES_AFTER                                                          \
	" AND (resource_type, resource_id, relation, subject_type, "           \
	"subject_id, subject_relation) > ($2, $3, $4, $5, $6, $7)"

#define CHANGES_DELETED_SQL(after)                                             \
	"SELECT " ROW_COLUMNS " FROM relationships AS r "                      \
	"WHERE deleted_rev > 0 AND deleted_rev = $1 AND NOT EXISTS ("          \
	"SELECT 1 FROM relationships AS n WHERE "                              \
	"n.resource_type = r.resource_type AND "                               \
	"n.resource_id = r.resource_id AND n.relation = r.relation AND "       \
	"n.subject_type = r.subject_type AND "                                 \
	"n.subject_id = r.subject_id AND "                                     \
	"n.subject_relation = r.subject_relation AND "                         \
	"n.created_rev = $1)" after " ORDER BY " KEY_ORDER                     \
	" LIMIT " STR(PAGE_ROWS)

static const char *const stmt_sql[ST_COUNT] = {
    /* The layout version rides along with the head: every request reads
     * the head first, so a migration under this handle is noticed at
     * once (see layout_seen). */
    [ST_HEAD] = "SELECT v.version, r.rev, r.timestamp_ms "
                "FROM (SELECT max(version) AS version FROM "
                "pemba_schema_version) AS v LEFT JOIN LATERAL (SELECT rev, "
                "timestamp_ms FROM revisions ORDER BY rev DESC LIMIT 1) "
                "AS r ON true",
    [ST_FLOOR] = "SELECT value FROM meta WHERE key = 'gc_floor'",
    [ST_REV_INSERT] = "INSERT INTO revisions(rev, timestamp_ms, nonce) "
                      "VALUES ($1, $2, $3)",
    /* CREATE and TOUCH both insert with ON CONFLICT DO NOTHING: a
     * conflict is a row count of 0, not an error, so the transaction
     * stays usable (an error would abort it in PostgreSQL). */
    [ST_REL_INSERT] =
        "INSERT INTO relationships(resource_type, resource_id, "
        "relation, subject_type, subject_id, subject_relation, "
        "deleted_rev, created_rev, caveat_name, caveat_context, "
        "expiration_ms) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, "
        "$10) ON CONFLICT DO NOTHING",
    [ST_REL_LIVE] = "SELECT created_rev, caveat_name, caveat_context, "
                    "expiration_ms FROM relationships WHERE " KEY_WHERE
                    " AND deleted_rev = 0",
    [ST_REL_CLOSE] =
        "UPDATE relationships SET deleted_rev = $7 WHERE " KEY_WHERE
        " AND deleted_rev = 0 AND created_rev < $7",
    [ST_REL_DROP_NEW] = "DELETE FROM relationships WHERE " KEY_WHERE
                        " AND deleted_rev = 0 AND created_rev = $7",
    [ST_REL_SET_CAVEAT] = "UPDATE relationships SET caveat_name = $7, "
                          "caveat_context = $8, expiration_ms = $9 "
                          "WHERE " KEY_WHERE " AND deleted_rev = 0",
    [ST_SCHEMA_AT] = "SELECT text, created_rev, deleted_rev "
                     "FROM schema_versions WHERE created_rev <= $1 "
                     "ORDER BY created_rev DESC LIMIT 1",
    [ST_SCHEMA_CLOSE] = "UPDATE schema_versions SET deleted_rev = $1 "
                        "WHERE deleted_rev IS NULL AND created_rev < $1",
    [ST_SCHEMA_PUT] = "INSERT INTO schema_versions(created_rev, "
                      "deleted_rev, text) VALUES ($1, NULL, $2) "
                      "ON CONFLICT (created_rev) DO UPDATE "
                      "SET text = excluded.text",
    [ST_CHANGES_CREATED] =
        "SELECT " ROW_COLUMNS " FROM relationships WHERE created_rev = $1 "
        "ORDER BY " KEY_ORDER " LIMIT " STR(PAGE_ROWS),
    [ST_CHANGES_CREATED_AFTER] =
        "SELECT " ROW_COLUMNS
        " FROM relationships WHERE created_rev = $1" CHANGES_AFTER
        " ORDER BY " KEY_ORDER " LIMIT " STR(PAGE_ROWS),
    [ST_CHANGES_DELETED] = CHANGES_DELETED_SQL(""),
    [ST_CHANGES_DELETED_AFTER] = CHANGES_DELETED_SQL(CHANGES_AFTER),
    [ST_CHANGES_REVISION] =
        "SELECT timestamp_ms, metadata, EXISTS (SELECT 1 FROM "
        "schema_versions WHERE created_rev = $1) FROM revisions "
        "WHERE rev = $1",
    [ST_SET_METADATA] = "UPDATE revisions SET metadata = $2 WHERE rev = $1",
    [ST_READ_ONLY_GET] = "SELECT value FROM settings WHERE key = 'read_only'",
    [ST_DEPRECATIONS_LIST] = "SELECT resource_type, relation, mode, set_rev, "
                             "set_ms FROM relation_deprecations "
                             "ORDER BY resource_type, relation",
    [ST_NONCE] = "SELECT nonce FROM revisions WHERE rev = $1",
};

/*
 * Query shapes, as in the SQLite engine: the six low bits say which
 * filter fields are set; the others whether a cursor is bound and whether
 * the live rows (inside a write transaction) are read.  Every shape takes
 * the same 15 parameters, typed at prepare time, so a shape may leave some
 * unused: $1..$6 filter, $7 revision, $8..$13 cursor, $14 limit, $15 the
 * time at or before which expiring rows are hidden.
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
};
#define NPARAMS 15
#define PARAM_FILTER(col) ((col) + 1)
#define PARAM_AT 7
#define PARAM_AFTER(col) ((col) + 8)
#define PARAM_LIMIT 14
#define PARAM_NOW 15
#define NOW_SHOW_EXPIRED INT64_MIN

enum { COL_RT, COL_RID, COL_REL, COL_ST, COL_SID, COL_SREL, NKEY };
static const char *const key_columns[NKEY] = {
    "resource_type", "resource_id", "relation",
    "subject_type",  "subject_id",  "subject_relation",
};
static const int forward_order[NKEY] = {COL_RT, COL_RID, COL_REL,
                                        COL_ST, COL_SID, COL_SREL};
static const int reverse_order[NKEY] = {COL_ST, COL_SID, COL_SREL,
                                        COL_RT, COL_REL, COL_RID};

/* Prepared statement slots: the fixed ones, then one per shape. */
/* Multi-row INSERTs of the batch writes: one slot per row count. */
#define BATCH_ROWS 64
#define SLOT_BATCH (ST_COUNT + SHAPE_COUNT) /* + rows - 1 */
#define SLOT_COUNT (SLOT_BATCH + BATCH_ROWS)

typedef struct pg_iter {
	store_iter base;
	pg_store *s;
	unsigned shape; /* without SHAPE_AFTER */
	bool live;
	pemba_revision at;
	int64_t now_ms;
	bool limited;
	size_t remaining; /* rows still to return when limited */
	char *filter[NKEY];
	char *after[NKEY]; /* the cursor: caller's, then the last row's */
	bool has_after;
	PGresult *page;
	int row, nrows;
	bool last_page; /* the current page is the last one */
	bool done;
	store_rel rel;
} pg_iter;

typedef struct pg_txn {
	store_txn base;
	pg_store *s;
	pemba_revision rev;
	uint64_t nonce; /* drawn at begin; primes the nonce cache at commit */
	/* The settings as read in the transaction's first round trip, under
	 * the write lock (see txn_start): store_get_read_only and
	 * store_list_deprecations answer from them until it ends. */
	bool read_only;
	PGresult *deprecations;
	struct pg_group *group; /* group commit: the group it belongs to */
	int savepoint;          /* and its savepoint there (m<N>) */
	/* CREATE INDEX statements to run at commit (store_txn_defer_indexes),
	 * or NULL; owned, freed at commit or abort. */
	char *deferred_indexes;
} pg_txn;

/* One pooled connection and what is prepared on it. */
typedef struct pg_conn {
	PGconn *pg;
	struct pg_pool *pool;
	unsigned layout_gen; /* pg_shared.layout_gen its statements fit */
	bool prepared[SLOT_COUNT];
	struct pg_conn *next; /* in the pool's idle list */
} pg_conn;

/* A bounded set of connections: at most `max` open, idle ones listed. */
typedef struct pg_pool {
	const char *name; /* "read" or "write": for messages */
	int max, open;
	pg_conn *idle;
	pthread_cond_t freed; /* a connection was returned or closed */
	struct pg_shared *shared;
	struct pg_replica *replica; /* NULL: a pool of the primary */
} pg_pool;

/* A read replica: its pool (as big as the read pool) and what is known
 * of it (under pg_shared.mu). */
typedef struct pg_replica {
	char *conn_uri; /* for libpq */
	char *shown;    /* without its password */
	pg_pool pool;
	pemba_revision head; /* replayed head last seen */
	int64_t checked_ms;  /* when head was read (monotonic) */
	int64_t down_until;  /* skipped until then (monotonic ms) */
} pg_replica;

/* The pools of one datastore in one process (see "connection pools"). */
typedef struct pg_shared {
	char *conn_uri;
	bool read_only;
	pid_t pid; /* the process whose pools they are (fork: see below) */
	int refs;
	pthread_mutex_t mu; /* everything below */
	pg_pool read, write;
	/* Bumped by a layout migration: a connection whose layout_gen
	 * differs drops its prepared statements when next borrowed. */
	unsigned layout_gen;
	/* The last failed connect or reset (monotonic ms, 0: none) and
	 * why: borrowers in the next RESET_BACKOFF_MS fail at once instead
	 * of each waiting for connect_timeout while PostgreSQL is
	 * unreachable. */
	int64_t reset_failed_ms;
	char reset_message[256];
	pg_replica replicas[MAX_REPLICAS];
	int nreplicas;
	unsigned next_replica; /* round robin */
	/* Group commit (see "group commit"): on unless the environment says
	 * PEMBA_PG_GROUP_COMMIT=0; the group accepting members (NULL: none),
	 * and one mutex and condition for every group of the datastore. */
	bool group_commit;
	pthread_mutex_t group_mu;
	pthread_cond_t group_cv;
	struct pg_group *group;
	struct pg_shared *next;
} pg_shared;

struct pg_store {
	store base;
	/* The borrowed connection (NULL: none) and its PGconn; see
	 * conn_borrow / conn_release. */
	pg_conn *held;
	PGconn *conn;
	pg_shared *shared;
	int pin; /* > 0: keep `held` (a statement or a GC run is going on) */
	/* A read transaction begun (read_depth > 0) whose BEGIN is not sent
	 * yet: the first statement in it picks the connection (see
	 * read_start), at route_rev if set (pg_check_revision). */
	bool read_pending;
	pemba_revision route_rev;
	char **replica_uris; /* copies of opts.replica_uris */
	PGconn *lease_conn;  /* store_attach / store_lock_exclusive */
	int lease_pid;       /* backend pid of lease_conn, 0 if none */
	char lease_role[16]; /* the lease to take again after an outage */
	bool lease_exclusive;
	bool lease_wanted;
	char *uri;      /* as given: for store_reopen */
	char *conn_uri; /* for libpq: without pemba's own parameters */
	struct pg_listener *listener; /* commits of other processes */
	bool read_only;               /* ?mode=ro */
	char *shown; /* the URI without its password: for messages */
	bool ready;  /* open finished: layout checks apply */
	store_options opts;
	int64_t gc_window_ms;
	int layout_version;
	bool layout_changed;
	int layout_now;
	bool checking_layout; /* in layout_moved: do not recurse */
	struct {
		pemba_revision rev;
		uint64_t nonce;
	} nonces[NONCE_CACHE];
	char datastore_id[64];
	pemba_revision cached_floor;
	int open_iters;
	bool in_txn;
	int read_depth;
	int64_t read_now_ms;
	pg_txn txn;
};

/* ================================================================ helpers */

static int64_t now_ms_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms_monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A decimal integer as libpq parameter text. */
typedef struct num_text {
	char s[24];
} num_text;

static num_text num(int64_t v)
{
	num_text t;
	snprintf(t.s, sizeof(t.s), "%" PRId64, v);
	return t;
}

static int64_t get_i64(const PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return 0;
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* libpq's messages end in a newline; messages here do not. */
static void copy_message(char *out, size_t n, const char *msg)
{
	snprintf(out, n, "%s", msg && *msg ? msg : "unknown error");
	size_t len = strlen(out);
	while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' '))
		out[--len] = '\0';
}

/* libpq prints notices (CREATE ... IF NOT EXISTS, COMMIT outside a
 * transaction) to stderr by default; library code never prints. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* ============================================================ parameters */

/*
 * pemba's own URI parameter, taken out before the URI goes to libpq (which
 * refuses parameters it does not know): `mode=ro` opens the datastore
 * read-only (every write is refused up front, and the session runs with
 * default_transaction_read_only), `mode=rw` is the default.
 */
static int parse_params(pg_store *s, pemba_error *err)
{
	const char *q = strchr(s->uri, '?');
	strbuf sb;
	strbuf_init(&sb);
	strbuf_append(&sb, s->uri, q ? (size_t)(q - s->uri) : strlen(s->uri));
	char sep = '?';
	for (const char *p = q ? q + 1 : NULL; p && *p;) {
		size_t len = strcspn(p, "&");
		if (len > 5 && strncmp(p, "mode=", 5) == 0) {
			if (len == 7 && strncmp(p + 5, "ro", 2) == 0) {
				s->read_only = true;
			} else if (!(len == 7 &&
			             strncmp(p + 5, "rw", 2) == 0)) {
				strbuf_free(&sb);
				return error_set(
				    err, PEMBA_EINVAL,
				    "invalid value for datastore URI parameter "
				    "`mode` in \"%s\": \"%.*s\" (accepted: "
				    "mode=ro, mode=rw)",
				    s->shown, (int)(len - 5), p + 5);
			}
		} else if (len > 0) {
			strbuf_putc(&sb, sep);
			strbuf_append(&sb, p, len);
			sep = '&';
		}
		p += len;
		if (*p == '&')
			p++;
	}
	s->conn_uri = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return PEMBA_OK;
}

/* Writes are refused up front on a handle opened with ?mode=ro. */
static int check_writable(pg_store *s, pemba_error *err)
{
	if (!s->read_only)
		return PEMBA_OK;
	return error_set(err, PEMBA_EREADONLY,
	                 "datastore %s was opened read-only (mode=ro): "
	                 "writes are refused",
	                 s->shown);
}

/* ================================================================ errors */

static int layout_changed_error(pg_store *s, pemba_error *err)
{
	if (s->layout_now < s->layout_version)
		return error_set(
		    err, PEMBA_EVERSION,
		    "datastore layout changed under this server (now %d, "
		    "expected %d): restart it after `pemba datastore migrate "
		    "head --datastore %s`",
		    s->layout_now, s->layout_version, s->shown);
	return error_set(err, PEMBA_EVERSION,
	                 "datastore layout changed under this server (now %d, "
	                 "expected %d): a newer pemba migrated it; run that "
	                 "version instead, or restart this one after `pemba "
	                 "datastore migrate down --to %d --datastore %s` with "
	                 "the newer binary",
	                 s->layout_now, s->layout_version, s->layout_version,
	                 s->shown);
}

static int layout_pending_error(pg_store *s, int version, pemba_error *err)
{
	return error_set(err, PEMBA_EVERSION,
	                 "datastore %s is at layout version %d but this "
	                 "binary needs version %d: run `pemba datastore "
	                 "migrate head --datastore %s`",
	                 s->shown, version, postgres_migration_count, s->shown);
}

static int check_layout(pg_store *s, pemba_error *err)
{
	if (s->layout_changed)
		return layout_changed_error(s, err);
	if (s->layout_version == postgres_migration_count)
		return PEMBA_OK;
	return layout_pending_error(s, s->layout_version, err);
}

static bool layout_seen(pg_store *s, int version)
{
	if (!s->ready || s->layout_changed)
		return s->layout_changed;
	if (version == s->layout_version)
		return false;
	s->layout_changed = true;
	s->layout_now = version;
	return true;
}

static int read_version(pg_store *s, int *version, bool *has_tables,
                        pemba_error *err);

/* After a failed statement outside a transaction: did the layout move?
 * (Inside a transaction PostgreSQL refuses every statement after an
 * error, so the question cannot be asked there; the next transaction's
 * head read asks it.) */
static bool layout_moved(pg_store *s)
{
	if (!s->ready || s->layout_changed)
		return s->layout_changed;
	if (s->in_txn || s->read_depth ||
	    (s->conn && PQstatus(s->conn) != CONNECTION_OK))
		return false;
	if (s->checking_layout)
		return false; /* the check itself failed */
	int version;
	bool tables;
	bool moved = false;
	s->checking_layout = true;
	if (read_version(s, &version, &tables, NULL) == PEMBA_OK)
		moved = layout_seen(s, version < 0 ? 0 : version);
	s->checking_layout = false;
	return moved;
}

static bool state_is(const char *state, const char *code)
{
	return state && strcmp(state, code) == 0;
}

/* Reports a failed statement (r may be NULL: the connection's error). */
static int db_error(pg_store *s, const PGresult *r, const char *what,
                    pemba_error *err)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	char message[512];
	const char *m = r ? PQresultErrorMessage(r) : NULL;
	copy_message(message, sizeof(message),
	             m && *m   ? m
	             : s->conn ? PQerrorMessage(s->conn)
	                       : "no connection");
	if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD ||
	    (state && strncmp(state, "08", 2) == 0) ||
	    state_is(state, "57P01") || state_is(state, "57P02") ||
	    state_is(state, "57P03"))
		return error_set(err, PEMBA_EIO,
		                 "datastore unavailable: %s: %s", what,
		                 message);
	if (state_is(state, "55P03"))
		return error_set(err, PEMBA_EIO,
		                 "datastore busy: %s: another writer held the "
		                 "datastore for more than %d ms",
		                 what, LOCK_TIMEOUT_MS);
	if (state_is(state, "57014"))
		return error_set(err, PEMBA_EIO,
		                 "datastore: %s: cancelled (statement timeout "
		                 "%d ms): %s",
		                 what, STATEMENT_TIMEOUT_MS, message);
	if (state_is(state, "25006"))
		return error_set(err, PEMBA_EREADONLY, "datastore: %s: %s",
		                 what, message);
	if (layout_moved(s))
		return layout_changed_error(s, err);
	return error_set(err, PEMBA_EIO, "datastore: %s: %s", what, message);
}

/* ============================================================ connection */

/* Session settings of every (re)opened connection. */
static int session_setup(PGconn *c, bool read_only, char *msg, size_t n)
{
	PQsetNoticeProcessor(c, ignore_notice, NULL);
	PGresult *r = PQexec(c, read_only ? SESSION_SETUP_SQL
	                            "; SET default_transaction_read_only = on"
	                                  : SESSION_SETUP_SQL);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		copy_message(msg, n, PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : -1;
}

/* A new connection to uri, giving up after timeout_s unless the URI
 * says otherwise, named `app` in pg_stat_activity unless the URI names
 * it; NULL with msg set on failure. */
static PGconn *connect_with(const char *uri, bool read_only,
                            const char *timeout_s, const char *app, char *msg,
                            size_t n)
{
	/* connect_timeout before dbname: a value in the URI wins. */
	const char *keys[] = {"connect_timeout", "dbname",
	                      "fallback_application_name", NULL};
	const char *vals[] = {timeout_s, uri, app, NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	if (!c) {
		snprintf(msg, n, "out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK ||
	    session_setup(c, read_only, msg, n) != 0) {
		if (PQstatus(c) != CONNECTION_OK)
			copy_message(msg, n, PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

static PGconn *connect_uri(const char *uri, bool read_only, char *msg, size_t n)
{
	return connect_with(uri, read_only, CONNECT_TIMEOUT_S, "pemba", msg, n);
}

static void lease_restore(pg_store *s);
static void rollback(pg_store *s);

/* ====================================================== connection pools */

/*
 * Connection pools.  Every handle of a process on one datastore (same
 * libpq URI and mode) shares two pools: reads borrow from the read pool,
 * write transactions, settings changes, GC and migrations from the write
 * pool.  A handle holds a connection only while it needs one: for a read
 * transaction (store_read_begin .. store_read_end), a write transaction,
 * or one statement outside both; a server with 64 workers thus holds as
 * many connections as requests are running, at most read max + write
 * max (plus the lease session and the commit listener, which are not
 * pooled).  A connection is opened when a borrower finds none idle and
 * the pool is below its maximum; otherwise the borrower waits up to
 * POOL_WAIT_MS, then fails with PEMBA_EIO "datastore busy".  Prepared
 * statements are per connection (pg_conn.prepared).  The pools live while
 * a handle on the datastore is open (reference-counted, like the commit
 * listener); the first handle's sizes are the pools' sizes.
 */
static pthread_mutex_t pools_mutex = PTHREAD_MUTEX_INITIALIZER;
static pg_shared *pools;

static void pool_init(pg_pool *p, pg_shared *sh, const char *name, int max)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->freed, &ca);
	pthread_condattr_destroy(&ca);
	p->name = name;
	p->max = max;
	p->shared = sh;
}

/* Closes every idle connection of p (all of them, once no handle is
 * left) and frees the pool's resources. */
static void pool_destroy(pg_pool *p)
{
	while (p->idle) {
		pg_conn *c = p->idle;
		p->idle = c->next;
		PQfinish(c->pg);
		free(c);
	}
	pthread_cond_destroy(&p->freed);
}

/* The pools of conn_uri (opened read-only or not) for this process, made
 * on first use with the given sizes (<= 0: the defaults).  Never NULL. */
static pg_shared *shared_acquire(const char *conn_uri, bool read_only,
                                 int read_max, int write_max,
                                 char *const *replicas, int nreplicas)
{
	pthread_mutex_lock(&pools_mutex);
	pg_shared *sh;
	/* A child process (fork) inherits the registry, and the parent's
	 * sockets with it: it never uses or closes its parent's pools. */
	for (sh = pools; sh; sh = sh->next)
		if (sh->pid == getpid() && sh->read_only == read_only &&
		    strcmp(sh->conn_uri, conn_uri) == 0)
			break;
	if (sh) {
		sh->refs++;
	} else {
		sh = xcalloc(1, sizeof(*sh));
		sh->conn_uri = xstrdup(conn_uri);
		sh->read_only = read_only;
		sh->pid = getpid();
		sh->refs = 1;
		pthread_mutex_init(&sh->mu, NULL);
		const char *gc = getenv("PEMBA_PG_GROUP_COMMIT");
		sh->group_commit =
		    !gc || !(strcmp(gc, "0") == 0 || strcmp(gc, "off") == 0);
		pthread_mutex_init(&sh->group_mu, NULL);
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&sh->group_cv, &ca);
		pthread_condattr_destroy(&ca);
		pool_init(&sh->read, sh, "read",
		          read_max > 0 ? read_max : DEFAULT_POOL_READ_MAX);
		pool_init(&sh->write, sh, "write",
		          write_max > 0 ? write_max : DEFAULT_POOL_WRITE_MAX);
		for (int i = 0; i < nreplicas && i < MAX_REPLICAS; i++) {
			pg_replica *r = &sh->replicas[sh->nreplicas++];
			r->conn_uri = xstrdup(replicas[i]);
			r->shown = store_display_uri(replicas[i]);
			pool_init(&r->pool, sh, "read replica", sh->read.max);
			r->pool.replica = r;
		}
		sh->next = pools;
		pools = sh;
	}
	pthread_mutex_unlock(&pools_mutex);
	return sh;
}

/* Drops a reference; the last one closes the pools' connections (every
 * handle has returned its own by then). */
static void shared_release(pg_shared *sh)
{
	if (!sh || sh->pid != getpid())
		return;
	pthread_mutex_lock(&pools_mutex);
	bool last = --sh->refs == 0;
	if (last)
		for (pg_shared **p = &pools; *p; p = &(*p)->next)
			if (*p == sh) {
				*p = sh->next;
				break;
			}
	pthread_mutex_unlock(&pools_mutex);
	if (!last)
		return;
	pool_destroy(&sh->read);
	pool_destroy(&sh->write);
	for (int i = 0; i < sh->nreplicas; i++) {
		pool_destroy(&sh->replicas[i].pool);
		free(sh->replicas[i].conn_uri);
		free(sh->replicas[i].shown);
	}
	pthread_mutex_destroy(&sh->mu);
	pthread_mutex_destroy(&sh->group_mu);
	pthread_cond_destroy(&sh->group_cv);
	free(sh->conn_uri);
	free(sh);
}

/* Marks every connection of the pools as prepared against an older
 * layout (after a migration here or seen from elsewhere). */
static void shared_layout_moved(pg_shared *sh)
{
	pthread_mutex_lock(&sh->mu);
	sh->layout_gen++;
	pthread_mutex_unlock(&sh->mu);
}

static int unavailable_error(pg_store *s, const char *msg, pemba_error *err)
{
	return error_set(
	    err,
	    !s->ready && s->opts.must_exist && strstr(msg, "does not exist")
	        ? PEMBA_ENOTFOUND
	        : PEMBA_EIO,
	    "datastore unavailable: cannot connect to %s: %s", s->shown, msg);
}

static int conn_ready(pg_store *s, pemba_error *err);

/*
 * Gives the handle a connection (s->held, s->conn) from the write pool
 * (`write`) or the read pool, unless it holds one already (then that one
 * is checked with conn_ready).  Waits up to POOL_WAIT_MS for a free one;
 * opens a new one while the pool is below its maximum.  PEMBA_EIO
 * "datastore busy" when none came free in time, "datastore unavailable"
 * when connecting failed.  The caller gives it back with conn_release.
 */
static int pool_borrow(pg_store *s, pg_pool *p, pemba_error *err)
{
	if (s->held)
		return conn_ready(s, err);
	pg_shared *sh = s->shared;
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += POOL_WAIT_MS / 1000;
	deadline.tv_nsec += (long)(POOL_WAIT_MS % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pg_conn *c = NULL;
	pthread_mutex_lock(&sh->mu);
	for (;;) {
		if (p->idle) {
			c = p->idle;
			p->idle = c->next;
			break;
		}
		if (p->open < p->max) {
			if (!p->replica && sh->reset_failed_ms &&
			    now_ms_monotonic() - sh->reset_failed_ms <
			        RESET_BACKOFF_MS) {
				char msg[256];
				snprintf(msg, sizeof(msg), "%s",
				         sh->reset_message);
				pthread_mutex_unlock(&sh->mu);
				return unavailable_error(s, msg, err);
			}
			p->open++;
			break;
		}
		if (p->replica) {
			/* A replica's pool is full: the primary serves. */
			pthread_mutex_unlock(&sh->mu);
			return error_set(err, PEMBA_EIO,
			                 "read replica %s: all %d connections "
			                 "in use",
			                 p->replica->shown, p->max);
		}
		if (pthread_cond_timedwait(&p->freed, &sh->mu, &deadline) ==
		    ETIMEDOUT) {
			int open = p->open;
			pthread_mutex_unlock(&sh->mu);
			return error_set(
			    err, PEMBA_EIO,
			    "datastore busy: no free connection in the %s "
			    "pool of %s (all %d in use for %d ms; raise "
			    "--datastore-conn-pool-%s-max-open)",
			    p->name, s->shown, open, POOL_WAIT_MS, p->name);
		}
	}
	unsigned gen = sh->layout_gen;
	pthread_mutex_unlock(&sh->mu);
	if (!c) {
		char msg[512];
		PGconn *pg =
		    p->replica ? connect_with(p->replica->conn_uri, true,
		                              REPLICA_CONNECT_TIMEOUT_S,
		                              "pemba-replica", msg, sizeof(msg))
		               : connect_uri(sh->conn_uri, sh->read_only, msg,
		                             sizeof(msg));
		pthread_mutex_lock(&sh->mu);
		if (!pg) {
			p->open--;
			if (!p->replica) {
				sh->reset_failed_ms = now_ms_monotonic();
				snprintf(sh->reset_message,
				         sizeof(sh->reset_message), "%s", msg);
			}
			pthread_cond_signal(&p->freed);
		} else if (!p->replica) {
			sh->reset_failed_ms = 0;
		}
		pthread_mutex_unlock(&sh->mu);
		if (!pg && p->replica)
			return error_set(err, PEMBA_EIO,
			                 "read replica unavailable: cannot "
			                 "connect to %s: %s",
			                 p->replica->shown, msg);
		if (!pg)
			return unavailable_error(s, msg, err);
		c = xcalloc(1, sizeof(*c));
		c->pg = pg;
		c->pool = p;
		c->layout_gen = gen;
	}
	s->held = c;
	s->conn = c->pg;
	if (c->layout_gen != gen) {
		/* Statements prepared against the old layout may not fit
		 * the new one: drop them all and prepare again on use. */
		if (PQstatus(c->pg) == CONNECTION_OK)
			PQclear(PQexec(c->pg, "DEALLOCATE ALL"));
		memset(c->prepared, 0, sizeof(c->prepared));
		c->layout_gen = gen;
	}
	return conn_ready(s, err);
}

/* pool_borrow from the primary's write pool (`write`) or read pool. */
static int conn_borrow(pg_store *s, bool write, pemba_error *err)
{
	return pool_borrow(s, write ? &s->shared->write : &s->shared->read,
	                   err);
}

/*
 * Gives the handle's connection back to its pool, unless the handle
 * still needs it: a read or write transaction of the handle, a pin (a
 * statement or GC run going on), or a transaction block still open on
 * the connection (BEGIN sent by exec_simple and not yet ended).  A
 * broken connection is closed rather than pooled.
 */
static void conn_release(pg_store *s)
{
	pg_conn *c = s->held;
	if (!c || s->pin || s->read_depth || s->in_txn)
		return;
	bool ok = PQstatus(c->pg) == CONNECTION_OK;
	if (ok && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
		return;
	s->held = NULL;
	s->conn = NULL;
	pg_pool *p = c->pool;
	pg_shared *sh = p->shared;
	if (!ok) {
		PQfinish(c->pg);
		free(c);
	}
	pthread_mutex_lock(&sh->mu);
	if (ok) {
		c->next = p->idle;
		p->idle = c;
	} else {
		p->open--;
	}
	pthread_cond_signal(&p->freed);
	pthread_mutex_unlock(&sh->mu);
}

/* Closes the handle's connection instead of pooling it (its state is
 * unknown: a transaction block that could not be ended). */
static void conn_discard(pg_store *s)
{
	pg_conn *c = s->held;
	if (!c)
		return;
	s->held = NULL;
	s->conn = NULL;
	PQfinish(c->pg);
	pg_shared *sh = c->pool->shared;
	pthread_mutex_lock(&sh->mu);
	c->pool->open--;
	pthread_cond_signal(&c->pool->freed);
	pthread_mutex_unlock(&sh->mu);
	free(c);
}

/*
 * Makes sure the handle's (held) connection is usable: a broken one is
 * reset here (its prepared statements are gone with it).  A connection
 * lost inside a transaction is not reset: the transaction is gone, and
 * the caller must end it (commit fails, abort succeeds) first.
 */
static int conn_ready(pg_store *s, pemba_error *err)
{
	if (!s->held)
		return conn_borrow(s, false, err);
	if (PQstatus(s->conn) == CONNECTION_OK)
		return PEMBA_OK;
	if (s->held->pool->replica)
		return error_set(err, PEMBA_EIO,
		                 "read replica unavailable: the connection to "
		                 "%s was lost",
		                 s->held->pool->replica->shown);
	if (s->in_txn || s->read_depth)
		return error_set(err, PEMBA_EIO,
		                 "datastore unavailable: the connection to %s "
		                 "was lost during a transaction",
		                 s->shown);
	pg_shared *sh = s->shared;
	char msg[512];
	pthread_mutex_lock(&sh->mu);
	bool backoff =
	    sh->reset_failed_ms &&
	    now_ms_monotonic() - sh->reset_failed_ms < RESET_BACKOFF_MS;
	snprintf(msg, sizeof(msg), "%s", sh->reset_message);
	pthread_mutex_unlock(&sh->mu);
	if (backoff)
		return unavailable_error(s, msg, err);
	PQreset(s->conn);
	memset(s->held->prepared, 0, sizeof(s->held->prepared));
	if (PQstatus(s->conn) != CONNECTION_OK) {
		copy_message(msg, sizeof(msg), PQerrorMessage(s->conn));
		pthread_mutex_lock(&sh->mu);
		sh->reset_failed_ms = now_ms_monotonic();
		snprintf(sh->reset_message, sizeof(sh->reset_message), "%s",
		         msg);
		pthread_mutex_unlock(&sh->mu);
		return unavailable_error(s, msg, err);
	}
	pthread_mutex_lock(&sh->mu);
	sh->reset_failed_ms = 0;
	pthread_mutex_unlock(&sh->mu);
	if (session_setup(s->conn, sh->read_only, msg, sizeof(msg)) != 0)
		return error_set(err, PEMBA_EIO,
		                 "datastore unavailable: setting up the "
		                 "connection to %s: %s",
		                 s->shown, msg);
	lease_restore(s);
	return PEMBA_OK;
}

static bool result_ok(const PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static char *build_query_sql(unsigned shape);
static char *build_batch_sql(int rows);

/* Prepares statement slot `slot` on the connection if it is not yet. */
static PGresult *prepare_slot(pg_store *s, int slot)
{
	char name[16];
	snprintf(name, sizeof(name), "p%d", slot);
	PGresult *r;
	if (slot < ST_COUNT) {
		r = PQprepare(s->conn, name, stmt_sql[slot], 0, NULL);
	} else if (slot >= SLOT_BATCH) {
		char *sql = build_batch_sql(slot - SLOT_BATCH + 1);
		r = PQprepare(s->conn, name, sql, 0, NULL);
		free(sql);
	} else {
		static const Oid types[NPARAMS] = {
		    OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT,
		    OID_TEXT, OID_INT8, OID_TEXT, OID_TEXT, OID_TEXT,
		    OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8, OID_INT8};
		char *sql = build_query_sql((unsigned)(slot - ST_COUNT));
		r = PQprepare(s->conn, name, sql, NPARAMS, types);
		free(sql);
	}
	if (result_ok(r)) {
		PQclear(r);
		s->held->prepared[slot] = true;
		return NULL;
	}
	return r;
}

/*
 * Runs prepared slot `slot` (or, with slot < 0, the one-off `sql`) with
 * text parameters (NULL entries are SQL NULL).  Returns the result (the
 * caller PQclears it), or NULL with err set.  Outside a transaction, a
 * statement that failed because the connection dropped is retried once on
 * a reset connection.
 */
static PGresult *run_on(pg_store *s, int slot, const char *sql, int n,
                        const char *const *vals, const char *what,
                        pemba_error *err)
{
	for (int attempt = 0;; attempt++) {
		if (conn_ready(s, err))
			return NULL;
		/* Only a statement sent outside any transaction block may be
		 * sent again: inside one (a settings change, GC, a migration
		 * step, also COMMIT) the block died with the connection. */
		bool idle = PQtransactionStatus(s->conn) == PQTRANS_IDLE;
		PGresult *r = NULL;
		if (slot >= 0 && !s->held->prepared[slot])
			r = prepare_slot(s, slot);
		if (!r) {
			char name[16];
			snprintf(name, sizeof(name), "p%d", slot);
			/* PQexec for parameterless SQL: it may hold several
			 * statements (BEGIN; SELECT pg_advisory_xact_lock). */
			if (slot >= 0)
				r = PQexecPrepared(s->conn, name, n, vals, NULL,
				                   NULL, 0);
			else if (n == 0)
				r = PQexec(s->conn, sql);
			else
				r = PQexecParams(s->conn, sql, n, NULL, vals,
				                 NULL, NULL, 0);
			if (result_ok(r))
				return r;
		}
		if (PQstatus(s->conn) == CONNECTION_BAD && attempt == 0 &&
		    idle && !s->in_txn && !s->read_depth) {
			PQclear(r);
			continue;
		}
		db_error(s, r, what, err);
		PQclear(r);
		return NULL;
	}
}

/*
 * run_on() on the handle's connection, borrowed from the read pool for
 * this one statement when the handle holds none (and given back after
 * it, unless the statement left a transaction block open: see
 * conn_release).
 */
static int read_start(pg_store *s, pemba_error *err);
static void replica_failed(pg_store *s, struct pg_replica *r, const char *why);

static PGresult *run(pg_store *s, int slot, const char *sql, int n,
                     const char *const *vals, const char *what,
                     pemba_error *err)
{
	if (s->read_pending && !s->in_txn && read_start(s, err))
		return NULL;
	s->pin++;
	PGresult *r = run_on(s, slot, sql, n, vals, what, err);
	s->pin--;
	/* A replica that fails in the middle of a read transaction fails
	 * this request; the next ones skip it for a while. */
	if (!r && s->held && s->held->pool->replica)
		replica_failed(s, s->held->pool->replica,
		               err ? err->message : what);
	conn_release(s);
	return r;
}

/* run() for statements whose result is not needed; *changes_out (may be
 * NULL) gets the number of rows changed. */
static int run_cmd(pg_store *s, int slot, const char *sql, int n,
                   const char *const *vals, const char *what,
                   uint64_t *changes_out, pemba_error *err)
{
	PGresult *r = run(s, slot, sql, n, vals, what, err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	if (changes_out)
		*changes_out += strtoull(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return PEMBA_OK;
}

/* A parameterless statement (transaction control and the like). */
static int exec_simple(pg_store *s, const char *sql, pemba_error *err)
{
	return run_cmd(s, -1, sql, 0, NULL, sql, NULL, err);
}

/* ============================================================ revisions */

/* Newest committed revision and its timestamp; reads the layout version
 * with it (see ST_HEAD).  Inside this handle's write transaction, the
 * revision before the transaction's own. */
static int read_head(pg_store *s, pemba_revision *head, int64_t *ts,
                     pemba_error *err)
{
	*head = 0;
	if (ts)
		*ts = 0;
	if (s->in_txn) {
		*head = s->txn.rev - 1;
		return PEMBA_OK;
	}
	PGresult *r =
	    run(s, ST_HEAD, NULL, 0, NULL, "reading the head revision", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	int version = (int)get_i64(r, 0, 0);
	*head = (pemba_revision)get_i64(r, 0, 1);
	if (ts)
		*ts = get_i64(r, 0, 2);
	PQclear(r);
	if (layout_seen(s, version)) {
		*head = 0;
		return layout_changed_error(s, err);
	}
	return PEMBA_OK;
}

static int read_floor(pg_store *s, pemba_revision *floor, pemba_error *err)
{
	PGresult *r =
	    run(s, ST_FLOOR, NULL, 0, NULL, "reading the GC floor", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	*floor = PQntuples(r) ? (pemba_revision)get_i64(r, 0, 0) : 0;
	PQclear(r);
	if (*floor > s->cached_floor)
		s->cached_floor = *floor;
	return PEMBA_OK;
}

static int pg_head_revision(store *base, pemba_revision *out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	*out = 0;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if (!s->read_pending || s->shared->nreplicas == 0)
		return read_head(s, out, NULL, err);
	/* The head read that starts a read transaction (a check at the
	 * head): with replicas, read it on the primary by itself and route
	 * the transaction by it, so the request's reads can still go to a
	 * replica that has replayed the head.  Without replicas it is the
	 * transaction's first statement (one round trip less). */
	int depth = s->read_depth;
	s->read_pending = false;
	s->read_depth = 0;
	rc = read_head(s, out, NULL, err);
	s->read_depth = depth;
	s->read_pending = true;
	if (!rc)
		s->route_rev = *out;
	return rc;
}

static int pg_check_revision(store *base, pemba_revision rev, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	pemba_revision head, floor;
	int rc = check_layout(s, err);
	if (rc || rev == PEMBA_REVISION_HEAD)
		return rc;
	/* The first check in a read transaction picks its connection: a
	 * replica that has replayed rev may serve it (read replicas). */
	if (s->read_pending)
		s->route_rev = rev;
	rc = read_head(s, &head, NULL, err);
	if (!rc)
		rc = read_floor(s, &floor, err);
	if (s->read_pending)
		s->route_rev = 0;
	if (rc)
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

static int pg_revision_nonce(store *base, pemba_revision rev,
                             uint64_t *nonce_out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	*nonce_out = 0;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	size_t slot = (size_t)(rev % NONCE_CACHE);
	if (s->nonces[slot].rev == rev) {
		*nonce_out = s->nonces[slot].nonce;
		return PEMBA_OK;
	}
	num_text r0 = num((int64_t)rev);
	const char *v[1] = {r0.s};
	PGresult *r =
	    run(s, ST_NONCE, NULL, 1, v, "reading a revision nonce", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	uint64_t nonce = PQntuples(r) ? (uint64_t)get_i64(r, 0, 0) : 0;
	PQclear(r);
	if (nonce != 0 && !(s->in_txn && rev >= s->txn.rev)) {
		s->nonces[slot].rev = rev;
		s->nonces[slot].nonce = nonce;
	}
	*nonce_out = nonce;
	return PEMBA_OK;
}

/* ================================================================ queries */

static bool shape_reverse(unsigned shape)
{
	if (!(shape & (SHAPE_AFTER - 1)))
		return false;
	if (!(shape & SHAPE_RESOURCE_TYPE))
		return true;
	return (shape & SHAPE_SUBJECT_TYPE) && (shape & SHAPE_SUBJECT_ID) &&
	       !(shape & SHAPE_RESOURCE_ID);
}

static bool shape_has(unsigned shape, int col)
{
	return shape & (1u << col);
}

/*
 * The SQL of a query shape.  Rows come in the order of the index the
 * shape reads (forward: the primary key; reverse: relationships_by_subject);
 * the cursor is one row-value comparison over all six key columns in that
 * order, which PostgreSQL turns into an index range.
 */
static char *build_query_sql(unsigned shape)
{
	bool reverse = shape_reverse(shape);
	const int *order = reverse ? reverse_order : forward_order;
	strbuf sb;
	strbuf_init(&sb);
	strbuf_puts(&sb, "SELECT " ROW_COLUMNS " FROM relationships WHERE ");
	for (int i = 0; i < NKEY; i++)
		if (shape_has(shape, order[i]))
			strbuf_printf(&sb, "%s = $%d AND ",
			              key_columns[order[i]],
			              PARAM_FILTER(order[i]));
	if (shape & SHAPE_LIVE)
		strbuf_puts(&sb, "deleted_rev = 0");
	else
		strbuf_printf(&sb,
		              "created_rev <= $%d AND (deleted_rev = 0 OR "
		              "deleted_rev > $%d)",
		              PARAM_AT, PARAM_AT);
	strbuf_printf(&sb,
	              " AND (expiration_ms IS NULL OR expiration_ms > $%d)",
	              PARAM_NOW);
	if (shape & SHAPE_AFTER) {
		strbuf_puts(&sb, " AND (");
		for (int i = 0; i < NKEY; i++)
			strbuf_printf(&sb, "%s%s", i ? ", " : "",
			              key_columns[order[i]]);
		strbuf_puts(&sb, ") > (");
		for (int i = 0; i < NKEY; i++)
			strbuf_printf(&sb, "%s$%d", i ? ", " : "",
			              PARAM_AFTER(order[i]));
		strbuf_puts(&sb, ")");
	}
	const char *sep = " ORDER BY ";
	for (int i = 0; i < NKEY; i++) {
		strbuf_printf(&sb, "%s%s", sep, key_columns[order[i]]);
		sep = ", ";
	}
	strbuf_printf(&sb, " LIMIT $%d", PARAM_LIMIT);
	char *sql = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return sql;
}

static const char *normalize_subject_relation(const char *r)
{
	return (r && strcmp(r, "...") == 0) ? "" : r;
}

static void iter_free_page(pg_iter *it)
{
	PQclear(it->page);
	it->page = NULL;
	it->row = it->nrows = 0;
}

/* Sets the cursor to the key of row `row` of the current page. */
static void iter_set_after_row(pg_iter *it, int row)
{
	for (int c = 0; c < NKEY; c++) {
		free(it->after[c]);
		it->after[c] = xstrdup(PQgetvalue(it->page, row, c));
	}
	it->has_after = true;
}

/* Fetches the next page of rows. */
static int iter_fetch(pg_iter *it, pemba_error *err)
{
	pg_store *s = it->s;
	size_t want = PAGE_ROWS;
	if (it->limited && it->remaining < want)
		want = it->remaining;
	const char *v[NPARAMS] = {0};
	for (int c = 0; c < NKEY; c++)
		v[PARAM_FILTER(c) - 1] = it->filter[c];
	num_text at = num((int64_t)it->at), lim = num((int64_t)want),
	         now = num(it->now_ms);
	v[PARAM_AT - 1] = at.s;
	if (it->has_after)
		for (int c = 0; c < NKEY; c++)
			v[PARAM_AFTER(c) - 1] = it->after[c];
	v[PARAM_LIMIT - 1] = lim.s;
	v[PARAM_NOW - 1] = now.s;
	unsigned shape = it->shape | (it->has_after ? SHAPE_AFTER : 0);
	iter_free_page(it);
	it->page = run(s, ST_COUNT + (int)shape, NULL, NPARAMS, v,
	               "reading relationships", err);
	if (!it->page)
		return err ? err->code : PEMBA_EIO;
	it->nrows = PQntuples(it->page);
	it->row = 0;
	it->last_page = (size_t)it->nrows < want;
	return PEMBA_OK;
}

/*
 * Starts a query (store_query, store_txn_query, delete-by-filter).  `live`
 * reads the live rows, else the rows visible at `at`.  limit 0 =
 * unlimited.  Nothing is read until the first store_iter_next.
 */
static int query_start(pg_store *s, const store_filter *f, bool live,
                       pemba_revision at, const store_rel *after, size_t limit,
                       int64_t now_ms, pg_iter **out, pemba_error *err)
{
	const char *v[NKEY] = {
	    f->resource_type, f->resource_id, f->relation,
	    f->subject_type,  f->subject_id,  f->subject_relation,
	};
	v[COL_SREL] = normalize_subject_relation(v[COL_SREL]);
	pg_iter *it = xcalloc(1, sizeof(*it));
	it->base.ops = &store_postgres_ops;
	it->s = s;
	it->live = live;
	it->at = at;
	it->now_ms = now_ms;
	it->limited = limit > 0;
	it->remaining = limit;
	for (int c = 0; c < NKEY; c++) {
		if (!v[c] || (!*v[c] && c != COL_SREL))
			continue;
		it->shape |= 1u << c;
		it->filter[c] = xstrdup(v[c]);
	}
	if (live)
		it->shape |= SHAPE_LIVE;
	if (after) {
		const char *a[NKEY] = {
		    after->resource_type,
		    after->resource_id,
		    after->relation,
		    after->subject_type,
		    after->subject_id,
		    normalize_subject_relation(after->subject_relation),
		};
		for (int c = 0; c < NKEY; c++)
			it->after[c] = xstrdup(a[c] ? a[c] : "");
		it->has_after = true;
	}
	s->open_iters++;
	*out = it;
	return PEMBA_OK;
}

static int64_t request_now(pg_store *s)
{
	return s->read_depth > 0 && !s->in_txn ? s->read_now_ms : now_ms_wall();
}

/* A read transaction not started yet (its BEGIN waits for the first
 * statement) whose first statement reads at revision `at`: route it by
 * `at`, as pg_check_revision would (read replicas).  With the query cache
 * a request's revision check and head read run outside its transaction,
 * so the first query is the first that knows the revision. */
static void route_by(pg_store *s, pemba_revision at)
{
	if (s->read_pending && s->route_rev == 0 && at != PEMBA_REVISION_HEAD)
		s->route_rev = at;
}

static int pg_query(store *base, pemba_revision at, const store_filter *f,
                    const store_rel *after, size_t limit, store_iter **out,
                    pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	route_by(s, at);
	if (at == PEMBA_REVISION_HEAD) {
		if ((rc = read_head(s, &at, NULL, err)))
			return rc;
	} else if (at < s->cached_floor) {
		return error_set(err, PEMBA_EREVISION,
		                 "revision %" PRIu64 " has been garbage-"
		                 "collected (oldest available is %" PRIu64 ")",
		                 at, s->cached_floor);
	}
	pg_iter *it;
	rc = query_start(s, f, false, at, after, limit, request_now(s), &it,
	                 err);
	if (rc)
		return rc;
	*out = &it->base;
	return PEMBA_OK;
}

static int pg_scan(store *base, pemba_revision at, const store_rel *after,
                   size_t limit, store_iter **out, pemba_error *err)
{
	static const store_filter everything;
	return pg_query(base, at, &everything, after, limit, out, err);
}

/* Fills r from row `row` of a result selecting ROW_COLUMNS.  The strings
 * stay valid as long as the result. */
static void row_decode(const PGresult *res, int row, store_rel *r)
{
	r->resource_type = PQgetvalue(res, row, 0);
	r->resource_id = PQgetvalue(res, row, 1);
	r->relation = PQgetvalue(res, row, 2);
	r->subject_type = PQgetvalue(res, row, 3);
	r->subject_id = PQgetvalue(res, row, 4);
	r->subject_relation = PQgetvalue(res, row, 5);
	r->caveat_name = PQgetvalue(res, row, 6);
	r->caveat_context = PQgetvalue(res, row, 7); /* "" for NULL */
	r->expiration_ms = get_i64(res, row, 8);
	r->created_rev = (pemba_revision)get_i64(res, row, 9);
}

static int pg_iter_next(store_iter *base, const store_rel **row,
                        pemba_error *err)
{
	pg_iter *it = (pg_iter *)base;
	*row = NULL;
	if (it->done)
		return 0;
	if (it->limited && it->remaining == 0) {
		it->done = true;
		return 0;
	}
	if (!it->page || it->row >= it->nrows) {
		if (it->page) {
			if (it->last_page || it->nrows == 0) {
				it->done = true;
				return 0;
			}
			iter_set_after_row(it, it->nrows - 1);
		}
		int rc = iter_fetch(it, err);
		if (rc) {
			it->done = true;
			return rc;
		}
		if (it->nrows == 0) {
			it->done = true;
			return 0;
		}
	}
	row_decode(it->page, it->row++, &it->rel);
	if (it->limited)
		it->remaining--;
	*row = &it->rel;
	return 1;
}

static void pg_iter_close(store_iter *base)
{
	pg_iter *it = (pg_iter *)base;
	if (!it)
		return;
	iter_free_page(it);
	for (int c = 0; c < NKEY; c++) {
		free(it->filter[c]);
		free(it->after[c]);
	}
	it->s->open_iters--;
	free(it);
}

static int pg_read_schema(store *base, pemba_revision at, char **text_out,
                          pemba_revision *written_rev_out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	*text_out = NULL;
	if (written_rev_out)
		*written_rev_out = 0;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	route_by(s, at);
	if (at == PEMBA_REVISION_HEAD && (rc = read_head(s, &at, NULL, err)))
		return rc;
	num_text a = num((int64_t)at);
	const char *v[1] = {a.s};
	PGresult *r =
	    run(s, ST_SCHEMA_AT, NULL, 1, v, "reading the schema", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	if (PQntuples(r) == 1 &&
	    (PQgetisnull(r, 0, 2) || (pemba_revision)get_i64(r, 0, 2) > at)) {
		*text_out = xstrdup(PQgetvalue(r, 0, 0));
		if (written_rev_out)
			*written_rev_out = (pemba_revision)get_i64(r, 0, 1);
		rc = PEMBA_OK;
	} else {
		rc = error_set(err, PEMBA_ENOTFOUND,
		               "no schema has been written (at revision "
		               "%" PRIu64 ")",
		               at);
	}
	PQclear(r);
	return rc;
}

/* ==================================================== read transactions */

/* ========================================================= read replicas */

/*
 * Read replicas.  A read transaction's BEGIN is sent with its first
 * statement (read_start), when the revision it reads at may be known:
 * pg_check_revision(R) sets route_rev.  Then a replica whose replayed
 * head (cached; read again, in the BEGIN's own round trip, when it is
 * below R and was not read in the last REPLICA_RECHECK_MS) is at least
 * R serves the whole transaction; otherwise the primary does.  Head reads
 * (no route_rev), reads outside a transaction, writes, GC, settings,
 * migrations and leases always use the primary.  A replica that fails
 * (cannot connect, its statement fails) is skipped for REPLICA_DOWN_MS;
 * the read goes to the primary, so the caller never sees the failure
 * (unless the replica dies between two statements of one transaction:
 * that one request fails, the next goes elsewhere).
 */

/* Diagnostics through opts.log (NULL: none). */
static void store_log(pg_store *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void store_log(pg_store *s, int level, const char *fmt, ...)
{
	if (!s->opts.log)
		return;
	char line[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	s->opts.log(s->opts.log_ctx, level, line);
}

/* Marks replica r down for REPLICA_DOWN_MS and closes its idle
 * connections (probably as dead as the one that failed). */
static void replica_failed(pg_store *s, pg_replica *r, const char *why)
{
	pg_shared *sh = s->shared;
	pg_conn *idle;
	pthread_mutex_lock(&sh->mu);
	bool was_up = r->down_until <= now_ms_monotonic();
	r->down_until = now_ms_monotonic() + REPLICA_DOWN_MS;
	idle = r->pool.idle;
	r->pool.idle = NULL;
	for (pg_conn *c = idle; c; c = c->next)
		r->pool.open--;
	pthread_mutex_unlock(&sh->mu);
	while (idle) {
		pg_conn *c = idle;
		idle = c->next;
		PQfinish(c->pg);
		free(c);
	}
	if (was_up)
		store_log(s, 1,
		          "read replica %s: skipped for %d ms, reads go to the "
		          "primary: %s",
		          r->shown, REPLICA_DOWN_MS, why);
}

/* Gives back (or, in an unknown state, closes) the connection of a read
 * transaction that did not start. */
static void read_start_undo(pg_store *s)
{
	int depth = s->read_depth;
	s->read_depth = 0;
	rollback(s);
	conn_discard(s);
	s->read_depth = depth;
}

/* The BEGIN of a read transaction, with the layout version and the
 * replayed head in the same round trip. */
#define READ_BEGIN_SQL                                                         \
	"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT (SELECT "    \
	"max(version) FROM pemba_schema_version), (SELECT coalesce(max(rev), " \
	"0) FROM revisions)"

/* Tries to start the pending read transaction on a replica that has
 * replayed `want`; false (nothing held) when none can serve it. */
static bool replica_read_start(pg_store *s, pemba_revision want)
{
	pg_shared *sh = s->shared;
	int64_t now = now_ms_monotonic();
	pg_replica *pick = NULL;
	pemba_revision seen = 0;
	pthread_mutex_lock(&sh->mu);
	for (int k = 0; k < sh->nreplicas && !pick; k++) {
		pg_replica *r = &sh->replicas[(sh->next_replica + (unsigned)k) %
		                              (unsigned)sh->nreplicas];
		if (r->down_until > now)
			continue;
		if (r->head < want &&
		    now - r->checked_ms < REPLICA_RECHECK_MS) {
			seen = r->head;
			continue;
		}
		pick = r;
	}
	sh->next_replica++;
	pthread_mutex_unlock(&sh->mu);
	if (!pick) {
		store_log(s, 3,
		          "read at revision %" PRIu64 ": primary (no replica "
		          "up with it replayed; last seen head %" PRIu64 ")",
		          want, seen);
		return false;
	}
	pemba_error e = {0};
	PGresult *r = NULL;
	if (pool_borrow(s, &pick->pool, &e) == PEMBA_OK)
		r = run_on(s, -1, READ_BEGIN_SQL, 0, NULL,
		           "starting a read transaction", &e);
	if (!r) {
		read_start_undo(s);
		replica_failed(s, pick, e.message);
		return false;
	}
	int version = (int)get_i64(r, 0, 0);
	pemba_revision head = (pemba_revision)get_i64(r, 0, 1);
	PQclear(r);
	pthread_mutex_lock(&sh->mu);
	pick->head = head;
	pick->checked_ms = now;
	pthread_mutex_unlock(&sh->mu);
	if (version != s->layout_version || head < want) {
		read_start_undo(s);
		store_log(s, 3,
		          "read at revision %" PRIu64 ": primary (replica %s "
		          "has replayed %" PRIu64 ", layout %d)",
		          want, pick->shown, head, version);
		return false;
	}
	store_log(s, 3,
	          "read at revision %" PRIu64 ": replica %s (replayed %" PRIu64
	          ")",
	          want, pick->shown, head);
	return true;
}

/*
 * Sends the BEGIN of the handle's pending read transaction (see read
 * replicas) and holds its connection until pg_read_end.  On failure
 * nothing is held and the transaction is still pending (a later
 * statement tries again).
 */
static int read_start(pg_store *s, pemba_error *err)
{
	s->read_pending = false;
	if (s->route_rev > 0 && s->shared->nreplicas > 0 &&
	    replica_read_start(s, s->route_rev))
		return PEMBA_OK;
	PGresult *r = NULL;
	int rc = conn_borrow(s, false, err);
	if (!rc) {
		r = run_on(s, -1, READ_BEGIN_SQL, 0, NULL,
		           "starting a read transaction", err);
		if (!r)
			rc = err ? err->code : PEMBA_EIO;
	}
	if (rc) {
		read_start_undo(s);
		s->read_pending = true;
		return rc;
	}
	int version = (int)get_i64(r, 0, 0);
	PQclear(r);
	if (layout_seen(s, version)) {
		read_start_undo(s);
		s->read_pending = true;
		return layout_changed_error(s, err);
	}
	return PEMBA_OK;
}

/*
 * One REPEATABLE READ transaction: every statement of the request reads
 * one snapshot (reads are by revision anyway; the snapshot makes the head
 * and the GC floor stable while a request runs).  Nothing is sent yet:
 * the first statement sends the BEGIN, on the connection it picks (see
 * read replicas), with the layout version in the same round trip.
 */
static int pg_read_begin(store *base, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	if (s->in_txn)
		return PEMBA_OK;
	if (s->read_depth > 0) {
		s->read_depth++;
		return PEMBA_OK;
	}
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	s->read_now_ms = now_ms_wall();
	s->read_depth = 1;
	s->read_pending = true;
	s->route_rev = 0;
	return PEMBA_OK;
}

static void pg_read_end(store *base)
{
	pg_store *s = (pg_store *)base;
	if (s->in_txn || s->read_depth == 0)
		return;
	if (--s->read_depth > 0)
		return;
	s->read_pending = false;
	s->route_rev = 0;
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
		PQclear(PQexec(s->conn, "COMMIT"));
	conn_release(s);
}

/* ====================================================== wait for commits */

static struct pg_listener *listener_acquire(const char *conn_uri);

/* Starts hearing other processes' commits (see commit listeners). */
static void listen_commits(pg_store *s)
{
	if (!s->listener)
		s->listener = listener_acquire(s->conn_uri);
}

static int pg_wait_revision(store *base, pemba_revision after, int timeout_ms,
                            pemba_revision *head_out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	listen_commits(s);
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
		uint64_t seen = store_commit_generation();
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
		store_commit_wait(seen, (int)slice);
	}
}

/* ========================================================== change feed */

/* Streams the versions created (or ended) in rev as `kind` items, a page
 * at a time. */
static int changes_rows(pg_store *s, int first, int next, pemba_revision rev,
                        store_change_kind kind, store_change_fn fn, void *ctx,
                        pemba_error *err)
{
	num_text r0 = num((int64_t)rev);
	char *key[NKEY] = {0};
	int rc = PEMBA_OK;
	bool more = true;
	while (more && !rc) {
		const char *v[7] = {r0.s};
		for (int c = 0; c < NKEY; c++)
			v[c + 1] = key[c];
		PGresult *r = run(s, key[0] ? next : first, NULL,
		                  key[0] ? 7 : 1, v, "reading changes", err);
		if (!r) {
			rc = err ? err->code : PEMBA_EIO;
			break;
		}
		int n = PQntuples(r);
		store_rel rel;
		store_change c = {.kind = kind, .rev = rev, .rel = &rel};
		for (int i = 0; i < n && !rc; i++) {
			row_decode(r, i, &rel);
			rc = fn(ctx, &c);
		}
		more = n == PAGE_ROWS;
		if (more)
			for (int c2 = 0; c2 < NKEY; c2++) {
				free(key[c2]);
				key[c2] = xstrdup(PQgetvalue(r, n - 1, c2));
			}
		PQclear(r);
	}
	for (int c = 0; c < NKEY; c++)
		free(key[c]);
	return rc;
}

static int changes_in(pg_store *s, pemba_revision after, pemba_revision upto,
                      store_change_fn fn, void *ctx, pemba_error *err)
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
	if (after < floor)
		return error_set(err, PEMBA_EREVISION,
		                 "revision %" PRIu64 " has been garbage-"
		                 "collected: it is older than the GC window "
		                 "of %" PRId64 " s (oldest available is "
		                 "%" PRIu64 ")",
		                 after, s->gc_window_ms / 1000, floor);
	for (pemba_revision rev = after + 1; rev <= upto; rev++) {
		if ((rc = changes_rows(s, ST_CHANGES_CREATED,
		                       ST_CHANGES_CREATED_AFTER, rev,
		                       STORE_CHANGE_TOUCH, fn, ctx, err)) ||
		    (rc = changes_rows(s, ST_CHANGES_DELETED,
		                       ST_CHANGES_DELETED_AFTER, rev,
		                       STORE_CHANGE_DELETE, fn, ctx, err)))
			return rc;
		num_text r0 = num((int64_t)rev);
		const char *v[1] = {r0.s};
		PGresult *r = run(s, ST_CHANGES_REVISION, NULL, 1, v,
		                  "reading changes", err);
		if (!r)
			return err ? err->code : PEMBA_EIO;
		store_change c = {.kind = STORE_CHANGE_REVISION, .rev = rev};
		if (PQntuples(r) == 1) {
			c.timestamp_ms = get_i64(r, 0, 0);
			c.metadata =
			    PQgetisnull(r, 0, 1) ? NULL : PQgetvalue(r, 0, 1);
			c.schema_changed = PQgetvalue(r, 0, 2)[0] == 't';
			rc = fn(ctx, &c);
		} else {
			rc = error_set(err, PEMBA_EIO,
			               "datastore: corrupt: no record of "
			               "revision %" PRIu64,
			               rev);
		}
		PQclear(r);
		if (rc)
			return rc;
	}
	return PEMBA_OK;
}

static int pg_changes(store *base, pemba_revision after, pemba_revision upto,
                      store_change_fn fn, void *ctx, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if (s->in_txn)
		return error_set(err, PEMBA_EINVAL,
		                 "reading changes inside a write transaction");
	listen_commits(s);
	if ((rc = pg_read_begin(base, err)))
		return rc;
	rc = changes_in(s, after, upto, fn, ctx, err);
	pg_read_end(base);
	return rc;
}

/* ========================================================= transactions */

/* Ends a failed transaction (or a read transaction) on the connection,
 * and gives the connection back unless the handle's transaction state
 * still holds it (see conn_release). */
static void rollback(pg_store *s)
{
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK &&
	    PQtransactionStatus(s->conn) != PQTRANS_IDLE)
		PQclear(PQexec(s->conn, "ROLLBACK"));
	conn_release(s);
}

/* BEGIN, then the write lock: every writer of the datastore (write
 * transactions, settings, GC, migrations) serializes here. */
static int begin_write(pg_store *s, pemba_error *err)
{
	int rc = conn_borrow(s, true, err);
	if (rc) {
		conn_release(s);
		return rc;
	}
	rc = exec_simple(s, WRITE_BEGIN_SQL, err);
	if (rc)
		rollback(s);
	return rc;
}

static uint64_t random_nonce(void)
{
	uint64_t v = 0;
	while (v == 0)
		if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
			v = (uint64_t)now_ms_wall() * 6364136223846793005ull +
			    (uint64_t)getpid();
	return v;
}

/* clang-format off */
/* The revision of a write transaction: head + 1, stamped with the wall
 * clock unless that went back behind the head's stamp, with the nonce
 * pemba drew; returns it with the layout version (see txn_start).  The
 * two %s are the timestamp and the nonce as decimal literals. */
#define REV_ALLOC_SQL                                                          \
	"INSERT INTO revisions(rev, timestamp_ms, nonce) "                     \
	"SELECT coalesce(h.rev, 0) + 1, "                                      \
	"greatest(%s, coalesce(h.timestamp_ms, 0)), %s "                       \
	"FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT rev, timestamp_ms "  \
	"FROM revisions ORDER BY rev DESC LIMIT 1) AS h ON true "              \
	"RETURNING rev, (SELECT max(version) FROM pemba_schema_version)"
/* clang-format on */

/*
 * Sends `sql` (several statements without parameters: one round trip)
 * on the handle's connection and collects its results.  Exactly `want`
 * results are expected; the last `keep` of them go to out[0..keep) (the
 * caller PQclears them), the others are dropped.  The first failed
 * statement (PostgreSQL skips the rest of the string after it) is
 * reported through db_error, once every result has been read.
 */
static int exec_multi(pg_store *s, const char *sql, int want, PGresult **out,
                      int keep, const char *what, pemba_error *err)
{
	int rc = conn_ready(s, err);
	if (rc)
		return rc;
	if (!PQsendQuery(s->conn, sql))
		return db_error(s, NULL, what, err);
	PGresult *r, *bad = NULL;
	int n = 0, kept = 0;
	while ((r = PQgetResult(s->conn))) {
		if (!bad && !result_ok(r)) {
			bad = r;
			continue;
		}
		if (!bad && n >= want - keep && n < want)
			out[kept++] = r;
		else
			PQclear(r);
		if (!bad)
			n++;
	}
	if (!bad && n == want)
		return PEMBA_OK;
	for (int i = 0; i < kept; i++)
		PQclear(out[i]);
	rc = bad ? db_error(s, bad, what, err)
	         : error_set(err, PEMBA_EIO,
	                     "datastore: %s: %d results instead of %d", what, n,
	                     want);
	PQclear(bad);
	return rc;
}

/*
 * The first round trip of a write transaction on the handle's (write)
 * connection: `prefix` (nprefix statements: BEGIN and the write lock, or
 * a savepoint of a commit group, see below), then the new revision row
 * (REV_ALLOC_SQL), the read-only flag and the deprecations, all read
 * after the lock so that no setting changes before the transaction ends
 * (settings changes take the lock too).  Fills s->txn (rev, nonce,
 * settings); on failure nothing of it is kept and the caller rolls back.
 */
static int txn_start(pg_store *s, const char *prefix, int nprefix,
                     pemba_error *err)
{
	uint64_t nonce = random_nonce();
	num_text t0 = num(now_ms_wall()), n0 = num((int64_t)nonce);
	char alloc[512];
	snprintf(alloc, sizeof(alloc), REV_ALLOC_SQL, t0.s, n0.s);
	strbuf sb;
	strbuf_init(&sb);
	strbuf_append(&sb, prefix, strlen(prefix));
	strbuf_append(&sb, alloc, strlen(alloc));
	strbuf_append(&sb, "; ", 2);
	strbuf_append(&sb, stmt_sql[ST_READ_ONLY_GET],
	              strlen(stmt_sql[ST_READ_ONLY_GET]));
	strbuf_append(&sb, "; ", 2);
	strbuf_append(&sb, stmt_sql[ST_DEPRECATIONS_LIST],
	              strlen(stmt_sql[ST_DEPRECATIONS_LIST]));
	char *sql = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	PGresult *res[3];
	int rc = exec_multi(s, sql, nprefix + 3, res, 3,
	                    "beginning a write transaction", err);
	free(sql);
	if (rc)
		return rc;
	int version = (int)get_i64(res[0], 0, 1);
	s->txn.rev = (pemba_revision)get_i64(res[0], 0, 0);
	s->txn.nonce = nonce;
	s->txn.read_only = PQntuples(res[1]) == 1 && get_i64(res[1], 0, 0) != 0;
	s->txn.deprecations = res[2];
	PQclear(res[0]);
	PQclear(res[1]);
	if (layout_seen(s, version)) {
		PQclear(s->txn.deprecations);
		s->txn.deprecations = NULL;
		return layout_changed_error(s, err);
	}
	return PEMBA_OK;
}

/* What every write transaction's end does to the handle: the settings
 * read at its start are dropped; after a commit, its nonce goes to the
 * cache (store_revision_nonce needs no round trip for the ZedToken). */
static void txn_finish(pg_store *s, bool committed)
{
	PQclear(s->txn.deprecations);
	s->txn.deprecations = NULL;
	s->txn.group = NULL;
	s->in_txn = false;
	if (committed) {
		size_t slot = (size_t)(s->txn.rev % NONCE_CACHE);
		s->nonces[slot].rev = s->txn.rev;
		s->nonces[slot].nonce = s->txn.nonce;
	}
}

/* Checks shared by every write transaction's begin. */
static int txn_begin_check(pg_store *s, pemba_error *err)
{
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
	return PEMBA_OK;
}

/* A write transaction of its own: BEGIN, the write lock, the revision and
 * the settings in one round trip (txn_start). */
static int txn_begin_alone(pg_store *s, pemba_error *err)
{
	int rc = conn_borrow(s, true, err);
	if (rc) {
		conn_release(s);
		return rc;
	}
	if ((rc = txn_start(s, WRITE_BEGIN_SQL "; ", 2, err))) {
		rollback(s);
		return rc;
	}
	s->in_txn = true;
	return PEMBA_OK;
}

/* ========================================================= group commit */

static void group_abort(pg_store *s);
static int send_commit(pg_store *s, pemba_error *err);

/*
 * Group commit (README.md, "group commit").  Concurrent write
 * transactions of the handles of one process on one datastore share one
 * PostgreSQL transaction, hence one write lock and one WAL flush:
 *
 *   - the first writer to find no group accepting members opens one: it
 *     borrows a write connection and sends BEGIN, the write lock and
 *     savepoint m1 with its revision (txn_start);
 *   - the others join it: they wait for the connection to be free (a
 *     member holds it from its begin to its commit or abort: members run
 *     one after another, as writers are serialized anyway), release the
 *     previous member's savepoint and open their own (m2, m3, ...) in
 *     the same round trip as their revision, which is max(rev) + 1 inside
 *     the group's transaction: consecutive, each its own revision row;
 *   - a member's commit gives the connection to the next waiter and
 *     waits for the group's outcome; its abort rolls back to its
 *     savepoint (the group goes on without its writes);
 *   - when a member finishes and nobody waits to join (or the group is
 *     full: GROUP_MAX_MEMBERS), whoever sees it idle first ends it: one
 *     NOTIFY and COMMIT (ROLLBACK when no member committed), then every
 *     member waiting for the outcome returns it.  A commit returns
 *     success only after the real COMMIT succeeded; when it fails, every
 *     member that committed in the group fails with its error.
 *   - writers arriving while a group commits open the next group on
 *     another connection, which waits for the write lock in PostgreSQL.
 *
 * Members stay below 64 subtransactions (PostgreSQL's per-backend cache
 * of subtransaction ids; past it other sessions' snapshots get slower).
 */
#define GROUP_MAX_MEMBERS 32

typedef struct pg_group {
	pg_conn *conn;  /* its transaction's connection */
	int savepoints; /* savepoints opened (m1 .. mN) */
	int committed;  /* members whose commit waits for the outcome */
	int waiting;    /* threads waiting to join */
	bool busy;      /* a member (or its opener) is using conn */
	bool open;      /* accepting members (it is pg_shared.group) */
	bool closing;   /* its COMMIT or ROLLBACK is under way */
	bool done;      /* ended; rc and error are the outcome */
	bool broken;    /* a member could not roll back to its savepoint */
	int rc;
	pemba_error error;
} pg_group;

/* The group must be ended now: nobody uses it, no member will join
 * (caller holds group_mu). */
static bool group_idle(const pg_group *g)
{
	return !g->busy && !g->closing && !g->done &&
	       (!g->open || g->waiting == 0);
}

/* Stops g accepting members (caller holds group_mu). */
static void group_detach(pg_shared *sh, pg_group *g)
{
	g->open = false;
	if (sh->group == g)
		sh->group = NULL;
}

/* Frees an ended group nobody refers to any more (caller holds
 * group_mu). */
static void group_unref(pg_group *g)
{
	if (g->done && g->committed == 0 && g->waiting == 0 && !g->busy)
		free(g);
}

/* Deadline `ms` from now on the monotonic clock. */
static struct timespec deadline_after(int ms)
{
	struct timespec d;
	clock_gettime(CLOCK_MONOTONIC, &d);
	d.tv_sec += ms / 1000;
	d.tv_nsec += (long)(ms % 1000) * 1000000;
	if (d.tv_nsec >= 1000000000) {
		d.tv_sec++;
		d.tv_nsec -= 1000000000;
	}
	return d;
}

/*
 * Ends group g, which the caller marked closing (it holds nothing of g's
 * connection otherwise; s is any handle of the datastore, used for its
 * messages): COMMIT when a member committed and none broke the group,
 * else ROLLBACK; gives the connection back to the pool and publishes the
 * outcome to the members waiting for it.  A caller that is not a member
 * waiting for the outcome (`member` false: an aborted member, a waiter
 * that gave up) must not touch g afterwards: it may be freed at once.
 */
static void group_close(pg_store *s, pg_group *g, bool member)
{
	pg_shared *sh = s->shared;
	pg_conn *held = s->held;
	PGconn *conn = s->conn;
	bool in_txn = s->in_txn;
	pemba_error e;
	memset(&e, 0, sizeof(e));
	int rc = PEMBA_OK;
	s->held = g->conn;
	s->conn = g->conn->pg;
	s->in_txn = true; /* no statement of db_error's on this connection */
	if (g->broken) {
		rc = g->rc;
		e = g->error;
	} else if (g->committed > 0) {
		rc = send_commit(s, &e);
	}
	s->in_txn = false;
	rollback(s); /* when still in the block: nothing committed */
	if (s->held)
		conn_discard(s); /* a block that could not be ended */
	s->held = held;
	s->conn = conn;
	s->in_txn = in_txn;
	pthread_mutex_lock(&sh->group_mu);
	g->conn = NULL;
	g->busy = false;
	g->done = true;
	g->rc = rc;
	g->error = e;
	pthread_cond_broadcast(&sh->group_cv);
	if (!member)
		group_unref(g);
	pthread_mutex_unlock(&sh->group_mu);
}

/*
 * Takes the group's connection as a member: opens savepoint m<N> (after
 * releasing the previous member's) with the revision and settings in one
 * round trip.  The caller holds g->busy.  On failure the member is
 * already rolled back (group_abort).
 */
static int group_member_start(pg_store *s, pg_group *g, int n, bool opener,
                              pemba_error *err)
{
	char prefix[160];
	int nprefix = 1;
	if (opener) {
		snprintf(prefix, sizeof(prefix), "%s; SAVEPOINT m%d; ",
		         WRITE_BEGIN_SQL, n);
		nprefix = 3;
	} else if (n > 1) {
		snprintf(prefix, sizeof(prefix),
		         "RELEASE SAVEPOINT m%d; SAVEPOINT m%d; ", n - 1, n);
		nprefix = 2;
	} else {
		snprintf(prefix, sizeof(prefix), "SAVEPOINT m%d; ", n);
	}
	s->held = g->conn;
	s->conn = g->conn->pg;
	s->txn.group = g;
	s->txn.savepoint = n;
	s->in_txn = true;
	int rc = txn_start(s, prefix, nprefix, err);
	if (rc && !opener)
		group_abort(s);
	if (rc) {
		s->in_txn = false;
		s->txn.group = NULL;
	}
	return rc;
}

/*
 * Begins the handle's write transaction as a member of the datastore's
 * open group, or opens a group.  Waits up to LOCK_TIMEOUT_MS for the
 * group's connection (another member is using it), then fails as a
 * writer waiting for the write lock does ("datastore busy").
 */
static int group_open(pg_store *s, pg_group *g, pemba_error *err);

static int group_begin(pg_store *s, pemba_error *err)
{
	pg_shared *sh = s->shared;
	struct timespec deadline = deadline_after(LOCK_TIMEOUT_MS);
	pthread_mutex_lock(&sh->group_mu);
	pg_group *g;
	for (;;) {
		g = sh->group;
		if (!g) {
			g = xcalloc(1, sizeof(*g));
			g->open = true;
			g->busy = true;
			sh->group = g;
			pthread_mutex_unlock(&sh->group_mu);
			return group_open(s, g, err);
		}
		if (!g->busy)
			break;
		g->waiting++;
		int w = pthread_cond_timedwait(&sh->group_cv, &sh->group_mu,
		                               &deadline);
		g->waiting--;
		if (w != ETIMEDOUT) {
			group_unref(g); /* an ended group may go now */
			continue;
		}
		bool close = group_idle(g);
		if (close) {
			g->closing = true;
			g->busy = true;
			group_detach(sh, g);
		}
		if (!close)
			group_unref(g);
		pthread_mutex_unlock(&sh->group_mu);
		if (close)
			group_close(s, g, false);
		return error_set(
		    err, PEMBA_EIO,
		    "datastore busy: beginning a write transaction: "
		    "another writer held the datastore for more "
		    "than %d ms",
		    LOCK_TIMEOUT_MS);
	}
	g->busy = true;
	int n = ++g->savepoints;
	if (n >= GROUP_MAX_MEMBERS)
		group_detach(sh, g);
	pthread_mutex_unlock(&sh->group_mu);
	return group_member_start(s, g, n, false, err);
}

/*
 * Opens group g (created busy and accepting by the caller): borrows a
 * write connection and starts the group's transaction with the opener as
 * its first member.  On failure the group ends at once (nobody else
 * joined it: it was busy) and waiters try again.
 */
static int group_open(pg_store *s, pg_group *g, pemba_error *err)
{
	pg_shared *sh = s->shared;
	int rc = conn_borrow(s, true, err);
	if (!rc) {
		g->conn = s->held;
		g->savepoints = 1;
		rc = group_member_start(s, g, 1, true, err);
		if (!rc)
			return PEMBA_OK;
	}
	/* Nobody else joined (the group was busy): end it, and the waiters
	 * try again. */
	rollback(s);
	if (s->held)
		conn_discard(s); /* a block that could not be ended */
	pthread_mutex_lock(&sh->group_mu);
	group_detach(sh, g);
	g->conn = NULL;
	g->busy = false;
	g->done = true;
	pthread_cond_broadcast(&sh->group_cv);
	group_unref(g);
	pthread_mutex_unlock(&sh->group_mu);
	return rc;
}

/*
 * The handle's member leaves the group's connection (after its commit or
 * abort) and hands it to the next member; if the group is idle then, the
 * caller ends it.  Returns true when the caller must call group_close.
 * Caller holds group_mu.
 */
static bool group_leave(pg_store *s, pg_group *g)
{
	s->held = NULL;
	s->conn = NULL;
	g->busy = false;
	bool close = group_idle(g);
	if (close) {
		g->closing = true;
		g->busy = true;
		group_detach(s->shared, g);
	}
	pthread_cond_broadcast(&s->shared->group_cv);
	return close;
}

/*
 * Commits the handle's member: its writes stay in the group's
 * transaction, and the call returns that transaction's outcome (after
 * the group's COMMIT, which this thread may send itself).  A member whose
 * statements failed (the transaction is in error) is rolled back to its
 * savepoint and fails as a lone transaction's COMMIT would.
 */
static int group_commit(pg_store *s, pemba_error *err)
{
	pg_shared *sh = s->shared;
	pg_group *g = s->txn.group;
	PGTransactionStatusType ts =
	    s->conn && PQstatus(s->conn) == CONNECTION_OK
	        ? PQtransactionStatus(s->conn)
	        : PQTRANS_UNKNOWN;
	if (ts != PQTRANS_INTRANS) {
		group_abort(s);
		return ts == PQTRANS_UNKNOWN
		           ? error_set(err, PEMBA_EIO,
		                       "datastore unavailable: the connection "
		                       "to %s was lost before the commit",
		                       s->shown)
		           : error_set(
		                 err, PEMBA_EIO,
		                 "datastore: committing: the transaction "
		                 "was rolled back after an earlier error");
	}
	pthread_mutex_lock(&sh->group_mu);
	g->committed++;
	bool close = group_leave(s, g);
	while (!close && !g->done) {
		pthread_cond_wait(&sh->group_cv, &sh->group_mu);
		if (group_idle(g)) {
			g->closing = true;
			g->busy = true;
			group_detach(sh, g);
			close = true;
		}
	}
	pthread_mutex_unlock(&sh->group_mu);
	if (close)
		group_close(s, g, true);
	pthread_mutex_lock(&sh->group_mu);
	int rc = g->rc;
	if (rc && err)
		*err = g->error;
	g->committed--;
	group_unref(g);
	pthread_mutex_unlock(&sh->group_mu);
	return rc;
}

/*
 * Aborts the handle's member: rolls back to its savepoint, so the group
 * goes on without its writes (and its revision: the next member takes
 * the same number).  A rollback that fails breaks the group: it will not
 * commit, and its members fail with that error.
 */
static void group_abort(pg_store *s)
{
	pg_shared *sh = s->shared;
	pg_group *g = s->txn.group;
	char sql[48];
	snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT m%d",
	         s->txn.savepoint);
	pemba_error e;
	memset(&e, 0, sizeof(e));
	bool ok = false;
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK) {
		PGresult *r = PQexec(s->conn, sql);
		ok = result_ok(r);
		if (!ok)
			db_error(s, r, "rolling back a write transaction", &e);
		PQclear(r);
	} else {
		error_set(
		    &e, PEMBA_EIO,
		    "datastore unavailable: the connection to %s was lost "
		    "during a transaction",
		    s->shown);
	}
	pthread_mutex_lock(&sh->group_mu);
	if (!ok && !g->broken) {
		g->broken = true;
		g->rc = e.code ? e.code : PEMBA_EIO;
		g->error = e;
	}
	bool close = group_leave(s, g);
	pthread_mutex_unlock(&sh->group_mu);
	if (close)
		group_close(s, g, false);
}

static int pg_txn_begin(store *base, store_txn **out, pemba_revision *rev_out,
                        pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = txn_begin_check(s, err);
	if (rc)
		return rc;
	s->txn.base.ops = &store_postgres_ops;
	s->txn.s = s;
	s->txn.group = NULL;
	if ((rc = s->shared->group_commit ? group_begin(s, err)
	                                  : txn_begin_alone(s, err)))
		return rc;
	*out = &s->txn.base;
	if (rev_out)
		*rev_out = s->txn.rev;
	return PEMBA_OK;
}

static pg_store *txn_store(store_txn *base)
{
	pg_txn *t = (pg_txn *)base;
	assert(t->s->in_txn && &t->s->txn == t);
	return t->s;
}

static int pg_txn_query(store_txn *base, const store_filter *f, size_t limit,
                        store_iter **out, pemba_error *err)
{
	pg_store *s = txn_store(base);
	pg_iter *it;
	int rc =
	    query_start(s, f, true, 0, NULL, limit, now_ms_wall(), &it, err);
	if (rc)
		return rc;
	*out = &it->base;
	return PEMBA_OK;
}

/* The key of a relationship as parameters $1..$6. */
static void key_values(const store_rel *r, const char *v[NKEY])
{
	v[0] = r->resource_type ? r->resource_type : "";
	v[1] = r->resource_id ? r->resource_id : "";
	v[2] = r->relation ? r->relation : "";
	v[3] = r->subject_type ? r->subject_type : "";
	v[4] = r->subject_id ? r->subject_id : "";
	const char *sr = normalize_subject_relation(r->subject_relation);
	v[5] = sr ? sr : "";
}

/* Inserts the live version of r; *inserted 0 if a live version exists. */
static int rel_insert(pg_store *s, const store_rel *r, int *inserted,
                      pemba_error *err)
{
	const char *v[10];
	key_values(r, v);
	num_text rev = num((int64_t)s->txn.rev), exp = num(r->expiration_ms);
	v[6] = rev.s;
	v[7] = r->caveat_name ? r->caveat_name : "";
	v[8] =
	    r->caveat_context && *r->caveat_context ? r->caveat_context : NULL;
	v[9] = r->expiration_ms ? exp.s : NULL;
	uint64_t n = 0;
	int rc = run_cmd(s, ST_REL_INSERT, NULL, 10, v,
	                 "writing a relationship", &n, err);
	*inserted = (int)n;
	return rc;
}

static int exists_error(const store_rel *r, pemba_error *err)
{
	const char *sr = normalize_subject_relation(r->subject_relation);
	bool has = sr && *sr;
	return error_set(err, PEMBA_EEXISTS,
	                 "relationship %s:%s#%s@%s:%s%s%s already exists",
	                 r->resource_type, r->resource_id, r->relation,
	                 r->subject_type, r->subject_id, has ? "#" : "",
	                 has ? sr : "");
}

/* Ends the live version of r's key in this transaction (see the SQLite
 * engine's rel_close: a version created by this transaction is removed). */
static int rel_close(pg_store *s, const char *const key[NKEY], int *closed,
                     pemba_error *err)
{
	static const int steps[2] = {ST_REL_CLOSE, ST_REL_DROP_NEW};
	num_text rev = num((int64_t)s->txn.rev);
	const char *v[7];
	memcpy(v, key, sizeof(*v) * NKEY);
	v[6] = rev.s;
	*closed = 0;
	for (int i = 0; i < 2 && !*closed; i++) {
		uint64_t n = 0;
		int rc = run_cmd(s, steps[i], NULL, 7, v,
		                 "deleting a relationship", &n, err);
		if (rc)
			return rc;
		*closed = (int)n;
	}
	return PEMBA_OK;
}

static int pg_txn_create(store_txn *base, const store_rel *r, pemba_error *err)
{
	pg_store *s = txn_store(base);
	int inserted, rc = rel_insert(s, r, &inserted, err);
	if (rc)
		return rc;
	return inserted ? PEMBA_OK : exists_error(r, err);
}

static int pg_txn_touch(store_txn *base, const store_rel *r, pemba_error *err)
{
	pg_store *s = txn_store(base);
	int inserted, rc;
	if ((rc = rel_insert(s, r, &inserted, err)) || inserted)
		return rc;
	/* A live version exists: identical, replace, or update in place. */
	const char *v[NKEY];
	key_values(r, v);
	PGresult *res =
	    run(s, ST_REL_LIVE, NULL, NKEY, v, "reading a relationship", err);
	if (!res)
		return err ? err->code : PEMBA_EIO;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return error_set(err, PEMBA_EIO,
		                 "datastore: live relationship vanished during "
		                 "TOUCH");
	}
	pemba_revision created = (pemba_revision)get_i64(res, 0, 0);
	const char *caveat = r->caveat_name ? r->caveat_name : "";
	const char *context = r->caveat_context ? r->caveat_context : "";
	bool same = strcmp(PQgetvalue(res, 0, 1), caveat) == 0 &&
	            strcmp(PQgetvalue(res, 0, 2), context) == 0 &&
	            get_i64(res, 0, 3) == r->expiration_ms;
	PQclear(res);
	if (same)
		return PEMBA_OK;
	if (created == s->txn.rev) {
		num_text exp = num(r->expiration_ms);
		const char *u[9];
		memcpy(u, v, sizeof(v));
		u[6] = caveat;
		u[7] = *context ? context : NULL;
		u[8] = r->expiration_ms ? exp.s : NULL;
		return run_cmd(s, ST_REL_SET_CAVEAT, NULL, 9, u,
		               "updating a relationship", NULL, err);
	}
	int closed;
	if ((rc = rel_close(s, v, &closed, err)) ||
	    (rc = rel_insert(s, r, &inserted, err)))
		return rc;
	return inserted ? PEMBA_OK : exists_error(r, err);
}

/* ========================================================= batch writes */

/*
 * Bulk loads: one INSERT of up to BATCH_ROWS rows (10 parameters a row,
 * in the order of ST_REL_INSERT) with ON CONFLICT DO NOTHING, returning
 * the keys it inserted, instead of one round trip per row.
 */
static char *build_batch_sql(int rows)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_puts(&sb,
	            "INSERT INTO relationships(resource_type, resource_id, "
	            "relation, subject_type, subject_id, "
	            "subject_relation, deleted_rev, created_rev, "
	            "caveat_name, caveat_context, expiration_ms) VALUES ");
	for (int i = 0; i < rows; i++) {
		int p = i * 10;
		strbuf_printf(
		    &sb,
		    "%s($%d, $%d, $%d, $%d, $%d, $%d, 0, $%d::bigint, "
		    "$%d, $%d, $%d::bigint)",
		    i ? ", " : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6,
		    p + 7, p + 8, p + 9, p + 10);
	}
	strbuf_puts(&sb, " ON CONFLICT DO NOTHING RETURNING " KEY_ORDER);
	char *sql = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return sql;
}

static bool same_key(const char *const a[NKEY], const PGresult *r, int row)
{
	for (int c = 0; c < NKEY; c++)
		if (strcmp(a[c], PQgetvalue(r, row, c)) != 0)
			return false;
	return true;
}

/*
 * CREATE (touch false) or TOUCH of rels[0..n), BATCH_ROWS per statement,
 * with exactly the results of the single-row calls in order:
 *
 *   - every row inserted: done;
 *   - CREATE with rows left out (a live row exists, or the key repeats in
 *     the chunk): the rows this statement inserted are deleted again and
 *     the chunk is redone one row at a time, which stops at the first
 *     conflict and names it;
 *   - TOUCH with rows left out: each of them, in order, goes through
 *     store_txn_touch (identical: nothing; else replaced, or updated in
 *     place if created by this transaction).
 */
static int write_batch(pg_store *s, bool touch, const store_rel *rels, size_t n,
                       size_t *done_out, pemba_error *err)
{
	const char *keys[BATCH_ROWS][NKEY];
	bool inserted[BATCH_ROWS];
	num_text exps[BATCH_ROWS];
	num_text rev = num((int64_t)s->txn.rev);
	size_t done = 0;
	int rc = PEMBA_OK;
	while (done < n && !rc) {
		const store_rel *r = rels + done;
		size_t m = n - done < BATCH_ROWS ? n - done : BATCH_ROWS;
		const char *v[BATCH_ROWS * 10];
		for (size_t i = 0; i < m; i++) {
			const char **p = v + i * 10;
			key_values(&r[i], keys[i]);
			memcpy(p, keys[i], sizeof(keys[i]));
			exps[i] = num(r[i].expiration_ms);
			p[6] = rev.s;
			p[7] = r[i].caveat_name ? r[i].caveat_name : "";
			p[8] = r[i].caveat_context && *r[i].caveat_context
			           ? r[i].caveat_context
			           : NULL;
			p[9] = r[i].expiration_ms ? exps[i].s : NULL;
		}
		PGresult *res =
		    run(s, SLOT_BATCH + (int)m - 1, NULL, (int)m * 10, v,
		        "writing relationships", err);
		if (!res) {
			rc = err ? err->code : PEMBA_EIO;
			break;
		}
		/* Which rows went in: the first row of each returned key. */
		int got = PQntuples(res);
		bool used[BATCH_ROWS] = {false};
		for (size_t i = 0; i < m; i++)
			inserted[i] = false;
		for (size_t i = 0; i < m; i++)
			for (int k = 0; k < got; k++)
				if (!used[k] && same_key(keys[i], res, k)) {
					used[k] = true;
					inserted[i] = true;
					break;
				}
		if ((size_t)got == m) {
			PQclear(res);
			done += m;
			continue;
		}
		if (!touch) {
			/* Undo what went in (rows created by this very
			 * statement: live, created_rev = this revision), then
			 * one row at a time. */
			for (int k = 0; k < got && !rc; k++) {
				const char *dv[7];
				for (int c = 0; c < NKEY; c++)
					dv[c] = PQgetvalue(res, k, c);
				dv[6] = rev.s;
				rc =
				    run_cmd(s, ST_REL_DROP_NEW, NULL, 7, dv,
				            "writing relationships", NULL, err);
			}
			PQclear(res);
			for (size_t i = 0; i < m && !rc; i++)
				if ((rc = pg_txn_create(&s->txn.base, &r[i],
				                        err)))
					done += i;
			if (rc)
				break;
		} else {
			PQclear(res);
			for (size_t i = 0; i < m && !rc; i++)
				if (!inserted[i] &&
				    (rc = pg_txn_touch(&s->txn.base, &r[i],
				                       err)))
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

/* ====================================================== COPY bulk path */

/*
 * Batches of COPY_MIN_ROWS rows or more (a bulk import's rounds) go
 * through COPY instead of 64-row INSERTs: the rows are streamed with
 * `COPY ... FROM STDIN` into a temporary table of the transaction
 * (COPY_STAGE, dropped at commit, never WAL-logged), then moved into
 * `relationships` by one INSERT ... SELECT ... ON CONFLICT DO NOTHING
 * inside a savepoint, whose row count says whether every row went in
 * (copy_batch has what happens when not).  Smaller batches keep
 * write_batch: the fixed cost (four round trips) would not pay off.
 */
#define COPY_MIN_ROWS 1024
#define COPY_STAGE "pemba_copy_stage"
/* Bytes of COPY data buffered before a PQputCopyData. */
#define COPY_SEND_BYTES 65536

/* The staging table (empty at every use) and what a chunk's INSERT reads
 * from it: columns in the order of ST_REL_INSERT, plus seq (the row's
 * index in the batch). */
#define COPY_STAGE_SQL                                                         \
	"CREATE TEMP TABLE IF NOT EXISTS " COPY_STAGE " ("                     \
	"seq integer NOT NULL, resource_type text COLLATE \"C\" NOT NULL, "    \
	"resource_id text COLLATE \"C\" NOT NULL, "                            \
	"relation text COLLATE \"C\" NOT NULL, "                               \
	"subject_type text COLLATE \"C\" NOT NULL, "                           \
	"subject_id text COLLATE \"C\" NOT NULL, "                             \
	"subject_relation text COLLATE \"C\" NOT NULL, "                       \
	"caveat_name text COLLATE \"C\" NOT NULL, caveat_context text, "       \
	"expiration_ms bigint) ON COMMIT DROP; TRUNCATE " COPY_STAGE

/* $1 the revision, $2 the first seq not to move (rows [0, $2) move, in
 * seq order); the command's row count is the number inserted. */
#define COPY_MOVE_SQL                                                          \
	"INSERT INTO relationships(resource_type, resource_id, relation, "     \
	"subject_type, subject_id, subject_relation, deleted_rev, "            \
	"created_rev, caveat_name, caveat_context, expiration_ms) "            \
	"SELECT resource_type, resource_id, relation, subject_type, "          \
	"subject_id, subject_relation, 0, $1::bigint, caveat_name, "           \
	"caveat_context, expiration_ms FROM " COPY_STAGE                       \
	" WHERE seq < $2::integer ORDER BY seq ON CONFLICT DO NOTHING"

/* Before a move: the seqs, in order, of the staged rows the move would
 * leave out: a live version of the key exists, or the key repeats one
 * earlier in the batch.  Only run when a move came up short. */
#define COPY_LEFT_OUT_SQL                                                      \
	"SELECT seq FROM (SELECT s.seq, row_number() OVER (PARTITION BY "      \
	"s.resource_type, s.resource_id, s.relation, s.subject_type, "         \
	"s.subject_id, s.subject_relation ORDER BY s.seq) AS nth, EXISTS ("    \
	"SELECT 1 FROM relationships AS r WHERE "                              \
	"r.resource_type = s.resource_type AND "                               \
	"r.resource_id = s.resource_id AND r.relation = s.relation AND "       \
	"r.subject_type = s.subject_type AND r.subject_id = s.subject_id AND " \
	"r.subject_relation = s.subject_relation AND r.deleted_rev = 0) AS "   \
	"live FROM " COPY_STAGE " AS s) AS k WHERE nth > 1 OR live "           \
	"ORDER BY seq"

/* Appends v to a COPY text-format field: backslash, tab, newline and
 * carriage return escaped (COPY's own escapes, so ids and caveat JSON come
 * back byte for byte); NULL is `\N`.  Then a tab, or a newline if last. */
static void copy_field(strbuf *sb, const char *v, bool last)
{
	if (!v)
		strbuf_puts(sb, "\\N");
	while (v && *v) {
		size_t plain = strcspn(v, "\\\t\n\r");
		strbuf_append(sb, v, plain);
		v += plain;
		if (!*v)
			break;
		char esc[3] = {'\\',
		               *v == '\t'   ? 't'
		               : *v == '\n' ? 'n'
		               : *v == '\r' ? 'r'
		                            : '\\',
		               '\0'};
		strbuf_append(sb, esc, 2);
		v++;
	}
	strbuf_putc(sb, last ? '\n' : '\t');
}

/* Sends the buffered COPY data (the connection is in COPY IN). */
static int copy_flush(pg_store *s, strbuf *sb, pemba_error *err)
{
	if (sb->len == 0)
		return PEMBA_OK;
	if (PQputCopyData(s->conn, sb->data, (int)sb->len) != 1)
		return db_error(s, NULL, "copying relationships", err);
	strbuf_reset(sb);
	return PEMBA_OK;
}

/*
 * Empties (creating it in this transaction if needed) the staging table
 * and COPYs rels[0..n) into it, row i with seq i.  Runs on the write
 * connection the transaction holds.  On failure the transaction is
 * unusable (PostgreSQL aborted it); the caller fails the write.
 */
static int copy_stage_load(pg_store *s, const store_rel *rels, size_t n,
                           pemba_error *err)
{
	int rc = exec_simple(s, COPY_STAGE_SQL, err);
	if (rc)
		return rc;
	assert(s->conn && s->in_txn);
	PGresult *r = PQexec(s->conn, "COPY " COPY_STAGE " FROM STDIN");
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		rc = db_error(s, r, "copying relationships", err);
		PQclear(r);
		return rc;
	}
	PQclear(r);
	strbuf sb;
	strbuf_init(&sb);
	for (size_t i = 0; i < n && !rc; i++) {
		const char *key[NKEY];
		key_values(&rels[i], key);
		strbuf_printf(&sb, "%zu\t", i);
		for (int c = 0; c < NKEY; c++)
			copy_field(&sb, key[c], false);
		copy_field(&sb, rels[i].caveat_name ? rels[i].caveat_name : "",
		           false);
		copy_field(&sb,
		           rels[i].caveat_context && *rels[i].caveat_context
		               ? rels[i].caveat_context
		               : NULL,
		           false);
		num_text exp = num(rels[i].expiration_ms);
		copy_field(&sb, rels[i].expiration_ms ? exp.s : NULL, true);
		if (sb.len >= COPY_SEND_BYTES)
			rc = copy_flush(s, &sb, err);
	}
	if (!rc)
		rc = copy_flush(s, &sb, err);
	strbuf_free(&sb);
	/* End the COPY either way (an error message aborts it). */
	if (PQputCopyEnd(s->conn, rc ? "pemba: copy abandoned" : NULL) != 1 &&
	    !rc)
		rc = db_error(s, NULL, "copying relationships", err);
	while ((r = PQgetResult(s->conn)) != NULL) {
		if (!rc && PQresultStatus(r) != PGRES_COMMAND_OK)
			rc = db_error(s, r, "copying relationships", err);
		PQclear(r);
	}
	return rc;
}

/* Moves staged rows [0, upto) into relationships; *inserted_out gets
 * how many went in. */
static int copy_stage_move(pg_store *s, size_t upto, size_t *inserted_out,
                           pemba_error *err)
{
	num_text rev = num((int64_t)s->txn.rev), lim = num((int64_t)upto);
	const char *v[2] = {rev.s, lim.s};
	uint64_t n = 0;
	int rc = run_cmd(s, -1, COPY_MOVE_SQL, 2, v, "writing relationships",
	                 &n, err);
	*inserted_out = (size_t)n;
	return rc;
}

/*
 * write_batch's results for a large batch, by COPY (see above).  The
 * whole batch is moved inside a savepoint; when every row went in (the
 * common case: a load of new relationships) that is all.  Otherwise the
 * savepoint is rolled back and the rows the move leaves out are listed
 * first (COPY_LEFT_OUT_SQL), in order:
 *
 *   - CREATE: the first of them is exactly the conflict single-row CREATEs
 *     would have met first (every row before it goes in; it repeats a live
 *     key or one earlier in the batch): rows before it are moved (they
 *     cannot conflict) and it is named with PEMBA_EEXISTS, *done_out its
 *     index;
 *   - TOUCH: the batch is moved again, then each row left out goes, in
 *     order, through the single-row TOUCH (identical: nothing; else
 *     replaced, or updated in place when this transaction created it, as
 *     for a key repeated within the batch).
 */
static int copy_batch(pg_store *s, bool touch, const store_rel *rels, size_t n,
                      size_t *done_out, pemba_error *err)
{
	*done_out = 0;
	if (n > INT32_MAX)
		return error_set(err, PEMBA_ELIMIT,
		                 "batch of %zu relationships is too large", n);
	size_t inserted;
	int rc = copy_stage_load(s, rels, n, err);
	if (rc || (rc = exec_simple(s, "SAVEPOINT pemba_copy", err)) ||
	    (rc = copy_stage_move(s, n, &inserted, err)))
		return rc;
	if (inserted == n) {
		*done_out = n;
		return exec_simple(s, "RELEASE SAVEPOINT pemba_copy", err);
	}
	if ((rc = exec_simple(s,
	                      "ROLLBACK TO SAVEPOINT pemba_copy; "
	                      "RELEASE SAVEPOINT pemba_copy",
	                      err)))
		return rc;
	PGresult *left = run(s, -1, COPY_LEFT_OUT_SQL, 0, NULL,
	                     "writing relationships", err);
	if (!left)
		return err ? err->code : PEMBA_EIO;
	int nleft = PQntuples(left);
	size_t first = nleft ? (size_t)get_i64(left, 0, 0) : n;
	size_t upto = touch ? n : first;
	if (upto > 0 && (rc = copy_stage_move(s, upto, &inserted, err))) {
		PQclear(left);
		return rc;
	}
	if (upto > 0 && inserted != upto - (touch ? (size_t)nleft : 0)) {
		PQclear(left);
		return error_set(err, PEMBA_EIO,
		                 "datastore: %zu of %zu relationships went in "
		                 "where %zu were expected",
		                 inserted, upto,
		                 upto - (touch ? (size_t)nleft : 0));
	}
	if (!touch) {
		PQclear(left);
		*done_out = first;
		return first < n ? exists_error(&rels[first], err) : PEMBA_OK;
	}
	for (int k = 0; k < nleft && !rc; k++) {
		size_t i = (size_t)get_i64(left, k, 0);
		assert(i < n);
		if ((rc = pg_txn_touch(&s->txn.base, &rels[i], err)))
			*done_out = i;
	}
	PQclear(left);
	if (!rc)
		*done_out = n;
	return rc;
}

/* CREATE / TOUCH of rels[0..n): COPY for large batches, else 64-row
 * INSERTs; the same results either way (write_batch's contract). */
static int batch_write(store_txn *base, bool touch, const store_rel *rels,
                       size_t n, size_t *done_out, pemba_error *err)
{
	pg_store *s = txn_store(base);
	size_t done = 0;
	int rc = n >= COPY_MIN_ROWS
	             ? copy_batch(s, touch, rels, n, &done, err)
	             : write_batch(s, touch, rels, n, &done, err);
	if (done_out)
		*done_out = done;
	return rc;
}

static int pg_txn_create_batch(store_txn *base, const store_rel *rels, size_t n,
                               size_t *done_out, pemba_error *err)
{
	return batch_write(base, false, rels, n, done_out, err);
}

static int pg_txn_touch_batch(store_txn *base, const store_rel *rels, size_t n,
                              size_t *done_out, pemba_error *err)
{
	return batch_write(base, true, rels, n, done_out, err);
}

static int pg_txn_delete(store_txn *base, const store_rel *key,
                         int *deleted_out, pemba_error *err)
{
	pg_store *s = txn_store(base);
	const char *v[NKEY];
	key_values(key, v);
	int closed = 0;
	int rc = rel_close(s, v, &closed, err);
	if (deleted_out)
		*deleted_out = closed;
	return rc;
}

/* Appends the text of one element of a text[] literal. */
static void array_element(strbuf *sb, const char *v)
{
	strbuf_putc(sb, '"');
	for (; *v; v++) {
		if (*v == '"' || *v == '\\')
			strbuf_putc(sb, '\\');
		strbuf_putc(sb, *v);
	}
	strbuf_putc(sb, '"');
}

/*
 * Ends the live versions of the n keys in the first six columns of `keys`
 * in one statement (rel_close for many keys): versions created by an
 * earlier revision get deleted_rev = this one, versions created by this
 * transaction are removed.  The keys travel as six text[] parameters.
 */
static int close_keys(pg_store *s, const PGresult *keys, int n,
                      uint64_t *closed_out, pemba_error *err)
{
	strbuf arrays[NKEY];
	const char *v[NKEY + 1];
	for (int c = 0; c < NKEY; c++) {
		strbuf_init(&arrays[c]);
		strbuf_putc(&arrays[c], '{');
		for (int i = 0; i < n; i++) {
			if (i)
				strbuf_putc(&arrays[c], ',');
			array_element(&arrays[c], PQgetvalue(keys, i, c));
		}
		strbuf_putc(&arrays[c], '}');
		v[c] = arrays[c].data;
	}
	num_text rev = num((int64_t)s->txn.rev);
	v[NKEY] = rev.s;
	PGresult *r = run(
	    s, -1,
	    "WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], "
	    "$3::text[], $4::text[], $5::text[], $6::text[]) AS k(rt, rid, "
	    "rel, st, sid, srel)), dropped AS (DELETE FROM relationships AS r "
	    "USING k WHERE r.resource_type = k.rt AND r.resource_id = k.rid "
	    "AND r.relation = k.rel AND r.subject_type = k.st AND "
	    "r.subject_id = k.sid AND r.subject_relation = k.srel AND "
	    "r.deleted_rev = 0 AND r.created_rev = $7::bigint RETURNING 1), "
	    "closed AS (UPDATE relationships AS r SET deleted_rev = "
	    "$7::bigint FROM k WHERE r.resource_type = k.rt AND "
	    "r.resource_id = k.rid AND r.relation = k.rel AND r.subject_type "
	    "= k.st AND r.subject_id = k.sid AND r.subject_relation = k.srel "
	    "AND r.deleted_rev = 0 AND r.created_rev < $7::bigint RETURNING "
	    "1) SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM "
	    "closed)",
	    NKEY + 1, v, "deleting relationships", err);
	for (int c = 0; c < NKEY; c++)
		strbuf_free(&arrays[c]);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	*closed_out = (uint64_t)get_i64(r, 0, 0);
	PQclear(r);
	return PEMBA_OK;
}

/*
 * Rounds of: read up to DELETE_CHUNK live matching rows (one page), end
 * their versions in one statement (close_keys).  Ended versions are no longer
 * live, so each round's query starts over without a cursor.  Expired rows are
 * deleted too.
 */
static int pg_txn_delete_filter(store_txn *base, const store_filter *f,
                                size_t limit, size_t *deleted_out,
                                int *more_out, pemba_error *err)
{
	pg_store *s = txn_store(base);
	size_t deleted = 0;
	int more = 0, rc = PEMBA_OK;
	for (;;) {
		size_t want = DELETE_CHUNK;
		if (limit && limit - deleted < want)
			want = limit - deleted;
		if (want == 0)
			break;
		pg_iter *it;
		if ((rc = query_start(s, f, true, 0, NULL, want,
		                      NOW_SHOW_EXPIRED, &it, err)))
			break;
		rc = iter_fetch(it, err);
		int n = rc ? 0 : it->nrows;
		if (n > 0) {
			uint64_t closed = 0;
			rc = close_keys(s, it->page, n, &closed, err);
			deleted += (size_t)closed;
		}
		pg_iter_close(&it->base);
		if (rc || (size_t)n < want)
			break;
	}
	if (!rc && limit && deleted == limit) {
		pg_iter *it;
		if (!(rc = query_start(s, f, true, 0, NULL, 1, NOW_SHOW_EXPIRED,
		                       &it, err))) {
			if (!(rc = iter_fetch(it, err)))
				more = it->nrows > 0;
			pg_iter_close(&it->base);
		}
	}
	if (deleted_out)
		*deleted_out = deleted;
	if (more_out)
		*more_out = more;
	return rc;
}

static int pg_txn_write_schema(store_txn *base, const char *text, size_t len,
                               pemba_error *err)
{
	pg_store *s = txn_store(base);
	num_text rev = num((int64_t)s->txn.rev);
	const char *v[2] = {rev.s, NULL};
	int rc = run_cmd(s, ST_SCHEMA_CLOSE, NULL, 1, v, "writing the schema",
	                 NULL, err);
	if (rc)
		return rc;
	char *copy = xstrndup(text, len);
	v[1] = copy;
	rc = run_cmd(s, ST_SCHEMA_PUT, NULL, 2, v, "writing the schema", NULL,
	             err);
	free(copy);
	return rc;
}

static int pg_txn_set_metadata(store_txn *base, const char *json,
                               pemba_error *err)
{
	pg_store *s = txn_store(base);
	num_text rev = num((int64_t)s->txn.rev);
	const char *v[2] = {rev.s, json && *json ? json : NULL};
	return run_cmd(s, ST_SET_METADATA, NULL, 2, v,
	               "recording transaction metadata", NULL, err);
}

/*
 * Sends the COMMIT of the transaction open on the handle's connection
 * (with NOTIFY pemba_commit, delivered only if it commits: every
 * process's commit listener wakes its waiters).  Does not roll back or
 * give the connection back: the caller does.
 */
static int send_commit(pg_store *s, pemba_error *err)
{
	int rc = PEMBA_OK;
	if (!s->conn || PQstatus(s->conn) != CONNECTION_OK)
		return error_set(err, PEMBA_EIO,
		                 "datastore unavailable: the connection to %s "
		                 "was lost before the commit",
		                 s->shown);
	PGresult *r = PQexec(s->conn, "NOTIFY " COMMIT_CHANNEL "; COMMIT");
	if (!result_ok(r))
		rc = db_error(s, r, "committing", err);
	else if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
		/* COMMIT of a failed transaction rolls it back. */
		rc = error_set(err, PEMBA_EIO,
		               "datastore: committing: the transaction was "
		               "rolled back after an earlier error");
	PQclear(r);
	return rc;
}

static int group_commit(pg_store *s, pemba_error *err);
static void group_abort(pg_store *s);
/* ==================================================== deferred indexes */

/*
 * store_txn_defer_indexes: in a transaction that finds `relationships`
 * without any row (not even an old version), the table's secondary
 * indexes (every index but the primary key, which ON CONFLICT needs) are
 * dropped inside the transaction and created again, with the definitions
 * PostgreSQL reported (pg_get_indexdef), just before COMMIT: each is then
 * built by one sort of the loaded rows instead of row by row.  DDL is
 * transactional, so an abort brings them back as they were.  The DROP
 * takes an ACCESS EXCLUSIVE lock on the table until the commit: other
 * sessions' reads of relationships wait (lock_timeout) meanwhile, which
 * is why only an empty datastore qualifies.
 */
static int pg_txn_defer_indexes(store_txn *base, pemba_error *err)
{
	pg_store *s = txn_store(base);
	if (s->txn.deferred_indexes)
		return PEMBA_OK;
	PGresult *r = run(s, -1,
	                  "SELECT c.oid::regclass::text, "
	                  "pg_get_indexdef(c.oid) FROM pg_index AS i JOIN "
	                  "pg_class AS c ON c.oid = i.indexrelid WHERE "
	                  "i.indrelid = 'relationships'::regclass AND NOT "
	                  "i.indisprimary AND NOT EXISTS (SELECT 1 FROM "
	                  "relationships) ORDER BY 1",
	                  0, NULL, "listing the indexes", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	strbuf create, drop;
	strbuf_init(&create);
	strbuf_init(&drop);
	for (int i = 0; i < PQntuples(r); i++) {
		strbuf_printf(&drop, "DROP INDEX %s;", PQgetvalue(r, i, 0));
		strbuf_printf(&create, "%s;", PQgetvalue(r, i, 1));
	}
	PQclear(r);
	int rc = PEMBA_OK;
	if (drop.len)
		rc = run_cmd(s, -1, drop.data, 0, NULL, "deferring the indexes",
		             NULL, err);
	if (!rc && create.len)
		s->txn.deferred_indexes = strbuf_detach(&create, NULL);
	strbuf_free(&create);
	strbuf_free(&drop);
	return rc;
}

/* At commit: creates the indexes store_txn_defer_indexes dropped (a
 * failure fails the commit, which rolls everything back). */
static int deferred_indexes_build(pg_store *s, pemba_error *err)
{
	char *sql = s->txn.deferred_indexes;
	s->txn.deferred_indexes = NULL;
	if (!sql)
		return PEMBA_OK;
	/* No statement_timeout for the build: it takes what it takes. */
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb, "SET LOCAL statement_timeout = 0; %s", sql);
	int rc =
	    run_cmd(s, -1, sb.data, 0, NULL, "building the indexes", NULL, err);
	strbuf_free(&sb);
	free(sql);
	return rc;
}

static void deferred_indexes_forget(pg_store *s)
{
	free(s->txn.deferred_indexes);
	s->txn.deferred_indexes = NULL;
}

static int pg_txn_commit(store_txn *base, pemba_error *err)
{
	pg_store *s = txn_store(base);
	int rc = deferred_indexes_build(s, err);
	if (rc) {
		if (s->txn.group)
			group_abort(s);
		else
			rollback(s);
		txn_finish(s, false);
		conn_release(s);
		return rc;
	}
	rc = s->txn.group ? group_commit(s, err) : send_commit(s, err);
	if (rc && !s->txn.group)
		rollback(s);
	txn_finish(s, rc == PEMBA_OK);
	conn_release(s);
	if (!rc)
		store_commit_signal();
	return rc;
}

static void pg_txn_abort(store_txn *base)
{
	pg_store *s = txn_store(base);
	deferred_indexes_forget(s);
	if (s->txn.group)
		group_abort(s);
	else
		rollback(s);
	txn_finish(s, false);
	conn_release(s);
}

/* ---------------------------------------- positions of a mirrored source */

static int insert_position(pg_store *s, const store_position *p,
                           pemba_revision target, pemba_error *err)
{
	num_text k = num(p->order_key), t = num((int64_t)target);
	const char *v[5] = {p->source, p->revision, k.s, t.s,
	                    p->exact ? "1" : "0"};
	return run_cmd(s, -1,
	               "INSERT INTO source_positions(source, revision, "
	               "order_key, target_rev, exact) VALUES ($1, $2, $3, $4, "
	               "$5) ON CONFLICT DO NOTHING",
	               5, v, "recording a source position", NULL, err);
}

static int pg_txn_record_position(store_txn *base, const store_position *p,
                                  pemba_error *err)
{
	pg_store *s = txn_store(base);
	return insert_position(s, p, s->txn.rev, err);
}

static int pg_record_position(store *base, const store_position *p,
                              pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = check_layout(s, err);
	if (rc || (rc = check_writable(s, err)))
		return rc;
	if (s->in_txn)
		return error_set(err, PEMBA_EINVAL,
		                 "recording a source position inside a write "
		                 "transaction");
	if ((rc = begin_write(s, err)))
		return rc;
	pemba_revision target = p->target_rev;
	if (target == 0 && (rc = read_head(s, &target, NULL, err)))
		goto fail;
	if ((rc = insert_position(s, p, target, err)) ||
	    (rc = exec_simple(s, "COMMIT", err)))
		goto fail;
	return PEMBA_OK;
fail:
	rollback(s);
	return rc;
}

static int position_query(pg_store *s, const char *sql, const char *source,
                          const char *text, int64_t key, bool *found,
                          int64_t *c0, int64_t *c1, pemba_error *err)
{
	num_text k = num(key);
	const char *v[2] = {source, text ? text : k.s};
	int n = strstr(sql, "$2") ? 2 : 1;
	PGresult *r =
	    run(s, -1, sql, n, v, "looking up a source position", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	*found = false;
	if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
		*found = true;
		*c0 = get_i64(r, 0, 0);
		if (c1)
			*c1 = get_i64(r, 0, 1);
	}
	PQclear(r);
	return PEMBA_OK;
}

static int pg_lookup_position(store *base, const char *source,
                              const char *revision, int64_t lower,
                              int64_t upper, store_position_lookup *out,
                              pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	int64_t a = 0, b = 0;
	bool found = false;
	rc = position_query(s,
	                    "SELECT min(order_key), max(order_key) FROM "
	                    "source_positions WHERE source = $1",
	                    source, NULL, 0, &found, &a, &b, err);
	if (rc || !found)
		return rc;
	out->known = true;
	out->min_key = a;
	out->max_key = b;
	rc = position_query(s,
	                    "SELECT min(target_rev), 0 FROM source_positions "
	                    "WHERE source = $1 AND order_key = $2::bigint",
	                    source, NULL, out->max_key, &found, &a, NULL, err);
	if (rc)
		return rc;
	out->max_target = (pemba_revision)a;
	if (revision) {
		rc = position_query(s,
		                    "SELECT target_rev, exact FROM "
		                    "source_positions WHERE source = $1 AND "
		                    "revision = $2",
		                    source, revision, 0, &out->exact_found, &a,
		                    &b, err);
		if (rc)
			return rc;
		out->exact_target = (pemba_revision)a;
		out->exact_is_exact = b != 0;
	}
	rc = position_query(s,
	                    "SELECT target_rev, 0 FROM source_positions WHERE "
	                    "source = $1 AND order_key >= $2::bigint ORDER BY "
	                    "order_key, target_rev LIMIT 1",
	                    source, NULL, upper, &out->covering_found, &a, NULL,
	                    err);
	if (rc)
		return rc;
	out->covering_target = (pemba_revision)a;
	rc = position_query(s,
	                    "SELECT target_rev, 0 FROM source_positions WHERE "
	                    "source = $1 AND order_key <= $2::bigint ORDER BY "
	                    "order_key DESC, target_rev DESC LIMIT 1",
	                    source, NULL, lower, &out->before_found, &a, NULL,
	                    err);
	out->before_target = (pemba_revision)a;
	return rc;
}

/* ============================================ probes for schema changes */

/* A probe's SQL and its text parameters. */
typedef struct probe_sql {
	strbuf sql;
	const char *vals[6];
	int n;
} probe_sql;

static void probe_name(probe_sql *q, const char *column, const char *name)
{
	if (!name)
		return;
	q->vals[q->n++] = name;
	strbuf_printf(&q->sql, " AND %s = $%d", column, q->n);
}

static void probe_where(probe_sql *q, const store_probe *p)
{
	probe_name(q, "resource_type", p->resource_type);
	probe_name(q, "relation", p->relation);
	probe_name(q, "subject_type", p->subject_type);
	if (p->wildcard)
		strbuf_puts(&q->sql, " AND subject_id = '*'");
	if (p->subject_relation) {
		const char *r = normalize_subject_relation(p->subject_relation);
		probe_name(q, "subject_relation", r ? r : "");
	}
	if (p->caveat_name)
		probe_name(q, "caveat_name", p->caveat_name);
	if (p->expiration == STORE_EXPIRATION_WITHOUT)
		strbuf_puts(&q->sql, " AND expiration_ms IS NULL");
	else if (p->expiration == STORE_EXPIRATION_WITH)
		strbuf_puts(&q->sql, " AND expiration_ms IS NOT NULL");
}

static int pg_txn_probe(store_txn *base, const store_probe *p,
                        store_probe_fn fn, void *ctx, pemba_error *err)
{
	pg_store *s = txn_store(base);
	probe_sql q = {0};
	strbuf_init(&q.sql);
	strbuf_puts(&q.sql, "SELECT " ROW_COLUMNS
	                    " FROM relationships WHERE deleted_rev = 0");
	probe_where(&q, p);
	strbuf_printf(&q.sql,
	              " AND (expiration_ms IS NULL OR expiration_ms > %lld)"
	              " LIMIT 1",
	              (long long)now_ms_wall());
	PGresult *r =
	    run(s, -1, q.sql.data, q.n, q.vals, "probing relationships", err);
	strbuf_free(&q.sql);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	int found = PQntuples(r) > 0;
	if (found && fn) {
		store_rel row;
		row_decode(r, 0, &row);
		fn(ctx, &row);
	}
	PQclear(r);
	return found;
}

static int pg_count_groups(store *base, pemba_revision at, const store_probe *p,
                           store_group_fn fn, void *ctx, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if ((rc = pg_read_begin(base, err)))
		return rc;
	if (at == PEMBA_REVISION_HEAD && (rc = read_head(s, &at, NULL, err)))
		goto out;
	probe_sql q = {0};
	strbuf_init(&q.sql);
	strbuf_printf(&q.sql,
	              "SELECT relation, subject_type, subject_relation, "
	              "subject_id = '*', caveat_name, count(*), resource_type "
	              "FROM relationships WHERE created_rev <= %llu AND "
	              "(deleted_rev = 0 OR deleted_rev > %llu)",
	              (unsigned long long)at, (unsigned long long)at);
	probe_where(&q, p);
	strbuf_printf(&q.sql,
	              " AND (expiration_ms IS NULL OR expiration_ms > %lld)"
	              " GROUP BY 7, 1, 2, 3, 4, 5 ORDER BY 7, 1, 2, 3, 4, 5",
	              (long long)request_now(s));
	PGresult *r =
	    run(s, -1, q.sql.data, q.n, q.vals, "counting relationships", err);
	strbuf_free(&q.sql);
	if (!r) {
		rc = err ? err->code : PEMBA_EIO;
		goto out;
	}
	int n = PQntuples(r);
	for (int i = 0; i < n && rc == 0; i++) {
		store_group_count g;
		g.resource_type = PQgetvalue(r, i, 6);
		g.relation = PQgetvalue(r, i, 0);
		g.subject_type = PQgetvalue(r, i, 1);
		g.subject_relation = PQgetvalue(r, i, 2);
		g.wildcard = PQgetvalue(r, i, 3)[0] == 't';
		g.caveat_name = PQgetvalue(r, i, 4);
		g.count = (uint64_t)get_i64(r, i, 5);
		rc = fn(ctx, &g);
	}
	PQclear(r);
out:
	pg_read_end(base);
	return rc;
}

/* ================================================================== GC */

/*
 * GC in bounded steps, so that no statement runs long and the write lock
 * is held only briefly (work per call is bounded by GC_BATCH rows a
 * statement, not by the size of the datastore):
 *
 *   1. expired relationships, GC_BATCH at a time, each batch its own
 *      transaction under the write lock (live rows: a writer may be
 *      touching them);
 *   2. one write transaction computes the new floor, drops schema
 *      versions, revision records and source positions below it, and
 *      records it;
 *   3. versions ended at or before the floor, GC_BATCH at a time, each
 *      batch its own statement: no reader may read below the floor any
 *      more, and no writer touches ended versions, so no lock is needed
 *      (a reader's REPEATABLE READ snapshot from before step 2 still sees
 *      them).  Step 3 also finishes what an earlier, interrupted run left.
 */
#define GC_BATCH 10000

/* Runs `sql` (one DELETE of at most GC_BATCH rows, $1 bound to value) until
 * it deletes fewer; under the write lock when `locked`. */
static int gc_batches(pg_store *s, const char *sql, int64_t value, bool locked,
                      uint64_t *count, pemba_error *err)
{
	num_text v0 = num(value);
	const char *v[1] = {v0.s};
	for (;;) {
		uint64_t n = 0;
		int rc;
		if (locked && (rc = begin_write(s, err)))
			return rc;
		if ((rc = run_cmd(s, -1, sql, 1, v, "garbage collection", &n,
		                  err)) ||
		    (locked && (rc = exec_simple(s, "COMMIT", err)))) {
			rollback(s);
			return rc;
		}
		*count += n;
		if (n < GC_BATCH)
			return PEMBA_OK;
	}
}

static int gc_run(pg_store *s, int64_t now_ms, store_gc_stats *out,
                  pemba_error *err)
{
	store_gc_stats st0;
	memset(&st0, 0, sizeof(st0));
	int rc;
	if (now_ms == 0)
		now_ms = now_ms_wall();
	if ((rc = gc_batches(
	         s,
	         "DELETE FROM relationships WHERE ctid = ANY(ARRAY("
	         "SELECT ctid FROM relationships WHERE "
	         "expiration_ms < $1::bigint LIMIT " STR(GC_BATCH) "))",
	         now_ms - s->gc_window_ms, true, &st0.expired, err)))
		return rc;

	if ((rc = begin_write(s, err)))
		return rc;
	pemba_revision head, floor, cand = 0;
	if ((rc = read_head(s, &head, NULL, err)) ||
	    (rc = read_floor(s, &floor, err)))
		goto fail;
	num_text before = num(now_ms - s->gc_window_ms);
	const char *v[1] = {before.s};
	PGresult *r = run(s, -1,
	                  "SELECT rev FROM revisions WHERE timestamp_ms < $1 "
	                  "ORDER BY timestamp_ms DESC, rev DESC LIMIT 1",
	                  1, v, "garbage collection", err);
	if (!r) {
		rc = err ? err->code : PEMBA_EIO;
		goto fail;
	}
	if (PQntuples(r) == 1)
		cand = (pemba_revision)get_i64(r, 0, 0);
	PQclear(r);
	if (cand > head)
		cand = head;
	if (cand > floor) {
		num_text c0 = num((int64_t)cand);
		const char *cv[1] = {c0.s};
		if ((rc = run_cmd(
		         s, -1,
		         "DELETE FROM schema_versions WHERE deleted_rev "
		         "IS NOT NULL AND deleted_rev <= $1",
		         1, cv, "garbage collection", &st0.schemas, err)) ||
		    (rc = run_cmd(s, -1, "DELETE FROM revisions WHERE rev < $1",
		                  1, cv, "garbage collection", &st0.revisions,
		                  err)) ||
		    /* Each source's newest position stays: it still says how
		     * far this datastore includes that source. */
		    (rc = run_cmd(s, -1,
		                  "DELETE FROM source_positions AS p WHERE "
		                  "target_rev < $1 AND EXISTS (SELECT 1 FROM "
		                  "source_positions AS q WHERE q.source = "
		                  "p.source AND q.order_key > p.order_key)",
		                  1, cv, "garbage collection", NULL, err)) ||
		    (rc = run_cmd(s, -1,
		                  "UPDATE meta SET value = $1 WHERE key = "
		                  "'gc_floor'",
		                  1, cv, "garbage collection", NULL, err)))
			goto fail;
		floor = cand;
	}
	if ((rc = exec_simple(s, "COMMIT", err)))
		goto fail;
	if (floor > s->cached_floor)
		s->cached_floor = floor;
	if ((rc = gc_batches(
	         s,
	         "DELETE FROM relationships WHERE ctid = ANY(ARRAY("
	         "SELECT ctid FROM relationships WHERE deleted_rev "
	         "> 0 AND deleted_rev <= $1::bigint LIMIT " STR(GC_BATCH) "))",
	         (int64_t)floor, false, &st0.relationships, err)))
		return rc;
	st0.floor = floor;
	*out = st0;
	return PEMBA_OK;
fail:
	rollback(s);
	return rc;
}

/*
 * One GC run, by one node at a time: the run holds a write connection
 * and, on it, the session lock PG_GC_LOCK (pg_try_advisory_lock, never
 * waiting); a handle that does not get it (another server is collecting)
 * skips this run quietly (out->skipped, nothing removed).  The lock is a
 * session lock because a run is several transactions; it is released at
 * the end, or with the session if the connection drops.
 */
static int pg_gc(store *base, int64_t now_ms, store_gc_stats *out,
                 pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	/* The lease session may have died with a PostgreSQL restart that
	 * this handle's pooled connections did not see (another handle
	 * reset them): probe it once per run (one round trip), before
	 * anything that could end the run early. */
	if (!s->in_txn && !s->read_depth)
		lease_restore(s);
	int rc = check_layout(s, err);
	if (rc || (rc = check_writable(s, err)))
		return rc;
	if (s->in_txn)
		return error_set(err, PEMBA_EINVAL,
		                 "garbage collection inside a write "
		                 "transaction");
	if (s->read_depth)
		return error_set(
		    err, PEMBA_EINVAL,
		    "garbage collection inside a read transaction");
	memset(out, 0, sizeof(*out));
	if ((rc = conn_borrow(s, true, err))) {
		conn_release(s);
		return rc;
	}
	s->pin++;
	PGresult *r =
	    run(s, -1, "SELECT pg_try_advisory_lock(" STR(PG_GC_LOCK) ")", 0,
	        NULL, "garbage collection", err);
	if (!r) {
		rc = err ? err->code : PEMBA_EIO;
	} else {
		bool locked = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
		PQclear(r);
		if (!locked) {
			out->skipped = true;
		} else {
			rc = gc_run(s, now_ms, out, err);
			if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
				PQclear(PQexec(s->conn,
				               "SELECT pg_advisory_unlock(" STR(
				                   PG_GC_LOCK) ")"));
		}
	}
	s->pin--;
	conn_release(s);
	return rc;
}

/* ==================================================== datastore settings */

static int pg_get_read_only(store *base, bool *out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	if (s->in_txn) {
		/* Read at the transaction's start, under the write lock. */
		*out = s->txn.read_only;
		return PEMBA_OK;
	}
	PGresult *r = run(s, ST_READ_ONLY_GET, NULL, 0, NULL,
	                  "reading the read-only setting", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	*out = PQntuples(r) == 1 && get_i64(r, 0, 0) != 0;
	PQclear(r);
	return PEMBA_OK;
}

static int pg_list_deprecations(store *base, store_deprecation **out,
                                size_t *n_out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = check_layout(s, err);
	if (rc)
		return rc;
	/* Inside a write transaction: as read at its start, under the
	 * write lock. */
	PGresult *r = s->in_txn ? s->txn.deprecations
	                        : run(s, ST_DEPRECATIONS_LIST, NULL, 0, NULL,
	                              "reading the relation deprecations", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	size_t n = (size_t)PQntuples(r);
	if (n > 0) {
		/* One block: the array, then the strings. */
		size_t strings = 0;
		for (size_t i = 0; i < n; i++)
			strings += strlen(PQgetvalue(r, (int)i, 0)) +
			           strlen(PQgetvalue(r, (int)i, 1)) + 2;
		size_t array = n * sizeof(store_deprecation);
		char *block = xmalloc(array + strings);
		store_deprecation *list = (store_deprecation *)block;
		char *p = block + array;
		for (size_t i = 0; i < n; i++) {
			const char *type = PQgetvalue(r, (int)i, 0);
			const char *rel = PQgetvalue(r, (int)i, 1);
			list[i].resource_type = p;
			p = stpcpy(p, type) + 1;
			list[i].relation = p;
			p = stpcpy(p, rel) + 1;
			list[i].mode =
			    strcmp(PQgetvalue(r, (int)i, 2), "reject") == 0
			        ? STORE_DEPRECATION_REJECT
			        : STORE_DEPRECATION_WARN;
			list[i].set_rev = (pemba_revision)get_i64(r, (int)i, 3);
			list[i].set_ms = get_i64(r, (int)i, 4);
		}
		*out = list;
		*n_out = n;
	}
	if (r != s->txn.deprecations)
		PQclear(r);
	return PEMBA_OK;
}

/* Runs `sql` ($1..$3 text, $4 head revision, $5 wall clock; n_params
 * says how many it uses) in its own write transaction. */
static int settings_write(pg_store *s, const char *sql, int n_params,
                          const char *p1, const char *p2, const char *p3,
                          uint64_t *changes_out, const char *what,
                          pemba_error *err)
{
	int rc = check_layout(s, err);
	if (rc || (rc = check_writable(s, err)))
		return rc;
	if (s->in_txn || s->read_depth)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot change %s inside a transaction", what);
	if ((rc = begin_write(s, err)))
		return rc;
	pemba_revision head;
	if ((rc = read_head(s, &head, NULL, err)))
		goto fail;
	num_text h = num((int64_t)head), t = num(now_ms_wall());
	const char *v[5] = {p1, p2, p3, h.s, t.s};
	if ((rc = run_cmd(s, -1, sql, n_params, v, what, changes_out, err)) ||
	    (rc = exec_simple(s, "COMMIT", err)))
		goto fail;
	return PEMBA_OK;
fail:
	rollback(s);
	return rc;
}

static int pg_set_read_only(store *base, bool read_only, pemba_error *err)
{
	return settings_write(
	    (pg_store *)base,
	    "INSERT INTO settings(key, value) VALUES ('read_only', "
	    "$1::bigint) ON CONFLICT (key) DO UPDATE SET value = "
	    "excluded.value",
	    1, read_only ? "1" : "0", NULL, NULL, NULL, "the read-only setting",
	    err);
}

static int pg_set_deprecation(store *base, const char *resource_type,
                              const char *relation, store_deprecation_mode mode,
                              pemba_error *err)
{
	return settings_write(
	    (pg_store *)base,
	    "INSERT INTO relation_deprecations(resource_type, relation, mode, "
	    "set_rev, set_ms) VALUES ($1, $2, $3, $4::bigint, $5::bigint) "
	    "ON CONFLICT (resource_type, relation) DO UPDATE SET "
	    "mode = excluded.mode, set_rev = excluded.set_rev, "
	    "set_ms = excluded.set_ms",
	    5, resource_type, relation,
	    mode == STORE_DEPRECATION_REJECT ? "reject" : "warn", NULL,
	    "a relation deprecation", err);
}

static int pg_remove_deprecation(store *base, const char *resource_type,
                                 const char *relation, bool *removed_out,
                                 pemba_error *err)
{
	uint64_t changes = 0;
	int rc = settings_write((pg_store *)base,
	                        "DELETE FROM relation_deprecations WHERE "
	                        "resource_type = $1 AND relation = $2",
	                        2, resource_type, relation, NULL, &changes,
	                        "a relation deprecation", err);
	if (rc == PEMBA_OK && removed_out)
		*removed_out = changes > 0;
	return rc;
}

/* =========================================================== migrations */

/*
 * The layout version and whether pemba's tables exist (a database with
 * relationships but no version table is someone else's).  -1: error.
 */
static int read_version(pg_store *s, int *version, bool *has_tables,
                        pemba_error *err)
{
	/* Two statements: PostgreSQL resolves every table a statement
	 * names when it parses it, even in a CASE branch never taken. */
	PGresult *r =
	    run(s, -1,
	        "SELECT to_regclass('pemba_schema_version') IS NOT NULL, "
	        "to_regclass('relationships') IS NOT NULL OR "
	        "to_regclass('revisions') IS NOT NULL",
	        0, NULL, "reading the layout version", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	bool versioned = PQgetvalue(r, 0, 0)[0] == 't';
	*has_tables = PQgetvalue(r, 0, 1)[0] == 't';
	PQclear(r);
	*version = -1;
	if (!versioned)
		return PEMBA_OK;
	r = run(s, -1,
	        "SELECT coalesce(max(version), 0) FROM pemba_schema_version", 0,
	        NULL, "reading the layout version", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	*version = (int)get_i64(r, 0, 0);
	PQclear(r);
	return PEMBA_OK;
}

static int load_meta(pg_store *s, pemba_error *err)
{
	s->datastore_id[0] = '\0';
	s->cached_floor = 0;
	if (s->layout_version < 1)
		return PEMBA_OK;
	PGresult *r =
	    run(s, -1, "SELECT value FROM meta WHERE key = 'datastore_id'", 0,
	        NULL, "reading the datastore id", err);
	if (!r)
		return err ? err->code : PEMBA_EIO;
	if (PQntuples(r) == 1)
		snprintf(s->datastore_id, sizeof(s->datastore_id), "%s",
		         PQgetvalue(r, 0, 0));
	PQclear(r);
	pemba_revision floor;
	return read_floor(s, &floor, err);
}

static int migrate_prepare(pg_store *s, pemba_error *err)
{
	if (s->in_txn || s->open_iters || s->read_depth)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot migrate the datastore layout with a "
		                 "transaction or query open");
	int rc = check_writable(s, err);
	if (rc)
		return rc;
	/* Statements prepared against the old layout may not fit the new
	 * one: every pooled connection drops them (DEALLOCATE ALL) when
	 * next borrowed and prepares again on use. */
	shared_layout_moved(s->shared);
	memset(s->nonces, 0, sizeof(s->nonces));
	s->layout_changed = false;
	return PEMBA_OK;
}

/*
 * One step, from `from` to from +/- 1, in one transaction with the version
 * bump, under the migration lock and the write lock (no write transaction
 * runs across a layout change).  The version is re-read inside, so two
 * processes migrating at once do not apply a step twice.
 */
static int migrate_step(pg_store *s, int from, bool up, pemba_error *err)
{
	const postgres_migration *m =
	    &postgres_migrations[up ? from : from - 1];
	int to = up ? from + 1 : from - 1, rc;
	if ((rc = conn_borrow(s, true, err)) ||
	    (rc = exec_simple(s, MIGRATE_BEGIN_SQL, err)))
		goto fail;
	int current;
	bool tables;
	if ((rc = read_version(s, &current, &tables, err)))
		goto fail;
	if (current != from) {
		exec_simple(s, "COMMIT", NULL);
		s->layout_version = current;
		return PEMBA_OK;
	}
	PGresult *r = PQexec(s->conn, up ? m->up_sql : m->down_sql);
	if (!result_ok(r)) {
		char message[512];
		copy_message(message, sizeof(message), PQresultErrorMessage(r));
		PQclear(r);
		rc = error_set(err, PEMBA_EIO,
		               "migration %d (%s) %s failed: %s; the datastore "
		               "stays at layout version %d",
		               m->version, m->name, up ? "up" : "down", message,
		               from);
		goto fail;
	}
	PQclear(r);
	char bump[64];
	snprintf(bump, sizeof(bump),
	         "UPDATE pemba_schema_version SET version "
	         "= %d",
	         to);
	if ((rc = exec_simple(s, bump, err)) ||
	    (rc = exec_simple(s, "COMMIT", err)))
		goto fail;
	s->layout_version = to;
	shared_layout_moved(s->shared);
	return PEMBA_OK;
fail:
	rollback(s);
	return rc;
}

static int pg_migrate_up(store *base, int target, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int head = postgres_migration_count, rc;
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

static int pg_migrate_down(store *base, int target, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int head = postgres_migration_count, rc;
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

static int pg_migrate_status(store *base, int *current_out, int *head_out,
                             store_migration_info **list, size_t *nlist,
                             pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int current, rc;
	bool tables;
	if ((rc = read_version(s, &current, &tables, err)))
		return rc;
	if (current < 0)
		current = 0;
	if (current != s->layout_version && !s->in_txn && !s->open_iters &&
	    s->opts.migrate == STORE_MIGRATE_NONE) {
		shared_layout_moved(s->shared);
		s->layout_version = current;
		s->layout_changed = false;
		load_meta(s, NULL);
	} else if (current != s->layout_version) {
		layout_seen(s, current);
	}
	if (current_out)
		*current_out = current;
	if (head_out)
		*head_out = postgres_migration_count;
	if (list) {
		size_t n = (size_t)postgres_migration_count;
		store_migration_info *l = xcalloc(n, sizeof(*l));
		for (size_t i = 0; i < n; i++) {
			l[i].version = postgres_migrations[i].version;
			l[i].name = postgres_migrations[i].name;
			l[i].description = postgres_migrations[i].description;
			l[i].applied =
			    postgres_migrations[i].version <= current;
		}
		*list = l;
		if (nlist)
			*nlist = n;
	}
	return PEMBA_OK;
}

/* ======================================== processes using a datastore */

/*
 * Leases are session-level advisory locks on PG_LEASE_LOCK, held by a
 * dedicated connection (lease_conn) for as long as the handle lives: a
 * server takes it shared, a migration exclusive, both without waiting.
 * PostgreSQL drops them when the session ends, however the process died.
 * Each holder records itself in pemba_users under its backend pid; a
 * record counts only while that backend holds the lock (joined with
 * pg_locks), so records of dead sessions are ignored.
 */

/* clang-format off */
#define USERS_LIVE_SQL                                                         \
	"SELECT u.role, u.pid, u.host, u.started_ms FROM pemba_users AS u "    \
	"WHERE u.backend_pid <> $1::integer AND EXISTS (SELECT 1 FROM "        \
	"pg_locks AS l WHERE l.pid = u.backend_pid AND "                       \
	"l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid "  \
	"FROM pg_database WHERE datname = current_database()) AND "            \
	"l.classid::bigint = " STR(PG_LOCK_CLASSID) " AND "                    \
	"l.objid::bigint = 3 AND l.objsubid = 1) "                             \
	"ORDER BY u.started_ms, u.backend_pid"
/* clang-format on */

/* The holders other than backend `self` (on connection c). */
static int users_list(pg_store *s, PGconn *c, int self, store_user *out,
                      size_t cap, size_t *n_out, pemba_error *err)
{
	*n_out = 0;
	PGresult *r =
	    PQexec(c, "SELECT to_regclass('pemba_users') IS NOT NULL");
	bool exists = PQresultStatus(r) == PGRES_TUPLES_OK &&
	              PQgetvalue(r, 0, 0)[0] == 't';
	if (!result_ok(r)) {
		int rc = db_error(s, r, "listing the datastore's users", err);
		PQclear(r);
		return rc;
	}
	PQclear(r);
	if (!exists)
		return PEMBA_OK;
	num_text me = num(self);
	const char *v[1] = {me.s};
	r = PQexecParams(c, USERS_LIVE_SQL, 1, NULL, v, NULL, NULL, 0);
	if (!result_ok(r)) {
		int rc = db_error(s, r, "listing the datastore's users", err);
		PQclear(r);
		return rc;
	}
	size_t n = (size_t)PQntuples(r);
	for (size_t i = 0; i < n && i < cap; i++) {
		store_user *u = &out[i];
		memset(u, 0, sizeof(*u));
		snprintf(u->role, sizeof(u->role), "%s",
		         PQgetvalue(r, (int)i, 0));
		u->pid = (long)get_i64(r, (int)i, 1);
		snprintf(u->host, sizeof(u->host), "%s",
		         PQgetvalue(r, (int)i, 2));
		u->started_ms = get_i64(r, (int)i, 3);
	}
	*n_out = n;
	PQclear(r);
	return PEMBA_OK;
}

/* The refusal of a lease, naming a holder (as file_lease.c words it). */
static int lease_refusal(pg_store *s, PGconn *c, int self, bool exclusive,
                         pemba_error *err)
{
	store_user users[4];
	size_t n = 0;
	users_list(s, c, self, users, 4, &n, NULL);
	char first[256] = "another pemba process";
	size_t pick = 0;
	if (!exclusive)
		for (size_t i = 0; i < n && i < 4; i++)
			if (strcmp(users[i].role, "serve") != 0) {
				pick = i;
				break;
			}
	if (n > 0)
		file_lease_describe(&users[pick], first, sizeof(first));
	if (exclusive)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "datastore %s is in use by %s%s", s->shown,
		                 first, n > 1 ? " and others" : "");
	return error_set(err, PEMBA_EPRECONDITION,
	                 "datastore %s is locked by %s; try again when it "
	                 "is done",
	                 s->shown, first);
}

static int lease_take(pg_store *s, const char *role, bool exclusive,
                      pemba_error *err)
{
	char msg[512];
	PGconn *c = connect_uri(s->conn_uri, false, msg, sizeof(msg));
	if (!c)
		return error_set(err, PEMBA_EIO,
		                 "datastore unavailable: cannot connect to %s: "
		                 "%s",
		                 s->shown, msg);
	/* The record table, created once (USERS_TABLE_SQL). */
	PGresult *r = PQexec(c, USERS_TABLE_SQL);
	if (!result_ok(r)) {
		copy_message(msg, sizeof(msg), PQresultErrorMessage(r));
		PQclear(r);
		PQfinish(c);
		return error_set(err, PEMBA_EIO,
		                 "datastore %s: creating the lease records: %s",
		                 s->shown, msg);
	}
	PQclear(r);
	r = PQexec(c, exclusive ? LEASE_EXCLUSIVE_SQL : LEASE_SHARED_SQL);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		copy_message(msg, sizeof(msg), PQresultErrorMessage(r));
		PQclear(r);
		PQfinish(c);
		return error_set(err, PEMBA_EIO,
		                 "datastore unavailable: taking a lease on %s: "
		                 "%s",
		                 s->shown, msg);
	}
	bool got = PQgetvalue(r, 0, 0)[0] == 't';
	int self = (int)get_i64(r, 0, 1);
	PQclear(r);
	if (!got) {
		int rc = lease_refusal(s, c, self, exclusive, err);
		PQfinish(c);
		return rc;
	}
	char host[64] = "";
	gethostname(host, sizeof(host) - 1);
	num_text me = num(self), pid = num((int64_t)getpid()),
	         since = num(now_ms_wall());
	const char *v[4] = {me.s, role, pid.s, host};
	const char *vals[5] = {v[0], v[1], v[2], v[3], since.s};
	r = PQexecParams(c,
	                 "WITH gone AS (DELETE FROM pemba_users WHERE "
	                 "backend_pid NOT IN (SELECT pid FROM "
	                 "pg_stat_activity)) INSERT INTO pemba_users("
	                 "backend_pid, role, pid, host, started_ms) VALUES "
	                 "($1::integer, $2, $3::bigint, $4, $5::bigint) ON "
	                 "CONFLICT (backend_pid) DO UPDATE SET role = "
	                 "excluded.role, pid = excluded.pid, host = "
	                 "excluded.host, started_ms = excluded.started_ms",
	                 5, NULL, vals, NULL, NULL, 0);
	if (!result_ok(r)) {
		copy_message(msg, sizeof(msg), PQresultErrorMessage(r));
		PQclear(r);
		PQfinish(c);
		return error_set(err, PEMBA_EIO,
		                 "datastore %s: recording the lease: %s",
		                 s->shown, msg);
	}
	PQclear(r);
	s->lease_conn = c;
	s->lease_pid = self;
	return PEMBA_OK;
}

static int pg_lease(store *base, const char *role, bool exclusive,
                    pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	if (s->lease_wanted)
		return error_set(err, PEMBA_EINVAL,
		                 "this handle already holds a lease on %s",
		                 s->shown);
	int rc = lease_take(s, role, exclusive, err);
	if (rc == PEMBA_OK) {
		s->lease_wanted = true;
		s->lease_exclusive = exclusive;
		snprintf(s->lease_role, sizeof(s->lease_role), "%s", role);
	}
	return rc;
}

/*
 * After the handle's connection was reset (PostgreSQL restarted, or the
 * network dropped), the lease session most likely died too, and with it
 * the lease: take it again, so `migrate` keeps being refused while this
 * server runs.  If it cannot be taken now (a migration got in while the
 * lease was gone) the handle serves on without one and tries again at
 * the next reset.
 */
static void lease_restore(pg_store *s)
{
	if (!s->lease_wanted)
		return;
	if (s->lease_conn) {
		PGresult *r = PQexec(s->lease_conn, "SELECT 1");
		bool alive = PQresultStatus(r) == PGRES_TUPLES_OK;
		PQclear(r);
		if (alive)
			return;
		PQfinish(s->lease_conn);
		s->lease_conn = NULL;
		s->lease_pid = 0;
	}
	lease_take(s, s->lease_role, s->lease_exclusive, NULL);
}

static int pg_list_users(store *base, store_user *out, size_t cap,
                         size_t *n_out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc = conn_borrow(s, false, err);
	if (!rc) {
		s->pin++;
		rc = users_list(s, s->conn, s->lease_pid ? s->lease_pid : -1,
		                out, cap, n_out, err);
		s->pin--;
	}
	conn_release(s);
	return rc;
}

/* ====================================================== copies, identity */

static int pg_snapshot(store *base, const char *path, bool new_identity,
                       store_progress_fn fn, void *ctx,
                       store_snapshot_info *out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	(void)path;
	(void)new_identity;
	(void)fn;
	(void)ctx;
	(void)out;
	return error_set(err, PEMBA_EUNSUPPORTED,
	                 "datastore %s is PostgreSQL: copy it with pg_dump "
	                 "and pg_restore (revisions, ZedTokens and the "
	                 "identity are data and survive the copy; give a "
	                 "copy that runs as a separate instance a new "
	                 "identity with `pemba datastore new-identity`)",
	                 s->shown);
}

static int pg_new_identity(store *base, char id_out[64], pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	int rc;
	if (s->layout_changed)
		return layout_changed_error(s, err);
	if ((rc = check_writable(s, err)))
		return rc;
	if (s->layout_version < 1)
		return error_set(err, PEMBA_EINVAL,
		                 "datastore %s is empty (layout version 0): it "
		                 "has no identity yet",
		                 s->shown);
	if (s->in_txn || s->read_depth)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot change the identity inside a "
		                 "transaction");
	if ((rc = exec_simple(s,
	                      "UPDATE meta SET value = replace("
	                      "gen_random_uuid()::text, '-', '') WHERE key = "
	                      "'datastore_id'",
	                      err)) ||
	    (rc = load_meta(s, err)))
		return rc;
	snprintf(id_out, 64, "%s", s->datastore_id);
	return PEMBA_OK;
}

/* ====================================================== commit listeners */

/*
 * Commits by other processes, heard at once: one thread per datastore per
 * process holds a session that LISTENs on COMMIT_CHANNEL and raises the
 * process-wide commit signal (store_commit_signal) on every
 * notification, so store_wait_revision and the server's Watch streams
 * wake as they do for this process's own commits, instead of at their
 * next poll.  Shared by every handle of the process on the same
 * datastore (reference-counted by libpq URI); the last handle to close
 * stops it.  A handle starts (or joins) it on first need: its first
 * store_wait_revision or store_changes (a Watch), not at open, so that a
 * process that only opens handles runs no thread (and may fork safely).  While
 * PostgreSQL is unreachable the thread retries every second; the polls go on
 * meanwhile, so nothing depends on it.
 */
typedef struct pg_listener {
	char *conn_uri;
	int refs;
	pthread_t thread;
	int stop[2]; /* pipe: written to stop the thread */
	pid_t pid;   /* the process whose thread it is (see fork below) */
	struct pg_listener *next;
} pg_listener;

static pthread_mutex_t listeners_mutex = PTHREAD_MUTEX_INITIALIZER;
static pg_listener *listeners;

static void *listener_main(void *arg)
{
	pg_listener *l = arg;
	PGconn *c = NULL;
	for (;;) {
		if (!c) {
			char msg[256];
			c = connect_uri(l->conn_uri, false, msg, sizeof(msg));
			if (c) {
				PGresult *r =
				    PQexec(c, "LISTEN " COMMIT_CHANNEL);
				if (PQresultStatus(r) != PGRES_COMMAND_OK) {
					PQfinish(c);
					c = NULL;
				}
				PQclear(r);
			}
			/* (Reconnected: commits may have been missed.) */
			if (c)
				store_commit_signal();
		}
		struct pollfd fds[2] = {
		    {.fd = l->stop[0], .events = POLLIN},
		    {.fd = c ? PQsocket(c) : -1, .events = POLLIN}};
		int n = poll(fds, c ? 2 : 1, c ? -1 : 1000);
		if (n > 0 && (fds[0].revents & POLLIN))
			break;
		if (!c || n <= 0 ||
		    !(fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		if (!PQconsumeInput(c)) {
			PQfinish(c);
			c = NULL;
			poll(fds, 1, 1000); /* then reconnect (or stop) */
			if (fds[0].revents & POLLIN)
				break;
			continue;
		}
		bool heard = false;
		PGnotify *note;
		while ((note = PQnotifies(c)) != NULL) {
			heard = true;
			PQfreemem(note);
		}
		if (heard)
			store_commit_signal();
	}
	PQfinish(c);
	return NULL;
}

/* Starts (or shares) the listener of conn_uri; NULL if it cannot. */
static struct pg_listener *listener_acquire(const char *conn_uri)
{
	pthread_mutex_lock(&listeners_mutex);
	pg_listener *l;
	/* A child process (fork) inherits the registry but not the threads:
	 * it never shares, stops or joins its parent's listeners. */
	for (l = listeners; l; l = l->next)
		if (l->pid == getpid() && strcmp(l->conn_uri, conn_uri) == 0)
			break;
	if (l) {
		l->refs++;
	} else {
		l = xcalloc(1, sizeof(*l));
		l->conn_uri = xstrdup(conn_uri);
		l->refs = 1;
		l->pid = getpid();
		if (pipe(l->stop) != 0 ||
		    pthread_create(&l->thread, NULL, listener_main, l) != 0) {
			free(l->conn_uri);
			free(l);
			l = NULL;
		} else {
			l->next = listeners;
			listeners = l;
		}
	}
	pthread_mutex_unlock(&listeners_mutex);
	return l;
}

static void listener_release(pg_listener *l)
{
	if (!l)
		return;
	if (l->pid != getpid())
		return; /* the parent's, inherited through fork */
	pthread_mutex_lock(&listeners_mutex);
	bool last = --l->refs == 0;
	if (last)
		for (pg_listener **p = &listeners; *p; p = &(*p)->next)
			if (*p == l) {
				*p = l->next;
				break;
			}
	pthread_mutex_unlock(&listeners_mutex);
	if (!last)
		return;
	if (write(l->stop[1], "x", 1) != 1) {
		/* the pipe cannot be full: one byte, once */
	}
	pthread_join(l->thread, NULL);
	close(l->stop[0]);
	close(l->stop[1]);
	free(l->conn_uri);
	free(l);
}

/* ============================================================ lifecycle */

static void pg_close(store *base)
{
	pg_store *s = (pg_store *)base;
	if (!s)
		return;
	if (s->in_txn)
		pg_txn_abort(&s->txn.base);
	s->read_depth = 0;
	s->read_pending = false;
	s->pin = 0;
	rollback(s);
	/* Still in a transaction block (a failed ROLLBACK): not reusable. */
	conn_discard(s);
	shared_release(s->shared);
	for (int i = 0; s->replica_uris && i < s->opts.n_replicas; i++)
		free(s->replica_uris[i]);
	free(s->replica_uris);
	/* Release the lease now rather than when the backend notices the
	 * closed session (asynchronously): a migration started right after
	 * this server stopped must not be refused. */
	if (s->lease_conn && PQstatus(s->lease_conn) == CONNECTION_OK)
		PQclear(PQexec(s->lease_conn,
		               "DELETE FROM pemba_users WHERE backend_pid = "
		               "pg_backend_pid(); SELECT "
		               "pg_advisory_unlock_all()"));
	PQfinish(s->lease_conn);
	listener_release(s->listener);
	free(s->uri);
	free(s->conn_uri);
	free(s->shown);
	free(s);
}

static int pg_open(const char *uri, const store_options *opts, store **out,
                   pemba_error *err)
{
	pg_store *s = xcalloc(1, sizeof(*s));
	s->base.ops = &store_postgres_ops;
	s->uri = xstrdup(uri);
	s->shown = store_display_uri(uri);
	s->opts = *opts;
	s->gc_window_ms =
	    (opts->gc_window_seconds > 0 ? opts->gc_window_seconds
	                                 : DEFAULT_GC_WINDOW_SECONDS) *
	    1000;
	int rc;
	if ((rc = parse_params(s, err)))
		goto fail;
	if (opts->n_replicas > MAX_REPLICAS || opts->n_replicas < 0) {
		rc = error_set(err, PEMBA_EINVAL,
		               "at most %d read replicas (got %d)",
		               MAX_REPLICAS, opts->n_replicas);
		goto fail;
	}
	/* Our own copies: a reopened handle (store_reopen) uses them. */
	if (opts->n_replicas > 0) {
		s->replica_uris =
		    xcalloc((size_t)opts->n_replicas, sizeof(char *));
		for (int i = 0; i < opts->n_replicas; i++) {
			const char *u = opts->replica_uris[i];
			s->replica_uris[i] = xstrdup(u);
			if (strncmp(u, "postgres://", 11) != 0 &&
			    strncmp(u, "postgresql://", 13) != 0) {
				char *shown = store_display_uri(u);
				rc = error_set(
				    err, PEMBA_EINVAL,
				    "read replica URI \"%s\" is not a "
				    "PostgreSQL URI (postgres://... or "
				    "postgresql://...)",
				    shown);
				free(shown);
				s->opts.n_replicas = i + 1;
				goto fail;
			}
		}
		s->opts.replica_uris = (const char *const *)s->replica_uris;
	}
	s->shared = shared_acquire(s->conn_uri, s->read_only,
	                           opts->pool_read_max, opts->pool_write_max,
	                           s->replica_uris, opts->n_replicas);
	int version;
	bool tables;
	if ((rc = read_version(s, &version, &tables, err)))
		goto fail;
	if (version < 0 && tables) {
		rc =
		    error_set(err, PEMBA_EINVAL,
		              "%s is a PostgreSQL database but not a pemba "
		              "datastore (it has tables named like pemba's but "
		              "no pemba_schema_version)",
		              s->shown);
		goto fail;
	}
	if (version < 0)
		version = 0;
	s->layout_version = version;
	if (version > postgres_migration_count) {
		rc = error_set(err, PEMBA_EVERSION,
		               "datastore layout version %d is newer than this "
		               "binary knows (newest is %d); upgrade pemba",
		               version, postgres_migration_count);
		goto fail;
	}
	if (version < postgres_migration_count) {
		bool fresh = version == 0 && !tables;
		if ((opts->migrate == STORE_MIGRATE_AUTO ||
		     (opts->migrate == STORE_MIGRATE_NEW_ONLY && fresh)) &&
		    !s->read_only) {
			if ((rc = pg_migrate_up(&s->base, 0, err)))
				goto fail;
		} else if (opts->migrate != STORE_MIGRATE_NONE) {
			rc = layout_pending_error(s, version, err);
			goto fail;
		}
	}
	if ((rc = load_meta(s, err)))
		goto fail;
	s->ready = true;
	*out = &s->base;
	return PEMBA_OK;
fail:
	pg_close(&s->base);
	return rc;
}

static const char *pg_datastore_id(store *base)
{
	return ((pg_store *)base)->datastore_id;
}

static int pg_reopen(store *base, store **out, pemba_error *err)
{
	pg_store *s = (pg_store *)base;
	store_options opts = s->opts;
	if (opts.migrate != STORE_MIGRATE_NONE)
		opts.migrate = STORE_MIGRATE_REQUIRE;
	opts.must_exist = 1;
	int rc = pg_open(s->uri, &opts, out, err);
	if (rc == PEMBA_EVERSION && layout_moved(s))
		return layout_changed_error(s, err);
	if (rc == 0 && s->layout_changed) {
		pg_close(*out);
		*out = NULL;
		return layout_changed_error(s, err);
	}
	return rc;
}

const store_ops store_postgres_ops = {
    .scheme = "postgres",
    .open = pg_open,
    .close = pg_close,
    .datastore_id = pg_datastore_id,
    .head_revision = pg_head_revision,
    .check_revision = pg_check_revision,
    .reopen = pg_reopen,
    .wait_revision = pg_wait_revision,
    .scan = pg_scan,
    .changes = pg_changes,
    .txn_set_metadata = pg_txn_set_metadata,
    .txn_defer_indexes = pg_txn_defer_indexes,
    .txn_record_position = pg_txn_record_position,
    .record_position = pg_record_position,
    .lookup_position = pg_lookup_position,
    .read_begin = pg_read_begin,
    .read_end = pg_read_end,
    .query = pg_query,
    .iter_next = pg_iter_next,
    .iter_close = pg_iter_close,
    .read_schema = pg_read_schema,
    .txn_begin = pg_txn_begin,
    .txn_query = pg_txn_query,
    .txn_create = pg_txn_create,
    .txn_touch = pg_txn_touch,
    .txn_create_batch = pg_txn_create_batch,
    .txn_touch_batch = pg_txn_touch_batch,
    .txn_delete = pg_txn_delete,
    .txn_delete_filter = pg_txn_delete_filter,
    .txn_write_schema = pg_txn_write_schema,
    .txn_commit = pg_txn_commit,
    .txn_abort = pg_txn_abort,
    .gc = pg_gc,
    .revision_nonce = pg_revision_nonce,
    .snapshot = pg_snapshot,
    .new_identity = pg_new_identity,
    .lease = pg_lease,
    .list_users = pg_list_users,
    .migrate_status = pg_migrate_status,
    .migrate_up = pg_migrate_up,
    .migrate_down = pg_migrate_down,
    .get_read_only = pg_get_read_only,
    .set_read_only = pg_set_read_only,
    .list_deprecations = pg_list_deprecations,
    .set_deprecation = pg_set_deprecation,
    .remove_deprecation = pg_remove_deprecation,
    .txn_probe = pg_txn_probe,
    .count_groups = pg_count_groups,
};
