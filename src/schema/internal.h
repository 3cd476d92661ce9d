/*
 * internal.h -- what the files of src/schema/ share and nobody else sees.
 *
 * Compilation runs in three passes over one arena:
 *   1. parser.c   text -> schema structs (syntax only);
 *   2. names.c    identifier rules, names reused between definitions and
 *                 caveats (PEMBA_EINVAL, as SpiceDB's compiler does);
 *   3. typecheck.c references, duplicates, wildcard rules, alias cycles;
 *                 fills the resolved pointers and the lookup tables.
 */
#ifndef PEMBA_SCHEMA_INTERNAL_H
#define PEMBA_SCHEMA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "schema/schema.h"
#include "util/arena.h"

/* ------------------------------------------------------- name tables */

/* Open-addressing hash table from NUL-terminated names to pointers, grown
 * in the arena.  Keys are not copied: they must live as long as the
 * table (they always point into the schema arena). */
typedef struct name_table {
	size_t cap; /* power of two, or 0 before the first insert */
	size_t count;
	const char **keys;
	void **values;
} name_table;

name_table *name_table_new(arena *a, size_t expected);
/* Returns the existing value if the key is present (and does not replace
 * it), else inserts and returns NULL. */
void *name_table_put(arena *a, name_table *t, const char *key, void *value);
void *name_table_get(const name_table *t, const char *key);

/* The private `index` of a schema. */
typedef struct schema_index {
	name_table *definitions;
	name_table *caveats;
} schema_index;

/* ------------------------------------------------------------ passes */

/* Top-level items in source order, for errors that depend on it. */
typedef struct schema_item {
	bool is_caveat;
	void *ptr; /* schema_definition * or schema_caveat * */
} schema_item;

typedef struct parse_output {
	schema_item *items;
	size_t nitems;
} parse_output;

int schema_parse(schema *s, const char *text, size_t len, parse_output *po,
                 pemba_error *err);
int schema_check_names(schema *s, const parse_output *po, pemba_error *err);
int schema_typecheck(schema *s, pemba_error *err);

/* `use` flags SpiceDB knows.  Each one, once declared, turns its name
 * (and, for expiration, also `and`) into a keyword, as in SpiceDB. */
enum {
	SCHEMA_FLAG_EXPIRATION = 1u << 0,
	SCHEMA_FLAG_IMPORT = 1u << 1,
	SCHEMA_FLAG_PARTIAL = 1u << 2,
	SCHEMA_FLAG_SELF = 1u << 3,
	SCHEMA_FLAG_TYPECHECKING = 1u << 4,
};

/* The flag named s[0..n), or 0 if there is none by that name. */
unsigned schema_use_flag(const char *s, size_t n);

/* Keywords under the declared `use` flags (a SCHEMA_FLAG_* mask). */
bool schema_is_keyword(const char *s, size_t n, unsigned flags);

/* Text of an allowed type as the printer writes it ("group#member",
 * "user:*", "user with cav and expiration"), appended to out. */
void schema_format_allowed_type(const schema_allowed_type *t, strbuf *out);

#endif
