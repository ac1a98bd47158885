#!/usr/bin/env bash
# Builds and runs the GEMM/op benchmarks; writes the raw JSON next to the build.
# The tables in docs/benchmarks.md are taken from this output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target bench_ops
./build/bench/bench_ops --benchmark_min_time=0.5 --benchmark_out=build/bench_ops.json \
  --benchmark_out_format=json "$@"
