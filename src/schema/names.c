/*
 * names.c -- identifier rules, keywords, name tables and the names pass.
 *
 * The identifier rules are SpiceDB's (PRODUCT.md, "Limits and input
 * rules"), hand-coded rather than run through a regex engine:
 *   type       ^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$
 *              (at most 128 bytes)
 *   relation   ^[a-z][a-z0-9_]{1,62}[a-z0-9]$
 *   object id  ^(([a-zA-Z0-9/_|\-=+]{1,})|\*)$, at most 1024 bytes
 *   definition as type, but a prefix segment may have 64 bytes
 * Caveat names get no check here: SpiceDB's schema compiler takes any
 * identifier path (its API checks caveat names of relationships).
 */
#include <string.h>

#include "schema/internal.h"
#include "util/error.h"
#include "util/hash.h"

#define TYPE_NAME_MAX 128

static const char TYPE_PATTERN[] =
    "^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$";
/* SpiceDB checks a definition's own name with a looser pattern than the
 * type names its relations (and the API) accept: a prefix segment may have
 * 64 bytes there.  Such a definition can be written but never named by a
 * relation or a relationship, exactly as in SpiceDB. */
static const char DEFINITION_PATTERN[] =
    "^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$";
static const char RELATION_PATTERN[] = "^[a-z][a-z0-9_]{1,62}[a-z0-9]$";

/* ------------------------------------------------------- identifiers */

static bool is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* One segment [a-z][a-z0-9_]{1,max_middle}[a-z0-9]. */
static bool valid_segment(const char *s, size_t n, size_t max_middle)
{
	if (n < 3 || n > max_middle + 2)
		return false;
	if (!is_lower(s[0]))
		return false;
	for (size_t i = 1; i + 1 < n; i++)
		if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '_')
			return false;
	return is_lower(s[n - 1]) || is_digit(s[n - 1]);
}

/* A type name whose prefix segments have at most prefix_middle + 2
 * bytes. */
static bool valid_type_name(const char *s, size_t n, size_t prefix_middle)
{
	if (!s || n == 0 || n > TYPE_NAME_MAX)
		return false;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '/')
			continue;
		bool last = i == n;
		if (!valid_segment(s + start, i - start,
		                   last ? 62 : prefix_middle))
			return false;
		start = i + 1;
	}
	return true;
}

bool schema_valid_type_name(const char *s, size_t n)
{
	return valid_type_name(s, n, 61);
}

bool schema_valid_relation_name(const char *s, size_t n)
{
	return s && valid_segment(s, n, 62);
}

bool schema_valid_object_id(const char *s, size_t n)
{
	if (!s || n == 0 || n > PEMBA_MAX_OBJECT_ID)
		return false;
	if (n == 1 && s[0] == '*')
		return true;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!is_lower(c) && !is_digit(c) && !(c >= 'A' && c <= 'Z') &&
		    !strchr("/_|-=+", c))
			return false;
	}
	return true;
}

static const struct {
	const char *name;
	unsigned flag;
} use_flags[] = {
    {"expiration", SCHEMA_FLAG_EXPIRATION},     {"import", SCHEMA_FLAG_IMPORT},
    {"partial", SCHEMA_FLAG_PARTIAL},           {"self", SCHEMA_FLAG_SELF},
    {"typechecking", SCHEMA_FLAG_TYPECHECKING},
};

unsigned schema_use_flag(const char *s, size_t n)
{
	for (size_t i = 0; i < sizeof(use_flags) / sizeof(use_flags[0]); i++)
		if (strlen(use_flags[i].name) == n &&
		    memcmp(use_flags[i].name, s, n) == 0)
			return use_flags[i].flag;
	return 0;
}

bool schema_is_keyword(const char *s, size_t n, unsigned flags)
{
	static const char *const always[] = {
	    "definition", "caveat", "relation", "permission", "nil", "with",
	};
	for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
		if (strlen(always[i]) == n && memcmp(always[i], s, n) == 0)
			return true;
	if ((flags & SCHEMA_FLAG_EXPIRATION) && n == 3 &&
	    memcmp(s, "and", 3) == 0)
		return true;
	return (schema_use_flag(s, n) & flags) != 0;
}

void schema_format_allowed_type(const schema_allowed_type *t, strbuf *out)
{
	strbuf_puts(out, t->type);
	if (t->relation) {
		strbuf_putc(out, '#');
		strbuf_puts(out, t->relation);
	}
	if (t->wildcard)
		strbuf_puts(out, ":*");
	if (t->caveat || t->expiration)
		strbuf_puts(out, " with ");
	if (t->caveat)
		strbuf_puts(out, t->caveat);
	if (t->caveat && t->expiration)
		strbuf_puts(out, " and ");
	if (t->expiration)
		strbuf_puts(out, "expiration");
}

/* ------------------------------------------------------- name tables */

name_table *name_table_new(arena *a, size_t expected)
{
	name_table *t = arena_alloc(a, sizeof(*t));
	size_t cap = 8;
	while (cap < expected * 2)
		cap *= 2;
	t->cap = cap;
	t->keys = arena_alloc(a, cap * sizeof(*t->keys));
	t->values = arena_alloc(a, cap * sizeof(*t->values));
	return t;
}

static void *insert(name_table *t, const char *key, void *value)
{
	size_t mask = t->cap - 1;
	for (size_t i = hash_str(key, 0) & mask;; i = (i + 1) & mask) {
		if (!t->keys[i]) {
			t->keys[i] = key;
			t->values[i] = value;
			t->count++;
			return NULL;
		}
		if (strcmp(t->keys[i], key) == 0)
			return t->values[i];
	}
}

void *name_table_put(arena *a, name_table *t, const char *key, void *value)
{
	if ((t->count + 1) * 2 > t->cap) {
		/* Rehash into twice the room; the old arrays stay in the
		 * arena until it is destroyed. */
		name_table bigger = {.cap = t->cap * 2};
		bigger.keys = arena_alloc(a, bigger.cap * sizeof(*bigger.keys));
		bigger.values =
		    arena_alloc(a, bigger.cap * sizeof(*bigger.values));
		for (size_t i = 0; i < t->cap; i++)
			if (t->keys[i])
				insert(&bigger, t->keys[i], t->values[i]);
		*t = bigger;
	}
	return insert(t, key, value);
}

void *name_table_get(const name_table *t, const char *key)
{
	if (!t || !key)
		return NULL;
	size_t mask = t->cap - 1;
	for (size_t i = hash_str(key, 0) & mask;; i = (i + 1) & mask) {
		if (!t->keys[i])
			return NULL;
		if (strcmp(t->keys[i], key) == 0)
			return t->values[i];
	}
}

/* --------------------------------------------------------- the pass */

static int bad_name(pemba_error *err, int line, int column, const char *what,
                    const char *name, const char *pattern, const char *limit)
{
	return error_set_at(err, PEMBA_EINVAL, line, column,
	                    "invalid %s `%.200s` at %d:%d: must match %s%s",
	                    what, name, line, column, pattern, limit);
}

static int check_relation_name(const char *name, const char *what, int line,
                               int column, pemba_error *err)
{
	if (schema_valid_relation_name(name, strlen(name)))
		return 0;
	return bad_name(err, line, column, what, name, RELATION_PATTERN, "");
}

static int check_type_name(const char *name, const char *what, int line,
                           int column, pemba_error *err)
{
	if (schema_valid_type_name(name, strlen(name)))
		return 0;
	return bad_name(err, line, column, what, name, TYPE_PATTERN,
	                " and be at most 128 bytes");
}

static int check_definition_name(const schema_definition *d, pemba_error *err)
{
	if (valid_type_name(d->name, strlen(d->name), 62))
		return 0;
	return bad_name(err, d->line, d->column, "definition name", d->name,
	                DEFINITION_PATTERN, " and be at most 128 bytes");
}

/* Names inside a permission expression (depth bounded by the parser). */
static int check_expr_names(const schema_expr *e, pemba_error *err)
{
	int rc;
	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		return 0;
	case SCHEMA_EXPR_REF:
		return check_relation_name(e->name,
		                           "relation or permission "
		                           "name",
		                           e->line, e->column, err);
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		rc = check_relation_name(e->name, "relation name", e->line,
		                         e->column, err);
		if (rc)
			return rc;
		return check_relation_name(e->target,
		                           "relation or permission "
		                           "name",
		                           e->line, e->column, err);
	default:
		for (size_t i = 0; i < e->nchildren; i++)
			if ((rc = check_expr_names(e->children[i], err)))
				return rc;
		return 0;
	}
}

static int check_definition(const schema_definition *d, pemba_error *err)
{
	int rc = check_definition_name(d, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < d->nrelations; i++) {
		const schema_relation *r = d->relations[i];
		rc = check_relation_name(r->name,
		                         r->is_permission ? "permission name"
		                                          : "relation name",
		                         r->line, r->column, err);
		if (rc)
			return rc;
		if (r->is_permission) {
			if ((rc = check_expr_names(r->expr, err)))
				return rc;
			continue;
		}
		for (size_t j = 0; j < r->ntypes; j++) {
			const schema_allowed_type *t = &r->types[j];
			rc = check_type_name(t->type, "definition name",
			                     t->line, t->column, err);
			if (!rc && t->relation)
				rc = check_relation_name(
				    t->relation, "relation name", t->line,
				    t->column, err);
			if (rc)
				return rc;
		}
	}
	return 0;
}

int schema_check_names(schema *s, const parse_output *po, pemba_error *err)
{
	schema_index *index = arena_alloc(s->arena, sizeof(*index));
	index->definitions = name_table_new(s->arena, s->ndefinitions);
	index->caveats = name_table_new(s->arena, s->ncaveats);
	s->index = index;

	for (size_t i = 0; i < po->nitems; i++) {
		const char *name;
		int line, column, rc;
		if (po->items[i].is_caveat) {
			schema_caveat *c = po->items[i].ptr;
			name = c->name;
			line = c->line;
			column = c->column;
			/* SpiceDB puts no rule on caveat names beyond
			 * what its lexer reads as identifiers. */
		} else {
			schema_definition *d = po->items[i].ptr;
			name = d->name;
			line = d->line;
			column = d->column;
			if ((rc = check_definition(d, err)))
				return rc;
		}
		if (name_table_get(index->definitions, name) ||
		    name_table_get(index->caveats, name))
			return error_set_at(
			    err, PEMBA_EINVAL, line, column,
			    "found name reused between multiple "
			    "definitions and/or caveats: %s",
			    name);
		name_table_put(s->arena,
		               po->items[i].is_caveat ? index->caveats
		                                      : index->definitions,
		               name, po->items[i].ptr);
	}
	return 0;
}
