// The N:M-sparse matmul's loops over the kept values and their decoded columns. One row of
// x: the kept values gather the inputs they meet (vector gathers). More rows: x
// is transposed so that each kept value scales a contiguous chunk of a row of xᵀ, 16 batch
// columns at a time in registers.
#include "core/nm_sparse.h"

#include <algorithm>

#include "core/cpu/parallel.h"
#include "core/error.h"
#include "core/ops.h"

namespace lopper {

NmSparseMatrix to_nm_sparse(const Tensor& w, int64_t n, int64_t m) {
  LOPPER_CHECK(w.dim() == 2 && w.dtype() == DType::f32 && w.device().is_cpu(), "[nm_sparse] weight ",
               shape_str(w.shape()), " must be an f32 matrix on the CPU");
  LOPPER_CHECK(m >= 1 && m <= 256 && n >= 1 && n <= m && w.size(1) % m == 0 && w.size(1) <= 65536, "[nm_sparse] ",
               n, ":", m, " does not fit a weight of ", w.size(1), " columns");
  NmSparseMatrix s{w.size(0), w.size(1), n, m, {}, {}, {}};
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
  s.column.resize(s.index.size());
  for (size_t k = 0; k < s.index.size(); ++k)
    s.column[k] = static_cast<uint16_t>((static_cast<int64_t>(k) % K) / n * m + s.index[k]);
  return s;
}

Tensor nm_dense(const NmSparseMatrix& w) {
  const int64_t K = w.cols / w.m * w.n;
  std::vector<float> d(static_cast<size_t>(w.rows * w.cols), 0.0f);
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t k = 0; k < K; ++k) d[r * w.cols + (k / w.n) * w.m + w.index[r * K + k]] += w.values[r * K + k];
  return Tensor::from_vector(d, {w.rows, w.cols});
}

namespace {

constexpr int64_t kChunk = 16;  // batch columns of xᵀ per accumulator block (in registers)

// Sum of v[k] x[col[k]], vectorized with gathers.
float gather_dot(const float* v, const uint16_t* col, int64_t K, const float* x) {
  float acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < K; ++k) acc += v[k] * x[col[k]];
  return acc;
}

// acc (kChunk) = bias + sum of v[k] xt[col[k] * Bp + i], i < kChunk.
void chunk_axpy(const float* v, const uint16_t* col, int64_t K, const float* xt, int64_t Bp, float bias, float* out) {
  float acc[kChunk];
  for (int64_t i = 0; i < kChunk; ++i) acc[i] = bias;
  for (int64_t k = 0; k < K; ++k) {
    const float vk = v[k];
    const float* xr = xt + static_cast<int64_t>(col[k]) * Bp;
#pragma omp simd
    for (int64_t i = 0; i < kChunk; ++i) acc[i] += vk * xr[i];
  }
  for (int64_t i = 0; i < kChunk; ++i) out[i] = acc[i];
}

}  // namespace

Tensor nm_sparse_linear(const Tensor& x, const NmSparseMatrix& w, const Tensor& bias) {
  LOPPER_CHECK(x.dim() >= 1 && x.size(x.dim() - 1) == w.cols && x.dtype() == DType::f32 && x.device().is_cpu(),
               "[nm_sparse_linear] input ", shape_str(x.shape()), " vs weight (", w.rows, ", ", w.cols, ")");
  LOPPER_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.rows), "[nm_sparse_linear] bias ",
               shape_str(bias.shape()), " vs ", w.rows, " outputs");
  const int64_t B = x.numel() / w.cols, n = w.n, m = w.m;
  Shape out_shape = x.shape();
  out_shape.back() = w.rows;
  Tensor y = Tensor::zeros(out_shape);
  Tensor xc = x.contiguous();
  const float* xp = xc.data<float>();
  float* yp = y.data<float>();
  std::vector<float> b = bias.defined() ? bias.contiguous().to_vector<float>() : std::vector<float>(w.rows, 0.0f);
  const int64_t C = w.cols, K = C / m * n;
  if (B == 1) {  // a matrix-vector product: weight bytes bound it
    cpu::parallel_for(w.rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) yp[r] = gather_dot(&w.values[r * K], &w.column[r * K], K, xp) + b[r];
    });
    return y;
  }
  // xᵀ (C, Bp), the batch padded to whole chunks: each kept value scales one contiguous
  // chunk of a row of it.
  const int64_t Bp = (B + kChunk - 1) / kChunk * kChunk;
  std::vector<float> xt(static_cast<size_t>(C * Bp), 0.0f), yt(static_cast<size_t>(w.rows * Bp));
  cpu::parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t bi = 0; bi < B; ++bi) xt[c * Bp + bi] = xp[bi * C + c];
  });
  cpu::parallel_for(w.rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t b0 = 0; b0 < Bp; b0 += kChunk)
        chunk_axpy(&w.values[r * K], &w.column[r * K], K, xt.data() + b0, Bp, b[r], &yt[r * Bp + b0]);
  });
  cpu::parallel_for(B, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; ++bi)
      for (int64_t r = 0; r < w.rows; ++r) yp[bi * w.rows + r] = yt[r * Bp + bi];
  });
  return y;
}

}  // namespace lopper
