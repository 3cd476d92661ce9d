/*
 * fuzz_relfile.c -- libFuzzer target for relationship files
 * (src/tools/relfile.h), the input of `pemba relationship import`.
 *
 * Feeds arbitrary bytes as a file, reads every relationship to the end or
 * the first error.  The reader must never crash, leak or hang; every
 * error must name a line ("line N: ..."), and every relationship it
 * returns must have its five required parts and a line number >= 1.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/relfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	FILE *in = fmemopen((void *)data, size, "r");
	if (!in)
		return 0;
	relfile *f = NULL;
	char *error = NULL;
	if (relfile_open(in, &f, &error) != 0) {
		if (!error || (strncmp(error, "line ", 5) != 0 &&
		               strcmp(error, "cannot read the input") != 0))
			abort();
		free(error);
		fclose(in);
		return 0;
	}
	for (;;) {
		pemba_relationship rel;
		int line = 0;
		const char *why = NULL;
		int rc = relfile_next(f, &rel, &line, &why);
		if (rc == 0)
			break;
		if (rc < 0) {
			if (!why || strncmp(why, "line ", 5) != 0)
				abort();
			break;
		}
		if (line < 1 || !rel.resource_type[0] || !rel.resource_id[0] ||
		    !rel.relation[0] || !rel.subject_type[0] ||
		    !rel.subject_id[0])
			abort();
	}
	relfile_close(f);
	fclose(in);
	return 0;
}
