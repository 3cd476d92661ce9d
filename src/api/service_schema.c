/*
 * service_schema.c -- authzed.api.v1.SchemaService: ReadSchema and
 * WriteSchema.  (Reflection and DiffSchema are not implemented: the
 * transport answers UNIMPLEMENTED for methods not in the table.)
 */
#include <string.h>

#include "api/services.h"
#include "authzed/api/v1/schema_service.pb-c.h"

/* ReadSchema: the canonical text of the schema at the head. */
static void handle_read_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__read_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	pemba_error err = {0};
	pemba_revision at = 0;
	char *text = NULL;
	int rc = pemba_head_revision(req.db, &at, &err);
	if (rc == 0)
		rc = pemba_read_schema(req.db, at, &text, &err);
	if (rc == PEMBA_ENOTFOUND) {
		/* SpiceDB's wording for a datastore without a schema. */
		grpc_call_finish(call, GRPC_STATUS_NOT_FOUND,
		                 "No schema has been defined; please call "
		                 "WriteSchema to start");
	} else if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		Authzed__Api__V1__ReadSchemaResponse resp =
		    AUTHZED__API__V1__READ_SCHEMA_RESPONSE__INIT;
		svc_zedtoken zt;
		resp.schema_text = text;
		resp.read_at = svc_zedtoken_make(&zt, req.db, at);
		svc_reply(call, &resp.base);
		pemba_free(text);
	}
	svc_end(&req);
}

/* WriteSchema: parses, type-checks and stores the schema in a new
 * revision (SpiceDB's rules for what may change are core's business). */
static void handle_write_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__write_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	if (svc_refuse_write(&req)) {
		svc_end(&req);
		return;
	}
	const Authzed__Api__V1__WriteSchemaRequest *m =
	    (const Authzed__Api__V1__WriteSchemaRequest *)req.message;
	const char *text = m->schema ? m->schema : "";
	pemba_error err = {0};
	pemba_revision rev = 0;
	if (pemba_write_schema(req.db, text, strlen(text), &rev, &err) < 0) {
		svc_finish_error(call, &err);
	} else {
		Authzed__Api__V1__WriteSchemaResponse resp =
		    AUTHZED__API__V1__WRITE_SCHEMA_RESPONSE__INIT;
		svc_zedtoken zt;
		resp.written_at = svc_zedtoken_make(&zt, req.db, rev);
		svc_reply(call, &resp.base);
	}
	svc_end(&req);
}

size_t svc_schema_methods(svc_backend *b, grpc_method *out)
{
	out[0] = (grpc_method){"/authzed.api.v1.SchemaService/ReadSchema",
	                       GRPC_METHOD_UNARY, handle_read_schema, b};
	out[1] = (grpc_method){"/authzed.api.v1.SchemaService/WriteSchema",
	                       GRPC_METHOD_UNARY, handle_write_schema, b};
	return 2;
}
