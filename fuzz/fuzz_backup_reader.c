/*
 * fuzz_backup_reader.c -- libFuzzer target for the backup reader
 * (src/tools/backup_format.h): arbitrary bytes as a backup file.  The
 * reader must never crash or read out of bounds; whatever it refuses must
 * come with a message, and every string it returns is NUL-terminated.
 * abort() flags a violation.
 */
#define _GNU_SOURCE /* fmemopen */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/backup_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	FILE *f = fmemopen((void *)data, size, "rb");
	if (!f)
		return 0;
	char error[BACKUP_ERROR_LEN] = "";
	backup_reader *r = backup_reader_open(f, error);
	if (!r) {
		if (error[0] == '\0')
			abort();
		fclose(f);
		return 0;
	}
	backup_relationship rel;
	int rc, n = 0;
	size_t total =
	    strlen(backup_reader_schema(r)) + strlen(backup_reader_zedtoken(r));
	/* Touch every string so ASan sees a missing terminator. */
	while ((rc = backup_reader_next(r, &rel)) == 1 && n++ < 100000)
		total += strlen(rel.object_type) + strlen(rel.object_id) +
		         strlen(rel.relation) +
		         strlen(rel.subject_object_type) +
		         strlen(rel.subject_object_id) +
		         strlen(rel.subject_relation) +
		         strlen(rel.caveat_name) + rel.caveat_context_len;
	if (total == SIZE_MAX)
		abort();
	if (rc < 0 && backup_reader_error(r)[0] == '\0')
		abort();
	backup_reader_free(r);
	fclose(f);
	return 0;
}
