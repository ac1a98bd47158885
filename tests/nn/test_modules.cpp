// Modules: Hugging Face names, state dicts, modes, freezing; losses against closed forms
// and finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "nn/layers.h"
#include "nn/losses.h"
#include "nn/tiny_encoder.h"

using namespace lopper;

TEST(Module, RecursiveNamesFollowRegistration) {
  Generator g(1);
  nn::TinyEncoder m(10, 8, 16, 2, 2, g);
  auto names = m.named_parameters();
  EXPECT_EQ(names.front().first, "tok.weight");
  bool found = false;
  for (auto& [n, v] : names) found = found || n == "layers.1.ln2.bias";
  EXPECT_TRUE(found);
  EXPECT_EQ(m.parameter("layers.0.qkv.weight").shape(), (Shape{48, 16}));
  EXPECT_THROW(m.parameter("layers.2.qkv.weight"), Error);
  // 2 embeddings + head + 2 layers of (qkv, out, 2 LN, ff1, ff2).
  int64_t per_layer = (16 * 48 + 48) + (16 * 16 + 16) + 2 * 32 + (16 * 64 + 64) + (64 * 16 + 16);
  EXPECT_EQ(m.num_parameters(), 10 * 16 + 8 * 16 + (16 * 10 + 10) + 2 * per_layer);
}

TEST(Module, StateDictRoundTripAndLoadReports) {
  Generator g1(1), g2(2);
  nn::TinyEncoder a(10, 8, 16, 2, 1, g1), b(10, 8, 16, 2, 1, g2);
  b.load_state_dict(a.state_dict());
  for (auto& [n, v] : a.named_parameters()) EXPECT_EQ(max_abs_diff(v.data(), b.parameter(n).data()), 0.0) << n;

  nn::StateDict sd = a.state_dict();
  sd.erase("head.bias");
  sd["extra.weight"] = Tensor::zeros({1});
  EXPECT_THROW(b.load_state_dict(sd, true), Error);
  nn::LoadReport r = b.load_state_dict(sd, false);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"head.bias"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra.weight"}));

  nn::StateDict bad = a.state_dict();
  bad["head.weight"] = Tensor::zeros({3, 3});
  try {
    b.load_state_dict(bad);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("head.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("(3, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("(10, 16)"), std::string::npos) << m;
  }
}

TEST(Module, TrainEvalAndFreezing) {
  Generator g(1);
  nn::TinyEncoder m(10, 8, 16, 2, 1, g);
  m.eval();
  EXPECT_FALSE((*m.blocks)[0].ln1->is_training());
  m.train();
  EXPECT_TRUE((*m.blocks)[0].ln1->is_training());
  m.set_requires_grad(false);
  EXPECT_FALSE(m.forward(Tensor::zeros({1, 8}, DType::i64)).requires_grad());
}

TEST(Module, DropoutOnlyInTraining) {
  nn::Dropout d(0.5);
  Generator g(1);
  Variable x(Tensor::ones({1000}));
  d.eval();
  EXPECT_EQ(max_abs_diff(d.forward(x, g).data(), x.data()), 0.0);
  d.train();
  EXPECT_GT(max_abs_diff(d.forward(x, g).data(), x.data()), 0.5);
}

TEST(Losses, CrossEntropyMatchesClosedForm) {
  Tensor logits = Tensor::from_vector<double>({1.0, 2.0, 0.5, -1.0, 0.0, 3.0}, {2, 3});
  Tensor t = Tensor::from_vector<int64_t>({1, 2}, {2});
  auto lse = [](double a, double b, double c) { return std::log(std::exp(a) + std::exp(b) + std::exp(c)); };
  double l0 = lse(1, 2, 0.5) - 2.0, l1 = lse(-1, 0, 3) - 3.0;
  EXPECT_NEAR(nn::cross_entropy(Variable(logits), t).data().item<double>(), (l0 + l1) / 2, 1e-12);
  // Ignored rows drop out of the mean.
  Tensor ti = Tensor::from_vector<int64_t>({1, nn::kIgnoreIndex}, {2});
  EXPECT_NEAR(nn::cross_entropy(Variable(logits), ti).data().item<double>(), l0, 1e-12);
  // Label smoothing s: (1 - s) nll + s * mean_c(-log p_c).
  double s = 0.1;
  double smooth0 = ((lse(1, 2, 0.5) - 1) + (lse(1, 2, 0.5) - 2) + (lse(1, 2, 0.5) - 0.5)) / 3;
  EXPECT_NEAR(nn::cross_entropy(Variable(logits), ti, nn::kIgnoreIndex, s).data().item<double>(),
              (1 - s) * l0 + s * smooth0, 1e-12);
  EXPECT_THROW(nn::cross_entropy(Variable(logits), Tensor::from_vector<int64_t>({1, 3}, {2})), Error);
}

TEST(Losses, GradientsByFiniteDifferences) {
  Generator g(5);
  Tensor t = Tensor::from_vector<int64_t>({1, nn::kIgnoreIndex, 0, 2}, {4});
  Variable logits(normal({4, 3}, 0, 1, g, DType::f64), true);
  auto ce = gradcheck([t](const std::vector<Variable>& v) { return nn::cross_entropy(v[0], t, nn::kIgnoreIndex, 0.1); },
                      {logits});
  EXPECT_TRUE(ce.ok) << ce.report;
  Tensor teacher = normal({4, 3}, 0, 1, g, DType::f64);
  auto kl = gradcheck([teacher](const std::vector<Variable>& v) { return nn::kl_div_distill(v[0], teacher, 2.0); },
                      {logits});
  EXPECT_TRUE(kl.ok) << kl.report;
  Variable other(normal({4, 3}, 0, 1, g, DType::f64), true);
  auto m = gradcheck([](const std::vector<Variable>& v) { return nn::mse(v[0], v[1]); }, {logits, other});
  EXPECT_TRUE(m.ok) << m.report;
}

TEST(Losses, DistillationKlIsZeroForEqualLogitsAndMatchesDefinition) {
  Tensor s = Tensor::from_vector<double>({1.0, 0.0, -1.0}, {1, 3});
  Tensor te = Tensor::from_vector<double>({0.0, 2.0, 0.5}, {1, 3});
  EXPECT_NEAR(nn::kl_div_distill(Variable(s), s, 2.0).data().item<double>(), 0.0, 1e-12);
  double T = 2.0, zs = 0, zt = 0;
  auto sv = s.to_vector<double>(), tv = te.to_vector<double>();
  for (int i = 0; i < 3; ++i) { zs += std::exp(sv[i] / T); zt += std::exp(tv[i] / T); }
  double kl = 0;
  for (int i = 0; i < 3; ++i) {
    double pt = std::exp(tv[i] / T) / zt, ps = std::exp(sv[i] / T) / zs;
    kl += pt * std::log(pt / ps);
  }
  EXPECT_NEAR(nn::kl_div_distill(Variable(s), te, T).data().item<double>(), T * T * kl, 1e-12);
}

TEST(Layers, LinearUsesHuggingFaceLayoutAndChecksShapes) {
  Generator g(1);
  nn::Linear lin(4, 3, g);
  EXPECT_EQ(lin.weight.shape(), (Shape{3, 4}));
  Variable x(Tensor::ones({2, 4}));
  Tensor ref = add(matmul(x.data(), lin.weight.data(), false, true), lin.bias.data());
  EXPECT_EQ(max_abs_diff(lin.forward(x).data(), ref), 0.0);
  EXPECT_THROW(lin.forward(Variable(Tensor::ones({2, 5}))), Error);
  EXPECT_EQ(nn::activation_from_name("gelu_new"), nn::Activation::gelu_tanh);
  EXPECT_THROW(nn::activation_from_name("swishh"), Error);
}
