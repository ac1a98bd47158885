// The CUDA caching allocator: freed blocks go to a per-device free list keyed by rounded
// size and are handed out again, so a training step makes no cudaMalloc calls once warm.
// Not a sub-allocator: blocks are never split, which is simple and wastes at most the
// rounding (1/8 of a block above 1 MiB).
#include <map>
#include <mutex>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/check.h"

namespace lopper::cuda {

namespace {

size_t round_size(size_t bytes) {
  if (bytes <= (1u << 20)) return (std::max<size_t>(bytes, 1) + 511) / 512 * 512;
  // Above 1 MiB: round up to 1/8 of the next power of two.
  size_t p = 1;
  while (p < bytes) p <<= 1;
  size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  void* allocate(size_t bytes) override {
    size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = nullptr;
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.bytes_cached -= static_cast<int64_t>(size);
    } else {
      int prev = 0;
      LOPPER_CUDA_CHECK(cudaGetDevice(&prev));
      LOPPER_CUDA_CHECK(cudaSetDevice(device_));
      cudaError_t err = cudaMalloc(&p, size);
      if (err == cudaErrorMemoryAllocation) {  // give the cache back and try once more
        (void)cudaGetLastError();
        release_cached_locked();
        err = cudaMalloc(&p, size);
      }
      cudaSetDevice(prev);
      if (err != cudaSuccess)
        LOPPER_FAIL("[cuda allocator] cudaMalloc of ", size, " bytes on cuda:", device_, " failed: ",
                    cudaGetErrorString(err));
    }
    stats_.bytes_in_use += static_cast<int64_t>(size);
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.bytes_in_use);
    ++stats_.num_allocs;
    return p;
  }

  void deallocate(void* p, size_t bytes) override {
    size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    free_[size].push_back(p);
    stats_.bytes_in_use -= static_cast<int64_t>(size);
    stats_.bytes_cached += static_cast<int64_t>(size);
  }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_bytes = stats_.bytes_in_use;
  }

 private:
  void release_cached_locked() {
    for (auto& [size, blocks] : free_)
      for (void* b : blocks) cudaFree(b);
    free_.clear();
    stats_.bytes_cached = 0;
  }

  int device_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

}  // namespace

Allocator& device_allocator(int index) {
  static std::mutex mu;
  static std::map<int, CachingAllocator*> allocators;  // live for the process
  std::lock_guard<std::mutex> lock(mu);
  auto it = allocators.find(index);
  if (it == allocators.end()) it = allocators.emplace(index, new CachingAllocator(index)).first;
  return *it->second;
}

}  // namespace lopper::cuda
