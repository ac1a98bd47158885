// Scalar math overloads for float and double that compile on the host and under nvcc.
// On the host, float exp and erf are branch-free polynomials so that the OpenMP simd loops
// over the functors vectorize (libm's scalar calls were 60% of a GELU), and float tanh is
// SLEEF's (below); the GPU uses its own expf/erff/tanhf, and double (gradcheck) always uses
// libm. SLEEF's exp and erf were measured against these two and not taken: docs/benchmarks.md
// "SLEEF".
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/kernels/host_device.h"

#if !defined(__CUDA_ARCH__)
// Float tanh on the host: SLEEF's tanhf (u10: within 1 ulp), defined in core/cpu/vector_math.cpp.
// `declare simd` tells GCC there is an 8-lane version, so an `omp simd` loop over a functor
// that calls it (tanh, gelu_tanh) vectorizes and calls SLEEF's AVX2 code 8 floats at a time,
// and the scalar version for the loop's remainder: the two give the same bits.
extern "C" {
#if !defined(__CUDACC__)
#pragma omp declare simd notinbranch simdlen(8)
#endif
float lopper_tanhf(float x);
}
#endif

namespace lopper::kernels {

// Cephes' expf: range reduction by ln 2 and a degree-6 polynomial, within 2 ulp of libm
// on [-87, 88]; 0 below -87.3 and clamped at 88.3 (e^88.3 = 2.2e38).
LOPPER_HOST_DEVICE float k_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  float xc = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, 4);
  float result = p * scale;  // computed unconditionally: a select, not a branch, vectorizes
  return x < -87.3f ? 0.0f : result;
#endif
}
LOPPER_HOST_DEVICE double k_exp(double x) { return exp(x); }
LOPPER_HOST_DEVICE float k_log(float x) { return logf(x); }
LOPPER_HOST_DEVICE double k_log(double x) { return log(x); }
LOPPER_HOST_DEVICE float k_sqrt(float x) { return sqrtf(x); }
LOPPER_HOST_DEVICE double k_sqrt(double x) { return sqrt(x); }
LOPPER_HOST_DEVICE float k_tanh(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  return lopper_tanhf(x);
#endif
}
LOPPER_HOST_DEVICE double k_tanh(double x) { return tanh(x); }
// Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), the form PyTorch's vectorized
// CPU erf uses, so GELU matches it to float rounding.
LOPPER_HOST_DEVICE float k_erf(float x) {
#if defined(__CUDA_ARCH__)
  return erff(x);
#else
  float ax = fabsf(x);
  float t = 1.0f / (1.0f + 0.3275911f * ax);
  float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  float y = 1.0f - poly * k_exp(-ax * ax);
  return copysignf(y, x);
#endif
}
LOPPER_HOST_DEVICE double k_erf(double x) { return erf(x); }
LOPPER_HOST_DEVICE float k_abs(float x) { return fabsf(x); }
LOPPER_HOST_DEVICE double k_abs(double x) { return fabs(x); }
LOPPER_HOST_DEVICE float k_pow(float x, float p) { return powf(x, p); }
LOPPER_HOST_DEVICE double k_pow(double x, double p) { return pow(x, p); }

template <class T> LOPPER_HOST_DEVICE T k_max(T a, T b) { return a > b ? a : b; }
template <class T> LOPPER_HOST_DEVICE T k_min(T a, T b) { return a < b ? a : b; }

}  // namespace lopper::kernels
