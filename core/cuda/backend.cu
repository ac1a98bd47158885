// The CUDA backend: kernel templates over the same functors and row math as the CPU
// (core/kernels), GEMM through cuBLAS. Elementwise kernels are grid-stride loops, rows are
// one warp each, reductions go in two passes over chunks of the reduced dim: the CPU's
// arithmetic in another order of sums. Where more tuning pays is measured with
// LOPPER_PROFILE (core/profile.h) and scripts/gpu_check.sh (docs/benchmarks.md, "On a GPU").
#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
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
__global__ void bias_act_kernel(int64_t n, int64_t c, T* y, const T* bias, F f) {
  LOPPER_GRID_LOOP(i, n) { y[i] = f.forward(y[i] + bias[i % c], UnaryParams{}); }
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
    y[i] = dropout_value(x[i], keep_scale, seed, offset + static_cast<uint64_t>(i), p);
  }
}

// ---- reductions and rows: the CPU's arithmetic, sums in another order ----

// A reduction over (outer, n, inner) in two passes: pass 1 gives each block one chunk of the
// reduced rows for BX outputs (BX = 32 adjacent columns where inner allows, so loads are
// coalesced; else 1) and reduces its BY threads' partials in a fixed tree; pass 2 combines
// the chunks of each output in order. Sums differ from the CPU's in order only; max and min
// keep the first of equal values, as the CPU does (the arg breaks ties).
template <class T>
struct Partial {
  T v;
  int64_t i;  // the arg for max/min; -1: empty
};

template <class T>
__device__ Partial<T> combine(ReduceOp op, Partial<T> a, Partial<T> b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  if (op == ReduceOp::max) return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
  if (op == ReduceOp::min) return (b.v < a.v || (b.v == a.v && b.i < a.i)) ? b : a;
  return {a.v + b.v, a.i};
}

// grid (ceil(inner / BX), min(outer, 65535), chunks), block (BX, BY), BX * BY = 256.
// Writes (outer * inner, chunks) partials, or the final values when chunks == 1.
template <class T>
__global__ void reduce_chunks_kernel(ReduceOp op, const T* x, int64_t outer, int64_t n, int64_t inner, int64_t len,
                                     T* pv, int64_t* pi, bool final, T* out, int64_t* idx) {
  __shared__ Partial<T> sh[256];
  const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, by = blockDim.y;
  const int64_t i = blockIdx.x * static_cast<int64_t>(bx) + tx;
  const int64_t chunk = blockIdx.z, chunks = gridDim.z;
  const int64_t r0 = chunk * len, r1 = min(n, r0 + len);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    Partial<T> acc{T(0), -1};
    if (i < inner)
      for (int64_t r = r0 + ty; r < r1; r += by) acc = combine(op, acc, Partial<T>{x[(o * n + r) * inner + i], r});
    sh[ty * bx + tx] = acc;
    __syncthreads();
    for (int s = by / 2; s > 0; s /= 2) {
      if (ty < s) sh[ty * bx + tx] = combine(op, sh[ty * bx + tx], sh[(ty + s) * bx + tx]);
      __syncthreads();
    }
    if (ty == 0 && i < inner) {
      Partial<T> p = sh[tx];
      int64_t t = o * inner + i;
      if (final) {
        out[t] = op == ReduceOp::mean ? p.v / T(n) : p.v;
        if (idx) idx[t] = p.i;
      } else {
        pv[t * chunks + chunk] = p.v;
        pi[t * chunks + chunk] = p.i;
      }
    }
    __syncthreads();
  }
}

template <class T>
__global__ void reduce_combine_kernel(ReduceOp op, int64_t outputs, int64_t chunks, int64_t n, const T* pv,
                                      const int64_t* pi, T* out, int64_t* idx) {
  LOPPER_GRID_LOOP(t, outputs) {
    Partial<T> acc{T(0), -1};
    for (int64_t c = 0; c < chunks; ++c) acc = combine(op, acc, Partial<T>{pv[t * chunks + c], pi[t * chunks + c]});
    out[t] = op == ReduceOp::mean ? acc.v / T(n) : acc.v;
    if (idx) idx[t] = acc.i;
  }
}

// Rows: one warp per row (the row math of core/kernels/rows.h with Warp lanes).
struct Warp {
  static constexpr int64_t kStride = 32;
  __device__ int64_t lane() const { return threadIdx.x & 31; }
  __device__ bool leader() const { return (threadIdx.x & 31) == 0; }
  template <class T> __device__ T sum(T v) const {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
  template <class T> __device__ T max(T v) const {
    for (int o = 16; o > 0; o /= 2) {
      T u = __shfl_xor_sync(0xffffffffu, v, o);
      v = v > u ? v : u;
    }
    return v;
  }
};

// Every lane of a warp takes the same rows, so the shuffles see all 32 lanes.
#define LOPPER_WARP_ROW_LOOP(r, rows)                                                              \
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; r < (rows); \
       r += static_cast<int64_t>(blockDim.x) * gridDim.x / 32)

int blocks_for_rows(int64_t rows) { return blocks_for(rows * 32); }

template <class T>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log_space) {
  LOPPER_WARP_ROW_LOOP(r, rows) softmax_row(x + r * n, y + r * n, n, log_space, Warp{});
}

template <class T>
__global__ void softmax_backward_kernel(const T* y, const T* gy, T* gx, int64_t rows, int64_t n, bool log_space) {
  LOPPER_WARP_ROW_LOOP(r, rows) softmax_backward_row(y + r * n, gy + r * n, gx + r * n, n, log_space, Warp{});
}

template <class T>
__global__ void layer_norm_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                                  int64_t n, T eps) {
  LOPPER_WARP_ROW_LOOP(r, rows) layer_norm_row(x + r * n, w, b, y + r * n, n, eps, mean + r, rstd + r, Warp{});
}

template <class T>
__global__ void layer_norm_backward_kernel(const T* x, const T* w, const T* gy, const T* mean, const T* rstd,
                                           T* gx, int64_t rows, int64_t n) {
  LOPPER_WARP_ROW_LOOP(r, rows)
  layer_norm_backward_row(x + r * n, w, gy + r * n, mean[r], rstd[r], gx + r * n, n, Warp{});
}

// gw[c] = sum_r gy[r, c] (x[r, c] - mean[r]) rstd[r], gb[c] = sum_r gy[r, c]: block (32, 8)
// over 32 columns and one chunk of rows, tree over the 8, partials (chunk, c) summed in
// chunk order by the second kernel.
template <class T>
__global__ void layer_norm_param_grad_kernel(const T* x, const T* gy, const T* mean, const T* rstd, T* pw, T* pb,
                                             int64_t rows, int64_t n, int64_t len) {
  __shared__ T sw[8][32], sb[8][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = blockIdx.x * 32 + tx, chunk = blockIdx.y;
  const int64_t r0 = chunk * len, r1 = min(rows, r0 + len);
  T aw = T(0), ab = T(0);
  if (c < n)
    for (int64_t r = r0 + ty; r < r1; r += 8) {
      T g = gy[r * n + c];
      aw += g * (x[r * n + c] - mean[r]) * rstd[r];
      ab += g;
    }
  sw[ty][tx] = aw;
  sb[ty][tx] = ab;
  __syncthreads();
  for (int s = 4; s > 0; s /= 2) {
    if (ty < s) {
      sw[ty][tx] += sw[ty + s][tx];
      sb[ty][tx] += sb[ty + s][tx];
    }
    __syncthreads();
  }
  if (ty == 0 && c < n) {
    pw[chunk * n + c] = sw[0][tx];
    pb[chunk * n + c] = sb[0][tx];
  }
}

template <class T>
__global__ void sum_chunks_kernel(const T* p, int64_t chunks, int64_t n, T* out) {
  LOPPER_GRID_LOOP(c, n) {
    T acc = T(0);
    for (int64_t k = 0; k < chunks; ++k) acc += p[k * n + c];
    out[c] = acc;
  }
}

template <class T>
__global__ void topk_kernel(const T* x, int64_t rows, int64_t n, int64_t k, bool largest, T* vals, int64_t* idx) {
  LOPPER_GRID_LOOP(r, rows) topk_row(x + r * n, n, k, largest, vals + r * k, idx + r * k);
}

// One thread per entry: its rank in the row against the row's k (O(n) per entry, rows of
// attention length; the CPU selects with nth_element in the same order).
template <class T>
__global__ void topk_mask_kernel(const T* x, const int64_t* k, int64_t rows, int64_t n, T* out) {
  LOPPER_GRID_LOOP(t, rows * n) {
    int64_t r = t / n, i = t % n;
    out[t] = rank_in_row(x + r * n, n, i) < k[r] ? T(1) : T(0);
  }
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

// index_add with the positions grouped by target row on the host (a stable sort of idx):
// one thread per (o, target row, column) adds its positions' values in their original
// order, so each sum is the CPU's, bit for bit, and no two threads write one element.
template <class T>
__global__ void index_add_kernel(const T* src, int64_t outer, int64_t n, int64_t inner, int64_t m,
                                 const int64_t* order, const int64_t* rows, const int64_t* starts, int64_t targets,
                                 T* out) {
  LOPPER_GRID_LOOP(t, outer * targets * inner) {
    int64_t o = t / (targets * inner), u = (t / inner) % targets, i = t % inner;
    T* d = out + (o * n + rows[u]) * inner + i;
    T acc = *d;
    for (int64_t k = starts[u]; k < starts[u + 1]; ++k) acc += src[(o * m + order[k]) * inner + i];
    *d = acc;
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

// Indices come from the host in every current use and are small: check them there, and
// return them for the ops that plan on the host.
std::vector<int64_t> check_indices(const Tensor& idx, int64_t n, const char* op) {
  auto v = idx.to_vector<int64_t>();
  for (int64_t x : v) LOPPER_CHECK(x >= 0 && x < n, "[", op, "] index ", x, " out of range [0, ", n, ")");
  return v;
}

// n rows split into `count` chunks of `len` rows for a grid that has `blocks` blocks without
// them: enough chunks for ~4 blocks per SM of an H100 (528 blocks) where the grid has fewer,
// each chunk at least min_rows rows.
struct RowChunks {
  int64_t count, len;
};
RowChunks split_rows(int64_t n, int64_t blocks, int64_t min_rows) {
  constexpr int64_t kTargetBlocks = 528;
  int64_t count = std::clamp<int64_t>(std::min((n + min_rows - 1) / min_rows, kTargetBlocks / std::max<int64_t>(blocks, 1)),
                                      1, 65535);
  int64_t len = std::max<int64_t>((n + count - 1) / count, 1);
  return {std::max<int64_t>((n + len - 1) / len, 1), len};
}

std::atomic<bool> g_tf32{false};

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
void set_tf32(bool allow) { g_tf32 = allow; }

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

void bias_act(UnaryOp act, const Tensor& y, const Tensor& bias) {
  DeviceGuard g(y);
  int64_t n = y.numel(), c = y.size(-1);
  if (n == 0) return;
  dispatch_float(y.dtype(), "bias_act", [&](auto tag) {
    using T = typename decltype(tag)::type;
    visit_unary(act, [&](auto fn) { bias_act_kernel<<<blocks_for(n), kThreads>>>(n, c, y.data<T>(), bias.data<T>(), fn); });
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
  if (outer * inner == 0) return;
  if (n == 0) {
    fill(out, 0.0);
    return;
  }
  const int bx = inner >= 32 ? 32 : 1, by = kThreads / bx;
  const int64_t col_blocks = (inner + bx - 1) / bx, row_blocks = std::min<int64_t>(outer, 65535);
  const RowChunks rc = split_rows(n, col_blocks * row_blocks, 16 * by);  // >= 16 rows per thread
  const int64_t chunks = rc.count, len = rc.len;
  dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks), static_cast<unsigned>(chunks));
  dim3 block(bx, by);
  int64_t* idx = indices.defined() ? indices.data<int64_t>() : nullptr;
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (chunks == 1) {
      reduce_chunks_kernel<<<grid, block>>>(op, x.data<T>(), outer, n, inner, len, static_cast<T*>(nullptr),
                                            static_cast<int64_t*>(nullptr), true, out.data<T>(), idx);
      return;
    }
    Tensor pv = Tensor::empty({outer * inner * chunks}, x.dtype(), out.device());
    Tensor pi = Tensor::empty({outer * inner * chunks}, DType::i64, out.device());
    reduce_chunks_kernel<<<grid, block>>>(op, x.data<T>(), outer, n, inner, len, pv.data<T>(), pi.data<int64_t>(),
                                          false, static_cast<T*>(nullptr), static_cast<int64_t*>(nullptr));
    LOPPER_CUDA_LAUNCH_CHECK();
    reduce_combine_kernel<<<blocks_for(outer * inner), kThreads>>>(op, outer * inner, chunks, n, pv.data<T>(),
                                                                   pi.data<int64_t>(), out.data<T>(), idx);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void softmax(const Tensor& x, const Tensor& y, bool log_space) {
  DeviceGuard g(y);
  int64_t n = x.size(-1), rows = x.numel() / n;
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softmax_kernel<<<blocks_for_rows(rows), kThreads>>>(x.data<T>(), y.data<T>(), rows, n, log_space);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void softmax_backward(const Tensor& y, const Tensor& gy, const Tensor& gx, bool log_space) {
  DeviceGuard g(gx);
  int64_t n = y.size(-1), rows = y.numel() / n;
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softmax_backward_kernel<<<blocks_for_rows(rows), kThreads>>>(y.data<T>(), gy.data<T>(), gx.data<T>(), rows, n, log_space);
  });
  LOPPER_CUDA_LAUNCH_CHECK();
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y, const Tensor& mean,
                const Tensor& rstd) {
  DeviceGuard g(y);
  int64_t n = x.size(-1), rows = x.numel() / n;
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    layer_norm_kernel<<<blocks_for_rows(rows), kThreads>>>(x.data<T>(), w.data<T>(), b.data<T>(), y.data<T>(),
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
    layer_norm_backward_kernel<<<blocks_for_rows(rows), kThreads>>>(x.data<T>(), w.data<T>(), gy.data<T>(), mean.data<T>(),
                                                               rstd.data<T>(), gx.data<T>(), rows, n);
    const int64_t col_blocks = (n + 31) / 32;
    const RowChunks rc = split_rows(rows, col_blocks, 64);
    const int64_t chunks = rc.count, len = rc.len;
    Tensor pw = Tensor::empty({chunks, n}, x.dtype(), x.device()), pb = Tensor::empty({chunks, n}, x.dtype(), x.device());
    layer_norm_param_grad_kernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8)>>>(
        x.data<T>(), gy.data<T>(), mean.data<T>(), rstd.data<T>(), pw.data<T>(), pb.data<T>(), rows, n, len);
    sum_chunks_kernel<<<blocks_for(n), kThreads>>>(pw.data<T>(), chunks, n, gw.data<T>());
    sum_chunks_kernel<<<blocks_for(n), kThreads>>>(pb.data<T>(), chunks, n, gb.data<T>());
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

void topk_mask(const Tensor& x, const Tensor& k, const Tensor& out) {
  DeviceGuard g(out);
  int64_t n = x.size(-1), rows = x.numel() / n;
  dispatch_float(x.dtype(), "topk_mask", [&](auto tag) {
    using T = typename decltype(tag)::type;
    topk_mask_kernel<<<blocks_for(rows * n), kThreads>>>(x.data<T>(), k.data<int64_t>(), rows, n, out.data<T>());
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
  const std::vector<int64_t> ids = check_indices(idx, n, "index_add");
  const int64_t m = static_cast<int64_t>(ids.size());
  if (m == 0) return;
  // plan = [order (m) | target rows (U) | starts (U + 1)]
  std::vector<int64_t> order(m);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  std::vector<int64_t> rows, starts;
  for (int64_t k = 0; k < m; ++k)
    if (k == 0 || ids[order[k]] != ids[order[k - 1]]) {
      rows.push_back(ids[order[k]]);
      starts.push_back(k);
    }
  starts.push_back(m);
  const int64_t targets = static_cast<int64_t>(rows.size());
  std::vector<int64_t> plan(order);
  plan.insert(plan.end(), rows.begin(), rows.end());
  plan.insert(plan.end(), starts.begin(), starts.end());
  Tensor dplan = Tensor::from_vector(plan, {static_cast<int64_t>(plan.size())}).to(out.device());
  const int64_t* p = dplan.data<int64_t>();
  dispatch_float(src.dtype(), "index_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    index_add_kernel<<<blocks_for(outer * targets * inner), kThreads>>>(src.data<T>(), outer, n, inner, m, p, p + m,
                                                                        p + m + targets, targets, out.data<T>());
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

// Two batch levels (attention's (batch, head) views of (batch, token, head, dim)): one
// pointer-array call for all outer * batch products instead of a strided call per outer
// index; the pointers are computed on the device, so nothing waits on the host.
__global__ void gemm_pointers_kernel(int64_t count, int64_t batch, int64_t item, const char* a, int64_t osa,
                                     int64_t sa, const char* b, int64_t osb, int64_t sb, char* c, int64_t osc,
                                     int64_t sc, const void** pa, const void** pb, void** pc) {
  LOPPER_GRID_LOOP(k, count) {
    int64_t o = k / batch, j = k % batch;
    pa[k] = a + (o * osa + j * sa) * item;
    pb[k] = b + (o * osb + j * sb) * item;
    pc[k] = c + (o * osc + j * sc) * item;
  }
}

void gemm(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  if (g.m == 0 || g.n == 0 || g.batch == 0 || g.outer == 0) return;
  DeviceGuard dg(c);
  LOPPER_CHECK(c.dtype() == DType::f32 || c.dtype() == DType::f64, "[gemm] cuda supports f32 and f64, got ",
               dtype_name(c.dtype()));
  cublasHandle_t h = cublas_handle(c.device().index);
  cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const bool f32 = c.dtype() == DType::f32;
  LOPPER_CUBLAS_CHECK(cublasSetMathMode(h, g_tf32 && f32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  float alpha_f = static_cast<float>(g.alpha), beta_f = static_cast<float>(g.beta);
  double alpha_d = g.alpha, beta_d = g.beta;
  if (g.outer > 1) {
    const int64_t count = g.outer * g.batch;
    Tensor ptrs = Tensor::empty({3 * count}, DType::i64, c.device());
    auto** p = reinterpret_cast<void**>(ptrs.raw_data());
    gemm_pointers_kernel<<<blocks_for(count), kThreads>>>(
        count, g.batch, c.itemsize(), static_cast<const char*>(a.raw_data()), g.outer_stride_a, g.stride_a,
        static_cast<const char*>(b.raw_data()), g.outer_stride_b, g.stride_b, static_cast<char*>(c.raw_data()),
        g.outer_stride_c, g.stride_c, const_cast<const void**>(p), const_cast<const void**>(p + count), p + 2 * count);
    LOPPER_CUDA_LAUNCH_CHECK();
    if (f32) {
      LOPPER_CUBLAS_CHECK(cublasSgemmBatched(h, tb, ta, g.n, g.m, g.k, &alpha_f,
                                             reinterpret_cast<const float* const*>(p + count), g.ldb,
                                             reinterpret_cast<const float* const*>(p), g.lda, &beta_f,
                                             reinterpret_cast<float* const*>(p + 2 * count), g.ldc, count));
    } else {
      LOPPER_CUBLAS_CHECK(cublasDgemmBatched(h, tb, ta, g.n, g.m, g.k, &alpha_d,
                                             reinterpret_cast<const double* const*>(p + count), g.ldb,
                                             reinterpret_cast<const double* const*>(p), g.lda, &beta_d,
                                             reinterpret_cast<double* const*>(p + 2 * count), g.ldc, count));
    }
    return;
  }
  if (f32) {
    LOPPER_CUBLAS_CHECK(cublasSgemmStridedBatched(h, tb, ta, g.n, g.m, g.k, &alpha_f, b.data<float>(), g.ldb,
                                                  g.stride_b, a.data<float>(), g.lda, g.stride_a, &beta_f,
                                                  c.data<float>(), g.ldc, g.stride_c, g.batch));
  } else {
    LOPPER_CUBLAS_CHECK(cublasDgemmStridedBatched(h, tb, ta, g.n, g.m, g.k, &alpha_d, b.data<double>(), g.ldb,
                                                  g.stride_b, a.data<double>(), g.lda, g.stride_a, &beta_d,
                                                  c.data<double>(), g.ldc, g.stride_c, g.batch));
  }
}

void adamw(const AdamWStep& s, const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v) {
  DeviceGuard dg(p);
  int64_t n = p.numel();
  adamw_kernel<<<blocks_for(n), kThreads>>>(n, s, p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>());
  LOPPER_CUDA_LAUNCH_CHECK();
}

}  // namespace lopper::cuda
