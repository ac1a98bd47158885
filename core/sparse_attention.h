// The product of pruned attention probabilities with V that skips what the rule dropped:
// for inference with attention pruning (pruning/attention_prune), where P (B, H, T, T) keeps
// each row's top k, or what clears a threshold, of its valid keys. Each kept entry adds one
// row of V (D floats); the dense product reads every entry. Scores and the softmax stay
// dense (the rule needs them). Same rule as the training path's mask: ranks by score, ties
// to the lower key, the [CLS] row whole unless prune_first_row. Not differentiable; f32, CPU.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/tensor.h"

namespace lopper {

struct SparseAttentionRule {
  // Top k per row: k entries, or a share of the row's valid keys (rounded up, at least 1).
  int64_t k = 0;
  double keep = 0;
  // Else a threshold: p >= threshold, and always the row's largest entry; relative: p >=
  // threshold / n, the threshold in units of the row's uniform probability (n valid keys).
  double threshold = 0;
  bool relative = false;
  bool renormalize = false;
  bool prune_first_row = false;
};

// Entries a top-k rule keeps of a row with n valid keys: k (at most n), or the share keep
// of n rounded up, at least 1. The training path's mask (pruning/attention_prune) counts
// with this too.
inline int64_t kept_per_row(int64_t k, double keep, int64_t n) {
  if (k > 0) return std::min(k, n);
  return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(keep * static_cast<double>(n) - 1e-9)), 1, n);
}

// probs, scores (B, H, T, T) (scores with the additive mask added: padded keys at the
// dtype's lowest), v (B, H, T, D), valid (B) i64: each example's valid keys, its first ones
// (right padding, as Lopper's batches are) -> (B, H, T, D).
Tensor sparse_probs_times_v(const Tensor& probs, const Tensor& scores, const Tensor& v, const Tensor& valid,
                            const SparseAttentionRule& rule);

}  // namespace lopper
