/*
 * test_migration_admin.c -- pemba.v1.MigrationService SetReadOnly,
 * GetMigrationStatus, DeprecateRelation and UndeprecateRelation over the
 * real gRPC server (started in-process on an ephemeral port): writes are
 * UNAVAILABLE in read-only mode (stored or forced with --read-only) while
 * reads work, rejected deprecations are FAILED_PRECONDITION, warned ones
 * are logged one line per write, and serve-testing keeps the settings per
 * token datastore.
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
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "grpc_fixture.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "pg_fixture.h"
#include "server/server.h"

#define KEY "admin-test-key"
#define PS "/authzed.api.v1.PermissionsService/"
#define MS "/pemba.v1.MigrationService/"

static const char *SCHEMA = "definition user {}\n"
                            "definition doc {\n"
                            "\trelation owner: user\n"
                            "\trelation viewer: user\n"
                            "\tpermission view = viewer + owner\n"
                            "}\n";

/* ============================================================ fixture */

/* The server's log lines, collected (the log callback is called from
 * worker threads). */
typedef struct log_lines {
	pthread_mutex_t lock;
	char text[8192];
	int warnings;
} log_lines;

static void collect_log(void *ctx, int level, const char *message)
{
	log_lines *l = ctx;
	pthread_mutex_lock(&l->lock);
	if (level == 1)
		l->warnings++;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof(l->text) - n, "%d %s\n", level, message);
	pthread_mutex_unlock(&l->lock);
}

typedef struct fixture {
	test_server srv;
	char token[64];
	char dir[64];
	char uri[160];
	log_lines log;
} fixture;

static void start(fixture *f, bool testing, bool read_only)
{
	static const char *const keys[] = {KEY};
	test_server_start(&f->srv, (server_options){
	                               .datastore = pg_fixture_uri(f->uri),
	                               .testing = testing,
	                               .keys = keys,
	                               .nkeys = testing ? 0 : 1,
	                               .read_only = read_only,
	                               .log = collect_log,
	                               .log_ctx = &f->log,
	                           });
}

static void stop(fixture *f)
{
	test_server_stop(&f->srv);
}

static fixture *new_fixture(bool read_only)
{
	fixture *f = calloc(1, sizeof(*f));
	pthread_mutex_init(&f->log.lock, NULL);
	strcpy(f->dir, "/tmp/pemba-admin-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->uri, sizeof(f->uri), "sqlite://%s/p.db", f->dir);
	snprintf(f->token, sizeof(f->token), "%s", KEY);
	start(f, false, read_only);
	return f;
}

static void free_fixture(fixture *f)
{
	if (f->srv.server)
		stop(f);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	pthread_mutex_destroy(&f->log.lock);
	free(f);
}

/* ============================================================== calls */

typedef test_result result;

static result call(fixture *f, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *d)
{
	grpc_metadata md[1];
	char auth[128];
	size_t nmd = 0;
	if (f->token[0]) {
		snprintf(auth, sizeof(auth), "Bearer %s", f->token);
		md[0] = (grpc_metadata){"authorization", auth, 0};
		nmd = 1;
	}
	return test_call(f->srv.client, md, nmd, path, req, d);
}

#define done test_result_done

#define expect_status(r, want)                                                 \
	do {                                                                   \
		if ((r).code != (want))                                        \
			fail_msg("status %s (%s), want %s",                    \
			         grpc_status_name((r).code), (r).message,      \
			         grpc_status_name(want));                      \
	} while (0)

static result write_schema(fixture *f, const char *text)
{
	Authzed__Api__V1__WriteSchemaRequest req =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	req.schema = (char *)text;
	return call(f, "/authzed.api.v1.SchemaService/WriteSchema", &req.base,
	            &authzed__api__v1__write_schema_response__descriptor);
}

/* A relationship message "doc:ID#REL@user:ID" with storage. */
typedef struct rel_msg {
	Authzed__Api__V1__Relationship rel;
	Authzed__Api__V1__ObjectReference res, subj_obj;
	Authzed__Api__V1__SubjectReference subj;
	Authzed__Api__V1__RelationshipUpdate update;
	char id[32], relation[32], user[32];
} rel_msg;

static void rel_init(rel_msg *m, const char *id, const char *relation,
                     const char *user)
{
	authzed__api__v1__relationship__init(&m->rel);
	authzed__api__v1__object_reference__init(&m->res);
	authzed__api__v1__object_reference__init(&m->subj_obj);
	authzed__api__v1__subject_reference__init(&m->subj);
	authzed__api__v1__relationship_update__init(&m->update);
	snprintf(m->id, sizeof(m->id), "%s", id);
	snprintf(m->relation, sizeof(m->relation), "%s", relation);
	snprintf(m->user, sizeof(m->user), "%s", user);
	m->res.object_type = "doc";
	m->res.object_id = m->id;
	m->rel.relation = m->relation;
	m->subj_obj.object_type = "user";
	m->subj_obj.object_id = m->user;
	m->subj.object = &m->subj_obj;
	m->rel.resource = &m->res;
	m->rel.subject = &m->subj;
	m->update.relationship = &m->rel;
}

#define TOUCH AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH
#define DELETE                                                                 \
	AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE

static result write_rel(fixture *f, int op, const char *id,
                        const char *relation, const char *user)
{
	rel_msg m;
	rel_init(&m, id, relation, user);
	m.update.operation = op;
	Authzed__Api__V1__RelationshipUpdate *ups[1] = {&m.update};
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.updates = ups;
	req.n_updates = 1;
	return call(
	    f, PS "WriteRelationships", &req.base,
	    &authzed__api__v1__write_relationships_response__descriptor);
}

static result delete_rels(fixture *f, const char *relation)
{
	Authzed__Api__V1__RelationshipFilter filter =
	    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
	filter.resource_type = "doc";
	filter.optional_relation = (char *)relation;
	Authzed__Api__V1__DeleteRelationshipsRequest req =
	    AUTHZED__API__V1__DELETE_RELATIONSHIPS_REQUEST__INIT;
	req.relationship_filter = &filter;
	return call(
	    f, PS "DeleteRelationships", &req.base,
	    &authzed__api__v1__delete_relationships_response__descriptor);
}

/* One message of one relationship through ImportBulkRelationships. */
typedef struct feed {
	uint8_t *buf;
	size_t len;
	bool sent;
} feed;

static int next_message(void *ctx, const void **data, size_t *len)
{
	feed *fd = ctx;
	if (fd->sent)
		return 0;
	*data = fd->buf;
	*len = fd->len;
	fd->sent = true;
	return 1;
}

static int import_rel(fixture *f, const char *id, const char *relation,
                      const char *user, char *message, size_t size)
{
	rel_msg m;
	rel_init(&m, id, relation, user);
	Authzed__Api__V1__Relationship *rp[1] = {&m.rel};
	Authzed__Api__V1__ImportBulkRelationshipsRequest im =
	    AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_REQUEST__INIT;
	im.relationships = rp;
	im.n_relationships = 1;
	feed fd = {0};
	fd.len = protobuf_c_message_get_packed_size(&im.base);
	fd.buf = malloc(fd.len);
	protobuf_c_message_pack(&im.base, fd.buf);
	char auth[128];
	snprintf(auth, sizeof(auth), "Bearer %s", f->token);
	grpc_metadata md[1] = {{"authorization", auth, 0}};
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	grpc_status st = {0};
	grpc_client_streaming(f->srv.client, PS "ImportBulkRelationships", md,
	                      1, 10000, next_message, &fd, NULL, NULL, &resp,
	                      &resp_len, &st);
	int code = st.code;
	snprintf(message, size, "%s", st.message ? st.message : "");
	grpc_status_clear(&st);
	free(resp);
	free(fd.buf);
	return code;
}

static int check_view(fixture *f, const char *id, const char *user)
{
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__ObjectReference so =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	res.object_type = "doc";
	res.object_id = (char *)id;
	so.object_type = "user";
	so.object_id = (char *)user;
	subj.object = &so;
	Authzed__Api__V1__CheckPermissionRequest req =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	req.resource = &res;
	req.permission = "view";
	req.subject = &subj;
	result r =
	    call(f, PS "CheckPermission", &req.base,
	         &authzed__api__v1__check_permission_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	int p = ((Authzed__Api__V1__CheckPermissionResponse *)r.resp)
	            ->permissionship;
	done(&r);
	return p;
}

#define HAS                                                                    \
	AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION

static Pemba__V1__SetReadOnlyResponse set_read_only(fixture *f, bool on)
{
	Pemba__V1__SetReadOnlyRequest req =
	    PEMBA__V1__SET_READ_ONLY_REQUEST__INIT;
	req.read_only = on;
	result r = call(f, MS "SetReadOnly", &req.base,
	                &pemba__v1__set_read_only_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	Pemba__V1__SetReadOnlyResponse copy =
	    *(Pemba__V1__SetReadOnlyResponse *)r.resp;
	done(&r);
	return copy;
}

static result get_status(fixture *f)
{
	Pemba__V1__GetMigrationStatusRequest req =
	    PEMBA__V1__GET_MIGRATION_STATUS_REQUEST__INIT;
	result r = call(f, MS "GetMigrationStatus", &req.base,
	                &pemba__v1__get_migration_status_response__descriptor);
	expect_status(r, GRPC_STATUS_OK);
	return r;
}

static result deprecate(fixture *f, const char *type, const char *relation,
                        Pemba__V1__Deprecation__Mode mode)
{
	Pemba__V1__DeprecateRelationRequest req =
	    PEMBA__V1__DEPRECATE_RELATION_REQUEST__INIT;
	req.resource_type = (char *)type;
	req.relation = (char *)relation;
	req.mode = mode;
	return call(f, MS "DeprecateRelation", &req.base,
	            &pemba__v1__deprecate_relation_response__descriptor);
}

static result undeprecate(fixture *f, const char *type, const char *relation)
{
	Pemba__V1__UndeprecateRelationRequest req =
	    PEMBA__V1__UNDEPRECATE_RELATION_REQUEST__INIT;
	req.resource_type = (char *)type;
	req.relation = (char *)relation;
	return call(f, MS "UndeprecateRelation", &req.base,
	            &pemba__v1__undeprecate_relation_response__descriptor);
}

static void setup_data(fixture *f)
{
	result r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	r = write_rel(f, TOUCH, "readme", "viewer", "anne");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
}

/* ============================================================== tests */

static void
stored_read_only_makes_writes_unavailable_and_reads_work(void **state)
{
	fixture *f = new_fixture(false);
	setup_data(f);
	Pemba__V1__SetReadOnlyResponse s = set_read_only(f, true);
	assert_true(s.read_only);
	assert_false(s.forced_by_server);
	result r = get_status(f);
	assert_true(
	    ((Pemba__V1__GetMigrationStatusResponse *)r.resp)->read_only);
	done(&r);

	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	assert_non_null(strstr(r.message, "read-only mode"));
	assert_non_null(strstr(r.message, "pemba admin read-only off"));
	r = delete_rels(f, "viewer");
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	assert_non_null(strstr(r.message, "read-only mode"));
	char message[1024];
	assert_int_equal(
	    import_rel(f, "x", "viewer", "zoe", message, sizeof(message)),
	    GRPC_STATUS_UNAVAILABLE);
	assert_non_null(strstr(message, "read-only mode"));
	/* Reads keep working; nothing was written. */
	assert_int_equal(check_view(f, "readme", "anne"), HAS);
	assert_int_not_equal(check_view(f, "readme", "bob"), HAS);

	/* The setting is in the datastore: it survives a restart. */
	stop(f);
	start(f, false, false);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	s = set_read_only(f, false);
	assert_false(s.read_only);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	assert_int_equal(check_view(f, "readme", "bob"), HAS);
	free_fixture(f);
}

static void serve_read_only_forces_writes_off_but_admin_calls_work(void **state)
{
	fixture *f = new_fixture(false);
	setup_data(f);
	stop(f);
	start(f, false, true); /* --read-only */
	result r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	assert_non_null(strstr(r.message, "--read-only"));
	r = write_schema(f, SCHEMA);
	expect_status(r, GRPC_STATUS_UNAVAILABLE);

	/* Whatever the stored flag says: off stays off for writes. */
	Pemba__V1__SetReadOnlyResponse s = set_read_only(f, false);
	assert_false(s.read_only);
	assert_true(s.forced_by_server);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	s = set_read_only(f, true);
	assert_true(s.read_only);
	assert_true(s.forced_by_server);
	r = get_status(f);
	Pemba__V1__GetMigrationStatusResponse *st = (void *)r.resp;
	assert_true(st->read_only);
	assert_true(st->forced_by_server);
	done(&r);
	/* Deprecation is administration too. */
	r = deprecate(f, "doc", "owner", PEMBA__V1__DEPRECATION__MODE__WARN);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	assert_int_equal(check_view(f, "readme", "anne"), HAS);

	/* Restarted without --read-only: the stored flag (on) holds. */
	stop(f);
	start(f, false, false);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_UNAVAILABLE);
	assert_non_null(strstr(r.message, "read-only mode"));
	s = set_read_only(f, false);
	assert_false(s.forced_by_server);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	free_fixture(f);
}

static void reject_deprecation_is_failed_precondition(void **state)
{
	fixture *f = new_fixture(false);
	setup_data(f);
	result r =
	    deprecate(f, "doc", "viewer", PEMBA__V1__DEPRECATION__MODE__REJECT);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
	assert_non_null(strstr(r.message, "`doc#viewer` is deprecated"));
	assert_non_null(strstr(r.message, "doc:readme#viewer@user:bob"));
	char message[1024];
	assert_int_equal(
	    import_rel(f, "x", "viewer", "zoe", message, sizeof(message)),
	    GRPC_STATUS_FAILED_PRECONDITION);
	/* Other relations, and deletes of this one, are allowed. */
	r = write_rel(f, TOUCH, "readme", "owner", "bob");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	r = write_rel(f, DELETE, "readme", "viewer", "anne");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	r = delete_rels(f, "viewer");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	assert_int_not_equal(check_view(f, "readme", "anne"), HAS);

	/* Bad requests. */
	r = deprecate(f, "doc", "nothing", PEMBA__V1__DEPRECATION__MODE__WARN);
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);
	assert_non_null(strstr(r.message, "not found"));
	r = deprecate(f, "doc", "viewer",
	              PEMBA__V1__DEPRECATION__MODE__MODE_UNSPECIFIED);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);
	r = deprecate(f, "doc", "", PEMBA__V1__DEPRECATION__MODE__WARN);
	expect_status(r, GRPC_STATUS_INVALID_ARGUMENT);

	/* Status lists it with when it was set; lifting it reports it. */
	r = get_status(f);
	Pemba__V1__GetMigrationStatusResponse *st = (void *)r.resp;
	assert_int_equal(st->n_deprecations, 1);
	assert_string_equal(st->deprecations[0]->resource_type, "doc");
	assert_string_equal(st->deprecations[0]->relation, "viewer");
	assert_int_equal(st->deprecations[0]->mode,
	                 PEMBA__V1__DEPRECATION__MODE__REJECT);
	assert_non_null(st->deprecations[0]->set_at);
	assert_true(st->deprecations[0]->set_at_unix_ms > 0);
	done(&r);
	r = undeprecate(f, "doc", "viewer");
	expect_status(r, GRPC_STATUS_OK);
	assert_true(
	    ((Pemba__V1__UndeprecateRelationResponse *)r.resp)->was_deprecated);
	done(&r);
	r = undeprecate(f, "doc", "viewer");
	expect_status(r, GRPC_STATUS_OK);
	assert_false(
	    ((Pemba__V1__UndeprecateRelationResponse *)r.resp)->was_deprecated);
	done(&r);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	free_fixture(f);
}

static void warn_deprecation_writes_and_logs_one_line_per_write(void **state)
{
	fixture *f = new_fixture(false);
	setup_data(f);
	result r =
	    deprecate(f, "doc", "viewer", PEMBA__V1__DEPRECATION__MODE__WARN);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	int before = f->log.warnings;
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	assert_int_equal(check_view(f, "readme", "bob"), HAS);
	char message[1024];
	assert_int_equal(
	    import_rel(f, "imp", "viewer", "zoe", message, sizeof(message)),
	    GRPC_STATUS_OK);
	/* Not logged: another relation, and deletes. */
	r = write_rel(f, TOUCH, "readme", "owner", "carl");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	r = write_rel(f, DELETE, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	pthread_mutex_lock(&f->log.lock);
	int warnings = f->log.warnings - before;
	char text[8192];
	snprintf(text, sizeof(text), "%s", f->log.text);
	pthread_mutex_unlock(&f->log.lock);
	assert_int_equal(warnings, 2);
	assert_non_null(strstr(text, "deprecated relation `doc#viewer`"));
	assert_non_null(strstr(text, "doc:readme#viewer@user:bob"));
	assert_non_null(strstr(text, "doc:imp#viewer@user:zoe"));
	free_fixture(f);
}

/* A bulk check of doc:readme#PERM@user:anne for each of perms[0..n). */
static result check_bulk(fixture *f, const char *const *perms, size_t n)
{
	Authzed__Api__V1__ObjectReference res =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__ObjectReference so =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	Authzed__Api__V1__SubjectReference subj =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	res.object_type = "doc";
	res.object_id = "readme";
	so.object_type = "user";
	so.object_id = "anne";
	subj.object = &so;
	Authzed__Api__V1__CheckBulkPermissionsRequestItem items[4];
	Authzed__Api__V1__CheckBulkPermissionsRequestItem *ptrs[4];
	assert_true(n <= 4);
	for (size_t i = 0; i < n; i++) {
		authzed__api__v1__check_bulk_permissions_request_item__init(
		    &items[i]);
		items[i].resource = &res;
		items[i].permission = (char *)perms[i];
		items[i].subject = &subj;
		ptrs[i] = &items[i];
	}
	Authzed__Api__V1__CheckBulkPermissionsRequest req =
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST__INIT;
	req.items = ptrs;
	req.n_items = n;
	return call(
	    f, PS "CheckBulkPermissions", &req.base,
	    &authzed__api__v1__check_bulk_permissions_response__descriptor);
}

/* The status's deprecation of doc#NAME, or NULL. */
static const Pemba__V1__Deprecation *
find_deprecation(const Pemba__V1__GetMigrationStatusResponse *st,
                 const char *name)
{
	for (size_t i = 0; i < st->n_deprecations; i++)
		if (strcmp(st->deprecations[i]->resource_type, "doc") == 0 &&
		    strcmp(st->deprecations[i]->relation, name) == 0)
			return st->deprecations[i];
	return NULL;
}

static int count_lines(fixture *f, const char *needle)
{
	pthread_mutex_lock(&f->log.lock);
	int n = 0;
	for (const char *p = f->log.text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	pthread_mutex_unlock(&f->log.lock);
	return n;
}

/* A deprecated permission: the reads naming it are counted per caller
 * and method (GetMigrationStatus), logged once per caller and method
 * (then rate-limited), refused in REJECT mode (bulk checks: per item);
 * writes to a deprecated relation are counted too. */
static void deprecated_names_are_counted_per_caller_and_method(void **state)
{
	fixture *f = new_fixture(false);
	setup_data(f);
	result r =
	    deprecate(f, "doc", "view", PEMBA__V1__DEPRECATION__MODE__WARN);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	assert_int_equal(check_view(f, "readme", "anne"), HAS);
	assert_int_not_equal(check_view(f, "readme", "bob"), HAS);
	r = deprecate(f, "doc", "viewer", PEMBA__V1__DEPRECATION__MODE__WARN);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);

	r = get_status(f);
	const Pemba__V1__GetMigrationStatusResponse *st = (void *)r.resp;
	assert_true(st->usage_since_unix_ms > 0);
	const Pemba__V1__Deprecation *d = find_deprecation(st, "view");
	assert_non_null(d);
	assert_int_equal(d->n_uses, 1);
	assert_string_equal(d->uses[0]->peer, "127.0.0.1");
	assert_string_equal(d->uses[0]->key_name, ""); /* an unnamed key */
	assert_string_equal(d->uses[0]->method, "CheckPermission");
	assert_int_equal(d->uses[0]->count, 2);
	assert_true(d->uses[0]->first_unix_ms <= d->uses[0]->last_unix_ms);
	d = find_deprecation(st, "viewer");
	assert_non_null(d);
	assert_int_equal(d->n_uses, 1);
	assert_string_equal(d->uses[0]->method, "WriteRelationships");
	assert_int_equal(d->uses[0]->count, 1);
	done(&r);
	assert_int_equal(
	    count_lines(f, "deprecated doc#view used by CheckPermission from "
	                   "127.0.0.1"),
	    1);
	assert_int_equal(count_lines(f, "by WriteRelationships from 127.0.0.1"),
	                 1);

	/* REJECT: a bulk check fails the item naming it, not the others. */
	r = deprecate(f, "doc", "viewer", PEMBA__V1__DEPRECATION__MODE__REJECT);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	static const char *const perms[] = {"view", "viewer", "owner"};
	r = check_bulk(f, perms, 3);
	expect_status(r, GRPC_STATUS_OK);
	const Authzed__Api__V1__CheckBulkPermissionsResponse *b =
	    (void *)r.resp;
	assert_int_equal(b->n_pairs, 3);
	assert_int_equal(
	    b->pairs[0]->response_case,
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM);
	assert_int_equal(
	    b->pairs[1]->response_case,
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR);
	assert_int_equal(b->pairs[1]->error->code,
	                 GRPC_STATUS_FAILED_PRECONDITION);
	assert_non_null(strstr(b->pairs[1]->error->message,
	                       "`doc#viewer` is deprecated (reject)"));
	assert_int_equal(
	    b->pairs[2]->response_case,
	    AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM);
	done(&r);
	assert_int_equal(
	    count_lines(f, "deprecated doc#viewer (reject) refused to "
	                   "CheckBulkPermissions from 127.0.0.1"),
	    1);

	/* Lifted: no more counters for it. */
	r = undeprecate(f, "doc", "view");
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	assert_int_equal(check_view(f, "readme", "anne"), HAS);
	r = get_status(f);
	st = (void *)r.resp;
	assert_null(find_deprecation(st, "view"));
	d = find_deprecation(st, "viewer");
	assert_non_null(d);
	assert_int_equal(d->n_uses, 2); /* the write, the bulk check */
	done(&r);
	free_fixture(f);
}

/* serve-testing: each token's datastore has its own settings. */
static void serve_testing_keeps_settings_per_token(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	pthread_mutex_init(&f->log.lock, NULL);
	strcpy(f->dir, "/tmp/pemba-admin-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	start(f, true, false);
	strcpy(f->token, "alpha");
	setup_data(f);
	Pemba__V1__SetReadOnlyResponse s = set_read_only(f, true);
	assert_true(s.read_only);
	result r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_UNAVAILABLE);

	strcpy(f->token, "beta");
	setup_data(f); /* writes work here */
	r = get_status(f);
	assert_false(
	    ((Pemba__V1__GetMigrationStatusResponse *)r.resp)->read_only);
	done(&r);
	r = deprecate(f, "doc", "viewer", PEMBA__V1__DEPRECATION__MODE__REJECT);
	expect_status(r, GRPC_STATUS_OK);
	done(&r);
	r = write_rel(f, TOUCH, "readme", "viewer", "bob");
	expect_status(r, GRPC_STATUS_FAILED_PRECONDITION);

	strcpy(f->token, "alpha");
	r = get_status(f);
	Pemba__V1__GetMigrationStatusResponse *st = (void *)r.resp;
	assert_true(st->read_only);
	assert_int_equal(st->n_deprecations, 0);
	done(&r);
	free_fixture(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        stored_read_only_makes_writes_unavailable_and_reads_work),
	    cmocka_unit_test(
	        serve_read_only_forces_writes_off_but_admin_calls_work),
	    cmocka_unit_test(reject_deprecation_is_failed_precondition),
	    cmocka_unit_test(
	        warn_deprecation_writes_and_logs_one_line_per_write),
	    cmocka_unit_test(serve_testing_keeps_settings_per_token),
	    cmocka_unit_test(
	        deprecated_names_are_counted_per_caller_and_method),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
