// Pruned attention for inference (core/sparse_attention.h) next to the dense product Lopper
// runs otherwise, at 12 heads of 64 (BERT-base), batch 1, 128, 256 and 512 tokens, keeping
// 50%, 25% and 10% of each row (top k by score, or a threshold set to keep about as many).
// Two views: P x V alone (what the kernel replaces) and the whole attention (scores and
// softmax stay dense). Results and speed-ups go to docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/ops.h"
#include "core/sparse_attention.h"

using namespace lopper;

namespace {

constexpr int64_t kHeads = 12, kDim = 64;
const double kKeep[] = {1.0, 0.5, 0.25, 0.1};  // index 0: dense

struct Inputs {
  Tensor q, k, v, scores, probs, valid;
  double threshold[4] = {0, 0, 0, 0};  // keeps about kKeep[i] of the entries
};

const Inputs& inputs(int64_t t) {
  static std::map<int64_t, Inputs> cache;
  auto it = cache.find(t);
  if (it != cache.end()) return it->second;
  Inputs in;
  Generator g(3);
  in.q = normal({1, kHeads, t, kDim}, 0, 1, g);
  in.k = normal({1, kHeads, t, kDim}, 0, 1, g);
  in.v = normal({1, kHeads, t, kDim}, 0, 1, g);
  in.scores = scale(matmul(in.q, in.k, false, true), 1.0 / 8);
  in.probs = softmax(in.scores);
  in.valid = Tensor::from_vector<int64_t>({t}, {1});
  std::vector<float> p = in.probs.to_vector<float>();
  std::sort(p.begin(), p.end(), std::greater<float>());
  for (int i = 1; i < 4; ++i) in.threshold[i] = p[static_cast<size_t>(kKeep[i] * static_cast<double>(p.size())) - 1];
  return cache.emplace(t, std::move(in)).first->second;
}

SparseAttentionRule rule_for(const Inputs& in, int64_t which, bool threshold) {
  SparseAttentionRule r;
  if (threshold) r.threshold = in.threshold[which];
  else r.keep = kKeep[which];
  r.prune_first_row = true;  // every row pruned alike
  return r;
}

void label(benchmark::State& st, int64_t t, int64_t which, const char* how) {
  st.SetLabel("T=" + std::to_string(t) + " keep " + std::to_string(static_cast<int>(100 * kKeep[which])) + "% " + how);
}

// Args: T, keep index (0: dense), 0 top-k / 1 threshold.
void BM_ProbsTimesV(benchmark::State& st) {
  const int64_t t = st.range(0), which = st.range(1);
  const Inputs& in = inputs(t);
  for (auto _ : st) {
    Tensor o = which == 0 ? matmul(in.probs, in.v) : sparse_probs_times_v(in.probs, in.scores, in.v, in.valid,
                                                                           rule_for(in, which, st.range(2) == 1));
    benchmark::DoNotOptimize(o.data<float>());
  }
  label(st, t, which, which == 0 ? "dense" : st.range(2) ? "threshold" : "top-k");
}

void BM_Attention(benchmark::State& st) {
  const int64_t t = st.range(0), which = st.range(1);
  const Inputs& in = inputs(t);
  for (auto _ : st) {
    Tensor s = scale(matmul(in.q, in.k, false, true), 1.0 / 8);
    Tensor p = softmax(s);
    Tensor o = which == 0 ? matmul(p, in.v) : sparse_probs_times_v(p, s, in.v, in.valid, rule_for(in, which, st.range(2) == 1));
    benchmark::DoNotOptimize(o.data<float>());
  }
  label(st, t, which, which == 0 ? "dense" : st.range(2) ? "threshold" : "top-k");
}

void args(benchmark::internal::Benchmark* b) {
  for (int64_t t : {128, 256, 512}) {
    b->Args({t, 0, 0});
    for (int64_t w = 1; w < 4; ++w)
      for (int64_t thr : {0, 1}) b->Args({t, w, thr});
  }
}

}  // namespace

BENCHMARK(BM_ProbsTimesV)->Apply(args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Attention)->Apply(args)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
