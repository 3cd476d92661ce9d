#!/usr/bin/env bash
# Moving a datastore between the engines with `pemba mirror`, through
# servers on 127.0.0.1: SQLite -> PostgreSQL and PostgreSQL -> SQLite while
# the source takes writes and changes its schema, the mirror SIGKILLed
# once, then `--until-caught-up` after the source went read-only.  Each
# time the target's relationships (export, sorted) and schema equal the
# source's, and the source's ZedTokens are honoured on the target
# (at_exact_snapshot gives the source's answer, at_least_as_fresh is
# accepted, one from before the move is refused at_exact saying why,
# Watch resumes from one).  (Backups both ways: test_postgres_move.sh.)
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
mirror_pid=""
trap '[[ -n "$mirror_pid" ]] && kill -9 "$mirror_pid" 2>/dev/null; pg_cleanup' EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"

pg_require
pg_start

# shellcheck source=pg_move_lib.sh
source "$(dirname "$0")/pg_move_lib.sh"

# ------------------------------------------------ mirror SQLite -> PostgreSQL
server lite3 "sqlite://$work/lite3.db"
seed lite3
server pgm "$(pg_createdb pgm)"
mirror_run lite-to-pg "$lite3_port" "$pgm_port" lite3
same lite3 pgm "mirror SQLite -> PostgreSQL"
tokens_honoured lite3 pgm "mirror SQLite -> PostgreSQL"
"$PEMBA_BINARY" watch --revision "$mid_token" --json "${pgm[@]}" >"$work/watch.out" 2>"$work/watch.err" &
wp=$!
sleep 1.5
kill "$wp" 2>/dev/null
wait "$wp" 2>/dev/null
if grep -q '"objectId":"tok"' "$work/watch.out" && grep -q '"objectId":"w11"' "$work/watch.out"; then
	ok "mirror SQLite -> PostgreSQL: Watch on the target resumes from a source token"
else
	fail "mirror SQLite -> PostgreSQL: Watch on the target resumes from a source token" \
		"$(head -c 300 "$work/watch.out") $(cat "$work/watch.err")"
fi

# ------------------------------------------------ mirror PostgreSQL -> SQLite
server pgs "$(pg_createdb pgs)"
seed pgs
server lite4 "sqlite://$work/lite4.db"
mirror_run pg-to-lite "$pgs_port" "$lite4_port" pgs
same pgs lite4 "mirror PostgreSQL -> SQLite"
tokens_honoured pgs lite4 "mirror PostgreSQL -> SQLite"

echo "$passed passed, $failed failed"
((failed == 0))
