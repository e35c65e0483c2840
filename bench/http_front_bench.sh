#!/usr/bin/env bash
# Issue-15 benchmark: what the OpenAI-compatible HTTP front costs against gRPC under the same load
# (64 streams over 8 adapters by default), measured alternately against one server.
#
#   bench/http_front_bench.sh [BUILD_DIR=build] [SECONDS_PER_CELL=5] [ROUNDS=2]
#
# Serves tests/data/llama-tiny with --http_listen on free loopback ports and a temporary store,
# uploads 8 adapters (lora-qv-r8 and dora-qkvo-r8 alternately) and loads them, then runs
# BUILD_DIR/bench/http_front_bench. Environment: STREAMS (64), PROMPT_LEN (16), MAX_NEW_TOKENS (32).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
CELL_S="${2:-5}"
ROUNDS="${3:-2}"
SERVER="$BUILD/loramux_server"
CLI="$BUILD/client/loramux"
LOADGEN="$BUILD/client/loramux_loadgen"
BENCH="$BUILD/bench/http_front_bench"
# shellcheck source=bench/server_lib.sh
source "$ROOT/bench/server_lib.sh"
require_binaries http_front_bench "$SERVER" "$CLI" "$LOADGEN" "$BENCH"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/loramux-http-bench-XXXXXX")"
trap 'stop_server; rm -rf "$TMP"' EXIT

start_server "$TMP/server" "$SERVER" --listen=127.0.0.1:0 --http_listen=127.0.0.1:0 \
  --served_model_name=base --metrics_listen= --adapter_store="$TMP/store" \
  --model_dir="$ROOT/tests/data/llama-tiny" --max_running_requests=256 --max_queue=4096 \
  --drain_timeout_s=5
HTTP="$HTTP_ADDR"

SOURCES=("$ROOT/tests/data/adapters/lora-qv-r8" "$ROOT/tests/data/adapters/dora-qkvo-r8")
for i in $(seq 0 7); do "$CLI" --server="$ADDR" upload "a$i" "${SOURCES[$((i % 2))]}" >/dev/null; done
ALL8="$(printf 'a%d,' $(seq 0 7))"; ALL8="${ALL8%,}"
timeout 120 "$LOADGEN" --server="$ADDR" --adapters="$ALL8" --preload --streams=1 --requests=8 \
  --duration_s=0 --prompt_len=4 --max_new_tokens=2 >/dev/null

echo "# loramux HTTP front vs gRPC"
echo
echo "- server: gRPC $ADDR, HTTP $HTTP; $(grep -o 'engine: .*' "$TMP/server.log" | head -n1 | cut -c9-)"
echo "- load: ${STREAMS:-64} streams over 8 adapters (a0..a7), prompt ${PROMPT_LEN:-16} tokens," \
     "${MAX_NEW_TOKENS:-32} greedy tokens, ${CELL_S} s per cell, $(nproc) CPUs (client and server share them)"
echo
timeout $(( (CELL_S + 60) * ROUNDS * 2 )) "$BENCH" --server="$ADDR" --http="$HTTP" --base_model=base \
  --adapters="$ALL8" --streams="${STREAMS:-64}" --prompt_len="${PROMPT_LEN:-16}" \
  --max_new_tokens="${MAX_NEW_TOKENS:-32}" --duration_s="$CELL_S" --rounds="$ROUNDS"
