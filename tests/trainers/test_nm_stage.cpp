// The nm_prune stage through finetune_prune on the tiny workspace: a fine-tuned model pruned
// to 2:4 with permutation, fine-tuned with the masks held (killed and resumed bitwise), the
// pattern intact after training and in the export, which loads back with the same metric;
// and the bad input the issue names, each refused with one line before any work.
#include <gtest/gtest.h>

#include <csignal>

#include "core/ops.h"
#include "pruning/nm.h"
#include "workspace.h"

using namespace lopper;
using namespace lopper::testing;

namespace {

class NmStage : public Workspace {
 protected:
  // finetune, nm_prune with `nm` keys, mask_tune, export.
  void write(const json& nm) {
    json e = json::parse(std::ifstream(exp()));
    json s = {{"kind", "nm_prune"}};
    for (auto& [k, v] : nm.items()) s[k] = v;
    e["teacher"] = {{"temperature", 2.0}, {"alpha", 0.5}};
    e["stages"] = {{{"kind", "finetune"}, {"epochs", 6}, {"lr", 3e-4}, {"batch_size", 8}, {"eval_every", 0}},
                   s,
                   {{"kind", "mask_tune"}, {"max_steps", 16}, {"lr", 3e-4}, {"batch_size", 8}, {"checkpoint_every", 4},
                    {"eval_every", 8}},
                   {{"kind", "export"}}};
    write_experiment(e);
  }
  void expect_error(const json& nm, const std::string& needle) {
    write(nm);
    Result r = run(exp());
    EXPECT_EQ(r.code, 1) << nm.dump() << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << nm.dump() << "\n" << r.err;
    EXPECT_FALSE(fs::exists(dir / "out"));
  }
};

}  // namespace

TEST_F(NmStage, HoldsThePatternThroughFineTuningAndResumeAndExportsIt) {
  write({{"n", 2}, {"m", 4}, {"permute", true}});
  Result a = run(exp() + " --set output_dir=full");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("nm_prune: 2:4 on 12 Linears, sparsity 50.0%"), std::string::npos) << a.err;
  Result k = run(exp() + " --set output_dir=killed", "LOPPER_KILL_AFTER_STEP=2:6");
  ASSERT_EQ(k.code, 128 + SIGKILL) << k.err;
  Result r = run(exp() + " --set output_dir=killed --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  auto [s, sb] = expect_same_results(dir / "full", dir / "killed");

  const json& sp = s["sparsity"];
  EXPECT_EQ(sp["pattern"], "1d");
  EXPECT_EQ(sp["n"], 2);
  EXPECT_EQ(sp["groups_violating"], 0) << sp.dump();
  EXPECT_EQ(sp["held_weights_nonzero"], 0) << sp.dump();
  EXPECT_GT(sp["nm_prune"]["kept_magnitude"].get<double>(), sp["nm_prune"]["kept_magnitude_unpermuted"].get<double>());
  // The exported weights: 2:4 in every encoder Linear, the rest dense; the pattern in config.json.
  auto w = nn::load_safetensors((dir / "full" / "model" / "model.safetensors").string()).tensors;
  pruning::NmPattern p;
  int64_t checked = 0;
  for (const json& entry : sp["weights"]) {
    const std::string name = entry.get<std::string>();
    EXPECT_EQ(pruning::nm_violations(w.at(name), p), 0) << name;
    EXPECT_DOUBLE_EQ(sum_all(ne(w.at(name), Tensor::scalar(0.0)).to(DType::f64)).item<double>(), w.at(name).numel() / 2.0)
        << name << ": the kept half trained and stayed non-zero";
    ++checked;
  }
  EXPECT_EQ(checked, 12);
  EXPECT_EQ(pruning::nm_violations(w.at("bert.pooler.dense.weight"), p), 32 * 32 / 4) << "the pooler stays dense";
  json config = json::parse(std::ifstream(dir / "full" / "model" / "config.json"));
  EXPECT_EQ(config["lopper_sparsity"]["m"], 4);
  EXPECT_EQ(config["lopper_sparsity"]["permuted"], true);
  EXPECT_EQ(evaluate_export((dir / "full" / "model").string())["final_eval"], s["final_eval"]);
}

TEST_F(NmStage, VectorBlockTwoDAndUnstructuredPatternsHold) {
  for (json nm : {json{{"n", 1}, {"m", 4}, {"vector", 4}}, json{{"n", 2}, {"m", 4}, {"block", {2, 2}}, {"permute", true}},
                  json{{"pattern", "2d"}, {"n", 2}, {"m", 4}}, json{{"pattern", "unstructured"}, {"density", 0.25}, {"block", {4, 4}}},
                  json{{"n", 8}, {"m", 32}, {"modules", {"intermediate", "output\\.dense"}}, {"dense_fraction", 0.5}}}) {
    write(nm);
    fs::remove_all(dir / "out");
    Result r = run(exp());
    ASSERT_EQ(r.code, 0) << nm.dump() << "\n" << r.err;
    json s = json::parse(std::ifstream(dir / "out" / "summary.json"));
    EXPECT_EQ(s["sparsity"]["groups_violating"], 0) << nm.dump();
    EXPECT_EQ(s["sparsity"]["held_weights_nonzero"], 0) << nm.dump();
    if (nm.contains("dense_fraction")) {  // layer 1 only: intermediate, attention output and FFN output
      EXPECT_EQ(s["sparsity"]["weights"].size(), 3u) << s["sparsity"]["weights"].dump();
    }
  }
}

TEST_F(NmStage, RefusesBadInputWithOneLine) {
  expect_error({{"n", 4}, {"m", 4}}, "stages.1.n: 4 must be at least 1 and below m = 4");
  expect_error({{"n", 2}, {"m", 64}}, "stages.1.m: 64 is outside 2..32");
  expect_error({{"vector", 3}}, "stages.1.vector: 3x1 units do not tile bert.encoder.layer.0.attention.self.query's (32, 32) weight");
  expect_error({{"block", {2, 3}}}, "stages.1.block: 2x3 units do not tile");
  expect_error({{"modules", {"query", "lm_head"}}}, "stages.1.modules[1]: 'lm_head' matches no encoder Linear");
  expect_error({{"pattern", "unstructured"}, {"density", 1.5}}, "stages.1.density: 1.5 is out of range");
  expect_error({{"pattern", "2d"}, {"permute", true}}, "stages.1.permute: the permutation search is for 1d N:M patterns");
  // Nothing may change the shapes the masks hold.
  json e = json::parse(std::ifstream(exp()));
  e["stages"] = {{{"kind", "nm_prune"}}, {{"kind", "head_gates"}, {"max_steps", 2}}, {{"kind", "remove_heads"}}};
  write_experiment(e);
  Result r = run(exp());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("stages.1: kind 'head_gates' cannot follow the nm_prune stage stages.0"), std::string::npos) << r.err;
  // One held pattern per run.
  e["stages"] = {{{"kind", "nm_prune"}}, {{"kind", "nm_prune"}, {"n", 1}}};
  write_experiment(e);
  r = run(exp());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("stages.1: a second nm_prune after stages.0"), std::string::npos) << r.err;
}
