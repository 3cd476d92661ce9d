/*
 * test_zedtoken.c -- ZedTokens: round trips, the pinned version-1 and
 * version-2 formats, strict decoding of damaged or foreign tokens, and
 * datastore identity and history (forked copies) through real handles.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/zedtoken.h"
#include "pemba.h"
#include "pg_fixture.h"
#include "util/hash.h"

#define DS_A "0123456789abcdef0123456789abcdef"
#define DS_B "fedcba9876543210fedcba9876543210"
/* encode(42, "pemba") under format version 1; never change it. */
#define GOLDEN_42_PEMBA "ASqY5BeUhgLECh6hFYs"
/* encode(42, "pemba", fingerprint 0xdeadbeef) under format version 2;
 * never change it. */
#define GOLDEN_V2_42_PEMBA "AiqY5BeUhgLECu--rd4fiWo8"

/* ============================================================ helpers */

/* Decodes token for datastore ds, expecting failure with a message that
 * contains want. */
static void decode_fails(const char *token, size_t len, const char *ds,
                         const char *want)
{
	pemba_error err = {0};
	pemba_revision rev = 12345;
	int rc = zedtoken_decode(token, len, ds, &rev, &err);
	if (rc == PEMBA_OK)
		fail_msg("token \"%.*s\" unexpectedly decoded to %llu",
		         (int)len, token, (unsigned long long)rev);
	assert_int_equal(rc, PEMBA_EINVAL);
	assert_int_equal(err.code, PEMBA_EINVAL);
	assert_int_equal(rev, 12345); /* untouched on failure */
	if (!strstr(err.message, want))
		fail_msg("message for \"%.*s\" lacks \"%s\": %s", (int)len,
		         token, want, err.message);
}

static pemba_revision decode_ok(const char *token, const char *ds)
{
	pemba_error err = {0};
	pemba_revision rev = 0;
	int rc = zedtoken_decode(token, strlen(token), ds, &rev, &err);
	if (rc != PEMBA_OK)
		fail_msg("token \"%s\" did not decode: %s", token, err.message);
	return rev;
}

/* Base64url (unpadded) of n bytes, for hand-built records. */
static void b64url(const unsigned char *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrst"
	                        "uvwxyz0123456789-_";
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = acc << 8 | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = a[acc >> bits & 63];
		}
	}
	if (bits)
		out[o++] = a[acc << (6 - bits) & 63];
	out[o] = '\0';
}

/* Builds a record by hand from the documented layout: version, the given
 * varint bytes, digest of ds, the fingerprint when `with_fingerprint`
 * (version 2), checksum.  The seeds are part of the format (tokens must
 * survive upgrades), so the test states them. */
static void build_record(unsigned char version, const unsigned char *varint,
                         size_t vlen, const char *ds, int with_fingerprint,
                         uint32_t fingerprint, char *out)
{
	unsigned char rec[64];
	size_t n = 0;
	rec[n++] = version;
	if (vlen)
		memcpy(rec + n, varint, vlen);
	n += vlen;
	uint64_t d = hash_str(ds, 0x7a6564746f6b656eULL);
	for (int i = 0; i < 8; i++)
		rec[n++] = (unsigned char)(d >> (8 * i));
	if (with_fingerprint)
		for (int i = 0; i < 4; i++)
			rec[n++] = (unsigned char)(fingerprint >> (8 * i));
	uint32_t c = (uint32_t)hash_bytes(rec, n, 0x70656d6261636b73ULL);
	for (int i = 0; i < 4; i++)
		rec[n++] = (unsigned char)(c >> (8 * i));
	b64url(rec, n, out);
}

/* A version-1 record (no fingerprint). */
static void build_token(unsigned char version, const unsigned char *varint,
                        size_t vlen, const char *ds, char *out)
{
	build_record(version, varint, vlen, ds, 0, 0, out);
}

/* A version-2 record. */
static void build_token_v2(const unsigned char *varint, size_t vlen,
                           const char *ds, uint32_t fingerprint, char *out)
{
	build_record(2, varint, vlen, ds, 1, fingerprint, out);
}

/* ============================================================ tests */

static void round_trips_every_revision_size(void **state)
{
	const pemba_revision revs[] = {0,
	                               1,
	                               127,
	                               128,
	                               300,
	                               16383,
	                               16384,
	                               (1ULL << 32) + 7,
	                               (1ULL << 63) - 1,
	                               1ULL << 63,
	                               UINT64_MAX};
	const uint32_t fps[] = {0, 1, 0xdeadbeef, UINT32_MAX};
	for (size_t i = 0; i < sizeof(revs) / sizeof(revs[0]); i++) {
		for (size_t v = 0; v < 1 + sizeof(fps) / sizeof(fps[0]); v++) {
			/* v 0: version 1; then version 2 with each
			 * fingerprint. */
			char tok[ZEDTOKEN_BUFSIZE];
			uint32_t fp = v ? fps[v - 1] : 0;
			size_t n = v ? zedtoken_encode(revs[i], DS_A, fp, tok)
			             : zedtoken_encode_v1(revs[i], DS_A, tok);
			assert_int_equal(n, strlen(tok));
			assert_true(n >= 19 && n <= ZEDTOKEN_MAX_LEN);
			if (v)
				assert_true(n >= 24);
			assert_int_equal(
			    strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"
			                "hijklmnopqrstuvwxyz0123456789-_"),
			    n);
			assert_true(decode_ok(tok, DS_A) == revs[i]);
			zedtoken_info info;
			pemba_error err = {0};
			assert_int_equal(zedtoken_parse(tok, n, &info, &err),
			                 PEMBA_OK);
			assert_int_equal(info.version, v ? ZEDTOKEN_VERSION
			                                 : ZEDTOKEN_VERSION_1);
			assert_true(info.revision == revs[i]);
			assert_true(info.datastore_digest ==
			            zedtoken_datastore_digest(DS_A));
			assert_true(info.fingerprint == fp);
		}
	}
	/* The largest revision gives the longest token, within the bound. */
	char tok[ZEDTOKEN_BUFSIZE];
	assert_int_equal(zedtoken_encode_v1(UINT64_MAX, DS_A, tok), 31);
	assert_int_equal(zedtoken_encode(UINT64_MAX, DS_A, 7, tok), 36);
	assert_int_equal(ZEDTOKEN_MAX_LEN, 36);
}

static void encoding_matches_the_documented_format(void **state)
{
	/* 300 = 0xAC 0x02 as a LEB128 varint. */
	const unsigned char v300[] = {0xac, 0x02};
	char want[64], got[ZEDTOKEN_BUFSIZE];
	build_token(1, v300, sizeof(v300), DS_A, want);
	zedtoken_encode_v1(300, DS_A, got);
	assert_string_equal(got, want);
	build_token_v2(v300, sizeof(v300), DS_A, 0x01020304, want);
	zedtoken_encode(300, DS_A, 0x01020304, got);
	assert_string_equal(got, want);
	/* And golden values, so a change of hash or layout cannot slip
	 * through unnoticed: tokens issued before an upgrade must still
	 * decode after it. */
	zedtoken_encode_v1(42, "pemba", got);
	char again[64];
	const unsigned char v42[] = {42};
	build_token(1, v42, 1, "pemba", again);
	assert_string_equal(got, again);
	assert_int_equal(strlen(got), 19);
	assert_string_equal(got, GOLDEN_42_PEMBA);
	zedtoken_encode(42, "pemba", 0xdeadbeef, got);
	build_token_v2(v42, 1, "pemba", 0xdeadbeef, again);
	assert_string_equal(got, again);
	assert_int_equal(strlen(got), 24);
	assert_string_equal(got, GOLDEN_V2_42_PEMBA);
	/* Both decode, forever, to what they say. */
	zedtoken_info info;
	pemba_error err = {0};
	assert_int_equal(zedtoken_parse(GOLDEN_42_PEMBA,
	                                strlen(GOLDEN_42_PEMBA), &info, &err),
	                 PEMBA_OK);
	assert_int_equal(info.version, 1);
	assert_int_equal(info.revision, 42);
	assert_int_equal(info.fingerprint, 0);
	assert_int_equal(zedtoken_parse(GOLDEN_V2_42_PEMBA,
	                                strlen(GOLDEN_V2_42_PEMBA), &info,
	                                &err),
	                 PEMBA_OK);
	assert_int_equal(info.version, 2);
	assert_int_equal(info.revision, 42);
	assert_true(info.fingerprint == 0xdeadbeef);
	assert_true(info.datastore_digest ==
	            zedtoken_datastore_digest("pemba"));
	/* The fingerprint of a nonce, pinned too (seed "pebmnonc"). */
	unsigned char nb[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint64_t nonce = 0;
	for (int i = 7; i >= 0; i--)
		nonce = nonce << 8 | nb[i];
	assert_true(zedtoken_fingerprint(nonce) ==
	            (uint32_t)hash_bytes(nb, 8, 0x7065626d6e6f6e63ULL));
	assert_int_equal(zedtoken_fingerprint(0), 0);
}

static void token_from_another_datastore_is_refused(void **state)
{
	char tok[ZEDTOKEN_BUFSIZE];
	zedtoken_encode(7, DS_A, 99, tok);
	decode_fails(tok, strlen(tok), DS_B,
	             "ZedToken is for another datastore");
	zedtoken_encode_v1(7, DS_A, tok);
	decode_fails(tok, strlen(tok), DS_B,
	             "ZedToken is for another datastore");
	/* parse (no datastore) still reads it. */
	zedtoken_info info;
	pemba_error err = {0};
	assert_int_equal(zedtoken_parse(tok, strlen(tok), &info, &err),
	                 PEMBA_OK);
	assert_int_equal(info.revision, 7);
	/* An empty id is an identity too, distinct from every other. */
	zedtoken_encode(7, "", 5, tok);
	assert_int_equal(decode_ok(tok, ""), 7);
	decode_fails(tok, strlen(tok), DS_A, "another datastore");
}

static void empty_and_oversized_tokens_are_invalid(void **state)
{
	decode_fails("", 0, DS_A, "invalid ZedToken: the token is empty");
	decode_fails(NULL, 0, DS_A, "empty");
	char big[200];
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	decode_fails(big, strlen(big), DS_A, "longer than any token");
}

static void foreign_encodings_are_invalid(void **state)
{
	char tok[ZEDTOKEN_BUFSIZE + 4];
	zedtoken_encode(1000, DS_A, 77, tok);
	size_t n = strlen(tok);
	/* Padding, standard-base64 characters, whitespace, NUL inside. */
	char padded[ZEDTOKEN_BUFSIZE + 8];
	snprintf(padded, sizeof(padded), "%s=", tok);
	decode_fails(padded, strlen(padded), DS_A, "invalid ZedToken");
	const char bad_chars[] = {'+', '/', ' ', '=', '.', '\n', '\0', '\xff'};
	for (size_t i = 0; i < sizeof(bad_chars); i++) {
		char t[ZEDTOKEN_BUFSIZE];
		memcpy(t, tok, n + 1);
		t[n / 2] = bad_chars[i];
		decode_fails(t, n, DS_A, "invalid ZedToken");
	}
	/* A SpiceDB-style token (base64 of a protobuf) is not ours. */
	decode_fails("GhUKEzE3MDAwMDAwMDAwMDAwMDAwMDA=", 32, DS_A,
	             "invalid ZedToken");
	decode_fails("GhUKEzE3MDAwMDAwMDAwMDAwMDAwMDA", 31, DS_A,
	             "invalid ZedToken");
}

static void every_single_character_change_is_detected(void **state)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl"
	                               "mnopqrstuvwxyz0123456789-_";
	const pemba_revision revs[] = {0, 5, 1ULL << 40, UINT64_MAX};
	for (size_t r = 0; r < 2 * sizeof(revs) / sizeof(revs[0]); r++) {
		char tok[ZEDTOKEN_BUFSIZE];
		size_t nrevs = sizeof(revs) / sizeof(revs[0]);
		size_t n = r < nrevs ? zedtoken_encode_v1(revs[r], DS_A, tok)
		                     : zedtoken_encode(revs[r - nrevs], DS_A,
		                                       0x12345678, tok);
		for (size_t i = 0; i < n; i++) {
			for (size_t a = 0; a < sizeof(alphabet) - 1; a++) {
				if (alphabet[a] == tok[i])
					continue;
				char t[ZEDTOKEN_BUFSIZE];
				memcpy(t, tok, n + 1);
				t[i] = alphabet[a];
				decode_fails(t, n, DS_A, "ZedToken");
			}
		}
		/* Every truncation and every extension. */
		for (size_t k = 1; k < n; k++)
			decode_fails(tok, k, DS_A, "invalid ZedToken");
		for (size_t a = 0; a < sizeof(alphabet) - 1; a++) {
			char t[ZEDTOKEN_BUFSIZE + 1];
			memcpy(t, tok, n);
			t[n] = alphabet[a];
			t[n + 1] = '\0';
			if (n + 1 <= ZEDTOKEN_MAX_LEN)
				decode_fails(t, n + 1, DS_A,
				             "invalid ZedToken");
		}
	}
}

static void noncanonical_records_are_invalid(void **state)
{
	char t[64];
	/* Unknown version, checksum otherwise right. */
	const unsigned char v1[] = {1};
	build_token(3, v1, 1, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "unknown version 3");
	build_record(3, v1, 1, DS_A, 1, 5, t);
	decode_fails(t, strlen(t), DS_A, "unknown version 3");
	build_token(0, v1, 1, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "unknown version 0");
	/* A version-2 record without its fingerprint, a version-1 record
	 * with one: the varint swallows the extra or missing bytes and is
	 * malformed. */
	const unsigned char v7[] = {7};
	build_token(2, v7, 1, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "invalid ZedToken");
	build_record(1, v7, 1, DS_A, 1, 0x01010101, t);
	decode_fails(t, strlen(t), DS_A, "invalid ZedToken");
	/* Version 2: the same varint rules. */
	const unsigned char pad1[] = {0x81, 0x00};
	build_token_v2(pad1, 2, DS_A, 9, t);
	decode_fails(t, strlen(t), DS_A, "malformed revision");
	build_token_v2(NULL, 0, DS_A, 9, t);
	decode_fails(t, strlen(t), DS_A, "too short");
	/* Non-minimal varint: 1 written as 0x81 0x00. */
	const unsigned char padded1[] = {0x81, 0x00};
	build_token(1, padded1, 2, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "malformed revision");
	/* A continuation bit on the last byte / missing in the middle. */
	const unsigned char cont_last[] = {0x81};
	build_token(1, cont_last, 1, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "malformed revision");
	const unsigned char no_cont[] = {0x01, 0x01};
	build_token(1, no_cont, 2, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "malformed revision");
	/* 2^64: ten bytes whose last carries more than one bit. */
	const unsigned char over[] = {0x80, 0x80, 0x80, 0x80, 0x80,
	                              0x80, 0x80, 0x80, 0x80, 0x02};
	build_token(1, over, 10, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "out of range");
	/* Eleven varint bytes do not fit the length bound at all. */
	const unsigned char eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
	                                0x80, 0x80, 0x80, 0x81, 0x00};
	build_token(1, eleven, 11, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "invalid ZedToken");
	/* No varint at all. */
	build_token(1, NULL, 0, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "too short");
	/* The largest value written minimally is accepted. */
	const unsigned char max[] = {0xff, 0xff, 0xff, 0xff, 0xff,
	                             0xff, 0xff, 0xff, 0xff, 0x01};
	build_token(1, max, 10, DS_A, t);
	assert_true(decode_ok(t, DS_A) == UINT64_MAX);
}

static void nonzero_padding_bits_are_invalid(void **state)
{
	char tok[ZEDTOKEN_BUFSIZE];
	size_t n = zedtoken_encode_v1(9, DS_A, tok);
	/* 14 bytes encode to 19 characters: the last carries 4 bits of
	 * data and 2 unused bits, which must be zero. */
	assert_int_equal(n, 19);
	const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrst"
	                       "uvwxyz0123456789-_";
	int last = (int)(strchr(alphabet, tok[n - 1]) - alphabet);
	assert_int_equal(last & 3, 0);
	tok[n - 1] = alphabet[last | 1];
	decode_fails(tok, n, DS_A, "bad encoding");
}

/* Tokens through real handles: two in-memory datastores have different
 * identities; a file datastore keeps its identity across reopening. */
static void datastore_identity_follows_the_datastore(void **state)
{
	pemba_error err = {0};
	pemba_db *a = NULL, *b = NULL;
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &a, &err), 0);
	assert_int_equal(
	    pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &b, &err), 0);
	assert_int_equal(strlen(pemba_datastore_id(a)), 32);
	assert_string_not_equal(pemba_datastore_id(a), pemba_datastore_id(b));
	char tok[ZEDTOKEN_BUFSIZE];
	zedtoken_encode_db(a, 3, tok);
	pemba_revision rev = 0;
	assert_int_equal(zedtoken_decode_db(a, tok, strlen(tok), &rev, &err),
	                 PEMBA_OK);
	assert_int_equal(rev, 3);
	assert_int_equal(zedtoken_decode_db(b, tok, strlen(tok), &rev, &err),
	                 PEMBA_EINVAL);
	assert_non_null(
	    strstr(err.message, "ZedToken is for another datastore"));
	pemba_close(a);
	pemba_close(b);

	char dir[] = "/tmp/pemba-zedtoken-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char uri[256], path[200];
	snprintf(path, sizeof(path), "%s/db.sqlite", dir);
	snprintf(uri, sizeof(uri), "sqlite://%s", path);
	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &a, &err), 0);
	zedtoken_encode_db(a, 11, tok);
	pemba_close(a);
	assert_int_equal(pemba_open(pg_fixture_uri(uri), NULL, &a, &err), 0);
	assert_int_equal(zedtoken_decode_db(a, tok, strlen(tok), &rev, &err),
	                 PEMBA_OK);
	assert_int_equal(rev, 11);
	pemba_close(a);
	char extra[260];
	unlink(path);
	snprintf(extra, sizeof(extra), "%s-wal", path);
	unlink(extra);
	snprintf(extra, sizeof(extra), "%s-shm", path);
	unlink(extra);
	rmdir(dir);
	/* NULL handle: the empty identity, never a crash. */
	assert_string_equal(pemba_datastore_id(NULL), "");
}

/* ============================================ forks (history check) */

static void write_one(pemba_db *db, const char *id, pemba_revision *rev)
{
	pemba_error err = {0};
	pemba_update u = {.op = PEMBA_OP_TOUCH,
	                  .rel = {.resource_type = "document",
	                          .resource_id = id,
	                          .relation = "viewer",
	                          .subject_type = "user",
	                          .subject_id = "anne"}};
	if (pemba_write_relationships(db, &u, 1, NULL, 0, rev, &err) != 0)
		fail_msg("write %s: %s", id, err.message);
}

static int decode_db(pemba_db *db, const char *tok, pemba_error *err)
{
	pemba_revision rev = 0;
	return zedtoken_decode_db(db, tok, strlen(tok), &rev, err);
}

/* A copy started without a new identity shares the original's history up
 * to the snapshot: tokens of that history decode on both; once both are
 * written, a token for a revision written after the fork by one is
 * refused by the other, which has a different revision of that number.
 * A copy with a new identity refuses everything of the original. */
static void forked_copy_refuses_tokens_of_the_other_history(void **state)
{
	if (pg_fixture_enabled()) {
		print_message("skipped on PostgreSQL: forks a datastore with "
		              "SQLite snapshots (PostgreSQL: pg_dump)\n");
		skip();
	}
	char dir[] = "/tmp/pemba-fork-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char uri_a[300], path_b[300], uri_b[300], path_c[300], uri_c[300];
	snprintf(uri_a, sizeof(uri_a), "sqlite://%s/a.db", dir);
	snprintf(path_b, sizeof(path_b), "%s/b.db", dir);
	snprintf(uri_b, sizeof(uri_b), "sqlite://%s", path_b);
	snprintf(path_c, sizeof(path_c), "%s/c.db", dir);
	snprintf(uri_c, sizeof(uri_c), "sqlite://%s", path_c);
	pemba_error err = {0};
	pemba_db *a, *b, *c;
	assert_int_equal(pemba_open(pg_fixture_uri(uri_a), NULL, &a, &err), 0);
	const char *schema = "definition user {}\n"
	                     "definition document {\n"
	                     "\trelation viewer: user\n"
	                     "}\n";
	pemba_revision r1, r2, r3, ra4, rb4, ra5, rb5;
	assert_int_equal(
	    pemba_write_schema(a, schema, strlen(schema), &r1, &err), 0);
	write_one(a, "1", &r2);
	write_one(a, "2", &r3);
	char t0[ZEDTOKEN_BUFSIZE], t2[ZEDTOKEN_BUFSIZE], t3[ZEDTOKEN_BUFSIZE];
	zedtoken_encode_db(a, 0, t0);
	zedtoken_encode_db(a, r2, t2);
	zedtoken_encode_db(a, r3, t3);
	zedtoken_info info;
	assert_int_equal(zedtoken_parse(t3, strlen(t3), &info, &err), 0);
	assert_int_equal(info.version, ZEDTOKEN_VERSION);
	assert_true(info.fingerprint != 0);

	pemba_snapshot_info si;
	assert_int_equal(pemba_snapshot(a, path_b, 0, NULL, NULL, &si, &err),
	                 0);
	assert_int_equal(si.revision, r3);
	assert_string_equal(si.datastore_id, pemba_datastore_id(a));
	assert_int_equal(pemba_snapshot(a, path_c, 1, NULL, NULL, &si, &err),
	                 0);
	assert_string_not_equal(si.datastore_id, pemba_datastore_id(a));
	assert_int_equal(pemba_open(pg_fixture_uri(uri_b), NULL, &b, &err), 0);
	assert_int_equal(pemba_open(pg_fixture_uri(uri_c), NULL, &c, &err), 0);
	assert_string_equal(pemba_datastore_id(b), pemba_datastore_id(a));

	/* Diverge: both write revision 4. */
	write_one(a, "a4", &ra4);
	write_one(b, "b4", &rb4);
	assert_int_equal(ra4, rb4);
	char ta4[ZEDTOKEN_BUFSIZE], tb4[ZEDTOKEN_BUFSIZE];
	zedtoken_encode_db(a, ra4, ta4);
	zedtoken_encode_db(b, rb4, tb4);
	assert_string_not_equal(ta4, tb4);

	/* The shared history decodes everywhere with the same identity. */
	assert_int_equal(decode_db(b, t0, &err), 0);
	assert_int_equal(decode_db(b, t2, &err), 0);
	assert_int_equal(decode_db(b, t3, &err), 0);
	assert_int_equal(decode_db(a, t3, &err), 0);
	/* After the fork: refused both ways, never answered. */
	assert_int_equal(decode_db(b, ta4, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "another history"));
	assert_non_null(strstr(err.message, "new-identity"));
	assert_int_equal(decode_db(a, tb4, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "another history"));
	/* A token for a revision the copy has not reached yet passes the
	 * decoder (its revision checks refuse it as in the future); once
	 * the copy writes that revision, it is refused. */
	write_one(a, "a5", &ra5);
	char ta5[ZEDTOKEN_BUFSIZE];
	zedtoken_encode_db(a, ra5, ta5);
	assert_int_equal(decode_db(b, ta5, &err), 0);
	write_one(b, "b5", &rb5);
	assert_int_equal(decode_db(b, ta5, &err), PEMBA_EINVAL);
	/* Version-1 tokens carry no fingerprint: no check is possible. */
	char v1[ZEDTOKEN_BUFSIZE];
	zedtoken_encode_v1(ra4, pemba_datastore_id(a), v1);
	assert_int_equal(decode_db(b, v1, &err), 0);

	/* The copy with a new identity refuses the original's tokens, old
	 * and new, as another datastore's. */
	assert_int_equal(decode_db(c, t2, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "another datastore"));
	assert_int_equal(decode_db(c, ta4, &err), PEMBA_EINVAL);
	assert_non_null(strstr(err.message, "another datastore"));

	/* Nonces: shared before the fork, different after, none for 0. */
	uint64_t na, nb;
	assert_int_equal(pemba_revision_nonce(a, r2, &na, &err), 0);
	assert_int_equal(pemba_revision_nonce(b, r2, &nb, &err), 0);
	assert_true(na != 0 && na == nb);
	assert_int_equal(pemba_revision_nonce(a, ra4, &na, &err), 0);
	assert_int_equal(pemba_revision_nonce(b, rb4, &nb, &err), 0);
	assert_true(na != nb);
	assert_int_equal(pemba_revision_nonce(a, 0, &na, &err), 0);
	assert_true(na == 0);
	assert_int_equal(pemba_revision_nonce(a, 1000, &na, &err), 0);
	assert_true(na == 0);

	pemba_close(a);
	pemba_close(b);
	pemba_close(c);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trips_every_revision_size),
	    cmocka_unit_test(encoding_matches_the_documented_format),
	    cmocka_unit_test(token_from_another_datastore_is_refused),
	    cmocka_unit_test(empty_and_oversized_tokens_are_invalid),
	    cmocka_unit_test(foreign_encodings_are_invalid),
	    cmocka_unit_test(every_single_character_change_is_detected),
	    cmocka_unit_test(noncanonical_records_are_invalid),
	    cmocka_unit_test(nonzero_padding_bits_are_invalid),
	    cmocka_unit_test(datastore_identity_follows_the_datastore),
	    cmocka_unit_test(forked_copy_refuses_tokens_of_the_other_history),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
