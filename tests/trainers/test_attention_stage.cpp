// The attention_prune stage through finetune_prune on the tiny workspace: a learned
// threshold fine-tuned with the mask (killed and resumed bitwise, its thresholds in the
// export's config.json), top-k and static masks reporting their realized sparsity per
// layer and head, and the bad input the issue names, each refused with one line.
#include <gtest/gtest.h>

#include <csignal>

#include "workspace.h"

using namespace lopper;
using namespace lopper::testing;

namespace {

class AttentionStage : public Workspace {
 protected:
  // finetune, attention_prune with `a` keys (16 steps), export.
  void write(const json& a) {
    json e = json::parse(std::ifstream(exp()));
    json s = {{"kind", "attention_prune"}, {"max_steps", 16}, {"lr", 3e-4}, {"batch_size", 8},
              {"checkpoint_every", 4}, {"eval_every", 8}};
    for (auto& [k, v] : a.items()) s[k] = v;
    e["teacher"] = {{"temperature", 2.0}, {"alpha", 0.5}};
    e["stages"] = {{{"kind", "finetune"}, {"epochs", 6}, {"lr", 3e-4}, {"batch_size", 8}, {"eval_every", 0}}, s,
                   {{"kind", "export"}}};
    write_experiment(e);
  }
  void expect_error(const json& a, const std::string& needle) {
    write(a);
    Result r = run(exp());
    EXPECT_EQ(r.code, 1) << a.dump() << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << a.dump() << "\n" << r.err;
    EXPECT_FALSE(fs::exists(dir / "out"));
  }
};

void expect_report_shape(const json& att) {
  ASSERT_EQ(att["per_head"].size(), 2u) << att.dump();
  for (const json& layer : att["per_head"]) {
    ASSERT_EQ(layer.size(), 4u);
    for (const json& v : layer) {
      EXPECT_GE(v.get<double>(), 0.0);
      EXPECT_LT(v.get<double>(), 1.0);
    }
  }
}

}  // namespace

TEST_F(AttentionStage, LearnedThresholdTrainsResumesBitwiseAndExportsItsRule) {
  write({{"rule", "learned_threshold"}, {"threshold", 0.05}, {"target_sparsity", 0.5}, {"rule_lr", 0.05},
         {"lagrangian_lr", 5.0}});  // 16 steps: the multipliers must grow fast
  Result a = run(exp() + " --set output_dir=full");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("attention_prune: with the mask, before fine-tuning"), std::string::npos) << a.err;
  Result k = run(exp() + " --set output_dir=killed", "LOPPER_KILL_AFTER_STEP=1:6");
  ASSERT_EQ(k.code, 128 + SIGKILL) << k.err;
  Result r = run(exp() + " --set output_dir=killed --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  auto [s, sb] = expect_same_results(dir / "full", dir / "killed");
  EXPECT_EQ(s["attention_pruning"], sb["attention_pruning"]);

  const json& ap = s["attention_pruning"];
  expect_report_shape(ap["after"]["attention"]);
  // The thresholds moved from 0.05 toward dropping half of the entries.
  EXPECT_GT(ap["after"]["attention"]["sparsity"].get<double>(), ap["before"]["attention"]["sparsity"].get<double>())
      << ap.dump();
  json config = json::parse(std::ifstream(dir / "full" / "model" / "config.json"));
  const json& rule = config["lopper_attention_pruning"];
  EXPECT_EQ(rule["rule"], "learned_threshold");
  ASSERT_EQ(rule["threshold"].size(), 2u);
  EXPECT_EQ(rule["threshold"], ap["rule"]["threshold"]);
  bool moved = false;
  for (const json& layer : rule["threshold"])
    for (const json& t : layer) moved = moved || std::abs(t.get<double>() - 0.05) > 1e-3;
  EXPECT_TRUE(moved) << rule.dump();
  // The final evaluation ran with the rule: it is the stage's "after".
  EXPECT_EQ(s["final_eval"], ap["after"]["dev"]) << s["final_eval"].dump();
}

TEST_F(AttentionStage, TopkAndStaticMasksReportRealizedSparsity) {
  for (const std::string rule : {"topk", "static_positions"}) {
    write({{"rule", rule}, {"keep", 0.25}, {"max_steps", 4}});
    Result a = run(exp() + " --set output_dir=" + rule);
    ASSERT_EQ(a.code, 0) << a.err;
    json s = json::parse(std::ifstream(dir / rule / "summary.json"));
    const json& att = s["attention_pruning"]["after"]["attention"];
    expect_report_shape(att);
    // keep 0.25 of each valid row (at least one), the [CLS] row whole: well above half dropped.
    EXPECT_GT(att["sparsity"].get<double>(), 0.5) << rule << " " << att.dump();
    EXPECT_EQ(s["attention_pruning"]["before"]["attention"]["sparsity"], att["sparsity"])
        << rule << ": top-k of a fixed share drops as many before fine-tuning as after";
  }
}

TEST_F(AttentionStage, RefusesBadInputWithOneLine) {
  expect_error({{"k", 0}, {"keep", 0}}, "stages.1.k, keep: set exactly one");
  expect_error({{"k", -3}}, "stages.1.k: -3 entries per row; k must be at least 1");
  expect_error({{"keep", 1.5}}, "stages.1.keep: 1.5 is not a share in (0, 1]");
  expect_error({{"keep", 0.0}, {"k", 0}}, "stages.1.k, keep: set exactly one");
  expect_error({{"rule", "threshold"}, {"threshold", 1.0}}, "stages.1.threshold: 1 is not a probability in [0, 1)");
  expect_error({{"rule", "threshold"}, {"threshold", -0.2}}, "stages.1.threshold: -0.2 is not a probability in [0, 1)");
  expect_error({{"rule", "learned_threshold"}, {"target_sparsity", 1.2}}, "stages.1.target_sparsity: 1.2 is not a share");
  expect_error({{"rule", "sliding"}}, "stages.1.rule: unknown rule 'sliding'");
  // The rule stays: nothing may open masks or change shapes under it, and one rule per run.
  json e = json::parse(std::ifstream(exp()));
  e["stages"] = {{{"kind", "attention_prune"}, {"k", 2}, {"max_steps", 2}}, {{"kind", "head_gates"}, {"max_steps", 2}}};
  write_experiment(e);
  Result r = run(exp());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("stages.1: kind 'head_gates' cannot follow the attention_prune stage stages.0"), std::string::npos)
      << r.err;
  e["stages"] = {{{"kind", "attention_prune"}, {"k", 2}, {"max_steps", 2}}, {{"kind", "attention_prune"}, {"k", 3}}};
  write_experiment(e);
  r = run(exp());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("stages.1: a second attention_prune after stages.0"), std::string::npos) << r.err;
}
