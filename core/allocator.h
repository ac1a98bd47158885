// Allocators and their statistics. Both the CPU (64-byte aligned blocks) and each CUDA
// device use a CachingAllocator (core/caching_allocator.h) over the raw allocator.
// Not a memory pool with splitting or defragmentation.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace lopper {

struct AllocatorStats {
  int64_t bytes_in_use = 0;     // live blocks handed out
  int64_t peak_bytes = 0;       // high-water mark of bytes_in_use
  int64_t num_allocs = 0;       // calls to allocate since start
  int64_t bytes_cached = 0;     // held by a caching allocator, not in use (CUDA)
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
};

Allocator& cpu_allocator();
Allocator& allocator_for(Device d);   // throws for CUDA in a CPU-only build

inline constexpr size_t kCpuAlignment = 64;

}  // namespace lopper
