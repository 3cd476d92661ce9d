/*
 * pg_fixture.h -- fresh PostgreSQL databases for tests.
 *
 * The cluster is started once per test run by tests/support/pg_cluster.sh
 * (a CTest fixture), which writes its admin URI to a file; tests find it
 * through $PEMBA_TEST_PG_URI (the URI itself) or $PEMBA_TEST_PG_URI_FILE.
 * Each call creates a new, empty database, dropped when the process exits.
 */
#ifndef PEMBA_TEST_PG_FIXTURE_H
#define PEMBA_TEST_PG_FIXTURE_H

#include <stdbool.h>

/* True when $PEMBA_TEST_DATASTORE is "postgres": the suite runs against
 * PostgreSQL instead of SQLite. */
bool pg_fixture_enabled(void);

/* The URI of a new empty database (malloc'd; caller frees).  Aborts the
 * test process with a message when the cluster cannot be reached. */
char *pg_fixture_new_database(void);

/* The cluster's admin URI (database `postgres`); static storage. */
const char *pg_fixture_admin_uri(void);

/* The datastore URI a test written for SQLite means on the engine under
 * test: `uri` itself unless PEMBA_TEST_DATASTORE=postgres; then
 * "sqlite::memory:" is a new database per call and any other sqlite URI
 * (a named memory datastore, a file) one database per distinct URI for
 * the whole process.  Static storage. */
const char *pg_fixture_uri(const char *uri);

/* Drops now the database behind `uri`, a URI pg_fixture_uri() returned
 * for "sqlite::memory:" (every handle on it closed), instead of at exit:
 * for tests that open thousands of fresh datastores.  `uri` is invalid
 * afterwards.  Does nothing for any other URI (SQLite ones included). */
void pg_fixture_release(const char *uri);

/* Runs sql on the database at uri: the first column of the first row as
 * a number, 0 for a command, -1 on error. */
long pg_fixture_exec(const char *uri, const char *sql);

#endif
