/*
 * shadow.c -- the shadow side of `pemba proxy`: one bounded FIFO of jobs
 * (writes, sampled reads) filled by the workers after the primary answered,
 * drained by one thread over one connection to the shadow, which replays
 * each job and compares the shadow's answer with the primary's.
 *
 * One thread and one queue keep the shadow's writes in the order the
 * primary acknowledged them, and make every replayed read see the shadow
 * after the same writes the primary had applied when it answered (for
 * calls that were not concurrent).  Nothing here ever blocks a worker
 * beyond a short mutex hold: a full queue drops the job and counts it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "proxy/internal.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ===================================================================== */
/* Queue                                                                 */
/* ===================================================================== */

/* splitmix64: a well-mixed sequence from a counter, for sampling. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static bool sampled(pemba_proxy *p)
{
	double rate = p->o.shadow_read_sample;
	if (rate >= 1)
		return true;
	if (rate <= 0)
		return false;
	uint64_t seq =
	    __atomic_add_fetch(&p->sh.sample_seq, 1, __ATOMIC_RELAXED);
	double u = (double)(mix64(seq) >> 11) * (1.0 / 9007199254740992.0);
	return u < rate;
}

/* Counts a dropped job; a dropped write is logged (at most every 10 s,
 * with the count so far, so that an overload does not flood the log):
 * the shadow now lacks a write of the primary. */
void shadow_drop(pemba_proxy *p, const proxy_method *m)
{
	uint64_t n = PROXY_COUNT(p, dropped);
	if (m->cls != PROXY_WRITE && m->cls != PROXY_IMPORT)
		return;
	int64_t now = proxy_now_ns();
	int64_t last =
	    __atomic_load_n(&p->sh.last_drop_log_ns, __ATOMIC_RELAXED);
	if (last && now - last < 10 * (int64_t)1000000000)
		return;
	if (!__atomic_compare_exchange_n(&p->sh.last_drop_log_ns, &last, now,
	                                 false, __ATOMIC_RELAXED,
	                                 __ATOMIC_RELAXED))
		return;
	proxy_logf(p, 0,
	           "shadow queue full: %s dropped (%llu jobs dropped so "
	           "far); the shadow now lacks a write of the primary: "
	           "re-sync it before a cut-over",
	           m->name, (unsigned long long)n);
}

bool shadow_wants(pemba_proxy *p, const proxy_method *m)
{
	if (m->cls == PROXY_WRITE || m->cls == PROXY_IMPORT)
		return true;
	if (sampled(p))
		return true;
	PROXY_COUNT(p, sampled_out);
	return false;
}

void shadow_submit(pemba_proxy *p, const proxy_method *m,
                   const uint8_t *request, size_t request_len,
                   const uint8_t *response, size_t response_len)
{
	bool write = m->cls == PROXY_WRITE || m->cls == PROXY_IMPORT;
	size_t resp_len = write ? 0 : response_len;
	size_t total = request_len + resp_len;
	shadow *sh = &p->sh;
	pthread_mutex_lock(&sh->mu);
	bool full = sh->stopping || sh->count >= sh->max_count ||
	            sh->bytes + total > sh->max_bytes;
	pthread_mutex_unlock(&sh->mu);
	if (full) {
		shadow_drop(p, m);
		return;
	}
	/* Copy outside the lock; the bound is re-checked when linking. */
	shadow_job *job = xmalloc(sizeof(*job) + total + 2);
	job->next = NULL;
	job->method = m;
	job->request = (uint8_t *)(job + 1);
	memcpy(job->request, request, request_len);
	job->request_len = request_len;
	job->primary_response = NULL;
	job->primary_response_len = 0;
	job->retried = false;
	if (!write) {
		job->primary_response = job->request + request_len + 1;
		memcpy(job->primary_response, response, resp_len);
		job->primary_response[resp_len] = 0; /* lookups: text */
		job->primary_response_len = resp_len;
	}
	pthread_mutex_lock(&sh->mu);
	full = sh->stopping || sh->count >= sh->max_count ||
	       sh->bytes + total > sh->max_bytes;
	if (!full) {
		if (sh->tail)
			sh->tail->next = job;
		else
			sh->head = job;
		sh->tail = job;
		sh->count++;
		sh->bytes += total;
		PROXY_COUNT(p, queued);
		pthread_cond_signal(&sh->cv);
	}
	pthread_mutex_unlock(&sh->mu);
	if (full) {
		free(job);
		shadow_drop(p, m);
	}
}

/* ===================================================================== */
/* Replaying a job                                                       */
/* ===================================================================== */

/* The shadow's connection, (re)connected at most once a second: while the
 * shadow is down, jobs fail at once instead of each waiting for a
 * connect timeout. */
static grpc_client *shadow_client(pemba_proxy *p)
{
	shadow *sh = &p->sh;
	if (sh->client)
		return sh->client;
	int64_t now = proxy_now_ns();
	if (sh->down && now - sh->last_connect_fail_ns < 1000000000)
		return NULL;
	grpc_client_options co;
	proxy_client_options(&p->o.shadow, &co);
	co.connect_timeout_ms = p->o.shadow_timeout_ms;
	pemba_error err = {0};
	if (grpc_client_connect(&co, &sh->client, &err) != 0) {
		sh->client = NULL;
		sh->last_connect_fail_ns = proxy_now_ns();
		if (!sh->down)
			proxy_logf(p, 0,
			           "shadow %s unreachable: %s; its writes are "
			           "lost until it is back (re-sync it before a "
			           "cut-over)",
			           p->o.shadow.endpoint, err.message);
		sh->down = true;
		return NULL;
	}
	if (sh->down)
		proxy_logf(p, 2, "shadow %s reachable again",
		           p->o.shadow.endpoint);
	sh->down = false;
	return sh->client;
}

static const ProtobufCMessageDescriptor *
request_descriptor(const proxy_method *m)
{
	switch (m->cls) {
	case PROXY_CHECK:
		return &authzed__api__v1__check_permission_request__descriptor;
	case PROXY_CHECK_BULK:
		return &authzed__api__v1__check_bulk_permissions_request__descriptor;
	case PROXY_LOOKUP:
		return strstr(m->path, "LookupResources")
		           ? &authzed__api__v1__lookup_resources_request__descriptor
		           : &authzed__api__v1__lookup_subjects_request__descriptor;
	default:
		return NULL;
	}
}

/*
 * The request the shadow gets.  Writes: the client's bytes.  Reads with a
 * consistency field: the same request with fully_consistent, because a
 * ZedToken of the primary means nothing to the shadow, and
 * minimize_latency could read a shadow snapshot older than the writes
 * replayed before it.  Returns a malloc'd buffer, or NULL to send the
 * original bytes.
 */
static uint8_t *shadow_request(const proxy_method *m, const uint8_t *req,
                               size_t len, size_t *out_len, bool *was_full)
{
	*was_full = false;
	const ProtobufCMessageDescriptor *d = request_descriptor(m);
	if (!d)
		return NULL;
	ProtobufCMessage *msg = protobuf_c_message_unpack(d, NULL, len, req);
	if (!msg)
		return NULL;
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field_by_name(d, "consistency");
	uint8_t *out = NULL;
	if (f) {
		Authzed__Api__V1__Consistency full =
		    AUTHZED__API__V1__CONSISTENCY__INIT;
		full.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
		full.fully_consistent = 1;
		Authzed__Api__V1__Consistency **slot =
		    (void *)((char *)msg + f->offset);
		Authzed__Api__V1__Consistency *saved = *slot;
		*was_full =
		    saved &&
		    saved->requirement_case ==
		        AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
		*slot = &full;
		*out_len = protobuf_c_message_get_packed_size(msg);
		out = xmalloc(*out_len + 1);
		protobuf_c_message_pack(msg, out);
		*slot = saved;
	}
	protobuf_c_message_free_unpacked(msg, NULL);
	return out;
}

static const char *permissionship_name(int p)
{
	switch (p) {
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION:
		return "NO_PERMISSION";
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION:
		return "HAS_PERMISSION";
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION:
		return "CONDITIONAL_PERMISSION";
	default:
		return "UNSPECIFIED";
	}
}

/* "type:id#perm@type:id[#rel]" of a check, for the log. */
static void format_check(char *buf, size_t n,
                         const Authzed__Api__V1__ObjectReference *res,
                         const char *perm,
                         const Authzed__Api__V1__SubjectReference *sub)
{
	const Authzed__Api__V1__ObjectReference *so = sub ? sub->object : NULL;
	const char *rel =
	    sub && sub->optional_relation && *sub->optional_relation
	        ? sub->optional_relation
	        : NULL;
	snprintf(buf, n, "%s:%s#%s@%s:%s%s%s", res ? res->object_type : "?",
	         res ? res->object_id : "?", perm ? perm : "?",
	         so ? so->object_type : "?", so ? so->object_id : "?",
	         rel ? "#" : "", rel ? rel : "");
}

/* Missing caveat context: the same names in the same order. */
static bool same_partial(const Authzed__Api__V1__PartialCaveatInfo *a,
                         const Authzed__Api__V1__PartialCaveatInfo *b)
{
	size_t na = a ? a->n_missing_required_context : 0;
	size_t nb = b ? b->n_missing_required_context : 0;
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a->missing_required_context[i],
		           b->missing_required_context[i]) != 0)
			return false;
	return true;
}

/* Compares two CheckPermission answers; on a difference writes what
 * differs into why and returns false.  ZedTokens (checked_at) and debug
 * traces are not compared. */
static bool compare_check(const proxy_method *m, const uint8_t *req,
                          size_t req_len, const uint8_t *a, size_t a_len,
                          const uint8_t *b, size_t b_len, char *why, size_t n)
{
	Authzed__Api__V1__CheckPermissionResponse *pa =
	    authzed__api__v1__check_permission_response__unpack(NULL, a_len, a);
	Authzed__Api__V1__CheckPermissionResponse *pb =
	    authzed__api__v1__check_permission_response__unpack(NULL, b_len, b);
	Authzed__Api__V1__CheckPermissionRequest *rq =
	    authzed__api__v1__check_permission_request__unpack(NULL, req_len,
	                                                       req);
	bool same =
	    pa && pb && pa->permissionship == pb->permissionship &&
	    same_partial(pa->partial_caveat_info, pb->partial_caveat_info);
	if (!same) {
		char what[1024] = "?";
		if (rq)
			format_check(what, sizeof(what), rq->resource,
			             rq->permission, rq->subject);
		snprintf(why, n, "%s %s: primary %s, shadow %s", m->name, what,
		         pa ? permissionship_name(pa->permissionship)
		            : "(undecodable)",
		         pb ? permissionship_name(pb->permissionship)
		            : "(undecodable)");
	}
	authzed__api__v1__check_permission_response__free_unpacked(pa, NULL);
	authzed__api__v1__check_permission_response__free_unpacked(pb, NULL);
	authzed__api__v1__check_permission_request__free_unpacked(rq, NULL);
	return same;
}

/* One pair's answer as text ("HAS_PERMISSION", "error 3"). */
static void pair_answer(const Authzed__Api__V1__CheckBulkPermissionsPair *p,
                        char *buf, size_t n)
{
	if (p->response_case ==
	        AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM &&
	    p->item)
		snprintf(buf, n, "%s",
		         permissionship_name(p->item->permissionship));
	else if (
	    p->response_case ==
	        AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR &&
	    p->error)
		snprintf(buf, n, "error %s", grpc_status_name(p->error->code));
	else
		snprintf(buf, n, "nothing");
}

/* Compares two CheckBulkPermissions answers pair by pair (the i-th pair
 * answers the i-th item); names the first differing item. */
static bool compare_check_bulk(const proxy_method *m, const uint8_t *a,
                               size_t a_len, const uint8_t *b, size_t b_len,
                               char *why, size_t n)
{
	Authzed__Api__V1__CheckBulkPermissionsResponse *pa =
	    authzed__api__v1__check_bulk_permissions_response__unpack(NULL,
	                                                              a_len, a);
	Authzed__Api__V1__CheckBulkPermissionsResponse *pb =
	    authzed__api__v1__check_bulk_permissions_response__unpack(NULL,
	                                                              b_len, b);
	bool same = pa && pb && pa->n_pairs == pb->n_pairs;
	if (!same)
		snprintf(why, n, "%s: primary %zu pairs, shadow %zu pairs",
		         m->name, pa ? pa->n_pairs : 0, pb ? pb->n_pairs : 0);
	for (size_t i = 0; same && i < pa->n_pairs; i++) {
		char x[64], y[64];
		pair_answer(pa->pairs[i], x, sizeof(x));
		pair_answer(pb->pairs[i], y, sizeof(y));
		bool eq = strcmp(x, y) == 0;
		if (eq && pa->pairs[i]->item && pb->pairs[i]->item)
			eq = same_partial(
			    pa->pairs[i]->item->partial_caveat_info,
			    pb->pairs[i]->item->partial_caveat_info);
		if (!eq) {
			same = false;
			char what[1024] = "?";
			const Authzed__Api__V1__CheckBulkPermissionsRequestItem
			    *it = pa->pairs[i]->request;
			if (it)
				format_check(what, sizeof(what), it->resource,
				             it->permission, it->subject);
			snprintf(why, n,
			         "%s item %zu %s: primary %s, shadow %s",
			         m->name, i, what, x, y);
		}
	}
	authzed__api__v1__check_bulk_permissions_response__free_unpacked(pa,
	                                                                 NULL);
	authzed__api__v1__check_bulk_permissions_response__free_unpacked(pb,
	                                                                 NULL);
	return same;
}

static bool compare_read_schema(const proxy_method *m, const uint8_t *a,
                                size_t a_len, const uint8_t *b, size_t b_len,
                                char *why, size_t n)
{
	Authzed__Api__V1__ReadSchemaResponse *pa =
	    authzed__api__v1__read_schema_response__unpack(NULL, a_len, a);
	Authzed__Api__V1__ReadSchemaResponse *pb =
	    authzed__api__v1__read_schema_response__unpack(NULL, b_len, b);
	bool same = pa && pb && strcmp(pa->schema_text, pb->schema_text) == 0;
	if (!same)
		snprintf(why, n, "%s: the schema texts differ", m->name);
	authzed__api__v1__read_schema_response__free_unpacked(pa, NULL);
	authzed__api__v1__read_schema_response__free_unpacked(pb, NULL);
	return same;
}

/* ===================================================================== */
/* Lookups: results as sets of keys                                      */
/* ===================================================================== */

static bool is_resources(const proxy_method *m)
{
	return strstr(m->path, "LookupResources") != NULL;
}

bool shadow_keys_add(shadow_keys *k, const proxy_method *m, const uint8_t *data,
                     size_t len)
{
	if (k->overflow)
		return false;
	char key[1024];
	bool ok = false;
	int cond =
	    AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION;
	if (is_resources(m)) {
		Authzed__Api__V1__LookupResourcesResponse *r =
		    authzed__api__v1__lookup_resources_response__unpack(
		        NULL, len, data);
		if (r) {
			snprintf(
			    key, sizeof(key), "%s%s", r->resource_object_id,
			    (int)r->permissionship == cond ? " (conditional)"
			                                   : "");
			ok = true;
		}
		authzed__api__v1__lookup_resources_response__free_unpacked(
		    r, NULL);
	} else {
		Authzed__Api__V1__LookupSubjectsResponse *r =
		    authzed__api__v1__lookup_subjects_response__unpack(
		        NULL, len, data);
		if (r && r->subject) {
			int n = snprintf(key, sizeof(key), "%s%s",
			                 r->subject->subject_object_id,
			                 (int)r->subject->permissionship == cond
			                     ? " (conditional)"
			                     : "");
			for (size_t i = 0; i < r->n_excluded_subjects &&
			                   n > 0 && (size_t)n < sizeof(key);
			     i++)
				n += snprintf(
				    key + n, sizeof(key) - (size_t)n, "%s%s",
				    i ? "," : " except ",
				    r->excluded_subjects[i]->subject_object_id);
			ok = true;
		}
		authzed__api__v1__lookup_subjects_response__free_unpacked(r,
		                                                          NULL);
	}
	size_t klen = strlen(key) + 1;
	if (!ok || k->bytes + klen > k->max_bytes) {
		k->overflow = true;
		return false;
	}
	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 64;
		k->v = xrealloc(k->v, k->cap * sizeof(*k->v));
	}
	k->v[k->n++] = xstrdup(key);
	k->bytes += klen;
	return true;
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *shadow_keys_join(shadow_keys *k, size_t *len)
{
	if (k->n)
		qsort(k->v, k->n, sizeof(*k->v), cmp_keys);
	char *out = xmalloc(k->bytes + 1);
	size_t n = 0;
	for (size_t i = 0; i < k->n; i++) {
		size_t l = strlen(k->v[i]);
		memcpy(out + n, k->v[i], l);
		n += l;
		out[n++] = '\n';
	}
	out[n] = 0;
	*len = n;
	return out;
}

void shadow_keys_free(shadow_keys *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->v[i]);
	free(k->v);
	memset(k, 0, sizeof(*k));
}

/* "document#view@user:anne" / "document:readme#view@user" of a lookup
 * request, for the log.  False for a request that is not comparable: a
 * page (a limit or a cursor of the primary). */
static bool lookup_request(const proxy_method *m, const uint8_t *req,
                           size_t len, char *buf, size_t n)
{
	bool comparable = false;
	snprintf(buf, n, "?");
	if (is_resources(m)) {
		Authzed__Api__V1__LookupResourcesRequest *r =
		    authzed__api__v1__lookup_resources_request__unpack(
		        NULL, len, req);
		if (r) {
			const Authzed__Api__V1__SubjectReference *s =
			    r->subject;
			const Authzed__Api__V1__ObjectReference *o =
			    s ? s->object : NULL;
			snprintf(buf, n, "%s#%s@%s:%s%s%s",
			         r->resource_object_type, r->permission,
			         o ? o->object_type : "?",
			         o ? o->object_id : "?",
			         s && *s->optional_relation ? "#" : "",
			         s ? s->optional_relation : "");
			comparable = !r->optional_limit && !r->optional_cursor;
		}
		authzed__api__v1__lookup_resources_request__free_unpacked(r,
		                                                          NULL);
	} else {
		Authzed__Api__V1__LookupSubjectsRequest *r =
		    authzed__api__v1__lookup_subjects_request__unpack(NULL, len,
		                                                      req);
		if (r) {
			const Authzed__Api__V1__ObjectReference *o =
			    r->resource;
			snprintf(buf, n, "%s:%s#%s@%s%s%s",
			         o ? o->object_type : "?",
			         o ? o->object_id : "?", r->permission,
			         r->subject_object_type,
			         *r->optional_subject_relation ? "#" : "",
			         r->optional_subject_relation);
			comparable =
			    !r->optional_concrete_limit && !r->optional_cursor;
		}
		authzed__api__v1__lookup_subjects_request__free_unpacked(r,
		                                                         NULL);
	}
	return comparable;
}

/* The first line of a that is not in b (both sorted, '\n'-terminated
 * lines), copied into out; false when every line of a is in b. */
static bool first_missing(const char *a, const char *b, char *out, size_t n)
{
	while (*a) {
		const char *ea = strchr(a, '\n');
		size_t la = (size_t)(ea - a);
		int c = 1;
		while (*b) {
			const char *eb = strchr(b, '\n');
			size_t lb = (size_t)(eb - b);
			size_t l = la < lb ? la : lb;
			c = memcmp(a, b, l);
			if (c == 0)
				c = la < lb ? -1 : la > lb ? 1 : 0;
			if (c <= 0)
				break;
			b = eb + 1;
		}
		if (c != 0) {
			snprintf(out, n, "%.*s", (int)la, a);
			return true;
		}
		a = ea + 1;
	}
	return false;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

typedef struct shadow_collect {
	shadow_keys keys;
	const proxy_method *m;
} shadow_collect;

static int collect_message(void *ctx, const uint8_t *data, size_t len)
{
	shadow_collect *c = ctx;
	return shadow_keys_add(&c->keys, c->m, data, len) ? 0 : 1;
}

/* Walks an import job's framed messages (SHADOW_FRAME_HEADER). */
typedef struct frame_reader {
	const uint8_t *p, *end;
} frame_reader;

static int next_frame(void *ctx, const void **data, size_t *len)
{
	frame_reader *r = ctx;
	if ((size_t)(r->end - r->p) < SHADOW_FRAME_HEADER)
		return 0;
	size_t n = (size_t)r->p[0] << 24 | (size_t)r->p[1] << 16 |
	           (size_t)r->p[2] << 8 | r->p[3];
	r->p += SHADOW_FRAME_HEADER;
	if (n > (size_t)(r->end - r->p))
		return -1; /* cannot happen: the proxy framed it */
	*data = r->p;
	*len = n;
	r->p += n;
	return 1;
}

/* Sends req to c as m's call: unary, or for lookups a stream gathered
 * into sorted keys.  Returns the status code; on OK *resp (malloc'd,
 * NUL-terminated for lookups) and *resp_len; *overflow when a lookup had
 * too many results to hold (then not OK). */
static int ask(pemba_proxy *p, grpc_client *c, const char *auth,
               const proxy_method *m, const uint8_t *req, size_t len,
               uint8_t **resp, size_t *resp_len, grpc_status *st,
               bool *overflow)
{
	grpc_metadata md[1];
	size_t nmd = 0;
	if (auth)
		md[nmd++] = (grpc_metadata){"authorization", auth, 0};
	*resp = NULL;
	*resp_len = 0;
	*overflow = false;
	if (m->cls == PROXY_IMPORT) {
		/* One client stream with all the messages; a big import gets
		 * a second more per MiB. */
		frame_reader r = {req, req + len};
		size_t extra = len >> 20;
		int timeout = p->o.shadow_timeout_ms +
		              (int)(extra > 3600 ? 3600000 : extra * 1000);
		return grpc_client_streaming(c, m->path, md, nmd, timeout,
		                             next_frame, &r, NULL, NULL, resp,
		                             resp_len, st);
	}
	if (m->cls != PROXY_LOOKUP)
		return grpc_client_unary(c, m->path, md, nmd,
		                         p->o.shadow_timeout_ms, req, len, resp,
		                         resp_len, st);
	shadow_collect col = {.m = m};
	col.keys.max_bytes = p->o.shadow_queue_bytes;
	int code = grpc_client_server_streaming(c, m->path, md, nmd,
	                                        p->o.shadow_timeout_ms, req,
	                                        len, collect_message, &col, st);
	*overflow = col.keys.overflow;
	if (code == GRPC_STATUS_OK && !*overflow)
		*resp = (uint8_t *)shadow_keys_join(&col.keys, resp_len);
	shadow_keys_free(&col.keys);
	return code;
}

/* Compares a read's answers a (the primary's; lookup keys for lookups)
 * and b (the shadow's); on a difference fills why and returns false. */
static bool compare_answers(const proxy_method *m, const shadow_job *job,
                            const char *what, const uint8_t *a, size_t a_len,
                            const uint8_t *b, size_t b_len, char *why, size_t n)
{
	switch (m->cls) {
	case PROXY_CHECK:
		return compare_check(m, job->request, job->request_len, a,
		                     a_len, b, b_len, why, n);
	case PROXY_CHECK_BULK:
		return compare_check_bulk(m, a, a_len, b, b_len, why, n);
	case PROXY_LOOKUP: {
		const char *pa = (const char *)a, *sb = (const char *)b;
		if (strcmp(pa, sb) == 0)
			return true;
		char only[1024];
		const char *side = "shadow";
		if (!first_missing(sb, pa, only, sizeof(only))) {
			first_missing(pa, sb, only, sizeof(only));
			side = "primary";
		}
		snprintf(why, n,
		         "%s %s: primary %zu results, shadow %zu; only on the "
		         "%s: %s",
		         m->name, what, count_lines(pa), count_lines(sb), side,
		         only);
		return false;
	}
	default:
		return compare_read_schema(m, a, a_len, b, b_len, why, n);
	}
}

/* The shadow thread's own connection to the primary, for confirming
 * mismatches (see confirm_stale); NULL when it cannot connect. */
static grpc_client *primary_client(pemba_proxy *p)
{
	if (p->sh.primary)
		return p->sh.primary;
	grpc_client_options co;
	proxy_client_options(&p->o.primary, &co);
	co.connect_timeout_ms = p->o.shadow_timeout_ms;
	pemba_error err = {0};
	if (grpc_client_connect(&co, &p->sh.primary, &err) != 0)
		p->sh.primary = NULL;
	return p->sh.primary;
}

/*
 * A read that was not fully consistent differs: the primary may have
 * answered from an older revision (SpiceDB's minimize_latency reads a
 * quantized one) while the shadow answered fully consistent.  Asks the
 * primary again with the shadow's (fully consistent) request, from this
 * thread, never from the client's path; true when the fresh answer equals
 * the shadow's, i.e. the difference was the primary's staleness.
 */
static bool confirm_stale(pemba_proxy *p, const shadow_job *job,
                          const char *what, const uint8_t *req, size_t len,
                          const uint8_t *shadow_resp, size_t shadow_len)
{
	grpc_client *c = primary_client(p);
	if (!c)
		return false;
	uint8_t *fresh;
	size_t fresh_len;
	grpc_status st = {0};
	bool overflow;
	int code = ask(p, c, p->primary_auth, job->method, req, len, &fresh,
	               &fresh_len, &st, &overflow);
	bool stale = false;
	if (code == GRPC_STATUS_OK) {
		char why[1536];
		stale =
		    compare_answers(job->method, job, what, fresh, fresh_len,
		                    shadow_resp, shadow_len, why, sizeof(why));
	} else if (code == GRPC_STATUS_UNAVAILABLE ||
	           code == GRPC_STATUS_DEADLINE_EXCEEDED ||
	           code == GRPC_STATUS_CANCELLED) {
		grpc_client_close(c);
		p->sh.primary = NULL;
	}
	free(fresh);
	grpc_status_clear(&st);
	return stale;
}

/* Replays one job on the shadow and accounts for the outcome.  Returns
 * true when a read differed in a way the primary, asked again, does not
 * explain, for the first time: the caller queues it again (see
 * shadow_main), nothing is counted yet. */
static bool run_job(pemba_proxy *p, const shadow_job *job)
{
	const proxy_method *m = job->method;
	bool write = m->cls == PROXY_WRITE || m->cls == PROXY_IMPORT;
	grpc_client *c = shadow_client(p);
	if (!c) {
		PROXY_COUNT(p, shadow_errors);
		return false;
	}
	char what[1024] = "";
	if (m->cls == PROXY_LOOKUP &&
	    !lookup_request(m, job->request, job->request_len, what,
	                    sizeof(what))) {
		PROXY_COUNT(p, sampled_out); /* a page: not comparable */
		return false;
	}
	size_t len = job->request_len;
	bool was_full = false;
	uint8_t *rewritten =
	    write ? NULL
	          : shadow_request(m, job->request, len, &len, &was_full);
	const uint8_t *req = rewritten ? rewritten : job->request;
	if (!rewritten)
		len = job->request_len;
	uint8_t *resp;
	size_t resp_len;
	grpc_status st = {0};
	bool overflow;
	bool retry = false;
	int code = ask(p, c, p->shadow_auth, m, req, len, &resp, &resp_len, &st,
	               &overflow);
	if (overflow) {
		/* Too many results to hold: not compared. */
		PROXY_COUNT(p, sampled_out);
	} else if (code == GRPC_STATUS_UNAVAILABLE ||
	           code == GRPC_STATUS_DEADLINE_EXCEEDED ||
	           code == GRPC_STATUS_CANCELLED) {
		/* Unreachable or too slow: not a difference in answers. */
		PROXY_COUNT(p, shadow_errors);
		proxy_logf(p, 1, "shadow error on %s: %s: %s", m->name,
		           grpc_status_name(code),
		           st.message ? st.message : "");
		grpc_client_close(c);
		p->sh.client = NULL;
	} else {
		char why[1536] = "";
		bool same = true;
		if (code != GRPC_STATUS_OK) {
			same = false;
			snprintf(why, sizeof(why),
			         "%s: primary OK, shadow %s: %s", m->name,
			         grpc_status_name(code),
			         st.message ? st.message : "");
		} else if (!write) {
			same =
			    compare_answers(m, job, what, job->primary_response,
			                    job->primary_response_len, resp,
			                    resp_len, why, sizeof(why));
		}
		/* Confirmed with the primary even when its answer was fully
		 * consistent: a read that ran concurrently with a write may
		 * have been answered by the primary before the write and
		 * queued after it (the queue's order is the order the calls
		 * ended, not the order the primary evaluated them). */
		bool stale =
		    !same && !write && code == GRPC_STATUS_OK && rewritten &&
		    confirm_stale(p, job, what, req, len, resp, resp_len);
		/* Not explained: the write it raced may be queued behind it
		 * (a write is queued after the primary acknowledged it, so a
		 * read that saw it can reach the queue first).  Replayed once
		 * more behind what is queued now, then judged. */
		retry = !same && !stale && !write && code == GRPC_STATUS_OK &&
		        !job->retried;
		if (!retry && write)
			PROXY_COUNT(p, shadow_writes);
		else if (!retry)
			PROXY_COUNT(p, shadow_reads);
		if (retry) {
			proxy_logf(p, 3, "difference, replayed again: %s", why);
		} else if (stale) {
			PROXY_COUNT(p, stale);
			proxy_logf(
			    p, 2,
			    "%s primary answer (it agrees once asked "
			    "again, fully consistent), not a mismatch: %s",
			    was_full ? "superseded" : "stale", why);
		} else if (!same) {
			PROXY_COUNT(p, mismatches);
			proxy_logf(p, 1, "mismatch: %s", why);
		}
	}
	free(rewritten);
	free(resp);
	grpc_status_clear(&st);
	return retry;
}

/* ===================================================================== */
/* The thread                                                            */
/* ===================================================================== */

static void *shadow_main(void *arg)
{
	pemba_proxy *p = arg;
	shadow *sh = &p->sh;
	for (;;) {
		pthread_mutex_lock(&sh->mu);
		while (!sh->head && !sh->stopping)
			pthread_cond_wait(&sh->cv, &sh->mu);
		shadow_job *job = sh->head;
		if (job && sh->stopping &&
		    proxy_now_ns() > sh->drain_deadline_ns)
			job = NULL; /* out of time: the rest is freed by stop */
		if (!job) {
			pthread_mutex_unlock(&sh->mu);
			break;
		}
		sh->head = job->next;
		if (!sh->head)
			sh->tail = NULL;
		sh->count--;
		sh->bytes -= job->request_len + job->primary_response_len;
		__atomic_sub_fetch(&p->counters.queued, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&sh->mu);
		if (run_job(p, job)) {
			job->retried = true;
			job->next = NULL;
			pthread_mutex_lock(&sh->mu);
			if (sh->tail)
				sh->tail->next = job;
			else
				sh->head = job;
			sh->tail = job;
			sh->count++;
			sh->bytes +=
			    job->request_len + job->primary_response_len;
			PROXY_COUNT(p, queued);
			pthread_mutex_unlock(&sh->mu);
			continue;
		}
		free(job);
	}
	grpc_client_close(sh->client);
	sh->client = NULL;
	grpc_client_close(sh->primary);
	sh->primary = NULL;
	return NULL;
}

int shadow_start(pemba_proxy *p, pemba_error *err)
{
	shadow *sh = &p->sh;
	sh->max_count = p->o.shadow_queue_max;
	sh->max_bytes = p->o.shadow_queue_bytes;
	if (pthread_create(&sh->thread, NULL, shadow_main, p) != 0)
		return error_set(err, PEMBA_EIO,
		                 "proxy: cannot start the shadow thread");
	sh->started = true;
	return 0;
}

void shadow_stop(pemba_proxy *p)
{
	shadow *sh = &p->sh;
	if (!sh->started)
		return;
	pthread_mutex_lock(&sh->mu);
	sh->stopping = true;
	sh->drain_deadline_ns =
	    proxy_now_ns() + (int64_t)p->o.shadow_timeout_ms * 1000000;
	pthread_cond_signal(&sh->cv);
	pthread_mutex_unlock(&sh->mu);
	pthread_join(sh->thread, NULL);
	sh->started = false;
	size_t left = 0;
	while (sh->head) {
		shadow_job *j = sh->head;
		sh->head = j->next;
		free(j);
		left++;
	}
	sh->tail = NULL;
	sh->count = sh->bytes = 0;
	if (left) {
		__atomic_add_fetch(&p->counters.dropped, left,
		                   __ATOMIC_RELAXED);
		__atomic_store_n(&p->counters.queued, 0, __ATOMIC_RELAXED);
		proxy_logf(p, 1, "shadow: %zu queued jobs dropped at shutdown",
		           left);
	}
}
