/*
 * cmd_datastore.c -- `pemba datastore migrate status|up|down|head`: shows
 * and changes the layout version of a datastore (the numbered layout
 * migrations of src/store); `datastore gc`, `snapshot` and
 * `new-identity`; `check` is cmd_datastore_check.c.
 *
 * Changing commands (up, head, down, new-identity) print the plan first
 * and ask "Proceed? [y/N]" on the terminal unless --yes is given; with
 * stdin not a terminal and no --yes they refuse, so a script can never
 * change a datastore by accident.  Each migration runs in its own
 * transaction, so an interrupted run leaves a consistent version and
 * re-running continues.  They also refuse while a server is attached to
 * the datastore (store_lock_exclusive names it), unless --force: a server
 * whose layout changes under it refuses every call until restarted.
 *
 * This command talks to src/store directly: layout migrations are below
 * the embedding API (pemba.h), which always opens at the newest layout.
 *
 * Exit status: 0 success (including "nothing to do"), 1 the command ran
 * and failed or was refused, 2 usage error.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api/zedtoken.h"
#include "cli/cli.h"
#include "store/store.h"

/* For the help texts; the value is cli_default_datastore(). */
#define DEFAULT_DATASTORE "$PEMBA_DATASTORE, else sqlite://./pemba.db"

/* ================================================================ usage */

static void print_datastore_usage(FILE *out)
{
	fprintf(out,
	        "usage: pemba datastore migrate status|up|down|head "
	        "[--datastore URI]\n"
	        "                               [--to N] [--yes] [--force]\n"
	        "       pemba datastore gc [--datastore URI] [--window "
	        "DURATION]\n"
	        "       pemba datastore snapshot [--datastore URI] --to PATH "
	        "[--new-identity]\n"
	        "       pemba datastore new-identity [--datastore URI] [--yes] "
	        "[--force]\n"
	        "       pemba datastore check [--datastore URI] [--fix FILE] "
	        "[--json] [--show N]\n"
	        "\n"
	        "Maintains a datastore: its layout (tables and indexes, "
	        "versioned by\n"
	        "numbered migrations), its old revisions, copies and "
	        "identity.\n"
	        "\n"
	        "commands:\n"
	        "  migrate       show or change the layout version\n"
	        "  gc            remove relationship and schema versions older "
	        "than the\n"
	        "                GC window (reads at those revisions then "
	        "fail)\n"
	        "  snapshot      write a consistent copy to a new file, also "
	        "while a\n"
	        "                server runs and writes\n"
	        "  new-identity  give a copy its own identity, to run it as a "
	        "separate\n"
	        "                instance\n"
	        "  check         verify every relationship against the "
	        "schema; report\n"
	        "                (and with --fix move aside) the orphans\n"
	        "\n"
	        "Run 'pemba datastore COMMAND --help' for details.\n");
}

static void print_migrate_usage(FILE *out)
{
	fprintf(out,
	        "usage: pemba datastore migrate status [--datastore URI] "
	        "[--json]\n"
	        "       pemba datastore migrate up     [--datastore URI] "
	        "[--to N] [--yes]\n"
	        "                                      [--force]\n"
	        "       pemba datastore migrate head   [--datastore URI] "
	        "[--yes] [--force]\n"
	        "       pemba datastore migrate down   [--datastore URI] "
	        "[--to N] [--yes]\n"
	        "                                      [--force]\n"
	        "\n"
	        "  status   list every migration as applied or pending, and "
	        "the current\n"
	        "           and newest layout versions (--json: one object, "
	        "{\"layoutVersion\":N,\n"
	        "           \"newestKnown\":M,\"migrations\":[...],"
	        "\"inUseBy\":[...],...})\n"
	        "  up       apply the pending migrations (or those up to "
	        "version N)\n"
	        "  head     apply every pending migration (same as up without "
	        "--to)\n"
	        "  down     revert the newest applied migration (or every "
	        "one above N);\n"
	        "           reverting to version 0 deletes all data\n"
	        "\n"
	        "options:\n"
	        "  --datastore URI  sqlite:///abs/path.db, "
	        "sqlite://./rel/path.db,\n"
	        "                   sqlite::memory: or postgres://user@host/db "
	        "(an existing\n"
	        "                   database) (default " DEFAULT_DATASTORE ")\n"
	        "  --to N           target layout version\n"
	        "  -y, --yes        do not ask for confirmation (needed when "
	        "stdin is\n"
	        "                   not a terminal)\n"
	        "  --force          change the layout even while a server is "
	        "attached to\n"
	        "                   the datastore; it then refuses every call "
	        "with\n"
	        "                   FAILED_PRECONDITION until restarted\n"
	        "  -h, --help       show this help\n"
	        "\n"
	        "Each migration runs in its own transaction: if one fails, the "
	        "datastore\n"
	        "stays at the last version reached and running the command "
	        "again continues\n"
	        "from there.  While a `pemba serve` process has the datastore "
	        "open, up, head\n"
	        "and down refuse (exit 1) naming its pid and host; a server "
	        "that died (even\n"
	        "by kill -9) no longer counts.  `pemba serve` itself only "
	        "creates new\n"
	        "datastores: an existing one with pending migrations needs "
	        "'migrate head'\n"
	        "first.  The embedding API (pemba_open) applies pending "
	        "migrations itself\n"
	        "unless told not to.\n"
	        "\n"
	        "Exit status: 0 success, 1 failure or refusal, 2 usage "
	        "error.\n");
}

/* ============================================================ arguments */

typedef enum action {
	ACTION_NONE,
	ACTION_STATUS,
	ACTION_UP,
	ACTION_HEAD,
	ACTION_DOWN,
} action;

/* uri for output, without a password (one at a time: static storage). */
static const char *display_uri(const char *uri)
{
	static char buf[1024];
	char *shown = store_display_uri(uri);
	snprintf(buf, sizeof(buf), "%s", shown);
	free(shown);
	return buf;
}

typedef struct migrate_args {
	action act;
	const char *act_name;
	const char *uri;
	char *shown; /* uri for output: without a password */
	int to;      /* -1: not given */
	bool yes;
	bool force;
	bool help;
	bool json; /* status --json */
} migrate_args;

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "pemba datastore migrate: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n\n");
	va_end(ap);
	print_migrate_usage(stderr);
	return 2;
}

/* Parses argv after "migrate"; returns 0 or an exit status. */
static int parse_migrate_args(int argc, char **argv, migrate_args *a)
{
	static const struct {
		const char *name;
		action act;
	} actions[] = {
	    {"status", ACTION_STATUS},
	    {"up", ACTION_UP},
	    {"head", ACTION_HEAD},
	    {"down", ACTION_DOWN},
	};
	*a = (migrate_args){.uri = cli_default_datastore(), .to = -1};
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *value = NULL;
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			a->help = true;
		} else if (strcmp(arg, "-y") == 0 ||
		           strcmp(arg, "--yes") == 0) {
			a->yes = true;
		} else if (strcmp(arg, "--force") == 0) {
			a->force = true;
		} else if (strcmp(arg, "--json") == 0) {
			a->json = true;
		} else if (strncmp(arg, "--datastore", 11) == 0 &&
		           (arg[11] == '\0' || arg[11] == '=')) {
			value = arg[11] ? arg + 12
			                : (i + 1 < argc ? argv[++i] : NULL);
			if (!value || !*value)
				return usage_error("--datastore needs a URI");
			a->uri = value;
		} else if (strncmp(arg, "--to", 4) == 0 &&
		           (arg[4] == '\0' || arg[4] == '=')) {
			value = arg[4] ? arg + 5
			               : (i + 1 < argc ? argv[++i] : NULL);
			char *end;
			errno = 0;
			long n = value ? strtol(value, &end, 10) : -1;
			if (!value || !*value || *end || errno || n < 0 ||
			    n > INT_MAX)
				return usage_error("--to needs a layout "
				                   "version (0, 1, ...), not "
				                   "'%s'",
				                   value ? value : "");
			a->to = (int)n;
		} else if (arg[0] == '-') {
			return usage_error("unknown option '%s'", arg);
		} else if (a->act == ACTION_NONE) {
			for (size_t k = 0;
			     k < sizeof(actions) / sizeof(actions[0]); k++)
				if (strcmp(arg, actions[k].name) == 0) {
					a->act = actions[k].act;
					a->act_name = actions[k].name;
				}
			if (a->act == ACTION_NONE)
				return usage_error("unknown migrate command "
				                   "'%s' (status, up, down, "
				                   "head)",
				                   arg);
		} else {
			return usage_error("unexpected argument '%s'", arg);
		}
	}
	if (a->help)
		return 0;
	if (a->act == ACTION_NONE)
		return usage_error("missing command (status, up, down, "
		                   "head)");
	if (a->to >= 0 && a->act != ACTION_UP && a->act != ACTION_DOWN)
		return usage_error("--to applies to 'up' and 'down', not "
		                   "'%s'",
		                   a->act_name);
	if (a->json && a->act != ACTION_STATUS)
		return usage_error("--json applies to 'status'");
	if (a->force && a->act == ACTION_STATUS)
		return usage_error("--force applies to 'up', 'head' and "
		                   "'down'");
	return 0;
}

/* ============================================================== helpers */

static int fail(const char *what, const pemba_error *err)
{
	fprintf(stderr, "pemba datastore migrate %s: %s\n", what, err->message);
	return 1;
}

static double elapsed_ms(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) * 1e3 +
	       (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/*
 * Asks "Proceed? [y/N]" unless --yes.  Returns 0 to go on, else the exit
 * status (1: declined or cannot ask).
 */
static int confirm_as(const char *command, bool yes)
{
	if (yes)
		return 0;
	if (!isatty(STDIN_FILENO)) {
		fprintf(stderr,
		        "pemba datastore %s: refusing to change the "
		        "datastore without confirmation: stdin is not a "
		        "terminal; pass --yes to proceed\n",
		        command);
		return 1;
	}
	printf("Proceed? [y/N] ");
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		line[0] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	if (strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0)
		return 0;
	printf("Aborted; nothing changed.\n");
	return 1;
}

static int confirm(const migrate_args *a)
{
	char command[64];
	snprintf(command, sizeof(command), "migrate %s", a->act_name);
	return confirm_as(command, a->yes);
}

/* ======================================================= server leases */

/*
 * Takes the datastore's exclusive lease for `role` so no server runs on
 * it while its layout or identity changes.  Refused (a server is
 * attached): exit 1 naming it, or with force a warning and go on.
 * Returns 0 to go on, else the exit status.
 */
/* Whether every process holding a lease now is a migration (none listed:
 * a holder between taking its lease and recording itself, or gone). */
static bool only_migrations_hold(store *s, char *who, size_t cap)
{
	store_user users[8];
	size_t n = 0;
	pemba_error err = {0};
	if (store_list_users(s, users, 8, &n, &err) != 0)
		return false;
	for (size_t i = 0; i < n && i < 8; i++)
		if (strcmp(users[i].role, "migrate") != 0)
			return false;
	if (n > 0)
		snprintf(who, cap, "pid %ld on host %s", users[0].pid,
		         users[0].host);
	return n <= 8;
}

/* How long a migration waits for another one to finish. */
#define MIGRATION_WAIT_MS (10 * 60 * 1000)

static int lock_datastore(store *s, const char *command, const char *role,
                          bool force, const char *consequence)
{
	pemba_error err = {0};
	int rc = store_lock_exclusive(s, role, &err);
	/* Another migration of the same datastore: wait for it to finish
	 * (each step re-reads the version, so this one then applies what
	 * is left, usually nothing) instead of refusing; a server still
	 * refuses at once. */
	if (rc == PEMBA_EPRECONDITION && strcmp(role, "migrate") == 0) {
		struct timespec start;
		clock_gettime(CLOCK_MONOTONIC, &start);
		bool told = false;
		char who[128] = "another process";
		while (rc == PEMBA_EPRECONDITION &&
		       elapsed_ms(&start) < MIGRATION_WAIT_MS &&
		       only_migrations_hold(s, who, sizeof(who))) {
			if (!told) {
				fprintf(stderr,
				        "pemba datastore %s: another migration "
				        "of this datastore is running (%s); "
				        "waiting for it to finish\n",
				        command, who);
				told = true;
			}
			usleep(100 * 1000);
			memset(&err, 0, sizeof(err));
			rc = store_lock_exclusive(s, role, &err);
		}
	}
	if (rc == 0)
		return 0;
	if (rc != PEMBA_EPRECONDITION || !force) {
		fprintf(stderr, "pemba datastore %s: %s", command, err.message);
		if (rc == PEMBA_EPRECONDITION)
			fprintf(stderr,
			        "; stop it first, or pass --force (the server "
			        "then %s)",
			        consequence);
		fprintf(stderr, "\n");
		return 1;
	}
	fprintf(stderr,
	        "pemba datastore %s: warning: --force: %s; the server %s\n",
	        command, err.message, consequence);
	return 0;
}

#define MIGRATE_CONSEQUENCE                                                    \
	"refuses every call with FAILED_PRECONDITION until restarted"
#define IDENTITY_CONSEQUENCE                                                   \
	"keeps issuing ZedTokens under the old identity until restarted"

/* Prints the processes attached to the datastore (status). */
static void print_users(store *s)
{
	store_user users[8];
	size_t n = 0;
	pemba_error err = {0};
	if (store_list_users(s, users, 8, &n, &err) != 0 || n == 0)
		return;
	for (size_t i = 0; i < n && i < 8; i++) {
		time_t t = (time_t)(users[i].started_ms / 1000);
		struct tm tm;
		char when[32] = "?";
		if (gmtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		printf("in use by: pemba %s, pid %ld on host %s, since %s\n",
		       users[i].role, users[i].pid, users[i].host, when);
	}
	if (n > 8)
		printf("in use by: %zu more\n", n - 8);
}

/* ============================================================= actions */

static void print_migration(const store_migration_info *m, bool with_state)
{
	if (with_state)
		printf("  %3d  %-20s %-8s %s\n", m->version, m->name,
		       m->applied ? "applied" : "pending", m->description);
	else
		printf("  %3d  %-20s %s\n", m->version, m->name,
		       m->description);
}

/* `migrate status --json`: one object on one line. */
static void print_status_json(const migrate_args *a, store *s, bool exists,
                              int current, int head,
                              const store_migration_info *list, size_t n)
{
	json_t *o =
	    json_pack("{s:s, s:b, s:i, s:i, s:i}", "datastore", a->shown,
	              "exists", exists, "layoutVersion", current, "newestKnown",
	              head, "pending", head > current ? head - current : 0);
	json_t *ms = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(
		    ms, json_pack("{s:i, s:s, s:b, s:s}", "version",
		                  list[i].version, "name", list[i].name,
		                  "applied", list[i].applied, "description",
		                  list[i].description));
	json_object_set_new(o, "migrations", ms);
	json_t *users = json_array();
	store_user u[8];
	size_t nu = 0;
	pemba_error err = {0};
	if (exists && store_list_users(s, u, 8, &nu, &err) == 0)
		for (size_t i = 0; i < nu && i < 8; i++)
			json_array_append_new(
			    users,
			    json_pack("{s:s, s:I, s:s, s:I}", "role", u[i].role,
			              "pid", (json_int_t)u[i].pid, "host",
			              u[i].host, "startedUnixMs",
			              (json_int_t)u[i].started_ms));
	json_object_set_new(o, "inUseBy", users);
	char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	puts(text);
	free(text);
	json_decref(o);
}

static int run_status(const migrate_args *a)
{
	store_options opts = {.migrate = STORE_MIGRATE_NONE, .must_exist = 1};
	store *s;
	pemba_error err = {0};
	int current = 0, head = 0, rc;
	store_migration_info *list = NULL;
	size_t n = 0;
	bool exists = true;

	rc = store_open(a->uri, &opts, &s, &err);
	if (rc == PEMBA_ENOTFOUND) {
		/* Report a missing datastore as version 0 rather than
		 * creating an empty file just to look at it. */
		exists = false;
		if ((rc = store_open("sqlite::memory:", &opts, &s, &err)))
			return fail("status", &err);
	} else if (rc) {
		return fail("status", &err);
	}
	rc = store_migrate_status(s, &current, &head, &list, &n, &err);
	if (rc) {
		store_close(s);
		return fail("status", &err);
	}

	if (a->json) {
		print_status_json(a, s, exists, current, head, list, n);
		store_close(s);
		free(list);
		return 0;
	}
	printf("datastore: %s%s\n", a->shown,
	       exists ? "" : " (does not exist yet)");
	printf("layout version: %d (newest known: %d)\n", current, head);
	if (exists)
		print_users(s);
	store_close(s);
	for (size_t i = 0; i < n; i++)
		print_migration(&list[i], true);
	int pending = head - current;
	if (pending > 0)
		printf("%d migration%s pending; run 'pemba datastore migrate "
		       "up' to apply %s.\n",
		       pending, pending == 1 ? "" : "s",
		       pending == 1 ? "it" : "them");
	else
		printf("up to date.\n");
	free(list);
	return 0;
}

static int run_change(const migrate_args *a)
{
	bool up = a->act != ACTION_DOWN;
	store_options opts = {.migrate = STORE_MIGRATE_NONE, .must_exist = 1};
	store *s;
	pemba_error err = {0};
	int current, head, rc;
	store_migration_info *list = NULL;
	size_t n;
	bool missing = false;

	/* A missing datastore is created only once the plan is confirmed;
	 * until then an in-memory one stands in for "version 0". */
	rc = store_open(a->uri, &opts, &s, &err);
	if (rc == PEMBA_ENOTFOUND && up) {
		missing = true;
		rc = store_open("sqlite::memory:", &opts, &s, &err);
	} else if (rc == PEMBA_ENOTFOUND) {
		fprintf(stderr,
		        "pemba datastore migrate %s: datastore %s does not "
		        "exist\n",
		        a->act_name, a->shown);
		return 1;
	}
	if (rc)
		return fail(a->act_name, &err);
	if ((rc = store_migrate_status(s, &current, &head, &list, &n, &err))) {
		store_close(s);
		return fail(a->act_name, &err);
	}

	int target;
	if (a->act == ACTION_DOWN)
		target = a->to >= 0 ? a->to : (current > 0 ? current - 1 : 0);
	else
		target = a->to >= 0 ? a->to : head;
	if (target > head) {
		store_close(s);
		free(list);
		fprintf(stderr,
		        "pemba datastore migrate %s: --to %d is beyond the "
		        "newest layout version this binary knows (%d)\n",
		        a->act_name, target, head);
		return 2;
	}
	if ((up && target <= current) || (!up && target >= current)) {
		printf("Datastore %s is at layout version %d (newest known: "
		       "%d); nothing to do.\n",
		       a->shown, current, head);
		store_close(s);
		free(list);
		return 0;
	}
	/* Something to change: not under a server (and no server starts
	 * until this one is done).  Each step re-reads the version in its
	 * own transaction, so the plan stays right. */
	char command[64];
	snprintf(command, sizeof(command), "migrate %s", a->act_name);
	if (!missing && (rc = lock_datastore(s, command, "migrate", a->force,
	                                     MIGRATE_CONSEQUENCE))) {
		store_close(s);
		free(list);
		return rc;
	}
	/* The version may have moved while this waited for another
	 * migration: plan from the version now. */
	if (!missing) {
		free(list);
		list = NULL;
		if ((rc = store_migrate_status(s, &current, &head, &list, &n,
		                               &err))) {
			store_close(s);
			return fail(a->act_name, &err);
		}
		if ((up && target <= current) || (!up && target >= current)) {
			printf("Datastore %s is at layout version %d (newest "
			       "known: %d); nothing to do.\n",
			       a->shown, current, head);
			store_close(s);
			free(list);
			return 0;
		}
	}

	if (missing)
		printf("Datastore %s does not exist yet; it will be created "
		       "(newest layout version: %d).\n",
		       a->shown, head);
	else
		printf("Datastore %s is at layout version %d (newest known: "
		       "%d).\n",
		       a->shown, current, head);
	if (up) {
		printf("Will apply %d migration%s:\n", target - current,
		       target - current == 1 ? "" : "s");
		for (int v = current + 1; v <= target; v++)
			print_migration(&list[v - 1], false);
	} else {
		printf("Will revert %d migration%s:\n", current - target,
		       current - target == 1 ? "" : "s");
		for (int v = current; v > target; v--)
			print_migration(&list[v - 1], false);
		if (target == 0)
			printf("WARNING: reverting migration 1 drops every "
			       "table: all relationships, schemas and "
			       "revisions are deleted.\n");
	}
	if ((rc = confirm(a))) {
		store_close(s);
		free(list);
		return rc;
	}
	if (missing) {
		store_close(s);
		opts.must_exist = 0;
		if ((rc = store_open(a->uri, &opts, &s, &err))) {
			free(list);
			return fail(a->act_name, &err);
		}
		if ((rc = lock_datastore(s, command, "migrate", a->force,
		                         MIGRATE_CONSEQUENCE))) {
			store_close(s);
			free(list);
			return rc;
		}
		/* Created by another migration meanwhile? Plan again. */
		free(list);
		list = NULL;
		if ((rc = store_migrate_status(s, &current, &head, &list, &n,
		                               &err))) {
			store_close(s);
			return fail(a->act_name, &err);
		}
		if ((up && target <= current) || (!up && target >= current)) {
			printf("Datastore %s is at layout version %d (newest "
			       "known: %d); nothing to do.\n",
			       a->shown, current, head);
			store_close(s);
			free(list);
			return 0;
		}
	}

	/* One step at a time, so each gets its progress line. */
	int step = up ? 1 : -1;
	for (int v = current; v != target; v += step) {
		const store_migration_info *m = &list[(up ? v + 1 : v) - 1];
		struct timespec start;
		clock_gettime(CLOCK_MONOTONIC, &start);
		printf("%s migration %d (%s)... ",
		       up ? "Applying" : "Reverting", m->version, m->name);
		fflush(stdout);
		rc = up ? store_migrate_up(s, v + 1, &err)
		        : store_migrate_down(s, v - 1, &err);
		if (rc) {
			printf("failed\n");
			fflush(stdout);
			store_close(s);
			free(list);
			return fail(a->act_name, &err);
		}
		printf("done (%.0f ms)\n", elapsed_ms(&start));
	}
	printf("Datastore %s is now at layout version %d.\n", a->shown, target);
	store_close(s);
	free(list);
	return 0;
}

/* =================================================================== gc */

static void print_gc_usage(FILE *out)
{
	fprintf(out,
	        "usage: pemba datastore gc [--datastore URI] [--window "
	        "DURATION] [--json]\n"
	        "\n"
	        "Removes relationship versions deleted, and schema versions "
	        "replaced, before\n"
	        "the GC window, so the datastore stops growing with history.  "
	        "Reads at a\n"
	        "revision older than the window fail afterwards with "
	        "\"revision ... has been\n"
	        "garbage-collected\"; the newest revision always stays "
	        "readable.\n"
	        "\n"
	        "options:\n"
	        "  --datastore URI    default " DEFAULT_DATASTORE "\n"
	        "  --json             print {\"removed\":N,\"datastore\":URI}\n"
	        "  --window DURATION  keep revisions younger than this: "
	        "90s, 30m, 24h, 7d\n"
	        "                     or plain seconds (default 24h; at "
	        "least 1s)\n"
	        "  -h, --help         show this help\n"
	        "\n"
	        "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

/* "90s", "30m", "24h", "7d" or plain seconds, at least a second, in
 * seconds; -1 if malformed. */
static int64_t parse_duration(const char *s)
{
	int64_t ms;
	if (cli_parse_duration_ms(s, &ms) != 0 || ms < 1000 ||
	    ms > INT64_MAX / 2)
		return -1;
	return ms / 1000;
}

static int run_gc(int argc, char **argv)
{
	const char *uri = cli_default_datastore();
	int64_t window = 0;
	bool json = false;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			print_gc_usage(stdout);
			return 0;
		} else if (strcmp(arg, "--json") == 0) {
			json = true;
		} else if (strcmp(arg, "--datastore") == 0 && i + 1 < argc) {
			uri = argv[++i];
		} else if (strcmp(arg, "--window") == 0 && i + 1 < argc) {
			window = parse_duration(argv[++i]);
			int64_t ms;
			if (window < 0 &&
			    cli_parse_duration_ms(argv[i], &ms) == 0 &&
			    ms < 1000) {
				/* Refused, not "as small as possible": every
				 * ZedToken and Watch position but the newest
				 * would stop working at once. */
				fprintf(
				    stderr,
				    "pemba datastore gc: --window %s is "
				    "too small: the window must be at "
				    "least 1s (a zero window would make "
				    "every ZedToken but the newest unusable "
				    "and stop Watch from resuming); leave "
				    "--window out for the default 24h\n",
				    argv[i]);
				return 2;
			}
			if (window < 0) {
				fprintf(stderr,
				        "pemba datastore gc: bad --window "
				        "'%s' (use e.g. 90s, 30m, 24h, 7d)\n",
				        argv[i]);
				return 2;
			}
		} else {
			fprintf(stderr,
			        "pemba datastore gc: unexpected argument "
			        "'%s'\n\n",
			        arg);
			print_gc_usage(stderr);
			return 2;
		}
	}
	store_options opts = {.migrate = STORE_MIGRATE_REQUIRE,
	                      .must_exist = 1,
	                      .gc_window_seconds = window};
	store *s;
	pemba_error err = {0};
	if (store_open(uri, &opts, &s, &err) == 0) {
		uint64_t removed = 0;
		int rc = store_gc(s, 0, &removed, &err);
		store_close(s);
		if (rc == 0 && json) {
			json_t *o = json_pack("{s:I, s:s}", "removed",
			                      (json_int_t)removed, "datastore",
			                      display_uri(uri));
			char *text =
			    json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
			puts(text);
			free(text);
			json_decref(o);
			return 0;
		}
		if (rc == 0) {
			printf("removed %llu old versions from %s\n",
			       (unsigned long long)removed, display_uri(uri));
			return 0;
		}
	}
	fprintf(stderr, "pemba datastore gc: %s\n", err.message);
	return 1;
}

/* ============================================== snapshot, new-identity */

/* The options of `snapshot`, `new-identity` and `check`: a table, one
 * parser (cli_flag_spec, declared in cli.h). */
int cli_datastore_flags(const char *command, void (*usage)(FILE *), int argc,
                        char **argv, const cli_flag_spec *flags, size_t nflags,
                        bool *help)
{
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			*help = true;
			continue;
		}
		const cli_flag_spec *f = NULL;
		const char *value = NULL;
		for (size_t k = 0; k < nflags && !f; k++) {
			size_t n = strlen(flags[k].name);
			if (strncmp(arg, flags[k].name, n) == 0 &&
			    (arg[n] == '\0' ||
			     (arg[n] == '=' && flags[k].value))) {
				f = &flags[k];
				value = arg[n] == '=' ? arg + n + 1 : NULL;
			}
		}
		if (!f) {
			fprintf(stderr, "pemba datastore %s: %s '%s'\n\n",
			        command,
			        arg[0] == '-' ? "unknown option"
			                      : "unexpected argument",
			        arg);
			usage(stderr);
			return 2;
		}
		if (!f->value) {
			*f->set = true;
			continue;
		}
		if (!value)
			value = i + 1 < argc ? argv[++i] : NULL;
		if (!value || !*value) {
			fprintf(stderr,
			        "pemba datastore %s: %s needs a value\n\n",
			        command, f->name);
			usage(stderr);
			return 2;
		}
		*f->value = value;
	}
	return 0;
}

static void print_snapshot_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: pemba datastore snapshot [--datastore URI] --to PATH "
	    "[--new-identity] [--json]\n"
	    "\n"
	    "Writes a consistent copy of the datastore, as of one revision, "
	    "to the new\n"
	    "file PATH.  Safe while a server runs and writes: the copy is "
	    "taken in one\n"
	    "read transaction (SQLite's online backup), so it holds exactly "
	    "the\n"
	    "revisions committed before it started, and it includes what "
	    "is still in\n"
	    "the write-ahead log (copying the .db file alone would miss "
	    "that, or tear).\n"
	    "PATH must not exist; it appears only once the copy is "
	    "complete.  Prints\n"
	    "the revision and a ZedToken for it; progress goes to stderr on "
	    "a terminal.\n"
	    "\n"
	    "options:\n"
	    "  --datastore URI  the datastore to copy "
	    "(default " DEFAULT_DATASTORE ")\n"
	    "  --to PATH        the new file\n"
	    "  --json           print one object: datastore, path, bytes, "
	    "revision,\n"
	    "                   zedtoken, identity, newIdentity\n"
	    "  --new-identity   give the copy its own identity: it will run "
	    "as a separate\n"
	    "                   instance, and ZedTokens of one are refused "
	    "by the other.\n"
	    "                   Without it the copy is the same datastore "
	    "(a backup to\n"
	    "                   restore in its place); see also 'pemba "
	    "datastore\n"
	    "                   new-identity'\n"
	    "  -h, --help       show this help\n"
	    "\n"
	    "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

/* Progress on a terminal: one line rewritten in place. */
typedef struct snapshot_progress {
	bool tty;
	int last_percent;
	uint64_t pages;
} snapshot_progress;

static void on_snapshot_progress(void *ctx, uint64_t done, uint64_t total)
{
	snapshot_progress *p = ctx;
	p->pages = total;
	if (!p->tty || total == 0)
		return;
	int percent = (int)(done * 100 / total);
	if (percent == p->last_percent)
		return;
	p->last_percent = percent;
	fprintf(stderr,
	        "\rpemba datastore snapshot: %llu of %llu pages copied "
	        "(%d%%)",
	        (unsigned long long)done, (unsigned long long)total, percent);
	fflush(stderr);
}

static int run_snapshot(int argc, char **argv)
{
	const char *uri = cli_default_datastore(), *to = NULL;
	bool new_identity = false, help = false, json = false;
	const cli_flag_spec flags[] = {
	    {"--datastore", &uri, NULL},
	    {"--to", &to, NULL},
	    {"--new-identity", NULL, &new_identity},
	    {"--json", NULL, &json},
	};
	int rc =
	    cli_datastore_flags("snapshot", print_snapshot_usage, argc, argv,
	                        flags, sizeof(flags) / sizeof(flags[0]), &help);
	if (rc)
		return rc;
	if (help) {
		print_snapshot_usage(stdout);
		return 0;
	}
	if (!to) {
		fprintf(stderr, "pemba datastore snapshot: --to PATH is "
		                "required\n\n");
		print_snapshot_usage(stderr);
		return 2;
	}
	/* A datastore URI names the file as well. */
	if (strncmp(to, "sqlite://", 9) == 0)
		to += 9;
	if (strchr(to, '?')) {
		fprintf(stderr,
		        "pemba datastore snapshot: --to takes a file path, not "
		        "URI parameters: '%s'\n",
		        to);
		return 2;
	}
	/* Any layout: a snapshot before a migration is the point. */
	store_options opts = {.migrate = STORE_MIGRATE_NONE, .must_exist = 1};
	store *s;
	pemba_error err = {0};
	if ((rc = store_open(uri, &opts, &s, &err))) {
		fprintf(stderr, "pemba datastore snapshot: %s\n", err.message);
		return 1;
	}
	snapshot_progress progress = {.tty = isatty(STDERR_FILENO) != 0,
	                              .last_percent = -1};
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	store_snapshot_info info;
	rc = store_snapshot(s, to, new_identity, on_snapshot_progress,
	                    &progress, &info, &err);
	store_close(s);
	if (progress.tty && progress.last_percent >= 0)
		fprintf(stderr, "\n");
	if (rc) {
		fprintf(stderr, "pemba datastore snapshot: %s\n", err.message);
		return 1;
	}
	/* The token the copy issues for its revision (and, without a new
	 * identity, the original too). */
	char token[ZEDTOKEN_BUFSIZE];
	zedtoken_encode(info.revision, info.datastore_id,
	                zedtoken_fingerprint(info.nonce), token);
	if (json) {
		json_t *o = json_pack(
		    "{s:s, s:s, s:I, s:I, s:s, s:s, s:b}", "datastore",
		    display_uri(uri), "path", to, "bytes",
		    (json_int_t)info.bytes, "revision",
		    (json_int_t)info.revision, "zedtoken", token, "identity",
		    info.datastore_id, "newIdentity", new_identity);
		char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		puts(text);
		free(text);
		json_decref(o);
		return 0;
	}
	printf("Snapshot of %s at revision %llu written to %s (%.1f MiB) in "
	       "%.1f s.\n",
	       display_uri(uri), (unsigned long long)info.revision, to,
	       (double)info.bytes / (1024.0 * 1024.0),
	       elapsed_ms(&start) / 1000.0);
	printf("revision: %llu\n", (unsigned long long)info.revision);
	printf("zedtoken: %s\n", token);
	printf("identity: %s (%s)\n", info.datastore_id,
	       new_identity ? "new: a separate instance"
	                    : "the original's: the same datastore; run "
	                      "'pemba datastore new-identity' on the copy "
	                      "before serving it next to the original");
	return 0;
}

static void print_new_identity_usage(FILE *out)
{
	fprintf(out,
	        "usage: pemba datastore new-identity [--datastore URI] [--yes] "
	        "[--force]\n"
	        "\n"
	        "Gives the datastore a new random identity.  For a copy (a "
	        "snapshot, a\n"
	        "restored backup, a copied file) that is to run as a separate "
	        "instance next\n"
	        "to the original: ZedTokens carry the identity, so afterwards "
	        "each refuses\n"
	        "the other's tokens instead of answering them for different "
	        "data.  Tokens\n"
	        "the datastore issued before are refused by it too.\n"
	        "\n"
	        "options:\n"
	        "  --datastore URI  default " DEFAULT_DATASTORE "\n"
	        "  -y, --yes        do not ask for confirmation (needed when "
	        "stdin is\n"
	        "                   not a terminal)\n"
	        "  --force          go on while a server is attached (it keeps "
	        "issuing\n"
	        "                   tokens under the old identity until "
	        "restarted)\n"
	        "  -h, --help       show this help\n"
	        "\n"
	        "Exit status: 0 success, 1 failure or refusal, 2 usage "
	        "error.\n");
}

static int run_new_identity(int argc, char **argv)
{
	const char *uri = cli_default_datastore();
	bool yes = false, force = false, help = false;
	const cli_flag_spec flags[] = {
	    {"--datastore", &uri, NULL},
	    {"--yes", NULL, &yes},
	    {"-y", NULL, &yes},
	    {"--force", NULL, &force},
	};
	int rc = cli_datastore_flags("new-identity", print_new_identity_usage,
	                             argc, argv, flags,
	                             sizeof(flags) / sizeof(flags[0]), &help);
	if (rc)
		return rc;
	if (help) {
		print_new_identity_usage(stdout);
		return 0;
	}
	store_options opts = {.migrate = STORE_MIGRATE_NONE, .must_exist = 1};
	store *s;
	pemba_error err = {0};
	if ((rc = store_open(uri, &opts, &s, &err))) {
		fprintf(stderr, "pemba datastore new-identity: %s\n",
		        err.message);
		return 1;
	}
	if ((rc = lock_datastore(s, "new-identity", "new-identity", force,
	                         IDENTITY_CONSEQUENCE))) {
		store_close(s);
		return rc;
	}
	char old[64];
	snprintf(old, sizeof(old), "%s", store_datastore_id(s));
	printf("Datastore %s has identity %s; it will get a new one, and "
	       "ZedTokens issued\nunder the old one will be refused.\n",
	       display_uri(uri), old[0] ? old : "(none)");
	if ((rc = confirm_as("new-identity", yes))) {
		store_close(s);
		return rc;
	}
	char id[64];
	rc = store_new_identity(s, id, &err);
	store_close(s);
	if (rc) {
		fprintf(stderr, "pemba datastore new-identity: %s\n",
		        err.message);
		return 1;
	}
	printf("Datastore %s now has identity %s (was %s).\n", display_uri(uri),
	       id, old);
	return 0;
}

/* ================================================================ entry */

int cmd_datastore(int argc, char **argv)
{
	if (argc < 2) {
		print_datastore_usage(stderr);
		return 2;
	}
	const char *sub = argv[1];
	if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 ||
	    strcmp(sub, "help") == 0) {
		print_datastore_usage(stdout);
		return 0;
	}
	if (strcmp(sub, "gc") == 0)
		return run_gc(argc - 2, argv + 2);
	if (strcmp(sub, "snapshot") == 0)
		return run_snapshot(argc - 2, argv + 2);
	if (strcmp(sub, "new-identity") == 0)
		return run_new_identity(argc - 2, argv + 2);
	if (strcmp(sub, "check") == 0)
		return cmd_datastore_check(argc - 2, argv + 2);
	if (strcmp(sub, "migrate") != 0) {
		fprintf(stderr, "pemba datastore: unknown command '%s'\n\n",
		        sub);
		print_datastore_usage(stderr);
		return 2;
	}
	migrate_args a;
	int rc = parse_migrate_args(argc - 2, argv + 2, &a);
	if (rc)
		return rc;
	if (a.help) {
		print_migrate_usage(stdout);
		return 0;
	}
	a.shown = store_display_uri(a.uri);
	rc = a.act == ACTION_STATUS ? run_status(&a) : run_change(&a);
	free(a.shown);
	return rc;
}
