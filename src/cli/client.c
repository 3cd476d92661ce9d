/*
 * client.c -- shared machinery of the client commands: flags, connection,
 * calls, error lines, proto3-JSON output and reference parsing.  See
 * client.h for the contracts and README.md for the user-facing rules.
 */
#include "cli/client.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/pb_json.h"
#include "api/struct_json.h"
#include "cli/context.h"
#include "cli/probe.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "pemba.h"
#include "util/utf8.h"
#include "util/xalloc.h"

#define DEFAULT_ENDPOINT "127.0.0.1:50051"

const char client_connection_help[] =
    "connection options:\n"
    "  --endpoint HOST:PORT  server address (default: $PEMBA_ENDPOINT, "
    "else the current\n"
    "                        context's, else " DEFAULT_ENDPOINT ")\n"
    "  --token TOKEN         bearer token (preshared key, or serve-testing's "
    "datastore\n"
    "                        name); default: $PEMBA_TOKEN, else the "
    "context's\n"
    "  --context NAME        use this saved context (`pemba context "
    "list`) instead of\n"
    "                        $PEMBA_ENDPOINT or the current context\n"
    "  --insecure            plaintext HTTP/2 (h2c); without it TLS with "
    "ALPN h2\n"
    "  --ca-path FILE        PEM certificate(s) to verify the server with "
    "(TLS)\n"
    "  --skip-verify-ca      do not verify the server's certificate (TLS)\n"
    "  --json                print each response as one line of proto3 "
    "JSON\n"
    "environment: PEMBA_ENDPOINT, PEMBA_TOKEN (flags win over them; they "
    "win over\n"
    "the current context, see `pemba context --help`).\n";

const char client_consistency_help[] =
    "consistency options (default: the server's, minimize latency):\n"
    "  --consistency-min-latency     any recent revision the server picks\n"
    "  --consistency-full            the newest revision\n"
    "  --consistency-at-least TOKEN  a revision at least as fresh as TOKEN\n"
    "  --consistency-at-exact TOKEN  exactly the revision of TOKEN\n";

/* ===================================================================== */
/* Argument parsing                                                      */
/* ===================================================================== */

bool client_is_help(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int client_usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;
	fputs("pemba: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	client_print_short_usage(usage);
	return CLIENT_EXIT_ERROR;
}

void client_print_short_usage(const char *usage)
{
	/* The synopsis is the first paragraph; the rest is for --help. */
	const char *end = strstr(usage, "\n\n");
	size_t n = end ? (size_t)(end - usage) + 1 : strlen(usage);
	fwrite(usage, 1, n, stderr);
	/* "usage: pemba schema write ..." -> "pemba schema write --help" */
	const char *p = usage + (strncmp(usage, "usage: ", 7) == 0 ? 7 : 0);
	size_t words = 0, len = 0;
	while (p[len] && p[len] != '\n' && p[len] != '[') {
		if (p[len] == ' ' && ++words == 3)
			break;
		len++;
	}
	while (len && p[len - 1] == ' ')
		len--;
	fprintf(stderr, "Run '%.*s --help' for details.\n", (int)len, p);
}

int client_flag_value(const char *name, int argc, char **argv, int *i,
                      const char **value)
{
	const char *arg = argv[*i];
	size_t n = strlen(name);
	if (strncmp(arg, name, n) != 0)
		return 0;
	if (arg[n] == '=') {
		*value = arg + n + 1;
		return 1;
	}
	if (arg[n] != '\0')
		return 0;
	if (*i + 1 >= argc) {
		fprintf(stderr, "pemba: option '%s' needs a value\n", name);
		return -1;
	}
	*i += 1;
	*value = argv[*i];
	return 1;
}

int client_flag_bool(const char *name, char **argv, const int *i, bool *value)
{
	if (strcmp(argv[*i], name) != 0)
		return 0;
	*value = true;
	return 1;
}

/* True when arg is exactly the boolean flag name. */
static bool flag_is(const char *arg, const char *name)
{
	return strcmp(arg, name) == 0;
}

/* Consumes a shared flag at argv[*i]: 1 consumed, 0 unknown, -1 error
 * (message printed). */
static int parse_shared_flag(client_args *args, int argc, char **argv, int *i)
{
	client_options *o = &args->options;
	const char *arg = argv[*i];
	int r;

	if ((r = client_flag_value("--endpoint", argc, argv, i, &o->endpoint)))
		return r;
	if ((r = client_flag_value("--token", argc, argv, i, &o->token)))
		return r;
	if (!(args->accepts & CLIENT_NO_CONTEXT) &&
	    (r = client_flag_value("--context", argc, argv, i, &o->context)))
		return r;
	if ((r = client_flag_value("--ca-path", argc, argv, i, &o->ca_path)))
		return r;
	if (flag_is(arg, "--insecure")) {
		o->insecure = true;
		return 1;
	}
	if (flag_is(arg, "--skip-verify-ca")) {
		o->skip_verify_ca = true;
		return 1;
	}
	if (flag_is(arg, "--json")) {
		o->json = true;
		return 1;
	}
	if (!(args->accepts & CLIENT_ACCEPT_CONSISTENCY))
		return 0;

	client_consistency_kind kind = CLIENT_CONSISTENCY_DEFAULT;
	const char *token = NULL;
	if (flag_is(arg, "--consistency-min-latency")) {
		kind = CLIENT_CONSISTENCY_MIN_LATENCY;
	} else if (flag_is(arg, "--consistency-full")) {
		kind = CLIENT_CONSISTENCY_FULL;
	} else if ((r = client_flag_value("--consistency-at-least", argc, argv,
	                                  i, &token))) {
		if (r < 0)
			return r;
		kind = CLIENT_CONSISTENCY_AT_LEAST;
	} else if ((r = client_flag_value("--consistency-at-exact", argc, argv,
	                                  i, &token))) {
		if (r < 0)
			return r;
		kind = CLIENT_CONSISTENCY_AT_EXACT;
	} else {
		return 0;
	}
	/* The request carries one requirement: two flags would silently
	 * drop one of them. */
	if (o->consistency != CLIENT_CONSISTENCY_DEFAULT) {
		fprintf(stderr,
		        "pemba: give at most one --consistency-* option\n");
		return -1;
	}
	if (token && !*token) {
		fprintf(stderr, "pemba: option '%s' needs a ZedToken\n", arg);
		return -1;
	}
	o->consistency = kind;
	o->consistency_token = token;
	return 1;
}

/* Fills what the flags left unset: endpoint and token from the
 * environment, else from the context (--context NAME, else the current
 * one), else the default address.  A context's TLS settings come with its
 * endpoint only: a server named by flag or environment never receives a
 * context's token or CA.  0; -1 after printing why (the contexts file);
 * -2 after printing a usage error. */
static int resolve_connection(client_args *args)
{
	client_options *o = &args->options;
	const char *env_endpoint = getenv("PEMBA_ENDPOINT");
	const char *env_token = getenv("PEMBA_TOKEN");
	if (env_endpoint && !*env_endpoint)
		env_endpoint = NULL;
	if (env_token && !*env_token)
		env_token = NULL;
	if (o->context && o->endpoint) {
		fprintf(stderr, "pemba: give --context or --endpoint, not "
		                "both\n");
		return -2;
	}
	const cli_context *c = NULL;
	if (!o->endpoint && !(args->accepts & CLIENT_NO_CONTEXT) &&
	    (o->context || !env_endpoint)) {
		if (cli_context_lookup(o->context, &c) < 0)
			return -1;
	}
	if (!o->token)
		o->token = env_token ? env_token : c ? c->token : NULL;
	if (c) {
		o->endpoint = c->endpoint;
		o->insecure = o->insecure || c->insecure;
		o->skip_verify_ca = o->skip_verify_ca || c->skip_verify_ca;
		if (!o->ca_path)
			o->ca_path = c->ca_path;
	}
	if (!o->endpoint)
		o->endpoint = env_endpoint ? env_endpoint : DEFAULT_ENDPOINT;
	return 0;
}

int client_parse_args(client_args *args, int argc, char **argv)
{
	client_options *o = &args->options;
	memset(o, 0, sizeof(*o));
	args->npositional = 0;

	bool flags_done = false;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (!flags_done && arg[0] == '-' && arg[1] != '\0') {
			if (client_is_help(arg)) {
				fputs(args->usage, stdout);
				return CLIENT_EXIT_OK;
			}
			if (strcmp(arg, "--") == 0) {
				flags_done = true;
				continue;
			}
			int r = parse_shared_flag(args, argc, argv, &i);
			if (r == 0 && args->extra)
				r = args->extra(args->extra_ctx, argc, argv,
				                &i);
			if (r < 0) {
				client_print_short_usage(args->usage);
				return CLIENT_EXIT_ERROR;
			}
			if (r == 0)
				return client_usage_error(
				    args->usage, "unknown option '%s'", arg);
			continue;
		}
		if (args->npositional >= args->max_positional ||
		    args->npositional >= 8)
			return client_usage_error(
			    args->usage, "unexpected argument '%s'", arg);
		args->positional[args->npositional++] = arg;
	}
	if (args->npositional < args->min_positional)
		return client_usage_error(args->usage, "missing arguments");
	int resolved = resolve_connection(args);
	if (resolved != 0) {
		if (resolved == -2)
			client_print_short_usage(args->usage);
		return CLIENT_EXIT_ERROR;
	}
	if (!*o->endpoint)
		return client_usage_error(args->usage, "empty --endpoint");
	return -1;
}

/* ===================================================================== */
/* Error lines                                                           */
/* ===================================================================== */

int client_error(const char *status_name, const char *fmt, ...)
{
	strbuf sb;
	strbuf_init(&sb);
	va_list ap;
	va_start(ap, fmt);
	strbuf_vprintf(&sb, fmt, ap);
	va_end(ap);
	/* One line, whatever the server sent. */
	for (size_t k = 0; k < sb.len; k++)
		if (sb.data[k] == '\n' || sb.data[k] == '\r')
			sb.data[k] = ' ';
	fprintf(stderr, "pemba: %s: %s\n", status_name, sb.data);
	strbuf_free(&sb);
	return CLIENT_EXIT_ERROR;
}

/* Prints the error line of a call's status, unless the connection asks
 * for UNIMPLEMENTED to be left to the caller. */
static int status_error(client_conn *conn, const grpc_status *status)
{
	conn->last_status = status->code;
	if (conn->quiet_unimplemented &&
	    status->code == GRPC_STATUS_UNIMPLEMENTED)
		return CLIENT_EXIT_ERROR;
	/* h2c against a TLS server: the preface goes out, the server drops
	 * the connection at the first call.  Asked once per connection, and
	 * only for the transport's own messages (not a server's status). */
	if (status->code == GRPC_STATUS_UNAVAILABLE && conn->insecure &&
	    !conn->probed && conn->endpoint && status->message &&
	    strstr(status->message, "connection")) {
		conn->probed = true;
		if (cli_probe_speaks_tls(conn->endpoint))
			return client_error(
			    "UNAVAILABLE",
			    "%s speaks TLS, not plaintext HTTP/2: drop "
			    "--insecure (and give --ca-path FILE if its "
			    "certificate is not from a system CA)",
			    conn->endpoint);
	}
	return client_error(grpc_status_name(status->code), "%s",
	                    status->message && *status->message
	                        ? status->message
	                        : "(no message)");
}

/* ===================================================================== */
/* proto3 JSON                                                           */
/* ===================================================================== */

void client_json_string(strbuf *sb, const char *s, size_t len)
{
	api_json_string(sb, s, len);
}

/* The proto3 JSON mapping the HTTP gateway uses (api/pb_json.h), without
 * unpopulated fields: the canonical form, one line per response. */
void client_json_message(strbuf *sb, const ProtobufCMessage *message)
{
	pbj_encode(sb, message, 0);
}

void client_print_json(const ProtobufCMessage *message)
{
	strbuf sb;
	strbuf_init(&sb);
	client_json_message(&sb, message);
	fwrite(sb.data, 1, sb.len, stdout);
	fputc('\n', stdout);
	strbuf_free(&sb);
}

/* ===================================================================== */
/* Formatting references                                                 */
/* ===================================================================== */

char *client_format_subject(arena *a,
                            const Authzed__Api__V1__SubjectReference *s)
{
	const char *type = s->object ? s->object->object_type : "";
	const char *id = s->object ? s->object->object_id : "";
	if (s->optional_relation && *s->optional_relation)
		return arena_printf(a, "%s:%s#%s", type, id,
		                    s->optional_relation);
	return arena_printf(a, "%s:%s", type, id);
}

char *client_format_relationship(const Authzed__Api__V1__Relationship *rel)
{
	static const Authzed__Api__V1__ObjectReference no_object =
	    AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
	const Authzed__Api__V1__ObjectReference *res =
	    rel->resource ? rel->resource : &no_object;
	const Authzed__Api__V1__ObjectReference *subj =
	    rel->subject && rel->subject->object ? rel->subject->object
	                                         : &no_object;
	pemba_relationship r = {
	    .resource_type = res->object_type,
	    .resource_id = res->object_id,
	    .relation = rel->relation,
	    .subject_type = subj->object_type,
	    .subject_id = subj->object_id,
	    .subject_relation =
	        rel->subject ? rel->subject->optional_relation : NULL,
	};
	strbuf context;
	strbuf_init(&context);
	if (rel->optional_caveat && rel->optional_caveat->caveat_name &&
	    *rel->optional_caveat->caveat_name) {
		r.caveat_name = rel->optional_caveat->caveat_name;
		if (rel->optional_caveat->context &&
		    rel->optional_caveat->context->n_fields) {
			api_json_struct(&context,
			                rel->optional_caveat->context);
			r.caveat_context = context.data;
		}
	}
	if (rel->optional_expires_at) {
		r.expiration_ms = rel->optional_expires_at->seconds * 1000 +
		                  rel->optional_expires_at->nanos / 1000000;
	}
	char *formatted = pemba_format_relationship(&r);
	char *out = xstrdup(formatted ? formatted : "");
	pemba_free(formatted);
	strbuf_free(&context);
	return out;
}

/* ===================================================================== */
/* Parsing references                                                    */
/* ===================================================================== */

int client_parse_object(arena *a, const char *text, const char *what,
                        Authzed__Api__V1__ObjectReference *out)
{
	const char *colon = strchr(text, ':');
	if (!colon || colon == text || !colon[1] || strchr(text, '#') ||
	    strchr(text, '@')) {
		fprintf(stderr, "pemba: malformed %s '%s': expected TYPE:ID\n",
		        what, text);
		return -1;
	}
	authzed__api__v1__object_reference__init(out);
	out->object_type = arena_strndup(a, text, (size_t)(colon - text));
	out->object_id = arena_strdup(a, colon + 1);
	return 0;
}

int client_parse_subject(arena *a, const char *text,
                         Authzed__Api__V1__SubjectReference *out)
{
	authzed__api__v1__subject_reference__init(out);
	const char *hash = strchr(text, '#');
	const char *object_text = text;
	if (hash) {
		if (!hash[1]) {
			fprintf(stderr,
			        "pemba: malformed subject '%s': expected "
			        "TYPE:ID or TYPE:ID#RELATION\n",
			        text);
			return -1;
		}
		object_text = arena_strndup(a, text, (size_t)(hash - text));
		out->optional_relation = arena_strdup(a, hash + 1);
	}
	out->object = arena_alloc(a, sizeof(*out->object));
	return client_parse_object(a, object_text, "subject", out->object);
}

/* --- a small JSON reader, for caveat contexts ------------------------- */

typedef struct json_reader {
	arena *a;
	const char *p;
	const char *error;
} json_reader;

static Google__Protobuf__Value *json_read_value(json_reader *r, int depth);

static void json_skip_space(json_reader *r)
{
	while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
		r->p++;
}

/* Appends the UTF-8 encoding of code point cp. */
static void utf8_put(strbuf *sb, uint32_t cp)
{
	if (cp < 0x80) {
		strbuf_putc(sb, (char)cp);
	} else if (cp < 0x800) {
		strbuf_putc(sb, (char)(0xC0 | (cp >> 6)));
		strbuf_putc(sb, (char)(0x80 | (cp & 0x3F)));
	} else if (cp < 0x10000) {
		strbuf_putc(sb, (char)(0xE0 | (cp >> 12)));
		strbuf_putc(sb, (char)(0x80 | ((cp >> 6) & 0x3F)));
		strbuf_putc(sb, (char)(0x80 | (cp & 0x3F)));
	} else {
		strbuf_putc(sb, (char)(0xF0 | (cp >> 18)));
		strbuf_putc(sb, (char)(0x80 | ((cp >> 12) & 0x3F)));
		strbuf_putc(sb, (char)(0x80 | ((cp >> 6) & 0x3F)));
		strbuf_putc(sb, (char)(0x80 | (cp & 0x3F)));
	}
}

/* Four hex digits after "\\u" into *out; false (r->error set) if not. */
static bool json_read_hex4(json_reader *r, uint32_t *out)
{
	uint32_t cp = 0;
	for (int k = 0; k < 4; k++) {
		char h = *r->p;
		if (!isxdigit((unsigned char)h)) {
			r->error = "bad \\u escape";
			return false;
		}
		r->p++;
		cp = cp * 16 + (uint32_t)(isdigit((unsigned char)h)
		                              ? h - '0'
		                              : (tolower(h) - 'a' + 10));
	}
	*out = cp;
	return true;
}

static char *json_read_string(json_reader *r)
{
	if (*r->p != '"') {
		r->error = "expected a string";
		return NULL;
	}
	r->p++;
	strbuf sb;
	strbuf_init(&sb);
	while (*r->p != '"') {
		unsigned char c = (unsigned char)*r->p;
		if (c == '\0' || c < 0x20) {
			r->error = "unterminated string";
			strbuf_free(&sb);
			return NULL;
		}
		r->p++;
		if (c != '\\') {
			strbuf_putc(&sb, (char)c);
			continue;
		}
		char e = *r->p++;
		switch (e) {
		case '"':
			strbuf_putc(&sb, '"');
			break;
		case '\\':
			strbuf_putc(&sb, '\\');
			break;
		case '/':
			strbuf_putc(&sb, '/');
			break;
		case 'b':
			strbuf_putc(&sb, '\b');
			break;
		case 'f':
			strbuf_putc(&sb, '\f');
			break;
		case 'n':
			strbuf_putc(&sb, '\n');
			break;
		case 'r':
			strbuf_putc(&sb, '\r');
			break;
		case 't':
			strbuf_putc(&sb, '\t');
			break;
		case 'u': {
			uint32_t cp;
			if (!json_read_hex4(r, &cp)) {
				strbuf_free(&sb);
				return NULL;
			}
			/* A string is a C string on its way to the server:
			 * a NUL would cut it (and the server refuses it). */
			if (cp == 0) {
				r->error = "\\u0000 (NUL) is not supported in "
				           "strings";
				strbuf_free(&sb);
				return NULL;
			}
			/* UTF-16 surrogates come in pairs: one code point. */
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				uint32_t lo;
				if (r->p[0] != '\\' || r->p[1] != 'u') {
					r->error = "unpaired surrogate in a "
					           "\\u escape";
					strbuf_free(&sb);
					return NULL;
				}
				r->p += 2;
				if (!json_read_hex4(r, &lo)) {
					strbuf_free(&sb);
					return NULL;
				}
				if (lo < 0xDC00 || lo > 0xDFFF) {
					r->error = "unpaired surrogate in a "
					           "\\u escape";
					strbuf_free(&sb);
					return NULL;
				}
				cp = 0x10000 + ((cp - 0xD800) << 10) +
				     (lo - 0xDC00);
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				r->error = "unpaired surrogate in a \\u escape";
				strbuf_free(&sb);
				return NULL;
			}
			utf8_put(&sb, cp);
			break;
		}
		default:
			r->error = "bad escape";
			strbuf_free(&sb);
			return NULL;
		}
	}
	r->p++;
	if (utf8_check(sb.data, sb.len) != sb.len) {
		r->error = "a string is not valid UTF-8";
		strbuf_free(&sb);
		return NULL;
	}
	char *s = arena_strndup(r->a, sb.data, sb.len);
	strbuf_free(&sb);
	return s;
}

static Google__Protobuf__Struct *json_read_object(json_reader *r, int depth)
{
	Google__Protobuf__Struct *s = arena_alloc(r->a, sizeof(*s));
	google__protobuf__struct__init(s);
	r->p++; /* '{' */
	json_skip_space(r);
	size_t cap = 0;
	if (*r->p == '}') {
		r->p++;
		return s;
	}
	for (;;) {
		json_skip_space(r);
		if (*r->p != '"') {
			r->error = *r->p == '}'
			               ? "expected a quoted key (no comma "
			                 "before '}')"
			               : "expected a quoted key (JSON keys "
			                 "are in double quotes)";
			return NULL;
		}
		char *key = json_read_string(r);
		if (!key)
			return NULL;
		json_skip_space(r);
		if (*r->p != ':') {
			r->error = "expected ':'";
			return NULL;
		}
		r->p++;
		Google__Protobuf__Value *v = json_read_value(r, depth + 1);
		if (!v)
			return NULL;
		if (s->n_fields == cap) {
			cap = cap ? cap * 2 : 8;
			Google__Protobuf__Struct__FieldsEntry **grown =
			    arena_alloc(r->a, cap * sizeof(*grown));
			if (s->n_fields)
				memcpy(grown, s->fields,
				       s->n_fields * sizeof(*grown));
			s->fields = grown;
		}
		Google__Protobuf__Struct__FieldsEntry *e =
		    arena_alloc(r->a, sizeof(*e));
		google__protobuf__struct__fields_entry__init(e);
		e->key = key;
		e->value = v;
		s->fields[s->n_fields++] = e;
		json_skip_space(r);
		if (*r->p == ',') {
			r->p++;
			continue;
		}
		if (*r->p == '}') {
			r->p++;
			return s;
		}
		r->error = "expected ',' or '}'";
		return NULL;
	}
}

static Google__Protobuf__Value *json_read_value(json_reader *r, int depth)
{
	if (depth > 64) {
		r->error = "nested too deeply";
		return NULL;
	}
	json_skip_space(r);
	Google__Protobuf__Value *v = arena_alloc(r->a, sizeof(*v));
	google__protobuf__value__init(v);
	char c = *r->p;
	if (c == '{') {
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
		v->struct_value = json_read_object(r, depth);
		return v->struct_value ? v : NULL;
	}
	if (c == '[') {
		r->p++;
		Google__Protobuf__ListValue *l = arena_alloc(r->a, sizeof(*l));
		google__protobuf__list_value__init(l);
		size_t cap = 0;
		json_skip_space(r);
		if (*r->p == ']') {
			r->p++;
		} else {
			for (;;) {
				Google__Protobuf__Value *item =
				    json_read_value(r, depth + 1);
				if (!item)
					return NULL;
				if (l->n_values == cap) {
					cap = cap ? cap * 2 : 8;
					Google__Protobuf__Value **grown =
					    arena_alloc(r->a,
					                cap * sizeof(*grown));
					if (l->n_values)
						memcpy(grown, l->values,
						       l->n_values *
						           sizeof(*grown));
					l->values = grown;
				}
				l->values[l->n_values++] = item;
				json_skip_space(r);
				if (*r->p == ',') {
					r->p++;
					continue;
				}
				if (*r->p == ']') {
					r->p++;
					break;
				}
				r->error = "expected ',' or ']'";
				return NULL;
			}
		}
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
		v->list_value = l;
		return v;
	}
	if (c == '"') {
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		v->string_value = json_read_string(r);
		return v->string_value ? v : NULL;
	}
	if (strncmp(r->p, "true", 4) == 0 || strncmp(r->p, "false", 5) == 0) {
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
		v->bool_value = c == 't';
		r->p += c == 't' ? 4 : 5;
		return v;
	}
	if (strncmp(r->p, "null", 4) == 0) {
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
		r->p += 4;
		return v;
	}
	if (c == '-' || isdigit((unsigned char)c)) {
		char *end;
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
		v->number_value = strtod(r->p, &end);
		if (end == r->p) {
			r->error = "bad number";
			return NULL;
		}
		r->p = end;
		return v;
	}
	r->error = "unexpected character";
	return NULL;
}

Google__Protobuf__Struct *client_parse_json_object(arena *a, const char *text,
                                                   const char **error)
{
	json_reader r = {.a = a, .p = text};
	json_skip_space(&r);
	if (*r.p != '{') {
		*error = "expected a JSON object, e.g. '{\"name\": \"value\"}'";
		return NULL;
	}
	Google__Protobuf__Struct *s = json_read_object(&r, 0);
	if (s) {
		json_skip_space(&r);
		if (*r.p)
			r.error = "text after the JSON object";
	}
	if (r.error) {
		/* Where, and what was there: a shell-quoted JSON object is
		 * easy to get wrong, and "expected a string" alone does not
		 * say that a trailing comma is the problem. */
		size_t at = (size_t)(r.p - text);
		*error = arena_printf(
		    a,
		    "at character %zu (%s%.12s%s): %s; give one JSON object, "
		    "e.g. '{\"name\": \"value\", \"n\": 3}'",
		    at + 1, *r.p ? "near '" : "the end of the text", r.p,
		    *r.p ? "'" : "", r.error);
		return NULL;
	}
	return s;
}

Authzed__Api__V1__Relationship *
client_parse_relationship(arena *a, const char **words, int count)
{
	const char *text = words[0];
	if (count == 3)
		text =
		    arena_printf(a, "%s#%s@%s", words[0], words[1], words[2]);
	pemba_relationship parsed;
	char *storage = NULL;
	pemba_error err;
	if (pemba_parse_relationship(text, &parsed, &storage, &err) != 0) {
		fprintf(stderr, "pemba: malformed relationship '%s': %s\n",
		        text, err.message);
		return NULL;
	}
	const char *why = NULL;
	Authzed__Api__V1__Relationship *rel =
	    client_relationship_from_parsed(a, &parsed, &why);
	if (!rel)
		fprintf(stderr, "pemba: malformed caveat context in '%s': %s\n",
		        text, why);
	pemba_free(storage);
	return rel;
}

Authzed__Api__V1__Relationship *
client_relationship_from_parsed(arena *a, const pemba_relationship *parsed_in,
                                const char **error)
{
	const pemba_relationship parsed = *parsed_in;
	Authzed__Api__V1__Relationship *rel = arena_alloc(a, sizeof(*rel));
	authzed__api__v1__relationship__init(rel);
	rel->resource = arena_alloc(a, sizeof(*rel->resource));
	authzed__api__v1__object_reference__init(rel->resource);
	rel->resource->object_type = arena_strdup(a, parsed.resource_type);
	rel->resource->object_id = arena_strdup(a, parsed.resource_id);
	rel->relation = arena_strdup(a, parsed.relation);
	rel->subject = arena_alloc(a, sizeof(*rel->subject));
	authzed__api__v1__subject_reference__init(rel->subject);
	rel->subject->object = arena_alloc(a, sizeof(*rel->subject->object));
	authzed__api__v1__object_reference__init(rel->subject->object);
	rel->subject->object->object_type =
	    arena_strdup(a, parsed.subject_type);
	rel->subject->object->object_id = arena_strdup(a, parsed.subject_id);
	if (parsed.subject_relation && *parsed.subject_relation &&
	    strcmp(parsed.subject_relation, "...") != 0)
		rel->subject->optional_relation =
		    arena_strdup(a, parsed.subject_relation);
	Authzed__Api__V1__Relationship *result = rel;
	if (parsed.caveat_name && *parsed.caveat_name) {
		rel->optional_caveat =
		    arena_alloc(a, sizeof(*rel->optional_caveat));
		authzed__api__v1__contextualized_caveat__init(
		    rel->optional_caveat);
		rel->optional_caveat->caveat_name =
		    arena_strdup(a, parsed.caveat_name);
		if (parsed.caveat_context && *parsed.caveat_context) {
			const char *why = NULL;
			rel->optional_caveat->context =
			    client_parse_json_object(a, parsed.caveat_context,
			                             &why);
			if (!rel->optional_caveat->context) {
				*error = why;
				result = NULL;
			}
		}
	}
	if (parsed.expiration_ms) {
		Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof(*t));
		google__protobuf__timestamp__init(t);
		t->seconds = parsed.expiration_ms / 1000;
		t->nanos = (int32_t)(parsed.expiration_ms % 1000) * 1000000;
		rel->optional_expires_at = t;
	}
	return result;
}

int client_parse_subject_filter(arena *a, const char *text,
                                Authzed__Api__V1__SubjectFilter *out)
{
	authzed__api__v1__subject_filter__init(out);
	const char *hash = strchr(text, '#');
	size_t object_len = hash ? (size_t)(hash - text) : strlen(text);
	const char *colon = memchr(text, ':', object_len);
	size_t type_len = colon ? (size_t)(colon - text) : object_len;
	if (type_len == 0 || (colon && colon + 1 == text + object_len) ||
	    (hash && !hash[1]) || strchr(text, '@'))
		return -1;
	out->subject_type = arena_strndup(a, text, type_len);
	if (colon)
		out->optional_subject_id =
		    arena_strndup(a, colon + 1, object_len - type_len - 1);
	if (hash) {
		out->optional_relation =
		    arena_alloc(a, sizeof(*out->optional_relation));
		authzed__api__v1__subject_filter__relation_filter__init(
		    out->optional_relation);
		/* "..." asks for subjects without a relation, as SpiceDB's
		 * filter does with an empty relation. */
		out->optional_relation->relation =
		    strcmp(hash + 1, "...") == 0 ? ""
		                                 : arena_strdup(a, hash + 1);
	}
	return 0;
}

int client_parse_relationship_filter(arena *a, const char *usage,
                                     const char **words, int count,
                                     Authzed__Api__V1__RelationshipFilter *out)
{
	authzed__api__v1__relationship_filter__init(out);
	if (count >= 1) {
		const char *res = words[0];
		const char *colon = strchr(res, ':');
		if (res[0] == ':' || strchr(res, '#') || strchr(res, '@') ||
		    (colon && !colon[1]))
			return client_usage_error(
			    usage,
			    "malformed resource filter '%s': expected TYPE or "
			    "TYPE:ID",
			    res);
		if (colon) {
			out->resource_type =
			    arena_strndup(a, res, (size_t)(colon - res));
			out->optional_resource_id = arena_strdup(a, colon + 1);
		} else {
			out->resource_type = arena_strdup(a, res);
		}
	}
	if (count >= 2)
		out->optional_relation = arena_strdup(a, words[1]);
	if (count >= 3) {
		Authzed__Api__V1__SubjectFilter *subject =
		    arena_alloc(a, sizeof(*subject));
		if (client_parse_subject_filter(a, words[2], subject) != 0)
			return client_usage_error(
			    usage,
			    "malformed subject filter '%s': expected "
			    "TYPE[:ID][#RELATION]",
			    words[2]);
		out->optional_subject_filter = subject;
	}
	return 0;
}

Authzed__Api__V1__Consistency *client_consistency(arena *a,
                                                  const client_options *o)
{
	if (o->consistency == CLIENT_CONSISTENCY_DEFAULT)
		return NULL;
	Authzed__Api__V1__Consistency *c = arena_alloc(a, sizeof(*c));
	authzed__api__v1__consistency__init(c);
	Authzed__Api__V1__ZedToken *token = NULL;
	if (o->consistency_token) {
		token = arena_alloc(a, sizeof(*token));
		authzed__api__v1__zed_token__init(token);
		token->token = arena_strdup(a, o->consistency_token);
	}
	switch (o->consistency) {
	case CLIENT_CONSISTENCY_MIN_LATENCY:
		c->requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_MINIMIZE_LATENCY;
		c->minimize_latency = 1;
		break;
	case CLIENT_CONSISTENCY_FULL:
		c->requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
		c->fully_consistent = 1;
		break;
	case CLIENT_CONSISTENCY_AT_LEAST:
		c->requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH;
		c->at_least_as_fresh = token;
		break;
	case CLIENT_CONSISTENCY_AT_EXACT:
		c->requirement_case =
		    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
		c->at_exact_snapshot = token;
		break;
	default:
		break;
	}
	return c;
}

/* ===================================================================== */
/* Connection and calls                                                  */
/* ===================================================================== */

int client_connect(const client_options *o, client_conn *conn)
{
	memset(conn, 0, sizeof(*conn));
	grpc_client_options go;
	grpc_client_options_init(&go);
	go.target = o->endpoint;
	go.tls = !o->insecure;
	go.ca_file = o->ca_path;
	go.insecure_skip_verify = o->skip_verify_ca;
	pemba_error err;
	memset(&err, 0, sizeof(err));
	if (grpc_client_connect(&go, &conn->grpc, &err) != 0) {
		const char *m = err.message;
		/* TLS against a plaintext server fails in the handshake
		 * ("wrong version number"): ask what it speaks. */
		if (!o->insecure && strstr(m, "TLS handshake") &&
		    cli_probe_speaks_h2c(o->endpoint))
			return client_error(
			    "UNAVAILABLE",
			    "cannot connect to %s: the server speaks plaintext "
			    "HTTP/2 (h2c), not TLS: add --insecure",
			    o->endpoint);
		/* The transport's message may already name the address. */
		if (strncmp(m, "cannot connect to ", 18) == 0)
			return client_error("UNAVAILABLE", "%s", m);
		return client_error("UNAVAILABLE", "cannot connect to %s: %s",
		                    o->endpoint, m);
	}
	conn->endpoint = o->endpoint;
	conn->insecure = o->insecure;
	if (o->token && *o->token) {
		size_t n = strlen(o->token) + sizeof("Bearer ");
		conn->authorization = xmalloc(n);
		snprintf(conn->authorization, n, "Bearer %s", o->token);
		conn->metadata[0].name = "authorization";
		conn->metadata[0].value = conn->authorization;
		conn->metadata[0].value_len = strlen(conn->authorization);
		conn->metadata_count = 1;
	}
	return 0;
}

void client_close(client_conn *conn)
{
	grpc_client_close(conn->grpc);
	free(conn->authorization);
	memset(conn, 0, sizeof(*conn));
}

/* Packs a message into a malloc'd buffer. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = xmalloc(*len ? *len : 1);
	protobuf_c_message_pack(m, buf);
	return buf;
}

ProtobufCMessage *client_unary(client_conn *conn, const char *path,
                               const ProtobufCMessage *request,
                               const ProtobufCMessageDescriptor *response_type)
{
	size_t len;
	uint8_t *buf = pack(request, &len);
	uint8_t *response = NULL;
	size_t response_len = 0;
	grpc_status status = {0};
	int code = grpc_client_unary(conn->grpc, path, conn->metadata,
	                             conn->metadata_count, 0, buf, len,
	                             &response, &response_len, &status);
	free(buf);
	conn->last_status = code;
	if (code != GRPC_STATUS_OK) {
		status_error(conn, &status);
		grpc_status_clear(&status);
		free(response);
		return NULL;
	}
	grpc_status_clear(&status);
	ProtobufCMessage *m = protobuf_c_message_unpack(response_type, NULL,
	                                                response_len, response);
	free(response);
	if (!m)
		client_error("INTERNAL", "malformed %s from the server",
		             response_type->name);
	return m;
}

typedef struct stream_ctx {
	const ProtobufCMessageDescriptor *type;
	client_stream_fn on_message;
	void *ctx;
	bool malformed; /* a response did not unpack */
	bool stopped;   /* on_message asked to stop */
} stream_ctx;

static int on_stream_message(void *ctx, const uint8_t *data, size_t len)
{
	stream_ctx *s = ctx;
	ProtobufCMessage *m =
	    protobuf_c_message_unpack(s->type, NULL, len, data);
	if (!m) {
		s->malformed = true;
		return 1;
	}
	int r = s->on_message(s->ctx, m);
	protobuf_c_message_free_unpacked(m, NULL);
	if (r)
		s->stopped = true;
	return r;
}

int client_server_streaming(client_conn *conn, const char *path,
                            const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_type,
                            int timeout_ms, client_stream_fn on_message,
                            void *ctx)
{
	size_t len;
	uint8_t *buf = pack(request, &len);
	stream_ctx s = {
	    .type = response_type, .on_message = on_message, .ctx = ctx};
	grpc_status status = {0};
	int code = grpc_client_server_streaming(
	    conn->grpc, path, conn->metadata, conn->metadata_count, timeout_ms,
	    buf, len, on_stream_message, &s, &status);
	free(buf);
	int result = 0;
	conn->last_status = code;
	if (s.malformed)
		result =
		    client_error("INTERNAL", "malformed %s from the server",
		                 response_type->name);
	else if (code != GRPC_STATUS_OK && !s.stopped)
		result = status_error(conn, &status);
	grpc_status_clear(&status);
	return result;
}

typedef struct upload_ctx {
	client_next_fn next;
	void *ctx;
	uint8_t *buf; /* the last packed request */
	bool failed;  /* next returned -1 */
} upload_ctx;

static int on_next_request(void *ctx, const void **data, size_t *len)
{
	upload_ctx *u = ctx;
	ProtobufCMessage *request = NULL;
	int r = u->next(u->ctx, &request);
	if (r <= 0) {
		u->failed = r < 0;
		return r;
	}
	free(u->buf);
	u->buf = pack(request, len);
	*data = u->buf;
	return 1;
}

ProtobufCMessage *
client_client_streaming(client_conn *conn, const char *path,
                        client_next_fn next, void *ctx,
                        const ProtobufCMessageDescriptor *response_type)
{
	upload_ctx u = {.next = next, .ctx = ctx};
	uint8_t *response = NULL;
	size_t response_len = 0;
	grpc_status status = {0};
	int code = grpc_client_streaming(
	    conn->grpc, path, conn->metadata, conn->metadata_count, 0,
	    on_next_request, &u, NULL, NULL, &response, &response_len, &status);
	free(u.buf);
	conn->last_status = code;
	ProtobufCMessage *m = NULL;
	if (code != GRPC_STATUS_OK) {
		if (!u.failed)
			status_error(conn, &status);
	} else {
		m = protobuf_c_message_unpack(response_type, NULL, response_len,
		                              response);
		if (!m)
			client_error("INTERNAL", "malformed %s from the server",
			             response_type->name);
	}
	grpc_status_clear(&status);
	free(response);
	return m;
}

int client_confirm(const char *question, bool yes)
{
	if (yes)
		return 0;
	if (!isatty(STDIN_FILENO)) {
		fprintf(stderr,
		        "pemba: refusing without confirmation: stdin is "
		        "not a terminal; pass --yes\n");
		return CLIENT_EXIT_ERROR;
	}
	fprintf(stderr, "%s [y/N] ", question);
	fflush(stderr);
	char answer[16] = "";
	if (!fgets(answer, sizeof(answer), stdin) ||
	    (answer[0] != 'y' && answer[0] != 'Y')) {
		fprintf(stderr, "pemba: not confirmed; nothing changed\n");
		return CLIENT_EXIT_ERROR;
	}
	return 0;
}

int client_dispatch(const char *command, const char *usage_head,
                    const client_subcommand *subs, size_t nsubs, int argc,
                    char **argv)
{
	if (argc < 2) {
		fputs(usage_head, stderr);
		return CLIENT_EXIT_ERROR;
	}
	const char *sub = argv[1];
	if (client_is_help(sub) || strcmp(sub, "help") == 0) {
		fputs(usage_head, stdout);
		return CLIENT_EXIT_OK;
	}
	for (size_t i = 0; i < nsubs; i++)
		if (strcmp(sub, subs[i].name) == 0)
			return subs[i].run(argc - 1, argv + 1);
	fprintf(stderr, "pemba: unknown %s subcommand '%s'\n\n", command, sub);
	fputs(usage_head, stderr);
	return CLIENT_EXIT_ERROR;
}

int client_write_updates(client_conn *conn,
                         Authzed__Api__V1__RelationshipUpdate **updates,
                         size_t n, grpc_status *status)
{
	return client_write_updates_md(conn, updates, n, NULL, status);
}

int client_write_updates_md(client_conn *conn,
                            Authzed__Api__V1__RelationshipUpdate **updates,
                            size_t n, Google__Protobuf__Struct *metadata,
                            grpc_status *status)
{
	Authzed__Api__V1__WriteRelationshipsRequest req =
	    AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
	req.n_updates = n;
	req.updates = updates;
	req.optional_transaction_metadata = metadata;
	size_t len = protobuf_c_message_get_packed_size(&req.base);
	uint8_t *buf = xmalloc(len ? len : 1);
	protobuf_c_message_pack(&req.base, buf);
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	int code = grpc_client_unary(
	    conn->grpc, "/authzed.api.v1.PermissionsService/WriteRelationships",
	    conn->metadata, conn->metadata_count, 0, buf, len, &resp, &resp_len,
	    status);
	free(buf);
	free(resp);
	return code;
}

/* ===================================================================== */
/* Schema text                                                           */
/* ===================================================================== */

/* The definitions of a schema text in order: the words after
 * `definition` at the start of a line (ReadSchema returns printed schema
 * text, one definition per block at column 0).  Heap array of heap
 * strings, NULL-terminated. */
char **client_schema_definitions(const char *text)
{
	size_t n = 0, cap = 8;
	char **defs = xmalloc(cap * sizeof(*defs));
	for (const char *p = text; p && *p;) {
		if (strncmp(p, "definition", 10) == 0 &&
		    (p[10] == ' ' || p[10] == '\t')) {
			const char *q = p + 10;
			while (*q == ' ' || *q == '\t')
				q++;
			size_t len = strcspn(q, " \t{\n");
			if (len) {
				if (n + 2 > cap)
					defs = xrealloc(
					    defs, (cap *= 2) * sizeof(*defs));
				defs[n++] = xstrndup(q, len);
			}
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	defs[n] = NULL;
	return defs;
}

void client_free_definitions(char **defs)
{
	for (char **d = defs; d && *d; d++)
		free(*d);
	free(defs);
}
