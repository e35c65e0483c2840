#!/usr/bin/env bash
# Builds loramux and runs every test (unit, integration, e2e) with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
ctest --output-on-failure --timeout 600 -j 2 "$@"
