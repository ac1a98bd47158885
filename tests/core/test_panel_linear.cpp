// The panel-packed Linear (core/panel_linear.h): its packing against the weight, and its
// result against each output's FMA chain written out in scalar code (bitwise: the kernel
// promises one chain per output in input order), at row counts that leave every tile and
// block remainder, widths with a partial last panel, and inputs split into blocks.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "core/ops.h"
#include "core/panel_linear.h"

using namespace lopper;

namespace {
// y[m, n] = fma chain over k in order from 0, then + b[n]: what panel_linear computes.
std::vector<float> chain_reference(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t K = w.size(1), N = w.size(0), M = x.numel() / std::max<int64_t>(K, 1);
  auto xv = x.to_vector<float>(), wv = w.to_vector<float>();
  std::vector<float> bv = b.defined() ? b.to_vector<float>() : std::vector<float>();
  std::vector<float> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc = std::fma(xv[m * K + k], wv[n * K + k], acc);
      y[m * N + n] = b.defined() ? acc + bv[n] : acc;
    }
  return y;
}
}  // namespace

TEST(PanelLinear, PacksEachPanelInputMajorWithZeroPadding) {
  Generator g(1);
  Tensor w = normal({37, 5}, 0, 1, g);  // three panels, the last with 5 of 16 outputs
  PanelMatrix p = to_panels(w);
  ASSERT_EQ(p.rows, 37);
  ASSERT_EQ(p.cols, 5);
  ASSERT_EQ(p.values.size(), 3u * 5 * 16);
  auto wv = w.to_vector<float>();
  for (int64_t panel = 0; panel < 3; ++panel)
    for (int64_t k = 0; k < 5; ++k)
      for (int64_t j = 0; j < 16; ++j) {
        int64_t n = panel * 16 + j;
        EXPECT_EQ(p.values[(panel * 5 + k) * 16 + j], n < 37 ? wv[n * 5 + k] : 0.0f) << n << ", " << k;
      }
}

TEST(PanelLinear, EqualsEachOutputsFmaChainBitwise) {
  if (!panel_linear_built()) GTEST_SKIP() << "built without the AVX2 tile";
  Generator g(2);
  // (M, K, N): single rows, tile remainders (5, 7), MiniLM's 25 and 800 tokens, more than
  // one 96-row block with uneven blocks (97, 200); K above 512 splits into blocks (600 into 3,
  // 1536 into 6); N with a partial last panel (37, 8, 2), one panel (16), many (384).
  const std::vector<std::array<int64_t, 3>> shapes = {{1, 8, 16},   {5, 33, 37},    {7, 600, 8},     {25, 384, 384},
                                                      {97, 64, 2},  {200, 1536, 48}, {800, 384, 384}, {3, 1, 17}};
  for (auto [M, K, N] : shapes)
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(testing::Message() << "M " << M << " K " << K << " N " << N << " bias " << with_bias);
      Tensor x = normal({M, K}, 0, 1, g), w = normal({N, K}, 0, 1.0 / std::sqrt(static_cast<double>(K)), g);
      Tensor b = with_bias ? normal({N}, 0, 1, g) : Tensor();
      Tensor y = panel_linear(x, to_panels(w), b);
      ASSERT_EQ(y.shape(), (Shape{M, N}));
      auto got = y.to_vector<float>(), want = chain_reference(x, w, b);
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "at " << i;
    }
}

TEST(PanelLinear, KeepsLeadingDimsAndMatchesOneDnnToRounding) {
  if (!panel_linear_built()) GTEST_SKIP() << "built without the AVX2 tile";
  Generator g(3);
  Tensor x = normal({4, 25, 384}, 0, 1, g), w = normal({1536, 384}, 0, 1.0 / std::sqrt(384.0), g);
  Tensor b = normal({1536}, 0, 1, g);
  Tensor y = panel_linear(x, to_panels(w), b);
  ASSERT_EQ(y.shape(), (Shape{4, 25, 1536}));
  // oneDNN sums in another order: the two differ by rounding only (outputs of order one,
  // 384 terms: a few ulps of the sum of |terms|).
  Tensor ref = add(matmul(x.reshape({100, 384}), w, false, true), b).view({4, 25, 1536});
  EXPECT_TRUE(allclose(y, ref, 1e-5, 1e-5)) << max_abs_diff(y, ref);
}

TEST(PanelLinear, ActivationIsTheOpAfterTheProductBitwise) {
  if (!panel_linear_built()) GTEST_SKIP() << "built without the AVX2 tile";
  Generator g(4);
  Tensor x = normal({50, 96}, 0, 1, g), w = normal({40, 96}, 0, 0.1, g), b = normal({40}, 0, 1, g);
  PanelMatrix p = to_panels(w);
  for (UnaryOp act : {UnaryOp::gelu, UnaryOp::relu, UnaryOp::tanh})
    EXPECT_EQ(max_abs_diff(panel_linear(x, p, b, act), unary(act, panel_linear(x, p, b))), 0.0)
        << kernels::kUnaryOps[static_cast<int>(act)].name;
}

TEST(PanelLinear, SameBitsOnOneThreadAndTwo) {
  if (!panel_linear_built()) GTEST_SKIP() << "built without the AVX2 tile";
  Generator g(5);
  Tensor x = normal({300, 768}, 0, 1, g), w = normal({200, 768}, 0, 0.05, g);
  PanelMatrix p = to_panels(w);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  Tensor one = panel_linear(x, p, Tensor());
  omp_set_num_threads(2);
  Tensor two = panel_linear(x, p, Tensor());
  omp_set_num_threads(threads);
  EXPECT_EQ(max_abs_diff(one, two), 0.0);
}

TEST(PanelLinear, EmptyInputsAndNoInputFeatures) {
  if (!panel_linear_built()) GTEST_SKIP() << "built without the AVX2 tile";
  Generator g(6);
  Tensor w = normal({20, 8}, 0, 1, g);
  EXPECT_EQ(panel_linear(Tensor::zeros({0, 8}), to_panels(w), Tensor()).shape(), (Shape{0, 20}));
  // K = 0: the product is empty, so y is the bias.
  Tensor b = normal({20}, 0, 1, g);
  Tensor y = panel_linear(Tensor::zeros({3, 0}), to_panels(Tensor::zeros({20, 0})), b);
  for (int64_t m = 0; m < 3; ++m) EXPECT_EQ(max_abs_diff(y.select(0, m), b), 0.0);
}

TEST(PanelLinear, RefusesBadInputsWithContext) {
  Generator g(7);
  PanelMatrix p = to_panels(normal({16, 8}, 0, 1, g));
  auto expect_error = [](auto&& f, const std::string& part) {
    std::string what = "no error";
    try {
      f();
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find(part), std::string::npos) << what;
  };
  expect_error([&] { panel_linear(Tensor::zeros({2, 9}), p, Tensor()); }, "[panel_linear] input (2, 9) vs weight (16, 8)");
  expect_error([&] { panel_linear(Tensor::zeros({2, 8}), p, Tensor::zeros({15})); }, "bias (15,) for 16 outputs");
  expect_error([&] { panel_linear(Tensor::zeros({2, 8}), p, Tensor(), UnaryOp::add_scalar); }, "takes scalars");
  expect_error([&] { to_panels(Tensor::zeros({16})); }, "[to_panels] weight (16,) is not a matrix");
  expect_error([&] { panel_linear(Tensor::zeros({2, 8}, DType::i64), p, Tensor()); }, "input must be f32 on the CPU");
}
