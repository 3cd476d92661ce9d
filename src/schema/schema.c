/*
 * schema.c -- schema_compile() and the lookups over a compiled schema.
 *
 * A schema and everything it points to live in one arena; schema_free()
 * destroys it.  Compilation runs the passes listed in internal.h and hands
 * out the schema only when all of them succeed.
 */
#include <string.h>

#include "cel/cel.h"
#include "schema/internal.h"
#include "util/error.h"
#include "util/xalloc.h"

/* Compiles every caveat's expression over its parameters.  CEL positions
 * are relative to the expression text, whose lines the parser trimmed:
 * the first line is shifted by the expression's start column, later lines
 * keep their column (an approximation when they were indented).  On
 * success each caveat's `expression` becomes its canonical text, so that
 * equality and printing see the same form. */
static int compile_caveats(schema *s, pemba_error *err)
{
	for (size_t i = 0; i < s->ncaveats; i++) {
		schema_caveat *c = s->caveats[i];
		cel_param *params =
		    arena_alloc(s->arena, (c->nparams + 1) * sizeof(*params));
		for (size_t k = 0; k < c->nparams; k++) {
			params[k].name = c->params[k].name;
			params[k].type = c->params[k].type;
		}
		cel_program *program = NULL;
		pemba_error why;
		int rc = cel_compile(c->expression, params, c->nparams,
		                     &program, &why);
		if (rc) {
			int line = c->expr_line + why.line - 1;
			int column = why.line <= 1
			                 ? c->expr_column + why.column - 1
			                 : why.column;
			if (strncmp(why.message, "caveat expression ", 18) == 0)
				return error_set_at(
				    err, PEMBA_EINVAL, c->expr_line,
				    c->expr_column,
				    "parse error at %d:%d: invalid expression "
				    "for caveat `%s`: %s",
				    c->expr_line, c->expr_column, c->name,
				    why.message);
			return error_set_at(
			    err, PEMBA_EINVAL, line, column,
			    "parse error at %d:%d: invalid expression for "
			    "caveat `%s`: ERROR: %s:%d:%d: %s",
			    c->expr_line, c->expr_column, c->name, c->name,
			    line, column, why.message);
		}
		c->program = program;
		strbuf text;
		strbuf_init(&text);
		cel_program_print(program, &text);
		c->expression = arena_strndup(s->arena, text.data, text.len);
		strbuf_free(&text);
	}
	return 0;
}

int schema_compile(const char *text, size_t len, schema **out, pemba_error *err)
{
	*out = NULL;
	error_clear(err);
	if (!text && len > 0)
		return error_set(err, PEMBA_EINVAL, "schema text is missing");

	arena *a = arena_create(0);
	schema *s = arena_alloc(a, sizeof(*s));
	s->arena = a;

	parse_output po = {0};
	int rc = schema_parse(s, text ? text : "", len, &po, err);
	/* SpiceDB compiles caveat expressions while parsing, so their errors
	 * come before the name and type checks. */
	if (!rc)
		rc = compile_caveats(s, err);
	if (!rc)
		rc = schema_check_names(s, &po, err);
	if (!rc)
		rc = schema_typecheck(s, err);
	if (rc) {
		schema_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void schema_free(schema *s)
{
	if (!s)
		return;
	/* Compiled caveats live outside the arena (cel.h). */
	for (size_t i = 0; i < s->ncaveats; i++)
		cel_program_free((cel_program *)s->caveats[i]->program);
	arena_destroy(s->arena);
}

const schema_definition *schema_find_definition(const schema *s,
                                                const char *name)
{
	if (!s || !s->index)
		return NULL;
	return name_table_get(((const schema_index *)s->index)->definitions,
	                      name);
}

const schema_relation *schema_find_relation(const schema_definition *d,
                                            const char *name)
{
	if (!d)
		return NULL;
	return name_table_get(d->lookup, name);
}

const schema_caveat *schema_find_caveat(const schema *s, const char *name)
{
	if (!s || !s->index)
		return NULL;
	return name_table_get(((const schema_index *)s->index)->caveats, name);
}

bool schema_uses_caveats(const schema *s)
{
	if (s->ncaveats > 0)
		return true;
	for (size_t i = 0; i < s->ndefinitions; i++) {
		const schema_definition *d = s->definitions[i];
		for (size_t j = 0; j < d->nrelations; j++) {
			const schema_relation *r = d->relations[j];
			for (size_t k = 0; k < r->ntypes; k++)
				if (r->types[k].caveat)
					return true;
		}
	}
	return false;
}

bool schema_uses_expiration(const schema *s)
{
	for (size_t i = 0; i < s->ndefinitions; i++) {
		const schema_definition *d = s->definitions[i];
		for (size_t j = 0; j < d->nrelations; j++) {
			const schema_relation *r = d->relations[j];
			for (size_t k = 0; k < r->ntypes; k++)
				if (r->types[k].expiration)
					return true;
		}
	}
	return false;
}
