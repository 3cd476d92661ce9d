/*
 * foreign_token.h -- ZedTokens issued by *another* datastore, read as a
 * position in that datastore's history, so that the revisions `pemba
 * mirror` recorded can honour them after a move (pemba_source_position,
 * src/core/positions.c).
 *
 * Two kinds are understood:
 *
 *   pemba     a token of another pemba datastore (zedtoken.h): source
 *             "pemba:" + the 16 hex digits of its datastore digest, the
 *             revision in decimal, both order keys the revision.
 *   SpiceDB   read by spicedb_token.h (spicedb_token_decode): source
 *             "spicedb:" + the datastore's id the token carries; order
 *             keys from spicedb_revision_keys.  The revision text is, as
 *             observed from SpiceDB 1.54:
 *             - a decimal (memory datastore: nanoseconds; CockroachDB:
 *               an HLC "nanos.logical"): keys from the integer part (the
 *               upper key + 1 when there is a logical part);
 *             - base64 of a protobuf snapshot (PostgreSQL): {1: xmin,
 *               2: xmax - xmin, 3: in-progress ids, 4: own txid, ...}.
 *               A snapshot sees every transaction below its xmin and
 *               none at or above its xmax, so it is filed under xmin and
 *               one snapshot holds another when its xmin >= the other's
 *               xmax: lower = xmin, upper = xmax.
 *             Other revision texts are kept for exact lookups only
 *             (order keys 0 and INT64_MAX: never "at least as fresh").
 */
#ifndef PEMBA_API_FOREIGN_TOKEN_H
#define PEMBA_API_FOREIGN_TOKEN_H

#include <stddef.h>

#include "pemba.h"

#define FOREIGN_TOKEN_TEXT 224 /* bytes for source and revision texts */

typedef struct foreign_token {
	char source[FOREIGN_TOKEN_TEXT];
	char revision[FOREIGN_TOKEN_TEXT];
	pemba_source_position pos; /* points into source and revision */
} foreign_token;

/* Decodes token[0..len) as a pemba or SpiceDB ZedToken (any datastore,
 * this one included).  PEMBA_EINVAL "invalid ZedToken ..." when it is
 * neither. */
int foreign_token_decode(const char *token, size_t len, foreign_token *out,
                         pemba_error *err);

#endif
