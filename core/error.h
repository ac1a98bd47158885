// lopper::Error and the check macro used at every front door.
// Not a logging facility: the library throws, only apps catch and print.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lopper {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
[[noreturn]] void throw_error(const char* file, int line, Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  os << " (" << file << ":" << line << ")";
  throw Error(os.str());
}
}  // namespace detail

}  // namespace lopper

// LOPPER_CHECK(cond, "[op] message ", value, ...): throws lopper::Error with context.
#define LOPPER_CHECK(cond, ...)                                       \
  do {                                                                \
    if (!(cond)) ::lopper::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define LOPPER_FAIL(...) ::lopper::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__)
