// Movement pruning against closed forms: the straight-through gradient of block scores,
// the cubic schedule, which weights each block score masks (every block shape, hybrid's
// shared neuron score), top-v, and compaction giving the masked model's logits.
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops.h"
#include "pruning/movement.h"
#include "tests/pruning/tiny_model.h"

using namespace lopper;
using pruning::BlockShape;
using pruning::MovementOptions;
using pruning::MovementPruning;
using pruning::ScoreKind;

namespace {
Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return normal(s, 0.0, 1.0, g);
}

// The mask a block grid (R, 1, C, 1) puts on an (out, in) weight, expanded by hand.
std::vector<float> expand_blocks(const std::vector<float>& grid, int64_t R, int64_t C, int64_t out, int64_t in) {
  std::vector<float> m(out * in);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) m[r * in + c] = grid[(r / (out / R)) * C + c / (in / C)];
  return m;
}
}  // namespace

TEST(Movement, CubicScheduleAtChosenSteps) {
  // T = 100, warm-up 10 steps, cool-down 10: full until 10, final from 90, cubic between.
  EXPECT_EQ(pruning::cubic_schedule(1.0, 0.1, 0, 100, 0.1, 0.1), 1.0);
  EXPECT_EQ(pruning::cubic_schedule(1.0, 0.1, 10, 100, 0.1, 0.1), 1.0);
  EXPECT_NEAR(pruning::cubic_schedule(1.0, 0.1, 50, 100, 0.1, 0.1), 0.1 + 0.9 * 0.125, 1e-12);  // (1 - 40/80)^3
  EXPECT_NEAR(pruning::cubic_schedule(1.0, 0.1, 30, 100, 0.1, 0.1), 0.1 + 0.9 * std::pow(0.75, 3), 1e-12);
  EXPECT_EQ(pruning::cubic_schedule(1.0, 0.1, 90, 100, 0.1, 0.1), 0.1);
  EXPECT_EQ(pruning::cubic_schedule(1.0, 0.1, 100, 100, 0.1, 0.1), 0.1);
  EXPECT_NEAR(pruning::cubic_schedule(0.0, 0.2, 70, 100, 0.0, 0.0), 0.2 - 0.2 * std::pow(0.3, 3), 1e-12);
}

TEST(Movement, TopVKeepsExactlyVAndBreaksTiesByIndex) {
  Tensor s = Tensor::from_vector<float>({0.5f, 2, 2, -1, 2, 0.5f, 3}, {7});
  EXPECT_EQ(pruning::top_v_mask(s, 3).to_vector<float>(), (std::vector<float>{0, 1, 1, 0, 0, 0, 1}));
  EXPECT_EQ(pruning::top_v_mask(s, 0).to_vector<float>(), std::vector<float>(7, 0.0f));
  EXPECT_EQ(pruning::top_v_mask(s, 7).to_vector<float>(), std::vector<float>(7, 1.0f));
  Tensor big = randn({5000}, 1);
  for (int64_t v : {1, 37, 2500, 4999}) EXPECT_EQ(sum_all(pruning::top_v_mask(big, v)).item<double>(), v);
  EXPECT_THROW(pruning::top_v_mask(s, 8), Error);
}

// Every block shape: the score of block (i, j) masks exactly rows i*bo.. and columns j*bi..
TEST(Movement, BlockScoresMaskExactlyTheirWeights) {
  for (BlockShape b : {BlockShape{1, 1}, BlockShape{8, 8}, BlockShape{4, 16}, BlockShape{1, 0}, BlockShape{0, 1}}) {
    SCOPED_TRACE(std::to_string(b.rows) + "x" + std::to_string(b.cols));
    Loaded m;
    MovementOptions o;
    o.blocks = {b, b, b, b, false};
    o.final_density = 0.5;
    MovementPruning mp(m.cfg, o);
    for (const auto& g : mp.groups()) g.scores.mutable_data() = randn(g.score_shape, 7 + g.layer);
    mp.after_step(100, 100);  // final density
    mp.attach(*m.model.bert, nullptr);
    const auto& g = mp.groups()[1];  // layer 0's key
    ASSERT_EQ(g.name, "encoder.layer.0.attention.self.key");
    const Shape& grid = g.score_shape;
    std::vector<float> mask = pruning::top_v_mask(g.scores.data(), g.scores.data().numel() / 2).to_vector<float>();
    auto& key = *(*m.model.bert->encoder->layer)[0].attention->self->key;
    Tensor w = key.weight.data();
    std::vector<float> want = expand_blocks(mask, grid[0], grid[2], w.size(0), w.size(1)), wv = w.to_vector<float>();
    std::vector<float> got = key.masked_weight().data().to_vector<float>();
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], wv[i] * want[i]) << i;
  }
}

// Hybrid: one score per neuron masks its intermediate row and its output column.
TEST(Movement, HybridNeuronScoreMasksItsRowAndColumn) {
  Loaded m;
  MovementOptions o;
  o.blocks.hybrid_ffn = true;
  o.final_density = 0.25;
  MovementPruning mp(m.cfg, o);
  const auto& g = mp.groups()[4];
  ASSERT_EQ(g.name, "encoder.layer.0.ffn_neurons");
  ASSERT_EQ(g.score_shape, (Shape{64}));
  g.scores.mutable_data() = randn({64}, 3);
  mp.after_step(1, 1);
  mp.attach(*m.model.bert, nullptr);
  std::vector<float> keep = pruning::top_v_mask(g.scores.data(), 16).to_vector<float>();
  auto& L = (*m.model.bert->encoder->layer)[0];
  std::vector<float> in = L.intermediate->dense->masked_weight().data().to_vector<float>();   // (64, 32)
  std::vector<float> out = L.output->dense->masked_weight().data().to_vector<float>();        // (32, 64)
  for (int64_t i = 0; i < 64; ++i) {
    for (int64_t c = 0; c < 32; ++c) ASSERT_EQ(in[i * 32 + c] != 0, keep[i] != 0) << i;
    for (int64_t r = 0; r < 32; ++r) ASSERT_EQ(out[r * 64 + i] != 0, keep[i] != 0) << i;
  }
}

// dL/dS for a block = sum over the block of dL/dW' * W (straight-through through the mask).
TEST(Movement, StraightThroughGradientIsTheClosedForm) {
  Loaded m;
  MovementOptions o;
  o.blocks.qkv = {8, 16};
  o.final_density = 0.5;
  MovementPruning mp(m.cfg, o);
  for (const auto& g : mp.groups()) g.scores.mutable_data() = randn(g.score_shape, 11 + g.layer);
  mp.after_step(1, 1);
  mp.attach(*m.model.bert, nullptr);
  auto& q = *(*m.model.bert->encoder->layer)[0].attention->self->query;  // (32, 32), grid (4, 1, 2, 1)
  Variable x(randn({5, 32}, 12)), r(randn({5, 32}, 13));
  Variable loss = ag::sum_all(ag::mul(q.forward(x), r));
  loss.backward();
  // y = x W'^T + b, so dL/dW' = r^T x; dL/dM = dL/dW' * W, summed over each 8 x 16 block.
  Tensor gw = matmul(r.data(), x.data(), true, false), w = q.weight.data();
  std::vector<float> prod = mul(gw, w).to_vector<float>();
  std::vector<double> want(8, 0.0);
  for (int64_t i = 0; i < 32; ++i)
    for (int64_t j = 0; j < 32; ++j) want[(i / 8) * 2 + j / 16] += prod[i * 32 + j];
  std::vector<float> got = mp.groups()[0].scores.grad().to_vector<float>();
  for (int k = 0; k < 8; ++k) EXPECT_NEAR(got[k], want[k], 1e-4 * (1 + std::abs(want[k]))) << k;
}

// Finalize folds the masks and removes heads and neurons left with nothing; the compacted
// model gives the masked model's logits. Movement: scores set so that layer 0 loses head 1
// (its attention-output columns and value rows) and layer 1 head 2 (its value rows only:
// the value bias goes into the output bias); other groups lose 8 entries that empty no
// head; the hybrid FFN keeps 48 neurons. Magnitude: whole intermediate rows and single
// output weights at 25%, so neurons with a zero row and a live column are folded.
TEST(Movement, CompactionGivesTheMaskedLogits) {
  for (ScoreKind kind : {ScoreKind::movement, ScoreKind::magnitude}) {
    SCOPED_TRACE(pruning::score_kind_name(kind));
    Loaded m;
    MovementOptions o;
    o.kind = kind;
    if (kind == ScoreKind::movement) {
      o.blocks = {{1, 0}, {0, 1}, {1, 1}, {1, 1}, true};  // q/k/v rows, output columns, neurons
      o.final_density = 0.75;
    } else {
      o.blocks = {{1, 1}, {1, 1}, {1, 0}, {1, 1}, false};
      o.final_density = 0.25;
    }
    MovementPruning mp(m.cfg, o);
    if (kind == ScoreKind::movement) {
      auto plant = [](std::vector<float>& s, std::vector<int> at) { for (int i : at) s[i] = -1; };
      for (const auto& g : mp.groups()) {
        std::vector<float> s(g.scores.data().numel());
        for (size_t i = 0; i < s.size(); ++i) s[i] = 1.0f + 0.01f * static_cast<float>(i);
        if (g.name == "encoder.layer.0.attention.output.dense") plant(s, {8, 9, 10, 11, 12, 13, 14, 15});
        if (g.name == "encoder.layer.0.attention.self.value") plant(s, {8, 9, 10, 11, 12, 13, 14, 15});
        if (g.name == "encoder.layer.1.attention.self.value") plant(s, {16, 17, 18, 19, 20, 21, 22, 23});
        if (g.name == "encoder.layer.1.attention.output.dense") plant(s, {0, 1, 9, 10, 27, 28, 3, 12});
        g.scores.mutable_data() = Tensor::from_vector(s, g.score_shape);
      }
    }
    mp.after_step(1, 1);
    mp.attach(*m.model.bert, nullptr);
    Tensor masked = m.logits();
    nlohmann::json r = mp.finalize(*m.model.bert, {});
    Tensor compact = m.logits();
    EXPECT_LT(max_abs_diff(masked, compact), 1e-5) << r.dump();
    const auto& sizes = m.model.bert->config.intermediate_sizes;
    if (kind == ScoreKind::movement) {
      EXPECT_EQ(r["heads_removed"]["0"], nlohmann::json({1})) << r.dump();
      EXPECT_EQ(r["heads_removed"]["1"], nlohmann::json({2})) << r.dump();
      EXPECT_EQ(m.model.bert->config.heads_per_layer, (std::vector<int64_t>{3, 3}));
      EXPECT_EQ(sizes, (std::vector<int64_t>{48, 48}));
    } else {
      EXPECT_TRUE(sizes[0] <= 16 && sizes[1] <= 16 && sizes[0] > 0) << r.dump();
    }
  }
}

// Filled (nn_pruning's hybrid-filled): a head that kept any block gets all its attention
// weights back as they were; a head that kept none is removed.
TEST(Movement, FilledMakesEveryHeadWithABlockDense) {
  Loaded m, original;
  MovementOptions o;
  o.blocks = {{8, 8}, {8, 8}, {1, 1}, {1, 1}, false};  // 8x8 blocks: head h is block row h (q, k, v), column h (output)
  o.final_density = 0.75;                            // 4 of the 16 blocks of each matrix pruned
  o.filled = true;
  MovementPruning mp(m.cfg, o);
  for (const auto& g : mp.groups()) {
    std::vector<float> s(g.scores.data().numel());
    for (size_t i = 0; i < s.size(); ++i) s[i] = 1.0f + 0.01f * static_cast<float>(i);  // lowest: blocks 0-3
    auto plant = [&](std::vector<int> at) { for (int i : at) s[i] = -1; };
    const std::string& n = g.name;
    if (n.starts_with("encoder.layer.0.attention.self.")) plant({4, 5, 6, 7});      // head 1's rows
    if (n == "encoder.layer.0.attention.output.dense") plant({1, 5, 9, 13});        // head 1's columns
    if (n == "encoder.layer.1.attention.self.query") plant({8, 9, 0, 1});           // parts of heads 2 and 0
    if (n == "encoder.layer.1.attention.self.value") plant({12, 13, 14, 15});       // all of head 3's rows
    g.scores.mutable_data() = Tensor::from_vector(s, g.score_shape);
  }
  mp.after_step(1, 1);
  mp.attach(*m.model.bert, nullptr);
  nlohmann::json r = mp.finalize(*m.model.bert, {});
  EXPECT_EQ(r["heads_removed"], nlohmann::json({{"0", {1}}})) << r.dump();
  EXPECT_EQ(r["heads_filled"], 7) << r.dump();
  EXPECT_EQ(m.model.bert->config.heads_per_layer, (std::vector<int64_t>{3, 4}));
  auto weight = [](Loaded& x, const std::string& name) { return x.model.parameter("bert." + name + ".weight").data(); };
  auto kept_heads = [](const Tensor& w, int64_t dim, std::vector<int64_t> heads) {
    std::vector<Tensor> parts;
    for (int64_t h : heads) parts.push_back(w.slice(dim, h * 8, (h + 1) * 8));
    return concat(parts, dim);
  };
  for (const char* x : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
    SCOPED_TRACE(x);
    int64_t dim = std::string(x) == "attention.output.dense" ? 1 : 0;
    std::string l0 = std::string("encoder.layer.0.") + x, l1 = std::string("encoder.layer.1.") + x;
    EXPECT_EQ(max_abs_diff(weight(m, l0), kept_heads(weight(original, l0), dim, {0, 2, 3})), 0.0);
    EXPECT_EQ(max_abs_diff(weight(m, l1), weight(original, l1)), 0.0);
  }
}

TEST(Movement, BadOptionsAreRefusedWithTheirNames) {
  Loaded m;
  MovementOptions o;
  o.blocks.qkv = {5, 32};
  try {
    MovementPruning mp(m.cfg, o);
    FAIL() << "a block of 5 rows accepted on 32-row matrices";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.qkv"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(32, 32)"), std::string::npos) << e.what();
  }
  o.blocks.qkv = {8, 8};
  o.final_density = 0;
  EXPECT_THROW(MovementPruning(m.cfg, o), Error);
  o.final_density = 1.5;
  EXPECT_THROW(MovementPruning(m.cfg, o), Error);
  try {
    pruning::score_kind_from_name("soft-movement");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean soft_movement"), std::string::npos) << e.what();
  }
}
