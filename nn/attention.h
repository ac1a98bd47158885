// Scaled dot-product attention over heads, the core of every encoder layer. The per-head
// gate/mask hooks that pruning attaches to live in the BERT layer, not here.
#pragma once
#include "autograd/functions.h"

namespace lopper::nn {

// q, k, v (B, H, T, D); additive_mask broadcastable to (B, H, T, T) (0 keep, large
// negative drop) or undefined. Returns (B, H, T, D).
Variable scaled_dot_product_attention(const Variable& q, const Variable& k, const Variable& v,
                                      const Tensor& additive_mask);

// (B, T, H*D) -> (B, H, T, D) view, and back (the latter makes a contiguous copy).
Variable split_heads(const Variable& x, int64_t heads);
Variable merge_heads(const Variable& x);

}  // namespace lopper::nn
