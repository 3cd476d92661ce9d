/*
 * relfile.h -- reading relationship files: one relationship per line in
 * SpiceDB's syntax (`document:1#viewer@user:anne[caveat:{...}]
 * [expiration:...]`), blank lines and `#` / `//` comments skipped; or a
 * SpiceDB validation file (YAML), whose `relationships:` block holds the
 * same lines.  For `pemba relationship import`; never prints.
 */
#ifndef PEMBA_TOOLS_RELFILE_H
#define PEMBA_TOOLS_RELFILE_H

#include <stdio.h>

#include "pemba.h"

typedef struct relfile relfile;

/* Starts reading `in` (which the reader does not close) from its current
 * position.  The format is decided by the first line that is neither
 * blank nor a comment: YAML when it is `---` or a mapping key (`name:`
 * followed by a space or the end of the line, which no relationship
 * is), relationship lines otherwise.  YAML is read whole (libyaml's
 * document API); lines are read one at a time (bounded memory).  Returns
 * 0 and *out (free with relfile_close), or -1 with *error set to a
 * heap-owned message (free()) naming the line, e.g. "line 3: ...". */
int relfile_open(FILE *in, relfile **out, char **error);

/* Whether the input was taken for a validation file. */
int relfile_is_yaml(const relfile *f);

/* The next relationship: returns 1 with *rel (its strings valid until the
 * next call) and *line (1-based, in the input), 0 at the end, or -1 with
 * *error (owned by the reader, valid until the next call) of the form
 * "line N: reason" for a line that does not parse. */
int relfile_next(relfile *f, pemba_relationship *rel, int *line,
                 const char **error);

void relfile_close(relfile *f);

#endif
