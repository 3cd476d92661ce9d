/*
 * stage.c -- the staging area of bulk loads (stage.h): a temporary SQLite
 * database on a private connection.
 *
 * One table, clustered on the key:
 *
 *   staged(rt, rid, rel, st, sid, srel,        the key (TEXT)
 *          caveat, context, expiration,        the rest of the row
 *          seq)                                the row's put order
 *   PRIMARY KEY (rt, rid, rel, st, sid, srel)  WITHOUT ROWID
 *
 * so a put is one B-tree insert and reading in key order is a plain scan.
 * Rows go in STAGE_BATCH_ROWS per INSERT statement (the statement costs
 * more than the B-tree work for short rows).  CREATE semantics without a
 * statement journal: the INSERT says ON CONFLICT DO NOTHING, and when it
 * inserted fewer rows than it was given, the first row of the chunk whose
 * key holds another row's `seq` is the duplicate, exactly as one row at a
 * time would have found it.
 *
 * Settings and why:
 *   - the database file is "" (SQLite's private temporary database): pages
 *     live in the page cache and spill to an unlinked temporary file;
 *   - journal_mode OFF, synchronous OFF: nothing here must survive a
 *     crash, and nothing is ever rolled back (a failed import closes its
 *     stage);
 *   - one transaction from open to close: no commit work per put;
 *   - secure_delete OFF (Debian's SQLite turns it on): replaced rows need
 *     not be zeroed in a file nobody else can open;
 *   - SQLite's default page size (4 KiB): 8 to 64 KiB pages measured no
 *     faster with the cache really bounded (cache_size must then be set
 *     after page_size, or SQLite computes its spill threshold from the
 *     old page size and holds far more than STAGE_CACHE_KIB).
 */
#include "store/stage.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "util/error.h"
#include "util/xalloc.h"

/* Rows per INSERT statement (10 parameters a row). */
#define STAGE_BATCH_ROWS 64
#define STAGE_KEY "rt, rid, rel, st, sid, srel"

struct store_stage {
	sqlite3 *db;
	/* put[replace][n]: the INSERT of n rows, prepared on first use. */
	sqlite3_stmt *put[2][STAGE_BATCH_ROWS + 1];
	sqlite3_stmt *seq_of; /* seq of a staged key */
	sqlite3_stmt *scan;   /* every row in key order, while reading */
	bool scan_done;       /* the scan returned its last row */
	int64_t next_seq;
};

static int stage_error(store_stage *sg, pemba_error *err, const char *what)
{
	int code = sqlite3_errcode(sg->db);
	if (code == SQLITE_FULL || code == SQLITE_IOERR ||
	    code == SQLITE_CANTOPEN)
		return error_set(
		    err, PEMBA_EIO,
		    "bulk import staging area: %s: %s (its temporary file "
		    "goes to $SQLITE_TMPDIR, $TMPDIR, /var/tmp or /tmp)",
		    what, sqlite3_errmsg(sg->db));
	return error_set(err, PEMBA_EIO, "bulk import staging area: %s: %s",
	                 what, sqlite3_errmsg(sg->db));
}

int store_stage_open(store_stage **out, pemba_error *err)
{
	static const char setup[] =
	    "PRAGMA journal_mode = OFF;"
	    "PRAGMA synchronous = OFF;"
	    "PRAGMA secure_delete = OFF;"
	    "PRAGMA temp_store = FILE;"
	    "CREATE TABLE staged(rt TEXT, rid TEXT, rel TEXT, st TEXT, "
	    "sid TEXT, srel TEXT, caveat TEXT, context TEXT, "
	    "expiration INTEGER, seq INTEGER, "
	    "PRIMARY KEY (" STAGE_KEY ")) WITHOUT ROWID;"
	    "BEGIN;";
	*out = NULL;
	store_stage *sg = xcalloc(1, sizeof(*sg));
	int rc = sqlite3_open_v2("", &sg->db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                             SQLITE_OPEN_NOMUTEX,
	                         NULL);
	char pragma[64];
	snprintf(pragma, sizeof(pragma), "PRAGMA cache_size = -%d;",
	         STAGE_CACHE_KIB);
	if (rc != SQLITE_OK ||
	    sqlite3_exec(sg->db, pragma, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(sg->db, setup, NULL, NULL, NULL) != SQLITE_OK) {
		if (sg->db)
			stage_error(sg, err, "creating it");
		else
			error_set(err, PEMBA_EIO,
			          "bulk import staging area: cannot create a "
			          "temporary database (out of memory)");
		store_stage_close(sg);
		return PEMBA_EIO;
	}
	*out = sg;
	return PEMBA_OK;
}

void store_stage_close(store_stage *sg)
{
	if (sg == NULL)
		return;
	for (int r = 0; r < 2; r++)
		for (int n = 0; n <= STAGE_BATCH_ROWS; n++)
			sqlite3_finalize(sg->put[r][n]);
	sqlite3_finalize(sg->seq_of);
	sqlite3_finalize(sg->scan);
	/* The open transaction goes with the connection; so does the
	 * temporary file (already unlinked). */
	sqlite3_close_v2(sg->db);
	free(sg);
}

/* ----------------------------------------------------------------- put */

static sqlite3_stmt *put_stmt(store_stage *sg, bool replace, size_t n,
                              pemba_error *err)
{
	sqlite3_stmt **slot = &sg->put[replace][n];
	if (*slot)
		return *slot;
	char sql[256 + STAGE_BATCH_ROWS * 64];
	size_t len =
	    (size_t)snprintf(sql, sizeof(sql), "INSERT INTO staged VALUES ");
	for (size_t i = 0; i < n; i++) {
		size_t p = i * 10;
		len += (size_t)snprintf(
		    sql + len, sizeof(sql) - len,
		    "%s(?%zu,?%zu,?%zu,?%zu,?%zu,?%zu,?%zu,?%zu,?%zu,?%zu)",
		    i ? "," : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6,
		    p + 7, p + 8, p + 9, p + 10);
	}
	snprintf(sql + len, sizeof(sql) - len, "%s",
	         replace ? " ON CONFLICT (" STAGE_KEY ") DO UPDATE SET "
	                   "caveat = excluded.caveat, "
	                   "context = excluded.context, "
	                   "expiration = excluded.expiration, "
	                   "seq = excluded.seq"
	                 : " ON CONFLICT DO NOTHING");
	if (sqlite3_prepare_v3(sg->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot,
	                       NULL) != SQLITE_OK) {
		stage_error(sg, err, "preparing a statement");
		*slot = NULL;
	}
	return *slot;
}

static void bind_key(sqlite3_stmt *st, int p, const store_rel *r)
{
	sqlite3_bind_text(st, p + 1, r->resource_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, p + 2, r->resource_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, p + 3, r->relation, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, p + 4, r->subject_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, p + 5, r->subject_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, p + 6, r->subject_relation, -1, SQLITE_STATIC);
}

/* The seq staged under r's key, or -1 when none. */
static int staged_seq(store_stage *sg, const store_rel *r, int64_t *seq,
                      pemba_error *err)
{
	if (!sg->seq_of &&
	    sqlite3_prepare_v3(sg->db,
	                       "SELECT seq FROM staged WHERE rt = ?1 AND "
	                       "rid = ?2 AND rel = ?3 AND st = ?4 AND "
	                       "sid = ?5 AND srel = ?6",
	                       -1, SQLITE_PREPARE_PERSISTENT, &sg->seq_of,
	                       NULL) != SQLITE_OK)
		return stage_error(sg, err, "preparing a statement");
	bind_key(sg->seq_of, 0, r);
	int step = sqlite3_step(sg->seq_of);
	*seq = step == SQLITE_ROW ? sqlite3_column_int64(sg->seq_of, 0) : -1;
	sqlite3_reset(sg->seq_of);
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		return stage_error(sg, err, "reading a staged row");
	return PEMBA_OK;
}

int store_stage_put(store_stage *sg, const store_rel *rels, size_t n,
                    bool replace, size_t *done_out, pemba_error *err)
{
	size_t done = 0;
	int rc = PEMBA_OK;
	/* Writing while a scan is open would move rows under it. */
	store_stage_rewind(sg);
	while (done < n && rc == PEMBA_OK) {
		const store_rel *r = rels + done;
		size_t m =
		    n - done < STAGE_BATCH_ROWS ? n - done : STAGE_BATCH_ROWS;
		sqlite3_stmt *st = put_stmt(sg, replace, m, err);
		if (!st) {
			rc = PEMBA_EIO;
			break;
		}
		int64_t base = sg->next_seq;
		for (size_t i = 0; i < m; i++) {
			int p = (int)i * 10;
			bind_key(st, p, &r[i]);
			sqlite3_bind_text(st, p + 7, r[i].caveat_name, -1,
			                  SQLITE_STATIC);
			sqlite3_bind_text(st, p + 8, r[i].caveat_context, -1,
			                  SQLITE_STATIC);
			sqlite3_bind_int64(st, p + 9, r[i].expiration_ms);
			sqlite3_bind_int64(st, p + 10, base + (int64_t)i);
		}
		int step = sqlite3_step(st);
		size_t inserted =
		    step == SQLITE_DONE ? (size_t)sqlite3_changes(sg->db) : 0;
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		sg->next_seq += (int64_t)m;
		if (step != SQLITE_DONE) {
			rc = stage_error(sg, err, "staging relationships");
			break;
		}
		if (!replace && inserted < m) {
			/* Some row met a key already staged: the first whose
			 * key holds another row's seq. */
			for (size_t i = 0; i < m && rc == PEMBA_OK; i++) {
				int64_t seq;
				if ((rc = staged_seq(sg, &r[i], &seq, err)))
					break;
				if (seq != base + (int64_t)i) {
					done += i;
					rc = error_set(
					    err, PEMBA_EEXISTS,
					    "relationship %s:%s#%s@%s:%s is "
					    "staged twice",
					    r[i].resource_type,
					    r[i].resource_id, r[i].relation,
					    r[i].subject_type, r[i].subject_id);
				}
			}
			if (rc == PEMBA_OK)
				rc =
				    error_set(err, PEMBA_EIO,
				              "bulk import staging area: a row "
				              "was not staged");
			break;
		}
		done += m;
	}
	if (done_out)
		*done_out = done;
	return rc;
}

/* ---------------------------------------------------------------- read */

void store_stage_rewind(store_stage *sg)
{
	if (sg->scan)
		sqlite3_reset(sg->scan);
	sg->scan_done = false;
}

static const char *column_copy(arena *a, sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);
	return arena_strndup(a, s ? s : "",
	                     (size_t)sqlite3_column_bytes(st, col));
}

int store_stage_read(store_stage *sg, arena *a, store_rel *out, size_t max,
                     size_t *n_out, pemba_error *err)
{
	*n_out = 0;
	if (!sg->scan &&
	    sqlite3_prepare_v3(sg->db,
	                       "SELECT " STAGE_KEY ", caveat, context, "
	                       "expiration FROM staged ORDER BY " STAGE_KEY,
	                       -1, SQLITE_PREPARE_PERSISTENT, &sg->scan,
	                       NULL) != SQLITE_OK)
		return stage_error(sg, err, "preparing a statement");
	size_t n = 0;
	while (n < max && !sg->scan_done) {
		/* (Stepping a finished statement would start it again.) */
		int step = sqlite3_step(sg->scan);
		if (step == SQLITE_DONE) {
			sg->scan_done = true;
			break;
		}
		if (step != SQLITE_ROW) {
			int rc = stage_error(sg, err, "reading staged rows");
			sqlite3_reset(sg->scan);
			return rc;
		}
		store_rel *r = &out[n++];
		r->resource_type = column_copy(a, sg->scan, 0);
		r->resource_id = column_copy(a, sg->scan, 1);
		r->relation = column_copy(a, sg->scan, 2);
		r->subject_type = column_copy(a, sg->scan, 3);
		r->subject_id = column_copy(a, sg->scan, 4);
		r->subject_relation = column_copy(a, sg->scan, 5);
		r->caveat_name = column_copy(a, sg->scan, 6);
		r->caveat_context = column_copy(a, sg->scan, 7);
		r->expiration_ms = sqlite3_column_int64(sg->scan, 8);
		r->created_rev = 0;
	}
	*n_out = n;
	return PEMBA_OK;
}
