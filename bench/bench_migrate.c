/*
 * bench_migrate.c -- the data steps of a migration on the embedded store:
 * `relationship copy` (pemba_copy_relationships) of N relationships and
 * `permission verify` (pemba_verify_permission) over the resources they
 * cover, with the memory each needs.
 *
 * For each size given (--sizes, default 250000,1000000) a fresh SQLite file
 * datastore is bulk-loaded with N document#viewer relationships (10 per
 * document, so N/10 documents; 95% users, 5% group usersets; plus the
 * groups' members), then:
 *   copy    document#viewer -> document#reader, batches of --batch-size
 *           (default 100000), one snapshot, each batch one fsynced write;
 *   verify  document#view against document#read (equal after the copy)
 *           over the N/10 documents, at the head.
 * With --dual-writes RATE, a second handle writes like an application in
 * the middle of the migration while the copy runs: RATE transactions per
 * second, each applying the same change to viewer and reader (revoke an
 * existing relationship from both, grant a new one in both, revoke one it
 * granted), so that verify is equal only if the copy wrote back nothing
 * that had been revoked meanwhile.
 * Reported per phase: wall time, rate, the resident set while it ran
 * (peak, from VmHWM reset before the phase via /proc/self/clear_refs, and
 * its growth over the RSS at the phase's start).  Memory that does not
 * grow with N shows as the same growth at both sizes.
 *
 * Uses only the public API (pemba.h) and src/util.
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
                                   "definition group {\n"
                                   "\trelation member: user\n"
                                   "}\n"
                                   "definition document {\n"
                                   "\trelation viewer: user | group#member\n"
                                   "\trelation reader: user | group#member\n"
                                   "\tpermission view = viewer\n"
                                   "\tpermission read = reader\n"
                                   "}\n";

/* CPU time of the process (user + system), seconds: with other work on
 * the machine, rate per CPU second is the figure that does not move. */
static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ============================================================ memory */

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

/* Resets VmHWM to the current RSS (Linux >= 4.0), so the next VmHWM is
 * the peak of what follows. */
static void reset_peak(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	if (f) {
		fputs("5", f);
		fclose(f);
	}
}

/* The 1-minute load average: how busy the machine was. */
static double load_average(void)
{
	double l[1] = {0};
	return getloadavg(l, 1) == 1 ? l[0] : 0.0;
}

/* ============================================================ dataset */

static void die(const char *what, const pemba_error *err)
{
	fprintf(stderr, "bench_migrate: %s: %s\n", what, err->message);
	exit(1);
}

/* splitmix64, seeded: the same dataset on every run. */
static uint64_t rng_state = 42;
static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

#define PER_DOCUMENT 10
#define GROUPS 1000
#define GROUP_SIZE 5

/* N document#viewer relationships in one import; ids fixed width so
 * their byte order is their numeric order. */
static void load(pemba_db *db, size_t n, size_t users)
{
	pemba_error err;
	if (pemba_write_schema(db, bench_schema, strlen(bench_schema), NULL,
	                       &err))
		die("schema", &err);
	pemba_import *imp;
	if (pemba_import_begin(db, PEMBA_OP_TOUCH, &imp, &err))
		die("import", &err);
	enum { CHUNK = 1000 };
	static char ids[CHUNK][2][24];
	pemba_relationship rels[CHUNK];
	size_t k = 0;
	for (size_t g = 0; g < GROUPS; g++)
		for (size_t m = 0; m < GROUP_SIZE; m++) {
			snprintf(ids[k][0], 24, "g%05zu", g);
			snprintf(ids[k][1], 24, "u%07" PRIu64,
			         rng_next() % users);
			rels[k] = (pemba_relationship){.resource_type = "group",
			                               .resource_id = ids[k][0],
			                               .relation = "member",
			                               .subject_type = "user",
			                               .subject_id = ids[k][1]};
			if (++k == CHUNK) {
				if (pemba_import_add(imp, rels, k, &err))
					die("import", &err);
				k = 0;
			}
		}
	for (size_t i = 0; i < n; i++) {
		bool group = rng_next() % 100 < 5;
		snprintf(ids[k][0], 24, "d%07zu", i / PER_DOCUMENT);
		/* Distinct subjects per document: each of its ten rows
		 * picks from its own residue class (i % 10). */
		uint64_t pick = rng_next();
		if (group)
			snprintf(ids[k][1], 24, "g%05" PRIu64,
			         (pick % (GROUPS / PER_DOCUMENT)) *
			                 PER_DOCUMENT +
			             i % PER_DOCUMENT);
		else
			snprintf(ids[k][1], 24, "u%07" PRIu64,
			         (pick % (users / PER_DOCUMENT)) *
			                 PER_DOCUMENT +
			             i % PER_DOCUMENT);
		rels[k] = (pemba_relationship){
		    .resource_type = "document",
		    .resource_id = ids[k][0],
		    .relation = "viewer",
		    .subject_type = group ? "group" : "user",
		    .subject_id = ids[k][1],
		    .subject_relation = group ? "member" : NULL};
		if (++k == CHUNK) {
			if (pemba_import_add(imp, rels, k, &err))
				die("import", &err);
			k = 0;
		}
	}
	if (k && pemba_import_add(imp, rels, k, &err))
		die("import", &err);
	if (pemba_import_commit(imp, NULL, NULL, &err))
		die("import commit", &err);
}


/* ====================================================== dual writes */

/* An application's dual writes during the copy, on its own handle. */
typedef struct dual_writer {
	const char *uri;
	double rate;        /* transactions per second */
	size_t documents;   /* documents d0000000 .. */
	pemba_relationship *existing; /* a sample of the loaded viewers */
	size_t nexisting;
	size_t thread, nthreads; /* this writer takes existing[i % n == t] */
	atomic_bool *stop;
	/* results */
	uint64_t done, failed;
	double seconds;
	double *lat_ms; /* per transaction */
	size_t nlat, caplat;
} dual_writer;

typedef struct sample_ctx {
	dual_writer *w;
	size_t stride, seen;
} sample_ctx;

static int keep_sample(void *ctx, const pemba_relationship *rel)
{
	sample_ctx *c = ctx;
	if (c->seen++ % c->stride)
		return 0;
	dual_writer *w = c->w;
	pemba_relationship *r = &w->existing[w->nexisting++];
	*r = (pemba_relationship){
	    .resource_type = "document",
	    .resource_id = strdup(rel->resource_id),
	    .relation = "viewer",
	    .subject_type = strdup(rel->subject_type),
	    .subject_id = strdup(rel->subject_id),
	    .subject_relation =
	        rel->subject_relation ? strdup(rel->subject_relation) : NULL};
	return w->nexisting == 20000 ? 1 : 0;
}

/* The same update on viewer and on reader, in one transaction. */
static int dual_write(pemba_db *db, pemba_operation op,
                      const pemba_relationship *rel, pemba_error *err)
{
	pemba_update u[2] = {{op, *rel}, {op, *rel}};
	u[0].rel.relation = "viewer";
	u[1].rel.relation = "reader";
	return pemba_write_relationships(db, u, 2, NULL, 0, NULL, err);
}

static void *dual_writer_main(void *arg)
{
	dual_writer *w = arg;
	pemba_db *db;
	pemba_error err;
	if (pemba_open(w->uri, NULL, &db, &err))
		die("dual writer: open", &err);
	enum { RING = 1024 };
	char(*ring_doc)[24] = calloc(RING, 24);
	char(*ring_user)[24] = calloc(RING, 24);
	if (!ring_doc || !ring_user) {
		fprintf(stderr, "bench_migrate: out of memory\n");
		exit(1);
	}
	size_t granted = 0, revoked = 0, next_existing = w->thread;
	double start = now_seconds(), next = start;
	for (uint64_t i = 0; !atomic_load(w->stop); i++) {
		double now = now_seconds();
		if (now < next) {
			struct timespec ts = {0, (long)((next - now) * 1e9)};
			nanosleep(&ts, NULL);
		}
		next += 1.0 / w->rate;
		pemba_relationship rel = {.resource_type = "document",
		                          .subject_type = "user"};
		pemba_operation op;
		switch (i % 3) {
		case 0: /* revoke a relationship the copy may not have
		           reached yet */
			if (next_existing >= w->nexisting)
				continue;
			rel = w->existing[next_existing];
			next_existing += w->nthreads;
			op = PEMBA_OP_DELETE;
			break;
		case 1: /* grant a new one */
			snprintf(ring_doc[granted % RING], 24, "d%07" PRIu64,
			         (granted * 7919 + w->thread * 104729) %
			             w->documents);
			snprintf(ring_user[granted % RING], 24, "w%02zu-%07zu",
			         w->thread, granted);
			rel.resource_id = ring_doc[granted % RING];
			rel.subject_id = ring_user[granted % RING];
			granted++;
			op = PEMBA_OP_TOUCH;
			break;
		default: /* revoke one it granted (the older half) */
			if (revoked + 1 >= granted)
				continue;
			if (granted - revoked > RING)
				revoked = granted - RING;
			rel.resource_id = ring_doc[revoked % RING];
			rel.subject_id = ring_user[revoked % RING];
			revoked++;
			op = PEMBA_OP_DELETE;
			break;
		}
		double t0 = now_seconds();
		int rc = dual_write(db, op, &rel, &err);
		double ms = (now_seconds() - t0) * 1000.0;
		if (rc) {
			w->failed++;
			if (w->failed <= 3)
				fprintf(stderr, "bench_migrate: dual write: %s\n",
				        err.message);
			continue;
		}
		w->done++;
		if (w->nlat == w->caplat) {
			w->caplat = w->caplat ? 2 * w->caplat : 4096;
			w->lat_ms = realloc(w->lat_ms,
			                    w->caplat * sizeof(*w->lat_ms));
			if (!w->lat_ms) {
				fprintf(stderr, "bench_migrate: out of memory\n");
				exit(1);
			}
		}
		w->lat_ms[w->nlat++] = ms;
	}
	w->seconds = now_seconds() - start;
	free(ring_doc);
	free(ring_user);
	pemba_close(db);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i];
}

/* ============================================================ phases */

typedef struct copy_watch {
	long max_rss_kib; /* VmRSS sampled after every batch */
} copy_watch;

static int on_copy_progress(void *ctx, const pemba_copy_progress *p)
{
	copy_watch *w = ctx;
	/* Sampling every batch costs one small /proc read per 1000 rows. */
	long rss = status_kib("VmRSS");
	if (rss > w->max_rss_kib)
		w->max_rss_kib = rss;
	(void)p;
	return 0;
}

typedef struct phase_result {
	double seconds, cpu;
	uint64_t count;
	long start_kib, peak_kib;
} phase_result;

static void print_phase(const char *name, size_t n, const char *unit,
                        const phase_result *r)
{
	printf("%-7s N=%-8zu %9" PRIu64 " %-14s %7.2f s %9.0f/s (CPU %6.2f s, "
	       "%9.0f/CPU-s)  RSS start %6.1f MiB, peak %6.1f MiB, growth "
	       "%5.1f MiB\n",
	       name, n, r->count, unit, r->seconds,
	       (double)r->count / r->seconds, r->cpu, (double)r->count / r->cpu,
	       r->start_kib / 1024.0, r->peak_kib / 1024.0,
	       (r->peak_kib - r->start_kib) / 1024.0);
	fflush(stdout);
}

#define DUAL_WRITERS_MAX 64

static unsigned max_batch_ms; /* --max-batch-ms */
static const char *datastore_uri; /* --datastore: instead of a new file */

static void run_size(size_t n, size_t batch, const char *dir, bool keep,
                     double dual_rate, size_t dual_threads)
{
	char path[512], uri[600];
	snprintf(path, sizeof(path), "%s/pemba-bench-migrate-%d-%zu.db", dir,
	         (int)getpid(), n);
	snprintf(uri, sizeof(uri), "sqlite://%s", path);
	if (datastore_uri) {
		snprintf(uri, sizeof(uri), "%s", datastore_uri);
		keep = true; /* not ours to remove */
	}
	pemba_db *db;
	pemba_error err;
	if (pemba_open(uri, NULL, &db, &err))
		die("open", &err);
	double t0 = now_seconds();
	load(db, n, n / 2 > 1000 ? n / 2 : 1000);
	printf("load    N=%-8zu %.2f s (bulk import, one transaction; load "
	       "average %.1f)\n",
	       n, now_seconds() - t0, load_average());
	/* A fresh handle, as a CLI/server call would use: nothing of the
	 * load is cached in it. */
	pemba_close(db);
	if (pemba_open(uri, NULL, &db, &err))
		die("reopen", &err);

	phase_result r = {0};
	copy_watch w = {0};
	reset_peak();
	r.start_kib = status_kib("VmRSS");
	pemba_copy_request req = {.resource_type = "document",
	                          .relation = "viewer",
	                          .to_relation = "reader",
	                          .batch_size = batch,
	                          .max_batch_ms = max_batch_ms};
	pemba_copy_result res;
	dual_writer dw = {.uri = uri,
	                  .rate = dual_rate,
	                  .documents = (n + PER_DOCUMENT - 1) / PER_DOCUMENT};
	atomic_bool dw_stop = false;
	dw.stop = &dw_stop;
	dual_writer dws[DUAL_WRITERS_MAX];
	pthread_t dw_threads[DUAL_WRITERS_MAX];
	if (dual_rate > 0) {
		/* A sample of the loaded viewers across the whole key range
		 * (not timed), for the writers to revoke. */
		dw.existing = calloc(20000, sizeof(*dw.existing));
		sample_ctx sc = {.w = &dw, .stride = n / 20000 ? n / 20000 : 1};
		pemba_filter f = {.resource_type = "document",
		                  .relation = "viewer"};
		if (!dw.existing ||
		    pemba_read_relationships(db, 0, &f, NULL, 0, keep_sample,
		                             &sc, &err) != 0)
			die("sample", &err);
		/* Shuffled: revokes land all over the range. */
		for (size_t i = dw.nexisting; i > 1; i--) {
			size_t j = rng_next() % i;
			pemba_relationship t = dw.existing[i - 1];
			dw.existing[i - 1] = dw.existing[j];
			dw.existing[j] = t;
		}
		/* Like an application's request threads: each writes on its
		 * own and waits on its own, sharing the rate. */
		for (size_t t = 0; t < dual_threads; t++) {
			dws[t] = dw;
			dws[t].rate = dual_rate / (double)dual_threads;
			dws[t].thread = t;
			dws[t].nthreads = dual_threads;
			if (pthread_create(&dw_threads[t], NULL,
			                   dual_writer_main, &dws[t])) {
				fprintf(stderr, "bench_migrate: no thread\n");
				exit(1);
			}
		}
		/* Let the writers reach their pace before the copy starts. */
		struct timespec ts = {0, 300 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	double c0 = cpu_seconds();
	t0 = now_seconds();
	if (pemba_copy_relationships(db, &req, on_copy_progress, &w, &res,
	                             &err))
		die("copy", &err);
	r.seconds = now_seconds() - t0;
	r.cpu = cpu_seconds() - c0;
	r.count = res.copied;
	r.peak_kib = status_kib("VmHWM");
	if (r.peak_kib == 0)
		r.peak_kib = w.max_rss_kib;
	pemba_free(res.cursor);
	if (dual_rate > 0) {
		atomic_store(&dw_stop, true);
		double seconds = 0;
		for (size_t t = 0; t < dual_threads; t++) {
			pthread_join(dw_threads[t], NULL);
			dual_writer *x = &dws[t];
			dw.done += x->done;
			dw.failed += x->failed;
			if (x->seconds > seconds)
				seconds = x->seconds;
			for (size_t i = 0; i < x->nlat; i++) {
				if (dw.nlat == dw.caplat) {
					dw.caplat = dw.caplat ? 2 * dw.caplat
					                      : 4096;
					dw.lat_ms = realloc(
					    dw.lat_ms,
					    dw.caplat * sizeof(*dw.lat_ms));
					if (!dw.lat_ms)
						exit(1);
				}
				dw.lat_ms[dw.nlat++] = x->lat_ms[i];
			}
			free(x->lat_ms);
		}
		dw.seconds = seconds;
		qsort(dw.lat_ms, dw.nlat, sizeof(*dw.lat_ms), cmp_double);
		print_phase("copy", n, "relationships", &r);
		printf("writes  during the copy: %" PRIu64 " dual-write "
		       "transactions by %zu threads in %.2f s (%.0f/s, asked "
		       "%.0f/s), %" PRIu64
		       " failed; latency p50 %.1f ms, p99 %.1f ms, max %.1f "
		       "ms\n",
		       dw.done, dual_threads, dw.seconds,
		       (double)dw.done / dw.seconds, dual_rate, dw.failed,
		       percentile(dw.lat_ms, dw.nlat, 0.5),
		       percentile(dw.lat_ms, dw.nlat, 0.99),
		       dw.nlat ? dw.lat_ms[dw.nlat - 1] : 0.0);
		free(dw.lat_ms);
		for (size_t i = 0; i < dw.nexisting; i++) {
			free((char *)dw.existing[i].resource_id);
			free((char *)dw.existing[i].subject_type);
			free((char *)dw.existing[i].subject_id);
			free((char *)dw.existing[i].subject_relation);
		}
		free(dw.existing);
	} else if (res.copied != n) {
		fprintf(stderr, "bench_migrate: copied %" PRIu64 ", want %zu\n",
		        res.copied, n);
		exit(1);
	} else {
		print_phase("copy", n, "relationships", &r);
	}

	pemba_verify_request vr = {
	    .resource_type = "document", .first = "view", .second = "read"};
	pemba_verify_summary sum;
	reset_peak();
	r.start_kib = status_kib("VmRSS");
	c0 = cpu_seconds();
	t0 = now_seconds();
	if (pemba_verify_permission(db, 0, &vr, NULL, NULL, &sum, &err))
		die("verify", &err);
	r.seconds = now_seconds() - t0;
	r.cpu = cpu_seconds() - c0;
	r.count = sum.resources;
	r.peak_kib = status_kib("VmHWM");
	if (!sum.equal ||
	    sum.resources < (n + PER_DOCUMENT - 1) / PER_DOCUMENT) {
		fprintf(stderr,
		        "bench_migrate: verify: %" PRIu64 " resources, %" PRIu64
		        " differences\n",
		        sum.resources, sum.differences);
		exit(1);
	}
	print_phase("verify", n, "resources", &r);
	pemba_close(db);
	if (!keep) {
		char side[600];
		unlink(path);
		snprintf(side, sizeof(side), "%s-wal", path);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", path);
		unlink(side);
	}
}

static void usage(FILE *out)
{
	fputs("usage: bench_migrate [--sizes N,N...] [--batch-size B] "
	      "[--dir DIR] [--keep] [--dual-writes RATE]\n"
	      "  --sizes       relationships copied per run (default "
	      "250000,1000000)\n"
	      "  --batch-size  relationships per write (default 100000)\n"
	      "  --max-batch-ms MS  a batch also ends after MS ms (default 0: "
	      "by size)\n"
	      "  --dir         where the datastore files go (default /tmp)\n"
	      "  --datastore URI  an empty datastore to use instead (e.g. a\n"
	      "                new PostgreSQL database; one size only)\n"
	      "  --keep        keep the datastore files\n"
	      "  --dual-writes RATE  while copying, RATE transactions/s "
	      "that revoke\n"
	      "                and grant in viewer and reader alike (an "
	      "application's\n"
	      "                dual writes); verify then proves nothing "
	      "revoked came back\n",
	      out);
}

int main(int argc, char **argv)
{
	const char *sizes = "250000,1000000", *dir = "/tmp";
	size_t batch = PEMBA_COPY_DEFAULT_BATCH;
	bool keep = false;
	double dual_rate = 0;
	size_t dual_threads = 8;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc)
			sizes = argv[++i];
		else if (strcmp(argv[i], "--batch-size") == 0 && i + 1 < argc)
			batch = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strcmp(argv[i], "--datastore") == 0 && i + 1 < argc)
			datastore_uri = argv[++i];
		else if (strcmp(argv[i], "--keep") == 0)
			keep = true;
		else if (strcmp(argv[i], "--max-batch-ms") == 0 && i + 1 < argc)
			max_batch_ms = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--dual-writes") == 0 && i + 1 < argc)
			dual_rate = strtod(argv[++i], NULL);
		else if (strcmp(argv[i], "--dual-writer-threads") == 0 &&
		         i + 1 < argc) {
			dual_threads = strtoul(argv[++i], NULL, 10);
			if (dual_threads < 1 || dual_threads > DUAL_WRITERS_MAX) {
				usage(stderr);
				return 2;
			}
		}
		else if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	for (const char *p = sizes; *p;) {
		char *end;
		size_t n = strtoul(p, &end, 10);
		if (n == 0 || (*end && *end != ',')) {
			usage(stderr);
			return 2;
		}
		run_size(n, batch, dir, keep, dual_rate, dual_threads);
		p = *end ? end + 1 : end;
	}
	return 0;
}
