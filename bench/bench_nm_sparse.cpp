// The N:M-sparse matmul (core/nm_sparse.h) next to the dense oneDNN matmul Lopper uses
// otherwise, at all-MiniLM-L6-v2's Linear shapes (384 -> 384, 384 -> 1536, 1536 -> 384) and
// BERT-base's FFN (768 -> 3072), for M = 1 row of x (a GEMV: weight bytes bound it), 25 (one
// SST-2 sentence) and 800 (32 of them), at 2:4, 4:8, 16:32 (50%), 1:4 and 8:32 (25%).
// Results and the speed-up over dense go to docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include "core/nm_sparse.h"
#include "core/ops.h"

using namespace lopper;

namespace {

// (in, out).
const std::vector<std::pair<int64_t, int64_t>> kShapes = {{384, 384}, {384, 1536}, {1536, 384}, {768, 3072}};
const std::vector<std::pair<int64_t, int64_t>> kPatterns = {{2, 4}, {4, 8}, {16, 32}, {1, 4}, {8, 32}};

// A (out, in) weight holding exactly n of every m (the first n of a seeded rotation).
Tensor nm_weight(int64_t out, int64_t in, int64_t n, int64_t m) {
  Generator g(5);
  std::vector<float> w = normal({out, in}, 0.0, 0.05, g).to_vector<float>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; c += m) {
      int64_t start = static_cast<int64_t>(g.next_below(static_cast<uint64_t>(m)));
      for (int64_t j = 0; j < m; ++j)
        if ((j - start + m) % m >= n) w[r * in + c + j] = 0.0f;
    }
  return Tensor::from_vector(w, {out, in});
}

void label(benchmark::State& st, int64_t rows, int64_t in, int64_t out, int64_t n, int64_t m) {
  st.SetLabel("M=" + std::to_string(rows) + " K=" + std::to_string(in) + " N=" + std::to_string(out) + " " +
              std::to_string(n) + ":" + std::to_string(m));
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * in * out * static_cast<double>(n) / m * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Args: M, shape index, pattern index (dense: the pattern's zeros in place, read as dense).
void BM_Dense(benchmark::State& st) {
  auto [in, out] = kShapes[st.range(1)];
  Generator g(1);
  Tensor x = normal({st.range(0), in}, 0, 1, g), w = nm_weight(out, in, 1, 1);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(x, w, false, true));
  label(st, st.range(0), in, out, 1, 1);
}

void BM_NmSparse(benchmark::State& st) {
  auto [in, out] = kShapes[st.range(1)];
  auto [n, m] = kPatterns[st.range(2)];
  Generator g(1);
  Tensor x = normal({st.range(0), in}, 0, 1, g);
  NmSparseMatrix w = to_nm_sparse(nm_weight(out, in, n, m), n, m);
  for (auto _ : st) benchmark::DoNotOptimize(nm_sparse_linear(x, w, Tensor()));
  label(st, st.range(0), in, out, n, m);
}

void dense_args(benchmark::internal::Benchmark* b) {
  for (int64_t rows : {1, 25, 800})
    for (int64_t s = 0; s < static_cast<int64_t>(kShapes.size()); ++s) b->Args({rows, s, 0});
  b->ArgNames({"M", "shape", "pattern"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void sparse_args(benchmark::internal::Benchmark* b) {
  for (int64_t rows : {1, 25, 800})
    for (int64_t s = 0; s < static_cast<int64_t>(kShapes.size()); ++s)
      for (int64_t p = 0; p < static_cast<int64_t>(kPatterns.size()); ++p) b->Args({rows, s, p});
  b->ArgNames({"M", "shape", "pattern"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_Dense)->Apply(dense_args);
BENCHMARK(BM_NmSparse)->Apply(sparse_args);
BENCHMARK_MAIN();
