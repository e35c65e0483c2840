#!/usr/bin/env bash
# Runs HERE (Debian 12, where Debian's archive is reachable), once: downloads the Debian packages
# that building loramux needs beyond what the lent GPU machine's image has (that image has CUDA,
# nvcc, a CUDA PyTorch with its LibTorch, CMake, ninja, g++ and Python; it reaches no registry),
# into .gpu-deps/ (ignored by git). The device tool carries it when a run names it:
#   run(command="./scripts/gpu_check.sh", carry=[".gpu-deps"])
# and scripts/gpu/build_on_device.sh unpacks it there (dpkg -x into a local prefix).
#
# What travels must fit the device tool's 64 MiB (working tree + carried paths), so only the
# build's own packages and their library closure go, minus what every glibc-based image has
# (libc, libstdc++, libgcc, zlib, zstd, ...) and what the build does not use (LibTorch: the GPU
# machine's own; ccache: not needed for one build). The script prints the total size.
#   ./scripts/gpu/prepare_deps.sh [--engine-only]   the engine-only set (no gRPC, protobuf,
#                                                   prometheus-cpp, cpp-httplib) for the fallback
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.gpu-deps
ENGINE=(libabsl-dev nlohmann-json3-dev libsimdjson-dev libpcre2-dev libutf8proc-dev libre2-dev
  libssl-dev libgtest-dev libgmock-dev pkgconf)
FRONTS=(libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev libcpp-httplib-dev)
ROOTS=("${ENGINE[@]}")
if [ "${1:-}" != "--engine-only" ]; then ROOTS+=("${FRONTS[@]}"); fi
# Skipped: on any glibc image (Ubuntu 24.04 underneath the CUDA image: newer glibc/libstdc++ than Debian
# 12's, which is what makes Debian 12 binaries run there), or not needed to build.
SKIP='^(libc6|libc6-dev|libc-dev-bin|libgcc-s1|libstdc\+\+6|gcc-12-base|libzstd1|liblzma5|libbz2-1.0|libcrypt1|libcrypt-dev|libnsl-dev|libnsl2|libtirpc.*|linux-libc-dev|rpcsvc-proto|libgssapi-krb5-2|libkrb5.*|libk5crypto3|libcom-err2|libkeyutils1|debconf|perl-base|dpkg|tar|libselinux1|libpcre2-8-0-dbg|libidn2-0|libunistring2|libgnutls30|libp11-kit0|libtasn1-6|libnettle8|libhogweed6|libgmp10|libffi8|libsystemd0|libcap2|liblz4-1|libgcrypt20|libgpg-error0|libdb5.3|libaudit1|libaudit-common|libcap-ng0|lsb-base|sysvinit-utils|adduser|passwd|libpam.*|libsemanage.*|libsepol2|login|init-system-helpers|libmd0|libbsd0|libsqlite3-0|libc-ares2-dbg|libcurl4-openssl-dev|libcurl4|libnghttp2-14|libpsl5|librtmp1|libssh2-1|libldap-2.5-0|libsasl2-2|libsasl2-modules-db|libbrotli1|libbrotli-dev|zlib1g-dev|libc-ares-dev|libc-ares2|googletest|cmake|ninja-build|ccache)$'
mapfile -t PKGS < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "${ROOTS[@]}" | grep -v '^ ' | grep -v '^<' | sort -u |
  grep -Ev "$SKIP")
# zlib1g-dev (with zlib1g: its libz.so points at Debian's soname), c-ares and gtest sources:
# small, and the image may lack them.
PKGS+=(zlib1g-dev libc-ares-dev libc-ares2 googletest)
# prometheus-cpp's CMake package asks for CURL (its push part): headers and libcurl.so suffice.
if [ "${1:-}" != "--engine-only" ]; then
  PKGS+=(libbrotli-dev libbrotli1 libcivetweb-dev libcurl4-openssl-dev libcurl4)
fi
rm -rf "$DEST" && mkdir -p "$DEST"
(cd "$DEST" && apt-get download "${PKGS[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
printf '%s\n' "${PKGS[@]}" >"$DEST/PACKAGES"
echo "prepare_deps: $(ls "$DEST"/*.deb | wc -l) packages, $(du -sh "$DEST" | cut -f1) in $DEST"
