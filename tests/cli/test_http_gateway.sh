#!/usr/bin/env bash
# `pemba serve --http-enabled`: SpiceDB's HTTP/JSON gateway as curl (HTTP/1.1)
# sees it.  Every Permissions/Schema/Watch route, each answer compared with
# the gRPC answer the CLI (`--json`, proto3 JSON) gets for the same request
# where the CLI has one; auth failures, malformed JSON, unknown fields,
# too-large bodies, NDJSON streams and their errors, a watch that sees a
# write, HTTPS with a self-signed certificate; HTTP/2 with prior knowledge
# (h2c) on the same port.  Env: PEMBA_BINARY.
set -uo pipefail
: "${PEMBA_BINARY:?set PEMBA_BINARY}"
command -v curl >/dev/null || { echo "FAIL: curl is missing (scripts/deps.sh --test)"; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
failures=0
checks=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { checks=$((checks + 1)); }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server NAME EXTRA_ARGS...: sets gport, hport.
start_server() {
	local name=$1
	shift
	gport=$(free_port)
	hport=$(free_port)
	"$PEMBA_BINARY" serve --grpc-addr "127.0.0.1:$gport" \
		--datastore "sqlite://$work/$name.db" --preshared-key "secret" \
		--preshared-key "ci=other-secret" \
		--http-enabled --http-addr "127.0.0.1:$hport" "$@" \
		>"$work/$name.log" 2>&1 &
	local pid=$!
	pids+=("$pid")
	for _ in $(seq 1 600); do
		grep -q "listening on" "$work/$name.log" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "server $name did not start:"
	cat "$work/$name.log"
	exit 1
}

start_server main
base="http://127.0.0.1:$hport"
auth="Authorization: Bearer secret"

# post PATH BODY [curl args...]: the body in $work/out, the status in $code.
post() {
	local path=$1 body=$2
	shift 2
	code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base$path" \
		-H "$auth" -H 'Content-Type: application/json' --data-binary "$body" "$@")
}

# cli ARGS...: the gRPC answer (proto3 JSON lines) in $work/grpc.
cli() {
	"$PEMBA_BINARY" "$@" --endpoint "127.0.0.1:$gport" --token secret \
		--insecure --json >"$work/grpc" 2>"$work/grpc.err"
}

# same_as_grpc WHAT [stream]: $work/out (HTTP) against $work/grpc (gRPC).
# The gateway writes unpopulated fields (grpc-gateway's EmitUnpopulated);
# both sides are compared with default values dropped.  For streams the
# HTTP side is NDJSON {"result": ...} lines.
same_as_grpc() {
	local what=$1 mode=${2:-unary}
	if python3 - "$work/out" "$work/grpc" "$mode" <<'EOF'; then ok; else fail "$what: HTTP and gRPC answers differ"; echo "HTTP: $(cat "$work/out")"; echo "gRPC: $(cat "$work/grpc")"; fi
import json, sys
def norm(v):
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            x = norm(x)
            if x in (None, "", 0, False, [], {}) or (isinstance(x, str) and x.endswith("_UNSPECIFIED")):
                continue
            out[k] = x
        return out
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v
http = open(sys.argv[1]).read().splitlines()
grpc = open(sys.argv[2]).read().splitlines()
if sys.argv[3] == "stream":
    h = [norm(json.loads(l)["result"]) for l in http if l.strip()]
else:
    h = [norm(json.loads("\n".join(http)))]
g = [norm(json.loads(l)) for l in grpc if l.strip()]
sys.exit(0 if h == g else 1)
EOF
}

# expect CODE WHAT [GREP]: status and, optionally, a pattern in the body.
expect() {
	local want=$1 what=$2 pat=${3:-}
	if [[ $code != "$want" ]]; then
		fail "$what: HTTP $code, want $want: $(head -c 400 "$work/out")"
		return
	fi
	if [[ -n $pat ]] && ! grep -q -- "$pat" "$work/out"; then
		fail "$what: body lacks '$pat': $(head -c 400 "$work/out")"
		return
	fi
	ok
}

schema='definition user {}

definition group {
	relation member: user | group#member
}

/** a document */
definition doc {
	relation viewer: user | group#member | user:*
	relation editor: user
	permission edit = editor
	permission view = viewer + edit
}'
schema_json=$(python3 -c 'import json,sys; print(json.dumps({"schema": sys.argv[1]}))' "$schema")

# --- SchemaService
post /v1/schema/write "$schema_json"
expect 200 "schema/write" '"writtenAt":{"token":"'
post /v1/schema/read ''
expect 200 "schema/read" '"schemaText"'
cli schema read
same_as_grpc "schema/read"
post /v1/schema/reflectschema '{}'
expect 200 "schema/reflectschema" '"subjectDefinitionName":"group","optionalCaveatName":"","optionalRelationName":"member"'
grep -q '"comment":"/\*\* a document \*/"' "$work/out" && ok || fail "reflectschema lacks the doc comment: $(cat "$work/out")"
post /v1/schema/permissions/computable '{"definitionName":"doc","relationName":"editor"}'
expect 200 "schema/permissions/computable" '"relationName":"edit","isPermission":true'
post /v1/schema/permissions/dependent '{"definitionName":"doc","permissionName":"view"}'
expect 200 "schema/permissions/dependent" '"relationName":"viewer"'
post /v1/schema/diffschema '{"comparisonSchema":"definition user {}"}'
expect 200 "schema/diffschema" '"definitionRemoved"'
post /v1/schema/write '{"schema":"definition broken {"}'
expect 400 "schema/write of a bad schema" '"code":3'

# --- PermissionsService: writes
rel() { # rel TYPE ID REL STYPE SID
	printf '{"operation":"OPERATION_TOUCH","relationship":{"resource":{"objectType":"%s","objectId":"%s"},"relation":"%s","subject":{"object":{"objectType":"%s","objectId":"%s"}}}}' "$@"
}
post /v1/relationships/write "{\"updates\":[$(rel doc 1 viewer user alice),$(rel doc 2 editor user bob),$(rel group eng member user carol),{\"operation\":\"OPERATION_CREATE\",\"relationship\":{\"resource\":{\"objectType\":\"doc\",\"objectId\":\"3\"},\"relation\":\"viewer\",\"subject\":{\"object\":{\"objectType\":\"group\",\"objectId\":\"eng\"},\"optionalRelation\":\"member\"}}}]}"
expect 200 "relationships/write" '"writtenAt"'
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["writtenAt"]["token"])' "$work/out")
# proto field names are accepted too, and enums as numbers
post /v1/relationships/write '{"updates":[{"operation":2,"relationship":{"resource":{"object_type":"doc","object_id":"4"},"relation":"viewer","subject":{"object":{"object_type":"user","object_id":"dave"}}}}]}'
expect 200 "relationships/write with proto names and enum numbers" '"writtenAt"'
post /v1/relationships/write "{\"updates\":[{\"operation\":\"OPERATION_CREATE\",\"relationship\":{\"resource\":{\"objectType\":\"doc\",\"objectId\":\"1\"},\"relation\":\"viewer\",\"subject\":{\"object\":{\"objectType\":\"user\",\"objectId\":\"alice\"}}}}]}"
expect 409 "relationships/write CREATE of an existing relationship" '"code":6'

# --- checks
full='"consistency":{"fullyConsistent":true}'
check_body() { printf '{%s,"resource":{"objectType":"%s","objectId":"%s"},"permission":"%s","subject":{"object":{"objectType":"%s","objectId":"%s"}}}' "$full" "$@"; }
post /v1/permissions/check "$(check_body doc 1 view user alice)"
expect 200 "permissions/check" '"permissionship":"PERMISSIONSHIP_HAS_PERMISSION"'
cli permission check doc:1 view user:alice --consistency-full
same_as_grpc "permissions/check (has)"
post /v1/permissions/check "$(check_body doc 1 view user bob)"
expect 200 "permissions/check (no)" '"permissionship":"PERMISSIONSHIP_NO_PERMISSION"'
cli permission check doc:1 view user:bob --consistency-full
same_as_grpc "permissions/check (no)"
post /v1/permissions/check "{\"consistency\":{\"atLeastAsFresh\":{\"token\":\"$token\"}},\"resource\":{\"objectType\":\"doc\",\"objectId\":\"3\"},\"permission\":\"view\",\"subject\":{\"object\":{\"objectType\":\"user\",\"objectId\":\"carol\"}}}"
expect 200 "permissions/check at_least_as_fresh" 'PERMISSIONSHIP_HAS_PERMISSION'
post /v1/permissions/check "$(check_body nope 1 view user alice)"
expect 400 "permissions/check on an unknown type (FAILED_PRECONDITION)" '"code":9'
post /v1/permissions/checkbulk "{$full,\"items\":[$(check_body doc 1 view user alice | sed "s/^{$full,/{/"),$(check_body doc 2 view user alice | sed "s/^{$full,/{/")]}"
expect 200 "permissions/checkbulk" '"pairs"'
python3 -c '
import json,sys
r=json.load(open(sys.argv[1]))
p=[x["item"]["permissionship"] for x in r["pairs"]]
sys.exit(0 if p==["PERMISSIONSHIP_HAS_PERMISSION","PERMISSIONSHIP_NO_PERMISSION"] else 1)' "$work/out" && ok || fail "checkbulk answers: $(cat "$work/out")"
post /v1/experimental/permissions/bulkcheckpermission "{$full,\"items\":[$(check_body doc 2 edit user bob | sed "s/^{$full,/{/")]}"
expect 200 "experimental bulkcheckpermission" 'PERMISSIONSHIP_HAS_PERMISSION'
post /v1/permissions/expand "{$full,\"resource\":{\"objectType\":\"doc\",\"objectId\":\"3\"},\"permission\":\"view\"}"
expect 200 "permissions/expand" '"treeRoot"'
cli permission expand doc:3 view --consistency-full
same_as_grpc "permissions/expand"

# --- streams: NDJSON {"result": ...} lines
post /v1/relationships/read "{$full,\"relationshipFilter\":{\"resourceType\":\"doc\"}}"
expect 200 "relationships/read" '^{"result":{"readAt"'
[[ $(wc -l <"$work/out") -eq 4 ]] && ok || fail "relationships/read: $(wc -l <"$work/out") lines, want 4"
cli relationship read doc --consistency-full
same_as_grpc "relationships/read" stream
post /v1/relationships/read "{$full,\"relationshipFilter\":{\"resourceType\":\"doc\"},\"optionalLimit\":2}"
[[ $(wc -l <"$work/out") -eq 2 ]] && ok || fail "relationships/read with a limit: $(wc -l <"$work/out") lines, want 2"
post /v1/permissions/resources "{$full,\"resourceObjectType\":\"doc\",\"permission\":\"view\",\"subject\":{\"object\":{\"objectType\":\"user\",\"objectId\":\"carol\"}}}"
expect 200 "permissions/resources" '"resourceObjectId":"3"'
cli permission lookup-resources doc view user:carol --consistency-full
same_as_grpc "permissions/resources" stream
post /v1/permissions/subjects "{$full,\"resource\":{\"objectType\":\"doc\",\"objectId\":\"3\"},\"permission\":\"view\",\"subjectObjectType\":\"user\"}"
expect 200 "permissions/subjects" '"subjectObjectId":"carol"'
cli permission lookup-subjects doc:3 view user --consistency-full
same_as_grpc "permissions/subjects" stream
# An error before the first response: its own HTTP status, an error chunk.
post /v1/relationships/read "{$full,\"relationshipFilter\":{\"resourceType\":\"nope\"}}"
expect 400 "relationships/read of an unknown type" '^{"error":{"code":9,"message":'

# --- bulk import / export (client streaming: consecutive JSON objects)
imp() { printf '{"relationships":[{"resource":{"objectType":"doc","objectId":"%s"},"relation":"viewer","subject":{"object":{"objectType":"user","objectId":"erin"}}}]}' "$1"; }
post /v1/relationships/importbulk "$(imp 10)
$(imp 11)"
expect 200 "relationships/importbulk" '{"numLoaded":"2"}'
post /v1/experimental/relationships/bulkimport "$(imp 12)"
expect 200 "experimental bulkimport" '{"numLoaded":"1"}'
post /v1/relationships/exportbulk '{}'
expect 200 "relationships/exportbulk" '"objectId":"12"'
post /v1/experimental/relationships/bulkexport '{}'
expect 200 "experimental bulkexport" '"objectId":"11"'

# --- delete
post /v1/relationships/delete '{"relationshipFilter":{"resourceType":"doc","optionalResourceId":"12"}}'
expect 200 "relationships/delete" '"deletionProgress":"DELETION_PROGRESS_COMPLETE"'
post /v1/relationships/read "{$full,\"relationshipFilter\":{\"resourceType\":\"doc\",\"optionalResourceId\":\"12\"}}"
[[ $code == 200 && ! -s $work/out ]] && ok || fail "read after delete: HTTP $code, $(cat "$work/out")"

# --- experimental counters and reflection: pemba's gRPC server answers
# UNIMPLEMENTED for them, and the gateway says so as grpc-gateway does.
for route in registerrelationshipcounter countrelationships unregisterrelationshipcounter reflectschema \
	permissions/computable permissions/dependent diffschema; do
	post "/v1/experimental/$route" '{"name":"docs"}'
	expect 501 "experimental $route (UNIMPLEMENTED over gRPC)" '"code":12,"message":"unknown method /authzed.api.v1.ExperimentalService/'
done

# --- watch: a long-lived NDJSON stream that sees a later write
curl -sS -N -X POST "$base/v1/watch" -H "$auth" -d '{"optionalObjectTypes":["doc"]}' >"$work/watch" 2>&1 &
wpid=$!
pids+=("$wpid")
sleep 0.5
post /v1/relationships/write "{\"updates\":[$(rel doc 99 viewer user zed)]}"
for _ in $(seq 1 100); do grep -q '"objectId":"99"' "$work/watch" && break; sleep 0.05; done
if grep -q '^{"result":{"updates":\[{"operation":"OPERATION_TOUCH","relationship":{"resource":{"objectType":"doc","objectId":"99"}' "$work/watch"; then ok; else fail "watch did not report the write: $(cat "$work/watch")"; fi
kill "$wpid" 2>/dev/null

# --- authentication
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base/v1/schema/read")
expect 401 "no Authorization header" '"code":16'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base/v1/schema/read" -H "Authorization: Bearer wrong")
expect 401 "a wrong key" '"message":"invalid preshared key"'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base/v1/schema/read" -H "Authorization: Bearer other-secret")
expect 200 "a named key" '"schemaText"'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base/v1/relationships/read" -H "Authorization: Bearer wrong" -d '{"relationshipFilter":{"resourceType":"doc"}}')
expect 401 "a wrong key on a stream" '^{"error":{"code":16'

# --- /healthz (grpc-gateway's health endpoint): no key needed
code=$(curl -sS -o "$work/out" -w '%{http_code}' "$base/healthz")
expect 200 "GET /healthz" '{"status":"SERVING"}'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base/healthz")
expect 501 "POST /healthz" '"code":12'

# --- malformed requests
post /v1/permissions/check '{"resource": {'
expect 400 "malformed JSON" '"message":"malformed JSON at line 1'
post /v1/permissions/check '[1,2]'
expect 400 "an array body" 'expected an object'
post /v1/permissions/check '{"resource":{"objectType":7}}'
expect 400 "a number for a string field" 'field `resource.objectType`: expected a string'
post /v1/relationships/write '{"updates":[{"operation":"OPERATION_NOPE"}]}'
expect 400 "an unknown enum name" 'is not a value of enum authzed.api.v1.RelationshipUpdate.Operation'
post /v1/permissions/check '{"consistency":{"fullyConsistent":true,"minimizeLatency":true}}'
expect 400 "two members of a oneof" 'oneof'
# Unknown fields are ignored, as SpiceDB's gateway does (DiscardUnknown).
post /v1/permissions/check "$(check_body doc 1 view user alice | sed 's/^{/{"noSuchField":{"x":1},/')"
expect 200 "an unknown field (ignored, as grpc-gateway's DiscardUnknown)" 'PERMISSIONSHIP_HAS_PERMISSION'
head -c $((5 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$work/big"
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base/v1/schema/write" -H "$auth" --data-binary @"$work/big")
expect 413 "a body above 4 MiB" '"code":8'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "$base/v1/schema/write" -H "$auth" -H 'Transfer-Encoding: chunked' --data-binary @"$work/big")
expect 413 "a chunked body above 4 MiB" '"code":8'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X GET "$base/v1/schema/read" -H "$auth")
expect 501 "GET on a POST route" '"code":12'
post /v1/nowhere '{}'
expect 404 "an unknown route" '"code":5'

# --- keep-alive: several requests on one HTTP/1.1 connection
n=$(curl -sS -X POST "$base/v1/schema/read" -H "$auth" --next -X POST "$base/v1/schema/read" -H "$auth" -v 2>&1 | grep -c 'Re-using existing connection')
[[ $n -ge 1 ]] && ok || fail "curl did not reuse the connection"

# --- HTTP/2 with prior knowledge (h2c) on the same port
h2() { # h2 PATH BODY [curl args...]
	local path=$1 body=$2
	shift 2
	code=$(curl -sS --http2-prior-knowledge -o "$work/out" -w '%{http_code} %{http_version}' \
		-X POST "$base$path" -H "$auth" --data-binary "$body" "$@")
}
h2 /v1/permissions/check "$(check_body doc 1 view user alice)"
[[ $code == "200 2" ]] && ok || fail "HTTP/2 check: $code"
cli permission check doc:1 view user:alice --consistency-full
same_as_grpc "HTTP/2 permissions/check"
h2 /v1/relationships/read "{$full,\"relationshipFilter\":{\"resourceType\":\"doc\"}}"
cli relationship read doc --consistency-full
same_as_grpc "HTTP/2 relationships/read" stream
h2 /v1/relationships/importbulk "$(imp 20)
$(imp 21)"
code=${code% *}
expect 200 "HTTP/2 importbulk" '{"numLoaded":"2"}'
code=$(curl -sS --http2-prior-knowledge -o "$work/out" -w '%{http_code}' -X POST "$base/v1/schema/read" -H "Authorization: Bearer wrong")
expect 401 "HTTP/2 with a wrong key" '"code":16'
h2 /v1/relationships/read '{"relationshipFilter":{"resourceType":"nope"}}'
code=${code% *}
expect 400 "HTTP/2 stream failing before its first result" '^{"error":{"code":9'
h2 /v1/permissions/check '{"resource":'
code=${code% *}
expect 400 "HTTP/2 malformed JSON" 'malformed JSON'
code=$(curl -sS --http2-prior-knowledge -o "$work/out" -w '%{http_code}' -X POST "$base/v1/schema/write" -H "$auth" --data-binary @"$work/big")
expect 413 "HTTP/2 body above 4 MiB" '"code":8'
code=$(curl -sS --http2-prior-knowledge -o "$work/out" -w '%{http_code}' "$base/v1/schema/read" -H "$auth")
expect 501 "HTTP/2 GET" '"code":12'
curl -sS --http2-prior-knowledge -N -X POST "$base/v1/watch" -H "$auth" -d '{"optionalObjectTypes":["doc"]}' >"$work/watch2" 2>&1 &
wpid=$!
pids+=("$wpid")
sleep 0.5
post /v1/relationships/write "{\"updates\":[$(rel doc 98 viewer user zed)]}"
for _ in $(seq 1 100); do grep -q '"objectId":"98"' "$work/watch2" && break; sleep 0.05; done
grep -q '^{"result":{"updates":\[{"operation":"OPERATION_TOUCH"' "$work/watch2" && ok || fail "HTTP/2 watch did not report the write: $(cat "$work/watch2")"
kill "$wpid" 2>/dev/null
# Several concurrent streams on one connection.
n=$(curl -sS --no-progress-meter --http2-prior-knowledge --parallel --parallel-immediate -X POST "$base/v1/schema/read" -H "$auth" \
	--next --http2-prior-knowledge -X POST "$base/v1/schema/read" -H "$auth" \
	--next --http2-prior-knowledge -X POST "$base/v1/schema/read" -H "$auth" | grep -o '"schemaText"' | wc -l)
[[ $n -eq 3 ]] && ok || fail "HTTP/2: $n of 3 parallel answers"

# --- flags: --help, TLS flags in pairs, --no-auth refused on a public HTTP address
help=$("$PEMBA_BINARY" serve --help)
grep -q -- "--http-enabled" <<<"$help" && grep -q -- "--http-tls-cert-path" <<<"$help" && ok || fail "serve --help lacks the --http-* flags"
out=$("$PEMBA_BINARY" serve --preshared-key k --datastore "sqlite://$work/x.db" --http-enabled --http-tls-cert-path /nonexistent 2>&1)
[[ $? -eq 2 ]] && grep -q "go together" <<<"$out" && ok || fail "--http-tls-cert-path alone: $out"
out=$("$PEMBA_BINARY" serve --no-auth --datastore "sqlite://$work/x.db" --http-enabled --http-addr 0.0.0.0:0 2>&1)
[[ $? -eq 2 ]] && grep -q "loopback" <<<"$out" && ok || fail "--no-auth with a public --http-addr: $out"

# --- HTTPS with a self-signed certificate
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
	-days 1 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
# The gRPC listener speaks TLS too: the gateway reaches it over TLS.
start_server tls --http-tls-cert-path "$work/cert.pem" --http-tls-key-path "$work/key.pem" \
	--tls-cert-path "$work/cert.pem" --tls-key-path "$work/key.pem"
code=$(curl -sS -o "$work/out" -w '%{http_code}' --cacert "$work/cert.pem" -X POST "https://127.0.0.1:$hport/v1/schema/write" -H "$auth" -d '{"schema":"definition user {}"}')
expect 200 "HTTPS schema/write" '"writtenAt"'
code=$(curl -sS -o "$work/out" -w '%{http_code}' --cacert "$work/cert.pem" -X POST "https://127.0.0.1:$hport/v1/schema/read" -H "Authorization: Bearer nope")
expect 401 "HTTPS with a wrong key" '"code":16'
# ALPN: h2 by default, HTTP/1.1 when the client asks for it (relayed to
# libmicrohttpd); streams on both.
code=$(curl -sS -o "$work/out" -w '%{http_code} %{http_version}' --cacert "$work/cert.pem" -X POST "https://127.0.0.1:$hport/v1/schema/read" -H "$auth")
[[ $code == "200 2" ]] && ok || fail "HTTPS default (ALPN h2): $code"
code=$(curl -sS --http1.1 -o "$work/out" -w '%{http_code} %{http_version}' --cacert "$work/cert.pem" -X POST "https://127.0.0.1:$hport/v1/schema/read" -H "$auth")
[[ $code == "200 1.1" ]] && grep -q '"schemaText"' "$work/out" && ok || fail "HTTPS HTTP/1.1: $code $(cat "$work/out")"
for v in --http1.1 --http2; do
	code=$(curl -sS $v -o "$work/out" -w '%{http_code}' --cacert "$work/cert.pem" -X POST "https://127.0.0.1:$hport/v1/relationships/read" -H "$auth" -d '{"relationshipFilter":{"resourceType":"user"}}')
	[[ $code == 200 && ! -s $work/out ]] && ok || fail "HTTPS $v empty stream: $code $(cat "$work/out")"
	code=$(curl -sS $v -o "$work/out" -w '%{http_code}' --cacert "$work/cert.pem" -X POST "https://127.0.0.1:$hport/v1/relationships/read" -H "$auth" -d '{"relationshipFilter":{"resourceType":"nope"}}')
	expect 400 "HTTPS $v stream error before its first result" '^{"error":{"code":9'
done
if curl -sS -o /dev/null "http://127.0.0.1:$hport/v1/schema/read" -X POST --max-time 5 2>/dev/null; then
	fail "cleartext HTTP answered on the HTTPS port"
else ok; fi

# --- serve-testing: the bearer token picks the datastore over HTTP too
gp=$(free_port)
hp=$(free_port)
"$PEMBA_BINARY" serve-testing --grpc-addr "127.0.0.1:$gp" --http-enabled --http-addr "127.0.0.1:$hp" >"$work/testing.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do grep -q "listening on" "$work/testing.log" && break; sleep 0.05; done
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "http://127.0.0.1:$hp/v1/schema/write" -H "Authorization: Bearer one" -d '{"schema":"definition user {}"}')
expect 200 "serve-testing: schema/write with token one" '"writtenAt"'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "http://127.0.0.1:$hp/v1/schema/read" -H "Authorization: Bearer one")
expect 200 "serve-testing: token one reads its schema" 'definition user'
code=$(curl -sS -o "$work/out" -w '%{http_code}' -X POST "http://127.0.0.1:$hp/v1/schema/read" -H "Authorization: Bearer two")
expect 404 "serve-testing: token two has its own empty datastore" '"code":5'

# --- off unless enabled
gp=$(free_port)
"$PEMBA_BINARY" serve --grpc-addr "127.0.0.1:$gp" --datastore "sqlite://$work/off.db" --preshared-key k >"$work/off.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do grep -q "listening on" "$work/off.log" && break; sleep 0.05; done
grep -q "HTTP gateway" "$work/off.log" && fail "the gateway started without --http-enabled" || ok

echo "$checks passed, $failures failed"
[[ $failures -eq 0 ]]
