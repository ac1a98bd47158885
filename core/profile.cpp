#include "core/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/backend.h"

namespace lopper {

namespace {

class Table {
 public:
  static Table& get() {
    static Table t;
    return t;
  }
  void add(std::string op, double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& e = rows_[std::move(op)];
    e.first += seconds;
    e.second += 1;
  }
  ~Table() {
    if (rows_.empty()) return;
    std::vector<std::pair<std::string, std::pair<double, long long>>> rows(rows_.begin(), rows_.end());
    std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
    double total = 0;
    for (auto& r : rows) total += r.second.first;
    std::fprintf(stderr, "LOPPER_PROFILE: %.3f s in backend calls\n%-28s %10s %6s %8s %10s\n", total, "op", "seconds",
                 "share", "calls", "us/call");
    for (auto& [name, e] : rows)
      std::fprintf(stderr, "%-28s %10.4f %5.1f%% %8lld %10.1f\n", name.c_str(), e.first, 100 * e.first / total,
                   e.second, 1e6 * e.first / e.second);
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::pair<double, long long>> rows_;
};

}  // namespace

bool profiling() {
  static const bool on = std::getenv("LOPPER_PROFILE") != nullptr;
  return on;
}

void ProfileScope::start() {
  if (dev_.is_cuda()) cuda::synchronize();
  t0_ = std::chrono::steady_clock::now();
}

void ProfileScope::stop() {
  if (dev_.is_cuda()) cuda::synchronize();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  Table::get().add(detail_ ? std::string(name_) + "." + detail_ : std::string(name_), s);
}

}  // namespace lopper
