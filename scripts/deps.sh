#!/usr/bin/env bash
# Installs the Debian packages pemba needs to build and test, if missing.
# Usage: scripts/deps.sh [--test]
set -euo pipefail
pkgs=(build-essential cmake pkg-config libsqlite3-dev libyaml-dev libjansson-dev
	protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev # gRPC API messages
	libnghttp2-dev libssl-dev                              # gRPC transport
	libmicrohttpd-dev                                      # HTTP/JSON gateway
	libsnappy-dev zlib1g-dev                               # backup files
	libpq-dev libmicrohttpd-dev)                           # PostgreSQL datastore
if [[ "${1:-}" == "--test" ]]; then
	pkgs+=(clang libclang-rt-14-dev libcmocka-dev sqlite3 openssl curl
		libavro-dev # an independent reader of backup files (tests/tools)
		curl jq     # scrape /metrics, read JSON logs (tests/cli/test_metrics.sh)
		postgresql) # initdb/pg_ctl: PostgreSQL store tests, SpiceDB on PostgreSQL
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}" >&2
	SUDO=""
	[[ $(id -u) -ne 0 ]] && SUDO=sudo
	$SUDO apt-get update -qq || true
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# Node.js and npm: the real SpiceDB (scripts/spicedb.sh) and the official
# Node client's test suites (tests/node) come from the npm registry.
if [[ "${1:-}" == "--test" ]] && ! command -v npm >/dev/null; then
	SUDO=""
	[[ $(id -u) -ne 0 ]] && SUDO=sudo
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi
