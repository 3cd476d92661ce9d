/*
 * progress.c -- the progress line of the long commands (progress.h).
 */
#include "cli/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void cli_progress_begin(cli_progress *p, const char *verb, const char *unit,
                        uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->verb = verb;
	p->unit = unit;
	p->total = total;
	const char *env = getenv("PEMBA_PROGRESS");
	if (env && strcmp(env, "0") == 0)
		p->on = false;
	else if (env && strcmp(env, "1") == 0)
		p->on = true;
	else
		p->on = isatty(STDERR_FILENO) != 0;
	p->start = now_seconds();
	p->last = 0;
}

void cli_progress_rebase(cli_progress *p, uint64_t count)
{
	p->base = count;
	p->start = now_seconds();
}

/* "1h02m", "3m05s", "42s", "0.3s". */
static void format_duration(char *buf, size_t size, double secs)
{
	if (secs < 0)
		secs = 0;
	long s = (long)(secs + 0.5);
	if (secs < 10)
		snprintf(buf, size, "%.1fs", secs);
	else if (s >= 3600)
		snprintf(buf, size, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
	else if (s >= 60)
		snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
	else
		snprintf(buf, size, "%lds", s);
}

static void draw(cli_progress *p, uint64_t count, double now, bool final)
{
	double elapsed = now - p->start;
	uint64_t done = count > p->base ? count - p->base : 0;
	double rate = elapsed > 0 ? (double)done / elapsed : 0;
	char tail[96] = "";
	if (final) {
		char d[32];
		format_duration(d, sizeof(d), elapsed);
		snprintf(tail, sizeof(tail), " in %s", d);
	} else if (p->total && rate > 0 && count < p->total) {
		char d[32];
		format_duration(d, sizeof(d),
		                (double)(p->total - count) / rate);
		snprintf(tail, sizeof(tail), ", ETA %s", d);
	}
	if (p->total)
		fprintf(stderr,
		        "\rpemba: %s %llu of %llu %s (%.0f%%), %.0f/s%s\033[K",
		        p->verb, (unsigned long long)count,
		        (unsigned long long)p->total, p->unit,
		        count >= p->total
		            ? 100.0
		            : 100.0 * (double)count / (double)p->total,
		        rate, tail);
	else
		fprintf(stderr, "\rpemba: %s %llu %s, %.0f/s%s\033[K", p->verb,
		        (unsigned long long)count, p->unit, rate, tail);
	fflush(stderr);
	p->shown = true;
	p->last = now;
}

void cli_progress_update(cli_progress *p, uint64_t count)
{
	if (!p->on)
		return;
	double now = now_seconds();
	if (now - p->last < 0.1)
		return;
	draw(p, count, now, false);
}

void cli_progress_end(cli_progress *p, uint64_t count)
{
	if (!p->on)
		return;
	draw(p, count, now_seconds(), true);
	fputc('\n', stderr);
	fflush(stderr);
	p->shown = false;
}
