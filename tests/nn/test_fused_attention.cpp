// The fused inference attention (core/fused_attention.h) against the unfused ops it
// replaces (bitwise where it calls the same sgemm, to rounding where it runs its own
// products) and against attention computed in double precision from its definition; a
// whole BERT forward without gradients (fused) against one with them; and the fused
// training attention, forward, gradients and dropout draws, bitwise against the unfused
// ops (which the gradchecks cover), also through a whole BERT training step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <omp.h>

#include "autograd/functions.h"
#include "core/fused_attention.h"
#include "core/kernels/random.h"
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

// (B, 1, 1, T) additive mask: example e keeps its first t - e keys (at least 1).
Tensor padding_mask(int64_t b, int64_t t) {
  std::vector<int64_t> m(b * t, 1);
  for (int64_t e = 0; e < b; ++e)
    for (int64_t j = std::max<int64_t>(1, t - e); j < t; ++j) m[e * t + j] = 0;
  return nn::additive_attention_mask(Tensor::from_vector(m, {b, t}), DType::f32);
}

// What a probability hook that changes nothing makes nn's attention run: the unfused ops.
Variable unchanged(const Variable& p, const Tensor&, const Tensor&) { return p; }

// How many nodes of y's graph are named `name`.
int count_nodes(const Variable& y, const std::string& name) {
  int n = 0;
  std::vector<const Node*> todo{y.grad_fn().get()}, seen;
  while (!todo.empty()) {
    const Node* node = todo.back();
    todo.pop_back();
    if (!node || std::find(seen.begin(), seen.end(), node) != seen.end()) continue;
    seen.push_back(node);
    n += name == node->name;
    for (const auto& in : node->inputs) todo.push_back(in->grad_fn.get());
  }
  return n;
}

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
    Tensor mask = c.padded ? padding_mask(c.b, c.t) : Tensor();
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

TEST(FusedAttention, TrainingEqualsTheUnfusedOpsBitwise) {
  // Lengths below, at and past the inference kernels' 64, a single token, a padding mask or
  // one of arbitrary values; dropout off and on; one and two threads.
  for (Case c : {Case{2, 3, 7, 8, true}, Case{1, 12, 25, 32, false}, Case{2, 2, 64, 64, true}, Case{2, 4, 1, 8, false},
                 Case{1, 2, 70, 16, true}, Case{2, 2, 128, 32, true}})
    for (double p : {0.0, 0.1})
      for (int threads : {1, 2})
        for (bool any_mask : {false, true}) {
          SCOPED_TRACE(::testing::Message() << c.b << "x" << c.h << "x" << c.t << "x" << c.d
                                            << (any_mask ? " mask of any values" : c.padded ? " padded" : "") << " p "
                                            << p << " threads " << threads);
          omp_set_num_threads(threads);
          Generator g(11);
          // Padding masks are 0 or the lowest float, where x * scale + m rounds the same with
          // and without an FMA; an additive mask of any values (a bias per key) would not.
          Tensor mask = any_mask ? uniform({c.b, 1, 1, c.t}, -3, 3, g) : c.padded ? padding_mask(c.b, c.t) : Tensor();
          Tensor qkv0 = normal({c.b, c.t, 3, c.h * c.d}, 0, 1, g);
          Tensor up = normal({c.b, c.h, c.t, c.d}, 0, 1, g);  // the gradient arriving from above
          struct Run {
            Tensor out, grad;
            uint64_t offset;
          };
          auto run = [&](bool fused) {
            Variable qkv(qkv0.clone(), true);  // the Q, K and V Linears' outputs, as split_heads sees them
            auto heads = [&](int i) { return nn::split_heads(ag::select(qkv, 2, i), c.h); };
            Generator drop(5);
            Variable y = nn::scaled_dot_product_attention(heads(0), heads(1), heads(2), mask, {}, p,
                                                          p > 0 ? &drop : nullptr, fused ? nn::ProbHook() : unchanged);
            EXPECT_STREQ(y.grad_fn()->name, fused ? "fused_attention" : "matmul");  // the path meant
            Tensor out = y.data().contiguous();
            nn::merge_heads(y).backward(up.permute({0, 2, 1, 3}).contiguous().reshape({c.b, c.t, c.h * c.d}));
            return Run{out, qkv.grad(), drop.offset()};
          };
          Run fused = run(true), unfused = run(false);
          EXPECT_EQ(max_abs_diff(fused.out, unfused.out), 0.0);
          EXPECT_EQ(max_abs_diff(fused.grad, unfused.grad), 0.0);  // dq, dk and dv
          EXPECT_EQ(fused.offset, unfused.offset);  // the same counters drawn
          EXPECT_GT(max_abs_diff(fused.grad, Tensor::zeros(fused.grad.shape())), 0.0);
        }
  omp_set_num_threads(2);
}

TEST(FusedAttention, TrainingDropsTheProbabilitiesItIsToldTo) {
  // Closed form: with q = k = 0 every probability row is uniform (1/T) and v = 1, so a
  // row of the output is (kept keys) / (T (1 - p)); without dropout, exactly 1 (T a power
  // of two: 1/T and the sums exact).
  const int64_t B = 2, H = 3, T = 32, D = 8;
  const double p = 0.25;
  Variable q(Tensor::zeros({B, H, T, D}), true), v(Tensor::ones({B, H, T, D}), true);
  Generator gen(3);
  Tensor out = ag::fused_attention(q, q, v, Tensor(), 0.5, p, &gen).data();
  EXPECT_EQ(gen.offset(), static_cast<uint64_t>(B * H * T * T));
  std::vector<double> o = out.contiguous().to_vector<double>();
  for (int64_t r = 0; r < B * H * T; ++r) {
    int64_t kept = 0;
    for (int64_t j = 0; j < T; ++j) kept += kernels::dropout_keep(3, r * T + j, static_cast<float>(p));
    EXPECT_NEAR(o[r * D], kept / (T * (1 - p)), 1e-6) << "row " << r;
  }
  Tensor none = ag::fused_attention(q, q, v, Tensor(), 0.5, 0.0, nullptr).data();
  EXPECT_EQ(max_abs_diff(none, Tensor::ones({B, H, T, D})), 0.0);
}

TEST(FusedAttention, BertTrainingStepEqualsTheUnfusedOpsBitwise) {
  // A training-mode forward with dropout and its backward through the tiny BERT: with the
  // fused attention, and with every layer sent down the unfused ops by a hook that changes
  // nothing. Loss and every parameter's gradient bit for bit.
  Loaded t;
  const nn::StateDict& r = t.ref;
  t.model.train();
  auto step = [&](bool fused) {
    for (auto& layer : *t.model.bert->encoder->layer)
      layer->attention->self->prob_hook = fused ? nn::ProbHook() : unchanged;
    for (Variable& w : t.model.parameters()) w.zero_grad();
    Generator drop(9);
    Variable logits = t.model.forward(r.at("input_ids"), r.at("token_type_ids"), r.at("attention_mask"), {&drop});
    Tensor labels = Tensor::from_vector(std::vector<int64_t>(logits.size(0), 1), {logits.size(0)});
    Variable loss = t.model.loss(logits, labels);
    EXPECT_EQ(count_nodes(loss, "fused_attention"), fused ? t.cfg.num_hidden_layers : 0);
    loss.backward();
    std::vector<Tensor> grads{loss.data()};
    for (Variable& w : t.model.parameters()) grads.push_back(w.grad().clone());
    return grads;
  };
  std::vector<Tensor> fused = step(true), unfused = step(false);
  ASSERT_EQ(fused.size(), unfused.size());
  for (size_t i = 0; i < fused.size(); ++i) EXPECT_EQ(max_abs_diff(fused[i], unfused[i]), 0.0) << "tensor " << i;
}

TEST(FusedAttention, TrainingBadInputIsAClearError) {
  Variable q(Tensor::zeros({1, 2, 3, 4}), true);
  Generator gen(1);
  EXPECT_THROW(ag::fused_attention(q, Variable(Tensor::zeros({1, 2, 3, 5})), q, Tensor(), 1.0, 0.0, nullptr), Error);
  EXPECT_THROW(ag::fused_attention(q, q, q, Tensor(), 1.0, 0.1, nullptr), Error);  // dropout without a generator
  EXPECT_THROW(ag::fused_attention(q, q, q, Tensor(), 1.0, 1.0, &gen), Error);
  EXPECT_THROW(ag::fused_attention(Variable(Tensor::zeros({2, 3, 4})), q, q, Tensor(), 1.0, 0.0, nullptr), Error);
}
