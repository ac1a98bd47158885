// Every elementwise op, forward and backward side by side, as LOPPER_HOST_DEVICE functors.
// core/cpu loops over them with OpenMP, core/cuda launches a kernel template over them;
// the math is written once here. Not a place for anything that reads more than one element
// per output (rows, reductions and GEMM live in rows.h and the backends).
#pragma once
#include <cstdint>

#include "core/kernels/math.h"

namespace lopper::kernels {

// Scalars an op may take (clamp bounds, a scale factor, an exponent).
struct UnaryParams {
  double a = 0.0;
  double b = 0.0;
};

// Which tensor the backward needs: the forward input x or output y.
enum class Save : uint8_t { input, output };

// The one list of unary ops: X(name, functor, scalars it takes: 0, 1 (a) or 2 (a, b)).
// It generates the UnaryOp enum, visit_unary, kUnaryOps, the wrappers on Tensors
// (core/ops.h) and Variables (autograd/functions.h), and the lists the gradcheck and the
// CUDA-vs-CPU tests loop over: a new op is its functor below and one line here.
#define LOPPER_UNARY_OPS(X)                                                                                       \
  X(neg, Neg, 0) X(exp, Exp, 0) X(log, Log, 0) X(sqrt, Sqrt, 0) X(tanh, Tanh, 0) X(gelu, Gelu, 0)               \
  X(gelu_tanh, GeluTanh, 0) X(relu, Relu, 0) X(sigmoid, Sigmoid, 0) X(abs, Abs, 0) X(sign, Sign, 0)           \
  X(clamp, Clamp, 2) X(scale, Scale, 1) X(add_scalar, AddScalar, 1) X(pow_scalar, PowScalar, 1)               \
  X(square, Square, 0)

enum class UnaryOp : uint8_t {
#define LOPPER_X(name, F, arity) name,
  LOPPER_UNARY_OPS(LOPPER_X)
#undef LOPPER_X
};

struct UnaryOpInfo {
  UnaryOp op;
  const char* name;
  int scalars;  // how many of UnaryParams' a, b it reads
};
inline constexpr UnaryOpInfo kUnaryOps[] = {
#define LOPPER_X(name, F, arity) {UnaryOp::name, #name, arity},
    LOPPER_UNARY_OPS(LOPPER_X)
#undef LOPPER_X
};

// The wrapper `name(x[, a[, b]])` on a tensor type T (Tensor, Variable), by arity.
#define LOPPER_UNARY_WRAPPER_0(T, name) \
  inline T name(const T& x) { return unary(UnaryOp::name, x); }
#define LOPPER_UNARY_WRAPPER_1(T, name) \
  inline T name(const T& x, double a) { return unary(UnaryOp::name, x, {a, 0}); }
#define LOPPER_UNARY_WRAPPER_2(T, name) \
  inline T name(const T& x, double a, double b) { return unary(UnaryOp::name, x, {a, b}); }

// ---- unary functors: forward(x) and backward(saved, gy) -> gx --------------------------

struct Neg {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return -x; }
  template <class T> LOPPER_HOST_DEVICE T backward(T, T gy, UnaryParams) const { return -gy; }
};
struct Exp {
  static constexpr Save kSave = Save::output;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return k_exp(x); }
  template <class T> LOPPER_HOST_DEVICE T backward(T y, T gy, UnaryParams) const { return gy * y; }
};
struct Log {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return k_log(x); }
  template <class T> LOPPER_HOST_DEVICE T backward(T x, T gy, UnaryParams) const { return gy / x; }
};
struct Sqrt {
  static constexpr Save kSave = Save::output;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return k_sqrt(x); }
  template <class T> LOPPER_HOST_DEVICE T backward(T y, T gy, UnaryParams) const { return gy / (T(2) * y); }
};
struct Tanh {
  static constexpr Save kSave = Save::output;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return k_tanh(x); }
  template <class T> LOPPER_HOST_DEVICE T backward(T y, T gy, UnaryParams) const { return gy * (T(1) - y * y); }
};
// BERT's gelu: x * Phi(x) with the exact normal CDF.
struct Gelu {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const {
    return T(0.5) * x * (T(1) + k_erf(x * T(0.70710678118654752440)));
  }
  template <class T> LOPPER_HOST_DEVICE T backward(T x, T gy, UnaryParams) const {
    T cdf = T(0.5) * (T(1) + k_erf(x * T(0.70710678118654752440)));
    T pdf = k_exp(T(-0.5) * x * x) * T(0.39894228040143267794);
    return gy * (cdf + x * pdf);
  }
};
// gelu_new / gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct GeluTanh {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const {
    T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (T(1) + k_tanh(u));
  }
  template <class T> LOPPER_HOST_DEVICE T backward(T x, T gy, UnaryParams) const {
    T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
    T t = k_tanh(u);
    T du = T(0.79788456080286535588) * (T(1) + T(3 * 0.044715) * x * x);
    return gy * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
  }
};
struct Relu {
  static constexpr Save kSave = Save::output;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return x > T(0) ? x : T(0); }
  template <class T> LOPPER_HOST_DEVICE T backward(T y, T gy, UnaryParams) const { return y > T(0) ? gy : T(0); }
};
struct Sigmoid {
  static constexpr Save kSave = Save::output;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const {
    // Split by sign so exp never overflows.
    if (x >= T(0)) return T(1) / (T(1) + k_exp(-x));
    T e = k_exp(x);
    return e / (T(1) + e);
  }
  template <class T> LOPPER_HOST_DEVICE T backward(T y, T gy, UnaryParams) const { return gy * y * (T(1) - y); }
};
struct Abs {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return k_abs(x); }
  template <class T> LOPPER_HOST_DEVICE T backward(T x, T gy, UnaryParams) const {
    return x > T(0) ? gy : (x < T(0) ? -gy : T(0));
  }
};
struct Sign {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const {
    return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  }
  template <class T> LOPPER_HOST_DEVICE T backward(T, T, UnaryParams) const { return T(0); }
};
// clamp to [a, b]; the gradient passes where the input is inside the closed interval.
struct Clamp {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams p) const {
    return x < T(p.a) ? T(p.a) : (x > T(p.b) ? T(p.b) : x);
  }
  template <class T> LOPPER_HOST_DEVICE T backward(T x, T gy, UnaryParams p) const {
    return (x >= T(p.a) && x <= T(p.b)) ? gy : T(0);
  }
};
struct Scale {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams p) const { return x * T(p.a); }
  template <class T> LOPPER_HOST_DEVICE T backward(T, T gy, UnaryParams p) const { return gy * T(p.a); }
};
struct AddScalar {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams p) const { return x + T(p.a); }
  template <class T> LOPPER_HOST_DEVICE T backward(T, T gy, UnaryParams) const { return gy; }
};
struct PowScalar {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams p) const { return k_pow(x, T(p.a)); }
  template <class T> LOPPER_HOST_DEVICE T backward(T x, T gy, UnaryParams p) const {
    return gy * T(p.a) * k_pow(x, T(p.a - 1.0));
  }
};
struct Square {
  static constexpr Save kSave = Save::input;
  template <class T> LOPPER_HOST_DEVICE T forward(T x, UnaryParams) const { return x * x; }
  template <class T> LOPPER_HOST_DEVICE T backward(T x, T gy, UnaryParams) const { return T(2) * x * gy; }
};

// Calls f(Functor{}) for the functor of `op`; backends instantiate their loops through it.
template <class F>
decltype(auto) visit_unary(UnaryOp op, F&& f) {
  switch (op) {
#define LOPPER_X(name, Functor, arity) \
  case UnaryOp::name:                 \
    return f(Functor{});
    LOPPER_UNARY_OPS(LOPPER_X)
#undef LOPPER_X
  }
  return f(Neg{});  // unreachable
}

inline Save unary_save(UnaryOp op) {
  return visit_unary(op, [](auto fn) { return decltype(fn)::kSave; });
}

// ---- binary functors: forward(a, b), grad_a(a, b, gy), grad_b(a, b, gy) -----------------

// The one list of binary ops, X(name, functor), as LOPPER_UNARY_OPS.
#define LOPPER_BINARY_OPS(X) \
  X(add, Add) X(sub, Sub) X(mul, Mul) X(div, Div) X(maximum, Maximum) X(minimum, Minimum)
enum class BinaryOp : uint8_t {
#define LOPPER_X(name, F) name,
  LOPPER_BINARY_OPS(LOPPER_X)
#undef LOPPER_X
};

struct BinaryOpInfo {
  BinaryOp op;
  const char* name;
};
inline constexpr BinaryOpInfo kBinaryOps[] = {
#define LOPPER_X(name, F) {BinaryOp::name, #name},
    LOPPER_BINARY_OPS(LOPPER_X)
#undef LOPPER_X
};

#define LOPPER_BINARY_WRAPPER(T, name) \
  inline T name(const T& a, const T& b) { return binary(BinaryOp::name, a, b); }

struct Add {
  template <class T> LOPPER_HOST_DEVICE T forward(T a, T b) const { return a + b; }
  template <class T> LOPPER_HOST_DEVICE T grad_a(T, T, T gy) const { return gy; }
  template <class T> LOPPER_HOST_DEVICE T grad_b(T, T, T gy) const { return gy; }
};
struct Sub {
  template <class T> LOPPER_HOST_DEVICE T forward(T a, T b) const { return a - b; }
  template <class T> LOPPER_HOST_DEVICE T grad_a(T, T, T gy) const { return gy; }
  template <class T> LOPPER_HOST_DEVICE T grad_b(T, T, T gy) const { return -gy; }
};
struct Mul {
  template <class T> LOPPER_HOST_DEVICE T forward(T a, T b) const { return a * b; }
  template <class T> LOPPER_HOST_DEVICE T grad_a(T, T b, T gy) const { return gy * b; }
  template <class T> LOPPER_HOST_DEVICE T grad_b(T a, T, T gy) const { return gy * a; }
};
struct Div {
  template <class T> LOPPER_HOST_DEVICE T forward(T a, T b) const { return a / b; }
  template <class T> LOPPER_HOST_DEVICE T grad_a(T, T b, T gy) const { return gy / b; }
  template <class T> LOPPER_HOST_DEVICE T grad_b(T a, T b, T gy) const { return -gy * a / (b * b); }
};
// Ties send the gradient to `a`, as a subgradient must go somewhere.
struct Maximum {
  template <class T> LOPPER_HOST_DEVICE T forward(T a, T b) const { return a >= b ? a : b; }
  template <class T> LOPPER_HOST_DEVICE T grad_a(T a, T b, T gy) const { return a >= b ? gy : T(0); }
  template <class T> LOPPER_HOST_DEVICE T grad_b(T a, T b, T gy) const { return a >= b ? T(0) : gy; }
};
struct Minimum {
  template <class T> LOPPER_HOST_DEVICE T forward(T a, T b) const { return a <= b ? a : b; }
  template <class T> LOPPER_HOST_DEVICE T grad_a(T a, T b, T gy) const { return a <= b ? gy : T(0); }
  template <class T> LOPPER_HOST_DEVICE T grad_b(T a, T b, T gy) const { return a <= b ? T(0) : gy; }
};

template <class F>
decltype(auto) visit_binary(BinaryOp op, F&& f) {
  switch (op) {
#define LOPPER_X(name, Functor) \
  case BinaryOp::name:         \
    return f(Functor{});
    LOPPER_BINARY_OPS(LOPPER_X)
#undef LOPPER_X
  }
  return f(Add{});  // unreachable
}

// ---- comparisons: bool (u8) result, no gradient ------------------------------------------

enum class CompareOp : uint8_t { eq, ne, lt, le, gt, ge };

template <class T>
LOPPER_HOST_DEVICE uint8_t compare(CompareOp op, T a, T b) {
  switch (op) {
    case CompareOp::eq: return a == b;
    case CompareOp::ne: return a != b;
    case CompareOp::lt: return a < b;
    case CompareOp::le: return a <= b;
    case CompareOp::gt: return a > b;
    case CompareOp::ge: return a >= b;
  }
  return 0;
}

// ---- where / dropout / random / optimizer -----------------------------------------------

template <class T>
LOPPER_HOST_DEVICE T where(uint8_t cond, T a, T b) { return cond ? a : b; }

enum class RandomKind : uint8_t { uniform, normal, bernoulli };

// AdamW with decoupled weight decay (Loshchilov & Hutter), bias-corrected moments.
// bc1 = 1 - beta1^t and bc2 = 1 - beta2^t are computed once per step by the caller.
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay, bc1, bc2;
  template <class T>
  LOPPER_HOST_DEVICE void operator()(T& p, T g, T& m, T& v) const {
    m = T(beta1) * m + T(1 - beta1) * g;
    v = T(beta2) * v + T(1 - beta2) * g * g;
    T mhat = m / T(bc1);
    T vhat = v / T(bc2);
    p = p - T(lr) * (mhat / (k_sqrt(vhat) + T(eps)) + T(weight_decay) * p);
  }
};

}  // namespace lopper::kernels
