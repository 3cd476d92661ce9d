/*
 * cmd_relationship_bulk.c -- `pemba relationship import|export|
 * bulk-delete`: relationships in bulk over gRPC.  import reads a
 * relationship file (src/tools/relfile.h) and sends it through
 * PermissionsService.ImportBulkRelationships (WriteRelationships TOUCH
 * batches with --touch or when the server lacks it); export prints
 * ExportBulkRelationships in the syntax import reads; bulk-delete runs
 * DeleteRelationships with partial deletions until nothing matches.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "authzed/api/v1/schema_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/progress.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "tools/relfile.h"
#include "util/xalloc.h"

#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"
#define SCHEMA_SERVICE "/authzed.api.v1.SchemaService/"

/* ReadRelationships page size of the export fallback. */
#define READ_PAGE 1000

/* WriteRelationships takes at most this many updates (SpiceDB's default
 * limit, which pemba keeps). */
#define TOUCH_BATCH_MAX 1000

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ===================================================================== */
/* Progress                                                              */
/* ===================================================================== */

/* The progress line: cli_progress (progress.h), on a terminal only. */
typedef cli_progress progress;

/* Parses a positive count flag; 0 when malformed or out of range. */
static unsigned long parse_count(const char *text, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(text, &end, 10);
	if (errno || *end || end == text || text[0] == '-' || n < 1 || n > max)
		return 0;
	return n;
}

/* ===================================================================== */
/* import                                                                */
/* ===================================================================== */

typedef struct import_flags {
	const char *batch_size, *per_transaction;
	bool touch;
} import_flags;

static int import_flag(void *ctx, int argc, char **argv, int *i)
{
	import_flags *f = ctx;
	if (client_flag_bool("--touch", argv, i, &f->touch))
		return 1;
	int r;
	if ((r = client_flag_value("--batch-size", argc, argv, i,
	                           &f->batch_size)) ||
	    (r = client_flag_value("--batches-per-transaction", argc, argv, i,
	                           &f->per_transaction)))
		return r;
	return 0;
}

/* The input being sent: the reader and the batch being built. */
typedef struct import_run {
	const char *name; /* FILE, or "-" */
	FILE *in;
	relfile *reader;
	arena *a; /* the batch's messages; reset per batch */
	Authzed__Api__V1__Relationship **rels;
	size_t batch_size;
	size_t per_transaction;
	int last_line;   /* of the last relationship read */
	int done_line;   /* of the last relationship committed */
	bool at_end;     /* the reader is exhausted */
	uint64_t sent;   /* relationships read into batches */
	uint64_t loaded; /* relationships committed */
	size_t transactions;
	progress prog;
	/* For the message being streamed. */
	Authzed__Api__V1__ImportBulkRelationshipsRequest request;
	size_t messages; /* sent in this transaction */
} import_run;

/* Reads up to batch_size relationships into run->rels (in run->a).
 * Returns the count, or -1 after printing why (a line that does not parse
 * or a caveat context that is not JSON; only possible on the first pass,
 * which checks the whole input). */
static long read_batch(import_run *run, size_t max)
{
	arena_reset(run->a);
	size_t n = 0;
	while (n < max && !run->at_end) {
		pemba_relationship rel;
		int line;
		const char *error;
		int r = relfile_next(run->reader, &rel, &line, &error);
		if (r == 0) {
			run->at_end = true;
			break;
		}
		if (r < 0) {
			fprintf(stderr, "pemba: %s:%s\n", run->name, error);
			return -1;
		}
		const char *why = NULL;
		run->rels[n] =
		    client_relationship_from_parsed(run->a, &rel, &why);
		if (!run->rels[n]) {
			fprintf(stderr,
			        "pemba: %s:line %d: malformed caveat context: "
			        "%s\n",
			        run->name, line, why);
			return -1;
		}
		run->last_line = line;
		n++;
	}
	return (long)n;
}

/* Starts the reader over from the beginning of the input. */
static int import_rewind(import_run *run)
{
	relfile_close(run->reader);
	run->reader = NULL;
	run->at_end = false;
	char *error = NULL;
	if (fseek(run->in, 0, SEEK_SET) != 0 ||
	    relfile_open(run->in, &run->reader, &error) != 0) {
		fprintf(stderr, "pemba: %s: %s\n", run->name,
		        error ? error : strerror(errno));
		free(error);
		return -1;
	}
	return 0;
}

/* client_next_fn of one ImportBulkRelationships stream: the next batch,
 * until the transaction has its batches or the input ends. */
static int import_next(void *ctx, ProtobufCMessage **request)
{
	import_run *run = ctx;
	if (run->messages == run->per_transaction || run->at_end)
		return 0;
	long n = read_batch(run, run->batch_size);
	if (n < 0)
		return -1;
	if (n == 0)
		return 0;
	run->messages++;
	run->sent += (uint64_t)n;
	authzed__api__v1__import_bulk_relationships_request__init(
	    &run->request);
	run->request.relationships = run->rels;
	run->request.n_relationships = (size_t)n;
	*request = &run->request.base;
	cli_progress_update(&run->prog, run->sent);
	return 1;
}

/* Sends everything through ImportBulkRelationships, one stream per
 * per_transaction batches.  Returns 0, 1 when the server does not offer
 * the method (before anything was written), or CLIENT_EXIT_ERROR. */
static int import_streams(import_run *run, client_conn *conn)
{
	conn->quiet_unimplemented = true;
	while (!run->at_end) {
		run->messages = 0;
		uint64_t before = run->sent;
		Authzed__Api__V1__ImportBulkRelationshipsResponse *r =
		    (Authzed__Api__V1__ImportBulkRelationshipsResponse *)
		        client_client_streaming(
		            conn, PERMISSIONS_SERVICE "ImportBulkRelationships",
		            import_next, run,
		            &authzed__api__v1__import_bulk_relationships_response__descriptor);
		if (!r) {
			/* UNIMPLEMENTED is left unprinted only on the first
			 * stream, which then wrote nothing. */
			if (conn->last_status == GRPC_STATUS_UNIMPLEMENTED &&
			    conn->quiet_unimplemented)
				return 1;
			return CLIENT_EXIT_ERROR;
		}
		conn->quiet_unimplemented = false;
		if (run->sent > before) {
			run->transactions++;
			run->loaded += r->num_loaded;
			run->done_line = run->last_line;
		}
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	return 0;
}

/* Sends everything as WriteRelationships TOUCH batches (one transaction
 * each). */
static int import_touch(import_run *run, client_conn *conn)
{
	size_t max = run->batch_size < TOUCH_BATCH_MAX ? run->batch_size
	                                               : TOUCH_BATCH_MAX;
	Authzed__Api__V1__RelationshipUpdate *updates =
	    xcalloc(max, sizeof(*updates));
	Authzed__Api__V1__RelationshipUpdate **pointers =
	    xcalloc(max, sizeof(*pointers));
	int status = 0;
	while (!run->at_end) {
		long n = read_batch(run, max);
		if (n < 0) {
			status = CLIENT_EXIT_ERROR;
			break;
		}
		if (n == 0)
			break;
		for (long k = 0; k < n; k++) {
			authzed__api__v1__relationship_update__init(
			    &updates[k]);
			updates[k].operation =
			    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
			updates[k].relationship = run->rels[k];
			pointers[k] = &updates[k];
		}
		Authzed__Api__V1__WriteRelationshipsRequest request =
		    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
		request.updates = pointers;
		request.n_updates = (size_t)n;
		run->sent += (uint64_t)n;
		ProtobufCMessage *r = client_unary(
		    conn, PERMISSIONS_SERVICE "WriteRelationships",
		    &request.base,
		    &authzed__api__v1__write_relationships_response__descriptor);
		if (!r) {
			status = CLIENT_EXIT_ERROR;
			break;
		}
		protobuf_c_message_free_unpacked(r, NULL);
		run->transactions++;
		run->loaded += (uint64_t)n;
		run->done_line = run->last_line;
		cli_progress_update(&run->prog, run->loaded);
	}
	free(updates);
	free(pointers);
	return status;
}

/* Copies stdin to a temporary file, so the input can be checked whole
 * before anything is sent and then read again. */
static FILE *spool_stdin(void)
{
	FILE *tmp = tmpfile();
	if (!tmp)
		return NULL;
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
		if (fwrite(chunk, 1, n, tmp) != n) {
			fclose(tmp);
			return NULL;
		}
	if (ferror(stdin) || fflush(tmp) != 0) {
		fclose(tmp);
		return NULL;
	}
	rewind(tmp);
	return tmp;
}

static int relationship_import(int argc, char **argv)
{
	char usage[8192];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba relationship import [options] FILE|-\n"
	    "\n"
	    "Writes the relationships of FILE (- for stdin): one per line in "
	    "SpiceDB's syntax,\n"
	    "  document:1#viewer@user:anne\n"
	    "  document:1#viewer@group:eng#member[only_on:{\"day\":1}]"
	    "[expiration:2030-01-01T00:00:00Z]\n"
	    "with blank lines and lines starting with # or // skipped; or a "
	    "SpiceDB\n"
	    "validation file (YAML, recognized by a first line like "
	    "`schema: |`), whose\n"
	    "relationships: block is read the same way.  `relationship "
	    "export` writes this\n"
	    "format, so export | import copies a store.\n"
	    "\n"
	    "The whole input is checked first: a line that does not parse is "
	    "refused with\n"
	    "its number (FILE:line N: ...) and nothing is written.  Then the "
	    "relationships go\n"
	    "through PermissionsService.ImportBulkRelationships, in messages "
	    "of --batch-size\n"
	    "relationships, one stream (one transaction) per "
	    "--batches-per-transaction\n"
	    "messages: a big file is SEVERAL transactions.  If the server "
	    "refuses one (a\n"
	    "relationship that exists already: ALREADY_EXISTS, or one the "
	    "schema does not\n"
	    "allow), the transactions before it stay written and nothing "
	    "after it is sent;\n"
	    "stderr says how many relationships were committed and up to "
	    "which line.\n"
	    "Re-run with --touch to write over what is there.\n"
	    "\n"
	    "--touch, or a server without ImportBulkRelationships "
	    "(UNIMPLEMENTED), sends\n"
	    "WriteRelationships TOUCH batches instead (at most %d "
	    "relationships each, one\n"
	    "transaction each): idempotent, so re-running after a failure is "
	    "safe.\n"
	    "\n"
	    "On a terminal, stderr shows the count and rate.  stdout gets\n"
	    "  imported N relationships in T transactions (import|touch)\n"
	    "or with --json {\"imported\":N,\"transactions\":T,\"method\":"
	    "\"import\"|\"touch\",\"seconds\":S}.\n"
	    "Exit status: 0 success, 2 on any error.\n"
	    "\n"
	    "options:\n"
	    "  --batch-size N                relationships per message, "
	    "1-100000 (default 1000)\n"
	    "  --batches-per-transaction N   messages per stream, 1-100000 "
	    "(default 10)\n"
	    "  --touch                       WriteRelationships TOUCH instead "
	    "of importing\n"
	    "\n%s",
	    TOUCH_BATCH_MAX, client_connection_help);
	import_flags flags = {0};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = import_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	import_run run = {.name = args.positional[0],
	                  .batch_size = 1000,
	                  .per_transaction = 10};
	if (flags.batch_size &&
	    !(run.batch_size = parse_count(flags.batch_size, 100000)))
		return client_usage_error(
		    usage, "--batch-size must be a number from 1 to 100000");
	if (flags.per_transaction &&
	    !(run.per_transaction = parse_count(flags.per_transaction, 100000)))
		return client_usage_error(usage,
		                          "--batches-per-transaction must be a "
		                          "number from 1 to 100000");

	if (strcmp(run.name, "-") == 0) {
		run.name = "stdin";
		run.in = spool_stdin();
		if (!run.in) {
			fprintf(stderr, "pemba: cannot read stdin: %s\n",
			        strerror(errno));
			return CLIENT_EXIT_ERROR;
		}
	} else if (!(run.in = fopen(run.name, "r"))) {
		fprintf(stderr, "pemba: cannot open %s: %s\n", run.name,
		        strerror(errno));
		return CLIENT_EXIT_ERROR;
	}
	run.a = arena_create(0);
	run.rels = xcalloc(run.batch_size, sizeof(*run.rels));
	client_conn conn = {0};
	bool connected = false;

	/* First pass: the whole input parses, or nothing is written. */
	status = CLIENT_EXIT_ERROR;
	if (import_rewind(&run) != 0)
		goto out;
	uint64_t total = 0;
	for (long n; (n = read_batch(&run, run.batch_size)) != 0;) {
		if (n < 0)
			goto out;
		total += (uint64_t)n;
	}
	if (import_rewind(&run) != 0)
		goto out;

	if (client_connect(&args.options, &conn) != 0)
		goto out;
	connected = true;
	cli_progress_begin(&run.prog, "imported", "relationships", 0);
	const char *method = "import";
	int r = flags.touch ? 1 : import_streams(&run, &conn);
	if (r == 1) {
		/* --touch, or no ImportBulkRelationships: nothing written. */
		method = "touch";
		if (import_rewind(&run) != 0)
			goto out;
		run.sent = 0;
		r = import_touch(&run, &conn);
	}
	cli_progress_end(&run.prog, run.loaded);
	if (r != 0) {
		char through[64] = "";
		if (run.transactions > 0)
			snprintf(through, sizeof(through), " (through line %d)",
			         run.done_line);
		fprintf(stderr,
		        "pemba: %s: %llu of %llu relationships were written in "
		        "%zu transactions%s; the rest was not\n",
		        run.name, (unsigned long long)run.loaded,
		        (unsigned long long)total, run.transactions, through);
		goto out;
	}
	double seconds = now_seconds() - run.prog.start;
	if (args.options.json)
		printf("{\"imported\":%llu,\"transactions\":%zu,\"method\":"
		       "\"%s\",\"seconds\":%.3f}\n",
		       (unsigned long long)run.loaded, run.transactions, method,
		       seconds);
	else
		printf("imported %llu relationships in %zu transaction%s "
		       "(%s)\n",
		       (unsigned long long)run.loaded, run.transactions,
		       run.transactions == 1 ? "" : "s", method);
	status = CLIENT_EXIT_OK;
out:
	if (connected)
		client_close(&conn);
	relfile_close(run.reader);
	fclose(run.in);
	free(run.rels);
	arena_destroy(run.a);
	return status;
}

/* ===================================================================== */
/* export                                                                */
/* ===================================================================== */

typedef struct export_flags {
	const char *output;
} export_flags;

static int export_flag(void *ctx, int argc, char **argv, int *i)
{
	export_flags *f = ctx;
	return client_flag_value("--output", argc, argv, i, &f->output);
}

typedef struct export_state {
	FILE *out;
	bool json;
	uint64_t count;
	char *cursor; /* the last cursor received (heap) */
	progress prog;
} export_state;

static void export_one(export_state *st,
                       const Authzed__Api__V1__Relationship *rel)
{
	if (st->json) {
		strbuf sb;
		strbuf_init(&sb);
		client_json_message(&sb, &rel->base);
		fprintf(st->out, "%s\n", sb.data);
		strbuf_free(&sb);
	} else {
		char *line = client_format_relationship(rel);
		fprintf(st->out, "%s\n", line);
		free(line);
	}
	st->count++;
}

static void export_cursor(export_state *st, const Authzed__Api__V1__Cursor *c)
{
	if (c && c->token && c->token[0]) {
		free(st->cursor);
		st->cursor = xstrdup(c->token);
	}
}

static int on_export(void *ctx, const ProtobufCMessage *message)
{
	export_state *st = ctx;
	const Authzed__Api__V1__ExportBulkRelationshipsResponse *r =
	    (const void *)message;
	for (size_t i = 0; i < r->n_relationships; i++)
		export_one(st, r->relationships[i]);
	export_cursor(st, r->after_result_cursor);
	cli_progress_update(&st->prog, st->count);
	return 0;
}

static int on_read(void *ctx, const ProtobufCMessage *message)
{
	export_state *st = ctx;
	const Authzed__Api__V1__ReadRelationshipsResponse *r =
	    (const void *)message;
	if (r->relationship)
		export_one(st, r->relationship);
	export_cursor(st, r->after_result_cursor);
	cli_progress_update(&st->prog, st->count);
	return 0;
}

/* ReadRelationships of one resource type (filter->resource_type set), in
 * pages of 1000 resumed by cursor. */
static int read_pages(client_conn *conn, export_state *st,
                      Authzed__Api__V1__RelationshipFilter *filter,
                      Authzed__Api__V1__Consistency *consistency)
{
	free(st->cursor);
	st->cursor = NULL;
	for (;;) {
		uint64_t before = st->count;
		Authzed__Api__V1__Cursor cursor =
		    AUTHZED__API__V1__CURSOR__INIT;
		Authzed__Api__V1__ReadRelationshipsRequest request =
		    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
		request.relationship_filter = filter;
		request.optional_limit = READ_PAGE;
		request.consistency = consistency;
		if (st->cursor) {
			cursor.token = st->cursor;
			request.optional_cursor = &cursor;
		}
		int status = client_server_streaming(
		    conn, PERMISSIONS_SERVICE "ReadRelationships",
		    &request.base,
		    &authzed__api__v1__read_relationships_response__descriptor,
		    0, on_read, st);
		if (status != 0)
			return status;
		if (st->count - before < READ_PAGE || !st->cursor)
			return 0;
	}
}

/* The fallback for servers without ExportBulkRelationships (the real
 * SpiceDB over some transports): ReadRelationships pages per resource
 * type, the filter's or, without one, every definition of the schema
 * (ReadSchema; the definitions are found by diffing it against no schema
 * with the library, so the CLI parses no schema itself).  The first
 * page's ZedToken pins the rest to one revision unless the consistency
 * flags chose one. */
static int export_by_reading(client_conn *conn, export_state *st,
                             Authzed__Api__V1__RelationshipFilter *filter,
                             Authzed__Api__V1__Consistency *consistency)
{
	if (filter->resource_type && filter->resource_type[0])
		return read_pages(conn, st, filter, consistency);
	Authzed__Api__V1__ReadSchemaRequest request =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	Authzed__Api__V1__ReadSchemaResponse *schema =
	    (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
	        conn, SCHEMA_SERVICE "ReadSchema", &request.base,
	        &authzed__api__v1__read_schema_response__descriptor);
	if (!schema)
		return CLIENT_EXIT_ERROR;
	pemba_schema_change *changes = NULL;
	size_t nchanges = 0;
	pemba_error err = {0};
	const char *text = schema->schema_text ? schema->schema_text : "";
	int status = 0;
	if (pemba_diff_schema_text(NULL, 0, text, strlen(text), &changes,
	                           &nchanges, &err) != 0)
		status = client_error("INTERNAL",
		                      "cannot read the server's schema: %s",
		                      err.message);
	/* One revision for every type: at the read's snapshot when the
	 * caller chose none. */
	Authzed__Api__V1__ZedToken at = AUTHZED__API__V1__ZED_TOKEN__INIT;
	Authzed__Api__V1__Consistency exact =
	    AUTHZED__API__V1__CONSISTENCY__INIT;
	if (!consistency && schema->read_at && schema->read_at->token) {
		at.token = schema->read_at->token;
		exact.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
		exact.at_exact_snapshot = &at;
		consistency = &exact;
	}
	for (size_t i = 0; i < nchanges && status == 0; i++) {
		if (changes[i].kind !=
		    PEMBA__V1__SCHEMA_CHANGE__KIND__ADD_DEFINITION)
			continue;
		filter->resource_type = (char *)changes[i].definition;
		status = read_pages(conn, st, filter, consistency);
	}
	filter->resource_type = (char *)protobuf_c_empty_string;
	pemba_free(changes);
	protobuf_c_message_free_unpacked(&schema->base, NULL);
	return status;
}

static int relationship_export(int argc, char **argv)
{
	char usage[6144];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba relationship export [options] [TYPE[:ID]] "
	    "[RELATION] [SUBJECT]\n"
	    "\n"
	    "Prints every relationship (or those matching the filter, as for "
	    "`relationship\n"
	    "read`), one per line in the syntax `relationship import` reads "
	    "(with\n"
	    "[caveat:{context}] and [expiration:...] when they have them), so "
	    "export | import\n"
	    "copies a store.  Uses PermissionsService.ExportBulkRelationships "
	    "(one snapshot\n"
	    "revision, pages resumed by cursor); a server without it "
	    "(UNIMPLEMENTED) is read\n"
	    "with ReadRelationships pages instead, per resource type of its "
	    "schema.\n"
	    "--json prints each relationship as one line of proto3 JSON.  On "
	    "a terminal,\n"
	    "stderr shows the count and rate; at the end, `pemba: exported N "
	    "relationships`.\n"
	    "Exit status: 0 success, 2 on any error.\n"
	    "\n"
	    "options:\n"
	    "  --output FILE                 write to FILE instead of "
	    "stdout (through\n"
	    "                                FILE.partial, renamed when "
	    "complete)\n"
	    "\n%s%s",
	    client_connection_help, client_consistency_help);
	export_flags flags = {0};
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 0,
	                    .max_positional = 3,
	                    .extra = export_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	arena *a = arena_create(0);
	Authzed__Api__V1__RelationshipFilter filter;
	if (client_parse_relationship_filter(a, usage, args.positional,
	                                     args.npositional, &filter) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	/* --output goes to FILE.partial, renamed to FILE once everything is
	 * written, so a FILE that exists is complete. */
	export_state st = {.out = stdout, .json = args.options.json};
	char *partial = NULL;
	if (flags.output) {
		partial = arena_printf(a, "%s.partial", flags.output);
		if (!(st.out = fopen(partial, "w"))) {
			fprintf(stderr, "pemba: cannot create %s: %s\n",
			        partial, strerror(errno));
			arena_destroy(a);
			return CLIENT_EXIT_ERROR;
		}
	}
	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		if (partial) {
			fclose(st.out);
			unlink(partial);
		}
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	cli_progress_begin(&st.prog, "exported", "relationships", 0);
	Authzed__Api__V1__ExportBulkRelationshipsRequest request =
	    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	request.consistency = client_consistency(a, &args.options);
	if (args.npositional > 0)
		request.optional_relationship_filter = &filter;
	conn.quiet_unimplemented = true;
	status = client_server_streaming(
	    &conn, PERMISSIONS_SERVICE "ExportBulkRelationships", &request.base,
	    &authzed__api__v1__export_bulk_relationships_response__descriptor,
	    0, on_export, &st);
	conn.quiet_unimplemented = false;
	if (status != 0 && conn.last_status == GRPC_STATUS_UNIMPLEMENTED &&
	    st.count == 0)
		status =
		    export_by_reading(&conn, &st, &filter, request.consistency);
	client_close(&conn);
	cli_progress_end(&st.prog, st.count);
	if (fflush(st.out) != 0 || ferror(st.out)) {
		fprintf(stderr, "pemba: cannot write %s: %s\n",
		        flags.output ? flags.output : "stdout",
		        strerror(errno));
		status = CLIENT_EXIT_ERROR;
	}
	if (partial) {
		if (fclose(st.out) != 0 && status == 0)
			status = client_error("INTERNAL", "cannot write %s: %s",
			                      partial, strerror(errno));
		if (status == 0 && rename(partial, flags.output) != 0)
			status =
			    client_error("INTERNAL", "cannot rename %s: %s",
			                 partial, strerror(errno));
		if (status != 0)
			unlink(partial);
	}
	if (status == 0)
		fprintf(stderr, "pemba: exported %llu relationships\n",
		        (unsigned long long)st.count);
	free(st.cursor);
	arena_destroy(a);
	return status;
}

/* ===================================================================== */
/* bulk-delete                                                           */
/* ===================================================================== */

typedef struct delete_flags {
	const char *limit;
	bool yes;
} delete_flags;

static int delete_flag(void *ctx, int argc, char **argv, int *i)
{
	delete_flags *f = ctx;
	if (client_flag_bool("--yes", argv, i, &f->yes))
		return 1;
	return client_flag_value("--limit", argc, argv, i, &f->limit);
}

static int relationship_bulk_delete(int argc, char **argv)
{
	char usage[6144];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba relationship bulk-delete [options] TYPE[:ID] "
	    "[RELATION] [SUBJECT]\n"
	    "\n"
	    "Deletes every relationship matching the filter (as for "
	    "`relationship read`; a\n"
	    "resource type is required) with PermissionsService."
	    "DeleteRelationships and\n"
	    "optional_allow_partial_deletions, --limit relationships per "
	    "round (each round\n"
	    "one transaction), until nothing matches.  Interrupted, it leaves "
	    "the rounds done\n"
	    "deleted; running it again finishes the job.\n"
	    "\n"
	    "Asks for confirmation when stdin is a terminal; without one it "
	    "refuses unless\n"
	    "--yes.  On a terminal stderr shows the count and rate.  stdout "
	    "gets\n"
	    "  deleted N relationships\n"
	    "or with --json {\"deleted\":N,\"rounds\":R,\"deletedAt\":"
	    "\"ZEDTOKEN\"}.\n"
	    "Exit status: 0 success (also when nothing matched), 2 on any "
	    "error or refusal.\n"
	    "\n"
	    "options:\n"
	    "  --limit N                     relationships per round, "
	    "1-100000 (default 1000)\n"
	    "  --yes                         do not ask\n"
	    "\n%s",
	    client_connection_help);
	delete_flags flags = {0};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 3,
	                    .extra = delete_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	unsigned long limit = 1000;
	if (flags.limit && !(limit = parse_count(flags.limit, 100000)))
		return client_usage_error(
		    usage, "--limit must be a number from 1 to 100000");
	arena *a = arena_create(0);
	Authzed__Api__V1__RelationshipFilter filter;
	if (client_parse_relationship_filter(a, usage, args.positional,
	                                     args.npositional, &filter) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	if (!filter.resource_type[0]) {
		arena_destroy(a);
		return client_usage_error(usage,
		                          "bulk-delete needs a resource type");
	}
	char question[1024];
	snprintf(question, sizeof(question),
	         "delete every relationship matching %s%s%s%s%s?",
	         args.positional[0], args.npositional > 1 ? " " : "",
	         args.npositional > 1 ? args.positional[1] : "",
	         args.npositional > 2 ? " " : "",
	         args.npositional > 2 ? args.positional[2] : "");
	if (client_confirm(question, flags.yes) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	progress prog;
	cli_progress_begin(&prog, "deleted", "relationships", 0);
	uint64_t deleted = 0;
	size_t rounds = 0;
	char *token = NULL;
	status = CLIENT_EXIT_OK;
	for (;;) {
		Authzed__Api__V1__DeleteRelationshipsRequest request =
		    AUTHZED__API__V1__DELETE_RELATIONSHIPS_REQUEST__INIT;
		request.relationship_filter = &filter;
		request.optional_limit = (uint32_t)limit;
		request.optional_allow_partial_deletions = 1;
		Authzed__Api__V1__DeleteRelationshipsResponse *r =
		    (Authzed__Api__V1__DeleteRelationshipsResponse *)client_unary(
		        &conn, PERMISSIONS_SERVICE "DeleteRelationships",
		        &request.base,
		        &authzed__api__v1__delete_relationships_response__descriptor);
		if (!r) {
			status = CLIENT_EXIT_ERROR;
			break;
		}
		rounds++;
		deleted += r->relationships_deleted_count;
		if (r->deleted_at && r->deleted_at->token) {
			free(token);
			token = xstrdup(r->deleted_at->token);
		}
		bool more =
		    r->deletion_progress ==
		        AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__DELETION_PROGRESS__DELETION_PROGRESS_PARTIAL &&
		    r->relationships_deleted_count > 0;
		protobuf_c_message_free_unpacked(&r->base, NULL);
		cli_progress_update(&prog, deleted);
		if (!more)
			break;
	}
	client_close(&conn);
	cli_progress_end(&prog, deleted);
	if (status != CLIENT_EXIT_OK) {
		fprintf(stderr,
		        "pemba: %llu relationships were deleted before the "
		        "error; run the command again to finish\n",
		        (unsigned long long)deleted);
	} else if (args.options.json) {
		strbuf sb;
		strbuf_init(&sb);
		client_json_string(&sb, token ? token : "",
		                   token ? strlen(token) : 0);
		printf("{\"deleted\":%llu,\"rounds\":%zu,\"deletedAt\":%s}\n",
		       (unsigned long long)deleted, rounds, sb.data);
		strbuf_free(&sb);
	} else {
		printf("deleted %llu relationships\n",
		       (unsigned long long)deleted);
	}
	free(token);
	arena_destroy(a);
	return status;
}

/* ===================================================================== */
/* Entry points (dispatched by cmd_relationship.c)                       */
/* ===================================================================== */

int cmd_relationship_import(int argc, char **argv)
{
	return relationship_import(argc, argv);
}

int cmd_relationship_export(int argc, char **argv)
{
	return relationship_export(argc, argv);
}

int cmd_relationship_bulk_delete(int argc, char **argv)
{
	return relationship_bulk_delete(argc, argv);
}
