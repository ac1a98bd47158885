// Forward values of the ops against plain loops and closed forms.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>

#include "core/ops.h"

using namespace lopper;

namespace {
Tensor randn(const Shape& s, uint64_t seed, DType t = DType::f32) {
  Generator g(seed);
  return normal(s, 0.0, 1.0, g, t);
}

// Reference (M, K) @ (K, N) in double over contiguous copies.
std::vector<double> ref_matmul(const Tensor& a, const Tensor& b) {
  auto av = a.contiguous().to_vector<double>(), bv = b.contiguous().to_vector<double>();
  int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  std::vector<double> c(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += av[i * k + p] * bv[p * n + j];
  return c;
}

void expect_near_vec(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol) << "at " << i;
}
}  // namespace

TEST(Ops, UnaryMatchesClosedForms) {
  Tensor x = Tensor::from_vector<double>({-2.0, -0.5, 0.0, 0.7, 3.0}, {5});
  auto xv = x.to_vector<double>();
  auto check = [&](const Tensor& y, auto fn) {
    auto yv = y.to_vector<double>();
    for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(yv[i], fn(xv[i]), 1e-12) << "x=" << xv[i];
  };
  check(gelu(x), [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
  check(gelu_tanh(x), [](double v) {
    return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  });
  check(sigmoid(x), [](double v) { return 1 / (1 + std::exp(-v)); });
  check(relu(x), [](double v) { return v > 0 ? v : 0; });
  check(tanh(x), [](double v) { return std::tanh(v); });
  check(exp(x), [](double v) { return std::exp(v); });
  check(abs(x), [](double v) { return std::fabs(v); });
  check(sign(x), [](double v) { return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0); });
  check(clamp(x, -1, 1), [](double v) { return std::min(1.0, std::max(-1.0, v)); });
  check(scale(x, 3), [](double v) { return 3 * v; });
  check(add_scalar(x, 3), [](double v) { return v + 3; });
  check(neg(x), [](double v) { return -v; });
  check(square(x), [](double v) { return v * v; });
  Tensor pos = Tensor::from_vector<double>({0.5, 1.0, 4.0}, {3});
  auto pv = pos.to_vector<double>();
  auto yv = log(pos).to_vector<double>();
  auto sv = sqrt(pos).to_vector<double>();
  auto qv = pow_scalar(pos, 1.5).to_vector<double>();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(yv[i], std::log(pv[i]), 1e-12);
    EXPECT_NEAR(sv[i], std::sqrt(pv[i]), 1e-12);
    EXPECT_NEAR(qv[i], std::pow(pv[i], 1.5), 1e-12);
  }
  // Sigmoid must not overflow for large |x|.
  auto big = sigmoid(Tensor::from_vector<float>({-200.f, 200.f}, {2})).to_vector<float>();
  EXPECT_EQ(big[0], 0.0f);
  EXPECT_EQ(big[1], 1.0f);
}

TEST(Ops, BroadcastingBinaryOnStridedInputs) {
  Tensor a = randn({4, 3}, 1).transpose(0, 1);  // (3, 4), non-contiguous
  Tensor b = randn({4}, 2);
  Tensor c = randn({3, 1}, 3);
  auto av = a.contiguous().to_vector<float>(), bv = b.to_vector<float>(), cv = c.to_vector<float>();
  auto s = add(a, b).to_vector<float>();
  auto d = div(a, c).to_vector<float>();
  auto mx = maximum(a, b).to_vector<float>();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      EXPECT_FLOAT_EQ(s[i * 4 + j], av[i * 4 + j] + bv[j]);
      EXPECT_FLOAT_EQ(d[i * 4 + j], av[i * 4 + j] / cv[i]);
      EXPECT_FLOAT_EQ(mx[i * 4 + j], std::max(av[i * 4 + j], bv[j]));
    }
  EXPECT_EQ(mul(Tensor::zeros({2, 1, 3}), Tensor::zeros({4, 1})).shape(), (Shape{2, 4, 3}));
}

TEST(Ops, LargeElementwiseUsesAllThreadsAndMatchesSerial) {
  Tensor a = randn({300, 257}, 4), b = randn({257}, 5);
  omp_set_num_threads(1);
  Tensor s1 = gelu(add(a, b));
  omp_set_num_threads(2);
  Tensor s2 = gelu(add(a, b));
  EXPECT_EQ(max_abs_diff(s1, s2), 0.0);
}

// The fused Linear epilogue is the two ops it replaces, bit for bit, for every activation
// (every listed unary op without scalars), and refuses what it cannot fuse.
TEST(Ops, BiasActIsAddThenTheActivationBitwise) {
  Tensor y0 = randn({37, 19}, 11), bias = randn({19}, 12);
  int fused = 0;
  for (const kernels::UnaryOpInfo& u : kernels::kUnaryOps) {
    SCOPED_TRACE(u.name);
    if (u.scalars > 0) {
      EXPECT_THROW(bias_act_(y0.clone(), bias, u.op), Error);
      continue;
    }
    Tensor want = unary(u.op, add(y0, bias));
    Tensor y = y0.clone();
    bias_act_(y, bias, u.op);
    EXPECT_EQ(max_abs_diff(y, want), 0.0);
    ++fused;
  }
  EXPECT_GE(fused, 4);  // gelu, gelu_tanh, relu, tanh at least
  EXPECT_THROW(bias_act_(y0.transpose(0, 1), randn({37}, 1), UnaryOp::gelu), Error);  // not contiguous
  EXPECT_THROW(bias_act_(y0.clone(), randn({18}, 1), UnaryOp::gelu), Error);           // bias of the wrong width
}

TEST(Ops, CompareWhereMaskedFill) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector<float>({2}, {1});
  EXPECT_EQ(gt(a, b).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_EQ(eq(a, b).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 1, 0, 0}));
  EXPECT_EQ(le(a, b).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 1, 0, 0}));
  Tensor w = where(gt(a, b), a, Tensor::scalar(-1.0));
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{-1, -1, 3, 4}));
  Tensor mask = Tensor::from_vector<uint8_t>({1, 0}, {1, 2});  // broadcast over rows
  EXPECT_EQ(masked_fill(a, mask, 9).to_vector<float>(), (std::vector<float>{9, 2, 9, 4}));
  EXPECT_THROW(where(a, a, a), Error);  // condition must be bool
}

TEST(Ops, Reductions) {
  Tensor x = randn({3, 4, 5}, 6, DType::f64);
  auto xv = x.to_vector<double>();
  auto s1 = sum(x, 1).to_vector<double>();
  auto m2 = mean(x, -1, true);
  EXPECT_EQ(m2.shape(), (Shape{3, 4, 1}));
  auto [mx, am] = max(x, 0);
  auto mxv = mx.to_vector<double>();
  auto amv = am.to_vector<int64_t>();
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 5; ++k) {
      double acc = 0;
      for (int j = 0; j < 4; ++j) acc += xv[(i * 4 + j) * 5 + k];
      EXPECT_NEAR(s1[i * 5 + k], acc, 1e-12);
    }
  for (int j = 0; j < 4; ++j)
    for (int k = 0; k < 5; ++k) {
      int best = 0;
      for (int i = 1; i < 3; ++i)
        if (xv[(i * 4 + j) * 5 + k] > xv[(best * 4 + j) * 5 + k]) best = i;
      EXPECT_EQ(amv[j * 5 + k], best);
      EXPECT_EQ(mxv[j * 5 + k], xv[(best * 4 + j) * 5 + k]);
    }
  double total = 0;
  for (double v : xv) total += v;
  EXPECT_NEAR(sum_all(x).item<double>(), total, 1e-12);
  EXPECT_NEAR(mean_all(x).item<double>(), total / 60, 1e-12);
  EXPECT_EQ(argmax(Tensor::from_vector<float>({1, 5, 5, 2}, {4}), 0).item<int64_t>(), 1);  // first max
  EXPECT_EQ(min(Tensor::from_vector<float>({3, -1, 2}, {3}), 0).first.item<float>(), -1.0f);
}

TEST(Ops, SoftmaxAndLogSoftmaxRows) {
  Tensor x = randn({6, 7}, 7, DType::f64);
  auto xv = x.to_vector<double>();
  auto y = softmax(x).to_vector<double>();
  auto ly = log_softmax(x).to_vector<double>();
  for (int r = 0; r < 6; ++r) {
    double z = 0;
    for (int c = 0; c < 7; ++c) z += std::exp(xv[r * 7 + c]);
    for (int c = 0; c < 7; ++c) {
      EXPECT_NEAR(y[r * 7 + c], std::exp(xv[r * 7 + c]) / z, 1e-14);
      EXPECT_NEAR(ly[r * 7 + c], xv[r * 7 + c] - std::log(z), 1e-12);
    }
  }
  // Stable for large logits.
  auto big = softmax(Tensor::from_vector<float>({1000, 1000}, {1, 2})).to_vector<float>();
  EXPECT_FLOAT_EQ(big[0], 0.5f);
}

TEST(Ops, LayerNormMatchesDefinition) {
  Tensor x = randn({5, 8}, 8, DType::f64);
  Tensor w = randn({8}, 9, DType::f64), b = randn({8}, 10, DType::f64);
  LayerNormOut r = layer_norm(x, w, b, 1e-12);
  auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
  auto yv = r.y.to_vector<double>();
  for (int i = 0; i < 5; ++i) {
    double mu = 0, var = 0;
    for (int j = 0; j < 8; ++j) mu += xv[i * 8 + j] / 8;
    for (int j = 0; j < 8; ++j) var += (xv[i * 8 + j] - mu) * (xv[i * 8 + j] - mu) / 8;
    for (int j = 0; j < 8; ++j)
      EXPECT_NEAR(yv[i * 8 + j], (xv[i * 8 + j] - mu) / std::sqrt(var + 1e-12) * wv[j] + bv[j], 1e-12);
  }
  EXPECT_THROW(layer_norm(x, Tensor::zeros({7}, DType::f64), b, 1e-5), Error);
}

TEST(Ops, MatmulAgainstLoopsAllTransposesAndBatches) {
  for (DType t : {DType::f32, DType::f64}) {
    double tol = t == DType::f32 ? 1e-4 : 1e-12;
    Tensor a = randn({7, 5}, 11, t), b = randn({5, 9}, 12, t);
    auto ref = ref_matmul(a, b);
    expect_near_vec(matmul(a, b).to_vector<double>(), ref, tol);
    expect_near_vec(matmul(a.transpose(0, 1).contiguous(), b, true, false).to_vector<double>(), ref, tol);
    expect_near_vec(matmul(a, b.transpose(0, 1).contiguous(), false, true).to_vector<double>(), ref, tol);
    expect_near_vec(matmul(a.transpose(0, 1).contiguous().transpose(0, 1), b).to_vector<double>(), ref, tol);
    // A sliced (non-unit leading dim) operand.
    Tensor wide = randn({7, 12}, 13, t);
    Tensor as = wide.slice(1, 2, 7);
    expect_near_vec(matmul(as, b).to_vector<double>(), ref_matmul(as, b), tol);
    // Batched with per-batch b, and a batched a with a shared 2-D b.
    Tensor ba = randn({3, 2, 7, 5}, 14, t), bb = randn({3, 2, 5, 9}, 15, t);
    Tensor c = matmul(ba, bb);
    EXPECT_EQ(c.shape(), (Shape{3, 2, 7, 9}));
    expect_near_vec(c.select(0, 2).select(0, 1).to_vector<double>(),
                    ref_matmul(ba.select(0, 2).select(0, 1), bb.select(0, 2).select(0, 1)), tol);
    Tensor c2 = matmul(ba, b);
    expect_near_vec(c2.select(0, 1).select(0, 0).to_vector<double>(), ref_matmul(ba.select(0, 1).select(0, 0), b), tol);
    // Attention layout: (B, T, H, D) permuted to (B, H, T, D), K transposed.
    Tensor q = randn({2, 6, 3, 4}, 16, t).permute({0, 2, 1, 3});
    Tensor k = randn({2, 6, 3, 4}, 17, t).permute({0, 2, 1, 3});
    Tensor s = matmul(q, k, false, true);
    expect_near_vec(s.select(0, 1).select(0, 2).to_vector<double>(),
                    ref_matmul(q.select(0, 1).select(0, 2), k.select(0, 1).select(0, 2).transpose(0, 1)), tol);
  }
}

TEST(Ops, TopkSortedWithIndices) {
  Tensor x = Tensor::from_vector<float>({3, 1, 4, 1, 5, 9, 2, 6}, {2, 4});
  auto [v, i] = topk(x, 2, -1, true);
  EXPECT_EQ(v.to_vector<float>(), (std::vector<float>{4, 3, 9, 6}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{2, 0, 1, 3}));
  auto [vs, is] = topk(x, 1, 0, false);  // smallest along dim 0
  EXPECT_EQ(vs.to_vector<float>(), (std::vector<float>{3, 1, 2, 1}));
  EXPECT_EQ(is.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 0}));
  EXPECT_THROW(topk(x, 5), Error);
}

// Against the definition: an entry is kept iff fewer than k entries of its row come before
// it (larger, or equal at a lower index); every row keeps exactly its k.
TEST(Ops, TopkMaskKeepsExactlyKPerRowTiesByIndex) {
  Tensor x = randn({5, 3, 11}, 21);
  Generator g(22);
  std::vector<int64_t> ks(15);
  for (size_t r = 0; r < ks.size(); ++r) ks[r] = static_cast<int64_t>(r % 12);  // 0 .. 11, 0 .. 2
  Tensor k = Tensor::from_vector<int64_t>(ks, {5, 3});
  // Ties: row 1 all equal, row 2 with a repeated maximum.
  std::vector<float> xv = x.to_vector<float>();
  for (int i = 0; i < 11; ++i) xv[11 + i] = 0.5f;
  xv[22 + 3] = xv[22 + 7] = 10.0f;
  x = Tensor::from_vector<float>(xv, {5, 3, 11});
  std::vector<float> m = topk_mask(x, k).to_vector<float>();
  for (int64_t r = 0; r < 15; ++r) {
    int64_t kept = 0;
    for (int64_t i = 0; i < 11; ++i) {
      int64_t before = 0;
      for (int64_t j = 0; j < 11; ++j)
        before += xv[r * 11 + j] > xv[r * 11 + i] || (xv[r * 11 + j] == xv[r * 11 + i] && j < i);
      EXPECT_EQ(m[r * 11 + i], before < ks[r] ? 1.0f : 0.0f) << "row " << r << " entry " << i;
      kept += m[r * 11 + i] == 1.0f;
    }
    EXPECT_EQ(kept, ks[r]) << "row " << r;
  }
  EXPECT_EQ(std::vector<float>(m.begin() + 11, m.begin() + 22),
            (std::vector<float>{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));  // k = 1, all equal: the first
  EXPECT_THROW(topk_mask(x, Tensor::from_vector<int64_t>({12}, {1}).expand({5, 3}).contiguous()), Error);
  EXPECT_THROW(topk_mask(x, Tensor::from_vector<int64_t>({1, 2, 3}, {3})), Error);  // not the rows
  EXPECT_THROW(topk_mask(x, Tensor::from_vector<float>({1}, {1}).expand({5, 3})), Error);  // not i64
}

TEST(Ops, IndexingGatherScatterEmbeddingConcat) {
  Tensor w = Tensor::from_vector<float>({0, 1, 10, 11, 20, 21}, {3, 2});
  Tensor ids = Tensor::from_vector<int64_t>({2, 0, 2}, {3});
  Tensor e = embedding(w, ids.view({1, 3}));
  EXPECT_EQ(e.shape(), (Shape{1, 3, 2}));
  EXPECT_EQ(e.to_vector<float>(), (std::vector<float>{20, 21, 0, 1, 20, 21}));
  Tensor g = embedding_backward(ids, Tensor::ones({3, 2}), 3);
  EXPECT_EQ(g.to_vector<float>(), (std::vector<float>{1, 1, 0, 0, 2, 2}));
  EXPECT_THROW(embedding(w, Tensor::from_vector<int64_t>({3}, {1})), Error);
  EXPECT_THROW(embedding(w, Tensor::from_vector<int64_t>({-1}, {1})), Error);

  Tensor cols = index_select(w, 1, Tensor::from_vector<int32_t>({1, 1}, {2}));
  EXPECT_EQ(cols.to_vector<float>(), (std::vector<float>{1, 1, 11, 11, 21, 21}));

  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor gi = Tensor::from_vector<int64_t>({2, 0, 1, 1}, {2, 2});
  EXPECT_EQ(gather(x, 1, gi).to_vector<float>(), (std::vector<float>{3, 1, 5, 5}));
  EXPECT_EQ(scatter_add({2, 3}, 1, gi, Tensor::ones({2, 2})).to_vector<float>(),
            (std::vector<float>{1, 0, 1, 0, 2, 0}));

  Tensor c = concat({x, Tensor::full({2, 1}, 7)}, 1);
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{1, 2, 3, 7, 4, 5, 6, 7}));
  EXPECT_THROW(concat({x, Tensor::zeros({3, 1})}, 1), Error);
}

TEST(Ops, SumToUndoesBroadcasting) {
  Tensor g = Tensor::ones({4, 2, 3});
  EXPECT_EQ(sum_to(g, {3}).to_vector<float>(), (std::vector<float>{8, 8, 8}));
  EXPECT_EQ(sum_to(g, {2, 1}).to_vector<float>(), (std::vector<float>{12, 12}));
}

TEST(Ops, AdamWStepMatchesFormula) {
  Tensor p = Tensor::from_vector<float>({1.0f, -2.0f}, {2});
  Tensor g = Tensor::from_vector<float>({0.5f, 0.25f}, {2});
  Tensor m = Tensor::zeros({2}), v = Tensor::zeros({2});
  kernels::AdamWStep s{0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1 - 0.9f, 1 - 0.999f};
  adamw_step(s, p, g, m, v);
  // First step: mhat = g, vhat = g^2, so the update is lr * (sign(g) + wd * p).
  auto pv = p.to_vector<float>();
  EXPECT_NEAR(pv[0], 1.0f - 0.1f * (1.0f + 0.01f * 1.0f), 1e-6);
  EXPECT_NEAR(pv[1], -2.0f - 0.1f * (1.0f + 0.01f * -2.0f), 1e-6);
}

// Float tanh on the host is SLEEF's tanhf u10: within 1 ulp of the exact value (SLEEF's
// bound; libm's tanhf was up to 2.1 ulp off). The bound checked is 1 + 1e-6 ulp: the worst
// case in this sweep is 1.00000002 ulp at x = 7.3e-8, where tanh x = x - x^3/3 lies just
// below a float and SLEEF returns the float above that one. The op runs it 8 lanes at a time through the
// vector entry points of core/cpu/vector_math.cpp and the scalar one on each chunk's
// remainder: every element must have the bits of the scalar k_tanh, wherever it falls.
TEST(Ops, FloatTanhWithinOneUlpAndTheVectorLoopIsTheScalar) {
  std::vector<float> xs;
  for (uint32_t u = 0; u < 0x41400000u; u += 1999) {  // every 1999th float in [0, 12), both signs
    float x;
    std::memcpy(&x, &u, 4);
    xs.push_back(x);
    xs.push_back(-x);
  }
  xs.push_back(30.0f);
  xs.push_back(-1e30f);
  if (xs.size() % 8 == 0) xs.push_back(0.25f);  // a remainder for the scalar path
  const auto n = static_cast<int64_t>(xs.size());
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    auto ys = tanh(Tensor::from_vector<float>(xs, {n})).to_vector<float>();
    double worst = 0;
    int64_t not_scalar = 0;
    for (int64_t i = 0; i < n; ++i) {
      float want = kernels::k_tanh(xs[i]);
      if (std::memcmp(&ys[i], &want, 4) != 0) ++not_scalar;
      double exact = std::tanh(static_cast<double>(xs[i]));
      int e = 0;
      std::frexp(static_cast<float>(exact), &e);
      double ulp = std::ldexp(1.0, std::max(e, -125) - 24);
      worst = std::max(worst, std::fabs(ys[i] - exact) / ulp);
    }
    EXPECT_EQ(not_scalar, 0) << "threads " << threads;
    EXPECT_LE(worst, 1.0 + 1e-6) << "threads " << threads;
  }
  EXPECT_EQ(kernels::k_tanh(30.0f), 1.0f);
  EXPECT_EQ(kernels::k_tanh(-1e30f), -1.0f);
  EXPECT_EQ(kernels::k_tanh(0.0f), 0.0f);
}

TEST(Ops, VectorizedFloatExpAndErfAgainstLibm) {
  // k_exp: Cephes polynomial, relative error within a few ulp; k_erf: A&S 7.1.26,
  // absolute error <= 1.5e-7 in exact arithmetic; evaluating 1 - poly * exp(-x^2) in float
  // adds up to ~2.5e-7 more near |x| = 0.5, so the bound here is 5e-7.
  double worst_exp = 0, worst_erf = 0;
  for (int i = -87000; i <= 88000; ++i) {
    float x = static_cast<float>(i) * 1e-3f;
    double e = std::exp(static_cast<double>(x));
    worst_exp = std::max(worst_exp, std::fabs(kernels::k_exp(x) - e) / e);
  }
  for (int i = -6000; i <= 6000; ++i) {
    float x = static_cast<float>(i) * 1e-3f;
    worst_erf = std::max(worst_erf, std::fabs(kernels::k_erf(x) - std::erf(static_cast<double>(x))));
  }
  EXPECT_LT(worst_exp, 4 * 6e-8);
  EXPECT_LT(worst_erf, 5e-7);
  EXPECT_EQ(kernels::k_exp(-100.0f), 0.0f);
  EXPECT_EQ(kernels::k_exp(0.0f), 1.0f);
  EXPECT_TRUE(std::isfinite(kernels::k_exp(100.0f)));
}
