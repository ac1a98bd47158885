// The AVX2 register tile of Lopper's own GEMMs on the CPU: C (R rows, 8·V columns) = or +=
// A (R, k) B (k, 8·V), row-major with leading dimensions, the R x V accumulators kept in
// registers. Shared by the fused attention's per-head products (core/cpu/fused_attention.cpp)
// and the panel-packed Linear (core/cpu/panel_linear.cpp). Each element is one FMA chain in
// k order, so a result does not depend on the thread count or on how k is split into
// blocks (a block continues the chain from C). Compiled only for AVX2 and FMA builds
// (LOPPER_GEMM_TILE); callers keep a dnnl_sgemm path for the others.
#pragma once
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LOPPER_GEMM_TILE 1

namespace lopper::cpu {

// Load: C holds the sum over earlier k (continue it) rather than nothing. (GCC keeps the
// accumulators in registers only when told to unroll.)
template <int R, int V, bool Load = false>
inline void gemm_tile(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t k) {
  __m256 acc[R][V];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = Load ? _mm256_loadu_ps(c + r * ldc + 8 * v) : _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    __m256 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(b + p * ldb + 8 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      __m256 av = _mm256_broadcast_ss(a + r * lda + p);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
}

// m rows of C (m, 8·V): 6-row tiles, then one tile for the rest.
template <int V, bool Load = false>
inline void gemm_rows(int64_t m, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t k) {
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) gemm_tile<6, V, Load>(a + i * lda, lda, b, ldb, c + i * ldc, ldc, k);
  a += i * lda;
  c += i * ldc;
  switch (m - i) {
    case 5: gemm_tile<5, V, Load>(a, lda, b, ldb, c, ldc, k); break;
    case 4: gemm_tile<4, V, Load>(a, lda, b, ldb, c, ldc, k); break;
    case 3: gemm_tile<3, V, Load>(a, lda, b, ldb, c, ldc, k); break;
    case 2: gemm_tile<2, V, Load>(a, lda, b, ldb, c, ldc, k); break;
    case 1: gemm_tile<1, V, Load>(a, lda, b, ldb, c, ldc, k); break;
    default: break;
  }
}

}  // namespace lopper::cpu
#endif
