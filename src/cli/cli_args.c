/*
 * cli_args.c -- argument parsing shared by the commands.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int64_t cli_parse_duration_ms(const char *text)
{
	char *end;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (errno || end == text || v < 0)
		return -1;
	int64_t unit = 1000; /* plain numbers are seconds */
	if (strcmp(end, "ms") == 0)
		unit = 1, end += 2;
	else if (*end == 's')
		end++;
	else if (*end == 'm')
		unit = 60 * 1000, end++;
	else if (*end == 'h')
		unit = 3600 * 1000, end++;
	else if (*end == 'd')
		unit = 86400 * 1000, end++;
	if (*end != '\0' || v > INT64_MAX / unit)
		return -1;
	return (int64_t)v * unit;
}
