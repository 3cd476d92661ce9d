#!/usr/bin/env bash
# Builds everything with clang + AddressSanitizer + UBSan into build-test/,
# including the libFuzzer targets, and runs the whole suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
# --- differential tests (tests/diff, tests/schemadiff) ----------------
# They load the real SpiceDB and fail, not skip, without it.
if [[ -z "${PEMBA_SPICEDB_LIB:-}" ]]; then
	PEMBA_SPICEDB_LIB="$(scripts/spicedb.sh)"
	export PEMBA_SPICEDB_LIB
fi
# --- end differential tests --------------------------------------------
CC=clang cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug \
	-DPEMBA_SANITIZE=ON -DPEMBA_TESTS=ON -DPEMBA_FUZZ=ON \
	-DPEMBA_FUZZ_SECONDS="${PEMBA_FUZZ_SECONDS:-30}" >/dev/null
cmake --build build-test -j"$(nproc)"
cd build-test
exec ctest --output-on-failure -j"$(nproc)" "$@"
