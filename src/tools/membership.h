/*
 * membership.h -- the subjects reachable through a permission, with the
 * relationships that reach them: what a validation file's `validation:`
 * (expected relations) block is compared against.  Private to src/tools.
 *
 * A permission is expanded recursively: pemba_expand() gives one level,
 * and every userset subject it lists (`group:eng#member`) is expanded in
 * turn.  The tree is then folded into a set of members, as SpiceDB's
 * validation does:
 *
 *   - a leaf contributes each of its subjects (usersets included), each
 *     reached through the leaf's own `type:id#relation`;
 *   - a userset subject also contributes its own expansion's members;
 *   - union / intersection / exclusion nodes combine their children's sets
 *     with wildcard semantics: `user:*` is one member that may carry
 *     excluded subjects (`user:* - {user:1}`), and is kept alongside the
 *     concrete subjects it covers;
 *   - a member records whether it is caveated (conditional) and the
 *     relationships (`resource:id#relation`) through which it was found.
 *
 * The expand tree carries no caveat information yet (pemba_expand fails
 * with PEMBA_EUNSUPPORTED on caveated data), so every member found today
 * is unconditional; the set algebra already tracks the flag so that only
 * leaf extraction changes when it does.
 *
 * Everything a membership hands out lives in its arena and is released by
 * membership_free().
 */
#ifndef PEMBA_TOOLS_MEMBERSHIP_H
#define PEMBA_TOOLS_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>

#include "pemba.h"

/* One subject found.  relation is "" for the object itself.  A wildcard
 * (id "*") may list the subjects it excludes, sorted by id; they share its
 * type and relation and have no exclusions of their own. */
typedef struct member {
	const char *type, *id, *relation;
	bool caveated;
	const struct member *excluded;
	size_t nexcluded;
	/* The relationships through which the subject was found, as
	 * "type:id#relation", sorted and unique. */
	const char *const *sources;
	size_t nsources;
} member;

/* A set of members, sorted by (type, relation, id) with a wildcard first
 * in its (type, relation) group; at most one member per subject. */
typedef struct member_set {
	const member *items;
	size_t n;
} member_set;

typedef struct membership membership;

/* A membership computer reading db at the head revision; expansions are
 * memoized, so asking for a permission twice costs one expansion.  Free
 * it with membership_free(). */
membership *membership_new(pemba_db *db);
void membership_free(membership *m);

/* The members of type:id#relation.  On success *out points into m and
 * stays valid until membership_free().  Fails with pemba_expand's errors
 * (PEMBA_EPRECONDITION for an unknown relation, PEMBA_EUNSUPPORTED for
 * caveated data, ...) or PEMBA_EDEPTH when usersets nest more than
 * PEMBA_MAX_DEPTH deep or form a cycle (as SpiceDB's recursive expansion
 * fails at its depth limit). */
int membership_expand(membership *m, const char *type, const char *id,
                      const char *relation, member_set *out, pemba_error *err);

/* The member for subject type:id[#relation] (relation NULL, "" or "..."
 * for the object itself; id "*" finds the wildcard), or NULL. */
const member *member_set_find(const member_set *s, const char *type,
                              const char *id, const char *relation);

#endif
