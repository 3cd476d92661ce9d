/*
 * cmd_watch.c -- `pemba watch`: print relationship changes as they commit
 * (WatchService.Watch), until interrupted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authzed/api/v1/watch_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"

typedef struct watch_flags {
	const char *object_types; /* "T1,T2" */
	const char *revision;     /* ZedToken to start after */
} watch_flags;

static int watch_flag(void *ctx, int argc, char **argv, int *i)
{
	watch_flags *flags = ctx;
	int r = client_flag_value("--object-types", argc, argv, i,
	                          &flags->object_types);
	if (r)
		return r;
	return client_flag_value("--revision", argc, argv, i, &flags->revision);
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
	}
	/* Lines must reach a pipe or file as they happen, not when a buffer
	 * fills: watch runs until it is killed. */
	fflush(stdout);
	return 0;
}

int cmd_watch(int argc, char **argv)
{
	char usage[6144];
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
	    "options:\n"
	    "  --object-types T1,T2  only changes to relationships whose "
	    "resource has one of\n"
	    "                        these types\n"
	    "  --revision TOKEN      start after the revision of TOKEN "
	    "(a ZedToken); default:\n"
	    "                        changes from now on\n"
	    "\n%s"
	    "\nExit status: 0 when the server ends the stream, 2 on any "
	    "error.\n",
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
