// Device memory: one CachingAllocator per CUDA device over cudaMalloc/cudaFree.
#include <map>
#include <mutex>

#include "core/caching_allocator.h"
#include "core/cuda/check.h"

namespace lopper::cuda {

Allocator& device_allocator(int index) {
  static std::mutex mu;
  static std::map<int, CachingAllocator*> allocators;  // live for the process
  std::lock_guard<std::mutex> lock(mu);
  auto it = allocators.find(index);
  if (it == allocators.end()) {
    auto raw_alloc = [index](size_t n) -> void* {
      int prev = 0;
      LOPPER_CUDA_CHECK(cudaGetDevice(&prev));
      LOPPER_CUDA_CHECK(cudaSetDevice(index));
      void* p = nullptr;
      cudaError_t err = cudaMalloc(&p, n);
      cudaSetDevice(prev);
      if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return nullptr;  // the caching allocator frees its cache and retries
      }
      LOPPER_CUDA_CHECK(err);
      return p;
    };
    auto raw_free = [](void* p) { cudaFree(p); };
    it = allocators.emplace(index, new CachingAllocator("cuda:" + std::to_string(index), raw_alloc, raw_free)).first;
  }
  return *it->second;
}

}  // namespace lopper::cuda
