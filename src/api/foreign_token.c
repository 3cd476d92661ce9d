/*
 * foreign_token.c -- ZedTokens of other datastores as source positions
 * (see foreign_token.h for the formats).
 */
#include "api/foreign_token.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "api/zedtoken.h"
#include "util/error.h"

#define SPICEDB_TOKEN_MAX 512 /* longer tokens are not SpiceDB's */

/* Standard or URL-safe base64, padding optional, into out (cap bytes).
 * Returns the decoded length, or -1. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	char buf[SPICEDB_TOKEN_MAX + 4];
	if (n == 0 || n > SPICEDB_TOKEN_MAX)
		return -1;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (c == '=')
			break;
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		           (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return -1;
		buf[k++] = c;
	}
	if (k % 4 == 1)
		return -1;
	size_t pad = (4 - k % 4) % 4;
	for (size_t i = 0; i < pad; i++)
		buf[k++] = '=';
	if (k / 4 * 3 > cap)
		return -1;
	int m = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)k);
	return m < 0 ? -1 : m - (int)pad;
}

/* ------------------------------------------------------- protobuf reading */

typedef struct pb {
	const unsigned char *p, *end;
} pb;

static bool pb_varint(pb *b, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end)
			return false;
		unsigned char c = *b->p++;
		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return true;
	}
	return false;
}

/* Next field: its number and wire type; for wire type 2 also *data and
 * *len, for 0 *v. */
static bool pb_next(pb *b, uint32_t *field, int *wire, uint64_t *v,
                    const unsigned char **data, size_t *len)
{
	uint64_t key;
	if (!pb_varint(b, &key) || key >> 3 == 0 || key >> 3 > 0xffffffffu)
		return false;
	*field = (uint32_t)(key >> 3);
	*wire = (int)(key & 7);
	switch (*wire) {
	case 0:
		return pb_varint(b, v);
	case 1:
		if (b->end - b->p < 8)
			return false;
		b->p += 8;
		return true;
	case 2:
		if (!pb_varint(b, v) || *v > (uint64_t)(b->end - b->p))
			return false;
		*data = b->p;
		*len = (size_t)*v;
		b->p += *len;
		return true;
	case 5:
		if (b->end - b->p < 4)
			return false;
		b->p += 4;
		return true;
	}
	return false;
}

static bool printable(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return n > 0;
}

/* ------------------------------------------------- SpiceDB revision texts */

/* "123" or "123.456": integer part and whether a fraction follows. */
static bool decimal_keys(const char *t, int64_t *lower, int64_t *upper)
{
	uint64_t v = 0;
	size_t i = 0;
	for (; t[i] >= '0' && t[i] <= '9'; i++) {
		if (v > (uint64_t)(INT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(t[i] - '0');
	}
	if (i == 0)
		return false;
	bool frac = false;
	if (t[i] == '.') {
		size_t j = i + 1;
		for (; t[j] >= '0' && t[j] <= '9'; j++)
			if (t[j] != '0')
				frac = true;
		if (j == i + 1)
			return false;
		i = j;
	}
	if (t[i] != '\0')
		return false;
	*lower = (int64_t)v;
	*upper = frac && v < INT64_MAX ? (int64_t)v + 1 : (int64_t)v;
	return true;
}

/* A PostgreSQL snapshot revision (base64 protobuf). */
static bool snapshot_keys(const char *t, int64_t *lower, int64_t *upper)
{
	unsigned char raw[SPICEDB_TOKEN_MAX];
	int n = b64_decode(t, strlen(t), raw, sizeof(raw));
	if (n <= 0)
		return false;
	pb b = {raw, raw + n};
	uint64_t xmin = 0, rel_xmax = 0, v;
	bool have_xmin = false;
	uint32_t field;
	int wire;
	const unsigned char *data;
	size_t len;
	while (b.p < b.end) {
		if (!pb_next(&b, &field, &wire, &v, &data, &len))
			return false;
		if (field == 1 && wire == 0) {
			xmin = v;
			have_xmin = true;
		} else if (field == 2 && wire == 0) {
			rel_xmax = v;
		}
	}
	if (!have_xmin || xmin > INT64_MAX || rel_xmax > INT64_MAX - xmin)
		return false;
	*lower = (int64_t)xmin;
	*upper = (int64_t)(xmin + rel_xmax);
	return true;
}

static int spicedb_decode(const char *token, size_t len, foreign_token *out)
{
	unsigned char raw[SPICEDB_TOKEN_MAX];
	int n = b64_decode(token, len, raw, sizeof(raw));
	if (n <= 0)
		return -1;
	pb b = {raw, raw + n};
	const unsigned char *v1 = NULL, *data;
	size_t v1_len = 0, dlen;
	uint32_t field;
	int wire;
	uint64_t v;
	while (b.p < b.end) {
		if (!pb_next(&b, &field, &wire, &v, &data, &dlen))
			return -1;
		if (field == 3 && wire == 2) {
			v1 = data;
			v1_len = dlen;
		}
	}
	if (!v1)
		return -1;
	const unsigned char *rev = NULL, *id = NULL;
	size_t rev_len = 0, id_len = 0;
	b = (pb){v1, v1 + v1_len};
	while (b.p < b.end) {
		if (!pb_next(&b, &field, &wire, &v, &data, &dlen))
			return -1;
		if (field == 1 && wire == 2) {
			rev = data;
			rev_len = dlen;
		} else if (field == 2 && wire == 2) {
			id = data;
			id_len = dlen;
		}
	}
	if (!rev || !printable(rev, rev_len) ||
	    rev_len >= sizeof(out->revision) || id_len > 128 ||
	    (id_len && !printable(id, id_len)))
		return -1;
	memcpy(out->revision, rev, rev_len);
	out->revision[rev_len] = '\0';
	snprintf(out->source, sizeof(out->source), "spicedb:%.*s", (int)id_len,
	         (const char *)id);
	int64_t lower = 0, upper = INT64_MAX;
	if (!decimal_keys(out->revision, &lower, &upper) &&
	    !snapshot_keys(out->revision, &lower, &upper)) {
		lower = 0;
		upper = INT64_MAX;
	}
	out->pos.lower = lower;
	out->pos.upper = upper;
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
