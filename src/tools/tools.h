/*
 * tools.h -- operator tools built on the public API (pemba.h): today the
 * runner of SpiceDB/zed validation files.  Tools never print; they return
 * structured results for the CLI (or an embedder) to present.
 */
#ifndef PEMBA_TOOLS_H
#define PEMBA_TOOLS_H

#include <stdbool.h>
#include <stddef.h>

/* ------------------------------------------------------ validation files */

/* One finding about a validation file.  line/column are 1-based positions
 * in the YAML file, 0 when not known. */
typedef struct validate_issue {
	int line, column;
	char *message; /* one line, heap-owned by the result */
} validate_issue;

/* The outcome of running one validation file.  Fill it with
 * validate_file()/validate_text() and release it with
 * validate_result_free(). */
typedef struct validate_result {
	size_t relationships;             /* relationships loaded */
	size_t assertions;                /* assertions evaluated */
	size_t assertions_failed;         /* of those, how many failed */
	size_t expected_relations;        /* `validation` keys evaluated */
	size_t expected_relations_failed; /* of those, how many failed */
	bool unsupported; /* the library refused a caveat (PEMBA_EUNSUPPORTED:
	                     not implemented yet on that path); see the
	                     failure message */
	validate_issue *failures; /* every reason the file fails */
	size_t nfailures;
	validate_issue *notes; /* things not checked; not failures */
	size_t nnotes;
} validate_result;

/* Runs the validation file at `path` in-process against a fresh in-memory
 * datastore: writes its schema, loads its relationships (TOUCH, in batches
 * of at most PEMBA_MAX_UPDATES), evaluates its assertions (assertTrue,
 * assertFalse, assertCaveated) and compares its expected relations (the
 * `validation` block) with recursive expansions.  Fills *out
 * (which the caller later releases with validate_result_free()).  Returns 0
 * if the file passes and 1 if it fails; every failure, including unreadable
 * files and malformed YAML, is listed in out->failures (the first 1000; a
 * last entry then says more were dropped).  A file may hold at most
 * 1,000,000 relationships, 100,000 assertions and 100,000 expected-relations
 * items; more fail it with a
 * message saying so.  NULL arguments fail the same way (out NULL: returns
 * 1 and fills nothing).  Never prints. */
int validate_file(const char *path, validate_result *out);

/* Same, for a validation file held in memory.  base_dir, if non-NULL, is
 * where a `schemaFile:` key is resolved (the current directory otherwise). */
int validate_text(const char *yaml, size_t len, const char *base_dir,
                  validate_result *out);

/* validate_file()/validate_text() against the datastore at `datastore`
 * (a pemba_open() URI; NULL: a private in-memory one, as above).  It must
 * be empty (head revision 0): a datastore anything was ever written into
 * fails the file with a message saying so, and nothing is written.  What
 * the file loads stays in the datastore afterwards. */
int validate_file_in(const char *path, const char *datastore,
                     validate_result *out);
int validate_text_in(const char *yaml, size_t len, const char *base_dir,
                     const char *datastore, validate_result *out);

/* 0 if the datastore at uri opens and is empty (head revision 0); else 1
 * and *why (malloc'd, the caller frees it) says why, without repeating the
 * URI (which may hold a password). */
int validate_datastore_check(const char *uri, char **why);

void validate_result_free(validate_result *r);

#endif
