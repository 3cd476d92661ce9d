/*
 * cmd_relationship.c -- `pemba relationship create|touch|delete|read`:
 * relationships over gRPC (PermissionsService.WriteRelationships and
 * ReadRelationships).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"

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

/* Parses the subject filter "TYPE[:ID][#RELATION]" into *out (strings in
 * a).  Returns 0 or -1 after printing why. */
static int parse_subject_filter(arena *a, const char *text,
                                Authzed__Api__V1__SubjectFilter *out)
{
	authzed__api__v1__subject_filter__init(out);
	const char *hash = strchr(text, '#');
	size_t object_len = hash ? (size_t)(hash - text) : strlen(text);
	const char *colon = memchr(text, ':', object_len);
	size_t type_len = colon ? (size_t)(colon - text) : object_len;
	if (type_len == 0 || (colon && colon + 1 == text + object_len) ||
	    (hash && !hash[1]) || strchr(text, '@')) {
		fprintf(stderr,
		        "pemba: malformed subject filter '%s': expected "
		        "TYPE[:ID][#RELATION]\n",
		        text);
		return -1;
	}
	out->subject_type = arena_strndup(a, text, type_len);
	if (colon)
		out->optional_subject_id =
		    arena_strndup(a, colon + 1, object_len - type_len - 1);
	if (hash) {
		out->optional_relation =
		    arena_alloc(a, sizeof(*out->optional_relation));
		authzed__api__v1__subject_filter__relation_filter__init(
		    out->optional_relation);
		/* "..." asks for subjects without a relation, as SpiceDB's
		 * filter does with an empty relation. */
		out->optional_relation->relation =
		    strcmp(hash + 1, "...") == 0 ? ""
		                                 : arena_strdup(a, hash + 1);
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

	arena *a = arena_create(0);
	Authzed__Api__V1__RelationshipFilter filter =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	Authzed__Api__V1__SubjectFilter subject_filter;
	if (args.npositional >= 1) {
		const char *res = args.positional[0];
		const char *colon = strchr(res, ':');
		if (res[0] == ':' || strchr(res, '#') || strchr(res, '@') ||
		    (colon && !colon[1])) {
			arena_destroy(a);
			return client_usage_error(
			    usage,
			    "malformed resource filter '%s': expected "
			    "TYPE or TYPE:ID",
			    res);
		}
		if (colon) {
			filter.resource_type =
			    arena_strndup(a, res, (size_t)(colon - res));
			filter.optional_resource_id =
			    arena_strdup(a, colon + 1);
		} else {
			filter.resource_type = arena_strdup(a, res);
		}
	}
	if (args.npositional >= 2)
		filter.optional_relation = arena_strdup(a, args.positional[1]);
	if (args.npositional >= 3) {
		if (parse_subject_filter(a, args.positional[2],
		                         &subject_filter) != 0) {
			arena_destroy(a);
			client_print_short_usage(usage);
			return CLIENT_EXIT_ERROR;
		}
		filter.optional_subject_filter = &subject_filter;
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
/* Dispatch                                                              */
/* ===================================================================== */

int cmd_relationship(int argc, char **argv)
{
	if (argc < 2) {
		fputs(relationship_usage_head, stderr);
		return CLIENT_EXIT_ERROR;
	}
	const char *sub = argv[1];
	if (client_is_help(sub) || strcmp(sub, "help") == 0) {
		fputs(relationship_usage_head, stdout);
		return CLIENT_EXIT_OK;
	}
	if (strcmp(sub, "create") == 0)
		return relationship_write(
		    argc - 1, argv + 1,
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE);
	if (strcmp(sub, "touch") == 0)
		return relationship_write(
		    argc - 1, argv + 1,
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH);
	if (strcmp(sub, "delete") == 0)
		return relationship_write(
		    argc - 1, argv + 1,
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE);
	if (strcmp(sub, "read") == 0)
		return relationship_read(argc - 1, argv + 1);
	fprintf(stderr, "pemba: unknown relationship subcommand '%s'\n\n", sub);
	fputs(relationship_usage_head, stderr);
	return CLIENT_EXIT_ERROR;
}
