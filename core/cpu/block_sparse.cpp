// Block-sparse weights on the CPU (core/block_sparse.h): building the BSR form, and the
// matmul over it, one libxsmm batch-reduce GEMM per (block row, tile of tokens).
//
// libxsmm is column-major. Read column-major, y (M, N) row-major is yᵀ (N x M) with leading
// dimension N, and x (M, K) is xᵀ (K x M) with leading dimension K. The tile of yᵀ for
// output rows [r·br, r·br + br) and tokens [m0, m0 + nt) is then
//     yᵀ[r] += Σ over kept blocks (r, c) of  W_rc (br x bc)  ·  xᵀ[c] (bc x nt),
// with W_rc stored column-major (BlockSparseMatrix::values) and xᵀ[c] read in place from x.
// libxsmm generates that sum as one kernel (batch-reduce GEMM) that keeps the tile in
// registers across the blocks.
#include "core/block_sparse.h"

#include <libxsmm.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "core/cpu/tile_epilogue.h"
#include "core/error.h"
#include "core/profile.h"

namespace lopper {
namespace {

void check_weight(const Tensor& w, int64_t br, int64_t bc, const char* op) {
  LOPPER_CHECK(w.dim() == 2, "[", op, "] weight ", shape_str(w.shape()), " is not a matrix");
  LOPPER_CHECK(w.dtype() == DType::f32 && w.device().is_cpu(), "[", op, "] weight must be f32 on the CPU, got ",
               dtype_name(w.dtype()), " on ", w.device().str());
  LOPPER_CHECK(br > 0 && bc > 0 && w.size(0) % br == 0 && w.size(1) % bc == 0, "[", op, "] block (", br, ", ", bc,
               ") does not divide the weight ", shape_str(w.shape()));
}

// Calls f(block row, block column, pointer to the block's first element) for every block
// holding a non-zero, row by row; `ld` is the weight's row stride.
template <class F>
void for_nonzero_blocks(const float* w, int64_t rows, int64_t cols, int64_t br, int64_t bc, F&& f) {
  for (int64_t r = 0; r < rows / br; ++r)
    for (int64_t c = 0; c < cols / bc; ++c) {
      const float* b = w + r * br * cols + c * bc;
      bool any = false;
      for (int64_t i = 0; i < br && !any; ++i)
        for (int64_t j = 0; j < bc; ++j)
          if (b[i * cols + j] != 0.0f) {
            any = true;
            break;
          }
      if (any) f(r, c, b);
    }
}

// The same tile sum without JIT code (a CPU libxsmm does not generate for, or
// LIBXSMM_TARGET=generic, as tests/CMakeLists.txt runs it): plain loops.
void tile_reference(const BlockSparseMatrix& w, int64_t r, const float* x, int64_t m0, int64_t nt, float* y) {
  int64_t br = w.block_rows, bc = w.block_cols, K = w.cols, N = w.rows;
  for (int64_t b = w.row_start[r]; b < w.row_start[r + 1]; ++b) {
    const float* a = w.values.data() + b * br * bc;  // (bc, br)
    const float* xs = x + w.block_col[b] * bc;
    for (int64_t m = m0; m < m0 + nt; ++m)
      for (int64_t k = 0; k < bc; ++k) {
        float xv = xs[m * K + k];
        for (int64_t n = 0; n < br; ++n) y[m * N + r * br + n] += a[k * br + n] * xv;
      }
  }
}

// One JIT kernel per (br, bc, tile width, K, N), overwriting its tile (beta 0); libxsmm
// caches them, so this is a lookup.
libxsmm_smmfunction_reducebatch_addr kernel(const BlockSparseMatrix& w, int64_t nt) {
  static std::once_flag init;
  std::call_once(init, [] { libxsmm_init(); });
  libxsmm_blasint lda = w.block_rows, ldb = w.cols, ldc = w.rows;
  float alpha = 1.0f, beta = 0.0f;
  int flags = LIBXSMM_GEMM_FLAG_NONE;
  return libxsmm_smmdispatch_reducebatch_addr(w.block_rows, nt, w.block_cols, &lda, &ldb, &ldc, &alpha, &beta, &flags,
                                              nullptr);
}

// Tokens per kernel call (the yᵀ tile is block_rows x 32): the best of 16/32/64/128/256 at
// M = 4096 on a 2-core Emerald Rapids VM (bench_block_sparse; 16 and 32 within noise).
constexpr int64_t kTile = 32;

}  // namespace

double BlockSparseMatrix::density() const {
  int64_t total = (rows / block_rows) * (cols / block_cols);
  return total == 0 ? 0.0 : static_cast<double>(blocks()) / static_cast<double>(total);
}

double block_density(const Tensor& w, int64_t block_rows, int64_t block_cols) {
  check_weight(w, block_rows, block_cols, "block_density");
  Tensor c = w.contiguous();
  int64_t kept = 0;
  for_nonzero_blocks(c.data<float>(), w.size(0), w.size(1), block_rows, block_cols,
                     [&](int64_t, int64_t, const float*) { ++kept; });
  return static_cast<double>(kept) / static_cast<double>((w.size(0) / block_rows) * (w.size(1) / block_cols));
}

BlockSparseMatrix to_block_sparse(const Tensor& w, int64_t block_rows, int64_t block_cols) {
  check_weight(w, block_rows, block_cols, "to_block_sparse");
  Tensor c = w.contiguous();
  BlockSparseMatrix s;
  s.rows = w.size(0);
  s.cols = w.size(1);
  s.block_rows = block_rows;
  s.block_cols = block_cols;
  s.row_start.assign(s.rows / block_rows + 1, 0);
  for_nonzero_blocks(c.data<float>(), s.rows, s.cols, block_rows, block_cols, [&](int64_t r, int64_t col, const float* b) {
    ++s.row_start[r + 1];
    s.block_col.push_back(col);
    for (int64_t k = 0; k < block_cols; ++k)
      for (int64_t n = 0; n < block_rows; ++n) s.values.push_back(b[n * s.cols + k]);
  });
  for (size_t r = 1; r < s.row_start.size(); ++r) s.row_start[r] += s.row_start[r - 1];
  return s;
}

Tensor block_sparse_linear(const Tensor& x, const BlockSparseMatrix& w, const Tensor& bias,
                           std::optional<kernels::UnaryOp> act) {
  LOPPER_CHECK(x.dtype() == DType::f32 && x.device().is_cpu(), "[block_sparse_linear] input must be f32 on the CPU, got ",
               dtype_name(x.dtype()), " on ", x.device().str());
  LOPPER_CHECK(x.dim() >= 1 && x.size(-1) == w.cols, "[block_sparse_linear] input ", shape_str(x.shape()),
               " vs weight (", w.rows, ", ", w.cols, ")");
  LOPPER_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.rows && bias.dtype() == DType::f32 &&
                                   bias.device().is_cpu()),
               "[block_sparse_linear] bias ", shape_str(bias.shape()), " for ", w.rows, " outputs");
  LOPPER_CHECK(!act || kernels::kUnaryOps[static_cast<int>(*act)].scalars == 0, "[block_sparse_linear] activation ",
               kernels::kUnaryOps[static_cast<int>(act.value_or(kernels::UnaryOp::neg))].name, " takes scalars");
  ProfileScope profile("block_sparse_linear", x.device());
  Shape out_shape = x.shape();
  out_shape.back() = w.rows;
  Tensor xc = x.contiguous();
  int64_t M = x.numel() / std::max<int64_t>(w.cols, 1), N = w.rows;
  Tensor y = Tensor::empty(out_shape);
  const float* xp = xc.data<float>();
  float* yp = y.data<float>();
  const float* bp = bias.defined() ? bias.contiguous().data<float>() : nullptr;
  if (M == 0) return y;

  // Tiles of at most kTile tokens, as even as they come (50 tokens: 25 + 25, not 32 + 18;
  // a short tail tile runs at a fraction of the kernel's speed).
  int64_t tiles = (M + kTile - 1) / kTile, block_rows = N / w.block_rows;
  const int64_t tile = (M + tiles - 1) / tiles, last = M - (tiles - 1) * tile;
  libxsmm_smmfunction_reducebatch_addr full = kernel(w, tile);
  libxsmm_smmfunction_reducebatch_addr tail = last != tile ? kernel(w, last) : full;
  int64_t widest = 0;
  for (int64_t r = 0; r < block_rows; ++r) widest = std::max(widest, w.row_start[r + 1] - w.row_start[r]);
  // Token tiles outside, block rows inside: a thread keeps its tokens of x in cache while the
  // kept blocks stream past (at low density all of them fit in L2 too).
#pragma omp parallel if (block_rows * tiles > 1)
  {
    std::vector<const float*> a(widest), b(widest);
#pragma omp for collapse(2) schedule(static)
    for (int64_t t = 0; t < tiles; ++t)
      for (int64_t r = 0; r < block_rows; ++r) {
        int64_t m0 = t * tile, nt = std::min(tile, M - m0);
        libxsmm_smmfunction_reducebatch_addr k = nt == tile ? full : tail;
        if (k == nullptr) {
          cpu::finish_tile(yp + m0 * N + r * w.block_rows, N, nt, w.block_rows, false, nullptr);
          tile_reference(w, r, xp, m0, nt, yp);
          cpu::finish_tile(yp + m0 * N + r * w.block_rows, N, nt, w.block_rows, true, bp ? bp + r * w.block_rows : nullptr);
          if (act) cpu::activate_tile(*act, yp + m0 * N + r * w.block_rows, N, nt, w.block_rows);
          continue;
        }
        unsigned long long count = 0;
        for (int64_t i = w.row_start[r]; i < w.row_start[r + 1]; ++i, ++count) {
          a[count] = w.values.data() + i * w.block_rows * w.block_cols;
          b[count] = xp + m0 * w.cols + w.block_col[i] * w.block_cols;
        }
        float* tile = yp + m0 * N + r * w.block_rows;
        if (count > 0) k(a.data(), b.data(), tile, &count);
        cpu::finish_tile(tile, N, nt, w.block_rows, count > 0, bp ? bp + r * w.block_rows : nullptr);
        if (act) cpu::activate_tile(*act, tile, N, nt, w.block_rows);
      }
  }
  return y;
}

}  // namespace lopper
