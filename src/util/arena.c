/*
 * arena.c -- chunked bump allocator.  Chunks form a singly linked list; an
 * allocation larger than the chunk size gets a chunk of its own.
 */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define ARENA_ALIGN 16
#define ARENA_DEFAULT_CHUNK (64 * 1024)

typedef struct chunk {
	struct chunk *next;
	size_t size; /* usable bytes in data[] */
	size_t used;
	_Alignas(ARENA_ALIGN) unsigned char data[];
} chunk;

struct arena {
	chunk *head; /* current chunk, newest first */
	size_t chunk_size;
	size_t total;
};

static chunk *chunk_new(size_t size)
{
	chunk *c = xmalloc(sizeof(chunk) + size);
	c->next = NULL;
	c->size = size;
	c->used = 0;
	return c;
}

arena *arena_create(size_t chunk_size)
{
	arena *a = xmalloc(sizeof(*a));
	a->chunk_size = chunk_size ? chunk_size : ARENA_DEFAULT_CHUNK;
	a->head = chunk_new(a->chunk_size);
	a->total = 0;
	return a;
}

void arena_destroy(arena *a)
{
	if (!a)
		return;
	chunk *c = a->head;
	while (c) {
		chunk *next = c->next;
		free(c);
		c = next;
	}
	free(a);
}

void arena_reset(arena *a)
{
	chunk *c = a->head;
	/* Keep the oldest chunk (the one created with the arena). */
	while (c->next) {
		chunk *next = c->next;
		free(c);
		c = next;
	}
	a->head = c;
	c->used = 0;
	a->total = 0;
}

void *arena_alloc(arena *a, size_t size)
{
	size_t rounded = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (rounded == 0)
		rounded = ARENA_ALIGN;
	chunk *c = a->head;
	if (c->size - c->used < rounded) {
		size_t want = rounded > a->chunk_size ? rounded : a->chunk_size;
		chunk *n = chunk_new(want);
		if (rounded > a->chunk_size && c->used < c->size / 2) {
			/* Big one-off allocation: keep filling the current
			 * chunk afterwards by linking the new one behind it. */
			n->next = c->next;
			c->next = n;
			n->used = rounded;
			a->total += size;
			memset(n->data, 0, rounded);
			return n->data;
		}
		n->next = c;
		a->head = n;
		c = n;
	}
	void *p = c->data + c->used;
	c->used += rounded;
	a->total += size;
	memset(p, 0, rounded);
	return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *arena_strdup(arena *a, const char *s)
{
	return arena_strndup(a, s, strlen(s));
}

char *arena_printf(arena *a, const char *fmt, ...)
{
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	char *p = arena_alloc(a, (size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	return p;
}

size_t arena_used(const arena *a)
{
	return a->total;
}
