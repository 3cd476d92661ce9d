/*
 * program.c -- the functions of cel.h: compile, print, evaluate, check a
 * context.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cel/internal.h"
#include "util/error.h"
#include "util/xalloc.h"

/* ---------------------------------------------------------------- compile */

int cel_compile(const char *expression, const cel_param *params, size_t nparams,
                cel_program **out, pemba_error *err)
{
	*out = NULL;
	error_clear(err);
	if (!expression)
		expression = "";
	size_t len = strlen(expression);
	if (len > CEL_MAX_EXPRESSION_BYTES)
		return error_set_at(err, PEMBA_EINVAL, 1, 1,
		                    "caveat expression provided exceeds "
		                    "maximum allowed size of %d characters",
		                    CEL_MAX_EXPRESSION_BYTES);

	arena *a = arena_create(0);
	cel_program *p = arena_alloc(a, sizeof(*p));
	p->arena = a;
	p->nparams = nparams;
	p->params = arena_alloc(a, (nparams + 1) * sizeof(*p->params));
	p->param_types =
	    arena_alloc(a, (nparams + 1) * sizeof(*p->param_types));
	p->param_declared =
	    arena_alloc(a, (nparams + 1) * sizeof(*p->param_declared));
	p->used = arena_alloc(a, nparams + 1);
	for (size_t i = 0; i < nparams; i++) {
		p->params[i].name = arena_strdup(a, params[i].name);
		p->params[i].type = arena_strdup(a, params[i].type);
		p->param_types[i] = cel_type_parse(a, params[i].type, false);
		p->param_declared[i] = cel_type_parse(a, params[i].type, true);
		if (!p->param_types[i] || !p->param_declared[i]) {
			error_set_at(err, PEMBA_EINVAL, 1, 1,
			             "unknown type `%s` for parameter `%s`",
			             params[i].type, params[i].name);
			arena_destroy(a);
			return PEMBA_EINVAL;
		}
	}
	int rc = cel_parse(a, expression, len, p, err);
	if (!rc)
		rc = cel_check(p, err);
	if (rc) {
		cel_program_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void cel_program_free(cel_program *p)
{
	if (!p)
		return;
	for (cel_regex_list *r = p->regexes; r; r = r->next)
		regfree(r->regex);
	arena_destroy(p->arena);
}

void cel_program_print(const cel_program *p, strbuf *out)
{
	cel_print_node(p->root, out);
}

bool cel_program_uses_param(const cel_program *p, const char *name)
{
	for (size_t i = 0; i < p->nparams; i++)
		if (strcmp(p->params[i].name, name) == 0)
			return p->used[i];
	return false;
}

/* --------------------------------------------------------------- contexts */

static bool too_deep(const json_t *j, int depth)
{
	if (depth > CEL_MAX_CONTEXT_DEPTH)
		return true;
	if (json_is_array(j)) {
		for (size_t i = 0; i < json_array_size(j); i++)
			if (too_deep(json_array_get(j, i), depth + 1))
				return true;
	} else if (json_is_object(j)) {
		const char *key;
		json_t *value;
		json_object_foreach(
		    (json_t *)j, key,
		    value) if (too_deep(value, depth + 1)) return true;
	}
	return false;
}

const char *cel_json_error_text(const char *jansson_text)
{
	/* jansson names its flag; say what is wrong instead.  Strings carry
	 * no NUL through pemba (see docs/compatibility.md). */
	if (strstr(jansson_text, "JSON_ALLOW_NUL"))
		return "a string contains \\u0000 (NUL), which caveat "
		       "contexts may not hold";
	if (strstr(jansson_text, "NUL byte in object key"))
		return "a key contains \\u0000 (NUL), which caveat "
		       "contexts may not hold";
	return jansson_text;
}

/* Parses a context text into *out (NULL for an empty one). */
static int load_context(const char *text, json_t **out, pemba_error *err)
{
	*out = NULL;
	if (!text || !*text)
		return 0;
	size_t len = strlen(text);
	if (len > CEL_MAX_CONTEXT_BYTES)
		return error_set(err, PEMBA_EINVAL,
		                 "caveat context is larger than %d bytes",
		                 CEL_MAX_CONTEXT_BYTES);
	json_error_t jerr;
	json_t *j = json_loadb(
	    text, len, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return error_set(err, PEMBA_EINVAL,
		                 "caveat context is not valid JSON: %s (at "
		                 "offset %d)",
		                 cel_json_error_text(jerr.text), jerr.position);
	if (!json_is_object(j)) {
		json_decref(j);
		return error_set(err, PEMBA_EINVAL,
		                 "caveat context must be a JSON object");
	}
	if (too_deep(j, 0)) {
		json_decref(j);
		return error_set(err, PEMBA_EINVAL,
		                 "caveat context nests deeper than %d levels",
		                 CEL_MAX_CONTEXT_DEPTH);
	}
	*out = j;
	return 0;
}

/* Fills values[i] for every parameter: the relationship's value, else the
 * request's, else unknown. */
static int bind_params(const cel_program *p, json_t *rel, json_t *req, arena *a,
                       cel_value *values, pemba_error *err)
{
	for (size_t i = 0; i < p->nparams; i++) {
		const char *name = p->params[i].name;
		json_t *j = rel ? json_object_get(rel, name) : NULL;
		if (!j && req)
			j = json_object_get(req, name);
		if (!j) {
			cel_unknown *u =
			    arena_alloc(a, sizeof(*u) + sizeof(u->params[0]));
			u->n = 1;
			u->params[0] = (int)i;
			values[i].kind = CEL_V_UNKNOWN;
			values[i].unknown = u;
			continue;
		}
		const char *why =
		    cel_convert_json(a, j, p->param_declared[i], &values[i]);
		if (why)
			return error_set(err, PEMBA_EINVAL,
			                 "could not convert context parameter "
			                 "`%s`: %s",
			                 name, why);
	}
	return 0;
}

int cel_evaluate(const cel_program *p, const char *relationship_context,
                 const char *request_context, uint64_t cost_limit, arena *a,
                 cel_result *out, pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	error_clear(err);
	json_t *rel = NULL, *req = NULL;
	int rc = load_context(relationship_context, &rel, err);
	if (!rc)
		rc = load_context(request_context, &req, err);
	cel_value *values = arena_alloc(a, (p->nparams + 1) * sizeof(*values));
	if (!rc)
		rc = bind_params(p, rel, req, a, values, err);
	json_decref(rel);
	json_decref(req);
	if (rc)
		return rc;
	return cel_eval_program(p, values, cost_limit, a, out, err);
}

int cel_validate_context(const cel_program *p, const char *context,
                         pemba_error *err)
{
	error_clear(err);
	json_t *j = NULL;
	int rc = load_context(context, &j, err);
	if (rc || !j)
		return rc;
	arena *a = arena_create(0);
	cel_value *values = arena_alloc(a, (p->nparams + 1) * sizeof(*values));
	rc = bind_params(p, j, NULL, a, values, err);
	arena_destroy(a);
	json_decref(j);
	return rc;
}
