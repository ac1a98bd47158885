// Progress bar and periodic lines.
#include "trainers/progress.h"

#include <unistd.h>

#include <cstdio>

namespace lopper::trainers {

std::string format_duration(double s) {
  char buf[32];
  long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

Progress::Progress(std::string label, int64_t total, int64_t log_every)
    : label_(std::move(label)), total_(total), log_every_(log_every), tty_(isatty(STDERR_FILENO) != 0),
      t0_(std::chrono::steady_clock::now()), last_draw_(t0_) {}

void Progress::update(int64_t step, double loss, double lr, int64_t examples, const std::string& extra) {
  if (start_step_ < 0) start_step_ = step - 1;
  examples_ += examples;
  auto now = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(now - t0_).count();
  bool due = tty_ ? std::chrono::duration<double>(now - last_draw_).count() > 0.2 || step == total_
                  : step % log_every_ == 0 || step == total_;
  if (!due) return;
  last_draw_ = now;
  double rate = examples_ / std::max(secs, 1e-9);
  double per_step = secs / static_cast<double>(step - start_step_);
  double left = per_step * static_cast<double>(total_ - step);
  if (tty_) {
    int width = 24, filled = static_cast<int>(width * step / std::max<int64_t>(total_, 1));
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld loss %.4f lr %.2e%s %.1f ex/s left %s   ", label_.c_str(), bar.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total_), loss, lr, extra.c_str(), rate,
                 format_duration(left).c_str());
  } else {
    std::fprintf(stderr, "%s step %lld/%lld loss %.4f lr %.2e%s %.1f ex/s elapsed %s left %s\n", label_.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total_), loss, lr, extra.c_str(), rate,
                 format_duration(secs).c_str(), format_duration(left).c_str());
  }
  std::fflush(stderr);
}

void Progress::note(const std::string& line) {
  std::fprintf(stderr, tty_ ? "\r\033[K%s\n" : "%s\n", line.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace lopper::trainers
