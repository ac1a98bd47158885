// lopper::Error and the check macro used at every front door.
// Not a logging facility: the library throws, only apps catch and print.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lopper {

// what() is the message a user reads; where() the source line that threw ("file:line"),
// which apps print only with --verbose or in debug builds.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, std::string where = "")
      : std::runtime_error(message), where_(std::move(where)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

namespace detail {
template <class... Args>
[[noreturn]] void throw_error(const char* file, int line, Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str(), std::string(file) + ":" + std::to_string(line));
}
}  // namespace detail

}  // namespace lopper

// LOPPER_CHECK(cond, "[op] message ", value, ...): throws lopper::Error with context.
#define LOPPER_CHECK(cond, ...)                                       \
  do {                                                                \
    if (!(cond)) ::lopper::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define LOPPER_FAIL(...) ::lopper::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__)
