// Element types. bf16 is a storage type: kernels compute in f32 and only cast to/from it.
// Not a type-promotion system: ops require matching dtypes and say so.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/kernels/host_device.h"

namespace lopper {

enum class DType : uint8_t { f32, f64, bf16, i32, i64, u8 };

// Bool tensors are u8 holding 0 or 1.
inline constexpr DType kBool = DType::u8;

struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  LOPPER_HOST_DEVICE explicit BFloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a quiet NaN
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    } else {  // round to nearest even
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  LOPPER_HOST_DEVICE operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
};

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType dtype_from_name(const std::string& name);
inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; }

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::f32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::f64; };
template <> struct DTypeOf<BFloat16> { static constexpr DType value = DType::bf16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::i32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::i64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::u8; };

}  // namespace lopper

namespace lopper {

template <class T> struct TypeTag { using type = T; };

// dispatch_*(dtype, "op", [&](auto tag) { using scalar_t = typename decltype(tag)::type; ... })
// calls the body with the C++ type of `dtype`; anything outside the set throws naming op.
template <class F>
decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(TypeTag<float>{});
    case DType::f64: return f(TypeTag<double>{});
    default: LOPPER_FAIL("[", op, "] expects f32 or f64, got ", dtype_name(t));
  }
}

template <class F>
decltype(auto) dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(TypeTag<float>{});
    case DType::f64: return f(TypeTag<double>{});
    case DType::bf16: return f(TypeTag<BFloat16>{});
    case DType::i32: return f(TypeTag<int32_t>{});
    case DType::i64: return f(TypeTag<int64_t>{});
    case DType::u8: return f(TypeTag<uint8_t>{});
  }
  LOPPER_FAIL("[", op, "] unknown dtype");
}

template <class F>
decltype(auto) dispatch_index(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::i32: return f(TypeTag<int32_t>{});
    case DType::i64: return f(TypeTag<int64_t>{});
    default: LOPPER_FAIL("[", op, "] index tensor must be i32 or i64, got ", dtype_name(t));
  }
}

}  // namespace lopper
