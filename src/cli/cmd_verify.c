/*
 * cmd_verify.c -- `pemba verify`: do two servers hold the same data and
 * give the same answers?  Run before a cut-over (issue 12, item 2).
 *
 * 1. Each side's schema (ReadSchema) is read; its read_at token, or the
 *    side's --*-consistency-token, is the snapshot that side is read at.
 *    The schemas are compared with SchemaService.DiffSchema (on B with A's
 *    text, else on A with B's), or as texts when neither has it.
 * 2. Each side's relationships are streamed (ExportBulkRelationships at
 *    exactly the snapshot; ReadRelationships per definition when the
 *    server lacks it, as the real SpiceDB's socket does), formatted as
 *    `relationship read` prints them, and sorted: the two servers' orders
 *    differ (SpiceDB's, pemba's, PostgreSQL's and SQLite's), so neither
 *    stream can be merged as it comes.  The sort is an external one with
 *    bounded memory: lines are gathered into a run of at most
 *    VERIFY_RUN_BYTES, sorted there and written to a temporary file; the
 *    runs are then merged (one line per run in memory).  The two sorted
 *    streams are merged against each other: `only in A: LINE`, `only in
 *    B: LINE` for the first --max-differences, and counts.
 * 3. A sample of --checks relationships (reservoir sampling, --seed) gives
 *    CheckPermission calls for every permission of the resource's type
 *    that both schemas have, with the relationship's subject, at each
 *    side's snapshot; a few of them LookupResources and LookupSubjects.
 *    Answers are compared and the agreement printed.
 *
 * Exit status: 0 equal, 1 any difference, 2 any error (naming the side).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "google/protobuf/struct.pb-c.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define SCHEMA_SERVICE "/authzed.api.v1.SchemaService/"
#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"

/* Bytes of relationship lines sorted in memory before a run goes to a
 * temporary file (PEMBA_TEST_VERIFY_RUN_BYTES overrides it, so tests
 * reach the merge of several runs with little data). */
#define VERIFY_RUN_BYTES (16u << 20)
/* --checks at most (the sample holds that many relationships). */
#define VERIFY_CHECKS_MAX 1000000
/* Results of one lookup compared at most (both sides' lists are held). */
#define VERIFY_LOOKUP_MAX 100000
/* Relationships of the sample a LookupResources and a LookupSubjects
 * are made from (with the first permission of the resource's type). */
#define VERIFY_LOOKUPS 5

/* ===================================================================== */
/* External sort of lines                                                */
/* ===================================================================== */

/* A multiset of text lines, sorted by strcmp, in bounded memory.  Lines
 * are added (sorter_add), then read back in order (sorter_finish, then
 * sorter_next).  Memory: one run buffer of at most `limit` bytes while
 * adding; while reading, one line per run on disk. */
typedef struct sorter {
	size_t limit;
	char *buf; /* the current run's lines, NUL-separated */
	size_t used, cap;
	size_t *offsets; /* line starts in buf */
	size_t n, ncap;
	FILE **runs; /* sorted runs written so far (temp_file) */
	size_t nruns;
	uint64_t count; /* lines added */
	/* reading */
	char **heads; /* per run: its current line (getline), NULL at end */
	size_t *head_caps;
	char **mem;  /* in-memory reading (no run on disk): sorted lines */
	size_t next; /* next in mem */
	int failed;  /* errno of a failed write/read */
} sorter;

static const char *sort_base; /* qsort has no context argument */

static int compare_offsets(const void *x, const void *y)
{
	return strcmp(sort_base + *(const size_t *)x,
	              sort_base + *(const size_t *)y);
}

/* Sorts the current run in place (offsets by their lines). */
static void sorter_sort_run(sorter *s)
{
	sort_base = s->buf;
	if (s->n) /* offsets is NULL before the first line */
		qsort(s->offsets, s->n, sizeof(*s->offsets), compare_offsets);
}

/* A new temporary file, open for reading and writing, already unlinked
 * (so it goes when closed or when the process dies): in $TMPDIR, else
 * /tmp.  NULL with errno set. */
static FILE *temp_file(void)
{
	const char *dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/pemba-verify-XXXXXX", dir) >=
	    (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	int fd = mkstemp(path);
	if (fd < 0)
		return NULL;
	unlink(path);
	FILE *f = fdopen(fd, "w+");
	if (!f)
		close(fd);
	return f;
}

/* Sorts the current run and writes it to a new temporary file; the run
 * buffer is then empty.  0, or -1 with s->failed set. */
static int sorter_spill(sorter *s)
{
	if (s->n == 0)
		return 0;
	sorter_sort_run(s);
	FILE *f = temp_file();
	if (!f) {
		s->failed = errno ? errno : EIO;
		return -1;
	}
	for (size_t i = 0; i < s->n; i++) {
		fputs(s->buf + s->offsets[i], f);
		putc('\n', f);
	}
	if (fflush(f) != 0 || ferror(f)) {
		s->failed = errno ? errno : EIO;
		fclose(f);
		return -1;
	}
	s->runs = xrealloc(s->runs, (s->nruns + 1) * sizeof(*s->runs));
	s->runs[s->nruns++] = f;
	s->used = 0;
	s->n = 0;
	return 0;
}

/* Adds a copy of line (no '\n' in it).  0, or -1 with s->failed set. */
static int sorter_add(sorter *s, const char *line)
{
	size_t len = strlen(line) + 1;
	if (s->used + len > s->limit && s->n > 0 && sorter_spill(s) != 0)
		return -1;
	if (s->used + len > s->cap) {
		s->cap = s->cap ? s->cap : 1 << 16;
		while (s->used + len > s->cap)
			s->cap *= 2;
		s->buf = xrealloc(s->buf, s->cap);
	}
	if (s->n == s->ncap) {
		s->ncap = s->ncap ? 2 * s->ncap : 1024;
		s->offsets =
		    xrealloc(s->offsets, s->ncap * sizeof(*s->offsets));
	}
	memcpy(s->buf + s->used, line, len);
	s->offsets[s->n++] = s->used;
	s->used += len;
	s->count++;
	return 0;
}

/* Reads the next line of run k into heads[k] (NULL at its end). */
static void sorter_advance_run(sorter *s, size_t k)
{
	ssize_t len = getline(&s->heads[k], &s->head_caps[k], s->runs[k]);
	if (len < 0) {
		if (ferror(s->runs[k]))
			s->failed = errno ? errno : EIO;
		free(s->heads[k]);
		s->heads[k] = NULL;
		s->head_caps[k] = 0;
		return;
	}
	if (len > 0 && s->heads[k][len - 1] == '\n')
		s->heads[k][len - 1] = '\0';
}

/* Ends adding; the lines can then be read in order with sorter_next.
 * Everything fits in one run: it is sorted in memory, no file written.
 * 0, or -1 with s->failed set. */
static int sorter_finish(sorter *s)
{
	if (s->nruns == 0) {
		sorter_sort_run(s);
		s->mem = xcalloc(s->n ? s->n : 1, sizeof(*s->mem));
		for (size_t i = 0; i < s->n; i++)
			s->mem[i] = s->buf + s->offsets[i];
		return 0;
	}
	if (sorter_spill(s) != 0)
		return -1;
	free(s->buf);
	s->buf = NULL;
	free(s->offsets);
	s->offsets = NULL;
	s->heads = xcalloc(s->nruns, sizeof(*s->heads));
	s->head_caps = xcalloc(s->nruns, sizeof(*s->head_caps));
	for (size_t k = 0; k < s->nruns; k++) {
		rewind(s->runs[k]);
		sorter_advance_run(s, k);
	}
	return s->failed ? -1 : 0;
}

/* The smallest line not yet read, or NULL at the end (or after a read
 * error: s->failed).  The pointer is valid until the next call. */
static const char *sorter_peek(sorter *s)
{
	if (s->mem)
		return s->next < s->n ? s->mem[s->next] : NULL;
	const char *best = NULL;
	for (size_t k = 0; k < s->nruns; k++)
		if (s->heads[k] && (!best || strcmp(s->heads[k], best) < 0))
			best = s->heads[k];
	return best;
}

/* Steps past the line sorter_peek returned. */
static void sorter_pop(sorter *s)
{
	if (s->mem) {
		s->next++;
		return;
	}
	size_t best = SIZE_MAX;
	for (size_t k = 0; k < s->nruns; k++)
		if (s->heads[k] && (best == SIZE_MAX ||
		                    strcmp(s->heads[k], s->heads[best]) < 0))
			best = k;
	if (best != SIZE_MAX)
		sorter_advance_run(s, best);
}

/* Closes (and so removes) the runs and frees everything; s is zeroed. */
static void sorter_free(sorter *s)
{
	for (size_t k = 0; k < s->nruns; k++) {
		fclose(s->runs[k]);
		if (s->heads)
			free(s->heads[k]);
	}
	free(s->runs);
	free(s->heads);
	free(s->head_caps);
	free(s->buf);
	free(s->offsets);
	free(s->mem);
	memset(s, 0, sizeof(*s));
}

/* ===================================================================== */
/* One side                                                              */
/* ===================================================================== */

typedef struct side {
	const char *name;     /* "A" or "B" */
	const char *endpoint; /* for messages */
	client_options options;
	client_conn conn;
	bool connected;
	char *token;  /* heap: the snapshot this side is read at */
	char *schema; /* heap: its schema text (at its head) */
	sorter rels;
	bool progress; /* stderr is a terminal */
	struct timespec last_progress;
} side;

/* True (and *last set to now) when 0.2 s have passed since *last: the
 * pace of progress lines on a terminal. */
static bool progress_due(struct timespec *last)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double dt = (double)(now.tv_sec - last->tv_sec) +
	            (double)(now.tv_nsec - last->tv_nsec) / 1e9;
	if (dt < 0.2)
		return false;
	*last = now;
	return true;
}

/* Prints `pemba: verify: side X (ENDPOINT): what failed` after the error
 * line the client printed; returns CLIENT_EXIT_ERROR. */
static int side_failed(const side *s, const char *what)
{
	fprintf(stderr, "pemba: verify: side %s (%s): %s failed\n", s->name,
	        s->endpoint, what);
	return CLIENT_EXIT_ERROR;
}

/* The Consistency of an exact read at the side's snapshot, in *c (zt
 * filled too; both the caller's). */
static void side_consistency(const side *s, Authzed__Api__V1__ZedToken *zt,
                             Authzed__Api__V1__Consistency *c)
{
	authzed__api__v1__zed_token__init(zt);
	zt->token = s->token;
	authzed__api__v1__consistency__init(c);
	c->requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
	c->at_exact_snapshot = zt;
}

/* The side's schema: with a token given (--*-consistency-token), at
 * exactly that token through pemba's MigrationService.ReadSchemaAt; a
 * server without it (SpiceDB) is read at its head, with a note on stderr.
 * Without a token, ReadSchema, whose read_at becomes s->token.  Sets
 * s->schema.  0 or CLIENT_EXIT_ERROR (printed, naming the side). */
static int side_read_schema(side *s)
{
	Authzed__Api__V1__ReadSchemaResponse *r = NULL;
	if (s->token) {
		Authzed__Api__V1__ZedToken zt;
		Authzed__Api__V1__Consistency c;
		side_consistency(s, &zt, &c);
		Pemba__V1__ReadSchemaAtRequest req =
		    PEMBA__V1__READ_SCHEMA_AT_REQUEST__INIT;
		req.consistency = &c;
		s->conn.quiet_unimplemented = true;
		r = (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
		    &s->conn, "/pemba.v1.MigrationService/ReadSchemaAt",
		    &req.base,
		    &authzed__api__v1__read_schema_response__descriptor);
		s->conn.quiet_unimplemented = false;
		if (!r && s->conn.last_status != GRPC_STATUS_UNIMPLEMENTED)
			return side_failed(s,
			                   "reading the schema at the token");
		if (!r)
			fprintf(
			    stderr,
			    "pemba: verify: side %s has no ReadSchemaAt (not "
			    "pemba): its schema is compared as of now, its "
			    "data at the token\n",
			    s->name);
	}
	if (!r) {
		Authzed__Api__V1__ReadSchemaRequest req =
		    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
		r = (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
		    &s->conn, SCHEMA_SERVICE "ReadSchema", &req.base,
		    &authzed__api__v1__read_schema_response__descriptor);
	}
	if (!r)
		return side_failed(s, "reading the schema");
	s->schema = xstrdup(r->schema_text ? r->schema_text : "");
	if (!s->token) {
		if (!r->read_at || !r->read_at->token || !*r->read_at->token) {
			protobuf_c_message_free_unpacked(&r->base, NULL);
			client_error("INTERNAL", "ReadSchema gave no read_at");
			return side_failed(s, "reading the schema");
		}
		s->token = xstrdup(r->read_at->token);
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return 0;
}

static int compare_fields(const void *x, const void *y)
{
	const Google__Protobuf__Struct__FieldsEntry *const *e1 = x, *const *e2 =
	                                                                y;
	return strcmp((*e1)->key ? (*e1)->key : "",
	              (*e2)->key ? (*e2)->key : "");
}

static void canonical_value(Google__Protobuf__Value *v);

/* Sorts a Struct's fields by key, nested ones too, in place: a Struct is
 * a map, which SpiceDB sends in any order, and the relationship lines of
 * both sides must be equal text when their contexts are equal. */
static void canonical_struct(Google__Protobuf__Struct *st)
{
	if (!st)
		return;
	if (st->n_fields > 1)
		qsort(st->fields, st->n_fields, sizeof(*st->fields),
		      compare_fields);
	for (size_t i = 0; i < st->n_fields; i++)
		canonical_value(st->fields[i]->value);
}

static void canonical_value(Google__Protobuf__Value *v)
{
	if (!v)
		return;
	if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)
		canonical_struct(v->struct_value);
	else if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE &&
	         v->list_value)
		for (size_t i = 0; i < v->list_value->n_values; i++)
			canonical_value(v->list_value->values[i]);
}

/* Adds one relationship to the side's sorter (and shows progress).  The
 * relationship is the stream's (freed after the callback); its caveat
 * context is put in key order first. */
static int side_add(side *s, Authzed__Api__V1__Relationship *rel)
{
	if (rel->optional_caveat)
		canonical_struct(rel->optional_caveat->context);
	char *line = client_format_relationship(rel);
	int rc = sorter_add(&s->rels, line);
	free(line);
	if (rc != 0)
		return -1;
	if (s->progress && s->rels.count % 10000 == 0 &&
	    progress_due(&s->last_progress))
		fprintf(stderr,
		        "\r\033[Kpemba: verify: side %s: %llu relationships",
		        s->name, (unsigned long long)s->rels.count);
	return 0;
}

/* client_stream_fn of ExportBulkRelationships: every relationship of the
 * page into the side's sorter.  Non-zero (stops the call) when the sorter
 * failed (s->rels.failed). */
static int on_export(void *ctx, const ProtobufCMessage *message)
{
	side *s = ctx;
	const Authzed__Api__V1__ExportBulkRelationshipsResponse *page =
	    (const void *)message;
	for (size_t i = 0; i < page->n_relationships; i++)
		if (side_add(s, page->relationships[i]) != 0)
			return 1;
	return 0;
}

/* client_stream_fn of ReadRelationships: as on_export, one relationship a
 * response. */
static int on_read(void *ctx, const ProtobufCMessage *message)
{
	side *s = ctx;
	const Authzed__Api__V1__ReadRelationshipsResponse *r =
	    (const void *)message;
	if (r->relationship && side_add(s, r->relationship) != 0)
		return 1;
	return 0;
}

/* Streams every relationship of the side at its snapshot into its
 * sorter: ExportBulkRelationships, or ReadRelationships per definition of
 * its schema when the server answers UNIMPLEMENTED before any data.
 * 0 or CLIENT_EXIT_ERROR (printed, naming the side). */
static int side_read_relationships(side *s)
{
	Authzed__Api__V1__ZedToken zt;
	Authzed__Api__V1__Consistency c;
	side_consistency(s, &zt, &c);
	Authzed__Api__V1__ExportBulkRelationshipsRequest req =
	    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	req.consistency = &c;
	s->conn.quiet_unimplemented = true;
	int rc = client_server_streaming(
	    &s->conn, PERMISSIONS_SERVICE "ExportBulkRelationships", &req.base,
	    &authzed__api__v1__export_bulk_relationships_response__descriptor,
	    0, on_export, s);
	s->conn.quiet_unimplemented = false;
	if (rc != 0 && s->rels.count == 0 && !s->rels.failed &&
	    s->conn.last_status == GRPC_STATUS_UNIMPLEMENTED) {
		char **defs = client_schema_definitions(s->schema);
		rc = 0;
		for (size_t i = 0; defs[i] && rc == 0; i++) {
			Authzed__Api__V1__RelationshipFilter filter =
			    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
			filter.resource_type = defs[i];
			Authzed__Api__V1__ReadRelationshipsRequest rr =
			    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
			rr.consistency = &c;
			rr.relationship_filter = &filter;
			rc = client_server_streaming(
			    &s->conn, PERMISSIONS_SERVICE "ReadRelationships",
			    &rr.base,
			    &authzed__api__v1__read_relationships_response__descriptor,
			    0, on_read, s);
		}
		client_free_definitions(defs);
	}
	if (s->progress)
		fprintf(stderr,
		        "\r\033[Kpemba: verify: side %s: %llu relationships "
		        "read\n",
		        s->name, (unsigned long long)s->rels.count);
	if (s->rels.failed) {
		fprintf(stderr,
		        "pemba: verify: side %s: temporary file for sorting: "
		        "%s\n",
		        s->name, strerror(s->rels.failed));
		return CLIENT_EXIT_ERROR;
	}
	if (rc != 0)
		return side_failed(s, "reading the relationships");
	if (sorter_finish(&s->rels) != 0) {
		fprintf(stderr, "pemba: verify: side %s: sorting: %s\n",
		        s->name, strerror(s->rels.failed));
		return CLIENT_EXIT_ERROR;
	}
	return 0;
}

/* ===================================================================== */
/* Schemas                                                               */
/* --json: every report line as {"kind":KIND,"text":LINE} (KIND one of
 * side, schema, relationship, relationships, check, lookup, checks,
 * lookups, verdict); without it the line itself. */
static bool verify_json;

static void vprint(const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vprint(const char *kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!verify_json) {
		vprintf(fmt, ap);
		va_end(ap);
		return;
	}
	strbuf line, out;
	strbuf_init(&line);
	strbuf_init(&out);
	strbuf_vprintf(&line, fmt, ap);
	va_end(ap);
	while (line.len && line.data[line.len - 1] == '\n')
		line.data[--line.len] = '\0';
	strbuf_puts(&out, "{\"kind\":");
	client_json_string(&out, kind, strlen(kind));
	strbuf_puts(&out, ",\"text\":");
	client_json_string(&out, line.data, line.len);
	strbuf_putc(&out, '}');
	puts(out.data);
	strbuf_free(&line);
	strbuf_free(&out);
}

/* ===================================================================== */

/* True for a schema difference in a doc comment only. */
static bool is_comment_diff(int diff_case)
{
	switch (diff_case) {
	case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_DEFINITION_DOC_COMMENT_CHANGED:
	case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_RELATION_DOC_COMMENT_CHANGED:
	case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_PERMISSION_DOC_COMMENT_CHANGED:
	case AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_CAVEAT_DOC_COMMENT_CHANGED:
		return true;
	default:
		return false;
	}
}

/* Compares the schemas: DiffSchema on B with A's text, else on A with
 * B's, else the texts.  Prints `schema: equal` or the differences (doc
 * comments that differ are printed but leave the schemas equal).
 * Returns 0 equal, 1 different, CLIENT_EXIT_ERROR (printed). */
static int compare_schemas(side *a, side *b)
{
	side *sides[2] = {b, a};
	for (int k = 0; k < 2; k++) {
		side *on = sides[k], *other = sides[1 - k];
		Authzed__Api__V1__DiffSchemaRequest req =
		    AUTHZED__API__V1__DIFF_SCHEMA_REQUEST__INIT;
		req.comparison_schema = other->schema;
		/* `on`'s schema at its snapshot (DiffSchema takes a
		 * consistency; without one it is the head's). */
		Authzed__Api__V1__ZedToken zt;
		Authzed__Api__V1__Consistency c;
		side_consistency(on, &zt, &c);
		req.consistency = &c;
		on->conn.quiet_unimplemented = true;
		Authzed__Api__V1__DiffSchemaResponse *r =
		    (Authzed__Api__V1__DiffSchemaResponse *)client_unary(
		        &on->conn, SCHEMA_SERVICE "DiffSchema", &req.base,
		        &authzed__api__v1__diff_schema_response__descriptor);
		on->conn.quiet_unimplemented = false;
		if (!r) {
			if (on->conn.last_status == GRPC_STATUS_UNIMPLEMENTED)
				continue;
			return side_failed(on, "comparing the schemas");
		}
		/* Doc comments change no answer: reported, not a
		 * difference. */
		int differs = 0;
		for (size_t i = 0; i < r->n_diffs; i++) {
			bool comment = is_comment_diff(r->diffs[i]->diff_case);
			differs |= !comment;
			strbuf sb;
			strbuf_init(&sb);
			client_json_message(&sb, &r->diffs[i]->base);
			vprint("schema",
			       "schema %s (side %s's compared with side %s's): "
			       "%s\n",
			       comment ? "comment differs" : "differs",
			       on->name, other->name, sb.data);
			strbuf_free(&sb);
		}
		if (!differs)
			vprint("schema", "schema: equal\n");
		protobuf_c_message_free_unpacked(&r->base, NULL);
		return differs;
	}
	if (strcmp(a->schema, b->schema) == 0) {
		vprint("schema", "schema: equal (as text)\n");
		return 0;
	}
	vprint("schema",
	       "schema differs (as text; neither side has DiffSchema)\n");
	return 1;
}

/* ===================================================================== */
/* Relationships                                                         */
/* ===================================================================== */

typedef struct verify_opts {
	uint64_t max_differences;
	uint64_t checks;
	uint64_t seed;
} verify_opts;

/* A reservoir sample of relationship lines (heap strings). */
typedef struct sample {
	char **lines;
	uint64_t n, cap, seen;
	uint64_t rng;
} sample;

/* xorshift64*: the sample's seeded generator. */
static uint64_t sample_random(sample *s)
{
	uint64_t x = s->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Offers one line to the reservoir: kept with probability cap/seen, so
 * every line seen is equally likely to end in the sample (a copy). */
static void sample_offer(sample *s, const char *line)
{
	s->seen++;
	if (s->cap == 0)
		return;
	if (s->n < s->cap) {
		s->lines[s->n++] = xstrdup(line);
		return;
	}
	uint64_t j = sample_random(s) % s->seen;
	if (j < s->cap) {
		free(s->lines[j]);
		s->lines[j] = xstrdup(line);
	}
}

/* Merges the two sorted streams: prints the first max_differences lines
 * found on one side only, then the counts; offers the lines of both to
 * the sample.  Returns 0 equal, 1 different, CLIENT_EXIT_ERROR. */
static int compare_relationships(side *a, side *b, const verify_opts *o,
                                 sample *smp)
{
	uint64_t only_a = 0, only_b = 0, both = 0, shown = 0;
	for (;;) {
		const char *x = sorter_peek(&a->rels);
		const char *y = sorter_peek(&b->rels);
		if (!x && !y)
			break;
		int cmp = !x ? 1 : !y ? -1 : strcmp(x, y);
		if (cmp == 0) {
			both++;
			sample_offer(smp, x);
			sorter_pop(&a->rels);
			sorter_pop(&b->rels);
			continue;
		}
		const char *line = cmp < 0 ? x : y;
		if (shown < o->max_differences) {
			vprint("relationship", "only in %s: %s\n",
			       cmp < 0 ? "A" : "B", line);
			shown++;
		}
		if (cmp < 0) {
			only_a++;
			sorter_pop(&a->rels);
		} else {
			only_b++;
			sorter_pop(&b->rels);
		}
	}
	if (a->rels.failed || b->rels.failed) {
		fprintf(
		    stderr, "pemba: verify: reading back sorted runs: %s\n",
		    strerror(a->rels.failed ? a->rels.failed : b->rels.failed));
		return CLIENT_EXIT_ERROR;
	}
	vprint("relationships",
	       "relationships: A %llu, B %llu, in both %llu, only in A %llu, "
	       "only in B %llu\n",
	       (unsigned long long)a->rels.count,
	       (unsigned long long)b->rels.count, (unsigned long long)both,
	       (unsigned long long)only_a, (unsigned long long)only_b);
	return only_a || only_b ? 1 : 0;
}

/* ===================================================================== */
/* Checks and lookups                                                    */
/* ===================================================================== */

/* The permissions of definition `type` in schema text (heap array of
 * heap strings, NULL-terminated): `permission NAME` lines inside
 * `definition TYPE {`.  A textual scan of the printed schema, as
 * client_schema_definitions does. */
static char **schema_permissions(const char *text, const char *type)
{
	char **out = xcalloc(1, sizeof(*out));
	size_t n = 0;
	bool inside = false;
	size_t tlen = strlen(type);
	for (const char *p = text; p && *p;) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *q = p;
		while (q < p + len && (*q == ' ' || *q == '\t'))
			q++;
		if (strncmp(q, "definition ", 11) == 0) {
			const char *name = q + 11;
			inside = strncmp(name, type, tlen) == 0 &&
			         (name[tlen] == ' ' || name[tlen] == '{');
		} else if (inside && strncmp(q, "permission ", 11) == 0) {
			const char *name = q + 11;
			size_t nl = strcspn(name, " =\t\n");
			out = xrealloc(out, (n + 2) * sizeof(*out));
			out[n++] = strndup(name, nl);
			out[n] = NULL;
		}
		p = end ? end + 1 : NULL;
	}
	return out;
}

static bool list_has(char **list, const char *s)
{
	for (size_t i = 0; list[i]; i++)
		if (strcmp(list[i], s) == 0)
			return true;
	return false;
}

/* A relationship line split into its parts (strings into buf). */
typedef struct rel_parts {
	char buf[1024];
	char *rtype, *rid, *rel, *stype, *sid, *srel;
} rel_parts;

/* Splits `rt:rid#rel@st:sid[#srel][...]`.  0, or -1 when malformed or
 * too long. */
static int split_line(const char *line, rel_parts *p)
{
	size_t len = strcspn(line, "[");
	if (len >= sizeof(p->buf))
		return -1;
	memcpy(p->buf, line, len);
	p->buf[len] = '\0';
	p->rtype = p->buf;
	char *c = strchr(p->buf, ':'), *h = c ? strchr(c, '#') : NULL;
	char *at = h ? strchr(h, '@') : NULL;
	char *c2 = at ? strchr(at, ':') : NULL;
	if (!c2)
		return -1;
	*c = *h = *at = *c2 = '\0';
	p->rid = c + 1;
	p->rel = h + 1;
	p->stype = at + 1;
	p->sid = c2 + 1;
	char *h2 = strchr(p->sid, '#');
	p->srel = NULL;
	if (h2) {
		*h2 = '\0';
		p->srel = h2 + 1;
	}
	return 0;
}

static const char *permissionship_name(int p)
{
	switch (p) {
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION:
		return "yes";
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION:
		return "no";
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION:
		return "conditional";
	default:
		return "unspecified";
	}
}

/* The subject of p as a request's SubjectReference (subj points at so). */
static void fill_subject(const rel_parts *p,
                         Authzed__Api__V1__ObjectReference *so,
                         Authzed__Api__V1__SubjectReference *subj)
{
	*so = (Authzed__Api__V1__ObjectReference)
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	so->object_type = p->stype;
	so->object_id = p->sid;
	*subj = (Authzed__Api__V1__SubjectReference)
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	subj->object = so;
	if (p->srel)
		subj->optional_relation = p->srel;
}

/* One CheckPermission on side s.  The permissionship, or -1 (printed,
 * naming the side). */
static int side_check(side *s, rel_parts *p, const char *permission)
{
	Authzed__Api__V1__ZedToken zt;
	Authzed__Api__V1__Consistency c;
	side_consistency(s, &zt, &c);
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	res.object_type = p->rtype;
	res.object_id = p->rid;
	Authzed__Api__V1__ObjectReference so;
	Authzed__Api__V1__SubjectReference subj;
	fill_subject(p, &so, &subj);
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	req.consistency = &c;
	req.resource = &res;
	req.permission = (char *)permission;
	req.subject = &subj;
	Authzed__Api__V1__CheckPermissionResponse *r =
	    (Authzed__Api__V1__CheckPermissionResponse *)client_unary(
	        &s->conn, PERMISSIONS_SERVICE "CheckPermission", &req.base,
	        &authzed__api__v1__check_permission_response__descriptor);
	if (!r) {
		side_failed(s, "CheckPermission");
		return -1;
	}
	int out = r->permissionship;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return out;
}

/* The results of one lookup on one side: sorted heap strings. */
typedef struct result_list {
	char **items;
	size_t n, cap;
	bool truncated;
} result_list;

static void result_add(result_list *l, char *item)
{
	if (l->n >= VERIFY_LOOKUP_MAX) {
		l->truncated = true;
		free(item);
		return;
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->items = xrealloc(l->items, l->cap * sizeof(*l->items));
	}
	l->items[l->n++] = item;
}

static void result_free(result_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	memset(l, 0, sizeof(*l));
}

static int compare_strings(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* client_stream_fn of LookupResources: `ID` or `ID (caveated)` into the
 * result_list ctx (heap string). */
static int on_lookup_resource(void *ctx, const ProtobufCMessage *message)
{
	const Authzed__Api__V1__LookupResourcesResponse *r =
	    (const void *)message;
	char *item;
	if (asprintf(
	        &item, "%s%s", r->resource_object_id,
	        r->permissionship ==
	                AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION
	            ? " (caveated)"
	            : "") < 0)
		return 1;
	result_add(ctx, item);
	return 0;
}

/* client_stream_fn of LookupSubjects: the subject's id, as above. */
static int on_lookup_subject(void *ctx, const ProtobufCMessage *message)
{
	const Authzed__Api__V1__LookupSubjectsResponse *r =
	    (const void *)message;
	const char *id = r->subject && r->subject->subject_object_id
	                     ? r->subject->subject_object_id
	                     : r->subject_object_id;
	bool caveated =
	    r->subject &&
	    r->subject->permissionship ==
	        AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION;
	char *item;
	if (asprintf(&item, "%s%s", id ? id : "",
	             caveated ? " (caveated)" : "") < 0)
		return 1;
	result_add(ctx, item);
	return 0;
}

/* LookupResources (resources == true: resource type, permission,
 * subject) or LookupSubjects (the resource, permission, the subject's
 * type and relation) on side s; the sorted results in *out.  0, or
 * CLIENT_EXIT_ERROR (printed, naming the side). */
static int side_lookup(side *s, rel_parts *p, const char *permission,
                       bool resources, result_list *out)
{
	Authzed__Api__V1__ZedToken zt;
	Authzed__Api__V1__Consistency c;
	side_consistency(s, &zt, &c);
	int rc;
	if (resources) {
		Authzed__Api__V1__ObjectReference so;
		Authzed__Api__V1__SubjectReference subj;
		fill_subject(p, &so, &subj);
		Authzed__Api__V1__LookupResourcesRequest req =
		    AUTHZED__API__V1__LOOKUP_RESOURCES_REQUEST__INIT;
		req.consistency = &c;
		req.resource_object_type = p->rtype;
		req.permission = (char *)permission;
		req.subject = &subj;
		rc = client_server_streaming(
		    &s->conn, PERMISSIONS_SERVICE "LookupResources", &req.base,
		    &authzed__api__v1__lookup_resources_response__descriptor, 0,
		    on_lookup_resource, out);
	} else {
		Authzed__Api__V1__ObjectReference res =
		    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
		res.object_type = p->rtype;
		res.object_id = p->rid;
		Authzed__Api__V1__LookupSubjectsRequest req =
		    AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__INIT;
		req.consistency = &c;
		req.resource = &res;
		req.permission = (char *)permission;
		req.subject_object_type = p->stype;
		if (p->srel)
			req.optional_subject_relation = p->srel;
		rc = client_server_streaming(
		    &s->conn, PERMISSIONS_SERVICE "LookupSubjects", &req.base,
		    &authzed__api__v1__lookup_subjects_response__descriptor, 0,
		    on_lookup_subject, out);
	}
	if (rc != 0)
		return side_failed(s, resources ? "LookupResources"
		                                : "LookupSubjects");
	if (out->n > 1)
		qsort(out->items, out->n, sizeof(*out->items), compare_strings);
	return 0;
}

/* Compares one lookup on both sides; prints the first differing result.
 * 0 same, 1 different, CLIENT_EXIT_ERROR. */
static int compare_lookup(side *a, side *b, rel_parts *p,
                          const char *permission, bool resources)
{
	result_list ra = {0}, rb = {0};
	int rc = side_lookup(a, p, permission, resources, &ra);
	if (rc == 0)
		rc = side_lookup(b, p, permission, resources, &rb);
	if (rc == 0) {
		size_t i = 0, j = 0;
		while (i < ra.n || j < rb.n) {
			int cmp = i == ra.n ? 1
			          : j == rb.n
			              ? -1
			              : strcmp(ra.items[i], rb.items[j]);
			if (cmp == 0) {
				i++, j++;
				continue;
			}
			if (resources)
				vprint("lookup",
				       "lookup-resources differs: %s %s "
				       "%s:%s%s%s: "
				       "%s:%s only in %s\n",
				       p->rtype, permission, p->stype, p->sid,
				       p->srel ? "#" : "",
				       p->srel ? p->srel : "", p->rtype,
				       cmp < 0 ? ra.items[i] : rb.items[j],
				       cmp < 0 ? "A" : "B");
			else
				vprint(
				    "lookup",
				    "lookup-subjects differs: %s:%s %s %s%s%s: "
				    "%s:%s only in %s\n",
				    p->rtype, p->rid, permission, p->stype,
				    p->srel ? "#" : "", p->srel ? p->srel : "",
				    p->stype,
				    cmp < 0 ? ra.items[i] : rb.items[j],
				    cmp < 0 ? "A" : "B");
			rc = 1;
			break;
		}
		if (rc == 0 && (ra.truncated || rb.truncated))
			fprintf(stderr,
			        "pemba: verify: a lookup gave more than %d "
			        "results; compared the first %d\n",
			        VERIFY_LOOKUP_MAX, VERIFY_LOOKUP_MAX);
	}
	result_free(&ra);
	result_free(&rb);
	return rc;
}

/* Runs the checks and lookups of the sample, at most o->checks checks.
 * Prints each difference (up to max_differences) and the agreement.
 * 0 all agree, 1 some differ, CLIENT_EXIT_ERROR. */
static int compare_answers(side *a, side *b, const verify_opts *o, sample *smp)
{
	uint64_t checks = 0, agree = 0, lookups = 0, lookups_agree = 0;
	uint64_t shown = 0;
	for (uint64_t i = 0; i < smp->n && checks < o->checks; i++) {
		rel_parts p;
		/* A wildcard subject is no subject to ask about (SpiceDB
		 * refuses to check or look up for `user:*`). */
		if (split_line(smp->lines[i], &p) != 0 ||
		    strcmp(p.sid, "*") == 0)
			continue;
		char **pa = schema_permissions(a->schema, p.rtype);
		char **pb = schema_permissions(b->schema, p.rtype);
		for (size_t k = 0; pa[k] && checks < o->checks; k++) {
			if (!list_has(pb, pa[k]))
				continue;
			int x = side_check(a, &p, pa[k]);
			int y = x < 0 ? -1 : side_check(b, &p, pa[k]);
			if (x < 0 || y < 0) {
				client_free_definitions(pa);
				client_free_definitions(pb);
				return CLIENT_EXIT_ERROR;
			}
			checks++;
			if (a->progress && progress_due(&a->last_progress))
				fprintf(stderr,
				        "\r\033[Kpemba: verify: %llu of %llu "
				        "checks",
				        (unsigned long long)checks,
				        (unsigned long long)o->checks);
			if (x == y) {
				agree++;
			} else if (shown++ < o->max_differences) {
				vprint(
				    "check",
				    "check differs: %s:%s %s %s:%s%s%s: A=%s "
				    "B=%s\n",
				    p.rtype, p.rid, pa[k], p.stype, p.sid,
				    p.srel ? "#" : "", p.srel ? p.srel : "",
				    permissionship_name(x),
				    permissionship_name(y));
			}
			if (lookups < 2 * VERIFY_LOOKUPS && k == 0) {
				for (int r = 0; r < 2; r++) {
					int rc = compare_lookup(a, b, &p, pa[k],
					                        r == 0);
					if (rc == CLIENT_EXIT_ERROR) {
						client_free_definitions(pa);
						client_free_definitions(pb);
						return rc;
					}
					lookups++;
					lookups_agree += rc == 0;
				}
			}
		}
		client_free_definitions(pa);
		client_free_definitions(pb);
	}
	if (a->progress && checks)
		fprintf(stderr, "\r\033[K");
	vprint("checks", "checks: %llu of %llu agree\n",
	       (unsigned long long)agree, (unsigned long long)checks);
	vprint("lookups", "lookups: %llu of %llu agree\n",
	       (unsigned long long)lookups_agree, (unsigned long long)lookups);
	return agree == checks && lookups_agree == lookups ? 0 : 1;
}

/* ===================================================================== */
/* The command                                                           */
/* ===================================================================== */

typedef struct verify_flags {
	const char *from_endpoint, *from_token, *to_endpoint, *to_token;
	const char *from_ca_path, *to_ca_path;
	const char *from_consistency, *to_consistency;
	const char *checks, *seed, *max_differences;
	bool from_insecure, to_insecure;
	bool from_skip_verify_ca, to_skip_verify_ca;
} verify_flags;

/* client_flag_fn: verify's own flags into the verify_flags ctx (strings
 * point into argv). */
static int verify_flag(void *ctx, int argc, char **argv, int *i)
{
	verify_flags *m = ctx;
	static const char *const bools[] = {"--from-insecure", "--to-insecure",
	                                    "--from-skip-verify-ca",
	                                    "--to-skip-verify-ca"};
	bool *bool_values[] = {&m->from_insecure, &m->to_insecure,
	                       &m->from_skip_verify_ca, &m->to_skip_verify_ca};
	for (size_t k = 0; k < sizeof(bools) / sizeof(bools[0]); k++)
		if (client_flag_bool(bools[k], argv, i, bool_values[k]))
			return 1;
	static const char *const names[] = {"--from-endpoint",
	                                    "--from-token",
	                                    "--to-endpoint",
	                                    "--to-token",
	                                    "--from-ca-path",
	                                    "--to-ca-path",
	                                    "--from-consistency-token",
	                                    "--to-consistency-token",
	                                    "--checks",
	                                    "--seed",
	                                    "--max-differences"};
	const char **values[] = {&m->from_endpoint,    &m->from_token,
	                         &m->to_endpoint,      &m->to_token,
	                         &m->from_ca_path,     &m->to_ca_path,
	                         &m->from_consistency, &m->to_consistency,
	                         &m->checks,           &m->seed,
	                         &m->max_differences};
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		int r = client_flag_value(names[k], argc, argv, i, values[k]);
		if (r)
			return r;
	}
	return 0;
}

/* Parses a non-negative decimal flag value; -1 when malformed. */
static int parse_count(const char *text, uint64_t *out)
{
	if (!text || !*text)
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (*end || errno || text[0] == '-')
		return -1;
	*out = v;
	return 0;
}

/* `pemba verify`: parses the flags, connects to both sides, then schemas,
 * relationships and answers in that order (see the top of this file).
 * Returns the exit status: 0 equal, 1 different, 2 error. */
int cmd_verify(int argc, char **argv)
{
	char usage[8192];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba verify --from-endpoint A [--from-token K] "
	    "--to-endpoint B [--to-token K2]\n"
	    "       [--checks N] [--seed S] [--max-differences N] "
	    "[--insecure | per-side TLS flags]\n"
	    "\n"
	    "Checks that two servers hold the same data and give the same "
	    "answers (before a\n"
	    "cut-over).  Each side is read at one snapshot (its ReadSchema "
	    "read_at, or the\n"
	    "--from-/--to-consistency-token given); the schemas are compared "
	    "(DiffSchema), then\n"
	    "every relationship (ExportBulkRelationships, or ReadRelationships "
	    "per definition),\n"
	    "sorted in bounded memory (runs in temporary files): `only in A: "
	    "REL` lines for the\n"
	    "first differences and the counts.  Then --checks N (default 100) "
	    "CheckPermission\n"
	    "calls, for each permission of the resource's type with the "
	    "subject of relationships\n"
	    "sampled with --seed S (default 1), and a few LookupResources and "
	    "LookupSubjects;\n"
	    "`check differs: ...` lines and the agreement.  A or B may be "
	    "SpiceDB.\n"
	    "\n"
	    "  --from-endpoint A, --from-token K   side A\n"
	    "  --to-endpoint B, --to-token K2      side B\n"
	    "  --from-consistency-token T, --to-consistency-token T\n"
	    "                                      read that side at exactly "
	    "T\n"
	    "  --checks N                          checks to compare (0: "
	    "none)\n"
	    "  --seed S                            the sample's seed\n"
	    "  --max-differences N                 differences printed per "
	    "kind (default 10)\n"
	    "The connection flags below apply to both sides; per side: "
	    "--from-insecure,\n"
	    "--to-insecure, --from-ca-path FILE, --to-ca-path FILE, "
	    "--from-skip-verify-ca,\n"
	    "--to-skip-verify-ca.\n"
	    "\nWith --json each report line is one JSON object "
	    "{\"kind\":K,\"text\":LINE}, K one of\nside, schema, "
	    "relationship, relationships, check, lookup, checks, lookups, "
	    "verdict.\n"
	    "\nExit status: 0 equal; 1 any difference; 2 on any error (usage, "
	    "a side unreachable\n"
	    "or refusing a call: the message names the side).\n\n%s",
	    client_connection_help);
	verify_flags m = {0};
	client_args args = {.usage = usage,
	                    .max_positional = 0,
	                    .extra = verify_flag,
	                    .accepts = CLIENT_NO_CONTEXT,
	                    .extra_ctx = &m};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	verify_json = args.options.json;
	if (!m.from_endpoint || !*m.from_endpoint)
		return client_usage_error(usage, "--from-endpoint is required");
	if (!m.to_endpoint || !*m.to_endpoint)
		return client_usage_error(usage, "--to-endpoint is required");
	verify_opts o = {.max_differences = 10, .checks = 100, .seed = 1};
	if (m.checks && parse_count(m.checks, &o.checks) != 0)
		return client_usage_error(usage, "--checks: not a count: %s",
		                          m.checks);
	if (o.checks > VERIFY_CHECKS_MAX)
		return client_usage_error(usage, "--checks: at most %d",
		                          VERIFY_CHECKS_MAX);
	if (m.seed && parse_count(m.seed, &o.seed) != 0)
		return client_usage_error(usage, "--seed: not a number: %s",
		                          m.seed);
	if (m.max_differences &&
	    parse_count(m.max_differences, &o.max_differences) != 0)
		return client_usage_error(usage,
		                          "--max-differences: not a count: %s",
		                          m.max_differences);

	size_t run_bytes = VERIFY_RUN_BYTES;
	const char *env = getenv("PEMBA_TEST_VERIFY_RUN_BYTES");
	if (env && atol(env) > 0)
		run_bytes = (size_t)atol(env);
	bool tty = isatty(STDERR_FILENO);
	side a = {.name = "A",
	          .endpoint = m.from_endpoint,
	          .options = args.options,
	          .rels = {.limit = run_bytes},
	          .progress = tty};
	side b = {.name = "B",
	          .endpoint = m.to_endpoint,
	          .options = args.options,
	          .rels = {.limit = run_bytes},
	          .progress = tty};
	a.options.endpoint = m.from_endpoint;
	a.options.token = m.from_token;
	b.options.endpoint = m.to_endpoint;
	b.options.token = m.to_token;
	a.options.insecure = a.options.insecure || m.from_insecure;
	b.options.insecure = b.options.insecure || m.to_insecure;
	a.options.skip_verify_ca =
	    a.options.skip_verify_ca || m.from_skip_verify_ca;
	b.options.skip_verify_ca =
	    b.options.skip_verify_ca || m.to_skip_verify_ca;
	if (m.from_ca_path)
		a.options.ca_path = m.from_ca_path;
	if (m.to_ca_path)
		b.options.ca_path = m.to_ca_path;
	if (m.from_consistency && *m.from_consistency)
		a.token = xstrdup(m.from_consistency);
	if (m.to_consistency && *m.to_consistency)
		b.token = xstrdup(m.to_consistency);

	sample smp = {.cap = o.checks, .rng = o.seed * 2654435761u + 1};
	smp.lines = xcalloc(o.checks ? o.checks : 1, sizeof(*smp.lines));
	status = CLIENT_EXIT_ERROR;
	side *sides[2] = {&a, &b};
	for (int k = 0; k < 2; k++) {
		if (client_connect(&sides[k]->options, &sides[k]->conn) != 0) {
			side_failed(sides[k], "connecting");
			goto done;
		}
		sides[k]->connected = true;
	}
	for (int k = 0; k < 2; k++)
		if (side_read_schema(sides[k]) != 0)
			goto done;
	vprint("side", "A: %s at %s\n", a.endpoint, a.token);
	vprint("side", "B: %s at %s\n", b.endpoint, b.token);
	fflush(stdout);
	int schema_rc = compare_schemas(&a, &b);
	if (schema_rc == CLIENT_EXIT_ERROR)
		goto done;
	for (int k = 0; k < 2; k++)
		if (side_read_relationships(sides[k]) != 0)
			goto done;
	int rels_rc = compare_relationships(&a, &b, &o, &smp);
	if (rels_rc == CLIENT_EXIT_ERROR)
		goto done;
	fflush(stdout);
	int answers_rc = compare_answers(&a, &b, &o, &smp);
	if (answers_rc == CLIENT_EXIT_ERROR)
		goto done;
	bool equal = schema_rc == 0 && rels_rc == 0 && answers_rc == 0;
	vprint("verdict", "verify: %s\n", equal ? "equal" : "DIFFERENT");
	status = equal ? CLIENT_EXIT_OK : CLIENT_EXIT_NO;
done:
	for (int k = 0; k < 2; k++) {
		if (sides[k]->connected)
			client_close(&sides[k]->conn);
		free(sides[k]->token);
		free(sides[k]->schema);
		sorter_free(&sides[k]->rels);
	}
	for (uint64_t i = 0; i < smp.n; i++)
		free(smp.lines[i]);
	free(smp.lines);
	return status;
}
