// The shared caching allocator.
#include "core/caching_allocator.h"

#include <algorithm>

#include "core/error.h"

namespace lopper {

CachingAllocator::CachingAllocator(std::string name, std::function<void*(size_t)> raw_alloc,
                                   std::function<void(void*)> raw_free)
    : name_(std::move(name)), raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)) {}

CachingAllocator::~CachingAllocator() { release_cached_locked(); }

size_t CachingAllocator::round_size(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  if (bytes <= (size_t{1} << 20)) return (bytes + 511) / 512 * 512;
  size_t p = 1;
  while (p < bytes) p <<= 1;
  size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes) {
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* p = nullptr;
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= static_cast<int64_t>(size);
  } else {
    p = raw_alloc_(size);
    if (!p) {
      release_cached_locked();
      p = raw_alloc_(size);
    }
    if (!p) LOPPER_FAIL("[", name_, " allocator] out of memory allocating ", bytes, " bytes");
  }
  stats_.bytes_in_use += static_cast<int64_t>(bytes);
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.bytes_in_use);
  ++stats_.num_allocs;
  return p;
}

void CachingAllocator::deallocate(void* p, size_t bytes) {
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  free_[size].push_back(p);
  stats_.bytes_in_use -= static_cast<int64_t>(bytes);
  stats_.bytes_cached += static_cast<int64_t>(size);
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.bytes_in_use;
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  for (auto& [size, blocks] : free_)
    for (void* b : blocks) raw_free_(b);
  free_.clear();
  stats_.bytes_cached = 0;
}

}  // namespace lopper
