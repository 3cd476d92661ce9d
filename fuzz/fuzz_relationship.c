/*
 * fuzz_relationship.c -- libFuzzer target for the relationship text syntax.
 *
 * Feeds arbitrary bytes to pemba_parse_relationship().  Whatever parses must
 * survive a round trip: formatting it and parsing the result gives the same
 * fields, and formatting is idempotent.  Sanitizers catch out-of-bounds reads
 * and leaks; abort() flags a broken round trip.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pemba.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same_string(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static int same_relationship(const pemba_relationship *a,
                             const pemba_relationship *b)
{
	return same_string(a->resource_type, b->resource_type) &&
	       same_string(a->resource_id, b->resource_id) &&
	       same_string(a->relation, b->relation) &&
	       same_string(a->subject_type, b->subject_type) &&
	       same_string(a->subject_id, b->subject_id) &&
	       same_string(a->subject_relation, b->subject_relation) &&
	       same_string(a->caveat_name, b->caveat_name) &&
	       same_string(a->caveat_context, b->caveat_context) &&
	       a->expiration_ms == b->expiration_ms;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The API takes a C string; an embedded NUL just ends it early. */
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	pemba_relationship first;
	char *first_storage;
	pemba_error err;
	int rc = pemba_parse_relationship(text, &first, &first_storage, &err);
	if (rc != 0) {
		/* Failures are EINVAL with a message and no storage. */
		if (rc != PEMBA_EINVAL || err.code != PEMBA_EINVAL ||
		    err.message[0] == '\0' || first_storage != NULL)
			abort();
		free(text);
		return 0;
	}

	char *formatted = pemba_format_relationship(&first);
	pemba_relationship second;
	char *second_storage;
	if (pemba_parse_relationship(formatted, &second, &second_storage,
	                             &err) != 0)
		abort(); /* the canonical form must parse */
	if (!same_relationship(&first, &second))
		abort();
	char *reformatted = pemba_format_relationship(&second);
	if (strcmp(formatted, reformatted) != 0)
		abort();

	pemba_free(reformatted);
	pemba_free(second_storage);
	pemba_free(formatted);
	pemba_free(first_storage);
	free(text);
	return 0;
}
