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
#include <stdint.h>

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
	/* Other processes may commit to the datastore (a file shared by
	 * several servers): Watch streams then also poll the head
	 * (acquire is called with call NULL for that).  False for
	 * serve-testing's private memory stores. */
	bool shared_datastore;
	/* serve-testing: a datastore per bearer token.  Reads do not look
	 * for deprecations then (one copy of the set cannot serve them
	 * all); writes still enforce them (core). */
	bool private_datastores;
	/* Set by the handlers (service_events.c); NULL until the first
	 * Watch.  Stopped by services_stop. */
	struct svc_events *events;
	/* The copy of the deprecation set and the usage counters
	 * (deprecation_usage.c); NULL until the first call that looks.
	 * Freed by services_stop. */
	struct svc_deprecations *deprecations;
	/* Whether the datastore answers, for grpc.health.v1 (0 SERVING,
	 * else -1 with *reason a string valid until the handler returns).
	 * Quick: never waits on the datastore.  NULL: always SERVING. */
	int (*datastore_health)(void *ctx, const char **reason);
} svc_backend;

#define SERVICES_MAX_METHODS 64

/* Writes the dispatch table of every implemented RPC into out[0..cap) and
 * returns the number of rows.  Each row's ctx is `backend`, which must
 * outlive the server. */
size_t services_methods(svc_backend *backend, grpc_method *out, size_t cap);

/* Stops what the handlers started in the background (the revision
 * notifier of Watch streams).  Call after grpc_server_run returned. */
void services_stop(svc_backend *backend);

/* The gRPC status for a pemba_code (status_map.c): the one place where
 * that mapping lives. */
int svc_status_from_code(int pemba_code);

/* The request message type of a method path
 * ("/authzed.api.v1.PermissionsService/CheckPermission"), from the
 * service descriptors of every service in the dispatch table; NULL for a
 * path no service declares.  For tests and fuzzers that build requests
 * for every method of services_methods(). */
const ProtobufCMessageDescriptor *svc_request_descriptor(const char *path);

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

/* The one way request bytes become a message: checks them with pb_guard
 * (nesting at most PB_GUARD_MAX_DEPTH; every string field, at every level,
 * valid UTF-8 without a NUL byte, so no string is truncated by protobuf-c's
 * C strings), then unpacks them as a d.  Returns 0 and *out (free with
 * protobuf_c_message_free_unpacked(*out, NULL)), or PEMBA_EINVAL with *out
 * NULL and err's message naming the problem: "invalid argument: field
 * updates[0].relationship.resource.object_id contains a NUL byte" / "... is
 * not valid UTF-8", "malformed <type>: messages nested more than 64 deep",
 * "malformed <type>: could not decode protobuf message".  Every handler
 * that unpacks request bytes goes through here (svc_begin and svc_read do). */
int svc_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data,
               size_t len, ProtobufCMessage **out, pemba_error *err);

/* Reads the next request of a client-streaming call and unpacks it with
 * svc_unpack.  Returns 1 and *out (free with
 * protobuf_c_message_free_unpacked), 0 when the client has half-closed, or
 * -1 when the call is over: the transport ended it, or the message was
 * refused and the call finished with INVALID_ARGUMENT. */
int svc_read(grpc_call *call, const ProtobufCMessageDescriptor *d,
             ProtobufCMessage **out);

/* Starts a unary or server-streaming call: reads the request and unpacks
 * it with svc_unpack (malformed bytes, bad strings -> INVALID_ARGUMENT),
 * then acquires a handle.  Returns 0 on success; otherwise the call is
 * finished and everything released. */
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

/* ===================================================================== */
/* Deprecation: finding the callers (deprecation_usage.c)                */
/* ===================================================================== */

/* How stale this server's copy of the deprecation set may get when
 * another process changes it (this server's own changes apply at once). */
#define SVC_DEPRECATIONS_POLL_MS 1000
/* Usage rows per deprecated target; later callers count as "other". */
#define SVC_USAGE_MAX_CALLERS 1024
#define SVC_USAGE_OTHER "other"
/* A caller's repeated use of a target is logged at most this often. */
#define SVC_USAGE_LOG_INTERVAL_MS 10000

/* Who wrote: the on_deprecated_ctx of write options. */
typedef struct svc_write_caller {
	svc_backend *backend;
	grpc_call *call;
} svc_write_caller;

/* A pemba_deprecation_fn for write options (ctx: a svc_write_caller
 * alive during the write): logs the warning through the backend's log
 * with the caller, one line per deprecated relation a write touched, and
 * counts the write as a use. */
void svc_log_deprecation(void *ctx, const pemba_deprecation_warning *w);

/* Notes that req's call names resource_type#name, a relation or a
 * permission (empty or NULL names: nothing to note).  When it is
 * deprecated, counts a use by the caller (peer address, key name) and
 * method, logs it (level 1: the first use per caller, method and target,
 * then at most every SVC_USAGE_LOG_INTERVAL_MS with a count), and in
 * REJECT mode, when `refuse`, returns PEMBA_EPRECONDITION with err
 * naming it.  PEMBA_OK otherwise.  Reads the set through req->db when
 * this server's copy is older than SVC_DEPRECATIONS_POLL_MS; with
 * nothing deprecated costs three atomic loads and a coarse clock read. */
int svc_deprecation_use(svc_request *req, const char *resource_type,
                        const char *name, bool refuse, pemba_error *err);

/* Re-reads the set through db now: after this server changed it. */
void svc_deprecations_reload(svc_backend *b, pemba_db *db);

/* One caller's uses of a deprecated target, counted by this process. */
typedef struct svc_usage_row {
	char peer[48];   /* IP address, or SVC_USAGE_OTHER */
	char key[72];    /* preshared key name, "" when none or unnamed */
	char method[64]; /* "CheckPermission", ... */
	uint64_t count;
	int64_t first_ms, last_ms; /* Unix ms */
} svc_usage_row;

/* Copies the usage rows of resource_type#name into *out (malloc'd; NULL
 * when none) and returns their number; *since_ms (may be NULL): when this
 * process began counting. */
size_t svc_deprecation_usage(svc_backend *b, const char *resource_type,
                             const char *name, svc_usage_row **out,
                             int64_t *since_ms);

/* Frees the copy and the counters (services_stop). */
void svc_deprecations_free(svc_backend *b);

/* Decodes a ZedToken a client sent: this datastore's own (checked as
 * zedtoken_decode_db), or another datastore's that a mirror copied here,
 * resolved as `mode` says (pemba_resolve_source_position); *foreign (may
 * be NULL) tells which. */
int svc_decode_token(pemba_db *db, const char *token, pemba_source_lookup mode,
                     pemba_revision *rev, bool *foreign, pemba_error *err);

/* The revision a read runs at, from a Consistency (NULL: minimize
 * latency).  minimize_latency / fully_consistent / missing: the head;
 * at_least_as_fresh: the head once the token is validated (a token newer
 * than the head is PEMBA_EREVISION); at_exact_snapshot: the token's
 * revision.  The result is explicit (never 0 unless the datastore is
 * empty), so responses can name it in their ZedToken. */
int svc_resolve_consistency(pemba_db *db,
                            const Authzed__Api__V1__Consistency *consistency,
                            pemba_revision *at, pemba_error *err);

/* True when the Consistency asks for the head with no token to validate
 * (minimize_latency, fully_consistent, missing): the read may then resolve
 * the head itself, inside its read transaction (one round trip fewer on
 * PostgreSQL than svc_resolve_consistency followed by a read at that
 * revision, which re-validates it). */
bool svc_consistency_is_head(const Authzed__Api__V1__Consistency *consistency);

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
 * memory owned by the result (one block with the messages: replace none
 * of its strings): free with svc_relationship_free.  A caveated
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

/* ===================================================================== */
/* Event-driven streams                                                  */
/* ===================================================================== */

/*
 * A streaming handler validates its request with a handle from
 * svc_begin, then hands the call over with svc_stream_start and returns:
 * the worker is free while the client reads slowly or nothing happens.
 * The transport then runs ops->step on a worker whenever the stream can
 * progress (grpc.h, "suspended calls"), each time with a handle borrowed
 * for that step only (SVC_ACQUIRE_LONG streams keep one handle for their
 * life instead, e.g. an import that is tied to its handle).  A step sends
 * until grpc_call_writable() turns false or svc_step_expired() says its
 * time slice is over, and returns GRPC_STEP_MORE to continue; it finishes
 * the call and returns GRPC_STEP_DONE at the end.  free_state runs once,
 * at the end or when the call is cancelled; the request message stays
 * valid (owned by the stream) until then.
 */
typedef struct svc_stream_ops {
	grpc_step (*step)(grpc_call *call, pemba_db *db, void *state);
	void (*free_state)(grpc_call *call, pemba_db *db, void *state);
} svc_stream_ops;

/* Hands req's call to the transport (see above).  The stream takes req's
 * message; a non-LONG req's handle is released (steps borrow their own).
 * `ops` must be static.  On return req is empty (svc_end is a no-op).  If
 * the call cannot be suspended, free_state is called at once. */
void svc_stream_start(svc_request *req, const svc_stream_ops *ops, void *state);

/* A step's time slice: starts when the step starts (svc_step_begin) and
 * lasts SVC_STEP_SLICE_MS, so one stream cannot hold a worker while
 * others wait. */
#define SVC_STEP_SLICE_MS 20
int64_t svc_step_begin(void);
bool svc_step_expired(int64_t began);

/* Revision events (service_events.c): Watch streams wait for a new
 * revision without a thread each.  Read the generation, look for
 * changes; when there are none, svc_events_wait(gen) registers the call
 * to be woken (grpc_call_wake) by the next commit of this process, or by
 * the next head change another process made (polled every
 * SVC_EVENTS_POLL_MS when backend->shared_datastore).  Returns false
 * when the generation moved since `gen` (look again at once).
 * svc_events_forget must run before the call is released. */
#define SVC_EVENTS_POLL_MS 100
struct svc_events *svc_events_get(svc_backend *backend);
uint64_t svc_events_generation(struct svc_events *ev);
bool svc_events_wait(struct svc_events *ev, grpc_call *call, uint64_t gen);
void svc_events_forget(struct svc_events *ev, grpc_call *call);

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
/* service_mirror.c: RecordSourcePosition, and the "pemba.mirror" key of
 * WriteRelationships' transaction metadata. */
size_t svc_mirror_methods(svc_backend *b, grpc_method *out);
struct foreign_token;
/* When metadata (may be NULL) has the "pemba.mirror" key: *found set and
 * *ft decoded from its "token" and "exact" fields; a malformed value is
 * PEMBA_EINVAL naming it. */
int svc_mirror_position(const Google__Protobuf__Struct *metadata,
                        struct foreign_token *ft, bool *found,
                        pemba_error *err);

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
