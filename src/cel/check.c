/*
 * check.c -- static types of a parsed expression.
 *
 * Gives every node its type and refuses what CEL's checker refuses in the
 * environment SpiceDB builds for caveats: the standard operators and
 * functions, the caveat parameter types (`uint` parameters are CEL ints
 * there, `any` is dyn, `map<T>` has string keys) and IPAddress with
 * in_cidr().  Messages are CEL's ("found no matching overload for '_==_'
 * applied to '(int, string)'", "undeclared reference to 'x' (in container
 * '')"), positioned at the node: the operator of a binary operation, the
 * `(` of a call, the `.` of a selection.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel/internal.h"
#include "util/error.h"
#include "util/xalloc.h"

typedef struct checker {
	cel_program *p;
	arena *a;
	const cel_type *slots[CEL_MAX_DEPTH];
	pemba_error *err;
} checker;

static const cel_type *fail(checker *c, const cel_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const cel_type *fail(checker *c, const cel_node *n, const char *fmt, ...)
{
	char message[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	error_set_at(c->err, PEMBA_EINVAL, n->line, n->column, "%s", message);
	return NULL;
}

static const cel_type *list_of(checker *c, const cel_type *elem)
{
	cel_type *t = arena_alloc(c->a, sizeof(*t));
	t->kind = CEL_T_LIST;
	t->elem = elem;
	return t;
}

static const cel_type *map_of(arena *a, const cel_type *key,
                              const cel_type *elem)
{
	cel_type *t = arena_alloc(a, sizeof(*t));
	t->kind = CEL_T_MAP;
	t->key = key;
	t->elem = elem;
	return t;
}

/* ----------------------------------------------------- parameter types */

static const cel_type *parse_type(arena *a, const char **s, bool declared,
                                  int depth)
{
	static const struct {
		const char *name;
		const cel_type *type;
	} simple[] = {
	    {"any", &cel_type_dyn},
	    {"bool", &cel_type_bool},
	    {"int", &cel_type_int},
	    /* SpiceDB declares uint parameters as CEL ints. */
	    {"uint", &cel_type_int},
	    {"double", &cel_type_double},
	    {"string", &cel_type_string},
	    {"bytes", &cel_type_bytes},
	    {"timestamp", &cel_type_timestamp},
	    {"duration", &cel_type_duration},
	    {"ipaddress", &cel_type_ipaddress},
	};
	if (depth > 32)
		return NULL;
	if (declared && strncmp(*s, "uint", 4) == 0 && strchr("<>,", (*s)[4])) {
		*s += 4;
		return &cel_type_uint;
	}
	size_t n = strcspn(*s, "<>,");
	const char *name = *s;
	*s += n;
	if (**s == '<') {
		(*s)++;
		const cel_type *elem = parse_type(a, s, declared, depth + 1);
		if (!elem || **s != '>')
			return NULL;
		(*s)++;
		if (n == 4 && memcmp(name, "list", 4) == 0) {
			cel_type *t = arena_alloc(a, sizeof(*t));
			t->kind = CEL_T_LIST;
			t->elem = elem;
			return t;
		}
		if (n == 3 && memcmp(name, "map", 3) == 0)
			return map_of(a, &cel_type_string, elem);
		return NULL;
	}
	for (size_t i = 0; i < sizeof(simple) / sizeof(*simple); i++)
		if (strlen(simple[i].name) == n &&
		    memcmp(simple[i].name, name, n) == 0)
			return simple[i].type;
	return NULL;
}

const cel_type *cel_type_parse(arena *a, const char *text, bool declared)
{
	const char *s = text;
	const cel_type *t = parse_type(a, &s, declared, 0);
	return t && *s == '\0' ? t : NULL;
}

/* ------------------------------------------------------------- helpers */

static bool is_dyn(const cel_type *t)
{
	return t->kind == CEL_T_DYN;
}

/* The type two values share, for list elements and conditional
 * branches: equal types, dyn when either is dyn; NULL otherwise. */
static const cel_type *join(checker *c, const cel_type *a, const cel_type *b)
{
	if (is_dyn(a) || is_dyn(b))
		return &cel_type_dyn;
	if (a->kind != b->kind)
		return NULL;
	if (a->kind == CEL_T_LIST) {
		const cel_type *e = join(c, a->elem, b->elem);
		return e ? list_of(c, e) : NULL;
	}
	if (a->kind == CEL_T_MAP) {
		const cel_type *k = join(c, a->key, b->key);
		const cel_type *v = join(c, a->elem, b->elem);
		return k && v ? map_of(c->a, k, v) : NULL;
	}
	return a;
}

/* Whether values of these types may be compared with == (CEL's (A, A)
 * overload with dyn matching anything). */
static bool comparable(checker *c, const cel_type *a, const cel_type *b)
{
	return join(c, a, b) != NULL;
}

static bool is_numeric(const cel_type *t)
{
	return t->kind == CEL_T_INT || t->kind == CEL_T_UINT ||
	       t->kind == CEL_T_DOUBLE;
}

static bool is_orderable(const cel_type *t)
{
	switch (t->kind) {
	case CEL_T_INT:
	case CEL_T_UINT:
	case CEL_T_DOUBLE:
	case CEL_T_STRING:
	case CEL_T_BYTES:
	case CEL_T_BOOL:
	case CEL_T_TIMESTAMP:
	case CEL_T_DURATION:
	case CEL_T_DYN:
		return true;
	default:
		return false;
	}
}

static bool is_kind(const cel_type *t, cel_kind k)
{
	return t->kind == k || is_dyn(t);
}

static const cel_type *no_overload(checker *c, const cel_node *n,
                                   const cel_type **args)
{
	strbuf sb;
	strbuf_init(&sb);
	size_t first = 0;
	if (n->receiver) {
		cel_type_format(args[0], &sb);
		strbuf_putc(&sb, '.');
		first = 1;
	}
	strbuf_putc(&sb, '(');
	for (size_t i = first; i < n->nargs; i++) {
		if (i > first)
			strbuf_puts(&sb, ", ");
		cel_type_format(args[i], &sb);
	}
	strbuf_putc(&sb, ')');
	fail(c, n, "found no matching overload for '%s' applied to '%s'",
	     n->name, sb.data);
	strbuf_free(&sb);
	return NULL;
}

/* --------------------------------------------------------------- calls */

static const cel_type *check_node(checker *c, cel_node *n);

static bool check_regex(checker *c, cel_node *n)
{
	const cel_node *pattern = n->args[1];
	if (pattern->kind != CEL_N_LITERAL ||
	    pattern->literal.kind != CEL_V_STRING)
		return true;
	regex_t *re = arena_alloc(c->a, sizeof(*re));
	/* An invalid constant pattern is an evaluation error, as in CEL. */
	if (cel_regex_compile(pattern->literal.str.s, pattern->literal.str.len,
	                      re) != NULL)
		return true;
	cel_regex_list *entry = arena_alloc(c->a, sizeof(*entry));
	entry->regex = re;
	entry->next = c->p->regexes;
	c->p->regexes = entry;
	n->regex = re;
	return true;
}

static const cel_type *check_call(checker *c, cel_node *n, const cel_type **t)
{
	size_t na = n->nargs;
	bool recv = n->receiver;
	switch (n->function) {
	case CEL_F_NOT:
		return is_kind(t[0], CEL_T_BOOL) ? &cel_type_bool
		                                 : no_overload(c, n, t);
	case CEL_F_NEG:
		if (t[0]->kind == CEL_T_INT || t[0]->kind == CEL_T_DOUBLE ||
		    is_dyn(t[0]))
			return t[0];
		return no_overload(c, n, t);
	case CEL_F_AND:
	case CEL_F_OR:
		return is_kind(t[0], CEL_T_BOOL) && is_kind(t[1], CEL_T_BOOL)
		           ? &cel_type_bool
		           : no_overload(c, n, t);
	case CEL_F_CONDITIONAL: {
		const cel_type *j = join(c, t[1], t[2]);
		if (!is_kind(t[0], CEL_T_BOOL) || !j)
			return no_overload(c, n, t);
		return j;
	}
	case CEL_F_EQ:
	case CEL_F_NE:
		return comparable(c, t[0], t[1]) ? &cel_type_bool
		                                 : no_overload(c, n, t);
	case CEL_F_LT:
	case CEL_F_LE:
	case CEL_F_GT:
	case CEL_F_GE:
		if (is_orderable(t[0]) && is_orderable(t[1]) &&
		    (is_dyn(t[0]) || is_dyn(t[1]) || t[0]->kind == t[1]->kind ||
		     (is_numeric(t[0]) && is_numeric(t[1]))))
			return &cel_type_bool;
		return no_overload(c, n, t);
	case CEL_F_IN:
		if (is_dyn(t[1]) ||
		    (t[1]->kind == CEL_T_LIST &&
		     comparable(c, t[0], t[1]->elem)) ||
		    (t[1]->kind == CEL_T_MAP && comparable(c, t[0], t[1]->key)))
			return &cel_type_bool;
		return no_overload(c, n, t);
	case CEL_F_ADD:
		if (is_dyn(t[0]) || is_dyn(t[1])) {
			const cel_type *o = is_dyn(t[0]) ? t[1] : t[0];
			if (o->kind == CEL_T_BOOL || o->kind == CEL_T_NULL ||
			    o->kind == CEL_T_MAP || o->kind == CEL_T_IPADDRESS)
				return no_overload(c, n, t);
			return &cel_type_dyn;
		}
		if (t[0]->kind == CEL_T_TIMESTAMP &&
		    t[1]->kind == CEL_T_DURATION)
			return &cel_type_timestamp;
		if (t[0]->kind == CEL_T_DURATION &&
		    t[1]->kind == CEL_T_TIMESTAMP)
			return &cel_type_timestamp;
		if (t[0]->kind != t[1]->kind)
			return no_overload(c, n, t);
		switch (t[0]->kind) {
		case CEL_T_INT:
		case CEL_T_UINT:
		case CEL_T_DOUBLE:
		case CEL_T_STRING:
		case CEL_T_BYTES:
		case CEL_T_DURATION:
			return t[0];
		case CEL_T_LIST: {
			const cel_type *j = join(c, t[0], t[1]);
			return j ? j : no_overload(c, n, t);
		}
		default:
			return no_overload(c, n, t);
		}
	case CEL_F_SUB:
		if (is_dyn(t[0]) || is_dyn(t[1]))
			return &cel_type_dyn;
		if (t[0]->kind == CEL_T_TIMESTAMP &&
		    t[1]->kind == CEL_T_TIMESTAMP)
			return &cel_type_duration;
		if (t[0]->kind == CEL_T_TIMESTAMP &&
		    t[1]->kind == CEL_T_DURATION)
			return &cel_type_timestamp;
		if (t[0]->kind == t[1]->kind &&
		    (is_numeric(t[0]) || t[0]->kind == CEL_T_DURATION))
			return t[0];
		return no_overload(c, n, t);
	case CEL_F_MUL:
	case CEL_F_DIV:
	case CEL_F_MOD:
		if ((is_dyn(t[0]) || is_numeric(t[0])) &&
		    (is_dyn(t[1]) || is_numeric(t[1])) &&
		    (is_dyn(t[0]) || is_dyn(t[1]) ||
		     t[0]->kind == t[1]->kind) &&
		    !(n->function == CEL_F_MOD && (t[0]->kind == CEL_T_DOUBLE ||
		                                   t[1]->kind == CEL_T_DOUBLE)))
			return is_dyn(t[0]) ? t[1] : t[0];
		return no_overload(c, n, t);
	case CEL_F_INDEX:
		if (is_dyn(t[0]))
			return &cel_type_dyn;
		if (t[0]->kind == CEL_T_LIST && is_kind(t[1], CEL_T_INT))
			return t[0]->elem;
		if (t[0]->kind == CEL_T_MAP && comparable(c, t[1], t[0]->key))
			return t[0]->elem;
		return no_overload(c, n, t);
	case CEL_F_SIZE:
		if (na == 1 &&
		    (is_dyn(t[0]) || t[0]->kind == CEL_T_STRING ||
		     t[0]->kind == CEL_T_BYTES || t[0]->kind == CEL_T_LIST ||
		     t[0]->kind == CEL_T_MAP))
			return &cel_type_int;
		return no_overload(c, n, t);
	case CEL_F_CONTAINS:
	case CEL_F_STARTS_WITH:
	case CEL_F_ENDS_WITH:
		if (recv && na == 2 && is_kind(t[0], CEL_T_STRING) &&
		    is_kind(t[1], CEL_T_STRING))
			return &cel_type_bool;
		return no_overload(c, n, t);
	case CEL_F_MATCHES:
		if (na == 2 && is_kind(t[0], CEL_T_STRING) &&
		    is_kind(t[1], CEL_T_STRING))
			return check_regex(c, n) ? &cel_type_bool : NULL;
		return no_overload(c, n, t);
	case CEL_F_INT:
	case CEL_F_UINT:
	case CEL_F_DOUBLE:
	case CEL_F_STRING:
	case CEL_F_BYTES:
	case CEL_F_BOOL:
	case CEL_F_TIMESTAMP:
	case CEL_F_DURATION:
	case CEL_F_DYN: {
		if (recv || na != 1)
			return no_overload(c, n, t);
		cel_kind k = t[0]->kind;
		bool ok = is_dyn(t[0]);
		const cel_type *result = NULL;
		switch (n->function) {
		case CEL_F_INT:
			ok |= is_numeric(t[0]) || k == CEL_T_STRING ||
			      k == CEL_T_TIMESTAMP;
			result = &cel_type_int;
			break;
		case CEL_F_UINT:
			ok |= is_numeric(t[0]) || k == CEL_T_STRING;
			result = &cel_type_uint;
			break;
		case CEL_F_DOUBLE:
			ok |= is_numeric(t[0]) || k == CEL_T_STRING;
			result = &cel_type_double;
			break;
		case CEL_F_STRING:
			ok |= is_numeric(t[0]) || k == CEL_T_STRING ||
			      k == CEL_T_BYTES || k == CEL_T_BOOL ||
			      k == CEL_T_TIMESTAMP || k == CEL_T_DURATION;
			result = &cel_type_string;
			break;
		case CEL_F_BYTES:
			ok |= k == CEL_T_STRING || k == CEL_T_BYTES;
			result = &cel_type_bytes;
			break;
		case CEL_F_BOOL:
			ok |= k == CEL_T_STRING || k == CEL_T_BOOL;
			result = &cel_type_bool;
			break;
		case CEL_F_TIMESTAMP:
			ok |= k == CEL_T_STRING || k == CEL_T_INT ||
			      k == CEL_T_TIMESTAMP;
			result = &cel_type_timestamp;
			break;
		case CEL_F_DURATION:
			ok |= k == CEL_T_STRING || k == CEL_T_DURATION;
			result = &cel_type_duration;
			break;
		default:
			ok = true;
			result = &cel_type_dyn;
			break;
		}
		return ok ? result : no_overload(c, n, t);
	}
	case CEL_F_IN_CIDR:
		if (recv && na == 2 && is_kind(t[0], CEL_T_IPADDRESS) &&
		    is_kind(t[1], CEL_T_STRING))
			return &cel_type_bool;
		return no_overload(c, n, t);
	case CEL_F_GET_HOURS:
	case CEL_F_GET_MINUTES:
	case CEL_F_GET_SECONDS:
	case CEL_F_GET_MILLISECONDS:
		if (recv && na == 1 && t[0]->kind == CEL_T_DURATION)
			return &cel_type_int;
		/* fall through */
	case CEL_F_GET_FULL_YEAR:
	case CEL_F_GET_MONTH:
	case CEL_F_GET_DAY_OF_YEAR:
	case CEL_F_GET_DAY_OF_MONTH:
	case CEL_F_GET_DATE:
	case CEL_F_GET_DAY_OF_WEEK:
		if (recv &&
		    (na == 1 || (na == 2 && is_kind(t[1], CEL_T_STRING))) &&
		    is_kind(t[0], CEL_T_TIMESTAMP))
			return &cel_type_int;
		return no_overload(c, n, t);
	default:
		return fail(c, n,
		            "undeclared reference to '%s' (in container "
		            "'')",
		            n->name);
	}
}

static const cel_type *check_macro(checker *c, cel_node *n)
{
	const cel_type *range = check_node(c, n->args[0]);
	if (!range)
		return NULL;
	const cel_type *var;
	if (range->kind == CEL_T_LIST)
		var = range->elem;
	else if (range->kind == CEL_T_MAP)
		var = range->key;
	else if (is_dyn(range))
		var = &cel_type_dyn;
	else {
		strbuf sb;
		strbuf_init(&sb);
		cel_type_format(range, &sb);
		fail(c, n->args[0],
		     "expression of type '%s' cannot be range of a "
		     "comprehension (must be list, map, or dynamic)",
		     sb.data);
		strbuf_free(&sb);
		return NULL;
	}
	c->slots[n->slot] = var;
	const cel_type *t[3] = {NULL, NULL, NULL};
	for (size_t i = 1; i < n->nargs; i++)
		if (!(t[i - 1] = check_node(c, n->args[i])))
			return NULL;
	/* Predicates: all, exists, exists_one, filter, map's filter. */
	bool has_predicate = n->macro != CEL_M_MAP || n->nargs == 3;
	if (has_predicate && !is_kind(t[0], CEL_T_BOOL)) {
		const cel_type *args[2] = {&cel_type_bool, t[0]};
		cel_node fake = *n->args[1];
		fake.name = n->macro == CEL_M_EXISTS ? "_||_" : "_&&_";
		fake.receiver = false;
		fake.nargs = 2;
		if (n->macro == CEL_M_EXISTS_ONE || n->macro == CEL_M_FILTER ||
		    n->macro == CEL_M_MAP)
			fake.name = "_?_:_";
		return no_overload(c, &fake, args);
	}
	switch (n->macro) {
	case CEL_M_MAP:
		return list_of(c, t[n->nargs == 3 ? 1 : 0]);
	case CEL_M_FILTER:
		return list_of(c, var);
	default:
		return &cel_type_bool;
	}
}

static const cel_type *check_node(checker *c, cel_node *n)
{
	const cel_type *type = NULL;
	switch (n->kind) {
	case CEL_N_LITERAL:
		switch (n->literal.kind) {
		case CEL_V_NULL:
			type = &cel_type_null;
			break;
		case CEL_V_BOOL:
			type = &cel_type_bool;
			break;
		case CEL_V_INT:
			type = &cel_type_int;
			break;
		case CEL_V_UINT:
			type = &cel_type_uint;
			break;
		case CEL_V_DOUBLE:
			type = &cel_type_double;
			break;
		case CEL_V_STRING:
			type = &cel_type_string;
			break;
		default:
			type = &cel_type_bytes;
			break;
		}
		break;
	case CEL_N_IDENT:
		if (n->slot >= 0)
			type = c->slots[n->slot];
		else if (n->param >= 0)
			type = c->p->param_types[n->param];
		else
			return fail(c, n,
			            "undeclared reference to '%s' (in "
			            "container '')",
			            n->name);
		break;
	case CEL_N_SELECT: {
		const cel_type *operand = check_node(c, n->args[0]);
		if (!operand)
			return NULL;
		if (is_dyn(operand))
			type = &cel_type_dyn;
		else if (operand->kind == CEL_T_MAP &&
		         (is_dyn(operand->key) ||
		          operand->key->kind == CEL_T_STRING))
			type = operand->elem;
		else {
			strbuf sb;
			strbuf_init(&sb);
			cel_type_format(operand, &sb);
			fail(c, n, "type '%s' does not support field selection",
			     sb.data);
			strbuf_free(&sb);
			return NULL;
		}
		if (n->test_only)
			type = &cel_type_bool;
		break;
	}
	case CEL_N_LIST:
	case CEL_N_MAP: {
		bool is_map = n->kind == CEL_N_MAP;
		const cel_type *elem = NULL, *key = NULL;
		for (size_t i = 0; i < n->nargs; i++) {
			const cel_type *t = check_node(c, n->args[i]);
			if (!t)
				return NULL;
			const cel_type **slot =
			    is_map && i % 2 == 0 ? &key : &elem;
			const cel_type *j = *slot ? join(c, *slot, t) : t;
			*slot = j ? j : &cel_type_dyn;
		}
		if (!elem)
			elem = &cel_type_dyn;
		if (!key)
			key = &cel_type_dyn;
		type = is_map ? map_of(c->a, key, elem) : list_of(c, elem);
		break;
	}
	case CEL_N_CALL: {
		const cel_type *t[8];
		const cel_type **args =
		    n->nargs <= 8 ? t
		                  : arena_alloc(c->a, n->nargs * sizeof(*args));
		for (size_t i = 0; i < n->nargs; i++)
			if (!(args[i] = check_node(c, n->args[i])))
				return NULL;
		type = check_call(c, n, args);
		break;
	}
	case CEL_N_MACRO:
		type = check_macro(c, n);
		break;
	}
	n->type = type;
	return type;
}

int cel_check(cel_program *p, pemba_error *err)
{
	checker c = {.p = p, .a = p->arena, .err = err};
	const cel_type *t = check_node(&c, p->root);
	if (!t)
		return PEMBA_EINVAL;
	if (t->kind != CEL_T_BOOL) {
		strbuf sb;
		strbuf_init(&sb);
		cel_type_format(t, &sb);
		error_set_at(err, PEMBA_EINVAL, 1, 1,
		             "caveat expression must result in a boolean "
		             "value: found `%s`",
		             sb.data);
		strbuf_free(&sb);
		return PEMBA_EINVAL;
	}
	return 0;
}
