#!/usr/bin/env bash
# `pemba permission check --explain` against a real `pemba serve-testing`:
# the tree of why (the server's debug trace, as `zed permission check
# --explain` prints it) for a nested example -- a group inside a group
# through a relation, an arrow, a union, an intersection, an exclusion and
# a caveated branch -- then the answer and the usual exit status.  The
# durations vary, so they are replaced by "(T)" before comparing.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
server_pid=""
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"

"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.1
done
if [[ -z "$port" ]]; then
	echo "serve-testing did not report its port"; cat "$work/server.err"
	echo "0 passed, 1 failed"; exit 1
fi
C=(--insecure --endpoint "127.0.0.1:$port" --token explain)

cat >"$work/schema.zed" <<'ZED'
caveat weekday(day int) {
	day < 6
}

definition user {}

definition group {
	relation member: user | group#member
}

definition folder {
	relation viewer: user | user with weekday
	permission view = viewer
}

definition document {
	relation parent: folder
	relation owner: user
	relation editor: user | group#member
	relation banned: user
	permission edit = editor - banned
	permission view = owner + parent->view + edit
	permission audit = view & edit
}
ZED
run schema write "${C[@]}" "$work/schema.zed"
check "schema written" exit_is 0
for r in "group:eng member user:anne" "group:all member group:eng#member" \
	"document:readme editor group:all#member" "document:readme parent folder:f" \
	"folder:f viewer user:bob[weekday]" "document:readme banned user:carl" \
	"document:readme editor user:carl"; do
	# shellcheck disable=SC2086
	run relationship create "${C[@]}" $r
	check "relationship $r" exit_is 0
done

# explain NAME WANT_STATUS WANT_STDOUT -- ARGS...: the durations of the
# tree become "(T)".
explain() {
	local name=$1 want_status=$2 want=$3
	shift 4
	run permission check "${C[@]}" --explain "$@"
	sed -E 's/ \([0-9.]+(ns|µs|ms|s)\)$/ (T)/' "$work/out" >"$work/out.t"
	if ((status != want_status)); then
		fail "$name" "expected exit $want_status, got $status"
	elif [[ "$(cat "$work/out.t")" != "$want" ]]; then
		fail "$name" "stdout is not:
$want"
	else
		ok "$name"
	fi
}

explain "granted through a group in a group, the intersection's second operand cached" 0 \
"✓ document:readme audit (T)
├── ✓ document:readme view (T)
│   ├── ⨉ document:readme owner (T)
│   ├── ⨉ folder:f view (T)
│   └── ✓ document:readme edit (T)
│       ├── ✓ document:readme editor (T)
│       │   └── ✓ group:all member (T)
│       │       └── ✓ group:eng member (T)
│       │           └── user:anne 
│       └── ⨉ document:readme banned (T)
└── ✓ document:readme edit (cached) (T)
true" -- document:readme audit user:anne

explain "denied by the exclusion" 1 \
"⨉ document:readme audit (T)
└── ⨉ document:readme view (T)
    ├── ⨉ document:readme owner (T)
    ├── ⨉ folder:f view (T)
    └── ⨉ document:readme edit (T)
        ├── ✓ document:readme editor (T)
        │   └── user:carl 
        └── ✓ document:readme banned (T)
            └── user:carl 
false" -- document:readme audit user:carl

explain "caveated branch without context: ? and the missing parameter" 1 \
"? document:readme view (T)
├── ⨉ document:readme owner (T)
├── ? folder:f view (T)
│   └── ? day < 6 weekday
│       └── missing context: day
└── ⨉ document:readme edit (T)
    └── ⨉ document:readme editor (T)
        └── ⨉ group:all member (T)
            └── ⨉ group:eng member (T)
caveated" -- document:readme view user:bob
check "the missing parameter is named on stderr too" \
	has_err "pemba: missing fields in caveat context: day"

explain "caveated branch with context: the caveat held, with its context" 0 \
'✓ document:readme view (T)
├── ⨉ document:readme owner (T)
└── ✓ folder:f view (T)
    ├── ✓ day < 6 weekday
    │   └── {"day":3}
    └── user:bob 
true' -- --caveat-context '{"day":3}' document:readme view user:bob

explain "caveated branch whose caveat fails" 1 \
'⨉ document:readme view (T)
├── ⨉ document:readme owner (T)
├── ⨉ folder:f view (T)
│   └── ⨉ day < 6 weekday
│       └── {"day":7}
└── ⨉ document:readme edit (T)
    └── ⨉ document:readme editor (T)
        └── ⨉ group:all member (T)
            └── ⨉ group:eng member (T)
false' -- --caveat-context '{"day":7}' document:readme view user:bob

# The durations are Go-style ("12.5µs", "1.2ms").
run permission check "${C[@]}" --explain document:readme edit user:anne
check "every tree line ends in a duration" \
	bash -c "head -n -1 '$work/out' | grep -v '└── user:\|├── user:' | grep -vqE ' \([0-9.]+(ns|µs|ms|s)\)$' && exit 1 || exit 0"

# --json keeps the whole response, debug trace included.
run permission check "${C[@]}" --explain --json document:readme edit user:anne
check "--explain --json prints the response with its debugTrace" \
	bash -c "grep -q '\"debugTrace\"' '$work/out' && grep -q '\"schemaUsed\"' '$work/out' && grep -q 'PERMISSION_TYPE_PERMISSION' '$work/out'"

# Without --explain nothing changes.
expect "without --explain only the answer" 0 "true" -- \
	permission check "${C[@]}" document:readme edit user:anne

run permission check --help
check "--help documents --explain" has_out "--explain"

echo "$passed passed, $failed failed"
((failed == 0))
