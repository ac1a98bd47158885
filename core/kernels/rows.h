// Row math shared by both backends: softmax, log-softmax, layer norm, top-k and the
// reduction accumulators. A row is contiguous. Each row function takes who walks the row:
// `Serial` (the CPU: one thread, elements in order, its reductions the identity) or the
// CUDA backend's `Warp` (32 lanes, lane l takes elements l, l + 32, ..., and the partial
// sums meet by shuffles). The arithmetic is written once; only the order of sums differs.
#pragma once
#include <cstdint>

#include "core/kernels/math.h"

namespace lopper::kernels {

struct Serial {
  static constexpr int64_t kStride = 1;
  LOPPER_HOST_DEVICE int64_t lane() const { return 0; }
  LOPPER_HOST_DEVICE bool leader() const { return true; }
  template <class T> LOPPER_HOST_DEVICE T sum(T v) const { return v; }
  template <class T> LOPPER_HOST_DEVICE T max(T v) const { return v; }
};

// y = softmax(x) over n elements; with `log`, y = log_softmax(x).
template <class T, class L = Serial>
LOPPER_HOST_DEVICE void softmax_row(const T* x, T* y, int64_t n, bool log_space, L lanes = {}) {
  T mx = x[0];
  LOPPER_SIMD_MAX(mx)
  for (int64_t i = lanes.lane(); i < n; i += L::kStride) mx = mx > x[i] ? mx : x[i];
  mx = lanes.max(mx);
  T sum = T(0);
  if (log_space) {
    LOPPER_SIMD_SUM(sum)
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) sum += k_exp(x[i] - mx);
    T lse = mx + k_log(lanes.sum(sum));
    LOPPER_SIMD
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) y[i] = x[i] - lse;
  } else {
    LOPPER_SIMD_SUM(sum)
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) { y[i] = k_exp(x[i] - mx); sum += y[i]; }
    T inv = T(1) / lanes.sum(sum);
    LOPPER_SIMD
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) y[i] *= inv;
  }
}

// softmax: gx = y * (gy - <gy, y>);  log_softmax: gx = gy - exp(y) * sum(gy).
template <class T, class L = Serial>
LOPPER_HOST_DEVICE void softmax_backward_row(const T* y, const T* gy, T* gx, int64_t n, bool log_space, L lanes = {}) {
  T acc = T(0);
  if (log_space) {
    LOPPER_SIMD_SUM(acc)
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) acc += gy[i];
    acc = lanes.sum(acc);
    LOPPER_SIMD
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) gx[i] = gy[i] - k_exp(y[i]) * acc;
  } else {
    LOPPER_SIMD_SUM(acc)
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) acc += gy[i] * y[i];
    acc = lanes.sum(acc);
    LOPPER_SIMD
    for (int64_t i = lanes.lane(); i < n; i += L::kStride) gx[i] = y[i] * (gy[i] - acc);
  }
}

// y = (x - mean) * rstd * w + b over n elements; saves mean and rstd for the backward.
template <class T, class L = Serial>
LOPPER_HOST_DEVICE void layer_norm_row(const T* x, const T* w, const T* b, T* y, int64_t n,
                                       T eps, T* mean_out, T* rstd_out, L lanes = {}) {
  T mean = T(0);
  LOPPER_SIMD_SUM(mean)
  for (int64_t i = lanes.lane(); i < n; i += L::kStride) mean += x[i];
  mean = lanes.sum(mean) / T(n);
  T var = T(0);
  LOPPER_SIMD_SUM(var)
  for (int64_t i = lanes.lane(); i < n; i += L::kStride) { T d = x[i] - mean; var += d * d; }
  var = lanes.sum(var) / T(n);
  T rstd = T(1) / k_sqrt(var + eps);
  LOPPER_SIMD
  for (int64_t i = lanes.lane(); i < n; i += L::kStride) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
  if (lanes.leader()) {
    *mean_out = mean;
    *rstd_out = rstd;
  }
}

// gx for one row: rstd * (g - mean(g) - xhat * mean(g * xhat)), with g = gy * w.
template <class T, class L = Serial>
LOPPER_HOST_DEVICE void layer_norm_backward_row(const T* x, const T* w, const T* gy, T mean,
                                                T rstd, T* gx, int64_t n, L lanes = {}) {
  T sum_g = T(0), sum_gx = T(0);
  LOPPER_SIMD_SUM2(sum_g, sum_gx)
  for (int64_t i = lanes.lane(); i < n; i += L::kStride) {
    T g = gy[i] * w[i];
    T xhat = (x[i] - mean) * rstd;
    sum_g += g;
    sum_gx += g * xhat;
  }
  T mg = lanes.sum(sum_g) / T(n), mgx = lanes.sum(sum_gx) / T(n);
  LOPPER_SIMD
  for (int64_t i = lanes.lane(); i < n; i += L::kStride) {
    T xhat = (x[i] - mean) * rstd;
    gx[i] = rstd * (gy[i] * w[i] - mg - xhat * mgx);
  }
}

// The k largest (or smallest) of a row, sorted, ties broken by the lower index.
// Insertion into a sorted buffer: O(n k), fine for the k of pruning and top-k accuracy.
template <class T, class I>
LOPPER_HOST_DEVICE void topk_row(const T* x, int64_t n, int64_t k, bool largest, T* vals, I* idx) {
  int64_t filled = 0;
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i];
    int64_t pos = filled;
    while (pos > 0 && (largest ? v > vals[pos - 1] : v < vals[pos - 1])) --pos;
    if (pos >= k) continue;
    int64_t last = filled < k ? filled : k - 1;
    for (int64_t j = last; j > pos; --j) { vals[j] = vals[j - 1]; idx[j] = idx[j - 1]; }
    vals[pos] = v;
    idx[pos] = static_cast<I>(i);
    if (filled < k) ++filled;
  }
}

// The order topk_mask keeps the first k of: largest first, equal values by lower index
// (deterministic, and the same on every backend).
template <class T>
LOPPER_HOST_DEVICE bool ranks_before(T a, int64_t ia, T b, int64_t ib) {
  return a > b || (a == b && ia < ib);
}

// How many entries of the row x[0, n) come before x[i] in that order.
template <class T>
LOPPER_HOST_DEVICE int64_t rank_in_row(const T* x, int64_t n, int64_t i) {
  int64_t r = 0;
  for (int64_t j = 0; j < n; ++j) r += ranks_before(x[j], j, x[i], i) ? 1 : 0;
  return r;
}

enum class ReduceOp : uint8_t { sum, mean, max, min };

}  // namespace lopper::kernels
