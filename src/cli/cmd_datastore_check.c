/*
 * cmd_datastore_check.c -- `pemba datastore check [--datastore URI]
 * [--fix FILE] [--json] [--show N]`: every live relationship checked
 * against the schema (src/core/integrity.c), the orphans counted per
 * kind and per TYPE#RELATION, the first N shown; with --fix they are
 * moved to FILE (relationship lines, what `relationship import` reads)
 * and deleted in one write transaction.
 *
 * The order of --fix is what makes it safe: FILE is written under a
 * temporary name, fsynced, then linked to its name (refused if FILE
 * exists, so nothing is ever overwritten) before anything is deleted;
 * the delete (core_integrity_remove) reads FILE back and deletes exactly
 * those relationships, each only if it is still stored the same and still
 * an orphan inside the write transaction.  Any refusal before the commit
 * removes FILE again (everything in it is still in the datastore); a
 * failed commit keeps it (the outcome may be unknown on PostgreSQL).
 *
 * Exit status: 0 clean (or every orphan moved by --fix), 1 orphans found,
 * 2 error (usage, datastore, FILE, a refused --fix).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/integrity.h"
#include "store/store.h"
#include "tools/relfile.h"
#include "util/xalloc.h"

/* For the help texts; the value is cli_default_datastore(). */
#define DEFAULT_DATASTORE "$PEMBA_DATASTORE, else sqlite://./pemba.db"
#define DEFAULT_SHOW 20
/* Distinct TYPE#RELATION counted separately (a linear search: orphans
 * come from few relations); beyond, "(other)". */
#define MAX_GROUPS 1000

static void print_check_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: pemba datastore check [--datastore URI] [--fix FILE] "
	    "[--json] [--show N]\n"
	    "\n"
	    "Checks every live relationship against the schema stored with it "
	    "(both read\n"
	    "at the head revision when the check starts) with the rules a "
	    "write applies,\n"
	    "and reports the orphans: relationships the schema would refuse "
	    "now (their\n"
	    "type or relation is gone, the relation became a permission, the "
	    "subject type,\n"
	    "subject relation or wildcard, the caveat or the expiration is not "
	    "allowed).\n"
	    "Prints a count per kind and per TYPE#RELATION and the first N "
	    "orphans in\n"
	    "relationship syntax.  Reads in pages: memory does not grow with "
	    "the\n"
	    "datastore; progress goes to stderr on a terminal.  Safe while a "
	    "server runs.\n"
	    "\n"
	    "options:\n"
	    "  --datastore URI  sqlite:///abs/path.db, sqlite://./rel.db or "
	    "postgres://...\n"
	    "                   (default " DEFAULT_DATASTORE
	    "); must exist and be migrated\n"
	    "  --fix FILE       move the orphans aside: write them to FILE "
	    "(one per line,\n"
	    "                   the format `relationship import` reads; "
	    "caveats, contexts\n"
	    "                   and expirations included), fsync it, then "
	    "delete exactly\n"
	    "                   them in one write transaction (a new "
	    "revision; Watch shows\n"
	    "                   the deletes).  FILE must not exist.  A "
	    "relationship\n"
	    "                   changed meanwhile, or a schema fixed "
	    "meanwhile, refuses\n"
	    "                   the whole move (nothing deleted, FILE "
	    "removed): run again.\n"
	    "                   Refused on a read-only datastore.  After "
	    "fixing the schema,\n"
	    "                   `pemba relationship import FILE` puts them "
	    "back.\n"
	    "  --json           one JSON object on stdout instead of text\n"
	    "  --show N         orphans listed (default %d; 0: none)\n"
	    "  -h, --help       show this help\n"
	    "\n"
	    "Exit status: 0 clean (or every orphan moved by --fix), 1 orphans "
	    "found,\n"
	    "2 error (bad URI, unmigrated datastore, FILE exists, --fix "
	    "refused).\n",
	    DEFAULT_SHOW);
}

static int usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "pemba datastore check: %s%s%s%s\n\n", what,
	        arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
	print_check_usage(stderr);
	return 2;
}

/* ============================================================== report */

typedef struct group {
	char *name; /* TYPE#RELATION */
	uint64_t count;
} group;

typedef struct example {
	char *rel; /* relationship text */
	core_rel_problem kind;
	char *message;
} example;

typedef struct check_run {
	const char *shown_uri;
	bool json;
	size_t show;
	/* per TYPE#RELATION */
	group *groups;
	size_t ngroups;
	uint64_t other;
	example *examples;
	size_t nexamples;
	/* --fix */
	FILE *fix_out;
	const char *fix_error; /* why writing stopped (static or owned) */
	char *fix_error_buf;
	uint64_t written;
	/* progress */
	bool tty;
	bool progress_shown;
	struct timespec last_progress;
} check_run;

static void count_group(check_run *run, const pemba_relationship *r)
{
	char name[512];
	snprintf(name, sizeof(name), "%s#%s",
	         r->resource_type ? r->resource_type : "",
	         r->relation ? r->relation : "");
	for (size_t i = run->ngroups; i-- > 0;)
		if (strcmp(run->groups[i].name, name) == 0) {
			run->groups[i].count++;
			return;
		}
	if (run->ngroups == MAX_GROUPS) {
		run->other++;
		return;
	}
	run->groups =
	    xrealloc(run->groups, (run->ngroups + 1) * sizeof(*run->groups));
	run->groups[run->ngroups++] = (group){xstrdup(name), 1};
}

/* Whether text reads back as exactly r (the file must re-import to the
 * same rows the delete removes). */
static bool reads_back(const char *text, const pemba_relationship *r)
{
	pemba_relationship p;
	char *storage = NULL;
	pemba_error err = {0};
	if (pemba_parse_relationship(text, &p, &storage, &err) != 0)
		return false;
#define SAME(x, y) (strcmp((x) ? (x) : "", (y) ? (y) : "") == 0)
	const char *psr = p.subject_relation, *rsr = r->subject_relation;
	if (psr && strcmp(psr, "...") == 0)
		psr = NULL;
	if (rsr && strcmp(rsr, "...") == 0)
		rsr = NULL;
	bool same = SAME(p.resource_type, r->resource_type) &&
	            SAME(p.resource_id, r->resource_id) &&
	            SAME(p.relation, r->relation) &&
	            SAME(p.subject_type, r->subject_type) &&
	            SAME(p.subject_id, r->subject_id) && SAME(psr, rsr) &&
	            SAME(p.caveat_name, r->caveat_name) &&
	            SAME(p.caveat_context, r->caveat_context) &&
	            p.expiration_ms == r->expiration_ms;
#undef SAME
	pemba_free(storage);
	return same;
}

static int on_orphan(void *ctx, const core_orphan *o)
{
	check_run *run = ctx;
	count_group(run, o->rel);
	char *text = pemba_format_relationship(o->rel);
	if (run->nexamples < run->show) {
		run->examples =
		    xrealloc(run->examples,
		             (run->nexamples + 1) * sizeof(*run->examples));
		run->examples[run->nexamples++] =
		    (example){xstrdup(text), o->kind, xstrdup(o->message)};
	}
	int stop = 0;
	if (run->fix_out) {
		if (!reads_back(text, o->rel)) {
			size_t n = strlen(text) + 200;
			run->fix_error_buf = xmalloc(n);
			snprintf(run->fix_error_buf, n,
			         "cannot move `%s`: its relationship text does "
			         "not read back as the same relationship",
			         text);
			run->fix_error = run->fix_error_buf;
			stop = 1;
		} else if (fprintf(run->fix_out, "%s\n", text) < 0) {
			run->fix_error = strerror(errno);
			stop = 1;
		} else {
			run->written++;
		}
	}
	pemba_free(text);
	return stop;
}

static void on_progress(void *ctx, uint64_t checked)
{
	check_run *run = ctx;
	if (!run->tty)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double since = (double)(now.tv_sec - run->last_progress.tv_sec) +
	               (double)(now.tv_nsec - run->last_progress.tv_nsec) / 1e9;
	if (run->progress_shown && since < 0.5)
		return;
	run->last_progress = now;
	run->progress_shown = true;
	fprintf(stderr, "\rpemba datastore check: %llu relationships checked",
	        (unsigned long long)checked);
	fflush(stderr);
}

static void end_progress(check_run *run)
{
	if (run->progress_shown)
		fprintf(stderr, "\n");
	run->progress_shown = false;
}

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;
	     p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* The fix's outcome, for the report. */
typedef struct fix_result {
	const char *file; /* NULL: no --fix */
	uint64_t moved;
	pemba_revision revision;
} fix_result;

static void print_json(const check_run *run, const core_integrity_report *rep,
                       const fix_result *fix)
{
	printf("{\"datastore\":");
	json_string(stdout, run->shown_uri);
	printf(",\"revision\":%llu,\"schema_revision\":%llu,\"checked\":%llu,"
	       "\"orphans\":%llu,\"by_kind\":{",
	       (unsigned long long)rep->revision,
	       (unsigned long long)rep->schema_revision,
	       (unsigned long long)rep->checked,
	       (unsigned long long)rep->orphans);
	bool first = true;
	for (int k = 1; k < CORE_REL_PROBLEM_COUNT; k++) {
		if (!rep->by_kind[k])
			continue;
		printf("%s\"%s\":%llu", first ? "" : ",",
		       core_rel_problem_name((core_rel_problem)k),
		       (unsigned long long)rep->by_kind[k]);
		first = false;
	}
	printf("},\"by_relation\":{");
	for (size_t i = 0; i < run->ngroups; i++) {
		if (i)
			putchar(',');
		json_string(stdout, run->groups[i].name);
		printf(":%llu", (unsigned long long)run->groups[i].count);
	}
	if (run->other)
		printf("%s\"(other)\":%llu", run->ngroups ? "," : "",
		       (unsigned long long)run->other);
	printf("},\"examples\":[");
	for (size_t i = 0; i < run->nexamples; i++) {
		printf("%s{\"relationship\":", i ? "," : "");
		json_string(stdout, run->examples[i].rel);
		printf(",\"kind\":\"%s\",\"message\":",
		       core_rel_problem_name(run->examples[i].kind));
		json_string(stdout, run->examples[i].message);
		putchar('}');
	}
	putchar(']');
	if (fix->file) {
		printf(",\"fix\":{\"file\":");
		json_string(stdout, fix->file);
		printf(",\"moved\":%llu,\"revision\":%llu}",
		       (unsigned long long)fix->moved,
		       (unsigned long long)fix->revision);
	}
	printf("}\n");
}

static void print_text(const check_run *run, const core_integrity_report *rep,
                       const fix_result *fix)
{
	if (rep->schema_revision)
		printf("checked %llu relationships of %s at revision %llu "
		       "against the schema written at revision %llu\n",
		       (unsigned long long)rep->checked, run->shown_uri,
		       (unsigned long long)rep->revision,
		       (unsigned long long)rep->schema_revision);
	else
		printf("checked %llu relationships of %s at revision %llu "
		       "(no schema)\n",
		       (unsigned long long)rep->checked, run->shown_uri,
		       (unsigned long long)rep->revision);
	if (rep->orphans == 0) {
		printf("orphans: 0\n");
		return;
	}
	printf("orphans: %llu\n", (unsigned long long)rep->orphans);
	printf("by kind:\n");
	for (int k = 1; k < CORE_REL_PROBLEM_COUNT; k++)
		if (rep->by_kind[k])
			printf("  %-26s %llu\n",
			       core_rel_problem_name((core_rel_problem)k),
			       (unsigned long long)rep->by_kind[k]);
	printf("by relation:\n");
	for (size_t i = 0; i < run->ngroups; i++)
		printf("  %-26s %llu\n", run->groups[i].name,
		       (unsigned long long)run->groups[i].count);
	if (run->other)
		printf("  %-26s %llu\n", "(other)",
		       (unsigned long long)run->other);
	if (run->nexamples) {
		printf("%s (%s%zu):\n", fix->file ? "moved" : "orphans",
		       run->nexamples < rep->orphans ? "first " : "",
		       run->nexamples);
		for (size_t i = 0; i < run->nexamples; i++)
			printf("  %s  %s\n", run->examples[i].rel,
			       core_rel_problem_name(run->examples[i].kind));
	}
	if (fix->file)
		printf("moved %llu relationships to %s (deleted at revision "
		       "%llu); after fixing the schema, `pemba relationship "
		       "import %s` puts them back\n",
		       (unsigned long long)fix->moved, fix->file,
		       (unsigned long long)fix->revision, fix->file);
	else
		printf("run with --fix FILE to move them aside\n");
}

/* ================================================================= fix */

/* fsyncs the directory holding path (so a new name in it is durable). */
static int sync_dir_of(const char *path)
{
	char *copy = xstrdup(path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
	free(copy);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

typedef struct file_source {
	relfile *reader;
	const char *name;
} file_source;

static int next_from_file(void *ctx, pemba_relationship *rel, pemba_error *err)
{
	file_source *src = ctx;
	int line;
	const char *error;
	int r = relfile_next(src->reader, rel, &line, &error);
	if (r < 0) {
		snprintf(err->message, sizeof(err->message), "%s: %s",
		         src->name, error);
		err->code = PEMBA_EINVAL;
		return PEMBA_EINVAL;
	}
	return r;
}

/* Deletes the relationships of `file` (just written).  0, or 2 after
 * printing why (FILE removed when nothing was deleted for sure). */
static int remove_moved(pemba_db *db, const char *file, fix_result *fix)
{
	FILE *in = fopen(file, "r");
	char *open_error = NULL;
	relfile *reader = NULL;
	if (!in || relfile_open(in, &reader, &open_error) != 0) {
		fprintf(stderr,
		        "pemba datastore check: cannot read back %s: %s; "
		        "nothing deleted\n",
		        file, open_error ? open_error : strerror(errno));
		free(open_error);
		if (in)
			fclose(in);
		unlink(file);
		return 2;
	}
	file_source src = {reader, file};
	pemba_error err = {0};
	int rc = core_integrity_remove(db, next_from_file, &src, &fix->revision,
	                               &fix->moved, &err);
	relfile_close(reader);
	fclose(in);
	if (rc == 0)
		return 0;
	/* Refusals come before the commit: nothing was deleted, and FILE
	 * only copies rows still stored.  A failed commit may have
	 * committed after all (a lost connection): keep FILE then. */
	bool before_commit = rc == PEMBA_EPRECONDITION ||
	                     rc == PEMBA_EREADONLY || rc == PEMBA_EINVAL;
	if (before_commit) {
		unlink(file);
		fprintf(stderr,
		        "pemba datastore check: --fix refused: %s; nothing was "
		        "deleted and %s was removed; run the check again\n",
		        err.message, file);
	} else {
		fprintf(stderr,
		        "pemba datastore check: --fix failed: %s; %s is kept: "
		        "check whether its relationships are still stored "
		        "before re-importing it\n",
		        err.message, file);
	}
	return 2;
}

/* ================================================================ entry */

int cmd_datastore_check(int argc, char **argv)
{
	const char *uri = cli_default_datastore(), *fix_file = NULL,
	           *show_text = NULL;
	bool json = false, help = false;
	const cli_flag_spec flags[] = {
	    {"--datastore", &uri, NULL},
	    {"--fix", &fix_file, NULL},
	    {"--show", &show_text, NULL},
	    {"--json", NULL, &json},
	};
	int rc =
	    cli_datastore_flags("check", print_check_usage, argc, argv, flags,
	                        sizeof(flags) / sizeof(flags[0]), &help);
	if (rc)
		return rc;
	if (help) {
		print_check_usage(stdout);
		return 0;
	}
	long show = DEFAULT_SHOW;
	if (show_text) {
		char *end;
		errno = 0;
		show = strtol(show_text, &end, 10);
		if (*end || errno || show < 0 || show > 1000000)
			return usage_error("--show needs a number from 0 to "
			                   "1000000, not",
			                   show_text);
	}

	char *shown = store_display_uri(uri);
	check_run run = {.shown_uri = shown,
	                 .json = json,
	                 .show = (size_t)show,
	                 .tty = isatty(STDERR_FILENO) != 0};
	clock_gettime(CLOCK_MONOTONIC, &run.last_progress);
	fix_result fix = {0};
	char *tmp = NULL;
	int status = 2;
	pemba_db *db = NULL;
	pemba_error err = {0};

	if (fix_file) {
		struct stat st;
		if (lstat(fix_file, &st) == 0) {
			fprintf(stderr,
			        "pemba datastore check: %s exists; --fix never "
			        "overwrites a file (nothing changed)\n",
			        fix_file);
			goto out;
		}
	}
	if (core_integrity_open(uri, &db, &err) != 0) {
		fprintf(stderr, "pemba datastore check: %s: %s\n", shown,
		        err.message);
		goto out;
	}
	if (fix_file) {
		if (core_integrity_writable(db, &err) != 0) {
			fprintf(stderr,
			        "pemba datastore check: --fix needs a writable "
			        "datastore: %s (nothing changed)\n",
			        err.message);
			goto out;
		}
		size_t n = strlen(fix_file) + 32;
		tmp = xmalloc(n);
		snprintf(tmp, n, "%s.tmp-%ld", fix_file, (long)getpid());
		int fd =
		    open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || !(run.fix_out = fdopen(fd, "w"))) {
			fprintf(stderr,
			        "pemba datastore check: cannot create "
			        "%s: %s (nothing changed)\n",
			        tmp, strerror(errno));
			if (fd >= 0)
				close(fd);
			free(tmp);
			tmp = NULL;
			goto out;
		}
		fprintf(run.fix_out,
		        "# moved by `pemba datastore check --fix` from %s: "
		        "relationships the schema refused;\n"
		        "# `pemba relationship import` this file once the "
		        "schema accepts them\n",
		        shown);
	}

	core_integrity_report rep;
	rc = core_integrity_check(db, 0, on_orphan, &run, on_progress, &run,
	                          &rep, &err);
	end_progress(&run);
	if (rc < 0) {
		fprintf(stderr, "pemba datastore check: %s: %s\n", shown,
		        err.message);
		goto out;
	}
	if (run.fix_error) {
		fprintf(stderr,
		        "pemba datastore check: --fix: %s (nothing changed)\n",
		        run.fix_error);
		goto out;
	}
	if (fix_file && rep.orphans > 0) {
		/* Durable under its final name before any delete. */
		FILE *f = run.fix_out;
		run.fix_out = NULL;
		bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
		ok = (fclose(f) == 0) && ok;
		if (!ok) {
			fprintf(stderr,
			        "pemba datastore check: cannot write "
			        "%s: %s (nothing changed)\n",
			        tmp, strerror(errno));
			goto out;
		}
		if (link(tmp, fix_file) != 0) {
			fprintf(stderr,
			        "pemba datastore check: cannot create %s: %s "
			        "(nothing changed)\n",
			        fix_file,
			        errno == EEXIST ? "it exists; --fix never "
			                          "overwrites a file"
			                        : strerror(errno));
			goto out;
		}
		unlink(tmp);
		free(tmp);
		tmp = NULL;
		if (sync_dir_of(fix_file) != 0) {
			fprintf(stderr,
			        "pemba datastore check: cannot sync the "
			        "directory of %s: %s (nothing deleted)\n",
			        fix_file, strerror(errno));
			unlink(fix_file);
			goto out;
		}
		fix.file = fix_file;
		if ((status = remove_moved(db, fix_file, &fix)) != 0) {
			fix.file = NULL;
			goto out;
		}
	}
	if (json)
		print_json(&run, &rep, &fix);
	else
		print_text(&run, &rep, &fix);
	status = rep.orphans == 0 || fix.file ? 0 : 1;

out:
	if (run.fix_out)
		fclose(run.fix_out);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	if (db)
		pemba_close(db);
	for (size_t i = 0; i < run.ngroups; i++)
		free(run.groups[i].name);
	free(run.groups);
	for (size_t i = 0; i < run.nexamples; i++) {
		free(run.examples[i].rel);
		free(run.examples[i].message);
	}
	free(run.examples);
	free(run.fix_error_buf);
	free(shown);
	return status;
}
