/*
 * test_schemadiff.c -- differential test of the schema layer against the
 * real SpiceDB (tests/support/spicedb_ref.h, libspicedb.so in-process).
 *
 * For every schema text of the corpus both sides answer:
 *   - accepted or refused; a refusal's category must match:
 *       PEMBA_EINVAL        <-> InvalidArgument
 *       PEMBA_EPRECONDITION <-> FailedPrecondition
 *       PEMBA_EINVAL        <-> Unknown, only for the permission cycle
 *         error ("there exists a cycle in permissions"), which SpiceDB
 *         reports with code Unknown although it is an input error;
 *   - when both accept: pemba_check_schema's canonical text must equal
 *     SpiceDB's ReadSchema text byte for byte, except that the bodies of
 *     caveats are blanked on both sides first (SpiceDB re-prints CEL from
 *     its AST; pemba keeps it as written until CEL lands);
 *   - pemba's canonical text compiles again to an equal schema and prints
 *     identically.
 *
 * The corpus: the schema of every validation file in $PEMBA_TESTDATA, a
 * hand-written list of tricky cases, and mutations of the valid ones
 * (token deletions, duplications, swaps, insertions, replacements) drawn
 * from a seeded generator: $PEMBA_SCHEMADIFF_SEEDS mutants (default 1000)
 * from seed $PEMBA_SCHEMADIFF_SEED (default 1).
 *
 * Known, documented differences (src/schema/README.md) are whitelisted in
 * known_difference() with their reason.  The test fails if libspicedb.so
 * cannot be loaded, unless PEMBA_DIFF_ALLOW_SKIP=1 (then it exits 77,
 * which ctest reports as skipped).
 *
 * Plain C rather than cmocka: it reports one line per disagreement with
 * the schema text and both answers, and ends with "N passed, M failed".
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "pemba.h"
#include "schema/schema.h"
#include "spicedb_ref.h"
#include "util/strbuf.h"

#ifndef PEMBA_TESTDATA
#define PEMBA_TESTDATA "/work/shared/testdata/spicedb-testconfigs"
#endif

/* ------------------------------------------------------------ answers */

typedef enum category {
	CAT_OK,
	CAT_INVALID,      /* PEMBA_EINVAL / InvalidArgument */
	CAT_PRECONDITION, /* PEMBA_EPRECONDITION / FailedPrecondition */
	CAT_UNKNOWN,      /* SpiceDB code Unknown */
	CAT_OTHER,        /* anything else: always a failure */
} category;

static const char *category_name(category c)
{
	static const char *const names[] = {"accepted", "InvalidArgument",
	                                    "FailedPrecondition", "Unknown",
	                                    "other"};
	return names[c];
}

typedef struct answer {
	category cat;
	char message[2048];
	char *text; /* canonical text when accepted (malloc'd) */
} answer;

static spicedb_ref *ref;

static void ask_pemba(const char *schema_text, answer *a)
{
	pemba_error err;
	a->text = NULL;
	int rc = pemba_check_schema(schema_text, strlen(schema_text), &a->text,
	                            &err);
	a->cat = rc == PEMBA_OK              ? CAT_OK
	         : rc == PEMBA_EINVAL        ? CAT_INVALID
	         : rc == PEMBA_EPRECONDITION ? CAT_PRECONDITION
	                                     : CAT_OTHER;
	snprintf(a->message, sizeof(a->message), "%s",
	         rc == PEMBA_OK ? "" : err.message);
}

static void ask_spicedb(const char *schema_text, answer *a)
{
	a->text = NULL;
	a->message[0] = '\0';
	/* WriteSchema compares with the stored schema (a caveat's parameters
	 * may not change, for one), so each case starts from a schema that
	 * shares no name with any case. */
	if (spicedb_ref_write_schema(ref, "definition schemadiff_reset {}",
	                             a->message, sizeof(a->message)) != 0) {
		a->cat = CAT_OTHER;
		return;
	}
	if (spicedb_ref_write_schema(ref, schema_text, a->message,
	                             sizeof(a->message)) != 0) {
		const char *m = a->message;
		/* Text that is not UTF-8 cannot even be sent (protobuf
		 * strings must be UTF-8): the API refuses it as malformed,
		 * which is InvalidArgument to a client. */
		a->cat = strstr(m, "code = InvalidArgument") ||
		                 strstr(m, "contains invalid UTF-8")
		             ? CAT_INVALID
		         : strstr(m, "code = FailedPrecondition")
		             ? CAT_PRECONDITION
		         : strstr(m, "code = Unknown") ? CAT_UNKNOWN
		                                       : CAT_OTHER;
		return;
	}
	a->cat = CAT_OK;
	if (spicedb_ref_read_schema(ref, &a->text, a->message,
	                            sizeof(a->message)) != 0) {
		/* ReadSchema answers NotFound when the stored schema has no
		 * definition (caveats alone do not count): accepted, but
		 * there is no text to compare. */
		a->cat =
		    strstr(a->message, "code = NotFound") ? CAT_OK : CAT_OTHER;
		a->text = NULL;
	}
}

/* ------------------------------------------------ text normalization */

/* Replaces the body of every top-level caveat of canonical text with a
 * placeholder line, so that texts are compared outside CEL only. */
static char *blank_caveat_bodies(const char *text)
{
	strbuf out;
	strbuf_init(&out);
	const char *p = text;
	bool in_caveat = false;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
		if (in_caveat) {
			if (n >= 1 && p[0] == '}') {
				in_caveat = false;
				strbuf_puts(&out, "\t<cel>\n");
				strbuf_append(&out, p, n);
			}
		} else {
			strbuf_append(&out, p, n);
			if (strncmp(p, "caveat ", 7) == 0)
				in_caveat = true;
		}
		p += n;
	}
	char *s = strbuf_detach(&out, NULL);
	strbuf_free(&out);
	return s;
}

/* ------------------------------------------------------- known issues */

/* Rewrites a block comment of one line of text laid out on three lines
 * ("/ **", " * text", " * /") as one line, in place; returns text. */
static char *join_one_line_blocks(char *text)
{
	char *r = text, *w = text;
	while (*r) {
		size_t tabs = strspn(r, "\t");
		const char *q = r + tabs;
		size_t open = strncmp(q, "/**\n", 4) == 0  ? 3
		              : strncmp(q, "/*\n", 3) == 0 ? 2
		                                           : 0;
		const char *l2 = open ? q + open + 1 : NULL;
		const char *nl2 = l2 ? strchr(l2, '\n') : NULL;
		if (nl2 && strspn(l2, "\t") == tabs &&
		    strncmp(l2 + tabs, " * ", 3) == 0 &&
		    strspn(nl2 + 1, "\t") == tabs &&
		    strncmp(nl2 + 1 + tabs, " */", 3) == 0) {
			/* The joined form is shorter than the three lines it
			 * replaces, so writing in place is safe. */
			const char *body = l2 + tabs + 3;
			size_t n = (size_t)(nl2 - body);
			const char *after = nl2 + 1 + tabs + 3;
			memmove(w, r, tabs + open);
			w += tabs + open;
			*w++ = ' ';
			memmove(w, body, n);
			w += n;
			memcpy(w, " */", 3);
			w += 3;
			r = (char *)after;
			continue;
		}
		/* Copy the rest of the line. */
		while (*r && *r != '\n')
			*w++ = *r++;
		if (*r)
			*w++ = *r++;
	}
	*w = '\0';
	return text;
}

/* Canonical text with the stars that start a comment line's text removed
 * ("/ ** ** x" and " * * x" become "/ ** x" and " * x"). */
static char *strip_comment_stars(const char *text)
{
	strbuf out;
	strbuf_init(&out);
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		const char *end = nl ? nl : p + strlen(p);
		const char *q = p;
		while (q < end && *q == '\t')
			q++;
		size_t marker = strncmp(q, "/**", 3) == 0                 ? 3
		                : strncmp(q, "/*", 2) == 0                ? 2
		                : strncmp(q, " *", 2) == 0 && q[2] != '/' ? 2
		                                                          : 0;
		if (marker && q + marker < end && q[marker] == ' ') {
			const char *r = q + marker;
			while (r < end && (*r == ' ' || *r == '*') &&
			       !(r[0] == '*' && r[1] == '/'))
				r++;
			strbuf_append(&out, p, (size_t)(q + marker - p));
			strbuf_putc(&out, ' ');
			strbuf_append(&out, r, (size_t)(end - r));
		} else {
			strbuf_append(&out, p, (size_t)(end - p));
		}
		if (nl)
			strbuf_putc(&out, '\n');
		p = nl ? nl + 1 : end;
	}
	char *s = strbuf_detach(&out, NULL);
	strbuf_free(&out);
	return join_one_line_blocks(s);
}

/* Returns why a disagreement is expected, or NULL.  Every entry names a
 * behaviour documented in src/schema/README.md. */
static const char *known_difference(const char *schema_text,
                                    const answer *pemba, const answer *spice)
{
	(void)schema_text;
	/* SpiceDB strips one leading `*` from each comment line, so its
	 * ReadSchema text is not a fixed point ("/ ** ** x" reads back as
	 * "/ ** * x", then "/ ** x"); pemba strips them all, printing the
	 * final form at once (src/schema/README.md). */
	if (pemba->cat == CAT_OK && spice->cat == CAT_OK && spice->text) {
		char *a = strip_comment_stars(pemba->text);
		char *b = strip_comment_stars(spice->text);
		bool same = strcmp(a, b) == 0;
		free(a);
		free(b);
		if (same)
			return "SpiceDB strips only one leading `*` per "
			       "comment "
			       "line (not a fixed point)";
	}
	/* Composable-schema syntax (`use partial` definitions, `self` in
	 * permissions) is not implemented; pemba refuses it by name. */
	if (pemba->cat == CAT_INVALID && spice->cat == CAT_OK &&
	    strstr(pemba->message, "not supported"))
		return "partial definitions and `self` are not implemented";
	return NULL;
}

/* ------------------------------------------------------------ checking */

static int passed, failed, whitelisted;
static bool verbose;

static void report(const char *label, const char *schema_text, const char *what,
                   const answer *p, const answer *s)
{
	failed++;
	printf("FAIL %s: %s\n--- schema:\n%s\n--- pemba: %s %s\n", label, what,
	       schema_text, category_name(p->cat), p->message);
	if (p->cat == CAT_OK)
		printf("%s\n", p->text);
	printf("--- spicedb: %s %s\n", category_name(s->cat), s->message);
	if (s->cat == CAT_OK)
		printf("%s\n", s->text ? s->text : "(ReadSchema: NotFound)");
	printf("---\n");
}

/* pemba's canonical text compiles to an equal schema that prints the
 * same.  Returns a problem or NULL. */
static const char *check_round_trip(const char *schema_text,
                                    const char *canonical)
{
	schema *a = NULL, *b = NULL;
	pemba_error err;
	const char *problem = NULL;
	if (schema_compile(schema_text, strlen(schema_text), &a, &err) != 0)
		return "pemba_check_schema accepted what schema_compile "
		       "refuses";
	if (schema_compile(canonical, strlen(canonical), &b, &err) != 0) {
		problem = "canonical text does not compile";
	} else if (!schema_equal(a, b) || !schema_equal(b, a)) {
		problem = "canonical text compiles to a different schema";
	} else {
		strbuf again;
		strbuf_init(&again);
		schema_print(b, &again);
		if (strcmp(again.data ? again.data : "", canonical) != 0)
			problem = "printing is not a fixed point";
		strbuf_free(&again);
	}
	schema_free(a);
	schema_free(b);
	return problem;
}

/* Whether canonical text declares a definition (it starts a line). */
static bool has_definition(const char *text)
{
	for (const char *p = text; (p = strstr(p, "definition ")); p++)
		if (p == text || p[-1] == '\n')
			return true;
	return false;
}

static bool same_category(category p, category s, const char *smsg)
{
	if (p == s && p != CAT_OTHER)
		return true;
	/* SpiceDB reports permission cycles with code Unknown. */
	return p == CAT_INVALID && s == CAT_UNKNOWN &&
	       strstr(smsg, "there exists a cycle in permissions");
}

/* Compares both answers for one schema; returns whether both accepted. */
static bool check_case(const char *label, const char *schema_text)
{
	answer p, s;
	ask_pemba(schema_text, &p);
	ask_spicedb(schema_text, &s);
	bool ok = true;
	const char *what = NULL;

	if (!same_category(p.cat, s.cat, s.message)) {
		what = "acceptance or error category differs";
		ok = false;
	} else if (p.cat == CAT_OK) {
		char *pt = blank_caveat_bodies(p.text);
		char *st = s.text ? blank_caveat_bodies(s.text) : NULL;
		if (st ? strcmp(pt, st) != 0 : has_definition(p.text)) {
			what = "canonical text differs";
			ok = false;
		} else if ((what = check_round_trip(schema_text, p.text))) {
			ok = false;
		}
		free(pt);
		free(st);
	}
	if (!ok) {
		const char *why = known_difference(schema_text, &p, &s);
		if (why) {
			whitelisted++;
			if (verbose)
				printf("known %s: %s\n  spicedb: %s\n", label,
				       why, s.message);
			ok = true;
		} else {
			report(label, schema_text, what, &p, &s);
		}
	}
	if (ok) {
		passed++;
		if (verbose)
			printf("ok %s (%s)\n", label, category_name(p.cat));
	}
	bool both = p.cat == CAT_OK && s.cat == CAT_OK;
	free(p.text);
	free(s.text);
	return both;
}

/* ------------------------------------------------------------- corpus */

typedef struct corpus {
	char **texts; /* accepted texts, mutated later */
	size_t n, cap;
} corpus;

static void corpus_add(corpus *c, const char *text)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->texts = realloc(c->texts, c->cap * sizeof(*c->texts));
	}
	c->texts[c->n++] = strdup(text);
}

/* The value of the top-level `schema` key of a YAML file, or NULL. */
static char *yaml_schema(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	yaml_parser_t parser;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	char *found = NULL;
	int depth = 0;
	bool key_next = false, want_value = false;
	for (;;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&parser, &ev))
			break;
		yaml_event_type_t type = ev.type;
		if (type == YAML_SCALAR_EVENT && depth == 1) {
			if (want_value) {
				found =
				    strndup((const char *)ev.data.scalar.value,
				            ev.data.scalar.length);
				yaml_event_delete(&ev);
				break;
			}
			if (key_next)
				want_value =
				    strcmp((const char *)ev.data.scalar.value,
				           "schema") == 0;
			key_next = !key_next;
		} else if (type == YAML_MAPPING_START_EVENT ||
		           type == YAML_SEQUENCE_START_EVENT) {
			if (depth == 1)
				key_next = !key_next;
			depth++;
			if (depth == 1)
				key_next = true;
		} else if (type == YAML_MAPPING_END_EVENT ||
		           type == YAML_SEQUENCE_END_EVENT) {
			depth--;
		}
		yaml_event_delete(&ev);
		if (type == YAML_STREAM_END_EVENT)
			break;
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return found;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void run_testdata(corpus *valid)
{
	const char *dir = getenv("PEMBA_TESTDATA");
	if (!dir || !*dir)
		dir = PEMBA_TESTDATA;
	DIR *d = opendir(dir);
	if (!d) {
		printf("FAIL testdata: cannot open %s\n", dir);
		failed++;
		return;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len < 5 || strcmp(e->d_name + len - 5, ".yaml") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), compare_strings);
	size_t with_schema = 0;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		char *text = yaml_schema(path);
		if (text) {
			with_schema++;
			char label[512];
			snprintf(label, sizeof(label), "testdata/%s", names[i]);
			if (check_case(label, text))
				corpus_add(valid, text);
			free(text);
		}
		free(names[i]);
	}
	free(names);
	if (with_schema < 10) {
		printf("FAIL testdata: only %zu schemas found in %s\n",
		       with_schema, dir);
		failed++;
	}
}

#include "cases.h"

static void run_cases(corpus *valid)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char label[256];
		snprintf(label, sizeof(label), "case/%s", cases[i].name);
		if (check_case(label, cases[i].text))
			corpus_add(valid, cases[i].text);
	}
}

/* ----------------------------------------------------------- mutations */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* splitmix64: tiny, and every seed gives a good stream. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static size_t pick(size_t n)
{
	return (size_t)(rng() % n);
}

typedef struct span {
	const char *p;
	size_t n;
	bool blank; /* spaces and tabs only */
} span;

/* Splits schema text into tokens: identifiers, blanks, newlines,
 * comments, multi-character operators, single punctuation, and each
 * caveat body as one opaque token (mutating CEL would only exercise the
 * CEL compiler, which pemba does not have yet). */
static size_t tokenize(const char *t, span *out, size_t max)
{
	size_t n = 0;
	bool after_caveat = false;
	while (*t && n < max) {
		const char *s = t;
		bool blank = false;
		if (*t == ' ' || *t == '\t') {
			while (*t == ' ' || *t == '\t')
				t++;
			blank = true;
		} else if ((*t >= 'a' && *t <= 'z') ||
		           (*t >= 'A' && *t <= 'Z') ||
		           (*t >= '0' && *t <= '9') || *t == '_' ||
		           (unsigned char)*t >= 0x80) {
			while ((*t >= 'a' && *t <= 'z') ||
			       (*t >= 'A' && *t <= 'Z') ||
			       (*t >= '0' && *t <= '9') || *t == '_' ||
			       (unsigned char)*t >= 0x80)
				t++;
			if (t - s == 6 && memcmp(s, "caveat", 6) == 0)
				after_caveat = true;
		} else if (t[0] == '/' && t[1] == '/') {
			while (*t && *t != '\n')
				t++;
		} else if (t[0] == '/' && t[1] == '*') {
			const char *end = strstr(t + 2, "*/");
			t = end ? end + 2 : t + strlen(t);
		} else if (t[0] == '-' && t[1] == '>') {
			t += 2;
		} else if (t[0] == '.' && t[1] == '.' && t[2] == '.') {
			t += 3;
		} else if (*t == '{' && after_caveat) {
			int depth = 0;
			do {
				if (*t == '{')
					depth++;
				else if (*t == '}')
					depth--;
				t++;
			} while (*t && depth > 0);
			after_caveat = false;
		} else {
			t++;
		}
		out[n].p = s;
		out[n].n = (size_t)(t - s);
		out[n].blank = blank;
		n++;
	}
	return n;
}

static const char *const vocabulary[] = {
    "definition", "relation",  "permission",
    "caveat",     "nil",       "with",
    "expiration", "and",       "use expiration\n",
    "use",        "any",       "all",
    "+",          "-",         "&",
    "|",          "->",        ".",
    ".any(",      ".all(",     "(",
    ")",          "{",         "}",
    ":",          ";",         "\n",
    "#",          "...",       "*",
    "/",          "=",         ",",
    "user",       "viewer",    "owner",
    "document",   "x",         "ab",
    "abc",        "// c\n",    "/* c */",
    "/** d */\n", "<",         ">",
    "int",        "list<int>", "\xc3\xa9",
    "\"s\"",      "member",    "parent",
    "org/team",   "user:*",    "user#member",
    "a->b",       "view",      "definition z {}\n",
};

static char *mutate(const char *text)
{
	static span tokens[4096];
	size_t n = tokenize(text, tokens, sizeof(tokens) / sizeof(tokens[0]));
	size_t sig[4096], nsig = 0;
	for (size_t i = 0; i < n; i++)
		if (!tokens[i].blank)
			sig[nsig++] = i;
	strbuf out;
	strbuf_init(&out);
	if (nsig == 0) {
		strbuf_puts(&out, text);
		strbuf_puts(&out, vocabulary[pick(sizeof(vocabulary) /
		                                  sizeof(vocabulary[0]))]);
	} else {
		size_t which = sig[pick(nsig)];
		size_t other = sig[pick(nsig)];
		int op = (int)pick(5);
		const char *word = vocabulary[pick(sizeof(vocabulary) /
		                                   sizeof(vocabulary[0]))];
		for (size_t i = 0; i < n; i++) {
			const span *t = &tokens[i];
			if (i == which) {
				switch (op) {
				case 0: /* delete */
					continue;
				case 1: /* duplicate */
					strbuf_append(&out, t->p, t->n);
					strbuf_putc(&out, ' ');
					break;
				case 2: /* swap with another token */
					t = &tokens[other];
					break;
				case 3: /* insert before */
					strbuf_puts(&out, word);
					strbuf_putc(&out, ' ');
					break;
				default: /* replace */
					strbuf_puts(&out, word);
					continue;
				}
			} else if (op == 2 && i == other) {
				t = &tokens[which];
			}
			strbuf_append(&out, t->p, t->n);
		}
	}
	char *s = strbuf_detach(&out, NULL);
	strbuf_free(&out);
	return s;
}

static void run_mutations(const corpus *valid)
{
	const char *env = getenv("PEMBA_SCHEMADIFF_SEEDS");
	long count = env && *env ? strtol(env, NULL, 10) : 1000;
	env = getenv("PEMBA_SCHEMADIFF_SEED");
	uint64_t seed = env && *env ? strtoull(env, NULL, 10) : 1;
	if (valid->n == 0 || count <= 0)
		return;
	printf("mutations: %ld from seed %llu\n", count,
	       (unsigned long long)seed);
	for (long i = 0; i < count; i++) {
		/* Each mutant has its own seed so a failure reproduces alone
		 * with PEMBA_SCHEMADIFF_SEED=<that> PEMBA_SCHEMADIFF_SEEDS=1.
		 */
		rng_state = seed + (uint64_t)i;
		const char *base = valid->texts[pick(valid->n)];
		char *text = mutate(base);
		int rounds = (int)pick(3);
		for (int r = 0; r < rounds; r++) {
			char *again = mutate(text);
			free(text);
			text = again;
		}
		char label[64];
		snprintf(label, sizeof(label), "mutant/seed=%llu",
		         (unsigned long long)(seed + (uint64_t)i));
		check_case(label, text);
		free(text);
	}
}

/* ---------------------------------------------------------------- main */

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	verbose = getenv("PEMBA_SCHEMADIFF_VERBOSE") != NULL;
	char errbuf[2048];
	const char *lib = spicedb_ref_library_path();
	if (spicedb_ref_open(lib, &ref, errbuf, sizeof(errbuf)) != 0) {
		const char *skip = getenv("PEMBA_DIFF_ALLOW_SKIP");
		if (skip && strcmp(skip, "1") == 0) {
			printf("skipped: %s\n0 passed, 0 failed\n", errbuf);
			return 77;
		}
		printf("FAIL cannot load SpiceDB: %s\n(set PEMBA_SPICEDB_LIB "
		       "or run scripts/spicedb.sh; PEMBA_DIFF_ALLOW_SKIP=1 "
		       "skips)\n0 passed, 1 failed\n",
		       errbuf);
		return 1;
	}

	corpus valid = {0};
	run_testdata(&valid);
	run_cases(&valid);
	run_mutations(&valid);

	for (size_t i = 0; i < valid.n; i++)
		free(valid.texts[i]);
	free(valid.texts);
	spicedb_ref_close(ref);
	if (whitelisted)
		printf("%d known differences (see known_difference())\n",
		       whitelisted);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
