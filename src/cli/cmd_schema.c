/*
 * cmd_schema.c -- `pemba schema read|write`: the schema over gRPC
 * (authzed.api.v1.SchemaService).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authzed/api/v1/schema_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"

#define SCHEMA_SERVICE "/authzed.api.v1.SchemaService/"

static const char schema_usage_head[] =
    "usage: pemba schema <subcommand> [options]\n"
    "\n"
    "Reads or writes the schema of a pemba (or SpiceDB) server.\n"
    "\n"
    "subcommands:\n"
    "  read              print the current schema text\n"
    "  write FILE|-      replace the schema with FILE's text (- for stdin) "
    "and print\n"
    "                    the ZedToken it was written at\n"
    "\n"
    "Run 'pemba schema <subcommand> --help' for its options.\n"
    "Exit status: 0 success, 2 on any error (usage, connection, server).\n";

/* ===================================================================== */
/* schema read                                                           */
/* ===================================================================== */

static int schema_read(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba schema read [options]\n"
	         "\n"
	         "Prints the server's schema text (SchemaService.ReadSchema).  "
	         "With --json prints\n"
	         "{\"schemaText\": ..., \"readAt\": {\"token\": ...}}.\n"
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
	Authzed__Api__V1__ReadSchemaRequest request =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	Authzed__Api__V1__ReadSchemaResponse *response =
	    (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
	        &conn, SCHEMA_SERVICE "ReadSchema", &request.base,
	        &authzed__api__v1__read_schema_response__descriptor);
	client_close(&conn);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json) {
		client_print_json(&response->base);
	} else {
		const char *text = response->schema_text;
		size_t n = strlen(text);
		fputs(text, stdout);
		if (n && text[n - 1] != '\n')
			fputc('\n', stdout);
	}
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* schema write                                                          */
/* ===================================================================== */

/* Reads all of path ("-": stdin) into a malloc'd NUL-terminated buffer.
 * NULL with errno set on failure. */
static char *read_all(const char *path, size_t *len_out)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f)
		return NULL;
	strbuf sb;
	strbuf_init(&sb);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		strbuf_append(&sb, chunk, n);
	int failed = ferror(f);
	if (f != stdin)
		fclose(f);
	if (failed) {
		strbuf_free(&sb);
		errno = EIO;
		return NULL;
	}
	return strbuf_detach(&sb, len_out);
}

static int schema_write(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba schema write [options] FILE|-\n"
	         "\n"
	         "Replaces the server's schema with the text of FILE (- reads "
	         "stdin) through\n"
	         "SchemaService.WriteSchema and prints the ZedToken it was "
	         "written at.  With\n"
	         "--json prints {\"writtenAt\": {\"token\": ...}}.\n"
	         "Exit status: 0 success, 2 on any error (a schema the server "
	         "refuses prints\n"
	         "its status, e.g. INVALID_ARGUMENT with line:column).\n"
	         "\n%s",
	         client_connection_help);
	client_args args = {
	    .usage = usage, .min_positional = 1, .max_positional = 1};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;

	const char *path = args.positional[0];
	size_t len = 0;
	char *text = read_all(path, &len);
	if (!text) {
		fprintf(stderr, "pemba: cannot read %s: %s\n", path,
		        strerror(errno));
		return CLIENT_EXIT_ERROR;
	}
	if (strlen(text) != len) {
		free(text);
		fprintf(stderr, "pemba: %s contains a NUL byte\n", path);
		return CLIENT_EXIT_ERROR;
	}

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		free(text);
		return CLIENT_EXIT_ERROR;
	}
	Authzed__Api__V1__WriteSchemaRequest request =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	request.schema = text;
	Authzed__Api__V1__WriteSchemaResponse *response =
	    (Authzed__Api__V1__WriteSchemaResponse *)client_unary(
	        &conn, SCHEMA_SERVICE "WriteSchema", &request.base,
	        &authzed__api__v1__write_schema_response__descriptor);
	client_close(&conn);
	free(text);
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
/* Dispatch                                                              */
/* ===================================================================== */

int cmd_schema(int argc, char **argv)
{
	if (argc < 2) {
		fputs(schema_usage_head, stderr);
		return CLIENT_EXIT_ERROR;
	}
	const char *sub = argv[1];
	if (client_is_help(sub) || strcmp(sub, "help") == 0) {
		fputs(schema_usage_head, stdout);
		return CLIENT_EXIT_OK;
	}
	if (strcmp(sub, "read") == 0)
		return schema_read(argc - 1, argv + 1);
	if (strcmp(sub, "write") == 0)
		return schema_write(argc - 1, argv + 1);
	fprintf(stderr, "pemba: unknown schema subcommand '%s'\n\n", sub);
	fputs(schema_usage_head, stderr);
	return CLIENT_EXIT_ERROR;
}
