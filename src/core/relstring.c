/*
 * relstring.c -- the text form of a relationship:
 *
 *     resource_type:resource_id#relation@subject_type:subject_id[#subject_rel]
 *         [[caveat_name]] | [[caveat_name:{json context}]]
 *         [[expiration:RFC3339 time]]
 *
 * as used by SpiceDB validation files, zed and pemba's own command line.
 * The subject relation "..." means "the subject object itself" and parses to
 * NULL.  A caveat suffix, if any, comes before an expiration suffix.
 *
 * The parser is a single left-to-right scan with strict bounds: it never reads
 * past the terminating NUL, never recurses, and copies every field into one
 * buffer it allocates up front.  It checks identifier *syntax* only lightly
 * (character classes and shape); the lengths and the schema are checked by
 * the core when a relationship is written.  Every error is PEMBA_EINVAL and
 * names the problem and the 0-based byte offset in the input.
 *
 * The caveat context is checked for balanced braces, brackets and strings but
 * not otherwise parsed: the caveat layer owns JSON.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pemba.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

/* Longest relationship text accepted, so that a hostile input cannot make us
 * allocate without bound.  Generous: ids are at most 1 KiB each, the rest is
 * caveat context. */
#define RELSTRING_MAX_LEN (1u << 20)
/* Deepest nesting of arrays/objects accepted in a caveat context. */
#define RELSTRING_MAX_JSON_DEPTH 128
/* How much of the input an error message quotes. */
#define RELSTRING_QUOTE_LEN 120

/* ============================================================ parser state */

typedef struct relparser {
	const char *text; /* whole input, for offsets and quoting */
	size_t pos;       /* next byte to read */
	size_t end;       /* one past the last byte (trailing space trimmed) */
	char *buf;        /* storage handed to the caller */
	size_t buf_used;
	size_t buf_cap;
	pemba_error *err;
} relparser;

/* Renders byte c for an error message: printable ASCII as itself, the rest
 * as \xNN.  out must hold at least 8 bytes. */
static const char *describe_char(char c, char out[8])
{
	unsigned char u = (unsigned char)c;
	if (c == '\0')
		snprintf(out, 8, "end");
	else if (u >= 0x20 && u < 0x7f)
		snprintf(out, 8, "'%c'", c);
	else
		snprintf(out, 8, "\\x%02x", u);
	return out;
}

/* Fills the error: `relationship "<text>": <problem> at offset <n>`.  Long
 * inputs are quoted only in part. */
static int fail_at(relparser *p, size_t offset, const char *problem)
{
	size_t len = strlen(p->text);
	int quoted = len > RELSTRING_QUOTE_LEN ? RELSTRING_QUOTE_LEN : (int)len;
	return error_set(p->err, PEMBA_EINVAL,
	                 "relationship \"%.*s%s\": %s at offset %zu", quoted,
	                 p->text, len > RELSTRING_QUOTE_LEN ? "..." : "",
	                 problem, offset);
}

/* The byte at pos, or NUL past the (trimmed) end. */
static char peek(const relparser *p)
{
	return p->pos < p->end ? p->text[p->pos] : '\0';
}

/* Copies text[start, start+n) into the storage buffer, NUL-terminated, and
 * returns the copy.  The buffer is sized up front (input length plus one NUL
 * per field), so this cannot overflow; the assert documents that. */
static const char *save(relparser *p, size_t start, size_t n)
{
	char *dst = p->buf + p->buf_used;
	/* Invariant: the buffer holds the whole input plus one NUL per field.
	 */
	if (p->buf_used + n + 1 > p->buf_cap)
		abort();
	memcpy(dst, p->text + start, n);
	dst[n] = '\0';
	p->buf_used += n + 1;
	return dst;
}

/* ======================================================== identifier syntax */

/* Characters that delimit the parts of a relationship; never part of an
 * identifier, so scanning stops at them. */
static bool is_structural(char c)
{
	return c == ':' || c == '#' || c == '@' || c == '[' || c == ']' ||
	       c == '\0';
}

static bool is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_name_char(char c)
{
	return is_lower(c) || is_digit(c) || c == '_';
}

/* Object id characters as PRODUCT.md fixes them: [a-zA-Z0-9/_|\-=+]. */
static bool is_id_char(char c)
{
	return is_name_char(c) || (c >= 'A' && c <= 'Z') || c == '/' ||
	       c == '|' || c == '-' || c == '=' || c == '+';
}

/* Scans from pos to the next structural character and returns the length
 * of the part scanned. */
static size_t scan_part(relparser *p)
{
	size_t start = p->pos;
	while (!is_structural(peek(p)))
		p->pos++;
	return p->pos - start;
}

/* Checks text[start, start+n) as a (possibly prefixed) type or caveat name:
 * segments of [a-z][a-z0-9_]* separated by single '/'.  `what` names the
 * part in messages ("resource type", ...). */
static int check_type_name(relparser *p, size_t start, size_t n,
                           const char *what)
{
	char msg[160], ch[8];
	if (n == 0) {
		snprintf(msg, sizeof(msg), "expected %s", what);
		return fail_at(p, start, msg);
	}
	bool segment_start = true;
	for (size_t i = 0; i < n; i++) {
		char c = p->text[start + i];
		if (segment_start && !is_lower(c)) {
			snprintf(
			    msg, sizeof(msg),
			    "%s must start with a lowercase letter, found %s",
			    what, describe_char(c, ch));
			if (c == '/')
				snprintf(msg, sizeof(msg),
				         "empty name segment in %s", what);
			return fail_at(p, start + i, msg);
		}
		if (c == '/') {
			segment_start = true;
			continue;
		}
		if (!is_name_char(c)) {
			snprintf(msg, sizeof(msg), "invalid character %s in %s",
			         describe_char(c, ch), what);
			return fail_at(p, start + i, msg);
		}
		segment_start = false;
	}
	if (segment_start) {
		snprintf(msg, sizeof(msg), "%s ends with '/'", what);
		return fail_at(p, start + n - 1, msg);
	}
	return 0;
}

/* Checks text[start, start+n) as a relation or permission name. */
static int check_relation_name(relparser *p, size_t start, size_t n,
                               const char *what)
{
	char msg[160], ch[8];
	if (n == 0) {
		snprintf(msg, sizeof(msg), "expected %s", what);
		return fail_at(p, start, msg);
	}
	if (!is_lower(p->text[start])) {
		snprintf(msg, sizeof(msg),
		         "%s must start with a lowercase letter, found %s",
		         what, describe_char(p->text[start], ch));
		return fail_at(p, start, msg);
	}
	for (size_t i = 1; i < n; i++) {
		char c = p->text[start + i];
		if (!is_name_char(c)) {
			snprintf(msg, sizeof(msg), "invalid character %s in %s",
			         describe_char(c, ch), what);
			return fail_at(p, start + i, msg);
		}
	}
	return 0;
}

/* Checks text[start, start+n) as an object id; "*" is accepted only when
 * allow_wildcard (subjects). */
static int check_object_id(relparser *p, size_t start, size_t n,
                           const char *what, bool allow_wildcard)
{
	char msg[160], ch[8];
	if (n == 0) {
		snprintf(msg, sizeof(msg), "expected %s", what);
		return fail_at(p, start, msg);
	}
	if (n > PEMBA_MAX_OBJECT_ID) {
		snprintf(msg, sizeof(msg), "%s is longer than %d bytes", what,
		         PEMBA_MAX_OBJECT_ID);
		return fail_at(p, start, msg);
	}
	if (n == 1 && p->text[start] == '*') {
		if (allow_wildcard)
			return 0;
		snprintf(msg, sizeof(msg), "%s cannot be the wildcard '*'",
		         what);
		return fail_at(p, start, msg);
	}
	for (size_t i = 0; i < n; i++) {
		char c = p->text[start + i];
		if (!is_id_char(c)) {
			snprintf(msg, sizeof(msg), "invalid character %s in %s",
			         describe_char(c, ch), what);
			return fail_at(p, start + i, msg);
		}
	}
	return 0;
}

/* Consumes the delimiter `want` or fails naming what it follows. */
static int expect(relparser *p, char want, const char *after)
{
	char msg[160], ch[8];
	if (peek(p) == want) {
		p->pos++;
		return 0;
	}
	snprintf(msg, sizeof(msg), "expected '%c' after %s, found %s", want,
	         after, describe_char(peek(p), ch));
	return fail_at(p, p->pos, msg);
}

/* ============================================================ RFC 3339 */

/* Days since 1970-01-01 of a proleptic Gregorian date (any year; month 1-12).
 * The usual era-based computation: shift the year to start in March so the
 * leap day is last, then count whole 400-year eras. */
static int64_t days_from_civil(int64_t year, int month, int day)
{
	year -= month <= 2;
	int64_t era = (year >= 0 ? year : year - 399) / 400;
	int64_t year_of_era = year - era * 400;
	int64_t day_of_year =
	    (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
	int64_t day_of_era = year_of_era * 365 + year_of_era / 4 -
	                     year_of_era / 100 + day_of_year;
	return era * 146097 + day_of_era - 719468;
}

/* Inverse of days_from_civil. */
static void civil_from_days(int64_t days, int64_t *year, int *month, int *day)
{
	days += 719468;
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	int64_t day_of_era = days - era * 146097;
	int64_t year_of_era = (day_of_era - day_of_era / 1460 +
	                       day_of_era / 36524 - day_of_era / 146096) /
	                      365;
	int64_t day_of_year =
	    day_of_era -
	    (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
	int64_t mp = (5 * day_of_year + 2) / 153;
	*day = (int)(day_of_year - (153 * mp + 2) / 5 + 1);
	*month = (int)(mp < 10 ? mp + 3 : mp - 9);
	*year = year_of_era + era * 400 + (*month <= 2);
}

static bool is_leap_year(int64_t year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int days_in_month(int64_t year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30,
	                             31, 31, 30, 31, 30, 31};
	return month == 2 && is_leap_year(year) ? 29 : days[month - 1];
}

/* Reads exactly `count` decimal digits at s[*i] (bounded by n). */
static bool read_digits(const char *s, size_t n, size_t *i, int count,
                        int *value)
{
	int v = 0;
	for (int k = 0; k < count; k++) {
		if (*i >= n || !is_digit(s[*i]))
			return false;
		v = v * 10 + (s[*i] - '0');
		(*i)++;
	}
	*value = v;
	return true;
}

/* The earliest and latest instants formatting can print as a 4-digit year. */
#define MS_PER_DAY 86400000LL
#define RFC3339_MIN_MS (days_from_civil(0, 1, 1) * MS_PER_DAY)
#define RFC3339_MAX_MS (days_from_civil(10000, 1, 1) * MS_PER_DAY - 1)

/* Parses s[0, n) as an RFC 3339 date-time ("2023-12-01T00:00:00Z",
 * "...T10:00:00.25+02:00") into Unix milliseconds, truncating sub-millisecond
 * fractions.  Returns 0, or -1 with *bad_at the offset (within s) of the
 * problem and *problem a description. */
static int parse_rfc3339(const char *s, size_t n, int64_t *ms_out,
                         size_t *bad_at, const char **problem)
{
	size_t i = 0;
	int year, month, day, hour, minute, second;
	int64_t frac_ms = 0;

	*problem =
	    "expected RFC 3339 time YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm)";
#define NEED(cond)                                                             \
	do {                                                                   \
		if (!(cond)) {                                                 \
			*bad_at = i;                                           \
			return -1;                                             \
		}                                                              \
	} while (0)
	NEED(read_digits(s, n, &i, 4, &year));
	NEED(i < n && s[i] == '-');
	i++;
	NEED(read_digits(s, n, &i, 2, &month));
	NEED(i < n && s[i] == '-');
	i++;
	NEED(read_digits(s, n, &i, 2, &day));
	NEED(i < n && (s[i] == 'T' || s[i] == 't'));
	i++;
	NEED(read_digits(s, n, &i, 2, &hour));
	NEED(i < n && s[i] == ':');
	i++;
	NEED(read_digits(s, n, &i, 2, &minute));
	NEED(i < n && s[i] == ':');
	i++;
	NEED(read_digits(s, n, &i, 2, &second));
	if (i < n && s[i] == '.') {
		i++;
		int digits = 0;
		while (i < n && is_digit(s[i])) {
			if (digits < 3)
				frac_ms = frac_ms * 10 + (s[i] - '0');
			digits++;
			i++;
		}
		*problem = "fraction of a second needs 1 to 9 digits";
		NEED(digits >= 1 && digits <= 9);
		for (; digits < 3; digits++)
			frac_ms *= 10;
	}
	int offset_minutes = 0;
	*problem = "expected time zone 'Z' or +hh:mm / -hh:mm";
	NEED(i < n);
	if (s[i] == 'Z' || s[i] == 'z') {
		i++;
	} else {
		NEED(s[i] == '+' || s[i] == '-');
		int sign = s[i] == '-' ? -1 : 1;
		int offset_hour, offset_minute;
		i++;
		NEED(read_digits(s, n, &i, 2, &offset_hour));
		NEED(i < n && s[i] == ':');
		i++;
		NEED(read_digits(s, n, &i, 2, &offset_minute));
		*problem = "time zone offset out of range";
		NEED(offset_hour <= 23 && offset_minute <= 59);
		offset_minutes = sign * (offset_hour * 60 + offset_minute);
	}
	*problem = "unexpected text after the time";
	NEED(i == n);
#undef NEED

	/* Field ranges; the offsets point at the field. */
	*problem = NULL;
	if (month < 1 || month > 12) {
		*bad_at = 5, *problem = "month out of range";
	} else if (day < 1 || day > days_in_month(year, month)) {
		*bad_at = 8, *problem = "day out of range for the month";
	} else if (hour > 23) {
		*bad_at = 11, *problem = "hour out of range";
	} else if (minute > 59) {
		*bad_at = 14, *problem = "minute out of range";
	} else if (second > 59) {
		*bad_at = 17, *problem = "second out of range";
	}
	if (*problem)
		return -1;

	int64_t seconds = days_from_civil(year, month, day) * 86400 +
	                  hour * 3600 + minute * 60 + second -
	                  (int64_t)offset_minutes * 60;
	int64_t ms = seconds * 1000 + frac_ms;
	if (ms < RFC3339_MIN_MS || ms > RFC3339_MAX_MS) {
		*bad_at = 0,
		*problem = "time is outside years 0000-9999 in UTC";
		return -1;
	}
	if (ms == 0) {
		/* 0 means "no expiration" in pemba_relationship. */
		*bad_at = 0, *problem = "expiration cannot be the Unix epoch";
		return -1;
	}
	*ms_out = ms;
	return 0;
}

/* Appends ms (Unix milliseconds) as RFC 3339 in UTC, with a fraction only
 * when it is not whole seconds. */
static void format_rfc3339(strbuf *sb, int64_t ms)
{
	int64_t days = ms / MS_PER_DAY, rem = ms % MS_PER_DAY;
	if (rem < 0) {
		rem += MS_PER_DAY;
		days--;
	}
	int64_t year;
	int month, day;
	civil_from_days(days, &year, &month, &day);
	int millis = (int)(rem % 1000);
	int64_t secs = rem / 1000;
	strbuf_printf(sb, "%04lld-%02d-%02dT%02d:%02d:%02d", (long long)year,
	              month, day, (int)(secs / 3600), (int)(secs / 60 % 60),
	              (int)(secs % 60));
	if (millis)
		strbuf_printf(sb, ".%03d", millis);
	strbuf_putc(sb, 'Z');
}

/* ========================================================== caveat context */

/* Scans a JSON object starting at pos (which holds '{') up to its matching
 * '}', checking only that braces, brackets and strings balance and that
 * strings hold no raw control characters or bad escapes.  On success pos is
 * just past the closing brace. */
static int scan_json_object(relparser *p)
{
	char stack[RELSTRING_MAX_JSON_DEPTH];
	int depth = 0;
	char msg[160], ch[8];

	while (p->pos < p->end) {
		char c = p->text[p->pos];
		if (c == '"') {
			size_t string_start = p->pos++;
			for (;;) {
				if (p->pos >= p->end)
					return fail_at(p, string_start,
					               "unterminated string in "
					               "caveat context");
				c = p->text[p->pos];
				if (c == '"')
					break;
				if ((unsigned char)c < 0x20) {
					snprintf(msg, sizeof(msg),
					         "control character %s in "
					         "caveat context string",
					         describe_char(c, ch));
					return fail_at(p, p->pos, msg);
				}
				if (c == '\\') {
					p->pos++;
					c = peek(p);
					if (c == 'u') {
						for (int k = 0; k < 4; k++) {
							p->pos++;
							if (!is_hex(peek(p)))
								return fail_at(
								    p, p->pos,
								    "bad \\u "
								    "escape in "
								    "caveat "
								    "context");
						}
					} else if (c == '\0' ||
					           !strchr("\"\\/bfnrt", c)) {
						return fail_at(
						    p, p->pos,
						    "bad escape in caveat "
						    "context string");
					}
				}
				p->pos++;
			}
			p->pos++; /* closing quote */
			continue;
		}
		if (c == '{' || c == '[') {
			if (depth == RELSTRING_MAX_JSON_DEPTH)
				return fail_at(
				    p, p->pos,
				    "caveat context nested too deeply");
			stack[depth++] = c == '{' ? '}' : ']';
		} else if (c == '}' || c == ']') {
			if (depth == 0 || stack[depth - 1] != c) {
				snprintf(msg, sizeof(msg),
				         "unbalanced %s in caveat context",
				         describe_char(c, ch));
				return fail_at(p, p->pos, msg);
			}
			depth--;
			if (depth == 0) {
				p->pos++;
				return 0;
			}
		} else if ((unsigned char)c < 0x20 && c != ' ' && c != '\t' &&
		           c != '\n' && c != '\r') {
			snprintf(msg, sizeof(msg),
			         "control character %s in caveat context",
			         describe_char(c, ch));
			return fail_at(p, p->pos, msg);
		}
		p->pos++;
	}
	return fail_at(p, p->pos, "unterminated caveat context: missing '}'");
}

/* ============================================================ suffixes */

/* Parses one "[...]" suffix at pos: a caveat or an expiration. */
static int parse_suffix(relparser *p, pemba_relationship *out,
                        bool *have_caveat, bool *have_expiration)
{
	char msg[200];
	size_t open = p->pos++;
	size_t name_start = p->pos;
	size_t name_len = scan_part(p);

	/* "[expiration:<time>]".  A caveat may itself be called "expiration";
	 * it is told apart by a context ("{") or no ':' at all. */
	if (name_len == 10 &&
	    memcmp(p->text + name_start, "expiration", 10) == 0 &&
	    peek(p) == ':' &&
	    (p->pos + 1 >= p->end || p->text[p->pos + 1] != '{')) {
		if (*have_expiration)
			return fail_at(p, open, "more than one expiration");
		p->pos++;
		size_t time_start = p->pos;
		while (p->pos < p->end && p->text[p->pos] != ']')
			p->pos++;
		if (p->pos >= p->end)
			return fail_at(
			    p, open,
			    "unterminated '[expiration:': missing ']'");
		size_t bad_at;
		const char *problem;
		if (parse_rfc3339(p->text + time_start, p->pos - time_start,
		                  &out->expiration_ms, &bad_at, &problem) < 0) {
			snprintf(msg, sizeof(msg), "invalid expiration: %s",
			         problem);
			return fail_at(p, time_start + bad_at, msg);
		}
		p->pos++; /* ']' */
		*have_expiration = true;
		return 0;
	}

	if (*have_expiration)
		return fail_at(p, open,
		               "a caveat must come before the expiration");
	if (*have_caveat)
		return fail_at(p, open, "more than one caveat");
	int rc = check_type_name(p, name_start, name_len, "caveat name");
	if (rc)
		return rc;
	out->caveat_name = save(p, name_start, name_len);
	*have_caveat = true;
	if (peek(p) == ':') {
		p->pos++;
		if (peek(p) != '{')
			return fail_at(
			    p, p->pos,
			    "expected '{' to start the caveat context");
		size_t json_start = p->pos;
		rc = scan_json_object(p);
		if (rc)
			return rc;
		out->caveat_context = save(p, json_start, p->pos - json_start);
	}
	return expect(p, ']', "the caveat");
}

/* ============================================================ public API */

int pemba_parse_relationship(const char *text, pemba_relationship *out,
                             char **storage, pemba_error *err)
{
	if (storage)
		*storage = NULL;
	if (out)
		memset(out, 0, sizeof(*out));
	if (!text || !out || !storage)
		return error_set(err, PEMBA_EINVAL,
		                 "pemba_parse_relationship: NULL argument");

	size_t len = strnlen(text, RELSTRING_MAX_LEN + 1);
	if (len > RELSTRING_MAX_LEN)
		return error_set(err, PEMBA_EINVAL,
		                 "relationship is longer than %u bytes",
		                 RELSTRING_MAX_LEN);

	relparser p = {.text = text, .pos = 0, .end = len, .err = err};
	/* Surrounding white space is not part of the relationship. */
	while (p.pos < p.end && strchr(" \t\r\n", text[p.pos]))
		p.pos++;
	while (p.end > p.pos && strchr(" \t\r\n", text[p.end - 1]))
		p.end--;

	/* Every field is a distinct piece of the input plus a NUL, and there
	 * are at most 8 string fields. */
	p.buf_cap = len + 8;
	p.buf = xmalloc(p.buf_cap);
	p.buf_used = 0;

	pemba_relationship rel = {0};
	bool have_caveat = false, have_expiration = false;
	size_t start, n;
	int rc;

	start = p.pos, n = scan_part(&p);
	if ((rc = check_type_name(&p, start, n, "resource type")))
		goto fail;
	rel.resource_type = save(&p, start, n);
	if ((rc = expect(&p, ':', "the resource type")))
		goto fail;

	start = p.pos, n = scan_part(&p);
	if ((rc = check_object_id(&p, start, n, "resource id", false)))
		goto fail;
	rel.resource_id = save(&p, start, n);
	if ((rc = expect(&p, '#', "the resource id")))
		goto fail;

	start = p.pos, n = scan_part(&p);
	if ((rc = check_relation_name(&p, start, n, "relation")))
		goto fail;
	rel.relation = save(&p, start, n);
	if ((rc = expect(&p, '@', "the relation")))
		goto fail;

	start = p.pos, n = scan_part(&p);
	if ((rc = check_type_name(&p, start, n, "subject type")))
		goto fail;
	rel.subject_type = save(&p, start, n);
	if ((rc = expect(&p, ':', "the subject type")))
		goto fail;

	start = p.pos, n = scan_part(&p);
	if ((rc = check_object_id(&p, start, n, "subject id", true)))
		goto fail;
	rel.subject_id = save(&p, start, n);
	bool wildcard = n == 1 && text[start] == '*';

	if (peek(&p) == '#') {
		p.pos++;
		start = p.pos, n = scan_part(&p);
		if (n == 3 && memcmp(text + start, "...", 3) == 0) {
			/* The "..." relation: the subject object itself. */
		} else {
			if ((rc = check_relation_name(&p, start, n,
			                              "subject relation")))
				goto fail;
			if (wildcard) {
				rc = fail_at(&p, start,
				             "a wildcard subject cannot have a "
				             "relation");
				goto fail;
			}
			rel.subject_relation = save(&p, start, n);
		}
	}

	while (peek(&p) == '[') {
		if ((rc = parse_suffix(&p, &rel, &have_caveat,
		                       &have_expiration)))
			goto fail;
	}

	if (p.pos != p.end) {
		char msg[160], ch[8];
		snprintf(msg, sizeof(msg), "unexpected %s",
		         describe_char(text[p.pos], ch));
		rc = fail_at(&p, p.pos, msg);
		goto fail;
	}

	*out = rel;
	*storage = p.buf;
	return 0;

fail:
	free(p.buf);
	return rc;
}

/* Treats NULL as "" so a partly filled struct still formats. */
static const char *or_empty(const char *s)
{
	return s ? s : "";
}

char *pemba_format_relationship(const pemba_relationship *rel)
{
	if (!rel)
		return NULL;
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb, "%s:%s#%s@%s:%s", or_empty(rel->resource_type),
	              or_empty(rel->resource_id), or_empty(rel->relation),
	              or_empty(rel->subject_type), or_empty(rel->subject_id));
	const char *subject_relation = rel->subject_relation;
	if (subject_relation && subject_relation[0] &&
	    strcmp(subject_relation, "...") != 0)
		strbuf_printf(&sb, "#%s", subject_relation);
	if (rel->caveat_name && rel->caveat_name[0]) {
		strbuf_printf(&sb, "[%s", rel->caveat_name);
		if (rel->caveat_context && rel->caveat_context[0])
			strbuf_printf(&sb, ":%s", rel->caveat_context);
		strbuf_putc(&sb, ']');
	}
	if (rel->expiration_ms != 0) {
		strbuf_puts(&sb, "[expiration:");
		format_rfc3339(&sb, rel->expiration_ms);
		strbuf_putc(&sb, ']');
	}
	char *text = strbuf_detach(&sb, NULL);
	strbuf_free(&sb); /* detach leaves a fresh empty buffer behind */
	return text;
}
