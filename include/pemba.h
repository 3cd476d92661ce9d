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
	PEMBA_EUNSUPPORTED = -9,  /* feature not implemented yet */
	PEMBA_EREADONLY = -10,    /* write refused: read-only mode */
	PEMBA_ELIMIT = -11,       /* a size/count limit was exceeded */
	PEMBA_EVERSION = -12,     /* datastore layout version mismatch */
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
	/* Apply pending datastore layout migrations on open (default on: 0).
	 * Set to 1 to refuse to open a datastore that is not at the newest
	 * layout version instead. */
	int no_auto_migrate;
} pemba_options;

/* Opens a datastore by URI: "sqlite:///abs/path.db", "sqlite://./rel.db",
 * "sqlite::memory:" (private to this handle), "sqlite::memory:NAME"
 * (NAME: letters, digits, '_', '-', '.'; shared by every handle of this
 * process that opens it, dropped when the last one closes).  opts may be
 * NULL.  On success *out owns the
 * connection; release it with pemba_close(). */
int pemba_open(const char *uri, const pemba_options *opts, pemba_db **out,
               pemba_error *err);
void pemba_close(pemba_db *db);

/* The newest committed revision (0 for an empty datastore). */
int pemba_head_revision(pemba_db *db, pemba_revision *out, pemba_error *err);

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

/* Options of a write.  Zero-initialize, then set what you need. */
typedef struct pemba_write_options {
	/* Transaction metadata: the text of a JSON object (at most 64 KiB)
	 * stored with the revision and reported by pemba_watch_changes
	 * (SpiceDB's optional_transaction_metadata).  NULL: none. */
	const char *metadata;
} pemba_write_options;

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

/* Bulk import: any number of relationships written atomically as ONE new
 * revision (SpiceDB's ImportBulkRelationships).  Relationships stream into
 * the open write transaction, so memory does not grow with their number;
 * each is validated exactly as pemba_write_relationships validates.  op is
 * PEMBA_OP_CREATE (an existing relationship fails the import with
 * PEMBA_EEXISTS) or PEMBA_OP_TOUCH (idempotent: re-running an import
 * after a crash is safe).  Until commit, no reader sees any of it; after
 * an error, the import can only be aborted.  The handle's other write
 * calls fail while an import is open. */
typedef struct pemba_import pemba_import;
int pemba_import_begin(pemba_db *db, pemba_operation op, pemba_import **out,
                       pemba_error *err);
int pemba_import_add(pemba_import *imp, const pemba_relationship *rels,
                     size_t n, pemba_error *err);
/* At most one import is open per handle; pemba_close() aborts an open one
 * (its handle must not be used afterwards).
 * Commits; *count_out (may be NULL) is the number of relationships added.
 * The import handle is freed whatever the outcome. */
int pemba_import_commit(pemba_import *imp, pemba_revision *rev_out,
                        uint64_t *count_out, pemba_error *err);
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
} pemba_check_result;

/* Frees r->missing and sets it to NULL (safe on a zeroed result). */
void pemba_check_result_clear(pemba_check_result *r);

/* pemba_check_permission, filling out->permissionship and out->missing
 * (out->error is left untouched: failures go to err). */
int pemba_check_permission_ex(pemba_db *db, pemba_revision at,
                              const pemba_check_request *req,
                              pemba_check_result *out, pemba_error *err);

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

/* What a watch reports (SpiceDB's WatchKind); 0 = relationships only. */
enum {
	PEMBA_WATCH_RELATIONSHIPS = 1 << 0,
	PEMBA_WATCH_SCHEMA = 1 << 1,
	PEMBA_WATCH_CHECKPOINTS = 1 << 2,
};

/* Which changes a watch reports.  At most one of object_types (resource
 * types) and filters may be given; a relationship change is reported if
 * it matches any of them (or if neither is given). */
typedef struct pemba_watch_filter {
	const char *const *object_types;
	size_t nobject_types;
	const pemba_filter *filters;
	size_t nfilters;
	unsigned kinds; /* PEMBA_WATCH_* bits; 0 = PEMBA_WATCH_RELATIONSHIPS */
} pemba_watch_filter;

/* One watch event: the matching changes of one revision.  Updates have op
 * PEMBA_OP_TOUCH (created, or caveat/expiration replaced) or
 * PEMBA_OP_DELETE.  A revision with more than PEMBA_WATCH_CHUNK matching
 * changes comes as several events with the same revision; all but the
 * last have more_in_revision = 1.  A checkpoint event has no updates and
 * says "nothing (more) matched up to and including `revision`".
 * Everything is valid only during the callback. */
#define PEMBA_WATCH_CHUNK 1000
typedef struct pemba_watch_event {
	pemba_revision revision;
	const pemba_update *updates;
	size_t nupdates;
	int schema_updated;   /* the schema was written in this revision */
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
 * PEMBA_EREVISION if `after` is garbage-collected or in the future.  With
 * PEMBA_WATCH_CHECKPOINTS, the call ends with a checkpoint event at
 * *last_out when no event for that revision was delivered.  The callback
 * runs inside the call's read snapshot: it must not write through this
 * handle, and should be quick (copy and queue), because on a memory
 * datastore writers wait for readers to finish. */
int pemba_watch_changes(pemba_db *db, pemba_revision after,
                        const pemba_watch_filter *filter,
                        uint64_t max_revisions, pemba_watch_fn fn,
                        void *ctx, pemba_revision *last_out,
                        pemba_error *err);

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
                               pemba_revision *rev_out,
                               char **next_cursor_out, pemba_error *err);

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
	const char *relation; /* expanded_relation */
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

/* ------------------------------------------------------- maintenance */

/* Removes revisions older than the GC window (relative to now), and
 * relationships that expired before the window. */
int pemba_gc(pemba_db *db, uint64_t *removed_out, pemba_error *err);

#ifdef __cplusplus
}
#endif

#endif /* PEMBA_H */
