/*
 * debug_trace.h -- a check's trace (pemba_check_trace) as SpiceDB's
 * authzed.api.v1.DebugInformation, for CheckPermission and
 * CheckBulkPermissions requests with with_tracing.
 *
 * One CheckDebugTrace per node: resource, permission, permission_type
 * (RELATION or PERMISSION), the request's subject, result, duration; a
 * node answered from the request's memo has was_cached_result, one with
 * children sub_problems; a caveated relationship read at the node gives
 * caveat_evaluation_info (name, expression, outcome, the context it was
 * evaluated with: the relationship's over the request's, and the missing
 * names); the earliest expiration read there optional_expires_at.
 */
#ifndef PEMBA_API_DEBUG_TRACE_H
#define PEMBA_API_DEBUG_TRACE_H

#include "authzed/api/v1/debug.pb-c.h"
#include "pemba.h"
#include "util/arena.h"

/* Builds the messages in `a`; the Structs of caveat contexts are kept in
 * the builder until svc_trace_builder_end (call it after packing). */
typedef struct svc_trace_builder {
	arena *a;
	const Authzed__Api__V1__SubjectReference *subject; /* the request's */
	const char *request_context; /* JSON object text or NULL */
	Google__Protobuf__Struct **owned;
	size_t nowned, cap;
} svc_trace_builder;

/* DebugInformation for `trace` (NULL: returns NULL) with schema_used. */
Authzed__Api__V1__DebugInformation *
svc_debug_information(svc_trace_builder *b, const pemba_check_trace *trace,
                      const char *schema_used);

void svc_trace_builder_end(svc_trace_builder *b);

#endif
