#!/usr/bin/env bash
# Issue-5 service benchmark: throughput and time-to-first-token of the real server under
# concurrent Generate streams spread over 1, 8 or 64 adapters, against the base model alone at
# the same concurrency; then the gRPC overhead of a small Score (through the server vs the same
# request submitted in-process).
#
#   bench/service_bench.sh [BUILD_DIR=build] [SECONDS_PER_CELL=3]
#
# Builds nothing: needs BUILD_DIR/loramux_server, BUILD_DIR/client/loramux,
# BUILD_DIR/client/loramux_loadgen and BUILD_DIR/bench/score_inprocess_bench. Serves
# tests/data/llama-tiny (the only model on disk) on a free loopback port with a temporary store,
# uploads 64 adapters a0..a63 (lora-qv-r8 and dora-qkvo-r8 weights alternately; the registry keys
# by name@version, so each name is its own resident), loads them all, then runs one loadgen cell
# per (streams, adapters). Environment: PROMPT_LEN (16), MAX_NEW_TOKENS (32), SCORE_CALLS (200).
# The whole run stays under about 3 minutes with the defaults.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
CELL_S="${2:-3}"
PROMPT_LEN="${PROMPT_LEN:-16}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-32}"
SCORE_CALLS="${SCORE_CALLS:-200}"
MODEL="$ROOT/tests/data/llama-tiny"
SERVER="$BUILD/loramux_server"
CLI="$BUILD/client/loramux"
LOADGEN="$BUILD/client/loramux_loadgen"
INPROC="$BUILD/bench/score_inprocess_bench"

# shellcheck source=bench/server_lib.sh
source "$ROOT/bench/server_lib.sh"
require_binaries service_bench "$SERVER" "$CLI" "$LOADGEN" "$INPROC"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/loramux-service-bench-XXXXXX")"
trap 'stop_server; rm -rf "$TMP"' EXIT

# --- the server ----------------------------------------------------------------------------------
start_server "$TMP/server" "$SERVER" --listen=127.0.0.1:0 --metrics_listen= \
  --adapter_store="$TMP/store" --model_dir="$MODEL" --max_running_requests=256 --max_queue=4096 \
  --drain_timeout_s=5

echo "# loramux service benchmark"
echo
echo "- server: $ADDR, $(grep -o 'engine: .*' "$TMP/server.log" | head -n1 | cut -c9-)"
echo "- machine: $(nproc) CPUs, $(uname -m); prompt $PROMPT_LEN tokens, $MAX_NEW_TOKENS new tokens" \
     "(greedy), ${CELL_S} s per cell"

# --- 64 adapters ---------------------------------------------------------------------------------
SOURCES=("$ROOT/tests/data/adapters/lora-qv-r8" "$ROOT/tests/data/adapters/dora-qkvo-r8")
for i in $(seq 0 63); do
  "$CLI" --server="$ADDR" upload "a$i" "${SOURCES[$((i % 2))]}" >/dev/null
done
ALL64="$(printf 'a%d,' $(seq 0 63))"; ALL64="${ALL64%,}"
ALL8="$(printf 'a%d,' $(seq 0 7))"; ALL8="${ALL8%,}"
# Resident before timing, so cells measure serving rather than first loads.
timeout 120 "$LOADGEN" --server="$ADDR" --adapters="$ALL64" --preload --streams=1 --requests=64 \
  --duration_s=0 --prompt_len=4 --max_new_tokens=2 >/dev/null
echo "- adapters: 64 uploaded and loaded (a0..a63; even = lora-qv-r8, odd = dora-qkvo-r8)"
echo

# run_cell STREAMS ADAPTERS -> "tokens/s ttft_p50 ttft_p99 itl_p50 errors requests"
run_cell() {
  local row
  row="$(timeout $((CELL_S + 90)) "$LOADGEN" --server="$ADDR" --streams="$1" --adapters="$2" \
    --prompt_len="$PROMPT_LEN" --max_new_tokens="$MAX_NEW_TOKENS" --duration_s="$CELL_S" \
    --warmup_requests=2 --channels=$(( $1 >= 64 ? 4 : 1 )) --label=x 2>>"$TMP/loadgen.err" || true)"
  # | run | streams | adapters | requests | errors | tokens/s | TTFT p50 | TTFT p99 | ITL p50 |
  awk -F'|' 'NF >= 10 { gsub(/ /, ""); print $7, $8, $9, $10, $6, $5 }' <<<"$row"
}

echo "## Generate throughput: adapters vs the base model at the same concurrency"
echo
echo "| streams | adapters | requests | errors | tokens/s | vs base | TTFT p50 ms | TTFT p99 ms | ITL p50 ms |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for streams in 8 64 256; do
  read -r base_tps b50 b99 bitl berr breq < <(run_cell "$streams" base) || true
  printf '| %d | base | %s | %s | %s | 1.00 | %s | %s | %s |\n' \
    "$streams" "${breq:-?}" "${berr:-?}" "${base_tps:-?}" "${b50:-?}" "${b99:-?}" "${bitl:-?}"
  for n in 1 8 64; do
    case "$n" in 1) list="a0" ;; 8) list="$ALL8" ;; 64) list="$ALL64" ;; esac
    read -r tps t50 t99 itl err req < <(run_cell "$streams" "$list") || true
    ratio="$(awk -v a="${tps:-0}" -v b="${base_tps:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')"
    printf '| %d | %d | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$streams" "$n" "${req:-?}" "${err:-?}" "${tps:-?}" "$ratio" "${t50:-?}" "${t99:-?}" "${itl:-?}"
  done
done
if [[ -s "$TMP/loadgen.err" ]]; then
  echo
  echo "loadgen reported errors (first lines):"
  head -n 5 "$TMP/loadgen.err" | sed 's/^/    /'
fi

# --- gRPC overhead of a small Score --------------------------------------------------------------
echo
echo "## gRPC overhead of a small Score (8 tokens, base, one call at a time)"
echo
score_row="$(timeout 120 "$LOADGEN" --server="$ADDR" --rpc=score --streams=1 --adapters=base \
  --prompt_len=8 --requests="$SCORE_CALLS" --duration_s=0 --warmup_requests=10 --label=x || true)"
grpc_ms="$(awk -F'|' 'NF >= 11 { gsub(/ /, ""); print $9 }' <<<"$score_row")"
grpc_p50="$(awk -F'|' 'NF >= 11 { gsub(/ /, ""); print $10 }' <<<"$score_row")"

# The in-process run loads its own copy of the model: stop the server first so they don't share
# the CPUs.
stop_server
inproc_out="$(timeout 120 "$INPROC" "$MODEL" "$SCORE_CALLS" 8 2>>"$TMP/inproc.err" || true)"
inproc_ms="$(sed -n 's/^mean_ms=//p' <<<"$inproc_out")"
inproc_p50="$(grep -o 'p50 [0-9.]*' <<<"$inproc_out" | head -n1 | cut -d' ' -f2)"

echo "| path | calls | mean ms | p50 ms |"
echo "|---|---:|---:|---:|"
echo "| gRPC Score (loopback, plaintext) | $SCORE_CALLS | ${grpc_ms:-?} | ${grpc_p50:-?} |"
echo "| in-process Submit -> OnFinish | $SCORE_CALLS | ${inproc_ms:-?} | ${inproc_p50:-?} |"
awk -v g="${grpc_ms:-0}" -v i="${inproc_ms:-0}" 'BEGIN {
  if (g > 0 && i > 0) printf "| gRPC overhead | | %.3f (%.0f%%) | |\n", g - i, 100 * (g - i) / g }'
