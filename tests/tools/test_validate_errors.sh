#!/usr/bin/env bash
# Negative cases for `pemba validate`: each file under data/ must produce the
# expected exit status and reason, and nothing may crash.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
data="$(cd "$(dirname "$0")" && pwd)/data"

passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# expect FILE STATUS TEXT...: runs validate on data/FILE and checks the exit
# status and that the output contains every TEXT (fixed strings).
expect() {
	local file=$1 want_status=$2
	shift 2
	"$PEMBA_BINARY" validate "$data/$file" >"$out" 2>&1
	local status=$? problem=""
	if ((status >= 128)); then
		problem="crashed (exit $status)"
	elif grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error' "$out"; then
		problem="sanitizer report"
	elif ((status != want_status)); then
		problem="expected exit $want_status, got $status"
	else
		for text in "$@"; do
			if ! grep -q -F -- "$text" "$out"; then
				problem="output lacks: $text"
				break
			fi
		done
	fi
	if [[ -n "$problem" ]]; then
		failed=$((failed + 1))
		echo "FAIL $file: $problem"
		sed 's/^/    /' "$out"
	else
		passed=$((passed + 1))
		echo "ok   $file"
	fi
}

expect false_assert_true.yaml 1 \
	"false_assert_true.yaml:12:7: assertTrue failed: document:1#view@user:tom: no permission" \
	"FAIL $data/false_assert_true.yaml (1 failure)"
expect false_assert_false.yaml 1 \
	"assertFalse failed: document:1#view@user:anne: has permission"
expect bad_schema.yaml 1 "bad_schema.yaml:5:32: invalid schema" "nosuchrelation"
expect bad_relationship_syntax.yaml 1 \
	"bad_relationship_syntax.yaml:8: cannot parse relationship" \
	"document:2#viewer@user anne" "offset 22"
expect bad_relationship_schema.yaml 1 \
	"bad_relationship_schema.yaml:8: cannot load relationship \`document:1#editor@user:anne\`" \
	"editor"
expect broken_yaml.yaml 1 "YAML error at line"
expect missing_schema.yaml 1 "the file has no 'schema'"
expect wrong_types.yaml 1 "'relationships' must be a string, found a list" \
	"'assertions' must be a mapping"
expect repeated_relationship.yaml 1 \
	"found repeated relationship \`document:1#viewer@user:anne#...\`"
expect caveated_relationship.yaml 1 \
	"relationship \`document:1#viewer@user:anne[some_caveat]\` uses caveats, which are not supported yet"
expect assertion_context.yaml 1 \
	"uses caveats, which are not supported yet"
expect bad_assertion.yaml 1 "cannot parse assertTrue \`document:1#viewer\`" \
	"expected '@' after the relation"
expect not_a_mapping.yaml 1 "the file must be a YAML mapping"
expect no_such_file.yaml 1 "cannot read" "No such file or directory"
expect validation_skipped.yaml 0 \
	"note: skipped 1 expected-relations entry under 'validation'" \
	"OK $data/validation_skipped.yaml (1 assertion)"

# Several files: one failing makes the run fail, and the summary counts both.
"$PEMBA_BINARY" validate "$data/validation_skipped.yaml" \
	"$data/false_assert_true.yaml" >"$out" 2>&1
status=$?
if ((status == 1)) && grep -q -F "2 files: 1 passed, 1 failed" "$out"; then
	passed=$((passed + 1))
	echo "ok   two files, one failing"
else
	failed=$((failed + 1))
	echo "FAIL two files, one failing: exit $status"
	sed 's/^/    /' "$out"
fi

echo "$passed passed, $failed failed"
((failed == 0))
