/*
 * typecheck.c -- SpiceDB's type rules over a parsed, name-checked schema.
 *
 * Runs after names.c, so every name is well formed and definitions and
 * caveats are unique.  In order:
 *   1. per-definition relation tables; duplicate relation/permission names;
 *   2. allowed types: duplicates, unknown definition, unknown subject
 *      relation, unknown caveat; resolves schema_allowed_type.definition;
 *   3. which relations reach a wildcard subject type through `T#rel`
 *      subject relations (one reverse breadth-first pass, no recursion);
 *   4. in source order: `T#rel` that transitively includes a wildcard;
 *      permission expressions (unknown names, permission or wildcard
 *      relation left of an arrow); resolves expr->ref and expr->tupleset;
 *   5. permission alias cycles (`permission a = b`, `permission b = a`).
 * Before all of these, as SpiceDB orders it: caveat parameters the
 * compiled expression never mentions.
 * Arrow targets are deliberately not checked: SpiceDB accepts a target
 * that exists on none of the tupleset's subject types.
 *
 * Steps 1-4 fail with PEMBA_EPRECONDITION (FAILED_PRECONDITION in
 * SpiceDB); step 5 with PEMBA_EINVAL.  Messages use SpiceDB's wording.
 */
#include <stdlib.h>
#include <string.h>

#include "cel/cel.h"
#include "schema/internal.h"
#include "util/error.h"
#include "util/xalloc.h"

/* Per-relation facts, indexed by a schema-wide ordinal. */
typedef struct relation_info {
	const schema_relation *relation;
	/* reverse edges: relations whose allowed type is `this#...` */
	size_t *referrers;
	size_t nreferrers, referrers_cap;
	/* wildcard reachability witness */
	bool reaches_wildcard;
	const schema_allowed_type *wildcard; /* the wildcard type reached */
	const schema_relation *via;          /* relation that allows it */
} relation_info;

typedef struct checker {
	schema *s;
	pemba_error *err;
	size_t *offsets; /* definition index -> first ordinal */
	relation_info *info;
	size_t ninfo;
} checker;

static size_t ordinal(const checker *c, const schema_relation *r)
{
	return c->offsets[r->definition->index] + (size_t)r->index;
}

/* ------------------------------------------------- relation tables */

static int build_relation_tables(checker *c)
{
	schema *s = c->s;
	for (size_t i = 0; i < s->ndefinitions; i++) {
		schema_definition *d = s->definitions[i];
		name_table *t = name_table_new(s->arena, d->nrelations);
		d->lookup = t;
		for (size_t j = 0; j < d->nrelations; j++) {
			schema_relation *r = d->relations[j];
			if (name_table_put(s->arena, t, r->name, r))
				return error_set_at(
				    c->err, PEMBA_EPRECONDITION, r->line,
				    r->column,
				    "found duplicate relation/permission "
				    "name `%s` under definition `%s`",
				    r->name, d->name);
		}
	}
	return 0;
}

/* ---------------------------------------------------- allowed types */

static int check_allowed_types(checker *c, const schema_definition *d,
                               schema_relation *r)
{
	const schema *s = c->s;
	strbuf a, b;
	strbuf_init(&a);
	strbuf_init(&b);
	int rc = 0;

	for (size_t i = 0; i < r->ntypes && !rc; i++) {
		schema_allowed_type *t = &r->types[i];

		strbuf_reset(&a);
		schema_format_allowed_type(t, &a);
		for (size_t j = 0; j < i; j++) {
			strbuf_reset(&b);
			schema_format_allowed_type(&r->types[j], &b);
			if (strcmp(a.data, b.data) == 0) {
				rc = error_set_at(
				    c->err, PEMBA_EPRECONDITION, t->line,
				    t->column,
				    "found duplicate allowed subject type "
				    "`%s` on relation `%s` under definition "
				    "`%s`",
				    a.data, r->name, d->name);
				break;
			}
		}
		if (rc)
			break;

		t->definition = schema_find_definition(s, t->type);
		if (!t->definition) {
			rc = error_set_at(
			    c->err, PEMBA_EPRECONDITION, t->line, t->column,
			    "could not lookup definition `%s` for "
			    "relation `%s`: object definition `%s` "
			    "not found",
			    t->type, r->name, t->type);
			break;
		}
		if (t->relation &&
		    !schema_find_relation(t->definition, t->relation)) {
			rc = error_set_at(c->err, PEMBA_EPRECONDITION, t->line,
			                  t->column,
			                  "relation/permission `%s` not found "
			                  "under definition `%s`",
			                  t->relation, t->type);
			break;
		}
		if (t->caveat && !schema_find_caveat(s, t->caveat)) {
			bool hint = !s->use_expiration &&
			            strcmp(t->caveat, "expiration") == 0;
			rc = error_set_at(
			    c->err, PEMBA_EPRECONDITION, t->line, t->column,
			    "could not lookup caveat `%s` for "
			    "relation `%s`: caveat with name `%s` "
			    "not found%s",
			    t->caveat, r->name, t->caveat,
			    hint ? " (to use relationship "
			           "expiration, declare `use "
			           "expiration` at the top of the "
			           "schema)"
			         : "");
			break;
		}
	}
	strbuf_free(&a);
	strbuf_free(&b);
	return rc;
}

/* ------------------------------------------------ wildcard reachability */

static void add_referrer(relation_info *target, size_t from)
{
	if (target->nreferrers == target->referrers_cap) {
		target->referrers_cap =
		    target->referrers_cap ? target->referrers_cap * 2 : 4;
		target->referrers =
		    xrealloc(target->referrers, target->referrers_cap *
		                                    sizeof(*target->referrers));
	}
	target->referrers[target->nreferrers++] = from;
}

/* A relation reaches a wildcard if one of its allowed types is `T:*`, or
 * one of its `T#rel` types names a relation that reaches one.  Computed
 * backwards from the relations that allow a wildcard directly. */
static void compute_wildcards(checker *c)
{
	size_t *queue = xmalloc((c->ninfo + 1) * sizeof(*queue));
	size_t head = 0, tail = 0;

	for (size_t k = 0; k < c->ninfo; k++) {
		const schema_relation *r = c->info[k].relation;
		for (size_t i = 0; i < r->ntypes; i++) {
			const schema_allowed_type *t = &r->types[i];
			if (t->wildcard && !c->info[k].reaches_wildcard) {
				c->info[k].reaches_wildcard = true;
				c->info[k].wildcard = t;
				c->info[k].via = r;
				queue[tail++] = k;
			}
			if (t->relation) {
				const schema_relation *target =
				    schema_find_relation(t->definition,
				                         t->relation);
				add_referrer(&c->info[ordinal(c, target)], k);
			}
		}
	}
	while (head < tail) {
		relation_info *x = &c->info[queue[head++]];
		for (size_t i = 0; i < x->nreferrers; i++) {
			relation_info *from = &c->info[x->referrers[i]];
			if (from->reaches_wildcard)
				continue;
			from->reaches_wildcard = true;
			from->wildcard = x->wildcard;
			from->via = x->via;
			queue[tail++] = x->referrers[i];
		}
	}
	free(queue);
}

static int check_transitive_wildcards(checker *c, const schema_definition *d,
                                      const schema_relation *r)
{
	for (size_t i = 0; i < r->ntypes; i++) {
		const schema_allowed_type *t = &r->types[i];
		/* As in SpiceDB, only subject relations of other definitions
		 * are checked. */
		if (!t->relation || t->definition == d)
			continue;
		const schema_relation *target =
		    schema_find_relation(t->definition, t->relation);
		const relation_info *x = &c->info[ordinal(c, target)];
		if (x->reaches_wildcard)
			return error_set_at(
			    c->err, PEMBA_EPRECONDITION, t->line, t->column,
			    "for relation `%s`: relation/permission `%s#%s` "
			    "includes wildcard type `%s` via relation "
			    "`%s#%s`: wildcard relations cannot be "
			    "transitively included",
			    r->name, t->type, t->relation, x->wildcard->type,
			    x->via->definition->name, x->via->name);
	}
	return 0;
}

/* ------------------------------------------------------- expressions */

static int check_expr(checker *c, const schema_definition *d,
                      const schema_relation *perm, schema_expr *e)
{
	const schema_relation *found;
	int rc;

	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		return 0;
	case SCHEMA_EXPR_REF:
		found = schema_find_relation(d, e->name);
		if (!found)
			return error_set_at(
			    c->err, PEMBA_EPRECONDITION, e->line, e->column,
			    "relation/permission `%s` not found "
			    "under definition `%s`",
			    e->name, d->name);
		e->ref = found;
		return 0;
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		found = schema_find_relation(d, e->name);
		if (!found)
			return error_set_at(
			    c->err, PEMBA_EPRECONDITION, e->line, e->column,
			    "relation/permission `%s` not found "
			    "under definition `%s`",
			    e->name, d->name);
		if (found->is_permission)
			return error_set_at(
			    c->err, PEMBA_EPRECONDITION, e->line, e->column,
			    "under permission `%s` under definition `%s`: "
			    "permissions cannot be used on the left hand "
			    "side of an arrow (found `%s`)",
			    perm->name, d->name, e->name);
		const relation_info *x = &c->info[ordinal(c, found)];
		if (x->reaches_wildcard)
			return error_set_at(
			    c->err, PEMBA_EPRECONDITION, e->line, e->column,
			    "for arrow under permission `%s`: relation "
			    "`%s#%s` includes wildcard type `%s` via "
			    "relation `%s#%s`: wildcard relations cannot "
			    "be used on the left side of arrows",
			    perm->name, d->name, e->name, x->wildcard->type,
			    x->via->definition->name, x->via->name);
		e->tupleset = found;
		return 0;
	default:
		for (size_t i = 0; i < e->nchildren; i++)
			if ((rc = check_expr(c, d, perm, e->children[i])))
				return rc;
		return 0;
	}
}

/* ----------------------------------------------------- alias cycles */

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A permission that is exactly one other relation or permission is an
 * alias; aliases that never resolve to a relation or a real expression
 * form a cycle, which SpiceDB refuses. */
static int check_alias_cycles(checker *c, const schema_definition *d)
{
	size_t n = d->nrelations;
	if (n == 0)
		return 0;
	bool *done = xcalloc(n, sizeof(*done));
	size_t pending = 0;
	for (size_t i = 0; i < n; i++) {
		const schema_relation *r = d->relations[i];
		done[i] = !r->is_permission || r->expr->kind != SCHEMA_EXPR_REF;
		if (!done[i])
			pending++;
	}
	while (pending > 0) {
		size_t resolved = 0;
		for (size_t i = 0; i < n; i++) {
			if (done[i])
				continue;
			const schema_relation *target =
			    d->relations[i]->expr->ref;
			if (done[target->index]) {
				done[i] = true;
				resolved++;
			}
		}
		if (resolved == 0)
			break;
		pending -= resolved;
	}
	int rc = 0;
	if (pending > 0) {
		const char **names = xmalloc(pending * sizeof(*names));
		size_t k = 0;
		const schema_relation *first = NULL;
		for (size_t i = 0; i < n; i++) {
			if (done[i])
				continue;
			if (!first)
				first = d->relations[i];
			names[k++] = d->relations[i]->name;
		}
		qsort(names, k, sizeof(*names), compare_names);
		strbuf list;
		strbuf_init(&list);
		for (size_t i = 0; i < k; i++) {
			if (i)
				strbuf_puts(&list, ", ");
			strbuf_puts(&list, names[i]);
		}
		rc = error_set_at(c->err, PEMBA_EINVAL, first->line,
		                  first->column,
		                  "under definition `%s`, there exists a cycle "
		                  "in permissions: %s",
		                  d->name, list.data);
		strbuf_free(&list);
		free(names);
	}
	free(done);
	return rc;
}

/* ------------------------------------------------ caveat parameters */

/* SpiceDB refuses a caveat parameter the expression never references
 * (counting a macro variable that shares a parameter's name, as SpiceDB
 * does). */
static int check_caveat_params(checker *c, const schema_caveat *cav)
{
	for (size_t k = 0; k < cav->nparams; k++)
		if (cav->program &&
		    !cel_program_uses_param(cav->program, cav->params[k].name))
			return error_set_at(c->err, PEMBA_EPRECONDITION,
			                    cav->params[k].line,
			                    cav->params[k].column,
			                    "parameter `%s` for caveat `%s` is "
			                    "unused",
			                    cav->params[k].name, cav->name);
	return 0;
}

/* ------------------------------------------------------------ driver */

int schema_typecheck(schema *s, pemba_error *err)
{
	checker c = {.s = s, .err = err};
	int rc = 0;
	/* SpiceDB validates caveats before definitions. */
	for (size_t i = 0; i < s->ncaveats && !rc; i++)
		rc = check_caveat_params(&c, s->caveats[i]);
	if (!rc)
		rc = build_relation_tables(&c);
	if (rc)
		return rc;

	c.offsets = xcalloc(s->ndefinitions + 1, sizeof(*c.offsets));
	for (size_t i = 0; i < s->ndefinitions; i++) {
		c.offsets[i] = c.ninfo;
		c.ninfo += s->definitions[i]->nrelations;
	}
	c.info = xcalloc(c.ninfo + 1, sizeof(*c.info));
	for (size_t i = 0; i < s->ndefinitions; i++) {
		const schema_definition *d = s->definitions[i];
		for (size_t j = 0; j < d->nrelations; j++)
			c.info[c.offsets[i] + j].relation = d->relations[j];
	}

	for (size_t i = 0; i < s->ndefinitions && !rc; i++) {
		schema_definition *d = s->definitions[i];
		for (size_t j = 0; j < d->nrelations && !rc; j++)
			if (!d->relations[j]->is_permission)
				rc =
				    check_allowed_types(&c, d, d->relations[j]);
	}
	if (!rc)
		compute_wildcards(&c);
	for (size_t i = 0; i < s->ndefinitions && !rc; i++) {
		schema_definition *d = s->definitions[i];
		for (size_t j = 0; j < d->nrelations && !rc; j++) {
			schema_relation *r = d->relations[j];
			rc = r->is_permission
			         ? check_expr(&c, d, r, r->expr)
			         : check_transitive_wildcards(&c, d, r);
		}
	}
	for (size_t i = 0; i < s->ndefinitions && !rc; i++)
		rc = check_alias_cycles(&c, s->definitions[i]);

	for (size_t k = 0; k < c.ninfo; k++)
		free(c.info[k].referrers);
	free(c.info);
	free(c.offsets);
	return rc;
}
