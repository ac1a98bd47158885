// Distillation losses against a frozen teacher.
#include "trainers/distill.h"

#include <cmath>

#include "nn/losses.h"

namespace lopper::trainers {

Distiller::Distiller(std::unique_ptr<nn::BertForSequenceClassification> teacher, const TeacherSpec& spec,
                     const nn::BertConfig& student)
    : teacher_(std::move(teacher)), spec_(spec) {
  map_ = check(spec_, teacher_->config(), student);
  teacher_->eval();
  teacher_->set_requires_grad(false);
}

std::vector<std::pair<int64_t, int64_t>> Distiller::check(const TeacherSpec& spec, const nn::BertConfig& t,
                                                          const nn::BertConfig& student) {
  LOPPER_CHECK(t.num_labels == student.num_labels, "teacher: ", t.num_labels, " labels, the student has ", student.num_labels);
  LOPPER_CHECK(t.vocab_size == student.vocab_size, "teacher: vocabulary of ", t.vocab_size, ", the student's has ",
               student.vocab_size, " (they must share a tokenizer)");
  if (spec.hidden_weight <= 0) return {};
  LOPPER_CHECK(t.hidden_size == student.hidden_size, "teacher.hidden_weight: hidden sizes differ (teacher ", t.hidden_size,
               ", student ", student.hidden_size, ")");
  std::vector<std::pair<int64_t, int64_t>> map = spec.layer_map;
  if (map.empty()) {
    for (int64_t i = 1; i <= student.num_hidden_layers; ++i)
      map.emplace_back(i, std::lround(static_cast<double>(i * t.num_hidden_layers) / static_cast<double>(student.num_hidden_layers)));
  }
  for (auto [s, k] : map)
    LOPPER_CHECK(s <= student.num_hidden_layers && k <= t.num_hidden_layers, "teacher.layer_map: [", s, ", ", k,
                 "] is out of range (student has ", student.num_hidden_layers, " layers, teacher ", t.num_hidden_layers,
                 "; 0 is the embeddings)");
  return map;
}

Distiller::Parts Distiller::loss(const Variable& task_loss, const Variable& student_logits,
                                 const std::vector<Variable>& student_hidden, const data::Batch& b, bool regression) const {
  std::vector<Variable> teacher_hidden;
  Tensor teacher_logits;
  {
    NoGradGuard ng;
    teacher_logits = teacher_->forward(b.input_ids, b.token_type_ids, b.attention_mask, {},
                                       wants_hidden() ? &teacher_hidden : nullptr).data();
  }
  Variable soft = regression ? nn::mse(student_logits, Variable(teacher_logits))
                             : nn::kl_div_distill(student_logits, teacher_logits, spec_.temperature);
  Parts p;
  p.task = task_loss.data().item<double>();
  p.logits = soft.data().item<double>();
  p.total = ag::add(ag::scale(task_loss, 1.0 - spec_.alpha), ag::scale(soft, spec_.alpha));
  if (wants_hidden()) {
    LOPPER_CHECK(!student_hidden.empty(), "[distill] hidden-state distillation needs the student's hidden states");
    Variable h;
    for (auto [s, k] : map_) {
      Variable m = nn::mse(student_hidden.at(static_cast<size_t>(s)), Variable(teacher_hidden.at(static_cast<size_t>(k)).data()));
      h = h.defined() ? ag::add(h, m) : m;
    }
    h = ag::scale(h, 1.0 / static_cast<double>(map_.size()));
    p.hidden = h.data().item<double>();
    p.total = ag::add(p.total, ag::scale(h, spec_.hidden_weight));
  }
  return p;
}

}  // namespace lopper::trainers
