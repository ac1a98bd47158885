#!/usr/bin/env bash
# Head-pruning sweep on all-MiniLM-L6-v2 fine-tuned on SST-2: one run of
# experiments/minilm_sst2_heads.json (gated fine-tuning with distillation, head removal,
# mask tuning, export) per L0 penalty and per head-count target, then a table of heads kept,
# dev accuracy, FLOPs, latency speedup and wall time (runs/heads-sweep/table.md).
# Fine-tunes the teacher first (experiments/minilm_sst2_full.json, ~30 min) if it is missing.
# A finished run is skipped and an interrupted one resumed, so the script can be re-run.
# Latency in the table is measured after all runs, back to back on a quiet machine, by
# bench_bert (forward, batch 1 and 32 at the average dev length), not by the runs
# themselves, whose measurements share the machine with whatever else is running.
#   LAMBDAS="0.003 0.01" TARGETS="36" FFN_PENALTIES="0.001" scripts/sweep_heads.sh [extra finetune_prune args]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
lambdas=${LAMBDAS:-"0.003 0.01 0.03 0.1"}
targets=${TARGETS:-"36"}
ffn=${FFN_PENALTIES:-"0.0003 0.001"}  # runs with FFN neuron gates too (target 36 heads)
out="$root/runs/heads-sweep"
if [ ! -x build/apps/finetune_prune ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build build -j "$(nproc)" --target finetune_prune bench_bert
scripts/fetch_model.sh
if [ ! -f runs/minilm-sst2-full/model/model.safetensors ]; then
  ./build/apps/finetune_prune experiments/minilm_sst2_full.json --overwrite
fi

run() {  # name, overrides...
  local name=$1; shift
  local dir="$out/$name"
  if [ -f "$dir/summary.json" ]; then echo "sweep: $name done"; return; fi
  local resume=()
  [ -f "$dir/checkpoints/LATEST" ] && resume=(--resume)
  echo "sweep: $name"
  ./build/apps/finetune_prune experiments/minilm_sst2_heads.json --set "output_dir=$dir" "$@" "${resume[@]}" \
    "${EXTRA[@]}" 2> >(tee "$dir.log" >&2)
}
mkdir -p "$out"
EXTRA=("${@}")
for t in $targets; do run "target-$t" --set stages.0.l0_penalty=0 --set "stages.0.target_heads=$t"; done
for l in $lambdas; do run "l0-$l" --set "stages.0.l0_penalty=$l"; done
for f in $ffn; do
  run "target-36-ffn-$f" --set stages.0.l0_penalty=0 --set stages.0.target_heads=36 --set stages.0.ffn_gates=true \
    --set "stages.0.ffn_l0_penalty=$f"
done
# Control: the same 500 distillation steps as mask_tune, no pruning, so the table can tell
# what the extra training gives from what pruning costs.
run control --set 'stages=[{"kind": "mask_tune", "epochs": 1, "lr": 3e-5, "batch_size": 32, "eval_every": 100,
  "log_every": 25}, {"kind": "export"}]'
# Latency of each model (the unpruned teacher too), beside its summary: three rounds over
# all models, interleaved so that drift on a shared machine hits every model alike; the
# table takes each model's median.
seq=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['flops']['seq_len'])" \
  "$(ls "$out"/*/summary.json | head -1)")
models=()
for d in runs/minilm-sst2-full "$out"/*/; do
  d=${d%/}
  [ -f "$d/model/model.safetensors" ] && models+=("$d") && rm -f "$d/latency.jsonl"
done
for round in 1 2 3; do
  for d in "${models[@]}"; do
    ./build/bench/bench_bert --model "$d/model" --batch 1 --seq "$seq" --iters 200 >> "$d/latency.jsonl"
    ./build/bench/bench_bert --model "$d/model" --batch 32 --seq "$seq" --iters 20 >> "$d/latency.jsonl"
  done
done
python3 scripts/collect_heads.py "$out" runs/minilm-sst2-full/summary.json | tee "$out/table.md"
