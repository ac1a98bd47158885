// Lopper's float exp, erf (in GELU) and tanh on the CPU next to the alternatives: SLEEF's
// vectorized functions (libsleef-dev, what PyTorch's CPU path calls) and libm. Each
// benchmark runs one function over 2^20 floats on one thread, 8 lanes at a time where it
// vectorizes, and reports elements per second with the largest and the mean error in ulp
// and the largest absolute error against libm in double over the same inputs.
// core/kernels/math.h keeps whichever is as accurate and faster; docs/benchmarks.md "SLEEF"
// has the numbers.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <sleef.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/kernels/math.h"

namespace {

using lopper::kernels::k_erf;
using lopper::kernels::k_exp;
using lopper::kernels::k_tanh;

constexpr int64_t kN = 1 << 20;

std::vector<float> inputs(float lo, float hi) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> x(kN);
  for (float& v : x) v = u(rng);
  return x;
}

// Error in units of the last place of the exact value, rounded to float.
double ulp_error(float got, double exact) {
  int e = 0;
  std::frexp(static_cast<float>(exact), &e);
  return std::fabs(got - exact) / std::ldexp(1.0, std::max(e, -125) - 24);
}

double gelu_exact(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
constexpr float kRsqrt2 = 0.70710678118654752440f;

// f(x, y): y = the function over all of x. exact: the double reference.
template <class F, class R>
void run(benchmark::State& st, float lo, float hi, F f, R exact) {
  std::vector<float> x = inputs(lo, hi), y(kN);
  for (auto _ : st) {
    f(x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  double worst = 0, sum = 0, worst_abs = 0;
  for (int64_t i = 0; i < kN; ++i) {
    double want = exact(static_cast<double>(x[i]));
    double e = ulp_error(y[i], want);
    worst = std::max(worst, e);
    sum += e;
    worst_abs = std::max(worst_abs, std::fabs(y[i] - want));
  }
  st.SetItemsProcessed(st.iterations() * kN);
  st.counters["max_ulp"] = worst;
  st.counters["mean_ulp"] = sum / kN;
  st.counters["max_abs"] = worst_abs;
}

// The two kinds of loop measured. Lopper's functions (core/kernels/math.h) are inlined into
// an `omp simd` loop, as in the backends; SLEEF's vector functions are called on 8 floats at
// a time (kN is a multiple of 8); libm's tanhf is called per float.
template <class S>
auto simd_loop(S f) {
  return [f](const float* x, float* y) {
#pragma omp simd
    for (int64_t i = 0; i < kN; ++i) y[i] = f(x[i]);
  };
}
template <class V>
auto by_8(V f) {
  return [f](const float* x, float* y) {
    for (int64_t i = 0; i < kN; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
  };
}
double exp_exact(double x) { return std::exp(x); }
double tanh_exact(double x) { return std::tanh(x); }

void BM_ExpLopper(benchmark::State& st) { run(st, -87, 88, simd_loop([](float v) { return k_exp(v); }), exp_exact); }
void BM_ExpSleefU10(benchmark::State& st) { run(st, -87, 88, by_8(Sleef_expf8_u10avx2), exp_exact); }
// GELU over [-3, 3], where BERT's pre-activations lie: below about -3, 1 + erf(x / sqrt 2)
// cancels in float whichever erf is used, and errors in ulp of the tiny result mean nothing.
void BM_GeluLopper(benchmark::State& st) {
  run(st, -3, 3, simd_loop([](float v) { return 0.5f * v * (1.0f + k_erf(v * kRsqrt2)); }), gelu_exact);
}
void BM_GeluSleefErfU10(benchmark::State& st) {
  run(st, -3, 3, by_8([](__m256 v) {
    __m256 e = Sleef_erff8_u10avx2(_mm256_mul_ps(v, _mm256_set1_ps(kRsqrt2)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  }), gelu_exact);
}
// Lopper's tanh is SLEEF's u10 through the declare-simd entry points (core/cpu/vector_math).
void BM_TanhLopper(benchmark::State& st) { run(st, -10, 10, simd_loop([](float v) { return k_tanh(v); }), tanh_exact); }
void BM_TanhLibm(benchmark::State& st) {
  run(st, -10, 10, [](const float* x, float* y) {
    for (int64_t i = 0; i < kN; ++i) y[i] = tanhf(x[i]);
  }, tanh_exact);
}
void BM_TanhSleefU35(benchmark::State& st) { run(st, -10, 10, by_8(Sleef_tanhf8_u35avx2), tanh_exact); }

}  // namespace

BENCHMARK(BM_ExpLopper)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ExpSleefU10)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GeluLopper)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GeluSleefErfU10)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TanhLopper)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TanhLibm)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TanhSleefU35)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
