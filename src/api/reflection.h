/*
 * reflection.h -- the index behind gRPC server reflection
 * (grpc.reflection.v1 and v1alpha ServerReflection, service_reflection.c).
 *
 * The build compiles every .proto file of the API (src/api/proto, with the
 * well-known types they import) into one serialized
 * google.protobuf.FileDescriptorSet and embeds it in the binary
 * (`pemba_descriptor_set`, CMakeLists.txt).  The index parses it once: for
 * each file its name, its FileDescriptorProto bytes exactly as protoc
 * wrote them, and its dependencies; and every fully-qualified symbol the
 * file defines (package-qualified services, methods, messages, enums,
 * nested messages and enums, fields, enum values, oneofs) with the file
 * that defines it, sorted for binary search.
 *
 * The index is immutable after construction, so any number of threads may
 * read it at once.
 */
#ifndef PEMBA_API_REFLECTION_H
#define PEMBA_API_REFLECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pemba.h"

typedef struct reflection_index reflection_index;

/* What a symbol names. */
typedef enum reflection_kind {
	REFLECTION_SERVICE,
	REFLECTION_METHOD,
	REFLECTION_MESSAGE,
	REFLECTION_ENUM,
	REFLECTION_FIELD,
	REFLECTION_ENUM_VALUE,
	REFLECTION_ONEOF,
} reflection_kind;

/* Builds an index from a serialized FileDescriptorSet (the bytes are
 * copied).  0 and *out (free with reflection_index_free), or PEMBA_EINVAL
 * with err naming the problem: malformed bytes, a file without a name, two
 * files of one name, a dependency that is not in the set. */
int reflection_index_new(const uint8_t *set, size_t len, reflection_index **out,
                         pemba_error *err);
void reflection_index_free(reflection_index *index);

/* The index of the embedded descriptor set, built on first use (thread
 * safe) and kept for the life of the process; NULL only if the embedded
 * set is broken (a build error). */
const reflection_index *reflection_index_embedded(void);

size_t reflection_file_count(const reflection_index *index);
/* A file's name ("authzed/api/v1/core.proto") and its serialized
 * FileDescriptorProto; 0 <= file < reflection_file_count. */
const char *reflection_file_name(const reflection_index *index, size_t file);
void reflection_file_bytes(const reflection_index *index, size_t file,
                           const uint8_t **data, size_t *len);

/* The file of that name, or -1. */
long reflection_find_file(const reflection_index *index, const char *name);

/* The file defining a fully-qualified symbol (no leading dot;
 * "authzed.api.v1.PermissionsService.CheckPermission"), or -1; *kind (may
 * be NULL) receives what it names. */
long reflection_find_symbol(const reflection_index *index, const char *symbol,
                            reflection_kind *kind);

/* The answer to a file request: `file` followed by those of its transitive
 * dependencies not yet marked in sent[] (one flag per file, updated),
 * each once.  `file` itself is always included (and marked).  Writes file
 * numbers into out (room for reflection_file_count entries) and returns
 * how many. */
size_t reflection_file_closure(const reflection_index *index, size_t file,
                               bool *sent, size_t *out);

/* ===================================================================== */
/* The service (service_reflection.c)                                    */
/* ===================================================================== */

#include "api/grpc.h"

#define SVC_REFLECTION_V1_PATH                                                 \
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define SVC_REFLECTION_V1ALPHA_PATH                                            \
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

/* True for the paths of both reflection services: the auth hooks let them
 * through without a key, as SpiceDB does. */
bool svc_reflection_path(const char *path);

/* Serves one ServerReflectionInfo call; list_services answers the services
 * of `table` (n rows; read now, need not outlive the call).  For servers
 * with their own dispatch table (`pemba proxy`). */
void svc_reflection_serve(grpc_call *call, const grpc_method *table, size_t n);

/* The two rows of `pemba serve` / `serve-testing` (ctx: the backend,
 * whose services_methods table list_services answers). */
struct svc_backend;
size_t svc_reflection_methods(struct svc_backend *b, grpc_method *out);

#endif
