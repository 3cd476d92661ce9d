/*
 * cmd_admin.c -- `pemba admin read-only on|off|status`: the datastore's
 * read-only mode over gRPC (pemba.v1.MigrationService SetReadOnly and
 * GetMigrationStatus).
 *
 * The setting is stored in the datastore, so it holds for every server on
 * it and survives restarts.  A server started with `--read-only` refuses
 * writes whatever the setting says; the output says so ("forced by the
 * server").
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "pemba/v1/migration_service.pb-c.h"

#define MIGRATION_SERVICE "/pemba.v1.MigrationService/"

static const char admin_usage_head[] =
    "usage: pemba admin <subcommand> [options]\n"
    "\n"
    "Administers a pemba server's datastore.\n"
    "\n"
    "subcommands:\n"
    "  read-only on|off|status   stop or resume every write (reads keep "
    "working),\n"
    "                            or show whether writes are stopped\n"
    "\n"
    "Run 'pemba admin <subcommand> --help' for its options.\n"
    "Exit status: 0 success, 2 on any error (usage, connection, server).\n";

/* Prints the state in words: "read-only: on" and, when the server keeps
 * writes off on its own, a second line saying so. */
static void print_state(bool stored, bool forced)
{
	printf("read-only: %s\n", stored ? "on" : "off");
	if (forced)
		printf("forced by the server: it was started with --read-only "
		       "and refuses writes whatever this setting says\n");
}

static int admin_read_only(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba admin read-only on|off|status [options]\n"
	         "\n"
	         "Stops (on) or resumes (off) every write to the server's "
	         "datastore --\n"
	         "relationship writes, deletes, imports and schema writes "
	         "fail with\n"
	         "UNAVAILABLE while reads keep working -- or shows the "
	         "current state\n"
	         "(status).  The setting is stored in the datastore: it "
	         "holds for every\n"
	         "server on it and across restarts.  Prints `read-only: on` "
	         "or `read-only: off`,\n"
	         "and a second line when the server was started with "
	         "--read-only (writes stay\n"
	         "off whatever the setting).  With --json prints the "
	         "response message.\n"
	         "Exit status: 0 success, 2 on any error.\n"
	         "\n%s",
	         client_connection_help);
	client_args args = {
	    .usage = usage, .min_positional = 1, .max_positional = 1};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	const char *what = args.positional[0];
	bool set = true, on = false;
	if (strcmp(what, "on") == 0)
		on = true;
	else if (strcmp(what, "status") == 0)
		set = false;
	else if (strcmp(what, "off") != 0)
		return client_usage_error(usage,
		                          "expected on, off or status, not "
		                          "'%s'",
		                          what);

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0)
		return CLIENT_EXIT_ERROR;
	ProtobufCMessage *response;
	if (set) {
		Pemba__V1__SetReadOnlyRequest request =
		    PEMBA__V1__SET_READ_ONLY_REQUEST__INIT;
		request.read_only = on;
		response = client_unary(
		    &conn, MIGRATION_SERVICE "SetReadOnly", &request.base,
		    &pemba__v1__set_read_only_response__descriptor);
	} else {
		Pemba__V1__GetMigrationStatusRequest request =
		    PEMBA__V1__GET_MIGRATION_STATUS_REQUEST__INIT;
		response = client_unary(
		    &conn, MIGRATION_SERVICE "GetMigrationStatus",
		    &request.base,
		    &pemba__v1__get_migration_status_response__descriptor);
	}
	client_close(&conn);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json) {
		client_print_json(response);
	} else if (set) {
		const Pemba__V1__SetReadOnlyResponse *r =
		    (const void *)response;
		print_state(r->read_only, r->forced_by_server);
	} else {
		const Pemba__V1__GetMigrationStatusResponse *r =
		    (const void *)response;
		print_state(r->read_only, r->forced_by_server);
	}
	protobuf_c_message_free_unpacked(response, NULL);
	return CLIENT_EXIT_OK;
}

int cmd_admin(int argc, char **argv)
{
	static const client_subcommand subs[] = {
	    {"read-only", admin_read_only},
	};
	return client_dispatch("admin", admin_usage_head, subs,
	                       sizeof(subs) / sizeof(subs[0]), argc, argv);
}
