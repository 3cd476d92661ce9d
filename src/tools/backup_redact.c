/*
 * backup_redact.c -- `zed backup redact`'s renaming (backup_redact.h).
 *
 * The schema is compiled with the schema layer (src/schema/schema.h: this
 * tool rewrites schema text, which pemba.h does not expose), its names are
 * replaced in place by pointers to the redactor's own strings, and it is
 * printed back with schema_print().
 */
#include "tools/backup_redact.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pemba.h"
#include "schema/schema.h"
#include "util/hash.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

/* ===================================================================== */
/* Name maps                                                             */
/* ===================================================================== */

typedef struct name_entry {
	char *from, *to;
	struct name_entry *next;  /* bucket chain */
	struct name_entry *order; /* insertion order */
} name_entry;

typedef struct name_map {
	name_entry **buckets;
	size_t nbuckets, count;
	name_entry *first, *last;
} name_map;

static void map_init(name_map *m)
{
	m->nbuckets = 64;
	m->buckets = xcalloc(m->nbuckets, sizeof(*m->buckets));
	m->count = 0;
	m->first = m->last = NULL;
}

static const char *map_get(const name_map *m, const char *from)
{
	name_entry *e = m->buckets[hash_str(from, 0) & (m->nbuckets - 1)];
	for (; e; e = e->next)
		if (strcmp(e->from, from) == 0)
			return e->to;
	return NULL;
}

static const char *map_put(name_map *m, const char *from, const char *to)
{
	if (m->count + 1 > m->nbuckets) {
		size_t n = m->nbuckets * 2;
		name_entry **b = xcalloc(n, sizeof(*b));
		for (name_entry *e = m->first; e; e = e->order) {
			size_t h = hash_str(e->from, 0) & (n - 1);
			e->next = b[h];
			b[h] = e;
		}
		free(m->buckets);
		m->buckets = b;
		m->nbuckets = n;
	}
	name_entry *e = xcalloc(1, sizeof(*e));
	e->from = xstrdup(from);
	e->to = xstrdup(to);
	size_t h = hash_str(from, 0) & (m->nbuckets - 1);
	e->next = m->buckets[h];
	m->buckets[h] = e;
	if (m->last)
		m->last->order = e;
	else
		m->first = e;
	m->last = e;
	m->count++;
	return e->to;
}

static void map_free(name_map *m)
{
	name_entry *e = m->first;
	while (e) {
		name_entry *next = e->order;
		free(e->from);
		free(e->to);
		free(e);
		e = next;
	}
	free(m->buckets);
}

/* ===================================================================== */
/* Redactor                                                              */
/* ===================================================================== */

struct backup_redactor {
	backup_redact_options options;
	schema *schema;
	char *redacted_schema;
	name_map definitions, caveats, relations, object_ids;
	unsigned counter; /* zed's redactionCount */
};

/* The redacted name of a relation or permission, given at first sight. */
static const char *relation_name(backup_redactor *r, const char *name)
{
	const char *to = map_get(&r->relations, name);
	if (!to) {
		char buf[32];
		snprintf(buf, sizeof(buf), "rel%u", r->counter++);
		to = map_put(&r->relations, name, buf);
	}
	return to;
}

static void redact_expr(backup_redactor *r, schema_expr *e)
{
	if (!e)
		return;
	switch (e->kind) {
	case SCHEMA_EXPR_REF:
		e->name = map_get(&r->relations, e->name);
		break;
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		e->name = map_get(&r->relations, e->name);
		/* The target names a relation of the subjects' definitions; one
		 * no definition has is kept as it is (it resolves nowhere). */
		if (map_get(&r->relations, e->target))
			e->target = map_get(&r->relations, e->target);
		break;
	default:
		for (size_t i = 0; i < e->nchildren; i++)
			redact_expr(r, e->children[i]);
	}
}

backup_redactor *backup_redactor_new(const char *schema_text,
                                     const backup_redact_options *options,
                                     const char **redacted_schema,
                                     char error[BACKUP_ERROR_LEN])
{
	pemba_error err;
	schema *s = NULL;
	if (schema_compile(schema_text, strlen(schema_text), &s, &err) != 0) {
		snprintf(error, BACKUP_ERROR_LEN,
		         "the backup's schema does not compile: %s",
		         err.message);
		return NULL;
	}
	backup_redactor *r = xcalloc(1, sizeof(*r));
	r->options = *options;
	r->schema = s;
	map_init(&r->definitions);
	map_init(&r->caveats);
	map_init(&r->relations);
	map_init(&r->object_ids);
	char buf[32];

	for (size_t i = 0; i < s->ndefinitions; i++) {
		schema_definition *d = s->definitions[i];
		d->doc = NULL;
		d->comments = NULL;
		d->ncomments = 0;
		for (size_t k = 0; k < d->nrelations; k++) {
			schema_relation *rel = d->relations[k];
			rel->doc = NULL;
			rel->comments = NULL;
			rel->ncomments = 0;
		}
		if (options->definitions) {
			snprintf(buf, sizeof(buf), "def%u", r->counter++);
			d->name = map_put(&r->definitions, d->name, buf);
		}
	}
	for (size_t i = 0; i < s->ncaveats; i++) {
		schema_caveat *c = s->caveats[i];
		c->doc = NULL;
		c->comments = NULL;
		c->ncomments = 0;
		if (options->definitions) {
			snprintf(buf, sizeof(buf), "cav%u", r->counter++);
			c->name = map_put(&r->caveats, c->name, buf);
		}
	}
	if (options->relations)
		for (size_t i = 0; i < s->ndefinitions; i++) {
			schema_definition *d = s->definitions[i];
			for (size_t k = 0; k < d->nrelations; k++)
				d->relations[k]->name =
				    relation_name(r, d->relations[k]->name);
		}
	for (size_t i = 0; i < s->ndefinitions; i++) {
		schema_definition *d = s->definitions[i];
		for (size_t k = 0; k < d->nrelations; k++) {
			schema_relation *rel = d->relations[k];
			for (size_t t = 0; t < rel->ntypes; t++) {
				schema_allowed_type *a = &rel->types[t];
				if (options->definitions) {
					a->type =
					    map_get(&r->definitions, a->type);
					if (a->caveat)
						a->caveat = map_get(&r->caveats,
						                    a->caveat);
				}
				if (options->relations && a->relation)
					a->relation =
					    map_get(&r->relations, a->relation);
			}
			if (options->relations)
				redact_expr(r, rel->expr);
		}
	}
	strbuf out;
	strbuf_init(&out);
	schema_print(s, &out);
	r->redacted_schema = strbuf_detach(&out, NULL);
	*redacted_schema = r->redacted_schema;
	return r;
}

/* The redacted object id (given at first sight, as zed numbers them). */
static const char *object_id(backup_redactor *r, const char *id)
{
	if (strcmp(id, "*") == 0)
		return id;
	const char *to = map_get(&r->object_ids, id);
	if (!to) {
		char buf[32];
		/* zed's map starts with "*" -> "*", so the first is obj1. */
		snprintf(buf, sizeof(buf), "obj%zu", r->object_ids.count + 1);
		to = map_put(&r->object_ids, id, buf);
	}
	return to;
}

int backup_redact_relationship(backup_redactor *r,
                               const backup_relationship *in,
                               backup_relationship *out,
                               char error[BACKUP_ERROR_LEN])
{
	*out = *in;
	const char *missing = NULL;
	if (r->options.definitions) {
		out->object_type = map_get(&r->definitions, in->object_type);
		out->subject_object_type =
		    map_get(&r->definitions, in->subject_object_type);
		if (!out->object_type)
			missing = in->object_type;
		else if (!out->subject_object_type)
			missing = in->subject_object_type;
		if (in->caveat_name[0]) {
			out->caveat_name =
			    map_get(&r->caveats, in->caveat_name);
			if (!out->caveat_name && !missing)
				missing = in->caveat_name;
		}
	}
	if (r->options.relations && !missing) {
		out->relation = map_get(&r->relations, in->relation);
		if (!out->relation)
			missing = in->relation;
		if (in->subject_relation[0]) {
			out->subject_relation =
			    map_get(&r->relations, in->subject_relation);
			if (!out->subject_relation && !missing)
				missing = in->subject_relation;
		}
	}
	if (missing) {
		snprintf(error, BACKUP_ERROR_LEN,
		         "relationship %s:%s#%s@%s:%s names `%s`, which the "
		         "backup's schema lacks",
		         in->object_type, in->object_id, in->relation,
		         in->subject_object_type, in->subject_object_id,
		         missing);
		return -1;
	}
	if (r->options.object_ids) {
		out->object_id = object_id(r, in->object_id);
		out->subject_object_id = object_id(r, in->subject_object_id);
	}
	return 0;
}

void backup_redactor_map(const backup_redactor *r,
                         void (*fn)(void *ctx, const char *kind,
                                    const char *original, const char *redacted),
                         void *ctx)
{
	static const char *const kinds[] = {"definition", "caveat", "relation",
	                                    "object-id"};
	const name_map *maps[] = {&r->definitions, &r->caveats, &r->relations,
	                          &r->object_ids};
	for (int k = 0; k < 4; k++)
		for (const name_entry *e = maps[k]->first; e; e = e->order)
			fn(ctx, kinds[k], e->from, e->to);
}

void backup_redactor_free(backup_redactor *r)
{
	if (!r)
		return;
	schema_free(r->schema);
	free(r->redacted_schema);
	map_free(&r->definitions);
	map_free(&r->caveats);
	map_free(&r->relations);
	map_free(&r->object_ids);
	free(r);
}
