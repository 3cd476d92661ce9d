/*
 * test_server_robustness.c -- the server under hostile or careless
 * clients, each case bounded in time and count, on 127.0.0.1 only:
 *
 *   - 1000 open Watch streams and 64 readers that stopped reading hold no
 *     worker: a check client keeps its p99 under 50 ms, and every watcher
 *     still gets every change;
 *   - a reader that stops reading is reset (RESOURCE_EXHAUSTED) after the
 *     stall timeout; a stream cap refuses the stream over it;
 *   - a flood of silent connections beyond the connection cap does not
 *     lock a real client out;
 *   - a stalled import blocks no writer and ends after the stall timeout
 *     having written nothing;
 *   - shutdown ends open Watch streams with UNAVAILABLE within a second;
 *   - protocol details: compressed-flag values, malformed authorization
 *     headers, ping floods, idle connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "grpc_fixture.h"
#include "h2_client.h"
#include "pemba.h"
#include "pg_fixture.h"

#define PS "/authzed.api.v1.PermissionsService/"
#define WATCH "/authzed.api.v1.WatchService/Watch"

static const char SCHEMA[] = "definition user {}\n"
                             "definition doc {\n"
                             "  relation viewer: user\n"
                             "  permission view = viewer\n"
                             "}\n";

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* A named memory datastore with the schema and `n` viewers of doc:d<i>
 * (user:u<i>), shared with the server that serves the same URI.  The
 * returned handle keeps it alive. */
static pemba_db *seed(const char *uri, int n)
{
	pemba_db *db;
	pemba_error err = {0};
	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &db, &err), 0);
	assert_int_equal(
	    pemba_write_schema(db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	if (n > 0) {
		pemba_import *imp;
		assert_int_equal(
		    pemba_import_begin(db, PEMBA_OP_CREATE, &imp, &err), 0);
		char ids[2][32];
		for (int i = 0; i < n; i++) {
			snprintf(ids[0], sizeof(ids[0]), "d%06d", i);
			snprintf(ids[1], sizeof(ids[1]), "u%06d", i);
			pemba_relationship r = {.resource_type = "doc",
			                        .resource_id = ids[0],
			                        .relation = "viewer",
			                        .subject_type = "user",
			                        .subject_id = ids[1]};
			assert_int_equal(pemba_import_add(imp, &r, 1, &err), 0);
		}
		assert_int_equal(pemba_import_commit(imp, NULL, NULL, &err), 0);
	}
	return db;
}

static server_options memory_options(const char *uri)
{
	server_options o = {0};
	o.datastore = pg_fixture_uri(uri);
	o.workers = 4;
	return o;
}

/* --- request messages --------------------------------------------------- */

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(*len + 1);
	protobuf_c_message_pack(m, buf);
	return buf;
}

static uint8_t *check_request(const char *doc, const char *user, size_t *len)
{
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__ObjectReference subj_obj =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	res.object_type = "doc";
	res.object_id = (char *)doc;
	subj_obj.object_type = "user";
	subj_obj.object_id = (char *)user;
	subj.object = &subj_obj;
	req.resource = &res;
	req.permission = "view";
	req.subject = &subj;
	return pack(&req.base, len);
}

static uint8_t *read_request(size_t *len)
{
	Authzed__Api__V1__RelationshipFilter f =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	Authzed__Api__V1__ReadRelationshipsRequest req =
	    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
	f.resource_type = "doc";
	req.relationship_filter = &f;
	return pack(&req.base, len);
}

static uint8_t *watch_request(size_t *len)
{
	Authzed__Api__V1__WatchRequest req =
	    AUTHZED__API__V1__WATCH_REQUEST__INIT;
	return pack(&req.base, len);
}

/* A blocking client on the server's port. */
static grpc_client *client_for(test_server *t)
{
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d",
	         server_port(t->server));
	grpc_client_options co;
	grpc_client_options_init(&co);
	co.target = target;
	grpc_client *c;
	pemba_error err = {0};
	assert_int_equal(grpc_client_connect(&co, &c, &err), 0);
	return c;
}

/* One CheckPermission; returns the status code. */
static int check(grpc_client *c, const char *doc, const char *user,
                 int timeout_ms)
{
	size_t len;
	uint8_t *req = check_request(doc, user, &len);
	uint8_t *resp = NULL;
	size_t resp_len;
	grpc_status st = {0};
	int code =
	    grpc_client_unary(c, PS "CheckPermission", NULL, 0, timeout_ms, req,
	                      len, &resp, &resp_len, &st);
	free(req);
	free(resp);
	grpc_status_clear(&st);
	return code;
}

/* Touches doc:w<i>#viewer@user:w<i> through the server. */
static int write_one(grpc_client *c, int i)
{
	char doc[32], user[32];
	snprintf(doc, sizeof(doc), "w%d", i);
	snprintf(user, sizeof(user), "w%d", i);
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__ObjectReference so =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	Authzed__Api__V1__Relationship rel =
	    AUTHZED__API__V1__RELATIONSHIP__INIT;
	Authzed__Api__V1__RelationshipUpdate up =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__INIT;
	Authzed__Api__V1__RelationshipUpdate *ups[1] = {&up};
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	res.object_type = "doc";
	res.object_id = doc;
	so.object_type = "user";
	so.object_id = user;
	subj.object = &so;
	rel.resource = &res;
	rel.relation = "viewer";
	rel.subject = &subj;
	up.operation =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
	up.relationship = &rel;
	req.updates = ups;
	req.n_updates = 1;
	size_t len;
	uint8_t *buf = pack(&req.base, &len);
	uint8_t *resp = NULL;
	size_t resp_len;
	grpc_status st = {0};
	int code = grpc_client_unary(c, PS "WriteRelationships", NULL, 0, 10000,
	                             buf, len, &resp, &resp_len, &st);
	free(buf);
	free(resp);
	grpc_status_clear(&st);
	return code;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* ===================================================================== */
/* 1000 watches + 64 stalled readers                                     */
/* ===================================================================== */

#define WATCHERS 1000
#define WATCH_CONNS 4
#define SLOW_READERS 64
#define WRITES 8

typedef struct pump_ctx {
	h2_conn **conns;
	size_t n;
	volatile int stop;
} pump_ctx;

static void *pump_thread(void *arg)
{
	pump_ctx *p = arg;
	while (!p->stop) {
		for (size_t i = 0; i < p->n; i++)
			h2_pump(p->conns[i], 0);
		sleep_ms(2);
	}
	return NULL;
}

/* Runs sequential checks for 2 s and returns their p99 (ms).  With a
 * writer, also commits WRITES relationships spread over the period
 * (*writes counts them). */
static int64_t measure_checks(grpc_client *checker, grpc_client *writer,
                              int *writes)
{
	enum { MAX_CHECKS = 200000, PERIOD_MS = 2000 };
	int64_t *lat = malloc(MAX_CHECKS * sizeof(*lat));
	assert_non_null(lat);
	size_t n = 0;
	int64_t start = now_ms(), next_write = start;
	while (now_ms() - start < PERIOD_MS && n < MAX_CHECKS) {
		if (writer && *writes < WRITES && now_ms() >= next_write) {
			assert_int_equal(write_one(writer, *writes),
			                 GRPC_STATUS_OK);
			(*writes)++;
			next_write += PERIOD_MS / WRITES;
		}
		char doc[32], user[32];
		snprintf(doc, sizeof(doc), "d%06zu", n % 20000);
		snprintf(user, sizeof(user), "u%06zu", n % 20000);
		int64_t t0 = now_ms();
		int code = check(checker, doc, user, 5000);
		lat[n++] = now_ms() - t0;
		if (code != GRPC_STATUS_OK) {
			free(lat);
			fail_msg("check failed with status %d", code);
		}
	}
	qsort(lat, n, sizeof(*lat), cmp_i64);
	int64_t p99 = lat[n * 99 / 100];
	print_message("%zu checks in %d ms: p50 %lld ms, p99 %lld ms\n", n,
	              PERIOD_MS, (long long)lat[n / 2], (long long)p99);
	free(lat);
	assert_true(n > 100);
	return p99;
}

static void test_watches_and_stalled_readers_hold_no_worker(void **unused)
{
	/* A file datastore (WAL: readers never wait for the writer), as in
	 * production. */
	char dir[] = "/tmp/pemba-robust-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char uri[128];
	snprintf(uri, sizeof(uri), "sqlite://%s/load.db", dir);
	pemba_db *db = seed(uri, 20000);
	test_server t;
	test_server_start(&t, memory_options(uri));
	int port = server_port(t.server);

	/* 1000 Watch streams over 4 connections. */
	h2_conn *conns[WATCH_CONNS + SLOW_READERS];
	int32_t watch_ids[WATCHERS];
	size_t wlen;
	uint8_t *wreq = watch_request(&wlen);
	for (int i = 0; i < WATCH_CONNS; i++)
		assert_non_null(conns[i] = h2_connect(port, true));
	for (int i = 0; i < WATCHERS; i++) {
		watch_ids[i] = h2_start(conns[i % WATCH_CONNS], WATCH, NULL,
		                        NULL, NULL, wreq, wlen, 0, true);
		assert_true(watch_ids[i] > 0);
		if (i % 100 == 99)
			h2_pump(conns[i % WATCH_CONNS], 1);
	}
	/* 64 readers of 20000 relationships that never grant window. */
	size_t rlen;
	uint8_t *rreq = read_request(&rlen);
	int32_t read_ids[SLOW_READERS];
	for (int i = 0; i < SLOW_READERS; i++) {
		h2_conn *c = h2_connect(port, false);
		assert_non_null(c);
		conns[WATCH_CONNS + i] = c;
		read_ids[i] = h2_start(c, PS "ReadRelationships", NULL, NULL,
		                       NULL, rreq, rlen, 0, true);
		assert_true(read_ids[i] > 0);
	}
	pump_ctx pc = {conns, WATCH_CONNS + SLOW_READERS, 0};
	pthread_t pumper;
	assert_int_equal(pthread_create(&pumper, NULL, pump_thread, &pc), 0);
	/* Wait until every reader is stuck at its window: from then on the
	 * server has nothing to do for it. */
	int64_t until = now_ms() + 30000;
	for (int stuck = 0; stuck < SLOW_READERS && now_ms() < until;) {
		sleep_ms(20);
		stuck = 0;
		for (int i = 0; i < SLOW_READERS; i++)
			if (h2_stream(conns[WATCH_CONNS + i], read_ids[i])
			        ->bytes >= 65535)
				stuck++;
	}
	sleep_ms(300);

	/* A check client measures with every stream open; then again while
	 * a writer commits now and then, each commit waking all 1000
	 * watchers (that phase is reported, not asserted: it is a benchmark
	 * on a shared CI machine). */
	grpc_client *checker = client_for(&t);
	grpc_client *writer = client_for(&t);
	int64_t p99_quiet = measure_checks(checker, NULL, 0);
	int writes = 0;
	int64_t p99_writes = measure_checks(checker, writer, &writes);
	print_message("checks with %d watches and %d stalled readers open: "
	              "p99 %lld ms; while %d writes fan out to every "
	              "watcher: p99 %lld ms\n",
	              WATCHERS, SLOW_READERS, (long long)p99_quiet, writes,
	              (long long)p99_writes);
	assert_true(p99_quiet < 50);

	/* Every watcher gets every write (one response per revision). */
	int64_t deadline = now_ms() + 30000;
	size_t behind;
	do {
		sleep_ms(50);
		behind = 0;
		for (int i = 0; i < WATCHERS; i++) {
			const h2_stream_info *info =
			    h2_stream(conns[i % WATCH_CONNS], watch_ids[i]);
			if (info->messages < (size_t)writes)
				behind++;
		}
	} while (behind > 0 && now_ms() < deadline);
	assert_int_equal(behind, 0);
	/* The stalled readers are still open, stuck at their window. */
	pc.stop = 1;
	pthread_join(pumper, NULL);
	for (int i = 0; i < SLOW_READERS; i++) {
		const h2_stream_info *info =
		    h2_stream(conns[WATCH_CONNS + i], read_ids[i]);
		assert_false(info->closed);
		assert_true(info->bytes <= 65535);
	}
	for (size_t i = 0; i < WATCH_CONNS + SLOW_READERS; i++)
		h2_close(conns[i]);
	grpc_client_close(checker);
	grpc_client_close(writer);
	free(wreq);
	free(rreq);
	test_server_stop(&t);
	pemba_close(db);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* ===================================================================== */
/* Stall timeout and stream cap                                          */
/* ===================================================================== */

static void test_stalled_reader_is_reset_after_the_stall_timeout(void **unused)
{
	const char *uri = "sqlite::memory:robust-stall";
	pemba_db *db = seed(uri, 20000);
	server_options o = memory_options(uri);
	o.stream_stall_timeout_ms = 1000;
	test_server t;
	test_server_start(&t, o);
	h2_conn *c = h2_connect(server_port(t.server), false);
	size_t len;
	uint8_t *req = read_request(&len);
	int32_t id = h2_start(c, PS "ReadRelationships", NULL, NULL, NULL, req,
	                      len, 0, true);
	int64_t start = now_ms();
	while (!h2_stream(c, id)->closed && now_ms() - start < 10000)
		h2_pump(c, 50);
	const h2_stream_info *info = h2_stream(c, id);
	assert_true(info->closed);
	/* ENHANCE_YOUR_CALM: gRPC clients report RESOURCE_EXHAUSTED. */
	assert_int_equal(info->rst_code, 11);
	assert_true(now_ms() - start >= 900);
	/* Others are served throughout. */
	assert_int_equal(check(t.client, "d000001", "u000001", 5000),
	                 GRPC_STATUS_OK);
	h2_close(c);
	free(req);
	test_server_stop(&t);
	pemba_close(db);
}

static void test_streams_over_the_cap_are_resource_exhausted(void **unused)
{
	const char *uri = "sqlite::memory:robust-cap";
	pemba_db *db = seed(uri, 0);
	server_options o = memory_options(uri);
	o.max_streams = 5;
	test_server t;
	test_server_start(&t, o);
	h2_conn *c = h2_connect(server_port(t.server), true);
	size_t len;
	uint8_t *req = watch_request(&len);
	int32_t ids[6];
	for (int i = 0; i < 6; i++) {
		ids[i] =
		    h2_start(c, WATCH, NULL, NULL, NULL, req, len, 0, true);
		h2_pump(c, 20);
	}
	int64_t start = now_ms();
	while (!h2_stream(c, ids[5])->closed && now_ms() - start < 5000)
		h2_pump(c, 50);
	assert_int_equal(h2_stream(c, ids[5])->grpc_status,
	                 GRPC_STATUS_RESOURCE_EXHAUSTED);
	for (int i = 0; i < 5; i++)
		assert_false(h2_stream(c, ids[i])->closed);
	/* Unary calls are not streams: still served. */
	assert_int_equal(check(t.client, "x", "y", 5000), GRPC_STATUS_OK);
	h2_close(c);
	free(req);
	test_server_stop(&t);
	pemba_close(db);
}

/* ===================================================================== */
/* Connection flood                                                      */
/* ===================================================================== */

static int raw_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET,
	                           .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Counts the log lines about refused connections. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int limit_lines;

static void count_limit_lines(void *ctx, int level, const char *message)
{
	pthread_mutex_lock(&log_lock);
	if (strstr(message, "refused") != NULL)
		limit_lines++;
	pthread_mutex_unlock(&log_lock);
}

static void
test_silent_connection_flood_does_not_lock_clients_out(void **unused)
{
	const char *uri = "sqlite::memory:robust-flood";
	pemba_db *db = seed(uri, 10);
	server_options o = memory_options(uri);
	o.max_connections = 50;
	o.handshake_timeout_ms = 2000;
	o.log = count_limit_lines;
	limit_lines = 0;
	test_server t;
	test_server_start(&t, o); /* its client holds one connection */
	int port = server_port(t.server);
	enum { FLOOD = 300 };
	int fds[FLOOD];
	for (int i = 0; i < FLOOD; i++)
		fds[i] = raw_connect(port);
	sleep_ms(200);
	/* A real client gets through at once, within the preface timeout
	 * at worst. */
	int64_t start = now_ms();
	grpc_client *c = client_for(&t);
	assert_int_equal(check(c, "d000001", "u000001", 5000), GRPC_STATUS_OK);
	int64_t took = now_ms() - start;
	print_message("real client served %lld ms after a flood of %d "
	              "silent connections (cap 50)\n",
	              (long long)took, FLOOD);
	assert_true(took < 2000);
	/* The established client kept its connection. */
	assert_int_equal(check(t.client, "d000002", "u000002", 5000),
	                 GRPC_STATUS_OK);
	/* Silent connections are closed after the preface timeout. */
	sleep_ms(2600);
	int closed = 0;
	for (int i = 0; i < FLOOD; i++) {
		if (fds[i] < 0) {
			closed++;
			continue;
		}
		/* The server's SETTINGS may come first, then the close. */
		char b[256];
		struct timeval tv = {0, 100000};
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ssize_t got;
		while ((got = recv(fds[i], b, sizeof(b), 0)) > 0)
			;
		if (got == 0 || errno == ECONNRESET)
			closed++;
		close(fds[i]);
	}
	assert_int_equal(closed, FLOOD);
	/* Refusals, if any, are reported at most once per 10 s. */
	pthread_mutex_lock(&log_lock);
	int lines = limit_lines;
	pthread_mutex_unlock(&log_lock);
	assert_true(lines <= 1);
	grpc_client_close(c);
	test_server_stop(&t);
	pemba_close(db);
}

static void test_refusals_at_a_full_cap_are_logged_once(void **unused)
{
	const char *uri = "sqlite::memory:robust-cap-log";
	pemba_db *db = seed(uri, 1);
	server_options o = memory_options(uri);
	o.max_connections = 4;
	o.log = count_limit_lines;
	limit_lines = 0;
	test_server t;
	test_server_start(&t, o); /* one established connection */
	assert_int_equal(check(t.client, "d000000", "u000000", 5000),
	                 GRPC_STATUS_OK);
	h2_conn *est[3];
	for (int i = 0; i < 3; i++) {
		est[i] = h2_connect(server_port(t.server), true);
		h2_pump(est[i], 100); /* preface read: established */
	}
	sleep_ms(200);
	enum { EXTRA = 40 };
	int refused = 0;
	for (int i = 0; i < EXTRA; i++) {
		int fd = raw_connect(server_port(t.server));
		char b[256];
		struct timeval tv = {2, 0};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (fd >= 0 && recv(fd, b, sizeof(b), 0) <= 0)
			refused++; /* closed without a byte: refused */
		if (fd >= 0)
			close(fd);
	}
	assert_int_equal(refused, EXTRA);
	/* Established clients are untouched. */
	assert_int_equal(check(t.client, "d000000", "u000000", 5000),
	                 GRPC_STATUS_OK);
	pthread_mutex_lock(&log_lock);
	int lines = limit_lines;
	pthread_mutex_unlock(&log_lock);
	assert_int_equal(lines, 1);
	for (int i = 0; i < 3; i++)
		h2_close(est[i]);
	test_server_stop(&t);
	pemba_close(db);
}

/* ===================================================================== */
/* Stalled import                                                        */
/* ===================================================================== */

static int count_rel(void *ctx, const pemba_relationship *rel)
{
	(*(int *)ctx)++;
	return 0;
}

static void test_stalled_import_blocks_no_writer(void **unused)
{
	const char *uri = "sqlite::memory:robust-import";
	pemba_db *db = seed(uri, 10);
	server_options o = memory_options(uri);
	o.stream_stall_timeout_ms = 1500;
	test_server t;
	test_server_start(&t, o);

	/* One message of 100 relationships, then nothing: no half-close. */
	enum { N = 100 };
	Authzed__Api__V1__ObjectReference res[N], so[N];
	Authzed__Api__V1__SubjectReference subj[N];
	Authzed__Api__V1__Relationship rel[N], *rels[N];
	char ids[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "imp%d", i);
		authzed__api__v1__object_reference__init(&res[i]);
		authzed__api__v1__object_reference__init(&so[i]);
		authzed__api__v1__subject_reference__init(&subj[i]);
		authzed__api__v1__relationship__init(&rel[i]);
		res[i].object_type = "doc";
		res[i].object_id = ids[i];
		so[i].object_type = "user";
		so[i].object_id = ids[i];
		subj[i].object = &so[i];
		rel[i].resource = &res[i];
		rel[i].relation = "viewer";
		rel[i].subject = &subj[i];
		rels[i] = &rel[i];
	}
	Authzed__Api__V1__ImportBulkRelationshipsRequest req =
	    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	req.relationships = rels;
	req.n_relationships = N;
	size_t len;
	uint8_t *buf = pack(&req.base, &len);
	h2_conn *c = h2_connect(server_port(t.server), true);
	int32_t id = h2_start(c, PS "ImportBulkRelationships", NULL, NULL, NULL,
	                      buf, len, 0, false);
	h2_pump(c, 200);

	/* Other writers go on, each promptly. */
	grpc_client *w = client_for(&t);
	for (int i = 0; i < 5; i++) {
		int64_t t0 = now_ms();
		assert_int_equal(write_one(w, 100 + i), GRPC_STATUS_OK);
		assert_true(now_ms() - t0 < 1000);
		h2_pump(c, 50);
	}
	/* The stalled import ends after the stall timeout... */
	int64_t start = now_ms();
	while (!h2_stream(c, id)->closed && now_ms() - start < 10000)
		h2_pump(c, 50);
	assert_int_equal(h2_stream(c, id)->grpc_status,
	                 GRPC_STATUS_DEADLINE_EXCEEDED);
	/* ...having written nothing. */
	pemba_filter f = {.resource_type = "doc", .resource_id = "imp0"};
	int n = 0;
	pemba_error err = {0};
	assert_int_equal(
	    pemba_read_relationships(db, 0, &f, NULL, 0, count_rel, &n, &err),
	    0);
	assert_int_equal(n, 0);
	h2_close(c);
	free(buf);
	grpc_client_close(w);
	test_server_stop(&t);
	pemba_close(db);
}

/* Input (a whole import, half-close included) arriving while the handler
 * is between suspending its call and returning: the first step runs once,
 * after the handler returned (it used to be queued by the input as well,
 * running beside the handler: an assertion, a crash without asserts). */
static void test_input_while_the_handler_suspends(void **unused)
{
	const char *uri = "sqlite::memory:robust-suspend-race";
	pemba_db *db = seed(uri, 10);
	test_server t;
	test_server_start(&t, memory_options(uri));
	setenv("PEMBA_TEST_SUSPEND_DELAY_MS", "100", 1);
	enum { N = 20, CALLS = 4 };
	Authzed__Api__V1__ObjectReference res[N], so[N];
	Authzed__Api__V1__SubjectReference subj[N];
	Authzed__Api__V1__Relationship rel[N], *rels[N];
	char ids[CALLS][N][16];
	h2_conn *c = h2_connect(server_port(t.server), true);
	int32_t sid[CALLS];
	uint8_t *bufs[CALLS];
	for (int k = 0; k < CALLS; k++) {
		for (int i = 0; i < N; i++) {
			snprintf(ids[k][i], sizeof(ids[k][i]), "race%d-%d", k,
			         i);
			authzed__api__v1__object_reference__init(&res[i]);
			authzed__api__v1__object_reference__init(&so[i]);
			authzed__api__v1__subject_reference__init(&subj[i]);
			authzed__api__v1__relationship__init(&rel[i]);
			res[i].object_type = "doc";
			res[i].object_id = ids[k][i];
			so[i].object_type = "user";
			so[i].object_id = ids[k][i];
			subj[i].object = &so[i];
			rel[i].resource = &res[i];
			rel[i].relation = "viewer";
			rel[i].subject = &subj[i];
			rels[i] = &rel[i];
		}
		Authzed__Api__V1__ImportBulkRelationshipsRequest req =
		    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
		req.relationships = rels;
		req.n_relationships = N;
		size_t len;
		bufs[k] = pack(&req.base, &len);
		/* Half the rows now; the rest and the half-close while the
		 * handler is in its suspend window. */
		sid[k] = h2_start(c, PS "ImportBulkRelationships", NULL, NULL,
		                  NULL, NULL, 0, 0, false);
		h2_pump(c, 20);
		h2_send(c, sid[k], bufs[k], len, true);
	}
	int64_t start = now_ms();
	for (int k = 0; k < CALLS; k++)
		while (!h2_stream(c, sid[k])->closed &&
		       now_ms() - start < 10000)
			h2_pump(c, 50);
	unsetenv("PEMBA_TEST_SUSPEND_DELAY_MS");
	for (int k = 0; k < CALLS; k++)
		assert_int_equal(h2_stream(c, sid[k])->grpc_status,
		                 GRPC_STATUS_OK);
	int n = 0;
	pemba_error err = {0};
	pemba_filter f = {.resource_type = "doc"};
	assert_int_equal(
	    pemba_read_relationships(db, 0, &f, NULL, 0, count_rel, &n, &err),
	    0);
	assert_int_equal(n, 10 + N * CALLS);
	h2_close(c);
	for (int k = 0; k < CALLS; k++)
		free(bufs[k]);
	test_server_stop(&t);
	pemba_close(db);
	(void)unused;
}

/* ===================================================================== */
/* Shutdown                                                              */
/* ===================================================================== */

static void *run_server(void *arg)
{
	pemba_error err = {0};
	server_run(arg, &err);
	return NULL;
}

static void test_shutdown_ends_watch_streams_with_unavailable(void **unused)
{
	const char *uri = "sqlite::memory:robust-shutdown";
	pemba_db *db = seed(uri, 10);
	server_options o = memory_options(uri);
	o.grpc_addr = "127.0.0.1:0";
	o.shutdown_timeout_ms = 10000; /* the grace must not be what ends
	                                  them */
	pemba_server *server;
	pemba_error err = {0};
	assert_int_equal(server_new(&o, &server, &err), 0);
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, run_server, server), 0);
	h2_conn *c = h2_connect(server_port(server), true);
	size_t len;
	uint8_t *req = watch_request(&len);
	enum { N = 50 };
	int32_t ids[N];
	for (int i = 0; i < N; i++)
		ids[i] =
		    h2_start(c, WATCH, NULL, NULL, NULL, req, len, 0, true);
	for (int i = 0; i < 10; i++)
		h2_pump(c, 20);
	int64_t start = now_ms();
	server_shutdown(server); /* what SIGTERM does */
	size_t open;
	do {
		h2_pump(c, 20);
		open = 0;
		for (int i = 0; i < N; i++)
			if (!h2_stream(c, ids[i])->closed)
				open++;
	} while (open > 0 && now_ms() - start < 5000);
	int64_t took = now_ms() - start;
	assert_int_equal(open, 0);
	assert_true(took < 1000);
	for (int i = 0; i < N; i++) {
		assert_int_equal(h2_stream(c, ids[i])->grpc_status,
		                 GRPC_STATUS_UNAVAILABLE);
		assert_string_equal(h2_stream(c, ids[i])->message,
		                    "server shutting down");
	}
	pthread_join(thread, NULL);
	assert_true(now_ms() - start < 1500);
	print_message("shutdown: %d watch streams ended in %lld ms, server "
	              "exited in %lld ms\n",
	              N, (long long)took, (long long)(now_ms() - start));
	h2_close(c);
	free(req);
	server_free(server);
	pemba_close(db);
}

/* ===================================================================== */
/* Protocol details                                                      */
/* ===================================================================== */

static void test_compressed_flag_other_than_0_or_1_is_an_error(void **unused)
{
	const char *uri = "sqlite::memory:robust-flag";
	pemba_db *db = seed(uri, 1);
	test_server t;
	test_server_start(&t, memory_options(uri));
	h2_conn *c = h2_connect(server_port(t.server), true);
	size_t len;
	uint8_t *req = check_request("d000000", "u000000", &len);
	int32_t ok = h2_start(c, PS "CheckPermission", NULL, NULL, NULL, req,
	                      len, 0, true);
	int32_t bad = h2_start(c, PS "CheckPermission", NULL, NULL, NULL, req,
	                       len, 2, true);
	int64_t start = now_ms();
	while ((!h2_stream(c, ok)->closed || !h2_stream(c, bad)->closed) &&
	       now_ms() - start < 5000)
		h2_pump(c, 50);
	assert_int_equal(h2_stream(c, ok)->grpc_status, GRPC_STATUS_OK);
	assert_int_equal(h2_stream(c, bad)->grpc_status, GRPC_STATUS_INTERNAL);
	assert_non_null(strstr(h2_stream(c, bad)->message, "payload"));
	h2_close(c);
	free(req);
	test_server_stop(&t);
	pemba_close(db);
}

static void test_malformed_authorization_is_unauthenticated(void **unused)
{
	const char *uri = "sqlite::memory:robust-auth";
	pemba_db *db = seed(uri, 1);
	server_options o = memory_options(uri);
	const char *keys[] = {"secret"};
	o.keys = keys;
	o.nkeys = 1;
	test_server t;
	test_server_start(&t, o);
	h2_conn *c = h2_connect(server_port(t.server), true);
	size_t len;
	uint8_t *req = check_request("d000000", "u000000", &len);
	const char *auths[] = {"Bearer secret",  "Bearer secret ",
	                       " Bearer secret", "Bearer  secret",
	                       "Bearer\tsecret", "Bearer secret\x01",
	                       "bearer"};
	int want[] = {GRPC_STATUS_OK,
	              GRPC_STATUS_UNAUTHENTICATED,
	              GRPC_STATUS_UNAUTHENTICATED,
	              GRPC_STATUS_UNAUTHENTICATED,
	              GRPC_STATUS_UNAUTHENTICATED,
	              GRPC_STATUS_UNAUTHENTICATED,
	              GRPC_STATUS_UNAUTHENTICATED};
	enum { N = sizeof(auths) / sizeof(auths[0]) };
	int32_t ids[N];
	for (size_t i = 0; i < N; i++)
		ids[i] = h2_start(c, PS "CheckPermission", auths[i], NULL, NULL,
		                  req, len, 0, true);
	int64_t start = now_ms();
	for (size_t i = 0; i < N; i++)
		while (!h2_stream(c, ids[i])->closed && now_ms() - start < 5000)
			h2_pump(c, 50);
	for (size_t i = 0; i < N; i++) {
		const h2_stream_info *info = h2_stream(c, ids[i]);
		if (info->grpc_status != want[i])
			fail_msg("authorization '%s': status %d (rst %u), "
			         "want %d",
			         auths[i], info->grpc_status, info->rst_code,
			         want[i]);
	}
	h2_close(c);
	free(req);
	test_server_stop(&t);
	pemba_close(db);
}

static void test_ping_flood_gets_goaway_too_many_pings(void **unused)
{
	const char *uri = "sqlite::memory:robust-ping";
	pemba_db *db = seed(uri, 0);
	server_options o = memory_options(uri);
	o.keepalive_min_time_ms = 1000;
	test_server t;
	test_server_start(&t, o);
	h2_conn *c = h2_connect(server_port(t.server), true);
	for (int i = 0; i < 6 && h2_goaway(c, NULL, 0) < 0; i++) {
		h2_ping(c);
		h2_pump(c, 50);
	}
	int64_t start = now_ms();
	while (h2_goaway(c, NULL, 0) < 0 && now_ms() - start < 3000)
		if (h2_pump(c, 50) < 0)
			break;
	char debug[64];
	assert_int_equal(h2_goaway(c, debug, sizeof(debug)),
	                 11 /* ENHANCE_YOUR_CALM */);
	assert_string_equal(debug, "too_many_pings");
	/* Pings at a polite pace are fine. */
	h2_conn *polite = h2_connect(server_port(t.server), true);
	for (int i = 0; i < 3; i++) {
		h2_ping(polite);
		h2_pump(polite, 1100);
	}
	assert_int_equal(h2_goaway(polite, NULL, 0), -1);
	h2_close(polite);
	h2_close(c);
	test_server_stop(&t);
	pemba_close(db);
}

static void test_idle_connection_gets_goaway(void **unused)
{
	const char *uri = "sqlite::memory:robust-idle";
	pemba_db *db = seed(uri, 0);
	server_options o = memory_options(uri);
	o.idle_timeout_ms = 300;
	test_server t;
	test_server_start(&t, o);
	h2_conn *c = h2_connect(server_port(t.server), true);
	int64_t start = now_ms();
	while (h2_goaway(c, NULL, 0) < 0 && now_ms() - start < 3000)
		if (h2_pump(c, 50) < 0)
			break;
	assert_int_equal(h2_goaway(c, NULL, 0), 0 /* NO_ERROR */);
	h2_close(c);
	test_server_stop(&t);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_compressed_flag_other_than_0_or_1_is_an_error),
	    cmocka_unit_test(test_malformed_authorization_is_unauthenticated),
	    cmocka_unit_test(test_ping_flood_gets_goaway_too_many_pings),
	    cmocka_unit_test(test_idle_connection_gets_goaway),
	    cmocka_unit_test(test_streams_over_the_cap_are_resource_exhausted),
	    cmocka_unit_test(
	        test_stalled_reader_is_reset_after_the_stall_timeout),
	    cmocka_unit_test(
	        test_silent_connection_flood_does_not_lock_clients_out),
	    cmocka_unit_test(test_refusals_at_a_full_cap_are_logged_once),
	    cmocka_unit_test(test_stalled_import_blocks_no_writer),
	    cmocka_unit_test(test_input_while_the_handler_suspends),
	    cmocka_unit_test(test_shutdown_ends_watch_streams_with_unavailable),
	    cmocka_unit_test(test_watches_and_stalled_readers_hold_no_worker),
	};
	/* PEMBA_TEST_FILTER=test_name (a pattern) runs a subset. */
	if (getenv("PEMBA_TEST_FILTER"))
		cmocka_set_test_filter(getenv("PEMBA_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
