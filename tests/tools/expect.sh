# Shared by the tests/tools/test_*.sh scripts (sourced, not run): runs
# `pemba validate` on files under data/ and checks status and output.
#
#   expect FILE STATUS TEXT...   the exit status is STATUS and the output
#                                contains every TEXT (fixed strings)
#   expect_absent FILE TEXT...   the last run's output contains no TEXT
#   finish                       prints the tally; exit status 0 if all passed
#
# No run may crash or trip a sanitizer, whatever is expected.

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
data="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/data"

passed=0
failed=0
skipped=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# report NAME PROBLEM: counts one case as passed (PROBLEM empty) or failed.
report() {
	if [[ -n "$2" ]]; then
		failed=$((failed + 1))
		echo "FAIL $1: $2"
		sed 's/^/    /' "$out"
	else
		passed=$((passed + 1))
		echo "ok   $1"
	fi
}

# run_problem STATUS WANT_STATUS: why a finished run is wrong, or "".
run_problem() {
	local status=$1 want_status=$2
	if ((status >= 128)); then
		echo "crashed (exit $status)"
	elif grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error' "$out"; then
		echo "sanitizer report"
	elif ((status != want_status)); then
		echo "expected exit $want_status, got $status"
	fi
}

expect() {
	local file=$1 want_status=$2
	shift 2
	"$PEMBA_BINARY" validate "$data/$file" >"$out" 2>&1
	local status=$?
	local problem
	problem=$(run_problem "$status" "$want_status")
	if [[ -z "$problem" ]]; then
		for text in "$@"; do
			if ! grep -q -F -- "$text" "$out"; then
				problem="output lacks: $text"
				break
			fi
		done
	fi
	report "$file" "$problem"
}

expect_absent() {
	local file=$1
	shift
	local problem=""
	for text in "$@"; do
		if grep -q -F -- "$text" "$out"; then
			problem="output has: $text"
			break
		fi
	done
	report "$file (absent)" "$problem"
}

skip() {
	skipped=$((skipped + 1))
	echo "skip $1: $2"
}

finish() {
	echo "$passed passed, $failed failed, $skipped skipped"
	((failed == 0))
}
