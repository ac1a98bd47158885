// The shape of one GEMM call: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b], row-major,
// strided over a batch. The backends map it to oneDNN / cuBLAS; the math is theirs.
#pragma once
#include <cstdint>

namespace lopper::kernels {

struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // in elements; 0 repeats one matrix
  int64_t batch = 1;
  // A second, outer batch level (attention's (B, H) over a (B, T, H, D) layout is not one
  // uniform stride): matrix (o, i) starts at o * outer_stride + i * stride.
  int64_t outer = 1;
  int64_t outer_stride_a = 0, outer_stride_b = 0, outer_stride_c = 0;

  int64_t offset_a(int64_t t) const { return (t / batch) * outer_stride_a + (t % batch) * stride_a; }
  int64_t offset_b(int64_t t) const { return (t / batch) * outer_stride_b + (t % batch) * stride_b; }
  int64_t offset_c(int64_t t) const { return (t / batch) * outer_stride_c + (t % batch) * stride_c; }
  double alpha = 1.0, beta = 0.0;
};

}  // namespace lopper::kernels
