/*
 * context.c -- `pemba context set|use|list|remove|current` and the lookup
 * client_parse_args makes when neither a flag nor the environment names
 * the server.  The file format and its rules are in context.h.
 */
#include "cli/context.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "util/xalloc.h"

static const char context_usage[] =
    "usage: pemba context set NAME ENDPOINT [TOKEN] [--insecure] "
    "[--ca-path FILE] [--skip-verify-ca]\n"
    "       pemba context use NAME\n"
    "       pemba context list [--json]\n"
    "       pemba context remove NAME\n"
    "       pemba context current\n"
    "\n"
    "Named connections, so client commands need no --endpoint and "
    "--token.  The\n"
    "current context supplies the endpoint, the token and the TLS "
    "settings when\n"
    "neither --endpoint nor $PEMBA_ENDPOINT names a server (--token and "
    "$PEMBA_TOKEN\n"
    "still win for the token); --context NAME on any client command "
    "picks one\n"
    "explicitly.  Precedence: flag > environment > context > "
    "127.0.0.1:50051.\n"
    "\n"
    "  set      add or replace a context; the first one becomes current;\n"
    "           TOKEN - reads it from standard input (not in shell "
    "history)\n"
    "  use      make NAME the current context\n"
    "  list     the contexts, `*` marking the current one (tokens are "
    "never shown)\n"
    "  remove   delete NAME (when current, no context is current "
    "afterwards)\n"
    "  current  print the current context's name (exit 1 when none)\n"
    "\n"
    "Stored in $XDG_CONFIG_HOME/pemba/contexts.json, else\n"
    "$HOME/.config/pemba/contexts.json: mode 0600 (it holds tokens), "
    "replaced\n"
    "atomically.  A file others can read, or that is not valid JSON, is "
    "refused.\n"
    "\n"
    "Exit status: 0 success, 1 no current context (current), 2 any "
    "error.\n";

/* ===================================================================== */
/* The file                                                              */
/* ===================================================================== */

/* The contexts file's path, heap; NULL (after printing why unless quiet)
 * when there is no home to find it in. */
static char *contexts_path(bool quiet)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	char buf[4096];
	int n;
	/* The XDG spec ignores relative values. */
	if (xdg && xdg[0] == '/')
		n = snprintf(buf, sizeof(buf), "%s/pemba/contexts.json", xdg);
	else if (home && *home)
		n = snprintf(buf, sizeof(buf), "%s/.config/pemba/contexts.json",
		             home);
	else {
		if (!quiet)
			fprintf(stderr,
			        "pemba: cannot find the contexts file: "
			        "neither $XDG_CONFIG_HOME nor $HOME is set\n");
		return NULL;
	}
	if (n < 0 || (size_t)n >= sizeof(buf)) {
		fprintf(stderr,
		        "pemba: the contexts file's path is too long\n");
		return NULL;
	}
	return xstrdup(buf);
}

/* Reads the file: 1 with *root (a new reference), 0 when it does not
 * exist (*root an empty document), -1 after printing why. */
static int contexts_read(const char *path, json_t **root)
{
	*root = NULL;
	struct stat st;
	if (stat(path, &st) != 0) {
		if (errno == ENOENT) {
			*root = json_pack("{s:{}}", "contexts");
			return 0;
		}
		fprintf(stderr, "pemba: cannot read %s: %s\n", path,
		        strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "pemba: %s is not a regular file\n", path);
		return -1;
	}
	if ((st.st_mode & 077) != 0) {
		fprintf(stderr,
		        "pemba: %s may be read or written by others (mode "
		        "%04o); it holds tokens, so it is not used: run `chmod "
		        "600 %s`\n",
		        path, (unsigned)(st.st_mode & 07777), path);
		return -1;
	}
	if (st.st_uid != getuid()) {
		fprintf(stderr,
		        "pemba: %s belongs to another user (uid %u); it is "
		        "not used\n",
		        path, (unsigned)st.st_uid);
		return -1;
	}
	json_error_t e;
	json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
	if (!doc) {
		fprintf(stderr,
		        "pemba: %s is not valid JSON (line %d, column %d: %s); "
		        "fix it or delete it\n",
		        path, e.line, e.column, e.text);
		return -1;
	}
	/* The shape: an object with "contexts" (object of objects) and an
	 * optional "current" naming one of them. */
	json_t *contexts = json_object_get(doc, "contexts");
	json_t *current = json_object_get(doc, "current");
	const char *bad = NULL;
	if (!json_is_object(doc))
		bad = "the top level is not an object";
	else if (!json_is_object(contexts))
		bad = "\"contexts\" is missing or not an object";
	else if (current && !json_is_string(current) && !json_is_null(current))
		bad = "\"current\" is not a string";
	const char *key;
	json_t *c;
	if (!bad)
		json_object_foreach(contexts, key, c)
		{
			json_t *ep = json_object_get(c, "endpoint");
			if (!json_is_object(c) || !json_is_string(ep)) {
				bad = "a context without a string "
				      "\"endpoint\"";
				break;
			}
		}
	if (bad) {
		fprintf(stderr,
		        "pemba: %s is not a contexts file: %s; fix "
		        "it or delete it\n",
		        path, bad);
		json_decref(doc);
		return -1;
	}
	*root = doc;
	return 1;
}

/* mkdir with mode 0700 unless it exists.  0, or -1 after printing. */
static int make_dir(const char *dir)
{
	if (mkdir(dir, 0700) == 0 || errno == EEXIST)
		return 0;
	fprintf(stderr, "pemba: cannot create %s: %s\n", dir, strerror(errno));
	return -1;
}

/* Writes root to path (mode 0600, directories 0700).  0 or -1. */
static int contexts_write(const char *path, json_t *root)
{
	/* .../.config/pemba/contexts.json: create .config and pemba. */
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		char *parent = strrchr(dir, '/');
		if (parent && parent != dir) {
			*parent = '\0';
			int r = make_dir(dir);
			*parent = '/';
			if (r)
				return -1;
		}
		if (make_dir(dir))
			return -1;
	}
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!text) {
		fprintf(stderr, "pemba: cannot encode the contexts\n");
		return -1;
	}
	size_t n = strlen(text);
	char *line = xmalloc(n + 2);
	memcpy(line, text, n);
	memcpy(line + n, "\n", 2);
	free(text);
	int rc = cli_replace_file_mode(path, line, 0600);
	free(line);
	return rc;
}

static const char *str_field(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool bool_field(json_t *o, const char *name)
{
	return json_is_true(json_object_get(o, name));
}

/* ===================================================================== */
/* Lookup (client_parse_args)                                            */
/* ===================================================================== */

static cli_context looked_up; /* lives until exit */

int cli_context_lookup(const char *name, const cli_context **out)
{
	*out = NULL;
	/* No home: no current context (but a named one is an error). */
	char *path = contexts_path(name == NULL);
	if (!path)
		return name ? -1 : 0;
	json_t *root;
	int r = contexts_read(path, &root);
	if (r < 0) {
		free(path);
		return -1;
	}
	int rc = 0;
	if (!name) {
		name = str_field(root, "current");
		if (!name)
			goto done;
	}
	json_t *c = json_object_get(json_object_get(root, "contexts"), name);
	if (!c) {
		fprintf(
		    stderr,
		    "pemba: no context named '%s' in %s (see `pemba context "
		    "list`)\n",
		    name, path);
		rc = -1;
		goto done;
	}
	const char *token = str_field(c, "token");
	const char *ca = str_field(c, "ca_path");
	looked_up.name = xstrdup(name);
	looked_up.endpoint = xstrdup(str_field(c, "endpoint"));
	looked_up.token = token && *token ? xstrdup(token) : NULL;
	looked_up.ca_path = ca && *ca ? xstrdup(ca) : NULL;
	looked_up.insecure = bool_field(c, "insecure");
	looked_up.skip_verify_ca = bool_field(c, "skip_verify_ca");
	*out = &looked_up;
	rc = 1;
done:
	json_decref(root);
	free(path);
	return rc;
}

/* ===================================================================== */
/* The command                                                           */
/* ===================================================================== */

static int usage_error(const char *fmt, const char *arg)
{
	fputs("pemba context: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\n\n", stderr);
	fputs(context_usage, stderr);
	return CLIENT_EXIT_ERROR;
}

/* Names are what a shell and a prompt show without quoting. */
static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (size_t k = 0; k < n; k++) {
		char ch = s[k];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
		      ch == '.'))
			return false;
	}
	return true;
}

/* Loads the file for a subcommand: 0 with *root and *path, or the exit
 * status. */
static int load(char **path, json_t **root)
{
	*path = contexts_path(false);
	if (!*path)
		return CLIENT_EXIT_ERROR;
	if (contexts_read(*path, root) < 0) {
		free(*path);
		return CLIENT_EXIT_ERROR;
	}
	return 0;
}

static int context_set(int argc, char **argv)
{
	const char *pos[3] = {NULL, NULL, NULL};
	int npos = 0;
	const char *ca_path = NULL;
	bool insecure = false, skip_verify = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int r;
		if (client_is_help(a)) {
			fputs(context_usage, stdout);
			return 0;
		}
		if (strcmp(a, "--insecure") == 0)
			insecure = true;
		else if (strcmp(a, "--skip-verify-ca") == 0)
			skip_verify = true;
		else if ((r = client_flag_value("--ca-path", argc, argv, &i,
		                                &ca_path)) != 0) {
			if (r < 0)
				return CLIENT_EXIT_ERROR;
		} else if (a[0] == '-' && a[1] != '\0')
			return usage_error("unknown option '%s'", a);
		else if (npos < 3)
			pos[npos++] = a;
		else
			return usage_error("unexpected argument '%s'", a);
	}
	if (npos < 2)
		return usage_error("%s",
		                   "set needs NAME and ENDPOINT (and usually "
		                   "TOKEN)");
	if (!valid_name(pos[0]))
		return usage_error("bad context name '%s' (letters, digits, "
		                   "'_', '-', '.'; at most 64)",
		                   pos[0]);
	if (!*pos[1] || strpbrk(pos[1], " \t\n"))
		return usage_error("bad endpoint '%s' (HOST:PORT)", pos[1]);
	if (insecure && (ca_path || skip_verify))
		return usage_error("%s", "--insecure is plaintext: it takes "
		                         "neither --ca-path nor "
		                         "--skip-verify-ca");
	char *path;
	json_t *root;
	int rc = load(&path, &root);
	if (rc)
		return rc;
	json_t *c = json_pack("{s:s, s:b, s:b}", "endpoint", pos[1], "insecure",
	                      insecure, "skip_verify_ca", skip_verify);
	char token_line[4096];
	if (pos[2] && strcmp(pos[2], "-") == 0) {
		/* From stdin: keeps the token out of shell history and ps. */
		if (!fgets(token_line, sizeof(token_line), stdin)) {
			fprintf(stderr, "pemba: TOKEN -: nothing on standard "
			                "input\n");
			json_decref(c);
			json_decref(root);
			free(path);
			return CLIENT_EXIT_ERROR;
		}
		token_line[strcspn(token_line, "\r\n")] = '\0';
		pos[2] = token_line;
	}
	if (pos[2] && *pos[2])
		json_object_set_new(c, "token", json_string(pos[2]));
	if (ca_path) {
		/* Absolute, so the context works from any directory. */
		char *abs = realpath(ca_path, NULL);
		if (!abs) {
			fprintf(stderr, "pemba: --ca-path %s: %s\n", ca_path,
			        strerror(errno));
			json_decref(c);
			json_decref(root);
			free(path);
			return CLIENT_EXIT_ERROR;
		}
		json_object_set_new(c, "ca_path", json_string(abs));
		free(abs);
	}
	json_object_set_new(json_object_get(root, "contexts"), pos[0], c);
	const char *current = str_field(root, "current");
	bool made_current =
	    !current ||
	    !json_object_get(json_object_get(root, "contexts"), current);
	if (made_current)
		json_object_set_new(root, "current", json_string(pos[0]));
	rc = contexts_write(path, root) ? CLIENT_EXIT_ERROR : 0;
	if (rc == 0)
		printf("context %s set%s\n", pos[0],
		       made_current ? " (current)" : "");
	json_decref(root);
	free(path);
	return rc;
}

/* `use NAME` and `remove NAME`. */
static int context_use_or_remove(int argc, char **argv, bool remove)
{
	if (argc == 2 && client_is_help(argv[1])) {
		fputs(context_usage, stdout);
		return 0;
	}
	if (argc != 2)
		return usage_error("%s", remove ? "remove takes one NAME"
		                                : "use takes one NAME");
	const char *name = argv[1];
	char *path;
	json_t *root;
	int rc = load(&path, &root);
	if (rc)
		return rc;
	json_t *contexts = json_object_get(root, "contexts");
	if (!json_object_get(contexts, name)) {
		fprintf(stderr,
		        "pemba: no context named '%s' (see `pemba context "
		        "list`)\n",
		        name);
		rc = CLIENT_EXIT_ERROR;
		goto out;
	}
	if (remove) {
		const char *cur = str_field(root, "current");
		bool was_current = cur && strcmp(cur, name) == 0;
		json_object_del(contexts, name);
		if (was_current)
			json_object_del(root, "current");
		if (contexts_write(path, root)) {
			rc = CLIENT_EXIT_ERROR;
			goto out;
		}
		printf("context %s removed%s\n", name,
		       was_current ? "; no context is current now" : "");
	} else {
		json_object_set_new(root, "current", json_string(name));
		if (contexts_write(path, root)) {
			rc = CLIENT_EXIT_ERROR;
			goto out;
		}
		printf("using context %s\n", name);
	}
out:
	json_decref(root);
	free(path);
	return rc;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int context_list(int argc, char **argv)
{
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (client_is_help(argv[i])) {
			fputs(context_usage, stdout);
			return 0;
		}
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else
			return usage_error("list: unexpected argument '%s'",
			                   argv[i]);
	}
	char *path;
	json_t *root;
	int rc = load(&path, &root);
	if (rc)
		return rc;
	const char *cur = str_field(root, "current");
	json_t *contexts = json_object_get(root, "contexts");
	/* Sorted by name, so the output does not depend on the file. */
	size_t n = json_object_size(contexts), k = 0;
	const char **names = xcalloc(n ? n : 1, sizeof(*names));
	const char *key;
	json_t *c;
	json_object_foreach(contexts, key, c) names[k++] = key;
	qsort(names, n, sizeof(*names), compare_names);
	if (!json && n)
		printf("%-1s %-16s %-28s %-10s %s\n", "", "NAME", "ENDPOINT",
		       "TOKEN", "TLS");
	for (k = 0; k < n; k++) {
		c = json_object_get(contexts, names[k]);
		bool is_cur = cur && strcmp(cur, names[k]) == 0;
		const char *token = str_field(c, "token");
		bool has_token = token && *token;
		const char *ca = str_field(c, "ca_path");
		bool insecure = bool_field(c, "insecure");
		bool skip = bool_field(c, "skip_verify_ca");
		if (json) {
			json_t *o = json_pack(
			    "{s:s, s:s, s:b, s:s, s:b, s:b}", "name", names[k],
			    "endpoint", str_field(c, "endpoint"), "current",
			    is_cur, "token", has_token ? "<redacted>" : "",
			    "insecure", insecure, "skipVerifyCa", skip);
			if (ca)
				json_object_set_new(o, "caPath",
				                    json_string(ca));
			char *line =
			    json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
			puts(line);
			free(line);
			json_decref(o);
		} else {
			char tls[4200];
			if (insecure)
				snprintf(tls, sizeof(tls), "off (plaintext)");
			else if (skip)
				snprintf(tls, sizeof(tls), "unverified");
			else if (ca)
				snprintf(tls, sizeof(tls), "ca %s", ca);
			else
				snprintf(tls, sizeof(tls), "system CAs");
			printf("%-1s %-16s %-28s %-10s %s\n", is_cur ? "*" : "",
			       names[k], str_field(c, "endpoint"),
			       has_token ? "<redacted>" : "(none)", tls);
		}
	}
	if (!json && n == 0)
		fprintf(stderr, "no contexts (add one with `pemba context set "
		                "NAME ENDPOINT TOKEN`)\n");
	free(names);
	json_decref(root);
	free(path);
	return 0;
}

static int context_current(int argc, char **argv)
{
	if (argc == 2 && client_is_help(argv[1])) {
		fputs(context_usage, stdout);
		return 0;
	}
	if (argc != 1)
		return usage_error("current: unexpected argument '%s'",
		                   argv[1]);
	char *path;
	json_t *root;
	int rc = load(&path, &root);
	if (rc)
		return rc;
	const char *cur = str_field(root, "current");
	if (cur) {
		puts(cur);
	} else {
		fprintf(stderr, "pemba: no current context (`pemba context use "
		                "NAME`)\n");
		rc = 1;
	}
	json_decref(root);
	free(path);
	return rc;
}

static int run_set(int argc, char **argv)
{
	return context_set(argc, argv);
}
static int run_use(int argc, char **argv)
{
	return context_use_or_remove(argc, argv, false);
}
static int run_remove(int argc, char **argv)
{
	return context_use_or_remove(argc, argv, true);
}

int cmd_context(int argc, char **argv)
{
	static const client_subcommand subs[] = {
	    {"set", run_set},
	    {"use", run_use},
	    {"list", context_list},
	    {"remove", run_remove},
	    {"current", context_current},
	};
	return client_dispatch("context", context_usage, subs,
	                       sizeof(subs) / sizeof(subs[0]), argc, argv);
}
