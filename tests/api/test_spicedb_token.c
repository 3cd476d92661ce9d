/*
 * test_spicedb_token.c -- SpiceDB ZedTokens: the revision text of real
 * tokens (SpiceDB 1.54 on its memory datastore and on PostgreSQL), and the
 * order of revisions: decimal, hybrid-logical-clock and PostgreSQL
 * snapshots, including snapshots that are not ordered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "api/spicedb_token.h"
#include "api/zedtoken.h"

/* Tokens the real SpiceDB returned (tests/support/spicedb_facade). */
#define MEMDB_WRITE "Gh8KEzE3OTY2NTE3MzEzODMxODAyNzYSCDk3YWI4ZGMx"
/* PostgreSQL: a write (xmin 845, its txid 844), then ReadSchema's read_at
 * right after it (xmin 845) and right before it (xmin 844). */
#define PG_WRITE "GiQKGENNMEdJTXdHS01pcXBlbjB1ci8zR0E9PRIIMWQ4YThhNWY="
#define PG_HEAD_AFTER "GhAKBENNMEcSCDFkOGE4YTVm"
#define PG_HEAD_BEFORE "GhAKBENNd0cSCDFkOGE4YTVm"

static void revision_of_real_tokens(void **state)
{
	(void)state;
	char rev[256];
	assert_int_equal(spicedb_token_revision(MEMDB_WRITE, rev, sizeof(rev)),
	                 0);
	assert_string_equal(rev, "1796651731383180276");
	assert_int_equal(spicedb_token_revision(PG_WRITE, rev, sizeof(rev)), 0);
	assert_string_equal(rev, "CM0GIMwGKMiqpen0ur/3GA==");
	assert_int_equal(
	    spicedb_token_revision(PG_HEAD_AFTER, rev, sizeof(rev)), 0);
	assert_string_equal(rev, "CM0G");
	/* Unpadded and URL-alphabet spellings decode too. */
	assert_int_equal(spicedb_token_revision("GhAKBENNMEcSCDFkOGE4YTVm", rev,
	                                        sizeof(rev)),
	                 0);
	/* The older numeric form (field 2). */
	assert_int_equal(spicedb_token_revision("EgIIKg==", rev, sizeof(rev)),
	                 0);
	assert_string_equal(rev, "42");
}

static void foreign_and_damaged_tokens(void **state)
{
	(void)state;
	char rev[256];
	/* A pemba token is not a SpiceDB token. */
	char pemba[ZEDTOKEN_BUFSIZE];
	assert_true(zedtoken_encode(42, "0123456789abcdef0123456789abcdef",
	                            0xdeadbeef, pemba) > 0);
	assert_int_equal(spicedb_token_revision(pemba, rev, sizeof(rev)), -1);
	assert_int_equal(spicedb_token_revision("", rev, sizeof(rev)), -1);
	assert_int_equal(spicedb_token_revision("!!!!", rev, sizeof(rev)), -1);
	assert_int_equal(spicedb_token_revision(NULL, rev, sizeof(rev)), -1);
	/* Cut short: the length prefix runs past the end. */
	assert_int_equal(
	    spicedb_token_revision("Gh8KEzE3OTY2NTE3", rev, sizeof(rev)), -1);
	/* Too small a buffer. */
	assert_int_equal(spicedb_token_revision(MEMDB_WRITE, rev, 5), -1);
}

static int compare(const char *a, const char *b)
{
	int c = 99;
	if (spicedb_revision_compare(a, b, &c) != 0)
		return -99;
	return c;
}

static void decimal_revisions(void **state)
{
	(void)state;
	assert_int_equal(compare("1796651731383180276", "1796651731383180276"),
	                 0);
	assert_int_equal(compare("1796651731383180276", "1796651743186028321"),
	                 -1);
	assert_int_equal(compare("1796651743186028321", "1796651731383180276"),
	                 1);
	/* Longer is bigger, beyond 64 bits too; leading zeros do not count. */
	assert_int_equal(compare("99", "100"), -1);
	assert_int_equal(compare("0099", "99"), 0);
	assert_int_equal(compare("123456789012345678901234567890", "9"), 1);
	/* Hybrid logical clocks: wall time, then the logical counter. */
	assert_int_equal(compare("1700000000000000000.0000000001",
	                         "1700000000000000000.0000000002"),
	                 -1);
	assert_int_equal(compare("1700000000000000001.0000000000",
	                         "1700000000000000000.0000000009"),
	                 1);
	assert_int_equal(compare("5", "5.0000000000"), 0);
	assert_int_equal(compare("12a", "12"), -99);
	assert_int_equal(compare("", "1"), -99);
}

static void postgres_snapshots(void **state)
{
	(void)state;
	char w[256], after[256], before[256];
	assert_int_equal(spicedb_token_revision(PG_WRITE, w, sizeof(w)), 0);
	assert_int_equal(
	    spicedb_token_revision(PG_HEAD_AFTER, after, sizeof(after)), 0);
	assert_int_equal(
	    spicedb_token_revision(PG_HEAD_BEFORE, before, sizeof(before)), 0);
	/* The write's snapshot sees what the head read after it sees. */
	assert_int_equal(compare(w, after), 0);
	assert_int_equal(compare(after, w), 0);
	assert_int_equal(compare(before, w), -1);
	assert_int_equal(compare(w, before), 1);
	/* A: xmin 100, xmax 105, 102 in progress (packed); B: xmin 103;
	 * C: xmin 105.  A sees 103 and 104, B sees 102: not ordered.  C
	 * sees everything either sees. */
	const char *a = "CGQQBRoBAg==", *b = "CGc=", *c = "CGk=";
	assert_int_equal(compare(a, b), -99);
	assert_int_equal(compare(b, a), -99);
	assert_int_equal(compare(c, a), 1);
	assert_int_equal(compare(a, c), -1);
	assert_int_equal(compare(b, c), -1);
	/* The same A with its in-progress xid unpacked. */
	assert_int_equal(compare("CGQQBRgC", a), 0);
	/* Not a snapshot, or of two kinds. */
	assert_int_equal(compare(a, "104"), -99);
	assert_int_equal(compare("Zm9v", a), -99);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(revision_of_real_tokens),
	    cmocka_unit_test(foreign_and_damaged_tokens),
	    cmocka_unit_test(decimal_revisions),
	    cmocka_unit_test(postgres_snapshots),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
