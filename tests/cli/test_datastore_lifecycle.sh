#!/usr/bin/env bash
# The datastore lifecycle cannot be broken from outside, against real
# `pemba serve` processes on file datastores:
#   - `datastore migrate` refuses while a server is attached (naming its
#     pid and host); with --force it proceeds and the server then answers
#     FAILED_PRECONDITION, never an SQL error; a server killed with -9 does
#     not block a later migration;
#   - serve creates new datastores but refuses one with pending layout
#     migrations, naming the command to run;
#   - a snapshot taken under continuous writes answers exactly like the
#     original at the snapshot's revision;
#   - a forked copy (same identity) refuses the original's tokens issued
#     after the fork and accepts those from before; a copy with a new
#     identity (snapshot --new-identity, datastore new-identity) refuses
#     them as another datastore's;
#   - serve garbage-collects at --datastore-gc-interval and logs each run;
#   - datastore URI parameters: ?mode=ro, unknown ones refused.
# Every server binds 127.0.0.1:0 and is stopped by the test; every wait is
# bounded.  Env: PEMBA_BINARY.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=()
loader=""
cleanup() {
	[[ -n "$loader" ]] && kill "$loader" 2>/dev/null
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 1

source "$here/client_expect.sh"

host=$(uname -n)

# check NAME COND...: a plain assertion.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else fail "$name" "$*"; fi
}

# stderr_has TEXT / stdout_has TEXT: about the last `run`.
stderr_has() { grep -q -F -- "$1" "$work/err"; }
stdout_has() { grep -q -F -- "$1" "$work/out"; }

# start_server NAME URI [FLAGS...]: `pemba serve` without auth on an
# ephemeral port; sets ${NAME}_pid and ${NAME}_port (empty if it did not
# start); its stderr goes to $work/NAME.log.  Returns 0 if it started.
start_server() {
	local name=$1 uri=$2
	shift 2
	local log="$work/$name.log"
	: >"$log"
	"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 \
		--datastore "$uri" "$@" 2>"$log" &
	local pid=$! p=""
	pids+=("$pid")
	for _ in $(seq 100); do
		p=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
		[[ -n "$p" ]] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	printf -v "${name}_pid" '%s' "$pid"
	printf -v "${name}_port" '%s' "$p"
	[[ -n "$p" ]]
}

# stop_server PID: SIGTERM, then SIGKILL after 10 s.
stop_server() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

# at PORT ARGS...: a client command against the server on PORT.
at() {
	local port=$1
	shift
	run "$@" --insecure --endpoint "127.0.0.1:$port"
}

cat >"$work/schema.zed" <<'EOF'
definition user {}

definition document {
	relation viewer: user
	permission view = viewer
}
EOF

# ------------------------------------------------------------------ help
run datastore --help
check "datastore --help lists snapshot and new-identity" \
	grep -q "datastore snapshot" "$work/out"
run datastore snapshot --help
check "snapshot --help" test "$status" -eq 0
check "snapshot --help explains the WAL" grep -q "write-ahead log" "$work/out"
run datastore new-identity --help
check "new-identity --help" test "$status" -eq 0
run datastore migrate --help
check "migrate --help explains --force" grep -q -- "--force" "$work/out"
run serve --help
check "serve --help names the GC flags" grep -q -- "--datastore-gc-interval" "$work/out"
check "serve --help names the query cache flag" grep -q -- "--datastore-query-cache-size" "$work/out"
expect_usage_error "snapshot needs --to" "--to PATH is required" -- datastore snapshot
expect_usage_error "snapshot unknown option" "unknown option '--bogus'" -- datastore snapshot --bogus
run serve --no-auth --datastore-gc-interval soon
check "a bad GC interval is a usage error" test "$status" -eq 2
run serve --no-auth --datastore-gc-window 0
check "a GC window under 1s is a usage error" test "$status" -eq 2
run serve --no-auth --datastore-query-cache-size 12XB
check "a bad query cache size is a usage error" test "$status" -eq 2

# ============================================ migrations under a server
d="sqlite://$work/d.db"
if start_server d "$d"; then
	at "$d_port" schema write "$work/schema.zed"
	at "$d_port" relationship create document:1 viewer user:anne
	run datastore migrate down --yes --datastore "$d"
	check "migrate down under a live server exits 1" test "$status" -eq 1
	check "the refusal names the server's pid" stderr_has "pid $d_pid"
	check "the refusal names the server's host" stderr_has "on host $host"
	check "the refusal mentions --force" stderr_has "--force"
	run datastore migrate status --datastore "$d"
	check "status lists the server" stdout_has "in use by: pemba serve, pid $d_pid"
	run datastore migrate status --datastore "$d"
	check "the refused migration changed nothing" stdout_has "up to date"
	at "$d_port" permission check document:1 view user:anne
	check "the server still answers" test "$status" -eq 0

	run datastore migrate down --yes --force --datastore "$d"
	check "migrate down --force works under a server" test "$status" -eq 0
	check "--force warns" stderr_has "warning: --force"
	for words in "permission check document:1 view user:anne" \
		"relationship read document" \
		"relationship create document:2 viewer user:bob" \
		"schema read"; do
		# shellcheck disable=SC2086
		at "$d_port" $words
		if ((status == 2)) &&
			grep -q -E "FAILED_PRECONDITION: datastore layout changed under this server \(now ([0-9]+), expected ([0-9]+)\)" "$work/err" &&
			stderr_has "pemba datastore migrate head --datastore $d" &&
			! grep -q -e "no such" -e "SQL" "$work/err"; then
			ok "after --force: $words is FAILED_PRECONDITION"
		else
			fail "after --force: $words is FAILED_PRECONDITION" "exit $status"
		fi
	done
	# Every table gone: still the same answer, never "no such table".
	run datastore migrate down --to 0 --yes --force --datastore "$d"
	at "$d_port" permission check document:1 view user:anne --consistency-full
	if ((status == 2)) && stderr_has "FAILED_PRECONDITION: datastore layout changed under this server" &&
		! grep -q -e "no such" -e "SQL" "$work/err"; then
		ok "after down to 0: FAILED_PRECONDITION, not an SQL error"
	else
		fail "after down to 0: FAILED_PRECONDITION, not an SQL error" "exit $status"
	fi
	run datastore migrate head --yes --force --datastore "$d"
	at "$d_port" schema read
	check "migrating back up does not revive the server" stderr_has "layout changed under this server"

	# kill -9: the lease dies with the process.
	kill -9 "$d_pid"
	wait "$d_pid" 2>/dev/null
	run datastore migrate down --yes --datastore "$d"
	check "a server killed with -9 does not block migrate" test "$status" -eq 0
	check "migrate after kill -9 reverted" stdout_has "now at layout version 5"
else
	fail "serve on d.db" "did not start: $(cat "$work/d.log")"
fi

# ============================== serve refuses pending layout migrations
run datastore migrate down --to 3 --yes --datastore "$d"
timeout 20 "$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 \
	--datastore "$d" >"$work/out" 2>"$work/err"
status=$?
check "serve refuses a datastore with pending migrations (exit 1)" test "$status" -eq 1
check "the refusal names the command" \
	stderr_has "run \`pemba datastore migrate head --datastore $d\`"
check "the refusal says which versions" stderr_has "layout version 3"
run datastore migrate status --datastore "$d"
check "serve did not migrate it" stdout_has "layout version: 3"
run datastore migrate head --yes --datastore "$d"
if start_server d2 "$d"; then
	ok "serve starts after migrate head"
	at "$d2_port" schema write "$work/schema.zed"
	at "$d2_port" relationship create document:1 viewer user:anne
	at "$d2_port" permission check document:1 view user:anne
	check "the restarted server answers" test "$status" -eq 0
	stop_server "$d2_pid"
else
	fail "serve starts after migrate head" "$(cat "$work/d2.log")"
fi
if start_server new "sqlite://$work/new.db"; then
	ok "serve creates a new datastore"
	stop_server "$new_pid"
	run datastore migrate status --datastore "sqlite://$work/new.db"
	check "the new datastore is at the newest layout" stdout_has "up to date"
else
	fail "serve creates a new datastore" "$(cat "$work/new.log")"
fi

# ======================================== snapshots under write load
a="sqlite://$work/a.db"
if start_server a "$a"; then
	at "$a_port" schema write "$work/schema.zed"
	at "$a_port" relationship create document:0 viewer user:u0
	pre_fork=$(cat "$work/out")
	# Continuous writes (touches and deletes) until told to stop.
	(
		for i in $(seq 1 400); do
			[[ -e "$work/stop-load" ]] && break
			"$PEMBA_BINARY" relationship touch --insecure \
				--endpoint "127.0.0.1:$a_port" \
				"document:$i" viewer "user:u$i" >/dev/null 2>&1
			if ((i % 4 == 0)); then
				"$PEMBA_BINARY" relationship delete --insecure \
					--endpoint "127.0.0.1:$a_port" \
					"document:$((i - 2))" viewer "user:u$((i - 2))" \
					>/dev/null 2>&1
			fi
		done
	) &
	loader=$!
	sleep 1
	run datastore snapshot --datastore "$a" --to "$work/b.db"
	check "snapshot under writes succeeds" test "$status" -eq 0
	snap_token=$(sed -n 's/^zedtoken: //p' "$work/out")
	snap_rev=$(sed -n 's/^revision: //p' "$work/out")
	check "snapshot prints its revision and ZedToken" test -n "$snap_token" -a -n "$snap_rev"
	check "snapshot says the copy keeps the identity" stdout_has "the original's"
	sleep 0.5
	touch "$work/stop-load"
	wait "$loader"
	loader=""
	check "the snapshot is one file" test ! -e "$work/b.db-wal"
	run datastore snapshot --datastore "$a" --to "$work/b.db"
	check "snapshot refuses to overwrite" test "$status" -eq 1
	check "the refusal says why" stderr_has "already exists"

	if start_server b "sqlite://$work/b.db"; then
		at "$a_port" relationship read document --consistency-at-exact "$snap_token"
		cp "$work/out" "$work/a-at-snap"
		a_status=$status
		at "$b_port" relationship read document --consistency-at-exact "$snap_token"
		check "the copy reads at the snapshot token" test "$status" -eq 0 -a "$a_status" -eq 0
		check "the copy holds relationships" test -s "$work/out"
		check "copy == original at the snapshot's revision" cmp -s "$work/out" "$work/a-at-snap"
		at "$b_port" relationship read document --consistency-full
		check "the copy's head is the snapshot's revision" cmp -s "$work/out" "$work/a-at-snap"
		at "$a_port" relationship read document --consistency-full
		check "the original was written after the snapshot" \
			bash -c "! cmp -s '$work/out' '$work/a-at-snap'"
		same=1
		for i in 1 2 3 4 5 8 12 17 40 77 120; do
			at "$a_port" permission check "document:$i" view "user:u$i" \
				--consistency-at-exact "$snap_token"
			want="$status $(cat "$work/out")"
			at "$b_port" permission check "document:$i" view "user:u$i" \
				--consistency-at-exact "$snap_token"
			[[ "$status $(cat "$work/out")" == "$want" ]] || same=0
		done
		check "checks on the copy answer like the original at the snapshot" test "$same" -eq 1

		# ------------------------------ the fork: both written since
		at "$a_port" relationship create document:fork-a viewer user:anne
		a_token=$(cat "$work/out")
		# The copy writes until it has a revision of that number.
		for _ in $(seq 60); do
			at "$b_port" relationship touch document:fork-b viewer user:bob
			b_token=$(cat "$work/out")
			at "$b_port" relationship read document --consistency-at-exact "$a_token"
			grep -q "OUT_OF_RANGE" "$work/err" || break
		done
		check "the copy refuses the original's post-fork token (at exact)" \
			test "$status" -eq 2
		check "... as another history" stderr_has "INVALID_ARGUMENT: ZedToken is from another history of this datastore"
		check "... naming the fix" stderr_has "pemba datastore new-identity"
		at "$b_port" permission check document:1 view user:u1 --consistency-at-least "$a_token"
		check "the copy refuses it at least as fresh too" stderr_has "another history"
		at "$a_port" relationship read document --consistency-at-exact "$b_token"
		check "the original refuses the copy's post-fork token" stderr_has "another history"
		at "$b_port" relationship read document --consistency-at-exact "$pre_fork"
		check "the copy accepts a token from before the fork" test "$status" -eq 0
		at "$b_port" relationship read document --consistency-at-exact "$snap_token"
		check "the copy accepts the snapshot's token" test "$status" -eq 0
		at "$a_port" relationship read document --consistency-at-exact "$snap_token"
		check "the original accepts the snapshot's token" test "$status" -eq 0

		# ------------------------- a new identity on an existing copy
		run datastore new-identity --yes --datastore "sqlite://$work/b.db"
		check "new-identity under a server exits 1" test "$status" -eq 1
		check "new-identity names the server" stderr_has "pid $b_pid"
		stop_server "$b_pid"
		run datastore new-identity --datastore "sqlite://$work/b.db"
		check "new-identity without --yes and no terminal refuses" test "$status" -eq 1
		run datastore new-identity --yes --datastore "sqlite://$work/b.db"
		check "new-identity on a stopped copy works" stdout_has "now has identity"
		if start_server b2 "sqlite://$work/b.db"; then
			at "$b2_port" relationship read document --consistency-at-exact "$pre_fork"
			check "the re-identified copy refuses the original's tokens" \
				stderr_has "ZedToken is for another datastore"
			stop_server "$b2_pid"
		else
			fail "serve the re-identified copy" "$(cat "$work/b2.log")"
		fi
	else
		fail "serve the snapshot" "$(cat "$work/b.log")"
	fi

	# ---------------------------------- snapshot --new-identity
	run datastore snapshot --datastore "$a" --to "$work/c.db" --new-identity
	check "snapshot --new-identity" stdout_has "new: a separate instance"
	c_token=$(sed -n 's/^zedtoken: //p' "$work/out")
	if start_server c "sqlite://$work/c.db"; then
		at "$c_port" relationship read document --consistency-at-exact "$snap_token"
		check "a new-identity copy refuses the original's tokens" \
			stderr_has "INVALID_ARGUMENT: ZedToken is for another datastore"
		at "$c_port" relationship read document --consistency-at-exact "$c_token"
		check "... and accepts the token its snapshot printed" test "$status" -eq 0
		at "$a_port" relationship read document --consistency-at-exact "$c_token"
		check "the original refuses the new copy's token" stderr_has "another datastore"
		stop_server "$c_pid"
	else
		fail "serve the new-identity snapshot" "$(cat "$work/c.log")"
	fi
	stop_server "$a_pid"
else
	fail "serve on a.db" "did not start: $(cat "$work/a.log")"
fi

# ======================================================= the GC loop
g="sqlite://$work/g.db"
if start_server g "$g" --datastore-gc-interval 200ms --datastore-gc-window 1s; then
	at "$g_port" schema write "$work/schema.zed"
	at "$g_port" relationship create document:1 viewer user:anne
	early=$(cat "$work/out")
	at "$g_port" relationship delete document:1 viewer user:anne
	at "$g_port" relationship create document:2 viewer user:bob
	collected=0
	for _ in $(seq 60); do
		if grep -q "gc: removed [1-9][0-9]* relationship versions" "$work/g.log"; then
			collected=1
			break
		fi
		sleep 0.1
	done
	check "the GC loop collected the deleted version and logged it" test "$collected" -eq 1
	check "GC log lines say how long" grep -q "gc: removed .*; took [0-9]* ms" "$work/g.log"
	check "GC ran more than once" test "$(grep -c "gc: removed" "$work/g.log")" -ge 2
	at "$g_port" relationship read document --consistency-at-exact "$early"
	check "a collected revision is refused as garbage-collected" stderr_has "garbage-collected"
	at "$g_port" relationship read document
	check "the head still reads" test "$(cat "$work/out")" = "document:2#viewer@user:bob"
	stop_server "$g_pid"
else
	fail "serve with a GC interval" "$(cat "$work/g.log")"
fi
# A GC thread asleep for an hour does not delay shutdown.
if start_server gl "$g" --datastore-gc-interval 1h; then
	kill -TERM "$gl_pid"
	stopped=0
	for _ in $(seq 30); do
		if ! kill -0 "$gl_pid" 2>/dev/null; then
			stopped=1
			break
		fi
		sleep 0.1
	done
	wait "$gl_pid"
	gl_status=$?
	check "SIGTERM stops a server with a sleeping GC thread within 3 s" test "$stopped" -eq 1
	check "... cleanly" test "$gl_status" -eq 0
	check "... logging its stop" grep -q "stopped" "$work/gl.log"
else
	fail "serve with a 1h GC interval" "$(cat "$work/gl.log")"
fi
if start_server g0 "$g" --datastore-gc-interval 0; then
	sleep 0.5
	check "--datastore-gc-interval 0 disables GC" bash -c "! grep -q 'gc:' '$work/g0.log'"
	stop_server "$g0_pid"
else
	fail "serve with GC off" "$(cat "$work/g0.log")"
fi

# ======================================================= the query cache
# Off by default on SQLite; on when asked, and its figures are logged at
# the stop (src/store/README.md, "Query cache").
q="sqlite://$work/q.db"
if start_server q "$q" --datastore-query-cache-size 1MiB; then
	at "$q_port" schema write "$work/schema.zed"
	at "$q_port" relationship create document:1 viewer user:anne
	at "$q_port" permission check document:1 view user:anne
	check "a check with the query cache on" test "$(cat "$work/out")" = "true"
	at "$q_port" permission check document:1 view user:anne
	check "... and again, from the cache" test "$(cat "$work/out")" = "true"
	stop_server "$q_pid"
	check "the query cache's figures are logged at the stop" \
		grep -q "query cache: [1-9][0-9]* hits, [1-9][0-9]* misses" "$work/q.log"
else
	fail "serve with a query cache" "$(cat "$work/q.log")"
fi
if start_server q0 "$q"; then
	stop_server "$q0_pid"
	check "no query cache on SQLite by default" bash -c "! grep -q 'query cache' '$work/q0.log'"
else
	fail "serve without a query cache" "$(cat "$work/q0.log")"
fi

# ============================================== datastore URI parameters
if start_server ro "$g?mode=ro"; then
	at "$ro_port" relationship read document
	check "mode=ro serves reads" test "$status" -eq 0 -a "$(cat "$work/out")" = "document:2#viewer@user:bob"
	at "$ro_port" relationship create document:3 viewer user:carl
	check "mode=ro refuses writes" stderr_has "read-only (mode=ro)"
	stop_server "$ro_pid"
else
	fail "serve with ?mode=ro" "$(cat "$work/ro.log")"
fi
timeout 20 "$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 \
	--datastore "sqlite://$work/u.db?cache=shared" >"$work/out" 2>"$work/err"
status=$?
check "an unknown URI parameter is refused" test "$status" -eq 1
check "... by name" stderr_has "unknown datastore URI parameter \`cache\`"
run datastore migrate status --datastore "sqlite://$work/g.db?mode=ro"
check "migrate status takes ?mode=ro" stdout_has "up to date"
run datastore migrate head --yes --datastore "sqlite://$work/x.db?mode=rw"
check "mode=rw is the default" test "$status" -eq 0 -a -e "$work/x.db"
run datastore gc --datastore "sqlite://$work/g.db?mode=ro"
check "gc on a read-only URI fails clearly" stderr_has "mode=ro"
check "no file name ever holds a URI parameter" \
	test -z "$(find "$work" -name '*\?*' -o -name '*mode=*')"

echo "$passed passed, $failed failed"
((failed == 0))
