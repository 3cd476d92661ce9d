/*
 * cmd_relation.c -- `pemba relation deprecate|undeprecate|deprecations`:
 * relation and permission deprecation over gRPC (pemba.v1.MigrationService
 * DeprecateRelation, UndeprecateRelation, GetMigrationStatus).
 *
 * Deprecations are kept in the datastore, outside the schema text, so
 * schemas stay SpiceDB's.  A write (CREATE / TOUCH) to a deprecated
 * relation, and a read naming a deprecated relation or permission
 * (CheckPermission, lookups, ...), is logged and counted per caller by
 * the server (warn) or refused with FAILED_PRECONDITION (reject); deletes
 * and ReadRelationships are always allowed.  `deprecations --usage` shows
 * the server's counts: who still uses what.
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
    "Deprecates relations and permissions of a pemba server's schema, so "
    "that their\n"
    "uses (writes to a relation, reads naming it) are logged and counted "
    "per caller\n"
    "(warn) or refused (reject) while callers and data move off them.\n"
    "\n"
    "subcommands:\n"
    "  deprecate TYPE#NAME [--mode warn|reject]\n"
    "                      deprecate a relation or permission (default "
    "mode: warn)\n"
    "  undeprecate TYPE#NAME\n"
    "                      lift a deprecation\n"
    "  deprecations [--usage]\n"
    "                      list the deprecations (--usage: who still "
    "uses them)\n"
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
	         "usage: pemba relation deprecate TYPE#NAME [--mode "
	         "warn|reject] [options]\n"
	         "\n"
	         "Deprecates a relation or a permission of the current schema "
	         "(MigrationService.\n"
	         "DeprecateRelation).  Its uses are writes (CREATE/TOUCH) to "
	         "a relation and the\n"
	         "reads that name it: CheckPermission, CheckBulkPermissions "
	         "(per item),\n"
	         "LookupResources, LookupSubjects, ExpandPermissionTree (as "
	         "the permission or\n"
	         "the subject's relation), and ReadRelationships filters.\n"
	         "  --mode warn     uses succeed; the server logs them (a "
	         "caller's repeated\n"
	         "                  reads at most every 10s) and counts them "
	         "per caller\n"
	         "                  (the default; see `deprecations --usage`)\n"
	         "  --mode reject   writes, and reads naming it, fail with "
	         "FAILED_PRECONDITION\n"
	         "Deleting and reading its relationships is always allowed.  "
	         "Deprecating it\n"
	         "again changes the mode.  Prints `deprecated TYPE#NAME "
	         "(MODE)`.  A name the\n"
	         "schema does not have is refused with FAILED_PRECONDITION.\n"
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

static int usage_flag(void *ctx, int argc, char **argv, int *i)
{
	return client_flag_bool("--usage", argv, i, ctx);
}

/* Unix ms as RFC 3339 UTC, "-" when unknown. */
static void format_ms(char *out, size_t size, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	snprintf(out, size, "-");
	if (ms > 0 && gmtime_r(&t, &tm))
		strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One row of the --usage table; widths[] sizes the first five columns
 * (or, with print false, grows to fit them). */
static void usage_row(size_t *widths, bool print, const char *cells[5],
                      const char *count, const char *first, const char *last)
{
	if (!print) {
		for (int c = 0; c < 5; c++)
			if (strlen(cells[c]) > widths[c])
				widths[c] = strlen(cells[c]);
		return;
	}
	printf("%-*s  %-*s  %-*s  %-*s  %-*s  %5s  %-20s  %s\n", (int)widths[0],
	       cells[0], (int)widths[1], cells[1], (int)widths[2], cells[2],
	       (int)widths[3], cells[3], (int)widths[4], cells[4], count, first,
	       last);
}

/* `deprecations --usage`: every (deprecation, caller, method) row, sized
 * in a first pass and printed in a second. */
static void print_usage_table(const Pemba__V1__GetMigrationStatusResponse *r)
{
	size_t widths[5] = {6, 4, 6, 3, 6};
	for (int print = 0; print < 2; print++) {
		if (print) {
			const char *head[5] = {"TARGET", "MODE", "CALLER",
			                       "KEY", "METHOD"};
			usage_row(widths, true, head, "USES", "FIRST", "LAST");
		}
		for (size_t i = 0; i < r->n_deprecations; i++) {
			const Pemba__V1__Deprecation *d = r->deprecations[i];
			char target[512];
			snprintf(target, sizeof(target), "%s#%s",
			         d->resource_type, d->relation);
			const char *mode =
			    d->mode == PEMBA__V1__DEPRECATION__MODE__REJECT
			        ? "reject"
			        : "warn";
			if (d->n_uses == 0) {
				const char *cells[5] = {target, mode, "-", "-",
				                        "-"};
				usage_row(widths, print, cells, "0", "-", "-");
			}
			for (size_t k = 0; k < d->n_uses; k++) {
				const Pemba__V1__DeprecationUse *u = d->uses[k];
				char count[24], first[32], last[32];
				snprintf(count, sizeof(count), "%llu",
				         (unsigned long long)u->count);
				format_ms(first, sizeof(first),
				          u->first_unix_ms);
				format_ms(last, sizeof(last), u->last_unix_ms);
				const char *cells[5] = {
				    target, mode, u->peer,
				    u->key_name[0] ? u->key_name : "-",
				    u->method};
				usage_row(widths, print, cells, count, first,
				          last);
			}
		}
	}
	char since[32];
	format_ms(since, sizeof(since), r->usage_since_unix_ms);
	fprintf(stderr,
	        "pemba: %s; uses counted by this server since %s (each "
	        "server counts its own)\n",
	        r->n_deprecations ? "deprecations" : "no deprecations", since);
}

static int relation_deprecations(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba relation deprecations [--usage] [options]\n"
	         "\n"
	         "Lists the deprecated relations and permissions "
	         "(MigrationService.\n"
	         "GetMigrationStatus), one per line: `TYPE#NAME MODE since "
	         "TIME` (UTC, RFC\n"
	         "3339).  Nothing is printed when none is deprecated.\n"
	         "  --usage   a table of who used each deprecated name: "
	         "TARGET MODE CALLER\n"
	         "            (IP address) KEY (preshared key name, - if "
	         "none) METHOD USES\n"
	         "            FIRST LAST; a name no one used has one row "
	         "with 0 uses.\n"
	         "            The counts are the answering server's, kept in "
	         "memory since it\n"
	         "            started: with several servers, ask each.\n"
	         "With --json prints the status message (read-only state and "
	         "uses included).\n"
	         "Exit status: 0 success, 2 on any error.\n"
	         "\n%s",
	         client_connection_help);
	bool show_usage = false;
	client_args args = {.usage = usage,
	                    .max_positional = 0,
	                    .extra = usage_flag,
	                    .extra_ctx = &show_usage};
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
	} else if (show_usage) {
		print_usage_table(response);
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
