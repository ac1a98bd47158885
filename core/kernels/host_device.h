// LOPPER_HOST_DEVICE marks code compiled for both the CPU and, under nvcc, the GPU.
#pragma once
#if defined(__CUDACC__)
#define LOPPER_HOST_DEVICE __host__ __device__ __forceinline__
#else
// Always inlined on the host: the simd loops over the functors vectorize only when the
// math is inlined into them, and GCC otherwise sometimes keeps k_exp a call.
#define LOPPER_HOST_DEVICE inline __attribute__((always_inline))
#endif

// Vectorization hints for the host's OpenMP loops; empty on the device and without OpenMP.
#define LOPPER_PRAGMA(x) _Pragma(#x)
#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define LOPPER_SIMD
#define LOPPER_SIMD_SUM(v)
#define LOPPER_SIMD_MAX(v)
#define LOPPER_SIMD_SUM2(a, b)
#else
#define LOPPER_SIMD LOPPER_PRAGMA(omp simd)
#define LOPPER_SIMD_SUM(v) LOPPER_PRAGMA(omp simd reduction(+ : v))
#define LOPPER_SIMD_MAX(v) LOPPER_PRAGMA(omp simd reduction(max : v))
#define LOPPER_SIMD_SUM2(a, b) LOPPER_PRAGMA(omp simd reduction(+ : a, b))
#endif
