/*
 * bench_spicedb_source.c -- the real SpiceDB as the source of a move: its
 * export rate, measured in-process.
 *
 * Starts SpiceDB through its C ABI (tests/support/spicedb_ref.h), on
 * PostgreSQL with --datastore-uri (../shared/spicedb-pg/setup.sh makes
 * one) or on its memory datastore, writes DIR/schema.zed and the first N
 * lines of DIR/relationships.txt (the dump of `bench_check --dump DIR`)
 * with WriteRelationships TOUCH batches of 1000 (the load is timed but is
 * not the point), then reads everything back --runs times the way a
 * backup of SpiceDB must (SpiceDB has ExportBulkRelationships on its
 * gRPC server, but the library serves only ReadRelationships and the
 * other streaming calls on its unix socket): one ReadRelationships per
 * definition of the schema, fully consistent at the revision of the
 * first response (at_exact_snapshot afterwards), no limit, over gRPC on
 * the socket.  Prints the count and the rate of each run and the median.
 *
 * `pemba backup create` cannot read that socket itself (it serves no
 * SchemaService); the gRPC facade (bench_move.sh --spicedb-facade) is the
 * way to time pemba's client against SpiceDB.  This program gives
 * SpiceDB's own read rate, without pemba in the path.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/grpc.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "pemba.h"
#include "spicedb_ref.h"
#include "util/xalloc.h"

#define READ_PATH "/authzed.api.v1.PermissionsService/ReadRelationships"
#define MAX_RUNS 100

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "bench_spicedb_source: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(1);
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot read %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = xmalloc((size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		die("short read on %s", path);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* The definitions of a schema text, in order (words after `definition`
 * at a line start).  NULL-terminated heap array. */
static char **schema_definitions(const char *text)
{
	size_t n = 0, cap = 8;
	char **defs = xmalloc(cap * sizeof(*defs));
	for (const char *p = text; p && *p;) {
		while (*p == ' ' || *p == '\t')
			p++;
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

/* ================================================================ read */

typedef struct read_ctx {
	size_t count;
	char *token; /* read_at of the first response */
	bool malformed;
} read_ctx;

static int on_read(void *ctx, const uint8_t *data, size_t len)
{
	read_ctx *c = ctx;
	Authzed__Api__V1__ReadRelationshipsResponse *r =
	    authzed__api__v1__read_relationships_response__unpack(NULL, len,
	                                                          data);
	if (!r) {
		c->malformed = true;
		return 1;
	}
	if (r->relationship)
		c->count++;
	if (!c->token && r->read_at && r->read_at->token)
		c->token = xstrdup(r->read_at->token);
	authzed__api__v1__read_relationships_response__free_unpacked(r, NULL);
	return 0;
}

/* Reads every relationship of every definition; returns the count. */
static size_t read_all(grpc_client *client, char **defs)
{
	read_ctx c = {0};
	for (char **d = defs; *d; d++) {
		Authzed__Api__V1__RelationshipFilter filter =
		    AUTHZED__API__V1__RELATIONSHIP_FILTER__INIT;
		filter.resource_type = *d;
		Authzed__Api__V1__ZedToken zt =
		    AUTHZED__API__V1__ZED_TOKEN__INIT;
		Authzed__Api__V1__Consistency cons =
		    AUTHZED__API__V1__CONSISTENCY__INIT;
		if (c.token) {
			zt.token = c.token;
			cons.requirement_case =
			    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT;
			cons.at_exact_snapshot = &zt;
		} else {
			cons.requirement_case =
			    AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT;
			cons.fully_consistent = 1;
		}
		Authzed__Api__V1__ReadRelationshipsRequest req =
		    AUTHZED__API__V1__READ_RELATIONSHIPS_REQUEST__INIT;
		req.consistency = &cons;
		req.relationship_filter = &filter;
		size_t len =
		    authzed__api__v1__read_relationships_request__get_packed_size(
		        &req);
		uint8_t *buf = xmalloc(len ? len : 1);
		authzed__api__v1__read_relationships_request__pack(&req, buf);
		grpc_status st = {0};
		int code = grpc_client_server_streaming(
		    client, READ_PATH, NULL, 0, 0, buf, len, on_read, &c, &st);
		free(buf);
		if (code != GRPC_STATUS_OK || c.malformed)
			die("ReadRelationships: %s",
			    st.message ? st.message : "malformed response");
		grpc_status_clear(&st);
	}
	free(c.token);
	return c.count;
}

/* ================================================================ main */

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: bench_spicedb_source --dir DIR [--relationships N] "
	        "[--datastore-uri URI]\n"
	        "       [--runs K]\n"
	        "\n"
	        "  --dir DIR            bench_check --dump output (schema.zed, "
	        "relationships.txt)\n"
	        "  --relationships N    load the first N (default: all)\n"
	        "  --datastore-uri URI  SpiceDB on PostgreSQL "
	        "(postgres://...); default: memory\n"
	        "  --runs K             timed full reads (default 3)\n"
	        "The library: $PEMBA_SPICEDB_LIB or scripts/spicedb.sh's "
	        "copy.\n");
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *uri = NULL;
	size_t limit = 0;
	int runs = 3;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--dir") == 0 && v) {
			dir = v;
			i++;
		} else if (strcmp(a, "--datastore-uri") == 0 && v) {
			uri = v;
			i++;
		} else if (strcmp(a, "--relationships") == 0 && v) {
			limit = (size_t)strtoull(v, NULL, 10);
			i++;
		} else if (strcmp(a, "--runs") == 0 && v) {
			runs = atoi(v);
			i++;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!dir || runs < 0 || runs > MAX_RUNS) {
		usage(stderr);
		return 2;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/schema.zed", dir);
	char *schema = slurp(path);
	snprintf(path, sizeof(path), "%s/relationships.txt", dir);
	char *text = slurp(path);

	char options[2048] = "{}";
	if (uri)
		snprintf(
		    options, sizeof(options),
		    "{\"datastore\":\"postgres\",\"datastore_uri\":\"%s\"}",
		    uri);
	char e[4096];
	spicedb_ref *ref;
	if (spicedb_ref_open_with(spicedb_ref_library_path(), options, &ref, e,
	                          sizeof(e)))
		die("%s", e);
	if (spicedb_ref_write_schema(ref, schema, e, sizeof(e)))
		die("schema: %s", e);

	/* Load, 1000 per WriteRelationships. */
	pemba_relationship rels[1000];
	char *storage[1000];
	size_t loaded = 0, n = 0;
	double t0 = now_seconds();
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save);;
	     l = strtok_r(NULL, "\n", &save)) {
		bool end = !l || (limit && loaded + n >= limit);
		if (!end) {
			pemba_error err;
			if (pemba_parse_relationship(l, &rels[n], &storage[n],
			                             &err))
				die("bad relationship: %s", err.message);
			n++;
		}
		if (n == 1000 || (end && n)) {
			if (spicedb_ref_touch(ref, rels, n, e, sizeof(e)))
				die("write: %s", e);
			for (size_t i = 0; i < n; i++)
				pemba_free(storage[i]);
			loaded += n;
			n = 0;
		}
		if (end)
			break;
	}
	double load_s = now_seconds() - t0;
	printf("spicedb (%s): loaded %zu relationships in %.1f s (%.0f/s, "
	       "WriteRelationships x1000)\n",
	       uri ? "postgres" : "memory", loaded, load_s,
	       (double)loaded / load_s);
	fflush(stdout);

	const char *target = spicedb_ref_streaming_target(ref);
	if (!target)
		die("%s", "no streaming socket");
	grpc_client_options copts;
	grpc_client_options_init(&copts);
	copts.target = target;
	grpc_client *client;
	pemba_error perr = {0};
	if (grpc_client_connect(&copts, &client, &perr) != 0)
		die("connect: %s", perr.message);
	char **defs = schema_definitions(schema);
	double rates[MAX_RUNS];
	for (int r = 0; r < runs; r++) {
		t0 = now_seconds();
		size_t got = read_all(client, defs);
		double s = now_seconds() - t0;
		rates[r] = (double)got / s;
		printf("spicedb read run %d: %zu relationships in %.2f s "
		       "(%.0f/s)\n",
		       r + 1, got, s, rates[r]);
		fflush(stdout);
	}
	if (runs > 0) {
		qsort(rates, (size_t)runs, sizeof(*rates), compare_doubles);
		printf("spicedb read median: %.0f relationships/s "
		       "(ReadRelationships per definition, in-process gRPC "
		       "over its unix socket)\n",
		       rates[runs / 2]);
	}
	grpc_client_close(client);
	spicedb_ref_close(ref);
	return 0;
}
