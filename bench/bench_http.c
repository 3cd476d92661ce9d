/*
 * bench_http.c -- CheckPermission throughput and latency through the HTTP
 * gateway (`pemba serve --http-enabled`): POST /v1/permissions/check with
 * proto3 JSON, `inflight` keep-alive HTTP/1.1 connections each with one
 * request outstanding (a thread per connection, blocking sockets), for
 * --seconds, --runs times; medians.  Same input as bench_grpc (the
 * checks.txt of `bench_check --dump DIR`), so bench/bench_http.sh can put
 * the two side by side.  Prints `RESULT <label>_check<N>_rate ...` lines.
 */
#define _GNU_SOURCE /* asprintf, strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/xalloc.h"

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
	fprintf(stderr, "bench_http: %s\n", msg);
	exit(1);
}

typedef struct shared {
	char **requests; /* whole HTTP requests */
	size_t *lens;
	size_t n;
	int port;
	double stop_at;
	atomic_size_t next;
} shared;

typedef struct worker {
	pthread_t t;
	shared *sh;
	size_t done, errors;
	double *lat; /* microseconds */
	size_t n_lat, cap_lat;
} worker;

static int connect_to(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Reads one response (Content-Length framed); the status code, or -1. */
static int read_response(int fd, char *buf, size_t cap)
{
	size_t have = 0;
	char *end = NULL;
	while (!end) {
		if (have == cap - 1)
			return -1;
		ssize_t n = recv(fd, buf + have, cap - 1 - have, 0);
		if (n <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	int status = atoi(buf + 9);
	const char *cl = strcasestr(buf, "\r\ncontent-length:");
	if (!cl)
		return -1;
	size_t body = strtoul(cl + 17, NULL, 10);
	size_t total = (size_t)(end + 4 - buf) + body;
	if (total >= cap)
		return -1;
	while (have < total) {
		ssize_t n = recv(fd, buf + have, total - have, 0);
		if (n <= 0)
			return -1;
		have += (size_t)n;
	}
	buf[have] = '\0';
	if (status == 200 &&
	    !strstr(end, "\"permissionship\":\"PERMISSIONSHIP_"))
		return -1;
	return status;
}

static void *run_worker(void *arg)
{
	worker *w = arg;
	shared *sh = w->sh;
	int fd = connect_to(sh->port);
	if (fd < 0)
		die("cannot connect");
	char buf[16384];
	while (now_seconds() < sh->stop_at) {
		size_t i = atomic_fetch_add(&sh->next, 1) % sh->n;
		double t0 = now_seconds();
		if (send(fd, sh->requests[i], sh->lens[i], MSG_NOSIGNAL) !=
		    (ssize_t)sh->lens[i]) {
			w->errors++;
			close(fd);
			fd = connect_to(sh->port);
			continue;
		}
		int st = read_response(fd, buf, sizeof(buf));
		if (st != 200) {
			w->errors++;
			if (st < 0) {
				close(fd);
				fd = connect_to(sh->port);
			}
			continue;
		}
		if (w->n_lat == w->cap_lat) {
			w->cap_lat = w->cap_lat ? 2 * w->cap_lat : 4096;
			w->lat = xrealloc(w->lat, w->cap_lat * sizeof(double));
		}
		w->lat[w->n_lat++] = (now_seconds() - t0) * 1e6;
		w->done++;
	}
	close(fd);
	return NULL;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* "type:id#perm@type:id" -> the JSON body. */
static char *check_body(const char *line)
{
	char rt[128], rid[256], perm[128], st[128], sid[256];
	if (sscanf(line, "%127[^:]:%255[^#]#%127[^@]@%127[^:]:%255s", rt, rid,
	           perm, st, sid) != 5)
		return NULL;
	char *out;
	if (asprintf(
	        &out,
	        "{\"resource\":{\"objectType\":\"%s\",\"objectId\":\"%s\"},"
	        "\"permission\":\"%s\",\"subject\":{\"object\":{"
	        "\"objectType\":\"%s\",\"objectId\":\"%s\"}}}",
	        rt, rid, perm, st, sid) < 0)
		return NULL;
	return out;
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *token = "", *label = "pemba_http";
	int port = 8443, inflight = 64, runs = 3;
	double seconds = 5;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--dir"))
			dir = argv[i + 1];
		else if (!strcmp(argv[i], "--port"))
			port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--token"))
			token = argv[i + 1];
		else if (!strcmp(argv[i], "--inflight"))
			inflight = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--runs"))
			runs = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--label"))
			label = argv[i + 1];
		else
			die("usage: bench_http --dir DIR [--port P] [--token "
			    "K] "
			    "[--inflight N] [--runs K] [--seconds S] [--label "
			    "L]");
	}
	if (!dir || inflight < 1 || inflight > 1024 || runs < 1)
		die("usage: bench_http --dir DIR [--port P] [--token K] "
		    "[--inflight N] [--runs K] [--seconds S] [--label L]");
	char path[4096];
	snprintf(path, sizeof(path), "%s/checks.txt", dir);
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot read DIR/checks.txt");
	shared sh = {.port = port};
	size_t cap = 0;
	char line[1024];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		char *body = check_body(line);
		if (!body)
			continue;
		if (sh.n == cap) {
			cap = cap ? 2 * cap : 1024;
			sh.requests =
			    xrealloc(sh.requests, cap * sizeof(char *));
			sh.lens = xrealloc(sh.lens, cap * sizeof(size_t));
		}
		int n = asprintf(&sh.requests[sh.n],
		                 "POST /v1/permissions/check HTTP/1.1\r\n"
		                 "Host: 127.0.0.1\r\n"
		                 "Authorization: Bearer %s\r\n"
		                 "Content-Type: application/json\r\n"
		                 "Content-Length: %zu\r\n\r\n%s",
		                 token, strlen(body), body);
		free(body);
		if (n < 0)
			die("out of memory");
		sh.lens[sh.n++] = (size_t)n;
	}
	fclose(f);
	if (sh.n == 0)
		die("no checks in DIR/checks.txt");
	double *rates = xcalloc((size_t)runs, sizeof(double));
	double *p50s = xcalloc((size_t)runs, sizeof(double));
	double *p99s = xcalloc((size_t)runs, sizeof(double));
	size_t errors = 0;
	for (int r = 0; r < runs; r++) {
		worker *ws = xcalloc((size_t)inflight, sizeof(worker));
		double t0 = now_seconds();
		sh.stop_at = t0 + seconds;
		for (int i = 0; i < inflight; i++) {
			ws[i].sh = &sh;
			pthread_create(&ws[i].t, NULL, run_worker, &ws[i]);
		}
		size_t done = 0, nl = 0;
		for (int i = 0; i < inflight; i++) {
			pthread_join(ws[i].t, NULL);
			done += ws[i].done;
			errors += ws[i].errors;
			nl += ws[i].n_lat;
		}
		double elapsed = now_seconds() - t0;
		double *all = xcalloc(nl ? nl : 1, sizeof(double));
		size_t k = 0;
		for (int i = 0; i < inflight; i++) {
			memcpy(all + k, ws[i].lat,
			       ws[i].n_lat * sizeof(double));
			k += ws[i].n_lat;
			free(ws[i].lat);
		}
		qsort(all, nl, sizeof(double), cmp_d);
		rates[r] = (double)done / elapsed;
		p50s[r] = nl ? all[nl / 2] : 0;
		p99s[r] = nl ? all[(size_t)((double)nl * 0.99)] : 0;
		fprintf(stderr,
		        "run %d: %.0f checks/s, p50 %.0f us, p99 %.0f us\n",
		        r + 1, rates[r], p50s[r], p99s[r]);
		free(all);
		free(ws);
	}
	qsort(rates, (size_t)runs, sizeof(double), cmp_d);
	qsort(p50s, (size_t)runs, sizeof(double), cmp_d);
	qsort(p99s, (size_t)runs, sizeof(double), cmp_d);
	printf("HTTP check, %d in flight: %.0f checks/s (median of %d), p50 "
	       "%.0f us, p99 %.0f us, %zu errors\n",
	       inflight, rates[runs / 2], runs, p50s[runs / 2], p99s[runs / 2],
	       errors);
	printf("RESULT %s_check%d_rate %.3f\n", label, inflight,
	       rates[runs / 2]);
	printf("RESULT %s_check%d_p50_us %.1f\n", label, inflight,
	       p50s[runs / 2]);
	printf("RESULT %s_check%d_p99_us %.1f\n", label, inflight,
	       p99s[runs / 2]);
	printf("RESULT %s_check%d_errors %zu\n", label, inflight, errors);
	return errors ? 1 : 0;
}
