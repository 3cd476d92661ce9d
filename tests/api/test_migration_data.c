/*
 * test_migration_data.c -- pemba.v1.MigrationService CopyRelationships and
 * VerifyPermission over the real gRPC server (in-process, ephemeral port,
 * file datastore): progress messages and their cursors, resuming, the
 * status codes of refusals, differences streamed before the summary,
 * read-only servers.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/grpc.h"
#include "grpc_fixture.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "pg_fixture.h"
#include "server/server.h"

#define KEY "test-key-1"
#define MS "/pemba.v1.MigrationService/"

static const char *SCHEMA = "caveat only_on(day int) {\n  day == 1\n}\n"
                            "definition user {}\n"
                            "definition user2 {}\n"
                            "definition document {\n"
                            "  relation viewer: user | user with only_on\n"
                            "  relation reader: user | user with only_on\n"
                            "  relation owner: user\n"
                            "  relation new_viewer: user2 | user2 with "
                            "only_on\n"
                            "  permission view = viewer\n"
                            "  permission read = reader\n"
                            "}\n";

/* ============================================================ fixture */

typedef struct fixture {
	test_server srv;
	char dir[64];
	char uri[160];
	pemba_db *db; /* a handle of the test's own on the same datastore */
} fixture;

static void start(fixture *f, bool read_only)
{
	static const char *const keys[] = {KEY};
	test_server_start(&f->srv, (server_options){
	                               .datastore = pg_fixture_uri(f->uri),
	                               .keys = keys,
	                               .nkeys = 1,
	                               .read_only = read_only,
	                           });
}

static void stop(fixture *f)
{
	test_server_stop(&f->srv);
}

/* A file datastore with the schema and `rels`, served by a new server. */
static fixture *setup(const char *const *rels, size_t n, bool read_only)
{
	fixture *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/pemba-mdata-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->uri, sizeof(f->uri), "sqlite://%s/p.db", f->dir);
	pemba_error err;
	assert_int_equal(pemba_open(pg_fixture_uri(f->uri), NULL, &f->db, &err),
	                 0);
	assert_int_equal(
	    pemba_write_schema(f->db, SCHEMA, strlen(SCHEMA), NULL, &err), 0);
	for (size_t i = 0; i < n; i++) {
		pemba_update u = {.op = PEMBA_OP_TOUCH};
		char *storage;
		assert_int_equal(
		    pemba_parse_relationship(rels[i], &u.rel, &storage, &err),
		    0);
		assert_int_equal(pemba_write_relationships(f->db, &u, 1, NULL,
		                                           0, NULL, &err),
		                 0);
		pemba_free(storage);
	}
	start(f, read_only);
	return f;
}

static void teardown(fixture *f)
{
	stop(f);
	pemba_close(f->db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

static int count_fn(void *ctx, const pemba_relationship *rel)
{
	(void)rel;
	(*(size_t *)ctx)++;
	return 0;
}

static size_t count_relation(fixture *f, const char *relation)
{
	size_t n = 0;
	pemba_error err;
	pemba_filter filter = {.resource_type = "document",
	                       .relation = relation};
	assert_int_equal(pemba_read_relationships(f->db, 0, &filter, NULL, 0,
	                                          count_fn, &n, &err),
	                 0);
	return n;
}

/* ============================================================ calls */

typedef test_stream stream;

static void call_stream(fixture *f, const char *path,
                        const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *d, stream *s)
{
	memset(s, 0, sizeof(*s));
	static const grpc_metadata md[1] = {
	    {"authorization", "Bearer " KEY, 0}};
	test_call_stream(f->srv.client, md, 1, path, req, d, s);
}

#define stream_free test_stream_done

#define expect_code(s, want)                                                   \
	do {                                                                   \
		if ((s).r.code != (want))                                      \
			fail_msg("status %s (%s), want %s",                    \
			         grpc_status_name((s).r.code), (s).r.message,  \
			         grpc_status_name(want));                      \
	} while (0)

static void copy(fixture *f, const char *to, uint32_t batch, const char *cursor,
                 stream *s)
{
	Pemba__V1__CopyRelationshipsRequest req =
	    PEMBA__V1__COPY_RELATIONSHIPS_REQUEST__INIT;
	req.resource_type = "document";
	req.from_relation = "viewer";
	req.to_relation = (char *)to;
	req.batch_size = batch;
	req.cursor = (char *)(cursor ? cursor : "");
	call_stream(f, MS "CopyRelationships", &req.base,
	            &pemba__v1__copy_relationships_progress__descriptor, s);
}

static const Pemba__V1__CopyRelationshipsProgress *progress(stream *s, size_t i)
{
	return (const Pemba__V1__CopyRelationshipsProgress *)s->msgs[i];
}

static void verify(fixture *f, const char *a, const char *b, uint32_t max,
                   stream *s)
{
	Pemba__V1__VerifyPermissionRequest req =
	    PEMBA__V1__VERIFY_PERMISSION_REQUEST__INIT;
	req.resource_type = "document";
	req.first = (char *)a;
	req.second = (char *)b;
	req.max_differences = max;
	call_stream(f, MS "VerifyPermission", &req.base,
	            &pemba__v1__verify_permission_response__descriptor, s);
}

static const Pemba__V1__VerifyPermissionResponse *answer(stream *s, size_t i)
{
	return (const Pemba__V1__VerifyPermissionResponse *)s->msgs[i];
}

static const char *const RELS[] = {
    "document:1#viewer@user:anne",          "document:1#viewer@user:bob",
    "document:2#viewer@user:carl[only_on]", "document:3#viewer@user:dana",
    "document:4#viewer@user:erin",
};

/* ============================================================ tests */

static void test_copy_streams_progress_and_ends_with_done(void **state)
{
	(void)state;
	fixture *f = setup(RELS, 5, false);
	stream s;
	copy(f, "reader", 2, NULL, &s);
	expect_code(s, GRPC_STATUS_OK);
	/* Batches of 2, 2, 1: three messages, only the last done. */
	assert_int_equal(s.n, 3);
	assert_int_equal(progress(&s, 0)->copied, 2);
	assert_false(progress(&s, 0)->done);
	assert_int_equal(progress(&s, 2)->copied, 5);
	assert_true(progress(&s, 2)->done);
	for (size_t i = 0; i < s.n; i++) {
		assert_true(progress(&s, i)->cursor[0] != '\0');
		assert_non_null(progress(&s, i)->snapshot);
		assert_non_null(progress(&s, i)->written_at);
		assert_string_equal(progress(&s, i)->snapshot->token,
		                    progress(&s, 0)->snapshot->token);
	}
	assert_int_equal(count_relation(f, "reader"), 5);

	/* Resuming from the first cursor finishes the same copy. */
	char *cursor = strdup(progress(&s, 0)->cursor);
	stream_free(&s);
	copy(f, "reader", 2, cursor, &s);
	expect_code(s, GRPC_STATUS_OK);
	assert_int_equal(s.n, 2);
	assert_int_equal(progress(&s, 1)->copied, 5);
	assert_true(progress(&s, 1)->done);
	assert_int_equal(count_relation(f, "reader"), 5);
	stream_free(&s);
	free(cursor);
	teardown(f);
}

/* SpiceDB's guide example over the wire: viewer: user copied to
 * new_viewer: user2 with a SubjectMapping; a mapping to a type the target
 * does not allow is INVALID_ARGUMENT naming it. */
static void test_copy_maps_subject_types_over_grpc(void **state)
{
	(void)state;
	fixture *f = setup(RELS, 5, false);
	Pemba__V1__SubjectMapping map = PEMBA__V1__SUBJECT_MAPPING__INIT;
	map.from_type = "user";
	map.to_type = "user3";
	Pemba__V1__SubjectMapping *maps[] = {&map};
	Pemba__V1__CopyRelationshipsRequest req =
	    PEMBA__V1__COPY_RELATIONSHIPS_REQUEST__INIT;
	req.resource_type = "document";
	req.from_relation = "viewer";
	req.to_relation = "new_viewer";
	req.n_subject_mappings = 1;
	req.subject_mappings = maps;
	stream s;
	call_stream(f, MS "CopyRelationships", &req.base,
	            &pemba__v1__copy_relationships_progress__descriptor, &s);
	expect_code(s, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(s.r.message, "does not allow subjects of type "
	                                    "`user3`"));
	stream_free(&s);
	assert_int_equal(count_relation(f, "new_viewer"), 0);

	map.to_type = "user2";
	call_stream(f, MS "CopyRelationships", &req.base,
	            &pemba__v1__copy_relationships_progress__descriptor, &s);
	expect_code(s, GRPC_STATUS_OK);
	assert_true(progress(&s, s.n - 1)->done);
	assert_int_equal(progress(&s, s.n - 1)->copied, 5);
	stream_free(&s);
	assert_int_equal(count_relation(f, "new_viewer"), 5);
	pemba_check_request cr = {.resource_type = "document",
	                          .resource_id = "1",
	                          .permission = "new_viewer",
	                          .subject_type = "user2",
	                          .subject_id = "anne"};
	pemba_permissionship got;
	pemba_error err;
	assert_int_equal(pemba_check_permission(f->db, 0, &cr, &got, &err), 0);
	assert_int_equal(got, PEMBA_HAS_PERMISSION);
	teardown(f);
}

static void test_copy_refusals_have_spicedb_status_codes(void **state)
{
	(void)state;
	fixture *f = setup(RELS, 5, false);
	stream s;
	/* `owner` does not allow the caveated subject document:2 has. */
	copy(f, "owner", 0, NULL, &s);
	expect_code(s, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(s.r.message, "`user with only_on`"));
	assert_int_equal(s.n, 0);
	assert_int_equal(count_relation(f, "owner"), 0);
	copy(f, "view", 0, NULL, &s);
	expect_code(s, GRPC_STATUS_INVALID_ARGUMENT);
	copy(f, "nope", 0, NULL, &s);
	expect_code(s, GRPC_STATUS_FAILED_PRECONDITION);
	copy(f, "reader", 0, "c1:garbage", &s);
	expect_code(s, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(s.r.message, "invalid copy cursor"));
	copy(f, "reader", 200000, NULL, &s);
	expect_code(s, GRPC_STATUS_INVALID_ARGUMENT);
	teardown(f);
}

static void test_copy_on_a_read_only_server_is_unavailable(void **state)
{
	(void)state;
	fixture *f = setup(RELS, 5, true);
	stream s;
	copy(f, "reader", 0, NULL, &s);
	expect_code(s, GRPC_STATUS_UNAVAILABLE);
	assert_int_equal(count_relation(f, "reader"), 0);
	teardown(f);
}

static void test_verify_streams_differences_then_summary(void **state)
{
	(void)state;
	fixture *f = setup(RELS, 5, false);
	stream s;
	verify(f, "view", "read", 0, &s);
	expect_code(s, GRPC_STATUS_OK);
	/* Five differences, then the summary. */
	assert_int_equal(s.n, 6);
	const Pemba__V1__VerifyPermissionResponse *first = answer(&s, 0);
	assert_int_equal(
	    first->result_case,
	    PEMBA__V1__VERIFY_PERMISSION_RESPONSE__RESULT_DIFFERENCE);
	assert_string_equal(first->difference->resource_id, "1");
	assert_string_equal(first->difference->subject, "user:anne");
	assert_true(first->difference->in_first);
	assert_false(first->difference->in_second);
	const Pemba__V1__VerifyDifference *carl = answer(&s, 2)->difference;
	assert_string_equal(carl->subject, "user:carl");
	assert_int_equal(
	    carl->first_permissionship,
	    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION);
	assert_int_equal(
	    carl->second_permissionship,
	    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION);
	const Pemba__V1__VerifyPermissionResponse *last = answer(&s, 5);
	assert_int_equal(last->result_case,
	                 PEMBA__V1__VERIFY_PERMISSION_RESPONSE__RESULT_SUMMARY);
	assert_int_equal(last->summary->resources, 4);
	assert_int_equal(last->summary->differences, 5);
	assert_false(last->summary->equal);
	assert_non_null(last->summary->checked_at);
	stream_free(&s);

	/* A limit on what is streamed; the summary still counts all. */
	verify(f, "view", "read", 2, &s);
	expect_code(s, GRPC_STATUS_OK);
	assert_int_equal(s.n, 3);
	assert_int_equal(answer(&s, 2)->summary->differences, 5);
	stream_free(&s);

	/* After the copy: equal, only the summary. */
	copy(f, "reader", 0, NULL, &s);
	expect_code(s, GRPC_STATUS_OK);
	stream_free(&s);
	verify(f, "view", "read", 0, &s);
	expect_code(s, GRPC_STATUS_OK);
	assert_int_equal(s.n, 1);
	assert_true(answer(&s, 0)->summary->equal);
	assert_int_equal(answer(&s, 0)->summary->differences, 0);
	stream_free(&s);

	verify(f, "view", "nope", 0, &s);
	expect_code(s, GRPC_STATUS_FAILED_PRECONDITION);
	assert_non_null(strstr(s.r.message, "`nope` not found"));
	stream_free(&s);
	teardown(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_copy_streams_progress_and_ends_with_done),
	    cmocka_unit_test(test_copy_maps_subject_types_over_grpc),
	    cmocka_unit_test(test_copy_refusals_have_spicedb_status_codes),
	    cmocka_unit_test(test_copy_on_a_read_only_server_is_unavailable),
	    cmocka_unit_test(test_verify_streams_differences_then_summary),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
