/*
 * test_relationship_bulk_fallback.c -- `pemba relationship import|export|
 * bulk-delete` against a server without ImportBulkRelationships and
 * ExportBulkRelationships (as the real SpiceDB over some transports): a
 * proxy in this process forwards only WriteRelationships,
 * ReadRelationships, DeleteRelationships, ReadSchema and WriteSchema to a
 * pemba serve-testing server, so the bulk methods answer UNIMPLEMENTED.
 * import falls back to TOUCH batches, export to ReadRelationships pages
 * per schema definition, and the results equal what the bulk methods
 * give on the real server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/grpc.h"
#include "support/grpc_fixture.h"

#define PS "/authzed.api.v1.PermissionsService/"
#define SS "/authzed.api.v1.SchemaService/"

/* ===================================================================== */
/* The proxy                                                             */
/* ===================================================================== */

typedef struct proxy_method {
	grpc_client *upstream;
	bool streaming;
} proxy_method;

static int send_down(void *ctx, const uint8_t *data, size_t len)
{
	return grpc_call_send(ctx, data, len) == 0 ? 0 : 1;
}

/* Forwards one unary or server-streaming call, with its authorization,
 * and passes the responses and the status back. */
static void forward(grpc_call *call, void *ctx)
{
	proxy_method *m = ctx;
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) != 1) {
		grpc_call_finish(call, GRPC_STATUS_INTERNAL, "no request");
		return;
	}
	grpc_metadata md[1];
	size_t nmd = 0;
	const char *auth = grpc_call_metadata(call, "authorization");
	if (auth)
		md[nmd++] =
		    (grpc_metadata){"authorization", auth, strlen(auth)};
	grpc_status st = {0};
	if (m->streaming) {
		grpc_client_server_streaming(m->upstream, grpc_call_path(call),
		                             md, nmd, 0, data, len, send_down,
		                             call, &st);
	} else {
		uint8_t *response = NULL;
		size_t response_len = 0;
		if (grpc_client_unary(m->upstream, grpc_call_path(call), md,
		                      nmd, 0, data, len, &response,
		                      &response_len, &st) == GRPC_STATUS_OK)
			grpc_call_send(call, response, response_len);
		free(response);
	}
	grpc_call_finish(call, st.code, st.message);
	grpc_status_clear(&st);
}

static test_server upstream;
static grpc_server *proxy;
static pthread_t proxy_thread;
static proxy_method unary_method, streaming_method;
static char endpoint[64], dir[256], cmd[4096];

static void *run_proxy(void *arg)
{
	pemba_error err = {0};
	grpc_server_run(arg, &err);
	return NULL;
}

static int setup(void **state)
{
	(void)state;
	server_options o = {.testing = true};
	test_server_start(&upstream, o);
	unary_method = (proxy_method){upstream.client, false};
	streaming_method = (proxy_method){upstream.client, true};
	static grpc_method methods[5];
	methods[0] = (grpc_method){PS "WriteRelationships", GRPC_METHOD_UNARY,
	                           forward, &unary_method};
	methods[1] = (grpc_method){PS "DeleteRelationships", GRPC_METHOD_UNARY,
	                           forward, &unary_method};
	methods[2] =
	    (grpc_method){PS "ReadRelationships", GRPC_METHOD_SERVER_STREAMING,
	                  forward, &streaming_method};
	methods[3] = (grpc_method){SS "ReadSchema", GRPC_METHOD_UNARY, forward,
	                           &unary_method};
	methods[4] = (grpc_method){SS "WriteSchema", GRPC_METHOD_UNARY, forward,
	                           &unary_method};
	grpc_server_options po;
	grpc_server_options_init(&po);
	po.listen_addr = "127.0.0.1:0";
	po.methods = methods;
	po.method_count = 5;
	po.worker_threads = 4;
	pemba_error err = {0};
	if (grpc_server_new(&po, &proxy, &err) != 0)
		return -1;
	snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d",
	         grpc_server_port(proxy));
	if (pthread_create(&proxy_thread, NULL, run_proxy, proxy) != 0)
		return -1;
	strcpy(dir, "/tmp/pemba-bulk-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	grpc_server_shutdown(proxy);
	pthread_join(proxy_thread, NULL);
	grpc_server_free(proxy);
	test_server_stop(&upstream);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

/* Runs `pemba ARGS` through the proxy (use_proxy) or straight at the
 * server, stdout to DIR/out, stderr to DIR/err; returns the exit
 * status.  ARGS may use the shell. */
static int pemba(bool use_proxy, const char *args)
{
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d",
	         server_port(upstream.server));
	snprintf(cmd, sizeof(cmd),
	         "cd %s && timeout 60 %s %s --insecure --token fallback "
	         "--endpoint %s >out 2>err </dev/null",
	         dir, PEMBA_BINARY, args, use_proxy ? endpoint : target);
	int status = system(cmd);
	status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	if (status != 0) { /* for the failure's report */
		snprintf(cmd, sizeof(cmd), "sed 's/^/    stderr: /' %s/err >&2",
		         dir);
		if (system(cmd) != 0)
			return -1;
	}
	return status;
}

/* The text of DIR/name (static buffer). */
static const char *file(const char *name)
{
	static char buf[65536];
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void write_file(const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Whether DIR/a and DIR/b hold the same lines in any order. */
static bool same_lines(const char *a, const char *b)
{
	snprintf(cmd, sizeof(cmd), "cd %s && cmp -s <(sort %s) <(sort %s)", dir,
	         a, b);
	char bash[4200];
	snprintf(bash, sizeof(bash), "bash -c '%s'", cmd);
	return system(bash) == 0;
}

/* ===================================================================== */
/* Tests                                                                 */
/* ===================================================================== */

static const char schema[] =
    "use expiration\n"
    "definition user {}\n"
    "caveat has_level(level int, min int) {\n"
    "  level >= min\n"
    "}\n"
    "definition group {\n"
    "  relation member: user | group#member\n"
    "}\n"
    "definition doc {\n"
    "  relation viewer: user | user with has_level | user with expiration "
    "| group#member\n"
    "  relation editor: user\n"
    "}\n";

static const char rels[] =
    "doc:1#viewer@user:anne[has_level:{\"min\":3}]\n"
    "doc:1#viewer@user:bob[expiration:2099-01-02T03:04:05Z]\n"
    "doc:1#viewer@group:eng#member\n"
    "group:eng#member@user:carl\n"
    "doc:2#editor@user:dana\n";

static void test_import_without_bulk_import_touches(void **state)
{
	(void)state;
	write_file("schema.zed", schema);
	assert_int_equal(pemba(true, "schema write schema.zed"), 0);
	/* 2500 more, so export reads several pages. */
	char path[512];
	snprintf(path, sizeof(path), "%s/in.txt", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(rels, f);
	for (int i = 0; i < 2500; i++)
		fprintf(f, "doc:d%d#editor@user:u%d\n", i, i);
	fclose(f);
	assert_int_equal(pemba(true, "relationship import --json in.txt"), 0);
	assert_non_null(strstr(file("out"), "\"method\":\"touch\""));
	assert_non_null(strstr(file("out"), "\"imported\":2505"));
	/* Idempotent: again, through the proxy, changes nothing. */
	assert_int_equal(pemba(true, "relationship import in.txt"), 0);
	assert_non_null(strstr(file("out"), "imported 2505 relationships in 3 "
	                                    "transactions (touch)"));
}

static void test_export_without_bulk_export_reads_every_type(void **state)
{
	(void)state;
	/* Straight at the server: ExportBulkRelationships. */
	assert_int_equal(pemba(false, "relationship export --output bulk.txt"),
	                 0);
	assert_true(same_lines("bulk.txt", "in.txt"));
	/* Through the proxy: ReadRelationships per definition. */
	assert_int_equal(pemba(true, "relationship export --output read.txt"),
	                 0);
	assert_non_null(strstr(file("err"), "exported 2505 relationships"));
	assert_true(same_lines("read.txt", "bulk.txt"));
	/* With a filter: that type only. */
	assert_int_equal(pemba(true, "relationship export group"), 0);
	assert_string_equal(file("out"), "group:eng#member@user:carl\n");
}

static void test_bulk_delete_through_the_proxy(void **state)
{
	(void)state;
	assert_int_equal(
	    pemba(true,
	          "relationship bulk-delete --yes --limit 700 doc editor"),
	    0);
	assert_string_equal(file("out"), "deleted 2501 relationships\n");
	assert_int_equal(pemba(true, "relationship export"), 0);
	write_file("left.txt",
	           "doc:1#viewer@user:anne[has_level:{\"min\":3}]\n"
	           "doc:1#viewer@user:bob[expiration:2099-01-02T03:04:05Z]\n"
	           "doc:1#viewer@group:eng#member\n"
	           "group:eng#member@user:carl\n");
	assert_true(same_lines("out", "left.txt"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_import_without_bulk_import_touches),
	    cmocka_unit_test(test_export_without_bulk_export_reads_every_type),
	    cmocka_unit_test(test_bulk_delete_through_the_proxy),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
