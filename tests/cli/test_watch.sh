#!/usr/bin/env bash
# `pemba watch` flags against a real `pemba serve` (GC window 1 s): resuming
# with --revision from every token of a history prints each remaining change
# once, in order; --checkpoints (one per revision, then about one a second
# while idle), --schema-updates, --filter (with TYPE:PREFIX*), --json; a
# collected --revision is exit 2 with OUT_OF_RANGE naming the window.  And
# `schema read --consistency-at-exact` returning the schema of an older
# token.  Every watch runs under `timeout`, so the test is bounded.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
server_pid=""
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/client_expect.sh"

# check NAME COMMAND...: ok when COMMAND succeeds.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else fail "$name" "failed: $*"; fi
}

# start_server NAME ARGS...: pemba serve on datastore $work/NAME.db;
# sets PEMBA_ENDPOINT and server_pid.
start_server() {
	local name=$1
	shift
	"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 \
		--datastore "sqlite://$work/$name.db" "$@" 2>"$work/$name.log" &
	server_pid=$!
	local port=""
	for _ in $(seq 100); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/$name.log" | head -n 1)
		[[ -n "$port" ]] && break
		sleep 0.1
	done
	if [[ -z "$port" ]]; then
		echo "FAIL serve did not report its port"
		cat "$work/$name.log"
		exit 1
	fi
	export PEMBA_ENDPOINT="127.0.0.1:$port"
}
stop_server() {
	kill "$server_pid" 2>/dev/null
	wait "$server_pid" 2>/dev/null
	server_pid=""
}
start_server w
I=--insecure

# watch_for SECONDS ARGS...: pemba watch ARGS for SECONDS, output in
# $work/out (exit 124 from timeout is the normal end).
watch_for() {
	local secs=$1
	shift
	timeout "$secs" "$PEMBA_BINARY" watch $I "$@" >"$work/out" 2>"$work/err"
	status=$?
}

# --- help -------------------------------------------------------------------

run watch --help
for flag in --revision --object-types --filter --checkpoints --schema-updates --json "Exit status" "GC window"; do
	check "watch --help explains $flag" grep -q -- "$flag" "$work/out"
done
run schema read --help
check "schema read --help lists --consistency-at-exact" grep -q -- "--consistency-at-exact TOKEN" "$work/out"
run schema diff --help
check "schema diff --help names an option that exists" grep -q -- "schema read --consistency-at-exact\`" "$work/out"
expect_usage_error() {
	local name=$1 text=$2
	shift 3
	run "$@"
	if ((status == 2)) && grep -q -- "$text" "$work/err"; then ok "$name"; else fail "$name" "exit $status"; fi
}
expect_usage_error "a malformed --filter is a usage error" "malformed --filter" -- watch $I --filter "doc:#x"
expect_usage_error "--filter with --object-types is a usage error" "not both" -- watch $I --filter doc --object-types doc

# --- a history ----------------------------------------------------------------

cat >"$work/v1.zed" <<'EOF'
definition user {}

definition doc {
	relation viewer: user
}
EOF
cat >"$work/v2.zed" <<'EOF'
definition user {}

definition doc {
	relation viewer: user
	relation owner: user
}
EOF
tok=()
changed=()
tok+=("$("$PEMBA_BINARY" schema write $I "$work/v1.zed")")
changed+=("")
"$PEMBA_BINARY" schema read $I >"$work/v1.canonical"
tok+=("$("$PEMBA_BINARY" relationship touch $I doc:team-1 viewer user:a)")
changed+=("TOUCH doc:team-1#viewer@user:a")
tok+=("$("$PEMBA_BINARY" relationship touch $I doc:team-1 viewer user:a)") # no change
changed+=("")
tok+=("$("$PEMBA_BINARY" relationship touch $I doc:other viewer user:b)")
changed+=("TOUCH doc:other#viewer@user:b")
tok+=("$("$PEMBA_BINARY" schema write $I "$work/v2.zed")")
changed+=("")
"$PEMBA_BINARY" schema read $I >"$work/v2.canonical"
tok+=("$("$PEMBA_BINARY" relationship delete $I doc:team-1 viewer user:a)")
changed+=("DELETE doc:team-1#viewer@user:a")

# From every token, exactly the changes after it, once, in order.
for i in "${!tok[@]}"; do
	want=""
	for ((j = i + 1; j < ${#tok[@]}; j++)); do
		[[ -n "${changed[j]}" ]] && want+="${changed[j]}"$'\n'
	done
	watch_for 1.5 --revision "${tok[i]}"
	got="$(cat "$work/out")"
	if ((status == 124)) && [[ "$got" == "${want%$'\n'}" ]]; then
		ok "watch --revision token $i prints exactly the later changes"
	else
		fail "watch --revision token $i prints exactly the later changes" "exit $status, want: ${want}"
	fi
done

# --checkpoints: a CHECKPOINT after every revision, then idle ones.
watch_for 3.5 --revision "${tok[0]}" --checkpoints
n=${#tok[@]}
check "--checkpoints: one per revision, the first after the first change" \
	test "$(sed -n 2p "$work/out")" = "CHECKPOINT ${tok[1]}"
check "--checkpoints: every revision has one" \
	test "$(grep -c "^CHECKPOINT " "$work/out")" -ge $((n - 1 + 2))
check "--checkpoints: idle checkpoints name the head" \
	test "$(tail -n 1 "$work/out")" = "CHECKPOINT ${tok[n - 1]}"

# --schema-updates.
watch_for 1.5 --revision "${tok[3]}" --schema-updates
check "--schema-updates prints the schema write" \
	test "$(cat "$work/out")" = $'SCHEMA updated\nDELETE doc:team-1#viewer@user:a'

# --filter with a prefix, and subject filters.
watch_for 1.5 --revision "${tok[0]}" --filter 'doc:team-*'
check "--filter TYPE:PREFIX* keeps matching ids only" \
	test "$(cat "$work/out")" = $'TOUCH doc:team-1#viewer@user:a\nDELETE doc:team-1#viewer@user:a'
watch_for 1.5 --revision "${tok[0]}" --filter 'doc#viewer@user:b'
check "--filter with a subject" test "$(cat "$work/out")" = "TOUCH doc:other#viewer@user:b"

# --json: one line per response, checkpoints flagged.
watch_for 1.5 --revision "${tok[4]}" --json --checkpoints
check "--json --checkpoints: a change, then its checkpoint" \
	grep -q '"isCheckpoint":true' "$work/out"
check "--json: the DELETE with its changesThrough" \
	grep -q "\"OPERATION_DELETE\".*\"changesThrough\":{\"token\":\"${tok[5]}\"}" "$work/out"

# --- schema read at an older token --------------------------------------------

run schema read $I --consistency-at-exact "${tok[3]}"
check "schema read --consistency-at-exact returns the schema of that token" \
	test "$(cat "$work/out")" = "$(cat "$work/v1.canonical")"
run schema read $I --consistency-full
check "schema read --consistency-full returns the newest schema" \
	test "$(cat "$work/out")" = "$(cat "$work/v2.canonical")"
run schema read $I
check "schema read without consistency returns the newest schema" \
	test "$(cat "$work/out")" = "$(cat "$work/v2.canonical")"

# --- a revision older than the GC window ---------------------------------------

stop_server
start_server g --datastore-gc-interval 200ms --datastore-gc-window 1s
old=$("$PEMBA_BINARY" schema write $I "$work/v1.zed")
"$PEMBA_BINARY" relationship touch $I doc:early viewer user:c >/dev/null
sleep 1.3
"$PEMBA_BINARY" relationship touch $I doc:late viewer user:c >/dev/null
sleep 0.6
watch_for 5 --revision "$old"
if ((status == 2)) && grep -q "^pemba: OUT_OF_RANGE: .*GC window of 1 s" "$work/err"; then
	ok "a collected --revision is exit 2, OUT_OF_RANGE naming the window"
else
	fail "a collected --revision is exit 2, OUT_OF_RANGE naming the window" "exit $status"
fi
run schema read $I --consistency-at-exact "$old"
check "schema read at a collected token is OUT_OF_RANGE" grep -q "^pemba: OUT_OF_RANGE: " "$work/err"

echo "$passed passed, $failed failed"
((failed == 0))
