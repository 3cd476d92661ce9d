#!/usr/bin/env bash
# Several `pemba serve` processes on one PostgreSQL datastore (a throwaway
# cluster of this test's own): three started at once on a new database
# all serve (the others wait while the first migrates it); a write through one server and its
# ZedToken give the write through the other (at_least_as_fresh, and
# at_exact_snapshot); a Watch opened on the second server reports writes
# made through the first within a bounded delay; a schema written through
# one server is the one the other uses at once (no stale schema cache),
# both ways; a deletion through one is seen through the other; the
# read-only flag and relation deprecations set through one hold on the
# other at once; a Watch open across a PostgreSQL restart goes on.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
trap 'pg_cleanup' EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"
# shellcheck source=pg_expect.sh
source "$(dirname "$0")/pg_expect.sh"

pg_require
pg_start

# ------------------------------------- several servers start on a new database
# The first migrates it step by step; the others see a version between 0
# and the newest meanwhile and must wait for it, not refuse it.
bad=0
for r in 1 2; do
	u=$(pg_createdb "fresh$r") || exit 1
	pids=()
	for k in 1 2 3; do
		"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 --datastore "$u" \
			>"$work/f$r.$k.out" 2>"$work/f$r.$k.log" &
		pids+=($!)
		pg_pids+=($!)
	done
	for k in 1 2 3; do
		up=0
		for _ in $(seq 150); do
			grep -q "port [0-9]" "$work/f$r.$k.log" && { up=1; break; }
			kill -0 "${pids[$((k - 1))]}" 2>/dev/null || break
			sleep 0.1
		done
		((up)) || { bad=$((bad + 1)); sed "s/^/    round $r server $k: /" "$work/f$r.$k.log"; }
	done
	for p in "${pids[@]}"; do pg_stop_pid "$p"; done
done
check "2 rounds of 3 servers started at once on a new database: all serve" test "$bad" = 0

uri=$(pg_createdb pemba) || exit 1

pg_serve one "$uri"
one_pid=$serve_pid
one=(--insecure --endpoint "127.0.0.1:$serve_port")
pg_serve two "$uri"
two_pid=$serve_pid
two=(--insecure --endpoint "127.0.0.1:$serve_port")
on_one() { run "$@" "${one[@]}"; }
on_two() { run "$@" "${two[@]}"; }

cat >"$work/v1.zed" <<'ZED'
definition user {}
definition document {
	relation viewer: user
	permission view = viewer
}
ZED
cat >"$work/v2.zed" <<'ZED'
definition user {}
definition document {
	relation viewer: user
	relation editor: user
	permission view = viewer + editor
	permission edit = editor
}
ZED
cat >"$work/v3.zed" <<'ZED'
definition user {}
definition document {
	relation viewer: user
	relation editor: user
	relation owner: user
	permission view = viewer + editor + owner
	permission edit = editor + owner
	permission admin = owner
}
ZED

# ------------------------------------------------------- tokens across
on_one schema write "$work/v1.zed"
check "schema v1 written through server 1" exit_is 0
on_two schema read
check "server 2 reads the schema written through server 1" has_out "permission view = viewer"

on_one relationship create document:readme viewer user:anne
check "create through server 1" exit_is 0
token=$(cat "$work/out")
check "server 1 returns a ZedToken" test -n "$token"
on_two permission check document:readme view user:anne --consistency-at-least "$token"
check "server 2 at_least_as_fresh server 1's token sees the write" has_out "true"
on_two permission check document:readme view user:anne --consistency-at-exact "$token"
check "server 2 at_exact_snapshot server 1's token sees the write" has_out "true"
on_two relationship read document:readme --consistency-at-least "$token"
check "server 2 reads the relationship at that token" has_out "user:anne"

# Many rounds: every token of one server is honoured by the other at once.
bad=0
for i in $(seq 1 10); do
	t=$("$PEMBA_BINARY" relationship create "document:d$i" viewer "user:u$i" "${one[@]}" 2>/dev/null)
	a=$("$PEMBA_BINARY" permission check "document:d$i" view "user:u$i" "${two[@]}" --consistency-at-least "$t" 2>&1)
	[[ "$a" == true ]] || { bad=$((bad + 1)); echo "    round $i: '$a'"; }
	t=$("$PEMBA_BINARY" relationship delete "document:d$i" viewer "user:u$i" "${two[@]}" 2>/dev/null)
	a=$("$PEMBA_BINARY" permission check "document:d$i" view "user:u$i" "${one[@]}" --consistency-at-least "$t" 2>&1)
	[[ "$a" == false ]] || { bad=$((bad + 1)); echo "    round $i (delete): '$a'"; }
done
check "10 rounds: writes and deletes through one server are seen through the other at their token" test "$bad" = 0

# The token of server 2 is a token of the same datastore for server 1.
t2=$("$PEMBA_BINARY" relationship create document:x viewer user:x "${two[@]}" 2>/dev/null)
on_one permission check document:x view user:x --consistency-at-exact "$t2"
check "server 1 accepts server 2's token at_exact_snapshot" has_out "true"
on_one permission check document:x view user:x --consistency-at-exact "$token"
check "and gives the answer of that older revision" has_out "false"

# -------------------------------------------------------------- watch
"$PEMBA_BINARY" watch "${two[@]}" >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
pg_pids+=("$watch_pid")
sleep 1
lat_bad=0
for i in 1 2 3; do
	start=$(now_ms)
	"$PEMBA_BINARY" relationship create "document:w$i" viewer "user:watch$i" "${one[@]}" >/dev/null 2>&1
	seen=0
	while (($(now_ms) - start < 3000)); do
		if grep -q "user:watch$i" "$work/watch.out"; then seen=1; break; fi
		sleep 0.02
	done
	ms=$(($(now_ms) - start))
	if ((seen)); then
		echo "    watch event $i through server 2 after ${ms} ms"
	else
		lat_bad=$((lat_bad + 1))
	fi
done
cp "$work/watch.out" "$work/out"
cp "$work/watch.err" "$work/err"
check "a Watch on server 2 reports each write through server 1 within 3 s" test "$lat_bad" = 0
pg_stop_pid "$watch_pid"

# ------------------------------------------------- writers on both servers
# Two writers through server 1 and two through server 2 at once; a Watch
# on server 2 (opened before) reports every acknowledged write exactly
# once, both servers read all of them, and each write's token gives it on
# the other server.
"$PEMBA_BINARY" watch "${two[@]}" >"$work/watch2.out" 2>"$work/watch2.err" &
watch_pid=$!
pg_pids+=("$watch_pid")
sleep 1
cw() { # W SERVER: 10 creates, "W-I TOKEN" per acknowledged one
	local -n conn=$2
	local i t
	for i in $(seq 1 10); do
		t=$("$PEMBA_BINARY" relationship create "document:c$1-$i" viewer "user:c$1-$i" "${conn[@]}" 2>/dev/null) &&
			echo "$1-$i $t"
	done >"$work/cw.$1"
}
cw 1 one &
p1=$!
cw 2 one &
p2=$!
cw 3 two &
p3=$!
cw 4 two &
p4=$!
wait "$p1" "$p2" "$p3" "$p4"
cat "$work"/cw.* >"$work/cw"
check "40 concurrent creates through both servers acknowledged" test "$(wc -l <"$work/cw")" = 40
"$PEMBA_BINARY" relationship read document "${one[@]}" --consistency-full 2>/dev/null | grep -c 'user:c' >"$work/n1"
"$PEMBA_BINARY" relationship read document "${two[@]}" --consistency-full 2>/dev/null | grep -c 'user:c' >"$work/n2"
check "server 1 reads all 40" test "$(cat "$work/n1")" = 40
check "server 2 reads all 40" test "$(cat "$work/n2")" = 40
bad=0
while read -r id t; do
	w=${id%%-*}
	if ((w <= 2)); then other=two; else other=one; fi
	[[ "$(on_$other permission check "document:c$id" view "user:c$id" --consistency-at-exact "$t"; cat "$work/out")" == true ]] ||
		bad=$((bad + 1))
done < <(grep -E '^(1-(1|7|10)|2-(4|9)|3-(2|8)|4-(6|10)) ' "$work/cw")
check "a sample of tokens gives its write at_exact_snapshot on the other server" test "$bad" = 0
for _ in $(seq 60); do
	(($(grep -c 'user:c[0-9]' "$work/watch2.out") >= 40)) && break
	sleep 0.1
done
pg_stop_pid "$watch_pid"
missing=0
dup=0
while read -r id _; do
	n=$(grep -c -E "document:c$id\b.*user:c$id\b" "$work/watch2.out")
	((n == 0)) && missing=$((missing + 1))
	((n > 1)) && dup=$((dup + 1))
done <"$work/cw"
check "the Watch on server 2 reported every one of them" test "$missing" = 0
check "and none twice" test "$dup" = 0

# --------------------------------------------------------------- schema
# v2 through server 1; a check that needs v2 through server 2 right away.
on_one schema write "$work/v2.zed"
check "schema v2 written through server 1" exit_is 0
on_one relationship create document:readme editor user:bob
check "an editor (a v2 relation) written through server 1" exit_is 0
tok=$(cat "$work/out")
on_two permission check document:readme edit user:bob
check "server 2 checks a v2 permission at once (no stale schema)" has_out "true"
on_two permission check document:readme view user:bob --consistency-at-least "$tok"
check "server 2 evaluates view with v2's expression" has_out "true"
on_two schema read
check "server 2 reads schema v2" has_out "permission edit = editor"
# The other way, and a write (validated against the schema) at once.
on_two schema write "$work/v3.zed"
check "schema v3 written through server 2" exit_is 0
on_one relationship create document:readme owner user:carl
check "server 1 accepts a relationship of a v3 relation at once" exit_is 0
on_one permission check document:readme admin user:carl
check "server 1 checks a v3 permission" has_out "true"
# Back to v2 is refused while an owner exists, on either server.
on_one schema write "$work/v2.zed"
check "server 1 refuses to drop a v3 relation still in use" exit_is 2
on_one relationship delete document:readme owner user:carl
check "the owner deleted through server 1" exit_is 0
on_two schema write "$work/v2.zed"
check "server 2 then drops it (sees the delete)" exit_is 0
on_one permission check document:readme admin user:carl
check "server 1 no longer knows the v3 permission" has_err "admin"

# ------------------------------------- settings seen by the other server
# The read-only flag and relation deprecations are data: set through one
# server they hold at once on the other.
on_one admin read-only on
check "read-only on through server 1" exit_is 0
on_two relationship create document:ro viewer user:ro
check "server 2 refuses a write at once (UNAVAILABLE, read-only)" has_err "read-only mode"
on_two permission check document:readme view user:anne
check "server 2 still answers checks" has_out "true"
on_two admin read-only off
on_one relationship create document:ro viewer user:ro
check "read-only off through server 2: server 1 writes again" exit_is 0
on_one relation deprecate document#editor --mode reject
check "a relation deprecated (reject) through server 1" exit_is 0
on_two relationship create document:dep editor user:dep
check "server 2 refuses writes to it at once" has_err "is deprecated (reject)"
on_two relation undeprecate document#editor
on_one relationship create document:dep editor user:dep
check "undeprecated through server 2: server 1 writes it" exit_is 0

# --------------------------------------- PostgreSQL restarts under both
# A Watch open on server 2 across the restart goes on reporting the writes
# made through server 1 afterwards (no gap, the commit listener is back).
"$PEMBA_BINARY" watch "${two[@]}" >"$work/watch3.out" 2>"$work/watch3.err" &
watch_pid=$!
pg_pids+=("$watch_pid")
sleep 1
bash "$PG_CLUSTER" restart "$work/pg" >/dev/null || { echo "FAIL cluster did not restart"; exit 1; }
acked=0
for i in $(seq 1 50); do
	if "$PEMBA_BINARY" relationship create "document:after$acked" viewer user:late "${one[@]}" >/dev/null 2>&1; then
		acked=$((acked + 1))
		((acked == 3)) && break
	fi
	sleep 0.2
done
check "after the restart server 1 writes again" test "$acked" = 3
seen=0
for _ in $(seq 50); do
	(($(grep -c 'user:late' "$work/watch3.out") >= 3)) && { seen=1; break; }
	sleep 0.1
done
cp "$work/watch3.out" "$work/out"
cp "$work/watch3.err" "$work/err"
if kill -0 "$watch_pid" 2>/dev/null; then
	check "the Watch on server 2 open across the restart reports them" test "$seen" = 1
else
	# A stream may end with UNAVAILABLE (the client resumes from its
	# last token); then it must say so.
	check "the Watch on server 2 ended with UNAVAILABLE across the restart" has_err "UNAVAILABLE"
fi
pg_stop_pid "$watch_pid"
on_two permission check document:readme view user:anne --consistency-at-exact "$token"
check "a token from before the restart still works on server 2" has_out "true"

check "server 1 still running" kill -0 "$one_pid"
check "server 2 still running" kill -0 "$two_pid"
echo "$passed passed, $failed failed"
((failed == 0))
