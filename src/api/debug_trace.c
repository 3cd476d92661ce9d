/*
 * debug_trace.c -- pemba_check_trace -> authzed.api.v1.DebugInformation
 * (debug_trace.h).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "api/debug_trace.h"
#include "api/struct_json.h"
#include "authzed/api/v1/core.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "util/xalloc.h"

/* A parsed context kept until svc_trace_builder_end; NULL for none. */
static Google__Protobuf__Struct *parse_owned(svc_trace_builder *b,
                                             const char *json)
{
	if (!json || !json[0])
		return NULL;
	Google__Protobuf__Struct *s = api_struct_from_json(json, strlen(json));
	if (!s)
		return NULL;
	if (b->nowned == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 8;
		b->owned = xrealloc(b->owned, b->cap * sizeof(*b->owned));
	}
	b->owned[b->nowned++] = s;
	return s;
}

/* The context a caveat was evaluated with: the relationship's values over
 * the request's (the relationship's win, as in evaluation). */
static Google__Protobuf__Struct *merged_context(svc_trace_builder *b,
                                                const char *row_json)
{
	Google__Protobuf__Struct *row = parse_owned(b, row_json);
	Google__Protobuf__Struct *req = parse_owned(b, b->request_context);
	Google__Protobuf__Struct *out = arena_alloc(b->a, sizeof(*out));
	google__protobuf__struct__init(out);
	size_t cap = (row ? row->n_fields : 0) + (req ? req->n_fields : 0);
	if (cap == 0)
		return out;
	out->fields = arena_alloc(b->a, cap * sizeof(*out->fields));
	for (size_t i = 0; row && i < row->n_fields; i++)
		out->fields[out->n_fields++] = row->fields[i];
	for (size_t i = 0; req && i < req->n_fields; i++) {
		bool shadowed = false;
		for (size_t j = 0; row && j < row->n_fields && !shadowed; j++)
			shadowed = strcmp(row->fields[j]->key,
			                  req->fields[i]->key) == 0;
		if (!shadowed)
			out->fields[out->n_fields++] = req->fields[i];
	}
	return out;
}

static Authzed__Api__V1__CaveatEvalInfo *caveat_info(svc_trace_builder *b,
                                                     const pemba_check_trace *t)
{
	if (!t->caveat_name)
		return NULL;
	Authzed__Api__V1__CaveatEvalInfo *ci = arena_alloc(b->a, sizeof(*ci));
	authzed__api__v1__caveat_eval_info__init(ci);
	ci->caveat_name = (char *)t->caveat_name;
	ci->expression =
	    (char *)(t->caveat_expression ? t->caveat_expression : "");
	ci->context = merged_context(b, t->caveat_context);
	switch (t->caveat_result) {
	case PEMBA_CAVEAT_TRUE:
		ci->result =
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_TRUE;
		break;
	case PEMBA_CAVEAT_FALSE:
		ci->result =
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_FALSE;
		break;
	case PEMBA_CAVEAT_MISSING: {
		ci->result =
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_MISSING_SOME_CONTEXT;
		Authzed__Api__V1__PartialCaveatInfo *p =
		    arena_alloc(b->a, sizeof(*p));
		authzed__api__v1__partial_caveat_info__init(p);
		p->missing_required_context = (char **)t->missing;
		p->n_missing_required_context = t->nmissing;
		ci->partial_caveat_info = p;
		break;
	}
	default:
		ci->result =
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_UNEVALUATED;
		break;
	}
	return ci;
}

static Authzed__Api__V1__CheckDebugTrace *convert(svc_trace_builder *b,
                                                  const pemba_check_trace *t)
{
	Authzed__Api__V1__CheckDebugTrace *m = arena_alloc(b->a, sizeof(*m));
	authzed__api__v1__check_debug_trace__init(m);
	Authzed__Api__V1__ObjectReference *res =
	    arena_alloc(b->a, sizeof(*res));
	authzed__api__v1__object_reference__init(res);
	res->object_type = (char *)t->resource_type;
	res->object_id = (char *)t->resource_id;
	m->resource = res;
	m->permission = (char *)t->permission;
	m->permission_type =
	    t->is_permission
	        ? AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSION_TYPE__PERMISSION_TYPE_PERMISSION
	        : AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSION_TYPE__PERMISSION_TYPE_RELATION;
	m->subject = (Authzed__Api__V1__SubjectReference *)b->subject;
	/* pemba_permissionship and CheckDebugTrace.Permissionship agree
	 * (1 no, 2 has, 3 conditional; 0 unspecified). */
	m->result =
	    (Authzed__Api__V1__CheckDebugTrace__Permissionship)t->result;
	m->caveat_evaluation_info = caveat_info(b, t);
	Google__Protobuf__Duration *d = arena_alloc(b->a, sizeof(*d));
	google__protobuf__duration__init(d);
	d->seconds = t->duration_ns / 1000000000;
	d->nanos = (int32_t)(t->duration_ns % 1000000000);
	m->duration = d;
	if (t->expires_at_ms > 0) {
		Google__Protobuf__Timestamp *ts =
		    arena_alloc(b->a, sizeof(*ts));
		google__protobuf__timestamp__init(ts);
		ts->seconds = t->expires_at_ms / 1000;
		ts->nanos = (int32_t)(t->expires_at_ms % 1000) * 1000000;
		m->optional_expires_at = ts;
	}
	if (t->cached) {
		m->resolution_case =
		    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_WAS_CACHED_RESULT;
		m->was_cached_result = 1;
		return m;
	}
	size_t n = 0;
	for (const pemba_check_trace *c = t->first_child; c;
	     c = c->next_sibling)
		n++;
	if (n == 0)
		return m;
	Authzed__Api__V1__CheckDebugTrace__SubProblems *sp =
	    arena_alloc(b->a, sizeof(*sp));
	authzed__api__v1__check_debug_trace__sub_problems__init(sp);
	sp->traces = arena_alloc(b->a, n * sizeof(*sp->traces));
	for (const pemba_check_trace *c = t->first_child; c;
	     c = c->next_sibling)
		sp->traces[sp->n_traces++] = convert(b, c);
	m->resolution_case =
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS;
	m->sub_problems = sp;
	return m;
}

Authzed__Api__V1__DebugInformation *
svc_debug_information(svc_trace_builder *b, const pemba_check_trace *trace,
                      const char *schema_used)
{
	if (!trace)
		return NULL;
	Authzed__Api__V1__DebugInformation *info =
	    arena_alloc(b->a, sizeof(*info));
	authzed__api__v1__debug_information__init(info);
	info->check = convert(b, trace);
	info->schema_used = (char *)(schema_used ? schema_used : "");
	return info;
}

void svc_trace_builder_end(svc_trace_builder *b)
{
	for (size_t i = 0; i < b->nowned; i++)
		api_struct_free(b->owned[i]);
	free(b->owned);
	b->owned = NULL;
	b->nowned = b->cap = 0;
}
