/*
 * integrity.h -- checking a datastore's relationships against its schema
 * (`pemba datastore check`), and moving the orphans aside.
 *
 * An *orphan* is a live relationship the schema stored with it would
 * refuse to write: its resource type or relation is gone, its relation
 * became a permission, its subject (type, relation, wildcard), caveat or
 * expiration is not among the relation's allowed types.  pemba's own
 * writes never make one (a schema write that would orphan a relationship
 * is refused); they come from hand-edited stores, partial restores and
 * older versions.  The rules are the write path's own
 * (core_classify_rel_schema in relationships.c): an orphan is exactly
 * what a WriteRelationships of the same row would refuse.
 *
 * Unlike core.h this header may be included outside src/core (the CLI):
 * the check works on a datastore below the embedding API (it must not
 * create or migrate one).
 */
#ifndef PEMBA_CORE_INTEGRITY_H
#define PEMBA_CORE_INTEGRITY_H

#include <stddef.h>
#include <stdint.h>

#include "pemba.h"

/* Which rule a relationship breaks (CORE_REL_OK: none).  Stable names for
 * output: core_rel_problem_name(). */
typedef enum core_rel_problem {
	CORE_REL_OK = 0,
	CORE_REL_INVALID,                  /* identifier syntax, lengths */
	CORE_REL_UNKNOWN_RESOURCE_TYPE,    /* no definition of the type */
	CORE_REL_UNKNOWN_RELATION,         /* no relation of that name */
	CORE_REL_PERMISSION,               /* the name is a permission */
	CORE_REL_UNKNOWN_SUBJECT_TYPE,     /* no definition of it */
	CORE_REL_UNKNOWN_SUBJECT_RELATION, /* subject relation missing */
	CORE_REL_SUBJECT_NOT_ALLOWED,      /* type/relation/wildcard */
	CORE_REL_CAVEAT_UNKNOWN,           /* no caveat of that name */
	CORE_REL_CAVEAT_NOT_ALLOWED,       /* caveat (or none) not allowed */
	CORE_REL_CAVEAT_CONTEXT,           /* context does not suit it */
	CORE_REL_EXPIRATION_NOT_ALLOWED,   /* no `with expiration` */
	CORE_REL_EXPIRATION_REQUIRED,      /* only `with expiration` */
	CORE_REL_PROBLEM_COUNT
} core_rel_problem;

/* "unknown_relation", ...; "ok" for CORE_REL_OK. */
const char *core_rel_problem_name(core_rel_problem kind);

/* Opens `uri` for a check: the datastore must exist (a missing SQLite
 * file is PEMBA_ENOTFOUND, never created) and be at the newest layout
 * (PEMBA_EVERSION naming `pemba datastore migrate head` otherwise); no
 * migration is applied.  The handle holds a shared lease with role
 * "check" (store_attach) until closed: `datastore migrate` refuses
 * meanwhile, naming it; PEMBA_EPRECONDITION while a migration runs.
 * Close with pemba_close. */
int core_integrity_open(const char *uri, pemba_db **out, pemba_error *err);

/* One orphan, valid during the callback only. */
typedef struct core_orphan {
	core_rel_problem kind;
	const pemba_relationship *rel;
	const char *message; /* the write path's refusal */
} core_orphan;

/* Return 0 to go on; anything else stops the check, which returns it. */
typedef int (*core_orphan_fn)(void *ctx, const core_orphan *o);
/* Called after each page with the rows checked so far. */
typedef void (*core_check_progress_fn)(void *ctx, uint64_t checked);

typedef struct core_integrity_report {
	pemba_revision revision;        /* the head the check read */
	pemba_revision schema_revision; /* that wrote its schema (0: none) */
	uint64_t checked;               /* live relationships read */
	uint64_t orphans;
	uint64_t by_kind[CORE_REL_PROBLEM_COUNT];
} core_integrity_report;

/* Checks every live relationship at the head (read once, at the start:
 * one MVCC snapshot while writes go on) against the schema current
 * there, reading `page` rows at a time (0: 1000) with store_scan, so
 * memory stays bounded whatever the datastore holds.  Calls fn (may be
 * NULL) for each orphan, in primary-key order, and progress (may be
 * NULL) after each page.  Expired relationships are invisible to every
 * read and are not checked (GC removes them).  History (versions deleted
 * before the head) is not checked: no read at the head can see it.
 * Writes nothing. */
int core_integrity_check(pemba_db *db, size_t page, core_orphan_fn fn,
                         void *ctx, core_check_progress_fn progress,
                         void *progress_ctx, core_integrity_report *out,
                         pemba_error *err);

/* Where core_integrity_remove takes the relationships to delete: 1 and
 * *rel (strings valid until the next call), 0 at the end, < 0 an error
 * (err set). */
typedef int (*core_orphan_source_fn)(void *ctx, pemba_relationship *rel,
                                     pemba_error *err);

/* Deletes exactly the relationships `next` yields, in one write
 * transaction (one new revision, seen by Watch as deletes), and only if
 * each of them, inside that transaction, is still stored exactly so
 * (same caveat, context and expiration) and still an orphan under the
 * schema current there.  Otherwise nothing is deleted:
 * PEMBA_EPRECONDITION naming the first that changed (a concurrent write,
 * or a schema that was fixed meanwhile); PEMBA_EREADONLY when the
 * datastore is read-only (the flag or a `mode=ro` handle).  Nothing to
 * delete commits nothing (*rev_out 0).  *removed_out: rows deleted. */
int core_integrity_remove(pemba_db *db, core_orphan_source_fn next, void *ctx,
                          pemba_revision *rev_out, uint64_t *removed_out,
                          pemba_error *err);

/* Whether a write would be accepted now: PEMBA_OK, or PEMBA_EREADONLY
 * (read-only flag, or a handle opened `mode=ro`).  Writes nothing: the
 * probe transaction is rolled back. */
int core_integrity_writable(pemba_db *db, pemba_error *err);

#endif
