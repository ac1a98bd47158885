// Error checks for every CUDA runtime and cuBLAS call: throw lopper::Error with the call,
// the library's message, file and line.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define LOPPER_CUDA_CHECK(call)                                                              \
  do {                                                                                       \
    cudaError_t err_ = (call);                                                               \
    if (err_ != cudaSuccess)                                                                 \
      LOPPER_FAIL("[cuda] ", #call, " failed: ", cudaGetErrorName(err_), ": ", cudaGetErrorString(err_)); \
  } while (0)

#define LOPPER_CUBLAS_CHECK(call)                                                             \
  do {                                                                                        \
    cublasStatus_t st_ = (call);                                                              \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                         \
      LOPPER_FAIL("[cublas] ", #call, " failed: ", cublasGetStatusName(st_), ": ", cublasGetStatusString(st_)); \
  } while (0)

// After a kernel launch: launch errors now, execution errors at the next sync.
#define LOPPER_CUDA_LAUNCH_CHECK() LOPPER_CUDA_CHECK(cudaGetLastError())
