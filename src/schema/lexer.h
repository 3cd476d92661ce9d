/*
 * lexer.h -- tokens of SpiceDB's schema language (private to src/schema/).
 *
 * The lexer works on demand: it produces one token per call and never
 * reads ahead, so the parser can switch to raw capture of a caveat body
 * (lexer_capture_braced) right after it has seen the opening brace.
 *
 * Like SpiceDB, a newline that follows an identifier, keyword, `}`, `)` or
 * `*` becomes a synthetic statement terminator; any other newline, spaces
 * and comments are skipped.  Comments are collected and attached to the
 * next significant token, which is how doc comments reach the definition,
 * relation, permission or caveat whose keyword follows them.
 */
#ifndef PEMBA_SCHEMA_LEXER_H
#define PEMBA_SCHEMA_LEXER_H

#include <stdbool.h>
#include <stddef.h>

#include "util/arena.h"

typedef enum token_kind {
	TOKEN_EOF,
	TOKEN_ERROR,     /* text is the message, position the offending byte */
	TOKEN_IDENT,     /* identifiers and keywords alike */
	TOKEN_STRING,    /* '...' or "..." (only meaningful inside CEL) */
	TOKEN_LBRACE,    /* { */
	TOKEN_RBRACE,    /* } */
	TOKEN_LPAREN,    /* ( */
	TOKEN_RPAREN,    /* ) */
	TOKEN_PIPE,      /* | */
	TOKEN_PLUS,      /* + */
	TOKEN_MINUS,     /* - */
	TOKEN_AMP,       /* & */
	TOKEN_SLASH,     /* / */
	TOKEN_EQUALS,    /* = */
	TOKEN_COLON,     /* : */
	TOKEN_SEMICOLON, /* ; */
	TOKEN_NEWLINE,   /* synthetic statement terminator */
	TOKEN_ARROW,     /* -> */
	TOKEN_HASH,      /* # */
	TOKEN_ELLIPSIS,  /* ... */
	TOKEN_STAR,      /* * */
	TOKEN_PERIOD,    /* . */
	TOKEN_COMMA,     /* , */
	TOKEN_LESS,      /* < */
	TOKEN_GREATER,   /* > */
	TOKEN_OTHER,     /* other CEL punctuation: ? ! [ ] % || && == ... */
} token_kind;

/* A comment seen before a token, as written (including its markers). */
typedef struct lexer_comment {
	const char *text;
	size_t len;
	struct lexer_comment *next;
} lexer_comment;

typedef struct token {
	token_kind kind;
	const char *text; /* points into the source (or a message for ERROR) */
	size_t len;
	size_t offset;           /* byte offset in the source */
	int line, column;        /* 1-based; columns count UTF-8 code points */
	lexer_comment *comments; /* comments before this token, in order */
} token;

typedef struct lexer {
	const char *src;
	size_t len;
	size_t pos;
	int line, column;
	token_kind last_significant; /* decides synthetic terminators */
	arena *arena;                /* comment records */
} lexer;

void lexer_init(lexer *lx, const char *src, size_t len, arena *a);

/* Produces the next significant token. */
token lexer_next(lexer *lx);

/* Raw capture of a caveat body.  Call when the previous token was the
 * opening `{`: scans to the matching `}` (skipping string literals and
 * comments), stores the body in *body and *body_len (pointing into the
 * source) and leaves the lexer just after the closing brace.  Returns NULL
 * on success, else a message, with *line and *column set to the offending
 * position (end of input, or a control character, which CEL text may not
 * contain). */
const char *lexer_capture_braced(lexer *lx, const char **body, size_t *body_len,
                                 int *line, int *column);

/* Position (as the lexer counts it) of byte `offset` of src. */
void lexer_position_of(const char *src, size_t offset, int *line, int *column);

/* Human description of a token for error messages: "`foo`",
 * "end of input", "newline". Returns a string owned by the arena. */
const char *token_describe(arena *a, const token *t);

#endif
