// The block-sparse matmul (core/block_sparse.h) next to the dense oneDNN matmul Lopper
// uses otherwise, at BERT-base's Linear shapes, for M = 25 tokens (one sentence) and 4096
// (32 x 128), 32x32 and 16x16 blocks kept at 50%, 25% and 10%; and the ways a dense Linear
// runs at all-MiniLM-L6-v2's shapes (BM_DenseWays). Results and the speed-up
// over dense go to docs/benchmarks.md (scripts/bench.sh).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "core/block_sparse.h"
#include "core/ops.h"
#include "core/panel_linear.h"

using namespace lopper;

namespace {

// (in, out) of BERT-base's Linears: attention projections, FFN intermediate, FFN output.
const std::vector<std::pair<int64_t, int64_t>> kShapes = {{768, 768}, {768, 3072}, {3072, 768}};

// A (out, in) weight with exactly round(density x blocks) of its (b, b) blocks kept,
// chosen by a seeded shuffle.
Tensor block_weight(int64_t out, int64_t in, int64_t b, double density) {
  Generator g(5);
  Tensor w = normal({out, in}, 0.0, 0.05, g);
  int64_t n = (out / b) * (in / b), keep = std::llround(density * static_cast<double>(n));
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(7);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<float> mask(n, 0.0f);
  for (int64_t i = 0; i < keep; ++i) mask[order[i]] = 1.0f;
  Tensor m = Tensor::from_vector(mask, {out / b, 1, in / b, 1});
  return mul(w.view({out / b, b, in / b, b}), m).contiguous().view({out, in});
}

void label(benchmark::State& st, int64_t m, int64_t in, int64_t out, double density) {
  st.SetLabel("M=" + std::to_string(m) + " K=" + std::to_string(in) + " N=" + std::to_string(out) +
              " density=" + std::to_string(static_cast<int>(density * 100 + 0.5)) + "%");
  // Useful FLOPs: the kept weights only, so dense and sparse rows compare as throughput.
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * in * out * density * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: M, shape index, density in percent, block size.
void BM_DenseMatmul(benchmark::State& st) {
  auto [in, out] = kShapes[st.range(1)];
  int64_t m = st.range(0);
  Generator g(1);
  Tensor x = normal({m, in}, 0, 1, g), w = block_weight(out, in, st.range(3), st.range(2) / 100.0);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(x, w, false, true));
  label(st, m, in, out, 1.0);
}

void BM_BlockSparseMatmul(benchmark::State& st) {
  auto [in, out] = kShapes[st.range(1)];
  int64_t m = st.range(0);
  double density = st.range(2) / 100.0;
  Generator g(1);
  Tensor x = normal({m, in}, 0, 1, g);
  BlockSparseMatrix w = to_block_sparse(block_weight(out, in, st.range(3), density), st.range(3), st.range(3));
  for (auto _ : st) benchmark::DoNotOptimize(block_sparse_linear(x, w, Tensor()));
  label(st, m, in, out, density);
}

void dense_args(benchmark::internal::Benchmark* b) {
  for (int64_t m : {25, 4096})
    for (int64_t s = 0; s < 3; ++s) b->Args({m, s, 100, 32});
  b->ArgNames({"M", "shape", "density", "block"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void sparse_args(benchmark::internal::Benchmark* b) {
  for (int64_t block : {32, 16})
    for (int64_t m : {25, 4096})
      for (int64_t s = 0; s < 3; ++s)
        for (int64_t d : {100, 50, 25, 10}) b->Args({m, s, d, block});
  b->ArgNames({"M", "shape", "density", "block"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// Dense weights packed (every block kept) against oneDNN at all-MiniLM-L6-v2's Linears for
// short inputs: where nn::BlockSparseOptions::dense_max_rows should cut over, and with which
// block shape. Args: M, in, out, block rows, block cols (0: oneDNN's matmul).
void BM_PackedDense(benchmark::State& st) {
  int64_t m = st.range(0), in = st.range(1), out = st.range(2), br = st.range(3), bc = st.range(4);
  Generator g(1);
  Tensor x = normal({m, in}, 0, 1, g), w = normal({out, in}, 0, 0.05, g);
  if (br == 0) {
    for (auto _ : st) benchmark::DoNotOptimize(matmul(x, w, false, true));
  } else {
    BlockSparseMatrix p = to_block_sparse(w, br, bc);
    for (auto _ : st) benchmark::DoNotOptimize(block_sparse_linear(x, p, Tensor()));
  }
  label(st, m, in, out, 1.0);
}

void packed_args(benchmark::internal::Benchmark* b) {
  for (int64_t m : {25, 64, 128})
    for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{{384, 384}, {384, 1536}, {1536, 384}})
      for (auto [br, bc] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {32, 32}, {64, 32}, {32, 64}, {64, 64}, {16, 64}})
        b->Args({m, in, out, br, bc});
  b->ArgNames({"M", "in", "out", "br", "bc"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// The three ways a dense Linear can run for inference, at all-MiniLM-L6-v2's shapes:
// oneDNN's sgemm, the libxsmm kernel over 32x32 blocks (all kept), and the panel-packed
// GEMM (core/panel_linear.h). Args: M, in, out, way (0, 1, 2 in that order).
void BM_DenseWays(benchmark::State& st) {
  int64_t m = st.range(0), in = st.range(1), out = st.range(2), way = st.range(3);
  Generator g(1);
  Tensor x = normal({m, in}, 0, 1, g), w = normal({out, in}, 0, 0.05, g);
  if (way == 0) {
    for (auto _ : st) benchmark::DoNotOptimize(matmul(x, w, false, true));
  } else if (way == 1) {
    BlockSparseMatrix p = to_block_sparse(w, 32, 32);
    for (auto _ : st) benchmark::DoNotOptimize(block_sparse_linear(x, p, Tensor()));
  } else {
    if (!panel_linear_built()) return st.SkipWithError("built without the AVX2 tile");
    PanelMatrix p = to_panels(w);
    for (auto _ : st) benchmark::DoNotOptimize(panel_linear(x, p, Tensor()));
  }
  label(st, m, in, out, 1.0);
}

void ways_args(benchmark::internal::Benchmark* b) {
  for (int64_t m : {25, 64, 128, 800, 4096})
    for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{{384, 384}, {384, 1536}, {1536, 384}})
      for (int64_t way : {0, 1, 2}) b->Args({m, in, out, way});
  b->ArgNames({"M", "in", "out", "way"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_DenseMatmul)->Apply(dense_args);
BENCHMARK(BM_BlockSparseMatmul)->Apply(sparse_args);
BENCHMARK(BM_PackedDense)->Apply(packed_args);
BENCHMARK(BM_DenseWays)->Apply(ways_args);

BENCHMARK_MAIN();
