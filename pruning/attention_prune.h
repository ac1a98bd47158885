// Attention-probability pruning as a PruningMethod: in every forward each layer's
// probabilities P = softmax(QK^T) (B, H, T, T) are masked by a rule computed from P itself
// (through nn::BertSelfAttention::prob_hook): a row's top k, a fixed or scheduled threshold,
// or a threshold learned per layer and head toward a target sparsity; or, as the comparison,
// a static mask over positions learned per head. Not a kernel: the speed comes from
// core/sparse_attention (inference); here the masked P multiplies V densely.
//
// Deliberate choices (docs/experiment.md, attention_prune):
// - Padding: padded keys never count (k and shares are of the row's valid keys, never
//   chosen, 0 in the mask); padded query rows are masked like any row but never counted.
// - [CLS]: its query row stays dense unless prune_cls_row (the pooler reads it alone).
// - A row never loses all its keys: a threshold always keeps the row's largest entry.
// - Gradient: the masked probabilities' backward is exact (kept entries get theirs, dropped
//   ones zero); a learned threshold gets dL/dtau through a straight-through estimator (the
//   hard mask forward, a sigmoid in log p around tau backward), static position scores
//   dL/dS straight through (identity).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "pruning/gates.h"
#include "pruning/method.h"

namespace lopper::pruning {

enum class AttentionRule { topk, threshold, learned_threshold, static_positions };
AttentionRule attention_rule_from_name(const std::string& s);  // throws naming the known rules
const char* attention_rule_name(AttentionRule r);

struct AttentionPruneOptions {
  AttentionRule rule = AttentionRule::topk;
  // topk and static_positions: entries kept per row, k > 0, or a share of the row's valid
  // keys in (0, 1] (rounded up, at least 1); exactly one is set.
  int64_t k = 0;
  double keep = 0;
  // threshold: keep p >= threshold, in [0, 1); with schedule, cubic from 0 to it over the
  // stage (warmup, cooldown as movement). learned_threshold: the initial threshold (> 0).
  // relative: thresholds are in units of the row's uniform probability 1/n (n valid keys):
  // keep p >= threshold / n, the same cut for a short and a long row's shape (>= 0, any size).
  double threshold = 0;
  bool relative = false;
  bool schedule = false;
  double warmup = 0.1, cooldown = 0.1;
  // learned_threshold: the share of valid entries dropped it is driven to (a Lagrangian,
  // as head_gates' target), reached on a cubic schedule from the initial thresholds' share.
  double target_sparsity = 0;
  // learned_threshold's backward: the hard mask's gradient is that of sigmoid((log p - log
  // tau) / surrogate_width), so tau learns from the entries near it, and the density's
  // gradient is the share of entries there (how much it really moves).
  double surrogate_width = 0.5;
  double lr = 0.01;            // learned thresholds (as log tau) and static position scores
  double lagrangian_lr = 0.05;
  bool renormalize = false;    // divide the kept probabilities by their row's sum
  bool prune_cls_row = false;  // else the [CLS] query row keeps every valid key
  int64_t max_len = 0;         // static_positions: positions scored (data.max_seq_len)
};

// Checks o (k/keep, threshold and sparsity ranges); errors lead with the key.
void check_attention_options(const AttentionPruneOptions& o);

class AttentionPruning final : public PruningMethod {
 public:
  AttentionPruning(const nn::BertConfig& c, const AttentionPruneOptions& o);

  std::string name() const override { return "attention_prune"; }
  nn::NamedParams parameters() override;
  double learning_rate() const override { return o_.lr; }
  void attach(nn::BertModel& model, Generator* gen) override;
  void detach(nn::BertModel& model) override;
  void to(Device d) override;
  Variable penalty(int64_t step, int64_t total) override;
  void after_step(int64_t step, int64_t total) override;
  nn::StateDict state_dict() const override;
  void load_state_dict(const nn::StateDict& sd) override;
  void report(nlohmann::json& line) const override;
  std::string status() const override;
  std::string describe() const override;
  std::string picture() const override;
  // Attention pruning removes nothing: the rule stays with the model (see freeze).
  nlohmann::json finalize(nn::BertModel& model, const FinalizeOptions& o) override;

  // The stage is over: the rule is what it is now (no more learning, no penalty, the
  // scheduled threshold at its final value); it stays attached for evaluation and export.
  void freeze();
  bool frozen() const { return frozen_; }
  // static_positions: the position scores from the mean probabilities of the forwards that
  // `forwards` runs (the rule detached meanwhile), per layer and head.
  void calibrate(nn::BertModel& model, const std::function<void()>& forwards);

  // The rule as config.json metadata: kind, its values (per layer and head where learned).
  nlohmann::json rule_json() const;
  // Realized sparsity (dropped share of valid query x key entries) of the deterministic
  // forwards since the last attach(model, nullptr): overall, per layer, per layer and head.
  nlohmann::json sparsity_report() const;
  double threshold_now() const;  // threshold rule: the value in use
  // The counts behind sparsity_report (kept, then valid, per layer and head) as one f64
  // tensor, for summing them over data-parallel ranks, and back.
  Tensor eval_counts() const;
  void set_eval_counts(const Tensor& counts);

 private:
  Variable apply(int64_t layer, const Variable& probs, const Tensor& scores, const Tensor& additive_mask);
  Tensor row_counts(const std::vector<int64_t>& lengths, int64_t heads, int64_t t, Device d) const;

  AttentionPruneOptions o_;
  std::vector<int64_t> heads_;  // per layer
  int64_t step_ = 0, total_ = 1;
  bool frozen_ = false;
  std::vector<Variable> theta_;  // learned_threshold: (H) log tau per layer
  std::vector<Variable> scores_; // static_positions: (H, max_len, max_len) per layer
  Lagrangian lagrangian_;
  // Counts of the current deterministic pass (eval) and of the last training forward.
  bool eval_ = false;
  std::vector<std::vector<double>> kept_, valid_;  // [layer][head]
  double train_kept_ = 0, train_valid_ = 0;
  Variable train_density_;  // () kept share of the last training forward, differentiable in tau
  double target_density_ = 1;
  double start_density_ = -1;  // learned_threshold: density at the first step (-1: not yet)
};

}  // namespace lopper::pruning
