/*
 * integrity.c -- `pemba datastore check`: every live relationship
 * against the schema, and the removal of the orphans it finds.
 *
 * The check is a read: one store_scan per page at one revision (the head
 * when it starts), each row run through the write path's own validation
 * (core_check_rel_syntax, then core_classify_rel_schema), so an orphan is
 * exactly a row that a WriteRelationships of it would refuse.  Memory is
 * one page of rows and the copy of the last key, whatever the datastore
 * holds.
 *
 * The removal is a write, one transaction, safe against concurrent
 * writers without locking the datastore: writers are serialized, so
 * inside the transaction nothing changes between reading a row and
 * deleting it.  Each relationship to delete is looked up by its exact key
 * in the transaction and must still be stored with the same caveat,
 * context and expiration, and still be refused by the schema current in
 * the transaction; one that is not (someone rewrote it, deleted it, fixed
 * the schema) aborts the whole removal, having deleted nothing.  What the
 * caller saved before (its file of moved relationships) therefore always
 * equals what was deleted.
 */
#include <jansson.h>
#include <string.h>

#include "core/core.h"
#include "core/integrity.h"
#include "util/error.h"
#include "util/xalloc.h"

#define CHECK_PAGE_DEFAULT 1000

static const char *const problem_names[CORE_REL_PROBLEM_COUNT] = {
    [CORE_REL_OK] = "ok",
    [CORE_REL_INVALID] = "invalid",
    [CORE_REL_UNKNOWN_RESOURCE_TYPE] = "unknown_resource_type",
    [CORE_REL_UNKNOWN_RELATION] = "unknown_relation",
    [CORE_REL_PERMISSION] = "relation_is_permission",
    [CORE_REL_UNKNOWN_SUBJECT_TYPE] = "unknown_subject_type",
    [CORE_REL_UNKNOWN_SUBJECT_RELATION] = "unknown_subject_relation",
    [CORE_REL_SUBJECT_NOT_ALLOWED] = "subject_not_allowed",
    [CORE_REL_CAVEAT_UNKNOWN] = "caveat_unknown",
    [CORE_REL_CAVEAT_NOT_ALLOWED] = "caveat_not_allowed",
    [CORE_REL_CAVEAT_CONTEXT] = "caveat_context_invalid",
    [CORE_REL_EXPIRATION_NOT_ALLOWED] = "expiration_not_allowed",
    [CORE_REL_EXPIRATION_REQUIRED] = "expiration_required",
};

const char *core_rel_problem_name(core_rel_problem kind)
{
	if ((int)kind < 0 || kind >= CORE_REL_PROBLEM_COUNT)
		return "unknown";
	return problem_names[kind];
}

int core_integrity_open(const char *uri, pemba_db **out, pemba_error *err)
{
	error_clear(err);
	if (uri == NULL || out == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "a datastore URI is required");
	store_options so = {.migrate = STORE_MIGRATE_REQUIRE, .must_exist = 1};
	store *st;
	int rc = store_open(uri, &so, &st, err);
	if (rc < 0)
		return rc;
	/* A shared lease, as a server holds: a layout migration must not
	 * run under the check (nor under the delete of --fix), and
	 * `datastore migrate` then names this process. */
	if ((rc = store_attach(st, "check", err)) < 0) {
		store_close(st);
		return rc;
	}
	*out = core_db_wrap(st);
	return PEMBA_OK;
}

/* Judges one row: CORE_REL_OK, or the rule it breaks with the message in
 * err.  `a` holds the message's text. */
static core_rel_problem judge(arena *a, const schema *sc,
                              const pemba_relationship *r, pemba_error *err)
{
	core_rel_problem kind = CORE_REL_OK;
	if (core_check_rel_syntax(a, r, err) < 0)
		return CORE_REL_INVALID;
	if (core_classify_rel_schema(a, sc, r, true, &kind, err) < 0 &&
	    kind == CORE_REL_OK)
		kind = CORE_REL_INVALID; /* a failure the classes miss */
	return kind;
}

/* ================================================================ check */

/* The key of the last row read, owned (the iterator's strings die with
 * it): where the next page starts. */
typedef struct scan_key {
	char *buf;
	size_t cap;
	store_rel rel;
} scan_key;

static void key_copy(scan_key *k, const store_rel *r)
{
	const char *fields[6] = {r->resource_type, r->resource_id,
	                         r->relation,      r->subject_type,
	                         r->subject_id,    r->subject_relation};
	size_t need = 0;
	for (int i = 0; i < 6; i++)
		need += strlen(fields[i]) + 1;
	if (need > k->cap) {
		k->buf = xrealloc(k->buf, need);
		k->cap = need;
	}
	const char *copies[6];
	char *p = k->buf;
	for (int i = 0; i < 6; i++) {
		size_t n = strlen(fields[i]) + 1;
		memcpy(p, fields[i], n);
		copies[i] = p;
		p += n;
	}
	memset(&k->rel, 0, sizeof(k->rel));
	k->rel.resource_type = copies[0];
	k->rel.resource_id = copies[1];
	k->rel.relation = copies[2];
	k->rel.subject_type = copies[3];
	k->rel.subject_id = copies[4];
	k->rel.subject_relation = copies[5];
	k->rel.caveat_name = "";
	k->rel.caveat_context = "";
}

int core_integrity_check(pemba_db *db, size_t page, core_orphan_fn fn,
                         void *ctx, core_check_progress_fn progress,
                         void *progress_ctx, core_integrity_report *out,
                         pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, out);
	memset(out, 0, sizeof(*out));
	if (page == 0)
		page = CHECK_PAGE_DEFAULT;
	pemba_revision rev;
	int rc = store_head_revision(db->st, &rev, err);
	if (rc < 0)
		return rc;
	out->revision = rev;
	if (rev == 0)
		return PEMBA_OK; /* nothing was ever written */
	const schema *sc;
	rc = core_schema_version_at(db, rev, &sc, &out->schema_revision, err);
	if (rc < 0)
		return rc;

	arena *a = arena_create(0);
	scan_key last = {0};
	bool have_last = false, stopped = false;
	for (;;) {
		store_iter *it;
		rc = store_scan(db->st, rev, have_last ? &last.rel : NULL, page,
		                &it, err);
		if (rc < 0)
			break;
		size_t n = 0;
		const store_rel *row;
		while ((rc = store_iter_next(it, &row, err)) == 1) {
			n++;
			out->checked++;
			arena_reset(a);
			pemba_relationship r;
			core_from_store_rel(row, &r);
			pemba_error why = {0};
			core_rel_problem kind = judge(a, sc, &r, &why);
			if (kind != CORE_REL_OK) {
				out->orphans++;
				out->by_kind[kind]++;
				core_orphan o = {.kind = kind,
				                 .rel = &r,
				                 .message = why.message};
				int stop = fn ? fn(ctx, &o) : 0;
				if (stop) {
					rc = stop;
					stopped = true;
					break;
				}
			}
			key_copy(&last, row);
			have_last = true;
		}
		store_iter_close(it);
		if (rc < 0 || stopped)
			break;
		if (progress)
			progress(progress_ctx, out->checked);
		if (n < page) {
			rc = PEMBA_OK;
			break;
		}
	}
	free(last.buf);
	arena_destroy(a);
	return rc;
}

/* =============================================================== remove */

/* Whether two caveat contexts say the same: equal as JSON values (the
 * text may differ in spacing after a round trip through a file). */
static bool same_context(const char *a, const char *b)
{
	bool ea = core_is_empty(a), eb = core_is_empty(b);
	if (ea || eb)
		return ea == eb;
	if (strcmp(a, b) == 0)
		return true;
	json_t *ja = json_loads(a, JSON_DECODE_ANY, NULL);
	json_t *jb = json_loads(b, JSON_DECODE_ANY, NULL);
	bool same = ja && jb && json_equal(ja, jb);
	json_decref(ja);
	json_decref(jb);
	return same;
}

/* Inside t: PEMBA_OK when r is stored exactly so (live, same caveat,
 * context and expiration), else PEMBA_EPRECONDITION saying what
 * differs. */
static int still_stored(arena *a, store_txn *t, const pemba_relationship *r,
                        pemba_error *err)
{
	store_rel key;
	core_to_store_rel(r, &key);
	store_filter f = {.resource_type = key.resource_type,
	                  .resource_id = key.resource_id,
	                  .relation = key.relation,
	                  .subject_type = key.subject_type,
	                  .subject_id = key.subject_id,
	                  .subject_relation = key.subject_relation};
	store_iter *it;
	int rc = store_txn_query(t, &f, 1, &it, err);
	if (rc < 0)
		return rc;
	const store_rel *row;
	rc = store_iter_next(it, &row, err);
	if (rc == 1) {
		bool same =
		    strcmp(row->caveat_name, key.caveat_name) == 0 &&
		    same_context(row->caveat_context, key.caveat_context) &&
		    row->expiration_ms == key.expiration_ms;
		rc = same ? PEMBA_OK
		          : error_set(err, PEMBA_EPRECONDITION,
		                      "relationship `%s` changed since the "
		                      "check (caveat, context or expiration)",
		                      core_rel_text(a, r));
	} else if (rc == 0) {
		rc = error_set(err, PEMBA_EPRECONDITION,
		               "relationship `%s` is no longer stored (deleted "
		               "or expired since the check)",
		               core_rel_text(a, r));
	}
	store_iter_close(it);
	return rc;
}

int core_integrity_remove(pemba_db *db, core_orphan_source_fn next, void *ctx,
                          pemba_revision *rev_out, uint64_t *removed_out,
                          pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, next);
	if (rev_out)
		*rev_out = 0;
	if (removed_out)
		*removed_out = 0;
	store_txn *t;
	pemba_revision rev;
	int rc = store_txn_begin(db->st, &t, &rev, err);
	if (rc < 0)
		return rc;
	if ((rc = core_check_writable(db, err)) < 0) {
		store_txn_abort(t);
		return rc;
	}
	/* Writers are serialized: the schema at rev - 1 is the one this
	 * transaction commits over. */
	const schema *sc;
	if ((rc = core_schema_at(db, rev - 1, &sc, err)) < 0) {
		store_txn_abort(t);
		return rc;
	}
	arena *a = arena_create(0);
	uint64_t removed = 0;
	pemba_relationship r;
	while ((rc = next(ctx, &r, err)) == 1) {
		arena_reset(a);
		pemba_error why = {0};
		if (judge(a, sc, &r, &why) == CORE_REL_OK) {
			rc = error_set(
			    err, PEMBA_EPRECONDITION,
			    "relationship `%s` is no longer an orphan: "
			    "the schema accepts it now",
			    core_rel_text(a, &r));
			break;
		}
		if ((rc = still_stored(a, t, &r, err)) < 0)
			break;
		store_rel key;
		core_to_store_rel(&r, &key);
		int deleted = 0;
		if ((rc = store_txn_delete(t, &key, &deleted, err)) < 0)
			break;
		if (!deleted) {
			rc = error_set(err, PEMBA_EPRECONDITION,
			               "relationship `%s` appears twice in the "
			               "list of relationships to delete",
			               core_rel_text(a, &r));
			break;
		}
		removed++;
	}
	arena_destroy(a);
	if (rc < 0 || removed == 0) {
		store_txn_abort(t);
		return rc < 0 ? rc : PEMBA_OK;
	}
	if ((rc = store_txn_commit(t, err)) < 0)
		return rc;
	if (rev_out)
		*rev_out = rev;
	if (removed_out)
		*removed_out = removed;
	return PEMBA_OK;
}

int core_integrity_writable(pemba_db *db, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	store_txn *t;
	pemba_revision rev;
	int rc = store_txn_begin(db->st, &t, &rev, err);
	if (rc < 0)
		return rc;
	rc = core_check_writable(db, err);
	store_txn_abort(t);
	return rc;
}
