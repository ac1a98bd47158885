// Scalar math overloads for float and double that compile on the host and under nvcc.
#pragma once
#include <math.h>

#include "core/kernels/host_device.h"

namespace lopper::kernels {

LOPPER_HOST_DEVICE float k_exp(float x) { return expf(x); }
LOPPER_HOST_DEVICE double k_exp(double x) { return exp(x); }
LOPPER_HOST_DEVICE float k_log(float x) { return logf(x); }
LOPPER_HOST_DEVICE double k_log(double x) { return log(x); }
LOPPER_HOST_DEVICE float k_sqrt(float x) { return sqrtf(x); }
LOPPER_HOST_DEVICE double k_sqrt(double x) { return sqrt(x); }
LOPPER_HOST_DEVICE float k_tanh(float x) { return tanhf(x); }
LOPPER_HOST_DEVICE double k_tanh(double x) { return tanh(x); }
LOPPER_HOST_DEVICE float k_erf(float x) { return erff(x); }
LOPPER_HOST_DEVICE double k_erf(double x) { return erf(x); }
LOPPER_HOST_DEVICE float k_abs(float x) { return fabsf(x); }
LOPPER_HOST_DEVICE double k_abs(double x) { return fabs(x); }
LOPPER_HOST_DEVICE float k_pow(float x, float p) { return powf(x, p); }
LOPPER_HOST_DEVICE double k_pow(double x, double p) { return pow(x, p); }

template <class T> LOPPER_HOST_DEVICE T k_max(T a, T b) { return a > b ? a : b; }
template <class T> LOPPER_HOST_DEVICE T k_min(T a, T b) { return a < b ? a : b; }

}  // namespace lopper::kernels
