/*
 * watch.c -- pemba_watch_changes: the change feed behind SpiceDB's Watch.
 *
 * The store reads the changes of a revision range from the MVCC history
 * (store_changes: versions created in a revision are TOUCH, versions it
 * ended are DELETE, a replaced version is one TOUCH; TOUCHes first).
 * That is what SpiceDB's Watch reports: a created relationship is a
 * TOUCH there too, so nothing here needs to know CREATE from TOUCH, and
 * writes that changed nothing leave no version (tests/diff/
 * test_watch_ops_spicedb.c compares the two).  This file filters
 * them, groups them into one event per revision (split into chunks of
 * PEMBA_WATCH_CHUNK updates so memory stays bounded for bulk imports),
 * and adds schema-change and checkpoint events.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ================================================================ state */

/* Returned by the store callback when the user's callback asked to stop;
 * positive, so it cannot be mistaken for a pemba_code. */
#define WATCH_STOPPED 1

typedef struct watch_state {
	const pemba_watch_filter *filter;
	unsigned kinds;
	pemba_watch_fn fn;
	void *ctx;
	/* Updates of the revision being collected; their strings live in
	 * `strings`, reset after every delivered event. */
	pemba_update *updates;
	size_t n;
	arena *strings;
	/* Every change up to and including `through` has been delivered
	 * (or filtered out). */
	pemba_revision through;
	/* Revision of the last event delivered (0: none). */
	pemba_revision last_event;
} watch_state;

/* ============================================================ filtering */

/* Does field value `v` (never NULL; "" = none) pass a filter field `want`
 * (NULL or "" = anything)? */
static bool field_matches(const char *want, const char *v)
{
	return core_is_empty(want) || strcmp(want, v) == 0;
}

static bool filter_matches(const pemba_filter *f, const store_rel *r)
{
	if (!field_matches(f->resource_type, r->resource_type) ||
	    !field_matches(f->resource_id, r->resource_id) ||
	    !field_matches(f->relation, r->relation))
		return false;
	if (core_is_empty(f->subject_type))
		return true; /* no subject filter */
	if (strcmp(f->subject_type, r->subject_type) != 0 ||
	    !field_matches(f->subject_id, r->subject_id))
		return false;
	/* subject_relation: NULL any; "" or "..." none; else exact. */
	if (f->subject_relation == NULL)
		return true;
	return strcmp(core_subject_relation(f->subject_relation),
	              r->subject_relation) == 0;
}

static bool change_matches(const pemba_watch_filter *wf, const store_rel *r)
{
	if (wf == NULL || (wf->nobject_types == 0 && wf->nfilters == 0))
		return true;
	for (size_t i = 0; i < wf->nobject_types; i++)
		if (strcmp(wf->object_types[i], r->resource_type) == 0)
			return true;
	for (size_t i = 0; i < wf->nfilters; i++) {
		const char *prefix = wf->resource_id_prefixes
		                         ? wf->resource_id_prefixes[i]
		                         : NULL;
		if (filter_matches(&wf->filters[i], r) &&
		    (core_is_empty(prefix) ||
		     strncmp(r->resource_id, prefix, strlen(prefix)) == 0))
			return true;
	}
	return false;
}

/* ============================================================= delivery */

static const char *copy_or_null(arena *a, const char *s)
{
	return core_is_empty(s) ? NULL : arena_strdup(a, s);
}

/* Delivers the collected updates of `rev` as one event.  Returns 0 or
 * WATCH_STOPPED. */
static int deliver(watch_state *w, pemba_revision rev, bool more,
                   bool schema_updated, const char *metadata)
{
	pemba_watch_event ev = {
	    .revision = rev,
	    .updates = w->updates,
	    .nupdates = w->n,
	    .schema_updated = schema_updated,
	    .more_in_revision = more,
	    .metadata = core_is_empty(metadata) ? NULL : metadata,
	};
	int stop = w->fn(w->ctx, &ev);
	w->n = 0;
	arena_reset(w->strings);
	w->last_event = rev;
	if (!more)
		w->through = rev;
	return stop ? WATCH_STOPPED : 0;
}

/* With PEMBA_WATCH_CHECKPOINTS every revision ends with a checkpoint
 * event, after its changes if it had any, as SpiceDB's Watch follows every
 * revision with a checkpoint response.  Returns 0 or WATCH_STOPPED. */
static int checkpoint(watch_state *w, pemba_revision rev)
{
	pemba_watch_event ev = {.revision = rev, .is_checkpoint = 1};
	int stop = w->fn(w->ctx, &ev);
	w->last_event = rev;
	w->through = rev;
	return stop ? WATCH_STOPPED : 0;
}

static int on_change(void *ctx, const store_change *c)
{
	watch_state *w = ctx;
	if (c->kind == STORE_CHANGE_REVISION) {
		bool schema_updated =
		    c->schema_changed && (w->kinds & PEMBA_WATCH_SCHEMA) != 0;
		if ((w->n > 0 || schema_updated) &&
		    deliver(w, c->rev, false, schema_updated, c->metadata) ==
		        WATCH_STOPPED)
			return WATCH_STOPPED;
		w->through = c->rev; /* delivered, or nothing matched */
		if (w->kinds & PEMBA_WATCH_CHECKPOINTS)
			return checkpoint(w, c->rev);
		return 0;
	}
	if (!(w->kinds & PEMBA_WATCH_RELATIONSHIPS) ||
	    !change_matches(w->filter, c->rel))
		return 0;
	/* A full chunk goes out only once another update shows it was not
	 * the revision's last. */
	if (w->n == PEMBA_WATCH_CHUNK &&
	    deliver(w, c->rev, true, false, NULL) == WATCH_STOPPED)
		return WATCH_STOPPED;
	const store_rel *r = c->rel;
	arena *a = w->strings;
	pemba_update *u = &w->updates[w->n++];
	u->op =
	    c->kind == STORE_CHANGE_TOUCH ? PEMBA_OP_TOUCH : PEMBA_OP_DELETE;
	u->rel = (pemba_relationship){
	    .resource_type = arena_strdup(a, r->resource_type),
	    .resource_id = arena_strdup(a, r->resource_id),
	    .relation = arena_strdup(a, r->relation),
	    .subject_type = arena_strdup(a, r->subject_type),
	    .subject_id = arena_strdup(a, r->subject_id),
	    .subject_relation = copy_or_null(a, r->subject_relation),
	    .caveat_name = copy_or_null(a, r->caveat_name),
	    .caveat_context = copy_or_null(a, r->caveat_context),
	    .expiration_ms = r->expiration_ms,
	};
	return 0;
}

/* ============================================================ the call */

static int check_watch_filter(const pemba_watch_filter *wf, unsigned *kinds,
                              pemba_error *err)
{
	*kinds = PEMBA_WATCH_RELATIONSHIPS;
	if (wf == NULL)
		return PEMBA_OK;
	const unsigned known = PEMBA_WATCH_RELATIONSHIPS | PEMBA_WATCH_SCHEMA |
	                       PEMBA_WATCH_CHECKPOINTS;
	if (wf->kinds & ~known)
		return error_set(err, PEMBA_EINVAL, "unknown watch kinds 0x%x",
		                 wf->kinds & ~known);
	if (wf->kinds)
		*kinds = wf->kinds;
	if (wf->nobject_types && wf->nfilters)
		return error_set(err, PEMBA_EINVAL,
		                 "a watch takes object types or relationship "
		                 "filters, not both");
	if ((wf->nobject_types && !wf->object_types) ||
	    (wf->nfilters && !wf->filters))
		return error_set(
		    err, PEMBA_EINVAL,
		    "watch filter: a count is set but its array is "
		    "NULL");
	for (size_t i = 0; i < wf->nobject_types; i++)
		if (core_is_empty(wf->object_types[i]))
			return error_set(err, PEMBA_EINVAL,
			                 "watch object type %zu is empty",
			                 i + 1);
	for (size_t i = 0; i < wf->nfilters; i++) {
		const pemba_filter *f = &wf->filters[i];
		if (core_is_empty(f->subject_type) &&
		    (!core_is_empty(f->subject_id) ||
		     !core_is_empty(f->subject_relation)))
			return error_set(
			    err, PEMBA_EINVAL,
			    "watch filter %zu names a subject id or "
			    "relation without a subject type",
			    i + 1);
	}
	return PEMBA_OK;
}

int pemba_watch_changes(pemba_db *db, pemba_revision after,
                        const pemba_watch_filter *filter,
                        uint64_t max_revisions, pemba_watch_fn fn, void *ctx,
                        pemba_revision *last_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, fn);
	CORE_REQUIRE(err, last_out);
	*last_out = after;
	unsigned kinds;
	int rc = check_watch_filter(filter, &kinds, err);
	if (rc)
		return rc;

	/* The head and the changes come from one snapshot. */
	if ((rc = store_read_begin(db->st, err)))
		return rc;
	pemba_revision head;
	if ((rc = store_head_revision(db->st, &head, err)))
		goto out;
	if (after > head) {
		rc = error_set(err, PEMBA_EREVISION,
		               "revision %llu is in the future (head is %llu)",
		               (unsigned long long)after,
		               (unsigned long long)head);
		goto out;
	}
	pemba_revision upto = head;
	if (max_revisions && upto - after > max_revisions)
		upto = after + max_revisions;

	watch_state w = {
	    .filter = filter,
	    .kinds = kinds,
	    .fn = fn,
	    .ctx = ctx,
	    .through = after,
	};
	w.updates = xmalloc(PEMBA_WATCH_CHUNK * sizeof(*w.updates));
	w.strings = arena_create(0);
	rc = store_changes(db->st, after, upto, on_change, &w, err);
	if (rc == WATCH_STOPPED)
		rc = PEMBA_OK;
	if (rc == PEMBA_OK)
		*last_out = w.through;
	free(w.updates);
	arena_destroy(w.strings);
out:
	store_read_end(db->st);
	return rc;
}
