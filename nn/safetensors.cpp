// safetensors reader and writer. Format: 8-byte little-endian header length N, N bytes of
// JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}}, then the
// data; offsets are relative to the end of the header.
#include "nn/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace lopper::nn {

namespace {

using json = nlohmann::json;

struct FileDType {
  const char* name;
  size_t size;
};

// IEEE half to float (for F16 checkpoints).
float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

size_t file_dtype_size(const std::string& d) {
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "U8" || d == "I8" || d == "BOOL") return 1;
  return 0;
}

const char* file_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  return "?";
}

struct Entry {
  std::string name, dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// Validates the header and builds the tensors. With an `owner` (the mapping), aligned
// tensors that need no conversion are views of the data; otherwise they are copies.
SafetensorsContents parse(const char* data, size_t size, DType float_dtype, const std::string& what,
                          const std::shared_ptr<void>& owner) {
  LOPPER_CHECK(float_dtype == DType::f32 || float_dtype == DType::bf16, "[safetensors] float tensors load as f32 or bf16, not ",
               dtype_name(float_dtype));
  LOPPER_CHECK(size >= 8, "[safetensors] ", what, ": file of ", size, " bytes is too short for the 8-byte header length");
  uint64_t header_len = 0;
  std::memcpy(&header_len, data, 8);  // little-endian on every platform we build for
  LOPPER_CHECK(header_len <= size - 8, "[safetensors] ", what, ": header length ", header_len,
               " runs past the end of the file (", size, " bytes)");
  json header;
  try {
    header = json::parse(data + 8, data + 8 + header_len);
  } catch (const json::exception& e) {
    LOPPER_FAIL("[safetensors] ", what, ": header is not valid JSON: ", e.what());
  }
  LOPPER_CHECK(header.is_object(), "[safetensors] ", what, ": header must be a JSON object");
  const char* base = data + 8 + header_len;
  uint64_t data_size = size - 8 - header_len;

  SafetensorsContents out;
  std::vector<Entry> entries;
  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      LOPPER_CHECK(v.is_object(), "[safetensors] ", what, ": __metadata__ must be an object");
      for (auto& [k, mv] : v.items()) {
        LOPPER_CHECK(mv.is_string(), "[safetensors] ", what, ": __metadata__ value '", k, "' is not a string");
        out.metadata[k] = mv.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) { LOPPER_FAIL("[safetensors] ", what, ": tensor '", name, "': ", why); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("needs dtype, shape and data_offsets");
    Entry e;
    e.name = name;
    if (!v["dtype"].is_string()) bad("dtype is not a string");
    e.dtype = v["dtype"].get<std::string>();
    size_t esize = file_dtype_size(e.dtype);
    if (esize == 0) bad("unknown dtype '" + e.dtype + "'");
    if (!v["shape"].is_array()) bad("shape is not an array");
    uint64_t numel = 1;
    for (auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) bad("shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) bad("shape overflows");
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    if (e.shape.size() > 8) bad("more than 8 dims");
    auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("data_offsets must be [begin, end]");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_size)
      bad("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ") out of range of " +
          std::to_string(data_size) + " data bytes");
    if (e.end - e.begin != numel * esize)
      bad("shape " + shape_str(e.shape) + " of " + e.dtype + " needs " + std::to_string(numel * esize) +
          " bytes, data_offsets give " + std::to_string(e.end - e.begin));
    entries.push_back(std::move(e));
  }
  // No two tensors may share bytes.
  std::vector<const Entry*> by_offset;
  for (auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    LOPPER_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end || by_offset[i - 1]->begin == by_offset[i - 1]->end,
                 "[safetensors] ", what, ": tensors '", by_offset[i - 1]->name, "' and '", by_offset[i]->name,
                 "' overlap");

  for (const Entry& e : entries) {
    const char* src = base + e.begin;
    int64_t n = shape_numel(e.shape);
    auto view_or_copy = [&](DType t) {
      size_t isz = dtype_size(t);
      if (owner && reinterpret_cast<uintptr_t>(src) % isz == 0) {
        auto st = std::make_shared<Storage>(const_cast<char*>(src), static_cast<size_t>(e.end - e.begin), Device::cpu(), owner);
        return Tensor::from_storage(st, e.shape, t);
      }
      Tensor c = Tensor::empty(e.shape, t);
      if (n) std::memcpy(c.raw_data(), src, static_cast<size_t>(e.end - e.begin));
      return c;
    };
    Tensor t;
    if (e.dtype == "F32") {
      t = view_or_copy(DType::f32);
      if (float_dtype == DType::bf16) t = t.to(DType::bf16);
    } else if (e.dtype == "BF16") {
      t = view_or_copy(DType::bf16);
      if (float_dtype == DType::f32) t = t.to(DType::f32);
    } else if (e.dtype == "F16") {
      Tensor f = Tensor::empty(e.shape, DType::f32);
      float* dst = f.data<float>();
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_float(h);
      }
      t = float_dtype == DType::f32 ? f : f.to(DType::bf16);
    } else if (e.dtype == "F64") {
      t = view_or_copy(DType::f64).to(float_dtype);
    } else if (e.dtype == "I64") {
      t = view_or_copy(DType::i64);
    } else if (e.dtype == "I32") {
      t = view_or_copy(DType::i32);
    } else if (e.dtype == "U8" || e.dtype == "BOOL") {
      t = view_or_copy(DType::u8);
    } else {
      LOPPER_FAIL("[safetensors] ", what, ": tensor '", e.name, "' has dtype ", e.dtype,
                  ", which Lopper does not load (F32, F16, BF16, F64, I64, I32, U8, BOOL)");
    }
    out.tensors[e.name] = t;
  }
  return out;
}

}  // namespace

SafetensorsContents parse_safetensors(const void* data, size_t size, DType float_dtype, const std::string& what) {
  return parse(static_cast<const char*>(data), size, float_dtype, what, nullptr);
}

SafetensorsContents load_safetensors(const std::string& path, DType float_dtype) {
  int fd = ::open(path.c_str(), O_RDONLY);
  LOPPER_CHECK(fd >= 0, "[safetensors] cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    LOPPER_FAIL("[safetensors] cannot stat '", path, "': ", std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    LOPPER_FAIL("[safetensors] '", path, "' is a folder, expected a .safetensors file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    LOPPER_FAIL("[safetensors] '", path, "' is empty");
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  LOPPER_CHECK(m != MAP_FAILED, "[safetensors] cannot map '", path, "': ", std::strerror(errno));
  std::shared_ptr<void> owner(m, [size](void* p) { ::munmap(p, size); });
  return parse(static_cast<const char*>(m), size, float_dtype, path, owner);
}

void save_safetensors(const std::string& path, const StateDict& tensors, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<Tensor> host;
  for (auto& [name, t] : tensors) {
    LOPPER_CHECK(t.defined(), "[safetensors] tensor '", name, "' is undefined");
    Tensor h = t.to(Device::cpu()).contiguous();
    uint64_t bytes = static_cast<uint64_t>(h.numel()) * h.itemsize();
    header[name] = {{"dtype", file_dtype_name(h.dtype())}, {"shape", h.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(h);
  }
  std::string hs = header.dump();
  while ((hs.size() + 8) % 8 != 0) hs.push_back(' ');  // keeps the data 8-byte aligned
  uint64_t hlen = hs.size();
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    LOPPER_CHECK(f.good(), "[safetensors] cannot write '", tmp, "': ", std::strerror(errno));
    f.write(reinterpret_cast<const char*>(&hlen), 8);
    f.write(hs.data(), static_cast<std::streamsize>(hs.size()));
    for (const Tensor& h : host)
      f.write(static_cast<const char*>(h.raw_data()), static_cast<std::streamsize>(h.numel() * h.itemsize()));
    f.flush();
    LOPPER_CHECK(f.good(), "[safetensors] write to '", tmp, "' failed (disk full?)");
  }
  LOPPER_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "[safetensors] cannot rename '", tmp, "' to '", path,
               "': ", std::strerror(errno));
}

}  // namespace lopper::nn
