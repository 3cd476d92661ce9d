/*
 * caveats.c -- evaluating the caveats relationships carry, for the check
 * and lookup engines: the request's context merged under each
 * relationship's own (the relationship's values win, as in SpiceDB), one
 * evaluation per distinct (caveat, relationship context) per request.
 */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "cel/cel.h"
#include "engine/internal.h"
#include "util/error.h"
#include "util/hash.h"

struct caveat_cache_entry {
	caveat_cache_entry *next;
	const char *name;
	const char *context;
	uint64_t hash;
	int value;
	const nameset *missing;
};

static const nameset empty_nameset = {0};

const nameset *nameset_union(arena *a, const nameset *x, const nameset *y)
{
	if (x == NULL || x->n == 0)
		return y ? y : &empty_nameset;
	if (y == NULL || y->n == 0 || x == y)
		return x;
	nameset *u =
	    arena_alloc(a, sizeof(*u) + (x->n + y->n) * sizeof(u->names[0]));
	size_t i = 0, j = 0, n = 0;
	while (i < x->n || j < y->n) {
		int cmp = i == x->n   ? 1
		          : j == y->n ? -1
		                      : strcmp(x->names[i], y->names[j]);
		if (cmp <= 0)
			u->names[n++] = x->names[i++];
		else
			u->names[n++] = y->names[j++];
		if (cmp == 0)
			j++;
	}
	u->n = n;
	return u;
}

void caveat_eval_init(caveat_eval *ce, arena *a, const schema *sc,
                      pemba_error *err)
{
	memset(ce, 0, sizeof(*ce));
	ce->arena = a;
	ce->sc = sc;
	ce->err = err;
	ce->context = "";
}

void caveat_eval_set_context(caveat_eval *ce, const char *context)
{
	ce->context = arena_strdup(ce->arena, context ? context : "");
	/* Cached outcomes were computed with the old context. */
	memset(ce->buckets, 0, sizeof(ce->buckets));
}

void caveat_eval_end(caveat_eval *ce)
{
	if (ce->scratch) {
		arena_destroy(ce->scratch);
		ce->scratch = NULL;
	}
}

int caveat_eval_row(caveat_eval *ce, const store_rel *row,
                    const nameset **missing)
{
	*missing = NULL;
	if (row->caveat_name == NULL || row->caveat_name[0] == '\0')
		return KLEENE_TRUE;
	const char *context = row->caveat_context ? row->caveat_context : "";
	uint64_t h = hash_str(context, hash_str(row->caveat_name, 0));
	caveat_cache_entry **slot = &ce->buckets[h & 63];
	for (caveat_cache_entry *e = *slot; e; e = e->next)
		if (e->hash == h && strcmp(e->name, row->caveat_name) == 0 &&
		    strcmp(e->context, context) == 0) {
			*missing = e->missing;
			return e->value;
		}

	const schema_caveat *cav =
	    ce->sc ? schema_find_caveat(ce->sc, row->caveat_name) : NULL;
	if (cav == NULL || cav->program == NULL)
		return error_set(ce->err, PEMBA_EPRECONDITION,
		                 "caveat `%s` of relationship %s:%s#%s@%s:%s "
		                 "not found in the schema",
		                 row->caveat_name, row->resource_type,
		                 row->resource_id, row->relation,
		                 row->subject_type, row->subject_id);
	if (ce->scratch == NULL)
		ce->scratch = arena_create(0);
	cel_result res;
	int rc =
	    cel_evaluate(cav->program, context, ce->context,
	                 CEL_DEFAULT_COST_LIMIT, ce->scratch, &res, ce->err);
	if (rc < 0) {
		arena_reset(ce->scratch);
		return rc;
	}
	int v = res.outcome == CEL_TRUE    ? KLEENE_TRUE
	        : res.outcome == CEL_FALSE ? KLEENE_FALSE
	                                   : KLEENE_COND;
	const nameset *m = NULL;
	if (v == KLEENE_COND) {
		nameset *ns = arena_alloc(
		    ce->arena,
		    sizeof(*ns) + res.nmissing * sizeof(ns->names[0]));
		ns->n = res.nmissing;
		for (size_t i = 0; i < res.nmissing; i++)
			ns->names[i] = arena_strdup(ce->arena, res.missing[i]);
		m = ns;
	}
	arena_reset(ce->scratch);

	caveat_cache_entry *e = arena_alloc(ce->arena, sizeof(*e));
	e->name = arena_strdup(ce->arena, row->caveat_name);
	e->context = arena_strdup(ce->arena, context);
	e->hash = h;
	e->value = v;
	e->missing = m;
	e->next = *slot;
	*slot = e;
	*missing = m;
	return v;
}

int engine_validate_context(const char *context, pemba_error *err)
{
	if (context == NULL || context[0] == '\0')
		return PEMBA_OK;
	size_t len = strlen(context);
	if (len > CEL_MAX_CONTEXT_BYTES)
		return error_set(err, PEMBA_EINVAL,
		                 "caveat context is %zu bytes, more than the "
		                 "limit of %d",
		                 len, CEL_MAX_CONTEXT_BYTES);
	json_error_t jerr;
	json_t *v = json_loadb(context, len, JSON_REJECT_DUPLICATES, &jerr);
	if (v == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "caveat context is not valid JSON: %s "
		                 "(at byte %d)",
		                 cel_json_error_text(jerr.text), jerr.position);
	bool object = json_is_object(v);
	json_decref(v);
	if (!object)
		return error_set(err, PEMBA_EINVAL,
		                 "caveat context must be a JSON object");
	return PEMBA_OK;
}
