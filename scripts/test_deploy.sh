#!/usr/bin/env bash
# Runs the deployment checks (CTest label `deploy`): three replicas behind nginx with adapter
# affinity and failover (tests/deploy/nginx_e2e_test.py), the Kubernetes manifests through
# python3-kubernetes' typed models (tests/deploy/check_manifests.py), and the Prometheus config
# and alert rules with promtool. Needs ./scripts/install_deps.sh. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh loramux_server loramux loramux_python_stubs
cd build
ctest --output-on-failure --timeout 600 -L '^deploy$' "$@"
