/*
 * zedtoken.c -- encoding and strict decoding of ZedTokens (format in
 * zedtoken.h).
 */
#include "api/zedtoken.h"

#include <string.h>

#include "util/error.h"
#include "util/hash.h"

/* Seeds keep the two uses of FNV-1a apart: a checksum never equals the
 * digest of some id by construction. */
#define DIGEST_SEED 0x7a6564746f6b656eULL      /* "zedtoken" */
#define CHECKSUM_SEED 0x70656d6261636b73ULL    /* "pembacks" */
#define FINGERPRINT_SEED 0x7065626d6e6f6e63ULL /* "pebmnonc" */

/* Version 1: version, varint, digest, checksum; version 2 adds the
 * fingerprint before the checksum. */
#define RECORD_MIN (1 + 1 + 8 + 4)
#define RECORD_MAX (1 + 10 + 8 + 4 + 4)
#define TRAILER_BYTES(version) ((version) == 1 ? 8 + 4 : 8 + 4 + 4)

/* ================================================================ base64url */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Encodes n bytes without padding; out has room for 4 * ceil(n / 3) + 1. */
static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		             in[i + 2];
		out[o++] = b64_alphabet[v >> 18 & 63];
		out[o++] = b64_alphabet[v >> 12 & 63];
		out[o++] = b64_alphabet[v >> 6 & 63];
		out[o++] = b64_alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = b64_alphabet[v >> 18 & 63];
		out[o++] = b64_alphabet[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64_alphabet[v >> 18 & 63];
		out[o++] = b64_alphabet[v >> 12 & 63];
		out[o++] = b64_alphabet[v >> 6 & 63];
	}
	out[o] = '\0';
	return o;
}

/* Decodes unpadded base64url strictly: only the alphabet, no length that
 * leaves a lone character, and the unused low bits of the last character
 * zero (so every byte string has exactly one accepted encoding).  Returns
 * the byte count, or -1. */
static long b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	if (n % 4 == 1)
		return -1;
	size_t full = n / 4 * 3;
	size_t rest = n % 4 ? n % 4 - 1 : 0;
	if (full + rest > cap)
		return -1;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value((unsigned char)in[i]);
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0) /* non-zero padding bits: a non-canonical encoding */
		return -1;
	return (long)o;
}

/* ================================================================ record */

static void put_le(unsigned char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint32_t checksum(const unsigned char *p, size_t n)
{
	return (uint32_t)hash_bytes(p, n, CHECKSUM_SEED);
}

uint64_t zedtoken_datastore_digest(const char *datastore_id)
{
	return hash_str(datastore_id ? datastore_id : "", DIGEST_SEED);
}

uint32_t zedtoken_fingerprint(uint64_t nonce)
{
	if (nonce == 0)
		return 0;
	unsigned char b[8];
	put_le(b, nonce, 8);
	uint32_t fp = (uint32_t)hash_bytes(b, sizeof(b), FINGERPRINT_SEED);
	return fp ? fp : 1;
}

static size_t encode(int version, pemba_revision rev, const char *datastore_id,
                     uint32_t fingerprint, char out[ZEDTOKEN_BUFSIZE])
{
	unsigned char rec[RECORD_MAX];
	size_t n = 0;
	rec[n++] = (unsigned char)version;
	uint64_t v = rev;
	do {
		unsigned char b = v & 0x7f;
		v >>= 7;
		rec[n++] = v ? (b | 0x80) : b;
	} while (v);
	put_le(rec + n, zedtoken_datastore_digest(datastore_id), 8);
	n += 8;
	if (version >= 2) {
		put_le(rec + n, fingerprint, 4);
		n += 4;
	}
	put_le(rec + n, checksum(rec, n), 4);
	n += 4;
	return b64_encode(rec, n, out);
}

size_t zedtoken_encode(pemba_revision rev, const char *datastore_id,
                       uint32_t fingerprint, char out[ZEDTOKEN_BUFSIZE])
{
	return encode(ZEDTOKEN_VERSION, rev, datastore_id, fingerprint, out);
}

size_t zedtoken_encode_v1(pemba_revision rev, const char *datastore_id,
                          char out[ZEDTOKEN_BUFSIZE])
{
	return encode(ZEDTOKEN_VERSION_1, rev, datastore_id, 0, out);
}

size_t zedtoken_encode_db(pemba_db *db, pemba_revision rev,
                          char out[ZEDTOKEN_BUFSIZE])
{
	uint64_t nonce = 0;
	if (rev != 0 && pemba_revision_nonce(db, rev, &nonce, NULL) < 0)
		nonce = 0; /* no fingerprint: the token just skips the check */
	return zedtoken_encode(rev, pemba_datastore_id(db),
	                       zedtoken_fingerprint(nonce), out);
}

int zedtoken_parse(const char *token, size_t len, zedtoken_info *out,
                   pemba_error *err)
{
	error_clear(err);
	if (token == NULL || len == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: the token is empty");
	if (len > ZEDTOKEN_MAX_LEN)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: %zu characters, longer "
		                 "than any token this server issues",
		                 len);
	unsigned char rec[RECORD_MAX];
	long n = b64_decode(token, len, rec, sizeof(rec));
	if (n < 0)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: not a token issued by "
		                 "this server (bad encoding)");
	if (n < RECORD_MIN)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: too short");
	if (rec[0] != ZEDTOKEN_VERSION && rec[0] != ZEDTOKEN_VERSION_1)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: unknown version %u",
		                 (unsigned)rec[0]);
	size_t trailer = TRAILER_BYTES(rec[0]);
	if ((size_t)n < 2 + trailer)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: too short");
	/* The checksum first: a mistyped token gets one clear message
	 * rather than whichever field the damage happened to hit. */
	if (get_le(rec + n - 4, 4) != checksum(rec, (size_t)n - 4))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: checksum mismatch (the "
		                 "token was altered or truncated)");
	/* The varint fills everything between the version byte and the
	 * trailing fixed-size fields, so its length is known; it must be
	 * minimal (no high zero groups) and fit 64 bits. */
	size_t vlen = (size_t)n - 1 - trailer;
	if (vlen > 10)
		return error_set(err, PEMBA_EINVAL,
		                 "invalid ZedToken: malformed revision");
	uint64_t rev = 0;
	for (size_t i = 0; i < vlen; i++) {
		unsigned char b = rec[1 + i];
		int last = i + 1 == vlen;
		if (last != !(b & 0x80))
			return error_set(
			    err, PEMBA_EINVAL,
			    "invalid ZedToken: malformed revision");
		if (last && b == 0 && vlen > 1)
			return error_set(
			    err, PEMBA_EINVAL,
			    "invalid ZedToken: malformed revision");
		if (i == 9 && (b & 0x7f) > 1)
			return error_set(err, PEMBA_EINVAL,
			                 "invalid ZedToken: revision out of "
			                 "range");
		rev |= (uint64_t)(b & 0x7f) << (7 * i);
	}
	if (out) {
		out->version = rec[0];
		out->revision = rev;
		out->datastore_digest = get_le(rec + 1 + vlen, 8);
		out->fingerprint =
		    rec[0] >= 2 ? (uint32_t)get_le(rec + 1 + vlen + 8, 4) : 0;
	}
	return PEMBA_OK;
}

int zedtoken_decode(const char *token, size_t len, const char *datastore_id,
                    pemba_revision *rev_out, pemba_error *err)
{
	zedtoken_info info;
	int rc = zedtoken_parse(token, len, &info, err);
	if (rc < 0)
		return rc;
	if (info.datastore_digest != zedtoken_datastore_digest(datastore_id))
		return error_set(err, PEMBA_EINVAL,
		                 "ZedToken is for another datastore: it was "
		                 "issued by a different pemba datastore than "
		                 "the one serving this request");
	if (rev_out)
		*rev_out = info.revision;
	return PEMBA_OK;
}

int zedtoken_decode_db(pemba_db *db, const char *token, size_t len,
                       pemba_revision *rev_out, pemba_error *err)
{
	zedtoken_info info;
	int rc = zedtoken_parse(token, len, &info, err);
	if (rc < 0)
		return rc;
	if (info.datastore_digest !=
	    zedtoken_datastore_digest(pemba_datastore_id(db)))
		return error_set(err, PEMBA_EINVAL,
		                 "ZedToken is for another datastore: it was "
		                 "issued by a different pemba datastore than "
		                 "the one serving this request");
	/* The history check: the nonce of the token's revision here must
	 * be the one the token was issued with.  Unknown here (future,
	 * collected, older than nonces, revision 0): nothing to compare. */
	if (info.fingerprint != 0 && info.revision != 0) {
		uint64_t nonce = 0;
		rc = pemba_revision_nonce(db, info.revision, &nonce, err);
		if (rc < 0)
			return rc;
		if (nonce != 0 &&
		    zedtoken_fingerprint(nonce) != info.fingerprint)
			return error_set(
			    err, PEMBA_EINVAL,
			    "ZedToken is from another history of this "
			    "datastore: revision %llu here is not the "
			    "revision the token was issued at (the datastore "
			    "was copied and both copies were written since); "
			    "run the copy with its own identity (`pemba "
			    "datastore new-identity`)",
			    (unsigned long long)info.revision);
	}
	if (rev_out)
		*rev_out = info.revision;
	return PEMBA_OK;
}
