#!/usr/bin/env bash
# The command line's contract: help on every command, --version, and exit
# status 2 (usage on stderr) for unknown commands and bad usage.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

passed=0
failed=0
stdout=$(mktemp)
stderr=$(mktemp)
trap 'rm -f "$stdout" "$stderr"' EXIT

# check NAME WANT_STATUS STREAM TEXT -- ARGS...: runs pemba ARGS and checks
# the exit status and that STREAM (stdout|stderr) contains TEXT.
check() {
	local name=$1 want_status=$2 stream=$3 text=$4
	shift 5
	"$PEMBA_BINARY" "$@" >"$stdout" 2>"$stderr"
	local status=$? problem=""
	local file=$stdout
	[[ $stream == stderr ]] && file=$stderr
	if ((status != want_status)); then
		problem="expected exit $want_status, got $status"
	elif ! grep -q -F -- "$text" "$file"; then
		problem="$stream lacks: $text"
	fi
	if [[ -n "$problem" ]]; then
		failed=$((failed + 1))
		echo "FAIL $name: $problem"
		sed 's/^/    stdout: /' "$stdout"
		sed 's/^/    stderr: /' "$stderr"
	else
		passed=$((passed + 1))
		echo "ok   $name"
	fi
}

version=$(sed -n 's/^#define PEMBA_VERSION "\(.*\)"/\1/p' \
	"${PEMBA_SOURCE_DIR:-$(dirname "$0")/../..}/include/pemba.h")

check "--help lists the commands" 0 stdout "usage: pemba <command>" -- --help
check "-h is --help" 0 stdout "validate" -- -h
check "help alone is --help" 0 stdout "datastore" -- help
check "--version prints the version" 0 stdout "pemba $version" -- --version
check "no arguments is a usage error" 2 stderr "usage: pemba" --
check "unknown command exits 2" 2 stderr "unknown command 'frobnicate'" -- frobnicate
check "unknown command prints usage" 2 stderr "usage: pemba <command>" -- frobnicate
check "help of an unknown command exits 2" 2 stderr "unknown command 'nope'" -- help nope

# Every command in the table answers --help and `pemba help CMD`.
commands=$("$PEMBA_BINARY" --help | sed -n '/^commands:/,/^$/p' | awk 'NF && !/^commands:/ {print $1}')
if [[ -z "$commands" ]]; then
	failed=$((failed + 1))
	echo "FAIL --help lists no commands"
fi
for cmd in $commands; do
	check "$cmd --help" 0 stdout "usage: pemba $cmd" -- "$cmd" --help
	check "help $cmd" 0 stdout "usage: pemba $cmd" -- help "$cmd"
done

check "validate without files exits 2" 2 stderr "no files given" -- validate
check "validate with a bad option exits 2" 2 stderr "unknown option '--frob'" -- validate --frob x.yaml

echo "$passed passed, $failed failed"
((failed == 0))
