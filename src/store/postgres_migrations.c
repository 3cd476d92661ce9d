/*
 * postgres_migrations.c -- layout migrations of the PostgreSQL engine.
 *
 * The same tables as the SQLite engine (sqlite_migrations.c has the
 * reasons), in PostgreSQL's dialect, with two differences:
 *
 *   - names (types, relations, caveats) are stored as text, not interned:
 *     PostgreSQL compresses, and a name cache shared by many servers would
 *     need invalidation.  Every text column that takes part in an order
 *     uses COLLATE "C", so rows come in byte order whatever the database's
 *     locale, and the pagination cursor compares the way the index sorts.
 *   - "no caveat" is caveat_name '' (NOT NULL), "no subject relation" is
 *     subject_relation ''; deleted_rev 0 still marks the live version, so
 *     the primary key makes live rows unique as in SQLite.
 *
 * The version table (pemba_schema_version) and the lease records
 * (pemba_users) are created outside the migrations: they describe the
 * datastore's state and must survive a migration down to 0.
 */
#include "store/postgres_migrations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

postgres_migration postgres_migrations[] = {
    {
        .version = 1,
        .name = "base_tables",
        .description = "meta, revisions, schema_versions and "
                       "relationships tables (forward key)",
        .up_sql =
            "CREATE TABLE meta (\n"
            "  key   text PRIMARY KEY,\n"
            "  value text NOT NULL\n"
            ");\n"
            "INSERT INTO meta(key, value) VALUES\n"
            "  ('datastore_id', replace(gen_random_uuid()::text, '-', '')),\n"
            "  ('gc_floor', '0');\n"
            "CREATE TABLE revisions (\n"
            "  rev          bigint PRIMARY KEY,\n"
            "  timestamp_ms bigint NOT NULL\n"
            ");\n"
            "CREATE TABLE schema_versions (\n"
            "  created_rev bigint PRIMARY KEY,\n"
            "  deleted_rev bigint,\n"
            "  text        text NOT NULL\n"
            ");\n"
            "CREATE TABLE relationships (\n"
            "  resource_type    text COLLATE \"C\" NOT NULL,\n"
            "  resource_id      text COLLATE \"C\" NOT NULL,\n"
            "  relation         text COLLATE \"C\" NOT NULL,\n"
            "  subject_type     text COLLATE \"C\" NOT NULL,\n"
            "  subject_id       text COLLATE \"C\" NOT NULL,\n"
            "  subject_relation text COLLATE \"C\" NOT NULL,\n"
            "  deleted_rev      bigint NOT NULL,\n"
            "  created_rev      bigint NOT NULL,\n"
            "  caveat_name      text COLLATE \"C\" NOT NULL DEFAULT '',\n"
            "  caveat_context   text,\n"
            "  expiration_ms    bigint,\n"
            "  PRIMARY KEY (resource_type, resource_id, relation,\n"
            "               subject_type, subject_id, subject_relation,\n"
            "               deleted_rev)\n"
            ");\n",
        .down_sql = "DROP TABLE relationships;\n"
                    "DROP TABLE schema_versions;\n"
                    "DROP TABLE revisions;\n"
                    "DROP TABLE meta;\n",
    },
    {
        .version = 2,
        .name = "secondary_indexes",
        .description = "reverse (by subject) index, deleted-version "
                       "index for GC, revisions-by-time index",
        .up_sql = "CREATE INDEX relationships_by_subject ON relationships\n"
                  "  (subject_type, subject_id, subject_relation,\n"
                  "   resource_type, relation, resource_id, deleted_rev);\n"
                  "CREATE INDEX relationships_deleted ON relationships\n"
                  "  (deleted_rev) WHERE deleted_rev > 0;\n"
                  "CREATE INDEX revisions_by_time ON revisions\n"
                  "  (timestamp_ms);\n",
        .down_sql = "DROP INDEX revisions_by_time;\n"
                    "DROP INDEX relationships_deleted;\n"
                    "DROP INDEX relationships_by_subject;\n",
    },
    {
        .version = 3,
        .name = "change_feed",
        .description = "index of relationship versions by creating "
                       "revision, transaction metadata per revision",
        .up_sql = "CREATE INDEX relationships_created ON relationships\n"
                  "  (created_rev);\n"
                  "ALTER TABLE revisions ADD COLUMN metadata text;\n",
        .down_sql = "ALTER TABLE revisions DROP COLUMN metadata;\n"
                    "DROP INDEX relationships_created;\n",
    },
    {
        .version = 4,
        .name = "settings",
        .description = "datastore settings (read-only flag) and relation "
                       "deprecations",
        .up_sql = "CREATE TABLE settings (\n"
                  "  key   text PRIMARY KEY,\n"
                  "  value bigint NOT NULL\n"
                  ");\n"
                  "INSERT INTO settings(key, value) VALUES ('read_only', 0);\n"
                  "CREATE TABLE relation_deprecations (\n"
                  "  resource_type text COLLATE \"C\" NOT NULL,\n"
                  "  relation      text COLLATE \"C\" NOT NULL,\n"
                  "  mode          text NOT NULL\n"
                  "                CHECK (mode IN ('warn', 'reject')),\n"
                  "  set_rev       bigint NOT NULL,\n"
                  "  set_ms        bigint NOT NULL,\n"
                  "  PRIMARY KEY (resource_type, relation)\n"
                  ");\n",
        .down_sql = "DROP TABLE relation_deprecations;\n"
                    "DROP TABLE settings;\n",
    },
    {
        .version = 5,
        .name = "revision_nonces",
        .description = "a random nonce per revision, so ZedTokens can "
                       "tell diverged copies of a datastore apart",
        .up_sql = "ALTER TABLE revisions ADD COLUMN nonce bigint;\n",
        .down_sql = "ALTER TABLE revisions DROP COLUMN nonce;\n",
    },
    {
        .version = 6,
        .name = "source_positions",
        .description = "where revisions of a mirrored source datastore "
                       "landed, so its ZedTokens are honoured here",
        .up_sql = "CREATE TABLE source_positions (\n"
                  "  source     text NOT NULL,\n"
                  "  revision   text NOT NULL,\n"
                  "  order_key  bigint NOT NULL,\n"
                  "  target_rev bigint NOT NULL,\n"
                  "  exact      integer NOT NULL,\n"
                  "  PRIMARY KEY (source, revision)\n"
                  ");\n"
                  "CREATE INDEX source_positions_order ON\n"
                  "  source_positions (source, order_key);\n",
        .down_sql = "DROP TABLE source_positions;\n",
    },
};

const int postgres_migration_count =
    (int)(sizeof(postgres_migrations) / sizeof(postgres_migrations[0]));

/*
 * Test hook, not an option for people: with PEMBA_TEST_MIGRATE_STEP_DELAY_MS
 * set (milliseconds) in the environment of a process, every step of that
 * process sleeps that long at the end of its statements, inside its
 * transaction (after the DDL, before the version bump and COMMIT), so a
 * test can SIGKILL a migration in the middle of a step or run a second
 * migration beside it (tests/cli/test_postgres_migrate.sh).  Read once,
 * when the program starts; unset, the statements are the ones above.
 * The rewritten statements live as long as the process (reachable from
 * the array, so no leak is reported).
 */
__attribute__((constructor)) static void test_step_delay(void)
{
	const char *delay = getenv("PEMBA_TEST_MIGRATE_STEP_DELAY_MS");
	if (!delay || !*delay)
		return;
	long ms = strtol(delay, NULL, 10);
	if (ms <= 0)
		return;
	char sleep_sql[64];
	snprintf(sleep_sql, sizeof(sleep_sql), "SELECT pg_sleep(%ld.%03ld);\n",
	         ms / 1000, ms % 1000);
	for (int i = 0; i < postgres_migration_count; i++) {
		const char **sql[2] = {&postgres_migrations[i].up_sql,
		                       &postgres_migrations[i].down_sql};
		for (int j = 0; j < 2; j++) {
			size_t n = strlen(*sql[j]) + strlen(sleep_sql) + 1;
			char *with = malloc(n);
			if (!with)
				return;
			snprintf(with, n, "%s%s", *sql[j], sleep_sql);
			*sql[j] = with;
		}
	}
}
