/*
 * spicedb_token.h -- what a SpiceDB ZedToken says about its revision, for
 * clients that follow a SpiceDB server (`pemba mirror` from SpiceDB: lag
 * and "caught up").
 *
 * A SpiceDB ZedToken is base64 (standard alphabet, usually padded) of a
 * protobuf DecodedZedToken.  Observed in SpiceDB 1.54 (the npm build):
 * field 3 is a message whose field 1 is the revision as text and field 2
 * the datastore's id; an older form, field 2, holds a message whose field
 * 1 is a numeric revision.  The revision text depends on the datastore:
 *
 *   memory       decimal digits ("1796651731383180276")
 *   CockroachDB  a hybrid-logical clock "WALL.LOGICAL" (decimal)
 *   PostgreSQL   base64 of a protobuf snapshot: field 1 xmin, field 2
 *                xmax - xmin, field 3 (repeated, packed or not) the
 *                in-progress xids minus xmin, field 4 the writing
 *                transaction's id (write tokens only), field 5 a
 *                timestamp.  A transaction x is visible in the snapshot
 *                when x < xmin, or x < xmax and x is not in progress.
 *
 * Tokens are opaque by contract; these functions are for diagnostics and
 * for a "caught up" decision that stays sound when they fail: callers
 * must have a fallback for -1.  Library code: nothing is printed.
 */
#ifndef PEMBA_API_SPICEDB_TOKEN_H
#define PEMBA_API_SPICEDB_TOKEN_H

#include <stddef.h>
#include <stdint.h>

/* Copies the revision text of the SpiceDB ZedToken `token` into
 * out[0..outlen) (NUL-terminated).  Returns 0, or -1 when token is not a
 * SpiceDB ZedToken or the text does not fit. */
int spicedb_token_revision(const char *token, char *out, size_t outlen);

/* spicedb_token_revision, and the datastore's id (field 2; "" when the
 * token has none or it does not fit) into id[0..idlen) when id is not
 * NULL. */
int spicedb_token_decode(const char *token, char *out, size_t outlen, char *id,
                         size_t idlen);

/* Order keys of a revision text among its datastore's revisions, for
 * lookups that file revisions by a number (src/core/positions.c): a
 * number's integer part (upper + 1 when it has a logical part), a
 * PostgreSQL snapshot's xmin (lower: it sees every transaction below)
 * and xmax (upper: it sees none at or above).  0, or -1 for other texts
 * and values beyond int64. */
int spicedb_revision_keys(const char *text, int64_t *lower, int64_t *upper);

/* Compares two revision texts of the same datastore (as
 * spicedb_token_revision gives them): *cmp < 0 when a is older than b, 0
 * when they are the same revision, > 0 when a is newer.  For PostgreSQL
 * snapshots "newer" means "sees every transaction the other sees"; two
 * snapshots that each see a transaction the other does not are not
 * ordered.  Returns 0, or -1 (*cmp untouched) when the texts are not of
 * one known kind or not ordered. */
int spicedb_revision_compare(const char *a, const char *b, int *cmp);

#endif
