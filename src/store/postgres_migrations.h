/*
 * postgres_migrations.h -- the numbered layout migrations of the
 * PostgreSQL engine (private to src/store).
 *
 * Migration N takes the datastore from layout version N-1 to N (`up`) and
 * back (`down`); the versions mirror the SQLite engine's (same numbers,
 * names and meaning), so `datastore migrate status` reads the same on
 * both.  The version lives in the one-row table `pemba_schema_version`,
 * updated in the same transaction as the migration's statements (PostgreSQL
 * DDL is transactional), so a crash leaves the old or the new version,
 * never something between.  Never edit a released migration: add one.
 */
#ifndef PEMBA_POSTGRES_MIGRATIONS_H
#define PEMBA_POSTGRES_MIGRATIONS_H

typedef struct postgres_migration {
	int version;             /* 1, 2, ...: equals its index + 1 */
	const char *name;        /* short snake_case name */
	const char *description; /* one line for `datastore migrate status` */
	const char *up_sql;      /* statements; run inside one transaction */
	const char *down_sql;
} postgres_migration;

/* Not const: a test hook may append a delay to each step's statements
 * when the process starts (postgres_migrations.c). */
extern postgres_migration postgres_migrations[];
extern const int postgres_migration_count;

#endif
