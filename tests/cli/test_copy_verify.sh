#!/usr/bin/env bash
# `pemba relationship copy` and `pemba permission verify` against a real
# `pemba serve-testing`: --help, usage errors, the backfill recipe (verify
# finds the differences, copy fills the new relation, verify is equal),
# progress output and cursors (stdout, --json, resuming), refusals with
# the server's status, exit statuses (verify: 0 equal, 1 not, 2 error),
# --map-subject-type (SpiceDB's user -> user2 example, usersets, refusals)
# and a cursor refused on another datastore.
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

# run ARGS...: pemba ARGS, stdout/stderr in $work/out, $work/err, exit
# status in $status.
run() {
	"$PEMBA_BINARY" "$@" >"$work/out" 2>"$work/err"
	status=$?
}

# check NAME CONDITION...: ok if the command CONDITION succeeds.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else fail "$name" "failed: $*"; fi
}

has_out() { grep -q -F -- "$1" "$work/out"; }
has_err() { grep -q -F -- "$1" "$work/err"; }
exit_is() { ((status == $1)); }

# --- help and usage errors -----------------------------------------------

run relationship copy --help
check "relationship copy --help" exit_is 0
check "copy --help shows the flags" has_out "--subject-type TYPE"
check "copy --help says how to resume" has_out "--cursor"
check "copy --help shows the subject mapping" has_out "--map-subject-type FROM=TO"
check "copy --help says a revoke is never written back" has_out "never written back"
run permission verify --help
check "permission verify --help" exit_is 0
check "verify --help documents the exit statuses" has_out "0 equal, 1 not equal, 2 on any error"
run relationship --help
check "relationship --help lists copy" has_out "copy --from TYPE#RELATION"
run permission --help
check "permission --help lists verify" has_out "verify TYPE#FIRST TYPE#SECOND"

run relationship copy --insecure --from document#viewer
check "copy without --to is a usage error" exit_is 2
check "copy without --to names the flags" has_err "--from and --to are required"
run relationship copy --insecure --from document#viewer --to reader
check "a malformed --to is a usage error" has_err "malformed --to 'reader'"
run relationship copy --insecure --from document#viewer --to document#reader --batch-size 0
check "batch size 0 is a usage error" has_err "--batch-size must be a number from 1 to 100000"
run relationship copy --insecure --from document#viewer --to document#reader --max-batch-ms 600001
check "a max batch time over 10 min is a usage error" has_err "--max-batch-ms must be a number from 0 to 600000"
run relationship copy --insecure --from document#viewer --to document#reader --max-batch-ms -5
check "a negative max batch time is a usage error" has_err "--max-batch-ms must be a number from 0 to 600000"
run relationship copy --help
check "copy --help shows --max-batch-ms" has_out "--max-batch-ms MS"
run permission verify --insecure document#view folder#view
check "verify of two types is a usage error" has_err "must name the same type"
check "verify of two types exits 2" exit_is 2

# --- the server -------------------------------------------------------------

"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=""
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" "$work/server.out" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.05
done
if [[ -z "$port" ]]; then
	echo "FAIL serve-testing did not report its port"
	cat "$work/server.err"
	exit 1
fi
export PEMBA_ENDPOINT="127.0.0.1:$port"
export PEMBA_TOKEN="copy-verify-$$"
I=--insecure

cat >"$work/schema.zed" <<'EOF'
caveat only_on(day int) {
	day == 1
}

definition user {}

definition group {
	relation member: user | group#member
}

definition document {
	relation viewer: user | group#member | user:* | user with only_on
	relation reader: user | group#member | user:* | user with only_on
	relation owner: user
	permission view = viewer + owner
	permission read = reader + owner
}
EOF
run schema write $I "$work/schema.zed"
check "schema written" exit_is 0
for rel in "document:1#viewer@user:anne" "document:1#viewer@group:eng#member" \
	"document:2#viewer@user:*" "document:3#viewer@user:bob[only_on]" \
	"document:4#owner@user:carl" "group:eng#member@user:dana"; do
	run relationship touch $I "$rel"
	((status == 0)) || fail "touch $rel" "exit $status"
done

# --- verify before the backfill: the differences --------------------------

run permission verify $I document#view document#read
check "verify of unequal permissions exits 1" exit_is 1
check "verify names a missing subject" has_out "document:1 user:anne view=yes read=no"
check "verify names a missing userset" has_out "document:1 group:eng#member view=yes read=no"
check "verify reaches subjects through groups" has_out "document:1 user:dana view=yes read=no"
check "verify compares wildcards" has_out "document:2 user:* view=yes read=no"
check "verify shows caveated grants" has_out "document:3 user:bob view=conditional read=no"
check "verify prints the summary" has_out "summary: resources=4 differences=5 equal=false checked_at="

run permission verify $I document#view read --max-differences 2
check "verify --max-differences limits the lines" test "$(grep -c '^document:' "$work/out")" -eq 2
check "verify --max-differences still counts all" has_out "differences=5"

# --- copy -------------------------------------------------------------------

run relationship copy $I --from document#viewer --to document#reader --batch-size 2
check "copy exits 0 when done" exit_is 0
check "copy prints the final cursor on stdout" test "$(wc -l <"$work/out")" -eq 1 -a "$(head -c 3 "$work/out")" = "c2:"
final_cursor=$(cat "$work/out")
check "copy reports progress with a cursor on stderr" has_err "pemba: copied 4 relationships ("
check "progress says how to resume" has_err "resume with --cursor c2:"
check "copy reports the end" has_err "pemba: done: 4 relationships copied from document#viewer to document#reader"

run relationship read $I document reader
check "the target has every relationship" test "$(wc -l <"$work/out")" -eq 4
check "the caveat was copied" has_out "document:3#reader@user:bob[only_on]"

run permission verify $I document#view document#read
check "verify after the backfill exits 0" exit_is 0
check "verify after the backfill prints only the summary" test "$(wc -l <"$work/out")" -eq 1
check "verify after the backfill is equal" has_out "differences=0 equal=true"

run relationship copy $I --from document#viewer --to document#reader --max-batch-ms 50
check "copying again is harmless (with a batch time budget too)" exit_is 0

run relationship copy $I --from document#viewer --to document#reader --cursor "$final_cursor"
check "resuming a finished copy exits 0" exit_is 0
check "resuming a finished copy keeps the count" has_err "pemba: done: 4 relationships copied"

# --json: one progress message per batch, the last done; resuming from the
# first one's cursor finishes the copy.
run relationship copy $I --json --from document#viewer --to document#reader --batch-size 1
check "copy --json exits 0" exit_is 0
check "copy --json prints one message per batch and a final one" test "$(wc -l <"$work/out")" -eq 5
first_cursor=$(head -n 1 "$work/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cursor"])')
last_done=$(tail -n 1 "$work/out" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("done"))')
check "the last progress message is done" test "$last_done" = "True"
run relationship copy $I --from document#viewer --to document#reader --batch-size 1 --cursor "$first_cursor"
check "resuming from the first cursor exits 0" exit_is 0
check "resuming counts the earlier batches" has_err "pemba: done: 4 relationships copied"

# --subject-type: only those subjects.
run relationship copy $I --from document#viewer --to document#owner --subject-type group
check "a subject type the target lacks is refused" exit_is 2
check "the refusal is the server's INVALID_ARGUMENT" has_err "pemba: INVALID_ARGUMENT: cannot copy"
check "the refusal names the type" has_err "\`group#member\`"
run relationship read $I document owner
check "a refused copy writes nothing" test "$(wc -l <"$work/out")" -eq 1

run relationship copy $I --from document#viewer --to document#nope
check "an unknown target is FAILED_PRECONDITION" has_err "pemba: FAILED_PRECONDITION: "
run relationship copy $I --from document#viewer --to document#reader --cursor bogus
check "a bad cursor is INVALID_ARGUMENT" has_err "pemba: INVALID_ARGUMENT: invalid copy cursor"
check "a bad cursor exits 2" exit_is 2

run permission verify $I document#view document#nope
check "verify of an unknown permission exits 2" exit_is 2
check "verify of an unknown permission is FAILED_PRECONDITION" has_err "pemba: FAILED_PRECONDITION: "

# One difference again: 0 -> 1.
run relationship touch $I "document:5#reader@user:erin"
run permission verify $I document#view document#read
check "a new difference makes verify exit 1" exit_is 1
check "the new difference is reported" has_out "document:5 user:erin view=no read=yes"

# --- subject mappings: SpiceDB's guide example ------------------------------

# viewer: user moves to new_viewer: user2 (and group#member to team#member).
export PEMBA_TOKEN="copy-map-$$"
cat >"$work/map.zed" <<'EOF'
definition user {}
definition user2 {}

definition group {
	relation member: user
}

definition team {
	relation member: user2
}

definition document {
	relation viewer: user | group#member
	relation new_viewer: user2 | team#member
	permission view = viewer
}
EOF
run schema write $I "$work/map.zed"
check "mapping schema written" exit_is 0
for rel in "document:1#viewer@user:anne" "document:2#viewer@user:bob" \
	"document:2#viewer@group:eng#member" "team:eng#member@user2:carl"; do
	run relationship touch $I "$rel"
	((status == 0)) || fail "touch $rel" "exit $status"
done
run relationship copy $I --from document#viewer --to document#new_viewer
check "copying user to user2 without a mapping is refused" exit_is 2
check "the refusal names the type the target lacks" has_err "INVALID_ARGUMENT: cannot copy \`document#viewer\` to \`document#new_viewer\`: subjects of type \`user\` are not allowed"
run relationship copy $I --from document#viewer --to document#new_viewer --map-subject-type user=user3 --map-subject-type group#member=team#member
check "a mapping to a type the target does not allow exits 2" exit_is 2
check "the refusal names the mapped type" has_err "INVALID_ARGUMENT: cannot map subject type \`user\` to \`user3\`: relation \`document#new_viewer\` does not allow subjects of type \`user3\`"
run relationship copy $I --from document#viewer --to document#new_viewer --map-subject-type user=user2
check "leaving a used type unmapped is refused" has_err "\`group#member\` are not allowed"
run relationship read $I document new_viewer
check "refused mappings wrote nothing" test ! -s "$work/out"
run relationship copy $I --from document#viewer --to document#new_viewer --map-subject-type user=user2 --map-subject-type group#member=team#member
check "copy with mappings exits 0" exit_is 0
map_cursor=$(cat "$work/out")
check "copy with mappings reports the count" has_err "pemba: done: 3 relationships copied"
run relationship read $I document new_viewer
check "user became user2" has_out "document:1#new_viewer@user2:anne"
check "the second user became user2" has_out "document:2#new_viewer@user2:bob"
check "group#member became team#member" has_out "document:2#new_viewer@team:eng#member"
check "nothing else was written" test "$(wc -l <"$work/out")" -eq 3
run permission check $I document:2 new_viewer user2:carl
check "a mapped userset grants through the new type" has_out "true"
run relationship copy $I --from document#viewer --to document#new_viewer --subject-type group --map-subject-type group#member=team#member
check "--subject-type still names a source type" exit_is 0
check "--subject-type with a mapping copies only that type" has_err "pemba: done: 1 relationships copied"

# --- cursors are bound to their datastore ------------------------------------

# serve-testing keeps one datastore per token: another token is another
# datastore, with the same schema and data.
export PEMBA_TOKEN="copy-map-other-$$"
run schema write $I "$work/map.zed"
run relationship touch $I "document:1#viewer@user:anne"
run relationship copy $I --from document#viewer --to document#new_viewer --map-subject-type user=user2 --map-subject-type group#member=team#member --cursor "$map_cursor"
check "a cursor of another datastore exits 2" exit_is 2
check "a cursor of another datastore is refused with the one message" has_err "pemba: OUT_OF_RANGE: cannot resume the copy from this cursor: it was made on another datastore; restart the copy without a cursor"
run relationship read $I document new_viewer
check "a refused cursor writes nothing" test ! -s "$work/out"

echo "$passed passed, $failed failed"
((failed == 0))
