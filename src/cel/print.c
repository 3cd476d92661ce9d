/*
 * print.c -- canonical text of an expression, as SpiceDB's ReadSchema
 * prints a caveat (CEL's unparser over the syntax tree):
 *
 *   - single spaces around binary operators, ", " between arguments and
 *     elements, ": " in map entries;
 *   - parentheses only where precedence needs them: an operand of lower
 *     precedence than its operator, the right operand of equal precedence
 *     for left-associative operators (not && and ||), any operand of a
 *     unary operator or receiver that is a call with two or more
 *     arguments, and operands of ?: that are themselves such calls;
 *   - strings in double quotes with Go's escapes, bytes as b"\ooo" octal
 *     escapes, doubles in Go's shortest form with ".0" when it has no
 *     point ("1000.0", "1e+20.0"), uints with a "u";
 *   - macros as written: has(m.f), l.all(x, p), l.map(x, f);
 *   - after an && or || that ends a line of 80 or more characters, a
 *     newline (the schema printer indents the next line).
 */
#include <string.h>

#include "cel/internal.h"

#define WRAP_COLUMN 80

typedef struct printer {
	strbuf *out;
	size_t line_start; /* offset in out where the current line began */
	size_t base;       /* out->len when printing started */
} printer;

static void print_node(printer *pr, const cel_node *n);

static int precedence(const cel_node *n)
{
	if (n->kind != CEL_N_CALL)
		return 0;
	switch (n->function) {
	case CEL_F_CONDITIONAL:
		return 8;
	case CEL_F_OR:
		return 7;
	case CEL_F_AND:
		return 6;
	case CEL_F_EQ:
	case CEL_F_NE:
	case CEL_F_LT:
	case CEL_F_LE:
	case CEL_F_GT:
	case CEL_F_GE:
	case CEL_F_IN:
		return 5;
	case CEL_F_ADD:
	case CEL_F_SUB:
		return 4;
	case CEL_F_MUL:
	case CEL_F_DIV:
	case CEL_F_MOD:
		return 3;
	case CEL_F_NOT:
	case CEL_F_NEG:
		return 2;
	case CEL_F_INDEX:
		return 1;
	default:
		return 0;
	}
}

static const char *operator_text(cel_function f)
{
	switch (f) {
	case CEL_F_OR:
		return "||";
	case CEL_F_AND:
		return "&&";
	case CEL_F_EQ:
		return "==";
	case CEL_F_NE:
		return "!=";
	case CEL_F_LT:
		return "<";
	case CEL_F_LE:
		return "<=";
	case CEL_F_GT:
		return ">";
	case CEL_F_GE:
		return ">=";
	case CEL_F_IN:
		return "in";
	case CEL_F_ADD:
		return "+";
	case CEL_F_SUB:
		return "-";
	case CEL_F_MUL:
		return "*";
	case CEL_F_DIV:
		return "/";
	case CEL_F_MOD:
		return "%";
	default:
		return NULL;
	}
}

/* A call with two or more arguments (CEL's "complex operator"). */
static bool is_complex(const cel_node *n)
{
	return n->kind == CEL_N_CALL && n->nargs - (n->receiver ? 1 : 0) >= 2;
}

static bool is_binary_or_ternary(const cel_node *n)
{
	if (!is_complex(n))
		return false;
	return operator_text(n->function) != NULL ||
	       n->function == CEL_F_CONDITIONAL;
}

static void print_nested(printer *pr, const cel_node *n, bool nested)
{
	if (nested)
		strbuf_putc(pr->out, '(');
	print_node(pr, n);
	if (nested)
		strbuf_putc(pr->out, ')');
}

/* Go's strconv.Quote: printable characters as they are. */
static void print_string(printer *pr, const char *s, size_t len)
{
	strbuf *out = pr->out;
	strbuf_putc(out, '"');
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)s[i];
		uint32_t code;
		size_t n = cel_utf8_decode((const unsigned char *)s + i,
		                           len - i, &code);
		if (n == 0) {
			strbuf_printf(out, "\\x%02x", c);
			i++;
			continue;
		}
		i += n;
		switch (code) {
		case '\a':
			strbuf_puts(out, "\\a");
			continue;
		case '\b':
			strbuf_puts(out, "\\b");
			continue;
		case '\f':
			strbuf_puts(out, "\\f");
			continue;
		case '\n':
			strbuf_puts(out, "\\n");
			continue;
		case '\r':
			strbuf_puts(out, "\\r");
			continue;
		case '\t':
			strbuf_puts(out, "\\t");
			continue;
		case '\v':
			strbuf_puts(out, "\\v");
			continue;
		case '\\':
			strbuf_puts(out, "\\\\");
			continue;
		case '"':
			strbuf_puts(out, "\\\"");
			continue;
		default:
			break;
		}
		/* Controls (C0, DEL, C1) and a few invisible format
		 * characters are escaped; other code points are printed. */
		if (code < 0x20 || code == 0x7F) {
			strbuf_printf(out, "\\x%02x", (unsigned)code);
		} else if ((code >= 0x80 && code < 0xA0) || code == 0xAD ||
		           (code >= 0x2028 && code <= 0x2029) ||
		           code == 0xFEFF ||
		           (code >= 0x200B && code <= 0x200F)) {
			strbuf_printf(out, "\\u%04x", (unsigned)code);
		} else if (code >= 0xE000 && code <= 0xF8FF) {
			strbuf_printf(out, "\\u%04x", (unsigned)code);
		} else {
			strbuf_append(out, s + i - n, n);
		}
	}
	strbuf_putc(out, '"');
}

static void print_literal(printer *pr, const cel_value *v)
{
	strbuf *out = pr->out;
	switch (v->kind) {
	case CEL_V_NULL:
		strbuf_puts(out, "null");
		break;
	case CEL_V_BOOL:
		strbuf_puts(out, v->b ? "true" : "false");
		break;
	case CEL_V_INT:
		strbuf_printf(out, "%lld", (long long)v->i);
		break;
	case CEL_V_UINT:
		strbuf_printf(out, "%lluu", (unsigned long long)v->u);
		break;
	case CEL_V_DOUBLE: {
		size_t start = out->len;
		cel_format_double(v->d, out);
		/* SpiceDB appends ".0" to exponent forms too ("1e+20.0"),
		 * which does not parse; we leave those alone. */
		if (!memchr(out->data + start, '.', out->len - start) &&
		    !memchr(out->data + start, 'e', out->len - start))
			strbuf_puts(out, ".0");
		break;
	}
	case CEL_V_STRING:
		print_string(pr, v->str.s, v->str.len);
		break;
	case CEL_V_BYTES:
		strbuf_puts(out, "b\"");
		for (size_t i = 0; i < v->str.len; i++)
			strbuf_printf(out, "\\%03o",
			              (unsigned char)v->str.s[i]);
		strbuf_putc(out, '"');
		break;
	default:
		break;
	}
}

static void print_args(printer *pr, cel_node *const *args, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			strbuf_puts(pr->out, ", ");
		print_node(pr, args[i]);
	}
}

static void print_binary(printer *pr, const cel_node *n)
{
	const cel_node *l = n->args[0], *r = n->args[1];
	int p = precedence(n);
	bool lparen = is_complex(l) && precedence(l) > p;
	bool rparen = is_complex(r) && precedence(r) > p;
	bool left_recursive =
	    n->function != CEL_F_AND && n->function != CEL_F_OR;
	if (!rparen && left_recursive)
		rparen = r->kind == CEL_N_CALL && precedence(r) == p;
	print_nested(pr, l, lparen);
	const char *op = operator_text(n->function);
	size_t fun_len = strlen(op) + 2; /* CEL's "_&&_" */
	if (n->function == CEL_F_IN)
		fun_len = 3; /* "@in" */
	size_t line_len = pr->out->len - pr->line_start + fun_len;
	if ((n->function == CEL_F_AND || n->function == CEL_F_OR) &&
	    line_len >= WRAP_COLUMN) {
		pr->line_start = pr->out->len;
		strbuf_putc(pr->out, ' ');
		strbuf_puts(pr->out, op);
		strbuf_putc(pr->out, '\n');
	} else {
		strbuf_putc(pr->out, ' ');
		strbuf_puts(pr->out, op);
		strbuf_putc(pr->out, ' ');
	}
	print_nested(pr, r, rparen);
}

static const char *macro_name(cel_macro m)
{
	switch (m) {
	case CEL_M_ALL:
		return "all";
	case CEL_M_EXISTS:
		return "exists";
	case CEL_M_EXISTS_ONE:
		return "exists_one";
	case CEL_M_MAP:
		return "map";
	default:
		return "filter";
	}
}

static void print_node(printer *pr, const cel_node *n)
{
	strbuf *out = pr->out;
	switch (n->kind) {
	case CEL_N_LITERAL:
		print_literal(pr, &n->literal);
		return;
	case CEL_N_IDENT:
		strbuf_puts(out, n->name);
		return;
	case CEL_N_SELECT:
		if (n->test_only)
			strbuf_puts(out, "has(");
		print_nested(pr, n->args[0],
		             !n->test_only && is_binary_or_ternary(n->args[0]));
		strbuf_putc(out, '.');
		strbuf_puts(out, n->name);
		if (n->test_only)
			strbuf_putc(out, ')');
		return;
	case CEL_N_LIST:
		strbuf_putc(out, '[');
		print_args(pr, n->args, n->nargs);
		strbuf_putc(out, ']');
		return;
	case CEL_N_MAP:
		strbuf_putc(out, '{');
		for (size_t i = 0; i + 1 < n->nargs; i += 2) {
			if (i > 0)
				strbuf_puts(out, ", ");
			print_node(pr, n->args[i]);
			strbuf_puts(out, ": ");
			print_node(pr, n->args[i + 1]);
		}
		strbuf_putc(out, '}');
		return;
	case CEL_N_MACRO:
		print_nested(pr, n->args[0], is_binary_or_ternary(n->args[0]));
		strbuf_putc(out, '.');
		strbuf_puts(out, macro_name(n->macro));
		strbuf_putc(out, '(');
		strbuf_puts(out, n->name);
		for (size_t i = 1; i < n->nargs; i++) {
			strbuf_puts(out, ", ");
			print_node(pr, n->args[i]);
		}
		strbuf_putc(out, ')');
		return;
	case CEL_N_CALL:
		break;
	}
	switch (n->function) {
	case CEL_F_CONDITIONAL:
		for (int i = 0; i < 3; i++) {
			const cel_node *a = n->args[i];
			bool nested = precedence(a) == 8 || is_complex(a);
			if (i == 1)
				strbuf_puts(out, " ? ");
			else if (i == 2)
				strbuf_puts(out, " : ");
			print_nested(pr, a, nested);
		}
		return;
	case CEL_F_NOT:
	case CEL_F_NEG: {
		strbuf_putc(out, n->function == CEL_F_NOT ? '!' : '-');
		/* `!(!a)`: CEL's printer would write `!!a`, which reads back
		 * as `a`, and `-(1)` as `-1`, a literal; the parentheses keep
		 * printing a fixed point. */
		const cel_node *a = n->args[0];
		bool nested =
		    is_complex(a) ||
		    (a->kind == CEL_N_CALL && a->function == n->function) ||
		    (a->kind == CEL_N_LITERAL &&
		     (a->literal.kind == CEL_V_INT ||
		      a->literal.kind == CEL_V_DOUBLE));
		print_nested(pr, a, nested);
		return;
	}
	case CEL_F_INDEX:
		print_nested(pr, n->args[0], is_binary_or_ternary(n->args[0]));
		strbuf_putc(out, '[');
		print_node(pr, n->args[1]);
		strbuf_putc(out, ']');
		return;
	default:
		break;
	}
	if (operator_text(n->function)) {
		print_binary(pr, n);
		return;
	}
	if (n->receiver) {
		print_nested(pr, n->args[0], is_binary_or_ternary(n->args[0]));
		strbuf_putc(out, '.');
		strbuf_puts(out, n->name);
		strbuf_putc(out, '(');
		print_args(pr, n->args + 1, n->nargs - 1);
		strbuf_putc(out, ')');
		return;
	}
	strbuf_puts(out, n->name);
	strbuf_putc(out, '(');
	print_args(pr, n->args, n->nargs);
	strbuf_putc(out, ')');
}

void cel_print_node(const cel_node *n, strbuf *out)
{
	printer pr = {.out = out, .line_start = out->len, .base = out->len};
	print_node(&pr, n);
}
