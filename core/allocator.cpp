// CPU allocator with statistics; CUDA requests go to core/cuda.
#include "core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "core/error.h"
#include "core/storage.h"

namespace lopper {
namespace cuda {
Allocator& device_allocator(int index);  // core/cuda (or the stub)
}

namespace {
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    size_t rounded = (std::max<size_t>(bytes, 1) + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    void* p = std::aligned_alloc(kCpuAlignment, rounded);
    if (!p) LOPPER_FAIL("[cpu allocator] out of memory allocating ", bytes, " bytes");
    int64_t now = in_use_.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {}
    allocs_.fetch_add(1);
    return p;
  }
  void deallocate(void* p, size_t bytes) override {
    std::free(p);
    in_use_.fetch_sub(static_cast<int64_t>(bytes));
  }
  AllocatorStats stats() const override {
    return {in_use_.load(), peak_.load(), allocs_.load(), 0};
  }
  void reset_peak() override { peak_.store(in_use_.load()); }

 private:
  std::atomic<int64_t> in_use_{0}, peak_{0}, allocs_{0};
};
}  // namespace

Allocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
}

Allocator& allocator_for(Device d) {
  return d.is_cpu() ? cpu_allocator() : cuda::device_allocator(d.index);
}

Storage::Storage(size_t bytes, Device device)
    : bytes_(bytes), device_(device), allocator_(&allocator_for(device)) {
  data_ = allocator_->allocate(bytes);
}

Storage::~Storage() { allocator_->deallocate(data_, bytes_); }

}  // namespace lopper
