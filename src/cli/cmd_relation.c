/*
 * cmd_relation.c -- `pemba relation deprecate|undeprecate|deprecations`:
 * relation deprecation over gRPC (pemba.v1.MigrationService
 * DeprecateRelation, UndeprecateRelation, GetMigrationStatus).
 *
 * Deprecations are kept in the datastore, outside the schema text, so
 * schemas stay SpiceDB's.  A write (CREATE / TOUCH) to a deprecated
 * relation is logged by the server (warn) or refused with
 * FAILED_PRECONDITION (reject); deletes are always allowed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "pemba/v1/migration_service.pb-c.h"

#define MIGRATION_SERVICE "/pemba.v1.MigrationService/"

static const char relation_usage_head[] =
    "usage: pemba relation <subcommand> [options]\n"
    "\n"
    "Deprecates relations of a pemba server's schema, so that writes to "
    "them are\n"
    "logged (warn) or refused (reject) while data migrates off them.\n"
    "\n"
    "subcommands:\n"
    "  deprecate TYPE#RELATION [--mode warn|reject]\n"
    "                      deprecate a relation (default mode: warn)\n"
    "  undeprecate TYPE#RELATION\n"
    "                      lift a deprecation\n"
    "  deprecations        list the deprecated relations\n"
    "\n"
    "Run 'pemba relation <subcommand> --help' for its options.\n"
    "Exit status: 0 success, 2 on any error (usage, connection, server).\n";

/* Splits "TYPE#RELATION" into its parts (pointers into buf).  Returns 0,
 * or a usage error's exit status after printing it. */
static int split_relation(const char *usage, const char *text, char *buf,
                          size_t size, const char **type, const char **relation)
{
	const char *hash = strchr(text, '#');
	if (!hash || hash == text || !hash[1] || strchr(hash + 1, '#') ||
	    strlen(text) >= size)
		return client_usage_error(usage,
		                          "expected TYPE#RELATION (e.g. "
		                          "document#viewer), not '%s'",
		                          text);
	memcpy(buf, text, strlen(text) + 1);
	buf[hash - text] = '\0';
	*type = buf;
	*relation = buf + (hash - text) + 1;
	return 0;
}

/* ===================================================================== */
/* relation deprecate                                                    */
/* ===================================================================== */

typedef struct deprecate_flags {
	const char *mode;
} deprecate_flags;

static int deprecate_flag(void *ctx, int argc, char **argv, int *i)
{
	deprecate_flags *f = ctx;
	return client_flag_value("--mode", argc, argv, i, &f->mode);
}

static int relation_deprecate(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba relation deprecate TYPE#RELATION [--mode "
	         "warn|reject] [options]\n"
	         "\n"
	         "Deprecates a relation of the current schema "
	         "(MigrationService.DeprecateRelation):\n"
	         "  --mode warn     writes (CREATE/TOUCH) to it succeed and "
	         "the server logs\n"
	         "                  one line per write (the default)\n"
	         "  --mode reject   writes to it fail with "
	         "FAILED_PRECONDITION\n"
	         "Deleting its relationships is always allowed.  Deprecating "
	         "it again changes\n"
	         "the mode.  Prints `deprecated TYPE#RELATION (MODE)`.  A "
	         "relation the schema\n"
	         "does not have (or a permission) is refused with "
	         "FAILED_PRECONDITION.\n"
	         "Exit status: 0 success, 2 on any error.\n"
	         "\n%s",
	         client_connection_help);
	deprecate_flags flags = {.mode = "warn"};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = deprecate_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	Pemba__V1__DeprecateRelationRequest request =
	    PEMBA__V1__DEPRECATE_RELATION_REQUEST__INIT;
	if (strcmp(flags.mode, "warn") == 0)
		request.mode = PEMBA__V1__DEPRECATION__MODE__WARN;
	else if (strcmp(flags.mode, "reject") == 0)
		request.mode = PEMBA__V1__DEPRECATION__MODE__REJECT;
	else
		return client_usage_error(usage,
		                          "--mode must be warn or reject, not "
		                          "'%s'",
		                          flags.mode);
	char buf[512];
	const char *type, *relation;
	if ((status = split_relation(usage, args.positional[0], buf,
	                             sizeof(buf), &type, &relation)) != 0)
		return status;
	request.resource_type = (char *)type;
	request.relation = (char *)relation;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0)
		return CLIENT_EXIT_ERROR;
	ProtobufCMessage *response = client_unary(
	    &conn, MIGRATION_SERVICE "DeprecateRelation", &request.base,
	    &pemba__v1__deprecate_relation_response__descriptor);
	client_close(&conn);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json)
		client_print_json(response);
	else
		printf("deprecated %s#%s (%s)\n", type, relation, flags.mode);
	protobuf_c_message_free_unpacked(response, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* relation undeprecate                                                  */
/* ===================================================================== */

static int relation_undeprecate(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba relation undeprecate TYPE#RELATION [options]\n"
	         "\n"
	         "Lifts the deprecation of a relation "
	         "(MigrationService.UndeprecateRelation):\n"
	         "writes to it are accepted again.  Prints `undeprecated "
	         "TYPE#RELATION`, or\n"
	         "`TYPE#RELATION was not deprecated` (not an error).\n"
	         "Exit status: 0 success, 2 on any error.\n"
	         "\n%s",
	         client_connection_help);
	client_args args = {
	    .usage = usage, .min_positional = 1, .max_positional = 1};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	char buf[512];
	const char *type, *relation;
	if ((status = split_relation(usage, args.positional[0], buf,
	                             sizeof(buf), &type, &relation)) != 0)
		return status;
	Pemba__V1__UndeprecateRelationRequest request =
	    PEMBA__V1__UNDEPRECATE_RELATION_REQUEST__INIT;
	request.resource_type = (char *)type;
	request.relation = (char *)relation;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0)
		return CLIENT_EXIT_ERROR;
	Pemba__V1__UndeprecateRelationResponse *response =
	    (Pemba__V1__UndeprecateRelationResponse *)client_unary(
	        &conn, MIGRATION_SERVICE "UndeprecateRelation", &request.base,
	        &pemba__v1__undeprecate_relation_response__descriptor);
	client_close(&conn);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json)
		client_print_json(&response->base);
	else if (response->was_deprecated)
		printf("undeprecated %s#%s\n", type, relation);
	else
		printf("%s#%s was not deprecated\n", type, relation);
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* relation deprecations                                                 */
/* ===================================================================== */

static int relation_deprecations(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba relation deprecations [options]\n"
	         "\n"
	         "Lists the deprecated relations "
	         "(MigrationService.GetMigrationStatus), one per\n"
	         "line: `TYPE#RELATION MODE since TIME` (UTC, RFC 3339).  "
	         "Nothing is printed\n"
	         "when none is deprecated.  With --json prints the status "
	         "message (read-only\n"
	         "state included).\n"
	         "Exit status: 0 success, 2 on any error.\n"
	         "\n%s",
	         client_connection_help);
	client_args args = {.usage = usage, .max_positional = 0};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	client_conn conn;
	if (client_connect(&args.options, &conn) != 0)
		return CLIENT_EXIT_ERROR;
	Pemba__V1__GetMigrationStatusRequest request =
	    PEMBA__V1__GET_MIGRATION_STATUS_REQUEST__INIT;
	Pemba__V1__GetMigrationStatusResponse *response =
	    (Pemba__V1__GetMigrationStatusResponse *)client_unary(
	        &conn, MIGRATION_SERVICE "GetMigrationStatus", &request.base,
	        &pemba__v1__get_migration_status_response__descriptor);
	client_close(&conn);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json) {
		client_print_json(&response->base);
	} else {
		if (response->n_deprecations == 0)
			fputs("pemba: no deprecated relations\n", stderr);
		for (size_t i = 0; i < response->n_deprecations; i++) {
			const Pemba__V1__Deprecation *d =
			    response->deprecations[i];
			char when[32] = "unknown";
			time_t t = (time_t)(d->set_at_unix_ms / 1000);
			struct tm tm;
			if (d->set_at_unix_ms > 0 && gmtime_r(&t, &tm))
				strftime(when, sizeof(when),
				         "%Y-%m-%dT%H:%M:%SZ", &tm);
			printf("%s#%s %s since %s\n", d->resource_type,
			       d->relation,
			       d->mode == PEMBA__V1__DEPRECATION__MODE__REJECT
			           ? "reject"
			           : "warn",
			       when);
		}
	}
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* Dispatch                                                              */
/* ===================================================================== */

int cmd_relation(int argc, char **argv)
{
	static const client_subcommand subs[] = {
	    {"deprecate", relation_deprecate},
	    {"undeprecate", relation_undeprecate},
	    {"deprecations", relation_deprecations},
	};
	return client_dispatch("relation", relation_usage_head, subs,
	                       sizeof(subs) / sizeof(subs[0]), argc, argv);
}
