/*
 * cmd_relationship.c -- `pemba relationship create|touch|delete|read|copy`
 * (import, export and bulk-delete are in cmd_relationship_bulk.c):
 * relationships over gRPC (PermissionsService.WriteRelationships and
 * ReadRelationships; `copy` is pemba.v1.MigrationService.CopyRelationships).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "pemba/v1/migration_service.pb-c.h"

#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"
#define MIGRATION_SERVICE "/pemba.v1.MigrationService/"

static const char relationship_usage_head[] =
    "usage: pemba relationship <subcommand> [options] ...\n"
    "\n"
    "Writes and reads relationships on a pemba (or SpiceDB) server.\n"
    "\n"
    "subcommands:\n"
    "  create RESOURCE RELATION SUBJECT   add a relationship; fails "
    "(ALREADY_EXISTS)\n"
    "                                     if it is there\n"
    "  touch RESOURCE RELATION SUBJECT    add or replace a relationship\n"
    "  delete RESOURCE RELATION SUBJECT   remove a relationship (no error "
    "if absent)\n"
    "  read [TYPE[:ID]] [RELATION] [SUBJECT]\n"
    "                                     print matching relationships, one "
    "per line\n"
    "  copy --from TYPE#RELATION --to TYPE#RELATION\n"
    "                                     backfill: TOUCH a copy of every "
    "relationship\n"
    "                                     of one relation under another "
    "(resumable)\n"
    "  import FILE|-                      write relationships from a "
    "file (one per line,\n"
    "                                     or a validation file's YAML)\n"
    "  export [TYPE[:ID]] [RELATION] [SUBJECT]\n"
    "                                     print every relationship in the "
    "syntax import\n"
    "                                     reads\n"
    "  bulk-delete TYPE[:ID] [RELATION] [SUBJECT]\n"
    "                                     delete every matching "
    "relationship, in rounds\n"
    "\n"
    "RESOURCE is TYPE:ID, SUBJECT TYPE:ID or TYPE:ID#RELATION; the three "
    "words may\n"
    "also be given as one string, document:readme#viewer@user:anne.\n"
    "Run 'pemba relationship <subcommand> --help' for its options.\n"
    "Exit status: 0 success, 2 on any error (usage, connection, server).\n";

/* ===================================================================== */
/* create / touch / delete                                               */
/* ===================================================================== */

static int
relationship_write(int argc, char **argv,
                   Authzed__Api__V1__RelationshipUpdate__Operation op)
{
	const char *name = argv[0];
	const char *what =
	    op == AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE
	        ? "Creates the relationship; ALREADY_EXISTS if it is there "
	          "already."
	    : op == AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH
	        ? "Creates the relationship, or replaces it (its caveat and "
	          "expiration)\nif it exists."
	        : "Deletes the relationship; succeeds when it does not "
	          "exist.";
	char usage[4096];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba relationship %s [options] RESOURCE RELATION "
	    "SUBJECT\n"
	    "       pemba relationship %s [options] "
	    "RESOURCE#RELATION@SUBJECT\n"
	    "\n"
	    "%s\n"
	    "RESOURCE is TYPE:ID; SUBJECT is TYPE:ID or "
	    "TYPE:ID#RELATION.  The one-string\n"
	    "form may add a caveat and an expiration:\n"
	    "  'document:1#viewer@user:anne[only_on:{\"day\":1}]'\n"
	    "  'document:1#viewer@user:anne[expiration:2030-01-01T00:00:00Z]'\n"
	    "Prints the ZedToken of the write (--json: "
	    "{\"writtenAt\":{\"token\":...}}).\n"
	    "Exit status: 0 success, 2 on any error.\n"
	    "\n%s",
	    name, name, what, client_connection_help);
	client_args args = {
	    .usage = usage, .min_positional = 1, .max_positional = 3};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	if (args.npositional == 2)
		return client_usage_error(
		    usage, "expected RESOURCE RELATION SUBJECT or one "
		           "RESOURCE#RELATION@SUBJECT string");

	arena *a = arena_create(0);
	Authzed__Api__V1__Relationship *rel =
	    client_parse_relationship(a, args.positional, args.npositional);
	if (!rel) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	Authzed__Api__V1__RelationshipUpdate update =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	update.operation = op;
	update.relationship = rel;
	Authzed__Api__V1__RelationshipUpdate *updates[] = {&update};
	Authzed__Api__V1__WriteRelationshipsRequest request =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	request.n_updates = 1;
	request.updates = updates;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	Authzed__Api__V1__WriteRelationshipsResponse *response =
	    (Authzed__Api__V1__WriteRelationshipsResponse *)client_unary(
	        &conn, PERMISSIONS_SERVICE "WriteRelationships", &request.base,
	        &authzed__api__v1__write_relationships_response__descriptor);
	client_close(&conn);
	arena_destroy(a);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json)
		client_print_json(&response->base);
	else
		printf("%s\n",
		       response->written_at ? response->written_at->token : "");
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* read                                                                  */
/* ===================================================================== */

typedef struct read_state {
	bool json;
	size_t count;
} read_state;

static int on_relationship(void *ctx, const ProtobufCMessage *message)
{
	read_state *state = ctx;
	const Authzed__Api__V1__ReadRelationshipsResponse *r =
	    (const Authzed__Api__V1__ReadRelationshipsResponse *)message;
	state->count++;
	if (state->json) {
		client_print_json(message);
	} else if (r->relationship) {
		char *line = client_format_relationship(r->relationship);
		puts(line);
		free(line);
	}
	return 0;
}

static int relationship_read(int argc, char **argv)
{
	char usage[6144];
	snprintf(usage, sizeof(usage),
	         "usage: pemba relationship read [options] [TYPE[:ID]] "
	         "[RELATION] [SUBJECT]\n"
	         "\n"
	         "Prints the relationships matching a filter "
	         "(PermissionsService.ReadRelationships),\n"
	         "one per line: document:readme#viewer@user:anne (with "
	         "[caveat:{...}] and\n"
	         "[expiration:...] when they have them).  The filter is a "
	         "resource type, optionally\n"
	         "with an id, then optionally a relation and a subject filter "
	         "TYPE[:ID][#RELATION]\n"
	         "(#... matches subjects without a relation).  With --json "
	         "each response is one\n"
	         "line: {\"readAt\":{\"token\":...},\"relationship\":{...},"
	         "\"afterResultCursor\":...}.\n"
	         "Exit status: 0 success (also when nothing matches), 2 on any "
	         "error.\n"
	         "\n%s%s",
	         client_connection_help, client_consistency_help);
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 0,
	                    .max_positional = 3};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	/* The server refuses an empty filter ("at least one field must be
	 * specified"); say here what to give, and where "everything" is. */
	bool any = false;
	for (int k = 0; k < args.npositional; k++)
		any = any || *args.positional[k];
	if (!any)
		return client_usage_error(
		    usage,
		    "relationship read needs a filter: at least a resource "
		    "type (`pemba relationship read document`), a relation or "
		    "a subject; to list every relationship use `pemba "
		    "relationship export`");

	arena *a = arena_create(0);
	Authzed__Api__V1__RelationshipFilter filter;
	if (client_parse_relationship_filter(a, usage, args.positional,
	                                     args.npositional, &filter) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	Authzed__Api__V1__ReadRelationshipsRequest request =
	    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
	request.consistency = client_consistency(a, &args.options);
	request.relationship_filter = &filter;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	read_state state = {.json = args.options.json};
	status = client_server_streaming(
	    &conn, PERMISSIONS_SERVICE "ReadRelationships", &request.base,
	    &authzed__api__v1__read_relationships_response__descriptor, 0,
	    on_relationship, &state);
	client_close(&conn);
	arena_destroy(a);
	return status;
}

/* ===================================================================== */
/* copy                                                                  */
/* ===================================================================== */

typedef struct copy_flags {
	const char *from, *to, *subject_type, *batch_size, *cursor;
	const char *max_batch_ms;
	/* --map-subject-type values, in order (PEMBA_COPY_MAX_MAPPINGS + 1
	 * kept: one too many is reported by the server's limit). */
	const char *maps[PEMBA_COPY_MAX_MAPPINGS + 1];
	size_t nmaps;
} copy_flags;

static int copy_flag(void *ctx, int argc, char **argv, int *i)
{
	copy_flags *f = ctx;
	const char *map = NULL;
	int r;
	if ((r = client_flag_value("--map-subject-type", argc, argv, i,
	                           &map)) != 0) {
		if (r > 0 && f->nmaps < PEMBA_COPY_MAX_MAPPINGS + 1)
			f->maps[f->nmaps++] = map;
		return r;
	}
	if ((r = client_flag_value("--from", argc, argv, i, &f->from)) ||
	    (r = client_flag_value("--to", argc, argv, i, &f->to)) ||
	    (r = client_flag_value("--subject-type", argc, argv, i,
	                           &f->subject_type)) ||
	    (r = client_flag_value("--batch-size", argc, argv, i,
	                           &f->batch_size)) ||
	    (r = client_flag_value("--max-batch-ms", argc, argv, i,
	                           &f->max_batch_ms)) ||
	    (r = client_flag_value("--cursor", argc, argv, i, &f->cursor)))
		return r;
	return 0;
}

/* Splits "TYPE#RELATION" (both non-empty, nothing else) into a. */
static int split_relation(arena *a, const char *text, char **type,
                          char **relation)
{
	const char *hash = text ? strchr(text, '#') : NULL;
	if (!hash || hash == text || !hash[1] || strchr(hash + 1, '#') ||
	    strpbrk(text, ":@ "))
		return -1;
	*type = arena_strndup(a, text, (size_t)(hash - text));
	*relation = arena_strdup(a, hash + 1);
	return 0;
}

/* Splits "TYPE" or "TYPE#RELATION" (no other punctuation) into a;
 * *relation is "" without one. */
static int split_subject(arena *a, const char *text, char **type,
                         char **relation)
{
	if (!text || !*text || strpbrk(text, ":@= *"))
		return -1;
	const char *hash = strchr(text, '#');
	if (!hash) {
		*type = arena_strdup(a, text);
		*relation = arena_strdup(a, "");
		return 0;
	}
	if (hash == text || !hash[1] || strchr(hash + 1, '#'))
		return -1;
	*type = arena_strndup(a, text, (size_t)(hash - text));
	*relation = arena_strdup(a, hash + 1);
	return 0;
}

/* Parses one --map-subject-type value, FROM=TO with FROM and TO each TYPE
 * or TYPE#RELATION, into m (strings in a).  -1 when malformed; the
 * schema checks (types exist and are allowed) are the server's. */
static int parse_subject_mapping(arena *a, const char *text,
                                 Pemba__V1__SubjectMapping *m)
{
	const char *eq = text ? strchr(text, '=') : NULL;
	if (!eq || strchr(eq + 1, '='))
		return -1;
	char *from = arena_strndup(a, text, (size_t)(eq - text));
	pemba__v1__subject_mapping__init(m);
	return split_subject(a, from, &m->from_type, &m->from_relation) ||
	               split_subject(a, eq + 1, &m->to_type, &m->to_relation)
	           ? -1
	           : 0;
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct copy_state {
	bool json;
	double start, last_print;
	uint64_t base; /* count before this call's first batch */
	bool have_base;
	uint64_t copied;
	char *cursor;   /* the newest cursor (heap) */
	char *snapshot; /* its ZedToken (heap) */
	bool done;
} copy_state;

static int on_progress(void *ctx, const ProtobufCMessage *message)
{
	copy_state *st = ctx;
	const Pemba__V1__CopyRelationshipsProgress *p =
	    (const Pemba__V1__CopyRelationshipsProgress *)message;
	double now = now_seconds();
	if (!st->have_base) {
		/* A resumed copy reports the count of earlier calls too; the
		 * rate is this call's.  The first batch's size is unknown
		 * here, so a resumed copy's rate starts at its second. */
		st->base = st->cursor ? p->copied : 0;
		if (st->cursor)
			st->start = now;
		st->have_base = true;
	}
	st->copied = p->copied;
	st->done = p->done;
	free(st->cursor);
	st->cursor = strdup(p->cursor ? p->cursor : "");
	if (p->snapshot && !st->snapshot)
		st->snapshot = strdup(p->snapshot->token);
	if (st->json)
		client_print_json(message);
	/* At most one line a second, and the last. */
	if (p->done || now - st->last_print >= 1.0) {
		double elapsed = now - st->start;
		fprintf(
		    stderr,
		    "pemba: copied %llu relationships (%.0f/s); resume with "
		    "--cursor %s\n",
		    (unsigned long long)p->copied,
		    elapsed > 0 ? (double)(p->copied - st->base) / elapsed
		                : 0.0,
		    st->cursor);
		st->last_print = now;
	}
	return 0;
}

static int relationship_copy(int argc, char **argv)
{
	char usage[8192];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba relationship copy [options] --from TYPE#RELATION "
	    "--to TYPE#RELATION\n"
	    "\n"
	    "The backfill step of migrating data from one relation to "
	    "another: TOUCHes a\n"
	    "copy of every relationship of the --from relation under the --to "
	    "relation (same\n"
	    "resource id, subject, caveat and context, expiration), with "
	    "pemba.v1.\n"
	    "MigrationService.CopyRelationships.\n"
	    "\n"
	    "Each batch is one write transaction that reads its source "
	    "relationships at\n"
	    "that moment and writes exactly those: a relationship deleted "
	    "from the source\n"
	    "before the copy reaches it is never written back.  Write and "
	    "delete both\n"
	    "relations meanwhile (dual writes): the copy then ends with the "
	    "target equal to\n"
	    "the source as of now.  Each batch is checked against the current "
	    "schema; a\n"
	    "subject type the target does not allow is refused before "
	    "anything is\n"
	    "written.  TOUCH makes re-running safe.\n"
	    "\n"
	    "--map-subject-type FROM=TO (repeatable) changes the subject's "
	    "type, as in\n"
	    "moving `viewer: user` to `new_viewer: user2`:\n"
	    "  --map-subject-type user=user2             user:ID[#REL] becomes "
	    "user2:ID[#REL]\n"
	    "  --map-subject-type group#member=team#member\n"
	    "                                            only group:ID#member, "
	    "to team:ID#member\n"
	    "Wildcards map too (user:* to user2:*).  The target relation must "
	    "allow each TO\n"
	    "type; --subject-type still names a type of the source.\n"
	    "\n"
	    "Progress goes to stderr, at most once a second:\n"
	    "  pemba: copied 12000 relationships (95000/s); resume with "
	    "--cursor c2:...\n"
	    "When the copy is done the final cursor is printed on stdout "
	    "(--json: every\n"
	    "progress message as JSON instead).  If the copy is interrupted, "
	    "run the same\n"
	    "command with --cursor and the last cursor printed.  A cursor "
	    "resumes only on\n"
	    "its own datastore while the revision the copy started at is "
	    "kept; otherwise\n"
	    "it is refused (OUT_OF_RANGE, \"cannot resume the copy from this "
	    "cursor\"): start\n"
	    "again without --cursor, which is safe.\n"
	    "Exit status: 0 when everything was copied, 2 on any error.\n"
	    "\n"
	    "options:\n"
	    "  --from TYPE#RELATION          the relation to copy from "
	    "(required)\n"
	    "  --to TYPE#RELATION            the relation to copy to "
	    "(required)\n"
	    "  --subject-type TYPE           copy only subjects of this type\n"
	    "  --map-subject-type FROM=TO    write subjects of type FROM as "
	    "type TO (each\n"
	    "                                TYPE or TYPE#RELATION; "
	    "repeatable)\n"
	    "  --batch-size N                relationships per write "
	    "transaction, 1-100000 (default 100000)\n"
	    "  --max-batch-ms MS             a batch also ends after MS "
	    "ms (0-600000; default 0:\n"
	    "                                by size only); the application's "
	    "writes wait for\n"
	    "                                the batch in progress, so this "
	    "bounds their wait\n"
	    "  --cursor CURSOR               resume an interrupted copy\n"
	    "\n%s",
	    client_connection_help);
	copy_flags flags = {0};
	client_args args = {.usage = usage,
	                    .min_positional = 0,
	                    .max_positional = 0,
	                    .extra = copy_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	if (!flags.from || !flags.to)
		return client_usage_error(usage,
		                          "--from and --to are required");
	arena *a = arena_create(0);
	Pemba__V1__CopyRelationshipsRequest request =
	    PEMBA__V1__COPY_RELATIONSHIPS_REQUEST__INIT;
	char *to_type;
	const char *bad = NULL;
	if (split_relation(a, flags.from, &request.resource_type,
	                   &request.from_relation) != 0)
		bad = "--from";
	else if (split_relation(a, flags.to, &to_type, &request.to_relation) !=
	         0)
		bad = "--to";
	if (bad) {
		arena_destroy(a);
		return client_usage_error(
		    usage, "malformed %s '%s': expected TYPE#RELATION", bad,
		    bad[2] == 'f' ? flags.from : flags.to);
	}
	request.to_resource_type = to_type;
	if (flags.subject_type)
		request.optional_subject_type = (char *)flags.subject_type;
	if (flags.batch_size) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(flags.batch_size, &end, 10);
		if (errno || *end || end == flags.batch_size || n < 1 ||
		    n > PEMBA_COPY_MAX_BATCH) {
			arena_destroy(a);
			return client_usage_error(
			    usage,
			    "--batch-size must be a number from 1 to 100000");
		}
		request.batch_size = (uint32_t)n;
	}
	if (flags.max_batch_ms) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(flags.max_batch_ms, &end, 10);
		if (errno || *end || end == flags.max_batch_ms ||
		    !isdigit((unsigned char)flags.max_batch_ms[0]) ||
		    n > PEMBA_COPY_MAX_BATCH_MS) {
			arena_destroy(a);
			return client_usage_error(
			    usage,
			    "--max-batch-ms must be a number from 0 to 600000");
		}
		request.max_batch_ms = (uint32_t)n;
	}
	if (flags.cursor)
		request.cursor = (char *)flags.cursor;
	Pemba__V1__SubjectMapping *maps =
	    arena_alloc(a, (flags.nmaps + 1) * sizeof(*maps));
	Pemba__V1__SubjectMapping **map_ptrs =
	    arena_alloc(a, (flags.nmaps + 1) * sizeof(*map_ptrs));
	for (size_t i = 0; i < flags.nmaps; i++) {
		if (parse_subject_mapping(a, flags.maps[i], &maps[i]) != 0) {
			arena_destroy(a);
			return client_usage_error(
			    usage,
			    "malformed --map-subject-type '%s': expected "
			    "FROM=TO, each TYPE or TYPE#RELATION",
			    flags.maps[i]);
		}
		map_ptrs[i] = &maps[i];
	}
	request.n_subject_mappings = flags.nmaps;
	request.subject_mappings = map_ptrs;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	copy_state st = {.json = args.options.json, .start = now_seconds()};
	st.last_print = st.start;
	/* The resumed cursor is the fallback to print if nothing arrives. */
	st.cursor = flags.cursor ? strdup(flags.cursor) : NULL;
	status = client_server_streaming(
	    &conn, MIGRATION_SERVICE "CopyRelationships", &request.base,
	    &pemba__v1__copy_relationships_progress__descriptor, 0, on_progress,
	    &st);
	client_close(&conn);
	if (status == CLIENT_EXIT_OK && !st.done)
		status = client_error("UNKNOWN", "the server ended the copy "
		                                 "before it was done");
	if (status == CLIENT_EXIT_OK) {
		double elapsed = now_seconds() - st.start;
		fprintf(stderr,
		        "pemba: done: %llu relationships copied from %s to %s "
		        "(snapshot %s) in %.1f s\n",
		        (unsigned long long)st.copied, flags.from, flags.to,
		        st.snapshot ? st.snapshot : "-", elapsed);
		if (!st.json)
			printf("%s\n", st.cursor ? st.cursor : "");
	} else if (st.cursor && st.cursor[0]) {
		fprintf(stderr,
		        "pemba: the copy stopped; to resume, run the same "
		        "command with --cursor %s\n",
		        st.cursor);
	}
	free(st.cursor);
	free(st.snapshot);
	arena_destroy(a);
	return status;
}

/* ===================================================================== */
/* Dispatch                                                              */
/* ===================================================================== */

/* create / touch / delete differ only in the operation. */
static int relationship_create(int argc, char **argv)
{
	return relationship_write(
	    argc, argv,
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE);
}

static int relationship_touch(int argc, char **argv)
{
	return relationship_write(
	    argc, argv,
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH);
}

static int relationship_delete(int argc, char **argv)
{
	return relationship_write(
	    argc, argv,
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE);
}

int cmd_relationship(int argc, char **argv)
{
	static const client_subcommand subs[] = {
	    {"create", relationship_create},
	    {"touch", relationship_touch},
	    {"delete", relationship_delete},
	    {"read", relationship_read},
	    {"copy", relationship_copy},
	    {"import", cmd_relationship_import},
	    {"export", cmd_relationship_export},
	    {"bulk-delete", cmd_relationship_bulk_delete},
	};
	return client_dispatch("relationship", relationship_usage_head, subs,
	                       sizeof(subs) / sizeof(subs[0]), argc, argv);
}
