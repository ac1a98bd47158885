// Progress of a long loop: a redrawn bar on a terminal, plain periodic lines otherwise
// (logs, CI). Not a logger: metrics go to metrics.jsonl through the runner.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace lopper::trainers {

class Progress {
 public:
  Progress(std::string label, int64_t total, int64_t log_every);
  // Called after each step; prints when due. extra (" heads 40.2") is printed after the lr.
  void update(int64_t step, double loss, double lr, int64_t examples, const std::string& extra = "");
  void note(const std::string& line);  // a line that must not be overwritten by the bar
  void finish();

 private:
  std::string label_;
  int64_t total_, log_every_, start_step_ = -1, examples_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point t0_, last_draw_;
};

std::string format_duration(double seconds);

}  // namespace lopper::trainers
