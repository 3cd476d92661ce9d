#!/usr/bin/env bash
# `pemba serve` on PostgreSQL, end to end: a throwaway cluster
# (tests/support/pg_cluster.sh), `datastore migrate status|head|down|up`
# on a postgres:// URI, serve (refusing a migration while it runs), schema
# write, relationship writes, checks, watch; then PostgreSQL restarts under
# the running server: calls fail with UNAVAILABLE while it is down and
# succeed again once it is back, without restarting pemba; and once more
# under a writer loop: every failed write is UNAVAILABLE, writes succeed
# again after the restart, and every acknowledged write is readable.
set -uo pipefail
writer_pids=()

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER=$HERE/../support/pg_cluster.sh
if [[ -z "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" && -z "${PGBIN:-}" ]]; then
	echo "FAIL no PostgreSQL server binaries (install postgresql, or set PGBIN)"
	exit 1
fi

work=$(mktemp -d)
chmod 755 "$work"
server_pid=""
cleanup() {
	touch "$work/stop"
	for p in "${writer_pids[@]}"; do wait "$p" 2>/dev/null; done
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	bash "$CLUSTER" stop "$work/pg" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/client_expect.sh"

admin=$(bash "$CLUSTER" start "$work/pg") || { echo "FAIL cluster did not start"; exit 1; }
# The datastore: a new database next to `postgres`.  (Its own cluster, not
# the suite's shared one: this test stops and restarts PostgreSQL.)
uri=${admin/\/postgres\?//pemba?}
psql -X -q "$admin" -c "CREATE DATABASE pemba" >/dev/null 2>&1 ||
	{ echo "FAIL cannot create the database"; exit 1; }

# --- datastore migrate ---------------------------------------------------------

run datastore migrate status --datastore "$uri"
check "status on an empty database: version 0" has_out "layout version: 0"
run datastore migrate head --datastore "$uri" --yes
check "migrate head succeeds" exit_is 0
check "migrate head reports the newest version" has_out "is now at layout version"
run datastore migrate status --datastore "$uri"
check "status after head: up to date" has_out "up to date."
run datastore migrate down --to 5 --datastore "$uri" --yes
check "migrate down one step" exit_is 0
run datastore migrate up --datastore "$uri" --yes
check "migrate up again" exit_is 0
run datastore migrate status --datastore "$uri"
check "status: up to date again" has_out "up to date."

# --- serve -------------------------------------------------------------------

# GC every second: the lifecycle handle (which holds the lease) then
# notices a PostgreSQL restart within a second and takes the lease again.
"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 --datastore "$uri" \
	--datastore-gc-interval 1s 2>"$work/serve.log" &
server_pid=$!
port=""
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/serve.log" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.1
done
if [[ -z "$port" ]]; then
	echo "FAIL serve did not report its port"
	cat "$work/serve.log"
	exit 1
fi
export PEMBA_ENDPOINT="127.0.0.1:$port"
I=--insecure

run datastore migrate down --to 5 --datastore "$uri" --yes
check "a migration is refused while the server runs" exit_is 1
check "the refusal names the server" has_err "in use by pemba serve (pid $server_pid"

cat >"$work/schema.zed" <<'ZED'
definition user {}
definition document {
	relation viewer: user
	relation editor: user
	permission view = viewer + editor
}
ZED
run schema write $I "$work/schema.zed"
check "schema write" exit_is 0
run schema read $I
check "schema read returns it" has_out "permission view = viewer + editor"
run relationship create $I document:readme viewer user:anne
check "relationship create" exit_is 0
run relationship touch $I document:readme editor user:bob
check "relationship touch" exit_is 0
run permission check $I document:readme view user:anne
check "anne can view" has_out "true"
run permission check $I document:readme view user:carol
check "carol cannot" has_out "false"
run relationship read $I document
check "relationship read lists both" has_out "user:bob"
run relationship create $I document:readme viewer user:anne
check "a duplicate create is refused" exit_is 2

timeout 4 "$PEMBA_BINARY" watch $I >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
sleep 1
run relationship create $I document:plan viewer user:dan
wait "$watch_pid"
check "watch sees a new relationship" grep -q "document:plan" "$work/watch.out"

# --- PostgreSQL restarts under the server ------------------------------------

bash "$CLUSTER" stop "$work/pg" >/dev/null
run permission check $I document:readme view user:anne
check "while PostgreSQL is down: UNAVAILABLE" has_err "UNAVAILABLE"
check "the message says the datastore is unavailable" has_err "datastore unavailable"
run relationship create $I document:readme viewer user:erin
check "writes too" has_err "UNAVAILABLE"
bash "$CLUSTER" start "$work/pg" >/dev/null || { echo "FAIL cluster did not restart"; exit 1; }
ok_after=0
for _ in $(seq 50); do
	run permission check $I document:readme view user:anne
	if ((status == 0)) && has_out "true"; then ok_after=1; break; fi
	sleep 0.2
done
check "after the restart checks succeed again" test "$ok_after" = 1
run relationship create $I document:readme viewer user:erin
check "and writes" exit_is 0
run permission check $I document:readme view user:erin
check "the new relationship is there" has_out "true"
check "the server is still the same process" kill -0 "$server_pid"
# The server takes its lease again by itself (its GC run probes the lease
# session every second).  Watched in PostgreSQL's lock table rather than
# by attempting migrations, which would get in while the lease is gone.
leased=0
for _ in $(seq 100); do
	n=$(psql -X -q -t -A "$uri" -c "SELECT count(*) FROM pemba_users u
		WHERE u.pid = $server_pid AND EXISTS (SELECT 1 FROM pg_locks l
		WHERE l.pid = u.backend_pid AND l.locktype = 'advisory'
		AND l.granted AND l.objid::bigint = 3 AND l.objsubid = 1)" 2>/dev/null)
	[[ "$n" == 1 ]] && { leased=1; break; }
	sleep 0.1
done
check "after the restart the server records its lease again" test "$leased" = 1
refused=0
run datastore migrate down --to 5 --datastore "$uri" --yes
if ((status == 1)) && has_err "in use by pemba serve"; then refused=1; fi
check "after the restart the server holds its lease again" test "$refused" = 1

# --- a restart under load -------------------------------------------------
# A writer loop through the server while PostgreSQL restarts: every write
# is either acknowledged (exit 0 and a ZedToken) or fails with UNAVAILABLE;
# writes are acknowledged again after the restart without restarting
# pemba; and every acknowledged write is there afterwards.
writer_pids=()
# writer W: one `relationship touch` after another until $work/stop
# exists; a line per write in $work/writes.W: "W-I ok TOKEN" or
# "W-I fail exit=STATUS MESSAGE".  Three run at once.
writer() {
	local w=$1 i=0 out
	while [[ ! -e "$work/stop" ]]; do
		i=$((i + 1))
		if out=$("$PEMBA_BINARY" relationship touch $I "document:load$w-$i" viewer "user:w$w-$i" 2>&1); then
			echo "$w-$i ok $out"
		else
			echo "$w-$i fail exit=$? $(echo "$out" | head -n 1)"
		fi
	done >"$work/writes.$w"
}
for w in 1 2 3; do
	writer "$w" &
	writer_pids+=($!)
done
acked() {
	cat "$work"/writes.* 2>/dev/null | grep -c ' ok '
}
for _ in $(seq 100); do (($(acked) >= 10)) && break; sleep 0.1; done
check "the writer's writes are acknowledged before the restart" test "$(acked)" -ge 10
bash "$CLUSTER" stop "$work/pg" >/dev/null
sleep 1.5
bash "$CLUSTER" start "$work/pg" >/dev/null || { echo "FAIL cluster did not restart (load)"; exit 1; }
# Each writer: the writes after its last failure.
for _ in $(seq 150); do
	enough=1
	for w in 1 2 3; do
		n=$(tac "$work/writes.$w" | awk '$2 == "fail" { exit } { n++ } END { print n + 0 }')
		((n >= 5)) || enough=0
	done
	((enough)) && break
	sleep 0.1
done
touch "$work/stop"
for p in "${writer_pids[@]}"; do wait "$p"; done
writer_pids=()
cat "$work"/writes.* >"$work/writes"
total=$(wc -l <"$work/writes")
nfail=$(grep -c ' fail ' "$work/writes")
echo "    writers: $total writes, $nfail failed"
grep ' fail ' "$work/writes" | cut -d' ' -f3- | sed 's/\(UNAVAILABLE: [^:]*\):.*/\1/' | sort | uniq -c | sed 's/^/    /'
check "writes failed while PostgreSQL was down" test "$nfail" -gt 0
check "every failure was UNAVAILABLE (exit 2, pemba: UNAVAILABLE: ...)" \
	test "$(grep ' fail ' "$work/writes" | grep -v -c ' fail exit=2 pemba: UNAVAILABLE: ')" = 0
after_ok=0
for w in 1 2 3; do
	n=$(tac "$work/writes.$w" | awk '$2 == "fail" { exit } { n++ } END { print n + 0 }')
	((n >= 5)) && after_ok=$((after_ok + 1))
done
check "after the restart each writer's writes are acknowledged again (same server)" test "$after_ok" = 3
check "the server is still the same process (load)" kill -0 "$server_pid"
"$PEMBA_BINARY" relationship read $I document --consistency-full >"$work/all.txt" 2>"$work/err"
missing=0
while read -r i _ _; do
	grep -q -F "document:load$i#viewer@user:w$i" "$work/all.txt" ||
		{ missing=$((missing + 1)); echo "    acknowledged write $i is missing"; }
done < <(grep ' ok ' "$work/writes")
check "every acknowledged write is readable ($(acked) of them)" test "$missing" = 0
last_tok=$(grep ' ok ' "$work/writes" | tail -n 1 | cut -d' ' -f3)
n=$(grep ' ok ' "$work/writes" | tail -n 1 | cut -d' ' -f1)
run permission check $I "document:load$n" view "user:w$n" --consistency-at-exact "$last_tok"
check "the last acknowledged token gives its write at_exact_snapshot" has_out "true"

kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=""
run datastore migrate status --datastore "$uri"
check "after the server stopped nobody is listed" exit_is 0

echo "$passed passed, $failed failed"
((failed == 0))
