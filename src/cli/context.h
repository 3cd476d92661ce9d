/*
 * context.h -- named connections ("contexts", as zed has them) so the
 * client commands need no --endpoint/--token on every line.
 *
 * They live in one JSON file, $XDG_CONFIG_HOME/pemba/contexts.json (or
 * $HOME/.config/pemba/contexts.json), mode 0600 in a 0700 directory,
 * replaced atomically on every change:
 *
 *   {"current": "prod",
 *    "contexts": {"prod": {"endpoint": "h:443", "token": "...",
 *                          "insecure": false, "ca_path": "/ca.pem",
 *                          "skip_verify_ca": false}}}
 *
 * A file that others may read or write, or that is not such JSON, is
 * refused with a message naming it and the fix (never silently ignored:
 * it holds tokens, and a half-read file would send commands elsewhere).
 */
#ifndef PEMBA_CLI_CONTEXT_H
#define PEMBA_CLI_CONTEXT_H

#include <stdbool.h>

typedef struct cli_context {
	char *name;
	char *endpoint;
	char *token;   /* NULL: none */
	char *ca_path; /* NULL: system CAs */
	bool insecure;
	bool skip_verify_ca;
} cli_context;

/* The context named name, or (name NULL) the current one, read from the
 * contexts file.  Returns 1 with *out filled (strings owned by a static
 * copy that lives until exit), 0 when name is NULL and there is no
 * current context (or no file), -1 after printing why on stderr (a name
 * that does not exist, an unreadable or unsafe file). */
int cli_context_lookup(const char *name, const cli_context **out);

/* `pemba context set|use|list|remove|current` (argv[0] is "context"). */
int cmd_context(int argc, char **argv);

#endif
