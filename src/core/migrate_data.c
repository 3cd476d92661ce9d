/*
 * migrate_data.c -- the data steps of a schema migration:
 * pemba_copy_relationships (backfill one relation into another) and
 * pemba_verify_permission (prove that two relations or permissions grant
 * the same subjects before switching from one to the other).
 *
 * Copy writes batches, each one TOUCH import (core_import_from: the write
 * phase of pemba_import_commit, the batched insert path, with the same
 * validation, read-only and deprecation checks as any write) whose rows
 * are read from the source at the head inside that write transaction,
 * with an index seek after the last key copied (store_query's `after`).
 * Writers are serialized, so what a batch reads is what the source holds
 * when the batch commits: a relationship revoked before its batch is
 * never written back.  The only state to resume is (datastore, revision
 * range, count, last key): the cursor.
 *
 * Verify walks the resources of a type in id order, a page of rows at a
 * time, and for each resource compares the LookupSubjects results of the
 * two permissions for every subject kind the schema lets them reach.
 * Memory is bounded by one page plus one resource's subjects.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Makes k a copy of src. */
static void key_buf_set_bytes(key_buf *k, const key_buf *src)
{
	if (src->len > k->cap) {
		k->cap = src->len;
		k->bytes = xrealloc(k->bytes, k->cap);
	}
	memcpy(k->bytes, src->bytes, src->len);
	k->len = src->len;
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
 * one: "c2:<datastore digest, 16 hex>:<started at>:<last written, 0 if
 * none>:<copied>:<request digest, 16 hex>:<hex of the last source key:
 * resource id, subject type, subject id, subject relation, each
 * NUL-terminated; empty before the first batch>". */
#define COPY_CURSOR_PREFIX "c2:"
#define COPY_CURSOR_OLD_PREFIX "c1:"
#define COPY_KEY_FIELDS 4
#define COPY_CURSOR_MAX_BYTES (8 * (2 * PEMBA_MAX_OBJECT_ID + 1024))

typedef struct copy_spec {
	const char *resource_type, *relation;
	const char *to_resource_type, *to_relation;
	const char *subject_type; /* NULL: every subject type */
	const pemba_subject_mapping *maps;
	size_t nmaps;
	uint64_t digest; /* ties cursors to this request */
} copy_spec;

/* The cursor's state between batches. */
typedef struct copy_position {
	pemba_revision started_at; /* head when the copy began */
	pemba_revision written_at; /* the last batch's revision, 0: none */
	uint64_t copied;
	key_buf key; /* the last source key written; len 0: none */
} copy_position;

static uint64_t hash_text(const char *s, uint64_t h)
{
	s = s ? s : "";
	return hash_bytes(s, strlen(s) + 1, h);
}

static uint64_t copy_digest(const copy_spec *s)
{
	uint64_t h = 0;
	h = hash_text(s->resource_type, h);
	h = hash_text(s->relation, h);
	h = hash_text(s->to_resource_type, h);
	h = hash_text(s->to_relation, h);
	h = hash_text(s->subject_type, h);
	for (size_t i = 0; i < s->nmaps; i++) {
		h = hash_text(s->maps[i].from_type, h);
		h = hash_text(s->maps[i].from_relation, h);
		h = hash_text(s->maps[i].to_type, h);
		h = hash_text(s->maps[i].to_relation, h);
	}
	return h;
}

/* What a cursor records of its datastore: a digest of its identity (a
 * `datastore new-identity` copy is another datastore). */
static uint64_t datastore_digest(pemba_db *db)
{
	return hash_text(store_datastore_id(db->st), 0x70656d6261ull);
}

/* The cursor text of `pos` for request s on db (malloc'd, caller frees). */
static char *copy_cursor_encode(pemba_db *db, const copy_spec *s,
                                const copy_position *pos)
{
	static const char hex[] = "0123456789abcdef";
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb,
	              COPY_CURSOR_PREFIX "%016" PRIx64 ":%" PRIu64 ":%" PRIu64
	                                 ":%" PRIu64 ":%016" PRIx64 ":",
	              datastore_digest(db), pos->started_at, pos->written_at,
	              pos->copied, s->digest);
	for (size_t i = 0; i < pos->key.len; i++) {
		unsigned char c = (unsigned char)pos->key.bytes[i];
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

/* Parses 16 hex digits followed by ':' at *p (advanced past it). */
static bool parse_hex64(const char **p, uint64_t *out)
{
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		int d = hex_value((*p)[i]);
		if (d < 0)
			return false;
		v = v << 4 | (uint64_t)d;
	}
	if ((*p)[16] != ':')
		return false;
	*p += 17;
	*out = v;
	return true;
}

/* Parses a decimal number followed by ':' at *p (advanced past it). */
static bool parse_u64(const char **p, uint64_t *out)
{
	char *end;
	if (**p < '0' || **p > '9')
		return false;
	unsigned long long v = strtoull(*p, &end, 10);
	if (*end != ':')
		return false;
	*p = end + 1;
	*out = (uint64_t)v;
	return true;
}

/* The one refusal of a cursor that is well formed and of this request
 * but cannot be resumed here (another datastore, a collected revision):
 * PEMBA_EREVISION, with `why`. */
static int cursor_unusable(pemba_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int cursor_unusable(pemba_error *err, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return error_set(err, PEMBA_EREVISION,
	                 "cannot resume the copy from this cursor: %s; "
	                 "restart the copy without a cursor (safe: TOUCH "
	                 "makes copying a relationship again harmless)",
	                 why);
}

/*
 * Decodes a copy cursor made for request `s` into *pos (pos->key is
 * reallocated; the caller frees it) and checks that it can be resumed on
 * db: made on this datastore, its start revision not collected, its last
 * written revision not beyond the head.  PEMBA_EINVAL for malformed text
 * or a cursor of another copy; PEMBA_EREVISION (cursor_unusable) for a
 * cursor that cannot be resumed here.
 */
static int copy_cursor_decode(pemba_db *db, const copy_spec *s,
                              const char *cursor, copy_position *pos,
                              pemba_error *err)
{
	size_t plen = strlen(COPY_CURSOR_PREFIX);
	const char *p = cursor + plen;
	uint64_t ds, start, last, count, digest;
	if (strncmp(cursor, COPY_CURSOR_OLD_PREFIX, plen) == 0 &&
	    parse_u64(&p, &start) && parse_u64(&p, &count) &&
	    parse_hex64(&p, &digest))
		return cursor_unusable(err, "it was made by an older pemba, "
		                            "without its datastore");
	p = cursor + plen;
	if (strlen(cursor) > COPY_CURSOR_MAX_BYTES ||
	    strncmp(cursor, COPY_CURSOR_PREFIX, plen) ||
	    !parse_hex64(&p, &ds) || !parse_u64(&p, &start) || start == 0 ||
	    !parse_u64(&p, &last) || (last && last < start) ||
	    !parse_u64(&p, &count) || !parse_hex64(&p, &digest))
		goto bad;
	size_t hexlen = strlen(p);
	if (hexlen % 2)
		goto bad;
	key_buf *k = &pos->key;
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
		return error_set(
		    err, PEMBA_EINVAL,
		    "the copy cursor belongs to another copy (not "
		    "from %s#%s to %s#%s%s%s with the same subject "
		    "mappings)",
		    s->resource_type, s->relation, s->to_resource_type,
		    s->to_relation, s->subject_type ? " for subject type " : "",
		    s->subject_type ? s->subject_type : "");
	if (ds != datastore_digest(db))
		return cursor_unusable(err, "it was made on another datastore");
	pemba_revision head;
	int rc = core_resolve_revision(db, PEMBA_REVISION_HEAD, &head, err);
	if (rc < 0)
		return rc;
	if (last > head || start > head)
		return cursor_unusable(err,
		                       "it names revision %" PRIu64
		                       ", beyond this datastore's head %" PRIu64
		                       " (another datastore, or one restored "
		                       "from an older backup)",
		                       last > start ? last : start, head);
	if (store_check_revision(db->st, start, err) < 0)
		return cursor_unusable(err,
		                       "its start revision %" PRIu64
		                       " has been garbage-collected",
		                       start);
	pos->started_at = start;
	pos->written_at = last;
	pos->copied = count;
	return PEMBA_OK;
bad:
	return error_set(err, PEMBA_EINVAL,
	                 "invalid copy cursor (not one reported by a "
	                 "relationship copy)");
}

/* ------------------------------------------------------ subject mapping */

/* The mapping that applies to a source subject (type, relation "" for
 * none), or NULL: one naming the relation wins over one naming only the
 * type. */
static const pemba_subject_mapping *
find_mapping(const copy_spec *s, const char *type, const char *relation)
{
	const pemba_subject_mapping *any = NULL;
	for (size_t i = 0; i < s->nmaps; i++) {
		const pemba_subject_mapping *m = &s->maps[i];
		if (strcmp(m->from_type, type) != 0)
			continue;
		if (core_is_empty(m->from_relation)) {
			if (!any)
				any = m;
		} else if (strcmp(m->from_relation, relation ? relation : "") ==
		           0) {
			return m;
		}
	}
	return any;
}

/* The subject type and relation a source subject becomes ("" for none). */
static void map_subject(const copy_spec *s, const char *type,
                        const char *relation, const char **type_out,
                        const char **relation_out)
{
	const pemba_subject_mapping *m = find_mapping(s, type, relation);
	*type_out = m ? m->to_type : type;
	*relation_out =
	    m && !core_is_empty(m->to_relation) ? m->to_relation : relation;
}

/* Syntax of the mappings: names valid, no source named twice, a target
 * relation only with a source relation. */
static int check_mappings(const copy_spec *s, pemba_error *err)
{
	if (s->nmaps > PEMBA_COPY_MAX_MAPPINGS)
		return error_set(err, PEMBA_ELIMIT,
		                 "%zu subject mappings: at most %d per copy",
		                 s->nmaps, PEMBA_COPY_MAX_MAPPINGS);
	for (size_t i = 0; i < s->nmaps; i++) {
		const pemba_subject_mapping *m = &s->maps[i];
		if (!valid_type(m->from_type) || !valid_type(m->to_type) ||
		    (!core_is_empty(m->from_relation) &&
		     !valid_relation(m->from_relation)) ||
		    (!core_is_empty(m->to_relation) &&
		     !valid_relation(m->to_relation)))
			return error_set(
			    err, PEMBA_EINVAL,
			    "invalid subject mapping `%s%s%s=%s%s%s`",
			    m->from_type ? m->from_type : "",
			    core_is_empty(m->from_relation) ? "" : "#",
			    m->from_relation ? m->from_relation : "",
			    m->to_type ? m->to_type : "",
			    core_is_empty(m->to_relation) ? "" : "#",
			    m->to_relation ? m->to_relation : "");
		if (core_is_empty(m->from_relation) &&
		    !core_is_empty(m->to_relation))
			return error_set(
			    err, PEMBA_EINVAL,
			    "subject mapping `%s=%s#%s`: a target subject "
			    "relation needs a source one (`%s#REL=%s#%s`)",
			    m->from_type, m->to_type, m->to_relation,
			    m->from_type, m->to_type, m->to_relation);
		for (size_t j = 0; j < i; j++)
			if (strcmp(s->maps[j].from_type, m->from_type) == 0 &&
			    same_text(s->maps[j].from_relation,
			              m->from_relation))
				return error_set(
				    err, PEMBA_EINVAL,
				    "subject type `%s%s%s` is mapped twice",
				    m->from_type,
				    core_is_empty(m->from_relation) ? "" : "#",
				    m->from_relation ? m->from_relation : "");
	}
	return PEMBA_OK;
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

/* Looks at the head for one source relationship that has allowed type t
 * (subject type, relation, wildcard, caveat, expiration).  1 and its text
 * in *found (allocated in a), 0 if there is none, < 0 on error.  A
 * wildcard is found through the subject index; other types scan the
 * source's rows of that subject type.  Inside a read transaction. */
static int find_row_of_type(pemba_db *db, const copy_spec *s,
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
	int rc =
	    store_query(db->st, PEMBA_REVISION_HEAD, &f, NULL, 0, &it, err);
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

/* Looks up TYPE#REL in sc for the messages below: the relation, or an
 * error naming what is missing. */
static int find_relation(const schema *sc, const char *type,
                         const char *relation, const schema_relation **out,
                         pemba_error *err)
{
	const schema_definition *def =
	    sc ? schema_find_definition(sc, type) : NULL;
	if (def == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found", type);
	*out = schema_find_relation(def, relation);
	if (*out == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s`",
		                 relation, type);
	return PEMBA_OK;
}

/*
 * Checks the request against the head's schema before anything is
 * written: the source and target are relations; the subject-type filter
 * names a type the source allows; every mapping's source type is allowed
 * by the source and its target type by the target (PEMBA_EINVAL naming
 * the type); and every source allowed type (of the requested subject
 * type) that the target does not allow once mapped has no relationship.
 * Strings of messages go to `a`.
 */
static int copy_check_schema(pemba_db *db, const copy_spec *s, arena *a,
                             pemba_error *err)
{
	pemba_revision head;
	const schema *sc;
	const schema_relation *from, *to;
	int rc;
	if ((rc = core_resolve_revision(db, PEMBA_REVISION_HEAD, &head, err)) <
	        0 ||
	    (rc = core_schema_at(db, head, &sc, err)) < 0 ||
	    (rc = find_relation(sc, s->resource_type, s->relation, &from,
	                        err)) < 0)
		return rc;
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
	if ((rc = find_relation(sc, s->to_resource_type, s->to_relation, &to,
	                        err)) < 0)
		return rc;
	if (to->is_permission)
		return error_set(
		    err, PEMBA_EINVAL,
		    "cannot copy into permission `%s` under "
		    "definition `%s`: the target must be a relation",
		    s->to_relation, s->to_resource_type);

	/* Each mapping: its source type must be one the source allows, its
	 * target type one the target allows. */
	for (size_t i = 0; i < s->nmaps; i++) {
		const pemba_subject_mapping *m = &s->maps[i];
		bool in_source = false, in_target = false;
		for (size_t j = 0; j < from->ntypes; j++)
			in_source |=
			    strcmp(from->types[j].type, m->from_type) == 0 &&
			    (core_is_empty(m->from_relation) ||
			     same_text(from->types[j].relation,
			               m->from_relation));
		for (size_t j = 0; j < to->ntypes; j++)
			in_target |=
			    strcmp(to->types[j].type, m->to_type) == 0 &&
			    (core_is_empty(m->to_relation) ||
			     same_text(to->types[j].relation, m->to_relation));
		const char *from_text =
		    arena_printf(a, "%s%s%s", m->from_type,
		                 core_is_empty(m->from_relation) ? "" : "#",
		                 m->from_relation ? m->from_relation : "");
		const char *to_text =
		    arena_printf(a, "%s%s%s", m->to_type,
		                 core_is_empty(m->to_relation) ? "" : "#",
		                 m->to_relation ? m->to_relation : "");
		if (!in_source)
			return error_set(
			    err, PEMBA_EINVAL,
			    "cannot map subject type `%s`: relation "
			    "`%s#%s` does not allow it",
			    from_text, s->resource_type, s->relation);
		if (!in_target)
			return error_set(
			    err, PEMBA_EINVAL,
			    "cannot map subject type `%s` to `%s`: "
			    "relation `%s#%s` does not allow subjects "
			    "of type `%s`",
			    from_text, to_text, s->to_resource_type,
			    s->to_relation, to_text);
	}

	for (size_t i = 0; i < from->ntypes; i++) {
		const schema_allowed_type *t = &from->types[i];
		if (s->subject_type && strcmp(t->type, s->subject_type) != 0)
			continue;
		schema_allowed_type mapped = *t;
		const char *rel;
		map_subject(s, t->type, t->relation ? t->relation : "",
		            &mapped.type, &rel);
		mapped.relation = rel[0] ? rel : NULL;
		if (relation_accepts(to, &mapped))
			continue;
		const char *found = NULL;
		if ((rc = store_read_begin(db->st, err)) < 0)
			return rc;
		rc = find_row_of_type(db, s, t, a, &found, err);
		store_read_end(db->st);
		if (rc < 0)
			return rc;
		if (found)
			return error_set(
			    err, PEMBA_EINVAL,
			    "cannot copy `%s#%s` to `%s#%s`: subjects of type "
			    "`%s` are not allowed on relation `%s#%s`, and "
			    "relationship `%s` has one%s%s%s; allow the type "
			    "on "
			    "the target first, map it, or copy only other "
			    "subject types",
			    s->resource_type, s->relation, s->to_resource_type,
			    s->to_relation, allowed_type_text(a, &mapped),
			    s->to_resource_type, s->to_relation, found,
			    mapped.type != t->type ? " (mapped from `" : "",
			    mapped.type != t->type ? allowed_type_text(a, t)
			                           : "",
			    mapped.type != t->type ? "`)" : "");
	}
	return PEMBA_OK;
}

/* ---------------------------------------------------------- the copy */

/* One batch's row source (core_row_source_fn): reads the source at the
 * head inside the batch's write transaction, after the last key taken,
 * and turns each row into its target. */
typedef struct copy_source {
	pemba_db *db;
	const copy_spec *s;
	size_t remaining; /* rows the batch may still take */
	bool exhausted;   /* the source has no row after `last` */
	size_t taken;
	key_buf last; /* source key of the last row taken (heap) */
	unsigned budget_ms; /* the batch's time budget, 0: none */
	int64_t deadline_ns; /* set at the batch's first read */
} copy_source;

#define COPY_BUDGET_ROUND 1024

static int64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* core_row_source_fn of a batch: up to min(max, rows the batch may still
 * take) source rows after src->last, read at `head` (the transaction's
 * start: nothing else writes until it commits), as target rows in
 * rows[0..*n_out) with strings in `a`; advances src->last (heap) past
 * them.  0 rows once the source is exhausted or the batch full. */
static int copy_next(void *ctx, store_txn *t, pemba_revision head, arena *a,
                     store_rel *rows, size_t max, size_t *n_out,
                     pemba_error *err)
{
	(void)t;
	copy_source *src = ctx;
	const copy_spec *s = src->s;
	*n_out = 0;
	if (src->exhausted || src->remaining == 0)
		return PEMBA_OK;
	/* The time budget starts inside the transaction (waiting for the
	 * write lock is not the batch's time); the first rows are always
	 * taken, so every batch makes progress. */
	if (src->budget_ms) {
		int64_t now = monotonic_ns();
		if (!src->deadline_ns)
			src->deadline_ns =
			    now + (int64_t)src->budget_ms * 1000000;
		else if (src->taken > 0 && now >= src->deadline_ns)
			return PEMBA_OK;
	}
	size_t limit = max < src->remaining ? max : src->remaining;
	/* With a time budget, read in smaller rounds so the budget is
	 * looked at every COPY_BUDGET_ROUND rows rather than every
	 * IMPORT_WRITE_CHUNK (16k: ~0.1 s of writing). */
	if (src->budget_ms && limit > COPY_BUDGET_ROUND)
		limit = COPY_BUDGET_ROUND;
	store_rel after_key;
	const store_rel *after = NULL;
	const char *f4[COPY_KEY_FIELDS];
	if (src->last.len && key_buf_fields(&src->last, f4, COPY_KEY_FIELDS)) {
		after_key = (store_rel){
		    .resource_type = s->resource_type,
		    .resource_id = f4[0],
		    .relation = s->relation,
		    .subject_type = f4[1],
		    .subject_id = f4[2],
		    .subject_relation = f4[3],
		};
		after = &after_key;
	}
	store_filter f = {.resource_type = s->resource_type,
	                  .relation = s->relation,
	                  .subject_type = s->subject_type};
	store_iter *it;
	/* The head, read while this transaction holds the write lock:
	 * nothing can change the source between this read and the commit. */
	int rc = store_query(src->db->st, head, &f, after, limit, &it, err);
	if (rc < 0)
		return rc;
	const store_rel *row;
	const char *last_subject_type = NULL, *last_subject_relation = NULL;
	size_t n = 0;
	while ((rc = store_iter_next(it, &row, err)) == 1) {
		store_rel *r = &rows[n++];
		const char *type, *relation;
		const char *subject_type = arena_strdup(a, row->subject_type);
		const char *subject_relation =
		    arena_strdup(a, row->subject_relation);
		map_subject(s, subject_type, subject_relation, &type,
		            &relation);
		*r = (store_rel){
		    .resource_type = s->to_resource_type,
		    .resource_id = arena_strdup(a, row->resource_id),
		    .relation = s->to_relation,
		    .subject_type = type,
		    .subject_id = arena_strdup(a, row->subject_id),
		    .subject_relation = relation,
		    .caveat_name = arena_strdup(a, row->caveat_name),
		    .caveat_context = arena_strdup(a, row->caveat_context),
		    .expiration_ms = row->expiration_ms,
		};
		last_subject_type = subject_type;
		last_subject_relation = subject_relation;
	}
	store_iter_close(it);
	if (rc < 0)
		return rc;
	if (n < limit)
		src->exhausted = true;
	if (n > 0) {
		const store_rel *r = &rows[n - 1];
		const char *k[COPY_KEY_FIELDS] = {
		    r->resource_id, last_subject_type, r->subject_id,
		    last_subject_relation};
		key_buf_set(&src->last, k, COPY_KEY_FIELDS);
	}
	src->remaining -= n;
	src->taken += n;
	*n_out = n;
	return PEMBA_OK;
}

/* Validates the names of a request (PEMBA_EINVAL naming the bad one). */
static int copy_check_names(const copy_spec *s, pemba_error *err)
{
	if (!valid_type(s->resource_type))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid source resource type `%s`",
		                 s->resource_type ? s->resource_type : "");
	if (!valid_relation(s->relation))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid source relation `%s`",
		                 s->relation ? s->relation : "");
	if (!valid_type(s->to_resource_type))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid target resource type `%s`",
		                 s->to_resource_type);
	if (!valid_relation(s->to_relation))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid target relation `%s`",
		                 s->to_relation ? s->to_relation : "");
	if (s->subject_type && !valid_type(s->subject_type))
		return error_set(err, PEMBA_EINVAL, "invalid subject type `%s`",
		                 s->subject_type);
	if (strcmp(s->resource_type, s->to_resource_type) == 0 &&
	    strcmp(s->relation, s->to_relation) == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "the source and the target are the same "
		                 "relation `%s#%s`",
		                 s->relation, s->resource_type);
	return check_mappings(s, err);
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
	if (req->nsubject_mappings && !req->subject_mappings)
		return error_set(err, PEMBA_EINVAL,
		                 "argument `subject_mappings` is NULL");
	copy_spec s = {
	    .resource_type = req->resource_type,
	    .relation = req->relation,
	    .to_resource_type = core_is_empty(req->to_resource_type)
	                            ? req->resource_type
	                            : req->to_resource_type,
	    .to_relation = req->to_relation,
	    .subject_type =
	        core_is_empty(req->subject_type) ? NULL : req->subject_type,
	    .maps = req->subject_mappings,
	    .nmaps = req->nsubject_mappings,
	};
	int rc;
	if ((rc = copy_check_names(&s, err)) < 0)
		return rc;
	size_t batch =
	    req->batch_size ? req->batch_size : PEMBA_COPY_DEFAULT_BATCH;
	if (batch > PEMBA_COPY_MAX_BATCH)
		return error_set(err, PEMBA_ELIMIT,
		                 "batch size %zu is above the limit of %d "
		                 "relationships per copy batch",
		                 req->batch_size, PEMBA_COPY_MAX_BATCH);
	if (req->max_batch_ms > PEMBA_COPY_MAX_BATCH_MS)
		return error_set(err, PEMBA_ELIMIT,
		                 "max batch time %u ms is above the limit of "
		                 "%d ms",
		                 req->max_batch_ms, PEMBA_COPY_MAX_BATCH_MS);
	s.digest = copy_digest(&s);

	copy_position pos = {0};
	pemba_revision written_at = 0; /* by this call */
	if (!core_is_empty(req->cursor)) {
		if ((rc = copy_cursor_decode(db, &s, req->cursor, &pos, err)) <
		    0) {
			free(pos.key.bytes);
			return rc;
		}
	} else if ((rc = core_resolve_revision(db, PEMBA_REVISION_HEAD,
	                                       &pos.started_at, err)) < 0) {
		return rc;
	} else if (pos.started_at == 0) {
		/* An empty datastore has no schema either. */
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found",
		                 s.resource_type);
	}
	/* From here on a cursor exists, so even a failure can be resumed. */
	char *cursor = copy_cursor_encode(db, &s, &pos);
	arena *a = arena_create(0);
	bool done = false;
	if ((rc = copy_check_schema(db, &s, a, err)) < 0)
		goto end;
	for (;;) {
		copy_source src = {.db = db,
		                   .s = &s,
		                   .remaining = batch,
		                   .budget_ms = req->max_batch_ms};
		if (pos.key.len)
			key_buf_set_bytes(&src.last, &pos.key);
		pemba_revision rev = 0;
		rc = core_import_from(db, PEMBA_OP_TOUCH, copy_next, &src,
		                      batch >= 10000, req->write_options, &rev,
		                      err);
		if (rc < 0) {
			free(src.last.bytes);
			break;
		}
		size_t n = src.taken;
		if (n > 0) {
			/* The cursor moves only once the batch committed. */
			free(pos.key.bytes);
			pos.key = src.last;
			pos.copied += n;
			pos.written_at = written_at = rev;
			free(cursor);
			cursor = copy_cursor_encode(db, &s, &pos);
		} else {
			free(src.last.bytes);
		}
		/* A batch ends full, out of time, or at the source's end. */
		done = src.exhausted || n == 0;
		pemba_copy_progress p = {
		    .copied = pos.copied,
		    .batch = n,
		    .cursor = cursor,
		    .snapshot = pos.started_at,
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
		/* Let the writers that waited for this batch in before the
		 * next one takes the write lock again (SQLite's waiters poll
		 * every millisecond; PostgreSQL queues them anyway). */
		struct timespec pause = {0, 2 * 1000 * 1000};
		nanosleep(&pause, NULL);
	}
end:
	if (out) {
		out->copied = pos.copied;
		out->snapshot = pos.started_at;
		out->written_at = written_at;
		out->done = rc == 0 && done;
		out->cursor = cursor;
	} else {
		free(cursor);
	}
	arena_destroy(a);
	free(pos.key.bytes);
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
