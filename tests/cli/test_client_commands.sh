#!/usr/bin/env bash
# The client commands (schema, relationship, permission, watch) against a
# real `pemba serve-testing`: output formats, --json, exit statuses (check:
# 0 granted, 1 not, 2 error), consistency flags, error lines
# `pemba: STATUS: message`, --help on every command and subcommand.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
server_pid=""
watch_pid=""
cleanup() {
	[[ -n "$watch_pid" ]] && kill "$watch_pid" 2>/dev/null
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/client_expect.sh"

# json_check NAME JS: every stdout line must parse as JSON; JS is the body
# of a function of `lines` (the parsed objects) returning true.
json_check() {
	local name=$1 js=$2
	if node -e '
		const fs = require("fs");
		const lines = fs.readFileSync(process.argv[1], "utf8")
			.split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
		const f = new Function("lines", process.argv[2]);
		process.exit(f(lines) ? 0 : 1);
	' "$work/out" "$js" 2>>"$work/err"; then
		ok "$name"
	else
		fail "$name" "JSON check failed: $js"
	fi
}

is_token() {
	[[ "$1" =~ ^[A-Za-z0-9_-]{19,31}$ ]]
}

# --- help ---------------------------------------------------------------

for words in "schema" "schema read" "schema write" "relationship" \
	"relationship create" "relationship touch" "relationship delete" \
	"relationship read" "permission" "permission check" \
	"permission lookup-resources" "permission lookup-subjects" \
	"permission expand" "watch"; do
	# shellcheck disable=SC2086
	run $words --help
	if ((status == 0)) && grep -q "^usage: pemba $words" "$work/out"; then
		ok "$words --help"
	else
		fail "$words --help" "exit $status or no usage line"
	fi
done
run permission check --help
if grep -q "0  the subject has the permission" "$work/out" &&
	grep -q "1  it does not" "$work/out" && grep -q "2  error" "$work/out"; then
	ok "check --help documents the exit statuses"
else
	fail "check --help documents the exit statuses" "missing lines"
fi
expect_usage_error "schema without a subcommand is a usage error" "schema" -- schema
expect_usage_error "unknown subcommand is a usage error" "unknown relationship subcommand 'frob'" -- relationship frob
expect_usage_error "unknown option is a usage error" "unknown option '--frob'" -- permission check --frob
expect_usage_error "missing arguments are a usage error" "missing arguments" -- permission check --insecure document:1 view
expect_usage_error "malformed resource is a usage error" "malformed resource 'document'" -- permission check --insecure document view user:anne
expect_usage_error "malformed subject is a usage error" "malformed subject 'user'" -- permission check --insecure document:1 view user
expect_usage_error "two consistency flags are a usage error" "at most one --consistency" -- permission check --insecure --consistency-full --consistency-min-latency document:1 view user:anne
expect_usage_error "option without its value is a usage error" "needs a value" -- schema read --endpoint

# --- errors before a server exists ---------------------------------------

# A port nobody listens on: bind one, then release it.
dead_port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();})')
expect_error "connection refused is UNAVAILABLE, exit 2" "pemba: UNAVAILABLE: " -- \
	schema read --insecure --endpoint "127.0.0.1:$dead_port"

# --- the server -----------------------------------------------------------

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
export PEMBA_TOKEN="client-test-$$"
I=--insecure

expect_error "TLS against a plaintext server fails with UNAVAILABLE" "pemba: UNAVAILABLE: " -- schema read
expect_error "reading a schema never written is an error" "pemba: NOT_FOUND: " -- schema read $I

# --- schema ---------------------------------------------------------------

cat >"$work/schema.zed" <<'EOF'
definition user {}

definition group {
	relation member: user | group#member
}

definition document {
	relation viewer: user | group#member | user:*
	relation owner: user
	relation banned: user
	permission view = (viewer + owner) - banned
}
EOF
run schema write $I "$work/schema.zed"
schema_token=$(cat "$work/out")
if ((status == 0)) && is_token "$schema_token"; then
	ok "schema write prints the ZedToken"
else
	fail "schema write prints the ZedToken" "exit $status"
fi
run schema read $I
if ((status == 0)) && grep -q "^definition document {" "$work/out" &&
	grep -q "permission view = " "$work/out"; then
	ok "schema read prints the schema"
else
	fail "schema read prints the schema" "exit $status"
fi
cp "$work/out" "$work/canonical.zed"
run schema write $I - <"$work/canonical.zed"
if ((status == 0)) && is_token "$(cat "$work/out")"; then
	ok "schema write - reads stdin"
else
	fail "schema write - reads stdin" "exit $status"
fi
expect "schema read after a round trip is unchanged" 0 "$(cat "$work/canonical.zed")" -- schema read $I
run schema read $I --json
json_check "schema read --json" \
	'return lines.length == 1 && lines[0].schemaText.includes("definition user") && lines[0].readAt.token.length > 0'
run schema write $I --json "$work/schema.zed"
json_check "schema write --json" 'return lines.length == 1 && lines[0].writtenAt.token.length > 0'
# A NUL in the file is refused where it is, not sent cut short.
printf 'definition user {}\ndefinition doc {\n\trelation viewer: us\0er\n}\n' >"$work/nul.zed"
expect_error "schema write of a file with a NUL names its position" \
	"pemba: $work/nul.zed:3:21: the schema contains a NUL byte" -- schema write $I "$work/nul.zed"
printf 'definition document {\n\trelation viewer: nosuchtype\n}\n' >"$work/bad.zed"
expect_error "a schema the server refuses is exit 2 with its status" "pemba: " -- schema write $I "$work/bad.zed"
if grep -q -E "^pemba: (INVALID_ARGUMENT|FAILED_PRECONDITION): .*nosuchtype" "$work/err"; then
	ok "a refused schema names the problem"
else
	fail "a refused schema names the problem" "status or text"
fi
expect_error "an unreadable schema file is exit 2" "pemba: cannot read " -- schema write $I "$work/missing.zed"

# --- relationships ----------------------------------------------------------

run relationship create $I document:readme viewer user:anne
first_write=$(cat "$work/out")
if ((status == 0)) && is_token "$first_write"; then
	ok "relationship create prints the ZedToken"
else
	fail "relationship create prints the ZedToken" "exit $status"
fi
expect_error "creating it again is ALREADY_EXISTS" "pemba: ALREADY_EXISTS: " -- \
	relationship create $I document:readme viewer user:anne
run relationship touch $I 'document:readme#viewer@group:eng#member'
if ((status == 0)) && is_token "$(cat "$work/out")"; then
	ok "relationship touch takes the one-string form"
else
	fail "relationship touch takes the one-string form" "exit $status"
fi
run relationship touch $I --json group:eng member user:bob
json_check "relationship touch --json" 'return lines.length == 1 && lines[0].writtenAt.token.length > 0'
run relationship touch $I document:readme owner user:carl
run relationship touch $I document:readme banned user:dave
run relationship touch $I document:readme viewer user:dave
run relationship touch $I document:public viewer 'user:*'
run relationship create $I document:old viewer user:erin
run relationship delete $I document:old viewer user:erin
if ((status == 0)) && is_token "$(cat "$work/out")"; then
	ok "relationship delete prints the ZedToken"
else
	fail "relationship delete prints the ZedToken" "exit $status"
fi
expect_error "a relationship the schema refuses is exit 2" "pemba: " -- \
	relationship create $I document:readme editor user:anne
expect_error "an unknown type is FAILED_PRECONDITION" "pemba: FAILED_PRECONDITION: " -- \
	relationship create $I folder:x viewer user:anne

run relationship read $I document
sort "$work/out" >"$work/sorted"
cat >"$work/want" <<'EOF'
document:public#viewer@user:*
document:readme#banned@user:dave
document:readme#owner@user:carl
document:readme#viewer@group:eng#member
document:readme#viewer@user:anne
document:readme#viewer@user:dave
EOF
if ((status == 0)) && cmp -s "$work/sorted" "$work/want"; then
	ok "relationship read TYPE prints one relationship per line"
else
	fail "relationship read TYPE prints one relationship per line" "got $(tr '\n' ' ' <"$work/sorted")"
fi
run relationship read $I document:readme viewer
if ((status == 0)) && [[ $(wc -l <"$work/out") -eq 3 ]] && ! grep -q -v "^document:readme#viewer@" "$work/out"; then
	ok "relationship read TYPE:ID RELATION filters"
else
	fail "relationship read TYPE:ID RELATION filters" "exit $status"
fi
expect "relationship read with a subject filter" 0 "document:readme#viewer@group:eng#member" -- \
	relationship read $I document:readme viewer group:eng#member
expect "relationship read with a subject type filter" 0 "document:public#viewer@user:*" -- \
	relationship read $I document:public "" user
expect "relationship read of nothing prints nothing" 0 "" -- relationship read $I document:nothing
run relationship read $I --json document:readme owner
json_check "relationship read --json" \
	'return lines.length == 1 && lines[0].relationship.resource.objectId == "readme" && lines[0].relationship.subject.object.objectId == "carl" && lines[0].readAt.token.length > 0'
expect_usage_error "relationship read without a filter says which filter" \
	"needs a filter: at least a resource type" -- relationship read $I
expect_error "--token selects the datastore (serve-testing isolates tokens)" "pemba: NOT_FOUND: " -- \
	schema read $I --token "another-$$"

# --- check ------------------------------------------------------------------

expect "check prints true and exits 0 when granted" 0 "true" -- permission check $I document:readme view user:anne
expect "check through a group is granted" 0 "true" -- permission check $I document:readme view user:bob
expect "check prints false and exits 1 when not granted" 1 "false" -- permission check $I document:readme view user:zoe
expect "exclusion denies" 1 "false" -- permission check $I document:readme view user:dave
expect "wildcard grants" 0 "true" -- permission check $I document:public view user:zoe
expect "a subject set is checked" 0 "true" -- permission check $I document:readme view group:eng#member
run permission check $I --json document:readme view user:anne
if ((status == 0)); then ok "check --json exits 0 when granted"; else fail "check --json exits 0 when granted" "exit $status"; fi
json_check "check --json has the permissionship and checked_at" \
	'return lines.length == 1 && lines[0].permissionship == "PERMISSIONSHIP_HAS_PERMISSION" && lines[0].checkedAt.token.length > 0'
run permission check $I --json document:readme view user:zoe
if ((status == 1)); then ok "check --json exits 1 when not granted"; else fail "check --json exits 1 when not granted" "exit $status"; fi
json_check "check --json says no permission" 'return lines[0].permissionship == "PERMISSIONSHIP_NO_PERMISSION"'
expect_error "check of an unknown permission is exit 2" "pemba: FAILED_PRECONDITION: " -- \
	permission check $I document:readme nope user:anne
expect_error "a malformed ZedToken is INVALID_ARGUMENT" "pemba: INVALID_ARGUMENT: " -- \
	permission check $I --consistency-at-least notatoken document:readme view user:anne
if permission_ok=$("$PEMBA_BINARY" permission check $I document:readme view user:anne) && [[ $permission_ok == true ]]; then
	ok "check is usable in if"
else
	fail "check is usable in if" "not granted"
fi

# Consistency: a token from before erin's write sees the old state.
before=$("$PEMBA_BINARY" relationship touch $I document:readme banned user:nobody)
run relationship touch $I document:readme viewer user:erin
after=$(cat "$work/out")
expect "at-exact before a write does not see it" 1 "false" -- \
	permission check $I --consistency-at-exact "$before" document:readme view user:erin
expect "at-exact at the write sees it" 0 "true" -- \
	permission check $I --consistency-at-exact "$after" document:readme view user:erin
expect "at-least sees the write" 0 "true" -- \
	permission check $I --consistency-at-least "$after" document:readme view user:erin
expect "full consistency sees the write" 0 "true" -- \
	permission check $I --consistency-full document:readme view user:erin
expect "relationship read at-exact before the write" 0 "" -- \
	relationship read $I --consistency-at-exact "$before" document:readme viewer user:erin
expect_error "a token of another datastore is refused" "pemba: INVALID_ARGUMENT: " -- \
	permission check $I --token "another-$$" --consistency-at-least "$after" document:readme view user:erin

# --- lookups and expand -----------------------------------------------------

run permission lookup-resources $I document view user:anne
if ((status == 0)) && [[ "$(sort "$work/out" | tr '\n' ' ')" == "document:public document:readme " ]]; then
	ok "lookup-resources prints TYPE:ID lines"
else
	fail "lookup-resources prints TYPE:ID lines" "exit $status"
fi
expect "lookup-resources of nothing prints nothing" 0 "" -- permission lookup-resources $I document view group:none#member
run permission lookup-resources $I --json document view user:carl
json_check "lookup-resources --json" \
	'return lines.map((l) => l.resourceObjectId).sort().join() == "public,readme" && lines[0].lookedUpAt.token.length > 0'
run permission lookup-subjects $I document:readme view user
if ((status == 0)) && [[ "$(sort "$work/out" | tr '\n' ' ')" == "user:anne user:bob user:carl user:erin " ]]; then
	ok "lookup-subjects prints TYPE:ID lines"
else
	fail "lookup-subjects prints TYPE:ID lines" "exit $status"
fi
expect "lookup-subjects with a subject relation" 0 "group:eng#member" -- \
	permission lookup-subjects $I document:readme view group#member
run permission lookup-subjects $I document:public view user
if ((status == 0)) && grep -q "^user:\*" "$work/out"; then
	ok "lookup-subjects prints a wildcard"
else
	fail "lookup-subjects prints a wildcard" "exit $status"
fi
run permission lookup-subjects $I --json document:readme owner user
json_check "lookup-subjects --json" \
	'return lines.length == 1 && (lines[0].subject ? lines[0].subject.subjectObjectId : lines[0].subjectObjectId) == "carl"'
expect_error "lookup of an unknown permission is exit 2" "pemba: FAILED_PRECONDITION: " -- \
	permission lookup-resources $I document nope user:anne

run permission expand $I document:readme owner
if ((status == 0)) && [[ "$(cat "$work/out")" == "document:readme#owner
  user:carl" ]]; then
	ok "expand of a relation prints the leaf and its subjects"
else
	fail "expand of a relation prints the leaf and its subjects" "exit $status"
fi
run permission expand $I document:readme view
if ((status == 0)) && head -n 1 "$work/out" | grep -q "^document:readme#view (exclusion)$" &&
	grep -q "^    document:readme#viewer$" "$work/out" &&
	grep -q "^      group:eng#member$" "$work/out" &&
	grep -q "^  document:readme#banned$" "$work/out" &&
	grep -q "^    user:dave$" "$work/out"; then
	ok "expand prints an indented tree"
else
	fail "expand prints an indented tree" "exit $status"
fi
run permission expand $I --json document:readme view
json_check "expand --json" \
	'return lines.length == 1 && lines[0].treeRoot.intermediate.operation == "OPERATION_EXCLUSION" && lines[0].expandedAt.token.length > 0'

# --- watch --------------------------------------------------------------------

# wait_for FILE TEXT [TENTHS]: polls up to TENTHS/10 s (default 10 s) for
# a line containing TEXT.
wait_for() {
	for _ in $(seq "${3:-100}"); do
		grep -q -F -- "$2" "$1" && return 0
		sleep 0.1
	done
	return 1
}

start_watch() {
	"$PEMBA_BINARY" watch $I "$@" >"$work/watch.out" 2>"$work/watch.err" &
	watch_pid=$!
}
stop_watch() {
	kill "$watch_pid" 2>/dev/null
	wait "$watch_pid" 2>/dev/null
	watch_pid=""
}

start_watch
# The watch starts from "now" once its call is up; keep writing until
# it reports a change, so the test does not race the stream's start.
got=""
for n in $(seq 20); do
	"$PEMBA_BINARY" relationship touch $I document:watched viewer "user:w$n" >/dev/null
	if wait_for "$work/watch.out" "document:watched#viewer@user:w" 10; then
		got=yes
		break
	fi
done
stop_watch
if [[ -n "$got" ]] && grep -q "^TOUCH document:watched#viewer@user:w[0-9]*$" "$work/watch.out"; then
	ok "watch prints an update as it happens"
else
	echo "    watch: $(cat "$work/watch.out" "$work/watch.err")"
	fail "watch prints an update as it happens" "no TOUCH line"
fi

start=$("$PEMBA_BINARY" relationship touch $I document:readme banned user:nobody2)
"$PEMBA_BINARY" relationship delete $I document:watched viewer user:w1 >/dev/null
"$PEMBA_BINARY" relationship touch $I group:eng member user:watcher >/dev/null
start_watch --json --revision "$start"
if wait_for "$work/watch.out" "watcher"; then
	stop_watch
	cp "$work/watch.out" "$work/out"
	json_check "watch --json --revision replays changes after the token" \
		'return lines.some((l) => l.updates && l.updates.some((u) => u.operation == "OPERATION_DELETE" && u.relationship.subject.object.objectId == "w1")) && lines.every((l) => l.changesThrough.token.length > 0)'
else
	stop_watch
	fail "watch --json --revision replays changes after the token" "$(cat "$work/watch.out" "$work/watch.err")"
fi

start_watch --object-types group --revision "$start"
if wait_for "$work/watch.out" "watcher"; then
	stop_watch
	if grep -q "document:" "$work/watch.out"; then
		fail "watch --object-types filters" "$(cat "$work/watch.out")"
	else
		ok "watch --object-types filters"
	fi
else
	stop_watch
	fail "watch --object-types filters" "$(cat "$work/watch.out" "$work/watch.err")"
fi

echo "$passed passed, $failed failed"
((failed == 0))
