/*
 * validate.c -- runs a SpiceDB/zed validation file in-process.
 *
 * A validation file is YAML with up to four keys:
 *
 *     schema:         schema text (or schemaFile: a path to it)
 *     relationships:  a string, one relationship per line; blank lines and
 *                     lines starting with "//" are ignored
 *     assertions:     {assertTrue: [...], assertFalse: [...],
 *                      assertCaveated: [...]}, each item
 *                     "resource:id#permission@subject:id[#rel]" optionally
 *                     followed by " with {json context}"
 *     validation:     expected relations: {"resource:id#permission":
 *                     ["[subject] is <resource:id#relation>/<...>", ...]}
 *
 * The run is: load YAML (libyaml's document API) -> extract and parse every
 * relationship, assertion and expected relation, collecting all syntax
 * errors -> open a fresh "sqlite::memory:" database -> write the schema ->
 * TOUCH the relationships in batches -> check every assertion at the head
 * revision -> expand every expected-relations key (membership.c) and
 * compare the subjects found with those listed.
 *
 * Caveats are the library's business: where it answers PEMBA_EUNSUPPORTED
 * (caveats not implemented yet in that path) the file fails saying so.
 *
 * Everything is reported as data in a validate_result; nothing is printed.
 * Only pemba.h is used to talk to the database, like any embedder.
 */
#define _GNU_SOURCE /* memmem */
#include "tools/tools.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "pemba.h"
#include "tools/membership.h"
#include "util/strbuf.h"
#include "util/utf8.h"
#include "util/xalloc.h"

/* Largest validation or schema file read, to fail cleanly on a wrong path
 * (a disk image, /dev/zero) instead of exhausting memory. */
#define VALIDATE_MAX_FILE (256u << 20)

/* Bounds on what one file may ask for, so that a hostile or mistaken file
 * fails with a clear message instead of exhausting memory or time.  They
 * are far above what validation files hold in practice. */
#define VALIDATE_MAX_RELATIONSHIPS 1000000
#define VALIDATE_MAX_ASSERTIONS 100000
/* Failures (and notes) listed before the rest are summarized in one last
 * line. */
#define VALIDATE_MAX_FAILURES 1000

/* ============================================================ run state */

/* A relationship from the `relationships` block. */
typedef struct file_relationship {
	char *text; /* trimmed line as written */
	int line;   /* 1-based line in the YAML file, 0 if unknown */
	pemba_relationship rel;
	char *storage; /* owned by rel (pemba_free) */
} file_relationship;

/* One assertion item. */
typedef struct file_assertion {
	const char *kind; /* "assertTrue", "assertFalse", "assertCaveated" */
	char *text;       /* trimmed item as written */
	int line, column;
	pemba_relationship rel;
	char *storage;
	char *context; /* the JSON after " with ", NULL if none */
} file_assertion;

/* A parsed `type:id[#relation]`; relation "" for the object itself. */
typedef struct onr {
	char *type, *id, *relation;
} onr;

/* One item of an expected-relations list:
 * "[subject[...] - {excluded, ...}] is <resource:id#relation>/<...>". */
typedef struct expected_subject {
	char *text; /* as written */
	int line, column;
	bool has_subject; /* false: no [subject] in the item */
	onr subject;
	char *subject_text; /* subject as "type:id[#relation]" */
	bool caveated;      /* written with [...] */
	char **excluded;    /* "type:id[#rel][[...]]", sorted */
	size_t nexcluded;
	char **resources; /* "type:id#relation", sorted as SpiceDB compares */
	size_t nresources;
} expected_subject;

/* One key of the `validation` block and its list. */
typedef struct expected_relation {
	char *text; /* the key as written */
	int line, column;
	onr resource;
	expected_subject *subjects;
	size_t nsubjects;
} expected_relation;

typedef struct validate_run {
	validate_result *result;
	const char *yaml;
	size_t yaml_len;
	const char *base_dir;
	const char *datastore; /* URI; NULL: a private "sqlite::memory:" */

	char *schema; /* NUL-terminated copy */
	size_t schema_len;
	int schema_line; /* YAML line of the schema value */
	/* For a literal block scalar (`schema: |`), schema text line L column C
	 * is file line schema_line_base + L, column schema_column_base + C.
	 * schema_line_base 0: no such mapping (folded, quoted, schemaFile). */
	int schema_line_base, schema_column_base;

	file_relationship *rels;
	size_t nrels, rels_cap;
	file_assertion *assertions;
	size_t nassertions, assertions_cap;
	bool too_many_assertions; /* the cap was reported */
	expected_relation *expected;
	size_t nexpected, expected_cap;

	/* Where the search for the next relationship line's position in the
	 * raw YAML resumes, and the line number at that offset. */
	size_t locate_offset;
	int locate_line;
} validate_run;

/* ============================================================ issues */

static void add_issue(validate_issue **list, size_t *count, int line,
                      int column, const char *fmt, va_list ap)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_vprintf(&sb, fmt, ap);
	/* Capacity is the next power of two, so appending stays linear. */
	if (*count < 4 || (*count & (*count - 1)) == 0)
		*list = xrealloc(*list, (*count < 4 ? 4 : 2 * *count) *
		                            sizeof(**list));
	(*list)[*count].line = line;
	(*list)[*count].column = column;
	(*list)[*count].message = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	(*count)++;
}

__attribute__((format(printf, 5, 6))) static void
add_issue_text(validate_issue **list, size_t *count, int line, int column,
               const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	add_issue(list, count, line, column, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void
add_failure(validate_run *run, int line, int column, const char *fmt, ...)
{
	/* A file with a million bad lines should not produce a million
	 * messages: list the first ones and say that more were dropped. */
	if (run->result->nfailures > VALIDATE_MAX_FAILURES)
		return;
	if (run->result->nfailures == VALIDATE_MAX_FAILURES) {
		add_issue_text(&run->result->failures, &run->result->nfailures,
		               line, column,
		               "too many failures: only the first %d are "
		               "listed",
		               VALIDATE_MAX_FAILURES);
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	add_issue(&run->result->failures, &run->result->nfailures, line, column,
	          fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void
add_note(validate_run *run, int line, int column, const char *fmt, ...)
{
	if (run->result->nnotes > VALIDATE_MAX_FAILURES)
		return;
	if (run->result->nnotes == VALIDATE_MAX_FAILURES) {
		add_issue_text(&run->result->notes, &run->result->nnotes, line,
		               column,
		               "too many notes: only the first %d are "
		               "listed",
		               VALIDATE_MAX_FAILURES);
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	add_issue(&run->result->notes, &run->result->nnotes, line, column, fmt,
	          ap);
	va_end(ap);
}

void validate_result_free(validate_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nfailures; i++)
		free(r->failures[i].message);
	for (size_t i = 0; i < r->nnotes; i++)
		free(r->notes[i].message);
	free(r->failures);
	free(r->notes);
	memset(r, 0, sizeof(*r));
}

static void onr_free(onr *o)
{
	free(o->type);
	free(o->id);
	free(o->relation);
	memset(o, 0, sizeof(*o));
}

static void free_strings(char **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
}

static void expected_subject_free(expected_subject *es)
{
	free(es->text);
	free(es->subject_text);
	onr_free(&es->subject);
	free_strings(es->excluded, es->nexcluded);
	free_strings(es->resources, es->nresources);
}

static void run_free(validate_run *run)
{
	for (size_t i = 0; i < run->nrels; i++) {
		free(run->rels[i].text);
		pemba_free(run->rels[i].storage);
	}
	for (size_t i = 0; i < run->nassertions; i++) {
		free(run->assertions[i].text);
		free(run->assertions[i].context);
		pemba_free(run->assertions[i].storage);
	}
	for (size_t i = 0; i < run->nexpected; i++) {
		expected_relation *er = &run->expected[i];
		for (size_t k = 0; k < er->nsubjects; k++)
			expected_subject_free(&er->subjects[k]);
		free(er->subjects);
		free(er->text);
		onr_free(&er->resource);
	}
	free(run->expected);
	free(run->rels);
	free(run->assertions);
	free(run->schema);
}

/* ============================================================ helpers */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Copies s[0, n) without surrounding white space. */
static char *trimmed_copy(const char *s, size_t n)
{
	while (n > 0 && is_space(*s))
		s++, n--;
	while (n > 0 && is_space(s[n - 1]))
		n--;
	return xstrndup(s, n);
}

/* Reads a whole file (at most VALIDATE_MAX_FILE bytes) into a NUL-terminated
 * heap buffer.  Returns NULL with errno set on failure. */
static char *read_whole_file(const char *path, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	strbuf sb;
	strbuf_init(&sb);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (sb.len + n > VALIDATE_MAX_FILE) {
			fclose(f);
			strbuf_free(&sb);
			errno = EFBIG;
			return NULL;
		}
		strbuf_append(&sb, chunk, n);
	}
	int failed = ferror(f), saved_errno = errno;
	fclose(f);
	if (failed) {
		strbuf_free(&sb);
		errno = saved_errno ? saved_errno : EIO; /* EISDIR, ... */
		return NULL;
	}
	char *data = strbuf_detach(&sb, len_out);
	strbuf_free(&sb);
	return data;
}

/* 1-based line of byte `offset` of the raw YAML, counted incrementally from
 * the last position asked for (callers ask in increasing order). */
static int line_at(validate_run *run, size_t offset)
{
	if (offset < run->locate_offset) {
		run->locate_offset = 0;
		run->locate_line = 1;
	}
	for (size_t i = run->locate_offset; i < offset && i < run->yaml_len;
	     i++)
		if (run->yaml[i] == '\n')
			run->locate_line++;
	run->locate_offset = offset;
	return run->locate_line;
}

/* Where the search for relationship lines in the raw YAML stands: the
 * part of the file the `relationships` scalar spans, and how far into it
 * the previous line was found. */
typedef struct locator {
	size_t from, end;
	bool lost; /* a line was not found: stop looking */
} locator;

/* Finds where `text` occurs in the raw YAML between loc->from and
 * loc->end, so messages can point at the file line of a relationship
 * inside a block scalar (whose folding makes arithmetic on the scalar's
 * own lines unreliable).  Returns the 1-based line, or 0 if not found
 * (e.g. a quoted scalar with escapes).  After the first miss it stops
 * searching: the scalar's raw text no longer matches its value, and
 * searching the rest of it for every line would make a large quoted
 * block cost time quadratic in its size. */
static int locate_text(validate_run *run, locator *loc, const char *text)
{
	size_t n = strlen(text);
	if (n == 0 || loc->lost || loc->from >= loc->end)
		return 0;
	const char *hit =
	    memmem(run->yaml + loc->from, loc->end - loc->from, text, n);
	if (!hit) {
		loc->lost = true;
		return 0;
	}
	size_t offset = (size_t)(hit - run->yaml);
	loc->from = offset + n;
	return line_at(run, offset);
}

/* ============================================================ YAML access */

static bool scalar_is(const yaml_node_t *node, const char *s)
{
	return node && node->type == YAML_SCALAR_NODE &&
	       node->data.scalar.length == strlen(s) &&
	       memcmp(node->data.scalar.value, s, node->data.scalar.length) ==
	           0;
}

/* True for a missing value, an empty plain scalar and YAML's null
 * spellings: libyaml's document API leaves tag resolution to us. */
static bool node_is_null(const yaml_node_t *node)
{
	if (!node)
		return true;
	if (node->type != YAML_SCALAR_NODE ||
	    node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (scalar_is(node, nulls[i]))
			return true;
	return false;
}

static const char *node_kind(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "empty";
	}
}

/* A mapping key for messages. */
static const char *key_name(const yaml_node_t *key)
{
	return key && key->type == YAML_SCALAR_NODE
	           ? (const char *)key->data.scalar.value
	           : "(not a string)";
}

static int node_line(const yaml_node_t *node)
{
	return node ? (int)node->start_mark.line + 1 : 0;
}

static int node_column(const yaml_node_t *node)
{
	return node ? (int)node->start_mark.column + 1 : 0;
}

/* A string scalar's value as a C string, or NULL (with a failure recorded)
 * if the node is not a scalar or holds a NUL byte. */
static const char *scalar_string(validate_run *run, const yaml_node_t *node,
                                 const char *what)
{
	if (node->type != YAML_SCALAR_NODE) {
		add_failure(run, node_line(node), node_column(node),
		            "%s must be a string, found %s", what,
		            node_kind(node));
		return NULL;
	}
	/* libyaml refuses a raw NUL in the file, but the escapes of a
	 * double-quoted scalar ("\0", "\x00", "\u0000") put one in the
	 * value, which would end it early as a C string. */
	const char *value = (const char *)node->data.scalar.value;
	size_t len = node->data.scalar.length;
	const char *nul = memchr(value, '\0', len);
	if (nul) {
		int line, column;
		utf8_position(value, len, (size_t)(nul - value), &line,
		              &column);
		add_failure(run, node_line(node), node_column(node),
		            "%s contains a NUL byte (line %d, column %d of "
		            "its value)",
		            what, line, column);
		return NULL;
	}
	return value;
}

/* ============================================================ extraction */

/* Works out where a literal block scalar's text sits in the file: its
 * content starts on the line after the `|` header, indented by the header's
 * indentation indicator if it has one, else by the first non-blank line's
 * indentation (YAML's rule for top-level keys). */
static void map_literal_schema(validate_run *run, const yaml_node_t *node)
{
	size_t i = node->start_mark.index;
	int indicator = 0;
	for (; i < run->yaml_len && run->yaml[i] != '\n'; i++)
		if (run->yaml[i] >= '1' && run->yaml[i] <= '9' && !indicator)
			indicator = run->yaml[i] - '0';
	if (i >= run->yaml_len)
		return;
	int indent = indicator;
	if (!indicator) {
		/* Skip blank lines, then count the spaces. */
		size_t line_start = i + 1;
		for (size_t k = line_start; k < run->yaml_len; k++) {
			if (run->yaml[k] == '\n') {
				line_start = k + 1;
			} else if (run->yaml[k] != ' ') {
				indent = (int)(k - line_start);
				break;
			}
		}
	}
	run->schema_line_base = (int)node->start_mark.line + 1;
	run->schema_column_base = indent;
}

/* Reads the `schema` (or `schemaFile`) value. */
static void extract_schema(validate_run *run, yaml_document_t *doc,
                           yaml_node_t *schema_node,
                           yaml_node_t *schema_file_node)
{
	if (schema_node && !node_is_null(schema_node)) {
		const char *text = scalar_string(run, schema_node, "'schema'");
		if (!text)
			return;
		run->schema = xstrdup(text);
		run->schema_len = strlen(text);
		run->schema_line = node_line(schema_node);
		if (schema_node->data.scalar.style == YAML_LITERAL_SCALAR_STYLE)
			map_literal_schema(run, schema_node);
		return;
	}
	if (schema_file_node && !node_is_null(schema_file_node)) {
		const char *name =
		    scalar_string(run, schema_file_node, "'schemaFile'");
		if (!name)
			return;
		strbuf path;
		strbuf_init(&path);
		if (name[0] != '/' && run->base_dir)
			strbuf_printf(&path, "%s/", run->base_dir);
		strbuf_puts(&path, name);
		size_t len = 0;
		char *text = read_whole_file(path.data, &len);
		const char *nul = text ? memchr(text, '\0', len) : NULL;
		int line, column;
		if (!text) {
			add_failure(run, node_line(schema_file_node),
			            node_column(schema_file_node),
			            "cannot read schemaFile %s: %s", path.data,
			            strerror(errno));
		} else if (nul) {
			utf8_position(text, len, (size_t)(nul - text), &line,
			              &column);
			add_failure(run, node_line(schema_file_node),
			            node_column(schema_file_node),
			            "schemaFile %s contains a NUL byte at line "
			            "%d, column %d",
			            path.data, line, column);
		} else {
			run->schema = text;
			run->schema_len = len;
			run->schema_line = node_line(schema_file_node);
			text = NULL;
		}
		free(text);
		strbuf_free(&path);
		return;
	}
	add_failure(run, 1, 1, "the file has no 'schema'");
}

/* Splits the `relationships` string into lines and parses each. */
static void extract_relationships(validate_run *run, yaml_node_t *node)
{
	if (node_is_null(node))
		return;
	const char *text = scalar_string(run, node, "'relationships'");
	if (!text)
		return;
	locator loc = {.from = node->start_mark.index,
	               .end = node->end_mark.index < run->yaml_len
	                          ? node->end_mark.index
	                          : run->yaml_len};
	const char *line = text;
	while (*line) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);
		char *trimmed = trimmed_copy(line, n);
		line += n + (end ? 1 : 0);
		if (trimmed[0] == '\0' || strncmp(trimmed, "//", 2) == 0) {
			free(trimmed);
			continue;
		}
		file_relationship fr = {.text = trimmed};
		fr.line = locate_text(run, &loc, trimmed);
		pemba_error err = {0};
		if (pemba_parse_relationship(trimmed, &fr.rel, &fr.storage,
		                             &err) != 0) {
			add_failure(run, fr.line, 0,
			            "cannot parse relationship: %s",
			            err.message);
			free(trimmed);
			continue;
		}
		if (run->nrels == VALIDATE_MAX_RELATIONSHIPS) {
			add_failure(run, fr.line, 0,
			            "too many relationships: a validation file "
			            "may hold at most %d",
			            VALIDATE_MAX_RELATIONSHIPS);
			free(trimmed);
			pemba_free(fr.storage);
			return;
		}
		if (run->nrels == run->rels_cap) {
			run->rels_cap = run->rels_cap ? 2 * run->rels_cap : 64;
			run->rels = xrealloc(run->rels, run->rels_cap *
			                                    sizeof(*run->rels));
		}
		run->rels[run->nrels++] = fr;
	}
}

/* Orders relationships by their identity (everything but caveat and
 * expiration), as formatted text; ties by position in the file. */
typedef struct rel_key {
	char *key;
	size_t index;
} rel_key;

static int compare_rel_keys(const void *a, const void *b)
{
	const rel_key *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	if (c)
		return c;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* SpiceDB refuses a validation file that lists the same relationship twice
 * (ignoring caveat and expiration); so do we. */
static void find_repeated_relationships(validate_run *run)
{
	if (run->nrels < 2)
		return;
	rel_key *keys = xcalloc(run->nrels, sizeof(*keys));
	for (size_t i = 0; i < run->nrels; i++) {
		pemba_relationship identity = run->rels[i].rel;
		identity.caveat_name = NULL;
		identity.caveat_context = NULL;
		identity.expiration_ms = 0;
		keys[i].key = pemba_format_relationship(&identity);
		keys[i].index = i;
	}
	qsort(keys, run->nrels, sizeof(*keys), compare_rel_keys);
	for (size_t i = 1; i < run->nrels; i++) {
		if (strcmp(keys[i].key, keys[i - 1].key) == 0) {
			const file_relationship *fr = &run->rels[keys[i].index];
			add_failure(run, fr->line, 0,
			            "found repeated relationship `%s`",
			            fr->text);
		}
	}
	for (size_t i = 0; i < run->nrels; i++)
		pemba_free(keys[i].key);
	free(keys);
}

/* Parses one assertion item: "rel" or "rel with {json}". */
static void extract_assertion(validate_run *run, const char *kind,
                              yaml_node_t *item)
{
	char what[64];
	snprintf(what, sizeof(what), "%s item", kind);
	const char *value = scalar_string(run, item, what);
	if (!value)
		return;
	file_assertion fa = {
	    .kind = kind, .line = node_line(item), .column = node_column(item)};
	if (run->nassertions == VALIDATE_MAX_ASSERTIONS) {
		/* Reported once: later items land here again. */
		if (!run->too_many_assertions)
			add_failure(
			    run, fa.line, fa.column,
			    "too many assertions: a validation file may "
			    "hold at most %d",
			    VALIDATE_MAX_ASSERTIONS);
		run->too_many_assertions = true;
		return;
	}
	fa.text = trimmed_copy(value, strlen(value));
	const char *with = strstr(fa.text, " with ");
	char *rel_text;
	if (with) {
		rel_text = trimmed_copy(fa.text, (size_t)(with - fa.text));
		const char *json = with + strlen(" with ");
		fa.context = trimmed_copy(json, strlen(json));
	} else {
		rel_text = xstrdup(fa.text);
	}
	pemba_error err = {0};
	int rc = pemba_parse_relationship(rel_text, &fa.rel, &fa.storage, &err);
	free(rel_text);
	const char *problem = NULL;
	if (rc != 0) {
		add_failure(run, fa.line, fa.column, "cannot parse %s `%s`: %s",
		            kind, fa.text, err.message);
		problem = "";
	} else if (fa.rel.caveat_name || fa.rel.expiration_ms) {
		/* The condition of a check comes from the data and the
		 * context, never from the assertion (as in SpiceDB). */
		problem = "cannot specify a caveat or expiration on an "
		          "assertion";
	} else if (fa.context && (fa.context[0] != '{' ||
	                          fa.context[strlen(fa.context) - 1] != '}')) {
		/* The library parses the JSON itself; catch the obvious
		 * mistakes here, with the file position. */
		problem = "the caveat context after ' with ' must be a JSON "
		          "object";
	}
	if (problem) {
		if (problem[0])
			add_failure(run, fa.line, fa.column, "%s `%s`: %s",
			            kind, fa.text, problem);
		free(fa.text);
		free(fa.context);
		pemba_free(fa.storage);
		return;
	}
	if (run->nassertions == run->assertions_cap) {
		run->assertions_cap =
		    run->assertions_cap ? 2 * run->assertions_cap : 32;
		run->assertions =
		    xrealloc(run->assertions,
		             run->assertions_cap * sizeof(*run->assertions));
	}
	run->assertions[run->nassertions++] = fa;
}

static void extract_assertions(validate_run *run, yaml_document_t *doc,
                               yaml_node_t *node)
{
	if (node_is_null(node))
		return;
	if (node->type != YAML_MAPPING_NODE) {
		add_failure(run, node_line(node), node_column(node),
		            "'assertions' must be a mapping of assertTrue/"
		            "assertFalse/assertCaveated lists, found %s",
		            node_kind(node));
		return;
	}
	static const char *const kinds[] = {"assertTrue", "assertFalse",
	                                    "assertCaveated"};
	for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
	     pair < node->data.mapping.pairs.top; pair++) {
		yaml_node_t *key = yaml_document_get_node(doc, pair->key);
		yaml_node_t *value = yaml_document_get_node(doc, pair->value);
		const char *kind = NULL;
		for (size_t k = 0; k < 3; k++)
			if (scalar_is(key, kinds[k]))
				kind = kinds[k];
		if (!kind) {
			add_note(run, node_line(key), node_column(key),
			         "unknown key '%s' in 'assertions' ignored",
			         key_name(key));
			continue;
		}
		if (node_is_null(value))
			continue;
		if (value->type != YAML_SEQUENCE_NODE) {
			add_failure(run, node_line(value), node_column(value),
			            "'%s' must be a list, found %s", kind,
			            node_kind(value));
			continue;
		}
		for (yaml_node_item_t *it = value->data.sequence.items.start;
		     it < value->data.sequence.items.top; it++)
			extract_assertion(run, kind,
			                  yaml_document_get_node(doc, *it));
	}
}

/* ---------------------------------------------------- expected relations */

/* Characters that end an object id in the expected-relations syntax: ids
 * themselves are checked by the library when the key is expanded, and a
 * subject that does not exist simply is not found. */
static bool ends_id(char c)
{
	return c == '\0' || c == ':' || c == '#' || c == '@' || c == '[' ||
	       c == ']' || c == '<' || c == '>' || c == '{' || c == '}' ||
	       c == ',' || is_space(c);
}

static bool is_name_char(char c, bool allow_slash)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
	       (allow_slash && c == '/');
}

/* Parses text[0, n) as `type:id[#relation]` into *out.  With
 * relation_required (a resource), the relation must be present and not
 * "..."; otherwise (a subject) a missing relation or "..." means the
 * object itself (relation "").  Returns false, leaving *out empty, if the
 * text does not have that shape. */
static bool parse_onr(const char *text, size_t n, bool relation_required,
                      onr *out)
{
	memset(out, 0, sizeof(*out));
	size_t i = 0;
	while (i < n && is_name_char(text[i], true))
		i++;
	if (i == 0 || i >= n || text[i] != ':')
		return false;
	size_t type_end = i++, id_start = i;
	while (i < n && !ends_id(text[i]))
		i++;
	if (i == id_start)
		return false;
	size_t id_end = i, rel_start = i, rel_end = i;
	if (i < n && text[i] == '#') {
		rel_start = ++i;
		if (n - i == 3 && memcmp(text + i, "...", 3) == 0) {
			if (relation_required)
				return false;
			i = n;
			rel_end = rel_start; /* the object itself */
		} else {
			if (i >= n || !(text[i] >= 'a' && text[i] <= 'z'))
				return false;
			while (i < n && is_name_char(text[i], false))
				i++;
			rel_end = i;
		}
	} else if (relation_required) {
		return false;
	}
	if (i != n)
		return false;
	out->type = xstrndup(text, type_end);
	out->id = xstrndup(text + id_start, id_end - id_start);
	out->relation = xstrndup(text + rel_start, rel_end - rel_start);
	return true;
}

/* "type:id" or "type:id#relation". */
static char *onr_text(const onr *o)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb, "%s:%s%s%s", o->type, o->id,
	              o->relation[0] ? "#" : "", o->relation);
	char *text = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return text;
}

static int compare_cstrings(const void *p, const void *q)
{
	return strcmp(*(char *const *)p, *(char *const *)q);
}

/* Sorts list[0, n); list may be NULL when n is 0. */
static void sort_strings(char **list, size_t n)
{
	if (n > 1)
		qsort(list, n, sizeof(*list), compare_cstrings);
}

static void append_string(char ***list, size_t *n, char *s)
{
	*list = xrealloc(*list, (*n + 1) * sizeof(**list));
	(*list)[(*n)++] = s;
}

/* Parses the bracketed subject of an expected-relations item, trimmed:
 * `type:id[#rel]`, optionally `[...]` (caveated), optionally followed by
 * ` - {excluded, ...}` (each excluded subject optionally `[...]`).
 * Returns NULL on success or a static description of the problem. */
static const char *parse_expected_subject(const char *s, expected_subject *es)
{
	size_t n = strlen(s), run = 0;
	while (run < n && s[run] != ']' && !is_space(s[run]))
		run++;
	size_t onr_len = run, i = run;
	/* "user:1[...]": the run stops at the `]` of the caveat marker. */
	if (run >= 4 && memcmp(s + run - 4, "[...", 4) == 0 && run < n &&
	    s[run] == ']') {
		onr_len = run - 4;
		es->caveated = true;
		i = run + 1;
	}
	if (!parse_onr(s, onr_len, false, &es->subject))
		return "expected `type:id`, `type:id#relation` or `type:*`";
	es->subject_text = onr_text(&es->subject);
	if (i == n)
		return NULL;
	/* ` - {a, b}`: white space, '-', white space, braces. */
	size_t k = i;
	while (k < n && is_space(s[k]))
		k++;
	if (k == i || k >= n || s[k] != '-')
		return "expected ` - {excluded subjects}` after the subject";
	size_t dash = ++k;
	while (k < n && is_space(s[k]))
		k++;
	if (k == dash || k >= n || s[k] != '{' || s[n - 1] != '}' || k + 2 >= n)
		return "expected ` - {excluded subjects}` after the subject";
	const char *list = s + k + 1, *end = s + n - 1;
	if (memchr(list, '}', (size_t)(end - list)))
		return "expected ` - {excluded subjects}` after the subject";
	while (list <= end) {
		const char *comma = memchr(list, ',', (size_t)(end - list));
		const char *item_end = comma ? comma : end;
		char *item = trimmed_copy(list, (size_t)(item_end - list));
		size_t len = strlen(item);
		bool caveated = len > 5 && strcmp(item + len - 5, "[...]") == 0;
		onr excluded;
		bool ok =
		    parse_onr(item, caveated ? len - 5 : len, false, &excluded);
		free(item);
		if (!ok)
			return "an excluded subject is not `type:id`";
		char *text = onr_text(&excluded);
		onr_free(&excluded);
		if (caveated) {
			char *marked = xrealloc(text, strlen(text) + 6);
			strcat(marked, "[...]");
			text = marked;
		}
		append_string(&es->excluded, &es->nexcluded, text);
		list = item_end + 1;
	}
	sort_strings(es->excluded, es->nexcluded);
	return NULL;
}

/* Parses one expected-relations item, "[subject] is <r1>/<r2>": the
 * subject is what lies between the first '[' and the last ']'; every
 * `<...>` anywhere is a relationship (resource:id#relation) through which
 * the subject is expected to be found.  "is" and "/" are decoration.  An
 * item without a subject parses (it fails when compared, as in SpiceDB).
 * Returns false with a failure recorded on a syntax error. */
static bool parse_expected_item(validate_run *run, const char *key,
                                const char *value, expected_subject *es)
{
	const char *open = strchr(value, '[');
	const char *close = strrchr(value, ']');
	if (open && close && close > open) {
		es->has_subject = true;
		char *subject =
		    trimmed_copy(open + 1, (size_t)(close - open - 1));
		const char *why = parse_expected_subject(subject, es);
		if (why) {
			add_failure(run, es->line, es->column,
			            "validation `%s`: invalid subject `%s` in "
			            "`%s`: %s",
			            key, subject, value, why);
			free(subject);
			return false;
		}
		free(subject);
	}
	for (const char *p = strchr(value, '<'); p; p = strchr(p, '<')) {
		const char *gt = strchr(p + 1, '>');
		if (!gt || gt == p + 1)
			break;
		onr resource;
		if (!parse_onr(p + 1, (size_t)(gt - p - 1), true, &resource)) {
			add_failure(run, es->line, es->column,
			            "validation `%s`: invalid resource and "
			            "relation `%.*s` in `%s`: expected "
			            "`type:id#relation`",
			            key, (int)(gt - p - 1), p + 1, value);
			return false;
		}
		append_string(&es->resources, &es->nresources,
		              onr_text(&resource));
		onr_free(&resource);
		p = gt + 1;
	}
	sort_strings(es->resources, es->nresources);
	return true;
}

/* The `validation` block: a mapping from `resource:id#permission` to a
 * list of expected subjects (null or empty: none). */
static void extract_expected_relations(validate_run *run, yaml_document_t *doc,
                                       yaml_node_t *node)
{
	if (node_is_null(node))
		return;
	if (node->type != YAML_MAPPING_NODE) {
		add_failure(run, node_line(node), node_column(node),
		            "'validation' must be a mapping from "
		            "resource:id#permission to lists of expected "
		            "subjects, found %s",
		            node_kind(node));
		return;
	}
	size_t items = 0;
	for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
	     pair < node->data.mapping.pairs.top; pair++) {
		yaml_node_t *key = yaml_document_get_node(doc, pair->key);
		yaml_node_t *value = yaml_document_get_node(doc, pair->value);
		items += 1 + (value && value->type == YAML_SEQUENCE_NODE
		                  ? (size_t)(value->data.sequence.items.top -
		                             value->data.sequence.items.start)
		                  : 0);
		if (items > VALIDATE_MAX_ASSERTIONS) {
			add_failure(run, node_line(key), node_column(key),
			            "too many expected relations: a validation "
			            "file may hold at most %d keys and items",
			            VALIDATE_MAX_ASSERTIONS);
			return;
		}
		const char *key_text =
		    scalar_string(run, key, "a 'validation' key");
		if (!key_text)
			continue;
		expected_relation er = {.line = node_line(key),
		                        .column = node_column(key)};
		er.text = trimmed_copy(key_text, strlen(key_text));
		if (!parse_onr(er.text, strlen(er.text), true, &er.resource)) {
			add_failure(run, er.line, er.column,
			            "cannot parse 'validation' key `%s`: "
			            "expected resource:id#permission",
			            er.text);
			free(er.text);
			continue;
		}
		bool ok = true;
		if (!node_is_null(value) && value->type != YAML_SEQUENCE_NODE) {
			add_failure(run, node_line(value), node_column(value),
			            "validation `%s`: expected a list of "
			            "\"[subject] is <resource:id#relation>\" "
			            "strings, found %s",
			            er.text, node_kind(value));
			ok = false;
		}
		for (yaml_node_item_t *it =
		         ok && !node_is_null(value)
		             ? value->data.sequence.items.start
		             : NULL;
		     it && it < value->data.sequence.items.top; it++) {
			yaml_node_t *item = yaml_document_get_node(doc, *it);
			const char *text = scalar_string(
			    run, item, "an expected-relations item");
			if (!text) {
				ok = false;
				continue;
			}
			expected_subject es = {.line = node_line(item),
			                       .column = node_column(item)};
			es.text = trimmed_copy(text, strlen(text));
			if (!parse_expected_item(run, er.text, es.text, &es)) {
				expected_subject_free(&es);
				ok = false;
				continue;
			}
			er.subjects =
			    xrealloc(er.subjects,
			             (er.nsubjects + 1) * sizeof(*er.subjects));
			er.subjects[er.nsubjects++] = es;
		}
		if (run->nexpected == run->expected_cap) {
			run->expected_cap =
			    run->expected_cap ? 2 * run->expected_cap : 16;
			run->expected =
			    xrealloc(run->expected, run->expected_cap *
			                                sizeof(*run->expected));
		}
		/* Kept even when an item failed: the file fails anyway, and
		 * freeing stays in one place. */
		run->expected[run->nexpected++] = er;
	}
}

/* Loads the YAML and fills run's schema, relationships and assertions.
 * Returns false if the file is unusable (failures recorded). */
static bool load_yaml(validate_run *run)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser)) {
		add_failure(run, 0, 0, "cannot initialize the YAML parser");
		return false;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)run->yaml,
	                             run->yaml_len);
	if (!yaml_parser_load(&parser, &doc)) {
		int line = (int)parser.problem_mark.line + 1;
		int column = (int)parser.problem_mark.column + 1;
		/* The reader's errors (a control character such as NUL,
		 * invalid UTF-8) leave the mark at the start and give the
		 * byte offset instead. */
		if (parser.error == YAML_READER_ERROR)
			utf8_position(run->yaml, run->yaml_len,
			              parser.problem_offset, &line, &column);
		add_failure(run, line, column,
		            "YAML error at line %d, column %d: %s%s%s", line,
		            column,
		            parser.problem ? parser.problem : "malformed YAML",
		            parser.context ? " " : "",
		            parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return false;
	}
	yaml_parser_delete(&parser);

	bool ok = false;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root) {
		add_failure(run, 1, 1, "the file is empty");
		goto done;
	}
	if (root->type != YAML_MAPPING_NODE) {
		add_failure(run, node_line(root), node_column(root),
		            "the file must be a YAML mapping with 'schema', "
		            "'relationships' and 'assertions', found %s",
		            node_kind(root));
		goto done;
	}

	yaml_node_t *schema = NULL, *schema_file = NULL, *relationships = NULL,
	            *assertions = NULL, *validation = NULL;
	for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
	     pair < root->data.mapping.pairs.top; pair++) {
		yaml_node_t *key = yaml_document_get_node(&doc, pair->key);
		yaml_node_t *value = yaml_document_get_node(&doc, pair->value);
		if (scalar_is(key, "schema"))
			schema = value;
		else if (scalar_is(key, "schemaFile"))
			schema_file = value;
		else if (scalar_is(key, "relationships"))
			relationships = value;
		else if (scalar_is(key, "assertions"))
			assertions = value;
		else if (scalar_is(key, "validation"))
			validation = value;
		else
			add_note(run, node_line(key), node_column(key),
			         "unknown top-level key '%s' ignored",
			         key_name(key));
	}

	size_t failures_before = run->result->nfailures;
	extract_schema(run, &doc, schema, schema_file);
	extract_relationships(run, relationships);
	find_repeated_relationships(run);
	extract_assertions(run, &doc, assertions);
	extract_expected_relations(run, &doc, validation);
	ok = run->result->nfailures == failures_before;
done:
	yaml_document_delete(&doc);
	return ok;
}

/* ============================================================ evaluation */

/* TOUCHes run->rels[first, first+count) in one write.  If the write fails,
 * nothing was applied; retries each relationship alone so that every bad
 * one is reported with its own line and message.  Returns the number of
 * relationships that failed. */
static size_t load_batch(validate_run *run, pemba_db *db, pemba_update *updates,
                         size_t first, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		updates[i].op = PEMBA_OP_TOUCH;
		updates[i].rel = run->rels[first + i].rel;
	}
	pemba_error err = {0};
	if (pemba_write_relationships(db, updates, count, NULL, 0, NULL,
	                              &err) == 0)
		return 0;
	if (count == 1) {
		const file_relationship *fr = &run->rels[first];
		if (err.code == PEMBA_EUNSUPPORTED) {
			run->result->unsupported = true;
			add_failure(run, fr->line, 0,
			            "relationship `%s` uses caveats, "
			            "which are not supported yet: %s",
			            fr->text, err.message);
		} else {
			add_failure(run, fr->line, 0,
			            "cannot load relationship `%s`: %s",
			            fr->text, err.message);
		}
		return 1;
	}
	size_t failed = 0;
	for (size_t i = 0; i < count; i++)
		failed += load_batch(run, db, updates, first + i, 1);
	/* Each alone loaded: the batch failed as a whole only.  The data is
	 * in, but the refusal is still a failure worth seeing. */
	if (failed == 0)
		add_failure(
		    run, run->rels[first].line, 0,
		    "cannot load relationships %zu-%zu in one write: %s",
		    first + 1, first + count, err.message);
	return failed;
}

/* How an answer reads in a failure message. */
static const char *permissionship_text(pemba_permissionship p)
{
	switch (p) {
	case PEMBA_HAS_PERMISSION:
		return "permission";
	case PEMBA_NO_PERMISSION:
		return "no permission";
	case PEMBA_CONDITIONAL_PERMISSION:
		return "caveated (conditional permission)";
	default:
		return "an unknown answer";
	}
}

/* Checks one assertion: assertTrue passes only on HAS_PERMISSION,
 * assertFalse only on NO_PERMISSION, assertCaveated only on
 * CONDITIONAL_PERMISSION (a caveat lacks context to decide). */
static void check_assertion(validate_run *run, pemba_db *db,
                            const file_assertion *fa)
{
	pemba_check_request req = {
	    .resource_type = fa->rel.resource_type,
	    .resource_id = fa->rel.resource_id,
	    .permission = fa->rel.relation,
	    .subject_type = fa->rel.subject_type,
	    .subject_id = fa->rel.subject_id,
	    .subject_relation = fa->rel.subject_relation,
	    .context = fa->context,
	};
	pemba_permissionship got = 0;
	pemba_error err = {0};
	run->result->assertions++;
	if (pemba_check_permission(db, PEMBA_REVISION_HEAD, &req, &got, &err) !=
	    0) {
		run->result->assertions_failed++;
		if (err.code == PEMBA_EUNSUPPORTED) {
			run->result->unsupported = true;
			add_failure(run, fa->line, fa->column,
			            "%s `%s` uses caveats, which are not "
			            "supported yet: %s",
			            fa->kind, fa->text, err.message);
			return;
		}
		add_failure(run, fa->line, fa->column,
		            "%s failed: %s: check error: %s", fa->kind,
		            fa->text, err.message);
		return;
	}
	pemba_permissionship want = strcmp(fa->kind, "assertTrue") == 0
	                                ? PEMBA_HAS_PERMISSION
	                            : strcmp(fa->kind, "assertFalse") == 0
	                                ? PEMBA_NO_PERMISSION
	                                : PEMBA_CONDITIONAL_PERMISSION;
	if (got == want)
		return;
	run->result->assertions_failed++;
	add_failure(run, fa->line, fa->column,
	            "%s failed: %s: expected %s, got %s", fa->kind, fa->text,
	            want == PEMBA_CONDITIONAL_PERMISSION
	                ? "caveated"
	                : permissionship_text(want),
	            permissionship_text(got));
}

/* ---------------------------------------------------- expected relations */

/* "<a>/<b>" (or "nothing") for messages. */
static char *join_relationships(const char *const *list, size_t n)
{
	strbuf sb;
	strbuf_init(&sb);
	for (size_t i = 0; i < n; i++)
		strbuf_printf(&sb, "%s<%s>", i ? "/" : "", list[i]);
	if (n == 0)
		strbuf_puts(&sb, "nothing");
	char *text = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return text;
}

/* "{a, b}" for messages. */
static char *join_set(char *const *list, size_t n)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_putc(&sb, '{');
	for (size_t i = 0; i < n; i++)
		strbuf_printf(&sb, "%s%s", i ? ", " : "", list[i]);
	strbuf_putc(&sb, '}');
	char *text = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return text;
}

static char *member_text(const member *x)
{
	strbuf sb;
	strbuf_init(&sb);
	strbuf_printf(&sb, "%s:%s%s%s%s", x->type, x->id,
	              x->relation[0] ? "#" : "", x->relation,
	              x->caveated ? "[...]" : "");
	char *text = strbuf_detach(&sb, NULL);
	strbuf_free(&sb);
	return text;
}

/* The subjects a found wildcard excludes, in the written form, sorted. */
static char **found_exclusions(const member *w)
{
	char **list = xcalloc(w->nexcluded + 1, sizeof(*list));
	for (size_t i = 0; i < w->nexcluded; i++)
		list[i] = member_text(&w->excluded[i]);
	sort_strings(list, w->nexcluded);
	return list;
}

/* Compares one listed subject with what was found, as SpiceDB's
 * validation does: it must be found, through exactly the listed
 * relationships, with the listed exclusions (wildcards) and the listed
 * caveat marker. */
static void check_expected_subject(validate_run *run,
                                   const expected_relation *er,
                                   const expected_subject *es,
                                   const member_set *found)
{
	if (!es->has_subject) {
		add_failure(run, es->line, es->column,
		            "validation `%s`: `%s` names no subject (expected "
		            "\"[subject] is <resource:id#relation>\")",
		            er->text, es->text);
		return;
	}
	const member *m = member_set_find(found, es->subject.type,
	                                  es->subject.id, es->subject.relation);
	if (!m) {
		add_failure(run, es->line, es->column,
		            "validation `%s`: missing expected subject `%s`: "
		            "it does not have the permission",
		            er->text, es->subject_text);
		return;
	}
	bool same = m->nsources == es->nresources;
	for (size_t i = 0; same && i < es->nresources; i++)
		same = strcmp(m->sources[i], es->resources[i]) == 0;
	if (!same) {
		char *specified = join_relationships(
		    (const char *const *)es->resources, es->nresources);
		char *computed = join_relationships(m->sources, m->nsources);
		add_failure(run, es->line, es->column,
		            "validation `%s`: subject `%s` is found through "
		            "different relationships: specified %s, computed "
		            "%s",
		            er->text, es->subject_text, specified, computed);
		free(specified);
		free(computed);
	}
	if (strcmp(m->id, "*") == 0) {
		char **computed = found_exclusions(m);
		same = m->nexcluded == es->nexcluded;
		for (size_t i = 0; same && i < es->nexcluded; i++)
			same = strcmp(computed[i], es->excluded[i]) == 0;
		if (!same) {
			char *want = join_set(es->excluded, es->nexcluded);
			char *got = join_set(computed, m->nexcluded);
			add_failure(run, es->line, es->column,
			            "validation `%s`: wildcard `%s` has "
			            "different excluded subjects: specified "
			            "%s, computed %s",
			            er->text, es->subject_text, want, got);
			free(want);
			free(got);
		}
		free_strings(computed, m->nexcluded);
	} else if (es->nexcluded > 0) {
		add_failure(run, es->line, es->column,
		            "validation `%s`: subject `%s` is not a wildcard, "
		            "so it cannot have excluded subjects",
		            er->text, es->subject_text);
	}
	if (m->caveated != es->caveated)
		add_failure(run, es->line, es->column,
		            "validation `%s`: subject `%s` is %s, but is "
		            "listed %s",
		            er->text, es->subject_text,
		            m->caveated ? "caveated (conditional)"
		                        : "not caveated",
		            m->caveated ? "without the [...] caveat marker"
		                        : "with the [...] caveat marker");
}

/* Expands one key and compares: every listed subject must match what was
 * found, and every subject found must be listed. */
static void check_expected_relation(validate_run *run, membership *ms,
                                    const expected_relation *er)
{
	member_set found;
	pemba_error err = {0};
	run->result->expected_relations++;
	if (membership_expand(ms, er->resource.type, er->resource.id,
	                      er->resource.relation, &found, &err) != 0) {
		run->result->expected_relations_failed++;
		if (err.code == PEMBA_EUNSUPPORTED) {
			run->result->unsupported = true;
			add_failure(run, er->line, er->column,
			            "validation `%s` reaches relationships "
			            "that use caveats, which are not supported "
			            "yet: %s",
			            er->text, err.message);
		} else {
			add_failure(run, er->line, er->column,
			            "validation `%s`: cannot expand: %s",
			            er->text, err.message);
		}
		return;
	}
	size_t failures_before = run->result->nfailures;
	char **listed = xcalloc(er->nsubjects + 1, sizeof(*listed));
	size_t nlisted = 0;
	for (size_t i = 0; i < er->nsubjects; i++) {
		const expected_subject *es = &er->subjects[i];
		check_expected_subject(run, er, es, &found);
		if (es->has_subject)
			listed[nlisted++] = es->subject_text;
	}
	sort_strings(listed, nlisted);
	for (size_t i = 0; i < found.n; i++) {
		const member *m = &found.items[i];
		member plain = *m;
		plain.caveated = false;
		char *text = member_text(&plain);
		if (!bsearch(&text, listed, nlisted, sizeof(*listed),
		             compare_cstrings)) {
			char *through =
			    join_relationships(m->sources, m->nsources);
			add_failure(run, er->line, er->column,
			            "validation `%s`: subject `%s` is found "
			            "(through %s) but is not listed",
			            er->text, text, through);
			free(through);
		}
		free(text);
	}
	free(listed);
	if (run->result->nfailures != failures_before)
		run->result->expected_relations_failed++;
}

/* Opens the datastore at uri and makes sure it is empty (head revision 0:
 * nothing was ever written into it).  0 and *out on success; else 1 and
 * *why (malloc'd; it does not repeat the URI, which may hold a password). */
static int open_empty_datastore(const char *uri, pemba_db **out, char **why)
{
	pemba_db *db = NULL;
	pemba_error err = {0};
	strbuf msg;
	strbuf_init(&msg);
	*out = NULL;
	*why = NULL;
	pemba_revision head = 0;
	if (pemba_open(uri, NULL, &db, &err) != 0) {
		strbuf_printf(&msg, "cannot open the datastore: %s",
		              err.message);
	} else if (pemba_head_revision(db, &head, &err) != 0) {
		strbuf_printf(&msg,
		              "cannot read the datastore's head revision: %s",
		              err.message);
	} else if (head != 0) {
		strbuf_printf(
		    &msg,
		    "the datastore is not empty (head revision %llu): "
		    "validate writes the file's schema and "
		    "relationships into it, so it needs a fresh one",
		    (unsigned long long)head);
	}
	if (msg.len) {
		pemba_close(db);
		*why = strbuf_detach(&msg, NULL);
		return 1;
	}
	strbuf_free(&msg);
	*out = db;
	return 0;
}

int validate_datastore_check(const char *uri, char **why)
{
	pemba_db *db = NULL;
	if (why == NULL)
		return 1;
	if (uri == NULL) {
		*why = xstrdup("no datastore URI given");
		return 1;
	}
	if (open_empty_datastore(uri, &db, why) != 0)
		return 1;
	pemba_close(db);
	return 0;
}

/* Writes schema and relationships into a fresh datastore (run->datastore,
 * which must be empty, or a private in-memory one) and checks the
 * assertions. */
static void evaluate(validate_run *run)
{
	pemba_db *db = NULL;
	pemba_error err = {0};
	char *why = NULL;
	if (open_empty_datastore(
	        run->datastore ? run->datastore : "sqlite::memory:", &db,
	        &why) != 0) {
		add_failure(run, 0, 0, "%s", why);
		free(why);
		return;
	}
	if (pemba_write_schema(db, run->schema, run->schema_len, NULL, &err) !=
	    0) {
		if (err.code == PEMBA_EUNSUPPORTED) {
			run->result->unsupported = true;
			add_failure(run, run->schema_line, 0,
			            "the schema uses caveats, which "
			            "are not supported yet: %s",
			            err.message);
		} else if (err.line > 0 && run->schema_line_base > 0) {
			add_failure(run, run->schema_line_base + err.line,
			            run->schema_column_base + err.column,
			            "invalid schema (schema line %d, column "
			            "%d): %s",
			            err.line, err.column, err.message);
		} else if (err.line > 0) {
			add_failure(run, run->schema_line, 0,
			            "invalid schema (schema line %d, column "
			            "%d): %s",
			            err.line, err.column, err.message);
		} else {
			add_failure(run, run->schema_line, 0,
			            "invalid schema: %s", err.message);
		}
		goto done;
	}

	pemba_update *updates = xcalloc(PEMBA_MAX_UPDATES, sizeof(*updates));
	size_t failed = 0;
	for (size_t first = 0; first < run->nrels; first += PEMBA_MAX_UPDATES) {
		size_t count = run->nrels - first;
		if (count > PEMBA_MAX_UPDATES)
			count = PEMBA_MAX_UPDATES;
		failed += load_batch(run, db, updates, first, count);
	}
	free(updates);
	run->result->relationships = run->nrels - failed;
	/* Assertions over partly loaded data would only add noise. */
	if (failed)
		goto done;

	for (size_t i = 0; i < run->nassertions; i++)
		check_assertion(run, db, &run->assertions[i]);
	if (run->nexpected) {
		membership *ms = membership_new(db);
		for (size_t i = 0; i < run->nexpected; i++)
			check_expected_relation(run, ms, &run->expected[i]);
		membership_free(ms);
	}
done:
	pemba_close(db);
}

/* ============================================================ entry points */

int validate_text(const char *yaml, size_t len, const char *base_dir,
                  validate_result *out)
{
	return validate_text_in(yaml, len, base_dir, NULL, out);
}

int validate_text_in(const char *yaml, size_t len, const char *base_dir,
                     const char *datastore, validate_result *out)
{
	if (out == NULL)
		return 1;
	memset(out, 0, sizeof(*out));
	if (yaml == NULL) {
		validate_run run = {.result = out};
		add_failure(&run, 0, 0, "no validation file text given (NULL)");
		return 1;
	}
	validate_run run = {
	    .result = out,
	    .yaml = yaml,
	    .yaml_len = len,
	    .base_dir = base_dir,
	    .datastore = datastore,
	    .locate_line = 1,
	};
	if (load_yaml(&run))
		evaluate(&run);
	run_free(&run);
	return out->nfailures ? 1 : 0;
}

int validate_file(const char *path, validate_result *out)
{
	return validate_file_in(path, NULL, out);
}

int validate_file_in(const char *path, const char *datastore,
                     validate_result *out)
{
	if (out == NULL)
		return 1;
	memset(out, 0, sizeof(*out));
	if (path == NULL || path[0] == '\0') {
		validate_run run = {.result = out};
		add_failure(&run, 0, 0, "no validation file path given");
		return 1;
	}
	size_t len;
	char *yaml = read_whole_file(path, &len);
	if (!yaml) {
		validate_run run = {.result = out};
		add_failure(&run, 0, 0, "cannot read %s: %s", path,
		            strerror(errno));
		return 1;
	}
	char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	int rc =
	    validate_text_in(yaml, len, slash ? dir : NULL, datastore, out);
	free(dir);
	free(yaml);
	return rc;
}
