// Finite-difference checks of every differentiable function, in double precision,
// including broadcasting and non-contiguous (transposed, sliced) inputs.
#include <gtest/gtest.h>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "../op_domains.h"

using namespace lopper;
using VS = std::vector<Variable>;

namespace {
uint64_t g_seed = 100;
Variable rnd(const Shape& s, bool grad = true, double lo = -2, double hi = 2) {
  Generator g(g_seed++);
  return Variable(uniform(s, lo, hi, g, DType::f64), grad);
}
// A non-contiguous leaf: the transpose of a (s[1], s[0]) tensor.
Variable rnd_t(const Shape& s) {
  Generator g(g_seed++);
  return Variable(uniform({s[1], s[0]}, -2, 2, g, DType::f64).transpose(0, 1), true);
}

void expect_grad_ok(const std::function<Variable(const VS&)>& f, const VS& in, double tol = 1e-6) {
  GradcheckResult r = gradcheck(f, in, 1e-6, tol);
  EXPECT_TRUE(r.ok) << r.report;
  EXPECT_LT(r.max_error, tol);
}
}  // namespace

// Every op of LOPPER_UNARY_OPS, on its domain (tests/op_domains.h), contiguous and transposed.
TEST(Gradcheck, UnaryOps) {
  for (const kernels::UnaryOpInfo& u : kernels::kUnaryOps) {
    SCOPED_TRACE(u.name);
    const test::UnaryDomain d = test::unary_domain(u.op);
    auto f = [&](const VS& v) { return ag::unary(u.op, v[0], d.p); };
    expect_grad_ok(f, {rnd({2, 3}, true, d.lo, d.hi)});
    Generator g(g_seed++);
    expect_grad_ok(f, {Variable(uniform({4, 3}, d.lo, d.hi, g, DType::f64).transpose(0, 1), true)});
  }
  // The generated wrappers pass their scalars through.
  Variable x = rnd({5});
  EXPECT_EQ(max_abs_diff(ag::clamp(x, -1, 1).data(), ag::unary(UnaryOp::clamp, x, {-1, 1}).data()), 0.0);
  EXPECT_EQ(max_abs_diff(ag::scale(x, -1.5).data(), scale(x.data(), -1.5)), 0.0);
}

// Every op of LOPPER_BINARY_OPS, with broadcasting both ways and a transposed input.
TEST(Gradcheck, BinaryOpsWithBroadcasting) {
  for (const kernels::BinaryOpInfo& b : kernels::kBinaryOps) {
    SCOPED_TRACE(b.name);
    auto f = [&](const VS& v) { return ag::binary(b.op, v[0], v[1]); };
    expect_grad_ok(f, {rnd_t({3, 4}), rnd({4}, true, test::kBinaryBLo, test::kBinaryBHi)});
    expect_grad_ok(f, {rnd({2, 1, 3}), rnd({4, 1}, true, test::kBinaryBLo, test::kBinaryBHi)});
  }
  // The same variable on both sides.
  expect_grad_ok([](const VS& v) { return ag::mul(v[0], v[0]); }, {rnd({3})});
}

TEST(Gradcheck, ShapeOps) {
  expect_grad_ok([](const VS& v) { return ag::reshape(v[0], {6, 2}); }, {rnd_t({3, 4})});
  expect_grad_ok([](const VS& v) { return ag::permute(ag::reshape(v[0], {2, 3, 2}), {2, 0, 1}); }, {rnd({3, 4})});
  expect_grad_ok([](const VS& v) { return ag::slice(v[0], 1, 1, 4, 2); }, {rnd({3, 5})});
  expect_grad_ok([](const VS& v) { return ag::select(v[0], 0, 2); }, {rnd({3, 5})});
  expect_grad_ok([](const VS& v) { return ag::expand(ag::unsqueeze(v[0], 0), {3, 4}); }, {rnd({4})});
  expect_grad_ok([](const VS& v) { return ag::squeeze(v[0], 1); }, {rnd({3, 1})});
  expect_grad_ok([](const VS& v) { return ag::contiguous(ag::transpose(v[0], 0, 1)); }, {rnd({3, 4})});
  expect_grad_ok([](const VS& v) { return ag::concat({v[0], v[1], v[0]}, 1); }, {rnd({2, 3}), rnd_t({2, 2})});
}

TEST(Gradcheck, Reductions) {
  expect_grad_ok([](const VS& v) { return ag::sum(v[0], 1); }, {rnd_t({3, 4})});
  expect_grad_ok([](const VS& v) { return ag::mean(v[0], 0, true); }, {rnd({3, 4})});
  expect_grad_ok([](const VS& v) { return ag::sum_all(v[0]); }, {rnd({3, 4})});
  expect_grad_ok([](const VS& v) { return ag::mean_all(v[0]); }, {rnd_t({3, 4})});
  expect_grad_ok([](const VS& v) { return ag::max(v[0], -1); }, {rnd({3, 4})});
}

TEST(Gradcheck, SoftmaxLayerNormMatmul) {
  expect_grad_ok([](const VS& v) { return ag::softmax(v[0]); }, {rnd_t({3, 5})});
  expect_grad_ok([](const VS& v) { return ag::log_softmax(v[0]); }, {rnd({2, 3, 5})});
  expect_grad_ok([](const VS& v) { return ag::layer_norm(v[0], v[1], v[2], 1e-5); },
                 {rnd_t({4, 6}), rnd({6}), rnd({6})});
  expect_grad_ok([](const VS& v) { return ag::matmul(v[0], v[1]); }, {rnd({3, 4}), rnd_t({4, 5})});
  expect_grad_ok([](const VS& v) { return ag::matmul(v[0], v[1], true, true); }, {rnd({4, 3}), rnd({5, 4})});
  expect_grad_ok([](const VS& v) { return ag::matmul(v[0], v[1], false, true); }, {rnd({2, 3, 3, 4}), rnd({2, 3, 5, 4})});
  expect_grad_ok([](const VS& v) { return ag::matmul(v[0], v[1], true, false); }, {rnd({2, 4, 3}), rnd({2, 4, 5})});
  expect_grad_ok([](const VS& v) { return ag::linear(v[0], v[1], v[2]); }, {rnd({2, 3, 4}), rnd({5, 4}), rnd({5})});
}

TEST(Gradcheck, IndexingWhereDropout) {
  Tensor ids = Tensor::from_vector<int64_t>({1, 3, 1, 0}, {2, 2});
  expect_grad_ok([ids](const VS& v) { return ag::embedding(v[0], ids); }, {rnd({4, 3})});
  Tensor idx = Tensor::from_vector<int32_t>({2, 0, 2}, {3});
  expect_grad_ok([idx](const VS& v) { return ag::index_select(v[0], 1, idx); }, {rnd_t({2, 4})});
  Tensor gi = Tensor::from_vector<int64_t>({0, 2, 2, 1, 1, 1}, {2, 3});
  expect_grad_ok([gi](const VS& v) { return ag::gather(v[0], 1, gi); }, {rnd({2, 4})});
  expect_grad_ok([](const VS& v) { return ag::topk(v[0], 2, -1).first; }, {rnd({3, 5})});
  Tensor cond = Tensor::from_vector<uint8_t>({1, 0, 0, 1, 1, 0}, {2, 3});
  expect_grad_ok([cond](const VS& v) { return ag::where(cond, v[0], v[1]); }, {rnd({2, 3}), rnd({3})});
  // A small fill value: a large one would dominate L and its rounding would swamp h.
  expect_grad_ok([cond](const VS& v) { return ag::masked_fill(v[0], cond, -3.0); }, {rnd_t({2, 3})});
  // A fixed generator state per call makes the dropout mask part of f.
  expect_grad_ok([](const VS& v) {
    Generator g(5);
    return ag::dropout(v[0], 0.3, true, g);
  }, {rnd({4, 5})});
}

TEST(Gradcheck, DetectsAWrongGradient) {
  // A deliberately wrong backward (2x) must be reported, so the checks above can fail.
  auto bad = [](const VS& v) {
    Tensor y = lopper::exp(v[0].data());
    return make_result(y, {v[0]}, "bad_exp", [y](const Tensor& gy) -> std::vector<Tensor> {
      return {lopper::scale(lopper::mul(gy, y), 2.0)};
    });
  };
  GradcheckResult r = gradcheck(bad, {rnd({3})});
  EXPECT_FALSE(r.ok);
  EXPECT_GT(r.max_error, 0.1);
}
