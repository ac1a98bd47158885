// The backward engine: accumulation, shared subgraphs, no-grad, graph freeing.
#include <gtest/gtest.h>

#include "autograd/functions.h"

using namespace lopper;

TEST(Engine, DiamondGraphAccumulates) {
  Variable x(Tensor::from_vector<double>({3.0}, {1}), true);
  Variable a = ag::mul(x, x);        // x^2
  Variable b = ag::scale(x, 4.0);    // 4x
  Variable y = ag::add(a, ag::mul(a, b));  // x^2 + 4x^3
  ag::sum_all(y).backward();
  EXPECT_DOUBLE_EQ(x.grad().item<double>(), 2 * 3.0 + 12 * 9.0);
}

TEST(Engine, LeafGradientsAccumulateAcrossBackwardCalls) {
  Variable x(Tensor::from_vector<double>({1.0, 2.0}, {2}), true);
  ag::sum_all(ag::scale(x, 3.0)).backward();
  ag::sum_all(ag::scale(x, 3.0)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{6.0, 6.0}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Engine, LeafGradientsDoNotAlias) {
  // add() passes gy through to both inputs; each leaf must own its gradient.
  Variable a(Tensor::zeros({2}), true), b(Tensor::zeros({2}), true);
  ag::sum_all(ag::add(a, b)).backward();
  EXPECT_FALSE(a.grad().shares_storage(b.grad()));
}

TEST(Engine, NoGradRecordsNothing) {
  Variable x(Tensor::ones({2}), true);
  {
    NoGradGuard ng;
    Variable y = ag::exp(x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  EXPECT_TRUE(ag::exp(x).requires_grad());
  Variable c(Tensor::ones({2}), false);
  EXPECT_FALSE(ag::exp(c).requires_grad());
}

TEST(Engine, GraphIsFreedAfterBackward) {
  Variable x(Tensor::ones({1000}), true);
  std::weak_ptr<Node> node;
  int64_t before = cpu_allocator().stats().bytes_in_use;
  {
    Variable h = ag::tanh(ag::exp(x));
    node = h.grad_fn();
    Variable loss = ag::sum_all(h);
    EXPECT_FALSE(node.expired());
    loss.backward();
  }
  EXPECT_TRUE(node.expired());
  // Only x's gradient (1000 floats) stays.
  EXPECT_EQ(cpu_allocator().stats().bytes_in_use, before + 4000);
}

TEST(Engine, FrozenInputsGetNoGradient) {
  Variable w(Tensor::ones({3}), false), x(Tensor::ones({3}), true);
  ag::sum_all(ag::mul(w, x)).backward();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_TRUE(x.grad().defined());
}

TEST(Engine, NonScalarOutputNeedsAGradient) {
  Variable x(Tensor::ones({3}), true);
  EXPECT_THROW(ag::exp(x).backward(), Error);
  Variable y = ag::exp(x);
  y.backward(Tensor::ones({3}));
  EXPECT_NEAR(x.grad().to_vector<float>()[0], std::exp(1.0f), 1e-6);
}
