/*
 * parse.c -- CEL expression text to syntax tree.
 *
 * A hand-written lexer and recursive-descent parser for CEL's grammar:
 *
 *   expr     = or ["?" or ":" expr]
 *   or       = and {"||" and}          (balanced tree, as CEL builds it)
 *   and      = relation {"&&" relation}
 *   relation = calc {("<"|"<="|">"|">="|"=="|"!="|"in") calc}
 *   calc     = term {("+"|"-") term};  term = unary {("*"|"/"|"%") unary}
 *   unary    = member | "!"+ member | "-"+ member
 *   member   = primary {"." IDENT ["(" args ")"] | "[" expr "]"}
 *   primary  = IDENT ["(" args ")"] | "(" expr ")" | "[" list "]"
 *            | "{" map "}" | literal
 *
 * As CEL's parser does, an even run of `!` or `-` disappears, a `-`
 * directly before an int or double literal is part of the literal, and
 * `has(...)`, `all`, `exists`, `exists_one`, `map` and `filter` are macros
 * expanded here (kept as MACRO nodes so the printer shows them as
 * written).  Two limits keep hostile input off the stack: nesting of the
 * parser's recursion and the height of the tree it builds.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel/internal.h"
#include "util/error.h"

/* Height of the tree (operand chains like a+a+a... grow it without
 * recursion in the parser). */
#define CEL_MAX_HEIGHT 128

typedef enum token_kind {
	TOK_EOF,
	TOK_IDENT,
	TOK_INT,
	TOK_UINT,
	TOK_DOUBLE,
	TOK_STRING,
	TOK_BYTES,
	TOK_OR,
	TOK_AND,
	TOK_EQ,
	TOK_NE,
	TOK_LT,
	TOK_LE,
	TOK_GT,
	TOK_GE,
	TOK_IN,
	TOK_PLUS,
	TOK_MINUS,
	TOK_STAR,
	TOK_SLASH,
	TOK_PERCENT,
	TOK_BANG,
	TOK_QUESTION,
	TOK_COLON,
	TOK_DOT,
	TOK_COMMA,
	TOK_LPAREN,
	TOK_RPAREN,
	TOK_LBRACKET,
	TOK_RBRACKET,
	TOK_LBRACE,
	TOK_RBRACE,
	TOK_TRUE,
	TOK_FALSE,
	TOK_NULL,
} token_kind;

typedef struct token {
	token_kind kind;
	const char *start;
	size_t len;
	int line, column;
	/* literals */
	uint64_t integer; /* INT: magnitude (sign applied by the parser) */
	double real;
	const char *text; /* STRING/BYTES: decoded (arena) */
	size_t text_len;
} token;

typedef struct scope_var {
	const char *name;
	int slot;
} scope_var;

typedef struct parser {
	arena *a;
	cel_program *p;
	const char *text;
	size_t len, pos;
	int line, column; /* of pos */
	token tok;
	int depth;
	scope_var scope[CEL_MAX_DEPTH];
	int nscope;
	pemba_error *err;
	bool failed;
} parser;

static bool fail(parser *ps, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(parser *ps, int line, int column, const char *fmt, ...)
{
	if (ps->failed)
		return false;
	ps->failed = true;
	char message[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	error_set_at(ps->err, PEMBA_EINVAL, line, column, "Syntax error: %s",
	             message);
	return false;
}

/* ------------------------------------------------------------------ lexer */

static char peek_at(const parser *ps, size_t k)
{
	return ps->pos + k < ps->len ? ps->text[ps->pos + k] : '\0';
}

/* Advances one byte, keeping line and column (columns count code points,
 * as CEL's do). */
static void bump(parser *ps)
{
	char ch = ps->text[ps->pos++];
	if (ch == '\n') {
		ps->line++;
		ps->column = 1;
	} else if (((unsigned char)ch & 0xC0) != 0x80) {
		ps->column++;
	}
}

static bool is_ident_start(char ch)
{
	return ch == '_' || (ch >= 'a' && ch <= 'z') ||
	       (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

static int hex_value(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Reads a quoted literal at pos (after any r/b prefix). */
static bool lex_string(parser *ps, token *t, bool raw, bool bytes)
{
	char quote = peek_at(ps, 0);
	bool triple = peek_at(ps, 1) == quote && peek_at(ps, 2) == quote;
	for (int i = 0; i < (triple ? 3 : 1); i++)
		bump(ps);
	strbuf sb;
	strbuf_init(&sb);
	for (;;) {
		if (ps->pos >= ps->len) {
			strbuf_free(&sb);
			return fail(ps, t->line, t->column,
			            "unterminated string literal");
		}
		char ch = peek_at(ps, 0);
		if (ch == quote && (!triple || (peek_at(ps, 1) == quote &&
		                                peek_at(ps, 2) == quote))) {
			for (int i = 0; i < (triple ? 3 : 1); i++)
				bump(ps);
			break;
		}
		if (!triple && (ch == '\n' || ch == '\r')) {
			strbuf_free(&sb);
			return fail(ps, t->line, t->column,
			            "newline in string literal");
		}
		if (ch != '\\' || raw) {
			strbuf_putc(&sb, ch);
			bump(ps);
			continue;
		}
		int eline = ps->line, ecolumn = ps->column;
		bump(ps);
		char e = peek_at(ps, 0);
		if (ps->pos >= ps->len)
			continue; /* reported as unterminated */
		bump(ps);
		uint32_t code = 0;
		bool is_code = false; /* code point (string) or byte (bytes) */
		switch (e) {
		case 'a':
			strbuf_putc(&sb, '\a');
			break;
		case 'b':
			strbuf_putc(&sb, '\b');
			break;
		case 'f':
			strbuf_putc(&sb, '\f');
			break;
		case 'n':
			strbuf_putc(&sb, '\n');
			break;
		case 'r':
			strbuf_putc(&sb, '\r');
			break;
		case 't':
			strbuf_putc(&sb, '\t');
			break;
		case 'v':
			strbuf_putc(&sb, '\v');
			break;
		case '\\':
		case '\'':
		case '"':
		case '`':
		case '?':
			strbuf_putc(&sb, e);
			break;
		case 'x':
		case 'X':
		case 'u':
		case 'U': {
			int digits = (e == 'x' || e == 'X') ? 2
			             : e == 'u'             ? 4
			                                    : 8;
			if (bytes && (e == 'u' || e == 'U')) {
				strbuf_free(&sb);
				return fail(
				    ps, eline, ecolumn,
				    "unicode escape in a bytes literal");
			}
			for (int i = 0; i < digits; i++) {
				int v = hex_value(peek_at(ps, 0));
				if (v < 0) {
					strbuf_free(&sb);
					return fail(ps, eline, ecolumn,
					            "invalid escape sequence");
				}
				code = code * 16 + (uint32_t)v;
				bump(ps);
			}
			is_code = true;
			break;
		}
		default:
			if (e >= '0' && e <= '3' && peek_at(ps, 0) >= '0' &&
			    peek_at(ps, 0) <= '7' && peek_at(ps, 1) >= '0' &&
			    peek_at(ps, 1) <= '7') {
				code = (uint32_t)(e - '0') * 64 +
				       (uint32_t)(peek_at(ps, 0) - '0') * 8 +
				       (uint32_t)(peek_at(ps, 1) - '0');
				bump(ps);
				bump(ps);
				is_code = true;
				break;
			}
			strbuf_free(&sb);
			return fail(ps, eline, ecolumn,
			            "invalid escape sequence");
		}
		if (is_code) {
			if (bytes) {
				strbuf_putc(&sb, (char)code);
			} else if (code > 0x10FFFF ||
			           (code >= 0xD800 && code <= 0xDFFF)) {
				strbuf_free(&sb);
				return fail(ps, eline, ecolumn,
				            "invalid unicode code point");
			} else {
				cel_utf8_encode(code, &sb);
			}
		}
	}
	t->kind = bytes ? TOK_BYTES : TOK_STRING;
	t->text = arena_strndup(ps->a, sb.data, sb.len);
	t->text_len = sb.len;
	strbuf_free(&sb);
	return true;
}

static bool lex_number(parser *ps, token *t)
{
	size_t start = ps->pos;
	if (peek_at(ps, 0) == '0' &&
	    (peek_at(ps, 1) == 'x' || peek_at(ps, 1) == 'X') &&
	    hex_value(peek_at(ps, 2)) >= 0) {
		bump(ps);
		bump(ps);
		uint64_t v = 0;
		bool overflow = false;
		while (hex_value(peek_at(ps, 0)) >= 0) {
			if (v > UINT64_MAX / 16)
				overflow = true;
			v = v * 16 + (uint64_t)hex_value(peek_at(ps, 0));
			bump(ps);
		}
		t->kind = TOK_INT;
		if (peek_at(ps, 0) == 'u' || peek_at(ps, 0) == 'U') {
			bump(ps);
			t->kind = TOK_UINT;
		}
		if (overflow)
			return fail(ps, t->line, t->column,
			            "invalid int literal");
		t->integer = v;
		return true;
	}
	bool is_double = false;
	while (is_digit(peek_at(ps, 0)))
		bump(ps);
	if (peek_at(ps, 0) == '.' && is_digit(peek_at(ps, 1))) {
		is_double = true;
		bump(ps);
		while (is_digit(peek_at(ps, 0)))
			bump(ps);
	}
	if ((peek_at(ps, 0) == 'e' || peek_at(ps, 0) == 'E') &&
	    (is_digit(peek_at(ps, 1)) ||
	     ((peek_at(ps, 1) == '+' || peek_at(ps, 1) == '-') &&
	      is_digit(peek_at(ps, 2))))) {
		is_double = true;
		bump(ps);
		if (peek_at(ps, 0) == '+' || peek_at(ps, 0) == '-')
			bump(ps);
		while (is_digit(peek_at(ps, 0)))
			bump(ps);
	}
	char digits[128];
	size_t n = ps->pos - start;
	if (n >= sizeof(digits))
		return fail(ps, t->line, t->column, "number literal too long");
	memcpy(digits, ps->text + start, n);
	digits[n] = '\0';
	if (is_double) {
		t->kind = TOK_DOUBLE;
		t->real = strtod(digits, NULL);
		if (isinf(t->real))
			return fail(ps, t->line, t->column,
			            "invalid double literal");
		return true;
	}
	errno = 0;
	unsigned long long v = strtoull(digits, NULL, 10);
	if (errno == ERANGE)
		return fail(ps, t->line, t->column, "invalid int literal");
	t->integer = v;
	t->kind = TOK_INT;
	if (peek_at(ps, 0) == 'u' || peek_at(ps, 0) == 'U') {
		bump(ps);
		t->kind = TOK_UINT;
	}
	return true;
}

static bool lex(parser *ps)
{
	token *t = &ps->tok;
	for (;;) {
		char ch = peek_at(ps, 0);
		if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' ||
		    ch == '\f') {
			bump(ps);
		} else if (ch == '/' && peek_at(ps, 1) == '/') {
			while (ps->pos < ps->len && peek_at(ps, 0) != '\n')
				bump(ps);
		} else {
			break;
		}
	}
	memset(t, 0, sizeof(*t));
	t->start = ps->text + ps->pos;
	t->line = ps->line;
	t->column = ps->column;
	if (ps->pos >= ps->len) {
		t->kind = TOK_EOF;
		return true;
	}
	char ch = peek_at(ps, 0), next = peek_at(ps, 1);
	bool ok = true;
	if (is_ident_start(ch)) {
		/* String prefixes: r, b, rb, br (any case). */
		size_t k = 0;
		bool raw = false, bytes = false;
		while (k < 2) {
			char c = peek_at(ps, k);
			if ((c == 'r' || c == 'R') && !raw)
				raw = true;
			else if ((c == 'b' || c == 'B') && !bytes)
				bytes = true;
			else
				break;
			k++;
		}
		char q = peek_at(ps, k);
		if (k > 0 && (q == '"' || q == '\'')) {
			for (size_t i = 0; i < k; i++)
				bump(ps);
			ok = lex_string(ps, t, raw, bytes);
		} else {
			while (is_ident_start(peek_at(ps, 0)) ||
			       is_digit(peek_at(ps, 0)))
				bump(ps);
			size_t n = (size_t)(ps->text + ps->pos - t->start);
			t->kind = TOK_IDENT;
			if (n == 4 && memcmp(t->start, "true", 4) == 0)
				t->kind = TOK_TRUE;
			else if (n == 5 && memcmp(t->start, "false", 5) == 0)
				t->kind = TOK_FALSE;
			else if (n == 4 && memcmp(t->start, "null", 4) == 0)
				t->kind = TOK_NULL;
			else if (n == 2 && memcmp(t->start, "in", 2) == 0)
				t->kind = TOK_IN;
		}
	} else if (is_digit(ch) || (ch == '.' && is_digit(next))) {
		ok = lex_number(ps, t);
	} else if (ch == '"' || ch == '\'') {
		ok = lex_string(ps, t, false, false);
	} else {
		token_kind k;
		int width = 2;
		if (ch == '|' && next == '|')
			k = TOK_OR;
		else if (ch == '&' && next == '&')
			k = TOK_AND;
		else if (ch == '=' && next == '=')
			k = TOK_EQ;
		else if (ch == '!' && next == '=')
			k = TOK_NE;
		else if (ch == '<' && next == '=')
			k = TOK_LE;
		else if (ch == '>' && next == '=')
			k = TOK_GE;
		else {
			width = 1;
			switch (ch) {
			case '<':
				k = TOK_LT;
				break;
			case '>':
				k = TOK_GT;
				break;
			case '+':
				k = TOK_PLUS;
				break;
			case '-':
				k = TOK_MINUS;
				break;
			case '*':
				k = TOK_STAR;
				break;
			case '/':
				k = TOK_SLASH;
				break;
			case '%':
				k = TOK_PERCENT;
				break;
			case '!':
				k = TOK_BANG;
				break;
			case '?':
				k = TOK_QUESTION;
				break;
			case ':':
				k = TOK_COLON;
				break;
			case '.':
				k = TOK_DOT;
				break;
			case ',':
				k = TOK_COMMA;
				break;
			case '(':
				k = TOK_LPAREN;
				break;
			case ')':
				k = TOK_RPAREN;
				break;
			case '[':
				k = TOK_LBRACKET;
				break;
			case ']':
				k = TOK_RBRACKET;
				break;
			case '{':
				k = TOK_LBRACE;
				break;
			case '}':
				k = TOK_RBRACE;
				break;
			default: {
				uint32_t code;
				size_t n = cel_utf8_decode(
				    (const unsigned char *)t->start,
				    ps->len - ps->pos, &code);
				return fail(
				    ps, t->line, t->column,
				    "token recognition error at: '%.*s'",
				    (int)(n ? n : 1), t->start);
			}
			}
		}
		t->kind = k;
		for (int i = 0; i < width; i++)
			bump(ps);
	}
	t->len = (size_t)(ps->text + ps->pos - t->start);
	return ok;
}

/* ----------------------------------------------------------------- tree */

static const char *token_text(parser *ps, const token *t)
{
	return arena_strndup(ps->a, t->start, t->len);
}

static cel_node *new_node(parser *ps, cel_node_kind kind, int line, int column)
{
	cel_node *n = arena_alloc(ps->a, sizeof(*n));
	n->kind = kind;
	n->line = line;
	n->column = column;
	n->param = -1;
	n->slot = -1;
	return n;
}

static int height_of(const cel_node *n);

static bool set_args(parser *ps, cel_node *n, cel_node **args, size_t nargs)
{
	n->args = arena_alloc(ps->a, (nargs ? nargs : 1) * sizeof(*n->args));
	if (nargs)
		memcpy(n->args, args, nargs * sizeof(*args));
	n->nargs = nargs;
	int h = 0;
	for (size_t i = 0; i < nargs; i++)
		if (height_of(args[i]) > h)
			h = height_of(args[i]);
	n->type = (const cel_type *)(intptr_t)(h + 1); /* see height_of */
	if (h + 1 > CEL_MAX_HEIGHT)
		return fail(ps, n->line, n->column,
		            "expression nesting exceeds the maximum depth of "
		            "%d",
		            CEL_MAX_HEIGHT);
	return true;
}

/* During parsing, `type` holds the node's height (the checker overwrites
 * it with the real type); leaves have height 1. */
static int height_of(const cel_node *n)
{
	intptr_t h = (intptr_t)n->type;
	return h > 0 ? (int)h : 1;
}

static cel_node *call_node(parser *ps, cel_function f, const char *name,
                           int line, int column, cel_node **args, size_t nargs)
{
	cel_node *n = new_node(ps, CEL_N_CALL, line, column);
	n->function = f;
	n->name = name;
	if (!set_args(ps, n, args, nargs))
		return NULL;
	return n;
}

/* ---------------------------------------------------------------- grammar */

static cel_node *parse_expr(parser *ps);

static bool advance(parser *ps)
{
	return lex(ps);
}

static bool at(const parser *ps, token_kind k)
{
	return ps->tok.kind == k;
}

static bool expect(parser *ps, token_kind k, const char *what)
{
	if (!at(ps, k)) {
		if (at(ps, TOK_EOF))
			return fail(ps, ps->tok.line, ps->tok.column,
			            "mismatched input '<EOF>' expecting %s",
			            what);
		return fail(ps, ps->tok.line, ps->tok.column,
		            "mismatched input '%.*s' expecting %s",
		            (int)ps->tok.len, ps->tok.start, what);
	}
	return advance(ps);
}

static bool enter(parser *ps)
{
	if (++ps->depth > CEL_MAX_DEPTH)
		return fail(ps, ps->tok.line, ps->tok.column,
		            "expression nesting exceeds the maximum depth of "
		            "%d",
		            CEL_MAX_DEPTH);
	return true;
}

/* Comma-separated expressions up to `close`; a trailing comma only where
 * CEL allows one (list and map literals). */
static bool parse_list(parser *ps, token_kind close, bool trailing_comma,
                       bool pairs, cel_node ***out, size_t *nout)
{
	size_t cap = 0, n = 0;
	cel_node **items = NULL;
	bool ok = true;
	while (!at(ps, close)) {
		for (int k = 0; k < (pairs ? 2 : 1); k++) {
			cel_node *e = parse_expr(ps);
			if (!e) {
				ok = false;
				goto done;
			}
			if (n == cap) {
				cap = cap ? cap * 2 : 8;
				items = realloc(items, cap * sizeof(*items));
				if (!items)
					abort();
			}
			items[n++] = e;
			if (pairs && k == 0 && !expect(ps, TOK_COLON, "':'")) {
				ok = false;
				goto done;
			}
		}
		if (!at(ps, TOK_COMMA))
			break;
		if (!advance(ps)) {
			ok = false;
			goto done;
		}
		if (at(ps, close) && !trailing_comma) {
			ok = fail(ps, ps->tok.line, ps->tok.column,
			          "mismatched input ')' expecting an "
			          "expression");
			goto done;
		}
	}
	ok = expect(ps, close,
	            close == TOK_RPAREN     ? "')'"
	            : close == TOK_RBRACKET ? "']'"
	                                    : "'}'");
done:
	if (ok) {
		*out = arena_alloc(ps->a, (n ? n : 1) * sizeof(**out));
		if (n)
			memcpy(*out, items, n * sizeof(*items));
		*nout = n;
	}
	free(items);
	return ok;
}

static const struct {
	const char *name;
	cel_function f;
} function_names[] = {
    {"size", CEL_F_SIZE},
    {"contains", CEL_F_CONTAINS},
    {"startsWith", CEL_F_STARTS_WITH},
    {"endsWith", CEL_F_ENDS_WITH},
    {"matches", CEL_F_MATCHES},
    {"int", CEL_F_INT},
    {"uint", CEL_F_UINT},
    {"double", CEL_F_DOUBLE},
    {"string", CEL_F_STRING},
    {"bytes", CEL_F_BYTES},
    {"bool", CEL_F_BOOL},
    {"timestamp", CEL_F_TIMESTAMP},
    {"duration", CEL_F_DURATION},
    {"dyn", CEL_F_DYN},
    {"in_cidr", CEL_F_IN_CIDR},
    {"getFullYear", CEL_F_GET_FULL_YEAR},
    {"getMonth", CEL_F_GET_MONTH},
    {"getDayOfYear", CEL_F_GET_DAY_OF_YEAR},
    {"getDayOfMonth", CEL_F_GET_DAY_OF_MONTH},
    {"getDate", CEL_F_GET_DATE},
    {"getDayOfWeek", CEL_F_GET_DAY_OF_WEEK},
    {"getHours", CEL_F_GET_HOURS},
    {"getMinutes", CEL_F_GET_MINUTES},
    {"getSeconds", CEL_F_GET_SECONDS},
    {"getMilliseconds", CEL_F_GET_MILLISECONDS},
};

static cel_function lookup_function(const char *name)
{
	for (size_t i = 0; i < sizeof(function_names) / sizeof(*function_names);
	     i++)
		if (strcmp(function_names[i].name, name) == 0)
			return function_names[i].f;
	return CEL_F_NONE; /* the checker reports it as undeclared */
}

static const struct {
	const char *name;
	cel_macro macro;
	size_t min_args, max_args;
} macro_names[] = {
    {"all", CEL_M_ALL, 2, 2},
    {"exists", CEL_M_EXISTS, 2, 2},
    {"exists_one", CEL_M_EXISTS_ONE, 2, 2},
    {"map", CEL_M_MAP, 2, 3},
    {"filter", CEL_M_FILTER, 2, 2},
};

static int param_index(const cel_program *p, const char *name)
{
	for (size_t i = 0; i < p->nparams; i++)
		if (strcmp(p->params[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Marks a parameter as mentioned when any identifier carries its name
 * (SpiceDB counts a macro variable that shares a parameter's name). */
static void note_use(parser *ps, const char *name)
{
	int i = param_index(ps->p, name);
	if (i >= 0)
		ps->p->used[i] = true;
}

static cel_node *ident_node(parser *ps, const token *t)
{
	cel_node *n = new_node(ps, CEL_N_IDENT, t->line, t->column);
	n->name = token_text(ps, t);
	note_use(ps, n->name);
	for (int i = ps->nscope - 1; i >= 0; i--)
		if (strcmp(ps->scope[i].name, n->name) == 0) {
			n->slot = ps->scope[i].slot;
			return n;
		}
	n->param = param_index(ps->p, n->name);
	if (n->param < 0)
		n->param = -2; /* undeclared: reported by the checker */
	return n;
}

/* target.name(...) where name is a macro: parses the arguments with the
 * variable in scope. */
static cel_node *parse_macro(parser *ps, cel_node *target, const token *name,
                             const token *open, cel_macro m, size_t min_args,
                             size_t max_args)
{
	/* The first argument must be a simple name. */
	if (!at(ps, TOK_IDENT)) {
		fail(ps, ps->tok.line, ps->tok.column,
		     "argument must be a simple name");
		return NULL;
	}
	token var = ps->tok;
	if (!advance(ps))
		return NULL;
	const char *var_name = token_text(ps, &var);
	note_use(ps, var_name);
	if (ps->nscope >= CEL_MAX_DEPTH) {
		fail(ps, var.line, var.column, "macros nested too deeply");
		return NULL;
	}
	int slot = ps->nscope;
	ps->scope[ps->nscope].name = var_name;
	ps->scope[ps->nscope].slot = slot;
	ps->nscope++;
	if (ps->nscope > ps->p->nslots)
		ps->p->nslots = ps->nscope;
	cel_node *args[4] = {target};
	size_t nargs = 1;
	bool ok = true;
	while (ok && at(ps, TOK_COMMA) && nargs < 4) {
		ok = advance(ps);
		cel_node *e = ok ? parse_expr(ps) : NULL;
		if (!e)
			ok = false;
		else
			args[nargs++] = e;
	}
	ps->nscope--;
	if (!ok)
		return NULL;
	if (!expect(ps, TOK_RPAREN, "')'"))
		return NULL;
	if (nargs < min_args || nargs > max_args) {
		fail(ps, open->line, open->column,
		     "%s() macro takes %zu arguments", token_text(ps, name),
		     min_args);
		return NULL;
	}
	cel_node *n = new_node(ps, CEL_N_MACRO, open->line, open->column);
	n->macro = m;
	n->name = var_name;
	n->slot = slot;
	if (!set_args(ps, n, args, nargs))
		return NULL;
	return n;
}

static cel_node *parse_primary(parser *ps)
{
	token t = ps->tok;
	cel_node *n;
	switch (t.kind) {
	case TOK_IDENT: {
		if (!advance(ps))
			return NULL;
		if (!at(ps, TOK_LPAREN))
			return ident_node(ps, &t);
		token open = ps->tok;
		if (!advance(ps))
			return NULL;
		const char *name = token_text(ps, &t);
		if (strcmp(name, "has") == 0) {
			cel_node *arg = parse_expr(ps);
			if (!arg || !expect(ps, TOK_RPAREN, "')'"))
				return NULL;
			if (arg->kind != CEL_N_SELECT || arg->test_only) {
				fail(ps, open.line, open.column,
				     "invalid argument to has() macro");
				return NULL;
			}
			arg->test_only = true;
			arg->line = open.line;
			arg->column = open.column;
			return arg;
		}
		cel_node **args;
		size_t nargs;
		if (!parse_list(ps, TOK_RPAREN, false, false, &args, &nargs))
			return NULL;
		return call_node(ps, lookup_function(name), name, open.line,
		                 open.column, args, nargs);
	}
	case TOK_LPAREN:
		if (!advance(ps))
			return NULL;
		n = parse_expr(ps);
		if (!n || !expect(ps, TOK_RPAREN, "')'"))
			return NULL;
		return n;
	case TOK_LBRACKET:
	case TOK_LBRACE: {
		bool is_map = t.kind == TOK_LBRACE;
		if (!advance(ps))
			return NULL;
		cel_node **items;
		size_t nitems;
		if (!parse_list(ps, is_map ? TOK_RBRACE : TOK_RBRACKET, true,
		                is_map, &items, &nitems))
			return NULL;
		n = new_node(ps, is_map ? CEL_N_MAP : CEL_N_LIST, t.line,
		             t.column);
		if (!set_args(ps, n, items, nitems))
			return NULL;
		return n;
	}
	case TOK_MINUS:
	case TOK_INT:
	case TOK_UINT:
	case TOK_DOUBLE:
	case TOK_STRING:
	case TOK_BYTES:
	case TOK_TRUE:
	case TOK_FALSE:
	case TOK_NULL: {
		bool negative = false;
		if (t.kind == TOK_MINUS) {
			/* Only reached for `-` before a number literal. */
			negative = true;
			if (!advance(ps))
				return NULL;
		}
		token lit = ps->tok;
		n = new_node(ps, CEL_N_LITERAL, t.line, t.column);
		cel_value *v = &n->literal;
		switch (lit.kind) {
		case TOK_INT:
			v->kind = CEL_V_INT;
			if (negative ? lit.integer > (uint64_t)INT64_MAX + 1
			             : lit.integer > (uint64_t)INT64_MAX) {
				fail(ps, t.line, t.column,
				     "invalid int literal");
				return NULL;
			}
			v->i = negative ? (int64_t)(0 - lit.integer)
			                : (int64_t)lit.integer;
			break;
		case TOK_UINT:
			v->kind = CEL_V_UINT;
			v->u = lit.integer;
			break;
		case TOK_DOUBLE:
			v->kind = CEL_V_DOUBLE;
			v->d = negative ? -lit.real : lit.real;
			break;
		case TOK_STRING:
		case TOK_BYTES:
			v->kind =
			    lit.kind == TOK_STRING ? CEL_V_STRING : CEL_V_BYTES;
			v->str.s = lit.text;
			v->str.len = lit.text_len;
			if (v->kind == CEL_V_STRING) {
				/* \x and octal escapes give code points, so
				 * the decoded text is valid UTF-8 already. */
			}
			break;
		case TOK_TRUE:
		case TOK_FALSE:
			v->kind = CEL_V_BOOL;
			v->b = lit.kind == TOK_TRUE;
			break;
		default:
			v->kind = CEL_V_NULL;
			break;
		}
		if (!advance(ps))
			return NULL;
		return n;
	}
	case TOK_EOF:
		fail(ps, t.line, t.column,
		     "mismatched input '<EOF>' expecting an expression");
		return NULL;
	default:
		fail(ps, t.line, t.column,
		     "mismatched input '%.*s' expecting an expression",
		     (int)t.len, t.start);
		return NULL;
	}
}

static cel_node *parse_member(parser *ps)
{
	cel_node *n = parse_primary(ps);
	while (n) {
		token t = ps->tok;
		if (at(ps, TOK_DOT)) {
			if (!advance(ps))
				return NULL;
			if (!at(ps, TOK_IDENT)) {
				fail(ps, ps->tok.line, ps->tok.column,
				     "mismatched input '%.*s' expecting "
				     "IDENTIFIER",
				     (int)ps->tok.len, ps->tok.start);
				return NULL;
			}
			token name = ps->tok;
			if (!advance(ps))
				return NULL;
			if (!at(ps, TOK_LPAREN)) {
				cel_node *s = new_node(ps, CEL_N_SELECT, t.line,
				                       t.column);
				s->name = token_text(ps, &name);
				if (!set_args(ps, s, &n, 1))
					return NULL;
				n = s;
				continue;
			}
			token open = ps->tok;
			if (!advance(ps))
				return NULL;
			const char *fname = token_text(ps, &name);
			bool is_macro = false;
			for (size_t i = 0;
			     i < sizeof(macro_names) / sizeof(*macro_names);
			     i++)
				if (strcmp(macro_names[i].name, fname) == 0) {
					n = parse_macro(
					    ps, n, &name, &open,
					    macro_names[i].macro,
					    macro_names[i].min_args,
					    macro_names[i].max_args);
					is_macro = true;
					break;
				}
			if (is_macro)
				continue;
			cel_node **args;
			size_t nargs;
			if (!parse_list(ps, TOK_RPAREN, false, false, &args,
			                &nargs))
				return NULL;
			cel_node **all =
			    arena_alloc(ps->a, (nargs + 1) * sizeof(*all));
			all[0] = n;
			if (nargs)
				memcpy(all + 1, args, nargs * sizeof(*args));
			n = call_node(ps, lookup_function(fname), fname,
			              open.line, open.column, all, nargs + 1);
			if (n)
				n->receiver = true;
		} else if (at(ps, TOK_LBRACKET)) {
			if (!advance(ps))
				return NULL;
			cel_node *index = parse_expr(ps);
			if (!index || !expect(ps, TOK_RBRACKET, "']'"))
				return NULL;
			cel_node *args[2] = {n, index};
			n = call_node(ps, CEL_F_INDEX, "_[_]", t.line, t.column,
			              args, 2);
		} else {
			break;
		}
	}
	return n;
}

static cel_node *parse_unary(parser *ps)
{
	if (!enter(ps))
		return NULL;
	cel_node *n;
	token t = ps->tok;
	if (at(ps, TOK_BANG) || at(ps, TOK_MINUS)) {
		token_kind k = t.kind;
		size_t count = 0;
		/* A `-` directly before a number is part of the literal. */
		while (at(ps, k)) {
			if (k == TOK_MINUS) {
				/* Look ahead without consuming: is the next
				 * token a number? */
				parser save = *ps;
				if (!advance(&save)) {
					*ps = save;
					return NULL;
				}
				if (save.tok.kind == TOK_INT ||
				    save.tok.kind == TOK_DOUBLE)
					break;
			}
			count++;
			if (!advance(ps))
				return NULL;
		}
		n = parse_member(ps);
		if (n && count % 2 == 1) {
			cel_node *args[1] = {n};
			n = call_node(ps, k == TOK_BANG ? CEL_F_NOT : CEL_F_NEG,
			              k == TOK_BANG ? "!_" : "-_", t.line,
			              t.column, args, 1);
		}
	} else {
		n = parse_member(ps);
	}
	ps->depth--;
	return n;
}

static cel_node *binary(parser *ps, cel_function f, const char *name,
                        const token *op, cel_node *l, cel_node *r)
{
	cel_node *args[2] = {l, r};
	return call_node(ps, f, name, op->line, op->column, args, 2);
}

static cel_node *parse_term(parser *ps)
{
	cel_node *n = parse_unary(ps);
	while (n &&
	       (at(ps, TOK_STAR) || at(ps, TOK_SLASH) || at(ps, TOK_PERCENT))) {
		token op = ps->tok;
		if (!advance(ps))
			return NULL;
		cel_node *r = parse_unary(ps);
		if (!r)
			return NULL;
		n = op.kind == TOK_STAR
		        ? binary(ps, CEL_F_MUL, "_*_", &op, n, r)
		    : op.kind == TOK_SLASH
		        ? binary(ps, CEL_F_DIV, "_/_", &op, n, r)
		        : binary(ps, CEL_F_MOD, "_%_", &op, n, r);
	}
	return n;
}

static cel_node *parse_calc(parser *ps)
{
	cel_node *n = parse_term(ps);
	while (n && (at(ps, TOK_PLUS) || at(ps, TOK_MINUS))) {
		token op = ps->tok;
		if (!advance(ps))
			return NULL;
		cel_node *r = parse_term(ps);
		if (!r)
			return NULL;
		n = op.kind == TOK_PLUS
		        ? binary(ps, CEL_F_ADD, "_+_", &op, n, r)
		        : binary(ps, CEL_F_SUB, "_-_", &op, n, r);
	}
	return n;
}

static cel_node *parse_relation(parser *ps)
{
	cel_node *n = parse_calc(ps);
	for (;;) {
		if (!n)
			return NULL;
		cel_function f;
		const char *name;
		switch (ps->tok.kind) {
		case TOK_EQ:
			f = CEL_F_EQ;
			name = "_==_";
			break;
		case TOK_NE:
			f = CEL_F_NE;
			name = "_!=_";
			break;
		case TOK_LT:
			f = CEL_F_LT;
			name = "_<_";
			break;
		case TOK_LE:
			f = CEL_F_LE;
			name = "_<=_";
			break;
		case TOK_GT:
			f = CEL_F_GT;
			name = "_>_";
			break;
		case TOK_GE:
			f = CEL_F_GE;
			name = "_>=_";
			break;
		case TOK_IN:
			f = CEL_F_IN;
			name = "@in";
			break;
		default:
			return n;
		}
		token op = ps->tok;
		if (!advance(ps))
			return NULL;
		cel_node *r = parse_calc(ps);
		if (!r)
			return NULL;
		n = binary(ps, f, name, &op, n, r);
	}
}

/* Builds the balanced tree CEL builds for a chain of && or ||. */
static cel_node *balance(parser *ps, cel_function f, const char *name,
                         cel_node **terms, token *ops, size_t lo, size_t hi)
{
	size_t mid = (lo + hi + 1) / 2;
	cel_node *left = mid == lo
	                     ? terms[mid]
	                     : balance(ps, f, name, terms, ops, lo, mid - 1);
	cel_node *right = mid == hi
	                      ? terms[mid + 1]
	                      : balance(ps, f, name, terms, ops, mid + 1, hi);
	if (!left || !right)
		return NULL;
	return binary(ps, f, name, &ops[mid], left, right);
}

static cel_node *parse_chain(parser *ps, bool is_or)
{
	token_kind k = is_or ? TOK_OR : TOK_AND;
	cel_node *first = is_or ? parse_chain(ps, false) : parse_relation(ps);
	if (!first || !at(ps, k))
		return first;
	size_t cap = 8, n = 1;
	cel_node **terms = malloc(cap * sizeof(*terms));
	token *ops = malloc(cap * sizeof(*ops));
	if (!terms || !ops)
		abort();
	terms[0] = first;
	cel_node *result = NULL;
	while (at(ps, k)) {
		if (n == cap) {
			cap *= 2;
			terms = realloc(terms, cap * sizeof(*terms));
			ops = realloc(ops, cap * sizeof(*ops));
			if (!terms || !ops)
				abort();
		}
		ops[n - 1] = ps->tok;
		if (!advance(ps))
			goto done;
		terms[n] = is_or ? parse_chain(ps, false) : parse_relation(ps);
		if (!terms[n])
			goto done;
		n++;
	}
	result = balance(ps, is_or ? CEL_F_OR : CEL_F_AND,
	                 is_or ? "_||_" : "_&&_", terms, ops, 0, n - 2);
done:
	free(terms);
	free(ops);
	return result;
}

static cel_node *parse_expr(parser *ps)
{
	if (!enter(ps))
		return NULL;
	cel_node *n = parse_chain(ps, true);
	if (n && at(ps, TOK_QUESTION)) {
		token op = ps->tok;
		cel_node *args[3] = {n, NULL, NULL};
		n = NULL;
		if (advance(ps) && (args[1] = parse_chain(ps, true)) &&
		    expect(ps, TOK_COLON, "':'") && (args[2] = parse_expr(ps)))
			n = call_node(ps, CEL_F_CONDITIONAL, "_?_:_", op.line,
			              op.column, args, 3);
	}
	ps->depth--;
	return n;
}

/* Clears the heights kept in `type` while parsing. */
static void clear_heights(cel_node *n)
{
	n->type = NULL;
	for (size_t i = 0; i < n->nargs; i++)
		clear_heights(n->args[i]);
}

int cel_parse(arena *a, const char *text, size_t len, cel_program *p,
              pemba_error *err)
{
	/* Source must be valid UTF-8 without NUL bytes. */
	int line = 1, column = 1;
	for (size_t i = 0; i < len;) {
		uint32_t code;
		size_t n = cel_utf8_decode((const unsigned char *)text + i,
		                           len - i, &code);
		if (n == 0 || code == 0)
			return error_set_at(err, PEMBA_EINVAL, line, column,
			                    "Syntax error: invalid UTF-8 or "
			                    "NUL byte in the expression");
		if (code == '\n') {
			line++;
			column = 1;
		} else {
			column++;
		}
		i += n;
	}
	parser ps = {.a = a,
	             .p = p,
	             .text = text,
	             .len = len,
	             .line = 1,
	             .column = 1,
	             .err = err};
	cel_node *root = NULL;
	if (lex(&ps)) {
		root = parse_expr(&ps);
		if (root && !at(&ps, TOK_EOF)) {
			fail(&ps, ps.tok.line, ps.tok.column,
			     "extraneous input '%.*s' expecting <EOF>",
			     (int)ps.tok.len, ps.tok.start);
			root = NULL;
		}
	}
	if (!root || ps.failed) {
		if (!ps.failed)
			error_set_at(err, PEMBA_EINVAL, 1, 1,
			             "Syntax error: invalid expression");
		return PEMBA_EINVAL;
	}
	clear_heights(root);
	p->root = root;
	return 0;
}
