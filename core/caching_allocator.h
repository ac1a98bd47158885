// A caching allocator over a raw allocate/free pair, used for CPU memory and, in
// core/cuda, for device memory: freed blocks go to a free list keyed by rounded size and
// are handed out again, so a warm training step neither faults in fresh pages (CPU) nor
// calls cudaMalloc (GPU). Blocks are never split: simple, and the waste is bounded by the
// rounding (512 B below 1 MiB, 1/8 of the next power of two above).
#pragma once
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/allocator.h"

namespace lopper {

class CachingAllocator final : public Allocator {
 public:
  // raw_alloc returns nullptr on failure; the cache is then emptied and the call retried.
  CachingAllocator(std::string name, std::function<void*(size_t)> raw_alloc, std::function<void(void*)> raw_free);
  ~CachingAllocator() override;

  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) override;
  AllocatorStats stats() const override;
  void reset_peak() override;
  void release_cached();  // returns every cached block to the raw allocator

  static size_t round_size(size_t bytes);

 private:
  void release_cached_locked();

  std::string name_;
  std::function<void*(size_t)> raw_alloc_;
  std::function<void(void*)> raw_free_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;  // bytes_in_use and peak count requested bytes
};

}  // namespace lopper
