#!/usr/bin/env bash
# `pemba verify` between pemba on SQLite and pemba on PostgreSQL (servers
# on 127.0.0.1, the cluster of the test's own): the two engines export in
# different orders, caveat contexts, expirations, usersets and a wildcard
# included (pg_move_lib.sh's seed).  Equal data -> exit 0 with every
# sampled check agreeing, either engine as A; one relationship deleted on
# PostgreSQL -> exit 1 naming it.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
trap pg_cleanup EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"

pg_require
pg_start

# shellcheck source=pg_move_lib.sh
source "$(dirname "$0")/pg_move_lib.sh"

server lite "sqlite://$work/lite.db"
seed lite
server pg "$(pg_createdb verify)"
seed pg

# verify PORT_A PORT_B ARGS...
verify() {
	run verify --insecure --from-endpoint "127.0.0.1:$1" --to-endpoint "127.0.0.1:$2" "${@:3}"
}
verify "$lite_port" "$pg_port" --checks 300
if ((status == 0)) && has_out "verify: equal" && has_out "schema: equal" &&
	has_out "in both 605, only in A 0, only in B 0" && has_out "lookups: 10 of 10 agree" &&
	grep -qE '^checks: ([0-9]+) of \1 agree$' "$work/out"; then
	ok "SQLite (A) and PostgreSQL (B), equal: exit 0"
else
	fail "SQLite (A) and PostgreSQL (B), equal: exit 0" "exit $status"
fi
verify "$pg_port" "$lite_port" --checks 300 --seed 9
if ((status == 0)) && has_out "verify: equal" && has_out "in both 605, only in A 0, only in B 0"; then
	ok "PostgreSQL (A) and SQLite (B), equal: exit 0"
else
	fail "PostgreSQL (A) and SQLite (B), equal: exit 0" "exit $status"
fi
on pg relationship delete "doc:s77#viewer@user:u77" >/dev/null 2>"$work/err" ||
	{ echo "FAIL delete: $(cat "$work/err")"; exit 1; }
verify "$lite_port" "$pg_port" --checks 10
if ((status == 1)) && has_out "only in A: doc:s77#viewer@user:u77" &&
	has_out "in both 604, only in A 1, only in B 0" && has_out "verify: DIFFERENT"; then
	ok "one relationship deleted on PostgreSQL: exit 1 naming it"
else
	fail "one relationship deleted on PostgreSQL: exit 1 naming it" "exit $status"
fi

echo "$passed passed, $failed failed"
((failed == 0))
