/*
 * fuzz_schema.c -- libFuzzer target for the schema layer.
 *
 * Every input must either fail with a positioned error or compile to a
 * schema whose canonical text compiles again to an equal schema and
 * prints identically (printing is a fixed point).  Anything else aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const char *text)
{
	fprintf(stderr, "fuzz_schema: %s\n--- canonical text:\n%s\n", what,
	        text ? text : "");
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	schema *s = NULL;
	pemba_error err;
	int rc = schema_compile((const char *)data, size, &s, &err);
	if (rc != 0) {
		if (s || err.code != rc || err.line < 1 || err.column < 1 ||
		    err.message[0] == '\0')
			die("error without a position or message", err.message);
		if (rc != PEMBA_EINVAL && rc != PEMBA_EPRECONDITION)
			die("unexpected error code", err.message);
		return 0;
	}

	strbuf first, second;
	strbuf_init(&first);
	strbuf_init(&second);
	schema_print(s, &first);

	schema *again = NULL;
	if (schema_compile(first.data, first.len, &again, &err) != 0) {
		fprintf(stderr, "reparse error at %d:%d: %s\n", err.line,
		        err.column, err.message);
		die("canonical text does not compile", first.data);
	}
	if (!schema_equal(s, again) || !schema_equal(again, s))
		die("canonical text compiles to a different schema",
		    first.data);
	schema_print(again, &second);
	if (first.len != second.len ||
	    memcmp(first.data, second.data, first.len) != 0)
		die("printing is not a fixed point", second.data);

	strbuf_free(&first);
	strbuf_free(&second);
	schema_free(again);
	schema_free(s);
	return 0;
}
