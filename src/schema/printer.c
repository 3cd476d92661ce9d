/*
 * printer.c -- canonical schema text, as SpiceDB's generator writes it.
 *
 * Layout (established against SpiceDB's ReadSchema output):
 *   - `use expiration` first, only if some allowed type uses expiration;
 *   - then caveats, then definitions, each group sorted by name (bytewise),
 *     items separated by one blank line, no trailing newline;
 *   - one tab per indentation level, nothing written on blank lines;
 *   - caveat parameters sorted by name;
 *   - comments attached to an item are written before it, preceded by a
 *     blank line unless the item opens its scope;  block comments longer
 *     than 70 characters or spanning lines become " * " line blocks;
 *   - in expressions a nested operation is parenthesized unless it is a
 *     union of leaves (union binds tightest, so it never needs them);
 *     exclusion is binary, so a - b - c prints as (a - b) - c.
 */
#include <stdlib.h>
#include <string.h>

#include "cel/cel.h"
#include "schema/internal.h"
#include "util/xalloc.h"

#define MAX_SINGLE_LINE_COMMENT 70

typedef struct generator {
	strbuf *out;
	int indent;
	bool has_newline;   /* the output ends with a newline */
	bool has_blankline; /* ... with an empty line */
	bool has_new_scope; /* nothing written since a scope opened */
} generator;

static void reset(generator *g)
{
	g->indent = 0;
	g->has_newline = true;
	g->has_blankline = true;
	g->has_new_scope = true;
}

/* Appends text, indenting each line on its first visible character. */
static void append_n(generator *g, const char *text, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = text[i];
		if (c == '\n') {
			if (g->has_newline)
				g->has_blankline = true;
			strbuf_putc(g->out, '\n');
			g->has_newline = true;
			continue;
		}
		g->has_blankline = false;
		g->has_new_scope = false;
		if (g->has_newline) {
			for (int k = 0; k < g->indent; k++)
				strbuf_putc(g->out, '\t');
			g->has_newline = false;
		}
		strbuf_putc(g->out, c);
	}
}

static void append(generator *g, const char *text)
{
	append_n(g, text, strlen(text));
}

/* --------------------------------------------------------- comments */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	       c == '\f';
}

/* Trims [*b, *e) of surrounding whitespace. */
static void trim(const char **b, const char **e)
{
	while (*b < *e && is_space(**b))
		(*b)++;
	while (*e > *b && is_space((*e)[-1]))
		(*e)--;
}

/* Writes one line of comment text with leading "*"s and blanks removed. */
static void append_comment_text(generator *g, const char *b, const char *e)
{
	/* SpiceDB strips one leading "*"; stripping all of them (and the
	 * blanks between) gives the same text for ordinary comments and
	 * keeps printing a fixed point for "** text". */
	trim(&b, &e);
	while (b < e && *b == '*') {
		b++;
		trim(&b, &e);
	}
	append_n(g, b, (size_t)(e - b));
}

static void append_comment(generator *g, const char *comment)
{
	const char *b = comment, *e = comment + strlen(comment);
	trim(&b, &e);
	if (e - b >= 2 && b[0] == '/' && b[1] == '*') {
		if (e - b >= 3 && b[2] == '*') {
			append(g, "/**");
			b += 3;
		} else {
			append(g, "/*");
			b += 2;
		}
		if (e - b >= 2 && e[-2] == '*' && e[-1] == '/')
			e -= 2;
		trim(&b, &e);
		/* The length that decides the layout is that of the text as
		 * printed, leading stars removed.  SpiceDB measures before it
		 * strips its one star, which is part of why its output is not
		 * a fixed point (README.md, "comment stars"). */
		const char *tb = b, *te = e;
		while (tb < te && *tb == '*') {
			tb++;
			trim(&tb, &te);
		}
		bool multiline = (size_t)(te - tb) > MAX_SINGLE_LINE_COMMENT ||
		                 memchr(b, '\n', (size_t)(e - b)) != NULL;
		if (!multiline) {
			append(g, " ");
			append_comment_text(g, b, e);
			append(g, " */\n");
			return;
		}
		append(g, "\n");
		while (b < e) {
			const char *nl = memchr(b, '\n', (size_t)(e - b));
			const char *end = nl ? nl : e;
			append(g, " * ");
			append_comment_text(g, b, end);
			append(g, "\n");
			b = nl ? nl + 1 : e;
		}
		append(g, " */\n");
	} else if (e - b >= 2 && b[0] == '/' && b[1] == '/') {
		append(g, "// ");
		b += 2;
		trim(&b, &e);
		append_n(g, b, (size_t)(e - b));
		append(g, "\n");
	}
}

static void append_comments(generator *g, const char *const *comments, size_t n)
{
	if (n == 0)
		return;
	if (!g->has_blankline && !g->has_new_scope)
		append(g, "\n");
	for (size_t i = 0; i < n; i++)
		append_comment(g, comments[i]);
}

/* ------------------------------------------------------ expressions */

static bool is_operation(const schema_expr *e)
{
	return e->kind == SCHEMA_EXPR_UNION ||
	       e->kind == SCHEMA_EXPR_INTERSECT ||
	       e->kind == SCHEMA_EXPR_EXCLUDE;
}

/* A union whose nested operations are all such unions needs no parens. */
static bool all_union(const schema_expr *e)
{
	if (e->kind != SCHEMA_EXPR_UNION)
		return false;
	for (size_t i = 0; i < e->nchildren; i++)
		if (is_operation(e->children[i]) && !all_union(e->children[i]))
			return false;
	return true;
}

static void append_expr(generator *g, const schema_expr *e)
{
	const char *op;
	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		append(g, "nil");
		return;
	case SCHEMA_EXPR_REF:
		append(g, e->name);
		return;
	case SCHEMA_EXPR_ARROW:
		append(g, e->name);
		append(g, "->");
		append(g, e->target);
		return;
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		append(g, e->name);
		append(g, e->kind == SCHEMA_EXPR_ARROW_ANY ? ".any(" : ".all(");
		append(g, e->target);
		append(g, ")");
		return;
	case SCHEMA_EXPR_UNION:
		op = " + ";
		break;
	case SCHEMA_EXPR_INTERSECT:
		op = " & ";
		break;
	default:
		op = " - ";
		break;
	}
	for (size_t i = 0; i < e->nchildren; i++) {
		const schema_expr *child = e->children[i];
		if (i > 0)
			append(g, op);
		bool parens = is_operation(child) && !all_union(child);
		if (parens)
			append(g, "(");
		append_expr(g, child);
		if (parens)
			append(g, ")");
	}
}

void schema_print_expr(const schema_expr *e, strbuf *out)
{
	generator g = {.out = out};
	reset(&g);
	g.has_newline = false; /* no indentation */
	append_expr(&g, e);
}

/* ------------------------------------------------------------ items */

static void append_relation(generator *g, const schema_relation *r)
{
	append_comments(g, r->comments, r->ncomments);
	append(g, r->is_permission ? "permission " : "relation ");
	append(g, r->name);
	if (r->is_permission) {
		append(g, " = ");
		append_expr(g, r->expr);
	} else {
		append(g, ": ");
		strbuf text;
		strbuf_init(&text);
		for (size_t i = 0; i < r->ntypes; i++) {
			if (i > 0)
				strbuf_puts(&text, " | ");
			schema_format_allowed_type(&r->types[i], &text);
		}
		append_n(g, text.data, text.len);
		strbuf_free(&text);
	}
	append(g, "\n");
}

static void append_definition(generator *g, const schema_definition *d)
{
	append_comments(g, d->comments, d->ncomments);
	append(g, "definition ");
	append(g, d->name);
	if (d->nrelations == 0) {
		append(g, " {}");
		return;
	}
	append(g, " {\n");
	g->indent++;
	g->has_new_scope = true;
	for (size_t i = 0; i < d->nrelations; i++)
		append_relation(g, d->relations[i]);
	g->indent--;
	append(g, "}");
}

static int compare_params(const void *a, const void *b)
{
	const schema_caveat_param *x = *(const schema_caveat_param *const *)a;
	const schema_caveat_param *y = *(const schema_caveat_param *const *)b;
	return strcmp(x->name, y->name);
}

static void append_caveat(generator *g, const schema_caveat *c)
{
	append_comments(g, c->comments, c->ncomments);
	append(g, "caveat ");
	append(g, c->name);
	append(g, "(");
	const schema_caveat_param **params =
	    xmalloc((c->nparams + 1) * sizeof(*params));
	for (size_t i = 0; i < c->nparams; i++)
		params[i] = &c->params[i];
	qsort(params, c->nparams, sizeof(*params), compare_params);
	for (size_t i = 0; i < c->nparams; i++) {
		if (i > 0)
			append(g, ", ");
		append(g, params[i]->name);
		append(g, " ");
		append(g, params[i]->type);
	}
	free(params);
	append(g, ") {\n");
	g->indent++;
	g->has_new_scope = true;
	if (c->program) {
		/* Re-printed from the syntax tree, as SpiceDB does. */
		strbuf text;
		strbuf_init(&text);
		cel_program_print(c->program, &text);
		append_n(g, text.data, text.len);
		strbuf_free(&text);
	} else {
		append(g, c->expression);
	}
	append(g, "\n");
	g->indent--;
	append(g, "}");
}

static int compare_definitions(const void *a, const void *b)
{
	return strcmp((*(const schema_definition *const *)a)->name,
	              (*(const schema_definition *const *)b)->name);
}

static int compare_caveats(const void *a, const void *b)
{
	return strcmp((*(const schema_caveat *const *)a)->name,
	              (*(const schema_caveat *const *)b)->name);
}

void schema_print(const schema *s, strbuf *out)
{
	generator g = {.out = out};
	bool first = true;

	if (schema_uses_expiration(s)) {
		reset(&g);
		append(&g, "use expiration");
		first = false;
	}

	const schema_caveat **caveats =
	    xmalloc((s->ncaveats + 1) * sizeof(*caveats));
	if (s->ncaveats)
		memcpy(caveats, s->caveats, s->ncaveats * sizeof(*caveats));
	qsort(caveats, s->ncaveats, sizeof(*caveats), compare_caveats);
	for (size_t i = 0; i < s->ncaveats; i++) {
		if (!first)
			strbuf_puts(out, "\n\n");
		first = false;
		reset(&g);
		append_caveat(&g, caveats[i]);
	}
	free(caveats);

	const schema_definition **defs =
	    xmalloc((s->ndefinitions + 1) * sizeof(*defs));
	if (s->ndefinitions)
		memcpy(defs, s->definitions, s->ndefinitions * sizeof(*defs));
	qsort(defs, s->ndefinitions, sizeof(*defs), compare_definitions);
	for (size_t i = 0; i < s->ndefinitions; i++) {
		if (!first)
			strbuf_puts(out, "\n\n");
		first = false;
		reset(&g);
		append_definition(&g, defs[i]);
	}
	free(defs);
}
