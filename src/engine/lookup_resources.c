/*
 * lookup_resources.c -- LookupResources: every resource of a type on which
 * a subject has a permission.
 *
 * Two phases:
 *
 * 1. Candidates.  A resource can only have the permission if a chain of
 *    relationships leads from it down to the subject (or to a wildcard of
 *    the subject's type), because every TRUE of a check comes from a
 *    relationship row.  So the walk starts at the subject object and
 *    follows relationships backwards (store_query by subject, the reverse
 *    index), breadth first, visiting each object once.  Only rows of
 *    *relevant* relations are followed: those whose membership can reach
 *    the requested permission according to the schema (computed once per
 *    request, below).  Every visited object of the requested type is a
 *    candidate.  From a userset subject `T:id#rel` the first step takes
 *    only the rows SpiceDB's walk starts from (see lookup() and
 *    README.md), and `T:*` rows are not followed.
 * 2. Verification.  Candidates are sorted by id and checked in that order
 *    with one check session (a memo shared by all of them, since the
 *    subject is fixed); those that pass stream to the callback.
 *
 * Complexity: phase 1 is one reverse-index query per object reachable
 * backwards from the subject through relevant relations, O(R log N) for R
 * such rows; phase 2 is at most one check per candidate, subproblems
 * shared.  Memory: the visited set and the candidate ids (not the
 * results, which are streamed).  Exclusions and intersections make the
 * candidate set a superset of the answer, which phase 2 filters.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "util/error.h"
#include "util/hash.h"

/* ------------------------------------------------------- relevance */

/* Flags per relation of the schema, indexed by (definition, position). */
typedef struct relevance {
	size_t *base; /* per definition index: offset of its first relation */
	bool *flag;
	bool *tupleset; /* see lookup(): arrows a userset subject enters */
	/* the relevant arrows */
	const schema_expr **arrows;
	size_t narrows, caparrows;
} relevance;

static bool *relevant_slot(relevance *r, const schema_relation *rel)
{
	return &r->flag[r->base[rel->definition->index] + (size_t)rel->index];
}

static void mark(relevance *r, const schema_relation *rel,
                 const schema_relation ***stack, size_t *n)
{
	bool *slot = relevant_slot(r, rel);
	if (*slot)
		return;
	*slot = true;
	(*stack)[(*n)++] = rel;
}

static void mark_expr(relevance *r, const schema *sc, const schema_expr *e,
                      const schema_relation ***stack, size_t *n)
{
	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		return;
	case SCHEMA_EXPR_REF:
		if (e->ref)
			mark(r, e->ref, stack, n);
		return;
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		if (e->tupleset == NULL)
			return;
		if (r->narrows < r->caparrows)
			r->arrows[r->narrows++] = e;
		mark(r, e->tupleset, stack, n);
		for (size_t i = 0; i < e->tupleset->ntypes; i++) {
			const schema_definition *d = schema_find_definition(
			    sc, e->tupleset->types[i].type);
			const schema_relation *t =
			    d ? schema_find_relation(d, e->target) : NULL;
			if (t)
				mark(r, t, stack, n);
		}
		return;
	case SCHEMA_EXPR_UNION:
	case SCHEMA_EXPR_INTERSECT:
	case SCHEMA_EXPR_EXCLUDE:
		for (size_t i = 0; i < e->nchildren; i++)
			mark_expr(r, sc, e->children[i], stack, n);
		return;
	}
}

/* The relations whose rows can influence `target`: the closure of target
 * under "a permission mentions it", "an arrow walks through it or into
 * it", "a relation allows it as a userset". */
static void compute_relevance(arena *a, const schema *sc,
                              const schema_relation *target, relevance *r)
{
	size_t total = 0;
	r->base = arena_alloc(a, (sc->ndefinitions + 1) * sizeof(size_t));
	for (size_t i = 0; i < sc->ndefinitions; i++) {
		r->base[i] = total;
		total += sc->definitions[i]->nrelations;
	}
	r->flag = arena_alloc(a, (total + 1) * sizeof(bool));
	memset(r->flag, 0, (total + 1) * sizeof(bool));
	r->tupleset = arena_alloc(a, (total + 1) * sizeof(bool));
	memset(r->tupleset, 0, (total + 1) * sizeof(bool));
	/* Each permission's expression is marked once, so the arrows are
	 * bounded by the schema's; 4096 is a generous cap (more are only
	 * skipped as entry points, never as relevance). */
	r->caparrows = 4096;
	r->arrows = arena_alloc(a, r->caparrows * sizeof(*r->arrows));
	const schema_relation **stack =
	    arena_alloc(a, (total + 1) * sizeof(*stack));
	size_t n = 0;
	mark(r, target, &stack, &n);
	while (n > 0) {
		const schema_relation *rel = stack[--n];
		if (rel->is_permission) {
			if (rel->expr)
				mark_expr(r, sc, rel->expr, &stack, &n);
			continue;
		}
		for (size_t i = 0; i < rel->ntypes; i++) {
			const schema_allowed_type *t = &rel->types[i];
			if (t->relation == NULL || t->wildcard ||
			    !t->definition)
				continue;
			const schema_relation *u =
			    schema_find_relation(t->definition, t->relation);
			if (u)
				mark(r, u, &stack, &n);
		}
	}
}

/* ---------------------------------------------------- visited objects */

typedef struct object_node {
	const char *type; /* the schema's copy */
	const char *id;
} object_node;

typedef struct walk {
	arena *a;
	const schema *sc;
	relevance rel;
	/* open-addressing set of visited objects (indices into queue + 1) */
	size_t *slots;
	size_t nslots; /* power of two */
	object_node *queue;
	size_t nqueue, capqueue;
	/* queue[0] is the subject object; reached: a relevant row leads to
	 * it (it is then a candidate like any other object). */
	bool subject_reached;
} walk;

static uint64_t object_hash(const char *type, const char *id)
{
	return hash_str(id, hash_str(type, 0));
}

static void walk_grow(walk *w)
{
	size_t n = w->nslots * 2;
	size_t *slots = arena_alloc(w->a, n * sizeof(*slots));
	memset(slots, 0, n * sizeof(*slots));
	for (size_t i = 0; i < w->nqueue; i++) {
		uint64_t h = object_hash(w->queue[i].type, w->queue[i].id);
		size_t j = h & (n - 1);
		while (slots[j])
			j = (j + 1) & (n - 1);
		slots[j] = i + 1;
	}
	w->slots = slots;
	w->nslots = n;
}

/* Adds (type, id) unless already visited.  `type` must be the schema's
 * copy; id is copied. */
static void walk_visit(walk *w, const char *type, const char *id)
{
	if (2 * (w->nqueue + 1) > w->nslots)
		walk_grow(w);
	uint64_t h = object_hash(type, id);
	size_t j = h & (w->nslots - 1);
	while (w->slots[j]) {
		const object_node *o = &w->queue[w->slots[j] - 1];
		if (o->type == type && strcmp(o->id, id) == 0)
			return;
		j = (j + 1) & (w->nslots - 1);
	}
	if (w->nqueue == w->capqueue) {
		size_t cap = w->capqueue ? w->capqueue * 2 : 64;
		object_node *q = arena_alloc(w->a, cap * sizeof(*q));
		if (w->nqueue)
			memcpy(q, w->queue, w->nqueue * sizeof(*q));
		w->queue = q;
		w->capqueue = cap;
	}
	w->queue[w->nqueue].type = type;
	w->queue[w->nqueue].id = arena_strdup(w->a, id);
	w->slots[j] = ++w->nqueue;
}

/* Follows every relevant relationship whose subject is (type, id, subject
 * relation `srel`, NULL for any) back to its resource; with
 * `tuplesets_only`, only rows of relations an arrow walks through. */
static int walk_expand(walk *w, store *st, pemba_revision at, const char *type,
                       const char *id, const char *srel, bool tuplesets_only,
                       pemba_error *err)
{
	store_filter f = {
	    .subject_type = type, .subject_id = id, .subject_relation = srel};
	store_iter *it;
	int rc = store_query(st, at, &f, NULL, 0, &it, err);
	if (rc < 0)
		return rc;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, err)) == 1) {
		const schema_definition *d =
		    schema_find_definition(w->sc, row->resource_type);
		const schema_relation *r =
		    d ? schema_find_relation(d, row->relation) : NULL;
		if (r && tuplesets_only &&
		    !w->rel.tupleset[w->rel.base[r->definition->index] +
		                     (size_t)r->index])
			continue;
		if (r && *relevant_slot(&w->rel, r)) {
			walk_visit(w, d->name, row->resource_id);
			if (d->name == w->queue[0].type &&
			    strcmp(row->resource_id, w->queue[0].id) == 0)
				w->subject_reached = true;
		}
	}
	store_iter_close(it);
	return rc;
}

/* Does `from` reach `want` (same object) through permission expressions
 * alone (`p = want + ...`, `p = q & ...` with q reaching it)? */
static bool computed_reaches(const schema_relation *from,
                             const schema_relation *want, int depth);

static bool expr_reaches(const schema_expr *e, const schema_relation *want,
                         int depth)
{
	switch (e->kind) {
	case SCHEMA_EXPR_REF:
		return e->ref && computed_reaches(e->ref, want, depth + 1);
	case SCHEMA_EXPR_UNION:
	case SCHEMA_EXPR_INTERSECT:
	case SCHEMA_EXPR_EXCLUDE:
		for (size_t i = 0; i < e->nchildren; i++)
			if (expr_reaches(e->children[i], want, depth))
				return true;
		return false;
	default:
		return false;
	}
}

static bool computed_reaches(const schema_relation *from,
                             const schema_relation *want, int depth)
{
	if (from == want)
		return true;
	/* The schema has no permission cycles; the bound is a backstop. */
	if (depth > 64 || !from->is_permission || from->expr == NULL)
		return false;
	return expr_reaches(from->expr, want, depth);
}

/* ------------------------------------------------------- entry point */

static int compare_ids(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int validate(const schema *sc, const pemba_lookup_resources_request *r,
                    const schema_relation **rel_out,
                    const schema_definition **subject_def_out, pemba_error *err)
{
	int rc;
	if ((rc = engine_validate_type(err, "resource", r->resource_type)) < 0)
		return rc;
	if (r->permission == NULL || r->permission[0] == '\0')
		return error_set(err, PEMBA_EINVAL, "permission is required");
	if ((rc = engine_validate_relation(err, "permission", r->permission)) <
	        0 ||
	    (rc = engine_validate_type(err, "subject", r->subject_type)) < 0 ||
	    (rc = engine_validate_id(err, "subject", r->subject_id)) < 0)
		return rc;
	if (strcmp(r->subject_id, "*") == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot perform lookup resources on wildcard "
		                 "subject `%s:*`",
		                 r->subject_type);
	const char *srel = engine_normalize_relation(r->subject_relation);
	if (srel[0] &&
	    (rc = engine_validate_relation(err, "subject relation", srel)) < 0)
		return rc;
	const schema_definition *def, *sdef;
	const schema_relation *unused;
	if ((rc = engine_find_definition(sc, r->resource_type, &def, err)) <
	        0 ||
	    (rc = engine_find_relation(def, r->permission, rel_out, err)) < 0 ||
	    (rc = engine_find_definition(sc, r->subject_type, &sdef, err)) < 0)
		return rc;
	if (srel[0] &&
	    (rc = engine_find_relation(sdef, srel, &unused, err)) < 0)
		return rc;
	*subject_def_out = sdef;
	return PEMBA_OK;
}

static int lookup(arena *a, store *st, const schema *sc, pemba_revision at,
                  const pemba_lookup_resources_request *req,
                  pemba_lookup_resource_fn fn, void *ctx, pemba_error *err)
{
	const schema_relation *target;
	const schema_definition *sdef = NULL;
	int rc = validate(sc, req, &target, &sdef, err);
	if (rc < 0)
		return rc;
	const char *after;
	if ((rc = engine_cursor_decode(a, req->cursor, &after, err)) < 0)
		return rc;
	if (at == 0)
		return PEMBA_OK; /* empty datastore: nothing to find */

	/* Phase 1: candidates. */
	walk w = {.a = a, .sc = sc, .nslots = 64};
	w.slots = arena_alloc(a, w.nslots * sizeof(*w.slots));
	memset(w.slots, 0, w.nslots * sizeof(*w.slots));
	compute_relevance(a, sc, target, &w.rel);
	const char *srel = engine_normalize_relation(req->subject_relation);
	walk_visit(&w, sdef->name, req->subject_id);
	/* From the subject, only rows naming it with the requested relation
	 * or with a permission of its own that reaches that relation
	 * (SpiceDB starts its walk at `T:id#rel`), plus, for a userset, the
	 * rows naming `T:id` (with any relation) that an arrow walks through
	 * (the arrow's target may reach `rel`); further on, any row. */
	const schema_relation *self_rel =
	    srel[0] ? schema_find_relation(sdef, srel) : NULL;
	rc = walk_expand(&w, st, at, sdef->name, req->subject_id, srel, false,
	                 err);
	for (size_t i = 0; self_rel && rc >= 0 && i < sdef->nrelations; i++)
		if (sdef->relations[i] != self_rel &&
		    computed_reaches(sdef->relations[i], self_rel, 0))
			rc =
			    walk_expand(&w, st, at, sdef->name, req->subject_id,
			                sdef->relations[i]->name, false, err);
	/* Arrow entry points: tupleset rows naming `T:id`, for arrows whose
	 * target on T reaches `rel` through expressions. */
	bool any_entry = false;
	for (size_t i = 0; self_rel && i < w.rel.narrows; i++) {
		const schema_expr *e = w.rel.arrows[i];
		const schema_relation *t =
		    schema_find_relation(sdef, e->target);
		bool types_t = false;
		for (size_t k = 0; k < e->tupleset->ntypes; k++)
			types_t = types_t || strcmp(e->tupleset->types[k].type,
			                            sdef->name) == 0;
		if (t && types_t && computed_reaches(t, self_rel, 0)) {
			w.rel.tupleset
			    [w.rel.base[e->tupleset->definition->index] +
			     (size_t)e->tupleset->index] = true;
			any_entry = true;
		}
	}
	if (rc >= 0 && any_entry)
		rc = walk_expand(&w, st, at, sdef->name, req->subject_id, NULL,
		                 true, err);
	/* A wildcard of the subject's type stands for the subject -- but
	 * only for a subject object: SpiceDB's LookupResources does not let
	 * `T:*` grant a userset `T:id#rel` (its CheckPermission does, and so
	 * does ours; see README.md). */
	if (rc >= 0 && !srel[0])
		rc = walk_expand(&w, st, at, sdef->name, "*", NULL, false, err);
	for (size_t i = 1; rc >= 0 && i < w.nqueue; i++)
		rc = walk_expand(&w, st, at, w.queue[i].type, w.queue[i].id,
		                 NULL, false, err);
	if (rc < 0)
		return rc;

	/* The subject object itself is a candidate (self-membership) when
	 * a relevant row leads back to it, or when the subject is a userset
	 * `T:id#rel` and the permission reaches `rel` on the same object
	 * through permissions alone: SpiceDB's walk starts at `T:id#rel`.
	 * Not otherwise, even if a check (which lets `T:*` grant
	 * `T:id#rel`) would pass. */
	bool self_candidate = w.subject_reached || !srel[0] ||
	                      (self_rel && target->definition == sdef &&
	                       computed_reaches(target, self_rel, 0));

	const char *type = target->definition->name;
	size_t ncand = 0;
	const char **cand = arena_alloc(a, (w.nqueue + 1) * sizeof(*cand));
	for (size_t i = self_candidate ? 0 : 1; i < w.nqueue; i++)
		if (w.queue[i].type == type &&
		    (after == NULL || strcmp(w.queue[i].id, after) > 0))
			cand[ncand++] = w.queue[i].id;
	qsort(cand, ncand, sizeof(*cand), compare_ids);

	/* Phase 2: verification, streamed in id order. */
	engine_session *s;
	rc = engine_session_begin(a, st, sc, at, req->subject_type,
	                          req->subject_id, req->subject_relation, &s,
	                          err);
	if (rc < 0)
		return rc;
	size_t emitted = 0;
	for (size_t i = 0; i < ncand; i++) {
		if (req->limit && emitted >= req->limit)
			break;
		pemba_permissionship p;
		rc = engine_session_check(s, target, cand[i], &p);
		if (rc < 0)
			return rc;
		if (p != PEMBA_HAS_PERMISSION)
			continue;
		emitted++;
		if (fn(ctx, cand[i], p, engine_cursor_encode(a, cand[i])))
			break;
	}
	return PEMBA_OK;
}

int engine_lookup_resources(arena *scratch, store *st, const schema *sc,
                            pemba_revision at,
                            const pemba_lookup_resources_request *req,
                            pemba_lookup_resource_fn fn, void *ctx,
                            pemba_error *err)
{
	if (req == NULL || fn == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "missing lookup resources request");
	int rc = lookup(scratch, st, sc, at, req, fn, ctx, err);
	arena_reset(scratch);
	return rc;
}
