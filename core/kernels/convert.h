// Element conversion between storage types (bf16 goes through f32).
#pragma once
#include <type_traits>

#include "core/dtype.h"

namespace lopper::kernels {

template <class To, class From>
LOPPER_HOST_DEVICE To convert(From x) {
  if constexpr (std::is_same_v<To, From>) {
    return x;
  } else if constexpr (std::is_same_v<To, BFloat16>) {
    return BFloat16(static_cast<float>(x));
  } else if constexpr (std::is_same_v<From, BFloat16>) {
    return static_cast<To>(static_cast<float>(x));
  } else {
    return static_cast<To>(x);
  }
}

}  // namespace lopper::kernels
