// Movement pruning (Sanh et al. 2020) and its block, hybrid and soft variants (Lagunas et
// al. 2021, Hugging Face nn_pruning) as a PruningMethod: one score per block of each encoder
// matrix (query, key, value, attention output, FFN intermediate, FFN output; embeddings
// and classifier are never pruned), a 0/1 mask per block from the scores, applied through
// Linear::weight_mask. Scores are |W| (magnitude, nothing learned) or learned through the
// straight-through estimator (dL/dS = sum over the block of dL/dW' * W). Finalize folds the
// masks into the weights and removes, exactly, the heads and neurons left with nothing.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "pruning/compact.h"
#include "pruning/method.h"

namespace lopper::pruning {

enum class ScoreKind { magnitude, movement, soft_movement };
ScoreKind score_kind_from_name(const std::string& s);  // throws naming the known kinds
const char* score_kind_name(ScoreKind k);

// Rows x cols of one block; 0 means the whole dimension: [1, 0] is a whole row (an output
// neuron), [0, 1] a whole column (an input), [1, 1] one weight.
struct BlockShape {
  int64_t rows = 1, cols = 1;
};

struct BlockShapes {
  BlockShape qkv{32, 32}, attention_output{32, 32}, intermediate{1, 1}, output{1, 1};
  // nn_pruning's hybrid: one score per FFN neuron, shared by its intermediate row and its
  // output column (intermediate and output are then ignored).
  bool hybrid_ffn = false;
};

// Zhu and Gupta's cubic schedule: `initial` until warmup * total, `final` from
// (1 - cooldown) * total, and final + (initial - final) (1 - progress)^3 between.
double cubic_schedule(double initial, double final, int64_t step, int64_t total, double warmup, double cooldown);

// 1 at the v largest entries of `scores` (ties to the lower flat index), 0 elsewhere: exactly
// v ones. Same shape, dtype and device as scores.
Tensor top_v_mask(const Tensor& scores, int64_t v);

struct MovementOptions {
  ScoreKind kind = ScoreKind::movement;
  BlockShapes blocks;
  double final_density = 0.1;            // magnitude, movement: share of each matrix's blocks kept
  double warmup = 0.1, cooldown = 0.1;   // parts of the stage at full density and at the final one
  double score_lr = 0.01;
  double score_init = 0.0;               // learned scores start equal: all kept at density 1
  double threshold = 0.1;                // soft_movement: final tau of sigmoid(S) > tau (from 0)
  double lambda = 0.0;                   // soft_movement: lambda * mean(sigmoid(S)), same ramp as tau
  // nn_pruning's hybrid-filled: finalize makes every head that kept any block dense again
  // (its query/key/value rows and output columns as they were before masking), removes the
  // heads that kept none, and a later fine-tuning stage trains the dense heads.
  bool filled = false;
};

class MovementPruning final : public PruningMethod {
 public:
  // Scores for the model as it is now (per-layer widths may differ). Throws naming the
  // group and the matrix when a block shape does not divide it.
  MovementPruning(const nn::BertConfig& c, const MovementOptions& o);

  std::string name() const override { return "movement"; }
  nn::NamedParams parameters() override;
  double learning_rate() const override { return o_.score_lr; }
  void attach(nn::BertModel& model, Generator* gen) override;
  void detach(nn::BertModel& model) override;
  void to(Device d) override;
  Variable penalty(int64_t step, int64_t total) override;
  void after_step(int64_t step, int64_t total) override;
  nn::StateDict state_dict() const override;
  void load_state_dict(const nn::StateDict& sd) override;
  void report(nlohmann::json& line) const override;
  std::string status() const override;
  nlohmann::json finalize(nn::BertModel& model, const FinalizeOptions& o) override;

  std::string describe() const override;
  double density() const { return density_; }
  double threshold() const { return tau_; }

  // The six encoder matrices of a layer, as the groups name them.
  using Matrix = LayerLinear;
  struct Target {
    Matrix matrix;
    Shape mask_shape;  // the group's mask reshaped for Linear::weight_mask
  };
  struct Group {
    std::string name;  // "encoder.layer.3.attention.self.query", "encoder.layer.3.ffn_neurons"
    int64_t layer = 0;
    Shape score_shape;
    Variable scores;   // learned kinds; undefined for magnitude
    std::vector<Target> targets;
  };
  const std::vector<Group>& groups() const { return groups_; }

 private:
  Tensor magnitude_scores(nn::BertModel& model, const Group& g) const;
  Tensor mask_value(nn::BertModel& model, const Group& g) const;  // 0/1, score_shape

  MovementOptions o_;
  std::vector<Group> groups_;
  Device device_ = Device::cpu();
  double density_ = 1.0, tau_ = 0.0, lambda_ = 0.0;
  double kept_ = 1.0;  // share of encoder weights kept by the last attach, for logs
};

}  // namespace lopper::pruning
