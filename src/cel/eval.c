/*
 * eval.c -- tree-walking evaluation with partial evaluation and a cost.
 *
 * Errors and unknowns are values, as in CEL: a strict operator or function
 * returns the first error-or-unknown among its arguments, left to right;
 * `&&` and `||` are commutative (false && error is false, true || unknown
 * is true; two unknowns merge, an unknown beats an error); `?:` passes an
 * undecided condition through.  Macros fold with those same rules.
 *
 * Every node visited, macro iteration, element copied or compared, and
 * every 16 bytes of string work cost one step.  Past the limit the
 * evaluator stops at the next check and the whole evaluation fails with
 * PEMBA_ELIMIT.  All memory comes from the caller's arena; since
 * allocation is proportional to the steps charged for it, the cost limit
 * bounds memory too.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel/internal.h"
#include "util/error.h"

typedef struct evaluator {
	const cel_program *p;
	arena *a;
	const cel_value *params;
	cel_value slots[CEL_MAX_DEPTH];
	uint64_t steps, limit;
	bool exhausted;
} evaluator;

static cel_value eval(evaluator *e, const cel_node *n);

/* ---------------------------------------------------------------- helpers */

static bool charge(evaluator *e, uint64_t steps)
{
	if (e->exhausted)
		return false;
	e->steps += steps;
	if (e->steps > e->limit) {
		e->exhausted = true;
		return false;
	}
	return true;
}

static cel_value error_value(evaluator *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static cel_value error_value(evaluator *e, const char *fmt, ...)
{
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	cel_value v = {.kind = CEL_V_ERROR};
	v.str.s = arena_strdup(e->a, message);
	v.str.len = strlen(v.str.s);
	return v;
}

static cel_value exhausted_value(evaluator *e)
{
	e->exhausted = true;
	return error_value(e, "operation cancelled: actual cost limit "
	                      "exceeded");
}

static cel_value bool_value(bool b)
{
	return (cel_value){.kind = CEL_V_BOOL, .b = b};
}

static cel_value int_value(int64_t i)
{
	return (cel_value){.kind = CEL_V_INT, .i = i};
}

static bool undecided(const cel_value *v)
{
	return v->kind == CEL_V_UNKNOWN || v->kind == CEL_V_ERROR;
}

static cel_value no_overload(evaluator *e)
{
	return error_value(e, "no such overload");
}

/* Union of two unknowns. */
static cel_value merge_unknowns(evaluator *e, const cel_value *x,
                                const cel_value *y)
{
	const cel_unknown *a = x->unknown, *b = y->unknown;
	cel_unknown *u = arena_alloc(
	    e->a, sizeof(*u) + (a->n + b->n) * sizeof(u->params[0]));
	size_t i = 0, j = 0, n = 0;
	while (i < a->n || j < b->n) {
		int next;
		if (j >= b->n || (i < a->n && a->params[i] < b->params[j]))
			next = a->params[i++];
		else if (i >= a->n || b->params[j] < a->params[i])
			next = b->params[j++];
		else {
			next = a->params[i++];
			j++;
		}
		u->params[n++] = next;
	}
	u->n = n;
	return (cel_value){.kind = CEL_V_UNKNOWN, .unknown = u};
}

/* CEL's commutative && (is_and) and ||. */
static cel_value logic(evaluator *e, bool is_and, const cel_value *l,
                       const cel_value *r)
{
	bool decisive = !is_and; /* false decides &&, true decides || */
	if ((l->kind == CEL_V_BOOL && l->b == decisive) ||
	    (r->kind == CEL_V_BOOL && r->b == decisive))
		return bool_value(decisive);
	if (l->kind == CEL_V_UNKNOWN && r->kind == CEL_V_UNKNOWN)
		return merge_unknowns(e, l, r);
	if (l->kind == CEL_V_UNKNOWN)
		return *l;
	if (r->kind == CEL_V_UNKNOWN)
		return *r;
	if (l->kind == CEL_V_ERROR)
		return *l;
	if (r->kind == CEL_V_ERROR)
		return *r;
	if (l->kind != CEL_V_BOOL || r->kind != CEL_V_BOOL)
		return no_overload(e);
	return bool_value(!decisive);
}

static bool values_equal(evaluator *e, const cel_value *a, const cel_value *b)
{
	if (e->exhausted)
		return false;
	uint64_t budget = e->limit - e->steps;
	bool eq = cel_value_equal(a, b, &budget);
	if (budget == 0) {
		e->exhausted = true;
		return false;
	}
	e->steps = e->limit - budget;
	return eq;
}

static cel_value string_value(const char *s, size_t len, cel_value_kind kind)
{
	cel_value v = {.kind = kind};
	v.str.s = s;
	v.str.len = len;
	return v;
}

/* Map lookup; NULL if absent. */
static const cel_value *map_find(evaluator *e, const cel_map *m,
                                 const cel_value *key)
{
	for (size_t i = 0; i < m->n; i++)
		if (values_equal(e, &m->keys[i], key))
			return &m->values[i];
	return NULL;
}

static void format_key(const cel_value *v, strbuf *sb)
{
	switch (v->kind) {
	case CEL_V_STRING:
		strbuf_append(sb, v->str.s, v->str.len);
		break;
	case CEL_V_INT:
		strbuf_printf(sb, "%lld", (long long)v->i);
		break;
	case CEL_V_UINT:
		strbuf_printf(sb, "%llu", (unsigned long long)v->u);
		break;
	case CEL_V_BOOL:
		strbuf_puts(sb, v->b ? "true" : "false");
		break;
	case CEL_V_DOUBLE:
		cel_format_double(v->d, sb);
		break;
	default:
		strbuf_puts(sb, "?");
		break;
	}
}

static cel_value no_such_key(evaluator *e, const cel_value *key)
{
	strbuf sb;
	strbuf_init(&sb);
	format_key(key, &sb);
	if (sb.len > 100) {
		sb.len = 100;
		sb.data[100] = '\0';
	}
	cel_value v = error_value(e, "no such key: %s", sb.data);
	strbuf_free(&sb);
	return v;
}

/* ------------------------------------------------------------- arithmetic */

static cel_value timestamp_value(evaluator *e, int64_t seconds, int64_t nanos)
{
	/* Normalize nanos to [0, 1e9). */
	seconds += nanos / 1000000000;
	nanos %= 1000000000;
	if (nanos < 0) {
		nanos += 1000000000;
		seconds--;
	}
	if (seconds < CEL_MIN_UNIX_SECONDS || seconds > CEL_MAX_UNIX_SECONDS)
		return error_value(e, "timestamp overflow");
	cel_value v = {.kind = CEL_V_TIMESTAMP};
	v.ts.seconds = seconds;
	v.ts.nanos = (int32_t)nanos;
	return v;
}

static cel_value arithmetic(evaluator *e, cel_function f, const cel_value *l,
                            const cel_value *r)
{
	cel_value out = {.kind = l->kind};
	if (l->kind == CEL_V_INT && r->kind == CEL_V_INT) {
		bool overflow = false;
		switch (f) {
		case CEL_F_ADD:
			overflow = __builtin_add_overflow(l->i, r->i, &out.i);
			break;
		case CEL_F_SUB:
			overflow = __builtin_sub_overflow(l->i, r->i, &out.i);
			break;
		case CEL_F_MUL:
			overflow = __builtin_mul_overflow(l->i, r->i, &out.i);
			break;
		case CEL_F_DIV:
		case CEL_F_MOD:
			if (r->i == 0)
				return error_value(e, f == CEL_F_DIV
				                          ? "division by zero"
				                          : "modulus by zero");
			if (l->i == INT64_MIN && r->i == -1)
				overflow = true;
			else
				out.i =
				    f == CEL_F_DIV ? l->i / r->i : l->i % r->i;
			break;
		default:
			return no_overload(e);
		}
		return overflow ? error_value(e, "integer overflow") : out;
	}
	if (l->kind == CEL_V_UINT && r->kind == CEL_V_UINT) {
		bool overflow = false;
		switch (f) {
		case CEL_F_ADD:
			overflow = __builtin_add_overflow(l->u, r->u, &out.u);
			break;
		case CEL_F_SUB:
			overflow = __builtin_sub_overflow(l->u, r->u, &out.u);
			break;
		case CEL_F_MUL:
			overflow = __builtin_mul_overflow(l->u, r->u, &out.u);
			break;
		case CEL_F_DIV:
		case CEL_F_MOD:
			if (r->u == 0)
				return error_value(e, f == CEL_F_DIV
				                          ? "division by zero"
				                          : "modulus by zero");
			out.u = f == CEL_F_DIV ? l->u / r->u : l->u % r->u;
			break;
		default:
			return no_overload(e);
		}
		return overflow ? error_value(e, "unsigned integer overflow")
		                : out;
	}
	if (l->kind == CEL_V_DOUBLE && r->kind == CEL_V_DOUBLE) {
		switch (f) {
		case CEL_F_ADD:
			out.d = l->d + r->d;
			break;
		case CEL_F_SUB:
			out.d = l->d - r->d;
			break;
		case CEL_F_MUL:
			out.d = l->d * r->d;
			break;
		case CEL_F_DIV:
			out.d = l->d / r->d;
			break;
		default:
			return no_overload(e);
		}
		return out;
	}
	if (f == CEL_F_ADD && l->kind == r->kind &&
	    (l->kind == CEL_V_STRING || l->kind == CEL_V_BYTES)) {
		size_t n = l->str.len + r->str.len;
		if (!charge(e, n / 16 + 1))
			return exhausted_value(e);
		char *s = arena_alloc(e->a, n + 1);
		memcpy(s, l->str.s, l->str.len);
		memcpy(s + l->str.len, r->str.s, r->str.len);
		return string_value(s, n, l->kind);
	}
	if (f == CEL_F_ADD && l->kind == CEL_V_LIST && r->kind == CEL_V_LIST) {
		size_t n = l->list->n + r->list->n;
		if (!charge(e, n + 1))
			return exhausted_value(e);
		cel_list *list = arena_alloc(e->a, sizeof(*list));
		list->items =
		    arena_alloc(e->a, (n ? n : 1) * sizeof(cel_value));
		memcpy(list->items, l->list->items,
		       l->list->n * sizeof(cel_value));
		memcpy(list->items + l->list->n, r->list->items,
		       r->list->n * sizeof(cel_value));
		list->n = n;
		return (cel_value){.kind = CEL_V_LIST, .list = list};
	}
	if (l->kind == CEL_V_DURATION && r->kind == CEL_V_DURATION &&
	    (f == CEL_F_ADD || f == CEL_F_SUB)) {
		bool overflow =
		    f == CEL_F_ADD
		        ? __builtin_add_overflow(l->duration, r->duration,
		                                 &out.duration)
		        : __builtin_sub_overflow(l->duration, r->duration,
		                                 &out.duration);
		return overflow ? error_value(e, "duration overflow") : out;
	}
	if (f == CEL_F_ADD &&
	    ((l->kind == CEL_V_TIMESTAMP && r->kind == CEL_V_DURATION) ||
	     (l->kind == CEL_V_DURATION && r->kind == CEL_V_TIMESTAMP))) {
		const cel_value *t = l->kind == CEL_V_TIMESTAMP ? l : r;
		const cel_value *d = l->kind == CEL_V_TIMESTAMP ? r : l;
		return timestamp_value(e,
		                       t->ts.seconds + d->duration / 1000000000,
		                       t->ts.nanos + d->duration % 1000000000);
	}
	if (f == CEL_F_SUB && l->kind == CEL_V_TIMESTAMP &&
	    r->kind == CEL_V_DURATION)
		return timestamp_value(e,
		                       l->ts.seconds - r->duration / 1000000000,
		                       l->ts.nanos - r->duration % 1000000000);
	if (f == CEL_F_SUB && l->kind == CEL_V_TIMESTAMP &&
	    r->kind == CEL_V_TIMESTAMP) {
		int64_t seconds = l->ts.seconds - r->ts.seconds; /* in range */
		int64_t ns;
		if (__builtin_mul_overflow(seconds, 1000000000, &ns) ||
		    __builtin_add_overflow(
		        ns, (int64_t)l->ts.nanos - r->ts.nanos, &ns))
			return error_value(e, "duration overflow");
		out.kind = CEL_V_DURATION;
		out.duration = ns;
		return out;
	}
	return no_overload(e);
}

/* --------------------------------------------------------------- strings */

static size_t utf8_length(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

const char *cel_regex_compile(const char *pattern, size_t len, regex_t *out)
{
	/* RE2 has no back-references; refusing them also keeps POSIX
	 * matching free of its exponential cases. */
	for (size_t i = 0; i + 1 < len; i++)
		if (pattern[i] == '\\') {
			if (pattern[i + 1] >= '1' && pattern[i + 1] <= '9')
				return "back-references are not supported";
			i++;
		}
	/* regcomp reads a C string: a NUL cannot be written in POSIX syntax
	 * (RE2 would match it literally). */
	if (memchr(pattern, '\0', len))
		return "NUL byte in pattern";
	/* RE2's `.` is any character but a newline; POSIX's is any byte but
	 * NUL (glibc).  Outside brackets it becomes `[^\n]` (a real newline
	 * in the bracket), so "a\x00b".matches("a.b") and
	 * "a\nb".matches("a.b") answer as in SpiceDB. */
	strbuf text;
	strbuf_init(&text);
	for (size_t i = 0; i < len; i++) {
		char c = pattern[i];
		if (c == '\\' && i + 1 < len) {
			strbuf_append(&text, pattern + i, 2);
			i++;
		} else if (c == '[') {
			/* Copied as is up to its closing ']': a leading ']'
			 * (after an optional '^') and the ']' of [:class:],
			 * [=e=] and [.c.] do not close it. */
			size_t j = i + 1;
			if (j < len && pattern[j] == '^')
				j++;
			if (j < len && pattern[j] == ']')
				j++;
			while (j < len && pattern[j] != ']') {
				char k = j + 1 < len ? pattern[j + 1] : 0;
				if (pattern[j] == '[' &&
				    (k == ':' || k == '=' || k == '.')) {
					j += 2;
					while (j + 1 < len &&
					       !(pattern[j] == k &&
					         pattern[j + 1] == ']'))
						j++;
					j += 2;
				} else {
					j++;
				}
			}
			size_t end = j < len ? j + 1 : len;
			strbuf_append(&text, pattern + i, end - i);
			i = end - 1;
		} else if (c == '.') {
			strbuf_puts(&text, "[^\n]");
		} else {
			strbuf_putc(&text, c);
		}
	}
	int rc = regcomp(out, text.data, REG_EXTENDED | REG_NOSUB);
	strbuf_free(&text);
	return rc == 0 ? NULL : "invalid regular expression";
}

static cel_value regex_match(evaluator *e, const cel_node *n,
                             const cel_value *s, const cel_value *pattern)
{
	if (!charge(e, (s->str.len + 1) * (pattern->str.len / 16 + 1) / 16 +
	                   pattern->str.len / 4 + 1))
		return exhausted_value(e);
	regex_t local;
	const regex_t *re = n->regex;
	if (!re) {
		const char *why =
		    cel_regex_compile(pattern->str.s, pattern->str.len, &local);
		if (why)
			return error_value(
			    e, "error parsing regexp: %s: `%.*s`", why,
			    (int)(pattern->str.len > 100 ? 100
			                                 : pattern->str.len),
			    pattern->str.s);
		re = &local;
	}
	regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)s->str.len}};
	int rc = regexec(re, s->str.s ? s->str.s : "", 1, m, REG_STARTEND);
	if (!n->regex)
		regfree(&local);
	return bool_value(rc == 0);
}

static cel_value string_function(evaluator *e, cel_function f,
                                 const cel_value *s, const cel_value *arg)
{
	if (s->kind != CEL_V_STRING || arg->kind != CEL_V_STRING)
		return no_overload(e);
	if (!charge(e, s->str.len / 16 + 1))
		return exhausted_value(e);
	size_t n = s->str.len, m = arg->str.len;
	switch (f) {
	case CEL_F_STARTS_WITH:
		return bool_value(m <= n &&
		                  memcmp(s->str.s, arg->str.s, m) == 0);
	case CEL_F_ENDS_WITH:
		return bool_value(m <= n &&
		                  memcmp(s->str.s + n - m, arg->str.s, m) == 0);
	default:
		if (m == 0)
			return bool_value(true);
		return bool_value(m <= n &&
		                  memmem(s->str.s, n, arg->str.s, m) != NULL);
	}
}

/* ------------------------------------------------------------ conversions */

/* Copies a string value into text[size] for strtoll and friends: false
 * when it does not fit or holds a NUL byte (which would end the number
 * early: int("12\x00") must fail, not give 12). */
static bool number_text(const cel_value *v, char *text, size_t size)
{
	if (v->str.len == 0 || v->str.len >= size ||
	    memchr(v->str.s, '\0', v->str.len))
		return false;
	memcpy(text, v->str.s, v->str.len);
	text[v->str.len] = '\0';
	return true;
}

static bool parse_int_text(const cel_value *s, int64_t *out)
{
	char text[32];
	if (!number_text(s, text, sizeof(text)))
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (*end || errno || text[0] == ' ' || text[0] == '+')
		return false;
	*out = v;
	return true;
}

static cel_value convert(evaluator *e, cel_function f, const cel_value *v)
{
	cel_value out = {0};
	switch (f) {
	case CEL_F_DYN:
		return *v;
	case CEL_F_INT:
		out.kind = CEL_V_INT;
		switch (v->kind) {
		case CEL_V_INT:
			return *v;
		case CEL_V_UINT:
			if (v->u > INT64_MAX)
				return error_value(e, "integer overflow");
			out.i = (int64_t)v->u;
			return out;
		case CEL_V_DOUBLE:
			if (!(v->d > -9223372036854775808.0 - 1025.0 &&
			      v->d < 9223372036854775808.0))
				return error_value(e, "integer overflow");
			out.i = (int64_t)v->d;
			return out;
		case CEL_V_STRING:
			if (!parse_int_text(v, &out.i))
				return error_value(e, "cannot convert string "
				                      "to int");
			return out;
		case CEL_V_TIMESTAMP:
			out.i = v->ts.seconds;
			return out;
		default:
			return no_overload(e);
		}
	case CEL_F_UINT:
		out.kind = CEL_V_UINT;
		switch (v->kind) {
		case CEL_V_UINT:
			return *v;
		case CEL_V_INT:
			if (v->i < 0)
				return error_value(e, "unsigned integer "
				                      "overflow");
			out.u = (uint64_t)v->i;
			return out;
		case CEL_V_DOUBLE:
			if (!(v->d > -1.0 && v->d < 18446744073709551616.0))
				return error_value(e, "unsigned integer "
				                      "overflow");
			out.u = (uint64_t)v->d;
			return out;
		case CEL_V_STRING: {
			char text[32];
			if (!number_text(v, text, sizeof(text)) ||
			    text[0] == '-')
				return error_value(e, "cannot convert string "
				                      "to uint");
			char *end;
			errno = 0;
			unsigned long long u = strtoull(text, &end, 10);
			if (*end || errno || text[0] == ' ' || text[0] == '+')
				return error_value(e, "cannot convert string "
				                      "to uint");
			out.u = u;
			return out;
		}
		default:
			return no_overload(e);
		}
	case CEL_F_DOUBLE:
		out.kind = CEL_V_DOUBLE;
		switch (v->kind) {
		case CEL_V_DOUBLE:
			return *v;
		case CEL_V_INT:
			out.d = (double)v->i;
			return out;
		case CEL_V_UINT:
			out.d = (double)v->u;
			return out;
		case CEL_V_STRING: {
			char text[64];
			if (!number_text(v, text, sizeof(text)))
				return error_value(e, "cannot convert string "
				                      "to double");
			char *end;
			out.d = strtod(text, &end);
			if (*end || text[0] == ' ')
				return error_value(e, "cannot convert string "
				                      "to double");
			return out;
		}
		default:
			return no_overload(e);
		}
	case CEL_F_STRING: {
		strbuf sb;
		strbuf_init(&sb);
		switch (v->kind) {
		case CEL_V_STRING:
			strbuf_free(&sb);
			return *v;
		case CEL_V_INT:
			strbuf_printf(&sb, "%lld", (long long)v->i);
			break;
		case CEL_V_UINT:
			strbuf_printf(&sb, "%llu", (unsigned long long)v->u);
			break;
		case CEL_V_DOUBLE:
			cel_format_double(v->d, &sb);
			break;
		case CEL_V_BOOL:
			strbuf_puts(&sb, v->b ? "true" : "false");
			break;
		case CEL_V_BYTES:
			for (size_t i = 0; i < v->str.len;) {
				uint32_t code;
				size_t k = cel_utf8_decode(
				    (const unsigned char *)v->str.s + i,
				    v->str.len - i, &code);
				if (k == 0) {
					strbuf_free(&sb);
					return error_value(e,
					                   "invalid UTF-8 "
					                   "in bytes, cannot "
					                   "convert to string");
				}
				i += k;
			}
			strbuf_free(&sb);
			return string_value(v->str.s, v->str.len, CEL_V_STRING);
		case CEL_V_TIMESTAMP:
			cel_format_timestamp(v->ts.seconds, v->ts.nanos, &sb);
			break;
		case CEL_V_DURATION:
			cel_format_duration(v->duration, &sb);
			break;
		case CEL_V_IPADDRESS:
			cel_format_ip(v->ip, &sb);
			break;
		default:
			strbuf_free(&sb);
			return no_overload(e);
		}
		out = string_value(arena_strndup(e->a, sb.data, sb.len), sb.len,
		                   CEL_V_STRING);
		strbuf_free(&sb);
		return out;
	}
	case CEL_F_BYTES:
		if (v->kind == CEL_V_BYTES)
			return *v;
		if (v->kind == CEL_V_STRING)
			return string_value(v->str.s, v->str.len, CEL_V_BYTES);
		return no_overload(e);
	case CEL_F_BOOL:
		if (v->kind == CEL_V_BOOL)
			return *v;
		if (v->kind == CEL_V_STRING) {
			static const char *const yes[] = {
			    "1", "t", "T", "TRUE", "true", "True"};
			static const char *const no[] = {
			    "0", "f", "F", "FALSE", "false", "False"};
			for (size_t i = 0; i < 6; i++) {
				if (strlen(yes[i]) == v->str.len &&
				    memcmp(yes[i], v->str.s, v->str.len) == 0)
					return bool_value(true);
				if (strlen(no[i]) == v->str.len &&
				    memcmp(no[i], v->str.s, v->str.len) == 0)
					return bool_value(false);
			}
			return error_value(e, "type conversion error from "
			                      "'string' to 'bool'");
		}
		return no_overload(e);
	case CEL_F_TIMESTAMP:
		if (v->kind == CEL_V_TIMESTAMP)
			return *v;
		if (v->kind == CEL_V_INT)
			return timestamp_value(e, v->i, 0);
		if (v->kind == CEL_V_STRING) {
			out.kind = CEL_V_TIMESTAMP;
			const char *why =
			    cel_parse_timestamp(v->str.s, v->str.len,
			                        &out.ts.seconds, &out.ts.nanos);
			if (why)
				return error_value(e, "timestamp: %s", why);
			return out;
		}
		return no_overload(e);
	case CEL_F_DURATION:
		if (v->kind == CEL_V_DURATION)
			return *v;
		if (v->kind == CEL_V_STRING) {
			out.kind = CEL_V_DURATION;
			const char *why = cel_parse_duration(
			    v->str.s, v->str.len, &out.duration);
			if (why)
				return error_value(e, "duration: %s", why);
			return out;
		}
		return no_overload(e);
	default:
		return no_overload(e);
	}
}

/* ------------------------------------------------------------ timestamps */

/* Offset in seconds of a time zone argument: "UTC", "Z", "+05:30",
 * "-08:00".  Named zones other than UTC are not supported. */
static bool zone_offset(const cel_value *tz, int64_t *offset)
{
	const char *s = tz->str.s;
	size_t n = tz->str.len;
	if ((n == 3 && memcmp(s, "UTC", 3) == 0) || (n == 1 && s[0] == 'Z')) {
		*offset = 0;
		return true;
	}
	if (n == 6 && (s[0] == '+' || s[0] == '-') && s[3] == ':') {
		int h = (s[1] - '0') * 10 + (s[2] - '0');
		int m = (s[4] - '0') * 10 + (s[5] - '0');
		for (int i = 1; i < 6; i++)
			if (i != 3 && (s[i] < '0' || s[i] > '9'))
				return false;
		if (h > 23 || m > 59)
			return false;
		*offset = (h * 3600 + m * 60) * (s[0] == '-' ? -1 : 1);
		return true;
	}
	return false;
}

static cel_value time_accessor(evaluator *e, cel_function f, const cel_value *t,
                               const cel_value *tz)
{
	if (t->kind == CEL_V_DURATION) {
		int64_t d = t->duration;
		switch (f) {
		case CEL_F_GET_HOURS:
			return int_value(d / 3600000000000LL);
		case CEL_F_GET_MINUTES:
			return int_value(d / 60000000000LL);
		case CEL_F_GET_SECONDS:
			return int_value(d / 1000000000LL);
		case CEL_F_GET_MILLISECONDS:
			return int_value(d % 1000000000LL / 1000000LL);
		default:
			return no_overload(e);
		}
	}
	if (t->kind != CEL_V_TIMESTAMP)
		return no_overload(e);
	int64_t offset = 0;
	if (tz) {
		if (tz->kind != CEL_V_STRING)
			return no_overload(e);
		if (!zone_offset(tz, &offset))
			return error_value(
			    e, "unsupported time zone: %.*s",
			    (int)(tz->str.len > 64 ? 64 : tz->str.len),
			    tz->str.s);
	}
	int64_t seconds = t->ts.seconds + offset;
	int64_t days = seconds / 86400, rem = seconds % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	/* Calendar fields through the formatter's arithmetic. */
	strbuf sb;
	strbuf_init(&sb);
	cel_format_timestamp(days * 86400, 0, &sb);
	int year = atoi(sb.data), month = atoi(sb.data + 5),
	    mday = atoi(sb.data + 8);
	strbuf_free(&sb);
	switch (f) {
	case CEL_F_GET_FULL_YEAR:
		return int_value(year);
	case CEL_F_GET_MONTH:
		return int_value(month - 1);
	case CEL_F_GET_DATE:
		return int_value(mday);
	case CEL_F_GET_DAY_OF_MONTH:
		return int_value(mday - 1);
	case CEL_F_GET_DAY_OF_WEEK: {
		int64_t w = (days + 4) % 7; /* 1970-01-01 was a Thursday */
		return int_value(w < 0 ? w + 7 : w);
	}
	case CEL_F_GET_DAY_OF_YEAR: {
		char jan1[32];
		snprintf(jan1, sizeof(jan1), "%04d-01-01T00:00:00Z", year);
		int64_t start;
		int32_t nanos;
		if (cel_parse_timestamp(jan1, strlen(jan1), &start, &nanos))
			return error_value(e, "timestamp overflow");
		return int_value((days * 86400 - start) / 86400);
	}
	case CEL_F_GET_HOURS:
		return int_value(rem / 3600);
	case CEL_F_GET_MINUTES:
		return int_value(rem / 60 % 60);
	case CEL_F_GET_SECONDS:
		return int_value(rem % 60);
	case CEL_F_GET_MILLISECONDS:
		return int_value(t->ts.nanos / 1000000);
	default:
		return no_overload(e);
	}
}

/* -------------------------------------------------------------- functions */

static cel_value index_value(evaluator *e, const cel_value *c,
                             const cel_value *i)
{
	if (c->kind == CEL_V_LIST) {
		int64_t k;
		if (i->kind == CEL_V_INT)
			k = i->i;
		else if (i->kind == CEL_V_UINT && i->u <= INT64_MAX)
			k = (int64_t)i->u;
		else if (i->kind == CEL_V_DOUBLE && i->d == trunc(i->d) &&
		         fabs(i->d) < 9e18)
			k = (int64_t)i->d;
		else
			return no_overload(e);
		if (k < 0 || (uint64_t)k >= c->list->n)
			return error_value(e,
			                   "index '%lld' out of range in list "
			                   "size '%zu'",
			                   (long long)k, c->list->n);
		return c->list->items[k];
	}
	if (c->kind == CEL_V_MAP) {
		if (!charge(e, c->map->n / 4 + 1))
			return exhausted_value(e);
		const cel_value *v = map_find(e, c->map, i);
		if (e->exhausted)
			return exhausted_value(e);
		return v ? *v : no_such_key(e, i);
	}
	return no_overload(e);
}

static cel_value call(evaluator *e, const cel_node *n, const cel_value *v)
{
	switch (n->function) {
	case CEL_F_NOT:
		return v[0].kind == CEL_V_BOOL ? bool_value(!v[0].b)
		                               : no_overload(e);
	case CEL_F_NEG:
		if (v[0].kind == CEL_V_INT) {
			if (v[0].i == INT64_MIN)
				return error_value(e, "integer overflow");
			return int_value(-v[0].i);
		}
		if (v[0].kind == CEL_V_DOUBLE)
			return (cel_value){.kind = CEL_V_DOUBLE, .d = -v[0].d};
		return no_overload(e);
	case CEL_F_EQ:
	case CEL_F_NE: {
		bool eq = values_equal(e, &v[0], &v[1]);
		if (e->exhausted)
			return exhausted_value(e);
		return bool_value(n->function == CEL_F_EQ ? eq : !eq);
	}
	case CEL_F_LT:
	case CEL_F_LE:
	case CEL_F_GT:
	case CEL_F_GE: {
		int c = cel_value_compare(&v[0], &v[1]);
		if (c == 2) {
			bool numbers = (v[0].kind == CEL_V_DOUBLE ||
			                v[1].kind == CEL_V_DOUBLE);
			if (numbers &&
			    (v[0].kind == CEL_V_DOUBLE ||
			     v[0].kind == CEL_V_INT ||
			     v[0].kind == CEL_V_UINT) &&
			    (v[1].kind == CEL_V_DOUBLE ||
			     v[1].kind == CEL_V_INT || v[1].kind == CEL_V_UINT))
				return bool_value(false); /* NaN */
			return no_overload(e);
		}
		if (!charge(e, v[0].kind == CEL_V_STRING ||
		                       v[0].kind == CEL_V_BYTES
		                   ? v[0].str.len / 16 + 1
		                   : 1))
			return exhausted_value(e);
		switch (n->function) {
		case CEL_F_LT:
			return bool_value(c < 0);
		case CEL_F_LE:
			return bool_value(c <= 0);
		case CEL_F_GT:
			return bool_value(c > 0);
		default:
			return bool_value(c >= 0);
		}
	}
	case CEL_F_IN:
		if (v[1].kind == CEL_V_LIST) {
			for (size_t i = 0; i < v[1].list->n; i++) {
				if (values_equal(e, &v[0],
				                 &v[1].list->items[i]))
					return bool_value(true);
				if (e->exhausted)
					return exhausted_value(e);
			}
			return bool_value(false);
		}
		if (v[1].kind == CEL_V_MAP) {
			bool found = map_find(e, v[1].map, &v[0]) != NULL;
			if (e->exhausted)
				return exhausted_value(e);
			return bool_value(found);
		}
		return no_overload(e);
	case CEL_F_ADD:
	case CEL_F_SUB:
	case CEL_F_MUL:
	case CEL_F_DIV:
	case CEL_F_MOD:
		return arithmetic(e, n->function, &v[0], &v[1]);
	case CEL_F_INDEX:
		return index_value(e, &v[0], &v[1]);
	case CEL_F_SIZE:
		switch (v[0].kind) {
		case CEL_V_STRING:
			if (!charge(e, v[0].str.len / 16 + 1))
				return exhausted_value(e);
			return int_value(
			    (int64_t)utf8_length(v[0].str.s, v[0].str.len));
		case CEL_V_BYTES:
			return int_value((int64_t)v[0].str.len);
		case CEL_V_LIST:
			return int_value((int64_t)v[0].list->n);
		case CEL_V_MAP:
			return int_value((int64_t)v[0].map->n);
		default:
			return no_overload(e);
		}
	case CEL_F_CONTAINS:
	case CEL_F_STARTS_WITH:
	case CEL_F_ENDS_WITH:
		return string_function(e, n->function, &v[0], &v[1]);
	case CEL_F_MATCHES:
		if (v[0].kind != CEL_V_STRING || v[1].kind != CEL_V_STRING)
			return no_overload(e);
		return regex_match(e, n, &v[0], &v[1]);
	case CEL_F_IN_CIDR: {
		if (v[0].kind != CEL_V_IPADDRESS || v[1].kind != CEL_V_STRING)
			return no_overload(e);
		cel_ip prefix;
		int bits;
		if (cel_parse_cidr(v[1].str.s, v[1].str.len, &prefix, &bits))
			return error_value(
			    e, "invalid CIDR string: `%.*s`",
			    (int)(v[1].str.len > 100 ? 100 : v[1].str.len),
			    v[1].str.s);
		return bool_value(cel_ip_in_prefix(v[0].ip, &prefix, bits));
	}
	case CEL_F_GET_FULL_YEAR:
	case CEL_F_GET_MONTH:
	case CEL_F_GET_DAY_OF_YEAR:
	case CEL_F_GET_DAY_OF_MONTH:
	case CEL_F_GET_DATE:
	case CEL_F_GET_DAY_OF_WEEK:
	case CEL_F_GET_HOURS:
	case CEL_F_GET_MINUTES:
	case CEL_F_GET_SECONDS:
	case CEL_F_GET_MILLISECONDS:
		return time_accessor(e, n->function, &v[0],
		                     n->nargs > 1 ? &v[1] : NULL);
	default:
		return convert(e, n->function, &v[0]);
	}
}

/* ----------------------------------------------------------------- macros */

typedef struct list_builder {
	cel_value *items;
	size_t n, cap;
} list_builder;

static void list_push(evaluator *e, list_builder *b, const cel_value *v)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 8;
		cel_value *items = arena_alloc(e->a, cap * sizeof(*items));
		if (b->n)
			memcpy(items, b->items, b->n * sizeof(*items));
		b->items = items;
		b->cap = cap;
	}
	b->items[b->n++] = *v;
}

static cel_value eval_macro(evaluator *e, const cel_node *n)
{
	cel_value range = eval(e, n->args[0]);
	if (undecided(&range))
		return range;
	size_t count;
	if (range.kind == CEL_V_LIST)
		count = range.list->n;
	else if (range.kind == CEL_V_MAP)
		count = range.map->n;
	else
		return no_overload(e);
	cel_value result;
	list_builder built = {0};
	bool built_result = n->macro == CEL_M_MAP || n->macro == CEL_M_FILTER;
	switch (n->macro) {
	case CEL_M_ALL:
		result = bool_value(true);
		break;
	case CEL_M_EXISTS:
		result = bool_value(false);
		break;
	case CEL_M_EXISTS_ONE:
		result = int_value(0);
		break;
	default:
		result = (cel_value){.kind = CEL_V_LIST};
		break;
	}
	for (size_t i = 0; i < count; i++) {
		if (!charge(e, 1))
			return exhausted_value(e);
		/* all / exists stop once the result is decided. */
		if (n->macro == CEL_M_ALL && result.kind == CEL_V_BOOL &&
		    !result.b)
			break;
		if (n->macro == CEL_M_EXISTS && result.kind == CEL_V_BOOL &&
		    result.b)
			break;
		const cel_value *item = range.kind == CEL_V_LIST
		                            ? &range.list->items[i]
		                            : &range.map->keys[i];
		e->slots[n->slot] = *item;
		cel_value step = eval(e, n->args[1]);
		if (e->exhausted)
			return exhausted_value(e);
		switch (n->macro) {
		case CEL_M_ALL:
		case CEL_M_EXISTS:
			result =
			    logic(e, n->macro == CEL_M_ALL, &result, &step);
			break;
		case CEL_M_EXISTS_ONE:
			if (undecided(&step))
				result = step;
			else if (step.kind != CEL_V_BOOL)
				result = no_overload(e);
			else if (step.b && result.kind == CEL_V_INT)
				result.i++;
			break;
		case CEL_M_FILTER:
			if (undecided(&step))
				result = step;
			else if (step.kind != CEL_V_BOOL)
				result = no_overload(e);
			else if (step.b && result.kind == CEL_V_LIST)
				list_push(e, &built, item);
			break;
		case CEL_M_MAP:
			if (n->nargs == 3) {
				/* map(x, filter, transform) */
				if (undecided(&step)) {
					result = step;
					break;
				}
				if (step.kind != CEL_V_BOOL) {
					result = no_overload(e);
					break;
				}
				if (!step.b || result.kind != CEL_V_LIST)
					break;
				step = eval(e, n->args[2]);
				if (e->exhausted)
					return exhausted_value(e);
			} else if (result.kind != CEL_V_LIST) {
				break;
			}
			if (undecided(&step))
				result = step;
			else
				list_push(e, &built, &step);
			break;
		}
	}
	if (n->macro == CEL_M_EXISTS_ONE && result.kind == CEL_V_INT)
		return bool_value(result.i == 1);
	if (built_result && result.kind == CEL_V_LIST) {
		cel_list *list = arena_alloc(e->a, sizeof(*list));
		list->items = built.items
		                  ? built.items
		                  : arena_alloc(e->a, sizeof(cel_value));
		list->n = built.n;
		result.list = list;
	}
	return result;
}

/* ------------------------------------------------------------------- nodes */

static cel_value eval_list(evaluator *e, const cel_node *n)
{
	bool is_map = n->kind == CEL_N_MAP;
	if (!charge(e, n->nargs + 1))
		return exhausted_value(e);
	cel_value *items =
	    arena_alloc(e->a, (n->nargs ? n->nargs : 1) * sizeof(*items));
	for (size_t i = 0; i < n->nargs; i++) {
		items[i] = eval(e, n->args[i]);
		if (undecided(&items[i]))
			return items[i];
	}
	if (!is_map) {
		cel_list *list = arena_alloc(e->a, sizeof(*list));
		list->items = items;
		list->n = n->nargs;
		return (cel_value){.kind = CEL_V_LIST, .list = list};
	}
	cel_map *map = arena_alloc(e->a, sizeof(*map));
	size_t count = n->nargs / 2;
	map->keys = arena_alloc(e->a, (count ? count : 1) * sizeof(cel_value));
	map->values =
	    arena_alloc(e->a, (count ? count : 1) * sizeof(cel_value));
	for (size_t i = 0; i < count; i++) {
		const cel_value *key = &items[2 * i];
		if (key->kind != CEL_V_STRING && key->kind != CEL_V_INT &&
		    key->kind != CEL_V_UINT && key->kind != CEL_V_BOOL)
			return error_value(e, "unsupported key type");
		if (map_find(e, map, key))
			return error_value(e, "Failed with repeated key");
		if (e->exhausted)
			return exhausted_value(e);
		map->keys[map->n] = *key;
		map->values[map->n] = items[2 * i + 1];
		map->n++;
	}
	return (cel_value){.kind = CEL_V_MAP, .map = map};
}

static cel_value eval(evaluator *e, const cel_node *n)
{
	if (!charge(e, 1))
		return exhausted_value(e);
	switch (n->kind) {
	case CEL_N_LITERAL:
		if (n->literal.kind == CEL_V_STRING ||
		    n->literal.kind == CEL_V_BYTES)
			if (!charge(e, n->literal.str.len / 64))
				return exhausted_value(e);
		return n->literal;
	case CEL_N_IDENT:
		return n->slot >= 0 ? e->slots[n->slot] : e->params[n->param];
	case CEL_N_SELECT: {
		cel_value operand = eval(e, n->args[0]);
		if (undecided(&operand))
			return operand;
		if (operand.kind != CEL_V_MAP)
			return error_value(e, "no such overload: field "
			                      "selection on a non-map value");
		cel_value key =
		    string_value(n->name, strlen(n->name), CEL_V_STRING);
		if (!charge(e, operand.map->n / 4 + 1))
			return exhausted_value(e);
		const cel_value *v = map_find(e, operand.map, &key);
		if (e->exhausted)
			return exhausted_value(e);
		if (n->test_only)
			return bool_value(v != NULL);
		return v ? *v : no_such_key(e, &key);
	}
	case CEL_N_LIST:
	case CEL_N_MAP:
		return eval_list(e, n);
	case CEL_N_MACRO:
		return eval_macro(e, n);
	case CEL_N_CALL:
		break;
	}

	/* Non-strict operators first. */
	if (n->function == CEL_F_AND || n->function == CEL_F_OR) {
		bool is_and = n->function == CEL_F_AND;
		cel_value l = eval(e, n->args[0]);
		if (l.kind == CEL_V_BOOL && l.b != is_and)
			return l;
		cel_value r = eval(e, n->args[1]);
		return logic(e, is_and, &l, &r);
	}
	if (n->function == CEL_F_CONDITIONAL) {
		cel_value c = eval(e, n->args[0]);
		if (undecided(&c))
			return c;
		if (c.kind != CEL_V_BOOL)
			return no_overload(e);
		return eval(e, n->args[c.b ? 1 : 2]);
	}
	cel_value args[3];
	for (size_t i = 0; i < n->nargs && i < 3; i++) {
		args[i] = eval(e, n->args[i]);
		if (undecided(&args[i]))
			return args[i];
	}
	if (n->nargs > 3)
		return no_overload(e);
	return call(e, n, args);
}

/* ------------------------------------------------------------------ entry */

int cel_eval_program(const cel_program *p, const cel_value *params,
                     uint64_t cost_limit, arena *a, cel_result *out,
                     pemba_error *err)
{
	evaluator e = {.p = p, .a = a, .params = params, .limit = cost_limit};
	cel_value v = eval(&e, p->root);
	memset(out, 0, sizeof(*out));
	if (e.exhausted)
		return error_set(err, PEMBA_ELIMIT,
		                 "caveat evaluation exceeded its cost limit of "
		                 "%llu",
		                 (unsigned long long)cost_limit);
	switch (v.kind) {
	case CEL_V_BOOL:
		out->outcome = v.b ? CEL_TRUE : CEL_FALSE;
		return 0;
	case CEL_V_UNKNOWN: {
		out->outcome = CEL_PARTIAL;
		out->nmissing = v.unknown->n;
		const char **names =
		    arena_alloc(a, (v.unknown->n + 1) * sizeof(*names));
		for (size_t i = 0; i < v.unknown->n; i++)
			names[i] = p->params[v.unknown->params[i]].name;
		/* Parameter indexes are sorted; names need sorting too. */
		for (size_t i = 1; i < v.unknown->n; i++)
			for (size_t j = i;
			     j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
				const char *t = names[j];
				names[j] = names[j - 1];
				names[j - 1] = t;
			}
		out->missing = names;
		return 0;
	}
	case CEL_V_ERROR:
		return error_set(err, PEMBA_EPRECONDITION,
		                 "evaluation error: %.*s", (int)v.str.len,
		                 v.str.s);
	default:
		return error_set(err, PEMBA_EPRECONDITION,
		                 "evaluation error: the expression did not "
		                 "yield a boolean");
	}
}
