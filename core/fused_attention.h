// Attention for inference on the CPU as one pass per (example, head): scores Q Kᵀ into a
// buffer the thread keeps in cache, then scale, additive mask and softmax row by row, then
// P V written straight into the (B, T, H, D) layout that merge_heads reads without a copy.
// Nothing of size (B, H, T, T) is allocated or written to memory. The arithmetic is the
// unfused path's (nn/attention): x * scale then + mask, the same softmax row, and the same
// sgemm calls, so the result is bitwise the same; except at short sequences, where the
// two products are hand-written AVX2 kernels (a dnnl_sgemm call's fixed cost is most of a
// 25 x 25 x 32 product) and the result equals the unfused one to rounding
// (tests/nn/test_fused_attention.cpp).
// Training has its own pair (fused_attention_train and its backward): dropout of the
// probabilities, nothing of size (B, H, T, T) kept between them (the backward recomputes
// the probabilities per (example, head) in cache, and regenerates the dropout mask from its
// counters), and bitwise the unfused ops' result and gradients (the same sgemm calls and
// row arithmetic at every length: tests/nn/test_fused_attention.cpp).
// No probability mask or hook: nn/attention falls back to the unfused ops for those. f32 on
// the CPU.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace lopper {

// q, k, v (B, H, T, D) f32 with unit stride in D (split_heads' views of (B, T, H * D));
// additive_mask undefined or broadcastable to (B, H, T, T) -> (B, H, T, D), a view of a
// contiguous (B, T, H, D) tensor.
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive_mask, double scale);

// Dropout of the probabilities, as lopper::dropout would draw it over a contiguous
// (B, H, T, T) tensor: element ((b H + h) T + i) T + j takes counter offset + that index.
// p = 0: none.
struct AttentionDropout {
  double p = 0.0;
  uint64_t seed = 0, offset = 0;
};

// Training forward: q, k, v and additive_mask as above, probabilities dropped per `drop`;
// -> (B, H, T, D), a view of a contiguous (B, T, H, D) tensor. Always through dnnl_sgemm,
// so bitwise the unfused ops (matmul, scale, add, softmax, dropout, matmul).
Tensor fused_attention_train(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive_mask,
                             double scale, const AttentionDropout& drop);

// Its backward: gy (B, H, T, D), any strides -> {dq, dk, dv}, each (B, H, T, D) views of
// contiguous (B, T, H, D) tensors (split_heads' backward then needs no copy); those whose
// `need` is false stay undefined.
std::array<Tensor, 3> fused_attention_backward(const Tensor& gy, const Tensor& q, const Tensor& k, const Tensor& v,
                                               const Tensor& additive_mask, double scale, const AttentionDropout& drop,
                                               std::array<bool, 3> need = {true, true, true});

// Whether T tokens of head size D take the hand-written products (not bitwise the unfused
// ops): T <= 64 and D a multiple of 8, in builds for AVX2 and FMA.
bool fused_attention_own_kernels(int64_t t, int64_t d);

}  // namespace lopper
