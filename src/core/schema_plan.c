/*
 * schema_plan.c -- pemba_plan_schema: the steps from the stored schema to
 * a target schema that SpiceDB's write rules accept.
 *
 * A schema write is refused while relationships use something it removes
 * (schema_ops.c).  The plan therefore:
 *   1. writes an intermediate schema: the target, plus whatever the target
 *      removes that still has relationships (definitions, relations,
 *      allowed types), so every permission already reads as in the target
 *      and deleting those relationships next changes no answer through a
 *      permission the target keeps;
 *   2. deletes the blocking relationships, one step per removed relation,
 *      allowed type or definition, with counts per relation and subject
 *      type;
 *   3. writes the target.
 * When nothing blocks, the plan is the target alone.  The plan is computed
 * from the stored schema every time, so executing it again after an
 * interruption resumes where the data now is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

/* ------------------------------------------------- intermediate schema */

/* A schema under construction, as text pieces (arena-owned). */
typedef struct ir_relation {
	const char *name;
	bool is_permission;
	const char *expr;   /* permission */
	const char **types; /* relation: allowed types as text */
	size_t ntypes;
} ir_relation;

typedef struct ir_definition {
	const char *name;
	ir_relation *relations;
	size_t nrelations, cap;
} ir_definition;

typedef struct ir_schema {
	arena *a;
	ir_definition *defs;
	size_t ndefs, cap;
	const schema_caveat **caveats;
	size_t ncaveats, ccap;
	bool expiration;
} ir_schema;

static char *text_of_type(arena *a, const schema_allowed_type *t)
{
	strbuf sb;
	strbuf_init(&sb);
	schema_allowed_type_source(t, &sb);
	char *s = arena_strndup(a, sb.data ? sb.data : "", sb.len);
	strbuf_free(&sb);
	return s;
}

static ir_definition *ir_find_def(ir_schema *ir, const char *name)
{
	for (size_t i = 0; i < ir->ndefs; i++)
		if (strcmp(ir->defs[i].name, name) == 0)
			return &ir->defs[i];
	return NULL;
}

static ir_relation *ir_find_rel(ir_definition *d, const char *name)
{
	for (size_t i = 0; i < d->nrelations; i++)
		if (strcmp(d->relations[i].name, name) == 0)
			return &d->relations[i];
	return NULL;
}

static ir_definition *ir_add_def(ir_schema *ir, const char *name)
{
	if (ir->ndefs == ir->cap) {
		ir->cap = ir->cap ? ir->cap * 2 : 16;
		ir->defs = xrealloc(ir->defs, ir->cap * sizeof(*ir->defs));
	}
	ir_definition *d = &ir->defs[ir->ndefs++];
	memset(d, 0, sizeof(*d));
	d->name = name;
	return d;
}

static ir_relation *ir_add_rel(ir_definition *d, const char *name)
{
	if (d->nrelations == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 8;
		d->relations =
		    xrealloc(d->relations, d->cap * sizeof(*d->relations));
	}
	ir_relation *r = &d->relations[d->nrelations++];
	memset(r, 0, sizeof(*r));
	r->name = name;
	return r;
}

static void ir_add_type(ir_schema *ir, ir_relation *r, const char *text)
{
	for (size_t i = 0; i < r->ntypes; i++)
		if (strcmp(r->types[i], text) == 0)
			return;
	const char **v = arena_alloc(ir->a, (r->ntypes + 1) * sizeof(*v));
	if (r->ntypes)
		memcpy(v, r->types, r->ntypes * sizeof(*v));
	v[r->ntypes++] = text;
	r->types = v;
}

/* Copies relation `src` into d; a permission keeps its expression only if
 * keep_expr (otherwise it becomes `nil`: it is going away). */
static void ir_copy_relation(ir_schema *ir, ir_definition *d,
                             const schema_relation *src, bool keep_expr)
{
	ir_relation *r = ir_add_rel(d, src->name);
	r->is_permission = src->is_permission;
	if (src->is_permission) {
		if (keep_expr) {
			strbuf sb;
			strbuf_init(&sb);
			schema_print_expr(src->expr, &sb);
			r->expr = arena_strndup(ir->a, sb.data ? sb.data : "",
			                        sb.len);
			strbuf_free(&sb);
		} else {
			r->expr = "nil";
		}
	} else {
		for (size_t i = 0; i < src->ntypes; i++)
			ir_add_type(ir, r, text_of_type(ir->a, &src->types[i]));
	}
}

static void ir_add_caveat(ir_schema *ir, const schema_caveat *c)
{
	for (size_t i = 0; i < ir->ncaveats; i++)
		if (strcmp(ir->caveats[i]->name, c->name) == 0)
			return;
	if (ir->ncaveats == ir->ccap) {
		ir->ccap = ir->ccap ? ir->ccap * 2 : 8;
		ir->caveats =
		    xrealloc(ir->caveats, ir->ccap * sizeof(*ir->caveats));
	}
	ir->caveats[ir->ncaveats++] = c;
}

static void ir_from_schema(ir_schema *ir, const schema *t)
{
	for (size_t i = 0; i < t->ncaveats; i++)
		ir_add_caveat(ir, t->caveats[i]);
	for (size_t i = 0; i < t->ndefinitions; i++) {
		const schema_definition *sd = t->definitions[i];
		ir_definition *d = ir_add_def(ir, sd->name);
		for (size_t k = 0; k < sd->nrelations; k++)
			ir_copy_relation(ir, d, sd->relations[k], true);
	}
	ir->expiration = schema_uses_expiration(t);
}

/* Makes every name the intermediate schema's allowed types mention exist,
 * taking what is missing from the stored schema `s`: definitions (their
 * relations, permissions as `nil`), subject relations and caveats.
 * Repeats until nothing is added. */
static void ir_close_over(ir_schema *ir, const schema *s)
{
	bool added = true;
	while (added) {
		added = false;
		for (size_t i = 0; i < ir->ndefs; i++) {
			for (size_t k = 0; k < ir->defs[i].nrelations; k++) {
				ir_relation *r = &ir->defs[i].relations[k];
				const char *dn = ir->defs[i].name;
				const schema_definition *sd =
				    schema_find_definition(s, dn);
				const schema_relation *sr =
				    sd ? schema_find_relation(sd, r->name)
				       : NULL;
				if (r->is_permission || !sr)
					continue;
				for (size_t t = 0; t < sr->ntypes; t++) {
					const schema_allowed_type *at =
					    &sr->types[t];
					/* only types this relation kept */
					bool kept = false;
					char *txt = text_of_type(ir->a, at);
					for (size_t q = 0; q < r->ntypes; q++)
						if (!strcmp(r->types[q], txt))
							kept = true;
					if (!kept)
						continue;
					ir_definition *td =
					    ir_find_def(ir, at->type);
					const schema_definition *sdt =
					    at->definition;
					if (!td && sdt) {
						td = ir_add_def(ir, sdt->name);
						for (size_t q = 0;
						     q < sdt->nrelations; q++)
							ir_copy_relation(
							    ir, td,
							    sdt->relations[q],
							    false);
						added = true;
						/* ir->defs moved */
						r = &ir->defs[i].relations[k];
					}
					if (td && at->relation &&
					    !ir_find_rel(td, at->relation) &&
					    sdt) {
						const schema_relation *x =
						    schema_find_relation(
						        sdt, at->relation);
						if (x) {
							ir_copy_relation(
							    ir, td, x, false);
							added = true;
						}
					}
					if (at->caveat) {
						const schema_caveat *c =
						    schema_find_caveat(
						        s, at->caveat);
						size_t before = ir->ncaveats;
						if (c)
							ir_add_caveat(ir, c);
						added |= ir->ncaveats != before;
					}
					if (at->expiration)
						ir->expiration = true;
				}
			}
		}
	}
}

static void ir_print(const ir_schema *ir, strbuf *out)
{
	if (ir->expiration)
		strbuf_puts(out, "use expiration\n\n");
	for (size_t i = 0; i < ir->ncaveats; i++) {
		const schema_caveat *c = ir->caveats[i];
		strbuf_printf(out, "caveat %s(", c->name);
		for (size_t k = 0; k < c->nparams; k++)
			strbuf_printf(out, "%s%s %s", k ? ", " : "",
			              c->params[k].name, c->params[k].type);
		strbuf_printf(out, ") {\n\t%s\n}\n\n", c->expression);
	}
	for (size_t i = 0; i < ir->ndefs; i++) {
		const ir_definition *d = &ir->defs[i];
		strbuf_printf(out, "definition %s {\n", d->name);
		for (size_t k = 0; k < d->nrelations; k++) {
			const ir_relation *r = &d->relations[k];
			if (r->is_permission) {
				strbuf_printf(out, "\tpermission %s = %s\n",
				              r->name, r->expr);
				continue;
			}
			strbuf_printf(out, "\trelation %s: ", r->name);
			for (size_t t = 0; t < r->ntypes; t++)
				strbuf_printf(out, "%s%s", t ? " | " : "",
				              r->types[t]);
			strbuf_puts(out, "\n");
		}
		strbuf_puts(out, "}\n\n");
	}
}

static void ir_free(ir_schema *ir)
{
	for (size_t i = 0; i < ir->ndefs; i++)
		free(ir->defs[i].relations);
	free(ir->defs);
	free(ir->caveats);
}

/* ------------------------------------------------------------ blockers */

/* Something the target removes that relationships still use. */
typedef struct blocker {
	const schema_change *change;
	store_probe probe;
	const char *description;
	pemba_filter filter;
	const char *allowed_type; /* NULL: the filter says it all */
	pemba_relationship_count *counts;
	size_t ncounts, cap;
	uint64_t total;
} blocker;

typedef struct count_ctx {
	blocker *b;
	arena *a;
} count_ctx;

static int collect_count(void *ctx, const store_group_count *g)
{
	count_ctx *c = ctx;
	blocker *b = c->b;
	if (b->ncounts == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 8;
		b->counts = xrealloc(b->counts, b->cap * sizeof(*b->counts));
	}
	pemba_relationship_count *x = &b->counts[b->ncounts++];
	x->resource_type = arena_strdup(c->a, g->resource_type);
	x->relation = arena_strdup(c->a, g->relation);
	x->subject_type = arena_strdup(c->a, g->subject_type);
	x->subject_relation = arena_strdup(c->a, g->subject_relation);
	x->wildcard = g->wildcard;
	x->caveat_name = arena_strdup(c->a, g->caveat_name);
	x->count = g->count;
	b->total += g->count;
	return 0;
}

/* ------------------------------------------------------------- plan */

typedef struct plan_internal {
	arena *a;
	pemba_schema_change *blocks[8]; /* malloc'd change lists */
	size_t nblocks;
} plan_internal;

static pemba_plan_step *add_step(pemba_schema_plan *p, size_t *cap)
{
	if (p->nsteps == *cap) {
		*cap = *cap ? *cap * 2 : 8;
		p->steps = xrealloc(p->steps, *cap * sizeof(*p->steps));
	}
	pemba_plan_step *s = &p->steps[p->nsteps++];
	memset(s, 0, sizeof(*s));
	return s;
}

/* A WRITE_SCHEMA step for `text` (arena copy) with the diff from `from`. */
static void add_write_step(pemba_schema_plan *p, size_t *cap, plan_internal *in,
                           const schema *from, const schema *to,
                           const char *text, const char *description)
{
	pemba_plan_step *s = add_step(p, cap);
	s->kind = PEMBA_PLAN_WRITE_SCHEMA;
	s->description = arena_strdup(in->a, description);
	s->schema = arena_strdup(in->a, text);
	schema_diff *d = schema_diff_compute(from, to);
	s->nchanges = core_pack_changes(d, &s->changes);
	if (s->changes && in->nblocks < 8)
		in->blocks[in->nblocks++] = s->changes;
	schema_diff_free(d);
}

void pemba_schema_plan_free(pemba_schema_plan *plan)
{
	if (!plan)
		return;
	plan_internal *in = plan->internal;
	for (size_t i = 0; i < plan->nsteps; i++)
		if (plan->steps[i].kind == PEMBA_PLAN_DELETE_RELATIONSHIPS)
			free(plan->steps[i].counts);
	if (in) {
		for (size_t i = 0; i < in->nblocks; i++)
			free(in->blocks[i]);
		arena_destroy(in->a);
		free(in);
	}
	free(plan->changes);
	free(plan->steps);
	free(plan);
}

/* Fills the blockers of diff d (removals that relationships still use),
 * counted at revision `at`. */
static int find_blockers(pemba_db *db, pemba_revision at, const schema_diff *d,
                         arena *a, blocker **out, size_t *nout,
                         pemba_error *err)
{
	blocker *v = xcalloc(2 * d->nchanges + 1, sizeof(*v));
	size_t n = 0;
	for (size_t i = 0; i < d->nchanges; i++) {
		const schema_change *c = &d->changes[i];
		/* Copies: the plan outlives the diff and the cached schema. */
		const char *def = arena_strdup(a, c->definition);
		const char *name = arena_strdup(a, c->name);
		blocker *b;
		switch (c->kind) {
		case SCHEMA_CHANGE_REMOVE_DEFINITION:
			b = &v[n++];
			b->change = c;
			b->probe.resource_type = def;
			b->filter.resource_type = def;
			b->description = arena_printf(
			    a, "delete every relationship of definition `%s`",
			    def);
			break;
		case SCHEMA_CHANGE_REMOVE_RELATION:
		case SCHEMA_CHANGE_RELATION_TO_PERMISSION:
			b = &v[n++];
			b->change = c;
			b->probe.resource_type = def;
			b->probe.relation = name;
			b->filter.resource_type = def;
			b->filter.relation = name;
			b->description = arena_printf(
			    a, "delete the relationships of relation `%s#%s`",
			    def, name);
			/* Rows that use it as a subject relation. */
			b = &v[n++];
			b->change = c;
			b->probe.subject_type = def;
			b->probe.subject_relation = name;
			b->description = arena_printf(
			    a,
			    "delete the relationships whose subject is a "
			    "`%s#%s` set",
			    def, name);
			break;
		case SCHEMA_CHANGE_REMOVE_ALLOWED_TYPE:
			b = &v[n++];
			b->change = c;
			core_probe_for_type(def, name, c->old_type, &b->probe);
			b->probe.subject_type =
			    arena_strdup(a, b->probe.subject_type);
			b->probe.subject_relation =
			    arena_strdup(a, b->probe.subject_relation);
			b->probe.caveat_name =
			    arena_strdup(a, b->probe.caveat_name);
			b->filter.resource_type = def;
			b->filter.relation = name;
			b->filter.subject_type = b->probe.subject_type;
			b->filter.subject_relation = b->probe.subject_relation;
			b->allowed_type = arena_strdup(a, c->detail);
			b->description = arena_printf(
			    a,
			    "delete the relationships of relation `%s#%s` "
			    "with subject type `%s`",
			    def, name, c->detail);
			break;
		default:
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		count_ctx cc = {.b = &v[i], .a = a};
		int rc = store_count_groups(db->st, at, &v[i].probe,
		                            collect_count, &cc, err);
		if (rc < 0) {
			for (size_t k = 0; k < n; k++)
				free(v[k].counts);
			free(v);
			return rc;
		}
	}
	*out = v;
	*nout = n;
	return PEMBA_OK;
}

int pemba_plan_schema(pemba_db *db, const char *target, size_t len,
                      pemba_schema_plan **out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, target);
	CORE_REQUIRE(err, out);
	*out = NULL;
	if (len > CORE_MAX_SCHEMA_BYTES)
		return error_set(err, PEMBA_ELIMIT,
		                 "schema text is %zu bytes; at most %u are "
		                 "accepted",
		                 len, CORE_MAX_SCHEMA_BYTES);
	schema *t;
	int rc = schema_compile(target, len, &t, err);
	if (rc < 0)
		return rc;
	pemba_revision head;
	const schema *s = NULL;
	if ((rc = store_head_revision(db->st, &head, err)) < 0 ||
	    (rc = core_schema_at(db, head, &s, err)) < 0) {
		schema_free(t);
		return rc;
	}
	schema_diff *d = schema_diff_compute(s, t);
	for (size_t i = 0; i < d->nchanges; i++) {
		const schema_change *c = &d->changes[i];
		if (c->kind == SCHEMA_CHANGE_REMOVE_CAVEAT_PARAMETER ||
		    c->kind == SCHEMA_CHANGE_CHANGE_CAVEAT_PARAMETER_TYPE) {
			rc = error_set(
			    err, PEMBA_EUNSUPPORTED,
			    "no plan: the target %s parameter `%s` of caveat "
			    "`%s`, which SpiceDB never allows; add a caveat "
			    "with a new name, move the allowed types to it, "
			    "then remove the old one",
			    c->kind == SCHEMA_CHANGE_REMOVE_CAVEAT_PARAMETER
			        ? "removes"
			        : "changes the type of",
			    c->name, c->definition);
			schema_diff_free(d);
			schema_free(t);
			return rc;
		}
	}

	pemba_schema_plan *p = xcalloc(1, sizeof(*p));
	plan_internal *in = xcalloc(1, sizeof(*in));
	in->a = arena_create(0);
	p->internal = in;
	p->planned_at = head;
	p->nchanges = core_pack_changes(d, &p->changes);
	size_t cap = 0;

	blocker *bl = NULL;
	size_t nbl = 0;
	if (s && (rc = find_blockers(db, head, d, in->a, &bl, &nbl, err)) < 0)
		goto fail;
	schema *mid = NULL; /* the intermediate schema, if any */
	size_t nblocking = 0;
	for (size_t i = 0; i < nbl; i++)
		if (bl[i].total > 0)
			nblocking++;

	if (nblocking > 0) {
		/* The intermediate schema: the target plus whatever still
		 * has relationships. */
		ir_schema ir = {.a = in->a};
		ir_from_schema(&ir, t);
		for (size_t i = 0; i < nbl; i++) {
			const blocker *b = &bl[i];
			const schema_change *c = b->change;
			if (b->total == 0)
				continue;
			const schema_definition *sd =
			    schema_find_definition(s, c->definition);
			ir_definition *id = ir_find_def(&ir, c->definition);
			if (c->kind == SCHEMA_CHANGE_REMOVE_DEFINITION) {
				if (!id && sd) {
					id = ir_add_def(&ir, sd->name);
					for (size_t q = 0; q < sd->nrelations;
					     q++)
						ir_copy_relation(
						    &ir, id, sd->relations[q],
						    false);
				}
			} else if (c->kind ==
			               SCHEMA_CHANGE_REMOVE_ALLOWED_TYPE &&
			           id) {
				ir_relation *r = ir_find_rel(id, c->name);
				if (r && !r->is_permission)
					ir_add_type(&ir, r, c->detail);
			} else if (id && c->old_relation) {
				ir_relation *r = ir_find_rel(id, c->name);
				if (r) { /* now a permission: keep the rel */
					r->is_permission = false;
					r->expr = NULL;
					r->ntypes = 0;
					for (size_t q = 0;
					     q < c->old_relation->ntypes; q++)
						ir_add_type(
						    &ir, r,
						    text_of_type(
						        ir.a, &c->old_relation
						                   ->types[q]));
				} else {
					ir_copy_relation(
					    &ir, id, c->old_relation, false);
				}
			}
		}
		ir_close_over(&ir, s);
		strbuf text;
		strbuf_init(&text);
		ir_print(&ir, &text);
		ir_free(&ir);
		pemba_error merr;
		if (schema_compile(text.data ? text.data : "", text.len, &mid,
		                   &merr) == 0) {
			schema_diff *md = schema_diff_compute(s, mid);
			if (md->nchanges > 0)
				add_write_step(
				    p, &cap, in, s, mid, text.data,
				    "write an intermediate schema: the "
				    "target's "
				    "permissions and additions, keeping what "
				    "still has relationships");
			schema_diff_free(md);
		}
		strbuf_free(&text);
		for (size_t i = 0; i < nbl; i++) {
			blocker *b = &bl[i];
			if (b->total == 0)
				continue;
			if (b->filter.resource_type) {
				pemba_plan_step *st = add_step(p, &cap);
				st->kind = PEMBA_PLAN_DELETE_RELATIONSHIPS;
				st->description = arena_printf(
				    in->a, "%s (%llu)", b->description,
				    (unsigned long long)b->total);
				st->filter = b->filter;
				st->allowed_type = b->allowed_type;
				st->counts = b->counts;
				st->ncounts = b->ncounts;
				st->total = b->total;
				b->counts = NULL;
				continue;
			}
			/* Rows using a removed relation as their subject
			 * relation: one step per resource relation that has
			 * them (counts come grouped by it). */
			for (size_t k = 0; k < b->ncounts;) {
				const pemba_relationship_count *c0 =
				    &b->counts[k];
				size_t e = k;
				uint64_t total = 0;
				while (e < b->ncounts &&
				       !strcmp(b->counts[e].resource_type,
				               c0->resource_type) &&
				       !strcmp(b->counts[e].relation,
				               c0->relation))
					total += b->counts[e++].count;
				pemba_plan_step *st = add_step(p, &cap);
				st->kind = PEMBA_PLAN_DELETE_RELATIONSHIPS;
				st->description = arena_printf(
				    in->a, "%s under `%s#%s` (%llu)",
				    b->description, c0->resource_type,
				    c0->relation, (unsigned long long)total);
				st->filter.resource_type = c0->resource_type;
				st->filter.relation = c0->relation;
				st->filter.subject_type = b->probe.subject_type;
				st->filter.subject_relation =
				    b->probe.subject_relation;
				st->counts =
				    xmalloc((e - k) * sizeof(*st->counts));
				memcpy(st->counts, c0,
				       (e - k) * sizeof(*st->counts));
				st->ncounts = e - k;
				st->total = total;
				k = e;
			}
		}
	}
	if (d->nchanges > 0 || !s) {
		strbuf sb;
		strbuf_init(&sb);
		schema_print(t, &sb);
		add_write_step(p, &cap, in, mid ? mid : s, t,
		               sb.data ? sb.data : "",
		               "write the target schema");
		strbuf_free(&sb);
	}
	for (size_t i = 0; i < nbl; i++)
		free(bl[i].counts);
	free(bl);
	schema_free(mid);
	schema_diff_free(d);
	schema_free(t);
	*out = p;
	return PEMBA_OK;
fail:
	for (size_t i = 0; i < nbl; i++)
		free(bl[i].counts);
	free(bl);
	schema_diff_free(d);
	schema_free(t);
	pemba_schema_plan_free(p);
	return rc;
}
