#!/usr/bin/env bash
# `pemba relationship import|export|bulk-delete` against a real `pemba
# serve-testing` (each token its own empty store): export -> import into
# an empty store round-trips exactly (caveats with contexts, expirations,
# subject relations); a malformed line is refused naming the line and
# nothing is written; validation-file YAML; --touch re-runs; a failed
# transaction leaves the earlier ones; bulk-delete removes what matches
# and nothing else; --json outputs parse as JSON.
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

is_json() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    json.loads(l)' "$1"; }
# bounded: no command of this test may hang
run() {
	timeout 60 "$PEMBA_BINARY" "$@" >"$work/out" 2>"$work/err"
	status=$?
}

# --- help and usage ------------------------------------------------------

run relationship --help
check "relationship --help lists import, export, bulk-delete" \
	grep -q "bulk-delete TYPE" "$work/out"
run relationship import --help
check "import --help" exit_is 0
check "import --help says a big file is several transactions" has_out "SEVERAL transactions"
check "import --help says what a failed transaction leaves" has_out "the transactions before it stay written"
expect_usage_error "import without FILE" "missing arguments" -- relationship import
expect_usage_error "import --batch-size 0" "--batch-size must be" -- relationship import --batch-size 0 x
expect_usage_error "bulk-delete without a filter" "missing arguments" -- relationship bulk-delete

start_serve_testing
A=(--insecure --token "bulk-a-$$")
B=(--insecure --token "bulk-b-$$")
C=(--insecure --token "bulk-c-$$")

cat >"$work/schema.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int) {
	level >= min
}

definition group {
	relation member: user | group#member
}

definition doc {
	relation viewer: user | user with has_level | user with expiration | group#member
	relation editor: user
	relation reader: user with has_level and expiration
	permission view = viewer + editor + reader
}
EOF
for t in A B C; do
	declare -n opts=$t
	run schema write "${opts[@]}" "$work/schema.zed"
	check "schema written ($t)" exit_is 0
done

# --- import --------------------------------------------------------------

{
	echo "# a comment"
	echo "// another"
	echo
	echo 'doc:1#viewer@user:anne[has_level:{"min":3}]'
	echo "doc:1#viewer@user:bob[expiration:2099-01-02T03:04:05Z]"
	echo "  doc:1#viewer@group:eng#member  "
	echo "group:eng#member@user:carl"
	echo 'doc:2#reader@user:eve[has_level:{"level":1,"min":2}][expiration:2098-05-06T07:08:09Z]'
	for i in $(seq 1 2500); do echo "doc:d$i#editor@user:u$i"; done
} >"$work/in.txt"
run relationship import "${A[@]}" --batch-size 100 --batches-per-transaction 3 "$work/in.txt"
check "import exits 0" exit_is 0
check "import reports the count and transactions" has_out "imported 2505 relationships in 9 transactions (import)"

run relationship export "${A[@]}" --output "$work/a.txt"
check "export exits 0" exit_is 0
check "export says the count" has_err "exported 2505 relationships"
check "export writes the caveat and its context" grep -qxF 'doc:1#viewer@user:anne[has_level:{"min":3}]' "$work/a.txt"
check "export writes a caveat with an expiration" grep -qxF 'doc:2#reader@user:eve[has_level:{"level":1,"min":2}][expiration:2098-05-06T07:08:09Z]' "$work/a.txt"
check "export writes the expiration" grep -qxF 'doc:1#viewer@user:bob[expiration:2099-01-02T03:04:05Z]' "$work/a.txt"

# export | import into an empty store round-trips exactly
"$PEMBA_BINARY" relationship export "${A[@]}" 2>/dev/null | timeout 60 "$PEMBA_BINARY" relationship import "${B[@]}" - >"$work/out" 2>"$work/err"
status=$?
check "export | import - exits 0" exit_is 0
run relationship export "${B[@]}" --output "$work/b.txt"
check "the copy's export equals the original's" cmp -s <(sort "$work/a.txt") <(sort "$work/b.txt")
check "the export has every input line" cmp -s <(grep -v '^#\|^//\|^$' "$work/in.txt" | sed 's/^ *//; s/ *$//' | sort) <(sort "$work/a.txt")

# importing the same again: ALREADY_EXISTS; --touch is idempotent
run relationship import "${B[@]}" "$work/a.txt"
check "re-import fails (exit 2)" exit_is 2
check "re-import names ALREADY_EXISTS" has_err "ALREADY_EXISTS"
check "re-import says what was written" has_err "0 of 2505 relationships were written"
run relationship import "${B[@]}" --touch --json "$work/a.txt"
check "--touch re-import exits 0" exit_is 0
check "--touch --json summary is JSON" is_json "$work/out"
check "--touch --json says touch" has_out '"method":"touch"'
run relationship export "${B[@]}" --output "$work/b2.txt"
check "--touch changed nothing" cmp -s <(sort "$work/a.txt") <(sort "$work/b2.txt")

# --- a malformed line: refused, named, nothing written ---------------------

{
	echo "doc:x1#editor@user:a"
	echo "doc:x2#editor@user:b"
	echo "doc:x3#editor user:c"
} >"$work/bad.txt"
run relationship import "${C[@]}" "$work/bad.txt"
check "a malformed line fails (exit 2)" exit_is 2
check "the error names the file and line" has_err "bad.txt:line 3: malformed relationship"
run relationship export "${C[@]}"
check "nothing was written" test ! -s "$work/out"

# a failed transaction leaves the earlier ones
{
	for i in $(seq 1 20); do echo "doc:t$i#editor@user:a"; done
	echo "doc:t21#editor@group:eng"   # the schema refuses group for editor
	echo "doc:t22#editor@user:a"
} >"$work/refused.txt"
run relationship import "${C[@]}" --batch-size 5 --batches-per-transaction 2 "$work/refused.txt"
check "a refused relationship fails (exit 2)" exit_is 2
check "stderr says the earlier transactions stay" has_err "20 of 22 relationships were written in 2 transactions (through line 20)"
run relationship read "${C[@]}" doc
check "the earlier transactions are there" test "$(wc -l <"$work/out")" -eq 20

# --- YAML ------------------------------------------------------------------

cat >"$work/v.yaml" <<'EOF'
schema: |-
  definition user {}
relationships: |-
  doc:y1#editor@user:anne

  // comment
  doc:y2#viewer@user:bob[has_level:{"min":1}]
assertions:
  assertTrue: []
EOF
run relationship import "${C[@]}" --json "$work/v.yaml"
check "YAML import exits 0" exit_is 0
check "YAML import --json is JSON" is_json "$work/out"
check "YAML import counts 2" has_out '"imported":2'
run relationship read "${C[@]}" doc:y2
check "YAML relationships are there" has_out 'doc:y2#viewer@user:bob[has_level:{"min":1}]'
printf 'relationships: |-\n  doc:y3#editor@user:a\n  doc:y4#editor@@user:b\n' >"$work/bad.yaml"
run relationship import "${C[@]}" "$work/bad.yaml"
check "a malformed YAML relationship names its line" has_err "bad.yaml:line 3: malformed relationship"

# --- export --json ----------------------------------------------------------

run relationship export "${A[@]}" --json doc:1
check "export --json exits 0" exit_is 0
check "export --json is JSON" is_json "$work/out"
check "export with a filter: 3 lines" test "$(wc -l <"$work/out")" -eq 3

# --output: a file that exists is complete
run relationship export --insecure --endpoint 127.0.0.1:1 --output "$work/none.txt"
check "export to an unreachable server fails (exit 2)" exit_is 2
check "and leaves no file" test ! -e "$work/none.txt" -a ! -e "$work/none.txt.partial"
run relationship export "${A[@]}" --output "$work/again.txt"
check "export --output leaves no .partial" test -s "$work/again.txt" -a ! -e "$work/again.txt.partial"

# --- bulk-delete ------------------------------------------------------------

run relationship bulk-delete "${B[@]}" doc "" user </dev/null
check "bulk-delete without --yes and a terminal refuses" exit_is 2
check "the refusal says --yes" has_err "pass --yes"
run relationship bulk-delete "${B[@]}" --yes --limit 300 doc editor
check "bulk-delete exits 0" exit_is 0
check "bulk-delete counts" has_out "deleted 2500 relationships"
run relationship export "${B[@]}"
check "only the others are left" cmp -s <(grep -v '#editor@' "$work/a.txt" | sort) <(sort "$work/out")
run relationship bulk-delete "${B[@]}" --yes --json doc
check "bulk-delete --json is JSON" is_json "$work/out"
check "bulk-delete --json counts" has_out '"deleted":4'
run relationship read "${B[@]}" group
check "another type is untouched" has_out "group:eng#member@user:carl"

# --- on a terminal: progress and confirmation (needs script(1)) -------------

if command -v script >/dev/null; then
	# run_tty INPUT ARGS...: pemba ARGS on a pseudo-terminal fed INPUT;
	# everything it printed in $work/out.
	run_tty() {
		local input=$1 line
		shift
		line=$(printf '%q ' "$PEMBA_BINARY" "$@")
		printf '%s\n' "$input" | SHELL=/bin/sh timeout 60 script -q -e -c "$line" /dev/null >"$work/out" 2>&1
		status=$?
		: >"$work/err"
	}
	run_tty "" relationship import "${C[@]}" --touch "$work/in.txt"
	check "import on a terminal exits 0" exit_is 0
	check "import on a terminal shows the count and rate" grep -qE 'pemba: imported 2505 relationships, [0-9]+/s in [0-9.]+s' "$work/out"
	run_tty n relationship bulk-delete "${C[@]}" doc
	check "bulk-delete on a terminal asks" has_out "delete every relationship matching doc? [y/N]"
	check "answering no deletes nothing (exit 2)" exit_is 2
	run relationship read "${C[@]}" doc:2
	check "answering no deletes nothing" has_out "doc:2#"
	run_tty y relationship bulk-delete "${C[@]}" doc
	check "answering yes deletes" exit_is 0
	check "bulk-delete on a terminal shows the count" grep -qE 'pemba: deleted [0-9]+ relationships, [0-9]+/s in [0-9.]+s' "$work/out"
	run relationship read "${C[@]}" doc
	check "answering yes deleted every doc" test ! -s "$work/out"
else
	echo "skip terminal checks: no script(1)"
fi

echo "$passed passed, $failed failed"
((failed == 0))
