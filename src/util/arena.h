/*
 * arena.h -- region allocator.  Allocate per request (or per parsed schema)
 * and release everything at once with arena_destroy().  Never frees single
 * objects.  Allocation failure aborts the process (out of memory is not a
 * recoverable condition for a database server process; see README.md).
 */
#ifndef PEMBA_ARENA_H
#define PEMBA_ARENA_H

#include <stddef.h>

typedef struct arena arena;

/* chunk_size 0 selects a default (64 KiB). */
arena *arena_create(size_t chunk_size);
void arena_destroy(arena *a);
/* Releases all allocations but keeps the first chunk for reuse. */
void arena_reset(arena *a);
/* Returns zeroed memory aligned for any type, valid until reset/destroy. */
void *arena_alloc(arena *a, size_t size);
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
/* Printf into the arena. */
char *arena_printf(arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Bytes handed out since creation or the last reset. */
size_t arena_used(const arena *a);

#endif
