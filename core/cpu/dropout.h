// Dropout over spans of memory on the CPU: core/kernels/random.h's per-element rule, in
// loops that vectorize (the CPU backend's dropout and the fused attention's). Host only:
// the CUDA kernels draw per element.
#pragma once
#include <cstdint>

#include "core/kernels/random.h"

namespace lopper::kernels {

// f(i, random_bits32(seed, first + i)) for i < n: the key of the counters'
// high word taken once per stretch of 2^32, so the loop over the low words vectorizes in
// 32-bit lanes (a 64-bit counter per element does not).
template <class F>
void random_bits32_span(int64_t n, uint64_t seed, uint64_t first, F f) {
  for (int64_t i = 0; i < n;) {
    const uint64_t c = first + static_cast<uint64_t>(i);
    const uint32_t low0 = static_cast<uint32_t>(c);
    const int64_t to_wrap = static_cast<int64_t>((uint64_t(1) << 32) - low0);
    const int64_t len = n - i < to_wrap ? n - i : to_wrap;
    const Bits32 bits(seed, static_cast<uint32_t>(c >> 32));
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) f(i + j, bits(low0 + static_cast<uint32_t>(j)));
    i += len;
  }
}

// y[i] = dropout_value(x[i], keep_scale, seed, first + i, p) for i < n (y may be x).
template <class T>
void dropout_span(const T* x, T* y, int64_t n, T keep_scale, uint64_t seed, uint64_t first, float p) {
  random_bits32_span(n, seed, first, [=](int64_t i, uint32_t bits) {
    y[i] = dropout_select(x[i], keep_scale, dropout_keep_bits(bits, p));
  });
}

// The same draws as a mask: m[i] = keep_scale where element first + i is kept, else 0, for
// applying one mask twice (dropout_apply; the fused attention's backward).
template <class T>
void dropout_mask_span(T* m, int64_t n, T keep_scale, uint64_t seed, uint64_t first, float p) {
  random_bits32_span(n, seed, first,
                     [=](int64_t i, uint32_t bits) { m[i] = dropout_keep_bits(bits, p) ? keep_scale : T(0); });
}

// y[i] = x[i] * keep_scale where m[i] != 0, else 0 (y may be x): dropout_value's result for
// the element m was drawn for.
template <class T>
void dropout_apply(const T* m, const T* x, T* y, int64_t n, T keep_scale) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = dropout_select(x[i], keep_scale, m[i] != T(0));
}

}  // namespace lopper::kernels
