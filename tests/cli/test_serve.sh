#!/usr/bin/env bash
# `pemba serve` and `pemba serve-testing` as a user runs them: refusing to
# start without a key, --no-auth only on loopback, starting with a key,
# SIGTERM exits 0 after a clean shutdown.  Env: PEMBA_BINARY.
set -uo pipefail
: "${PEMBA_BINARY:?set PEMBA_BINARY}"
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# A free port from the kernel's ephemeral range.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until the server logs its start line; 0 if it did.
wait_started() {
	local log=$1 pid=$2
	for _ in $(seq 1 600); do
		grep -q "listening on" "$log" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

unset PEMBA_PRESHARED_KEY

# --- refuses to start without a key
out=$("$PEMBA_BINARY" serve --datastore "sqlite://$work/a.db" 2>&1)
rc=$?
[[ $rc -eq 2 ]] || fail "serve without a key exited $rc, want 2"
grep -q "preshared" <<<"$out" || fail "no key: message does not mention the preshared key: $out"
[[ ! -e "$work/a.db" ]] || fail "serve without a key created the datastore"

# --- --no-auth refused on a non-loopback address
out=$("$PEMBA_BINARY" serve --no-auth --grpc-addr 0.0.0.0:0 --datastore "sqlite://$work/a.db" 2>&1)
rc=$?
[[ $rc -eq 2 ]] || fail "--no-auth on 0.0.0.0 exited $rc, want 2"
grep -q "loopback" <<<"$out" || fail "--no-auth message does not mention loopback: $out"

# --- unknown flag, --help
"$PEMBA_BINARY" serve --bogus >/dev/null 2>&1
[[ $? -eq 2 ]] || fail "unknown flag is not a usage error"
# (The help is read whole first: `grep -q` in a pipe may exit before the
# help is written, and pipefail would then report pemba's SIGPIPE.)
help=$("$PEMBA_BINARY" serve --help)
grep -q -- "--preshared-key" <<<"$help" || fail "serve --help lacks --preshared-key"
grep -q -- "--datastore-conn-pool-read-max-open" <<<"$help" || fail "serve --help lacks the pool flags"
help=$("$PEMBA_BINARY" serve-testing --help)
grep -q -- "--idle-timeout" <<<"$help" || fail "serve-testing --help lacks --idle-timeout"

# --- starts with a key, SIGTERM -> exit 0, one start and one stop line
port=$(free_port)
"$PEMBA_BINARY" serve --grpc-addr "127.0.0.1:$port" --preshared-key k1 \
	--datastore "sqlite://$work/b.db" 2>"$work/serve.log" &
pid=$!
pids+=("$pid")
if wait_started "$work/serve.log" "$pid"; then
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || fail "serve does not accept connections on $port"
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	[[ $rc -eq 0 ]] || fail "serve exited $rc after SIGTERM, want 0"
	grep -q "stopped" "$work/serve.log" || fail "no stop line: $(cat "$work/serve.log")"
	[[ $(wc -l <"$work/serve.log") -eq 2 ]] || fail "serve logged more than a start and a stop line: $(cat "$work/serve.log")"
	[[ -s "$work/b.db" ]] || fail "datastore file missing after serve"
else
	fail "serve with a key did not start: $(cat "$work/serve.log")"
fi

# --- the key may come from the environment; --no-auth on loopback works
port=$(free_port)
PEMBA_PRESHARED_KEY="k1, k2" "$PEMBA_BINARY" serve --grpc-addr "127.0.0.1:$port" \
	--datastore "sqlite://$work/c.db" 2>"$work/env.log" &
pid=$!
pids+=("$pid")
if wait_started "$work/env.log" "$pid"; then
	kill -INT "$pid"
	wait "$pid"
	[[ $? -eq 0 ]] || fail "serve (env key) did not exit 0 on SIGINT"
else
	fail "serve with PEMBA_PRESHARED_KEY did not start: $(cat "$work/env.log")"
fi
port=$(free_port)
"$PEMBA_BINARY" serve --no-auth --grpc-addr "127.0.0.1:$port" \
	--datastore "sqlite::memory:" 2>"$work/noauth.log" &
pid=$!
pids+=("$pid")
if wait_started "$work/noauth.log" "$pid"; then
	kill -TERM "$pid"
	wait "$pid"
	[[ $? -eq 0 ]] || fail "serve --no-auth did not exit 0 on SIGTERM"
else
	fail "serve --no-auth on loopback did not start: $(cat "$work/noauth.log")"
fi

# --- serve-testing needs no key and stops cleanly
port=$(free_port)
"$PEMBA_BINARY" serve-testing --grpc-addr "127.0.0.1:$port" 2>"$work/testing.log" &
pid=$!
pids+=("$pid")
if wait_started "$work/testing.log" "$pid"; then
	kill -TERM "$pid"
	wait "$pid"
	[[ $? -eq 0 ]] || fail "serve-testing did not exit 0 on SIGTERM"
else
	fail "serve-testing did not start: $(cat "$work/testing.log")"
fi

# --- SIGTERM with open Watch streams: they end with UNAVAILABLE at once
# (the client can reconnect elsewhere), and the server exits promptly.
port=$(free_port)
"$PEMBA_BINARY" serve --grpc-addr "127.0.0.1:$port" --preshared-key k1 \
	--datastore "sqlite://$work/w.db" 2>"$work/w.log" &
pid=$!
pids+=("$pid")
if wait_started "$work/w.log" "$pid"; then
	wpids=()
	for i in 1 2 3; do
		"$PEMBA_BINARY" watch --insecure --endpoint "127.0.0.1:$port" \
			--token k1 >"$work/watch$i.out" 2>"$work/watch$i.err" &
		wpids+=("$!")
		pids+=("$!")
	done
	# Wait until the three streams are open: each has printed a write
	# made after it started (a write per round, so a stream that opened
	# late sees a later one).
	printf 'definition user {}\ndefinition doc {\n\trelation viewer: user\n}\n' >"$work/w.zed"
	"$PEMBA_BINARY" schema write --insecure --endpoint "127.0.0.1:$port" \
		--token k1 "$work/w.zed" >/dev/null 2>&1 || fail "schema write for the watch test"
	for n in $(seq 1 100); do
		"$PEMBA_BINARY" relationship create --insecure --token k1 \
			--endpoint "127.0.0.1:$port" "doc:d$n#viewer@user:u" >/dev/null 2>&1
		seen=0
		for i in 1 2 3; do grep -q "doc:" "$work/watch$i.out" && seen=$((seen + 1)); done
		((seen == 3)) && break
		sleep 0.1
	done
	((seen == 3)) || fail "the watch streams did not open ($seen of 3 saw a write)"
	start=$(date +%s%N)
	kill -TERM "$pid"
	for w in "${wpids[@]}"; do wait "$w"; done
	watch_ms=$((($(date +%s%N) - start) / 1000000))
	wait "$pid"
	rc=$?
	server_ms=$((($(date +%s%N) - start) / 1000000))
	[[ $rc -eq 0 ]] || fail "serve with open watches exited $rc after SIGTERM"
	# Bounds, not benchmarks: with streams that never end on their own a
	# server that waits for them would take the 10 s grace for calls in flight.
	((watch_ms < 5000)) || fail "watch clients took ${watch_ms} ms to end after SIGTERM"
	((server_ms < 8000)) || fail "serve took ${server_ms} ms to exit with open watches"
	for i in 1 2 3; do
		grep -qi "shutting down" "$work/watch$i.err" ||
			fail "watch $i did not report the shutdown: $(cat "$work/watch$i.err")"
	done
else
	fail "serve for the watch shutdown test did not start: $(cat "$work/w.log")"
fi

if ((failures)); then
	echo "$failures failure(s)"
	exit 1
fi
echo "ok"
