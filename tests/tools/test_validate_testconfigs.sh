#!/usr/bin/env bash
# Runs `pemba validate` on every SpiceDB validation file in $PEMBA_TESTDATA:
# every one must pass (exit 0), caveats and expiration included, without
# crashing the binary or tripping a sanitizer.
#
# PEMBA_TEST_DATASTORE=postgres runs each file in a fresh PostgreSQL
# database instead of the in-memory SQLite one (`validate --datastore`):
# created with psql on the cluster whose admin URI is $PEMBA_TEST_PG_URI or
# in the file $PEMBA_TEST_PG_URI_FILE (tests/support/pg_cluster.sh, the
# CTest fixture pg_cluster), dropped afterwards.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
: "${PEMBA_TESTDATA:?set PEMBA_TESTDATA to the validation files directory}"

passed=0
failed=0
out=$(mktemp)
pg_admin=""
pg_db=""
pg_written=0
pg_refused=0
cleanup() {
	rm -f "$out" "$out.again"
	if [[ -n "$pg_db" ]]; then
		psql "$pg_admin" -qAt -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1
	fi
}
trap cleanup EXIT

if [[ "${PEMBA_TEST_DATASTORE:-sqlite}" == postgres ]]; then
	pg_admin=${PEMBA_TEST_PG_URI:-}
	if [[ -z "$pg_admin" && -n "${PEMBA_TEST_PG_URI_FILE:-}" ]]; then
		pg_admin=$(cat "$PEMBA_TEST_PG_URI_FILE") || exit 1
	fi
	[[ -n "$pg_admin" ]] || {
		echo "PEMBA_TEST_DATASTORE=postgres needs PEMBA_TEST_PG_URI or PEMBA_TEST_PG_URI_FILE" >&2
		exit 1
	}
	command -v psql >/dev/null || { echo "psql not found (Debian: postgresql-client)" >&2; exit 1; }
	psql "$pg_admin" -qAt -c 'SELECT 1' >/dev/null || { echo "cannot reach $pg_admin" >&2; exit 1; }
fi

# The admin URI with its database replaced by $1.
pg_uri_of() {
	local base=${pg_admin%%\?*} query=""
	[[ "$pg_admin" == *\?* ]] && query="?${pg_admin#*\?}"
	echo "${base%/*}/$1$query"
}

seq=0
for file in "$PEMBA_TESTDATA"/*.yaml; do
	name=$(basename "$file")
	if [[ -n "$pg_admin" ]]; then
		seq=$((seq + 1))
		pg_db="pemba_testconfig_$$_$seq"
		if ! psql "$pg_admin" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $pg_db" >"$out" 2>&1; then
			failed=$((failed + 1))
			echo "FAIL $name: cannot create database $pg_db"
			sed 's/^/    /' "$out" | head -20
			pg_db=""
			continue
		fi
		"$PEMBA_BINARY" validate --datastore "$(pg_uri_of "$pg_db")" "$file" >"$out" 2>&1
		status=$?
		# The file really went into PostgreSQL (its schema is a revision).
		revs=$(psql "$(pg_uri_of "$pg_db")" -qAt -c 'SELECT count(*) FROM revisions' 2>/dev/null)
		((${revs:-0} > 0)) && pg_written=$((pg_written + 1))
		# Once, that a database with history is refused (exit 2).
		if ((status == 0 && ${revs:-0} > 0 && pg_refused == 0)); then
			pg_refused=1
			"$PEMBA_BINARY" validate --datastore "$(pg_uri_of "$pg_db")" "$file" >"$out.again" 2>&1
			again=$?
			if ((again != 2)) || ! grep -q -F "the datastore is not empty" "$out.again"; then
				failed=$((failed + 1))
				echo "FAIL $name again into $pg_db: expected exit 2 and 'the datastore is not empty', got $again"
				sed 's/^/    /' "$out.again" | head -20
			fi
			rm -f "$out.again"
		fi
		psql "$pg_admin" -qAt -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1
		pg_db=""
	else
		"$PEMBA_BINARY" validate "$file" >"$out" 2>&1
		status=$?
	fi
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

if [[ -n "$pg_admin" ]] && ((pg_written == 0)); then
	echo "FAIL: no file wrote a revision into its PostgreSQL database"
	failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
((failed == 0))
