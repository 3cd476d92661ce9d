/*
 * pemba.h -- the embedding API of pemba, a Zanzibar-style permissions
 * database that speaks SpiceDB's schema language.
 *
 * Everything hangs off an opaque `pemba_db` handle.  Functions return 0 on
 * success or a negative `pemba_code`; when they fail and the caller passed a
 * non-NULL `pemba_error *`, it is filled with the code and a message naming
 * the offending input.  Library code never prints and never exits.
 *
 * Strings are NUL-terminated UTF-8.  Unless a function says otherwise, the
 * library copies what it needs from its arguments and the caller keeps
 * ownership of them.  Memory the library hands out is released with
 * pemba_free().
 *
 * Threads: a pemba_db may be used by one thread at a time (the caller
 * serializes).  Separate handles on the same file datastore or named memory
 * datastore (pemba_clone) may be used from separate threads at once.
 */
#ifndef PEMBA_H
#define PEMBA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PEMBA_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors */

typedef enum pemba_code {
	PEMBA_OK = 0,
	PEMBA_EINVAL = -1,        /* malformed input (gRPC INVALID_ARGUMENT) */
	PEMBA_EPRECONDITION = -2, /* valid input the current state refuses
	                             (FAILED_PRECONDITION): unknown definition,
	                             failed write precondition, ... */
	PEMBA_EEXISTS = -3,       /* CREATE of an existing relationship */
	PEMBA_ENOTFOUND = -4,     /* no such thing (no schema written, ...) */
	PEMBA_EDEPTH = -5,        /* dispatch depth limit exceeded */
	PEMBA_EREVISION = -6,     /* revision unavailable: garbage-collected or
	                             in the future */
	PEMBA_EIO = -7,           /* datastore failure */
	PEMBA_ENOMEM = -8,
	PEMBA_EUNSUPPORTED = -9, /* feature not implemented yet */
	PEMBA_EREADONLY = -10,   /* write refused: read-only mode */
	PEMBA_ELIMIT = -11,      /* a size/count limit was exceeded */
	PEMBA_EVERSION = -12,    /* datastore layout version mismatch */
} pemba_code;

typedef struct pemba_error {
	int code;           /* a pemba_code */
	int line, column;   /* 1-based position in schema text, 0 if n/a */
	char message[1024]; /* one line, names the offending input */
} pemba_error;

/* Name of a code, e.g. "invalid argument".  Never NULL. */
const char *pemba_strerror(int code);

/* Releases memory returned by this library (schema text, ...). */
void pemba_free(void *ptr);

/* ------------------------------------------------------------- revisions */

/* A revision is a 64-bit logical counter: every write transaction gets the
 * next one.  0 means "the newest revision" wherever a revision is an input. */
typedef uint64_t pemba_revision;
#define PEMBA_REVISION_HEAD ((pemba_revision)0)

/* ------------------------------------------------------------ the handle */

typedef struct pemba_db pemba_db;

typedef struct pemba_options {
	/* Revisions older than this many seconds may be garbage-collected.
	 * 0 selects the default, 24 hours. */
	int64_t gc_window_seconds;
	/* Datastore layout migrations on open: PEMBA_MIGRATE_AUTO (0, the
	 * default) applies pending ones; PEMBA_MIGRATE_REFUSE (1) refuses
	 * a datastore not at the newest layout version; and
	 * PEMBA_MIGRATE_NEW_ONLY (2) creates a new, empty datastore at the
	 * newest version but refuses an existing one with pending
	 * migrations (PEMBA_EVERSION naming the command that applies them:
	 * what `pemba serve` does, as SpiceDB's serve does).  A layout newer
	 * than this library knows is refused in every mode. */
	int no_auto_migrate;
	/* PostgreSQL: the most connections this process opens to the
	 * datastore for reads and for writes, shared by every handle on it
	 * (0: 20 and 10, SpiceDB's defaults; negative: PEMBA_EINVAL).
	 * SQLite ignores them: each handle is one connection to a file. */
	int conn_pool_read_max_open;
	int conn_pool_write_max_open;
	/* PostgreSQL: read replicas (libpq URIs of streaming standbys of
	 * the datastore, at most 16; copied): a read at a revision a
	 * replica has replayed may be served by it; head reads and writes
	 * use the primary.  Any other datastore: PEMBA_EINVAL. */
	const char *const *read_replica_uris;
	int n_read_replica_uris;
	/* Optional diagnostics of the datastore (NULL: none), called from
	 * any thread: level 1 warning (a read replica skipped after a
	 * failure), 3 debug (which node served a read at a revision). */
	void (*log)(void *ctx, int level, const char *message);
	void *log_ctx;
	/* Budget in bytes of the cache of query results at a revision,
	 * shared by every handle of this process on the same datastore (the
	 * first handle's budget wins; pemba_clone shares it): 0 selects the
	 * engine's default (64 MiB on PostgreSQL, where every query is a
	 * network round trip; off on SQLite), a negative value turns it
	 * off.  Results holding a relationship with an expiration are never
	 * cached. */
	int64_t query_cache_bytes;
} pemba_options;

#define PEMBA_MIGRATE_AUTO 0
#define PEMBA_MIGRATE_REFUSE 1
#define PEMBA_MIGRATE_NEW_ONLY 2

/* Opens a datastore by URI: "sqlite:///abs/path.db", "sqlite://./rel.db",
 * "sqlite::memory:" (private to this handle), "sqlite::memory:NAME"
 * (NAME: letters, digits, '_', '-', '.'; shared by every handle of this
 * process that opens it, dropped when the last one closes).  A file URI
 * may end in parameters: "?mode=ro" opens the existing file read-only
 * (every write then fails with PEMBA_EREADONLY), "?mode=rw" is the
 * default; any other parameter is refused (PEMBA_EINVAL naming it).  opts
 * may be NULL.  On success *out owns the connection; release it with
 * pemba_close().
 *
 * A handle that finds the datastore's layout changed under it after it
 * opened (another process ran `pemba datastore migrate`) fails every call
 * from then on with PEMBA_EVERSION ("datastore layout changed under this
 * server (now N, expected M): ..."): close it and open a new one once the
 * layout fits this library again. */
int pemba_open(const char *uri, const pemba_options *opts, pemba_db **out,
               pemba_error *err);
void pemba_close(pemba_db *db);

/* The newest committed revision (0 for an empty datastore). */
int pemba_head_revision(pemba_db *db, pemba_revision *out, pemba_error *err);

/* The random nonce drawn when revision `rev` committed.  Two copies of one
 * datastore (same identity) share the nonces of their common history and
 * differ after they diverge, so a revision number plus its nonce names a
 * state of one history (ZedTokens carry a fingerprint of it).  *nonce_out
 * is 0 when none is known: revision 0, a revision not committed (yet), one
 * removed by garbage collection, or one committed before the datastore
 * recorded nonces (layout 5).  One indexed lookup, cached per handle. */
int pemba_revision_nonce(pemba_db *db, pemba_revision rev, uint64_t *nonce_out,
                         pemba_error *err);

/* The datastore's identity: a string fixed when the datastore was created
 * (random, 32 hex digits for SQLite), the same for every handle on it.
 * ZedTokens carry a digest of it so a token from another datastore is
 * refused.  Never NULL; "" for a datastore without an identity (a layout
 * that predates it).  Valid while db is open. */
const char *pemba_datastore_id(pemba_db *db);

/* ---------------------------------------------------------------- schema */

/* Parses, type-checks and stores a schema in a new revision. */
int pemba_write_schema(pemba_db *db, const char *text, size_t len,
                       pemba_revision *rev_out, pemba_error *err);

/* The canonical text of the schema current at `at`.  *text_out is
 * NUL-terminated and released with pemba_free().  PEMBA_ENOTFOUND if no
 * schema was written by then. */
int pemba_read_schema(pemba_db *db, pemba_revision at, char **text_out,
                      pemba_error *err);

/* Parses and type-checks schema text without storing it; with canonical_out
 * non-NULL returns its canonical text (release with pemba_free()). */
int pemba_check_schema(const char *text, size_t len, char **canonical_out,
                       pemba_error *err);

/* --------------------------------------------------------- relationships */

/* A relationship: resource_type:resource_id#relation@subject_type:subject_id
 * [#subject_relation].  subject_relation NULL or "" (or "...") means the
 * subject object itself. */
typedef struct pemba_relationship {
	const char *resource_type;
	const char *resource_id;
	const char *relation;
	const char *subject_type;
	const char *subject_id;
	const char *subject_relation;
	const char *caveat_name;    /* NULL if none */
	const char *caveat_context; /* JSON object text, NULL if none */
	int64_t expiration_ms;      /* Unix ms; 0 if none */
} pemba_relationship;

/* Parses "type:id#rel@type:id[#rel][[caveat[:{json}]]][[expiration:T]]".
 * The strings in *out point into *storage, a buffer this function
 * allocates; release it with pemba_free(). */
int pemba_parse_relationship(const char *text, pemba_relationship *out,
                             char **storage, pemba_error *err);

/* Formats a relationship in the syntax above; release with pemba_free(). */
char *pemba_format_relationship(const pemba_relationship *rel);

typedef enum pemba_operation {
	PEMBA_OP_CREATE = 1, /* fails with PEMBA_EEXISTS if present */
	PEMBA_OP_TOUCH = 2,  /* insert or replace */
	PEMBA_OP_DELETE = 3, /* no-op if absent */
} pemba_operation;

typedef struct pemba_update {
	pemba_operation op;
	pemba_relationship rel;
} pemba_update;

/* A relationship filter.  NULL fields match anything.  resource_type is
 * required except for reads that give a subject_type. */
typedef struct pemba_filter {
	const char *resource_type;
	const char *resource_id;
	const char *relation;
	const char *subject_type;     /* NULL: no subject filter */
	const char *subject_id;       /* NULL: any */
	const char *subject_relation; /* NULL: any; "" or "...": none */
} pemba_filter;

typedef enum pemba_precondition_op {
	PEMBA_PRECONDITION_MUST_MATCH = 1,
	PEMBA_PRECONDITION_MUST_NOT_MATCH = 2,
} pemba_precondition_op;

typedef struct pemba_precondition {
	pemba_precondition_op op;
	pemba_filter filter;
} pemba_precondition;

#define PEMBA_MAX_UPDATES 1000
#define PEMBA_MAX_PRECONDITIONS 1000
#define PEMBA_MAX_DEPTH 50
#define PEMBA_MAX_OBJECT_ID 1024

/* Applies all updates atomically in one new revision, after checking the
 * preconditions inside the same transaction.  Every relationship is
 * validated against the schema; on any error nothing changes. */
int pemba_write_relationships(pemba_db *db, const pemba_update *updates,
                              size_t nupdates,
                              const pemba_precondition *preconditions,
                              size_t npreconditions, pemba_revision *rev_out,
                              pemba_error *err);

/* A write (CREATE or TOUCH) to a relation deprecated in WARN mode
 * (pemba_deprecate_relation): reported once per deprecated relation a
 * successful write touched, after it committed.  Everything is valid only
 * during the callback. */
typedef struct pemba_deprecation_warning {
	const char *resource_type;
	const char *relation;
	uint64_t count;      /* relationships of the write on it */
	const char *example; /* the first of them, `type:id#rel@type:id` */
	const char *message; /* one line naming all of the above */
} pemba_deprecation_warning;

/* Called from the writing thread; must not use the handle. */
typedef void (*pemba_deprecation_fn)(void *ctx,
                                     const pemba_deprecation_warning *w);

/* Options of a write.  Zero-initialize, then set what you need. */
typedef struct pemba_write_options {
	/* Transaction metadata: the text of a JSON object (at most 64 KiB)
	 * stored with the revision and reported by pemba_watch_changes
	 * (SpiceDB's optional_transaction_metadata).  NULL: none. */
	const char *metadata;
	/* Told about writes to relations deprecated in WARN mode (NULL:
	 * nobody is told; the write succeeds anyway). */
	pemba_deprecation_fn on_deprecated;
	void *on_deprecated_ctx;
	/* When this write applies a revision of another datastore (`pemba
	 * mirror`): that revision, recorded in the same transaction as
	 * landing at the new revision (pemba_record_source_position).
	 * NULL: none. */
	const struct pemba_source_position *source_position;
} pemba_write_options;

/*
 * Revisions of another datastore (the *source*) that `pemba mirror` copied
 * into this one.  The mirror records, for each source revision it applies
 * or passes, the revision here that holds it, so that ZedTokens the source
 * issued keep their meaning here after a move (src/core/positions.c).
 */
typedef struct pemba_source_position {
	const char *source;   /* the source datastore: "pemba:HEX16", ... */
	const char *revision; /* the source revision, as text */
	/* Order keys bounding it among the source's revisions: a recorded
	 * revision is filed under `lower`; "at least as fresh as" it needs a
	 * recorded one filed at `upper` or later.  Equal for sources with
	 * one revision counter. */
	int64_t lower, upper;
	/* Recording only: the revision here holds exactly the source's
	 * state at it (applied as one write, nothing else written). */
	int exact;
} pemba_source_position;

/* Records p as held by this datastore's head (a mirror's checkpoint: no
 * new revision).  A source revision already recorded keeps its record. */
int pemba_record_source_position(pemba_db *db, const pemba_source_position *p,
                                 pemba_error *err);

typedef enum pemba_source_lookup {
	/* The first revision here that holds p (at_least_as_fresh): one
	 * recorded at or after p; p older than the mirror's start is held
	 * by the start.  Not yet applied: PEMBA_EREVISION. */
	PEMBA_SOURCE_AT_LEAST = 1,
	/* The revision here that holds exactly p (at_exact_snapshot):
	 * PEMBA_EPRECONDITION when p was not applied as one revision,
	 * PEMBA_EREVISION when it predates the mirror's start. */
	PEMBA_SOURCE_EXACT = 2,
	/* Where to resume a change feed that had seen p (Watch cursors):
	 * the newest revision holding a source revision <= p;
	 * PEMBA_EREVISION when p predates the mirror's start. */
	PEMBA_SOURCE_AFTER = 3,
} pemba_source_lookup;

/* The revision here for source revision p, as `mode` says.  A source
 * this datastore was never mirrored from: PEMBA_EINVAL.  Messages name the
 * source revision, what was applied and why a token is refused. */
int pemba_resolve_source_position(pemba_db *db, const pemba_source_position *p,
                                  pemba_source_lookup mode,
                                  pemba_revision *rev_out, pemba_error *err);

/* pemba_write_relationships with options (opts may be NULL). */
int pemba_write_relationships_ex(pemba_db *db, const pemba_update *updates,
                                 size_t nupdates,
                                 const pemba_precondition *preconditions,
                                 size_t npreconditions,
                                 const pemba_write_options *opts,
                                 pemba_revision *rev_out, pemba_error *err);

/* Deletes the relationships matching filter (at most `limit` of them if
 * limit > 0) in one new revision.  With limit > 0 and more matches than
 * limit: if allow_partial, deletes `limit` and sets *more = 1; otherwise
 * fails with PEMBA_ELIMIT and deletes nothing. */
int pemba_delete_relationships(pemba_db *db, const pemba_filter *filter,
                               const pemba_precondition *preconditions,
                               size_t npreconditions, size_t limit,
                               int allow_partial, pemba_revision *rev_out,
                               size_t *deleted_out, int *more_out,
                               pemba_error *err);

/*
 * Bulk import: any number of relationships written atomically as ONE new
 * revision (SpiceDB's ImportBulkRelationships).  op is PEMBA_OP_CREATE (a
 * relationship that exists fails the import with PEMBA_EEXISTS) or
 * PEMBA_OP_TOUCH (idempotent: re-running an import after a crash is safe).
 *
 * An open import holds no lock on the datastore: rows are staged outside
 * it (a private temporary file, unlinked at once; memory bounded whatever
 * their number) and written in one short write transaction at commit, so
 * a slow or stalled import blocks no other writer, and the handle it was
 * begun on serves every other call meanwhile, writes and other imports
 * included.  Until commit, no reader sees any of it.
 *
 * pemba_import_begin checks read-only mode (PEMBA_EREADONLY) and takes the
 * schema and relation deprecations current at the head, for early checks.
 */
typedef struct pemba_import pemba_import;
int pemba_import_begin(pemba_db *db, pemba_operation op, pemba_import **out,
                       pemba_error *err);
/* pemba_import_begin with options (opts may be NULL, and is copied): the
 * metadata is stored with the import's revision, on_deprecated is called
 * after the commit. */
int pemba_import_begin_ex(pemba_db *db, pemba_operation op,
                          const pemba_write_options *opts, pemba_import **out,
                          pemba_error *err);
/* Checks rels[0..n) against what needs no datastore -- syntax and limits
 * as pemba_write_relationships checks them, the schema and the REJECT
 * deprecations taken at begin -- and stages them (strings are copied).
 * A relationship given twice: CREATE fails with PEMBA_EEXISTS, TOUCH keeps
 * the last.  The first error fails the import: only abort (or a commit,
 * which then aborts) is accepted afterwards.  add never touches the
 * pemba_db handle: it may run on any thread, one call at a time per
 * import, while the handle serves other calls. */
int pemba_import_add(pemba_import *imp, const pemba_relationship *rels,
                     size_t n, pemba_error *err);
/* Writes everything staged as one new revision through the handle given
 * to begin (on the thread using that handle), in one write transaction
 * that checks every row again as a write does: against the schema current
 * then (a staged row it no longer allows fails the commit, the message
 * saying the schema changed), read-only mode and deprecations as they are
 * then, and for CREATE, relationships stored meanwhile (PEMBA_EEXISTS
 * naming one).  Any failure writes nothing.  *count_out (may be NULL) is
 * the number of relationships added (a TOUCH duplicate counts twice).
 * The import handle is freed whatever the outcome. */
int pemba_import_commit(pemba_import *imp, pemba_revision *rev_out,
                        uint64_t *count_out, pemba_error *err);
/* Discards the import and its staged rows (NULL is a no-op).  pemba_close
 * aborts every import still open on the handle; their pemba_import
 * handles must not be used afterwards. */
void pemba_import_abort(pemba_import *imp);

/* Called once per relationship read; the strings are valid only during the
 * call.  Return non-zero to stop early. */
typedef int (*pemba_relationship_fn)(void *ctx, const pemba_relationship *rel);

/* Reads relationships matching filter as of revision `at`, in a stable
 * order.  If `after` is non-NULL, starts strictly after that relationship
 * (pagination: pass the last one seen).  limit 0 means no limit. */
int pemba_read_relationships(pemba_db *db, pemba_revision at,
                             const pemba_filter *filter,
                             const pemba_relationship *after, size_t limit,
                             pemba_relationship_fn fn, void *ctx,
                             pemba_error *err);

/* ------------------------------------------------ safe schema evolution */

/* WriteSchema refuses, as SpiceDB does (message and code alike), a schema
 * that would orphan stored relationships: removing a relation that
 * relationships use (as resource relation, or as subject relation
 * `type:id#rel`), an allowed subject type that relationships still have
 * (matched by subject type, relation or wildcard, caveat and expiration),
 * a definition with relationships, or removing / retyping a caveat
 * parameter.  Refusals are PEMBA_EINVAL (SpiceDB: INVALID_ARGUMENT) and
 * name one blocking relationship, e.g. "cannot delete relation `editor`
 * in object definition `resource`, as at least one relationship exists
 * under it: resource:1#editor@user:2".  The checks and the write run in
 * one write transaction, so no relationship write can slip in between. */

/* One structural change between two schemas.  kind uses the numbers of
 * pemba.v1.SchemaChange.Kind (1 ADD_DEFINITION ... 19 USE_EXPIRATION; see
 * src/api/proto/pemba/v1/migration_service.proto).  Strings are never
 * NULL ("" when not applicable). */
typedef struct pemba_schema_change {
	int kind;
	const char *definition;  /* definition or caveat */
	const char *name;        /* relation, permission or parameter */
	const char *detail;      /* allowed type, expression, type, ... */
	const char *description; /* one line for people */
} pemba_schema_change;

typedef struct pemba_write_schema_options {
	/* Run every check (compile, SpiceDB's data rules, read-only mode
	 * excepted) and write nothing. */
	int dry_run;
} pemba_write_schema_options;

/* pemba_write_schema with options (opts may be NULL).  *rev_out is the new
 * revision, or for a dry run the head revision the checks ran at.  With
 * changes_out non-NULL, *changes_out receives the changes from the stored
 * schema (one block with its strings, released with pemba_free(); NULL
 * when there are none) and *nchanges_out their number. */
int pemba_write_schema_ex(pemba_db *db, const char *text, size_t len,
                          const pemba_write_schema_options *opts,
                          pemba_revision *rev_out,
                          pemba_schema_change **changes_out,
                          size_t *nchanges_out, pemba_error *err);

/* The structural changes from schema text `old_text` to `new_text`
 * (either NULL: no schema); both must compile.  Output as above. */
int pemba_diff_schema_text(const char *old_text, size_t old_len,
                           const char *new_text, size_t new_len,
                           pemba_schema_change **changes_out,
                           size_t *nchanges_out, pemba_error *err);

/* A migration plan from the stored schema to a target schema: the steps,
 * in order, after which writing the target is accepted. */
typedef enum pemba_plan_step_kind {
	PEMBA_PLAN_WRITE_SCHEMA = 1,         /* write `schema` */
	PEMBA_PLAN_DELETE_RELATIONSHIPS = 2, /* delete what `filter` (and
	                                        `allowed_type`) match */
} pemba_plan_step_kind;

/* Relationships a delete step removes, per relation and subject type. */
typedef struct pemba_relationship_count {
	const char *resource_type;
	const char *relation;
	const char *subject_type;
	const char *subject_relation; /* "" for none */
	int wildcard;
	const char *caveat_name; /* "" for none */
	uint64_t count;
} pemba_relationship_count;

typedef struct pemba_plan_step {
	pemba_plan_step_kind kind;
	const char *description;
	/* WRITE_SCHEMA: the text to write, and what it changes. */
	const char *schema;
	pemba_schema_change *changes;
	size_t nchanges;
	/* DELETE_RELATIONSHIPS: resource type and relation (and subject
	 * type / relation when they narrow it) ... */
	pemba_filter filter;
	/* ... and, when only one allowed type's relationships go, its text
	 * as written in the schema ("user", "user:*", "group#member",
	 * "user with cav and expiration"): a relationship matches when its
	 * subject type, subject relation (none for "user" and "user:*"),
	 * wildcard (":*" only: subject id "*"; plain "user" also matches
	 * "*"), caveat (exactly, or none) and whether it has an expiration
	 * agree, as SpiceDB checks them.  NULL otherwise. */
	const char *allowed_type;
	pemba_relationship_count *counts;
	size_t ncounts;
	uint64_t total; /* sum of the counts */
} pemba_plan_step;

typedef struct pemba_schema_plan {
	pemba_revision planned_at;
	pemba_schema_change *changes; /* stored -> target, all of them */
	size_t nchanges;
	pemba_plan_step *steps; /* none when the target is already stored */
	size_t nsteps;
	void *internal;
} pemba_schema_plan;

/* Plans the way from the schema stored at the head to `target` (which
 * must compile; errors as pemba_write_schema's).  Changes that are safe
 * now go into one write; permissions that stop referencing what the
 * target removes are written first, in an intermediate schema that keeps
 * the removed relations, types and definitions (so the deletes that
 * follow do not change any answer through them); then one delete step
 * per blocking relation / allowed type / definition (with counts); then
 * the target.  PEMBA_EUNSUPPORTED when no plan exists (a caveat
 * parameter removed or retyped while relations still use the caveat).
 * Release *out with pemba_schema_plan_free(). */
int pemba_plan_schema(pemba_db *db, const char *target, size_t len,
                      pemba_schema_plan **out, pemba_error *err);
void pemba_schema_plan_free(pemba_schema_plan *plan);

/* ------------------------------------------------------------ permissions */

typedef enum pemba_permissionship {
	PEMBA_NO_PERMISSION = 1,
	PEMBA_HAS_PERMISSION = 2,
	PEMBA_CONDITIONAL_PERMISSION = 3,
} pemba_permissionship;

typedef struct pemba_check_request {
	const char *resource_type;
	const char *resource_id;
	const char *permission; /* a permission or relation of resource_type */
	const char *subject_type;
	const char *subject_id;
	const char *subject_relation; /* NULL, "" or "..." for none */
	const char *context;          /* caveat context JSON, NULL if none */
} pemba_check_request;

/* Evaluates a permission check as of revision `at`.  A CONDITIONAL answer
 * means caveat parameters missing from the request and relationship
 * contexts decide it; pemba_check_permission_ex() also names them. */
int pemba_check_permission(pemba_db *db, pemba_revision at,
                           const pemba_check_request *req,
                           pemba_permissionship *out, pemba_error *err);

/* An answer with the caveat parameters it depends on.  In a bulk check,
 * error.code is 0 and permissionship set, or error describes why this
 * item failed. */
typedef struct pemba_check_result {
	pemba_permissionship permissionship;
	pemba_error error;
	/* CONDITIONAL only: the missing parameter names (SpiceDB's
	 * partial_caveat_info.missing_required_context), sorted, without
	 * duplicates.  One malloc'd block owned by the result: release it
	 * with pemba_check_result_clear(). */
	char **missing;
	size_t nmissing;
	/* The revision the check was evaluated at: `at`, or the head read
	 * inside the check's own read transaction when `at` is
	 * PEMBA_REVISION_HEAD (so a caller needs no separate head read to
	 * name it, e.g. in a ZedToken).  Set by pemba_check_permission_ex. */
	pemba_revision checked_at;
} pemba_check_result;

/* Frees r->missing and sets it to NULL (safe on a zeroed result). */
void pemba_check_result_clear(pemba_check_result *r);

/* pemba_check_permission, filling out->permissionship and out->missing
 * (out->error is left untouched: failures go to err). */
int pemba_check_permission_ex(pemba_db *db, pemba_revision at,
                              const pemba_check_request *req,
                              pemba_check_result *out, pemba_error *err);

/* Debug traces (CheckPermission with_tracing, `permission check
 * --explain`): the tree of subproblems a check evaluated, one node per
 * (resource, relation or permission) it dispatched, in evaluation order.
 * Evaluation stops at the first branch that decides (a union at its
 * first grant, an intersection at its first denial), so later branches
 * are absent, as in SpiceDB's traces.  Recording costs nothing unless
 * asked for. */
typedef enum pemba_caveat_outcome {
	PEMBA_CAVEAT_NONE = 0,    /* no caveated relationship at this node */
	PEMBA_CAVEAT_TRUE = 1,
	PEMBA_CAVEAT_FALSE = 2,
	PEMBA_CAVEAT_MISSING = 3, /* parameters missing: `missing` names them */
} pemba_caveat_outcome;

typedef struct pemba_check_trace {
	const char *resource_type;
	const char *resource_id;
	const char *permission; /* the relation or permission evaluated */
	int is_permission;      /* 0: a relation */
	/* 0 when undecided (the check then failed: a cycle or the depth
	 * limit); otherwise HAS, NO or CONDITIONAL. */
	pemba_permissionship result;
	/* Answered from the request's memo of subproblems already
	 * evaluated (SpiceDB's was_cached_result); no children then. */
	int cached;
	int64_t duration_ns;
	/* The earliest expiration (Unix ms) of a relationship read at this
	 * node, 0 for none. */
	int64_t expires_at_ms;
	/* A caveated relationship read at this node (the first whose caveat
	 * held, else the first): its caveat, CEL expression, its own context
	 * (JSON object text, "" for none; the request's context applies
	 * under it), and the outcome. */
	const char *caveat_name; /* NULL: none */
	const char *caveat_expression;
	const char *caveat_context;
	pemba_caveat_outcome caveat_result;
	/* CONDITIONAL: the missing parameter names (sorted). */
	const char *const *missing;
	size_t nmissing;
	struct pemba_check_trace *first_child;
	struct pemba_check_trace *next_sibling;
	void *internal_; /* the root owns the tree's memory */
} pemba_check_trace;

/* pemba_check_permission_ex that also records the trace: *trace_out is the
 * root (release with pemba_check_trace_free), set on success only. */
int pemba_check_permission_trace(pemba_db *db, pemba_revision at,
                                 const pemba_check_request *req,
                                 pemba_check_result *out,
                                 pemba_check_trace **trace_out,
                                 pemba_error *err);
void pemba_check_trace_free(pemba_check_trace *trace);

/* ---------------------------------------------- watch, export, concurrency */

/* Another handle on the same datastore, with the same options: for a
 * server that gives each worker thread its own handle.  Works for file
 * datastores and named memory datastores ("sqlite::memory:NAME"); a
 * private "sqlite::memory:" cannot be shared (PEMBA_EUNSUPPORTED).  The
 * new handle is independent: close each with pemba_close(). */
int pemba_clone(pemba_db *db, pemba_db **out, pemba_error *err);

/* Waits until the head revision is newer than `after` or timeout_ms
 * passes (0: do not wait; negative: wait forever).  *head_out is the head
 * seen last: the caller compares it with `after`.  Commits made through
 * any handle of this process wake the waiter at once; commits by other
 * processes are noticed by polling (at most every 25 ms). */
int pemba_wait_revision(pemba_db *db, pemba_revision after, int timeout_ms,
                        pemba_revision *head_out, pemba_error *err);

/* The process-wide commit generation: it grows by one with every commit
 * made through any handle, on any datastore, of this process.  For event
 * loops that serve many waiters at once (the server's Watch streams):
 * read it, look for new revisions, then sleep on pemba_wait_commit.
 * Commits by other processes are not counted (poll the head for those). */
uint64_t pemba_commit_generation(void);

/* Waits until pemba_commit_generation() differs from `seen` or timeout_ms
 * pass; returns the generation. */
uint64_t pemba_wait_commit(uint64_t seen, int timeout_ms);

/* What a watch reports (SpiceDB's WatchKind); 0 = relationships only. */
enum {
	PEMBA_WATCH_RELATIONSHIPS = 1 << 0,
	PEMBA_WATCH_SCHEMA = 1 << 1,
	PEMBA_WATCH_CHECKPOINTS = 1 << 2,
};

/* Which changes a watch reports.  At most one of object_types (resource
 * types) and filters may be given; a relationship change is reported if
 * it matches any of them (or if neither is given).  resource_id_prefixes,
 * when not NULL, has nfilters entries: filter i also requires the
 * resource id to start with resource_id_prefixes[i] (NULL or "": any). */
typedef struct pemba_watch_filter {
	const char *const *object_types;
	size_t nobject_types;
	const pemba_filter *filters;
	size_t nfilters;
	unsigned kinds; /* PEMBA_WATCH_* bits; 0 = PEMBA_WATCH_RELATIONSHIPS */
	const char *const *resource_id_prefixes;
} pemba_watch_filter;

/* One watch event: the matching changes of one revision, reported as
 * SpiceDB's Watch reports them (docs/compatibility.md).  Updates have op
 * PEMBA_OP_TOUCH -- a relationship created (by CREATE, TOUCH or an import:
 * never PEMBA_OP_CREATE) or given another caveat, context or expiration,
 * with its new values -- or PEMBA_OP_DELETE, with the values it had; all
 * TOUCHes of a revision come before its DELETEs.  Writes that changed
 * nothing (a TOUCH of an identical relationship, a DELETE of a missing
 * one) and expiry are not changes: a revision of only those has no event
 * (except a checkpoint).  A revision with more than PEMBA_WATCH_CHUNK
 * matching changes comes as several events with the same revision; all
 * but the last have more_in_revision = 1.  A checkpoint event has no updates
 * and says "everything up to and including `revision` was reported"; with
 * PEMBA_WATCH_CHECKPOINTS every revision of the range gets one, after its
 * changes (as SpiceDB's Watch).  Everything is valid only during the
 * callback. */
#define PEMBA_WATCH_CHUNK 1000
typedef struct pemba_watch_event {
	pemba_revision revision;
	const pemba_update *updates;
	size_t nupdates;
	int schema_updated; /* the schema was written in this revision */
	int is_checkpoint;
	int more_in_revision;
	const char *metadata; /* transaction metadata (JSON object), or NULL */
} pemba_watch_event;

/* Return non-zero to stop: the watch returns PEMBA_OK with *last_out the
 * revision of that event if it was the revision's last, else the one
 * before it. */
typedef int (*pemba_watch_fn)(void *ctx, const pemba_watch_event *ev);

/* Reports, in revision order, the changes committed after `after` up to
 * the head or to after + max_revisions (0: no limit), one snapshot for
 * the whole call.  *last_out is the revision the caller has seen every
 * change through (pass it as `after` next time).  `after` 0 watches from
 * the start of history, so it must not have been garbage-collected;
 * PEMBA_EREVISION if `after` is garbage-collected (the message names the
 * GC window) or in the future.  With PEMBA_WATCH_CHECKPOINTS, each
 * revision ends with a checkpoint event (see pemba_watch_event).  The
 * callback runs inside the call's read snapshot: it must not write through
 * this handle, and should be quick (copy and queue), because on a memory
 * datastore writers wait for readers to finish. */
int pemba_watch_changes(pemba_db *db, pemba_revision after,
                        const pemba_watch_filter *filter,
                        uint64_t max_revisions, pemba_watch_fn fn, void *ctx,
                        pemba_revision *last_out, pemba_error *err);

/* Exports every relationship visible at `at` (0 = head), whatever its
 * type, in a stable order, at most `limit` per call (0 = no limit).
 * cursor NULL starts a new export; otherwise it is a *next_cursor_out of
 * an earlier call and the export continues at that call's revision (`at`
 * must then be 0 or that revision).  *rev_out is the revision exported.
 * *next_cursor_out (release with pemba_free()) is NULL once everything
 * was delivered.  fn returning non-zero stops the call early; the cursor
 * then resumes after the last relationship delivered.  A cursor is opaque
 * text; a malformed one is PEMBA_EINVAL, one whose revision has since been
 * garbage-collected PEMBA_EREVISION. */
int pemba_export_relationships(pemba_db *db, pemba_revision at,
                               const char *cursor, size_t limit,
                               pemba_relationship_fn fn, void *ctx,
                               pemba_revision *rev_out, char **next_cursor_out,
                               pemba_error *err);

/* -------------------------------------------- lookups, expand, bulk check */

/* LookupResources, LookupSubjects, ExpandPermissionTree and
 * CheckBulkPermissions, with SpiceDB's semantics.  Requests are validated as
 * pemba_check_permission validates (PEMBA_EINVAL for malformed identifiers,
 * PEMBA_EPRECONDITION for unknown definitions / relations); evaluation
 * errors are those of a check (PEMBA_EDEPTH, ...).  `context` (caveat
 * context JSON) is ignored until caveats land.  When at_out is non-NULL it
 * receives the revision actually read (`at` resolved: the head for 0).
 *
 * Cursors are opaque NUL-terminated strings: pass the `cursor` handed to
 * the callback with a result to resume strictly after that result (same
 * request fields; any revision).  Results come in a stable order, so
 * resuming never repeats or skips a result.  NULL or "" starts from the
 * beginning; a malformed cursor is PEMBA_EINVAL. */

/* Called once per result, in order; strings (and the cursor) are valid
 * only during the call.  Return non-zero to stop early (the lookup then
 * returns PEMBA_OK). */
typedef int (*pemba_lookup_resource_fn)(void *ctx, const char *resource_id,
                                        pemba_permissionship permissionship,
                                        const char *cursor);

/* One lookup result in full (the `on_item` form of the callbacks below):
 * the resource or subject id ("*" for a wildcard subject), its
 * permissionship, the caveat parameters a CONDITIONAL one is missing
 * (sorted), for a wildcard subject the subjects it excludes (each with its
 * own permissionship: CONDITIONAL when only a caveat excludes it), and the
 * cursor that resumes after it.  Everything is valid only during the
 * call. */
typedef struct pemba_lookup_item {
	const char *id;
	pemba_permissionship permissionship;
	const char *const *missing;
	size_t nmissing;
	const struct pemba_lookup_item *excluded;
	size_t nexcluded;
	const char *cursor;
} pemba_lookup_item;

/* Return non-zero to stop early. */
typedef int (*pemba_lookup_item_fn)(void *ctx, const pemba_lookup_item *item);

typedef struct pemba_lookup_resources_request {
	const char *resource_type;
	const char *permission; /* a permission or relation of resource_type */
	const char *subject_type;
	const char *subject_id;       /* not "*" */
	const char *subject_relation; /* NULL, "" or "..." for none */
	const char *context;          /* caveat context JSON, NULL if none */
	size_t limit;                 /* 0: no limit */
	const char *cursor;           /* NULL or "": from the start */
	/* When set, results go here (with missing caveat parameters)
	 * instead of to `fn`, which may then be NULL. */
	pemba_lookup_item_fn on_item;
} pemba_lookup_resources_request;

/* Every resource of req->resource_type on which the subject has the
 * permission (SpiceDB's LookupResources), in ascending byte order of
 * resource id, at most req->limit of them.  Results are streamed to fn as
 * they are decided. */
int pemba_lookup_resources(pemba_db *db, pemba_revision at,
                           const pemba_lookup_resources_request *req,
                           pemba_lookup_resource_fn fn, void *ctx,
                           pemba_revision *at_out, pemba_error *err);

/* One LookupSubjects result.  subject_id "*" is a wildcard: every subject
 * of the type except excluded_ids[0..nexcluded) (SpiceDB's
 * excluded_subjects), which come sorted.  Concrete subjects are reported
 * as well when a wildcard also covers them.  Valid only during the call;
 * return non-zero to stop early. */
typedef int (*pemba_lookup_subject_fn)(void *ctx, const char *subject_id,
                                       pemba_permissionship permissionship,
                                       const char *const *excluded_ids,
                                       size_t nexcluded, const char *cursor);

typedef struct pemba_lookup_subjects_request {
	const char *resource_type;
	const char *resource_id;
	const char *permission;
	const char *subject_type;
	const char *subject_relation; /* NULL, "" or "...": subject objects;
	                                 else usersets type#relation */
	int exclude_wildcards; /* 1: do not report `*` (EXCLUDE_WILDCARDS) */
	const char *context;   /* caveat context JSON, NULL if none */
	size_t limit;          /* 0: no limit */
	const char *cursor;    /* NULL or "": from the start */
	/* When set, results go here (with missing caveat parameters and
	 * the excluded subjects' permissionships) instead of to `fn`, which
	 * may then be NULL. */
	pemba_lookup_item_fn on_item;
} pemba_lookup_subjects_request;

/* Every subject of req->subject_type (with req->subject_relation) that has
 * the permission on the resource (SpiceDB's LookupSubjects), in ascending
 * byte order of subject id (`*` sorts before every id that starts with a
 * letter or digit). */
int pemba_lookup_subjects(pemba_db *db, pemba_revision at,
                          const pemba_lookup_subjects_request *req,
                          pemba_lookup_subject_fn fn, void *ctx,
                          pemba_revision *at_out, pemba_error *err);

/* ExpandPermissionTree: SpiceDB's PermissionRelationshipTree.  Every node
 * names what it expands (expanded_object type:id, expanded_relation).  A
 * leaf lists the direct subjects of a relation (objects, usersets
 * `group:eng#member`, wildcards `user:*`) without expanding usersets
 * further; permissions become union / intersection / exclusion nodes over
 * the expansions of their operands, an arrow a union over the targets of
 * the tupleset's subjects. */
typedef enum pemba_expand_kind {
	PEMBA_EXPAND_LEAF = 0,
	PEMBA_EXPAND_UNION = 1,
	PEMBA_EXPAND_INTERSECTION = 2,
	PEMBA_EXPAND_EXCLUSION = 3, /* children[0] minus children[1..] */
} pemba_expand_kind;

typedef struct pemba_subject_ref {
	const char *type;
	const char *id;
	const char *relation; /* NULL for the object itself */
	/* Expand leaves: the caveat of the relationship (NULL if none),
	 * which makes the subject's membership conditional on it. */
	const char *caveat_name;
} pemba_subject_ref;

typedef struct pemba_expand_node {
	pemba_expand_kind kind;
	const char *object_type; /* expanded_object */
	const char *object_id;
	const char *relation;                /* expanded_relation */
	struct pemba_expand_node **children; /* operators */
	size_t nchildren;
	pemba_subject_ref *subjects; /* leaves */
	size_t nsubjects;
	/* A child of an arrow reached through a caveated relationship: that
	 * relationship's caveat (NULL if none); everything in this subtree
	 * is conditional on it. */
	const char *caveat_name;
} pemba_expand_node;

/* Expands relation or permission `permission` of resource_type:resource_id
 * at revision `at`.  *tree_out is one allocation owned by the caller and
 * released with pemba_expand_free() (not pemba_free()). */
int pemba_expand(pemba_db *db, pemba_revision at, const char *resource_type,
                 const char *resource_id, const char *permission,
                 pemba_expand_node **tree_out, pemba_revision *at_out,
                 pemba_error *err);
void pemba_expand_free(pemba_expand_node *tree);

/* CheckBulkPermissions: evaluates items[0..n) at one revision into
 * results[0..n).  An item that is malformed, names an unknown definition
 * or fails evaluation gets its own error; the others are still answered.
 * Returns < 0 only for failures of the whole request (bad revision,
 * datastore error, NULL arguments). */
int pemba_check_bulk(pemba_db *db, pemba_revision at,
                     const pemba_check_request *items, size_t n,
                     pemba_check_result *results, pemba_revision *at_out,
                     pemba_error *err);
/* pemba_check_bulk recording each item's trace into traces[0..n) (NULL
 * for a failed item; free each with pemba_check_trace_free). */
int pemba_check_bulk_trace(pemba_db *db, pemba_revision at,
                           const pemba_check_request *items, size_t n,
                           pemba_check_result *results,
                           pemba_check_trace **traces, pemba_revision *at_out,
                           pemba_error *err);

/* ------------------------------------------ data migrations: copy, verify */

/* The backfill step of "migrate data from one relation to another": every
 * relationship of resource_type#relation (only subjects of subject_type
 * when given) is TOUCHed as to_resource_type#to_relation with the same
 * resource id, subject (mapped by subject_mappings), caveat, caveat
 * context and expiration.
 *
 * Contract with concurrent writes: each batch reads its source rows at
 * the head inside its own write transaction and writes exactly those, so
 * a batch never writes a relationship that does not exist in the source
 * when the batch commits, and writes each with its caveat, context and
 * expiration of that moment.  A relationship deleted from the source
 * before its batch is not copied; one deleted after its batch committed
 * stays in the target: an application dual-writing deletes it from both
 * relations, so with dual writes running the target ends up exactly
 * "the source as of now".  Relationships created in the source after the
 * copy passed their key are not copied (dual writes write them).
 * Targets are written in batches of batch_size (0:
 * PEMBA_COPY_DEFAULT_BATCH; at most PEMBA_COPY_MAX_BATCH), each batch one
 * write transaction through the bulk-import path: validated against the
 * schema current at that write, subject to read-only mode and
 * deprecations like any write.  TOUCH makes every batch idempotent, so
 * re-running a copy, or resuming it from any cursor it reported, is safe.
 *
 * Before writing anything the copy compares the source relation's allowed
 * subject types (mapped) with the target's: a mapping whose target type
 * the target relation does not allow is PEMBA_EINVAL naming the type; a
 * source type the target does not allow, of which the source has at
 * least one relationship, is PEMBA_EINVAL naming the type and that
 * relationship.
 *
 * A cursor is opaque text binding the datastore, the revision range the
 * copy has used (the revision it started at and the last batch's), the
 * count copied so far and the last source relationship written.  A
 * cursor of another copy request or a malformed one is PEMBA_EINVAL; a
 * cursor from another datastore, or whose start revision has been
 * garbage-collected since, is PEMBA_EREVISION with one message, "cannot
 * resume the copy from this cursor: ...; restart the copy without a
 * cursor" (TOUCH makes the restart safe). */
/* Copy batches: one write transaction each.  Larger than the 1000 of a
 * WriteRelationships call because a bulk copy's cost is dominated by
 * per-transaction index page writes (bench/README.md: 1000-row batches
 * copy ~33k relationships/s, 100000-row ones ~150k/s); memory
 * is one batch. */
#define PEMBA_COPY_DEFAULT_BATCH 100000
#define PEMBA_COPY_MAX_BATCH 100000
#define PEMBA_COPY_MAX_BATCH_MS 600000

/* One subject mapping of a copy: source subjects of from_type (and
 * from_relation, when given: NULL matches any subject relation, including
 * none) become subjects of to_type with the same id and to_relation (NULL:
 * the source subject's relation unchanged; only with from_relation set).
 * Wildcards (`user:*`) map to wildcards of the new type. */
typedef struct pemba_subject_mapping {
	const char *from_type;
	const char *from_relation; /* NULL or "": any */
	const char *to_type;
	const char *to_relation; /* NULL or "": unchanged */
} pemba_subject_mapping;

/* At most this many mappings per copy. */
#define PEMBA_COPY_MAX_MAPPINGS 64

typedef struct pemba_copy_request {
	const char *resource_type;
	const char *relation;
	const char *to_resource_type; /* NULL or "": resource_type */
	const char *to_relation;
	const char *subject_type; /* NULL or "": every subject type */
	size_t batch_size;        /* 0: PEMBA_COPY_DEFAULT_BATCH */
	/* A batch also ends once it has run this long (its first rows are
	 * always written), so that writers waiting for the write lock wait
	 * about this long at most; 0: batches end by batch_size only.  At
	 * most PEMBA_COPY_MAX_BATCH_MS. */
	unsigned max_batch_ms;
	const char *cursor;       /* NULL or "": a new copy */
	/* Subject mappings (see pemba_subject_mapping), applied after the
	 * subject_type filter (which names a source type); a subject that
	 * matches a mapping with from_relation wins over one without. */
	const pemba_subject_mapping *subject_mappings;
	size_t nsubject_mappings;
	/* Options of every batch's write (NULL: none): its metadata is
	 * stored with each batch's revision; on_deprecated hears about a
	 * target relation deprecated in WARN mode, once per batch. */
	const pemba_write_options *write_options;
} pemba_copy_request;

/* Reported after every batch written, and once more with done = 1 at the
 * end.  The cursor is valid only during the callback (copy it to keep
 * it); resuming with it continues after the last batch written. */
typedef struct pemba_copy_progress {
	uint64_t copied; /* TOUCHed so far, resumed calls included */
	size_t batch;    /* relationships in the batch just written */
	const char *cursor;
	pemba_revision snapshot;   /* the revision the copy started at (each
	                              batch reads the source at its head) */
	pemba_revision written_at; /* the last batch's revision; 0 if none
	                              was written by this call */
	int done;                  /* every relationship has been copied */
} pemba_copy_progress;

/* Return non-zero to stop the copy after this batch: the call then
 * returns PEMBA_OK with done = 0 in *out. */
typedef int (*pemba_copy_fn)(void *ctx, const pemba_copy_progress *p);

/* What a copy call did.  cursor: the cursor after the last batch written
 * (on failure too, so the caller can resume), or NULL if the call failed
 * before knowing its snapshot; release it with pemba_free(). */
typedef struct pemba_copy_result {
	uint64_t copied;
	pemba_revision snapshot;
	pemba_revision written_at;
	char *cursor;
	int done;
} pemba_copy_result;

/* Runs (or resumes) a copy; fn (may be NULL) gets the progress.  out may
 * be NULL. */
int pemba_copy_relationships(pemba_db *db, const pemba_copy_request *req,
                             pemba_copy_fn fn, void *ctx,
                             pemba_copy_result *out, pemba_error *err);

/* The "confirm the backfill before switching the permission" step: at one
 * revision, for every resource of resource_type that has a relationship
 * (in id order), compares the subjects `first` grants with those `second`
 * grants (two relations or permissions of resource_type), for every
 * subject type and subject relation the schema lets either reach
 * (LookupSubjects).  A wildcard is compared as itself (`type:*`) and
 * through its exclusions: a subject differs when its effective membership
 * (listed, or covered by the wildcard and not excluded) differs.  Caveated
 * results compare by permissionship (CONDITIONAL differs from HAS). */
typedef struct pemba_verify_request {
	const char *resource_type;
	const char *first;      /* relation or permission */
	const char *second;     /* relation or permission */
	size_t max_differences; /* reported to fn (all are counted); 0: 100 */
} pemba_verify_request;

/* One difference; strings valid only during the callback. */
typedef struct pemba_verify_difference {
	const char *resource_id;
	const char *subject;        /* "type:id", "type:id#rel" or "type:*" */
	pemba_permissionship first; /* PEMBA_NO_PERMISSION when absent */
	pemba_permissionship second;
} pemba_verify_difference;

/* Return non-zero to stop early (the summary then has complete = 0). */
typedef int (*pemba_verify_fn)(void *ctx, const pemba_verify_difference *d);

typedef struct pemba_verify_summary {
	pemba_revision revision; /* the revision compared */
	uint64_t resources;      /* resources compared */
	uint64_t differences;    /* all of them, reported or not */
	int equal;               /* complete and no difference */
	int complete;            /* every resource was compared */
} pemba_verify_summary;

/* Memory is bounded by the subjects of one resource, not by the number
 * of resources.  `at` 0 = the head.  fn may be NULL (summary only). */
int pemba_verify_permission(pemba_db *db, pemba_revision at,
                            const pemba_verify_request *req, pemba_verify_fn fn,
                            void *ctx, pemba_verify_summary *out,
                            pemba_error *err);

/* ------------------------------------------- read-only mode, deprecation */

/* Settings stored in the datastore, so every handle and every process
 * serving it sees them at once.  Changing one is not a revision (nothing
 * to watch), and works while the datastore is read-only.
 *
 * Read-only mode: while on, every write -- relationship writes, deletes,
 * imports, schema writes -- fails with PEMBA_EREADONLY and changes
 * nothing; reads keep working.  The flag is checked inside the write's
 * own transaction, so a write either committed before the flag was set
 * or is refused. */
int pemba_set_read_only(pemba_db *db, int read_only, pemba_error *err);
int pemba_get_read_only(pemba_db *db, int *read_only_out, pemba_error *err);

/* Relation deprecation, kept outside the schema text (schemas stay
 * SpiceDB's).  A CREATE or TOUCH whose resource relation is deprecated
 * is refused with PEMBA_EPRECONDITION in REJECT mode, and succeeds in
 * WARN mode, reported through pemba_write_options.on_deprecated.
 * DELETEs (updates, delete by filter) are always allowed: deleting is how
 * data moves off a deprecated relation.  Subject relations
 * (`group:eng#member`) are not affected.  A permission can be deprecated
 * too: nothing writes it, so the library does not act on it; servers
 * count, log and (REJECT) refuse the reads that name a deprecated
 * relation or permission (src/api/README.md). */
typedef enum pemba_deprecation_mode {
	PEMBA_DEPRECATION_WARN = 1,
	PEMBA_DEPRECATION_REJECT = 2,
} pemba_deprecation_mode;

typedef struct pemba_deprecation {
	const char *resource_type;
	const char *relation;
	pemba_deprecation_mode mode;
	pemba_revision set_at; /* the head revision when it was set */
	int64_t set_at_ms;     /* Unix ms when it was set */
} pemba_deprecation;

/* Deprecates resource_type#relation (replacing the mode of an earlier
 * deprecation of it).  It must be a relation or a permission of the
 * current schema: PEMBA_EPRECONDITION otherwise; PEMBA_EINVAL for
 * malformed names or an unknown mode. */
int pemba_deprecate_relation(pemba_db *db, const char *resource_type,
                             const char *relation, pemba_deprecation_mode mode,
                             pemba_error *err);
/* Lifts a deprecation; *was_deprecated_out (may be NULL) says whether
 * there was one (lifting none is not an error). */
int pemba_undeprecate_relation(pemba_db *db, const char *resource_type,
                               const char *relation, int *was_deprecated_out,
                               pemba_error *err);
/* Every deprecation, ordered by type and relation: *out is one block
 * (array and strings) released with pemba_free(); NULL when *n_out is 0. */
int pemba_list_deprecations(pemba_db *db, pemba_deprecation **out,
                            size_t *n_out, pemba_error *err);

/* ------------------------------------------------------- maintenance */

/* Removes revisions older than the GC window (relative to now), and
 * relationships that expired before the window. */
int pemba_gc(pemba_db *db, uint64_t *removed_out, pemba_error *err);

/* What one garbage collection removed. */
typedef struct pemba_gc_stats {
	uint64_t relationships; /* versions deleted or replaced before the
	                           oldest readable revision */
	uint64_t expired;       /* relationships expired before the window */
	uint64_t schemas;       /* schema versions replaced before it */
	uint64_t revisions;     /* revision records below it */
	pemba_revision oldest;  /* oldest readable revision afterwards */
	/* PostgreSQL: another process was collecting (one at a time per
	 * datastore); this run did nothing. */
	int skipped;
} pemba_gc_stats;

/* pemba_gc reporting the details (out may not be NULL). */
int pemba_gc_ex(pemba_db *db, pemba_gc_stats *out, pemba_error *err);

/* What the query cache shared by db's datastore did so far in this
 * process (pemba_options.query_cache_bytes), for metrics and logs. */
typedef struct pemba_query_cache_stats {
	uint64_t hits, misses; /* queries answered from the cache / not */
	uint64_t inserts;      /* results stored */
	uint64_t uncacheable;  /* results not stored (an expiration, or too
	                          large for one entry) */
	uint64_t evictions;    /* entries dropped to keep the budget */
	uint64_t entries, bytes, budget; /* now */
} pemba_query_cache_stats;

/* Fills *out and returns 1, or zeroes it and returns 0 when db has no
 * query cache. */
int pemba_query_cache_stats_get(pemba_db *db, pemba_query_cache_stats *out);

/* Marks the datastore as served by this process until db is closed (a
 * shared lease): `pemba datastore migrate` and `new-identity` refuse to
 * run meanwhile, naming this process (pid, host, start time), unless
 * forced.  The lease ends with the handle or the process, however it
 * dies (kill -9 included), so it never outlives its holder.
 * PEMBA_EPRECONDITION while a migration holds the datastore.  A no-op for
 * memory datastores. */
int pemba_attach(pemba_db *db, pemba_error *err);

/* Progress of pemba_snapshot: `done` of `total` units (database pages). */
typedef void (*pemba_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct pemba_snapshot_info {
	pemba_revision revision; /* the copy holds the datastore as of it */
	uint64_t nonce;          /* its nonce (pemba_revision_nonce) */
	uint64_t bytes;          /* size of the copy */
	char datastore_id[64];   /* the copy's identity */
} pemba_snapshot_info;

/* Writes a consistent copy of the datastore at one revision (the head
 * when it starts) to the new file `path` while other handles and
 * processes keep reading and writing (for SQLite: the online backup API
 * inside one read transaction).  Never overwrites: an existing `path` is
 * PEMBA_EEXISTS, and the file appears only when complete.  new_identity:
 * the copy gets its own random identity (a separate instance; ZedTokens of
 * one are refused by the other); otherwise it keeps this one's (a backup
 * to restore in its place).  progress (may be NULL) is called as pages
 * are copied; info (may be NULL) describes the copy. */
int pemba_snapshot(pemba_db *db, const char *path, int new_identity,
                   pemba_progress_fn progress, void *ctx,
                   pemba_snapshot_info *info, pemba_error *err);

#ifdef __cplusplus
}
#endif

#endif /* PEMBA_H */
