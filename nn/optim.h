// Optimizers over parameter groups (each with its own lr and weight decay: head gates
// train at 0.1 while weights train at 5e-5), gradient clipping and LR schedules.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace lopper::nn {

using NamedParams = std::vector<std::pair<std::string, Variable>>;

struct ParamGroup {
  std::string name;
  NamedParams params;
  double lr = 1e-3;
  double weight_decay = 0.0;
};

// Splits parameters into a decayed group and a no-decay group: names ending in ".bias"
// or containing "LayerNorm" (either spelling of the weight) get no decay, as in the
// Hugging Face Trainer.
std::vector<ParamGroup> decay_groups(const NamedParams& params, double lr, double weight_decay);

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  // Applies one update with each group's lr multiplied by lr_factor (the schedule).
  virtual void step(double lr_factor = 1.0) = 0;
  void zero_grad();
  std::vector<ParamGroup>& groups() { return groups_; }
  int64_t steps() const { return steps_; }
  // Moments keyed "<param>.<slot>" plus "step"; for checkpoints.
  virtual StateDict state_dict() const = 0;
  virtual void load_state_dict(const StateDict& sd) = 0;

 protected:
  std::vector<ParamGroup> groups_;
  int64_t steps_ = 0;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  void step(double lr_factor = 1.0) override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& sd) override;

 private:
  double beta1_, beta2_, eps_;
  std::vector<std::vector<Tensor>> m_, v_;  // per group, per parameter
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, double momentum = 0.0);
  void step(double lr_factor = 1.0) override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& sd) override;

 private:
  double momentum_;
  std::vector<std::vector<Tensor>> buf_;
};

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm
// before clipping (torch.nn.utils.clip_grad_norm_).
double clip_grad_norm(const std::vector<Variable>& params, double max_norm);
// The global L2 norm of params' gradients (those that have one); inf or NaN if any is.
double grad_norm(const std::vector<Variable>& params);

enum class ScheduleKind { constant, linear, cosine };
ScheduleKind schedule_from_name(const std::string& name);

// LR multiplier at a step: linear warmup from 0 to 1 over warmup_steps, then constant,
// linear decay to 0 at total_steps, or half-cosine decay to 0 at total_steps.
struct LrSchedule {
  ScheduleKind kind = ScheduleKind::linear;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double factor(int64_t step) const;
};

}  // namespace lopper::nn
