#!/usr/bin/env bash
# Finding the callers of a deprecated permission: `pemba serve` with named
# preshared keys (app1, app2, an unnamed one ending in '=') counts, per
# caller (IP address and key name) and method, the reads that name a
# deprecated permission; `relation deprecations --usage` shows exactly
# those counts; the server logs each caller's use (repeats rate-limited);
# reject mode refuses the read with FAILED_PRECONDITION naming it;
# undeprecate lifts it; unknown names and bad --preshared-key forms fail
# clearly.
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

key1=secret-one
key2=secret-two
key3='c2VjcmV0LXRocmVlCg=='   # base64 ending in '=': a plain, unnamed key
db="sqlite://$work/p.db"

# start_server FLAGS...: pemba serve on an ephemeral port; sets
# PEMBA_ENDPOINT.
start_server() {
	: >"$work/server.err"
	"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 --datastore "$db" \
		"$@" >"$work/server.out" 2>"$work/server.err" &
	server_pid=$!
	local port=""
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

# --- bad --preshared-key forms ----------------------------------------------

# serve_fails NAME TEXT FLAGS...: serve exits 2 at once, stderr has TEXT,
# and never shows a secret.
serve_fails() {
	local name=$1 text=$2
	shift 2
	"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 --datastore "$db" "$@" \
		>"$work/out" 2>"$work/err"
	status=$?
	if ((status != 2)); then
		fail "$name" "expected exit 2, got $status"
	elif ! grep -q -F -- "$text" "$work/err"; then
		fail "$name" "stderr lacks: $text"
	elif grep -q -e "$key1" -e "$key2" "$work/err"; then
		fail "$name" "stderr shows a secret"
	else
		ok "$name"
	fi
}
serve_fails "two keys with one name" "two preshared keys are named \`app1\`" \
	--preshared-key "app1=$key1" --preshared-key "app1=$key2"
serve_fails "two keys with one secret" "preshared keys 1 and 2 have the same secret" \
	--preshared-key "app1=$key1" --preshared-key "app2=$key1"
serve_fails "a named and an unnamed key with one secret" "have the same secret" \
	--preshared-key "app1=$key1" --preshared-key "$key1"
serve_fails "an empty key" "must not be empty" --preshared-key ""
export PEMBA_PRESHARED_KEY="app1=$key1,app1=$key2"
serve_fails "duplicate names from the environment" "two preshared keys are named"
unset PEMBA_PRESHARED_KEY
run serve --help
if grep -q -F -- "--preshared-key NAME=KEY" "$work/out" &&
	grep -q -F "[A-Za-z0-9_.-]{1,64}" "$work/out"; then
	ok "serve --help documents named keys"
else
	fail "serve --help documents named keys" "missing"
fi
run relation deprecations --help
if ((status == 0)) && grep -q -F -- "--usage" "$work/out"; then
	ok "deprecations --help documents --usage"
else
	fail "deprecations --help documents --usage" "missing"
fi

# --- the server -------------------------------------------------------------

start_server --preshared-key "app1=$key1" --preshared-key "app2=$key2" \
	--preshared-key "$key3"
c=--insecure
check "the start line names the keys" grep -q -F "preshared-key auth (keys named app1, app2)" "$work/server.err"

cat >"$work/schema.zed" <<'EOF'
definition user {}
definition document {
	relation viewer: user
	relation reader: user
	permission view = viewer + reader
	permission read = reader
}
EOF

export PEMBA_TOKEN=$key3
run schema write $c "$work/schema.zed"
check "a key ending in '=' is a plain key" exit_is 0
run relationship create $c document:readme viewer user:anne
check "relationship written" exit_is 0
run permission check $c document:readme view user:anne --token "app1=$key1"
check "the NAME=KEY text is not a key" has_err "UNAUTHENTICATED"

expect_error "deprecating an unknown name is refused" \
	"pemba: FAILED_PRECONDITION: cannot deprecate \`document#nothing\`: relation or permission \`nothing\` not found" -- \
	relation deprecate $c document#nothing
expect "deprecate a permission (warn)" 0 "deprecated document#view (warn)" -- \
	relation deprecate $c document#view
expect "deprecate another (warn)" 0 "deprecated document#read (warn)" -- \
	relation deprecate $c document#read

# 3 checks with app1's key, 1 lookup with app2's, nothing with the third.
for i in 1 2 3; do
	expect "check $i with app1's key still works" 0 "true" -- \
		permission check $c document:readme view user:anne --token "$key1"
done
run permission lookup-resources $c document view user:anne --token "$key2"
check "a lookup with app2's key still works" has_out "readme"
# A check naming another permission is not a use of document#view.
run permission check $c document:readme viewer user:anne --token "$key2"
check "a check of a relation" exit_is 0

run relation deprecations $c --usage
check "deprecations --usage" exit_is 0
# TARGET MODE CALLER KEY METHOD USES FIRST LAST
rows=$(awk 'NR > 1 { print $1, $2, $3, $4, $5, $6 }' "$work/out" | sort)
want="document#read warn - - - 0
document#view warn 127.0.0.1 app1 CheckPermission 3
document#view warn 127.0.0.1 app2 LookupResources 1"
if [[ "$rows" == "$want" ]]; then
	ok "--usage shows exactly the uses per caller and method"
else
	fail "--usage shows exactly the uses per caller and method" "got: $rows"
fi
check "--usage has a header" grep -q "^TARGET  *MODE  *CALLER  *KEY  *METHOD  *USES  *FIRST  *LAST$" "$work/out"
check "--usage says whose counts they are" has_err "uses counted by this server since"
run relation deprecations $c --usage --json
if grep -q '"keyName": *"app1", *"method": *"CheckPermission", *"count": *"3"' "$work/out"; then
	ok "--usage --json has the uses"
else
	fail "--usage --json has the uses" "missing"
fi

sleep 0.2
n=$(grep -c -F 'warning: deprecated document#view used by CheckPermission from 127.0.0.1 (key "app1")' "$work/server.err")
if [[ "$n" == 1 ]]; then
	ok "app1's repeated checks are logged once (rate-limited)"
else
	fail "app1's repeated checks are logged once (rate-limited)" "$n lines: $(cat "$work/server.err")"
fi
check "app2's lookup is logged" grep -q -F 'warning: deprecated document#view used by LookupResources from 127.0.0.1 (key "app2")' "$work/server.err"
if grep -q -e "$key1" -e "$key2" -e "$key3" "$work/server.err"; then
	fail "the log shows no secret" "it does"
else
	ok "the log shows no secret"
fi

# --- reject -----------------------------------------------------------------

expect "deprecate --mode reject" 0 "deprecated document#view (reject)" -- \
	relation deprecate $c document#view --mode reject
expect_error "a check of a rejected permission is FAILED_PRECONDITION" \
	"pemba: FAILED_PRECONDITION: \`document#view\` is deprecated (reject): CheckPermission naming it is refused" -- \
	permission check $c document:readme view user:anne --token "$key1"
expect_error "so is a lookup" "pemba: FAILED_PRECONDITION: \`document#view\` is deprecated (reject)" -- \
	permission lookup-subjects $c document:readme view user --token "$key2"
expect "other permissions still work" 0 "true" -- \
	permission check $c document:readme viewer user:anne
run relation deprecations $c --usage
check "refused uses are counted" grep -q "^document#view  *reject  *127.0.0.1  *app1  *CheckPermission  *4 " "$work/out"
sleep 0.2
check "the refusal is logged" grep -q -F 'warning: deprecated document#view (reject) refused to CheckPermission from 127.0.0.1 (key "app1")' "$work/server.err"

# --- undeprecate ------------------------------------------------------------

expect "undeprecate" 0 "undeprecated document#view" -- relation undeprecate $c document#view
expect "the check works again" 0 "true" -- \
	permission check $c document:readme view user:anne --token "$key1"
run relation deprecations $c --usage
rows=$(awk 'NR > 1 { print $1, $6 }' "$work/out")
if [[ "$rows" == "document#read 0" ]]; then
	ok "a lifted deprecation leaves the usage table"
else
	fail "a lifted deprecation leaves the usage table" "got: $rows"
fi
expect "undeprecate the other" 0 "undeprecated document#read" -- relation undeprecate $c document#read

# --- two servers on one datastore -------------------------------------------
# A deprecation made through one server reaches the other's reads (each
# server re-reads the set at most once a second): within a few seconds,
# not at the next restart.
endpoint1=$PEMBA_ENDPOINT
"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 --datastore "$db" \
	--preshared-key "app1=$key1" >"$work/server2.out" 2>"$work/server2.err" &
server2_pid=$!
port2=""
for _ in $(seq 100); do
	port2=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server2.err" | head -n 1)
	[[ -n "$port2" ]] && break
	sleep 0.1
done
check "a second server on the same datastore starts" test -n "$port2"
e2="--insecure --endpoint 127.0.0.1:$port2 --token $key1"
expect "the second server answers" 0 "true" -- \
	permission check $e2 document:readme view user:anne
expect "deprecate through the first server (reject)" 0 "deprecated document#view (reject)" -- \
	relation deprecate $c document#view --mode reject
refused=0
for _ in $(seq 50); do
	run permission check $e2 document:readme view user:anne
	if ((status == 2)) && has_err "is deprecated (reject)"; then refused=1; break; fi
	sleep 0.1
done
check "the second server refuses the check within 5 s" test "$refused" = 1
expect "undeprecate through the first server" 0 "undeprecated document#view" -- \
	relation undeprecate $c document#view
allowed=0
for _ in $(seq 50); do
	run permission check $e2 document:readme view user:anne
	if ((status == 0)) && has_out "true"; then allowed=1; break; fi
	sleep 0.1
done
check "and answers it again within 5 s" test "$allowed" = 1
kill "$server2_pid" 2>/dev/null
wait "$server2_pid" 2>/dev/null
PEMBA_ENDPOINT=$endpoint1
stop_server

echo "$passed passed, $failed failed"
((failed == 0))
