/*
 * parser.c -- recursive-descent parser for SpiceDB's schema language.
 *
 * Grammar (terminators are `;` or a newline that follows an identifier,
 * keyword, `}`, `)` or `*`; see lexer.h):
 *
 *   schema      := { [terminator] ( use | definition | caveat ) }
 *   use         := "use" IDENT                  (only `expiration`)
 *   definition  := "definition" path "{" { [member] terminator } "}"
 *   member      := relation | permission
 *   relation    := "relation" IDENT ":" type { "|" type }
 *   type        := path [ ":" "*" | "#" ( IDENT | "..." ) ]
 *                  [ "with" ( path [ "and" "expiration" ] | "expiration" ) ]
 *   permission  := "permission" IDENT "=" exclusion
 *   exclusion   := intersection { "-" intersection }    (left-assoc.)
 *   intersection:= union { "&" union }
 *   union       := operand { "+" operand }
 *   operand     := "nil" | "(" exclusion ")" | IDENT [ arrow ]
 *   arrow       := "->" IDENT | "." ( "any" | "all" ) "(" IDENT ")"
 *   caveat      := "caveat" path "(" param { "," param } ")" "{" CEL "}"
 *   param       := IDENT ctype
 *   ctype       := IDENT [ "<" ctype { "," ctype } ">" ]
 *   path        := IDENT { "/" IDENT }
 *
 * The precedence (exclusion loosest, union tightest) is SpiceDB's.  The
 * parser builds the schema structs directly in the schema's arena; every
 * syntax error stops parsing with PEMBA_EINVAL and a message
 * "parse error at L:C: expected X, found Y".
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "schema/internal.h"
#include "schema/lexer.h"
#include "util/error.h"

typedef struct parser {
	lexer lx;
	token tok; /* the current token */
	arena *a;
	schema *s;
	pemba_error *err;
	unsigned flags;       /* `use` flags declared (SCHEMA_FLAG_*) */
	bool seen_definition; /* a definition or caveat was parsed */
	/* top-level items, grown in the arena */
	schema_item *items;
	size_t nitems, items_cap;
	size_t definitions_cap, caveats_cap;
} parser;

/* ----------------------------------------------------------- helpers */

/* Grows an arena-backed array so that index n fits; returns the array. */
static void *grow(arena *a, void *array, size_t n, size_t *cap, size_t elem)
{
	if (n < *cap)
		return array;
	size_t ncap = *cap ? *cap * 2 : 4;
	void *fresh = arena_alloc(a, ncap * elem);
	if (*cap)
		memcpy(fresh, array, *cap * elem);
	*cap = ncap;
	return fresh;
}

static void advance(parser *p)
{
	p->tok = lexer_next(&p->lx);
}

static bool fail_at(parser *p, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail_at(parser *p, int line, int column, const char *fmt, ...)
{
	char detail[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	error_set_at(p->err, PEMBA_EINVAL, line, column,
	             "parse error at %d:%d: %s", line, column, detail);
	return false;
}

/* Reports that `what` was expected at the current token. */
static bool expected(parser *p, const char *what)
{
	const token *t = &p->tok;
	if (t->kind == TOKEN_ERROR) {
		unsigned char c = t->offset < p->lx.len
		                      ? (unsigned char)p->lx.src[t->offset]
		                      : 0;
		if (c >= 0x21 && c < 0x7f &&
		    strcmp(t->text, "unrecognized "
		                    "character") == 0)
			return fail_at(p, t->line, t->column,
			               "unrecognized character `%c`", c);
		if (strcmp(t->text, "unrecognized character") == 0)
			return fail_at(p, t->line, t->column,
			               "unrecognized character (byte 0x%02x)",
			               c);
		return fail_at(p, t->line, t->column, "%.*s", (int)t->len,
		               t->text);
	}
	return fail_at(p, t->line, t->column, "expected %s, found %s", what,
	               token_describe(p->a, t));
}

static bool is_word(const token *t, const char *word)
{
	size_t n = strlen(word);
	return t->kind == TOKEN_IDENT && t->len == n &&
	       memcmp(t->text, word, n) == 0;
}

/* Whether the current token is keyword `word` under the active flags. */
static bool at_keyword(const parser *p, const char *word)
{
	return is_word(&p->tok, word) &&
	       schema_is_keyword(p->tok.text, p->tok.len, p->flags);
}

static bool at(const parser *p, token_kind k)
{
	return p->tok.kind == k;
}

static bool expect(parser *p, token_kind k, const char *what)
{
	if (!at(p, k))
		return expected(p, what);
	advance(p);
	return true;
}

static bool at_terminator(const parser *p)
{
	return at(p, TOKEN_SEMICOLON) || at(p, TOKEN_NEWLINE);
}

/* Consumes an identifier that is not a keyword; *out is an arena copy. */
static bool identifier(parser *p, const char *what, const char **out)
{
	if (!at(p, TOKEN_IDENT) ||
	    schema_is_keyword(p->tok.text, p->tok.len, p->flags))
		return expected(p, what);
	*out = arena_strndup(p->a, p->tok.text, p->tok.len);
	advance(p);
	return true;
}

/* path := IDENT { "/" IDENT } */
static bool type_path(parser *p, const char *what, const char **out)
{
	strbuf sb;
	strbuf_init(&sb);
	for (;;) {
		if (!at(p, TOKEN_IDENT) ||
		    schema_is_keyword(p->tok.text, p->tok.len, p->flags)) {
			strbuf_free(&sb);
			return expected(p, what);
		}
		strbuf_append(&sb, p->tok.text, p->tok.len);
		advance(p);
		if (!at(p, TOKEN_SLASH))
			break;
		strbuf_putc(&sb, '/');
		advance(p);
	}
	*out = arena_strndup(p->a, sb.data, sb.len);
	strbuf_free(&sb);
	return true;
}

/* Copies text with every line trimmed of surrounding blanks; leading and
 * trailing empty lines dropped.  Used for comments (as SpiceDB normalizes
 * them) and caveat expressions (so that printing is a fixed point). */
static char *trim_lines(arena *a, const char *text, size_t len)
{
	strbuf sb;
	strbuf_init(&sb);
	size_t i = 0;
	while (i <= len) {
		size_t end = i;
		while (end < len && text[end] != '\n' && text[end] != '\r')
			end++;
		size_t b = i, e = end;
		while (b < e && (text[b] == ' ' || text[b] == '\t'))
			b++;
		while (e > b && (text[e - 1] == ' ' || text[e - 1] == '\t'))
			e--;
		if (sb.len > 0 || e > b) {
			if (sb.len > 0)
				strbuf_putc(&sb, '\n');
			strbuf_append(&sb, text + b, e - b);
		}
		if (end < len && text[end] == '\r' && end + 1 < len &&
		    text[end + 1] == '\n')
			end++;
		i = end + 1;
	}
	/* Drop trailing empty lines. */
	while (sb.len > 0 && sb.data[sb.len - 1] == '\n')
		sb.data[--sb.len] = '\0';
	char *out = arena_strndup(a, sb.data, sb.len);
	strbuf_free(&sb);
	return out;
}

/* Turns the comments before a keyword into the comments/doc fields. */
static void take_comments(parser *p, const lexer_comment *list,
                          const char ***comments, size_t *ncomments,
                          const char **doc)
{
	size_t n = 0;
	for (const lexer_comment *c = list; c; c = c->next)
		n++;
	*ncomments = n;
	*comments = NULL;
	*doc = NULL;
	if (n == 0)
		return;
	const char **array = arena_alloc(p->a, n * sizeof(*array));
	strbuf sb;
	strbuf_init(&sb);
	size_t i = 0;
	for (const lexer_comment *c = list; c; c = c->next, i++) {
		array[i] = trim_lines(p->a, c->text, c->len);
		if (i > 0)
			strbuf_putc(&sb, '\n');
		strbuf_puts(&sb, array[i]);
	}
	*comments = array;
	*doc = arena_strndup(p->a, sb.data, sb.len);
	strbuf_free(&sb);
}

/* ------------------------------------------------------- expressions */

static schema_expr *new_expr(parser *p, schema_expr_kind kind, int line,
                             int column)
{
	schema_expr *e = arena_alloc(p->a, sizeof(*e));
	e->kind = kind;
	e->line = line;
	e->column = column;
	return e;
}

static bool too_deep(parser *p, int line, int column)
{
	return fail_at(p, line, column,
	               "expression nesting exceeds the maximum depth of %d",
	               SCHEMA_MAX_EXPR_DEPTH);
}

static schema_expr *parse_exclusion(parser *p, int nesting, int *height);

/* operand := "nil" | "(" exclusion ")" | IDENT [ arrow ] */
static schema_expr *parse_operand(parser *p, int nesting, int *height)
{
	token start = p->tok;
	*height = 1;

	if (at(p, TOKEN_LPAREN)) {
		if (nesting + 1 > SCHEMA_MAX_EXPR_DEPTH) {
			too_deep(p, start.line, start.column);
			return NULL;
		}
		advance(p);
		schema_expr *inner = parse_exclusion(p, nesting + 1, height);
		if (!inner)
			return NULL;
		if (!expect(p, TOKEN_RPAREN, "`)`"))
			return NULL;
		return inner;
	}
	if (at_keyword(p, "nil")) {
		advance(p);
		return new_expr(p, SCHEMA_EXPR_NIL, start.line, start.column);
	}
	if (at_keyword(p, "self")) {
		fail_at(p, start.line, start.column,
		        "`self` in permissions is not supported");
		return NULL;
	}
	const char *name;
	if (!identifier(p, "a relation or permission name, `nil` or `(`",
	                &name))
		return NULL;
	if (!at(p, TOKEN_ARROW) && !at(p, TOKEN_PERIOD)) {
		schema_expr *e =
		    new_expr(p, SCHEMA_EXPR_REF, start.line, start.column);
		e->name = name;
		return e;
	}

	schema_expr *e;
	if (at(p, TOKEN_ARROW)) {
		advance(p);
		e = new_expr(p, SCHEMA_EXPR_ARROW, start.line, start.column);
		if (!identifier(p, "a relation or permission name after `->`",
		                &e->target))
			return NULL;
	} else {
		advance(p);
		token fn = p->tok;
		const char *function;
		if (!identifier(p, "`any` or `all`", &function))
			return NULL;
		bool any = strcmp(function, "any") == 0;
		if (!any && strcmp(function, "all") != 0) {
			fail_at(p, fn.line, fn.column,
			        "expected `any` or `all` for arrow function, "
			        "found `%s`",
			        function);
			return NULL;
		}
		e = new_expr(
		    p, any ? SCHEMA_EXPR_ARROW_ANY : SCHEMA_EXPR_ARROW_ALL,
		    start.line, start.column);
		if (!expect(p, TOKEN_LPAREN, "`(`"))
			return NULL;
		if (!identifier(p, "a relation or permission name", &e->target))
			return NULL;
		if (!expect(p, TOKEN_RPAREN, "`)`"))
			return NULL;
	}
	e->name = name;
	if (at(p, TOKEN_ARROW) || at(p, TOKEN_PERIOD)) {
		fail_at(p, start.line, start.column,
		        "nested arrows not yet supported");
		return NULL;
	}
	return e;
}

/* Parses `operand { op operand }` for the flattening operators (+ and &).
 * A parenthesized operand of the same operator is spliced in, as SpiceDB's
 * compiler flattens such chains. */
static schema_expr *parse_chain(parser *p, int nesting, int *height,
                                schema_expr_kind kind)
{
	token_kind op = kind == SCHEMA_EXPR_UNION ? TOKEN_PLUS : TOKEN_AMP;
	token start = p->tok;
	int h;
	schema_expr *first =
	    kind == SCHEMA_EXPR_UNION
	        ? parse_operand(p, nesting, &h)
	        : parse_chain(p, nesting, &h, SCHEMA_EXPR_UNION);
	if (!first)
		return NULL;
	if (!at(p, op)) {
		*height = h;
		return first;
	}

	schema_expr **children = NULL;
	size_t n = 0, cap = 0;
	int max_child = 0;
	schema_expr *operand = first;
	for (;;) {
		/* Splice a same-operator operand; its height drops by one. */
		if (operand->kind == kind) {
			for (size_t i = 0; i < operand->nchildren; i++) {
				children = grow(p->a, children, n, &cap,
				                sizeof(*children));
				children[n++] = operand->children[i];
			}
			h--;
		} else {
			children =
			    grow(p->a, children, n, &cap, sizeof(*children));
			children[n++] = operand;
		}
		if (h > max_child)
			max_child = h;
		if (!at(p, op))
			break;
		advance(p);
		operand = kind == SCHEMA_EXPR_UNION
		              ? parse_operand(p, nesting, &h)
		              : parse_chain(p, nesting, &h, SCHEMA_EXPR_UNION);
		if (!operand)
			return NULL;
	}
	if (max_child + 1 > SCHEMA_MAX_EXPR_DEPTH) {
		too_deep(p, start.line, start.column);
		return NULL;
	}
	schema_expr *e = new_expr(p, kind, first->line, first->column);
	e->line = start.line;
	e->column = start.column;
	e->children = children;
	e->nchildren = n;
	*height = max_child + 1;
	return e;
}

/* exclusion := intersection { "-" intersection }, left-associative. */
static schema_expr *parse_exclusion(parser *p, int nesting, int *height)
{
	token start = p->tok;
	int hl, hr;
	schema_expr *left = parse_chain(p, nesting, &hl, SCHEMA_EXPR_INTERSECT);
	if (!left)
		return NULL;
	while (at(p, TOKEN_MINUS)) {
		advance(p);
		schema_expr *right =
		    parse_chain(p, nesting, &hr, SCHEMA_EXPR_INTERSECT);
		if (!right)
			return NULL;
		int h = (hl > hr ? hl : hr) + 1;
		if (h > SCHEMA_MAX_EXPR_DEPTH) {
			too_deep(p, start.line, start.column);
			return NULL;
		}
		schema_expr *e =
		    new_expr(p, SCHEMA_EXPR_EXCLUDE, start.line, start.column);
		e->children = arena_alloc(p->a, 2 * sizeof(*e->children));
		e->children[0] = left;
		e->children[1] = right;
		e->nchildren = 2;
		left = e;
		hl = h;
	}
	*height = hl;
	return left;
}

/* --------------------------------------------------------- relations */

/* type := path [ ":" "*" | "#" ( IDENT | "..." ) ] [ "with" ... ] */
static bool parse_allowed_type(parser *p, schema_allowed_type *t)
{
	t->line = p->tok.line;
	t->column = p->tok.column;
	if (!type_path(p, "a definition name", &t->type))
		return false;

	if (at(p, TOKEN_COLON)) {
		advance(p);
		if (!expect(p, TOKEN_STAR, "`*`"))
			return false;
		t->wildcard = true;
	} else if (at(p, TOKEN_HASH)) {
		advance(p);
		if (at(p, TOKEN_ELLIPSIS)) {
			advance(p); /* T#... is T itself */
		} else if (!identifier(p, "a relation name or `...`",
		                       &t->relation)) {
			return false;
		}
	}

	if (!at_keyword(p, "with"))
		return true;
	advance(p);
	if (!at_keyword(p, "expiration")) {
		if (!type_path(p, "a caveat name", &t->caveat))
			return false;
		if (!at_keyword(p, "and"))
			return true;
		advance(p);
		/* SpiceDB accepts a dangling `and` (`user with c and`) and
		 * drops it. */
		if (!at_keyword(p, "expiration"))
			return true;
	}
	advance(p);
	t->expiration = true;
	return true;
}

static schema_relation *new_member(parser *p, schema_definition *d, size_t *cap)
{
	schema_relation *r = arena_alloc(p->a, sizeof(*r));
	r->line = p->tok.line;
	r->column = p->tok.column;
	r->definition = d;
	take_comments(p, p->tok.comments, &r->comments, &r->ncomments, &r->doc);
	d->relations =
	    grow(p->a, d->relations, d->nrelations, cap, sizeof(*d->relations));
	r->index = (int)d->nrelations;
	d->relations[d->nrelations++] = r;
	advance(p); /* the keyword */
	return r;
}

static bool parse_relation(parser *p, schema_definition *d, size_t *cap)
{
	schema_relation *r = new_member(p, d, cap);
	if (!identifier(p, "a relation name", &r->name))
		return false;
	if (!expect(p, TOKEN_COLON, "`:`"))
		return false;
	size_t tcap = 0;
	for (;;) {
		r->types =
		    grow(p->a, r->types, r->ntypes, &tcap, sizeof(*r->types));
		schema_allowed_type *t = &r->types[r->ntypes];
		memset(t, 0, sizeof(*t));
		if (!parse_allowed_type(p, t))
			return false;
		r->ntypes++;
		if (!at(p, TOKEN_PIPE))
			return true;
		advance(p);
	}
}

static bool parse_permission(parser *p, schema_definition *d, size_t *cap)
{
	schema_relation *r = new_member(p, d, cap);
	r->is_permission = true;
	if (!identifier(p, "a permission name", &r->name))
		return false;
	if (!expect(p, TOKEN_EQUALS, "`=`"))
		return false;
	int height;
	r->expr = parse_exclusion(p, 0, &height);
	return r->expr != NULL;
}

/* ------------------------------------------------------- top level */

static void add_item(parser *p, bool is_caveat, void *ptr)
{
	p->items =
	    grow(p->a, p->items, p->nitems, &p->items_cap, sizeof(*p->items));
	p->items[p->nitems].is_caveat = is_caveat;
	p->items[p->nitems].ptr = ptr;
	p->nitems++;
}

static bool parse_definition(parser *p)
{
	schema *s = p->s;
	schema_definition *d = arena_alloc(p->a, sizeof(*d));
	d->line = p->tok.line;
	d->column = p->tok.column;
	take_comments(p, p->tok.comments, &d->comments, &d->ncomments, &d->doc);
	advance(p);
	p->seen_definition = true;
	if (!type_path(p, "a definition name", &d->name))
		return false;

	if (!expect(p, TOKEN_LBRACE, "`{`"))
		return false;

	size_t cap = 0;
	for (;;) {
		if (at(p, TOKEN_RBRACE)) {
			advance(p);
			break;
		}
		if (at(p, TOKEN_EOF))
			return expected(p, "`}`");
		if (at_keyword(p, "relation")) {
			if (!parse_relation(p, d, &cap))
				return false;
		} else if (at_keyword(p, "permission")) {
			if (!parse_permission(p, d, &cap))
				return false;
		} else if (!at_terminator(p)) {
			return expected(p, "`relation`, `permission` or `}`");
		}
		if (at_terminator(p))
			advance(p);
		else if (!at(p, TOKEN_EOF))
			return expected(p, "a newline or `;` ending the "
			                   "statement");
	}

	s->definitions = grow(p->a, s->definitions, s->ndefinitions,
	                      &p->definitions_cap, sizeof(*s->definitions));
	d->index = (int)s->ndefinitions;
	s->definitions[s->ndefinitions++] = d;
	add_item(p, false, d);
	return true;
}

/* ctype := IDENT [ "<" ctype { "," ctype } ">" ], normalized into sb.
 * As in SpiceDB, the generic arguments of a type that takes none (`int<x>`)
 * are checked and then dropped: `map<int<string>>` is `map<int>`. */
static bool parse_caveat_type(parser *p, int depth, strbuf *sb,
                              const char *param, const char *caveat,
                              const token *param_tok)
{
	if (depth > SCHEMA_MAX_TYPE_DEPTH)
		return fail_at(p, p->tok.line, p->tok.column,
		               "caveat parameter type nesting exceeds the "
		               "maximum depth of %d",
		               SCHEMA_MAX_TYPE_DEPTH);
	const char *name;
	if (!identifier(p, "a parameter type", &name))
		return false;
	strbuf args;
	strbuf_init(&args);
	size_t nargs = 0;
	if (at(p, TOKEN_LESS)) {
		advance(p);
		for (;;) {
			if (nargs > 0)
				strbuf_puts(&args, ", ");
			if (!parse_caveat_type(p, depth + 1, &args, param,
			                       caveat, param_tok)) {
				strbuf_free(&args);
				return false;
			}
			nargs++;
			if (!at(p, TOKEN_COMMA))
				break;
			advance(p);
		}
		if (!expect(p, TOKEN_GREATER, "`>` or `,`")) {
			strbuf_free(&args);
			return false;
		}
	}

	static const char *const simple[] = {
	    "any",    "bool",  "string",   "int",       "uint",
	    "double", "bytes", "duration", "timestamp", "ipaddress",
	};
	bool generic = strcmp(name, "list") == 0 || strcmp(name, "map") == 0;
	bool known = generic;
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
		if (strcmp(name, simple[i]) == 0)
			known = true;
	bool ok = true;
	if (!known)
		ok = fail_at(p, param_tok->line, param_tok->column,
		             "invalid type for caveat parameter `%s` on "
		             "caveat `%s`: unknown type `%s`",
		             param, caveat, name);
	else if (generic && nargs != 1)
		ok = fail_at(p, param_tok->line, param_tok->column,
		             "invalid type for caveat parameter `%s` on "
		             "caveat `%s`: type `%s` requires 1 generic "
		             "types; found %zu",
		             param, caveat, name, nargs);
	strbuf_puts(sb, name);
	if (ok && generic) {
		strbuf_putc(sb, '<');
		strbuf_append(sb, args.data, args.len);
		strbuf_putc(sb, '>');
	}
	strbuf_free(&args);
	return ok;
}

static bool parse_caveat(parser *p)
{
	schema *s = p->s;
	schema_caveat *c = arena_alloc(p->a, sizeof(*c));
	c->line = p->tok.line;
	c->column = p->tok.column;
	take_comments(p, p->tok.comments, &c->comments, &c->ncomments, &c->doc);
	advance(p);
	p->seen_definition = true;
	if (!type_path(p, "a caveat name", &c->name))
		return false;
	if (!expect(p, TOKEN_LPAREN, "`(`"))
		return false;

	size_t cap = 0;
	for (;;) {
		token param_tok = p->tok;
		schema_caveat_param param = {0};
		param.line = param_tok.line;
		param.column = param_tok.column;
		if (!identifier(p, "a parameter name", &param.name))
			return false;
		for (size_t i = 0; i < c->nparams; i++)
			if (strcmp(c->params[i].name, param.name) == 0)
				return fail_at(
				    p, param_tok.line, param_tok.column,
				    "duplicate parameter `%s` defined "
				    "on caveat `%s`",
				    param.name, c->name);
		strbuf sb;
		strbuf_init(&sb);
		bool ok = parse_caveat_type(p, 0, &sb, param.name, c->name,
		                            &param_tok);
		param.type = arena_strndup(p->a, sb.data, sb.len);
		strbuf_free(&sb);
		if (!ok)
			return false;
		c->params =
		    grow(p->a, c->params, c->nparams, &cap, sizeof(*c->params));
		c->params[c->nparams++] = param;
		if (!at(p, TOKEN_COMMA))
			break;
		advance(p);
	}
	if (!expect(p, TOKEN_RPAREN, "`,` or `)`"))
		return false;

	/* The body is CEL, captured raw: the lexer has not read past `{`. */
	if (!at(p, TOKEN_LBRACE))
		return expected(p, "`{`");
	token open = p->tok;
	const char *body;
	size_t body_len;
	int bad_line, bad_column;
	const char *problem = lexer_capture_braced(&p->lx, &body, &body_len,
	                                           &bad_line, &bad_column);
	if (problem && strncmp(problem, "unterminated", 12) == 0)
		return fail_at(p, open.line, open.column,
		               "unterminated caveat expression: expected `}` "
		               "matching this `{`");
	if (problem)
		return fail_at(p, bad_line, bad_column, "%s", problem);
	c->expression = trim_lines(p->a, body, body_len);
	if (c->expression[0] == '\0')
		return fail_at(p, open.line, open.column,
		               "missing caveat expression");
	/* Position of the first non-blank byte of the body. */
	c->expr_line = open.line;
	c->expr_column = open.column + 1;
	for (size_t i = 0; i < body_len; i++) {
		char ch = body[i];
		if (ch == '\n' || (ch == '\r' && (i + 1 >= body_len ||
		                                  body[i + 1] != '\n'))) {
			c->expr_line++;
			c->expr_column = 1;
		} else if (ch == ' ' || ch == '\t' || ch == '\r') {
			c->expr_column++;
		} else {
			break;
		}
	}
	advance(p);

	s->caveats = grow(p->a, s->caveats, s->ncaveats, &p->caveats_cap,
	                  sizeof(*s->caveats));
	s->caveats[s->ncaveats++] = c;
	add_item(p, true, c);
	return true;
}

/* use := "use" IDENT.  Every flag SpiceDB knows is accepted and makes its
 * name a keyword.  `expiration` enables `with expiration`; `typechecking`
 * changes nothing here; the statements `import` unlocks are refused in a
 * schema write, as SpiceDB does; the syntax `partial` (partial
 * definitions) and `self` (the resource as its own subject) unlock is not
 * implemented and is refused where it appears. */
static bool parse_use(parser *p)
{
	token use = p->tok;
	advance(p);
	token flag = p->tok;
	if (!at(p, TOKEN_IDENT))
		return expected(p, "a use flag such as `expiration`");
	advance(p);
	unsigned bit = schema_use_flag(flag.text, flag.len);
	if (!bit)
		return fail_at(p, flag.line, flag.column,
		               "unknown use flag `%.*s`; options are: "
		               "expiration, import, partial, self, "
		               "typechecking",
		               (int)(flag.len > 64 ? 64 : flag.len), flag.text);
	if (p->seen_definition)
		return fail_at(p, use.line, use.column,
		               "`use` expressions must be declared before any "
		               "definition");
	if (bit == SCHEMA_FLAG_EXPIRATION)
		p->s->use_expiration = true;
	p->flags |= bit;
	return true;
}

int schema_parse(schema *s, const char *text, size_t len, parse_output *po,
                 pemba_error *err)
{
	parser p;
	memset(&p, 0, sizeof(p));
	p.a = s->arena;
	p.s = s;
	p.err = err;
	/* A NUL byte would silently cut names and comments short. */
	const char *nul = memchr(text, '\0', len);
	if (nul) {
		int line, column;
		lexer_position_of(text, (size_t)(nul - text), &line, &column);
		fail_at(&p, line, column, "unrecognized character (byte 0x00)");
		return PEMBA_EINVAL;
	}
	lexer_init(&p.lx, text, len, s->arena);
	advance(&p);

	for (;;) {
		if (at(&p, TOKEN_EOF))
			break;
		if (at_terminator(&p))
			advance(&p);
		if (at(&p, TOKEN_EOF))
			break;

		bool ok;
		if (at_keyword(&p, "definition"))
			ok = parse_definition(&p);
		else if (at_keyword(&p, "caveat"))
			ok = parse_caveat(&p);
		else if (is_word(&p.tok, "use")) {
			ok = parse_use(&p);
		} else if (at_keyword(&p, "import")) {
			ok = fail_at(&p, p.tok.line, p.tok.column,
			             "import statements are not allowed in "
			             "this context");
		} else if (at_keyword(&p, "partial")) {
			ok = fail_at(&p, p.tok.line, p.tok.column,
			             "partial definitions are not supported");
		} else {
			ok = expected(&p, "`definition`, `caveat` or `use`");
		}
		if (!ok)
			return PEMBA_EINVAL;
	}
	po->items = p.items;
	po->nitems = p.nitems;
	return 0;
}
