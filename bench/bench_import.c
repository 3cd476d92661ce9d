/*
 * bench_import.c -- bulk import (pemba_import_*) of N relationships into
 * a fresh SQLite file datastore, and what it costs everyone else: a probe
 * thread writes one relationship every --probe-ms through its own handle
 * on the same datastore while the import runs, and reports how long its
 * writes waited (the datastore's write lock) and how many failed.
 *
 * The relationships are N `document#viewer` rows, 10 per document (ids
 * fixed width, so generation order is key order), subjects users drawn at
 * random from N/2.  --order sorted feeds them in key order (an export
 * being re-imported), --order random in a seeded shuffle.  They are
 * added 1000 per call (the size of an ImportBulkRelationships message in
 * practice).
 *
 * Reported per size, medians of --runs: the time of the adds (begin
 * included) and of the commit, wall and CPU of the importing thread (the
 * CPU figure moves least when other work shares the machine), the rate
 * over both, the longest a probe write took, and the growth of the
 * resident set during the import (VmHWM reset before it).  The generated
 * dataset is allocated before the measurement.
 *
 * Uses only the public API (pemba.h).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "pemba.h"

static const char bench_schema[] = "definition user {}\n"
                                   "definition document {\n"
                                   "\trelation viewer: user\n"
                                   "\tpermission view = viewer\n"
                                   "}\n";

#define PER_DOCUMENT 10
#define ADD_CHUNK 1000
#define MAX_RUNS 15
#define MAX_SIZES 8

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the calling thread (user + system), seconds: with other
 * work on the machine, the figure that moves least. */
static double thread_cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, const pemba_error *err)
{
	fprintf(stderr, "bench_import: %s: %s\n", what, err->message);
	exit(1);
}

/* A /proc/self/status field in KiB (VmRSS, VmHWM), 0 if unreadable. */
static long status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	char line[256];
	long v = 0;
	size_t n = strlen(field);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, n) == 0 && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0). */
static void reset_peak(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	if (f) {
		fputs("5", f);
		fclose(f);
	}
}

/* ============================================================ dataset */

/* splitmix64, seeded: the same dataset on every run. */
static uint64_t rng_state = 42;
static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

typedef struct dataset {
	pemba_relationship *rels;
	char (*ids)[2][24];
	size_t n;
} dataset;

static void dataset_make(dataset *d, size_t n, bool shuffle)
{
	d->n = n;
	d->rels = calloc(n, sizeof(*d->rels));
	d->ids = calloc(n, sizeof(*d->ids));
	if (!d->rels || !d->ids) {
		fprintf(stderr, "bench_import: out of memory\n");
		exit(1);
	}
	size_t users = n / 2 > PER_DOCUMENT ? n / 2 : PER_DOCUMENT;
	for (size_t i = 0; i < n; i++) {
		snprintf(d->ids[i][0], 24, "d%07zu", i / PER_DOCUMENT);
		/* Distinct subjects per document: each of its ten rows
		 * picks from its own residue class (i % 10). */
		snprintf(d->ids[i][1], 24, "u%07" PRIu64,
		         (rng_next() % (users / PER_DOCUMENT)) * PER_DOCUMENT +
		             i % PER_DOCUMENT);
		d->rels[i] = (pemba_relationship){.resource_type = "document",
		                                  .resource_id = d->ids[i][0],
		                                  .relation = "viewer",
		                                  .subject_type = "user",
		                                  .subject_id = d->ids[i][1]};
	}
	if (shuffle)
		for (size_t i = n - 1; i > 0; i--) {
			size_t j = (size_t)(rng_next() % (i + 1));
			pemba_relationship t = d->rels[i];
			d->rels[i] = d->rels[j];
			d->rels[j] = t;
		}
}

static void dataset_free(dataset *d)
{
	free(d->rels);
	free(d->ids);
}

/* ============================================================== probe */

/* A writer on its own handle: one TOUCH every interval_ms until stopped. */
typedef struct probe {
	pemba_db *db;
	int interval_ms;
	atomic_bool stop;
	size_t writes, failures;
	double max_seconds;
	char first_failure[256];
} probe;

static void *probe_run(void *arg)
{
	probe *p = arg;
	char id[32];
	while (!atomic_load(&p->stop)) {
		snprintf(id, sizeof(id), "p%zu", p->writes);
		pemba_update u = {.op = PEMBA_OP_TOUCH,
		                  .rel = {.resource_type = "document",
		                          .resource_id = "probe",
		                          .relation = "viewer",
		                          .subject_type = "user",
		                          .subject_id = id}};
		pemba_error err;
		double t = now_seconds();
		int rc = pemba_write_relationships(p->db, &u, 1, NULL, 0, NULL,
		                                   &err);
		t = now_seconds() - t;
		p->writes++;
		if (t > p->max_seconds)
			p->max_seconds = t;
		if (rc != 0 && p->failures++ == 0)
			snprintf(p->first_failure, sizeof(p->first_failure),
			         "%.200s", err.message);
		struct timespec pause = {0, (long)p->interval_ms * 1000000L};
		nanosleep(&pause, NULL);
	}
	return NULL;
}

/* ============================================================== a run */

typedef struct run_stats {
	double add_s, commit_s, rate;
	double add_cpu_s, commit_cpu_s;
	double probe_max_ms;
	size_t probe_writes, probe_failures;
	double rss_growth_mib;
} run_stats;

static void remove_datastore(const char *path)
{
	char p[4200];
	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

static void run_once(const char *path, const dataset *d, int probe_ms,
                     run_stats *out)
{
	char uri[4200];
	snprintf(uri, sizeof(uri), "sqlite://%s", path);
	remove_datastore(path);
	pemba_db *db;
	pemba_error err;
	if (pemba_open(uri, NULL, &db, &err))
		die("open", &err);
	if (pemba_write_schema(db, bench_schema, strlen(bench_schema), NULL,
	                       &err))
		die("schema", &err);
	probe p = {.interval_ms = probe_ms};
	if (pemba_clone(db, &p.db, &err))
		die("clone", &err);
	pthread_t thread;
	if (probe_ms > 0 && pthread_create(&thread, NULL, probe_run, &p)) {
		fprintf(stderr, "bench_import: cannot start the probe\n");
		exit(1);
	}

	long rss0 = status_kib("VmRSS");
	reset_peak();
	double t0 = now_seconds(), c0 = thread_cpu_seconds();
	pemba_import *imp;
	if (pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err))
		die("import begin", &err);
	for (size_t first = 0; first < d->n; first += ADD_CHUNK) {
		size_t k = d->n - first < ADD_CHUNK ? d->n - first : ADD_CHUNK;
		if (pemba_import_add(imp, d->rels + first, k, &err))
			die("import add", &err);
	}
	double t1 = now_seconds(), c1 = thread_cpu_seconds();
	uint64_t count;
	if (pemba_import_commit(imp, NULL, &count, &err))
		die("import commit", &err);
	double t2 = now_seconds(), c2 = thread_cpu_seconds();
	long peak = status_kib("VmHWM");

	if (probe_ms > 0) {
		atomic_store(&p.stop, true);
		pthread_join(thread, NULL);
	}
	if (count != d->n) {
		fprintf(stderr, "bench_import: imported %" PRIu64 " of %zu\n",
		        count, d->n);
		exit(1);
	}
	out->add_s = t1 - t0;
	out->commit_s = t2 - t1;
	out->add_cpu_s = c1 - c0;
	out->commit_cpu_s = c2 - c1;
	out->rate = (double)d->n / (t2 - t0);
	out->probe_max_ms = p.max_seconds * 1e3;
	out->probe_writes = p.writes;
	out->probe_failures = p.failures;
	out->rss_growth_mib = (double)(peak - rss0) / 1024.0;
	if (p.failures)
		fprintf(stderr, "  probe: %zu of %zu writes failed, e.g. %s\n",
		        p.failures, p.writes, p.first_failure);
	pemba_close(p.db);
	pemba_close(db);
	remove_datastore(path);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: bench_import [--sizes N[,N...]] [--runs K] "
	        "[--order sorted|random] [--probe-ms MS] [--dir DIR]\n"
	        "  --sizes    relationships per import (default "
	        "100000,1000000)\n"
	        "  --runs     runs per size, medians reported (default 3)\n"
	        "  --order    input order (default sorted: key order)\n"
	        "  --probe-ms interval of the probe writer, 0 = none "
	        "(default 20)\n"
	        "  --dir      where the datastore file goes (default "
	        "/tmp)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	size_t sizes[MAX_SIZES] = {100000, 1000000};
	int nsizes = 2, runs = 3, probe_ms = 20;
	bool shuffle = false;
	const char *dir = "/tmp";
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		if (strcmp(a, "--sizes") == 0) {
			nsizes = 0;
			for (char *s = (char *)v; *s && nsizes < MAX_SIZES;) {
				char *end;
				sizes[nsizes++] = strtoull(s, &end, 10);
				s = *end == ',' ? end + 1 : end;
				if (end == s && *end)
					usage();
			}
		} else if (strcmp(a, "--runs") == 0) {
			runs = atoi(v);
		} else if (strcmp(a, "--order") == 0) {
			if (strcmp(v, "random") == 0)
				shuffle = true;
			else if (strcmp(v, "sorted") != 0)
				usage();
		} else if (strcmp(a, "--probe-ms") == 0) {
			probe_ms = atoi(v);
		} else if (strcmp(a, "--dir") == 0) {
			dir = v;
		} else {
			usage();
		}
	}
	if (runs < 1 || runs > MAX_RUNS || nsizes == 0)
		usage();
	char path[4096];
	snprintf(path, sizeof(path), "%s/pemba-bench-import-%d.db", dir,
	         (int)getpid());

	printf("order %s, %d runs, probe every %d ms; medians\n",
	       shuffle ? "random" : "sorted", runs, probe_ms);
	printf("%9s %7s %8s %9s %10s %9s %12s %12s %9s\n", "rels", "adds s",
	       "adds cpu", "commit s", "commit cpu", "rels/s", "probe max ms",
	       "probe failed", "RSS +MiB");
	for (int s = 0; s < nsizes; s++) {
		dataset d;
		rng_state = 42;
		dataset_make(&d, sizes[s], shuffle);
		double add[MAX_RUNS], commit[MAX_RUNS], rate[MAX_RUNS],
		    pmax[MAX_RUNS], rss[MAX_RUNS], addc[MAX_RUNS],
		    commitc[MAX_RUNS];
		size_t failed = 0, writes = 0;
		for (int r = 0; r < runs; r++) {
			run_stats st;
			run_once(path, &d, probe_ms, &st);
			add[r] = st.add_s;
			commit[r] = st.commit_s;
			addc[r] = st.add_cpu_s;
			commitc[r] = st.commit_cpu_s;
			rate[r] = st.rate;
			pmax[r] = st.probe_max_ms;
			rss[r] = st.rss_growth_mib;
			failed += st.probe_failures;
			writes += st.probe_writes;
		}
		char probe_text[32];
		snprintf(probe_text, sizeof(probe_text), "%zu/%zu", failed,
		         writes);
		printf("%9zu %7.2f %8.2f %9.2f %10.2f %9.0f %12.1f %12s "
		       "%9.1f\n",
		       sizes[s], median(add, runs), median(addc, runs),
		       median(commit, runs), median(commitc, runs),
		       median(rate, runs), median(pmax, runs), probe_text,
		       median(rss, runs));
		fflush(stdout);
		dataset_free(&d);
	}
	return 0;
}
