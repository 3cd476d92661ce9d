#!/usr/bin/env bash
# LookupResources / LookupSubjects latency: builds Release (into
# $BUILD_DIR, default build-bench/), generates the bench_check dataset into
# a file datastore and runs bench_lookup on it, with the real SpiceDB on
# the same data in-process.  Extra arguments go to bench_lookup, e.g.
#   bench/run_lookup.sh --runs 100 --spicedb-runs 10
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
scripts/deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_check bench_lookup
if [[ -z "${PEMBA_SPICEDB_LIB:-}" ]]; then
	PEMBA_SPICEDB_LIB="$(scripts/spicedb.sh)"
	export PEMBA_SPICEDB_LIB
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/bench/bench_check" --runs 1 --checks 1000 --spicedb-checks 0 \
	--keep --db "$work/pemba.db" --dump "$work" >/dev/null
"$build/bench/bench_lookup" --dir "$work" "$@"
