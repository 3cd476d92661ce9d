/*
 * error.h -- helpers for filling the public pemba_error.
 */
#ifndef PEMBA_ERROR_H
#define PEMBA_ERROR_H

#include "pemba.h"

/* Fills *err (if non-NULL) and returns code, so callers can write
 * `return error_set(err, PEMBA_EINVAL, "...", ...);`. */
int error_set(pemba_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Same, with a schema position (1-based line and column). */
int error_set_at(pemba_error *err, int code, int line, int column,
                 const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void error_clear(pemba_error *err);

#endif
