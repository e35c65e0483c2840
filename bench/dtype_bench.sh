#!/usr/bin/env bash
# Issue 17's benchmark: loramux through gRPC on the peer model of the issue (a random Llama of
# 156M parameters: hidden 1024, intermediate 2816, 8 layers, 16/4 heads, vocab 32000) in float32
# and bfloat16: decode at batch 1 and 32 over the base, one adapter, 32 distinct rank-16 LoRA and
# 32 distinct rank-16 DoRA adapters (all 7 projections), and prefill; next to the machine's GEMM
# rates at those shapes measured in the same run (bench/gemm_rate).
#
#   [DTYPES="float32 bfloat16"] [ROUNDS=3] bench/dtype_bench.sh [BUILD_DIR=build] [SECONDS_PER_CELL=8]
#
# The model (HF config.json + safetensors, `loramux_train init`, seed 17) and the 64 adapters
# (PEFT directories: `loramux_train train --max_steps 1` from PEFT's initialisation, seeds 0..63,
# so B is small but nonzero) are made once into BUILD_DIR/peer-model (about 1.2 GB) and reused.
# Needs BUILD_DIR/loramux_server, client/loramux, client/loramux_loadgen, train/loramux_train,
# bench/gemm_rate.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
CELL_S="${2:-8}"
ROUNDS="${ROUNDS:-3}"
SERVER="$BUILD/loramux_server"
CLI="$BUILD/client/loramux"
LOADGEN="$BUILD/client/loramux_loadgen"
TRAIN="$BUILD/train/loramux_train"
GEMM="$BUILD/bench/gemm_rate"
# shellcheck source=bench/server_lib.sh
source "$ROOT/bench/server_lib.sh"
require_binaries dtype_bench "$SERVER" "$CLI" "$LOADGEN" "$TRAIN" "$GEMM"

# --- the model and adapters, made once ------------------------------------------------------------
PEER="$BUILD/peer-model"
if [[ ! -f "$PEER/done" ]]; then
  rm -rf "$PEER"
  mkdir -p "$PEER/config" "$PEER/adapters"
  cat >"$PEER/config/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
 "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
 "num_attention_heads": 16, "num_key_value_heads": 4, "max_position_embeddings": 2048,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2}
JSON
  "$TRAIN" init --model_dir "$PEER/config" --out "$PEER/base" --seed 17 >/dev/null
  # One short example in token ids: the adapters' values do not matter here, their shapes do.
  echo '{"prompt_token_ids": [1, 100, 200, 300, 400, 500, 600, 700], "completion_token_ids": [800, 900, 1000, 1100]}' \
    >"$PEER/data.jsonl"
  for i in $(seq 0 63); do
    kind=lora flags=()
    if ((i >= 32)); then kind=dora flags=(--dora); fi
    "$TRAIN" train --model_dir "$PEER/base" --data "$PEER/data.jsonl" --out "$PEER/adapters/$kind$i" \
      --rank 16 --alpha 32 --targets all-linear --max_steps 1 --batch_size 1 --eval_fraction 0 \
      --seed "$i" "${flags[@]}" >/dev/null 2>&1
    rm -rf "$PEER/adapters/$kind$i/checkpoint"
  done
  touch "$PEER/done"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/loramux-dtype-bench-XXXXXX")"
trap 'stop_server; rm -rf "$TMP"' EXIT

echo "# loramux dtype benchmark: the issue-17 peer model through gRPC"
echo
echo "- machine: $(nproc) CPUs; ${CELL_S} s per cell; greedy; prompts 16 tokens, 64 new (decode);"\
     "512-token prompts, 1 new (prefill)"
echo
echo "## The machine's GEMM rates now"
echo
"$GEMM" 1024 2816
echo

LORAS="$(printf 'lora%d,' $(seq 0 31))"; LORAS="${LORAS%,}"
DORAS="$(printf 'dora%d,' $(seq 32 63))"; DORAS="${DORAS%,}"

# cell STREAMS ADAPTERS PROMPT_LEN NEW -> "tokens/s ttft_p50_ms errors"
cell() {
  timeout $((CELL_S + 120)) "$LOADGEN" --server="$ADDR" --streams="$1" --adapters="$2" \
    --prompt_len="$3" --max_new_tokens="$4" --duration_s="$CELL_S" --warmup_requests=2 \
    --label=x 2>>"$TMP/loadgen.err" |
    awk -F'|' 'NF >= 10 { gsub(/ /, ""); print $7, $8, $6 }' || true
}

# median VALUES... (empty when none)
median() {
  printf '%s\n' "$@" | grep -v '^$' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
# range VALUES... -> "min–max"
range() { printf '%s\n' "$@" | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s–%s", lo, hi }'; }

echo "## Serving"
echo
echo "Batch-32 cells run in $ROUNDS interleaved rounds (base, one LoRA, 32 LoRA, 32 DoRA; then again),"
echo "so that each ratio compares cells measured seconds apart: tokens/s is the median of the rounds,"
echo "\"vs base\" the median of each round's ratio to that round's base, with their range."
echo
echo "| dtype | case | streams | tokens/s | vs base at 32 (range) | TTFT p50 ms | errors |"
echo "|---|---|--:|--:|--:|--:|--:|"
for dtype in ${DTYPES:-float32 bfloat16}; do
  start_server "$TMP/server-$dtype" "$SERVER" --listen=127.0.0.1:0 --metrics_listen= \
    --adapter_store="$TMP/store-$dtype" --model_dir="$PEER/base" --dtype="$dtype" \
    --max_running_requests=64 --max_queue=1024 --max_batch_tokens=2048 --drain_timeout_s=5
  for dir in "$PEER"/adapters/*; do "$CLI" --server="$ADDR" upload "$(basename "$dir")" "$dir" >/dev/null; done
  timeout 300 "$LOADGEN" --server="$ADDR" --adapters="$LORAS,$DORAS" --preload --streams=1 \
    --requests=64 --duration_s=0 --prompt_len=4 --max_new_tokens=1 >/dev/null
  read -r tps ttft err < <(cell 1 base 16 64) || true
  printf '| %s | batch 1, base | 1 | %s | | %s | %s |\n' "$dtype" "${tps:-?}" "${ttft:-?}" "${err:-?}"
  names=("batch 32, base" "batch 32, one LoRA" "batch 32, 32 LoRA" "batch 32, 32 DoRA")
  specs=(base lora0 "$LORAS" "$DORAS")
  declare -A tps_of=() ratio_of=() ttft_of=() err_of=()
  for _ in $(seq "$ROUNDS"); do
    base=""
    for i in "${!specs[@]}"; do
      read -r tps ttft err < <(cell 32 "${specs[$i]}" 16 64) || true
      ((i == 0)) && base="${tps:-}"
      tps_of[$i]+="${tps:-} " ttft_of[$i]+="${ttft:-} " err_of[$i]+="${err:-0} "
      ratio_of[$i]+="$(awk -v a="${tps:-0}" -v b="${base:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", a / b }') "
    done
  done
  for i in "${!specs[@]}"; do
    # shellcheck disable=SC2086  # word lists
    {
      tps="$(median ${tps_of[$i]})" ttft="$(median ${ttft_of[$i]})"
      err="$(printf '%s\n' ${err_of[$i]} | awk '{ s += $1 } END { print s + 0 }')"
      ratio=""
      if ((i > 0)); then ratio="$(printf '%.2f (%s)' "$(median ${ratio_of[$i]})" "$(range ${ratio_of[$i]})")"; fi
    }
    printf '| %s | %s | 32 | %s | %s | %s | %s |\n' "$dtype" "${names[$i]}" "${tps:-?}" "$ratio" \
      "${ttft:-?}" "$err"
  done
  unset tps_of ratio_of ttft_of err_of
  read -r _ ttft err < <(cell 1 base 512 1) || true
  prefill="$(awk -v t="${ttft:-0}" 'BEGIN { if (t > 0) printf "%.0f", 512 * 1000 / t; else print "?" }')"
  printf '| %s | prefill, 512-token prompt (prompt tokens/s = 512 / TTFT) | 1 | %s | | %s | %s |\n' \
    "$dtype" "$prefill" "${ttft:-?}" "${err:-?}"
  stop_server
done
if [[ -s "$TMP/loadgen.err" ]]; then
  echo
  echo "loadgen reported (first lines):"
  head -n 5 "$TMP/loadgen.err" | sed 's/^/    /'
fi
