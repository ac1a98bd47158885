// Offsets of N operands that share one iteration shape, from a linear index: how the
// elementwise loops of both backends read strided and broadcast (stride 0) views.
// Dimensions that are contiguous for every operand are merged first, so the common
// cases (same layout, bias over the last dim) reduce to one or two dims.
#pragma once
#include <cstdint>

#include "core/kernels/host_device.h"

namespace lopper::kernels {

inline constexpr int kMaxDims = 8;

template <int N>
struct Indexer {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};  // in elements

  // offsets[k] for operand k at the given linear index (row-major over sizes).
  LOPPER_HOST_DEVICE void offsets(int64_t linear, int64_t* out) const {
    for (int k = 0; k < N; ++k) out[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t i = linear % sizes[d];
      linear /= sizes[d];
      for (int k = 0; k < N; ++k) out[k] += i * strides[k][d];
    }
  }
};

// Builds an Indexer from a shape and per-operand strides, merging mergeable dims.
template <int N>
Indexer<N> make_indexer(int ndim, const int64_t* sizes, const int64_t* const* strides) {
  Indexer<N> ix;
  // Drop size-1 dims, then merge d into d+1 where every operand is contiguous across them.
  int64_t sz[kMaxDims + 1];
  int64_t st[N][kMaxDims + 1];
  int m = 0;
  for (int d = 0; d < ndim; ++d) {
    if (sizes[d] == 1) continue;
    sz[m] = sizes[d];
    for (int k = 0; k < N; ++k) st[k][m] = strides[k][d];
    ++m;
  }
  int out = 0;
  for (int d = 0; d < m; ++d) {
    if (out > 0) {
      bool merge = true;
      for (int k = 0; k < N; ++k)
        if (st[k][out - 1] != st[k][d] * sz[d]) merge = false;
      if (merge) {
        sz[out - 1] *= sz[d];
        for (int k = 0; k < N; ++k) st[k][out - 1] = st[k][d];
        continue;
      }
    }
    sz[out] = sz[d];
    for (int k = 0; k < N; ++k) st[k][out] = st[k][d];
    ++out;
  }
  if (out == 0) {  // a scalar
    sz[0] = 1;
    for (int k = 0; k < N; ++k) st[k][0] = 0;
    out = 1;
  }
  ix.ndim = out;
  for (int d = 0; d < out; ++d) {
    ix.sizes[d] = sz[d];
    for (int k = 0; k < N; ++k) ix.strides[k][d] = st[k][d];
  }
  return ix;
}

}  // namespace lopper::kernels
