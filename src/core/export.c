/*
 * export.c -- pemba_export_relationships: every relationship at one
 * revision, in pages with a resumable cursor (SpiceDB's
 * ExportBulkRelationships).
 *
 * The cursor carries the revision and the key of the last relationship
 * delivered, so a resumed export reads the same snapshot and continues
 * with an index seek (store_scan), whatever handle or process resumes it.
 * Format (opaque to callers): "e1:<revision>:<hex of the six key fields
 * joined by NUL bytes>".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define CURSOR_PREFIX "e1:"
#define KEY_FIELDS 6
/* Six fields, ids at most PEMBA_MAX_OBJECT_ID bytes, names far shorter;
 * hex doubles it. */
#define CURSOR_MAX_BYTES (8 * (2 * PEMBA_MAX_OBJECT_ID + 1024))

/* ================================================================ cursor */

/* The key of a relationship as the cursor stores it: the six fields one
 * after another, each NUL-terminated. */
typedef struct export_key {
	char *bytes;
	size_t len, cap;
} export_key;

static void key_set(export_key *k, const store_rel *r)
{
	const char *f[KEY_FIELDS] = {r->resource_type, r->resource_id,
	                             r->relation,      r->subject_type,
	                             r->subject_id,    r->subject_relation};
	size_t need = 0;
	for (int i = 0; i < KEY_FIELDS; i++)
		need += strlen(f[i]) + 1;
	if (need > k->cap) {
		k->cap = need * 2;
		k->bytes = xrealloc(k->bytes, k->cap);
	}
	k->len = 0;
	for (int i = 0; i < KEY_FIELDS; i++) {
		size_t n = strlen(f[i]) + 1;
		memcpy(k->bytes + k->len, f[i], n);
		k->len += n;
	}
}

static char *cursor_encode(pemba_revision rev, const export_key *k)
{
	static const char hex[] = "0123456789abcdef";
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb, CURSOR_PREFIX "%" PRIu64 ":", rev);
	for (size_t i = 0; i < k->len; i++) {
		unsigned char c = (unsigned char)k->bytes[i];
		char pair[3] = {hex[c >> 4], hex[c & 15], '\0'};
		strbuf_puts(&sb, pair);
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

/* Decodes a cursor into its revision and key; the key's fields point into
 * k->bytes.  PEMBA_EINVAL for anything this file did not produce. */
static int cursor_decode(const char *cursor, pemba_revision *rev, export_key *k,
                         store_rel *key, pemba_error *err)
{
	size_t len = strlen(cursor);
	const char *p = cursor + strlen(CURSOR_PREFIX);
	char *end;
	if (len > CURSOR_MAX_BYTES ||
	    strncmp(cursor, CURSOR_PREFIX, strlen(CURSOR_PREFIX)) != 0 ||
	    *p < '1' || *p > '9')
		goto bad;
	unsigned long long r = strtoull(p, &end, 10);
	if (*end != ':')
		goto bad;
	p = end + 1;
	size_t hexlen = strlen(p);
	if (hexlen == 0 || hexlen % 2)
		goto bad;
	k->cap = k->len = hexlen / 2;
	k->bytes = xmalloc(k->cap);
	for (size_t i = 0; i < k->len; i++) {
		int hi = hex_value(p[2 * i]), lo = hex_value(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			goto bad;
		k->bytes[i] = (char)(hi << 4 | lo);
	}
	/* Exactly six NUL-terminated fields; ids and names non-empty except
	 * the subject relation. */
	const char *fields[KEY_FIELDS];
	size_t at = 0;
	for (int i = 0; i < KEY_FIELDS; i++) {
		if (at >= k->len)
			goto bad;
		fields[i] = k->bytes + at;
		const char *nul = memchr(fields[i], '\0', k->len - at);
		if (!nul || (nul == fields[i] && i != KEY_FIELDS - 1))
			goto bad;
		at = (size_t)(nul - k->bytes) + 1;
	}
	if (at != k->len)
		goto bad;
	*rev = (pemba_revision)r;
	*key = (store_rel){
	    .resource_type = fields[0],
	    .resource_id = fields[1],
	    .relation = fields[2],
	    .subject_type = fields[3],
	    .subject_id = fields[4],
	    .subject_relation = fields[5],
	};
	return PEMBA_OK;
bad:
	return error_set(err, PEMBA_EINVAL,
	                 "invalid export cursor (not one returned by an "
	                 "export of this datastore)");
}

/* ================================================================ export */

static void to_relationship(const store_rel *r, pemba_relationship *out)
{
	*out = (pemba_relationship){
	    .resource_type = r->resource_type,
	    .resource_id = r->resource_id,
	    .relation = r->relation,
	    .subject_type = r->subject_type,
	    .subject_id = r->subject_id,
	    .subject_relation =
	        core_is_empty(r->subject_relation) ? NULL : r->subject_relation,
	    .caveat_name =
	        core_is_empty(r->caveat_name) ? NULL : r->caveat_name,
	    .caveat_context =
	        core_is_empty(r->caveat_context) ? NULL : r->caveat_context,
	    .expiration_ms = r->expiration_ms,
	};
}

int pemba_export_relationships(pemba_db *db, pemba_revision at,
                               const char *cursor, size_t limit,
                               pemba_relationship_fn fn, void *ctx,
                               pemba_revision *rev_out, char **next_cursor_out,
                               pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, fn);
	CORE_REQUIRE(err, next_cursor_out);
	*next_cursor_out = NULL;
	if (rev_out)
		*rev_out = 0;

	export_key k = {0};
	store_rel after_key;
	const store_rel *after = NULL;
	pemba_revision rev;
	int rc;
	if (cursor) {
		pemba_revision crev = 0;
		if ((rc = cursor_decode(cursor, &crev, &k, &after_key, err)))
			goto out;
		if (at != PEMBA_REVISION_HEAD && at != crev) {
			rc = error_set(err, PEMBA_EINVAL,
			               "the export cursor is for revision "
			               "%" PRIu64 ", not %" PRIu64,
			               crev, at);
			goto out;
		}
		if ((rc = store_check_revision(db->st, crev, err)))
			goto out;
		rev = crev;
		after = &after_key;
	} else if ((rc = core_resolve_revision(db, at, &rev, err))) {
		goto out;
	}
	if (rev_out)
		*rev_out = rev;
	if (rev == 0)
		goto out; /* empty datastore: nothing to export */

	if ((rc = store_read_begin(db->st, err)))
		goto out;
	store_iter *it;
	/* One row more than asked tells whether another page exists. */
	if ((rc = store_scan(db->st, rev, after, limit ? limit + 1 : 0, &it,
	                     err))) {
		store_read_end(db->st);
		goto out;
	}
	size_t delivered = 0;
	bool resume = false;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, err)) == 1) {
		if (limit && delivered == limit) {
			resume = true; /* another page follows */
			break;
		}
		pemba_relationship rel;
		to_relationship(row, &rel);
		key_set(&k, row);
		delivered++;
		if (fn(ctx, &rel)) {
			resume = true; /* stopped early: resume after it */
			break;
		}
	}
	store_iter_close(it);
	store_read_end(db->st);
	if (rc > 0)
		rc = PEMBA_OK;
	if (rc == PEMBA_OK && resume && k.len)
		*next_cursor_out = cursor_encode(rev, &k);
out:
	free(k.bytes);
	return rc;
}
