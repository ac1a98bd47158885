// Attention-probability pruning: top-k keeps exactly k valid entries per row, padding never
// gets probability, the masked attention equals dense attention with those entries zeroed
// (forward, and backward by finite differences), a mask of all ones changes nothing
// bitwise, the learned threshold's gradient is the surrogate's closed form, a relative
// threshold cuts at its multiple of each row's 1/n, and the
// static rule starts from the mean probabilities.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "core/ops.h"
#include "core/sparse_attention.h"
#include "nn/attention.h"
#include "pruning/attention_prune.h"
#include "tiny_model.h"

using namespace lopper;
using pruning::AttentionPruneOptions;
using pruning::AttentionPruning;
using pruning::AttentionRule;

namespace {

constexpr int64_t kB = 2, kH = 4, kT = 7, kD = 8;
const std::vector<int64_t> kLen = {7, 4};  // example 1 has 3 padded keys

Tensor additive_mask(DType dt = DType::f64) {
  std::vector<double> m(kB * kT, 0.0);
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t t = kLen[b]; t < kT; ++t) m[b * kT + t] = 1.0;
  Tensor am = Tensor::from_vector<double>(m, {kB, kT});
  return nn::additive_attention_mask(sub(Tensor::ones({kB, kT}, DType::f64), am), dt);  // (B, 1, 1, T)
}

Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return normal(s, 0, 1, g, DType::f64);
}

// The hook the method puts on layer `layer` of the tiny model.
nn::ProbHook hook_of(AttentionPruning& m, Loaded& t, int64_t layer = 0) {
  m.attach(*t.model.bert, nullptr);
  return (*t.model.bert->encoder->layer)[layer].attention->self->prob_hook;
}

struct Attn {
  Tensor scores, probs;  // (B, H, T, T)
};
Attn dense(const Tensor& q, const Tensor& k, const Tensor& mask) {
  Tensor s = add(scale(matmul(q, k, false, true), 1.0 / std::sqrt(double(kD))), mask.to(q.dtype()));
  return {s, softmax(s)};
}

AttentionPruneOptions topk_options(int64_t k, double keep) {
  AttentionPruneOptions o;
  o.rule = AttentionRule::topk;
  o.k = k;
  o.keep = keep;
  return o;
}

}  // namespace

TEST(AttentionPrune, TopkKeepsExactlyKValidEntriesPerRow) {
  Loaded t;
  Tensor q = randn({kB, kH, kT, kD}, 1), k = randn({kB, kH, kT, kD}, 2), mask = additive_mask();
  Attn a = dense(q, k, mask);
  for (auto [kk, keep] : {std::pair<int64_t, double>{3, 0}, {0, 0.5}, {0, 0.2}}) {
    for (bool cls : {false, true}) {
      AttentionPruneOptions o = topk_options(kk, keep);
      o.prune_cls_row = cls;
      AttentionPruning m(t.cfg, o);
      Tensor out = hook_of(m, t)(Variable(a.probs), a.scores, mask).data();
      std::vector<double> p = out.to_vector<double>(), s = a.scores.to_vector<double>(), ref = a.probs.to_vector<double>();
      for (int64_t b = 0; b < kB; ++b) {
        const int64_t n = kLen[b];
        const int64_t want = kk > 0 ? std::min(kk, n) : std::max<int64_t>(1, int64_t(std::ceil(keep * double(n) - 1e-9)));
        for (int64_t h = 0; h < kH; ++h)
          for (int64_t i = 0; i < kT; ++i) {
            const int64_t row = ((b * kH + h) * kT + i) * kT;
            int64_t kept = 0;
            for (int64_t j = 0; j < kT; ++j) {
              if (j >= n) {
                EXPECT_EQ(p[row + j], 0.0) << "padded key " << j << " got probability";
              }
              // kept entries are unchanged and are the row's largest
              if (p[row + j] != 0) {
                EXPECT_EQ(p[row + j], ref[row + j]);
                ++kept;
                for (int64_t l = 0; l < n; ++l)
                  if (p[row + l] == 0) {
                    EXPECT_GE(s[row + j], s[row + l]);
                  }
              }
            }
            EXPECT_EQ(kept, i == 0 && !cls ? n : want) << "example " << b << " head " << h << " row " << i;
          }
      }
    }
  }
}

TEST(AttentionPrune, MaskedAttentionEqualsDenseWithEntriesZeroedForwardAndBackward) {
  Loaded t;
  Tensor mask = additive_mask();
  for (AttentionRule rule : {AttentionRule::topk, AttentionRule::threshold}) {
    for (bool renorm : {false, true}) {
      AttentionPruneOptions o = topk_options(0, 0.5);
      if (rule == AttentionRule::threshold) o = AttentionPruneOptions{.rule = rule, .threshold = 0.15};
      o.renormalize = renorm;
      AttentionPruning m(t.cfg, o);
      nn::ProbHook hook = hook_of(m, t);
      Variable q(randn({kB, kH, kT, kD}, 3), true), k(randn({kB, kH, kT, kD}, 4), true), v(randn({kB, kH, kT, kD}, 5), true);
      // Forward: the entries the hook kept, zeroed elsewhere, times V.
      Attn a = dense(q.data(), k.data(), mask);
      Tensor kept = hook(Variable(a.probs), a.scores, mask).data();
      Tensor zeroed = where(ne(kept, Tensor::zeros({}, DType::f64)), a.probs, Tensor::zeros({}, DType::f64));
      if (renorm) zeroed = div(zeroed, sum(zeroed, -1, true));
      Tensor want = matmul(zeroed, v.data());
      Tensor got = nn::scaled_dot_product_attention(q, k, v, mask, {}, 0.0, nullptr, hook).data();
      EXPECT_LT(max_abs_diff(got, want), 1e-12) << pruning::attention_rule_name(rule) << " renormalize " << renorm;
      EXPECT_GT(sum_all(eq(kept, Tensor::zeros({}, DType::f64)).to(DType::f64)).item<double>(), 30.0);  // it did drop
      // Backward: finite differences through the whole masked attention (the mask is
      // constant under perturbations of 1e-6 away from ties), on heads of width 2 to keep
      // the number of forwards small.
      if (rule == AttentionRule::topk ? !renorm : renorm) continue;  // topk with, threshold without
      Variable q2(randn({kB, kH, kT, 2}, 6), true), k2(randn({kB, kH, kT, 2}, 7), true), v2(randn({kB, kH, kT, 2}, 8), true);
      auto f = [&](const std::vector<Variable>& x) {
        return nn::scaled_dot_product_attention(x[0], x[1], x[2], mask, {}, 0.0, nullptr, hook);
      };
      GradcheckResult r = gradcheck(f, {q2, k2, v2}, 1e-6, 1e-6);
      EXPECT_TRUE(r.ok) << r.report;
    }
  }
}

TEST(AttentionPrune, AllOnesMaskChangesNothingBitwise) {
  Loaded t;
  Tensor plain = t.logits_unfused();
  for (AttentionPruneOptions o : {topk_options(0, 1.0), AttentionPruneOptions{.rule = AttentionRule::threshold}}) {
    AttentionPruning m(t.cfg, o);
    m.attach(*t.model.bert, nullptr);
    Tensor with = t.logits();
    EXPECT_EQ(max_abs_diff(plain, with), 0.0) << pruning::attention_rule_name(o.rule);
    EXPECT_EQ(m.sparsity_report()["sparsity"].get<double>(), 0.0);
    m.detach(*t.model.bert);
  }
  // A real mask changes them, and the report counts valid entries only.
  AttentionPruning m(t.cfg, topk_options(1, 0));
  m.attach(*t.model.bert, nullptr);
  EXPECT_GT(max_abs_diff(plain, t.logits()), 1e-4);
  std::vector<double> am = t.ref.at("attention_mask").to_vector<double>();
  double valid = 0, kept = 0;
  const int64_t b = t.ref.at("attention_mask").size(0), len = t.ref.at("attention_mask").size(1);
  for (int64_t i = 0; i < b; ++i) {
    double n = 0;
    for (int64_t j = 0; j < len; ++j) n += am[i * len + j];
    valid += n * n;
    kept += n + (n - 1);  // the [CLS] row all n, every other valid row 1
  }
  nlohmann::json r = m.sparsity_report();
  EXPECT_NEAR(r["sparsity"].get<double>(), 1 - kept / valid, 1e-12);
  EXPECT_NEAR(r["per_head"][1][2].get<double>(), 1 - kept / valid, 1e-12);
}

TEST(AttentionPrune, LearnedThresholdGradientIsTheSurrogateClosedForm) {
  for (bool relative : {false, true}) {
    Loaded t;
    const double tau = relative ? 1.5 : 0.12, width = 0.5;
    AttentionPruneOptions o{.rule = AttentionRule::learned_threshold, .threshold = tau, .relative = relative,
                            .target_sparsity = 0.5, .surrogate_width = width};
    AttentionPruning m(t.cfg, o);
    nn::ProbHook hook;
    {
      Generator g(7);
      m.attach(*t.model.bert, &g);  // training: the threshold learns
      hook = (*t.model.bert->encoder->layer)[1].attention->self->prob_hook;
    }
    // f32, the model's dtype, in which the thresholds live
    Tensor mask = additive_mask(DType::f32);
    Attn a = dense(randn({kB, kH, kT, kD}, 8).to(DType::f32), randn({kB, kH, kT, kD}, 9).to(DType::f32), mask);
    Tensor g = randn({kB, kH, kT, kT}, 10).to(DType::f32);
    Variable out = hook(Variable(a.probs), a.scores, mask);
    ag::sum_all(ag::mul(out, Variable(g))).backward();
    // out = p * mask, mask's backward that of sigmoid(z), z = (log(p u) - log tau) / width
    // (u = 1, or the row's valid keys n when relative): dL/dlog tau_h = -sum G p s (1 - s) / width.
    std::vector<double> p = a.probs.to_vector<double>(), gv = g.to_vector<double>();
    nn::NamedParams params = m.parameters();
    ASSERT_EQ(params.size(), 2u);
    std::vector<double> got = params[1].second.grad().to_vector<double>();
    for (int64_t h = 0; h < kH; ++h) {
      double want = 0, norm = 0;
      for (int64_t b = 0; b < kB; ++b)
        for (int64_t e = 0; e < kT * kT; ++e) {
          const double pe = p[(b * kH + h) * kT * kT + e], u = relative ? double(kLen[b]) : 1.0;
          if (pe == 0) continue;  // padded keys: no probability, no gradient
          const double s = 1 / (1 + std::exp(-(std::log(pe * u) - std::log(tau)) / width));
          want -= gv[(b * kH + h) * kT * kT + e] * pe * s * (1 - s) / width;
          norm += std::abs(gv[(b * kH + h) * kT * kT + e] * pe);
        }
      EXPECT_NEAR(got[h], want, 1e-5 * std::max(1.0, norm)) << "head " << h << (relative ? " relative" : "");  // f32 sums
    }
    // The penalty pulls the threshold toward the target share: the density's gradient is
    // negative in tau, so with lambda_1 > 0 a denser-than-target mask raises tau.
    EXPECT_TRUE(m.penalty(10, 10).defined());
  }
}

// A relative threshold r keeps p >= r / n: the same entries as a probability threshold of
// r / n on each example alone.
TEST(AttentionPrune, RelativeThresholdIsPerRowLength) {
  Loaded t;
  Tensor mask = additive_mask();
  Attn a = dense(randn({kB, kH, kT, kD}, 14), randn({kB, kH, kT, kD}, 15), mask);
  AttentionPruning rel(t.cfg, {.rule = AttentionRule::threshold, .threshold = 1.3, .relative = true});
  Tensor got = hook_of(rel, t)(Variable(a.probs), a.scores, mask).data();
  for (int64_t b = 0; b < kB; ++b) {
    AttentionPruning abs_rule(t.cfg, {.rule = AttentionRule::threshold, .threshold = 1.3 / double(kLen[b])});
    Tensor want = hook_of(abs_rule, t)(Variable(a.probs), a.scores, mask).data();
    EXPECT_EQ(max_abs_diff(got.slice(0, b, b + 1), want.slice(0, b, b + 1)), 0.0) << "example " << b;
  }
}

TEST(AttentionPrune, StaticPositionsStartFromMeanProbabilities) {
  Loaded t;
  AttentionPruneOptions o = topk_options(0, 1.0);
  o.rule = AttentionRule::static_positions;
  o.max_len = 16;
  AttentionPruning m(t.cfg, o);
  const Tensor &ids = t.ref.at("input_ids"), &types = t.ref.at("token_type_ids"), &am = t.ref.at("attention_mask");
  Tensor probs0;  // layer 0's probabilities, recorded by a hook of our own
  (*t.model.bert->encoder->layer)[0].attention->self->prob_hook = [&](const Variable& p, const Tensor&, const Tensor&) {
    probs0 = p.data();
    return p;
  };
  t.logits();
  (*t.model.bert->encoder->layer)[0].attention->self->prob_hook = nullptr;
  {
    NoGradGuard ng;
    m.calibrate(*t.model.bert, [&] { t.model.forward(ids, types, am); });
  }
  EXPECT_FALSE((*t.model.bert->encoder->layer)[0].attention->self->prob_hook) << "calibrate leaves no hook";
  const int64_t b = ids.size(0), len = ids.size(1);
  std::vector<double> p = probs0.to_vector<double>(), mv = am.to_vector<double>();
  std::vector<double> sc = m.state_dict().at("position_scores.0").to_vector<double>();  // (H, 16, 16)
  for (int64_t h = 0; h < kH; ++h)
    for (int64_t i = 0; i < len; ++i)
      for (int64_t j = 0; j < len; ++j) {
        double s = 0, c = 0;
        for (int64_t e = 0; e < b; ++e) {
          double w = mv[e * len + i] * mv[e * len + j];
          s += w * p[((e * kH + h) * len + i) * len + j];
          c += w;
        }
        EXPECT_NEAR(sc[(h * 16 + i) * 16 + j], c > 0 ? s / c : -1.0, 1e-6);
      }
  // keep 1.0 of a static mask keeps everything: nothing changes.
  Tensor plain = t.logits_unfused();
  m.attach(*t.model.bert, nullptr);
  EXPECT_EQ(max_abs_diff(plain, t.logits()), 0.0);
}

TEST(AttentionPrune, BadOptionsNameTheKey) {
  auto msg = [](AttentionPruneOptions o) {
    try {
      pruning::check_attention_options(o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg(topk_options(0, 0)).find("k, keep"), std::string::npos);
  EXPECT_NE(msg(topk_options(-2, 0)).find("k: -2"), std::string::npos);
  EXPECT_NE(msg(topk_options(0, 1.5)).find("keep: 1.5"), std::string::npos);
  EXPECT_NE(msg(topk_options(0, -0.1)).find("keep: -0.1"), std::string::npos);
  EXPECT_NE(msg({.rule = AttentionRule::threshold, .threshold = 1.0}).find("threshold: 1"), std::string::npos);
  EXPECT_NE(msg({.rule = AttentionRule::threshold, .threshold = -0.1}).find("threshold: -0.1"), std::string::npos);
  EXPECT_NE(msg({.rule = AttentionRule::learned_threshold, .threshold = 0.1, .target_sparsity = 1.0})
                .find("target_sparsity"),
            std::string::npos);
  EXPECT_NE(msg({.rule = AttentionRule::threshold, .threshold = -1.0, .relative = true}).find("threshold: -1"),
            std::string::npos);
  EXPECT_EQ(msg({.rule = AttentionRule::threshold, .threshold = 3.0, .relative = true}), "no error");
  EXPECT_NE(msg({.rule = AttentionRule::learned_threshold, .threshold = 0.1, .target_sparsity = 0.5,
                 .surrogate_width = 0})
                .find("surrogate_width: 0"),
            std::string::npos);
  EXPECT_EQ(msg(topk_options(3, 0)), "no error");
}

// The inference kernel computes what the training path's mask computes.
TEST(AttentionPrune, SparseProbsTimesVEqualsTheMaskedAttention) {
  Loaded t;
  Tensor mask = additive_mask(DType::f32);
  Tensor q = randn({kB, kH, kT, kD}, 11).to(DType::f32), k = randn({kB, kH, kT, kD}, 12).to(DType::f32);
  Tensor v = randn({kB, kH, kT, kD}, 13).to(DType::f32);
  Tensor valid = Tensor::from_vector<int64_t>(kLen, {kB});
  Attn a = dense(q, k, mask);
  std::vector<std::pair<AttentionPruneOptions, SparseAttentionRule>> cases;
  for (bool renorm : {false, true})
    for (bool cls : {false, true}) {
      AttentionPruneOptions o = topk_options(0, 0.25);
      o.renormalize = renorm;
      o.prune_cls_row = cls;
      cases.push_back({o, {.keep = 0.25, .renormalize = renorm, .prune_first_row = cls}});
      o = topk_options(3, 0);
      o.renormalize = renorm;
      o.prune_cls_row = cls;
      cases.push_back({o, {.k = 3, .renormalize = renorm, .prune_first_row = cls}});
      o = AttentionPruneOptions{.rule = AttentionRule::threshold, .threshold = 0.2};
      o.renormalize = renorm;
      o.prune_cls_row = cls;
      cases.push_back({o, {.threshold = 0.2, .renormalize = renorm, .prune_first_row = cls}});
      o = AttentionPruneOptions{.rule = AttentionRule::threshold, .threshold = 1.2, .relative = true};
      o.renormalize = renorm;
      o.prune_cls_row = cls;
      cases.push_back({o, {.threshold = 1.2, .relative = true, .renormalize = renorm, .prune_first_row = cls}});
    }
  for (auto& [o, rule] : cases) {
    AttentionPruning m(t.cfg, o);
    Tensor want = matmul(hook_of(m, t)(Variable(a.probs), a.scores, mask).data(), v);
    Tensor got = sparse_probs_times_v(a.probs, a.scores, v, valid, rule);
    EXPECT_LT(max_abs_diff(got, want), 1e-5) << m.describe();
  }
}
