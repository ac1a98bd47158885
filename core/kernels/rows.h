// Row math shared by both backends: softmax, log-softmax, layer norm, top-k and the
// reduction accumulators. A row is contiguous; the CPU gives each thread whole rows, the
// CUDA backend gives each row to one thread (simple, correct, and the same arithmetic).
#pragma once
#include <cstdint>

#include "core/kernels/math.h"

namespace lopper::kernels {

// y = softmax(x) over n elements; with `log`, y = log_softmax(x).
template <class T>
LOPPER_HOST_DEVICE void softmax_row(const T* x, T* y, int64_t n, bool log_space) {
  T mx = x[0];
  LOPPER_SIMD_MAX(mx)
  for (int64_t i = 1; i < n; ++i) mx = mx > x[i] ? mx : x[i];
  T sum = T(0);
  if (log_space) {
    LOPPER_SIMD_SUM(sum)
    for (int64_t i = 0; i < n; ++i) sum += k_exp(x[i] - mx);
    T lse = mx + k_log(sum);
    LOPPER_SIMD
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] - lse;
  } else {
    LOPPER_SIMD_SUM(sum)
    for (int64_t i = 0; i < n; ++i) { y[i] = k_exp(x[i] - mx); sum += y[i]; }
    T inv = T(1) / sum;
    LOPPER_SIMD
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
  }
}

// softmax: gx = y * (gy - <gy, y>);  log_softmax: gx = gy - exp(y) * sum(gy).
template <class T>
LOPPER_HOST_DEVICE void softmax_backward_row(const T* y, const T* gy, T* gx, int64_t n, bool log_space) {
  T acc = T(0);
  if (log_space) {
    LOPPER_SIMD_SUM(acc)
    for (int64_t i = 0; i < n; ++i) acc += gy[i];
    LOPPER_SIMD
    for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] - k_exp(y[i]) * acc;
  } else {
    LOPPER_SIMD_SUM(acc)
    for (int64_t i = 0; i < n; ++i) acc += gy[i] * y[i];
    LOPPER_SIMD
    for (int64_t i = 0; i < n; ++i) gx[i] = y[i] * (gy[i] - acc);
  }
}

// y = (x - mean) * rstd * w + b over n elements; saves mean and rstd for the backward.
template <class T>
LOPPER_HOST_DEVICE void layer_norm_row(const T* x, const T* w, const T* b, T* y, int64_t n,
                                       T eps, T* mean_out, T* rstd_out) {
  T mean = T(0);
  LOPPER_SIMD_SUM(mean)
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= T(n);
  T var = T(0);
  LOPPER_SIMD_SUM(var)
  for (int64_t i = 0; i < n; ++i) { T d = x[i] - mean; var += d * d; }
  var /= T(n);
  T rstd = T(1) / k_sqrt(var + eps);
  LOPPER_SIMD
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
  *mean_out = mean;
  *rstd_out = rstd;
}

// gx for one row: rstd * (g - mean(g) - xhat * mean(g * xhat)), with g = gy * w.
template <class T>
LOPPER_HOST_DEVICE void layer_norm_backward_row(const T* x, const T* w, const T* gy, T mean,
                                                T rstd, T* gx, int64_t n) {
  T sum_g = T(0), sum_gx = T(0);
  LOPPER_SIMD_SUM2(sum_g, sum_gx)
  for (int64_t i = 0; i < n; ++i) {
    T g = gy[i] * w[i];
    T xhat = (x[i] - mean) * rstd;
    sum_g += g;
    sum_gx += g * xhat;
  }
  T mg = sum_g / T(n), mgx = sum_gx / T(n);
  LOPPER_SIMD
  for (int64_t i = 0; i < n; ++i) {
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

enum class ReduceOp : uint8_t { sum, mean, max, min };

}  // namespace lopper::kernels
