#!/usr/bin/env bash
# Moving a datastore between the engines with backups, through servers on
# 127.0.0.1: `backup create` from a SQLite-backed server, `backup restore`
# into a PostgreSQL-backed one, and the reverse; the target's
# relationships (export, sorted) and schema equal the source's, caveats,
# contexts and expirations included.  Also a mirror onto PostgreSQL while
# that PostgreSQL restarts: it stops with UNAVAILABLE and, run again,
# loses nothing.  (The mirrors both ways: test_postgres_mirror.sh.)
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
mirror_pid=""
trap '[[ -n "$mirror_pid" ]] && kill -9 "$mirror_pid" 2>/dev/null; pg_cleanup' EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"

pg_require
pg_start

# shellcheck source=pg_move_lib.sh
source "$(dirname "$0")/pg_move_lib.sh"

# ------------------------------------------------ backup SQLite -> PostgreSQL
server lite "sqlite://$work/lite.db"
seed lite
writes lite 1 4 || fail "writes on SQLite" "a write failed"
run backup create "$work/lite.avro" "${lite[@]}"
check "backup create from the SQLite-backed server" exit_is 0
server pga "$(pg_createdb pga)"
run backup restore "$work/lite.avro" "${pga[@]}"
check "backup restore into the PostgreSQL-backed server" exit_is 0
same lite pga "backup SQLite -> PostgreSQL"
run permission check doc:1 view user:anne --caveat-context '{"level":5}' "${pga[@]}"
check "a caveated check on PostgreSQL after the restore" has_out "true"
run permission check doc:3 view user:carl "${pga[@]}"
check "an expiring relationship on PostgreSQL after the restore" has_out "true"

# ------------------------------------------------ backup PostgreSQL -> SQLite
writes pga 7 8 || fail "writes on PostgreSQL" "a write failed"
on pga relationship create 'doc:6#editor@user:dora' >/dev/null 2>&1
run backup create "$work/pg.avro" "${pga[@]}"
check "backup create from the PostgreSQL-backed server" exit_is 0
run backup parse-revision "$work/pg.avro"
check "its token is the PostgreSQL server's" test -n "$(cat "$work/out")"
server lite2 "sqlite://$work/lite2.db"
run backup restore "$work/pg.avro" "${lite2[@]}"
check "backup restore into a SQLite-backed server" exit_is 0
same pga lite2 "backup PostgreSQL -> SQLite"

# mirror_run STATE FROM_PORT TO_PORT WRITES_ON: a mirror with writes on the
# source while it follows Watch, a SIGKILL, a restart, then read-only and
# --until-caught-up.  Sets mid_token (doc:tok viewable) and mid_token2
# (not any more).
# ------------------------- mirror onto PostgreSQL while PostgreSQL restarts
# The mirror stops with UNAVAILABLE (exit 2: it does not retry); run again
# with the same state file it continues, and nothing is lost or doubled.
server lite5 "sqlite://$work/lite5.db"
seed lite5
server pgr "$(pg_createdb pgr)"
m=(mirror --insecure --from-endpoint "127.0.0.1:$lite5_port" --to-endpoint "127.0.0.1:$pgr_port"
	--state-file "$work/restart-state")
"$PEMBA_BINARY" "${m[@]}" 2>"$work/restart.err1" &
mirror_pid=$!
for _ in $(seq 300); do
	grep -q '^phase watch' "$work/restart-state" 2>/dev/null && break
	sleep 0.1
done
writes lite5 1 2
bash "$PG_CLUSTER" stop "$work/pg" >/dev/null
writes lite5 3 4
bash "$PG_CLUSTER" start "$work/pg" >/dev/null || { echo "FAIL cluster did not restart"; exit 1; }
for _ in $(seq 50); do kill -0 "$mirror_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$mirror_pid" 2>/dev/null; then
	ok "the mirror rode out the target's restart"
	kill "$mirror_pid" 2>/dev/null
	wait "$mirror_pid" 2>/dev/null
else
	wait "$mirror_pid"
	status=$?
	cp "$work/restart.err1" "$work/err"
	: >"$work/out"
	check "the mirror stopped with exit 2 and UNAVAILABLE while the target was down" \
		eval '((status == 2)) && has_err "UNAVAILABLE"'
fi
mirror_pid=""
writes lite5 5 6
on lite5 admin read-only on >/dev/null 2>&1
timeout 90 "$PEMBA_BINARY" "${m[@]}" --until-caught-up >"$work/out" 2>"$work/err"
status=$?
check "run again after the restart, --until-caught-up exits 0" exit_is 0
same lite5 pgr "mirror across a restart of the target's PostgreSQL"

echo "$passed passed, $failed failed"
((failed == 0))
