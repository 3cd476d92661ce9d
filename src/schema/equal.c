/*
 * equal.c -- structural equality of compiled schemas.
 *
 * Two schemas are equal when they mean the same thing to SpiceDB: the same
 * definitions (in any order) with the same relations and permissions in the
 * same order, the same allowed types in the same order, the same expression
 * trees, and the same caveats (in any order) with the same parameters (in
 * any order) and expression text.  Positions and comments do not count, nor
 * does a `use expiration` directive by itself (only its uses do).
 */
#include <string.h>

#include "schema/internal.h"

static bool same_string(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool equal_expr(const schema_expr *a, const schema_expr *b)
{
	if (a->kind != b->kind || a->nchildren != b->nchildren)
		return false;
	switch (a->kind) {
	case SCHEMA_EXPR_NIL:
		return true;
	case SCHEMA_EXPR_REF:
		return same_string(a->name, b->name);
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		return same_string(a->name, b->name) &&
		       same_string(a->target, b->target);
	default:
		for (size_t i = 0; i < a->nchildren; i++)
			if (!equal_expr(a->children[i], b->children[i]))
				return false;
		return true;
	}
}

static bool equal_type(const schema_allowed_type *a,
                       const schema_allowed_type *b)
{
	return same_string(a->type, b->type) &&
	       same_string(a->relation, b->relation) &&
	       a->wildcard == b->wildcard &&
	       same_string(a->caveat, b->caveat) &&
	       a->expiration == b->expiration;
}

static bool equal_relation(const schema_relation *a, const schema_relation *b)
{
	if (!same_string(a->name, b->name) ||
	    a->is_permission != b->is_permission || a->ntypes != b->ntypes)
		return false;
	for (size_t i = 0; i < a->ntypes; i++)
		if (!equal_type(&a->types[i], &b->types[i]))
			return false;
	if (a->is_permission)
		return equal_expr(a->expr, b->expr);
	return true;
}

static bool equal_definition(const schema_definition *a,
                             const schema_definition *b)
{
	if (a->nrelations != b->nrelations)
		return false;
	for (size_t i = 0; i < a->nrelations; i++)
		if (!equal_relation(a->relations[i], b->relations[i]))
			return false;
	return true;
}

static const schema_caveat_param *find_param(const schema_caveat *c,
                                             const char *name)
{
	for (size_t i = 0; i < c->nparams; i++)
		if (strcmp(c->params[i].name, name) == 0)
			return &c->params[i];
	return NULL;
}

static bool equal_caveat(const schema_caveat *a, const schema_caveat *b)
{
	if (a->nparams != b->nparams ||
	    !same_string(a->expression, b->expression))
		return false;
	for (size_t i = 0; i < a->nparams; i++) {
		const schema_caveat_param *p = find_param(b, a->params[i].name);
		if (!p || !same_string(p->type, a->params[i].type))
			return false;
	}
	return true;
}

bool schema_equal(const schema *a, const schema *b)
{
	if (a == b)
		return true;
	if (!a || !b || a->ndefinitions != b->ndefinitions ||
	    a->ncaveats != b->ncaveats)
		return false;
	for (size_t i = 0; i < a->ndefinitions; i++) {
		const schema_definition *d =
		    schema_find_definition(b, a->definitions[i]->name);
		if (!d || !equal_definition(a->definitions[i], d))
			return false;
	}
	for (size_t i = 0; i < a->ncaveats; i++) {
		const schema_caveat *c =
		    schema_find_caveat(b, a->caveats[i]->name);
		if (!c || !equal_caveat(a->caveats[i], c))
			return false;
	}
	return true;
}
