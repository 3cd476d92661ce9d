/*
 * test_zedtoken.c -- ZedTokens: round trips, the pinned version-1 format,
 * strict decoding of damaged or foreign tokens, and datastore identity
 * through real handles.
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
#include "util/hash.h"

#define DS_A "0123456789abcdef0123456789abcdef"
#define DS_B "fedcba9876543210fedcba9876543210"
/* encode(42, "pemba") under format version 1; never change it. */
#define GOLDEN_42_PEMBA "ASqY5BeUhgLECh6hFYs"

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

/* Builds a version-1 record by hand from the documented layout: version,
 * the given varint bytes, digest of ds, checksum.  The seeds are part of
 * the format (tokens must survive upgrades), so the test states them. */
static void build_token(unsigned char version, const unsigned char *varint,
                        size_t vlen, const char *ds, char *out)
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
	uint32_t c = (uint32_t)hash_bytes(rec, n, 0x70656d6261636b73ULL);
	for (int i = 0; i < 4; i++)
		rec[n++] = (unsigned char)(c >> (8 * i));
	b64url(rec, n, out);
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
	for (size_t i = 0; i < sizeof(revs) / sizeof(revs[0]); i++) {
		char tok[ZEDTOKEN_BUFSIZE];
		size_t n = zedtoken_encode(revs[i], DS_A, tok);
		assert_int_equal(n, strlen(tok));
		assert_true(n >= 19 && n <= ZEDTOKEN_MAX_LEN);
		assert_int_equal(strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"
		                             "hijklmnopqrstuvwxyz0123456789-_"),
		                 n);
		assert_true(decode_ok(tok, DS_A) == revs[i]);
		zedtoken_info info;
		pemba_error err = {0};
		assert_int_equal(zedtoken_parse(tok, n, &info, &err), PEMBA_OK);
		assert_int_equal(info.version, ZEDTOKEN_VERSION);
		assert_true(info.revision == revs[i]);
		assert_true(info.datastore_digest ==
		            zedtoken_datastore_digest(DS_A));
	}
	/* The largest revision gives the longest token, within the bound. */
	char tok[ZEDTOKEN_BUFSIZE];
	assert_int_equal(zedtoken_encode(UINT64_MAX, DS_A, tok), 31);
}

static void encoding_matches_the_documented_format(void **state)
{
	/* 300 = 0xAC 0x02 as a LEB128 varint. */
	const unsigned char v300[] = {0xac, 0x02};
	char want[64], got[ZEDTOKEN_BUFSIZE];
	build_token(1, v300, sizeof(v300), DS_A, want);
	zedtoken_encode(300, DS_A, got);
	assert_string_equal(got, want);
	/* And a golden value, so a change of hash or layout cannot slip
	 * through unnoticed: tokens issued before an upgrade must still
	 * decode after it. */
	zedtoken_encode(42, "pemba", got);
	char again[64];
	const unsigned char v42[] = {42};
	build_token(1, v42, 1, "pemba", again);
	assert_string_equal(got, again);
	assert_int_equal(strlen(got), 19);
	assert_string_equal(got, GOLDEN_42_PEMBA);
}

static void token_from_another_datastore_is_refused(void **state)
{
	char tok[ZEDTOKEN_BUFSIZE];
	zedtoken_encode(7, DS_A, tok);
	decode_fails(tok, strlen(tok), DS_B,
	             "ZedToken is for another datastore");
	/* parse (no datastore) still reads it. */
	zedtoken_info info;
	pemba_error err = {0};
	assert_int_equal(zedtoken_parse(tok, strlen(tok), &info, &err),
	                 PEMBA_OK);
	assert_int_equal(info.revision, 7);
	/* An empty id is an identity too, distinct from every other. */
	zedtoken_encode(7, "", tok);
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
	zedtoken_encode(1000, DS_A, tok);
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
	for (size_t r = 0; r < sizeof(revs) / sizeof(revs[0]); r++) {
		char tok[ZEDTOKEN_BUFSIZE];
		size_t n = zedtoken_encode(revs[r], DS_A, tok);
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
	build_token(2, v1, 1, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "unknown version 2");
	build_token(0, v1, 1, DS_A, t);
	decode_fails(t, strlen(t), DS_A, "unknown version 0");
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
	size_t n = zedtoken_encode(9, DS_A, tok);
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
	assert_int_equal(pemba_open("sqlite::memory:", NULL, &a, &err), 0);
	assert_int_equal(pemba_open("sqlite::memory:", NULL, &b, &err), 0);
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
	assert_int_equal(pemba_open(uri, NULL, &a, &err), 0);
	zedtoken_encode_db(a, 11, tok);
	pemba_close(a);
	assert_int_equal(pemba_open(uri, NULL, &a, &err), 0);
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
