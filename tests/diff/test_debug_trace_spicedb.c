/*
 * test_debug_trace_spicedb.c -- CheckPermission with_tracing compared with
 * the real SpiceDB (libspicedb.so, tests/support/spicedb_ref.h).
 *
 * The same WriteSchema, WriteRelationships and CheckPermission request
 * bytes go to an in-process pemba server (over gRPC; sqlite::memory:, or
 * PostgreSQL with PEMBA_TEST_DATASTORE=postgres) and to SpiceDB.  Per
 * check, compared where the two engines' traces are comparable:
 *  - the answer (permissionship) and the root's resource, permission,
 *    permission type and result;
 *  - the first level of sub-problems: every child both sides have (same
 *    resource and permission) has the same result.  Which children exist
 *    differs by design: SpiceDB runs the branches of a union or an
 *    intersection concurrently and cancels the rest, pemba evaluates them
 *    in order and stops at the first that decides, and pemba evaluates an
 *    alias permission (`permission view = viewer`) in the same node.
 * Results are compared after one normalization: SpiceDB evaluates caveats
 * at the end, so a node reached through a caveat is CONDITIONAL with the
 * caveat's outcome beside it (TRUE / FALSE / missing context); pemba
 * evaluates them when reading the relationship.  A CONDITIONAL whose
 * caveat outcome is TRUE counts as HAS, FALSE as NO.
 *
 * Without the library the test fails, unless PEMBA_DIFF_ALLOW_SKIP=1
 * (exit 77).  PEMBA_DIFF_VERBOSE=1 prints both traces of every check.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/grpc.h"
#include "api/struct_json.h"
#include "authzed/api/v1/debug.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "grpc_fixture.h"
#include "pemba.h"
#include "pg_fixture.h"
#include "spicedb_ref.h"
#include "util/strbuf.h"

typedef Authzed__Api__V1__CheckDebugTrace trace_msg;

static const char SCHEMA[] = "caveat weekday(day int) {\n\tday < 6\n}\n"
                             "definition user {}\n"
                             "definition group {\n"
                             "\trelation member: user | group#member\n"
                             "}\n"
                             "definition folder {\n"
                             "\trelation viewer: user | user with weekday\n"
                             "\trelation owner: user\n"
                             "\tpermission view = viewer + owner\n"
                             "}\n"
                             "definition document {\n"
                             "\trelation parent: folder\n"
                             "\trelation owner: user\n"
                             "\trelation editor: user | group#member\n"
                             "\trelation banned: user\n"
                             "\tpermission edit = editor - banned\n"
                             "\tpermission view = owner + parent->view + edit\n"
                             "\tpermission audit = view & edit\n"
                             "}\n";

static const char *const RELS[] = {
    "group:eng#member@user:anne",
    "group:all#member@group:eng#member",
    "document:readme#editor@group:all#member",
    "document:readme#parent@folder:f",
    "folder:f#viewer@user:bob[weekday]",
    "folder:f#owner@user:dora",
    "document:readme#banned@user:carl",
    "document:readme#editor@user:carl",
    "document:readme#owner@user:erin",
};

static const struct {
	const char *check; /* resource#permission@subject */
	const char *context;
} CHECKS[] = {
    {"document:readme#audit@user:anne", NULL},
    {"document:readme#view@user:anne", NULL},
    {"document:readme#edit@user:anne", NULL},
    {"document:readme#audit@user:carl", NULL},
    {"document:readme#edit@user:carl", NULL},
    {"document:readme#view@user:bob", NULL},
    {"document:readme#view@user:bob", "{\"day\":3}"},
    {"document:readme#view@user:bob", "{\"day\":7}"},
    {"document:readme#view@user:dora", NULL},
    {"document:readme#view@user:erin", NULL},
    {"document:readme#edit@user:nobody", NULL},
    {"group:all#member@user:anne", NULL},
    {"folder:f#view@user:dora", NULL},
};

/* ============================================================ requests */

/* A relationship's wire form, parsed from the relationship syntax. */
typedef struct rel_msg {
	Authzed__Api__V1__Relationship rel;
	Authzed__Api__V1__ObjectReference res, subj_obj;
	Authzed__Api__V1__SubjectReference subj;
	Authzed__Api__V1__ContextualizedCaveat caveat;
	pemba_relationship parsed;
	char *storage;
} rel_msg;

static int rel_init(rel_msg *m, const char *text)
{
	memset(m, 0, sizeof(*m));
	pemba_error err;
	if (pemba_parse_relationship(text, &m->parsed, &m->storage, &err) !=
	    0) {
		printf("bad test relationship %s: %s\n", text, err.message);
		return -1;
	}
	const pemba_relationship *p = &m->parsed;
	authzed__api__v1__relationship__init(&m->rel);
	authzed__api__v1__object_reference__init(&m->res);
	authzed__api__v1__object_reference__init(&m->subj_obj);
	authzed__api__v1__subject_reference__init(&m->subj);
	m->res.object_type = (char *)p->resource_type;
	m->res.object_id = (char *)p->resource_id;
	m->rel.relation = (char *)p->relation;
	m->subj_obj.object_type = (char *)p->subject_type;
	m->subj_obj.object_id = (char *)p->subject_id;
	if (p->subject_relation && strcmp(p->subject_relation, "...") != 0)
		m->subj.optional_relation = (char *)p->subject_relation;
	m->subj.object = &m->subj_obj;
	m->rel.resource = &m->res;
	m->rel.subject = &m->subj;
	if (p->caveat_name && p->caveat_name[0]) {
		authzed__api__v1__contextualized_caveat__init(&m->caveat);
		m->caveat.caveat_name = (char *)p->caveat_name;
		m->rel.optional_caveat = &m->caveat;
	}
	return 0;
}

/* Sends the same message to both sides.  Returns 0 when both answered OK,
 * with their responses unpacked as d (free with free_unpacked). */
static int both(test_server *ts, spicedb_ref *ref, const char *service,
                const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *d, ProtobufCMessage **p_out,
                ProtobufCMessage **s_out)
{
	char path[160], eb[4096];
	snprintf(path, sizeof(path), "/authzed.api.v1.%s/%s", service, method);
	test_result r = test_call(ts->client, NULL, 0, path, req, d);
	if (r.code != GRPC_STATUS_OK) {
		printf("pemba: %s: %s %s\n", method, grpc_status_name(r.code),
		       r.message);
		test_result_done(&r);
		return -1;
	}
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(len + 1);
	protobuf_c_message_pack(req, buf);
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	int code = spicedb_ref_unary_raw(ref, method, buf, len, &resp,
	                                 &resp_len, eb, sizeof(eb));
	free(buf);
	if (code != GRPC_STATUS_OK) {
		printf("SpiceDB: %s: %s %s\n", method, grpc_status_name(code),
		       eb);
		test_result_done(&r);
		free(resp);
		return -1;
	}
	*s_out = protobuf_c_message_unpack(d, NULL, resp_len, resp);
	free(resp);
	*p_out = r.resp;
	r.resp = NULL;
	if (!*s_out) {
		printf("SpiceDB: %s: undecodable response\n", method);
		protobuf_c_message_free_unpacked(*p_out, NULL);
		return -1;
	}
	return 0;
}

/* ========================================================= comparison */

/* A node's result with SpiceDB's deferred caveats resolved (see top). */
static int normalized(const trace_msg *t)
{
	if (t->result ==
	        AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION &&
	    t->caveat_evaluation_info) {
		if (t->caveat_evaluation_info->result ==
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_TRUE)
			return AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION;
		if (t->caveat_evaluation_info->result ==
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_FALSE)
			return AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION;
	}
	return t->result;
}

static const char *result_name(int r)
{
	static const char *const names[] = {"UNSPECIFIED", "NO", "HAS",
	                                    "CONDITIONAL"};
	return r >= 0 && r < 4 ? names[r] : "?";
}

static void print_trace(const trace_msg *t, int depth)
{
	printf(
	    "    %*s%s:%s %s [%s%s]%s\n", 2 * depth, "",
	    t->resource ? t->resource->object_type : "?",
	    t->resource ? t->resource->object_id : "?", t->permission,
	    result_name(t->result), t->caveat_evaluation_info ? ", caveat" : "",
	    t->resolution_case ==
	            AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_WAS_CACHED_RESULT
	        ? " (cached)"
	        : "");
	if (t->resolution_case ==
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS)
		for (size_t i = 0; i < t->sub_problems->n_traces; i++)
			print_trace(t->sub_problems->traces[i], depth + 1);
}

static bool same_node(const trace_msg *a, const trace_msg *b)
{
	return a->resource && b->resource &&
	       strcmp(a->resource->object_type, b->resource->object_type) ==
	           0 &&
	       strcmp(a->resource->object_id, b->resource->object_id) == 0 &&
	       strcmp(a->permission, b->permission) == 0;
}

static size_t nchildren(const trace_msg *t)
{
	return t->resolution_case ==
	               AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS
	           ? t->sub_problems->n_traces
	           : 0;
}

int main(void)
{
	const char *lib = spicedb_ref_library_path();
	const char *skip = getenv("PEMBA_DIFF_ALLOW_SKIP");
	const char *verbose_env = getenv("PEMBA_DIFF_VERBOSE");
	bool verbose = verbose_env && *verbose_env && *verbose_env != '0';
	spicedb_ref *ref = NULL;
	char eb[4096];
	if (spicedb_ref_open(lib, &ref, eb, sizeof(eb)) != 0) {
		printf("cannot load SpiceDB: %s\n", eb);
		if (skip && *skip == '1') {
			printf("skipped (PEMBA_DIFF_ALLOW_SKIP=1)\n");
			return 77;
		}
		printf("0 passed, 1 failed\n");
		return 1;
	}
	test_server ts;
	test_server_start(&ts,
	                  (server_options){
	                      .datastore = pg_fixture_uri("sqlite::memory:"),
	                  });
	int passed = 0, failed = 0;
	size_t compared_children = 0;

	/* The same schema and relationships on both. */
	Authzed__Api__V1__WriteSchemaRequest ws =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	ws.schema = (char *)SCHEMA;
	ProtobufCMessage *pr, *sr;
	if (both(&ts, ref, "SchemaService", "WriteSchema", &ws.base,
	         &authzed__api__v1__write_schema_response__descriptor, &pr,
	         &sr) != 0) {
		printf("0 passed, 1 failed\n");
		return 1;
	}
	protobuf_c_message_free_unpacked(pr, NULL);
	protobuf_c_message_free_unpacked(sr, NULL);
	size_t nrels = sizeof(RELS) / sizeof(RELS[0]);
	rel_msg msgs[sizeof(RELS) / sizeof(RELS[0])];
	Authzed__Api__V1__RelationshipUpdate
	    ups[sizeof(RELS) / sizeof(RELS[0])];
	Authzed__Api__V1__RelationshipUpdate
	    *pups[sizeof(RELS) / sizeof(RELS[0])];
	for (size_t i = 0; i < nrels; i++) {
		if (rel_init(&msgs[i], RELS[i]) != 0)
			return 1;
		authzed__api__v1__relationship_update__init(&ups[i]);
		ups[i].operation =
		    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		ups[i].relationship = &msgs[i].rel;
		pups[i] = &ups[i];
	}
	Authzed__Api__V1__WriteRelationshipsRequest wr =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	wr.updates = pups;
	wr.n_updates = nrels;
	if (both(&ts, ref, "PermissionsService", "WriteRelationships", &wr.base,
	         &authzed__api__v1__write_relationships_response__descriptor,
	         &pr, &sr) != 0) {
		printf("0 passed, 1 failed\n");
		return 1;
	}
	protobuf_c_message_free_unpacked(pr, NULL);
	protobuf_c_message_free_unpacked(sr, NULL);
	for (size_t i = 0; i < nrels; i++)
		pemba_free(msgs[i].storage);

	for (size_t k = 0; k < sizeof(CHECKS) / sizeof(CHECKS[0]); k++) {
		rel_msg m;
		if (rel_init(&m, CHECKS[k].check) != 0)
			return 1;
		Authzed__Api__V1__CheckPermissionRequest req =
		    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
		Authzed__Api__V1__Consistency c =
		    AUTHZED__API__V1__CONSISTENCY__INIT;
		c.requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
		c.fully_consistent = 1;
		req.consistency = &c;
		req.resource = &m.res;
		req.permission = m.rel.relation;
		req.subject = &m.subj;
		req.with_tracing = 1;
		req.context =
		    CHECKS[k].context
		        ? api_struct_from_json(CHECKS[k].context,
		                               strlen(CHECKS[k].context))
		        : NULL;
		const char *name = CHECKS[k].check;
		char label[256];
		snprintf(label, sizeof(label), "%s%s%s", name,
		         CHECKS[k].context ? " " : "",
		         CHECKS[k].context ? CHECKS[k].context : "");
		if (both(
		        &ts, ref, "PermissionsService", "CheckPermission",
		        &req.base,
		        &authzed__api__v1__check_permission_response__descriptor,
		        &pr, &sr) != 0) {
			failed++;
			api_struct_free(req.context);
			pemba_free(m.storage);
			continue;
		}
		const Authzed__Api__V1__CheckPermissionResponse *p = (void *)pr,
		                                                *s = (void *)sr;
		bool ok = true;
		const char *why = "";
		const trace_msg *pt =
		    p->debug_trace ? p->debug_trace->check : NULL;
		const trace_msg *st =
		    s->debug_trace ? s->debug_trace->check : NULL;
		if (p->permissionship != s->permissionship) {
			ok = false;
			why = "answers differ";
		} else if (!pt || !st) {
			ok = false;
			why = pt ? "SpiceDB sent no trace"
			         : "pemba sent no trace";
		} else if (!same_node(pt, st) ||
		           pt->permission_type != st->permission_type) {
			ok = false;
			why = "roots differ";
		} else if (normalized(pt) != normalized(st)) {
			ok = false;
			why = "root results differ";
		} else {
			for (size_t i = 0; ok && i < nchildren(pt); i++) {
				const trace_msg *pc =
				    pt->sub_problems->traces[i];
				for (size_t j = 0; j < nchildren(st); j++) {
					const trace_msg *sc =
					    st->sub_problems->traces[j];
					if (!same_node(pc, sc))
						continue;
					compared_children++;
					if (normalized(pc) != normalized(sc) ||
					    pc->permission_type !=
					        sc->permission_type) {
						ok = false;
						why =
						    "a first-level sub-problem "
						    "differs";
					}
					break;
				}
			}
		}
		if (ok)
			passed++;
		else
			failed++;
		printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", label,
		       ok ? "" : ": ", why);
		if (!ok || verbose) {
			printf("  pemba:\n");
			if (pt)
				print_trace(pt, 0);
			printf("  SpiceDB:\n");
			if (st)
				print_trace(st, 0);
		}
		protobuf_c_message_free_unpacked(pr, NULL);
		protobuf_c_message_free_unpacked(sr, NULL);
		api_struct_free(req.context);
		pemba_free(m.storage);
	}
	/* The comparison must not be vacuous. */
	printf("first-level sub-problems compared: %zu\n", compared_children);
	if (compared_children < 10) {
		printf("FAIL too few comparable sub-problems\n");
		failed++;
	}
	test_server_stop(&ts);
	spicedb_ref_close(ref);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
