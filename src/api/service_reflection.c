/*
 * service_reflection.c -- gRPC server reflection,
 * grpc.reflection.v1.ServerReflection and grpc.reflection.v1alpha's (the
 * same messages under the older name, still what many clients ask for
 * first), so grpcurl, grpcui and other reflection clients work without
 * pemba's .proto files.
 *
 * ServerReflectionInfo is one bidirectional stream: one response per
 * request, in order.  Answers come from the embedded descriptor set
 * (reflection.h); a file response carries the file asked for and those of
 * its transitive dependencies this stream has not sent yet (as grpc-go
 * does).  Failures of one request (unknown file or symbol, extensions:
 * pemba's API defines none) are an error_response in the stream, which
 * goes on; only a message that does not decode ends it
 * (INVALID_ARGUMENT).  The stream is event-driven (grpc.h, "suspended
 * calls"): a client that keeps it open idle holds no worker.
 *
 * Authentication: none, as SpiceDB (which registers reflection behind
 * grpcutil's authless interceptor): the API's shape is public; the
 * server's auth hooks let these paths through (src/server/server.c,
 * src/proxy/proxy.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/reflection.h"
#include "api/services.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "util/error.h"
#include "util/xalloc.h"

/* One stream between steps. */
typedef struct reflection_stream {
	const reflection_index *ix;
	char **services; /* sorted, unique: what list_services answers */
	size_t nservices;
	bool *sent;    /* per file: sent on this stream */
	size_t *files; /* scratch for reflection_file_closure */
} reflection_stream;

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The services of a dispatch table: "/pkg.Service/Method" -> "pkg.Service",
 * each once, sorted. */
static void collect_services(reflection_stream *rs, const grpc_method *table,
                             size_t n)
{
	rs->services = xcalloc(n + 1, sizeof(*rs->services));
	for (size_t i = 0; i < n; i++) {
		const char *path = table[i].path;
		const char *slash =
		    path && path[0] == '/' ? strchr(path + 1, '/') : NULL;
		if (!slash)
			continue;
		size_t len = (size_t)(slash - path - 1);
		bool seen = false;
		for (size_t j = 0; j < rs->nservices && !seen; j++)
			seen = strlen(rs->services[j]) == len &&
			       memcmp(rs->services[j], path + 1, len) == 0;
		if (seen)
			continue;
		char *name = xmalloc(len + 1);
		memcpy(name, path + 1, len);
		name[len] = '\0';
		rs->services[rs->nservices++] = name;
	}
	qsort(rs->services, rs->nservices, sizeof(*rs->services), cmp_str);
}

static void stream_free(reflection_stream *rs)
{
	for (size_t i = 0; i < rs->nservices; i++)
		free(rs->services[i]);
	free(rs->services);
	free(rs->sent);
	free(rs->files);
	free(rs);
}

/* ===================================================================== */
/* One request, one response                                             */
/* ===================================================================== */

typedef Grpc__Reflection__V1__ServerReflectionRequest request_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse response_t;

static void set_error(response_t *resp, Grpc__Reflection__V1__ErrorResponse *e,
                      int code, const char *message)
{
	e->error_code = code;
	e->error_message = (char *)message;
	resp->message_response_case =
	    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
	resp->error_response = e;
}

/* Answers req on the call.  0, or negative when the call is gone. */
static int answer(grpc_call *call, reflection_stream *rs, request_t *req)
{
	response_t resp =
	    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
	Grpc__Reflection__V1__ErrorResponse error =
	    GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
	Grpc__Reflection__V1__FileDescriptorResponse files =
	    GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
	Grpc__Reflection__V1__ListServiceResponse list =
	    GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
	Grpc__Reflection__V1__ExtensionNumberResponse numbers =
	    GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
	ProtobufCBinaryData *blobs = NULL;
	Grpc__Reflection__V1__ServiceResponse *services = NULL;
	Grpc__Reflection__V1__ServiceResponse **service_ptrs = NULL;
	char message[384];
	resp.valid_host = req->host ? req->host : (char *)"";
	resp.original_request = req;

	long file = -1;
	reflection_kind kind;
	switch (req->message_request_case) {
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
		file = reflection_find_file(rs->ix, req->file_by_filename);
		if (file < 0) {
			snprintf(message, sizeof(message),
			         "file not found: %.300s",
			         req->file_by_filename);
			set_error(&resp, &error, GRPC_STATUS_NOT_FOUND,
			          message);
		}
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
		file = reflection_find_symbol(
		    rs->ix, req->file_containing_symbol, NULL);
		if (file < 0) {
			snprintf(message, sizeof(message),
			         "symbol not found: %.300s",
			         req->file_containing_symbol);
			set_error(&resp, &error, GRPC_STATUS_NOT_FOUND,
			          message);
		}
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
		const Grpc__Reflection__V1__ExtensionRequest *x =
		    req->file_containing_extension;
		snprintf(message, sizeof(message),
		         "extension not found: %.300s field %d (pemba's API "
		         "defines no extensions)",
		         x && x->containing_type ? x->containing_type : "",
		         x ? x->extension_number : 0);
		set_error(&resp, &error, GRPC_STATUS_NOT_FOUND, message);
		break;
	}
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
		const char *type = req->all_extension_numbers_of_type;
		if (reflection_find_symbol(rs->ix, type, &kind) < 0 ||
		    kind != REFLECTION_MESSAGE) {
			snprintf(message, sizeof(message),
			         "message type not found: %.300s", type);
			set_error(&resp, &error, GRPC_STATUS_NOT_FOUND,
			          message);
			break;
		}
		numbers.base_type_name =
		    (char *)(type[0] == '.' ? type + 1 : type);
		resp.message_response_case =
		    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
		resp.all_extension_numbers_response = &numbers;
		break;
	}
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
		services = xcalloc(rs->nservices + 1, sizeof(*services));
		service_ptrs =
		    xcalloc(rs->nservices + 1, sizeof(*service_ptrs));
		for (size_t i = 0; i < rs->nservices; i++) {
			services[i] = (Grpc__Reflection__V1__ServiceResponse)
			    GRPC__REFLECTION__V1__SERVICE_RESPONSE__INIT;
			services[i].name = rs->services[i];
			service_ptrs[i] = &services[i];
		}
		list.n_service = rs->nservices;
		list.service = service_ptrs;
		resp.message_response_case =
		    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
		resp.list_services_response = &list;
		break;
	default:
		set_error(&resp, &error, GRPC_STATUS_INVALID_ARGUMENT,
		          "empty request: set one of file_by_filename, "
		          "file_containing_symbol, file_containing_extension, "
		          "all_extension_numbers_of_type, list_services");
		break;
	}
	if (file >= 0) {
		size_t n = reflection_file_closure(rs->ix, (size_t)file,
		                                   rs->sent, rs->files);
		blobs = xcalloc(n, sizeof(*blobs));
		for (size_t i = 0; i < n; i++) {
			const uint8_t *data;
			reflection_file_bytes(rs->ix, rs->files[i], &data,
			                      &blobs[i].len);
			blobs[i].data = (uint8_t *)data;
		}
		files.n_file_descriptor_proto = n;
		files.file_descriptor_proto = blobs;
		resp.message_response_case =
		    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
		resp.file_descriptor_response = &files;
	}
	int rc = svc_send(call, &resp.base);
	free(blobs);
	free(services);
	free(service_ptrs);
	return rc;
}

/* ===================================================================== */
/* The stream                                                            */
/* ===================================================================== */

static grpc_step reflection_step(grpc_call *call, void *arg)
{
	reflection_stream *rs = arg;
	int64_t began = svc_step_begin();
	for (;;) {
		if (!grpc_call_writable(call) || svc_step_expired(began))
			return GRPC_STEP_MORE;
		const uint8_t *data;
		size_t len;
		int rc = grpc_call_try_read(call, &data, &len);
		if (rc == GRPC_EAGAIN)
			return GRPC_STEP_WAIT;
		if (rc < 0)
			return GRPC_STEP_DONE; /* the transport finished it */
		if (rc == 0) {
			grpc_call_finish(call, GRPC_STATUS_OK, NULL);
			return GRPC_STEP_DONE;
		}
		/* v1alpha's messages have v1's fields and numbers. */
		request_t *req;
		pemba_error err = {0};
		if (svc_unpack(
		        &grpc__reflection__v1__server_reflection_request__descriptor,
		        data, len, (ProtobufCMessage **)&req, &err) != 0) {
			svc_finish_error(call, &err);
			error_clear(&err);
			return GRPC_STEP_DONE;
		}
		rc = answer(call, rs, req);
		grpc__reflection__v1__server_reflection_request__free_unpacked(
		    req, NULL);
		if (rc < 0)
			return GRPC_STEP_DONE;
	}
}

static void reflection_release(grpc_call *call, void *arg)
{
	stream_free(arg);
}

void svc_reflection_serve(grpc_call *call, const grpc_method *table, size_t n)
{
	const reflection_index *ix = reflection_index_embedded();
	if (!ix) {
		grpc_call_finish(call, GRPC_STATUS_INTERNAL,
		                 "the embedded descriptor set is broken");
		return;
	}
	reflection_stream *rs = xcalloc(1, sizeof(*rs));
	rs->ix = ix;
	collect_services(rs, table, n);
	rs->sent = xcalloc(reflection_file_count(ix), sizeof(*rs->sent));
	rs->files = xcalloc(reflection_file_count(ix), sizeof(*rs->files));
	if (grpc_call_suspend(call, reflection_step, reflection_release, rs) !=
	    0) {
		stream_free(rs);
		grpc_call_finish(call, GRPC_STATUS_INTERNAL,
		                 "could not start the stream");
	}
}

bool svc_reflection_path(const char *path)
{
	return path && (strcmp(path, SVC_REFLECTION_V1_PATH) == 0 ||
	                strcmp(path, SVC_REFLECTION_V1ALPHA_PATH) == 0);
}

/* pemba serve / serve-testing: the services are those of the dispatch
 * table services_methods builds for this backend. */
static void handle_reflection(grpc_call *call, void *ctx)
{
	grpc_method table[SERVICES_MAX_METHODS];
	size_t n = services_methods(ctx, table, SERVICES_MAX_METHODS);
	svc_reflection_serve(call, table, n);
}

size_t svc_reflection_methods(svc_backend *b, grpc_method *out)
{
	out[0] =
	    (grpc_method){SVC_REFLECTION_V1_PATH, GRPC_METHOD_BIDI_STREAMING,
	                  handle_reflection, b};
	out[1] =
	    (grpc_method){SVC_REFLECTION_V1ALPHA_PATH,
	                  GRPC_METHOD_BIDI_STREAMING, handle_reflection, b};
	return 2;
}
