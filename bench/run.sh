#!/usr/bin/env bash
# Builds pemba in Release mode into build-bench/ and runs the check
# benchmark.  Extra arguments go to bench_check, e.g.
#   bench/run.sh --relationships 1000000 --runs 5 --db /var/tmp/pemba-bench.db
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target bench_check
if [[ -z "${PEMBA_SPICEDB_LIB:-}" ]]; then
	PEMBA_SPICEDB_LIB="$(scripts/spicedb.sh)"
	export PEMBA_SPICEDB_LIB
fi
exec build-bench/bench/bench_check "$@"
