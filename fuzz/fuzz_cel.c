/*
 * fuzz_cel.c -- libFuzzer target for caveat expressions (src/cel).
 *
 * The input is split at its first NUL byte: the expression, then an
 * optional JSON context.  The expression is compiled against a fixed
 * parameter set covering every type; a compiled program must print to
 * text that compiles and prints identically (printing is a fixed point),
 * and evaluation against the context (and against no context, which
 * leaves every parameter unknown) must end in a result or an error code
 * cel.h documents, within the cost limit.  Anything else aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel/cel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const cel_param params[] = {
    {"i", "int"},       {"u", "uint"},        {"d", "double"},
    {"b", "bool"},      {"s", "string"},      {"y", "bytes"},
    {"l", "list<int>"}, {"m", "map<string>"}, {"t", "timestamp"},
    {"du", "duration"}, {"ip", "ipaddress"},  {"x", "any"},
};
#define NPARAMS (sizeof(params) / sizeof(params[0]))

static void die(const char *what, const char *text)
{
	fprintf(stderr, "fuzz_cel: %s\n--- text:\n%s\n", what,
	        text ? text : "");
	abort();
}

static void evaluate(const cel_program *p, const char *context)
{
	arena *a = arena_create(0);
	cel_result r;
	pemba_error err;
	int rc = cel_evaluate(p, context, NULL, 20000, a, &r, &err);
	if (rc == 0) {
		if (r.outcome != CEL_TRUE && r.outcome != CEL_FALSE &&
		    r.outcome != CEL_PARTIAL)
			die("bad outcome", NULL);
		if ((r.outcome == CEL_PARTIAL) != (r.nmissing > 0))
			die("missing names do not match the outcome", NULL);
		for (size_t i = 1; i < r.nmissing; i++)
			if (strcmp(r.missing[i - 1], r.missing[i]) >= 0)
				die("missing names not sorted and unique",
				    r.missing[i]);
	} else if (rc != PEMBA_EINVAL && rc != PEMBA_EPRECONDITION &&
	           rc != PEMBA_ELIMIT) {
		die("unexpected error code", err.message);
	}
	arena_destroy(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	const char *context = NULL;
	size_t expr_len = strlen(text);
	if (expr_len < size)
		context = text + expr_len + 1;

	cel_program *p = NULL;
	pemba_error err;
	int rc = cel_compile(text, params, NPARAMS, &p, &err);
	if (rc != 0) {
		if (p || rc != PEMBA_EINVAL || err.line < 1 || err.column < 1 ||
		    err.message[0] == '\0')
			die("error without a position or message", err.message);
		free(text);
		return 0;
	}
	strbuf first, second;
	strbuf_init(&first);
	strbuf_init(&second);
	cel_program_print(p, &first);
	cel_program *again = NULL;
	if (cel_compile(first.data, params, NPARAMS, &again, &err) != 0) {
		fprintf(stderr, "reparse error at %d:%d: %s\n", err.line,
		        err.column, err.message);
		die("canonical text does not compile", first.data);
	}
	cel_program_print(again, &second);
	if (strcmp(first.data, second.data) != 0)
		die("printing is not a fixed point", second.data);
	for (size_t i = 0; i < NPARAMS; i++)
		if (cel_program_uses_param(p, params[i].name) !=
		    cel_program_uses_param(again, params[i].name))
			die("reprinting changed the parameters used",
			    first.data);

	evaluate(p, context);
	evaluate(p, NULL);

	strbuf_free(&first);
	strbuf_free(&second);
	cel_program_free(again);
	cel_program_free(p);
	free(text);
	return 0;
}
