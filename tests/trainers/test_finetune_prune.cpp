// finetune_prune end to end on the tiny fixture model: a run killed with SIGKILL and
// resumed ends bitwise equal to an uninterrupted one; bad inputs give one clear error line,
// a non-zero exit, and leave nothing half-written.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/device.h"
#include "core/ops.h"
#include "nn/safetensors.h"
#include "trainers/experiment.h"
#include "trainers/metrics.h"
#include "trainers/stages.h"
#include "workspace.h"

using namespace lopper;
namespace fs = std::filesystem;
using json = nlohmann::json;

using namespace lopper::testing;

namespace {
class FinetunePrune : public Workspace {};
}  // namespace


TEST_F(FinetunePrune, KilledAndResumedRunEqualsUninterruptedBitwise) {
  Result a = run(exp() + " --set output_dir=full");
  ASSERT_EQ(a.code, 0) << a.err;
  // 96 examples / batch 8 = 12 steps per epoch, 240 in all; checkpoints every 4 steps. Die at
  // step 15 (mid-epoch, 3 steps after the last checkpoint) and resume.
  Result k = run(exp() + " --set output_dir=killed", "LOPPER_KILL_AFTER_STEP=15");
  ASSERT_EQ(k.code, 128 + SIGKILL) << k.err;
  EXPECT_FALSE(fs::exists(dir / "killed" / "summary.json"));
  Result r = run(exp() + " --set output_dir=killed --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming from"), std::string::npos) << r.err;

  auto [sa, sb] = expect_same_results(dir / "full", dir / "killed");
  EXPECT_EQ(sa["best"], sb["best"]);
  // The task is learnable: the model beats chance on dev.
  std::ifstream log(dir / "full" / "metrics.jsonl");
  std::string all((std::istreambuf_iterator<char>(log)), {});
  EXPECT_GT(sa["final_eval"]["accuracy"].get<double>(), 0.75) << sa.dump() << "\n" << all;
  // metrics.jsonl has no duplicated steps after the resume.
  std::ifstream m(dir / "killed" / "metrics.jsonl");
  std::string line;
  std::set<std::string> seen;
  while (std::getline(m, line)) EXPECT_TRUE(seen.insert(line).second) << "duplicate: " << line;
  EXPECT_TRUE(fs::exists(dir / "full" / "config.resolved.json"));
}

TEST_F(FinetunePrune, ExportedModelLoadsBackWithTheSamePredictions) {
  ASSERT_EQ(run(exp()).code, 0);
  json summary = json::parse(std::ifstream(dir / "out" / "summary.json"));
  // A dense model: its latency, and no block-sparse section.
  EXPECT_GT(summary["latency_ms"]["batch_32"].get<double>(), 0.0) << summary.dump();
  EXPECT_FALSE(summary.contains("block_sparse")) << summary.dump();
  // Evaluate the exported folder as a fresh model: same dev accuracy.
  json s2 = evaluate_export("out/model");
  EXPECT_EQ(s2["final_eval"]["accuracy"], summary["final_eval"]["accuracy"]);
  json cfg = json::parse(std::ifstream(dir / "out" / "model" / "config.json"));
  EXPECT_EQ(cfg["architectures"][0], "BertForSequenceClassification");
  EXPECT_TRUE(fs::exists(dir / "out" / "model" / "vocab.txt"));
}

TEST_F(FinetunePrune, BadInputsGiveOneClearErrorAndWriteNothing) {
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    Result r = run(args);
    EXPECT_EQ(r.code, 1) << args;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected:\n" << r.err;
    EXPECT_FALSE(fs::exists(dir / "out" / "summary.json"));
    EXPECT_FALSE(fs::exists(dir / "out" / "model"));
  };
  std::ofstream(dir / "broken.json") << "{\n  \"name\": \"x\",\n  \"seed\": 1,,\n}";
  expect_error((dir / "broken.json").string(), "line 3");
  expect_error(exp() + " --set stages.0.lrr=1", "stages.0.lrr: unknown key (did you mean 'stages.0.lr'?)");
  expect_error(exp() + " --set stages.0.batch_size=\\\"big\\\"", "stages.0.batch_size: expected an integer");
  expect_error(exp() + " --set stages.0.lr=-1", "stages.0.lr");
  expect_error(exp() + " --set data.train=missing.tsv", "data.train");
  std::ofstream(dir / "short.tsv") << "sentence\tlabel\nw5 w6\t1\nw7 w8\n";
  expect_error(exp() + " --set data.train=short.tsv", "short.tsv:3: row has 1 columns");
  std::ofstream(dir / "badlabel.tsv") << "sentence\tlabel\nw5 w6\t1\nw7 w8\t7\n";
  expect_error(exp() + " --set data.train=badlabel.tsv", "badlabel.tsv:3: label '7'");
  std::ofstream(dir / "empty.tsv") << "sentence\tlabel\n";
  expect_error(exp() + " --set data.train=empty.tsv", "holds no examples");
  fs::create_directories(dir / "ro");
  fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  if (::geteuid() != 0) {  // root writes anywhere, so the check means nothing there
    expect_error(exp() + " --set output_dir=ro/out", "output_dir");
  } else {
    std::ofstream(dir / "file_not_dir") << "x";
    expect_error(exp() + " --set output_dir=file_not_dir/out", "output_dir");
  }
  std::string stages = "'stages=[{\"kind\": \"head_gates\", \"target_heads\": 8}, {\"kind\": \"remove_heads\"}]'";
  expect_error(exp() + " --set " + stages, "stages.0.target_heads: 8 is not below the model's 8 heads");
  Result v = run(exp() + " --validate");
  EXPECT_EQ(v.code, 0) << v.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Experiment, OverridesAndMetrics) {
  json j = {{"stages", {{{"kind", "finetune"}, {"lr", 1e-4}}}}};
  trainers::apply_override(j, "stages.0.lr=3e-5");
  trainers::apply_override(j, "data.task=cola");
  EXPECT_DOUBLE_EQ(j["stages"][0]["lr"].get<double>(), 3e-5);
  EXPECT_EQ(j["data"]["task"], "cola");
  EXPECT_THROW(trainers::apply_override(j, "stages.3.lr=1"), Error);
  EXPECT_THROW(trainers::apply_override(j, "novalue"), Error);
  // Metrics against hand-computed values.
  std::vector<int64_t> p = {1, 1, 0, 0, 1}, l = {1, 0, 0, 1, 1};
  EXPECT_DOUBLE_EQ(trainers::accuracy(p, l), 0.6);
  EXPECT_DOUBLE_EQ(trainers::f1_binary(p, l), 2.0 * 2 / (2 * 2 + 1 + 1));
  // MCC = (tp tn - fp fn) / sqrt(...) = (2*1 - 1*1) / sqrt(3*2*3*2) = 1/6.
  EXPECT_NEAR(trainers::matthews(p, l), 1.0 / 6.0, 1e-12);
  EXPECT_NEAR(trainers::pearson({1, 2, 3}, {2, 4, 7}), 0.9933992677987828, 1e-12);
  EXPECT_DOUBLE_EQ(trainers::spearman({1, 2, 3, 4}, {10, 20, 20, 40}), 0.9486832980505138);
}

// The whole head-pruning pipeline on the tiny model (2 layers x 4 heads): fine-tune, gated
// fine-tuning with self-distillation and a head-count target, removal, mask tuning, export.
// Killed once in head_gates and once in mask_tune (after the heads are gone) and resumed,
// it ends bitwise equal to an uninterrupted run; the export is smaller and loads back.
TEST_F(FinetunePrune, HeadPruningPipelineResumesBitwiseAndExportsASmallerModel) {
  json e = json::parse(std::ifstream(exp()));
  e["teacher"] = {{"temperature", 2.0}, {"alpha", 0.5}, {"hidden_weight", 0.1}};
  json train = {{"epochs", 2}, {"lr", 3e-4}, {"batch_size", 8}, {"checkpoint_every", 4}, {"log_every", 5}};
  json gates = train;
  gates["kind"] = "head_gates";
  gates["epochs"] = 3;
  gates["target_heads"] = 3;
  gates["target_warmup_ratio"] = 0.3;
  gates["lagrangian_lr"] = 1.0;
  gates["gate_init"] = 1.0;  // gates start nearer to closing: the stage is short
  gates["gate_lr"] = 0.2;
  gates["ffn_gates"] = true;  // and FFN neurons (64 per layer)
  gates["ffn_l0_penalty"] = 0.01;
  json tune = train;
  tune["kind"] = "mask_tune";
  json ft = train;
  ft["kind"] = "finetune";
  ft["epochs"] = 20;
  e["stages"] = {ft, gates, {{"kind", "remove_heads"}}, tune, {{"kind", "export"}}};
  write_experiment(e);
  Result a = run(exp() + " --set output_dir=full");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.err.find("head gates:"), std::string::npos) << a.err;  // the heat map
  // Stage 1 (head_gates) has 36 steps, checkpoints every 4: die at 10; stage 3 (mask_tune) at 7.
  for (const char* kill : {"1:10", "3:7"}) {
    Result k = run(exp() + " --set output_dir=killed" + (std::string(kill) == "1:10" ? "" : " --resume"),
                   std::string("LOPPER_KILL_AFTER_STEP=") + kill);
    ASSERT_EQ(k.code, 128 + SIGKILL) << kill << "\n" << k.err;
  }
  Result r = run(exp() + " --set output_dir=killed --resume");
  ASSERT_EQ(r.code, 0) << r.err;

  auto [sa, sb] = expect_same_results(dir / "full", dir / "killed");
  EXPECT_EQ(sa["pruning"]["gates"], sb["pruning"]["gates"]);

  // Heads were removed, and the summary, the exported config and the weights agree.
  json p = sa["pruning"];
  int64_t kept = p["heads_kept"];
  EXPECT_EQ(p["heads_total"], 8);
  EXPECT_LT(kept, 8) << p.dump();
  EXPECT_GE(kept, 2) << "one head per layer is kept unless allow_empty_layers";
  EXPECT_LT(p["after"]["flops"]["total"].get<double>(), p["before"]["flops"]["total"].get<double>());
  json cfg = json::parse(std::ifstream(dir / "full" / "model" / "config.json"));
  auto full = nn::load_safetensors((dir / "full" / "model" / "model.safetensors").string()).tensors;
  int64_t from_cfg = 0;
  for (int64_t l = 0; l < 2; ++l) {
    int64_t n = cfg["lopper_heads_per_layer"][l];
    from_cfg += n;
    EXPECT_EQ(full.at("bert.encoder.layer." + std::to_string(l) + ".attention.self.query.weight").size(0), n * 8);
    size_t pruned = cfg["pruned_heads"].contains(std::to_string(l)) ? cfg["pruned_heads"][std::to_string(l)].size() : 0;
    EXPECT_EQ(static_cast<int64_t>(pruned), 4 - n);
  }
  EXPECT_EQ(from_cfg, kept);
  // FFN neurons too: the config's per-layer widths match the weights and the summary.
  for (int64_t l = 0; l < 2; ++l) {
    int64_t w = cfg["lopper_intermediate_sizes"][l];
    EXPECT_EQ(w, p["ffn_kept"][l].get<int64_t>());
    EXPECT_EQ(full.at("bert.encoder.layer." + std::to_string(l) + ".intermediate.dense.weight").size(0), w);
    EXPECT_EQ(full.at("bert.encoder.layer." + std::to_string(l) + ".output.dense.weight").size(1), w);
  }
  EXPECT_LT(cfg["lopper_intermediate_sizes"][0].get<int64_t>() + cfg["lopper_intermediate_sizes"][1].get<int64_t>(), 128)
      << p.dump();
  EXPECT_EQ(cfg["num_attention_heads"], 4);  // transformers' reading: 4 heads minus pruned_heads
  // Gate values were logged while training.
  std::ifstream log(dir / "full" / "metrics.jsonl");
  std::string line;
  int gate_lines = 0;
  while (std::getline(log, line)) gate_lines += json::parse(line).contains("gates");
  EXPECT_GT(gate_lines, 3);

  // The export evaluates to the same dev accuracy as a fresh model.
  json s2 = evaluate_export("full/model");
  EXPECT_EQ(s2["final_eval"]["accuracy"], sa["final_eval"]["accuracy"]);
  EXPECT_EQ(s2["heads_per_layer"], cfg["lopper_heads_per_layer"]);
}

// The pruning stages' rules are checked before anything runs, each error naming its path.
TEST_F(FinetunePrune, PruningStagesAreValidatedUpFront) {
  json base = json::parse(std::ifstream(exp()));
  auto error_of = [&](json stages, bool teacher) -> std::string {
    json e = base;
    e["stages"] = std::move(stages);
    if (teacher) e["teacher"] = json::object();
    try {
      trainers::parse_experiment(e, exp());
    } catch (const Error& err) {
      return err.what();
    }
    return "";
  };
  json gates = {{"kind", "head_gates"}, {"l0_penalty", 0.01}};
  json remove = {{"kind", "remove_heads"}};
  EXPECT_EQ(error_of({gates, remove, {{"kind", "export"}}}, true), "");
  EXPECT_EQ(error_of({gates, {{"kind", "evaluate"}}, remove}, false), "");  // distill defaults off without a teacher
  EXPECT_NE(error_of({gates}, true).find("head_gates must be followed by a remove_heads stage"), std::string::npos);
  EXPECT_NE(error_of({gates, {{"kind", "export"}}, remove}, true).find("stages.1: kind 'export' cannot follow head_gates"),
            std::string::npos);
  EXPECT_NE(error_of({remove}, true).find("stages.0: remove_heads needs a head_gates or movement stage"), std::string::npos);
  json both = gates;
  both["target_heads"] = 36;
  EXPECT_NE(error_of({both, remove}, true).find("stages.0: set exactly one of l0_penalty"), std::string::npos);
  json distill = {{"kind", "mask_tune"}, {"distill", true}};
  EXPECT_NE(error_of({distill}, false).find("stages.0.distill: needs a \"teacher\" block"), std::string::npos);
  json bad_map = base;
  bad_map["teacher"] = {{"layer_map", {{1, 2, 3}}}};
  EXPECT_THROW(trainers::parse_experiment(bad_map, exp()), Error);
  json missing = base;
  missing["teacher"] = {{"path", "nowhere"}};
  EXPECT_THROW(trainers::parse_experiment(missing, exp()), Error);
  // The inference packing's keys too (not a stage's, but checked as early).
  json panels = base;
  panels["block_sparse"] = {{"dense_panels", "auto"}};
  EXPECT_EQ(trainers::parse_experiment(panels, exp()).block_sparse.dense_panels,
            nn::BlockSparseOptions::Panels::where_preferred);
  panels["block_sparse"] = {{"dense_panels", "sometimes"}};
  try {
    trainers::parse_experiment(panels, exp());
    ADD_FAILURE() << "dense_panels 'sometimes' accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("block_sparse.dense_panels"), std::string::npos) << err.what();
  }
}

// The device key: parsed strictly, and where it cannot run refused with one line that names
// it and the reason, before anything is written.
TEST_F(FinetunePrune, DeviceKeyIsRefusedWhereItCannotRunBeforeAnythingIsWritten) {
  auto expect_refused = [&](const std::string& device, const std::string& needle) {
    Result r = run(exp() + " --set device=" + device);
    EXPECT_EQ(r.code, 1) << device << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << device << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected:\n" << r.err;
    EXPECT_FALSE(fs::exists(dir / "out")) << device;
  };
  expect_refused("tpu", "device: 'tpu' is not cpu, cuda or cuda:N");
  expect_refused("cuda:x", "device: 'cuda:x' is not cpu, cuda or cuda:N");
  if (!cuda_built()) {
    expect_refused("cuda", "device: 'cuda:0' needs a CUDA build of Lopper; this one is CPU-only");
  } else if (cuda_device_count() == 0) {
    expect_refused("cuda", "device: 'cuda:0' is not available: this machine has no CUDA device");
  } else {
    expect_refused("cuda:" + std::to_string(cuda_device_count()), "is not available: this machine has");
  }
  Result v = run(exp() + " --validate --set device=cuda:1");  // parsing does not need the device
  EXPECT_EQ(v.code, 0) << v.err;
}

// --help lists every flag and every stage kind of the registry, with its docs line.
TEST(FinetunePruneApp, HelpListsEveryFlagAndStageKind) {
  fs::path out = fs::temp_directory_path() / ("lopper_fp_help_" + std::to_string(::getpid()) + ".txt");
  int status = std::system((std::string(LOPPER_FINETUNE_PRUNE) + " --help > " + out.string()).c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::ifstream f(out);
  std::string help((std::istreambuf_iterator<char>(f)), {});
  fs::remove(out);
  for (const char* flag : {"--set", "--validate", "--resume", "--overwrite", "--threads", "experiment"})
    EXPECT_NE(help.find(flag), std::string::npos) << flag << "\n" << help;
  for (const trainers::StageKind& k : trainers::stage_kinds()) {
    EXPECT_NE(help.find("  " + k.name + " "), std::string::npos) << k.name << "\n" << help;
    EXPECT_NE(help.find(k.doc), std::string::npos) << k.doc << "\n" << help;
  }
  Result r = run("--no-such-flag x.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--no-such-flag"), std::string::npos) << r.err;
}
