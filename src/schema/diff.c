/*
 * diff.c -- the structural difference between two compiled schemas.
 *
 * Schemas are compared as SpiceDB compares them when it writes a schema
 * (definition by definition, relation by relation, allowed type by allowed
 * type keyed by its source text, caveat parameter by name), so formatting,
 * positions and the order of items never show up as changes.  The result
 * drives the write-time safety checks (src/core/schema_ops.c), dry runs,
 * plans and the DiffSchema API.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "schema/internal.h"
#include "util/xalloc.h"

/* ------------------------------------------------------------ builder */

typedef struct differ {
	schema_diff *d;
	size_t cap;
} differ;

static bool same_string(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static schema_change *add_change(differ *df, schema_change_kind kind,
                                 const char *definition, const char *name,
                                 const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static schema_change *add_change(differ *df, schema_change_kind kind,
                                 const char *definition, const char *name,
                                 const char *detail, const char *fmt, ...)
{
	schema_diff *d = df->d;
	if (d->nchanges == df->cap) {
		df->cap = df->cap ? df->cap * 2 : 16;
		d->changes =
		    xrealloc(d->changes, df->cap * sizeof(d->changes[0]));
	}
	schema_change *c = &d->changes[d->nchanges++];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->definition = arena_strdup(d->arena, definition ? definition : "");
	c->name = arena_strdup(d->arena, name ? name : "");
	c->detail = arena_strdup(d->arena, detail ? detail : "");
	strbuf sb;
	strbuf_init(&sb);
	va_list ap;
	va_start(ap, fmt);
	strbuf_vprintf(&sb, fmt, ap);
	va_end(ap);
	c->description =
	    arena_strndup(d->arena, sb.data ? sb.data : "", sb.len);
	strbuf_free(&sb);
	return c;
}

static bool same_comments(const char *const *a, size_t na, const char *const *b,
                          size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!same_string(a[i], b[i]))
			return false;
	return true;
}

/* Sorts pointers to names (definitions and caveats start with a name). */
static int compare_names(const void *a, const void *b)
{
	const char *const *x = *(const char *const *const *)a;
	const char *const *y = *(const char *const *const *)b;
	return strcmp(*x, *y);
}

/* ------------------------------------------------------------ pieces */

void schema_allowed_type_source(const schema_allowed_type *t, strbuf *out)
{
	schema_format_allowed_type(t, out);
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

static char *type_text(arena *a, const schema_allowed_type *t)
{
	strbuf sb;
	strbuf_init(&sb);
	schema_format_allowed_type(t, &sb);
	char *s = arena_strndup(a, sb.data ? sb.data : "", sb.len);
	strbuf_free(&sb);
	return s;
}

static char *expr_text(arena *a, const schema_expr *e)
{
	strbuf sb;
	strbuf_init(&sb);
	schema_print_expr(e, &sb);
	char *s = arena_strndup(a, sb.data ? sb.data : "", sb.len);
	strbuf_free(&sb);
	return s;
}

/* The allowed type of r whose source text is `text`, or NULL. */
static const schema_allowed_type *find_type(arena *a, const schema_relation *r,
                                            const char *text)
{
	for (size_t i = 0; i < r->ntypes; i++)
		if (strcmp(type_text(a, &r->types[i]), text) == 0)
			return &r->types[i];
	return NULL;
}

/* ------------------------------------------------------------ caveats */

static const schema_caveat_param *find_param(const schema_caveat *c,
                                             const char *name)
{
	for (size_t i = 0; i < c->nparams; i++)
		if (strcmp(c->params[i].name, name) == 0)
			return &c->params[i];
	return NULL;
}

static void diff_caveat(differ *df, const schema_caveat *o,
                        const schema_caveat *n)
{
	const char *cn = n->name;
	for (size_t i = 0; i < o->nparams; i++) {
		const schema_caveat_param *p = &o->params[i];
		const schema_caveat_param *q = find_param(n, p->name);
		if (!q)
			add_change(
			    df, SCHEMA_CHANGE_REMOVE_CAVEAT_PARAMETER, cn,
			    p->name, p->type,
			    "remove parameter `%s` (%s) from caveat `%s`",
			    p->name, p->type, cn);
		else if (strcmp(p->type, q->type) != 0) {
			char *detail = arena_printf(df->d->arena, "%s -> %s",
			                            p->type, q->type);
			add_change(
			    df, SCHEMA_CHANGE_CHANGE_CAVEAT_PARAMETER_TYPE, cn,
			    p->name, detail,
			    "change the type of parameter `%s` of caveat "
			    "`%s` from %s to %s",
			    p->name, cn, p->type, q->type);
		}
	}
	for (size_t i = 0; i < n->nparams; i++) {
		const schema_caveat_param *q = &n->params[i];
		if (!find_param(o, q->name))
			add_change(df, SCHEMA_CHANGE_ADD_CAVEAT_PARAMETER, cn,
			           q->name, q->type,
			           "add parameter `%s` (%s) to caveat `%s`",
			           q->name, q->type, cn);
	}
	if (!same_string(o->expression, n->expression))
		add_change(df, SCHEMA_CHANGE_CHANGE_CAVEAT, cn, "",
		           n->expression,
		           "change the expression of caveat `%s` to `%s`", cn,
		           n->expression);
	if (!same_comments(o->comments, o->ncomments, n->comments,
	                   n->ncomments))
		add_change(df, SCHEMA_CHANGE_CHANGE_COMMENT, cn, "", "",
		           "change the comment of caveat `%s`", cn);
}

static void diff_caveats(differ *df, const schema *o, const schema *n)
{
	size_t no = o ? o->ncaveats : 0, nn = n ? n->ncaveats : 0;
	const schema_caveat **all = xmalloc((no + nn + 1) * sizeof(*all));
	size_t k = 0;
	for (size_t i = 0; i < no; i++)
		all[k++] = o->caveats[i];
	for (size_t i = 0; i < nn; i++)
		if (!o || !schema_find_caveat(o, n->caveats[i]->name))
			all[k++] = n->caveats[i];
	qsort(all, k, sizeof(*all), compare_names);
	for (size_t i = 0; i < k; i++) {
		const char *name = all[i]->name;
		const schema_caveat *a = o ? schema_find_caveat(o, name) : NULL;
		const schema_caveat *b = n ? schema_find_caveat(n, name) : NULL;
		if (a && !b)
			add_change(df, SCHEMA_CHANGE_REMOVE_CAVEAT, name, "",
			           "", "remove caveat `%s`", name);
		else if (!a && b)
			add_change(df, SCHEMA_CHANGE_ADD_CAVEAT, name, "",
			           b->expression, "add caveat `%s`", name);
		else
			diff_caveat(df, a, b);
	}
	free(all);
}

/* -------------------------------------------------------- definitions */

static void diff_relation(differ *df, const schema_definition *d,
                          const schema_relation *o, const schema_relation *n)
{
	arena *a = df->d->arena;
	const char *dn = d->name, *rn = n->name;
	schema_change *c;
	if (o->is_permission != n->is_permission) {
		c = add_change(
		    df,
		    o->is_permission ? SCHEMA_CHANGE_PERMISSION_TO_RELATION
		                     : SCHEMA_CHANGE_RELATION_TO_PERMISSION,
		    dn, rn, "", "turn %s `%s#%s` into a %s",
		    o->is_permission ? "permission" : "relation", dn, rn,
		    o->is_permission ? "relation" : "permission");
		c->old_relation = o;
		c->new_relation = n;
		return;
	}
	if (n->is_permission) {
		if (!equal_expr(o->expr, n->expr)) {
			char *e = expr_text(a, n->expr);
			c = add_change(df, SCHEMA_CHANGE_CHANGE_PERMISSION, dn,
			               rn, e,
			               "change permission `%s#%s` from `%s` to "
			               "`%s`",
			               dn, rn, expr_text(a, o->expr), e);
			c->old_relation = o;
			c->new_relation = n;
		}
	} else {
		for (size_t i = 0; i < o->ntypes; i++) {
			char *t = type_text(a, &o->types[i]);
			if (find_type(a, n, t))
				continue;
			c = add_change(df, SCHEMA_CHANGE_REMOVE_ALLOWED_TYPE,
			               dn, rn, t,
			               "remove allowed type `%s` from relation "
			               "`%s#%s`",
			               t, dn, rn);
			c->old_relation = o;
			c->new_relation = n;
			c->old_type = &o->types[i];
		}
		for (size_t i = 0; i < n->ntypes; i++) {
			char *t = type_text(a, &n->types[i]);
			if (find_type(a, o, t))
				continue;
			c = add_change(
			    df, SCHEMA_CHANGE_ADD_ALLOWED_TYPE, dn, rn, t,
			    "add allowed type `%s` to relation `%s#%s`", t, dn,
			    rn);
			c->old_relation = o;
			c->new_relation = n;
			c->new_type = &n->types[i];
		}
	}
	if (!same_comments(o->comments, o->ncomments, n->comments,
	                   n->ncomments))
		add_change(df, SCHEMA_CHANGE_CHANGE_COMMENT, dn, rn, "",
		           "change the comment of %s `%s#%s`",
		           n->is_permission ? "permission" : "relation", dn,
		           rn);
}

static void diff_definition(differ *df, const schema_definition *o,
                            const schema_definition *n)
{
	arena *a = df->d->arena;
	const char *dn = n->name;
	schema_change *c;
	if (!same_comments(o->comments, o->ncomments, n->comments,
	                   n->ncomments))
		add_change(df, SCHEMA_CHANGE_CHANGE_COMMENT, dn, "", "",
		           "change the comment of definition `%s`", dn);
	for (size_t i = 0; i < o->nrelations; i++) {
		const schema_relation *r = o->relations[i];
		if (schema_find_relation(n, r->name))
			continue;
		if (r->is_permission)
			c = add_change(df, SCHEMA_CHANGE_REMOVE_PERMISSION, dn,
			               r->name, expr_text(a, r->expr),
			               "remove permission `%s#%s`", dn,
			               r->name);
		else
			c = add_change(df, SCHEMA_CHANGE_REMOVE_RELATION, dn,
			               r->name, "", "remove relation `%s#%s`",
			               dn, r->name);
		c->old_relation = r;
	}
	for (size_t i = 0; i < n->nrelations; i++) {
		const schema_relation *r = n->relations[i];
		const schema_relation *prev = schema_find_relation(o, r->name);
		if (prev) {
			diff_relation(df, o, prev, r);
			continue;
		}
		if (r->is_permission) {
			char *e = expr_text(a, r->expr);
			c = add_change(
			    df, SCHEMA_CHANGE_ADD_PERMISSION, dn, r->name, e,
			    "add permission `%s#%s` = `%s`", dn, r->name, e);
		} else {
			strbuf types;
			strbuf_init(&types);
			for (size_t k = 0; k < r->ntypes; k++) {
				if (k)
					strbuf_puts(&types, " | ");
				schema_format_allowed_type(&r->types[k],
				                           &types);
			}
			char *t = arena_strndup(a, types.data ? types.data : "",
			                        types.len);
			strbuf_free(&types);
			c = add_change(df, SCHEMA_CHANGE_ADD_RELATION, dn,
			               r->name, t, "add relation `%s#%s`: %s",
			               dn, r->name, t);
		}
		c->new_relation = r;
	}
}

static void diff_definitions(differ *df, const schema *o, const schema *n)
{
	size_t no = o ? o->ndefinitions : 0, nn = n ? n->ndefinitions : 0;
	const schema_definition **all = xmalloc((no + nn + 1) * sizeof(*all));
	size_t k = 0;
	for (size_t i = 0; i < no; i++)
		all[k++] = o->definitions[i];
	for (size_t i = 0; i < nn; i++)
		if (!o || !schema_find_definition(o, n->definitions[i]->name))
			all[k++] = n->definitions[i];
	qsort(all, k, sizeof(*all), compare_names);
	for (size_t i = 0; i < k; i++) {
		const char *name = all[i]->name;
		const schema_definition *a =
		    o ? schema_find_definition(o, name) : NULL;
		const schema_definition *b =
		    n ? schema_find_definition(n, name) : NULL;
		if (a && !b)
			add_change(df, SCHEMA_CHANGE_REMOVE_DEFINITION, name,
			           "", "", "remove definition `%s`", name);
		else if (!a && b)
			add_change(df, SCHEMA_CHANGE_ADD_DEFINITION, name, "",
			           "", "add definition `%s`", name);
		else
			diff_definition(df, a, b);
	}
	free(all);
}

/* ------------------------------------------------------------- public */

schema_diff *schema_diff_compute(const schema *old, const schema *new)
{
	schema_diff *d = xcalloc(1, sizeof(*d));
	d->arena = arena_create(0);
	differ df = {.d = d};
	bool oe = old && schema_uses_expiration(old);
	bool ne = new &&schema_uses_expiration(new);
	if (oe != ne)
		add_change(&df, SCHEMA_CHANGE_USE_EXPIRATION, "", "",
		           ne ? "added" : "removed", "%s `use expiration`",
		           ne ? "add" : "remove");
	diff_caveats(&df, old, new);
	diff_definitions(&df, old, new);
	return d;
}

void schema_diff_free(schema_diff *d)
{
	if (!d)
		return;
	free(d->changes);
	arena_destroy(d->arena);
	free(d);
}
