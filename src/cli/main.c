/*
 * main.c -- the `pemba` binary: a table of subcommands and the dispatcher.
 *
 * Each subcommand is a function `int cmd_x(int argc, char **argv)` (see
 * cli.h) that receives argv starting at its own name and returns the exit
 * status.  To add a command (serve, schema, relationship, permission, ...),
 * write its cmd_ function in its own file and add one row to `commands`.
 *
 * Exit statuses: 0 success, 1 the command ran and failed, 2 usage error.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/context.h"
#include "pemba.h"

typedef cli_command command;

const cli_command cli_commands[] = {
    {"validate", cmd_validate,
     "run SpiceDB/zed validation files (schema, relationships, assertions)"},
    {"datastore", cmd_datastore,
     "maintain a datastore: migrate status|up|down|head, gc, snapshot, "
     "new-identity, check"},
    {"serve", cmd_serve,
     "serve SpiceDB's gRPC API over a datastore (preshared-key auth)"},
    {"serve-testing", cmd_serve_testing,
     "gRPC server for client tests: one in-memory datastore per token"},
    {"schema", cmd_schema,
     "a server's schema: read, write [--dry-run], diff, plan, apply"},
    {"relationship", cmd_relationship,
     "a server's relationships: create|touch|delete|read|copy|import|"
     "export|bulk-delete"},
    {"permission", cmd_permission,
     "ask a server: check, lookup-resources, lookup-subjects, expand, "
     "verify"},
    {"watch", cmd_watch,
     "print a server's relationship changes as they happen"},
    {"admin", cmd_admin,
     "administer a server's datastore: read-only on|off|status"},
    {"backup", cmd_backup,
     "zed-format backups: create, restore, parse-revision|"
     "parse-schema|parse-relationships, redact"},
    {"mirror", cmd_mirror,
     "copy a server to another and follow its changes (Watch)"},
    {"verify", cmd_verify,
     "compare two servers: schemas, relationships, sampled checks"},
    {"proxy", cmd_proxy,
     "dual running: serve from a primary, replay on a shadow, compare"},
    {"relation", cmd_relation,
     "deprecate relations: deprecate|undeprecate TYPE#REL, deprecations"},
    {"context", cmd_context,
     "saved connections: context set|use|list|remove|current"},
    {"completion", cmd_completion,
     "print a bash or zsh completion script: completion bash|zsh"},
};

#define NCOMMANDS (sizeof(cli_commands) / sizeof(cli_commands[0]))
const size_t cli_ncommands = NCOMMANDS;
#define commands cli_commands

static void print_usage(FILE *out)
{
	fprintf(out,
	        "usage: pemba <command> [arguments]\n"
	        "       pemba help <command>\n"
	        "       pemba --version\n"
	        "\n"
	        "pemba is a Zanzibar-style permissions database that speaks "
	        "SpiceDB's API and schema language.\n"
	        "\n"
	        "commands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-12s %s\n", commands[i].name,
		        commands[i].summary);
	fprintf(out,
	        "\nRun 'pemba <command> --help' for a command's options.\n");
}

static const command *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* Runs cmd as `cmd --help`. */
static int run_help_of(const command *cmd)
{
	char name[64], flag[] = "--help";
	snprintf(name, sizeof(name), "%s", cmd->name);
	char *argv[] = {name, flag, NULL};
	return cmd->run(2, argv);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		print_usage(stderr);
		return 2;
	}
	const char *name = argv[1];
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
		print_usage(stdout);
		return 0;
	}
	if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
		printf("pemba %s\n", PEMBA_VERSION);
		return 0;
	}
	if (strcmp(name, "help") == 0) {
		if (argc < 3) {
			print_usage(stdout);
			return 0;
		}
		const command *cmd = find_command(argv[2]);
		if (!cmd) {
			fprintf(stderr, "pemba: unknown command '%s'\n\n",
			        argv[2]);
			print_usage(stderr);
			return 2;
		}
		return run_help_of(cmd);
	}
	const command *cmd = find_command(name);
	if (!cmd) {
		fprintf(stderr, "pemba: unknown command '%s'\n\n", name);
		print_usage(stderr);
		return 2;
	}
	return cmd->run(argc - 1, argv + 1);
}
