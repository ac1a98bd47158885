// The training step: zero grads, micro-batches (forward, task loss + distillation + every
// active method's penalty, backward), all-reduce, clip, optimizer step, each method's
// after_step. One screen in trainer.cpp. Not the loop around it (epochs, evaluation,
// checkpoints: trainers/train_loop.cpp) and not where batches come from.
#pragma once
#include <cmath>
#include <vector>

#include "data/dataset.h"
#include "nn/bert.h"
#include "nn/optim.h"
#include "pruning/method.h"
#include "pruning/nm_prune.h"
#include "trainers/communicator.h"
#include "trainers/distill.h"

namespace lopper::trainers {

struct TrainerOptions {
  double lr = 5e-5;
  double weight_decay = 0.01;
  nn::LrSchedule schedule;  // warm-up and decay over the stage's steps
  double max_grad_norm = 1.0;  // 0: no clipping (method parameters are never clipped)
  double label_smoothing = 0;
  bool regression = false;
};

// What one step did, for logs: sums over its micro-batches.
struct StepStats {
  double loss = 0, task = 0, logits = 0, hidden = 0;  // total, task, logit and hidden distillation
  int64_t examples = 0;
  double lr = 0;         // the learning rate this step used
  double grad_norm = 0;  // of the model's and the methods' gradients, before clipping
  double comm_seconds = 0;  // wall time of the gradient all-reduce
  // A step whose loss or gradients are NaN or infinite changes no weight.
  bool finite() const { return std::isfinite(loss) && std::isfinite(grad_norm); }
};

class Trainer {
 public:
  // methods: the active pruning methods (their parameters form one optimizer group each);
  // teacher: null when the stage does not distill; gen: dropout and mask sampling.
  // held: weights whose gradients are masked (by parameter name), or null.
  Trainer(nn::BertForSequenceClassification& model, std::vector<pruning::PruningMethod*> methods, Distiller* teacher,
          Communicator& comm, Generator& gen, const TrainerOptions& o, const pruning::HeldMasks* held = nullptr);

  // One optimizer step over micro_batches (grad_accum of them) at step `step` of `total`;
  // none if the loss or a gradient is not finite (StepStats::finite() says so).
  StepStats step(const std::vector<data::Batch>& micro_batches, int64_t step, int64_t total);

  nn::AdamW& optimizer() { return opt_; }

 private:
  Variable task_loss(const Variable& logits, const Tensor& labels) const;  // ()

  nn::BertForSequenceClassification& model_;
  std::vector<pruning::PruningMethod*> methods_;
  Distiller* teacher_;
  Communicator& comm_;
  Generator& gen_;
  TrainerOptions o_;
  std::vector<Variable> trainable_;  // model and method parameters, for the all-reduce
  std::vector<Variable> method_params_;
  std::vector<std::pair<Variable, Tensor>> held_;  // (parameter, 0/1 mask)
  nn::AdamW opt_;
};

}  // namespace lopper::trainers
