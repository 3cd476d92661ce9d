/*
 * lookup.h -- a helper shared by the read-side API files of src/core
 * (lookup.c, expand.c, bulk.c).  Not a public header.
 */
#ifndef PEMBA_CORE_LOOKUP_H
#define PEMBA_CORE_LOOKUP_H

#include "core/core.h"

/* Opens a store read transaction, resolves `at` (0 = head) into *rev_out
 * and fetches the compiled schema current at it (*sc_out, NULL when none
 * was written).  On success the caller must end with store_read_end(); on
 * failure nothing is left open. */
int core_begin_read(pemba_db *db, pemba_revision at, pemba_revision *rev_out,
                    const schema **sc_out, pemba_error *err);

#endif
