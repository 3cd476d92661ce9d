/*
 * backup_rewrite.h -- zed's backup rewriters: `--prefix-filter P` keeps
 * only the schema's definitions and caveats named `P/...` and the
 * relationships whose resource and subject types start with P;
 * `--prefix-replacements old=new,...` renames the prefix before the first
 * `/` of definition and caveat names, wherever they appear (an empty new
 * prefix removes it).  The filter runs before the replacements, as in zed.
 * Unlike zed, replacements also rename caveat names in allowed types and
 * relationships, so a renamed caveat keeps its relationships.
 *
 * Never prints.
 */
#ifndef PEMBA_TOOLS_BACKUP_REWRITE_H
#define PEMBA_TOOLS_BACKUP_REWRITE_H

#include "tools/backup_format.h"

typedef struct backup_rewriter backup_rewriter;

/* prefix_filter: NULL or "" for none; replacements: NULL, "" or
 * "old=new[,old2=new2...]".  Returns NULL with error filled for a
 * malformed replacement list. */
backup_rewriter *backup_rewriter_new(const char *prefix_filter,
                                     const char *replacements,
                                     char error[BACKUP_ERROR_LEN]);

/* True when the rewriter changes anything. */
bool backup_rewriter_active(const backup_rewriter *rw);

/* The rewritten schema text (heap, caller frees), or NULL with error
 * filled: the schema does not compile, the filter removes every
 * definition, or the result does not compile. */
char *backup_rewrite_schema(backup_rewriter *rw, const char *schema_text,
                            char error[BACKUP_ERROR_LEN]);

/* 1 with *out filled (its strings belong to the rewriter until the next
 * call), or 0 when the filter drops the relationship. */
int backup_rewrite_relationship(backup_rewriter *rw,
                                const backup_relationship *in,
                                backup_relationship *out);

void backup_rewriter_free(backup_rewriter *rw);

#endif
