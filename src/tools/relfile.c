/*
 * relfile.c -- relationship files (see relfile.h): SpiceDB's one-per-line
 * syntax, or the `relationships:` block of a validation file.
 */
#include "tools/relfile.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "util/strbuf.h"
#include "util/xalloc.h"

struct relfile {
	FILE *in;
	int yaml;
	/* Lines: the current line (getline's buffer) and its number;
	 * `pending` when the line in `buf` was read by relfile_open and not
	 * returned yet. */
	char *buf;
	size_t cap;
	int line;
	int pending;
	/* YAML: the relationships block's text, where the next line starts,
	 * the input line of its first line and whether lines map one to one
	 * (a literal block); otherwise every line reports `line`. */
	char *text;
	size_t pos;
	int first_line;
	int literal;
	/* The last relationship's storage and the last error. */
	char *storage;
	char *error;
};

static char *format_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static char *format_error(const char *fmt, ...)
{
	strbuf sb;
	strbuf_init(&sb);
	va_list ap;
	va_start(ap, fmt);
	strbuf_vprintf(&sb, fmt, ap);
	va_end(ap);
	return strbuf_detach(&sb, NULL);
}

/* Trims s in place (leading and trailing space, the newline); returns
 * where the text starts. */
static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

static int is_skipped(const char *s)
{
	return s[0] == '\0' || s[0] == '#' || strncmp(s, "//", 2) == 0;
}

/* `---` or `key:` followed by a space or nothing: YAML.  A relationship
 * never has a space (or the end) right after its first colon. */
static int looks_like_yaml(const char *s)
{
	if (strncmp(s, "---", 3) == 0)
		return 1;
	const char *p = s;
	while (isalnum((unsigned char)*p) || *p == '_' || *p == '"' ||
	       *p == '\'')
		p++;
	return p > s && p[0] == ':' && (p[1] == '\0' || p[1] == ' ');
}

/* Loads the rest of the input (after `head`, already read) as YAML and
 * finds the relationships block. */
static int load_yaml(relfile *f, strbuf *all, char **error)
{
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f->in)) > 0)
		strbuf_append(all, chunk, n);
	if (ferror(f->in)) {
		*error = format_error("cannot read the input");
		return -1;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)all->data,
	                             all->len);
	if (!yaml_parser_load(&parser, &doc)) {
		*error = format_error("line %zu: malformed YAML: %s",
		                      parser.problem_mark.line + 1,
		                      parser.problem ? parser.problem
		                                     : "parse error");
		yaml_parser_delete(&parser);
		return -1;
	}
	int rc = 0;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root || root->type != YAML_MAPPING_NODE) {
		*error = format_error("line 1: a validation file is a YAML "
		                      "mapping with a relationships key");
		rc = -1;
		goto out;
	}
	for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
	     pair < root->data.mapping.pairs.top; pair++) {
		yaml_node_t *key = yaml_document_get_node(&doc, pair->key);
		yaml_node_t *value = yaml_document_get_node(&doc, pair->value);
		if (!key || key->type != YAML_SCALAR_NODE ||
		    strcmp((const char *)key->data.scalar.value,
		           "relationships") != 0)
			continue;
		if (f->text) {
			*error =
			    format_error("line %zu: relationships is given "
			                 "twice",
			                 key->start_mark.line + 1);
			rc = -1;
			goto out;
		}
		if (value->type != YAML_SCALAR_NODE) {
			*error = format_error(
			    "line %zu: relationships must be a string, one "
			    "relationship per line",
			    value->start_mark.line + 1);
			rc = -1;
			goto out;
		}
		const char *v = (const char *)value->data.scalar.value;
		/* null, ~ or nothing: no relationships, as in SpiceDB. */
		if (value->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		    (strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
		     strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0))
			v = "";
		f->text = xstrdup(v);
		f->literal =
		    value->data.scalar.style == YAML_LITERAL_SCALAR_STYLE;
		/* A literal block's text starts on the line after `|`. */
		f->first_line =
		    (int)value->start_mark.line + (f->literal ? 2 : 1);
	}
	if (!f->text)
		f->text = xstrdup(""); /* no relationships: nothing to do */
out:
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

int relfile_open(FILE *in, relfile **out, char **error)
{
	relfile *f = xcalloc(1, sizeof(*f));
	f->in = in;
	*error = NULL;
	strbuf seen; /* what was read, for YAML */
	strbuf_init(&seen);
	ssize_t n;
	while ((n = getline(&f->buf, &f->cap, in)) >= 0) {
		strbuf_append(&seen, f->buf, (size_t)n);
		f->line++;
		char *s = trim(f->buf);
		if (is_skipped(s))
			continue;
		if (looks_like_yaml(s)) {
			f->yaml = 1;
			if (load_yaml(f, &seen, error) != 0) {
				strbuf_free(&seen);
				relfile_close(f);
				return -1;
			}
		} else {
			f->pending = 1;
		}
		break;
	}
	strbuf_free(&seen);
	if (ferror(in)) {
		*error = format_error("cannot read the input");
		relfile_close(f);
		return -1;
	}
	*out = f;
	return 0;
}

int relfile_is_yaml(const relfile *f)
{
	return f->yaml;
}

/* The next significant line into *text / *line; 0 at the end. */
static int next_line(relfile *f, char **text, int *line)
{
	if (f->yaml) {
		while (f->text[f->pos]) {
			char *start = f->text + f->pos;
			char *end = strchr(start, '\n');
			size_t len =
			    end ? (size_t)(end - start) : strlen(start);
			f->pos += len + (end ? 1 : 0);
			start[len] = '\0';
			*line = f->first_line;
			if (f->literal)
				f->first_line++;
			char *s = trim(start);
			if (!is_skipped(s)) {
				*text = s;
				return 1;
			}
		}
		return 0;
	}
	if (f->pending) {
		f->pending = 0;
		*text = trim(f->buf);
		*line = f->line;
		return 1;
	}
	ssize_t n;
	while ((n = getline(&f->buf, &f->cap, f->in)) >= 0) {
		f->line++;
		char *s = trim(f->buf);
		if (!is_skipped(s)) {
			*text = s;
			*line = f->line;
			return 1;
		}
	}
	return 0;
}

int relfile_next(relfile *f, pemba_relationship *rel, int *line,
                 const char **error)
{
	pemba_free(f->storage);
	f->storage = NULL;
	free(f->error);
	f->error = NULL;
	char *text;
	if (!next_line(f, &text, line)) {
		if (!f->yaml && ferror(f->in)) {
			f->error = format_error(
			    "line %d: cannot read the input", f->line + 1);
			*error = f->error;
			return -1;
		}
		return 0;
	}
	pemba_error err = {0};
	if (pemba_parse_relationship(text, rel, &f->storage, &err) != 0) {
		f->error = format_error("line %d: malformed relationship "
		                        "'%s': %s",
		                        *line, text, err.message);
		*error = f->error;
		return -1;
	}
	return 1;
}

void relfile_close(relfile *f)
{
	if (!f)
		return;
	free(f->buf);
	free(f->text);
	pemba_free(f->storage);
	free(f->error);
	free(f);
}
