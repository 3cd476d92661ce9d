#!/usr/bin/env bash
# `pemba datastore check [--fix FILE]` on SQLite: a clean datastore passes,
# planted orphans of six kinds are counted and listed, --fix moves exactly
# them to FILE (also while a server runs) and the file re-imports once the
# schema accepts it; refusals change nothing.  The body is shared with
# test_postgres_datastore_check.sh (datastore_check_body.sh).
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
trap pg_cleanup EXIT
engine=sqlite

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"
# shellcheck source=datastore_check_body.sh
source "$(dirname "$0")/datastore_check_body.sh"
