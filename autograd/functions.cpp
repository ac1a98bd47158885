// Forward and backward of every differentiable function, side by side.
#include "autograd/functions.h"

#include "core/fused_attention.h"

namespace lopper::ag {

using G = std::vector<Tensor>;

// ---- elementwise ----

Variable unary(UnaryOp op, const Variable& x, UnaryParams p) {
  Tensor y = lopper::unary(op, x.data(), p);
  Tensor saved = kernels::unary_save(op) == kernels::Save::input ? x.data() : y;
  return make_result(y, {x}, "unary", [op, p, saved](const Tensor& gy) -> G {
    return {lopper::unary_backward(op, saved, gy, p)};
  });
}

Variable binary(BinaryOp op, const Variable& a, const Variable& b) {
  Tensor y = lopper::binary(op, a.data(), b.data());
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  // add/sub need neither input for the gradient, only their shapes.
  bool linear_op = op == BinaryOp::add || op == BinaryOp::sub;
  Tensor sa = linear_op ? Tensor() : a.data();
  Tensor sb = linear_op ? Tensor() : b.data();
  Shape shape_a = a.shape(), shape_b = b.shape();
  return make_result(y, {a, b}, "binary", [=](const Tensor& gy) -> G {
    auto [ga, gb] = linear_op ? add_sub_backward(op, gy, shape_a, shape_b, need_a, need_b)
                              : binary_backward(op, sa, sb, gy, need_a, need_b);
    return {ga, gb};
  });
}

Variable where(const Tensor& cond, const Variable& a, const Variable& b) {
  Tensor y = lopper::where(cond, a.data(), b.data());
  Shape sa = a.shape(), sb = b.shape();
  return make_result(y, {a, b}, "where", [cond, sa, sb](const Tensor& gy) -> G {
    Tensor zero = Tensor::scalar(0.0, gy.dtype(), gy.device());
    return {sum_to(lopper::where(cond, gy, zero), sa), sum_to(lopper::where(cond, zero, gy), sb)};
  });
}

Variable masked_fill(const Variable& x, const Tensor& mask, double value) {
  Tensor y = lopper::masked_fill(x.data(), mask, value);
  Shape sx = x.shape();
  return make_result(y, {x}, "masked_fill", [mask, sx](const Tensor& gy) -> G {
    return {sum_to(lopper::masked_fill(gy, mask, 0.0), sx)};
  });
}

Variable straight_through(const Variable& s, const Tensor& value) {
  LOPPER_CHECK(value.shape() == s.shape(), "[straight_through] value ", shape_str(value.shape()), " vs scores ",
               shape_str(s.shape()));
  return make_result(value, {s}, "straight_through", [](const Tensor& gy) -> G { return {gy}; });
}

// ---- shape ----

Variable reshape(const Variable& x, const Shape& shape) {
  Shape sx = x.shape();
  return make_result(x.data().reshape(shape), {x}, "reshape",
                     [sx](const Tensor& gy) -> G { return {gy.reshape(sx)}; });
}

Variable transpose(const Variable& x, int64_t d0, int64_t d1) {
  return make_result(x.data().transpose(d0, d1), {x}, "transpose",
                     [d0, d1](const Tensor& gy) -> G { return {gy.transpose(d0, d1)}; });
}

Variable permute(const Variable& x, const std::vector<int64_t>& dims) {
  std::vector<int64_t> inv(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) inv[x.data().normalize_dim(dims[i])] = static_cast<int64_t>(i);
  return make_result(x.data().permute(dims), {x}, "permute",
                     [inv](const Tensor& gy) -> G { return {gy.permute(inv)}; });
}

Variable slice(const Variable& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  Tensor y = x.data().slice(dim, start, end, step);
  Shape sx = x.shape();
  DType t = x.dtype();
  Device d = x.device();
  return make_result(y, {x}, "slice", [=](const Tensor& gy) -> G {
    Tensor g = Tensor::zeros(sx, t, d);
    g.slice(dim, start, end, step).copy_(gy);
    return {g};
  });
}

Variable select(const Variable& x, int64_t dim, int64_t index) {
  Tensor y = x.data().select(dim, index);
  Shape sx = x.shape();
  DType t = x.dtype();
  Device d = x.device();
  return make_result(y, {x}, "select", [=](const Tensor& gy) -> G {
    Tensor g = Tensor::zeros(sx, t, d);
    g.select(dim, index).copy_(gy);
    return {g};
  });
}

Variable unsqueeze(const Variable& x, int64_t dim) {
  Shape sx = x.shape();
  return make_result(x.data().unsqueeze(dim), {x}, "unsqueeze",
                     [sx](const Tensor& gy) -> G { return {gy.reshape(sx)}; });
}

Variable squeeze(const Variable& x, int64_t dim) {
  Shape sx = x.shape();
  return make_result(x.data().squeeze(dim), {x}, "squeeze",
                     [sx](const Tensor& gy) -> G { return {gy.reshape(sx)}; });
}

Variable expand(const Variable& x, const Shape& shape) {
  Shape sx = x.shape();
  return make_result(x.data().expand(shape), {x}, "expand",
                     [sx](const Tensor& gy) -> G { return {sum_to(gy, sx)}; });
}

Variable contiguous(const Variable& x) {
  if (x.data().is_contiguous()) return x;
  return make_result(x.data().contiguous(), {x}, "contiguous", [](const Tensor& gy) -> G { return {gy}; });
}

Variable concat(const std::vector<Variable>& xs, int64_t dim) {
  std::vector<Tensor> ts;
  std::vector<int64_t> sizes;
  for (const Variable& v : xs) {
    ts.push_back(v.data());
    sizes.push_back(v.data().size(dim));
  }
  Tensor y = lopper::concat(ts, dim);
  return make_result(y, xs, "concat", [sizes, dim](const Tensor& gy) -> G {
    G gs;
    int64_t at = 0;
    for (int64_t s : sizes) {
      gs.push_back(gy.slice(dim, at, at + s));
      at += s;
    }
    return gs;
  });
}

// ---- reductions ----

Variable sum(const Variable& x, int64_t dim, bool keepdim) {
  int64_t d = x.data().normalize_dim(dim);
  Shape sx = x.shape();
  return make_result(lopper::sum(x.data(), d, keepdim), {x}, "sum", [=](const Tensor& gy) -> G {
    Tensor g = keepdim ? gy : gy.unsqueeze(d);
    return {g.expand(sx).contiguous()};
  });
}

Variable mean(const Variable& x, int64_t dim, bool keepdim) {
  int64_t d = x.data().normalize_dim(dim);
  return scale(sum(x, d, keepdim), 1.0 / static_cast<double>(x.size(d)));
}

Variable max(const Variable& x, int64_t dim, bool keepdim) {
  int64_t d = x.data().normalize_dim(dim);
  auto [values, idx] = lopper::max(x.data(), d, true);
  Shape sx = x.shape();
  Tensor y = keepdim ? values : values.squeeze(d);
  return make_result(y, {x}, "max", [=, idx = idx](const Tensor& gy) -> G {
    Tensor g = keepdim ? gy : gy.unsqueeze(d);
    return {lopper::scatter_add(sx, d, idx, g)};
  });
}

Variable sum_all(const Variable& x) {
  Shape sx = x.shape();
  return make_result(lopper::sum_all(x.data()), {x}, "sum_all",
                     [sx](const Tensor& gy) -> G { return {gy.expand(sx).contiguous()}; });
}

Variable mean_all(const Variable& x) {
  return scale(sum_all(x), 1.0 / static_cast<double>(std::max<int64_t>(x.numel(), 1)));
}

// ---- rows, products, indexing ----

Variable softmax(const Variable& x) {
  Tensor y = lopper::softmax(x.data());
  return make_result(y, {x}, "softmax", [y](const Tensor& gy) -> G { return {softmax_backward(y, gy, false)}; });
}

Variable log_softmax(const Variable& x) {
  Tensor y = lopper::log_softmax(x.data());
  return make_result(y, {x}, "log_softmax", [y](const Tensor& gy) -> G { return {softmax_backward(y, gy, true)}; });
}

Variable layer_norm(const Variable& x, const Variable& weight, const Variable& bias, double eps) {
  LayerNormOut r = lopper::layer_norm(x.data(), weight.data(), bias.data(), eps);
  Tensor xs = x.data(), w = weight.data(), m = r.mean, rs = r.rstd;
  return make_result(r.y, {x, weight, bias}, "layer_norm", [xs, w, m, rs](const Tensor& gy) -> G {
    LayerNormGrads g = layer_norm_backward(xs, w, gy, m, rs);
    return {g.gx, g.gw, g.gb};
  });
}

Variable matmul(const Variable& a, const Variable& b, bool trans_a, bool trans_b) {
  Tensor y = lopper::matmul(a.data(), b.data(), trans_a, trans_b);
  Tensor ad = a.data(), bd = b.data();
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  return make_result(y, {a, b}, "matmul", [=](const Tensor& gy) -> G {
    // y = A B with A = op(a), B = op(b):  dA = gy B^T,  dB = A^T gy.
    Tensor ga, gb;
    if (need_a) {
      ga = trans_a ? lopper::matmul(bd, gy, trans_b, true)     // da = (gy B^T)^T = B gy^T
                   : lopper::matmul(gy, bd, false, !trans_b);  // da = gy B^T
    }
    if (need_b) {
      if (bd.dim() == 2 && ad.dim() > 2) {
        // b shared over a's batch: fold the batch into the GEMM's inner dim.
        int64_t rows = shape_numel(Shape(ad.shape().begin(), ad.shape().end() - 1));  // not -1: a dim may be 0
        Tensor a2 = ad.reshape({rows, ad.size(-1)});
        Tensor g2 = gy.reshape({rows, gy.size(-1)});
        if (trans_a) LOPPER_FAIL("[matmul backward] transposed batched a with 2-D b is not supported");
        gb = trans_b ? lopper::matmul(g2, a2, true, false) : lopper::matmul(a2, g2, true, false);
      } else {
        gb = trans_b ? lopper::matmul(gy, ad, true, trans_a)    // db = (A^T gy)^T = gy^T A
                     : lopper::matmul(ad, gy, !trans_a, false);  // db = A^T gy
      }
    }
    return {ga, gb};
  });
}

Variable linear(const Variable& x, const Variable& weight, const Variable& bias) {
  Variable y = matmul(x, weight, false, true);
  return bias.defined() ? add(y, bias) : y;
}

Variable embedding(const Variable& weight, const Tensor& ids) {
  int64_t v = weight.size(0);
  return make_result(lopper::embedding(weight.data(), ids), {weight}, "embedding",
                     [ids, v](const Tensor& gy) -> G { return {embedding_backward(ids, gy, v)}; });
}

Variable index_select(const Variable& x, int64_t dim, const Tensor& idx) {
  Shape sx = x.shape();
  return make_result(lopper::index_select(x.data(), dim, idx), {x}, "index_select",
                     [sx, dim, idx](const Tensor& gy) -> G { return {lopper::index_add(sx, dim, idx, gy)}; });
}

Variable gather(const Variable& x, int64_t dim, const Tensor& idx) {
  Shape sx = x.shape();
  return make_result(lopper::gather(x.data(), dim, idx), {x}, "gather",
                     [sx, dim, idx](const Tensor& gy) -> G { return {lopper::scatter_add(sx, dim, idx, gy)}; });
}

std::pair<Variable, Tensor> topk(const Variable& x, int64_t k, int64_t dim, bool largest) {
  Tensor idx = lopper::topk(x.data(), k, dim, largest).second;
  return {gather(x, dim, idx), idx};
}

Variable dropout(const Variable& x, double p, bool training, Generator& gen) {
  if (!training || p == 0.0) return x;
  uint64_t offset = 0;
  Tensor y = lopper::dropout(x.data(), p, gen, &offset);
  uint64_t seed = gen.seed();
  Shape sx = x.shape();
  return make_result(y, {x}, "dropout", [p, seed, offset, sx](const Tensor& gy) -> G {
    return {dropout_backward(gy, p, seed, offset).view(sx)};
  });
}

Variable fused_attention(const Variable& q, const Variable& k, const Variable& v, const Tensor& additive_mask,
                         double scale, double dropout_p, Generator* gen) {
  LOPPER_CHECK(q.dim() == 4, "[fused_attention] q must be (B, H, T, D), got ", shape_str(q.shape()));
  AttentionDropout drop;
  if (dropout_p > 0) {
    LOPPER_CHECK(gen, "[fused_attention] dropout p = ", dropout_p, " needs a generator");
    LOPPER_CHECK(dropout_p < 1, "[fused_attention] dropout p = ", dropout_p, " outside [0, 1)");
    uint64_t probs = static_cast<uint64_t>(q.size(0) * q.size(1) * q.size(2) * q.size(2));  // (B, H, T, T)
    drop = {dropout_p, gen->seed(), gen->advance(probs)};
  }
  Tensor y = lopper::fused_attention_train(q.data(), k.data(), v.data(), additive_mask, scale, drop);
  Tensor qd = q.data(), kd = k.data(), vd = v.data();
  std::array<bool, 3> need = {q.requires_grad(), k.requires_grad(), v.requires_grad()};
  return make_result(y, {q, k, v}, "fused_attention", [=](const Tensor& gy) -> G {
    auto [gq, gk, gv] = fused_attention_backward(gy, qd, kd, vd, additive_mask, scale, drop, need);
    return {gq, gk, gv};
  });
}

}  // namespace lopper::ag
