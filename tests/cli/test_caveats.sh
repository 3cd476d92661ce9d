#!/usr/bin/env bash
# Caveats through the client commands against a real `pemba serve-testing`:
# `relationship create|touch` with the `[name:{json}]` suffix, `relationship
# read` printing it back, `permission check --caveat-context` (true / false /
# "caveated" with the missing parameters on stderr, exit 0 / 1 / 1), lookups
# with --caveat-context, and errors for bad contexts.
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
	"$PEMBA_BINARY" "$@" --insecure --endpoint "127.0.0.1:$port" \
		--token caveats >"$work/out" 2>"$work/err"
	status=$?
}

# expect NAME WANT_STATUS WANT_STDOUT WANT_STDERR -- ARGS...: exact stdout
# and stderr.
expect() {
	local name=$1 want_status=$2 want=$3 want_err=$4
	shift 5
	run "$@"
	if ((status != want_status)); then
		fail "$name" "expected exit $want_status, got $status"
	elif [[ "$(cat "$work/out")" != "$want" ]]; then
		fail "$name" "stdout is not: $want"
	elif [[ "$(cat "$work/err")" != "$want_err" ]]; then
		fail "$name" "stderr is not: $want_err"
	else
		ok "$name"
	fi
}

# expect_error NAME STDERR_PREFIX TEXT -- ARGS...: exit 2, one stderr line
# starting with the prefix and containing TEXT.
expect_error() {
	local name=$1 prefix=$2 text=$3
	shift 4
	run "$@"
	if ((status != 2)); then
		fail "$name" "expected exit 2, got $status"
	elif [[ "$(head -c ${#prefix} "$work/err")" != "$prefix" ]]; then
		fail "$name" "stderr does not start with: $prefix"
	elif ! grep -q -F -- "$text" "$work/err"; then
		fail "$name" "stderr lacks: $text"
	else
		ok "$name"
	fi
}

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
	echo "0 passed, 1 failed"
	exit 1
fi

cat >"$work/schema.zed" <<'EOF'
definition user {}

caveat has_level(level int, min int) {
	level >= min
}

definition doc {
	relation viewer: user | user with has_level
	permission view = viewer
}
EOF

run schema write "$work/schema.zed"
if ((status == 0)); then ok "schema with a caveat is written"; else fail "schema with a caveat is written" "exit $status"; fi

run relationship create 'doc:1#viewer@user:anne[has_level:{"min":3}]'
if ((status == 0)); then ok "create with a caveat and context"; else fail "create with a caveat and context" "exit $status"; fi
run relationship touch doc:2 viewer 'user:bob[has_level]'
if ((status == 0)); then ok "touch with a caveat, three-word form"; else fail "touch with a caveat, three-word form" "exit $status"; fi
run relationship create doc:3#viewer@user:carl
if ((status == 0)); then ok "create without a caveat"; else fail "create without a caveat" "exit $status"; fi

expect "read prints the caveat and its context" 0 \
	'doc:1#viewer@user:anne[has_level:{"min":3}]
doc:2#viewer@user:bob[has_level]
doc:3#viewer@user:carl' "" -- relationship read doc

run relationship read doc --json
if node -e '
	const lines = require("fs").readFileSync(process.argv[1], "utf8")
		.split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
	const c = lines[0].relationship.optionalCaveat;
	process.exit(c.caveatName === "has_level" && c.context.min === 3 &&
		lines[2].relationship.optionalCaveat === undefined ? 0 : 1);
' "$work/out" 2>>"$work/err"; then
	ok "read --json has optionalCaveat with its context"
else
	fail "read --json has optionalCaveat with its context" "JSON check failed"
fi

expect "check with a context that satisfies the caveat" 0 "true" "" -- \
	permission check doc:1 view user:anne --caveat-context '{"level":5}'
expect "check with a context that fails the caveat" 1 "false" "" -- \
	permission check doc:1 view user:anne --caveat-context '{"level":1}'
expect "check without the parameter is caveated, missing on stderr" 1 "caveated" \
	"pemba: missing fields in caveat context: level" -- \
	permission check doc:1 view user:anne
expect "check names the missing parameter the relationship lacks" 1 "caveated" \
	"pemba: missing fields in caveat context: min" -- \
	permission check doc:2 view user:bob --caveat-context '{"level":1}'
expect "check --caveat-context=JSON form" 0 "true" "" -- \
	permission check doc:2 view user:bob '--caveat-context={"level":2,"min":2}'
run permission check doc:1 view user:anne --json
if ((status == 1)) && node -e '
	const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
	process.exit(r.permissionship === "PERMISSIONSHIP_CONDITIONAL_PERMISSION" &&
		r.partialCaveatInfo.missingRequiredContext.join() === "level" ? 0 : 1);
' "$work/out" 2>>"$work/err"; then
	ok "check --json reports partialCaveatInfo"
else
	fail "check --json reports partialCaveatInfo" "exit $status or JSON check failed"
fi

expect "lookup-resources with a context" 0 "doc:1" "" -- \
	permission lookup-resources doc view user:anne --caveat-context '{"level":4}'
expect "lookup-resources with a context that fails the caveat" 0 "" "" -- \
	permission lookup-resources doc view user:anne --caveat-context '{"level":1}'
run permission lookup-resources doc view user:anne
if ((status == 0)) && grep -q '^doc:1 (caveated' "$work/out"; then
	ok "lookup-resources marks caveated results"
else
	fail "lookup-resources marks caveated results" "exit $status"
fi
expect "lookup-subjects with a context" 0 "user:anne" "" -- \
	permission lookup-subjects doc:1 view user --caveat-context '{"level":9}'

expect_error "malformed --caveat-context is a usage error" "pemba: " "malformed --caveat-context" -- \
	permission check doc:1 view user:anne --caveat-context '{"level":'
expect_error "a context value of the wrong type is INVALID_ARGUMENT" \
	"pemba: INVALID_ARGUMENT: " "level" -- \
	permission check doc:1 view user:anne --caveat-context '{"level":"high"}'
expect_error "writing a context of the wrong type is INVALID_ARGUMENT" \
	"pemba: INVALID_ARGUMENT: " "min" -- \
	relationship create 'doc:9#viewer@user:dan[has_level:{"min":"x"}]'
expect_error "writing an unknown caveat is INVALID_ARGUMENT" \
	"pemba: INVALID_ARGUMENT: " "no_such" -- \
	relationship create 'doc:9#viewer@user:dan[no_such]'
# A NUL cannot travel in a string (docs/compatibility.md): refused by
# the client, never sent cut short.
expect_error "\\u0000 in --caveat-context is refused" "pemba: " \
	"\\u0000 (NUL) is not supported in strings" -- \
	permission check doc:1 view user:anne --caveat-context '{"s":"a\u0000b"}'
expect_error "\\u0000 in a relationship's context is refused" "pemba: " \
	"\\u0000 (NUL) is not supported in strings" -- \
	relationship create 'doc:9#viewer@user:dan[has_level:{"min":"\u0000"}]'
expect_error "an unpaired surrogate in --caveat-context is refused" "pemba: " \
	"unpaired surrogate" -- \
	permission check doc:1 view user:anne --caveat-context '{"s":"\ud800"}'
expect "a surrogate pair in --caveat-context is one character" 0 "true" "" -- \
	permission check doc:1 view user:anne --caveat-context '{"level":5,"s":"\ud83d\ude00"}'

echo "$passed passed, $failed failed"
((failed == 0))
