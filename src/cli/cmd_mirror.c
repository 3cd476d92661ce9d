/*
 * cmd_mirror.c -- `pemba mirror`: keep a target server a copy of a source
 * server (SpiceDB's "Migrations" worker, built in).
 *
 * First run (no state file): the source's schema (ReadSchema; its read_at
 * is the snapshot revision) is written to the target, then every
 * relationship at that revision (ExportBulkRelationships at_exact_snapshot,
 * page by page, each page TOUCHed on the target in writes of at most 1000).
 * Then Watch on the source from the snapshot revision, with relationship
 * updates, schema updates and checkpoints: each source revision (one Watch
 * response) is applied to the target in one WriteRelationships (TOUCH for
 * TOUCH, DELETE for DELETE), together with the revisions that arrived
 * while the previous write was under way (up to 1000 updates; see "The
 * Watch stream and the writes" below); a revision with more than 1000
 * updates takes several writes and is then not atomic on the target.  A
 * schema_updated revision reads the source schema at that revision (pemba.v1
 * ReadSchemaAt at_exact_snapshot) and writes it to the target, between the
 * revision's deletes and its touches.
 *
 * Each applied source revision also tells the target where it landed
 * (its last write carries the transaction metadata "pemba.mirror" =
 * {token, exact}; checkpoints and the snapshot go through
 * pemba.v1.MigrationService/RecordSourcePosition), so the target honours
 * the source's ZedTokens after a move (src/api/README.md, "Tokens that
 * survive a move").  A target that is not pemba ignores both.
 *
 * The state file records the phase and the source position after every
 * page / applied write (write temp, fsync, rename), so a restart
 * continues right after it; replaying a revision is harmless, TOUCH and
 * DELETE being idempotent.
 *
 * A source that is not pemba (SpiceDB; tested against the real one through
 * tests/support/spicedb_facade):
 *  - without ExportBulkRelationships (UNIMPLEMENTED), the snapshot is read
 *    with ReadRelationships at_exact_snapshot, definition by definition
 *    (the target's schema, i.e. the source's at the snapshot), resumable
 *    from the definition and cursor in the state file;
 *  - without ReadSchemaAt (UNIMPLEMENTED), schema changes are applied as
 *    of when they are read, not at their place in the stream: the source's
 *    schema at its head is written to the target whenever the head is read
 *    (about every 2 s, and before deciding "caught up") and differs from
 *    the last written, and once more before retrying a revision the
 *    target refused.  SpiceDB's Watch does not mark schema changes, so
 *    this is the only way they arrive.  Limits: for a moment the target
 *    can have a schema newer than its relationships; a removal is refused
 *    by the target until the source's deletes have been applied (it is
 *    tried again at the next head read); a change and its revert within
 *    one head-read interval are never seen;
 *  - caught up means the last applied or checkpointed source revision is
 *    at or after the head: pemba tokens compare by revision, SpiceDB
 *    tokens by their revision (spicedb_token.h: memory and CockroachDB
 *    numbers, PostgreSQL snapshots), others only when equal.  SpiceDB's
 *    Watch sends no checkpoints while idle, so with --until-caught-up the
 *    Watch runs in slices of 1 s and the head is compared between them.
 *    On PostgreSQL the head snapshot also moves with transactions SpiceDB
 *    does not report (other databases of the cluster), so an idle source
 *    may be seen as caught up only after its next write.
 *
 * State file (text):
 *   pemba-mirror-state 1
 *   phase snapshot|watch
 *   revision TOKEN     snapshot: the snapshot's; watch: last applied
 *   cursor CURSOR      snapshot: the export cursor after the last page
 *   type DEFINITION    snapshot by ReadRelationships: the definition the
 *                      cursor belongs to (absent otherwise)
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics/metrics.h"
#include "server/server.h"
#include "api/spicedb_token.h"
#include "api/zedtoken.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/progress.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/hash.h"
#include "util/xalloc.h"

#define MIRROR_WRITE_LIMIT 1000 /* updates per WriteRelationships */

/* ===================================================================== */
/* Metrics (--metrics-addr)                                              */
/* ===================================================================== */

/* The mirror's progress for Prometheus; one mirror per process. */
static struct {
	metrics_counter relationships_copied; /* snapshot rows */
	metrics_counter revisions_applied;
	metrics_counter updates_applied;
	metrics_gauge lag_revisions;     /* -1: not a pemba source */
	metrics_gauge caught_up;         /* 1 at the source's head */
	metrics_gauge last_change_unix;  /* wall clock, s; 0: none yet */
} figures;

static void write_figure(strbuf *out, const char *name, const char *type,
                         const char *help, double v)
{
	metrics_write_header(out, name, type, help);
	metrics_write_sample(out, name, NULL, 0, v);
}

static void render_figures(void *ctx, strbuf *out)
{
	(void)ctx;
	write_figure(out, "pemba_mirror_relationships_copied_total", "counter",
	             "Relationships copied by the snapshot (this run).",
	             (double)metrics_counter_get(&figures.relationships_copied));
	write_figure(out, "pemba_mirror_revisions_applied_total", "counter",
	             "Source revisions applied to the target (this run).",
	             (double)metrics_counter_get(&figures.revisions_applied));
	write_figure(out, "pemba_mirror_updates_applied_total", "counter",
	             "Relationship updates applied to the target (this run).",
	             (double)metrics_counter_get(&figures.updates_applied));
	write_figure(out, "pemba_mirror_lag_revisions", "gauge",
	             "Revisions the target is behind the source's head as "
	             "last read (-1: unknown, a SpiceDB source).",
	             (double)metrics_gauge_get(&figures.lag_revisions));
	write_figure(out, "pemba_mirror_caught_up", "gauge",
	             "1 when the target has everything up to the source's "
	             "head as last read.",
	             (double)metrics_gauge_get(&figures.caught_up));
	write_figure(out, "pemba_mirror_last_change_timestamp_seconds", "gauge",
	             "Unix time of the last applied change (0: none yet).",
	             (double)metrics_gauge_get(&figures.last_change_unix));
}

static void note_applied(uint64_t revisions, uint64_t updates)
{
	metrics_counter_add(&figures.revisions_applied, revisions);
	metrics_counter_add(&figures.updates_applied, updates);
	metrics_gauge_set(&figures.last_change_unix, (int64_t)time(NULL));
}

/* ===================================================================== */
/* State file                                                            */
/* ===================================================================== */

typedef struct mirror_state {
	bool watching; /* phase: false snapshot, true watch */
	char *token;   /* heap */
	char *cursor;  /* heap, "" none */
	char *type;    /* heap, NULL: the definition being read (snapshot
	                  by ReadRelationships) */
} mirror_state;

static void state_free(mirror_state *st)
{
	free(st->token);
	free(st->cursor);
	free(st->type);
	memset(st, 0, sizeof(*st));
}

/* Reads path.  1 found, 0 absent, -1 unreadable or malformed (printed). */
static int state_read(const char *path, mirror_state *st)
{
	memset(st, 0, sizeof(*st));
	FILE *f = fopen(path, "r");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "pemba: cannot read %s: %s\n", path,
		        strerror(errno));
		return -1;
	}
	char line[8192];
	int fields = 0;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strcmp(line, "pemba-mirror-state 1") == 0) {
			fields |= 1;
		} else if (strcmp(line, "phase watch") == 0) {
			st->watching = true;
			fields |= 2;
		} else if (strcmp(line, "phase snapshot") == 0) {
			st->watching = false;
			fields |= 2;
		} else if (strncmp(line, "revision ", 9) == 0 && line[9]) {
			free(st->token);
			st->token = xstrdup(line + 9);
			fields |= 4;
		} else if (strncmp(line, "type ", 5) == 0 && line[5]) {
			free(st->type);
			st->type = xstrdup(line + 5);
		} else if (strncmp(line, "cursor", 6) == 0) {
			free(st->cursor);
			st->cursor = xstrdup(line[6] ? line + 7 : "");
			fields |= 8;
		}
	}
	fclose(f);
	if (fields != 15) {
		fprintf(stderr,
		        "pemba: %s is not a pemba mirror state file (remove it "
		        "to start a new mirror)\n",
		        path);
		state_free(st);
		return -1;
	}
	return 1;
}

/* Replaces the state file atomically (temp file, fsync, rename).  0, or
 * -1 after printing. */
static int state_write(const char *path, const mirror_state *st)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb,
	              "pemba-mirror-state 1\nphase %s\nrevision %s\ncursor "
	              "%s\n",
	              st->watching ? "watch" : "snapshot", st->token,
	              st->cursor ? st->cursor : "");
	if (!st->watching && st->type)
		strbuf_printf(&sb, "type %s\n", st->type);
	int rc = cli_replace_file(path, sb.data);
	strbuf_free(&sb);
	return rc;
}

/* ===================================================================== */
/* Calls                                                                 */
/* ===================================================================== */

/* The revision of a token, 0 when it is not pemba's (a SpiceDB token:
 * lag in revisions is then not shown). */
static pemba_revision token_revision(const char *token)
{
	zedtoken_info info;
	pemba_error err = {0};
	if (!token || zedtoken_parse(token, strlen(token), &info, &err) != 0)
		return 0;
	return info.revision;
}

/* Set once the source answered ReadSchemaAt with UNIMPLEMENTED (it is not
 * pemba, e.g. SpiceDB): from then on its schema is read at its head. */
static bool source_schema_at_head;

/* The source schema at exactly `token` (NULL: the head); *read_at set to
 * the answer's token when asked.  A source without pemba's ReadSchemaAt
 * is read at its head instead, after a one-time warning.  Heap text, or
 * NULL after printing. */
static char *read_schema(client_conn *src, const char *token, char **read_at)
{
	Authzed__Api__V1__ReadSchemaResponse *r = NULL;
	if (token && !source_schema_at_head) {
		Authzed__Api__V1__ZedToken zt =
		    AUTHZED__API__V1__ZED_TOKEN__INIT;
		zt.token = (char *)token;
		Authzed__Api__V1__Consistency c =
		    AUTHZED__API__V1__CONSISTENCY__INIT;
		c.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
		c.at_exact_snapshot = &zt;
		Pemba__V1__ReadSchemaAtRequest req =
		    PEMBA__V1__READ_SCHEMA_AT_REQUEST__INIT;
		req.consistency = &c;
		src->quiet_unimplemented = true;
		r = (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
		    src, "/pemba.v1.MigrationService/ReadSchemaAt", &req.base,
		    &authzed__api__v1__read_schema_response__descriptor);
		src->quiet_unimplemented = false;
		if (!r && src->last_status != GRPC_STATUS_UNIMPLEMENTED)
			return NULL;
		if (!r) {
			source_schema_at_head = true;
			fprintf(
			    stderr,
			    "pemba: mirror: warning: the source has no "
			    "ReadSchemaAt (it is not pemba): its schema "
			    "changes are applied as of when they are read "
			    "(its schema at the head), not at their place in "
			    "the stream\n");
		}
	}
	if (!r) {
		Authzed__Api__V1__ReadSchemaRequest req =
		    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
		r = (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
		    src, "/authzed.api.v1.SchemaService/ReadSchema", &req.base,
		    &authzed__api__v1__read_schema_response__descriptor);
	}
	if (!r)
		return NULL;
	if (read_at) {
		if (!r->read_at || !r->read_at->token ||
		    !r->read_at->token[0]) {
			protobuf_c_message_free_unpacked(&r->base, NULL);
			client_error("INTERNAL", "the source's ReadSchema "
			                         "answer has no read_at token");
			return NULL;
		}
		*read_at = xstrdup(r->read_at->token);
	}
	char *text = xstrdup(r->schema_text ? r->schema_text : "");
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return text;
}

/* Whether the source revision `applied` is at or after `head` (both
 * ZedTokens of the source).  pemba tokens compare by revision; SpiceDB
 * tokens by their revision text (spicedb_token.h: numbers, or PostgreSQL
 * snapshots that see every transaction the other sees); tokens that
 * cannot be compared only when they are equal, which is sound (an equal
 * token is the same revision) but may wait for the next change to be
 * seen. */
static bool source_reached(const char *applied, const char *head)
{
	if (!applied || !head)
		return false;
	if (strcmp(applied, head) == 0)
		return true;
	pemba_revision a = token_revision(applied), h = token_revision(head);
	if (a && h)
		return a >= h;
	char ra[1024], rh[1024];
	int cmp;
	if (spicedb_token_revision(applied, ra, sizeof(ra)) == 0 &&
	    spicedb_token_revision(head, rh, sizeof(rh)) == 0 &&
	    spicedb_revision_compare(ra, rh, &cmp) == 0)
		return cmp >= 0;
	return false;
}

/* WriteSchema on the target without printing: the gRPC code, *message
 * (heap, or NULL) its message. */
static int try_write_schema(client_conn *dst, const char *text, char **message)
{
	Authzed__Api__V1__WriteSchemaRequest req =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	req.schema = (char *)text;
	size_t len = protobuf_c_message_get_packed_size(&req.base);
	uint8_t *buf = xmalloc(len ? len : 1), *resp = NULL;
	size_t resp_len = 0;
	protobuf_c_message_pack(&req.base, buf);
	grpc_status st = {0};
	int code = grpc_client_unary(
	    dst->grpc, "/authzed.api.v1.SchemaService/WriteSchema",
	    dst->metadata, dst->metadata_count, 0, buf, len, &resp, &resp_len,
	    &st);
	free(buf);
	free(resp);
	*message = st.message;
	st.message = NULL;
	grpc_status_clear(&st);
	return code;
}

static int write_schema(client_conn *dst, const char *text)
{
	Authzed__Api__V1__WriteSchemaRequest req =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	req.schema = (char *)text;
	ProtobufCMessage *r = client_unary(
	    dst, "/authzed.api.v1.SchemaService/WriteSchema", &req.base,
	    &authzed__api__v1__write_schema_response__descriptor);
	if (!r)
		return -1;
	protobuf_c_message_free_unpacked(r, NULL);
	return 0;
}

/* Where the source revisions landed on the target (the target then honours
 * the source's ZedTokens; src/core/positions.c).  A target that is not
 * pemba ignores the write metadata and answers RecordSourcePosition with
 * UNIMPLEMENTED: recording is then off, said once. */
typedef struct recorder {
	client_conn *dst;
	bool off;
} recorder;

/* Records that the target's head holds source revision `token`.  0, or -1
 * after printing. */
static int record_position(recorder *r, const char *token)
{
	if (r->off)
		return 0;
	Pemba__V1__RecordSourcePositionRequest req =
	    PEMBA__V1__RECORD_SOURCE_POSITION_REQUEST__INIT;
	req.source_token = (char *)token;
	r->dst->quiet_unimplemented = true;
	ProtobufCMessage *resp = client_unary(
	    r->dst, "/pemba.v1.MigrationService/RecordSourcePosition",
	    &req.base, &pemba__v1__record_source_position_response__descriptor);
	r->dst->quiet_unimplemented = false;
	if (resp) {
		protobuf_c_message_free_unpacked(resp, NULL);
		return 0;
	}
	if (r->dst->last_status == GRPC_STATUS_UNIMPLEMENTED) {
		r->off = true;
		fprintf(stderr,
		        "pemba: mirror: the target does not record source "
		        "positions (not pemba): the source's ZedTokens will "
		        "not be honoured there\n");
		return 0;
	}
	return -1;
}

/* Applies updates[0..n) to the target in writes of at most
 * MIRROR_WRITE_LIMIT.  When position_token is set, the last write carries
 * it (transaction metadata "pemba.mirror": the target records in that
 * write's transaction that it holds the source revision; `exact` when the
 * write is the whole revision), or with nothing to write it is recorded
 * against the head.  0, or -1 after printing. */
static int apply_updates(recorder *rec,
                         Authzed__Api__V1__RelationshipUpdate **updates,
                         size_t n, const char *position_token, bool exact)
{
	if (n == 0)
		return position_token ? record_position(rec, position_token)
		                      : 0;
	for (size_t i = 0; i < n; i += MIRROR_WRITE_LIMIT) {
		size_t k =
		    n - i < MIRROR_WRITE_LIMIT ? n - i : MIRROR_WRITE_LIMIT;
		bool last = i + k == n;
		/* {"pemba.mirror": {"token": T, "exact": B}} */
		Google__Protobuf__Value tv = GOOGLE__PROTOBUF__VALUE__INIT;
		tv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		tv.string_value = (char *)position_token;
		Google__Protobuf__Value ev = GOOGLE__PROTOBUF__VALUE__INIT;
		ev.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
		ev.bool_value = exact && n <= MIRROR_WRITE_LIMIT;
		Google__Protobuf__Struct__FieldsEntry inner_f[2] = {
		    GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
		    GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT};
		inner_f[0].key = "token";
		inner_f[0].value = &tv;
		inner_f[1].key = "exact";
		inner_f[1].value = &ev;
		Google__Protobuf__Struct__FieldsEntry *inner_p[2] = {
		    &inner_f[0], &inner_f[1]};
		Google__Protobuf__Struct inner = GOOGLE__PROTOBUF__STRUCT__INIT;
		inner.n_fields = 2;
		inner.fields = inner_p;
		Google__Protobuf__Value iv = GOOGLE__PROTOBUF__VALUE__INIT;
		iv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
		iv.struct_value = &inner;
		Google__Protobuf__Struct__FieldsEntry outer_f =
		    GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
		outer_f.key = "pemba.mirror";
		outer_f.value = &iv;
		Google__Protobuf__Struct__FieldsEntry *outer_p = &outer_f;
		Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
		md.n_fields = 1;
		md.fields = &outer_p;

		grpc_status st = {0};
		int code = client_write_updates_md(
		    rec->dst, updates + i, k,
		    last && position_token && !rec->off ? &md : NULL, &st);
		if (code != GRPC_STATUS_OK) {
			client_error(
			    grpc_status_name(code), "writing to the target: %s",
			    st.message && *st.message ? st.message
			                              : "(no message)");
			grpc_status_clear(&st);
			return -1;
		}
		grpc_status_clear(&st);
	}
	return 0;
}

/* ===================================================================== */
/* Snapshot                                                              */
/* ===================================================================== */

typedef struct snapshot_ctx {
	recorder *rec;
	const char *state_path;
	mirror_state *st;
	uint64_t count;
	bool failed;
	cli_progress prog; /* progress.h: on a terminal only */
} snapshot_ctx;

static int on_export_page(void *ctx, const ProtobufCMessage *message)
{
	snapshot_ctx *s = ctx;
	const Authzed__Api__V1__ExportBulkRelationshipsResponse *page =
	    (const void *)message;
	size_t n = page->n_relationships;
	Authzed__Api__V1__RelationshipUpdate *u =
	    xcalloc(n ? n : 1, sizeof(*u));
	Authzed__Api__V1__RelationshipUpdate **p =
	    xcalloc(n ? n : 1, sizeof(*p));
	for (size_t i = 0; i < n; i++) {
		authzed__api__v1__relationship_update__init(&u[i]);
		u[i].operation =
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		u[i].relationship = page->relationships[i];
		p[i] = &u[i];
	}
	int rc = apply_updates(s->rec, p, n, NULL, false);
	free(u);
	free(p);
	if (rc != 0) {
		s->failed = true;
		return 1;
	}
	s->count += n;
	metrics_counter_add(&figures.relationships_copied, n);
	cli_progress_update(&s->prog, s->count);
	if (page->after_result_cursor && page->after_result_cursor->token) {
		free(s->st->cursor);
		s->st->cursor = xstrdup(page->after_result_cursor->token);
		if (state_write(s->state_path, s->st) != 0) {
			s->failed = true;
			return 1;
		}
	}
	return 0;
}

/* One ReadRelationships page: the responses, unpacked, kept until the
 * page is written. */
typedef struct read_page {
	Authzed__Api__V1__ReadRelationshipsResponse **items;
	size_t n, cap;
	bool malformed;
} read_page;

static int on_read_message(void *ctx, const uint8_t *data, size_t len)
{
	read_page *p = ctx;
	Authzed__Api__V1__ReadRelationshipsResponse *r =
	    authzed__api__v1__read_relationships_response__unpack(NULL, len,
	                                                          data);
	if (!r) {
		p->malformed = true;
		return 1;
	}
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 64;
		p->items = xrealloc(p->items, p->cap * sizeof(*p->items));
	}
	p->items[p->n++] = r;
	return 0;
}

static void read_page_clear(read_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		authzed__api__v1__read_relationships_response__free_unpacked(
		    p->items[i], NULL);
	p->n = 0;
}

/* The snapshot of a source without ExportBulkRelationships (SpiceDB's
 * npm build, for one): ReadRelationships definition by definition
 * (those of the target's schema, i.e. the source's at the snapshot, as
 * the first run wrote it), pages of MIRROR_WRITE_LIMIT at exactly the
 * snapshot revision, each page TOUCHed on the target and then the
 * definition and the cursor after it recorded in the state file, so a
 * rerun continues from there.  0 or CLIENT_EXIT_ERROR (printed). */
static int copy_snapshot_by_reading(client_conn *src, snapshot_ctx *s)
{
	mirror_state *st = s->st;
	char *schema = read_schema(s->rec->dst, NULL, NULL);
	if (!schema)
		return CLIENT_EXIT_ERROR;
	char **defs = client_schema_definitions(schema);
	free(schema);
	size_t i = 0;
	if (st->type) {
		while (defs[i] && strcmp(defs[i], st->type) != 0)
			i++;
		if (!defs[i]) {
			client_free_definitions(defs);
			fprintf(stderr,
			        "pemba: mirror: the target's schema has no "
			        "definition %s named by %s (remove it to start "
			        "over with an empty target)\n",
			        st->type, s->state_path);
			return CLIENT_EXIT_ERROR;
		}
	} else {
		free(st->cursor);
		st->cursor = xstrdup("");
	}
	read_page page = {0};
	int rc = 0;
	for (; defs[i] && rc == 0; i++) {
		if (!st->type || strcmp(st->type, defs[i]) != 0) {
			free(st->type);
			st->type = xstrdup(defs[i]);
			free(st->cursor);
			st->cursor = xstrdup("");
		}
		for (;;) {
			Authzed__Api__V1__ZedToken zt =
			    AUTHZED__API__V1__ZED_TOKEN__INIT;
			zt.token = st->token;
			Authzed__Api__V1__Consistency c =
			    AUTHZED__API__V1__CONSISTENCY__INIT;
			c.requirement_case =
			    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
			c.at_exact_snapshot = &zt;
			Authzed__Api__V1__RelationshipFilter filter =
			    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
			filter.resource_type = defs[i];
			Authzed__Api__V1__Cursor cursor =
			    AUTHZED__API__V1__CURSOR__INIT;
			Authzed__Api__V1__ReadRelationshipsRequest req =
			    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
			req.consistency = &c;
			req.relationship_filter = &filter;
			req.optional_limit = MIRROR_WRITE_LIMIT;
			if (st->cursor[0]) {
				cursor.token = st->cursor;
				req.optional_cursor = &cursor;
			}
			size_t len =
			    protobuf_c_message_get_packed_size(&req.base);
			uint8_t *buf = xmalloc(len ? len : 1);
			protobuf_c_message_pack(&req.base, buf);
			grpc_status gs = {0};
			int code = grpc_client_server_streaming(
			    src->grpc,
			    "/authzed.api.v1.PermissionsService/"
			    "ReadRelationships",
			    src->metadata, src->metadata_count, 0, buf, len,
			    on_read_message, &page, &gs);
			free(buf);
			if (page.malformed)
				rc = client_error("INTERNAL",
				                  "malformed ReadRelationships"
				                  "Response from the source");
			else if (code != GRPC_STATUS_OK)
				rc = client_error(
				    grpc_status_name(code),
				    "reading %s relationships from the source: "
				    "%s",
				    defs[i],
				    gs.message && *gs.message ? gs.message
				                              : "(no message)");
			grpc_status_clear(&gs);
			if (rc != 0)
				break;
			size_t n = 0;
			Authzed__Api__V1__RelationshipUpdate *u =
			    xcalloc(page.n ? page.n : 1, sizeof(*u));
			Authzed__Api__V1__RelationshipUpdate **p =
			    xcalloc(page.n ? page.n : 1, sizeof(*p));
			for (size_t k = 0; k < page.n; k++) {
				if (!page.items[k]->relationship)
					continue;
				authzed__api__v1__relationship_update__init(
				    &u[n]);
				u[n].operation =
				    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
				u[n].relationship = page.items[k]->relationship;
				p[n] = &u[n];
				n++;
			}
			rc = apply_updates(s->rec, p, n, NULL, false) == 0
			         ? 0
			         : CLIENT_EXIT_ERROR;
			free(u);
			free(p);
			bool done = page.n < MIRROR_WRITE_LIMIT;
			if (rc == 0 && page.n) {
				Authzed__Api__V1__ReadRelationshipsResponse
				    *last = page.items[page.n - 1];
				if (last->after_result_cursor &&
				    last->after_result_cursor->token) {
					free(st->cursor);
					st->cursor = xstrdup(
					    last->after_result_cursor->token);
				}
			}
			s->count += n;
			metrics_counter_add(&figures.relationships_copied, n);
			cli_progress_update(&s->prog, s->count);
			read_page_clear(&page);
			if (rc == 0 && done) {
				/* The next definition starts afresh. */
				free(st->cursor);
				st->cursor = xstrdup("");
				if (defs[i + 1]) {
					free(st->type);
					st->type = xstrdup(defs[i + 1]);
				}
			}
			if (rc == 0 && state_write(s->state_path, st) != 0)
				rc = CLIENT_EXIT_ERROR;
			if (rc != 0 || done)
				break;
		}
	}
	read_page_clear(&page); /* after an error */
	free(page.items);
	client_free_definitions(defs);
	if (rc == 0) {
		free(st->type);
		st->type = NULL;
	}
	return rc;
}

/* Copies every relationship at the state's snapshot revision, from its
 * cursor on.  0 or CLIENT_EXIT_ERROR (printed). */
static int copy_snapshot(client_conn *src, recorder *rec,
                         const char *state_path, mirror_state *st)
{
	Authzed__Api__V1__ZedToken zt = AUTHZED__API__V1__ZED_TOKEN__INIT;
	zt.token = st->token;
	Authzed__Api__V1__Consistency c = AUTHZED__API__V1__CONSISTENCY__INIT;
	c.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
	c.at_exact_snapshot = &zt;
	Authzed__Api__V1__Cursor cursor = AUTHZED__API__V1__CURSOR__INIT;
	Authzed__Api__V1__ExportBulkRelationshipsRequest req =
	    AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	req.consistency = &c;
	req.optional_limit = MIRROR_WRITE_LIMIT;
	if (st->cursor && st->cursor[0]) {
		cursor.token = st->cursor;
		req.optional_cursor = &cursor;
	}
	snapshot_ctx s = {.rec = rec, .state_path = state_path, .st = st};
	cli_progress_begin(&s.prog, "mirror: copied", "relationships", 0);
	int rc = 0;
	if (!st->type) { /* not resuming a snapshot by ReadRelationships */
		src->quiet_unimplemented = true;
		rc = client_server_streaming(
		    src,
		    "/authzed.api.v1.PermissionsService/"
		    "ExportBulkRelationships",
		    &req.base,
		    &authzed__api__v1__export_bulk_relationships_response__descriptor,
		    0, on_export_page, &s);
		src->quiet_unimplemented = false;
	}
	if (st->type || (rc != 0 && !s.failed && s.count == 0 &&
	                 src->last_status == GRPC_STATUS_UNIMPLEMENTED))
		rc = copy_snapshot_by_reading(src, &s);
	if (s.prog.shown)
		cli_progress_end(&s.prog, s.count);
	if (rc != 0 || s.failed)
		return CLIENT_EXIT_ERROR;
	/* The target now holds the source as of the snapshot: the floor of
	 * the source tokens it honours. */
	if (record_position(rec, st->token) != 0)
		return CLIENT_EXIT_ERROR;
	fprintf(stderr, "pemba: mirror: snapshot copied (%llu relationships)\n",
	        (unsigned long long)s.count);
	return 0;
}

/* ===================================================================== */
/* Watch                                                                 */
/* ===================================================================== */

/* The Watch stream and the writes to the target run on two threads: a
 * reader (the stream's callback) queues each response, and the applier
 * (the command's thread) takes everything queued at once and applies
 * consecutive revisions as one WriteRelationships of at most
 * MIRROR_WRITE_LIMIT updates, a relationship named by several of them
 * keeping its last update (the final state is the one of applying them in
 * order).  So a source writing faster than one target round trip per
 * revision is followed in batches, not revision by revision, and the
 * state file is written once per batch.  A batch is atomic on the target:
 * a reader there sees whole source revisions (more than one at once).  A
 * schema change or a revision over the limit is applied on its own.  With
 * --until-caught-up the reader takes each checkpoint itself once everything
 * queued before it is applied, so it can end the stream at once. */
typedef struct queued {
	struct queued *next;
	Authzed__Api__V1__WatchResponse *r; /* owned (unpacked copy) */
} queued;

typedef struct watch_queue {
	pthread_mutex_t lock;
	pthread_cond_t changed; /* any field below changed */
	queued *head, **tail;
	size_t count;             /* responses queued */
	uint64_t pushed, applied; /* responses queued / applied, ever */
	bool ended;               /* the stream returned */
	bool stop;                /* the applier failed: end the stream */
} watch_queue;

#define MIRROR_QUEUE_MAX 4096 /* responses; the reader waits beyond */

typedef struct follow_ctx {
	client_conn *src;       /* the Watch stream (reader thread) */
	client_conn *src_unary; /* reads beside the Watch stream */
	client_conn *dst;
	recorder *rec;
	struct timespec last_record; /* checkpoint positions, at most 1/s */
	const char *state_path;
	mirror_state *st;
	bool until_caught_up;
	bool caught_up;
	bool failed;
	int stream_rc;      /* the reader's result: 0, or -1 (printed) */
	char *reader_token; /* heap: the last token the reader received */
	watch_queue q;
	/* the source's head, last read */
	char *head_token;          /* heap, NULL before the first read */
	struct timespec head_read; /* when */
	/* sources without ReadSchemaAt (source_schema_at_head) */
	char *target_schema; /* heap: what was last written to the target */
	bool schema_synced;  /* the head read found the target's schema
	                        equal to the source's */
	/* lag and rate */
	struct timespec last_change, last_report, start;
	uint64_t revisions, updates; /* applied since start */
} follow_ctx;

static double seconds_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) +
	       (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Writes `text`, the source's schema at its head, to the target unless
 * it was the last written.  For sources without ReadSchemaAt, whose Watch
 * may not mark schema changes (SpiceDB's does not): a refusal (a removed
 * relation whose relationships the target still has, before the deletes
 * arrive) is not an error here: the schema is written again at the next
 * head read.  Sets f->schema_synced. */
static void sync_schema(follow_ctx *f, const char *text)
{
	f->schema_synced =
	    f->target_schema && strcmp(f->target_schema, text) == 0;
	if (f->schema_synced)
		return;
	char *message = NULL;
	int code = try_write_schema(f->dst, text, &message);
	if (code == GRPC_STATUS_OK) {
		if (f->target_schema) /* not the first, a change */
			fprintf(stderr, "pemba: mirror: wrote the source's "
			                "current schema to the target\n");
		free(f->target_schema);
		f->target_schema = xstrdup(text);
		f->schema_synced = true;
	} else {
		fprintf(stderr,
		        "pemba: mirror: the target refused the source's "
		        "current schema for now (%s: %s); trying again "
		        "later\n",
		        grpc_status_name(code), message ? message : "");
	}
	free(message);
}

/* Reads the source's head (its ReadSchema's read_at) into f->head_token;
 * for a source without ReadSchemaAt also brings the target's schema to
 * the source's current one.  0 or -1 (printed). */
static int read_head(follow_ctx *f)
{
	char *token = NULL;
	char *text = read_schema(f->src_unary, NULL, &token);
	if (!text)
		return -1;
	free(f->head_token);
	f->head_token = token;
	clock_gettime(CLOCK_MONOTONIC, &f->head_read);
	if (source_schema_at_head)
		sync_schema(f, text);
	else
		f->schema_synced = true;
	free(text);
	return 0;
}

/* Caught up: the last applied (or checkpointed) source revision is at or
 * after the head read last, and the target has the source's schema. */
static bool caught_up(const follow_ctx *f)
{
	return f->schema_synced && source_reached(f->st->token, f->head_token);
}

static void report(follow_ctx *f, const char *at, bool force)
{
	pemba_revision a = token_revision(at),
	               h = token_revision(f->head_token);
	metrics_gauge_set(&figures.lag_revisions,
	                  a && h ? (h > a ? (int64_t)(h - a) : 0) : -1);
	metrics_gauge_set(&figures.caught_up,
	                  source_reached(at, f->head_token) ? 1 : 0);
	if (!force && seconds_since(&f->last_report) < 2.0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &f->last_report);
	double secs = seconds_since(&f->start);
	char lag[128];
	if (a && h)
		snprintf(lag, sizeof(lag), "%lld revisions",
		         h > a ? (long long)(h - a) : 0LL);
	else /* SpiceDB's revisions are not consecutive numbers */
		snprintf(lag, sizeof(lag), "%s",
		         source_reached(at, f->head_token)
		             ? "none (at the source's head as last read)"
		             : "behind the source's head as last read");
	fprintf(stderr,
	        "pemba: mirror: lag %s, %.1fs since the last "
	        "applied change; %.1f revisions/s, %.1f updates/s\n",
	        lag, f->revisions ? seconds_since(&f->last_change) : 0.0,
	        secs > 0 ? (double)f->revisions / secs : 0.0,
	        secs > 0 ? (double)f->updates / secs : 0.0);
}

/* One source revision: deletes (when the schema changed: before the new
 * schema, which may drop what they remove), the schema, then touches;
 * otherwise all updates in one write.  0 or -1 (printed). */
static int apply_revision(follow_ctx *f,
                          const Authzed__Api__V1__WatchResponse *r,
                          const char *token)
{
	size_t n = r->n_updates;
	Authzed__Api__V1__RelationshipUpdate **u =
	    xcalloc(n ? n : 1, sizeof(*u));
	size_t nu = 0;
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		Authzed__Api__V1__RelationshipUpdate *x = r->updates[i];
		if (!x->relationship)
			continue;
		if (x->operation ==
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE)
			x->operation =
			    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		if (!r->schema_updated ||
		    x->operation ==
		        AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE)
			u[nu++] = x;
	}
	rc = apply_updates(f->rec, u, nu, r->schema_updated ? NULL : token,
	                   true);
	if (rc == 0 && r->schema_updated) {
		char *text = read_schema(f->src_unary, token, NULL);
		rc = text ? write_schema(f->dst, text) : -1;
		free(text);
		nu = 0;
		for (size_t i = 0; rc == 0 && i < n; i++) {
			Authzed__Api__V1__RelationshipUpdate *x = r->updates[i];
			if (x->relationship &&
			    x->operation !=
			        AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE)
				u[nu++] = x;
		}
		/* Three writes on the target: never exact. */
		if (rc == 0)
			rc = apply_updates(f->rec, u, nu, token, false);
	}
	free(u);
	if (rc == 0) {
		f->revisions++;
		f->updates += n;
		note_applied(1, n);
		clock_gettime(CLOCK_MONOTONIC, &f->last_change);
	}
	return rc;
}

/* apply_revision; when the target refuses it and the source has no
 * ReadSchemaAt (its schema changes are not in the stream), the source's
 * current schema may be what the revision needs (a relation added since
 * the target's schema was written): write it and try once more.  0 or -1
 * (printed). */
static int apply_revision_or_retry(follow_ctx *f,
                                   Authzed__Api__V1__WatchResponse *r,
                                   const char *token)
{
	if (apply_revision(f, r, token) == 0)
		return 0;
	if (!source_schema_at_head)
		return -1;
	fprintf(stderr, "pemba: mirror: reading the source's current schema "
	                "and retrying the revision once\n");
	if (read_head(f) != 0 || !f->schema_synced)
		return -1;
	return apply_revision(f, r, token);
}

/* The changes_through token of a response, or NULL. */
static const char *response_token(const Authzed__Api__V1__WatchResponse *r)
{
	return r->changes_through && r->changes_through->token &&
	               r->changes_through->token[0]
	           ? r->changes_through->token
	           : NULL;
}

static bool is_bare_checkpoint(const Authzed__Api__V1__WatchResponse *r)
{
	return r->is_checkpoint && !r->n_updates && !r->schema_updated;
}

/* Records `token` as applied in the state file when it moved.  0 or -1. */
static int advance_state(follow_ctx *f, const char *token)
{
	if (strcmp(token, f->st->token) == 0)
		return 0;
	free(f->st->token);
	f->st->token = xstrdup(token);
	return state_write(f->state_path, f->st);
}

/* A checkpoint at `token`, everything before it applied: the state, the
 * head for the lag report and, with --until-caught-up, the decision.
 * Returns 1 when the stream should end (caught up or failed). */
static int on_checkpoint(follow_ctx *f, const char *token)
{
	/* The source moved without changes to apply (a no-op write, a
	 * read's revision): the target holds it too.  Recorded about once a
	 * second, and when caught up (below). */
	if (strcmp(token, f->st->token) != 0 &&
	    seconds_since(&f->last_record) >= 1.0) {
		if (record_position(f->rec, token) != 0) {
			f->failed = true;
			return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &f->last_record);
	}
	if (advance_state(f, token) != 0) {
		f->failed = true;
		return 1;
	}
	/* Caught up when a checkpoint reaches the source's head read at that
	 * moment: the head is re-read before deciding, and otherwise every
	 * 0.2 s (--until-caught-up) or 2 s (lag). */
	double age = seconds_since(&f->head_read);
	if ((!f->head_token || age >= 2.0 ||
	     (f->until_caught_up &&
	      (source_reached(token, f->head_token) || age >= 0.2))) &&
	    read_head(f) != 0) {
		f->failed = true;
		return 1;
	}
	if (f->until_caught_up && caught_up(f)) {
		if (record_position(f->rec, token) != 0) {
			f->failed = true;
			return 1;
		}
		f->caught_up = true;
		report(f, token, true);
		fprintf(stderr, "pemba: mirror: caught up at %s\n", token);
		return 1;
	}
	report(f, token, false);
	return 0;
}

/* The reader's callback: queues each response (unpacked).  With
 * --until-caught-up a checkpoint waits until the applier has applied
 * everything queued and is then handled here. */
static int on_watch_message(void *ctx, const uint8_t *data, size_t len)
{
	follow_ctx *f = ctx;
	watch_queue *q = &f->q;
	Authzed__Api__V1__WatchResponse *r =
	    authzed__api__v1__watch_response__unpack(NULL, len, data);
	const char *token = r ? response_token(r) : NULL;
	if (!token) {
		client_error("INTERNAL",
		             r ? "a Watch response without changes_through"
		               : "malformed WatchResponse from the source");
		if (r)
			authzed__api__v1__watch_response__free_unpacked(r,
			                                                NULL);
		f->failed = true;
		return 1;
	}
	free(f->reader_token);
	f->reader_token = xstrdup(token);
	pthread_mutex_lock(&q->lock);
	if (f->until_caught_up && is_bare_checkpoint(r)) {
		while (q->applied < q->pushed && !q->stop)
			pthread_cond_wait(&q->changed, &q->lock);
		bool stop = q->stop;
		pthread_mutex_unlock(&q->lock);
		/* The applier is idle until the next push. */
		int end = stop ? 1 : on_checkpoint(f, f->reader_token);
		authzed__api__v1__watch_response__free_unpacked(r, NULL);
		return end;
	}
	while (q->count >= MIRROR_QUEUE_MAX && !q->stop)
		pthread_cond_wait(&q->changed, &q->lock);
	if (q->stop) {
		pthread_mutex_unlock(&q->lock);
		authzed__api__v1__watch_response__free_unpacked(r, NULL);
		return 1;
	}
	queued *item = xmalloc(sizeof(*item));
	item->next = NULL;
	item->r = r;
	*q->tail = item;
	q->tail = &item->next;
	q->count++;
	q->pushed++;
	pthread_cond_broadcast(&q->changed);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

enum { WATCH_FAILED = -1, WATCH_ENDED = 0, WATCH_SLICE_ENDED = 1 };

/* One Watch call on the source from the last token the reader received.
 * timeout_ms > 0 ends it after that long (a slice: SpiceDB's Watch sends
 * nothing while the source is idle, so --until-caught-up must look at the
 * head between slices).  WATCH_FAILED (printed, or the applier failed),
 * WATCH_ENDED (the source ended it, or caught up) or WATCH_SLICE_ENDED. */
static int watch_slice(follow_ctx *f, int timeout_ms)
{
	Authzed__Api__V1__WatchKind kinds[3] = {
	    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES,
	    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_SCHEMA_UPDATES,
	    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_CHECKPOINTS};
	Authzed__Api__V1__ZedToken start = AUTHZED__API__V1__ZED_TOKEN__INIT;
	start.token = f->reader_token;
	Authzed__Api__V1__WatchRequest req =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	req.optional_update_kinds = kinds;
	req.n_optional_update_kinds = 3;
	req.optional_start_cursor = &start;
	size_t len = protobuf_c_message_get_packed_size(&req.base);
	uint8_t *buf = xmalloc(len ? len : 1);
	protobuf_c_message_pack(&req.base, buf);
	grpc_status st = {0};
	int code = grpc_client_server_streaming(
	    f->src->grpc, "/authzed.api.v1.WatchService/Watch",
	    f->src->metadata, f->src->metadata_count, timeout_ms, buf, len,
	    on_watch_message, f, &st);
	free(buf);
	pthread_mutex_lock(&f->q.lock);
	bool stop = f->q.stop;
	pthread_mutex_unlock(&f->q.lock);
	int result;
	if (f->failed || stop)
		result = WATCH_FAILED;
	else if (f->caught_up || code == GRPC_STATUS_OK)
		result = WATCH_ENDED;
	else if (timeout_ms > 0 && code == GRPC_STATUS_DEADLINE_EXCEEDED)
		result = WATCH_SLICE_ENDED;
	else {
		client_error(grpc_status_name(code), "%s",
		             st.message && *st.message ? st.message
		                                       : "(no message)");
		result = WATCH_FAILED;
	}
	grpc_status_clear(&st);
	return result;
}

/* The reader thread: Watch calls (slices of 1 s with --until-caught-up,
 * between which it waits for the applier and compares the head) until the
 * stream ends, an error, or caught up. */
static void *reader_main(void *arg)
{
	follow_ctx *f = arg;
	watch_queue *q = &f->q;
	int rc = 0;
	for (;;) {
		int r = watch_slice(f, f->until_caught_up ? 1000 : 0);
		if (r != WATCH_SLICE_ENDED) {
			rc = r == WATCH_FAILED ? -1 : 0;
			break;
		}
		/* A slice ended: an idle source may be reached already,
		 * once everything queued is applied (the applier is then
		 * idle until the next push, so the connections are ours). */
		pthread_mutex_lock(&q->lock);
		while (q->applied < q->pushed && !q->stop)
			pthread_cond_wait(&q->changed, &q->lock);
		bool stop = q->stop;
		pthread_mutex_unlock(&q->lock);
		if (stop || read_head(f) != 0) {
			rc = -1;
			break;
		}
		if (caught_up(f)) {
			if (record_position(f->rec, f->st->token) != 0) {
				rc = -1;
				break;
			}
			f->caught_up = true;
			report(f, f->st->token, true);
			fprintf(stderr, "pemba: mirror: caught up at %s\n",
			        f->st->token);
			break;
		}
	}
	pthread_mutex_lock(&q->lock);
	f->stream_rc = rc;
	q->ended = true;
	pthread_cond_broadcast(&q->changed);
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* Updates collected from consecutive revisions for one write. */
typedef struct batch {
	Authzed__Api__V1__RelationshipUpdate **u;
	size_t n, cap;
	const char *last_token;      /* of the last revision in it (its response
	                                lives until the batch is flushed) */
	uint64_t revisions, updates; /* source revisions and updates in it */
} batch;

/* A relationship's identity (not its caveat or expiration), fields
 * separated by NULs.  Heap; *len set. */
static char *update_key(const Authzed__Api__V1__RelationshipUpdate *x,
                        size_t *len)
{
	const Authzed__Api__V1__Relationship *r = x->relationship;
	const char *sr = r->subject ? r->subject->optional_relation : NULL;
	if (sr && strcmp(sr, "...") == 0)
		sr = NULL;
	const char *f[6] = {
	    r->resource ? r->resource->object_type : NULL,
	    r->resource ? r->resource->object_id : NULL,
	    r->relation,
	    r->subject && r->subject->object ? r->subject->object->object_type
	                                     : NULL,
	    r->subject && r->subject->object ? r->subject->object->object_id
	                                     : NULL,
	    sr};
	size_t n = 0;
	for (int i = 0; i < 6; i++)
		n += (f[i] ? strlen(f[i]) : 0) + 1;
	char *k = xmalloc(n), *p = k;
	for (int i = 0; i < 6; i++) {
		size_t l = f[i] ? strlen(f[i]) : 0;
		memcpy(p, f[i] ? f[i] : "", l);
		p[l] = '\0';
		p += l + 1;
	}
	*len = n;
	return k;
}

/* Keeps the last update of each relationship named more than once (the
 * target refuses a write naming one twice), in order. */
static void batch_dedupe(batch *b)
{
	size_t cap = 16;
	while (cap < b->n * 2)
		cap *= 2;
	char **keys = xcalloc(cap, sizeof(*keys));
	size_t *lens = xcalloc(cap, sizeof(*lens));
	size_t *slot_of = xcalloc(cap, sizeof(*slot_of)); /* index + 1 */
	bool *dropped = xcalloc(b->n ? b->n : 1, sizeof(*dropped));
	bool any = false;
	for (size_t i = 0; i < b->n; i++) {
		size_t len;
		char *k = update_key(b->u[i], &len);
		size_t h = (size_t)hash_bytes(k, len, 0) & (cap - 1);
		while (keys[h] &&
		       (lens[h] != len || memcmp(keys[h], k, len) != 0))
			h = (h + 1) & (cap - 1);
		if (keys[h]) {
			dropped[slot_of[h] - 1] = true;
			any = true;
			free(k);
		} else {
			keys[h] = k;
			lens[h] = len;
		}
		slot_of[h] = i + 1;
	}
	if (any) {
		size_t m = 0;
		for (size_t i = 0; i < b->n; i++)
			if (!dropped[i])
				b->u[m++] = b->u[i];
		b->n = m;
	}
	for (size_t h = 0; h < cap; h++)
		free(keys[h]);
	free(keys);
	free(lens);
	free(slot_of);
	free(dropped);
}

/* Writes the batch to the target.  0 or -1 (printed). */
static int batch_flush(follow_ctx *f, batch *b)
{
	if (b->revisions == 0)
		return 0;
	batch_dedupe(b);
	/* After the write the target holds exactly the source at the last
	 * revision of the batch (it held the one before the first). */
	if (apply_updates(f->rec, b->u, b->n, b->last_token, true) != 0) {
		/* As apply_revision_or_retry: a source whose schema changes
		 * are not in the stream may have added what the batch needs. */
		if (!source_schema_at_head)
			return -1;
		fprintf(stderr, "pemba: mirror: reading the source's current "
		                "schema and retrying the write once\n");
		if (read_head(f) != 0 || !f->schema_synced ||
		    apply_updates(f->rec, b->u, b->n, b->last_token, true) != 0)
			return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &f->last_record);
	f->revisions += b->revisions;
	f->updates += b->updates;
	note_applied(b->revisions, b->updates);
	clock_gettime(CLOCK_MONOTONIC, &f->last_change);
	b->n = 0;
	b->revisions = b->updates = 0;
	return 0;
}

static void batch_add(batch *b, Authzed__Api__V1__WatchResponse *r)
{
	if (b->n + r->n_updates > b->cap) {
		b->cap = (b->n + r->n_updates) * 2;
		b->u = xrealloc(b->u, b->cap * sizeof(*b->u));
	}
	for (size_t i = 0; i < r->n_updates; i++) {
		Authzed__Api__V1__RelationshipUpdate *x = r->updates[i];
		if (!x->relationship)
			continue;
		if (x->operation ==
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE)
			x->operation =
			    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		b->u[b->n++] = x;
	}
	b->revisions++;
	b->updates += r->n_updates;
	b->last_token = response_token(r);
}

/* Applies the responses of `list` in order: revisions in batches, a
 * schema change or a revision over the limit alone; then the state file
 * and, at a checkpoint, the lag report.  0 or -1 (printed). */
static int apply_list(follow_ctx *f, queued *list, batch *b)
{
	const char *last = NULL, *checkpoint = NULL;
	for (queued *it = list; it; it = it->next) {
		Authzed__Api__V1__WatchResponse *r = it->r;
		const char *token = response_token(r);
		if (is_bare_checkpoint(r)) {
			last = checkpoint = token;
			continue;
		}
		if (r->schema_updated || r->n_updates > MIRROR_WRITE_LIMIT) {
			if (batch_flush(f, b) != 0 ||
			    apply_revision_or_retry(f, r, token) != 0)
				return -1;
		} else {
			if (b->n + r->n_updates > MIRROR_WRITE_LIMIT &&
			    batch_flush(f, b) != 0)
				return -1;
			batch_add(b, r);
		}
		last = token;
	}
	if (batch_flush(f, b) != 0)
		return -1;
	if (checkpoint && checkpoint == last)
		return on_checkpoint(f, checkpoint) != 0 ? -1 : 0;
	if (last && advance_state(f, last) != 0)
		return -1;
	report(f, f->st->token, false);
	return 0;
}

/* Follows the source: starts the reader and applies what it queues until
 * the stream ends or a write fails.  Sets f->failed on failure. */
static int follow(follow_ctx *f)
{
	/* Learn whether the source has ReadSchemaAt, and for one that has
	 * not, give the target the source's current schema. */
	char *probe = read_schema(f->src_unary, f->st->token, NULL);
	if (!probe)
		return CLIENT_EXIT_ERROR;
	free(probe);
	if (source_schema_at_head && read_head(f) != 0)
		return CLIENT_EXIT_ERROR;
	fprintf(stderr, "pemba: mirror: following changes after %s\n",
	        f->st->token);
	f->reader_token = xstrdup(f->st->token);
	watch_queue *q = &f->q;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->changed, NULL);
	q->tail = &q->head;
	pthread_t reader;
	if (pthread_create(&reader, NULL, reader_main, f) != 0) {
		client_error("INTERNAL", "cannot start a thread");
		return CLIENT_EXIT_ERROR;
	}
	batch b = {0};
	for (;;) {
		pthread_mutex_lock(&q->lock);
		while (!q->head && !q->ended)
			pthread_cond_wait(&q->changed, &q->lock);
		queued *list = q->head;
		size_t n = q->count;
		q->head = NULL;
		q->tail = &q->head;
		q->count = 0;
		pthread_cond_broadcast(&q->changed);
		pthread_mutex_unlock(&q->lock);
		if (!list)
			break; /* ended, nothing left */
		int rc = apply_list(f, list, &b);
		while (list) {
			queued *next = list->next;
			authzed__api__v1__watch_response__free_unpacked(list->r,
			                                                NULL);
			free(list);
			list = next;
		}
		pthread_mutex_lock(&q->lock);
		q->applied += n;
		if (rc != 0)
			q->stop = true;
		pthread_cond_broadcast(&q->changed);
		pthread_mutex_unlock(&q->lock);
		if (rc != 0) {
			f->failed = true;
			break;
		}
	}
	/* On failure the reader ends at its next response (a checkpoint
	 * comes at least every second). */
	pthread_join(reader, NULL);
	for (queued *it = q->head, *next; it; it = next) {
		next = it->next;
		authzed__api__v1__watch_response__free_unpacked(it->r, NULL);
		free(it);
	}
	free(b.u);
	pthread_cond_destroy(&q->changed);
	pthread_mutex_destroy(&q->lock);
	if (f->stream_rc != 0 || f->failed)
		return CLIENT_EXIT_ERROR;
	if (f->caught_up)
		return CLIENT_EXIT_OK;
	fprintf(stderr, "pemba: mirror: the source ended the Watch stream; "
	                "run again to continue\n");
	return CLIENT_EXIT_NO;
}

/* ===================================================================== */
/* The command                                                           */
/* ===================================================================== */

typedef struct mirror_flags {
	const char *from_endpoint, *from_token, *to_endpoint, *to_token;
	const char *from_ca_path, *to_ca_path;
	bool from_insecure, to_insecure;
	bool from_skip_verify_ca, to_skip_verify_ca;
	const char *state_file;
	const char *metrics_addr;
	bool until_caught_up;
} mirror_flags;

static int mirror_flag(void *ctx, int argc, char **argv, int *i)
{
	mirror_flags *m = ctx;
	static const char *const bools[] = {
	    "--until-caught-up", "--from-insecure", "--to-insecure",
	    "--from-skip-verify-ca", "--to-skip-verify-ca"};
	bool *bool_values[] = {&m->until_caught_up, &m->from_insecure,
	                       &m->to_insecure, &m->from_skip_verify_ca,
	                       &m->to_skip_verify_ca};
	for (size_t k = 0; k < sizeof(bools) / sizeof(bools[0]); k++)
		if (client_flag_bool(bools[k], argv, i, bool_values[k]))
			return 1; /* the parser steps past it */
	static const char *const names[] = {
	    "--from-endpoint", "--from-token",   "--to-endpoint", "--to-token",
	    "--state-file",    "--from-ca-path", "--to-ca-path",
	    "--metrics-addr"};
	const char **values[] = {
	    &m->from_endpoint, &m->from_token,   &m->to_endpoint, &m->to_token,
	    &m->state_file,    &m->from_ca_path, &m->to_ca_path,
	    &m->metrics_addr};
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		int r = client_flag_value(names[k], argc, argv, i, values[k]);
		if (r)
			return r;
	}
	return 0;
}

static int mirror_run(const mirror_flags *mf, const client_args *parsed);

int cmd_mirror(int argc, char **argv)
{
	char usage[8192];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba mirror [--until-caught-up] [--insecure] "
	    "--from-endpoint A\n"
	    "       [--from-token K] --to-endpoint B [--to-token K2] "
	    "--state-file F\n"
	    "       [--metrics-addr HOST:PORT]\n"
	    "\n"
	    "Makes server B a copy of server A and keeps it current.  The "
	    "first run (F does\n"
	    "not exist) copies A's schema and every relationship at one "
	    "revision (B should be\n"
	    "empty); then it follows A's Watch from that revision and applies "
	    "A's revisions\n"
	    "to B, in order, each in one WriteRelationships together with "
	    "those that arrived\n"
	    "meanwhile (TOUCH for TOUCH, DELETE for DELETE; a revision of more "
	    "than 1000\n"
	    "updates takes several writes and is then not atomic on B).  A "
	    "schema change is\n"
	    "applied at its place in the stream (A's schema at that revision, "
	    "read with\n"
	    "pemba's ReadSchemaAt).  F records the position after every "
	    "applied write: run\n"
	    "the same command again after a crash or kill and it continues "
	    "right after it.\n"
	    "stderr shows the lag (revisions and seconds) and the rate every "
	    "few seconds.\n"
	    "A or B may be SpiceDB.  From a SpiceDB A the snapshot is read "
	    "with\n"
	    "ReadRelationships when A lacks ExportBulkRelationships, and "
	    "schema changes are\n"
	    "applied as of when they are read (A's schema at its head, "
	    "checked every few\n"
	    "seconds), not at their place in the stream: a warning says so.\n"
	    "\n"
	    "  --from-endpoint A, --from-token K   the source (A)\n"
	    "  --to-endpoint B, --to-token K2      the target (B)\n"
	    "  --state-file F                      the mirror's position\n"
	    "  --until-caught-up                   exit 0 once B has applied "
	    "everything up to\n"
	    "                                      A's head at that moment "
	    "(cut-over)\n"
	    "  --metrics-addr HOST:PORT            serve Prometheus metrics "
	    "(copied, applied,\n"
	    "                                      lag) at /metrics there "
	    "(default: none)\n"
	    "The connection flags below (--insecure, --ca-path, ...) apply to "
	    "both sides;\n"
	    "per side: --from-insecure, --to-insecure, --from-ca-path FILE, "
	    "--to-ca-path FILE,\n"
	    "--from-skip-verify-ca, --to-skip-verify-ca.\n"
	    "\nExit status: 0 caught up (--until-caught-up); 1 A ended the "
	    "Watch stream (run\n"
	    "again to continue); 2 on any error (usage, connection, a call "
	    "refused).\n\n%s",
	    client_connection_help);
	mirror_flags m = {0};
	client_args args = {.usage = usage,
	                    .max_positional = 0,
	                    .extra = mirror_flag,
	                    .accepts = CLIENT_NO_CONTEXT,
	                    .extra_ctx = &m};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	if (!m.from_endpoint || !*m.from_endpoint)
		return client_usage_error(usage, "--from-endpoint is required");
	if (!m.to_endpoint || !*m.to_endpoint)
		return client_usage_error(usage, "--to-endpoint is required");
	if (!m.state_file || !*m.state_file)
		return client_usage_error(usage, "--state-file is required");
	if (m.metrics_addr && !strchr(m.metrics_addr, ':'))
		return client_usage_error(usage, "--metrics-addr must be "
		                                 "HOST:PORT, such as "
		                                 "127.0.0.1:9091");
	server_http *http = NULL;
	if (m.metrics_addr) {
		char why[200];
		int port = 0;
		metrics_gauge_set(&figures.lag_revisions, -1);
		http = server_http_start(m.metrics_addr, render_figures, NULL,
		                         NULL, &port, why, sizeof(why));
		if (!http) {
			fprintf(stderr,
			        "pemba: mirror: --metrics-addr %s: cannot "
			        "listen: %s\n",
			        m.metrics_addr, why);
			return CLIENT_EXIT_ERROR;
		}
		fprintf(stderr,
		        "pemba: mirror: metrics at http://%.*s:%d/metrics\n",
		        (int)(strrchr(m.metrics_addr, ':') - m.metrics_addr),
		        m.metrics_addr, port);
	}
	status = mirror_run(&m, &args);
	server_http_stop(http);
	return status;
}

/* The mirror itself, once the flags are checked. */
static int mirror_run(const mirror_flags *mf, const client_args *parsed)
{
	const mirror_flags m = *mf;
	const client_args args = *parsed;
	int status;

	client_options from = args.options, to = args.options;
	from.endpoint = m.from_endpoint;
	from.token = m.from_token;
	to.endpoint = m.to_endpoint;
	to.token = m.to_token;
	from.insecure = from.insecure || m.from_insecure;
	to.insecure = to.insecure || m.to_insecure;
	from.skip_verify_ca = from.skip_verify_ca || m.from_skip_verify_ca;
	to.skip_verify_ca = to.skip_verify_ca || m.to_skip_verify_ca;
	if (m.from_ca_path)
		from.ca_path = m.from_ca_path;
	if (m.to_ca_path)
		to.ca_path = m.to_ca_path;

	mirror_state st;
	int found = state_read(m.state_file, &st);
	if (found < 0)
		return CLIENT_EXIT_ERROR;
	client_conn src, src_unary, dst;
	if (client_connect(&from, &src) != 0) {
		state_free(&st);
		return CLIENT_EXIT_ERROR;
	}
	if (client_connect(&from, &src_unary) != 0) {
		client_close(&src);
		state_free(&st);
		return CLIENT_EXIT_ERROR;
	}
	if (client_connect(&to, &dst) != 0) {
		client_close(&src_unary);
		client_close(&src);
		state_free(&st);
		return CLIENT_EXIT_ERROR;
	}
	status = CLIENT_EXIT_ERROR;
	recorder rec = {.dst = &dst};
	if (!found) {
		char *text = read_schema(&src, NULL, &st.token);
		if (!text)
			goto done;
		int rc = write_schema(&dst, text);
		free(text);
		if (rc != 0)
			goto done;
		st.cursor = xstrdup("");
		if (state_write(m.state_file, &st) != 0)
			goto done;
		fprintf(stderr,
		        "pemba: mirror: schema copied; snapshot at %s\n",
		        st.token);
	}
	if (!st.watching) {
		if (copy_snapshot(&src, &rec, m.state_file, &st) != 0)
			goto done;
		st.watching = true;
		free(st.cursor);
		st.cursor = xstrdup("");
		if (state_write(m.state_file, &st) != 0)
			goto done;
	}

	follow_ctx f = {.src = &src,
	                .src_unary = &src_unary,
	                .dst = &dst,
	                .rec = &rec,
	                .state_path = m.state_file,
	                .st = &st,
	                .until_caught_up = m.until_caught_up};
	clock_gettime(CLOCK_MONOTONIC, &f.start);
	f.last_report = f.last_change = f.last_record = f.start;
	status = follow(&f);
	free(f.head_token);
	free(f.target_schema);
	free(f.reader_token);
done:
	client_close(&dst);
	client_close(&src_unary);
	client_close(&src);
	state_free(&st);
	return status;
}
