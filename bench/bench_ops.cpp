// GEMM and op throughput at BERT shapes: Lopper's matmul next to oneDNN and OpenBLAS
// called directly, on 1 thread and on all cores; and the row/elementwise ops of a
// training step. Results go to docs/benchmarks.md (scripts/bench.sh).
#include <benchmark/benchmark.h>
#include <dnnl.h>
#include <immintrin.h>
#include <omp.h>

#include "autograd/functions.h"
#include "core/ops.h"
#include "nn/attention.h"
#include "nn/bert.h"
#ifdef LOPPER_BENCH_OPENBLAS
#include <cblas.h>
#endif

using namespace lopper;

namespace {

constexpr int64_t kTokens = 4096;  // 32 sequences x 128 tokens

// (K, N) of the GEMMs in MiniLM (384 wide, FFN 1536) and BERT-base (768, FFN 3072).
const std::vector<std::pair<int64_t, int64_t>> kShapes = {
    {384, 384}, {384, 1152}, {384, 1536}, {1536, 384}, {768, 768}, {768, 3072}, {3072, 768}};

void set_threads(int n) {
  omp_set_num_threads(n);
#ifdef LOPPER_BENCH_OPENBLAS
  openblas_set_num_threads(n);
#endif
}

void gemm_counters(benchmark::State& st, int64_t m, int64_t k, int64_t n, const std::string& what = "") {
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel("M=" + std::to_string(m) + " K=" + std::to_string(k) + " N=" + std::to_string(n) + what);
}

// X (M, K) @ W (N, K)^T: the Linear layout, as the model calls it.
void BM_LopperMatmul(benchmark::State& st) {
  auto [k, n] = kShapes[st.range(0)];
  set_threads(static_cast<int>(st.range(1)));
  Generator g(1);
  Tensor x = normal({kTokens, k}, 0, 1, g), w = normal({n, k}, 0, 1, g);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(x, w, false, true));
  gemm_counters(st, kTokens, k, n);
}

void BM_OneDnnSgemm(benchmark::State& st) {
  auto [k, n] = kShapes[st.range(0)];
  set_threads(static_cast<int>(st.range(1)));
  std::vector<float> x(kTokens * k, 0.5f), w(n * k, 0.25f), y(kTokens * n);
  for (auto _ : st)
    dnnl_sgemm('N', 'T', kTokens, n, k, 1.0f, x.data(), k, w.data(), k, 0.0f, y.data(), n);
  gemm_counters(st, kTokens, k, n);
}

// The two other GEMMs a Linear layer (in K, out N) runs in a training step (its forward is
// BM_OneDnnSgemm), by dnnl_sgemm on the model's layouts: 0 the input gradient dX = dY W
// (M x N x K), 1 the weight gradient dW = dYᵀ X (N x M x K, the long reduction over tokens).
void BM_OneDnnSgemmBackward(benchmark::State& st) {
  auto [k, n] = kShapes[st.range(0)];
  const int64_t m = kTokens;
  const bool dw = st.range(2) == 1;
  set_threads(static_cast<int>(st.range(1)));
  std::vector<float> x(m * k, 0.5f), w(n * k, 0.25f), gy(m * n, 0.125f), out(std::max(m, n) * k);
  for (auto _ : st) {
    if (dw) dnnl_sgemm('T', 'N', n, k, m, 1.0f, gy.data(), n, x.data(), k, 0.0f, out.data(), k);
    else dnnl_sgemm('N', 'N', m, k, n, 1.0f, gy.data(), n, w.data(), k, 0.0f, out.data(), k);
  }
  gemm_counters(st, m, k, n, dw ? " dW" : " dX");
}

#ifdef LOPPER_BENCH_OPENBLAS
void BM_OpenBlasSgemm(benchmark::State& st) {
  auto [k, n] = kShapes[st.range(0)];
  set_threads(static_cast<int>(st.range(1)));
  std::vector<float> x(kTokens * k, 0.5f), w(n * k, 0.25f), y(kTokens * n);
  for (auto _ : st)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kTokens, n, k, 1.0f, x.data(), k, w.data(), k, 0.0f,
                y.data(), n);
  gemm_counters(st, kTokens, k, n);
}
#endif

void gemm_backward_args(benchmark::internal::Benchmark* b) {
  for (int64_t s : {0, 1, 2, 3})
    for (int64_t grad : {0, 1}) b->Args({s, omp_get_num_procs(), grad});
  b->ArgNames({"shape", "threads", "grad"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

void gemm_args(benchmark::internal::Benchmark* b) {
  int cores = omp_get_num_procs();
  for (int threads : {1, cores})
    for (int64_t s = 0; s < static_cast<int64_t>(kShapes.size()); ++s) b->Args({s, threads});
  b->ArgNames({"shape", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The machine's fp32 FMA peak: 12 independent FMA chains per thread, in registers, of the
// widest vectors the CPU has (AVX-512 where present, else AVX2: checked at run time).
__attribute__((target("avx512f"))) float fma_chains_512(int64_t iters) {
  __m512 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(0.001f * j);
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], m, a);
  for (int j = 1; j < 12; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}
__attribute__((target("avx2,fma"))) float fma_chains_256(int64_t iters) {
  __m256 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(0.001f * j);
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], m, a);
  for (int j = 1; j < 12; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc[0]);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}
bool has_avx512() { return __builtin_cpu_supports("avx512f"); }
int fma_lanes() { return has_avx512() ? 16 : 8; }
float fma_chains(int64_t iters) { return has_avx512() ? fma_chains_512(iters) : fma_chains_256(iters); }

void BM_FmaPeak(benchmark::State& st) {
  int threads = static_cast<int>(st.range(0));
  const int64_t iters = 1 << 22;
  for (auto _ : st) {
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += fma_chains(iters);
    benchmark::DoNotOptimize(sink);
  }
  st.counters["GFLOP/s"] = benchmark::Counter(threads * iters * 12.0 * fma_lanes() * 2 * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Attention scores for MiniLM: (32, 12, 128, 32) @ (32, 12, 128, 32)^T, strided heads.
void BM_LopperAttentionScores(benchmark::State& st) {
  set_threads(static_cast<int>(st.range(0)));
  Generator g(2);
  Tensor qkv = normal({32, 128, 3, 12, 32}, 0, 1, g);
  Tensor q = qkv.select(2, 0).permute({0, 2, 1, 3}), k = qkv.select(2, 1).permute({0, 2, 1, 3});
  for (auto _ : st) benchmark::DoNotOptimize(matmul(q, k, false, true));
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * 32 * 12 * 128 * 128 * 32 * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// One layer's attention in training, forward and backward, at MiniLM's 32 x 128: q, k, v
// split from three (B, T, H * D) leaves, a padding mask, dropout 0.1 of the probabilities;
// range(1) = 1 the fused op (core/fused_attention.h), 0 the unfused ops (what a probability
// hook that changes nothing makes nn's attention run).
void BM_AttentionTrainStep(benchmark::State& st) {
  set_threads(static_cast<int>(st.range(0)));
  const bool fused = st.range(1) != 0;
  const int64_t B = 32, T = 128, H = 12, D = 32;
  Generator g(6), drop(7);
  std::vector<Variable> x;  // the Q, K and V Linears' outputs
  for (int i = 0; i < 3; ++i) x.emplace_back(normal({B, T, H * D}, 0, 1, g), true);
  Tensor mask = nn::additive_attention_mask(Tensor::ones({B, T}, DType::i64), DType::f32);
  Tensor up = normal({B, T, H * D}, 0, 1, g);
  nn::ProbHook unchanged = [](const Variable& p, const Tensor&, const Tensor&) { return p; };
  for (auto _ : st) {
    Variable y = nn::scaled_dot_product_attention(nn::split_heads(x[0], H), nn::split_heads(x[1], H),
                                                  nn::split_heads(x[2], H), mask, {}, 0.1, &drop,
                                                  fused ? nn::ProbHook() : unchanged);
    nn::merge_heads(y).backward(up);
    for (Variable& v : x) v.zero_grad();
  }
  // The six per-head products (two forward, four backward), not the fused backward's
  // seventh (Q Kᵀ again).
  st.counters["GFLOP/s"] =
      benchmark::Counter(6 * 2.0 * B * H * T * T * D * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Elementwise and row ops over a (4096, 1536) or (32*12*128, 128) activation.
template <class F>
void run_op(benchmark::State& st, const Shape& shape, F f, double bytes_per_elem) {
  set_threads(static_cast<int>(st.range(0)));
  Generator g(3);
  Tensor x = normal(shape, 0, 1, g);
  for (auto _ : st) benchmark::DoNotOptimize(f(x));
  st.counters["GB/s"] = benchmark::Counter(bytes_per_elem * x.numel() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Gelu(benchmark::State& st) { run_op(st, {kTokens, 1536}, [](const Tensor& x) { return gelu(x); }, 8); }
void BM_GeluBackward(benchmark::State& st) {
  run_op(st, {kTokens, 1536}, [](const Tensor& x) { return unary_backward(UnaryOp::gelu, x, x); }, 12);
}
// gelu_new / gelu_pytorch_tanh (ALBERT's, GPT-2's hidden_act) and tanh itself (the pooler).
void BM_GeluTanh(benchmark::State& st) { run_op(st, {kTokens, 1536}, [](const Tensor& x) { return gelu_tanh(x); }, 8); }
void BM_GeluTanhBackward(benchmark::State& st) {
  run_op(st, {kTokens, 1536}, [](const Tensor& x) { return unary_backward(UnaryOp::gelu_tanh, x, x); }, 12);
}
void BM_Tanh(benchmark::State& st) { run_op(st, {kTokens, 1536}, [](const Tensor& x) { return tanh(x); }, 8); }
void BM_AddBias(benchmark::State& st) {
  Tensor b = Tensor::ones({1536});
  run_op(st, {kTokens, 1536}, [&](const Tensor& x) { return add(x, b); }, 8);
}
void BM_SoftmaxRows(benchmark::State& st) {
  run_op(st, {32 * 12 * 128, 128}, [](const Tensor& x) { return softmax(x); }, 8);
}
void BM_LayerNorm(benchmark::State& st) {
  Tensor w = Tensor::ones({384}), b = Tensor::zeros({384});
  run_op(st, {kTokens, 384}, [&](const Tensor& x) { return layer_norm(x, w, b, 1e-12).y; }, 8);
}
void BM_SumOverTokens(benchmark::State& st) {  // bias gradient
  run_op(st, {kTokens, 1536}, [](const Tensor& x) { return sum(x, 0); }, 4);
}
void BM_Dropout(benchmark::State& st) {
  Generator g(4);
  uint64_t off = 0;
  run_op(st, {kTokens, 1536}, [&](const Tensor& x) { return dropout(x, 0.1, g, &off); }, 8);
}

void thread_args(benchmark::internal::Benchmark* b) {
  b->Arg(1)->Arg(omp_get_num_procs())->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
}
void attention_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"threads", "fused"})->Unit(benchmark::kMillisecond)->UseRealTime();
  for (int fused : {0, 1}) b->Args({omp_get_num_procs(), fused});
}

}  // namespace

BENCHMARK(BM_FmaPeak)->Apply(thread_args);
BENCHMARK(BM_LopperMatmul)->Apply(gemm_args);
BENCHMARK(BM_OneDnnSgemm)->Apply(gemm_args);
BENCHMARK(BM_OneDnnSgemmBackward)->Apply(gemm_backward_args);
#ifdef LOPPER_BENCH_OPENBLAS
BENCHMARK(BM_OpenBlasSgemm)->Apply(gemm_args);
#endif
BENCHMARK(BM_LopperAttentionScores)->Apply(thread_args);
BENCHMARK(BM_AttentionTrainStep)->Apply(attention_args);
BENCHMARK(BM_Gelu)->Apply(thread_args);
BENCHMARK(BM_GeluBackward)->Apply(thread_args);
BENCHMARK(BM_GeluTanh)->Apply(thread_args);
BENCHMARK(BM_GeluTanhBackward)->Apply(thread_args);
BENCHMARK(BM_Tanh)->Apply(thread_args);
BENCHMARK(BM_AddBias)->Apply(thread_args);
BENCHMARK(BM_SoftmaxRows)->Apply(thread_args);
BENCHMARK(BM_LayerNorm)->Apply(thread_args);
BENCHMARK(BM_SumOverTokens)->Apply(thread_args);
BENCHMARK(BM_Dropout)->Apply(thread_args);

BENCHMARK_MAIN();
