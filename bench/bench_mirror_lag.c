/*
 * bench_mirror_lag.c -- how far behind a mirror's target is while the
 * source takes a steady stream of writes.
 *
 * A load generator writes WriteRelationships to the SOURCE server at a
 * fixed rate, paced by the clock (write i is sent at start + i / rate, or
 * at once when its thread is late; never slowed by the responses), from
 * --threads threads, each with its own HTTP/2 connection.  Write i is one
 * request of two updates: TOUCH document:PREFIX-i#viewer@user:u(i % 1000)
 * and DELETE the relationship written one second earlier (i - rate), so
 * the stream carries both kinds and the data stays the same size.  The
 * acknowledgement time of every write is recorded.
 *
 * A watcher on the TARGET (Watch, relationship updates and checkpoints,
 * started before the first write: the writers wait for its first
 * response) records when PREFIX-i first appears there: its TOUCH, or
 * the DELETE of a second later when the copier applied both at once
 * (a mirror batch keeps only the last update of a relationship; the
 * target is then past write i all the same).  Lag of
 * write i = seen on the target - acknowledged by the source, both
 * CLOCK_MONOTONIC in this process.  Whatever copies source to target
 * (`pemba mirror` in bench/bench_move.sh) is outside this program.
 *
 * After --seconds of writes it waits up to --settle seconds for the
 * missing ones, then prints the achieved rate, write latency, and lag
 * p50 / p90 / p99 / max.  A write that never shows (its TOUCH and the
 * DELETE a second later folded into one mirror batch, which leaves
 * nothing to see) takes the time the first write sent after its
 * acknowledgement showed: the mirror applies in source order, so the
 * target held it by then.  Writes never seen otherwise count as missing
 * (exit 1 if any).  --json prints one line of JSON instead.
 *
 * Uses the transport's blocking client (src/api/grpc.h) and the protobuf-c
 * messages, as bench_grpc does.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/grpc.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "pemba.h"
#include "util/xalloc.h"

#define WRITE_PATH "/authzed.api.v1.PermissionsService/WriteRelationships"
#define WATCH_PATH "/authzed.api.v1.WatchService/Watch"
#define MAX_THREADS 64

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	struct timespec ts;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
		;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Value at fraction q of sorted v[0..n); n > 0. */
static double percentile(const double *v, size_t n, double q)
{
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* ============================================================ options */

typedef struct options {
	const char *source;
	const char *target;
	const char *token;
	double rate;
	double seconds;
	double settle;
	int threads;
	const char *prefix;
	bool json;
} options;

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: bench_mirror_lag --source HOST:PORT --target HOST:PORT "
	        "[--token K]\n"
	        "       [--rate N] [--seconds S] [--threads T] [--settle S] "
	        "[--prefix P] [--json]\n"
	        "\n"
	        "Writes to SOURCE at a steady rate and measures when each "
	        "write appears in\n"
	        "TARGET's Watch stream (a mirror copies source to target; "
	        "start it first).\n"
	        "The schema must have document#viewer: user "
	        "(bench_check's dataset).\n"
	        "\n"
	        "  --source HOST:PORT  server written to (h2c)\n"
	        "  --target HOST:PORT  server watched (h2c)\n"
	        "  --token K           preshared key of both (default "
	        "$PEMBA_TOKEN)\n"
	        "  --rate N            writes per second (default 1000)\n"
	        "  --seconds S         how long to write (default 30)\n"
	        "  --threads T         writer threads/connections (default "
	        "8)\n"
	        "  --settle S          wait at most S s for the last writes "
	        "(default 10)\n"
	        "  --prefix P          resource id prefix (default lag<pid>)\n"
	        "  --json              one JSON line instead of text\n");
}

static int parse_options(int argc, char **argv, options *o)
{
	static char prefix[64];
	snprintf(prefix, sizeof(prefix), "lag%ld", (long)getpid());
	*o = (options){.token = getenv("PEMBA_TOKEN"),
	               .rate = 1000,
	               .seconds = 30,
	               .settle = 10,
	               .threads = 8,
	               .prefix = prefix};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(a, "--json") == 0) {
			o->json = true;
			continue;
		}
		if (!v)
			goto bad;
		i++;
		if (strcmp(a, "--source") == 0)
			o->source = v;
		else if (strcmp(a, "--target") == 0)
			o->target = v;
		else if (strcmp(a, "--token") == 0)
			o->token = v;
		else if (strcmp(a, "--rate") == 0)
			o->rate = atof(v);
		else if (strcmp(a, "--seconds") == 0)
			o->seconds = atof(v);
		else if (strcmp(a, "--settle") == 0)
			o->settle = atof(v);
		else if (strcmp(a, "--threads") == 0)
			o->threads = atoi(v);
		else if (strcmp(a, "--prefix") == 0)
			o->prefix = v;
		else
			goto bad;
	}
	if (!o->source || !o->target || o->rate <= 0 || o->seconds <= 0 ||
	    o->threads < 1 || o->threads > MAX_THREADS || o->settle < 0)
		goto bad;
	return 0;
bad:
	usage(stderr);
	return -1;
}

/* ============================================================== state */

typedef struct run {
	const options *o;
	grpc_metadata md;
	char auth[256];
	size_t nwrites;
	double start;         /* write i is due at start + i / rate */
	double *acked;        /* per write: ack time, 0 = not acked */
	double *sent;         /* per write: send time */
	_Atomic double *seen; /* per write: first seen on the target */
	atomic_size_t nseen;
	atomic_bool watching;   /* the watcher's stream is established */
	atomic_bool stop_watch; /* the watcher may end */
	atomic_size_t errors;
	char error[512];
	pthread_mutex_t error_lock;
	char watch_error[512];
} run;

static void note_error(run *r, const char *fmt, const char *detail)
{
	atomic_fetch_add(&r->errors, 1);
	pthread_mutex_lock(&r->error_lock);
	if (!r->error[0])
		snprintf(r->error, sizeof(r->error), fmt, detail);
	pthread_mutex_unlock(&r->error_lock);
}

static int connect_to(const char *target, grpc_client **out, char *errbuf,
                      size_t errlen)
{
	grpc_client_options opts;
	grpc_client_options_init(&opts);
	opts.target = target;
	pemba_error err = {0};
	if (grpc_client_connect(&opts, out, &err) != 0) {
		snprintf(errbuf, errlen, "connect %s: %.400s", target,
		         err.message);
		return -1;
	}
	return 0;
}

/* ============================================================= writer */

typedef struct writer {
	pthread_t thread;
	run *r;
	int index;
} writer;

/* Packs write i (TOUCH the new relationship, DELETE the one of a second
 * ago) into a malloc'd buffer. */
static uint8_t *pack_write(const run *r, size_t i, size_t *len)
{
	size_t window = (size_t)r->o->rate;
	char res_id[2][96], sub_id[2][32];
	Authzed__Api__V1__ObjectReference res[2], sub_obj[2];
	Authzed__Api__V1__SubjectReference sub[2];
	Authzed__Api__V1__Relationship rel[2];
	Authzed__Api__V1__RelationshipUpdate up[2], *ups[2];
	size_t n = i >= window ? 2 : 1;
	for (size_t k = 0; k < n; k++) {
		size_t id = k == 0 ? i : i - window;
		snprintf(res_id[k], sizeof(res_id[k]), "%s-%zu", r->o->prefix,
		         id);
		snprintf(sub_id[k], sizeof(sub_id[k]), "u%zu", id % 1000);
		authzed__api__v1__object_reference__init(&res[k]);
		res[k].object_type = "document";
		res[k].object_id = res_id[k];
		authzed__api__v1__object_reference__init(&sub_obj[k]);
		sub_obj[k].object_type = "user";
		sub_obj[k].object_id = sub_id[k];
		authzed__api__v1__subject_reference__init(&sub[k]);
		sub[k].object = &sub_obj[k];
		authzed__api__v1__relationship__init(&rel[k]);
		rel[k].resource = &res[k];
		rel[k].relation = "viewer";
		rel[k].subject = &sub[k];
		authzed__api__v1__relationship_update__init(&up[k]);
		up[k].operation =
		    k == 0
		        ? AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH
		        : AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE;
		up[k].relationship = &rel[k];
		ups[k] = &up[k];
	}
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.n_updates = n;
	req.updates = ups;
	*len = authzed__api__v1__write_relationships_request__get_packed_size(
	    &req);
	uint8_t *buf = xmalloc(*len);
	authzed__api__v1__write_relationships_request__pack(&req, buf);
	return buf;
}

static void *writer_main(void *arg)
{
	writer *w = arg;
	run *r = w->r;
	grpc_client *client;
	char errbuf[512];
	if (connect_to(r->o->source, &client, errbuf, sizeof(errbuf)) != 0) {
		note_error(r, "%s", errbuf);
		return NULL;
	}
	for (size_t i = (size_t)w->index; i < r->nwrites;
	     i += (size_t)r->o->threads) {
		size_t len;
		uint8_t *req = pack_write(r, i, &len);
		sleep_until(r->start + (double)i / r->o->rate);
		uint8_t *resp = NULL;
		size_t resp_len = 0;
		grpc_status st = {0};
		r->sent[i] = now_seconds();
		int code =
		    grpc_client_unary(client, WRITE_PATH, &r->md, 1, 10000, req,
		                      len, &resp, &resp_len, &st);
		double t = now_seconds();
		if (code == GRPC_STATUS_OK)
			r->acked[i] = t;
		else
			note_error(r, "WriteRelationships: %s",
			           st.message ? st.message : "(no message)");
		grpc_status_clear(&st);
		free(resp);
		free(req);
	}
	grpc_client_close(client);
	return NULL;
}

/* ============================================================ watcher */

/* Index of a "PREFIX-i" id, or -1. */
static long parse_id(const run *r, const char *id)
{
	size_t plen = strlen(r->o->prefix);
	if (strncmp(id, r->o->prefix, plen) != 0 || id[plen] != '-')
		return -1;
	char *end;
	long i = strtol(id + plen + 1, &end, 10);
	return *end == '\0' && i >= 0 && (size_t)i < r->nwrites ? i : -1;
}

static int on_watch(void *ctx, const uint8_t *data, size_t len)
{
	run *r = ctx;
	double t = now_seconds();
	atomic_store(&r->watching, true);
	Authzed__Api__V1__WatchResponse *resp =
	    authzed__api__v1__watch_response__unpack(NULL, len, data);
	if (!resp)
		return 1;
	for (size_t k = 0; k < resp->n_updates; k++) {
		const Authzed__Api__V1__RelationshipUpdate *u =
		    resp->updates[k];
		if (!u->relationship || !u->relationship->resource)
			continue;
		long i = parse_id(r, u->relationship->resource->object_id);
		if (i >= 0 && atomic_load(&r->seen[i]) == 0) {
			atomic_store(&r->seen[i], t);
			atomic_fetch_add(&r->nseen, 1);
		}
	}
	authzed__api__v1__watch_response__free_unpacked(resp, NULL);
	return atomic_load(&r->stop_watch) ? 1 : 0;
}

static void *watcher_main(void *arg)
{
	run *r = arg;
	grpc_client *client;
	if (connect_to(r->o->target, &client, r->watch_error,
	               sizeof(r->watch_error)) != 0)
		return NULL;
	Authzed__Api__V1__WatchKind kinds[2] = {
	    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES,
	    AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_CHECKPOINTS};
	char *types[1] = {"document"};
	Authzed__Api__V1__WatchRequest req =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	req.n_optional_object_types = 1;
	req.optional_object_types = types;
	req.n_optional_update_kinds = 2;
	req.optional_update_kinds = kinds;
	size_t len = authzed__api__v1__watch_request__get_packed_size(&req);
	uint8_t *buf = xmalloc(len);
	authzed__api__v1__watch_request__pack(&req, buf);
	grpc_status st = {0};
	int code = grpc_client_server_streaming(client, WATCH_PATH, &r->md, 1,
	                                        0, buf, len, on_watch, r, &st);
	if (code != GRPC_STATUS_OK && code != GRPC_STATUS_CANCELLED)
		snprintf(r->watch_error, sizeof(r->watch_error),
		         "Watch ended: %d %.400s", code,
		         st.message ? st.message : "");
	grpc_status_clear(&st);
	free(buf);
	grpc_client_close(client);
	return NULL;
}

/* The earliest time a write sent after `t` was seen on the target, or
 * 0. */
static double seen_after(const run *r, double t)
{
	double best = 0;
	for (size_t j = 0; j < r->nwrites; j++) {
		double s = atomic_load(&r->seen[j]);
		if (r->sent[j] > t && s > 0 && (best == 0 || s < best))
			best = s;
	}
	return best;
}

/* =============================================================== main */

int main(int argc, char **argv)
{
	options o;
	if (parse_options(argc, argv, &o) != 0)
		return 2;
	run r = {.o = &o};
	pthread_mutex_init(&r.error_lock, NULL);
	snprintf(r.auth, sizeof(r.auth), "Bearer %s", o.token ? o.token : "");
	r.md = (grpc_metadata){.name = "authorization", .value = r.auth};
	r.nwrites = (size_t)(o.rate * o.seconds);
	r.acked = xcalloc(r.nwrites, sizeof(*r.acked));
	r.sent = xcalloc(r.nwrites, sizeof(*r.sent));
	r.seen = xcalloc(r.nwrites, sizeof(*r.seen));

	pthread_t watcher;
	pthread_create(&watcher, NULL, watcher_main, &r);
	double wait_until = now_seconds() + 5;
	while (!atomic_load(&r.watching) && !r.watch_error[0] &&
	       now_seconds() < wait_until)
		sleep_until(now_seconds() + 0.01);
	if (!atomic_load(&r.watching)) {
		fprintf(stderr,
		        "bench_mirror_lag: no Watch response from %s%s%s\n",
		        o.target, r.watch_error[0] ? ": " : "", r.watch_error);
		return 1;
	}

	writer *ws = xcalloc((size_t)o.threads, sizeof(*ws));
	r.start = now_seconds() + 0.05;
	for (int k = 0; k < o.threads; k++) {
		ws[k] = (writer){.r = &r, .index = k};
		pthread_create(&ws[k].thread, NULL, writer_main, &ws[k]);
	}
	for (int k = 0; k < o.threads; k++)
		pthread_join(ws[k].thread, NULL);
	double end = now_seconds();

	size_t nacked = 0;
	double last_ack = r.start;
	for (size_t i = 0; i < r.nwrites; i++)
		if (r.acked[i] > 0) {
			nacked++;
			if (r.acked[i] > last_ack)
				last_ack = r.acked[i];
		}
	double settle_until = end + o.settle;
	while (atomic_load(&r.nseen) < nacked && now_seconds() < settle_until &&
	       !r.watch_error[0])
		sleep_until(now_seconds() + 0.01);
	atomic_store(&r.stop_watch, true);
	/* The watcher ends at its next response (a checkpoint within 1 s). */
	pthread_join(watcher, NULL);

	double *lag = xmalloc(r.nwrites * sizeof(*lag));
	double *wlat = xmalloc(r.nwrites * sizeof(*wlat));
	size_t nlag = 0, nw = 0, missing = 0, negative = 0, inferred = 0;
	double max_late = 0;
	for (size_t i = 0; i < r.nwrites; i++) {
		if (r.acked[i] <= 0)
			continue;
		wlat[nw++] = r.acked[i] - r.sent[i];
		double late = r.sent[i] - (r.start + (double)i / o.rate);
		if (late > max_late)
			max_late = late;
		double s = atomic_load(&r.seen[i]);
		if (s <= 0) {
			/* Never seen: its TOUCH and the DELETE a second later
			 * reached the mirror in one batch, which keeps only the
			 * DELETE, and deleting what the target lacks is no
			 * change.  A write j sent after i was acknowledged
			 * committed after i on the source; the mirror applies
			 * in source order, so when j shows on the target so
			 * does i: the earliest such j bounds i's time. */
			s = seen_after(&r, r.acked[i]);
			if (s <= 0) {
				missing++;
				continue;
			}
			inferred++;
		}
		if (s < r.acked[i])
			negative++;
		lag[nlag++] = s - r.acked[i];
	}
	qsort(lag, nlag, sizeof(*lag), compare_doubles);
	qsort(wlat, nw, sizeof(*wlat), compare_doubles);
	double achieved = (double)nacked / (last_ack - r.start);
	size_t errors = atomic_load(&r.errors);
	double p50 = nlag ? percentile(lag, nlag, 0.50) : 0;
	double p90 = nlag ? percentile(lag, nlag, 0.90) : 0;
	double p99 = nlag ? percentile(lag, nlag, 0.99) : 0;
	double lmax = nlag ? lag[nlag - 1] : 0;
	double w50 = nw ? percentile(wlat, nw, 0.50) : 0;
	double w99 = nw ? percentile(wlat, nw, 0.99) : 0;
	if (o.json) {
		printf("{\"writes\":%zu,\"acked\":%zu,\"errors\":%zu,"
		       "\"achieved_per_s\":%.1f,\"max_late_ms\":%.2f,"
		       "\"write_p50_ms\":%.3f,\"write_p99_ms\":%.3f,"
		       "\"seen\":%zu,\"inferred\":%zu,\"missing\":%zu,"
		       "\"seen_before_ack\":%zu,"
		       "\"lag_p50_ms\":%.2f,\"lag_p90_ms\":%.2f,"
		       "\"lag_p99_ms\":%.2f,\"lag_max_ms\":%.2f}\n",
		       r.nwrites, nacked, errors, achieved, max_late * 1e3,
		       w50 * 1e3, w99 * 1e3, nlag, inferred, missing, negative,
		       p50 * 1e3, p90 * 1e3, p99 * 1e3, lmax * 1e3);
	} else {
		printf("writes: %zu planned at %.0f/s for %.0f s, %zu acked, "
		       "%zu failed; achieved %.1f writes/s; latest send %.1f "
		       "ms behind schedule\n",
		       r.nwrites, o.rate, o.seconds, nacked, errors, achieved,
		       max_late * 1e3);
		printf("write latency (source): p50 %.2f ms, p99 %.2f ms\n",
		       w50 * 1e3, w99 * 1e3);
		printf("seen on target: %zu (%zu of them through a later "
		       "write), missing after %.0f s: %zu (seen before the "
		       "ack: %zu)\n",
		       nlag, inferred, o.settle, missing, negative);
		printf("lag (seen on target - acked by source): p50 %.1f ms, "
		       "p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		       p50 * 1e3, p90 * 1e3, p99 * 1e3, lmax * 1e3);
		printf("target p99 < 1000 ms: %s\n",
		       nlag && missing == 0 && p99 < 1.0 ? "met" : "MISSED");
	}
	if (r.error[0])
		fprintf(stderr, "bench_mirror_lag: first error: %s\n", r.error);
	if (r.watch_error[0])
		fprintf(stderr, "bench_mirror_lag: %s\n", r.watch_error);
	return missing == 0 && errors == 0 ? 0 : 1;
}
