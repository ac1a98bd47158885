// The fused inference attention (core/fused_attention.h) against the unfused ops it
// replaces (bitwise where it calls the same sgemm, to rounding where it runs its own
// products) and against attention computed in double precision from its definition; and a
// whole BERT forward without gradients (fused) against one with them (unfused).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/fused_attention.h"
#include "core/ops.h"
#include "nn/attention.h"
#include "nn/bert.h"
#include "tests/pruning/tiny_model.h"

using namespace lopper;

namespace {

// softmax(q kᵀ * scale + mask) v in double precision, from the definition.
std::vector<double> attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                        double scale) {
  int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  Tensor qc = q.contiguous().to(DType::f64), kc = k.contiguous().to(DType::f64), vc = v.contiguous().to(DType::f64);
  Tensor mc = mask.defined() ? mask.expand({B, H, T, T}).contiguous().to(DType::f64) : Tensor();
  const double *qp = qc.data<double>(), *kp = kc.data<double>(), *vp = vc.data<double>();
  std::vector<double> out(B * H * T * D), row(T);
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t i = 0; i < T; ++i) {
      double mx = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t j = 0; j < T; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += qp[(bh * T + i) * D + d] * kp[(bh * T + j) * D + d];
        row[j] = s * scale + (mc.defined() ? mc.data<double>()[(bh * T + i) * T + j] : 0.0);
        mx = std::max(mx, row[j]);
      }
      for (int64_t j = 0; j < T; ++j) sum += row[j] = std::exp(row[j] - mx);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < T; ++j) acc += row[j] / sum * vp[(bh * T + j) * D + d];
        out[(bh * T + i) * D + d] = acc;
      }
    }
  return out;
}

struct Case {
  int64_t b, h, t, d;
  bool padded;
};

}  // namespace

TEST(FusedAttention, EqualsTheUnfusedOpsAndTheDefinition) {
  // Short sequences (own products where the build has AVX2: T not a multiple of 8, one
  // token, D of 8, 16, 32 and 64), then a head size and a length that take dnnl_sgemm.
  int own = 0;
  for (Case c : {Case{2, 3, 7, 8, true}, Case{1, 12, 25, 32, false}, Case{3, 2, 33, 16, true}, Case{2, 4, 1, 8, false},
                 Case{2, 2, 64, 64, true}, Case{2, 3, 9, 6, true}, Case{1, 2, 70, 16, true}}) {
    SCOPED_TRACE(::testing::Message() << c.b << "x" << c.h << "x" << c.t << "x" << c.d << (c.padded ? " padded" : ""));
    Generator g(7);
    // q, k, v as split_heads makes them: strided (B, H, T, D) views of (B, T, H * D).
    Tensor qkv = normal({c.b, c.t, 3, c.h * c.d}, 0, 1, g);
    auto heads = [&](int i) { return Variable(qkv.select(2, i)); };
    Variable q = nn::split_heads(heads(0), c.h), k = nn::split_heads(heads(1), c.h), v = nn::split_heads(heads(2), c.h);
    Tensor mask;
    if (c.padded) {  // example e keeps its first t - e keys (at least 1)
      std::vector<int64_t> m(c.b * c.t, 1);
      for (int64_t e = 0; e < c.b; ++e)
        for (int64_t j = std::max<int64_t>(1, c.t - e); j < c.t; ++j) m[e * c.t + j] = 0;
      mask = nn::additive_attention_mask(Tensor::from_vector(m, {c.b, c.t}), DType::f32);
    }
    double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
    Tensor fused = fused_attention(q.data(), k.data(), v.data(), mask, scale);
    ASSERT_EQ(fused.shape(), (Shape{c.b, c.h, c.t, c.d}));
    // merge_heads reads the fused result without a copy: it is (B, T, H, D) in memory.
    EXPECT_TRUE(fused.permute({0, 2, 1, 3}).is_contiguous());

    // A Variable of its own (copies share the flag): requiring a gradient sends nn's
    // attention down the unfused ops, while q itself goes through the fused one.
    Variable qg(q.data(), true);
    Variable unfused = nn::scaled_dot_product_attention(qg, k, v, mask);
    Variable via_nn = nn::scaled_dot_product_attention(q, k, v, mask);  // no gradient: fused
    EXPECT_EQ(max_abs_diff(via_nn.data(), fused), 0.0);
    if (fused_attention_own_kernels(c.t, c.d)) {
      ++own;
      // Other f32 summation orders (one FMA chain per element against sgemm's blocking) of
      // at most 64 products: outputs of size ~1 agree to a few ulp (seen: 4.2e-7).
      EXPECT_LT(max_abs_diff(fused, unfused.data()), 2e-6);
    } else {
      EXPECT_EQ(max_abs_diff(fused, unfused.data()), 0.0);  // the same sgemm calls
    }

    std::vector<double> want = attention_reference(q.data(), k.data(), v.data(), mask, scale);
    std::vector<double> got = fused.contiguous().to_vector<double>();
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    EXPECT_LT(worst, 1e-5);  // f32 sums of at most 70 products of unit normals
  }
#if defined(__AVX2__) && defined(__FMA__)
  EXPECT_EQ(own, 5);  // the five short cases above
#endif
}

TEST(FusedAttention, BertForwardWithoutGradientsEqualsTheTrainingPath) {
  Loaded t;  // the tiny fixture BERT and its batch, whose second example is padded
  const nn::StateDict& r = t.ref;
  // Its parameters require gradients, so this forward runs the unfused ops; logits() runs
  // under NoGradGuard: the fused attention and Linear epilogues. The epilogues are bitwise;
  // the attention's own products (4 heads of 8, 7 tokens) round differently from the
  // sgemm calls (whose blocking depends on the CPU), which two layers and a classifier carry
  // to the logits at the level of 1e-7 (seen: 4.2e-7 on AVX2).
  Variable with_grad = t.model.forward(r.at("input_ids"), r.at("token_type_ids"), r.at("attention_mask"));
  double diff = max_abs_diff(with_grad.data(), t.logits());
  if (fused_attention_own_kernels(r.at("input_ids").size(1), t.cfg.head_dim())) EXPECT_LT(diff, 2e-6);
  else EXPECT_EQ(diff, 0.0);
}

TEST(FusedAttention, BadInputIsAClearError) {
  Tensor q = Tensor::zeros({1, 2, 3, 4});
  EXPECT_THROW(fused_attention(q, Tensor::zeros({1, 2, 3, 5}), q, Tensor(), 1.0), Error);
  EXPECT_THROW(fused_attention(q.to(DType::f64), q.to(DType::f64), q.to(DType::f64), Tensor(), 1.0), Error);
  EXPECT_THROW(fused_attention(q.transpose(2, 3), q.transpose(2, 3), q.transpose(2, 3), Tensor(), 1.0), Error);
}
