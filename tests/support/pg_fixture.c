/*
 * pg_fixture.c -- fresh PostgreSQL databases for tests (pg_fixture.h).
 */
#include "pg_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

static char admin_uri[1024];
static char **created;
static size_t ncreated;

bool pg_fixture_enabled(void)
{
	const char *e = getenv("PEMBA_TEST_DATASTORE");
	return e &&
	       (strcmp(e, "postgres") == 0 || strcmp(e, "postgresql") == 0);
}

const char *pg_fixture_admin_uri(void)
{
	if (admin_uri[0])
		return admin_uri;
	const char *uri = getenv("PEMBA_TEST_PG_URI");
	if (uri && *uri) {
		snprintf(admin_uri, sizeof(admin_uri), "%s", uri);
		return admin_uri;
	}
	const char *file = getenv("PEMBA_TEST_PG_URI_FILE");
	FILE *f = file ? fopen(file, "r") : NULL;
	if (!f || !fgets(admin_uri, sizeof(admin_uri), f)) {
		fprintf(stderr,
		        "pg_fixture: no PostgreSQL cluster: set "
		        "PEMBA_TEST_PG_URI or PEMBA_TEST_PG_URI_FILE (%s)\n",
		        file ? file : "unset");
		exit(1);
	}
	fclose(f);
	admin_uri[strcspn(admin_uri, "\r\n")] = '\0';
	return admin_uri;
}

/* The admin URI with its database replaced by `db`. */
static char *uri_with_database(const char *db)
{
	const char *uri = pg_fixture_admin_uri();
	const char *q = strchr(uri, '?');
	size_t end = q ? (size_t)(q - uri) : strlen(uri);
	size_t slash = end;
	while (slash > 0 && uri[slash - 1] != '/')
		slash--;
	size_t n = strlen(uri) + strlen(db) + 1;
	char *out = malloc(n);
	snprintf(out, n, "%.*s%s%s", (int)slash, uri, db, q ? q : "");
	return out;
}

static void drop_all(void)
{
	PGconn *c = PQconnectdb(pg_fixture_admin_uri());
	for (size_t i = 0; i < ncreated; i++) {
		char sql[160];
		snprintf(sql, sizeof(sql),
		         "DROP DATABASE IF EXISTS %s WITH (FORCE)", created[i]);
		if (PQstatus(c) == CONNECTION_OK)
			PQclear(PQexec(c, sql));
		free(created[i]);
	}
	free(created);
	created = NULL;
	ncreated = 0;
	PQfinish(c);
}

char *pg_fixture_new_database(void)
{
	static unsigned seq;
	char db[64];
	snprintf(db, sizeof(db), "pemba_test_%ld_%u", (long)getpid(), ++seq);
	PGconn *c = PQconnectdb(pg_fixture_admin_uri());
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "pg_fixture: cannot connect to %s: %s\n",
		        pg_fixture_admin_uri(), PQerrorMessage(c));
		exit(1);
	}
	char sql[128];
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "pg_fixture: %s: %s\n", sql,
		        PQresultErrorMessage(r));
		exit(1);
	}
	PQclear(r);
	PQfinish(c);
	if (ncreated == 0)
		atexit(drop_all);
	created = realloc(created, (ncreated + 1) * sizeof(*created));
	created[ncreated++] = strdup(db);
	return uri_with_database(db);
}

long pg_fixture_exec(const char *uri, const char *sql)
{
	PGconn *c = PQconnectdb(uri);
	long out = -1;
	if (PQstatus(c) == CONNECTION_OK) {
		PGresult *r = PQexec(c, sql);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
			out = atol(PQgetvalue(r, 0, 0));
		else if (PQresultStatus(r) == PGRES_COMMAND_OK)
			out = 0;
		PQclear(r);
	}
	PQfinish(c);
	return out;
}

/* The URIs handed out for "sqlite::memory:" (owned here). */
static char *fresh[4096];
static size_t nfresh;

void pg_fixture_release(const char *uri)
{
	size_t i = 0;
	while (uri && i < nfresh && fresh[i] != uri)
		i++;
	if (!uri || i == nfresh)
		return;
	/* The database name: the URI's path, before any query. */
	const char *q = strchr(uri, '?');
	size_t end = q ? (size_t)(q - uri) : strlen(uri);
	size_t slash = end;
	while (slash > 0 && uri[slash - 1] != '/')
		slash--;
	char db[64];
	snprintf(db, sizeof(db), "%.*s", (int)(end - slash), uri + slash);
	for (size_t k = 0; k < ncreated; k++) {
		if (strcmp(created[k], db) != 0)
			continue;
		char sql[160];
		snprintf(sql, sizeof(sql),
		         "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
		if (pg_fixture_exec(pg_fixture_admin_uri(), sql) != 0)
			fprintf(stderr, "pg_fixture: %s failed\n", sql);
		free(created[k]);
		created[k] = created[--ncreated];
		break;
	}
	free(fresh[i]);
	fresh[i] = fresh[--nfresh];
}

const char *pg_fixture_uri(const char *uri)
{
	static struct {
		char *from, *to;
	} map[256];
	static size_t n;
	if (!uri || !pg_fixture_enabled() || strncmp(uri, "sqlite:", 7) != 0)
		return uri;
	if (strcmp(uri, "sqlite::memory:") == 0) {
		if (nfresh == sizeof(fresh) / sizeof(fresh[0])) {
			fprintf(stderr, "pg_fixture: too many databases\n");
			exit(1);
		}
		return fresh[nfresh++] = pg_fixture_new_database();
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(map[i].from, uri) == 0)
			return map[i].to;
	if (n == sizeof(map) / sizeof(map[0])) {
		fprintf(stderr, "pg_fixture: too many named databases\n");
		exit(1);
	}
	map[n].from = strdup(uri);
	map[n].to = pg_fixture_new_database();
	return map[n++].to;
}
