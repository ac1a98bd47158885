// Counter-based random bits (a SplitMix64-style finalizer over seed and counter), shared
// by the CPU loops and the CUDA kernels so both backends draw identical numbers.
#pragma once
#include <math.h>
#include <cstdint>

#include "core/kernels/host_device.h"

namespace lopper::kernels {

LOPPER_HOST_DEVICE uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

LOPPER_HOST_DEVICE uint64_t random_bits(uint64_t seed, uint64_t counter) {
  return mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ (counter * 0xd1b54a32d192ed03ull));
}

// Uniform in [0, 1) with 24 (float) random bits; exact dyadic values.
LOPPER_HOST_DEVICE float uniform01(uint64_t seed, uint64_t counter) {
  return static_cast<float>(random_bits(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

LOPPER_HOST_DEVICE double uniform01_f64(uint64_t seed, uint64_t counter) {
  return static_cast<double>(random_bits(seed, counter) >> 11) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller from two uniforms on counters (2i, 2i+1).
LOPPER_HOST_DEVICE double normal01(uint64_t seed, uint64_t counter) {
  double u1 = uniform01_f64(seed, 2 * counter);
  double u2 = uniform01_f64(seed, 2 * counter + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return ::sqrt(-2.0 * ::log(u1)) * ::cos(6.283185307179586 * u2);  // ::, not lopper::log on Tensors
}

// 32-bit variant for the hot path (dropout): only 32-bit multiplies, so the CPU loop
// vectorizes with AVX2. Bijective in the low counter word for a fixed seed and high word
// (murmur3's fmix32 is a bijection), so no two of 2^32 consecutive counters collide.
LOPPER_HOST_DEVICE uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// random_bits32 for the counters that share one high word: its key computed once, so a loop
// over the low words is 32-bit arithmetic only.
struct Bits32 {
  uint32_t key, k1;
  LOPPER_HOST_DEVICE Bits32(uint64_t seed, uint32_t high)
      : key(fmix32(high ^ (static_cast<uint32_t>(seed >> 32) ^ 0x9e3779b9u)) + static_cast<uint32_t>(seed)),
        k1(static_cast<uint32_t>(seed >> 32) ^ 0x9e3779b9u) {}
  LOPPER_HOST_DEVICE uint32_t operator()(uint32_t low) const { return fmix32(fmix32(low ^ key) ^ k1); }
};

LOPPER_HOST_DEVICE uint32_t random_bits32(uint64_t seed, uint64_t counter) {
  return Bits32(seed, static_cast<uint32_t>(counter >> 32))(static_cast<uint32_t>(counter));
}

// Kept by dropout with probability 1 - p, from 32 random bits (their top 24 as a uniform;
// through int32, which converts to float in vector registers, the same value).
LOPPER_HOST_DEVICE bool dropout_keep_bits(uint32_t bits, float p) {
  return static_cast<float>(static_cast<int32_t>(bits >> 8)) * (1.0f / 16777216.0f) >= p;
}

// Element `counter` kept by dropout with probability 1 - p.
LOPPER_HOST_DEVICE bool dropout_keep(uint64_t seed, uint64_t counter, float p) {
  return dropout_keep_bits(random_bits32(seed, counter), p);
}

// Inverted dropout of element `counter`: x / (1 - p) where kept, else 0; keep_scale is
// T(1) / (T(1) - T(p)). The product is taken either way: a select, not a branch, so loops
// over it vectorize.
template <class T>
LOPPER_HOST_DEVICE T dropout_value(T x, T keep_scale, uint64_t seed, uint64_t counter, float p) {
  T kept = x * keep_scale;
  return dropout_keep(seed, counter, p) ? kept : T(0);
}

// f(i, random_bits32(seed, first + i)) for i < n, on the host: the key of the counters'
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
    T kept = x[i] * keep_scale;
    y[i] = dropout_keep_bits(bits, p) ? kept : T(0);
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
  for (int64_t i = 0; i < n; ++i) {
    T kept = x[i] * keep_scale;
    y[i] = m[i] != T(0) ? kept : T(0);
  }
}

}  // namespace lopper::kernels
