#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) into ./build-fuzz with clang, ASan and UBSan, and runs
# each for a bounded time, seeded from tests/fuzz/corpus/<name>/. Exits non-zero on any finding
# (crash, sanitizer report, leak, failed invariant, timeout, out-of-memory) and prints each
# target's executions.
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=300 scripts/fuzz.sh safetensors model_config
#
# Inputs it finds new coverage with go to build-fuzz/corpus/<name>/ (kept between runs); a
# finding is saved under build-fuzz/artifacts/<name>/ and the script prints how to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="$ROOT/build-fuzz"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"

export CCACHE_BASEDIR="$ROOT"
export CCACHE_SLOPPINESS="time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
CXX="${FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || true)}"
if [ -z "$CXX" ]; then
  echo "fuzz.sh: clang++ not found (scripts/install_deps.sh installs clang-14)" >&2
  exit 2
fi
SYMBOLIZER="$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)"

start=$(date +%s)
cmake -S tests/fuzz -B "$OUT" -G Ninja -DCMAKE_CXX_COMPILER="$CXX" >/dev/null
cmake --build "$OUT" -j "${LORAMUX_BUILD_JOBS:-2}"
built=$(date +%s)

if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets <"$OUT/fuzzers.txt"; fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if [ -n "$SYMBOLIZER" ]; then
  export ASAN_SYMBOLIZER_PATH="$SYMBOLIZER"
  export UBSAN_SYMBOLIZER_PATH="$SYMBOLIZER"
fi

failed=()
summary=()
total_execs=0
for name in "${targets[@]}"; do
  binary="$OUT/${name}_fuzzer"
  if [ ! -x "$binary" ]; then
    echo "fuzz.sh: no target \"$name\" (see $OUT/fuzzers.txt)" >&2
    exit 2
  fi
  corpus="$OUT/corpus/$name"
  artifacts="$OUT/artifacts/$name"
  log="$OUT/logs/$name.log"
  rm -rf "$artifacts"  # findings of earlier runs
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512
        -print_final_stats=1 -artifact_prefix="$artifacts/")
  if [ -f "tests/fuzz/$name.dict" ]; then args+=(-dict="tests/fuzz/$name.dict"); fi
  echo "== $name: ${FUZZ_SECONDS} s"
  # New inputs go to the first corpus folder; the committed seeds are only read.
  status=0
  "$binary" "${args[@]}" "$corpus" "tests/fuzz/corpus/$name" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  execs="${execs:-0}"
  total_execs=$((total_execs + execs))
  if [ "$status" -ne 0 ]; then
    failed+=("$name")
    summary+=("$(printf '%-20s %12s execs %8s/s  FAILED (exit %s)' "$name" "$execs" "${rate:-?}" "$status")")
    echo "--- $name failed (exit $status); end of $log:"
    tail -n 60 "$log"
    for f in "$artifacts"/*; do
      [ -e "$f" ] && echo "--- finding saved: $f   (replay: $binary $f)"
    done
  else
    summary+=("$(printf '%-20s %12s execs %8s/s  ok' "$name" "$execs" "${rate:-?}")")
  fi
done
finished=$(date +%s)

echo
echo "== fuzz summary (${FUZZ_SECONDS} s per target; build $((built - start)) s, runs $((finished - built)) s)"
printf '%s\n' "${summary[@]}"
echo "total: $total_execs executions"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
