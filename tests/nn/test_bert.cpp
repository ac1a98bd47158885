// BERT against transformers: a tiny random model's logits, hidden states and parameter
// gradients (tests/fixtures/tiny_bert), and the real all-MiniLM-L6-v2 sentence embeddings
// against sentence-transformers (tests/fixtures/minilm).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/ops.h"
#include "data/tokenizer.h"
#include "nn/bert.h"
#include "nn/safetensors.h"

using namespace lopper;

namespace {
const std::string kRoot = LOPPER_SOURCE_DIR;
const std::string kTiny = kRoot + "/tests/fixtures/tiny_bert";

// max |got - want| relative to the largest |want|, with a floor: the key biases' gradient
// is exactly zero in exact arithmetic (softmax ignores a per-row constant, and q.b is one),
// so both sides hold only rounding noise (~1e-9) there and a pure ratio means nothing.
double rel_error(const Tensor& got, const Tensor& want, double floor) {
  double scale = 0;
  for (double v : want.to_vector<double>()) scale = std::max(scale, std::fabs(v));
  return max_abs_diff(got, want) / std::max(scale, floor);
}
}  // namespace

TEST(Bert, TinyModelMatchesTransformers) {
  nn::BertConfig cfg = nn::BertConfig::from_file(kTiny + "/config.json");
  EXPECT_EQ(cfg.num_labels, 3);
  Generator init(0);
  nn::BertForSequenceClassification model(cfg, init);
  nn::LoadReport rep = nn::load_pretrained(model, kTiny, true);
  EXPECT_TRUE(rep.missing.empty()) << rep.str();
  EXPECT_TRUE(rep.unexpected.empty()) << rep.str();
  model.eval();

  nn::StateDict ref = nn::load_safetensors(kTiny + "/reference.safetensors").tensors;
  Tensor ids = ref.at("input_ids"), types = ref.at("token_type_ids"), mask = ref.at("attention_mask");
  nn::BertOutputs o = model.bert->forward(ids, types, mask);
  ASSERT_EQ(o.hidden_states.size(), 3u);
  for (size_t i = 0; i < o.hidden_states.size(); ++i)
    EXPECT_LT(max_abs_diff(o.hidden_states[i].data(), ref.at("hidden_states." + std::to_string(i))), 1e-5) << i;

  Variable logits = model.forward(ids, types, mask);
  EXPECT_LT(max_abs_diff(logits.data(), ref.at("logits")), 1e-5);
  Variable loss = model.loss(logits, ref.at("labels"));
  EXPECT_NEAR(loss.data().item<float>(), ref.at("loss").item<float>(), 1e-5);
  loss.backward();
  double largest = 0;  // the largest gradient entry of the model sets the noise floor
  for (auto& [name, t] : ref)
    if (name.rfind("grad.", 0) == 0)
      for (double v : t.to_vector<double>()) largest = std::max(largest, std::fabs(v));
  int checked = 0;
  for (auto& [name, p] : model.named_parameters()) {
    auto it = ref.find("grad." + name);
    ASSERT_NE(it, ref.end()) << name;
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_LT(rel_error(p.grad(), it->second, 1e-3 * largest), 1e-4) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 41);  // embeddings 5, 16 per layer, pooler 2, classifier 2
}

TEST(Bert, ConfigRoundTripKeepsPerLayerSizes) {
  nn::BertConfig cfg = nn::BertConfig::from_file(kTiny + "/config.json");
  cfg.pruned_heads[1] = {0, 3};
  cfg.heads_per_layer[1] = 2;
  cfg.intermediate_sizes = {64, 40};
  std::string path = (std::filesystem::temp_directory_path() / "lopper_config.json").string();
  cfg.save(path);
  nn::BertConfig back = nn::BertConfig::from_file(path);
  EXPECT_EQ(back.heads_per_layer, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(back.intermediate_sizes, (std::vector<int64_t>{64, 40}));
  EXPECT_EQ(back.pruned_heads.at(1), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(back.original.at("architectures")[0], "BertForSequenceClassification");  // unknown keys survive
  Generator g(1);
  nn::BertModel m(back, g);
  EXPECT_EQ(m.parameter("encoder.layer.1.attention.self.query.weight").shape(), (Shape{16, 32}));
  EXPECT_EQ(m.parameter("encoder.layer.1.attention.output.dense.weight").shape(), (Shape{32, 16}));
  EXPECT_EQ(m.parameter("encoder.layer.1.intermediate.dense.weight").shape(), (Shape{40, 32}));
  std::filesystem::remove(path);
}

TEST(Bert, BrokenConfigsAndShapeMismatchesAreClearErrors) {
  auto err = [](const std::string& text) {
    try {
      nn::BertConfig::from_json(nlohmann::json::parse(text), "cfg");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(R"({"hidden_size": 30, "num_attention_heads": 4})").find("multiple"), std::string::npos);
  EXPECT_NE(err(R"({"hidden_size": "big"})").find("hidden_size"), std::string::npos);
  EXPECT_NE(err(R"({"model_type": "gpt2"})").find("gpt2"), std::string::npos);
  EXPECT_NE(err(R"([1, 2])").find("object"), std::string::npos);
  std::string path = (std::filesystem::temp_directory_path() / "lopper_bad.json").string();
  std::ofstream(path) << "{\"hidden_size\": 32,";
  EXPECT_THROW(nn::BertConfig::from_file(path), Error);

  nn::BertConfig cfg = nn::BertConfig::from_file(kTiny + "/config.json");
  cfg.intermediate_size = 48;
  cfg.intermediate_sizes = {48, 48};
  Generator g(0);
  nn::BertForSequenceClassification wrong(cfg, g);
  try {
    nn::load_pretrained(wrong, kTiny, true);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("intermediate.dense.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("(64, 32)"), std::string::npos) << m;
    EXPECT_NE(m.find("(48, 32)"), std::string::npos) << m;
  }
  EXPECT_THROW(nn::load_pretrained(wrong, "/nonexistent", true), Error);
}

TEST(Bert, MiniLmSentenceEmbeddingsMatchSentenceTransformers) {
  const std::string dir = kRoot + "/models/all-MiniLM-L6-v2";
  if (!std::filesystem::exists(dir + "/model.safetensors"))
    GTEST_SKIP() << "run scripts/fetch_model.sh first (scripts/test.sh does)";
  nn::BertConfig cfg = nn::BertConfig::from_file(dir + "/config.json");
  Generator init(0);
  nn::BertModel model(cfg, init);
  nn::LoadReport rep = nn::load_pretrained(model, dir, false);
  EXPECT_TRUE(rep.missing.empty()) << rep.str();
  EXPECT_TRUE(rep.unexpected.empty()) << rep.str();
  model.eval();
  auto tok = data::load_tokenizer(dir);
  std::ifstream f(kRoot + "/tests/fixtures/minilm/sentences.txt");
  std::vector<data::Encoding> enc;
  std::string line;
  while (std::getline(f, line)) enc.push_back(tok->encode(line, nullptr, 256));
  ASSERT_EQ(enc.size(), 32u);
  int64_t t = 0;
  for (auto& e : enc) t = std::max<int64_t>(t, static_cast<int64_t>(e.input_ids.size()));
  std::vector<int64_t> ids(32 * t, 0), mask(32 * t, 0);
  for (size_t i = 0; i < enc.size(); ++i)
    for (size_t j = 0; j < enc[i].input_ids.size(); ++j) {
      ids[i * t + j] = enc[i].input_ids[j];
      mask[i * t + j] = 1;
    }
  Tensor tids = Tensor::from_vector(ids, {32, t}), tmask = Tensor::from_vector(mask, {32, t});
  NoGradGuard ng;
  Tensor emb = nn::mean_pooled_embeddings(model.forward(tids, Tensor(), tmask).last_hidden_state.data(), tmask);
  Tensor ref = nn::load_safetensors(kRoot + "/tests/fixtures/minilm/embeddings.safetensors").tensors.at("embeddings");
  Tensor cos = sum(mul(emb, ref), 1);  // both unit length
  double worst = 1.0;
  for (double c : cos.to_vector<double>()) worst = std::min(worst, c);
  std::printf("MiniLM embeddings: lowest cosine to sentence-transformers %.8f, max abs diff %.2e\n", worst,
              max_abs_diff(emb, ref));
  EXPECT_GT(worst, 0.99999);
}

TEST(Bert, QuestionAnsweringAndRegressionHeads) {
  nn::BertConfig cfg = nn::BertConfig::from_file(kTiny + "/config.json");
  Generator init(0);
  nn::BertForQuestionAnswering qa(cfg, init);
  nn::LoadReport rep = nn::load_pretrained(qa, kTiny, true);
  // The classifier checkpoint has no QA head and a pooler QA does not use.
  EXPECT_EQ(rep.missing, (std::vector<std::string>{"qa_outputs.weight", "qa_outputs.bias"}));
  qa.eval();
  nn::StateDict ref = nn::load_safetensors(kTiny + "/reference.safetensors").tensors;
  auto [start, end] = qa.forward(ref.at("input_ids"), ref.at("token_type_ids"), ref.at("attention_mask"));
  EXPECT_EQ(start.shape(), (Shape{2, 7}));
  // Start logits are qa_outputs row 0 applied to the reference last hidden state.
  Tensor w0 = qa.qa_outputs->weight.data().slice(0, 0, 1);
  Tensor expect = add(matmul(ref.at("hidden_states.2"), w0, false, true).squeeze(2),
                      qa.qa_outputs->bias.data().slice(0, 0, 1));
  EXPECT_LT(max_abs_diff(start.data(), expect), 1e-5);

  cfg.num_labels = 1;
  nn::BertForSequenceClassification reg(cfg, init);
  Variable pred(Tensor::from_vector<float>({0.5f, -1.0f}, {2, 1}), true);
  Variable l = reg.loss(pred, Tensor::from_vector<float>({1.0f, 1.0f}, {2}));
  EXPECT_NEAR(l.data().item<float>(), (0.25f + 4.0f) / 2, 1e-6);
}
