// Optimizers, parameter groups, clipping and schedules against their formulas.
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops.h"
#include "nn/optim.h"

using namespace lopper;

TEST(Optim, AdamWTwoStepsMatchReference) {
  Variable p(Tensor::from_vector<float>({0.5f, -1.0f, 2.0f}, {3}), true);
  nn::AdamW opt({nn::ParamGroup{"all", {{"p", p}}, 0.01, 0.1}}, 0.9, 0.999, 1e-8);
  std::vector<double> ref = {0.5, -1.0, 2.0}, m(3, 0), v(3, 0);
  std::vector<std::vector<float>> grads = {{0.1f, -0.2f, 0.3f}, {-0.05f, 0.4f, 0.0f}};
  for (int t = 1; t <= 2; ++t) {
    p.set_grad(Tensor::from_vector(grads[t - 1], {3}));
    opt.step(0.5);  // schedule factor halves the lr
    double lr = 0.01 * 0.5;
    for (int i = 0; i < 3; ++i) {
      double g = grads[t - 1][i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
      ref[i] = ref[i] - lr * (mh / (std::sqrt(vh) + 1e-8) + 0.1 * ref[i]);
    }
  }
  auto pv = p.data().to_vector<float>();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(pv[i], ref[i], 1e-6);
  // State round trip.
  nn::StateDict sd = opt.state_dict();
  EXPECT_EQ(sd.at("step").item<int64_t>(), 2);
  nn::AdamW opt2({nn::ParamGroup{"all", {{"p", p}}, 0.01, 0.1}});
  opt2.load_state_dict(sd);
  EXPECT_EQ(opt2.steps(), 2);
  EXPECT_EQ(max_abs_diff(opt2.state_dict().at("p.exp_avg_sq"), sd.at("p.exp_avg_sq")), 0.0);
}

TEST(Optim, DecayGroupsExcludeBiasAndLayerNorm) {
  Variable a(Tensor::zeros({1})), b(Tensor::zeros({1})), c(Tensor::zeros({1})), d(Tensor::zeros({1}));
  auto groups = nn::decay_groups({{"encoder.layer.0.attention.self.query.weight", a},
                                  {"encoder.layer.0.attention.self.query.bias", b},
                                  {"encoder.layer.0.output.LayerNorm.weight", c},
                                  {"classifier.weight", d}},
                                 1e-4, 0.01);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 2u);
  EXPECT_EQ(groups[0].weight_decay, 0.01);
  EXPECT_EQ(groups[1].params.size(), 2u);
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  EXPECT_EQ(groups[1].params[1].first, "encoder.layer.0.output.LayerNorm.weight");
}

TEST(Optim, GroupsKeepTheirOwnLearningRates) {
  Variable w(Tensor::ones({1}), true), gate(Tensor::ones({1}), true);
  nn::SGD opt({nn::ParamGroup{"weights", {{"w", w}}, 1e-3, 0}, nn::ParamGroup{"gates", {{"g", gate}}, 0.1, 0}});
  w.set_grad(Tensor::ones({1}));
  gate.set_grad(Tensor::ones({1}));
  opt.step();
  EXPECT_NEAR(w.data().item<float>(), 1 - 1e-3, 1e-7);
  EXPECT_NEAR(gate.data().item<float>(), 0.9, 1e-7);
}

TEST(Optim, SgdMomentum) {
  Variable p(Tensor::from_vector<float>({1.0f}, {1}), true);
  nn::SGD opt({nn::ParamGroup{"all", {{"p", p}}, 0.1, 0}}, 0.9);
  p.set_grad(Tensor::ones({1}));
  opt.step();  // buf = 1, p = 0.9
  p.set_grad(Tensor::ones({1}));
  opt.step();  // buf = 1.9, p = 0.71
  EXPECT_NEAR(p.data().item<float>(), 0.71f, 1e-6);
}

TEST(Optim, ClipGradNormScalesToMaxNorm) {
  Variable a(Tensor::zeros({2}), true), b(Tensor::zeros({1}), true);
  a.set_grad(Tensor::from_vector<float>({3, 0}, {2}));
  b.set_grad(Tensor::from_vector<float>({4}, {1}));
  EXPECT_NEAR(nn::clip_grad_norm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad().to_vector<float>()[0], 0.6, 1e-6);
  EXPECT_NEAR(b.grad().item<float>(), 0.8, 1e-6);
  EXPECT_NEAR(nn::clip_grad_norm({a, b}, 10.0), 1.0, 1e-5);  // below the bound: unchanged
}

TEST(Optim, Schedules) {
  nn::LrSchedule lin{nn::ScheduleKind::linear, 10, 110};
  EXPECT_DOUBLE_EQ(lin.factor(0), 0.0);
  EXPECT_DOUBLE_EQ(lin.factor(5), 0.5);
  EXPECT_DOUBLE_EQ(lin.factor(10), 1.0);
  EXPECT_DOUBLE_EQ(lin.factor(60), 0.5);
  EXPECT_DOUBLE_EQ(lin.factor(110), 0.0);
  nn::LrSchedule cos{nn::ScheduleKind::cosine, 0, 100};
  EXPECT_NEAR(cos.factor(50), 0.5, 1e-12);
  EXPECT_NEAR(cos.factor(100), 0.0, 1e-12);
  nn::LrSchedule c{nn::ScheduleKind::constant, 4, 100};
  EXPECT_DOUBLE_EQ(c.factor(2), 0.5);
  EXPECT_DOUBLE_EQ(c.factor(50), 1.0);
  EXPECT_THROW(nn::schedule_from_name("exponential"), Error);
}
