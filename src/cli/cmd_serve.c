/*
 * cmd_serve.c -- `pemba serve` and `pemba serve-testing`: run the gRPC
 * server (src/server) until SIGTERM or SIGINT.
 *
 * serve refuses to start without a preshared key unless --no-auth is given,
 * and --no-auth only on a loopback address, so a server reachable from the
 * network is never open by accident.  One line goes to stderr when the
 * server starts and one when it stops.
 *
 * Exit status: 0 after a clean shutdown, 1 the server could not start or
 * failed, 2 usage error.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "server/server.h"
#include "store/store.h"
#include "util/utf8.h"

#define DEFAULT_ADDR "127.0.0.1:50051"
#define DEFAULT_DATASTORE "sqlite://./pemba.db"
/* SpiceDB's --metrics-addr default. */
#define DEFAULT_METRICS_ADDR "127.0.0.1:9090"
#define MAX_KEYS 64
#define MAX_REPLICAS 16
/* SpiceDB's defaults for --datastore-gc-interval / --datastore-gc-window. */
#define DEFAULT_GC_INTERVAL_MS (3 * 60 * 1000)
#define DEFAULT_GC_WINDOW_SECONDS (24 * 3600)

/* ================================================================ usage */

#define METRICS_HELP                                                           \
	"  --metrics-enabled[=BOOL]\n"                                         \
	"                          serve Prometheus metrics at /metrics and "  \
	"health at\n"                                                          \
	"                          /healthz over HTTP (default true; =false: " \
	"off)\n"                                                               \
	"  --metrics-addr HOST:PORT\n"                                         \
	"                          where (default " DEFAULT_METRICS_ADDR "; "  \
	"when that is\n"                                                       \
	"                          busy the server runs without metrics; a "   \
	"given address\n"                                                      \
	"                          that cannot be bound stops the server)\n"

static void print_serve_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: pemba serve [--grpc-addr HOST:PORT] [--datastore URI]\n"
	    "                   (--preshared-key KEY... | --no-auth)\n"
	    "                   [--tls-cert-path FILE --tls-key-path FILE]\n"
	    "                   [--max-message-size BYTES] [--workers N] "
	    "[--read-only]\n"
	    "                   [--datastore-gc-interval DURATION]\n"
	    "                   [--datastore-gc-window DURATION]\n"
	    "                   [--datastore-conn-pool-read-max-open N]\n"
	    "                   [--datastore-conn-pool-write-max-open N]\n"
	    "                   [--datastore-read-replica-conn-uri URI]...\n"
	    "                   [--log-level error|warn|info|debug]\n"
	    "                   [--datastore-query-cache-size SIZE]\n"
	    "                   [--metrics-enabled[=false]] [--metrics-addr "
	    "HOST:PORT]\n"
	    "                   [--log-format text|json]\n"
	    "                   [--http-enabled [--http-addr HOST:PORT]\n"
	    "                    [--http-tls-cert-path FILE "
	    "--http-tls-key-path FILE]]\n"
	    "\n"
	    "Serves SpiceDB's gRPC API (authzed.api.v1) over one "
	    "datastore until\nSIGTERM or SIGINT, then finishes in-flight "
	    "calls and closes the datastore.\n"
	    "\n"
	    "options:\n"
	    "  --grpc-addr HOST:PORT   listen address ($PEMBA_GRPC_ADDR, else " DEFAULT_ADDR
	    ")\n"
	    "  --datastore URI         sqlite:///abs.db, sqlite://./rel.db, "
	    "sqlite::memory:\n"
	    "                          ($PEMBA_DATASTORE, else " DEFAULT_DATASTORE "); a "
	    "file URI may\n"
	    "                          end in ?mode=ro (read-only); "
	    "PostgreSQL:\n"
	    "                          postgres://user@host:5432/db?sslmode=..."
	    "\n"
	    "  --preshared-key KEY     accept 'authorization: Bearer KEY'; "
	    "repeatable.\n"
	    "                          Also env PEMBA_PRESHARED_KEY "
	    "(comma-separated).\n"
	    "                          Calls without a valid key get "
	    "UNAUTHENTICATED.\n"
	    "  --preshared-key NAME=KEY\n"
	    "                          a named key: callers send KEY; NAME "
	    "tells them apart\n"
	    "                          in deprecation warnings and usage "
	    "counts (`pemba\n"
	    "                          relation deprecations --usage`).  "
	    "Named only when\n"
	    "                          NAME is [A-Za-z0-9_.-]{1,64} and KEY "
	    "is neither empty\n"
	    "                          nor only '=' characters; otherwise "
	    "the whole text is\n"
	    "                          the key (a base64 key ending in '=' "
	    "stays a key).\n"
	    "                          Names and keys must be unique.\n"
	    "  --no-auth               serve without a key (only on a "
	    "loopback address)\n"
	    "  --tls-cert-path FILE    PEM certificate: serve TLS (ALPN h2) "
	    "instead of h2c\n"
	    "  --tls-key-path FILE     PEM private key for the certificate\n"
	    "  --http-enabled          also serve the HTTP/JSON gateway "
	    "(SpiceDB's\n"
	    "                          grpc-gateway routes: POST "
	    "/v1/permissions/check, ...)\n"
	    "  --http-addr HOST:PORT   the gateway's address (default "
	    "127.0.0.1:8443)\n"
	    "  --http-tls-cert-path FILE, --http-tls-key-path FILE\n"
	    "                          PEM certificate and key: the gateway "
	    "speaks HTTPS\n"
	    "  --max-message-size N    largest request message in bytes "
	    "(default 4194304)\n"
	    "  --workers N             handler threads (default 2 x CPUs)\n"
	    "  --read-only             refuse every write with UNAVAILABLE, "
	    "whatever the\n"
	    "                          datastore's own read-only setting "
	    "(`pemba admin\n"
	    "                          read-only`) says; reads and the admin "
	    "calls work\n"
	    "  --datastore-gc-interval DURATION\n"
	    "                          garbage-collect old revisions this "
	    "often (default 3m;\n"
	    "                          0 disables); one log line per run\n"
	    "  --datastore-gc-window DURATION\n"
	    "                          keep revisions younger than this "
	    "readable\n"
	    "                          (default 24h)\n"
	    "  --datastore-conn-pool-read-max-open N\n"
	    "                          PostgreSQL: at most N connections for "
	    "reads\n"
	    "                          (default 20); requests beyond wait up "
	    "to 5s for one\n"
	    "  --datastore-conn-pool-write-max-open N\n"
	    "                          PostgreSQL: at most N connections for "
	    "writes, GC\n"
	    "                          and settings (default 10).  Both "
	    "1-10000; SQLite\n"
	    "                          ignores them (one connection per "
	    "worker)\n"
	    "  --datastore-read-replica-conn-uri URI\n"
	    "                          PostgreSQL: a streaming standby of the "
	    "datastore;\n"
	    "                          repeatable (at most 16).  A read at a "
	    "revision a\n"
	    "                          replica has replayed may be served by "
	    "it; head\n"
	    "                          reads and writes use the primary; a "
	    "failing\n"
	    "                          replica is skipped for 5s\n"
	    "  --log-level LEVEL       error, warn, info (default) or debug "
	    "(adds which\n"
	    "                          node served each read at a revision, "
	    "and one line\n"
	    "                          per request: method, grpc status, "
	    "duration, request id)\n"
	    "  --log-format FORMAT     text (default) or json (one object "
	    "per line: level,\n"
	    "                          time, msg and fields)\n" METRICS_HELP
	    "  --datastore-query-cache-size SIZE\n"
	    "                          memory for results of datastore "
	    "queries at a\n"
	    "                          revision, shared by all workers "
	    "(default 64MiB on\n"
	    "                          PostgreSQL, 0 on SQLite; 0 "
	    "disables); results with\n"
	    "                          an expiring relationship are never "
	    "cached\n"
	    "  Durations: 500ms, 90s, 3m, 1h30m, 24h, 7d.  Sizes: 1048576, "
	    "512KiB, 64MiB,\n"
	    "  1GiB (also KB, MB, GB: powers of 1000).\n"
	    "\n"
	    "A new datastore is created at the newest layout version; an "
	    "existing one with\npending layout migrations is refused: run "
	    "`pemba datastore migrate head\n--datastore URI` first.  While "
	    "the server runs, `pemba datastore migrate`\nrefuses to change "
	    "the datastore (unless --force).\n"
	    "\n"
	    "Writes to relations deprecated in warn mode (`pemba relation "
	    "deprecate`) are\nlogged on stderr, one line per write and "
	    "relation.\n");
}

static void print_testing_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: pemba serve-testing [--grpc-addr HOST:PORT]\n"
	    "                           [--tls-cert-path FILE "
	    "--tls-key-path FILE]\n"
	    "                           [--max-message-size BYTES] "
	    "[--workers N]\n"
	    "                           [--max-stores N] [--idle-timeout "
	    "SECONDS]\n"
	    "                           [--read-only] [--log-level LEVEL] "
	    "[--log-format F]\n"
	    "                           [--metrics-enabled[=false]] "
	    "[--metrics-addr HOST:PORT]\n"
	    "                           [--http-enabled [--http-addr "
	    "HOST:PORT] ...]\n"
	    "\n"
	    "A server for client test suites, like 'spicedb serve-testing': "
	    "no key is\nneeded, and every distinct bearer token gets its "
	    "own isolated, empty,\nin-memory datastore (calls without a "
	    "token share one).  Nothing is\nwritten to disk.\n"
	    "\n"
	    "Memory is bounded: at most --max-stores token datastores exist "
	    "(default %d).\nOne unused for --idle-timeout seconds (default "
	    "%d, 10 minutes) is dropped\nwith its data; when the table is "
	    "full the least recently used idle one\nmakes room.  When all "
	    "are busy a new token gets RESOURCE_EXHAUSTED.\n"
	    "\n"
	    "options:\n"
	    "  --grpc-addr HOST:PORT   listen address ($PEMBA_GRPC_ADDR, else " DEFAULT_ADDR
	    ")\n"
	    "  --tls-cert-path FILE, --tls-key-path FILE, "
	    "--max-message-size N,\n"
	    "  --workers N             as for 'pemba serve'\n"
	    "  --max-stores N          most token datastores at once\n"
	    "  --idle-timeout SECONDS  drop a token datastore unused this "
	    "long\n"
	    "  --read-only             refuse every write with UNAVAILABLE "
	    "(as for 'pemba serve')\n"
	    "  --log-level LEVEL, --log-format FORMAT, --metrics-enabled, "
	    "--metrics-addr\n"
	    "                          as for 'pemba serve'\n"
	    "  --http-enabled, --http-addr HOST:PORT, --http-tls-cert-path "
	    "FILE,\n"
	    "  --http-tls-key-path FILE  the HTTP/JSON gateway, as for "
	    "'pemba serve' (the\n"
	    "                          bearer token picks the datastore "
	    "there too)\n",
	    TESTING_DEFAULT_MAX_STORES, TESTING_DEFAULT_IDLE_SECONDS);
}

/* ============================================================= signals */

static pemba_server *volatile running_server;

static void on_signal(int sig)
{
	(void)sig;
	pemba_server *s = running_server;
	if (s)
		server_shutdown(s); /* async-signal-safe */
}

static void install_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* The most verbose level printed (--log-level): 0 error, 1 warn, 2 info
 * (the default), 3 debug. */
static int log_level_max = 2;

/* Diagnostics of the transport, the handlers and the datastore, one line
 * each: errors, warnings (writes to deprecated relations, connection
 * trouble, a read replica skipped), informational lines (one per garbage
 * collection run) and, with --log-level debug, debug lines (which node
 * served a read, a GC run skipped for another node's). */
/* --log-format json: one JSON object per line. */
static bool log_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* Writes text as a JSON string (quotes included) to f.  Text that is not
 * valid UTF-8 (a message quoting a client's bytes) has its bytes past
 * 0x7E escaped one by one, so every line stays valid JSON. */
static void json_string(FILE *f, const char *text)
{
	size_t len = strlen(text);
	bool escape_high = utf8_check(text, len) != len;
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p < 0x20 || *p == 0x7f || (escape_high && *p > 0x7e))
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* The start of one JSON log line, up to the message: {"level":..,
 * "time":"2026-01-02T03:04:05.678Z","logger":..,"msg":..  The caller
 * adds fields and "}\n".  stderr is locked by the caller. */
static void json_begin(int level, const char *logger, const char *msg)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[40];
	size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);
	int shown = level < 0 ? 0 : level > 3 ? 3 : level;
	fprintf(stderr, "{\"level\":\"%s\",\"time\":\"%s\",\"logger\":",
	        level_names[shown], when);
	json_string(stderr, logger);
	fputs(",\"msg\":", stderr);
	json_string(stderr, msg);
}

static void log_line(void *ctx, int level, const char *message)
{
	if (level > log_level_max)
		return;
	if (log_json) {
		flockfile(stderr);
		json_begin(level, (const char *)ctx, message);
		fputs("}\n", stderr);
		funlockfile(stderr);
		return;
	}
	if (level == 1)
		fprintf(stderr, "%s: warning: %s\n", (const char *)ctx,
		        message);
	else if (level == 3)
		fprintf(stderr, "%s: debug: %s\n", (const char *)ctx, message);
	else
		fprintf(stderr, "%s: %s\n", (const char *)ctx, message);
}

/* One line per finished call at --log-level debug (server.h's request
 * log).  Never a key or a header's value: the method, the outcome, the
 * request id, the caller's address and the name of its key. */
static void log_request(void *ctx, const server_request_record *r)
{
	double ms = (double)r->duration_ns / 1e6;
	const char *code = grpc_status_name(r->status);
	if (log_json) {
		flockfile(stderr);
		json_begin(3, (const char *)ctx, "request");
		fputs(",\"method\":", stderr);
		json_string(stderr, r->method ? r->method : "");
		fprintf(stderr, ",\"grpc_code\":\"%s\",\"duration_ms\":%.3f",
		        code, ms);
		fputs(",\"request_id\":", stderr);
		json_string(stderr, r->request_id);
		fputs(",\"peer\":", stderr);
		json_string(stderr, r->peer);
		if (r->principal) {
			fputs(",\"key\":", stderr);
			json_string(stderr, r->principal);
		}
		fputs("}\n", stderr);
		funlockfile(stderr);
		return;
	}
	fprintf(stderr,
	        "%s: debug: request method=%s grpc_code=%s duration_ms=%.3f "
	        "request_id=%s peer=%s%s%s\n",
	        (const char *)ctx, r->method ? r->method : "", code, ms,
	        r->request_id, r->peer[0] ? r->peer : "-",
	        r->principal ? " key=" : "", r->principal ? r->principal : "");
}

/* The lines printed whatever --log-level says (started, stopped). */
static void say(const char *prefix, const char *text)
{
	if (log_json) {
		flockfile(stderr);
		json_begin(2, prefix, text);
		fputs("}\n", stderr);
		funlockfile(stderr);
	} else {
		fprintf(stderr, "%s: %s\n", prefix, text);
	}
}

/* --log-level NAME: SpiceDB's names (trace is debug here). */
static bool parse_log_level(const char *cmd, const char *v)
{
	static const char *const names[] = {"error", "warn", "info", "debug",
	                                    "trace"};
	for (int i = 0; i < 5; i++)
		if (strcmp(v, names[i]) == 0) {
			log_level_max = i > 3 ? 3 : i;
			return true;
		}
	fprintf(stderr,
	        "pemba %s: --log-level must be error, warn, info or debug, "
	        "not '%s'\n",
	        cmd, v);
	return false;
}

/* ============================================================= options */

typedef struct serve_args {
	server_options o;
	const char *keys[MAX_KEYS];
	char *env_keys; /* owns the strings of env keys */
	const char *replicas[MAX_REPLICAS];
	bool metrics_enabled;    /* --metrics-enabled (default true) */
	bool metrics_addr_given; /* --metrics-addr seen */
	bool no_auth;
	bool help;
} serve_args;

/* Returns the value of option `name` at argv[*i] ("--name V" or
 * "--name=V"), advancing *i; NULL if argv[*i] is not that option. */
static const char *option_value(int argc, char **argv, int *i, const char *name,
                                bool *missing)
{
	size_t n = strlen(name);
	const char *a = argv[*i];
	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

static bool parse_count(const char *text, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* --datastore-conn-pool-{read,write}-max-open: 1 to 10000 connections;
 * false (after printing why) otherwise. */
static bool parse_pool_size(const char *cmd, const char *which,
                            const char *text, int *out)
{
	long n;
	if (!parse_count(text, 1, 10000, &n)) {
		fprintf(stderr,
		        "pemba %s: --datastore-conn-pool-%s-max-open must be a "
		        "whole number of connections from 1 to 10000, not "
		        "'%s'\n",
		        cmd, which, text);
		return false;
	}
	*out = (int)n;
	return true;
}

/* The transport's limits and timers, the same for both commands: a
 * table, so usage, parsing and defaults cannot drift apart. */
typedef struct limit_flag {
	const char *name;
	size_t offset;   /* int field of server_options */
	bool duration;   /* a duration (ms) rather than a count */
	bool zero_never; /* 0 means "never" (stored as -1) */
	long min, max;   /* counts only */
	const char *help;
} limit_flag;

#define LIMIT(field) offsetof(server_options, field)
static const limit_flag limit_flags[] = {
    {"--max-connections", LIMIT(max_connections), false, false, 1, 1000000,
     "open connections (default 4096); at the cap a new one\n"
     "                          replaces the oldest that has not "
     "finished its handshake"},
    {"--max-streams", LIMIT(max_streams), false, false, 1, 10000000,
     "streaming calls open at once, Watch included\n"
     "                          (default 10000); more get "
     "RESOURCE_EXHAUSTED"},
    {"--stream-stall-timeout", LIMIT(stream_stall_timeout_ms), true, true, 0, 0,
     "end a stream whose client reads no response (or\n"
     "                          sends no request) for this long (default "
     "60s; 0: never)"},
    {"--handshake-timeout", LIMIT(handshake_timeout_ms), true, false, 0, 0,
     "TLS handshake and HTTP/2 preface deadline (default 10s)"},
    {"--connection-idle-timeout", LIMIT(idle_timeout_ms), true, true, 0, 0,
     "GOAWAY to a connection without calls for this\n"
     "                          long (default 15m; 0: never)"},
    {"--keepalive-time", LIMIT(keepalive_time_ms), true, false, 0, 0,
     "ping a connection silent this long (default 2m)"},
    {"--keepalive-timeout", LIMIT(keepalive_timeout_ms), true, false, 0, 0,
     "close it if the ping is not answered (default 20s)"},
    {"--keepalive-min-time", LIMIT(keepalive_min_time_ms), true, false, 0, 0,
     "client pings closer than this are strikes; the\n"
     "                          third ends the connection (GOAWAY "
     "too_many_pings; default 10s)"},
};
#define NLIMIT_FLAGS (sizeof(limit_flags) / sizeof(limit_flags[0]))

static void print_limit_flags(FILE *out)
{
	fprintf(out, "\nlimits and timeouts (docs/operations.md):\n");
	for (size_t i = 0; i < NLIMIT_FLAGS; i++) {
		const limit_flag *f = &limit_flags[i];
		char head[64];
		snprintf(head, sizeof(head), "%s %s", f->name,
		         f->duration ? "DUR" : "N");
		if (strlen(head) < 24)
			fprintf(out, "  %-24s%s\n", head, f->help);
		else
			fprintf(out, "  %s\n%26s%s\n", head, "", f->help);
	}
	fprintf(out, "  (durations: 250ms, 90s, 30m, 2h or plain seconds)\n");
}

/* Parses argv[*i] if it is one of limit_flags.  Returns 1 (parsed), 0 (not
 * a limit flag), or 2 after printing a usage error. */
static int parse_limit_flag(const char *cmd, int argc, char **argv, int *i,
                            server_options *o)
{
	for (size_t k = 0; k < NLIMIT_FLAGS; k++) {
		const limit_flag *f = &limit_flags[k];
		bool missing = false;
		const char *v = option_value(argc, argv, i, f->name, &missing);
		if (missing) {
			fprintf(stderr, "pemba %s: %s needs a value\n", cmd,
			        f->name);
			return 2;
		}
		if (!v)
			continue;
		int *field = (int *)((char *)o + f->offset);
		long n;
		if (f->duration) {
			int64_t ms = -1;
			if (cli_parse_duration_ms(v, &ms) != 0 ||
			    ms > INT32_MAX || (ms == 0 && !f->zero_never)) {
				fprintf(stderr,
				        "pemba %s: %s must be a %sduration "
				        "such as 500ms, 10s or 5m, not '%s'\n",
				        cmd, f->name,
				        f->zero_never ? "" : "positive ", v);
				return 2;
			}
			*field = ms == 0 ? -1 : (int)ms;
		} else if (!parse_count(v, f->min, f->max, &n)) {
			fprintf(stderr,
			        "pemba %s: %s must be between %ld and %ld, not "
			        "'%s'\n",
			        cmd, f->name, f->min, f->max, v);
			return 2;
		} else {
			*field = (int)n;
		}
		return 1;
	}
	return 0;
}

/* Parses a byte size: digits, then nothing or B, or a unit KiB, MiB,
 * GiB, TiB (powers of 1024), KB, MB, GB, TB (powers of 1000), K, M, G, T
 * (1024).  Returns 0 and sets *out, or -1 for anything else or a size
 * past 2^62. */
static int parse_size(const char *v, int64_t *out)
{
	static const struct {
		const char *unit;
		int64_t mult;
	} units[] = {
	    {"", 1},
	    {"B", 1},
	    {"K", 1LL << 10},
	    {"KiB", 1LL << 10},
	    {"KB", 1000},
	    {"M", 1LL << 20},
	    {"MiB", 1LL << 20},
	    {"MB", 1000000},
	    {"G", 1LL << 30},
	    {"GiB", 1LL << 30},
	    {"GB", 1000000000},
	    {"T", 1LL << 40},
	    {"TiB", 1LL << 40},
	    {"TB", 1000000000000LL},
	};
	if (*v < '0' || *v > '9')
		return -1;
	errno = 0;
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) != 0)
			continue;
		if (n > (unsigned long long)(INT64_C(1) << 62) /
		            (unsigned long long)units[i].mult)
			return -1;
		*out = (int64_t)n * units[i].mult;
		return 0;
	}
	return -1;
}

/* Parses the flags shared by both commands and, for serve, the
 * serve-only ones.  Returns 0, or 2 after printing a usage error. */
static int parse_args(const char *cmd, int argc, char **argv, bool testing,
                      serve_args *a)
{
	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;
		long n;
		int lim = parse_limit_flag(cmd, argc, argv, &i, &a->o);
		if (lim == 2)
			return 2;
		if (lim == 1)
			continue;
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			a->help = true;
		} else if ((v = option_value(argc, argv, &i, "--grpc-addr",
		                             &missing))) {
			a->o.grpc_addr = v;
		} else if (strcmp(argv[i], "--http-enabled") == 0 ||
		           strcmp(argv[i], "--http-enabled=true") == 0) {
			a->o.http_enabled = true;
		} else if (strcmp(argv[i], "--http-enabled=false") == 0) {
			a->o.http_enabled = false;
		} else if ((v = option_value(argc, argv, &i, "--http-addr",
		                             &missing))) {
			a->o.http_addr = v;
		} else if ((v = option_value(argc, argv, &i,
		                             "--http-tls-cert-path", &missing))) {
			a->o.http_tls_cert_path = v;
		} else if ((v = option_value(argc, argv, &i,
		                             "--http-tls-key-path", &missing))) {
			a->o.http_tls_key_path = v;
		} else if ((v = option_value(argc, argv, &i, "--tls-cert-path",
		                             &missing))) {
			a->o.tls_cert_path = v;
		} else if ((v = option_value(argc, argv, &i, "--tls-key-path",
		                             &missing))) {
			a->o.tls_key_path = v;
		} else if ((v = option_value(argc, argv, &i,
		                             "--max-message-size", &missing))) {
			if (!parse_count(v, 1024, 1L << 30, &n)) {
				fprintf(
				    stderr,
				    "pemba %s: --max-message-size must be a "
				    "byte count between 1024 and 1073741824, "
				    "not '%s'\n",
				    cmd, v);
				return 2;
			}
			a->o.max_message_size = (size_t)n;
		} else if ((v = option_value(argc, argv, &i, "--workers",
		                             &missing))) {
			if (!parse_count(v, 1, 1024, &n)) {
				fprintf(stderr,
				        "pemba %s: --workers must be between 1 "
				        "and 1024, not '%s'\n",
				        cmd, v);
				return 2;
			}
			a->o.workers = (int)n;
		} else if (!testing &&
		           (v = option_value(argc, argv, &i, "--datastore",
		                             &missing))) {
			a->o.datastore = v;
		} else if (!testing &&
		           (v = option_value(argc, argv, &i, "--preshared-key",
		                             &missing))) {
			if (a->o.nkeys >= MAX_KEYS) {
				fprintf(stderr,
				        "pemba %s: at most %d preshared keys\n",
				        cmd, MAX_KEYS);
				return 2;
			}
			if (!v[0]) {
				fprintf(stderr,
				        "pemba %s: --preshared-key must not be "
				        "empty\n",
				        cmd);
				return 2;
			}
			a->keys[a->o.nkeys++] = v;
		} else if (!testing && strcmp(argv[i], "--no-auth") == 0) {
			a->no_auth = true;
		} else if (!testing &&
		           (v = option_value(argc, argv, &i,
		                             "--datastore-gc-interval",
		                             &missing))) {
			int64_t ms;
			if (cli_parse_duration_ms(v, &ms) != 0) {
				fprintf(
				    stderr,
				    "pemba %s: --datastore-gc-interval must "
				    "be a duration such as 3m, 30s or 0 "
				    "(off), not '%s'\n",
				    cmd, v);
				return 2;
			}
			a->o.gc_interval_ms = ms;
		} else if (!testing &&
		           (v = option_value(argc, argv, &i,
		                             "--datastore-gc-window",
		                             &missing))) {
			int64_t ms;
			if (cli_parse_duration_ms(v, &ms) != 0 || ms < 1000) {
				fprintf(stderr,
				        "pemba %s: --datastore-gc-window must "
				        "be a duration of at least 1s, such as "
				        "24h, not '%s'\n",
				        cmd, v);
				return 2;
			}
			a->o.gc_window_seconds = (ms + 999) / 1000;
		} else if (!testing &&
		           (v = option_value(
		                argc, argv, &i,
		                "--datastore-conn-pool-read-max-open",
		                &missing))) {
			if (!parse_pool_size(cmd, "read", v,
			                     &a->o.conn_pool_read_max_open))
				return 2;
		} else if (!testing &&
		           (v = option_value(
		                argc, argv, &i,
		                "--datastore-conn-pool-write-max-open",
		                &missing))) {
			if (!parse_pool_size(cmd, "write", v,
			                     &a->o.conn_pool_write_max_open))
				return 2;
		} else if (!testing && (v = option_value(
		                            argc, argv, &i,
		                            "--datastore-read-replica-conn-uri",
		                            &missing))) {
			if (a->o.n_read_replica_uris >= MAX_REPLICAS) {
				fprintf(stderr,
				        "pemba %s: at most %d read replicas\n",
				        cmd, MAX_REPLICAS);
				return 2;
			}
			if (strncmp(v, "postgres://", 11) != 0 &&
			    strncmp(v, "postgresql://", 13) != 0) {
				char *shown = store_display_uri(v);
				fprintf(stderr,
				        "pemba %s: --datastore-read-replica-"
				        "conn-uri must be a PostgreSQL URI "
				        "(postgres://...), not '%s'\n",
				        cmd, shown);
				free(shown);
				return 2;
			}
			a->replicas[a->o.n_read_replica_uris++] = v;
			a->o.read_replica_uris = a->replicas;
		} else if ((v = option_value(argc, argv, &i, "--log-level",
		                             &missing))) {
			if (!parse_log_level(cmd, v))
				return 2;
		} else if (!testing &&
		           (v = option_value(argc, argv, &i,
		                             "--datastore-query-cache-size",
		                             &missing))) {
			int64_t bytes;
			if (parse_size(v, &bytes) != 0) {
				fprintf(
				    stderr,
				    "pemba %s: --datastore-query-cache-size "
				    "must be a size such as 64MiB, 1GiB or 0 "
				    "(off), not '%s'\n",
				    cmd, v);
				return 2;
			}
			a->o.query_cache_bytes = bytes == 0 ? -1 : bytes;
		} else if (strcmp(argv[i], "--read-only") == 0) {
			a->o.read_only = true;
		} else if (strncmp(argv[i], "--metrics-enabled", 17) == 0 &&
		           (argv[i][17] == '\0' || argv[i][17] == '=')) {
			/* A boolean: --metrics-enabled, or =true / =false
			 * (SpiceDB's spelling); never a separate word. */
			const char *b = argv[i][17] ? argv[i] + 18 : "true";
			if (strcmp(b, "true") == 0 || strcmp(b, "1") == 0)
				a->metrics_enabled = true;
			else if (strcmp(b, "false") == 0 || strcmp(b, "0") == 0)
				a->metrics_enabled = false;
			else {
				fprintf(stderr,
				        "pemba %s: --metrics-enabled must be "
				        "true or false, not '%s'\n",
				        cmd, b);
				return 2;
			}
		} else if ((v = option_value(argc, argv, &i, "--metrics-addr",
		                             &missing))) {
			if (!strchr(v, ':')) {
				fprintf(stderr,
				        "pemba %s: --metrics-addr must be "
				        "HOST:PORT (such as 127.0.0.1:9090 or "
				        ":9090), not '%s'\n",
				        cmd, v);
				return 2;
			}
			a->o.metrics_addr = v;
			a->metrics_addr_given = true;
		} else if ((v = option_value(argc, argv, &i, "--log-format",
		                             &missing))) {
			if (strcmp(v, "json") == 0)
				log_json = true;
			else if (strcmp(v, "text") == 0 ||
			         strcmp(v, "console") == 0 ||
			         strcmp(v, "auto") == 0)
				log_json = false;
			else {
				fprintf(
				    stderr,
				    "pemba %s: --log-format must be text or "
				    "json, not '%s'\n",
				    cmd, v);
				return 2;
			}
		} else if (testing &&
		           (v = option_value(argc, argv, &i, "--max-stores",
		                             &missing))) {
			if (!parse_count(v, 1, 1000000, &n)) {
				fprintf(stderr,
				        "pemba %s: --max-stores must be a "
				        "positive count, not '%s'\n",
				        cmd, v);
				return 2;
			}
			a->o.testing_max_stores = (size_t)n;
		} else if (testing &&
		           (v = option_value(argc, argv, &i, "--idle-timeout",
		                             &missing))) {
			if (!parse_count(v, 1, 86400 * 365, &n)) {
				fprintf(
				    stderr,
				    "pemba %s: --idle-timeout must be a "
				    "positive number of seconds, not '%s'\n",
				    cmd, v);
				return 2;
			}
			a->o.testing_idle_seconds = (int)n;
		} else {
			if (missing)
				fprintf(stderr, "pemba %s: %s needs a value\n",
				        cmd, argv[i]);
			else
				fprintf(stderr,
				        "pemba %s: unknown argument '%s'\n"
				        "Run 'pemba %s --help' for usage.\n",
				        cmd, argv[i], cmd);
			return 2;
		}
	}
	return 0;
}

/* Adds the keys of $PEMBA_PRESHARED_KEY (comma-separated) when no
 * --preshared-key was given. */
static void keys_from_env(serve_args *a)
{
	const char *env = getenv("PEMBA_PRESHARED_KEY");
	if (a->o.nkeys > 0 || !env || !env[0])
		return;
	a->env_keys = strdup(env);
	if (!a->env_keys)
		return;
	char *save = NULL;
	for (char *k = strtok_r(a->env_keys, ",", &save);
	     k && a->o.nkeys < MAX_KEYS; k = strtok_r(NULL, ",", &save)) {
		while (*k == ' ')
			k++;
		size_t n = strlen(k);
		while (n > 0 && k[n - 1] == ' ')
			k[--n] = '\0';
		if (n > 0)
			a->keys[a->o.nkeys++] = k;
	}
}

/* ================================================================= run */

static int run_server(const char *cmd, serve_args *a)
{
	pemba_error err = {0};
	pemba_server *s;
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "pemba %s", cmd);
	a->o.log = log_line;
	a->o.log_ctx = prefix;
	a->o.keys = a->keys;
	/* Metrics: on by default at SpiceDB's address.  The default being
	 * busy (another server on this machine) costs only the metrics; an
	 * address asked for that cannot be bound stops the server. */
	if (!a->metrics_enabled)
		a->o.metrics_addr = NULL;
	else if (!a->o.metrics_addr)
		a->o.metrics_addr = DEFAULT_METRICS_ADDR;
	a->o.metrics_addr_required =
	    a->metrics_enabled && a->metrics_addr_given;
	if (log_level_max >= 3) {
		a->o.request_log = log_request;
		a->o.request_log_ctx = prefix;
	}
	if (server_new(&a->o, &s, &err) < 0) {
		fprintf(stderr, "pemba %s: %s\n", cmd, err.message);
		return 1;
	}
	running_server = s;
	install_signals();
	if (server_start_http(s, &err) < 0) {
		fprintf(stderr, "pemba %s: %s\n", cmd, err.message);
		running_server = NULL;
		server_free(s);
		return 1;
	}
	if (a->o.http_enabled)
		fprintf(stderr, "pemba %s: HTTP gateway on %s (%s), port %d\n",
		        cmd, a->o.http_addr ? a->o.http_addr : "127.0.0.1:8443",
		        a->o.http_tls_cert_path ? "HTTPS: h2 and HTTP/1.1"
		                                : "HTTP/1.1 and h2c",
		        server_http_port(s));
	/* Where the metrics are, or why not, ends the start line: one
	 * line, and no second "port N" in it for scripts to trip on. */
	char metrics[400] = "";
	if (server_metrics_port(s) > 0) {
		const char *colon = strrchr(a->o.metrics_addr, ':');
		int hostlen = (int)(colon - a->o.metrics_addr);
		snprintf(metrics, sizeof(metrics),
		         "; metrics at http://%.*s:%d (/metrics, /healthz)",
		         hostlen ? hostlen : 7,
		         hostlen ? a->o.metrics_addr : "0.0.0.0",
		         server_metrics_port(s));
	} else if (server_metrics_error(s)) {
		snprintf(metrics, sizeof(metrics), "; no metrics: %s",
		         server_metrics_error(s));
	}
	char line[1400];
	if (a->o.testing)
		snprintf(line, sizeof(line),
		         "listening on %s (%s), port %d, one "
		         "in-memory datastore per bearer token%s%s",
		         a->o.grpc_addr, a->o.tls_cert_path ? "TLS" : "h2c",
		         server_port(s), a->o.read_only ? ", read-only" : "",
		         metrics);
	else {
		/* Logs never show a password, nor a key: names only. */
		char *shown = store_display_uri(a->o.datastore);
		char names[256] = "";
		size_t used = 0;
		for (size_t i = 0; i < a->o.nkeys; i++) {
			size_t n = server_key_name_length(a->keys[i]);
			if (n > 0 && used < sizeof(names))
				used += (size_t)snprintf(
				    names + used, sizeof(names) - used,
				    "%s%.*s", used ? ", " : " (keys named ",
				    (int)n, a->keys[i]);
		}
		if (used > 0 && used < sizeof(names) - 1)
			strcat(names, ")");
		snprintf(line, sizeof(line),
		         "listening on %s (%s), port %d, datastore "
		         "%s, %s%s%s%s",
		         a->o.grpc_addr, a->o.tls_cert_path ? "TLS" : "h2c",
		         server_port(s), shown,
		         a->o.nkeys ? "preshared-key auth" : "NO AUTH", names,
		         a->o.read_only ? ", read-only" : "", metrics);
		free(shown);
	}
	say(prefix, line);
	int rc = server_run(s, &err);
	running_server = NULL;
	server_free(s);
	if (rc < 0) {
		fprintf(stderr, "pemba %s: %s\n", cmd, err.message);
		return 1;
	}
	say(prefix, "stopped");
	return 0;
}

int cmd_serve(int argc, char **argv)
{
	serve_args a;
	memset(&a, 0, sizeof(a));
	a.metrics_enabled = true;
	a.o.grpc_addr = cli_default_grpc_addr();
	a.o.datastore = cli_default_datastore();
	a.o.gc_interval_ms = DEFAULT_GC_INTERVAL_MS;
	a.o.gc_window_seconds = DEFAULT_GC_WINDOW_SECONDS;
	int rc = parse_args("serve", argc, argv, false, &a);
	if (rc != 0)
		return rc;
	if (a.help) {
		print_serve_usage(stdout);
		print_limit_flags(stdout);
		return 0;
	}
	keys_from_env(&a);
	pemba_error err = {0};
	if (server_check_keys(a.keys, a.o.nkeys, &err) < 0) {
		fprintf(stderr, "pemba serve: --preshared-key: %s\n",
		        err.message);
		rc = 2;
	} else if (a.no_auth && a.o.nkeys > 0) {
		fprintf(stderr, "pemba serve: --no-auth and a preshared key "
		                "cannot be combined\n");
		rc = 2;
	} else if (!a.no_auth && a.o.nkeys == 0) {
		fprintf(stderr,
		        "pemba serve: refusing to start without a preshared "
		        "key: give --preshared-key KEY (or set "
		        "PEMBA_PRESHARED_KEY), or --no-auth on a loopback "
		        "address\n");
		rc = 2;
	} else if (a.no_auth && !server_addr_is_loopback(a.o.grpc_addr)) {
		fprintf(stderr,
		        "pemba serve: --no-auth is only allowed on a loopback "
		        "address (127.0.0.1, [::1], localhost), not '%s'\n",
		        a.o.grpc_addr);
		rc = 2;
	} else if (!a.o.tls_cert_path != !a.o.tls_key_path) {
		fprintf(stderr, "pemba serve: --tls-cert-path and "
		                "--tls-key-path go together\n");
		rc = 2;
	} else if (!a.o.http_tls_cert_path != !a.o.http_tls_key_path) {
		fprintf(stderr, "pemba serve: --http-tls-cert-path and "
		                "--http-tls-key-path go together\n");
		rc = 2;
	} else if (a.no_auth && a.o.http_enabled &&
	           !server_addr_is_loopback(a.o.http_addr ? a.o.http_addr
	                                                  : "127.0.0.1:8443")) {
		fprintf(stderr,
		        "pemba serve: --no-auth is only allowed on a loopback "
		        "address, and --http-addr is '%s'\n",
		        a.o.http_addr);
		rc = 2;
	}
	if (rc == 0)
		rc = run_server("serve", &a);
	free(a.env_keys);
	return rc;
}

int cmd_serve_testing(int argc, char **argv)
{
	serve_args a;
	memset(&a, 0, sizeof(a));
	a.metrics_enabled = true;
	a.o.grpc_addr = cli_default_grpc_addr();
	a.o.testing = true;
	int rc = parse_args("serve-testing", argc, argv, true, &a);
	if (rc != 0)
		return rc;
	if (a.help) {
		print_testing_usage(stdout);
		print_limit_flags(stdout);
		return 0;
	}
	if (!a.o.tls_cert_path != !a.o.tls_key_path) {
		fprintf(stderr, "pemba serve-testing: --tls-cert-path and "
		                "--tls-key-path go together\n");
		return 2;
	}
	if (!a.o.http_tls_cert_path != !a.o.http_tls_key_path) {
		fprintf(stderr, "pemba serve-testing: --http-tls-cert-path and "
		                "--http-tls-key-path go together\n");
		return 2;
	}
	return run_server("serve-testing", &a);
}
