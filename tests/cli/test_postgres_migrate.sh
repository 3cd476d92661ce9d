#!/usr/bin/env bash
# `pemba datastore migrate` on PostgreSQL with more than one process:
# two `migrate head` at once on a fresh database both succeed (the second
# waits for the first) and leave the newest version; a migration
# SIGKILLed in the middle of a step (the test hook
# PEMBA_TEST_MIGRATE_STEP_DELAY_MS holds each step's transaction open)
# leaves the previous version and none of the step's changes, and a rerun
# ends at head with `migrate status` right (also for `down`); while a
# migration runs, `status` names it and `serve` is refused; a migration
# is refused while a server is attached.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
trap 'pg_cleanup' EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"

pg_require
pg_start
head=$("$PEMBA_BINARY" datastore migrate status --datastore sqlite::memory: |
	sed -n 's/.*newest known: \([0-9]*\).*/\1/p')
[[ -n "$head" ]] || { echo "FAIL cannot tell the newest layout version"; exit 1; }

# version_of URI: the layout version `migrate status` reports.
version_of() {
	"$PEMBA_BINARY" datastore migrate status --datastore "$1" 2>/dev/null |
		sed -n 's/^layout version: \([0-9]*\).*/\1/p'
}
# sql URI QUERY: one value.
sql() { psql -X -q -t -A "$1" -c "$2" 2>/dev/null; }

# migrate_bg NAME DELAY_MS ARGS...: `datastore migrate ARGS` in the
# background with the step delay; output in $work/NAME.{out,err}; sets
# $bg_pid.
migrate_bg() {
	local name=$1 delay=$2
	shift 2
	PEMBA_TEST_MIGRATE_STEP_DELAY_MS=$delay "$PEMBA_BINARY" datastore migrate "$@" \
		>"$work/$name.out" 2>"$work/$name.err" </dev/null &
	bg_pid=$!
	pg_pids+=("$bg_pid")
}
# wait_version URI MIN: until the version is at least MIN (20 s).
wait_version() {
	local v
	for _ in $(seq 200); do
		v=$(version_of "$1")
		[[ -n "$v" ]] && ((v >= $2)) && return 0
		sleep 0.1
	done
	return 1
}

# ------------------------------------------------- two migrations at once
uri=$(pg_createdb race) || exit 1
# The first holds each step for 1 s; the second starts while it runs.
migrate_bg first 1000 head --yes --datastore "$uri"
first=$bg_pid
wait_version "$uri" 1
migrate_bg second 0 head --yes --datastore "$uri"
second=$bg_pid
wait "$first"
s1=$?
wait "$second"
s2=$?
cp "$work/second.out" "$work/out"
cp "$work/second.err" "$work/err"
check "two migrate head at once: the first succeeds" test "$s1" = 0
check "the second succeeds too" test "$s2" = 0
check "the second said it waits for the other migration" has_err "waiting for it to finish"
check "the second found nothing left to do" has_out "nothing to do"
check "the first applied every step" grep -q "now at layout version $head" "$work/first.out"
run datastore migrate status --datastore "$uri"
check "status: newest version after both" has_out "layout version: $head"
check "status: up to date" has_out "up to date."
check "the version table has one row" test "$(sql "$uri" 'SELECT count(*) FROM pemba_schema_version')" = 1

# Without the delay, several rounds of two (and three) at once on fresh
# databases: every one exits 0, the version is head.
bad=0
for r in 1 2 3 4; do
	u=$(pg_createdb "race$r") || exit 1
	pids=()
	for k in 1 2 3; do
		((r % 2 == 0 && k == 3)) && continue
		"$PEMBA_BINARY" datastore migrate head --yes --datastore "$u" \
			>"$work/r$r.$k.out" 2>"$work/r$r.$k.err" </dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p" || { bad=$((bad + 1)); sed 's/^/    /' "$work"/r$r.*.err; }
	done
	[[ "$(version_of "$u")" == "$head" ]] || { bad=$((bad + 1)); echo "    round $r: version $(version_of "$u")"; }
done
check "4 rounds of 2 or 3 migrations at once on fresh databases: all succeed, at head" test "$bad" = 0

# ------------------------------------------- SIGKILL in the middle of a step
uri=$(pg_createdb killed) || exit 1
migrate_bg kill1 3000 head --yes --datastore "$uri"
k=$bg_pid
wait_version "$uri" 2
# Step 3 (change_feed) now runs (for 3 s): its index exists inside the
# transaction.  Frozen there (SIGSTOP) so that a slow machine cannot let
# it commit while the status below runs; its session stays open.
kill -STOP "$k"
run datastore migrate status --datastore "$uri"
check "the migration got to version 2" has_out "layout version: 2"
check "status names the running migration" has_out "in use by: pemba migrate, pid $k"
kill -9 "$k"
wait "$k" 2>/dev/null
check "the migration was killed in step 3 (still at version 2)" test "$(version_of "$uri")" = 2
check "none of step 3 is left (no index relationships_created)" \
	test "$(sql "$uri" "SELECT count(*) FROM pg_indexes WHERE indexname = 'relationships_created'")" = 0
check "none of step 3 is left (no column revisions.metadata)" \
	test "$(sql "$uri" "SELECT count(*) FROM information_schema.columns WHERE table_name = 'revisions' AND column_name = 'metadata'")" = 0
run datastore migrate status --datastore "$uri"
check "status after the kill: version 2, pending steps, nobody attached" \
	eval 'has_out "layout version: 2" && has_out "pending" && ! has_out "in use by"'
run datastore migrate head --yes --datastore "$uri"
check "the rerun succeeds" exit_is 0
check "the rerun starts at step 3" has_out "Applying migration 3"
check "the rerun ends at head" has_out "now at layout version $head"
run datastore migrate status --datastore "$uri"
check "status after the rerun: up to date" eval 'has_out "layout version: $head" && has_out "up to date."'
check "step 3's index is there once" \
	test "$(sql "$uri" "SELECT count(*) FROM pg_indexes WHERE indexname = 'relationships_created'")" = 1

# The same for down: killed in the middle of reverting 6 -> 5, after a
# server tried to start meanwhile.
migrate_bg kill2 4000 down --to 4 --yes --datastore "$uri"
k=$bg_pid
for _ in $(seq 100); do
	grep -q "Reverting migration 6" "$work/kill2.out" && break
	sleep 0.1
done
kill -STOP "$k" # held in its first step, however slow the machine
"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 --datastore "$uri" >"$work/out" 2>"$work/err" &
sp=$!
pg_pids+=("$sp")
for _ in $(seq 30); do kill -0 "$sp" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$sp" 2>/dev/null; then
	status=0
	pg_stop_pid "$sp"
else
	wait "$sp"
	status=$?
fi
check "serve is refused while a migration runs" test "$status" != 0
check "the refusal names the migration" has_err "is locked by pemba migrate (pid $k"
check "the down is still in its first step" test "$(version_of "$uri")" = "$head"
kill -9 "$k"
wait "$k" 2>/dev/null
check "a down killed in its first step leaves the version" test "$(version_of "$uri")" = "$head"
check "and its table (source_positions)" \
	test "$(sql "$uri" "SELECT count(*) FROM information_schema.tables WHERE table_name = 'source_positions'")" = 1
run datastore migrate down --to 4 --yes --datastore "$uri"
check "the rerun of down succeeds" exit_is 0
check "status: version 4" test "$(version_of "$uri")" = 4
run datastore migrate head --yes --datastore "$uri"
check "head again" exit_is 0

# The datastore works: a server on it writes and checks.
pg_serve srv "$uri"
srv_pid=$serve_pid
conn=(--insecure --endpoint "127.0.0.1:$serve_port")
printf 'definition user {}\ndefinition doc {\n\trelation viewer: user\n\tpermission view = viewer\n}\n' >"$work/s.zed"
run schema write "$work/s.zed" "${conn[@]}"
check "after the kills a server on the datastore writes a schema" exit_is 0
run relationship create doc:1 viewer user:anne "${conn[@]}"
run permission check doc:1 view user:anne "${conn[@]}"
check "and answers a check" has_out "true"

# ------------------------------------------- refused while a server runs
run datastore migrate down --yes --datastore "$uri"
check "migrate down is refused while a server is attached" exit_is 1
check "the refusal names the server and does not wait" has_err "in use by pemba serve (pid $srv_pid"
check "status: still at head" test "$(version_of "$uri")" = "$head"
run datastore migrate status --datastore "$uri"
check "status lists the server" has_out "in use by: pemba serve, pid $srv_pid"
pg_stop_pid "$srv_pid"
run datastore migrate down --yes --datastore "$uri"
check "once the server stopped the migration runs" exit_is 0
run datastore migrate up --yes --datastore "$uri"
check "and back up" exit_is 0

echo "$passed passed, $failed failed"
((failed == 0))
