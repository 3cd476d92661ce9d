/*
 * expand.c -- ExpandPermissionTree: the structure of a permission on one
 * resource, one level of data deep, as SpiceDB's v1 API returns it.
 *
 * - A relation is a leaf listing its rows' subjects: objects, usersets
 *   (`group:eng#member`, not expanded further) and wildcards, those
 *   without a subject relation first, each group in the datastore's order.
 * - A permission is an operator node (union / intersection / exclusion)
 *   over its expression's operands; a permission that is not itself an
 *   operator expression (a single name, arrow or nil) is a union with one
 *   child, as SpiceDB's compiler wraps it.
 * - An operand naming a relation or permission of the same object is that
 *   one's expansion (one dispatch); an arrow `ts->t` is a union over the
 *   expansions of `t` on every subject of `ts` (a subject type without `t`
 *   gives an empty leaf); `ts.all(t)` the same as an intersection; `nil`
 *   an empty leaf.  Nested operators are nodes of their own.
 * - Operator, arrow and empty nodes name the permission being expanded as
 *   their expanded object and relation; leaves and dispatched expansions
 *   name their own.
 *
 * There is no memo: every dispatch adds one level of depth, and more than
 * PEMBA_MAX_DEPTH nested dispatches (e.g. an arrow cycle in the data) fail
 * with PEMBA_EDEPTH, as in SpiceDB.  The tree is allocated from the
 * caller's output arena and copies every string it holds.
 */
#include <string.h>

#include "engine/internal.h"
#include "util/error.h"

typedef struct expand_ctx {
	store *st;
	const schema *sc;
	pemba_revision at;
	arena *out;     /* the tree */
	arena *scratch; /* rows in flight */
	pemba_error *err;
} expand_ctx;

static pemba_expand_node *new_node(expand_ctx *c, pemba_expand_kind kind,
                                   const schema_relation *rel, const char *id)
{
	pemba_expand_node *n = arena_alloc(c->out, sizeof(*n));
	n->kind = kind;
	n->object_type = arena_strdup(c->out, rel->definition->name);
	n->object_id = arena_strdup(c->out, id);
	n->relation = arena_strdup(c->out, rel->name);
	return n;
}

/* A growable child list; children are few, so doubling from the arena is
 * fine. */
static void add_child(expand_ctx *c, pemba_expand_node *parent,
                      pemba_expand_node *child, size_t *cap)
{
	if (parent->nchildren == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		pemba_expand_node **grown =
		    arena_alloc(c->out, ncap * sizeof(*grown));
		if (parent->nchildren)
			memcpy(grown, parent->children,
			       parent->nchildren * sizeof(*grown));
		parent->children = grown;
		*cap = ncap;
	}
	parent->children[parent->nchildren++] = child;
}

static int expand_rel(expand_ctx *c, const schema_relation *rel, const char *id,
                      int depth, pemba_expand_node **out);


/* The leaf of a relation: its rows' subjects, terminal ones first. */
static int expand_leaf(expand_ctx *c, const schema_relation *rel,
                       const char *id, pemba_expand_node **out)
{
	pemba_expand_node *n = new_node(c, PEMBA_EXPAND_LEAF, rel, id);
	store_filter f = {.resource_type = rel->definition->name,
	                  .resource_id = id,
	                  .relation = rel->name};
	for (int pass = 0; pass < 2; pass++) {
		store_iter *it;
		int rc = store_query(c->st, c->at, &f, NULL, 0, &it, c->err);
		if (rc < 0)
			return rc;
		const store_rel *row;
		size_t cap = n->nsubjects;
		while ((rc = store_iter_next(it, &row, c->err)) == 1) {
			/* Expired rows never come back from the store;
			 * caveated ones are listed with their caveat, as the
			 * tree is not evaluated against a context. */
			bool terminal = row->subject_relation[0] == '\0';
			if (terminal != (pass == 0))
				continue;
			if (n->nsubjects == cap) {
				cap = cap ? cap * 2 : 8;
				pemba_subject_ref *grown =
				    arena_alloc(c->out, cap * sizeof(*grown));
				if (n->nsubjects)
					memcpy(grown, n->subjects,
					       n->nsubjects * sizeof(*grown));
				n->subjects = grown;
			}
			pemba_subject_ref *s = &n->subjects[n->nsubjects++];
			s->type = arena_strdup(c->out, row->subject_type);
			s->id = arena_strdup(c->out, row->subject_id);
			s->relation =
			    terminal
			        ? NULL
			        : arena_strdup(c->out, row->subject_relation);
			s->caveat_name =
			    row->caveat_name[0]
			        ? arena_strdup(c->out, row->caveat_name)
			        : NULL;
		}
		store_iter_close(it);
		if (rc < 0)
			return rc;
	}
	*out = n;
	return PEMBA_OK;
}

typedef struct subject_obj {
	const char *type, *id;
	const char *caveat; /* of the tupleset relationship; NULL if none */
} subject_obj;

static int expand_arrow(expand_ctx *c, const schema_expr *e,
                        const schema_relation *perm, const char *id, int depth,
                        bool all, pemba_expand_node **out)
{
	store_filter f = {.resource_type = perm->definition->name,
	                  .resource_id = id,
	                  .relation = e->tupleset->name};
	store_iter *it;
	int rc = store_query(c->st, c->at, &f, NULL, 0, &it, c->err);
	if (rc < 0)
		return rc;
	subject_obj *subjects = NULL;
	size_t n = 0, cap = 0;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, c->err)) == 1) {
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			subject_obj *grown =
			    arena_alloc(c->scratch, cap * sizeof(*grown));
			if (n)
				memcpy(grown, subjects, n * sizeof(*grown));
			subjects = grown;
		}
		subjects[n].type = arena_strdup(c->scratch, row->subject_type);
		subjects[n].id = arena_strdup(c->scratch, row->subject_id);
		subjects[n].caveat =
		    row->caveat_name[0]
		        ? arena_strdup(c->out, row->caveat_name)
		        : NULL;
		n++;
	}
	store_iter_close(it);
	if (rc < 0)
		return rc;

	pemba_expand_node *node = new_node(
	    c, all ? PEMBA_EXPAND_INTERSECTION : PEMBA_EXPAND_UNION, perm, id);
	size_t ncap = 0;
	for (size_t i = 0; i < n; i++) {
		const schema_definition *sd =
		    schema_find_definition(c->sc, subjects[i].type);
		const schema_relation *target =
		    sd ? schema_find_relation(sd, e->target) : NULL;
		pemba_expand_node *child;
		if (target == NULL)
			child = new_node(c, PEMBA_EXPAND_LEAF, perm, id);
		else if ((rc = expand_rel(c, target, subjects[i].id, depth + 1,
		                          &child)) < 0)
			return rc;
		child->caveat_name = subjects[i].caveat;
		add_child(c, node, child, &ncap);
	}
	*out = node;
	return PEMBA_OK;
}

static int expand_expr(expand_ctx *c, const schema_expr *e,
                       const schema_relation *perm, const char *id, int depth,
                       pemba_expand_node **out)
{
	pemba_expand_kind kind;
	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		*out = new_node(c, PEMBA_EXPAND_LEAF, perm, id);
		return PEMBA_OK;
	case SCHEMA_EXPR_REF:
		return expand_rel(c, e->ref, id, depth + 1, out);
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
		return expand_arrow(c, e, perm, id, depth, false, out);
	case SCHEMA_EXPR_ARROW_ALL:
		return expand_arrow(c, e, perm, id, depth, true, out);
	case SCHEMA_EXPR_UNION:
		kind = PEMBA_EXPAND_UNION;
		break;
	case SCHEMA_EXPR_INTERSECT:
		kind = PEMBA_EXPAND_INTERSECTION;
		break;
	case SCHEMA_EXPR_EXCLUDE:
		kind = PEMBA_EXPAND_EXCLUSION;
		break;
	default:
		return error_set(c->err, PEMBA_EINVAL,
		                 "internal error: unknown expression kind %d",
		                 (int)e->kind);
	}
	pemba_expand_node *node = new_node(c, kind, perm, id);
	size_t cap = 0;
	for (size_t i = 0; i < e->nchildren; i++) {
		pemba_expand_node *child;
		int rc =
		    expand_expr(c, e->children[i], perm, id, depth, &child);
		if (rc < 0)
			return rc;
		add_child(c, node, child, &cap);
	}
	*out = node;
	return PEMBA_OK;
}

static int expand_rel(expand_ctx *c, const schema_relation *rel, const char *id,
                      int depth, pemba_expand_node **out)
{
	if (depth > PEMBA_MAX_DEPTH)
		return error_set(c->err, PEMBA_EDEPTH,
		                 "max depth exceeded: this usually indicates a "
		                 "recursive or too deep data dependency (more "
		                 "than %d nested dispatches, reached %s:%s#%s)",
		                 PEMBA_MAX_DEPTH, rel->definition->name, id,
		                 rel->name);
	if (!rel->is_permission)
		return expand_leaf(c, rel, id, out);
	const schema_expr *e = rel->expr;
	if (e->kind == SCHEMA_EXPR_UNION || e->kind == SCHEMA_EXPR_INTERSECT ||
	    e->kind == SCHEMA_EXPR_EXCLUDE)
		return expand_expr(c, e, rel, id, depth, out);
	/* A lone operand is a union of one. */
	pemba_expand_node *node = new_node(c, PEMBA_EXPAND_UNION, rel, id);
	pemba_expand_node *child;
	int rc = expand_expr(c, e, rel, id, depth, &child);
	if (rc < 0)
		return rc;
	size_t cap = 0;
	add_child(c, node, child, &cap);
	*out = node;
	return PEMBA_OK;
}

int engine_expand(arena *out_arena, arena *scratch, store *st, const schema *sc,
                  pemba_revision at, const char *resource_type,
                  const char *resource_id, const char *permission,
                  pemba_expand_node **tree_out, pemba_error *err)
{
	int rc;
	if ((rc = engine_validate_type(err, "resource", resource_type)) < 0 ||
	    (rc = engine_validate_id(err, "resource", resource_id)) < 0)
		return rc;
	if (permission == NULL || permission[0] == '\0')
		return error_set(err, PEMBA_EINVAL, "permission is required");
	if ((rc = engine_validate_relation(err, "permission", permission)) < 0)
		return rc;
	if (strcmp(resource_id, "*") == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "cannot expand wildcard resource `%s:*`",
		                 resource_type);
	const schema_definition *def;
	const schema_relation *rel;
	if ((rc = engine_find_definition(sc, resource_type, &def, err)) < 0 ||
	    (rc = engine_find_relation(def, permission, &rel, err)) < 0)
		return rc;
	expand_ctx c = {.st = st,
	                .sc = sc,
	                .at = at,
	                .out = out_arena,
	                .scratch = scratch,
	                .err = err};
	if (at == 0) {
		/* Empty datastore: nothing written, so nothing to expand
		 * (unreachable in practice: no schema either). */
		*tree_out = new_node(&c, PEMBA_EXPAND_LEAF, rel, resource_id);
		return PEMBA_OK;
	}
	rc = expand_rel(&c, rel, resource_id, 1, tree_out);
	arena_reset(scratch);
	return rc;
}
