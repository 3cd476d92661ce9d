/*
 * bench_check.c -- load and check benchmark on a document-sharing dataset.
 *
 * Generates a deterministic dataset (seeded PRNG) of users, nested groups, a
 * folder forest and documents, bulk-loads it into a fresh SQLite file
 * datastore in batches of 1000 TOUCH updates, then runs a fixed mix of
 * permission checks (roughly half positive, half negative) one at a time on
 * one thread.  Reports load rate, datastore bytes per relationship, check
 * throughput, p50/p99 latency and peak RSS; with --runs K, the median of K
 * independent runs.  See bench/README.md.
 *
 * Uses only the public API (pemba.h) and src/util.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pemba.h"
#include "spicedb_ref.h"
#include "util/arena.h"
#include "util/xalloc.h"

/* ============================================================ the schema */

static const char bench_schema[] =
    "definition user {}\n"
    "\n"
    "definition group {\n"
    "\trelation member: user | group#member\n"
    "}\n"
    "\n"
    "definition folder {\n"
    "\trelation parent: folder\n"
    "\trelation owner: user\n"
    "\trelation viewer: user | group#member\n"
    "\tpermission view = viewer + owner + parent->view\n"
    "}\n"
    "\n"
    "definition document {\n"
    "\trelation parent: folder\n"
    "\trelation owner: user\n"
    "\trelation editor: user | group#member\n"
    "\trelation viewer: user | user:*\n"
    "\trelation banned: user\n"
    "\tpermission edit = (owner + editor) - banned\n"
    "\tpermission view = (viewer + owner + editor + parent->view) - banned\n"
    "}\n";

/* ============================================================ PRNG */

/* splitmix64: small, fast and good enough for synthetic data. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static uint32_t rng_below(uint32_t n)
{
	return (uint32_t)(rng_next() % n);
}

/* True with probability percent/100. */
static bool rng_percent(unsigned percent)
{
	return rng_below(100) < percent;
}

/* ============================================================ the dataset */

enum object_type { T_USER, T_GROUP, T_FOLDER, T_DOCUMENT };
static const char *const type_names[] = {"user", "group", "folder", "document"};
static const char type_prefix[] = {'u', 'g', 'f', 'd'};

#define WILDCARD UINT32_MAX

/* The dataset in memory: enough structure to derive checks that should be
 * positive, plus the relationships to load. */
typedef struct dataset {
	uint32_t users, groups, folders, documents;

	/* group g's direct user members: members[member_start[g] ..
	 * member_start[g + 1]) */
	uint32_t *member_start, *members;
	uint32_t *folder_parent; /* UINT32_MAX: root */
	uint32_t *folder_owner;
	uint32_t *folder_group; /* first viewer group */
	uint32_t *doc_parent, *doc_owner, *doc_viewer;
	uint32_t *doc_editor_group; /* UINT32_MAX: none */
	uint32_t *doc_banned;       /* UINT32_MAX: none */

	pemba_update *updates;
	size_t nupdates, cap;
	pemba_relationship rels[1000]; /* scratch for import batches */
	arena *strings; /* ids and the update array's strings */
} dataset;

static const char *object_id(dataset *d, enum object_type type, uint32_t n)
{
	if (n == WILDCARD)
		return "*";
	return arena_printf(d->strings, "%c%" PRIu32, type_prefix[type], n);
}

/* Appends one TOUCH; returns false once the target count is reached. */
static bool add_rel(dataset *d, size_t target, enum object_type rtype,
                    uint32_t rid, const char *relation, enum object_type stype,
                    uint32_t sid, const char *subject_relation)
{
	if (d->nupdates >= target)
		return false;
	if (d->nupdates == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 4096;
		d->updates = xrealloc(d->updates, d->cap * sizeof(*d->updates));
	}
	pemba_update *u = &d->updates[d->nupdates++];
	memset(u, 0, sizeof(*u));
	u->op = PEMBA_OP_TOUCH;
	u->rel.resource_type = type_names[rtype];
	u->rel.resource_id = object_id(d, rtype, rid);
	u->rel.relation = relation;
	u->rel.subject_type = type_names[stype];
	u->rel.subject_id = object_id(d, stype, sid);
	u->rel.subject_relation = subject_relation;
	return true;
}

/* Builds about `target` relationships (exactly, unless the target is tiny).
 * Proportions: users = N/10 (they own no relationships), groups = N/300
 * with ~15 users each and a 30% chance of one nested subgroup, folders =
 * N/100 in a forest (90% have a parent with a lower number, so chains are
 * ~ln(F) deep), and the rest documents with ~4.6 relationships each. */
static void dataset_build(dataset *d, size_t target, uint64_t seed)
{
	memset(d, 0, sizeof(*d));
	rng_state = seed;
	d->strings = arena_create(1 << 20);
	d->users = target / 10 > 100 ? (uint32_t)(target / 10) : 100;
	d->groups = target / 300 > 10 ? (uint32_t)(target / 300) : 10;
	d->folders = target / 100 > 10 ? (uint32_t)(target / 100) : 10;

	/* Groups. */
	d->member_start = xcalloc(d->groups + 1, sizeof(uint32_t));
	d->members = xcalloc((size_t)d->groups * 20, sizeof(uint32_t));
	uint32_t nmembers = 0;
	for (uint32_t g = 0; g < d->groups; g++) {
		d->member_start[g] = nmembers;
		uint32_t count = 10 + rng_below(11);
		for (uint32_t k = 0; k < count; k++) {
			uint32_t user = rng_below(d->users);
			bool repeated = false;
			for (uint32_t j = d->member_start[g]; j < nmembers; j++)
				repeated |= d->members[j] == user;
			if (repeated)
				continue;
			d->members[nmembers++] = user;
			add_rel(d, target, T_GROUP, g, "member", T_USER, user,
			        NULL);
		}
		if (g + 1 < d->groups && rng_percent(30))
			add_rel(d, target, T_GROUP, g, "member", T_GROUP,
			        g + 1 + rng_below(d->groups - g - 1), "member");
	}
	d->member_start[d->groups] = nmembers;

	/* Folders. */
	d->folder_parent = xcalloc(d->folders, sizeof(uint32_t));
	d->folder_owner = xcalloc(d->folders, sizeof(uint32_t));
	d->folder_group = xcalloc(d->folders, sizeof(uint32_t));
	for (uint32_t f = 0; f < d->folders; f++) {
		d->folder_parent[f] = UINT32_MAX;
		if (f > 0 && rng_percent(90)) {
			d->folder_parent[f] = rng_below(f);
			add_rel(d, target, T_FOLDER, f, "parent", T_FOLDER,
			        d->folder_parent[f], NULL);
		}
		d->folder_owner[f] = rng_below(d->users);
		add_rel(d, target, T_FOLDER, f, "owner", T_USER,
		        d->folder_owner[f], NULL);
		d->folder_group[f] = rng_below(d->groups);
		add_rel(d, target, T_FOLDER, f, "viewer", T_GROUP,
		        d->folder_group[f], "member");
		if (rng_percent(50)) {
			uint32_t second = rng_below(d->groups);
			if (second != d->folder_group[f])
				add_rel(d, target, T_FOLDER, f, "viewer",
				        T_GROUP, second, "member");
		}
	}

	/* Documents until the target is reached. */
	size_t cap = target / 4 + 16;
	d->doc_parent = xcalloc(cap, sizeof(uint32_t));
	d->doc_owner = xcalloc(cap, sizeof(uint32_t));
	d->doc_viewer = xcalloc(cap, sizeof(uint32_t));
	d->doc_editor_group = xcalloc(cap, sizeof(uint32_t));
	d->doc_banned = xcalloc(cap, sizeof(uint32_t));
	while (d->nupdates < target && d->documents < cap) {
		uint32_t doc = d->documents++;
		d->doc_parent[doc] = rng_below(d->folders);
		d->doc_owner[doc] = rng_below(d->users);
		d->doc_viewer[doc] = rng_below(d->users);
		d->doc_editor_group[doc] = UINT32_MAX;
		d->doc_banned[doc] = UINT32_MAX;
		add_rel(d, target, T_DOCUMENT, doc, "parent", T_FOLDER,
		        d->doc_parent[doc], NULL);
		add_rel(d, target, T_DOCUMENT, doc, "owner", T_USER,
		        d->doc_owner[doc], NULL);
		add_rel(d, target, T_DOCUMENT, doc, "viewer", T_USER,
		        d->doc_viewer[doc], NULL);
		uint32_t second = rng_below(d->users);
		if (second != d->doc_viewer[doc])
			add_rel(d, target, T_DOCUMENT, doc, "viewer", T_USER,
			        second, NULL);
		if (rng_percent(50)) {
			d->doc_editor_group[doc] = rng_below(d->groups);
			add_rel(d, target, T_DOCUMENT, doc, "editor", T_GROUP,
			        d->doc_editor_group[doc], "member");
		}
		if (rng_percent(10)) {
			/* Half the bans hit someone who would otherwise see
			 * the document, so the exclusion has work to do. */
			d->doc_banned[doc] =
			    rng_percent(50) ? second : rng_below(d->users);
			add_rel(d, target, T_DOCUMENT, doc, "banned", T_USER,
			        d->doc_banned[doc], NULL);
		}
		if (rng_percent(1))
			add_rel(d, target, T_DOCUMENT, doc, "viewer", T_USER,
			        WILDCARD, NULL);
	}
}

static void dataset_free(dataset *d)
{
	free(d->member_start);
	free(d->members);
	free(d->folder_parent);
	free(d->folder_owner);
	free(d->folder_group);
	free(d->doc_parent);
	free(d->doc_owner);
	free(d->doc_viewer);
	free(d->doc_editor_group);
	free(d->doc_banned);
	free(d->updates);
	arena_destroy(d->strings);
}

/* ============================================================ the checks */

typedef struct check {
	pemba_check_request req;
	bool likely; /* derived from a path that grants access */
	int answer;  /* pemba's answer in the last run */
} check;

/* A random user of group g, or a random user if g has none. */
static uint32_t member_of(const dataset *d, uint32_t g)
{
	uint32_t n = d->member_start[g + 1] - d->member_start[g];
	return n ? d->members[d->member_start[g] + rng_below(n)]
	         : rng_below(d->users);
}

/* Half the checks follow a path that grants access (owner, direct viewer,
 * editor group member, owner or viewer-group member of some ancestor
 * folder); the other half ask about a random user, which almost always
 * fails.  The real answers are counted, not assumed. */
static check *checks_build(dataset *d, size_t n, uint64_t seed)
{
	rng_state = seed ^ 0x5eed5eedULL;
	check *checks = xcalloc(n, sizeof(*checks));
	for (size_t i = 0; i < n; i++) {
		uint32_t doc = rng_below(d->documents);
		const char *permission = rng_percent(70) ? "view" : "edit";
		uint32_t user;
		bool likely = i % 2 == 0;
		if (!likely) {
			user = rng_below(d->users);
		} else {
			uint32_t folder = d->doc_parent[doc];
			/* Climb a random number of levels up the folder tree.
			 */
			for (uint32_t up = rng_below(4);
			     up > 0 && d->folder_parent[folder] != UINT32_MAX;
			     up--)
				folder = d->folder_parent[folder];
			switch (rng_below(5)) {
			case 0:
				user = d->doc_owner[doc];
				break;
			case 1:
				user = d->doc_viewer[doc];
				permission = "view";
				break;
			case 2:
				if (d->doc_editor_group[doc] != UINT32_MAX) {
					user = member_of(
					    d, d->doc_editor_group[doc]);
					break;
				}
				/* fall through */
			case 3:
				user = d->folder_owner[folder];
				permission = "view";
				break;
			default:
				user = member_of(d, d->folder_group[folder]);
				permission = "view";
				break;
			}
		}
		checks[i].likely = likely;
		checks[i].req.resource_type = "document";
		checks[i].req.resource_id = object_id(d, T_DOCUMENT, doc);
		checks[i].req.permission = permission;
		checks[i].req.subject_type = "user";
		checks[i].req.subject_id = object_id(d, T_USER, user);
	}
	return checks;
}

/* ============================================================ measuring */

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static long long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static void remove_datastore(const char *path)
{
	char side[4200];
	unlink(path);
	snprintf(side, sizeof(side), "%s-wal", path);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", path);
	unlink(side);
}

typedef struct run_stats {
	double load_rate;      /* bulk import, relationships per second */
	double write_rate;     /* WriteRelationships batches of 1000, rels/s */
	double bytes_per_rel;  /* datastore size / relationships */
	double check_rate;     /* checks per second */
	double p50_us, p99_us; /* check latency */
	size_t positive, negative;
} run_stats;

static void die(const char *what, const pemba_error *err)
{
	fprintf(stderr, "bench_check: %s: %s (%s)\n", what, err->message,
	        pemba_strerror(err->code));
	exit(1);
}

/* One run: fresh datastore, load, close (checkpoints the WAL), measure the
 * files, reopen, warm up, then time every check. */
static void run_once(const char *path, const char *uri, dataset *d,
                     check *checks, size_t nchecks, double *latencies,
                     run_stats *out)
{
	pemba_db *db;
	pemba_error err = {0};
	remove_datastore(path);
	if (pemba_open(uri, NULL, &db, &err) != 0)
		die("open", &err);
	if (pemba_write_schema(db, bench_schema, strlen(bench_schema), NULL,
	                       &err) != 0)
		die("write schema", &err);

	/* Bulk load: one import (one transaction, one revision), as
	 * ImportBulkRelationships does. */
	double start = now_seconds();
	pemba_import *imp;
	if (pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err) != 0)
		die("import begin", &err);
	for (size_t first = 0; first < d->nupdates; first += 1000) {
		size_t count = d->nupdates - first;
		if (count > 1000)
			count = 1000;
		for (size_t i = 0; i < count; i++)
			d->rels[i] = d->updates[first + i].rel;
		if (pemba_import_add(imp, d->rels, count, &err) != 0)
			die("import add", &err);
	}
	if (pemba_import_commit(imp, NULL, NULL, &err) != 0)
		die("import commit", &err);
	out->load_rate = (double)d->nupdates / (now_seconds() - start);
	pemba_close(db);

	char wal[4096];
	snprintf(wal, sizeof(wal), "%s-wal", path);
	out->bytes_per_rel =
	    (double)(file_size(path) + file_size(wal)) / (double)d->nupdates;

	if (pemba_open(uri, NULL, &db, &err) != 0)
		die("reopen", &err);
	pemba_permissionship result;
	size_t warmup = nchecks < 1000 ? nchecks : 1000;
	for (size_t i = 0; i < warmup; i++)
		if (pemba_check_permission(db, PEMBA_REVISION_HEAD,
		                           &checks[i].req, &result, &err) != 0)
			die("check (warm-up)", &err);

	out->positive = out->negative = 0;
	start = now_seconds();
	for (size_t i = 0; i < nchecks; i++) {
		double t0 = now_seconds();
		if (pemba_check_permission(db, PEMBA_REVISION_HEAD,
		                           &checks[i].req, &result, &err) != 0)
			die("check", &err);
		latencies[i] = now_seconds() - t0;
		checks[i].answer = (int)result;
		if (result == PEMBA_HAS_PERMISSION)
			out->positive++;
		else
			out->negative++;
	}
	out->check_rate = (double)nchecks / (now_seconds() - start);
	pemba_close(db);

	/* Transactional writes: WriteRelationships batches of 1000 (the
	 * per-request limit) into a second, fresh datastore. */
	char wpath[4096], wuri[4200];
	snprintf(wpath, sizeof(wpath), "%s.writes", path);
	snprintf(wuri, sizeof(wuri), "sqlite://%s%s",
	         wpath[0] == '/' ? "" : "./", wpath);
	remove_datastore(wpath);
	if (pemba_open(wuri, NULL, &db, &err) != 0)
		die("open", &err);
	if (pemba_write_schema(db, bench_schema, strlen(bench_schema), NULL,
	                       &err) != 0)
		die("write schema", &err);
	start = now_seconds();
	for (size_t first = 0; first < d->nupdates; first += 1000) {
		size_t count = d->nupdates - first;
		if (count > 1000)
			count = 1000;
		if (pemba_write_relationships(db, d->updates + first, count,
		                              NULL, 0, NULL, &err) != 0)
			die("write relationships", &err);
	}
	out->write_rate = (double)d->nupdates / (now_seconds() - start);
	pemba_close(db);
	remove_datastore(wpath);

	qsort(latencies, nchecks, sizeof(double), compare_doubles);
	out->p50_us = latencies[nchecks / 2] * 1e6;
	out->p99_us = latencies[(size_t)((double)nchecks * 0.99)] * 1e6;
}

/*
 * The reference: the same dataset and the first `n` of the same checks on
 * the real SpiceDB (in-process through libspicedb.so's C ABI, memory
 * datastore, fully consistent checks, protobuf encoding included).  Each
 * answer is compared with pemba's; any disagreement is printed.
 */
static void run_spicedb(dataset *d, check *checks, size_t n,
                        double pemba_rate)
{
	char e[4096];
	spicedb_ref *ref;
	if (spicedb_ref_open(spicedb_ref_library_path(), &ref, e, sizeof(e))) {
		printf("\nspicedb: skipped (%s)\n", e);
		return;
	}
	if (spicedb_ref_write_schema(ref, bench_schema, e, sizeof(e)))
		goto fail;
	double start = now_seconds();
	for (size_t first = 0; first < d->nupdates; first += 1000) {
		size_t count = d->nupdates - first;
		if (count > 1000)
			count = 1000;
		for (size_t i = 0; i < count; i++)
			d->rels[i] = d->updates[first + i].rel;
		if (spicedb_ref_touch(ref, d->rels, count, e, sizeof(e)))
			goto fail;
	}
	double load_rate = (double)d->nupdates / (now_seconds() - start);
	double *lat = xcalloc(n, sizeof(double));
	size_t disagree = 0;
	start = now_seconds();
	for (size_t i = 0; i < n; i++) {
		int answer;
		double t0 = now_seconds();
		if (spicedb_ref_check(ref, &checks[i].req, &answer, e,
		                      sizeof(e)))
			goto fail;
		lat[i] = now_seconds() - t0;
		if (answer != checks[i].answer) {
			disagree++;
			printf("spicedb: DISAGREES on %s:%s#%s@%s:%s\n",
			       checks[i].req.resource_type,
			       checks[i].req.resource_id,
			       checks[i].req.permission,
			       checks[i].req.subject_type,
			       checks[i].req.subject_id);
		}
	}
	double rate = (double)n / (now_seconds() - start);
	qsort(lat, n, sizeof(double), compare_doubles);
	printf("\nspicedb (real, in-process C ABI, memory datastore): load "
	       "%.0f rels/s (WriteRelationships x1000), %zu checks: %.1f "
	       "checks/s, p50 %.0f us, p99 %.0f us; %zu disagreements\n",
	       load_rate, n, rate, lat[n / 2] * 1e6,
	       lat[(size_t)((double)n * 0.99)] * 1e6, disagree);
	printf("ratio pemba/spicedb: checks/s %.0fx\n", pemba_rate / rate);
	free(lat);
	spicedb_ref_close(ref);
	return;
fail:
	printf("\nspicedb: failed: %s\n", e);
	spicedb_ref_close(ref);
}

/* Writes the schema, the relationships and the checks as text, for
 * benchmarks of other access paths (bench_grpc). */
static void dump_dataset(const char *dir, const dataset *d,
                         const check *checks, size_t n)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/schema.zed", dir);
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "bench_check: cannot write %s\n", path);
		exit(1);
	}
	fputs(bench_schema, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/relationships.txt", dir);
	if (!(f = fopen(path, "w"))) {
		fprintf(stderr, "bench_check: cannot write %s\n", path);
		exit(1);
	}
	for (size_t i = 0; i < d->nupdates; i++) {
		char *text = pemba_format_relationship(&d->updates[i].rel);
		fprintf(f, "%s\n", text);
		pemba_free(text);
	}
	fclose(f);
	snprintf(path, sizeof(path), "%s/checks.txt", dir);
	if (!(f = fopen(path, "w"))) {
		fprintf(stderr, "bench_check: cannot write %s\n", path);
		exit(1);
	}
	for (size_t i = 0; i < n; i++) {
		const pemba_check_request *q = &checks[i].req;
		fprintf(f, "%s:%s#%s@%s:%s\n", q->resource_type,
		        q->resource_id, q->permission, q->subject_type,
		        q->subject_id);
	}
	fclose(f);
}

/* Median of field `offset` (a double) across runs. */
static double median_of(const run_stats *runs, size_t k, size_t offset)
{
	double *values = xcalloc(k, sizeof(double));
	for (size_t i = 0; i < k; i++)
		values[i] = *(const double *)((const char *)&runs[i] + offset);
	qsort(values, k, sizeof(double), compare_doubles);
	double m =
	    k % 2 ? values[k / 2] : (values[k / 2 - 1] + values[k / 2]) / 2;
	free(values);
	return m;
}

/* ============================================================ main */

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: bench_check [--relationships N] [--checks N] "
	        "[--runs K] [--db PATH] [--seed S] [--keep]\n"
	        "\n"
	        "  --relationships N  dataset size (default 300000)\n"
	        "  --checks N         timed checks per run (default 50000)\n"
	        "  --runs K           independent runs; medians reported "
	        "(default 3)\n"
	        "  --db PATH          datastore file (default "
	        "/tmp/pemba-bench-<pid>.db)\n"
	        "  --seed S           PRNG seed (default 42)\n"
	        "  --keep             keep the datastore file afterwards\n"
	        "  --dump DIR         also write DIR/schema.zed, "
	        "DIR/relationships.txt and\n"
	        "                     DIR/checks.txt (for bench_grpc)\n"
	        "  --dump-only        with --dump: write the files and stop "
	        "(no datastore)\n"
	        "  --spicedb-checks N checks on the real SpiceDB, same data "
	        "(default 100;\n"
	        "                     0 skips; needs scripts/spicedb.sh)\n");
}

static bool parse_count(const char *s, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end != '\0' || s[0] == '-')
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	unsigned long long relationships = 300000, nchecks = 50000, runs = 3,
	                   seed = 42, spicedb_checks = 100;
	const char *db_path = NULL;
	bool keep = false;
	const char *dump_dir = NULL;
	bool dump_only = false;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		unsigned long long *target = NULL;
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(arg, "--keep") == 0) {
			keep = true;
			continue;
		} else if (strcmp(arg, "--dump") == 0 && i + 1 < argc) {
			dump_dir = argv[++i];
			continue;
		} else if (strcmp(arg, "--dump-only") == 0) {
			dump_only = true;
			continue;
		} else if (strcmp(arg, "--relationships") == 0) {
			target = &relationships;
		} else if (strcmp(arg, "--checks") == 0) {
			target = &nchecks;
		} else if (strcmp(arg, "--runs") == 0) {
			target = &runs;
		} else if (strcmp(arg, "--seed") == 0) {
			target = &seed;
		} else if (strcmp(arg, "--spicedb-checks") == 0) {
			target = &spicedb_checks;
		} else if (strcmp(arg, "--db") == 0 && i + 1 < argc) {
			db_path = argv[++i];
			continue;
		} else {
			fprintf(stderr, "bench_check: bad argument '%s'\n\n",
			        arg);
			usage(stderr);
			return 2;
		}
		if (i + 1 >= argc || !parse_count(argv[++i], target)) {
			fprintf(stderr, "bench_check: %s needs a number\n",
			        arg);
			return 2;
		}
	}
	if (relationships < 1000 || nchecks < 100 || runs < 1 || runs > 100) {
		fprintf(stderr, "bench_check: need --relationships >= 1000, "
		                "--checks >= 100, 1 <= --runs <= 100\n");
		return 2;
	}

	char default_path[128], uri[4200];
	if (!db_path) {
		snprintf(default_path, sizeof(default_path),
		         "/tmp/pemba-bench-%ld.db", (long)getpid());
		db_path = default_path;
	}
	if (strlen(db_path) > 4000) {
		fprintf(stderr, "bench_check: --db path too long\n");
		return 2;
	}
	snprintf(uri, sizeof(uri), "sqlite://%s%s",
	         db_path[0] == '/' ? "" : "./", db_path);

	dataset d;
	dataset_build(&d, relationships, seed);
	check *checks = checks_build(&d, nchecks, seed);
	if (dump_dir)
		dump_dataset(dump_dir, &d, checks, nchecks);
	if (dump_only) {
		printf("dataset: %zu relationships, %llu checks written to "
		       "%s\n",
		       d.nupdates, nchecks, dump_dir ? dump_dir : "(nowhere)");
		free(checks);
		dataset_free(&d);
		return dump_dir ? 0 : 2;
	}
	double *latencies = xcalloc(nchecks, sizeof(double));
	run_stats *stats = xcalloc(runs, sizeof(*stats));

	printf("dataset: %zu relationships: %" PRIu32 " users, %" PRIu32
	       " groups, %" PRIu32 " folders, %" PRIu32
	       " documents (seed %llu)\n",
	       d.nupdates, d.users, d.groups, d.folders, d.documents, seed);
	printf("checks:  %llu per run, single thread, datastore %s\n\n",
	       nchecks, uri);
	printf("%-6s %14s %14s %10s %12s %10s %10s %9s\n", "run",
	       "import rels/s", "write rels/s", "B/rel", "checks/s", "p50 us",
	       "p99 us", "positive");
	for (unsigned long long r = 0; r < runs; r++) {
		run_stats *s = &stats[r];
		run_once(db_path, uri, &d, checks, nchecks, latencies, s);
		printf("%-6llu %14.0f %14.0f %10.1f %12.0f %10.1f %10.1f "
		       "%8.1f%%\n",
		       r + 1, s->load_rate, s->write_rate, s->bytes_per_rel,
		       s->check_rate,
		       s->p50_us, s->p99_us,
		       100.0 * (double)s->positive / (double)nchecks);
		fflush(stdout);
	}
	double load = median_of(stats, runs, offsetof(run_stats, load_rate));
	double wrate = median_of(stats, runs, offsetof(run_stats, write_rate));
	double bytes =
	    median_of(stats, runs, offsetof(run_stats, bytes_per_rel));
	double rate = median_of(stats, runs, offsetof(run_stats, check_rate));
	double p50 = median_of(stats, runs, offsetof(run_stats, p50_us));
	double p99 = median_of(stats, runs, offsetof(run_stats, p99_us));
	printf("%-6s %14.0f %14.0f %10.1f %12.0f %10.1f %10.1f\n", "median",
	       load, wrate, bytes, rate, p50, p99);

	struct rusage usage_info;
	getrusage(RUSAGE_SELF, &usage_info);
	printf("\npeak RSS: %.1f MiB\n", (double)usage_info.ru_maxrss / 1024.0);

	/* The mix must really contain both answers, or the latency numbers
	 * describe only one kind of check. */
	const run_stats *last = &stats[runs - 1];
	bool mixed =
	    last->positive >= nchecks / 4 && last->negative >= nchecks / 4;
	printf("answers: %zu positive, %zu negative%s\n", last->positive,
	       last->negative, mixed ? "" : "  <-- UNBALANCED MIX");
	printf("targets: bulk load >= 300000 rels/s: %s; >= 10000 checks/s: %s; "
	       "p99 <= 1000 us: %s\n",
	       load >= 300000 ? "met" : "MISSED",
	       rate >= 10000 ? "met" : "MISSED",
	       p99 <= 1000 ? "met" : "MISSED");

	if (spicedb_checks > 0)
		run_spicedb(&d, checks, spicedb_checks < nchecks ? spicedb_checks
		                                                : nchecks,
		            rate);

	if (!keep)
		remove_datastore(db_path);
	free(stats);
	free(latencies);
	free(checks);
	dataset_free(&d);
	return mixed ? 0 : 1;
}
