#!/usr/bin/env bash
# Issue 13's one prepared check for the lent GPU machine (an H200; see .library's device notes),
# fitting one run of under 10 minutes:
#   1. builds loramux there against the CUDA LibTorch and the carried Debian packages
#      (scripts/gpu/build_on_device.sh; the full build with gRPC first, the engine-only build if
#      that fails, saying why), the CUDA kernels included;
#   2. runs the engine's tests on CUDA (the cuda0 instances of the device-parameterised tests);
#   3. checks and times the fused gather-BGMV kernels (bench/bgmv_cuda_check);
#   4. benchmarks a random ~1.1B Llama in bfloat16 (bench/gpu_bench): the card's copy bandwidth
#      and bf16 matmul rate, decode at batch 1/32/128 with 0/1/32/128 distinct rank-16 LoRA and
#      DoRA adapters, prefill, cold load;
#   5. runs HF transformers + PEFT on the same shapes (scripts/gpu/peft_peer.py) beside it.
# Everything is logged to $OUT/gpu_check.log; the tables go to $OUT/tables.md as well.
#
# On the device machine (after ./scripts/gpu/prepare_deps.sh here, in the checkout that travels):
#   run(command="./scripts/gpu_check.sh", carry=[".gpu-deps"], timeout_s=600)
# A rerun after a failed full build: command="GPU_CHECK_ENGINE_ONLY=1 ./scripts/gpu_check.sh".
# LORAMUX_CMAKE_ARGS passes CMake arguments to the build (scripts/gpu/build_on_device.sh), e.g.
# "-DLORAMUX_CUDA_DECODE_KERNEL=OFF" if the fused decode path fails to build or to pass there.
# The phases have their own limits (build 330 s, engine-only fallback 240 s, tests 90 s, kernel
# check 30 s, gpu_bench 150 s, peer 100 s); a full build that fails late leaves too little for
# the rest, so then rerun engine-only.
# Here, on the CPU, a dry run with a tiny model and the CUDA parts skipped:
#   ./scripts/gpu_check.sh --dry-run
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=false
if [ "${1:-}" = "--dry-run" ]; then DRY=true; fi
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
TABLES=$OUT/tables.md
: >"$LOG"
: >"$TABLES"
START=$(date +%s)
say() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
# run_phase SECONDS NAME CMD...: runs CMD under a time limit, output to the log (and the tables
# for benchmarks); a failure is reported and the check goes on.
FAILED=()
run_phase() {
  local limit=$1 name=$2
  shift 2
  say "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    say "!! $name failed (exit $rc$([ $rc = 124 ] && echo ', timed out'))"
    FAILED+=("$name")
  fi
  return $rc
}

ENGINE_TESTS=(llama_model_test lora_linear_test kv_cache_test adapter_golden_test engine_test
  factor_arena_test adapter_registry_test adapter_eviction_test auto_dtype_test
  model_load_errors_test adapter_validation_test)

if $DRY; then
  say "dry run on the CPU: tiny model, CUDA parts skipped"
  DEVICE=cpu
  BUILD=build
  run_phase 1500 "build (CPU, ./build)" ./scripts/build.sh gpu_bench engine_test \
    llama_model_test || exit 1
  # The device-parameterised tests' CPU instances (CTest's names carry gtest's "# GetParam() = "
  # comment after the device, so no `$` anchor).
  TEST_SELECT=(-R '(EngineTest|GoldenModelTest).*cpu')
  BENCH=(--device=cpu --dtype=bfloat16 --layers=2 --hidden=256 --intermediate=704 --heads=4
    --kv_heads=2 --vocab=1000 --batches=1,4 --adapters=0,1,4 --steps=3 --context=16 --prompt=32
    --prefill_batch=2 --matmul=256 --copy_mib=64)
  PEER=(--device=cpu --layers=2 --hidden=256 --intermediate=704 --heads=4 --kv_heads=2
    --vocab=1000 --batches=1,4 --adapters=0,1,4 --steps=3 --context=16)
else
  DEVICE=cuda:0
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv \
    >>"$LOG" 2>&1 || true
  TARGETS=(gpu_bench bgmv_cuda_check "${ENGINE_TESTS[@]}")
  BUILD=""
  # GPU_CHECK_ENGINE_ONLY=1 skips the full build (a rerun after the full one failed).
  if [ -n "${GPU_CHECK_ENGINE_ONLY:-}" ]; then
    say "GPU_CHECK_ENGINE_ONLY set: engine-only build"
    run_phase 300 "build (engine-only)" ./scripts/gpu/build_on_device.sh --engine-only \
      "${TARGETS[@]}" && BUILD=$PWD/build-cuda-engine
  elif run_phase 330 "build (full: gRPC, server; CUDA LibTorch)" \
      ./scripts/gpu/build_on_device.sh "${TARGETS[@]}" loramux_server; then
    BUILD=$PWD/build-cuda
  else
    say "the full build failed (its log above says why); building engine-only"
    run_phase 240 "build (engine-only)" ./scripts/gpu/build_on_device.sh --engine-only \
      "${TARGETS[@]}" && BUILD=$PWD/build-cuda-engine
  fi
  if [ -z "$BUILD" ]; then
    say "no build: nothing to test or measure"
    exit 1
  fi
  # Our binaries need the unpacked Debian libraries; python3 (the peer) keeps the image's own.
  PEER_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
  # shellcheck disable=SC1091
  source "$BUILD/env.sh"
  TEST_SELECT=(-R 'cuda0' -j 4)
  BENCH=(--device=cuda:0 --dtype=bfloat16)
  PEER=(--device=cuda:0 --dora)
fi
[ "$DRY" = true ] && BUILD=$PWD/build

pushd "$BUILD" >/dev/null
run_phase 90 "engine tests on $DEVICE" ctest "${TEST_SELECT[@]}" --no-tests=error \
  --output-on-failure --timeout 60
popd >/dev/null
grep -E "tests passed|tests failed|Failed|\*\*\*" "$LOG" | tail -15 >>"$TABLES"

if ! $DRY; then
  run_phase 30 "bgmv_cuda_check" "$BUILD/bench/bgmv_cuda_check"
fi
BENCH_LOG=$OUT/gpu_bench.md
say "== gpu_bench ${BENCH[*]}"
timeout --kill-after=10 150 "$BUILD/bench/gpu_bench" "${BENCH[@]}" >"$BENCH_LOG" 2>>"$LOG" ||
  { say "!! gpu_bench failed (exit $?)"; FAILED+=(gpu_bench); }
cat "$BENCH_LOG" >>"$TABLES"
say "== peft_peer ${PEER[*]}"
LD_LIBRARY_PATH=${PEER_LD_LIBRARY_PATH-${LD_LIBRARY_PATH-}} timeout --kill-after=10 100 \
  "${PYTHON:-python3}" scripts/gpu/peft_peer.py "${PEER[@]}" \
  >>"$TABLES" 2>>"$LOG" || { say "!! peft_peer failed (exit $?)"; FAILED+=(peft_peer); }
if ! $DRY; then
  sed -n '/^# bgmv_cuda_check/,/^# rel. error/p' "$LOG" >>"$TABLES"
fi
say "done in $(($(date +%s) - START))s; failed: ${FAILED[*]:-none}"
cat "$TABLES"
[ ${#FAILED[@]} -eq 0 ]
