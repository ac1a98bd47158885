// The N:M-sparse matmul's loops. Small batches walk each output row's kept values once and
// gather the inputs they meet; from 8 rows of x on, x is transposed so that each kept value
// scales one contiguous row of xᵀ (vectorized over the batch).
#include "core/nm_sparse.h"

#include <algorithm>

#include "core/cpu/parallel.h"
#include "core/error.h"
#include "core/ops.h"

namespace lopper {

NmSparseMatrix to_nm_sparse(const Tensor& w, int64_t n, int64_t m) {
  LOPPER_CHECK(w.dim() == 2 && w.dtype() == DType::f32 && w.device().is_cpu(), "[nm_sparse] weight ",
               shape_str(w.shape()), " must be an f32 matrix on the CPU");
  LOPPER_CHECK(m >= 1 && m <= 256 && n >= 1 && n <= m && w.size(1) % m == 0, "[nm_sparse] ", n, ":", m,
               " does not fit a weight of ", w.size(1), " columns");
  NmSparseMatrix s{w.size(0), w.size(1), n, m, {}, {}};
  const int64_t groups = s.cols / m, K = groups * n;
  s.values.assign(static_cast<size_t>(s.rows * K), 0.0f);
  s.index.assign(static_cast<size_t>(s.rows * K), 0);
  std::vector<float> a = w.contiguous().to_vector<float>();
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const float* src = &a[r * s.cols + g * m];
      float* v = &s.values[r * K + g * n];
      uint8_t* ix = &s.index[r * K + g * n];
      int64_t k = 0;
      for (int64_t j = 0; j < m; ++j) {
        if (src[j] == 0.0f) continue;
        LOPPER_CHECK(k < n, "[nm_sparse] row ", r, ", columns ", g * m, "..", g * m + m - 1, " hold more than ", n,
                     " non-zeros: not ", n, ":", m);
        v[k] = src[j];
        ix[k++] = static_cast<uint8_t>(j);
      }
      for (int64_t j = 0; k < n; ++j) {  // pad with zeros at unused positions
        bool used = false;
        for (int64_t q = 0; q < k; ++q) used = used || ix[q] == j;
        if (!used) ix[k++] = static_cast<uint8_t>(j);
      }
    }
  return s;
}

Tensor nm_dense(const NmSparseMatrix& w) {
  const int64_t K = w.cols / w.m * w.n;
  std::vector<float> d(static_cast<size_t>(w.rows * w.cols), 0.0f);
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t k = 0; k < K; ++k) d[r * w.cols + (k / w.n) * w.m + w.index[r * K + k]] += w.values[r * K + k];
  return Tensor::from_vector(d, {w.rows, w.cols});
}

Tensor nm_sparse_linear(const Tensor& x, const NmSparseMatrix& w, const Tensor& bias) {
  LOPPER_CHECK(x.dim() >= 1 && x.size(x.dim() - 1) == w.cols && x.dtype() == DType::f32 && x.device().is_cpu(),
               "[nm_sparse_linear] input ", shape_str(x.shape()), " vs weight (", w.rows, ", ", w.cols, ")");
  LOPPER_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.rows), "[nm_sparse_linear] bias ",
               shape_str(bias.shape()), " vs ", w.rows, " outputs");
  const int64_t B = x.numel() / w.cols, C = w.cols, n = w.n, m = w.m, K = C / m * n;
  Shape out_shape = x.shape();
  out_shape.back() = w.rows;
  Tensor y = Tensor::zeros(out_shape);
  Tensor xc = x.contiguous();
  const float* xp = xc.data<float>();
  float* yp = y.data<float>();
  std::vector<float> b = bias.defined() ? bias.contiguous().to_vector<float>() : std::vector<float>(w.rows, 0.0f);
  if (B < 8) {  // (B, C): gather the inputs each kept value meets
    cpu::parallel_for(w.rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* v = &w.values[r * K];
        const uint8_t* ix = &w.index[r * K];
        for (int64_t bi = 0; bi < B; ++bi) {
          const float* xr = xp + bi * C;
          float acc = 0;
          for (int64_t g = 0, k = 0; g < C; g += m)
            for (int64_t j = 0; j < n; ++j, ++k) acc += v[k] * xr[g + ix[k]];
          yp[bi * w.rows + r] = acc + b[r];
        }
      }
    });
    return y;
  }
  // xᵀ (C, B): each kept value scales a contiguous row of it.
  std::vector<float> xt(static_cast<size_t>(C * B));
  cpu::parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t bi = 0; bi < B; ++bi) xt[c * B + bi] = xp[bi * C + c];
  });
  cpu::parallel_for(w.rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> acc(static_cast<size_t>(B));
    for (int64_t r = r0; r < r1; ++r) {
      std::fill(acc.begin(), acc.end(), b[r]);
      const float* v = &w.values[r * K];
      const uint8_t* ix = &w.index[r * K];
      float* a = acc.data();
      for (int64_t g = 0, k = 0; g < C; g += m)
        for (int64_t j = 0; j < n; ++j, ++k) {
          const float vk = v[k];
          const float* xr = &xt[(g + ix[k]) * B];
#pragma omp simd
          for (int64_t bi = 0; bi < B; ++bi) a[bi] += vk * xr[bi];
        }
      for (int64_t bi = 0; bi < B; ++bi) yp[bi * w.rows + r] = acc[bi];
    }
  });
  return y;
}

}  // namespace lopper
