#!/usr/bin/env bash
# CheckPermission through the HTTP/JSON gateway next to gRPC, 64 requests in
# flight each: builds Release into build-bench/, generates the bench_check
# dataset into a file datastore, serves it with `pemba serve --http-enabled`
# on loopback ports, then runs bench_grpc (64 in flight over 4 HTTP/2
# connections) and bench_http (64 keep-alive HTTP/1.1 connections, one
# request each at a time) against the same server, medians of 3 runs of
# --seconds (default 5) each.  Usage: bench/bench_http.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bench_name=bench_http
source bench/lib.sh
seconds=${1:-5}
scripts/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target pemba bench_check bench_grpc bench_http >/dev/null
work=$(mktemp -d)
server=
trap '[[ -n "$server" ]] && stop_pid "$server"; rm -rf "$work"' EXIT
build-bench/bench/bench_check --runs 1 --checks 20000 --spicedb-checks 0 \
	--keep --db "$work/pemba.db" --dump "$work" >/dev/null
gport=$((20000 + RANDOM % 20000))
hport=$((gport + 1))
build-bench/pemba serve --datastore "sqlite://$work/pemba.db" \
	--preshared-key bench-key --grpc-addr "127.0.0.1:$gport" \
	--http-enabled --http-addr "127.0.0.1:$hport" 2>"$work/serve.log" &
server=$!
wait_port "$gport"
wait_port "$hport"
echo "== gRPC (bench_grpc, 64 in flight)"
build-bench/bench/bench_grpc --dir "$work" --endpoint "127.0.0.1:$gport" \
	--token bench-key --levels 64 --spicedb-checks 0 --runs 3 --seconds "$seconds" | tee "$work/grpc.txt"
echo "== HTTP/JSON gateway (bench_http, 64 in flight)"
build-bench/bench/bench_http --dir "$work" --port "$hport" --token bench-key \
	--inflight 64 --runs 3 --seconds "$seconds" | tee "$work/http.txt"
# HTTP/2 (h2c prior knowledge) through the same port, when nghttp2's h2load
# is installed (Debian: nghttp2-client): one check repeated, 4 connections
# x 16 streams, and HTTP/1.1 with 64 connections for the same request.
if command -v h2load >/dev/null; then
	head -1 "$work/checks.txt" | sed -E 's/^([^:]+):([^#]+)#([^@]+)@([^:]+):(.+)$/{"resource":{"objectType":"\1","objectId":"\2"},"permission":"\3","subject":{"object":{"objectType":"\4","objectId":"\5"}}}/' >"$work/one.json"
	for mode in "h2 -c 4 -m 16" "h1 --h1 -c 64"; do
		set -- $mode
		name=$1
		shift
		rates=()
		for _ in 1 2 3; do
			r=$(h2load "$@" -D "$seconds" -d "$work/one.json" -H 'authorization: Bearer bench-key' \
				"http://127.0.0.1:$hport/v1/permissions/check" | awk '/^finished in/ {print $4}')
			rates+=("$r")
		done
		echo "h2load $name (one check repeated, 64 in flight): $(median "${rates[@]}") checks/s (runs: ${rates[*]})"
	done
else
	echo "(h2load not installed: no HTTP/2 figure; apt-get install nghttp2-client)"
fi
g=$(awk '/^RESULT pemba_check64_rate/ {print $3}' "$work/grpc.txt")
h=$(awk '/^RESULT pemba_http_check64_rate/ {print $3}' "$work/http.txt")
awk -v g="$g" -v h="$h" 'BEGIN { printf "HTTP/gRPC throughput at 64 in flight: %.0f / %.0f checks/s = %.2f\n", h, g, h / g }'
