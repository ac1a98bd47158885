// The two backends behind core/ops: lopper::cpu (always) and lopper::cuda (LOPPER_CUDA,
// else a stub that throws). Both implement backend_api.inc with the functors of
// core/kernels. Only core/ops.cpp, core/device.cpp (what is built and present) and the
// backends include this.
#pragma once
#include <cstdint>

#include "core/kernels/elementwise.h"
#include "core/kernels/gemm.h"
#include "core/kernels/rows.h"
#include "core/tensor.h"

namespace lopper::cpu {
#include "core/backend_api.inc"
}  // namespace lopper::cpu

namespace lopper::cuda {
#include "core/backend_api.inc"
bool built();                 // this build has the CUDA backend (false in the stub)
bool available();             // a device is present and usable
int device_count();
void synchronize();
void set_tf32(bool allow);  // f32 GEMMs on TF32 tensor cores (see core/device.h)
}  // namespace lopper::cuda

namespace lopper::cuda {
// src and dst contiguous, same dtype and size, on different devices (host <-> device).
void copy_between_devices(const Tensor& src, const Tensor& dst);
}  // namespace lopper::cuda
