// The product of pruned attention probabilities with V that skips what the rule dropped:
// for inference with attention pruning (pruning/attention_prune), where P (B, H, T, T) keeps
// each row's top k, or what clears a threshold, of its valid keys. Each kept entry adds one
// row of V (D floats); the dense product reads every entry. Scores and the softmax stay
// dense (the rule needs them). Same rule as the training path's mask: ranks by score, ties
// to the lower key, the [CLS] row whole unless prune_first_row. Not differentiable; f32, CPU.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace lopper {

struct SparseAttentionRule {
  // Top k per row: k entries, or a share of the row's valid keys (rounded up, at least 1).
  int64_t k = 0;
  double keep = 0;
  // Else a threshold: p >= threshold, and always the row's largest entry.
  double threshold = 0;
  bool renormalize = false;
  bool prune_first_row = false;
};

// probs, scores (B, H, T, T) (scores with the additive mask added: padded keys at the
// dtype's lowest), v (B, H, T, D), valid (B) i64: each example's valid keys, its first ones
// (right padding, as Lopper's batches are) -> (B, H, T, D).
Tensor sparse_probs_times_v(const Tensor& probs, const Tensor& scores, const Tensor& v, const Tensor& valid,
                            const SparseAttentionRule& rule);

}  // namespace lopper
