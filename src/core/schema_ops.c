/*
 * schema_ops.c -- writing, reading and checking schemas, and the per-handle
 * cache of compiled schemas.
 *
 * The cache is keyed by the revision that wrote each schema and remembers
 * up to which revision that schema is known to be current, so a check at
 * the head after relationship writes made through this handle neither
 * recompiles nor re-reads the schema text.  A revision past what the cache
 * knows costs one read of the text (another handle may have written a new
 * schema); compiling happens only for a schema not seen before.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/error.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

/* ---------------------------------------------------------------- cache */

static core_schema_entry *cache_lookup(pemba_db *db, pemba_revision rev)
{
	for (int i = 0; i < CORE_SCHEMA_CACHE_SIZE; i++) {
		core_schema_entry *e = &db->schemas[i];
		if (e->sc && e->written_rev <= rev && rev <= e->known_until)
			return e;
	}
	return NULL;
}

static core_schema_entry *cache_by_written(pemba_db *db, pemba_revision w)
{
	for (int i = 0; i < CORE_SCHEMA_CACHE_SIZE; i++)
		if (db->schemas[i].sc && db->schemas[i].written_rev == w)
			return &db->schemas[i];
	return NULL;
}

/* A free slot, or the least recently used one after freeing its schema. */
static core_schema_entry *cache_slot(pemba_db *db)
{
	core_schema_entry *victim = &db->schemas[0];
	for (int i = 0; i < CORE_SCHEMA_CACHE_SIZE; i++) {
		core_schema_entry *e = &db->schemas[i];
		if (e->sc == NULL)
			return e;
		if (e->last_used < victim->last_used)
			victim = e;
	}
	schema_free(victim->sc);
	memset(victim, 0, sizeof(*victim));
	return victim;
}

void core_schema_add(pemba_db *db, schema *sc, pemba_revision rev)
{
	core_schema_entry *e = cache_by_written(db, rev);
	if (e) {
		/* Cannot happen (one schema per revision); keep the old. */
		schema_free(sc);
		return;
	}
	e = cache_slot(db);
	e->sc = sc;
	e->written_rev = rev;
	e->known_until = rev;
	e->last_used = ++db->use_clock;
}

void core_schema_note_revision(pemba_db *db, pemba_revision rev)
{
	for (int i = 0; i < CORE_SCHEMA_CACHE_SIZE; i++) {
		core_schema_entry *e = &db->schemas[i];
		if (e->sc && rev > 0 && e->known_until == rev - 1)
			e->known_until = rev;
	}
}

void core_schema_cache_clear(pemba_db *db)
{
	for (int i = 0; i < CORE_SCHEMA_CACHE_SIZE; i++) {
		schema_free(db->schemas[i].sc);
		memset(&db->schemas[i], 0, sizeof(db->schemas[i]));
	}
}

int core_schema_at(pemba_db *db, pemba_revision rev, const schema **out,
                   pemba_error *err)
{
	pemba_revision written;
	return core_schema_version_at(db, rev, out, &written, err);
}

int core_schema_version_at(pemba_db *db, pemba_revision rev, const schema **out,
                           pemba_revision *written_out, pemba_error *err)
{
	*out = NULL;
	*written_out = 0;
	if (rev == 0)
		return PEMBA_OK; /* nothing written at all */
	core_schema_entry *e = cache_lookup(db, rev);
	if (e) {
		e->last_used = ++db->use_clock;
		*out = e->sc;
		*written_out = e->written_rev;
		return PEMBA_OK;
	}

	char *text = NULL;
	pemba_revision written = 0;
	int rc = store_read_schema(db->st, rev, &text, &written, err);
	if (rc == PEMBA_ENOTFOUND) {
		error_clear(err);
		return PEMBA_OK;
	}
	if (rc < 0)
		return rc;

	e = cache_by_written(db, written);
	if (e == NULL) {
		schema *sc;
		pemba_error cerr;
		rc = schema_compile(text, strlen(text), &sc, &cerr);
		if (rc < 0) {
			free(text);
			return error_set(err, PEMBA_EIO,
			                 "the schema stored at revision %llu "
			                 "does not compile: %s",
			                 (unsigned long long)written,
			                 cerr.message);
		}
		e = cache_slot(db);
		e->sc = sc;
		e->written_rev = written;
		e->known_until = written;
	}
	free(text);
	/* No schema write happened in (written, rev]. */
	if (rev > e->known_until)
		e->known_until = rev;
	e->last_used = ++db->use_clock;
	*out = e->sc;
	*written_out = e->written_rev;
	return PEMBA_OK;
}

/* ------------------------------------------------------ change lists */

/* Lifts the deprecations of relations and permissions the schema just
 * written no longer has: a deprecation must not outlive its name and come
 * back to life if a relation of the same name is added later.  Best effort,
 * after the commit (settings live in their own transactions): a failure here
 * leaves a deprecation that `pemba relation undeprecate` lifts. */
static void drop_stale_deprecations(pemba_db *db, const schema *sc)
{
	pemba_deprecation *deps = NULL;
	size_t n = 0;
	pemba_error ignored;
	if (pemba_list_deprecations(db, &deps, &n, &ignored) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		const schema_definition *def =
		    schema_find_definition(sc, deps[i].resource_type);
		/* A relation that became a permission (or the reverse)
		 * keeps its deprecation: the name is still used. */
		const schema_relation *rel =
		    def ? schema_find_relation(def, deps[i].relation) : NULL;
		if (rel == NULL)
			pemba_undeprecate_relation(db, deps[i].resource_type,
			                           deps[i].relation, NULL,
			                           &ignored);
	}
	pemba_free(deps);
}

size_t core_pack_changes(const schema_diff *d, pemba_schema_change **out)
{
	*out = NULL;
	if (!d || d->nchanges == 0)
		return 0;
	size_t bytes = d->nchanges * sizeof(pemba_schema_change);
	for (size_t i = 0; i < d->nchanges; i++) {
		const schema_change *c = &d->changes[i];
		bytes += strlen(c->definition) + strlen(c->name) +
		         strlen(c->detail) + strlen(c->description) + 4;
	}
	pemba_schema_change *v = xmalloc(bytes);
	char *p = (char *)(v + d->nchanges);
	for (size_t i = 0; i < d->nchanges; i++) {
		const schema_change *c = &d->changes[i];
		const char *src[4] = {c->definition, c->name, c->detail,
		                      c->description};
		const char **dst[4] = {&v[i].definition, &v[i].name,
		                       &v[i].detail, &v[i].description};
		v[i].kind = (int)c->kind;
		for (int k = 0; k < 4; k++) {
			size_t n = strlen(src[k]) + 1;
			memcpy(p, src[k], n);
			*dst[k] = p;
			p += n;
		}
	}
	*out = v;
	return d->nchanges;
}

/* ----------------------------------------------------- safety checks */

/*
 * SpiceDB's rules for a schema write over stored relationships, checked in
 * SpiceDB's order: caveat parameters first (refused even with no
 * relationship at all), then each definition of the new schema in source
 * order (removed relations: rows under them, then rows using them as a
 * subject relation; removed allowed types: rows with that subject type,
 * relation or wildcard, caveat and expiration), then removed definitions.
 * Every refusal is PEMBA_EINVAL (SpiceDB: INVALID_ARGUMENT) with SpiceDB's
 * wording and one blocking relationship.  Each probe is one indexed
 * LIMIT 1 statement inside the write transaction (store_txn_probe).
 */

/* Formats the first blocking row into ctx (a char[512]). */
static void remember_row(void *ctx, const store_rel *row)
{
	pemba_relationship r = {
	    .resource_type = row->resource_type,
	    .resource_id = row->resource_id,
	    .relation = row->relation,
	    .subject_type = row->subject_type,
	    .subject_id = row->subject_id,
	    .subject_relation =
	        *row->subject_relation ? row->subject_relation : NULL,
	    .caveat_name = *row->caveat_name ? row->caveat_name : NULL,
	    .caveat_context = *row->caveat_context ? row->caveat_context : NULL,
	    .expiration_ms = row->expiration_ms,
	};
	char *text = pemba_format_relationship(&r);
	snprintf((char *)ctx, 512, "%s", text ? text : "?");
	pemba_free(text);
}

/* The probe that finds relationships an allowed type admits, as SpiceDB
 * matches them when the type is removed: same subject type, the same
 * subject relation (none for `T` and `T:*`; a plain `T` also covers the
 * `T:*` rows), only `*` for a wildcard, exactly its caveat (or none), and
 * with an expiration iff the type has `with expiration`. */
void core_probe_for_type(const char *resource_type, const char *relation,
                         const schema_allowed_type *t, store_probe *p)
{
	memset(p, 0, sizeof(*p));
	p->resource_type = resource_type;
	p->relation = relation;
	p->subject_type = t->type;
	p->subject_relation = t->relation ? t->relation : "";
	p->wildcard = t->wildcard;
	p->caveat_name = t->caveat ? t->caveat : "";
	p->expiration =
	    t->expiration ? STORE_EXPIRATION_WITH : STORE_EXPIRATION_WITHOUT;
}

/* Runs probe p; on a match fails with fmt (its last %s is the row). */
static int refuse_if_found(store_txn *txn, const store_probe *p,
                           pemba_error *err, const char *fmt, const char *a,
                           const char *b, const char *c)
{
	char row[512] = "";
	int rc = store_txn_probe(txn, p, remember_row, row, err);
	if (rc <= 0)
		return rc;
	char msg[sizeof(err->message)];
	if (c)
		snprintf(msg, sizeof(msg), fmt, a, b, c, row);
	else if (b)
		snprintf(msg, sizeof(msg), fmt, a, b, row);
	else
		snprintf(msg, sizeof(msg), fmt, a, row);
	return error_set(err, PEMBA_EINVAL, "%s", msg);
}

static int check_definition_changes(store_txn *txn, const schema_diff *d,
                                    const char *def, pemba_error *err)
{
	int rc;
	for (size_t i = 0; i < d->nchanges; i++) {
		const schema_change *c = &d->changes[i];
		if (strcmp(c->definition, def) != 0)
			continue;
		store_probe p;
		switch (c->kind) {
		case SCHEMA_CHANGE_REMOVE_RELATION:
		case SCHEMA_CHANGE_RELATION_TO_PERMISSION:
			memset(&p, 0, sizeof(p));
			p.resource_type = def;
			p.relation = c->name;
			rc = refuse_if_found(
			    txn, &p, err,
			    "cannot delete relation `%s` in object definition "
			    "`%s`, as at least one relationship exists under "
			    "it: %s",
			    c->name, def, NULL);
			if (rc)
				return rc;
			memset(&p, 0, sizeof(p));
			p.subject_type = def;
			p.subject_relation = c->name;
			rc = refuse_if_found(
			    txn, &p, err,
			    "cannot delete relation `%s` in object definition "
			    "`%s`, as at least one relationship references it "
			    "as part of a subject: %s",
			    c->name, def, NULL);
			if (rc)
				return rc;
			break;
		case SCHEMA_CHANGE_REMOVE_ALLOWED_TYPE:
			core_probe_for_type(def, c->name, c->old_type, &p);
			rc = refuse_if_found(
			    txn, &p, err,
			    "cannot remove allowed type `%s` from relation "
			    "`%s` "
			    "in object definition `%s`, as a relationship "
			    "exists with it: %s",
			    c->detail, c->name, def);
			if (rc)
				return rc;
			break;
		default:
			break;
		}
	}
	return PEMBA_OK;
}

int core_check_schema_change(store_txn *txn, const schema *new,
                             const schema_diff *d, pemba_error *err)
{
	int rc;
	for (size_t i = 0; i < d->nchanges; i++) {
		const schema_change *c = &d->changes[i];
		if (c->kind == SCHEMA_CHANGE_REMOVE_CAVEAT_PARAMETER)
			return error_set(
			    err, PEMBA_EINVAL,
			    "cannot remove parameter `%s` on caveat "
			    "`%s`",
			    c->name, c->definition);
		if (c->kind == SCHEMA_CHANGE_CHANGE_CAVEAT_PARAMETER_TYPE)
			return error_set(err, PEMBA_EINVAL,
			                 "cannot change the type of parameter "
			                 "`%s` on caveat `%s`",
			                 c->name, c->definition);
	}
	for (size_t i = 0; i < new->ndefinitions; i++)
		if ((rc = check_definition_changes(
		         txn, d, new->definitions[i]->name, err)))
			return rc;
	for (size_t i = 0; i < d->nchanges; i++) {
		const schema_change *c = &d->changes[i];
		if (c->kind != SCHEMA_CHANGE_REMOVE_DEFINITION)
			continue;
		store_probe p = {.resource_type = c->definition};
		rc = refuse_if_found(txn, &p, err,
		                     "cannot delete object definition `%s`, as "
		                     "at least one relationship exists under "
		                     "it: %s",
		                     c->definition, NULL, NULL);
		if (rc)
			return rc;
	}
	return PEMBA_OK;
}

/* --------------------------------------------------------------- public */

static int check_schema_size(size_t len, pemba_error *err)
{
	if (len > CORE_MAX_SCHEMA_BYTES)
		return error_set(err, PEMBA_ELIMIT,
		                 "schema text is %zu bytes; at most %u are "
		                 "accepted",
		                 len, CORE_MAX_SCHEMA_BYTES);
	return PEMBA_OK;
}

int pemba_write_schema_ex(pemba_db *db, const char *text, size_t len,
                          const pemba_write_schema_options *opts,
                          pemba_revision *rev_out,
                          pemba_schema_change **changes_out,
                          size_t *nchanges_out, pemba_error *err)
{
	error_clear(err);
	if (changes_out)
		*changes_out = NULL;
	if (nchanges_out)
		*nchanges_out = 0;
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, text);
	bool dry_run = opts && opts->dry_run;
	int rc = check_schema_size(len, err);
	if (rc < 0)
		return rc;
	schema *sc;
	rc = schema_compile(text, len, &sc, err);
	if (rc < 0)
		return rc;

	/* Everything below runs in the write transaction: the schema it
	 * replaces, the probes and the write see one state, and no
	 * relationship write can commit in between (writers are
	 * serialized). */
	store_txn *txn;
	pemba_revision rev;
	schema_diff *d = NULL;
	rc = store_txn_begin(db->st, &txn, &rev, err);
	if (rc < 0)
		goto fail;
	if (!dry_run && (rc = core_check_writable(db, err)) < 0)
		goto abort;
	const schema *old = NULL;
	if ((rc = core_schema_at(db, rev - 1, &old, err)) < 0)
		goto abort;
	d = schema_diff_compute(old, sc);
	if ((rc = core_check_schema_change(txn, sc, d, err)) < 0)
		goto abort;
	if (dry_run) {
		store_txn_abort(txn);
		schema_free(sc);
		if (rev_out)
			*rev_out = rev - 1;
		goto done;
	}
	if ((rc = store_txn_write_schema(txn, text, len, err)) < 0)
		goto abort;
	rc = store_txn_commit(txn, err);
	if (rc < 0)
		goto fail;
	core_schema_add(db, sc, rev);
	drop_stale_deprecations(db, sc);
	if (rev_out)
		*rev_out = rev;
done:
	if (changes_out) {
		size_t n = core_pack_changes(d, changes_out);
		if (nchanges_out)
			*nchanges_out = n;
	}
	schema_diff_free(d);
	return PEMBA_OK;
abort:
	store_txn_abort(txn);
fail:
	schema_diff_free(d);
	schema_free(sc);
	return rc;
}

int pemba_write_schema(pemba_db *db, const char *text, size_t len,
                       pemba_revision *rev_out, pemba_error *err)
{
	return pemba_write_schema_ex(db, text, len, NULL, rev_out, NULL, NULL,
	                             err);
}

int pemba_diff_schema_text(const char *old_text, size_t old_len,
                           const char *new_text, size_t new_len,
                           pemba_schema_change **changes_out,
                           size_t *nchanges_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, changes_out);
	CORE_REQUIRE(err, nchanges_out);
	*changes_out = NULL;
	*nchanges_out = 0;
	schema *a = NULL, *b = NULL;
	int rc;
	if ((old_text &&
	     ((rc = check_schema_size(old_len, err)) < 0 ||
	      (rc = schema_compile(old_text, old_len, &a, err)) < 0)) ||
	    (new_text &&
	     ((rc = check_schema_size(new_len, err)) < 0 ||
	      (rc = schema_compile(new_text, new_len, &b, err)) < 0))) {
		schema_free(a);
		return rc;
	}
	schema_diff *d = schema_diff_compute(a, b);
	*nchanges_out = core_pack_changes(d, changes_out);
	schema_diff_free(d);
	schema_free(a);
	schema_free(b);
	return PEMBA_OK;
}

int pemba_read_schema(pemba_db *db, pemba_revision at, char **text_out,
                      pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, text_out);
	pemba_revision rev;
	int rc = core_resolve_revision(db, at, &rev, err);
	if (rc < 0)
		return rc;
	const schema *sc;
	rc = core_schema_at(db, rev, &sc, err);
	if (rc < 0)
		return rc;
	if (sc == NULL)
		return error_set(err, PEMBA_ENOTFOUND,
		                 "no schema has been written");
	strbuf sb;
	strbuf_init(&sb);
	schema_print(sc, &sb);
	*text_out = strbuf_detach(&sb, NULL);
	strbuf_free(&sb); /* detach leaves a fresh empty buffer behind */
	return PEMBA_OK;
}

int pemba_check_schema(const char *text, size_t len, char **canonical_out,
                       pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, text);
	if (len > CORE_MAX_SCHEMA_BYTES)
		return error_set(err, PEMBA_ELIMIT,
		                 "schema text is %zu bytes; at most %u are "
		                 "accepted",
		                 len, CORE_MAX_SCHEMA_BYTES);
	schema *sc;
	int rc = schema_compile(text, len, &sc, err);
	if (rc < 0)
		return rc;
	if (canonical_out) {
		strbuf sb;
		strbuf_init(&sb);
		schema_print(sc, &sb);
		*canonical_out = strbuf_detach(&sb, NULL);
		strbuf_free(&sb);
	}
	schema_free(sc);
	return PEMBA_OK;
}
