// One f32 GEMM through oneDNN's sgemm, matrix `bi` of a GemmArgs batch: shared by the CPU
// backend's gemm and the fused kernels that call GEMMs on their own tiles (core/cpu).
#pragma once
#include <dnnl.h>

#include "core/error.h"
#include "core/kernels/gemm.h"

namespace lopper::cpu {

inline void sgemm(const kernels::GemmArgs& g, const float* a, const float* b, float* c, int64_t bi = 0) {
  dnnl_status_t st = dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.m, g.n, g.k,
                                static_cast<float>(g.alpha), a + g.offset_a(bi), g.lda, b + g.offset_b(bi), g.ldb,
                                static_cast<float>(g.beta), c + g.offset_c(bi), g.ldc);
  if (st != dnnl_success) LOPPER_FAIL("[gemm] dnnl_sgemm failed with status ", static_cast<int>(st));
}

}  // namespace lopper::cpu
