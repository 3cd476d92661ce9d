#!/usr/bin/env bash
# bench_scale.sh -- the scale-out shape of docs/scale.md on one machine:
# one PostgreSQL primary, one streaming replica, two `pemba serve` over
# them (both with --datastore-read-replica-conn-uri), and the same clients
# as bench_postgres.sh (bench_grpc: CheckPermission at 64 in flight in
# total, WriteRelationships with 16 writers in total), split evenly over
# the two servers.  For comparison, the same loads on one server without
# the replica.  Prints which node served the read transactions
# (pg_stat_database on each) and the replica's lag after the writes.
#
# Everything shares this machine's CPUs: two servers and two PostgreSQL
# instances on 2 cores measure the protocol and the routing, not capacity
# (docs/scale.md says how to read the figures).
set -euo pipefail
bench_name=bench_scale
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

usage() {
	cat <<'EOF'
usage: bench/bench_scale.sh [--relationships N] [--runs K] [--seconds S]
       [--workers N] [--pg-fsync on|off] [--build-dir DIR] [--no-build]
       [--dir DIR] [--keep]

  --relationships N   dataset size (bench_check's generator; default 300000)
  --runs K            runs of each load; medians (default 3)
  --seconds S         duration of one run (default 5)
  --workers N         pemba serve --workers (default 16: a write group
                      commit gathers at most one writer per worker)
  --pg-fsync on|off   durability of both PostgreSQL instances (default on)
  --build-dir DIR     Release build directory (default build)
  --no-build          use the binaries already in --build-dir
  --dir DIR           work directory (default mktemp -d; removed unless --keep)
EOF
}

relationships=300000
runs=3
seconds=5
workers=16
pg_fsync=on
build=build
do_build=1
work=
keep=0
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--relationships) relationships=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--workers) workers=$2; shift 2 ;;
	--pg-fsync) pg_fsync=$2; shift 2 ;;
	--build-dir) build=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	--dir) work=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) usage >&2; exit 2 ;;
	esac
done
[[ $pg_fsync == on || $pg_fsync == off ]] || { usage >&2; exit 2; }

if ((do_build)); then
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j2 --target pemba bench_check bench_grpc >/dev/null
fi
pemba=$PWD/$build/pemba
grpc=$PWD/$build/bench/bench_grpc
cluster=tests/support/pg_cluster.sh

if [[ -z $work ]]; then
	work=$(mktemp -d /tmp/pemba-bench-scale.XXXXXX)
else
	mkdir -p "$work"
fi
chmod 755 "$work" # the clusters run as `postgres` when we are root
token=bench-scale-key
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if ((!keep)); then
		bash $cluster stop "$work/standby" >/dev/null 2>&1 || true
		bash $cluster stop "$work/pg" >/dev/null 2>&1 || true
		rm -rf "$work"
	fi
}
trap cleanup EXIT

next_port=$((20000 + RANDOM % 20000))
client() { "$pemba" "$@" --insecure --token "$token"; }

echo "bench_scale: $relationships relationships, $runs runs of ${seconds}s, work dir $work"
echo "machine: $(nproc) CPUs; $(uptime | sed 's/^ *//')"
echo "pemba commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"

"$build/bench/bench_check" --relationships "$relationships" --checks 20000 \
	--dump "$work" --dump-only >/dev/null
nrels=$(wc -l <"$work/relationships.txt")

# ------------------------------------------- primary, then its replica
admin=$(bash $cluster start "$work/pg" | tail -1)
cat >>"$work/pg/data/postgresql.conf" <<CONF
# bench_scale.sh
fsync = $pg_fsync
synchronous_commit = $pg_fsync
full_page_writes = $pg_fsync
shared_buffers = 256MB
CONF
bash $cluster restart "$work/pg" >/dev/null
standby_admin=$(bash $cluster standby "$work/pg" "$work/standby" | tail -1)
primary_uri=${admin/\/postgres\?//pemba?}
replica_uri=${standby_admin/\/postgres\?//pemba?}
psql -X -q -d "$admin" -c "CREATE DATABASE pemba"
"$pemba" datastore migrate head --yes --datastore "$primary_uri" >/dev/null 2>&1
echo "postgresql: primary $(cat "$work/pg/port"), streaming replica $(cat "$work/standby/port"), fsync=$pg_fsync"

# serve NAME [--datastore-read-replica-conn-uri URI]: sets $port.
serve() {
	local name=$1
	shift
	port=$next_port
	next_port=$((next_port + 1))
	"$pemba" serve --datastore "$primary_uri" --preshared-key "$token" \
		--grpc-addr "127.0.0.1:$port" --workers "$workers" "$@" \
		2>"$work/$name.log" &
	pids+=("$!")
	wait_port "$port"
}
serve a --datastore-read-replica-conn-uri "$replica_uri"
port_a=$port
serve b --datastore-read-replica-conn-uri "$replica_uri"
port_b=$port
serve single
port_single=$port

client schema write --endpoint "127.0.0.1:$port_a" "$work/schema.zed" >/dev/null
t0=$(date +%s%N)
client relationship import --endpoint "127.0.0.1:$port_a" "$work/relationships.txt" >/dev/null
t1=$(date +%s%N)
echo "loaded $nrels relationships through server a in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s"

head_on() { psql -X -tA -d "$1" -c "SELECT coalesce(max(rev), 0) FROM revisions"; }
wait_replica() { # waits until the replica has replayed the primary's head
	local want i
	want=$(head_on "$primary_uri")
	for i in $(seq 1 600); do
		[[ $(head_on "$replica_uri") -ge $want ]] && return 0
		sleep 0.1
	done
	echo "bench_scale: the replica did not catch up" >&2
	exit 1
}
wait_replica
xacts() { psql -X -tA -d "$1" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'pemba'"; }

# run_grpc LABEL PORT ARGS...: one bench_grpc, RESULT lines into $work/LABEL.out
run_grpc() {
	local label=$1 port=$2
	shift 2
	"$grpc" --dir "$work" --endpoint "127.0.0.1:$port" --token "$token" \
		--label "$label" --runs 1 --spicedb-checks 0 "$@" >"$work/$label.out" 2>&1
}
result() { awk -v k="$1" '$1 == "RESULT" && $2 == k { print $3 }' "$work/$2.out"; }

declare -a one_checks two_checks one_writes two_writes share
for k in $(seq 1 "$runs"); do
	# checks: 64 in flight on one server, then 32 + 32 on two
	run_grpc single "$port_single" --levels 64 --seconds "$seconds"
	one_checks+=("$(result single_check64_rate single)")
	p0=$(xacts "$primary_uri")
	r0=$(xacts "$replica_uri")
	run_grpc a "$port_a" --levels 32 --seconds "$seconds" &
	ga=$!
	run_grpc b "$port_b" --levels 32 --seconds "$seconds"
	wait "$ga"
	p1=$(xacts "$primary_uri")
	r1=$(xacts "$replica_uri")
	two_checks+=("$(awk -v a="$(result a_check32_rate a)" -v b="$(result b_check32_rate b)" 'BEGIN { print a + b }')")
	share+=("$(awk -v p=$((p1 - p0)) -v r=$((r1 - r0)) 'BEGIN { if (p + r > 0) printf "%.0f", 100 * r / (p + r); else print 0 }')")
	# writes: 16 writers on one server, then 8 + 8 on two
	run_grpc single "$port_single" --levels 0 --writers 16 --write-seconds "$seconds"
	one_writes+=("$(result single_write16_rate single)")
	run_grpc a "$port_a" --levels 0 --writers 8 --write-seconds "$seconds" &
	ga=$!
	run_grpc b "$port_b" --levels 0 --writers 8 --write-seconds "$seconds"
	wait "$ga"
	two_writes+=("$(awk -v a="$(result a_write8_rate a)" -v b="$(result b_write8_rate b)" 'BEGIN { print a + b }')")
	tw=$(date +%s%N)
	wait_replica
	lag_ms=$(awk -v a="$tw" -v b="$(date +%s%N)" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')
	echo "run $k: checks 1 server ${one_checks[-1]}/s, 2 servers + replica ${two_checks[-1]}/s" \
		"(replica served ${share[-1]}% of the read transactions); writes 1 server ${one_writes[-1]}/s," \
		"2 servers ${two_writes[-1]}/s; replica caught up ${lag_ms} ms after the writes stopped"
done
errors=$(cat "$work"/*.out | awk '$1 == "RESULT" && $2 ~ /_errors$/ && $3 != 0' | wc -l)

echo
echo "results (medians of $runs; $nrels relationships; load now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-46s %12s %22s\n' metric "1 server" "2 servers + replica"
printf '%-46s %12s %22s\n' "checks/s, 64 in flight in total" "$(median "${one_checks[@]}")" "$(median "${two_checks[@]}")"
printf '%-46s %12s %22s\n' "read transactions served by the replica" "-" "$(median "${share[@]}")%"
printf '%-46s %12s %22s\n' "write tx/s, 16 writers in total" "$(median "${one_writes[@]}")" "$(median "${two_writes[@]}")"
echo "bench_grpc runs reporting errors: $errors"
exit $((errors > 0))
