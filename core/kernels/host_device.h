// LOPPER_HOST_DEVICE marks code compiled for both the CPU and, under nvcc, the GPU.
#pragma once
#if defined(__CUDACC__)
#define LOPPER_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LOPPER_HOST_DEVICE inline
#endif
