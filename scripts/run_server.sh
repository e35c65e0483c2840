#!/usr/bin/env bash
# Builds loramux and serves the built-in tiny Llama (tests/data/llama-tiny) on 127.0.0.1:50051,
# metrics on 127.0.0.1:9090, with a local adapter store in ./loramux-store. Extra flags pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
exec ./build/loramux_server --model_dir tests/data/llama-tiny --adapter_store ./loramux-store "$@"
