// The movement stage end to end on the tiny model: block scores trained with the model,
// killed and resumed bitwise, finalized (heads and neurons with nothing left removed) and
// exported with the pruned weights as zeros; and its options checked up front.
#include <gtest/gtest.h>

#include <csignal>

#include "core/ops.h"
#include "workspace.h"

using namespace lopper;
using namespace lopper::testing;

namespace {
class MovementStage : public Workspace {};
}  // namespace

TEST_F(MovementStage, ResumesBitwiseAndExportsTheSparseModel) {
  json e = json::parse(std::ifstream(exp()));
  e["teacher"] = {{"temperature", 2.0}, {"alpha", 0.5}};
  json ft = {{"kind", "finetune"}, {"epochs", 10}, {"lr", 3e-4}, {"batch_size", 8}, {"checkpoint_every", 4}};
  json mv = {{"kind", "movement"},   {"max_steps", 24},         {"lr", 3e-4},
             {"batch_size", 8},      {"checkpoint_every", 4},   {"eval_every", 12},
             {"qkv_block", {8, 8}},  {"attention_output_block", {8, 8}}, {"hybrid", true},
             {"final_density", 0.3}, {"warmup", 0.1},           {"cooldown", 0.2},
             {"score_lr", 0.1}};
  e["stages"] = {ft, mv, {{"kind", "remove_heads"}}, {{"kind", "export"}}};
  e["block_sparse"] = {{"blocks", {{8, 8}}}};  // the movement blocks: evaluated block-sparse
  write_experiment(e);
  Result a = run(exp() + " --set output_dir=full");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("movement scores, blocks qkv [8, 8]"), std::string::npos) << a.err;
  Result k = run(exp() + " --set output_dir=killed", "LOPPER_KILL_AFTER_STEP=1:10");
  ASSERT_EQ(k.code, 128 + SIGKILL) << k.err;
  Result r = run(exp() + " --set output_dir=killed --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  auto [sa, sb] = expect_same_results(dir / "full", dir / "killed");

  // 32 x 32 matrices in 8 x 8 blocks: 16 blocks, round(0.3 * 16) = 5 kept in each; the
  // hybrid FFN keeps round(0.3 * 64) = 19 neurons per layer.
  json p = sa["pruning"];
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(p["density_before_removal"][l]["attention.self.query"].get<double>(), 5.0 / 16) << p.dump();
    EXPECT_EQ(p["neurons_kept"][l], 19) << p.dump();
  }
  auto w = nn::load_safetensors((dir / "full" / "model" / "model.safetensors").string()).tensors;
  EXPECT_EQ(w.at("bert.encoder.layer.0.intermediate.dense.weight").size(0), 19);
  Tensor q = w.at("bert.encoder.layer.0.attention.self.query.weight");
  double nonzero = sum_all(ne(q, Tensor::scalar(0.0)).to(DType::f64)).item<double>();
  EXPECT_EQ(nonzero, 5 * 64) << "the pruned blocks are zeros in the export";
  // The summary times inference as it runs, the pruned Linears block-sparse, and the model
  // with every Linear dense next to it.
  ASSERT_TRUE(sa.contains("block_sparse")) << sa.dump();
  const json& bs = sa["block_sparse"];
  EXPECT_EQ(bs["layers"]["bert.encoder.layer.0.attention.self.query"]["density"].get<double>(), 5.0 / 16) << bs.dump();
  EXPECT_EQ(bs["summary"].get<std::string>().rfind("8 of 14 Linears block-sparse (8x8)", 0), 0u) << bs.dump();
  for (const json& l : {bs["latency_ms"], sa["latency_ms"]})
    for (const char* b : {"batch_1", "batch_32"}) EXPECT_GT(l[b].get<double>(), 0.0) << l.dump();
  // The export evaluates as the run's last evaluation said.
  EXPECT_EQ(evaluate_export((dir / "full" / "model").string())["final_eval"], sa["final_eval"]);
}

TEST_F(MovementStage, BadOptionsAreRefusedBeforeAnythingIsWritten) {
  json e = json::parse(std::ifstream(exp()));
  auto expect_error = [&](json stage, const std::string& want) {
    e["stages"] = {stage, {{"kind", "remove_heads"}}};
    write_experiment(e);
    Result r = run(exp());
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "out"));
  };
  json mv = {{"kind", "movement"}, {"max_steps", 4}, {"lr", 1e-4}};
  json bad = mv;
  bad["qkv_block"] = {5, 8};
  expect_error(bad, "blocks.qkv on encoder.layer.0.attention.self.query: block [5, 8] does not divide the matrix (32, 32)");
  bad = mv;
  bad["final_density"] = 1.5;
  expect_error(bad, "stages.0.final_density: 1.5 is out of range");
  bad = mv;
  bad["method"] = "soft-movement";
  expect_error(bad, "did you mean soft_movement?");
  bad = mv;
  bad["intermediate_block"] = {1, "some"};
  expect_error(bad, "stages.0.intermediate_block: \"some\" is not a block size");
}
