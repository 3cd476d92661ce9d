/*
 * test_foreign_token.c -- ZedTokens of other datastores (pemba's and
 * SpiceDB's, as observed from SpiceDB 1.54 on its memory and PostgreSQL
 * datastores) read as source positions, and what a datastore that a
 * mirror copied into answers for them (src/core/positions.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/foreign_token.h"
#include "api/zedtoken.h"
#include "pemba.h"
#include "pg_fixture.h"

/* Written by SpiceDB 1.54 (memory datastore, WriteSchema's written_at). */
#define SPICEDB_MEMDB_TOKEN "Gh8KEzE3OTY2NTE2Mjg0NzkxNjc1NDMSCGIyNmIyOWVh"
/* Written by SpiceDB 1.54 on PostgreSQL: revision xmin 825. */
#define SPICEDB_PG_TOKEN "GiQKGENMa0dJTGdHS05qL3R0V29wYi8zR0E9PRIIMGI1MzdmNDA="

static void decodes_spicedb_memdb_tokens(void **state)
{
	(void)state;
	foreign_token ft;
	pemba_error err = {0};
	assert_int_equal(foreign_token_decode(SPICEDB_MEMDB_TOKEN,
	                                      strlen(SPICEDB_MEMDB_TOKEN), &ft,
	                                      &err),
	                 0);
	assert_string_equal(ft.source, "spicedb:b26b29ea");
	assert_string_equal(ft.revision, "1796651628479167543");
	assert_true(ft.pos.lower == 1796651628479167543LL);
	assert_true(ft.pos.upper == ft.pos.lower);
	/* Without padding, and in the URL alphabet, it is the same token. */
	char unpadded[64];
	snprintf(unpadded, sizeof(unpadded), "%s", SPICEDB_PG_TOKEN);
	unpadded[strlen(unpadded) - 1] = '\0';
	foreign_token a, b;
	assert_int_equal(
	    foreign_token_decode(unpadded, strlen(unpadded), &a, &err), 0);
	assert_int_equal(foreign_token_decode(SPICEDB_PG_TOKEN,
	                                      strlen(SPICEDB_PG_TOKEN), &b,
	                                      &err),
	                 0);
	assert_string_equal(a.revision, b.revision);
}

static void decodes_spicedb_postgres_snapshots(void **state)
{
	(void)state;
	foreign_token ft;
	pemba_error err = {0};
	assert_int_equal(foreign_token_decode(SPICEDB_PG_TOKEN,
	                                      strlen(SPICEDB_PG_TOKEN), &ft,
	                                      &err),
	                 0);
	assert_string_equal(ft.source, "spicedb:0b537f40");
	assert_string_equal(ft.revision, "CLkGILgGKNj/ttWopb/3GA==");
	assert_int_equal(ft.pos.lower, 825);
	assert_int_equal(ft.pos.upper, 825);
}

static void decodes_other_pemba_tokens(void **state)
{
	(void)state;
	char tok[ZEDTOKEN_BUFSIZE];
	zedtoken_encode(77, "some-other-datastore", 0, tok);
	foreign_token ft;
	pemba_error err = {0};
	assert_int_equal(foreign_token_decode(tok, strlen(tok), &ft, &err), 0);
	char want[64];
	snprintf(want, sizeof(want), "pemba:%016llx",
	         (unsigned long long)zedtoken_datastore_digest(
	             "some-other-datastore"));
	assert_string_equal(ft.source, want);
	assert_string_equal(ft.revision, "77");
	assert_int_equal(ft.pos.lower, 77);
}

static void refuses_garbage(void **state)
{
	(void)state;
	const char *bad[] = {"", "!!!!", "abc", "Zm9v", /* "foo" */
	                     /* field 3 holding a non-printable revision */
	                     "GgMKAQE="};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		foreign_token ft;
		pemba_error err = {0};
		int rc =
		    foreign_token_decode(bad[i], strlen(bad[i]), &ft, &err);
		if (rc == 0)
			fail_msg("\"%s\" decoded as %s @ %s", bad[i], ft.source,
			         ft.revision);
		assert_int_equal(rc, PEMBA_EINVAL);
		assert_non_null(strstr(err.message, "invalid ZedToken"));
	}
}

/* ---------------------------------------------- resolving on a datastore */

static pemba_db *open_db(void)
{
	pemba_db *db;
	pemba_error err = {0};
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err), 0);
	const char *schema = "definition user {}\n"
	                     "definition doc {\n relation viewer: user\n}\n";
	assert_int_equal(
	    pemba_write_schema(db, schema, strlen(schema), NULL, &err), 0);
	return db;
}

/* Applies source revision `rev` of source "pemba:src" as one write;
 * returns the revision here. */
static pemba_revision apply(pemba_db *db, int64_t rev, int exact)
{
	char id[32], text[32];
	snprintf(id, sizeof(id), "d%lld", (long long)rev);
	snprintf(text, sizeof(text), "%lld", (long long)rev);
	pemba_source_position p = {.source = "pemba:src",
	                           .revision = text,
	                           .lower = rev,
	                           .upper = rev,
	                           .exact = exact};
	pemba_update u = {.op = PEMBA_OP_TOUCH,
	                  .rel = {.resource_type = "doc",
	                          .resource_id = id,
	                          .relation = "viewer",
	                          .subject_type = "user",
	                          .subject_id = "u"}};
	pemba_write_options o = {.source_position = &p};
	pemba_revision out = 0;
	pemba_error err = {0};
	assert_int_equal(
	    pemba_write_relationships_ex(db, &u, 1, NULL, 0, &o, &out, &err),
	    0);
	return out;
}

static int resolve(pemba_db *db, int64_t rev, pemba_source_lookup mode,
                   pemba_revision *out, pemba_error *err)
{
	char text[32];
	snprintf(text, sizeof(text), "%lld", (long long)rev);
	pemba_source_position p = {.source = "pemba:src",
	                           .revision = text,
	                           .lower = rev,
	                           .upper = rev};
	return pemba_resolve_source_position(db, &p, mode, out, err);
}

static void resolves_recorded_positions(void **state)
{
	(void)state;
	pemba_db *db = open_db();
	pemba_error err = {0};
	pemba_revision got = 0;
	/* Never mirrored: refused as another datastore's token. */
	assert_int_equal(resolve(db, 10, PEMBA_SOURCE_AT_LEAST, &got, &err),
	                 PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "never mirrored from it"));

	/* The mirror's start (source revision 10), then 12 and 15. */
	pemba_source_position floor = {
	    .source = "pemba:src", .revision = "10", .lower = 10, .upper = 10};
	assert_int_equal(pemba_record_source_position(db, &floor, &err), 0);
	pemba_revision t12 = apply(db, 12, 1);
	pemba_revision t15 = apply(db, 15, 0);
	assert_true(t15 > t12);

	/* at least as fresh: the first recorded at or after it. */
	assert_int_equal(resolve(db, 12, PEMBA_SOURCE_AT_LEAST, &got, &err), 0);
	assert_int_equal(got, t12);
	assert_int_equal(resolve(db, 13, PEMBA_SOURCE_AT_LEAST, &got, &err), 0);
	assert_int_equal(got, t15);
	assert_int_equal(resolve(db, 3, PEMBA_SOURCE_AT_LEAST, &got, &err), 0);
	assert_true(got < t12); /* before the move: held by the start */
	assert_int_equal(resolve(db, 16, PEMBA_SOURCE_AT_LEAST, &got, &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "not applied here yet"));

	/* exact: only a revision applied as one write. */
	assert_int_equal(resolve(db, 12, PEMBA_SOURCE_EXACT, &got, &err), 0);
	assert_int_equal(got, t12);
	assert_int_equal(resolve(db, 15, PEMBA_SOURCE_EXACT, &got, &err),
	                 PEMBA_EPRECONDITION);
	assert_int_equal(resolve(db, 13, PEMBA_SOURCE_EXACT, &got, &err),
	                 PEMBA_EPRECONDITION);
	assert_int_equal(resolve(db, 3, PEMBA_SOURCE_EXACT, &got, &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "from before the move"));

	/* after (Watch): the newest recorded at or before it. */
	assert_int_equal(resolve(db, 14, PEMBA_SOURCE_AFTER, &got, &err), 0);
	assert_int_equal(got, t12);
	assert_int_equal(resolve(db, 15, PEMBA_SOURCE_AFTER, &got, &err), 0);
	assert_int_equal(got, t15);
	assert_int_equal(resolve(db, 9, PEMBA_SOURCE_AFTER, &got, &err),
	                 PEMBA_EREVISION);

	/* A replay keeps the first record. */
	pemba_revision again = apply(db, 12, 1);
	assert_true(again > t15);
	assert_int_equal(resolve(db, 12, PEMBA_SOURCE_EXACT, &got, &err), 0);
	assert_int_equal(got, t12);

	/* A bad position is refused, nothing written. */
	pemba_source_position bad = {.source = "", .revision = "1"};
	assert_int_equal(pemba_record_source_position(db, &bad, &err),
	                 PEMBA_EINVAL);
	pemba_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(decodes_spicedb_memdb_tokens),
	    cmocka_unit_test(decodes_spicedb_postgres_snapshots),
	    cmocka_unit_test(decodes_other_pemba_tokens),
	    cmocka_unit_test(refuses_garbage),
	    cmocka_unit_test(resolves_recorded_positions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
