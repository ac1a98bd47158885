// Build and library versions.
#include "core/version.h"

#include <dnnl.h>
#include <sleef.h>

#include "core/backend.h"

#ifndef LOPPER_VERSION
#define LOPPER_VERSION "unknown"
#endif
#ifndef LOPPER_GIT_COMMIT
#define LOPPER_GIT_COMMIT "unknown"
#endif

namespace lopper {

std::string version() { return LOPPER_VERSION; }
std::string git_commit() { return LOPPER_GIT_COMMIT; }

std::map<std::string, std::string> library_versions() {
  const dnnl_version_t* v = dnnl_version();
  std::map<std::string, std::string> out;
  out["onednn"] = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  out["sleef"] = std::to_string(SLEEF_VERSION_MAJOR) + "." + std::to_string(SLEEF_VERSION_MINOR) + "." +
                 std::to_string(SLEEF_VERSION_PATCHLEVEL);
  out["compiler"] = "gcc " __VERSION__;
#ifdef LOPPER_WITH_CUDA
  out["cuda_backend"] = cuda::available() ? "built, device present" : "built, no device";
#else
  out["cuda_backend"] = "not built";
#endif
  return out;
}

}  // namespace lopper
