#!/usr/bin/env bash
# `pemba proxy` in front of two `pemba serve` processes (primary A, shadow
# B) on free 127.0.0.1 ports: clients through the proxy get A's answers
# (and A's errors, unchanged); writes through the proxy land on both; one
# relationship written to B only makes a mix of checks through the proxy
# report exactly one mismatch, logged with the request; a bad or missing
# key is refused; ReadRelationships and lookups stream through, lookups
# compared as sets (the planted difference shows in both kinds);
# `relationship import` (ImportBulkRelationships) through the proxy lands
# on both, a failed one passes the primary's error through and is not
# replayed; Watch through the proxy sees a write made through it, and the
# client going away ends the primary's stream; Watch streams past
# --max-watch-streams are refused; --shadow-read-sample 0 replays writes
# only; a mixed load (concurrent writes, checks and lookups) with one
# planted difference reports exactly one mismatch; with a stalled shadow
# (SIGSTOP) and a small queue,
# clients stay fast and jobs are dropped and counted; with B killed,
# clients are unaffected and the shadow errors are counted; `pemba proxy
# stats` reports the counters; SIGTERM stops it with a final stats line.
# Also --help and usage errors.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
a_pid=""
b_pid=""
proxy_pid=""
cleanup() {
	for pid in "$proxy_pid" "$a_pid" "$b_pid"; do
		[[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	done
	[[ -n "${KEEP_WORK:-}" ]] && cp -r "$work" /tmp/proxy_keep; rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"

# wait_port FILE: the port a server or the proxy reported in FILE.
wait_port() {
	local p=""
	for _ in $(seq 100); do
		p=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$1" | head -n 1)
		[[ -n "$p" ]] && echo "$p" && return 0
		sleep 0.1
	done
	echo "FAIL no port in $1" >&2
	cat "$1" >&2
	echo "0 passed, 1 failed"
	exit 1
}

# --- help and usage ---------------------------------------------------
run proxy --help
check "proxy --help exits 0 and documents the flags" \
	eval 'exit_is 0 && has_out "--shadow-read-sample" && has_out "--primary-endpoint" && has_out "--max-watch-streams"'
expect_usage_error "proxy needs --listen" "--listen is required" -- \
	proxy --preshared-key k --primary-endpoint x:1 --shadow-endpoint y:1
expect_usage_error "proxy needs --primary-endpoint" "--primary-endpoint is required" -- \
	proxy --listen 127.0.0.1:0 --preshared-key k --shadow-endpoint y:1
expect_usage_error "proxy refuses a sample above 1" "--shadow-read-sample" -- \
	proxy --listen 127.0.0.1:0 --preshared-key k --primary-endpoint x:1 \
	--shadow-endpoint y:1 --shadow-read-sample 1.5
expect_usage_error "proxy refuses a Watch cap of 0" "--max-watch-streams: expected 1..100000, not '0'" -- \
	proxy --listen 127.0.0.1:0 --preshared-key k --primary-endpoint x:1 \
	--shadow-endpoint y:1 --max-watch-streams 0

# --- the servers and the proxy ------------------------------------------
"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 --datastore sqlite::memory: \
	--preshared-key ka >"$work/a.out" 2>"$work/a.err" &
a_pid=$!
"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 --datastore sqlite::memory: \
	--preshared-key kb >"$work/b.out" 2>"$work/b.err" &
b_pid=$!
a_port=$(wait_port "$work/a.err")
b_port=$(wait_port "$work/b.err")
"$PEMBA_BINARY" proxy --insecure --listen 127.0.0.1:0 --preshared-key kp \
	--primary-endpoint "127.0.0.1:$a_port" --primary-token ka \
	--shadow-endpoint "127.0.0.1:$b_port" --shadow-token kb \
	--shadow-timeout-ms 2000 >"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
p_port=$(wait_port "$work/proxy.err")

A=(--insecure --endpoint "127.0.0.1:$a_port" --token ka)
B=(--insecure --endpoint "127.0.0.1:$b_port" --token kb)
P=(--insecure --endpoint "127.0.0.1:$p_port" --token kp)

# stats FIELD: FIELD of a fresh stats line (SIGUSR1).
stats() {
	local before
	before=$(grep -c 'stats:' "$work/proxy.err")
	kill -USR1 "$proxy_pid"
	for _ in $(seq 50); do
		(($(grep -c 'stats:' "$work/proxy.err") > before)) && break
		sleep 0.05
	done
	grep 'stats:' "$work/proxy.err" | tail -n 1 |
		sed -n "s/.* $1=\([0-9]*\).*/\1/p"
}
# drained: waits until the shadow has no queued job.
drained() {
	for _ in $(seq 100); do
		[[ "$(stats queued)" == 0 ]] && return 0
		sleep 0.1
	done
	return 1
}

cat >"$work/schema.zed" <<'EOF'
definition user {}

definition document {
	relation viewer: user
	relation editor: user
	permission view = viewer + editor
}
EOF

# --- writes go to both ------------------------------------------------
run schema write "$work/schema.zed" "${P[@]}"
check "schema write through the proxy" exit_is 0
for i in $(seq 1 10); do
	"$PEMBA_BINARY" relationship create "document:d$i" viewer "user:u$i" "${P[@]}" \
		>/dev/null 2>>"$work/writes.err" || echo "create $i failed" >>"$work/writes.err"
done
"$PEMBA_BINARY" relationship create document:d1 editor user:u2 "${P[@]}" >/dev/null
run relationship delete document:d10 viewer user:u10 "${P[@]}"
check "delete through the proxy" exit_is 0
check "every write through the proxy succeeded" test ! -s "$work/writes.err"
check "the shadow queue drains" drained
"$PEMBA_BINARY" relationship read document "${A[@]}" | sort >"$work/a.rels"
"$PEMBA_BINARY" relationship read document "${B[@]}" | sort >"$work/b.rels"
check "the primary holds the writes" eval '[[ $(wc -l <"$work/a.rels") -eq 10 ]]'
check "the shadow holds the same relationships (dual writes, in order)" \
	cmp -s "$work/a.rels" "$work/b.rels"
"$PEMBA_BINARY" schema read "${A[@]}" >"$work/a.schema"
"$PEMBA_BINARY" schema read "${B[@]}" >"$work/b.schema"
check "the shadow has the schema" cmp -s "$work/a.schema" "$work/b.schema"
check "no mismatch after the writes" eval '[[ $(stats mismatches) == 0 ]]'
check "writes counted" eval '[[ $(stats shadow_writes) == 13 ]]'
run proxy stats "${P[@]}"
check "proxy stats: all agree, exit 0" eval 'exit_is 0 && has_out "shadow_writes=13 " && has_out "mismatches=0 "'

# --- bulk import through the proxy --------------------------------------
# ImportBulkRelationships: relayed to A message by message (several
# messages in one stream here), replayed on B as one write.
for i in $(seq 1 250); do echo "document:imp$i#viewer@user:i$i"; done >"$work/import.txt"
run relationship import "$work/import.txt" --batch-size 40 "${P[@]}"
check "relationship import through the proxy" eval 'exit_is 0 && has_out "imported 250 relationships"'
check "the shadow queue drains after the import" drained
"$PEMBA_BINARY" relationship read document "${A[@]}" | sort >"$work/a.rels"
"$PEMBA_BINARY" relationship read document "${B[@]}" | sort >"$work/b.rels"
check "the import landed on the primary" eval '[[ $(grep -c "document:imp" "$work/a.rels") -eq 250 ]]'
check "the import landed on the shadow too (same relationships)" cmp -s "$work/a.rels" "$work/b.rels"
check "the import is one replayed write" eval '[[ $(stats shadow_writes) == 14 ]]'
"$PEMBA_BINARY" relationship import "$work/import.txt" "${A[@]}" >/dev/null 2>"$work/a.import.err"
"$PEMBA_BINARY" relationship import "$work/import.txt" "${P[@]}" >/dev/null 2>"$work/p.import.err"
check "a failed import gives the primary's error unchanged" \
	eval 'cmp -s "$work/a.import.err" "$work/p.import.err" && grep -q ALREADY_EXISTS "$work/p.import.err"'
check "a failed import is not replayed" eval '[[ $(stats shadow_writes) == 14 && $(stats mismatches) == 0 ]]'

# --- one difference planted in the shadow -----------------------------
"$PEMBA_BINARY" relationship create document:secret viewer user:mallory "${B[@]}" >/dev/null
same_answers=1
checks=0
for i in $(seq 1 10); do
	for who in "user:u$i" user:u2 user:mallory; do
		[[ "$who" == user:mallory && $i -ne 5 ]] && continue
		res="document:d$i"
		[[ "$who" == user:mallory ]] && res=document:secret
		want=$("$PEMBA_BINARY" permission check "$res" view "$who" "${A[@]}")
		got=$("$PEMBA_BINARY" permission check "$res" view "$who" "${P[@]}")
		checks=$((checks + 1))
		[[ "$want" == "$got" ]] || same_answers=0
	done
done
check "checks through the proxy give the primary's answers" eval '((same_answers == 1))'
check "the shadow queue drains after the checks" drained
check "exactly one mismatch is counted" eval '[[ $(stats mismatches) == 1 ]]'
check "every check was replayed" eval '[[ $(stats shadow_reads) == '"$checks"' ]]'
check "the mismatch is logged with the request" \
	grep -q "mismatch: CheckPermission document:secret#view@user:mallory: primary NO_PERMISSION, shadow HAS_PERMISSION" "$work/proxy.err"
run proxy stats "${P[@]}"
check "proxy stats reports the mismatch, exit 1" eval 'exit_is 1 && has_out "mismatches=1 "'
expect_error "proxy stats needs the proxy's key" "pemba: UNAUTHENTICATED: invalid preshared key" -- \
	proxy stats --insecure --endpoint "127.0.0.1:$p_port" --token ka
run proxy stats --help
check "proxy stats --help" eval 'exit_is 0 && has_out "usage: pemba proxy stats"'
check "only one mismatch is logged" eval '[[ $(grep -c "mismatch:" "$work/proxy.err") == 1 ]]'

# --- errors of the primary pass through unchanged ---------------------
"$PEMBA_BINARY" permission check nosuch:x view user:u1 "${A[@]}" >/dev/null 2>"$work/a.check.err"
"$PEMBA_BINARY" permission check nosuch:x view user:u1 "${P[@]}" >/dev/null 2>"$work/p.check.err"
check "the primary's error reaches the client unchanged" \
	eval 'cmp -s "$work/a.check.err" "$work/p.check.err" && grep -q FAILED_PRECONDITION "$work/p.check.err"'

# --- auth -----------------------------------------------------------------
expect_error "a bad key is refused" "pemba: UNAUTHENTICATED: invalid preshared key" -- \
	permission check document:d1 view user:u1 --insecure --endpoint "127.0.0.1:$p_port" --token ka
expect_error "a missing key is refused" "pemba: UNAUTHENTICATED: missing authorization" -- \
	permission check document:d1 view user:u1 --insecure --endpoint "127.0.0.1:$p_port" --token ""

# --- streaming calls ---------------------------------------------------
"$PEMBA_BINARY" relationship read document "${A[@]}" >"$work/a.read"
run relationship read document "${P[@]}"
check "ReadRelationships through the proxy streams the primary's answer" \
	eval 'exit_is 0 && cmp -s "$work/a.read" "$work/out" && [[ -s "$work/out" ]]'
"$PEMBA_BINARY" permission lookup-resources document view user:u2 "${A[@]}" | sort >"$work/a.lr"
"$PEMBA_BINARY" permission lookup-resources document view user:u2 "${P[@]}" | sort >"$work/p.lr"
check "LookupResources through the proxy gives the primary's results" \
	eval 'cmp -s "$work/a.lr" "$work/p.lr" && grep -q d1 "$work/p.lr"'
"$PEMBA_BINARY" permission lookup-subjects document:d1 view user "${P[@]}" | sort >"$work/p.ls"
check "LookupSubjects through the proxy" eval '[[ $(wc -l <"$work/p.ls") -eq 2 ]]'
run permission lookup-resources document view user:mallory "${P[@]}"
check "the primary knows nothing of mallory" eval 'exit_is 0 && [[ ! -s "$work/out" ]]'
run permission lookup-subjects document:secret view user "${P[@]}"
check "the primary has no subject on document:secret" eval 'exit_is 0 && [[ ! -s "$work/out" ]]'
check "the shadow queue drains after the lookups" drained
check "the lookups' differences are counted (3 in all)" eval '[[ $(stats mismatches) == 3 ]]'
check "a LookupResources mismatch is logged with the request and the result" \
	grep -q "mismatch: LookupResources document#view@user:mallory: primary 0 results, shadow 1; only on the shadow: secret" "$work/proxy.err"
check "a LookupSubjects mismatch is logged with the request and the result" \
	grep -q "mismatch: LookupSubjects document:secret#view@user: primary 0 results, shadow 1; only on the shadow: mallory" "$work/proxy.err"
check "equal lookups are no mismatch" eval '[[ $(grep -c "mismatch: Lookup" "$work/proxy.err") == 2 ]]'

# --- Watch --------------------------------------------------------------
# A suspended call fed by a thread holding A's stream (not replayed on B).
# The stream starts at the current revision, so write until one shows.
"$PEMBA_BINARY" watch "${P[@]}" >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
for i in $(seq 1 30); do
	"$PEMBA_BINARY" relationship touch "document:w$i#viewer@user:w" "${P[@]}" >/dev/null
	sleep 0.2
	grep -q "TOUCH document:w" "$work/watch.out" && break
done
check "Watch through the proxy sees a write made through the proxy" \
	grep -q "^TOUCH document:w[0-9]*#viewer@user:w$" "$work/watch.out"
kill "$watch_pid" 2>/dev/null && wait "$watch_pid" 2>/dev/null
for _ in $(seq 50); do
	grep -q "Watch: the primary's stream ended (the client went away), 0 open" "$work/proxy.err" && break
	sleep 0.1
done
check "the client going away ends the primary's stream" \
	grep -q "Watch: the primary's stream ended (the client went away), 0 open" "$work/proxy.err"
check "the shadow queue drains after the Watch writes" drained

# --- sampling -------------------------------------------------------------
# --shadow-read-sample 0: no read is replayed (each counted as sampled
# out), every write still is.
"$PEMBA_BINARY" proxy --insecure --listen 127.0.0.1:0 --preshared-key kp3 \
	--primary-endpoint "127.0.0.1:$a_port" --primary-token ka \
	--shadow-endpoint "127.0.0.1:$b_port" --shadow-token kb \
	--shadow-read-sample 0 --max-watch-streams 1 >"$work/proxy3.out" 2>"$work/proxy3.err" &
proxy3_pid=$!
p3_port=$(wait_port "$work/proxy3.err")
P3=(--insecure --endpoint "127.0.0.1:$p3_port" --token kp3)
for i in 1 2 3; do
	"$PEMBA_BINARY" permission check document:secret view user:mallory "${P3[@]}" >/dev/null
done
"$PEMBA_BINARY" relationship touch document:d1#viewer@user:u1 "${P3[@]}" >/dev/null
for _ in $(seq 100); do
	"$PEMBA_BINARY" proxy stats "${P3[@]}" >"$work/out" 2>"$work/err"
	has_out " queued=0" && has_out "shadow_writes=1 " && break
	sleep 0.1
done
check "sample 0: reads sampled out, the write replayed, no mismatch" \
	eval 'has_out "shadow_writes=1 shadow_reads=0 sampled_out=3 mismatches=0 "'
# --max-watch-streams 1: while one Watch is open, another is refused.
"$PEMBA_BINARY" watch "${P3[@]}" >"$work/watch3.out" 2>"$work/watch3.err" &
watch3_pid=$!
for _ in $(seq 50); do
	grep -q "Watch: stream opened, 1 open" "$work/proxy3.err" && break
	sleep 0.1
done
refused=0
for _ in $(seq 20); do
	timeout 2 "$PEMBA_BINARY" watch "${P3[@]}" >"$work/out" 2>"$work/err"
	status=$?
	has_err "RESOURCE_EXHAUSTED" && refused=1 && break
done
check "a Watch past --max-watch-streams is refused, clearly" \
	eval '((refused == 1)) && exit_is 2 && has_err "pemba: RESOURCE_EXHAUSTED: pemba proxy: too many Watch streams open (1, --max-watch-streams); retry later"'
check "the open Watch is unaffected" eval 'kill -0 "$watch3_pid" && [[ ! -s "$work/watch3.err" ]]'
kill "$watch3_pid" 2>/dev/null && wait "$watch3_pid" 2>/dev/null
kill "$proxy3_pid" 2>/dev/null && wait "$proxy3_pid" 2>/dev/null

# --- a mixed load -------------------------------------------------------
# A fresh proxy (its own counters) in front of A and B: writers, checkers
# and lookups run at once; B differs from A by one planted relationship
# (and by document:secret above, which this load never reads), and the one
# check that reads it is the only mismatch.  Concurrent reads may be
# answered by A before a write and replayed on B after it: the proxy
# confirms those with A (counted stale, not mismatches).
"$PEMBA_BINARY" relationship create document:mixdiff viewer user:eve "${B[@]}" >/dev/null
"$PEMBA_BINARY" proxy --insecure --listen 127.0.0.1:0 --preshared-key kp4 \
	--primary-endpoint "127.0.0.1:$a_port" --primary-token ka \
	--shadow-endpoint "127.0.0.1:$b_port" --shadow-token kb \
	>"$work/proxy4.out" 2>"$work/proxy4.err" &
proxy4_pid=$!
p4_port=$(wait_port "$work/proxy4.err")
P4=(--insecure --endpoint "127.0.0.1:$p4_port" --token kp4)
mixed() { # mixed KIND N: one client's loop
	local i
	for i in $(seq 1 "$2"); do
		case $1 in
		write) "$PEMBA_BINARY" relationship touch "document:mix$i#viewer@user:m$((i % 5))" "${P4[@]}" ;;
		delete) "$PEMBA_BINARY" relationship delete "document:mix$((i - 2))" viewer "user:m$(((i - 2) % 5))" "${P4[@]}" ;;
		check) "$PEMBA_BINARY" permission check "document:mix$i" view "user:m$((i % 5))" "${P4[@]}" ;;
		lookup) "$PEMBA_BINARY" permission lookup-resources document view "user:m$((i % 5))" "${P4[@]}" ;;
		subjects) "$PEMBA_BINARY" permission lookup-subjects "document:mix$i" view user "${P4[@]}" ;;
		esac >/dev/null 2>>"$work/mixed.err"
		# permission check exits 1 for "false"
		local rc=$?
		[[ $rc == 0 || ($rc == 1 && $1 == check) ]] ||
			echo "$1 $i failed" >>"$work/mixed.err"
	done
}
mixed write 30 &
m1=$!
mixed check 30 &
m2=$!
mixed lookup 15 &
m3=$!
mixed subjects 15 &
m4=$!
"$PEMBA_BINARY" permission check document:mixdiff view user:eve "${P4[@]}" >"$work/eve.out"
mixed delete 10 &
m5=$!
wait "$m1" "$m2" "$m3" "$m4" "$m5"
check "every call of the mixed load succeeded" test ! -s "$work/mixed.err"
check "the planted check got the primary's answer" eval '[[ $(cat "$work/eve.out") == false ]]'
"$PEMBA_BINARY" proxy stats "${P4[@]}" >/dev/null
for _ in $(seq 100); do
	"$PEMBA_BINARY" proxy stats "${P4[@]}" >"$work/out" 2>"$work/err"
	has_out " queued=0" && break
	sleep 0.1
done
check "the mixed load is replayed: writes and reads, nothing dropped" \
	eval 'has_out "shadow_writes=40 shadow_reads=61 sampled_out=0 " && has_out " dropped=0 "'
check "the mixed load reports exactly one mismatch" \
	eval 'has_out " mismatches=1 " && [[ $(grep -c "warning: mismatch:" "$work/proxy4.err") == 1 ]]'
check "the mismatch is the planted relationship" \
	grep -q "mismatch: CheckPermission document:mixdiff#view@user:eve: primary NO_PERMISSION, shadow HAS_PERMISSION" "$work/proxy4.err"
kill "$proxy4_pid" 2>/dev/null && wait "$proxy4_pid" 2>/dev/null

# --- a stalled shadow -------------------------------------------------
# A second proxy in front of A and a shadow C that is stopped (SIGSTOP):
# its calls hang until the shadow timeout, the small queue fills, and
# further jobs are dropped and counted; the clients' calls stay fast and
# get A's answers.
"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 --datastore sqlite::memory: \
	--preshared-key kc >"$work/c.out" 2>"$work/c.err" &
c_pid=$!
c_port=$(wait_port "$work/c.err")
"$PEMBA_BINARY" proxy --insecure --listen 127.0.0.1:0 --preshared-key kp2 \
	--primary-endpoint "127.0.0.1:$a_port" --primary-token ka \
	--shadow-endpoint "127.0.0.1:$c_port" --shadow-token kc \
	--shadow-queue 2 --shadow-timeout-ms 10000 >"$work/proxy2.out" 2>"$work/proxy2.err" &
proxy2_pid=$!
p2_port=$(wait_port "$work/proxy2.err")
P2=(--insecure --endpoint "127.0.0.1:$p2_port" --token kp2)
kill -STOP "$c_pid"
start_ns=$(date +%s%N)
stall_ok=1
for i in $(seq 1 12); do
	got=$("$PEMBA_BINARY" permission check document:d1 view user:u1 "${P2[@]}") || stall_ok=0
	[[ "$got" == true ]] || stall_ok=0
done
for i in 1 2 3; do
	"$PEMBA_BINARY" relationship create "document:stall#viewer@user:s$i" "${P2[@]}" >/dev/null || stall_ok=0
done
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
check "with the shadow stalled, clients get the primary's answers" eval '((stall_ok == 1))'
# Waiting on the shadow even once would take the 10 s shadow timeout.
check "a stalled shadow does not slow the clients (15 calls in ${elapsed_ms} ms < 8000)" \
	eval '((elapsed_ms < 8000))'
"$PEMBA_BINARY" proxy stats "${P2[@]}" >"$work/out" 2>"$work/err"
dropped=$(sed -n 's/.* dropped=\([0-9]*\).*/\1/p' "$work/out")
check "jobs beyond the full queue are dropped and counted ($dropped)" \
	eval '[[ -n "$dropped" ]] && ((dropped >= 5))'
check "a dropped write is logged once (rate-limited)" \
	eval '[[ $(grep -c "shadow queue full: WriteRelationships dropped" "$work/proxy2.err") == 1 ]]'
kill -CONT "$c_pid"
kill "$proxy2_pid" 2>/dev/null && wait "$proxy2_pid" 2>/dev/null
kill "$c_pid" 2>/dev/null && wait "$c_pid" 2>/dev/null

# --- the shadow dies ----------------------------------------------------
kill "$b_pid"
wait "$b_pid" 2>/dev/null
b_pid=""
unaffected=1
for i in 1 2 3; do
	want=$("$PEMBA_BINARY" permission check "document:d$i" view "user:u$i" "${A[@]}")
	got=$("$PEMBA_BINARY" permission check "document:d$i" view "user:u$i" "${P[@]}") || unaffected=0
	[[ "$want" == "$got" ]] || unaffected=0
done
"$PEMBA_BINARY" relationship create document:after viewer user:u1 "${P[@]}" >/dev/null || unaffected=0
check "with the shadow dead, clients get the primary's answers" eval '((unaffected == 1))'
check "the write reached the primary" \
	eval '[[ $("$PEMBA_BINARY" permission check document:after view user:u1 "${A[@]}") == true ]]'
check "the shadow queue drains with the shadow dead" drained
check "the shadow's errors are counted" eval '(($(stats shadow_errors) == 4))'
check "the shadow being down is logged" grep -q "shadow 127.0.0.1:$b_port unreachable" "$work/proxy.err"
check "no new mismatch" eval '[[ $(stats mismatches) == 3 ]]'

# --- shutdown -------------------------------------------------------------
kill "$proxy_pid"
wait "$proxy_pid"
proxy_status=$?
proxy_pid=""
check "SIGTERM stops the proxy with exit 0" eval '((proxy_status == 0))'
check "the counters are printed at exit" grep -q "stats at exit: calls=" "$work/proxy.err"

echo "$passed passed, $failed failed"
((failed == 0))
