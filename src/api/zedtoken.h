/*
 * zedtoken.h -- ZedTokens: the revision a response was computed at, as an
 * opaque string for clients.
 *
 * A ZedToken names one revision of one datastore.  Clients store it and
 * hand it back in Consistency.at_least_as_fresh / at_exact_snapshot or
 * WatchRequest.optional_start_cursor; they never look inside.  pemba
 * refuses a token minted by another datastore (another file, another
 * serve-testing token's in-memory store, a restored copy with a new
 * identity), because its revision numbers mean nothing here; and, from
 * version 2, a token minted by a *copy* of this datastore (same identity)
 * whose history diverged from this one's before the token's revision.
 *
 * Format (also in src/api/README.md):
 *
 *   token = base64url(record), no padding
 *   record, version 1                            (19..31 characters):
 *     byte 0        version, 0x01
 *     bytes 1..n    revision, unsigned LEB128 varint, minimal (1..10 bytes)
 *     next 8 bytes  datastore digest: FNV-1a 64 of the datastore id,
 *                   little-endian
 *     last 4 bytes  checksum: low 32 bits of FNV-1a 64 (another seed) over
 *                   every byte before it, little-endian
 *   record, version 2 (what servers issue)       (24..36 characters):
 *     byte 0        version, 0x02
 *     then          revision and datastore digest as in version 1
 *     next 4 bytes  history fingerprint: low 32 bits of FNV-1a 64 (a third
 *                   seed) of the revision's nonce (pemba_revision_nonce,
 *                   8 bytes little-endian), 0 replaced by 1; 0 means no
 *                   nonce was known (revision 0, or committed before
 *                   layout 5), little-endian
 *     last 4 bytes  checksum as in version 1
 *
 * Decoding against a datastore (zedtoken_decode_db) looks the revision's
 * nonce up and refuses a version-2 token whose fingerprint differs; a
 * revision it does not know (in the future, garbage-collected, or without
 * a nonce) cannot be compared and is left to the revision checks.
 * Version-1 tokens keep decoding, without that check.
 *
 * Every record has exactly one encoding and decoding accepts only that
 * one: the alphabet is base64url, no '=' padding, unused trailing bits are
 * zero, the varint is minimal and fits 64 bits, nothing follows the
 * checksum.  The checksum catches truncated and mistyped tokens; it is not
 * a signature.  Tokens are not secret and not tamper-proof: a forged token
 * can only name a revision, which the store then accepts or refuses (future
 * or garbage-collected revisions fail with PEMBA_EREVISION) like any other.
 *
 * Revision 0 (an empty datastore) is a valid token.  Callers must not pass
 * a decoded 0 to pemba_* as an exact revision, where 0 means "the head".
 */
#ifndef PEMBA_API_ZEDTOKEN_H
#define PEMBA_API_ZEDTOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "pemba.h"

/* The version servers issue; ZEDTOKEN_VERSION_1 tokens still decode. */
#define ZEDTOKEN_VERSION 2
#define ZEDTOKEN_VERSION_1 1
/* Bytes needed to hold any encoded token and its NUL. */
#define ZEDTOKEN_BUFSIZE 37
/* Longer inputs are refused before decoding. */
#define ZEDTOKEN_MAX_LEN (ZEDTOKEN_BUFSIZE - 1)

/* What a token holds, for tools that inspect tokens without a datastore
 * (backup parse-revision, mirror, debugging). */
typedef struct zedtoken_info {
	int version;
	pemba_revision revision;
	uint64_t datastore_digest;
	uint32_t fingerprint; /* version 2; 0: none (and always in version 1) */
} zedtoken_info;

/* The digest of a datastore id that tokens carry.  id may be "" (never
 * NULL). */
uint64_t zedtoken_datastore_digest(const char *datastore_id);

/* The history fingerprint of a revision nonce (0 for nonce 0: none). */
uint32_t zedtoken_fingerprint(uint64_t nonce);

/* Writes the version-2 token for revision `rev` of the datastore
 * `datastore_id`, whose history fingerprint is `fingerprint` (0: none), to
 * out (ZEDTOKEN_BUFSIZE bytes), NUL-terminated; returns its length.
 * Cannot fail. */
size_t zedtoken_encode(pemba_revision rev, const char *datastore_id,
                       uint32_t fingerprint, char out[ZEDTOKEN_BUFSIZE]);

/* The version-1 token (no fingerprint), as servers issued before version
 * 2: for tests and tools.  Cannot fail. */
size_t zedtoken_encode_v1(pemba_revision rev, const char *datastore_id,
                          char out[ZEDTOKEN_BUFSIZE]);

/* The token a handle's datastore issues for `rev`: its identity
 * (pemba_datastore_id(db)) and the fingerprint of the revision's nonce
 * (pemba_revision_nonce; 0 when the lookup fails or knows none, which
 * only loses the fork check for that token). */
size_t zedtoken_encode_db(pemba_db *db, pemba_revision rev,
                          char out[ZEDTOKEN_BUFSIZE]);

/* Parses and validates a token of `len` bytes (not NUL-terminated
 * necessarily) without checking which datastore it belongs to.
 * PEMBA_EINVAL with a message starting "invalid ZedToken" when it is
 * empty, too long, not base64url, of an unknown version, has a bad varint,
 * trailing bytes or a wrong checksum.  Accepts versions 1 and 2. */
int zedtoken_parse(const char *token, size_t len, zedtoken_info *out,
                   pemba_error *err);

/* Parses a token and checks that it belongs to datastore `datastore_id`;
 * on success *rev_out is its revision.  Errors: as zedtoken_parse, and
 * PEMBA_EINVAL "ZedToken is for another datastore" when the digest
 * differs.  Whether the revision is still readable is the store's
 * business, not checked here. */
int zedtoken_decode(const char *token, size_t len, const char *datastore_id,
                    pemba_revision *rev_out, pemba_error *err);

/* Same for a handle's datastore, plus the history check of version 2:
 * when the datastore knows the nonce of the token's revision and its
 * fingerprint differs from the token's, PEMBA_EINVAL "ZedToken is from
 * another history of this datastore ..." (a copy with the same identity
 * that diverged before that revision).  Costs one nonce lookup (cached per
 * handle).  A revision the datastore does not know yet passes: callers
 * that wait for it must decode again once it exists. */
int zedtoken_decode_db(pemba_db *db, const char *token, size_t len,
                       pemba_revision *rev_out, pemba_error *err);

#endif
