#!/usr/bin/env bash
# The client commands over TLS (the default without --insecure) against
# `pemba serve-testing --tls-cert-path/--tls-key-path` with a self-signed
# certificate: refused without trust, accepted with --ca-path or
# --skip-verify-ca.  Needs the openssl command to make the certificate.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

passed=0
failed=0
work=$(mktemp -d)
server_pid=""
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# check NAME WANT_STATUS STDERR_PREFIX -- ARGS...
check() {
	local name=$1 want_status=$2 prefix=$3
	shift 4
	"$PEMBA_BINARY" "$@" >"$work/out" 2>"$work/err"
	local status=$?
	if ((status != want_status)); then
		echo "FAIL $name: expected exit $want_status, got $status"
		sed 's/^/    stderr: /' "$work/err"
		failed=$((failed + 1))
	elif [[ -n "$prefix" && "$(head -c ${#prefix} "$work/err")" != "$prefix" ]]; then
		echo "FAIL $name: stderr does not start with: $prefix"
		sed 's/^/    stderr: /' "$work/err"
		failed=$((failed + 1))
	else
		echo "ok   $name"
		passed=$((passed + 1))
	fi
}

if ! openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
	-addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
	-keyout "$work/key.pem" -out "$work/cert.pem" 2>"$work/openssl.err"; then
	echo "FAIL cannot make a test certificate with openssl"
	cat "$work/openssl.err"
	exit 1
fi

"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 \
	--tls-cert-path "$work/cert.pem" --tls-key-path "$work/key.pem" \
	>"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=""
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" "$work/server.out" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.1
done
if [[ -z "$port" ]]; then
	echo "FAIL serve-testing did not report its port"
	cat "$work/server.err"
	exit 1
fi
export PEMBA_ENDPOINT="127.0.0.1:$port"
export PEMBA_TOKEN="tls-test-$$"

printf 'definition user {}\ndefinition document {\n\trelation viewer: user\n}\n' >"$work/schema.zed"

check "an untrusted certificate is refused (UNAVAILABLE)" 2 "pemba: UNAVAILABLE: " -- \
	schema write "$work/schema.zed"
check "--ca-path trusts the server's certificate" 0 "" -- \
	schema write --ca-path "$work/cert.pem" "$work/schema.zed"
check "--skip-verify-ca accepts any certificate" 0 "" -- \
	relationship touch --skip-verify-ca document:1 viewer user:anne
check "the name in --endpoint is verified" 0 "" -- \
	permission check --ca-path "$work/cert.pem" --endpoint "localhost:$port" document:1 viewer user:anne
check "--insecure against a TLS server fails" 2 "pemba: " -- \
	schema read --insecure

# pemba mirror with TLS on one side only: the TLS server (source) into
# a plaintext one (target), with per-side flags.
"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 >"$work/plain.out" 2>"$work/plain.err" &
plain_pid=$!
plain_port=""
for _ in $(seq 100); do
	plain_port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/plain.err" "$work/plain.out" | head -n 1)
	[[ -n "$plain_port" ]] && break
	sleep 0.1
done
check "a source relationship for the mirror" 0 "" -- \
	relationship create --ca-path "$work/cert.pem" document:9 viewer user:mia
check "mirror: --from-ca-path and --to-insecure, per side" 0 "" -- \
	mirror --from-endpoint "127.0.0.1:$port" --from-token "$PEMBA_TOKEN" --from-ca-path "$work/cert.pem" \
	--to-endpoint "127.0.0.1:$plain_port" --to-token plain --to-insecure \
	--state-file "$work/mirror.state" --until-caught-up
check "mirror: the target has the source's relationship" 0 "" -- \
	permission check --insecure --endpoint "127.0.0.1:$plain_port" --token plain document:9 viewer user:mia
if ! grep -qx true "$work/out"; then
	echo "FAIL mirror over TLS: the target does not answer true"
	failed=$((failed + 1))
fi
check "mirror: without trust on the source side it fails" 2 "pemba: UNAVAILABLE: " -- \
	mirror --from-endpoint "127.0.0.1:$port" --from-token "$PEMBA_TOKEN" \
	--to-endpoint "127.0.0.1:$plain_port" --to-token plain2 --to-insecure \
	--state-file "$work/mirror2.state" --until-caught-up
kill "$plain_pid" 2>/dev/null
wait "$plain_pid" 2>/dev/null

echo "$passed passed, $failed failed"
((failed == 0))
