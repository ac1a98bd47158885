// Bad input that used to pass silently (issue 11), one test per class: non-finite numbers,
// checkpoints that do not fit their config, limits known only mid-run, output paths,
// resumes of a changed experiment, and the messages themselves. Each runs finetune_prune
// on the tiny workspace and expects exit 1, one line that names the input, and nothing
// written that should not be.
#include <gtest/gtest.h>

#include <cmath>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "workspace.h"

using namespace lopper;
using namespace lopper::testing;

namespace {

class BadInput : public Workspace {
 protected:
  // Runs the app and expects exit 1 with one error line that contains needle.
  Result expect_error(const std::string& args, const std::string& needle) {
    Result r = run(args);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    std::string last = r.err.substr(r.err.rfind("finetune_prune: error: ") == std::string::npos ? 0 : r.err.rfind("finetune_prune: error: "));
    EXPECT_NE(last.find(needle), std::string::npos) << args << "\n" << r.err;
    EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << "one error line expected:\n" << last;
    return r;
  }
  json experiment() { return json::parse(std::ifstream(exp())); }
};

bool all_finite(const nn::StateDict& sd) {
  for (auto& [n, t] : sd)
    for (float x : t.to(DType::f32).to_vector<float>())
      if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

// Training that goes non-finite mid-stage stops at that step with exit 1, its weights not
// updated, the last good checkpoint intact and nothing exported. The divergence: a
// regression label of 1e30, whose squared error overflows float32, in the batch of step 7.
TEST_F(BadInput, NonFiniteLossStopsTheRunAtThatStep) {
  // Which training example step 7 sees (batches depend on lengths, not labels).
  data::TaskSpec spec;
  spec.label_type = "float";
  spec.num_labels = 1;
  auto examples = data::read_examples((dir / "train.tsv").string(), spec, 0);
  auto tok = data::load_tokenizer((dir / "model").string());
  data::Dataset ds(examples, *tok, 16, true);
  int64_t victim = data::epoch_batches(ds, 8, true, 3, 0).at(6).at(0);
  std::ifstream in(dir / "train.tsv");
  std::ofstream out(dir / "diverge.tsv");
  std::string line;
  for (int64_t row = -1; std::getline(in, line); ++row)
    out << (row == victim ? line.substr(0, line.find('\t')) + "\t1e30" : line) << "\n";
  out.close();
  Result r = expect_error(exp() + " --set data.train=diverge.tsv --set data.task=custom --set data.text=sentence" +
                              " --set data.label=label --set data.label_type=float --set model.num_labels=1",
                          "stages.0 (finetune), step 7 of 240: not finite (loss inf");
  EXPECT_NE(r.err.find("the last good checkpoint is checkpoints/stage0-step4"), std::string::npos) << r.err;
  std::string latest;
  std::ifstream(dir / "out" / "checkpoints" / "LATEST") >> latest;
  EXPECT_EQ(latest, "stage0-step4");
  EXPECT_TRUE(all_finite(nn::load_safetensors((dir / "out" / "checkpoints" / latest / "model.safetensors").string()).tensors));
  EXPECT_FALSE(fs::exists(dir / "out" / "model"));
  EXPECT_FALSE(fs::exists(dir / "out" / "summary.json"));
  // The log holds steps 1 to 6 only, each with a finite loss and gradient norm.
  std::ifstream log(dir / "out" / "metrics.jsonl");
  int64_t last_step = 0;
  while (std::getline(log, line)) {
    json j = json::parse(line);
    if (!j.contains("loss")) continue;
    EXPECT_TRUE(j["loss"].is_number() && j["grad_norm"].is_number()) << line;
    last_step = j["step"];
  }
  EXPECT_LE(last_step, 6);
}

// Weights with a NaN or an infinity, and configs whose values would train into NaN, are
// refused at load, before anything is written.
TEST_F(BadInput, NonFiniteWeightsAndNonsenseConfigsAreRefusedAtLoad) {
  auto sd = nn::load_safetensors((dir / "model" / "model.safetensors").string()).tensors;
  auto poisoned = sd;
  std::string name = "bert.encoder.layer.1.output.dense.weight";
  ASSERT_TRUE(poisoned.count(name));
  Tensor w = poisoned.at(name).clone();
  std::vector<float> v = w.to_vector<float>();
  v[5] = std::nanf("");
  v[9] = INFINITY;
  poisoned[name] = Tensor::from_vector(v, w.shape());
  fs::create_directories(dir / "nan");
  fs::copy_file(dir / "model" / "config.json", dir / "nan" / "config.json");
  fs::copy_file(dir / "model" / "vocab.txt", dir / "nan" / "vocab.txt");
  nn::save_safetensors((dir / "nan" / "model.safetensors").string(), poisoned);
  expect_error(exp() + " --set model.path=nan", "weight '" + name + "' holds 1 NaN and 1 infinite values of");
  EXPECT_FALSE(fs::exists(dir / "out"));

  json cfg = json::parse(std::ifstream(dir / "model" / "config.json"));
  for (auto [key, value, needle] : {std::tuple{"layer_norm_eps", json(-1e-12), "layer_norm_eps -1e-12 must be above 0"},
                                    std::tuple{"hidden_dropout_prob", json(1.5), "hidden_dropout_prob 1.5 must be in [0, 1)"},
                                    std::tuple{"pad_token_id", json(100000), "pad_token_id 100000 is not a token"}}) {
    json bad = cfg;
    bad[key] = value;
    std::ofstream(dir / "model" / "config.json") << bad.dump();
    expect_error(exp(), needle);
    EXPECT_FALSE(fs::exists(dir / "out")) << key;
  }
}

// Only the task head may be missing from a checkpoint or differ in shape, and only in its
// label count; anything else is an error that names the keys, found by --validate too.
TEST_F(BadInput, CheckpointsThatDoNotFitTheirConfigAreRefused) {
  auto sd = nn::load_safetensors((dir / "model" / "model.safetensors").string()).tensors;
  json cfg = json::parse(std::ifstream(dir / "model" / "config.json"));
  auto variant = [&](const std::string& name, const nn::StateDict& tensors, const json& config) {
    fs::create_directories(dir / name);
    fs::copy_file(dir / "model" / "vocab.txt", dir / name / "vocab.txt", fs::copy_options::overwrite_existing);
    std::ofstream(dir / name / "config.json") << config.dump();
    nn::save_safetensors((dir / name / "model.safetensors").string(), tensors);
    return exp() + " --set model.path=" + name;
  };
  json three_layers = cfg;
  three_layers["num_hidden_layers"] = 3;
  std::string more_layers = variant("layers", sd, three_layers);
  for (const char* flag : {"", " --validate"})
    expect_error(more_layers + flag, "lacks 16 weight(s) that its config needs: bert.encoder.layer.2.");
  auto no_ln = sd;
  no_ln.erase("bert.embeddings.LayerNorm.weight");
  expect_error(variant("no_ln", no_ln, cfg), "lacks 1 weight(s) that its config needs: bert.embeddings.LayerNorm.weight;");
  expect_error(variant("empty", {}, cfg), "holds no tensors");
  auto one_layer = cfg;
  one_layer["num_hidden_layers"] = 1;
  expect_error(variant("fewer", sd, one_layer), "holds 16 weight(s) its config has no place for");
  auto wide_head = sd;
  wide_head["classifier.weight"] = Tensor::zeros({3, 16});
  expect_error(variant("wide_head", wide_head, cfg), "classifier.weight is (3, 16), the config needs (2, 32)");
  EXPECT_FALSE(fs::exists(dir / "out"));
  // A head for another label count (the fixture's 3, here 2) is the one thing re-initialized.
  Result ok = run(exp() + " --set stages.0.epochs=1");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.err.find("a new task head (2 labels; the file's head has another label count)"), std::string::npos) << ok.err;
}

// Limits that used to surface mid-run are checked before anything is written, and by --validate.
TEST_F(BadInput, LimitsAreCheckedBeforeTheFirstStep) {
  for (const char* flag : {"", " --validate"}) {
    expect_error(exp() + " --set data.max_seq_len=64" + flag,
                 "data.max_seq_len: 64 is more than the model's max_position_embeddings, 32");
    json e = experiment();
    e["teacher"] = {{"hidden_weight", 1.0}, {"layer_map", {{1, 1}, {2, 5}}}};
    write_experiment(e, "teacher.json");
    expect_error(exp("teacher.json") + flag, "teacher.layer_map: [2, 5] is out of range");
  }
  std::ofstream(dir / "model" / "vocab.txt", std::ios::app) << "extra1\nextra2\n";
  expect_error(exp(), "the tokenizer has 102 tokens, the embedding table (vocab_size) only 100");
  EXPECT_FALSE(fs::exists(dir / "out"));
}
