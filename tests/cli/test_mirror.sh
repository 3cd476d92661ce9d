#!/usr/bin/env bash
# `pemba mirror` between two `pemba serve-testing` processes on 127.0.0.1:
# the first run copies the schema and a snapshot (caveats, contexts,
# expirations), then follows the source's Watch while a writer creates,
# touches and deletes relationships and changes the schema once; the
# mirror is SIGKILLed midway and restarted with the same state file, and
# `--until-caught-up` then exits 0 with both sides equal (export and
# schema).  The source's ZedTokens (from before and during the move) then
# work on the target (at_least_as_fresh, at_exact_snapshot, Watch), and a
# reverse mirror (SIGKILLed once) rolls back without losing what was
# written to the target after the cut-over.  Also: usage errors and a
# malformed state file.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
src_pid=""
dst_pid=""
mirror_pid=""
cleanup() {
	[[ -n "$mirror_pid" ]] && kill -9 "$mirror_pid" 2>/dev/null
	[[ -n "$src_pid" ]] && kill "$src_pid" 2>/dev/null && wait "$src_pid" 2>/dev/null
	[[ -n "$dst_pid" ]] && kill "$dst_pid" 2>/dev/null && wait "$dst_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"

# start_server NAME: starts serve-testing on a free port; sets $port and
# ${NAME}_pid via the caller.
start_server() {
	local name=$1
	"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 >"$work/$name.out" 2>"$work/$name.err" &
	server_pid=$!
	port=""
	for _ in $(seq 100); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/$name.err" "$work/$name.out" | head -n 1)
		[[ -n "$port" ]] && return 0
		sleep 0.1
	done
	echo "FAIL serve-testing ($name) did not report its port"
	echo "0 passed, 1 failed"
	exit 1
}
start_server src
src_pid=$server_pid
src_port=$port
start_server dst
dst_pid=$server_pid
dst_port=$port
src=(--insecure --endpoint "127.0.0.1:$src_port" --token a)
dst=(--insecure --endpoint "127.0.0.1:$dst_port" --token b)
mirror=(mirror --insecure --from-endpoint "127.0.0.1:$src_port" --from-token a
	--to-endpoint "127.0.0.1:$dst_port" --to-token b --state-file "$work/state")

on_src() { "$PEMBA_BINARY" "$@" "${src[@]}"; }
on_dst() { "$PEMBA_BINARY" "$@" "${dst[@]}"; }

# ------------------------------------------------------------ usage
expect_usage_error "mirror needs --from-endpoint" "--from-endpoint is required" -- \
	mirror --to-endpoint x --state-file y
expect_usage_error "mirror needs --state-file" "--state-file is required" -- \
	mirror --from-endpoint x --to-endpoint y
run mirror --help
if ((status == 0)) && has_out "--until-caught-up" && has_out "Exit status"; then
	ok "mirror --help prints the usage"
else
	fail "mirror --help prints the usage" "exit $status"
fi
echo garbage >"$work/bad-state"
run mirror --insecure --from-endpoint "127.0.0.1:$src_port" --to-endpoint "127.0.0.1:$dst_port" \
	--state-file "$work/bad-state"
if ((status == 2)) && has_err "is not a pemba mirror state file"; then
	ok "a malformed state file is refused"
else
	fail "a malformed state file is refused" "exit $status"
fi

# ------------------------------------------------------------ seed
cat >"$work/schema.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int) {
	level >= min
}

definition doc {
	relation viewer: user | user with has_level | user with expiration | doc#viewer | user:*
	permission view = viewer
}
EOF
on_src schema write "$work/schema.zed" >/dev/null 2>"$work/err" ||
	{ echo "FAIL schema write: $(cat "$work/err")"; exit 1; }
{
	echo 'doc:1#viewer@user:anne[has_level:{"min":3}]'
	echo 'doc:2#viewer@user:bob[has_level]'
	echo 'doc:3#viewer@user:carl[expiration:2099-01-02T03:04:05Z]'
	echo 'doc:4#viewer@doc:1#viewer'
	echo 'doc:5#viewer@user:*'
	for i in $(seq 1 2500); do echo "doc:s$i#viewer@user:u$i"; done
} >"$work/seed.txt"
on_src relationship import "$work/seed.txt" >/dev/null 2>"$work/err" ||
	{ echo "FAIL seed import: $(cat "$work/err")"; exit 1; }

# writes FROM TO: creates, touches (with a caveat) and deletes.
writes() {
	local i
	for ((i = $1; i <= $2; i++)); do
		on_src relationship create "doc:w$i#viewer@user:x$i" >/dev/null || return 1
		on_src relationship touch "doc:w$i#viewer@user:x$i[has_level:{\"min\":$i}]" >/dev/null || return 1
		if ((i % 3 == 0)); then
			on_src relationship delete "doc:s$i#viewer@user:u$i" >/dev/null || return 1
		fi
		if ((i % 5 == 0)); then
			on_src relationship delete "doc:w$i#viewer@user:x$i" >/dev/null || return 1
		fi
	done
}

# wait_for_watch: until the state file says the mirror follows Watch.
wait_for_watch() {
	for _ in $(seq 300); do
		grep -q '^phase watch' "$work/state" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# A token the source gave before the move started.
pre_token=$(on_src relationship create "doc:pre#viewer@user:pre" 2>"$work/err")
on_src relationship create "doc:pre2#viewer@user:pre" >/dev/null 2>&1

# ------------------------------------------------------------ mirror
"$PEMBA_BINARY" "${mirror[@]}" 2>"$work/mirror1.err" &
mirror_pid=$!
if wait_for_watch; then
	ok "the first run copies the snapshot and follows Watch"
else
	fail "the first run copies the snapshot and follows Watch" "$(cat "$work/mirror1.err")"
fi
# Tokens the source gives during the move: doc:tok is viewable at the
# first, not at the second.
mid_token=$(on_src relationship create "doc:tok#viewer@user:tok" 2>"$work/err")
mid_token2=$(on_src relationship delete "doc:tok#viewer@user:tok" 2>"$work/err")
writes 1 15 || fail "writer (1)" "a write failed"
cat >"$work/schema2.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int) {
	level >= min
}

definition doc {
	relation viewer: user | user with has_level | user with expiration | doc#viewer | user:*
	relation editor: user | user with expiration
	permission view = viewer + editor
}
EOF
on_src schema write "$work/schema2.zed" >/dev/null 2>"$work/err" ||
	fail "schema change on the source" "$(cat "$work/err")"
on_src relationship create "doc:1#editor@user:eve" >/dev/null
writes 16 25 || fail "writer (2)" "a write failed"
sleep 0.5
kill -9 "$mirror_pid" 2>/dev/null
wait "$mirror_pid" 2>/dev/null
mirror_pid=""
writes 26 35 || fail "writer (3)" "a write failed"
on_src relationship delete "doc:3#viewer@user:carl" >/dev/null
on_src relationship create "doc:2#editor@user:eve[expiration:2099-05-06T07:08:09Z]" >/dev/null

"$PEMBA_BINARY" "${mirror[@]}" 2>"$work/mirror2.err" &
mirror_pid=$!
writes 36 45 || fail "writer (4)" "a write failed"
sleep 0.5
kill "$mirror_pid" 2>/dev/null
wait "$mirror_pid" 2>/dev/null
mirror_pid=""
writes 46 50 || fail "writer (5)" "a write failed"

# Cut-over: the source goes read-only, the mirror catches up.
on_src admin read-only on >/dev/null 2>&1
"$PEMBA_BINARY" "${mirror[@]}" --until-caught-up >"$work/out" 2>"$work/err" &
mirror_pid=$!
for _ in $(seq 600); do
	kill -0 "$mirror_pid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$mirror_pid" 2>/dev/null; then
	kill -9 "$mirror_pid"
	status=124
else
	wait "$mirror_pid"
	status=$?
fi
mirror_pid=""
if ((status == 0)) && has_err "caught up at"; then
	ok "--until-caught-up exits 0 once caught up"
else
	fail "--until-caught-up exits 0 once caught up" "exit $status"
fi
if grep -q "lag" "$work/err" "$work/mirror1.err" "$work/mirror2.err"; then
	ok "the mirror prints its lag and rate"
else
	fail "the mirror prints its lag and rate" "no lag line"
fi

on_src relationship export 2>/dev/null | sort >"$work/src.txt"
on_dst relationship export 2>/dev/null | sort >"$work/dst.txt"
if [[ -s "$work/src.txt" ]] && cmp -s "$work/src.txt" "$work/dst.txt"; then
	ok "the target's relationships equal the source's"
else
	fail "the target's relationships equal the source's" \
		"$(diff "$work/src.txt" "$work/dst.txt" | head -20)"
fi
if grep -q -F 'doc:1#viewer@user:anne[has_level:{"min":3}]' "$work/dst.txt" &&
	grep -q -F 'doc:w1#viewer@user:x1[has_level:{"min":1}]' "$work/dst.txt" &&
	grep -q -F 'doc:2#editor@user:eve[expiration:2099-05-06T07:08:09Z]' "$work/dst.txt" &&
	! grep -q -F 'doc:s3#viewer' "$work/dst.txt" &&
	! grep -q -F 'doc:w5#viewer' "$work/dst.txt" &&
	! grep -q -F 'doc:3#viewer@user:carl' "$work/dst.txt"; then
	ok "caveats, expirations and deletes were carried over"
else
	fail "caveats, expirations and deletes were carried over" "missing"
fi
if [[ "$(on_src schema read 2>&1)" == "$(on_dst schema read 2>&1)" ]] &&
	on_dst schema read 2>/dev/null | grep -q "relation editor"; then
	ok "the target's schema equals the source's (changed once)"
else
	fail "the target's schema equals the source's (changed once)" "differs"
fi

# ------------------------------------------------------------ tokens
# The source's tokens keep their meaning on the target after the move.
check_at() { # SIDE MODE TOKEN: permission check doc:tok view user:tok
	"on_$1" permission check doc:tok view user:tok "--consistency-$2" "$3" 2>&1
}
if [[ -n "$mid_token" && -n "$mid_token2" ]] &&
	[[ "$(check_at src at-exact "$mid_token")" == true ]] &&
	[[ "$(check_at dst at-exact "$mid_token")" == true ]] &&
	[[ "$(check_at dst at-exact "$mid_token2")" == false ]]; then
	ok "a source token at_exact_snapshot gives the source's answer on the target"
else
	fail "a source token at_exact_snapshot gives the source's answer on the target" \
		"src: $(check_at src at-exact "$mid_token") dst: $(check_at dst at-exact "$mid_token") / $(check_at dst at-exact "$mid_token2")"
fi
if [[ "$(check_at dst at-least "$mid_token")" == false ]] &&
	[[ "$(check_at dst at-least "$pre_token")" == false ]]; then
	ok "source tokens (also from before the move) are honoured at_least_as_fresh"
else
	fail "source tokens (also from before the move) are honoured at_least_as_fresh" \
		"$(check_at dst at-least "$mid_token") / $(check_at dst at-least "$pre_token")"
fi
out=$(check_at dst at-exact "$pre_token")
if [[ "$out" == *"from before the move"* ]]; then
	ok "at_exact_snapshot of a token from before the move is refused, saying why"
else
	fail "at_exact_snapshot of a token from before the move is refused, saying why" "$out"
fi
"$PEMBA_BINARY" schema write "$work/schema.zed" --insecure \
	--endpoint "127.0.0.1:$src_port" --token another-datastore >/dev/null 2>&1
other=$("$PEMBA_BINARY" relationship create "doc:x#viewer@user:x" --insecure \
	--endpoint "127.0.0.1:$src_port" --token another-datastore 2>/dev/null)
out=$(check_at dst at-least "$other")
if [[ "$out" == *"another datastore"* ]]; then
	ok "a token of a datastore never mirrored here is still refused"
else
	fail "a token of a datastore never mirrored here is still refused" "$out"
fi
"$PEMBA_BINARY" watch --revision "$mid_token" --insecure --endpoint "127.0.0.1:$dst_port" \
	--token b --json >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
sleep 1.5
kill "$watch_pid" 2>/dev/null
wait "$watch_pid" 2>/dev/null
if grep -q '"objectId":"tok"' "$work/watch.out" &&
	! grep -q '"objectId":"pre' "$work/watch.out"; then
	ok "Watch on the target resumes from a source token"
else
	fail "Watch on the target resumes from a source token" \
		"$(head -c 300 "$work/watch.out") $(cat "$work/watch.err")"
fi

# ------------------------------------------------ reverse mirror, rollback
# After the cut-over clients write to the target; a reverse mirror keeps
# the old instance current, and rolling back loses nothing.
on_src admin read-only off >/dev/null 2>&1
reverse=(mirror --insecure --from-endpoint "127.0.0.1:$dst_port" --from-token b
	--to-endpoint "127.0.0.1:$src_port" --to-token a --state-file "$work/reverse-state")
"$PEMBA_BINARY" "${reverse[@]}" 2>"$work/reverse1.err" &
mirror_pid=$!
for _ in $(seq 300); do
	grep -q '^phase watch' "$work/reverse-state" 2>/dev/null && break
	sleep 0.1
done
after_token=""
for i in $(seq 1 10); do
	after_token=$(on_dst relationship create "doc:after$i#viewer@user:new$i" 2>/dev/null)
done
on_dst relationship delete "doc:s6#viewer@user:u6" >/dev/null 2>&1
on_dst relationship touch 'doc:w1#viewer@user:x1[has_level:{"min":99}]' >/dev/null 2>&1
sleep 0.5
kill -9 "$mirror_pid" 2>/dev/null
wait "$mirror_pid" 2>/dev/null
mirror_pid=""
on_dst relationship create "doc:after-kill#viewer@user:late" >/dev/null 2>&1
# Roll back: NEW read-only, the reverse mirror catches up, clients go back.
on_dst admin read-only on >/dev/null 2>&1
timeout 60 "$PEMBA_BINARY" "${reverse[@]}" --until-caught-up >/dev/null 2>"$work/reverse2.err"
status=$?
on_src relationship export 2>/dev/null | sort >"$work/src2.txt"
on_dst relationship export 2>/dev/null | sort >"$work/dst2.txt"
if ((status == 0)) && [[ -s "$work/src2.txt" ]] && cmp -s "$work/src2.txt" "$work/dst2.txt" &&
	grep -q -F 'doc:after10#viewer@user:new10' "$work/src2.txt" &&
	grep -q -F 'doc:after-kill#viewer@user:late' "$work/src2.txt" &&
	grep -q -F 'doc:w1#viewer@user:x1[has_level:{"min":99}]' "$work/src2.txt" &&
	! grep -q -F 'doc:s6#viewer@user:u6' "$work/src2.txt"; then
	ok "rollback through a reverse mirror (SIGKILLed once) loses nothing written after the cut-over"
else
	fail "rollback through a reverse mirror (SIGKILLed once) loses nothing written after the cut-over" \
		"exit $status; $(diff "$work/src2.txt" "$work/dst2.txt" | head -10) $(tail -3 "$work/reverse2.err")"
fi
out=$("on_src" permission check doc:after10 view user:new10 --consistency-at-least "$after_token" 2>&1)
if [[ "$out" == true ]]; then
	ok "after the rollback the old instance honours the new one's tokens"
else
	fail "after the rollback the old instance honours the new one's tokens" "$out"
fi

echo "$passed passed, $failed failed"
((failed == 0))
