#!/usr/bin/env bash
# Runs the official Node client's own test suites (npm
# @authzed/authzed-node@1.6.1, dist/src/*.test.js, vitest) against
# `pemba serve-testing` on 127.0.0.1:50051, as they expect.
# Env: PEMBA_BINARY (the pemba to test).  Last line: "N passed, M failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${PEMBA_BINARY:?set PEMBA_BINARY}"
cd "$here"
if [[ ! -x node_modules/.bin/vitest ]]; then
	# `npm ci` trips over the lock file's optional platform packages on npm 11;
	# `npm install` follows the committed lock file just the same.
	npm install --no-audit --no-fund --silent >&2
fi
work=$(mktemp -d)
server_pid=
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:50051 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
	if (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null; then break; fi
	if ! kill -0 "$server_pid" 2>/dev/null; then
		echo "serve-testing exited:"; cat "$work/server.log"; echo "0 passed, 1 failed"; exit 1
	fi
	sleep 0.1
done
status=0
./node_modules/.bin/vitest run --reporter=json --outputFile="$work/report.json" \
	>"$work/vitest.log" 2>&1 || true
if [[ ! -s "$work/report.json" ]]; then
	cat "$work/vitest.log"; echo "0 passed, 1 failed"; exit 1
fi
node report.mjs "$work/report.json" expected-failures.txt || status=$?
if ((status != 0)); then
	echo "--- server log (tail)"; tail -50 "$work/server.log"
fi
exit "$status"
