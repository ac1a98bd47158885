// The loop every training stage runs (finetune, head_gates, mask_tune): epochs of seeded
// batches through the Trainer's step, logging, evaluation, best and periodic checkpoints,
// and resumption in the middle of an epoch. Not the step itself (trainers/trainer.h).
#pragma once
#include <string>

#include "trainers/experiment.h"
#include "trainers/fields.h"

namespace lopper::trainers {

class Run;

// The keys every training stage has.
struct TrainOptions : StageOptions {
  double epochs = 1;
  int64_t max_steps = 0;  // 0: from epochs
  double lr = 5e-5;
  int64_t batch_size = 32;
  int64_t eval_batch_size = 64;
  double weight_decay = 0.01;
  double warmup_ratio = 0.06;
  std::string schedule = "linear";
  int64_t grad_accum = 1;
  double max_grad_norm = 1.0;
  double label_smoothing = 0.0;
  int64_t eval_every = 0;        // steps; 0: at the end of each epoch
  int64_t checkpoint_every = 0;  // steps; 0: at each evaluation
  int64_t log_every = 50;
  bool load_best = true;  // default false for stages that open masks (the best would be the least pruned)
  bool distill = false;   // default: true for stages after fine-tuning when a teacher is set
};

// Reads the training keys into o; load_best and distill default as the stage says.
void parse_train_options(Fields& f, const Experiment& e, TrainOptions& o, bool load_best_default, bool distill_default);

// Runs the stage's optimizer steps with every active pruning method of the run.
void train_stage(Run& run, const StageSpec& s, const TrainOptions& o);

}  // namespace lopper::trainers
