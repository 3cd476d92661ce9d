/*
 * service_schema.c -- authzed.api.v1.SchemaService: ReadSchema,
 * WriteSchema, and reflection: ReflectSchema, DiffSchema,
 * ComputablePermissions, DependentRelations; and pemba.v1's ReadSchemaAt
 * (ReadSchema with a consistency).
 *
 * Reflection works on the compiled schema, so these handlers compile the
 * text pemba_read_schema returns with the schema layer (schema.h: pure
 * functions, no state), the one place the API reads schema structure.
 */
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "schema/schema.h"
#include "util/arena.h"

/* Answers a ReadSchemaResponse with the canonical text of the schema at
 * the revision `consistency` resolves to (NULL: the head), and ends the
 * request. */
static void read_schema_at(grpc_call *call, svc_request *rq,
                           const Authzed__Api__V1__Consistency *consistency)
{
	pemba_error err = {0};
	pemba_revision at = 0;
	char *text = NULL;
	int rc = svc_resolve_consistency(rq->db, consistency, &at, &err);
	if (rc == 0)
		rc = pemba_read_schema(rq->db, at, &text, &err);
	if (rc == PEMBA_ENOTFOUND) {
		/* SpiceDB's wording for a datastore without a schema. */
		grpc_call_finish(call, GRPC_STATUS_NOT_FOUND,
		                 "No schema has been defined; please call "
		                 "WriteSchema to start");
	} else if (rc < 0) {
		svc_finish_error(call, &err);
	} else {
		Authzed__Api__V1__ReadSchemaResponse resp =
		    AUTHZED__API__V1__READ_SCHEMA_RESPONSE__INIT;
		svc_zedtoken zt;
		resp.schema_text = text;
		resp.read_at = svc_zedtoken_make(&zt, rq->db, at);
		svc_reply(call, &resp.base);
		pemba_free(text);
	}
	svc_end(rq);
}

/* ReadSchema: the canonical text of the schema at the head. */
static void handle_read_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__read_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	read_schema_at(call, &req, NULL);
}

/* pemba.v1.MigrationService/ReadSchemaAt: ReadSchema with a consistency
 * (`pemba schema read --consistency-*`). */
static void handle_read_schema_at(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx, &pemba__v1__read_schema_at_request__descriptor,
	              0, &req) != 0)
		return;
	const Pemba__V1__ReadSchemaAtRequest *m =
	    (const Pemba__V1__ReadSchemaAtRequest *)req.message;
	read_schema_at(call, &req, m->consistency);
}

/* WriteSchema: parses, type-checks and stores the schema in a new
 * revision (SpiceDB's rules for what may change are core's business). */
static void handle_write_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__write_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	if (svc_refuse_write(&req)) {
		svc_end(&req);
		return;
	}
	const Authzed__Api__V1__WriteSchemaRequest *m =
	    (const Authzed__Api__V1__WriteSchemaRequest *)req.message;
	const char *text = m->schema ? m->schema : "";
	pemba_error err = {0};
	pemba_revision rev = 0;
	if (pemba_write_schema(req.db, text, strlen(text), &rev, &err) < 0) {
		svc_finish_error(call, &err);
	} else {
		Authzed__Api__V1__WriteSchemaResponse resp =
		    AUTHZED__API__V1__WRITE_SCHEMA_RESPONSE__INIT;
		svc_zedtoken zt;
		resp.written_at = svc_zedtoken_make(&zt, req.db, rev);
		svc_reply(call, &resp.base);
	}
	svc_end(&req);
}

/* ===================================================================== */
/* Reflection                                                            */
/* ===================================================================== */

/* The schema at a Consistency, compiled.  0 and *out (caller frees), or
 * the call is finished with the error and -1 returned. */
static int load_schema(svc_request *req,
                       const Authzed__Api__V1__Consistency *consistency,
                       schema **out, pemba_revision *at)
{
	pemba_error err = {0};
	char *text = NULL;
	*out = NULL;
	int rc = svc_resolve_consistency(req->db, consistency, at, &err);
	if (rc == 0)
		rc = pemba_read_schema(req->db, *at, &text, &err);
	if (rc == PEMBA_ENOTFOUND) {
		grpc_call_finish(req->call, GRPC_STATUS_NOT_FOUND,
		                 "No schema has been defined; please call "
		                 "WriteSchema to start");
		return -1;
	}
	if (rc == 0)
		rc = schema_compile(text, strlen(text), out, &err);
	pemba_free(text);
	if (rc < 0) {
		svc_finish_error(req->call, &err);
		return -1;
	}
	return 0;
}

static char *comment_text(arena *a, const char *const *comments, size_t n)
{
	strbuf sb;
	strbuf_init(&sb);
	for (size_t i = 0; i < n; i++) {
		if (i)
			strbuf_putc(&sb, '\n');
		strbuf_puts(&sb, comments[i]);
	}
	char *s = arena_strndup(a, sb.data ? sb.data : "", sb.len);
	strbuf_free(&sb);
	return s;
}

static Authzed__Api__V1__ReflectionTypeReference *
reflect_type(arena *a, const schema_allowed_type *t)
{
	Authzed__Api__V1__ReflectionTypeReference *m =
	    arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_type_reference__init(m);
	m->subject_definition_name = (char *)t->type;
	m->optional_caveat_name = (char *)(t->caveat ? t->caveat : "");
	if (t->wildcard) {
		m->typeref_case =
		    AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_IS_PUBLIC_WILDCARD;
		m->is_public_wildcard = 1;
	} else if (t->relation) {
		m->typeref_case =
		    AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_OPTIONAL_RELATION_NAME;
		m->optional_relation_name = (char *)t->relation;
	} else {
		m->typeref_case =
		    AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_IS_TERMINAL_SUBJECT;
		m->is_terminal_subject = 1;
	}
	return m;
}

static Authzed__Api__V1__ReflectionRelation *
reflect_relation(arena *a, const schema_definition *d, const schema_relation *r)
{
	Authzed__Api__V1__ReflectionRelation *m = arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_relation__init(m);
	m->name = (char *)r->name;
	m->comment = comment_text(a, r->comments, r->ncomments);
	m->parent_definition_name = (char *)d->name;
	m->n_subject_types = r->ntypes;
	m->subject_types =
	    arena_alloc(a, (r->ntypes + 1) * sizeof(*m->subject_types));
	for (size_t i = 0; i < r->ntypes; i++)
		m->subject_types[i] = reflect_type(a, &r->types[i]);
	return m;
}

static Authzed__Api__V1__ReflectionPermission *
reflect_permission(arena *a, const schema_definition *d,
                   const schema_relation *r)
{
	Authzed__Api__V1__ReflectionPermission *m = arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_permission__init(m);
	m->name = (char *)r->name;
	m->comment = comment_text(a, r->comments, r->ncomments);
	m->parent_definition_name = (char *)d->name;
	return m;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return !prefix || !*prefix || strncmp(s, prefix, strlen(prefix)) == 0;
}

/* A definition with the relations and permissions the filter lets
 * through (relation_filter / permission_filter: name prefixes, NULL or
 * "" for all). */
static Authzed__Api__V1__ReflectionDefinition *
reflect_definition(arena *a, const schema_definition *d,
                   const char *relation_filter, const char *permission_filter)
{
	Authzed__Api__V1__ReflectionDefinition *m = arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_definition__init(m);
	m->name = (char *)d->name;
	m->comment = comment_text(a, d->comments, d->ncomments);
	m->relations =
	    arena_alloc(a, (d->nrelations + 1) * sizeof(*m->relations));
	m->permissions =
	    arena_alloc(a, (d->nrelations + 1) * sizeof(*m->permissions));
	for (size_t i = 0; i < d->nrelations; i++) {
		const schema_relation *r = d->relations[i];
		if (r->is_permission) {
			if (has_prefix(r->name, permission_filter))
				m->permissions[m->n_permissions++] =
				    reflect_permission(a, d, r);
		} else if (has_prefix(r->name, relation_filter)) {
			m->relations[m->n_relations++] =
			    reflect_relation(a, d, r);
		}
	}
	return m;
}

static Authzed__Api__V1__ReflectionCaveatParameter *
reflect_param(arena *a, const schema_caveat *c, const schema_caveat_param *p)
{
	Authzed__Api__V1__ReflectionCaveatParameter *m =
	    arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_caveat_parameter__init(m);
	m->name = (char *)p->name;
	m->type = (char *)p->type;
	m->parent_caveat_name = (char *)c->name;
	return m;
}

static Authzed__Api__V1__ReflectionCaveat *
reflect_caveat(arena *a, const schema_caveat *c)
{
	Authzed__Api__V1__ReflectionCaveat *m = arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_caveat__init(m);
	m->name = (char *)c->name;
	m->comment = comment_text(a, c->comments, c->ncomments);
	m->expression = (char *)c->expression;
	m->n_parameters = c->nparams;
	m->parameters =
	    arena_alloc(a, (c->nparams + 1) * sizeof(*m->parameters));
	for (size_t i = 0; i < c->nparams; i++)
		m->parameters[i] = reflect_param(a, c, &c->params[i]);
	return m;
}

/* ReflectSchema: the schema's structure, optionally filtered (a
 * definition or caveat is included when any filter admits it). */
static void handle_reflect_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__reflect_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	const Authzed__Api__V1__ReflectSchemaRequest *m =
	    (const Authzed__Api__V1__ReflectSchemaRequest *)req.message;
	schema *sc;
	pemba_revision at;
	if (load_schema(&req, m->consistency, &sc, &at) != 0) {
		svc_end(&req);
		return;
	}
	arena *a = arena_create(0);
	Authzed__Api__V1__ReflectSchemaResponse resp =
	    AUTHZED__API__V1__REFLECT_SCHEMA_RESPONSE__INIT;
	resp.definitions =
	    arena_alloc(a, (sc->ndefinitions + 1) * sizeof(*resp.definitions));
	resp.caveats =
	    arena_alloc(a, (sc->ncaveats + 1) * sizeof(*resp.caveats));
	for (size_t i = 0; i < sc->ndefinitions; i++) {
		const schema_definition *d = sc->definitions[i];
		bool take = m->n_optional_filters == 0;
		const char *rf = NULL, *pf = NULL;
		for (size_t k = 0; k < m->n_optional_filters; k++) {
			const Authzed__Api__V1__ReflectionSchemaFilter *f =
			    m->optional_filters[k];
			if (!*f->optional_definition_name_filter &&
			    *f->optional_caveat_name_filter)
				continue;
			if (has_prefix(d->name,
			               f->optional_definition_name_filter)) {
				take = true;
				rf = f->optional_relation_name_filter;
				pf = f->optional_permission_name_filter;
			}
		}
		if (take)
			resp.definitions[resp.n_definitions++] =
			    reflect_definition(a, d, rf, pf);
	}
	for (size_t i = 0; i < sc->ncaveats; i++) {
		const schema_caveat *c = sc->caveats[i];
		bool take = m->n_optional_filters == 0;
		for (size_t k = 0; k < m->n_optional_filters; k++) {
			const char *cf =
			    m->optional_filters[k]->optional_caveat_name_filter;
			if (*cf && has_prefix(c->name, cf))
				take = true;
		}
		if (take)
			resp.caveats[resp.n_caveats++] = reflect_caveat(a, c);
	}
	svc_zedtoken zt;
	resp.read_at = svc_zedtoken_make(&zt, req.db, at);
	svc_reply(call, &resp.base);
	arena_destroy(a);
	schema_free(sc);
	svc_end(&req);
}

/* ------------------------------------------------- dependency graph */

/* A (definition, relation) pair, by pointer into one compiled schema. */
typedef struct rel_set {
	const schema_relation **v;
	size_t n, cap;
} rel_set;

static bool rel_set_add(rel_set *s, const schema_relation *r)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i] == r)
			return false;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = r;
	return true;
}

/* Adds to `out` what expression e reads directly: referenced relations
 * and permissions, tupleset relations, and each arrow target on the
 * tupleset's subject types. */
static void expr_reads(const schema *sc, const schema_expr *e, rel_set *out)
{
	switch (e->kind) {
	case SCHEMA_EXPR_NIL:
		return;
	case SCHEMA_EXPR_REF:
		if (e->ref)
			rel_set_add(out, e->ref);
		return;
	case SCHEMA_EXPR_ARROW:
	case SCHEMA_EXPR_ARROW_ANY:
	case SCHEMA_EXPR_ARROW_ALL:
		if (!e->tupleset)
			return;
		rel_set_add(out, e->tupleset);
		for (size_t i = 0; i < e->tupleset->ntypes; i++) {
			const schema_definition *d = schema_find_definition(
			    sc, e->tupleset->types[i].type);
			const schema_relation *t =
			    d ? schema_find_relation(d, e->target) : NULL;
			if (t)
				rel_set_add(out, t);
		}
		return;
	default:
		for (size_t i = 0; i < e->nchildren; i++)
			expr_reads(sc, e->children[i], out);
	}
}

/* Everything permission p depends on, transitively. */
static void dependencies(const schema *sc, const schema_relation *p,
                         rel_set *out)
{
	rel_set todo = {0};
	rel_set_add(&todo, p);
	for (size_t i = 0; i < todo.n; i++) {
		const schema_relation *r = todo.v[i];
		if (!r->is_permission)
			continue;
		rel_set direct = {0};
		expr_reads(sc, r->expr, &direct);
		for (size_t k = 0; k < direct.n; k++)
			if (direct.v[k] != p && rel_set_add(out, direct.v[k]))
				rel_set_add(&todo, direct.v[k]);
		free(direct.v);
	}
	free(todo.v);
}

static int compare_refs(const void *a, const void *b)
{
	const Authzed__Api__V1__ReflectionRelationReference *x =
	    *(Authzed__Api__V1__ReflectionRelationReference *const *)a;
	const Authzed__Api__V1__ReflectionRelationReference *y =
	    *(Authzed__Api__V1__ReflectionRelationReference *const *)b;
	int c = strcmp(x->definition_name, y->definition_name);
	return c ? c : strcmp(x->relation_name, y->relation_name);
}

static Authzed__Api__V1__ReflectionRelationReference **
refs_of(arena *a, const rel_set *s, size_t *n_out)
{
	Authzed__Api__V1__ReflectionRelationReference **v =
	    arena_alloc(a, (s->n + 1) * sizeof(*v));
	for (size_t i = 0; i < s->n; i++) {
		v[i] = arena_alloc(a, sizeof(*v[i]));
		authzed__api__v1__reflection_relation_reference__init(v[i]);
		v[i]->definition_name = (char *)s->v[i]->definition->name;
		v[i]->relation_name = (char *)s->v[i]->name;
		v[i]->is_permission = s->v[i]->is_permission;
	}
	qsort(v, s->n, sizeof(*v), compare_refs);
	*n_out = s->n;
	return v;
}

/* Finds definition#name, or finishes the call (FAILED_PRECONDITION, as
 * for any unknown definition or relation) and returns NULL. */
static const schema_relation *find_or_fail(grpc_call *call, const schema *sc,
                                           const char *def, const char *name)
{
	const schema_definition *d = schema_find_definition(sc, def);
	if (!d) {
		svc_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
		         "object definition `%s` not found", def);
		return NULL;
	}
	const schema_relation *r = schema_find_relation(d, name);
	if (!r)
		svc_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
		         "relation/permission `%s` not found under definition "
		         "`%s`",
		         name, def);
	return r;
}

/* ComputablePermissions: every permission whose value depends on
 * definition#relation, optionally only in one definition. */
static void handle_computable_permissions(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(
	        call, ctx,
	        &authzed__api__v1__computable_permissions_request__descriptor,
	        0, &req) != 0)
		return;
	const Authzed__Api__V1__ComputablePermissionsRequest *m =
	    (const Authzed__Api__V1__ComputablePermissionsRequest *)req.message;
	schema *sc;
	pemba_revision at;
	if (load_schema(&req, m->consistency, &sc, &at) != 0) {
		svc_end(&req);
		return;
	}
	const schema_relation *target =
	    find_or_fail(call, sc, m->definition_name, m->relation_name);
	if (target) {
		rel_set found = {0};
		for (size_t i = 0; i < sc->ndefinitions; i++) {
			const schema_definition *d = sc->definitions[i];
			if (*m->optional_definition_name_filter &&
			    strcmp(d->name, m->optional_definition_name_filter))
				continue;
			for (size_t k = 0; k < d->nrelations; k++) {
				const schema_relation *p = d->relations[k];
				if (!p->is_permission || p == target)
					continue;
				rel_set deps = {0};
				dependencies(sc, p, &deps);
				for (size_t q = 0; q < deps.n; q++)
					if (deps.v[q] == target)
						rel_set_add(&found, p);
				free(deps.v);
			}
		}
		arena *a = arena_create(0);
		Authzed__Api__V1__ComputablePermissionsResponse resp =
		    AUTHZED__API__V1__COMPUTABLE_PERMISSIONS_RESPONSE__INIT;
		resp.permissions = refs_of(a, &found, &resp.n_permissions);
		svc_zedtoken zt;
		resp.read_at = svc_zedtoken_make(&zt, req.db, at);
		svc_reply(call, &resp.base);
		arena_destroy(a);
		free(found.v);
	}
	schema_free(sc);
	svc_end(&req);
}

/* DependentRelations: every relation and permission a permission's value
 * depends on. */
static void handle_dependent_relations(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(
	        call, ctx,
	        &authzed__api__v1__dependent_relations_request__descriptor, 0,
	        &req) != 0)
		return;
	const Authzed__Api__V1__DependentRelationsRequest *m =
	    (const Authzed__Api__V1__DependentRelationsRequest *)req.message;
	schema *sc;
	pemba_revision at;
	if (load_schema(&req, m->consistency, &sc, &at) != 0) {
		svc_end(&req);
		return;
	}
	const schema_relation *p =
	    find_or_fail(call, sc, m->definition_name, m->permission_name);
	if (p && !p->is_permission) {
		svc_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
		         "`%s#%s` is a relation, not a permission",
		         m->definition_name, m->permission_name);
	} else if (p) {
		rel_set deps = {0};
		dependencies(sc, p, &deps);
		arena *a = arena_create(0);
		Authzed__Api__V1__DependentRelationsResponse resp =
		    AUTHZED__API__V1__DEPENDENT_RELATIONS_RESPONSE__INIT;
		resp.relations = refs_of(a, &deps, &resp.n_relations);
		svc_zedtoken zt;
		resp.read_at = svc_zedtoken_make(&zt, req.db, at);
		svc_reply(call, &resp.base);
		arena_destroy(a);
		free(deps.v);
	}
	schema_free(sc);
	svc_end(&req);
}

/* ------------------------------------------------------------ DiffSchema */

static Authzed__Api__V1__ReflectionSchemaDiff *new_diff(arena *a, int kind)
{
	Authzed__Api__V1__ReflectionSchemaDiff *m = arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_schema_diff__init(m);
	m->diff_case = (Authzed__Api__V1__ReflectionSchemaDiff__DiffCase)kind;
	return m;
}

static Authzed__Api__V1__ReflectionRelationSubjectTypeChange *
type_change(arena *a, const schema_definition *d, const schema_relation *r,
            const schema_allowed_type *t)
{
	Authzed__Api__V1__ReflectionRelationSubjectTypeChange *m =
	    arena_alloc(a, sizeof(*m));
	authzed__api__v1__reflection_relation_subject_type_change__init(m);
	m->relation = reflect_relation(a, d, r);
	m->changed_subject_type = reflect_type(a, t);
	return m;
}

/* One schema_change as the ReflectionSchemaDiff SpiceDB sends for it;
 * NULL for changes authzed.api.v1 has no case for (use expiration).  A
 * relation that becomes a permission is a removal plus an addition. */
static size_t diff_to_proto(arena *a, const schema *old, const schema *new,
                            const schema_change *c,
                            Authzed__Api__V1__ReflectionSchemaDiff **out)
{
	typedef Authzed__Api__V1__ReflectionSchemaDiff D;
	const schema_definition *od =
	    old ? schema_find_definition(old, c->definition) : NULL;
	const schema_definition *nd =
	    new ? schema_find_definition(new, c->definition) : NULL;
	const schema_caveat *oc =
	    old ? schema_find_caveat(old, c->definition) : NULL;
	const schema_caveat *nc =
	    new ? schema_find_caveat(new, c->definition) : NULL;
	D *m;
	switch (c->kind) {
	case SCHEMA_CHANGE_ADD_DEFINITION:
		m = new_diff(a, 1);
		m->definition_added = reflect_definition(a, nd, NULL, NULL);
		break;
	case SCHEMA_CHANGE_REMOVE_DEFINITION:
		m = new_diff(a, 2);
		m->definition_removed = reflect_definition(a, od, NULL, NULL);
		break;
	case SCHEMA_CHANGE_ADD_RELATION:
		m = new_diff(a, 4);
		m->relation_added = reflect_relation(a, nd, c->new_relation);
		break;
	case SCHEMA_CHANGE_REMOVE_RELATION:
		m = new_diff(a, 5);
		m->relation_removed = reflect_relation(a, od, c->old_relation);
		break;
	case SCHEMA_CHANGE_ADD_ALLOWED_TYPE:
		m = new_diff(a, 7);
		m->relation_subject_type_added =
		    type_change(a, nd, c->new_relation, c->new_type);
		break;
	case SCHEMA_CHANGE_REMOVE_ALLOWED_TYPE:
		m = new_diff(a, 8);
		m->relation_subject_type_removed =
		    type_change(a, nd, c->new_relation, c->old_type);
		break;
	case SCHEMA_CHANGE_ADD_PERMISSION:
		m = new_diff(a, 9);
		m->permission_added =
		    reflect_permission(a, nd, c->new_relation);
		break;
	case SCHEMA_CHANGE_REMOVE_PERMISSION:
		m = new_diff(a, 10);
		m->permission_removed =
		    reflect_permission(a, od, c->old_relation);
		break;
	case SCHEMA_CHANGE_CHANGE_PERMISSION:
		m = new_diff(a, 12);
		m->permission_expr_changed =
		    reflect_permission(a, nd, c->new_relation);
		break;
	case SCHEMA_CHANGE_RELATION_TO_PERMISSION:
		out[0] = new_diff(a, 5);
		out[0]->relation_removed =
		    reflect_relation(a, od, c->old_relation);
		out[1] = new_diff(a, 9);
		out[1]->permission_added =
		    reflect_permission(a, nd, c->new_relation);
		return 2;
	case SCHEMA_CHANGE_PERMISSION_TO_RELATION:
		out[0] = new_diff(a, 10);
		out[0]->permission_removed =
		    reflect_permission(a, od, c->old_relation);
		out[1] = new_diff(a, 4);
		out[1]->relation_added =
		    reflect_relation(a, nd, c->new_relation);
		return 2;
	case SCHEMA_CHANGE_ADD_CAVEAT:
		m = new_diff(a, 13);
		m->caveat_added = reflect_caveat(a, nc);
		break;
	case SCHEMA_CHANGE_REMOVE_CAVEAT:
		m = new_diff(a, 14);
		m->caveat_removed = reflect_caveat(a, oc);
		break;
	case SCHEMA_CHANGE_CHANGE_CAVEAT:
		m = new_diff(a, 16);
		m->caveat_expr_changed = reflect_caveat(a, nc);
		break;
	case SCHEMA_CHANGE_ADD_CAVEAT_PARAMETER:
	case SCHEMA_CHANGE_REMOVE_CAVEAT_PARAMETER: {
		bool add = c->kind == SCHEMA_CHANGE_ADD_CAVEAT_PARAMETER;
		const schema_caveat *cv = add ? nc : oc;
		const schema_caveat_param *p = NULL;
		for (size_t i = 0; i < cv->nparams; i++)
			if (!strcmp(cv->params[i].name, c->name))
				p = &cv->params[i];
		m = new_diff(a, add ? 17 : 18);
		m->caveat_parameter_added = reflect_param(a, cv, p);
		break;
	}
	case SCHEMA_CHANGE_CHANGE_CAVEAT_PARAMETER_TYPE: {
		const schema_caveat_param *p = NULL, *q = NULL;
		for (size_t i = 0; i < nc->nparams; i++)
			if (!strcmp(nc->params[i].name, c->name))
				p = &nc->params[i];
		for (size_t i = 0; i < oc->nparams; i++)
			if (!strcmp(oc->params[i].name, c->name))
				q = &oc->params[i];
		m = new_diff(a, 19);
		Authzed__Api__V1__ReflectionCaveatParameterTypeChange *t =
		    arena_alloc(a, sizeof(*t));
		authzed__api__v1__reflection_caveat_parameter_type_change__init(
		    t);
		t->parameter = reflect_param(a, nc, p);
		t->previous_type = (char *)q->type;
		m->caveat_parameter_type_changed = t;
		break;
	}
	case SCHEMA_CHANGE_CHANGE_COMMENT:
		if (nc) {
			m = new_diff(a, 15);
			m->caveat_doc_comment_changed = reflect_caveat(a, nc);
		} else if (!*c->name) {
			m = new_diff(a, 3);
			m->definition_doc_comment_changed =
			    reflect_definition(a, nd, NULL, NULL);
		} else {
			const schema_relation *r =
			    schema_find_relation(nd, c->name);
			if (r->is_permission) {
				m = new_diff(a, 11);
				m->permission_doc_comment_changed =
				    reflect_permission(a, nd, r);
			} else {
				m = new_diff(a, 6);
				m->relation_doc_comment_changed =
				    reflect_relation(a, nd, r);
			}
		}
		break;
	default:
		return 0;
	}
	out[0] = m;
	return 1;
}

/* DiffSchema: the differences from the stored schema (at the
 * Consistency) to comparison_schema. */
static void handle_diff_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &authzed__api__v1__diff_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	const Authzed__Api__V1__DiffSchemaRequest *m =
	    (const Authzed__Api__V1__DiffSchemaRequest *)req.message;
	schema *old, *new;
	pemba_revision at;
	if (load_schema(&req, m->consistency, &old, &at) != 0) {
		svc_end(&req);
		return;
	}
	pemba_error err = {0};
	if (schema_compile(m->comparison_schema, strlen(m->comparison_schema),
	                   &new, &err) < 0) {
		svc_finish_error(call, &err);
		schema_free(old);
		svc_end(&req);
		return;
	}
	schema_diff *d = schema_diff_compute(old, new);
	arena *a = arena_create(0);
	Authzed__Api__V1__DiffSchemaResponse resp =
	    AUTHZED__API__V1__DIFF_SCHEMA_RESPONSE__INIT;
	resp.diffs =
	    arena_alloc(a, (2 * d->nchanges + 1) * sizeof(*resp.diffs));
	for (size_t i = 0; i < d->nchanges; i++)
		resp.n_diffs += diff_to_proto(a, old, new, &d->changes[i],
		                              resp.diffs + resp.n_diffs);
	svc_zedtoken zt;
	resp.read_at = svc_zedtoken_make(&zt, req.db, at);
	svc_reply(call, &resp.base);
	arena_destroy(a);
	schema_diff_free(d);
	schema_free(old);
	schema_free(new);
	svc_end(&req);
}

size_t svc_schema_methods(svc_backend *b, grpc_method *out)
{
	out[0] = (grpc_method){"/authzed.api.v1.SchemaService/ReadSchema",
	                       GRPC_METHOD_UNARY, handle_read_schema, b};
	out[1] = (grpc_method){"/authzed.api.v1.SchemaService/WriteSchema",
	                       GRPC_METHOD_UNARY, handle_write_schema, b};
	out[2] = (grpc_method){"/authzed.api.v1.SchemaService/ReflectSchema",
	                       GRPC_METHOD_UNARY, handle_reflect_schema, b};
	out[3] = (grpc_method){"/authzed.api.v1.SchemaService/DiffSchema",
	                       GRPC_METHOD_UNARY, handle_diff_schema, b};
	out[4] =
	    (grpc_method){"/authzed.api.v1.SchemaService/ComputablePermissions",
	                  GRPC_METHOD_UNARY, handle_computable_permissions, b};
	out[5] =
	    (grpc_method){"/authzed.api.v1.SchemaService/DependentRelations",
	                  GRPC_METHOD_UNARY, handle_dependent_relations, b};
	out[6] = (grpc_method){"/pemba.v1.MigrationService/ReadSchemaAt",
	                       GRPC_METHOD_UNARY, handle_read_schema_at, b};
	return 7;
}
