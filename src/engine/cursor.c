/*
 * cursor.c -- the opaque cursors of LookupResources and LookupSubjects.
 *
 * Both lookups return results in ascending byte order of id, so the last
 * id returned is all a cursor needs to resume exactly: "v1." followed by
 * that id in lower-case hex (ids may hold any byte SpiceDB's id rule
 * allows; hex keeps the token printable and free of separators).
 */
#include <string.h>

#include "engine/internal.h"
#include "util/error.h"

#define CURSOR_PREFIX "v1."

const char *engine_cursor_encode(arena *a, const char *id)
{
	static const char digits[] = "0123456789abcdef";
	size_t n = strlen(id), p = sizeof(CURSOR_PREFIX) - 1;
	char *out = arena_alloc(a, p + 2 * n + 1);
	memcpy(out, CURSOR_PREFIX, p);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)id[i];
		out[p + 2 * i] = digits[ch >> 4];
		out[p + 2 * i + 1] = digits[ch & 15];
	}
	out[p + 2 * n] = '\0';
	return out;
}

static int hex_value(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

int engine_cursor_decode(arena *a, const char *cursor, const char **id_out,
                         pemba_error *err)
{
	*id_out = NULL;
	if (cursor == NULL || cursor[0] == '\0')
		return PEMBA_OK;
	size_t p = sizeof(CURSOR_PREFIX) - 1, n = strlen(cursor);
	if (n <= p || strncmp(cursor, CURSOR_PREFIX, p) != 0 ||
	    (n - p) % 2 != 0 || (n - p) / 2 > PEMBA_MAX_OBJECT_ID)
		return error_set(err, PEMBA_EINVAL, "malformed cursor");
	size_t len = (n - p) / 2;
	char *id = arena_alloc(a, len + 1);
	for (size_t i = 0; i < len; i++) {
		int hi = hex_value(cursor[p + 2 * i]);
		int lo = hex_value(cursor[p + 2 * i + 1]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			return error_set(err, PEMBA_EINVAL, "malformed cursor");
		id[i] = (char)(hi << 4 | lo);
	}
	id[len] = '\0';
	*id_out = id;
	return PEMBA_OK;
}
