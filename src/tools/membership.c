/*
 * membership.c -- folds recursive permission expansions into member sets
 * (see membership.h for the model).
 *
 * Sets are immutable sorted arrays in the membership's arena; every
 * operation builds a new one.  Members of one (type, relation) group
 * interact (a wildcard covers the concrete subjects of its group); groups
 * never do.  Caveats are tracked as a flag: "this member is conditional".
 * Combining flags follows the three-valued meaning of a caveat expression
 * reduced to "present or not": an OR of conditions is unconditional if
 * either side is, an AND is conditional if either side is, and removing a
 * conditional subject leaves a conditional one.
 */
#include "tools/membership.h"

#include <stdlib.h>
#include <string.h>

#include "util/arena.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/xalloc.h"

/* ============================================================ state */

/* One expansion asked for, keyed by "type:id#relation".  While it is being
 * computed it is `in_progress`, so meeting it again is a cycle. */
typedef struct memo_entry {
	const char *key;
	bool in_progress;
	int failed; /* a pemba_code, 0 if the expansion succeeded */
	pemba_error error;
	member_set set;
	struct memo_entry *next;
} memo_entry;

struct membership {
	pemba_db *db;
	arena *a;
	memo_entry **buckets;
	size_t nbuckets, count;
};

membership *membership_new(pemba_db *db)
{
	membership *m = xcalloc(1, sizeof(*m));
	m->db = db;
	m->a = arena_create(0);
	m->nbuckets = 64;
	m->buckets = xcalloc(m->nbuckets, sizeof(*m->buckets));
	return m;
}

void membership_free(membership *m)
{
	if (!m)
		return;
	arena_destroy(m->a);
	free(m->buckets);
	free(m);
}

static memo_entry *memo_find(membership *m, const char *key)
{
	memo_entry *e = m->buckets[hash_str(key, 0) % m->nbuckets];
	while (e && strcmp(e->key, key) != 0)
		e = e->next;
	return e;
}

static memo_entry *memo_add(membership *m, const char *key)
{
	if (m->count >= m->nbuckets) {
		size_t n = m->nbuckets * 2;
		memo_entry **grown = xcalloc(n, sizeof(*grown));
		for (size_t i = 0; i < m->nbuckets; i++) {
			memo_entry *e = m->buckets[i];
			while (e) {
				memo_entry *next = e->next;
				size_t b = hash_str(e->key, 0) % n;
				e->next = grown[b];
				grown[b] = e;
				e = next;
			}
		}
		free(m->buckets);
		m->buckets = grown;
		m->nbuckets = n;
	}
	memo_entry *e = arena_alloc(m->a, sizeof(*e));
	e->key = arena_strdup(m->a, key);
	size_t b = hash_str(key, 0) % m->nbuckets;
	e->next = m->buckets[b];
	m->buckets[b] = e;
	m->count++;
	return e;
}

/* ============================================================ members */

static bool is_wildcard(const member *x)
{
	return strcmp(x->id, "*") == 0;
}

static int compare_group(const member *x, const member *y)
{
	int c = strcmp(x->type, y->type);
	return c ? c : strcmp(x->relation, y->relation);
}

/* Set order: by group, the wildcard first, then by id. */
static int compare_members(const void *p, const void *q)
{
	const member *x = p, *y = q;
	int c = compare_group(x, y);
	if (c)
		return c;
	bool wx = is_wildcard(x), wy = is_wildcard(y);
	if (wx != wy)
		return wx ? -1 : 1;
	return strcmp(x->id, y->id);
}

static int compare_ids(const void *p, const void *q)
{
	return strcmp(((const member *)p)->id, ((const member *)q)->id);
}

static int compare_strings(const void *p, const void *q)
{
	return strcmp(*(const char *const *)p, *(const char *const *)q);
}

/* The member with `id` in list[0, n) sorted by id, or NULL. */
static const member *find_id(const member *list, size_t n, const char *id)
{
	if (n == 0)
		return NULL;
	member key = {.id = id};
	return bsearch(&key, list, n, sizeof(*list), compare_ids);
}

/* A growable array of members, copied into the arena when finished. */
typedef struct builder {
	member *items;
	size_t n, cap;
} builder;

static void push(builder *b, member x)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 16;
		b->items = xrealloc(b->items, b->cap * sizeof(*b->items));
	}
	b->items[b->n++] = x;
}

/* Sorts with `compare` and moves the members into the arena. */
static const member *finish(membership *m, builder *b,
                            int (*compare)(const void *, const void *),
                            size_t *n_out)
{
	member *out = NULL;
	if (b->n) {
		qsort(b->items, b->n, sizeof(*b->items), compare);
		out = arena_alloc(m->a, b->n * sizeof(*out));
		memcpy(out, b->items, b->n * sizeof(*out));
	}
	*n_out = b->n;
	free(b->items);
	memset(b, 0, sizeof(*b));
	return out;
}

static member_set finish_set(membership *m, builder *b)
{
	member_set s;
	s.items = finish(m, b, compare_members, &s.n);
	return s;
}

/* A member like `base` with the given caveat flag and exclusions, found
 * through the union of the sources of `from` (up to three, NULLs
 * skipped): SpiceDB's bookkeeping keeps every relationship that
 * contributed to a combined subject. */
static member derive(membership *m, const member *base, bool caveated,
                     const member *excluded, size_t nexcluded,
                     const member *from1, const member *from2,
                     const member *from3)
{
	member out = *base;
	out.caveated = caveated;
	out.excluded = excluded;
	out.nexcluded = nexcluded;
	const member *from[3] = {from1, from2, from3};
	size_t total = 0, nonempty = 0;
	const member *only = NULL;
	for (int i = 0; i < 3; i++) {
		if (from[i] && from[i]->nsources) {
			total += from[i]->nsources;
			nonempty++;
			only = from[i];
		}
	}
	if (nonempty <= 1) {
		out.sources = only ? only->sources : NULL;
		out.nsources = only ? only->nsources : 0;
		return out;
	}
	const char **all = arena_alloc(m->a, total * sizeof(*all));
	size_t n = 0;
	for (int i = 0; i < 3; i++)
		for (size_t k = 0; from[i] && k < from[i]->nsources; k++)
			all[n++] = from[i]->sources[k];
	qsort(all, n, sizeof(*all), compare_strings);
	size_t unique = 0;
	for (size_t k = 0; k < n; k++)
		if (unique == 0 || strcmp(all[unique - 1], all[k]) != 0)
			all[unique++] = all[k];
	out.sources = all;
	out.nsources = unique;
	return out;
}

/* ============================================================ groups */

/* The members of one (type, relation) group: its wildcard, if any, and
 * its concrete subjects sorted by id. */
typedef struct group {
	const member *first; /* any member, for the group's names */
	const member *wildcard;
	const member *concrete;
	size_t nconcrete;
} group;

/* The group starting at s->items[*pos]; advances *pos past it. */
static group next_group(const member_set *s, size_t *pos)
{
	group g = {.first = &s->items[*pos]};
	size_t end = *pos;
	while (end < s->n && compare_group(&s->items[end], g.first) == 0)
		end++;
	size_t i = *pos;
	if (is_wildcard(&s->items[i]))
		g.wildcard = &s->items[i++];
	g.concrete = &s->items[i];
	g.nconcrete = end - i;
	*pos = end;
	return g;
}

static void push_group(builder *b, const group *g)
{
	if (g->wildcard)
		push(b, *g->wildcard);
	for (size_t i = 0; i < g->nconcrete; i++)
		push(b, g->concrete[i]);
}

static const member *excluded_id(const member *wildcard, const char *id)
{
	return find_id(wildcard->excluded, wildcard->nexcluded, id);
}

/* ============================================================ union */

/* {* - E1} | {* - E2} = {* - (E1 & E2)}: a subject excluded from only one
 * wildcard is in the other.  Conditional only if both are. */
static member union_wildcards(membership *m, const member *x, const member *y)
{
	builder excl = {0};
	for (size_t i = 0; i < x->nexcluded; i++) {
		const member *e = &x->excluded[i];
		const member *f = excluded_id(y, e->id);
		if (f)
			push(&excl, derive(m, e, e->caveated || f->caveated,
			                   NULL, 0, e, f, NULL));
	}
	size_t n;
	const member *list = finish(m, &excl, compare_ids, &n);
	return derive(m, x, x->caveated && y->caveated, list, n, x, y, NULL);
}

/* A wildcard united with concrete subjects of its group: an exclusion
 * disappears when an unconditional subject of that id is added, and
 * becomes conditional when a conditional one is. */
static member union_wildcard_concretes(membership *m, const member *w,
                                       const member *concrete, size_t n)
{
	builder excl = {0};
	bool changed = false;
	for (size_t i = 0; i < w->nexcluded; i++) {
		const member *e = &w->excluded[i];
		const member *c = find_id(concrete, n, e->id);
		if (!c) {
			push(&excl, *e);
		} else if (c->caveated) {
			push(&excl, derive(m, e, true, NULL, 0, e, c, NULL));
			changed = true;
		} else {
			changed = true;
		}
	}
	if (!changed) {
		free(excl.items);
		return *w;
	}
	size_t nexcl;
	const member *list = finish(m, &excl, compare_ids, &nexcl);
	return derive(m, w, w->caveated, list, nexcl, w, NULL, NULL);
}

static member union_concretes(membership *m, const member *x, const member *y)
{
	return derive(m, x, x->caveated && y->caveated, NULL, 0, x, y, NULL);
}

static member_set union_sets(membership *m, const member_set *x,
                             const member_set *y)
{
	if (y->n == 0)
		return *x;
	if (x->n == 0)
		return *y;
	builder out = {0};
	size_t i = 0, j = 0;
	while (i < x->n || j < y->n) {
		int c = i >= x->n   ? 1
		        : j >= y->n ? -1
		                    : compare_group(&x->items[i], &y->items[j]);
		if (c < 0) {
			group g = next_group(x, &i);
			push_group(&out, &g);
			continue;
		}
		if (c > 0) {
			group g = next_group(y, &j);
			push_group(&out, &g);
			continue;
		}
		group gx = next_group(x, &i), gy = next_group(y, &j);
		builder concrete = {0};
		size_t a = 0, b = 0;
		while (a < gx.nconcrete || b < gy.nconcrete) {
			int d = a >= gx.nconcrete   ? 1
			        : b >= gy.nconcrete ? -1
			                            : strcmp(gx.concrete[a].id,
			                                     gy.concrete[b].id);
			if (d < 0)
				push(&concrete, gx.concrete[a++]);
			else if (d > 0)
				push(&concrete, gy.concrete[b++]);
			else
				push(&concrete,
				     union_concretes(m, &gx.concrete[a++],
				                     &gy.concrete[b++]));
		}
		if (gx.wildcard || gy.wildcard) {
			member w =
			    gx.wildcard && gy.wildcard
			        ? union_wildcards(m, gx.wildcard, gy.wildcard)
			    : gx.wildcard ? *gx.wildcard
			                  : *gy.wildcard;
			push(&out, union_wildcard_concretes(
			               m, &w, concrete.items, concrete.n));
		}
		for (size_t k = 0; k < concrete.n; k++)
			push(&out, concrete.items[k]);
		free(concrete.items);
	}
	return finish_set(m, &out);
}

/* ============================================================ intersection */

/* {* - E1} & {* - E2} = {* - (E1 | E2)}. */
static member intersect_wildcards(membership *m, const member *x,
                                  const member *y)
{
	builder excl = {0};
	for (size_t i = 0; i < x->nexcluded; i++) {
		const member *e = &x->excluded[i];
		const member *f = excluded_id(y, e->id);
		push(&excl, f ? union_concretes(m, e, f) : *e);
	}
	for (size_t i = 0; i < y->nexcluded; i++)
		if (!excluded_id(x, y->excluded[i].id))
			push(&excl, y->excluded[i]);
	size_t n;
	const member *list = finish(m, &excl, compare_ids, &n);
	return derive(m, x, x->caveated || y->caveated, list, n, x, y, NULL);
}

/* A concrete subject intersected with a wildcard (w may be NULL): kept if
 * the wildcard covers it; conditional if the wildcard or a conditional
 * exclusion makes it so.  Returns false if nothing remains. */
static bool intersect_with_wildcard(membership *m, const member *c,
                                    const member *w, member *out)
{
	if (!w)
		return false;
	const member *e = excluded_id(w, c->id);
	if (!e) {
		*out =
		    w->caveated ? derive(m, c, true, NULL, 0, c, w, NULL) : *c;
		return true;
	}
	if (!e->caveated)
		return false;
	*out = derive(m, c, true, NULL, 0, c, w, e);
	return true;
}

/* *acc |= x, where either side may be absent. */
static void union_into(membership *m, bool *have, member *acc, const member *x)
{
	*acc = *have ? union_concretes(m, acc, x) : *x;
	*have = true;
}

static member_set intersect_sets(membership *m, const member_set *x,
                                 const member_set *y)
{
	builder out = {0};
	size_t i = 0, j = 0;
	while (i < x->n && j < y->n) {
		int c = compare_group(&x->items[i], &y->items[j]);
		if (c < 0) {
			next_group(x, &i);
			continue;
		}
		if (c > 0) {
			next_group(y, &j);
			continue;
		}
		group gx = next_group(x, &i), gy = next_group(y, &j);
		if (gx.wildcard && gy.wildcard)
			push(&out,
			     intersect_wildcards(m, gx.wildcard, gy.wildcard));
		size_t a = 0, b = 0;
		while (a < gx.nconcrete || b < gy.nconcrete) {
			int d = a >= gx.nconcrete   ? 1
			        : b >= gy.nconcrete ? -1
			                            : strcmp(gx.concrete[a].id,
			                                     gy.concrete[b].id);
			const member *cx = d <= 0 ? &gx.concrete[a++] : NULL;
			const member *cy = d >= 0 ? &gy.concrete[b++] : NULL;
			bool have = false;
			member r, t;
			if (cx && cy) {
				t = derive(m, cx, cx->caveated || cy->caveated,
				           NULL, 0, cx, cy, NULL);
				union_into(m, &have, &r, &t);
			}
			if (cx &&
			    intersect_with_wildcard(m, cx, gy.wildcard, &t))
				union_into(m, &have, &r, &t);
			if (cy &&
			    intersect_with_wildcard(m, cy, gx.wildcard, &t))
				union_into(m, &have, &r, &t);
			if (have)
				push(&out, r);
		}
	}
	return finish_set(m, &out);
}

/* ============================================================ exclusion */

/* A concrete subject minus a wildcard: removed unless the wildcard
 * excludes it; conditional removals leave it conditional. */
static bool subtract_wildcard_from_concrete(membership *m, const member *c,
                                            const member *w, member *out)
{
	const member *e = excluded_id(w, c->id);
	if (!e) {
		if (!w->caveated)
			return false;
		*out = derive(m, c, true, NULL, 0, c, NULL, NULL);
		return true;
	}
	*out = e->caveated ? derive(m, c, true, NULL, 0, c, NULL, NULL) : *c;
	return true;
}

/* A wildcard minus a concrete subject: the subject joins its exclusions
 * (unconditional if either exclusion is). */
static member subtract_concrete_from_wildcard(membership *m, const member *w,
                                              const member *r)
{
	builder excl = {0};
	bool found = false;
	for (size_t i = 0; i < w->nexcluded; i++) {
		const member *e = &w->excluded[i];
		if (strcmp(e->id, r->id) == 0) {
			push(&excl, derive(m, e, e->caveated && r->caveated,
			                   NULL, 0, e, r, NULL));
			found = true;
		} else {
			push(&excl, *e);
		}
	}
	if (!found) {
		member plain = *r;
		plain.excluded = NULL;
		plain.nexcluded = 0;
		push(&excl, plain);
	}
	size_t n;
	const member *list = finish(m, &excl, compare_ids, &n);
	return derive(m, w, w->caveated, list, n, w, NULL, NULL);
}

/* A wildcard minus a wildcard.  {*} - {*} is empty; {* - E1} - {* - E2}
 * leaves the subjects of E2 not in E1 as concrete members (pushed to
 * `concrete`).  The wildcard survives (conditionally) only if either side
 * is conditional.  Returns whether a wildcard remains in *out. */
static bool subtract_wildcards(membership *m, const member *w, const member *r,
                               member *out, builder *concrete)
{
	if (!r->caveated && r->nexcluded == 0)
		return false;
	for (size_t i = 0; i < r->nexcluded; i++) {
		const member *x = &r->excluded[i];
		const member *e = excluded_id(w, x->id);
		if (!e || e->caveated)
			push(concrete,
			     derive(m, x,
			            w->caveated || r->caveated || x->caveated ||
			                (e && e->caveated),
			            NULL, 0, x, NULL, NULL));
	}
	if (!w->caveated && !r->caveated)
		return false;
	*out = derive(m, w, true, w->excluded, w->nexcluded, w, r, NULL);
	return true;
}

/* One group of x minus the same group of y, in SpiceDB's order: y's
 * concrete subjects first, then its wildcard. */
static void subtract_group(membership *m, const group *gx, const group *gy,
                           builder *out)
{
	size_t n0 = gx->nconcrete;
	builder c = {0};
	bool *alive = xcalloc(n0 + 1, sizeof(*alive));
	for (size_t i = 0; i < n0; i++) {
		push(&c, gx->concrete[i]);
		alive[i] = true;
	}
	bool have_wildcard = gx->wildcard != NULL;
	member w = have_wildcard ? *gx->wildcard : (member){0};

	for (size_t k = 0; k < gy->nconcrete; k++) {
		const member *r = &gy->concrete[k];
		const member *hit = find_id(c.items, n0, r->id);
		if (hit) {
			size_t at = (size_t)(hit - c.items);
			if (alive[at] && r->caveated)
				c.items[at] =
				    derive(m, &c.items[at], true, NULL, 0,
				           &c.items[at], r, NULL);
			else
				alive[at] = false;
		}
		if (have_wildcard)
			w = subtract_concrete_from_wildcard(m, &w, r);
	}
	builder added = {0};
	if (gy->wildcard) {
		for (size_t i = 0; i < n0; i++) {
			member t;
			if (!alive[i])
				continue;
			if (subtract_wildcard_from_concrete(m, &c.items[i],
			                                    gy->wildcard, &t))
				c.items[i] = t;
			else
				alive[i] = false;
		}
		if (have_wildcard) {
			member t;
			have_wildcard =
			    subtract_wildcards(m, &w, gy->wildcard, &t, &added);
			if (have_wildcard)
				w = t;
		}
	}
	/* Subjects freed from exclusions replace what was there. */
	for (size_t k = 0; k < added.n; k++) {
		const member *hit = find_id(c.items, n0, added.items[k].id);
		if (hit) {
			size_t at = (size_t)(hit - c.items);
			c.items[at] = added.items[k];
			alive[at] = true;
		} else {
			push(out, added.items[k]);
		}
	}
	if (have_wildcard)
		push(out, w);
	for (size_t i = 0; i < n0; i++)
		if (alive[i])
			push(out, c.items[i]);
	free(added.items);
	free(c.items);
	free(alive);
}

static member_set subtract_sets(membership *m, const member_set *x,
                                const member_set *y)
{
	if (x->n == 0 || y->n == 0)
		return *x;
	builder out = {0};
	size_t i = 0, j = 0;
	while (i < x->n) {
		group gx = next_group(x, &i);
		while (j < y->n && compare_group(&y->items[j], gx.first) < 0)
			next_group(y, &j);
		if (j < y->n && compare_group(&y->items[j], gx.first) == 0) {
			group gy = next_group(y, &j);
			subtract_group(m, &gx, &gy, &out);
		} else {
			push_group(&out, &gx);
		}
	}
	return finish_set(m, &out);
}

/* ============================================================ expansion */

/* The set with every member conditional: what is reached through a
 * caveated relationship. */
static member_set all_caveated(membership *m, const member_set *set)
{
	builder b = {0};
	for (size_t i = 0; i < set->n; i++) {
		const member *x = &set->items[i];
		push(&b, derive(m, x, true, x->excluded, x->nexcluded, x, NULL,
		                NULL));
	}
	return finish_set(m, &b);
}

static int expand_onr(membership *m, const char *type, const char *id,
                      const char *relation, int depth, member_set *out,
                      pemba_error *err);

/* A leaf's subjects, each found through the leaf's relation, united with
 * the expansions of its usersets. */
static int fold_leaf(membership *m, const pemba_expand_node *node, int depth,
                     member_set *out, pemba_error *err)
{
	const char **source = arena_alloc(m->a, sizeof(*source));
	source[0] = arena_printf(m->a, "%s:%s#%s", node->object_type,
	                         node->object_id, node->relation);
	builder b = {0};
	for (size_t i = 0; i < node->nsubjects; i++) {
		const pemba_subject_ref *s = &node->subjects[i];
		const char *relation =
		    s->relation && strcmp(s->relation, "...") != 0 ? s->relation
		                                                   : "";
		push(&b, (member){.type = arena_strdup(m->a, s->type),
		                  .id = arena_strdup(m->a, s->id),
		                  .relation = arena_strdup(m->a, relation),
		                  .caveated = s->caveat_name != NULL,
		                  .sources = source,
		                  .nsources = 1});
	}
	member_set set = finish_set(m, &b);
	/* A leaf lists each subject once, but stay correct if not. */
	builder unique = {0};
	for (size_t i = 0; i < set.n; i++) {
		if (unique.n && compare_members(&unique.items[unique.n - 1],
		                                &set.items[i]) == 0)
			unique.items[unique.n - 1] = union_concretes(
			    m, &unique.items[unique.n - 1], &set.items[i]);
		else
			push(&unique, set.items[i]);
	}
	set = finish_set(m, &unique);

	for (size_t i = 0; i < node->nsubjects; i++) {
		const pemba_subject_ref *s = &node->subjects[i];
		if (!s->relation || !s->relation[0] ||
		    strcmp(s->relation, "...") == 0 || strcmp(s->id, "*") == 0)
			continue;
		member_set sub;
		int rc = expand_onr(m, s->type, s->id, s->relation, depth + 1,
		                    &sub, err);
		if (rc < 0)
			return rc;
		if (s->caveat_name)
			sub = all_caveated(m, &sub);
		set = union_sets(m, &set, &sub);
	}
	*out = set;
	return PEMBA_OK;
}

static int fold_node(membership *m, const pemba_expand_node *node, int depth,
                     member_set *out, pemba_error *err)
{
	if (node->kind == PEMBA_EXPAND_LEAF)
		return fold_leaf(m, node, depth, out, err);
	member_set acc = {0};
	for (size_t i = 0; i < node->nchildren; i++) {
		member_set child;
		int rc = fold_node(m, node->children[i], depth, &child, err);
		if (rc < 0)
			return rc;
		if (node->children[i]->caveat_name)
			child = all_caveated(m, &child);
		if (i == 0)
			acc = child;
		else if (node->kind == PEMBA_EXPAND_UNION)
			acc = union_sets(m, &acc, &child);
		else if (node->kind == PEMBA_EXPAND_INTERSECTION)
			acc = intersect_sets(m, &acc, &child);
		else
			acc = subtract_sets(m, &acc, &child);
	}
	*out = acc;
	return PEMBA_OK;
}

/* The members of type:id#relation, memoized.  depth counts nested
 * userset expansions from the validation key. */
static int expand_onr(membership *m, const char *type, const char *id,
                      const char *relation, int depth, member_set *out,
                      pemba_error *err)
{
	char *key = arena_printf(m->a, "%s:%s#%s", type, id, relation);
	memo_entry *e = memo_find(m, key);
	if (e && e->in_progress)
		return error_set(err, PEMBA_EDEPTH,
		                 "max depth exceeded: `%s` is reached again "
		                 "while expanding it (a cycle in the data)",
		                 key);
	if (e && e->failed) {
		if (err)
			*err = e->error;
		return e->failed;
	}
	if (e) {
		*out = e->set;
		return PEMBA_OK;
	}
	if (depth > PEMBA_MAX_DEPTH)
		return error_set(err, PEMBA_EDEPTH,
		                 "max depth exceeded: usersets nest more than "
		                 "%d deep (reached `%s`)",
		                 PEMBA_MAX_DEPTH, key);
	e = memo_add(m, key);
	e->in_progress = true;
	pemba_expand_node *tree = NULL;
	int rc = pemba_expand(m->db, PEMBA_REVISION_HEAD, type, id, relation,
	                      &tree, NULL, &e->error);
	if (rc == PEMBA_OK)
		rc = fold_node(m, tree, depth, &e->set, &e->error);
	pemba_expand_free(tree);
	e->in_progress = false;
	if (rc < 0) {
		e->failed = rc;
		if (err)
			*err = e->error;
		return rc;
	}
	*out = e->set;
	return PEMBA_OK;
}

int membership_expand(membership *m, const char *type, const char *id,
                      const char *relation, member_set *out, pemba_error *err)
{
	return expand_onr(m, type, id, relation, 0, out, err);
}

const member *member_set_find(const member_set *s, const char *type,
                              const char *id, const char *relation)
{
	if (!relation || strcmp(relation, "...") == 0)
		relation = "";
	if (s->n == 0)
		return NULL;
	member key = {.type = type, .id = id, .relation = relation};
	return bsearch(&key, s->items, s->n, sizeof(*s->items),
	               compare_members);
}
