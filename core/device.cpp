// Device parsing and printing.
#include "core/device.h"

#include <charconv>

#include "core/backend.h"
#include "core/error.h"

namespace lopper {

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    int idx = -1;
    auto [p, ec] = std::from_chars(s.data() + 5, s.data() + s.size(), idx);
    if (ec == std::errc() && p == s.data() + s.size() && idx >= 0) return cuda(idx);
  }
  LOPPER_FAIL("[device] cannot parse '", s, "' (expected cpu, cuda or cuda:N)");
}

bool cuda_built() { return cuda::built(); }
int cuda_device_count() { return cuda::device_count(); }
void set_cuda_tf32(bool allow) { cuda::set_tf32(allow); }

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

}  // namespace lopper
