// The pruning hooks in nn: named_modules, the Linear weight mask (elementwise, row, column,
// block), the head mask's gradient against its closed form, and the attention-probability
// mask by finite differences. Exact checks (bitwise) where the math says the values are
// the same floats; closed-form ones where only rounding differs.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "core/ops.h"
#include "nn/attention.h"
#include "nn/bert.h"

using namespace lopper;

namespace {
nn::BertConfig tiny_config() {
  nn::BertConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 32;
  c.max_position_embeddings = 16;
  c.num_labels = 3;
  c.heads_per_layer = {4, 4};
  c.intermediate_sizes = {32, 32};
  return c;
}

struct Inputs {
  Tensor ids, mask, labels;
};
Inputs tiny_inputs() {
  std::vector<int64_t> ids(27), m(27, 1);
  for (int i = 0; i < 27; ++i) ids[i] = 1 + (i * 17 + 5) % 49;
  for (int t = 6; t < 9; ++t) m[2 * 9 + t] = 0;  // one padded row
  return {Tensor::from_vector(ids, {3, 9}), Tensor::from_vector(m, {3, 9}), Tensor::from_vector<int64_t>({0, 2, 1}, {3})};
}

// Loss of the tiny model; gradients land in the model's parameters (and any mask Variable).
Variable loss_of(nn::BertForSequenceClassification& model, const Inputs& in) {
  for (auto& p : model.parameters()) p.zero_grad();
  Variable loss = model.loss(model.forward(in.ids, Tensor(), in.mask), in.labels);
  loss.backward();
  return loss;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<float>(), y = b.to_vector<float>();
  return x == y;  // float ==: exact, and NaN never equal
}
}  // namespace

TEST(Hooks, NamedModulesUseTransformersNames) {
  Generator init(1);
  nn::BertForSequenceClassification model(tiny_config(), init);
  auto linears = model.named_modules_of_type<nn::Linear>();
  // Q, K, V, attention output, intermediate, output per layer; the pooler; the classifier.
  ASSERT_EQ(linears.size(), 2u * 6u + 2u);
  EXPECT_EQ(linears.front().first, "bert.encoder.layer.0.attention.self.query");
  EXPECT_EQ(linears.back().first, "classifier");
  auto all = model.named_modules();
  EXPECT_EQ(all.front().first, "");
  EXPECT_EQ(all.front().second, &model);
  bool found = false;
  for (auto& [n, m] : all) found |= n == "bert.encoder.layer.1.intermediate" && dynamic_cast<nn::BertIntermediate*>(m);
  EXPECT_TRUE(found);
  // Every parameter's owner is among the modules, under the parameter's own prefix.
  for (auto& [name, p] : model.named_parameters()) {
    std::string owner = name.substr(0, name.rfind('.'));
    bool has = false;
    for (auto& [n, m] : all) has |= n == owner;
    EXPECT_TRUE(has) << name;
  }
}

TEST(Hooks, MaskOfOnesOnEveryLinearChangesNothingBitwise) {
  Inputs in = tiny_inputs();
  Generator a(3), b(3);
  nn::BertForSequenceClassification plain(tiny_config(), a), masked(tiny_config(), b);
  plain.eval();
  masked.eval();
  int shapes = 0;
  for (auto& [n, lin] : masked.named_modules_of_type<nn::Linear>()) {
    int64_t out = lin->weight.size(0), inw = lin->weight.size(1);
    // Cycle through the mask forms: elementwise, per row, per column, per block.
    Shape s = shapes % 4 == 0 ? Shape{out, inw} : shapes % 4 == 1 ? Shape{out, 1} : shapes % 4 == 2 ? Shape{1, inw}
                                                                                                   : Shape{out / 2, 1, inw / 4, 1};
    lin->weight_mask = Variable(Tensor::ones(s), true);
    ++shapes;
  }
  Variable lp = loss_of(plain, in), lm = loss_of(masked, in);
  EXPECT_TRUE(bitwise_equal(plain.forward(in.ids, Tensor(), in.mask).data(), masked.forward(in.ids, Tensor(), in.mask).data()));
  EXPECT_EQ(lp.data().item<float>(), lm.data().item<float>());
  auto pp = plain.named_parameters(), pm = masked.named_parameters();
  ASSERT_EQ(pp.size(), pm.size());
  for (size_t i = 0; i < pp.size(); ++i) {
    ASSERT_TRUE(pm[i].second.grad().defined()) << pm[i].first;
    EXPECT_TRUE(bitwise_equal(pp[i].second.grad(), pm[i].second.grad())) << pp[i].first;
  }
  // The masks themselves get gradients (movement and Fisher scores read them).
  for (auto& [n, lin] : masked.named_modules_of_type<nn::Linear>()) EXPECT_TRUE(lin->weight_mask.grad().defined()) << n;
}

TEST(Hooks, ZeroedBlockRemovesExactlyThoseWeights) {
  Inputs in = tiny_inputs();
  Generator a(5), b(5);
  nn::BertForSequenceClassification zeroed(tiny_config(), a), masked(tiny_config(), b);
  nn::Linear& lz = *(*zeroed.bert->encoder->layer)[1].intermediate->dense;  // (32, 16)
  nn::Linear& lm = *(*masked.bert->encoder->layer)[1].intermediate->dense;
  // Blocks of 4 rows x 8 columns: mask (8, 1, 2, 1); zero block (row block 5, column block 1).
  std::vector<float> m(16, 1.0f);
  m[5 * 2 + 1] = 0;
  lm.weight_mask = Variable(Tensor::from_vector(m, {8, 1, 2, 1}), true);
  std::vector<float> w = lz.weight.data().to_vector<float>();
  for (int r = 20; r < 24; ++r)
    for (int c = 8; c < 16; ++c) w[r * 16 + c] = 0;
  lz.weight.mutable_data() = Tensor::from_vector(w, {32, 16});
  zeroed.eval();
  masked.eval();
  loss_of(zeroed, in);
  loss_of(masked, in);
  // The same floats reach the matmul: bitwise equal outputs.
  EXPECT_TRUE(bitwise_equal(zeroed.forward(in.ids, Tensor(), in.mask).data(), masked.forward(in.ids, Tensor(), in.mask).data()));
  // The masked weights get exactly zero gradient; the others the zeroed model's gradient.
  std::vector<float> gz = lz.weight.grad().to_vector<float>(), gm = lm.weight.grad().to_vector<float>();
  for (int r = 0; r < 32; ++r)
    for (int c = 0; c < 16; ++c) {
      bool in_block = r >= 20 && r < 24 && c >= 8;
      if (in_block) EXPECT_EQ(gm[r * 16 + c], 0.0f) << r << "," << c;
      else EXPECT_EQ(gm[r * 16 + c], gz[r * 16 + c]) << r << "," << c;
    }
  EXPECT_NE(gz[21 * 16 + 9], 0.0f);  // the unmasked model does train those weights
}

TEST(Hooks, LinearRefusesAMaskThatDoesNotFit) {
  Generator g(1);
  nn::Linear lin(8, 6, g);
  Variable x(Tensor::ones({2, 8}));
  lin.weight_mask = Variable(Tensor::ones({6, 4}));
  EXPECT_THROW(lin.forward(x), Error);
  lin.weight_mask = Variable(Tensor::ones({4, 1, 2, 1}));  // 6 rows are not blocks of 4
  try {
    lin.forward(x);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block mask (4, 1, 2, 1) for weight (6, 8)"), std::string::npos) << e.what();
  }
}

// With the head mask at 1, dL/dm_h = sum over the output projection's columns of head h of
// W_o * dL/dW_o: the context of head h enters the loss only through those columns, scaled
// by m_h (the identity behind Michel et al.'s and Kwon et al.'s head importance).
TEST(Hooks, HeadMaskGradientEqualsItsClosedForm) {
  Inputs in = tiny_inputs();
  Generator init(9);
  nn::BertForSequenceClassification model(tiny_config(), init);
  model.eval();
  std::vector<Variable> masks;
  for (auto& layer : *model.bert->encoder->layer) {
    masks.emplace_back(Tensor::ones({4}), true);
    layer->attention->self->head_mask = masks.back();
  }
  loss_of(model, in);
  for (size_t l = 0; l < masks.size(); ++l) {
    nn::Linear& wo = *(*model.bert->encoder->layer)[l].attention->output->dense;  // (16, 16): 4 heads x 4 dims
    std::vector<double> w = wo.weight.data().to_vector<double>(), gw = wo.weight.grad().to_vector<double>();
    std::vector<double> got = masks[l].grad().to_vector<double>();
    for (int h = 0; h < 4; ++h) {
      double want = 0, scale = 0;
      for (int r = 0; r < 16; ++r)
        for (int c = 4 * h; c < 4 * h + 4; ++c) {
          want += w[r * 16 + c] * gw[r * 16 + c];
          scale += std::fabs(w[r * 16 + c] * gw[r * 16 + c]);
        }
      // float sums in different orders: relative to the sum of magnitudes.
      EXPECT_NEAR(got[h], want, 1e-5 * scale + 1e-9) << "layer " << l << " head " << h;
    }
  }
}

TEST(Hooks, NeuronMaskGradientEqualsItsClosedForm) {
  Inputs in = tiny_inputs();
  Generator init(11);
  nn::BertForSequenceClassification model(tiny_config(), init);
  model.eval();
  nn::BertLayer& L = (*model.bert->encoder->layer)[0];
  Variable m(Tensor::ones({32}), true);
  L.intermediate->neuron_mask = m;
  loss_of(model, in);
  nn::Linear& w2 = *L.output->dense;  // (16, 32)
  std::vector<double> w = w2.weight.data().to_vector<double>(), gw = w2.weight.grad().to_vector<double>();
  std::vector<double> got = m.grad().to_vector<double>();
  for (int j = 0; j < 32; ++j) {
    double want = 0, scale = 0;
    for (int r = 0; r < 16; ++r) {
      want += w[r * 32 + j] * gw[r * 32 + j];
      scale += std::fabs(w[r * 32 + j] * gw[r * 32 + j]);
    }
    EXPECT_NEAR(got[j], want, 1e-5 * scale + 1e-9) << "neuron " << j;
  }
}

// The probability mask is differentiable: finite differences in double through the one
// attention function BERT uses.
TEST(Hooks, AttentionProbabilityMaskGradcheck) {
  Generator g(13);
  auto rnd = [&](const Shape& s) { return Variable(uniform(s, -1, 1, g, DType::f64), true); };
  Variable q = rnd({1, 2, 3, 2}), k = rnd({1, 2, 3, 2}), v = rnd({1, 2, 3, 2});  // (B, H, T, D)
  Variable pm(uniform({1, 2, 3, 3}, 0.2, 1.0, g, DType::f64), true);
  Tensor additive = Tensor::from_vector<double>({0, 0, -1e9}, {1, 1, 1, 3});
  GradcheckResult r = gradcheck(
      [&](const std::vector<Variable>& x) { return nn::scaled_dot_product_attention(x[0], x[1], x[2], additive, x[3]); },
      {q, k, v, pm}, 1e-6, 1e-6);
  EXPECT_TRUE(r.ok) << r.report;
  // A zero in the mask removes that probability: the output equals attention with the
  // corresponding value row's weight gone.
  Tensor ones = Tensor::ones({1, 1, 3, 3}, DType::f64);
  std::vector<double> z = ones.to_vector<double>();
  z[0 * 3 + 1] = 0;  // query 0 ignores key 1
  Variable zm(Tensor::from_vector(z, {1, 1, 3, 3}));
  Tensor with = nn::scaled_dot_product_attention(q, k, v, Tensor(), zm).data();
  Tensor probs = softmax(scale(matmul(q.data(), k.data(), false, true), 1.0 / std::sqrt(2.0)));  // (1, 2, 3, 3)
  std::vector<double> p = probs.to_vector<double>(), vv = v.data().to_vector<double>(), w = with.to_vector<double>();
  for (int h = 0; h < 2; ++h)
    for (int d = 0; d < 2; ++d) {
      double want = p[h * 9 + 0] * vv[h * 6 + 0 * 2 + d] + p[h * 9 + 2] * vv[h * 6 + 2 * 2 + d];
      EXPECT_NEAR(w[h * 6 + 0 * 2 + d], want, 1e-12);
    }
}
