#!/usr/bin/env bash
# Configures and builds loramux into ./build (Release with line tables). ccache is used when present.
# Arguments name the targets to build (default: all), e.g. `./scripts/build.sh loramux_server loramux`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"  # cache hits across clones in other folders
# With -g, ccache also hashes the working directory unless told not to: without this, a clone in
# another folder (CI's, a worktree, the image's /src) misses every entry.
export CCACHE_NOHASHDIR=1
# ccache also hashes the locale (it changes the compiler's messages): one fixed value, so the
# image's build stage (no LANG) and shells with other locales share entries.
unset LC_ALL LC_CTYPE LC_MESSAGES
export LANG=C.UTF-8
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "${LORAMUX_BUILD_JOBS:-2}" ${1:+--target "$@"}
