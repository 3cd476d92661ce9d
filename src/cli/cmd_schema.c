/*
 * cmd_schema.c -- `pemba schema read|write|diff|plan|apply`: the schema over
 * gRPC (authzed.api.v1.SchemaService, pemba.v1.MigrationService).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authzed/api/v1/schema_service.pb-c.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "pemba/v1/migration_service.pb-c.h"
#include "util/utf8.h"

#define SCHEMA_SERVICE "/authzed.api.v1.SchemaService/"
#define MIGRATION_SERVICE "/pemba.v1.MigrationService/"
#define PERMISSIONS_SERVICE "/authzed.api.v1.PermissionsService/"

static const char schema_usage_head[] =
    "usage: pemba schema <subcommand> [options]\n"
    "\n"
    "Reads or writes the schema of a pemba (or SpiceDB) server.\n"
    "\n"
    "subcommands:\n"
    "  read              print the current schema text\n"
    "  write FILE|-      replace the schema with FILE's text (- for stdin) "
    "and print\n"
    "                    the ZedToken it was written at (--dry-run: check "
    "only)\n"
    "  diff FILE|-       structural differences from the stored schema to "
    "FILE\n"
    "  plan TARGET|-     the steps from the stored schema to TARGET\n"
    "  apply TARGET|-    execute that plan (asks first; --yes, "
    "--delete-relationships)\n"
    "\n"
    "Run 'pemba schema <subcommand> --help' for its options.\n"
    "Exit status: 0 success, 2 on any error (usage, connection, server).\n";

/* ===================================================================== */
/* schema read                                                           */
/* ===================================================================== */

static int schema_read(int argc, char **argv)
{
	char usage[4096];
	snprintf(
	    usage, sizeof(usage),
	    "usage: pemba schema read [options]\n"
	    "\n"
	    "Prints the server's schema text (SchemaService.ReadSchema).  "
	    "With --json prints\n"
	    "{\"schemaText\": ..., \"readAt\": {\"token\": ...}}.\n"
	    "Without a --consistency-* option it reads the newest schema "
	    "(ReadSchema, any\n"
	    "SpiceDB-compatible server).  With one it reads the schema at "
	    "the revision the\n"
	    "option picks -- e.g. --consistency-at-exact TOKEN: the schema "
	    "as it was at\n"
	    "TOKEN -- through pemba.v1.MigrationService/ReadSchemaAt "
	    "(pemba servers: SpiceDB's\n"
	    "ReadSchema takes no consistency, and SpiceDB answers "
	    "UNIMPLEMENTED).\n"
	    "Exit status: 0 success, 2 on any error.\n"
	    "\n%s\n%s",
	    client_consistency_help, client_connection_help);
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .max_positional = 0};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;

	client_conn conn;
	if (client_connect(&args.options, &conn) != 0)
		return CLIENT_EXIT_ERROR;
	arena *a = arena_create(0);
	Authzed__Api__V1__ReadSchemaRequest request =
	    AUTHZED__API__V1__READ_SCHEMA_REQUEST__INIT;
	Pemba__V1__ReadSchemaAtRequest request_at =
	    PEMBA__V1__READ_SCHEMA_AT_REQUEST__INIT;
	request_at.consistency = client_consistency(a, &args.options);
	Authzed__Api__V1__ReadSchemaResponse *response =
	    (Authzed__Api__V1__ReadSchemaResponse *)client_unary(
	        &conn,
	        request_at.consistency
	            ? "/pemba.v1.MigrationService/ReadSchemaAt"
	            : SCHEMA_SERVICE "ReadSchema",
	        request_at.consistency ? &request_at.base : &request.base,
	        &authzed__api__v1__read_schema_response__descriptor);
	client_close(&conn);
	arena_destroy(a);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json) {
		client_print_json(&response->base);
	} else {
		const char *text = response->schema_text;
		size_t n = strlen(text);
		fputs(text, stdout);
		if (n && text[n - 1] != '\n')
			fputc('\n', stdout);
	}
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* schema write                                                          */
/* ===================================================================== */

/* Reads all of path ("-": stdin) into a malloc'd NUL-terminated buffer.
 * NULL with errno set on failure. */
static char *read_all(const char *path, size_t *len_out)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f)
		return NULL;
	strbuf sb;
	strbuf_init(&sb);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		strbuf_append(&sb, chunk, n);
	int failed = ferror(f);
	if (f != stdin)
		fclose(f);
	if (failed) {
		strbuf_free(&sb);
		errno = EIO;
		return NULL;
	}
	return strbuf_detach(&sb, len_out);
}

/* Reads FILE|- for a command: the text, or NULL after printing why. */
static char *read_schema_file(const char *path)
{
	size_t len = 0;
	char *text = read_all(path, &len);
	if (!text) {
		fprintf(stderr, "pemba: cannot read %s: %s\n", path,
		        strerror(errno));
		return NULL;
	}
	const char *nul = memchr(text, '\0', len);
	if (nul) {
		int line, column;
		utf8_position(text, len, (size_t)(nul - text), &line, &column);
		fprintf(stderr,
		        "pemba: %s:%d:%d: the schema contains a NUL byte\n",
		        path, line, column);
		free(text);
		return NULL;
	}
	return text;
}

/* The start every FILE-taking subcommand shares: parses the arguments,
 * reads the schema file named by the one positional argument and
 * connects.  Returns -1 when the caller should go on (*text_out and
 * *conn set; both released by the caller), or the exit status to return
 * (usage, --help, or an error already printed). */
static int begin_with_file(client_args *args, int argc, char **argv,
                           char **text_out, client_conn *conn)
{
	int status = client_parse_args(args, argc, argv);
	if (status >= 0)
		return status;
	char *text = read_schema_file(args->positional[0]);
	if (!text)
		return CLIENT_EXIT_ERROR;
	if (client_connect(&args->options, conn) != 0) {
		free(text);
		return CLIENT_EXIT_ERROR;
	}
	*text_out = text;
	return -1;
}

/* Boolean flags of write / apply. */
typedef struct schema_flags {
	bool dry_run;
	bool yes;
	bool delete_relationships;
	unsigned accepted; /* which of the above this command takes */
} schema_flags;

enum { FLAG_DRY_RUN = 1, FLAG_YES = 2, FLAG_DELETE = 4 };

static int schema_flag(void *ctx, int argc, char **argv, int *i)
{
	(void)argc;
	schema_flags *f = ctx;
	const char *arg = argv[*i];
	if ((f->accepted & FLAG_DRY_RUN) && strcmp(arg, "--dry-run") == 0)
		f->dry_run = true;
	else if ((f->accepted & FLAG_YES) &&
	         (strcmp(arg, "--yes") == 0 || strcmp(arg, "-y") == 0))
		f->yes = true;
	else if ((f->accepted & FLAG_DELETE) &&
	         strcmp(arg, "--delete-relationships") == 0)
		f->delete_relationships = true;
	else
		return 0;
	return 1;
}

static void print_changes(Pemba__V1__SchemaChange **changes, size_t n,
                          const char *indent)
{
	for (size_t i = 0; i < n; i++)
		printf("%s%s\n", indent, changes[i]->description);
}

/* Dry run: what WriteSchema would do, through MigrationService. */
static int schema_write_dry_run(client_conn *conn, const char *text, bool json)
{
	Pemba__V1__DryRunWriteSchemaRequest request =
	    PEMBA__V1__DRY_RUN_WRITE_SCHEMA_REQUEST__INIT;
	request.schema = (char *)text;
	Pemba__V1__DryRunWriteSchemaResponse *response =
	    (Pemba__V1__DryRunWriteSchemaResponse *)client_unary(
	        conn, MIGRATION_SERVICE "DryRunWriteSchema", &request.base,
	        &pemba__v1__dry_run_write_schema_response__descriptor);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (json) {
		client_print_json(&response->base);
	} else if (response->n_changes == 0) {
		printf("dry run: the schema would be accepted; nothing would "
		       "change\n");
	} else {
		printf("dry run: the schema would be accepted; %zu change%s:\n",
		       response->n_changes,
		       response->n_changes == 1 ? "" : "s");
		print_changes(response->changes, response->n_changes, "  ");
	}
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

static int schema_write(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba schema write [options] [--dry-run] FILE|-\n"
	         "\n"
	         "Replaces the server's schema with the text of FILE (- reads "
	         "stdin) through\n"
	         "SchemaService.WriteSchema and prints the ZedToken it was "
	         "written at.  With\n"
	         "--json prints {\"writtenAt\": {\"token\": ...}}.\n"
	         "\n"
	         "  --dry-run   run every check the write would run (syntax, "
	         "types, and the\n"
	         "              relationships a removal would orphan) and "
	         "write nothing; prints\n"
	         "              what would change "
	         "(pemba.v1.MigrationService.DryRunWriteSchema,\n"
	         "              pemba servers only)\n"
	         "\n"
	         "Exit status: 0 success, 2 on any error (a schema the server "
	         "refuses prints\n"
	         "its status, e.g. INVALID_ARGUMENT with line:column).\n"
	         "\n%s",
	         client_connection_help);
	schema_flags flags = {.accepted = FLAG_DRY_RUN};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = schema_flag,
	                    .extra_ctx = &flags};
	char *text;
	client_conn conn;
	int status = begin_with_file(&args, argc, argv, &text, &conn);
	if (status >= 0)
		return status;
	if (flags.dry_run) {
		status = schema_write_dry_run(&conn, text, args.options.json);
		client_close(&conn);
		free(text);
		return status;
	}
	Authzed__Api__V1__WriteSchemaRequest request =
	    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
	request.schema = text;
	Authzed__Api__V1__WriteSchemaResponse *response =
	    (Authzed__Api__V1__WriteSchemaResponse *)client_unary(
	        &conn, SCHEMA_SERVICE "WriteSchema", &request.base,
	        &authzed__api__v1__write_schema_response__descriptor);
	client_close(&conn);
	free(text);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json)
		client_print_json(&response->base);
	else
		printf("%s\n",
		       response->written_at ? response->written_at->token : "");
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* schema diff                                                           */
/* ===================================================================== */

/* "user", "user:*", "group#member", plus " with cav". */
static void print_type_ref(const Authzed__Api__V1__ReflectionTypeReference *t)
{
	printf("%s", t->subject_definition_name);
	if (t->typeref_case ==
	    AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_IS_PUBLIC_WILDCARD)
		printf(":*");
	else if (
	    t->typeref_case ==
	    AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_OPTIONAL_RELATION_NAME)
		printf("#%s", t->optional_relation_name);
	if (*t->optional_caveat_name)
		printf(" with %s", t->optional_caveat_name);
}

/* One line per difference: "+" added, "-" removed, "~" changed. */
#define DIFF(x) AUTHZED__API__V1__REFLECTION_SCHEMA_DIFF__DIFF_##x

static void print_relation_line(char sign, const char *what, const char *parent,
                                const char *name, const char *suffix)
{
	printf("%c %s %s#%s%s\n", sign, what, parent, name, suffix);
}

static void print_diff(const Authzed__Api__V1__ReflectionSchemaDiff *d)
{
	const Authzed__Api__V1__ReflectionRelation *r = NULL;
	const Authzed__Api__V1__ReflectionPermission *p = NULL;
	const Authzed__Api__V1__ReflectionCaveat *c = NULL;
	const Authzed__Api__V1__ReflectionRelationSubjectTypeChange *t = NULL;
	const Authzed__Api__V1__ReflectionCaveatParameter *cp = NULL;
	char sign = '~';
	const char *suffix = "";

	switch (d->diff_case) {
	case DIFF(DEFINITION_ADDED):
		printf("+ definition %s\n", d->definition_added->name);
		return;
	case DIFF(DEFINITION_REMOVED):
		printf("- definition %s\n", d->definition_removed->name);
		return;
	case DIFF(DEFINITION_DOC_COMMENT_CHANGED):
		printf("~ definition %s (comment)\n",
		       d->definition_doc_comment_changed->name);
		return;
	case DIFF(RELATION_ADDED):
		sign = '+', r = d->relation_added;
		break;
	case DIFF(RELATION_REMOVED):
		sign = '-', r = d->relation_removed;
		break;
	case DIFF(RELATION_DOC_COMMENT_CHANGED):
		r = d->relation_doc_comment_changed, suffix = " (comment)";
		break;
	case DIFF(RELATION_SUBJECT_TYPE_ADDED):
		sign = '+', t = d->relation_subject_type_added;
		break;
	case DIFF(RELATION_SUBJECT_TYPE_REMOVED):
		sign = '-', t = d->relation_subject_type_removed;
		break;
	case DIFF(PERMISSION_ADDED):
		sign = '+', p = d->permission_added;
		break;
	case DIFF(PERMISSION_REMOVED):
		sign = '-', p = d->permission_removed;
		break;
	case DIFF(PERMISSION_DOC_COMMENT_CHANGED):
		p = d->permission_doc_comment_changed, suffix = " (comment)";
		break;
	case DIFF(PERMISSION_EXPR_CHANGED):
		p = d->permission_expr_changed, suffix = " (expression)";
		break;
	case DIFF(CAVEAT_ADDED):
		sign = '+', c = d->caveat_added;
		break;
	case DIFF(CAVEAT_REMOVED):
		sign = '-', c = d->caveat_removed;
		break;
	case DIFF(CAVEAT_DOC_COMMENT_CHANGED):
		c = d->caveat_doc_comment_changed, suffix = " (comment)";
		break;
	case DIFF(CAVEAT_EXPR_CHANGED):
		c = d->caveat_expr_changed, suffix = " (expression)";
		break;
	case DIFF(CAVEAT_PARAMETER_ADDED):
		sign = '+', cp = d->caveat_parameter_added;
		break;
	case DIFF(CAVEAT_PARAMETER_REMOVED):
		sign = '-', cp = d->caveat_parameter_removed;
		break;
	case DIFF(CAVEAT_PARAMETER_TYPE_CHANGED): {
		const Authzed__Api__V1__ReflectionCaveatParameterTypeChange
		    *ch = d->caveat_parameter_type_changed;
		printf("~ parameter %s(%s): %s -> %s\n",
		       ch->parameter->parent_caveat_name, ch->parameter->name,
		       ch->previous_type, ch->parameter->type);
		return;
	}
	default:
		return;
	}
	if (r)
		print_relation_line(sign, "relation", r->parent_definition_name,
		                    r->name, suffix);
	else if (p)
		print_relation_line(sign, "permission",
		                    p->parent_definition_name, p->name, suffix);
	else if (c)
		printf("%c caveat %s%s\n", sign, c->name, suffix);
	else if (cp)
		printf("%c parameter %s(%s %s)\n", sign, cp->parent_caveat_name,
		       cp->name, cp->type);
	else if (t) {
		printf("%c type %s#%s: ", sign,
		       t->relation->parent_definition_name, t->relation->name);
		print_type_ref(t->changed_subject_type);
		printf("\n");
	}
}

#undef DIFF

static int schema_diff(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba schema diff [options] FILE|-\n"
	         "\n"
	         "Prints the structural differences from the server's schema "
	         "to FILE's\n"
	         "(SchemaService.DiffSchema): formatting, comments' layout and "
	         "the order of\n"
	         "definitions, relations and types do not count.  One line "
	         "per difference:\n"
	         "'+' added, '-' removed, '~' changed, e.g.\n"
	         "  - relation document#editor\n"
	         "  + type document#viewer: user:*\n"
	         "  ~ permission document#view (expression)\n"
	         "Nothing is printed when they are the same.  FILE is "
	         "required (to compare\n"
	         "with an older revision, read it with `schema read "
	         "--consistency-at-exact`\n"
	         "first).  --consistency-* pick the stored revision.  With "
	         "--json prints the\n"
	         "DiffSchemaResponse.\n"
	         "Exit status: 0 success, 2 on any error.\n"
	         "\n%s%s",
	         client_consistency_help, client_connection_help);
	client_args args = {.usage = usage,
	                    .accepts = CLIENT_ACCEPT_CONSISTENCY,
	                    .min_positional = 1,
	                    .max_positional = 1};
	char *text;
	client_conn conn;
	int status = begin_with_file(&args, argc, argv, &text, &conn);
	if (status >= 0)
		return status;
	arena *a = arena_create(0);
	Authzed__Api__V1__DiffSchemaRequest request =
	    AUTHZED__API__V1__DIFF_SCHEMA_REQUEST__INIT;
	request.comparison_schema = text;
	request.consistency = client_consistency(a, &args.options);
	Authzed__Api__V1__DiffSchemaResponse *response =
	    (Authzed__Api__V1__DiffSchemaResponse *)client_unary(
	        &conn, SCHEMA_SERVICE "DiffSchema", &request.base,
	        &authzed__api__v1__diff_schema_response__descriptor);
	client_close(&conn);
	free(text);
	arena_destroy(a);
	if (!response)
		return CLIENT_EXIT_ERROR;
	if (args.options.json) {
		client_print_json(&response->base);
	} else {
		for (size_t i = 0; i < response->n_diffs; i++)
			print_diff(response->diffs[i]);
	}
	protobuf_c_message_free_unpacked(&response->base, NULL);
	return CLIENT_EXIT_OK;
}

/* ===================================================================== */
/* schema plan / apply                                                   */
/* ===================================================================== */

static Pemba__V1__PlanSchemaResponse *request_plan(client_conn *conn,
                                                   const char *text)
{
	Pemba__V1__PlanSchemaRequest request =
	    PEMBA__V1__PLAN_SCHEMA_REQUEST__INIT;
	request.target_schema = (char *)text;
	return (Pemba__V1__PlanSchemaResponse *)client_unary(
	    conn, MIGRATION_SERVICE "PlanSchema", &request.base,
	    &pemba__v1__plan_schema_response__descriptor);
}

static uint64_t step_total(const Pemba__V1__PlanStep *st)
{
	uint64_t total = 0;
	for (size_t k = 0; k < st->n_counts; k++)
		total += st->counts[k]->count;
	return total;
}

static void print_plan(const Pemba__V1__PlanSchemaResponse *p)
{
	if (p->n_steps == 0) {
		printf("nothing to do: the stored schema already is the "
		       "target\n");
		return;
	}
	printf("changes from the stored schema to the target:\n");
	print_changes(p->changes, p->n_changes, "  ");
	printf("plan (%zu step%s):\n", p->n_steps, p->n_steps == 1 ? "" : "s");
	for (size_t i = 0; i < p->n_steps; i++) {
		const Pemba__V1__PlanStep *st = p->steps[i];
		if (st->kind == PEMBA__V1__PLAN_STEP__KIND__WRITE_SCHEMA) {
			printf("  %zu. write schema: %s\n", i + 1,
			       st->description);
			print_changes(st->changes, st->n_changes, "       ");
			continue;
		}
		printf("  %zu. delete relationships: %s\n", i + 1,
		       st->description);
		for (size_t k = 0; k < st->n_counts; k++) {
			const Pemba__V1__RelationshipCount *c = st->counts[k];
			printf("       %s#%s@%s%s%s%s%s%s: %llu\n",
			       c->resource_type, c->relation, c->subject_type,
			       c->wildcard ? ":*" : "",
			       *c->subject_relation ? "#" : "",
			       c->subject_relation,
			       *c->caveat_name ? " with " : "", c->caveat_name,
			       (unsigned long long)c->count);
		}
	}
}

static int schema_plan(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba schema plan [options] TARGET|-\n"
	         "\n"
	         "Prints the steps that take the server from its stored "
	         "schema to TARGET\n"
	         "(pemba.v1.MigrationService.PlanSchema): the changes; an "
	         "intermediate\n"
	         "schema that stops permissions from using what TARGET "
	         "removes while it\n"
	         "still has relationships; the relationships to delete first, "
	         "counted per\n"
	         "relation and subject type; then TARGET.  Changes nothing: "
	         "run `pemba\n"
	         "schema apply TARGET` to execute it.  With --json prints the "
	         "PlanSchemaResponse.\n"
	         "Exit status: 0 success, 2 on any error (a target the "
	         "server refuses, or\n"
	         "one no plan reaches, e.g. a caveat parameter removed).\n"
	         "\n%s",
	         client_connection_help);
	client_args args = {
	    .usage = usage, .min_positional = 1, .max_positional = 1};
	char *text;
	client_conn conn;
	int status = begin_with_file(&args, argc, argv, &text, &conn);
	if (status >= 0)
		return status;
	Pemba__V1__PlanSchemaResponse *plan = request_plan(&conn, text);
	client_close(&conn);
	free(text);
	if (!plan)
		return CLIENT_EXIT_ERROR;
	if (args.options.json)
		client_print_json(&plan->base);
	else
		print_plan(plan);
	protobuf_c_message_free_unpacked(&plan->base, NULL);
	return CLIENT_EXIT_OK;
}

/* An allowed type as written ("user", "user:*", "group#member",
 * "user with cav and expiration"), parsed for matching relationships. */
typedef struct allowed_match {
	char type[256];
	char relation[256]; /* "" for none */
	bool wildcard;
	char caveat[256]; /* "" for none */
	bool expiration;
} allowed_match;

static void parse_allowed(const char *text, allowed_match *m)
{
	memset(m, 0, sizeof(*m));
	const char *with = strstr(text, " with ");
	size_t head = with ? (size_t)(with - text) : strlen(text);
	if (head >= sizeof(m->type))
		head = sizeof(m->type) - 1;
	memcpy(m->type, text, head);
	char *hash = strchr(m->type, '#');
	char *star = strstr(m->type, ":*");
	if (hash) {
		snprintf(m->relation, sizeof(m->relation), "%s", hash + 1);
		*hash = 0;
	} else if (star) {
		m->wildcard = true;
		*star = 0;
	}
	if (!with)
		return;
	const char *rest = with + 6;
	if (strncmp(rest, "expiration", 10) == 0 && rest[10] == 0) {
		m->expiration = true;
		return;
	}
	const char *and = strstr(rest, " and ");
	size_t n = and? (size_t)(and-rest) : strlen(rest);
	if (n >= sizeof(m->caveat))
		n = sizeof(m->caveat) - 1;
	memcpy(m->caveat, rest, n);
	if (and)
		m->expiration = true;
}

/* Whether rel is one of the relationships SpiceDB's check for removing
 * allowed type m counts (see pemba.h, pemba_plan_step.allowed_type). */
static bool allowed_matches(const allowed_match *m,
                            const Authzed__Api__V1__Relationship *rel)
{
	const Authzed__Api__V1__SubjectReference *s = rel->subject;
	const char *srel = s->optional_relation ? s->optional_relation : "";
	const char *cav =
	    rel->optional_caveat ? rel->optional_caveat->caveat_name : "";
	if (strcmp(s->object->object_type, m->type) != 0 ||
	    strcmp(srel, m->relation) != 0 || strcmp(cav, m->caveat) != 0 ||
	    (rel->optional_expires_at != NULL) != m->expiration)
		return false;
	return !m->wildcard || strcmp(s->object->object_id, "*") == 0;
}

/* Keys of one page of matching relationships, to delete. */
typedef struct delete_page {
	arena *a;
	const allowed_match *match;
	Authzed__Api__V1__RelationshipUpdate **updates;
	size_t n;
	size_t seen;
	char *cursor; /* after the last row seen, in a */
} delete_page;

static int collect_for_delete(void *ctx, const ProtobufCMessage *message)
{
	delete_page *p = ctx;
	const Authzed__Api__V1__ReadRelationshipsResponse *r =
	    (const Authzed__Api__V1__ReadRelationshipsResponse *)message;
	p->seen++;
	if (r->after_result_cursor)
		p->cursor = arena_strdup(p->a, r->after_result_cursor->token);
	const Authzed__Api__V1__Relationship *rel = r->relationship;
	if (!rel || !allowed_matches(p->match, rel))
		return 0;
	arena *a = p->a;
	Authzed__Api__V1__ObjectReference *res = arena_alloc(a, sizeof(*res));
	authzed__api__v1__object_reference__init(res);
	res->object_type = arena_strdup(a, rel->resource->object_type);
	res->object_id = arena_strdup(a, rel->resource->object_id);
	Authzed__Api__V1__ObjectReference *so = arena_alloc(a, sizeof(*so));
	authzed__api__v1__object_reference__init(so);
	so->object_type = arena_strdup(a, rel->subject->object->object_type);
	so->object_id = arena_strdup(a, rel->subject->object->object_id);
	Authzed__Api__V1__SubjectReference *sub = arena_alloc(a, sizeof(*sub));
	authzed__api__v1__subject_reference__init(sub);
	sub->object = so;
	sub->optional_relation = arena_strdup(
	    a, rel->subject->optional_relation ? rel->subject->optional_relation
	                                       : "");
	Authzed__Api__V1__Relationship *copy = arena_alloc(a, sizeof(*copy));
	authzed__api__v1__relationship__init(copy);
	copy->resource = res;
	copy->relation = arena_strdup(a, rel->relation);
	copy->subject = sub;
	Authzed__Api__V1__RelationshipUpdate *u = arena_alloc(a, sizeof(*u));
	authzed__api__v1__relationship_update__init(u);
	u->operation =
	    AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE;
	u->relationship = copy;
	p->updates[p->n++] = u;
	return 0;
}

#define DELETE_PAGE 1000

/* Deletes what one plan step names; *deleted_out counts them. */
static int execute_delete(client_conn *conn, const Pemba__V1__PlanStep *st,
                          uint64_t *deleted_out)
{
	*deleted_out = 0;
	if (!*st->allowed_type) {
		/* The filter says it all: DeleteRelationships in pages, so
		 * no transaction grows without bound. */
		for (;;) {
			Authzed__Api__V1__DeleteRelationshipsRequest request =
			    AUTHZED__API__V1__DELETE_RELATIONSHIPS_REQUEST__INIT;
			request.relationship_filter = st->filter;
			request.optional_limit = DELETE_PAGE;
			request.optional_allow_partial_deletions = 1;
			Authzed__Api__V1__DeleteRelationshipsResponse *r =
			    (Authzed__Api__V1__DeleteRelationshipsResponse *)
			        client_unary(
			            conn,
			            PERMISSIONS_SERVICE "DeleteRelationships",
			            &request.base,
			            &authzed__api__v1__delete_relationships_response__descriptor);
			if (!r)
				return CLIENT_EXIT_ERROR;
			*deleted_out += r->relationships_deleted_count;
			bool done =
			    r->deletion_progress !=
			    AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__DELETION_PROGRESS__DELETION_PROGRESS_PARTIAL;
			protobuf_c_message_free_unpacked(&r->base, NULL);
			if (done)
				return CLIENT_EXIT_OK;
			fprintf(stderr, "pemba:   ... %llu deleted\n",
			        (unsigned long long)*deleted_out);
		}
	}
	/* Only the relationships of one allowed type (a caveat, an
	 * expiration or a wildcard decides): read page by page, delete the
	 * matching ones by key. */
	allowed_match match;
	parse_allowed(st->allowed_type, &match);
	char *cursor = NULL;
	for (;;) {
		delete_page page = {.a = arena_create(0), .match = &match};
		page.updates = arena_alloc(page.a, (DELETE_PAGE + 1) *
		                                       sizeof(*page.updates));
		Authzed__Api__V1__ReadRelationshipsRequest request =
		    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
		request.relationship_filter = st->filter;
		request.optional_limit = DELETE_PAGE;
		Authzed__Api__V1__Cursor c = AUTHZED__API__V1__CURSOR__INIT;
		if (cursor) {
			c.token = cursor;
			request.optional_cursor = &c;
		}
		int rc = client_server_streaming(
		    conn, PERMISSIONS_SERVICE "ReadRelationships",
		    &request.base,
		    &authzed__api__v1__read_relationships_response__descriptor,
		    0, collect_for_delete, &page);
		if (rc == 0 && page.n > 0) {
			Authzed__Api__V1__WriteRelationshipsRequest w =
			    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
			w.updates = page.updates;
			w.n_updates = page.n;
			ProtobufCMessage *r = client_unary(
			    conn, PERMISSIONS_SERVICE "WriteRelationships",
			    &w.base,
			    &authzed__api__v1__write_relationships_response__descriptor);
			if (!r)
				rc = CLIENT_EXIT_ERROR;
			else
				protobuf_c_message_free_unpacked(r, NULL);
			*deleted_out += page.n;
		}
		free(cursor);
		cursor = page.cursor ? strdup(page.cursor) : NULL;
		size_t seen = page.seen;
		arena_destroy(page.a);
		if (rc != 0) {
			free(cursor);
			return CLIENT_EXIT_ERROR;
		}
		if (seen < DELETE_PAGE || !cursor) {
			free(cursor);
			return CLIENT_EXIT_OK;
		}
	}
}

static int schema_apply(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage),
	         "usage: pemba schema apply [options] [--yes] "
	         "[--delete-relationships] TARGET|-\n"
	         "\n"
	         "Takes the server from its stored schema to TARGET by "
	         "executing the plan\n"
	         "`pemba schema plan TARGET` prints: each WRITE step through "
	         "WriteSchema, each\n"
	         "DELETE step through DeleteRelationships (or, when only one "
	         "allowed type's\n"
	         "relationships go, ReadRelationships + WriteRelationships "
	         "DELETE), printing\n"
	         "progress on stderr.  The plan is computed again from the "
	         "stored schema on\n"
	         "every run, so running it again after an interruption "
	         "finishes the job.\n"
	         "\n"
	         "  --yes, -y                 do not ask for confirmation "
	         "(required when stdin\n"
	         "                            is not a terminal)\n"
	         "  --delete-relationships    allow steps that delete "
	         "relationships (refused\n"
	         "                            otherwise, before anything "
	         "changes)\n"
	         "\n"
	         "Exit status: 0 success (or nothing to do), 2 on any error or "
	         "refusal.\n"
	         "\n%s",
	         client_connection_help);
	schema_flags flags = {.accepted = FLAG_YES | FLAG_DELETE};
	client_args args = {.usage = usage,
	                    .min_positional = 1,
	                    .max_positional = 1,
	                    .extra = schema_flag,
	                    .extra_ctx = &flags};
	char *text;
	client_conn conn;
	int status = begin_with_file(&args, argc, argv, &text, &conn);
	if (status >= 0)
		return status;
	Pemba__V1__PlanSchemaResponse *plan = request_plan(&conn, text);
	free(text);
	if (!plan) {
		client_close(&conn);
		return CLIENT_EXIT_ERROR;
	}
	print_plan(plan);
	status = CLIENT_EXIT_OK;
	uint64_t to_delete = 0;
	for (size_t i = 0; i < plan->n_steps; i++)
		if (plan->steps[i]->kind ==
		    PEMBA__V1__PLAN_STEP__KIND__DELETE_RELATIONSHIPS)
			to_delete += step_total(plan->steps[i]);
	if (plan->n_steps == 0)
		goto out;
	if (to_delete > 0 && !flags.delete_relationships) {
		fprintf(stderr,
		        "pemba: the plan deletes %llu relationship%s; nothing "
		        "was changed.  Re-run\n"
		        "with --delete-relationships to allow it.\n",
		        (unsigned long long)to_delete,
		        to_delete == 1 ? "" : "s");
		status = CLIENT_EXIT_ERROR;
		goto out;
	}
	if (!flags.yes) {
		if (!isatty(STDIN_FILENO)) {
			fprintf(
			    stderr,
			    "pemba: refusing to apply without confirmation: "
			    "stdin is not a terminal; pass --yes\n");
			status = CLIENT_EXIT_ERROR;
			goto out;
		}
		printf("apply these %zu step%s? [y/N] ", plan->n_steps,
		       plan->n_steps == 1 ? "" : "s");
		fflush(stdout);
		char answer[16] = "";
		if (!fgets(answer, sizeof(answer), stdin) ||
		    (answer[0] != 'y' && answer[0] != 'Y')) {
			fprintf(stderr, "pemba: not applied\n");
			status = CLIENT_EXIT_ERROR;
			goto out;
		}
	}
	for (size_t i = 0; i < plan->n_steps; i++) {
		const Pemba__V1__PlanStep *st = plan->steps[i];
		fprintf(stderr, "pemba: step %zu/%zu: %s\n", i + 1,
		        plan->n_steps, st->description);
		if (st->kind == PEMBA__V1__PLAN_STEP__KIND__WRITE_SCHEMA) {
			Authzed__Api__V1__WriteSchemaRequest request =
			    AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
			request.schema = st->schema;
			Authzed__Api__V1__WriteSchemaResponse *r =
			    (Authzed__Api__V1__WriteSchemaResponse *)client_unary(
			        &conn, SCHEMA_SERVICE "WriteSchema",
			        &request.base,
			        &authzed__api__v1__write_schema_response__descriptor);
			if (!r) {
				status = CLIENT_EXIT_ERROR;
				break;
			}
			fprintf(stderr, "pemba:   schema written at %s\n",
			        r->written_at ? r->written_at->token : "");
			if (i + 1 == plan->n_steps)
				printf("%s\n", r->written_at
				                   ? r->written_at->token
				                   : "");
			protobuf_c_message_free_unpacked(&r->base, NULL);
		} else {
			uint64_t deleted = 0;
			if (execute_delete(&conn, st, &deleted) != 0) {
				status = CLIENT_EXIT_ERROR;
				break;
			}
			fprintf(stderr,
			        "pemba:   %llu relationship%s deleted\n",
			        (unsigned long long)deleted,
			        deleted == 1 ? "" : "s");
		}
	}
	if (status != CLIENT_EXIT_OK)
		fprintf(stderr, "pemba: stopped; run the same command again to "
		                "resume from the stored schema\n");
out:
	protobuf_c_message_free_unpacked(&plan->base, NULL);
	client_close(&conn);
	return status;
}

/* ===================================================================== */
/* Dispatch                                                              */
/* ===================================================================== */

int cmd_schema(int argc, char **argv)
{
	static const client_subcommand subs[] = {
	    {"read", schema_read},   {"write", schema_write},
	    {"diff", schema_diff},   {"plan", schema_plan},
	    {"apply", schema_apply},
	};
	return client_dispatch("schema", schema_usage_head, subs,
	                       sizeof(subs) / sizeof(subs[0]), argc, argv);
}
