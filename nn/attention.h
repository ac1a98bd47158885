// Scaled dot-product attention over heads, the core of every encoder layer, with the
// attention-probability hook between the softmax and the product with V. The per-head mask
// that pruning attaches to lives in the BERT layer, not here.
#pragma once
#include "autograd/functions.h"

namespace lopper::nn {

// q, k, v (B, H, T, D); additive_mask broadcastable to (B, H, T, T) (0 keep, large
// negative drop) or undefined; prob_mask broadcastable to (B, H, T, T), multiplying the
// probabilities (differentiable), or undefined; dropout of the probabilities with rate
// dropout_p when dropout_gen is non-null. Returns (B, H, T, D).
Variable scaled_dot_product_attention(const Variable& q, const Variable& k, const Variable& v,
                                      const Tensor& additive_mask, const Variable& prob_mask = {},
                                      double dropout_p = 0.0, Generator* dropout_gen = nullptr);

// (B, T, H*D) -> (B, H, T, D) view, and back (the latter makes a contiguous copy).
Variable split_heads(const Variable& x, int64_t heads);
Variable merge_heads(const Variable& x);

}  // namespace lopper::nn
