// Front door of every tensor op: check shapes, dtypes and devices, allocate, dispatch.
#include "core/ops.h"

#include <algorithm>
#include <cmath>

#include "core/backend.h"
#include "core/profile.h"

// Calls lopper::cpu::fn or lopper::cuda::fn by the device `dev`, timed under LOPPER_PROFILE
// as "fn" or "fn.detail".
#define LOPPER_BACKEND_AS(detail, dev, fn, ...)                  \
  do {                                                           \
    ::lopper::ProfileScope lopper_profile_(#fn, (dev), (detail)); \
    if ((dev).is_cuda())                                         \
      ::lopper::cuda::fn(__VA_ARGS__);                           \
    else                                                         \
      ::lopper::cpu::fn(__VA_ARGS__);                            \
  } while (0)
#define LOPPER_BACKEND(dev, fn, ...) LOPPER_BACKEND_AS(nullptr, dev, fn, __VA_ARGS__)

namespace lopper {

namespace {

void check_defined(const Tensor& t, const char* op, const char* what) {
  LOPPER_CHECK(t.defined(), "[", op, "] ", what, " is undefined");
}

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  check_defined(a, op, "first input");
  check_defined(b, op, "second input");
  LOPPER_CHECK(a.dtype() == b.dtype(), "[", op, "] dtype mismatch: ", dtype_name(a.dtype()), " vs ",
               dtype_name(b.dtype()));
  LOPPER_CHECK(a.device() == b.device(), "[", op, "] device mismatch: ", a.device().str(), " vs ",
               b.device().str());
}

void check_float(const Tensor& t, const char* op) {
  LOPPER_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "[", op,
               "] expects f32 or f64, got ", dtype_name(t.dtype()), " (cast bf16 to f32 first)");
}

void check_index(const Tensor& idx, const char* op) {
  check_defined(idx, op, "index");
  LOPPER_CHECK(idx.dtype() == DType::i32 || idx.dtype() == DType::i64, "[", op,
               "] index must be i32 or i64, got ", dtype_name(idx.dtype()));
}

Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

// (outer, n, inner) sizes of a contiguous tensor around `dim`.
struct Split3 {
  int64_t outer = 1, n = 1, inner = 1;
};
Split3 split_at(const Shape& s, int64_t dim) {
  Split3 r;
  for (int64_t i = 0; i < dim; ++i) r.outer *= s[i];
  r.n = s[dim];
  for (size_t i = dim + 1; i < s.size(); ++i) r.inner *= s[i];
  return r;
}

}  // namespace

// ---- elementwise ----

Tensor unary(UnaryOp op, const Tensor& x, UnaryParams p) {
  check_defined(x, "unary", "input");
  check_float(x, "unary");
  Tensor y = empty_like(x);
  LOPPER_BACKEND_AS(kernels::kUnaryOps[static_cast<int>(op)].name, x.device(), unary, op, p, x, y);
  return y;
}

Tensor unary_backward(UnaryOp op, const Tensor& saved, const Tensor& gy, UnaryParams p) {
  check_same(saved, gy, "unary_backward");
  LOPPER_CHECK(saved.shape() == gy.shape(), "[unary_backward] saved ", shape_str(saved.shape()),
               " vs grad ", shape_str(gy.shape()));
  Tensor gx = empty_like(gy);
  LOPPER_BACKEND_AS(kernels::kUnaryOps[static_cast<int>(op)].name, gy.device(), unary_backward, op, p, saved, gy, gx);
  return gx;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  check_same(a, b, "binary");
  check_float(a, "binary");
  Shape s = broadcast_shapes(a.shape(), b.shape(), "binary");
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  LOPPER_BACKEND_AS(kernels::kBinaryOps[static_cast<int>(op)].name, a.device(), binary, op, a.expand(s), b.expand(s), out);
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  LOPPER_CHECK(g.dim() >= static_cast<int64_t>(shape.size()), "[sum_to] cannot reduce ",
               shape_str(g.shape()), " to ", shape_str(shape));
  Tensor r = g;
  int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  for (int64_t i = 0; i < lead; ++i) r = sum(r, 0, false);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1 && r.size(static_cast<int64_t>(i)) != 1) r = sum(r, static_cast<int64_t>(i), true);
  }
  LOPPER_CHECK(r.shape() == shape, "[sum_to] cannot reduce ", shape_str(g.shape()), " to ", shape_str(shape));
  return r;
}

std::pair<Tensor, Tensor> binary_backward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& gy,
                                          bool need_a, bool need_b) {
  check_same(a, b, "binary_backward");
  check_same(a, gy, "binary_backward");
  const Shape& s = gy.shape();
  // Add and sub need no elementwise pass: the gradient is gy (negated for sub's b).
  if (op == BinaryOp::add || op == BinaryOp::sub) return add_sub_backward(op, gy, a.shape(), b.shape(), need_a, need_b);
  Tensor ga = need_a ? Tensor::empty(s, gy.dtype(), gy.device()) : Tensor();
  Tensor gb = need_b ? Tensor::empty(s, gy.dtype(), gy.device()) : Tensor();
  LOPPER_BACKEND_AS(kernels::kBinaryOps[static_cast<int>(op)].name, gy.device(), binary_backward, op, a.expand(s), b.expand(s), gy, ga, gb);
  return {need_a ? sum_to(ga, a.shape()) : Tensor(), need_b ? sum_to(gb, b.shape()) : Tensor()};
}

std::pair<Tensor, Tensor> add_sub_backward(BinaryOp op, const Tensor& gy, const Shape& shape_a, const Shape& shape_b,
                                           bool need_a, bool need_b) {
  LOPPER_CHECK(op == BinaryOp::add || op == BinaryOp::sub, "[add_sub_backward] op is neither add nor sub");
  Tensor ga = need_a ? sum_to(gy, shape_a) : Tensor();
  Tensor gb;
  if (need_b) gb = op == BinaryOp::add ? sum_to(gy, shape_b) : neg(sum_to(gy, shape_b));
  return {ga, gb};
}

void add_(const Tensor& a, const Tensor& b) {
  check_same(a, b, "add_");
  check_float(a, "add_");
  LOPPER_BACKEND(a.device(), binary, BinaryOp::add, a, b.expand(a.shape()), a);
}

void bias_act_(const Tensor& y, const Tensor& bias, UnaryOp act) {
  check_same(y, bias, "bias_act_");
  check_float(y, "bias_act_");
  LOPPER_CHECK(y.dim() >= 1 && y.is_contiguous(), "[bias_act_] y ", shape_str(y.shape()), " must be contiguous");
  LOPPER_CHECK(bias.dim() == 1 && bias.size(0) == y.size(-1), "[bias_act_] bias ", shape_str(bias.shape()),
               " for y ", shape_str(y.shape()));
  const auto& info = kernels::kUnaryOps[static_cast<int>(act)];
  LOPPER_CHECK(info.scalars == 0, "[bias_act_] ", info.name, " takes scalars; only activations without them fuse");
  LOPPER_BACKEND_AS(info.name, y.device(), bias_act, act, y, bias.contiguous());
}

Tensor compare(CompareOp op, const Tensor& a, const Tensor& b) {
  check_same(a, b, "compare");
  Shape s = broadcast_shapes(a.shape(), b.shape(), "compare");
  Tensor out = Tensor::empty(s, kBool, a.device());
  LOPPER_BACKEND(a.device(), compare, op, a.expand(s), b.expand(s), out);
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same(a, b, "where");
  check_defined(cond, "where", "condition");
  LOPPER_CHECK(cond.dtype() == kBool, "[where] condition must be bool (u8), got ", dtype_name(cond.dtype()));
  LOPPER_CHECK(cond.device() == a.device(), "[where] condition on ", cond.device().str(), ", values on ",
               a.device().str());
  Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  LOPPER_BACKEND(a.device(), where, cond.expand(s), a.expand(s), b.expand(s), out);
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  return where(mask, Tensor::scalar(value, x.dtype(), x.device()), x);
}

// ---- reductions ----

namespace {
std::pair<Tensor, Tensor> reduce_dim(ReduceOp op, const Tensor& x, int64_t dim, bool keepdim,
                                     bool want_indices, const char* name) {
  check_defined(x, name, "input");
  check_float(x, name);
  dim = x.normalize_dim(dim);
  LOPPER_CHECK(x.size(dim) > 0 || op == ReduceOp::sum, "[", name, "] empty dim ", dim, " of ",
               shape_str(x.shape()));
  Tensor xc = x.contiguous();
  Split3 sp = split_at(xc.shape(), dim);
  Shape out_shape = x.shape();
  out_shape[dim] = 1;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor idx = want_indices ? Tensor::empty(out_shape, DType::i64, x.device()) : Tensor();
  LOPPER_BACKEND(x.device(), reduce, op, xc, sp.outer, sp.n, sp.inner, out, idx);
  if (!keepdim) {
    out = out.squeeze(dim);
    if (idx.defined()) idx = idx.squeeze(dim);
  }
  return {out, idx};
}
}  // namespace

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_dim(ReduceOp::sum, x, dim, keepdim, false, "sum").first;
}
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_dim(ReduceOp::mean, x, dim, keepdim, false, "mean").first;
}
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_dim(ReduceOp::max, x, dim, keepdim, true, "max");
}
std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_dim(ReduceOp::min, x, dim, keepdim, true, "min");
}
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) { return max(x, dim, keepdim).second; }

Tensor sum_all(const Tensor& x) {
  return reduce_dim(ReduceOp::sum, x.reshape({x.numel()}), 0, false, false, "sum_all").first;
}
Tensor mean_all(const Tensor& x) {
  return reduce_dim(ReduceOp::mean, x.reshape({x.numel()}), 0, false, false, "mean_all").first;
}

// ---- rows ----

Tensor softmax(const Tensor& x) {
  check_defined(x, "softmax", "input");
  check_float(x, "softmax");
  LOPPER_CHECK(x.dim() >= 1 && x.size(-1) > 0, "[softmax] needs a non-empty last dim, got ", shape_str(x.shape()));
  Tensor xc = x.contiguous(), y = empty_like(xc);
  LOPPER_BACKEND(x.device(), softmax, xc, y, false);
  return y;
}

Tensor log_softmax(const Tensor& x) {
  check_defined(x, "log_softmax", "input");
  check_float(x, "log_softmax");
  LOPPER_CHECK(x.dim() >= 1 && x.size(-1) > 0, "[log_softmax] needs a non-empty last dim, got ",
               shape_str(x.shape()));
  Tensor xc = x.contiguous(), y = empty_like(xc);
  LOPPER_BACKEND(x.device(), softmax, xc, y, true);
  return y;
}

Tensor softmax_backward(const Tensor& y, const Tensor& gy, bool log_space) {
  check_same(y, gy, "softmax_backward");
  LOPPER_CHECK(y.shape() == gy.shape(), "[softmax_backward] y ", shape_str(y.shape()), " vs grad ",
               shape_str(gy.shape()));
  Tensor yc = y.contiguous(), gyc = gy.contiguous(), gx = empty_like(yc);
  LOPPER_BACKEND(y.device(), softmax_backward, yc, gyc, gx, log_space);
  return gx;
}

LayerNormOut layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_same(x, weight, "layer_norm");
  check_same(x, bias, "layer_norm");
  check_float(x, "layer_norm");
  int64_t c = x.size(-1);
  LOPPER_CHECK(weight.shape() == Shape{c} && bias.shape() == Shape{c}, "[layer_norm] input ",
               shape_str(x.shape()), " needs weight and bias (", c, "), got ", shape_str(weight.shape()),
               " and ", shape_str(bias.shape()));
  Tensor xc = x.contiguous();
  int64_t rows = x.numel() / c;
  LayerNormOut r{empty_like(xc), Tensor::empty({rows}, x.dtype(), x.device()),
                 Tensor::empty({rows}, x.dtype(), x.device())};
  LOPPER_BACKEND(x.device(), layer_norm, xc, weight.contiguous(), bias.contiguous(), eps, r.y, r.mean, r.rstd);
  return r;
}

LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& weight, const Tensor& gy,
                                   const Tensor& mean, const Tensor& rstd) {
  check_same(x, gy, "layer_norm_backward");
  LOPPER_CHECK(x.shape() == gy.shape(), "[layer_norm_backward] x ", shape_str(x.shape()), " vs grad ",
               shape_str(gy.shape()));
  Tensor xc = x.contiguous(), gyc = gy.contiguous();
  LayerNormGrads g{empty_like(xc), empty_like(weight), empty_like(weight)};
  LOPPER_BACKEND(x.device(), layer_norm_backward, xc, weight.contiguous(), gyc, mean, rstd, g.gx, g.gw, g.gb);
  return g;
}

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  check_defined(x, "topk", "input");
  check_float(x, "topk");
  dim = x.normalize_dim(dim);
  int64_t n = x.size(dim);
  LOPPER_CHECK(k >= 1 && k <= n, "[topk] k = ", k, " for dim ", dim, " of size ", n);
  Tensor xl = x.transpose(dim, -1).contiguous();  // (..., n)
  Shape vs = xl.shape();
  vs.back() = k;
  Tensor values = Tensor::empty(vs, x.dtype(), x.device());
  Tensor indices = Tensor::empty(vs, DType::i64, x.device());
  LOPPER_BACKEND(x.device(), topk, xl, k, largest, values, indices);
  return {values.transpose(dim, -1).contiguous(), indices.transpose(dim, -1).contiguous()};
}

Tensor topk_mask(const Tensor& x, const Tensor& k) {
  check_defined(x, "topk_mask", "input");
  check_float(x, "topk_mask");
  check_defined(k, "topk_mask", "k");
  LOPPER_CHECK(x.dim() >= 1, "[topk_mask] input must have at least one dimension");
  LOPPER_CHECK(k.dtype() == DType::i64, "[topk_mask] k must be i64, got ", dtype_name(k.dtype()));
  LOPPER_CHECK(k.device() == x.device(), "[topk_mask] k on ", k.device().str(), ", input on ", x.device().str());
  Shape rows(x.shape().begin(), x.shape().end() - 1);
  LOPPER_CHECK(k.shape() == rows, "[topk_mask] k ", shape_str(k.shape()), " must be the input's rows ",
               shape_str(rows), " (input ", shape_str(x.shape()), ")");
  Tensor kc = k.contiguous();
  if (x.device().is_cpu()) {
    int64_t n = x.size(-1);
    for (int64_t v : kc.to_vector<int64_t>())
      LOPPER_CHECK(v >= 0 && v <= n, "[topk_mask] k = ", v, " for rows of ", n);
  }
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() == 0) return out;
  LOPPER_BACKEND(x.device(), topk_mask, xc, kc, out);
  return out;
}

// ---- indexing ----

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& idx) {
  check_defined(x, "index_select", "input");
  check_index(idx, "index_select");
  LOPPER_CHECK(idx.dim() == 1, "[index_select] index must be 1-D, got ", shape_str(idx.shape()));
  LOPPER_CHECK(idx.device() == x.device(), "[index_select] index on ", idx.device().str(), ", input on ",
               x.device().str());
  dim = x.normalize_dim(dim);
  Tensor xc = x.contiguous();
  Split3 sp = split_at(xc.shape(), dim);
  Shape os = x.shape();
  os[dim] = idx.numel();
  Tensor out = Tensor::empty(os, x.dtype(), x.device());
  LOPPER_BACKEND(x.device(), index_select, xc, sp.outer, sp.n, sp.inner, idx.contiguous(), out);
  return out;
}

Tensor index_add(const Shape& shape, int64_t dim, const Tensor& idx, const Tensor& src) {
  check_defined(src, "index_add", "source");
  check_index(idx, "index_add");
  check_float(src, "index_add");
  Tensor out = Tensor::zeros(shape, src.dtype(), src.device());
  dim = out.normalize_dim(dim);
  Shape expect = shape;
  expect[dim] = idx.numel();
  LOPPER_CHECK(src.shape() == expect, "[index_add] source ", shape_str(src.shape()), " vs expected ",
               shape_str(expect));
  Split3 sp = split_at(shape, dim);
  LOPPER_BACKEND(src.device(), index_add, src.contiguous(), sp.outer, sp.n, sp.inner, idx.contiguous(), out);
  return out;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& idx) {
  check_defined(x, "gather", "input");
  check_index(idx, "gather");
  dim = x.normalize_dim(dim);
  LOPPER_CHECK(idx.dim() == x.dim(), "[gather] index ", shape_str(idx.shape()), " vs input ",
               shape_str(x.shape()));
  for (int64_t d = 0; d < x.dim(); ++d)
    LOPPER_CHECK(d == dim || idx.size(d) == x.size(d), "[gather] index ", shape_str(idx.shape()),
                 " must match input ", shape_str(x.shape()), " except on dim ", dim);
  Tensor xc = x.contiguous();
  Split3 sp = split_at(xc.shape(), dim);
  Tensor out = Tensor::empty(idx.shape(), x.dtype(), x.device());
  LOPPER_BACKEND(x.device(), gather, xc, sp.outer, sp.n, sp.inner, idx.contiguous(), out);
  return out;
}

Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& idx, const Tensor& src) {
  check_defined(src, "scatter_add", "source");
  check_index(idx, "scatter_add");
  check_float(src, "scatter_add");
  LOPPER_CHECK(idx.shape() == src.shape(), "[scatter_add] index ", shape_str(idx.shape()), " vs source ",
               shape_str(src.shape()));
  Tensor out = Tensor::zeros(shape, src.dtype(), src.device());
  dim = out.normalize_dim(dim);
  Split3 sp = split_at(shape, dim);
  LOPPER_BACKEND(src.device(), scatter_add, src.contiguous(), sp.outer, sp.n, sp.inner, idx.contiguous(), out);
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  LOPPER_CHECK(weight.defined() && weight.dim() == 2, "[embedding] weight must be (V, C), got ",
               weight.defined() ? shape_str(weight.shape()) : "undefined");
  Shape os = ids.shape();
  os.push_back(weight.size(1));
  return index_select(weight, 0, ids.reshape({ids.numel()})).view(os);
}

Tensor embedding_backward(const Tensor& ids, const Tensor& gy, int64_t num_embeddings) {
  int64_t c = gy.size(-1);
  return index_add({num_embeddings, c}, 0, ids.reshape({ids.numel()}), gy.reshape({ids.numel(), c}));
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  LOPPER_CHECK(!xs.empty(), "[concat] no tensors");
  const Tensor& first = xs[0];
  dim = first.normalize_dim(dim);
  Shape os = first.shape();
  os[dim] = 0;
  for (const Tensor& t : xs) {
    check_same(first, t, "concat");
    LOPPER_CHECK(t.dim() == first.dim(), "[concat] ", shape_str(t.shape()), " vs ", shape_str(first.shape()));
    for (int64_t d = 0; d < t.dim(); ++d)
      LOPPER_CHECK(d == dim || t.size(d) == first.size(d), "[concat] shapes ", shape_str(first.shape()),
                   " and ", shape_str(t.shape()), " differ outside dim ", dim);
    os[dim] += t.size(dim);
  }
  Tensor out = Tensor::empty(os, first.dtype(), first.device());
  int64_t at = 0;
  for (const Tensor& t : xs) {
    out.slice(dim, at, at + t.size(dim)).copy_(t);
    at += t.size(dim);
  }
  return out;
}

// ---- matmul ----

namespace {
// A (rows, cols) matrix view as a GEMM operand: row-major with leading dim `ld`, or the
// transpose of one. Returns false when neither stride is 1.
bool as_gemm_operand(int64_t s_row, int64_t s_col, int64_t rows, int64_t cols, bool* trans, int64_t* ld) {
  if (s_col == 1 || cols == 1) {
    int64_t l = rows == 1 ? std::max<int64_t>(cols, 1) : s_row;
    if (l >= std::max<int64_t>(cols, 1)) { *trans = false; *ld = l; return true; }
  }
  if (s_row == 1 || rows == 1) {
    int64_t l = cols == 1 ? std::max<int64_t>(rows, 1) : s_col;
    if (l >= std::max<int64_t>(rows, 1)) { *trans = true; *ld = l; return true; }
  }
  return false;
}

// The batch dims of a GEMM as at most two (size, stride) levels shared by a, b and c:
// dims merge where every operand is uniformly strided across them. False if more than two
// levels remain (the caller then copies an operand to make it contiguous).
bool batch_levels(const Shape& sizes, const Shape& sa, const Shape& sb, const Shape& sc, kernels::GemmArgs& g) {
  struct Level { int64_t size, a, b, c; };
  std::vector<Level> levels;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 1) continue;
    if (!levels.empty()) {
      Level& l = levels.back();
      if (l.a == sa[i] * sizes[i] && l.b == sb[i] * sizes[i] && l.c == sc[i] * sizes[i]) {
        l = {l.size * sizes[i], sa[i], sb[i], sc[i]};
        continue;
      }
    }
    levels.push_back({sizes[i], sa[i], sb[i], sc[i]});
  }
  if (levels.size() > 2) return false;
  g.outer = 1; g.outer_stride_a = g.outer_stride_b = g.outer_stride_c = 0;
  g.batch = 1; g.stride_a = g.stride_b = g.stride_c = 0;
  if (levels.size() == 2) {
    g.outer = levels[0].size;
    g.outer_stride_a = levels[0].a; g.outer_stride_b = levels[0].b; g.outer_stride_c = levels[0].c;
  }
  if (!levels.empty()) {
    g.batch = levels.back().size;
    g.stride_a = levels.back().a; g.stride_b = levels.back().b; g.stride_c = levels.back().c;
  }
  return true;
}
}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool trans_a, bool trans_b) {
  check_same(a_in, b_in, "matmul");
  check_float(a_in, "matmul");
  LOPPER_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "[matmul] needs matrices, got ", shape_str(a_in.shape()),
               " and ", shape_str(b_in.shape()));
  Tensor a = trans_a ? a_in.transpose(-1, -2) : a_in;
  Tensor b = trans_b ? b_in.transpose(-1, -2) : b_in;
  int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  LOPPER_CHECK(b.size(-2) == k, "[matmul] ", shape_str(a.shape()), " @ ", shape_str(b.shape()),
               ": inner dims ", k, " and ", b.size(-2), " differ");
  Shape batch(a.shape().begin(), a.shape().end() - 2);
  if (b.dim() > 2) {
    Shape bb(b.shape().begin(), b.shape().end() - 2);
    LOPPER_CHECK(bb == batch, "[matmul] batch dims ", shape_str(batch), " and ", shape_str(bb), " differ");
  }
  int64_t nbatch = shape_numel(batch);
  Shape os = batch;
  os.push_back(m);
  os.push_back(n);
  Tensor c = Tensor::empty(os, a.dtype(), a.device());
  if (c.numel() == 0) return c;
  if (k == 0) {
    c.zero_();
    return c;
  }

  // A 2-D right operand with a contiguous batched left one is one big GEMM (Linear).
  if (b.dim() == 2 && a.dim() > 2 && a.is_contiguous()) {
    Tensor c2 = matmul(a.view({nbatch * m, k}), b);
    return c2.view(os);
  }

  kernels::GemmArgs g;
  g.m = m; g.n = n; g.k = k;
  // Each operand's last two dims must be a row-major matrix or its transpose.
  auto matrix = [&](Tensor& t, bool* tr, int64_t* ld) {
    if (!as_gemm_operand(t.stride(-2), t.stride(-1), t.size(-2), t.size(-1), tr, ld)) {
      t = t.contiguous();
      as_gemm_operand(t.stride(-2), t.stride(-1), t.size(-2), t.size(-1), tr, ld);
    }
  };
  matrix(a, &g.trans_a, &g.lda);
  matrix(b, &g.trans_b, &g.ldb);
  g.ldc = n;
  size_t nb = batch.size();
  auto batch_strides = [nb](const Tensor& t) {
    return t.dim() > 2 ? Shape(t.strides().begin(), t.strides().begin() + nb) : Shape(nb, 0);
  };
  Shape sc(c.strides().begin(), c.strides().begin() + nb);
  if (!batch_levels(batch, batch_strides(a), batch_strides(b), sc, g)) {
    a = a.contiguous();
    if (b.dim() > 2) b = b.contiguous();
    matrix(a, &g.trans_a, &g.lda);
    matrix(b, &g.trans_b, &g.ldb);
    bool ok = batch_levels(batch, batch_strides(a), batch_strides(b), sc, g);
    LOPPER_CHECK(ok, "[matmul] internal: contiguous operands did not flatten");
  }
  LOPPER_BACKEND_AS(g.batch * g.outer > 1 ? "batched" : "single", a.device(), gemm, g, a, b, c);
  return c;
}

// ---- randomness ----

namespace {
Tensor random_tensor(kernels::RandomKind kind, const Shape& shape, double a, double b, Generator& gen,
                     DType t, Device d) {
  Tensor out = Tensor::empty(shape, t, d);
  LOPPER_CHECK(t == DType::f32 || t == DType::f64, "[random] dtype must be f32 or f64, got ", dtype_name(t));
  uint64_t offset = gen.advance(static_cast<uint64_t>(out.numel()) * (kind == kernels::RandomKind::normal ? 2 : 1));
  if (kind == kernels::RandomKind::normal) offset /= 2;  // normal uses counters 2i, 2i+1
  LOPPER_BACKEND(d, random, kind, a, b, gen.seed(), offset, out);
  return out;
}
}  // namespace

Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType t, Device d) {
  return random_tensor(kernels::RandomKind::uniform, shape, lo, hi, gen, t, d);
}
Tensor normal(const Shape& shape, double mean, double std, Generator& gen, DType t, Device d) {
  return random_tensor(kernels::RandomKind::normal, shape, mean, std, gen, t, d);
}
Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType t, Device d) {
  LOPPER_CHECK(p >= 0 && p <= 1, "[bernoulli] p = ", p, " outside [0, 1]");
  return random_tensor(kernels::RandomKind::bernoulli, shape, p, 0, gen, t, d);
}

Tensor dropout(const Tensor& x, double p, Generator& gen, uint64_t* offset) {
  check_defined(x, "dropout", "input");
  check_float(x, "dropout");
  LOPPER_CHECK(p >= 0 && p < 1, "[dropout] p = ", p, " outside [0, 1)");
  Tensor xc = x.contiguous(), y = empty_like(xc);
  *offset = gen.advance(static_cast<uint64_t>(x.numel()));
  LOPPER_BACKEND(x.device(), dropout, xc, y, static_cast<float>(p), gen.seed(), *offset);
  return y;
}

Tensor dropout_backward(const Tensor& gy, double p, uint64_t seed, uint64_t offset) {
  Tensor gyc = gy.contiguous(), gx = empty_like(gyc);
  LOPPER_BACKEND(gy.device(), dropout, gyc, gx, static_cast<float>(p), seed, offset);
  return gx;
}

void adamw_step(const kernels::AdamWStep& s, const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v) {
  for (const Tensor* t : {&g, &m, &v}) {
    check_same(p, *t, "adamw");
    LOPPER_CHECK(t->shape() == p.shape() && t->is_contiguous(), "[adamw] state ", shape_str(t->shape()),
                 " vs parameter ", shape_str(p.shape()));
  }
  LOPPER_CHECK(p.dtype() == DType::f32 && p.is_contiguous(), "[adamw] parameters must be contiguous f32");
  LOPPER_BACKEND(p.device(), adamw, s, p, g, m, v);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  LOPPER_CHECK(a.shape() == b.shape(), "[max_abs_diff] ", shape_str(a.shape()), " vs ", shape_str(b.shape()));
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape()) return false;
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i)
    if (!(std::fabs(va[i] - vb[i]) <= atol + rtol * std::fabs(vb[i]))) return false;
  return true;
}

}  // namespace lopper
