/*
 * cel.h -- caveat expressions: the subset of CEL that SpiceDB accepts in
 * `caveat name(params) { expression }`, compiled once per schema and
 * evaluated against caveat contexts (JSON objects).
 *
 * A compiled caveat is immutable and may be evaluated from several threads
 * at once.  Evaluation has a cost limit, so hostile expressions or contexts
 * end in an error, never a crash, a hang or unbounded memory.
 *
 * Evaluation is partial, as SpiceDB's is: a parameter absent from both
 * contexts is *unknown*; the result is then true or false if the known
 * values decide it (`a || true`), and otherwise "partial" with the names of
 * the missing parameters that the undecided result depends on.
 *
 * This layer depends only on src/util and jansson.  It knows nothing of
 * schemas, relationships or requests.
 */
#ifndef PEMBA_CEL_H
#define PEMBA_CEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pemba.h"
#include "util/arena.h"
#include "util/strbuf.h"

/* Largest caveat context (JSON text) accepted, as SpiceDB limits it. */
#define CEL_MAX_CONTEXT_BYTES (64 * 1024)

/* Default evaluation cost limit (abstract steps: one per node visited, per
 * list element touched, per byte compared/copied / 64...). */
#define CEL_DEFAULT_COST_LIMIT 1000000

typedef struct cel_param {
	const char *name;
	const char *type; /* normalized type text: "int", "list<string>",
	                     "map<int>", "timestamp", "ipaddress", "any" */
} cel_param;

typedef struct cel_program cel_program;

/* Parses and type-checks `expression` (the text between the caveat's
 * braces) over `params`, and checks that it yields a bool.  Errors carry
 * line/column relative to the expression text (1-based), which the caller
 * shifts to schema positions.  Every compile error is PEMBA_EINVAL, as
 * SpiceDB answers INVALID_ARGUMENT for a caveat that does not compile:
 * syntax errors, unknown parameter type names, and type errors (unknown
 * identifier, no matching overload, non-bool result) worded as CEL words
 * them ("found no matching overload for '_==_' applied to '(int,
 * string)'", "caveat expression must result in a boolean value: found
 * `int`").
 * The program is allocated with malloc; free with cel_program_free(). */
int cel_compile(const char *expression, const cel_param *params, size_t nparams,
                cel_program **out, pemba_error *err);
void cel_program_free(cel_program *p);

/* Appends the canonical text of the expression (what SpiceDB's ReadSchema
 * prints: re-printed from the syntax tree, one line, single spaces around
 * binary operators). */
void cel_program_print(const cel_program *p, strbuf *out);

/* Parameter names the expression mentions, in declaration order. */
bool cel_program_uses_param(const cel_program *p, const char *name);

typedef enum cel_outcome {
	CEL_FALSE = 0,
	CEL_TRUE = 1,
	CEL_PARTIAL = 2, /* missing parameters decide it */
} cel_outcome;

typedef struct cel_result {
	cel_outcome outcome;
	/* For CEL_PARTIAL: the missing parameter names the result depends on,
	 * sorted, without duplicates; allocated from the arena given to
	 * cel_evaluate().  Empty otherwise. */
	const char **missing;
	size_t nmissing;
} cel_result;

/* Evaluates p with the parameters found in `relationship_context` and
 * `request_context` (JSON object texts; either may be NULL or "").  A
 * parameter present in both takes the relationship's value, as SpiceDB
 * does.  Context keys that are not parameters are ignored.  Values are
 * converted to the parameter's declared type as SpiceDB converts them
 * (JSON numbers to int/uint when integral and in range; strings to
 * timestamp (RFC 3339), duration ("1h2m3s" / "1.5s"), ipaddress, bytes
 * (base64); "any" keeps the JSON value).
 *
 * Errors (nothing is allocated that outlives `a`):
 *   PEMBA_EINVAL  a context that is not a JSON object, too large or too
 *                 deep, or a value that does not convert to its
 *                 parameter's type (the message names the parameter)
 *   PEMBA_EPRECONDITION  an evaluation error: division by zero, overflow,
 *                 index out of range, no such key, bad cidr...
 *   PEMBA_ELIMIT  the cost limit was exceeded */
int cel_evaluate(const cel_program *p, const char *relationship_context,
                 const char *request_context, uint64_t cost_limit, arena *a,
                 cel_result *out, pemba_error *err);

/* Checks a context a relationship is written with: a JSON object no larger
 * than CEL_MAX_CONTEXT_BYTES whose keys that name parameters convert to
 * their types.  Same errors as cel_evaluate's PEMBA_EINVAL. */
int cel_validate_context(const cel_program *p, const char *context,
                         pemba_error *err);

/* A clearer text for a jansson parse error of a context (its
 * error.text): jansson refuses \u0000 in strings and keys naming its
 * JSON_ALLOW_NUL flag; the caller reports "a string contains \u0000
 * (NUL), which caveat contexts may not hold" instead.  Other texts are
 * returned as they are. */
const char *cel_json_error_text(const char *jansson_text);

#endif
