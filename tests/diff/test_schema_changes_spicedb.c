/*
 * test_schema_changes_spicedb.c -- sequences of schema writes and
 * relationship writes run against pemba and the real SpiceDB
 * (libspicedb.so, tests/support/spicedb_ref.h): step by step, both must
 * accept or both refuse with the same gRPC status, and a refused schema
 * write must give the same rule (the message up to the blocking
 * relationship, which each datastore picks in its own order).
 *
 * Each sequence runs on a fresh in-memory pemba and a fresh SpiceDB
 * instance.  Without the library the test fails, unless
 * PEMBA_DIFF_ALLOW_SKIP=1 (then it exits 0 after saying so).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pemba.h"
#include "pg_fixture.h"
#include "spicedb_ref.h"

/* A step: "S" + schema text, "T" + relationship (TOUCH), "X" + resource
 * type (delete every relationship of that type). */
typedef struct step {
	char op;
	const char *arg;
} step;

typedef struct sequence {
	const char *name;
	step steps[16];
} sequence;

#define BASE                                                                   \
	"definition user {}\n"                                                 \
	"definition group {\n\trelation member: user\n}\n"                     \
	"definition resource {\n"                                              \
	"\trelation editor: user | group#member | user:*\n"                    \
	"\trelation viewer: user\n"                                            \
	"\tpermission view = viewer + editor\n}\n"

static const sequence SEQUENCES[] = {
    {"remove a relation with relationships, then without",
     {{'S', BASE},
      {'T', "resource:1#editor@user:2"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n\trelation viewer: user\n"
            "\tpermission view = viewer\n}\n"},
      {'X', "resource"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n\trelation viewer: user\n"
            "\tpermission view = viewer\n}\n"},
      {'T', "resource:1#editor@user:2"},
      {0, NULL}}},
    {"remove a relation used as a subject relation",
     {{'S', BASE},
      {'T', "resource:1#editor@group:eng#member"},
      {'S', "definition user {}\ndefinition group {}\n"
            "definition resource {\n\trelation editor: user\n"
            "\trelation viewer: user\n"
            "\tpermission view = viewer + editor\n}\n"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n\trelation editor: user\n"
            "\trelation viewer: user\n"
            "\tpermission view = viewer + editor\n}\n"},
      {0, NULL}}},
    {"remove allowed types: plain, wildcard",
     {{'S', BASE},
      {'T', "resource:1#editor@user:*"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: group#member | user:*\n"
            "\trelation viewer: user\n"
            "\tpermission view = viewer + editor\n}\n"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: user | group#member\n"
            "\trelation viewer: user\n"
            "\tpermission view = viewer + editor\n}\n"},
      {'X', "resource"},
      {'T', "resource:1#editor@user:3"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: user | group#member\n"
            "\trelation viewer: user\n"
            "\tpermission view = viewer + editor\n}\n"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: group#member\n"
            "\trelation viewer: user\n"
            "\tpermission view = viewer + editor\n}\n"},
      {0, NULL}}},
    {"remove allowed types with caveats and expiration",
     {{'S', "use expiration\ncaveat cav(a int) {\n\ta == 1\n}\n"
            "definition user {}\ndefinition resource {\n"
            "\trelation editor: user | user with cav | user with "
            "expiration\n}\n"},
      {'T', "resource:2#editor@user:5[cav]"},
      {'T', "resource:3#editor@user:6[expiration:2030-01-01T00:00:00Z]"},
      {'S', "use expiration\ncaveat cav(a int) {\n\ta == 1\n}\n"
            "definition user {}\ndefinition resource {\n"
            "\trelation editor: user | user with expiration\n}\n"},
      {'S', "use expiration\ncaveat cav(a int) {\n\ta == 1\n}\n"
            "definition user {}\ndefinition resource {\n"
            "\trelation editor: user | user with cav\n}\n"},
      {'S', "use expiration\ncaveat cav(a int) {\n\ta == 1\n}\n"
            "definition user {}\ndefinition resource {\n"
            "\trelation editor: user with cav | user with expiration\n}\n"},
      {'T', "resource:4#editor@user:7"},
      {0, NULL}}},
    {"remove a definition with and without relationships",
     {{'S', BASE},
      {'T', "resource:1#viewer@user:3"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\n"},
      {'X', "resource"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\n"},
      {'T', "resource:1#viewer@user:3"},
      {0, NULL}}},
    {"caveat parameters: remove, retype, add",
     {{'S', "caveat cav(a int, b string) {\n\ta == 1 && b == \"x\"\n}\n"
            "definition user {}\n"},
      {'S', "caveat cav(b string) {\n\tb == \"x\"\n}\n"
            "definition user {}\n"},
      {'S', "caveat cav(a string, b string) {\n\ta == \"1\" && b == "
            "\"x\"\n}\ndefinition user {}\n"},
      {'S', "caveat cav(a int, b string, c bool) {\n\ta == 2 && b == "
            "\"y\" && c\n}\ndefinition user {}\n"},
      {'S', "definition user {}\n"},
      {0, NULL}}},
    {"relation to permission and back",
     {{'S', BASE},
      {'T', "resource:1#viewer@user:3"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: user | group#member | user:*\n"
            "\tpermission viewer = editor\n"
            "\tpermission view = viewer + editor\n}\n"},
      {'X', "resource"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: user | group#member | user:*\n"
            "\tpermission viewer = editor\n"
            "\tpermission view = viewer + editor\n}\n"},
      {'S', BASE},
      {0, NULL}}},
    {"permissions change freely; writes follow the new schema",
     {{'S', BASE},
      {'T', "resource:1#editor@user:2"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: user | group#member | user:*\n"
            "\trelation viewer: user\n"
            "\tpermission view = viewer & editor\n"
            "\tpermission edit = editor\n}\n"},
      {'S', "definition user {}\ndefinition group {\n\trelation member: "
            "user\n}\ndefinition resource {\n"
            "\trelation editor: user | group#member | user:*\n"
            "\trelation viewer: user\n}\n"},
      {'T', "resource:1#viewer@group:eng#member"},
      {'T', "resource:1#view@user:2"},
      {0, NULL}}},
};

/* The gRPC status name of a SpiceDB error ("rpc error: code = X desc =
 * ...") and its description. */
static void split_status(const char *e, char *code, size_t n, const char **desc)
{
	const char *c = strstr(e, "code = ");
	const char *d = strstr(e, " desc = ");
	*desc = d ? d + 8 : e;
	if (!c || !d || d < c) {
		snprintf(code, n, "?");
		return;
	}
	c += 7;
	snprintf(code, n, "%.*s", (int)(d - c), c);
}

static const char *code_name(int code)
{
	switch (code) {
	case 0:
		return "OK";
	case PEMBA_EINVAL:
		return "InvalidArgument";
	case PEMBA_EPRECONDITION:
		return "FailedPrecondition";
	case PEMBA_ENOTFOUND:
		return "NotFound";
	case PEMBA_EEXISTS:
		return "AlreadyExists";
	default:
		return "Unknown";
	}
}

/* The rule part of a refusal: up to the blocking relationship (the text
 * after "exists under it: ", "exists with it: ", "part of a subject: "). */
static size_t rule_length(const char *msg)
{
	const char *marks[] = {"under it: ", "with it: ", "of a subject: "};
	for (int i = 0; i < 3; i++) {
		const char *p = strstr(msg, marks[i]);
		if (p)
			return (size_t)(p - msg) + strlen(marks[i]);
	}
	return strlen(msg);
}

static int run_sequence(const char *lib, const sequence *seq, bool verbose)
{
	spicedb_ref *ref;
	char eb[4096];
	if (spicedb_ref_open(lib, &ref, eb, sizeof(eb)) != 0) {
		printf("FAIL %s: cannot start SpiceDB: %s\n", seq->name, eb);
		return 1;
	}
	pemba_db *db;
	pemba_error err;
	if (pemba_open(pg_fixture_uri("sqlite::memory:"), NULL, &db, &err) !=
	    0) {
		printf("FAIL %s: %s\n", seq->name, err.message);
		spicedb_ref_close(ref);
		return 1;
	}
	int failures = 0;
	for (int i = 0; seq->steps[i].op; i++) {
		const step *s = &seq->steps[i];
		int prc = 0, src = 0;
		char smsg[4096] = "";
		pemba_error perr = {0};
		if (s->op == 'S') {
			prc = pemba_write_schema(db, s->arg, strlen(s->arg),
			                         NULL, &perr);
			src = spicedb_ref_write_schema(ref, s->arg, smsg,
			                               sizeof(smsg));
		} else if (s->op == 'T') {
			pemba_relationship rel;
			char *storage;
			if (pemba_parse_relationship(s->arg, &rel, &storage,
			                             &perr) != 0) {
				printf("FAIL %s: step %d: %s\n", seq->name,
				       i + 1, perr.message);
				failures++;
				continue;
			}
			pemba_update u = {.op = PEMBA_OP_TOUCH, .rel = rel};
			prc = pemba_write_relationships(db, &u, 1, NULL, 0,
			                                NULL, &perr);
			src =
			    spicedb_ref_touch(ref, &rel, 1, smsg, sizeof(smsg));
			pemba_free(storage);
		} else {
			pemba_filter f = {.resource_type = s->arg};
			prc = pemba_delete_relationships(
			    db, &f, NULL, 0, 0, 0, NULL, NULL, NULL, &perr);
			src = spicedb_ref_delete_type(ref, s->arg, smsg,
			                              sizeof(smsg));
		}
		char scode[64] = "OK";
		const char *sdesc = "";
		if (src != 0)
			split_status(smsg, scode, sizeof(scode), &sdesc);
		const char *pcode = code_name(prc);
		bool same = strcmp(pcode, scode) == 0;
		if (same && s->op == 'S' && prc != 0) {
			size_t n = rule_length(sdesc);
			same = rule_length(perr.message) == n &&
			       strncmp(perr.message, sdesc, n) == 0;
		}
		if (!same) {
			printf(
			    "FAIL %s: step %d (%c): pemba %s \"%s\", SpiceDB "
			    "%s \"%s\"\n",
			    seq->name, i + 1, s->op, pcode,
			    prc ? perr.message : "", scode, sdesc);
			failures++;
		} else if (verbose) {
			printf("     step %d (%c): %s %s\n", i + 1, s->op,
			       pcode, prc ? perr.message : "");
		}
	}
	pemba_close(db);
	spicedb_ref_close(ref);
	printf("%s %s\n", failures ? "FAIL" : "ok  ", seq->name);
	return failures;
}

int main(void)
{
	const char *lib = spicedb_ref_library_path();
	const char *skip = getenv("PEMBA_DIFF_ALLOW_SKIP");
	bool verbose = getenv("PEMBA_DIFF_VERBOSE") != NULL;
	if (!lib) {
		printf("libspicedb.so not found (scripts/spicedb.sh, "
		       "PEMBA_SPICEDB_LIB)\n");
		if (skip && *skip == '1') {
			printf("skipped (PEMBA_DIFF_ALLOW_SKIP=1)\n");
			return 0;
		}
		return 1;
	}
	int failures = 0;
	size_t n = sizeof(SEQUENCES) / sizeof(SEQUENCES[0]);
	for (size_t i = 0; i < n; i++)
		failures += run_sequence(lib, &SEQUENCES[i], verbose);
	printf("%zu sequences, %d mismatched steps\n", n, failures);
	return failures ? 1 : 0;
}
