/*
 * utf8.c -- see utf8.h.
 */
#include "util/utf8.h"

size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *code)
{
	if (len == 0)
		return 0;
	unsigned char c = s[0];
	if (c < 0x80) {
		*code = c;
		return 1;
	}
	size_t n;
	uint32_t v, min;
	if ((c & 0xE0) == 0xC0) {
		n = 2;
		v = c & 0x1F;
		min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3;
		v = c & 0x0F;
		min = 0x800;
	} else if ((c & 0xF8) == 0xF0) {
		n = 4;
		v = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return 0;
	*code = v;
	return n;
}

size_t utf8_check(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		if (u[i] < 0x80) { /* the common case, byte by byte */
			i++;
			continue;
		}
		uint32_t code;
		size_t n = utf8_decode(u + i, len - i, &code);
		if (n == 0)
			return i;
		i += n;
	}
	return len;
}

void utf8_position(const char *text, size_t len, size_t offset, int *line,
                   int *column)
{
	const unsigned char *u = (const unsigned char *)text;
	int l = 1, c = 1;
	if (offset > len)
		offset = len;
	for (size_t i = 0; i < offset;) {
		uint32_t code;
		size_t n = utf8_decode(u + i, len - i, &code);
		if (n == 0)
			n = 1;
		if (u[i] == '\n') {
			l++;
			c = 1;
		} else {
			c++;
		}
		i += n;
	}
	*line = l;
	*column = c;
}
