/*
 * service_mirror.c -- what `pemba mirror` tells the datastore it copies
 * into, so the source's ZedTokens are honoured after a move
 * (src/core/positions.c; design in src/api/README.md).
 *
 * - WriteRelationships whose transaction metadata has the key
 *   "pemba.mirror" = {"token": SOURCE_TOKEN, "exact": BOOL} records, in
 *   the write's own transaction, that the new revision holds that source
 *   revision (exactly, when "exact" is true: the whole source revision in
 *   this one write).  The metadata is stored and reported by Watch like
 *   any other.
 * - pemba.v1.MigrationService/RecordSourcePosition records a source
 *   revision as held by the head, without a new revision (a checkpoint:
 *   the source moved, nothing to apply).
 *
 * Anyone who may write may record positions: a false record can only
 * make a token of that source resolve to a revision of this datastore,
 * which the writer could have produced by writing anyway.
 */
#include <string.h>

#include "api/foreign_token.h"
#include "api/services.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/error.h"

#define MIRROR_KEY "pemba.mirror"

static const Google__Protobuf__Value *field(const Google__Protobuf__Struct *s,
                                            const char *name)
{
	for (size_t i = 0; s && i < s->n_fields; i++)
		if (s->fields[i]->key && strcmp(s->fields[i]->key, name) == 0)
			return s->fields[i]->value;
	return NULL;
}

int svc_mirror_position(const Google__Protobuf__Struct *metadata,
                        struct foreign_token *ft, bool *found, pemba_error *err)
{
	*found = false;
	const Google__Protobuf__Value *v = field(metadata, MIRROR_KEY);
	if (!v)
		return PEMBA_OK;
	if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: transaction metadata key "
		                 "\"" MIRROR_KEY "\" must be an object "
		                 "{\"token\": ZEDTOKEN, \"exact\": BOOL}");
	const Google__Protobuf__Value *tok = field(v->struct_value, "token");
	const Google__Protobuf__Value *exact = field(v->struct_value, "exact");
	if (!tok ||
	    tok->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE ||
	    !tok->string_value || !tok->string_value[0])
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: transaction metadata "
		                 "\"" MIRROR_KEY
		                 ".token\" must be the source's "
		                 "ZedToken (a non-empty string)");
	if (exact &&
	    exact->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid argument: transaction metadata "
		                 "\"" MIRROR_KEY ".exact\" must be a boolean");
	int rc = foreign_token_decode(tok->string_value,
	                              strlen(tok->string_value), ft, err);
	if (rc < 0)
		return rc;
	ft->pos.exact = exact && exact->bool_value;
	*found = true;
	return PEMBA_OK;
}

static void handle_record_source_position(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__record_source_position_request__descriptor, 0,
	              &req) != 0)
		return;
	if (svc_refuse_write(&req)) {
		svc_end(&req);
		return;
	}
	const Pemba__V1__RecordSourcePositionRequest *m =
	    (const Pemba__V1__RecordSourcePositionRequest *)req.message;
	pemba_error err = {0};
	foreign_token ft;
	int rc;
	if (!m->source_token || !m->source_token[0])
		rc = error_set(&err, PEMBA_EINVAL,
		               "invalid argument: source_token is empty");
	else
		rc = foreign_token_decode(m->source_token,
		                          strlen(m->source_token), &ft, &err);
	if (rc == 0) {
		/* The head holds everything the source had then, but other
		 * writes may have landed too: never exact. */
		ft.pos.exact = 0;
		rc = pemba_record_source_position(req.db, &ft.pos, &err);
	}
	if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		Pemba__V1__RecordSourcePositionResponse resp =
		    PEMBA__V1__RECORD_SOURCE_POSITION_RESPONSE__INIT;
		svc_reply(call, &resp.base);
	}
	svc_end(&req);
}

size_t svc_mirror_methods(svc_backend *b, grpc_method *out)
{
	out[0] =
	    (grpc_method){"/pemba.v1.MigrationService/RecordSourcePosition",
	                  GRPC_METHOD_UNARY, handle_record_source_position, b};
	return 1;
}
