/*
 * store_fixture.h -- helpers shared by the store tests: open a store,
 * write relationships from "type:id#rel@type:id[#rel]" strings, and
 * collect query results as strings for easy comparison.
 *
 * One suite, two engines: with PEMBA_TEST_DATASTORE=postgres (CTest
 * registers every store test a second time so, with the PostgreSQL
 * cluster fixture) fixture_uri() maps the SQLite URIs the tests are
 * written with onto PostgreSQL databases: "sqlite::memory:" to a new
 * database per call, a named memory datastore or a file URI to one
 * database per name for the whole process.  Tests about what only SQLite
 * has (files, URI parameters, snapshots) call FIXTURE_SQLITE_ONLY.
 */
#ifndef PEMBA_TEST_STORE_FIXTURE_H
#define PEMBA_TEST_STORE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pg_fixture.h"
#include "store/store.h"

/* The datastore URI a test means by `uri` on the engine under test
 * (static storage for the process; see above). */
static inline const char *fixture_uri(const char *uri)
{
	return pg_fixture_uri(uri);
}

/* Skips the calling test on PostgreSQL, saying why. */
#define FIXTURE_SQLITE_ONLY(why)                                               \
	do {                                                                   \
		if (pg_fixture_enabled()) {                                    \
			print_message("skipped on PostgreSQL: %s\n", (why));   \
			skip();                                                \
		}                                                              \
	} while (0)

/* A relationship parsed in place from "rt:rid#rel@st:sid[#srel]". */
typedef struct fixture_rel {
	char buf[512];
	store_rel rel;
} fixture_rel;

static inline void fixture_parse(fixture_rel *out, const char *text)
{
	snprintf(out->buf, sizeof(out->buf), "%s", text);
	char *p = out->buf;
	store_rel *r = &out->rel;
	memset(r, 0, sizeof(*r));
	r->resource_type = p;
	p = strchr(p, ':');
	assert_non_null(p);
	*p++ = '\0';
	r->resource_id = p;
	p = strchr(p, '#');
	assert_non_null(p);
	*p++ = '\0';
	r->relation = p;
	p = strchr(p, '@');
	assert_non_null(p);
	*p++ = '\0';
	r->subject_type = p;
	p = strchr(p, ':');
	assert_non_null(p);
	*p++ = '\0';
	r->subject_id = p;
	r->subject_relation = "";
	p = strchr(p, '#');
	if (p) {
		*p++ = '\0';
		r->subject_relation = p;
	}
	r->caveat_name = "";
	r->caveat_context = "";
}

static inline store *fixture_open(const char *uri)
{
	store *s = NULL;
	pemba_error err = {0};
	int rc = store_open(fixture_uri(uri), NULL, &s, &err);
	if (rc)
		fail_msg("store_open(%s): %s", fixture_uri(uri), err.message);
	return s;
}

/* One write transaction applying `op` ('c' create, 't' touch, 'd'
 * delete) to each relationship; returns its revision. */
static inline pemba_revision fixture_write(store *s, int op, ...)
{
	pemba_error err = {0};
	store_txn *t;
	pemba_revision rev;
	assert_int_equal(store_txn_begin(s, &t, &rev, &err), 0);
	va_list ap;
	va_start(ap, op);
	const char *text;
	while ((text = va_arg(ap, const char *))) {
		fixture_rel fr;
		fixture_parse(&fr, text);
		int rc, deleted;
		if (op == 'c')
			rc = store_txn_create(t, &fr.rel, &err);
		else if (op == 't')
			rc = store_txn_touch(t, &fr.rel, &err);
		else
			rc = store_txn_delete(t, &fr.rel, &deleted, &err);
		if (rc)
			fail_msg("write %c %s: %s", op, text, err.message);
	}
	va_end(ap);
	if (store_txn_commit(t, &err))
		fail_msg("commit: %s", err.message);
	return rev;
}

static inline void fixture_format(char *out, size_t n, const store_rel *r)
{
	snprintf(out, n, "%s:%s#%s@%s:%s%s%s", r->resource_type, r->resource_id,
	         r->relation, r->subject_type, r->subject_id,
	         *r->subject_relation ? "#" : "", r->subject_relation);
}

/* Runs a query and returns its rows as "a;b;c" (caller frees). */
static inline char *fixture_query(store *s, pemba_revision at,
                                  const store_filter *f, const store_rel *after,
                                  size_t limit)
{
	pemba_error err = {0};
	store_iter *it;
	int rc = store_query(s, at, f, after, limit, &it, &err);
	if (rc)
		fail_msg("store_query: %s", err.message);
	size_t cap = 4096, len = 0;
	char *out = malloc(cap);
	out[0] = '\0';
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, &err)) == 1) {
		char line[600];
		fixture_format(line, sizeof(line), row);
		size_t l = strlen(line);
		if (len + l + 2 > cap) {
			cap = (cap + l) * 2;
			out = realloc(out, cap);
		}
		if (len)
			out[len++] = ';';
		memcpy(out + len, line, l + 1);
		len += l;
	}
	assert_int_equal(rc, 0);
	store_iter_close(it);
	return out;
}

#define assert_query(s, at, filter, expected)                                  \
	do {                                                                   \
		char *got_ = fixture_query((s), (at), (filter), NULL, 0);      \
		assert_string_equal(got_, (expected));                         \
		free(got_);                                                    \
	} while (0)

/* A fresh temporary directory (caller removes it with fixture_rmdir). */
static inline char *fixture_tmpdir(void)
{
	char tmpl[] = "/tmp/pemba-store-test-XXXXXX";
	char *d = mkdtemp(tmpl);
	assert_non_null(d);
	return strdup(d);
}

static inline void fixture_rmdir(char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(dir);
}

#endif
