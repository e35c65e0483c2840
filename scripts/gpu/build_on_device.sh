#!/usr/bin/env bash
# Runs THERE, on the lent GPU machine (no registry reachable): unpacks the Debian packages that
# scripts/gpu/prepare_deps.sh downloaded into .gpu-deps/ (carried with the run) into a local
# prefix, and builds loramux against them and the machine's CUDA LibTorch (the PyTorch wheel's,
# at `python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'`).
#
#   ./scripts/gpu/build_on_device.sh [--engine-only] [TARGET...]
#   ./scripts/gpu/build_on_device.sh --unpack-only   only unpack; print the prefix
# LORAMUX_CMAKE_ARGS adds CMake arguments, e.g. "-DLORAMUX_CUDA_DECODE_KERNEL=OFF" (serve CUDA
# decode on LibTorch's gathered GEMMs alone) or "-DLORAMUX_CUDA=OFF" (no CUDA kernels at all).
#
# Writes build-cuda/ (or build-cuda-engine/ with --engine-only) and build-cuda*/env.sh, which
# sets LD_LIBRARY_PATH for the unpacked libraries (source it before running what was built).
# Prints the build directory on its last line.
#
# ABI: the parts come from two worlds, and must agree on the C++ library ABI.
#  - Debian 12's gRPC 1.51, protobuf 3.21, abseil 20220623, RE2, simdjson, ... are built by g++ 12
#    with the C++11 std::string/std::list ABI (_GLIBCXX_USE_CXX11_ABI=1).
#  - PyTorch's Linux wheels were built with the old ABI (=0) up to 2.5; the wheels moved to
#    manylinux_2_28 with _GLIBCXX_USE_CXX11_ABI=1 from the end of 2024 (pytorch/pytorch#123649,
#    #143423; pre-CXX11 libtorch builds were removed in #146200), so 2.6+/2.7+ and the machine's
#    2.11 are CXX11-ABI: the same as Debian's. The script checks what the wheel says
#    (torch._C._GLIBCXX_USE_CXX11_ABI) and goes engine-only if it were 0, since then every
#    std::string crossing into Debian's abseil/gRPC/protobuf would be mangled differently.
#  - protobuf: the wheel's libtorch links its own protobuf statically with hidden symbols (the
#    "libtorch exports protobuf symbols" bug, pytorch/pytorch#14573, was fixed long ago), so
#    Debian's libprotobuf.so.32 beside it should not clash; if it does (duplicate descriptor
#    registration at start-up, "File already exists in database"), the engine-only build is the
#    fallback: it links no protobuf or gRPC at all.
#  - C++ standard: torch >= 2.13's headers use C++20 features and 2.14's require C++20
#    (pytorch/pytorch#178150); the build uses C++20 from 2.13 on, C++17 before.
#  - The Debian libraries need glibc >= 2.36 and libstdc++ from g++ 12: the machine's image
#    (Ubuntu 24.04 under CUDA 13, Python 3.12.3) has newer ones, so they load there.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ENGINE_ONLY=OFF
UNPACK_ONLY=false
if [ "${1:-}" = "--engine-only" ]; then ENGINE_ONLY=ON; shift; fi
if [ "${1:-}" = "--unpack-only" ]; then UNPACK_ONLY=true; shift; fi
BUILD=build-cuda
if [ "$ENGINE_ONLY" = ON ]; then BUILD=build-cuda-engine; fi
PREFIX=${LORAMUX_DEPS_PREFIX:-/tmp/loramux-deps}
MULTIARCH=x86_64-linux-gnu

if [ ! -d .gpu-deps ] || ! ls .gpu-deps/*.deb >/dev/null 2>&1; then
  echo "build_on_device: no .gpu-deps/*.deb here: run scripts/gpu/prepare_deps.sh on the" \
    "development machine and name .gpu-deps in the run's carry" >&2
  exit 2
fi
if [ ! -e "$PREFIX/.unpacked" ]; then
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  for f in .gpu-deps/*.deb; do
    if command -v dpkg >/dev/null; then
      dpkg -x "$f" "$PREFIX"
    else  # a .deb is an ar archive whose data.tar.* holds the files
      ar p "$f" "$(ar t "$f" | grep '^data\.tar')" | tar -x -C "$PREFIX" --xz 2>/dev/null ||
        ar p "$f" "$(ar t "$f" | grep '^data\.tar')" | tar -x -C "$PREFIX" --zstd
    fi
  done
  # Absolute symlinks (/usr/lib/...) point into the prefix instead.
  find "$PREFIX" -type l | while read -r link; do
    target=$(readlink "$link")
    if [ "${target#/}" != "$target" ] && [ -e "$PREFIX$target" ]; then
      ln -sfn "$PREFIX$target" "$link"
    fi
  done
  # pkg-config files name /usr: make them name the prefix.
  find "$PREFIX/usr" -name '*.pc' -exec sed -i -E "s#(^|[=[:space:]]|-I|-L)/usr#\1$PREFIX/usr#g" {} +
  touch "$PREFIX/.unpacked"
fi
LIBDIR=$PREFIX/usr/lib/$MULTIARCH
export PATH=$PREFIX/usr/bin:$PATH  # protoc, grpc_cpp_plugin, pkg-config (pkgconf)
export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig:/usr/lib/$MULTIARCH/pkgconfig:/usr/share/pkgconfig
PKG_CONFIG=$PREFIX/usr/bin/pkgconf
if $UNPACK_ONLY; then
  echo "$PREFIX"
  exit 0
fi

PY=${PYTHON:-python3}
TORCH_INFO=$("$PY" -c '
import torch
print(torch.utils.cmake_prefix_path, torch.__version__.split("+")[0],
      int(torch._C._GLIBCXX_USE_CXX11_ABI), torch.version.cuda or "none")') || {
  echo "build_on_device: $PY cannot import torch: no LibTorch to build against" >&2
  exit 2
}
read -r TORCH_PREFIX TORCH_VERSION TORCH_ABI TORCH_CUDA <<<"$TORCH_INFO"
echo "build_on_device: torch $TORCH_VERSION (CUDA $TORCH_CUDA, _GLIBCXX_USE_CXX11_ABI=$TORCH_ABI) at $TORCH_PREFIX"
if [ "$TORCH_ABI" != 1 ] && [ "$ENGINE_ONLY" = OFF ]; then
  echo "build_on_device: this LibTorch uses the pre-C++11 string ABI, Debian's gRPC/protobuf/abseil" \
    "the C++11 one: building engine-only" >&2
  exec "$0" --engine-only "$@"
fi
CXX_STD=17
if "$PY" -c "import sys; v=tuple(int(x) for x in sys.argv[1].split('.')[:2]); sys.exit(0 if v >= (2, 13) else 1)" "$TORCH_VERSION"; then
  CXX_STD=20
fi
CUDA_ARGS=()
if command -v nvcc >/dev/null; then
  CUDA_ARGS=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_ARCHITECTURES=90)
fi
# ccache is not carried: one build, nothing to hit.
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr;$TORCH_PREFIX" -DCMAKE_LIBRARY_ARCHITECTURE=$MULTIARCH \
  -DPKG_CONFIG_EXECUTABLE="$PKG_CONFIG" -DCMAKE_CXX_STANDARD=$CXX_STD \
  -DLORAMUX_ENGINE_ONLY=$ENGINE_ONLY "${CUDA_ARGS[@]}" ${LORAMUX_CMAKE_ARGS:-} >&2
cat >"$BUILD/env.sh" <<ENV
export LD_LIBRARY_PATH=$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PATH=$PREFIX/usr/bin:\$PATH
ENV
cmake --build "$BUILD" -j "$(nproc)" ${1:+--target "$@"} >&2
echo "$ROOT/$BUILD"
