/*
 * client.h -- what the client commands (schema, relationship, permission,
 * watch) share: the connection flags, the gRPC connection, calls that pack
 * and unpack protobuf messages, error output, proto3-JSON output and the
 * parsing of object and subject references on the command line.
 *
 * Exit statuses of every client command (CLIENT_EXIT_*): 0 success; 1 only
 * where a command answers a yes/no question and the answer is no
 * (`permission check`); 2 on any error: usage, connection, or a status other
 * than OK from the server.  Errors from the server or the connection are one
 * line on stderr: `pemba: <STATUS_NAME>: <message>`.
 */
#ifndef PEMBA_CLI_CLIENT_H
#define PEMBA_CLI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "api/grpc.h"
#include "authzed/api/v1/core.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "util/arena.h"
#include "util/strbuf.h"

enum {
	CLIENT_EXIT_OK = 0,
	CLIENT_EXIT_NO = 1,    /* the answer is no (permission check) */
	CLIENT_EXIT_ERROR = 2, /* usage, connection or server error */
};

/* ===================================================================== */
/* Options and argument parsing                                          */
/* ===================================================================== */

typedef enum client_consistency_kind {
	CLIENT_CONSISTENCY_DEFAULT = 0, /* not sent: the server's default */
	CLIENT_CONSISTENCY_MIN_LATENCY,
	CLIENT_CONSISTENCY_FULL,
	CLIENT_CONSISTENCY_AT_LEAST,
	CLIENT_CONSISTENCY_AT_EXACT,
} client_consistency_kind;

typedef struct client_options {
	const char *endpoint; /* "host:port" */
	const char *token;    /* bearer token, NULL or "" for none */
	const char *context;  /* --context NAME, NULL: none given */
	const char *ca_path;  /* PEM CA bundle for TLS, NULL: system CAs */
	bool insecure;        /* plaintext h2c instead of TLS */
	bool skip_verify_ca;  /* TLS without verifying the certificate */
	bool json;            /* proto3-JSON output, one object per line */
	client_consistency_kind consistency;
	const char *consistency_token; /* for AT_LEAST / AT_EXACT */
} client_options;

/* Flags a command accepts beyond the connection ones. */
enum {
	CLIENT_ACCEPT_CONSISTENCY = 1u << 0,
	/* No contexts (no --context, none read): commands that name their
	 * servers by their own flags (mirror, verify, proxy). */
	CLIENT_NO_CONTEXT = 1u << 1,
};

/* Help text of the connection flags and of the consistency flags, each a
 * block of lines ending in a newline, for appending to a usage text. */
extern const char client_connection_help[];
extern const char client_consistency_help[];

/* A command's own flag: called for an option the shared parser does not
 * know, with *i at it.  Returns 1 when it consumed the option (advancing *i
 * past any value), 0 when it does not know it, -1 after printing a usage
 * error message (without the usage). */
typedef int (*client_flag_fn)(void *ctx, int argc, char **argv, int *i);

/* One command line, parsed. */
typedef struct client_args {
	const char *usage;  /* full usage text printed by --help (stdout) and
	                       after usage errors (stderr) */
	unsigned accepts;   /* CLIENT_ACCEPT_* */
	int min_positional; /* positional arguments required ... */
	int max_positional; /* ... and allowed (at most 8) */
	client_flag_fn extra;
	void *extra_ctx;
	/* out */
	client_options options;
	const char *positional[8];
	int npositional;
} client_args;

/* Parses argv[1..argc) (argv[0] is the command's own name) into args:
 * flags, then the environment (PEMBA_ENDPOINT, PEMBA_TOKEN), then the
 * context (--context NAME or the current one, context.h) for what the
 * flags left unset, then the default endpoint; flags
 * ("--flag VALUE" or "--flag=VALUE"; "--" ends the flags; "-" alone is a
 * positional argument).  Returns -1 when the command should go on;
 * otherwise the exit status to return at once: 0 after printing the usage
 * for --help / -h, 2 after printing a usage error. */
int client_parse_args(client_args *args, int argc, char **argv);

/* For client_flag_fn implementations: if argv[*i] is `name` ("--name
 * VALUE" or "--name=VALUE"), sets *value, advances *i past the value and
 * returns 1; returns 0 if it is another option; -1 (message printed) when
 * the value is missing. */
int client_flag_value(const char *name, int argc, char **argv, int *i,
                      const char **value);

/* For client_flag_fn implementations: if argv[*i] is exactly the boolean
 * flag `name`, sets *value and returns 1; otherwise 0. */
int client_flag_bool(const char *name, char **argv, const int *i, bool *value);

/* Prints "pemba: <message>" and the usage's synopsis to stderr; returns
 * CLIENT_EXIT_ERROR. */
int client_usage_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints the usage's synopsis (its first paragraph) and a pointer to
 * --help on stderr. */
void client_print_short_usage(const char *usage);

/* Asks `question [y/N]` on stderr and reads the answer from stdin, unless
 * yes.  Returns 0 to go on; CLIENT_EXIT_ERROR (message printed) when the
 * answer is not yes or stdin is not a terminal (pass --yes). */
int client_confirm(const char *question, bool yes);

/* True for "--help" and "-h". */
bool client_is_help(const char *arg);

/* A subcommand of a client command: `pemba <command> <name> ...`. */
typedef struct client_subcommand {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand */
} client_subcommand;

/* Runs the subcommand argv[1] names (argv[0] is the command).  No
 * subcommand prints usage_head to stderr (exit error); help / --help
 * prints it to stdout (exit 0); an unknown one says so and prints it. */
int client_dispatch(const char *command, const char *usage_head,
                    const client_subcommand *subs, size_t nsubs, int argc,
                    char **argv);

/* ===================================================================== */
/* Output                                                                */
/* ===================================================================== */

/* Prints `pemba: <status_name>: <message>` on stderr (one line: newlines
 * in message become spaces).  Returns CLIENT_EXIT_ERROR. */
int client_error(const char *status_name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends message as proto3 JSON (lowerCamelCase names, fields with
 * default values left out, enums by name, 64-bit integers as strings,
 * Struct/Value/ListValue/Timestamp as their JSON forms). */
void client_json_message(strbuf *sb, const ProtobufCMessage *message);

/* Prints message as one line of proto3 JSON on stdout. */
void client_print_json(const ProtobufCMessage *message);

/* Appends the JSON string literal for s[0..len). */
void client_json_string(strbuf *sb, const char *s, size_t len);

/* Formats a relationship as `type:id#rel@type:id[#rel]`, with
 * `[caveat:{context}]` and `[expiration:...]` when it has them.  Caller
 * frees with free(). */
char *client_format_relationship(const Authzed__Api__V1__Relationship *rel);

/* "type:id" or "type:id#relation" of a subject; allocated in a. */
char *client_format_subject(arena *a,
                            const Authzed__Api__V1__SubjectReference *s);

/* ===================================================================== */
/* References on the command line                                        */
/* ===================================================================== */

/* Parses "TYPE:ID" into *out (strings allocated in a).  Returns 0, or -1
 * after printing why (naming `what` and the text) on stderr. */
int client_parse_object(arena *a, const char *text, const char *what,
                        Authzed__Api__V1__ObjectReference *out);

/* Parses "TYPE:ID" or "TYPE:ID#RELATION" into *out, whose object is
 * allocated in a.  Returns 0 or -1 (usage error printed). */
int client_parse_subject(arena *a, const char *text,
                         Authzed__Api__V1__SubjectReference *out);

/* Parses a relationship given either as one string
 * "res_type:id#relation@subj_type:id[#rel][[caveat...]][[expiration:T]]"
 * (count == 1) or as the three words RESOURCE RELATION SUBJECT (count ==
 * 3), into a message allocated in a.  Returns it, or NULL after printing a
 * usage error. */
Authzed__Api__V1__Relationship *
client_parse_relationship(arena *a, const char **words, int count);

/* The message for a relationship parsed by pemba_parse_relationship,
 * allocated in a (strings copied).  NULL with *error set to a static
 * description when its caveat context is not a JSON object. */
Authzed__Api__V1__Relationship *
client_relationship_from_parsed(arena *a, const pemba_relationship *parsed,
                                const char **error);

/* Parses the subject filter "TYPE[:ID][#RELATION]" (`#...`: subjects
 * without a relation) into *out, strings in a.  Returns 0, or -1 when
 * malformed (nothing printed: the caller names the flag or word). */
int client_parse_subject_filter(arena *a, const char *text,
                                Authzed__Api__V1__SubjectFilter *out);

/* Parses the filter words [TYPE[:ID]] [RELATION] [SUBJECT] (count 0..3;
 * SUBJECT is TYPE[:ID][#RELATION], `#...` meaning no relation; an empty
 * word leaves its position empty) into *out, strings in a.  Returns 0, or
 * CLIENT_EXIT_ERROR after printing why and the usage's synopsis on
 * stderr. */
int client_parse_relationship_filter(arena *a, const char *usage,
                                     const char **words, int count,
                                     Authzed__Api__V1__RelationshipFilter *out);

/* Parses a JSON object (a caveat context) into a Struct allocated in a.
 * Returns it, or NULL with *error set to a description (allocated in a
 * or static) naming the character position and what was expected. */
struct Google__Protobuf__Struct;
struct Google__Protobuf__Struct *
client_parse_json_object(arena *a, const char *text, const char **error);

/* The Consistency message the options ask for, allocated in a; NULL when
 * the server's default is wanted. */
Authzed__Api__V1__Consistency *client_consistency(arena *a,
                                                  const client_options *o);

/* ===================================================================== */
/* Connection and calls                                                  */
/* ===================================================================== */

typedef struct client_conn {
	grpc_client *grpc;
	int last_status;          /* gRPC status code of the last call */
	bool quiet_unimplemented; /* set by the caller: an UNIMPLEMENTED
	                             status is not printed (the caller falls
	                             back to another method) */
	grpc_metadata metadata[1];
	size_t metadata_count;
	char *authorization; /* "Bearer TOKEN", heap */
	const char *endpoint; /* the options', for error messages */
	bool insecure;        /* connected in plaintext (h2c) */
	bool probed;          /* asked once whether the server wants TLS */
} client_conn;

/* Connects as the options say.  Returns 0, or CLIENT_EXIT_ERROR after
 * printing `pemba: UNAVAILABLE: ...`. */
int client_connect(const client_options *o, client_conn *conn);

void client_close(client_conn *conn);

/* A unary call: packs request, calls `path`, unpacks the response as
 * response_type.  Returns the response (free with
 * protobuf_c_message_free_unpacked(m, NULL)), or NULL after printing the
 * error line. */
ProtobufCMessage *client_unary(client_conn *conn, const char *path,
                               const ProtobufCMessage *request,
                               const ProtobufCMessageDescriptor *response_type);

/* Called per response of a server-streaming call; message is freed after
 * the call.  Return 0 to go on, non-zero to stop (cancels the call). */
typedef int (*client_stream_fn)(void *ctx, const ProtobufCMessage *message);

/* A server-streaming call; each response, unpacked as response_type, goes
 * to on_message.  timeout_ms 0: none.  Returns 0 when the call ended OK or
 * on_message stopped it, CLIENT_EXIT_ERROR after printing the error line. */
int client_server_streaming(client_conn *conn, const char *path,
                            const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_type,
                            int timeout_ms, client_stream_fn on_message,
                            void *ctx);

/* Supplies the next request of a client-streaming call: returns 1 with
 * *request set (owned by the callee, valid until the next call), 0 at the
 * end of the requests, -1 to cancel the call (the callee has printed
 * why). */
typedef int (*client_next_fn)(void *ctx, ProtobufCMessage **request);

/* A client-streaming call: sends the requests next supplies, then unpacks
 * the single response as response_type.  Returns it (free with
 * protobuf_c_message_free_unpacked), or NULL after printing the error line
 * (none when next cancelled, nor for UNIMPLEMENTED with
 * quiet_unimplemented); conn->last_status holds the call's status. */
ProtobufCMessage *
client_client_streaming(client_conn *conn, const char *path,
                        client_next_fn next, void *ctx,
                        const ProtobufCMessageDescriptor *response_type);

/* One WriteRelationships call of updates[0..n) (at most the server's
 * limit, 1000 for SpiceDB and pemba): one transaction on the server.
 * Returns the gRPC code; *status is filled (caller clears with
 * grpc_status_clear); nothing is printed.  Shared by `backup restore` and
 * `mirror`. */
int client_write_updates(client_conn *conn,
                         Authzed__Api__V1__RelationshipUpdate **updates,
                         size_t n, grpc_status *status);
/* Same, with transaction metadata (NULL: none). */
int client_write_updates_md(client_conn *conn,
                            Authzed__Api__V1__RelationshipUpdate **updates,
                            size_t n, Google__Protobuf__Struct *metadata,
                            grpc_status *status);

/* The definitions of a schema text as ReadSchema prints it (`definition
 * NAME` at the start of a line), in order: a heap array of heap strings,
 * NULL-terminated; free with client_free_definitions.  Shared by `backup
 * create` and `mirror` (their ReadRelationships fallbacks). */
char **client_schema_definitions(const char *text);
void client_free_definitions(char **defs);

#endif
