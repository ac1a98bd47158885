// dtype names and sizes.
#include "core/dtype.h"

#include "core/error.h"

namespace lopper {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "f32" || n == "float32" || n == "F32") return DType::f32;
  if (n == "f64" || n == "float64" || n == "F64") return DType::f64;
  if (n == "bf16" || n == "bfloat16" || n == "BF16") return DType::bf16;
  if (n == "i32" || n == "int32" || n == "I32") return DType::i32;
  if (n == "i64" || n == "int64" || n == "I64") return DType::i64;
  if (n == "u8" || n == "uint8" || n == "bool" || n == "U8" || n == "BOOL") return DType::u8;
  LOPPER_FAIL("[dtype] unknown dtype '", n, "' (expected f32, f64, bf16, i32, i64, u8)");
}

}  // namespace lopper
