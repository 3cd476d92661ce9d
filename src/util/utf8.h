/*
 * utf8.h -- strict UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), as proto3 requires of `string` fields and CEL
 * of its strings, and positions in text for messages.
 */
#ifndef PEMBA_UTIL_UTF8_H
#define PEMBA_UTIL_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1-4) of the valid UTF-8 sequence at s[0..len), or 0 when it is
 * not one (also for len 0); *code gets the code point. */
size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *code);

/* Offset of the first byte of s[0..len) that does not start a valid
 * sequence, or len when all of it is valid UTF-8.  NUL is valid UTF-8. */
size_t utf8_check(const char *s, size_t len);

/* 1-based line and column of byte `offset` of text[0..len): lines end at
 * '\n', columns count code points (an invalid byte counts as one). */
void utf8_position(const char *text, size_t len, size_t offset, int *line,
                   int *column);

#endif
