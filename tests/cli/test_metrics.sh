#!/usr/bin/env bash
# Metrics, health and request logs of `pemba serve` (issue 13): /metrics is
# valid Prometheus text (every line, TYPE before samples, cumulative
# histogram buckets ending in +Inf == _count) whose counters move by exactly
# the calls made; /healthz and grpc.health.v1 follow the datastore (a
# PostgreSQL cluster stopped and started again); --log-format json lines
# parse and carry method, status, duration and request id at debug; no key
# ever appears in the logs; x-request-id comes back; flags are validated.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
source "$(dirname "$0")/client_expect.sh"
source "$(dirname "$0")/pg_expect.sh"
trap pg_cleanup EXIT

for tool in curl jq; do
	command -v $tool >/dev/null || {
		echo "FAIL $tool is not installed (scripts/deps.sh --test)"
		echo "0 passed, 1 failed"
		exit 1
	}
done

key="s3cret-key-$$-$RANDOM"

# start_serve NAME ARGS...: `pemba serve` with ARGS, stderr in
# $work/NAME.log; sets $gport and $mport (the metrics port, "" if none).
start_serve() {
	local name=$1
	shift
	"$PEMBA_BINARY" serve --grpc-addr 127.0.0.1:0 "$@" \
		>"$work/$name.out" 2>"$work/$name.log" &
	serve_pid=$!
	pg_pids+=("$serve_pid")
	gport="" mport=""
	for _ in $(seq 200); do
		gport=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/$name.log" | head -n 1)
		[[ -n "$gport" ]] && break
		kill -0 "$serve_pid" 2>/dev/null || break
		sleep 0.1
	done
	sleep 0.2
	mport=$(sed -n 's#.*metrics at http://[^ ]*:\([0-9][0-9]*\) .*#\1#p' "$work/$name.log" | head -n 1)
}

# scrape FILE: GET /metrics into FILE; true on HTTP 200.
scrape() {
	[[ "$(curl -s -o "$1" -w '%{http_code}' "http://127.0.0.1:$mport/metrics")" == 200 ]]
}

# metric FILE SELECTOR: the value of the first sample line starting with
# SELECTOR (a name, or name{labels prefix), or 0 when absent.
metric() {
	local v
	v=$(awk -v sel="$2" 'index($0, sel) == 1 { print $NF; exit }' "$1")
	echo "${v:-0}"
}

# valid_exposition FILE: every line is a HELP/TYPE comment or a sample; each
# sample's family has a TYPE line before it; histogram buckets cumulative,
# ending in le="+Inf" equal to _count.  Prints what is wrong.
valid_exposition() {
	awk '
	function fail(msg) { print "line " NR ": " msg ": " $0; bad = 1 }
	/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* / { next }
	/^# TYPE / {
		if ($0 !~ /^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped)$/) fail("bad TYPE")
		if ($3 in type) fail("second TYPE for " $3)
		type[$3] = $4; next
	}
	/^#/ { fail("unknown comment"); next }
	{
		if ($0 !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*)?\})? (-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|[-+]Inf|NaN)$/) {
			fail("bad sample"); next
		}
		name = $0; sub(/[{ ].*/, "", name)
		family = name
		if (!(family in type)) { f = family; sub(/_(bucket|sum|count)$/, "", f); family = f }
		if (!(family in type)) { fail("no TYPE for " name); next }
		if (type[family] == "counter" && $NF + 0 < 0) fail("negative counter")
		if (type[family] == "histogram" && name ~ /_bucket$/) {
			series = $0; sub(/,?le="[^"]*"\}.*/, "", series); sub(/\{$/, "", series)
			if (series in last && $NF + 0 < last[series]) fail("buckets not cumulative")
			last[series] = $NF + 0
			if ($0 ~ /le="\+Inf"/) inf[series] = $NF + 0
		}
		if (type[family] == "histogram" && name ~ /_count$/) {
			series = $0; sub(/ [^ ]*$/, "", series); sub(/_count/, "_bucket", series); sub(/\}$/, "", series); sub(/\{$/, "", series)
			if (!(series in inf)) fail("no +Inf bucket before _count")
			else if (inf[series] != $NF + 0) fail("+Inf bucket differs from _count")
		}
	}
	END { exit bad }' "$1"
}

# grpc_health PORT SERVICE_BYTES: a grpc.health.v1.Health/Check call made
# with curl (h2c, prior knowledge); the response (headers and body) in
# $work/health.out, the body bytes as hex in $health_hex.
grpc_health() {
	printf '\x00\x00\x00\x00\x00' >"$work/health.req"
	curl -s --http2-prior-knowledge -D "$work/health.hdr" -o "$work/health.body" \
		-H 'content-type: application/grpc' -H 'te: trailers' "$@" \
		--data-binary @"$work/health.req" \
		"http://127.0.0.1:$gport/grpc.health.v1.Health/Check"
	health_hex=$(od -An -tx1 "$work/health.body" | tr -d ' \n')
}

# --- flags -------------------------------------------------------------

expect_error "--metrics-enabled takes true or false" \
	"pemba serve: --metrics-enabled must be true or false, not 'maybe'" -- \
	serve --no-auth --metrics-enabled=maybe
expect_error "--metrics-addr must be HOST:PORT" \
	"pemba serve: --metrics-addr must be HOST:PORT" -- \
	serve --no-auth --metrics-addr nonsense
expect_error "--log-format is text or json" \
	"pemba serve: --log-format must be text or json, not 'xml'" -- \
	serve --no-auth --log-format xml
run serve --help
check "serve --help documents the metrics and log flags" \
	eval 'has_out "--metrics-enabled" && has_out "--metrics-addr" && has_out "--log-format"'

# --- a server on SQLite, metrics on an ephemeral port, JSON debug logs ----

cat >"$work/schema.zed" <<'ZED'
definition user {}
definition document {
	relation viewer: user
	permission view = viewer
}
ZED
start_serve one --datastore "sqlite://$work/one.db" --preshared-key "$key" \
	--metrics-addr 127.0.0.1:0 --log-level debug --log-format json
if [[ -z "$gport" || -z "$mport" ]]; then
	fail "serve reports its gRPC and metrics ports" "no ports"
	echo "$passed passed, $failed failed"
	exit 1
fi
ok "serve reports its gRPC and metrics ports"
C=(--insecure --endpoint "127.0.0.1:$gport" --token "$key")

check "/metrics answers 200" scrape "$work/m0"
if out=$(valid_exposition "$work/m0"); then ok "/metrics is valid exposition text"; else fail "/metrics is valid exposition text" "$out"; fi
check "/metrics has SpiceDB's gRPC families" eval \
	'grep -q "^# TYPE grpc_server_handled_total counter$" "$work/m0" &&
	 grep -q "^# TYPE grpc_server_started_total counter$" "$work/m0" &&
	 grep -q "^# TYPE grpc_server_msg_received_total counter$" "$work/m0" &&
	 grep -q "^# TYPE grpc_server_msg_sent_total counter$" "$work/m0" &&
	 grep -q "^# TYPE grpc_server_handling_seconds histogram$" "$work/m0" &&
	 grep -q "^# TYPE pemba_datastore_queries_total counter$" "$work/m0" &&
	 grep -q "^# TYPE pemba_datastore_query_seconds histogram$" "$work/m0" &&
	 grep -q "^# TYPE pemba_grpc_connections gauge$" "$work/m0" &&
	 grep -q "^# TYPE pemba_gc_runs_total counter$" "$work/m0" &&
	 grep -q "^# TYPE pemba_revision_head gauge$" "$work/m0"'
ctype=$(curl -s -o /dev/null -w '%{content_type}' "http://127.0.0.1:$mport/metrics")
check "/metrics is text/plain version 0.0.4" eval '[[ "$ctype" == "text/plain; version=0.0.4; charset=utf-8" ]]'

check_sel='grpc_server_handled_total{grpc_code="OK",grpc_method="CheckPermission",grpc_service="authzed.api.v1.PermissionsService",grpc_type="unary"}'
hist_sel='grpc_server_handling_seconds_count{grpc_method="CheckPermission",'
started_sel='grpc_server_started_total{grpc_method="CheckPermission",'
write_sel='grpc_server_handled_total{grpc_code="OK",grpc_method="WriteRelationships",'
before_ok=$(metric "$work/m0" "$check_sel")
before_hist=$(metric "$work/m0" "$hist_sel")
before_started=$(metric "$work/m0" "$started_sel")
before_queries=$(metric "$work/m0" "pemba_datastore_queries_total ")

run schema write "${C[@]}" "$work/schema.zed"
check "schema write works" exit_is 0
run relationship create "${C[@]}" document:1 viewer user:anne
check "relationship create works" exit_is 0
calls=7
for _ in $(seq $calls); do
	"$PEMBA_BINARY" permission check "${C[@]}" document:1 view user:anne >/dev/null 2>&1
done
run permission check "${C[@]}" --token wrong-key document:1 view user:anne
check "a wrong key is UNAUTHENTICATED" exit_is 2

check "/metrics answers 200 again" scrape "$work/m1"
if out=$(valid_exposition "$work/m1"); then ok "/metrics stays valid after calls"; else fail "/metrics stays valid after calls" "$out"; fi
after_ok=$(metric "$work/m1" "$check_sel")
check "handled_total{OK, CheckPermission} rose by exactly $calls" \
	eval '(( after_ok - before_ok == calls ))'
check "the handling histogram counted the $((calls + 1)) CheckPermission calls" \
	eval '(( $(metric "$work/m1" "$hist_sel") - before_hist == calls + 1 ))'
check "started_total{CheckPermission} rose by $((calls + 1))" \
	eval '(( $(metric "$work/m1" "$started_sel") - before_started == calls + 1 ))'
check "the wrong key is counted as UNAUTHENTICATED" \
	eval '(( $(metric "$work/m1" "grpc_server_handled_total{grpc_code=\"UNAUTHENTICATED\",grpc_method=\"CheckPermission\",") == 1 ))'
check "handled_total{OK, WriteRelationships} is 1" \
	eval '(( $(metric "$work/m1" "$write_sel") == 1 ))'
check "datastore queries were counted" \
	eval '(( $(metric "$work/m1" "pemba_datastore_queries_total ") > before_queries ))'
check "check dispatches were counted" \
	eval '(( $(metric "$work/m1" "pemba_check_dispatches_total ") >= calls ))'
check "messages sent by CheckPermission were counted" \
	eval '(( $(metric "$work/m1" "grpc_server_msg_sent_total{grpc_method=\"CheckPermission\",") == calls ))'

code=$(curl -s -o "$work/hz" -w '%{http_code}' "http://127.0.0.1:$mport/healthz")
check "/healthz is 200 ok while the datastore answers" eval '[[ $code == 200 && "$(cat "$work/hz")" == ok ]]'
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/nope")
check "an unknown path is 404" eval '[[ $code == 404 ]]'
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data x "http://127.0.0.1:$mport/metrics")
check "POST is 405" eval '[[ $code == 405 ]]'

grpc_health
check "grpc health is SERVING (no key needed)" eval '[[ "$health_hex" == 00000000020801 ]]'
check "a generated x-request-id comes back" \
	eval 'grep -Eqi "^x-request-id: [0-9a-f]{16}" "$work/health.hdr"'
grpc_health -H 'x-request-id: my-trace.42'
check "the client's x-request-id comes back" \
	eval 'grep -qi "^x-request-id: my-trace.42" "$work/health.hdr"'

# A second server asking for the same metrics address: a clear error.
run serve --no-auth --grpc-addr 127.0.0.1:0 --datastore sqlite::memory: \
	--metrics-addr "127.0.0.1:$mport"
check "a busy --metrics-addr stops the server naming the flag" \
	eval 'exit_is 1 && has_err "--metrics-addr 127.0.0.1:$mport: cannot listen"'

kill "$serve_pid" && wait "$serve_pid" 2>/dev/null
log="$work/one.log"
check "every log line is JSON with level, time and msg" \
	eval 'jq -e -s "length > 0 and all(.[]; (.level|type) == \"string\" and (.time|type) == \"string\" and (.msg|type) == \"string\")" "$log" >/dev/null'
n_req=$(jq -s '[.[] | select(.msg == "request" and .method == "/authzed.api.v1.PermissionsService/CheckPermission" and .grpc_code == "OK" and .level == "debug" and (.duration_ms|type) == "number" and (.request_id|test("^[0-9a-f]{16}$")))] | length' "$log")
check "one debug request line per CheckPermission with status, duration and id" \
	eval '(( n_req == calls ))'
check "the request line of the traced health call carries the client's id" \
	eval 'jq -e -s "any(.[]; .request_id == \"my-trace.42\" and .method == \"/grpc.health.v1.Health/Check\")" "$log" >/dev/null'
check "the failed call is logged UNAUTHENTICATED" \
	eval 'jq -e -s "any(.[]; .grpc_code == \"UNAUTHENTICATED\")" "$log" >/dev/null'
if grep -qF -- "$key" "$work"/*.log; then
	fail "no key appears in the logs" "found the key"
else
	ok "no key appears in the logs"
fi
if grep -qF -- "wrong-key" "$work"/*.log; then
	fail "no presented token appears in the logs" "found it"
else
	ok "no presented token appears in the logs"
fi

# --- metrics off, text logs -----------------------------------------------

start_serve off --no-auth --datastore sqlite::memory: --metrics-enabled=false --log-level debug
check "--metrics-enabled=false serves no metrics" eval '[[ -n "$gport" && -z "$mport" ]]'
"$PEMBA_BINARY" schema read --insecure --endpoint "127.0.0.1:$gport" >/dev/null 2>&1
sleep 0.2
check "text request lines name method, status, duration and id" \
	eval 'grep -Eq "debug: request method=/authzed.api.v1.SchemaService/ReadSchema grpc_code=[A-Z_]+ duration_ms=[0-9.]+ request_id=[0-9a-f]{16}" "$work/off.log"'
kill "$serve_pid" && wait "$serve_pid" 2>/dev/null

# --- pemba mirror --metrics-addr: its progress ---------------------------

start_serve msrc --no-auth --datastore sqlite::memory: --metrics-enabled=false
src_port=$gport
start_serve mdst --no-auth --datastore sqlite::memory: --metrics-enabled=false
dst_port=$gport
S=(--insecure --endpoint "127.0.0.1:$src_port")
"$PEMBA_BINARY" schema write "${S[@]}" "$work/schema.zed" >/dev/null 2>&1
for u in anne bob carol; do
	"$PEMBA_BINARY" relationship create "${S[@]}" document:1 viewer "user:$u" >/dev/null 2>&1
done
expect_usage_error "mirror --metrics-addr must be HOST:PORT" "--metrics-addr must be HOST:PORT" -- \
	mirror --insecure --from-endpoint "127.0.0.1:$src_port" --to-endpoint "127.0.0.1:$dst_port" \
	--state-file "$work/m.state" --metrics-addr nonsense
"$PEMBA_BINARY" mirror --insecure --from-endpoint "127.0.0.1:$src_port" \
	--to-endpoint "127.0.0.1:$dst_port" --state-file "$work/m.state" \
	--metrics-addr 127.0.0.1:0 >/dev/null 2>"$work/mirror.log" &
mirror_pid=$!
pg_pids+=("$mirror_pid")
mport=""
for _ in $(seq 100); do
	mport=$(sed -n 's#.*metrics at http://[^ ]*:\([0-9][0-9]*\)/metrics.*#\1#p' "$work/mirror.log")
	[[ -n "$mport" ]] && break
	sleep 0.1
done
# mirror_metric NAME: its value now ("" when not served).
mirror_metric() { scrape "$work/mm" && metric "$work/mm" "$1 "; }
for _ in $(seq 100); do
	[[ "$(mirror_metric pemba_mirror_caught_up)" == 1 ]] && break
	sleep 0.1
done
check "mirror metrics: caught up after the snapshot" eval '[[ "$(mirror_metric pemba_mirror_caught_up)" == 1 ]]'
if out=$(valid_exposition "$work/mm"); then ok "mirror /metrics is valid exposition text"; else fail "mirror /metrics is valid exposition text" "$out"; fi
check "mirror metrics: the snapshot's 3 relationships copied" \
	eval '[[ "$(mirror_metric pemba_mirror_relationships_copied_total)" == 3 ]]'
"$PEMBA_BINARY" relationship create "${S[@]}" document:2 viewer user:dave >/dev/null 2>&1
for _ in $(seq 100); do
	[[ "$(mirror_metric pemba_mirror_updates_applied_total)" == 1 ]] && break
	sleep 0.1
done
check "mirror metrics: a later write is applied and counted" \
	eval '[[ "$(mirror_metric pemba_mirror_updates_applied_total)" == 1 && "$(mirror_metric pemba_mirror_revisions_applied_total)" == 1 ]]'
check "mirror metrics: the lag is known and small" \
	eval '(( $(mirror_metric pemba_mirror_lag_revisions) >= 0 && $(mirror_metric pemba_mirror_lag_revisions) <= 1 ))'
kill "$mirror_pid" 2>/dev/null && wait "$mirror_pid" 2>/dev/null

# --- the default address busy: no metrics, the server runs anyway ------

# Hold 127.0.0.1:9090 with a server that asks for it; when another process
# holds it already the check below is not made (nothing to hold).
start_serve holder --no-auth --datastore sqlite::memory: --metrics-addr 127.0.0.1:9090
holder_pid=$serve_pid
if [[ "$mport" == 9090 ]]; then
	start_serve dflt --no-auth --datastore sqlite::memory:
	check "a busy default --metrics-addr costs only the metrics" \
		eval '[[ -n "$gport" && -z "$mport" ]] && grep -q "no metrics: cannot listen on the default --metrics-addr 127.0.0.1:9090" "$work/dflt.log"'
	kill "$serve_pid" && wait "$serve_pid" 2>/dev/null
fi
kill "$holder_pid" 2>/dev/null && wait "$holder_pid" 2>/dev/null

# --- health follows PostgreSQL ------------------------------------------

pg_require
pg_start
uri=$(pg_createdb metrics)
start_serve pg --no-auth --datastore "$uri" --metrics-addr 127.0.0.1:0
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/healthz")
check "PostgreSQL up: /healthz 200" eval '[[ $code == 200 ]]'
bash "$PG_CLUSTER" stop "$work/pg" >/dev/null 2>&1
# The probe runs once a second: wait for it to notice (bounded).
for _ in $(seq 100); do
	code=$(curl -s -o "$work/hz" -w '%{http_code}' "http://127.0.0.1:$mport/healthz")
	[[ $code == 503 ]] && break
	sleep 0.1
done
check "PostgreSQL down: /healthz 503 with a reason" \
	eval '[[ $code == 503 ]] && grep -q "datastore unreachable" "$work/hz"'
grpc_health
check "PostgreSQL down: grpc health NOT_SERVING" eval '[[ "$health_hex" == 00000000020802 ]]'
scrape "$work/m2"
check "PostgreSQL down: pemba_datastore_up 0" eval '[[ "$(metric "$work/m2" "pemba_datastore_up ")" == 0 ]]'
bash "$PG_CLUSTER" start "$work/pg" >/dev/null 2>&1
for _ in $(seq 150); do
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/healthz")
	[[ $code == 200 ]] && break
	sleep 0.1
done
check "PostgreSQL back: /healthz 200 again" eval '[[ $code == 200 ]]'
grpc_health
check "PostgreSQL back: grpc health SERVING" eval '[[ "$health_hex" == 00000000020801 ]]'

echo "$passed passed, $failed failed"
((failed == 0))
