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

namespace {
const std::string kTiny = std::string(LOPPER_SOURCE_DIR) + "/tests/fixtures/tiny_bert";

struct Loaded {
  Loaded() : cfg(nn::BertConfig::from_file(kTiny + "/config.json")), init(0), model(cfg, init) {
    nn::load_pretrained(model, kTiny, true);
    model.eval();
    ref = nn::load_safetensors(kTiny + "/reference.safetensors").tensors;
  }
  Tensor logits() const {
    NoGradGuard ng;
    return model.forward(ref.at("input_ids"), ref.at("token_type_ids"), ref.at("attention_mask")).data();
  }
  nn::BertConfig cfg;
  Generator init;
  nn::BertForSequenceClassification model;
  nn::StateDict ref;
};
}  // namespace

TEST(Compact, RemovingHeadsAndNeuronsEqualsMasking) {
  Loaded m;
  auto& layers = *m.model.bert->encoder->layer;
  // Mask heads 1 and 3 of layer 0, heads 0, 1, 2 of layer 1, and half the FFN of layer 1.
  layers[0].attention->self->head_mask = Tensor::from_vector<float>({1, 0, 1, 0}, {4});
  layers[1].attention->self->head_mask = Tensor::from_vector<float>({0, 0, 0, 1}, {4});
  std::vector<float> nm(64, 0.0f);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < 64; i += 2) { nm[i] = 1.0f; keep.push_back(i); }
  layers[1].intermediate->neuron_mask = Tensor::from_vector(nm, {64});
  Tensor masked = m.logits();

  pruning::remove_heads(*m.model.bert, {{0, {1, 3}}, {1, {0, 1, 2}}});
  pruning::keep_neurons(*m.model.bert, 1, keep);
  layers[1].intermediate->neuron_mask = Tensor();
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
  layers[0].attention->self->head_mask = Tensor::zeros({4});
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
