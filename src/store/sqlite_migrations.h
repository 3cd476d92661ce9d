/*
 * sqlite_migrations.h -- the numbered layout migrations of the SQLite
 * engine (private to src/store).
 *
 * Migration N takes the datastore from layout version N-1 to N (`up`) and
 * back (`down`).  The layout version lives in SQLite's `PRAGMA
 * user_version`, which is written inside the same transaction as the
 * migration's statements, so a crash leaves the datastore at either the old
 * or the new version, never between.  Never edit a released migration: add
 * a new one.
 */
#ifndef PEMBA_SQLITE_MIGRATIONS_H
#define PEMBA_SQLITE_MIGRATIONS_H

typedef struct sqlite_migration {
	int version;             /* 1, 2, ...: equals its index + 1 */
	const char *name;        /* short snake_case name */
	const char *description; /* one line for `datastore migrate status` */
	const char *up_sql;      /* statements; run inside one transaction */
	const char *down_sql;
} sqlite_migration;

extern const sqlite_migration sqlite_migrations[];
extern const int sqlite_migration_count;

/* PRAGMA application_id of a pemba datastore: "PMBA" (0x504D4241),
 * written in decimal because PRAGMA arguments do not take hex. */
#define SQLITE_PEMBA_APPLICATION_ID 1347240513

#endif
