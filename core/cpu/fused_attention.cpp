#include "core/fused_attention.h"

#include <omp.h>

#include <limits>
#include <vector>

#include "core/cpu/dropout.h"
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

// (example b, head h)'s (T, D) matrix of a (B, H, T, D) tensor.
const float* at(const Tensor& t, int64_t b, int64_t h) { return t.data<float>() + b * t.stride(0) + h * t.stride(1); }
float* at(Tensor& t, int64_t b, int64_t h) { return t.data<float>() + b * t.stride(0) + h * t.stride(1); }

// What every pass reads: q, k, v (B, H, T, D) and the mask expanded to (B, H, T, T) with
// unit stride along keys, as pointers and strides.
struct Operands {
  int64_t B = 0, H = 0, T = 0, D = 0;
  Tensor q, k, v, mask;
  const float* mp = nullptr;
  int64_t qs = 0, ks = 0, vs = 0;  // row strides
  int64_t mstride[3] = {0, 0, 0};

  Operands(const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& additive_mask)
      : q(q_), k(k_), v(v_) {
    LOPPER_CHECK(q.defined() && q.dim() == 4, "[fused_attention] q must be (B, H, T, D), got ",
                 q.defined() ? shape_str(q.shape()) : std::string("undefined"));
    check_operand(q, q, "q");
    check_operand(k, q, "k");
    check_operand(v, q, "v");
    B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
    if (additive_mask.defined()) {
      LOPPER_CHECK(additive_mask.dtype() == DType::f32 && additive_mask.device().is_cpu(),
                   "[fused_attention] additive_mask must be f32 on the CPU, got ", dtype_name(additive_mask.dtype()));
      mask = additive_mask.expand({B, H, T, T});
      if (mask.stride(3) != 1) mask = mask.contiguous();
      mp = mask.data<float>();
      for (int i = 0; i < 3; ++i) mstride[i] = mask.stride(i);
    }
    qs = q.stride(2), ks = k.stride(2), vs = v.stride(2);
  }
  const float* mask_row(int64_t b, int64_t h, int64_t i) const {
    return mp ? mp + b * mstride[0] + h * mstride[1] + i * mstride[2] : nullptr;
  }
};

// A (B, H, T, D) view of a new contiguous (B, T, H, D) tensor: merge_heads and split_heads'
// backward read it without a copy.
Tensor per_head_result(int64_t B, int64_t H, int64_t T, int64_t D) {
  return Tensor::empty({B, T, H, D}).permute({0, 2, 1, 3});
}

// Row i of one (example, head)'s scores -> probabilities in place: x * scale, + mask (m may
// be null), softmax over tp >= T columns, those past T set to -inf (exp gives exactly 0:
// whole vectors, no scalar tail). The unfused ops' arithmetic (the scale op, the add,
// softmax_row), so bitwise theirs: the product is stored before the mask is added, in a
// loop of its own, or the compiler contracts x * scale + m into one FMA (one rounding, not
// two; equal only where m is 0 or huge, as padding masks are).
void probs_row(float* row, int64_t T, int64_t tp, float s, const float* m) {
#pragma omp simd
  for (int64_t j = 0; j < T; ++j) row[j] = row[j] * s;
  if (m) {
#pragma omp simd
    for (int64_t j = 0; j < T; ++j) row[j] = row[j] + m[j];
  }
  for (int64_t j = T; j < tp; ++j) row[j] = -std::numeric_limits<float>::infinity();
  kernels::softmax_row(row, row, tp, false);
}

// One (example, head)'s probabilities (T, T) into p through dnnl_sgemm: the unfused
// matmul's call for Q Kᵀ, then probs_row.
void probs_by_sgemm(const Operands& o, int64_t b, int64_t h, float s, float* p) {
  const kernels::GemmArgs scores{false, true, o.T, o.T, o.D, o.qs, o.ks, o.T};
  cpu::sgemm(scores, at(o.q, b, h), at(o.k, b, h), p);
  for (int64_t i = 0; i < o.T; ++i) probs_row(p + i * o.T, o.T, o.T, s, o.mask_row(b, h, i));
}

// 1 / (1 - p) in f32, as lopper::dropout's kernel computes it.
float keep_scale(const AttentionDropout& drop) { return 1.0f / (1.0f - static_cast<float>(drop.p)); }

// y = dropout(x) over n elements whose first counter is drop.offset + first: lopper::dropout's
// arithmetic (core/kernels/random.h).
void dropout_run(const float* x, float* y, int64_t n, const AttentionDropout& drop, uint64_t first) {
  kernels::dropout_span(x, y, n, keep_scale(drop), drop.seed, drop.offset + first, static_cast<float>(drop.p));
}

void check_dropout(const AttentionDropout& drop) {
  LOPPER_CHECK(drop.p >= 0 && drop.p < 1, "[fused_attention] dropout p = ", drop.p, " outside [0, 1)");
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
  Operands o(q, k, v, additive_mask);
  ProfileScope profile("fused_attention", q.device());
  const int64_t B = o.B, H = o.H, T = o.T, D = o.D;
  Tensor out = per_head_result(B, H, T, D);
  if (out.numel() == 0) return out;
  const float s = static_cast<float>(scale);
  // Short sequences: the hand-written products, K transposed per pair into (D, Tp) with
  // Tp = T rounded up to 8 (zero columns past T), the scores' row stride; else dnnl_sgemm.
  const bool small = fused_attention_own_kernels(T, D);
  const int64_t tp = small ? (T + 7) / 8 * 8 : T;
  const int64_t os = out.stride(2);
  const kernels::GemmArgs times_v{false, false, T, D, T, T, o.vs, os};  // P V into out's rows
#pragma omp parallel if (B * H > 1)
  {
    std::vector<float> p(static_cast<size_t>(T * tp));
    std::vector<float> kt(small ? static_cast<size_t>(D * tp) : 0, 0.0f);  // (D, Tp)
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const float* vbh = at(o.v, b, h);
        float* obh = at(out, b, h);
        if (small) {
          transpose_k(at(o.k, b, h), o.ks, T, D, kt.data(), tp);
          small_gemm(T, tp, D, at(o.q, b, h), o.qs, kt.data(), tp, p.data(), tp);
          for (int64_t i = 0; i < T; ++i) probs_row(p.data() + i * tp, T, tp, s, o.mask_row(b, h, i));
          small_gemm(T, D, T, p.data(), tp, vbh, o.vs, obh, os);
        } else {
          probs_by_sgemm(o, b, h, s, p.data());
          cpu::sgemm(times_v, p.data(), vbh, obh);
        }
      }
  }
  return out;
}

Tensor fused_attention_train(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive_mask,
                             double scale, const AttentionDropout& drop) {
  Operands o(q, k, v, additive_mask);
  check_dropout(drop);
  ProfileScope profile("fused_attention.train", q.device());
  const int64_t B = o.B, H = o.H, T = o.T, D = o.D;
  Tensor out = per_head_result(B, H, T, D);
  if (out.numel() == 0) return out;
  const float s = static_cast<float>(scale);
  const kernels::GemmArgs times_v{false, false, T, D, T, T, o.vs, out.stride(2)};  // Pd V
#pragma omp parallel if (B * H > 1)
  {
    std::vector<float> p(static_cast<size_t>(T * T));  // (T, T): P, then dropout(P)
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        probs_by_sgemm(o, b, h, s, p.data());
        if (drop.p > 0) dropout_run(p.data(), p.data(), T * T, drop, static_cast<uint64_t>((b * H + h) * T * T));
        cpu::sgemm(times_v, p.data(), at(o.v, b, h), at(out, b, h));
      }
  }
  return out;
}

std::array<Tensor, 3> fused_attention_backward(const Tensor& gy_in, const Tensor& q, const Tensor& k, const Tensor& v,
                                               const Tensor& additive_mask, double scale, const AttentionDropout& drop,
                                               std::array<bool, 3> need) {
  Operands o(q, k, v, additive_mask);
  check_dropout(drop);
  LOPPER_CHECK(gy_in.defined() && gy_in.shape() == q.shape() && gy_in.dtype() == DType::f32 && gy_in.device().is_cpu(),
               "[fused_attention backward] gy ", gy_in.defined() ? shape_str(gy_in.shape()) : std::string("undefined"),
               " must be f32 on the CPU, shaped like q ", shape_str(q.shape()));
  ProfileScope profile("fused_attention.backward", q.device());
  const int64_t B = o.B, H = o.H, T = o.T, D = o.D;
  const Tensor gy = gy_in.stride(3) == 1 || D == 1 ? gy_in : gy_in.contiguous();
  std::array<Tensor, 3> g;
  for (int i = 0; i < 3; ++i)
    if (need[i]) g[i] = per_head_result(B, H, T, D);
  if (q.numel() == 0) return g;  // gradients as empty as q
  const bool want_scores = need[0] || need[1];
  const int64_t gs = gy.stride(2);
  // The unfused backward's calls (autograd matmul), transposes and all:
  const kernels::GemmArgs dv_args{true, false, T, D, T, T, gs, need[2] ? g[2].stride(2) : 0};   // dV = Pdᵀ dO
  const kernels::GemmArgs dpd_args{false, true, T, T, D, gs, o.vs, T};                           // dPd = dO Vᵀ
  const kernels::GemmArgs dq_args{false, false, T, D, T, T, o.ks, need[0] ? g[0].stride(2) : 0};  // dQ = dS K
  const kernels::GemmArgs dk_args{true, false, T, D, T, T, o.qs, need[1] ? g[1].stride(2) : 0};   // dK = dSᵀ Q
  const float s = static_cast<float>(scale);
  const bool dropping = drop.p > 0;
#pragma omp parallel if (B * H > 1)
  {
    // (T, T) each, in cache per (example, head): P recomputed, dropout(P), and the gradient
    // dPd -> dP -> dS in place.
    // The dropout mask is drawn once and applied to both.
    std::vector<float> p(static_cast<size_t>(T * T)), pd(dropping ? static_cast<size_t>(T * T) : 0),
        mask(dropping ? static_cast<size_t>(T * T) : 0), ds(want_scores ? static_cast<size_t>(T * T) : 0);
    const float ks = keep_scale(drop);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const uint64_t first = static_cast<uint64_t>((b * H + h) * T * T);
        const float* gbh = at(gy, b, h);
        probs_by_sgemm(o, b, h, s, p.data());
        if (dropping) {
          kernels::dropout_mask_span(mask.data(), T * T, ks, drop.seed, drop.offset + first,
                                     static_cast<float>(drop.p));
          kernels::dropout_apply(mask.data(), p.data(), pd.data(), T * T, ks);
        }
        if (need[2]) cpu::sgemm(dv_args, dropping ? pd.data() : p.data(), gbh, at(g[2], b, h));
        if (!want_scores) continue;
        cpu::sgemm(dpd_args, gbh, at(o.v, b, h), ds.data());
        if (dropping) kernels::dropout_apply(mask.data(), ds.data(), ds.data(), T * T, ks);  // dropout's backward
        for (int64_t i = 0; i < T; ++i)
          kernels::softmax_backward_row(p.data() + i * T, ds.data() + i * T, ds.data() + i * T, T, false);
#pragma omp simd
        for (int64_t e = 0; e < T * T; ++e) ds[e] = ds[e] * s;  // the scale op's backward
        if (need[0]) cpu::sgemm(dq_args, ds.data(), at(o.k, b, h), at(g[0], b, h));
        if (need[1]) cpu::sgemm(dk_args, ds.data(), at(o.q, b, h), at(g[1], b, h));
      }
  }
  return g;
}

}  // namespace lopper
