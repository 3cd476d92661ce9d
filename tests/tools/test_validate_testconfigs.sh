#!/usr/bin/env bash
# Runs `pemba validate` on every SpiceDB validation file in $PEMBA_TESTDATA:
# every one must pass (exit 0), caveats and expiration included, without
# crashing the binary or tripping a sanitizer.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
: "${PEMBA_TESTDATA:?set PEMBA_TESTDATA to the validation files directory}"

passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for file in "$PEMBA_TESTDATA"/*.yaml; do
	name=$(basename "$file")
	"$PEMBA_BINARY" validate "$file" >"$out" 2>&1
	status=$?
	problem=""
	if ((status >= 128)); then
		problem="crashed (exit $status)"
	elif grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error' "$out"; then
		problem="sanitizer report"
	elif ((status != 0)); then
		problem="expected exit 0, got $status"
	fi
	if [[ -n "$problem" ]]; then
		failed=$((failed + 1))
		echo "FAIL $name: $problem"
		sed 's/^/    /' "$out" | head -40
	else
		passed=$((passed + 1))
		echo "ok   $name"
	fi
done

echo "$passed passed, $failed failed"
((failed == 0))
