/*
 * cmd_watch.c -- `pemba watch`: print relationship changes as they commit
 * (WatchService.Watch), until interrupted: from a ZedToken or from now,
 * filtered by object types or relationship filters, with checkpoints and
 * schema changes when asked for.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authzed/api/v1/watch_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"

#define WATCH_MAX_FILTERS 16

typedef struct watch_flags {
	const char *object_types;               /* "T1,T2" */
	const char *revision;                   /* ZedToken to start after */
	const char *filters[WATCH_MAX_FILTERS]; /* --filter, as given */
	size_t nfilters;
	bool checkpoints;
	bool schema_updates;
} watch_flags;

static int watch_flag(void *ctx, int argc, char **argv, int *i)
{
	watch_flags *flags = ctx;
	if (strcmp(argv[*i], "--checkpoints") == 0) {
		flags->checkpoints = true;
		(*i)++;
		return 1;
	}
	if (strcmp(argv[*i], "--schema-updates") == 0) {
		flags->schema_updates = true;
		(*i)++;
		return 1;
	}
	const char *filter = NULL;
	int r = client_flag_value("--filter", argc, argv, i, &filter);
	if (r > 0) {
		if (flags->nfilters == WATCH_MAX_FILTERS) {
			fprintf(stderr, "pemba: at most %d --filter options\n",
			        WATCH_MAX_FILTERS);
			return -1;
		}
		flags->filters[flags->nfilters++] = filter;
	}
	if (r)
		return r;
	r = client_flag_value("--object-types", argc, argv, i,
	                      &flags->object_types);
	if (r)
		return r;
	return client_flag_value("--revision", argc, argv, i, &flags->revision);
}

/* Parses a --filter "TYPE[:ID|:PREFIX*][#RELATION][@SUBJECT_TYPE[:ID]
 * [#RELATION]]" into *out (strings in a).  A subject relation "..."
 * matches subjects without a relation.  Returns 0 or -1 (the caller
 * reports the usage error). */
static int parse_watch_filter(arena *a, const char *text,
                              Authzed__Api__V1__RelationshipFilter *out)
{
	authzed__api__v1__relationship_filter__init(out);
	const char *at = strchr(text, '@');
	size_t res_len = at ? (size_t)(at - text) : strlen(text);
	const char *hash = memchr(text, '#', res_len);
	size_t obj_len = hash ? (size_t)(hash - text) : res_len;
	const char *colon = memchr(text, ':', obj_len);
	size_t type_len = colon ? (size_t)(colon - text) : obj_len;
	if (type_len == 0 || (colon && (size_t)(colon - text) + 1 == obj_len) ||
	    (hash && (size_t)(hash - text) + 1 == res_len))
		return -1;
	out->resource_type = arena_strndup(a, text, type_len);
	if (colon) {
		const char *id = colon + 1;
		size_t id_len = obj_len - type_len - 1;
		if (id[id_len - 1] == '*') {
			if (id_len == 1)
				return -1;
			out->optional_resource_id_prefix =
			    arena_strndup(a, id, id_len - 1);
		} else {
			out->optional_resource_id =
			    arena_strndup(a, id, id_len);
		}
	}
	if (hash)
		out->optional_relation =
		    arena_strndup(a, hash + 1, res_len - obj_len - 1);
	if (!at)
		return 0;
	Authzed__Api__V1__SubjectFilter *sf = arena_alloc(a, sizeof(*sf));
	if (client_parse_subject_filter(a, at + 1, sf) != 0)
		return -1;
	out->optional_subject_filter = sf;
	return 0;
}

static const char *operation_word(int op)
{
	switch (op) {
	case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE:
		return "CREATE";
	case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH:
		return "TOUCH";
	case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE:
		return "DELETE";
	default:
		return "UNKNOWN";
	}
}

static int on_watch_response(void *ctx, const ProtobufCMessage *message)
{
	const bool *json = ctx;
	const Authzed__Api__V1__WatchResponse *r =
	    (const Authzed__Api__V1__WatchResponse *)message;
	if (*json) {
		client_print_json(message);
	} else {
		for (size_t k = 0; k < r->n_updates; k++) {
			const Authzed__Api__V1__RelationshipUpdate *u =
			    r->updates[k];
			if (!u->relationship)
				continue;
			char *line =
			    client_format_relationship(u->relationship);
			printf("%s %s\n", operation_word(u->operation), line);
			free(line);
		}
		if (r->schema_updated)
			puts("SCHEMA updated");
		if (r->is_checkpoint)
			printf("CHECKPOINT %s\n",
			       r->changes_through && r->changes_through->token
			           ? r->changes_through->token
			           : "");
	}
	/* Lines must reach a pipe or file as they happen, not when a buffer
	 * fills: watch runs until it is killed. */
	fflush(stdout);
	return 0;
}

int cmd_watch(int argc, char **argv)
{
	char usage[10240];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba watch [options]\n"
	    "\n"
	    "Prints relationship changes as the server commits them "
	    "(WatchService.Watch), one\n"
	    "per line, until interrupted (Ctrl-C) or the server ends the "
	    "stream:\n"
	    "  TOUCH document:readme#viewer@user:anne\n"
	    "  DELETE document:readme#viewer@user:anne\n"
	    "TOUCH: a relationship was written -- created by a CREATE, a "
	    "TOUCH or an import,\n"
	    "or given a new caveat, caveat context or expiration by a "
	    "TOUCH -- shown as it is\n"
	    "now.  DELETE: a relationship was removed (a DELETE update or "
	    "by filter), shown\n"
	    "with the caveat and expiration it had.  pemba, like SpiceDB, "
	    "never reports\n"
	    "CREATE (printed as such if a server did).  Writes that change "
	    "nothing print\n"
	    "nothing: a TOUCH of an identical relationship, a DELETE of a "
	    "missing one, a\n"
	    "refused write; a relationship expiring prints nothing either.  "
	    "A write's changes\n"
	    "come together, its TOUCHes before its DELETEs.\n"
	    "With --json each response is one line, with the ZedToken "
	    "of the changes:\n"
	    "  {\"updates\":[...],\"changesThrough\":{\"token\":\"...\"}}\n"
	    "\n"
	    "With --schema-updates a revision that wrote the schema prints "
	    "`SCHEMA updated`\n"
	    "(after its changes, if any).  With --checkpoints every "
	    "revision is followed by\n"
	    "`CHECKPOINT TOKEN` (everything through TOKEN was printed; "
	    "restart from it with\n"
	    "--revision), also revisions with no matching change, and an "
	    "idle stream gets one\n"
	    "at the head about every second.  A resumed watch prints each "
	    "change once, in\n"
	    "revision order.\n"
	    "\n"
	    "options:\n"
	    "  --revision TOKEN      start after the revision of TOKEN "
	    "(a ZedToken: a write's\n"
	    "                        written_at, a CHECKPOINT or "
	    "changesThrough); it must be\n"
	    "                        inside the server's GC window. "
	    "Default: changes from now\n"
	    "  --object-types T1,T2  only changes to relationships whose "
	    "resource has one of\n"
	    "                        these types\n"
	    "  --filter F            only changes matching F (repeatable, "
	    "any may match; not\n"
	    "                        with --object-types): "
	    "TYPE[:ID][#RELATION][@SUBJECT], with\n"
	    "                        TYPE:PREFIX* for resource ids "
	    "starting with PREFIX and\n"
	    "                        SUBJECT = TYPE[:ID][#RELATION] "
	    "(#... : no relation)\n"
	    "  --checkpoints         print checkpoints (see above)\n"
	    "  --schema-updates      print schema changes (see above)\n"
	    "\n%s"
	    "\nExit status: 0 when the server ends the stream; 2 on any "
	    "error, including a\n"
	    "--revision older than the GC window (OUT_OF_RANGE, naming the "
	    "window), one from\n"
	    "the future or from another datastore.  Otherwise watch runs "
	    "until interrupted\n"
	    "(Ctrl-C: the usual death by signal, 130 in a shell).\n",
	    client_connection_help);
	watch_flags flags = {0};
	client_args args = {.usage = usage,
	                    .max_positional = 0,
	                    .extra = watch_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;

	arena *a = arena_create(0);
	Authzed__Api__V1__WatchRequest request =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	if (flags.object_types) {
		/* Split "T1,T2" into the repeated field; empty items are a
		 * usage error rather than a filter matching nothing. */
		size_t cap = 1;
		for (const char *p = flags.object_types; *p; p++)
			cap += *p == ',';
		request.optional_object_types =
		    arena_alloc(a, cap * sizeof(char *));
		const char *p = flags.object_types;
		for (;;) {
			const char *comma = strchr(p, ',');
			size_t n = comma ? (size_t)(comma - p) : strlen(p);
			if (n == 0) {
				arena_destroy(a);
				return client_usage_error(
				    usage, "empty type in --object-types '%s'",
				    flags.object_types);
			}
			request.optional_object_types
			    [request.n_optional_object_types++] =
			    arena_strndup(a, p, n);
			if (!comma)
				break;
			p = comma + 1;
		}
	}
	if (flags.nfilters && request.n_optional_object_types) {
		arena_destroy(a);
		return client_usage_error(
		    usage, "give --object-types or --filter, not both");
	}
	request.optional_relationship_filters =
	    arena_alloc(a, (flags.nfilters + 1) * sizeof(void *));
	for (size_t i = 0; i < flags.nfilters; i++) {
		Authzed__Api__V1__RelationshipFilter *f =
		    arena_alloc(a, sizeof(*f));
		if (parse_watch_filter(a, flags.filters[i], f) != 0) {
			arena_destroy(a);
			return client_usage_error(
			    usage,
			    "malformed --filter '%s': expected "
			    "TYPE[:ID|:PREFIX*][#RELATION][@TYPE[:ID]"
			    "[#RELATION]]",
			    flags.filters[i]);
		}
		request.optional_relationship_filters
		    [request.n_optional_relationship_filters++] = f;
	}
	/* Relationship updates always; the others when asked for. */
	Authzed__Api__V1__WatchKind kinds[3];
	size_t nkinds = 0;
	if (flags.checkpoints || flags.schema_updates) {
		kinds[nkinds++] =
		    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES;
		if (flags.checkpoints)
			kinds[nkinds++] =
			    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_CHECKPOINTS;
		if (flags.schema_updates)
			kinds[nkinds++] =
			    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_SCHEMA_UPDATES;
		request.optional_update_kinds = kinds;
		request.n_optional_update_kinds = nkinds;
	}
	Authzed__Api__V1__ZedToken start = AUTHZED__API__V1__ZED_TOKEN__INIT;
	if (flags.revision) {
		if (!*flags.revision) {
			arena_destroy(a);
			return client_usage_error(
			    usage, "--revision needs a ZedToken");
		}
		start.token = (char *)flags.revision;
		request.optional_start_cursor = &start;
	}

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	bool json = args.options.json;
	status = client_server_streaming(
	    &conn, "/authzed.api.v1.WatchService/Watch", &request.base,
	    &authzed__api__v1__watch_response__descriptor, 0, on_watch_response,
	    &json);
	client_close(&conn);
	arena_destroy(a);
	return status;
}
