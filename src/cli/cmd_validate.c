/*
 * cmd_validate.c -- `pemba validate FILE.yaml...`: runs validation files
 * in-process (src/tools/validate.c) and presents the results.
 *
 * Output, on stdout, per file: "OK path (N assertions)" (", K expected
 * relations" when the file has a `validation` block) or one
 * "path:line:column: reason" line per failure followed by
 * "FAIL path (K failures)"; notes about unchecked parts as
 * "path:line: note: ..."; then a summary line.  Exit 0 if every file
 * passes, 1 if any fails, 2 on usage errors (and a --datastore that
 * cannot be opened or is not empty).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "store/store.h"
#include "tools/tools.h"

static void print_validate_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: pemba validate [--quiet] [--json] FILE.yaml...\n"
	    "       pemba validate [--quiet] --datastore URI FILE.yaml\n"
	    "\n"
	    "Runs SpiceDB/zed validation files in-process against a fresh "
	    "in-memory\n"
	    "datastore (or the one --datastore names): writes the schema, "
	    "loads the\n"
	    "relationships, checks the assertions (assertTrue, assertFalse,\n"
	    "assertCaveated; an item may end with ' with {json context}') and\n"
	    "compares the 'validation'\n"
	    "expected relations (\"[subject] is <resource:id#relation>\" "
	    "lists)\n"
	    "with the subjects found by expanding each permission.\n"
	    "Relationships may carry a caveat ([name], [name:{json}]) or an\n"
	    "expiration ([expiration:RFC3339]).  Caveats are evaluated (the "
	    "CEL subset\n"
	    "SpiceDB accepts), with the relationship's context merged with "
	    "the\n"
	    "assertion's: assertTrue holds only when the caveat is true, "
	    "assertCaveated\n"
	    "when parameters are missing, assertFalse when it is false; "
	    "expired\n"
	    "relationships count as absent.\n"
	    "\n"
	    "options:\n"
	    "  --datastore URI  run against this datastore instead of a "
	    "private\n"
	    "                   in-memory one (default sqlite::memory:), e.g.\n"
	    "                   postgres://user@host/db; it must be empty "
	    "(nothing\n"
	    "                   ever written into it, else it is refused) and "
	    "keeps\n"
	    "                   what the file loads; one FILE only, since each "
	    "file\n"
	    "                   needs an empty datastore\n"
	    "  -q, --quiet      print only failures and the summary\n"
	    "  --json           one JSON object per file ({\"file\", \"ok\", "
	    "\"assertions\",\n"
	    "                   \"expectedRelations\", \"failures\": "
	    "[{\"line\", \"column\",\n"
	    "                   \"message\"}], \"notes\"}), then "
	    "{\"files\", \"passed\", \"failed\"}\n"
	    "  -h, --help       show this help\n"
	    "\n"
	    "Exit status: 0 all files pass, 1 some file fails, 2 usage "
	    "error\n"
	    "(a --datastore that cannot be opened or is not empty "
	    "included).\n");
}

/* "path:line:column: " with the parts that are known. */
static void print_location(const char *path, const validate_issue *issue)
{
	if (issue->line > 0 && issue->column > 0)
		printf("%s:%d:%d: ", path, issue->line, issue->column);
	else if (issue->line > 0)
		printf("%s:%d: ", path, issue->line);
	else
		printf("%s: ", path);
}

/* The issues as [{"line":L,"column":C,"message":M}] (0: unknown). */
static json_t *issues_json(const validate_issue *issues, size_t n)
{
	json_t *a = json_array();
	for (size_t k = 0; k < n; k++)
		json_array_append_new(a, json_pack("{s:i, s:i, s:s}", "line",
		                                   issues[k].line, "column",
		                                   issues[k].column, "message",
		                                   issues[k].message));
	return a;
}

/* --json: one line per file. */
static void print_file_json(const char *path, const validate_result *r, bool ok)
{
	json_t *o =
	    json_pack("{s:s, s:b, s:I, s:I, s:o, s:o}", "file", path, "ok", ok,
	              "assertions", (json_int_t)r->assertions,
	              "expectedRelations", (json_int_t)r->expected_relations,
	              "failures", issues_json(r->failures, r->nfailures),
	              "notes", issues_json(r->notes, r->nnotes));
	char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	puts(text);
	free(text);
	json_decref(o);
}

int cmd_validate(int argc, char **argv)
{
	int quiet = 0, json = 0, first_file = argc;
	const char *datastore = NULL;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--") == 0) {
			first_file = i + 1;
			break;
		}
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			print_validate_usage(stdout);
			return 0;
		}
		if (strcmp(arg, "-q") == 0 || strcmp(arg, "--quiet") == 0) {
			quiet = 1;
			continue;
		}
		if (strcmp(arg, "--json") == 0) {
			json = 1;
			continue;
		}
		if (strcmp(arg, "--datastore") == 0 ||
		    strncmp(arg, "--datastore=", 12) == 0) {
			const char *value = arg[11] == '=' ? arg + 12 : NULL;
			if (value == NULL && i + 1 < argc)
				value = argv[++i];
			if (value == NULL || value[0] == '\0') {
				fprintf(stderr, "pemba validate: --datastore "
				                "needs a URI\n\n");
				print_validate_usage(stderr);
				return 2;
			}
			if (datastore != NULL) {
				fprintf(stderr, "pemba validate: --datastore "
				                "given twice\n\n");
				print_validate_usage(stderr);
				return 2;
			}
			datastore = value;
			continue;
		}
		if (arg[0] == '-' && arg[1] != '\0') {
			fprintf(stderr,
			        "pemba validate: unknown option '%s'\n\n", arg);
			print_validate_usage(stderr);
			return 2;
		}
		first_file = i;
		break;
	}
	/* Options come first; everything from the first file on is a file. */
	if (first_file >= argc) {
		fprintf(stderr, "pemba validate: no files given\n\n");
		print_validate_usage(stderr);
		return 2;
	}

	if (datastore != NULL) {
		/* Each file needs an empty datastore, and clearing one between
		 * files could wipe a datastore named by mistake: refuse. */
		if (argc - first_file > 1) {
			fprintf(
			    stderr,
			    "pemba validate: --datastore takes one FILE "
			    "(got %d): each file needs an empty datastore\n",
			    argc - first_file);
			return 2;
		}
		char *why = NULL;
		if (validate_datastore_check(datastore, &why) != 0) {
			char *shown = store_display_uri(datastore);
			fprintf(stderr, "pemba validate: --datastore %s: %s\n",
			        shown, why);
			free(shown);
			free(why);
			return 2;
		}
	}

	int passed = 0, failed = 0;
	for (int i = first_file; i < argc; i++) {
		const char *path = argv[i];
		validate_result result;
		int rc = validate_file_in(path, datastore, &result);
		if (json) {
			print_file_json(path, &result, rc == 0);
			if (rc == 0)
				passed++;
			else
				failed++;
			validate_result_free(&result);
			continue;
		}
		for (size_t k = 0; k < result.nfailures; k++) {
			print_location(path, &result.failures[k]);
			printf("%s\n", result.failures[k].message);
		}
		if (!quiet) {
			for (size_t k = 0; k < result.nnotes; k++) {
				print_location(path, &result.notes[k]);
				printf("note: %s\n", result.notes[k].message);
			}
		}
		if (rc == 0) {
			passed++;
			if (!quiet && result.expected_relations)
				printf("OK %s (%zu assertion%s, %zu expected "
				       "relation%s)\n",
				       path, result.assertions,
				       result.assertions == 1 ? "" : "s",
				       result.expected_relations,
				       result.expected_relations == 1 ? ""
				                                      : "s");
			else if (!quiet)
				printf("OK %s (%zu assertion%s)\n", path,
				       result.assertions,
				       result.assertions == 1 ? "" : "s");
		} else {
			failed++;
			printf("FAIL %s (%zu failure%s)\n", path,
			       result.nfailures,
			       result.nfailures == 1 ? "" : "s");
		}
		validate_result_free(&result);
	}
	if (json)
		printf("{\"files\":%d,\"passed\":%d,\"failed\":%d}\n",
		       passed + failed, passed, failed);
	else
		printf("%d file%s: %d passed, %d failed\n", passed + failed,
		       passed + failed == 1 ? "" : "s", passed, failed);
	fflush(stdout);
	return failed ? 1 : 0;
}
