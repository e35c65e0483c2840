#!/usr/bin/env bash
# Builds the loramux image with Debian's podman and tests it (CTest label `container`,
# tests/deploy/container_test.sh): non-root, health check, upload and generate from outside,
# restart on the same store volume. Sets up the engine first (scripts/container_setup.sh).
# Needs ./scripts/install_deps.sh and root (or sudo). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/container_setup.sh
./scripts/build.sh loramux loramux_python_stubs
cd build
ctest --output-on-failure --timeout 3000 -L '^container$' "$@"
