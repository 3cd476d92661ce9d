#!/usr/bin/env bash
# pemba's zed-format backups against avsc (npm, pure JS Avro) with snappyjs:
# avsc writes a backup that pemba parses and restores; pemba creates one
# that avsc reads.  A `pemba serve-testing` on a free 127.0.0.1 port.
# Env: PEMBA_BINARY (the pemba to test).  Last line: "N passed, M failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${PEMBA_BINARY:?set PEMBA_BINARY}"
cd "$here"
if [[ ! -d node_modules/avsc || ! -d node_modules/snappyjs ]]; then
	npm install --no-audit --no-fund --silent >&2
fi
work=$(mktemp -d)
server_pid=
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" "$work/server.out" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.1
done
if [[ -z "$port" ]]; then
	echo "serve-testing did not report its port:"; cat "$work/server.err"
	echo "0 passed, 1 failed"; exit 1
fi
timeout 120 node interop.mjs "$PEMBA_BINARY" "$port" "$work"
