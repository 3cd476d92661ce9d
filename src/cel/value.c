/*
 * value.c -- CEL's types and runtime values: names, equality, ordering,
 * and the text forms shared by literals, conversions and contexts
 * (RFC 3339 timestamps, Go-syntax durations, IP addresses, UTF-8).
 */
#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel/internal.h"
#include "util/utf8.h"

/* ------------------------------------------------------------------ types */

const cel_type cel_type_dyn = {CEL_T_DYN, NULL, NULL};
const cel_type cel_type_null = {CEL_T_NULL, NULL, NULL};
const cel_type cel_type_bool = {CEL_T_BOOL, NULL, NULL};
const cel_type cel_type_int = {CEL_T_INT, NULL, NULL};
const cel_type cel_type_uint = {CEL_T_UINT, NULL, NULL};
const cel_type cel_type_double = {CEL_T_DOUBLE, NULL, NULL};
const cel_type cel_type_string = {CEL_T_STRING, NULL, NULL};
const cel_type cel_type_bytes = {CEL_T_BYTES, NULL, NULL};
const cel_type cel_type_timestamp = {CEL_T_TIMESTAMP, NULL, NULL};
const cel_type cel_type_duration = {CEL_T_DURATION, NULL, NULL};
const cel_type cel_type_ipaddress = {CEL_T_IPADDRESS, NULL, NULL};
const cel_type cel_type_list_dyn = {CEL_T_LIST, NULL, &cel_type_dyn};
const cel_type cel_type_map_dyn = {CEL_T_MAP, &cel_type_dyn, &cel_type_dyn};

void cel_type_format(const cel_type *t, strbuf *out)
{
	switch (t->kind) {
	case CEL_T_DYN:
		strbuf_puts(out, "dyn");
		break;
	case CEL_T_NULL:
		strbuf_puts(out, "null_type");
		break;
	case CEL_T_BOOL:
		strbuf_puts(out, "bool");
		break;
	case CEL_T_INT:
		strbuf_puts(out, "int");
		break;
	case CEL_T_UINT:
		strbuf_puts(out, "uint");
		break;
	case CEL_T_DOUBLE:
		strbuf_puts(out, "double");
		break;
	case CEL_T_STRING:
		strbuf_puts(out, "string");
		break;
	case CEL_T_BYTES:
		strbuf_puts(out, "bytes");
		break;
	case CEL_T_TIMESTAMP:
		strbuf_puts(out, "google.protobuf.Timestamp");
		break;
	case CEL_T_DURATION:
		strbuf_puts(out, "google.protobuf.Duration");
		break;
	case CEL_T_IPADDRESS:
		strbuf_puts(out, "IPAddress");
		break;
	case CEL_T_LIST:
		strbuf_puts(out, "list(");
		cel_type_format(t->elem, out);
		strbuf_putc(out, ')');
		break;
	case CEL_T_MAP:
		strbuf_puts(out, "map(");
		cel_type_format(t->key, out);
		strbuf_puts(out, ", ");
		cel_type_format(t->elem, out);
		strbuf_putc(out, ')');
		break;
	}
}

bool cel_type_equal(const cel_type *a, const cel_type *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == CEL_T_LIST)
		return cel_type_equal(a->elem, b->elem);
	if (a->kind == CEL_T_MAP)
		return cel_type_equal(a->key, b->key) &&
		       cel_type_equal(a->elem, b->elem);
	return true;
}

/* ------------------------------------------------------------------ UTF-8 */

size_t cel_utf8_decode(const unsigned char *s, size_t len, uint32_t *code)
{
	return utf8_decode(s, len, code);
}

void cel_utf8_encode(uint32_t c, strbuf *out)
{
	char b[4];
	if (c < 0x80) {
		strbuf_putc(out, (char)c);
		return;
	}
	if (c < 0x800) {
		b[0] = (char)(0xC0 | (c >> 6));
		b[1] = (char)(0x80 | (c & 0x3F));
		strbuf_append(out, b, 2);
	} else if (c < 0x10000) {
		b[0] = (char)(0xE0 | (c >> 12));
		b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
		b[2] = (char)(0x80 | (c & 0x3F));
		strbuf_append(out, b, 3);
	} else {
		b[0] = (char)(0xF0 | (c >> 18));
		b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
		b[2] = (char)(0x80 | ((c >> 6) & 0x3F));
		b[3] = (char)(0x80 | (c & 0x3F));
		strbuf_append(out, b, 4);
	}
}

/* ------------------------------------------------------ equality, order */

static bool is_number(const cel_value *v)
{
	return v->kind == CEL_V_INT || v->kind == CEL_V_UINT ||
	       v->kind == CEL_V_DOUBLE;
}

/* Compares numbers of any kind exactly (no rounding through double for
 * integers).  Returns 2 for NaN. */
static int compare_numbers(const cel_value *a, const cel_value *b)
{
	if (a->kind == CEL_V_DOUBLE || b->kind == CEL_V_DOUBLE) {
		if (a->kind == CEL_V_DOUBLE && b->kind == CEL_V_DOUBLE) {
			if (isnan(a->d) || isnan(b->d))
				return 2;
			return a->d < b->d ? -1 : a->d > b->d;
		}
		bool flip = b->kind == CEL_V_DOUBLE;
		const cel_value *d = flip ? b : a, *o = flip ? a : b;
		if (isnan(d->d))
			return 2;
		int r;
		/* Compare double d with integer o exactly. */
		if (o->kind == CEL_V_INT) {
			if (d->d < -9223372036854775808.0)
				r = -1;
			else if (d->d >= 9223372036854775808.0)
				r = 1;
			else {
				double t = trunc(d->d);
				int64_t di = (int64_t)t;
				r = di < o->i ? -1 : di > o->i;
				if (r == 0 && d->d != t)
					r = d->d > t ? 1 : -1;
			}
		} else {
			if (d->d < 0)
				r = -1;
			else if (d->d >= 18446744073709551616.0)
				r = 1;
			else {
				double t = trunc(d->d);
				uint64_t du = (uint64_t)t;
				r = du < o->u ? -1 : du > o->u;
				if (r == 0 && d->d != t)
					r = 1;
			}
		}
		return flip ? -r : r;
	}
	if (a->kind == CEL_V_INT && b->kind == CEL_V_INT)
		return a->i < b->i ? -1 : a->i > b->i;
	if (a->kind == CEL_V_UINT && b->kind == CEL_V_UINT)
		return a->u < b->u ? -1 : a->u > b->u;
	if (a->kind == CEL_V_INT) /* int vs uint */
		return a->i < 0
		           ? -1
		           : ((uint64_t)a->i < b->u ? -1
		                                    : (uint64_t)a->i > b->u);
	return b->i < 0 ? 1
	                : (a->u < (uint64_t)b->i ? -1 : a->u > (uint64_t)b->i);
}

static int compare_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c < 0 ? -1 : 1;
	return alen < blen ? -1 : alen > blen;
}

int cel_value_compare(const cel_value *a, const cel_value *b)
{
	if (is_number(a) && is_number(b))
		return compare_numbers(a, b);
	if (a->kind != b->kind)
		return 2;
	switch (a->kind) {
	case CEL_V_BOOL:
		return a->b < b->b ? -1 : a->b > b->b;
	case CEL_V_STRING:
	case CEL_V_BYTES:
		return compare_bytes(a->str.s, a->str.len, b->str.s,
		                     b->str.len);
	case CEL_V_TIMESTAMP:
		if (a->ts.seconds != b->ts.seconds)
			return a->ts.seconds < b->ts.seconds ? -1 : 1;
		return a->ts.nanos < b->ts.nanos ? -1
		                                 : a->ts.nanos > b->ts.nanos;
	case CEL_V_DURATION:
		return a->duration < b->duration ? -1
		                                 : a->duration > b->duration;
	default:
		return 2;
	}
}

bool cel_value_equal(const cel_value *a, const cel_value *b, uint64_t *budget)
{
	if (*budget == 0)
		return false;
	(*budget)--;
	if (is_number(a) && is_number(b))
		return compare_numbers(a, b) == 0;
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case CEL_V_NULL:
		return true;
	case CEL_V_LIST:
		if (a->list->n != b->list->n)
			return false;
		for (size_t i = 0; i < a->list->n; i++)
			if (!cel_value_equal(&a->list->items[i],
			                     &b->list->items[i], budget))
				return false;
		return true;
	case CEL_V_MAP:
		if (a->map->n != b->map->n)
			return false;
		for (size_t i = 0; i < a->map->n; i++) {
			size_t j;
			for (j = 0; j < b->map->n; j++)
				if (cel_value_equal(&a->map->keys[i],
				                    &b->map->keys[j], budget))
					break;
			if (j == b->map->n ||
			    !cel_value_equal(&a->map->values[i],
			                     &b->map->values[j], budget))
				return false;
		}
		return true;
	case CEL_V_IPADDRESS:
		return a->ip->v6 == b->ip->v6 &&
		       a->ip->has_zone == b->ip->has_zone &&
		       memcmp(a->ip->bytes, b->ip->bytes, 16) == 0;
	default:
		return cel_value_compare(a, b) == 0;
	}
}

/* -------------------------------------------------------------- calendar */

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30,
	                           31, 31, 30, 31, 30, 31};
	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

static bool digits(const char *s, size_t n, int *out)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

const char *cel_parse_timestamp(const char *s, size_t len, int64_t *seconds,
                                int32_t *nanos)
{
	/* YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM) */
	int y, mo, d, h, mi, se;
	if (len < 20 || !digits(s, 4, &y) || s[4] != '-' ||
	    !digits(s + 5, 2, &mo) || s[7] != '-' || !digits(s + 8, 2, &d) ||
	    s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
	    !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &se))
		return "not an RFC 3339 timestamp";
	size_t i = 19;
	int64_t frac = 0;
	if (i < len && s[i] == '.') {
		i++;
		size_t start = i;
		int64_t scale = 100000000;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			if (i - start < 9) {
				frac += (s[i] - '0') * scale;
				scale /= 10;
			}
			i++;
		}
		if (i == start)
			return "not an RFC 3339 timestamp";
	}
	int offset = 0;
	if (i < len && s[i] == 'Z') {
		i++;
	} else if (i + 6 <= len && (s[i] == '+' || s[i] == '-')) {
		int oh, om;
		if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
		    !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
			return "not an RFC 3339 timestamp";
		offset = (oh * 60 + om) * 60 * (s[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		return "not an RFC 3339 timestamp";
	}
	if (i != len)
		return "not an RFC 3339 timestamp";
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
	    mi > 59 || se > 59)
		return "timestamp field out of range";
	int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 +
	            se - offset;
	if (t < CEL_MIN_UNIX_SECONDS || t > CEL_MAX_UNIX_SECONDS)
		return "timestamp out of range";
	*seconds = t;
	*nanos = (int32_t)frac;
	return NULL;
}

void cel_format_timestamp(int64_t seconds, int32_t nanos, strbuf *out)
{
	int64_t days = seconds / 86400, rem = seconds % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	/* civil_from_days */
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t y = yoe + era * 400;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1;
	int64_t m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	strbuf_printf(out, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld",
	              (long long)y, (long long)m, (long long)d,
	              (long long)(rem / 3600), (long long)(rem / 60 % 60),
	              (long long)(rem % 60));
	if (nanos) {
		char frac[16];
		snprintf(frac, sizeof(frac), "%09d", (int)nanos);
		size_t n = 9;
		while (n > 0 && frac[n - 1] == '0')
			n--;
		strbuf_putc(out, '.');
		strbuf_append(out, frac, n);
	}
	strbuf_putc(out, 'Z');
}

/* ---------------------------------------------------------------- duration */

const char *cel_parse_duration(const char *s, size_t len, int64_t *nanos)
{
	/* Go's time.ParseDuration: [-+]? (number unit)+, or "0". */
	size_t i = 0;
	bool negative = false;
	if (i < len && (s[i] == '-' || s[i] == '+')) {
		negative = s[i] == '-';
		i++;
	}
	if (len - i == 1 && s[i] == '0') {
		*nanos = 0;
		return NULL;
	}
	if (i == len)
		return "invalid duration";
	/* Sum in nanoseconds as unsigned, bounded by 2^63. */
	uint64_t total = 0;
	const uint64_t limit = (uint64_t)INT64_MAX + (negative ? 1 : 0);
	while (i < len) {
		uint64_t whole = 0;
		bool any = false, overflow = false;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			if (whole > (UINT64_MAX - 9) / 10)
				overflow = true;
			whole = whole * 10 + (uint64_t)(s[i] - '0');
			i++;
			any = true;
		}
		double fraction = 0, scale = 1;
		bool any_fraction = false;
		if (i < len && s[i] == '.') {
			i++;
			while (i < len && s[i] >= '0' && s[i] <= '9') {
				if (scale < 1e18) {
					fraction = fraction * 10 + (s[i] - '0');
					scale *= 10;
				}
				i++;
				any_fraction = true;
			}
		}
		if (!any && !any_fraction)
			return "invalid duration";
		size_t u = i;
		while (u < len && !(s[u] >= '0' && s[u] <= '9') && s[u] != '.')
			u++;
		size_t ulen = u - i;
		uint64_t unit;
		const char *us = s + i;
		if (ulen == 2 && memcmp(us, "ns", 2) == 0)
			unit = 1;
		else if ((ulen == 2 && memcmp(us, "us", 2) == 0) ||
		         (ulen == 3 && memcmp(us, "\xc2\xb5s", 3) == 0) ||
		         (ulen == 3 && memcmp(us, "\xce\xbcs", 3) == 0))
			unit = 1000;
		else if (ulen == 2 && memcmp(us, "ms", 2) == 0)
			unit = 1000000;
		else if (ulen == 1 && us[0] == 's')
			unit = 1000000000ULL;
		else if (ulen == 1 && us[0] == 'm')
			unit = 60000000000ULL;
		else if (ulen == 1 && us[0] == 'h')
			unit = 3600000000000ULL;
		else
			return ulen ? "unknown unit in duration"
			            : "missing unit in duration";
		i = u;
		if (overflow || (whole && whole > limit / unit))
			return "invalid duration: out of range";
		uint64_t v = whole * unit;
		if (any_fraction)
			v += (uint64_t)(fraction * ((double)unit / scale));
		if (v > limit || total > limit - v)
			return "invalid duration: out of range";
		total += v;
	}
	*nanos = negative ? (int64_t)(0 - total) : (int64_t)total;
	return NULL;
}

void cel_format_duration(int64_t nanos, strbuf *out)
{
	/* CEL's string(duration): seconds with the digits needed, then "s". */
	uint64_t mag = nanos < 0 ? 0 - (uint64_t)nanos : (uint64_t)nanos;
	if (nanos < 0)
		strbuf_putc(out, '-');
	strbuf_printf(out, "%llu", (unsigned long long)(mag / 1000000000ULL));
	uint64_t frac = mag % 1000000000ULL;
	if (frac) {
		char text[16];
		snprintf(text, sizeof(text), "%09llu",
		         (unsigned long long)frac);
		size_t n = 9;
		while (text[n - 1] == '0')
			n--;
		strbuf_putc(out, '.');
		strbuf_append(out, text, n);
	}
	strbuf_putc(out, 's');
}

/* --------------------------------------------------------------- addresses */

const char *cel_parse_ip(const char *s, size_t len, cel_ip *out)
{
	char text[64];
	memset(out, 0, sizeof(*out));
	/* A NUL would end the text inet_pton sees: "10.0.0.1\0junk" is not
	 * an address. */
	if (len == 0 || len >= sizeof(text) || memchr(s, '\0', len))
		return "invalid IP address";
	memcpy(text, s, len);
	text[len] = '\0';
	if (memchr(text, ':', len)) {
		char *zone = strchr(text, '%');
		if (zone) {
			if (zone[1] == '\0')
				return "invalid IP address: empty zone";
			*zone = '\0';
			out->has_zone = true;
		}
		/* inet_pton accepts an embedded IPv4 tail as netip does. */
		if (inet_pton(AF_INET6, text, out->bytes) != 1)
			return "invalid IP address";
		out->v6 = true;
		return NULL;
	}
	if (inet_pton(AF_INET, text, out->bytes) != 1)
		return "invalid IP address";
	return NULL;
}

const char *cel_parse_cidr(const char *s, size_t len, cel_ip *out, int *bits)
{
	const char *slash = memchr(s, '/', len);
	if (!slash)
		return "no '/'";
	size_t alen = (size_t)(slash - s);
	if (memchr(s, '%', alen))
		return "IPv6 zones cannot be present in a prefix";
	const char *why = cel_parse_ip(s, alen, out);
	if (why)
		return why;
	const char *b = slash + 1;
	size_t blen = len - alen - 1;
	if (blen == 0 || blen > 3 || (blen > 1 && b[0] == '0'))
		return "bad bits";
	int v;
	if (!digits(b, blen, &v) || v > (out->v6 ? 128 : 32))
		return "bad bits";
	*bits = v;
	return NULL;
}

bool cel_ip_in_prefix(const cel_ip *ip, const cel_ip *prefix, int bits)
{
	if (ip->v6 != prefix->v6 || ip->has_zone)
		return false;
	for (int i = 0; i < bits; i++) {
		int byte = i / 8, bit = 7 - i % 8;
		if (((ip->bytes[byte] >> bit) & 1) !=
		    ((prefix->bytes[byte] >> bit) & 1))
			return false;
	}
	return true;
}

void cel_format_ip(const cel_ip *ip, strbuf *out)
{
	char text[INET6_ADDRSTRLEN];
	inet_ntop(ip->v6 ? AF_INET6 : AF_INET, ip->bytes, text, sizeof(text));
	strbuf_puts(out, text);
}

/* ----------------------------------------------------------------- doubles */

void cel_format_double(double d, strbuf *out)
{
	if (isnan(d)) {
		strbuf_puts(out, "NaN");
		return;
	}
	if (isinf(d)) {
		strbuf_puts(out, d > 0 ? "+Inf" : "-Inf");
		return;
	}
	/* Shortest digits that read back as d. */
	char buf[40];
	int prec;
	for (prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*e", prec - 1, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	/* buf is [-]D[.DDD]e[+-]XX: split into digits and exponent. */
	char mant[32];
	size_t nd = 0;
	const char *p = buf;
	bool negative = *p == '-';
	if (negative)
		p++;
	for (; *p && *p != 'e'; p++)
		if (*p != '.')
			mant[nd++] = *p;
	mant[nd] = '\0';
	int exp = atoi(p + 1);
	/* Trim trailing zeros of the mantissa (keep one digit). */
	while (nd > 1 && mant[nd - 1] == '0')
		mant[--nd] = '\0';
	if (negative)
		strbuf_putc(out, '-');
	if (d == 0) {
		strbuf_putc(out, '0');
		return;
	}
	if (exp < -4 || exp >= 6) {
		/* %e form: d.ddde±XX */
		strbuf_putc(out, mant[0]);
		if (nd > 1) {
			strbuf_putc(out, '.');
			strbuf_append(out, mant + 1, nd - 1);
		}
		strbuf_printf(out, "e%c%02d", exp < 0 ? '-' : '+',
		              exp < 0 ? -exp : exp);
		return;
	}
	if (exp < 0) {
		strbuf_puts(out, "0.");
		for (int i = -1; i > exp; i--)
			strbuf_putc(out, '0');
		strbuf_append(out, mant, nd);
		return;
	}
	/* exp >= 0: digits with the point after exp+1 of them */
	for (int i = 0; i <= exp; i++)
		strbuf_putc(out, (size_t)i < nd ? mant[i] : '0');
	if ((size_t)exp + 1 < nd) {
		strbuf_putc(out, '.');
		strbuf_append(out, mant + exp + 1, nd - (size_t)exp - 1);
	}
}
