#include "core/fused_attention.h"

#include <omp.h>

#include <vector>

#include "core/cpu/sgemm.h"
#include "core/profile.h"
#include "core/kernels/rows.h"

namespace lopper {

namespace {
void check_operand(const Tensor& t, const Tensor& q, const char* what) {
  LOPPER_CHECK(t.defined() && t.dim() == 4 && t.shape() == q.shape(), "[fused_attention] ", what, " ",
               shape_str(t.shape()), " must be (B, H, T, D) like q ", shape_str(q.shape()));
  LOPPER_CHECK(t.dtype() == DType::f32 && t.device().is_cpu(), "[fused_attention] ", what, " must be f32 on the CPU, got ",
               dtype_name(t.dtype()), " on ", t.device().str());
  LOPPER_CHECK(t.stride(3) == 1 || t.size(3) == 1, "[fused_attention] ", what, " needs unit stride along D");
}
}  // namespace

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
  // Scores of one (b, h): T x T = Q Kᵀ; output rows: P V into o's (T, D) with o's row stride.
  kernels::GemmArgs scores{false, true, T, T, D, q.stride(2), k.stride(2), T};
  kernels::GemmArgs times_v{false, false, T, D, T, T, v.stride(2), o.stride(2)};
#pragma omp parallel if (B * H > 1)
  {
    std::vector<float> p(static_cast<size_t>(T * T));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        cpu::sgemm(scores, qp + b * q.stride(0) + h * q.stride(1), kp + b * k.stride(0) + h * k.stride(1), p.data());
        for (int64_t i = 0; i < T; ++i) {
          float* row = p.data() + i * T;
          if (mp) {
            const float* m = mp + b * mask.stride(0) + h * mask.stride(1) + i * mask.stride(2);
#pragma omp simd
            for (int64_t j = 0; j < T; ++j) row[j] = row[j] * s + m[j];
          } else {
#pragma omp simd
            for (int64_t j = 0; j < T; ++j) row[j] = row[j] * s;
          }
          kernels::softmax_row(row, row, T, false);
        }
        cpu::sgemm(times_v, p.data(), vp + b * v.stride(0) + h * v.stride(1), op + b * o.stride(0) + h * o.stride(1));
      }
  }
  return o;
}

}  // namespace lopper
