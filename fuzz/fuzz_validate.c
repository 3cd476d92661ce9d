/*
 * fuzz_validate.c -- libFuzzer target for the validation-file runner.
 *
 * Feeds arbitrary bytes to validate_text() as a whole validation file
 * (YAML, schema, relationships, assertions) and frees the result.  The
 * runner must never crash, leak or hang, whatever the input; and it must
 * explain every failure: a failing result lists at least one failure, each
 * with a non-empty message, and a passing result lists none.  Sanitizers
 * catch memory errors and leaks; abort() flags a broken result.
 *
 * schemaFile: is resolved in a directory that does not exist, so the
 * fuzzer cannot make the runner read files of the machine it runs on.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tools/tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	validate_result result;
	int rc = validate_text((const char *)data, size,
	                       "/nonexistent-pemba-fuzz-dir", &result);
	if (rc != 0 && rc != 1)
		abort();
	if ((rc == 1) != (result.nfailures > 0))
		abort(); /* a failing run says why; a passing one has none */
	for (size_t i = 0; i < result.nfailures; i++)
		if (!result.failures[i].message ||
		    !result.failures[i].message[0])
			abort();
	for (size_t i = 0; i < result.nnotes; i++)
		if (!result.notes[i].message || !result.notes[i].message[0])
			abort();
	validate_result_free(&result);
	return 0;
}
