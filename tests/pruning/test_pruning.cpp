// Hard-Concrete gates against their closed forms, and compaction: removing heads and
// neurons for real gives the masked model's logits.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "autograd/gradcheck.h"
#include "core/ops.h"
#include "nn/bert.h"
#include "nn/safetensors.h"
#include "pruning/compact.h"
#include "pruning/hard_concrete.h"
#include "pruning/gates.h"
#include "tests/pruning/tiny_model.h"

using namespace lopper;

namespace {
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double logit(double p) { return std::log(p / (1 - p)); }
}  // namespace

TEST(HardConcrete, SamplingMatchesClosedForm) {
  pruning::HardConcreteParams p;  // beta 2/3, gamma -0.1, zeta 1.1
  const int64_t n = 200000;
  for (double la : {-1.0, 0.0, 1.5}) {
    pruning::HardConcreteGates g(n, p, la);
    Generator gen(11);
    auto z = g.forward(&gen).data().to_vector<double>();
    double zeros = 0, ones = 0, mean = 0;
    for (double v : z) {
      ASSERT_TRUE(v >= 0 && v <= 1);
      zeros += v == 0.0;
      ones += v == 1.0;
      mean += v;
    }
    zeros /= n;
    ones /= n;
    mean /= n;
    // P(z = 0) = sigmoid(beta logit(t0) - log_alpha), t0 = -gamma / (zeta - gamma); likewise z = 1.
    double p0 = sigmoid(p.beta * logit(-p.gamma / (p.zeta - p.gamma)) - la);
    double p1 = 1 - sigmoid(p.beta * logit((1 - p.gamma) / (p.zeta - p.gamma)) - la);
    // E[z] = integral over u of the clamped stretched sigmoid (midpoint rule, 1e5 points).
    double expect = 0;
    const int m = 100000;
    for (int i = 0; i < m; ++i) {
      double u = (i + 0.5) / m;
      double s = sigmoid((std::log(u) - std::log(1 - u) + la) / p.beta) * (p.zeta - p.gamma) + p.gamma;
      expect += std::min(1.0, std::max(0.0, s)) / m;
    }
    SCOPED_TRACE(la);
    EXPECT_NEAR(zeros, p0, 5 * std::sqrt(p0 * (1 - p0) / n));
    EXPECT_NEAR(ones, p1, 5 * std::sqrt(p1 * (1 - p1) / n));
    EXPECT_NEAR(mean, expect, 5 * 0.5 / std::sqrt(static_cast<double>(n)));
    // The L0 penalty is the expected number of non-zero gates (one gate: no f32 sum of 2e5 terms).
    EXPECT_NEAR(pruning::HardConcreteGates(1, p, la).expected_l0().data().item<double>(), 1 - p0, 1e-6);
  }
}

TEST(HardConcrete, EvaluationIsDeterministicAndGradientsCheck) {
  pruning::HardConcreteGates g(4, {}, 0.0);
  g.log_alpha.mutable_data() = Tensor::from_vector<float>({-5.0f, -0.5f, 0.5f, 5.0f}, {4});
  g.eval();
  Generator gen(1);
  auto a = g.forward(&gen).data().to_vector<float>(), b = g.forward(&gen).data().to_vector<float>();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a[0], 0.0f);  // closed
  EXPECT_EQ(a[3], 1.0f);  // open
  EXPECT_NEAR(a[2], sigmoid(0.5) * 1.2 - 0.1, 1e-6);
  // Gradients of a sampled gate (fixed noise) and of the penalty, in double.
  pruning::HardConcreteGates d(5, {}, 0.0);
  Generator init(2);
  Variable la(normal({5}, 0.0, 1.0, init, DType::f64), true);
  auto f = [&](const std::vector<Variable>& v) {
    d.log_alpha = v[0];
    Generator noise(3);
    return ag::add(d.forward(&noise), ag::reshape(d.expected_l0(), {1}));
  };
  GradcheckResult r = gradcheck(f, {la});
  EXPECT_TRUE(r.ok) << r.report;
}


TEST(Compact, RemovingHeadsAndNeuronsEqualsMasking) {
  Loaded m;
  auto& layers = *m.model.bert->encoder->layer;
  // Mask heads 1 and 3 of layer 0, heads 0, 1, 2 of layer 1, and half the FFN of layer 1.
  layers[0].attention->self->head_mask = Variable(Tensor::from_vector<float>({1, 0, 1, 0}, {4}));
  layers[1].attention->self->head_mask = Variable(Tensor::from_vector<float>({0, 0, 0, 1}, {4}));
  std::vector<float> nm(64, 0.0f);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < 64; i += 2) { nm[i] = 1.0f; keep.push_back(i); }
  layers[1].intermediate->neuron_mask = Variable(Tensor::from_vector(nm, {64}));
  Tensor masked = m.logits();

  pruning::remove_heads(*m.model.bert, {{0, {1, 3}}, {1, {0, 1, 2}}});
  pruning::keep_neurons(*m.model.bert, 1, keep);
  layers[1].intermediate->neuron_mask = Variable();
  Tensor compact = m.logits();
  EXPECT_LT(max_abs_diff(masked, compact), 1e-5);
  EXPECT_EQ(m.model.bert->config.heads_per_layer, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(m.model.bert->config.pruned_heads.at(1), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(m.model.parameter("bert.encoder.layer.1.attention.self.query.weight").shape(), (Shape{8, 32}));
  EXPECT_EQ(m.model.parameter("bert.encoder.layer.1.attention.output.dense.weight").shape(), (Shape{32, 8}));
  EXPECT_EQ(m.model.parameter("bert.encoder.layer.1.intermediate.dense.weight").shape(), (Shape{32, 32}));
  // Removing again counts in current indices and records original ones.
  pruning::remove_heads(*m.model.bert, {{0, {0}}});
  EXPECT_EQ(m.model.bert->config.pruned_heads.at(0), (std::vector<int64_t>{0, 1, 3}));
  EXPECT_THROW(pruning::remove_heads(*m.model.bert, {{1, {0}}}), Error);  // would empty layer 1
}

TEST(Compact, AnEmptyLayerWorksWhenAllowed) {
  Loaded m;
  auto& layers = *m.model.bert->encoder->layer;
  layers[0].attention->self->head_mask = Variable(Tensor::zeros({4}));
  Tensor masked = m.logits();
  pruning::remove_heads(*m.model.bert, {{0, {0, 1, 2, 3}}}, true);
  EXPECT_EQ(m.model.bert->config.heads_per_layer[0], 0);
  EXPECT_LT(max_abs_diff(masked, m.logits()), 1e-5);
  // And it trains: gradients reach the remaining parameters.
  Variable loss = m.model.loss(m.model.forward(m.ref.at("input_ids"), Tensor(), m.ref.at("attention_mask")), m.ref.at("labels"));
  loss.backward();
  EXPECT_TRUE(m.model.parameter("bert.encoder.layer.0.attention.output.dense.bias").grad().defined());
}

TEST(Compact, PrunedCheckpointRoundTripsThroughConfig) {
  Loaded m;
  pruning::remove_heads(*m.model.bert, {{0, {2}}, {1, {0, 3}}});
  pruning::keep_neurons(*m.model.bert, 0, {0, 5, 9, 33});
  Tensor before = m.logits();
  std::string dir = (std::filesystem::temp_directory_path() / "lopper_pruned_ckpt").string();
  std::filesystem::create_directories(dir);
  nn::save_safetensors(dir + "/model.safetensors", m.model.state_dict());
  m.model.bert->config.save(dir + "/config.json");
  nn::BertConfig back = nn::BertConfig::from_file(dir + "/config.json");
  EXPECT_EQ(back.heads_per_layer, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(back.intermediate_sizes, (std::vector<int64_t>{4, 64}));
  Generator g(5);
  nn::BertForSequenceClassification fresh(back, g);
  nn::LoadReport rep = nn::load_pretrained(fresh, dir, true);
  EXPECT_TRUE(rep.missing.empty() && rep.unexpected.empty()) << rep.str();
  fresh.eval();
  NoGradGuard ng;
  Tensor after = fresh.forward(m.ref.at("input_ids"), m.ref.at("token_type_ids"), m.ref.at("attention_mask")).data();
  EXPECT_EQ(max_abs_diff(before, after), 0.0);
  std::filesystem::remove_all(dir);
}

TEST(Compact, FlopsModel) {
  nn::BertConfig c = nn::BertConfig::from_file(kTiny + "/config.json");  // hidden 32, 4 heads, FFN 64
  auto f = pruning::bert_flops(c, 10);
  // attention: 2*10*32*96 + 4*10*10*32 + 2*10*32*32 = 61440 + 12800 + 20480; FFN: 4*10*32*64.
  EXPECT_DOUBLE_EQ(f[0].attention, 94720);
  EXPECT_DOUBLE_EQ(f[0].ffn, 81920);
  c.heads_per_layer = {2, 0};
  c.intermediate_sizes = {64, 32};
  auto g = pruning::bert_flops(c, 10);
  EXPECT_DOUBLE_EQ(g[0].attention, 94720 / 2);
  EXPECT_DOUBLE_EQ(g[1].attention, 0);
  EXPECT_DOUBLE_EQ(g[1].ffn, 81920 / 2);
}

// Issue 5, item 1 through the gates: a gated model in evaluation, with some gates closed
// exactly (log_alpha far below zero) and the rest anywhere in (0, 1], gives the same logits
// as the model compacted from those gates (kept gates folded into the output projection).
TEST(HeadGates, CompactedModelEqualsGatedModel) {
  Loaded m;
  pruning::BertGates gates(m.model.bert->config, false);
  // layer 0: heads 1, 3 closed, 0 and 2 partly open; layer 1: only head 2 open.
  gates.heads()[0].log_alpha.mutable_data() = Tensor::from_vector<float>({0.3f, -30, 1.0f, -30}, {4});
  gates.heads()[1].log_alpha.mutable_data() = Tensor::from_vector<float>({-30, -30, 5.0f, -30}, {4});
  gates.eval();
  auto v = gates.head_values();
  EXPECT_EQ(v[0][1], 0.0);
  EXPECT_NEAR(v[0][0], std::clamp(sigmoid(0.3) * 1.2 - 0.1, 0.0, 1.0), 1e-6);
  EXPECT_EQ(v[1][2], 1.0);
  gates.attach(*m.model.bert, nullptr);
  Tensor gated = m.logits();
  auto removed = pruning::remove_gated_heads(*m.model.bert, v, 0.5, false);
  EXPECT_EQ(removed.at(0), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(removed.at(1), (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(m.model.bert->config.heads_per_layer, (std::vector<int64_t>{2, 1}));
  EXPECT_LT(max_abs_diff(gated, m.logits()), 1e-5);
  // Sampled gates differ from the deterministic ones only in training.
  gates.train();
  Generator g(1);
  EXPECT_GT(max_abs_diff(gates.heads()[0].forward(&g).data(), Tensor::from_vector<float>(
                                                                   {static_cast<float>(v[0][0]), 0, static_cast<float>(v[0][2]), 0}, {4})),
            1e-3);
}

// FFN neuron gates: with heads and neurons gated together (closed gates exactly 0, the rest
// anywhere in (0, 1]), the model compacted from both equals the gated one.
TEST(HeadGates, FfnNeuronGatesCompactToTheGatedModel) {
  Loaded m;
  pruning::BertGates gates(m.model.bert->config, true);
  std::vector<float> la(64);
  Generator g(5);
  // Closed exactly (-30), or open with a gate in [0.56, 1] (log_alpha 0.2 and up).
  for (size_t i = 0; i < la.size(); ++i) la[i] = i % 3 == 0 ? -30.0f : static_cast<float>(g.next_below(280)) / 100.0f + 0.2f;
  gates.ffn()[0].log_alpha.mutable_data() = Tensor::from_vector(la, {64});
  gates.ffn()[1].log_alpha.mutable_data() = Tensor::full({64}, -30.0);  // layer 1: every neuron closed
  gates.heads()[1].log_alpha.mutable_data() = Tensor::from_vector<float>({-30, 0.5f, 4.0f, -30}, {4});
  gates.eval();
  gates.attach(*m.model.bert, nullptr);
  Tensor gated = m.logits();
  auto nv = gates.neuron_values();
  int64_t open0 = std::count_if(nv[0].begin(), nv[0].end(), [](double v) { return v >= 0.5; });
  ASSERT_EQ(open0, 64 - 22);  // 22 closed by log_alpha -30
  ASSERT_LT(*std::min_element(nv[0].begin() + 1, nv[0].begin() + 3), 0.999);  // partly open gates are folded
  pruning::remove_gated_heads(*m.model.bert, gates.head_values(), 0.5, false);
  std::vector<std::vector<double>> nv1 = nv;
  // Layer 1's neurons are all exactly 0: it keeps its highest-gated one, whose gate (0) the
  // fold writes into the output projection, so the layer still adds nothing.
  auto kept = pruning::remove_gated_neurons(*m.model.bert, nv1, 0.5);
  EXPECT_EQ(kept, (std::vector<int64_t>{open0, 1}));
  EXPECT_EQ(m.model.bert->config.intermediate_sizes, kept);
  EXPECT_EQ(m.model.parameter("bert.encoder.layer.0.output.dense.weight").shape(), (Shape{32, open0}));
  EXPECT_LT(max_abs_diff(gated, m.logits()), 1e-5);
  // Gates that are not exactly 0 but below the threshold change the output when removed:
  // the equality above is not automatic.
  Loaded m2;
  pruning::BertGates g2(m2.model.bert->config, true);
  g2.ffn()[0].log_alpha.mutable_data() = Tensor::full({64}, -1.0);  // gate 0.44: removed, not zero
  g2.eval();
  g2.attach(*m2.model.bert, nullptr);
  Tensor gated2 = m2.logits();
  pruning::remove_gated_neurons(*m2.model.bert, g2.neuron_values(), 0.5);
  EXPECT_GT(max_abs_diff(gated2, m2.logits()), 1e-4);
}

TEST(HeadGates, RemovalKeepsOneHeadPerLayerUnlessEmptyLayersAreAllowed) {
  std::vector<std::vector<double>> g = {{0.1, 0.3, 0.2}, {0.9, 0.0, 0.7}};
  auto keep_one = pruning::heads_below(g, 0.5, false);
  EXPECT_EQ(keep_one.at(0), (std::vector<int64_t>{0, 2}));  // head 1 (0.3) is the best of layer 0
  EXPECT_EQ(keep_one.at(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(pruning::heads_below(g, 0.5, true).at(0), (std::vector<int64_t>{0, 1, 2}));
  // An emptied layer still computes what the gated model computes (attention adds its bias only).
  Loaded m;
  pruning::BertGates gates(m.model.bert->config, false);
  gates.heads()[0].log_alpha.mutable_data() = Tensor::full({4}, -30.0);
  gates.eval();
  gates.attach(*m.model.bert, nullptr);
  Tensor gated = m.logits();
  pruning::remove_gated_heads(*m.model.bert, gates.head_values(), 0.5, true);
  EXPECT_EQ(m.model.bert->config.heads_per_layer, (std::vector<int64_t>{0, 4}));
  EXPECT_LT(max_abs_diff(gated, m.logits()), 1e-5);
}

// The Lagrangian term's value and its multipliers' ascent follow the closed form:
// d/dlambda_1 = e - t, d/dlambda_2 = (e - t)^2, and the expected fraction's gradient is
// lambda_1 + 2 lambda_2 (e - t).
TEST(HeadGates, LagrangianMatchesClosedForm) {
  pruning::Lagrangian lag;
  lag.set(0.5, 2.0);
  Variable e(Tensor::full({}, 0.8), true);
  Variable p = lag.penalty(e, 0.5);
  EXPECT_NEAR(p.data().item<double>(), 0.5 * 0.3 + 2.0 * 0.09, 1e-6);
  p.backward();
  EXPECT_NEAR(e.grad().item<double>(), 0.5 + 2 * 2.0 * 0.3, 1e-6);
  lag.ascend(0.1);
  EXPECT_NEAR(lag.lambda_1(), 0.5 + 0.1 * 0.3, 1e-6);
  EXPECT_NEAR(lag.lambda_2(), 2.0 + 0.1 * 0.09, 1e-6);
  // Below the target the first multiplier falls: the term then rewards opening gates.
  Variable e2(Tensor::full({}, 0.2), true);
  lag.penalty(e2, 0.5).backward();
  lag.ascend(1.0);
  EXPECT_NEAR(lag.lambda_1(), 0.53 - 0.3, 1e-6);
}

TEST(HeadGates, HeatMapShowsEachLayer) {
  std::string map = pruning::gate_heat_map({{0.0, 1.0, 0.55}, {0.05}}, 0.5);
  EXPECT_NE(map.find("layer 0  | @+| 2/3"), std::string::npos) << map;
  EXPECT_NE(map.find("layer 1  | | 0/1"), std::string::npos) << map;
  EXPECT_NE(map.find("heads open: 2 of 4"), std::string::npos) << map;
}

// A checkpoint whose heads transformers 4.x removed itself (prune_heads, then
// save_pretrained: config.json with pruned_heads) loads into Lopper with transformers'
// logits, and equals Lopper's own compaction of the same heads.
TEST(Compact, TransformersHeadPrunedCheckpointLoads) {
  const std::string dir = std::string(LOPPER_SOURCE_DIR) + "/tests/fixtures/tiny_bert_pruned";
  nn::BertConfig cfg = nn::BertConfig::from_file(dir + "/config.json");
  EXPECT_EQ(cfg.heads_per_layer, (std::vector<int64_t>{2, 1}));
  Generator init(0);
  nn::BertForSequenceClassification model(cfg, init);
  nn::LoadReport rep = nn::load_pretrained(model, dir, true);
  EXPECT_TRUE(rep.missing.empty() && rep.unexpected.empty()) << rep.str();
  model.eval();
  Loaded m;
  Tensor theirs = nn::load_safetensors(dir + "/reference.safetensors").tensors.at("logits");
  NoGradGuard ng;
  Tensor ours = model.forward(m.ref.at("input_ids"), m.ref.at("token_type_ids"), m.ref.at("attention_mask")).data();
  EXPECT_LT(max_abs_diff(ours, theirs), 1e-5);
  pruning::remove_heads(*m.model.bert, {{0, {1, 3}}, {1, {0, 1, 2}}});
  EXPECT_LT(max_abs_diff(m.logits(), theirs), 1e-5);
  EXPECT_EQ(m.model.bert->config.pruned_heads, cfg.pruned_heads);
}
