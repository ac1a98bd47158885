#!/usr/bin/env bash
# bench_bert (MiniLM-L6; forward and training step at batch 32 x 128 unless MODES and
# SHAPES say otherwise) built from two commits and run alternately in one script on this machine, so that both see the same load and
# clock: the check that a change made nothing slower. Builds each commit's bench_bert in
# a git worktree under $WORK (default /var/tmp/lopper-bench) and prints every run and the
# median of each.
#
#   scripts/bench_before_after.sh BEFORE [AFTER=HEAD] [ROUNDS=5]
#   MODES=forward SHAPES="32x128 32x25 1x25" scripts/bench_before_after.sh HEAD~1
#   CONFIG=my_config.json MODES=train scripts/bench_before_after.sh HEAD~1   # random weights of that shape
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
before=$(git -C "$repo" rev-parse --short "${1:?usage: bench_before_after.sh BEFORE [AFTER] [ROUNDS]}")
after=$(git -C "$repo" rev-parse --short "${2:-HEAD}")
rounds=${3:-5}
modes=${MODES:-forward train}
shapes=${SHAPES:-32x128}
work=${WORK:-/var/tmp/lopper-bench}
model="$repo/models/all-MiniLM-L6-v2"
src=(--model "$model")
if [ -n "${CONFIG:-}" ]; then
  src=(--config "$(realpath "$CONFIG")")
else
  [ -f "$model/config.json" ] || "$repo/scripts/fetch_model.sh"
fi
mkdir -p "$work"
for c in "$before" "$after"; do
  if [ ! -x "$work/$c/build/bench/bench_bert" ]; then
    rm -rf "$work/$c"
    git -C "$repo" worktree prune
    git -C "$repo" worktree add -f --detach "$work/$c" "$c" > /dev/null
    cmake -S "$work/$c" -B "$work/$c/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPPER_CUDA=OFF -DLOPPER_TESTS=OFF > /dev/null
    cmake --build "$work/$c/build" -j "$(nproc)" --target bench_bert > /dev/null
  fi
done
echo "# bench_bert $before (before) vs $after (after), $rounds alternating rounds, $(nproc) threads, $modes at $shapes, ${src[*]}"
for r in $(seq 1 "$rounds"); do
  for mode in $modes; do
    for shape in $shapes; do
      b=${shape%x*} s=${shape#*x} n=5
      [ "$b" = 1 ] && n=100  # batch 1 takes milliseconds: more iterations
      for c in "$before" "$after"; do
        line=$("$work/$c/build/bench/bench_bert" "${src[@]}" --batch "$b" --seq "$s" --iters "$n" --mode "$mode")
        echo "{\"round\": $r, \"commit\": \"$c\", $(echo "$line" | sed 's/^{//')"
      done
    done
  done
done | tee "$work/runs.jsonl"
python3 - "$work/runs.jsonl" "$before" "$after" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
for key in sorted({(r["mode"], r["batch"], r["seq"]) for r in runs}, key=lambda k: (k[0], -k[1] * k[2])):
    mode = f"{key[0]} {key[1]}x{key[2]}"
    ms = {c: [1000 * r["seconds_per_step"] for r in runs if r["commit"] == c and (r["mode"], r["batch"], r["seq"]) == key]
          for c in sys.argv[2:]}
    b, a = (statistics.median(ms[c]) for c in sys.argv[2:])
    spread = lambda v: (max(v) - min(v)) / statistics.median(v) * 100
    # Each round runs the two side by side: the ratio within a round cancels slow drift.
    ratios = [x / y for x, y in zip(ms[sys.argv[3]], ms[sys.argv[2]])]
    print(f"{mode:16s} median ms per step: before {b:.1f} (spread {spread(ms[sys.argv[2]]):.1f}%)  "
          f"after {a:.1f} (spread {spread(ms[sys.argv[3]]):.1f}%)  after/before: of medians {a / b:.3f}, "
          f"median of per-round ratios {statistics.median(ratios):.3f} (range {min(ratios):.2f}-{max(ratios):.2f})")
PY
