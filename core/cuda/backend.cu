// The CUDA backend: kernel templates over the same functors and row math as the CPU
// (core/kernels), GEMM through cuBLAS. Kernels are plain grid-stride loops and one thread
// per row: the aim is the CPU's exact arithmetic on the GPU; fusing and tuning come where
// a profile says they pay (DESIGN.md rule 12).
#include <cublas_v2.h>

#include <array>
#include <vector>

#include "core/backend.h"
#include "core/cuda/check.h"
#include "core/kernels/convert.h"
#include "core/kernels/indexer.h"
#include "core/kernels/random.h"

namespace lopper::cuda {

using namespace kernels;

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(b, 1), 65535));
}

// Makes t's device current for the duration of a call.
struct DeviceGuard {
  explicit DeviceGuard(const Tensor& t) {
    LOPPER_CUDA_CHECK(cudaGetDevice(&prev_));
    if (t.device().index != prev_) LOPPER_CUDA_CHECK(cudaSetDevice(t.device().index));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  int prev_ = 0;
};

template <int N>
Indexer<N> indexer_for(const std::array<const Tensor*, N>& ts) {
  const int64_t* strides[N];
  for (int k = 0; k < N; ++k) strides[k] = ts[k]->strides().data();
  return make_indexer<N>(static_cast<int>(ts[0]->dim()), ts[0]->shape().data(), strides);
}

#define LOPPER_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// ---- elementwise kernels ----

template <class T, class F>
__global__ void unary_kernel(int64_t n, Indexer<2> ix, T* y, const T* x, F f, UnaryParams p) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[2];
    ix.offsets(i, o);
    y[o[0]] = f.forward(x[o[1]], p);
  }
}

template <class T, class F>
__global__ void unary_backward_kernel(int64_t n, Indexer<3> ix, T* gx, const T* s, const T* gy, F f, UnaryParams p) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[3];
    ix.offsets(i, o);
    gx[o[0]] = f.backward(s[o[1]], gy[o[2]], p);
  }
}

template <class T, class F>
__global__ void binary_kernel(int64_t n, Indexer<3> ix, T* out, const T* a, const T* b, F f) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[3];
    ix.offsets(i, o);
    out[o[0]] = f.forward(a[o[1]], b[o[2]]);
  }
}

template <class T, class F>
__global__ void binary_backward_kernel(int64_t n, Indexer<4> ix, T* g, const T* a, const T* b, const T* gy,
                                       F f, bool grad_a) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[4];
    ix.offsets(i, o);
    g[o[0]] = grad_a ? f.grad_a(a[o[1]], b[o[2]], gy[o[3]]) : f.grad_b(a[o[1]], b[o[2]], gy[o[3]]);
  }
}

template <class T>
__global__ void compare_kernel(int64_t n, Indexer<3> ix, uint8_t* out, const T* a, const T* b, CompareOp op) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[3];
    ix.offsets(i, o);
    out[o[0]] = kernels::compare(op, convert<double>(a[o[1]]), convert<double>(b[o[2]]));
  }
}

template <class T>
__global__ void where_kernel(int64_t n, Indexer<4> ix, T* out, const uint8_t* c, const T* a, const T* b) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[4];
    ix.offsets(i, o);
    out[o[0]] = kernels::where(c[o[1]], a[o[2]], b[o[3]]);
  }
}

template <class D, class S>
__global__ void copy_kernel(int64_t n, Indexer<2> ix, D* dst, const S* src) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[2];
    ix.offsets(i, o);
    dst[o[0]] = convert<D>(src[o[1]]);
  }
}

template <class T>
__global__ void fill_kernel(int64_t n, Indexer<1> ix, T* dst, T v) {
  LOPPER_GRID_LOOP(i, n) {
    int64_t o[1];
    ix.offsets(i, o);
    dst[o[0]] = v;
  }
}

template <class T>
__global__ void random_kernel(int64_t n, T* d, RandomKind kind, double a, double b, uint64_t seed, uint64_t offset) {
  LOPPER_GRID_LOOP(i, n) {
    uint64_t c = offset + static_cast<uint64_t>(i);
    double v = kind == RandomKind::uniform ? a + (b - a) * uniform01_f64(seed, c)
             : kind == RandomKind::normal  ? a + b * normal01(seed, c)
                                           : (uniform01_f64(seed, c) < a ? 1.0 : 0.0);
    d[i] = static_cast<T>(v);
  }
}

template <class T>
__global__ void dropout_kernel(int64_t n, const T* x, T* y, float p, uint64_t seed, uint64_t offset) {
  T keep_scale = T(1) / (T(1) - T(p));
  LOPPER_GRID_LOOP(i, n) {
    y[i] = dropout_keep(seed, offset + static_cast<uint64_t>(i), p) ? x[i] * keep_scale : T(0);
  }
}

// ---- reductions and rows: one thread per output / row, same arithmetic as the CPU ----

template <class T>
__global__ void reduce_kernel(ReduceOp op, const T* x, int64_t outer, int64_t n, int64_t inner, T* out, int64_t* idx) {
  LOPPER_GRID_LOOP(t, outer * inner) {
    int64_t o = t / inner, i = t % inner;
    const T* base = x + o * n * inner + i;
    if (n == 0) { out[t] = T(0); continue; }
    T acc = base[0];
    int64_t arg = 0;
    for (int64_t r = 1; r < n; ++r) {
      T v = base[r * inner];
      if (op == ReduceOp::max) { if (v > acc) { acc = v; arg = r; } }
      else if (op == ReduceOp::min) { if (v < acc) { acc = v; arg = r; } }
      else acc += v;
    }
    if (op == ReduceOp::mean) acc /= T(n);
    out[t] = acc;
    if (idx) idx[t] = arg;
  }
}

template <class T>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log_space) {
  LOPPER_GRID_LOOP(r, rows) softmax_row(x + r * n, y + r * n, n, log_space);
}

template <class T>
__global__ void softmax_backward_kernel(const T* y, const T* gy, T* gx, int64_t rows, int64_t n, bool log_space) {
  LOPPER_GRID_LOOP(r, rows) softmax_backward_row(y + r * n, gy + r * n, gx + r * n, n, log_space);
}

template <class T>
__global__ void layer_norm_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                                  int64_t n, T eps) {
  LOPPER_GRID_LOOP(r, rows) layer_norm_row(x + r * n, w, b, y + r * n, n, eps, mean + r, rstd + r);
}

template <class T>
__global__ void layer_norm_backward_kernel(const T* x, const T* w, const T* gy, const T* mean, const T* rstd,
                                           T* gx, int64_t rows, int64_t n) {
  LOPPER_GRID_LOOP(r, rows) layer_norm_backward_row(x + r * n, w, gy + r * n, mean[r], rstd[r], gx + r * n, n);
}

template <class T>
__global__ void layer_norm_param_grad_kernel(const T* x, const T* gy, const T* mean, const T* rstd, T* gw, T* gb,
                                             int64_t rows, int64_t n) {
  LOPPER_GRID_LOOP(c, n) {
    T sw = T(0), sb = T(0);
    for (int64_t r = 0; r < rows; ++r) {
      T g = gy[r * n + c];
      sw += g * (x[r * n + c] - mean[r]) * rstd[r];
      sb += g;
    }
    gw[c] = sw;
    gb[c] = sb;
  }
}

template <class T>
__global__ void topk_kernel(const T* x, int64_t rows, int64_t n, int64_t k, bool largest, T* vals, int64_t* idx) {
  LOPPER_GRID_LOOP(r, rows) topk_row(x + r * n, n, k, largest, vals + r * k, idx + r * k);
}

// ---- indexing ----

template <class T, class I>
__global__ void index_select_kernel(const T* x, int64_t outer, int64_t n, int64_t inner, const I* idx, int64_t m,
                                    T* out) {
  LOPPER_GRID_LOOP(t, outer * m * inner) {
    int64_t o = t / (m * inner), j = (t / inner) % m, i = t % inner;
    out[t] = x[(o * n + idx[j]) * inner + i];
  }
}

// One thread per (o, i) column walks idx in order: deterministic, no atomics.
template <class T, class I>
__global__ void index_add_kernel(const T* src, int64_t outer, int64_t n, int64_t inner, const I* idx, int64_t m,
                                 T* out) {
  LOPPER_GRID_LOOP(t, outer * inner) {
    int64_t o = t / inner, i = t % inner;
    for (int64_t j = 0; j < m; ++j) out[(o * n + idx[j]) * inner + i] += src[(o * m + j) * inner + i];
  }
}

template <class T, class I>
__global__ void gather_kernel(const T* x, int64_t outer, int64_t n, int64_t inner, const I* idx, int64_t m, T* out) {
  LOPPER_GRID_LOOP(t, outer * m * inner) {
    int64_t o = t / (m * inner), i = t % inner;
    out[t] = x[(o * n + idx[t]) * inner + i];
  }
}

template <class T, class I>
__global__ void scatter_add_kernel(const T* src, int64_t outer, int64_t n, int64_t inner, const I* idx, int64_t m,
                                   T* out) {
  LOPPER_GRID_LOOP(t, outer * inner) {
    int64_t o = t / inner, i = t % inner;
    for (int64_t j = 0; j < m; ++j) {
      int64_t s = (o * m + j) * inner + i;
      out[(o * n + idx[s]) * inner + i] += src[s];
    }
  }
}

__global__ void adamw_kernel(int64_t n, AdamWStep s, float* p, const float* g, float* m, float* v) {
  LOPPER_GRID_LOOP(i, n) s(p[i], g[i], m[i], v[i]);
}

// Indices come from the host in every current use and are small: check them there.
void check_indices(const Tensor& idx, int64_t n, const char* op) {
  auto v = idx.to_vector<int64_t>();
  for (int64_t x : v) LOPPER_CHECK(x >= 0 && x < n, "[", op, "] index ", x, " out of range [0, ", n, ")");
}

cublasHandle_t cublas_handle(int device) {
  static thread_local std::vector<cublasHandle_t> handles;
  if (static_cast<int>(handles.size()) <= device) handles.resize(device + 1, nullptr);
  if (!handles[device]) LOPPER_CUBLAS_CHECK(cublasCreate(&handles[device]));
  return handles[device];
}

}  // namespace

// ---- device queries ----

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

bool built() { return true; }
bool available() { return device_count() > 0; }

void synchronize() { LOPPER_CUDA_CHECK(cudaDeviceSynchronize()); }

void copy_between_devices(const Tensor& src, const Tensor& dst) {
  size_t bytes = static_cast<size_t>(src.numel()) * src.itemsize();
  LOPPER_CHECK(bytes == static_cast<size_t>(dst.numel()) * dst.itemsize(), "[cuda copy] size mismatch");
  if (bytes == 0) return;
  cudaMemcpyKind kind = src.device().is_cpu() ? cudaMemcpyHostToDevice
                      : dst.device().is_cpu() ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDeviceToDevice && src.device().index != dst.device().index) {
    LOPPER_CUDA_CHECK(cudaMemcpyPeer(dst.raw_data(), dst.device().index, src.raw_data(), src.device().index, bytes));
  } else {
    LOPPER_CUDA_CHECK(cudaMemcpy(dst.raw_data(), src.raw_data(), bytes, kind));
  }
}

// ---- elementwise ----

void unary(UnaryOp op, UnaryParams p, const Tensor& x, const Tensor& y) {
  DeviceGuard g(y);
  auto ix = indexer_for<2>({&y, &x});
  int64_t n = y.numel();
  dispatch_float(x.dtype(), "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    visit_unary(op, [&](auto fn) {
      unary_kernel<<<blocks_for(n), kThreads>>>(n, ix, y.data<T>(), x.data<T>(), fn, p);
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void unary_backward(UnaryOp op, UnaryParams p, const Tensor& saved, const Tensor& gy, const Tensor& gx) {
  DeviceGuard g(gx);
  auto ix = indexer_for<3>({&gx, &saved, &gy});
  int64_t n = gx.numel();
  dispatch_float(gy.dtype(), "unary_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    visit_unary(op, [&](auto fn) {
      unary_backward_kernel<<<blocks_for(n), kThreads>>>(n, ix, gx.data<T>(), saved.data<T>(), gy.data<T>(), fn, p);
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard g(out);
  auto ix = indexer_for<3>({&out, &a, &b});
  int64_t n = out.numel();
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    visit_binary(op, [&](auto fn) {
      binary_kernel<<<blocks_for(n), kThreads>>>(n, ix, out.data<T>(), a.data<T>(), b.data<T>(), fn);
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void binary_backward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& gy, const Tensor& ga,
                     const Tensor& gb) {
  DeviceGuard g(gy);
  int64_t n = gy.numel();
  dispatch_float(gy.dtype(), "binary_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    visit_binary(op, [&](auto fn) {
      for (int which = 0; which < 2; ++which) {
        const Tensor& gt = which == 0 ? ga : gb;
        if (!gt.defined()) continue;
        auto ix = indexer_for<4>({&gt, &a, &b, &gy});
        binary_backward_kernel<<<blocks_for(n), kThreads>>>(n, ix, gt.data<T>(), a.data<T>(), b.data<T>(),
                                                            gy.data<T>(), fn, which == 0);
      }
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard g(out);
  auto ix = indexer_for<3>({&out, &a, &b});
  int64_t n = out.numel();
  dispatch_all(a.dtype(), "compare", [&](auto tag) {
    using T = typename decltype(tag)::type;
    compare_kernel<<<blocks_for(n), kThreads>>>(n, ix, out.data<uint8_t>(), a.data<T>(), b.data<T>(), op);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard g(out);
  auto ix = indexer_for<4>({&out, &cond, &a, &b});
  int64_t n = out.numel();
  dispatch_all(out.dtype(), "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    where_kernel<<<blocks_for(n), kThreads>>>(n, ix, out.data<T>(), cond.data<uint8_t>(), a.data<T>(), b.data<T>());
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void copy(const Tensor& src, const Tensor& dst) {
  DeviceGuard g(dst);
  int64_t n = dst.numel();
  if (n == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    LOPPER_CUDA_CHECK(cudaMemcpy(dst.raw_data(), src.raw_data(), n * src.itemsize(), cudaMemcpyDeviceToDevice));
    return;
  }
  auto ix = indexer_for<2>({&dst, &src});
  dispatch_all(dst.dtype(), "copy", [&](auto dtag) {
    using D = typename decltype(dtag)::type;
    dispatch_all(src.dtype(), "copy", [&](auto stag) {
      using S = typename decltype(stag)::type;
      copy_kernel<<<blocks_for(n), kThreads>>>(n, ix, dst.data<D>(), src.data<S>());
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void fill(const Tensor& dst, double value) {
  DeviceGuard g(dst);
  auto ix = indexer_for<1>({&dst});
  int64_t n = dst.numel();
  dispatch_all(dst.dtype(), "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_kernel<<<blocks_for(n), kThreads>>>(n, ix, dst.data<T>(), convert<T>(value));
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void random(RandomKind kind, double a, double b, uint64_t seed, uint64_t offset, const Tensor& dst) {
  DeviceGuard g(dst);
  int64_t n = dst.numel();
  dispatch_float(dst.dtype(), "random", [&](auto tag) {
    using T = typename decltype(tag)::type;
    random_kernel<<<blocks_for(n), kThreads>>>(n, dst.data<T>(), kind, a, b, seed, offset);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void dropout(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t offset) {
  DeviceGuard g(y);
  int64_t n = x.numel();
  dispatch_float(x.dtype(), "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dropout_kernel<<<blocks_for(n), kThreads>>>(n, x.data<T>(), y.data<T>(), p, seed, offset);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

// ---- reductions and rows ----

void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out,
            const Tensor& indices) {
  DeviceGuard g(out);
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    reduce_kernel<<<blocks_for(outer * inner), kThreads>>>(op, x.data<T>(), outer, n, inner, out.data<T>(),
                                                           indices.defined() ? indices.data<int64_t>() : nullptr);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void softmax(const Tensor& x, const Tensor& y, bool log_space) {
  DeviceGuard g(y);
  int64_t n = x.size(-1), rows = x.numel() / n;
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softmax_kernel<<<blocks_for(rows), kThreads>>>(x.data<T>(), y.data<T>(), rows, n, log_space);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void softmax_backward(const Tensor& y, const Tensor& gy, const Tensor& gx, bool log_space) {
  DeviceGuard g(gx);
  int64_t n = y.size(-1), rows = y.numel() / n;
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softmax_backward_kernel<<<blocks_for(rows), kThreads>>>(y.data<T>(), gy.data<T>(), gx.data<T>(), rows, n, log_space);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y, const Tensor& mean,
                const Tensor& rstd) {
  DeviceGuard g(y);
  int64_t n = x.size(-1), rows = x.numel() / n;
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    layer_norm_kernel<<<blocks_for(rows), kThreads>>>(x.data<T>(), w.data<T>(), b.data<T>(), y.data<T>(),
                                                      mean.data<T>(), rstd.data<T>(), rows, n, T(eps));
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& gy, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  DeviceGuard g(gx);
  int64_t n = x.size(-1), rows = x.numel() / n;
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    layer_norm_backward_kernel<<<blocks_for(rows), kThreads>>>(x.data<T>(), w.data<T>(), gy.data<T>(), mean.data<T>(),
                                                               rstd.data<T>(), gx.data<T>(), rows, n);
    layer_norm_param_grad_kernel<<<blocks_for(n), kThreads>>>(x.data<T>(), gy.data<T>(), mean.data<T>(),
                                                              rstd.data<T>(), gw.data<T>(), gb.data<T>(), rows, n);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void topk(const Tensor& x, int64_t k, bool largest, const Tensor& values, const Tensor& indices) {
  DeviceGuard g(values);
  int64_t n = x.size(-1), rows = x.numel() / n;
  dispatch_float(x.dtype(), "topk", [&](auto tag) {
    using T = typename decltype(tag)::type;
    topk_kernel<<<blocks_for(rows), kThreads>>>(x.data<T>(), rows, n, k, largest, values.data<T>(),
                                                indices.data<int64_t>());
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

// ---- indexing ----

void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& idx, const Tensor& out) {
  DeviceGuard g(out);
  check_indices(idx, n, "index_select");
  int64_t m = idx.numel();
  dispatch_all(x.dtype(), "index_select", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(idx.dtype(), "index_select", [&](auto itag) {
      using I = typename decltype(itag)::type;
      index_select_kernel<<<blocks_for(outer * m * inner), kThreads>>>(x.data<T>(), outer, n, inner, idx.data<I>(),
                                                                       m, out.data<T>());
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void index_add(const Tensor& src, int64_t outer, int64_t n, int64_t inner, const Tensor& idx, const Tensor& out) {
  DeviceGuard g(out);
  check_indices(idx, n, "index_add");
  int64_t m = idx.numel();
  dispatch_float(src.dtype(), "index_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(idx.dtype(), "index_add", [&](auto itag) {
      using I = typename decltype(itag)::type;
      index_add_kernel<<<blocks_for(outer * inner), kThreads>>>(src.data<T>(), outer, n, inner, idx.data<I>(), m,
                                                                out.data<T>());
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void gather(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& idx, const Tensor& out) {
  DeviceGuard g(out);
  check_indices(idx, n, "gather");
  int64_t m = idx.numel() / std::max<int64_t>(outer * inner, 1);
  dispatch_all(x.dtype(), "gather", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(idx.dtype(), "gather", [&](auto itag) {
      using I = typename decltype(itag)::type;
      gather_kernel<<<blocks_for(outer * m * inner), kThreads>>>(x.data<T>(), outer, n, inner, idx.data<I>(), m,
                                                                 out.data<T>());
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void scatter_add(const Tensor& src, int64_t outer, int64_t n, int64_t inner, const Tensor& idx, const Tensor& out) {
  DeviceGuard g(out);
  check_indices(idx, n, "scatter_add");
  int64_t m = idx.numel() / std::max<int64_t>(outer * inner, 1);
  dispatch_float(src.dtype(), "scatter_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(idx.dtype(), "scatter_add", [&](auto itag) {
      using I = typename decltype(itag)::type;
      scatter_add_kernel<<<blocks_for(outer * inner), kThreads>>>(src.data<T>(), outer, n, inner, idx.data<I>(), m,
                                                                  out.data<T>());
    });
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

// ---- GEMM ----
// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.

void gemm(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  if (g.m == 0 || g.n == 0 || g.batch == 0 || g.outer == 0) return;
  DeviceGuard dg(c);
  cublasHandle_t h = cublas_handle(c.device().index);
  cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  for (int64_t o = 0; o < g.outer; ++o) {  // one strided-batched call per outer batch
    if (c.dtype() == DType::f32) {
      float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
      LOPPER_CUBLAS_CHECK(cublasSgemmStridedBatched(
          h, tb, ta, g.n, g.m, g.k, &alpha, b.data<float>() + o * g.outer_stride_b, g.ldb, g.stride_b,
          a.data<float>() + o * g.outer_stride_a, g.lda, g.stride_a, &beta, c.data<float>() + o * g.outer_stride_c,
          g.ldc, g.stride_c, g.batch));
    } else if (c.dtype() == DType::f64) {
      double alpha = g.alpha, beta = g.beta;
      LOPPER_CUBLAS_CHECK(cublasDgemmStridedBatched(
          h, tb, ta, g.n, g.m, g.k, &alpha, b.data<double>() + o * g.outer_stride_b, g.ldb, g.stride_b,
          a.data<double>() + o * g.outer_stride_a, g.lda, g.stride_a, &beta, c.data<double>() + o * g.outer_stride_c,
          g.ldc, g.stride_c, g.batch));
    } else {
      LOPPER_FAIL("[gemm] cuda supports f32 and f64, got ", dtype_name(c.dtype()));
    }
  }
}

void adamw(const AdamWStep& s, const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v) {
  DeviceGuard dg(p);
  int64_t n = p.numel();
  adamw_kernel<<<blocks_for(n), kThreads>>>(n, s, p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>());
  LOPPER_CUDA_LAUNCH_CHECK();
}

}  // namespace lopper::cuda
