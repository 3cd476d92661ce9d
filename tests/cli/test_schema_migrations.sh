#!/usr/bin/env bash
# Schema migrations from the command line, against a real `pemba
# serve-testing`: `schema write --dry-run`, `schema diff`, `schema plan`,
# `schema apply` (confirmation, --yes, --delete-relationships, re-running),
# and the refusal SpiceDB gives when a write would orphan relationships.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

passed=0
failed=0
work=$(mktemp -d)
server_pid=""
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

ok() {
	passed=$((passed + 1))
	echo "ok   $1"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL $1: $2"
	sed 's/^/    stdout: /' "$work/out"
	sed 's/^/    stderr: /' "$work/err"
}
run() {
	"$PEMBA_BINARY" "$@" >"$work/out" 2>"$work/err" </dev/null
	status=$?
}
# check NAME WANT_STATUS GREP_PATTERN FILE(out|err) -- ARGS...
check() {
	local name=$1 want=$2 pattern=$3 where=$4
	shift 5
	run "$@"
	if ((status != want)); then
		fail "$name" "expected exit $want, got $status"
	elif [[ -n "$pattern" ]] && ! grep -q -- "$pattern" "$work/$where"; then
		fail "$name" "$where lacks: $pattern"
	else
		ok "$name"
	fi
}

# --- help ---------------------------------------------------------------

for sub in write diff plan apply; do
	check "schema $sub --help" 0 "usage: pemba schema $sub" out -- schema "$sub" --help
done
check "write --help mentions --dry-run" 0 "--dry-run" out -- schema write --help
check "apply --help mentions --delete-relationships" 0 "--delete-relationships" out -- schema apply --help

# --- the server ---------------------------------------------------------

"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=""
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" "$work/server.out" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.1
done
if [[ -z "$port" ]]; then
	echo "FAIL serve-testing did not report its port"
	cat "$work/server.err"
	exit 1
fi
export PEMBA_ENDPOINT="127.0.0.1:$port"
export PEMBA_TOKEN="schema-migrations-$$"
I=--insecure

cat >"$work/v1.zed" <<'EOF'
definition user {}
definition group {
	relation member: user
}
definition document {
	relation editor: user | group#member
	relation viewer: user
	permission view = viewer + editor
}
EOF
# Same schema, other layout and order.
cat >"$work/v1-reformatted.zed" <<'EOF'
definition document {
  relation viewer: user
  relation editor: group#member | user
  permission view = (viewer + editor)
}
definition group { relation member: user
}
definition user {}
EOF
cat >"$work/v2.zed" <<'EOF'
definition user {}
definition group {
	relation member: user
}
definition document {
	relation viewer: user | user:*
	permission view = viewer
}
EOF

check "write v1" 0 "" out -- schema write $I "$work/v1.zed"
check "touch an editor" 0 "" out -- relationship touch $I 'document:1#editor@user:anne'
check "touch a group editor" 0 "" out -- relationship touch $I 'document:2#editor@group:eng#member'
check "touch a viewer" 0 "" out -- relationship touch $I 'document:1#viewer@user:bob'

# --- diff -----------------------------------------------------------------

run schema diff $I "$work/v1-reformatted.zed"
if ((status == 0)) && [[ ! -s "$work/out" ]]; then
	ok "diff ignores formatting and order"
else
	fail "diff ignores formatting and order" "exit $status"
fi
run schema diff $I "$work/v2.zed"
if ((status == 0)) && grep -qx -- "- relation document#editor" "$work/out" &&
	grep -qx -- "+ type document#viewer: user:\*" "$work/out" &&
	grep -qx -- "~ permission document#view (expression)" "$work/out"; then
	ok "diff lists removed relation, added type, changed permission"
else
	fail "diff lists removed relation, added type, changed permission" "exit $status"
fi
check "diff needs FILE" 2 "" err -- schema diff $I

# --- write --dry-run and the refusal --------------------------------------

check "dry run of v2 is refused like the write" 2 \
	"INVALID_ARGUMENT: cannot delete relation \`editor\` in object definition \`document\`, as at least one relationship exists under it: document:" \
	err -- schema write $I --dry-run "$work/v2.zed"
check "write of v2 is refused" 2 "INVALID_ARGUMENT: cannot delete relation \`editor\`" err -- \
	schema write $I "$work/v2.zed"
cat >"$work/v1b.zed" <<'EOF'
definition user {}
definition group {
	relation member: user
}
definition document {
	relation editor: user | group#member
	relation viewer: user | user:*
	permission view = viewer + editor
}
EOF
check "dry run lists what would change" 0 "add allowed type \`user:\*\` to relation \`document#viewer\`" out -- \
	schema write $I --dry-run "$work/v1b.zed"
run schema read $I
if grep -q "user:\*" "$work/out"; then
	fail "dry run writes nothing" "the schema changed"
else
	ok "dry run writes nothing"
fi

# --- plan and apply --------------------------------------------------------

check "plan names the intermediate schema" 0 "1. write schema: write an intermediate schema" out -- \
	schema plan $I "$work/v2.zed"
check "plan counts the relationships to delete" 0 "document#editor@user: 1" out -- \
	schema plan $I "$work/v2.zed"
check "plan counts group#member subjects" 0 "document#editor@group#member: 1" out -- \
	schema plan $I "$work/v2.zed"
check "apply without --delete-relationships refuses" 2 "Re-run" err -- \
	schema apply $I --yes "$work/v2.zed"
check "apply without a terminal and without --yes refuses" 2 "pass --yes" err -- \
	schema apply $I --delete-relationships "$work/v2.zed"
check "nothing changed after refusals" 0 "relation editor" out -- schema read $I
check "apply --yes --delete-relationships succeeds" 0 "" out -- \
	schema apply $I --yes --delete-relationships "$work/v2.zed"
if grep -q "step 3/3" "$work/err"; then ok "apply prints progress"; else fail "apply prints progress" "no step 3/3"; fi
check "the stored schema is the target" 0 "relation viewer: user | user:\*" out -- schema read $I
check "re-running apply has nothing to do" 0 "nothing to do" out -- \
	schema apply $I --yes "$work/v2.zed"
check "the viewer still sees the document" 0 "" out -- permission check $I document:1 view user:bob

# A plan whose delete step keeps the other types' relationships: removing
# only the caveated type.
cat >"$work/c1.zed" <<'EOF'
caveat only_one(a int) {
	a == 1
}
definition user {}
definition document {
	relation viewer: user | user with only_one
	permission view = viewer
}
EOF
cat >"$work/c2.zed" <<'EOF'
caveat only_one(a int) {
	a == 1
}
definition user {}
definition document {
	relation viewer: user
	permission view = viewer
}
EOF
check "write c1" 0 "" out -- schema apply $I --yes --delete-relationships "$work/c1.zed"
check "touch a caveated viewer" 0 "" out -- relationship touch $I 'document:3#viewer@user:carl[only_one]'
check "apply removing the caveated type" 0 "" out -- \
	schema apply $I --yes --delete-relationships "$work/c2.zed"
run relationship read $I document
if grep -q "user:bob" "$work/out" && ! grep -q "carl" "$work/out"; then
	ok "only the caveated type's relationships were deleted"
else
	fail "only the caveated type's relationships were deleted" "exit $status"
fi

echo "passed: $passed, failed: $failed"
((failed == 0))
