# Shared by the client-command shell tests (sourced, not run): pass/fail
# bookkeeping and the expectations on one pemba invocation.  The sourcing
# script sets $work (a scratch directory) and $PEMBA_BINARY, and prints
# "$passed passed, $failed failed" at the end.
# shellcheck shell=bash

passed=0
failed=0

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

# run ARGS...: runs pemba ARGS with stdout/stderr in $work/out, $work/err
# and the exit status in $status.
run() {
	"$PEMBA_BINARY" "$@" >"$work/out" 2>"$work/err"
	status=$?
}

# expect NAME WANT_STATUS WANT_STDOUT -- ARGS...: exact stdout.
expect() {
	local name=$1 want_status=$2 want=$3
	shift 4
	run "$@"
	if ((status != want_status)); then
		fail "$name" "expected exit $want_status, got $status"
	elif [[ "$(cat "$work/out")" != "$want" ]]; then
		fail "$name" "stdout is not: $want"
	else
		ok "$name"
	fi
}

# expect_error NAME STATUS_LINE_PREFIX -- ARGS...: exit 2, nothing on
# stdout, and one stderr line starting with the prefix.
expect_error() {
	local name=$1 prefix=$2
	shift 3
	run "$@"
	if ((status != 2)); then
		fail "$name" "expected exit 2, got $status"
	elif [[ -s "$work/out" ]]; then
		fail "$name" "stdout is not empty"
	elif [[ $(wc -l <"$work/err") -ne 1 ]]; then
		fail "$name" "stderr is not one line"
	elif [[ "$(head -c ${#prefix} "$work/err")" != "$prefix" ]]; then
		fail "$name" "stderr does not start with: $prefix"
	else
		ok "$name"
	fi
}

# expect_usage_error NAME TEXT -- ARGS...: exit 2, stderr mentions TEXT and
# shows the usage.
expect_usage_error() {
	local name=$1 text=$2
	shift 3
	run "$@"
	if ((status != 2)); then
		fail "$name" "expected exit 2, got $status"
	elif ! grep -q -F -- "$text" "$work/err"; then
		fail "$name" "stderr lacks: $text"
	elif ! grep -q "^usage: pemba " "$work/err"; then
		fail "$name" "stderr lacks the usage"
	else
		ok "$name"
	fi
}

