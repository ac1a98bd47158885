// Mask gradients, Fisher information, the budgeted search and the rearrangement.
#include "pruning/fisher.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>

#include "autograd/functions.h"
#include "core/ops.h"

namespace lopper::pruning {

namespace {
// Every head and neuron hook of the model, unset again (and the weights' requires_grad
// restored) when it goes out of scope, also on an exception.
struct MaskScope {
  nn::BertForSequenceClassification& model;
  std::vector<std::pair<Variable, bool>> params;
  explicit MaskScope(nn::BertForSequenceClassification& m) : model(m) {
    for (auto& [name, p] : m.named_parameters()) {
      params.emplace_back(p, p.requires_grad());
      p.set_requires_grad(false);
    }
  }
  ~MaskScope() {
    for (auto& l : *model.bert->encoder->layer) {
      l->attention->self->head_mask = Variable();
      l->intermediate->neuron_mask = Variable();
    }
    for (auto& [p, r] : params) p.set_requires_grad(r);
  }
};

// Items (layer, index) of the searched layers, most important first; ties by position.
struct Ranked {
  std::vector<std::pair<size_t, size_t>> items;
  std::vector<double> prefix;  // prefix[k] = importance of the first k
};
Ranked rank(const std::vector<std::vector<double>>& imp, const std::vector<bool>& use) {
  Ranked r;
  std::vector<double> v;
  for (size_t l = 0; l < imp.size(); ++l)
    if (use[l])
      for (size_t i = 0; i < imp[l].size(); ++i) r.items.emplace_back(l, i);
  std::stable_sort(r.items.begin(), r.items.end(),
                   [&](auto a, auto b) { return imp[a.first][a.second] > imp[b.first][b.second]; });
  r.prefix.assign(1, 0.0);
  for (auto [l, i] : r.items) r.prefix.push_back(r.prefix.back() + imp[l][i]);
  return r;
}

// The largest n <= available with used + n * cost <= budget (every n when cost is 0).
int64_t affordable(double budget, double used, double cost, int64_t available) {
  if (used > budget) return -1;
  if (cost <= 0) return available;
  auto n = static_cast<int64_t>(std::min(static_cast<double>(available), std::floor((budget - used) / cost)));
  while (n > 0 && used + static_cast<double>(n) * cost > budget) --n;
  return n;
}

std::vector<std::vector<bool>> none_kept(const std::vector<std::vector<double>>& imp) {
  std::vector<std::vector<bool>> k;
  for (const auto& l : imp) k.emplace_back(l.size(), false);
  return k;
}
}  // namespace

MaskGradients mask_gradients(nn::BertForSequenceClassification& model, const std::vector<ExampleBatch>& batches) {
  auto& layers = *model.bert->encoder->layer;
  for (size_t l = 0; l < layers.size(); ++l)
    LOPPER_CHECK(!layers[l].attention->self->head_mask.defined() && !layers[l].intermediate->neuron_mask.defined(),
                 "[fisher] layer ", l, " carries a head or neuron mask already: finalize the pruning method that set it ",
                 "first");
  model.eval();
  MaskScope scope(model);
  const Tensor& w = model.classifier->weight.data();
  std::vector<std::vector<Tensor>> hg(layers.size()), ng(layers.size());
  for (const ExampleBatch& b : batches) {
    int64_t n = b.ids.size(0);
    for (auto& l : layers) {
      l->attention->self->head_mask = Variable(Tensor::ones({n, l->attention->self->heads}, w.dtype(), w.device()), true);
      l->intermediate->neuron_mask =
          Variable(Tensor::ones({n, 1, l->intermediate->dense->weight.size(0)}, w.dtype(), w.device()), true);
    }
    // The loss is the batch mean: times B, each example's mask gets its own loss's gradient.
    Variable loss = ag::scale(model.loss(model.forward(b.ids, b.token_types, b.attention_mask), b.labels),
                              static_cast<double>(n));
    loss.backward();
    for (size_t l = 0; l < layers.size(); ++l) {
      const Variable& hm = layers[l].attention->self->head_mask;
      const Variable& nm = layers[l].intermediate->neuron_mask;
      // A layer without heads (or a mask that did not reach the loss) has zero gradient.
      hg[l].push_back(hm.grad().defined() ? hm.grad().to(Device::cpu()).contiguous() : Tensor::zeros(hm.data().shape()));
      Tensor g = nm.grad().defined() ? nm.grad().to(Device::cpu()) : Tensor::zeros(nm.data().shape());
      ng[l].push_back(g.reshape({n, nm.size(2)}).contiguous());
    }
  }
  MaskGradients out;
  for (size_t l = 0; l < layers.size(); ++l) {
    out.heads.push_back(concat(hg[l], 0));
    out.neurons.push_back(concat(ng[l], 0));
  }
  return out;
}

std::vector<double> fisher_diagonal(const Tensor& g) {
  LOPPER_CHECK(g.dim() == 2, "[fisher] gradients must be (examples, items), got ", g.dim(), " dims");
  const int64_t s = g.size(0), n = g.size(1);
  std::vector<float> v = g.to_vector<float>();
  std::vector<double> d(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < s; ++i)
    for (int64_t j = 0; j < n; ++j) d[j] += static_cast<double>(v[i * n + j]) * v[i * n + j];
  return d;
}

std::vector<double> fisher_block(const Tensor& g) {
  LOPPER_CHECK(g.dim() == 2, "[fisher] gradients must be (examples, items), got ", g.dim(), " dims");
  std::vector<float> f = matmul(g.to(DType::f32), g.to(DType::f32), true, false).to_vector<float>();  // (n, n)
  return {f.begin(), f.end()};
}

int64_t count_kept(const std::vector<bool>& keep) { return std::count(keep.begin(), keep.end(), true); }

Selection search_linear(const Importance& imp, double head_cost, double neuron_cost, double budget) {
  LOPPER_CHECK(imp.heads.size() == imp.neurons.size(), "[fisher] importance for ", imp.heads.size(), " attention and ",
               imp.neurons.size(), " FFN layers");
  std::vector<bool> all_h(imp.heads.size(), true), all_n(imp.neurons.size(), true);
  Ranked h = rank(imp.heads, all_h), n = rank(imp.neurons, all_n);
  double best = -std::numeric_limits<double>::infinity();
  int64_t best_h = 0, best_n = 0;
  for (int64_t k = 0; k <= static_cast<int64_t>(h.items.size()); ++k) {
    int64_t m = affordable(budget, static_cast<double>(k) * head_cost, neuron_cost, static_cast<int64_t>(n.items.size()));
    if (m < 0) break;
    double total = h.prefix[k] + n.prefix[m];
    if (total > best) {
      best = total;
      best_h = k;
      best_n = m;
    }
  }
  Selection s{none_kept(imp.heads), none_kept(imp.neurons), 0, std::max(best, 0.0)};
  for (int64_t k = 0; k < best_h; ++k) s.heads[h.items[k].first][h.items[k].second] = true;
  for (int64_t k = 0; k < best_n; ++k) s.neurons[n.items[k].first][n.items[k].second] = true;
  s.cost = static_cast<double>(best_h) * head_cost + static_cast<double>(best_n) * neuron_cost;
  return s;
}

namespace {
// Kwon's search on the fitted piecewise-linear latencies.
Selection search_fitted(const Importance& imp, const PiecewiseLinear& fa, const PiecewiseLinear& ff, double budget_ms) {
  // Per searched sub-layer: items by importance, its threshold-many best ("base") and their sum.
  struct Sub {
    size_t layer;
    std::vector<size_t> order;
    size_t base;
    double base_importance;
  };
  auto subs = [](const std::vector<std::vector<double>>& imp, int64_t threshold) {
    std::vector<Sub> out;
    for (size_t l = 0; l < imp.size(); ++l) {
      if (imp[l].empty()) continue;
      Sub s{l, std::vector<size_t>(imp[l].size()), std::min(imp[l].size(), static_cast<size_t>(threshold)), 0};
      std::iota(s.order.begin(), s.order.end(), size_t{0});
      std::stable_sort(s.order.begin(), s.order.end(), [&](size_t a, size_t b) { return imp[l][a] > imp[l][b]; });
      for (size_t k = 0; k < s.base; ++k) s.base_importance += imp[l][s.order[k]];
      out.push_back(std::move(s));
    }
    // Dropped whole in this order: least important base first.
    std::stable_sort(out.begin(), out.end(), [](const Sub& a, const Sub& b) { return a.base_importance < b.base_importance; });
    return out;
  };
  std::vector<Sub> att = subs(imp.heads, fa.threshold), ffn = subs(imp.neurons, ff.threshold);
  // The items beyond the base of the sub-layers kept, as an importance table for rank().
  auto pool = [](const std::vector<std::vector<double>>& imp, const std::vector<Sub>& s, size_t dropped) {
    std::vector<std::vector<double>> p(imp.size());
    std::vector<bool> use(imp.size(), false);
    for (size_t k = dropped; k < s.size(); ++k) {
      use[s[k].layer] = true;
      p[s[k].layer].assign(imp[s[k].layer].size(), -std::numeric_limits<double>::infinity());
      for (size_t j = s[k].base; j < s[k].order.size(); ++j) p[s[k].layer][s[k].order[j]] = imp[s[k].layer][s[k].order[j]];
    }
    Ranked r = rank(p, use);
    size_t real = 0;  // base items sorted last as -inf; cut them off
    while (real < r.items.size() && std::isfinite(p[r.items[real].first][r.items[real].second])) ++real;
    r.items.resize(real);
    r.prefix.resize(real + 1);
    return r;
  };
  // The pools for every number of sub-layers dropped, each ranked once.
  std::vector<Ranked> ph, pn;
  std::vector<double> base_a(att.size() + 1, 0.0), base_f(ffn.size() + 1, 0.0);  // kept bases' importance
  for (size_t d = 0; d <= att.size(); ++d) ph.push_back(pool(imp.heads, att, d));
  for (size_t d = 0; d <= ffn.size(); ++d) pn.push_back(pool(imp.neurons, ffn, d));
  for (size_t d = 0; d < att.size(); ++d)
    for (size_t k = d; k < att.size(); ++k) base_a[d] += att[k].base_importance;
  for (size_t d = 0; d < ffn.size(); ++d)
    for (size_t k = d; k < ffn.size(); ++k) base_f[d] += ffn[k].base_importance;
  double best = -std::numeric_limits<double>::infinity(), cost = 0;
  size_t best_da = att.size(), best_df = ffn.size();
  int64_t best_h = 0, best_m = 0;
  for (size_t da = 0; da <= att.size(); ++da)
    for (size_t df = 0; df <= ffn.size(); ++df) {
      double fixed = static_cast<double>(att.size() - da) * fa.c + static_cast<double>(ffn.size() - df) * ff.c;
      if (fixed > budget_ms) continue;
      for (int64_t h = 0; h <= static_cast<int64_t>(ph[da].items.size()); ++h) {
        int64_t m = affordable(budget_ms, fixed + static_cast<double>(h) * fa.slope, ff.slope,
                               static_cast<int64_t>(pn[df].items.size()));
        if (m < 0) break;
        double total = base_a[da] + base_f[df] + ph[da].prefix[h] + pn[df].prefix[m];
        if (total <= best) continue;
        best = total;
        cost = fixed + static_cast<double>(h) * fa.slope + static_cast<double>(m) * ff.slope;
        std::tie(best_da, best_df, best_h, best_m) = std::tuple(da, df, h, m);
      }
    }
  Selection s{none_kept(imp.heads), none_kept(imp.neurons), cost, std::max(best, 0.0)};
  for (size_t k = best_da; k < att.size(); ++k)
    for (size_t j = 0; j < att[k].base; ++j) s.heads[att[k].layer][att[k].order[j]] = true;
  for (size_t k = best_df; k < ffn.size(); ++k)
    for (size_t j = 0; j < ffn[k].base; ++j) s.neurons[ffn[k].layer][ffn[k].order[j]] = true;
  for (int64_t k = 0; k < best_h; ++k) s.heads[ph[best_da].items[k].first][ph[best_da].items[k].second] = true;
  for (int64_t k = 0; k < best_m; ++k) s.neurons[pn[best_df].items[k].first][pn[best_df].items[k].second] = true;
  return s;
}

// The table's latency of the searched sub-layers of a selection.
double searched_latency(const Importance& imp, const Selection& s, const LatencyTable& lut) {
  double ms = 0;
  for (size_t l = 0; l < imp.heads.size(); ++l) {
    if (!imp.heads[l].empty()) ms += lut.attention.at(static_cast<size_t>(count_kept(s.heads[l])));
    if (!imp.neurons[l].empty()) ms += lut.ffn.at(static_cast<size_t>(count_kept(s.neurons[l])));
  }
  return ms;
}
}  // namespace

Selection search_latency(const Importance& imp, const LatencyTable& lut, double budget_ms) {
  const PiecewiseLinear fa = fit_latency(lut.attention), ff = fit_latency(lut.ffn);
  // The fit is not the table: where the table says the choice is over budget, search again
  // with the fitted budget lowered by the overshoot, until the table agrees (nothing kept
  // costs 0, so this ends).
  double fitted = budget_ms;
  for (int tries = 0; tries <= 100; ++tries) {
    Selection s = search_fitted(imp, fa, ff, fitted);
    s.cost = searched_latency(imp, s, lut);
    if (s.cost <= budget_ms) return s;
    fitted -= std::max(s.cost - budget_ms, 1e-6 * std::max(1.0, budget_ms));
  }
  return search_fitted(imp, fa, ff, -1.0);  // nothing fits
}

double pruned_loss(const std::vector<bool>& keep, const std::vector<double>& block) {
  const size_t n = keep.size();
  LOPPER_CHECK(block.size() == n * n, "[fisher] a Fisher block of ", block.size(), " entries for ", n, " items");
  double s = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j)
      if (!keep[i] && !keep[j]) s += block[i * n + j];
  return s;
}

std::vector<bool> rearrange(const std::vector<bool>& keep, const std::vector<double>& block) {
  const size_t n = keep.size();
  LOPPER_CHECK(block.size() == n * n, "[fisher] a Fisher block of ", block.size(), " entries for ", n, " items");
  std::vector<size_t> pruned, kept;
  for (size_t i = 0; i < n; ++i) (keep[i] ? kept : pruned).push_back(i);
  if (pruned.empty() || kept.empty()) return keep;
  auto g = [&](size_t i, size_t j) { return block[i * n + j]; };
  std::stable_sort(kept.begin(), kept.end(), [&](size_t a, size_t b) { return g(a, a) < g(b, b); });
  // r[i] = sum over j in P of G_ij; loss = 1^T G_PP 1.
  std::vector<double> r(n, 0.0);
  for (size_t j : pruned)
    for (size_t i = 0; i < n; ++i) r[i] += g(i, j);
  double loss = 0;
  for (size_t j : pruned) loss += r[j];
  for (size_t a : kept) {
    // P + a, then drop the member whose removal leaves the least loss (a itself if none is better).
    double with_a = loss + 2 * r[a] + g(a, a);
    for (size_t i = 0; i < n; ++i) r[i] += g(i, a);
    pruned.push_back(a);
    size_t out = pruned.size() - 1;
    double best = with_a - 2 * r[a] + g(a, a);
    for (size_t k = 0; k + 1 < pruned.size(); ++k) {
      double l = with_a - 2 * r[pruned[k]] + g(pruned[k], pruned[k]);
      if (l < best) {
        best = l;
        out = k;
      }
    }
    size_t b = pruned[out];
    for (size_t i = 0; i < n; ++i) r[i] -= g(i, b);
    pruned.erase(pruned.begin() + static_cast<std::ptrdiff_t>(out));
    loss = best;
  }
  std::vector<bool> result(n, true);
  for (size_t i : pruned) result[i] = false;
  return result;
}

}  // namespace lopper::pruning
