/*
 * relationships.c -- writing, deleting and reading relationships, and
 * validating them against the schema.
 *
 * A write runs in one store transaction: the schema current in that
 * transaction (the newest) is loaded, preconditions are evaluated, every
 * relationship is validated, and only then are the updates applied.  Any
 * failure aborts the transaction, so a refused batch changes nothing and
 * consumes no revision.
 *
 * Validation happens in two passes.  Syntax (identifier rules, lengths,
 * duplicates, unsupported caveats) needs no schema and runs
 * before the transaction starts; the schema pass (definitions, relations,
 * allowed subject types) runs inside it.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel/cel.h"
#include "core/core.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/xalloc.h"

/* ------------------------------------------------------------- helpers */

bool core_is_empty(const char *s)
{
	return s == NULL || s[0] == '\0';
}

const char *core_subject_relation(const char *s)
{
	if (s == NULL || strcmp(s, "...") == 0)
		return "";
	return s;
}

/* An id for messages: ids may be 1024 bytes and messages hold 1024, so
 * long ones are shortened (the length is reported separately). */
static const char *short_id(arena *a, const char *id)
{
	if (id == NULL)
		return "";
	size_t n = strlen(id);
	if (n <= 64)
		return id;
	return arena_printf(a, "%.48s...(%zu bytes)", id, n);
}

/* `type:id#rel@type:id[#rel]` for messages; NULL fields print as "". */
const char *core_rel_text(arena *a, const pemba_relationship *r)
{
	const char *sr = core_subject_relation(r->subject_relation);
#define S(x) ((x) ? (x) : "")
	return arena_printf(a, "%s:%s#%s@%s:%s%s%s", S(r->resource_type),
	                    short_id(a, r->resource_id), S(r->relation),
	                    S(r->subject_type), short_id(a, r->subject_id),
	                    sr[0] ? "#" : "", sr);
#undef S
}

/* Describes a filter by the fields it sets, for messages. */
static const char *filter_text(arena *a, const pemba_filter *f)
{
	char buf[PEMBA_MAX_OBJECT_ID * 2 + 512];
	size_t n = 0;
	buf[0] = '\0';
#define FIELD(name, v)                                                         \
	if ((v) != NULL && n < sizeof(buf))                                    \
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s=%s",     \
		                      n ? " " : "", name, (v));
	FIELD("resource_type", f->resource_type);
	FIELD("resource_id",
	      f->resource_id ? short_id(a, f->resource_id) : NULL);
	FIELD("relation", f->relation);
	FIELD("subject_type", f->subject_type);
	FIELD("subject_id", f->subject_id ? short_id(a, f->subject_id) : NULL);
	if (f->subject_relation)
		FIELD("subject_relation",
		      f->subject_relation[0] ? f->subject_relation : "...");
#undef FIELD
	return arena_printf(a, "{%s}", buf);
}

void core_to_store_rel(const pemba_relationship *r, store_rel *out)
{
	memset(out, 0, sizeof(*out));
	out->resource_type = r->resource_type;
	out->resource_id = r->resource_id;
	out->relation = r->relation;
	out->subject_type = r->subject_type;
	out->subject_id = r->subject_id;
	out->subject_relation = core_subject_relation(r->subject_relation);
	out->caveat_name = r->caveat_name ? r->caveat_name : "";
	out->caveat_context = r->caveat_context ? r->caveat_context : "";
	out->expiration_ms = r->expiration_ms;
}

void core_from_store_rel(const store_rel *r, pemba_relationship *out)
{
	out->resource_type = r->resource_type;
	out->resource_id = r->resource_id;
	out->relation = r->relation;
	out->subject_type = r->subject_type;
	out->subject_id = r->subject_id;
	out->subject_relation =
	    core_is_empty(r->subject_relation) ? NULL : r->subject_relation;
	out->caveat_name =
	    core_is_empty(r->caveat_name) ? NULL : r->caveat_name;
	out->caveat_context =
	    core_is_empty(r->caveat_context) ? NULL : r->caveat_context;
	out->expiration_ms = r->expiration_ms;
}

/* ---------------------------------------------------- identifier rules */

static bool valid_type(const char *s)
{
	return !core_is_empty(s) && schema_valid_type_name(s, strlen(s));
}

static bool valid_relation(const char *s)
{
	return !core_is_empty(s) && schema_valid_relation_name(s, strlen(s));
}

/* Object ids: the regex, plus the byte limit stated on its own so the
 * message says which rule was broken. */
static int check_object_id(arena *a, const pemba_relationship *r,
                           const char *what, const char *id, pemba_error *err)
{
	if (core_is_empty(id))
		return error_set(err, PEMBA_EINVAL,
		                 "%s id is required in relationship `%s`", what,
		                 core_rel_text(a, r));
	size_t n = strlen(id);
	if (n > PEMBA_MAX_OBJECT_ID)
		return error_set(err, PEMBA_EINVAL,
		                 "%s id is %zu bytes long, more than the limit "
		                 "of %d, in relationship `%s`",
		                 what, n, PEMBA_MAX_OBJECT_ID,
		                 core_rel_text(a, r));
	if (!schema_valid_object_id(id, n))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid %s id `%s` in relationship `%s`",
		                 what, id, core_rel_text(a, r));
	return PEMBA_OK;
}

/* SpiceDB's rule for a relationship's caveat name: a letter, digit or `_`,
 * then up to 127 of letters, digits and `/_|-`. */
static bool valid_caveat_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		bool ok = (ch >= 'a' && ch <= 'z') ||
		          (ch >= 'A' && ch <= 'Z') ||
		          (ch >= '0' && ch <= '9') || ch == '_' ||
		          (i > 0 && (ch == '/' || ch == '|' || ch == '-'));
		if (!ok)
			return false;
	}
	return true;
}

/* Schema-free checks of one relationship.  Messages name it with
 * core_rel_text(), built only on the error path. */
int core_check_rel_syntax(arena *a, const pemba_relationship *r,
                          pemba_error *err)
{
	int rc;
	if (!valid_type(r->resource_type))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid resource type `%s` in relationship "
		                 "`%s`",
		                 r->resource_type ? r->resource_type : "",
		                 core_rel_text(a, r));
	if ((rc = check_object_id(a, r, "resource", r->resource_id, err)) < 0)
		return rc;
	if (strcmp(r->resource_id, "*") == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "a resource id cannot be the wildcard `*` in "
		                 "relationship `%s`",
		                 core_rel_text(a, r));
	if (!valid_relation(r->relation))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid relation `%s` in relationship `%s`",
		                 r->relation ? r->relation : "",
		                 core_rel_text(a, r));
	if (!valid_type(r->subject_type))
		return error_set(err, PEMBA_EINVAL,
		                 "invalid subject type `%s` in relationship "
		                 "`%s`",
		                 r->subject_type ? r->subject_type : "",
		                 core_rel_text(a, r));
	if ((rc = check_object_id(a, r, "subject", r->subject_id, err)) < 0)
		return rc;
	const char *sr = core_subject_relation(r->subject_relation);
	if (sr[0] && !valid_relation(sr))
		return error_set(
		    err, PEMBA_EINVAL,
		    "invalid subject relation `%s` in relationship "
		    "`%s`",
		    sr, core_rel_text(a, r));
	if (sr[0] && strcmp(r->subject_id, "*") == 0)
		return error_set(err, PEMBA_EINVAL,
		                 "a wildcard subject cannot have a relation in "
		                 "relationship `%s`",
		                 core_rel_text(a, r));
	if (core_is_empty(r->caveat_name) && !core_is_empty(r->caveat_context))
		return error_set(err, PEMBA_EINVAL,
		                 "a caveat context needs a caveat name "
		                 "(relationship `%s`)",
		                 core_rel_text(a, r));
	if (!core_is_empty(r->caveat_name) &&
	    !valid_caveat_name(r->caveat_name))
		return error_set(
		    err, PEMBA_EINVAL,
		    "invalid caveat name `%s` in relationship `%s`",
		    r->caveat_name, core_rel_text(a, r));
	/* An expiration is checked against the schema (check_rel_schema);
	 * one already in the past is stored and simply never seen. */
	return PEMBA_OK;
}

/* How an allowed type is written in the schema: "user", "user:*",
 * "group#member", with " with cav" / " with expiration" traits. */
static const char *relationship_source(arena *a, const pemba_relationship *r)
{
	const char *sr = core_subject_relation(r->subject_relation);
	bool wildcard = strcmp(r->subject_id, "*") == 0;
	bool caveated = !core_is_empty(r->caveat_name);
	return arena_printf(a, "%s%s%s%s%s%s%s%s", r->subject_type,
	                    wildcard ? ":*" : "", sr[0] ? "#" : "", sr,
	                    caveated ? " with " : "",
	                    caveated ? r->caveat_name : "",
	                    caveated && r->expiration_ms ? " and expiration"
	                    : r->expiration_ms           ? " with expiration"
	                                                 : "",
	                    "");
}

/* A caveated relationship's context must suit its caveat: a JSON object
 * whose values convert to the types of the parameters they name. */
static int check_rel_context(const schema *sc, const pemba_relationship *r,
                             arena *a, core_rel_problem *kind,
                             pemba_error *err)
{
	if (core_is_empty(r->caveat_name))
		return PEMBA_OK;
	const schema_caveat *cav = schema_find_caveat(sc, r->caveat_name);
	if (cav == NULL || cav->program == NULL) {
		*kind = CORE_REL_CAVEAT_UNKNOWN;
		return error_set(err, PEMBA_EPRECONDITION,
		                 "caveat `%s` not found (relationship `%s`)",
		                 r->caveat_name, core_rel_text(a, r));
	}
	if (core_is_empty(r->caveat_context))
		return PEMBA_OK;
	*kind = CORE_REL_CAVEAT_CONTEXT;
	/* SpiceDB refuses a relationship context naming a parameter the
	 * caveat does not have. */
	json_t *obj = json_loads(r->caveat_context, 0, NULL);
	if (json_is_object(obj)) {
		const char *key;
		json_t *value;
		json_object_foreach(obj, key, value)
		{
			size_t i = 0;
			while (i < cav->nparams &&
			       strcmp(cav->params[i].name, key) != 0)
				i++;
			if (i == cav->nparams) {
				error_set(err, PEMBA_EINVAL,
				          "unknown parameter `%s` for caveat "
				          "`%s` (relationship `%s`)",
				          key, cav->name, core_rel_text(a, r));
				json_decref(obj);
				return PEMBA_EINVAL;
			}
		}
	}
	json_decref(obj);
	pemba_error why;
	int rc = cel_validate_context(cav->program, r->caveat_context, &why);
	if (rc < 0)
		error_set(err, rc, "%s (relationship `%s`)", why.message,
		          core_rel_text(a, r));
	else
		*kind = CORE_REL_OK;
	return rc;
}

/* The schema checks of one relationship (core_check_rel_schema), also
 * saying which rule failed in *kind (CORE_REL_OK on success): the write
 * path and the integrity check (integrity.c) share this one function, so
 * what a check calls an orphan is exactly what a write refuses. */
int core_classify_rel_schema(arena *a, const schema *sc,
                             const pemba_relationship *r,
                             bool check_subject_type, core_rel_problem *kind,
                             pemba_error *err)
{
	core_rel_problem ignored;
	if (kind == NULL)
		kind = &ignored;
	*kind = CORE_REL_OK;
	const schema_definition *def =
	    sc ? schema_find_definition(sc, r->resource_type) : NULL;
	if (def == NULL) {
		*kind = CORE_REL_UNKNOWN_RESOURCE_TYPE;
		return error_set(
		    err, PEMBA_EPRECONDITION,
		    "object definition `%s` not found (relationship "
		    "`%s`)",
		    r->resource_type, core_rel_text(a, r));
	}
	const schema_relation *rel = schema_find_relation(def, r->relation);
	if (rel == NULL) {
		*kind = CORE_REL_UNKNOWN_RELATION;
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s` (relationship `%s`)",
		                 r->relation, r->resource_type,
		                 core_rel_text(a, r));
	}
	if (rel->is_permission) {
		*kind = CORE_REL_PERMISSION;
		return error_set(
		    err, PEMBA_EINVAL,
		    "cannot write a relationship to permission `%s` "
		    "under definition `%s` (relationship `%s`)",
		    r->relation, r->resource_type, core_rel_text(a, r));
	}
	const schema_definition *sdef =
	    schema_find_definition(sc, r->subject_type);
	if (sdef == NULL) {
		*kind = CORE_REL_UNKNOWN_SUBJECT_TYPE;
		return error_set(
		    err, PEMBA_EPRECONDITION,
		    "object definition `%s` not found (relationship "
		    "`%s`)",
		    r->subject_type, core_rel_text(a, r));
	}
	const char *sr = core_subject_relation(r->subject_relation);
	if (sr[0] && schema_find_relation(sdef, sr) == NULL) {
		*kind = CORE_REL_UNKNOWN_SUBJECT_RELATION;
		return error_set(err, PEMBA_EPRECONDITION,
		                 "relation/permission `%s` not found under "
		                 "definition `%s` (relationship `%s`)",
		                 sr, r->subject_type, core_rel_text(a, r));
	}
	if (!check_subject_type)
		return PEMBA_OK;

	bool wildcard = strcmp(r->subject_id, "*") == 0;
	const char *caveat = r->caveat_name ? r->caveat_name : "";
	bool expiring = r->expiration_ms != 0;
	/* The traits must match exactly, as in SpiceDB: `user with
	 * expiration` does not accept a relationship without expiration,
	 * nor `user` one with it. */
	bool needs_expiration = false, subject_seen = false,
	     caveat_seen = false;
	for (size_t i = 0; i < rel->ntypes; i++) {
		const schema_allowed_type *t = &rel->types[i];
		if (strcmp(t->type, r->subject_type) != 0 ||
		    t->wildcard != wildcard ||
		    strcmp(t->relation ? t->relation : "", sr) != 0)
			continue;
		subject_seen = true;
		if (strcmp(t->caveat ? t->caveat : "", caveat) != 0)
			continue;
		caveat_seen = true;
		if (t->expiration != expiring) {
			needs_expiration |= t->expiration;
			continue;
		}
		return check_rel_context(sc, r, a, kind, err);
	}
	if (!subject_seen)
		*kind = CORE_REL_SUBJECT_NOT_ALLOWED;
	else if (!caveat_seen)
		*kind = caveat[0] && schema_find_caveat(sc, caveat) == NULL
		            ? CORE_REL_CAVEAT_UNKNOWN
		            : CORE_REL_CAVEAT_NOT_ALLOWED;
	else
		*kind = expiring ? CORE_REL_EXPIRATION_NOT_ALLOWED
		                 : CORE_REL_EXPIRATION_REQUIRED;
	const char *source = relationship_source(a, r);
	return error_set(err, PEMBA_EINVAL,
	                 "subjects of type `%s` are not allowed on relation "
	                 "`%s#%s`%s%s%s (relationship `%s`)",
	                 source, r->resource_type, r->relation,
	                 needs_expiration ? "; did you mean `" : "",
	                 needs_expiration
	                     ? arena_printf(a, "%s with expiration", source)
	                     : "",
	                 needs_expiration ? "`?" : "", core_rel_text(a, r));
}

/* Checks one relationship against the schema.  check_subject_type: false
 * for DELETE, where a relationship the schema would not allow cannot
 * exist anyway and deleting it is a harmless no-op. */
int core_check_rel_schema(arena *a, const schema *sc,
                          const pemba_relationship *r, bool check_subject_type,
                          pemba_error *err)
{
	return core_classify_rel_schema(a, sc, r, check_subject_type, NULL,
	                                err);
}

/* ------------------------------------------------------------- filters */

int core_validate_filter(const schema *sc, const pemba_filter *f,
                         const char *what, bool require_resource_type,
                         pemba_error *err)
{
	const schema_definition *def = NULL, *sdef = NULL;

	if (f->resource_type == NULL && require_resource_type)
		return error_set(err, PEMBA_EINVAL,
		                 "%s: a resource type is required", what);
	if (f->resource_type == NULL && f->subject_type == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "%s: a resource type or a subject type is "
		                 "required",
		                 what);
	if (f->subject_type == NULL &&
	    (f->subject_id != NULL || f->subject_relation != NULL))
		return error_set(err, PEMBA_EINVAL,
		                 "%s: a subject id or relation needs a subject "
		                 "type",
		                 what);
	if (f->resource_type) {
		if (!valid_type(f->resource_type))
			return error_set(err, PEMBA_EINVAL,
			                 "%s: invalid resource type `%s`", what,
			                 f->resource_type);
		def = sc ? schema_find_definition(sc, f->resource_type) : NULL;
		if (def == NULL)
			return error_set(err, PEMBA_EPRECONDITION,
			                 "%s: object definition `%s` not found",
			                 what, f->resource_type);
	}
	if (f->resource_id) {
		size_t n = strlen(f->resource_id);
		if (n == 0 || n > PEMBA_MAX_OBJECT_ID ||
		    !schema_valid_object_id(f->resource_id, n))
			return error_set(err, PEMBA_EINVAL,
			                 "%s: invalid resource id `%s`", what,
			                 f->resource_id);
	}
	if (f->relation) {
		if (!valid_relation(f->relation))
			return error_set(err, PEMBA_EINVAL,
			                 "%s: invalid relation `%s`", what,
			                 f->relation);
		if (def && schema_find_relation(def, f->relation) == NULL)
			return error_set(
			    err, PEMBA_EPRECONDITION,
			    "%s: relation/permission `%s` not found "
			    "under definition `%s`",
			    what, f->relation, f->resource_type);
	}
	if (f->subject_type) {
		if (!valid_type(f->subject_type))
			return error_set(err, PEMBA_EINVAL,
			                 "%s: invalid subject type `%s`", what,
			                 f->subject_type);
		sdef = sc ? schema_find_definition(sc, f->subject_type) : NULL;
		if (sdef == NULL)
			return error_set(err, PEMBA_EPRECONDITION,
			                 "%s: object definition `%s` not found",
			                 what, f->subject_type);
	}
	if (f->subject_id) {
		size_t n = strlen(f->subject_id);
		if (n == 0 || n > PEMBA_MAX_OBJECT_ID ||
		    !schema_valid_object_id(f->subject_id, n))
			return error_set(err, PEMBA_EINVAL,
			                 "%s: invalid subject id `%s`", what,
			                 f->subject_id);
	}
	if (f->subject_relation) {
		const char *sr = core_subject_relation(f->subject_relation);
		if (sr[0] && !valid_relation(sr))
			return error_set(err, PEMBA_EINVAL,
			                 "%s: invalid subject relation `%s`",
			                 what, sr);
		if (sr[0] && schema_find_relation(sdef, sr) == NULL)
			return error_set(
			    err, PEMBA_EPRECONDITION,
			    "%s: relation/permission `%s` not found "
			    "under definition `%s`",
			    what, sr, f->subject_type);
	}
	return PEMBA_OK;
}

void core_store_filter(const pemba_filter *f, store_filter *out)
{
	out->resource_type = f->resource_type;
	out->resource_id = f->resource_id;
	out->relation = f->relation;
	out->subject_type = f->subject_type;
	out->subject_id = f->subject_id;
	out->subject_relation = f->subject_relation
	                            ? core_subject_relation(f->subject_relation)
	                            : NULL;
}

/* -------------------------------------------------------- preconditions */

static int check_preconditions_syntax(const pemba_precondition *pre, size_t n,
                                      pemba_error *err)
{
	if (n > PEMBA_MAX_PRECONDITIONS)
		return error_set(err, PEMBA_ELIMIT,
		                 "too many preconditions: %zu (at most %d per "
		                 "request)",
		                 n, PEMBA_MAX_PRECONDITIONS);
	if (n > 0 && pre == NULL)
		return error_set(err, PEMBA_EINVAL,
		                 "preconditions array is NULL");
	for (size_t i = 0; i < n; i++)
		if (pre[i].op != PEMBA_PRECONDITION_MUST_MATCH &&
		    pre[i].op != PEMBA_PRECONDITION_MUST_NOT_MATCH)
			return error_set(
			    err, PEMBA_EINVAL,
			    "precondition %zu: unknown operation %d", i + 1,
			    (int)pre[i].op);
	return PEMBA_OK;
}

/* Validates and evaluates preconditions inside transaction t. */
static int run_preconditions(arena *a, store_txn *t, const schema *sc,
                             const pemba_precondition *pre, size_t n,
                             pemba_error *err)
{
	for (size_t i = 0; i < n; i++) {
		const char *what = arena_printf(a, "precondition %zu", i + 1);
		int rc =
		    core_validate_filter(sc, &pre[i].filter, what, true, err);
		if (rc < 0)
			return rc;
		store_filter f;
		core_store_filter(&pre[i].filter, &f);
		store_iter *it;
		rc = store_txn_query(t, &f, 1, &it, err);
		if (rc < 0)
			return rc;
		const store_rel *row;
		rc = store_iter_next(it, &row, err);
		store_iter_close(it);
		if (rc < 0)
			return rc;
		bool found = rc == 1;
		if (pre[i].op == PEMBA_PRECONDITION_MUST_MATCH && !found)
			return error_set(err, PEMBA_EPRECONDITION,
			                 "unable to satisfy write precondition "
			                 "%zu: no relationship matches %s "
			                 "(MUST_MATCH)",
			                 i + 1, filter_text(a, &pre[i].filter));
		if (pre[i].op == PEMBA_PRECONDITION_MUST_NOT_MATCH && found)
			return error_set(err, PEMBA_EPRECONDITION,
			                 "unable to satisfy write precondition "
			                 "%zu: a relationship matches %s "
			                 "(MUST_NOT_MATCH)",
			                 i + 1, filter_text(a, &pre[i].filter));
	}
	return PEMBA_OK;
}

/* ----------------------------------------------------- duplicate check */

/* Key of a relationship, with NUL separators so fields cannot run into
 * each other; returns its length. */
static char *rel_key(arena *a, const pemba_relationship *r, size_t *len)
{
	const char *f[6] = {
	    r->resource_type, r->resource_id,
	    r->relation,      r->subject_type,
	    r->subject_id,    core_subject_relation(r->subject_relation)};
	size_t n = 0;
	for (int i = 0; i < 6; i++)
		n += strlen(f[i]) + 1;
	char *k = arena_alloc(a, n), *p = k;
	for (int i = 0; i < 6; i++) {
		size_t l = strlen(f[i]) + 1;
		memcpy(p, f[i], l);
		p += l;
	}
	*len = n;
	return k;
}

typedef struct key_slot {
	const char *key;
	size_t len;
} key_slot;

/* Refuses a batch naming one relationship twice (SpiceDB does too: the
 * order of a CREATE and a DELETE of the same relationship would be
 * ambiguous). */
static int check_duplicates(arena *a, const pemba_update *u, size_t n,
                            pemba_error *err)
{
	size_t cap = 16;
	while (cap < n * 2)
		cap *= 2;
	key_slot *slots = arena_alloc(a, cap * sizeof(*slots));
	for (size_t i = 0; i < n; i++) {
		size_t len;
		const char *k = rel_key(a, &u[i].rel, &len);
		size_t h = (size_t)hash_bytes(k, len, 0) & (cap - 1);
		while (slots[h].key) {
			if (slots[h].len == len &&
			    memcmp(slots[h].key, k, len) == 0)
				return error_set(
				    err, PEMBA_EINVAL,
				    "found more than one update for "
				    "relationship `%s` in this request "
				    "(update %zu); a relationship may "
				    "appear only once per write",
				    core_rel_text(a, &u[i].rel), i + 1);
			h = (h + 1) & (cap - 1);
		}
		slots[h].key = k;
		slots[h].len = len;
	}
	return PEMBA_OK;
}

/* --------------------------------------------------------------- writes */

static int apply_update(arena *a, store_txn *t, const pemba_update *u,
                        pemba_error *err)
{
	store_rel sr;
	core_to_store_rel(&u->rel, &sr);
	int rc, deleted;
	switch (u->op) {
	case PEMBA_OP_CREATE:
		rc = store_txn_create(t, &sr, err);
		if (rc == PEMBA_EEXISTS)
			return error_set(
			    err, PEMBA_EEXISTS,
			    "could not CREATE relationship `%s`, as "
			    "it already exists; use TOUCH to write "
			    "it regardless",
			    core_rel_text(a, &u->rel));
		return rc;
	case PEMBA_OP_TOUCH:
		return store_txn_touch(t, &sr, err);
	case PEMBA_OP_DELETE:
		return store_txn_delete(t, &sr, &deleted, err);
	}
	return error_set(err, PEMBA_EINVAL, "unknown operation %d", (int)u->op);
}

int pemba_write_relationships(pemba_db *db, const pemba_update *updates,
                              size_t nupdates,
                              const pemba_precondition *preconditions,
                              size_t npreconditions, pemba_revision *rev_out,
                              pemba_error *err)
{
	return pemba_write_relationships_ex(db, updates, nupdates,
	                                    preconditions, npreconditions, NULL,
	                                    rev_out, err);
}

int pemba_write_relationships_ex(pemba_db *db, const pemba_update *updates,
                                 size_t nupdates,
                                 const pemba_precondition *preconditions,
                                 size_t npreconditions,
                                 const pemba_write_options *opts,
                                 pemba_revision *rev_out, pemba_error *err)
{
	const char *metadata = opts ? opts->metadata : NULL;
	if (metadata && strlen(metadata) > CORE_MAX_METADATA_BYTES) {
		error_clear(err);
		return error_set(
		    err, PEMBA_ELIMIT,
		    "transaction metadata is %zu bytes; at most %d "
		    "are accepted",
		    strlen(metadata), CORE_MAX_METADATA_BYTES);
	}
	error_clear(err);
	if (db == NULL)
		return error_set(err, PEMBA_EINVAL, "missing database handle");
	if (nupdates > PEMBA_MAX_UPDATES)
		return error_set(err, PEMBA_ELIMIT,
		                 "too many updates: %zu (at most %d per "
		                 "request)",
		                 nupdates, PEMBA_MAX_UPDATES);
	if (nupdates > 0 && updates == NULL)
		return error_set(err, PEMBA_EINVAL, "updates array is NULL");
	int rc = check_preconditions_syntax(preconditions, npreconditions, err);
	if (rc < 0)
		return rc;

	arena *a = db->write_arena;
	arena_reset(a);
	for (size_t i = 0; i < nupdates; i++) {
		const pemba_update *u = &updates[i];
		if (u->op != PEMBA_OP_CREATE && u->op != PEMBA_OP_TOUCH &&
		    u->op != PEMBA_OP_DELETE)
			return error_set(err, PEMBA_EINVAL,
			                 "update %zu (`%s`): unknown operation "
			                 "%d",
			                 i + 1, core_rel_text(a, &u->rel),
			                 (int)u->op);
		rc = core_check_rel_syntax(a, &u->rel, err);
		if (rc < 0)
			return rc;
	}
	rc = check_duplicates(a, updates, nupdates, err);
	if (rc < 0)
		return rc;

	store_txn *t;
	pemba_revision rev;
	core_write_guard guard;
	rc = store_txn_begin(db->st, &t, &rev, err);
	if (rc < 0)
		return rc;
	/* Read-only mode and deprecations, read in this transaction. */
	rc = core_write_guard_begin(db, &guard, err);
	if (rc < 0)
		goto abort;
	/* Writers are serialized, so the schema current in this
	 * transaction is the one at the head it started from. */
	const schema *sc;
	rc = core_schema_at(db, rev - 1, &sc, err);
	if (rc < 0)
		goto abort;
	if (!core_is_empty(metadata)) {
		rc = store_txn_set_metadata(t, metadata, err);
		if (rc < 0)
			goto abort;
	}
	if (opts && opts->source_position) {
		rc = core_record_source_position(t, opts->source_position, err);
		if (rc < 0)
			goto abort;
	}
	rc = run_preconditions(a, t, sc, preconditions, npreconditions, err);
	if (rc < 0)
		goto abort;
	for (size_t i = 0; i < nupdates; i++) {
		rc = core_check_rel_schema(a, sc, &updates[i].rel,
		                           updates[i].op != PEMBA_OP_DELETE,
		                           err);
		/* Deleting from a deprecated relation is always allowed. */
		if (rc >= 0 && updates[i].op != PEMBA_OP_DELETE)
			rc = core_write_guard_check(&guard, &updates[i].rel,
			                            err);
		if (rc < 0)
			goto abort;
	}
	for (size_t i = 0; i < nupdates; i++) {
		rc = apply_update(a, t, &updates[i], err);
		if (rc < 0)
			goto abort;
	}
	rc = store_txn_commit(t, err);
	if (rc >= 0)
		core_write_guard_report(&guard, opts);
	core_write_guard_end(&guard);
	if (rc < 0)
		return rc;
	core_schema_note_revision(db, rev);
	if (rev_out)
		*rev_out = rev;
	return PEMBA_OK;
abort:
	store_txn_abort(t);
	core_write_guard_end(&guard);
	return rc;
}

int pemba_delete_relationships(pemba_db *db, const pemba_filter *filter,
                               const pemba_precondition *preconditions,
                               size_t npreconditions, size_t limit,
                               int allow_partial, pemba_revision *rev_out,
                               size_t *deleted_out, int *more_out,
                               pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, filter);
	int rc = check_preconditions_syntax(preconditions, npreconditions, err);
	if (rc < 0)
		return rc;
	arena *a = db->write_arena;
	arena_reset(a);

	store_txn *t;
	pemba_revision rev;
	rc = store_txn_begin(db->st, &t, &rev, err);
	if (rc < 0)
		return rc;
	const schema *sc;
	size_t deleted = 0;
	int more = 0;
	/* Deletes are allowed on deprecated relations, not when read-only. */
	rc = core_check_writable(db, err);
	if (rc < 0)
		goto abort;
	rc = core_schema_at(db, rev - 1, &sc, err);
	if (rc < 0)
		goto abort;
	rc = core_validate_filter(sc, filter, "delete filter", true, err);
	if (rc < 0)
		goto abort;
	rc = run_preconditions(a, t, sc, preconditions, npreconditions, err);
	if (rc < 0)
		goto abort;
	store_filter f;
	core_store_filter(filter, &f);
	rc = store_txn_delete_filter(t, &f, limit, &deleted, &more, err);
	if (rc < 0)
		goto abort;
	if (limit > 0 && more && !allow_partial) {
		rc =
		    error_set(err, PEMBA_ELIMIT,
		              "more than %zu relationships match %s and "
		              "partial deletion was not requested; nothing was "
		              "deleted",
		              limit, filter_text(a, filter));
		goto abort;
	}
	rc = store_txn_commit(t, err);
	if (rc < 0)
		return rc;
	core_schema_note_revision(db, rev);
	if (rev_out)
		*rev_out = rev;
	if (deleted_out)
		*deleted_out = deleted;
	if (more_out)
		*more_out = more;
	return PEMBA_OK;
abort:
	store_txn_abort(t);
	return rc;
}

/* ---------------------------------------------------------------- reads */

int pemba_read_relationships(pemba_db *db, pemba_revision at,
                             const pemba_filter *filter,
                             const pemba_relationship *after, size_t limit,
                             pemba_relationship_fn fn, void *ctx,
                             pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, filter);
	CORE_REQUIRE(err, fn);
	pemba_revision rev;
	int rc = core_resolve_revision(db, at, &rev, err);
	if (rc < 0)
		return rc;
	const schema *sc;
	rc = core_schema_at(db, rev, &sc, err);
	if (rc < 0)
		return rc;
	rc = core_validate_filter(sc, filter, "filter", false, err);
	if (rc < 0)
		return rc;

	store_rel after_key;
	if (after) {
		if (core_is_empty(after->resource_type) ||
		    core_is_empty(after->resource_id) ||
		    core_is_empty(after->relation) ||
		    core_is_empty(after->subject_type) ||
		    core_is_empty(after->subject_id))
			return error_set(err, PEMBA_EINVAL,
			                 "the `after` relationship must be "
			                 "complete");
		core_to_store_rel(after, &after_key);
	}
	store_filter f;
	core_store_filter(filter, &f);
	store_iter *it;
	rc = store_query(db->st, rev, &f, after ? &after_key : NULL, limit, &it,
	                 err);
	if (rc < 0)
		return rc;
	const store_rel *row;
	while ((rc = store_iter_next(it, &row, err)) == 1) {
		pemba_relationship r;
		core_from_store_rel(row, &r);
		if (fn(ctx, &r) != 0) {
			rc = 0;
			break;
		}
	}
	store_iter_close(it);
	return rc < 0 ? rc : PEMBA_OK;
}
