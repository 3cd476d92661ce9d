#!/usr/bin/env bash
# `pemba admin read-only on|off|status` and `pemba relation
# deprecate|undeprecate|deprecations` against a real `pemba serve` over a
# file datastore: output, exit statuses, error lines, --help; writes are
# UNAVAILABLE in read-only mode (stored, and forced by `serve --read-only`)
# while reads work, the stored setting survives a restart, rejected
# deprecations are FAILED_PRECONDITION and warned ones are logged by the
# server, one line per write.
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

# --- help ---------------------------------------------------------------

for words in "admin" "admin read-only" "relation" "relation deprecate" \
	"relation undeprecate" "relation deprecations"; do
	# shellcheck disable=SC2086
	run $words --help
	if ((status == 0)) && grep -q "^usage: pemba $words" "$work/out"; then
		ok "$words --help"
	else
		fail "$words --help" "exit $status or no usage line"
	fi
done
run help admin
if ((status == 0)) && grep -q "^usage: pemba admin" "$work/out"; then
	ok "help admin"
else
	fail "help admin" "exit $status"
fi
run --help
if grep -q "^  admin " "$work/out" && grep -q "^  relation " "$work/out"; then
	ok "the command list names admin and relation"
else
	fail "the command list names admin and relation" "missing"
fi
run serve --help
if grep -q -- "--read-only" "$work/out" && grep -q "pemba admin" "$work/out"; then
	ok "serve --help explains --read-only"
else
	fail "serve --help explains --read-only" "missing"
fi
expect_usage_error "admin read-only needs on|off|status" "expected on, off or status" -- admin read-only --insecure sideways
expect_usage_error "admin read-only without an argument" "missing arguments" -- admin read-only --insecure
expect_usage_error "admin without a subcommand" "usage: pemba admin" -- admin
expect_usage_error "unknown admin subcommand" "unknown admin subcommand 'frob'" -- admin frob
expect_usage_error "unknown relation subcommand" "unknown relation subcommand 'frob'" -- relation frob
expect_usage_error "deprecate needs TYPE#RELATION" "expected TYPE#RELATION" -- relation deprecate --insecure document
expect_usage_error "deprecate with a bad mode" "--mode must be warn or reject" -- relation deprecate --insecure document#viewer --mode loud
expect_usage_error "undeprecate needs TYPE#RELATION" "expected TYPE#RELATION" -- relation undeprecate --insecure '#viewer'

# --- the server -----------------------------------------------------------

key=admin-test-key
db="sqlite://$work/p.db"

# start_server [EXTRA FLAGS...]: pemba serve on an ephemeral port; sets
# $port and PEMBA_ENDPOINT.
start_server() {
	: >"$work/server.err"
	"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 --datastore "$db" \
		--preshared-key "$key" "$@" >"$work/server.out" 2>"$work/server.err" &
	server_pid=$!
	port=""
	for _ in $(seq 100); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" | head -n 1)
		[[ -n "$port" ]] && break
		sleep 0.1
	done
	if [[ -z "$port" ]]; then
		echo "FAIL pemba serve did not report its port"
		cat "$work/server.err"
		exit 1
	fi
	export PEMBA_ENDPOINT="127.0.0.1:$port"
}

stop_server() {
	kill "$server_pid" 2>/dev/null
	wait "$server_pid" 2>/dev/null
	server_pid=""
}

export PEMBA_TOKEN=$key
c=--insecure

cat >"$work/schema.zed" <<'EOF'
definition user {}
definition document {
	relation viewer: user
	relation editor: user
	permission view = viewer + editor
}
EOF

start_server
run schema write $c "$work/schema.zed"
((status == 0)) && ok "schema written" || fail "schema written" "exit $status"
run relationship create $c document:readme viewer user:anne
((status == 0)) && ok "relationship written" || fail "relationship written" "exit $status"

# --- read-only mode ---------------------------------------------------------

expect "status starts off" 0 "read-only: off" -- admin read-only status $c
expect "on" 0 "read-only: on" -- admin read-only on $c
expect "status after on" 0 "read-only: on" -- admin read-only status $c
expect_error "a write is UNAVAILABLE" "pemba: UNAVAILABLE: the datastore is in read-only mode" -- \
	relationship create $c document:readme viewer user:bob
if grep -q -F 'pemba admin read-only off' "$work/err"; then
	ok "the error says how to lift it"
else
	fail "the error says how to lift it" "missing"
fi
expect_error "a delete is UNAVAILABLE" "pemba: UNAVAILABLE:" -- \
	relationship delete $c document:readme viewer user:anne
expect_error "a schema write is UNAVAILABLE" "pemba: UNAVAILABLE: the datastore is in read-only mode" -- \
	schema write $c "$work/schema.zed"
expect "reads keep working" 0 "true" -- permission check $c document:readme view user:anne
expect "nothing was written" 1 "false" -- permission check $c document:readme view user:bob
run admin read-only status $c --json
if grep -q '"readOnly":true' "$work/out"; then
	ok "status --json"
else
	fail "status --json" "no readOnly:true"
fi

# The setting is stored in the datastore: it survives a restart.
stop_server
start_server
expect "still on after a restart" 0 "read-only: on" -- admin read-only status $c
expect_error "still refused after a restart" "pemba: UNAVAILABLE:" -- \
	relationship touch $c document:readme viewer user:bob
expect "off" 0 "read-only: off" -- admin read-only off $c
run relationship touch $c document:readme viewer user:bob
((status == 0)) && ok "writes work again" || fail "writes work again" "exit $status"
stop_server

# `serve --read-only` keeps writes off whatever the stored setting.
start_server --read-only
if grep -q "read-only" "$work/server.err"; then
	ok "serve --read-only says so when it starts"
else
	fail "serve --read-only says so when it starts" "$(cat "$work/server.err")"
fi
expect_error "forced: a write is UNAVAILABLE" "pemba: UNAVAILABLE: service read-only" -- \
	relationship touch $c document:readme viewer user:carl
expect "forced: status shows it" 0 "read-only: off
forced by the server: it was started with --read-only and refuses writes whatever this setting says" -- \
	admin read-only status $c
expect "forced: the toggle still works" 0 "read-only: on
forced by the server: it was started with --read-only and refuses writes whatever this setting says" -- \
	admin read-only on $c
run admin read-only off $c
expect_error "forced: off does not lift it" "pemba: UNAVAILABLE: service read-only" -- \
	relationship touch $c document:readme viewer user:carl
expect "forced: reads work" 0 "true" -- permission check $c document:readme view user:bob
stop_server

# --- deprecation ------------------------------------------------------------

start_server
expect "nothing deprecated yet" 0 "" -- relation deprecations $c
expect "deprecate (warn by default)" 0 "deprecated document#viewer (warn)" -- \
	relation deprecate $c document#viewer
expect "deprecate --mode reject" 0 "deprecated document#editor (reject)" -- \
	relation deprecate $c document#editor --mode reject
run relation deprecations $c
if [[ $(wc -l <"$work/out") -eq 2 ]] &&
	grep -q '^document#editor reject since [0-9-]*T[0-9:]*Z$' "$work/out" &&
	grep -q '^document#viewer warn since ' "$work/out"; then
	ok "deprecations lists both"
else
	fail "deprecations lists both" "unexpected output"
fi
expect "deprecating a permission works" 0 "deprecated document#view (warn)" -- \
	relation deprecate $c document#view
expect "and is lifted" 0 "undeprecated document#view" -- \
	relation undeprecate $c document#view
expect_error "deprecating an unknown relation is refused" "pemba: FAILED_PRECONDITION: cannot deprecate \`document#owner\`" -- \
	relation deprecate $c document#owner

expect_error "a write to a rejected relation is FAILED_PRECONDITION" \
	"pemba: FAILED_PRECONDITION: relation \`document#editor\` is deprecated (reject)" -- \
	relationship create $c document:readme editor user:dana
run relationship touch $c document:readme viewer user:erin
((status == 0)) && ok "a write to a warned relation succeeds" || fail "a write to a warned relation succeeds" "exit $status"
run relationship delete $c document:readme viewer user:erin
((status == 0)) && ok "deletes are allowed" || fail "deletes are allowed" "exit $status"
sleep 0.2
n=$(grep -c "warning: write to deprecated relation \`document#viewer\` (warn): 1 relationship, e.g. \`document:readme#viewer@user:erin\`" "$work/server.err")
if [[ "$n" == 1 ]]; then
	ok "the server logs one line for the warned write"
else
	fail "the server logs one line for the warned write" "$(cat "$work/server.err")"
fi

expect "undeprecate" 0 "undeprecated document#editor" -- relation undeprecate $c document#editor
expect "undeprecate again" 0 "document#editor was not deprecated" -- relation undeprecate $c document#editor
run relationship create $c document:readme editor user:dana
((status == 0)) && ok "writes accepted once lifted" || fail "writes accepted once lifted" "exit $status"
run relation deprecations $c
if [[ "$(cut -d' ' -f1 "$work/out")" == "document#viewer" ]]; then
	ok "one deprecation left"
else
	fail "one deprecation left" "unexpected output"
fi
stop_server

echo "$passed passed, $failed failed"
((failed == 0))
