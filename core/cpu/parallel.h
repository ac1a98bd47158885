// OpenMP helpers for the CPU backend: split [0, n) into contiguous chunks, one per thread,
// only when the work is large enough to pay for waking the threads.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace lopper::cpu {

// Calls f(begin, end) over [0, n); `grain` is the smallest chunk worth a thread.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    f(begin, end);
  }
}

}  // namespace lopper::cpu
