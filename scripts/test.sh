#!/usr/bin/env bash
# Builds loramux and runs every test (unit, integration, e2e) with CTest. The deployment checks
# (labels `deploy` and `container`) have their own scripts: test_deploy.sh, test_container.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
ctest --output-on-failure --timeout 600 -j 2 -LE '^(deploy|container)$' "$@"
