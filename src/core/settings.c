/*
 * settings.c -- datastore settings: read-only mode and relation (or
 * permission) deprecation (the public functions of pemba.h, "read-only mode,
 * deprecation"), and the guard every write path runs inside its
 * transaction to enforce them.
 *
 * The settings live in the datastore (store.h, "datastore settings"), not
 * in the handle: a toggle made through one handle, or by another process,
 * is seen by the next write of every other one.  Nothing is cached, so
 * there is nothing to invalidate; the price is two small indexed reads per
 * write transaction, next to an fsync.
 *
 * Enforcement happens inside the write transaction, after
 * store_txn_begin: writers are serialized, so the settings read there
 * cannot change before the write commits.  A write that raced a toggle
 * either committed before the toggle or sees it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/error.h"
#include "util/xalloc.h"

#define READ_ONLY_MESSAGE                                                      \
	"the datastore is in read-only mode: writes are refused until "        \
	"`pemba admin read-only off`"

/* ------------------------------------------------------------ helpers */

/* `type:id#rel@type:id[#rel]` for messages, ids shortened so the message
 * fits pemba_error (ids may be 1024 bytes). */
static void format_rel(char *buf, size_t size, const pemba_relationship *r)
{
	const char *sr = core_subject_relation(r->subject_relation);
	snprintf(buf, size, "%s:%.128s#%s@%s:%.128s%s%s", r->resource_type,
	         r->resource_id, r->relation, r->subject_type, r->subject_id,
	         sr[0] ? "#" : "", sr);
}

/* Checks the names of a deprecation request against the identifier
 * rules and the schema current at the head. */
static int check_deprecation_target(pemba_db *db, const char *resource_type,
                                    const char *relation, pemba_error *err)
{
	if (core_is_empty(resource_type) ||
	    !schema_valid_type_name(resource_type, strlen(resource_type)))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid resource type `%s`",
		                 resource_type ? resource_type : "");
	if (core_is_empty(relation) ||
	    !schema_valid_relation_name(relation, strlen(relation)))
		return error_set(err, PEMBA_EINVAL, "invalid relation `%s`",
		                 relation ? relation : "");
	pemba_revision head;
	int rc = store_head_revision(db->st, &head, err);
	if (rc < 0)
		return rc;
	const schema *sc = NULL;
	if (head > 0 && (rc = core_schema_at(db, head, &sc, err)) < 0)
		return rc;
	const schema_definition *def =
	    sc ? schema_find_definition(sc, resource_type) : NULL;
	if (def == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "cannot deprecate `%s#%s`: object definition "
		                 "`%s` not found in the current schema",
		                 resource_type, relation, resource_type);
	/* A permission may be deprecated too: it is never written, but
	 * servers count and warn about (or refuse) the reads that name it
	 * (api/README.md, "Deprecation: finding the callers"). */
	if (schema_find_relation(def, relation) == NULL)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "cannot deprecate `%s#%s`: relation or "
		                 "permission `%s` not found under definition "
		                 "`%s` in the current schema",
		                 resource_type, relation, relation,
		                 resource_type);
	return PEMBA_OK;
}

/* ------------------------------------------------------ public: flags */

int pemba_set_read_only(pemba_db *db, int read_only, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	return store_set_read_only(db->st, read_only != 0, err);
}

int pemba_get_read_only(pemba_db *db, int *read_only_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, read_only_out);
	bool on = false;
	int rc = store_get_read_only(db->st, &on, err);
	*read_only_out = on;
	return rc;
}

/* ----------------------------------------------- public: deprecations */

int pemba_deprecate_relation(pemba_db *db, const char *resource_type,
                             const char *relation, pemba_deprecation_mode mode,
                             pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	if (mode != PEMBA_DEPRECATION_WARN && mode != PEMBA_DEPRECATION_REJECT)
		return error_set(
		    err, PEMBA_EINVAL,
		    "unknown deprecation mode %d (expected warn or "
		    "reject)",
		    (int)mode);
	/* Checked against the head's schema outside the settings
	 * transaction: a schema write removing the relation right after
	 * leaves a deprecation of nothing, which is harmless (no write can
	 * name the relation any more) and is listed until lifted. */
	int rc = check_deprecation_target(db, resource_type, relation, err);
	if (rc < 0)
		return rc;
	return store_set_deprecation(db->st, resource_type, relation,
	                             mode == PEMBA_DEPRECATION_REJECT
	                                 ? STORE_DEPRECATION_REJECT
	                                 : STORE_DEPRECATION_WARN,
	                             err);
}

int pemba_undeprecate_relation(pemba_db *db, const char *resource_type,
                               const char *relation, int *was_deprecated_out,
                               pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	if (was_deprecated_out)
		*was_deprecated_out = 0;
	/* Only the syntax: a relation the schema has lost since can still
	 * have its deprecation lifted. */
	if (core_is_empty(resource_type) ||
	    !schema_valid_type_name(resource_type, strlen(resource_type)))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid resource type `%s`",
		                 resource_type ? resource_type : "");
	if (core_is_empty(relation) ||
	    !schema_valid_relation_name(relation, strlen(relation)))
		return error_set(err, PEMBA_EINVAL, "invalid relation `%s`",
		                 relation ? relation : "");
	bool removed = false;
	int rc = store_remove_deprecation(db->st, resource_type, relation,
	                                  &removed, err);
	if (rc == PEMBA_OK && was_deprecated_out)
		*was_deprecated_out = removed;
	return rc;
}

int pemba_list_deprecations(pemba_db *db, pemba_deprecation **out,
                            size_t *n_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, out);
	CORE_REQUIRE(err, n_out);
	*out = NULL;
	*n_out = 0;
	store_deprecation *list;
	size_t n;
	int rc = store_list_deprecations(db->st, &list, &n, err);
	if (rc < 0 || n == 0)
		return rc;
	/* Same layout as the store's block: the array, then the strings. */
	size_t strings = 0;
	for (size_t i = 0; i < n; i++)
		strings += strlen(list[i].resource_type) +
		           strlen(list[i].relation) + 2;
	char *block = xmalloc(n * sizeof(pemba_deprecation) + strings);
	pemba_deprecation *d = (pemba_deprecation *)block;
	char *p = block + n * sizeof(pemba_deprecation);
	for (size_t i = 0; i < n; i++) {
		size_t lt = strlen(list[i].resource_type) + 1;
		size_t lr = strlen(list[i].relation) + 1;
		memcpy(p, list[i].resource_type, lt);
		d[i].resource_type = p;
		p += lt;
		memcpy(p, list[i].relation, lr);
		d[i].relation = p;
		p += lr;
		d[i].mode = list[i].mode == STORE_DEPRECATION_REJECT
		                ? PEMBA_DEPRECATION_REJECT
		                : PEMBA_DEPRECATION_WARN;
		d[i].set_at = list[i].set_rev;
		d[i].set_at_ms = list[i].set_ms;
	}
	free(list);
	*out = d;
	*n_out = n;
	return PEMBA_OK;
}

/* ------------------------------------------------- the guard of writes */

int core_check_writable(pemba_db *db, pemba_error *err)
{
	bool read_only = false;
	int rc = store_get_read_only(db->st, &read_only, err);
	if (rc < 0)
		return rc;
	if (read_only)
		return error_set(err, PEMBA_EREADONLY, READ_ONLY_MESSAGE);
	return PEMBA_OK;
}

int core_write_guard_begin(pemba_db *db, core_write_guard *g, pemba_error *err)
{
	memset(g, 0, sizeof(*g));
	int rc = core_check_writable(db, err);
	if (rc < 0)
		return rc;
	rc = store_list_deprecations(db->st, &g->deprecations,
	                             &g->ndeprecations, err);
	if (rc < 0 || g->ndeprecations == 0)
		return rc;
	g->hits = xcalloc(g->ndeprecations, sizeof(*g->hits));
	g->examples = xcalloc(g->ndeprecations, sizeof(*g->examples));
	return PEMBA_OK;
}

int core_write_guard_check(core_write_guard *g, const pemba_relationship *r,
                           pemba_error *err)
{
	/* The usual case, and the one an import runs per row: nothing is
	 * deprecated.  Deprecations are few, so a linear scan is enough. */
	for (size_t i = 0; i < g->ndeprecations; i++) {
		const store_deprecation *d = &g->deprecations[i];
		if (strcmp(d->relation, r->relation) != 0 ||
		    strcmp(d->resource_type, r->resource_type) != 0)
			continue;
		char text[512];
		if (d->mode == STORE_DEPRECATION_REJECT) {
			format_rel(text, sizeof(text), r);
			return error_set(
			    err, PEMBA_EPRECONDITION,
			    "relation `%s#%s` is deprecated (reject): cannot "
			    "write relationship `%s`; deleting its "
			    "relationships is allowed, and `pemba relation "
			    "undeprecate %s#%s` lifts the deprecation",
			    d->resource_type, d->relation, text,
			    d->resource_type, d->relation);
		}
		if (g->hits[i]++ == 0) {
			format_rel(text, sizeof(text), r);
			g->examples[i] = xstrdup(text);
		}
		return PEMBA_OK;
	}
	return PEMBA_OK;
}

void core_write_guard_report(const core_write_guard *g,
                             const pemba_write_options *opts)
{
	if (opts == NULL || opts->on_deprecated == NULL)
		return;
	for (size_t i = 0; i < g->ndeprecations; i++) {
		if (g->hits[i] == 0)
			continue;
		const store_deprecation *d = &g->deprecations[i];
		char message[1024];
		snprintf(message, sizeof(message),
		         "write to deprecated relation `%s#%s` (warn): %llu "
		         "relationship%s, e.g. `%s`",
		         d->resource_type, d->relation,
		         (unsigned long long)g->hits[i],
		         g->hits[i] == 1 ? "" : "s", g->examples[i]);
		pemba_deprecation_warning w = {
		    .resource_type = d->resource_type,
		    .relation = d->relation,
		    .count = g->hits[i],
		    .example = g->examples[i],
		    .message = message,
		};
		opts->on_deprecated(opts->on_deprecated_ctx, &w);
	}
}

void core_write_guard_end(core_write_guard *g)
{
	for (size_t i = 0; g->examples && i < g->ndeprecations; i++)
		free(g->examples[i]);
	free(g->examples);
	free(g->hits);
	free(g->deprecations);
	memset(g, 0, sizeof(*g));
}
