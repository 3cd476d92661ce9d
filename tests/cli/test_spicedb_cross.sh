#!/usr/bin/env bash
# SpiceDB as source and target of pemba's backup, restore and mirror,
# through tests/support/spicedb_facade (the real SpiceDB of the npm
# package behind one gRPC endpoint; ExportBulkRelationships and pemba's
# ReadSchemaAt answer UNIMPLEMENTED there, so the clients' fallbacks run):
#  - round trip: pemba A -> backup -> restore into SpiceDB -> backup from
#    SpiceDB -> restore into an empty pemba B; A and B export the same
#    relationships (caveats with context, expirations, usersets,
#    wildcards) and the same schema;
#  - mirror SpiceDB -> pemba while a writer creates, touches and deletes
#    on SpiceDB and changes its schema once; `--until-caught-up`, then
#    both export the same and a ZedToken SpiceDB gave is honoured by the
#    pemba target; mirror pemba -> SpiceDB likewise;
#  - the SpiceDB-as-source backup and the SpiceDB -> pemba mirror again
#    with SpiceDB on PostgreSQL (../shared/spicedb-pg), skipped with a
#    reason when no cluster starts.
# Without libspicedb.so the script fails, or exits 77 (skipped) with
# PEMBA_DIFF_ALLOW_SKIP=1, like the differential tests.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
: "${PEMBA_SPICEDB_FACADE:=$(dirname "$PEMBA_BINARY")/spicedb_facade}"
here=$(cd "$(dirname "$0")" && pwd)
: "${PEMBA_SOURCE_DIR:=$(cd "$here/../.." && pwd)}"

work=$(mktemp -d)
pids=()
pg_dir=""
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	if [[ -n "$pg_dir" ]]; then
		bash "$pg_scripts/stop.sh" "$pg_dir" --remove >/dev/null 2>&1
	fi
	rm -rf "$work"
}
trap cleanup EXIT
touch "$work/out" "$work/err"

# shellcheck source=client_expect.sh
source "$here/client_expect.sh"

# start NAME COMMAND...: starts a server that prints "port N" on stderr;
# sets $port (and appends its pid to pids).  1 when it reports none.
start() {
	local name=$1 _
	shift
	"$@" >"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	port=""
	for _ in $(seq 150); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/$name.err" | head -n 1)
		[[ -n "$port" ]] && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# stop_last: stops the server started last.
stop_last() {
	local p=${pids[-1]}
	kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	unset 'pids[-1]'
}

# start_spicedb NAME [--datastore-uri URI]: a facade with token "k"; sets
# $port.  Exits 77 or 1 when SpiceDB cannot be loaded.
start_spicedb() {
	local name=$1
	shift
	if ! start "$name" "$PEMBA_SPICEDB_FACADE" --grpc-addr 127.0.0.1:0 --token k "$@"; then
		if grep -q "libspicedb.so not found\|dlopen" "$work/$name.err" &&
			[[ "${PEMBA_DIFF_ALLOW_SKIP:-}" == 1 ]]; then
			echo "skipped: $(cat "$work/$name.err")"
			exit 77
		fi
		echo "FAIL spicedb_facade ($name) did not start: $(cat "$work/$name.err")"
		echo "$passed passed, $((failed + 1)) failed"
		exit 1
	fi
}

start pemba "$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 ||
	{
		echo "FAIL serve-testing did not start"
		echo "0 passed, 1 failed"
		exit 1
	}
pemba_port=$port
start_spicedb spicedb1
spicedb1=$port

# on PORT TOKEN ARGS...: pemba ARGS against 127.0.0.1:PORT.
on() {
	local p=$1 t=$2
	shift 2
	"$PEMBA_BINARY" "$@" --insecure --endpoint "127.0.0.1:$p" --token "$t"
}
# normalized: stdin's relationship lines with caveat contexts' keys
# sorted (SpiceDB returns a context, a protobuf Struct, in any key order),
# the lines sorted.
normalized() {
	python3 -c '
import json, sys
dec = json.JSONDecoder()
for line in sys.stdin:
    out, i = "", 0
    while True:
        j = line.find(":{", i)
        if j < 0:
            out += line[i:]
            break
        obj, end = dec.raw_decode(line, j + 1)
        out += line[i:j + 1] + json.dumps(obj, sort_keys=True, separators=(",", ":"))
        i = end
    sys.stdout.write(out)
' | sort
}
# exports_equal NAME PORT1 TOKEN1 PORT2 TOKEN2: the same relationships
# (normalized exports equal).
exports_equal() {
	on "$2" "$3" relationship export 2>"$work/err" | normalized >"$work/x1.txt"
	on "$4" "$5" relationship export 2>>"$work/err" | normalized >"$work/x2.txt"
	if [[ -s "$work/x1.txt" ]] && cmp -s "$work/x1.txt" "$work/x2.txt"; then
		ok "$1"
	else
		diff "$work/x1.txt" "$work/x2.txt" | head -20 >"$work/out"
		fail "$1" "exports differ ($(wc -l <"$work/x1.txt") / $(wc -l <"$work/x2.txt") lines)"
	fi
}

cat >"$work/schema.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int) {
	level >= min
}

definition group {
	relation member: user | user with expiration
}

definition doc {
	relation viewer: user | user with has_level | user with expiration | group#member | user:*
	permission view = viewer
}
EOF
{
	echo 'doc:1#viewer@user:anne[has_level:{"min":3}]'
	echo 'doc:2#viewer@user:bob[has_level]'
	echo 'doc:3#viewer@user:carl[expiration:2099-01-02T03:04:05Z]'
	echo 'doc:4#viewer@group:eng#member'
	echo 'doc:5#viewer@user:*'
	echo 'group:eng#member@user:dana[expiration:2098-07-08T09:10:11.5Z]'
	echo 'doc:6#viewer@user:erin[has_level:{"min":2,"level":1}]'
	for i in $(seq 1 1200); do echo "doc:s$i#viewer@user:u$i"; done
} >"$work/seed.txt"

# ------------------------------------------------------ round trip
on "$pemba_port" a schema write "$work/schema.zed" >/dev/null 2>"$work/err" &&
	on "$pemba_port" a relationship import "$work/seed.txt" >/dev/null 2>>"$work/err" ||
	{
		echo "FAIL seeding pemba A: $(cat "$work/err")"
		echo "$passed passed, $((failed + 1)) failed"
		exit 1
	}
run backup create "$work/a.backup" --insecure --endpoint "127.0.0.1:$pemba_port" --token a
check "backup create from pemba A" exit_is 0
run backup restore "$work/a.backup" --insecure --endpoint "127.0.0.1:$spicedb1" --token k
check "backup restore into SpiceDB" exit_is 0
run backup create "$work/s.backup" --insecure --endpoint "127.0.0.1:$spicedb1" --token k
if ((status == 0)) && has_err "1207 relationships"; then
	ok "backup create from SpiceDB (ReadRelationships fallback)"
else
	fail "backup create from SpiceDB (ReadRelationships fallback)" "exit $status"
fi
run backup restore "$work/s.backup" --insecure --endpoint "127.0.0.1:$pemba_port" --token b
check "backup restore of SpiceDB's backup into empty pemba B" exit_is 0
exports_equal "pemba A and B export the same relationships" "$pemba_port" a "$pemba_port" b
if [[ "$(on "$pemba_port" a schema read 2>&1)" == "$(on "$pemba_port" b schema read 2>&1)" ]]; then
	ok "pemba A and B have the same schema"
else
	fail "pemba A and B have the same schema" "schema read differs"
fi
on "$spicedb1" k schema read >"$work/spicedb.zed" 2>"$work/err"
run schema diff "$work/spicedb.zed" --insecure --endpoint "127.0.0.1:$pemba_port" --token b
if ((status == 0)) && [[ ! -s "$work/out" ]]; then
	ok "SpiceDB's schema is B's (schema diff prints nothing)"
else
	fail "SpiceDB's schema is B's (schema diff prints nothing)" "exit $status"
fi
cp "$work/a.backup" "$work/again.backup"
run backup restore "$work/again.backup" --insecure --endpoint "127.0.0.1:$spicedb1" --token k
if ((status == 2)) && has_err "ALREADY_EXISTS"; then
	ok "restore into SpiceDB again conflicts (ALREADY_EXISTS)"
else
	fail "restore into SpiceDB again conflicts (ALREADY_EXISTS)" "exit $status"
fi
run backup restore "$work/again.backup" --resume --conflict-strategy touch --insecure --endpoint "127.0.0.1:$spicedb1" --token k
check "restore into SpiceDB with --resume --conflict-strategy touch" exit_is 0

# ------------------------------------------------------ writers
cat >"$work/schema2.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int) {
	level >= min
}

definition group {
	relation member: user | user with expiration
}

definition doc {
	relation viewer: user | user with has_level | user with expiration | group#member | user:*
	relation editor: user | user with expiration
	permission view = viewer + editor
}
EOF

# writes PORT TOKEN FROM TO: creates, touches (with a caveat), deletes;
# halfway the schema gains doc#editor, which later writes use.
writes() {
	local p=$1 t=$2 i
	for ((i = $3; i <= $4; i++)); do
		on "$p" "$t" relationship create "doc:w$i#viewer@user:x$i" >/dev/null || return 1
		on "$p" "$t" relationship touch "doc:w$i#viewer@user:x$i[has_level:{\"min\":$i}]" >/dev/null || return 1
		if ((i % 3 == 0)); then
			on "$p" "$t" relationship delete "doc:s$i#viewer@user:u$i" >/dev/null || return 1
		fi
		if ((i % 5 == 0)); then
			on "$p" "$t" relationship delete "doc:w$i#viewer@user:x$i" >/dev/null || return 1
		fi
		if ((i == ($3 + $4) / 2)); then
			on "$p" "$t" schema write "$work/schema2.zed" >/dev/null || return 1
		fi
		if ((i > ($3 + $4) / 2)); then
			on "$p" "$t" relationship create "doc:w$i#editor@user:y$i[expiration:2099-05-06T07:08:09Z]" >/dev/null || return 1
		fi
	done
}

# mirror_case NAME FROM_PORT FROM_TOKEN TO_PORT TO_TOKEN ROUNDS: mirrors
# while the writer writes ROUNDS rounds to the source, then
# --until-caught-up.
mirror_case() {
	local name=$1 fp=$2 ft=$3 tp=$4 tt=$5 rounds=$6
	local args=(mirror --insecure --from-endpoint "127.0.0.1:$fp" --from-token "$ft"
		--to-endpoint "127.0.0.1:$tp" --to-token "$tt" --state-file "$work/$name.state")
	"$PEMBA_BINARY" "${args[@]}" 2>"$work/$name.1.err" &
	local mp=$! _
	for _ in $(seq 200); do
		grep -q '^phase watch' "$work/$name.state" 2>/dev/null && break
		sleep 0.1
	done
	if writes "$fp" "$ft" 1 "$rounds"; then
		ok "$name: the writer wrote (creates, touches, deletes, a schema change)"
	else
		fail "$name: the writer wrote (creates, touches, deletes, a schema change)" "a write failed"
	fi
	kill "$mp" 2>/dev/null
	wait "$mp" 2>/dev/null
	# A revision written while no mirror runs, then the cut-over.
	on "$fp" "$ft" relationship delete "doc:3#viewer@user:carl" >/dev/null
	# A ZedToken the source hands out, for the target to honour.
	local tok
	tok=$(on "$fp" "$ft" relationship create "doc:tok-$name#viewer@user:tok" 2>/dev/null)
	timeout 60 "$PEMBA_BINARY" "${args[@]}" --until-caught-up >"$work/out" 2>"$work/err"
	status=$?
	if ((status == 0)) && has_err "caught up at"; then
		ok "$name: --until-caught-up exits 0"
	else
		cat "$work/$name.1.err" >>"$work/err"
		fail "$name: --until-caught-up exits 0" "exit $status"
	fi
	exports_equal "$name: source and target export the same relationships" "$fp" "$ft" "$tp" "$tt"
	if [[ "$tp" == "$pemba_port" ]]; then
		local answer
		answer=$(on "$tp" "$tt" permission check "doc:tok-$name" view user:tok \
			--consistency-at-least "$tok" 2>&1)
		if [[ -n "$tok" && "$answer" == true ]]; then
			ok "$name: the source's ZedToken is honoured on the target"
		else
			fail "$name: the source's ZedToken is honoured on the target" "token '$tok': $answer"
		fi
	fi
	on "$fp" "$ft" schema read >"$work/$name.zed" 2>"$work/err"
	if [[ "$tp" == "$pemba_port" ]]; then
		run schema diff "$work/$name.zed" --insecure --endpoint "127.0.0.1:$tp" --token "$tt"
	else
		on "$tp" "$tt" schema read >"$work/$name.target.zed" 2>"$work/err"
		run schema diff "$work/$name.target.zed" --insecure --endpoint "127.0.0.1:$fp" --token "$ft"
	fi
	if ((status == 0)) && [[ ! -s "$work/out" ]] && grep -q "relation editor" "$work/$name.zed"; then
		ok "$name: the target has the source's schema (changed once)"
	else
		fail "$name: the target has the source's schema (changed once)" "exit $status"
	fi
}

# SpiceDB (holding the round trip's data) -> empty pemba C.
mirror_case "spicedb-to-pemba" "$spicedb1" k "$pemba_port" c 8
stop_last # spicedb1

# pemba D (seeded) -> an empty SpiceDB.
on "$pemba_port" d schema write "$work/schema.zed" >/dev/null 2>&1
on "$pemba_port" d relationship import "$work/seed.txt" >/dev/null 2>&1
start_spicedb spicedb2
mirror_case "pemba-to-spicedb" "$pemba_port" d "$port" k 8
stop_last # spicedb2

# ------------------------------------------------------ PostgreSQL
pg_scripts=""
for d in "$PEMBA_SOURCE_DIR/../shared/spicedb-pg" /work/shared/spicedb-pg; do
	[[ -x "$d/setup.sh" || -f "$d/setup.sh" ]] && pg_scripts=$d && break
done
pg_skip=""
if [[ -z "$pg_scripts" ]]; then
	pg_skip="../shared/spicedb-pg not found"
elif ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	pg_skip="PostgreSQL is not installed (initdb)"
else
	chmod o+x "$work"
	pg_dir="$work/pg"
	pg_port=$((20000 + RANDOM % 20000))
	if uri=$(timeout 60 bash "$pg_scripts/setup.sh" "$pg_dir" "$pg_port" 2>"$work/pg.err" | tail -n 1) &&
		[[ "$uri" == postgres://* ]]; then
		:
	else
		pg_skip="the cluster did not start: $(tail -n 3 "$work/pg.err" | tr '\n' ' ')"
	fi
fi
if [[ -n "$pg_skip" ]]; then
	echo "skip SpiceDB on PostgreSQL: $pg_skip"
else
	start_spicedb spicedb_pg --datastore-uri "$uri"
	spicedb_pg=$port
	run backup restore "$work/a.backup" --insecure --endpoint "127.0.0.1:$spicedb_pg" --token k
	check "postgres: backup restore into SpiceDB" exit_is 0
	run backup create "$work/pg.backup" --insecure --endpoint "127.0.0.1:$spicedb_pg" --token k
	check "postgres: backup create from SpiceDB" exit_is 0
	run backup restore "$work/pg.backup" --insecure --endpoint "127.0.0.1:$pemba_port" --token e
	check "postgres: restore SpiceDB's backup into empty pemba E" exit_is 0
	exports_equal "postgres: pemba A and E export the same relationships" "$pemba_port" a "$pemba_port" e
	# Caught up by PostgreSQL snapshots (src/api/spicedb_token.h).
	mirror_case "postgres-spicedb-to-pemba" "$spicedb_pg" k "$pemba_port" f 4
	stop_last
fi

echo "$passed passed, $failed failed"
((failed == 0))
