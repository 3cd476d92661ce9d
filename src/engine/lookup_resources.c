/*
 * lookup_resources.c -- LookupResources: every resource of a type on which
 * a subject has a permission, in ascending byte order of id, in memory
 * bounded by the page rather than by the number of results.
 *
 * 1. Relevance and edges (O(schema)).  The relations whose rows can
 *    influence the requested permission (compute_relevance), and for every
 *    definition the *edges* out of its objects: pairs (relevant relation R,
 *    subject relation s) from R's allowed types, meaning that a row
 *    `x:r#R@T:id#s` leads from T:id back to x:r.  Every query below is one
 *    exact prefix of the store's reverse index.
 * 2. The walk.  A resource can only have the permission if a chain of
 *    relationships leads from it down to the subject (or to a wildcard of
 *    the subject's type), because every TRUE of a check comes from a
 *    row.  So the walk starts at the subject and follows edges backwards,
 *    breadth first, visiting each object once (cycles end).  An edge into
 *    the requested type is not followed: it becomes a *stream*, a store
 *    query returning that edge's resource ids in id order, a batch at a
 *    time.  The walk thus holds the intermediate objects (groups,
 *    folders, ...), never the results.  When the schema lets objects of
 *    the requested type lead further (a relevant `parent: document` on a
 *    document lookup), they are intermediate objects themselves: the walk
 *    visits them and they are the candidates, sorted (memory O(that
 *    frontier), as before).  From a userset subject `T:id#rel` the first
 *    step takes only the edges SpiceDB's walk starts from (see lookup()
 *    and README.md), and `T:*` rows are followed for a subject object
 *    only.
 * 3. Verification in order.  A k-way merge of the streams (a min-heap on
 *    each stream's next id; equal ids from several streams are one
 *    candidate) yields the candidates after the cursor in ascending
 *    order.  Each is checked with a check session (one memo for many
 *    candidates, since the subject is fixed) and those the subject has
 *    (HAS_PERMISSION or CONDITIONAL, as the session answers; on_item also
 *    gets a CONDITIONAL one's missing caveat parameters) go to the
 *    callback, until `limit` results.  The session, its memo and the
 *    cursors handed out live in an arena of their own that is reset (the
 *    session begun again) whenever it grows past SESSION_BUDGET, so a
 *    lookup without a limit streams any number of results in bounded
 *    memory.
 *
 * Cost of a call (one page): the walk is one query per (visited object,
 * edge); each stream costs one query per batch (STREAM_FIRST_BATCH ids,
 * doubling up to STREAM_MAX_BATCH), and one check per candidate up to the
 * page's last result.  Memory: the visited objects, the streams' batches
 * and at most SESSION_BUDGET (plus one check) of session.  Exclusions and
 * intersections make the candidates a superset of the answer, which the
 * checks filter.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "util/error.h"
#include "util/hash.h"

/* Ids asked of a stream by its first query; each further query of the
 * same stream asks twice as many, up to STREAM_MAX_BATCH.  Small first
 * batches keep a walk with many streams cheap in memory; doubling keeps a
 * long stream from costing one query per few ids. */
#define STREAM_FIRST_BATCH 4
#define STREAM_MAX_BATCH 512

/* Bytes the check session's arena may reach before it is reset between
 * two candidates (losing the memo, which only costs time). */
#define SESSION_BUDGET ((size_t)1 << 20)

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

/* ---------------------------------------------------------------- edges */

/* A way back from an object of some type T: rows of `relation` whose
 * subject is that object with subject relation `subject_relation` ("" for
 * the object itself) lead to the row's resource. */
typedef struct edge {
	const schema_relation *relation; /* relevant, not a permission */
	const char *subject_relation;
	bool wildcard; /* the allowed type is `T:*`: rows name `T:*` */
} edge;

typedef struct edge_list {
	edge *items;
	size_t n, cap;
} edge_list;

static void add_edge(arena *a, edge_list *l, const schema_relation *rel,
                     const char *subject_relation, bool wildcard)
{
	/* `user | user with cav` allows the same rows twice: one edge. */
	for (size_t i = 0; i < l->n; i++)
		if (l->items[i].relation == rel &&
		    l->items[i].wildcard == wildcard &&
		    strcmp(l->items[i].subject_relation, subject_relation) == 0)
			return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 4;
		edge *items = arena_alloc(a, cap * sizeof(*items));
		if (l->n)
			memcpy(items, l->items, l->n * sizeof(*items));
		l->items = items;
		l->cap = cap;
	}
	l->items[l->n++] = (edge){rel, subject_relation, wildcard};
}

/* Per definition index, the edges out of its objects through relevant
 * relations. */
static edge_list *compute_edges(arena *a, const schema *sc, relevance *r)
{
	edge_list *edges =
	    arena_alloc(a, (sc->ndefinitions + 1) * sizeof(*edges));
	for (size_t d = 0; d < sc->ndefinitions; d++) {
		const schema_definition *def = sc->definitions[d];
		for (size_t i = 0; i < def->nrelations; i++) {
			const schema_relation *rel = def->relations[i];
			if (rel->is_permission || !*relevant_slot(r, rel))
				continue;
			for (size_t k = 0; k < rel->ntypes; k++) {
				const schema_allowed_type *t = &rel->types[k];
				if (t->definition == NULL)
					continue;
				add_edge(a, &edges[t->definition->index], rel,
				         t->relation ? t->relation : "",
				         t->wildcard);
			}
		}
	}
	return edges;
}

/* ---------------------------------------------------- the walk's state */

typedef struct object_node {
	const schema_definition *def;
	const char *id; /* arena copy */
} object_node;

/* A sorted source of candidate ids: the resources of one edge from one
 * object, fetched a batch at a time, strictly after the last id fetched. */
typedef struct stream {
	const char *subject_type; /* the schema's copy */
	const char *subject_id;   /* stable for the whole lookup */
	const edge *edge;         /* NULL: one fixed id (the subject itself) */
	/* The current batch: ids back to back (NUL-terminated), id i at
	 * buf + offsets[i]; pos is the next one to hand out.  Buffers grow
	 * geometrically and are reused by the next batch. */
	char *buf;
	size_t bufcap;
	uint32_t *offsets;
	size_t offcap;
	size_t n, pos;
	size_t want;    /* ids the next batch asks for */
	bool exhausted; /* the store has nothing after this batch */
} stream;

typedef struct lookup_state {
	arena *a;
	store *st;
	const schema *sc;
	pemba_revision at;
	pemba_error *err;
	const schema_relation *target;
	const char *after; /* the cursor's id, or NULL */
	relevance rel;
	edge_list *edges; /* per definition index */
	/* Objects of the target type lead further: they are walked and are
	 * the candidates (no streams). */
	bool target_intermediate;

	/* Visited objects: open-addressing set of indices into queue + 1. */
	size_t *slots;
	size_t nslots;      /* power of two */
	object_node *queue; /* queue[0] is the subject object */
	size_t nqueue, capqueue;
	bool subject_reached; /* a relevant row leads back to the subject */

	/* Candidates: streams merged through a min-heap of stream indices
	 * ordered by their current id, or (target_intermediate) a sorted
	 * array. */
	stream *streams;
	size_t nstreams, capstreams;
	size_t *heap;
	size_t nheap;
	const char **sorted;
	size_t nsorted, next_sorted;
	/* The last candidate handed out (a copy: its batch may be gone). */
	char *last;
	size_t lastcap;
	bool have_last;
} lookup_state;

static uint64_t object_hash(const schema_definition *def, const char *id)
{
	return hash_str(id, hash_str(def->name, 0));
}

static void visited_grow(lookup_state *L)
{
	size_t n = L->nslots * 2;
	size_t *slots = arena_alloc(L->a, n * sizeof(*slots));
	for (size_t i = 0; i < L->nqueue; i++) {
		uint64_t h = object_hash(L->queue[i].def, L->queue[i].id);
		size_t j = h & (n - 1);
		while (slots[j])
			j = (j + 1) & (n - 1);
		slots[j] = i + 1;
	}
	L->slots = slots;
	L->nslots = n;
}

/* Adds (def, id) to the walk unless already visited; id is copied. */
static void walk_visit(lookup_state *L, const schema_definition *def,
                       const char *id)
{
	if (2 * (L->nqueue + 1) > L->nslots)
		visited_grow(L);
	uint64_t h = object_hash(def, id);
	size_t j = h & (L->nslots - 1);
	while (L->slots[j]) {
		const object_node *o = &L->queue[L->slots[j] - 1];
		if (o->def == def && strcmp(o->id, id) == 0) {
			if (o == &L->queue[0])
				L->subject_reached = true;
			return;
		}
		j = (j + 1) & (L->nslots - 1);
	}
	if (L->nqueue == L->capqueue) {
		size_t cap = L->capqueue ? L->capqueue * 2 : 64;
		object_node *q = arena_alloc(L->a, cap * sizeof(*q));
		if (L->nqueue)
			memcpy(q, L->queue, L->nqueue * sizeof(*q));
		L->queue = q;
		L->capqueue = cap;
	}
	L->queue[L->nqueue].def = def;
	L->queue[L->nqueue].id = arena_strdup(L->a, id);
	L->slots[j] = ++L->nqueue;
}

static stream *add_stream(lookup_state *L, const char *subject_type,
                          const char *subject_id, const edge *e)
{
	if (L->nstreams == L->capstreams) {
		size_t cap = L->capstreams ? 2 * L->capstreams : 16;
		stream *s = arena_alloc(L->a, cap * sizeof(*s));
		if (L->nstreams)
			memcpy(s, L->streams, L->nstreams * sizeof(*s));
		L->streams = s;
		L->capstreams = cap;
	}
	stream *s = &L->streams[L->nstreams++];
	memset(s, 0, sizeof(*s));
	s->subject_type = subject_type;
	s->subject_id = subject_id;
	s->edge = e;
	s->want = STREAM_FIRST_BATCH;
	return s;
}

/* Follows edge e back from the object (def, id): into the target type
 * (unless it is intermediate) by opening a stream, elsewhere by visiting
 * every resource the edge's rows lead to.  The query's iterator is closed
 * before returning, and nothing else is queried while it is open. */
static int follow(lookup_state *L, const schema_definition *def, const char *id,
                  const edge *e)
{
	const schema_definition *rdef = e->relation->definition;
	if (rdef == L->target->definition && !L->target_intermediate) {
		add_stream(L, def->name, id, e);
		return PEMBA_OK;
	}
	store_filter f = {.resource_type = rdef->name,
	                  .relation = e->relation->name,
	                  .subject_type = def->name,
	                  .subject_id = id,
	                  .subject_relation = e->subject_relation};
	store_iter *it;
	int rc = store_query(L->st, L->at, &f, NULL, 0, &it, L->err);
	if (rc < 0)
		return rc;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, L->err)) == 1)
		walk_visit(L, rdef, row->resource_id);
	store_iter_close(it);
	return rc < 0 ? rc : PEMBA_OK;
}

/* ------------------------------------------------------------- streams */

/* Replaces s's batch with the next ids of its edge strictly after
 * `after` (NULL: from the first), at most s->want of them.  `after` may
 * point into s's own batch: the store copies it before the batch is
 * overwritten. */
static int stream_fill(lookup_state *L, stream *s, const char *after)
{
	const schema_relation *r = s->edge->relation;
	store_filter f = {.resource_type = r->definition->name,
	                  .relation = r->name,
	                  .subject_type = s->subject_type,
	                  .subject_id = s->subject_id,
	                  .subject_relation = s->edge->subject_relation};
	/* The filter pins every column of the reverse index but the
	 * resource id, so rows come in id order and the key after which to
	 * resume is the filter plus that id. */
	store_rel key = {.resource_type = f.resource_type,
	                 .resource_id = after,
	                 .relation = f.relation,
	                 .subject_type = f.subject_type,
	                 .subject_id = f.subject_id,
	                 .subject_relation = f.subject_relation,
	                 .caveat_name = "",
	                 .caveat_context = ""};
	store_iter *it;
	int rc = store_query(L->st, L->at, &f, after ? &key : NULL, s->want,
	                     &it, L->err);
	if (rc < 0)
		return rc;
	if (s->offcap < s->want) {
		s->offsets = arena_alloc(L->a, s->want * sizeof(*s->offsets));
		s->offcap = s->want;
	}
	size_t used = 0, n = 0;
	const store_rel *row;
	while (n < s->want && (rc = store_iter_next(it, &row, L->err)) == 1) {
		size_t len = strlen(row->resource_id) + 1;
		if (used + len > s->bufcap) {
			size_t cap = s->bufcap ? 2 * s->bufcap : 64;
			while (cap < used + len)
				cap *= 2;
			char *buf = arena_alloc(L->a, cap);
			if (used)
				memcpy(buf, s->buf, used);
			s->buf = buf;
			s->bufcap = cap;
		}
		memcpy(s->buf + used, row->resource_id, len);
		s->offsets[n++] = (uint32_t)used;
		used += len;
	}
	store_iter_close(it);
	if (rc < 0)
		return rc;
	s->exhausted = n < s->want;
	s->n = n;
	s->pos = 0;
	if (s->want < STREAM_MAX_BATCH)
		s->want *= 2;
	return PEMBA_OK;
}

static const char *stream_current(const stream *s)
{
	return s->buf + s->offsets[s->pos];
}

static bool heap_less(const lookup_state *L, size_t a, size_t b)
{
	return strcmp(stream_current(&L->streams[L->heap[a]]),
	              stream_current(&L->streams[L->heap[b]])) < 0;
}

static void heap_swap(lookup_state *L, size_t a, size_t b)
{
	size_t t = L->heap[a];
	L->heap[a] = L->heap[b];
	L->heap[b] = t;
}

static void heap_down(lookup_state *L, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < L->nheap && heap_less(L, l, m))
			m = l;
		if (r < L->nheap && heap_less(L, r, m))
			m = r;
		if (m == i)
			return;
		heap_swap(L, i, m);
		i = m;
	}
}

static void heap_up(lookup_state *L, size_t i)
{
	while (i > 0 && heap_less(L, i, (i - 1) / 2)) {
		heap_swap(L, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

/* Fetches every stream's first batch (after the cursor) and heaps the
 * non-empty ones. */
static int merge_start(lookup_state *L)
{
	L->heap = arena_alloc(L->a, (L->nstreams + 1) * sizeof(*L->heap));
	for (size_t i = 0; i < L->nstreams; i++) {
		stream *s = &L->streams[i];
		if (s->edge) {
			int rc = stream_fill(L, s, L->after);
			if (rc < 0)
				return rc;
		}
		if (s->n == 0)
			continue;
		L->heap[L->nheap] = i;
		heap_up(L, L->nheap++);
	}
	return PEMBA_OK;
}

/* Moves the top stream past its current id (fetching its next batch when
 * this one is used up) and restores the heap. */
static int merge_advance(lookup_state *L)
{
	stream *s = &L->streams[L->heap[0]];
	if (++s->pos == s->n) {
		if (s->exhausted || s->edge == NULL)
			s->n = s->pos = 0;
		else {
			int rc =
			    stream_fill(L, s, s->buf + s->offsets[s->n - 1]);
			if (rc < 0)
				return rc;
		}
	}
	if (s->n == 0)
		L->heap[0] = L->heap[--L->nheap];
	if (L->nheap)
		heap_down(L, 0);
	return PEMBA_OK;
}

/* The next candidate in ascending id order: 1 with *id_out set (valid
 * until the next call), 0 when there are no more, < 0 on error. */
static int next_candidate(lookup_state *L, const char **id_out)
{
	if (L->sorted) {
		if (L->next_sorted == L->nsorted)
			return 0;
		*id_out = L->sorted[L->next_sorted++];
		return 1;
	}
	while (L->nheap > 0) {
		const char *id = stream_current(&L->streams[L->heap[0]]);
		bool repeated = L->have_last && strcmp(id, L->last) == 0;
		if (!repeated) {
			/* Copied: advancing may replace the batch. */
			size_t len = strlen(id) + 1;
			if (len > L->lastcap) {
				L->lastcap =
				    len > 2 * L->lastcap ? len : 2 * L->lastcap;
				L->last = arena_alloc(L->a, L->lastcap);
			}
			memcpy(L->last, id, len);
			L->have_last = true;
		}
		int rc = merge_advance(L);
		if (rc < 0)
			return rc;
		if (!repeated) {
			*id_out = L->last;
			return 1;
		}
	}
	return 0;
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

/* Does the walk from a userset subject `T:id#rel` (srel = rel, self_rel
 * its relation) start along edge e?  SpiceDB starts at `T:id#rel`: rows
 * naming the subject with `rel`, or with a permission of T that reaches
 * `rel` through expressions alone, plus rows naming `T:id` (any relation)
 * on the tuplesets of arrows whose target reaches `rel`. */
static bool userset_starts_along(lookup_state *L, const schema_definition *sdef,
                                 const schema_relation *self_rel, const edge *e)
{
	if (strcmp(e->subject_relation, self_rel->name) == 0)
		return true;
	if (L->rel.tupleset[L->rel.base[e->relation->definition->index] +
	                    (size_t)e->relation->index])
		return true;
	const schema_relation *q =
	    e->subject_relation[0]
	        ? schema_find_relation(sdef, e->subject_relation)
	        : NULL;
	return q && q != self_rel && computed_reaches(q, self_rel, 0);
}

/* Hands one result to the caller: to req->on_item when set (with the
 * caveat parameters a CONDITIONAL answer is missing), else to fn.
 * Returns the callback's verdict (non-zero: stop). */
static int emit(const engine_session *s,
                const pemba_lookup_resources_request *req,
                pemba_lookup_resource_fn fn, void *ctx, const char *id,
                pemba_permissionship p, const char *cursor)
{
	if (req->on_item == NULL)
		return fn(ctx, id, p, cursor);
	pemba_lookup_item item = {
	    .id = id, .permissionship = p, .cursor = cursor};
	if (p == PEMBA_CONDITIONAL_PERMISSION)
		engine_session_missing(s, &item.missing, &item.nmissing);
	return req->on_item(ctx, &item);
}

/* Verifies the candidates in order and streams those the subject has to
 * fn, until req->limit results or fn asks to stop. */
static int verify(lookup_state *L, const pemba_lookup_resources_request *req,
                  pemba_lookup_resource_fn fn, void *ctx)
{
	arena *sa = arena_create(0);
	engine_session *s = NULL;
	size_t emitted = 0;
	int rc = PEMBA_OK;
	while (req->limit == 0 || emitted < req->limit) {
		const char *id;
		if ((rc = next_candidate(L, &id)) <= 0)
			break;
		rc = PEMBA_OK;
		if (s == NULL) {
			rc = engine_session_begin(
			    sa, L->st, L->sc, L->at, req->subject_type,
			    req->subject_id, req->subject_relation, &s, L->err);
			if (rc == PEMBA_OK)
				rc = engine_session_set_context(s, req->context,
				                                L->err);
			if (rc < 0)
				break;
		}
		pemba_permissionship p;
		if ((rc = engine_session_check(s, L->target, id, &p)) < 0)
			break;
		if (p != PEMBA_NO_PERMISSION) {
			emitted++;
			if (emit(s, req, fn, ctx, id, p,
			         engine_cursor_encode(sa, id)))
				break;
		}
		/* The memo only saves time; memory must not grow with the
		 * number of candidates. */
		if (arena_used(sa) > SESSION_BUDGET) {
			engine_session_end(s);
			s = NULL;
			arena_reset(sa);
		}
	}
	engine_session_end(s);
	arena_destroy(sa);
	return rc < 0 ? rc : PEMBA_OK;
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
	if ((rc = engine_cursor_decode(a, req->cursor, &after, err)) < 0 ||
	    (rc = engine_validate_context(req->context, err)) < 0)
		return rc;
	if (at == 0)
		return PEMBA_OK; /* empty datastore: nothing to find */

	lookup_state L = {.a = a,
	                  .st = st,
	                  .sc = sc,
	                  .at = at,
	                  .err = err,
	                  .target = target,
	                  .after = after,
	                  .nslots = 64};
	L.slots = arena_alloc(a, L.nslots * sizeof(*L.slots));
	compute_relevance(a, sc, target, &L.rel);
	const char *srel = engine_normalize_relation(req->subject_relation);
	const schema_relation *self_rel =
	    srel[0] ? schema_find_relation(sdef, srel) : NULL;
	/* Arrow entry points of a userset subject: tuplesets of arrows whose
	 * target on T reaches `rel` through expressions. */
	for (size_t i = 0; self_rel && i < L.rel.narrows; i++) {
		const schema_expr *e = L.rel.arrows[i];
		const schema_relation *t =
		    schema_find_relation(sdef, e->target);
		bool types_t = false;
		for (size_t k = 0; k < e->tupleset->ntypes; k++)
			types_t = types_t || strcmp(e->tupleset->types[k].type,
			                            sdef->name) == 0;
		if (t && types_t && computed_reaches(t, self_rel, 0))
			L.rel.tupleset
			    [L.rel.base[e->tupleset->definition->index] +
			     (size_t)e->tupleset->index] = true;
	}
	L.edges = compute_edges(a, sc, &L.rel);
	const edge_list *into_target = &L.edges[target->definition->index];
	for (size_t i = 0; i < into_target->n; i++)
		L.target_intermediate |= !into_target->items[i].wildcard;

	/* The walk.  From the subject, the edges SpiceDB's walk starts
	 * from; `T:*` rows stand for the subject -- but only for a subject
	 * object: SpiceDB's LookupResources does not let `T:*` grant a
	 * userset `T:id#rel` (its CheckPermission does, and so does ours;
	 * see README.md).  Further on, every edge but wildcards. */
	walk_visit(&L, sdef, req->subject_id);
	const char *subject_id = L.queue[0].id;
	const edge_list *first = &L.edges[sdef->index];
	for (size_t i = 0; rc >= 0 && i < first->n; i++) {
		const edge *e = &first->items[i];
		if (e->wildcard) {
			if (!srel[0])
				rc = follow(&L, sdef, "*", e);
		} else if (self_rel
		               ? userset_starts_along(&L, sdef, self_rel, e)
		               : !srel[0] && e->subject_relation[0] == '\0')
			rc = follow(&L, sdef, subject_id, e);
	}
	for (size_t i = 1; rc >= 0 && i < L.nqueue; i++) {
		object_node o = L.queue[i]; /* follow() may move the queue */
		const edge_list *out = &L.edges[o.def->index];
		for (size_t k = 0; rc >= 0 && k < out->n; k++)
			if (!out->items[k].wildcard)
				rc = follow(&L, o.def, o.id, &out->items[k]);
	}
	if (rc < 0)
		return rc;

	/* The subject object itself is a candidate (self-membership) when
	 * a relevant row leads back to it, or when the subject is a userset
	 * `T:id#rel` and the permission reaches `rel` on the same object
	 * through permissions alone: SpiceDB's walk starts at `T:id#rel`.
	 * Not otherwise, even if a check (which lets `T:*` grant
	 * `T:id#rel`) would pass.  (Rows leading to it through a stream make
	 * it a candidate the same way.) */
	bool self_candidate =
	    sdef == target->definition &&
	    (L.subject_reached || !srel[0] ||
	     (self_rel && computed_reaches(target, self_rel, 0))) &&
	    (after == NULL || strcmp(subject_id, after) > 0);

	if (L.target_intermediate) {
		L.sorted = arena_alloc(a, (L.nqueue + 1) * sizeof(*L.sorted));
		for (size_t i = self_candidate ? 0 : 1; i < L.nqueue; i++)
			if (L.queue[i].def == target->definition &&
			    (after == NULL || strcmp(L.queue[i].id, after) > 0))
				L.sorted[L.nsorted++] = L.queue[i].id;
		qsort(L.sorted, L.nsorted, sizeof(*L.sorted), compare_ids);
	} else {
		if (self_candidate) {
			stream *s =
			    add_stream(&L, sdef->name, subject_id, NULL);
			size_t len = strlen(subject_id) + 1;
			s->buf = arena_strdup(a, subject_id);
			s->bufcap = len;
			s->offsets = arena_alloc(a, sizeof(*s->offsets));
			s->offcap = s->n = 1;
			s->exhausted = true;
		}
		if ((rc = merge_start(&L)) < 0)
			return rc;
	}
	return verify(&L, req, fn, ctx);
}

int engine_lookup_resources(arena *scratch, store *st, const schema *sc,
                            pemba_revision at,
                            const pemba_lookup_resources_request *req,
                            pemba_lookup_resource_fn fn, void *ctx,
                            pemba_error *err)
{
	if (req == NULL || (fn == NULL && req->on_item == NULL))
		return error_set(err, PEMBA_EINVAL,
		                 "missing lookup resources request");
	int rc = lookup(scratch, st, sc, at, req, fn, ctx, err);
	arena_reset(scratch);
	return rc;
}
