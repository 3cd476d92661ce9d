/*
 * positions.c -- revisions of a mirrored source datastore, and what the
 * source's ZedTokens mean here (pemba_record_source_position,
 * pemba_resolve_source_position; design in src/api/README.md, "Tokens that
 * survive a move").
 *
 * `pemba mirror` applies each source revision to this datastore as a
 * write that carries the source revision (pemba_write_options.
 * source_position), recorded in the same transaction, so a record never
 * exists for a revision that was not applied; checkpoints (the source
 * moved, nothing to apply) are recorded against the head without a new
 * revision.  Lookups:
 *
 *   at least as fresh  the smallest recorded source revision filed at or
 *                      after the token's upper bound holds it: answer
 *                      there or later.  A token older than the mirror's
 *                      start is held by the start (everything the source
 *                      had then was copied).
 *   exact              only a recorded revision applied as one write,
 *                      with nothing else written, holds exactly the
 *                      source's state.
 *   after (Watch)      resume after the newest recorded source revision
 *                      at or before the token: every source revision with
 *                      changes is recorded, so none between it and the
 *                      token is skipped.  Older than the start: refused,
 *                      the changes before it were never seen here.
 */
#include <string.h>

#include "core/core.h"
#include "util/error.h"

static int check_position(const pemba_source_position *p, pemba_error *err)
{
	if (!p || !p->source || !p->source[0] || !p->revision ||
	    !p->revision[0])
		return error_set(err, PEMBA_EINVAL,
		                 "invalid source position: the source and its "
		                 "revision are required");
	if (strlen(p->source) > 200 || strlen(p->revision) > 200)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid source position: source or revision "
		                 "longer than 200 bytes");
	if (p->lower > p->upper)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid source position: lower order key "
		                 "above the upper one");
	return PEMBA_OK;
}

static store_position to_store(const pemba_source_position *p)
{
	return (store_position){.source = p->source,
	                        .revision = p->revision,
	                        .order_key = p->lower,
	                        .exact = p->exact != 0};
}

int core_record_source_position(store_txn *t, const pemba_source_position *p,
                                pemba_error *err)
{
	int rc = check_position(p, err);
	if (rc < 0)
		return rc;
	store_position sp = to_store(p);
	return store_txn_record_position(t, &sp, err);
}

int pemba_record_source_position(pemba_db *db, const pemba_source_position *p,
                                 pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	int rc = check_position(p, err);
	if (rc < 0)
		return rc;
	store_position sp = to_store(p);
	return store_record_position(db->st, &sp, err);
}

int pemba_resolve_source_position(pemba_db *db, const pemba_source_position *p,
                                  pemba_source_lookup mode,
                                  pemba_revision *rev_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, rev_out);
	int rc = check_position(p, err);
	if (rc < 0)
		return rc;
	store_position_lookup l;
	rc = store_lookup_position(db->st, p->source, p->revision, p->lower,
	                           p->upper, &l, err);
	if (rc < 0)
		return rc;
	if (!l.known)
		return error_set(err, PEMBA_EINVAL,
		                 "ZedToken is for another datastore (%s, "
		                 "revision %s), and this datastore was never "
		                 "mirrored from it",
		                 p->source, p->revision);
	switch (mode) {
	case PEMBA_SOURCE_AT_LEAST:
		if (!l.covering_found)
			return error_set(
			    err, PEMBA_EREVISION,
			    "invalid revision: the ZedToken names revision %s "
			    "of %s, which the mirror has not applied here yet",
			    p->revision, p->source);
		*rev_out = l.covering_target;
		return PEMBA_OK;
	case PEMBA_SOURCE_EXACT:
		if (l.exact_found && l.exact_is_exact) {
			*rev_out = l.exact_target;
			return PEMBA_OK;
		}
		if (p->upper < l.min_key)
			return error_set(
			    err, PEMBA_EREVISION,
			    "invalid revision: the ZedToken names revision %s "
			    "of %s, from before the move (the mirror started "
			    "later), so no revision here holds it exactly; use "
			    "at_least_as_fresh",
			    p->revision, p->source);
		return error_set(err, PEMBA_EPRECONDITION,
		                 "the ZedToken names revision %s of %s, which "
		                 "was not applied here as one revision, so no "
		                 "revision here holds it exactly; use "
		                 "at_least_as_fresh",
		                 p->revision, p->source);
	case PEMBA_SOURCE_AFTER:
		if (p->lower < l.min_key || !l.before_found)
			return error_set(
			    err, PEMBA_EREVISION,
			    "invalid revision: the ZedToken names revision %s "
			    "of %s, from before the move (the mirror started "
			    "later): the changes after it were never seen here",
			    p->revision, p->source);
		*rev_out = l.before_target;
		return PEMBA_OK;
	}
	return error_set(err, PEMBA_EINVAL, "unknown source lookup mode %d",
	                 (int)mode);
}
