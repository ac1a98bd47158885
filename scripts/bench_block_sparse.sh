#!/usr/bin/env bash
# Builds and runs bench_block_sparse (block-sparse matmul next to the dense oneDNN one),
# five repetitions each, and prints the Markdown table of docs/benchmarks.md: medians and
# the speed-up over dense against the issue's aim of 0.8 / density. Raw JSON:
# build/bench_block_sparse.json. Extra arguments go to the benchmark binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target bench_block_sparse
./build/bench/bench_block_sparse --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_out=build/bench_block_sparse.json --benchmark_out_format=json "$@" >/dev/null
python3 - build/bench_block_sparse.json <<'PY'
import json, re, sys
runs = json.load(open(sys.argv[1]))["benchmarks"]
med = {}
for r in runs:
    if r.get("aggregate_name") != "median":
        continue
    a = dict(re.findall(r"(\w+):(\d+)", r["run_name"]))
    med[(r["run_name"].split("/")[0], int(a["M"]), int(a["shape"]), int(a["density"]), int(a["block"]))] = r["real_time"]
shapes = {0: "768 -> 768", 1: "768 -> 3072", 2: "3072 -> 768"}
print("| M | K -> N | block | dense oneDNN (us) | density | block-sparse (us) | speed-up | aim 0.8/d |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for block in (32, 16):
    for m in (25, 4096):
        for s in range(3):
            dense = med.get(("BM_DenseMatmul", m, s, 100, 32))
            for d in (100, 50, 25, 10):
                t = med.get(("BM_BlockSparseMatmul", m, s, d, block))
                if dense is None or t is None:
                    continue
                print(f"| {m} | {shapes[s]} | {block}x{block} | {dense:.0f} | {d}% | {t:.1f} | {dense / t:.2f}x | {0.8 * 100 / d:.1f}x |")
PY
