/*
 * service_migration_schema.c -- pemba.v1.MigrationService:
 * DryRunWriteSchema and PlanSchema.
 *
 * Both are reads as far as the datastore goes (a dry run writes nothing),
 * so they work in read-only mode too.  Refusals come back with the status
 * WriteSchema would return (status_map.c).
 */
#include <string.h>

#include "api/services.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/arena.h"

/* The wire form of changes[0..n), allocated in a. */
static Pemba__V1__SchemaChange **
changes_to_proto(arena *a, const pemba_schema_change *v, size_t n)
{
	Pemba__V1__SchemaChange **out = arena_alloc(a, (n + 1) * sizeof(*out));
	for (size_t i = 0; i < n; i++) {
		Pemba__V1__SchemaChange *m = arena_alloc(a, sizeof(*m));
		pemba__v1__schema_change__init(m);
		m->kind = (Pemba__V1__SchemaChange__Kind)v[i].kind;
		m->definition = (char *)v[i].definition;
		m->name = (char *)v[i].name;
		m->detail = (char *)v[i].detail;
		m->description = (char *)v[i].description;
		out[i] = m;
	}
	return out;
}

static char *str(const char *s)
{
	return (char *)(s ? s : "");
}

/* DryRunWriteSchema: every check WriteSchema runs, nothing written. */
static void handle_dry_run_write_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx,
	              &pemba__v1__dry_run_write_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	const Pemba__V1__DryRunWriteSchemaRequest *m =
	    (const Pemba__V1__DryRunWriteSchemaRequest *)req.message;
	pemba_error err = {0};
	pemba_write_schema_options opts = {.dry_run = 1};
	pemba_revision at = 0;
	pemba_schema_change *changes = NULL;
	size_t n = 0;
	if (pemba_write_schema_ex(req.db, m->schema, strlen(m->schema), &opts,
	                          &at, &changes, &n, &err) < 0) {
		svc_finish_error(call, &err);
	} else {
		arena *a = arena_create(0);
		Pemba__V1__DryRunWriteSchemaResponse resp =
		    PEMBA__V1__DRY_RUN_WRITE_SCHEMA_RESPONSE__INIT;
		svc_zedtoken zt;
		resp.checked_at = svc_zedtoken_make(&zt, req.db, at);
		resp.changes = changes_to_proto(a, changes, n);
		resp.n_changes = n;
		svc_reply(call, &resp.base);
		arena_destroy(a);
	}
	pemba_free(changes);
	svc_end(&req);
}

static Pemba__V1__PlanStep *step_to_proto(arena *a, const pemba_plan_step *s)
{
	Pemba__V1__PlanStep *m = arena_alloc(a, sizeof(*m));
	pemba__v1__plan_step__init(m);
	m->description = str(s->description);
	if (s->kind == PEMBA_PLAN_WRITE_SCHEMA) {
		m->kind = PEMBA__V1__PLAN_STEP__KIND__WRITE_SCHEMA;
		m->schema = str(s->schema);
		m->changes = changes_to_proto(a, s->changes, s->nchanges);
		m->n_changes = s->nchanges;
		return m;
	}
	m->kind = PEMBA__V1__PLAN_STEP__KIND__DELETE_RELATIONSHIPS;
	m->allowed_type = str(s->allowed_type);
	Authzed__Api__V1__RelationshipFilter *f = arena_alloc(a, sizeof(*f));
	authzed__api__v1__relationship_filter__init(f);
	f->resource_type = str(s->filter.resource_type);
	f->optional_relation = str(s->filter.relation);
	if (s->filter.subject_type) {
		Authzed__Api__V1__SubjectFilter *sf =
		    arena_alloc(a, sizeof(*sf));
		authzed__api__v1__subject_filter__init(sf);
		sf->subject_type = str(s->filter.subject_type);
		if (s->filter.subject_relation) {
			Authzed__Api__V1__SubjectFilter__RelationFilter *rf =
			    arena_alloc(a, sizeof(*rf));
			authzed__api__v1__subject_filter__relation_filter__init(
			    rf);
			rf->relation = str(s->filter.subject_relation);
			sf->optional_relation = rf;
		}
		f->optional_subject_filter = sf;
	}
	m->filter = f;
	m->counts = arena_alloc(a, (s->ncounts + 1) * sizeof(*m->counts));
	m->n_counts = s->ncounts;
	for (size_t i = 0; i < s->ncounts; i++) {
		const pemba_relationship_count *c = &s->counts[i];
		Pemba__V1__RelationshipCount *x = arena_alloc(a, sizeof(*x));
		pemba__v1__relationship_count__init(x);
		x->resource_type = str(c->resource_type);
		x->relation = str(c->relation);
		x->subject_type = str(c->subject_type);
		x->subject_relation = str(c->subject_relation);
		x->wildcard = c->wildcard;
		x->caveat_name = str(c->caveat_name);
		x->count = c->count;
		m->counts[i] = x;
	}
	return m;
}

/* PlanSchema: the steps from the stored schema to the target. */
static void handle_plan_schema(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx, &pemba__v1__plan_schema_request__descriptor, 0,
	              &req) != 0)
		return;
	const Pemba__V1__PlanSchemaRequest *m =
	    (const Pemba__V1__PlanSchemaRequest *)req.message;
	pemba_error err = {0};
	pemba_schema_plan *plan = NULL;
	if (pemba_plan_schema(req.db, m->target_schema,
	                      strlen(m->target_schema), &plan, &err) < 0) {
		svc_finish_error(call, &err);
		svc_end(&req);
		return;
	}
	arena *a = arena_create(0);
	Pemba__V1__PlanSchemaResponse resp =
	    PEMBA__V1__PLAN_SCHEMA_RESPONSE__INIT;
	svc_zedtoken zt;
	resp.planned_at = svc_zedtoken_make(&zt, req.db, plan->planned_at);
	resp.changes = changes_to_proto(a, plan->changes, plan->nchanges);
	resp.n_changes = plan->nchanges;
	resp.steps = arena_alloc(a, (plan->nsteps + 1) * sizeof(*resp.steps));
	resp.n_steps = plan->nsteps;
	for (size_t i = 0; i < plan->nsteps; i++)
		resp.steps[i] = step_to_proto(a, &plan->steps[i]);
	svc_reply(call, &resp.base);
	arena_destroy(a);
	pemba_schema_plan_free(plan);
	svc_end(&req);
}

size_t svc_migration_schema_methods(svc_backend *b, grpc_method *out)
{
	out[0] =
	    (grpc_method){"/pemba.v1.MigrationService/DryRunWriteSchema",
	                  GRPC_METHOD_UNARY, handle_dry_run_write_schema, b};
	out[1] = (grpc_method){"/pemba.v1.MigrationService/PlanSchema",
	                       GRPC_METHOD_UNARY, handle_plan_schema, b};
	return 2;
}
