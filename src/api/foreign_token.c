/*
 * foreign_token.c -- ZedTokens of other datastores as source positions
 * (see foreign_token.h for the formats).
 */
#include "api/foreign_token.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "api/spicedb_token.h"
#include "api/zedtoken.h"
#include "util/error.h"

static bool printable(const char *s)
{
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e)
			return false;
	return true;
}

/* A SpiceDB token (spicedb_token.h reads it).  0 or -1. */
static int spicedb_decode(const char *token, size_t len, foreign_token *out)
{
	char text[FOREIGN_TOKEN_TEXT * 3];
	char id[129];
	if (len >= sizeof(text))
		return -1;
	memcpy(text, token, len);
	text[len] = '\0';
	if (spicedb_token_decode(text, out->revision, sizeof(out->revision), id,
	                         sizeof(id)) != 0 ||
	    !out->revision[0] || !printable(out->revision) || !printable(id))
		return -1;
	snprintf(out->source, sizeof(out->source), "spicedb:%s", id);
	if (spicedb_revision_keys(out->revision, &out->pos.lower,
	                          &out->pos.upper) != 0) {
		/* Exact lookups only. */
		out->pos.lower = 0;
		out->pos.upper = INT64_MAX;
	}
	return 0;
}

int foreign_token_decode(const char *token, size_t len, foreign_token *out,
                         pemba_error *err)
{
	memset(out, 0, sizeof(*out));
	out->pos.source = out->source;
	out->pos.revision = out->revision;
	zedtoken_info info;
	pemba_error perr = {0};
	if (zedtoken_parse(token, len, &info, &perr) == 0) {
		snprintf(out->source, sizeof(out->source), "pemba:%016" PRIx64,
		         info.datastore_digest);
		snprintf(out->revision, sizeof(out->revision), "%" PRIu64,
		         (uint64_t)info.revision);
		if (info.revision > INT64_MAX)
			return error_set(err, PEMBA_EINVAL,
			                 "invalid ZedToken: revision out of "
			                 "range");
		out->pos.lower = out->pos.upper = (int64_t)info.revision;
		return PEMBA_OK;
	}
	if (spicedb_decode(token, len, out) == 0)
		return PEMBA_OK;
	/* Neither: pemba's own message says what is wrong with it. */
	if (err) {
		*err = perr;
	}
	return perr.code ? perr.code : PEMBA_EINVAL;
}
