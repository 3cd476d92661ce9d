#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void vfill(pemba_error *err, int code, int line, int column,
                  const char *fmt, va_list ap)
{
	err->code = code;
	err->line = line;
	err->column = column;
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
}

int error_set(pemba_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vfill(err, code, 0, 0, fmt, ap);
		va_end(ap);
	}
	return code;
}

int error_set_at(pemba_error *err, int code, int line, int column,
                 const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vfill(err, code, line, column, fmt, ap);
		va_end(ap);
	}
	return code;
}

void error_clear(pemba_error *err)
{
	if (err) {
		err->code = 0;
		err->line = err->column = 0;
		err->message[0] = '\0';
	}
}

const char *pemba_strerror(int code)
{
	switch (code) {
	case PEMBA_OK: return "ok";
	case PEMBA_EINVAL: return "invalid argument";
	case PEMBA_EPRECONDITION: return "failed precondition";
	case PEMBA_EEXISTS: return "already exists";
	case PEMBA_ENOTFOUND: return "not found";
	case PEMBA_EDEPTH: return "max depth exceeded";
	case PEMBA_EREVISION: return "revision unavailable";
	case PEMBA_EIO: return "datastore error";
	case PEMBA_ENOMEM: return "out of memory";
	case PEMBA_EUNSUPPORTED: return "unsupported";
	case PEMBA_EREADONLY: return "read-only";
	case PEMBA_ELIMIT: return "limit exceeded";
	case PEMBA_EVERSION: return "datastore version mismatch";
	default: return "unknown error";
	}
}
