#!/usr/bin/env bash
# Builds every test (and the server and CLI they run) with AddressSanitizer and
# UndefinedBehaviorSanitizer into ./build-asan and runs the whole suite there with CTest, like
# scripts/test.sh. Extra arguments go to ctest (e.g. -R engine_test).
#
# Only loramux's own code is instrumented (-DLORAMUX_SANITIZE=address,undefined, see
# CMakeLists.txt); Debian's LibTorch, gRPC, protobuf and abseil are not, which ASan allows.
# Any finding fails: ASan and UBSan stop the process at the first report (halt_on_error,
# -fno-sanitize-recover=undefined), a test binary that stops fails its test, and a report from a
# child (loramux_server, the loramux CLI) fails the test that ran it (SanitizerReport in
# tests/integration/server_harness.h). LeakSanitizer runs at every exit; the only leaks it may
# ignore are listed, each with its reason, in scripts/sanitizers/lsan.supp.
#
# Nothing is excluded: every test runs under the sanitizers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export CCACHE_BASEDIR="$PWD"  # cache hits across clones in other folders
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

start=$(date +%s)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLORAMUX_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j "${LORAMUX_BUILD_JOBS:-2}" --target loramux_tests
built=$(date +%s)
echo "test_sanitized.sh: build took $((built - start)) s"

# detect_stack_use_after_return stays off: it doubles stack use and LibTorch's and gRPC's threads
# are not built for it. abort_on_error=0 exits with code 1 (a failed test), no core dump.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:check_initialization_order=1:strict_string_checks=1:print_summary=1"
export LSAN_OPTIONS="suppressions=$ROOT/scripts/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:print_summary=1"

cd build-asan
status=0
ctest --output-on-failure --timeout 1200 -j 2 "$@" || status=$?
echo "test_sanitized.sh: tests took $(($(date +%s) - built)) s"
exit $status
