#!/usr/bin/env bash
# Installs what is needed, builds Lopper, and runs the default job: until finetune_prune
# lands, that is train_tiny (a 2-layer encoder learning to sort digit sequences, ~10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target train_tiny
./build/apps/train_tiny "$@"
