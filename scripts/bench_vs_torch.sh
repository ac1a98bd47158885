#!/usr/bin/env bash
# BERT throughput, Lopper next to PyTorch and ONNX Runtime, in one run on this machine:
# all-MiniLM-L6-v2 with a 2-label head, a training step at batch 32 x 128 and forwards at
# 32 x 128, 32 x 25 and 1 x 25 (the shapes of issue 19), at every thread count given
# (default: all cores). ROUNDS interleaved rounds (Lopper, PyTorch, ONNX Runtime, again...),
# so a VM's drifting speed hits each alike; take the median per row. ONNX Runtime runs the
# model torch.onnx exported (bench/ort_bert.py; forward only). Needs the fixture venv with
# onnxruntime (tests/fixtures/make_fixtures.sh creates it; PyTorch is gigabytes, so this is
# never part of CI). Prints JSON lines; scripts/bench_table.py makes the markdown table.
#
#   scripts/bench_vs_torch.sh                      # every shape, 3 rounds
#   SHAPES="1x25" MODES=forward ROUNDS=5 scripts/bench_vs_torch.sh
#   CONFIG=my_config.json MODES=train scripts/bench_vs_torch.sh   # random weights of that shape
#
# CONFIG: a BERT config.json in place of MiniLM (both get random weights of its shape; no
# ONNX Runtime rows, which need the exported MiniLM).
set -euo pipefail
if [ -n "${CONFIG:-}" ]; then CONFIG=$(realpath "$CONFIG"); fi
cd "$(dirname "$0")/.."
threads="${THREADS:-$(nproc)}"
iters="${ITERS:-5}"
rounds="${ROUNDS:-3}"
modes="${MODES:-forward train}"
shapes="${SHAPES:-32x128 32x25 1x25}"
train_shapes="${TRAIN_SHAPES:-32x128}"
scripts/fetch_model.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target bench_bert >/dev/null
py=tests/fixtures/.venv/bin/python
[ -x "$py" ] || { echo "no $py: run tests/fixtures/make_fixtures.sh first" >&2; exit 1; }
onnx=build/bench_models/minilm-l6-cls2.onnx
model=models/all-MiniLM-L6-v2
src=(--model "$model")
[ -n "${CONFIG:-}" ] && src=(--config "$CONFIG")
for r in $(seq "$rounds"); do
  for mode in $modes; do
    list=$shapes
    [ "$mode" = train ] && list=$train_shapes
    for shape in $list; do
      b=${shape%x*} s=${shape#*x}
      n=$iters
      [ "$b" = 1 ] && n=$((iters * 20))  # batch 1 takes milliseconds: more iterations
      for t in $threads; do
        common=(--batch "$b" --seq "$s" --threads "$t" --iters "$n")
        OMP_NUM_THREADS=$t ./build/bench/bench_bert "${src[@]}" --mode "$mode" "${common[@]}" | sed "s/^{/{\"round\": $r, /"
        "$py" bench/torch_bert.py "${src[@]}" --mode "$mode" "${common[@]}" | sed "s/^{/{\"round\": $r, /"
        [ "$mode" = forward ] && [ -z "${CONFIG:-}" ] && "$py" bench/ort_bert.py --model "$model" --onnx "$onnx" "${common[@]}" |
          sed "s/^{/{\"round\": $r, /"
      done
    done
  done
done
