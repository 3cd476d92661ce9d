/*
 * cmd_completion.c -- `pemba completion bash|zsh`: a shell completion
 * script generated from the command table (main.c) and each command's
 * own --help, so it cannot drift from the commands:
 *
 *   - commands: the table;
 *   - subcommands: the words a command's --help lists (a `subcommands:`
 *     or `commands:` section, or its `usage: pemba CMD WORD` lines), each
 *     kept only if `pemba CMD WORD --help` succeeds;
 *   - flags: every `--flag` the (sub)command's --help mentions;
 *   - words after a subcommand: lowercase alternatives in its usage line
 *     (`datastore migrate status|up|down|head`, `admin read-only on|off`).
 *
 * The help texts are captured by running each command's function in a
 * child process (fork, stdout to a pipe), as `pemba CMD --help` would.
 * zsh gets the same script through zsh's bashcompinit.
 */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

static const char completion_usage[] =
    "usage: pemba completion bash|zsh\n"
    "\n"
    "Prints a completion script for the shell: commands, subcommands and "
    "the flags\nof each (generated from the commands' own --help).\n"
    "\n"
    "  bash:  source <(pemba completion bash)      (e.g. in ~/.bashrc)\n"
    "  zsh:   source <(pemba completion zsh)       (e.g. in ~/.zshrc; "
    "uses bashcompinit)\n"
    "\n"
    "Exit status: 0 success, 2 usage error.\n";

/* ===================================================================== */
/* Word lists                                                            */
/* ===================================================================== */

typedef struct words {
	char **v;
	size_t n, cap;
} words;

static bool words_has(const words *w, const char *s, size_t len)
{
	for (size_t k = 0; k < w->n; k++)
		if (strlen(w->v[k]) == len && memcmp(w->v[k], s, len) == 0)
			return true;
	return false;
}

static void words_add(words *w, const char *s, size_t len)
{
	if (len == 0 || words_has(w, s, len))
		return;
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 16;
		w->v = xrealloc(w->v, w->cap * sizeof(*w->v));
	}
	char *copy = xmalloc(len + 1);
	memcpy(copy, s, len);
	copy[len] = '\0';
	w->v[w->n++] = copy;
}

static void words_free(words *w)
{
	for (size_t k = 0; k < w->n; k++)
		free(w->v[k]);
	free(w->v);
	memset(w, 0, sizeof(*w));
}

static void words_print(FILE *out, const words *w)
{
	for (size_t k = 0; k < w->n; k++)
		fprintf(out, "%s%s", k ? " " : "", w->v[k]);
}

/* ===================================================================== */
/* Help texts                                                            */
/* ===================================================================== */

/* Runs `pemba CMD [SUB] --help` in a child; returns its stdout (heap)
 * and sets *status to its exit status (-1 when it could not run). */
static char *capture_help(const cli_command *c, const char *sub, int *status)
{
	*status = -1;
	int fds[2];
	if (pipe(fds) != 0)
		return xstrdup("");
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDOUT_FILENO);
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, STDERR_FILENO);
			dup2(null, STDIN_FILENO);
		}
		char name[64], s[64], help[] = "--help";
		snprintf(name, sizeof(name), "%s", c->name);
		snprintf(s, sizeof(s), "%s", sub ? sub : "");
		char *argv[] = {name, sub ? s : help, sub ? help : NULL, NULL};
		int rc = c->run(sub ? 3 : 2, argv);
		fflush(stdout);
		_exit(rc & 0xff);
	}
	close(fds[1]);
	strbuf sb;
	strbuf_init(&sb);
	char buf[4096];
	ssize_t n;
	while (pid > 0 && (n = read(fds[0], buf, sizeof(buf))) > 0)
		strbuf_append(&sb, buf, (size_t)n);
	close(fds[0]);
	int ws;
	if (pid > 0 && waitpid(pid, &ws, 0) == pid && WIFEXITED(ws))
		*status = WEXITSTATUS(ws);
	char *text = xstrdup(sb.data ? sb.data : "");
	strbuf_free(&sb);
	return text;
}

static bool is_word_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_';
}

/* Adds the `|`-separated lowercase words of text[0..len) to w; nothing
 * when it holds anything else (an argument like NAME or FILE|-). */
static void add_alternatives(words *w, const char *text, size_t len)
{
	for (size_t k = 0; k < len; k++)
		if (!is_word_char(text[k]) && text[k] != '|')
			return;
	if (len == 0 || !islower((unsigned char)text[0]))
		return;
	size_t start = 0;
	for (size_t k = 0; k <= len; k++)
		if (k == len || text[k] == '|') {
			if (k > start && text[k - 1] != '-')
				words_add(w, text + start, k - start);
			start = k + 1;
		}
}

/* The token after "pemba PREFIX " on each line of help (PREFIX is "CMD"
 * or "CMD SUB"), split at '|'. */
static void usage_words(const char *help, const char *prefix, words *out)
{
	char needle[160];
	snprintf(needle, sizeof(needle), "pemba %s ", prefix);
	for (const char *p = help; (p = strstr(p, needle)) != NULL;) {
		p += strlen(needle);
		size_t len = strcspn(p, " \n");
		add_alternatives(out, p, len);
	}
}

/* Candidate subcommands of a command's help: the first word of the
 * two-space-indented lines of a "subcommands:" / "commands:" section,
 * then the usage lines' words. */
static void candidate_subs(const char *help, const char *cmd, words *out)
{
	const char *sec = strstr(help, "\nsubcommands:\n");
	if (!sec)
		sec = strstr(help, "\ncommands:\n");
	if (sec) {
		const char *p = strchr(sec + 1, '\n') + 1;
		while (*p && *p != '\n') {
			const char *eol = strchr(p, '\n');
			if (!eol)
				eol = p + strlen(p);
			if (p[0] == ' ' && p[1] == ' ' &&
			    islower((unsigned char)p[2])) {
				size_t len = 0;
				while (is_word_char(p[2 + len]))
					len++;
				words_add(out, p + 2, len);
			}
			p = *eol ? eol + 1 : eol;
		}
	}
	usage_words(help, cmd, out);
}

/* Every --flag the help mentions. */
static void help_flags(const char *help, words *out)
{
	for (const char *p = help; (p = strstr(p, "--")) != NULL; p += 2) {
		if (p > help && (is_word_char(p[-1]) || p[-1] == '-'))
			continue;
		if (!islower((unsigned char)p[2]))
			continue;
		size_t len = 2;
		while (is_word_char(p[len]))
			len++;
		if (p[len - 1] != '-')
			words_add(out, p, len);
	}
	words_add(out, "--help", 6);
}

/* ===================================================================== */
/* The script                                                            */
/* ===================================================================== */

/* One command's case arm. */
static void print_command(FILE *out, const cli_command *c)
{
	int status;
	char *help = capture_help(c, NULL, &status);
	words cand = {0}, subs = {0};
	candidate_subs(help, c->name, &cand);
	char **sub_help = xcalloc(cand.n ? cand.n : 1, sizeof(char *));
	for (size_t k = 0; k < cand.n; k++) {
		int st;
		char *h = capture_help(c, cand.v[k], &st);
		/* A real subcommand prints its own usage naming it. */
		char needle[160];
		snprintf(needle, sizeof(needle), "pemba %s %s", c->name,
		         cand.v[k]);
		if (st == 0 && strstr(h, needle)) {
			sub_help[subs.n] = h;
			words_add(&subs, cand.v[k], strlen(cand.v[k]));
		} else {
			free(h);
		}
	}
	fprintf(out, "\t\t%s)\n", c->name);
	if (subs.n == 0) {
		words flags = {0};
		help_flags(help, &flags);
		fprintf(out, "\t\t\tflags=\"");
		words_print(out, &flags);
		fprintf(out, "\"\n\t\t\t;;\n");
		words_free(&flags);
	} else {
		/* The command's own flags (`proxy` runs without a
		 * subcommand too), until a subcommand is named. */
		words own = {0};
		help_flags(help, &own);
		fprintf(out, "\t\t\tflags=\"");
		words_print(out, &own);
		words_free(&own);
		fprintf(out, "\"\n\t\t\tif ((COMP_CWORD == 2)); then\n"
		             "\t\t\t\twords=\"");
		words_print(out, &subs);
		fprintf(out, "\"\n\t\t\tfi\n\t\t\tcase \"$sub\" in\n");
		for (size_t k = 0; k < subs.n; k++) {
			words flags = {0}, args = {0};
			help_flags(sub_help[k], &flags);
			char prefix[160];
			snprintf(prefix, sizeof(prefix), "%s %s", c->name,
			         subs.v[k]);
			usage_words(sub_help[k], prefix, &args);
			fprintf(out, "\t\t\t%s)\n\t\t\t\tflags=\"", subs.v[k]);
			words_print(out, &flags);
			fprintf(out, "\"\n");
			if (args.n) {
				fprintf(out, "\t\t\t\targs3=\"");
				words_print(out, &args);
				fprintf(out, "\"\n");
			}
			fprintf(out, "\t\t\t\t;;\n");
			words_free(&flags);
			words_free(&args);
			free(sub_help[k]);
		}
		fprintf(out, "\t\t\tesac\n\t\t\t;;\n");
	}
	free(sub_help);
	words_free(&cand);
	words_free(&subs);
	free(help);
}

static void print_script(FILE *out, bool zsh)
{
	if (zsh)
		fprintf(out, "#compdef pemba\n"
		             "# zsh completion for pemba, generated by `pemba "
		             "completion zsh`: the bash\n"
		             "# script below, through zsh's bashcompinit.\n"
		             "autoload -U +X bashcompinit && bashcompinit\n\n");
	else
		fprintf(out,
		        "# bash completion for pemba, generated by `pemba "
		        "completion bash`.\n"
		        "# Load it with: source <(pemba completion bash)\n");
	fprintf(out,
	        "_pemba_complete() {\n"
	        "\tlocal cmd sub cur prev words=\"\" flags=\"\" args3=\"\"\n"
	        "\t# Positional parameters index the same way in bash and "
	        "zsh.\n"
	        "\tset -- \"${COMP_WORDS[@]}\"\n"
	        "\tcmd=${2-} sub=${3-}\n"
	        "\teval \"cur=\\${$((COMP_CWORD + 1))-}\"\n"
	        "\teval \"prev=\\${$COMP_CWORD-}\"\n"
	        "\t# Context names, from the contexts file (never the "
	        "tokens).\n"
	        "\tif [[ $prev == --context ]] || { [[ $cmd == context "
	        "]] &&\n"
	        "\t\t[[ $sub == use || $sub == remove ]] && "
	        "((COMP_CWORD == 3)); }; then\n"
	        "\t\tCOMPREPLY=($(compgen -W \"$(\"$1\" context list "
	        "--json 2>/dev/null |\n"
	        "\t\t\tsed -n 's/^{\"name\":\"\\([^\"]*\\)\".*/\\1/p')\" "
	        "-- \"$cur\"))\n"
	        "\t\treturn\n"
	        "\tfi\n"
	        "\tif ((COMP_CWORD == 1)); then\n"
	        "\t\twords=\"help --help --version");
	for (size_t i = 0; i < cli_ncommands; i++)
		fprintf(out, " %s", cli_commands[i].name);
	fprintf(out, "\"\n\telse\n\t\tcase \"$cmd\" in\n\t\thelp)\n"
	             "\t\t\t((COMP_CWORD == 2)) && words=\"");
	for (size_t i = 0; i < cli_ncommands; i++)
		fprintf(out, "%s%s", i ? " " : "", cli_commands[i].name);
	fprintf(out, "\"\n\t\t\t;;\n");
	for (size_t i = 0; i < cli_ncommands; i++)
		if (cli_commands[i].run != cmd_completion)
			print_command(out, &cli_commands[i]);
	fprintf(out, "\t\tcompletion)\n"
	             "\t\t\t((COMP_CWORD == 2)) && words=\"bash zsh\"\n"
	             "\t\t\t;;\n"
	             "\t\tesac\n"
	             "\tfi\n"
	             "\tif [[ $cur == -* ]]; then\n"
	             "\t\tCOMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n"
	             "\telif [[ -n $words ]]; then\n"
	             "\t\tCOMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
	             "\telif ((COMP_CWORD == 3)) && [[ -n $args3 ]]; then\n"
	             "\t\tCOMPREPLY=($(compgen -W \"$args3\" -- \"$cur\"))\n"
	             "\telse\n"
	             "\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
	             "\tfi\n"
	             "}\n"
	             "complete -F _pemba_complete pemba\n");
}

int cmd_completion(int argc, char **argv)
{
	if (argc == 2 &&
	    (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		fputs(completion_usage, stdout);
		return 0;
	}
	if (argc != 2 ||
	    (strcmp(argv[1], "bash") != 0 && strcmp(argv[1], "zsh") != 0)) {
		fprintf(stderr, "pemba completion: %s\n\n",
		        argc < 2 ? "name the shell" : "bash or zsh");
		fputs(completion_usage, stderr);
		return 2;
	}
	print_script(stdout, strcmp(argv[1], "zsh") == 0);
	return fflush(stdout) == 0 ? 0 : 1;
}
