#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: every CUDA op against the CPU and the whole test suite,
# Lopper's training step next to PyTorch's on the same GPU, and the quickstart experiment
# with `device: cuda`. Logs and JSON lines go to $LOG_DIR (default runs/gpu-check); the last
# lines printed are a summary. Used for docs/benchmarks.md and docs/results.md.
#
#   scripts/gpu_check.sh [tests] [bench] [quickstart]      (default: all three)
#
# BUILD: a CUDA build (default build-cuda; configured and built here with -DLOPPER_CUDA=ON
#   if it does not exist). scripts/gpu_bundle.sh makes one elsewhere for a GPU machine that
#   lacks Debian's packages.
# PY: a Python with torch and transformers (default python3). ITERS: timed steps (20).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build-cuda}"
PY="${PY:-python3}"
ITERS="${ITERS:-20}"
LOG_DIR="${LOG_DIR:-runs/gpu-check}"
phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(tests bench quickstart)
mkdir -p "$LOG_DIR"
failed=0
note() { echo "== $*" | tee -a "$LOG_DIR/summary.txt"; }

if [ ! -x "$BUILD/apps/finetune_prune" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPPER_CUDA=ON || exit 1
  cmake --build "$BUILD" -j "$(nproc)" || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$LOG_DIR/gpu.txt"

for phase in "${phases[@]}"; do
  case "$phase" in
  tests)
    # CudaOps: every op on the device against the CPU backend; then everything else.
    "$BUILD/tests/test_cuda" 2>&1 | tee "$LOG_DIR/test_cuda.log"
    rc=$?  # pipefail: test_cuda's status
    note "tests/cuda: exit $rc, $(grep -c '^\[       OK' "$LOG_DIR/test_cuda.log") ok," \
      "$(grep -c '^\[  FAILED  \].*(' "$LOG_DIR/test_cuda.log") failed, $(grep -c '^\[  SKIPPED' "$LOG_DIR/test_cuda.log") skipped"
    [ $rc -eq 0 ] || failed=1
    ctest --test-dir "$BUILD" -j "$(nproc)" --output-on-failure >"$LOG_DIR/ctest.log" 2>&1
    rc=$?
    note "whole suite (ctest): exit $rc, $(grep -E 'tests passed|tests failed' "$LOG_DIR/ctest.log")"
    [ $rc -eq 0 ] || failed=1
    ;;
  bench)
    # A training step (forward, backward, clip, AdamW) at batch 32 x 128 on random ids, MiniLM
    # and BERT-base shapes: Lopper f32 and TF32; PyTorch f32 (SDPA and eager attention), TF32, bf16.
    out="$LOG_DIR/bench.jsonl"
    : >"$out"
    for cfg in minilm-l6 bert-base; do
      for mode in train forward; do
        [ "$mode" = forward ] && [ "$cfg" = bert-base ] && continue
        c="--config bench/configs/$cfg.json --device cuda --mode $mode --batch 32 --seq 128 --iters $ITERS"
        "$BUILD/bench/bench_bert" $c | tee -a "$out" || failed=1
        "$BUILD/bench/bench_bert" $c --tf32 | tee -a "$out" || failed=1
        "$PY" bench/torch_bert.py $c | tee -a "$out" || failed=1
        "$PY" bench/torch_bert.py $c --attn eager | tee -a "$out" || failed=1
        "$PY" bench/torch_bert.py $c --tf32 | tee -a "$out" || failed=1
        "$PY" bench/torch_bert.py $c --bf16 | tee -a "$out" || failed=1
      done
    done
    # Where Lopper's MiniLM step spends its device time, op by op (each op synchronized).
    LOPPER_PROFILE=1 "$BUILD/bench/bench_bert" --config bench/configs/minilm-l6.json --device cuda --mode train \
      --iters 5 >/dev/null 2>"$LOG_DIR/profile.txt"
    head -n 16 "$LOG_DIR/profile.txt"
    "$PY" - "$out" <<'PY' | tee -a "$LOG_DIR/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'impl':<22}{'hidden':>7}{'mode':>8}{'prec':>6}{'attn':>6}{'ms/step':>9}{'sent/s':>9}")
for r in rows:
    prec = "bf16" if r.get("bf16") else "tf32" if r.get("tf32") else "f32"
    print(f"{r['impl'][:21]:<22}{r['hidden']:>7}{r['mode']:>8}{prec:>6}{r.get('attn', '-'):>6}"
          f"{1000 * r['seconds_per_step']:>9.1f}{r['sentences_per_s']:>9.0f}")
PY
    ;;
  quickstart)
    # The default experiment with every tensor on the GPU; compare with the CPU's 87.27% /
    # 86.70% / 31 heads (docs/results.md).
    "$BUILD/apps/finetune_prune" "$PWD/experiments/minilm_sst2.json" --overwrite --set device=cuda \
      --set output_dir="$PWD/runs/minilm-sst2-cuda" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' >"$LOG_DIR/quickstart.log"
    rc=${PIPESTATUS[0]}
    tail -n 30 "$LOG_DIR/quickstart.log"
    cp runs/minilm-sst2-cuda/summary.json "$LOG_DIR/quickstart_summary.json" 2>/dev/null
    cp runs/minilm-sst2-cuda/metrics.jsonl "$LOG_DIR/quickstart_metrics.jsonl" 2>/dev/null
    note "quickstart device=cuda: exit $rc"
    [ $rc -eq 0 ] || failed=1
    ;;
  *) echo "unknown phase '$phase' (expected tests, bench or quickstart)" >&2; exit 2 ;;
  esac
done
cat "$LOG_DIR/summary.txt"
exit $failed
