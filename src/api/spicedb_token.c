/*
 * spicedb_token.c -- see spicedb_token.h.  Formats learned from tokens of
 * the real SpiceDB (memory and PostgreSQL datastores), not from its code.
 */
#include "api/spicedb_token.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MAX 4096    /* longest token or revision text decoded */
#define PG_MAX_XIPS 1024  /* in-progress xids kept per snapshot */
#define PG_MAX_SPAN 65536 /* xids scanned when comparing snapshots */

/* ------------------------------------------------------------- base64 */

static int b64_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Decodes base64 (standard or URL alphabet, '=' padding optional) into
 * out[0..cap).  The decoded length, or -1. */
static long b64_decode(const char *s, uint8_t *out, size_t cap)
{
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == '=')
		n--;
	if (n == 0 || n % 4 == 1)
		return -1;
	uint32_t acc = 0;
	int bits = 0;
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value((unsigned char)s[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (len >= cap)
				return -1;
			out[len++] = (uint8_t)(acc >> bits);
		}
	}
	return (long)len;
}

/* ----------------------------------------------------------- protobuf */

static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t c = *(*p)++;
		r |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* One field: *field, *wire; varints in *v, length-delimited in *data /
 * *len.  0, 1 at the end, -1 when malformed. */
static int pb_next(const uint8_t **p, const uint8_t *end, int *field, int *wire,
                   uint64_t *v, const uint8_t **data, size_t *len)
{
	if (*p >= end)
		return 1;
	uint64_t key;
	if (pb_varint(p, end, &key) != 0 || (key >> 3) == 0)
		return -1;
	*field = (int)(key >> 3);
	*wire = (int)(key & 7);
	switch (*wire) {
	case 0:
		return pb_varint(p, end, v);
	case 1:
		if (end - *p < 8)
			return -1;
		*p += 8;
		return 0;
	case 5:
		if (end - *p < 4)
			return -1;
		*p += 4;
		return 0;
	case 2:
		if (pb_varint(p, end, v) != 0 || *v > (uint64_t)(end - *p))
			return -1;
		*data = *p;
		*len = (size_t)*v;
		*p += *v;
		return 0;
	default:
		return -1;
	}
}

/* ------------------------------------------------------------- tokens */

int spicedb_token_decode(const char *token, char *out, size_t outlen, char *id,
                         size_t idlen)
{
	uint8_t buf[TOKEN_MAX];
	if (!token || !out || outlen == 0 || strlen(token) > TOKEN_MAX)
		return -1;
	if (id && idlen)
		id[0] = '\0';
	long n = b64_decode(token, buf, sizeof(buf));
	if (n <= 0)
		return -1;
	const uint8_t *p = buf, *end = buf + n;
	int field, wire, r;
	uint64_t v;
	const uint8_t *data = NULL;
	size_t len = 0;
	while ((r = pb_next(&p, end, &field, &wire, &v, &data, &len)) == 0) {
		if (wire != 2 || (field != 2 && field != 3))
			continue;
		/* The revision message: field 1, text (3) or number (2);
		 * field 2 of the text form, the datastore's id. */
		const uint8_t *q = data, *qend = data + len;
		int f2, w2, r2;
		uint64_t v2;
		const uint8_t *d2 = NULL;
		size_t l2 = 0;
		bool have_rev = false;
		while ((r2 = pb_next(&q, qend, &f2, &w2, &v2, &d2, &l2)) == 0) {
			if (f2 == 2 && field == 3 && w2 == 2) {
				if (!id || l2 >= idlen || memchr(d2, '\0', l2))
					continue;
				memcpy(id, d2, l2);
				id[l2] = '\0';
				continue;
			}
			if (f2 != 1 || have_rev)
				continue;
			if (field == 3 && w2 == 2 && l2 > 0 && l2 < outlen) {
				if (memchr(d2, '\0', l2))
					return -1;
				memcpy(out, d2, l2);
				out[l2] = '\0';
				have_rev = true;
				continue;
			}
			if (field == 2 && w2 == 0) {
				int k = snprintf(out, outlen, "%llu",
				                 (unsigned long long)v2);
				if (k <= 0 || (size_t)k >= outlen)
					return -1;
				have_rev = true;
				continue;
			}
			return -1;
		}
		return have_rev && r2 > 0 ? 0 : -1;
	}
	return -1;
}

int spicedb_token_revision(const char *token, char *out, size_t outlen)
{
	return spicedb_token_decode(token, out, outlen, NULL, 0);
}

/* ---------------------------------------------------- decimal revisions */

/* "DIGITS" or "DIGITS.DIGITS": the two parts (leading zeros skipped) and
 * their lengths.  false when s is not of that form. */
static bool decimal_parts(const char *s, const char *part[2], size_t len[2])
{
	const char *dot = strchr(s, '.');
	size_t whole = dot ? (size_t)(dot - s) : strlen(s);
	if (whole == 0)
		return false;
	for (size_t i = 0; i < whole; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	const char *frac = dot ? dot + 1 : "0";
	size_t nfrac = strlen(frac);
	if (nfrac == 0)
		return false;
	for (size_t i = 0; i < nfrac; i++)
		if (frac[i] < '0' || frac[i] > '9')
			return false;
	part[0] = s;
	len[0] = whole;
	part[1] = frac;
	len[1] = nfrac;
	for (int k = 0; k < 2; k++)
		while (len[k] > 1 && *part[k] == '0') {
			part[k]++;
			len[k]--;
		}
	return true;
}

static int compare_digits(const char *a, size_t na, const char *b, size_t nb)
{
	if (na != nb)
		return na < nb ? -1 : 1;
	int c = memcmp(a, b, na);
	return c < 0 ? -1 : c > 0;
}

/* --------------------------------------------------- PostgreSQL snapshots */

typedef struct pg_snapshot {
	uint64_t xmin, xmax;
	uint64_t xips[PG_MAX_XIPS];
	size_t nxips;
} pg_snapshot;

static int pg_add_xip(pg_snapshot *s, uint64_t relative)
{
	if (s->nxips == PG_MAX_XIPS)
		return -1;
	s->xips[s->nxips++] = relative;
	return 0;
}

/* Decodes the revision text of a PostgreSQL datastore.  0 or -1. */
static int pg_parse(const char *text, pg_snapshot *s)
{
	uint8_t buf[TOKEN_MAX];
	memset(s, 0, sizeof(*s));
	if (strlen(text) > TOKEN_MAX)
		return -1;
	long n = b64_decode(text, buf, sizeof(buf));
	if (n <= 0)
		return -1;
	const uint8_t *p = buf, *end = buf + n;
	int field, wire, r;
	uint64_t v, relative_xmax = 0;
	const uint8_t *data = NULL;
	size_t len = 0;
	bool have_xmin = false;
	while ((r = pb_next(&p, end, &field, &wire, &v, &data, &len)) == 0) {
		if (field == 1 && wire == 0) {
			s->xmin = v;
			have_xmin = true;
		} else if (field == 2 && wire == 0) {
			relative_xmax = v;
		} else if (field == 3 && wire == 0) {
			if (pg_add_xip(s, v) != 0)
				return -1;
		} else if (field == 3 && wire == 2) {
			const uint8_t *q = data, *qend = data + len;
			while (q < qend) {
				uint64_t x;
				if (pb_varint(&q, qend, &x) != 0 ||
				    pg_add_xip(s, x) != 0)
					return -1;
			}
		}
	}
	if (r < 0 || !have_xmin || relative_xmax > UINT64_MAX - s->xmin)
		return -1;
	s->xmax = s->xmin + relative_xmax;
	for (size_t i = 0; i < s->nxips; i++) {
		if (s->xips[i] > UINT64_MAX - s->xmin)
			return -1;
		s->xips[i] += s->xmin;
	}
	return 0;
}

static bool pg_visible(const pg_snapshot *s, uint64_t x)
{
	if (x < s->xmin)
		return true;
	if (x >= s->xmax)
		return false;
	for (size_t i = 0; i < s->nxips; i++)
		if (s->xips[i] == x)
			return false;
	return true;
}

/* Whether a sees every transaction b sees: 1 yes, 0 no, -1 too far apart
 * to check. */
static int pg_sees_all(const pg_snapshot *a, const pg_snapshot *b)
{
	if (b->xmax <= a->xmin)
		return 1;
	if (b->xmax - a->xmin > PG_MAX_SPAN)
		return -1;
	for (uint64_t x = a->xmin; x < b->xmax; x++)
		if (pg_visible(b, x) && !pg_visible(a, x))
			return 0;
	return 1;
}

int spicedb_revision_compare(const char *a, const char *b, int *cmp)
{
	if (!a || !b || !cmp)
		return -1;
	const char *pa[2], *pb[2];
	size_t la[2], lb[2];
	if (decimal_parts(a, pa, la) && decimal_parts(b, pb, lb)) {
		int c = compare_digits(pa[0], la[0], pb[0], lb[0]);
		if (c == 0)
			c = compare_digits(pa[1], la[1], pb[1], lb[1]);
		*cmp = c;
		return 0;
	}
	pg_snapshot *sa = malloc(sizeof(*sa)), *sb = malloc(sizeof(*sb));
	int rc = -1;
	if (sa && sb && pg_parse(a, sa) == 0 && pg_parse(b, sb) == 0) {
		int ab = pg_sees_all(sa, sb), ba = pg_sees_all(sb, sa);
		if (ab >= 0 && ba >= 0 && (ab || ba)) {
			*cmp = ab && ba ? 0 : ab ? 1 : -1;
			rc = 0;
		}
	}
	free(sa);
	free(sb);
	return rc;
}

int spicedb_revision_keys(const char *text, int64_t *lower, int64_t *upper)
{
	if (!text || !lower || !upper)
		return -1;
	const char *part[2];
	size_t len[2];
	if (decimal_parts(text, part, len)) {
		/* Numbers beyond int64 have no key. */
		int64_t v = 0;
		for (size_t i = 0; i < len[0]; i++) {
			int d = part[0][i] - '0';
			if (v > (INT64_MAX - d) / 10)
				return -1;
			v = v * 10 + d;
		}
		bool logical = !(len[1] == 1 && part[1][0] == '0');
		*lower = v;
		*upper = logical && v < INT64_MAX ? v + 1 : v;
		return 0;
	}
	pg_snapshot s;
	if (pg_parse(text, &s) != 0 || s.xmax > INT64_MAX)
		return -1;
	*lower = (int64_t)s.xmin;
	*upper = (int64_t)s.xmax;
	return 0;
}
