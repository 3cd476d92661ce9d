#!/usr/bin/env bash
# bench_proxy.sh -- what `pemba proxy` adds to CheckPermission (issue 12:
# check p50 / p99 at 64 in flight, target < 10 % on p50).  Two `pemba
# serve` (SQLite files holding the same bench_check dataset: primary A,
# shadow B) and bench_grpc's 64-in-flight check load, directly against A
# and through the proxy (A primary, B shadow) with --shadow-read-sample
# 0.01 and 1.0; --runs interleaved rounds, medians; a table
# of throughput, p50, p99 and the overhead in % of the direct figures, then
# each proxy's counters (mismatches must be 0; at sample 1.0 the one shadow
# thread cannot replay every check of a saturating load, so reads past the
# queue are dropped and counted: that is the design, the clients never
# wait for the shadow).  See bench/README.md ("bench_proxy").
#
# Everything runs on this machine: the load generator, A, B and the proxy
# share its CPUs, so the proxy's overhead includes the CPU it takes from
# the servers.  With --pin, the proxy gets CPU 1 to itself and everything
# else (A, B, the load generator) CPU 0, in every configuration, direct
# included: the proxy then adds its latency, not its CPU, as on a host of
# its own.  Not a test: nothing here asserts a timing.
set -euo pipefail
bench_name=bench_proxy
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

usage() {
	cat <<'EOF'
usage: bench/bench_proxy.sh [--relationships N] [--runs K] [--seconds S]
       [--samples R,R...] [--workers N] [--proxy-workers N]
       [--build-dir DIR] [--no-build] [--pin]
       [--dir DIR] [--keep]

  --relationships N   dataset size (bench_check's generator; default 30000)
  --runs K            runs per configuration; medians (default 3)
  --seconds S         duration of one run (default 5)
  --samples R,R...    --shadow-read-sample values measured (default 0.01,1)
  --workers N         pemba serve --workers (default: its own)
  --proxy-workers N   pemba proxy --workers (default: its own)
  --build-dir DIR     Release build directory (default build)
  --no-build          use the binaries already in --build-dir
  --pin               proxy on CPU 1 alone, the rest on CPU 0 (taskset)
  --dir DIR           work directory (default mktemp -d; removed unless --keep)
EOF
}

relationships=30000
runs=3
seconds=5
samples=0.01,1
workers=
proxy_workers=
build=build
do_build=1
pin=0
work=
keep=0
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--relationships) relationships=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--samples) samples=$2; shift 2 ;;
	--workers) workers=$2; shift 2 ;;
	--proxy-workers) proxy_workers=$2; shift 2 ;;
	--build-dir) build=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	--pin) pin=1; shift ;;
	--dir) work=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) usage >&2; exit 2 ;;
	esac
done

if ((do_build)); then
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j2 --target pemba bench_check bench_grpc >/dev/null
fi
pemba=$PWD/$build/pemba
grpc=$PWD/$build/bench/bench_grpc
on_rest=()  # command prefix for A, B and the load generator
on_proxy=() # ... for the proxy
if ((pin)); then
	command -v taskset >/dev/null || { echo "bench_proxy: --pin needs taskset (util-linux)" >&2; exit 2; }
	(($(nproc) >= 2)) || { echo "bench_proxy: --pin needs 2 CPUs" >&2; exit 2; }
	on_rest=(taskset -c 0)
	on_proxy=(taskset -c 1)
fi

if [[ -z $work ]]; then
	work=$(mktemp -d /tmp/pemba-bench-proxy.XXXXXX)
else
	mkdir -p "$work"
fi
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	((keep)) || rm -rf "$work"
}
trap cleanup EXIT

next_port=$((20000 + RANDOM % 20000))

echo "bench_proxy: $relationships relationships, $runs runs of ${seconds}s, work dir $work"
echo "machine: $(nproc) CPUs; $(uptime | sed 's/^ *//')$( ((pin)) && echo '; pinned: proxy on CPU 1, the rest on CPU 0')"
echo "pemba commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"

# The dataset, loaded once into A's file and copied for B: the same data.
"$build/bench/bench_check" --relationships "$relationships" --runs 1 \
	--checks 1000 --spicedb-checks 0 --keep --db "$work/a.db" \
	--dump "$work" >/dev/null
cp "$work/a.db" "$work/b.db"
echo "dataset: $(wc -l <"$work/relationships.txt") relationships, $(wc -l <"$work/checks.txt") checks (bench_check's model)"

serve() { # serve NAME: starts pemba serve on NAME.db; sets port
	port=$next_port
	next_port=$((next_port + 1))
	"${on_rest[@]}" "$pemba" serve --datastore "sqlite://$work/$1.db" --preshared-key "k$1" \
		--grpc-addr "127.0.0.1:$port" ${workers:+--workers "$workers"} \
		2>"$work/$1.log" &
	pids+=($!)
	wait_port "$port"
}
serve a
a_port=$port
serve b
b_port=$port

declare -A R
# One round: each configuration for one run of bench_grpc, one after the
# other; --runs rounds, and the medians of each figure over the rounds.
# Interleaving puts the machine's drift (other load) on every
# configuration alike instead of on whichever ran last.
one_run() { # one_run LABEL PORT TOKEN: appends to R[LABEL_rates] etc.
	"${on_rest[@]}" "$grpc" --dir "$work" --endpoint "127.0.0.1:$2" --token "$3" \
		--label "$1" --levels 64 --seconds "$seconds" --runs 1 \
		--spicedb-checks 0 >"$work/$1.out"
	local name value rate="" p50="" p99="" errors=""
	while read -r _ name value; do
		case $name in
		*_check64_rate) rate=$value ;;
		*_check64_p50_us) p50=$value ;;
		*_check64_p99_us) p99=$value ;;
		*_check64_errors) errors=$value ;;
		esac
	done < <(grep '^RESULT' "$work/$1.out")
	R[${1}_rates]+=" $rate"
	R[${1}_p50s]+=" $p50"
	R[${1}_p99s]+=" $p99"
	R[${1}_errors]=$((${R[${1}_errors]:-0} + errors))
	printf '  %-12s %10.0f checks/s  p50 %8.1f us  p99 %8.1f us\n' "$1" "$rate" "$p50" "$p99"
}

labels=(direct)
ports=("$a_port")
tokens=(ka)
IFS=, read -ra sample_list <<<"$samples"
for s in "${sample_list[@]}"; do
	label="proxy_$s"
	port=$next_port
	next_port=$((next_port + 1))
	"${on_proxy[@]}" "$pemba" proxy --insecure --listen "127.0.0.1:$port" --preshared-key kp \
		--primary-endpoint "127.0.0.1:$a_port" --primary-token ka \
		--shadow-endpoint "127.0.0.1:$b_port" --shadow-token kb \
		--shadow-read-sample "$s" ${proxy_workers:+--workers "$proxy_workers"} \
		2>"$work/$label.log" &
	pids+=($!)
	wait_port "$port"
	labels+=("$label")
	ports+=("$port")
	tokens+=(kp)
done
for k in $(seq 1 "$runs"); do
	echo "round $k of $runs (load $(cut -d' ' -f1 /proc/loadavg))"
	for i in "${!labels[@]}"; do
		one_run "${labels[$i]}" "${ports[$i]}" "${tokens[$i]}"
	done
done
for i in "${!labels[@]}"; do
	l=${labels[$i]}
	# shellcheck disable=SC2086 # word lists on purpose
	R[${l}_rate]=$(median ${R[${l}_rates]})
	# shellcheck disable=SC2086
	R[${l}_p50]=$(median ${R[${l}_p50s]})
	# shellcheck disable=SC2086
	R[${l}_p99]=$(median ${R[${l}_p99s]})
	if [[ $l != direct ]]; then
		R[${l}_stats]=$("$pemba" proxy stats --insecure --endpoint "127.0.0.1:${ports[$i]}" --token kp || true)
	fi
done

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%+.1f%%", (a - b) * 100 / b }'; }
echo
echo "results (medians of $runs interleaved runs of ${seconds}s, 64 in flight; load now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-12s %10s %10s %10s %12s %11s %11s %7s\n' config checks/s "p50 us" "p99 us" "rate vs dir" "p50 vs dir" "p99 vs dir" errors
for l in "${labels[@]}"; do
	printf '%-12s %10.0f %10.1f %10.1f %12s %11s %11s %7s\n' "$l" \
		"${R[${l}_rate]}" "${R[${l}_p50]}" "${R[${l}_p99]}" \
		"$(pct "${R[${l}_rate]}" "${R[direct_rate]}")" \
		"$(pct "${R[${l}_p50]}" "${R[direct_p50]}")" \
		"$(pct "${R[${l}_p99]}" "${R[direct_p99]}")" "${R[${l}_errors]}"
done
echo
for l in "${labels[@]}"; do
	[[ $l == direct ]] && continue
	echo "$l counters: ${R[${l}_stats]}"
done
met() { awk -v a="$1" -v b="$2" 'BEGIN { print ((a - b) * 100 / b < 10) ? "met" : "MISSED" }'; }
echo "target (p50 through the proxy at sample ${sample_list[0]} < +10% of direct): $(met "${R[proxy_${sample_list[0]}_p50]}" "${R[direct_p50]}")"
