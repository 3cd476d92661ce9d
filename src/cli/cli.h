/*
 * cli.h -- subcommands of the `pemba` binary.  Each takes argc/argv starting
 * at the subcommand's own name (argv[0] == "validate", ...) and returns the
 * process exit status.  Only this layer prints or exits.
 */
#ifndef PEMBA_CLI_H
#define PEMBA_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

int cmd_validate(int argc, char **argv);
int cmd_datastore(int argc, char **argv);
/* `datastore check` (cmd_datastore_check.c), dispatched by cmd_datastore;
 * argv starts after "check". */
int cmd_datastore_check(int argc, char **argv);
/* The options of the `datastore` subcommands (cmd_datastore.c): a table
 * of flags, values as "--flag V" or "--flag=V".  A string flag sets
 * *value; a boolean one (value NULL) sets *set. */
typedef struct cli_flag_spec {
	const char *name;   /* "--to" */
	const char **value; /* string flags; NULL for booleans */
	bool *set;          /* boolean flags */
} cli_flag_spec;
/* Parses argv (after the subcommand) against flags; -h / --help set
 * *help.  Returns 0, or 2 after a usage error ("pemba datastore COMMAND:
 * unknown option ...", then usage(stderr)). */
int cli_datastore_flags(const char *command, void (*usage)(FILE *), int argc,
                        char **argv, const cli_flag_spec *flags, size_t nflags,
                        bool *help);
/* gRPC client commands (client.h, cmd_schema.c, cmd_relationship.c,
 * cmd_permission.c, cmd_watch.c). */
int cmd_schema(int argc, char **argv);
int cmd_relationship(int argc, char **argv);
/* `relationship import|export|bulk-delete` (cmd_relationship_bulk.c),
 * dispatched by cmd_relationship; argv[0] is the subcommand. */
int cmd_relationship_import(int argc, char **argv);
int cmd_relationship_export(int argc, char **argv);
int cmd_relationship_bulk_delete(int argc, char **argv);
int cmd_permission(int argc, char **argv);
int cmd_watch(int argc, char **argv);
/* Migration administration over gRPC (cmd_admin.c: read-only mode;
 * cmd_relation.c: relation deprecation). */
int cmd_admin(int argc, char **argv);
int cmd_relation(int argc, char **argv);
/* zed's backup files (cmd_backup.c, src/tools/backup_format.h). */
int cmd_backup(int argc, char **argv);
/* `backup restore` (cmd_backup_restore.c); argv[0] is "restore". */
int cmd_backup_restore(int argc, char **argv);
/* zed's rewriter flags, shared by the backup subcommands (cmd_backup.c):
 * `--prefix-filter P`, `--prefix-replacements OLD=NEW,...`.  The flag
 * function works as a client_flag_fn (1 consumed, 0 not ours, -1 error);
 * cli_backup_rewriter() builds the rewriter (tools/backup_rewrite.h) or
 * prints why not and returns NULL. */
typedef struct cli_backup_rewrite_flags {
	const char *prefix_filter;
	const char *prefix_replacements;
} cli_backup_rewrite_flags;
extern const char cli_backup_rewrite_help[];
int cli_backup_rewrite_flag(cli_backup_rewrite_flags *f, int argc, char **argv,
                            int *i);
struct backup_rewriter *cli_backup_rewriter(const cli_backup_rewrite_flags *f);

/* `mirror`: copy a server and follow its Watch (cmd_mirror.c). */
int cmd_mirror(int argc, char **argv);

/* `verify`: compare two servers' data and answers (cmd_verify.c). */
int cmd_verify(int argc, char **argv);

/* `proxy`: dual running in front of a primary and a shadow (cmd_proxy.c,
 * src/proxy/). */
int cmd_proxy(int argc, char **argv);

/* The command table (main.c), in the order `pemba --help` lists it. */
typedef struct cli_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} cli_command;
extern const cli_command cli_commands[];
extern const size_t cli_ncommands;

/* `pemba completion bash|zsh` (cmd_completion.c): a script generated
 * from the table and each command's --help. */
int cmd_completion(int argc, char **argv);

/* Defaults from the environment (env.c): $PEMBA_DATASTORE, else
 * "sqlite://./pemba.db"; $PEMBA_GRPC_ADDR, else "127.0.0.1:50051".  Flags
 * win over both. */
const char *cli_default_datastore(void);
const char *cli_default_grpc_addr(void);

/* Servers (cmd_serve.c, src/server/). */
int cmd_serve(int argc, char **argv);
int cmd_serve_testing(int argc, char **argv);

/* Parses a duration ("500ms", "90s", "3m", "1h30m", "24h", "7d", or a
 * plain number of seconds) into milliseconds (duration.c).  0 on success,
 * -1 if malformed or out of range. */
int cli_parse_duration_ms(const char *text, int64_t *out);

/* Replaces the file at path with text, atomically: a temporary file
 * (path.tmp) written and fsynced, renamed over path, the directory
 * synced; a crash leaves the old file or the new one.  0, or -1 after
 * printing `pemba: cannot write PATH: ...`. */
int cli_replace_file(const char *path, const char *text);
/* Same, the new file created with mode (e.g. 0600 for files holding
 * tokens; 0666 less the umask is cli_replace_file's). */
int cli_replace_file_mode(const char *path, const char *text, mode_t mode);

#endif
