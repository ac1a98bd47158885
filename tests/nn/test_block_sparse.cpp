// nn::BlockSparseScope on the tiny fixture BERT: which Linears switch, and that the model's
// logits through the block-sparse matmul equal the dense ones.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "core/panel_linear.h"
#include "nn/block_sparse.h"
#include "nn/layers.h"
#include "tests/pruning/tiny_model.h"

using namespace lopper;

namespace {
// Zeroes the (b, b) blocks of w whose flat block index is not a multiple of `keep_every`.
void zero_blocks(Variable& w, int64_t b, int64_t keep_every) {
  int64_t rows = w.size(0), cols = w.size(1), nb = (rows / b) * (cols / b);
  std::vector<float> m(nb);
  for (int64_t i = 0; i < nb; ++i) m[i] = i % keep_every == 0 ? 1.0f : 0.0f;
  Tensor mask = Tensor::from_vector(m, {rows / b, 1, cols / b, 1});
  Tensor data = w.data();
  data.copy_(mul(data.view({rows / b, b, cols / b, b}), mask).view({rows, cols}));
}
}  // namespace

TEST(BlockSparseScope, SwitchesTheSparseLinearsAndKeepsTheLogits) {
  Loaded t;
  auto linears = t.model.named_modules_of_type<nn::Linear>();
  std::map<std::string, nn::Linear*> by_name(linears.begin(), linears.end());
  const std::string l0 = "bert.encoder.layer.0.";
  zero_blocks(by_name.at(l0 + "attention.self.query")->weight, 16, 4);  // 1 of 4 16x16 blocks: 0.25
  zero_blocks(by_name.at(l0 + "intermediate.dense")->weight, 8, 2);     // 8x8 only: 16x16 keeps all
  zero_blocks(by_name.at(l0 + "output.dense")->weight, 16, 2);          // 0.5 at 16x16
  Tensor dense = t.logits();

  nn::BlockSparseOptions o;
  o.max_density = 0.5;
  o.dense_max_rows = 0;  // dense weights stay on oneDNN (packing them: the next tests)
  o.dense_panels = nn::BlockSparseOptions::Panels::never;
  o.blocks = {{16, 16}, {8, 8}};
  {
    nn::BlockSparseScope scope(t.model, o);
    ASSERT_EQ(scope.layers().size(), 3u) << scope.describe();
    std::map<std::string, nn::BlockSparseLayer> got;
    for (const auto& l : scope.layers()) got[l.name] = l;
    EXPECT_DOUBLE_EQ(got.at(l0 + "attention.self.query").density, 0.25);
    EXPECT_EQ(got.at(l0 + "attention.self.query").block_rows, 16);
    EXPECT_EQ(got.at(l0 + "intermediate.dense").block_rows, 8);
    EXPECT_DOUBLE_EQ(got.at(l0 + "intermediate.dense").density, 0.5);
    EXPECT_DOUBLE_EQ(got.at(l0 + "output.dense").density, 0.5);
    EXPECT_TRUE(by_name.at(l0 + "output.dense")->block_sparse != nullptr);
    EXPECT_TRUE(by_name.at(l0 + "attention.self.key")->block_sparse == nullptr);
    EXPECT_TRUE(allclose(t.logits(), dense, 1e-5, 1e-6));

    // With gradients recorded the dense path runs, so the weight still gets its gradient.
    const nn::StateDict& r = t.ref;
    Variable y = t.model.forward(r.at("input_ids"), r.at("token_type_ids"), r.at("attention_mask"));
    ag::sum_all(y).backward();
    EXPECT_TRUE(by_name.at(l0 + "output.dense")->weight.grad().defined());
  }
  for (auto& [n, lin] : linears) EXPECT_TRUE(lin->block_sparse == nullptr) << n;
  o.max_density = 0.0;
  EXPECT_TRUE(nn::BlockSparseScope(t.model, o).layers().empty());
}

TEST(BlockSparseScope, PacksDenseWeightsForShortInputsOnlyWithoutPanels) {
  Loaded t;
  auto linears = t.model.named_modules_of_type<nn::Linear>();
  Tensor dense = t.logits();
  const nn::StateDict& r = t.ref;
  const int64_t rows = r.at("input_ids").numel();  // tokens in the fixture's batch
  nn::BlockSparseOptions o;
  o.blocks = {{16, 16}, {8, 8}};
  o.dense_max_rows = rows;
  o.dense_panels = nn::BlockSparseOptions::Panels::never;  // as on CPUs with AVX-512
  {
    nn::BlockSparseScope scope(t.model, o);
    EXPECT_EQ(scope.sparse_count(), 0);
    int64_t packed = 0;
    for (const auto& l : scope.layers()) packed += l.dense && l.density == 1.0;
    EXPECT_EQ(packed, static_cast<int64_t>(scope.layers().size())) << scope.describe();
    EXPECT_GT(packed, 0);
    EXPECT_NE(scope.describe().find("packed for inputs of at most " + std::to_string(rows) + " rows"), std::string::npos)
        << scope.describe();
    // The classifier's input is one row per example, the encoder's one per token: all packed.
    EXPECT_TRUE(allclose(t.logits(), dense, 1e-5, 1e-6));
  }
  {
    // Up to dense_max_rows rows through the packed kernel, above it through oneDNN (bitwise
    // each one's own result).
    nn::Linear* lin = linears.front().second;
    o.dense_max_rows = 4;
    nn::BlockSparseScope scope(t.model, o);
    ASSERT_TRUE(lin->block_sparse != nullptr);
    Generator g(5);
    NoGradGuard ng;
    for (int64_t m : {1, 4, 5, 9}) {
      Tensor x = normal({m, lin->weight.size(1)}, 0, 1, g);
      Tensor want = m <= 4 ? block_sparse_linear(x, *lin->block_sparse, lin->bias.data())
                           : add(matmul(x, lin->weight.data(), false, true), lin->bias.data());
      EXPECT_EQ(max_abs_diff(lin->forward(Variable(x)).data(), want), 0.0) << m << " rows";
    }
  }
  for (auto& [n, lin] : linears) {
    EXPECT_TRUE(lin->block_sparse == nullptr) << n;
    EXPECT_EQ(lin->block_sparse_max_rows, INT64_MAX) << n;
  }
  o.dense_max_rows = -1;
  EXPECT_THROW(nn::BlockSparseScope(t.model, o), Error);
}

TEST(BlockSparseScope, PacksDenseWeightsInPanelsForEveryInput) {
  if (!panel_linear_built()) GTEST_SKIP() << "built without the AVX2 tile";
  Loaded t;
  auto linears = t.model.named_modules_of_type<nn::Linear>();
  std::map<std::string, nn::Linear*> by_name(linears.begin(), linears.end());
  const std::string query = "bert.encoder.layer.0.attention.self.query";
  zero_blocks(by_name.at(query)->weight, 16, 4);  // block-sparse at 0.25: not in panels
  Tensor dense = t.logits();
  nn::BlockSparseOptions o;
  o.blocks = {{16, 16}};
  o.dense_panels = nn::BlockSparseOptions::Panels::always;
  {
    nn::BlockSparseScope scope(t.model, o);
    EXPECT_EQ(scope.sparse_count(), 1);
    // Every other Linear, the classifier too (no 16x16 block divides its 2 outputs).
    ASSERT_EQ(scope.layers().size(), linears.size()) << scope.describe();
    for (const auto& l : scope.layers()) {
      nn::Linear* lin = by_name.at(l.name);
      EXPECT_EQ(l.panels, l.name != query) << l.name;
      EXPECT_EQ(lin->panels != nullptr, l.name != query) << l.name;
      EXPECT_EQ(lin->block_sparse != nullptr, l.name == query) << l.name;  // no libxsmm copy of dense ones
    }
    EXPECT_NE(scope.describe().find(std::to_string(linears.size() - 1) + " dense ones packed in panels"),
              std::string::npos)
        << scope.describe();
    EXPECT_TRUE(allclose(t.logits(), dense, 1e-5, 1e-6));
    // Inputs of every length through the panels, bias and activation included, bitwise.
    nn::Linear* lin = by_name.at("bert.encoder.layer.0.intermediate.dense");
    Generator g(5);
    NoGradGuard ng;
    for (int64_t m : {1, 4, 100}) {
      Tensor x = normal({m, lin->weight.size(1)}, 0, 1, g);
      Tensor want = panel_linear(x, *lin->panels, lin->bias.data(), UnaryOp::gelu);
      EXPECT_EQ(max_abs_diff(lin->forward(Variable(x), UnaryOp::gelu).data(), want), 0.0) << m << " rows";
    }
  }
  for (auto& [n, lin] : linears) EXPECT_TRUE(lin->panels == nullptr && lin->block_sparse == nullptr) << n;
  // never: dense weights keep oneDNN (dense_max_rows 0), only the sparse one switches.
  o.dense_panels = nn::BlockSparseOptions::Panels::never;
  o.dense_max_rows = 0;
  EXPECT_EQ(nn::BlockSparseScope(t.model, o).layers().size(), 1u);
}
