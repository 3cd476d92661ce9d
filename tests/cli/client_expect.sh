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

# check NAME COMMAND...: ok when COMMAND succeeds, else a failure naming it.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else fail "$name" "failed: $*"; fi
}
# Conditions for check on the last run.
has_out() { grep -q -F -- "$1" "$work/out"; }
has_err() { grep -q -F -- "$1" "$work/err"; }
exit_is() { ((status == $1)); }

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

# start_serve_testing: starts `pemba serve-testing` on 127.0.0.1 (an
# ephemeral port) in the background, logs in $work/server.{out,err}, sets
# $server_pid and exports PEMBA_ENDPOINT.  The caller's EXIT trap stops
# it (kill "$server_pid").  Exits the script (status 1) when the server
# reports no port within 10 s.
start_serve_testing() {
	"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 "$@" \
		>"$work/server.out" 2>"$work/server.err" &
	server_pid=$!
	local port="" _
	for _ in $(seq 100); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" "$work/server.out" | head -n 1)
		[[ -n "$port" ]] && break
		sleep 0.1
	done
	if [[ -z "$port" ]]; then
		echo "FAIL serve-testing did not report its port"
		cat "$work/server.err"
		echo "$passed passed, $((failed + 1)) failed"
		exit 1
	fi
	export PEMBA_ENDPOINT="127.0.0.1:$port"
}
