#include "core/fused_attention.h"

#include <omp.h>

#include <limits>
#include <vector>

#include "core/cpu/gemm_tile.h"
#include "core/cpu/sgemm.h"
#include "core/profile.h"
#include "core/kernels/rows.h"

namespace lopper {

namespace {

#ifdef LOPPER_GEMM_TILE
// C (m, n) = A (m, k) B (k, n), row-major with leading dimensions, n a multiple of 8: the
// per-head products at short sequences, where a dnnl_sgemm call's fixed cost is most of a
// 25 x 25 x 32 product (docs/benchmarks.md).
void small_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                int64_t ldc) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) cpu::gemm_rows<2>(m, a, lda, b + j, ldb, c + j, ldc, k);
  if (j < n) cpu::gemm_rows<1>(m, a, lda, b + j, ldb, c + j, ldc, k);
}

// kt (D, tp) = k (T, D)ᵀ with row stride ks, by 8 x 8 blocks in registers; columns T..tp of
// kt become zeros. D and tp multiples of 8.
void transpose_k(const float* k, int64_t ks, int64_t T, int64_t D, float* kt, int64_t tp) {
  for (int64_t j0 = 0; j0 < tp; j0 += 8)
    for (int64_t d0 = 0; d0 < D; d0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i)
        r[i] = j0 + i < T ? _mm256_loadu_ps(k + (j0 + i) * ks + d0) : _mm256_setzero_ps();
      __m256 t[8], u[8];
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(kt + (d0 + i) * tp + j0, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
        _mm256_storeu_ps(kt + (d0 + i + 4) * tp + j0, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
      }
    }
}
#else
// Never called: fused_attention_own_kernels is false in builds without the tile.
void small_gemm(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t) {
  LOPPER_FAIL("[fused_attention] built without the AVX2 tile");
}
void transpose_k(const float*, int64_t, int64_t, int64_t, float*, int64_t) {
  LOPPER_FAIL("[fused_attention] built without the AVX2 tile");
}
#endif

void check_operand(const Tensor& t, const Tensor& q, const char* what) {
  LOPPER_CHECK(t.defined() && t.dim() == 4 && t.shape() == q.shape(), "[fused_attention] ", what, " ",
               shape_str(t.shape()), " must be (B, H, T, D) like q ", shape_str(q.shape()));
  LOPPER_CHECK(t.dtype() == DType::f32 && t.device().is_cpu(), "[fused_attention] ", what, " must be f32 on the CPU, got ",
               dtype_name(t.dtype()), " on ", t.device().str());
  LOPPER_CHECK(t.stride(3) == 1 || t.size(3) == 1, "[fused_attention] ", what, " needs unit stride along D");
}
}  // namespace

bool fused_attention_own_kernels(int64_t t, int64_t d) {
#ifdef LOPPER_GEMM_TILE
  // Up to 64 tokens the hand-written products beat dnnl_sgemm (a 64 x 64 x 32 pair about
  // equal, 128 x 128 slower: docs/benchmarks.md).
  return t <= 64 && d % 8 == 0;
#else
  (void)t, (void)d;
  return false;
#endif
}

Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive_mask, double scale) {
  LOPPER_CHECK(q.defined() && q.dim() == 4, "[fused_attention] q must be (B, H, T, D), got ", shape_str(q.shape()));
  check_operand(q, q, "q");
  check_operand(k, q, "k");
  check_operand(v, q, "v");
  ProfileScope profile("fused_attention", q.device());
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  Tensor out = Tensor::empty({B, T, H, D});
  Tensor o = out.permute({0, 2, 1, 3});  // (B, H, T, D)
  if (out.numel() == 0) return o;
  Tensor mask;
  if (additive_mask.defined()) {
    LOPPER_CHECK(additive_mask.dtype() == DType::f32 && additive_mask.device().is_cpu(),
                 "[fused_attention] additive_mask must be f32 on the CPU, got ", dtype_name(additive_mask.dtype()));
    mask = additive_mask.expand({B, H, T, T});
    if (mask.stride(3) != 1) mask = mask.contiguous();
  }
  const float s = static_cast<float>(scale);
  const float *qp = q.data<float>(), *kp = k.data<float>(), *vp = v.data<float>();
  const float* mp = mask.defined() ? mask.data<float>() : nullptr;
  float* op = o.data<float>();
  // Short sequences: the hand-written products, K transposed per pair into (D, Tp) with
  // Tp = T rounded up to 8 (zero columns past T), the scores' row stride; else dnnl_sgemm.
  const bool small = fused_attention_own_kernels(T, D);
  const int64_t tp = small ? (T + 7) / 8 * 8 : T;
  // Scores of one (b, h): T x T = Q Kᵀ; output rows: P V into o's (T, D) with o's row stride.
  const int64_t mstride[3] = {mp ? mask.stride(0) : 0, mp ? mask.stride(1) : 0, mp ? mask.stride(2) : 0};
  const int64_t qs = q.stride(2), ks = k.stride(2), vs = v.stride(2), os = o.stride(2);  // row strides
  kernels::GemmArgs scores{false, true, T, T, D, qs, ks, T};
  kernels::GemmArgs times_v{false, false, T, D, T, T, vs, os};
#pragma omp parallel if (B * H > 1)
  {
    std::vector<float> p(static_cast<size_t>(T * tp));
    std::vector<float> kt(small ? static_cast<size_t>(D * tp) : 0, 0.0f);  // (D, Tp)
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const float* qbh = qp + b * q.stride(0) + h * q.stride(1);
        const float* kbh = kp + b * k.stride(0) + h * k.stride(1);
        const float* vbh = vp + b * v.stride(0) + h * v.stride(1);
        float* obh = op + b * o.stride(0) + h * o.stride(1);
        if (small) {
          transpose_k(kbh, ks, T, D, kt.data(), tp);
          small_gemm(T, tp, D, qbh, qs, kt.data(), tp, p.data(), tp);
        } else {
          cpu::sgemm(scores, qbh, kbh, p.data());
        }
        for (int64_t i = 0; i < T; ++i) {
          float* row = p.data() + i * tp;
          if (mp) {
            const float* m = mp + b * mstride[0] + h * mstride[1] + i * mstride[2];
#pragma omp simd
            for (int64_t j = 0; j < T; ++j) row[j] = row[j] * s + m[j];
          } else {
#pragma omp simd
            for (int64_t j = 0; j < T; ++j) row[j] = row[j] * s;
          }
          // Padding columns as -inf (exp gives exactly 0): whole vectors, no scalar tail.
          for (int64_t j = T; j < tp; ++j) row[j] = -std::numeric_limits<float>::infinity();
          kernels::softmax_row(row, row, tp, false);
        }
        if (small) small_gemm(T, D, T, p.data(), tp, vbh, vs, obh, os);
        else cpu::sgemm(times_v, p.data(), vbh, obh);
      }
  }
  return o;
}

}  // namespace lopper
