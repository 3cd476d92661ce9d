/*
 * backup_redact.h -- redacting a backup as `zed backup redact` does: the
 * schema's definition, caveat, relation and permission names and the
 * relationships' object ids are replaced by meaningless names, keeping
 * the permission structure, so the redacted backup restores and answers
 * the same questions (about the redacted names).
 *
 * Names as zed gives them: one counter over definitions (`def0`, `def1`,
 * ...; in schema order), then caveats (`cavN`), then relations and
 * permissions (`relN`; one name per distinct relation name across all
 * definitions); object ids `obj1`, `obj2`, ... in order of first
 * appearance (resource before subject); the wildcard `*` stays.  Doc
 * comments are dropped; caveat parameters and expressions are kept (zed
 * does not redact them either).
 *
 * Memory: the schema, the name maps and, with object ids redacted, one
 * entry per distinct object id (the map must be complete to be printed).
 * Never prints.
 */
#ifndef PEMBA_TOOLS_BACKUP_REDACT_H
#define PEMBA_TOOLS_BACKUP_REDACT_H

#include <stdbool.h>

#include "tools/backup_format.h"

typedef struct backup_redact_options {
	bool definitions; /* definition and caveat names */
	bool relations;   /* relation and permission names */
	bool object_ids;
} backup_redact_options;

typedef struct backup_redactor backup_redactor;

/* Compiles schema_text and redacts it.  Returns the redactor and
 * *redacted_schema (owned by the redactor), or NULL with error filled (a
 * schema that does not compile). */
backup_redactor *backup_redactor_new(const char *schema_text,
                                     const backup_redact_options *options,
                                     const char **redacted_schema,
                                     char error[BACKUP_ERROR_LEN]);

/* Redacts one relationship into *out, whose strings belong to the
 * redactor (valid until it is freed).  Returns 0, or -1 with error filled
 * when the relationship names a type, relation or caveat the schema
 * lacks. */
int backup_redact_relationship(backup_redactor *r,
                               const backup_relationship *in,
                               backup_relationship *out,
                               char error[BACKUP_ERROR_LEN]);

/* Calls fn for every entry of the redaction map: kind is "definition",
 * "caveat", "relation" or "object-id"; in the order the names were
 * given. */
void backup_redactor_map(const backup_redactor *r,
                         void (*fn)(void *ctx, const char *kind,
                                    const char *original, const char *redacted),
                         void *ctx);

void backup_redactor_free(backup_redactor *r);

#endif
