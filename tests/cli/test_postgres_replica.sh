#!/usr/bin/env bash
# `pemba serve` on PostgreSQL with a read replica and small connection
# pools, end to end: a throwaway primary and a streaming standby
# (tests/support/pg_cluster.sh start / standby), serve with
# --datastore-read-replica-conn-uri, --log-level debug (one debug line per
# read at a revision names the node that served it: that is how the test
# tells the replica from the primary) and --datastore-conn-pool-*-max-open 2.
#
#   - reads at a token the standby has replayed go to the standby;
#   - with the standby's replay paused, a newer token is served by the
#     primary (still correct), an older one still by the standby;
#   - with the standby stopped every request still succeeds;
#   - 10 concurrent clients on pools of 2 all succeed, and the server never
#     holds more connections to the primary than the pools allow;
#   - bad flag values are refused with a clear message.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER=$HERE/../support/pg_cluster.sh
if [[ -z "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" && -z "${PGBIN:-}" ]]; then
	echo "FAIL no PostgreSQL server binaries (install postgresql, or set PGBIN)"
	exit 1
fi

work=$(mktemp -d)
chmod 755 "$work"
server_pid=""
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	[[ -n "${server2_pid:-}" ]] && kill "$server2_pid" 2>/dev/null && wait "$server2_pid" 2>/dev/null
	bash "$CLUSTER" stop "$work/standby" >/dev/null 2>&1
	bash "$CLUSTER" stop "$work/pg" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/client_expect.sh"

admin=$(bash "$CLUSTER" start "$work/pg") || { echo "FAIL cluster did not start"; exit 1; }
uri=${admin/\/postgres\?//pemba?}
psql -X -q "$admin" -c "CREATE DATABASE pemba" >/dev/null 2>&1 ||
	{ echo "FAIL cannot create the database"; exit 1; }
standby_admin=$(bash "$CLUSTER" standby "$work/pg" "$work/standby") ||
	{ echo "FAIL the standby did not start"; exit 1; }
replica=${standby_admin/\/postgres\?//pemba?}
check "the standby is in recovery" test \
	"$(psql -X -qAt "$standby_admin" -c 'SELECT pg_is_in_recovery()')" = t

# --- bad flag values ---------------------------------------------------------

run serve --no-auth --datastore "$uri" --datastore-conn-pool-read-max-open 0
check "a read pool of 0 is refused" exit_is 2
check "the message names the flag and the range" \
	has_err "--datastore-conn-pool-read-max-open must be a whole number of connections from 1 to 10000, not '0'"
run serve --no-auth --datastore "$uri" --datastore-conn-pool-write-max-open=ten
check "a write pool of 'ten' is refused" exit_is 2
check "the message names the write flag" has_err "--datastore-conn-pool-write-max-open must be"
run serve --no-auth --datastore "$uri" --datastore-conn-pool-read-max-open
check "a missing value is refused" has_err "needs a value"
run serve --no-auth --datastore "$uri" --datastore-read-replica-conn-uri "sqlite:///tmp/x.db"
check "a replica that is not PostgreSQL is refused" exit_is 2
check "the message says what a replica URI is" has_err "must be a PostgreSQL URI"
run serve --no-auth --datastore "$uri" --log-level loud
check "an unknown log level is refused" has_err "--log-level must be error, warn, info or debug"
run serve --no-auth --grpc-addr 127.0.0.1:0 --datastore "sqlite://$work/x.db" \
	--datastore-read-replica-conn-uri "$replica"
check "replicas of a SQLite datastore are refused" exit_is 1
check "the message says replicas need PostgreSQL" has_err "read replicas need a PostgreSQL datastore"
run serve --help
check "serve --help documents the pool flags" has_out "--datastore-conn-pool-read-max-open N"
check "serve --help documents the replica flag" has_out "--datastore-read-replica-conn-uri URI"

# --- serve with a replica and small pools -----------------------------------

"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 --datastore "$uri" \
	--datastore-read-replica-conn-uri "$replica" --log-level debug \
	--datastore-query-cache-size 0 \
	--datastore-conn-pool-read-max-open 2 --datastore-conn-pool-write-max-open 2 \
	2>"$work/serve.log" &
server_pid=$!
port=""
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/serve.log" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.1
done
if [[ -z "$port" ]]; then
	echo "FAIL serve did not report its port"
	cat "$work/serve.log"
	exit 1
fi
export PEMBA_ENDPOINT="127.0.0.1:$port"
I=--insecure

cat >"$work/schema.zed" <<'ZED'
definition user {}
definition document {
	relation viewer: user
	permission view = viewer
}
ZED
run schema write $I "$work/schema.zed"
check "schema write" exit_is 0
run relationship create $I document:one viewer user:anne
check "relationship create" exit_is 0
token1=$(head -n 1 "$work/out")

# The log lines of one request: what was appended to the log meanwhile.
log_mark() { mark=$(wc -l <"$work/serve.log"); }
log_since() { tail -n +"$((mark + 1))" "$work/serve.log"; }

# Streaming replication is asynchronous: wait until the standby has it.
served_by_replica=0
for _ in $(seq 50); do
	log_mark
	run permission check $I document:one view user:anne --consistency-at-least "$token1"
	if has_out true && log_since | grep -q "replica postgres://"; then
		served_by_replica=1
		break
	fi
	sleep 0.2
done
check "at_least_as_fresh(token1): anne can view" has_out "true"
check "a read the standby has replayed is served by the standby" test "$served_by_replica" = 1
# A check at the head (minimize_latency, the default): the head is read on
# the primary, the check's reads go to the standby that has replayed it.
log_mark
run permission check $I document:one view user:anne
check "a check at the head: anne can view" has_out "true"
check "its reads were served by the standby" eval 'log_since | grep -q ": replica postgres://"'

# Pause the standby's replay: newer revisions exist only on the primary.
psql -X -q "$standby_admin" -c "SELECT pg_wal_replay_pause()" >/dev/null ||
	{ echo "FAIL cannot pause the standby's replay"; exit 1; }
run relationship create $I document:two viewer user:bob
check "a write while the standby lags" exit_is 0
token2=$(head -n 1 "$work/out")
log_mark
run permission check $I document:two view user:bob --consistency-at-least "$token2"
check "at_least_as_fresh(token2): bob can view (the standby has not got it)" has_out "true"
check "that read was served by the primary" eval 'log_since | grep -q "read at revision [0-9]*: primary"'
check "not by the standby" eval '! log_since | grep -q ": replica postgres://"'
log_mark
run permission check $I document:two view user:bob --consistency-full
check "fully consistent: bob can view" has_out "true"
log_mark
run permission check $I document:one view user:anne --consistency-at-exact "$token1"
check "at_exact(token1): anne can view" has_out "true"
check "the old revision was served by the standby" eval 'log_since | grep -q ": replica postgres://"'
run permission check $I document:two view user:bob --consistency-at-exact "$token1"
check "at_exact(token1): bob cannot view yet" has_out "false"
psql -X -q "$standby_admin" -c "SELECT pg_wal_replay_resume()" >/dev/null

# --- with the query cache (the default on PostgreSQL) ------------------------
# The routing above runs with the cache off: a hit makes no datastore call,
# so repeated checks would log nothing.  With it on, a check's head read and
# revision check run outside its read transaction; the transaction, begun by
# the first miss, is still routed by that query's revision.
"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 --datastore "$uri" \
	--datastore-read-replica-conn-uri "$replica" --log-level debug \
	2>"$work/serve2.log" &
server2_pid=$!
port2=""
for _ in $(seq 100); do
	port2=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/serve2.log" | head -n 1)
	[[ -n "$port2" ]] && break
	sleep 0.1
done
cached_by_replica=0
for i in $(seq 50); do
	mark2=$(wc -l <"$work/serve2.log")
	"$PEMBA_BINARY" permission check $I --endpoint "127.0.0.1:$port2" document:two view "user:x$i" >/dev/null 2>&1
	if tail -n +"$((mark2 + 1))" "$work/serve2.log" | grep -q ": replica postgres://"; then
		cached_by_replica=1
		break
	fi
	sleep 0.2
done
check "with the query cache on, a check's misses are served by the standby" test "$cached_by_replica" = 1
kill "$server2_pid" 2>/dev/null
wait "$server2_pid" 2>/dev/null
server2_pid=""

# --- the standby goes away --------------------------------------------------

bash "$CLUSTER" stop "$work/standby" >/dev/null
all_ok=1
for i in 1 2 3 4 5; do
	run permission check $I document:one view user:anne --consistency-at-exact "$token1"
	((status == 0)) && has_out true || { all_ok=0; echo "  (request $i: $(cat "$work/err"))"; }
done
check "with the standby stopped every request succeeds" test "$all_ok" = 1
check "the failing standby is reported once as skipped" \
	grep -q "warning: read replica postgres://.*skipped for" "$work/serve.log"
check "and reads go to the primary" eval 'tail -n 3 "$work/serve.log" | grep -q ": primary"'
run relationship create $I document:three viewer user:carol
check "writes succeed too" exit_is 0

# --- pool limits: 10 concurrent clients on pools of 2 -------------------------

pemba_conns() {
	psql -X -qAt "$admin" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'pemba' AND application_name LIKE 'pemba%'"
}
max_seen=0
pids=()
for c in $(seq 10); do
	(
		ok=0
		for j in $(seq 8); do
			if ((j % 4 == 0)); then
				"$PEMBA_BINARY" relationship touch $I "document:c$c" viewer "user:u$j" >/dev/null 2>"$work/client$c.err" || exit 1
			else
				"$PEMBA_BINARY" permission check $I document:one view user:anne 2>"$work/client$c.err" | grep -q true || exit 1
			fi
		done
	) &
	pids+=($!)
done
for _ in $(seq 20); do
	n=$(pemba_conns)
	((n > max_seen)) && max_seen=$n
	sleep 0.05
done
failures=0
for p in "${pids[@]}"; do wait "$p" || failures=$((failures + 1)); done
check "10 concurrent clients on pools of 2: all requests succeed" test "$failures" = 0
((failures)) && cat "$work"/client*.err | head -n 5
# read 2 + write 2 + the lease session + the commit listener
check "the server held at most 6 connections to the primary (saw $max_seen)" test "$max_seen" -le 6
check "and it did use the database meanwhile (saw $max_seen)" test "$max_seen" -ge 1
run permission check $I document:c3 view user:u8
check "the concurrent writes are there" has_out "true"

kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=""
# (A backend leaves pg_stat_activity a moment after its client closed.)
for _ in $(seq 20); do [[ "$(pemba_conns)" = 0 ]] && break; sleep 0.1; done
check "after the server stopped it holds no connections" test "$(pemba_conns)" = 0

echo "$passed passed, $failed failed"
((failed == 0))
