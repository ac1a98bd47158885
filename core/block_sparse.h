// Block-sparse weights for inference on the CPU: a (rows, cols) matrix cut into blocks of
// (block_rows, block_cols) and stored in block-sparse-row (BSR) form with its all-zero
// blocks left out, and y = x · wᵀ + b over the kept blocks only. Each block row is one
// batch-reduce GEMM of libxsmm (JIT code for the CPU it runs on, chosen at run time), so a
// matrix at density d costs about d of the dense matmul. Not differentiable: built from a
// finished weight for evaluation and benchmarks (nn::BlockSparseScope).
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "core/kernels/elementwise.h"
#include "core/tensor.h"

namespace lopper {

struct BlockSparseMatrix {
  int64_t rows = 0, cols = 0;              // the dense shape (out, in)
  int64_t block_rows = 0, block_cols = 0;  // each block's shape
  // Block row r holds blocks [row_start[r], row_start[r + 1]).
  std::vector<int64_t> row_start;  // (rows / block_rows + 1)
  std::vector<int64_t> block_col;  // (blocks): each block's column, in blocks
  // (blocks, block_cols, block_rows): every block transposed, i.e. column-major
  // (block_rows x block_cols), the layout the micro-kernel reads as its A.
  std::vector<float> values;

  int64_t blocks() const { return static_cast<int64_t>(block_col.size()); }
  // Kept blocks over all blocks.
  double density() const;
};

// Share of (block_rows, block_cols) blocks of w (rows, cols) that hold a non-zero.
double block_density(const Tensor& w, int64_t block_rows, int64_t block_cols);

// Keeps the blocks of w (rows, cols), f32 on the CPU, that hold a non-zero. The block shape
// must divide the matrix.
BlockSparseMatrix to_block_sparse(const Tensor& w, int64_t block_rows, int64_t block_cols);

// x (..., cols) -> (..., rows): x · wᵀ + bias over the kept blocks; bias (rows) or
// undefined; then act (a unary op without scalars: gelu, relu, ...) if given, on each tile
// while it is in cache. f32 on the CPU.
Tensor block_sparse_linear(const Tensor& x, const BlockSparseMatrix& w, const Tensor& bias,
                           std::optional<kernels::UnaryOp> act = std::nullopt);

}  // namespace lopper
