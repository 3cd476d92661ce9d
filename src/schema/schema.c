/*
 * schema.c -- schema_compile() and the lookups over a compiled schema.
 *
 * A schema and everything it points to live in one arena; schema_free()
 * destroys it.  Compilation runs the passes listed in internal.h and hands
 * out the schema only when all of them succeed.
 */
#include <string.h>

#include "schema/internal.h"
#include "util/error.h"
#include "util/xalloc.h"

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
	if (!rc)
		rc = schema_check_names(s, &po, err);
	if (!rc)
		rc = schema_typecheck(s, err);
	if (rc) {
		arena_destroy(a);
		return rc;
	}
	*out = s;
	return 0;
}

void schema_free(schema *s)
{
	if (s)
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
