#!/usr/bin/env bash
# The command line's habits (issue 13 item 6): saved contexts (`pemba
# context ...`, their file's mode, precedence flag > environment > context),
# and the messages where new users were lost, each asserted: `relationship
# read` without a filter, bad JSON in --caveat-context, "cannot connect"
# said once, TLS against a plaintext server and --insecure against a TLS
# one (the fix named), `datastore gc --window 0s`, and a file that is not
# a database.  Starts two serve-testing servers (one plaintext, one TLS
# with a throw-away certificate made by the openssl command).
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
server_pid=""
tls_pid=""
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	[[ -n "$tls_pid" ]] && kill "$tls_pid" 2>/dev/null && wait "$tls_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/client_expect.sh"

# A private config directory: never the user's contexts.
export XDG_CONFIG_HOME="$work/config"
unset PEMBA_ENDPOINT PEMBA_TOKEN
cfile="$XDG_CONFIG_HOME/pemba/contexts.json"

start_serve_testing
plain="$PEMBA_ENDPOINT"
unset PEMBA_ENDPOINT

# --- contexts ------------------------------------------------------------

run context list
check "context list: empty" eval '((status == 0)) && [[ ! -s "$work/out" ]] && has_err "no contexts"'
run context current
check "context current: none is exit 1" eval '((status == 1)) && has_err "no current context"'

expect "context set: first is current" 0 "context local set (current)" -- \
	context set local "$plain" tok-a --insecure
check "contexts file is 0600" eval '[[ $(stat -c %a "$cfile") == 600 ]]'
check "contexts directory is 0700" eval '[[ $(stat -c %a "$(dirname "$cfile")") == 700 ]]'
expect "context set: second is not current" 0 "context far set" -- \
	context set far 127.0.0.1:1 tok-b --insecure
expect "context current" 0 "local" -- context current
run context set fromstdin "$plain" - --insecure <<<"secret-from-stdin"
check "context set TOKEN - reads standard input" eval \
	'((status == 0)) && grep -q "\"token\": \"secret-from-stdin\"" "$cfile"'
expect "context remove" 0 "context fromstdin removed" -- context remove fromstdin

run context list
check "context list: current marked, token redacted" eval \
	'((status == 0)) && grep -q "^\* local .*<redacted>" "$work/out" && grep -q "^  far " "$work/out" && ! grep -q "tok-a" "$work/out"'
run context list --json
check "context list --json: one object per context, token redacted" eval \
	'((status == 0)) && [[ $(wc -l <"$work/out") -eq 2 ]] && grep -q "\"name\":\"local\".*\"current\":true.*\"token\":\"<redacted>\"" "$work/out" && ! grep -q "tok-a" "$work/out"'

# The current context supplies endpoint, token and --insecure.
printf 'definition user {}\ndefinition document {\n\trelation viewer: user\n}\n' >"$work/schema.zed"
run schema write "$work/schema.zed"
check "the current context is used" eval '((status == 0))'
run relationship create document:1 viewer user:anne
check "context: write" eval '((status == 0))'
expect "context: read back through the context's token" 0 \
	"document:1#viewer@user:anne" -- relationship read document
# The token is the datastore's name on serve-testing: another token sees
# another (empty) datastore, so the flag won over the context.
run relationship read document --token other
check "--token beats the context's token" eval '((status == 2)) && has_err "not found"'
# The environment beats the context (for the endpoint).
PEMBA_ENDPOINT=127.0.0.1:1 run relationship read document --insecure
check "PEMBA_ENDPOINT beats the current context" eval '((status == 2)) && has_err "127.0.0.1:1"'
run relationship read document --context far
check "--context NAME picks a context" eval '((status == 2)) && has_err "127.0.0.1:1"'
run relationship read document --context nosuch
check "--context with an unknown name" eval '((status == 2)) && has_err "no context named '"'"'nosuch'"'"'"'
run relationship read document --context far --endpoint "$plain"
check "--context and --endpoint together refused" eval '((status == 2)) && has_err "not both"'
expect "context use" 0 "using context far" -- context use far
expect "context current after use" 0 "far" -- context current
expect "context remove (current)" 0 "context far removed; no context is current now" -- \
	context remove far
run context use nosuch
check "context use: unknown name" eval '((status == 2)) && has_err "no context named"'
run context set "bad name" "$plain"
check "context set: bad name" eval '((status == 2)) && has_err "bad context name"'
run context set x "$plain" t --insecure --skip-verify-ca
check "context set: --insecure with TLS options refused" eval '((status == 2)) && has_err "--insecure is plaintext"'
run context use local
chmod 644 "$cfile"
run schema read
check "a contexts file others can read is refused" eval \
	'((status == 2)) && has_err "may be read or written by others (mode 0644)" && has_err "chmod 600"'
chmod 600 "$cfile"
echo '{"contexts": {' >"$cfile"
run schema read
check "a contexts file with bad JSON is refused" eval \
	'((status == 2)) && has_err "is not valid JSON (line 2"'
# Flags alone do not read the file at all.
run schema read --endpoint "$plain" --insecure --token tok-a
check "flags need no contexts file" eval '((status == 0)) && has_out "definition document"'
rm -f "$cfile"
# Without a home there is no current context, and no complaint about it
# (the filter error comes after the connection is resolved, before any
# connection is made).
env -u HOME -u XDG_CONFIG_HOME -u PEMBA_ENDPOINT "$PEMBA_BINARY" relationship read \
	>"$work/out" 2>"$work/err"
check "no home: no word about contexts" eval 'has_err "needs a filter" && ! has_err "contexts file"'
export PEMBA_ENDPOINT="$plain"

# --- messages -------------------------------------------------------------

run relationship read --insecure
check "relationship read without a filter" eval \
	'((status == 2)) && has_err "needs a filter: at least a resource type" && has_err "relationship export"'

run permission check document:1 view user:a --insecure --caveat-context '{"a": 1,}'
check "--caveat-context: trailing comma" eval \
	'((status == 2)) && has_err "malformed --caveat-context: at character 9" && has_err "no comma before"'
run permission check document:1 view user:a --insecure --caveat-context "{'a': 1}"
check "--caveat-context: single quotes" eval \
	'((status == 2)) && has_err "at character 2" && has_err "double quotes"'
run permission check document:1 view user:a --insecure --caveat-context 'a=1'
check "--caveat-context: not an object" eval \
	'((status == 2)) && has_err "expected a JSON object"'

expect_error "cannot connect: said once" "pemba: UNAVAILABLE: cannot connect to 127.0.0.1:1: " -- \
	schema read --endpoint 127.0.0.1:1 --insecure
check "cannot connect: not repeated" eval '[[ $(grep -o "cannot connect" "$work/err" | wc -l) -eq 1 ]]'

run schema read
check "TLS against a plaintext server: add --insecure" eval \
	'((status == 2)) && has_err "the server speaks plaintext HTTP/2 (h2c), not TLS: add --insecure"'

if openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
	-addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
	-keyout "$work/key.pem" -out "$work/cert.pem" 2>"$work/openssl.err"; then
	"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 \
		--tls-cert-path "$work/cert.pem" --tls-key-path "$work/key.pem" \
		>"$work/tls.out" 2>"$work/tls.err" &
	tls_pid=$!
	tport=""
	for _ in $(seq 100); do
		tport=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/tls.err" | head -n 1)
		[[ -n "$tport" ]] && break
		sleep 0.1
	done
	run schema read --endpoint "127.0.0.1:$tport" --insecure
	check "--insecure against a TLS server: drop --insecure" eval \
		'((status == 2)) && has_err "speaks TLS, not plaintext HTTP/2: drop --insecure"'
	run relationship read document --endpoint "127.0.0.1:$tport" --insecure
	check "--insecure against TLS, streaming call" eval \
		'((status == 2)) && has_err "drop --insecure" && [[ $(wc -l <"$work/err") -eq 1 ]]'
	run schema read --endpoint "127.0.0.1:$tport" --ca-path "$work/cert.pem"
	check "TLS with the CA works" eval '((status == 2)) && has_err "NOT_FOUND"'
else
	fail "openssl could not make a certificate" "$(cat "$work/openssl.err")"
fi

run datastore gc --window 0s --datastore "sqlite://$work/none.db"
check "gc --window 0s: refused with the reason" eval \
	'((status == 2)) && has_err "--window 0s is too small: the window must be at least 1s" && has_err "default 24h"'

echo "this is not a database, just text" >"$work/notes.db"
for words in "datastore gc" "datastore migrate status" "datastore check"; do
	# shellcheck disable=SC2086
	run $words --datastore "sqlite://$work/notes.db"
	check "$words: a file that is not a database" eval \
		'((status != 0)) && has_err "is not a pemba datastore: $work/notes.db is not an SQLite database file" && ! has_err PRAGMA'
done

# --- --json where it was missing ------------------------------------------

run backup create "$work/b.zb" --insecure --token tok-a
check "backup create" eval '((status == 0))'
run backup parse-revision "$work/b.zb" --json
check "backup parse-revision --json" eval '((status == 0)) && grep -q "^{\"token\":\"[A-Za-z0-9_-]*\"}$" "$work/out"'
run backup parse-schema "$work/b.zb" --json
check "backup parse-schema --json" eval '((status == 0)) && [[ $(wc -l <"$work/out") -eq 1 ]] && has_out "{\"schemaText\":\"definition document {\\n"'
run backup parse-relationships "$work/b.zb" --json
check "backup parse-relationships --json" eval \
	'((status == 0)) && [[ "$(cat "$work/out")" == "{\"resource\":{\"objectType\":\"document\",\"objectId\":\"1\"},\"relation\":\"viewer\",\"subject\":{\"object\":{\"objectType\":\"user\",\"objectId\":\"anne\"}}}" ]]'
run backup redact "$work/b.zb" --json
check "backup redact --json: the map as JSON lines" eval \
	'((status == 0)) && has_out "{\"kind\":\"definition\",\"from\":\"document\",\"to\":\"def" && ! grep -qv "^{" "$work/out"'
"$PEMBA_BINARY" schema write "$work/schema.zed" --insecure --token empty-side >/dev/null
run verify --from-endpoint "$PEMBA_ENDPOINT" --to-endpoint "$PEMBA_ENDPOINT" \
	--from-token tok-a --to-token empty-side --insecure --json
check "verify --json: one object per report line" eval \
	'((status == 1)) && has_out "{\"kind\":\"relationship\",\"text\":\"only in A: document:1#viewer@user:anne\"}" && has_out "{\"kind\":\"verdict\",\"text\":\"verify: DIFFERENT\"}" && ! grep -qv "^{\"kind\":" "$work/out"'
"$PEMBA_BINARY" datastore migrate head --yes --datastore "sqlite://$work/m.db" >/dev/null 2>&1
run datastore migrate status --json --datastore "sqlite://$work/m.db"
check "datastore migrate status --json" eval \
	'((status == 0)) && [[ $(wc -l <"$work/out") -eq 1 ]] && has_out "\"exists\":true" && has_out "\"pending\":0" && has_out "\"migrations\":[{\"version\":1,"'
if command -v python3 >/dev/null; then
	check "migrate status --json parses as JSON" python3 -c \
		'import json,sys; d=json.load(open(sys.argv[1])); assert d["layoutVersion"] == d["newestKnown"]' "$work/out"
fi
run datastore gc --json --datastore "sqlite://$work/m.db"
check "datastore gc --json" eval '((status == 0)) && [[ "$(cat "$work/out")" == "{\"removed\":0,\"datastore\":\"sqlite://$work/m.db\"}" ]]'
run datastore snapshot --json --datastore "sqlite://$work/m.db" --to "$work/snap.db"
check "datastore snapshot --json" eval \
	'((status == 0)) && [[ $(wc -l <"$work/out") -eq 1 ]] && has_out "\"path\":\"$work/snap.db\"" && has_out "\"zedtoken\":\"" && has_out "\"newIdentity\":false}"'
run datastore migrate up --json --datastore "sqlite://$work/m.db"
check "--json only with migrate status" eval '((status == 2)) && has_err "--json applies to '"'"'status'"'"'"'

# --- environment ----------------------------------------------------------

PEMBA_DATASTORE="sqlite://$work/env.db" run datastore migrate up --yes
check "PEMBA_DATASTORE names the datastore" eval \
	'((status == 0)) && has_out "sqlite://$work/env.db is now at layout version" && [[ -f "$work/env.db" ]]'
PEMBA_DATASTORE="sqlite://$work/env.db" run datastore gc --datastore "sqlite://$work/none.db"
check "--datastore beats PEMBA_DATASTORE" eval '((status == 1)) && has_err "none.db"'
PEMBA_GRPC_ADDR=127.0.0.1:0 timeout 5 "$PEMBA_BINARY" serve-testing >"$work/out" 2>"$work/err" &
env_pid=$!
for _ in $(seq 50); do
	grep -q "port [0-9]" "$work/err" && break
	sleep 0.1
done
kill "$env_pid" 2>/dev/null
wait "$env_pid" 2>/dev/null
check "PEMBA_GRPC_ADDR is the listen address" has_err "listening on 127.0.0.1:0"
for words in "serve" "datastore gc" "schema read"; do
	# shellcheck disable=SC2086
	run $words --help
	case $words in
	serve) want=(PEMBA_GRPC_ADDR PEMBA_DATASTORE) ;;
	datastore*) want=(PEMBA_DATASTORE) ;;
	*) want=(PEMBA_ENDPOINT PEMBA_TOKEN "--context NAME") ;;
	esac
	all=1
	for w in "${want[@]}"; do has_out "$w" || all=0; done
	check "$words --help names ${want[*]}" eval '((status == 0 && all == 1))'
done

printf 'schema: |-\n  definition user {}\nassertions:\n  assertTrue:\n    - "user:1#foo@user:2"\n' >"$work/bad.yaml"
run validate --json "$work/bad.yaml"
check "validate --json: a line per file with the failures, then the summary" eval \
	'((status == 1)) && [[ $(wc -l <"$work/out") -eq 2 ]] && has_out "\"ok\":false" && has_out "\"failures\":[{\"line\":5,\"column\":7,\"message\":\"assertTrue failed: " && has_out "{\"files\":1,\"passed\":0,\"failed\":1}"'
run validate --help
check "validate --help: caveats are evaluated" eval '((status == 0)) && has_out "Caveats are evaluated"'

echo "$passed passed, $failed failed"
((failed == 0))
