// The one interface every pruning method implements, so that the trainer and the stages
// drive any of them (and several at once) without knowing their internals: parameters with
// their own learning rate, masks attached to a model's modules by their Hugging Face names,
// a loss term, an update after each optimizer step, checkpoint state, and finalize (fold
// the masks into the weights and remove what they pruned). Not a training loop.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "core/rng.h"
#include "nn/bert.h"
#include "nn/optim.h"

namespace lopper::pruning {

// How finalize() turns trained masks into a smaller model.
struct FinalizeOptions {
  double threshold = 0.5;           // structures whose deterministic mask is below this go
  bool allow_empty_layers = false;  // else each layer keeps its best-scored head
};

class PruningMethod {
 public:
  virtual ~PruningMethod() = default;

  // Prefix of its parameters in the optimizer and of its checkpoint file ("head_gates").
  virtual std::string name() const = 0;

  // Parameters trained with the model, in an optimizer group of their own (no weight decay).
  virtual nn::NamedParams parameters() = 0;
  virtual double learning_rate() const = 0;

  // Sets the model's mask hooks (Linear::weight_mask, head_mask, neuron_mask, prob_mask) at
  // the modules it prunes: sampled from gen while training, deterministic when gen is null.
  virtual void attach(nn::BertModel& model, Generator* gen) = 0;
  virtual void detach(nn::BertModel& model) = 0;
  // Moves its parameters and state to the model's device.
  virtual void to(Device d) = 0;

  // () The term this method adds to each micro-batch's loss at optimizer step `step` of
  // `total`. Called after attach() in the same micro-batch.
  virtual Variable penalty(int64_t step, int64_t total) = 0;
  // After each optimizer step (multiplier ascent, score and threshold schedules).
  virtual void after_step(int64_t /*step*/, int64_t /*total*/) {}

  // Everything a resumed run needs to continue bitwise (its parameters included).
  virtual nn::StateDict state_dict() const = 0;
  virtual void load_state_dict(const nn::StateDict& sd) = 0;

  // Logging: fields for a metrics.jsonl line, a few words for the progress line, and a
  // multi-line picture for each evaluation (may be empty).
  virtual void report(nlohmann::json& line) const = 0;
  virtual std::string status() const = 0;
  // One line for the log when the method is opened: what it prunes and how.
  virtual std::string describe() const = 0;
  virtual std::string picture() const { return ""; }

  // Detaches, folds the deterministic masks into the weights and removes the pruned
  // structures for real; returns what it removed for summary.json's "pruning" block.
  virtual nlohmann::json finalize(nn::BertModel& model, const FinalizeOptions& o) = 0;
};

}  // namespace lopper::pruning
