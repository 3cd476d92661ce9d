/*
 * backup_rewrite.c -- prefix filter and prefix replacements for backups
 * (backup_rewrite.h).  The schema is compiled with src/schema/schema.h
 * (as backup_redact.c does), definitions and caveats are filtered and
 * renamed in the tree, printed, and the result compiled again to check
 * it.
 */
#include "tools/backup_rewrite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pemba.h"
#include "schema/schema.h"
#include "util/arena.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

typedef struct replacement {
	char *from, *to;
} replacement;

struct backup_rewriter {
	char *prefix; /* NULL: no filter */
	replacement *repl;
	size_t nrepl;
	/* strings of the last rewritten relationship */
	char *object_type, *subject_object_type, *caveat_name;
};

backup_rewriter *backup_rewriter_new(const char *prefix_filter,
                                     const char *replacements,
                                     char error[BACKUP_ERROR_LEN])
{
	backup_rewriter *rw = xcalloc(1, sizeof(*rw));
	if (prefix_filter && *prefix_filter)
		rw->prefix = xstrdup(prefix_filter);
	for (const char *p = replacements; p && *p;) {
		size_t len = strcspn(p, ",");
		const char *eq = memchr(p, '=', len);
		if (!eq || eq == p) {
			snprintf(error, BACKUP_ERROR_LEN,
			         "--prefix-replacements takes old=new pairs "
			         "separated by commas, not '%.*s'",
			         (int)len, p);
			backup_rewriter_free(rw);
			return NULL;
		}
		rw->repl =
		    xrealloc(rw->repl, (rw->nrepl + 1) * sizeof(*rw->repl));
		rw->repl[rw->nrepl].from = xstrndup(p, (size_t)(eq - p));
		rw->repl[rw->nrepl].to =
		    xstrndup(eq + 1, len - (size_t)(eq - p) - 1);
		rw->nrepl++;
		p += len;
		if (*p == ',')
			p++;
	}
	return rw;
}

bool backup_rewriter_active(const backup_rewriter *rw)
{
	return rw->prefix || rw->nrepl;
}

/* name with its prefix replaced, in a (or name itself). */
static const char *replace_name(const backup_rewriter *rw, arena *a,
                                const char *name)
{
	const char *slash = strchr(name, '/');
	if (!slash)
		return name;
	size_t plen = (size_t)(slash - name);
	for (size_t i = 0; i < rw->nrepl; i++) {
		if (strlen(rw->repl[i].from) != plen ||
		    strncmp(rw->repl[i].from, name, plen) != 0)
			continue;
		if (!*rw->repl[i].to)
			return slash + 1;
		return arena_printf(a, "%s/%s", rw->repl[i].to, slash + 1);
	}
	return name;
}

static bool has_prefix(const char *name, const char *prefix, bool slash)
{
	size_t n = strlen(prefix);
	return strncmp(name, prefix, n) == 0 && (!slash || name[n] == '/');
}

char *backup_rewrite_schema(backup_rewriter *rw, const char *schema_text,
                            char error[BACKUP_ERROR_LEN])
{
	if (!backup_rewriter_active(rw))
		return xstrdup(schema_text);
	pemba_error err;
	schema *s = NULL;
	if (schema_compile(schema_text, strlen(schema_text), &s, &err) != 0) {
		snprintf(error, BACKUP_ERROR_LEN,
		         "the backup's schema does not compile: %s",
		         err.message);
		return NULL;
	}
	if (rw->prefix) {
		size_t n = 0;
		for (size_t i = 0; i < s->ndefinitions; i++)
			if (has_prefix(s->definitions[i]->name, rw->prefix,
			               true))
				s->definitions[n++] = s->definitions[i];
		s->ndefinitions = n;
		n = 0;
		for (size_t i = 0; i < s->ncaveats; i++)
			if (has_prefix(s->caveats[i]->name, rw->prefix, true))
				s->caveats[n++] = s->caveats[i];
		s->ncaveats = n;
		if (s->ndefinitions == 0 && s->ncaveats == 0) {
			snprintf(error, BACKUP_ERROR_LEN,
			         "--prefix-filter %s removes every definition "
			         "of the schema",
			         rw->prefix);
			schema_free(s);
			return NULL;
		}
	}
	for (size_t i = 0; i < s->ndefinitions; i++) {
		schema_definition *d = s->definitions[i];
		d->name = replace_name(rw, s->arena, d->name);
		for (size_t k = 0; k < d->nrelations; k++) {
			schema_relation *r = d->relations[k];
			for (size_t t = 0; t < r->ntypes; t++) {
				schema_allowed_type *a = &r->types[t];
				a->type = replace_name(rw, s->arena, a->type);
				if (a->caveat)
					a->caveat = replace_name(rw, s->arena,
					                         a->caveat);
			}
		}
	}
	for (size_t i = 0; i < s->ncaveats; i++)
		s->caveats[i]->name =
		    replace_name(rw, s->arena, s->caveats[i]->name);
	strbuf out;
	strbuf_init(&out);
	schema_print(s, &out);
	schema_free(s);
	char *text = strbuf_detach(&out, NULL);
	schema *check = NULL;
	if (schema_compile(text, strlen(text), &check, &err) != 0) {
		snprintf(error, BACKUP_ERROR_LEN,
		         "the rewritten schema does not compile: %s",
		         err.message);
		free(text);
		return NULL;
	}
	schema_free(check);
	return text;
}

/* name with its prefix replaced, kept in *slot (heap). */
static const char *replace_into(backup_rewriter *rw, char **slot,
                                const char *name)
{
	const char *slash = strchr(name, '/');
	free(*slot);
	*slot = NULL;
	if (slash) {
		size_t plen = (size_t)(slash - name);
		for (size_t i = 0; i < rw->nrepl && !*slot; i++) {
			if (strlen(rw->repl[i].from) != plen ||
			    strncmp(rw->repl[i].from, name, plen) != 0)
				continue;
			strbuf sb;
			strbuf_init(&sb);
			if (*rw->repl[i].to)
				strbuf_printf(&sb, "%s/", rw->repl[i].to);
			strbuf_puts(&sb, slash + 1);
			*slot = strbuf_detach(&sb, NULL);
		}
	}
	if (!*slot)
		*slot = xstrdup(name);
	return *slot;
}

int backup_rewrite_relationship(backup_rewriter *rw,
                                const backup_relationship *in,
                                backup_relationship *out)
{
	*out = *in;
	if (rw->prefix &&
	    !(has_prefix(in->object_type, rw->prefix, false) &&
	      has_prefix(in->subject_object_type, rw->prefix, false)))
		return 0;
	if (rw->nrepl) {
		out->object_type =
		    replace_into(rw, &rw->object_type, in->object_type);
		out->subject_object_type = replace_into(
		    rw, &rw->subject_object_type, in->subject_object_type);
		if (in->caveat_name[0])
			out->caveat_name =
			    replace_into(rw, &rw->caveat_name, in->caveat_name);
	}
	return 1;
}

void backup_rewriter_free(backup_rewriter *rw)
{
	if (!rw)
		return;
	free(rw->prefix);
	for (size_t i = 0; i < rw->nrepl; i++) {
		free(rw->repl[i].from);
		free(rw->repl[i].to);
	}
	free(rw->repl);
	free(rw->object_type);
	free(rw->subject_object_type);
	free(rw->caveat_name);
	free(rw);
}
