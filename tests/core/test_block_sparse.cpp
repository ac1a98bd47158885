// The block-sparse matmul (core/block_sparse.h) against the dense matmul of the same masked
// weight, and the BSR form against the blocks it was built from.
#include <gtest/gtest.h>

#include <cmath>

#include "core/block_sparse.h"
#include "core/ops.h"

using namespace lopper;

namespace {
// A (rows, cols) weight with N(0, 1/cols) entries (a trained layer's scale, outputs of order
// one, so that 1e-5 measures the summation order and not the size of the sums) whose (br, bc) blocks are kept with probability
// `keep` (zeroed otherwise); the kept-block pattern goes to *kept, row-major over blocks.
Tensor block_masked_weight(int64_t rows, int64_t cols, int64_t br, int64_t bc, double keep, uint64_t seed,
                           std::vector<int>* kept = nullptr) {
  Generator g(seed);
  Tensor w = normal({rows, cols}, 0.0, 1.0 / std::sqrt(static_cast<double>(cols)), g);
  Tensor m = bernoulli({rows / br, 1, cols / bc, 1}, keep, g);
  if (kept) {
    kept->clear();
    for (float v : m.to_vector<float>()) kept->push_back(v != 0.0f);
  }
  return mul(w.view({rows / br, br, cols / bc, bc}), m).contiguous().view({rows, cols});
}

// x (..., K) · wᵀ + b through the dense oneDNN GEMM.
Tensor dense_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor y = matmul(x.reshape({-1, w.size(1)}), w, false, true);
  if (b.defined()) y = add(y, b);
  Shape s = x.shape();
  s.back() = w.size(0);
  return y.view(s);
}

void expect_close(const Tensor& a, const Tensor& b, double tol) {
  ASSERT_EQ(a.shape(), b.shape());
  auto av = a.to_vector<float>(), bv = b.to_vector<float>();
  for (size_t i = 0; i < av.size(); ++i) ASSERT_NEAR(av[i], bv[i], tol * (1.0 + std::abs(bv[i]))) << "at " << i;
}
}  // namespace

TEST(BlockSparse, KeepsExactlyTheNonZeroBlocksInOrder) {
  for (auto [br, bc] : {std::pair<int64_t, int64_t>{32, 32}, {16, 16}, {1, 1}, {8, 32}, {64, 1}}) {
    std::vector<int> kept;
    Tensor w = block_masked_weight(64, 96, br, bc, 0.4, 7, &kept);
    BlockSparseMatrix s = to_block_sparse(w, br, bc);
    int64_t nbc = 96 / bc, expected = 0;
    ASSERT_EQ(s.row_start.size(), static_cast<size_t>(64 / br + 1));
    for (int64_t r = 0; r < 64 / br; ++r) {
      std::vector<int64_t> cols;
      for (int64_t c = 0; c < nbc; ++c)
        if (kept[r * nbc + c]) cols.push_back(c);
      ASSERT_EQ(s.row_start[r + 1] - s.row_start[r], static_cast<int64_t>(cols.size())) << "block row " << r;
      for (size_t i = 0; i < cols.size(); ++i) EXPECT_EQ(s.block_col[s.row_start[r] + i], cols[i]);
      expected += static_cast<int64_t>(cols.size());
    }
    EXPECT_EQ(s.blocks(), expected);
    EXPECT_DOUBLE_EQ(s.density(), static_cast<double>(expected) / static_cast<double>((64 / br) * nbc));
    EXPECT_DOUBLE_EQ(block_density(w, br, bc), s.density());
    // Each stored block is its weight block, transposed.
    auto wv = w.to_vector<float>();
    for (int64_t r = 0; r < 64 / br; ++r)
      for (int64_t i = s.row_start[r]; i < s.row_start[r + 1]; ++i)
        for (int64_t k = 0; k < bc; ++k)
          for (int64_t n = 0; n < br; ++n)
            ASSERT_EQ(s.values[(i * bc + k) * br + n], wv[(r * br + n) * 96 + s.block_col[i] * bc + k]);
  }
}

// Batch 1 and 32 of 25-token sequences (M = 25 and 800: one partial token tile, and many
// tiles with a tail), at the block shapes the movement stage uses, with and without bias.
TEST(BlockSparse, EqualsTheDenseMatmulOfTheMaskedWeight) {
  Generator g(3);
  for (int64_t batch : {1, 2, 32})  // 25, 50 (two tiles of 25) and 800 tokens
    for (auto [br, bc] : {std::pair<int64_t, int64_t>{32, 32}, {16, 16}, {1, 1}, {32, 384}})
      for (double keep : {0.1, 0.5, 1.0}) {
        SCOPED_TRACE(testing::Message() << "batch " << batch << " block " << br << "x" << bc << " keep " << keep);
        Tensor w = block_masked_weight(128, 384, br, bc, keep, 11);
        Tensor b = normal({128}, 0.0, 1.0, g);
        Tensor x = normal({batch, 25, 384}, 0.0, 1.0, g);
        BlockSparseMatrix s = to_block_sparse(w, br, bc);
        expect_close(block_sparse_linear(x, s, b), dense_linear(x, w, b), 1e-5);
        expect_close(block_sparse_linear(x, s, Tensor()), dense_linear(x, w, Tensor()), 1e-5);
        // The fused activation is the op after the kernel, bit for bit.
        EXPECT_EQ(max_abs_diff(block_sparse_linear(x, s, b, UnaryOp::gelu), gelu(block_sparse_linear(x, s, b))), 0.0);
      }
}

TEST(BlockSparse, AnAllZeroWeightGivesTheBias) {
  Tensor w = Tensor::zeros({64, 32});
  Tensor b = Tensor::arange(64).to(DType::f32);
  BlockSparseMatrix s = to_block_sparse(w, 32, 32);
  EXPECT_EQ(s.blocks(), 0);
  Tensor x = Tensor::ones({3, 32});
  expect_close(block_sparse_linear(x, s, b), add(Tensor::zeros({3, 64}), b), 0.0);
}

TEST(BlockSparse, BadInputIsNamed) {
  Tensor w = Tensor::ones({48, 40});
  try {
    to_block_sparse(w, 32, 32);
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block (32, 32) does not divide the weight (48, 40)"), std::string::npos)
        << e.what();
  }
  BlockSparseMatrix s = to_block_sparse(w, 16, 8);
  EXPECT_THROW(block_sparse_linear(Tensor::ones({2, 48}), s, Tensor()), Error);
  EXPECT_THROW(block_sparse_linear(Tensor::ones({2, 40}), s, Tensor::ones({40})), Error);
}
