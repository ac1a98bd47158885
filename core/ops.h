// The public tensor ops: check the arguments, allocate the result, dispatch to the
// backend of the inputs' device. No autograd here (autograd/functions.h builds on these);
// backward helpers sit next to their forward.
#pragma once
#include <utility>
#include <vector>

#include "core/kernels/elementwise.h"
#include "core/kernels/rows.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace lopper {

using kernels::BinaryOp;
using kernels::CompareOp;
using kernels::ReduceOp;
using kernels::UnaryOp;
using kernels::UnaryParams;

// ---- elementwise ----
Tensor unary(UnaryOp op, const Tensor& x, UnaryParams p = {});
// `saved` is x or y as kernels::unary_save(op) says.
Tensor unary_backward(UnaryOp op, const Tensor& saved, const Tensor& gy, UnaryParams p = {});
// neg(x), exp(x), ..., clamp(x, lo, hi), scale(x, s): one per entry of LOPPER_UNARY_OPS.
#define LOPPER_X(name, F, arity) LOPPER_UNARY_WRAPPER_##arity(Tensor, name)
LOPPER_UNARY_OPS(LOPPER_X)
#undef LOPPER_X

// Broadcasting binary ops.
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
// Gradients reduced to a's and b's shapes; an entry is undefined where need_a/need_b is false.
std::pair<Tensor, Tensor> binary_backward(BinaryOp op, const Tensor& a, const Tensor& b,
                                          const Tensor& gy, bool need_a = true, bool need_b = true);
// Add and sub need only the input shapes for their gradients (gy, negated for sub's b,
// summed back over broadcast dims); autograd uses this so it need not keep the inputs.
std::pair<Tensor, Tensor> add_sub_backward(BinaryOp op, const Tensor& gy, const Shape& shape_a, const Shape& shape_b,
                                           bool need_a = true, bool need_b = true);
#define LOPPER_X(name, F) LOPPER_BINARY_WRAPPER(Tensor, name)
LOPPER_BINARY_OPS(LOPPER_X)
#undef LOPPER_X
// In place a += b (b broadcast to a's shape); used for gradient accumulation.
void add_(const Tensor& a, const Tensor& b);
// In place y = act(y + bias): a Linear's epilogue in one pass (inference). y (..., C)
// contiguous, bias (C); act one of the unary ops without scalars (gelu, relu, tanh, ...).
// Bitwise the same as unary(act, add(y, bias)).
void bias_act_(const Tensor& y, const Tensor& bias, UnaryOp act);
// Sums g over the dims that broadcasting added or stretched, giving `shape`.
Tensor sum_to(const Tensor& g, const Shape& shape);

Tensor compare(CompareOp op, const Tensor& a, const Tensor& b);  // bool (u8)
inline Tensor eq(const Tensor& a, const Tensor& b) { return compare(CompareOp::eq, a, b); }
inline Tensor ne(const Tensor& a, const Tensor& b) { return compare(CompareOp::ne, a, b); }
inline Tensor lt(const Tensor& a, const Tensor& b) { return compare(CompareOp::lt, a, b); }
inline Tensor le(const Tensor& a, const Tensor& b) { return compare(CompareOp::le, a, b); }
inline Tensor gt(const Tensor& a, const Tensor& b) { return compare(CompareOp::gt, a, b); }
inline Tensor ge(const Tensor& a, const Tensor& b) { return compare(CompareOp::ge, a, b); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // broadcasting
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
inline Tensor cast(const Tensor& x, DType t) { return x.to(t); }

// ---- reductions along one dim ----
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);  // values, i64 indices
std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor sum_all(const Tensor& x);   // shape ()
Tensor mean_all(const Tensor& x);  // shape ()

// ---- rows of the last dim ----
Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);
Tensor softmax_backward(const Tensor& y, const Tensor& gy, bool log_space);

struct LayerNormOut {
  Tensor y;     // x's shape
  Tensor mean;  // (rows)
  Tensor rstd;  // (rows)
};
LayerNormOut layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
struct LayerNormGrads {
  Tensor gx, gw, gb;
};
LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& weight, const Tensor& gy,
                                   const Tensor& mean, const Tensor& rstd);

// k largest (or smallest) along `dim`, sorted; indices i64.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);
// x (..., n), k (...) i64 with 0 <= k <= n -> (..., n) of x's dtype: 1 at the k[...] largest
// entries of each row of the last dim (equal values: the lower index first), 0 elsewhere.
Tensor topk_mask(const Tensor& x, const Tensor& k);

// ---- indexing ----
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& idx);
// A zero tensor of `shape` with src added at positions idx along dim (index_select's backward).
Tensor index_add(const Shape& shape, int64_t dim, const Tensor& idx, const Tensor& src);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& idx);
Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& idx, const Tensor& src);
// weight (V, C), ids (...) -> (..., C)
Tensor embedding(const Tensor& weight, const Tensor& ids);
Tensor embedding_backward(const Tensor& ids, const Tensor& gy, int64_t num_embeddings);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);

// ---- matmul ----
// a (..., M, K) @ b (..., K, N) with the batch dims of b equal to a's or absent; the
// transposes are applied to the last two dims. Transposed and sliced views go to the
// GEMM without a copy when their last dims are unit-strided.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// ---- randomness (seeded; see core/rng.h) ----
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType t = DType::f32,
               Device d = Device::cpu());
Tensor normal(const Shape& shape, double mean, double std, Generator& gen,
              DType t = DType::f32, Device d = Device::cpu());
Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType t = DType::f32,
                 Device d = Device::cpu());
// Inverted dropout. The counter offset it used is written to *offset so the backward
// (dropout_backward) can regenerate the mask instead of storing it.
Tensor dropout(const Tensor& x, double p, Generator& gen, uint64_t* offset);
Tensor dropout_backward(const Tensor& gy, double p, uint64_t seed, uint64_t offset);

// ---- optimizer kernel ----
void adamw_step(const kernels::AdamWStep& s, const Tensor& p, const Tensor& g, const Tensor& m,
                const Tensor& v);

// ---- comparisons of whole tensors, for tests ----
double max_abs_diff(const Tensor& a, const Tensor& b);
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);

}  // namespace lopper
