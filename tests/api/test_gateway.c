/*
 * test_gateway.c -- the HTTP gateway (src/gateway) answers exactly what gRPC
 * answers: for each Permissions/Schema/Experimental route, the same request
 * sent as JSON over HTTP and as protobuf over gRPC to one in-process server,
 * the gRPC answer rendered the way grpc-gateway renders it (proto3 JSON
 * with unpopulated fields; {"code","message","details"} and the mapped
 * HTTP status for errors; {"result": ...} lines for streams, an
 * {"error": ...} line last) must equal the HTTP answer byte for byte.
 */
#include <arpa/inet.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "api/grpc.h"
#include "api/pb_json.h"
#include "api/struct_json.h"
#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "gateway/gateway.h"
#include "server/server.h"

#define KEY "gw-key"
#define D(x) &authzed__api__v1__##x##__descriptor
#define PS "/authzed.api.v1.PermissionsService/"
#define SS "/authzed.api.v1.SchemaService/"
#define XS "/authzed.api.v1.ExperimentalService/"

static pemba_server *server;
static pthread_t server_thread;
static grpc_client *client;
static int http_port;

static void *run_thread(void *arg)
{
	pemba_error err = {0};
	server_run(arg, &err);
	return NULL;
}

/* POST over HTTP/1.0 (no chunking: the body ends at the close). */
static int http_post(const char *path, const char *body, strbuf *out)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)http_port)};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	strbuf req;
	strbuf_init(&req);
	strbuf_printf(&req,
	              "POST %s HTTP/1.0\r\nAuthorization: Bearer " KEY
	              "\r\nContent-Type: application/json\r\n"
	              "Content-Length: %zu\r\n\r\n%s",
	              path, strlen(body), body);
	assert_int_equal(send(fd, req.data, req.len, 0), (ssize_t)req.len);
	strbuf_free(&req);
	strbuf raw;
	strbuf_init(&raw);
	char buf[8192];
	ssize_t n;
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		strbuf_append(&raw, buf, (size_t)n);
	close(fd);
	int status = atoi(raw.data + 9);
	const char *b = strstr(raw.data, "\r\n\r\n");
	assert_non_null(b);
	strbuf_puts(out, b + 4);
	strbuf_free(&raw);
	return status;
}

static void status_body(strbuf *out, const grpc_status *st)
{
	const char *m = st->message ? st->message : "";
	strbuf_printf(out, "{\"code\":%d,\"message\":", st->code);
	api_json_string(out, m, strlen(m));
	strbuf_puts(out, ",\"details\":[]}");
}

typedef struct collect {
	const ProtobufCMessageDescriptor *resp;
	strbuf *out;
	size_t n;
} collect;

static int on_msg(void *ctx, const uint8_t *data, size_t len)
{
	collect *c = ctx;
	pemba_error err = {0};
	strbuf_puts(c->out, "{\"result\":");
	assert_int_equal(pbj_encode_bytes(c->out, c->resp, data, len,
	                                  PBJ_EMIT_UNPOPULATED, &err),
	                 0);
	strbuf_puts(c->out, "}\n");
	c->n++;
	return 0;
}

/* The same request over gRPC, rendered as the gateway must render it. */
static int grpc_as_http(const char *method, bool stream,
                        const ProtobufCMessageDescriptor *req,
                        const ProtobufCMessageDescriptor *resp,
                        const char *body, strbuf *out)
{
	strbuf wire;
	strbuf_init(&wire);
	pemba_error err = {0};
	assert_int_equal(pbj_decode(req, body, strlen(body),
	                            PBJ_DISCARD_UNKNOWN, &wire, &err),
	                 0);
	grpc_metadata md = {"authorization", "Bearer " KEY, 0};
	grpc_status st = {0};
	int http;
	if (!stream) {
		uint8_t *r = NULL;
		size_t rl = 0;
		grpc_client_unary(client, method, &md, 1, 0, wire.data,
		                  wire.len, &r, &rl, &st);
		if (st.code == GRPC_STATUS_OK) {
			assert_int_equal(pbj_encode_bytes(out, resp, r, rl,
			                                  PBJ_EMIT_UNPOPULATED,
			                                  &err),
			                 0);
			http = 200;
		} else {
			status_body(out, &st);
			http = gateway_http_status(st.code);
		}
		free(r);
	} else {
		collect c = {.resp = resp, .out = out};
		grpc_client_server_streaming(client, method, &md, 1, 0,
		                             wire.data, wire.len, on_msg, &c,
		                             &st);
		http = 200;
		if (st.code != GRPC_STATUS_OK) {
			strbuf_puts(out, "{\"error\":");
			status_body(out, &st);
			strbuf_puts(out, "}\n");
			if (c.n == 0)
				http = gateway_http_status(st.code);
		}
	}
	grpc_status_clear(&st);
	strbuf_free(&wire);
	return http;
}

/* Debug traces hold each sub-problem's duration, which two runs of one
 * check do not share: "duration":"..." values become "*" before the two
 * answers are compared. */
static void mask_durations(strbuf *b)
{
	static const char key[] = "\"duration\":\"";
	strbuf o;
	strbuf_init(&o);
	const char *p = b->data;
	const char *k;
	while ((k = strstr(p, key)) != NULL) {
		const char *v = k + sizeof(key) - 1;
		const char *end = strchr(v, '"');
		if (!end)
			break;
		strbuf_append(&o, p, (size_t)(v - p));
		strbuf_puts(&o, "*");
		p = end;
	}
	strbuf_puts(&o, p);
	strbuf_free(b);
	*b = o;
}

static void same(const char *path, const char *method, bool stream,
                 const ProtobufCMessageDescriptor *req,
                 const ProtobufCMessageDescriptor *resp, const char *body)
{
	strbuf h, g;
	strbuf_init(&h);
	strbuf_init(&g);
	int hs = http_post(path, body, &h);
	int gs = grpc_as_http(method, stream, req, resp, body, &g);
	mask_durations(&h);
	mask_durations(&g);
	if (hs != gs || strcmp(h.data, g.data) != 0)
		fail_msg("%s %s\nHTTP %d: %s\ngRPC %d: %s", path, body, hs,
		         h.data, gs, g.data);
	strbuf_free(&h);
	strbuf_free(&g);
}

static int setup(void **state)
{
	static const char *const keys[] = {KEY};
	server_options o = {0};
	o.grpc_addr = "127.0.0.1:0";
	o.datastore = "sqlite::memory:";
	o.keys = keys;
	o.nkeys = 1;
	o.workers = 4;
	o.shutdown_timeout_ms = 2000;
	o.http_enabled = true;
	o.http_addr = "127.0.0.1:0";
	pemba_error err = {0};
	if (server_new(&o, &server, &err) != 0)
		fail_msg("server_new: %s", err.message);
	if (server_start_http(server, &err) != 0)
		fail_msg("gateway: %s", err.message);
	http_port = server_http_port(server);
	assert_int_equal(
	    pthread_create(&server_thread, NULL, run_thread, server), 0);
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d", server_port(server));
	grpc_client_options co;
	grpc_client_options_init(&co);
	co.target = target;
	if (grpc_client_connect(&co, &client, &err) != 0)
		fail_msg("connect: %s", err.message);
	/* Data, through the gateway. */
	strbuf out;
	strbuf_init(&out);
	assert_int_equal(
	    http_post(
	        "/v1/schema/write",
	        "{\"schema\":\"caveat small(n int) {\\n n < 10\\n}\\n"
	        "definition user {}\\n"
	        "definition group {\\n relation member: user | "
	        "group#member\\n}\\n"
	        "/** docs */\\ndefinition doc {\\n relation viewer: user | "
	        "group#member | user:* | user with small\\n relation "
	        "owner: user\\n permission edit = owner\\n permission "
	        "view = viewer + edit\\n}\"}",
	        &out),
	    200);
	strbuf_reset(&out);
	assert_int_equal(
	    http_post(
	        "/v1/relationships/write",
	        "{\"updates\":["
	        "{\"operation\":\"OPERATION_TOUCH\",\"relationship\":{"
	        "\"resource\":{\"objectType\":\"doc\",\"objectId\":\"1\"},"
	        "\"relation\":\"owner\",\"subject\":{\"object\":{"
	        "\"objectType\":\"user\",\"objectId\":\"ann\"}}}},"
	        "{\"operation\":\"OPERATION_TOUCH\",\"relationship\":{"
	        "\"resource\":{\"objectType\":\"doc\",\"objectId\":\"2\"},"
	        "\"relation\":\"viewer\",\"subject\":{\"object\":{"
	        "\"objectType\":\"group\",\"objectId\":\"eng\"},"
	        "\"optionalRelation\":\"member\"}}},"
	        "{\"operation\":\"OPERATION_TOUCH\",\"relationship\":{"
	        "\"resource\":{\"objectType\":\"group\",\"objectId\":\"eng\"},"
	        "\"relation\":\"member\",\"subject\":{\"object\":{"
	        "\"objectType\":\"user\",\"objectId\":\"bob\"}}}},"
	        "{\"operation\":\"OPERATION_TOUCH\",\"relationship\":{"
	        "\"resource\":{\"objectType\":\"doc\",\"objectId\":\"3\"},"
	        "\"relation\":\"viewer\",\"subject\":{\"object\":{"
	        "\"objectType\":\"user\",\"objectId\":\"cat\"}},"
	        "\"optionalCaveat\":{\"caveatName\":\"small\"}}},"
	        "{\"operation\":\"OPERATION_TOUCH\",\"relationship\":{"
	        "\"resource\":{\"objectType\":\"doc\",\"objectId\":\"4\"},"
	        "\"relation\":\"viewer\",\"subject\":{\"object\":{"
	        "\"objectType\":\"user\",\"objectId\":\"*\"}}}}]}",
	        &out),
	    200);
	strbuf_free(&out);
	return 0;
}

static int teardown(void **state)
{
	grpc_client_close(client);
	server_shutdown(server);
	pthread_join(server_thread, NULL);
	server_free(server);
	return 0;
}

#define FULL "\"consistency\":{\"fullyConsistent\":true}"
#define CHECK(res, perm, subj)                                                 \
	"{" FULL ",\"resource\":{\"objectType\":\"doc\",\"objectId\":\"" res   \
	"\"},\"permission\":\"" perm "\",\"subject\":{\"object\":{"            \
	"\"objectType\":\"user\",\"objectId\":\"" subj "\"}}"

static void test_permissions(void **state)
{
	same("/v1/permissions/check", PS "CheckPermission", false,
	     D(check_permission_request), D(check_permission_response),
	     CHECK("1", "view", "ann") "}");
	same("/v1/permissions/check", PS "CheckPermission", false,
	     D(check_permission_request), D(check_permission_response),
	     CHECK("2", "view", "bob") ",\"withTracing\":true}");
	same("/v1/permissions/check", PS "CheckPermission", false,
	     D(check_permission_request), D(check_permission_response),
	     CHECK("3", "view", "cat") "}"); /* caveated: partial info */
	same("/v1/permissions/check", PS "CheckPermission", false,
	     D(check_permission_request), D(check_permission_response),
	     CHECK("3", "view", "cat") ",\"context\":{\"n\":3}}");
	same("/v1/permissions/check", PS "CheckPermission", false,
	     D(check_permission_request), D(check_permission_response),
	     CHECK("1", "nope", "ann") "}"); /* FAILED_PRECONDITION */
	same("/v1/permissions/check", PS "CheckPermission", false,
	     D(check_permission_request), D(check_permission_response),
	     "{}"); /* INVALID_ARGUMENT */
	same("/v1/permissions/checkbulk", PS "CheckBulkPermissions", false,
	     D(check_bulk_permissions_request),
	     D(check_bulk_permissions_response),
	     "{" FULL ",\"items\":[{\"resource\":{\"objectType\":\"doc\","
	     "\"objectId\":\"4\"},\"permission\":\"view\",\"subject\":{"
	     "\"object\":{\"objectType\":\"user\",\"objectId\":\"zed\"}}},"
	     "{\"resource\":{\"objectType\":\"nope\",\"objectId\":\"4\"},"
	     "\"permission\":\"view\",\"subject\":{\"object\":{\"objectType\":"
	     "\"user\",\"objectId\":\"zed\"}}}]}");
	same("/v1/experimental/permissions/bulkcheckpermission",
	     XS "BulkCheckPermission", false, D(bulk_check_permission_request),
	     D(bulk_check_permission_response),
	     "{" FULL ",\"items\":[{\"resource\":{\"objectType\":\"doc\","
	     "\"objectId\":\"1\"},\"permission\":\"edit\",\"subject\":{"
	     "\"object\":{\"objectType\":\"user\",\"objectId\":\"ann\"}}}]}");
	same("/v1/permissions/expand", PS "ExpandPermissionTree", false,
	     D(expand_permission_tree_request),
	     D(expand_permission_tree_response),
	     "{" FULL
	     ",\"resource\":{\"objectType\":\"doc\",\"objectId\":\"2\"},"
	     "\"permission\":\"view\"}");
	same("/v1/permissions/expand", PS "ExpandPermissionTree", false,
	     D(expand_permission_tree_request),
	     D(expand_permission_tree_response), "{\"permission\":\"view\"}");
}

static void test_streams(void **state)
{
	same("/v1/relationships/read", PS "ReadRelationships", true,
	     D(read_relationships_request), D(read_relationships_response),
	     "{" FULL ",\"relationshipFilter\":{\"resourceType\":\"doc\"}}");
	same("/v1/relationships/read", PS "ReadRelationships", true,
	     D(read_relationships_request), D(read_relationships_response),
	     "{" FULL ",\"relationshipFilter\":{\"resourceType\":\"nope\"}}");
	same("/v1/relationships/read", PS "ReadRelationships", true,
	     D(read_relationships_request), D(read_relationships_response),
	     "{" FULL ",\"relationshipFilter\":{\"resourceType\":\"doc\"},"
	     "\"optionalLimit\":1}");
	same("/v1/permissions/resources", PS "LookupResources", true,
	     D(lookup_resources_request), D(lookup_resources_response),
	     "{" FULL ",\"resourceObjectType\":\"doc\",\"permission\":\"view\","
	     "\"subject\":{\"object\":{\"objectType\":\"user\",\"objectId\":"
	     "\"cat\"}}}");
	same("/v1/permissions/subjects", PS "LookupSubjects", true,
	     D(lookup_subjects_request), D(lookup_subjects_response),
	     "{" FULL
	     ",\"resource\":{\"objectType\":\"doc\",\"objectId\":\"2\"},"
	     "\"permission\":\"view\",\"subjectObjectType\":\"user\"}");
	same("/v1/permissions/subjects", PS "LookupSubjects", true,
	     D(lookup_subjects_request), D(lookup_subjects_response),
	     "{" FULL
	     ",\"resource\":{\"objectType\":\"doc\",\"objectId\":\"4\"},"
	     "\"permission\":\"view\",\"subjectObjectType\":\"user\"}");
	same("/v1/relationships/exportbulk", PS "ExportBulkRelationships", true,
	     D(export_bulk_relationships_request),
	     D(export_bulk_relationships_response), "{" FULL "}");
	same("/v1/experimental/relationships/bulkexport",
	     XS "BulkExportRelationships", true,
	     D(bulk_export_relationships_request),
	     D(bulk_export_relationships_response),
	     "{" FULL ",\"optionalLimit\":2}");
}

static void test_schema(void **state)
{
	same("/v1/schema/read", SS "ReadSchema", false, D(read_schema_request),
	     D(read_schema_response), "");
	same("/v1/schema/reflectschema", SS "ReflectSchema", false,
	     D(reflect_schema_request), D(reflect_schema_response),
	     "{" FULL "}");
	same("/v1/schema/reflectschema", SS "ReflectSchema", false,
	     D(reflect_schema_request), D(reflect_schema_response),
	     "{" FULL ",\"optionalFilters\":[{\"optionalDefinitionNameFilter\":"
	     "\"do\"}]}");
	same("/v1/schema/permissions/computable", SS "ComputablePermissions",
	     false, D(computable_permissions_request),
	     D(computable_permissions_response),
	     "{" FULL
	     ",\"definitionName\":\"doc\",\"relationName\":\"owner\"}");
	same("/v1/schema/permissions/dependent", SS "DependentRelations", false,
	     D(dependent_relations_request), D(dependent_relations_response),
	     "{" FULL
	     ",\"definitionName\":\"doc\",\"permissionName\":\"view\"}");
	same("/v1/schema/permissions/dependent", SS "DependentRelations", false,
	     D(dependent_relations_request), D(dependent_relations_response),
	     "{" FULL
	     ",\"definitionName\":\"doc\",\"permissionName\":\"nope\"}");
	same("/v1/schema/diffschema", SS "DiffSchema", false,
	     D(diff_schema_request), D(diff_schema_response),
	     "{" FULL ",\"comparisonSchema\":\"definition user {}\\n"
	     "definition doc {\\n relation viewer: user\\n}\"}");
	/* A dry run writes nothing, so both answers are alike. */
	same("/v1/schema/write", SS "WriteSchema", false,
	     D(write_schema_request), D(write_schema_response),
	     "{\"schema\":\"definition x {\"}");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_permissions),
	    cmocka_unit_test(test_streams),
	    cmocka_unit_test(test_schema),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
