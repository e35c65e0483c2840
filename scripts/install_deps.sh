#!/usr/bin/env bash
# Installs every build, test and run dependency of loramux from Debian 12's packages.
# Used by the README, .ci/run and the Dockerfile. Safe to run again.
#   ./scripts/install_deps.sh          everything: build, tests, fuzzers, container and nginx checks
#   ./scripts/install_deps.sh --build  only what building the server and the CLI needs (the
#                                      Dockerfile's build stage)
set -euo pipefail
BUILD_ONLY=false
if [ "${1:-}" = "--build" ]; then BUILD_ONLY=true; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build ccache pkg-config git ca-certificates \
  libtorch-dev libopenblas0-openmp libdnnl-dev \
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
  libabsl-dev prometheus-cpp-dev libssl-dev \
  libgtest-dev libgmock-dev nlohmann-json3-dev libre2-dev libcpp-httplib-dev \
  libsimdjson-dev libpcre2-dev libutf8proc-dev >/dev/null
# libopenblas0-openmp must own the libblas.so.3 alternative: Debian's LibTorch multiplies
# through it, and the reference BLAS is ~60x slower (see DESIGN.md).
for lib in libblas.so.3 liblapack.so.3; do
  alt="${lib}-$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
  cand=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -n1 || true)
  if [ -n "$cand" ]; then $SUDO update-alternatives --set "$alt" "$cand" >/dev/null; fi
done
if [ "$BUILD_ONLY" = true ]; then exit 0; fi
$SUDO apt-get install -y -qq --no-install-recommends prometheus openssl python3 >/dev/null
# The fuzzers (scripts/fuzz.sh): clang-14, its libFuzzer/ASan/UBSan runtimes (libclang-rt-14-dev)
# and llvm-symbolizer (llvm-14) for readable sanitizer stacks.
$SUDO apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev llvm-14 >/dev/null
# The OpenAI-compatible HTTP front's end-to-end test (tests/integration/openai_http_test.cc)
# speaks through curl and the official `openai` npm SDK, pinned by tests/openai/package-lock.json.
$SUDO apt-get install -y -qq --no-install-recommends curl >/dev/null
if ! command -v npm >/dev/null; then $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; fi
(cd "$(dirname "$0")/../tests/openai" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
# The deployment checks (scripts/test_deploy.sh, scripts/test_container.sh): Debian's container
# engine (podman, buildah, runc; debootstrap makes the base image), nginx as the gRPC load
# balancer, the Python client's grpcio and stub generator, python3-kubernetes to check the
# manifests and promtool (package prometheus) for the Prometheus files.
# policy-rc.d keeps nginx's package from starting a system nginx on port 80.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends podman buildah runc debootstrap \
  nginx-light python3-grpcio python3-protobuf python3-kubernetes >/dev/null
