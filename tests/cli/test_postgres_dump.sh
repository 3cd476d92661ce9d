#!/usr/bin/env bash
# A PostgreSQL datastore copied with pg_dump -Fc / pg_restore is the same
# datastore: relationships and schemas written over several revisions
# (ZedTokens collected, checks and reads at each token with
# at_exact_snapshot recorded), the database dumped while its server runs
# and restored into a new database; a server on the copy gives the same
# answers at the same old tokens, accepts the original's tokens (same
# identity, not "another datastore"), lists no stale lease from the dump,
# and writes on at revisions after the dumped ones.  After `datastore
# new-identity` the copy refuses the original's tokens.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
trap 'pg_cleanup' EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"

pg_require
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
pg_start
orig=$(pg_createdb orig) || exit 1
copy=$(pg_createdb copy) || exit 1
sql() { psql -X -q -t -A "$1" -c "$2" 2>/dev/null; }

pg_serve orig "$orig"
orig_pid=$serve_pid
o=(--insecure --endpoint "127.0.0.1:$serve_port")

cat >"$work/v1.zed" <<'ZED'
definition user {}
definition doc {
	relation viewer: user
	permission view = viewer
}
ZED
cat >"$work/v2.zed" <<'ZED'
definition user {}
definition group {
	relation member: user
}
definition doc {
	relation viewer: user | group#member
	relation editor: user
	permission view = viewer + editor
	permission edit = editor
}
ZED

# Revisions, each with its token (the client prints it).
tokens=()
step() { # ARGS...: a write on the original; its token appended
	local t
	t=$("$PEMBA_BINARY" "$@" "${o[@]}" 2>"$work/err") ||
		{ echo "FAIL write $*: $(cat "$work/err")"; echo "$passed passed, $((failed + 1)) failed"; exit 1; }
	tokens+=("$t")
}
step schema write "$work/v1.zed"
step relationship create doc:1 viewer user:anne
step relationship create doc:1 viewer user:bob
step relationship create doc:2 viewer user:anne
step relationship delete doc:1 viewer user:anne
step schema write "$work/v2.zed"
step relationship create doc:1 editor user:carl
step relationship create group:g member user:dan
step relationship create doc:2 viewer group:g#member
step relationship delete doc:1 viewer user:bob
step relationship touch doc:1 editor user:bob
for i in $(seq 1 8); do step relationship create "doc:bulk$i" viewer "user:b$i"; done
echo "    ${#tokens[@]} revisions written"

# answers SIDE CONN...: at every token: lookup-resources (view for three
# users, edit for one) and a read of every doc; one line each.
answers() {
	local conn=("${@:2}") t i=0 u
	for t in "${tokens[@]}"; do
		i=$((i + 1))
		for u in user:anne user:bob user:dan; do
			echo "$i view $u: $("$PEMBA_BINARY" permission lookup-resources doc view "$u" "${conn[@]}" \
				--consistency-at-exact "$t" 2>&1 | sort | tr '\n' ' ')"
		done
		echo "$i edit user:bob: $("$PEMBA_BINARY" permission lookup-resources doc edit user:bob "${conn[@]}" \
			--consistency-at-exact "$t" 2>&1 | sort | tr '\n' ' ')"
		echo "$i read: $("$PEMBA_BINARY" relationship read doc "${conn[@]}" \
			--consistency-at-exact "$t" 2>&1 | sort | tr '\n' ' ')"
	done >"$work/answers.$1"
}
# The first eleven revisions (every kind of change) and the last.
all_tokens=("${tokens[@]}")
tokens=("${all_tokens[@]:0:11}" "${all_tokens[-1]}")
answers orig "${o[@]}"
# The only errors: `edit` before schema v2 (revision 6) existed: a read at
# revision R is evaluated with the schema of R.
grep "pemba:" "$work/answers.orig" | cut -d' ' -f1-4 >"$work/out"
printf '%s\n' "1 edit user:bob: pemba:" "2 edit user:bob: pemba:" "3 edit user:bob: pemba:" \
	"4 edit user:bob: pemba:" "5 edit user:bob: pemba:" >"$work/err"
check "on the original the old tokens answer, with each revision's schema" cmp -s "$work/out" "$work/err"
check "the answers differ between revisions (the tokens matter)" \
	eval '[[ $(grep -c "view user:anne: doc:1 " "$work/answers.orig") -ge 1 && $(grep -c "view user:anne: doc:2 \$" "$work/answers.orig") -ge 1 ]]'

# ------------------------------------------------------------- dump, restore
# While the original serves (pg_dump reads one consistent snapshot).
"$PGBIN/pg_dump" -Fc -f "$work/orig.dump" "$orig" 2>"$work/err"
check "pg_dump -Fc of the live datastore" test -s "$work/orig.dump"
"$PGBIN/pg_restore" --no-owner -d "$copy" "$work/orig.dump" >"$work/out" 2>"$work/err"
check "pg_restore into a new database" test $? = 0
check "the identity is the same in both databases" \
	test "$(sql "$orig" "SELECT value FROM meta WHERE key = 'datastore_id'")" = \
	"$(sql "$copy" "SELECT value FROM meta WHERE key = 'datastore_id'")"
run datastore migrate status --datastore "$copy"
check "the copy is at the newest layout" has_out "up to date."
check "the original server's lease record came along but is not listed" \
	eval '! has_out "in use by"'

pg_serve copy "$copy"
copy_pid=$serve_pid
c=(--insecure --endpoint "127.0.0.1:$serve_port")
answers copy "${c[@]}"
if cmp -s "$work/answers.orig" "$work/answers.copy"; then
	ok "the copy gives the same answers at the same old tokens ($(wc -l <"$work/answers.orig") checks and reads)"
else
	fail "the copy gives the same answers at the same old tokens" "$(diff "$work/answers.orig" "$work/answers.copy" | head -10)"
fi
last=${all_tokens[-1]}
run permission check doc:2 view user:dan --consistency-at-least "$last" "${c[@]}"
check "the original's newest token is accepted at_least_as_fresh" has_out "true"
run relationship read doc:bulk8 --consistency-at-exact "$last" "${c[@]}"
check "and at_exact_snapshot" has_out "doc:bulk8#viewer@user:b8"
run schema read "${c[@]}"
check "the copy serves the newest schema" has_out "permission edit = editor"

# The copy goes on at revisions after the dumped ones; the original too,
# each on its own (same identity: a copy meant to live apart gets a new one).
run relationship create doc:3 viewer user:erin "${c[@]}"
check "the copy accepts writes" exit_is 0
t_copy=$(cat "$work/out")
run permission check doc:3 view user:erin --consistency-at-least "$t_copy" "${c[@]}"
check "at the copy's new token" has_out "true"
run permission check doc:1 view user:anne --consistency-at-exact "${all_tokens[1]}" "${c[@]}"
check "an old token after new writes on the copy" has_out "true"
check "the original still serves" kill -0 "$orig_pid"
run relationship read doc:3 "${o[@]}"
check "the copy's write is not in the original" eval '! has_out "erin"'

# ------------------------------------------------------------ new identity
pg_stop_pid "$copy_pid"
run datastore new-identity --yes --datastore "$copy"
check "new-identity on the copy" exit_is 0
pg_serve copy2 "$copy"
c=(--insecure --endpoint "127.0.0.1:$serve_port")
run permission check doc:1 view user:anne --consistency-at-exact "${all_tokens[1]}" "${c[@]}"
check "after new-identity the original's tokens are refused" has_err "another datastore"
run permission check doc:1 edit user:carl "${c[@]}"
check "and the data is still there" has_out "true"

echo "$passed passed, $failed failed"
((failed == 0))
