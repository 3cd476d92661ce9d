#!/usr/bin/env bash
# gRPC server reflection (grpc.reflection.v1 and v1alpha) through an
# independent client: npm grpc-js-reflection-client (reflection.mjs),
# against `pemba serve` with a preshared key on a free 127.0.0.1 port.
# Env: PEMBA_BINARY.  Needs node and npm (`npm install` when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${PEMBA_BINARY:?set PEMBA_BINARY}"
cd "$here"
if [[ ! -d node_modules/grpc-js-reflection-client || ! -d node_modules/@grpc/grpc-js ]]; then
	npm install --no-audit --no-fund --silent >&2
fi
work=$(mktemp -d)
server_pid=
proxy_pid=
cleanup() {
	[[ -n "$proxy_pid" ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
# wait_port FILE: the port a server reported in FILE ("" after 10 s).
wait_port() {
	local port=
	for _ in $(seq 100); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$1" | head -n 1)
		[[ -n "$port" ]] && break
		sleep 0.1
	done
	echo "$port"
}
trap cleanup EXIT
key=reflection-test-key
"$PEMBA_BINARY" serve --datastore sqlite::memory: --preshared-key "$key" \
	--grpc-addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=$(wait_port "$work/server.err")
if [[ -z "$port" ]]; then
	echo "serve did not report its port:"; cat "$work/server.err"
	echo "0 passed, 1 failed"; exit 1
fi
# `pemba proxy` in front of it (its own shadow too: only reflection goes
# through) answers reflection for its own table.
"$PEMBA_BINARY" proxy --insecure --listen 127.0.0.1:0 --preshared-key proxy-key \
	--primary-endpoint "127.0.0.1:$port" --primary-token "$key" \
	--shadow-endpoint "127.0.0.1:$port" --shadow-token "$key" \
	>"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
proxy_port=$(wait_port "$work/proxy.err")
if [[ -z "$proxy_port" ]]; then
	echo "proxy did not report its port:"; cat "$work/proxy.err"
	echo "0 passed, 1 failed"; exit 1
fi
status=0
timeout 120 node reflection.mjs "$port" "$key" "$proxy_port" || status=$?
if ((status != 0)); then
	echo "--- server log (tail)"; tail -30 "$work/server.err"
	echo "--- proxy log (tail)"; tail -30 "$work/proxy.err"
fi
exit "$status"
