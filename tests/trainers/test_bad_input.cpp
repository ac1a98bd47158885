// Bad input that used to pass silently (issue 11), one test per class: non-finite numbers,
// checkpoints that do not fit their config, limits known only mid-run, output paths,
// resumes of a changed experiment, and the messages themselves. Each runs finetune_prune
// on the tiny workspace and expects exit 1, one line that names the input, and nothing
// written that should not be.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "trainers/experiment.h"
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
    size_t at = r.err.rfind("finetune_prune: error: ");
    std::string last = r.err.substr(at == std::string::npos ? 0 : at);
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

// Output folders: a run name that would leave runs/, an empty or root output_dir, inputs
// inside the folders a run clears, a second process on the same folder, a LATEST that
// points elsewhere.
TEST_F(BadInput, OutputPathsAreCheckedAndLocked) {
  json e = experiment();
  e.erase("output_dir");
  for (const char* name : {"..", "a/../../b", ".hidden", "has space"}) {
    e["name"] = name;
    write_experiment(e, "named.json");
    expect_error(exp("named.json"), "name: '" + std::string(name) + "' is used as the folder runs/NAME");
  }
  expect_error(exp() + " --set output_dir=\\\"\\\"", "output_dir: empty");
  expect_error(exp() + " --set output_dir=/", "output_dir: '/' is the root of the file system");
  expect_error(exp() + " --set output_dir=.", "model.path: '" + (dir / "model").string() + "' is inside the folder");
  // A second process on a folder that a first one holds (here: this test holds the lock).
  fs::create_directories(dir / "out");
  int fd = ::open((dir / "out" / ".lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  ASSERT_EQ(::write(fd, "4242\n", 5), 5);
  expect_error(exp(), "output_dir '" + (dir / "out").string() + "' is in use by another run (pid 4242)");
  ::close(fd);
  EXPECT_FALSE(fs::exists(dir / "out" / "checkpoints"));
  // LATEST must name a checkpoint beside it.
  ASSERT_EQ(run(exp() + " --set stages.0.epochs=1").code, 0);
  std::ofstream(dir / "out" / "checkpoints" / "LATEST") << "../../model\n";
  expect_error(exp() + " --resume", "does not name a checkpoint ('../../model')");
}

// --resume checks that the experiment is the one that wrote the checkpoint, and that the
// checkpoint is whole and sane, and says exactly what differs.
TEST_F(BadInput, ResumeOfAChangedExperimentOrADamagedCheckpointIsRefused) {
  json e = experiment();
  e["stages"][0]["epochs"] = 2;  // 24 steps, checkpoints every 4
  write_experiment(e);
  Result k = run(exp(), "LOPPER_KILL_AFTER_STEP=10");  // checkpoint at step 8
  ASSERT_EQ(k.code, 128 + SIGKILL) << k.err;
  fs::path ckpt = dir / "out" / "checkpoints" / "stage0-step8";
  ASSERT_TRUE(fs::exists(ckpt / "optimizer.safetensors"));
  json before = json::parse(std::ifstream(dir / "out" / "config.resolved.json"));
  expect_error(exp() + " --resume --set stages.0.batch_size=16",
               "the experiment differs from the one that wrote '" + ckpt.string() + "': stages.0.batch_size: 8 -> 16");
  expect_error(exp() + " --resume --set 'stages=[{\"kind\": \"finetune\", \"epochs\": 2, \"lr\": 3e-4, \"batch_size\": 8}]'",
               "stages.1: {");
  expect_error(exp() + " --resume --set stages.0.weight_decay=0.01 --set stages.0.lr=1e-4", "stages.0.lr: 0.0003 -> 0.0001");
  // The refused resumes left config.resolved.json as the run wrote it.
  EXPECT_EQ(json::parse(std::ifstream(dir / "out" / "config.resolved.json")), before);
  // A damaged checkpoint: a negative step, then no optimizer state mid-stage.
  json state = json::parse(std::ifstream(ckpt / "state.json"));
  json bad = state;
  bad["step"] = -3;
  std::ofstream(ckpt / "state.json") << bad.dump();
  expect_error(exp() + " --resume", "state.json: damaged (stage 0 of 2, step -3");
  std::ofstream(ckpt / "state.json") << state.dump();
  fs::rename(ckpt / "optimizer.safetensors", dir / "optimizer.safetensors");
  expect_error(exp() + " --resume", "is at step 8 of a stage but has no optimizer.safetensors");
  fs::rename(dir / "optimizer.safetensors", ckpt / "optimizer.safetensors");
  // Moving the folder (output_dir) and the thread count are not changes; the run completes.
  Result r = run(exp() + " --resume --threads 2");
  EXPECT_EQ(r.code, 0) << r.err;
}

// The messages themselves: stated limits, no wrapped numbers, the key of an overflow,
// duplicate keys, null, folders for files, BOM and CR line ends read as text.
TEST_F(BadInput, MessagesNameTheKeyAndTheLimit) {
  expect_error(exp() + " --set stages.0.epochs=1e12", "stages.0.epochs: 1000000000000.0 is out of range (expected > 0: from 0 to 1000)");
  expect_error(exp() + " --set stages.0.batch_size=18446744073709551615",
               "stages.0.batch_size: 18446744073709551615 is out of range (expected 1 or more: from 1 to 65536)");
  expect_error(exp() + " --set stages.0.lr=1e999", "--set stages.0.lr: 1e999 is not a number a double can hold");
  std::string text = experiment().dump();
  std::ofstream(dir / "overflow.json") << text.replace(text.find("\"lr\":0.0003"), 11, "\"lr\":1e999");
  expect_error(exp("overflow.json"), "overflow.json: stages.0.lr: ");
  text = experiment().dump();
  std::ofstream(dir / "twice.json") << text.replace(text.find("\"lr\":0.0003"), 11, "\"lr\":0.0003,\"lr\":0.1");
  expect_error(exp("twice.json"), "twice.json: stages.0.lr is given twice");
  expect_error(exp() + " --set stages.0.lr=null", "stages.0.lr: null is not a value (leave the key out for its default)");
  fs::create_directories(dir / "folder.tsv");
  expect_error(exp() + " --set data.train=folder.tsv", "data.train: '" + (dir / "folder.tsv").string() + "' is a folder, expected a file");
  expect_error(exp() + " --set model.path=train.tsv", "model.path: '" + (dir / "train.tsv").string() + "' is a file, expected a folder");
  fs::create_directories(dir / "m2" / "vocab.txt");
  fs::create_directories(dir / "m2" / "model.safetensors");
  fs::copy_file(dir / "model" / "config.json", dir / "m2" / "config.json");
  expect_error(exp() + " --set model.path=m2", "vocab '" + (dir / "m2" / "vocab.txt").string() + "' is a folder, expected a file");
  fs::remove(dir / "m2" / "vocab.txt");
  fs::copy_file(dir / "model" / "vocab.txt", dir / "m2" / "vocab.txt");
  expect_error(exp() + " --set model.path=m2", "model.safetensors' is a folder, expected a .safetensors file");
  Result both = run(exp() + " --resume --overwrite");
  EXPECT_EQ(both.code, 2) << both.err;
  EXPECT_NE(both.err.find("--resume excludes --overwrite"), std::string::npos) << both.err;
  // No source path in the line a user reads; --verbose adds it.
  Result plain = expect_error(exp() + " --set stages.0.lr=null", "null is not a value");
  EXPECT_EQ(plain.err.find(".cpp:"), std::string::npos) << plain.err;
  Result verbose = expect_error(exp() + " --verbose --set stages.0.lr=null", "null is not a value");
  EXPECT_NE(verbose.err.find("fields.cpp:"), std::string::npos) << verbose.err;
  // Data saved with a byte-order mark and old Mac line ends (\r only) reads like any other.
  std::ifstream in(dir / "train.tsv");
  std::string all((std::istreambuf_iterator<char>(in)), {});
  std::replace(all.begin(), all.end(), '\n', '\r');
  std::ofstream(dir / "mac.tsv", std::ios::binary) << "\xEF\xBB\xBF" << all;
  Result mac = run(exp() + " --set data.train=mac.tsv --set stages.0.epochs=1");
  EXPECT_EQ(mac.code, 0) << mac.err;
  EXPECT_NE(mac.err.find("finetune: 96 examples"), std::string::npos) << mac.err;
}

// config.resolved.json holds every key with the value the run used, defaults included,
// and reads back as the same experiment.
TEST_F(BadInput, ResolvedConfigHoldsEveryDefault) {
  ASSERT_EQ(run(exp() + " --set stages.0.epochs=1").code, 0);
  json r = json::parse(std::ifstream(dir / "out" / "config.resolved.json"));
  EXPECT_EQ(r["device"], "cpu");
  EXPECT_EQ(r["data"]["max_eval_examples"], 0);
  EXPECT_EQ(r["data"]["format"], "tsv");
  EXPECT_EQ(r["stages"][0]["weight_decay"], 0.01);
  EXPECT_EQ(r["stages"][0]["schedule"], "linear");
  EXPECT_EQ(r["stages"][0]["max_grad_norm"], 1.0);
  EXPECT_EQ(r["stages"][0]["epochs"], 1.0);
  EXPECT_EQ(r["stages"][1]["kind"], "export");
  EXPECT_EQ(r["block_sparse"]["dense_panels"], "never");
  EXPECT_EQ(r["block_sparse"]["dense_max_rows"], 64);
  r.erase("lopper");
  trainers::Experiment again = trainers::parse_experiment(r, exp());
  EXPECT_EQ(again.resolved, r);
}

// Ctrl-C (SIGINT) stops a run at the next step with a checkpoint and says how to go on;
// --resume then completes it.
TEST_F(BadInput, InterruptSavesACheckpointAndSaysHowToResume) {
  fs::path err = dir / "interrupt.err";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDERR_FILENO);
    ::execl(LOPPER_FINETUNE_PRUNE, LOPPER_FINETUNE_PRUNE, exp().c_str(), "--set", "stages.0.epochs=40", "--threads", "1",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Wait until it trains (its first log line), then interrupt it.
  for (int i = 0; i < 600 && !fs::exists(dir / "out" / "metrics.jsonl"); ++i) ::usleep(50000);
  ASSERT_EQ(::kill(pid, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  std::ifstream f(err);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 130) << text;
  EXPECT_NE(text.find("interrupted at stages.0 (finetune), step "), std::string::npos) << text;
  EXPECT_NE(text.find("a checkpoint is saved: continue with --resume"), std::string::npos) << text;
  std::string latest;
  std::ifstream(dir / "out" / "checkpoints" / "LATEST") >> latest;
  EXPECT_EQ(latest.rfind("stage0-step", 0), 0u) << latest;
  Result r = run(exp() + " --resume --set stages.0.epochs=40");
  EXPECT_EQ(r.code, 0) << r.err;
}
