// The workspace the finetune_prune tests share: the tiny fixture model with a 100-word
// vocab and a small learnable sentiment-like task in a temporary folder, an experiment file
// over them, and a way to run the app on it and read its exit code and stderr.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/ops.h"
#include "nn/safetensors.h"

namespace lopper::testing {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Result {
  int code = 0;
  std::string err;
};

// Runs a shell command line with stderr to a file; returns its exit code and stderr.
inline Result run_command(const std::string& cmd) {
  // One file per test process: ctest -j runs these tests side by side.
  fs::path err = fs::temp_directory_path() / ("lopper_fp_stderr_" + std::to_string(::getpid()) + ".txt");
  int status = std::system((cmd + " 2> " + err.string()).c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  {
    std::ifstream f(err);
    r.err.assign(std::istreambuf_iterator<char>(f), {});
  }
  fs::remove(err);
  return r;
}

// Runs finetune_prune with the given arguments; returns its exit code and stderr.
inline Result run(const std::string& args, const std::string& env = "") {
  return run_command(env + " OMP_NUM_THREADS=1 " + std::string(LOPPER_FINETUNE_PRUNE) + " " + args);
}

// Two runs' exports hold the same tensors, bit for bit, and their summaries the same final
// evaluation; returns the summaries (first, second) for further checks.
inline std::pair<json, json> expect_same_results(const fs::path& a, const fs::path& b) {
  auto ta = nn::load_safetensors((a / "model" / "model.safetensors").string()).tensors;
  auto tb = nn::load_safetensors((b / "model" / "model.safetensors").string()).tensors;
  EXPECT_EQ(ta.size(), tb.size());
  for (auto& [name, t] : ta) {
    auto it = tb.find(name);
    if (it == tb.end()) {
      ADD_FAILURE() << name << " missing from " << b;
      continue;
    }
    EXPECT_EQ(max_abs_diff(t, it->second), 0.0) << name;
  }
  json sa = json::parse(std::ifstream(a / "summary.json"));
  json sb = json::parse(std::ifstream(b / "summary.json"));
  EXPECT_EQ(sa["final_eval"], sb["final_eval"]);
  return {sa, sb};
}

// A workspace: the tiny fixture model with a 100-word vocab, a small sentiment-like task.
class Workspace : public ::testing::Test {
 protected:
  void SetUp() override {
    // Suite and test name: ctest runs tests of one name in different suites at once.
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() / ("lopper_fp_" + std::string(info->test_suite_name()) + "." + info->name());
    fs::remove_all(dir);
    fs::create_directories(dir / "model");
    fs::path fixtures = fs::path(LOPPER_SOURCE_DIR) / "tests" / "fixtures" / "tiny_bert";
    fs::copy_file(fixtures / "config.json", dir / "model" / "config.json");
    fs::copy_file(fixtures / "model.safetensors", dir / "model" / "model.safetensors");
    std::ofstream v(dir / "model" / "vocab.txt");
    v << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
    for (int i = 5; i < 100; ++i) v << "w" << i << "\n";
    v.close();
    // Label 1 sentences use the words w50..w99, label 0 ones w5..w49: easy to learn.
    Generator g(7);
    auto write = [&](const fs::path& p, int n) {
      std::ofstream f(p);
      f << "sentence\tlabel\n";
      for (int i = 0; i < n; ++i) {
        int label = static_cast<int>(g.next_below(2)), len = 3 + static_cast<int>(g.next_below(8));
        std::string s;
        for (int k = 0; k < len; ++k)
          s.append("w").append(std::to_string(label ? 50 + g.next_below(50) : 5 + g.next_below(45))).append(" ");
        f << s << "\t" << label << "\n";
      }
    };
    write(dir / "train.tsv", 96);
    write(dir / "dev.tsv", 40);
    json e = {{"name", "tiny"}, {"seed", 3}, {"output_dir", "out"}, {"threads", 1},
              {"model", {{"path", "model"}, {"num_labels", 2}}},
              {"data", {{"task", "sst2"}, {"train", "train.tsv"}, {"dev", "dev.tsv"}, {"max_seq_len", 16}}},
              {"stages", {{{"kind", "finetune"}, {"epochs", 20}, {"lr", 3e-4}, {"batch_size", 8}, {"eval_every", 6},
                           {"checkpoint_every", 4}, {"log_every", 5}},
                          {{"kind", "export"}}}}};
    write_experiment(e);
  }
  void TearDown() override {
    if (!std::getenv("LOPPER_KEEP_TEST_DIRS")) fs::remove_all(dir);
  }
  void write_experiment(const json& e, const std::string& name = "exp.json") {
    std::ofstream(dir / name) << e.dump(2);
  }
  std::string exp(const std::string& name = "exp.json") { return (dir / name).string(); }
  // Evaluates an exported folder as a fresh model (no teacher, one evaluate stage); returns
  // that run's summary.
  json evaluate_export(const std::string& model_dir) {
    json e = json::parse(std::ifstream(exp()));
    e.erase("teacher");
    e["model"]["path"] = model_dir;
    e["output_dir"] = "eval";
    e["stages"] = {{{"kind", "evaluate"}}};
    write_experiment(e, "eval.json");
    Result r = run(exp("eval.json"));
    EXPECT_EQ(r.code, 0) << r.err;
    return json::parse(std::ifstream(dir / "eval" / "summary.json"));
  }
  fs::path dir;
};

}  // namespace lopper::testing
