/*
 * cmd_proxy.c -- `pemba proxy`: a gRPC proxy for dual running in front of
 * a primary and a shadow server (src/proxy/README.md has the design).
 *
 * This file is only the command line: flags, signals (SIGTERM / SIGINT
 * stop; SIGUSR1 prints the counters), the log lines, and the final
 * counters line at exit; and `pemba proxy stats`, which asks a running
 * proxy for its counters (pemba.v1.ProxyService/GetProxyStats).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "pemba/v1/proxy_service.pb-c.h"
#include "proxy/proxy.h"

static pemba_proxy *volatile running_proxy;

static void on_stop_signal(int sig)
{
	(void)sig;
	pemba_proxy *p = running_proxy;
	if (p)
		proxy_shutdown(p); /* async-signal-safe */
}

static void log_line(void *ctx, int level, const char *message)
{
	(void)ctx;
	if (level == 1)
		fprintf(stderr, "pemba proxy: warning: %s\n", message);
	else if (level <= 2)
		fprintf(stderr, "pemba proxy: %s\n", message);
}

static void print_stats(pemba_proxy *p, const char *when)
{
	proxy_stats s;
	proxy_stats_get(p, &s);
	char line[512];
	proxy_stats_format(&s, line, sizeof(line));
	fprintf(stderr, "pemba proxy: stats%s: %s\n", when, line);
}

/* SIGUSR1 is blocked in every thread; this one waits for it and prints
 * the counters (stdio from a normal thread, not a signal handler). */
static volatile int stats_thread_done;

static void *stats_main(void *arg)
{
	pemba_proxy *p = arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (stats_thread_done)
			return NULL;
		print_stats(p, "");
	}
}

typedef struct proxy_flags {
	const char *listen, *key;
	const char *primary_endpoint, *primary_token, *primary_ca_path;
	const char *shadow_endpoint, *shadow_token, *shadow_ca_path;
	const char *tls_cert_path, *tls_key_path;
	const char *sample, *queue, *shadow_timeout, *max_watch, *workers;
	bool primary_insecure, shadow_insecure;
	bool primary_skip_verify_ca, shadow_skip_verify_ca;
} proxy_flags;

static int proxy_flag(void *ctx, int argc, char **argv, int *i)
{
	proxy_flags *f = ctx;
	static const char *const bools[] = {
	    "--primary-insecure", "--shadow-insecure",
	    "--primary-skip-verify-ca", "--shadow-skip-verify-ca"};
	bool *bool_values[] = {&f->primary_insecure, &f->shadow_insecure,
	                       &f->primary_skip_verify_ca,
	                       &f->shadow_skip_verify_ca};
	for (size_t k = 0; k < sizeof(bools) / sizeof(bools[0]); k++)
		if (client_flag_bool(bools[k], argv, i, bool_values[k]))
			return 1;
	static const char *const names[] = {"--listen",
	                                    "--preshared-key",
	                                    "--primary-endpoint",
	                                    "--primary-token",
	                                    "--primary-ca-path",
	                                    "--shadow-endpoint",
	                                    "--shadow-token",
	                                    "--shadow-ca-path",
	                                    "--tls-cert-path",
	                                    "--tls-key-path",
	                                    "--shadow-read-sample",
	                                    "--shadow-queue",
	                                    "--shadow-timeout-ms",
	                                    "--max-watch-streams",
	                                    "--workers"};
	const char **values[] = {&f->listen,           &f->key,
	                         &f->primary_endpoint, &f->primary_token,
	                         &f->primary_ca_path,  &f->shadow_endpoint,
	                         &f->shadow_token,     &f->shadow_ca_path,
	                         &f->tls_cert_path,    &f->tls_key_path,
	                         &f->sample,           &f->queue,
	                         &f->shadow_timeout,   &f->max_watch,
	                         &f->workers};
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		int r = client_flag_value(names[k], argc, argv, i, values[k]);
		if (r)
			return r;
	}
	return 0;
}

static const char proxy_usage_text[] =
    "usage: pemba proxy --listen ADDR --preshared-key K\n"
    "       --primary-endpoint A [--primary-token KA]\n"
    "       --shadow-endpoint B [--shadow-token KB] [--insecure | TLS "
    "flags]\n"
    "\n"
    "A gRPC proxy for dual running (a migration from A to B).  Every call goes "
    "to\n"
    "the primary A, and the client gets A's answer (status, error details "
    "and\n"
    "response bytes, unchanged).  Writes that A accepted (WriteRelationships, "
    "DeleteRelationships,\n"
    "WriteSchema) are replayed on the shadow B in the order A acknowledged "
    "them;\n"
    "reads (CheckPermission, CheckBulkPermissions, ReadSchema, lookups) are "
    "replayed\n"
    "on B, a sample of them, fully consistent, and B's answers compared with "
    "A's\n"
    "(ZedTokens ignored).  The replays run on one thread from a bounded queue: "
    "B\n"
    "never slows or fails a client's call; a full queue drops the job and "
    "counts it.\n"
    "A mismatch is logged on stderr with the request (`pemba proxy: warning:\n"
    "mismatch: ...`) and counted.  SIGUSR1 prints the counters (`pemba proxy: "
    "stats:\n"
    "calls=N ... mismatches=N ...`), as does the exit, and `pemba proxy stats\n"
    "--endpoint PROXY --token K` asks a running proxy.  Lookups "
    "(LookupResources,\n"
    "LookupSubjects) stream through and are compared as sets; "
    "ReadRelationships and\n"
    "exports stream through; bulk imports (ImportBulkRelationships) are "
    "relayed to A\n"
    "message by message and replayed on B as one write; Watch streams "
    "from A (not\n"
    "replayed), each on its own connection, at most --max-watch-streams "
    "at once.\n"
    "Cut-over: restart with the primary and shadow flags swapped;\n"
    "rollback: swap them back (docs/migrations.md).\n"
    "\n"
    "  --listen ADDR              the proxy's address (\"127.0.0.1:0\": a "
    "free port)\n"
    "  --preshared-key K          the key the proxy's clients send "
    "(default:\n"
    "                             $PEMBA_PRESHARED_KEY)\n"
    "  --tls-cert-path F, --tls-key-path F  TLS for the proxy's clients "
    "(else h2c)\n"
    "  --primary-endpoint A, --primary-token KA   the primary\n"
    "  --shadow-endpoint B, --shadow-token KB     the shadow\n"
    "  --shadow-read-sample R     share of reads replayed, 0..1 "
    "(default 1)\n"
    "  --shadow-queue N           jobs queued for the shadow at most "
    "(default 10000)\n"
    "  --shadow-timeout-ms MS     per call to the shadow (default 5000)\n"
    "  --max-watch-streams N      Watch streams open at once, more get\n"
    "                             RESOURCE_EXHAUSTED (default 100)\n"
    "  --workers N                calls relayed at once (default 16): a "
    "unary call,\n"
    "                             a server stream or an import holds one "
    "while it\n"
    "                             runs, a Watch none\n"
    "The connection flags below (--insecure, --ca-path, --skip-verify-ca) "
    "apply to both\n"
    "upstreams (--endpoint and --token are not used); per side: "
    "--primary-insecure,\n"
    "--shadow-insecure, --primary-ca-path F, --shadow-ca-path F,\n"
    "--primary-skip-verify-ca, --shadow-skip-verify-ca.\n"
    "\n"
    "Exit status: 0 after SIGTERM / SIGINT; 1 when the proxy cannot run "
    "(address in\n"
    "use, TLS files); 2 on usage errors.\n\n";

static const char proxy_stats_usage_text[] =
    "usage: pemba proxy stats --endpoint PROXY --token K [--insecure]\n"
    "\n"
    "Prints the counters of a running `pemba proxy` (its own preshared "
    "key as the\n"
    "token) on one line:\n"
    "  calls=N primary_errors=N unimplemented=N shadow_writes=N "
    "shadow_reads=N\n"
    "  sampled_out=N mismatches=N shadow_errors=N dropped=N stale=N "
    "queued=N\n"
    "Exit status: 0 when mismatches, shadow_errors and dropped are all "
    "0; 1 when any\n"
    "is not; 2 on errors.  --json: the GetProxyStatsResponse as one "
    "line of JSON.\n\n";

static int cmd_proxy_stats(int argc, char **argv)
{
	char usage[4096];
	snprintf(usage, sizeof(usage), "%s%s", proxy_stats_usage_text,
	         client_connection_help);
	client_args args = {.usage = usage, .max_positional = 0};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	client_conn conn;
	if (client_connect(&args.options, &conn) != 0)
		return CLIENT_EXIT_ERROR;
	Pemba__V1__GetProxyStatsRequest req =
	    PEMBA__V1__GET_PROXY_STATS_REQUEST__INIT;
	Pemba__V1__GetProxyStatsResponse *r =
	    (Pemba__V1__GetProxyStatsResponse *)client_unary(
	        &conn, PROXY_STATS_PATH, &req.base,
	        &pemba__v1__get_proxy_stats_response__descriptor);
	client_close(&conn);
	if (!r)
		return CLIENT_EXIT_ERROR;
	proxy_stats s = {
	    .calls = r->calls,
	    .primary_errors = r->primary_errors,
	    .unimplemented = r->unimplemented,
	    .shadow_writes = r->shadow_writes,
	    .shadow_reads = r->shadow_reads,
	    .sampled_out = r->sampled_out,
	    .mismatches = r->mismatches,
	    .shadow_errors = r->shadow_errors,
	    .dropped = r->dropped,
	    .stale = r->stale,
	    .queued = r->queued,
	};
	if (args.options.json) {
		client_print_json(&r->base);
	} else {
		char line[512];
		proxy_stats_format(&s, line, sizeof(line));
		printf("%s\n", line);
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return s.mismatches || s.shadow_errors || s.dropped ? CLIENT_EXIT_NO
	                                                    : CLIENT_EXIT_OK;
}

int cmd_proxy(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "stats") == 0)
		return cmd_proxy_stats(argc - 1, argv + 1);

	char usage[8192];
	snprintf(usage, sizeof(usage), "%s%s", proxy_usage_text,
	         client_connection_help);
	proxy_flags f = {0};
	client_args args = {.usage = usage,
	                    .max_positional = 0,
	                    .extra = proxy_flag,
	                    .accepts = CLIENT_NO_CONTEXT,
	                    .extra_ctx = &f};
	int status = client_parse_args(&args, argc, argv);
	if (status >= 0)
		return status;
	if (!f.key || !*f.key)
		f.key = getenv("PEMBA_PRESHARED_KEY");
	if (!f.listen || !*f.listen)
		return client_usage_error(usage, "--listen is required");
	if (!f.key || !*f.key)
		return client_usage_error(usage, "--preshared-key is required");
	if (!f.primary_endpoint || !*f.primary_endpoint)
		return client_usage_error(usage,
		                          "--primary-endpoint is required");
	if (!f.shadow_endpoint || !*f.shadow_endpoint)
		return client_usage_error(usage,
		                          "--shadow-endpoint is required");
	if (!f.tls_cert_path != !f.tls_key_path)
		return client_usage_error(usage, "--tls-cert-path and "
		                                 "--tls-key-path go together");

	proxy_options o = {0};
	o.listen_addr = f.listen;
	o.preshared_key = f.key;
	o.tls_cert_path = f.tls_cert_path;
	o.tls_key_path = f.tls_key_path;
	o.shadow_read_sample = 1;
	if (f.sample) {
		char *end;
		o.shadow_read_sample = strtod(f.sample, &end);
		if (*end || end == f.sample || !(o.shadow_read_sample >= 0) ||
		    !(o.shadow_read_sample <= 1))
			return client_usage_error(
			    usage,
			    "--shadow-read-sample: expected a number "
			    "from 0 to 1, not '%s'",
			    f.sample);
	}
	if (f.queue) {
		char *end;
		long n = strtol(f.queue, &end, 10);
		if (*end || end == f.queue || n < 1 || n > 10000000)
			return client_usage_error(
			    usage,
			    "--shadow-queue: expected 1..10000000, not "
			    "'%s'",
			    f.queue);
		o.shadow_queue_max = (size_t)n;
	}
	if (f.shadow_timeout) {
		char *end;
		long n = strtol(f.shadow_timeout, &end, 10);
		if (*end || end == f.shadow_timeout || n < 1 || n > 3600000)
			return client_usage_error(
			    usage,
			    "--shadow-timeout-ms: expected 1..3600000, "
			    "not '%s'",
			    f.shadow_timeout);
		o.shadow_timeout_ms = (int)n;
	}
	if (f.max_watch) {
		char *end;
		long n = strtol(f.max_watch, &end, 10);
		if (*end || end == f.max_watch || n < 1 || n > 100000)
			return client_usage_error(
			    usage,
			    "--max-watch-streams: expected 1..100000, not "
			    "'%s'",
			    f.max_watch);
		o.max_watch_streams = (int)n;
	}
	if (f.workers) {
		char *end;
		long n = strtol(f.workers, &end, 10);
		if (*end || end == f.workers || n < 1 || n > 1024)
			return client_usage_error(
			    usage, "--workers: expected 1..1024, not '%s'",
			    f.workers);
		o.workers = (int)n;
	}
	const client_options *c = &args.options;
	o.primary = (proxy_upstream){
	    .endpoint = f.primary_endpoint,
	    .token = f.primary_token,
	    .tls = !(c->insecure || f.primary_insecure),
	    .ca_path = f.primary_ca_path ? f.primary_ca_path : c->ca_path,
	    .skip_verify_ca = c->skip_verify_ca || f.primary_skip_verify_ca};
	o.shadow = (proxy_upstream){
	    .endpoint = f.shadow_endpoint,
	    .token = f.shadow_token,
	    .tls = !(c->insecure || f.shadow_insecure),
	    .ca_path = f.shadow_ca_path ? f.shadow_ca_path : c->ca_path,
	    .skip_verify_ca = c->skip_verify_ca || f.shadow_skip_verify_ca};
	o.log = log_line;

	/* Before any thread exists, so that all inherit the mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	pemba_error err = {0};
	pemba_proxy *p;
	if (proxy_new(&o, &p, &err) < 0) {
		fprintf(stderr, "pemba proxy: %s\n", err.message);
		return 1;
	}
	running_proxy = p;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	pthread_t stats_thread;
	bool have_stats_thread =
	    pthread_create(&stats_thread, NULL, stats_main, p) == 0;
	fprintf(stderr,
	        "pemba proxy: listening on %s (%s), port %d, primary %s, "
	        "shadow %s, read sample %g\n",
	        f.listen, f.tls_cert_path ? "TLS" : "h2c", proxy_port(p),
	        f.primary_endpoint, f.shadow_endpoint, o.shadow_read_sample);
	int rc = proxy_run(p, &err);
	running_proxy = NULL;
	if (have_stats_thread) {
		stats_thread_done = 1;
		pthread_kill(stats_thread, SIGUSR1);
		pthread_join(stats_thread, NULL);
	}
	print_stats(p, " at exit");
	proxy_free(p);
	if (rc < 0) {
		fprintf(stderr, "pemba proxy: %s\n", err.message);
		return 1;
	}
	fprintf(stderr, "pemba proxy: stopped\n");
	return 0;
}
