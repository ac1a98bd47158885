// Retraining-free pruning on the tiny model: per-example mask gradients against finite
// differences, the budgeted search against brute force, the rearrangement's loss, the least-
// squares solves against closed forms computed another way (QR on the explicit system), and
// the pipelines' end-to-end promises (budget kept, errors reduced, folding exact).
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>

#include "autograd/functions.h"
#include "pruning/compact.h"
#include "pruning/fisher.h"
#include "pruning/latency.h"
#include "pruning/reconstruct.h"
#include "pruning/retrain_free.h"
#include "tiny_model.h"

using namespace lopper;
using namespace lopper::pruning;

namespace {

// Four examples of 5..8 tokens (padded to 8), random ids, labels 0/1.
ExampleBatch random_batch(uint64_t seed, int64_t b = 4, int64_t t = 8, int64_t vocab = 100) {
  Generator g(seed);
  std::vector<int64_t> ids, mask, labels;
  for (int64_t i = 0; i < b; ++i) {
    int64_t len = 5 + static_cast<int64_t>(g.next_below(static_cast<uint64_t>(t - 4)));
    for (int64_t j = 0; j < t; ++j) {
      ids.push_back(j < len ? 5 + static_cast<int64_t>(g.next_below(static_cast<uint64_t>(vocab - 5))) : 0);
      mask.push_back(j < len ? 1 : 0);
    }
    labels.push_back(static_cast<int64_t>(g.next_below(2)));
  }
  return {Tensor::from_vector(ids, {b, t}), Tensor::zeros({b, t}, DType::i64), Tensor::from_vector(mask, {b, t}),
          Tensor::from_vector(labels, {b})};
}

// Example i of a batch, alone (its own padding kept: the mask hides it).
ExampleBatch one(const ExampleBatch& b, int64_t i) {
  return {b.ids.slice(0, i, i + 1).contiguous(), b.token_types.slice(0, i, i + 1).contiguous(),
          b.attention_mask.slice(0, i, i + 1).contiguous(), b.labels.slice(0, i, i + 1).contiguous()};
}

double loss_with(nn::BertForSequenceClassification& m, const ExampleBatch& b) {
  NoGradGuard ng;
  return m.loss(m.forward(b.ids, b.token_types, b.attention_mask), b.labels).data().item<double>();
}

// The loss of example b with layer l's head (or neuron) mask all ones but entry i at v.
double loss_at(nn::BertForSequenceClassification& m, const ExampleBatch& b, size_t l, bool head, int64_t i, double v) {
  nn::BertLayer& L = (*m.bert->encoder->layer)[l];
  int64_t n = head ? L.attention->self->heads : L.intermediate->dense->weight.size(0);
  std::vector<float> mask(static_cast<size_t>(n), 1.0f);
  mask[static_cast<size_t>(i)] = static_cast<float>(v);
  Variable var(Tensor::from_vector(mask, {n}));
  (head ? L.attention->self->head_mask : L.intermediate->neuron_mask) = var;
  double loss = loss_with(m, b);
  (head ? L.attention->self->head_mask : L.intermediate->neuron_mask) = Variable();
  return loss;
}

double brute_force_best(const Importance& imp, double hc, double nc, double budget) {
  std::vector<std::pair<double, double>> items;  // (importance, cost)
  for (auto& l : imp.heads)
    for (double v : l) items.emplace_back(v, hc);
  for (auto& l : imp.neurons)
    for (double v : l) items.emplace_back(v, nc);
  double best = 0;
  for (uint64_t s = 0; s < (uint64_t{1} << items.size()); ++s) {
    double c = 0, v = 0;
    for (size_t i = 0; i < items.size(); ++i)
      if (s >> i & 1) {
        c += items[i].second;
        v += items[i].first;
      }
    if (c <= budget) best = std::max(best, v);
  }
  return best;
}

Importance random_importance(Generator& g, size_t layers, size_t heads, size_t neurons) {
  Importance imp;
  for (size_t l = 0; l < layers; ++l) {
    imp.heads.emplace_back();
    imp.neurons.emplace_back();
    for (size_t i = 0; i < heads; ++i) imp.heads.back().push_back(g.next_uniform());
    for (size_t i = 0; i < neurons; ++i) imp.neurons.back().push_back(g.next_uniform() * 0.5);
  }
  return imp;
}

double cost_of(const Selection& s, double hc, double nc) {
  double c = 0;
  for (auto& l : s.heads) c += static_cast<double>(count_kept(l)) * hc;
  for (auto& l : s.neurons) c += static_cast<double>(count_kept(l)) * nc;
  return c;
}

}  // namespace

// Per-example gradients from one batched backward equal central differences of that
// example's own loss. Float32 model, step 1e-2: truncation and rounding stay near 1e-4, so
// a tolerance of 1e-3 + 1e-2 |g| separates a right gradient from a wrong one (a gradient
// of the batch mean instead of the example, say, is off by a factor of 4).
TEST(Fisher, MaskGradientsEqualFiniteDifferencesPerExample) {
  Loaded t;
  ExampleBatch b = random_batch(11);
  MaskGradients g = mask_gradients(t.model, {b});
  ASSERT_EQ(g.heads.size(), 2u);
  EXPECT_EQ(g.heads[0].shape(), (Shape{4, 4}));
  EXPECT_EQ(g.neurons[1].shape(), (Shape{4, 64}));
  const double h = 1e-2;
  for (int64_t ex : {0, 3})
    for (size_t l : {size_t{0}, size_t{1}}) {
      ExampleBatch e = one(b, ex);
      std::vector<float> gh = g.heads[l].to_vector<float>(), gn = g.neurons[l].to_vector<float>();
      for (int64_t i : {0, 2}) {
        double fd = (loss_at(t.model, e, l, true, i, 1 + h) - loss_at(t.model, e, l, true, i, 1 - h)) / (2 * h);
        double an = gh[static_cast<size_t>(ex * 4 + i)];
        EXPECT_NEAR(an, fd, 1e-3 + 1e-2 * std::abs(fd)) << "example " << ex << " layer " << l << " head " << i;
      }
      for (int64_t i : {1, 17, 63}) {
        double fd = (loss_at(t.model, e, l, false, i, 1 + h) - loss_at(t.model, e, l, false, i, 1 - h)) / (2 * h);
        double an = gn[static_cast<size_t>(ex * 64 + i)];
        EXPECT_NEAR(an, fd, 1e-3 + 1e-2 * std::abs(fd)) << "example " << ex << " layer " << l << " neuron " << i;
      }
    }
  // The hooks are unset again and the weights still train.
  for (auto& L : *t.model.bert->encoder->layer) {
    EXPECT_FALSE(L->attention->self->head_mask.defined());
    EXPECT_FALSE(L->intermediate->neuron_mask.defined());
  }
  EXPECT_TRUE(t.model.classifier->weight.requires_grad());
}

TEST(Fisher, DiagonalAndBlockOfTheEmpiricalFisher) {
  Tensor g = Tensor::from_vector(std::vector<float>{1, 2, 3, -1, 0, 2}, {2, 3});  // (S=2, n=3)
  std::vector<double> d = fisher_diagonal(g);
  EXPECT_EQ(d, (std::vector<double>{2, 4, 13}));
  std::vector<double> b = fisher_block(g);
  EXPECT_EQ(b, (std::vector<double>{2, 2, 1, 2, 4, 6, 1, 6, 13}));
}

// The search keeps within the budget and finds the best total importance that any subset
// of heads and neurons within the budget has (all 2^14 subsets of a small case, several
// budgets, costs and draws).
TEST(Fisher, LinearSearchKeepsTheBudgetAndIsOptimal) {
  Generator g(5);
  for (int draw = 0; draw < 4; ++draw) {
    Importance imp = random_importance(g, 2, 3, 4);
    for (auto [hc, nc] : {std::pair{5.0, 2.0}, std::pair{3.0, 3.0}, std::pair{7.0, 1.0}})
      for (double frac : {0.1, 0.3, 0.5, 0.77, 0.95}) {
        double budget = frac * (6 * hc + 8 * nc);
        Selection s = search_linear(imp, hc, nc, budget);
        EXPECT_LE(cost_of(s, hc, nc), budget);
        EXPECT_DOUBLE_EQ(s.cost, cost_of(s, hc, nc));
        EXPECT_NEAR(s.importance, brute_force_best(imp, hc, nc, budget), 1e-12)
            << "draw " << draw << " costs " << hc << "/" << nc << " budget " << budget;
      }
  }
  // Fixed sub-layers (empty importance) stay out of the selection.
  Importance part = random_importance(g, 2, 3, 4);
  part.heads[0].clear();
  Selection s = search_linear(part, 1, 1, 100);
  EXPECT_TRUE(s.heads[0].empty());
  EXPECT_EQ(count_kept(s.heads[1]), 3);
}

TEST(Fisher, PiecewiseLinearFitRecoversAnExactTable) {
  std::vector<double> lut = {0};
  for (int64_t n = 1; n <= 40; ++n) lut.push_back(n <= 12 ? 2.5 : 2.5 + 0.25 * static_cast<double>(n - 12));
  PiecewiseLinear f = fit_latency(lut);
  EXPECT_EQ(f.threshold, 12);
  EXPECT_NEAR(f.c, 2.5, 1e-12);
  EXPECT_NEAR(f.slope, 0.25, 1e-12);
  EXPECT_EQ(f(0), 0);
  EXPECT_NEAR(f(20), 4.5, 1e-12);
}

// Under a table that is exactly piecewise linear, the latency search's choice costs no more
// than the budget by the table itself and leaves less than one step of it unspent.
TEST(Fisher, LatencySearchKeepsTheTableBudget) {
  LatencyTable lut;
  lut.attention = {0};
  lut.ffn = {0};
  for (int64_t h = 1; h <= 4; ++h) lut.attention.push_back(h <= 2 ? 1.0 : 1.0 + 0.4 * static_cast<double>(h - 2));
  for (int64_t n = 1; n <= 16; ++n) lut.ffn.push_back(n <= 4 ? 0.8 : 0.8 + 0.1 * static_cast<double>(n - 4));
  Generator g(9);
  for (int draw = 0; draw < 5; ++draw) {
    Importance imp = random_importance(g, 3, 4, 16);
    double full = table_latency(lut, {4, 4, 4}, {16, 16, 16});
    for (double frac : {0.3, 0.5, 0.75, 0.9}) {
      Selection s = search_latency(imp, lut, frac * full);
      std::vector<int64_t> h, n;
      for (auto& l : s.heads) h.push_back(count_kept(l));
      for (auto& l : s.neurons) n.push_back(count_kept(l));
      double ms = table_latency(lut, h, n);
      EXPECT_LE(ms, frac * full + 1e-12) << "draw " << draw << " target " << frac;
      EXPECT_NEAR(s.cost, ms, 1e-9);
      // Items all have positive importance, so what is left unspent is less than the
      // largest single step: a sub-layer's constant (1.0 here).
      EXPECT_GT(ms, frac * full - 1.0 - 1e-9) << "draw " << draw << " target " << frac;
    }
  }
  // A measured table is not piecewise linear (noise, steps): the fitted search alone went
  // over budget on such tables; the table's latency of the result must still stay within.
  LatencyTable noisy = lut;
  for (size_t n = 1; n < noisy.ffn.size(); ++n) noisy.ffn[n] *= 0.7 + 0.6 * g.next_uniform();
  for (size_t h = 1; h < noisy.attention.size(); ++h) noisy.attention[h] *= 0.7 + 0.6 * g.next_uniform();
  for (int draw = 0; draw < 20; ++draw) {
    Importance imp = random_importance(g, 3, 4, 16);
    double full = table_latency(noisy, {4, 4, 4}, {16, 16, 16});
    for (double frac : {0.2, 0.5, 0.8}) {
      Selection s = search_latency(imp, noisy, frac * full);
      std::vector<int64_t> h, n;
      for (auto& l : s.heads) h.push_back(count_kept(l));
      for (auto& l : s.neurons) n.push_back(count_kept(l));
      EXPECT_LE(table_latency(noisy, h, n), frac * full + 1e-12) << "draw " << draw << " target " << frac;
      EXPECT_NEAR(s.cost, table_latency(noisy, h, n), 1e-9);
    }
  }
}

// The greedy rearrangement keeps the count and never raises 1^T G_PP 1; on a block where
// two pruned items cancel, it finds a strictly better set than pruning the least important.
TEST(Fisher, RearrangementNeverIncreasesTheQuadraticLoss) {
  Generator g(3);
  for (int draw = 0; draw < 20; ++draw) {
    const int64_t s = 12, n = 9;
    Tensor grads = normal({s, n}, 0, 1, g);
    std::vector<double> block = fisher_block(grads);
    std::vector<bool> keep(static_cast<size_t>(n));
    for (auto&& k : keep) k = g.next_below(2) == 1;
    std::vector<bool> r = rearrange(keep, block);
    EXPECT_EQ(count_kept(r), count_kept(keep));
    EXPECT_LE(pruned_loss(r, block), pruned_loss(keep, block) + 1e-9);
  }
  // Items 0 and 1 have opposite gradients, so pruning both costs 0 in the quadratic model;
  // pruning the two least important (1 and 2, by the diagonal 5, 5, 0.89) costs 6.29.
  Tensor grads = Tensor::from_vector(std::vector<float>{1, -1, 0.8f, 2, -2, -0.5f}, {2, 3});
  std::vector<double> block = fisher_block(grads);
  std::vector<bool> keep = {true, false, false};
  EXPECT_NEAR(pruned_loss(keep, block), 6.29, 1e-5);
  std::vector<bool> r = rearrange(keep, block);
  EXPECT_EQ(r, (std::vector<bool>{false, false, true}));
  EXPECT_NEAR(pruned_loss(r, block), 0.0, 1e-5);
}

// NormalEquations and projection_error against the explicit residual sum.
TEST(Reconstruct, ProjectionErrorEqualsTheResidualSum) {
  Generator g(4);
  Tensor x = normal({50, 6}, 0, 1, g), y = normal({50, 3}, 0, 1, g);
  NormalEquations e;
  e.add(x.slice(0, 0, 20).contiguous(), y.slice(0, 0, 20).contiguous());
  e.add(x.slice(0, 20, 50).contiguous(), y.slice(0, 20, 50).contiguous());
  EXPECT_EQ(e.rows, 50);
  nn::Linear lin(6, 3, g);
  std::vector<double> s = {1, 0.5, 0, 2, 1, -1};
  double direct = 0;
  std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>(), w = lin.weight.data().to_vector<float>(),
                     b = lin.bias.data().to_vector<float>();
  for (int64_t r = 0; r < 50; ++r)
    for (int64_t o = 0; o < 3; ++o) {
      double p = b[o];
      for (int64_t i = 0; i < 6; ++i) p += static_cast<double>(w[o * 6 + i]) * s[i] * xv[r * 6 + i];
      direct += (p - yv[r * 3 + o]) * (p - yv[r * 3 + o]);
    }
  EXPECT_NEAR(projection_error(e, masked_projection(lin, s, 1)), direct, 1e-6 * direct);
}

// The mask scales equal the least-squares solution of the explicit system (one column per
// kept group: that group's share of the projection over every row and output, the target
// less the bias), solved by Householder QR rather than the normal equations; damp 0.
TEST(Reconstruct, ScalesMatchTheClosedFormLeastSquares) {
  Generator g(8);
  const int64_t n = 40, groups = 4, group = 2, w = groups * group, c = 3;
  Tensor x = normal({n, w}, 0, 1, g), y = normal({n, c}, 0, 1, g);
  nn::Linear lin(w, c, g);
  NormalEquations e;
  e.add(x, y);
  std::vector<bool> keep = {true, false, true, true};
  std::vector<double> s = solve_scales(e, lin, group, keep, 0.0);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[1], 0.0);
  std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>(), wv = lin.weight.data().to_vector<float>(),
                     bv = lin.bias.data().to_vector<float>();
  Eigen::MatrixXd a(n * c, 3);
  Eigen::VectorXd t(n * c);
  int col = 0;
  for (int64_t k = 0; k < groups; ++k) {
    if (!keep[static_cast<size_t>(k)]) continue;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < c; ++o) {
        double share = 0;
        for (int64_t d = k * group; d < (k + 1) * group; ++d) share += static_cast<double>(wv[o * w + d]) * xv[r * w + d];
        a(r * c + o, col) = share;
      }
    ++col;
  }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < c; ++o) t(r * c + o) = yv[r * c + o] - bv[o];
  Eigen::VectorXd ref = a.householderQr().solve(t);
  EXPECT_NEAR(s[0], ref(0), 1e-5);
  EXPECT_NEAR(s[2], ref(1), 1e-5);
  EXPECT_NEAR(s[3], ref(2), 1e-5);
  // Damped, the error is still never above the plain mask's (x = 1).
  std::vector<double> ones = {1, 0, 1, 1};
  std::vector<double> damped = solve_scales(e, lin, group, keep, 10.0);
  EXPECT_LE(projection_error(e, masked_projection(lin, damped, group)),
            projection_error(e, masked_projection(lin, ones, group)));
}

// The refitted projection equals least squares of [X 1] against Y by QR; damp 0.
TEST(Reconstruct, TunedProjectionMatchesTheClosedFormLeastSquares) {
  Generator g(2);
  const int64_t n = 30, w = 5, c = 4;
  Tensor x = normal({n, w}, 0, 1, g), y = normal({n, c}, 0, 1, g);
  nn::Linear lin(w, c, g);
  NormalEquations e;
  e.add(x, y);
  ASSERT_TRUE(tune_projection(e, lin, 0.0));
  std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>();
  Eigen::MatrixXd a(n, w + 1), t(n, c);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < w; ++i) a(r, i) = xv[r * w + i];
    a(r, w) = 1;
    for (int64_t o = 0; o < c; ++o) t(r, o) = yv[r * c + o];
  }
  Eigen::MatrixXd ref = a.householderQr().solve(t);  // (w + 1, c)
  std::vector<float> wv = lin.weight.data().to_vector<float>(), bv = lin.bias.data().to_vector<float>();
  for (int64_t o = 0; o < c; ++o) {
    for (int64_t i = 0; i < w; ++i) EXPECT_NEAR(wv[o * w + i], ref(i, o), 1e-4) << o << "," << i;
    EXPECT_NEAR(bv[o], ref(w, o), 1e-4) << o;
  }
}

// The whole one-shot pipeline on the tiny model: the budget is kept, every rescaled sub-layer
// reconstructs its teacher better than the 0/1 mask did, and the folded, smaller model
// computes what the masked model computes.
TEST(RetrainFree, OneShotKeepsTheBudgetAndReducesEachLayersError) {
  std::vector<ExampleBatch> batches = {random_batch(1), random_batch(2), random_batch(3)};
  for (double target : {0.75, 0.5}) {
    Loaded t;
    RetrainFreeOptions o;
    o.target = target;
    o.seq_len = 8;
    double full = retrain_free_cost(t.model.config(), o);
    nlohmann::json rep = prune_retrain_free(t.model, batches, o);
    EXPECT_LE(retrain_free_cost(t.model.config(), o), target * full) << target;
    EXPECT_LE(rep["cost_fraction"].get<double>(), target);
    EXPECT_LE(rep["rearrange_fisher_loss"]["after"].get<double>(), rep["rearrange_fisher_loss"]["before"].get<double>() + 1e-9);
    int fitted = 0;
    for (auto& l : rep["reconstruction_error"])
      for (const char* k : {"attention", "ffn"})
        if (l.contains(k)) {
          ++fitted;
          // The errors come from float32 sums whose expansion cancels to about 1e-6 of sum Y^2
          // (~1e-3 here) where a sub-layer is reproduced exactly: that much slack.
          EXPECT_LE(l[k][1].get<double>(), l[k][0].get<double>() * (1 + 1e-6) + 1e-3) << l.dump();
        }
    EXPECT_GT(fitted, 0);
  }
}

TEST(RetrainFree, FoldedModelComputesWhatTheMaskedModelComputes) {
  std::vector<ExampleBatch> batches = {random_batch(1), random_batch(2)};
  Loaded masked, pruned;
  RetrainFreeOptions o;
  o.target = 0.5;
  o.seq_len = 8;
  o.tune = false;
  o.rearrange = false;
  prune_retrain_free(pruned.model, batches, o);
  // The same selection as 0/1 hooks on the untouched model.
  MaskGradients g = mask_gradients(masked.model, batches);
  Importance imp;
  for (size_t l = 0; l < 2; ++l) {
    imp.heads.push_back(fisher_diagonal(g.heads[l]));
    imp.neurons.push_back(fisher_diagonal(g.neurons[l]));
  }
  Selection s = search_linear(imp, flops_per_head(masked.cfg, 8), flops_per_neuron(masked.cfg, 8),
                              0.5 * retrain_free_cost(masked.cfg, o));
  for (size_t l = 0; l < 2; ++l) {
    auto& L = (*masked.model.bert->encoder->layer)[l];
    std::vector<float> h(s.heads[l].begin(), s.heads[l].end()), n(s.neurons[l].begin(), s.neurons[l].end());
    L.attention->self->head_mask = Variable(Tensor::from_vector(h, {4}));
    L.intermediate->neuron_mask = Variable(Tensor::from_vector(n, {64}));
    EXPECT_EQ(pruned.model.config().heads_per_layer[l], count_kept(s.heads[l]));
    EXPECT_EQ(pruned.model.config().intermediate_sizes[l], std::max<int64_t>(1, count_kept(s.neurons[l])));
  }
  std::vector<float> a = masked.logits().to_vector<float>(), b = pruned.logits().to_vector<float>();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << i;
}

TEST(RetrainFree, IterativeKeepsTheBudgetAndReducesEachLayersError) {
  std::vector<ExampleBatch> batches = {random_batch(1), random_batch(2), random_batch(3)};
  Loaded t;
  RetrainFreeOptions o;
  o.target = 0.5;
  o.seq_len = 8;
  o.iterative = true;
  double full = retrain_free_cost(t.model.config(), o);
  nlohmann::json rep = prune_retrain_free(t.model, batches, o);
  EXPECT_LE(retrain_free_cost(t.model.config(), o), 0.5 * full);
  EXPECT_EQ(rep["reconstruction_error"].size(), 4u);  // two sub-layers per layer
  for (auto& l : rep["reconstruction_error"])
    for (auto& [k, v] : l.items())
      if (k != "layer") {
        EXPECT_LE(v[1].get<double>(), v[0].get<double>() * (1 + 1e-6) + 1e-3) << l.dump();  // slack: as above
      }
  EXPECT_TRUE(std::isfinite(t.logits().to_vector<float>()[0]));
}

TEST(RetrainFree, RejectsATargetOutsideTheOpenInterval) {
  Loaded t;
  RetrainFreeOptions o;
  for (double bad : {0.0, 1.0, 1.5, -0.1}) {
    o.target = bad;
    EXPECT_THROW(prune_retrain_free(t.model, {random_batch(1)}, o), Error) << bad;
  }
  o.target = 0.5;
  o.constraint = "latency";  // without a table
  EXPECT_THROW(prune_retrain_free(t.model, {random_batch(1)}, o), Error);
}
