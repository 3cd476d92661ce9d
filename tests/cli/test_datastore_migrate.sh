#!/usr/bin/env bash
# `pemba datastore migrate status|up|down|head`: output, exit statuses,
# confirmation, and that the recorded layout version moves as promised.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

passed=0
failed=0
work=$(mktemp -d)
stdout=$work/stdout
stderr=$work/stderr
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

# check NAME WANT_STATUS STREAM TEXT -- ARGS...: runs pemba ARGS (stdin
# from /dev/null, so never a terminal) and checks the exit status and that
# STREAM (stdout|stderr) contains TEXT.
check() {
	local name=$1 want_status=$2 stream=$3 text=$4
	shift 5
	"$PEMBA_BINARY" "$@" >"$stdout" 2>"$stderr" </dev/null
	report "$name" "$want_status" "$stream" "$text" $?
}

# report NAME WANT_STATUS STREAM TEXT STATUS: judges the last run.
report() {
	local name=$1 want_status=$2 stream=$3 text=$4 status=$5 problem=""
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

# expect NAME CONDITION...: a plain assertion.
expect() {
	local name=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
		echo "ok   $name"
	else
		failed=$((failed + 1))
		echo "FAIL $name: $*"
	fi
}

db="sqlite://./pemba.db"
abs="sqlite://$work/abs.db"

# ---------------------------------------------------------------- help
check "datastore --help" 0 stdout "usage: pemba datastore migrate" -- \
	datastore --help
check "help datastore" 0 stdout "usage: pemba datastore migrate" -- \
	help datastore
check "datastore migrate --help" 0 stdout "--to N" -- \
	datastore migrate --help
check "datastore migrate up --help" 0 stdout "apply the pending" -- \
	datastore migrate up --help
check "datastore migrate status --help" 0 stdout "--datastore URI" -- \
	datastore migrate status --help
check "datastore without command" 2 stderr "usage:" -- datastore
check "datastore unknown command" 2 stderr "unknown command 'frob'" -- \
	datastore frob
check "migrate without command" 2 stderr "missing command" -- \
	datastore migrate
check "migrate unknown command" 2 stderr "unknown migrate command" -- \
	datastore migrate sideways
check "migrate unknown option" 2 stderr "unknown option '--bogus'" -- \
	datastore migrate status --bogus
check "--to on status" 2 stderr "--to applies to 'up' and 'down'" -- \
	datastore migrate status --to 1
check "--to not a number" 2 stderr "--to needs a layout version" -- \
	datastore migrate up --to two
check "--datastore without value" 2 stderr "--datastore needs a URI" -- \
	datastore migrate status --datastore

# ------------------------------------------------------- bad datastore
check "bad URI" 1 stderr "accepted: sqlite:///abs/path.db" -- \
	datastore migrate status --datastore mysql://x
check "relative URI without ./" 1 stderr "sqlite::memory:" -- \
	datastore migrate up --yes --datastore sqlite://x.db

# ------------------------------------------- status of a missing file
check "status of a missing datastore" 0 stdout "does not exist yet" -- \
	datastore migrate status
check "status lists pending migrations" 0 stdout "pending" -- \
	datastore migrate status
check "status shows versions" 0 stdout "layout version: 0 (newest known:" -- \
	datastore migrate status
expect "status creates no file" test ! -e pemba.db
check "down on a missing datastore" 1 stderr "does not exist" -- \
	datastore migrate down --yes
expect "down creates no file" test ! -e pemba.db

# --------------------------------------------------------- confirmation
check "up refuses without --yes when stdin is not a terminal" 1 stderr \
	"pass --yes" -- datastore migrate up
check "up prints its plan before refusing" 1 stdout "base_tables" -- \
	datastore migrate up
expect "refused up creates no file" test ! -e pemba.db

# ------------------------------------------------------------ up / down
check "up --to 1" 0 stdout "Applying migration 1 (base_tables)... done" -- \
	datastore migrate up --to 1 --yes
expect "default datastore is ./pemba.db" test -e pemba.db
check "status after up --to 1" 0 stdout "layout version: 1" -- \
	datastore migrate status --datastore "$db"
check "status marks applied" 0 stdout "applied" -- \
	datastore migrate status
check "status counts pending" 0 stdout "5 migrations pending" -- \
	datastore migrate status
check "head applies the rest" 0 stdout "Applying migration 3" -- \
	datastore migrate head --yes
expect "head reports the new version" \
	grep -q -F "now at layout version 6" "$stdout"
expect "head applies the settings migration" \
	grep -q -F "Applying migration 4 (settings)... done" "$stdout"
check "status at head" 0 stdout "up to date" -- datastore migrate status
check "up at head is a no-op" 0 stdout "nothing to do" -- \
	datastore migrate up --yes
check "head at head is a no-op" 0 stdout "nothing to do" -- \
	datastore migrate head
check "--to beyond the newest" 2 stderr "beyond the newest" -- \
	datastore migrate up --to 99 --yes
check "down refuses without --yes" 1 stderr "pass --yes" -- \
	datastore migrate down
check "status unchanged after refused down" 0 stdout "up to date" -- \
	datastore migrate status
check "down reverts one step" 0 stdout "Reverting migration 6" -- \
	datastore migrate down -y
check "status after down" 0 stdout "layout version: 5" -- \
	datastore migrate status
check "down --to 0 warns about data" 0 stdout "WARNING" -- \
	datastore migrate down --to 0 --yes
check "status after down to 0" 0 stdout "layout version: 0" -- \
	datastore migrate status
check "down at 0 is a no-op" 0 stdout "nothing to do" -- \
	datastore migrate down --yes
check "up again from 0" 0 stdout "now at layout version 6" -- \
	datastore migrate up --yes --datastore="$db"

check "absolute URI" 0 stdout "now at layout version 6" -- \
	datastore migrate up --yes --datastore "$abs"
expect "absolute URI creates the file" test -e "$work/abs.db"

# ------------------------------------------- interactive confirmation
if command -v script >/dev/null 2>&1; then
	printf 'n\n' | script -qec \
		"'$PEMBA_BINARY' datastore migrate down" /dev/null \
		>"$stdout" 2>"$stderr"
	report "answering n at the prompt aborts" 1 stdout "Aborted" $?
	check "nothing changed after n" 0 stdout "up to date" -- \
		datastore migrate status
	printf 'y\n' | script -qec \
		"'$PEMBA_BINARY' datastore migrate down" /dev/null \
		>"$stdout" 2>"$stderr"
	report "answering y at the prompt proceeds" 0 stdout \
		"Reverting migration 6" $?
	check "status after confirmed down" 0 stdout "layout version: 5" -- \
		datastore migrate status
else
	echo "skip interactive prompt tests (no 'script' command)"
fi

# ------------------------------------------------- migrations at once
# Three `migrate head` on a new file at once: the others wait for the one
# that migrates; all exit 0, each step applied once.
bad=0
for r in 1 2 3; do
	pids=()
	for k in 1 2 3; do
		"$PEMBA_BINARY" datastore migrate head --yes --datastore "sqlite://$work/race$r.db" \
			>"$work/race$r.$k.out" 2>"$work/race$r.$k.err" </dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
	[[ $(cat "$work"/race$r.*.out | grep -c "Applying migration 1 ") == 1 ]] || bad=$((bad + 1))
done
expect "three migrate head at once on a new file: all succeed, each step once" \
	test "$bad" = 0
check "and the file is at the newest version" 0 stdout "up to date" -- \
	datastore migrate status --datastore "sqlite://$work/race3.db"

# --------------------------------------------------- newer than known
if command -v sqlite3 >/dev/null 2>&1; then
	sqlite3 "$work/abs.db" "PRAGMA user_version = 42" >/dev/null
	check "newer layout is refused" 1 stderr "newer than this binary" -- \
		datastore migrate status --datastore "$abs"
	check "newer layout is not migrated" 1 stderr "42" -- \
		datastore migrate up --yes --datastore "$abs"
else
	echo "skip newer-layout tests (no sqlite3 command)"
fi

echo "$passed passed, $failed failed"
((failed == 0))
