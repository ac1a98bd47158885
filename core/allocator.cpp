// CPU allocator with statistics; CUDA requests go to core/cuda.
#include "core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "core/caching_allocator.h"
#include "core/error.h"
#include "core/storage.h"

namespace lopper {
namespace cuda {
Allocator& device_allocator(int index);  // core/cuda (or the stub)
}

Allocator& cpu_allocator() {
  // Cached: a fresh 50 MB activation would otherwise be a fresh mmap, and faulting its
  // pages in costs as much as the GEMM that fills it.
  static CachingAllocator a(
      "cpu", [](size_t n) { return std::aligned_alloc(kCpuAlignment, (n + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment); },
      [](void* p) { std::free(p); });
  return a;
}

Allocator& allocator_for(Device d) {
  return d.is_cpu() ? cpu_allocator() : cuda::device_allocator(d.index);
}

Storage::Storage(size_t bytes, Device device)
    : bytes_(bytes), device_(device), allocator_(&allocator_for(device)) {
  data_ = allocator_->allocate(bytes);
}

Storage::Storage(void* data, size_t bytes, Device device, std::shared_ptr<void> owner)
    : data_(data), bytes_(bytes), device_(device), owner_(std::move(owner)) {}

Storage::~Storage() {
  if (allocator_) allocator_->deallocate(data_, bytes_);
}

}  // namespace lopper
