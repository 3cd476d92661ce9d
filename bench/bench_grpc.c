/*
 * bench_grpc.c -- CheckPermission throughput and latency over gRPC, with
 * 1, 16 and 64 requests in flight, against a running pemba server; and the
 * real SpiceDB on the same data and queries, in-process through its C ABI
 * (its only CheckPermission path), with the same concurrency.
 *
 * Input is a directory written by `bench_check --dump DIR`: schema.zed,
 * relationships.txt (one per line) and checks.txt
 * (`type:id#permission@type:id` per line).  bench/run_grpc.sh wires it all
 * together.
 *
 * Concurrency model: `inflight` requests are kept outstanding by
 * min(inflight, 4) client threads, each with its own HTTP/2 connection,
 * issuing batches of concurrent streams (grpc_client_unary_batch).  Every
 * request is timed from the start of its batch to the batch's end, so the
 * reported latency is an upper bound.
 *
 * Also (bench/bench_postgres.sh): --lookups runs LookupResources (server
 * streaming, every result, one at a time) for the subjects of the check
 * list; --writers runs closed-loop WriteRelationships of one TOUCH each
 * from 1, 16 ... writer connections.  --levels selects the check levels
 * (0: none).  Every figure is also printed as a `RESULT name value` line
 * for scripts.  --endpoint may be any authzed.api.v1 server (the real
 * SpiceDB behind tests/support/spicedb_facade included).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/grpc.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "pemba.h"
#include "spicedb_ref.h"
#include "util/xalloc.h"

#define CHECK_PATH "/authzed.api.v1.PermissionsService/CheckPermission"
#define LOOKUP_PATH "/authzed.api.v1.PermissionsService/LookupResources"
#define WRITE_PATH "/authzed.api.v1.PermissionsService/WriteRelationships"
#define MAX_WRITERS 256
#define MAX_LEVELS 8
#define MAX_THREADS 4

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

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "bench_grpc: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(1);
}

/* ============================================================== input */

typedef struct query {
	pemba_check_request req;
	uint8_t *wire; /* packed CheckPermissionRequest */
	size_t wire_len;
} query;

typedef struct input {
	char *schema;
	char **rel_lines;
	size_t nrels;
	query *queries;
	size_t nqueries;
} input;

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot read %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = xmalloc((size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		die("short read on %s", path);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Splits text into lines in place; returns the non-empty ones. */
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

static void pack_query(query *q)
{
	Authzed__Api__V1__Consistency consistency =
	    AUTHZED__API__V1__CONSISTENCY__INIT;
	consistency.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_MINIMIZE_LATENCY;
	consistency.minimize_latency = 1;
	Authzed__Api__V1__ObjectReference resource =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	resource.object_type = (char *)q->req.resource_type;
	resource.object_id = (char *)q->req.resource_id;
	Authzed__Api__V1__ObjectReference subject_object =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	subject_object.object_type = (char *)q->req.subject_type;
	subject_object.object_id = (char *)q->req.subject_id;
	Authzed__Api__V1__SubjectReference subject =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	subject.object = &subject_object;
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	req.consistency = &consistency;
	req.resource = &resource;
	req.permission = (char *)q->req.permission;
	req.subject = &subject;
	q->wire_len = authzed__api__v1__check_permission_request__get_packed_size(
	    &req);
	q->wire = xmalloc(q->wire_len);
	authzed__api__v1__check_permission_request__pack(&req, q->wire);
}

static void load_input(const char *dir, input *in)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/schema.zed", dir);
	in->schema = slurp(path);
	snprintf(path, sizeof(path), "%s/relationships.txt", dir);
	in->rel_lines = split_lines(slurp(path), &in->nrels);
	snprintf(path, sizeof(path), "%s/checks.txt", dir);
	size_t n;
	char **lines = split_lines(slurp(path), &n);
	in->queries = xcalloc(n, sizeof(*in->queries));
	in->nqueries = n;
	for (size_t i = 0; i < n; i++) {
		/* type:id#perm@type:id, parsed in place */
		char *l = lines[i];
		char *hash = strchr(l, '#'), *at = strchr(l, '@');
		char *c1 = strchr(l, ':'), *c2 = at ? strchr(at, ':') : NULL;
		if (!hash || !at || !c1 || !c2 || c1 > hash)
			die("bad check line: %s", l);
		*c1 = *hash = *at = *c2 = '\0';
		in->queries[i].req =
		    (pemba_check_request){.resource_type = l,
		                          .resource_id = c1 + 1,
		                          .permission = hash + 1,
		                          .subject_type = at + 1,
		                          .subject_id = c2 + 1};
		pack_query(&in->queries[i]);
	}
	free(lines);
}

/* ========================================================== pemba/gRPC */

typedef struct worker {
	pthread_t thread;
	const char *endpoint;
	const grpc_metadata *md;
	size_t nmd;
	const input *in;
	size_t batch;       /* streams in flight on this thread */
	double deadline;    /* stop issuing batches after this */
	size_t next_query;  /* round-robin start */
	double *latencies;  /* per completed request */
	size_t nlat, caplat;
	size_t errors;
	char error[512];
} worker;

static void *worker_main(void *arg)
{
	worker *w = arg;
	grpc_client_options opts;
	grpc_client_options_init(&opts);
	opts.target = w->endpoint;
	grpc_client *client;
	pemba_error err;
	if (grpc_client_connect(&opts, &client, &err) != 0) {
		snprintf(w->error, sizeof(w->error), "connect: %.400s",
		         err.message);
		return NULL;
	}
	grpc_unary_call *calls = xcalloc(w->batch, sizeof(*calls));
	while (now_seconds() < w->deadline) {
		for (size_t i = 0; i < w->batch; i++) {
			const query *q =
			    &w->in->queries[w->next_query++ % w->in->nqueries];
			calls[i] = (grpc_unary_call){.path = CHECK_PATH,
			                             .request = q->wire,
			                             .request_len = q->wire_len};
		}
		double t0 = now_seconds();
		grpc_client_unary_batch(client, w->md, w->nmd, 10000, calls,
		                        w->batch);
		double dt = now_seconds() - t0;
		for (size_t i = 0; i < w->batch; i++) {
			if (calls[i].status.code != GRPC_STATUS_OK) {
				if (!w->errors)
					snprintf(w->error, sizeof(w->error),
					         "%s: %s",
					         grpc_status_name(
					             calls[i].status.code),
					         calls[i].status.message
					             ? calls[i].status.message
					             : "");
				w->errors++;
			} else {
				if (w->nlat == w->caplat)
					w->latencies = xrealloc(
					    w->latencies,
					    (w->caplat = w->caplat ? w->caplat * 2
					                           : 4096) *
					        sizeof(double));
				w->latencies[w->nlat++] = dt;
			}
			free(calls[i].response);
			grpc_status_clear(&calls[i].status);
		}
	}
	free(calls);
	grpc_client_close(client);
	return NULL;
}

typedef struct level_result {
	double rate, p50, p99;
	size_t errors;
} level_result;

static level_result summarize(double *lat, size_t n, size_t errors,
                              double seconds)
{
	level_result r = {.errors = errors};
	if (n == 0)
		return r;
	qsort(lat, n, sizeof(double), compare_doubles);
	r.rate = (double)n / seconds;
	r.p50 = lat[n / 2] * 1e6;
	r.p99 = lat[(size_t)((double)n * 0.99)] * 1e6;
	return r;
}

static level_result run_grpc_level(const char *endpoint, const char *token,
                                   const input *in, size_t inflight,
                                   double seconds)
{
	char auth[512];
	grpc_metadata md[1];
	size_t nmd = 0;
	if (token && *token) {
		snprintf(auth, sizeof(auth), "Bearer %s", token);
		md[0] = (grpc_metadata){"authorization", auth, strlen(auth)};
		nmd = 1;
	}
	size_t nthreads = inflight < MAX_THREADS ? inflight : MAX_THREADS;
	worker w[MAX_THREADS];
	memset(w, 0, sizeof(w));
	double start = now_seconds();
	for (size_t t = 0; t < nthreads; t++) {
		w[t] = (worker){.endpoint = endpoint,
		                .md = md,
		                .nmd = nmd,
		                .in = in,
		                .batch = inflight / nthreads +
		                         (t < inflight % nthreads),
		                .deadline = start + seconds,
		                .next_query = t * 7919};
		pthread_create(&w[t].thread, NULL, worker_main, &w[t]);
	}
	size_t total = 0, errors = 0;
	for (size_t t = 0; t < nthreads; t++) {
		pthread_join(w[t].thread, NULL);
		total += w[t].nlat;
		errors += w[t].errors;
		if (w[t].error[0])
			fprintf(stderr, "bench_grpc: worker %zu: %s\n", t,
			        w[t].error);
	}
	double elapsed = now_seconds() - start;
	double *all = xmalloc((total ? total : 1) * sizeof(double));
	size_t k = 0;
	for (size_t t = 0; t < nthreads; t++) {
		memcpy(all + k, w[t].latencies, w[t].nlat * sizeof(double));
		k += w[t].nlat;
		free(w[t].latencies);
	}
	level_result r = summarize(all, total, errors, elapsed);
	free(all);
	return r;
}


/* ====================================================== gRPC metadata */

typedef struct auth_md {
	char value[512];
	grpc_metadata md[1];
	size_t n;
} auth_md;

static void auth_md_init(auth_md *a, const char *token)
{
	a->n = 0;
	if (token && *token) {
		snprintf(a->value, sizeof(a->value), "Bearer %s", token);
		a->md[0] = (grpc_metadata){"authorization", a->value,
		                           strlen(a->value)};
		a->n = 1;
	}
}

static grpc_client *connect_or_die(const char *endpoint)
{
	grpc_client_options opts;
	grpc_client_options_init(&opts);
	opts.target = endpoint;
	grpc_client *client;
	pemba_error err;
	if (grpc_client_connect(&opts, &client, &err) != 0)
		die("connect: %s", err.message);
	return client;
}

/* ====================================================== LookupResources */

static int count_message(void *ctx, const uint8_t *data, size_t len)
{
	(void)data, (void)len;
	(*(size_t *)ctx)++;
	return 0;
}

/* Sequential LookupResources RESOURCE_TYPE#PERMISSION for the subjects of
 * the check list (distinct queries in list order), every result, until
 * `count` queries or `seconds` elapsed. */
static void run_lookups(const char *endpoint, const char *token,
                        const input *in, const char *resource_type,
                        const char *permission, size_t count,
                        double seconds, const char *label)
{
	auth_md a;
	auth_md_init(&a, token);
	grpc_client *client = connect_or_die(endpoint);
	double *lat = xcalloc(count ? count : 1, sizeof(double));
	size_t n = 0, errors = 0, results = 0;
	double start = now_seconds();
	for (size_t i = 0; i < count && now_seconds() - start < seconds;
	     i++) {
		const pemba_check_request *q =
		    &in->queries[i % in->nqueries].req;
		Authzed__Api__V1__Consistency consistency =
		    AUTHZED__API__V1__CONSISTENCY__INIT;
		consistency.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_MINIMIZE_LATENCY;
		consistency.minimize_latency = 1;
		Authzed__Api__V1__ObjectReference obj =
		    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
		obj.object_type = (char *)q->subject_type;
		obj.object_id = (char *)q->subject_id;
		Authzed__Api__V1__SubjectReference subject =
		    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
		subject.object = &obj;
		Authzed__Api__V1__LookupResourcesRequest req =
		    AUTHZED__API__V1__LOOKUP_RESOURCES_REQUEST__INIT;
		req.consistency = &consistency;
		req.resource_object_type = (char *)resource_type;
		req.permission = (char *)permission;
		req.subject = &subject;
		uint8_t wire[1024];
		size_t wlen =
		    authzed__api__v1__lookup_resources_request__get_packed_size(
		        &req);
		if (wlen > sizeof(wire))
			die("lookup request too large%s", "");
		authzed__api__v1__lookup_resources_request__pack(&req, wire);
		size_t got = 0;
		grpc_status st = {0};
		double t0 = now_seconds();
		grpc_client_server_streaming(client, LOOKUP_PATH, a.md, a.n,
		                             60000, wire, wlen, count_message,
		                             &got, &st);
		double dt = now_seconds() - t0;
		if (st.code != GRPC_STATUS_OK) {
			if (!errors)
				fprintf(stderr, "bench_grpc: lookup: %s: %s\n",
				        grpc_status_name(st.code),
				        st.message ? st.message : "");
			errors++;
		} else {
			lat[n++] = dt;
			results += got;
		}
		grpc_status_clear(&st);
	}
	double elapsed = now_seconds() - start;
	grpc_client_close(client);
	level_result r = summarize(lat, n, errors, elapsed);
	printf("lookups (LookupResources %s#%s, one at a time, all results): "
	       "%zu queries, %.1f results each, %.1f queries/s, p50 %.1f ms, "
	       "p99 %.1f ms, %zu errors\n",
	       resource_type, permission, n, n ? (double)results / (double)n : 0,
	       r.rate, r.p50 / 1000, r.p99 / 1000, errors);
	printf("RESULT %s_lookup_rate %.3f\n", label, r.rate);
	printf("RESULT %s_lookup_p50_ms %.3f\n", label, r.p50 / 1000);
	printf("RESULT %s_lookup_p99_ms %.3f\n", label, r.p99 / 1000);
	printf("RESULT %s_lookup_results %.1f\n", label,
	       n ? (double)results / (double)n : 0);
	fflush(stdout);
	free(lat);
}

/* ============================================================== writes */

typedef struct writer {
	pthread_t thread;
	const char *endpoint;
	const auth_md *auth;
	unsigned id;
	double deadline;
	double *latencies;
	size_t nlat, caplat;
	size_t errors;
	char error[512];
} writer;

/* Closed loop: WriteRelationships with one TOUCH of
 * document:wb<run>-<writer>-<i>#viewer@user:u<i % 1000> until the deadline. */
static void *writer_main(void *arg)
{
	writer *w = arg;
	grpc_client_options opts;
	grpc_client_options_init(&opts);
	opts.target = w->endpoint;
	grpc_client *client;
	pemba_error err;
	if (grpc_client_connect(&opts, &client, &err) != 0) {
		snprintf(w->error, sizeof(w->error), "connect: %.400s",
		         err.message);
		return NULL;
	}
	static atomic_uint run_counter;
	unsigned run = atomic_fetch_add(&run_counter, 1);
	for (size_t i = 0; now_seconds() < w->deadline; i++) {
		char rid[96], sid[32];
		snprintf(rid, sizeof(rid), "wb%u-%u-%zu", run, w->id, i);
		snprintf(sid, sizeof(sid), "u%zu", i % 1000);
		Authzed__Api__V1__ObjectReference res =
		    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
		res.object_type = "document";
		res.object_id = rid;
		Authzed__Api__V1__ObjectReference sobj =
		    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
		sobj.object_type = "user";
		sobj.object_id = sid;
		Authzed__Api__V1__SubjectReference subject =
		    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
		subject.object = &sobj;
		Authzed__Api__V1__Relationship rel =
		    AUTHZED__API__V1__RELATIONSHIP__INIT;
		rel.resource = &res;
		rel.relation = "viewer";
		rel.subject = &subject;
		Authzed__Api__V1__RelationshipUpdate up =
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
		up.operation =
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		up.relationship = &rel;
		Authzed__Api__V1__RelationshipUpdate *ups[1] = {&up};
		Authzed__Api__V1__WriteRelationshipsRequest req =
		    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
		req.n_updates = 1;
		req.updates = ups;
		uint8_t wire[512];
		size_t wlen =
		    authzed__api__v1__write_relationships_request__get_packed_size(
		        &req);
		authzed__api__v1__write_relationships_request__pack(&req, wire);
		uint8_t *resp = NULL;
		size_t resp_len = 0;
		grpc_status st = {0};
		double t0 = now_seconds();
		grpc_client_unary(client, WRITE_PATH, w->auth->md, w->auth->n,
		                  10000, wire, wlen, &resp, &resp_len, &st);
		double dt = now_seconds() - t0;
		if (st.code != GRPC_STATUS_OK) {
			if (!w->errors)
				snprintf(w->error, sizeof(w->error), "%s: %s",
				         grpc_status_name(st.code),
				         st.message ? st.message : "");
			w->errors++;
		} else {
			if (w->nlat == w->caplat)
				w->latencies = xrealloc(
				    w->latencies,
				    (w->caplat = w->caplat ? w->caplat * 2
				                           : 4096) *
				        sizeof(double));
			w->latencies[w->nlat++] = dt;
		}
		free(resp);
		grpc_status_clear(&st);
	}
	grpc_client_close(client);
	return NULL;
}

static level_result run_writers(const char *endpoint, const auth_md *auth,
                                size_t nwriters, double seconds)
{
	writer *w = xcalloc(nwriters, sizeof(*w));
	double start = now_seconds();
	for (size_t t = 0; t < nwriters; t++) {
		w[t] = (writer){.endpoint = endpoint,
		                .auth = auth,
		                .id = (unsigned)t,
		                .deadline = start + seconds};
		pthread_create(&w[t].thread, NULL, writer_main, &w[t]);
	}
	size_t total = 0, errors = 0;
	for (size_t t = 0; t < nwriters; t++) {
		pthread_join(w[t].thread, NULL);
		total += w[t].nlat;
		errors += w[t].errors;
		if (w[t].error[0])
			fprintf(stderr, "bench_grpc: writer %zu: %s\n", t,
			        w[t].error);
	}
	double elapsed = now_seconds() - start;
	double *all = xmalloc((total ? total : 1) * sizeof(double));
	size_t k = 0;
	for (size_t t = 0; t < nwriters; t++) {
		memcpy(all + k, w[t].latencies, w[t].nlat * sizeof(double));
		k += w[t].nlat;
		free(w[t].latencies);
	}
	free(w);
	level_result r = summarize(all, total, errors, elapsed);
	free(all);
	return r;
}

/* Parses "1,16,64" into out[]; "0" or "" gives none. */
static size_t parse_list(const char *text, size_t *out, size_t max)
{
	size_t n = 0;
	char *copy = xstrdup(text);
	for (char *save = NULL, *t = strtok_r(copy, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		long v = atol(t);
		if (v <= 0)
			continue;
		if (n == max)
			die("too many values in %s", text);
		out[n++] = (size_t)v;
	}
	free(copy);
	return n;
}

/* ============================================================= SpiceDB */

typedef struct ref_worker {
	pthread_t thread;
	spicedb_ref *ref;
	const input *in;
	atomic_size_t *next;
	size_t limit;
	double *latencies;
	size_t nlat;
	size_t errors;
} ref_worker;

static void *ref_worker_main(void *arg)
{
	ref_worker *w = arg;
	char e[1024];
	for (;;) {
		size_t i = atomic_fetch_add(w->next, 1);
		if (i >= w->limit)
			break;
		int answer;
		double t0 = now_seconds();
		if (spicedb_ref_check(w->ref,
		                      &w->in->queries[i % w->in->nqueries].req,
		                      &answer, e, sizeof(e)) != 0)
			w->errors++;
		else
			w->latencies[w->nlat++] = now_seconds() - t0;
	}
	return NULL;
}

static spicedb_ref *load_spicedb(const input *in)
{
	char e[4096];
	spicedb_ref *ref;
	if (spicedb_ref_open(spicedb_ref_library_path(), &ref, e, sizeof(e))) {
		printf("spicedb: skipped (%s)\n", e);
		return NULL;
	}
	if (spicedb_ref_write_schema(ref, in->schema, e, sizeof(e)))
		die("spicedb schema: %s", e);
	pemba_relationship rels[1000];
	char *storage[1000];
	for (size_t first = 0; first < in->nrels; first += 1000) {
		size_t n = in->nrels - first < 1000 ? in->nrels - first : 1000;
		for (size_t i = 0; i < n; i++) {
			pemba_error err;
			if (pemba_parse_relationship(in->rel_lines[first + i],
			                             &rels[i], &storage[i], &err))
				die("bad relationship: %s", err.message);
		}
		if (spicedb_ref_touch(ref, rels, n, e, sizeof(e)))
			die("spicedb write: %s", e);
		for (size_t i = 0; i < n; i++)
			pemba_free(storage[i]);
	}
	return ref;
}

static level_result run_spicedb_level(spicedb_ref *ref, const input *in,
                                      size_t inflight, size_t count)
{
	atomic_size_t next = 0;
	ref_worker *w = xcalloc(inflight, sizeof(*w));
	double start = now_seconds();
	for (size_t t = 0; t < inflight; t++) {
		w[t] = (ref_worker){.ref = ref,
		                    .in = in,
		                    .next = &next,
		                    .limit = count,
		                    .latencies = xcalloc(count, sizeof(double))};
		pthread_create(&w[t].thread, NULL, ref_worker_main, &w[t]);
	}
	size_t total = 0, errors = 0;
	for (size_t t = 0; t < inflight; t++) {
		pthread_join(w[t].thread, NULL);
		total += w[t].nlat;
		errors += w[t].errors;
	}
	double elapsed = now_seconds() - start;
	double *all = xmalloc((total ? total : 1) * sizeof(double));
	size_t k = 0;
	for (size_t t = 0; t < inflight; t++) {
		memcpy(all + k, w[t].latencies, w[t].nlat * sizeof(double));
		k += w[t].nlat;
		free(w[t].latencies);
	}
	free(w);
	level_result r = summarize(all, total, errors, elapsed);
	free(all);
	return r;
}

/* ================================================================ main */

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: bench_grpc --dir DIR [--endpoint HOST:PORT] "
	        "[--token KEY]\n"
	        "                  [--seconds S] [--runs K] "
	        "[--spicedb-checks N]\n"
	        "\n"
	        "  --dir DIR           output of `bench_check --dump DIR`\n"
	        "  --endpoint H:P      pemba server (default "
	        "127.0.0.1:50051), h2c\n"
	        "  --token KEY         preshared key (Bearer token)\n"
	        "  --seconds S         duration of each level (default 5)\n"
	        "  --runs K            runs per level; medians (default 3)\n"
	        "  --spicedb-checks N  checks per level on the real SpiceDB "
	        "(default 64;\n"
	        "                      0 skips)\n"
	        "  --levels L,L...     check levels, requests in flight "
	        "(default 1,16,64;\n"
	        "                      0: no checks)\n"
	        "  --lookups N         LookupResources queries, one at a time "
	        "(default 0)\n"
	        "  --lookup-seconds S  stop the lookups after S seconds "
	        "(default 30)\n"
	        "  --lookup TYPE#PERM  what to look up (default document#edit)\n"
	        "  --writers W,W...    write levels: concurrent writers, each "
	        "a closed loop\n"
	        "                      of WriteRelationships with one TOUCH "
	        "(default none)\n"
	        "  --write-seconds S   duration of each write level (default 5)\n"
	        "  --label NAME        prefix of the RESULT lines (default "
	        "pemba)\n");
}

static int compare_results(const void *a, const void *b)
{
	const level_result *x = a, *y = b;
	return (x->rate > y->rate) - (x->rate < y->rate);
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *endpoint = "127.0.0.1:50051", *token = NULL;
	double seconds = 5, lookup_seconds = 30, write_seconds = 5;
	long runs = 3, spicedb_checks = 64, lookups = 0;
	const char *levels_text = "1,16,64", *writers_text = "",
	           *lookup_text = "document#edit", *label = "pemba";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--dir") && v) {
			dir = v, i++;
		} else if (!strcmp(a, "--endpoint") && v) {
			endpoint = v, i++;
		} else if (!strcmp(a, "--token") && v) {
			token = v, i++;
		} else if (!strcmp(a, "--seconds") && v) {
			seconds = atof(v), i++;
		} else if (!strcmp(a, "--runs") && v) {
			runs = atol(v), i++;
		} else if (!strcmp(a, "--spicedb-checks") && v) {
			spicedb_checks = atol(v), i++;
		} else if (!strcmp(a, "--levels") && v) {
			levels_text = v, i++;
		} else if (!strcmp(a, "--lookups") && v) {
			lookups = atol(v), i++;
		} else if (!strcmp(a, "--lookup-seconds") && v) {
			lookup_seconds = atof(v), i++;
		} else if (!strcmp(a, "--lookup") && v) {
			lookup_text = v, i++;
		} else if (!strcmp(a, "--writers") && v) {
			writers_text = v, i++;
		} else if (!strcmp(a, "--write-seconds") && v) {
			write_seconds = atof(v), i++;
		} else if (!strcmp(a, "--label") && v) {
			label = v, i++;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!dir || seconds <= 0 || runs < 1 || runs > 100 ||
	    spicedb_checks < 0) {
		usage(stderr);
		return 2;
	}
	size_t levels[MAX_LEVELS], writers[MAX_LEVELS];
	size_t nlevels = parse_list(levels_text, levels, MAX_LEVELS);
	size_t nwriters = parse_list(writers_text, writers, MAX_LEVELS);
	for (size_t l = 0; l < nwriters; l++)
		if (writers[l] > MAX_WRITERS)
			die("at most 256 writers (%s)", writers_text);
	char lookup_type[128], *lookup_perm;
	snprintf(lookup_type, sizeof(lookup_type), "%s", lookup_text);
	if (!(lookup_perm = strchr(lookup_type, '#')))
		die("--lookup wants TYPE#PERMISSION, not %s", lookup_text);
	*lookup_perm++ = '\0';
	input in;
	load_input(dir, &in);
	printf("dataset: %zu relationships, %zu distinct checks; %s at %s "
	       "(gRPC, h2c)\n\n",
	       in.nrels, in.nqueries, label, endpoint);
	level_result pemba_median[MAX_LEVELS];
	if (nlevels)
		printf("%-10s %12s %10s %10s %8s\n", "in flight", "checks/s",
		       "p50 us", "p99 us", "errors");
	for (size_t l = 0; l < nlevels; l++) {
		level_result r[100];
		for (long k = 0; k < runs; k++)
			r[k] = run_grpc_level(endpoint, token, &in, levels[l],
			                      seconds);
		qsort(r, (size_t)runs, sizeof(r[0]), compare_results);
		pemba_median[l] = r[runs / 2];
		printf("%-10zu %12.0f %10.1f %10.1f %8zu\n", levels[l],
		       pemba_median[l].rate, pemba_median[l].p50,
		       pemba_median[l].p99, pemba_median[l].errors);
		printf("RESULT %s_check%zu_rate %.3f\n", label, levels[l],
		       pemba_median[l].rate);
		printf("RESULT %s_check%zu_p50_us %.1f\n", label, levels[l],
		       pemba_median[l].p50);
		printf("RESULT %s_check%zu_p99_us %.1f\n", label, levels[l],
		       pemba_median[l].p99);
		printf("RESULT %s_check%zu_errors %zu\n", label, levels[l],
		       pemba_median[l].errors);
		fflush(stdout);
	}
	if (lookups > 0)
		run_lookups(endpoint, token, &in, lookup_type, lookup_perm,
		            (size_t)lookups, lookup_seconds, label);
	if (nwriters) {
		auth_md auth;
		auth_md_init(&auth, token);
		printf("%-10s %12s %10s %10s %8s\n", "writers", "writes/s",
		       "p50 us", "p99 us", "errors");
		for (size_t l = 0; l < nwriters; l++) {
			level_result r[100];
			for (long k = 0; k < runs; k++)
				r[k] = run_writers(endpoint, &auth, writers[l],
				                   write_seconds);
			qsort(r, (size_t)runs, sizeof(r[0]), compare_results);
			level_result m = r[runs / 2];
			printf("%-10zu %12.0f %10.1f %10.1f %8zu\n", writers[l],
			       m.rate, m.p50, m.p99, m.errors);
			printf("RESULT %s_write%zu_rate %.3f\n", label, writers[l],
			       m.rate);
			printf("RESULT %s_write%zu_p50_us %.1f\n", label, writers[l],
			       m.p50);
			printf("RESULT %s_write%zu_p99_us %.1f\n", label, writers[l],
			       m.p99);
			printf("RESULT %s_write%zu_errors %zu\n", label, writers[l],
			       m.errors);
			fflush(stdout);
		}
	}
	if (spicedb_checks == 0 || nlevels == 0)
		return 0;
	printf("\nspicedb (real, in-process C ABI: its only CheckPermission "
	       "path; memory datastore; %ld checks per level)\n",
	       spicedb_checks);
	spicedb_ref *ref = load_spicedb(&in);
	if (!ref)
		return 0;
	printf("%-10s %12s %10s %10s %8s %10s\n", "in flight", "checks/s",
	       "p50 us", "p99 us", "errors", "ratio");
	for (size_t l = 0; l < nlevels; l++) {
		level_result r = run_spicedb_level(ref, &in, levels[l],
		                                   (size_t)spicedb_checks);
		printf("%-10zu %12.1f %10.0f %10.0f %8zu %9.0fx\n", levels[l],
		       r.rate, r.p50, r.p99, r.errors,
		       r.rate > 0 ? pemba_median[l].rate / r.rate : 0);
		fflush(stdout);
	}
	spicedb_ref_close(ref);
	return 0;
}
