// Every CUDA op against the CPU backend (ggml's test-backend-ops idea): same inputs, both
// devices, compare. Skips with a message where no device is present or CUDA is not built.
#include <gtest/gtest.h>

#include "../op_domains.h"
#include "autograd/functions.h"
#include "core/backend.h"
#include "core/ops.h"
#include "nn/losses.h"

using namespace lopper;

namespace {

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::available())
      GTEST_SKIP() << "no CUDA device (or a CPU-only build): CUDA ops are compared with the CPU only where a GPU is present";
  }
  Device gpu = Device::cuda(0);
};

Tensor randn(const Shape& s, uint64_t seed, DType t = DType::f32) {
  Generator g(seed);
  return normal(s, 0.0, 1.0, g, t);
}

// f32 kernels differ from the CPU only in the order of sums (cuBLAS) and in libm's last
// bits, so 1e-5 absolute on unit-scale values; indices and copies must match exactly.
void expect_close(const Tensor& cpu_result, const Tensor& gpu_result, double tol = 1e-5) {
  ASSERT_EQ(cpu_result.shape(), gpu_result.shape());
  ASSERT_TRUE(gpu_result.device().is_cuda());
  EXPECT_LE(max_abs_diff(cpu_result, gpu_result.to(Device::cpu())), tol);
}

}  // namespace

TEST_F(CudaOps, TransfersAndStridedCopies) {
  Tensor x = randn({4, 5, 6}, 1);
  Tensor g = x.to(gpu);
  EXPECT_EQ(max_abs_diff(x, g.to(Device::cpu())), 0.0);
  expect_close(x.permute({2, 0, 1}).contiguous(), g.permute({2, 0, 1}).contiguous(), 0.0);
  expect_close(x.to(DType::bf16).to(DType::f32), g.to(DType::bf16).to(DType::f32), 0.0);
  Tensor z = Tensor::zeros({4, 6}, DType::f32, gpu);
  z.slice(1, 2, 4).copy_(Tensor::ones({4, 2}));  // host to strided device
  expect_close([] { Tensor c = Tensor::zeros({4, 6}); c.slice(1, 2, 4).fill_(1); return c; }(), z, 0.0);
}

// Every op of LOPPER_UNARY_OPS on its domain (tests/op_domains.h), from a strided input.
TEST_F(CudaOps, UnaryForwardAndBackward) {
  Tensor gy = randn({19, 37}, 3);
  for (const kernels::UnaryOpInfo& u : kernels::kUnaryOps) {
    SCOPED_TRACE(u.name);
    const test::UnaryDomain d = test::unary_domain(u.op);
    Generator g(2);
    Tensor x = uniform({37, 19}, d.lo, d.hi, g).transpose(0, 1);
    expect_close(unary(u.op, x, d.p), unary(u.op, x.to(gpu), d.p));
    expect_close(unary_backward(u.op, x, gy, d.p), unary_backward(u.op, x.to(gpu), gy.to(gpu), d.p));
  }
}

TEST_F(CudaOps, BiasActForEveryActivation) {
  Tensor y = randn({33, 21}, 8), bias = randn({21}, 9);
  for (const kernels::UnaryOpInfo& u : kernels::kUnaryOps) {
    if (u.scalars > 0) continue;
    SCOPED_TRACE(u.name);
    Tensor a = y.clone(), b = y.to(gpu);
    bias_act_(a, bias, u.op);
    bias_act_(b, bias.to(gpu), u.op);
    expect_close(a, b);
  }
}

TEST_F(CudaOps, BinaryCompareWhere) {
  Tensor a = randn({8, 1, 5}, 4), b = add_scalar(abs(randn({3, 1}, 5)), test::kBinaryBLo);
  for (const kernels::BinaryOpInfo& info : kernels::kBinaryOps) {
    const BinaryOp op = info.op;
    SCOPED_TRACE(info.name);
    expect_close(binary(op, a, b), binary(op, a.to(gpu), b.to(gpu)));
    Tensor gy = randn({8, 3, 5}, 6);
    auto [ga, gb] = binary_backward(op, a, b, gy);
    auto [ga2, gb2] = binary_backward(op, a.to(gpu), b.to(gpu), gy.to(gpu));
    expect_close(ga, ga2);
    expect_close(gb, gb2);
  }
  EXPECT_EQ(gt(a, b).to_vector<uint8_t>(), gt(a.to(gpu), b.to(gpu)).to_vector<uint8_t>());
  Tensor mask = gt(a, Tensor::scalar(0.0));
  expect_close(where(mask, a, b), where(mask.to(gpu), a.to(gpu), b.to(gpu)), 0.0);
  expect_close(masked_fill(a, mask, -7), masked_fill(a.to(gpu), mask.to(gpu), -7), 0.0);
}

TEST_F(CudaOps, ReductionsRowsAndTopk) {
  Tensor x = randn({6, 7, 9}, 7);
  for (int64_t d : {0, 1, 2}) {
    expect_close(sum(x, d), sum(x.to(gpu), d));
    expect_close(mean(x, d, true), mean(x.to(gpu), d, true));
    auto [v, i] = max(x, d);
    auto [v2, i2] = max(x.to(gpu), d);
    expect_close(v, v2, 0.0);
    EXPECT_EQ(i.to_vector<int64_t>(), i2.to_vector<int64_t>());
  }
  expect_close(softmax(x), softmax(x.to(gpu)));
  expect_close(log_softmax(x), log_softmax(x.to(gpu)));
  Tensor y = softmax(x), gy = randn({6, 7, 9}, 8);
  expect_close(softmax_backward(y, gy, false), softmax_backward(y.to(gpu), gy.to(gpu), false));
  Tensor w = randn({9}, 9), b = randn({9}, 10);
  LayerNormOut c = layer_norm(x, w, b, 1e-12);
  LayerNormOut g = layer_norm(x.to(gpu), w.to(gpu), b.to(gpu), 1e-12);
  expect_close(c.y, g.y);
  LayerNormGrads cg = layer_norm_backward(x, w, gy, c.mean, c.rstd);
  LayerNormGrads gg = layer_norm_backward(x.to(gpu), w.to(gpu), gy.to(gpu), g.mean, g.rstd);
  expect_close(cg.gx, gg.gx, 1e-4);
  expect_close(cg.gw, gg.gw, 1e-4);
  expect_close(cg.gb, gg.gb, 1e-4);
  auto [tv, ti] = topk(x, 3, 1);
  auto [tv2, ti2] = topk(x.to(gpu), 3, 1);
  expect_close(tv, tv2, 0.0);
  EXPECT_EQ(ti.to_vector<int64_t>(), ti2.to_vector<int64_t>());
  std::vector<int64_t> ks(6 * 7);
  for (size_t r = 0; r < ks.size(); ++r) ks[r] = static_cast<int64_t>(r % 10);
  Tensor k = Tensor::from_vector<int64_t>(ks, {6, 7});
  expect_close(topk_mask(x, k), topk_mask(x.to(gpu), k.to(gpu)), 0.0);
}

TEST_F(CudaOps, IndexingAndConcat) {
  Tensor w = randn({11, 6}, 11);
  Tensor ids = Tensor::from_vector<int64_t>({3, 0, 10, 3, 7, 3}, {2, 3});
  expect_close(embedding(w, ids), embedding(w.to(gpu), ids.to(gpu)), 0.0);
  Tensor gy = randn({2, 3, 6}, 12);
  // Each row's gradient adds its positions in the CPU's order: equal bit for bit.
  expect_close(embedding_backward(ids, gy, 11), embedding_backward(ids.to(gpu), gy.to(gpu), 11), 0.0);
  Tensor many = Tensor::from_vector(std::vector<int64_t>{5, 9, 5, 0, 9, 9, 2, 5, 7, 7, 5, 1}, {3, 4});
  Tensor g2 = randn({3, 4, 200}, 31);
  expect_close(embedding_backward(many, g2, 10), embedding_backward(many.to(gpu), g2.to(gpu), 10), 0.0);
  Tensor gi = Tensor::from_vector<int64_t>({0, 5, 5, 1, 2, 2}, {2, 3});
  Tensor x = randn({2, 6}, 13);
  expect_close(gather(x, 1, gi), gather(x.to(gpu), 1, gi.to(gpu)), 0.0);
  expect_close(scatter_add({2, 6}, 1, gi, x.slice(1, 0, 3).contiguous()),
               scatter_add({2, 6}, 1, gi.to(gpu), x.slice(1, 0, 3).contiguous().to(gpu)));
  expect_close(concat({x, w.slice(0, 0, 2)}, 1), concat({x.to(gpu), w.slice(0, 0, 2).to(gpu)}, 1), 0.0);
  EXPECT_THROW(embedding(w.to(gpu), Tensor::from_vector<int64_t>({11}, {1}).to(gpu)), Error);
}

TEST_F(CudaOps, MatmulAllLayouts) {
  Tensor a = randn({3, 2, 17, 33}, 14), b = randn({3, 2, 33, 9}, 15), w = randn({9, 33}, 16);
  expect_close(matmul(a, b), matmul(a.to(gpu), b.to(gpu)), 1e-4);
  expect_close(matmul(a, w, false, true), matmul(a.to(gpu), w.to(gpu), false, true), 1e-4);
  Tensor q = randn({2, 5, 4, 8}, 17).permute({0, 2, 1, 3});
  expect_close(matmul(q, q, false, true), matmul(q.to(gpu), q.to(gpu), false, true), 1e-4);
  Tensor d = randn({5, 7}, 18, DType::f64);
  expect_close(matmul(d, d, true, false), matmul(d.to(gpu), d.to(gpu), true, false), 1e-12);
}

TEST_F(CudaOps, RandomDropoutAdamWMatchTheCpuBitForBit) {
  Generator g1(5), g2(5);
  expect_close(normal({1000}, 0, 1, g1), normal({1000}, 0, 1, g2, DType::f32, gpu), 1e-6);
  expect_close(uniform({1000}, 0, 1, g1), uniform({1000}, 0, 1, g2, DType::f32, gpu), 0.0);
  Tensor x = randn({300}, 19);
  uint64_t o1 = 0, o2 = 0;
  expect_close(dropout(x, 0.3, g1, &o1), dropout(x.to(gpu), 0.3, g2, &o2), 0.0);
  Tensor p = randn({64}, 20), gr = randn({64}, 21), m = Tensor::zeros({64}), v = Tensor::zeros({64});
  Tensor pg = p.to(gpu), mg = m.to(gpu), vg = v.to(gpu);
  kernels::AdamWStep s{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.1f, 0.001f};
  adamw_step(s, p, gr, m, v);
  adamw_step(s, pg, gr.to(gpu), mg, vg);
  expect_close(p, pg, 1e-6);
}

TEST_F(CudaOps, AutogradStepOnTheDevice) {
  Generator g(3);
  Variable w(normal({4, 8}, 0, 0.1, g).to(gpu), true), x(normal({5, 8}, 0, 1, g).to(gpu));
  Tensor t = Tensor::from_vector<int64_t>({0, 1, 2, 3, 1}, {5}).to(gpu);
  Variable loss = nn::cross_entropy(ag::linear(x, w, Variable()), t);
  loss.backward();
  Variable wc(w.data().to(Device::cpu()), true), xc(x.data().to(Device::cpu()));
  Variable lc = nn::cross_entropy(ag::linear(xc, wc, Variable()), t.to(Device::cpu()));
  lc.backward();
  EXPECT_NEAR(loss.data().item<float>(), lc.data().item<float>(), 1e-5);
  expect_close(wc.grad(), w.grad(), 1e-5);
}

// At the sizes of a training step the CUDA kernels take other paths than on the small
// shapes above: reductions split the reduced dim into chunks, rows go to one warp each
// (rows longer than 32, not a multiple of 32), attention GEMMs use pointer arrays.
TEST_F(CudaOps, ReductionsAtTrainingSizes) {
  Tensor big = randn({300001}, 22);
  // A chunked sum differs from the CPU's in order only. Bound: a few ulps of the sum of
  // magnitudes (|error| <= depth * eps * sum|x| for both summation trees), 1e-7 * sum|x|.
  double magnitude = sum_all(abs(big)).item<double>();
  EXPECT_NEAR(sum_all(big).item<double>(), sum_all(big.to(gpu)).item<double>(), 1e-7 * magnitude);
  Tensor cols = randn({4096, 384}, 23);
  expect_close(sum(cols, 0), sum(cols.to(gpu), 0), 1e-3);  // 4096 unit terms: |sum| ~ 64
  expect_close(mean(cols, 0), mean(cols.to(gpu), 0), 1e-6);
  // Ties (small integers): max and min keep the first index, as the CPU does.
  Tensor ties = scale(randn({5000, 40}, 24), 3.0).to(DType::i64).to(DType::f32);
  for (int64_t d : {0, 1}) {
    auto [v, i] = max(ties, d);
    auto [v2, i2] = max(ties.to(gpu), d);
    expect_close(v, v2, 0.0);
    EXPECT_EQ(i.to_vector<int64_t>(), i2.to_vector<int64_t>());
    auto [w, j] = min(ties, d);
    auto [w2, j2] = min(ties.to(gpu), d);
    expect_close(w, w2, 0.0);
    EXPECT_EQ(j.to_vector<int64_t>(), j2.to_vector<int64_t>());
  }
}

TEST_F(CudaOps, RowsAtTrainingSizes) {
  for (int64_t n : {int64_t{7}, int64_t{128}, int64_t{384}, int64_t{1000}}) {
    SCOPED_TRACE(n);
    Tensor x = scale(randn({300, n}, 25), 3.0), gy = randn({300, n}, 26);
    expect_close(softmax(x), softmax(x.to(gpu)));
    expect_close(log_softmax(x), log_softmax(x.to(gpu)), 1e-4);
    Tensor y = softmax(x), ly = log_softmax(x);
    expect_close(softmax_backward(y, gy, false), softmax_backward(y.to(gpu), gy.to(gpu), false));
    expect_close(softmax_backward(ly, gy, true), softmax_backward(ly.to(gpu), gy.to(gpu), true), 1e-4);
    Tensor w = randn({n}, 27), b = randn({n}, 28);
    LayerNormOut c = layer_norm(x, w, b, 1e-12);
    LayerNormOut g = layer_norm(x.to(gpu), w.to(gpu), b.to(gpu), 1e-12);
    expect_close(c.y, g.y, 1e-4);
    expect_close(c.mean, g.mean, 1e-5);
    expect_close(c.rstd, g.rstd, 1e-5);
    LayerNormGrads cg = layer_norm_backward(x, w, gy, c.mean, c.rstd);
    LayerNormGrads gg = layer_norm_backward(x.to(gpu), w.to(gpu), gy.to(gpu), g.mean, g.rstd);
    expect_close(cg.gx, gg.gx, 1e-4);
    expect_close(cg.gw, gg.gw, 1e-3);  // sums of 300 unit terms
    expect_close(cg.gb, gg.gb, 1e-3);
  }
}

TEST_F(CudaOps, AttentionGemmsAtTrainingSizes) {
  // (batch, token, head, dim) viewed as (batch, head, token, dim): two batch levels.
  Tensor q = randn({4, 128, 12, 32}, 29).permute({0, 2, 1, 3});
  Tensor k = randn({4, 128, 12, 32}, 30).permute({0, 2, 1, 3});
  Tensor s = matmul(q, k, false, true);  // (4, 12, 128, 128)
  expect_close(s, matmul(q.to(gpu), k.to(gpu), false, true), 1e-4);
  expect_close(matmul(s, q), matmul(s.to(gpu), q.to(gpu)), 1e-3);  // sums of 128 products of ~|6|
  expect_close(matmul(s, q, true, false), matmul(s.to(gpu), q.to(gpu), true, false), 1e-3);
}

TEST(CudaAvailability, CpuBuildReportsNoDeviceClearly) {
  if (cuda::available()) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(cuda::device_count(), 0);
  EXPECT_THROW(Tensor::zeros({2}, DType::f32, Device::cuda(0)), Error);
}
