// The N:M-sparse matmul against the dense one (the same weights, zeros in place), at the
// batch sizes of both loops, for groups that keep fewer than n; packing refuses a group
// with more than n non-zeros.
#include <gtest/gtest.h>

#include "core/nm_sparse.h"
#include "core/ops.h"

using namespace lopper;

namespace {
// (rows, cols) with at most n non-zeros in every group of m (some groups fewer), seeded.
Tensor nm_weight(int64_t rows, int64_t cols, int64_t n, int64_t m, uint64_t seed) {
  Generator g(seed);
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += m) {
      int64_t keep = static_cast<int64_t>(g.next_below(static_cast<uint64_t>(n + 1)));  // 0..n
      for (int64_t k = 0; k < keep; ++k) w[r * cols + c0 + static_cast<int64_t>(g.next_below(m))] = static_cast<float>(g.next_uniform() - 0.5);
    }
  return Tensor::from_vector(w, {rows, cols});
}
}  // namespace

TEST(NmSparse, EqualsTheDenseMatmulAtEveryBatchSize) {
  for (auto [n, m] : {std::pair<int64_t, int64_t>{2, 4}, {1, 4}, {8, 32}, {3, 8}}) {
    const int64_t rows = 48, cols = 128;
    Tensor w = nm_weight(rows, cols, n, m, 10 * n + m);
    NmSparseMatrix s = to_nm_sparse(w, n, m);
    EXPECT_EQ(max_abs_diff(nm_dense(s), w), 0.0);
    EXPECT_EQ(s.bytes(), rows * cols / m * n * 5);
    Generator g(1);
    Tensor bias = normal({rows}, 0, 1, g);
    for (int64_t batch : {1, 3, 8, 33}) {
      Tensor x = normal({batch, 2, cols}, 0, 1, g);
      Tensor want = add(matmul(x.view({batch * 2, cols}), w, false, true), bias).view({batch, 2, rows});
      Tensor got = nm_sparse_linear(x, s, bias);
      ASSERT_EQ(got.shape(), want.shape());
      EXPECT_LT(max_abs_diff(got, want), 1e-4) << n << ":" << m << " batch " << batch;
    }
  }
}

TEST(NmSparse, RefusesAGroupWithMoreThanN) {
  Tensor w = nm_weight(4, 16, 2, 4, 3);
  std::vector<float> v = w.to_vector<float>();
  v[4 + 0] = v[4 + 1] = v[4 + 2] = 1.0f;  // row 0, columns 4..7: three non-zeros
  try {
    to_nm_sparse(Tensor::from_vector(v, {4, 16}), 2, 4);
    ADD_FAILURE() << "packed a 3:4 group as 2:4";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 0, columns 4..7 hold more than 2 non-zeros"), std::string::npos) << e.what();
  }
}
