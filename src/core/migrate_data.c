/*
 * migrate_data.c -- the data steps of a schema migration:
 * pemba_copy_relationships (backfill one relation into another) and
 * pemba_verify_permission (prove that two relations or permissions grant
 * the same subjects before switching from one to the other).
 *
 * Copy reads the source at one snapshot revision, a batch at a time, with
 * an index seek after the last key copied (store_query's `after`), and
 * writes each batch as one TOUCH import (core_import_rows: the write
 * phase of pemba_import_commit, the batched insert path, with the same
 * validation, read-only and deprecation checks as any write).  Reads are
 * by revision, so the snapshot stays consistent across the write
 * transactions that follow it, and the only state to resume is (snapshot,
 * count, last key): the cursor.
 *
 * Verify walks the resources of a type in id order, a page of rows at a
 * time, and for each resource compares the LookupSubjects results of the
 * two permissions for every subject kind the schema lets them reach.
 * Memory is bounded by one page plus one resource's subjects.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/lookup.h"
#include "engine/engine.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

/* ============================================================== shared */

static bool valid_type(const char *s)
{
	return !core_is_empty(s) && schema_valid_type_name(s, strlen(s));
}

static bool valid_relation(const char *s)
{
	return !core_is_empty(s) && schema_valid_relation_name(s, strlen(s));
}

static bool same_text(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* A growable byte buffer holding NUL-terminated fields one after another
 * (a cursor's key, a saved row key). */
typedef struct key_buf {
	char *bytes;
	size_t len, cap;
} key_buf;

static void key_buf_set(key_buf *k, const char *const *fields, int n)
{
	size_t need = 0;
	for (int i = 0; i < n; i++)
		need += strlen(fields[i]) + 1;
	if (need > k->cap) {
		k->cap = need * 2;
		k->bytes = xrealloc(k->bytes, k->cap);
	}
	k->len = 0;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(fields[i]) + 1;
		memcpy(k->bytes + k->len, fields[i], l);
		k->len += l;
	}
}

/* Points fields[0..n) at the fields of k; false unless k holds exactly n
 * fields. */
static bool key_buf_fields(const key_buf *k, const char **fields, int n)
{
	size_t at = 0;
	for (int i = 0; i < n; i++) {
		if (at >= k->len)
			return false;
		fields[i] = k->bytes + at;
		const char *nul = memchr(fields[i], '\0', k->len - at);
		if (!nul)
			return false;
		at = (size_t)(nul - k->bytes) + 1;
	}
	return at == k->len;
}

/* ================================================================ copy */

/* Versioned, so a later format can still read (or clearly refuse) this
 * one: "c1:<snapshot>:<copied>:<request digest, 16 hex>:<hex of the last
 * source key: resource id, subject type, subject id, subject relation,
 * each NUL-terminated; empty before the first batch>". */
#define COPY_CURSOR_PREFIX "c1:"
#define COPY_KEY_FIELDS 4
#define COPY_CURSOR_MAX_BYTES (8 * (2 * PEMBA_MAX_OBJECT_ID + 1024))

typedef struct copy_spec {
	const char *resource_type, *relation;
	const char *to_resource_type, *to_relation;
	const char *subject_type; /* NULL: every subject type */
	uint64_t digest;          /* ties cursors to this request */
} copy_spec;

static uint64_t copy_digest(const copy_spec *s)
{
	const char *parts[5] = {s->resource_type, s->relation,
	                        s->to_resource_type, s->to_relation,
	                        s->subject_type ? s->subject_type : ""};
	uint64_t h = 0;
	for (int i = 0; i < 5; i++)
		h = hash_bytes(parts[i], strlen(parts[i]) + 1, h);
	return h;
}

static char *copy_cursor_encode(const copy_spec *s, pemba_revision snapshot,
                                uint64_t copied, const key_buf *k)
{
	static const char hex[] = "0123456789abcdef";
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(
	    &sb, COPY_CURSOR_PREFIX "%" PRIu64 ":%" PRIu64 ":%016" PRIx64 ":",
	    snapshot, copied, s->digest);
	for (size_t i = 0; i < k->len; i++) {
		unsigned char c = (unsigned char)k->bytes[i];
		strbuf_putc(&sb, hex[c >> 4]);
		strbuf_putc(&sb, hex[c & 15]);
	}
	char *out = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return out;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes a copy cursor made for request `s`.  PEMBA_EINVAL for anything
 * else: malformed text, or a cursor of another copy. */
static int copy_cursor_decode(const copy_spec *s, const char *cursor,
                              pemba_revision *snapshot, uint64_t *copied,
                              key_buf *k, pemba_error *err)
{
	const char *p = cursor + strlen(COPY_CURSOR_PREFIX);
	char *end;
	if (strlen(cursor) > COPY_CURSOR_MAX_BYTES ||
	    strncmp(cursor, COPY_CURSOR_PREFIX, strlen(COPY_CURSOR_PREFIX)) ||
	    *p < '1' || *p > '9')
		goto bad;
	unsigned long long rev = strtoull(p, &end, 10);
	if (*end != ':' || end[1] < '0' || end[1] > '9')
		goto bad;
	unsigned long long count = strtoull(end + 1, &end, 10);
	if (*end != ':')
		goto bad;
	p = end + 1;
	if (strlen(p) < 17 || p[16] != ':')
		goto bad;
	uint64_t digest = 0;
	for (int i = 0; i < 16; i++) {
		int v = hex_value(p[i]);
		if (v < 0)
			goto bad;
		digest = digest << 4 | (uint64_t)v;
	}
	p += 17;
	size_t hexlen = strlen(p);
	if (hexlen % 2)
		goto bad;
	k->len = 0;
	if (hexlen) {
		if (hexlen / 2 > k->cap) {
			k->cap = hexlen / 2;
			k->bytes = xrealloc(k->bytes, k->cap);
		}
		k->len = hexlen / 2;
		for (size_t i = 0; i < k->len; i++) {
			int hi = hex_value(p[2 * i]),
			    lo = hex_value(p[2 * i + 1]);
			if (hi < 0 || lo < 0)
				goto bad;
			k->bytes[i] = (char)(hi << 4 | lo);
		}
		const char *f[COPY_KEY_FIELDS];
		if (!key_buf_fields(k, f, COPY_KEY_FIELDS) || !f[0][0] ||
		    !f[1][0] || !f[2][0])
			goto bad;
	}
	if (digest != s->digest)
		return error_set(err, PEMBA_EINVAL,
		                 "the copy cursor belongs to another copy (not "
		                 "from %s#%s to %s#%s%s%s)",
		                 s->resource_type, s->relation,
		                 s->to_resource_type, s->to_relation,
		                 s->subject_type ? " for subject type " : "",
		                 s->subject_type ? s->subject_type : "");
	*snapshot = (pemba_revision)rev;
	*copied = (uint64_t)count;
	return PEMBA_OK;
bad:
	return error_set(err, PEMBA_EINVAL,
	                 "invalid copy cursor (not one reported by a "
	                 "relationship copy)");
}

/* A failure to read the snapshot, reworded so the caller knows what to
 * do: a restart reads a new snapshot and TOUCH makes it harmless. */
static int snapshot_gone(pemba_revision snapshot, pemba_error *err)
{
	char why[sizeof(err->message)];
	snprintf(why, sizeof(why), "%s", err ? err->message : "");
	return error_set(err, PEMBA_EREVISION,
	                 "the copy's snapshot revision %" PRIu64
	                 " is no longer available (%s); restart the copy "
	                 "without a cursor (safe: TOUCH makes copying a "
	                 "relationship again harmless)",
	                 snapshot, why);
}

/* ---------------------------------------------- allowed types up front */

/* How an allowed type is written in a schema: "user", "user:*",
 * "group#member", "user with cav", "user with cav and expiration". */
static const char *allowed_type_text(arena *a, const schema_allowed_type *t)
{
	return arena_printf(
	    a, "%s%s%s%s%s%s%s", t->type, t->wildcard ? ":*" : "",
	    t->relation ? "#" : "", t->relation ? t->relation : "",
	    t->caveat ? " with " : "", t->caveat ? t->caveat : "",
	    t->expiration ? (t->caveat ? " and expiration" : " with expiration")
	                  : "");
}

static bool relation_accepts(const schema_relation *rel,
                             const schema_allowed_type *t)
{
	for (size_t i = 0; i < rel->ntypes; i++) {
		const schema_allowed_type *u = &rel->types[i];
		if (strcmp(u->type, t->type) == 0 &&
		    same_text(u->relation, t->relation) &&
		    u->wildcard == t->wildcard &&
		    same_text(u->caveat, t->caveat) &&
		    u->expiration == t->expiration)
			return true;
	}
	return false;
}

/* Looks at the snapshot for one source relationship that has allowed
 * type t (subject type, relation, wildcard, caveat, expiration).  1 and
 * its text in *found (allocated in a), 0 if there is none, < 0 on error.
 * A wildcard is found through the subject index; other types scan the
 * source's rows of that subject type. */
static int find_row_of_type(pemba_db *db, const copy_spec *s,
                            pemba_revision snapshot,
                            const schema_allowed_type *t, arena *a,
                            const char **found, pemba_error *err)
{
	store_filter f = {
	    .resource_type = s->resource_type,
	    .relation = s->relation,
	    .subject_type = t->type,
	    .subject_id = t->wildcard ? "*" : NULL,
	    .subject_relation = t->relation ? t->relation : "",
	};
	store_iter *it;
	int rc = store_query(db->st, snapshot, &f, NULL, 0, &it, err);
	if (rc < 0)
		return rc;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, err)) == 1) {
		if ((strcmp(row->subject_id, "*") == 0) != t->wildcard ||
		    !same_text(row->caveat_name, t->caveat) ||
		    (row->expiration_ms != 0) != t->expiration)
			continue;
		*found = arena_printf(
		    a, "%s:%s#%s@%s:%s%s%s", row->resource_type,
		    row->resource_id, row->relation, row->subject_type,
		    row->subject_id, row->subject_relation[0] ? "#" : "",
		    row->subject_relation);
		break;
	}
	store_iter_close(it);
	return rc;
}

/* Checks the request against the schemas before anything is written:
 * the source relation at the snapshot, the target relation now, and
 * every source allowed type (of the requested subject type) that the
 * target does not allow must have no relationship at the snapshot. */
static int copy_check_schema(pemba_db *db, const copy_spec *s,
                             pemba_revision snapshot, arena *a,
                             pemba_error *err)
{
	pemba_revision head;
	const schema *src, *dst;
	int rc;
	if ((rc = core_resolve_revision(db, PEMBA_REVISION_HEAD, &head, err)) <
	        0 ||
	    (rc = core_schema_at(db, snapshot, &src, err)) < 0)
		return rc;
	const schema_definition *def =
	    src ? schema_find_definition(src, s->resource_type) : NULL;
	if (def == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found",
		                 s->resource_type);
	const schema_relation *from = schema_find_relation(def, s->relation);
	if (from == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s`",
		                 s->relation, s->resource_type);
	if (from->is_permission)
		return error_set(err, PEMBA_EINVAL,
		                 "`%s#%s` is a permission: only relations have "
		                 "relationships to copy",
		                 s->resource_type, s->relation);
	bool subject_allowed = s->subject_type == NULL;
	for (size_t i = 0; i < from->ntypes && !subject_allowed; i++)
		subject_allowed =
		    strcmp(from->types[i].type, s->subject_type) == 0;
	if (!subject_allowed)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation `%s#%s` does not allow subjects of "
		                 "type `%s`: nothing to copy",
		                 s->resource_type, s->relation,
		                 s->subject_type);

	/* The target is validated against the schema writes will see. */
	if ((rc = core_schema_at(db, head, &dst, err)) < 0)
		return rc;
	const schema_definition *tdef =
	    dst ? schema_find_definition(dst, s->to_resource_type) : NULL;
	if (tdef == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found",
		                 s->to_resource_type);
	const schema_relation *to = schema_find_relation(tdef, s->to_relation);
	if (to == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s`",
		                 s->to_relation, s->to_resource_type);
	if (to->is_permission)
		return error_set(
		    err, PEMBA_EINVAL,
		    "cannot copy into permission `%s` under "
		    "definition `%s`: the target must be a relation",
		    s->to_relation, s->to_resource_type);
	/* core_schema_at may evict nothing we still use: `src` is not used
	 * past this point, and `from`/`to` live in schemas the cache keeps
	 * for the rest of this call (two entries). */
	for (size_t i = 0; i < from->ntypes; i++) {
		const schema_allowed_type *t = &from->types[i];
		if (s->subject_type && strcmp(t->type, s->subject_type) != 0)
			continue;
		if (relation_accepts(to, t))
			continue;
		const char *found = NULL;
		if ((rc = store_read_begin(db->st, err)) < 0)
			return rc;
		rc = store_check_revision(db->st, snapshot, err);
		if (rc == 0)
			rc = find_row_of_type(db, s, snapshot, t, a, &found,
			                      err);
		store_read_end(db->st);
		if (rc < 0)
			return rc;
		if (found)
			return error_set(
			    err, PEMBA_EINVAL,
			    "cannot copy `%s#%s` to `%s#%s`: subjects of type "
			    "`%s` are not allowed on relation `%s#%s`, and "
			    "relationship `%s` has one; allow the type on the "
			    "target first, or copy only other subject types",
			    s->resource_type, s->relation, s->to_resource_type,
			    s->to_relation, allowed_type_text(a, t),
			    s->to_resource_type, s->to_relation, found);
	}
	return PEMBA_OK;
}

/* ---------------------------------------------------------- the copy */

/* Reads the next batch of at most `limit` source relationships after
 * `after` (NULL: from the start) at the snapshot, as targets in
 * rels[0..*n), strings in `a`; *last: the source key of the last one. */
static int copy_read_batch(pemba_db *db, const copy_spec *s,
                           pemba_revision snapshot, const store_rel *after,
                           size_t limit, arena *a, pemba_relationship *rels,
                           size_t *n, key_buf *last, pemba_error *err)
{
	*n = 0;
	int rc = store_read_begin(db->st, err);
	if (rc < 0)
		return rc;
	/* Checked per batch: a GC run by any handle may pass the snapshot
	 * while the copy runs, and reads below the floor must not be
	 * trusted. */
	if ((rc = store_check_revision(db->st, snapshot, err)) < 0)
		goto out;
	store_filter f = {.resource_type = s->resource_type,
	                  .relation = s->relation,
	                  .subject_type = s->subject_type};
	store_iter *it;
	if ((rc = store_query(db->st, snapshot, &f, after, limit, &it, err)) <
	    0)
		goto out;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, err)) == 1) {
		pemba_relationship *r = &rels[(*n)++];
		r->resource_type = s->to_resource_type;
		r->relation = s->to_relation;
		r->resource_id = arena_strdup(a, row->resource_id);
		r->subject_type = arena_strdup(a, row->subject_type);
		r->subject_id = arena_strdup(a, row->subject_id);
		r->subject_relation =
		    row->subject_relation[0]
		        ? arena_strdup(a, row->subject_relation)
		        : NULL;
		r->caveat_name = row->caveat_name[0]
		                     ? arena_strdup(a, row->caveat_name)
		                     : NULL;
		r->caveat_context = row->caveat_context[0]
		                        ? arena_strdup(a, row->caveat_context)
		                        : NULL;
		r->expiration_ms = row->expiration_ms;
	}
	store_iter_close(it);
	if (rc == 0 && *n > 0) {
		const pemba_relationship *r = &rels[*n - 1];
		const char *f4[COPY_KEY_FIELDS] = {
		    r->resource_id, r->subject_type, r->subject_id,
		    r->subject_relation ? r->subject_relation : ""};
		key_buf_set(last, f4, COPY_KEY_FIELDS);
	}
out:
	store_read_end(db->st);
	return rc < 0 ? rc : PEMBA_OK;
}

/* Writes one batch as a TOUCH import: one transaction, one revision.  The
 * batch is already in memory, so it is written directly (the write phase
 * of an import), not staged. */
static int copy_write_batch(pemba_db *db, const pemba_write_options *opts,
                            const pemba_relationship *rels, size_t n,
                            pemba_revision *rev_out, pemba_error *err)
{
	return core_import_rows(db, PEMBA_OP_TOUCH, rels, n, opts, rev_out,
	                        err);
}

int pemba_copy_relationships(pemba_db *db, const pemba_copy_request *req,
                             pemba_copy_fn fn, void *ctx,
                             pemba_copy_result *out, pemba_error *err)
{
	error_clear(err);
	if (out)
		memset(out, 0, sizeof(*out));
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, req);
	copy_spec s = {
	    .resource_type = req->resource_type,
	    .relation = req->relation,
	    .to_resource_type = core_is_empty(req->to_resource_type)
	                            ? req->resource_type
	                            : req->to_resource_type,
	    .to_relation = req->to_relation,
	    .subject_type =
	        core_is_empty(req->subject_type) ? NULL : req->subject_type,
	};
	if (!valid_type(s.resource_type))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid source resource type `%s`",
		                 s.resource_type ? s.resource_type : "");
	if (!valid_relation(s.relation))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid source relation `%s`",
		                 s.relation ? s.relation : "");
	if (!valid_type(s.to_resource_type))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid target resource type `%s`",
		                 s.to_resource_type);
	if (!valid_relation(s.to_relation))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid target relation `%s`",
		                 s.to_relation ? s.to_relation : "");
	if (s.subject_type && !valid_type(s.subject_type))
		return error_set(err, PEMBA_EINVAL, "invalid subject type `%s`",
		                 s.subject_type);
	if (strcmp(s.resource_type, s.to_resource_type) == 0 &&
	    strcmp(s.relation, s.to_relation) == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "the source and the target are the same "
		                 "relation `%s#%s`",
		                 s.relation, s.resource_type);
	size_t batch =
	    req->batch_size ? req->batch_size : PEMBA_COPY_DEFAULT_BATCH;
	if (batch > PEMBA_COPY_MAX_BATCH)
		return error_set(err, PEMBA_ELIMIT,
		                 "batch size %zu is above the limit of %d "
		                 "relationships per copy batch",
		                 req->batch_size, PEMBA_COPY_MAX_BATCH);
	s.digest = copy_digest(&s);

	key_buf key = {0};
	pemba_revision snapshot = 0, written_at = 0;
	uint64_t copied = 0;
	int rc;
	if (!core_is_empty(req->cursor)) {
		if ((rc = copy_cursor_decode(&s, req->cursor, &snapshot,
		                             &copied, &key, err)) < 0)
			goto out;
		if ((rc = store_check_revision(db->st, snapshot, err)) < 0) {
			rc = snapshot_gone(snapshot, err);
			goto out;
		}
	} else if ((rc = core_resolve_revision(db, PEMBA_REVISION_HEAD,
	                                       &snapshot, err)) < 0) {
		goto out;
	}
	/* From here on a cursor exists, so even a failure can be resumed. */
	char *cursor = copy_cursor_encode(&s, snapshot, copied, &key);
	arena *a = arena_create(0);
	pemba_relationship *rels = xcalloc(batch, sizeof(*rels));
	bool done = false;
	if ((rc = copy_check_schema(db, &s, snapshot, a, err)) < 0)
		goto end;
	for (;;) {
		arena_reset(a);
		store_rel after_key;
		const store_rel *after = NULL;
		const char *f4[COPY_KEY_FIELDS];
		if (key.len && key_buf_fields(&key, f4, COPY_KEY_FIELDS)) {
			after_key = (store_rel){
			    .resource_type = s.resource_type,
			    .resource_id = f4[0],
			    .relation = s.relation,
			    .subject_type = f4[1],
			    .subject_id = f4[2],
			    .subject_relation = f4[3],
			};
			after = &after_key;
		}
		size_t n = 0;
		/* The batch's key goes to a buffer of its own until the batch
		 * is written: a failed write must leave the cursor before it.
		 */
		key_buf next = {0};
		rc = copy_read_batch(db, &s, snapshot, after, batch, a, rels,
		                     &n, &next, err);
		if (rc == PEMBA_EREVISION)
			rc = snapshot_gone(snapshot, err);
		if (rc == 0 && n > 0)
			rc = copy_write_batch(db, req->write_options, rels, n,
			                      &written_at, err);
		if (rc < 0) {
			free(next.bytes);
			break;
		}
		if (n > 0) {
			free(key.bytes);
			key = next;
			copied += n;
			free(cursor);
			cursor = copy_cursor_encode(&s, snapshot, copied, &key);
		} else {
			free(next.bytes);
		}
		done = n < batch;
		pemba_copy_progress p = {
		    .copied = copied,
		    .batch = n,
		    .cursor = cursor,
		    .snapshot = snapshot,
		    .written_at = written_at,
		    .done = done,
		};
		if (done) {
			if (fn)
				fn(ctx, &p);
			break;
		}
		if (fn && fn(ctx, &p))
			break;
	}
end:
	if (out) {
		out->copied = copied;
		out->snapshot = snapshot;
		out->written_at = written_at;
		out->done = rc == 0 && done;
		out->cursor = cursor;
	} else {
		free(cursor);
	}
	free(rels);
	arena_destroy(a);
out:
	free(key.bytes);
	return rc;
}

/* ============================================================== verify */

/* A subject kind LookupSubjects is asked about: a type, and a relation
 * ("" for the objects themselves). */
typedef struct subject_kind {
	const char *type;
	const char *relation;
} subject_kind;

typedef struct kind_walk {
	arena *a; /* owns the kinds' strings: they outlive any schema pointer */
	const schema_relation **visited;
	size_t nvisited, capvisited;
	subject_kind *kinds;
	size_t nkinds, capkinds;
} kind_walk;

static void kind_add(kind_walk *w, const char *type, const char *relation)
{
	relation = relation ? relation : "";
	for (size_t i = 0; i < w->nkinds; i++)
		if (strcmp(w->kinds[i].type, type) == 0 &&
		    strcmp(w->kinds[i].relation, relation) == 0)
			return;
	if (w->nkinds == w->capkinds) {
		w->capkinds = w->capkinds ? 2 * w->capkinds : 8;
		w->kinds = xrealloc(w->kinds, w->capkinds * sizeof(*w->kinds));
	}
	w->kinds[w->nkinds++] = (subject_kind){arena_strdup(w->a, type),
	                                       arena_strdup(w->a, relation)};
}

static void kind_visit(kind_walk *w, const schema_relation *rel);

static void kind_visit_expr(kind_walk *w, const schema_expr *e)
{
	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		break;
	case SCHEMA_EXPR_REF:
		kind_visit(w, e->ref);
		break;
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		/* The tupleset's subjects are not granted: what the target
		 * grants on each of them is. */
		for (size_t i = 0; e->tupleset && i < e->tupleset->ntypes;
		     i++) {
			const schema_definition *d =
			    e->tupleset->types[i].definition;
			const schema_relation *t =
			    d ? schema_find_relation(d, e->target) : NULL;
			if (t)
				kind_visit(w, t);
		}
		break;
	case SCHEMA_EXPR_UNION:
	case SCHEMA_EXPR_INTERSECT:
	case SCHEMA_EXPR_EXCLUDE:
		for (size_t i = 0; i < e->nchildren; i++)
			kind_visit_expr(w, e->children[i]);
		break;
	}
}

/* Adds the subject kinds `rel` can grant, directly or through usersets,
 * arrows and other permissions; each relation is visited once. */
static void kind_visit(kind_walk *w, const schema_relation *rel)
{
	if (rel == NULL)
		return;
	for (size_t i = 0; i < w->nvisited; i++)
		if (w->visited[i] == rel)
			return;
	if (w->nvisited == w->capvisited) {
		w->capvisited = w->capvisited ? 2 * w->capvisited : 16;
		w->visited =
		    xrealloc(w->visited, w->capvisited * sizeof(*w->visited));
	}
	w->visited[w->nvisited++] = rel;
	if (rel->is_permission) {
		if (rel->expr)
			kind_visit_expr(w, rel->expr);
		return;
	}
	for (size_t i = 0; i < rel->ntypes; i++) {
		const schema_allowed_type *t = &rel->types[i];
		kind_add(w, t->type, t->relation);
		if (t->relation && t->definition)
			kind_visit(w, schema_find_relation(t->definition,
			                                   t->relation));
	}
}

/* Kleene values of membership, ordered so that OR is max and AND is min. */
enum { K_FALSE = 0, K_COND = 1, K_TRUE = 2 };

static int kleene_of(pemba_permissionship p)
{
	return p == PEMBA_HAS_PERMISSION           ? K_TRUE
	       : p == PEMBA_CONDITIONAL_PERMISSION ? K_COND
	                                           : K_FALSE;
}

static pemba_permissionship permissionship_of(int k)
{
	return k == K_TRUE   ? PEMBA_HAS_PERMISSION
	       : k == K_COND ? PEMBA_CONDITIONAL_PERMISSION
	                     : PEMBA_NO_PERMISSION;
}

typedef struct member {
	const char *id;
	int value; /* K_* */
} member;

/* One LookupSubjects answer: the concrete subjects, the wildcard's value
 * and its exclusions (K_TRUE: surely excluded, K_COND: by a caveat). */
typedef struct subject_set {
	member *concrete;
	size_t n, cap;
	int wildcard;
	member *excluded;
	size_t nexcluded;
} subject_set;

typedef struct collect_ctx {
	arena *a;
	subject_set *set;
} collect_ctx;

static int collect_item(void *ctx, const pemba_lookup_item *item)
{
	collect_ctx *c = ctx;
	subject_set *s = c->set;
	if (strcmp(item->id, "*") == 0) {
		s->wildcard = kleene_of(item->permissionship);
		s->nexcluded = item->nexcluded;
		s->excluded =
		    arena_alloc(c->a, (item->nexcluded + 1) * sizeof(member));
		for (size_t i = 0; i < item->nexcluded; i++)
			s->excluded[i] = (member){
			    arena_strdup(c->a, item->excluded[i].id),
			    kleene_of(item->excluded[i].permissionship)};
		return 0;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		member *m = arena_alloc(c->a, cap * sizeof(*m));
		if (s->n)
			memcpy(m, s->concrete, s->n * sizeof(*m));
		s->concrete = m;
		s->cap = cap;
	}
	s->concrete[s->n++] = (member){arena_strdup(c->a, item->id),
	                               kleene_of(item->permissionship)};
	return 0;
}

static int member_cmp(const void *a, const void *b)
{
	return strcmp(((const member *)a)->id, ((const member *)b)->id);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int member_value(const member *m, size_t n, const char *id)
{
	member key = {id, 0};
	const member *hit =
	    n ? bsearch(&key, m, n, sizeof(*m), member_cmp) : NULL;
	return hit ? hit->value : K_FALSE;
}

/* Effective membership of `id`: listed, or covered by the wildcard and
 * not excluded. */
static int effective(const subject_set *s, const char *id)
{
	int listed = member_value(s->concrete, s->n, id);
	int not_excluded = K_TRUE - member_value(s->excluded, s->nexcluded, id);
	int via_wildcard =
	    s->wildcard < not_excluded ? s->wildcard : not_excluded;
	return listed > via_wildcard ? listed : via_wildcard;
}

typedef struct verify_run {
	pemba_db *db;
	const schema *sc;
	pemba_revision rev;
	const pemba_verify_request *req;
	size_t max_report;
	pemba_verify_fn fn;
	void *ctx;
	pemba_verify_summary *sum;
	bool stopped;
	arena *a; /* per resource */
} verify_run;

static int report(verify_run *v, const char *resource_id, const char *subject,
                  int first, int second)
{
	v->sum->differences++;
	if (!v->fn || v->sum->differences > v->max_report)
		return 0;
	pemba_verify_difference d = {
	    .resource_id = resource_id,
	    .subject = subject,
	    .first = permissionship_of(first),
	    .second = permissionship_of(second),
	};
	if (v->fn(v->ctx, &d))
		v->stopped = true;
	return 0;
}

static int lookup_set(verify_run *v, const char *resource_id,
                      const char *permission, const subject_kind *k,
                      subject_set *out, pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	collect_ctx c = {v->a, out};
	pemba_lookup_subjects_request lr = {
	    .resource_type = v->req->resource_type,
	    .resource_id = resource_id,
	    .permission = permission,
	    .subject_type = k->type,
	    .subject_relation = k->relation,
	    .on_item = collect_item,
	};
	int rc = engine_lookup_subjects(v->db->check_arena, v->db->st, v->sc,
	                                v->rev, &lr, NULL, &c, err);
	if (rc < 0)
		return rc;
	if (out->n > 1)
		qsort(out->concrete, out->n, sizeof(member), member_cmp);
	if (out->nexcluded > 1)
		qsort(out->excluded, out->nexcluded, sizeof(member),
		      member_cmp);
	return PEMBA_OK;
}

/* Compares the two permissions on one resource for one subject kind. */
static int verify_kind(verify_run *v, const char *resource_id,
                       const subject_kind *k, pemba_error *err)
{
	subject_set x, y;
	int rc;
	if ((rc = lookup_set(v, resource_id, v->req->first, k, &x, err)) < 0 ||
	    (rc = lookup_set(v, resource_id, v->req->second, k, &y, err)) < 0)
		return rc;
	if (x.wildcard != y.wildcard) {
		report(v, resource_id, arena_printf(v->a, "%s:*", k->type),
		       x.wildcard, y.wildcard);
		if (v->stopped)
			return PEMBA_OK;
	}
	/* Every subject either side names; any other subject is covered by
	 * both wildcards alike (compared above). */
	size_t nids = x.n + x.nexcluded + y.n + y.nexcluded;
	if (nids == 0)
		return PEMBA_OK;
	const char **ids = arena_alloc(v->a, nids * sizeof(*ids));
	size_t m = 0;
	const subject_set *sets[2] = {&x, &y};
	for (int s = 0; s < 2; s++) {
		for (size_t i = 0; i < sets[s]->n; i++)
			ids[m++] = sets[s]->concrete[i].id;
		for (size_t i = 0; i < sets[s]->nexcluded; i++)
			ids[m++] = sets[s]->excluded[i].id;
	}
	qsort(ids, m, sizeof(*ids), str_cmp);
	for (size_t i = 0; i < m && !v->stopped; i++) {
		if (i > 0 && strcmp(ids[i], ids[i - 1]) == 0)
			continue;
		int a = effective(&x, ids[i]), b = effective(&y, ids[i]);
		if (a != b)
			report(v, resource_id,
			       arena_printf(v->a, "%s:%s%s%s", k->type, ids[i],
			                    k->relation[0] ? "#" : "",
			                    k->relation),
			       a, b);
	}
	return PEMBA_OK;
}

/* Rows read per page of the resource scan; the page's distinct resource
 * ids are then compared inside the same read transaction. */
#define VERIFY_PAGE_ROWS 1024

/* Validates a relation or permission name of the request. */
static int verify_check_name(const schema_definition *def, const char *name,
                             const char *what, pemba_error *err)
{
	if (!valid_relation(name))
		return error_set(err, PEMBA_EINVAL, "invalid %s `%s`", what,
		                 name ? name : "");
	if (schema_find_relation(def, name) == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s`",
		                 name, def->name);
	return PEMBA_OK;
}

int pemba_verify_permission(pemba_db *db, pemba_revision at,
                            const pemba_verify_request *req, pemba_verify_fn fn,
                            void *ctx, pemba_verify_summary *out,
                            pemba_error *err)
{
	error_clear(err);
	pemba_verify_summary sum = {0};
	if (out)
		*out = sum;
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, req);
	if (!valid_type(req->resource_type))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid resource type `%s`",
		                 req->resource_type ? req->resource_type : "");
	pemba_revision rev;
	const schema *sc;
	int rc = core_begin_read(db, at, &rev, &sc, err);
	if (rc < 0)
		return rc;
	const schema_definition *def =
	    sc ? schema_find_definition(sc, req->resource_type) : NULL;
	if (def == NULL) {
		store_read_end(db->st);
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found",
		                 req->resource_type);
	}
	if ((rc = verify_check_name(def, req->first,
	                            "first relation or "
	                            "permission",
	                            err)) < 0 ||
	    (rc = verify_check_name(def, req->second,
	                            "second relation or "
	                            "permission",
	                            err)) < 0) {
		store_read_end(db->st);
		return rc;
	}
	kind_walk w = {.a = arena_create(0)};
	kind_visit(&w, schema_find_relation(def, req->first));
	kind_visit(&w, schema_find_relation(def, req->second));
	store_read_end(db->st);

	sum.revision = rev;
	verify_run v = {
	    .db = db,
	    .rev = rev,
	    .req = req,
	    .max_report = req->max_differences ? req->max_differences : 100,
	    .fn = fn,
	    .ctx = ctx,
	    .sum = &sum,
	    .a = arena_create(0),
	};
	arena *page = arena_create(0);
	const char **ids = xcalloc(VERIFY_PAGE_ROWS, sizeof(*ids));
	key_buf last_row = {0}; /* key of the last row scanned */
	char *last_id = NULL;   /* the last resource compared */
	bool more = true;
	while (more && !v.stopped) {
		arena_reset(page);
		if ((rc = store_read_begin(db->st, err)) < 0)
			break;
		/* The schema pointer is re-fetched per page: the cache may
		 * have dropped it while this handle did other work. */
		if ((rc = store_check_revision(db->st, rev, err)) < 0 ||
		    (rc = core_schema_at(db, rev, &v.sc, err)) < 0) {
			store_read_end(db->st);
			break;
		}
		store_rel after_key;
		const char *f[6];
		const store_rel *after = NULL;
		if (last_row.len && key_buf_fields(&last_row, f, 6)) {
			after_key = (store_rel){f[0], f[1], f[2], f[3], f[4],
			                        f[5], "",   "",   0,    0};
			after = &after_key;
		}
		store_filter filter = {.resource_type = req->resource_type};
		store_iter *it;
		size_t nids = 0, nrows = 0;
		rc = store_query(db->st, rev, &filter, after, VERIFY_PAGE_ROWS,
		                 &it, err);
		if (rc == 0) {
			const store_rel *row;
			const char *prev = last_id;
			while ((rc = store_iter_next(it, &row, err)) == 1) {
				nrows++;
				if (!prev || strcmp(prev, row->resource_id)) {
					prev = ids[nids++] = arena_strdup(
					    page, row->resource_id);
				}
				const char *k[6] = {
				    row->resource_type, row->resource_id,
				    row->relation,      row->subject_type,
				    row->subject_id,    row->subject_relation};
				key_buf_set(&last_row, k, 6);
			}
			store_iter_close(it);
		}
		more = rc == 0 && nrows == VERIFY_PAGE_ROWS;
		for (size_t i = 0; rc == 0 && i < nids && !v.stopped; i++) {
			arena_reset(v.a);
			sum.resources++;
			for (size_t k = 0;
			     rc == 0 && k < w.nkinds && !v.stopped; k++)
				rc = verify_kind(&v, ids[i], &w.kinds[k], err);
		}
		if (rc == 0 && nids) {
			free(last_id);
			last_id = xstrdup(ids[nids - 1]);
		}
		store_read_end(db->st);
		if (rc < 0)
			break;
	}
	free(last_id);
	free(last_row.bytes);
	free(ids);
	free(w.kinds);
	free(w.visited);
	arena_destroy(w.a);
	arena_destroy(page);
	arena_destroy(v.a);
	if (rc < 0)
		return rc;
	sum.complete = !v.stopped;
	sum.equal = sum.complete && sum.differences == 0;
	if (out)
		*out = sum;
	return PEMBA_OK;
}
