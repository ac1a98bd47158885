// Versions of Lopper and of the libraries it was built with, for config.resolved.json.
#pragma once
#include <map>
#include <string>

namespace lopper {

std::string version();     // project version
std::string git_commit();  // commit the build was configured at ("unknown" outside git)
std::map<std::string, std::string> library_versions();

}  // namespace lopper
