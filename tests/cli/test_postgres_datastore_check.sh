#!/usr/bin/env bash
# `pemba datastore check [--fix FILE]` on PostgreSQL (a throwaway cluster
# of the test's own): the same body as test_datastore_check.sh
# (datastore_check_body.sh), orphans planted with psql.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
trap pg_cleanup EXIT
engine=postgres

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"

pg_require
pg_start

# shellcheck source=datastore_check_body.sh
source "$(dirname "$0")/datastore_check_body.sh"
