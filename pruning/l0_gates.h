// Hard-Concrete L0 gates (Voita et al. 2019) on attention heads and optionally FFN neurons,
// as a PruningMethod: an expected-L0 penalty, or the Lagrangian (Wang et al. 2020, CoFi)
// that drives the expected head count to a target reached after a linear warm-up. Not the
// gate math (pruning/hard_concrete.h) nor the removal (pruning/gates.h): this is the glue
// that makes them one method.
#pragma once
#include <memory>

#include "pruning/gates.h"
#include "pruning/method.h"

namespace lopper::pruning {

struct L0GateOptions {
  double l0_penalty = 0;             // coefficient of the expected number of open heads
  int64_t target_heads = 0;          // > 0: the Lagrangian instead of l0_penalty
  double target_warmup_ratio = 0.5;  // the target falls linearly from all heads over this part
  double lagrangian_lr = 0.05;       // ascent rate of the two multipliers
  double gate_lr = 0.1;
  double temperature = 2.0 / 3.0;    // Hard-Concrete beta
  double gate_init = 3.0;            // initial log_alpha (gates open)
  bool ffn_gates = false;            // gate every FFN neuron too
  double ffn_l0_penalty = 0;         // coefficient of the expected number of open FFN neurons
};

class L0Gates final : public PruningMethod {
 public:
  // Gates for the model as it is now (per-layer head and neuron counts may differ).
  L0Gates(const nn::BertConfig& c, const L0GateOptions& o);

  std::string name() const override { return "head_gates"; }
  nn::NamedParams parameters() override;
  double learning_rate() const override { return o_.gate_lr; }
  void attach(nn::BertModel& model, Generator* gen) override;
  void detach(nn::BertModel& model) override { BertGates::detach(model); }
  void to(Device d) override {
    gates_->to(d);
    lagrangian_.to(d);
  }
  Variable penalty(int64_t step, int64_t total) override;
  void after_step(int64_t step, int64_t total) override;
  nn::StateDict state_dict() const override;
  void load_state_dict(const nn::StateDict& sd) override;
  void report(nlohmann::json& line) const override;
  std::string status() const override;
  std::string picture() const override;
  nlohmann::json finalize(nn::BertModel& model, const FinalizeOptions& o) override;

  std::string describe() const override;
  const BertGates& gates() const { return *gates_; }

 private:
  std::vector<int64_t> open_neurons() const;  // deterministic gate >= 0.5, per layer

  L0GateOptions o_;
  std::shared_ptr<BertGates> gates_;
  Lagrangian lagrangian_;
  double expected_heads_ = 0, expected_neurons_ = 0;  // of the last penalty(), for logs
};

}  // namespace lopper::pruning
