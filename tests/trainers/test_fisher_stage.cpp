// The fisher_search stage through finetune_prune on the tiny workspace: a fine-tuned model
// pruned to a FLOPs and to a latency budget, exported smaller and loaded back with the same
// dev metric; and the bad input the issue names, each refused with one line before any work.
#include <gtest/gtest.h>

#include <algorithm>

#include "pruning/latency.h"
#include "workspace.h"

using namespace lopper;
using namespace lopper::testing;

namespace {

class FisherStage : public Workspace {
 protected:
  // finetune (so there is something to prune), fisher_search with `fisher` keys, export.
  void write(const json& fisher) {
    json e = json::parse(std::ifstream(exp()));
    json f = {{"kind", "fisher_search"}, {"samples", 64}, {"batch_size", 16}};
    for (auto& [k, v] : fisher.items()) f[k] = v;
    e["stages"] = {{{"kind", "finetune"}, {"epochs", 6}, {"lr", 3e-4}, {"batch_size", 8}, {"eval_every", 0}, {"log_every", 10}},
                   f,
                   {{"kind", "export"}}};
    write_experiment(e);
  }
  void expect_error(const json& fisher, const std::string& needle) {
    write(fisher);
    Result r = run(exp());
    EXPECT_EQ(r.code, 1) << fisher.dump() << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << fisher.dump() << "\n" << r.err;
    EXPECT_FALSE(fs::exists(dir / "out" / "model"));
  }
};

}  // namespace

TEST_F(FisherStage, PrunesToTheFlopsBudgetAndTheExportLoadsBack) {
  write({{"target", 0.5}});
  Result r = run(exp());
  ASSERT_EQ(r.code, 0) << r.err;
  json s = json::parse(std::ifstream(dir / "out" / "summary.json"));
  const json& f = s["pruning"]["fisher_search"];
  EXPECT_LE(f["cost_fraction"].get<double>(), 0.5);
  EXPECT_EQ(f["samples"], 64);
  // The summary counts FLOPs at the same (dev mean) length: at least 2x fewer.
  EXPECT_GE(s["pruning"]["speedup"]["flops"].get<double>(), 2.0);
  EXPECT_LT(s["parameters"].get<int64_t>(), s["pruning"]["before"]["parameters"].get<int64_t>());
  // The smaller model, loaded as a fresh one, scores what the run reported.
  json back = evaluate_export((dir / "out" / "model").string());
  EXPECT_EQ(back["final_eval"]["accuracy"], s["final_eval"]["accuracy"]);
}

TEST_F(FisherStage, PrunesToALatencyBudgetFromATable) {
  // A table for the tiny model's blocks: piecewise linear, as measured tables roughly are.
  pruning::LatencyTable t;
  t.batch = 32;
  t.seq_len = 8;
  t.hidden_size = 32;
  t.head_dim = 8;
  t.attention = {0, 1.0, 1.0, 1.4, 1.8};
  t.ffn = {0};
  for (int n = 1; n <= 64; ++n) t.ffn.push_back(n <= 8 ? 0.5 : 0.5 + 0.05 * (n - 8));
  t.save((dir / "lut.json").string());
  write({{"constraint", "latency"}, {"target", 0.6}, {"latency_table", "lut.json"}, {"mode", "iterative"}});
  Result r = run(exp());
  ASSERT_EQ(r.code, 0) << r.err;
  json s = json::parse(std::ifstream(dir / "out" / "summary.json"));
  const json& f = s["pruning"]["fisher_search"];
  EXPECT_EQ(f["mode"], "iterative");
  EXPECT_LE(f["cost"].get<double>(), 0.6 * f["full_cost"].get<double>() + 1e-9);
  std::vector<int64_t> heads = s["heads_per_layer"], neurons = s["intermediate_sizes"];
  EXPECT_NEAR(pruning::table_latency(t, heads, neurons), f["cost"].get<double>(), 1e-9);
}

TEST_F(FisherStage, RefusesBadInputWithOneLine) {
  expect_error({{"target", 1.0}}, "stages.1.target: 1 is not in (0, 1)");
  expect_error({{"target", 0}}, "stages.1.target: 0 is not in (0, 1)");
  expect_error({{"constraint", "latency"}}, "stages.1.latency_table: the latency constraint needs a table");
  expect_error({{"constraint", "latency"}, {"latency_table", "nope.json"}}, "nope.json' is not a file");
  expect_error({{"latency_table", "nope.json"}}, "only with \"constraint\": \"latency\"");
  // Known only once the data is read: refused before the stage computes anything.
  expect_error({{"samples", 1000}}, "stages.1.samples: 1000 examples asked for, but the training set has 96");
}
