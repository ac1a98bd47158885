// One training step, top to bottom.
#include "trainers/trainer.h"

#include <chrono>

#include "nn/losses.h"

namespace lopper::trainers {

namespace {
std::vector<nn::ParamGroup> param_groups(nn::BertForSequenceClassification& model,
                                         const std::vector<pruning::PruningMethod*>& methods, const TrainerOptions& o) {
  auto groups = nn::decay_groups(model.named_parameters(), o.lr, o.weight_decay);
  for (pruning::PruningMethod* m : methods) groups.push_back({m->name(), m->parameters(), m->learning_rate(), 0.0});
  return groups;
}
}  // namespace

Trainer::Trainer(nn::BertForSequenceClassification& model, std::vector<pruning::PruningMethod*> methods, Distiller* teacher,
                 Communicator& comm, Generator& gen, const TrainerOptions& o, const pruning::HeldMasks* held)
    : model_(model), methods_(std::move(methods)), teacher_(teacher), comm_(comm), gen_(gen), o_(o),
      opt_(param_groups(model, methods_, o)) {
  for (auto& g : opt_.groups())
    for (auto& [n, v] : g.params) trainable_.push_back(v);
  for (pruning::PruningMethod* m : methods_)
    for (auto& [n, v] : m->parameters()) method_params_.push_back(v);
  if (held && !held->empty()) {
    size_t found = 0;
    for (auto& [n, v] : model_.named_parameters())
      if (auto it = held->find(n); it != held->end()) {
        LOPPER_CHECK(it->second.shape() == v.shape(), "[trainer] held mask of ", n, " is ", shape_str(it->second.shape()),
                     ", the weight ", shape_str(v.shape()));
        held_.emplace_back(v, it->second.to(v.device()).to(v.dtype()));
        ++found;
      }
    LOPPER_CHECK(found == held->size(), "[trainer] ", held->size() - found, " held masks name no parameter of the model");
  }
}

Variable Trainer::task_loss(const Variable& logits, const Tensor& labels) const {
  return o_.regression ? model_.loss(logits, labels) : nn::cross_entropy(logits, labels, nn::kIgnoreIndex, o_.label_smoothing);
}

StepStats Trainer::step(const std::vector<data::Batch>& micro_batches, int64_t step, int64_t total) {
  StepStats st;
  model_.train();
  opt_.zero_grad();
  const double k = 1.0 / static_cast<double>(micro_batches.size());
  for (const data::Batch& b : micro_batches) {
    for (pruning::PruningMethod* m : methods_) m->attach(*model_.bert, &gen_);  // sampled masks
    std::vector<Variable> hidden;                                                // (B, T, C) per layer
    bool want_hidden = teacher_ && teacher_->wants_hidden();
    Variable logits = model_.forward(b.input_ids, b.token_type_ids, b.attention_mask, {&gen_},
                                     want_hidden ? &hidden : nullptr);  // (B, labels)
    Variable loss = task_loss(logits, b.labels);                        // ()
    st.task += loss.data().item<double>();
    if (teacher_) {
      Distiller::Parts p = teacher_->loss(loss, logits, hidden, b, o_.regression);
      loss = p.total;
      st.logits += p.logits;
      st.hidden += p.hidden;
    }
    for (pruning::PruningMethod* m : methods_) loss = ag::add(loss, m->penalty(step, total));
    st.loss += loss.data().item<double>();
    ag::scale(loss, k).backward();
    st.examples += b.input_ids.size(0);
  }
  auto t0 = std::chrono::steady_clock::now();
  all_reduce_gradients(comm_, trainable_);
  st.comm_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  pruning::mask_gradients(held_);  // pruned weights stay exactly zero
  double model_norm = nn::clip_grad_norm(model_.parameters(), o_.max_grad_norm);  // 0: none; not the methods'
  st.grad_norm = std::hypot(model_norm, nn::grad_norm(method_params_));          // before clipping
  if (!st.finite()) return st;  // no update: the loop stops the run at this step
  double factor = o_.schedule.factor(opt_.steps());
  st.lr = o_.lr * factor;
  opt_.step(factor);
  for (pruning::PruningMethod* m : methods_) m->after_step(step, total);
  return st;
}

}  // namespace lopper::trainers
