/*
 * status_map.c -- pemba error codes to gRPC status codes, in one place.
 *
 * The choices follow what SpiceDB answers for the same situation:
 *
 *   PEMBA_EINVAL        INVALID_ARGUMENT    malformed input
 *   PEMBA_EPRECONDITION FAILED_PRECONDITION unknown definition/relation,
 *                                           failed write precondition,
 *                                           schema type errors
 *   PEMBA_EEXISTS       ALREADY_EXISTS      CREATE of an existing one
 *   PEMBA_ENOTFOUND     NOT_FOUND           ReadSchema before any schema
 *   PEMBA_EDEPTH        FAILED_PRECONDITION "max depth exceeded" (SpiceDB)
 *   PEMBA_EREVISION     OUT_OF_RANGE        SpiceDB's code for a revision
 *                                           that expired (GC) or is unknown
 *   PEMBA_ELIMIT        INVALID_ARGUMENT    SpiceDB: too many updates /
 *                                           preconditions, delete over the
 *                                           limit without partial deletion
 *   PEMBA_EUNSUPPORTED  UNIMPLEMENTED       a feature pemba lacks (caveats,
 *                                           until they land):
 *                                           the request may be valid, this
 *                                           server cannot do it
 *   PEMBA_EREADONLY     UNAVAILABLE         as SpiceDB in read-only mode
 *   PEMBA_EIO           UNAVAILABLE         datastore trouble; retryable
 *   PEMBA_ENOMEM        RESOURCE_EXHAUSTED
 *   PEMBA_EVERSION      FAILED_PRECONDITION datastore layout mismatch
 *   anything else       INTERNAL
 */
#include <stdarg.h>
#include <stdio.h>

#include "api/services.h"

int svc_status_from_code(int code)
{
	switch (code) {
	case PEMBA_OK:
		return GRPC_STATUS_OK;
	case PEMBA_EINVAL:
		return GRPC_STATUS_INVALID_ARGUMENT;
	case PEMBA_EPRECONDITION:
		return GRPC_STATUS_FAILED_PRECONDITION;
	case PEMBA_EEXISTS:
		return GRPC_STATUS_ALREADY_EXISTS;
	case PEMBA_ENOTFOUND:
		return GRPC_STATUS_NOT_FOUND;
	case PEMBA_EDEPTH:
		return GRPC_STATUS_FAILED_PRECONDITION;
	case PEMBA_EREVISION:
		return GRPC_STATUS_OUT_OF_RANGE;
	case PEMBA_ELIMIT:
		return GRPC_STATUS_INVALID_ARGUMENT;
	case PEMBA_EUNSUPPORTED:
		return GRPC_STATUS_UNIMPLEMENTED;
	case PEMBA_EREADONLY:
		return GRPC_STATUS_UNAVAILABLE;
	case PEMBA_EIO:
		return GRPC_STATUS_UNAVAILABLE;
	case PEMBA_ENOMEM:
		return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case PEMBA_EVERSION:
		return GRPC_STATUS_FAILED_PRECONDITION;
	default:
		return GRPC_STATUS_INTERNAL;
	}
}

void svc_finish_error(grpc_call *call, const pemba_error *err)
{
	int status = svc_status_from_code(err->code);
	if (status == GRPC_STATUS_OK)
		status = GRPC_STATUS_INTERNAL; /* an error without a code */
	const char *message =
	    err->message[0] ? err->message : pemba_strerror(err->code);
	grpc_call_finish(call, status, message);
}

void svc_fail(grpc_call *call, int status, const char *fmt, ...)
{
	char message[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	grpc_call_finish(call, status, message);
}
