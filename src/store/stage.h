/*
 * stage.h -- a staging area for bulk loads: relationships kept outside the
 * datastore, deduplicated and in key order, until one write transaction
 * copies them in.
 *
 * A bulk import must not hold the datastore's single write lock while its
 * rows arrive: a client may stream them for minutes, or stall, and every
 * other writer would wait behind it.  core stages the rows here instead,
 * with no lock on the datastore, and opens the write transaction only to
 * copy them in (src/core/README.md, "Bulk import").
 *
 * A stage is private to its creator and knows no datastore: it is a
 * temporary SQLite database on a connection of its own (never the
 * datastore's file, whose every write needs the one write lock).  SQLite
 * keeps it in that connection's page cache, at most STAGE_CACHE_KIB, and
 * spills the rest to a temporary file which it unlinks as soon as it has
 * opened it ($SQLITE_TMPDIR, $TMPDIR, /var/tmp, /usr/tmp, /tmp, in that
 * order): memory stays bounded whatever the number of rows (disk use is
 * about 60 bytes a row for short ids), and closing the stage, or the
 * death of the process, leaves nothing behind.  (A SQLite built with
 * SQLITE_TEMP_STORE=3 would keep it all in memory instead;
 * tests/core/test_import.c checks that this one spills.)
 *
 * Rows are keyed by the six identity fields of store_rel (resource type
 * and id, relation, subject type, id and relation); a stage holds one row
 * per key.  Reading returns them in key order, comparing the strings as
 * bytes, so rows of one resource come together.
 *
 * Threads: a stage is used by one thread at a time (any thread).
 */
#ifndef PEMBA_STAGE_H
#define PEMBA_STAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"
#include "util/arena.h"

/* Page cache of a stage's connection (KiB): its memory bound. */
#define STAGE_CACHE_KIB 8192

typedef struct store_stage store_stage;

/* An empty stage.  No file exists until the rows outgrow the cache.
 * PEMBA_EIO if SQLite cannot create the database. */
int store_stage_open(store_stage **out, pemba_error *err);

/* Discards the stage and everything in it (NULL is a no-op). */
void store_stage_close(store_stage *sg);

/*
 * Stages rels[0..n) in order (strings are copied).  A row whose key is
 * already staged (earlier, or earlier in rels):
 *   - replace false: PEMBA_EEXISTS, *done_out = the index of that row (the
 *     first such row, as if rows were staged one at a time);
 *   - replace true: replaces the staged row (caveat, context, expiration),
 *     so the last row of a key wins.
 * PEMBA_EIO when SQLite fails (a full disk: the message says where the
 * temporary file goes).  After any failure the rows of this call may or
 * may not be staged: the caller's bulk load has failed, close the stage.
 * *done_out may be NULL.
 */
int store_stage_put(store_stage *sg, const store_rel *rels, size_t n,
                    bool replace, size_t *done_out, pemba_error *err);

/*
 * Reads the staged rows in key order: the first call after
 * store_stage_rewind (or after the last store_stage_put) returns the first
 * rows, each next call the following ones.  Up to max rows go to out[],
 * their strings copied into `a` (valid until `a` is reset); *n_out is 0 at
 * the end.  created_rev is 0.  Staging more rows restarts the reading.
 */
int store_stage_read(store_stage *sg, arena *a, store_rel *out, size_t max,
                     size_t *n_out, pemba_error *err);
void store_stage_rewind(store_stage *sg);

#endif
