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
 * serializes).  Separate handles on the same file datastore may be used from
 * separate threads.
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
 * "sqlite::memory:".  opts may be NULL.  On success *out owns the
 * connection; release it with pemba_close(). */
int pemba_open(const char *uri, const pemba_options *opts, pemba_db **out,
               pemba_error *err);
void pemba_close(pemba_db *db);

/* The newest committed revision (0 for an empty datastore). */
int pemba_head_revision(pemba_db *db, pemba_revision *out, pemba_error *err);

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

/* Evaluates a permission check as of revision `at`. */
int pemba_check_permission(pemba_db *db, pemba_revision at,
                           const pemba_check_request *req,
                           pemba_permissionship *out, pemba_error *err);

/* ------------------------------------------------------- maintenance */

/* Removes revisions older than the GC window (relative to now). */
int pemba_gc(pemba_db *db, uint64_t *removed_out, pemba_error *err);

#ifdef __cplusplus
}
#endif

#endif /* PEMBA_H */
