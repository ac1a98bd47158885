// The training step against PyTorch: one whole step of the tiny BERT (two micro-batches,
// clipping, AdamW) against tests/fixtures/tiny_bert/train_step.safetensors, made by
// make_train_step_fixture.py; and the step's contract with pruning methods (attach before
// each forward, the penalty in each micro-batch, after_step once, their own optimizer group,
// never clipped).
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops.h"
#include "nn/safetensors.h"
#include "trainers/trainer.h"

using namespace lopper;

namespace {
const std::string kTiny = std::string(LOPPER_SOURCE_DIR) + "/tests/fixtures/tiny_bert";

std::unique_ptr<nn::BertForSequenceClassification> tiny_model_without_dropout() {
  nn::BertConfig cfg = nn::BertConfig::from_file(kTiny + "/config.json");
  cfg.hidden_dropout_prob = 0;
  cfg.attention_probs_dropout_prob = 0;
  Generator init(0);
  auto model = std::make_unique<nn::BertForSequenceClassification>(cfg, init);
  nn::LoadReport rep = nn::load_pretrained(*model, kTiny, true);
  EXPECT_TRUE(rep.missing.empty() && rep.unexpected.empty()) << rep.str();
  return model;
}

data::Batch batch_from(const nn::StateDict& ref, int i) {
  std::string p = "batch." + std::to_string(i) + ".";
  return {ref.at(p + "input_ids"), ref.at(p + "token_type_ids"), ref.at(p + "attention_mask"), ref.at(p + "labels"), 0};
}

double largest_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::fabs(v));
  return m;
}
}  // namespace

TEST(Trainer, OneStepMatchesPyTorch) {
  nn::StateDict ref = nn::load_safetensors(kTiny + "/train_step.safetensors").tensors;
  auto model = tiny_model_without_dropout();
  trainers::SingleProcess comm;
  Generator gen(1);
  trainers::TrainerOptions o;
  o.lr = 1e-3;
  o.weight_decay = 0.01;
  o.schedule = {nn::ScheduleKind::constant, 0, 1};
  o.max_grad_norm = 1.0;
  trainers::Trainer trainer(*model, {}, nullptr, comm, gen, o);
  std::vector<data::Batch> micro = {batch_from(ref, 0), batch_from(ref, 1)};
  std::map<std::string, Tensor> before;
  for (auto& [n, p] : model->named_parameters()) before[n] = p.data().clone();

  trainers::StepStats st = trainer.step(micro, 0, 1);

  // The loss: the sum of the two micro-batches' losses (each backpropagated at 1/2).
  double want_loss = ref.at("loss.0").item<double>() + ref.at("loss.1").item<double>();
  EXPECT_NEAR(st.loss, want_loss, 2e-6 * std::fabs(want_loss));
  EXPECT_EQ(st.examples, 5);
  EXPECT_DOUBLE_EQ(st.lr, 1e-3);
  ASSERT_GT(ref.at("grad_norm").item<double>(), 1.0) << "the fixture should exercise clipping";

  // Gradients (after clipping) relative to the largest one: single-precision sums in a
  // different order, as in tests/nn/test_bert.cpp.
  double largest = 0;
  for (auto& [n, p] : model->named_parameters()) largest = std::max(largest, largest_abs(ref.at("grad." + n)));
  int checked = 0, skipped = 0;
  double worst_grad = 0, worst_weight = 0;
  for (auto& [n, p] : model->named_parameters()) {
    SCOPED_TRACE(n);
    ASSERT_TRUE(p.grad().defined());
    double e = max_abs_diff(p.grad(), ref.at("grad." + n)) / largest;
    worst_grad = std::max(worst_grad, e);
    EXPECT_LT(e, 1e-5);
    // Weights after the step. AdamW's first step moves each weight by about lr * sign(g)
    // (m / sqrt(v) = g / |g|), so where |g| is at the rounding noise of the gradient the
    // direction itself is noise: compare only where |g| is clearly above it, and there
    // within 1e-3 of the step (1e-6 absolute at lr 1e-3). Exact zeros on both sides (embedding
    // rows of tokens not in the batch) are compared too: only weight decay moves them. The
    // key biases' gradient is zero in exact arithmetic and rounding noise on both sides.
    auto got = p.data().to_vector<double>(), want = ref.at("after." + n).to_vector<double>();
    auto g = ref.at("grad." + n).to_vector<double>(), w0 = before[n].to_vector<double>();
    auto gl = p.grad().to_vector<double>();
    for (size_t i = 0; i < got.size(); ++i) {
      bool both_zero = g[i] == 0 && gl[i] == 0;
      if (!both_zero && std::max(std::fabs(g[i]), std::fabs(gl[i])) < 1e-4 * largest) {
        ++skipped;
        continue;
      }
      ASSERT_NEAR(got[i], want[i], 1e-6) << "element " << i << " (was " << w0[i] << ", grad " << g[i] << ")";
      worst_weight = std::max(worst_weight, std::fabs(got[i] - want[i]));
      ++checked;
    }
  }
  EXPECT_GT(checked, 10000);  // most of the tiny model's ~20k weights
  std::printf("loss %.7f vs %.7f; worst gradient error %.2e of the largest; worst weight error %.2e over %d weights "
              "(%d with |g| below the noise skipped)\n",
              st.loss, want_loss, worst_grad, worst_weight, checked, skipped);
}

namespace {
// A method with one parameter vector p: penalty c * sum(p^2), counting its calls.
class CountingMethod : public pruning::PruningMethod {
 public:
  CountingMethod() : p(Tensor::from_vector<float>({3.0f, -2.0f}, {2}), true) {}
  std::string name() const override { return "counting"; }
  nn::NamedParams parameters() override { return {{"counting.p", p}}; }
  double learning_rate() const override { return 0.5; }
  void attach(nn::BertModel&, Generator* gen) override { attaches += gen != nullptr; }
  void detach(nn::BertModel&) override {}
  void to(Device) override {}
  Variable penalty(int64_t step, int64_t total) override {
    EXPECT_EQ(attaches, ++penalties) << "attach comes before each micro-batch's penalty";
    EXPECT_EQ(step, 4);
    EXPECT_EQ(total, 9);
    return ag::scale(ag::sum_all(ag::mul(p, p)), c);
  }
  void after_step(int64_t, int64_t) override {
    ++after;
    grad_at_after = p.grad().to_vector<float>();
  }
  nn::StateDict state_dict() const override { return {}; }
  void load_state_dict(const nn::StateDict&) override {}
  void report(nlohmann::json&) const override {}
  std::string status() const override { return ""; }
  std::string describe() const override { return "counts its calls"; }
  nlohmann::json finalize(nn::BertModel&, const pruning::FinalizeOptions&) override { return {}; }

  Variable p;  // (2)
  double c = 10.0;
  int attaches = 0, penalties = 0, after = 0;
  std::vector<float> grad_at_after;
};
}  // namespace

TEST(Trainer, DrivesPruningMethodsThroughTheirInterface) {
  nn::StateDict ref = nn::load_safetensors(kTiny + "/train_step.safetensors").tensors;
  auto model = tiny_model_without_dropout();
  CountingMethod m;
  trainers::SingleProcess comm;
  Generator gen(1);
  trainers::TrainerOptions o;
  o.schedule = {nn::ScheduleKind::constant, 0, 9};
  o.max_grad_norm = 1e-3;  // tiny: the model's gradients are clipped, the method's must not be
  trainers::Trainer trainer(*model, {&m}, nullptr, comm, gen, o);
  ASSERT_EQ(trainer.optimizer().groups().back().name, "counting");
  EXPECT_EQ(trainer.optimizer().groups().back().lr, 0.5);
  EXPECT_EQ(trainer.optimizer().groups().back().weight_decay, 0.0);

  trainer.step({batch_from(ref, 0), batch_from(ref, 1)}, 4, 9);

  EXPECT_EQ(m.attaches, 2);
  EXPECT_EQ(m.penalties, 2);
  EXPECT_EQ(m.after, 1);
  // d/dp of c sum(p^2), backpropagated at 1/2 in each of two micro-batches: 2 c p, unclipped.
  ASSERT_EQ(m.grad_at_after.size(), 2u);
  EXPECT_FLOAT_EQ(m.grad_at_after[0], 2 * 10.0f * 3.0f);
  EXPECT_FLOAT_EQ(m.grad_at_after[1], 2 * 10.0f * -2.0f);
  // AdamW's first step moves p by lr against the sign of its gradient.
  auto p = m.p.data().to_vector<float>();
  EXPECT_NEAR(p[0], 3.0f - 0.5f, 1e-5);
  EXPECT_NEAR(p[1], -2.0f + 0.5f, 1e-5);
}
