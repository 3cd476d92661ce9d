/*
 * cmd_permission.c -- `pemba permission check|lookup-resources|
 * lookup-subjects|expand` over gRPC (PermissionsService), and `verify`
 * (pemba.v1.MigrationService.VerifyPermission).
 *
 * `check` answers a yes/no question, so its exit status carries the
 * answer for shell scripts: 0 has permission, 1 does not (or only
 * conditionally, for want of caveat context), 2 error.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>

#include "api/struct_json.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "pemba/v1/migration_service.pb-c.h"

#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"
#define MIGRATION_SERVICE "/pemba.v1.MigrationService/"

static const char permission_usage_head[] =
    "usage: pemba permission <subcommand> [options] ...\n"
    "\n"
    "Asks a pemba (or SpiceDB) server about permissions.\n"
    "\n"
    "subcommands:\n"
    "  check RESOURCE PERMISSION SUBJECT        print true or false; exit 0 "
    "if the\n"
    "                                           subject has the permission, "
    "1 if not\n"
    "  lookup-resources TYPE PERMISSION SUBJECT print the TYPE resources "
    "SUBJECT has\n"
    "                                           PERMISSION on\n"
    "  lookup-subjects RESOURCE PERMISSION SUBJECT_TYPE[#RELATION]\n"
    "                                           print the subjects that have "
    "PERMISSION\n"
    "  expand RESOURCE PERMISSION               print the permission's "
    "subject tree\n"
    "  verify TYPE#FIRST TYPE#SECOND            prove two relations/"
    "permissions grant\n"
    "                                           the same subjects on every "
    "TYPE resource\n"
    "\n"
    "RESOURCE is TYPE:ID; SUBJECT is TYPE:ID or TYPE:ID#RELATION.\n"
    "Run 'pemba permission <subcommand> --help' for its options.\n"
    "Exit status: 0 success (check: has permission), 1 check: no "
    "permission,\n"
    "verify: not equal; 2 any error (usage, connection, server).\n";

/* Options `check` and the lookups add. */
typedef struct permission_flags {
	const char *context; /* --caveat-context JSON */
	bool explain;        /* check --explain */
} permission_flags;

static int permission_flag(void *ctx, int argc, char **argv, int *i)
{
	permission_flags *flags = ctx;
	return client_flag_value("--caveat-context", argc, argv, i,
	                         &flags->context);
}

static const char caveat_context_help[] =
    "  --caveat-context JSON         a JSON object of caveat parameters, "
    "e.g. '{\"day\":3}'\n";

/* Appends zed's mark for a result granted only under a caveat whose
 * parameters are missing: " (caveated, missing context: a, b)", or
 * " (caveated)" when the server names none. */
static void print_caveated(const Authzed__Api__V1__PartialCaveatInfo *info)
{
	if (!info || info->n_missing_required_context == 0) {
		fputs(" (caveated)", stdout);
		return;
	}
	fputs(" (caveated, missing context: ", stdout);
	for (size_t k = 0; k < info->n_missing_required_context; k++)
		printf("%s%s", k ? ", " : "",
		       info->missing_required_context[k]);
	fputc(')', stdout);
}

/* Parses --caveat-context into a Struct (NULL when not given).  Returns 0,
 * or -1 after printing a usage error. */
static int parse_context(arena *a, const permission_flags *flags,
                         const char *usage, Google__Protobuf__Struct **out)
{
	*out = NULL;
	if (!flags->context)
		return 0;
	const char *why = NULL;
	*out = client_parse_json_object(a, flags->context, &why);
	if (!*out) {
		client_usage_error(usage, "malformed --caveat-context: %s",
		                   why);
		return -1;
	}
	return 0;
}

/* ===================================================================== */
/* check                                                                 */
/* ===================================================================== */

/* check's flags: --explain, then those it shares with the lookups. */
static int check_flag(void *ctx, int argc, char **argv, int *i)
{
	permission_flags *flags = ctx;
	if (client_flag_bool("--explain", argv, i, &flags->explain))
		return 1;
	return permission_flag(ctx, argc, argv, i);
}

/* A duration as Go prints one (zed shows them so): "0s", "750ns",
 * "12.5µs", "1.234ms", "2.000001s" -- the unit that keeps the integer
 * part below 1000, trailing zeros of the fraction dropped. */
static void format_duration(const Google__Protobuf__Duration *d, char *buf,
                            size_t len)
{
	long long ns = d ? (long long)d->seconds * 1000000000LL + d->nanos : 0;
	if (ns <= 0) {
		snprintf(buf, len, "0s");
		return;
	}
	static const struct {
		long long scale;
		int digits;
		const char *unit;
	} units[] = {{1, 0, "ns"},
	             {1000, 3, "\xc2\xb5s"},
	             {1000000, 6, "ms"},
	             {1000000000, 9, "s"}};
	size_t u = 0;
	while (u + 1 < sizeof(units) / sizeof(units[0]) &&
	       ns >= units[u + 1].scale)
		u++;
	long long whole = ns / units[u].scale, frac = ns % units[u].scale;
	char fraction[16] = "";
	if (frac) {
		snprintf(fraction, sizeof(fraction), ".%0*lld", units[u].digits,
		         frac);
		size_t n = strlen(fraction);
		while (n > 1 && fraction[n - 1] == '0')
			fraction[--n] = '\0';
	}
	snprintf(buf, len, "%lld%s%s", whole, fraction, units[u].unit);
}

/* Prints one line of the tree: the branch drawing of its ancestors
 * (`prefix`), its own connector, the text. */
static void tree_line(const char *prefix, bool root, bool last,
                      const char *text)
{
	if (root)
		printf("%s\n", text);
	else
		printf("%s%s%s\n", prefix,
		       last ? "\xe2\x94\x94\xe2\x94\x80\xe2\x94\x80 "
		            : "\xe2\x94\x9c\xe2\x94\x80\xe2\x94\x80 ",
		       text);
}

/* The prefix for the children of a line. */
static void child_prefix(char *out, size_t len, const char *prefix, bool root,
                         bool last)
{
	snprintf(out, len, "%s%s", root ? "" : prefix,
	         root   ? ""
	         : last ? "    "
	                : "\xe2\x94\x82   ");
}

/* zed's --explain tree (zed's printer, without colors): one line per
 * subproblem, "✓" has / "⨉" not / "?" missing caveat context, then
 * resource and permission, " (cached)", the duration; under it the caveat
 * evaluated there and its context, and under a granted leaf the
 * subject. */
static void print_trace(const Authzed__Api__V1__CheckDebugTrace *t,
                        const char *prefix, bool root, bool last)
{
	const char *mark = "\xe2\x9c\x93"; /* ✓ */
	const Authzed__Api__V1__CaveatEvalInfo *ci = t->caveat_evaluation_info;
	if (t->result ==
	        AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION &&
	    ci) {
		if (ci->result ==
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_FALSE)
			mark = "\xe2\xa8\x89"; /* ⨉ */
		else if (
		    ci->result ==
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_MISSING_SOME_CONTEXT)
			mark = "?";
	} else if (
	    t->result ==
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION) {
		mark = "?";
	} else if (
	    t->result !=
	    AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION) {
		mark = "\xe2\xa8\x89";
	}
	char duration[48], line[1024];
	format_duration(t->duration, duration, sizeof(duration));
	bool cached =
	    t->resolution_case ==
	        AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_WAS_CACHED_RESULT &&
	    t->was_cached_result;
	snprintf(line, sizeof(line), "%s %s:%s %s%s (%s)", mark,
	         t->resource ? t->resource->object_type : "",
	         t->resource ? t->resource->object_id : "", t->permission,
	         cached ? " (cached)" : "", duration);
	tree_line(prefix, root, last, line);
	char inner[512];
	child_prefix(inner, sizeof(inner), prefix, root, last);

	size_t nsub =
	    t->resolution_case ==
	                AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS &&
	            t->sub_problems
	        ? t->sub_problems->n_traces
	        : 0;
	bool subject_leaf =
	    t->resolution_case ==
	        AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION__NOT_SET &&
	    t->result ==
	        AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION &&
	    t->subject && t->subject->object;
	if (ci) {
		const char *cmark =
		    ci->result ==
		            AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_TRUE
		        ? "\xe2\x9c\x93"
		    : ci->result ==
		            AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_FALSE
		        ? "\xe2\xa8\x89"
		        : "?";
		snprintf(line, sizeof(line), "%s %s %s", cmark, ci->expression,
		         ci->caveat_name);
		bool ci_last = nsub == 0 && !subject_leaf;
		tree_line(inner, false, ci_last, line);
		char cprefix[600];
		child_prefix(cprefix, sizeof(cprefix), inner, false, ci_last);
		bool missing =
		    ci->result ==
		    AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_MISSING_SOME_CONTEXT;
		bool has_missing = missing && ci->partial_caveat_info;
		if (ci->context && ci->context->n_fields > 0) {
			strbuf sb;
			strbuf_init(&sb);
			api_json_struct(&sb, ci->context);
			char *json = strbuf_detach(&sb, NULL);
			tree_line(cprefix, false, !has_missing, json);
			free(json);
		} else if (!missing) {
			tree_line(cprefix, false, true,
			          "(no matching context found)");
		}
		if (has_missing) {
			strbuf sb;
			strbuf_init(&sb);
			strbuf_puts(&sb, "missing context: ");
			const Authzed__Api__V1__PartialCaveatInfo *p =
			    ci->partial_caveat_info;
			for (size_t k = 0; k < p->n_missing_required_context;
			     k++)
				strbuf_printf(&sb, "%s%s", k ? ", " : "",
				              p->missing_required_context[k]);
			char *text = strbuf_detach(&sb, NULL);
			tree_line(cprefix, false, true, text);
			free(text);
		}
	}
	for (size_t k = 0; k < nsub; k++)
		print_trace(t->sub_problems->traces[k], inner, false,
		            k + 1 == nsub);
	if (subject_leaf) {
		const Authzed__Api__V1__SubjectReference *s = t->subject;
		snprintf(line, sizeof(line), "%s:%s %s", s->object->object_type,
		         s->object->object_id,
		         s->optional_relation ? s->optional_relation : "");
		tree_line(inner, false, true, line);
	}
}

static int permission_check(int argc, char **argv)
{
	char usage[6144];
	snprintf(usage, sizeof(usage),
	         "usage: pemba permission check [options] RESOURCE PERMISSION "
	         "SUBJECT\n"
	         "\n"
	         "Checks whether SUBJECT (TYPE:ID or TYPE:ID#RELATION) has "
	         "PERMISSION on RESOURCE\n"
	         "(TYPE:ID) with PermissionsService.CheckPermission, and "
	         "prints:\n"
	         "  true                  the subject has the permission\n"
	         "  false                 it does not\n"
	         "  caveated              only under a caveat whose parameters "
	         "are missing\n"
	         "                        (named on stderr: `pemba: missing "
	         "fields in caveat\n"
	         "                        context: a, b`); pass them with "
	         "--caveat-context\n"
	         "With --json prints the response instead, e.g.\n"
	         "  {\"checkedAt\":{\"token\":\"...\"},"
	         "\"permissionship\":\"PERMISSIONSHIP_HAS_PERMISSION\"}\n"
	         "With --explain first prints why, as `zed permission check "
	         "--explain` does:\n"
	         "the tree of subproblems the server evaluated (with_tracing), "
	         "one line each:\n"
	         "  \xe2\x9c\x93 / \xe2\xa8\x89 / ? (caveat context "
	         "missing), RESOURCE PERMISSION, (cached), duration;\n"
	         "under a line the caveat evaluated there with its context, "
	         "and under a\n"
	         "granted relation the subject found.\n"
	         "\n"
	         "Exit status (for shell scripts: `if pemba permission check "
	         "...; then`):\n"
	         "  0  the subject has the permission\n"
	         "  1  it does not, or only conditionally\n"
	         "  2  error: bad usage, no connection, or an error status "
	         "from the server\n"
	         "     (printed as `pemba: STATUS: message` on stderr)\n"
	         "\n"
	         "options:\n"
	         "  --explain                     print why (the server's "
	         "debug trace)\n"
	         "%s\n%s%s",
	         caveat_context_help, client_connection_help,
	         client_consistency_help);
	permission_flags flags = {0};
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 3,
	                    .max_positional = 3,
	                    .extra = check_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;

	arena *a = arena_create(0);
	Authzed__Api__V1__ObjectReference resource;
	Authzed__Api__V1__SubjectReference subject;
	Authzed__Api__V1__CheckPermissionRequest request =
	    AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
	if (client_parse_object(a, args.positional[0], "resource", &resource) !=
	        0 ||
	    client_parse_subject(a, args.positional[2], &subject) != 0) {
		arena_destroy(a);
		client_print_short_usage(usage);
		return CLIENT_EXIT_ERROR;
	}
	if (parse_context(a, &flags, usage, &request.context) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	request.consistency = client_consistency(a, &args.options);
	request.resource = &resource;
	request.permission = (char *)args.positional[1];
	request.subject = &subject;
	request.with_tracing = flags.explain;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	Authzed__Api__V1__CheckPermissionResponse *response =
	    (Authzed__Api__V1__CheckPermissionResponse *)client_unary(
	        &conn, PERMISSIONS_SERVICE "CheckPermission", &request.base,
	        &authzed__api__v1__check_permission_response__descriptor);
	client_close(&conn);
	arena_destroy(a);
	if (!response)
		return CLIENT_EXIT_ERROR;

	if (flags.explain && !args.options.json) {
		if (response->debug_trace && response->debug_trace->check)
			print_trace(response->debug_trace->check, "", true,
			            true);
		else
			fputs("pemba: the server sent no debug trace\n",
			      stderr);
	}
	int result;
	switch (response->permissionship) {
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION:
		result = CLIENT_EXIT_OK;
		if (!args.options.json)
			puts("true");
		break;
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION:
		result = CLIENT_EXIT_NO;
		if (!args.options.json)
			puts("false");
		break;
	case AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION:
		/* As zed: the answer on stdout, the missing parameters as
		 * a note on stderr. */
		result = CLIENT_EXIT_NO;
		if (!args.options.json) {
			puts("caveated");
			const Authzed__Api__V1__PartialCaveatInfo *info =
			    response->partial_caveat_info;
			if (info && info->n_missing_required_context) {
				fflush(stdout);
				fputs(
				    "pemba: missing fields in caveat context: ",
				    stderr);
				for (size_t k = 0;
				     k < info->n_missing_required_context; k++)
					fprintf(
					    stderr, "%s%s", k ? ", " : "",
					    info->missing_required_context[k]);
				fputc('\n', stderr);
			}
		}
		break;
	default:
		result = client_error("UNKNOWN",
		                      "the server answered permissionship %d",
		                      (int)response->permissionship);
		break;
	}
	if (args.options.json && result != CLIENT_EXIT_ERROR)
		client_print_json(&response->base);
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return result;
}

/* ===================================================================== */
/* lookup-resources                                                      */
/* ===================================================================== */

typedef struct lookup_state {
	bool json;
	const char *type; /* lookup-resources: the resource type */
} lookup_state;

static int on_resource(void *ctx, const ProtobufCMessage *message)
{
	lookup_state *state = ctx;
	const Authzed__Api__V1__LookupResourcesResponse *r =
	    (const Authzed__Api__V1__LookupResourcesResponse *)message;
	if (state->json) {
		client_print_json(message);
		return 0;
	}
	printf("%s:%s", state->type, r->resource_object_id);
	if (r->permissionship ==
	    AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION)
		print_caveated(r->partial_caveat_info);
	fputc('\n', stdout);
	return 0;
}

static int permission_lookup_resources(int argc, char **argv)
{
	char usage[6144];
	snprintf(usage, sizeof(usage),
	         "usage: pemba permission lookup-resources [options] TYPE "
	         "PERMISSION SUBJECT\n"
	         "\n"
	         "Prints every resource of TYPE on which SUBJECT (TYPE:ID or "
	         "TYPE:ID#RELATION) has\n"
	         "PERMISSION (PermissionsService.LookupResources), one TYPE:ID "
	         "per line; resources\n"
	         "granted only under a caveat whose parameters are missing end "
	         "in\n"
	         "\" (caveated, missing context: a, b)\".\n"
	         "With --json each response is one line: "
	         "{\"lookedUpAt\":...,\"resourceObjectId\":...,\n"
	         "\"permissionship\":...}.\n"
	         "Exit status: 0 success (also when nothing matches), 2 on any "
	         "error.\n"
	         "\n"
	         "options:\n%s\n%s%s",
	         caveat_context_help, client_connection_help,
	         client_consistency_help);
	permission_flags flags = {0};
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 3,
	                    .max_positional = 3,
	                    .extra = permission_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;

	arena *a = arena_create(0);
	Authzed__Api__V1__SubjectReference subject;
	Authzed__Api__V1__LookupResourcesRequest request =
	    AUTHZED__API__V1__LOOKUP_RESOURCES_REQUEST__INIT;
	const char *type = args.positional[0];
	if (!*type || strpbrk(type, ":#@")) {
		arena_destroy(a);
		return client_usage_error(
		    usage, "malformed resource type '%s': expected TYPE", type);
	}
	if (client_parse_subject(a, args.positional[2], &subject) != 0) {
		arena_destroy(a);
		client_print_short_usage(usage);
		return CLIENT_EXIT_ERROR;
	}
	if (parse_context(a, &flags, usage, &request.context) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	request.consistency = client_consistency(a, &args.options);
	request.resource_object_type = (char *)type;
	request.permission = (char *)args.positional[1];
	request.subject = &subject;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	lookup_state state = {.json = args.options.json, .type = type};
	status = client_server_streaming(
	    &conn, PERMISSIONS_SERVICE "LookupResources", &request.base,
	    &authzed__api__v1__lookup_resources_response__descriptor, 0,
	    on_resource, &state);
	client_close(&conn);
	arena_destroy(a);
	return status;
}

/* ===================================================================== */
/* lookup-subjects                                                       */
/* ===================================================================== */

typedef struct subjects_state {
	bool json;
	const char *type;
	const char *relation; /* NULL or the subject relation asked for */
} subjects_state;

static int on_subject(void *ctx, const ProtobufCMessage *message)
{
	subjects_state *state = ctx;
	const Authzed__Api__V1__LookupSubjectsResponse *r =
	    (const Authzed__Api__V1__LookupSubjectsResponse *)message;
	if (state->json) {
		client_print_json(message);
		return 0;
	}
	/* `subject` replaced the older flat fields; accept either. */
	const char *id =
	    r->subject ? r->subject->subject_object_id : r->subject_object_id;
	int permissionship = r->subject ? (int)r->subject->permissionship
	                                : (int)r->permissionship;
	printf("%s:%s", state->type, id);
	if (state->relation && *state->relation)
		printf("#%s", state->relation);
	size_t excluded =
	    r->subject ? r->n_excluded_subjects : r->n_excluded_subject_ids;
	if (excluded) {
		fputs(" - {", stdout);
		for (size_t k = 0; k < excluded; k++) {
			const char *ex =
			    r->subject
			        ? r->excluded_subjects[k]->subject_object_id
			        : r->excluded_subject_ids[k];
			printf("%s%s:%s", k ? ", " : "", state->type, ex);
		}
		fputc('}', stdout);
	}
	if (permissionship ==
	    AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION)
		print_caveated(r->subject ? r->subject->partial_caveat_info
		                          : r->partial_caveat_info);
	fputc('\n', stdout);
	return 0;
}

static int permission_lookup_subjects(int argc, char **argv)
{
	char usage[6144];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba permission lookup-subjects [options] RESOURCE "
	    "PERMISSION\n"
	    "                                        "
	    "SUBJECT_TYPE[#RELATION]\n"
	    "\n"
	    "Prints every subject of SUBJECT_TYPE (with RELATION, if "
	    "given) that has\n"
	    "PERMISSION on RESOURCE (TYPE:ID), with "
	    "PermissionsService.LookupSubjects, one\n"
	    "per line: user:anne.  A wildcard prints as user:*, followed "
	    "by the subjects it\n"
	    "excludes: user:* - {user:bob}.  Subjects granted only under a "
	    "caveat whose\n"
	    "parameters are missing end in\n"
	    "\" (caveated, missing context: a, b)\".  With --json each "
	    "response is one line\n"
	    "of JSON.\n"
	    "Exit status: 0 success (also when nothing matches), 2 on any "
	    "error.\n"
	    "\n"
	    "options:\n%s\n%s%s",
	    caveat_context_help, client_connection_help,
	    client_consistency_help);
	permission_flags flags = {0};
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 3,
	                    .max_positional = 3,
	                    .extra = permission_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;

	arena *a = arena_create(0);
	Authzed__Api__V1__ObjectReference resource;
	Authzed__Api__V1__LookupSubjectsRequest request =
	    AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__INIT;
	if (client_parse_object(a, args.positional[0], "resource", &resource) !=
	    0) {
		arena_destroy(a);
		client_print_short_usage(usage);
		return CLIENT_EXIT_ERROR;
	}
	const char *subject = args.positional[2];
	const char *hash = strchr(subject, '#');
	size_t type_len = hash ? (size_t)(hash - subject) : strlen(subject);
	if (type_len == 0 || (hash && !hash[1]) || strpbrk(subject, ":@")) {
		arena_destroy(a);
		return client_usage_error(usage,
		                          "malformed subject type '%s': "
		                          "expected TYPE or TYPE#RELATION",
		                          subject);
	}
	if (parse_context(a, &flags, usage, &request.context) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	request.consistency = client_consistency(a, &args.options);
	request.resource = &resource;
	request.permission = (char *)args.positional[1];
	request.subject_object_type = arena_strndup(a, subject, type_len);
	if (hash)
		request.optional_subject_relation = arena_strdup(a, hash + 1);

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	subjects_state state = {.json = args.options.json,
	                        .type = request.subject_object_type,
	                        .relation = request.optional_subject_relation};
	status = client_server_streaming(
	    &conn, PERMISSIONS_SERVICE "LookupSubjects", &request.base,
	    &authzed__api__v1__lookup_subjects_response__descriptor, 0,
	    on_subject, &state);
	client_close(&conn);
	arena_destroy(a);
	return status;
}

/* ===================================================================== */
/* expand                                                                */
/* ===================================================================== */

static const char *operation_name(int op)
{
	switch (op) {
	case AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_UNION:
		return "union";
	case AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_INTERSECTION:
		return "intersection";
	case AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_EXCLUSION:
		return "exclusion";
	default:
		return "unknown operation";
	}
}

/* Prints a tree node and its children, two spaces deeper per level. */
static void print_tree(arena *a,
                       const Authzed__Api__V1__PermissionRelationshipTree *t,
                       int depth)
{
	printf("%*s", depth * 2, "");
	if (t->expanded_object)
		printf("%s:%s#%s", t->expanded_object->object_type,
		       t->expanded_object->object_id, t->expanded_relation);
	if (t->tree_type_case ==
	    AUTHZED__API__V1__PERMISSION_RELATIONSHIP_TREE__TREE_TYPE_INTERMEDIATE) {
		const Authzed__Api__V1__AlgebraicSubjectSet *set =
		    t->intermediate;
		printf("%s(%s)\n", t->expanded_object ? " " : "",
		       operation_name(set->operation));
		for (size_t k = 0; k < set->n_children; k++)
			print_tree(a, set->children[k], depth + 1);
		return;
	}
	fputc('\n', stdout);
	if (t->tree_type_case ==
	    AUTHZED__API__V1__PERMISSION_RELATIONSHIP_TREE__TREE_TYPE_LEAF) {
		const Authzed__Api__V1__DirectSubjectSet *leaf = t->leaf;
		for (size_t k = 0; k < leaf->n_subjects; k++)
			printf("%*s%s\n", (depth + 1) * 2, "",
			       client_format_subject(a, leaf->subjects[k]));
	}
}

static int permission_expand(int argc, char **argv)
{
	char usage[6144];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba permission expand [options] RESOURCE PERMISSION\n"
	    "\n"
	    "Prints the tree of subjects PERMISSION on RESOURCE (TYPE:ID) "
	    "expands to, one\n"
	    "level deeper per two spaces (PermissionsService."
	    "ExpandPermissionTree):\n"
	    "  document:readme#view (union)\n"
	    "    document:readme#viewer\n"
	    "      user:anne\n"
	    "      group:eng#member\n"
	    "    document:readme#owner\n"
	    "      user:bob\n"
	    "A node combining others ends in (union), (intersection) or "
	    "(exclusion); a leaf\n"
	    "lists its direct subjects below it.  With --json prints the "
	    "response as one line.\n"
	    "Exit status: 0 success, 2 on any error.\n"
	    "\n%s%s",
	    client_connection_help, client_consistency_help);
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 2,
	                    .max_positional = 2};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;

	arena *a = arena_create(0);
	Authzed__Api__V1__ObjectReference resource;
	if (client_parse_object(a, args.positional[0], "resource", &resource) !=
	    0) {
		arena_destroy(a);
		client_print_short_usage(usage);
		return CLIENT_EXIT_ERROR;
	}
	Authzed__Api__V1__ExpandPermissionTreeRequest request =
	    AUTHZED__API__V1__EXPAND_PERMISSION_TREE_REQUEST__INIT;
	request.consistency = client_consistency(a, &args.options);
	request.resource = &resource;
	request.permission = (char *)args.positional[1];

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	Authzed__Api__V1__ExpandPermissionTreeResponse *response =
	    (Authzed__Api__V1__ExpandPermissionTreeResponse *)client_unary(
	        &conn, PERMISSIONS_SERVICE "ExpandPermissionTree",
	        &request.base,
	        &authzed__api__v1__expand_permission_tree_response__descriptor);
	client_close(&conn);
	if (!response) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	if (args.options.json)
		client_print_json(&response->base);
	else if (response->tree_root)
		print_tree(a, response->tree_root, 0);
	protobuf_c_message_free_unpacked(&response->base, NULL);
	arena_destroy(a);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* verify                                                                */
/* ===================================================================== */

typedef struct verify_flags {
	const char *max_differences;
} verify_flags;

static int verify_flag(void *ctx, int argc, char **argv, int *i)
{
	verify_flags *f = ctx;
	return client_flag_value("--max-differences", argc, argv, i,
	                         &f->max_differences);
}

static const char *
grant_word(Authzed__Api__V1__CheckPermissionResponse__Permissionship p,
           bool present)
{
	if (p ==
	    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION)
		return "conditional";
	if (p ==
	    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION)
		return "yes";
	/* A server that leaves the permissionships out. */
	return present ? "yes" : "no";
}

typedef struct verify_state {
	bool json;
	const char *type, *first, *second;
	bool have_summary;
	bool equal;
} verify_state;

static int on_verify(void *ctx, const ProtobufCMessage *message)
{
	verify_state *st = ctx;
	const Pemba__V1__VerifyPermissionResponse *r =
	    (const Pemba__V1__VerifyPermissionResponse *)message;
	if (st->json)
		client_print_json(message);
	if (r->result_case ==
	        PEMBA__V1__VERIFY_PERMISSION_RESPONSE__RESULT_DIFFERENCE &&
	    r->difference) {
		const Pemba__V1__VerifyDifference *d = r->difference;
		if (!st->json)
			printf(
			    "%s:%s %s %s=%s %s=%s\n", st->type, d->resource_id,
			    d->subject, st->first,
			    grant_word(d->first_permissionship, d->in_first),
			    st->second,
			    grant_word(d->second_permissionship, d->in_second));
	} else if (r->result_case ==
	               PEMBA__V1__VERIFY_PERMISSION_RESPONSE__RESULT_SUMMARY &&
	           r->summary) {
		const Pemba__V1__VerifySummary *s = r->summary;
		st->have_summary = true;
		st->equal = s->equal;
		if (!st->json)
			printf("summary: resources=%llu differences=%llu "
			       "equal=%s checked_at=%s\n",
			       (unsigned long long)s->resources,
			       (unsigned long long)s->differences,
			       s->equal ? "true" : "false",
			       s->checked_at ? s->checked_at->token : "");
	}
	fflush(stdout);
	return 0;
}

static int permission_verify(int argc, char **argv)
{
	char usage[6144];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba permission verify [options] TYPE#FIRST "
	    "TYPE#SECOND\n"
	    "\n"
	    "Proves that two relations or permissions of TYPE grant the same "
	    "subjects on\n"
	    "every TYPE resource that has a relationship, at one revision "
	    "(pemba.v1.\n"
	    "MigrationService.VerifyPermission): the step that confirms a "
	    "backfill before a\n"
	    "permission is switched from one to the other.  Every subject "
	    "type the schema\n"
	    "lets either reach is compared (usersets such as group:eng#member "
	    "too);\n"
	    "wildcards are compared with their exclusions, caveated grants by "
	    "permissionship.\n"
	    "\n"
	    "Prints one line per difference, then a summary:\n"
	    "  document:1 user:anne viewer=yes reader=no\n"
	    "  document:2 user:bob viewer=conditional reader=yes\n"
	    "  summary: resources=2 differences=2 equal=false "
	    "checked_at=TOKEN\n"
	    "(--json: each response as JSON.)  SECOND may also be given "
	    "without TYPE#.\n"
	    "Exit status: 0 equal, 1 not equal, 2 on any error.\n"
	    "\n"
	    "options:\n"
	    "  --max-differences N           differences to print (default "
	    "100; all are\n"
	    "                                counted in the summary)\n"
	    "\n%s%s",
	    client_connection_help, client_consistency_help);
	verify_flags flags = {0};
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 2,
	                    .max_positional = 2,
	                    .extra = verify_flag,
	                    .extra_ctx = &flags};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	arena *a = arena_create(0);
	const char *first = args.positional[0], *second = args.positional[1];
	const char *hash = strchr(first, '#');
	if (!hash || hash == first || !hash[1] || strpbrk(hash + 1, "#:@")) {
		arena_destroy(a);
		return client_usage_error(
		    usage, "malformed '%s': expected TYPE#RELATION", first);
	}
	char *type = arena_strndup(a, first, (size_t)(hash - first));
	const char *second_name = second;
	const char *hash2 = strchr(second, '#');
	if (hash2) {
		if ((size_t)(hash2 - second) != strlen(type) ||
		    strncmp(second, type, strlen(type)) != 0 || !hash2[1]) {
			status = client_usage_error(
			    usage,
			    "'%s' and '%s' must name the same type: expected "
			    "%s#RELATION",
			    first, second, type);
			arena_destroy(a);
			return status;
		}
		second_name = hash2 + 1;
	}
	Pemba__V1__VerifyPermissionRequest request =
	    PEMBA__V1__VERIFY_PERMISSION_REQUEST__INIT;
	request.resource_type = type;
	request.first = (char *)hash + 1;
	request.second = (char *)second_name;
	request.consistency = client_consistency(a, &args.options);
	if (flags.max_differences) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(flags.max_differences, &end, 10);
		if (errno || *end || end == flags.max_differences || n < 1 ||
		    n > 1000000) {
			arena_destroy(a);
			return client_usage_error(usage,
			                          "--max-differences must be a "
			                          "number from 1 to 1000000");
		}
		request.max_differences = (uint32_t)n;
	}
	client_conn conn;
	if (client_connect(&args.options, &conn) != 0) {
		arena_destroy(a);
		return CLIENT_EXIT_ERROR;
	}
	verify_state st = {.json = args.options.json,
	                   .type = type,
	                   .first = request.first,
	                   .second = request.second};
	status = client_server_streaming(
	    &conn, MIGRATION_SERVICE "VerifyPermission", &request.base,
	    &pemba__v1__verify_permission_response__descriptor, 0, on_verify,
	    &st);
	client_close(&conn);
	arena_destroy(a);
	if (status != CLIENT_EXIT_OK)
		return status;
	if (!st.have_summary)
		return client_error("UNKNOWN",
		                    "the server sent no verification summary");
	return st.equal ? CLIENT_EXIT_OK : CLIENT_EXIT_NO;
}

/* ===================================================================== */
/* Dispatch                                                              */
/* ===================================================================== */

int cmd_permission(int argc, char **argv)
{
	static const client_subcommand subs[] = {
	    {"check", permission_check},
	    {"lookup-resources", permission_lookup_resources},
	    {"lookup-subjects", permission_lookup_subjects},
	    {"expand", permission_expand},
	    {"verify", permission_verify},
	};
	return client_dispatch("permission", permission_usage_head, subs,
	                       sizeof(subs) / sizeof(subs[0]), argc, argv);
}
