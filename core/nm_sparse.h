// N:M-sparse weights for inference on the CPU: a (rows, cols) matrix whose rows keep at most
// n of every m consecutive weights, stored as the kept values and each one's position in
// its group (one byte): 2:4 in f32 is 10 bytes per 4 weights instead of 16, 1:4 and 8:32
// are 5. y = x · wᵀ + b over the kept values only (reading the values and 2-byte columns). Batch-1 and small batches read fewer
// weight bytes, which is what bounds them; larger batches are compute-bound, where the dense
// GEMM's register blocking wins (docs/benchmarks.md). Not differentiable.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lopper {

struct NmSparseMatrix {
  int64_t rows = 0, cols = 0, n = 0, m = 0;
  // (rows, cols / m * n): the kept values of each group in order; a group with fewer than
  // n non-zeros is padded with zeros at its first free positions.
  std::vector<float> values;
  std::vector<uint8_t> index;  // (rows, cols / m * n): each value's position in its group, 0..m-1
  // (rows, cols / m * n): each value's column, decoded from index when packed: what the
  // matmul reads (gathers want whole offsets), 2 bytes more per kept value.
  std::vector<uint16_t> column;
  int64_t bytes() const { return static_cast<int64_t>(values.size() * sizeof(float) + index.size()); }
};

// Packs w (rows, cols), f32 on the CPU; m must divide cols, m <= 256 and cols <= 65536. Throws naming
// the first group with more than n non-zeros.
NmSparseMatrix to_nm_sparse(const Tensor& w, int64_t n, int64_t m);
// The dense (rows, cols) matrix back.
Tensor nm_dense(const NmSparseMatrix& w);

// x (..., cols) -> (..., rows): x · wᵀ + bias; bias (rows) or undefined. f32 on the CPU.
Tensor nm_sparse_linear(const Tensor& x, const NmSparseMatrix& w, const Tensor& bias);

}  // namespace lopper
