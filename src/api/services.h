/*
 * services.h -- the gRPC service handlers: authzed.api.v1 SchemaService,
 * PermissionsService, ExperimentalService, WatchService and
 * grpc.health.v1.Health, on top of the transport (grpc.h) and the public
 * API (pemba.h).
 *
 * The handlers do not know where datastores come from: a server supplies a
 * `svc_backend` that lends a pemba_db handle to each call (`pemba serve`:
 * a pool of handles over one datastore; `pemba serve-testing`: one store
 * per bearer token).  services_methods() builds the dispatch table the
 * transport needs.
 *
 * The second half of this header is internal to src/api/service_*.c and
 * status_map.c: request plumbing, Consistency, ZedTokens, conversions.
 */
#ifndef PEMBA_API_SERVICES_H
#define PEMBA_API_SERVICES_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "api/grpc.h"
#include "pemba.h"

/* ===================================================================== */
/* Backend: where a call's datastore handle comes from                   */
/* ===================================================================== */

enum {
	/* The call keeps the handle for a long time (Watch): the backend
	 * should not take it from the pool that serves short calls. */
	SVC_ACQUIRE_LONG = 1 << 0,
};

typedef struct svc_backend {
	/* Lends a handle for `call` (the backend may look at its metadata,
	 * e.g. the bearer token).  Returns 0 and *out, or a gRPC status code
	 * with *message a static string for grpc-message.  Thread-safe. */
	int (*acquire)(void *ctx, grpc_call *call, unsigned flags,
	               pemba_db **out, const char **message);
	/* Returns a handle lent by acquire (same call, same flags). */
	void (*release)(void *ctx, grpc_call *call, unsigned flags,
	                pemba_db *db);
	void *ctx;
	/* Writes are refused with UNAVAILABLE (`--read-only`). */
	bool read_only;
	/* Where handlers report what an operator should see (writes to
	 * deprecated relations, level 1); NULL: nowhere.  Thread-safe. */
	grpc_log_fn log;
	void *log_ctx;
} svc_backend;

#define SERVICES_MAX_METHODS 48

/* Writes the dispatch table of every implemented RPC into out[0..cap) and
 * returns the number of rows.  Each row's ctx is `backend`, which must
 * outlive the server. */
size_t services_methods(svc_backend *backend, grpc_method *out, size_t cap);

/* The gRPC status for a pemba_code (status_map.c): the one place where
 * that mapping lives. */
int svc_status_from_code(int pemba_code);

/* ===================================================================== */
/* Internal: shared by the handlers                                      */
/* ===================================================================== */

#include "api/zedtoken.h"
#include "authzed/api/v1/core.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "util/arena.h"

/* One call in progress: its request, its handle. */
typedef struct svc_request {
	grpc_call *call;
	svc_backend *backend;
	unsigned flags;
	pemba_db *db;              /* NULL until acquired */
	ProtobufCMessage *message; /* the unpacked request, or NULL */
} svc_request;

/* Starts a unary or server-streaming call: reads and unpacks the request
 * (malformed bytes -> INVALID_ARGUMENT), then acquires a handle.  Returns 0
 * on success; otherwise the call is finished and everything released. */
int svc_begin(grpc_call *call, void *ctx, const ProtobufCMessageDescriptor *d,
              unsigned flags, svc_request *req);

/* Starts a client-streaming call: only acquires the handle. */
int svc_begin_stream(grpc_call *call, void *ctx, unsigned flags,
                     svc_request *req);

/* Releases the handle and frees the request.  Does not finish the call. */
void svc_end(svc_request *req);

/* Finishes the call with the status for err (status_map.c). */
void svc_finish_error(grpc_call *call, const pemba_error *err);

/* Finishes with `status` and a printf message. */
void svc_fail(grpc_call *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Packs and sends a response message.  0, or negative when the call is
 * gone (the handler then just stops). */
int svc_send(grpc_call *call, const ProtobufCMessage *m);

/* Unary success: sends m and finishes OK. */
void svc_reply(grpc_call *call, const ProtobufCMessage *m);

/* Finishes with UNAVAILABLE when the backend is read-only; returns 1 then. */
int svc_refuse_write(svc_request *req);

/* A pemba_deprecation_fn for write options: logs the warning through
 * the backend's log (ctx is the svc_backend), one line per deprecated
 * relation a write touched (service_migration_admin.c). */
void svc_log_deprecation(void *ctx, const pemba_deprecation_warning *w);

/* The revision a read runs at, from a Consistency (NULL: minimize
 * latency).  minimize_latency / fully_consistent / missing: the head;
 * at_least_as_fresh: the head once the token is validated (a token newer
 * than the head is PEMBA_EREVISION); at_exact_snapshot: the token's
 * revision.  The result is explicit (never 0 unless the datastore is
 * empty), so responses can name it in their ZedToken. */
int svc_resolve_consistency(pemba_db *db,
                            const Authzed__Api__V1__Consistency *consistency,
                            pemba_revision *at, pemba_error *err);

/* A ZedToken message for rev, allocated in the caller's buffer. */
typedef struct svc_zedtoken {
	Authzed__Api__V1__ZedToken msg;
	char text[ZEDTOKEN_BUFSIZE];
} svc_zedtoken;
Authzed__Api__V1__ZedToken *svc_zedtoken_make(svc_zedtoken *zt, pemba_db *db,
                                              pemba_revision rev);

/* Converts a wire relationship to pemba's.  The strings point into `rel`'s,
 * except the caveat context: the Struct is written as JSON object text
 * allocated in `a` (so it lives until the caller resets the arena); an
 * absent or empty context becomes NULL.  PEMBA_EINVAL with a message
 * naming `where` when a required part is missing. */
int svc_relationship_from_proto(const Authzed__Api__V1__Relationship *rel,
                                const char *where, arena *a,
                                pemba_relationship *out, pemba_error *err);

/* A caveat context (CheckPermission's `context`, ...) as JSON object text
 * allocated in `a`; NULL for an absent or empty Struct. */
const char *svc_context_from_proto(const Google__Protobuf__Struct *context,
                                   arena *a);

/* A wire relationship built from pemba's; strings are copied into heap
 * memory owned by the result: free with svc_relationship_free.  A caveated
 * relationship gets optional_caveat with its name and its context parsed
 * back into a Struct (an empty Struct when it has none, as SpiceDB
 * answers). */
Authzed__Api__V1__Relationship *
svc_relationship_to_proto(const pemba_relationship *rel);
void svc_relationship_free(Authzed__Api__V1__Relationship *rel);

/* Converts a RelationshipFilter.  *prefix_out receives the resource id
 * prefix ("" if none), which pemba_filter cannot express: the caller
 * filters on it.  Validation: resource type required unless
 * allow_no_resource_type; empty strings mean "any". */
int svc_filter_from_proto(const Authzed__Api__V1__RelationshipFilter *f,
                          bool allow_no_resource_type, pemba_filter *out,
                          const char **prefix_out, pemba_error *err);

/* Converts a list of preconditions into out (caller allocates n). */
int svc_preconditions_from_proto(Authzed__Api__V1__Precondition *const *pre,
                                 size_t n, pemba_precondition *out,
                                 pemba_error *err);

/* Bearer token of the call ("" when none or not a bearer header). */
const char *svc_bearer_token(grpc_call *call, size_t *len);

/* The handlers of each service file. */
size_t svc_schema_methods(svc_backend *b, grpc_method *out);
size_t svc_permissions_methods(svc_backend *b, grpc_method *out);
size_t svc_experimental_methods(svc_backend *b, grpc_method *out);
size_t svc_watch_methods(svc_backend *b, grpc_method *out);
size_t svc_health_methods(svc_backend *b, grpc_method *out);
/* pemba.v1.MigrationService, in three files by concern: schema changes
 * (dry run, plan), administration (read-only, deprecations), data
 * (copy, verify). */
size_t svc_migration_schema_methods(svc_backend *b, grpc_method *out);
size_t svc_migration_admin_methods(svc_backend *b, grpc_method *out);
size_t svc_migration_data_methods(svc_backend *b, grpc_method *out);

/* Implementations shared between PermissionsService and
 * ExperimentalService: BulkImportRelationships, BulkExportRelationships
 * and BulkCheckPermission have the same field numbers and types as
 * ImportBulkRelationships, ExportBulkRelationships and
 * CheckBulkPermissions (the v1 messages only add fields the server never
 * sets), so the same code serves both names. */
void svc_handle_import(grpc_call *call, void *ctx);
void svc_handle_export(grpc_call *call, void *ctx);
void svc_handle_check_bulk(grpc_call *call, void *ctx);

#endif
