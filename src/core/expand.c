/*
 * expand.c -- pemba_expand / pemba_expand_free.
 *
 * The tree lives in an arena of its own; the root node handed to the
 * caller is the first member of a block that also remembers that arena,
 * so pemba_expand_free() can release the whole tree at once.
 */
#include <stddef.h>

#include "core/lookup.h"
#include "engine/engine.h"
#include "util/error.h"

typedef struct expand_tree {
	pemba_expand_node root; /* first: the caller's pointer */
	arena *arena;
} expand_tree;

int pemba_expand(pemba_db *db, pemba_revision at, const char *resource_type,
                 const char *resource_id, const char *permission,
                 pemba_expand_node **tree_out, pemba_revision *at_out,
                 pemba_error *err)
{
	error_clear(err);
	CORE_REQUIRE(err, db);
	CORE_REQUIRE(err, tree_out);
	*tree_out = NULL;
	pemba_revision rev;
	const schema *sc;
	int rc = core_begin_read(db, at, &rev, &sc, err);
	if (rc < 0)
		return rc;
	arena *out = arena_create(0);
	pemba_expand_node *root = NULL;
	rc = engine_expand(out, db->check_arena, db->st, sc, rev, resource_type,
	                   resource_id, permission, &root, err);
	store_read_end(db->st);
	if (rc < 0) {
		arena_destroy(out);
		return rc;
	}
	expand_tree *t = arena_alloc(out, sizeof(*t));
	t->root = *root;
	t->arena = out;
	*tree_out = &t->root;
	if (at_out)
		*at_out = rev;
	return PEMBA_OK;
}

void pemba_expand_free(pemba_expand_node *tree)
{
	if (tree == NULL)
		return;
	expand_tree *t = (expand_tree *)tree;
	arena_destroy(t->arena);
}
