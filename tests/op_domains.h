// Where the op-list tests (autograd/test_gradcheck.cpp, cuda/test_cuda_ops.cpp) check each
// elementwise op. They loop over kernels::kUnaryOps and kBinaryOps, which LOPPER_UNARY_OPS and
// LOPPER_BINARY_OPS generate, so a new op is checked the day it is listed: on inputs in
// [-2, 2] with no scalars, unless it is named here (domain edges, its scalars). Kinks (relu,
// abs, sign at 0, clamp at its bounds) are left to chance: a seeded f64 input within the
// finite-difference step of one has probability ~1e-6.
#pragma once
#include "core/kernels/elementwise.h"

namespace lopper::test {

struct UnaryDomain {
  double lo = -2, hi = 2;
  kernels::UnaryParams p{};
};

inline UnaryDomain unary_domain(kernels::UnaryOp op) {
  using kernels::UnaryOp;
  switch (op) {
    case UnaryOp::log:
    case UnaryOp::sqrt: return {0.5, 3};
    case UnaryOp::pow_scalar: return {0.5, 3, {2.5, 0}};
    case UnaryOp::clamp: return {-2, 2, {-1, 1}};
    case UnaryOp::scale: return {-2, 2, {-1.5, 0}};
    case UnaryOp::add_scalar: return {-2, 2, {0.3, 0}};
    default: return {};
  }
}

// Binary ops: a in [-2, 2], b in [0.5, 2] (div's b away from 0) for every op.
inline constexpr double kBinaryBLo = 0.5, kBinaryBHi = 2;

}  // namespace lopper::test
