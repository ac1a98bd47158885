// Differentiable functions on Variables. Each forward sits beside its backward closure,
// which captures only what the gradient needs. Built on core/ops; no kernels here.
#pragma once
#include <vector>

#include "autograd/variable.h"
#include "core/ops.h"

namespace lopper::ag {

// ---- elementwise ----
Variable unary(UnaryOp op, const Variable& x, UnaryParams p = {});
// neg(x), ..., clamp(x, lo, hi), ...: one per entry of LOPPER_UNARY_OPS (core/kernels/elementwise.h).
#define LOPPER_X(name, F, arity) LOPPER_UNARY_WRAPPER_##arity(Variable, name)
LOPPER_UNARY_OPS(LOPPER_X)
#undef LOPPER_X

Variable binary(BinaryOp op, const Variable& a, const Variable& b);
#define LOPPER_X(name, F) LOPPER_BINARY_WRAPPER(Variable, name)
LOPPER_BINARY_OPS(LOPPER_X)
#undef LOPPER_X

// where(cond, a, b): cond is a bool tensor, not differentiated.
Variable where(const Tensor& cond, const Variable& a, const Variable& b);
Variable masked_fill(const Variable& x, const Tensor& mask, double value);

// ---- shape (views where the tensor op is a view) ----
Variable reshape(const Variable& x, const Shape& shape);
Variable transpose(const Variable& x, int64_t d0, int64_t d1);
Variable permute(const Variable& x, const std::vector<int64_t>& dims);
Variable slice(const Variable& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Variable select(const Variable& x, int64_t dim, int64_t index);
Variable unsqueeze(const Variable& x, int64_t dim);
Variable squeeze(const Variable& x, int64_t dim);
Variable expand(const Variable& x, const Shape& shape);
Variable contiguous(const Variable& x);
Variable concat(const std::vector<Variable>& xs, int64_t dim);

// ---- reductions ----
Variable sum(const Variable& x, int64_t dim, bool keepdim = false);
Variable mean(const Variable& x, int64_t dim, bool keepdim = false);
Variable max(const Variable& x, int64_t dim, bool keepdim = false);  // values; grad to the argmax
Variable sum_all(const Variable& x);
Variable mean_all(const Variable& x);

// ---- rows, products, indexing ----
Variable softmax(const Variable& x);
Variable log_softmax(const Variable& x);
Variable layer_norm(const Variable& x, const Variable& weight, const Variable& bias, double eps);
Variable matmul(const Variable& a, const Variable& b, bool trans_a = false, bool trans_b = false);
// x (..., in) @ weight (out, in)^T + bias (out), with the Hugging Face weight layout.
Variable linear(const Variable& x, const Variable& weight, const Variable& bias);
Variable embedding(const Variable& weight, const Tensor& ids);
Variable index_select(const Variable& x, int64_t dim, const Tensor& idx);
Variable gather(const Variable& x, int64_t dim, const Tensor& idx);
// Values of topk (differentiable) and their i64 indices.
std::pair<Variable, Tensor> topk(const Variable& x, int64_t k, int64_t dim = -1, bool largest = true);

// Straight-through estimator: the value `value` (same shape as s, e.g. a 0/1 mask computed
// from s), with s's gradient passed through unchanged (Bengio et al. 2013; movement pruning).
Variable straight_through(const Variable& s, const Tensor& value);

// Inverted dropout; identity when !training or p == 0. Backward regenerates the mask.
Variable dropout(const Variable& x, double p, bool training, Generator& gen);

// Attention on the CPU in one pass per (example, head): dropout_p-dropout(softmax(q kᵀ *
// scale + additive_mask)) v, bitwise the composition of matmul, scale, add, softmax, dropout
// and matmul above, gradients too, without keeping anything of size (B, H, T, T): the
// backward recomputes the probabilities (core/fused_attention.h). q, k, v (B, H, T, D) f32
// with unit stride along D; additive_mask broadcastable to (B, H, T, T) or undefined;
// dropout_p > 0 draws B H T T counters from gen, as dropout would. -> (B, H, T, D).
Variable fused_attention(const Variable& q, const Variable& k, const Variable& v, const Tensor& additive_mask,
                         double scale, double dropout_p, Generator* gen);

}  // namespace lopper::ag
