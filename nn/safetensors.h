// safetensors: read (memory-mapped, zero-copy where the data is aligned) and write
// (atomically, temp file + rename). Every header field is validated against the file, so
// a truncated or hostile file gives a lopper::Error, never a crash or an out-of-bounds read.
// Not a general serialization layer: optimizer checkpoints reuse it as plain tensors.
#pragma once
#include <map>
#include <string>

#include "nn/module.h"

namespace lopper::nn {

struct SafetensorsContents {
  StateDict tensors;
  std::map<std::string, std::string> metadata;  // the optional "__metadata__" entry
};

// Loads every tensor. F32, F16 and BF16 load as `float_dtype` (f32 or bf16); integer and
// bool tensors keep their type. F32 tensors (and BF16 into bf16) whose data is aligned are
// zero-copy views of the mapping (read-only: copy before writing into them).
SafetensorsContents load_safetensors(const std::string& path, DType float_dtype = DType::f32);

// Parses a file already in memory (the loader and the fuzz tests share this).
SafetensorsContents parse_safetensors(const void* data, size_t size, DType float_dtype,
                                      const std::string& what = "buffer");

// Writes tensors (any strides and dtypes f32, f64, bf16, i32, i64, u8) in name order.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace lopper::nn
