/*
 * lexer.c -- on-demand tokenizer for the schema language.
 *
 * Positions: lines and columns are 1-based; a column counts UTF-8 code
 * points (continuation bytes do not advance it), so positions match what
 * an editor shows.  "\r" and "\n" are both newlines, as in SpiceDB.
 */
#include "schema/lexer.h"

#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

void lexer_init(lexer *lx, const char *src, size_t len, arena *a)
{
	lx->src = src;
	lx->len = len;
	lx->pos = 0;
	lx->line = 1;
	lx->column = 1;
	lx->last_significant = TOKEN_EOF;
	lx->arena = a;
}

static bool at_end(const lexer *lx)
{
	return lx->pos >= lx->len;
}

static unsigned char peek_at(const lexer *lx, size_t ahead)
{
	size_t p = lx->pos + ahead;
	return p < lx->len ? (unsigned char)lx->src[p] : 0;
}

/* Advances one byte, keeping line and column current. */
static void advance(lexer *lx)
{
	unsigned char c = (unsigned char)lx->src[lx->pos++];
	if (c == '\n' || c == '\r') {
		lx->line++;
		lx->column = 1;
	} else if ((c & 0xC0) != 0x80) {
		lx->column++;
	}
}

/* Whether code point cp is what Go's unicode.IsLetter or unicode.IsDigit
 * accepts, which is how SpiceDB's lexer decides identifier characters.
 * Approximated without Unicode tables: everything outside ASCII is taken
 * as a letter except the ranges below (C1 controls, Latin-1 punctuation,
 * combining marks, spaces, general punctuation, currency, number forms,
 * arrows, mathematical and technical symbols, box drawing, dingbats, CJK
 * punctuation, private use, variation selectors, specials, emoji).  Marks
 * and symbols inside other scripts' blocks are not caught. */
static bool unicode_letter_or_digit(uint32_t cp)
{
	static const struct {
		uint32_t lo, hi;
	} not_letters[] = {
	    {0x80, 0xA9},        {0xAB, 0xB4},       {0xB6, 0xB9},
	    {0xBB, 0xBF},        {0xD7, 0xD7},       {0xF7, 0xF7},
	    {0x2C2, 0x2C5},      {0x2D2, 0x2DF},     {0x2E5, 0x2EB},
	    {0x2ED, 0x2ED},      {0x2EF, 0x36F},     {0x375, 0x375},
	    {0x37E, 0x37E},      {0x384, 0x385},     {0x387, 0x387},
	    {0x3F6, 0x3F6},      {0x482, 0x489},     {0x55A, 0x55F},
	    {0x589, 0x58A},      {0x1680, 0x1680},   {0x2000, 0x2070},
	    {0x2072, 0x207E},    {0x2080, 0x208F},   {0x209D, 0x20FF},
	    {0x2150, 0x2182},    {0x2185, 0x2BFF},   {0x2E00, 0x2E2E},
	    {0x2E30, 0x2FFF},    {0x3000, 0x3004},   {0x3007, 0x3020},
	    {0x3030, 0x3030},    {0x303D, 0x303F},   {0x3099, 0x309C},
	    {0x30A0, 0x30A0},    {0x30FB, 0x30FB},   {0xD800, 0xF8FF},
	    {0xFE00, 0xFE6F},    {0xFEFF, 0xFEFF},   {0xFF00, 0xFF0F},
	    {0xFF1A, 0xFF20},    {0xFF3B, 0xFF40},   {0xFF5B, 0xFF65},
	    {0xFFE0, 0xFFFF},    {0x1D000, 0x1D24F}, {0x1F000, 0x1FAFF},
	    {0xE0000, 0x10FFFF},
	};
	for (size_t i = 0; i < sizeof(not_letters) / sizeof(not_letters[0]);
	     i++)
		if (cp >= not_letters[i].lo && cp <= not_letters[i].hi)
			return false;
	return true;
}

/* Length in bytes of the identifier character at the current position,
 * 0 if there is none.  Non-ASCII characters must be well-formed UTF-8
 * letters or digits (SpiceDB reads malformed UTF-8 as U+FFFD, which is
 * neither); name validation later refuses them where names must be
 * ASCII, so only caveat names keep them, as in SpiceDB. */
static size_t ident_char_len(const lexer *lx)
{
	unsigned char c = peek_at(lx, 0);
	if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	if (c < 0xC2 || c > 0xF4)
		return 0;
	size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
	uint32_t cp = c & (0x7F >> n);
	for (size_t i = 1; i < n; i++) {
		unsigned char k = peek_at(lx, i);
		if ((k & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (k & 0x3F);
	}
	/* Overlong forms and out-of-range code points are malformed. */
	static const uint32_t min_for_length[] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < min_for_length[n] || cp > 0x10FFFF)
		return 0;
	return unicode_letter_or_digit(cp) ? n : 0;
}

static bool is_newline(unsigned char c)
{
	return c == '\n' || c == '\r';
}

/* Whether a newline after a token of this kind ends the statement. */
static bool ends_statement(token_kind k)
{
	return k == TOKEN_IDENT || k == TOKEN_RBRACE || k == TOKEN_RPAREN ||
	       k == TOKEN_STAR;
}

static token make_token(const lexer *lx, token_kind kind, size_t start,
                        int line, int column)
{
	token t;
	t.kind = kind;
	t.text = lx->src + start;
	t.len = lx->pos - start;
	t.offset = start;
	t.line = line;
	t.column = column;
	t.comments = NULL;
	return t;
}

static token error_token(const lexer *lx, const char *message, size_t start,
                         int line, int column)
{
	token t = make_token(lx, TOKEN_ERROR, start, line, column);
	t.text = message;
	t.len = strlen(message);
	return t;
}

/* Skips a string literal starting at the current quote.  Triple-quoted
 * strings may span lines; others may not.  Backslash escapes are honoured.
 * Returns false if the literal is unterminated. */
static bool skip_string(lexer *lx)
{
	unsigned char quote = peek_at(lx, 0);
	bool triple = peek_at(lx, 1) == quote && peek_at(lx, 2) == quote;
	size_t n = triple ? 3 : 1;
	for (size_t i = 0; i < n; i++)
		advance(lx);
	while (!at_end(lx)) {
		unsigned char c = peek_at(lx, 0);
		if (c == '\\') {
			advance(lx);
			if (at_end(lx))
				return false;
			if (!triple && is_newline(peek_at(lx, 0)))
				return false;
			advance(lx);
			continue;
		}
		if (c == quote && (!triple || (peek_at(lx, 1) == quote &&
		                               peek_at(lx, 2) == quote))) {
			for (size_t i = 0; i < n; i++)
				advance(lx);
			return true;
		}
		if (!triple && is_newline(c))
			return false;
		advance(lx);
	}
	return false;
}

/* Skips a comment at the current "/" ("//" or "/ *").  Returns false for an
 * unterminated block comment. */
static bool skip_comment(lexer *lx)
{
	if (peek_at(lx, 1) == '/') {
		while (!at_end(lx) && !is_newline(peek_at(lx, 0)))
			advance(lx);
		return true;
	}
	advance(lx);
	advance(lx);
	while (!at_end(lx)) {
		if (peek_at(lx, 0) == '*' && peek_at(lx, 1) == '/') {
			advance(lx);
			advance(lx);
			return true;
		}
		advance(lx);
	}
	return false;
}

/* ------------------------------------------------------------- tokens */

token lexer_next(lexer *lx)
{
	lexer_comment *first = NULL, **tail = &first;

	for (;;) {
		size_t start = lx->pos;
		int line = lx->line, column = lx->column;
		if (at_end(lx)) {
			token t =
			    make_token(lx, TOKEN_EOF, start, line, column);
			t.comments = first;
			lx->last_significant = TOKEN_EOF;
			return t;
		}
		unsigned char c = peek_at(lx, 0);
		token_kind kind;

		if (c == ' ' || c == '\t') {
			advance(lx);
			continue;
		}
		if (is_newline(c)) {
			advance(lx);
			if (!ends_statement(lx->last_significant))
				continue;
			kind = TOKEN_NEWLINE;
			goto emit;
		}
		if (c == '/' &&
		    (peek_at(lx, 1) == '/' || peek_at(lx, 1) == '*')) {
			if (!skip_comment(lx))
				return error_token(
				    lx, "unterminated multiline comment", start,
				    line, column);
			lexer_comment *cm = arena_alloc(lx->arena, sizeof(*cm));
			cm->text = lx->src + start;
			cm->len = lx->pos - start;
			*tail = cm;
			tail = &cm->next;
			continue;
		}
		if (ident_char_len(lx) > 0) {
			size_t k;
			while (!at_end(lx) && (k = ident_char_len(lx)) > 0)
				while (k-- > 0)
					advance(lx);
			kind = TOKEN_IDENT;
			goto emit;
		}
		if (c == '"' || c == '\'') {
			if (!skip_string(lx))
				return error_token(lx, "unterminated string",
				                   start, line, column);
			kind = TOKEN_STRING;
			goto emit;
		}

		advance(lx);
		switch (c) {
		case '{':
			kind = TOKEN_LBRACE;
			break;
		case '}':
			kind = TOKEN_RBRACE;
			break;
		case '(':
			kind = TOKEN_LPAREN;
			break;
		case ')':
			kind = TOKEN_RPAREN;
			break;
		case '+':
			kind = TOKEN_PLUS;
			break;
		case '/':
			kind = TOKEN_SLASH;
			break;
		case ':':
			kind = TOKEN_COLON;
			break;
		case ';':
			kind = TOKEN_SEMICOLON;
			break;
		case '#':
			kind = TOKEN_HASH;
			break;
		case '*':
			kind = TOKEN_STAR;
			break;
		case ',':
			kind = TOKEN_COMMA;
			break;
		case '?':
		case '[':
		case ']':
		case '%':
			kind = TOKEN_OTHER;
			break;
		case '|':
			kind = TOKEN_PIPE;
			if (peek_at(lx, 0) == '|') {
				advance(lx);
				kind = TOKEN_OTHER;
			}
			break;
		case '&':
			kind = TOKEN_AMP;
			if (peek_at(lx, 0) == '&') {
				advance(lx);
				kind = TOKEN_OTHER;
			}
			break;
		case '=':
			kind = TOKEN_EQUALS;
			if (peek_at(lx, 0) == '=') {
				advance(lx);
				kind = TOKEN_OTHER;
			}
			break;
		case '!':
		case '<':
		case '>':
			kind = c == '<'   ? TOKEN_LESS
			       : c == '>' ? TOKEN_GREATER
			                  : TOKEN_OTHER;
			if (peek_at(lx, 0) == '=') {
				advance(lx);
				kind = TOKEN_OTHER;
			}
			break;
		case '-':
			kind = TOKEN_MINUS;
			if (peek_at(lx, 0) == '>') {
				advance(lx);
				kind = TOKEN_ARROW;
			}
			break;
		case '.':
			kind = TOKEN_PERIOD;
			if (peek_at(lx, 0) == '.' && peek_at(lx, 1) == '.') {
				advance(lx);
				advance(lx);
				kind = TOKEN_ELLIPSIS;
			}
			break;
		default:
			return error_token(lx, "unrecognized character", start,
			                   line, column);
		}
	emit:;
		token t = make_token(lx, kind, start, line, column);
		t.comments = first;
		lx->last_significant = kind;
		return t;
	}
}

static bool is_control(unsigned char c)
{
	return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f;
}

const char *lexer_capture_braced(lexer *lx, const char **body, size_t *body_len,
                                 int *line, int *column)
{
	size_t start = lx->pos;
	int depth = 1;

	while (!at_end(lx)) {
		unsigned char c = peek_at(lx, 0);
		if (c == '"' || c == '\'') {
			if (!skip_string(lx))
				break;
			continue;
		}
		if (c == '/' &&
		    (peek_at(lx, 1) == '/' || peek_at(lx, 1) == '*')) {
			if (!skip_comment(lx))
				break;
			continue;
		}
		if (c == '{') {
			depth++;
		} else if (c == '}' && --depth == 0) {
			*body = lx->src + start;
			*body_len = lx->pos - start;
			/* Control characters are refused so that the text is
			 * printable and round-trips byte for byte. */
			for (size_t i = start; i < lx->pos; i++) {
				if (is_control((unsigned char)lx->src[i])) {
					lexer_position_of(lx->src, i, line,
					                  column);
					return "control character in caveat "
					       "expression";
				}
			}
			advance(lx);
			lx->last_significant = TOKEN_RBRACE;
			return NULL;
		}
		advance(lx);
	}
	*line = lx->line;
	*column = lx->column;
	return "unterminated caveat expression";
}

void lexer_position_of(const char *src, size_t offset, int *line, int *column)
{
	lexer lx;
	lexer_init(&lx, src, offset, NULL);
	while (!at_end(&lx))
		advance(&lx);
	*line = lx.line;
	*column = lx.column;
}

const char *token_describe(arena *a, const token *t)
{
	switch (t->kind) {
	case TOKEN_EOF:
		return "end of input";
	case TOKEN_NEWLINE:
		return "newline";
	case TOKEN_ERROR:
		return arena_strndup(a, t->text, t->len);
	default:
		break;
	}
	/* Keep messages one line and bounded. */
	size_t n = t->len > 40 ? 40 : t->len;
	return arena_printf(a, "`%.*s%s`", (int)n, t->text,
	                    n < t->len ? "..." : "");
}
