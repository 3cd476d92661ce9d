/*
 * progress.h -- one progress line on stderr for the long commands
 * (relationship import|export|bulk-delete, backup create, verify, mirror's
 * initial copy), only when stderr is a terminal: nothing at all in
 * scripts, pipes and logs.
 *
 *   pemba: imported 120000 of 500000 relationships (24%), 41000/s, ETA 9s
 *
 * The line is redrawn in place (\r, then erase to the end of the line)
 * at most 10 times a second; cli_progress_end draws the final count and
 * ends the line, so the next message starts on its own.
 */
#ifndef PEMBA_CLI_PROGRESS_H
#define PEMBA_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cli_progress {
	const char *verb; /* "imported", "exported", "copied", ... */
	const char *unit; /* "relationships" */
	uint64_t total;   /* 0: unknown (no percentage, no ETA) */
	uint64_t base;    /* count when this run began (resumed work) */
	bool on;          /* stderr is a terminal */
	bool shown;       /* a line is on the screen */
	double start, last;
} cli_progress;

/* Starts a progress line (drawn at the first update).  The environment
 * variable PEMBA_PROGRESS=0 turns it off, =1 on even without a terminal
 * (for tests). */
void cli_progress_begin(cli_progress *p, const char *verb, const char *unit,
                        uint64_t total);

/* The count so far (the rate counts from the first update's count when
 * base was set with cli_progress_rebase). */
void cli_progress_update(cli_progress *p, uint64_t count);

/* Counts before now are not part of the rate (a resumed run). */
void cli_progress_rebase(cli_progress *p, uint64_t count);

/* Draws the final count and ends the line (when one was shown). */
void cli_progress_end(cli_progress *p, uint64_t count);

#endif
