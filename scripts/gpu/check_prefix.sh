#!/usr/bin/env bash
# Checks .gpu-deps (scripts/gpu/prepare_deps.sh) HERE, before spending device time on it: in a bare
# Debian 12 container (podman, docker.io/library/debian:12; the container installs only g++,
# cmake and ninja from Debian's archive) it unpacks the packages with
# scripts/gpu/build_on_device.sh --unpack-only, configures scripts/gpu/prefix_check (the same
# find_package and pkg-config calls as the top-level CMakeLists.txt, minus LibTorch), generates the
# API with the carried protoc and gRPC plugin, links gRPC, protobuf, gtest, prometheus-cpp,
# simdjson, RE2, PCRE2, utf8proc, cpp-httplib and OpenSSL from the prefix, and runs the result.
#   ./scripts/gpu/check_prefix.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
podman run --rm -v "$PWD:/src:ro" docker.io/library/debian:12 bash -euo pipefail -c '
apt-get update -qq >/dev/null 2>&1
apt-get install -y -qq --no-install-recommends g++ cmake ninja-build >/dev/null 2>&1
P=$(/src/scripts/gpu/build_on_device.sh --unpack-only)
M=x86_64-linux-gnu
export PATH=$P/usr/bin:$PATH LD_LIBRARY_PATH=$P/usr/lib/$M
export PKG_CONFIG_LIBDIR=$P/usr/lib/$M/pkgconfig:$P/usr/share/pkgconfig
if find "$P" -xtype l | grep .; then echo "check_prefix: dangling links above" >&2; exit 1; fi
cmake -S /src/scripts/gpu/prefix_check -B /tmp/b -G Ninja -DCMAKE_PREFIX_PATH=$P/usr \
  -DCMAKE_LIBRARY_ARCHITECTURE=$M -DPKG_CONFIG_EXECUTABLE=$P/usr/bin/pkgconf -DSRC=/src >/dev/null
cmake --build /tmp/b >/dev/null
/tmp/b/prefix_check
echo "check_prefix: $(ldd /tmp/b/prefix_check | grep -c "$P") libraries loaded from the prefix"
'
