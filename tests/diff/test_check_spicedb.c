/*
 * test_check_spicedb.c -- differential test: pemba's CheckPermission
 * against the real SpiceDB (tests/support/spicedb_ref.h), case by case.
 *
 * A case is a schema plus a relationship set.  Both go into a fresh pemba
 * (sqlite::memory:, or a fresh PostgreSQL database with
 * PEMBA_TEST_DATASTORE=postgres: pg_fixture.h) and a fresh in-memory
 * SpiceDB; then every object in
 * the data is checked, for every relation and permission of its type,
 * against every subject in the data (subject objects, userset subjects
 * and two subjects that appear nowhere), on both sides.  The answers
 * (HAS, NO, or an error with its gRPC category) must agree.
 *
 * Cases with caveats are asked every question once without a request
 * context and once per request context of the case; answers then include
 * CONDITIONAL and the missing caveat parameter names, compared as sets.
 *
 * Cases come from the SpiceDB validation files in $PEMBA_TESTDATA (request
 * contexts derived from their caveats' parameters), and from schemas,
 * caveats, data and request contexts generated from seeds
 * ($PEMBA_DIFF_SEEDS of them, from $PEMBA_DIFF_SEED).  See
 * tests/diff/README.md, including the rule for data with cycles and the
 * list of known differences.
 *
 * On a disagreement the case is shrunk (relationships removed one at a time
 * while the disagreement persists) and printed as a reproduction.  The last
 * line is "N passed, M failed"; the exit status is non-zero on failure, or
 * when SpiceDB cannot be loaded (unless PEMBA_DIFF_ALLOW_SKIP=1).
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yaml.h>

#include "pemba.h"
#include "pg_fixture.h"
#include "schema/schema.h"
#include "spicedb_ref.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

/* ------------------------------------------------------------- globals */

static const char *spicedb_lib;

/* One SpiceDB instance serves every case: closing an instance does not give
 * all its memory back, so a fresh one per case would grow the process by a
 * few MB each time.  Between cases its relationships are deleted, type by
 * type, and the next schema replaces the last. */
static spicedb_ref *shared_ref;
static char **written_types;
static size_t nwritten_types;
/* The last schema written declared caveats.  SpiceDB refuses a schema that
 * removes a parameter from a caveat or changes its type ("cannot remove
 * parameter `s` on caveat `c1`"), even with no relationships left, so
 * such a schema is replaced by an empty one before the next case's. */
static bool spicedb_has_caveats;

static void remember_type(const char *type)
{
	for (size_t i = 0; i < nwritten_types; i++)
		if (strcmp(written_types[i], type) == 0)
			return;
	written_types = xrealloc(written_types,
	                         (nwritten_types + 1) * sizeof(*written_types));
	written_types[nwritten_types++] = xstrdup(type);
}

/* Empties the shared instance of relationships. */
static int reset_spicedb(char *eb, size_t n)
{
	for (size_t i = 0; i < nwritten_types; i++) {
		if (spicedb_ref_delete_type(shared_ref, written_types[i], eb,
		                            n) != 0)
			return -1;
		free(written_types[i]);
	}
	nwritten_types = 0;
	if (spicedb_has_caveats) {
		if (spicedb_ref_write_schema(
		        shared_ref, "definition diff_reset {}", eb, n) != 0)
			return -1;
		spicedb_has_caveats = false;
	}
	return 0;
}

static struct {
	uint64_t cases, cases_skipped, checks, passed, failed;
	uint64_t cycle_tolerated; /* see README: cyclic data */
	uint64_t cold_rechecks;   /* SpiceDB asked again with a cold cache */
	uint64_t schema_both_rejected;
	uint64_t spicedb_has, spicedb_no, spicedb_error; /* answer mix */
	uint64_t spicedb_conditional;
	uint64_t caveat_cases, context_runs; /* cases with caveats; request
	                                        contexts asked */
	uint64_t known; /* disagreements on the known-differences list */
	int reproductions_printed;
	bool verbose, trace;
} totals;

#define MAX_REPRODUCTIONS 10

/* -------------------------------------------------------------- cases */

typedef struct diff_case {
	char *name;
	char *schema;
	char **rels; /* relationship strings */
	size_t nrels, cap;
	/* Request contexts (JSON object texts) to ask every question with,
	 * besides asking without one. */
	char **contexts;
	size_t ncontexts;
	/* Lookups are asked only with the first lookup_contexts of them
	 * (time budget); checks with all. */
	size_t lookup_contexts;
	bool derive_contexts; /* validation file: contexts from its caveats */
} diff_case;

/* Length of a relationship string without its `[caveat]` and
 * `[expiration:...]` suffixes: the relationship's identity. */
static size_t rel_key_length(const char *text)
{
	return strcspn(text, "[");
}

static void case_add_rel(diff_case *c, const char *text)
{
	size_t k = rel_key_length(text);
	for (size_t i = 0; i < c->nrels; i++)
		if (rel_key_length(c->rels[i]) == k &&
		    strncmp(c->rels[i], text, k) == 0)
			return; /* a batch may not repeat a relationship */
	if (c->nrels == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->rels = xrealloc(c->rels, c->cap * sizeof(*c->rels));
	}
	c->rels[c->nrels++] = xstrdup(text);
}

static void case_add_context(diff_case *c, const char *json)
{
	for (size_t i = 0; i < c->ncontexts; i++)
		if (strcmp(c->contexts[i], json) == 0)
			return;
	c->contexts =
	    xrealloc(c->contexts, (c->ncontexts + 1) * sizeof(*c->contexts));
	c->contexts[c->ncontexts++] = xstrdup(json);
}

static void case_free(diff_case *c)
{
	for (size_t i = 0; i < c->nrels; i++)
		free(c->rels[i]);
	free(c->rels);
	for (size_t i = 0; i < c->ncontexts; i++)
		free(c->contexts[i]);
	free(c->contexts);
	free(c->schema);
	free(c->name);
	memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------ answers */

/* An answer: permissionship (with the missing caveat parameters of a
 * CONDITIONAL one), or an error with its gRPC-style category. */
typedef struct answer {
	int perm;          /* a pemba_permissionship, 0 if error */
	char missing[512]; /* sorted names, space-separated; "" if none */
	char category[48];
	char message[1100];
} answer;

static bool answer_is_depth(const answer *a)
{
	return a->perm == 0 && strcmp(a->category, "max-depth") == 0;
}

static bool answers_equal(const answer *a, const answer *b)
{
	if (a->perm != b->perm)
		return false;
	if (a->perm != 0)
		return strcmp(a->missing, b->missing) == 0;
	return strcmp(a->category, b->category) == 0;
}

static void answer_print(FILE *f, const answer *a)
{
	if (a->perm == PEMBA_HAS_PERMISSION)
		fprintf(f, "HAS_PERMISSION");
	else if (a->perm == PEMBA_NO_PERMISSION)
		fprintf(f, "NO_PERMISSION");
	else if (a->perm == PEMBA_CONDITIONAL_PERMISSION)
		fprintf(f, "CONDITIONAL");
	else if (a->perm != 0)
		fprintf(f, "permissionship %d", a->perm);
	else
		fprintf(f, "error %s: %s", a->category, a->message);
	if (a->perm != 0 && a->missing[0])
		fprintf(f, " missing [%s]", a->missing);
}

/* The gRPC status SpiceDB would give for a pemba code; the depth error is
 * kept apart from other failed preconditions because both sides can tell
 * it from the rest. */
static const char *pemba_category(int code)
{
	switch (code) {
	case PEMBA_EINVAL:
		return "InvalidArgument";
	case PEMBA_EPRECONDITION:
		return "FailedPrecondition";
	case PEMBA_EDEPTH:
		return "max-depth";
	case PEMBA_ENOTFOUND:
		return "NotFound";
	case PEMBA_EUNSUPPORTED:
		return "Unimplemented";
	case PEMBA_EREVISION:
		return "OutOfRange";
	default:
		return "Internal";
	}
}

/* "rpc error: code = FailedPrecondition desc = ..." -> category. */
static void spicedb_category(const char *msg, char *out, size_t n)
{
	if (strstr(msg, "max depth exceeded")) {
		snprintf(out, n, "max-depth");
		return;
	}
	const char *p = strstr(msg, "code = ");
	if (!p) {
		snprintf(out, n, "Unknown");
		return;
	}
	p += strlen("code = ");
	size_t k = strcspn(p, " ");
	snprintf(out, n, "%.*s", (int)k, p);
}

/* ----------------------------------------------------- loading a case */

/* Both systems with one case loaded. */
typedef struct loaded {
	pemba_db *db;
	const char *uri; /* pemba's datastore (a PostgreSQL database: dropped
	                    when the case closes) */
	spicedb_ref *ref;
	schema *sc; /* compiled by pemba, to enumerate relations */
	pemba_relationship *rels;
	char **storage;
	size_t nrels;
} loaded;

static void loaded_close(loaded *l)
{
	if (l->db)
		pemba_close(l->db);
	pg_fixture_release(l->uri);
	if (l->sc)
		schema_free(l->sc);
	for (size_t i = 0; i < l->nrels; i++)
		pemba_free(l->storage[i]);
	free(l->rels);
	free(l->storage);
	memset(l, 0, sizeof(*l));
}

enum { LOAD_OK = 0, LOAD_SKIP = 1, LOAD_MISMATCH = 2, LOAD_FATAL = 3 };

/* Loads schema and relationships (indices `keep`, or all when NULL) into
 * both systems.  On LOAD_MISMATCH/LOAD_SKIP/LOAD_FATAL, `why` says what
 * happened. */
static int load_case(const diff_case *c, const bool *keep, loaded *l,
                     strbuf *why)
{
	char eb[1024];
	pemba_error err;
	memset(l, 0, sizeof(*l));

	l->ref = shared_ref;
	if (reset_spicedb(eb, sizeof(eb)) != 0) {
		strbuf_printf(why, "cannot empty SpiceDB: %s", eb);
		return LOAD_FATAL;
	}
	l->uri = pg_fixture_uri("sqlite::memory:");
	if (pemba_open(l->uri, NULL, &l->db, &err) != 0) {
		strbuf_printf(why, "pemba_open: %s", err.message);
		return LOAD_FATAL;
	}
	int prc =
	    pemba_write_schema(l->db, c->schema, strlen(c->schema), NULL, &err);
	int src = spicedb_ref_write_schema(l->ref, c->schema, eb, sizeof(eb));
	if (src == 0 && strstr(c->schema, "caveat"))
		spicedb_has_caveats = true;
	if (prc != 0 && src != 0) {
		strbuf_printf(why, "both reject the schema: SpiceDB: %s", eb);
		return LOAD_SKIP;
	}
	if ((prc != 0) != (src != 0)) {
		strbuf_printf(why, "schema: pemba %s, SpiceDB %s",
		              prc ? err.message : "accepts",
		              src ? eb : "accepts");
		return LOAD_MISMATCH;
	}
	if (schema_compile(c->schema, strlen(c->schema), &l->sc, &err) != 0) {
		strbuf_printf(why, "schema_compile: %s", err.message);
		return LOAD_FATAL;
	}

	l->rels = xcalloc(c->nrels + 1, sizeof(*l->rels));
	l->storage = xcalloc(c->nrels + 1, sizeof(*l->storage));
	for (size_t i = 0; i < c->nrels; i++) {
		if (keep && !keep[i])
			continue;
		if (pemba_parse_relationship(c->rels[i], &l->rels[l->nrels],
		                             &l->storage[l->nrels],
		                             &err) != 0) {
			strbuf_printf(why, "cannot parse `%s`: %s", c->rels[i],
			              err.message);
			return LOAD_FATAL;
		}
		remember_type(l->rels[l->nrels].resource_type);
		l->nrels++;
	}
	for (size_t at = 0; at < l->nrels; at += 1000) {
		size_t n = l->nrels - at < 1000 ? l->nrels - at : 1000;
		pemba_update *u = xcalloc(n, sizeof(*u));
		for (size_t i = 0; i < n; i++) {
			u[i].op = PEMBA_OP_TOUCH;
			u[i].rel = l->rels[at + i];
		}
		prc =
		    pemba_write_relationships(l->db, u, n, NULL, 0, NULL, &err);
		free(u);
		src =
		    spicedb_ref_touch(l->ref, l->rels + at, n, eb, sizeof(eb));
		if ((prc != 0) != (src != 0)) {
			strbuf_printf(why,
			              "relationships: pemba %s, SpiceDB %s",
			              prc ? err.message : "accepts",
			              src ? eb : "accepts");
			return LOAD_MISMATCH;
		}
		if (prc != 0) {
			strbuf_printf(why, "both reject the relationships: %s",
			              err.message);
			return LOAD_SKIP;
		}
	}
	return LOAD_OK;
}

/* ------------------------------------------------------------- checks */

typedef struct subject {
	const char *type, *id, *relation; /* relation "" for none */
} subject;

typedef struct object {
	const char *type, *id;
} object;

/* Joins names[0..n) with spaces into out (names come sorted). */
static void join_names(char *out, size_t size, const char *const *names,
                       size_t n)
{
	size_t used = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n && used < size; i++)
		used += (size_t)snprintf(out + used, size - used, "%s%s",
		                         i ? " " : "", names[i]);
}

static void ask_pemba(loaded *l, const pemba_check_request *q, answer *a)
{
	pemba_error err;
	pemba_check_result res;
	memset(&res, 0, sizeof(res));
	memset(a, 0, sizeof(*a));
	int rc = pemba_check_permission_ex(l->db, 0, q, &res, &err);
	if (rc == 0) {
		a->perm = (int)res.permissionship;
		join_names(a->missing, sizeof(a->missing),
		           (const char *const *)res.missing, res.nmissing);
		pemba_check_result_clear(&res);
		return;
	}
	pemba_check_result_clear(&res);
	snprintf(a->category, sizeof(a->category), "%s", pemba_category(rc));
	snprintf(a->message, sizeof(a->message), "%s", err.message);
}

static void ask_spicedb(loaded *l, const pemba_check_request *q, answer *a)
{
	char eb[1024];
	int p = 0;
	char **missing = NULL;
	size_t nmissing = 0;
	memset(a, 0, sizeof(*a));
	if (spicedb_ref_check_ex(l->ref, q, &p, &missing, &nmissing, eb,
	                         sizeof(eb)) == 0) {
		a->perm = p;
		join_names(a->missing, sizeof(a->missing),
		           (const char *const *)missing, nmissing);
		spicedb_ref_free_list(missing, nmissing);
		return;
	}
	spicedb_category(eb, a->category, sizeof(a->category));
	snprintf(a->message, sizeof(a->message), "%s", eb);
}

static void request_print(FILE *f, const pemba_check_request *q)
{
	fprintf(f, "%s:%s#%s@%s:%s", q->resource_type, q->resource_id,
	        q->permission, q->subject_type, q->subject_id);
	if (q->subject_relation && *q->subject_relation)
		fprintf(f, "#%s", q->subject_relation);
	if (q->context)
		fprintf(f, " with %s", q->context);
}

/* ----------------------------------------------------------- data graph */

/* True if the object graph of the relationships (resource -> subject
 * object) has a cycle.  Only then can SpiceDB's answer be racy. */
static bool data_is_cyclic(const pemba_relationship *rels, size_t n)
{
	/* Kahn's algorithm over the edges, with objects as "type:id". */
	char **names = xcalloc(2 * n + 1, sizeof(*names));
	size_t nn = 0;
	int *from = xcalloc(n + 1, sizeof(int)),
	    *to = xcalloc(n + 1, sizeof(int));
	size_t ne = 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(rels[i].subject_id, "*") == 0)
			continue;
		char a[2200], b[2200];
		snprintf(a, sizeof(a), "%s:%s", rels[i].resource_type,
		         rels[i].resource_id);
		snprintf(b, sizeof(b), "%s:%s", rels[i].subject_type,
		         rels[i].subject_id);
		int ia = -1, ib = -1;
		for (size_t k = 0; k < nn; k++) {
			if (strcmp(names[k], a) == 0)
				ia = (int)k;
			if (strcmp(names[k], b) == 0)
				ib = (int)k;
		}
		if (ia < 0) {
			names[nn] = xstrdup(a);
			ia = (int)nn++;
		}
		if (ib < 0) {
			if (strcmp(a, b) == 0) {
				ib = ia;
			} else {
				names[nn] = xstrdup(b);
				ib = (int)nn++;
			}
		}
		from[ne] = ia;
		to[ne] = ib;
		ne++;
	}
	int *indeg = xcalloc(nn + 1, sizeof(int));
	bool *gone = xcalloc(ne + 1, sizeof(bool));
	for (size_t e = 0; e < ne; e++)
		indeg[to[e]]++;
	size_t removed = 0;
	bool progress = true;
	bool *done = xcalloc(nn + 1, sizeof(bool));
	while (progress) {
		progress = false;
		for (size_t v = 0; v < nn; v++) {
			if (done[v] || indeg[v] != 0)
				continue;
			done[v] = true;
			removed++;
			progress = true;
			for (size_t e = 0; e < ne; e++)
				if (!gone[e] && from[e] == (int)v) {
					gone[e] = true;
					indeg[to[e]]--;
				}
		}
	}
	for (size_t k = 0; k < nn; k++)
		free(names[k]);
	free(names);
	free(from);
	free(to);
	free(indeg);
	free(gone);
	free(done);
	return removed != nn;
}

/* ----------------------------------------------------- one case, fully */

/* Outcome of one comparison. */
enum { CMP_AGREE, CMP_TOLERATED, CMP_DISAGREE };

/* Compares the two answers for q.  With cyclic data, a depth error on one
 * side against a decided answer on the other is tolerated (README.md):
 * SpiceDB races its branches there, and pemba's rule is to prefer a
 * decided answer.  SpiceDB is asked again a few times first; if it ever
 * gives pemba's answer, they agree. */
static int compare(loaded *l, bool cyclic, const pemba_check_request *q,
                   answer *pa, answer *sa)
{
	ask_pemba(l, q, pa);
	ask_spicedb(l, q, sa);
	if (answers_equal(pa, sa))
		return CMP_AGREE;
	if (l->nrels > 0) {
		/* SpiceDB's answer can depend on what its dispatch cache holds
		 * from earlier checks: near the depth limit a cached
		 * subproblem was seen to fail where evaluating it afresh
		 * succeeds.  Before calling it a disagreement, ask again at a
		 * new revision, whose cache is empty (TOUCH rewrites a
		 * relationship without changing the data). */
		char eb[1024];
		answer first = *sa;
		if (spicedb_ref_touch(l->ref, &l->rels[0], 1, eb, sizeof(eb)) ==
		    0) {
			ask_spicedb(l, q, sa);
			totals.cold_rechecks++;
			if (answers_equal(pa, sa)) {
				printf("note: SpiceDB changed its answer to ");
				request_print(stdout, q);
				printf(" on a cold cache (first ");
				answer_print(stdout, &first);
				printf(")\n");
				return CMP_AGREE;
			}
		}
	}
	if (!cyclic)
		return CMP_DISAGREE;
	if (!answer_is_depth(pa) && !answer_is_depth(sa))
		return CMP_DISAGREE;
	for (int i = 0; i < 4; i++) {
		answer again;
		ask_spicedb(l, q, &again);
		if (answers_equal(pa, &again))
			return CMP_AGREE;
	}
	return CMP_TOLERATED;
}

/* Copies the relationship strings of `c` that `keep` marks. */
static void print_case(FILE *f, const diff_case *c, const bool *keep)
{
	fprintf(f, "--- schema:\n%s\n--- relationships:\n", c->schema);
	for (size_t i = 0; i < c->nrels; i++)
		if (!keep || keep[i])
			fprintf(f, "%s\n", c->rels[i]);
}

/* Re-runs q on the case restricted to keep[]; true if they still
 * disagree (not merely a tolerated cycle difference). */
static bool still_disagrees(const diff_case *c, const bool *keep,
                            const pemba_check_request *q)
{
	loaded l;
	strbuf why;
	strbuf_init(&why);
	int rc = load_case(c, keep, &l, &why);
	strbuf_free(&why);
	bool result = false;
	if (rc == LOAD_OK) {
		answer pa, sa;
		bool cyclic = data_is_cyclic(l.rels, l.nrels);
		result = compare(&l, cyclic, q, &pa, &sa) == CMP_DISAGREE;
	}
	loaded_close(&l);
	return result;
}

/* Shrinks and prints a reproduction of a disagreement on q. */
static void report_disagreement(const diff_case *c,
                                const pemba_check_request *q, const answer *pa,
                                const answer *sa)
{
	FILE *f = stdout;
	fprintf(f, "\nDISAGREEMENT in %s: ", c->name);
	request_print(f, q);
	fprintf(f, "\n  pemba:   ");
	answer_print(f, pa);
	fprintf(f, "\n  SpiceDB: ");
	answer_print(f, sa);
	fprintf(f, "\n");
	if (totals.reproductions_printed >= MAX_REPRODUCTIONS) {
		fflush(f);
		return;
	}
	totals.reproductions_printed++;

	/* The request strings live in the loaded case that is still open:
	 * copy them before reloading. */
	pemba_check_request copy = {
	    .resource_type = xstrdup(q->resource_type),
	    .resource_id = xstrdup(q->resource_id),
	    .permission = xstrdup(q->permission),
	    .subject_type = xstrdup(q->subject_type),
	    .subject_id = xstrdup(q->subject_id),
	    .subject_relation =
	        xstrdup(q->subject_relation ? q->subject_relation : ""),
	    .context = q->context ? xstrdup(q->context) : NULL,
	};
	bool *keep = xcalloc(c->nrels + 1, sizeof(bool));
	for (size_t i = 0; i < c->nrels; i++)
		keep[i] = true;
	bool changed = true;
	while (changed) {
		changed = false;
		for (size_t i = 0; i < c->nrels; i++) {
			if (!keep[i])
				continue;
			keep[i] = false;
			if (still_disagrees(c, keep, &copy))
				changed = true;
			else
				keep[i] = true;
		}
	}
	fprintf(f, "minimal reproduction:\n");
	print_case(f, c, keep);
	fprintf(f, "--- check: ");
	request_print(f, &copy);
	/* Answers on the shrunk case. */
	loaded l;
	strbuf why;
	strbuf_init(&why);
	if (load_case(c, keep, &l, &why) == LOAD_OK) {
		answer pa2, sa2;
		ask_pemba(&l, &copy, &pa2);
		ask_spicedb(&l, &copy, &sa2);
		fprintf(f, "\n--- pemba:   ");
		answer_print(f, &pa2);
		fprintf(f, "\n--- SpiceDB: ");
		answer_print(f, &sa2);
	}
	fprintf(f, "\n---\n");
	fflush(f);
	loaded_close(&l);
	/* The caller goes on with the whole case: give SpiceDB all of it
	 * back (shrinking left it holding the last subset). */
	strbuf_reset(&why);
	load_case(c, NULL, &l, &why);
	loaded_close(&l);
	strbuf_free(&why);
	free(keep);
	free((char *)copy.resource_type);
	free((char *)copy.resource_id);
	free((char *)copy.permission);
	free((char *)copy.subject_type);
	free((char *)copy.subject_id);
	free((char *)copy.subject_relation);
	free((char *)copy.context);
}

static bool object_seen(const object *list, size_t n, const char *type,
                        const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].type, type) == 0 &&
		    strcmp(list[i].id, id) == 0)
			return true;
	return false;
}

static bool subject_seen(const subject *list, size_t n, const char *type,
                         const char *id, const char *rel)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].type, type) == 0 &&
		    strcmp(list[i].id, id) == 0 &&
		    strcmp(list[i].relation, rel) == 0)
			return true;
	return false;
}

static const char *plain_relation(const char *r)
{
	return (r == NULL || strcmp(r, "...") == 0) ? "" : r;
}

/* ------------------------------------------------------------- lookups */

/* LookupResources (kind 'R': resource_type, permission, subject) and
 * LookupSubjects (kind 'S': resource, permission, subject_type and
 * subject_relation) are compared as result sets: each side's answer is
 * its sorted ids joined by spaces (LookupSubjects: a wildcard is `*`,
 * each of its exclusions `*-ID`), or `error: CATEGORY`.  A CONDITIONAL
 * result is `?ID`, followed by its missing caveat parameters when there
 * are any: `?ID[a,b]` (spicedb_ref.h's format). */
typedef struct lookup_query {
	char kind;
	const char *resource_type, *resource_id, *permission;
	const char *subject_type, *subject_id, *subject_relation;
	const char *context; /* request caveat context, or NULL */
} lookup_query;

static struct {
	uint64_t resources, subjects, failed, tolerated, sampled_out;
	uint64_t nonempty; /* SpiceDB answers with at least one result */
	uint64_t spicedb_duplicates;   /* results SpiceDB streamed twice */
	uint64_t reloaded;             /* SpiceDB asked again after a reload */
	uint64_t spicedb_inconsistent; /* SpiceDB's lookup != its check */
	unsigned percent;              /* PEMBA_DIFF_LOOKUPS */
	uint64_t counter;              /* sampling position */
} lookups;

static void lookup_print(FILE *f, const lookup_query *q)
{
	if (q->kind == 'R') {
		fprintf(f, "LookupResources %s#%s@%s:%s", q->resource_type,
		        q->permission, q->subject_type, q->subject_id);
		if (q->subject_relation[0])
			fprintf(f, "#%s", q->subject_relation);
	} else {
		fprintf(f, "LookupSubjects %s:%s#%s@%s", q->resource_type,
		        q->resource_id, q->permission, q->subject_type);
		if (q->subject_relation[0])
			fprintf(f, "#%s", q->subject_relation);
	}
	if (q->context)
		fprintf(f, " with %s", q->context);
}

/* ------------------------------------------------- known differences */

/* Disagreements that are understood and documented in README.md ("Known
 * differences"), each with its reason.  A disagreement matches an entry
 * when the case name is equal (NULL: any case) and the question, as
 * printed (`doc:a#view@user:b with {...}`, `LookupSubjects ...`, or
 * `load` for loading the case), starts with `question` (NULL: any).  A matched
 * disagreement is printed as a `known:` line and does not fail the run; an
 * entry that matched nothing is reported at the end, so the list cannot rot
 * silently. */
typedef struct known_difference {
	const char *case_name;
	const char *question;
	const char *why;
	uint64_t hits;
} known_difference;

static known_difference known_differences[] = {
    /* SpiceDB's answer contradicts its own lookups and semantics. */
    {"caveated direct type beside an uncaveated userset",
     "document:a#viewer@group:b",
     "SpiceDB's check ignores `group with cav` beside `group#member`", 0},
    {"caveated direct type beside an uncaveated userset",
     "document:a#view@group:b",
     "SpiceDB's check ignores `group with cav` beside `group#member`", 0},
    {"caveated direct type beside an uncaveated userset",
     "document:a#editor@group:c#member",
     "SpiceDB's check ignores `group:* with cav` beside `group` for a "
     "userset subject",
     0},
    {"caveated direct type beside an uncaveated userset",
     "document:a#editor@group:stranger#member",
     "SpiceDB's check ignores `group:* with cav` beside `group` for a "
     "userset subject",
     0},
    /* SpiceDB is not self-consistent here: the condition it reports on
     * an excluded subject of `(member - x) - (member + ...)` includes the
     * subtracted wildcard's caveat when asked through the alias `edit =
     * view` and leaves it out when asked for `view` itself; pemba gives
     * both the `view` answer.  Outside the default seeds
     * (PEMBA_DIFF_SEED=419). */
    {"seed 419", "LookupSubjects group:a#edit@user",
     "SpiceDB's excluded-subject condition depends on the dispatch path "
     "(alias vs permission)",
     0},
    {"seed 419", "LookupSubjects group:c#edit@user",
     "SpiceDB's excluded-subject condition depends on the dispatch path "
     "(alias vs permission)",
     0},
    {NULL, NULL, NULL, 0},
};

static bool is_known(const diff_case *c, const char *question,
                     const char *pemba_answer, const char *spicedb_answer)
{
	for (known_difference *k = known_differences; k->why; k++) {
		if (k->case_name && strcmp(k->case_name, c->name) != 0)
			continue;
		if (k->question &&
		    strncmp(question, k->question, strlen(k->question)) != 0)
			continue;
		k->hits++;
		totals.known++;
		printf("known: %s: %s: pemba %s, SpiceDB %s (%s)\n", c->name,
		       question, pemba_answer, spicedb_answer, k->why);
		return true;
	}
	return false;
}

static bool is_known_check(const diff_case *c, const pemba_check_request *q,
                           const answer *pa, const answer *sa)
{
	char *question = NULL, *a = NULL, *b = NULL;
	size_t n;
	FILE *f = open_memstream(&question, &n);
	request_print(f, q);
	fclose(f);
	f = open_memstream(&a, &n);
	answer_print(f, pa);
	fclose(f);
	f = open_memstream(&b, &n);
	answer_print(f, sa);
	fclose(f);
	bool known = is_known(c, question, a, b);
	free(question);
	free(a);
	free(b);
	return known;
}

static bool is_known_lookup(const diff_case *c, const lookup_query *q,
                            const strbuf *pa, const strbuf *sa)
{
	char *question = NULL;
	size_t n;
	FILE *f = open_memstream(&question, &n);
	lookup_print(f, q);
	fclose(f);
	bool known = is_known(c, question, pa->data ? pa->data : "",
	                      sa->data ? sa->data : "");
	free(question);
	return known;
}

/* Prints the entries of the list that matched nothing in this run. */
static void report_unused_known(void)
{
	for (known_difference *k = known_differences; k->why; k++)
		if (k->hits == 0)
			printf("note: known difference not seen in this run: "
			       "%s %s (%s)\n",
			       k->case_name ? k->case_name : "(any case)",
			       k->question ? k->question : "(any question)",
			       k->why);
}

/* Appends one result in the format above (prefix "*-" for a wildcard's
 * exclusions). */
static void put_item(strbuf *out, const char *prefix,
                     const pemba_lookup_item *it)
{
	strbuf_printf(out, "%s%s%s%s", out->len ? " " : "", prefix,
	              it->permissionship == PEMBA_CONDITIONAL_PERMISSION ? "?"
	                                                                 : "",
	              it->id);
	if (it->permissionship != PEMBA_CONDITIONAL_PERMISSION &&
	    it->permissionship != PEMBA_HAS_PERMISSION)
		strbuf_printf(out, "(permissionship %d)", it->permissionship);
	for (size_t i = 0; i < it->nmissing; i++)
		strbuf_printf(out, "%s%s", i ? "," : "[", it->missing[i]);
	if (it->nmissing)
		strbuf_putc(out, ']');
}

/* The plain callback form of a LookupResources result, passed as well as
 * on_item: the contract lets fn be NULL when on_item is set, but pemba's
 * engine has required it (see README.md). */
static int collect_resource(void *ctx, const char *id, pemba_permissionship p,
                            const char *cursor)
{
	pemba_lookup_item it = {
	    .id = id, .permissionship = p, .cursor = cursor};
	put_item(ctx, "", &it);
	return 0;
}

static int collect_item(void *ctx, const pemba_lookup_item *it)
{
	strbuf *out = ctx;
	put_item(out, "", it);
	for (size_t i = 0; i < it->nexcluded; i++)
		put_item(out, "*-", &it->excluded[i]);
	return 0;
}

static int compare_cstrings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts the space-separated words of s in place (pemba streams a
 * wildcard's exclusions after it; SpiceDB's list is sorted as a whole). */
static void sort_words(strbuf *s)
{
	if (s->len == 0)
		return;
	char *copy = xstrdup(s->data);
	size_t n = 0, cap = 16;
	char **words = xcalloc(cap, sizeof(*words));
	for (char *w = strtok(copy, " "); w; w = strtok(NULL, " ")) {
		if (n == cap)
			words = xrealloc(words, (cap *= 2) * sizeof(*words));
		words[n++] = w;
	}
	qsort(words, n, sizeof(*words), compare_cstrings);
	strbuf_reset(s);
	for (size_t i = 0; i < n; i++)
		strbuf_printf(s, "%s%s", i ? " " : "", words[i]);
	free(words);
	free(copy);
}

static void lookup_pemba(loaded *l, const lookup_query *q, strbuf *out)
{
	pemba_error err;
	int rc;
	strbuf_reset(out);
	if (q->kind == 'R') {
		pemba_lookup_resources_request r = {
		    .resource_type = q->resource_type,
		    .permission = q->permission,
		    .subject_type = q->subject_type,
		    .subject_id = q->subject_id,
		    .subject_relation = q->subject_relation,
		    .context = q->context,
		    .on_item = collect_item,
		};
		rc = pemba_lookup_resources(l->db, 0, &r, collect_resource, out,
		                            NULL, &err);
	} else {
		pemba_lookup_subjects_request r = {
		    .resource_type = q->resource_type,
		    .resource_id = q->resource_id,
		    .permission = q->permission,
		    .subject_type = q->subject_type,
		    .subject_relation = q->subject_relation,
		    .context = q->context,
		    .on_item = collect_item,
		};
		rc = pemba_lookup_subjects(l->db, 0, &r, NULL, out, NULL, &err);
	}
	if (rc != 0) {
		strbuf_reset(out);
		strbuf_printf(out, "error: %s (%s)", pemba_category(rc),
		              err.message);
		return;
	}
	sort_words(out);
}

/* One result parsed from the list format: [prefix "*-"]["?"]ID["[a,b]"]. */
typedef struct parsed_result {
	char key[600]; /* prefix and id */
	bool conditional;
	char missing[600]; /* comma-separated, sorted; "" if none */
	bool merged;       /* folded into an earlier result */
} parsed_result;

static void parse_result(const char *text, parsed_result *r)
{
	memset(r, 0, sizeof(*r));
	const char *prefix = strncmp(text, "*-", 2) == 0 ? "*-" : "";
	text += strlen(prefix);
	r->conditional = *text == '?';
	text += r->conditional;
	size_t k = strcspn(text, "[");
	snprintf(r->key, sizeof(r->key), "%s%.*s", prefix, (int)k, text);
	if (text[k] == '[')
		snprintf(r->missing, sizeof(r->missing), "%.*s",
		         (int)(strlen(text + k + 1) - 1), text + k + 1);
}

/* Adds the comma-separated names of `more` to the sorted set `into`. */
static void union_names(char *into, size_t size, const char *more)
{
	char *names[64];
	size_t n = 0;
	char *copy = xstrdup(into), *copy2 = xstrdup(more);
	for (char *w = strtok(copy, ","); w && n < 64; w = strtok(NULL, ","))
		names[n++] = w;
	for (char *w = strtok(copy2, ","); w && n < 64; w = strtok(NULL, ",")) {
		bool seen = false;
		for (size_t i = 0; i < n; i++)
			seen = seen || strcmp(names[i], w) == 0;
		if (!seen)
			names[n++] = w;
	}
	qsort(names, n, sizeof(*names), compare_cstrings);
	size_t used = 0;
	into[0] = '\0';
	for (size_t i = 0; i < n && used < size; i++)
		used += (size_t)snprintf(into + used, size - used, "%s%s",
		                         i ? "," : "", names[i]);
	free(copy);
	free(copy2);
}

/* Writes SpiceDB's results ids[0..n) to out, one per id (see
 * lookup_spicedb), sorted. */
static void merge_results(char **ids, size_t n, strbuf *out)
{
	parsed_result *r = xcalloc(n + 1, sizeof(*r));
	for (size_t i = 0; i < n; i++)
		parse_result(ids[i], &r[i]);
	for (size_t i = 0; i < n; i++) {
		if (r[i].merged)
			continue;
		for (size_t j = i + 1; j < n; j++) {
			if (r[j].merged || strcmp(r[i].key, r[j].key) != 0)
				continue;
			r[j].merged = true;
			lookups.spicedb_duplicates++;
			if (!r[j].conditional || !r[i].conditional) {
				r[i].conditional = false;
				r[i].missing[0] = '\0';
			} else {
				union_names(r[i].missing, sizeof(r[i].missing),
				            r[j].missing);
			}
		}
		const char *key = r[i].key;
		bool excluded = strncmp(key, "*-", 2) == 0;
		strbuf_printf(out, "%s%s%s%s%s%s%s", out->len ? " " : "",
		              excluded ? "*-" : "", r[i].conditional ? "?" : "",
		              key + (excluded ? 2 : 0),
		              r[i].missing[0] ? "[" : "", r[i].missing,
		              r[i].missing[0] ? "]" : "");
	}
	free(r);
	sort_words(out);
}

static void lookup_spicedb(loaded *l, const lookup_query *q, strbuf *out)
{
	char eb[1024];
	char **ids = NULL;
	size_t n = 0;
	int rc;
	strbuf_reset(out);
	if (q->kind == 'R')
		rc = spicedb_ref_lookup_resources(
		    l->ref, q->resource_type, q->permission, q->subject_type,
		    q->subject_id, q->subject_relation, q->context, &ids, &n,
		    eb, sizeof(eb));
	else
		rc = spicedb_ref_lookup_subjects(
		    l->ref, q->resource_type, q->resource_id, q->permission,
		    q->subject_type, q->subject_relation, q->context, &ids, &n,
		    eb, sizeof(eb));
	if (rc != 0) {
		char category[48];
		spicedb_category(eb, category, sizeof(category));
		strbuf_printf(out, "error: %s (%s)", category, eb);
		return;
	}
	/* SpiceDB may stream one result several times (LookupSubjects
	 * through several usersets, LookupResources through several paths),
	 * even with different permissionships (`?b[m]` and `b`); pemba
	 * reports each once.  Compare sets: duplicates are merged (and
	 * counted) as their union would be: HAS if any is HAS, otherwise
	 * CONDITIONAL missing the union of their missing names. */
	merge_results(ids, n, out);
	spicedb_ref_free_list(ids, n);
}

/* Equal answers: the same ids, or errors of the same category (the
 * messages, in parentheses, may differ). */
static bool lookup_answers_equal(const strbuf *a, const strbuf *b)
{
	const char *pa = a->data ? a->data : "", *pb = b->data ? b->data : "";
	if (strncmp(pa, "error: ", 7) == 0 && strncmp(pb, "error: ", 7) == 0) {
		size_t na = strcspn(pa, "("), nb = strcspn(pb, "(");
		return na == nb && strncmp(pa, pb, na) == 0;
	}
	return strcmp(pa, pb) == 0;
}

static bool lookup_is_error(const strbuf *a)
{
	return a->data && strncmp(a->data, "error: ", 7) == 0;
}

/* As compare() for checks: SpiceDB is asked again on a cold cache before
 * a difference counts, and on cyclic data an error against a result set
 * is tolerated. */
static int lookup_compare(loaded *l, bool cyclic, const lookup_query *q,
                          strbuf *pa, strbuf *sa)
{
	lookup_pemba(l, q, pa);
	lookup_spicedb(l, q, sa);
	if (lookup_answers_equal(pa, sa))
		return CMP_AGREE;
	char eb[1024];
	if (l->nrels > 0 &&
	    spicedb_ref_touch(l->ref, &l->rels[0], 1, eb, sizeof(eb)) == 0) {
		lookup_spicedb(l, q, sa);
		totals.cold_rechecks++;
		if (lookup_answers_equal(pa, sa))
			return CMP_AGREE;
	}
	if (cyclic && (lookup_is_error(pa) || lookup_is_error(sa)))
		return CMP_TOLERATED;
	return CMP_DISAGREE;
}

static bool lookup_still_disagrees(const diff_case *c, const bool *keep,
                                   const lookup_query *q)
{
	loaded l;
	strbuf why, pa, sa;
	strbuf_init(&why);
	strbuf_init(&pa);
	strbuf_init(&sa);
	int rc = load_case(c, keep, &l, &why);
	bool result = false;
	if (rc == LOAD_OK)
		result = lookup_compare(&l, data_is_cyclic(l.rels, l.nrels), q,
		                        &pa, &sa) == CMP_DISAGREE;
	loaded_close(&l);
	strbuf_free(&why);
	strbuf_free(&pa);
	strbuf_free(&sa);
	return result;
}

/* Shrinks (as report_disagreement does) and prints a lookup difference. */
static void lookup_report(const diff_case *c, const lookup_query *q,
                          const strbuf *pa, const strbuf *sa)
{
	FILE *f = stdout;
	fprintf(f, "\nDISAGREEMENT in %s: ", c->name);
	lookup_print(f, q);
	fprintf(f, "\n  pemba:   [%s]\n  SpiceDB: [%s]\n",
	        pa->data ? pa->data : "", sa->data ? sa->data : "");
	if (totals.reproductions_printed >= MAX_REPRODUCTIONS) {
		fflush(f);
		return;
	}
	totals.reproductions_printed++;
	lookup_query copy = {
	    .kind = q->kind,
	    .resource_type = xstrdup(q->resource_type),
	    .resource_id = xstrdup(q->resource_id ? q->resource_id : ""),
	    .permission = xstrdup(q->permission),
	    .subject_type = xstrdup(q->subject_type),
	    .subject_id = xstrdup(q->subject_id ? q->subject_id : ""),
	    .subject_relation = xstrdup(q->subject_relation),
	    .context = q->context ? xstrdup(q->context) : NULL,
	};
	bool *keep = xcalloc(c->nrels + 1, sizeof(bool));
	for (size_t i = 0; i < c->nrels; i++)
		keep[i] = true;
	for (bool changed = true; changed;) {
		changed = false;
		for (size_t i = 0; i < c->nrels; i++) {
			if (!keep[i])
				continue;
			keep[i] = false;
			if (lookup_still_disagrees(c, keep, &copy))
				changed = true;
			else
				keep[i] = true;
		}
	}
	fprintf(f, "minimal reproduction:\n");
	print_case(f, c, keep);
	fprintf(f, "--- ");
	lookup_print(f, &copy);
	loaded l;
	strbuf why, pa2, sa2;
	strbuf_init(&why);
	strbuf_init(&pa2);
	strbuf_init(&sa2);
	if (load_case(c, keep, &l, &why) == LOAD_OK) {
		lookup_pemba(&l, &copy, &pa2);
		lookup_spicedb(&l, &copy, &sa2);
		fprintf(f, "\n--- pemba:   [%s]\n--- SpiceDB: [%s]",
		        pa2.data ? pa2.data : "", sa2.data ? sa2.data : "");
	}
	fprintf(f, "\n---\n");
	fflush(f);
	loaded_close(&l);
	/* The caller goes on with the whole case: give SpiceDB all of it
	 * back (shrinking left it holding the last subset). */
	strbuf_reset(&why);
	load_case(c, NULL, &l, &why);
	loaded_close(&l);
	strbuf_free(&why);
	strbuf_free(&pa2);
	strbuf_free(&sa2);
	free(keep);
	free((char *)copy.resource_type);
	free((char *)copy.resource_id);
	free((char *)copy.permission);
	free((char *)copy.subject_type);
	free((char *)copy.subject_id);
	free((char *)copy.subject_relation);
	free((char *)copy.context);
}

/* The entry for `key` among the words of a lookup answer, parsed; false
 * if absent. */
static bool find_result(const char *answer, const char *key, parsed_result *out)
{
	char *copy = xstrdup(answer), *save = NULL;
	bool found = false;
	for (char *w = strtok_r(copy, " ", &save); w && !found;
	     w = strtok_r(NULL, " ", &save)) {
		parse_result(w, out);
		found = strcmp(out->key, key) == 0;
	}
	free(copy);
	return found;
}

/* A lookup result as the check answer it stands for: absent = NO, `id` =
 * HAS, `?id[a,b]` = CONDITIONAL missing a b. */
static void result_as_answer(bool present, const parsed_result *r, answer *a)
{
	memset(a, 0, sizeof(*a));
	if (!present) {
		a->perm = PEMBA_NO_PERMISSION;
		return;
	}
	a->perm = r->conditional ? PEMBA_CONDITIONAL_PERMISSION
	                         : PEMBA_HAS_PERMISSION;
	snprintf(a->missing, sizeof(a->missing), "%s", r->missing);
	for (char *p = a->missing; *p; p++)
		if (*p == ',')
			*p = ' ';
}

/* True when every result on which the two lookup answers differ (an id
 * one side lacks, or a different permissionship or missing set) is
 * answered by SpiceDB's own CheckPermission exactly as pemba's lookup
 * reports it: then SpiceDB's lookup disagrees with SpiceDB's check, and
 * pemba agrees with the check (README.md, "Known differences": SpiceDB's
 * LookupResources drops `X - X` and ignores wildcards for userset
 * subjects, where its check does not).  Wildcard results and errors are
 * never excused. */
static bool lookup_matches_spicedb_check(loaded *l, const lookup_query *q,
                                         const strbuf *pa, const strbuf *sa)
{
	if (lookup_is_error(pa) || lookup_is_error(sa))
		return false;
	const char *answers[2] = {pa->data ? pa->data : "",
	                          sa->data ? sa->data : ""};
	bool all = true;
	for (int side = 0; side < 2 && all; side++) {
		char *copy = xstrdup(answers[side]), *save = NULL;
		for (char *w = strtok_r(copy, " ", &save); w && all;
		     w = strtok_r(NULL, " ", &save)) {
			parsed_result r, mine, theirs;
			parse_result(w, &r);
			bool has_mine = find_result(answers[0], r.key, &mine);
			bool has_theirs =
			    find_result(answers[1], r.key, &theirs);
			if (has_mine && has_theirs &&
			    mine.conditional == theirs.conditional &&
			    strcmp(mine.missing, theirs.missing) == 0)
				continue;
			if (r.key[0] == '*') {
				all = false;
				break;
			}
			pemba_check_request check = {
			    .resource_type = q->resource_type,
			    .resource_id =
			        q->kind == 'R' ? r.key : q->resource_id,
			    .permission = q->permission,
			    .subject_type = q->subject_type,
			    .subject_id =
			        q->kind == 'R' ? q->subject_id : r.key,
			    .subject_relation = q->subject_relation,
			    .context = q->context,
			};
			answer expected, got;
			result_as_answer(has_mine, &mine, &expected);
			ask_spicedb(l, &check, &got);
			all = answers_equal(&expected, &got);
		}
		free(copy);
	}
	return all;
}

/* Runs one lookup comparison, unless sampling leaves it out. */
static void lookup_run(const diff_case *c, loaded *l, bool cyclic,
                       const lookup_query *q, strbuf *pa, strbuf *sa)
{
	if (lookups.percent < 100 &&
	    (lookups.counter++ * 2654435761u) % 100 >= lookups.percent) {
		lookups.sampled_out++;
		return;
	}
	int cmp = lookup_compare(l, cyclic, q, pa, sa);
	if (cmp == CMP_DISAGREE) {
		/* SpiceDB's lookups were seen to answer from state left by
		 * earlier lookups (a LookupSubjects came back empty after
		 * another one on the same data, and right on a fresh load):
		 * load the case again and ask once more before calling it a
		 * difference. */
		loaded again;
		strbuf why;
		strbuf_init(&why);
		if (load_case(c, NULL, &again, &why) == LOAD_OK) {
			lookups.reloaded++;
			lookup_spicedb(&again, q, sa);
			if (lookup_answers_equal(pa, sa))
				cmp = CMP_AGREE;
		}
		loaded_close(&again);
		strbuf_free(&why);
	}
	if (totals.trace) {
		lookup_print(stdout, q);
		printf(": pemba [%s], SpiceDB [%s]\n", pa->data ? pa->data : "",
		       sa->data ? sa->data : "");
	}
	if (q->kind == 'R')
		lookups.resources++;
	else
		lookups.subjects++;
	if (sa->len && !lookup_is_error(sa))
		lookups.nonempty++;
	if (cmp == CMP_DISAGREE && lookup_matches_spicedb_check(l, q, pa, sa)) {
		lookups.spicedb_inconsistent++;
		if (totals.verbose || lookups.spicedb_inconsistent <= 20) {
			printf("known: %s: ", c->name);
			lookup_print(stdout, q);
			printf(": pemba [%s], SpiceDB [%s]: SpiceDB's own "
			       "CheckPermission agrees with pemba (README.md, "
			       "\"Known differences\")\n",
			       pa->data ? pa->data : "",
			       sa->data ? sa->data : "");
		}
		cmp = CMP_AGREE;
	}
	if (cmp == CMP_DISAGREE && is_known_lookup(c, q, pa, sa))
		cmp = CMP_AGREE;
	if (cmp == CMP_DISAGREE) {
		totals.failed++;
		lookups.failed++;
		lookup_report(c, q, pa, sa);
	} else {
		totals.passed++;
		if (cmp == CMP_TOLERATED)
			lookups.tolerated++;
	}
}

/* Every LookupResources (each resource type in the data, each of its
 * relations and permissions, each subject) and LookupSubjects (each
 * object, each relation and permission, each subject type of the data
 * plain and with each relation its usersets name) of a loaded case. */
static void run_lookups(const diff_case *c, loaded *l, bool cyclic,
                        const object *objects, size_t nobjects,
                        const subject *subjects, size_t nsubjects,
                        const char *context)
{
	strbuf pa, sa;
	strbuf_init(&pa);
	strbuf_init(&sa);
	for (size_t t = 0; t < l->sc->ndefinitions; t++) {
		const schema_definition *d = l->sc->definitions[t];
		bool present = false;
		for (size_t o = 0; o < nobjects && !present; o++)
			present = strcmp(objects[o].type, d->name) == 0;
		if (!present)
			continue;
		for (size_t r = 0; r < d->nrelations; r++)
			for (size_t s = 0; s < nsubjects; s++) {
				lookup_query q = {
				    .kind = 'R',
				    .resource_type = d->name,
				    .permission = d->relations[r]->name,
				    .subject_type = subjects[s].type,
				    .subject_id = subjects[s].id,
				    .subject_relation = subjects[s].relation,
				    .context = context,
				};
				lookup_run(c, l, cyclic, &q, &pa, &sa);
			}
	}
	/* Subject kinds: (type, "") for every subject type, including the
	 * types only reached through wildcards, plus (type, rel) for every
	 * userset in the data. */
	subject *kinds = xcalloc(2 * l->nrels + 1, sizeof(*kinds));
	size_t nkinds = 0;
	for (size_t i = 0; i < l->nrels; i++) {
		const pemba_relationship *x = &l->rels[i];
		const char *sr = plain_relation(x->subject_relation);
		if (!subject_seen(kinds, nkinds, x->subject_type, "", ""))
			kinds[nkinds++] = (subject){x->subject_type, "", ""};
		if (sr[0] &&
		    !subject_seen(kinds, nkinds, x->subject_type, "", sr))
			kinds[nkinds++] = (subject){x->subject_type, "", sr};
	}
	for (size_t o = 0; o < nobjects; o++) {
		const schema_definition *d =
		    schema_find_definition(l->sc, objects[o].type);
		if (!d)
			continue;
		for (size_t r = 0; r < d->nrelations; r++)
			for (size_t k = 0; k < nkinds; k++) {
				lookup_query q = {
				    .kind = 'S',
				    .resource_type = objects[o].type,
				    .resource_id = objects[o].id,
				    .permission = d->relations[r]->name,
				    .subject_type = kinds[k].type,
				    .subject_relation = kinds[k].relation,
				    .context = context,
				};
				lookup_run(c, l, cyclic, &q, &pa, &sa);
			}
	}
	free(kinds);
	strbuf_free(&pa);
	strbuf_free(&sa);
}

/* ------------------------------------------- request contexts of files */

#define MAX_CANDIDATES 3

/* Literals of a caveat expression: integers and quoted strings (without
 * escapes), in order of appearance. */
typedef struct literals {
	long long ints[8];
	size_t nints;
	char strings[8][64];
	size_t nstrings;
} literals;

static void scan_literals(const char *e, literals *out)
{
	memset(out, 0, sizeof(*out));
	for (const char *p = e; *p;) {
		if (*p == '"' || *p == '\'') {
			const char *end = strchr(p + 1, *p);
			if (!end)
				break;
			size_t n = (size_t)(end - p - 1);
			if (n < sizeof(out->strings[0]) && out->nstrings < 8 &&
			    !memchr(p + 1, '\\', n) && !memchr(p + 1, '"', n))
				snprintf(out->strings[out->nstrings++],
				         sizeof(out->strings[0]), "%.*s",
				         (int)n, p + 1);
			p = end + 1;
			continue;
		}
		if (*p >= '0' && *p <= '9' &&
		    (p == e || !(p[-1] == '_' || p[-1] == '.' ||
		                 (p[-1] >= 'a' && p[-1] <= 'z') ||
		                 (p[-1] >= 'A' && p[-1] <= 'Z')))) {
			char *end;
			long long v = strtoll(p, &end, 10);
			if (out->nints < 8 && *end != '.')
				out->ints[out->nints++] = v;
			p = end;
			while (*p == '.' || (*p >= '0' && *p <= '9'))
				p++;
			continue;
		}
		p++;
	}
}

static void rfc3339(char *out, size_t n, time_t t)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
}

/* JSON values for a parameter of `type` that make the expression's
 * comparisons come out both ways where that is easy: its literals, a
 * neighbour of an integer literal, otherwise typed defaults.  Returns how
 * many (at least 1) were written to out. */
static size_t param_candidates(const char *type, const literals *lit,
                               char out[MAX_CANDIDATES][160])
{
	size_t n = 0;
	if (strcmp(type, "int") == 0 || strcmp(type, "uint") == 0 ||
	    strcmp(type, "double") == 0) {
		long long v = lit->nints ? lit->ints[0] : 1;
		snprintf(out[n++], 160, "%lld", v);
		snprintf(out[n++], 160, "%lld", v + 1);
		snprintf(out[n++], 160, "%s", v == 0 ? "2" : "0");
	} else if (strcmp(type, "string") == 0) {
		for (size_t i = 0; i < lit->nstrings && n < 2; i++)
			snprintf(out[n++], 160, "\"%s\"", lit->strings[i]);
		if (n == 0)
			snprintf(out[n++], 160, "\"a\"");
		snprintf(out[n++], 160, "\"\"");
	} else if (strcmp(type, "bool") == 0) {
		snprintf(out[n++], 160, "true");
		snprintf(out[n++], 160, "false");
	} else if (strcmp(type, "bytes") == 0) {
		snprintf(out[n++], 160, "\"YQ==\"");
		snprintf(out[n++], 160, "\"\"");
	} else if (strcmp(type, "duration") == 0) {
		snprintf(out[n++], 160, "\"1h\"");
		snprintf(out[n++], 160, "\"0s\"");
	} else if (strcmp(type, "timestamp") == 0) {
		time_t now = time(NULL);
		rfc3339(out[n++], 160, now - 3600);
		rfc3339(out[n++], 160, now + 3600);
		snprintf(out[n++], 160, "\"2023-01-01T00:00:00Z\"");
	} else if (strcmp(type, "ipaddress") == 0) {
		snprintf(out[n++], 160, "\"10.1.2.3\"");
		snprintf(out[n++], 160, "\"1.2.3.4\"");
	} else if (strncmp(type, "list<", 5) == 0) {
		char inner[64];
		snprintf(inner, sizeof(inner), "%.*s", (int)(strlen(type) - 6),
		         type + 5);
		char elems[MAX_CANDIDATES][160];
		size_t k = param_candidates(inner, lit, elems);
		snprintf(out[n++], 160, "[%s]", elems[0]);
		snprintf(out[n++], 160, "[]");
		snprintf(out[n++], 160, "[%s]", elems[k > 1 ? 1 : 0]);
	} else if (strncmp(type, "map<", 4) == 0) {
		char inner[64];
		snprintf(inner, sizeof(inner), "%.*s", (int)(strlen(type) - 5),
		         type + 4);
		char elems[MAX_CANDIDATES][160];
		param_candidates(inner, lit, elems);
		snprintf(out[n++], 160, "{\"%s\": %s}",
		         lit->nstrings ? lit->strings[0] : "a", elems[0]);
		snprintf(out[n++], 160, "{}");
	} else {
		/* any, or a type this harness does not know */
		snprintf(out[n++], 160, "1");
		snprintf(out[n++], 160, "\"a\"");
	}
	return n;
}

/* Request contexts for a validation file, from the parameters of its
 * caveats: for k = 0, 1, 2 every parameter set to its k-th candidate (see
 * param_candidates), one with the candidates rotated per parameter, and
 * one partial context with every other parameter left out. */
static void derive_contexts(diff_case *c, const schema *sc)
{
	enum { MAX_PARAMS = 32 };
	const char *names[MAX_PARAMS];
	char values[MAX_PARAMS][MAX_CANDIDATES][160];
	size_t nvalues[MAX_PARAMS];
	size_t np = 0;
	for (size_t i = 0; i < sc->ncaveats; i++) {
		const schema_caveat *cv = sc->caveats[i];
		literals lit;
		scan_literals(cv->expression ? cv->expression : "", &lit);
		for (size_t k = 0; k < cv->nparams && np < MAX_PARAMS; k++) {
			bool seen = false;
			for (size_t m = 0; m < np; m++)
				seen = seen || strcmp(names[m],
				                      cv->params[k].name) == 0;
			if (seen)
				continue;
			names[np] = cv->params[k].name;
			nvalues[np] = param_candidates(cv->params[k].type, &lit,
			                               values[np]);
			np++;
		}
	}
	if (np == 0)
		return;
	strbuf ctx;
	strbuf_init(&ctx);
	for (int form = 0; form < MAX_CANDIDATES + 2; form++) {
		strbuf_reset(&ctx);
		strbuf_putc(&ctx, '{');
		bool first = true;
		for (size_t i = 0; i < np; i++) {
			size_t pick;
			if (form < MAX_CANDIDATES)
				pick = (size_t)form;
			else if (form == MAX_CANDIDATES)
				pick = i + 1;
			else if (i % 2 == 1)
				continue; /* partial */
			else
				pick = 0;
			strbuf_printf(&ctx, "%s\"%s\": %s", first ? "" : ", ",
			              names[i], values[i][pick % nvalues[i]]);
			first = false;
		}
		strbuf_putc(&ctx, '}');
		case_add_context(c, ctx.data);
	}
	strbuf_free(&ctx);
	c->lookup_contexts = c->ncontexts;
}

/* Compares one check, counts it, and reports a disagreement.  Returns
 * false if it disagreed (and is not a known difference). */
static bool run_check(const diff_case *c, loaded *l, bool cyclic,
                      const pemba_check_request *q)
{
	answer pa, sa;
	int cmp = compare(l, cyclic, q, &pa, &sa);
	if (totals.trace) {
		request_print(stdout, q);
		printf(": pemba ");
		answer_print(stdout, &pa);
		printf(", SpiceDB ");
		answer_print(stdout, &sa);
		printf("\n");
	}
	if (sa.perm == PEMBA_HAS_PERMISSION)
		totals.spicedb_has++;
	else if (sa.perm == PEMBA_NO_PERMISSION)
		totals.spicedb_no++;
	else if (sa.perm == PEMBA_CONDITIONAL_PERMISSION)
		totals.spicedb_conditional++;
	else
		totals.spicedb_error++;
	totals.checks++;
	if (cmp == CMP_DISAGREE && is_known_check(c, q, &pa, &sa))
		cmp = CMP_AGREE;
	if (cmp == CMP_DISAGREE) {
		totals.failed++;
		report_disagreement(c, q, &pa, &sa);
		return false;
	}
	totals.passed++;
	if (cmp == CMP_TOLERATED)
		totals.cycle_tolerated++;
	return true;
}

/* Runs every check of case c.  Returns false on a fatal harness error. */
static bool run_case(diff_case *c)
{
	loaded l;
	strbuf why;
	strbuf_init(&why);
	if (totals.verbose) {
		printf("=== %s\n", c->name);
		print_case(stdout, c, NULL);
		fflush(stdout);
	}
	int rc = load_case(c, NULL, &l, &why);
	totals.cases++;
	if (rc == LOAD_FATAL) {
		printf("FATAL in %s: %s\n", c->name, why.data);
		strbuf_free(&why);
		loaded_close(&l);
		return false;
	}
	if (rc == LOAD_SKIP) {
		totals.schema_both_rejected++;
		if (totals.verbose)
			printf("note: %s: %s\n", c->name, why.data);
	} else if (rc == LOAD_MISMATCH && is_known(c, "load", why.data, "")) {
		totals.passed++;
	} else if (rc == LOAD_MISMATCH) {
		totals.failed++;
		printf("\nDISAGREEMENT in %s: %s\n", c->name, why.data);
		print_case(stdout, c, NULL);
	}
	strbuf_free(&why);
	if (rc != LOAD_OK) {
		loaded_close(&l);
		return true;
	}

	/* Objects: everything in the data; subjects: subject objects,
	 * userset subjects, and two nobody has heard of. */
	size_t n = l.nrels;
	object *objects = xcalloc(2 * n + 2, sizeof(*objects));
	subject *subjects = xcalloc(n + 5, sizeof(*subjects));
	size_t nobjects = 0, nsubjects = 0;
	for (size_t i = 0; i < n; i++) {
		const pemba_relationship *r = &l.rels[i];
		if (!object_seen(objects, nobjects, r->resource_type,
		                 r->resource_id))
			objects[nobjects++] =
			    (object){r->resource_type, r->resource_id};
		if (strcmp(r->subject_id, "*") == 0)
			continue;
		if (!object_seen(objects, nobjects, r->subject_type,
		                 r->subject_id))
			objects[nobjects++] =
			    (object){r->subject_type, r->subject_id};
		const char *sr = plain_relation(r->subject_relation);
		if (!subject_seen(subjects, nsubjects, r->subject_type,
		                  r->subject_id, sr))
			subjects[nsubjects++] =
			    (subject){r->subject_type, r->subject_id, sr};
	}
	/* Strangers: an object of the first subject type and a userset of
	 * the first userset type, with an id that appears nowhere. */
	size_t real_subjects = nsubjects;
	for (size_t i = 0; i < real_subjects; i++)
		if (!subjects[i].relation[0]) {
			subjects[nsubjects++] =
			    (subject){subjects[i].type, "stranger", ""};
			break;
		}
	for (size_t i = 0; i < real_subjects; i++)
		if (subjects[i].relation[0]) {
			subjects[nsubjects++] = (subject){
			    subjects[i].type, "stranger", subjects[i].relation};
			break;
		}
	/* And one whose relation does not exist: an error on both sides. */
	if (real_subjects > 0 && totals.cases % 8 == 0)
		subjects[nsubjects++] =
		    (subject){subjects[0].type, "stranger", "no_such_rel"};

	if (c->derive_contexts)
		derive_contexts(c, l.sc);
	if (c->ncontexts > 0 || l.sc->ncaveats > 0)
		totals.caveat_cases++;
	bool cyclic = data_is_cyclic(l.rels, l.nrels);
	uint64_t case_checks = 0, case_failed = 0;
	/* Every question without a request context (ci 0), then with each
	 * of the case's contexts. */
	for (size_t ci = 0; ci <= c->ncontexts; ci++) {
		const char *context = ci ? c->contexts[ci - 1] : NULL;
		if (ci)
			totals.context_runs++;
		for (size_t o = 0; o < nobjects; o++) {
			const schema_definition *d =
			    schema_find_definition(l.sc, objects[o].type);
			if (!d)
				continue;
			for (size_t r = 0; r < d->nrelations; r++)
				for (size_t s = 0; s < nsubjects; s++) {
					pemba_check_request q = {
					    .resource_type = objects[o].type,
					    .resource_id = objects[o].id,
					    .permission = d->relations[r]->name,
					    .subject_type = subjects[s].type,
					    .subject_id = subjects[s].id,
					    .subject_relation =
					        subjects[s].relation,
					    .context = context,
					};
					case_checks++;
					if (!run_check(c, &l, cyclic, &q))
						case_failed++;
				}
		}
		/* The built-in chains probe the check depth limit, which
		 * SpiceDB's lookups apply differently (README.md): no
		 * lookups there.  Lookups take only the first
		 * lookup_contexts request contexts (time). */
		if (strncmp(c->name, "chain of ", 9) != 0 &&
		    (ci == 0 || ci <= c->lookup_contexts))
			run_lookups(c, &l, cyclic, objects, nobjects, subjects,
			            real_subjects, context);
	}
	if (totals.verbose)
		printf("%s: %llu checks, %llu failed%s\n", c->name,
		       (unsigned long long)case_checks,
		       (unsigned long long)case_failed,
		       cyclic ? " (cyclic data)" : "");
	free(objects);
	free(subjects);
	loaded_close(&l);
	return true;
}

/* ------------------------------------------------ validation files */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	strbuf b;
	strbuf_init(&b);
	char buf[8192];
	size_t k;
	while ((k = fread(buf, 1, sizeof(buf), f)) > 0)
		strbuf_append(&b, buf, k);
	fclose(f);
	return strbuf_detach(&b, len);
}

static const char *mapping_scalar(yaml_document_t *doc, yaml_node_t *map,
                                  const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
	     p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *v = yaml_document_get_node(doc, p->value);
		if (k && k->type == YAML_SCALAR_NODE &&
		    strcmp((const char *)k->data.scalar.value, key) == 0 && v &&
		    v->type == YAML_SCALAR_NODE)
			return (const char *)v->data.scalar.value;
	}
	return NULL;
}

/* Loads a validation file into c.  Returns 1 if loaded, 0 if it is to be
 * skipped (no schema), -1 on a parse failure. */
static int load_validation_file(const char *path, diff_case *c)
{
	size_t len;
	char *text = read_file(path, &len);
	if (!text)
		return -1;
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		yaml_parser_delete(&parser);
		free(text);
		return -1;
	}
	yaml_parser_delete(&parser);
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	const char *schema_text = mapping_scalar(&doc, root, "schema");
	const char *rels = mapping_scalar(&doc, root, "relationships");
	int result = 0;
	/* Expiration is compared (both sides judge it by the current
	 * time); caveats with request contexts derived from their
	 * parameters once the schema is compiled (derive_contexts). */
	if (schema_text) {
		memset(c, 0, sizeof(*c));
		c->schema = xstrdup(schema_text);
		c->derive_contexts = true;
		const char *line = rels ? rels : "";
		while (*line) {
			size_t k = strcspn(line, "\n");
			char *one = xstrndup(line, k);
			line += k + (line[k] ? 1 : 0);
			char *s = one, *e;
			while (*s == ' ' || *s == '\t')
				s++;
			e = s + strlen(s);
			while (e > s &&
			       (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
				*--e = '\0';
			if (*s && strncmp(s, "//", 2) != 0)
				case_add_rel(c, s);
			free(one);
		}
		result = 1;
	}
	yaml_document_delete(&doc);
	free(text);
	return result;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool run_validation_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		printf("FATAL: cannot open PEMBA_TESTDATA directory %s\n", dir);
		return false;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *ent;
	while ((ent = readdir(d)) != NULL) {
		size_t k = strlen(ent->d_name);
		if (k < 6 || strcmp(ent->d_name + k - 5, ".yaml") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = xstrdup(ent->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), compare_names);
	bool ok = true;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		diff_case c;
		int rc = load_validation_file(path, &c);
		if (rc < 0) {
			printf("FATAL: cannot parse %s\n", path);
			ok = false;
		} else if (rc == 0) {
			totals.cases_skipped++;
		} else {
			c.name = xstrdup(names[i]);
			ok = run_case(&c) && ok;
			case_free(&c);
		}
		free(names[i]);
	}
	free(names);
	return ok;
}

/* ------------------------------------------------------ built-in cases */

/* Caveat cases that pin a known difference (README.md, "Known
 * differences"; each has an entry in known_differences). */
static bool run_builtin_caveat_cases(void)
{
	static const struct {
		const char *name, *schema, *rels[6], *contexts[2];
	} cases[] = {
	    {"caveat with a two-letter name",
	     "definition user {}\n"
	     "caveat c1(n int) {\n\tn == 1\n}\n"
	     "definition document {\n"
	     "\trelation viewer: user with c1 | user\n"
	     "\tpermission view = viewer\n"
	     "}\n",
	     {"document:a#viewer@user:x[c1]",
	      "document:a#viewer@user:y[c1:{\"n\": 2}]",
	      "document:a#viewer@user:z", NULL},
	     {"{\"n\": 1}", "{\"n\": 2}"}},
	    {"caveated direct type beside an uncaveated userset",
	     "definition user {}\n"
	     "caveat cav2(m int) {\n\tm <= 3\n}\n"
	     "definition group {\n\trelation member: user\n}\n"
	     "definition document {\n"
	     "\trelation viewer: group#member | group with cav2\n"
	     "\trelation editor: group | group:* with cav2\n"
	     "\tpermission view = viewer\n"
	     "}\n",
	     {"document:a#viewer@group:b[cav2]",
	      "document:a#viewer@group:c#member", "group:c#member@user:u",
	      "document:a#editor@group:*[cav2]"},
	     {"{\"m\": 1}", "{\"m\": 5}"}},
	};
	bool ok = true;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		diff_case c;
		memset(&c, 0, sizeof(c));
		c.name = xstrdup(cases[k].name);
		c.schema = xstrdup(cases[k].schema);
		for (int i = 0; cases[k].rels[i]; i++)
			case_add_rel(&c, cases[k].rels[i]);
		for (int i = 0; i < 2; i++)
			case_add_context(&c, cases[k].contexts[i]);
		c.lookup_contexts = c.ncontexts;
		ok = run_case(&c) && ok;
		case_free(&c);
	}
	return ok;
}

/* Chains of nested groups longer than the depth limit (50), so that the
 * depth error is compared exactly: with a relation only, and with a
 * permission between the hops (each hop then costs two dispatches). */
static bool run_builtin_cases(void)
{
	static const char *const schemas[] = {
	    "definition user {}\n"
	    "definition group {\n"
	    "\trelation member: user | group#member\n"
	    "}\n",
	    "definition user {}\n"
	    "definition group {\n"
	    "\trelation direct: user | group#member\n"
	    "\tpermission member = direct\n"
	    "}\n",
	    "definition user {}\n"
	    "definition group {\n"
	    "\trelation parent: group\n"
	    "\trelation direct: user\n"
	    "\tpermission member = direct + parent->member\n"
	    "}\n",
	};
	static const char *const names[] = {
	    "chain of 55 nested groups", "chain of 55 nested groups via alias",
	    "chain of 55 parents"};
	bool ok = true;
	for (int k = 0; k < 3; k++) {
		diff_case c;
		memset(&c, 0, sizeof(c));
		c.name = xstrdup(names[k]);
		c.schema = xstrdup(schemas[k]);
		char text[128];
		const char *rel = k == 0 ? "member" : "direct";
		snprintf(text, sizeof(text), "group:g0#%s@user:u", rel);
		case_add_rel(&c, text);
		for (int i = 1; i < 55; i++) {
			if (k == 2)
				snprintf(text, sizeof(text),
				         "group:g%d#parent@group:g%d", i - 1,
				         i);
			else
				snprintf(text, sizeof(text),
				         "group:g%d#%s@group:g%d#member", i,
				         rel, i - 1);
			case_add_rel(&c, text);
		}
		ok = run_case(&c) && ok;
		case_free(&c);
	}
	return ok && run_builtin_caveat_cases();
}

/* ------------------------------------------------- random generation */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	/* splitmix64: tiny, and good enough to spread seeds apart. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int rng_below(int n)
{
	return (int)(rng_next() % (uint64_t)n);
}

static bool rng_chance(int percent)
{
	return rng_below(100) < percent;
}

/* Caveats draw from a stream of their own, so that a seed's schema and
 * relationships without their caveats are exactly what they were before
 * caveats were generated (and are with PEMBA_DIFF_CAVEATS=0). */
static uint64_t cav_rng_state;

static int cav_below(int n)
{
	uint64_t saved = rng_state;
	rng_state = cav_rng_state;
	int v = rng_below(n);
	cav_rng_state = rng_state;
	rng_state = saved;
	return v;
}

static bool cav_chance(int percent)
{
	return cav_below(100) < percent;
}

/* The generated model, kept as plain data so that names can be chosen
 * before any expression refers to them. */
#define GEN_MAX_DEFS 4
#define GEN_MAX_ITEMS 8
#define GEN_MAX_TYPES 4

typedef struct gen_type {
	int def;         /* index into gen defs */
	const char *rel; /* userset relation, or NULL */
	bool wildcard;
	int caveat;      /* 1-based index into gen_caveats; 0: none */
	bool also_plain; /* with a caveat: the type is allowed without too */
} gen_type;

typedef struct gen_item {
	const char *name;
	bool is_permission;
	gen_type types[GEN_MAX_TYPES]; /* relations */
	int ntypes;
	char *expr; /* permissions */
} gen_item;

typedef struct gen_def {
	const char *name;
	bool present;
	int nids; /* object ids "a", "b", ... */
	gen_item items[GEN_MAX_ITEMS];
	int nitems;
} gen_def;

static gen_def gen_defs[GEN_MAX_DEFS];

/* user < group < folder < document: also the rank that keeps generated
 * data acyclic (an edge only ever points to a lower rank). */
enum { DEF_USER, DEF_GROUP, DEF_FOLDER, DEF_DOCUMENT };

static const char *const object_ids[] = {"a", "b", "c"};

static gen_item *gen_find(int def, const char *name)
{
	gen_def *d = &gen_defs[def];
	for (int i = 0; i < d->nitems; i++)
		if (strcmp(d->items[i].name, name) == 0)
			return &d->items[i];
	return NULL;
}

/* True if relation `it` allows a wildcard, directly or through a userset
 * type (SpiceDB refuses both on the left of an arrow and the second as a
 * userset type: "wildcard relations cannot be transitively included"). */
static bool relation_has_wildcard(const gen_item *it, int depth)
{
	if (depth > 8)
		return false;
	for (int i = 0; i < it->ntypes; i++) {
		const gen_type *t = &it->types[i];
		if (t->wildcard)
			return true;
		if (t->rel) {
			const gen_item *target = gen_find(t->def, t->rel);
			if (target && !target->is_permission &&
			    relation_has_wildcard(target, depth + 1))
				return true;
		}
	}
	return false;
}

static void add_type(gen_item *it, int def, const char *rel, bool wildcard)
{
	if (it->ntypes == GEN_MAX_TYPES)
		return;
	for (int i = 0; i < it->ntypes; i++) {
		gen_type *t = &it->types[i];
		if (t->def == def && t->wildcard == wildcard &&
		    ((t->rel == NULL && rel == NULL) ||
		     (t->rel && rel && strcmp(t->rel, rel) == 0)))
			return;
	}
	it->types[it->ntypes++] = (gen_type){def, rel, wildcard, 0, false};
}

/* Drops userset types that would include a wildcard transitively. */
static void prune_wildcard_usersets(void)
{
	for (int di = 0; di < GEN_MAX_DEFS; di++) {
		gen_def *d = &gen_defs[di];
		for (int i = 0; d->present && i < d->nitems; i++) {
			gen_item *it = &d->items[i];
			for (int k = 0; k < it->ntypes;) {
				gen_type *t = &it->types[k];
				const gen_item *target =
				    t->rel ? gen_find(t->def, t->rel) : NULL;
				if (target && !target->is_permission &&
				    relation_has_wildcard(target, 0)) {
					it->types[k] = it->types[--it->ntypes];
					continue;
				}
				k++;
			}
			if (!it->is_permission && it->ntypes == 0)
				add_type(it, DEF_USER, NULL, false);
		}
	}
}

/* Random allowed types for a relation of `def`: users (maybe `user:*`),
 * group usersets, and same-definition usersets (nesting). */
static void random_types(gen_item *it, int def)
{
	int want = 1 + rng_below(3);
	for (int k = 0; k < want * 3 && it->ntypes < want; k++) {
		int pick = rng_below(6);
		if (pick <= 1) {
			add_type(it, DEF_USER, NULL, false);
		} else if (pick == 2) {
			/* Mostly user:*, sometimes a wildcard of a type
			 * with relations, to meet userset subjects. */
			bool group =
			    gen_defs[DEF_GROUP].present && rng_chance(30);
			add_type(it, group ? DEF_GROUP : DEF_USER, NULL, true);
		} else if (pick == 3 && gen_defs[DEF_GROUP].present) {
			add_type(it, DEF_GROUP, "member", false);
		} else if (pick == 4 && gen_defs[DEF_GROUP].present) {
			bool manager =
			    gen_defs[DEF_GROUP].nitems > 1 &&
			    !gen_defs[DEF_GROUP].items[1].is_permission;
			add_type(it, DEF_GROUP,
			         manager && rng_chance(50) ? "manager" : NULL,
			         false);
		} else if (pick == 5 && def != DEF_USER) {
			/* A userset of the same definition: nesting. */
			gen_def *d = &gen_defs[def];
			const char *rel = d->items[rng_below(d->nitems)].name;
			add_type(it, def, rel, false);
		}
	}
	if (it->ntypes == 0)
		add_type(it, DEF_USER, NULL, false);
}

static void random_expr(strbuf *out, int def, int self, int depth);

/* A leaf of a permission expression on item `self` of `def`. */
static void random_leaf(strbuf *out, int def, int self)
{
	gen_def *d = &gen_defs[def];
	for (int attempt = 0; attempt < 20; attempt++) {
		int pick = rng_below(10);
		if (pick == 0) {
			strbuf_puts(out, "nil");
			return;
		}
		if (pick <= 4) {
			/* A relation, or a permission defined earlier (a
			 * permission cannot refer to itself or to a later
			 * one, or the schema has a cycle in permissions). */
			int i = rng_below(self);
			strbuf_puts(out, d->items[i].name);
			return;
		}
		/* An arrow over a relation without wildcards. */
		int i = rng_below(d->nitems);
		gen_item *ts = &d->items[i];
		if (ts->is_permission || relation_has_wildcard(ts, 0))
			continue;
		gen_type *t = &ts->types[rng_below(ts->ntypes)];
		gen_def *sd = &gen_defs[t->def];
		if (sd->nitems == 0)
			continue;
		/* Any item of the subject type, including the permission
		 * being defined (recursion through the data). */
		const char *target = sd->items[rng_below(sd->nitems)].name;
		int form = rng_below(4);
		if (form <= 1)
			strbuf_printf(out, "%s->%s", ts->name, target);
		else if (form == 2)
			strbuf_printf(out, "%s.any(%s)", ts->name, target);
		else
			strbuf_printf(out, "%s.all(%s)", ts->name, target);
		return;
	}
	strbuf_puts(out, d->items[0].name);
}

static void random_expr(strbuf *out, int def, int self, int depth)
{
	if (depth >= 2 || rng_chance(40)) {
		random_leaf(out, def, self);
		return;
	}
	static const char *const ops[] = {" + ", " & ", " - "};
	const char *op = ops[rng_below(3)];
	int n = op[1] == '-' ? 2 : 2 + rng_below(2);
	strbuf_putc(out, '(');
	for (int i = 0; i < n; i++) {
		if (i)
			strbuf_puts(out, op);
		random_expr(out, def, self, depth + 1);
	}
	strbuf_putc(out, ')');
}

/* Caveat parameters, shared by every generated caveat (one name, one
 * type), so that one request context speaks to all of them. */
static const struct {
	const char *name, *type;
} gen_params[] = {
    {"n", "int"},  {"m", "int"},       {"s", "string"},
    {"b", "bool"}, {"l", "list<int>"},
};
#define GEN_NPARAMS 5
#define GEN_MAX_CAVEATS 3

typedef struct gen_caveat {
	int params[3]; /* indices into gen_params */
	int nparams;
	char expr[256];
} gen_caveat;

static gen_caveat gen_caveats[GEN_MAX_CAVEATS];
static int gen_ncaveats;                /* 0: this seed has no caveats */
static bool gen_caveats_enabled = true; /* PEMBA_DIFF_CAVEATS */

/* A random comparison over parameter p. */
static void caveat_atom(strbuf *out, int p)
{
	static const char *const cmp[] = {"==", "!=", "<", ">", "<=", ">="};
	const char *name = gen_params[p].name;
	switch (gen_params[p].type[0]) {
	case 'i':
		strbuf_printf(out, "%s %s %d", name, cmp[cav_below(6)],
		              cav_below(4));
		break;
	case 's': {
		int form = cav_below(3);
		if (form == 0)
			strbuf_printf(out, "%s == \"a\"", name);
		else if (form == 1)
			strbuf_printf(out, "%s != \"b\"", name);
		else
			strbuf_printf(out, "%s in [\"a\", \"b\"]", name);
		break;
	}
	case 'b': {
		static const char *const forms[] = {"%s", "!%s", "%s == false"};
		strbuf_printf(out, forms[cav_below(3)], name);
		break;
	}
	default: /* list<int> */
		if (cav_chance(75))
			strbuf_printf(out, "%d in %s", cav_below(4), name);
		else
			strbuf_printf(out, "%s.size() > %d", name,
			              cav_below(2));
		break;
	}
}

/* 1-3 caveats over 1-3 distinct parameters each, joined with && and ||
 * (sometimes grouped). */
static void gen_caveat_definitions(void)
{
	gen_ncaveats = 0;
	if (!gen_caveats_enabled || !cav_chance(75))
		return;
	gen_ncaveats = 1 + cav_below(GEN_MAX_CAVEATS);
	for (int i = 0; i < gen_ncaveats; i++) {
		gen_caveat *cv = &gen_caveats[i];
		memset(cv, 0, sizeof(*cv));
		int want = 1 + cav_below(3);
		while (cv->nparams < want) {
			int p = cav_below(GEN_NPARAMS);
			bool seen = false;
			for (int k = 0; k < cv->nparams; k++)
				seen = seen || cv->params[k] == p;
			if (!seen)
				cv->params[cv->nparams++] = p;
		}
		/* Keep declaration order canonical, as SpiceDB prints it. */
		strbuf e;
		strbuf_init(&e);
		const char *ops[2] = {cav_chance(50) ? " && " : " || ",
		                      cav_chance(50) ? " && " : " || "};
		int n = cv->nparams;
		bool group_left = n == 3 && cav_chance(50);
		bool group_right = n == 3 && !group_left && cav_chance(50);
		if (n == 1 && cav_chance(40)) {
			/* two comparisons on one parameter */
			caveat_atom(&e, cv->params[0]);
			strbuf_puts(&e, ops[0]);
			caveat_atom(&e, cv->params[0]);
		} else {
			for (int k = 0; k < n; k++) {
				if (k)
					strbuf_puts(&e, ops[k - 1]);
				if ((k == 0 && group_left) ||
				    (k == 1 && group_right))
					strbuf_putc(&e, '(');
				caveat_atom(&e, cv->params[k]);
				if ((k == 1 && group_left) ||
				    (k == 2 && group_right))
					strbuf_putc(&e, ')');
			}
		}
		snprintf(cv->expr, sizeof(cv->expr), "%s", e.data);
		strbuf_free(&e);
	}
}

/* SpiceDB's CheckPermission ignores the caveated relationships of a
 * direct type `T with cav` or `T:* with cav` when the same relation also
 * allows an uncaveated userset `T#rel` (checks of T:id answer NO even
 * when the caveat is true), and those of `T:* with cav` beside an
 * uncaveated `T` (checks of the userset T:id#rel, which the wildcard
 * covers, answer NO); its lookups do report them (README.md, "Known
 * differences", and the built-in case that pins it).  The generator does
 * not make those combinations: such a type loses its caveat. */
static void drop_unchecked_caveats(gen_item *it)
{
	for (int k = 0; k < it->ntypes; k++) {
		gen_type *t = &it->types[k];
		if (!t->caveat || t->rel)
			continue;
		for (int j = 0; j < it->ntypes; j++) {
			const gen_type *u = &it->types[j];
			if (u->def == t->def && !u->wildcard &&
			    (u->rel || t->wildcard) &&
			    (!u->caveat || u->also_plain)) {
				t->caveat = 0;
				t->also_plain = false;
				break;
			}
		}
	}
}

/* Puts caveats on some allowed types: `user with c1` (only caveated) or
 * `user | user with c1` (both), on objects, wildcards and usersets alike,
 * including arrow tuplesets. */
static void gen_caveat_types(void)
{
	if (gen_ncaveats == 0)
		return;
	for (int di = DEF_GROUP; di < GEN_MAX_DEFS; di++) {
		gen_def *d = &gen_defs[di];
		for (int i = 0; d->present && i < d->nitems; i++) {
			gen_item *it = &d->items[i];
			for (int k = 0; !it->is_permission && k < it->ntypes;
			     k++) {
				if (!cav_chance(35))
					continue;
				it->types[k].caveat =
				    1 + cav_below(gen_ncaveats);
				it->types[k].also_plain = cav_chance(40);
			}
			drop_unchecked_caveats(it);
		}
	}
}

/* A random JSON value for parameter p. */
static void caveat_value(strbuf *out, int p)
{
	static const char *const strings[] = {"\"a\"", "\"b\"", "\"\""};
	static const char *const lists[] = {"[]", "[1]", "[1, 2]", "[0, 3]"};
	switch (gen_params[p].type[0]) {
	case 'i':
		strbuf_printf(out, "%d", cav_below(4));
		break;
	case 's':
		strbuf_puts(out, strings[cav_below(3)]);
		break;
	case 'b':
		strbuf_puts(out, cav_chance(50) ? "true" : "false");
		break;
	default:
		strbuf_puts(out, lists[cav_below(4)]);
		break;
	}
}

/* A context over the parameters params[0..n), each present with the
 * given chance; "{}" if none is. */
static void caveat_context(strbuf *out, const int *params, int n, int percent)
{
	bool first = true;
	strbuf_putc(out, '{');
	for (int k = 0; k < n; k++) {
		if (!cav_chance(percent))
			continue;
		strbuf_printf(out, "%s\"%s\": ", first ? "" : ", ",
		              gen_params[params[k]].name);
		caveat_value(out, params[k]);
		first = false;
	}
	strbuf_putc(out, '}');
}

/* Request contexts per seed with caveats (PEMBA_DIFF_CONTEXTS). */
static int gen_contexts_per_seed = 1;

/* Request contexts of a seed with caveats: a partial one (each parameter
 * present at even odds) and a full one, in random order, of which the
 * first gen_contexts_per_seed are kept (by default one: the time budget,
 * README.md).  Lookups take only the first. */
static void gen_request_contexts(diff_case *c)
{
	if (gen_ncaveats == 0)
		return;
	int all[GEN_NPARAMS];
	for (int i = 0; i < GEN_NPARAMS; i++)
		all[i] = i;
	strbuf partial, full;
	strbuf_init(&partial);
	strbuf_init(&full);
	caveat_context(&partial, all, GEN_NPARAMS, 50);
	caveat_context(&full, all, GEN_NPARAMS, 100);
	bool full_first = cav_chance(50);
	case_add_context(c, full_first ? full.data : partial.data);
	if (gen_contexts_per_seed > 1)
		case_add_context(c, full_first ? partial.data : full.data);
	c->lookup_contexts = 1;
	strbuf_free(&partial);
	strbuf_free(&full);
}

static void gen_schema(strbuf *out)
{
	static const char *const def_names[] = {"user", "group", "folder",
	                                        "document"};
	static const char *const rel_names[] = {"viewer", "editor", "owner",
	                                        "banned"};
	static const char *const perm_names[] = {"view", "edit", "admin",
	                                         "audit"};
	memset(gen_defs, 0, sizeof(gen_defs));
	for (int i = 0; i < GEN_MAX_DEFS; i++) {
		gen_defs[i].name = def_names[i];
		gen_defs[i].nids = 1 + rng_below(3);
	}
	gen_defs[DEF_USER].present = true;
	gen_defs[DEF_USER].nids = 2 + rng_below(2);
	gen_defs[DEF_GROUP].present = rng_chance(80);
	gen_defs[DEF_FOLDER].present = rng_chance(70);
	gen_defs[DEF_DOCUMENT].present = true;

	/* Names first: relations, then permissions, per definition. */
	for (int di = DEF_GROUP; di < GEN_MAX_DEFS; di++) {
		gen_def *d = &gen_defs[di];
		if (!d->present)
			continue;
		if (di == DEF_GROUP) {
			d->items[d->nitems++].name = "member";
			if (rng_chance(50))
				d->items[d->nitems++].name = "manager";
		} else {
			if (di == DEF_DOCUMENT || rng_chance(70))
				d->items[d->nitems++].name = "parent";
			int nrel = 1 + rng_below(3);
			for (int i = 0; i < nrel; i++)
				d->items[d->nitems++].name = rel_names[i];
		}
		int nperm = 1 + rng_below(3);
		for (int i = 0; i < nperm; i++) {
			d->items[d->nitems].is_permission = true;
			d->items[d->nitems++].name = perm_names[i];
		}
	}
	/* Allowed types. */
	for (int di = DEF_GROUP; di < GEN_MAX_DEFS; di++) {
		gen_def *d = &gen_defs[di];
		for (int i = 0; d->present && i < d->nitems; i++) {
			gen_item *it = &d->items[i];
			if (it->is_permission)
				continue;
			if (strcmp(it->name, "parent") == 0) {
				int p = gen_defs[DEF_FOLDER].present
				            ? DEF_FOLDER
				            : DEF_GROUP;
				if (!gen_defs[p].present)
					p = DEF_USER;
				add_type(it, p, NULL, false);
				if (rng_chance(20) &&
				    gen_defs[DEF_GROUP].present)
					add_type(it, DEF_GROUP, NULL, false);
			} else if (di == DEF_GROUP &&
			           strcmp(it->name, "member") == 0) {
				add_type(it, DEF_USER, NULL, false);
				if (rng_chance(80))
					add_type(it, DEF_GROUP, "member",
					         false);
				if (rng_chance(20))
					add_type(it, DEF_USER, NULL, true);
			} else {
				random_types(it, di);
			}
		}
	}
	prune_wildcard_usersets();
	gen_caveat_definitions();
	gen_caveat_types();
	/* Expressions. */
	for (int di = DEF_GROUP; di < GEN_MAX_DEFS; di++) {
		gen_def *d = &gen_defs[di];
		for (int i = 0; d->present && i < d->nitems; i++) {
			if (!d->items[i].is_permission)
				continue;
			strbuf e;
			strbuf_init(&e);
			random_expr(&e, di, i, 0);
			d->items[i].expr = strbuf_detach(&e, NULL);
		}
	}
	/* Text. */
	for (int i = 0; i < gen_ncaveats; i++) {
		const gen_caveat *cv = &gen_caveats[i];
		strbuf_printf(out, "caveat cav%d(", i + 1);
		for (int k = 0; k < cv->nparams; k++)
			strbuf_printf(out, "%s%s %s", k ? ", " : "",
			              gen_params[cv->params[k]].name,
			              gen_params[cv->params[k]].type);
		strbuf_printf(out, ") {\n\t%s\n}\n", cv->expr);
	}
	for (int di = 0; di < GEN_MAX_DEFS; di++) {
		gen_def *d = &gen_defs[di];
		if (!d->present)
			continue;
		strbuf_printf(out, "definition %s {\n", d->name);
		for (int i = 0; i < d->nitems; i++) {
			gen_item *it = &d->items[i];
			if (it->is_permission) {
				strbuf_printf(out, "\tpermission %s = %s\n",
				              it->name, it->expr);
				free(it->expr);
				it->expr = NULL;
				continue;
			}
			strbuf_printf(out, "\trelation %s: ", it->name);
			bool first = true;
			for (int k = 0; k < it->ntypes; k++) {
				gen_type *t = &it->types[k];
				for (int v = 0; v < 2; v++) {
					/* v 0: plain, v 1: with the caveat */
					if (v == 0 && t->caveat &&
					    !t->also_plain)
						continue;
					if (v == 1 && !t->caveat)
						continue;
					strbuf_printf(out, "%s%s%s%s%s",
					              first ? "" : " | ",
					              gen_defs[t->def].name,
					              t->wildcard ? ":*" : "",
					              t->rel ? "#" : "",
					              t->rel ? t->rel : "");
					if (v == 1)
						strbuf_printf(out,
						              " with cav%d",
						              t->caveat);
					first = false;
				}
			}
			strbuf_putc(out, '\n');
		}
		strbuf_puts(out, "}\n");
	}
}

/* Random relationships.  Unless `cyclic`, every edge points from a
 * resource to a subject of lower rank (definition order, then id), so the
 * data has no cycle. */
static void gen_relationships(diff_case *c, bool cyclic)
{
	int want = 3 + rng_below(10);
	for (int attempt = 0; attempt < want * 4 && (int)c->nrels < want;
	     attempt++) {
		int di = DEF_GROUP + rng_below(3);
		gen_def *d = &gen_defs[di];
		if (!d->present || d->nitems == 0)
			continue;
		gen_item *it = &d->items[rng_below(d->nitems)];
		if (it->is_permission)
			continue;
		gen_type *t = &it->types[rng_below(it->ntypes)];
		int rid = rng_below(d->nids);
		int sid = rng_below(gen_defs[t->def].nids);
		if (!cyclic && !t->wildcard &&
		    (t->def > di || (t->def == di && sid >= rid)))
			continue;
		char text[512];
		int n =
		    snprintf(text, sizeof(text), "%s:%s#%s@%s:%s%s%s", d->name,
		             object_ids[rid], it->name, gen_defs[t->def].name,
		             t->wildcard ? "*" : object_ids[sid],
		             t->rel ? "#" : "", t->rel ? t->rel : "");
		if (t->caveat && (!t->also_plain || cav_chance(60))) {
			/* A partial context: some parameters set here, the
			 * rest left to the request. */
			const gen_caveat *cv = &gen_caveats[t->caveat - 1];
			strbuf ctx;
			strbuf_init(&ctx);
			caveat_context(&ctx, cv->params, cv->nparams, 40);
			if (strcmp(ctx.data, "{}") == 0)
				snprintf(text + n, sizeof(text) - (size_t)n,
				         "[cav%d]", t->caveat);
			else
				snprintf(text + n, sizeof(text) - (size_t)n,
				         "[cav%d:%s]", t->caveat, ctx.data);
			strbuf_free(&ctx);
		}
		case_add_rel(c, text);
	}
}

static bool run_seeds(uint64_t base, uint64_t count, int cyclic_percent)
{
	bool ok = true;
	for (uint64_t s = base; s < base + count; s++) {
		rng_state = s * 0x2545f4914f6cdd1dULL;
		cav_rng_state =
		    s * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
		diff_case c;
		memset(&c, 0, sizeof(c));
		/* Cycles in the data are off by default: SpiceDB's answer
		 * there is racy, and its time and memory can grow without
		 * bound (README.md). */
		bool cyclic = rng_chance(cyclic_percent);
		strbuf sb;
		strbuf_init(&sb);
		gen_schema(&sb);
		c.schema = strbuf_detach(&sb, NULL);
		gen_relationships(&c, cyclic);
		gen_request_contexts(&c);
		char name[64];
		snprintf(name, sizeof(name), "seed %llu%s",
		         (unsigned long long)s,
		         cyclic ? " (cycles allowed)" : "");
		c.name = xstrdup(name);
		ok = run_case(&c) && ok;
		case_free(&c);
	}
	return ok;
}

/* ---------------------------------------------------------------- main */

static uint64_t env_u64(const char *name, uint64_t fallback)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return fallback;
	return strtoull(v, NULL, 0);
}

static void print_rss(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "VmHWM:", 6) == 0)
			printf("peak memory: %s", line + 6);
	if (f)
		fclose(f);
}

int main(void)
{
	totals.verbose = env_u64("PEMBA_DIFF_VERBOSE", 0) != 0;
	totals.trace = env_u64("PEMBA_DIFF_TRACE", 0) != 0;
	bool allow_skip = env_u64("PEMBA_DIFF_ALLOW_SKIP", 0) != 0;
	lookups.percent = (unsigned)env_u64("PEMBA_DIFF_LOOKUPS", 100);
	gen_caveats_enabled = env_u64("PEMBA_DIFF_CAVEATS", 1) != 0;
	gen_contexts_per_seed = (int)env_u64("PEMBA_DIFF_CONTEXTS", 1);
	spicedb_lib = spicedb_ref_library_path();

	/* Can SpiceDB be loaded at all? */
	char eb[1024];
	if (spicedb_ref_open(spicedb_lib, &shared_ref, eb, sizeof(eb)) != 0) {
		printf("cannot load SpiceDB: %s\n", eb);
		if (allow_skip) {
			printf("skipped (PEMBA_DIFF_ALLOW_SKIP=1)\n");
			return 77; /* ctest's SKIP_RETURN_CODE */
		}
		printf("0 passed, 1 failed\n");
		return 1;
	}

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool ok = true;
	const char *testdata = getenv("PEMBA_TESTDATA");
#ifdef PEMBA_TESTDATA
	if (!testdata || !*testdata)
		testdata = PEMBA_TESTDATA;
#endif
	/* PEMBA_DIFF_FILES=0 leaves the files and the built-in cases out
	 * (to reproduce a seed). */
	bool files = env_u64("PEMBA_DIFF_FILES", 1) != 0;
	if (files && testdata && *testdata)
		ok = run_validation_files(testdata) && ok;
	if (files)
		ok = run_builtin_cases() && ok;
	uint64_t base = env_u64("PEMBA_DIFF_SEED", 1);
	uint64_t count = env_u64("PEMBA_DIFF_SEEDS", 200);
	int cyclic_percent = (int)env_u64("PEMBA_DIFF_CYCLES", 0);
	ok = run_seeds(base, count, cyclic_percent) && ok;
	clock_gettime(CLOCK_MONOTONIC, &t1);

	printf("\n%llu cases (%llu files skipped: no schema; %llu "
	       "schemas rejected by both; %llu with caveats, %llu request "
	       "contexts), seeds %llu..%llu, %llu checks, "
	       "%llu cycle differences tolerated, %.1f s\n",
	       (unsigned long long)totals.cases,
	       (unsigned long long)totals.cases_skipped,
	       (unsigned long long)totals.schema_both_rejected,
	       (unsigned long long)totals.caveat_cases,
	       (unsigned long long)totals.context_runs,
	       (unsigned long long)base, (unsigned long long)(base + count - 1),
	       (unsigned long long)totals.checks,
	       (unsigned long long)totals.cycle_tolerated,
	       (double)(t1.tv_sec - t0.tv_sec) +
	           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	if (!ok && totals.failed == 0)
		totals.failed = 1; /* a harness failure is a failure */
	printf("lookups: %llu LookupResources, %llu LookupSubjects (%llu "
	       "with results from SpiceDB), %llu failed, %llu cycle "
	       "differences tolerated, %llu sampled out (PEMBA_DIFF_LOOKUPS="
	       "%u), %llu duplicate results from SpiceDB merged, %llu "
	       "reloads, %llu differences where SpiceDB's lookup disagrees "
	       "with its own check\n",
	       (unsigned long long)lookups.resources,
	       (unsigned long long)lookups.subjects,
	       (unsigned long long)lookups.nonempty,
	       (unsigned long long)lookups.failed,
	       (unsigned long long)lookups.tolerated,
	       (unsigned long long)lookups.sampled_out, lookups.percent,
	       (unsigned long long)lookups.spicedb_duplicates,
	       (unsigned long long)lookups.reloaded,
	       (unsigned long long)lookups.spicedb_inconsistent);
	printf("SpiceDB asked again with a cold cache %llu times\n",
	       (unsigned long long)totals.cold_rechecks);
	printf("SpiceDB answered HAS %llu, NO %llu, CONDITIONAL %llu, error "
	       "%llu times\n",
	       (unsigned long long)totals.spicedb_has,
	       (unsigned long long)totals.spicedb_no,
	       (unsigned long long)totals.spicedb_conditional,
	       (unsigned long long)totals.spicedb_error);
	printf("%llu known differences (README.md) passed as known\n",
	       (unsigned long long)totals.known);
	report_unused_known();
	spicedb_ref_close(shared_ref);
	for (size_t i = 0; i < nwritten_types; i++)
		free(written_types[i]);
	free(written_types);
	print_rss();
	printf("%llu passed, %llu failed\n", (unsigned long long)totals.passed,
	       (unsigned long long)totals.failed);
	return totals.failed ? 1 : 0;
}
