// Row selection shared by the CPU's top-k mask (core/ops' topk_mask) and the pruned
// attention kernel (core/sparse_attention): which k entries of a row come first in
// kernels::ranks_before's order (larger first, equal values by lower index), the order the
// CUDA kernel ranks by too.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>

namespace lopper::cpu {

// Writes the indices of the k largest entries of x[0, n) (0 <= k <= n), ascending, to kept;
// returns k. scratch holds n values. The k-th largest value is found by nth_element on a
// copy; then every larger entry and the first equal ones up to k are taken.
template <class T>
int64_t top_k_indices(const T* x, int64_t n, int64_t k, T* scratch, int64_t* kept) {
  if (k <= 0) return 0;
  std::copy(x, x + n, scratch);
  std::nth_element(scratch, scratch + (k - 1), scratch + n, std::greater<T>());
  const T kth = scratch[k - 1];
  int64_t ties = k, m = 0;
  for (int64_t j = 0; j < n; ++j) ties -= x[j] > kth;
  for (int64_t j = 0; j < n; ++j)
    if (x[j] > kth || (x[j] == kth && ties-- > 0)) kept[m++] = j;
  return m;
}

}  // namespace lopper::cpu
