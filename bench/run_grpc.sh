#!/usr/bin/env bash
# CheckPermission over gRPC: builds Release into build-bench/, generates the
# bench_check dataset into a file datastore, serves it with `pemba serve`
# on a loopback port, runs bench_grpc (1, 16, 64 in flight) and the real
# SpiceDB on the same data in-process.  Extra arguments go to bench_grpc.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target pemba bench_check bench_grpc
if [[ -z "${PEMBA_SPICEDB_LIB:-}" ]]; then
	PEMBA_SPICEDB_LIB="$(scripts/spicedb.sh)"
	export PEMBA_SPICEDB_LIB
fi
work=$(mktemp -d)
server=
trap '[[ -n "$server" ]] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
build-bench/bench/bench_check --runs 1 --checks 20000 --spicedb-checks 0 \
	--keep --db "$work/pemba.db" --dump "$work" >/dev/null
port=$((20000 + RANDOM % 20000))
build-bench/pemba serve --datastore "sqlite://$work/pemba.db" \
	--preshared-key bench-key --grpc-addr "127.0.0.1:$port" 2>"$work/serve.log" &
server=$!
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.1
done
build-bench/bench/bench_grpc --dir "$work" --endpoint "127.0.0.1:$port" \
	--token bench-key "$@"
