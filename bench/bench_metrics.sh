#!/usr/bin/env bash
# What metrics cost: CheckPermission throughput at 64 in flight against
# `pemba serve` with metrics on (/metrics on an ephemeral port, every call
# counted) and off (--metrics-enabled=false), interleaved (on, off, off,
# on, ...) so drift on a shared machine hits both alike; medians of
# ROUNDS runs each.  Builds Release into build-bench/.  The target is a
# cost under 3% (issue 13).
#
#   bench/bench_metrics.sh [ROUNDS (5)] [SECONDS per run (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
bench_name=bench_metrics
source bench/lib.sh
rounds=${1:-5}
seconds=${2:-5}
scripts/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target pemba bench_check bench_grpc >/dev/null
work=$(mktemp -d)
server=
trap '[[ -n "$server" ]] && stop_pid "$server"; rm -rf "$work"' EXIT
build-bench/bench/bench_check --runs 1 --checks 20000 --spicedb-checks 0 \
	--keep --db "$work/pemba.db" --dump "$work" >/dev/null

# one MODE: serves the dataset with metrics MODE (on|off), runs bench_grpc
# at 64 in flight, prints the check rate.
one() {
	local mode=$1 port=$((20000 + RANDOM % 20000)) flags
	if [[ $mode == on ]]; then flags=(--metrics-addr 127.0.0.1:0); else flags=(--metrics-enabled=false); fi
	build-bench/pemba serve --datastore "sqlite://$work/pemba.db" \
		--preshared-key bench-key --grpc-addr "127.0.0.1:$port" \
		--datastore-gc-interval 0 "${flags[@]}" 2>"$work/serve.log" &
	server=$!
	wait_port "$port"
	build-bench/bench/bench_grpc --dir "$work" --endpoint "127.0.0.1:$port" \
		--token bench-key --levels 64 --runs 1 --seconds "$seconds" \
		--spicedb-checks 0 --label "$mode" >"$work/out" 2>&1
	if [[ $mode == on ]]; then
		# The calls were counted: the scrape sees them.
		local mport
		mport=$(sed -n 's#.*metrics at http://[^ ]*:\([0-9][0-9]*\) .*#\1#p' "$work/serve.log")
		curl -s -o "$work/metrics" "http://127.0.0.1:$mport/metrics"
		grep -q '^grpc_server_handled_total{grpc_code="OK",grpc_method="CheckPermission",[^}]*} [1-9]' "$work/metrics" ||
			{ echo "$bench_name: metrics did not count the checks" >&2; exit 1; }
	fi
	stop_pid "$server"
	server=
	sed -n "s/^RESULT ${mode}_check64_rate //p" "$work/out"
}

on=() off=()
for r in $(seq 1 "$rounds"); do
	if ((r % 2)); then
		on+=("$(one on)"); off+=("$(one off)")
	else
		off+=("$(one off)"); on+=("$(one on)")
	fi
	echo "round $r: on ${on[-1]} off ${off[-1]} checks/s" >&2
done
m_on=$(median "${on[@]}")
m_off=$(median "${off[@]}")
cost=$(awk -v a="$m_on" -v b="$m_off" 'BEGIN { printf "%.2f", (b - a) / b * 100 }')
echo "checks/s at 64 in flight, median of $rounds: metrics on $m_on, off $m_off; cost $cost%"
echo "RESULT metrics_on_check64_rate $m_on"
echo "RESULT metrics_off_check64_rate $m_off"
echo "RESULT metrics_cost_percent $cost"
