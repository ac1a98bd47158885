// A Linear's epilogue on one output tile of the CPU's own GEMMs while it is in cache: the
// bias, then the activation, with the arithmetic of add_ and unary (bitwise the same).
// Shared by the block-sparse and the panel-packed Linear (core/cpu).
#pragma once
#include <cstdint>
#include <cstring>

#include "core/kernels/elementwise.h"

namespace lopper::cpu {

// The tile (nt tokens, width outputs) of y, row stride ld, after its kernel: the bias
// added, or, where no kernel wrote it (a block row without blocks), set to the bias or zero.
inline void finish_tile(float* tile, int64_t ld, int64_t nt, int64_t width, bool written, const float* bias) {
  for (int64_t m = 0; m < nt; ++m) {
    float* row = tile + m * ld;
    if (!written) {
      if (bias) std::memcpy(row, bias, sizeof(float) * width);
      else std::memset(row, 0, sizeof(float) * width);
    } else if (bias) {
      for (int64_t n = 0; n < width; ++n) row[n] += bias[n];
    }
  }
}

// act over the tile (nt tokens, width outputs), after its bias: a Linear's activation while
// the tile is in cache, the arithmetic of unary(act) after the bias add.
inline void activate_tile(kernels::UnaryOp act, float* tile, int64_t ld, int64_t nt, int64_t width) {
  kernels::visit_unary(act, [&](auto fn) {
    for (int64_t m = 0; m < nt; ++m) {
      float* row = tile + m * ld;
#pragma omp simd
      for (int64_t n = 0; n < width; ++n) row[n] = fn.forward(row[n], kernels::UnaryParams{});
    }
  });
}

}  // namespace lopper::cpu
