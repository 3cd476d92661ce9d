/*
 * schema.h -- SpiceDB's schema language: parse, type-check, print.
 *
 * schema_compile() turns schema text into an immutable `schema` whose every
 * object lives in one arena owned by the schema.  A compiled schema is
 * type-checked: every name a permission expression or allowed type mentions
 * resolves, and the resolved pointers (`ref`, `tupleset`) are filled in, so
 * the engine never looks names up by string for same-object references.
 *
 * This layer knows nothing of relationships, storage or evaluation.
 */
#ifndef PEMBA_SCHEMA_H
#define PEMBA_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include "pemba.h"
#include "util/arena.h"
#include "util/strbuf.h"

typedef struct schema_relation schema_relation;
typedef struct schema_definition schema_definition;

/* ------------------------------------------------------- permission exprs */

/* Limits that keep hostile input from exhausting the stack. */
#define SCHEMA_MAX_EXPR_DEPTH 256 /* nesting of a permission expression */
#define SCHEMA_MAX_TYPE_DEPTH 32  /* nesting of caveat parameter types */

typedef enum schema_expr_kind {
	SCHEMA_EXPR_NIL,       /* nil */
	SCHEMA_EXPR_REF,       /* a relation or permission of the same object */
	SCHEMA_EXPR_ARROW,     /* tupleset->target  (same as .any) */
	SCHEMA_EXPR_ARROW_ANY, /* tupleset.any(target) */
	SCHEMA_EXPR_ARROW_ALL, /* tupleset.all(target) */
	SCHEMA_EXPR_UNION,     /* a + b + ... (n >= 2 children) */
	SCHEMA_EXPR_INTERSECT, /* a & b & ... (n >= 2 children) */
	SCHEMA_EXPR_EXCLUDE,   /* a - b (exactly 2 children) */
} schema_expr_kind;

typedef struct schema_expr {
	schema_expr_kind kind;
	int line, column; /* 1-based source position of the expression */
	/* UNION / INTERSECT / EXCLUDE.  Union and intersection are flattened
	 * as SpiceDB's compiler does, parentheses or not: a + (b + c) and
	 * (a + b) + c are both one UNION of three children.  Exclusion is
	 * binary and left-associative: a - b - c is EXCLUDE(EXCLUDE(a, b), c).
	 * Precedence, loosest first: `-`, then `&`, then `+`, then arrows. */
	struct schema_expr **children;
	size_t nchildren;
	/* REF: the referenced name.  ARROW*: the tupleset relation's name. */
	const char *name;
	/* ARROW*: the relation/permission computed on each subject. */
	const char *target;
	/* Resolved by the type checker: REF -> the relation or permission;
	 * ARROW* -> the tupleset relation (always a relation, never a
	 * permission).  The target is resolved per subject type at
	 * evaluation time (schema_find_relation on the subject's
	 * definition); it may be absent on some subject types. */
	const schema_relation *ref;
	const schema_relation *tupleset;
} schema_expr;

/* --------------------------------------------------------- relations */

typedef struct schema_allowed_type {
	const char *type;     /* definition name, e.g. "user", "org/team" */
	const char *relation; /* "group#member" -> "member"; NULL if none */
	bool wildcard;        /* "user:*" */
	const char *caveat;   /* "with cav" -> "cav"; NULL if none */
	bool expiration; /* "with expiration" / "with cav and expiration" */
	int line, column;
	const schema_definition *definition; /* resolved */
} schema_allowed_type;

struct schema_relation {
	const char *name;
	const char *doc;       /* comments before it, joined by "\n", or NULL */
	const char **comments; /* the same comments one by one (each line
	                          trimmed, as SpiceDB stores them) */
	size_t ncomments;
	bool is_permission;
	int index; /* position within its definition */
	int line, column;
	const schema_definition *definition; /* owner */
	/* relations */
	schema_allowed_type *types;
	size_t ntypes;
	/* permissions */
	schema_expr *expr;
};

struct schema_definition {
	const char *name;
	const char *doc;
	const char **comments;
	size_t ncomments;
	int line, column;
	int index;                   /* position within the schema */
	schema_relation **relations; /* relations and permissions, in order */
	size_t nrelations;
	void *lookup; /* private name -> relation table */
};

/* --------------------------------------------------------------- caveats */

typedef struct schema_caveat_param {
	const char *name;
	const char *type; /* type text as written, normalized: "list<int>" */
	int line, column;
} schema_caveat_param;

typedef struct schema_caveat {
	const char *name;
	const char *doc;
	const char **comments;
	size_t ncomments;
	int line, column;
	schema_caveat_param *params;
	size_t nparams;
	const char *expression; /* CEL text, canonical once compiled
	                           (cel_program_print) */
	int expr_line, expr_column;
	const struct cel_program *program; /* compiled expression */
} schema_caveat;

/* ---------------------------------------------------------------- schema */

typedef struct schema {
	arena *arena;                    /* owns everything below */
	schema_definition **definitions; /* in source order */
	size_t ndefinitions;
	schema_caveat **caveats;
	size_t ncaveats;
	bool use_expiration; /* "use expiration" directive present */
	void *index;         /* private name -> definition/caveat lookup */
} schema;

/* Parses and type-checks `text`.  On success *out is a new schema the caller
 * releases with schema_free().  On failure *out is NULL, err->line/column
 * (1-based) locate the offending input and the return value is
 *   PEMBA_EINVAL for syntax errors, bad identifiers, names reused between
 *     definitions/caveats, bad caveat parameters, permission alias cycles:
 *     "parse error at 3:17: expected `}`, found `permission`"
 *   PEMBA_EPRECONDITION for references that do not resolve or type rules
 *     (SpiceDB answers FAILED_PRECONDITION for these):
 *     "relation/permission `viewr` not found under definition `document`"
 * The messages follow SpiceDB's wording where it is known; see
 * src/schema/README.md. */
int schema_compile(const char *text, size_t len, schema **out,
                   pemba_error *err);
void schema_free(schema *s);

/* Lookups; NULL when absent.  O(1) average. */
const schema_definition *schema_find_definition(const schema *s,
                                                const char *name);
const schema_relation *schema_find_relation(const schema_definition *d,
                                            const char *name);
const schema_caveat *schema_find_caveat(const schema *s, const char *name);

/* Appends the canonical text (what ReadSchema returns) to out: `use
 * expiration` if expiration is used, then caveats, then definitions, each
 * group sorted by name, separated by blank lines, tab indented, no trailing
 * newline.  schema_compile(schema_print(s)) is structurally equal to s and
 * printing is a fixed point. */
void schema_print(const schema *s, strbuf *out);

/* Structural equality (names, types, expressions, caveats; not positions,
 * comments, the order of definitions/caveats/caveat parameters, or a `use
 * expiration` directive nothing uses).  Used by round-trip tests and,
 * later, diff. */
bool schema_equal(const schema *a, const schema *b);

/* True if the schema declares caveats, uses `with <caveat>` or expiration
 * anywhere (used to report unsupported features until they land). */
bool schema_uses_caveats(const schema *s);
bool schema_uses_expiration(const schema *s);

/* ------------------------------------------------------------------ diff */

/* What one structural change does; the numbers are those of
 * pemba.v1.SchemaChange.Kind (and pemba_schema_change.kind). */
typedef enum schema_change_kind {
	SCHEMA_CHANGE_ADD_DEFINITION = 1,
	SCHEMA_CHANGE_REMOVE_DEFINITION = 2,
	SCHEMA_CHANGE_ADD_RELATION = 3,
	SCHEMA_CHANGE_REMOVE_RELATION = 4,
	SCHEMA_CHANGE_ADD_PERMISSION = 5,
	SCHEMA_CHANGE_REMOVE_PERMISSION = 6,
	SCHEMA_CHANGE_CHANGE_PERMISSION = 7, /* its expression changed */
	SCHEMA_CHANGE_ADD_ALLOWED_TYPE = 8,  /* detail: "user:*", ... */
	SCHEMA_CHANGE_REMOVE_ALLOWED_TYPE = 9,
	SCHEMA_CHANGE_ADD_CAVEAT = 10,
	SCHEMA_CHANGE_REMOVE_CAVEAT = 11,
	SCHEMA_CHANGE_CHANGE_CAVEAT = 12,        /* its expression changed */
	SCHEMA_CHANGE_ADD_CAVEAT_PARAMETER = 13, /* detail: the type */
	SCHEMA_CHANGE_REMOVE_CAVEAT_PARAMETER = 14,
	/* detail: "old -> new" */
	SCHEMA_CHANGE_CHANGE_CAVEAT_PARAMETER_TYPE = 15,
	SCHEMA_CHANGE_RELATION_TO_PERMISSION = 16,
	SCHEMA_CHANGE_PERMISSION_TO_RELATION = 17,
	SCHEMA_CHANGE_CHANGE_COMMENT = 18,
	SCHEMA_CHANGE_USE_EXPIRATION = 19, /* detail: "added" / "removed" */
} schema_change_kind;

/* One change from an old schema to a new one.  Strings live in the
 * diff's arena and are never NULL ("" when not applicable). */
typedef struct schema_change {
	schema_change_kind kind;
	const char *definition;  /* definition or caveat name */
	const char *name;        /* relation/permission/parameter; "" */
	const char *detail;      /* allowed type, expression, type ... */
	const char *description; /* one human-readable line */
	/* Pointers into the schemas compared (valid while they live):
	 * the old and new relation / allowed type, when applicable. */
	const schema_relation *old_relation, *new_relation;
	const schema_allowed_type *old_type, *new_type;
} schema_change;

typedef struct schema_diff {
	arena *arena; /* owns the changes and their strings */
	schema_change *changes;
	size_t nchanges;
} schema_diff;

/* The structural, formatting-agnostic difference from `old` to `new`
 * (either may be NULL: no schema).  Positions, formatting and the order
 * of definitions, caveats, relations, allowed types and caveat
 * parameters do not count; comments count as CHANGE_COMMENT.  Changes
 * come in a stable order: caveats by name, then definitions by name, each
 * definition's changes in relation order (removals in the old schema's
 * order first).  Release with schema_diff_free(). */
schema_diff *schema_diff_compute(const schema *old, const schema *new);
void schema_diff_free(schema_diff *d);

/* Appends the text of an allowed type as SpiceDB writes it in messages
 * ("user", "user:*", "group#member", "user with cav and expiration"). */
void schema_allowed_type_source(const schema_allowed_type *t, strbuf *out);

/* Appends the canonical text of a permission expression. */
void schema_print_expr(const schema_expr *e, strbuf *out);

/* Identifier rules from PRODUCT.md ("Limits and input rules"). */
bool schema_valid_type_name(const char *s, size_t n);
bool schema_valid_relation_name(const char *s, size_t n);
bool schema_valid_object_id(const char *s, size_t n);

#endif
