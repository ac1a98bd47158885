// A block of device memory shared by every tensor view over it.
#pragma once
#include <cstddef>
#include <memory>

#include "core/allocator.h"
#include "core/device.h"

namespace lopper {

class Storage {
 public:
  Storage(size_t bytes, Device device);
  // Wraps memory owned elsewhere (a memory-mapped file); `owner` keeps it alive.
  Storage(void* data, size_t bytes, Device device, std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;  // null for external memory
  std::shared_ptr<void> owner_;
};

}  // namespace lopper
