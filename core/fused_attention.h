// Attention for inference on the CPU as one pass per (example, head): scores Q Kᵀ into a
// buffer the thread keeps in cache, then scale, additive mask and softmax row by row, then
// P V written straight into the (B, T, H, D) layout that merge_heads reads without a copy.
// Nothing of size (B, H, T, T) is allocated or written to memory. The arithmetic is the
// unfused path's (nn/attention): x * scale then + mask, the same softmax row, and the same
// sgemm calls, so the result is bitwise the same; except at short sequences, where the
// two products are hand-written AVX2 kernels (a dnnl_sgemm call's fixed cost is most of a
// 25 x 25 x 32 product) and the result equals the unfused one to rounding
// (tests/nn/test_fused_attention.cpp).
// No gradient, no dropout, no probability mask or hook: nn/attention falls back to the
// unfused ops for those. f32 on the CPU.
#pragma once
#include "core/tensor.h"

namespace lopper {

// q, k, v (B, H, T, D) f32 with unit stride in D (split_heads' views of (B, T, H * D));
// additive_mask undefined or broadcastable to (B, H, T, T) -> (B, H, T, D), a view of a
// contiguous (B, T, H, D) tensor.
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive_mask, double scale);

// Whether T tokens of head size D take the hand-written products (not bitwise the unfused
// ops): T <= 64 and D a multiple of 8, in builds for AVX2 and FMA.
bool fused_attention_own_kernels(int64_t t, int64_t d);

}  // namespace lopper
