/*
 * xalloc.h -- allocation wrappers that abort on out-of-memory.  pemba treats
 * OOM as fatal rather than threading ENOMEM through every layer; the
 * decision is recorded in src/util/README.md.
 */
#ifndef PEMBA_XALLOC_H
#define PEMBA_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
