// L0 gates for a BERT encoder: Hard-Concrete gates per layer on the attention heads (the
// head_mask hook) and, optionally, on the FFN neurons (the neuron_mask hook); the CoFi-style
// Lagrangian that steers the expected head count to a target; and the step from trained
// gates to a physically smaller model. Not a PruningMethod: pruning/l0_gates.h makes these
// one, which the head_gates and remove_heads stages drive.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "nn/bert.h"
#include "pruning/hard_concrete.h"

namespace lopper::pruning {

class BertGates : public nn::Module {
 public:
  // One gate per head of each layer, as the model is now (per-layer counts may differ), and
  // with ffn one per FFN neuron. Parameters: "heads.<layer>.log_alpha", "ffn.<layer>.log_alpha".
  BertGates(const nn::BertConfig& c, bool ffn, HardConcreteParams p = {}, double init_log_alpha = 3.0);

  // Sets every layer's head_mask (and neuron_mask): sampled from gen while training (gen
  // non-null), deterministic otherwise. detach() removes them.
  void attach(nn::BertModel& model, Generator* gen) const;
  static void detach(nn::BertModel& model);

  Variable expected_heads() const;    // () expected number of open heads
  Variable expected_neurons() const;  // () expected number of open FFN neurons (needs ffn)
  // Deterministic gate values per layer and head (neuron; empty without ffn).
  std::vector<std::vector<double>> head_values() const;
  std::vector<std::vector<double>> neuron_values() const;
  int64_t num_heads() const;
  bool has_ffn() const { return ffn_ != nullptr; }

  nn::ModuleList<HardConcreteGates>& heads() { return *heads_; }
  nn::ModuleList<HardConcreteGates>& ffn() { return *ffn_; }

 private:
  std::shared_ptr<nn::ModuleList<HardConcreteGates>> heads_, ffn_;
};

// Heads whose deterministic gate is below `threshold`, per layer (indices into the layer's
// current heads). Unless allow_empty, a layer whose gates are all below it keeps its
// highest-gated head.
std::map<int64_t, std::vector<int64_t>> heads_below(const std::vector<std::vector<double>>& gates, double threshold,
                                                    bool allow_empty);

// Folds the kept heads' gate values into the attention output projection (its columns for
// that head are scaled by the gate), then removes the closed heads: the result computes
// exactly what the gated model computes in evaluation once the removed gates are 0.
// Returns the heads removed per layer.
std::map<int64_t, std::vector<int64_t>> remove_gated_heads(nn::BertModel& model,
                                                           const std::vector<std::vector<double>>& gates,
                                                           double threshold, bool allow_empty);

// The same for FFN neurons: kept neurons' gates are folded into the FFN output projection's
// columns, neurons gated below `threshold` are removed; every layer keeps at least its
// highest-gated neuron. Returns the neurons kept per layer.
std::vector<int64_t> remove_gated_neurons(nn::BertModel& model, const std::vector<std::vector<double>>& gates,
                                          double threshold);

// max over lambda of lambda_1 (e - t) + lambda_2 (e - t)^2 with e the expected kept fraction
// and t the target fraction (Wang et al. 2020, as used by CoFi, Xia et al. 2022): the model
// descends this term while the two multipliers ascend it, which drives e to t.
class Lagrangian {
 public:
  Variable penalty(const Variable& expected_fraction, double target_fraction);  // ()
  // Gradient ascent on the multipliers after backward().
  void ascend(double lr);
  double lambda_1() const { return lambda_1_.data().item<double>(); }
  double lambda_2() const { return lambda_2_.data().item<double>(); }
  void set(double l1, double l2);
  void to(Device d);

 private:
  Variable lambda_1_ = Variable(Tensor::zeros({}), true);
  Variable lambda_2_ = Variable(Tensor::zeros({}), true);
};

// A text heat map of gate values, one row per layer: " .:-=+*#%@" from 0 to 1, then the
// layer's open-head count (gate > threshold).
std::string gate_heat_map(const std::vector<std::vector<double>>& gates, double threshold = 0.5);

}  // namespace lopper::pruning
