// Sparse P x V on the CPU: per row, choose the kept keys (top k by score through
// cpu::top_k_indices, as topk_mask does; or a scan against the threshold), then sum those
// rows of V. Parallel over (example, head) pairs.
#include "core/sparse_attention.h"

#include <immintrin.h>

#include <vector>

#include "core/cpu/parallel.h"
#include "core/cpu/select.h"

namespace lopper {

namespace {
// The positions j < n with p[j] >= tau, in order, into out; their count. Eight at a time
// (AVX2, the build's baseline): one compare and a bit scan per kept entry, no branch per key.
int64_t above_threshold(const float* p, int64_t n, float tau, int64_t* out) {
  int64_t m = 0, j = 0;
  const __m256 t = _mm256_set1_ps(tau);
  for (; j + 8 <= n; j += 8) {
    unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p + j), t, _CMP_GE_OQ)));
    while (bits) {
      out[m++] = j + __builtin_ctz(bits);
      bits &= bits - 1;
    }
  }
  for (; j < n; ++j)
    if (p[j] >= tau) out[m++] = j;
  return m;
}

// o (d) = f * sum over e < m of w[e] * V[kept[e]] (rows of d floats): 64 outputs at a time in
// eight AVX2 registers, so each kept entry costs its row's loads and FMAs and nothing else.
void accumulate(const float* V, int64_t d, const int64_t* kept, const float* w, int64_t m, float f, float* o) {
  int64_t c0 = 0;
  for (; c0 + 64 <= d; c0 += 64) {
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int64_t e = 0; e < m; ++e) {
      const __m256 we = _mm256_set1_ps(w[e] * f);
      const float* vj = V + kept[e] * d + c0;
      for (int r = 0; r < 8; ++r) acc[r] = _mm256_fmadd_ps(we, _mm256_loadu_ps(vj + 8 * r), acc[r]);
    }
    for (int r = 0; r < 8; ++r) _mm256_storeu_ps(o + c0 + 8 * r, acc[r]);
  }
  for (int64_t c = c0; c < d; ++c) {
    float a = 0;
    for (int64_t e = 0; e < m; ++e) a += w[e] * f * V[kept[e] * d + c];
    o[c] = a;
  }
}
}  // namespace

Tensor sparse_probs_times_v(const Tensor& probs, const Tensor& scores, const Tensor& v, const Tensor& valid,
                            const SparseAttentionRule& rule) {
  LOPPER_CHECK(probs.dim() == 4 && scores.shape() == probs.shape() && v.dim() == 4 && v.size(0) == probs.size(0) &&
                   v.size(1) == probs.size(1) && v.size(2) == probs.size(3),
               "[sparse_attention] probs ", shape_str(probs.shape()), ", scores ", shape_str(scores.shape()), ", v ",
               shape_str(v.shape()), ": expected (B, H, T, T) twice and (B, H, T, D)");
  LOPPER_CHECK(probs.dtype() == DType::f32 && scores.dtype() == DType::f32 && v.dtype() == DType::f32 &&
                   probs.device().is_cpu(),
               "[sparse_attention] f32 on the CPU only");
  LOPPER_CHECK((rule.k > 0) != (rule.keep > 0) || (rule.k == 0 && rule.keep == 0),
               "[sparse_attention] k and keep: at most one");
  const int64_t b = probs.size(0), h = probs.size(1), t = probs.size(2), d = v.size(3);
  std::vector<int64_t> len = valid.contiguous().to_vector<int64_t>();
  LOPPER_CHECK(static_cast<int64_t>(len.size()) == b, "[sparse_attention] valid has ", len.size(), " entries for ", b,
               " examples");
  Tensor pc = probs.contiguous(), sc = scores.contiguous(), vc = v.contiguous();
  Tensor out = Tensor::empty({b, h, t, d});  // accumulate() writes every output
  const float *pp = pc.data<float>(), *sp = sc.data<float>(), *vp = vc.data<float>();
  float* op = out.data<float>();
  const bool topk = rule.k > 0 || rule.keep > 0;
  cpu::parallel_for(b * h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(t));
    std::vector<int64_t> kept(static_cast<size_t>(t));  // the row's kept keys
    std::vector<float> weight(static_cast<size_t>(t));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t n = len[bh / h];
      const int64_t keep = kept_per_row(rule.k, rule.keep, n);
      const float* V = vp + bh * t * d;
      for (int64_t i = 0; i < t; ++i) {
        const float* p = pp + (bh * t + i) * t;
        const float* s = sp + (bh * t + i) * t;
        int64_t m = 0;  // kept so far
        if ((i == 0 && !rule.prune_first_row) || (topk && keep >= n)) {
          for (int64_t j = 0; j < n; ++j) kept[m++] = j;  // valid keys first: right padding
        } else if (topk) {
          m = cpu::top_k_indices(s, t, keep, row.data(), kept.data());
        } else {
          m = above_threshold(p, n, static_cast<float>(rule.relative ? rule.threshold / static_cast<double>(n) : rule.threshold),
                              kept.data());
          if (m == 0) {  // nothing clears it: the row's largest alone (its largest is kept anyway otherwise)
            int64_t best = 0;
            for (int64_t j = 1; j < n; ++j)
              if (s[j] > s[best]) best = j;
            kept[m++] = best;
          }
        }
        float sum = 0;
        for (int64_t e = 0; e < m; ++e) sum += weight[e] = p[kept[e]];
        const float f = rule.renormalize && sum > 0 ? 1.0f / sum : 1.0f;
        accumulate(V, d, kept.data(), weight.data(), m, f, op + (bh * t + i) * d);
      }
    }
  });
  return out;
}

}  // namespace lopper
