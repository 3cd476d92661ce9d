/*
 * test_reflection_index.c -- the index behind gRPC server reflection
 * (src/api/reflection.c): the embedded descriptor set holds every file of
 * the API with its imports; symbols of every kind resolve to the file that
 * defines them; a file's answer carries its transitive dependencies once
 * per stream; broken sets are refused with a message.  The service itself
 * is tested through a real reflection client (tests/reflection).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/reflection.h"
#include "api/services.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

static const char *file_of(const reflection_index *ix, const char *symbol,
                           reflection_kind *kind)
{
	long f = reflection_find_symbol(ix, symbol, kind);
	return f < 0 ? NULL : reflection_file_name(ix, (size_t)f);
}

static void test_embedded_set_has_every_api_file(void **state)
{
	const reflection_index *ix = reflection_index_embedded();
	assert_non_null(ix);
	assert_ptr_equal(ix, reflection_index_embedded()); /* built once */
	static const char *const files[] = {
	    "authzed/api/v1/core.proto",
	    "authzed/api/v1/debug.proto",
	    "authzed/api/v1/permission_service.proto",
	    "authzed/api/v1/schema_service.proto",
	    "authzed/api/v1/watch_service.proto",
	    "authzed/api/v1/experimental_service.proto",
	    "grpc/health/v1/health.proto",
	    "grpc/reflection/v1/reflection.proto",
	    "grpc/reflection/v1alpha/reflection.proto",
	    "pemba/v1/migration_service.proto",
	    "google/protobuf/struct.proto", /* an import */
	    "google/protobuf/timestamp.proto",
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		long f = reflection_find_file(ix, files[i]);
		if (f < 0)
			fail_msg("%s is not in the embedded set", files[i]);
		/* The bytes are that file's FileDescriptorProto. */
		const uint8_t *data;
		size_t len;
		reflection_file_bytes(ix, (size_t)f, &data, &len);
		Google__Protobuf__FileDescriptorProto *fd =
		    google__protobuf__file_descriptor_proto__unpack(NULL, len,
		                                                    data);
		assert_non_null(fd);
		assert_string_equal(fd->name, files[i]);
		google__protobuf__file_descriptor_proto__free_unpacked(fd,
		                                                       NULL);
	}
	assert_int_equal(reflection_find_file(ix, "no/such.proto"), -1);
	assert_int_equal(reflection_find_file(ix, NULL), -1);
	/* descriptor.proto is compiled for the index, not served. */
	assert_int_equal(
	    reflection_find_file(ix, "google/protobuf/descriptor.proto"), -1);
}

static void test_symbols_of_every_kind_resolve(void **state)
{
	const reflection_index *ix = reflection_index_embedded();
	reflection_kind k;
	assert_string_equal(
	    file_of(ix, "authzed.api.v1.PermissionsService", &k),
	    "authzed/api/v1/permission_service.proto");
	assert_int_equal(k, REFLECTION_SERVICE);
	assert_string_equal(
	    file_of(ix, "authzed.api.v1.PermissionsService.CheckPermission",
	            &k),
	    "authzed/api/v1/permission_service.proto");
	assert_int_equal(k, REFLECTION_METHOD);
	assert_string_equal(file_of(ix, "authzed.api.v1.ObjectReference", &k),
	                    "authzed/api/v1/core.proto");
	assert_int_equal(k, REFLECTION_MESSAGE);
	/* Nested enum, its value (in the enclosing scope), a field, a
	 * oneof; a leading dot as in type references. */
	assert_string_equal(
	    file_of(ix, "authzed.api.v1.CheckPermissionResponse.Permissionship",
	            &k),
	    "authzed/api/v1/permission_service.proto");
	assert_int_equal(k, REFLECTION_ENUM);
	assert_non_null(file_of(ix,
	                        "authzed.api.v1.CheckPermissionResponse."
	                        "PERMISSIONSHIP_HAS_PERMISSION",
	                        &k));
	assert_int_equal(k, REFLECTION_ENUM_VALUE);
	assert_non_null(file_of(
	    ix, "authzed.api.v1.CheckPermissionRequest.with_tracing", &k));
	assert_int_equal(k, REFLECTION_FIELD);
	assert_string_equal(file_of(ix, ".authzed.api.v1.CheckDebugTrace", &k),
	                    "authzed/api/v1/debug.proto");
	assert_string_equal(file_of(ix, "grpc.health.v1.Health.Check", &k),
	                    "grpc/health/v1/health.proto");
	assert_string_equal(
	    file_of(ix, "grpc.reflection.v1alpha.ServerReflection", &k),
	    "grpc/reflection/v1alpha/reflection.proto");
	assert_non_null(file_of(ix, "pemba.v1.MigrationService", &k));
	assert_string_equal(file_of(ix, "google.protobuf.Struct", &k),
	                    "google/protobuf/struct.proto");
	/* Not symbols: a prefix, a package, nonsense. */
	assert_null(file_of(ix, "authzed.api.v1.PermissionsServic", &k));
	assert_null(file_of(ix, "authzed.api.v1", &k));
	assert_null(file_of(ix, "", &k));
	assert_null(file_of(ix, NULL, &k));
}

static void test_file_closure_sends_dependencies_once(void **state)
{
	const reflection_index *ix = reflection_index_embedded();
	size_t n = reflection_file_count(ix);
	bool *sent = calloc(n, sizeof(bool));
	size_t *out = calloc(n, sizeof(size_t));
	long ps =
	    reflection_find_file(ix, "authzed/api/v1/permission_service.proto");
	long core = reflection_find_file(ix, "authzed/api/v1/core.proto");
	long st = reflection_find_file(ix, "google/protobuf/struct.proto");
	assert_true(ps >= 0 && core >= 0 && st >= 0);
	size_t k = reflection_file_closure(ix, (size_t)ps, sent, out);
	assert_true(k >= 3);
	assert_int_equal(out[0], (size_t)ps); /* the file asked for first */
	bool has_core = false, has_struct = false;
	for (size_t i = 0; i < k; i++) {
		has_core |= out[i] == (size_t)core;
		has_struct |= out[i] == (size_t)st; /* a dependency's import */
		for (size_t j = 0; j < i; j++)
			assert_true(out[i] != out[j]);
	}
	assert_true(has_core && has_struct);
	/* On the same stream: core alone (its imports went already). */
	k = reflection_file_closure(ix, (size_t)core, sent, out);
	assert_int_equal(k, 1);
	assert_int_equal(out[0], (size_t)core);
	free(sent);
	free(out);
}

/* A set with one file; dep (may be NULL) its only import. */
static uint8_t *one_file_set(const char *name, const char *dep, size_t *len)
{
	Google__Protobuf__FileDescriptorProto f =
	    GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
	f.name = (char *)name;
	char *deps[1] = {(char *)dep};
	if (dep) {
		f.n_dependency = 1;
		f.dependency = deps;
	}
	Google__Protobuf__FileDescriptorProto *files[1] = {&f};
	Google__Protobuf__FileDescriptorSet set =
	    GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
	set.n_file = 1;
	set.file = files;
	*len = google__protobuf__file_descriptor_set__get_packed_size(&set);
	uint8_t *buf = malloc(*len);
	google__protobuf__file_descriptor_set__pack(&set, buf);
	return buf;
}

static void test_broken_sets_are_refused(void **state)
{
	reflection_index *ix = NULL;
	pemba_error err = {0};
	static const uint8_t garbage[] = {0x0a, 0x50, 0x01};
	assert_int_equal(
	    reflection_index_new(garbage, sizeof(garbage), &ix, &err),
	    PEMBA_EINVAL);
	assert_null(ix);
	assert_non_null(strstr(err.message, "malformed FileDescriptorSet"));
	err = (pemba_error){0};

	size_t len;
	uint8_t *set = one_file_set("a.proto", "missing.proto", &len);
	assert_int_equal(reflection_index_new(set, len, &ix, &err),
	                 PEMBA_EINVAL);
	assert_non_null(
	    strstr(err.message, "a.proto imports missing.proto, which is not"));
	err = (pemba_error){0};
	free(set);

	set = one_file_set("", NULL, &len);
	assert_int_equal(reflection_index_new(set, len, &ix, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "has no name"));
	err = (pemba_error){0};
	free(set);

	/* An empty set is a valid, empty index. */
	assert_int_equal(reflection_index_new(NULL, 0, &ix, &err), PEMBA_OK);
	assert_int_equal(reflection_file_count(ix), 0);
	assert_int_equal(reflection_find_symbol(ix, "a.B", NULL), -1);
	reflection_index_free(ix);
}

static void test_both_services_are_in_the_dispatch_table(void **state)
{
	svc_backend backend = {0};
	grpc_method methods[SERVICES_MAX_METHODS];
	size_t n = services_methods(&backend, methods, SERVICES_MAX_METHODS);
	assert_true(n < SERVICES_MAX_METHODS); /* room left: none cut off */
	int found = 0;
	for (size_t i = 0; i < n; i++)
		if (svc_reflection_path(methods[i].path)) {
			assert_int_equal(methods[i].kind,
			                 GRPC_METHOD_BIDI_STREAMING);
			found++;
		}
	assert_int_equal(found, 2);
	assert_ptr_equal(
	    svc_request_descriptor(SVC_REFLECTION_V1ALPHA_PATH),
	    &grpc__reflection__v1alpha__server_reflection_request__descriptor);
	assert_false(
	    svc_reflection_path("/grpc.reflection.v1.ServerReflection/"));
	assert_false(svc_reflection_path(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_embedded_set_has_every_api_file),
	    cmocka_unit_test(test_symbols_of_every_kind_resolve),
	    cmocka_unit_test(test_file_closure_sends_dependencies_once),
	    cmocka_unit_test(test_broken_sets_are_refused),
	    cmocka_unit_test(test_both_services_are_in_the_dispatch_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
