// Seeded randomness: determinism across thread counts, and moments within Monte Carlo error.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "core/cpu/dropout.h"
#include "core/ops.h"

using namespace lopper;

TEST(Random, SameSeedSameNumbersAnyThreadCount) {
  omp_set_num_threads(1);
  Generator g1(42);
  Tensor a = normal({100000}, 0, 1, g1);
  omp_set_num_threads(2);
  Generator g2(42);
  Tensor b = normal({100000}, 0, 1, g2);
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
  Generator g3(43);
  EXPECT_GT(max_abs_diff(a, normal({100000}, 0, 1, g3)), 0.1);
  // Consecutive draws do not repeat.
  EXPECT_GT(max_abs_diff(normal({1000}, 0, 1, g1), normal({1000}, 0, 1, g1)), 0.1);
}

TEST(Random, MomentsWithinMonteCarloError) {
  const int64_t n = 400000;
  Generator g(7);
  auto u = uniform({n}, -1, 3, g, DType::f64).to_vector<double>();
  auto z = normal({n}, 2, 0.5, g, DType::f64).to_vector<double>();
  auto bern = bernoulli({n}, 0.3, g, DType::f64).to_vector<double>();
  auto moments = [](const std::vector<double>& v) {
    double m = 0, s = 0;
    for (double x : v) m += x;
    m /= v.size();
    for (double x : v) s += (x - m) * (x - m);
    return std::pair{m, s / v.size()};
  };
  auto [um, uv] = moments(u);
  auto [zm, zv] = moments(z);
  auto [bm, bv] = moments(bern);
  // 5 standard errors of the mean.
  EXPECT_NEAR(um, 1.0, 5 * std::sqrt(16.0 / 12 / n));
  EXPECT_NEAR(uv, 16.0 / 12, 0.02);
  EXPECT_NEAR(zm, 2.0, 5 * 0.5 / std::sqrt(n));
  EXPECT_NEAR(zv, 0.25, 0.005);
  EXPECT_NEAR(bm, 0.3, 5 * std::sqrt(0.21 / n));
  for (double x : u) ASSERT_TRUE(x >= -1 && x < 3);
}

TEST(Random, DropoutKeepsRateScalesAndReplaysForBackward) {
  Generator g(9);
  Tensor x = Tensor::ones({200000});
  uint64_t offset = 0;
  Tensor y = dropout(x, 0.25, g, &offset);
  auto yv = y.to_vector<float>();
  int64_t kept = 0;
  for (float v : yv) {
    ASSERT_TRUE(v == 0.0f || std::fabs(v - 1.0f / 0.75f) < 1e-6);
    kept += v != 0.0f;
  }
  EXPECT_NEAR(static_cast<double>(kept) / yv.size(), 0.75, 5 * std::sqrt(0.1875 / yv.size()));
  // The backward regenerates the same mask from (seed, offset).
  Tensor gx = dropout_backward(Tensor::ones({200000}), 0.25, g.seed(), offset);
  EXPECT_EQ(max_abs_diff(gx, y), 0.0);
}

TEST(Random, DropoutSpanIsTheElementwiseRuleAcrossAHighWordWrap) {
  // dropout_span (and dropout_mask_span) take the high word's key once per 2^32 counters; element by element,
  // dropout_value recomputes it. Counters from 2^32 - 700 to 2^32 + 1300 cross one wrap.
  const int64_t n = 2000;
  const uint64_t seed = 0x1234567890abcdefull, first = (uint64_t(1) << 32) - 700;
  const float p = 0.3f, keep_scale = 1.0f / (1.0f - p);
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = 1.0f + 0.001f * static_cast<float>(i);
  kernels::dropout_span(x.data(), y.data(), n, keep_scale, seed, first, p);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(y[i], kernels::dropout_value(x[i], keep_scale, seed, first + i, p)) << "element " << i;
    kept += y[i] != 0.0f;
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 1 - p, 0.05);  // binomial sd 0.01
  // The same draws as a mask applied afterwards (the fused attention's backward), and in place.
  std::vector<float> mask(n), z(n);
  kernels::dropout_mask_span(mask.data(), n, keep_scale, seed, first, p);
  kernels::dropout_apply(mask.data(), x.data(), z.data(), n, keep_scale);
  EXPECT_EQ(z, y);
  kernels::dropout_span(x.data(), x.data(), n, keep_scale, seed, first, p);
  EXPECT_EQ(x, y);
}
