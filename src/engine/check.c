/*
 * check.c -- CheckPermission: does a subject have a relation or permission
 * on a resource, as of one revision?
 *
 * Evaluation is a depth-first walk over (resource, relation) subproblems.
 * The subject is fixed for the whole request, so a subproblem is keyed by
 * the relation (a schema pointer, which also names the resource type) and
 * the resource id alone, and its answer is memoized in a hash table that
 * lives in the request arena.
 *
 * Values are three-valued: FALSE, TRUE and UNKNOWN.  UNKNOWN means "could
 * not be decided": the walk ran into a subproblem that is still being
 * evaluated further up the stack (a cycle in the data), or into the depth
 * limit.  Operators combine values like Kleene's logic (a union with one
 * TRUE child is TRUE whatever the others are), so a definite answer never
 * depends on an undecided one and may always be memoized.  An UNKNOWN that
 * reaches the root becomes PEMBA_EDEPTH, which is what SpiceDB reports for
 * data that recurses without resolving.  README.md explains the rules that
 * decide when a memoized UNKNOWN may be reused.
 */
#include "engine/engine.h"

#include <assert.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/internal.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/xalloc.h"

/* ------------------------------------------------------------- values */

enum {
	VALUE_FALSE = 0,
	VALUE_TRUE = 1,
	VALUE_UNKNOWN = 2,
	/* True if caveat parameters missing from the contexts allow it:
	 * check_ctx.missing names them.  Every function that returns
	 * VALUE_COND sets c->missing just before returning, and every
	 * caller reads it before making another call. */
	VALUE_COND = 3,
	/* errors are the negative pemba codes */
};

/* States of a memo entry.  The first four equal the values above. */
enum {
	MEMO_FALSE = VALUE_FALSE,
	MEMO_TRUE = VALUE_TRUE,
	MEMO_UNKNOWN = VALUE_UNKNOWN,
	MEMO_COND = VALUE_COND,
	MEMO_IN_PROGRESS = 4,
};

typedef struct memo_entry {
	struct memo_entry *next; /* bucket chain */
	const schema_relation *rel;
	const char *id;
	uint64_t hash;
	int state;
	/* MEMO_IN_PROGRESS: the stack depth of the frame evaluating it. */
	int depth;
	/* MEMO_UNKNOWN: the shallowest frame still on the stack that the
	 * answer relied on (-1 if none) and that frame's serial, so a later
	 * lookup can tell whether that frame is still the same invocation. */
	int low;
	uint64_t low_serial;
	/* MEMO_UNKNOWN caused by the depth limit: the depth it was evaluated
	 * at (0 if the limit played no part).  Reusable only at that depth or
	 * deeper, where the remaining budget is no larger. */
	int limited_at;
	/* MEMO_COND: the missing parameters. */
	const nameset *missing;
} memo_entry;

/* A subject id collected from a query, with its type for arrows, and the
 * value of the relationship's caveat (VALUE_TRUE when it has none). */
typedef struct subject_ref {
	const char *type;
	const char *id;
	int caveat;
	const nameset *missing; /* caveat == VALUE_COND */
} subject_ref;

typedef struct check_ctx {
	store *st;
	const schema *sc;
	pemba_revision at;
	arena *arena;
	pemba_error *err;
	engine_stats stats;

	/* The request subject; relation "" when it is the object itself. */
	const char *subject_type;
	const char *subject_id;
	const char *subject_relation;

	memo_entry **buckets;
	size_t nbuckets; /* power of two */
	size_t nentries;

	/* serial of the invocation occupying each stack depth, 1-based */
	uint64_t frame_serial[PEMBA_MAX_DEPTH + 2];
	uint64_t next_serial;

	/* While a frame evaluates: the shallowest active frame any UNKNOWN
	 * it saw depends on (INT_MAX if none), and whether the depth limit
	 * was hit.  Saved and restored around every frame. */
	int low;
	bool limited;

	/* First places an UNKNOWN came from, for the error message. */
	const char *cycle_at;
	const char *limit_at;

	/* Caveats: their evaluator (with the request's context) and the
	 * missing set of the last VALUE_COND returned. */
	caveat_eval cav;
	const nameset *missing;

	/* Debug trace: NULL unless the caller asked for one (then every
	 * subproblem goes through check_subproblem_traced). */
	struct trace_state *trace;
} check_ctx;

/* A trace being recorded: its own arena (it outlives the request's), and
 * the node whose subproblems are being evaluated. */
typedef struct trace_state {
	arena *arena;
	pemba_check_trace *root;
	pemba_check_trace *current;
	pemba_check_trace *last_child; /* of current, for appending */
} trace_state;

/* ------------------------------------------------------------ the memo */

static uint64_t memo_hash(const schema_relation *rel, const char *id)
{
	return hash_str(id, (uint64_t)(uintptr_t)rel);
}

static memo_entry *memo_find(check_ctx *c, const schema_relation *rel,
                             const char *id, uint64_t h)
{
	memo_entry *e = c->buckets[h & (c->nbuckets - 1)];
	for (; e; e = e->next)
		if (e->hash == h && e->rel == rel && strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

/* Doubles the bucket array; entries keep their addresses. */
static void memo_grow(check_ctx *c)
{
	size_t n = c->nbuckets * 2;
	memo_entry **b = arena_alloc(c->arena, n * sizeof(*b));
	for (size_t i = 0; i < c->nbuckets; i++) {
		memo_entry *e = c->buckets[i];
		while (e) {
			memo_entry *next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
			e = next;
		}
	}
	c->buckets = b;
	c->nbuckets = n;
}

/* Adds an entry for (rel, id); `id` is copied into the arena because the
 * caller's copy may be a store row that goes away. */
static memo_entry *memo_insert(check_ctx *c, const schema_relation *rel,
                               const char *id, uint64_t h)
{
	if (c->nentries >= c->nbuckets)
		memo_grow(c);
	memo_entry *e = arena_alloc(c->arena, sizeof(*e));
	e->rel = rel;
	e->id = arena_strdup(c->arena, id);
	e->hash = h;
	e->next = c->buckets[h & (c->nbuckets - 1)];
	c->buckets[h & (c->nbuckets - 1)] = e;
	c->nentries++;
	return e;
}

/* ------------------------------------------------------------- helpers */

static bool str_empty(const char *s)
{
	return s == NULL || s[0] == '\0';
}

/* "" for none; the API also accepts NULL and SpiceDB's "...". */
const char *engine_normalize_relation(const char *s)
{
	if (s == NULL || strcmp(s, "...") == 0)
		return "";
	return s;
}

static const char *describe(check_ctx *c, const schema_relation *rel,
                            const char *id)
{
	return arena_printf(c->arena, "%s:%s#%s", rel->definition->name, id,
	                    rel->name);
}

/* ------------------------------------------------------------ caveats */

/* Evaluates the caveat a row carries: VALUE_TRUE (also for a row
 * without caveat), VALUE_FALSE, VALUE_COND (c->missing set) or an
 * error. */
static void trace_row(check_ctx *c, const store_rel *row, int v);

static int eval_row_caveat(check_ctx *c, const store_rel *row)
{
	int v = caveat_eval_row(&c->cav, row, &c->missing);
	if (v == KLEENE_COND)
		v = VALUE_COND;
	if (c->trace)
		trace_row(c, row, v);
	return v;
}

/* Returns the value of the row matching f (at most one row matches an
 * exact filter): its caveat's value, VALUE_FALSE if none, or an error. */
static int probe_exists(check_ctx *c, const store_filter *f)
{
	store_iter *it;
	c->stats.queries++;
	int rc = store_query(c->st, c->at, f, NULL, 1, &it, c->err);
	if (rc < 0)
		return rc;
	const store_rel *row;
	rc = store_iter_next(it, &row, c->err);
	if (rc == 1)
		rc = eval_row_caveat(c, row);
	store_iter_close(it);
	return rc; /* 0 (exhausted) is VALUE_FALSE */
}

/* Runs f and copies the subject (type, id) and caveat value of every row
 * into the arena (rows whose caveat is false too: `.all()` must see them). Rows
 * are collected before any recursion so that at most one store iterator is open
 * at a time, whatever the recursion depth. */
static int collect_subjects(check_ctx *c, const store_filter *f,
                            subject_ref **out, size_t *nout)
{
	store_iter *it;
	c->stats.queries++;
	int rc = store_query(c->st, c->at, f, NULL, 0, &it, c->err);
	if (rc < 0)
		return rc;
	subject_ref *list = NULL;
	size_t n = 0, cap = 0;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, c->err)) == 1) {
		int cv = eval_row_caveat(c, row);
		if (cv < 0) {
			rc = cv;
			break;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			subject_ref *grown =
			    arena_alloc(c->arena, ncap * sizeof(*grown));
			if (n)
				memcpy(grown, list, n * sizeof(*grown));
			list = grown;
			cap = ncap;
		}
		/* Subject types are schema names: share the schema's copy
		 * when there is one, to save a string per row. */
		const schema_definition *d =
		    schema_find_definition(c->sc, row->subject_type);
		list[n].type =
		    d ? d->name : arena_strdup(c->arena, row->subject_type);
		list[n].id = arena_strdup(c->arena, row->subject_id);
		list[n].caveat = cv;
		list[n].missing = cv == VALUE_COND ? c->missing : NULL;
		n++;
	}
	store_iter_close(it);
	if (rc < 0)
		return rc;
	*out = list;
	*nout = n;
	return PEMBA_OK;
}

/* --------------------------------------------------------- evaluation */

static int check_subproblem(check_ctx *c, const schema_relation *rel,
                            const char *id, int depth);

/* Kleene OR / AND accumulation over FALSE < COND < UNKNOWN < TRUE (for
 * OR; the reverse order for AND).  An accumulator starts at FALSE (OR) or
 * TRUE (AND) with no missing names; a step folds in a child's value `v`
 * (whose missing names are c->missing when v is VALUE_COND) and returns
 * true when the accumulator can no longer change.  The missing names of a
 * COND result are the union over its COND children, as SpiceDB's caveat
 * runner reports them. */
typedef struct accum {
	int v;
	const nameset *missing;
} accum;

static bool union_step(check_ctx *c, accum *acc, int v)
{
	if (v == VALUE_TRUE) {
		acc->v = VALUE_TRUE;
		return true;
	}
	if (v == VALUE_UNKNOWN) {
		acc->v = VALUE_UNKNOWN;
	} else if (v == VALUE_COND) {
		if (acc->v != VALUE_UNKNOWN)
			acc->v = VALUE_COND;
		acc->missing =
		    nameset_union(c->arena, acc->missing, c->missing);
	}
	return false;
}

static bool intersect_step(check_ctx *c, accum *acc, int v)
{
	if (v == VALUE_FALSE) {
		acc->v = VALUE_FALSE;
		return true;
	}
	if (v == VALUE_UNKNOWN) {
		acc->v = VALUE_UNKNOWN;
	} else if (v == VALUE_COND) {
		if (acc->v != VALUE_UNKNOWN)
			acc->v = VALUE_COND;
		acc->missing =
		    nameset_union(c->arena, acc->missing, c->missing);
	}
	return false;
}

/* The value of an accumulator, publishing its missing names. */
static int accum_value(check_ctx *c, const accum *acc)
{
	if (acc->v == VALUE_COND)
		c->missing = acc->missing;
	return acc->v;
}

/* The value of a relationship reached through: AND(its caveat, the value
 * `sub` of what it leads to).  `sub` was just returned (c->missing is its
 * set when COND). */
static int through(check_ctx *c, const subject_ref *s, int sub)
{
	if (sub < 0 || s->caveat == VALUE_TRUE)
		return sub;
	accum acc = {VALUE_COND, s->missing};
	intersect_step(c, &acc, sub);
	return accum_value(c, &acc);
}

/* tupleset->target over the subjects of the tupleset relation on (def,
 * id).  A subject whose definition has no relation or permission named
 * `target` contributes FALSE.  `all` selects .all() semantics: TRUE iff
 * there is at least one subject and every one has the target. */
static int eval_arrow(check_ctx *c, const schema_expr *e,
                      const schema_definition *def, const char *id, int depth,
                      bool all)
{
	store_filter f = {
	    .resource_type = def->name,
	    .resource_id = id,
	    .relation = e->tupleset->name,
	};
	subject_ref *subjects;
	size_t n;
	int rc = collect_subjects(c, &f, &subjects, &n);
	if (rc < 0)
		return rc;
	if (n == 0)
		return VALUE_FALSE;

	accum acc = {all ? VALUE_TRUE : VALUE_FALSE, NULL};
	for (size_t i = 0; i < n; i++) {
		const schema_definition *sd =
		    schema_find_definition(c->sc, subjects[i].type);
		const schema_relation *target =
		    sd ? schema_find_relation(sd, e->target) : NULL;
		int v = VALUE_FALSE;
		/* A tupleset relationship whose caveat is false grants
		 * nothing, and fails an .all() as SpiceDB's AND of
		 * (relationship caveat AND target) does. */
		if (target && subjects[i].caveat != VALUE_FALSE) {
			v = check_subproblem(c, target, subjects[i].id,
			                     depth + 1);
			if (v < 0)
				return v;
			if (v != VALUE_FALSE)
				v = through(c, &subjects[i], v);
		}
		if (all ? intersect_step(c, &acc, v) : union_step(c, &acc, v))
			break;
	}
	return accum_value(c, &acc);
}

/* Evaluates a permission expression on object (def, id). */
static int eval_expr(check_ctx *c, const schema_expr *e,
                     const schema_definition *def, const char *id, int depth)
{
	accum acc;
	int v;

	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		return VALUE_FALSE;
	case SCHEMA_EXPR_REF:
		return check_subproblem(c, e->ref, id, depth + 1);
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
		return eval_arrow(c, e, def, id, depth, false);
	case SCHEMA_EXPR_ARROW_ALL:
		return eval_arrow(c, e, def, id, depth, true);
	case SCHEMA_EXPR_UNION:
		acc = (accum){VALUE_FALSE, NULL};
		for (size_t i = 0; i < e->nchildren; i++) {
			v = eval_expr(c, e->children[i], def, id, depth);
			if (v < 0)
				return v;
			if (union_step(c, &acc, v))
				break;
		}
		return accum_value(c, &acc);
	case SCHEMA_EXPR_INTERSECT:
		acc = (accum){VALUE_TRUE, NULL};
		for (size_t i = 0; i < e->nchildren; i++) {
			v = eval_expr(c, e->children[i], def, id, depth);
			if (v < 0)
				return v;
			if (intersect_step(c, &acc, v))
				break;
		}
		return accum_value(c, &acc);
	case SCHEMA_EXPR_EXCLUDE: {
		/* base AND NOT excluded; NOT keeps a COND's missing names. */
		assert(e->nchildren == 2);
		int base = eval_expr(c, e->children[0], def, id, depth);
		if (base < 0 || base == VALUE_FALSE)
			return base;
		acc = (accum){VALUE_TRUE, NULL};
		intersect_step(c, &acc, base);
		int sub = eval_expr(c, e->children[1], def, id, depth);
		if (sub < 0)
			return sub;
		if (sub == VALUE_TRUE)
			return VALUE_FALSE;
		if (sub != VALUE_FALSE)
			intersect_step(c, &acc, sub);
		return accum_value(c, &acc);
	}
	}
	return error_set(c->err, PEMBA_EINVAL,
	                 "internal error: unknown expression kind %d",
	                 (int)e->kind);
}

/* The relation/permission a userset allowed type points at (group#member
 * -> group's `member`), or NULL for direct and wildcard types. */
static const schema_relation *userset_target(const schema_allowed_type *a)
{
	if (a->relation == NULL || a->wildcard || a->definition == NULL)
		return NULL;
	return schema_find_relation(a->definition, a->relation);
}

/* Evaluates a relation (not a permission) on (rel's definition, id).
 * Every step is an index probe: first the cheap exact ones -- the subject
 * itself if the schema allows its type + relation, `T:*` if the schema
 * allows a wildcard of the subject's type -- then, for every userset type
 * the schema allows (group#member), the rows with that subject type and
 * relation, recursing into each.  Subject types the schema does not allow
 * are never queried. */
static int eval_relation(check_ctx *c, const schema_relation *rel,
                         const char *id, int depth)
{
	bool want_exact = false, want_wildcard = false;

	for (size_t i = 0; i < rel->ntypes; i++) {
		const schema_allowed_type *a = &rel->types[i];
		if (strcmp(a->type, c->subject_type) != 0)
			continue;
		if (a->wildcard) {
			/* `T:*` stands for every T, and SpiceDB lets it grant
			 * a userset subject of type T too
			 * (group:* matches group:eng#member). */
			want_wildcard = true;
		} else if (strcmp(a->relation ? a->relation : "",
		                  c->subject_relation) == 0) {
			want_exact = true;
		}
	}

	int v;
	accum acc = {VALUE_FALSE, NULL};
	store_filter f = {
	    .resource_type = rel->definition->name,
	    .resource_id = id,
	    .relation = rel->name,
	    .subject_type = c->subject_type,
	    .subject_relation = c->subject_relation,
	};
	if (want_exact) {
		f.subject_id = c->subject_id;
		v = probe_exists(c, &f);
		if (v < 0)
			return v;
		if (union_step(c, &acc, v))
			return VALUE_TRUE;
	}
	if (want_wildcard) {
		f.subject_id = "*";
		f.subject_relation = "";
		v = probe_exists(c, &f);
		if (v < 0)
			return v;
		if (union_step(c, &acc, v))
			return VALUE_TRUE;
	}

	for (size_t i = 0; i < rel->ntypes; i++) {
		const schema_allowed_type *a = &rel->types[i];
		const schema_relation *target = userset_target(a);
		if (target == NULL)
			continue;
		/* The same userset may be listed twice (with and without a
		 * caveat); one query covers both. */
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = rel->types[j].relation &&
			       !rel->types[j].wildcard &&
			       strcmp(rel->types[j].type, a->type) == 0 &&
			       strcmp(rel->types[j].relation, a->relation) == 0;
		if (seen)
			continue;

		f.subject_type = a->type;
		f.subject_id = NULL;
		f.subject_relation = a->relation;
		subject_ref *subjects;
		size_t n;
		int rc = collect_subjects(c, &f, &subjects, &n);
		if (rc < 0)
			return rc;
		for (size_t k = 0; k < n; k++) {
			if (subjects[k].caveat == VALUE_FALSE)
				continue;
			v = check_subproblem(c, target, subjects[k].id,
			                     depth + 1);
			if (v < 0)
				return v;
			if (v != VALUE_FALSE)
				v = through(c, &subjects[k], v);
			if (union_step(c, &acc, v))
				return VALUE_TRUE;
		}
	}
	return accum_value(c, &acc);
}

/* Folds the dependencies of a reused or fresh UNKNOWN into the frame being
 * evaluated. */
static void depend_on(check_ctx *c, int low, bool limited)
{
	if (low >= 0 && low < c->low)
		c->low = low;
	if (limited)
		c->limited = true;
}

/* The relation or permission that `rel` is an alias of: following
 * permissions whose whole expression is a single name on the same object
 * (`permission member = direct`, `permission view = member`) until a
 * relation or a permission with a real expression.  rel itself if it is
 * not an alias.  The type checker refuses cycles of permissions, so this
 * ends. */
static const schema_relation *alias_target(const schema_relation *rel)
{
	while (rel->is_permission && rel->expr &&
	       rel->expr->kind == SCHEMA_EXPR_REF && rel->expr->ref)
		rel = rel->expr->ref;
	return rel;
}

/* Decides `subject` in rel on (rel->definition, id) at stack depth
 * `depth` (the root is 1).  Returns a VALUE_* or a negative error. */
static int check_subproblem_eval(check_ctx *c, const schema_relation *rel,
                                 const char *id, int depth)
{
	/* A userset is a member of itself (as SpiceDB does): checking
	 * group:eng#member for subject group:eng#member is TRUE. */
	if (strcmp(rel->name, c->subject_relation) == 0 &&
	    strcmp(id, c->subject_id) == 0 &&
	    strcmp(rel->definition->name, c->subject_type) == 0)
		return VALUE_TRUE;

	/* A permission that is only another name for a relation or
	 * permission (`permission member = direct`) is evaluated as its
	 * target within the same dispatch, so it costs no depth -- unless the
	 * subject has the resource's type, where the self-membership rule
	 * above must get to see every intermediate step (as SpiceDB does). */
	if (rel->is_permission &&
	    strcmp(rel->definition->name, c->subject_type) != 0)
		rel = alias_target(rel);

	uint64_t h = memo_hash(rel, id);
	memo_entry *e = memo_find(c, rel, id, h);
	if (e) {
		switch (e->state) {
		case MEMO_TRUE:
		case MEMO_FALSE:
			c->stats.memo_hits++;
			return e->state;
		case MEMO_COND:
			c->stats.memo_hits++;
			c->missing = e->missing;
			return e->state;
		case MEMO_IN_PROGRESS:
			/* A cycle: this subproblem depends on itself. */
			if (c->cycle_at == NULL)
				c->cycle_at = describe(c, rel, id);
			depend_on(c, e->depth, false);
			return VALUE_UNKNOWN;
		case MEMO_UNKNOWN:
			if ((e->low < 0 ||
			     c->frame_serial[e->low] == e->low_serial) &&
			    (e->limited_at == 0 || depth >= e->limited_at)) {
				c->stats.memo_hits++;
				depend_on(c, e->low, e->limited_at != 0);
				return VALUE_UNKNOWN;
			}
			break; /* stale: evaluate again */
		}
	}

	if (depth > PEMBA_MAX_DEPTH) {
		if (c->limit_at == NULL)
			c->limit_at = describe(c, rel, id);
		depend_on(c, -1, true);
		return VALUE_UNKNOWN;
	}

	if (e == NULL)
		e = memo_insert(c, rel, id, h);
	e->state = MEMO_IN_PROGRESS;
	e->depth = depth;
	c->frame_serial[depth] = ++c->next_serial;
	c->stats.dispatches++;

	int saved_low = c->low;
	bool saved_limited = c->limited;
	c->low = INT_MAX;
	c->limited = false;

	int v = rel->is_permission
	            ? eval_expr(c, rel->expr, rel->definition, e->id, depth)
	            : eval_relation(c, rel, e->id, depth);
	/* This invocation leaves the stack: UNKNOWNs that relied on it are
	 * stale from now on. */
	c->frame_serial[depth] = 0;
	if (v < 0)
		return v; /* the request fails; the memo is thrown away */

	if (v == VALUE_UNKNOWN) {
		/* Dependencies on this frame or deeper ones end here: those
		 * frames are gone, so the answer is as final as it gets. */
		int low = c->low < depth ? c->low : -1;
		e->state = MEMO_UNKNOWN;
		e->low = low;
		e->low_serial = low >= 0 ? c->frame_serial[low] : 0;
		e->limited_at = c->limited ? depth : 0;
		bool limited = c->limited;
		c->low = saved_low;
		c->limited = saved_limited;
		depend_on(c, low, limited);
	} else {
		/* A COND never relied on an UNKNOWN (UNKNOWN absorbs COND),
		 * so it is final like TRUE and FALSE. */
		e->state = v;
		if (v == VALUE_COND)
			e->missing = c->missing;
		c->low = saved_low;
		c->limited = saved_limited;
	}
	return v;
}

/* -------------------------------------------------------- debug traces */

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Copies a missing-name set into the trace's arena. */
static void trace_missing(trace_state *t, pemba_check_trace *node,
                          const nameset *m)
{
	if (!m || m->n == 0)
		return;
	const char **names = arena_alloc(t->arena, m->n * sizeof(*names));
	for (size_t i = 0; i < m->n; i++)
		names[i] = arena_strdup(t->arena, m->names[i]);
	node->missing = names;
	node->nmissing = m->n;
}

/* A row read while `t->current` is evaluated: its expiration, and its
 * caveat (the first whose caveat held wins over earlier false ones). */
static void trace_row(check_ctx *c, const store_rel *row, int v)
{
	trace_state *t = c->trace;
	pemba_check_trace *node = t->current;
	if (!node)
		return;
	if (row->expiration_ms > 0 &&
	    (node->expires_at_ms == 0 ||
	     row->expiration_ms < node->expires_at_ms))
		node->expires_at_ms = row->expiration_ms;
	if (v < 0 || !row->caveat_name || !row->caveat_name[0])
		return;
	if (node->caveat_name && node->caveat_result != PEMBA_CAVEAT_FALSE)
		return;
	const schema_caveat *cv = schema_find_caveat(c->sc, row->caveat_name);
	node->caveat_name = arena_strdup(t->arena, row->caveat_name);
	node->caveat_expression =
	    arena_strdup(t->arena, cv && cv->expression ? cv->expression : "");
	node->caveat_context = arena_strdup(
	    t->arena, row->caveat_context ? row->caveat_context : "");
	node->caveat_result = v == VALUE_TRUE    ? PEMBA_CAVEAT_TRUE
	                      : v == VALUE_FALSE ? PEMBA_CAVEAT_FALSE
	                                         : PEMBA_CAVEAT_MISSING;
	node->missing = NULL;
	node->nmissing = 0;
	if (v == VALUE_COND)
		trace_missing(t, node, c->missing);
}

/* check_subproblem_eval recording a trace node (a child of the node being
 * evaluated) with what it found. */
static int check_subproblem_traced(check_ctx *c, const schema_relation *rel,
                                   const char *id, int depth)
{
	trace_state *t = c->trace;
	pemba_check_trace *node = arena_alloc(t->arena, sizeof(*node));
	node->resource_type = arena_strdup(t->arena, rel->definition->name);
	node->resource_id = arena_strdup(t->arena, id);
	node->permission = arena_strdup(t->arena, rel->name);
	node->is_permission = rel->is_permission;
	pemba_check_trace *parent = t->current, *parent_last = t->last_child;
	if (!parent)
		t->root = node;
	else if (parent_last)
		parent_last->next_sibling = node;
	else
		parent->first_child = node;
	t->current = node;
	t->last_child = NULL;
	uint64_t hits = c->stats.memo_hits, dispatches = c->stats.dispatches;
	int64_t began = now_ns();

	int v = check_subproblem_eval(c, rel, id, depth);

	node->duration_ns = now_ns() - began;
	node->cached =
	    c->stats.dispatches == dispatches && c->stats.memo_hits > hits;
	t->current = parent;
	t->last_child = parent ? node : NULL;
	node->result = v == VALUE_TRUE    ? PEMBA_HAS_PERMISSION
	               : v == VALUE_FALSE ? PEMBA_NO_PERMISSION
	               : v == VALUE_COND  ? PEMBA_CONDITIONAL_PERMISSION
	                                  : 0;
	if (v == VALUE_COND) /* the result's names, over a caveat's own */
		trace_missing(t, node, c->missing);
	return v;
}

static int check_subproblem(check_ctx *c, const schema_relation *rel,
                            const char *id, int depth)
{
	if (c->trace == NULL)
		return check_subproblem_eval(c, rel, id, depth);
	return check_subproblem_traced(c, rel, id, depth);
}

/* ------------------------------------------------- request validation */

int engine_validate_type(pemba_error *err, const char *what, const char *s)
{
	if (str_empty(s))
		return error_set(err, PEMBA_EINVAL, "%s type is required",
		                 what);
	if (!schema_valid_type_name(s, strlen(s)))
		return error_set(err, PEMBA_EINVAL, "invalid %s type `%s`",
		                 what, s);
	return PEMBA_OK;
}

int engine_validate_id(pemba_error *err, const char *what, const char *s)
{
	if (str_empty(s))
		return error_set(err, PEMBA_EINVAL, "%s id is required", what);
	size_t n = strlen(s);
	if (n > PEMBA_MAX_OBJECT_ID)
		return error_set(err, PEMBA_EINVAL,
		                 "%s id is %zu bytes long, more than the "
		                 "limit of %d",
		                 what, n, PEMBA_MAX_OBJECT_ID);
	if (!schema_valid_object_id(s, n))
		return error_set(err, PEMBA_EINVAL, "invalid %s id `%s`", what,
		                 s);
	return PEMBA_OK;
}

int engine_validate_relation(pemba_error *err, const char *what, const char *s)
{
	if (!schema_valid_relation_name(s, strlen(s)))
		return error_set(err, PEMBA_EINVAL, "invalid %s `%s`", what, s);
	return PEMBA_OK;
}

int engine_find_definition(const schema *sc, const char *name,
                           const schema_definition **out, pemba_error *err)
{
	*out = sc ? schema_find_definition(sc, name) : NULL;
	if (*out == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found", name);
	return PEMBA_OK;
}

int engine_find_relation(const schema_definition *def, const char *name,
                         const schema_relation **out, pemba_error *err)
{
	*out = schema_find_relation(def, name);
	if (*out == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s`",
		                 name, def->name);
	return PEMBA_OK;
}

static int validate_request(const schema *sc, const pemba_check_request *r,
                            const schema_relation **rel_out, pemba_error *err)
{
	int rc;
	if ((rc = engine_validate_type(err, "resource", r->resource_type)) <
	        0 ||
	    (rc = engine_validate_id(err, "resource", r->resource_id)) < 0)
		return rc;
	if (str_empty(r->permission))
		return error_set(err, PEMBA_EINVAL, "permission is required");
	if ((rc = engine_validate_relation(err, "permission", r->permission)) <
	        0 ||
	    (rc = engine_validate_type(err, "subject", r->subject_type)) < 0 ||
	    (rc = engine_validate_id(err, "subject", r->subject_id)) < 0)
		return rc;
	if (strcmp(r->resource_id, "*") == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot perform check on wildcard resource "
		                 "`%s:*`",
		                 r->resource_type);
	if (strcmp(r->subject_id, "*") == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot perform check on wildcard subject "
		                 "`%s:*`",
		                 r->subject_type);
	const char *subject_relation =
	    engine_normalize_relation(r->subject_relation);
	if (subject_relation[0] &&
	    (rc = engine_validate_relation(err, "subject relation",
	                                   subject_relation)) < 0)
		return rc;

	const schema_definition *def =
	    sc ? schema_find_definition(sc, r->resource_type) : NULL;
	if (def == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found",
		                 r->resource_type);
	const schema_relation *rel = schema_find_relation(def, r->permission);
	if (rel == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s`",
		                 r->permission, r->resource_type);
	const schema_definition *sdef =
	    schema_find_definition(sc, r->subject_type);
	if (sdef == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "object definition `%s` not found",
		                 r->subject_type);
	if (subject_relation[0] &&
	    schema_find_relation(sdef, subject_relation) == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s`",
		                 subject_relation, r->subject_type);
	*rel_out = rel;
	return PEMBA_OK;
}

/* ------------------------------------------------------------ sessions */

/* A session is a check context whose memo outlives one root: every
 * engine_session_check() asks about a new resource for the same subject,
 * so answers of shared subproblems are reused.  TRUE and FALSE entries are
 * final; an UNKNOWN entry is reusable only while the frames it relied on
 * are on the stack, and no frame is on the stack between roots, so the
 * rules of a single check carry over unchanged. */
struct engine_session {
	check_ctx c;
	const nameset *missing; /* of the last CONDITIONAL answer */
};

int engine_session_begin(arena *a, store *st, const schema *sc,
                         pemba_revision at, const char *subject_type,
                         const char *subject_id, const char *subject_relation,
                         engine_session **out, pemba_error *err)
{
	engine_session *s = arena_alloc(a, sizeof(*s));
	check_ctx *c = &s->c;
	memset(c, 0, sizeof(*c));
	c->st = st;
	c->sc = sc;
	c->at = at;
	c->arena = a;
	c->err = err;
	c->subject_type = arena_strdup(a, subject_type);
	c->subject_id = arena_strdup(a, subject_id);
	c->subject_relation =
	    arena_strdup(a, engine_normalize_relation(subject_relation));
	caveat_eval_init(&c->cav, a, sc, err);
	c->nbuckets = 64;
	c->buckets = arena_alloc(a, c->nbuckets * sizeof(*c->buckets));
	c->low = INT_MAX;
	*out = s;
	return PEMBA_OK;
}

int engine_session_check(engine_session *s, const schema_relation *rel,
                         const char *id, pemba_permissionship *out)
{
	check_ctx *c = &s->c;
	c->low = INT_MAX;
	c->limited = false;
	c->cycle_at = NULL;
	c->limit_at = NULL;

	int v = check_subproblem(c, rel, id, 1);
	s->missing = v == VALUE_COND ? c->missing : NULL;
	if (v == VALUE_UNKNOWN) {
		if (c->limited && c->limit_at)
			v = error_set(c->err, PEMBA_EDEPTH,
			              "max depth exceeded: this usually "
			              "indicates a recursive or too deep data "
			              "dependency (more than %d nested "
			              "dispatches, reached %s)",
			              PEMBA_MAX_DEPTH, c->limit_at);
		else
			v = error_set(c->err, PEMBA_EDEPTH,
			              "max depth exceeded: this usually "
			              "indicates a recursive or too deep data "
			              "dependency (cycle through %s)",
			              c->cycle_at ? c->cycle_at : "?");
	}
	if (v < 0)
		return v;
	*out = v == VALUE_TRUE   ? PEMBA_HAS_PERMISSION
	       : v == VALUE_COND ? PEMBA_CONDITIONAL_PERMISSION
	                         : PEMBA_NO_PERMISSION;
	return PEMBA_OK;
}

int engine_session_set_context(engine_session *s, const char *context,
                               pemba_error *err)
{
	int rc = engine_validate_context(context, err);
	if (rc < 0)
		return rc;
	caveat_eval_set_context(&s->c.cav, context);
	return PEMBA_OK;
}

void engine_session_missing(const engine_session *s, const char *const **names,
                            size_t *n)
{
	*names = s->missing ? s->missing->names : NULL;
	*n = s->missing ? s->missing->n : 0;
}

void engine_session_end(engine_session *s)
{
	if (s)
		caveat_eval_end(&s->c.cav);
}

void engine_session_stats(const engine_session *s, engine_stats *out)
{
	*out = s->c.stats;
}

/* ---------------------------------------------------------- entry points */

/* Copies a missing-name set into one malloc'd block: the pointer array
 * followed by the strings. */
static char **copy_missing(const char *const *names, size_t n)
{
	if (n == 0)
		return NULL;
	size_t bytes = n * sizeof(char *);
	for (size_t i = 0; i < n; i++)
		bytes += strlen(names[i]) + 1;
	char **out = xmalloc(bytes);
	char *p = (char *)(out + n);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(names[i]) + 1;
		memcpy(p, names[i], len);
		out[i] = p;
		p += len;
	}
	return out;
}

void pemba_check_result_clear(pemba_check_result *r)
{
	if (r == NULL)
		return;
	free(r->missing);
	r->missing = NULL;
	r->nmissing = 0;
}

void pemba_check_trace_free(pemba_check_trace *trace)
{
	if (trace)
		arena_destroy(trace->internal_);
}

int engine_check_result_in(arena *scratch, store *st, const schema *sc,
                           pemba_revision at, const pemba_check_request *req,
                           pemba_check_result *out, engine_stats *stats,
                           pemba_error *err)
{
	return engine_check_trace_in(scratch, st, sc, at, req, out, NULL, stats,
	                             err);
}

int engine_check_trace_in(arena *scratch, store *st, const schema *sc,
                          pemba_revision at, const pemba_check_request *req,
                          pemba_check_result *out,
                          pemba_check_trace **trace_out, engine_stats *stats,
                          pemba_error *err)
{
	if (trace_out)
		*trace_out = NULL;
	if (req == NULL || out == NULL)
		return error_set(err, PEMBA_EINVAL, "missing check request");
	out->missing = NULL;
	out->nmissing = 0;
	const schema_relation *rel = NULL;
	int rc = validate_request(sc, req, &rel, err);
	if (rc < 0)
		return rc;
	if ((rc = engine_validate_context(req->context, err)) < 0)
		return rc;

	engine_session *s;
	rc = engine_session_begin(scratch, st, sc, at, req->subject_type,
	                          req->subject_id, req->subject_relation, &s,
	                          err);
	if (rc == PEMBA_OK)
		rc = engine_session_set_context(s, req->context, err);
	trace_state trace = {0};
	if (rc == PEMBA_OK && trace_out) {
		trace.arena = arena_create(0);
		s->c.trace = &trace;
	}
	if (rc == PEMBA_OK)
		rc = engine_session_check(s, rel, req->resource_id,
		                          &out->permissionship);
	if (trace.arena) {
		s->c.trace = NULL;
		if (rc == PEMBA_OK && trace.root) {
			trace.root->internal_ = trace.arena;
			*trace_out = trace.root;
		} else {
			arena_destroy(trace.arena);
		}
	}
	if (rc == PEMBA_OK &&
	    out->permissionship == PEMBA_CONDITIONAL_PERMISSION) {
		const char *const *names;
		size_t n;
		engine_session_missing(s, &names, &n);
		out->missing = copy_missing(names, n);
		out->nmissing = n;
	}
	if (stats)
		engine_session_stats(s, stats);
	engine_session_end(s);
	arena_reset(scratch);
	return rc;
}

int engine_check_in(arena *scratch, store *st, const schema *sc,
                    pemba_revision at, const pemba_check_request *req,
                    pemba_permissionship *out, engine_stats *stats,
                    pemba_error *err)
{
	if (out == NULL)
		return error_set(err, PEMBA_EINVAL, "missing check request");
	pemba_check_result r = {0};
	int rc =
	    engine_check_result_in(scratch, st, sc, at, req, &r, stats, err);
	if (rc == PEMBA_OK)
		*out = r.permissionship;
	pemba_check_result_clear(&r);
	return rc;
}

int engine_check(store *st, const schema *sc, pemba_revision at,
                 const pemba_check_request *req, pemba_permissionship *out,
                 engine_stats *stats, pemba_error *err)
{
	arena *a = arena_create(0);
	int rc = engine_check_in(a, st, sc, at, req, out, stats, err);
	arena_destroy(a);
	return rc;
}
