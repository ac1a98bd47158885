// LOPPER_PROFILE=1: every backend call made through core/ops (and every host <-> device
// copy) adds its wall time under its name to a table printed to stderr at exit, so a step's
// time can be read op by op on either device (docs/benchmarks.md). On a CUDA device each
// call synchronizes before and after, so the time is the kernel's. Off, it costs one branch
// per call.
#pragma once
#include <chrono>

#include "core/device.h"

namespace lopper {

bool profiling();  // LOPPER_PROFILE is set

// Times one call under "name" or "name.detail" (detail: an op's name, a GEMM's kind).
class ProfileScope {
 public:
  ProfileScope(const char* name, Device dev, const char* detail = nullptr)
      : name_(profiling() ? name : nullptr), detail_(detail), dev_(dev) {
    if (name_) start();
  }
  ~ProfileScope() {
    if (name_) stop();
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  void start();
  void stop();
  const char* name_;
  const char* detail_;
  Device dev_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace lopper
