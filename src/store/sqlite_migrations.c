/*
 * sqlite_migrations.c -- layout migrations of the SQLite engine.
 *
 * The layout (see README.md for why it looks like this):
 *
 *   meta(key, value)                     datastore_id, gc_floor
 *   revisions(rev, timestamp_ms)         one row per committed write txn
 *   names(id, name)                      interned type/relation/caveat names
 *   schema_versions(created_rev, deleted_rev, text)
 *   relationships(...)                   one row per relationship version,
 *       primary key (resource_type, resource_id, relation, subject_type,
 *       subject_id, subject_relation, deleted_rev), WITHOUT ROWID: the
 *       table is the forward index; deleted_rev 0 marks the live version,
 *       so the key itself makes live rows unique.
 *
 * Migration 2 adds the secondary indexes: the reverse (by subject) index,
 * a partial index over deleted versions for GC, and an index of revisions
 * by time for finding the GC floor.
 *
 * Migration 3 serves the change feed (Watch): an index of relationship
 * versions by the revision that created them (versions by the revision
 * that ended them are already in the deleted-version index), and a
 * column for each revision's transaction metadata.
 *
 * Migration 4 adds datastore settings that every handle and every process
 * serving the datastore must see: `settings(key, value)` (the read-only
 * flag) and `relation_deprecations` (one row per deprecated relation:
 * warn or reject writes to it, with the head revision and the wall clock
 * when it was set).  Names are kept as text, not interned: the tables are
 * tiny and read whole once per write transaction.
 *
 * Migration 5 gives every revision a random 64-bit nonce, drawn when it
 * commits (revisions.nonce).  Two copies of one datastore (a snapshot
 * started as a second instance without a new identity) share the nonces
 * of their common history and draw different ones after they diverge, so
 * a ZedToken that carries a fingerprint of its revision's nonce is
 * refused by a copy whose revision of that number is another one.
 * Revisions committed before the migration keep NULL: nothing to compare
 * (giving them nonces now would make copies migrated separately disagree
 * about their shared history).
 *
 * Migration 6 records where revisions of *another* datastore landed here
 * (`pemba mirror` copying into this one): `source_positions(source,
 * revision, order_key, target_rev, exact)`, one row per source revision
 * the mirror applied or passed, so the source's ZedTokens keep working
 * after a move.  `source` names the source datastore, `revision` is the
 * source's own revision text (exact lookups), `order_key` an integer
 * that orders that source's revisions (at-least-as-fresh lookups);
 * `exact` says the target revision holds exactly the source's state.
 */
#include "store/sqlite_migrations.h"

#define STR_(x) #x
#define STR(x) STR_(x)

const sqlite_migration sqlite_migrations[] = {
    {
        .version = 1,
        .name = "base_tables",
        .description = "meta, revisions, names, schema_versions and "
                       "relationships tables (forward key)",
        .up_sql =
            "CREATE TABLE meta (\n"
            "  key   TEXT PRIMARY KEY,\n"
            "  value NOT NULL\n"
            ") WITHOUT ROWID;\n"
            "INSERT INTO meta(key, value) VALUES\n"
            "  ('datastore_id', lower(hex(randomblob(16)))),\n"
            "  ('gc_floor', 0);\n"
            "CREATE TABLE revisions (\n"
            "  rev          INTEGER PRIMARY KEY,\n"
            "  timestamp_ms INTEGER NOT NULL\n"
            ");\n"
            "CREATE TABLE names (\n"
            "  id   INTEGER PRIMARY KEY,\n"
            "  name TEXT NOT NULL UNIQUE\n"
            ");\n"
            "CREATE TABLE schema_versions (\n"
            "  created_rev INTEGER PRIMARY KEY,\n"
            "  deleted_rev INTEGER,\n"
            "  text        TEXT NOT NULL\n"
            ");\n"
            "CREATE TABLE relationships (\n"
            "  resource_type    INTEGER NOT NULL,\n"
            "  resource_id      TEXT    NOT NULL,\n"
            "  relation         INTEGER NOT NULL,\n"
            "  subject_type     INTEGER NOT NULL,\n"
            "  subject_id       TEXT    NOT NULL,\n"
            "  subject_relation INTEGER NOT NULL,\n"
            "  deleted_rev      INTEGER NOT NULL,\n"
            "  created_rev      INTEGER NOT NULL,\n"
            "  caveat_name      INTEGER,\n"
            "  caveat_context   TEXT,\n"
            "  expiration_ms    INTEGER,\n"
            "  PRIMARY KEY (resource_type, resource_id, relation,\n"
            "               subject_type, subject_id, subject_relation,\n"
            "               deleted_rev)\n"
            ") WITHOUT ROWID;\n"
            "PRAGMA application_id = " STR(SQLITE_PEMBA_APPLICATION_ID) ";\n",
        .down_sql = "DROP TABLE relationships;\n"
                    "DROP TABLE schema_versions;\n"
                    "DROP TABLE names;\n"
                    "DROP TABLE revisions;\n"
                    "DROP TABLE meta;\n"
                    "PRAGMA application_id = 0;\n",
    },
    {
        .version = 2,
        .name = "secondary_indexes",
        .description = "reverse (by subject) index, deleted-version "
                       "index for GC, revisions-by-time index",
        .up_sql = "CREATE INDEX relationships_by_subject ON relationships\n"
                  "  (subject_type, subject_id, subject_relation,\n"
                  "   resource_type, relation, resource_id);\n"
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
                  "ALTER TABLE revisions ADD COLUMN metadata TEXT;\n",
        .down_sql = "ALTER TABLE revisions DROP COLUMN metadata;\n"
                    "DROP INDEX relationships_created;\n",
    },
    {
        .version = 4,
        .name = "settings",
        .description = "datastore settings (read-only flag) and relation "
                       "deprecations",
        .up_sql = "CREATE TABLE settings (\n"
                  "  key   TEXT PRIMARY KEY,\n"
                  "  value NOT NULL\n"
                  ") WITHOUT ROWID;\n"
                  "INSERT INTO settings(key, value) VALUES ('read_only', 0);\n"
                  "CREATE TABLE relation_deprecations (\n"
                  "  resource_type TEXT    NOT NULL,\n"
                  "  relation      TEXT    NOT NULL,\n"
                  "  mode          TEXT    NOT NULL\n"
                  "                CHECK (mode IN ('warn', 'reject')),\n"
                  "  set_rev       INTEGER NOT NULL,\n"
                  "  set_ms        INTEGER NOT NULL,\n"
                  "  PRIMARY KEY (resource_type, relation)\n"
                  ") WITHOUT ROWID;\n",
        .down_sql = "DROP TABLE relation_deprecations;\n"
                    "DROP TABLE settings;\n",
    },
    {
        .version = 5,
        .name = "revision_nonces",
        .description = "a random nonce per revision, so ZedTokens can "
                       "tell diverged copies of a datastore apart",
        .up_sql = "ALTER TABLE revisions ADD COLUMN nonce INTEGER;\n",
        .down_sql = "ALTER TABLE revisions DROP COLUMN nonce;\n",
    },
    {
        .version = 6,
        .name = "source_positions",
        .description = "where revisions of a mirrored source datastore "
                       "landed, so its ZedTokens are honoured here",
        .up_sql = "CREATE TABLE source_positions (\n"
                  "  source     TEXT    NOT NULL,\n"
                  "  revision   TEXT    NOT NULL,\n"
                  "  order_key  INTEGER NOT NULL,\n"
                  "  target_rev INTEGER NOT NULL,\n"
                  "  exact      INTEGER NOT NULL,\n"
                  "  PRIMARY KEY (source, revision)\n"
                  ") WITHOUT ROWID;\n"
                  "CREATE INDEX source_positions_order ON\n"
                  "  source_positions (source, order_key);\n",
        .down_sql = "DROP TABLE source_positions;\n",
    },
};

const int sqlite_migration_count =
    (int)(sizeof(sqlite_migrations) / sizeof(sqlite_migrations[0]));
