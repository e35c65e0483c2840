#!/usr/bin/env bash
# Builds loramux and runs every test (unit, integration, e2e) with CTest. The deployment checks
# (labels `deploy` and `container`) have their own scripts: test_deploy.sh, test_container.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
./scripts/make_demo.sh  # the demo the demo test serves (cached in build/demo)
cd build
# Arguments go to ctest; a label exclusion of your own (-LE) replaces the default one.
exclude=(-LE '^(deploy|container)$')
for arg in "$@"; do
  case "$arg" in -LE|--label-exclude|-LE*|--label-exclude=*) exclude=() ;; esac
done
ctest --output-on-failure --timeout 600 -j 2 "${exclude[@]}" "$@"
