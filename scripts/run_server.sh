#!/usr/bin/env bash
# Builds loramux and serves on 127.0.0.1:50051 (metrics on 127.0.0.1:9090) with a local adapter
# store in ./loramux-store. Extra flags pass through to loramux_server.
#
# Without --model_dir it serves the built-in demo (scripts/make_demo.sh, built once and cached in
# build/demo): a tiny byte-level Llama that echoes a word, and four adapters trained by
# `loramux train` (upper, initial: LoRA; rot13, mask: DoRA). It uploads them and prints one prompt
# answered by the base and by each adapter, per request, with no reload; then it keeps serving
# until interrupted. With --model_dir=DIR it serves that model alone.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
for arg in "$@"; do
  case "$arg" in --model_dir|--model_dir=*) exec ./build/loramux_server --adapter_store ./loramux-store "$@" ;; esac
done
./scripts/make_demo.sh
SERVER_ADDRESS=127.0.0.1:50051
for arg in "$@"; do
  case "$arg" in --listen=*) SERVER_ADDRESS="${arg#--listen=}" ;; esac
done
./build/loramux_server --model_dir build/demo/base --adapter_store ./loramux-store "$@" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' INT TERM
CLI=(./build/client/loramux --server "$SERVER_ADDRESS")
for _ in $(seq 1 150); do
  if "${CLI[@]}" health >/dev/null 2>&1; then break; fi
  sleep 0.2
done
for task in upper rot13 mask initial; do
  "${CLI[@]}" upload "$task" "build/demo/adapters/$task" >/dev/null
done
PROMPT="lomid ="
echo "demo: one prompt, answered by the base and by each adapter (greedy, per request):"
for adapter in "" upper rot13 mask initial; do
  printf '  %-8s %s' "${adapter:-(base)}" "$PROMPT"
  "${CLI[@]}" generate --text "$PROMPT" ${adapter:+--adapter "$adapter"} --temperature 0 --max_new_tokens 8 2>/dev/null
done
wait "$SERVER_PID"
