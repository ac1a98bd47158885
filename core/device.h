// Where a tensor lives: the CPU or one CUDA device. Not a stream or context.
#pragma once
#include <string>

namespace lopper {

enum class DeviceType : unsigned char { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  // "cpu", "cuda", "cuda:1"; throws lopper::Error on anything else.
  static Device parse(const std::string& s);

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string str() const;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// Whether this build has the CUDA backend, and how many CUDA devices it sees (0 in a
// CPU-only build or on a machine without a GPU).
bool cuda_built();
int cuda_device_count();

// Whether cuBLAS may run f32 GEMMs on TF32 tensor cores (10-bit mantissa inputs, f32
// accumulation), as PyTorch's torch.backends.cuda.matmul.allow_tf32. Off by default: f32
// means f32. Process-wide; no effect on the CPU or in a CPU-only build.
void set_cuda_tf32(bool allow);

}  // namespace lopper
