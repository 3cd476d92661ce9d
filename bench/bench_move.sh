#!/usr/bin/env bash
# bench_move.sh -- moving a deployment: `pemba backup create` and
# `pemba backup restore` between two `pemba serve` instances (rate, peak
# memory of client and server, file size), the restored data compared
# with the source, and the lag of `pemba mirror` under a steady write
# load (bench_mirror_lag).  Optionally the real SpiceDB (on PostgreSQL,
# behind a gRPC facade) as a backup source in the same run.
# See bench/README.md ("bench_move").
set -euo pipefail
bench_name=bench_move
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

usage() {
	cat <<'EOF'
usage: bench/bench_move.sh [--relationships N] [--runs K] [--seed S]
       [--restore-batches-per-transaction B[,B...]] [--mirror-seconds S] [--mirror-rate R] [--mirror-threads T] [--no-mirror]
       [--no-spicedb] [--spicedb-facade PATH] [--spicedb-datastore URI]
       [--spicedb-relationships N] [--build-dir DIR] [--no-build]
       [--dir DIR] [--keep]

Backup create / restore between two pemba servers, medians of K runs, and
mirror lag under steady writes.  Every server is `pemba serve` with a
preshared key on 127.0.0.1, SQLite file datastores in a temporary directory.

  --relationships N       dataset size (bench_check's, seeded; default 1000000)
  --runs K                backup + restore runs; medians reported (default 3)
  --seed S                dataset seed (default 42)
  --restore-batches-per-transaction B[,B...]
                          restore with each (batches of 1000; default 10,
                          zed's default: 10000 relationships per transaction)
  --mirror-seconds S      how long the mirror load runs (default 30)
  --mirror-rate R         writes per second to the source (default 1000)
  --mirror-threads T      writer connections of the load (default 16)
  --no-mirror             skip the mirror lag phase
  --no-spicedb            skip the reference (the real SpiceDB on PostgreSQL,
                          in-process: bench_spicedb_source's read rate)
  --spicedb-facade PATH   the gRPC facade in front of the real SpiceDB
                          (tests/support/spicedb_facade): also time
                          `pemba backup create` from SpiceDB on PostgreSQL
  --spicedb-datastore URI the reference's PostgreSQL datastore, emptied
                          first (default: a cluster in the work directory,
                          ../shared/spicedb-pg/setup.sh, a free port)
  --spicedb-relationships N  how many of the dataset to load into SpiceDB
                          (default: all; ~13k/s on PostgreSQL)
  --build-dir DIR         Release build directory (default build-bench)
  --no-build              use the binaries already in --build-dir
  --dir DIR               work directory (default: mktemp -d; removed unless
                          --keep)
  --keep                  keep the work directory
EOF
}

relationships=1000000
runs=3
seed=42
mirror_seconds=30
restore_bpt_list=10
mirror_rate=1000
mirror_threads=16
do_mirror=1
facade=
do_spicedb=1
spicedb_uri=
spicedb_rels=
build=build-bench
do_build=1
work=
keep=0
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--relationships) relationships=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--seed) seed=$2; shift 2 ;;
	--restore-batches-per-transaction) restore_bpt_list=$2; shift 2 ;;
	--mirror-seconds) mirror_seconds=$2; shift 2 ;;
	--mirror-rate) mirror_rate=$2; shift 2 ;;
	--mirror-threads) mirror_threads=$2; shift 2 ;;
	--no-mirror) do_mirror=0; shift ;;
	--no-spicedb) do_spicedb=0; shift ;;
	--spicedb-facade) facade=$2; shift 2 ;;
	--spicedb-datastore) spicedb_uri=$2; shift 2 ;;
	--spicedb-relationships) spicedb_rels=$2; shift 2 ;;
	--build-dir) build=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	--dir) work=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) usage >&2; exit 2 ;;
	esac
done

IFS=, read -r -a restore_bpts <<<"$restore_bpt_list"

if ((do_build)); then
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j2 --target pemba bench_check bench_mirror_lag \
		bench_spicedb_source >/dev/null
fi
pemba=$PWD/$build/pemba
[[ -x /usr/bin/time ]] || { echo "bench_move: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

if [[ -z $work ]]; then
	work=$(mktemp -d /tmp/pemba-bench-move.XXXXXX)
else
	mkdir -p "$work"
fi
token=bench-move-key
pids=()
pg_dir=
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	[[ -z $pg_dir ]] || ../shared/spicedb-pg/stop.sh "$pg_dir" >/dev/null 2>&1 || true
	((keep)) || rm -rf "$work"
}
trap cleanup EXIT

base_port=$((20000 + RANDOM % 20000))
next_port=$base_port

now_ns() { date +%s%N; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# median of the arguments (numbers)
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }


# start_server NAME DBFILE: sets $server_pid and $server_port.
start_server() {
	local name=$1 db=$2
	server_port=$next_port
	next_port=$((next_port + 1))
	"$pemba" datastore migrate head --yes --datastore "sqlite://$db" >/dev/null 2>&1
	"$pemba" serve --datastore "sqlite://$db" --preshared-key "$token" \
		--grpc-addr "127.0.0.1:$server_port" 2>"$work/$name.log" &
	server_pid=$!
	pids+=("$server_pid")
	wait_port "$server_port"
}

stop_server() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

client() { "$pemba" "$@" --insecure --token "$token"; }

echo "bench_move: $relationships relationships, $runs runs, seed $seed, work dir $work"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- dataset
# bench_check's seeded dataset, bulk-loaded into the source's file (not
# timed); --dump writes the schema and relationship lines beside it.
t0=$(now_ns)
"$build/bench/bench_check" --relationships "$relationships" --seed "$seed" \
	--runs 1 --checks 100 --spicedb-checks 0 --keep \
	--db "$work/source.db" --dump "$work" >"$work/bench_check.log"
echo "dataset: $(wc -l <"$work/relationships.txt") relationships loaded in $(( ($(now_ns) - t0) / 1000000 )) ms (not timed)"

start_server source "$work/source.db"
src_pid=$server_pid
src_port=$server_port
client relationship export --endpoint "127.0.0.1:$src_port" 2>/dev/null | LC_ALL=C sort >"$work/source.export"
src_count=$(wc -l <"$work/source.export")

# ------------------------------------------------------- backup / restore
declare -a c_rate c_rss c_srv c_size
declare -A r_rate r_rss r_srv verified
for run in $(seq 1 "$runs"); do
	backup=$work/backup-$run.zed
	rm -f "$backup" "$backup.lock"
	reset_hwm "$src_pid"
	t0=$(now_ns)
	/usr/bin/time -f '%M' -o "$work/time.create" \
		"$pemba" backup create "$backup" --endpoint "127.0.0.1:$src_port" \
		--insecure --token "$token" 2>"$work/create.log"
	t1=$(now_ns)
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
	c_rate+=("$(awk -v n="$src_count" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')")
	c_rss+=("$(tail -1 "$work/time.create")")
	c_srv+=("$(hwm_kib "$src_pid")")
	c_size+=("$(stat -c %s "$backup")")

	line="run $run: create $secs s (${c_rate[-1]} rels/s)"
	for bpt in "${restore_bpts[@]}"; do
		rm -f "$work/target.db" "$work/target.db-wal" "$work/target.db-shm"
		start_server "target-$run-$bpt" "$work/target.db"
		dst_pid=$server_pid
		dst_port=$server_port
		reset_hwm "$dst_pid"
		t0=$(now_ns)
		/usr/bin/time -f '%M' -o "$work/time.restore" \
			"$pemba" backup restore "$backup" --endpoint "127.0.0.1:$dst_port" \
			--insecure --token "$token" --batches-per-transaction "$bpt" \
			2>"$work/restore.log"
		t1=$(now_ns)
		rsecs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
		rate=$(awk -v n="$src_count" -v s="$rsecs" 'BEGIN { printf "%.0f", n / s }')
		r_rate[$bpt]+=" $rate"
		r_rss[$bpt]+=" $(tail -1 "$work/time.restore")"
		r_srv[$bpt]+=" $(hwm_kib "$dst_pid")"
		if [[ -z ${verified[$bpt]:-} ]]; then
			client relationship export --endpoint "127.0.0.1:$dst_port" 2>/dev/null |
				LC_ALL=C sort >"$work/target.export"
			if cmp -s "$work/source.export" "$work/target.export"; then
				verified[$bpt]="restored export equals the source's ($src_count relationships, schema $(client schema read --endpoint "127.0.0.1:$dst_port" | cmp -s - <(client schema read --endpoint "127.0.0.1:$src_port") && echo equal || echo DIFFERENT))"
			else
				verified[$bpt]="MISMATCH: source $src_count, restored $(wc -l <"$work/target.export") relationships"
			fi
			rm -f "$work/target.export"
		fi
		stop_server "$dst_pid"
		line+=", restore x$bpt $rsecs s ($rate rels/s)"
	done
	echo "$line"
	((run == runs)) || rm -f "$backup"
done

echo
echo "backup create (median of $runs): $(median "${c_rate[@]}") rels/s; client peak RSS $(mib "$(median "${c_rss[@]}")") MiB; source server peak RSS $(mib "$(median "${c_srv[@]}")") MiB; file $(median "${c_size[@]}") bytes ($(awk -v b="$(median "${c_size[@]}")" -v n="$src_count" 'BEGIN { printf "%.1f", b / n }') B/rel)"
r_med=
for bpt in "${restore_bpts[@]}"; do
	# shellcheck disable=SC2086
	m=$(median ${r_rate[$bpt]})
	[[ -n $r_med ]] || r_med=$m
	# shellcheck disable=SC2086
	echo "backup restore, --batches-per-transaction $bpt ($((bpt * 1000)) relationships per transaction; median of $runs): $m rels/s; client peak RSS $(mib "$(median ${r_rss[$bpt]})") MiB; target server peak RSS $(mib "$(median ${r_srv[$bpt]})") MiB"
	echo "  verify: ${verified[$bpt]}"
	if ((bpt != restore_bpts[0])); then
		echo "  restore >= 200000 rels/s with --batches-per-transaction $bpt: $(awk -v r="$m" 'BEGIN { print (r >= 200000) ? "met" : "MISSED" }')"
	fi
done
c_med=$(median "${c_rate[@]}")
echo "targets: backup >= 500000 rels/s: $(awk -v r="$c_med" 'BEGIN { print (r >= 500000) ? "met" : "MISSED" }'); restore >= 200000 rels/s (--batches-per-transaction ${restore_bpts[0]}): $(awk -v r="$r_med" 'BEGIN { print (r >= 200000) ? "met" : "MISSED" }')"

# ------------------------------------------------------------- mirror lag
if ((do_mirror)); then
	echo
	rm -f "$work/mirror.db" "$work/mirror.state"
	start_server mirror-target "$work/mirror.db"
	m_pid=$server_pid
	m_port=$server_port
	t0=$(now_ns)
	"$pemba" mirror --from-endpoint "127.0.0.1:$src_port" --from-token "$token" \
		--to-endpoint "127.0.0.1:$m_port" --to-token "$token" \
		--state-file "$work/mirror.state" --insecure 2>"$work/mirror.log" &
	mirror_pid=$!
	pids+=("$mirror_pid")
	until grep -q '^phase watch' "$work/mirror.state" 2>/dev/null; do
		kill -0 "$mirror_pid" 2>/dev/null || { cat "$work/mirror.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "mirror: snapshot of $src_count relationships copied in $(( ($(now_ns) - t0) / 1000000 )) ms; following"
	reset_hwm "$mirror_pid"
	"$build/bench/bench_mirror_lag" --source "127.0.0.1:$src_port" \
		--target "127.0.0.1:$m_port" --token "$token" \
		--rate "$mirror_rate" --seconds "$mirror_seconds" \
		--threads "$mirror_threads" || true
	echo "mirror process peak RSS while following: $(mib "$(hwm_kib "$mirror_pid")") MiB"
	stop_server "$mirror_pid"
	stop_server "$m_pid"
fi

# -------------------------------------------------- reference: SpiceDB
echo
if ((!do_spicedb)) && [[ -z $facade ]]; then
	echo "reference: skipped (--no-spicedb)"
	exit 0
fi
# SpiceDB on PostgreSQL, emptied first (migrate.sh --reset).
if [[ -z $spicedb_uri ]]; then
	chmod o+x "$work"
	pg_dir=$work/pg
	if ! spicedb_uri=$(../shared/spicedb-pg/setup.sh "$pg_dir" "$((next_port + 100))" --reset 2>"$work/pg.log" | tail -1); then
		cat "$work/pg.log" >&2
		exit 1
	fi
fi
n_ref=${spicedb_rels:-$src_count}
s_med=
if ((do_spicedb)); then
	if [[ -z ${PEMBA_SPICEDB_LIB:-} ]]; then
		PEMBA_SPICEDB_LIB=$(scripts/spicedb.sh)
		export PEMBA_SPICEDB_LIB
	fi
	../shared/spicedb-pg/migrate.sh "$spicedb_uri" --reset >/dev/null 2>&1
	"$build/bench/bench_spicedb_source" --dir "$work" --relationships "$n_ref" \
		--datastore-uri "$spicedb_uri" --runs "$runs" | tee "$work/spicedb.out"
	s_med=$(awk '/read median/ { print $4 }' "$work/spicedb.out")
	echo "ratio pemba backup create / SpiceDB read (both read everything at one revision): $(awk -v a="$c_med" -v b="$s_med" 'BEGIN { printf "%.1fx", a / b }')"
fi
if [[ -z $facade ]]; then
	echo "reference through pemba's client: skipped (no --spicedb-facade; the library serves no SchemaService, so \`pemba backup create\` needs the facade)"
	exit 0
fi
../shared/spicedb-pg/migrate.sh "$spicedb_uri" --reset >/dev/null 2>&1
ref_port=$next_port
"$facade" --grpc-addr "127.0.0.1:$ref_port" --token "$token" \
	--datastore-uri "$spicedb_uri" 2>"$work/facade.log" &
ref_pid=$!
pids+=("$ref_pid")
wait_port "$ref_port"
client schema write --endpoint "127.0.0.1:$ref_port" "$work/schema.zed" >/dev/null
head -n "$n_ref" "$work/relationships.txt" >"$work/ref.txt"
t0=$(now_ns)
client relationship import --endpoint "127.0.0.1:$ref_port" "$work/ref.txt" >/dev/null
echo "spicedb via facade: loaded $n_ref relationships in $(( ($(now_ns) - t0) / 1000000 )) ms (ImportBulkRelationships, not timed)"
declare -a s_rate s_rss s_srv s_size
for run in $(seq 1 "$runs"); do
	backup=$work/spicedb-$run.zed
	rm -f "$backup" "$backup.lock"
	reset_hwm "$ref_pid"
	t0=$(now_ns)
	/usr/bin/time -f '%M' -o "$work/time.ref" \
		"$pemba" backup create "$backup" --endpoint "127.0.0.1:$ref_port" \
		--insecure --token "$token" 2>"$work/ref-create.log"
	t1=$(now_ns)
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
	got=$("$pemba" backup parse-relationships "$backup" | wc -l)
	s_rate+=("$(awk -v n="$got" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')")
	s_rss+=("$(tail -1 "$work/time.ref")")
	s_srv+=("$(hwm_kib "$ref_pid")")
	s_size+=("$(stat -c %s "$backup")")
	echo "spicedb via facade, run $run: backup create $secs s, $got relationships"
	rm -f "$backup"
done
f_med=$(median "${s_rate[@]}")
echo "spicedb via facade, backup create (median of $runs, $n_ref relationships): $f_med rels/s; client peak RSS $(mib "$(median "${s_rss[@]}")") MiB; facade peak RSS $(mib "$(median "${s_srv[@]}")") MiB; file $(median "${s_size[@]}") bytes"
echo "ratio pemba / spicedb as backup source: $(awk -v a="$c_med" -v b="$f_med" 'BEGIN { printf "%.1fx", a / b }')"
