// Host-side draws from the counter-based generator.
#include "core/rng.h"

#include "core/kernels/random.h"

namespace lopper {

uint64_t Generator::next_u64() { return kernels::random_bits(seed_, advance(1)); }

double Generator::next_uniform() { return kernels::uniform01_f64(seed_, advance(1)); }

uint64_t Generator::next_below(uint64_t n) {
  // n < 2^53 in every use (shuffles), so a uniform double is exact enough.
  return static_cast<uint64_t>(next_uniform() * static_cast<double>(n));
}

}  // namespace lopper
