#!/usr/bin/env bash
# BERT throughput, Lopper next to PyTorch, in one run on this machine: MiniLM-L6 at batch
# 32 x sequence 128, forward and a training step, at every thread count given (default:
# all cores). Needs the fixture venv (tests/fixtures/make_fixtures.sh creates it; PyTorch
# is gigabytes, so this is never part of CI). Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-$(nproc)}"
iters="${ITERS:-5}"
scripts/fetch_model.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target bench_bert >/dev/null
py=tests/fixtures/.venv/bin/python
[ -x "$py" ] || { echo "no $py: run tests/fixtures/make_fixtures.sh first" >&2; exit 1; }
for mode in ${MODES:-forward train}; do
  for t in $threads; do
    OMP_NUM_THREADS=$t ./build/bench/bench_bert --model models/all-MiniLM-L6-v2 --mode "$mode" --threads "$t" --iters "$iters"
    "$py" bench/torch_bert.py --model models/all-MiniLM-L6-v2 --mode "$mode" --threads "$t" --iters "$iters"
  done
done
