/*
 * cmd_backup_restore.c -- `pemba backup restore FILE|-`: a zed backup into
 * a server (src/tools/backup_format.h for the file).
 *
 * The schema goes first (SchemaService.WriteSchema), then the
 * relationships in transactions of --batches-per-transaction batches of
 * --batch-size: one ImportBulkRelationships call per transaction, one
 * request message per batch (the server commits the call as one
 * transaction).  A transaction that fails with ALREADY_EXISTS is, with
 * --conflict-strategy touch, written again with WriteRelationships TOUCH
 * in batches; with skip, with WriteRelationships CREATE per batch and,
 * for a batch that conflicts, per relationship, leaving the existing ones
 * as they are; with fail (the default) the restore stops.
 *
 * Resumable: FILE.restore (the sidecar state file) records the file's
 * zedtoken, whether the schema was written and how many relationships
 * are committed, replaced atomically after every transaction.  While it
 * exists the restore is not complete; `--resume` continues after the last
 * committed transaction (the relationships before it are read from the
 * file again but not sent); that first transaction is written with TOUCH
 * if it meets existing relationships, since it may have committed just
 * before the process died.  The state file is removed at the end.
 *
 * Exit status: 0 success, 2 on any error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "authzed/api/v1/schema_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "tools/backup_format.h"
#include "tools/backup_rewrite.h"
#include "util/arena.h"
#include "util/xalloc.h"

#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"
/* Transactions larger than this (relationships) are streamed from the file
 * instead of held in memory, and then not retried (--resume continues). */
#define RESTORE_STREAM_ABOVE 100000

typedef enum conflict_strategy {
	CONFLICT_FAIL,
	CONFLICT_SKIP,
	CONFLICT_TOUCH
} conflict_strategy;

typedef struct restore_opts {
	unsigned batch_size;
	unsigned batches_per_transaction;
	conflict_strategy conflict;
	bool resume;
	int64_t request_timeout_ms; /* per ImportBulkRelationships call */
	unsigned max_retries;       /* of a transaction, on retryable codes */
	cli_backup_rewrite_flags rewrite;
} restore_opts;

/* ===================================================================== */
/* State file                                                            */
/* ===================================================================== */

typedef struct restore_state {
	char token[1024];
	bool schema_written;
	uint64_t committed;
} restore_state;

static int state_read(const char *path, restore_state *st)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? 0 : -1;
	char line[2048];
	int fields = 0;
	memset(st, 0, sizeof(*st));
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "revision ", 9) == 0) {
			snprintf(st->token, sizeof(st->token), "%s", line + 9);
			fields |= 1;
		} else if (strcmp(line, "revision") == 0) {
			fields |= 1;
		} else if (strncmp(line, "schema ", 7) == 0) {
			st->schema_written = strcmp(line + 7, "written") == 0;
			fields |= 2;
		} else if (strncmp(line, "committed ", 10) == 0) {
			st->committed = strtoull(line + 10, NULL, 10);
			fields |= 4;
		}
	}
	fclose(f);
	return fields == 7 ? 1 : -1;
}

static int state_write(const char *path, const restore_state *st)
{
	char text[1200];
	snprintf(text, sizeof(text),
	         "pemba-restore-state 1\nrevision %s\nschema %s\ncommitted "
	         "%" PRIu64 "\n",
	         st->token, st->schema_written ? "written" : "pending",
	         st->committed);
	return cli_replace_file(path, text);
}

/* ===================================================================== */
/* Relationships as messages                                             */
/* ===================================================================== */

/* One transaction's relationships as messages, in an arena.  Caveat
 * contexts are unpacked with protobuf-c's allocator and kept in structs
 * to be freed. */
typedef struct txn {
	arena *a;
	Authzed__Api__V1__Relationship **rels;
	size_t n, cap;
	Google__Protobuf__Struct **structs;
	size_t nstructs;
} txn;

static void txn_reset(txn *t)
{
	for (size_t i = 0; i < t->nstructs; i++)
		google__protobuf__struct__free_unpacked(t->structs[i], NULL);
	t->nstructs = 0;
	t->n = 0;
	arena_reset(t->a);
}

/* Adds b to t.  Returns 0, or -1 when the caveat context is not a
 * Struct. */
static int txn_add(txn *t, const backup_relationship *b)
{
	arena *a = t->a;
	Authzed__Api__V1__ObjectReference *res = arena_alloc(a, sizeof(*res));
	Authzed__Api__V1__ObjectReference *so = arena_alloc(a, sizeof(*so));
	Authzed__Api__V1__SubjectReference *subj =
	    arena_alloc(a, sizeof(*subj));
	Authzed__Api__V1__Relationship *rel = arena_alloc(a, sizeof(*rel));
	authzed__api__v1__object_reference__init(res);
	authzed__api__v1__object_reference__init(so);
	authzed__api__v1__subject_reference__init(subj);
	authzed__api__v1__relationship__init(rel);
	res->object_type = arena_strdup(a, b->object_type);
	res->object_id = arena_strdup(a, b->object_id);
	so->object_type = arena_strdup(a, b->subject_object_type);
	so->object_id = arena_strdup(a, b->subject_object_id);
	subj->object = so;
	subj->optional_relation = arena_strdup(a, b->subject_relation);
	rel->resource = res;
	rel->relation = arena_strdup(a, b->relation);
	rel->subject = subj;
	if (b->caveat_name[0]) {
		Authzed__Api__V1__ContextualizedCaveat *c =
		    arena_alloc(a, sizeof(*c));
		authzed__api__v1__contextualized_caveat__init(c);
		c->caveat_name = arena_strdup(a, b->caveat_name);
		if (b->caveat_context_len) {
			Google__Protobuf__Struct *s =
			    google__protobuf__struct__unpack(
			        NULL, b->caveat_context_len, b->caveat_context);
			if (!s)
				return -1;
			t->structs =
			    xrealloc(t->structs,
			             (t->nstructs + 1) * sizeof(*t->structs));
			t->structs[t->nstructs++] = s;
			c->context = s;
		}
		rel->optional_caveat = c;
	}
	if (b->expiration_ms != BACKUP_NO_EXPIRATION) {
		Google__Protobuf__Timestamp *ts = arena_alloc(a, sizeof(*ts));
		google__protobuf__timestamp__init(ts);
		int64_t s = b->expiration_ms / 1000,
		        rem = b->expiration_ms % 1000;
		if (rem < 0) {
			s--;
			rem += 1000;
		}
		ts->seconds = s;
		ts->nanos = (int32_t)(rem * 1000000);
		rel->optional_expires_at = ts;
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 1024;
		t->rels = xrealloc(t->rels, t->cap * sizeof(*t->rels));
	}
	t->rels[t->n++] = rel;
	return 0;
}

/* ===================================================================== */
/* Calls                                                                 */
/* ===================================================================== */

typedef struct import_feed {
	txn *t;
	size_t batch_size, next;
	uint8_t *buf;
} import_feed;

static int next_import_message(void *ctx, const void **data, size_t *len)
{
	import_feed *f = ctx;
	if (f->next >= f->t->n)
		return 0;
	size_t n = f->t->n - f->next;
	if (n > f->batch_size)
		n = f->batch_size;
	Authzed__Api__V1__ImportBulkRelationshipsRequest req =
	    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	req.n_relationships = n;
	req.relationships = f->t->rels + f->next;
	f->next += n;
	free(f->buf);
	*len = protobuf_c_message_get_packed_size(&req.base);
	f->buf = xmalloc(*len ? *len : 1);
	protobuf_c_message_pack(&req.base, f->buf);
	*data = f->buf;
	return 1;
}

/* Prints the error line of a failed call. */
static int print_status(const grpc_status *st)
{
	return client_error(grpc_status_name(st->code), "%s",
	                    st->message && *st->message ? st->message
	                                                : "(no message)");
}

/* Codes after which the same transaction may succeed when sent again. */
static bool retryable(int code)
{
	return code == GRPC_STATUS_UNAVAILABLE ||
	       code == GRPC_STATUS_DEADLINE_EXCEEDED ||
	       code == GRPC_STATUS_ABORTED ||
	       code == GRPC_STATUS_RESOURCE_EXHAUSTED;
}

/* One transaction through ImportBulkRelationships.  Returns the gRPC code;
 * *status is filled (caller clears). */
static int import_txn(client_conn *conn, txn *t, size_t batch_size,
                      int timeout_ms, grpc_status *status)
{
	import_feed f = {.t = t, .batch_size = batch_size};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	int code = grpc_client_streaming(
	    conn->grpc, PERMISSIONS_SERVICE "ImportBulkRelationships",
	    conn->metadata, conn->metadata_count, timeout_ms,
	    next_import_message, &f, NULL, NULL, &resp, &resp_len, status);
	free(f.buf);
	free(resp);
	return code;
}

/* A transaction streamed from the file: each request message is read
 * when the call asks for it, so the client holds one batch, whatever the
 * transaction's size.  Used for transactions of more than
 * RESTORE_STREAM_ABOVE relationships when a conflict stops the restore
 * anyway (--conflict-strategy fail, not the first transaction after
 * --resume): the other strategies, and retries, need the transaction
 * again and read it into memory first (the loop in cmd_backup_restore). */
typedef struct restore_feed {
	backup_reader *r;
	backup_rewriter *rw;
	const char *path;
	txn *t;            /* the current batch */
	size_t batch_size; /* relationships per message */
	size_t per_txn;    /* relationships per transaction */
	size_t sent;       /* relationships sent in this transaction */
	uint64_t consumed; /* file records read for it */
	int more;          /* the last backup_reader_next result */
	bool bad_context;  /* stopped at a caveat context (printed) */
	bool primed;       /* t holds a batch not sent yet */
	uint8_t *buf;
} restore_feed;

/* Reads the next batch into f->t (records the prefix filter drops are
 * consumed but not added).  0, or -1 after printing a caveat context
 * that is not a Struct. */
static int feed_fill(restore_feed *f)
{
	backup_relationship raw, b;
	txn_reset(f->t);
	while (f->t->n < f->batch_size && f->sent + f->t->n < f->per_txn &&
	       (f->more = backup_reader_next(f->r, &raw)) == 1) {
		f->consumed++;
		if (!backup_rewrite_relationship(f->rw, &raw, &b))
			continue;
		if (txn_add(f->t, &b) != 0) {
			fprintf(stderr,
			        "pemba: %s: corrupt: the caveat context of "
			        "%s:%s#%s is not a protobuf Struct\n",
			        f->path, b.object_type, b.object_id,
			        b.relation);
			f->bad_context = true;
			return -1;
		}
	}
	return 0;
}

static int next_feed_message(void *ctx, const void **data, size_t *len)
{
	restore_feed *f = ctx;
	if (!f->primed) {
		if (f->more != 1 || f->sent >= f->per_txn)
			return 0;
		if (feed_fill(f) != 0)
			return -1; /* cancels the call: nothing committed */
	}
	f->primed = false;
	if (f->t->n == 0)
		return 0;
	Authzed__Api__V1__ImportBulkRelationshipsRequest req =
	    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	req.n_relationships = f->t->n;
	req.relationships = f->t->rels;
	f->sent += f->t->n;
	free(f->buf);
	*len = protobuf_c_message_get_packed_size(&req.base);
	f->buf = xmalloc(*len ? *len : 1);
	protobuf_c_message_pack(&req.base, f->buf);
	*data = f->buf;
	return 1;
}

/* One streamed transaction, its first batch already in f->t (primed).
 * Returns the gRPC code; *status is filled (caller clears). */
static int import_streamed(client_conn *conn, restore_feed *f, int timeout_ms,
                           grpc_status *status)
{
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	int code = grpc_client_streaming(
	    conn->grpc, PERMISSIONS_SERVICE "ImportBulkRelationships",
	    conn->metadata, conn->metadata_count, timeout_ms, next_feed_message,
	    f, NULL, NULL, &resp, &resp_len, status);
	free(f->buf);
	f->buf = NULL;
	free(resp);
	return code;
}

/* WriteRelationships of rels[0..n) with one operation.  Returns the gRPC
 * code; *status filled (caller clears). */
static int write_rels(client_conn *conn, Authzed__Api__V1__Relationship **rels,
                      size_t n,
                      Authzed__Api__V1__RelationshipUpdate__Operation op,
                      grpc_status *status)
{
	Authzed__Api__V1__RelationshipUpdate *updates =
	    xcalloc(n, sizeof(*updates));
	Authzed__Api__V1__RelationshipUpdate **ptrs = xcalloc(n, sizeof(*ptrs));
	for (size_t i = 0; i < n; i++) {
		authzed__api__v1__relationship_update__init(&updates[i]);
		updates[i].operation = op;
		updates[i].relationship = rels[i];
		ptrs[i] = &updates[i];
	}
	int code = client_write_updates(conn, ptrs, n, status);
	free(updates);
	free(ptrs);
	return code;
}

/* The conflict fallback for one transaction.  *skipped counts
 * relationships left as they were (skip).  0 or CLIENT_EXIT_ERROR. */
static int write_conflicting(client_conn *conn, txn *t, size_t batch_size,
                             conflict_strategy strategy, uint64_t *skipped)
{
	if (batch_size > 1000)
		batch_size = 1000; /* updates per write */
	for (size_t i = 0; i < t->n; i += batch_size) {
		size_t n = t->n - i < batch_size ? t->n - i : batch_size;
		grpc_status st = {0};
		int code = write_rels(
		    conn, t->rels + i, n,
		    strategy == CONFLICT_TOUCH
		        ? AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH
		        : AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE,
		    &st);
		if (code == GRPC_STATUS_ALREADY_EXISTS &&
		    strategy == CONFLICT_SKIP) {
			/* One by one: create the new ones, skip the rest. */
			for (size_t k = 0; k < n; k++) {
				grpc_status_clear(&st);
				code = write_rels(
				    conn, t->rels + i + k, 1,
				    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE,
				    &st);
				if (code == GRPC_STATUS_ALREADY_EXISTS) {
					(*skipped)++;
					code = GRPC_STATUS_OK;
				}
				if (code != GRPC_STATUS_OK)
					break;
			}
		}
		if (code != GRPC_STATUS_OK) {
			print_status(&st);
			grpc_status_clear(&st);
			return CLIENT_EXIT_ERROR;
		}
		grpc_status_clear(&st);
	}
	return 0;
}

/* ===================================================================== */
/* The command                                                           */
/* ===================================================================== */

static int uint_flag(const char *name, int argc, char **argv, int *i,
                     unsigned max, unsigned *out)
{
	const char *v;
	int rc = client_flag_value(name, argc, argv, i, &v);
	if (rc <= 0)
		return rc;
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (*v == '\0' || *end || v[0] == '-' || n < 1 || n > max) {
		fprintf(stderr, "pemba: %s must be 1..%u, not '%s'\n", name,
		        max, v);
		return -1;
	}
	*out = (unsigned)n;
	return 1;
}

static int restore_flag(void *ctx, int argc, char **argv, int *i)
{
	restore_opts *o = ctx;
	int rc;
	if ((rc = cli_backup_rewrite_flag(&o->rewrite, argc, argv, i)) != 0)
		return rc;
	if ((rc = uint_flag("--batch-size", argc, argv, i, 100000,
	                    &o->batch_size)) != 0)
		return rc;
	if ((rc = uint_flag("--batches-per-transaction", argc, argv, i, 10000,
	                    &o->batches_per_transaction)) != 0)
		return rc;
	if ((rc = uint_flag("--max-retries", argc, argv, i, 1000,
	                    &o->max_retries)) != 0)
		return rc;
	if (strcmp(argv[*i], "--resume") == 0) {
		o->resume = true; /* the parser steps past it */
		return 1;
	}
	const char *v;
	rc = client_flag_value("--request-timeout", argc, argv, i, &v);
	if (rc < 0)
		return rc;
	if (rc > 0) {
		if (cli_parse_duration_ms(v, &o->request_timeout_ms) != 0 ||
		    o->request_timeout_ms > 24LL * 3600 * 1000) {
			fprintf(stderr,
			        "pemba: --request-timeout needs a duration "
			        "such as 30s, 2m or 0 (none), at most 24h, "
			        "not '%s'\n",
			        v);
			return -1;
		}
		return 1;
	}
	rc = client_flag_value("--conflict-strategy", argc, argv, i, &v);
	if (rc <= 0)
		return rc;
	if (strcmp(v, "fail") == 0)
		o->conflict = CONFLICT_FAIL;
	else if (strcmp(v, "skip") == 0)
		o->conflict = CONFLICT_SKIP;
	else if (strcmp(v, "touch") == 0)
		o->conflict = CONFLICT_TOUCH;
	else {
		fprintf(stderr,
		        "pemba: --conflict-strategy must be fail, skip or "
		        "touch, not '%s'\n",
		        v);
		return -1;
	}
	return 1;
}

int cmd_backup_restore(int argc, char **argv)
{
	char usage[8192];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba backup restore FILE|- [--batch-size N] "
	    "[--batches-per-transaction N]\n"
	    "       [--conflict-strategy fail|skip|touch] [--resume] "
	    "[options]\n"
	    "\n"
	    "Restores a backup (zed's format) into the server: the schema "
	    "(WriteSchema),\n"
	    "then the relationships through ImportBulkRelationships, one call "
	    "(one\n"
	    "transaction) per --batches-per-transaction (default 10) batches "
	    "of\n"
	    "--batch-size (default 1000).  A transaction that meets existing\n"
	    "relationships (ALREADY_EXISTS): fail stops (the default); touch "
	    "writes it\n"
	    "again with WriteRelationships TOUCH; skip creates the new ones "
	    "and leaves\n"
	    "the existing ones as they are.\n"
	    "\n"
	    "FILE.restore records the progress after every transaction; while "
	    "it exists\n"
	    "the restore is incomplete.  After an interruption run the same "
	    "command\n"
	    "with --resume: it continues after the last committed "
	    "transaction (that\n"
	    "transaction may have committed unrecorded: it is written with "
	    "TOUCH if it\n"
	    "meets existing relationships).\n"
	    "Without --resume an existing FILE.restore is refused.  A file "
	    "that is not a\n"
	    "backup, truncated or corrupt is refused with the byte position "
	    "(what came\n"
	    "before it is committed, and FILE.restore stays).\n"
	    "Exit status: 0 success, 2 on any error.\n"
	    "\n"
	    "  --batch-size N                relationships per request "
	    "message\n"
	    "  --batches-per-transaction N   request messages per "
	    "transaction\n"
	    "  --conflict-strategy S         fail, skip or touch\n"
	    "  --resume                      continue after FILE.restore\n"
	    "  --request-timeout D           deadline of each transaction's "
	    "call\n"
	    "                                (default 30s; 0: none)\n"
	    "  --max-retries N               retries of a transaction that "
	    "failed with\n"
	    "                                UNAVAILABLE, DEADLINE_EXCEEDED, "
	    "ABORTED or\n"
	    "                                RESOURCE_EXHAUSTED, reconnecting, "
	    "with backoff\n"
	    "                                (default 10); a retried "
	    "transaction that meets\n"
	    "                                its own relationships is written "
	    "with TOUCH\n%s%s",
	    cli_backup_rewrite_help, client_connection_help);
	restore_opts opts = {.batch_size = 1000,
	                     .batches_per_transaction = 10,
	                     .request_timeout_ms = 30000,
	                     .max_retries = 10};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = restore_flag,
	                    .extra_ctx = &opts};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	const char *path = args.positional[0];
	bool from_stdin = strcmp(path, "-") == 0;
	if (from_stdin && opts.resume)
		return client_usage_error(usage,
		                          "--resume needs a file, not -");
	char state_path[4096];
	snprintf(state_path, sizeof(state_path), "%s.restore", path);

	FILE *in = from_stdin ? stdin : fopen(path, "rb");
	if (!in) {
		fprintf(stderr, "pemba: cannot open %s: %s\n", path,
		        strerror(errno));
		return CLIENT_EXIT_ERROR;
	}
	char error[BACKUP_ERROR_LEN];
	backup_reader *r = backup_reader_open(in, error);
	if (!r) {
		fprintf(stderr, "pemba: %s: %s\n", path, error);
		if (!from_stdin)
			fclose(in);
		return CLIENT_EXIT_ERROR;
	}
	backup_rewriter *rw = cli_backup_rewriter(&opts.rewrite);
	if (!rw) {
		backup_reader_free(r);
		if (!from_stdin)
			fclose(in);
		return CLIENT_EXIT_ERROR;
	}
	restore_state st = {0};
	snprintf(st.token, sizeof(st.token), "%s", backup_reader_zedtoken(r));
	int rc = CLIENT_EXIT_ERROR;
	txn t = {.a = arena_create(1 << 20)};
	client_conn conn;
	bool connected = false;
	if (!from_stdin) {
		restore_state old;
		int found = state_read(state_path, &old);
		if (found < 0) {
			fprintf(stderr,
			        "pemba: %s is not a restore state file\n",
			        state_path);
			goto done;
		}
		if (found && !opts.resume) {
			fprintf(stderr,
			        "pemba: a restore of %s was interrupted (%s); "
			        "pass --resume to continue it, or remove %s to "
			        "start over\n",
			        path, state_path, state_path);
			goto done;
		}
		if (!found && opts.resume) {
			fprintf(stderr,
			        "pemba: nothing to resume: %s does not exist\n",
			        state_path);
			goto done;
		}
		if (found) {
			if (strcmp(old.token, st.token) != 0) {
				fprintf(stderr,
				        "pemba: %s belongs to another backup "
				        "(revision %s)\n",
				        state_path, old.token);
				goto done;
			}
			st = old;
		}
	}
	if (client_connect(&args.options, &conn) != 0)
		goto done;
	connected = true;
	if (!st.schema_written) {
		Authzed__Api__V1__WriteSchemaRequest req =
		    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
		req.schema =
		    backup_rewrite_schema(rw, backup_reader_schema(r), error);
		if (!req.schema) {
			fprintf(stderr, "pemba: %s: %s\n", path, error);
			goto done;
		}
		ProtobufCMessage *resp = client_unary(
		    &conn, "/authzed.api.v1.SchemaService/WriteSchema",
		    &req.base,
		    &authzed__api__v1__write_schema_response__descriptor);
		free(req.schema);
		if (!resp)
			goto done;
		protobuf_c_message_free_unpacked(resp, NULL);
		st.schema_written = true;
		if (!from_stdin && state_write(state_path, &st) != 0)
			goto done;
	}

	/* Skip what is committed, then one transaction at a time. */
	backup_relationship raw, b;
	int more = 1;
	for (uint64_t i = 0; i < st.committed; i++)
		if ((more = backup_reader_next(r, &raw)) != 1)
			break;
	if (more == 0) {
		fprintf(stderr,
		        "pemba: %s holds fewer relationships than %s says "
		        "are committed\n",
		        path, state_path);
		goto done;
	}
	uint64_t skipped = 0, start_count = st.committed, restored = 0;
	struct timespec t0, now, last = {0};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool tty = isatty(STDERR_FILENO);
	/* From a file the total is known in bytes: progress shows the share
	 * done and an ETA from the byte rate since the start. */
	struct stat fst;
	uint64_t file_size = !from_stdin && fstat(fileno(in), &fst) == 0
	                         ? (uint64_t)fst.st_size
	                         : 0;
	uint64_t offset0 = backup_reader_offset(r);
	size_t per_txn = (size_t)opts.batch_size * opts.batches_per_transaction;
	bool first_after_resume = opts.resume;
	while (more == 1) {
		txn_reset(&t);
		uint64_t consumed = 0; /* file records in this transaction */
		if (opts.conflict == CONFLICT_FAIL && !first_after_resume &&
		    per_txn > RESTORE_STREAM_ABOVE) {
			/* Streamed: one batch in memory.  The first batch is
			 * read before the call, so a transaction with nothing
			 * to send (all filtered out) makes no call.  Such a
			 * transaction cannot be sent again: a retryable
			 * failure ends the restore, and --resume continues
			 * it. */
			restore_feed f = {.r = r,
			                  .rw = rw,
			                  .path = path,
			                  .t = &t,
			                  .batch_size = opts.batch_size,
			                  .per_txn = per_txn,
			                  .more = 1};
			if (feed_fill(&f) != 0)
				goto done;
			if (t.n) {
				f.primed = true;
				grpc_status gs = {0};
				int code = import_streamed(
				    &conn, &f, (int)opts.request_timeout_ms,
				    &gs);
				if (f.bad_context) {
					grpc_status_clear(&gs);
					goto done;
				}
				if (code != GRPC_STATUS_OK) {
					print_status(&gs);
					if (retryable(code))
						fprintf(stderr,
						        "pemba: a transaction "
						        "of more than %d "
						        "relationships is not "
						        "retried; run again "
						        "with --resume\n",
						        RESTORE_STREAM_ABOVE);
					grpc_status_clear(&gs);
					goto done;
				}
				grpc_status_clear(&gs);
				restored += f.sent;
			}
			more = f.more;
			consumed = f.consumed;
			goto committed;
		}
		while (t.n < per_txn &&
		       (more = backup_reader_next(r, &raw)) == 1) {
			consumed++;
			if (!backup_rewrite_relationship(rw, &raw, &b))
				continue;
			if (txn_add(&t, &b) != 0) {
				fprintf(
				    stderr,
				    "pemba: %s: corrupt: the caveat context "
				    "of %s:%s#%s is not a protobuf Struct\n",
				    path, b.object_type, b.object_id,
				    b.relation);
				goto done;
			}
		}
		if (t.n) {
			grpc_status gs = {0};
			int code = GRPC_STATUS_UNAVAILABLE;
			unsigned attempt = 0;
			int backoff_ms = 100;
			for (;;) {
				if (connected)
					code = import_txn(
					    &conn, &t, opts.batch_size,
					    (int)opts.request_timeout_ms, &gs);
				if (!retryable(code) ||
				    attempt >= opts.max_retries)
					break;
				attempt++;
				fprintf(stderr,
				        "%spemba: restore: %s: %s; retrying "
				        "in %d ms (%u of %u)\n",
				        tty ? "\n" : "", grpc_status_name(code),
				        gs.message && *gs.message
				            ? gs.message
				            : "(not connected)",
				        backoff_ms, attempt, opts.max_retries);
				grpc_status_clear(&gs);
				usleep((useconds_t)backoff_ms * 1000u);
				backoff_ms = backoff_ms * 2 > 5000
				                 ? 5000
				                 : backoff_ms * 2;
				/* A fresh connection: the old one may be
				 * dead (server restarted, network). */
				if (connected)
					client_close(&conn);
				connected =
				    client_connect(&args.options, &conn) == 0;
				/* The failed call may have committed. */
				first_after_resume = true;
			}
			if (!connected) {
				grpc_status_clear(&gs);
				goto done;
			}
			/* The first transaction after --resume (or a retry)
			 * may have been committed just before the state file
			 * could say so: it is written again with TOUCH (the
			 * same relationships, so nothing changes if it
			 * was). */
			conflict_strategy strategy =
			    first_after_resume ? CONFLICT_TOUCH : opts.conflict;
			first_after_resume = false;
			if (code == GRPC_STATUS_ALREADY_EXISTS &&
			    strategy != CONFLICT_FAIL) {
				grpc_status_clear(&gs);
				if (write_conflicting(&conn, &t,
				                      opts.batch_size, strategy,
				                      &skipped) != 0)
					goto done;
			} else if (code != GRPC_STATUS_OK) {
				print_status(&gs);
				grpc_status_clear(&gs);
				goto done;
			}
			grpc_status_clear(&gs);
			restored += t.n;
		}
	committed:
		if (consumed) {
			st.committed += consumed;
			if (!from_stdin && state_write(state_path, &st) != 0)
				goto done;
			clock_gettime(CLOCK_MONOTONIC, &now);
			double secs = (double)(now.tv_sec - t0.tv_sec) +
			              (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
			if (tty &&
			    (double)(now.tv_sec - last.tv_sec) +
			            (double)(now.tv_nsec - last.tv_nsec) /
			                1e9 >=
			        0.5) {
				last = now;
				char eta[64] = "";
				uint64_t off = backup_reader_offset(r);
				if (file_size && off > offset0 && secs > 0 &&
				    off <= file_size) {
					double bps =
					    (double)(off - offset0) / secs;
					snprintf(eta, sizeof(eta),
					         ", %.0f%%, ETA %.0fs   ",
					         100.0 * (double)off /
					             (double)file_size,
					         (double)(file_size - off) /
					             bps);
				}
				fprintf(stderr,
				        "\rpemba: restore: %" PRIu64
				        " relationships (%.0f/s)%s",
				        st.committed,
				        secs > 0 ? (double)(st.committed -
				                            start_count) /
				                       secs
				                 : 0.0,
				        eta);
			}
		}
		/* Tests slow the transactions down to kill a restore midway
		 * (tests/cli/test_backup.sh); not an option for people. */
		const char *delay = getenv("PEMBA_TEST_BACKUP_PAGE_DELAY_MS");
		if (delay && *delay)
			usleep((useconds_t)atoi(delay) * 1000u);
	}
	if (tty)
		fputc('\n', stderr);
	if (more < 0) {
		fprintf(stderr,
		        "pemba: %s: %s (%" PRIu64
		        " relationships before it are committed; the "
		        "restore is incomplete)\n",
		        path, backup_reader_error(r), st.committed);
		goto done;
	}
	if (!from_stdin)
		unlink(state_path);
	fprintf(stderr,
	        "pemba: restored the schema and %" PRIu64
	        " relationships (backup revision %s)%s",
	        restored, st.token[0] ? st.token : "none",
	        opts.resume ? ", resumed" : "");
	if (skipped)
		fprintf(stderr,
		        "; %" PRIu64 " already existed and were skipped",
		        skipped);
	fputc('\n', stderr);
	rc = CLIENT_EXIT_OK;
done:
	if (connected)
		client_close(&conn);
	txn_reset(&t);
	free(t.rels);
	free(t.structs);
	arena_destroy(t.a);
	backup_rewriter_free(rw);
	backup_reader_free(r);
	if (!from_stdin)
		fclose(in);
	return rc;
}
