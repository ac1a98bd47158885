// N:M sparsity: the 1D top-N against every subset, the 2D best against every valid pattern,
// vector and block units, unstructured selection, the checker (that it finds a violation),
// the permutation search against every permutation of a small matrix, permuted networks
// against the original (same logits), and nm_prune's selection and refusals.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <numeric>
#include <regex>

#include "autograd/functions.h"
#include "core/ops.h"
#include "nn/optim.h"
#include "pruning/nm.h"
#include "pruning/nm_prune.h"
#include "tiny_model.h"

using namespace lopper;
using namespace lopper::pruning;

namespace {

std::vector<float> random_scores(int64_t n, uint64_t seed) {
  Generator g(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(g.next_uniform());
  return v;
}

Tensor random_weight(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> v = random_scores(rows * cols, seed);
  for (float& x : v) x = 2 * x - 1;
  return Tensor::from_vector(v, {rows, cols});
}

double kept_sum(const std::vector<float>& u, const std::vector<uint8_t>& keep) {
  double s = 0;
  for (size_t i = 0; i < u.size(); ++i) s += keep[i] ? u[i] : 0;
  return s;
}

// Every 0/1 vector of length m with n ones.
std::vector<std::vector<uint8_t>> subsets(int64_t m, int64_t n) {
  std::vector<std::vector<uint8_t>> out;
  for (uint32_t bits = 0; bits < (1u << m); ++bits)
    if (std::popcount(bits) == n) {
      std::vector<uint8_t> v(m);
      for (int64_t j = 0; j < m; ++j) v[j] = (bits >> j) & 1;
      out.push_back(v);
    }
  return out;
}

// The largest kept sum of an m x m block over every pattern with at most n per row and column.
double brute_force_2d(const float* w, int64_t m, int64_t n) {
  std::vector<std::vector<uint8_t>> rows;
  for (int64_t k = 0; k <= n; ++k)
    for (auto& r : subsets(m, k)) rows.push_back(r);
  double best = -1;
  std::function<void(int64_t, std::vector<int64_t>&, double)> go = [&](int64_t i, std::vector<int64_t>& cols, double s) {
    if (i == m) {
      best = std::max(best, s);
      return;
    }
    for (const auto& r : rows) {
      bool ok = true;
      for (int64_t j = 0; j < m && ok; ++j) ok = !r[j] || cols[j] < n;
      if (!ok) continue;
      double add = 0;
      for (int64_t j = 0; j < m; ++j)
        if (r[j]) ++cols[j], add += w[i * m + j];
      go(i + 1, cols, s + add);
      for (int64_t j = 0; j < m; ++j) cols[j] -= r[j];
    }
  };
  std::vector<int64_t> cols(m, 0);
  go(0, cols, 0.0);
  return best;
}

}  // namespace

TEST(NmMask, TopNOfMIsTheBestSubsetOfEveryGroup) {
  for (int64_t m = 2; m <= 8; ++m)
    for (int64_t n = 1; n < m; ++n) {
      const int64_t R = 6, C = 3 * m;
      std::vector<float> u = random_scores(R * C, 100 * m + n);
      std::vector<uint8_t> keep = top_n_of_m(u, R, C, n, m);
      auto all = subsets(m, n);
      for (int64_t g = 0; g < R * C; g += m) {
        double best = 0, got = 0;
        for (const auto& s : all) {
          double v = 0;
          for (int64_t j = 0; j < m; ++j) v += s[j] ? u[g + j] : 0;
          best = std::max(best, v);
        }
        int64_t count = 0;
        for (int64_t j = 0; j < m; ++j) got += keep[g + j] ? u[g + j] : 0, count += keep[g + j];
        EXPECT_EQ(count, n);
        EXPECT_DOUBLE_EQ(got, best) << n << ":" << m << " group " << g / m;
      }
    }
}

TEST(NmMask, Best2dEqualsBruteForceAndGreedyNeverBeatsIt) {
  for (auto [n, m] : {std::pair<int64_t, int64_t>{2, 4}, {1, 4}, {3, 4}, {1, 3}, {2, 5}}) {
    const int64_t R = 2 * m, C = 3 * m;
    std::vector<float> u = random_scores(R * C, 7 * m + n);
    std::vector<uint8_t> best = best_2d(u, R, C, n, m), greedy = greedy_2d(u, R, C, n, m);
    for (int64_t r0 = 0; r0 < R; r0 += m)
      for (int64_t c0 = 0; c0 < C; c0 += m) {
        std::vector<float> w(m * m);
        std::vector<uint8_t> kb(m * m), kg(m * m);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < m; ++j) {
            w[i * m + j] = u[(r0 + i) * C + c0 + j];
            kb[i * m + j] = best[(r0 + i) * C + c0 + j];
            kg[i * m + j] = greedy[(r0 + i) * C + c0 + j];
          }
        for (int64_t i = 0; i < m; ++i) {  // at most n per row and column
          int64_t rb = 0, cb = 0, rg = 0, cg = 0;
          for (int64_t j = 0; j < m; ++j) rb += kb[i * m + j], cb += kb[j * m + i], rg += kg[i * m + j], cg += kg[j * m + i];
          EXPECT_LE(rb, n);
          EXPECT_LE(cb, n);
          EXPECT_LE(rg, n);
          EXPECT_LE(cg, n);
        }
        const double want = brute_force_2d(w.data(), m, n);
        EXPECT_NEAR(kept_sum(w, kb), want, 1e-5) << n << ":" << m;
        EXPECT_LE(kept_sum(w, kg), want + 1e-6);
      }
  }
}

TEST(NmMask, ASPsGreedyCanMissTheBest2dPattern) {
  // Greedy takes the three 9s and the 8, then rows and columns fill with small values:
  // 44 against the best 47 (found by a random search over small integer blocks).
  const std::vector<float> w = {1, 9, 3, 3,  //
                                5, 1, 2, 1,  //
                                8, 1, 9, 3,  //
                                2, 0, 3, 9};
  auto kb = best_2d(w, 4, 4, 2, 4), kg = greedy_2d(w, 4, 4, 2, 4);
  EXPECT_DOUBLE_EQ(kept_sum(w, kb), brute_force_2d(w.data(), 4, 2));
  EXPECT_DOUBLE_EQ(kept_sum(w, kg), 44);
  EXPECT_DOUBLE_EQ(kept_sum(w, kb), 47);
}

TEST(NmMask, VectorAndBlockUnitsKeepWholeUnitsNOfEveryM) {
  const Tensor w = random_weight(16, 32, 5);
  for (auto [ur, uc] : {std::pair<int64_t, int64_t>{4, 1}, {2, 2}, {1, 4}, {8, 1}}) {
    NmPattern p;
    p.n = 1, p.m = 4, p.unit_rows = ur, p.unit_cols = uc;
    Tensor mask = nm_mask(w, p);
    std::vector<float> mv = mask.to_vector<float>();
    std::vector<float> u = unit_scores(w, ur, uc);
    const int64_t R = 16 / ur, C = 32 / uc;
    std::vector<uint8_t> want = top_n_of_m(u, R, C, 1, 4);
    for (int64_t r = 0; r < 16; ++r)
      for (int64_t c = 0; c < 32; ++c) ASSERT_EQ(mv[r * 32 + c], want[(r / ur) * C + c / uc]) << ur << "x" << uc;
    EXPECT_DOUBLE_EQ(sum_all(mask).item<double>(), 16 * 32 / 4);
    EXPECT_EQ(nm_violations(mul(w, mask), p), 0);
  }
}

TEST(NmMask, UnstructuredKeepsTheLargestShareOfUnits) {
  const Tensor w = random_weight(8, 16, 9);
  NmPattern p;
  p.kind = NmKind::unstructured;
  p.density = 0.3;
  p.unit_rows = 2;
  Tensor mask = nm_mask(w, p);
  const int64_t units = 4 * 16, kept = std::llround(0.3 * units);
  EXPECT_DOUBLE_EQ(sum_all(mask).item<double>(), 2.0 * kept);
  std::vector<float> u = unit_scores(w, 2, 1), mv = mask.to_vector<float>();
  float lowest_kept = 1e30f, highest_dropped = -1;
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 16; ++c)
      (mv[(2 * r) * 16 + c] ? lowest_kept : highest_dropped) =
          mv[(2 * r) * 16 + c] ? std::min(lowest_kept, u[r * 16 + c]) : std::max(highest_dropped, u[r * 16 + c]);
  EXPECT_GE(lowest_kept, highest_dropped);
  EXPECT_EQ(nm_violations(mul(w, mask), p), 0);
}

TEST(NmMask, ViolationsAreFound) {
  const Tensor w = random_weight(8, 16, 3);
  for (NmKind kind : {NmKind::one_d, NmKind::two_d}) {
    NmPattern p;
    p.kind = kind;
    Tensor masked = mul(w, nm_mask(w, p));
    ASSERT_EQ(nm_violations(masked, p), 0);
    // One more non-zero in the first group (row 0, columns 0..3) breaks it.
    std::vector<float> v = masked.to_vector<float>();
    for (int j = 0; j < 4; ++j) v[j] = v[j] == 0 ? 0.5f : v[j];
    EXPECT_EQ(nm_violations(Tensor::from_vector(v, {8, 16}), p), 1);
  }
  EXPECT_EQ(nm_violations(w, NmPattern{}), 8 * 16 / 4) << "a dense matrix breaks every group";
}

TEST(NmMask, RefusesInvalidPatternsNamingTheKey) {
  auto fails = [](NmPattern p, const std::string& want) {
    try {
      check_pattern(p);
      check_fits(p, 32, 64, "layer");
      ADD_FAILURE() << "accepted " << p.str();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  NmPattern p;
  p.n = 4, p.m = 4;
  fails(p, "n: 4 must be at least 1 and below m = 4");
  p.n = 2, p.m = 40;
  fails(p, "m: 40 is outside 2..32");
  p.m = 4, p.unit_rows = 5;
  fails(p, "vector: 5x1 units do not tile layer's (32, 64) weight");
  p.unit_rows = 2, p.unit_cols = 3;
  fails(p, "block: 2x3 units do not tile");
  p.unit_cols = 1, p.m = 24;
  fails(p, "m: layer's 64 unit columns are not a multiple of 24");
  p.m = 4, p.kind = NmKind::unstructured, p.density = 0;
  fails(p, "density: 0 is outside (0, 1]");
}

// ---- permutations ----

TEST(NmPermutation, ReachesTheBestPermutationOfASmallMatrixAndNeverLoses) {
  // 8 columns, 2:4: the best over all 8! orders, found by brute force, against the search.
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const int64_t R = 3, C = 8;
    std::vector<float> s = random_scores(R * C, seed);
    if (seed == 1) {  // a constructed case: the four large columns start in one group
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c) s[r * C + c] = c < 4 ? 10.0f + c : 0.1f * static_cast<float>(c);
    }
    PermutationResult res = search_permutation(s, R, C, 2, 4, C);
    std::vector<int64_t> sorted = res.perm;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t k = 0; k < C; ++k) ASSERT_EQ(sorted[k], k);
    auto kept_of = [&](const std::vector<int64_t>& perm) {
      std::vector<float> t(R * C);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < C; ++k) t[r * C + k] = s[r * C + perm[k]];
      return kept_sum(t, top_n_of_m(t, R, C, 2, 4));
    };
    std::vector<int64_t> id(C);
    std::iota(id.begin(), id.end(), 0);
    EXPECT_NEAR(res.kept_before, kept_of(id), 1e-4);
    EXPECT_NEAR(res.kept_after, kept_of(res.perm), 1e-4);
    EXPECT_GE(res.kept_after, res.kept_before - 1e-6);
    double best = 0;
    std::vector<int64_t> p = id;
    do best = std::max(best, kept_of(p));
    while (std::next_permutation(p.begin(), p.end()));
    if (seed == 1) {
      EXPECT_NEAR(res.kept_after, best, 1e-4) << "the constructed case is solved";
    }
    EXPECT_GE(res.kept_after, 0.97 * best) << "seed " << seed;  // greedy swaps: a local optimum
  }
}

TEST(NmPermutation, ColumnsStayInsideTheirSegment) {
  const int64_t R = 4, C = 32;
  std::vector<float> s = random_scores(R * C, 11);
  PermutationResult res = search_permutation(s, R, C, 2, 4, 8);
  for (int64_t k = 0; k < C; ++k) EXPECT_EQ(res.perm[k] / 8, k / 8);
  EXPECT_GT(res.swaps, 0);
  EXPECT_GT(res.kept_after, res.kept_before);
}

TEST(NmPermutation, PermutedNetworksComputeTheSameLogits) {
  Loaded t;
  const Tensor before = t.logits();
  Generator g(3);
  auto shuffled = [&](int64_t n, int64_t within) {
    std::vector<int64_t> p(n);
    std::iota(p.begin(), p.end(), 0);
    for (int64_t s = 0; s < n; s += within)
      for (int64_t i = within - 1; i > 0; --i) std::swap(p[s + i], p[s + static_cast<int64_t>(g.next_below(i + 1))]);
    return p;
  };
  nn::BertModel& bert = *t.model.bert;
  const int64_t H = t.cfg.hidden_size, d = t.cfg.head_dim();
  permute_hidden(bert, {}, shuffled(H, H));
  for (int64_t l = 0; l < t.cfg.num_hidden_layers; ++l) {
    permute_ffn(bert, l, shuffled(t.cfg.intermediate_sizes[l], t.cfg.intermediate_sizes[l]));
    permute_attention_values(bert, l, shuffled(t.cfg.heads_per_layer[l] * d, d));
  }
  const Tensor after = t.logits();
  EXPECT_LT(max_abs_diff(after, before), 1e-5);
  // The weights did move (a permutation that changes nothing would pass trivially).
  Loaded fresh;
  EXPECT_GT(max_abs_diff(layer_linear(*fresh.model.bert, 0, LayerLinear::intermediate).weight.data(),
                         layer_linear(bert, 0, LayerLinear::intermediate).weight.data()),
            0.01);
  // A value channel may not leave its head.
  std::vector<int64_t> cross(t.cfg.heads_per_layer[0] * d);
  std::iota(cross.begin(), cross.end(), 0);
  std::swap(cross[0], cross[d]);
  EXPECT_THROW(permute_attention_values(bert, 0, cross), Error);
}

// ---- nm_prune on a model ----

TEST(NmPrune, SelectsByNameKeepsLayersDenseAndRefusesNamingTheKey) {
  Loaded t;
  NmPruneOptions o;
  o.modules = {R"(output\.dense)"};  // attention output and FFN output
  o.dense_fraction = 0.5;            // layer 0 of 2 stays dense
  auto sel = select_linears(t.cfg, o);
  ASSERT_EQ(sel.size(), 2u);
  EXPECT_EQ(sel[0].name, "bert.encoder.layer.1.attention.output.dense");
  EXPECT_EQ(sel[1].name, "bert.encoder.layer.1.output.dense");
  auto fails = [&](NmPruneOptions bad, const std::string& want) {
    try {
      select_linears(t.cfg, bad);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  NmPruneOptions bad;
  bad.modules = {"query", "classifier"};
  fails(bad, "modules[1]: 'classifier' matches no encoder Linear");
  bad.modules = {"(query"};
  fails(bad, "modules[0]: '(query' is not a regular expression");
  bad = NmPruneOptions{};
  bad.pattern.unit_rows = 3;
  fails(bad, "vector: 3x1 units do not tile bert.encoder.layer.0.attention.self.query's (32, 32) weight");
  bad = NmPruneOptions{};
  bad.pattern.kind = NmKind::two_d;
  bad.permute = true;
  fails(bad, "permute: the permutation search is for 1d N:M patterns");
}

TEST(NmPrune, PrunesEveryEncoderLinearToThePatternAndPermutationKeepsMore) {
  for (bool permute : {false, true}) {
    Loaded t;
    NmPruneOptions o;
    o.pattern.n = 1;
    o.pattern.m = 4;
    o.permute = permute;
    NmPruneResult r = nm_prune(*t.model.bert, {}, o);
    EXPECT_EQ(r.masks.size(), 12u);
    for (auto& [name, p] : t.model.named_parameters()) {
      const bool held = r.masks.count(name) > 0;
      EXPECT_EQ(held, std::regex_search(name, std::regex(R"(encoder\.layer\.\d\..*\.weight$)")) &&
                          name.find("LayerNorm") == std::string::npos)
          << name;
      if (!held) continue;
      EXPECT_EQ(nm_violations(p.data(), o.pattern), 0) << name;
      EXPECT_DOUBLE_EQ(sum_all(r.masks.at(name)).item<double>(), p.data().numel() / 4.0);
      // Zeros exactly where the mask is.
      EXPECT_EQ(sum_all(mul(abs(p.data()), sub(Tensor::scalar(1.0), r.masks.at(name)))).item<double>(), 0.0) << name;
    }
    EXPECT_NEAR(r.report["sparsity"].get<double>(), 0.75, 1e-12);
    if (permute) {
      EXPECT_GT(r.report["kept_magnitude"].get<double>(), r.report["kept_magnitude_unpermuted"].get<double>());
      EXPECT_EQ(r.report["permutations"].size(), 1u + 2u + 2u);  // hidden, then each layer's FFN and attention
    }
  }
}

TEST(NmPrune, MaskedGradientsLeavePrunedWeightsAtZeroThroughAdamW) {
  Loaded t;
  t.model.train();
  NmPruneOptions o;
  NmPruneResult r = nm_prune(*t.model.bert, {}, o);
  std::vector<std::pair<Variable, Tensor>> held;
  for (auto& [name, p] : t.model.named_parameters())
    if (r.masks.count(name)) held.emplace_back(p, r.masks.at(name));
  auto groups = nn::decay_groups(t.model.named_parameters(), 1e-2, 0.01);
  nn::AdamW opt(groups);
  const Tensor w0 = held[0].first.data().clone();
  Generator drop(1);
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    Variable logits = t.model.forward(t.ref.at("input_ids"), t.ref.at("token_type_ids"), t.ref.at("attention_mask"), {&drop});
    ag::sum_all(ag::mul(logits, logits)).backward();
    mask_gradients(held);
    opt.step(1.0);
  }
  for (auto& [p, mask] : held) {
    EXPECT_EQ(nm_violations(p.data(), o.pattern), 0);
    EXPECT_EQ(sum_all(mul(abs(p.data()), sub(Tensor::scalar(1.0), mask))).item<double>(), 0.0);
  }
  EXPECT_GT(max_abs_diff(held[0].first.data(), w0), 1e-3) << "the kept weights trained";
}
