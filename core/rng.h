// Seeded, counter-based random numbers. A Generator is (seed, offset): each draw of n
// numbers takes the counters [offset, offset + n) and advances the offset, so element i
// gets the same value whatever the thread count or device. Dropout's backward regenerates
// its mask from the saved offset instead of storing it.
#pragma once
#include <cstdint>

namespace lopper {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves n counters and returns the first.
  uint64_t advance(uint64_t n) { uint64_t o = offset_; offset_ += n; return o; }
  // Host-side draws for small things (shuffles, init of scalars).
  uint64_t next_u64();
  double next_uniform();              // [0, 1)
  uint64_t next_below(uint64_t n);    // [0, n)

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace lopper
