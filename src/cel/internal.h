/*
 * internal.h -- what the files of src/cel/ share and nobody else sees.
 *
 *   parse.c    expression text -> syntax tree (lexer and recursive descent)
 *   check.c    types of every node, overload resolution, bool result
 *   value.c    runtime values: equality, ordering, time and address parsing
 *   eval.c     tree-walking evaluator with partial evaluation and a cost
 *   context.c  JSON caveat contexts -> typed parameter values
 *   print.c    canonical text, as SpiceDB re-prints caveat expressions
 *   program.c  the public functions of cel.h
 *
 * A program owns one arena holding its tree, types and literal values; it
 * is never written after cel_compile() returns, so evaluations may share
 * it.  Every evaluation allocates only from the arena it is given.
 */
#ifndef PEMBA_CEL_INTERNAL_H
#define PEMBA_CEL_INTERNAL_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cel/cel.h"
#include "util/arena.h"
#include "util/strbuf.h"

/* Nesting of the expression (parentheses, operands, calls...); deeper input
 * is refused at parse time, which also bounds the evaluator's recursion. */
#define CEL_MAX_DEPTH 64
/* Largest expression text accepted, as SpiceDB limits it. */
#define CEL_MAX_EXPRESSION_BYTES 100000
/* Nesting of a context value (JSON arrays and objects). */
#define CEL_MAX_CONTEXT_DEPTH 32

/* ------------------------------------------------------------------ types */

typedef enum cel_kind {
	CEL_T_DYN, /* statically unknown: `any` parameters, mixed literals */
	CEL_T_NULL,
	CEL_T_BOOL,
	CEL_T_INT,
	CEL_T_UINT,
	CEL_T_DOUBLE,
	CEL_T_STRING,
	CEL_T_BYTES,
	CEL_T_LIST,
	CEL_T_MAP,
	CEL_T_TIMESTAMP,
	CEL_T_DURATION,
	CEL_T_IPADDRESS,
} cel_kind;

typedef struct cel_type {
	cel_kind kind;
	const struct cel_type *key;  /* MAP */
	const struct cel_type *elem; /* LIST element, MAP value */
} cel_type;

extern const cel_type cel_type_dyn, cel_type_null, cel_type_bool, cel_type_int,
    cel_type_uint, cel_type_double, cel_type_string, cel_type_bytes,
    cel_type_timestamp, cel_type_duration, cel_type_ipaddress,
    cel_type_list_dyn, cel_type_map_dyn;

/* CEL's name of a type ("int", "list(string)", "map(string, dyn)",
 * "google.protobuf.Timestamp"), appended to out. */
void cel_type_format(const cel_type *t, strbuf *out);
bool cel_type_equal(const cel_type *a, const cel_type *b);

/* ----------------------------------------------------------------- values */

typedef struct cel_value cel_value;
typedef struct cel_list {
	size_t n;
	cel_value *items;
} cel_list;
typedef struct cel_map {
	size_t n;
	cel_value *keys;
	cel_value *values;
} cel_map;

/* Parameters an unknown value depends on: sorted parameter indexes. */
typedef struct cel_unknown {
	size_t n;
	int params[];
} cel_unknown;

typedef enum cel_value_kind {
	CEL_V_NULL,
	CEL_V_BOOL,
	CEL_V_INT,
	CEL_V_UINT,
	CEL_V_DOUBLE,
	CEL_V_STRING, /* valid UTF-8 */
	CEL_V_BYTES,
	CEL_V_LIST,
	CEL_V_MAP,
	CEL_V_TIMESTAMP, /* seconds since the epoch + nanoseconds, UTC */
	CEL_V_DURATION,  /* nanoseconds, as Go's time.Duration */
	CEL_V_IPADDRESS,
	CEL_V_UNKNOWN, /* depends on missing parameters */
	CEL_V_ERROR,   /* an evaluation error, carried as a value as CEL does */
} cel_value_kind;

typedef struct cel_ip {
	uint8_t bytes[16];
	bool v6;       /* else the first 4 bytes are the IPv4 address */
	bool has_zone; /* "fe80::1%eth0": never inside a prefix */
} cel_ip;

struct cel_value {
	cel_value_kind kind;
	union {
		bool b;
		int64_t i;
		uint64_t u;
		double d;
		struct {
			const char *s;
			size_t len;
		} str; /* STRING, BYTES; also the ERROR message */
		const cel_list *list;
		const cel_map *map;
		struct {
			int64_t seconds;
			int32_t nanos;
		} ts;
		int64_t duration;
		const cel_ip *ip;
		const cel_unknown *unknown;
	};
};

/* Timestamps CEL accepts: years 0001 to 9999. */
#define CEL_MIN_UNIX_SECONDS (-62135596800LL)
#define CEL_MAX_UNIX_SECONDS 253402300799LL

/* Deep equality as CEL defines it (numbers compare across int, uint and
 * double; values of different types are unequal).  Every element visited
 * takes one step from *budget; when it runs out the answer is false and
 * *budget is 0, which the caller reports as the cost limit. */
bool cel_value_equal(const cel_value *a, const cel_value *b, uint64_t *budget);
/* Ordering of two values of the same orderable kind (numbers across
 * kinds): -1, 0, 1; 2 if they do not compare (NaN, other kinds). */
int cel_value_compare(const cel_value *a, const cel_value *b);

/* Parsers shared by literals, conversions and contexts.  Each returns
 * NULL on success or a message (static text) saying what is wrong. */
const char *cel_parse_timestamp(const char *s, size_t len, int64_t *seconds,
                                int32_t *nanos);
const char *cel_parse_duration(const char *s, size_t len, int64_t *nanos);
const char *cel_parse_ip(const char *s, size_t len, cel_ip *out);
/* "10.0.0.0/8", "fe80::/10"; *bits is the prefix length. */
const char *cel_parse_cidr(const char *s, size_t len, cel_ip *out, int *bits);
bool cel_ip_in_prefix(const cel_ip *ip, const cel_ip *prefix, int bits);
/* Text forms, appended to out: RFC 3339 with as many fraction digits as
 * needed, Go duration syntax ("1h2m3.5s"), canonical address. */
void cel_format_timestamp(int64_t seconds, int32_t nanos, strbuf *out);
void cel_format_duration(int64_t nanos, strbuf *out);
void cel_format_ip(const cel_ip *ip, strbuf *out);
/* Go's strconv.FormatFloat(d, 'g', -1, 64). */
void cel_format_double(double d, strbuf *out);
/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid;
 * *code gets the code point. */
size_t cel_utf8_decode(const unsigned char *s, size_t len, uint32_t *code);
/* Appends code point c as UTF-8. */
void cel_utf8_encode(uint32_t c, strbuf *out);

/* ------------------------------------------------------------ syntax tree */

typedef enum cel_node_kind {
	CEL_N_LITERAL,
	CEL_N_IDENT,  /* a parameter or a macro's variable */
	CEL_N_SELECT, /* operand.field, or has(operand.field) */
	CEL_N_CALL,   /* operators and functions */
	CEL_N_LIST,   /* [a, b] */
	CEL_N_MAP,    /* {k: v} */
	CEL_N_MACRO,  /* range.all(var, ...) and friends */
} cel_node_kind;

/* Functions and operators.  The order of the operators matters to the
 * printer's precedence table (print.c). */
typedef enum cel_function {
	CEL_F_NONE,
	/* operators */
	CEL_F_CONDITIONAL, /* _?_:_ */
	CEL_F_OR,
	CEL_F_AND,
	CEL_F_EQ,
	CEL_F_NE,
	CEL_F_LT,
	CEL_F_LE,
	CEL_F_GT,
	CEL_F_GE,
	CEL_F_IN,
	CEL_F_ADD,
	CEL_F_SUB,
	CEL_F_MUL,
	CEL_F_DIV,
	CEL_F_MOD,
	CEL_F_NOT,
	CEL_F_NEG,
	CEL_F_INDEX,
	/* functions (named) */
	CEL_F_SIZE,
	CEL_F_CONTAINS,
	CEL_F_STARTS_WITH,
	CEL_F_ENDS_WITH,
	CEL_F_MATCHES,
	CEL_F_INT,
	CEL_F_UINT,
	CEL_F_DOUBLE,
	CEL_F_STRING,
	CEL_F_BYTES,
	CEL_F_BOOL,
	CEL_F_TIMESTAMP,
	CEL_F_DURATION,
	CEL_F_DYN,
	CEL_F_IN_CIDR,
	CEL_F_GET_FULL_YEAR,
	CEL_F_GET_MONTH,
	CEL_F_GET_DAY_OF_YEAR,
	CEL_F_GET_DAY_OF_MONTH,
	CEL_F_GET_DATE,
	CEL_F_GET_DAY_OF_WEEK,
	CEL_F_GET_HOURS,
	CEL_F_GET_MINUTES,
	CEL_F_GET_SECONDS,
	CEL_F_GET_MILLISECONDS,
	CEL_F_COUNT
} cel_function;

typedef enum cel_macro {
	CEL_M_ALL,
	CEL_M_EXISTS,
	CEL_M_EXISTS_ONE,
	CEL_M_MAP, /* 2 or 3 arguments: map(x, f) / map(x, p, f) */
	CEL_M_FILTER,
} cel_macro;

typedef struct cel_node cel_node;
struct cel_node {
	cel_node_kind kind;
	int line, column;     /* 1-based, relative to the expression text */
	const cel_type *type; /* set by the checker */
	/* LITERAL */
	cel_value literal;
	/* IDENT: the name; SELECT: the field; CALL: the function's name as
	 * written; MACRO: the variable */
	const char *name;
	/* IDENT: parameter index, or -1 for a macro variable */
	int param;
	/* IDENT of a macro variable, MACRO: the variable's slot */
	int slot;
	/* SELECT: has(); CALL: receiver-style (args[0] is the target) */
	bool test_only, receiver;
	cel_function function;
	cel_macro macro;
	/* SELECT: args[0] = operand.  CALL: arguments (receiver first).  LIST:
	 * elements.  MAP: key, value, key, value...  MACRO: args[0] = range,
	 * then the macro's expressions. */
	cel_node **args;
	size_t nargs;
	/* CALL of matches() with a constant pattern: compiled once. */
	regex_t *regex;
};

typedef struct cel_regex_list {
	regex_t *regex;
	struct cel_regex_list *next;
} cel_regex_list;

struct cel_program {
	arena *arena;
	cel_node *root;
	cel_param *params;               /* copies, in declaration order */
	const cel_type **param_types;    /* CEL view */
	const cel_type **param_declared; /* for context conversion */
	size_t nparams;
	bool *used; /* per parameter: mentioned by the expression */
	int nslots; /* macro variables in scope at most at once */
	cel_regex_list *regexes; /* freed with the program */
};

/* ---------------------------------------------------------------- passes */

/* Parses text into *root (allocated from a).  Identifiers are resolved
 * against params (macro variables shadow parameters).  On error returns
 * PEMBA_EINVAL with err's line/column relative to the text. */
int cel_parse(arena *a, const char *text, size_t len, cel_program *p,
              pemba_error *err);
/* Types every node; PEMBA_EINVAL on a type error, worded as CEL words it. */
int cel_check(cel_program *p, pemba_error *err);
/* Parses a normalized parameter type ("map<list<int>>"); NULL if unknown.
 * The CEL view (declared false) types `uint` as int, as SpiceDB declares
 * it; the declared view keeps CEL_T_UINT for context conversion. */
const cel_type *cel_type_parse(arena *a, const char *text, bool declared);
/* Cost of a regex search, shared by the checker (constant patterns) and
 * the evaluator. */
const char *cel_regex_compile(const char *pattern, size_t len, regex_t *out);

/* Converts a JSON value (jansson json_t *) to declared parameter type t.
 * Returns NULL on success, else an arena-allocated message ("a int value is
 * required, but found string `x`"). */
const char *cel_convert_json(arena *a, const void *json, const cel_type *t,
                             cel_value *out);

/* Evaluates p with params[i] the value of parameter i (CEL_V_UNKNOWN when
 * missing). */
int cel_eval_program(const cel_program *p, const cel_value *params,
                     uint64_t cost_limit, arena *a, cel_result *out,
                     pemba_error *err);

void cel_print_node(const cel_node *n, strbuf *out);

#endif
