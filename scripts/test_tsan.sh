#!/usr/bin/env bash
# Builds one test, tests/integration/engine_race_test.cc (many threads against one in-process
# Engine: requests over several adapters, cancellations, admin loads/unloads, evictions, stats
# reads), with ThreadSanitizer into ./build-tsan and runs it. Fails (exit code 66) on the first
# data race TSan sees in loramux code, or when the test itself fails.
#
# Only loramux's code is instrumented (-DLORAMUX_SANITIZE=thread). Debian's abseil is not, so the
# test links annotations that tell TSan what absl::Mutex and absl::Notification do
# (tests/tsan/absl_mutex_annotations.cc). LibTorch is not instrumented either and its OpenMP
# pool synchronizes in ways TSan cannot see: the test runs LibTorch on one thread
# (OMP_NUM_THREADS=1 and EngineOptions::threads = 1) and scripts/sanitizers/tsan.supp lists the
# only reports ignored, each with its reason (inside LibTorch/libgomp only).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export CCACHE_BASEDIR="$PWD"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

start=$(date +%s)
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLORAMUX_SANITIZE=thread \
  >/dev/null
cmake --build build-tsan -j "${LORAMUX_BUILD_JOBS:-2}" --target engine_race_test
built=$(date +%s)
echo "test_tsan.sh: build took $((built - start)) s"

export OMP_NUM_THREADS=1
export TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:history_size=4:suppressions=$ROOT/scripts/sanitizers/tsan.supp"
# GCC 12's TSan expects at most 28 bits of mmap randomisation; kernels set to more
# (vm.mmap_rnd_bits=32) make it abort at start ("unexpected memory mapping"). setarch -R turns
# address randomisation off for this one process where the sandbox allows it (Docker's default
# seccomp profile does not; there the test runs as is).
no_aslr=()
if setarch "$(uname -m)" -R true 2>/dev/null; then no_aslr=(setarch "$(uname -m)" -R); fi
status=0
"${no_aslr[@]}" ./build-tsan/tests/engine_race_test "$@" || status=$?
echo "test_tsan.sh: test took $(($(date +%s) - built)) s (exit code $status)"
exit $status
