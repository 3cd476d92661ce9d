/*
 * duration.c -- durations on the command line, as SpiceDB's flags take
 * them (Go's time.ParseDuration): a sequence of numbers with units, e.g.
 * "500ms", "90s", "3m", "1h30m", "24h"; pemba also takes "d" (days) and a
 * plain number of seconds.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int cli_parse_duration_ms(const char *text, int64_t *out)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = {
	    {"ms", 1},          {"s", 1000},     {"m", 60 * 1000},
	    {"h", 3600 * 1000}, {"d", 86400000},
	};
	if (!text || !*text)
		return -1;
	int64_t total = 0;
	const char *p = text;
	while (*p) {
		if (!isdigit((unsigned char)*p))
			return -1;
		char *end;
		errno = 0;
		long long v = strtoll(p, &end, 10);
		if (errno || v < 0)
			return -1;
		p = end;
		int64_t unit = 0;
		if (*p == '\0' && p == text + strspn(text, "0123456789")) {
			unit = 1000; /* a plain number: seconds */
		} else {
			for (size_t i = 0; i < sizeof(units) / sizeof(units[0]);
			     i++) {
				size_t n = strlen(units[i].unit);
				if (strncmp(p, units[i].unit, n) == 0 &&
				    !(n == 1 && units[i].unit[0] == 'm' &&
				      p[1] == 's')) {
					unit = units[i].ms;
					p += n;
					break;
				}
			}
			if (!unit)
				return -1;
		}
		if (v > (INT64_MAX - total) / unit)
			return -1;
		total += (int64_t)v * unit;
	}
	*out = total;
	return 0;
}
