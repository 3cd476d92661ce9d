/*
 * cmd_backup.c -- `pemba backup create|parse-revision|parse-schema|
 * parse-relationships`: zed's backup files (src/tools/backup_format.h).
 *
 * `create` reads the schema (SchemaService.ReadSchema) and then every
 * relationship at the schema's revision (ExportBulkRelationships, pages of
 * --page-limit, each response carrying the cursor after it; a server
 * answering UNIMPLEMENTED is read with ReadRelationships per definition of
 * the schema, pages of --page-limit at_exact_snapshot) and writes them to
 * FILE.  After a page, once BACKUP_CHECKPOINT_MS have passed since the
 * last time, the file is flushed and fsync()ed and FILE.lock is replaced
 * (write + fsync + rename) with the revision, the cursor after the page
 * and the file size holding exactly the pages so far.  A rerun that finds
 * FILE.lock truncates FILE to that size and asks for the pages after the
 * cursor, so a killed backup continues at the same revision without duplicates
 * or gaps; the lock goes when the file is complete.  A FILE without a lock is a
 * finished backup and is never overwritten.
 *
 * Exit status (as the client commands): 0 success, 2 on any error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "authzed/api/v1/schema_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/progress.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "tools/backup_format.h"
#include "tools/backup_redact.h"
#include "tools/backup_rewrite.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define SCHEMA_SERVICE "/authzed.api.v1.SchemaService/"
#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"

static const char backup_usage_head[] =
    "usage: pemba backup <subcommand> [options]\n"
    "\n"
    "Backups in the format `zed backup` writes (an Avro file: the schema,\n"
    "the zedtoken and every relationship).\n"
    "\n"
    "subcommands:\n"
    "  create FILE|-               back up a server's schema and "
    "relationships\n"
    "  restore FILE|-              restore a backup into a server\n"
    "  parse-revision FILE|-       print the backup's zedtoken\n"
    "  parse-schema FILE|-         print the backup's schema\n"
    "  parse-relationships FILE|-  print the backup's relationships, one "
    "a line\n"
    "  redact FILE                 write a copy with meaningless names and "
    "ids\n"
    "\n"
    "Run 'pemba backup <subcommand> --help' for its options.\n"
    "Exit status: 0 success, 2 on any error (usage, a file that is not a\n"
    "complete backup, connection, server).\n";

/* ===================================================================== */
/* Relationships: backup records <-> authzed.api.v1 messages             */
/* ===================================================================== */

/* Formats a backup record as `pemba relationship read` prints it.  The
 * caveat context (a protobuf Struct) is decoded for printing; with json,
 * as the Relationship's proto3 JSON instead.  Returns a heap string, or NULL
 * when the context is not a valid Struct. */
static char *format_backup_relationship(const backup_relationship *b, bool json)
{
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__ObjectReference subj_obj =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	Authzed__Api__V1__ContextualizedCaveat caveat =
	    AUTHZED__API__V1__CONTEXTUALIZED_CAVEAT__INIT;
	Google__Protobuf__Timestamp expires = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Authzed__Api__V1__Relationship rel =
	    AUTHZED__API__V1__RELATIONSHIP__INIT;
	res.object_type = (char *)b->object_type;
	res.object_id = (char *)b->object_id;
	subj_obj.object_type = (char *)b->subject_object_type;
	subj_obj.object_id = (char *)b->subject_object_id;
	subj.object = &subj_obj;
	subj.optional_relation = (char *)b->subject_relation;
	rel.resource = &res;
	rel.relation = (char *)b->relation;
	rel.subject = &subj;
	Google__Protobuf__Struct *context = NULL;
	if (b->caveat_name[0]) {
		if (b->caveat_context_len) {
			context = google__protobuf__struct__unpack(
			    NULL, b->caveat_context_len, b->caveat_context);
			if (!context)
				return NULL;
		}
		caveat.caveat_name = (char *)b->caveat_name;
		caveat.context = context;
		rel.optional_caveat = &caveat;
	}
	if (b->expiration_ms != BACKUP_NO_EXPIRATION) {
		int64_t ms = b->expiration_ms;
		int64_t s = ms / 1000, rem = ms % 1000;
		if (rem < 0) {
			s--;
			rem += 1000;
		}
		expires.seconds = s;
		expires.nanos = (int32_t)(rem * 1000000);
		rel.optional_expires_at = &expires;
	}
	char *text;
	if (json) {
		/* As `relationship export --json` prints one. */
		strbuf sb;
		strbuf_init(&sb);
		client_json_message(&sb, &rel.base);
		text = xstrdup(sb.data);
		strbuf_free(&sb);
	} else {
		text = client_format_relationship(&rel);
	}
	if (context)
		google__protobuf__struct__free_unpacked(context, NULL);
	return text;
}

/* Fills *b from a relationship message; *context_buf (heap, caller frees)
 * holds the packed caveat context. */
static void backup_from_message(const Authzed__Api__V1__Relationship *m,
                                backup_relationship *b, uint8_t **context_buf)
{
	static const Authzed__Api__V1__ObjectReference none =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	const Authzed__Api__V1__ObjectReference *res =
	    m->resource ? m->resource : &none;
	const Authzed__Api__V1__ObjectReference *so =
	    m->subject && m->subject->object ? m->subject->object : &none;
	b->object_type = res->object_type ? res->object_type : "";
	b->object_id = res->object_id ? res->object_id : "";
	b->relation = m->relation ? m->relation : "";
	b->subject_object_type = so->object_type ? so->object_type : "";
	b->subject_object_id = so->object_id ? so->object_id : "";
	b->subject_relation = m->subject && m->subject->optional_relation
	                          ? m->subject->optional_relation
	                          : "";
	b->caveat_name = "";
	b->caveat_context = NULL;
	b->caveat_context_len = 0;
	*context_buf = NULL;
	if (m->optional_caveat && m->optional_caveat->caveat_name &&
	    m->optional_caveat->caveat_name[0]) {
		b->caveat_name = m->optional_caveat->caveat_name;
		if (m->optional_caveat->context) {
			const ProtobufCMessage *c =
			    &m->optional_caveat->context->base;
			size_t n = protobuf_c_message_get_packed_size(c);
			if (n) {
				*context_buf = xmalloc(n);
				protobuf_c_message_pack(c, *context_buf);
				b->caveat_context = *context_buf;
				b->caveat_context_len = n;
			}
		}
	}
	b->expiration_ms = BACKUP_NO_EXPIRATION;
	if (m->optional_expires_at)
		b->expiration_ms = m->optional_expires_at->seconds * 1000 +
		                   m->optional_expires_at->nanos / 1000000;
}

/* ===================================================================== */
/* zed's rewriter flags                                                  */
/* ===================================================================== */

const char cli_backup_rewrite_help[] =
    "  --prefix-filter P          only definitions and caveats named P/..., "
    "and\n"
    "                             relationships whose types start with P\n"
    "  --prefix-replacements O=N,...  rename the prefix O/ of definitions "
    "and\n"
    "                             caveats (and in relationships) to N/ "
    "(N empty:\n"
    "                             remove it)\n";

int cli_backup_rewrite_flag(cli_backup_rewrite_flags *f, int argc, char **argv,
                            int *i)
{
	int rc = client_flag_value("--prefix-filter", argc, argv, i,
	                           &f->prefix_filter);
	if (rc != 0)
		return rc;
	return client_flag_value("--prefix-replacements", argc, argv, i,
	                         &f->prefix_replacements);
}

struct backup_rewriter *cli_backup_rewriter(const cli_backup_rewrite_flags *f)
{
	char error[BACKUP_ERROR_LEN];
	backup_rewriter *rw = backup_rewriter_new(
	    f->prefix_filter, f->prefix_replacements, error);
	if (!rw)
		fprintf(stderr, "pemba: %s\n", error);
	return rw;
}

/* ===================================================================== */
/* parse-revision, parse-schema, parse-relationships                     */
/* ===================================================================== */

static int parse_flag(void *ctx, int argc, char **argv, int *i)
{
	return cli_backup_rewrite_flag(ctx, argc, argv, i);
}

typedef enum parse_what {
	PARSE_REVISION,
	PARSE_SCHEMA,
	PARSE_RELATIONSHIPS
} parse_what;

/* Prints {"name":"value"} (or {} when name is NULL) on one line. */
static void print_json_field(const char *name, const char *value)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_putc(&sb, '{');
	if (name) {
		client_json_string(&sb, name, strlen(name));
		strbuf_putc(&sb, ':');
		client_json_string(&sb, value, strlen(value));
	}
	strbuf_putc(&sb, '}');
	puts(sb.data);
	strbuf_free(&sb);
}

static int backup_parse(int argc, char **argv, parse_what what)
{
	static const char *const names[] = {"parse-revision", "parse-schema",
	                                    "parse-relationships"};
	static const char *const says[] = {
	    "Prints the zedtoken the backup was taken at (the file metadata\n"
	    "com.authzed.spicedb.zedtoken.v1), alone on one line; nothing "
	    "when the\nfile has none.  Reads the header and the first block.\n",
	    "Prints the backup's schema text.  Reads the header and the first "
	    "block.\n",
	    "Prints every relationship of the backup, one a line, as `pemba\n"
	    "relationship read` prints them "
	    "(`document:1#viewer@user:anne[caveat:{...}]\n"
	    "[expiration:...]`).  Reads the whole file: a truncated or corrupt "
	    "file\nis refused after the lines before the damage, naming the "
	    "byte offset.\n"};
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba backup %s FILE|-%s\n\n%s"
	         "FILE - reads standard input.  A file that is not a backup, "
	         "truncated or\ncorrupt is refused: `pemba: FILE: reason "
	         "(byte N)`, exit 2.\n"
	         "--json prints JSON lines instead: {\"token\":...} "
	         "(parse-revision),\n{\"schemaText\":...} (parse-schema), "
	         "one Relationship a line\n(parse-relationships, as "
	         "`relationship export --json`).\n%s",
	         names[what],
	         what == PARSE_REVISION ? ""
	                                : " [--prefix-filter P] "
	                                  "[--prefix-replacements O=N,...]",
	         says[what], what == PARSE_REVISION ? "" : "\n");
	if (what != PARSE_REVISION)
		strncat(usage, cli_backup_rewrite_help,
		        sizeof(usage) - strlen(usage) - 1);
	cli_backup_rewrite_flags rwf = {0};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = what == PARSE_REVISION ? NULL : parse_flag,
	                    .extra_ctx = &rwf};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	const char *path = args.positional[0];
	backup_rewriter *rw = cli_backup_rewriter(&rwf);
	if (!rw)
		return CLIENT_EXIT_ERROR;
	FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!in) {
		fprintf(stderr, "pemba: cannot open %s: %s\n", path,
		        strerror(errno));
		backup_rewriter_free(rw);
		return CLIENT_EXIT_ERROR;
	}
	char error[BACKUP_ERROR_LEN];
	backup_reader *r = backup_reader_open(in, error);
	if (!r) {
		fprintf(stderr, "pemba: %s: %s\n", path, error);
		if (in != stdin)
			fclose(in);
		backup_rewriter_free(rw);
		return CLIENT_EXIT_ERROR;
	}
	int rc = CLIENT_EXIT_OK;
	if (what == PARSE_REVISION) {
		const char *token = backup_reader_zedtoken(r);
		if (args.options.json)
			print_json_field(*token ? "token" : NULL, token);
		else if (*token)
			printf("%s\n", token);
	} else if (what == PARSE_SCHEMA) {
		char *text =
		    backup_rewrite_schema(rw, backup_reader_schema(r), error);
		if (text && args.options.json) {
			print_json_field("schemaText", text);
			free(text);
		} else if (text) {
			size_t n = strlen(text);
			fputs(text, stdout);
			if (n && text[n - 1] != '\n')
				putchar('\n');
			free(text);
		} else {
			fprintf(stderr, "pemba: %s: %s\n", path, error);
			rc = CLIENT_EXIT_ERROR;
		}
	} else {
		backup_relationship raw, b;
		int more;
		while ((more = backup_reader_next(r, &raw)) == 1) {
			if (!backup_rewrite_relationship(rw, &raw, &b))
				continue;
			char *line =
			    format_backup_relationship(&b, args.options.json);
			if (!line) {
				fprintf(
				    stderr,
				    "pemba: %s: corrupt: the caveat context "
				    "of %s:%s#%s is not a protobuf Struct\n",
				    path, b.object_type, b.object_id,
				    b.relation);
				rc = CLIENT_EXIT_ERROR;
				break;
			}
			puts(line);
			free(line);
		}
		if (more < 0) {
			fflush(stdout);
			fprintf(stderr, "pemba: %s: %s\n", path,
			        backup_reader_error(r));
			rc = CLIENT_EXIT_ERROR;
		}
	}
	backup_reader_free(r);
	backup_rewriter_free(rw);
	if (in != stdin)
		fclose(in);
	return rc;
}

static int backup_parse_revision(int argc, char **argv)
{
	return backup_parse(argc, argv, PARSE_REVISION);
}

static int backup_parse_schema(int argc, char **argv)
{
	return backup_parse(argc, argv, PARSE_SCHEMA);
}

static int backup_parse_relationships(int argc, char **argv)
{
	return backup_parse(argc, argv, PARSE_RELATIONSHIPS);
}

/* ===================================================================== */
/* create                                                                */
/* ===================================================================== */

/* What FILE.lock holds: the revision (zedtoken) of the backup, the cursor
 * after the last page in the file ("" before the first), the file size
 * holding exactly those pages and their relationship count. */
typedef struct backup_lock {
	char *rewrite; /* the rewriter flags, as given ("" none) */
	char *token;
	char *cursor;
	uint64_t offset;
	uint64_t count;
	bool read_mode; /* source ReadRelationships (no export on the server) */
	char *type;     /* read mode: the definition being read */
} backup_lock;

static void lock_free(backup_lock *l)
{
	free(l->rewrite);
	free(l->token);
	free(l->cursor);
	free(l->type);
	memset(l, 0, sizeof(*l));
}

/* Reads path.lock.  Returns 1 found, 0 absent, -1 unreadable (printed). */
static int lock_read(const char *lock_path, backup_lock *l)
{
	FILE *f = fopen(lock_path, "r");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "pemba: cannot read %s: %s\n", lock_path,
		        strerror(errno));
		return -1;
	}
	char line[8192];
	int fields = 0;
	memset(l, 0, sizeof(*l));
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "revision ", 9) == 0) {
			free(l->token);
			l->token = xstrdup(line + 9);
			fields |= 1;
		} else if (strncmp(line, "cursor ", 7) == 0 ||
		           strcmp(line, "cursor") == 0) {
			free(l->cursor);
			l->cursor = xstrdup(line[6] ? line + 7 : "");
			fields |= 2;
		} else if (strncmp(line, "offset ", 7) == 0) {
			l->offset = strtoull(line + 7, NULL, 10);
			fields |= 4;
		} else if (strncmp(line, "count ", 6) == 0) {
			l->count = strtoull(line + 6, NULL, 10);
			fields |= 8;
		} else if (strcmp(line, "source read") == 0) {
			l->read_mode = true;
		} else if (strncmp(line, "rewrite ", 8) == 0 ||
		           strcmp(line, "rewrite") == 0) {
			free(l->rewrite);
			l->rewrite = xstrdup(line[7] ? line + 8 : "");
		} else if (strncmp(line, "type ", 5) == 0) {
			free(l->type);
			l->type = xstrdup(line + 5);
		}
	}
	fclose(f);
	if (fields != 15) {
		fprintf(stderr,
		        "pemba: %s is not a pemba backup lock file; if it "
		        "is zed's, finish the backup with zed or remove both "
		        "files\n",
		        lock_path);
		lock_free(l);
		return -1;
	}
	return 1;
}

/* Replaces the lock file atomically (write, fsync, rename). */
static int lock_write(const char *lock_path, const backup_lock *l)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb,
	              "pemba-backup-lock 1\nrevision %s\ncursor %s\noffset "
	              "%" PRIu64 "\ncount %" PRIu64 "\n",
	              l->token, l->cursor ? l->cursor : "", l->offset,
	              l->count);
	if (l->read_mode)
		strbuf_printf(&sb, "source read\ntype %s\n",
		              l->type ? l->type : "");
	strbuf_printf(&sb, "rewrite %s\n", l->rewrite ? l->rewrite : "");
	int rc = cli_replace_file(lock_path, sb.data);
	strbuf_free(&sb);
	return rc;
}

/* How often the pages read so far are made durable and recorded in the
 * lock.  Per page (1000 relationships) the two fsyncs and the rename cost
 * more than reading and writing the page (strace: 0.65 s of 1.3 s for
 * 300k relationships on a virtio disk); a killed backup redoes at most
 * this much. */
#define BACKUP_CHECKPOINT_MS 250

typedef struct create_ctx {
	backup_writer *w;
	FILE *out;
	bool to_stdout;
	const char *lock_path;
	backup_lock lock;
	backup_rewriter *rw;
	bool failed;
	bool got_response;   /* export answered at least once */
	unsigned page_count; /* read mode: relationships in this page */
	/* progress */
	bool tty;
	cli_progress prog; /* progress.h: on a terminal only */
	struct timespec start, last;
	struct timespec last_checkpoint;
	uint64_t count_start; /* count when this run started */
} create_ctx;

static double seconds_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) +
	       (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void progress(create_ctx *c, bool last)
{
	if (last)
		cli_progress_end(&c->prog, c->lock.count);
	else
		cli_progress_update(&c->prog, c->lock.count);
}

/* Makes the pages so far durable, then records them in the lock. */
static int checkpoint(create_ctx *c)
{
	clock_gettime(CLOCK_MONOTONIC, &c->last_checkpoint);
	if (backup_writer_flush(c->w) != 0) {
		fprintf(stderr, "pemba: %s\n", backup_writer_error(c->w));
		return -1;
	}
	if (c->to_stdout)
		return 0;
	if (fsync(fileno(c->out)) != 0) {
		fprintf(stderr, "pemba: cannot write the backup: %s\n",
		        strerror(errno));
		return -1;
	}
	c->lock.offset = backup_writer_offset(c->w);
	return lock_write(c->lock_path, &c->lock);
}

/* checkpoint() after a page when BACKUP_CHECKPOINT_MS have passed since
 * the last one.  Between checkpoints the in-memory lock always describes
 * exactly the records appended so far, so any checkpoint is consistent. */
static int checkpoint_if_due(create_ctx *c)
{
	if (seconds_since(&c->last_checkpoint) * 1000.0 < BACKUP_CHECKPOINT_MS)
		return 0;
	return checkpoint(c);
}

/* Appends one relationship to the backup.  0, or 1 after printing. */
static int append_relationship(create_ctx *c,
                               const Authzed__Api__V1__Relationship *m)
{
	backup_relationship b;
	uint8_t *context;
	backup_from_message(m, &b, &context);
	backup_relationship out;
	if (!backup_rewrite_relationship(c->rw, &b, &out)) {
		free(context);
		return 0; /* filtered out */
	}
	int rc = backup_writer_relationship(c->w, &out);
	free(context);
	if (rc != 0) {
		fprintf(stderr, "pemba: %s\n", backup_writer_error(c->w));
		c->failed = true;
		return 1;
	}
	c->lock.count++;
	return 0;
}

static void page_delay(void)
{
	/* Tests slow the pages down to kill a backup midway
	 * (tests/cli/test_backup.sh); not an option for people. */
	const char *delay = getenv("PEMBA_TEST_BACKUP_PAGE_DELAY_MS");
	if (delay && *delay)
		usleep((useconds_t)atoi(delay) * 1000u);
}

static int on_export_page(void *ctx, const ProtobufCMessage *message)
{
	create_ctx *c = ctx;
	const Authzed__Api__V1__ExportBulkRelationshipsResponse *page =
	    (const void *)message;
	c->got_response = true;
	for (size_t i = 0; i < page->n_relationships; i++)
		if (append_relationship(c, page->relationships[i]) != 0)
			return 1;
	if (page->after_result_cursor && page->after_result_cursor->token) {
		free(c->lock.cursor);
		c->lock.cursor = xstrdup(page->after_result_cursor->token);
	}
	if (checkpoint_if_due(c) != 0) {
		c->failed = true;
		return 1;
	}
	progress(c, false);
	page_delay();
	return 0;
}

/* ReadRelationships responses: one relationship each, with the cursor
 * after it. */
static int on_read_response(void *ctx, const ProtobufCMessage *message)
{
	create_ctx *c = ctx;
	const Authzed__Api__V1__ReadRelationshipsResponse *r =
	    (const void *)message;
	if (!r->relationship)
		return 0;
	if (append_relationship(c, r->relationship) != 0)
		return 1;
	c->page_count++;
	if (r->after_result_cursor && r->after_result_cursor->token) {
		free(c->lock.cursor);
		c->lock.cursor = xstrdup(r->after_result_cursor->token);
	}
	return 0;
}

/* Per streamed message: unpack, hand to the command's callback. */
typedef struct raw_stream {
	const ProtobufCMessageDescriptor *type;
	client_stream_fn fn;
	void *ctx;
	bool malformed;
} raw_stream;

static int on_raw_message(void *ctx, const uint8_t *data, size_t len)
{
	raw_stream *s = ctx;
	ProtobufCMessage *m =
	    protobuf_c_message_unpack(s->type, NULL, len, data);
	if (!m) {
		s->malformed = true;
		return 1;
	}
	int r = s->fn(s->ctx, m);
	protobuf_c_message_free_unpacked(m, NULL);
	return r;
}

/* A server-streaming call like client_server_streaming(), but an
 * UNIMPLEMENTED answer is returned (1) without printing, so the caller can
 * fall back.  0 OK or stopped by the callback, 2 error (printed). */
static int stream_call(client_conn *conn, const char *path,
                       const ProtobufCMessage *request,
                       const ProtobufCMessageDescriptor *type,
                       client_stream_fn fn, void *ctx)
{
	size_t len = protobuf_c_message_get_packed_size(request);
	uint8_t *buf = xmalloc(len ? len : 1);
	protobuf_c_message_pack(request, buf);
	raw_stream s = {.type = type, .fn = fn, .ctx = ctx};
	grpc_status status = {0};
	int code = grpc_client_server_streaming(
	    conn->grpc, path, conn->metadata, conn->metadata_count, 0, buf, len,
	    on_raw_message, &s, &status);
	free(buf);
	int result = 0;
	if (s.malformed)
		result = client_error(
		    "INTERNAL", "malformed %s from the server", type->name);
	else if (code == GRPC_STATUS_UNIMPLEMENTED)
		result = 1;
	else if (code != GRPC_STATUS_OK && code != GRPC_STATUS_CANCELLED)
		result = client_error(grpc_status_name(status.code), "%s",
		                      status.message && *status.message
		                          ? status.message
		                          : "(no message)");
	grpc_status_clear(&status);
	return result;
}

/* Reads every relationship definition by definition (ReadRelationships
 * pages of `limit` at exactly c->lock.token), continuing from the lock's
 * type and cursor.  0 or CLIENT_EXIT_ERROR (printed). */
static int read_all(create_ctx *c, client_conn *conn, const char *schema,
                    unsigned limit, Authzed__Api__V1__Consistency *cons)
{
	char **defs = client_schema_definitions(schema);
	size_t i = 0;
	if (c->lock.type && c->lock.type[0]) {
		while (defs[i] && strcmp(defs[i], c->lock.type) != 0)
			i++;
		if (!defs[i]) {
			client_free_definitions(defs);
			fprintf(stderr,
			        "pemba: the backup's schema has no definition "
			        "%s named by the lock file\n",
			        c->lock.type);
			return CLIENT_EXIT_ERROR;
		}
	}
	int rc = 0;
	for (; defs[i] && rc == 0; i++) {
		if (!c->lock.type || strcmp(c->lock.type, defs[i]) != 0) {
			free(c->lock.type);
			c->lock.type = xstrdup(defs[i]);
			free(c->lock.cursor);
			c->lock.cursor = xstrdup("");
		}
		for (;;) {
			Authzed__Api__V1__RelationshipFilter filter =
			    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
			filter.resource_type = defs[i];
			Authzed__Api__V1__Cursor cursor =
			    AUTHZED__API__V1__CURSOR__INIT;
			Authzed__Api__V1__ReadRelationshipsRequest req =
			    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
			req.consistency = cons;
			req.relationship_filter = &filter;
			req.optional_limit = limit;
			if (c->lock.cursor[0]) {
				cursor.token = c->lock.cursor;
				req.optional_cursor = &cursor;
			}
			c->page_count = 0;
			rc = stream_call(
			    conn, PERMISSIONS_SERVICE "ReadRelationships",
			    &req.base,
			    &authzed__api__v1__read_relationships_response__descriptor,
			    on_read_response, c);
			if (rc == 1)
				rc = client_error("UNIMPLEMENTED",
				                  "the server offers neither "
				                  "ExportBulkRelationships nor "
				                  "ReadRelationships");
			if (rc != 0 || c->failed) {
				rc = CLIENT_EXIT_ERROR;
				break;
			}
			bool done = c->page_count < limit;
			if (done) {
				/* The next definition starts afresh. */
				free(c->lock.cursor);
				c->lock.cursor = xstrdup("");
				if (defs[i + 1]) {
					free(c->lock.type);
					c->lock.type = xstrdup(defs[i + 1]);
				}
			}
			if (checkpoint_if_due(c) != 0) {
				rc = CLIENT_EXIT_ERROR;
				break;
			}
			progress(c, false);
			page_delay();
			if (done)
				break;
		}
	}
	client_free_definitions(defs);
	return rc;
}

typedef struct create_opts {
	unsigned page_limit;
	cli_backup_rewrite_flags rewrite;
} create_opts;

static int create_flag(void *ctx, int argc, char **argv, int *i)
{
	create_opts *o = ctx;
	const char *v;
	int rc = cli_backup_rewrite_flag(&o->rewrite, argc, argv, i);
	if (rc != 0)
		return rc;
	rc = client_flag_value("--page-limit", argc, argv, i, &v);
	if (rc <= 0)
		return rc;
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (*v == '\0' || *end || n > 100000 || v[0] == '-') {
		fprintf(stderr,
		        "pemba: --page-limit must be 0..100000 (0: the "
		        "server's default), not '%s'\n",
		        v);
		return -1;
	}
	o->page_limit = (unsigned)n;
	return 1;
}

/* Opens FILE for a new backup or for continuing one.  On resume, *lock is
 * filled and the file is truncated to lock->offset.  Returns the writer or
 * NULL (printed). */
static backup_writer *open_output(const char *path, const char *lock_path,
                                  backup_lock *lock, FILE **out, bool *resumed,
                                  char **schema_text)
{
	*resumed = false;
	int found = lock_read(lock_path, lock);
	if (found < 0)
		return NULL;
	if (!found) {
		int fd =
		    open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			if (errno == EEXIST)
				fprintf(stderr,
				        "pemba: %s already exists and is a "
				        "complete backup (no %s); choose "
				        "another file\n",
				        path, lock_path);
			else
				fprintf(stderr, "pemba: cannot create %s: %s\n",
				        path, strerror(errno));
			return NULL;
		}
		*out = fdopen(fd, "wb");
		return NULL; /* the caller creates the writer with the token */
	}
	FILE *f = fopen(path, "r+b");
	if (!f) {
		fprintf(stderr, "pemba: cannot resume %s: %s\n", path,
		        strerror(errno));
		return NULL;
	}
	char error[BACKUP_ERROR_LEN];
	backup_reader *r = backup_reader_open(f, error);
	if (!r) {
		fprintf(stderr,
		        "pemba: cannot resume %s: %s; remove %s and %s to "
		        "start over\n",
		        path, error, path, lock_path);
		fclose(f);
		return NULL;
	}
	uint8_t sync[16];
	memcpy(sync, backup_reader_sync(r), 16);
	bool same = strcmp(backup_reader_zedtoken(r), lock->token) == 0;
	*schema_text = xstrdup(backup_reader_schema(r));
	backup_reader_free(r);
	struct stat st;
	if (!same || fstat(fileno(f), &st) != 0 ||
	    (uint64_t)st.st_size < lock->offset ||
	    ftruncate(fileno(f), (off_t)lock->offset) != 0 ||
	    fseeko(f, (off_t)lock->offset, SEEK_SET) != 0) {
		fprintf(stderr,
		        "pemba: cannot resume %s: it does not match %s; remove "
		        "both to start over\n",
		        path, lock_path);
		fclose(f);
		return NULL;
	}
	*out = f;
	*resumed = true;
	return backup_writer_continue(f, sync, lock->offset);
}

static int backup_create(int argc, char **argv)
{
	char usage[8192];
	snprintf(usage, sizeof(usage),
	         "usage: pemba backup create FILE|- [--page-limit N] "
	         "[--prefix-filter P]\n"
	         "       [--prefix-replacements O=N,...] [options]\n"
	         "\n"
	         "Backs up the server's schema and every relationship at one "
	         "revision (the\n"
	         "schema's) into FILE in zed's backup format; - writes to "
	         "standard output.\n"
	         "Relationships come from ExportBulkRelationships in pages of "
	         "--page-limit\n"
	         "(0, the default: the server's page size); a server without "
	         "it (UNIMPLEMENTED)\n"
	         "is read with ReadRelationships, definition by definition, in "
	         "pages of\n"
	         "--page-limit (default 1000), all at the same revision.  On a "
	         "terminal,\n"
	         "stderr shows the count and the rate.\n"
	         "\n"
	         "Resumable: after each page FILE is synced and FILE.lock "
	         "records the\n"
	         "revision and the cursor.  If the backup stops (error, "
	         "Ctrl-C, kill), run\n"
	         "the same command again: it continues after the last "
	         "recorded page at the\n"
	         "same revision, with no duplicates.  FILE.lock is removed "
	         "when FILE is\n"
	         "complete; an existing FILE without a lock is never "
	         "overwritten.\n"
	         "Exit status: 0 success, 2 on any error.\n"
	         "\n"
	         "  --page-limit N            relationships per page "
	         "(0..100000)\n%s%s",
	         cli_backup_rewrite_help, client_connection_help);
	create_opts opts = {0};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = create_flag,
	                    .extra_ctx = &opts};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	const char *path = args.positional[0];

	create_ctx c = {0};
	client_conn conn;
	Authzed__Api__V1__ZedToken at = AUTHZED__API__V1__ZED_TOKEN__INIT;
	Authzed__Api__V1__ReadSchemaResponse *schema = NULL;
	char *schema_text = NULL; /* heap */
	c.to_stdout = strcmp(path, "-") == 0;
	cli_progress_begin(&c.prog, "backed up", "relationships", 0);
	c.tty = c.prog.on;
	char lock_path[4096];
	snprintf(lock_path, sizeof(lock_path), "%s.lock", path);
	c.lock_path = lock_path;
	bool resumed = false;
	char rewrite[2048];
	snprintf(rewrite, sizeof(rewrite), "filter=%s replacements=%s",
	         opts.rewrite.prefix_filter ? opts.rewrite.prefix_filter : "",
	         opts.rewrite.prefix_replacements
	             ? opts.rewrite.prefix_replacements
	             : "");
	c.rw = cli_backup_rewriter(&opts.rewrite);
	if (!c.rw)
		return CLIENT_EXIT_ERROR;
	if (c.to_stdout) {
		c.out = stdout;
	} else {
		c.w = open_output(path, lock_path, &c.lock, &c.out, &resumed,
		                  &schema_text);
		if (!c.w && !c.out) {
			backup_rewriter_free(c.rw);
			return CLIENT_EXIT_ERROR;
		}
		if (resumed && strcmp(c.lock.rewrite ? c.lock.rewrite : "",
		                      rewrite) != 0) {
			fprintf(
			    stderr,
			    "pemba: %s was started with other rewrite flags "
			    "(%s); resume it with the same "
			    "--prefix-filter / --prefix-replacements\n",
			    path, c.lock.rewrite ? c.lock.rewrite : "none");
			fclose(c.out);
			c.out = NULL;
			backup_writer_free(c.w);
			c.w = NULL;
			goto fail_early;
		}
	}
	free(c.lock.rewrite);
	c.lock.rewrite = xstrdup(rewrite);

	if (client_connect(&args.options, &conn) != 0)
		goto fail_early;
	if (!resumed || backup_rewriter_active(c.rw)) {
		Authzed__Api__V1__ReadSchemaRequest request =
		    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
		schema = (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
		    &conn, SCHEMA_SERVICE "ReadSchema", &request.base,
		    &authzed__api__v1__read_schema_response__descriptor);
		if (!schema)
			goto fail_conn;
		if (!schema->read_at || !schema->read_at->token ||
		    !schema->read_at->token[0]) {
			client_error("INTERNAL", "the server's ReadSchema "
			                         "answer has no read_at token");
			goto fail_conn;
		}
		/* The server's own schema names the definitions to read
		 * (the file's may be rewritten). */
		free(schema_text);
		schema_text = xstrdup(schema->schema_text);
	}
	if (!resumed) {
		c.lock.token = xstrdup(schema->read_at->token);
		c.lock.cursor = xstrdup("");
		char error[BACKUP_ERROR_LEN];
		char *written = backup_rewrite_schema(c.rw, schema_text, error);
		if (!written) {
			fprintf(stderr, "pemba: %s\n", error);
			goto fail_conn;
		}
		c.w = backup_writer_create(c.out, c.lock.token, error);
		if (!c.w) {
			free(written);
			fprintf(stderr, "pemba: %s\n", error);
			goto fail_conn;
		}
		int wrc = backup_writer_schema(c.w, written);
		free(written);
		if (wrc != 0) {
			fprintf(stderr, "pemba: %s\n",
			        backup_writer_error(c.w));
			goto fail_conn;
		}
		if (checkpoint(&c) != 0)
			goto fail_conn;
	}
	if (schema) {
		protobuf_c_message_free_unpacked(&schema->base, NULL);
		schema = NULL;
	}
	at.token = c.lock.token;
	clock_gettime(CLOCK_MONOTONIC, &c.start);
	c.last = c.start;
	c.count_start = c.lock.count;
	cli_progress_rebase(&c.prog, c.lock.count);

	Authzed__Api__V1__Consistency consistency =
	    AUTHZED__API__V1__CONSISTENCY__INIT;
	consistency.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
	consistency.at_exact_snapshot = &at;
	Authzed__Api__V1__Cursor cursor = AUTHZED__API__V1__CURSOR__INIT;
	Authzed__Api__V1__ExportBulkRelationshipsRequest request =
	    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	request.consistency = &consistency;
	request.optional_limit = opts.page_limit;
	if (c.lock.cursor && c.lock.cursor[0]) {
		cursor.token = c.lock.cursor;
		request.optional_cursor = &cursor;
	}
	int rc = 0;
	if (!c.lock.read_mode && !getenv("PEMBA_TEST_BACKUP_NO_EXPORT"))
		rc = stream_call(
		    &conn, PERMISSIONS_SERVICE "ExportBulkRelationships",
		    &request.base,
		    &authzed__api__v1__export_bulk_relationships_response__descriptor,
		    on_export_page, &c);
	else
		rc = 1;
	if (rc == 1 && !c.got_response && !c.failed &&
	    (c.lock.read_mode || c.lock.count == 0)) {
		/* No ExportBulkRelationships (the real SpiceDB's socket, older
		 * servers): ReadRelationships per definition. */
		c.lock.read_mode = true;
		rc = read_all(&c, &conn, schema_text,
		              opts.page_limit ? opts.page_limit : 1000,
		              &consistency);
	} else if (rc == 1) {
		rc = client_error("UNIMPLEMENTED",
		                  "ExportBulkRelationships failed midway");
	}
	if (rc != 0 || c.failed)
		goto fail_conn;
	client_close(&conn);
	free(schema_text);
	schema_text = NULL;
	if (backup_writer_finish(c.w) != 0 ||
	    (!c.to_stdout && fsync(fileno(c.out)) != 0)) {
		fprintf(stderr, "pemba: %s\n", backup_writer_error(c.w));
		goto fail_early;
	}
	progress(&c, true);
	backup_writer_free(c.w);
	if (!c.to_stdout) {
		if (fclose(c.out) != 0) {
			fprintf(stderr, "pemba: cannot write %s: %s\n", path,
			        strerror(errno));
			lock_free(&c.lock);
			backup_rewriter_free(c.rw);
			return CLIENT_EXIT_ERROR;
		}
		unlink(lock_path);
	}
	fprintf(stderr,
	        "pemba: backed up the schema and %" PRIu64
	        " relationships at revision %s%s\n",
	        c.lock.count, c.lock.token, resumed ? " (resumed)" : "");
	lock_free(&c.lock);
	backup_rewriter_free(c.rw);
	return CLIENT_EXIT_OK;

fail_conn:
	if (schema)
		protobuf_c_message_free_unpacked(&schema->base, NULL);
	client_close(&conn);
fail_early:
	free(schema_text);
	if (c.prog.shown)
		fputc('\n', stderr);
	backup_writer_free(c.w);
	if (!c.to_stdout && c.out) {
		fclose(c.out);
		if (c.lock.token)
			fprintf(stderr,
			        "pemba: %s is incomplete; run the same command "
			        "again to continue it\n",
			        path);
		else
			unlink(path);
	}
	lock_free(&c.lock);
	backup_rewriter_free(c.rw);
	return CLIENT_EXIT_ERROR;
}

/* ===================================================================== */
/* redact                                                                */
/* ===================================================================== */

typedef struct redact_opts {
	backup_redact_options redact;
	bool print_object_ids;
	bool json; /* --json: {"kind":...,"from":...,"to":...} lines */
	const char *output;
} redact_opts;

/* A boolean flag as zed takes them: `--name`, `--name=true|false`. */
static int bool_flag(const char *name, const char *arg, bool *value)
{
	size_t n = strlen(name);
	if (strncmp(arg, name, n) != 0)
		return 0;
	if (arg[n] == '\0') {
		*value = true;
		return 1;
	}
	if (arg[n] != '=')
		return 0;
	if (strcmp(arg + n + 1, "true") == 0)
		*value = true;
	else if (strcmp(arg + n + 1, "false") == 0)
		*value = false;
	else {
		fprintf(stderr, "pemba: %s takes true or false, not '%s'\n",
		        name, arg + n + 1);
		return -1;
	}
	return 1;
}

static int redact_flag(void *ctx, int argc, char **argv, int *i)
{
	redact_opts *o = ctx;
	const char *arg = argv[*i];
	int rc;
	if ((rc = bool_flag("--redact-definitions", arg,
	                    &o->redact.definitions)) ||
	    (rc = bool_flag("--redact-relations", arg, &o->redact.relations)) ||
	    (rc = bool_flag("--redact-object-ids", arg,
	                    &o->redact.object_ids)) ||
	    (rc = bool_flag("--print-redacted-object-ids", arg,
	                    &o->print_object_ids)))
		return rc; /* the parser steps past it */
	return client_flag_value("--output", argc, argv, i, &o->output);
}

static void print_map_entry(void *ctx, const char *kind, const char *from,
                            const char *to)
{
	const redact_opts *o = ctx;
	if (strcmp(kind, "object-id") == 0 && !o->print_object_ids)
		return;
	if (!o->json) {
		printf("%s %s -> %s\n", kind, from, to);
		return;
	}
	strbuf sb;
	strbuf_init(&sb);
	strbuf_puts(&sb, "{\"kind\":");
	client_json_string(&sb, kind, strlen(kind));
	strbuf_puts(&sb, ",\"from\":");
	client_json_string(&sb, from, strlen(from));
	strbuf_puts(&sb, ",\"to\":");
	client_json_string(&sb, to, strlen(to));
	strbuf_putc(&sb, '}');
	puts(sb.data);
	strbuf_free(&sb);
}

static int backup_redact(int argc, char **argv)
{
	static const char usage[] =
	    "usage: pemba backup redact FILE|- [--output OUT] "
	    "[--redact-definitions[=false]]\n"
	    "       [--redact-relations[=false]] "
	    "[--redact-object-ids[=false]]\n"
	    "       [--print-redacted-object-ids]\n"
	    "\n"
	    "Writes a copy of the backup with the names replaced as `zed "
	    "backup redact`\n"
	    "does: definitions def0, def1, ..., caveats cavN, relations and "
	    "permissions\n"
	    "relN (one name per distinct name), object ids obj1, obj2, ... "
	    "(the\n"
	    "wildcard * stays); doc comments are dropped, caveat parameters "
	    "and\n"
	    "expressions kept.  The permission structure is unchanged, so the "
	    "copy\n"
	    "restores and answers the same questions about the new names.  "
	    "Each kind\n"
	    "is redacted unless its flag is =false.  OUT defaults to "
	    "FILE.redacted and\n"
	    "is never overwritten.  Prints the redaction map on stdout, "
	    "`definition\n"
	    "document -> def0` lines (object ids only with "
	    "--print-redacted-object-ids);\n"
	    "--json: {\"kind\":\"definition\",\"from\":\"document\","
	    "\"to\":\"def0\"} lines.\n"
	    "Exit status: 0 success, 2 on any error.\n";
	redact_opts opts = {.redact = {true, true, true}};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = redact_flag,
	                    .extra_ctx = &opts};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	const char *path = args.positional[0];
	char out_path[4096];
	if (opts.output)
		snprintf(out_path, sizeof(out_path), "%s", opts.output);
	else if (strcmp(path, "-") == 0)
		return client_usage_error(usage,
		                          "--output is needed when reading "
		                          "standard input");
	else
		snprintf(out_path, sizeof(out_path), "%s.redacted", path);

	FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!in) {
		fprintf(stderr, "pemba: cannot open %s: %s\n", path,
		        strerror(errno));
		return CLIENT_EXIT_ERROR;
	}
	char error[BACKUP_ERROR_LEN];
	backup_reader *r = backup_reader_open(in, error);
	if (!r) {
		fprintf(stderr, "pemba: %s: %s\n", path, error);
		if (in != stdin)
			fclose(in);
		return CLIENT_EXIT_ERROR;
	}
	const char *schema_text;
	backup_redactor *red = backup_redactor_new(
	    backup_reader_schema(r), &opts.redact, &schema_text, error);
	FILE *out = NULL;
	backup_writer *w = NULL;
	int rc = CLIENT_EXIT_ERROR;
	uint64_t count = 0;
	if (!red) {
		fprintf(stderr, "pemba: %s: %s\n", path, error);
		goto done;
	}
	int fd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "pemba: cannot create %s: %s\n", out_path,
		        strerror(errno));
		goto done;
	}
	out = fdopen(fd, "wb");
	w = backup_writer_create(out, backup_reader_zedtoken(r), error);
	if (!w || backup_writer_schema(w, schema_text) != 0) {
		fprintf(stderr, "pemba: %s\n",
		        w ? backup_writer_error(w) : error);
		goto fail_out;
	}
	backup_relationship b, red_b;
	int more;
	while ((more = backup_reader_next(r, &b)) == 1) {
		if (backup_redact_relationship(red, &b, &red_b, error) != 0) {
			fprintf(stderr, "pemba: %s: %s\n", path, error);
			goto fail_out;
		}
		if (backup_writer_relationship(w, &red_b) != 0) {
			fprintf(stderr, "pemba: %s\n", backup_writer_error(w));
			goto fail_out;
		}
		count++;
	}
	if (more < 0) {
		fprintf(stderr, "pemba: %s: %s\n", path,
		        backup_reader_error(r));
		goto fail_out;
	}
	if (backup_writer_finish(w) != 0 || fsync(fileno(out)) != 0) {
		fprintf(stderr, "pemba: cannot write %s\n", out_path);
		goto fail_out;
	}
	backup_writer_free(w);
	w = NULL;
	if (fclose(out) != 0) {
		out = NULL;
		fprintf(stderr, "pemba: cannot write %s: %s\n", out_path,
		        strerror(errno));
		unlink(out_path);
		goto done;
	}
	out = NULL;
	opts.json = args.options.json;
	backup_redactor_map(red, print_map_entry, &opts);
	fprintf(stderr,
	        "pemba: redacted the schema and %" PRIu64
	        " relationships into %s\n",
	        count, out_path);
	rc = CLIENT_EXIT_OK;
	goto done;
fail_out:
	backup_writer_free(w);
	w = NULL;
	if (out)
		fclose(out);
	out = NULL;
	unlink(out_path);
done:
	backup_redactor_free(red);
	backup_reader_free(r);
	if (in != stdin)
		fclose(in);
	return rc;
}

int cmd_backup(int argc, char **argv)
{
	static const client_subcommand subs[] = {
	    {"create", backup_create},
	    {"parse-revision", backup_parse_revision},
	    {"parse-schema", backup_parse_schema},
	    {"parse-relationships", backup_parse_relationships},
	    {"redact", backup_redact},
	    {"restore", cmd_backup_restore},
	};
	return client_dispatch("backup", backup_usage_head, subs,
	                       sizeof(subs) / sizeof(subs[0]), argc, argv);
}
