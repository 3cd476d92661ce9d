/*
 * strbuf.h -- growable, always NUL-terminated byte string (heap owned).
 */
#ifndef PEMBA_STRBUF_H
#define PEMBA_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct strbuf {
	char *data; /* NUL-terminated; NULL only after strbuf_detach */
	size_t len;
	size_t cap;
} strbuf;

void strbuf_init(strbuf *sb);
void strbuf_free(strbuf *sb);
void strbuf_reset(strbuf *sb);
void strbuf_append(strbuf *sb, const char *s, size_t n);
void strbuf_puts(strbuf *sb, const char *s);
void strbuf_putc(strbuf *sb, char c);
void strbuf_printf(strbuf *sb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void strbuf_vprintf(strbuf *sb, const char *fmt, va_list ap);
/* Returns the heap buffer (caller frees with free()) and leaves sb empty
 * (no allocation; it may be appended to again or strbuf_free()d). */
char *strbuf_detach(strbuf *sb, size_t *len_out);

#endif
