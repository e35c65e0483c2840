#!/usr/bin/env bash
# Builds the built-in demo into ${LORAMUX_DEMO_DIR:-build/demo} (cached: nothing is redone while the
# stamp of this script and scripts/demo/make_demo_data.py matches):
#   base/              a 2-layer Llama (hidden 64) with a byte-level tokenizer.json, pretrained from
#                      random weights by `loramux_train train --full` to echo a five-letter word
#   adapters/TASK/     PEFT adapters trained by `loramux train`: upper (LoRA), rot13 (DoRA),
#                      mask (DoRA: vowels become '*'), initial (LoRA: the first letter upper-cased)
#   data/              the generated JSONL data (train and held-out per task)
# Deterministic (fixed seeds, generated data); a few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${LORAMUX_DEMO_DIR:-build/demo}"
TRAIN=build/train/loramux_train
CLI=build/client/loramux
STAMP=$(cat scripts/make_demo.sh scripts/demo/make_demo_data.py | sha256sum | cut -c1-16)
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ]; then
  echo "demo: up to date in $OUT"
  exit 0
fi
[ -x "$TRAIN" ] && [ -x "$CLI" ] || ./scripts/build.sh loramux_train_cli loramux
rm -rf "$OUT"
mkdir -p "$OUT"
python3 scripts/demo/make_demo_data.py "$OUT"
"$TRAIN" init --model_dir "$OUT/init" --out "$OUT/init" --seed 14
echo "demo: pretraining the base (echo)"
"$TRAIN" train --full --model_dir "$OUT/init" --data "$OUT/data/pretrain.jsonl" --out "$OUT/base" \
  --batch_size 32 --lr 3e-3 --epochs 1 --warmup_steps 30 --eval_fraction 0.02 --seed 14
rm -rf "$OUT/base/checkpoint" "$OUT/init"

# task, then its flags (the fixed `loramux train` command line plus --warmup_steps)
train_adapter() {
  local task=$1
  shift
  echo "demo: training adapter $task"
  "$CLI" train --model_dir "$OUT/base" --data "$OUT/data/$task.train.jsonl" --out "$OUT/adapters/$task" \
    --targets all-linear --batch_size 16 --warmup_steps 10 --seed 14 "$@"
  rm -rf "$OUT/adapters/$task/checkpoint"
  echo -n "demo: $task held-out "
  "$TRAIN" evaluate --model_dir "$OUT/base" --adapter "$OUT/adapters/$task" --data "$OUT/data/$task.heldout.jsonl" \
    2>/dev/null
}
train_adapter upper --rank 8 --alpha 16 --lr 3e-3 --epochs 1
train_adapter rot13 --dora --rank 8 --alpha 16 --lr 2e-3 --epochs 1
train_adapter mask --dora --rank 8 --alpha 16 --lr 2e-3 --epochs 1
train_adapter initial --rank 4 --alpha 8 --lr 3e-3 --epochs 1
echo "$STAMP" > "$OUT/stamp"
echo "demo: ready in $OUT"
