// The CPU backend: OpenMP loops over the functors of core/kernels; GEMM through oneDNN.
// Not a place for new math: an op's arithmetic belongs in core/kernels.

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "core/backend.h"
#include "core/cpu/dropout.h"
#include "core/cpu/parallel.h"
#include "core/cpu/sgemm.h"
#include "core/cpu/select.h"
#include "core/kernels/convert.h"
#include "core/kernels/indexer.h"
#include "core/kernels/random.h"

namespace lopper::cpu {

using namespace kernels;

namespace {

constexpr int64_t kElementGrain = 1 << 14;  // elements per thread below which we stay serial

// Runs body(offsets, inner_strides, len) over runs of the innermost dim of `ts[0]`'s
// shape; offsets are in elements from each tensor's first element.
template <int N, class Body>
void strided_for(const std::array<const Tensor*, N>& ts, Body&& body) {
  const Tensor& out = *ts[0];
  int nd = static_cast<int>(out.dim());
  const int64_t* strides[N];
  for (int k = 0; k < N; ++k) strides[k] = ts[k]->strides().data();
  Indexer<N> ix = make_indexer<N>(nd, out.shape().data(), strides);
  int64_t numel = out.numel();
  if (numel == 0) return;
  int64_t inner = ix.sizes[ix.ndim - 1];
  int64_t inner_stride[N];
  for (int k = 0; k < N; ++k) inner_stride[k] = ix.strides[k][ix.ndim - 1];
  parallel_for(numel, kElementGrain, [&](int64_t begin, int64_t end) {
    int64_t off[N];
    for (int64_t i = begin; i < end;) {
      int64_t len = std::min(inner - i % inner, end - i);
      ix.offsets(i, off);
      body(off, inner_stride, len);
      i += len;
    }
  });
}

template <int N>
bool unit_strides(const int64_t* s) {
  for (int k = 0; k < N; ++k)
    if (s[k] != 1) return false;
  return true;
}

}  // namespace

// ---- elementwise ----

void unary(UnaryOp op, UnaryParams p, const Tensor& x, const Tensor& y) {
  dispatch_float(x.dtype(), "unary", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    visit_unary(op, [&](auto fn) {
      scalar_t* yb = y.data<scalar_t>();
      const scalar_t* xb = x.data<scalar_t>();
      strided_for<2>({&y, &x}, [&](const int64_t* o, const int64_t* s, int64_t n) {
        scalar_t* yp = yb + o[0];
        const scalar_t* xp = xb + o[1];
        if (unit_strides<2>(s)) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) yp[j] = fn.forward(xp[j], p);
        } else {
          for (int64_t j = 0; j < n; ++j) yp[j * s[0]] = fn.forward(xp[j * s[1]], p);
        }
      });
    });
  });
}

void bias_act(UnaryOp act, const Tensor& y, const Tensor& bias) {
  dispatch_float(y.dtype(), "bias_act", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    visit_unary(act, [&](auto fn) {
      const int64_t c = y.size(-1), rows = y.numel() / std::max<int64_t>(c, 1);
      scalar_t* yb = y.data<scalar_t>();
      const scalar_t* bp = bias.data<scalar_t>();
      parallel_for(rows, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(c, 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          scalar_t* yp = yb + r * c;
#pragma omp simd
          for (int64_t j = 0; j < c; ++j) yp[j] = fn.forward(yp[j] + bp[j], UnaryParams{});
        }
      });
    });
  });
}

void unary_backward(UnaryOp op, UnaryParams p, const Tensor& saved, const Tensor& gy, const Tensor& gx) {
  dispatch_float(gy.dtype(), "unary_backward", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    visit_unary(op, [&](auto fn) {
      scalar_t* gxb = gx.data<scalar_t>();
      const scalar_t* sb = saved.data<scalar_t>();
      const scalar_t* gyb = gy.data<scalar_t>();
      strided_for<3>({&gx, &saved, &gy}, [&](const int64_t* o, const int64_t* s, int64_t n) {
        scalar_t* gxp = gxb + o[0];
        const scalar_t* sp = sb + o[1];
        const scalar_t* gyp = gyb + o[2];
        if (unit_strides<3>(s)) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) gxp[j] = fn.backward(sp[j], gyp[j], p);
        } else {
          for (int64_t j = 0; j < n; ++j) gxp[j * s[0]] = fn.backward(sp[j * s[1]], gyp[j * s[2]], p);
        }
      });
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_float(out.dtype(), "binary", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    visit_binary(op, [&](auto fn) {
      scalar_t* ob = out.data<scalar_t>();
      const scalar_t* ab = a.data<scalar_t>();
      const scalar_t* bb = b.data<scalar_t>();
      strided_for<3>({&out, &a, &b}, [&](const int64_t* o, const int64_t* s, int64_t n) {
        scalar_t* op_ = ob + o[0];
        const scalar_t* ap = ab + o[1];
        const scalar_t* bp = bb + o[2];
        if (unit_strides<3>(s)) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) op_[j] = fn.forward(ap[j], bp[j]);
        } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {  // a tensor and a broadcast scalar
          scalar_t bv = bp[0];
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) op_[j] = fn.forward(ap[j], bv);
        } else {
          for (int64_t j = 0; j < n; ++j) op_[j * s[0]] = fn.forward(ap[j * s[1]], bp[j * s[2]]);
        }
      });
    });
  });
}

void binary_backward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& gy,
                     const Tensor& ga, const Tensor& gb) {
  dispatch_float(gy.dtype(), "binary_backward", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    visit_binary(op, [&](auto fn) {
      const scalar_t* ab = a.data<scalar_t>();
      const scalar_t* bb = b.data<scalar_t>();
      const scalar_t* gyb = gy.data<scalar_t>();
      // Each gradient in its own pass keeps the loop a 4-operand one either way.
      for (int which = 0; which < 2; ++which) {
        const Tensor& g = which == 0 ? ga : gb;
        if (!g.defined()) continue;
        scalar_t* gb_ = g.data<scalar_t>();
        strided_for<4>({&g, &a, &b, &gy}, [&](const int64_t* o, const int64_t* s, int64_t n) {
          for (int64_t j = 0; j < n; ++j) {
            scalar_t av = ab[o[1] + j * s[1]], bv = bb[o[2] + j * s[2]], gv = gyb[o[3] + j * s[3]];
            gb_[o[0] + j * s[0]] = which == 0 ? fn.grad_a(av, bv, gv) : fn.grad_b(av, bv, gv);
          }
        });
      }
    });
  });
}

void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), "compare", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    uint8_t* ob = out.data<uint8_t>();
    const scalar_t* ab = a.data<scalar_t>();
    const scalar_t* bb = b.data<scalar_t>();
    strided_for<3>({&out, &a, &b}, [&](const int64_t* o, const int64_t* s, int64_t n) {
      for (int64_t j = 0; j < n; ++j)
        ob[o[0] + j * s[0]] = kernels::compare(op, convert<double>(ab[o[1] + j * s[1]]),
                                               convert<double>(bb[o[2] + j * s[2]]));
    });
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(out.dtype(), "where", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    scalar_t* ob = out.data<scalar_t>();
    const uint8_t* cb = cond.data<uint8_t>();
    const scalar_t* ab = a.data<scalar_t>();
    const scalar_t* bb = b.data<scalar_t>();
    strided_for<4>({&out, &cond, &a, &b}, [&](const int64_t* o, const int64_t* s, int64_t n) {
      for (int64_t j = 0; j < n; ++j)
        ob[o[0] + j * s[0]] = kernels::where(cb[o[1] + j * s[1]], ab[o[2] + j * s[2]], bb[o[3] + j * s[3]]);
    });
  });
}

void copy(const Tensor& src, const Tensor& dst) {
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    const char* sp = static_cast<const char*>(src.raw_data());
    char* dp = static_cast<char*>(dst.raw_data());
    int64_t bytes = src.numel() * static_cast<int64_t>(src.itemsize());
    parallel_for(bytes, 1 << 20, [&](int64_t b, int64_t e) { std::memcpy(dp + b, sp + b, e - b); });
    return;
  }
  dispatch_all(dst.dtype(), "copy", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    using dst_t = scalar_t;
    dst_t* db = dst.data<dst_t>();
    dispatch_all(src.dtype(), "copy", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
      const scalar_t* sb = src.data<scalar_t>();
      strided_for<2>({&dst, &src}, [&](const int64_t* o, const int64_t* s, int64_t n) {
        for (int64_t j = 0; j < n; ++j) db[o[0] + j * s[0]] = convert<dst_t>(sb[o[1] + j * s[1]]);
      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  dispatch_all(dst.dtype(), "fill", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    scalar_t v = convert<scalar_t>(value);
    scalar_t* db = dst.data<scalar_t>();
    strided_for<1>({&dst}, [&](const int64_t* o, const int64_t* s, int64_t n) {
      for (int64_t j = 0; j < n; ++j) db[o[0] + j * s[0]] = v;
    });
  });
}

void random(RandomKind kind, double a, double b, uint64_t seed, uint64_t offset, const Tensor& dst) {
  dispatch_float(dst.dtype(), "random", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    scalar_t* d = dst.data<scalar_t>();
    parallel_for(dst.numel(), kElementGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        uint64_t c = offset + static_cast<uint64_t>(i);
        double v = kind == RandomKind::uniform ? a + (b - a) * uniform01_f64(seed, c)
                 : kind == RandomKind::normal  ? a + b * normal01(seed, c)
                                               : (uniform01_f64(seed, c) < a ? 1.0 : 0.0);
        d[i] = static_cast<scalar_t>(v);
      }
    });
  });
}

void dropout(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t offset) {
  dispatch_float(x.dtype(), "dropout", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    const scalar_t* xp = x.data<scalar_t>();
    scalar_t* yp = y.data<scalar_t>();
    scalar_t keep_scale = scalar_t(1) / (scalar_t(1) - scalar_t(p));
    parallel_for(x.numel(), kElementGrain, [&](int64_t begin, int64_t end) {
      dropout_span(xp + begin, yp + begin, end - begin, keep_scale, seed, offset + static_cast<uint64_t>(begin), p);
    });
  });
}

// ---- reductions ----

void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out,
            const Tensor& indices) {
  dispatch_float(x.dtype(), "reduce", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    const scalar_t* xp = x.data<scalar_t>();
    scalar_t* op_ = out.data<scalar_t>();
    int64_t* ip = indices.defined() ? indices.data<int64_t>() : nullptr;
    bool is_max = op == ReduceOp::max, is_min = op == ReduceOp::min;
    // One (o, i) output per task; the reduced dim is walked in order, so sums are
    // deterministic whatever the thread count.
    auto reduce_cols = [&](int64_t o, int64_t i0, int64_t i1) {
      const scalar_t* base = xp + o * n * inner;
      scalar_t* dst = op_ + o * inner;
      for (int64_t i = i0; i < i1; ++i) {
        dst[i] = base[i];
        if (ip) ip[o * inner + i] = 0;
      }
      for (int64_t r = 1; r < n; ++r) {
        const scalar_t* row = base + r * inner;
        if (is_max || is_min) {
          for (int64_t i = i0; i < i1; ++i) {
            bool better = is_max ? row[i] > dst[i] : row[i] < dst[i];
            if (better) { dst[i] = row[i]; if (ip) ip[o * inner + i] = r; }
          }
        } else {
          for (int64_t i = i0; i < i1; ++i) dst[i] += row[i];
        }
      }
      if (op == ReduceOp::mean)
        for (int64_t i = i0; i < i1; ++i) dst[i] /= scalar_t(n);
    };
    if (n == 0) {
      for (int64_t i = 0; i < outer * inner; ++i) op_[i] = scalar_t(0);
      return;
    }
    if (inner == 1 && (op == ReduceOp::sum || op == ReduceOp::mean)) {
      // Contiguous rows: fixed-size chunks summed in parallel, then combined in order, so
      // the result does not depend on the thread count.
      constexpr int64_t kChunk = 1 << 14;
      int64_t chunks = (n + kChunk - 1) / kChunk;
      std::vector<scalar_t> partial(static_cast<size_t>(outer * chunks));
      parallel_for(outer * chunks, std::max<int64_t>(1, kElementGrain / kChunk), [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          int64_t o = t / chunks, c = t % chunks;
          const scalar_t* row = xp + o * n + c * kChunk;
          int64_t len = std::min(kChunk, n - c * kChunk);
          scalar_t acc = scalar_t(0);
#pragma omp simd reduction(+ : acc)
          for (int64_t i = 0; i < len; ++i) acc += row[i];
          partial[t] = acc;
        }
      });
      for (int64_t o = 0; o < outer; ++o) {
        scalar_t acc = scalar_t(0);
        for (int64_t c = 0; c < chunks; ++c) acc += partial[o * chunks + c];
        op_[o] = op == ReduceOp::mean ? acc / scalar_t(n) : acc;
      }
      return;
    }
    constexpr int64_t kColBlock = 256;
    int64_t col_blocks = (inner + kColBlock - 1) / kColBlock;
    int64_t per_task = n * std::min(inner, kColBlock);
    parallel_for(outer * col_blocks, std::max<int64_t>(1, kElementGrain / per_task), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / col_blocks, cb = t % col_blocks;
        reduce_cols(o, cb * kColBlock, std::min(inner, (cb + 1) * kColBlock));
      }
    });
  });
}

// ---- rows ----

void softmax(const Tensor& x, const Tensor& y, bool log_space) {
  dispatch_float(x.dtype(), "softmax", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(n, 1);
    const scalar_t* xp = x.data<scalar_t>();
    scalar_t* yp = y.data<scalar_t>();
    parallel_for(rows, std::max<int64_t>(1, kElementGrain / n), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) softmax_row(xp + r * n, yp + r * n, n, log_space);
    });
  });
}

void softmax_backward(const Tensor& y, const Tensor& gy, const Tensor& gx, bool log_space) {
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    int64_t n = y.size(-1), rows = y.numel() / std::max<int64_t>(n, 1);
    const scalar_t* yp = y.data<scalar_t>();
    const scalar_t* gyp = gy.data<scalar_t>();
    scalar_t* gxp = gx.data<scalar_t>();
    parallel_for(rows, std::max<int64_t>(1, kElementGrain / n), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) softmax_backward_row(yp + r * n, gyp + r * n, gxp + r * n, n, log_space);
    });
  });
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                const Tensor& mean, const Tensor& rstd) {
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    int64_t n = x.size(-1), rows = x.numel() / n;
    const scalar_t *xp = x.data<scalar_t>(), *wp = w.data<scalar_t>(), *bp = b.data<scalar_t>();
    scalar_t *yp = y.data<scalar_t>(), *mp = mean.data<scalar_t>(), *rp = rstd.data<scalar_t>();
    parallel_for(rows, std::max<int64_t>(1, kElementGrain / n), [&](int64_t b0, int64_t e) {
      for (int64_t r = b0; r < e; ++r)
        layer_norm_row(xp + r * n, wp, bp, yp + r * n, n, scalar_t(eps), mp + r, rp + r);
    });
  });
}

void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& gy, const Tensor& mean,
                         const Tensor& rstd, const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    int64_t n = x.size(-1), rows = x.numel() / n;
    const scalar_t *xp = x.data<scalar_t>(), *wp = w.data<scalar_t>(), *gyp = gy.data<scalar_t>();
    const scalar_t *mp = mean.data<scalar_t>(), *rp = rstd.data<scalar_t>();
    scalar_t *gxp = gx.data<scalar_t>(), *gwp = gw.data<scalar_t>(), *gbp = gb.data<scalar_t>();
    parallel_for(rows, std::max<int64_t>(1, kElementGrain / n), [&](int64_t b0, int64_t e) {
      for (int64_t r = b0; r < e; ++r)
        layer_norm_backward_row(xp + r * n, wp, gyp + r * n, mp[r], rp[r], gxp + r * n, n);
    });
    // Column sums over rows, in row order (deterministic).
    parallel_for(n, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) { gwp[c] = scalar_t(0); gbp[c] = scalar_t(0); }
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* xr = xp + r * n;
        const scalar_t* gr = gyp + r * n;
        for (int64_t c = c0; c < c1; ++c) {
          gwp[c] += gr[c] * (xr[c] - mp[r]) * rp[r];
          gbp[c] += gr[c];
        }
      }
    });
  });
}

void topk(const Tensor& x, int64_t k, bool largest, const Tensor& values, const Tensor& indices) {
  dispatch_float(x.dtype(), "topk", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(n, 1);
    const scalar_t* xp = x.data<scalar_t>();
    scalar_t* vp = values.data<scalar_t>();
    int64_t* ip = indices.data<int64_t>();
    parallel_for(rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) topk_row(xp + r * n, n, k, largest, vp + r * k, ip + r * k);
    });
  });
}

void topk_mask(const Tensor& x, const Tensor& k, const Tensor& out) {
  dispatch_float(x.dtype(), "topk_mask", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(n, 1);
    const scalar_t* xp = x.data<scalar_t>();
    const int64_t* kp = k.data<int64_t>();
    scalar_t* op = out.data<scalar_t>();
    parallel_for(rows, 1, [&](int64_t b, int64_t e) {
      std::vector<scalar_t> scratch(n);
      std::vector<int64_t> kept(n);
      for (int64_t r = b; r < e; ++r) {
        scalar_t* o = op + r * n;
        std::fill(o, o + n, scalar_t(0));
        const int64_t m = top_k_indices(xp + r * n, n, kp[r], scratch.data(), kept.data());
        for (int64_t j = 0; j < m; ++j) o[kept[j]] = scalar_t(1);
      }
    });
  });
}

// ---- indexing ----

namespace {
template <class I>
void check_indices(const I* idx, int64_t count, int64_t n, const char* op) {
  for (int64_t j = 0; j < count; ++j)
    LOPPER_CHECK(idx[j] >= 0 && idx[j] < n, "[", op, "] index ", static_cast<int64_t>(idx[j]),
                 " out of range [0, ", n, ")");
}
}  // namespace

void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& idx,
                  const Tensor& out) {
  int64_t m = idx.numel();
  size_t row_bytes = static_cast<size_t>(inner) * x.itemsize();
  const char* xp = static_cast<const char*>(x.raw_data());
  char* op_ = static_cast<char*>(out.raw_data());
  dispatch_index(idx.dtype(), "index_select", [&](auto itag_) { using index_t = typename decltype(itag_)::type;
    const index_t* ip = idx.data<index_t>();
    check_indices(ip, m, n, "index_select");
    parallel_for(outer * m, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / m, j = t % m;
        std::memcpy(op_ + t * row_bytes, xp + (o * n + ip[j]) * row_bytes, row_bytes);
      }
    });
  });
}

void index_add(const Tensor& src, int64_t outer, int64_t n, int64_t inner, const Tensor& idx,
               const Tensor& out) {
  int64_t m = idx.numel();
  dispatch_float(src.dtype(), "index_add", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    const scalar_t* sp = src.data<scalar_t>();
    scalar_t* op_ = out.data<scalar_t>();
    dispatch_index(idx.dtype(), "index_add", [&](auto itag_) { using index_t = typename decltype(itag_)::type;
      const index_t* ip = idx.data<index_t>();
      check_indices(ip, m, n, "index_add");
      // Threads own columns, and walk idx in order: no races, same sums every run.
      parallel_for(outer * inner, 64, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e;) {
          int64_t o = t / inner, i0 = t % inner, i1 = std::min(inner, i0 + (e - t));
          for (int64_t j = 0; j < m; ++j) {
            const scalar_t* s = sp + (o * m + j) * inner;
            scalar_t* d = op_ + (o * n + ip[j]) * inner;
            for (int64_t i = i0; i < i1; ++i) d[i] += s[i];
          }
          t += i1 - i0;
        }
      });
    });
  });
}

void gather(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& idx, const Tensor& out) {
  int64_t m = idx.numel() / std::max<int64_t>(outer * inner, 1);
  dispatch_all(x.dtype(), "gather", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    const scalar_t* xp = x.data<scalar_t>();
    scalar_t* op_ = out.data<scalar_t>();
    dispatch_index(idx.dtype(), "gather", [&](auto itag_) { using index_t = typename decltype(itag_)::type;
      const index_t* ip = idx.data<index_t>();
      check_indices(ip, idx.numel(), n, "gather");
      parallel_for(outer * m * inner, kElementGrain, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          int64_t o = t / (m * inner), i = t % inner;
          op_[t] = xp[(o * n + ip[t]) * inner + i];
        }
      });
    });
  });
}

void scatter_add(const Tensor& src, int64_t outer, int64_t n, int64_t inner, const Tensor& idx,
                 const Tensor& out) {
  int64_t m = idx.numel() / std::max<int64_t>(outer * inner, 1);
  dispatch_float(src.dtype(), "scatter_add", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    const scalar_t* sp = src.data<scalar_t>();
    scalar_t* op_ = out.data<scalar_t>();
    dispatch_index(idx.dtype(), "scatter_add", [&](auto itag_) { using index_t = typename decltype(itag_)::type;
      const index_t* ip = idx.data<index_t>();
      check_indices(ip, idx.numel(), n, "scatter_add");
      parallel_for(outer * inner, 64, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          int64_t o = t / inner, i = t % inner;
          for (int64_t j = 0; j < m; ++j) {
            int64_t s = (o * m + j) * inner + i;
            op_[(o * n + ip[s]) * inner + i] += sp[s];
          }
        }
      });
    });
  });
}

// ---- GEMM ----

namespace {
template <class T>
void gemm_reference(const GemmArgs& g, const T* a, const T* b, T* c, int64_t bi) {
  const T* A = a + g.offset_a(bi);
  const T* B = b + g.offset_b(bi);
  T* C = c + g.offset_c(bi);
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      T acc = T(0);
      for (int64_t p = 0; p < g.k; ++p) {
        T av = g.trans_a ? A[p * g.lda + i] : A[i * g.lda + p];
        T bv = g.trans_b ? B[j * g.ldb + p] : B[p * g.ldb + j];
        acc += av * bv;
      }
      C[i * g.ldc + j] = T(g.alpha) * acc + (g.beta == 0.0 ? T(0) : T(g.beta) * C[i * g.ldc + j]);
    }
}

}  // namespace

void gemm(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  if (g.m == 0 || g.n == 0 || g.batch == 0 || g.outer == 0) return;
  int64_t total = g.batch * g.outer;
  if (c.dtype() == DType::f32) {
    const float *ap = a.data<float>(), *bp = b.data<float>();
    float* cp = c.data<float>();
    // Many small matrices (attention heads): one single-threaded GEMM per thread.
    // Few large ones: oneDNN threads inside each call.
    double flops_each = 2.0 * g.m * g.n * g.k;
    if (total >= omp_get_max_threads() && flops_each < 64e6) {
      int nthreads = omp_get_max_threads();
      // Threads split the batch; each call sees omp_in_parallel() and stays on its thread.
#pragma omp parallel for num_threads(nthreads) schedule(static)
      for (int64_t bi = 0; bi < total; ++bi) sgemm(g, ap, bp, cp, bi);
    } else {
      for (int64_t bi = 0; bi < total; ++bi) sgemm(g, ap, bp, cp, bi);
    }
    return;
  }
  dispatch_float(c.dtype(), "gemm", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    const scalar_t *ap = a.data<scalar_t>(), *bp = b.data<scalar_t>();
    scalar_t* cp = c.data<scalar_t>();
    parallel_for(total, 1, [&](int64_t b0, int64_t e) {
      for (int64_t bi = b0; bi < e; ++bi) gemm_reference(g, ap, bp, cp, bi);
    });
  });
}

// ---- optimizer ----

void adamw(const AdamWStep& s, const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v) {
  float *pp = p.data<float>(), *mp = m.data<float>(), *vp = v.data<float>();
  const float* gp = g.data<float>();
  parallel_for(p.numel(), kElementGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) s(pp[i], gp[i], mp[i], vp[i]);
  });
}

}  // namespace lopper::cpu
