#!/usr/bin/env bash
# The main job: build pemba (release) into build/ and run the server on the
# embedded SQLite datastore (sqlite://./pemba.db; created, or brought to the
# newest layout with `pemba datastore migrate head`), gRPC on
# 127.0.0.1:50051.
# The preshared key comes from $PEMBA_PRESHARED_KEY, or a random one is
# generated and printed.  Stop it with Ctrl-C (graceful shutdown).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
if [[ -z "${PEMBA_PRESHARED_KEY:-}" ]]; then
	PEMBA_PRESHARED_KEY=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
	export PEMBA_PRESHARED_KEY
	echo "pemba: generated preshared key: $PEMBA_PRESHARED_KEY" >&2
fi
cat >&2 <<MSG
pemba: try it from another shell:
  export PEMBA_TOKEN=$PEMBA_PRESHARED_KEY
  build/pemba schema write --insecure examples/document.zed
  build/pemba relationship create --insecure document:readme viewer user:anne
  build/pemba permission check --insecure document:readme view user:anne
MSG
datastore="${PEMBA_DATASTORE:-sqlite://./pemba.db}"
# serve creates a new datastore but refuses one with pending layout
# migrations (an older ./pemba.db): apply them first (a no-op when there
# are none).
build/pemba datastore migrate head --yes --datastore "$datastore" >&2
exec build/pemba serve --datastore "$datastore" \
	--grpc-addr "${PEMBA_GRPC_ADDR:-127.0.0.1:50051}"
