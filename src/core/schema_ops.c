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
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/error.h"
#include "util/strbuf.h"

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
	*out = NULL;
	if (rev == 0)
		return PEMBA_OK; /* nothing written at all */
	core_schema_entry *e = cache_lookup(db, rev);
	if (e) {
		e->last_used = ++db->use_clock;
		*out = e->sc;
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
	return PEMBA_OK;
}

/* --------------------------------------------------------------- public */

int pemba_write_schema(pemba_db *db, const char *text, size_t len,
                       pemba_revision *rev_out, pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
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

	store_txn *txn;
	pemba_revision rev;
	rc = store_txn_begin(db->st, &txn, &rev, err);
	if (rc < 0)
		goto fail;
	rc = store_txn_write_schema(txn, text, len, err);
	if (rc < 0) {
		store_txn_abort(txn);
		goto fail;
	}
	rc = store_txn_commit(txn, err);
	if (rc < 0)
		goto fail;
	core_schema_add(db, sc, rev);
	if (rev_out)
		*rev_out = rev;
	return PEMBA_OK;
fail:
	schema_free(sc);
	return rc;
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
