// The panel-packed Linear on the CPU (core/panel_linear.h): packing, and the GEMM over
// (row block, panel) pairs with the bias and activation per tile.
#include "core/panel_linear.h"

#include <algorithm>
#include <cstring>

#include "core/cpu/gemm_tile.h"
#include "core/cpu/tile_epilogue.h"
#include "core/error.h"
#include "core/profile.h"

namespace lopper {
namespace {

constexpr int64_t kW = PanelMatrix::kWidth;
// Rows per block, at most: a block's rows of x (96 x 256 floats, 96 KB) stay in L2 while
// one panel's slice (256 x 16, 16 KB) is read from L1 by each of its 6-row tiles; the
// (row block, panel) pairs are split between the threads. 96 was level with 24 and 48 at 800
// rows and faster at 64 (one block: every panel a work item) on a 2-core Zen 3
// (bench_block_sparse BM_DenseWays, docs/benchmarks.md).
constexpr int64_t kRowBlock = 96;
// Inputs per pass: all of them up to 512 (MiniLM's 384), else even chunks of about 256
// (its 1536 in 6): the panel slice stays in L1.
constexpr int64_t kKBlock = 256;

void check_cpu_f32(const Tensor& t, const char* what) {
  LOPPER_CHECK(t.dtype() == DType::f32 && t.device().is_cpu(), "[panel_linear] ", what, " must be f32 on the CPU, got ",
               dtype_name(t.dtype()), " on ", t.device().str());
}

}  // namespace

bool panel_linear_built() {
#ifdef LOPPER_GEMM_TILE
  return true;
#else
  return false;
#endif
}

bool panel_linear_preferred() {
#ifdef LOPPER_GEMM_TILE
  static const bool no_avx512 = !__builtin_cpu_supports("avx512f");
  return no_avx512;
#else
  return false;
#endif
}

PanelMatrix to_panels(const Tensor& w) {
  LOPPER_CHECK(w.dim() == 2, "[to_panels] weight ", shape_str(w.shape()), " is not a matrix");
  check_cpu_f32(w, "weight");
  Tensor c = w.contiguous();
  PanelMatrix p;
  p.rows = w.size(0);
  p.cols = w.size(1);
  const int64_t panels = (p.rows + kW - 1) / kW;
  p.values.assign(static_cast<size_t>(panels * p.cols * kW), 0.0f);
  const float* wp = c.data<float>();
  for (int64_t n = 0; n < p.rows; ++n)
    for (int64_t k = 0; k < p.cols; ++k) p.values[static_cast<size_t>(((n / kW) * p.cols + k) * kW + n % kW)] = wp[n * p.cols + k];
  return p;
}

Tensor panel_linear(const Tensor& x, const PanelMatrix& w, const Tensor& bias, std::optional<kernels::UnaryOp> act) {
  check_cpu_f32(x, "input");
  LOPPER_CHECK(x.dim() >= 1 && x.size(-1) == w.cols, "[panel_linear] input ", shape_str(x.shape()), " vs weight (",
               w.rows, ", ", w.cols, ")");
  LOPPER_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.rows), "[panel_linear] bias ",
               shape_str(bias.shape()), " for ", w.rows, " outputs");
  if (bias.defined()) check_cpu_f32(bias, "bias");
  LOPPER_CHECK(!act || kernels::kUnaryOps[static_cast<int>(*act)].scalars == 0, "[panel_linear] activation ",
               kernels::kUnaryOps[static_cast<int>(act.value_or(kernels::UnaryOp::neg))].name, " takes scalars");
  LOPPER_CHECK(panel_linear_built(), "[panel_linear] this build has no AVX2 tile (not an x86-64-v3 build)");
  ProfileScope profile("panel_linear", x.device());
  const int64_t K = w.cols, N = w.rows;
  int64_t M = 1;  // rows: every dim but the last (not numel / K, which K = 0 breaks)
  for (int64_t d = 0; d + 1 < x.dim(); ++d) M *= x.size(d);
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape);
  if (M == 0 || N == 0) return y;
#ifdef LOPPER_GEMM_TILE
  Tensor xc = x.contiguous();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  const float* xp = xc.data<float>();
  const float* bp = bc.defined() ? bc.data<float>() : nullptr;
  float* yp = y.data<float>();
  // Row blocks of about equal size, multiples of 6 rows (the tile's).
  const int64_t panels = (N + kW - 1) / kW, even = (M + kRowBlock - 1) / kRowBlock;
  const int64_t rows = std::min(kRowBlock, ((M + even - 1) / even + 5) / 6 * 6), blocks = (M + rows - 1) / rows;
  const int64_t chunks = K <= 2 * kKBlock ? 1 : (K + kKBlock - 1) / kKBlock;
  const int64_t kc = std::max<int64_t>((K + chunks - 1) / chunks, 1);
#pragma omp parallel for collapse(2) schedule(static) if (blocks * panels > 1)
  for (int64_t mb = 0; mb < blocks; ++mb)
    for (int64_t pn = 0; pn < panels; ++pn) {
      const int64_t m0 = mb * rows, mt = std::min(rows, M - m0), n0 = pn * kW, width = std::min(kW, N - n0);
      // A partial last panel goes through a (rows, 16) buffer, then its valid columns to y.
      float part[kRowBlock * kW];
      float* c = width == kW ? yp + m0 * N + n0 : part;
      const int64_t ldc = width == kW ? N : kW;
      const float* a = xp + m0 * K;
      const float* b = w.values.data() + pn * K * kW;
      for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += kc) {
        const int64_t kk = std::min(kc, K - k0);
        if (k0 == 0) cpu::gemm_rows<2>(mt, a, K, b, kW, c, ldc, kk);
        else cpu::gemm_rows<2, true>(mt, a + k0, K, b + k0 * kW, kW, c, ldc, kk);
      }
      float* tile = yp + m0 * N + n0;
      if (width != kW)
        for (int64_t m = 0; m < mt; ++m) std::memcpy(tile + m * N, part + m * kW, sizeof(float) * width);
      cpu::finish_tile(tile, N, mt, width, true, bp ? bp + n0 : nullptr);
      if (act) cpu::activate_tile(*act, tile, N, mt, width);
    }
#endif
  return y;
}

}  // namespace lopper
