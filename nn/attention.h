// Scaled dot-product attention over heads, the core of every encoder layer, with the
// attention-probability hook between the softmax and the product with V. The per-head mask
// that pruning attaches to lives in the BERT layer, not here.
#pragma once
#include <functional>

#include "autograd/functions.h"

namespace lopper::nn {

// Rewrites the attention probabilities in every forward, from their own values (attention
// pruning: keep each row's top k, or what clears a threshold). Gets probs (B, H, T, T)
// (padded keys exactly 0), the scores they came from (B, H, T, T) (padded keys at the
// dtype's lowest value; same order within a row) and the additive mask (B, 1, 1, T) or
// undefined; returns the probabilities to use, same shape.
using ProbHook = std::function<Variable(const Variable& probs, const Tensor& scores, const Tensor& additive_mask)>;

// q, k, v (B, H, T, D); additive_mask broadcastable to (B, H, T, T) (0 keep, large
// negative drop) or undefined; prob_mask broadcastable to (B, H, T, T), multiplying the
// probabilities (differentiable), or undefined; prob_hook, if set, after it; dropout of the
// probabilities with rate dropout_p when dropout_gen is non-null. Returns (B, H, T, D).
// Without prob_mask and prob_hook, f32 on the CPU, it runs as one fused pass per (example,
// head) that keeps no (B, H, T, T) tensor (core/fused_attention.h): with no gradient to
// record and no dropout, the unfused result to rounding (bitwise beyond 64 tokens); when
// training, bitwise the unfused ops, gradients and dropout draws too.
Variable scaled_dot_product_attention(const Variable& q, const Variable& k, const Variable& v,
                                      const Tensor& additive_mask, const Variable& prob_mask = {},
                                      double dropout_p = 0.0, Generator* dropout_gen = nullptr,
                                      const ProbHook& prob_hook = {});

// (B, T, H*D) -> (B, H, T, D) view, and back (the latter makes a contiguous copy).
Variable split_heads(const Variable& x, int64_t heads);
Variable merge_heads(const Variable& x);

}  // namespace lopper::nn
