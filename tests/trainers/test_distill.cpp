// The distillation loss against its definition computed here on the host in double:
// (1 - alpha) task + alpha T^2 KL(softmax(t/T) || softmax(s/T)) (batch mean) + hidden_weight
// x the mean over mapped layers of the hidden-state MSE, with a head-pruned student.
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops.h"
#include "nn/losses.h"
#include "nn/safetensors.h"
#include "pruning/compact.h"
#include "trainers/distill.h"

using namespace lopper;

namespace {
const std::string kTiny = std::string(LOPPER_SOURCE_DIR) + "/tests/fixtures/tiny_bert";

std::unique_ptr<nn::BertForSequenceClassification> load_tiny() {
  nn::BertConfig c = nn::BertConfig::from_file(kTiny + "/config.json");
  Generator init(0);
  auto m = std::make_unique<nn::BertForSequenceClassification>(c, init);
  nn::load_pretrained(*m, kTiny, true);
  m->eval();
  return m;
}

double host_kl(const std::vector<double>& s, const std::vector<double>& t, int64_t rows, int64_t c, double T) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double ms = -1e300, mt = -1e300, zs = 0, zt = 0;
    for (int64_t k = 0; k < c; ++k) ms = std::max(ms, s[r * c + k] / T), mt = std::max(mt, t[r * c + k] / T);
    for (int64_t k = 0; k < c; ++k) zs += std::exp(s[r * c + k] / T - ms), zt += std::exp(t[r * c + k] / T - mt);
    for (int64_t k = 0; k < c; ++k) {
      double lp = t[r * c + k] / T - mt - std::log(zt), lq = s[r * c + k] / T - ms - std::log(zs);
      total += std::exp(lp) * (lp - lq);
    }
  }
  return T * T * total / static_cast<double>(rows);
}

double host_mse(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
  return s / static_cast<double>(x.size());
}
}  // namespace

TEST(Distill, LossMatchesItsDefinition) {
  auto student = load_tiny();
  pruning::remove_heads(*student->bert, {{0, {1, 3}}, {1, {0}}});  // the student differs from the teacher
  auto ref = nn::load_safetensors(kTiny + "/reference.safetensors").tensors;
  data::Batch b{ref.at("input_ids"), ref.at("token_type_ids"), ref.at("attention_mask"), ref.at("labels"), 0};

  trainers::TeacherSpec spec;
  spec.enabled = true;
  spec.temperature = 3.0;
  spec.alpha = 0.7;
  spec.hidden_weight = 0.25;
  spec.layer_map = {{0, 0}, {2, 1}};  // embeddings to embeddings, student layer 2 to teacher layer 1
  trainers::Distiller d(load_tiny(), spec, student->bert->config);

  std::vector<Variable> hidden;
  Variable logits = student->forward(b.input_ids, b.token_type_ids, b.attention_mask, {}, &hidden);
  Variable task = nn::cross_entropy(logits, b.labels);
  trainers::Distiller::Parts p = d.loss(task, logits, hidden, b, false);

  auto teacher = load_tiny();
  std::vector<Variable> th;
  Tensor tl = teacher->forward(b.input_ids, b.token_type_ids, b.attention_mask, {}, &th).data();
  double kl = host_kl(logits.data().to_vector<double>(), tl.to_vector<double>(), 2, 3, 3.0);
  double mse = (host_mse(hidden[0].data(), th[0].data()) + host_mse(hidden[2].data(), th[1].data())) / 2;
  EXPECT_GT(kl, 1e-3);  // the pruned student really differs
  EXPECT_NEAR(p.logits, kl, 1e-5 * std::max(1.0, kl));
  EXPECT_NEAR(p.hidden, mse, 1e-5 * std::max(1.0, mse));
  double task_v = task.data().item<double>();
  EXPECT_NEAR(p.total.data().item<double>(), 0.3 * task_v + 0.7 * kl + 0.25 * mse, 1e-5);

  // Gradients reach the student only; the teacher stays frozen.
  p.total.backward();
  EXPECT_TRUE(student->parameter("bert.encoder.layer.0.attention.self.query.weight").grad().defined());

  // A map outside either model is refused at construction.
  spec.layer_map = {{3, 1}};
  EXPECT_THROW(trainers::Distiller(load_tiny(), spec, student->bert->config), Error);
}
