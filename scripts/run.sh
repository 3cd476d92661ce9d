#!/usr/bin/env bash
# The main job: build pemba (release) into build/ and run it.
# Until the gRPC server lands, "run" means validating the example file.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
exec build/pemba validate examples/*.yaml
