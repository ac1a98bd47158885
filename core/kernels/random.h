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

// Inverted dropout: x / (1 - p) where kept, else 0; keep_scale is T(1) / (T(1) - T(p)).
// The product is taken either way: a select, not a branch, so loops over it vectorize.
template <class T>
LOPPER_HOST_DEVICE T dropout_select(T x, T keep_scale, bool keep) {
  T kept = x * keep_scale;
  return keep ? kept : T(0);
}

// Inverted dropout of element `counter`.
template <class T>
LOPPER_HOST_DEVICE T dropout_value(T x, T keep_scale, uint64_t seed, uint64_t counter, float p) {
  return dropout_select(x, keep_scale, dropout_keep(seed, counter, p));
}

}  // namespace lopper::kernels
