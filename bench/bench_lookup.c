/*
 * bench_lookup.c -- LookupResources and LookupSubjects latency on the
 * bench_check dataset, per class of result size, against the real SpiceDB
 * on the same data and queries in the same run.
 *
 * Input is a directory written by `bench_check --keep --db DIR/pemba.db
 * --dump DIR` (schema.zed, relationships.txt) and the datastore file it
 * kept; bench/run_lookup.sh wires it together.  The queries are chosen
 * from the data: a sample of users (LookupResources) and of documents
 * (LookupSubjects) is measured once, and for each kind the subject with
 * few, a typical (median) and many results is kept.  Each query then runs
 * --runs times through the public API (no limit: every result, one at a
 * time, on one thread, at the head revision) and --spicedb-runs times on
 * SpiceDB (its LookupResources / LookupSubjects streaming calls, in
 * process over its unix socket, fully consistent).  Reported: result
 * counts, median and p99 latency of each, peak RSS, and the ratio of
 * medians.  Both sides' answers are compared once per query.
 *
 * Uses only the public API (pemba.h), src/util and tests/support.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "pemba.h"
#include "spicedb_ref.h"
#include "util/xalloc.h"

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "bench_lookup: %s: %s\n", what, detail);
	exit(1);
}

/* ============================================================== input */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot read", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = xmalloc((size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		die("short read", path);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static char **split_lines(char *text, size_t *n_out)
{
	size_t cap = 1024, n = 0;
	char **lines = xmalloc(cap * sizeof(*lines));
	for (char *save = NULL, *l = strtok_r(text, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		if (n == cap)
			lines = xrealloc(lines, (cap *= 2) * sizeof(*lines));
		lines[n++] = l;
	}
	*n_out = n;
	return lines;
}

/* A string list with de-duplication after sorting. */
typedef struct list {
	char **items;
	size_t n, cap;
} list;

static void list_add(list *l, const char *s)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->items = xrealloc(l->items, l->cap * sizeof(*l->items));
	}
	l->items[l->n++] = xstrdup(s);
}

static void list_sort_unique(list *l)
{
	qsort(l->items, l->n, sizeof(*l->items), compare_strings);
	size_t k = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (k && strcmp(l->items[k - 1], l->items[i]) == 0)
			free(l->items[i]);
		else
			l->items[k++] = l->items[i];
	}
	l->n = k;
}

static void list_free(list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	memset(l, 0, sizeof(*l));
}

/* ============================================================ queries */

enum kind { LOOKUP_RESOURCES, LOOKUP_SUBJECTS };

typedef struct query {
	const char *label; /* "few", "typical", "many" */
	enum kind kind;
	/* LookupResources: type#permission for subject subject_type:id;
	 * LookupSubjects: type:id#permission, subjects of subject_type. */
	const char *type, *permission, *subject_type;
	char id[64];
	size_t results;
	double p50, p99;           /* pemba, seconds */
	double page_p50, page_p99; /* pemba, first page of 100 */
	double ref_p50, ref_p99;   /* SpiceDB */
	size_t ref_results;
	bool ref_done, agree;
} query;

static int collect_resource(void *ctx, const char *id, pemba_permissionship p,
                            const char *cursor)
{
	(void)cursor;
	list *l = ctx;
	if (p == PEMBA_CONDITIONAL_PERMISSION) {
		char buf[1100];
		snprintf(buf, sizeof(buf), "?%s", id);
		list_add(l, buf);
	} else
		list_add(l, id);
	return 0;
}

static int count_resource(void *ctx, const char *id, pemba_permissionship p,
                          const char *cursor)
{
	(void)id;
	(void)p;
	(void)cursor;
	(*(size_t *)ctx)++;
	return 0;
}

/* Subjects as SpiceDB's reference reports them: "*" and "*-ID" for a
 * wildcard's exclusions. */
static int collect_subject(void *ctx, const char *id, pemba_permissionship p,
                           const char *const *excluded, size_t nexcluded,
                           const char *cursor)
{
	(void)cursor;
	list *l = ctx;
	char buf[1100];
	snprintf(buf, sizeof(buf), "%s%s",
	         p == PEMBA_CONDITIONAL_PERMISSION ? "?" : "", id);
	list_add(l, buf);
	for (size_t i = 0; i < nexcluded; i++) {
		snprintf(buf, sizeof(buf), "*-%s", excluded[i]);
		list_add(l, buf);
	}
	return 0;
}

static int count_subject(void *ctx, const char *id, pemba_permissionship p,
                         const char *const *excluded, size_t nexcluded,
                         const char *cursor)
{
	(void)id;
	(void)p;
	(void)excluded;
	(void)nexcluded;
	(void)cursor;
	(*(size_t *)ctx)++;
	return 0;
}

/* Runs q once on pemba with `limit` (0: all); fills `out` when non-NULL,
 * else counts.  Returns the number of results. */
static size_t run_pemba(pemba_db *db, const query *q, size_t limit, list *out)
{
	size_t n = 0;
	pemba_error err;
	int rc;
	if (q->kind == LOOKUP_RESOURCES) {
		pemba_lookup_resources_request req = {
		    .resource_type = q->type,
		    .permission = q->permission,
		    .subject_type = q->subject_type,
		    .subject_id = q->id,
		    .limit = limit};
		rc = pemba_lookup_resources(
		    db, 0, &req, out ? collect_resource : count_resource,
		    out ? (void *)out : (void *)&n, NULL, &err);
	} else {
		pemba_lookup_subjects_request req = {
		    .resource_type = q->type,
		    .resource_id = q->id,
		    .permission = q->permission,
		    .subject_type = q->subject_type,
		    .limit = limit};
		rc = pemba_lookup_subjects(
		    db, 0, &req, out ? collect_subject : count_subject,
		    out ? (void *)out : (void *)&n, NULL, &err);
	}
	if (rc != 0)
		die("pemba lookup", err.message);
	return out ? out->n : n;
}

static int run_spicedb(spicedb_ref *ref, const query *q, list *out, char *e,
                       size_t elen)
{
	char **ids;
	size_t n;
	int rc =
	    q->kind == LOOKUP_RESOURCES
	        ? spicedb_ref_lookup_resources(ref, q->type, q->permission,
	                                       q->subject_type, q->id, NULL,
	                                       NULL, &ids, &n, e, elen)
	        : spicedb_ref_lookup_subjects(ref, q->type, q->id,
	                                      q->permission, q->subject_type,
	                                      NULL, NULL, &ids, &n, e, elen);
	if (rc != 0)
		return rc;
	for (size_t i = 0; out && i < n; i++)
		list_add(out, ids[i]);
	spicedb_ref_free_list(ids, n);
	return 0;
}

/* Median and p99 (nearest rank) of t[0..n), which is sorted. */
static void percentiles(double *t, size_t n, double *p50, double *p99)
{
	qsort(t, n, sizeof(*t), compare_doubles);
	*p50 = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
	size_t rank = (size_t)(0.99 * (double)n + 0.999999);
	*p99 = t[rank ? rank - 1 : 0];
}

static void time_pemba(pemba_db *db, query *q, size_t runs)
{
	double *t = xcalloc(runs, sizeof(double));
	for (size_t i = 0; i < 3; i++)
		run_pemba(db, q, 0, NULL); /* warm-up */
	for (size_t i = 0; i < runs; i++) {
		double t0 = now_seconds();
		run_pemba(db, q, 0, NULL);
		t[i] = now_seconds() - t0;
	}
	percentiles(t, runs, &q->p50, &q->p99);
	for (size_t i = 0; i < runs; i++) {
		double t0 = now_seconds();
		run_pemba(db, q, 100, NULL);
		t[i] = now_seconds() - t0;
	}
	percentiles(t, runs, &q->page_p50, &q->page_p99);
	free(t);
}

static void time_spicedb(spicedb_ref *ref, pemba_db *db, query *q, size_t runs)
{
	char e[4096];
	list theirs = {0}, ours = {0};
	if (run_spicedb(ref, q, &theirs, e, sizeof(e)) != 0) {
		printf("spicedb: %s failed: %s\n", q->label, e);
		return;
	}
	list_sort_unique(&theirs);
	run_pemba(db, q, 0, &ours);
	list_sort_unique(&ours);
	q->ref_results = theirs.n;
	q->agree = theirs.n == ours.n;
	for (size_t i = 0; q->agree && i < ours.n; i++)
		q->agree = strcmp(theirs.items[i], ours.items[i]) == 0;
	list_free(&theirs);
	list_free(&ours);
	double *t = xcalloc(runs, sizeof(double));
	for (size_t i = 0; i < runs; i++) {
		double t0 = now_seconds();
		if (run_spicedb(ref, q, NULL, e, sizeof(e)) != 0) {
			printf("spicedb: %s failed: %s\n", q->label, e);
			free(t);
			return;
		}
		t[i] = now_seconds() - t0;
	}
	percentiles(t, runs, &q->ref_p50, &q->ref_p99);
	q->ref_done = true;
	free(t);
}

/* ===================================================== choosing queries */

typedef struct sample {
	char id[64];
	size_t count;
} sample;

static int compare_samples(const void *a, const void *b)
{
	const sample *x = a, *y = b;
	if (x->count != y->count)
		return (x->count > y->count) - (x->count < y->count);
	return strcmp(x->id, y->id);
}

/* Distinct ids of objects of `type` named in the relationships (as
 * resource when `as_resource`, else as subject), every k-th of them so
 * that at most `want` are kept. */
static list sample_ids(char **lines, size_t n, const char *type,
                       bool as_resource, size_t want)
{
	list all = {0};
	size_t tlen = strlen(type);
	for (size_t i = 0; i < n; i++) {
		const char *p = lines[i];
		if (!as_resource) {
			p = strchr(p, '@');
			if (!p)
				continue;
			p++;
		}
		if (strncmp(p, type, tlen) != 0 || p[tlen] != ':')
			continue;
		p += tlen + 1;
		char id[64];
		size_t k = strcspn(p, as_resource ? "#" : "#[");
		if (k == 0 || k >= sizeof(id) || (p[0] == '*' && k == 1))
			continue;
		memcpy(id, p, k);
		id[k] = '\0';
		list_add(&all, id);
	}
	list_sort_unique(&all);
	list out = {0};
	size_t step = all.n > want ? all.n / want : 1;
	for (size_t i = 0; i < all.n && out.n < want; i += step)
		list_add(&out, all.items[i]);
	list_free(&all);
	return out;
}

/* Measures the result count of `proto` for every id of `ids` and fills
 * few (smallest non-zero count), typical (median) and many (largest). */
static void choose(pemba_db *db, const list *ids, const query *proto,
                   query out[3])
{
	sample *s = xcalloc(ids->n, sizeof(*s));
	size_t n = 0;
	for (size_t i = 0; i < ids->n; i++) {
		query q = *proto;
		snprintf(q.id, sizeof(q.id), "%s", ids->items[i]);
		size_t c = run_pemba(db, &q, 0, NULL);
		if (c == 0)
			continue;
		snprintf(s[n].id, sizeof(s[n].id), "%s", ids->items[i]);
		s[n++].count = c;
	}
	if (n == 0)
		die("no query with results for", proto->permission);
	qsort(s, n, sizeof(*s), compare_samples);
	const size_t pick[3] = {0, n / 2, n - 1};
	static const char *const labels[3] = {"few", "typical", "many"};
	for (int k = 0; k < 3; k++) {
		out[k] = *proto;
		out[k].label = labels[k];
		snprintf(out[k].id, sizeof(out[k].id), "%s", s[pick[k]].id);
		out[k].results = s[pick[k]].count;
	}
	free(s);
}

static spicedb_ref *load_spicedb(const char *schema, char **lines, size_t n,
                                 double *seconds)
{
	char e[4096];
	spicedb_ref *ref;
	const char *lib = spicedb_ref_library_path();
	if (lib == NULL || spicedb_ref_open(lib, &ref, e, sizeof(e))) {
		printf("spicedb: skipped (%s)\n",
		       lib ? e : "libspicedb.so not found");
		return NULL;
	}
	double t0 = now_seconds();
	if (spicedb_ref_write_schema(ref, schema, e, sizeof(e)))
		die("spicedb schema", e);
	pemba_relationship rels[1000];
	char *storage[1000];
	for (size_t first = 0; first < n; first += 1000) {
		size_t k = n - first < 1000 ? n - first : 1000;
		for (size_t i = 0; i < k; i++) {
			pemba_error err;
			if (pemba_parse_relationship(lines[first + i], &rels[i],
			                             &storage[i], &err))
				die("bad relationship", err.message);
		}
		if (spicedb_ref_touch(ref, rels, k, e, sizeof(e)))
			die("spicedb write", e);
		for (size_t i = 0; i < k; i++)
			pemba_free(storage[i]);
	}
	*seconds = now_seconds() - t0;
	return ref;
}

/* ================================================================ main */

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: bench_lookup --dir DIR [--db PATH] [--runs N] "
	        "[--spicedb-runs N] [--sample N]\n"
	        "  --dir DIR          output of `bench_check --dump DIR`\n"
	        "  --db PATH          the datastore bench_check kept "
	        "(default DIR/pemba.db)\n"
	        "  --runs N           timed runs per query on pemba "
	        "(default 50)\n"
	        "  --spicedb-runs N   timed runs per query on SpiceDB "
	        "(default 5; 0 skips SpiceDB)\n"
	        "  --sample N         subjects measured per kind to choose "
	        "the queries (default 200)\n");
}

static void print_row(const query *q)
{
	char name[160];
	if (q->kind == LOOKUP_RESOURCES)
		snprintf(name, sizeof(name), "LR %-7s %s#%s @ %s:%s", q->label,
		         q->type, q->permission, q->subject_type, q->id);
	else
		snprintf(name, sizeof(name), "LS %-7s %s:%s#%s @ %s", q->label,
		         q->type, q->id, q->permission, q->subject_type);
	printf("%-44s %7zu %9.3f %9.3f %9.3f", name, q->results, q->p50 * 1e3,
	       q->p99 * 1e3, q->page_p50 * 1e3);
	if (q->ref_done)
		printf(" %9.1f %9.1f %7zu%s %7.0fx\n", q->ref_p50 * 1e3,
		       q->ref_p99 * 1e3, q->ref_results, q->agree ? " " : "!",
		       q->ref_p50 / q->p50);
	else
		printf("\n");
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *db_path = NULL;
	size_t runs = 50, ref_runs = 5, sample_size = 200;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (strcmp(a, "--dir") == 0 && more)
			dir = argv[++i];
		else if (strcmp(a, "--db") == 0 && more)
			db_path = argv[++i];
		else if (strcmp(a, "--runs") == 0 && more)
			runs = strtoull(argv[++i], NULL, 10);
		else if (strcmp(a, "--spicedb-runs") == 0 && more)
			ref_runs = strtoull(argv[++i], NULL, 10);
		else if (strcmp(a, "--sample") == 0 && more)
			sample_size = strtoull(argv[++i], NULL, 10);
		else if (strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (dir == NULL || runs == 0 || sample_size == 0) {
		usage(stderr);
		return 2;
	}
	char path[4096], uri[4200];
	snprintf(path, sizeof(path), "%s/schema.zed", dir);
	char *schema = slurp(path);
	snprintf(path, sizeof(path), "%s/relationships.txt", dir);
	size_t nrels;
	char *rels_text = slurp(path);
	char **lines = split_lines(rels_text, &nrels);
	if (db_path == NULL) {
		snprintf(path, sizeof(path), "%s/pemba.db", dir);
		db_path = path;
	}
	snprintf(uri, sizeof(uri), "sqlite://%s", db_path);
	pemba_db *db;
	pemba_error err;
	if (pemba_open(uri, NULL, &db, &err) != 0)
		die("open", err.message);

	/* The queries: 4 kinds x (few, typical, many). */
	const query protos[4] = {
	    {.kind = LOOKUP_RESOURCES,
	     .type = "document",
	     .permission = "edit",
	     .subject_type = "user"},
	    {.kind = LOOKUP_RESOURCES,
	     .type = "document",
	     .permission = "view",
	     .subject_type = "user"},
	    {.kind = LOOKUP_RESOURCES,
	     .type = "folder",
	     .permission = "view",
	     .subject_type = "user"},
	    {.kind = LOOKUP_SUBJECTS,
	     .type = "document",
	     .permission = "view",
	     .subject_type = "user"},
	};
	list users = sample_ids(lines, nrels, "user", false, sample_size);
	list docs = sample_ids(lines, nrels, "document", true, sample_size);
	query queries[12];
	double t0 = now_seconds();
	for (int k = 0; k < 4; k++)
		choose(db, protos[k].kind == LOOKUP_SUBJECTS ? &docs : &users,
		       &protos[k], &queries[3 * k]);
	printf("bench_lookup: %zu relationships; queries chosen from %zu "
	       "users and %zu documents in %.1f s\n",
	       nrels, users.n, docs.n, now_seconds() - t0);
	list_free(&users);
	list_free(&docs);

	for (int i = 0; i < 12; i++)
		time_pemba(db, &queries[i], runs);
	struct rusage usage_info;
	getrusage(RUSAGE_SELF, &usage_info);
	double rss_mib = (double)usage_info.ru_maxrss / 1024.0;

	if (ref_runs > 0) {
		double load;
		spicedb_ref *ref = load_spicedb(schema, lines, nrels, &load);
		if (ref) {
			printf("spicedb: loaded %zu relationships in %.1f s\n",
			       nrels, load);
			for (int i = 0; i < 12; i++)
				time_spicedb(ref, db, &queries[i], ref_runs);
			spicedb_ref_close(ref);
		}
	}

	printf("\n%-44s %7s %9s %9s %9s %9s %9s %8s %8s\n",
	       "query (LR: "
	       "LookupResources, LS: LookupSubjects)",
	       "results", "p50 ms", "p99 ms", "page100", "spdb p50", "spdb p99",
	       "spdb n", "ratio");
	for (int i = 0; i < 12; i++)
		print_row(&queries[i]);
	printf("\npemba: %zu runs per query (all results, limit 0; page100: "
	       "first page of 100, p50); SpiceDB: %zu runs; ratio: SpiceDB "
	       "p50 / pemba p50; '!' after SpiceDB's count: answers "
	       "differ\npeak RSS (before SpiceDB): %.1f MiB\n",
	       runs, ref_runs, rss_mib);
	int worst = 0;
	for (int i = 0; i < 12; i++)
		worst |= queries[i].ref_done && !queries[i].agree;
	pemba_close(db);
	free(lines);
	free(rels_text);
	free(schema);
	return worst;
}
