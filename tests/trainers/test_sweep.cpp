// Sweeps: the sweep file expanded into runs (grid, zip, named settings, stable names), its
// mistakes named by key, and the sweep app on the tiny workspace: a local queue that
// finishes what a killed one left, a Slurm job array on a one-node Slurm started on
// localhost, and collect's table and plots.
#include <signal.h>

#include <chrono>
#include <thread>

#include "trainers/sweep.h"
#include "workspace.h"

using namespace lopper;
using namespace lopper::testing;

namespace {

class Sweep : public Workspace {
 protected:
  // A sweep file over the workspace's experiment.
  std::string sweep_file(const json& runs, const json& extra = json::object(), const std::string& name = "sweep.json") {
    json s = {{"name", "tiny-sweep"}, {"experiment", "exp.json"}, {"output_dir", "sweep_out"}, {"runs", runs}};
    for (auto& [k, v] : extra.items()) s[k] = v;
    std::ofstream(dir / name) << s.dump(2);
    return (dir / name).string();
  }
  std::string load_error(const json& runs, const json& extra = json::object()) {
    try {
      trainers::Sweep s = trainers::load_sweep(sweep_file(runs, extra));
      trainers::validate_sweep(s);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  Result sweep(const std::string& args) {
    return run_command("cd " + dir.string() + " && OMP_NUM_THREADS=1 " + std::string(LOPPER_SWEEP) + " " + args);
  }
  // Four runs: a grid of two lrs x two seeds.
  std::string four_runs(const json& extra = json::object()) {
    return sweep_file({{{"grid", {{"stages.0.lr", {3e-4, 1e-4}}, {"seed", {3, 4}}}}}}, extra);
  }
};

std::string names(const trainers::Sweep& s) {
  std::string n;
  for (const auto& r : s.runs) n += r.name + " ";
  return n;
}

}  // namespace

TEST_F(Sweep, GridZipAndSettingsExpandWithStableNames) {
  json runs = {{{"grid", {{"stages.0.lr", {3e-4, 1e-4}}, {"seed", {1, 2}}}}},
               {{"name", "pairs"}, {"zip", {{"stages.0.batch_size", {4, 8, 16}}, {"data.max_seq_len", {8, 12, 16}}}}},
               {{"name", "long"}, {"set", {{"stages.0.epochs", 40}}}}};
  trainers::Sweep s = trainers::load_sweep(sweep_file(runs, {{"set", {{"threads", 1}}}}));
  ASSERT_EQ(s.runs.size(), 8u);  // 2 x 2 + 3 + 1
  // Keys in alphabetical order (a JSON object has none of its own), the last one fastest.
  EXPECT_EQ(names(s),
            "seed-1_lr-0.0003 seed-1_lr-0.0001 seed-2_lr-0.0003 seed-2_lr-0.0001 pairs_max_seq_len-8_batch_size-4 "
            "pairs_max_seq_len-12_batch_size-8 pairs_max_seq_len-16_batch_size-16 long ");
  // Every run carries the common "set" first, then its own values, as --set overrides.
  EXPECT_EQ(s.runs[1].overrides(), (std::vector<std::string>{"threads=1", "seed=1", "stages.0.lr=0.0001"}));
  EXPECT_EQ(s.runs[5].overrides(), (std::vector<std::string>{"threads=1", "data.max_seq_len=12", "stages.0.batch_size=8"}));
  EXPECT_EQ(s.runs[7].overrides(), (std::vector<std::string>{"threads=1", "stages.0.epochs=40"}));
  EXPECT_EQ(s.runs[0].series, "seed, lr");
  EXPECT_EQ(s.runs[4].series, "pairs");
  EXPECT_EQ(s.run_dir(s.runs[7]), dir / "sweep_out" / "long");
  trainers::validate_sweep(s);  // every run is a valid experiment
  // The same file gives the same names: a resumed sweep finds its runs.
  EXPECT_EQ(names(trainers::load_sweep((dir / "sweep.json").string())), names(s));
  // An array value names itself with x: [32, 32] -> 32x32.
  trainers::Sweep b = trainers::load_sweep(sweep_file({{{"grid", {{"stages.0.lr", {1e-4}}, {"model.path", {"model"}}}}}}));
  EXPECT_EQ(b.runs[0].name, "path-model_lr-0.0001");
  trainers::Sweep c = trainers::load_sweep(sweep_file({{{"grid", {{"stages.0.block", {json{32, 32}, json{16, 16}}}}}}}));
  EXPECT_EQ(names(c), "block-32x32 block-16x16 ");
}

TEST_F(Sweep, MistakesAreNamedByTheirKey) {
  auto has = [](const std::string& err, const std::string& part) {
    return err.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                                : ::testing::AssertionFailure() << "'" << part << "' not in: " << err;
  };
  // A key no experiment accepts: the run, the sweep key's block and a suggestion.
  std::string e = load_error({{{"grid", {{"stages.0.learning_rate", {1e-4, 2e-4}}}}}});
  EXPECT_TRUE(has(e, "run 'learning_rate-0.0001' (runs.0 (grid): stages.0.learning_rate = 0.0001)"));
  EXPECT_TRUE(has(e, "unknown key"));
  e = load_error({{{"grid", {{"stages.0.lrr", {1e-4}}}}}});
  EXPECT_TRUE(has(e, "did you mean 'stages.0.lr'?"));
  EXPECT_TRUE(has(load_error({{{"grid", {{"stages.0.lr", json::array()}}}}}), "runs.0.grid.stages.0.lr: an empty list"));
  EXPECT_TRUE(has(load_error({{{"zip", {{"stages.0.lr", {1e-4, 2e-4}}, {"seed", {1}}}}}}),
                  "runs.0.zip: lists that vary together must have one length; 'seed' has 1, 'stages.0.lr' has 2"));
  EXPECT_TRUE(has(load_error({{{"grid", {{"seed", {1, 2}}}}}, {{"grid", {{"seed", {2}}}}}}),
                  "two runs would be named 'seed-2' (runs.0 (grid) and runs.1 (grid))"));
  EXPECT_TRUE(has(load_error({{{"set", {{"seed", 1}}}}}), "runs.0: neither varies a key (grid, zip) nor has a name"));
  EXPECT_TRUE(has(load_error({{{"name", "x"}, {"set", {{"output_dir", "elsewhere"}}}}}), "sets output_dir"));
  EXPECT_TRUE(has(load_error(json::array()), "runs: expected a non-empty list"));
  EXPECT_TRUE(has(load_error({{{"grid", {{"seed", {1}}}}}}, {{"locall", {{"jobs", 2}}}}), "locall: unknown key (did you mean 'local'?)"));
  EXPECT_TRUE(has(load_error({{{"grid", {{"seed", {1}}}}}}, {{"slurm", {{"cpus_per_task", 0}}}}), "slurm.cpus_per_task"));
  EXPECT_TRUE(has(load_error({{{"grid", {{"seed", {1}}}}}}, {{"experiment", "nope.json"}}), "nope.json' is not a file"));
  // The file's name leads every message.
  EXPECT_TRUE(has(load_error({{{"grid", {{"seed", json::array()}}}}}), (dir / "sweep.json").string() + ": "));
}

TEST_F(Sweep, LocalQueueRunsEveryRunAndCollectTablesThem) {
  std::string f = four_runs({{"local", {{"jobs", 2}, {"threads", 1}}}});
  Result r = sweep(f + " local");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("4 runs, 0 done, 4 to run, 2 at a time x 1 threads"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("4 done, 0 running, 0 failed, 0 left"), std::string::npos) << r.err;
  trainers::Sweep s = trainers::load_sweep(f);
  for (const auto& run : s.runs) {
    json sm = json::parse(std::ifstream(s.run_dir(run) / "summary.json"));
    json cfg = json::parse(std::ifstream(s.run_dir(run) / "config.resolved.json"));
    EXPECT_EQ(cfg["seed"], run.values[0].second) << run.name;  // the run's own values
    EXPECT_EQ(cfg["stages"][0]["lr"], run.values[1].second) << run.name;
  }
  // Started again: nothing left to run.
  Result again = sweep(f + " local");
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("4 done, 0 to run"), std::string::npos) << again.err;
  EXPECT_EQ(again.err.find("started"), std::string::npos) << again.err;
  // A baseline made elsewhere joins the table and the plots (here: a copy of one run).
  fs::copy(s.run_dir(s.runs[0]), dir / "elsewhere", fs::copy_options::recursive);
  four_runs({{"local", {{"jobs", 2}, {"threads", 1}}}, {"baselines", {{"reference", "elsewhere"}}}});
#ifdef LOPPER_HAVE_BENCH_BERT
  Result c = sweep(f + " collect --rounds 1 --bench-threads 1");  // latency re-measured by bench_bert
#else
  Result c = sweep(f + " collect --no-latency");  // a build without bench/ (the sanitizer build)
#endif
  ASSERT_EQ(c.code, 0) << c.err;
  std::ifstream t(dir / "sweep_out" / "table.md");
  std::string table((std::istreambuf_iterator<char>(t)), {});
  for (const auto& run : s.runs) EXPECT_NE(table.find("| " + run.name + " | done |"), std::string::npos) << table;
  EXPECT_NE(table.find("| reference | done |"), std::string::npos) << table;
  // Nothing pruned: every encoder weight is left, 2 layers x (4 x 32 x 32 + 2 x 32 x 64).
  json cfg = json::parse(std::ifstream(dir / "model" / "config.json"));
  int64_t h = cfg["hidden_size"], i = cfg["intermediate_size"], n = cfg["num_hidden_layers"];
  EXPECT_NE(table.find("| 22562 | " + std::to_string(n * (4 * h * h + 2 * h * i)) + " |"), std::string::npos) << table;
  for (const char* p : {"pareto_flops.png", "pareto_flops.svg", "pareto_latency.png", "pareto_latency.svg", "table.csv"})
    EXPECT_GT(fs::file_size(dir / "sweep_out" / p), 100u) << p;
}

TEST_F(Sweep, AFailedRunIsRecordedAndTheOthersGoOn) {
  // seed 4 with a batch size the data cannot fill... a max_seq_len over the model's limit.
  std::string f = sweep_file({{{"grid", {{"data.max_seq_len", {16, 9999}}}}}}, {{"local", {{"jobs", 1}}}});
  Result v = sweep(f + " local");  // validation refuses it before anything starts
  EXPECT_EQ(v.code, 1);
  EXPECT_NE(v.err.find("run 'max_seq_len-9999'"), std::string::npos) << v.err;
  EXPECT_FALSE(fs::exists(dir / "sweep_out" / "max_seq_len-16" / "summary.json"));
  // A failure only a run can meet: its dev file disappears after validation. Simulated by
  // a finetune_prune that fails for one run.
  fs::path fake = dir / "fake_fp.sh";
  std::ofstream(fake) << "#!/bin/bash\ncase \"$*\" in *9.999e-05*) echo 'finetune_prune: error: the disk is on fire' >&2; exit 1 ;; esac\n"
                      << "exec " << LOPPER_FINETUNE_PRUNE << " \"$@\"\n";
  fs::permissions(fake, fs::perms::owner_all);
  std::string g = sweep_file({{{"grid", {{"stages.0.lr", {3e-4, 9999e-8}}}}}}, {{"local", {{"jobs", 1}}}}, "g.json");
  Result r = sweep(g + " --finetune-prune " + fake.string() + " local");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("failed (exit 1): finetune_prune: error: the disk is on fire"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("1 done, 0 running, 1 failed, 0 left"), std::string::npos) << r.err;
  Result c = sweep(g + " collect --no-latency");
  ASSERT_EQ(c.code, 0) << c.err;
  std::ifstream t(dir / "sweep_out" / "table.md");
  std::string table((std::istreambuf_iterator<char>(t)), {});
  EXPECT_NE(table.find("| failed | 9.999e-05 | finetune_prune: error: the disk is on fire |"), std::string::npos) << table;
}

TEST_F(Sweep, KilledLocalQueueFinishesOnlyWhatWasLeft) {
  // Longer runs (about a second each), one at a time.
  json e = json::parse(std::ifstream(exp()));
  e["stages"][0]["epochs"] = 200;
  e["stages"][0]["eval_every"] = 600;
  e["stages"][0]["checkpoint_every"] = 100;
  write_experiment(e);
  std::string f = four_runs({{"local", {{"jobs", 1}, {"threads", 1}}}});
  trainers::Sweep s = trainers::load_sweep(f);
  fs::path pidfile = dir / "sweep.pid";
  std::system(("cd " + dir.string() + " && (OMP_NUM_THREADS=1 " + std::string(LOPPER_SWEEP) + " " + f +
               " local > first.log 2>&1 & echo $! > " + pidfile.string() + ")")
                  .c_str());
  // Kill the queue (SIGKILL: no chance to clean up) once the first run is done and the
  // second has a checkpoint.
  auto second = s.run_dir(s.runs[1]);
  for (int i = 0; i < 1200 && !(fs::exists(s.run_dir(s.runs[0]) / "summary.json") &&
                                fs::exists(second / "checkpoints" / "LATEST"));
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(second / "checkpoints" / "LATEST")) << "the second run never checkpointed";
  pid_t pid = 0;
  std::ifstream(pidfile) >> pid;
  ASSERT_GT(pid, 0);
  auto first_done = fs::last_write_time(s.run_dir(s.runs[0]) / "summary.json");
  ::kill(pid, SIGKILL);
  // The running finetune_prune is told (SIGTERM, through PR_SET_PDEATHSIG), saves a
  // checkpoint and ends; wait for its lock to go.
  for (int i = 0; i < 200 && std::system(("flock -n " + (second / ".lock").string() + " true").c_str()) != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Result r = sweep(f + " local");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("4 runs, 1 done, 3 to run"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("started " + s.runs[1].name + " (resuming)"), std::string::npos) << r.err;
  EXPECT_EQ(fs::last_write_time(s.run_dir(s.runs[0]) / "summary.json"), first_done);  // not run again
  for (const auto& run : s.runs) EXPECT_TRUE(fs::exists(s.run_dir(run) / "summary.json")) << run.name;
  std::ifstream log(second / "finetune_prune.log");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("resuming from"), std::string::npos) << text;
}

TEST_F(Sweep, SlurmJobArrayRunsEveryRunOnALocalSlurm) {
  std::string f = four_runs({{"slurm", {{"cpus_per_task", 1}, {"max_parallel", 2}, {"time", "00:10:00"}}}});
  // Without Slurm at hand: the script is written, --submit says what is missing.
  Result w = sweep(f + " slurm");
  ASSERT_EQ(w.code, 0) << w.err;
  std::ifstream sb(dir / "sweep_out" / "sweep.sbatch");
  std::string script((std::istreambuf_iterator<char>(sb)), {});
  EXPECT_NE(script.find("#SBATCH --array=0,1,2,3%2\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --time=00:10:00\n"), std::string::npos) << script;
  // Flags win over the file.
  Result flagged = sweep(f + " slurm --time 01:30:00 --partition gpu --max-parallel 3 --mem 4G");
  ASSERT_EQ(flagged.code, 0) << flagged.err;
  std::ifstream sb2(dir / "sweep_out" / "sweep.sbatch");
  std::string script2((std::istreambuf_iterator<char>(sb2)), {});
  for (const char* line : {"#SBATCH --time=01:30:00\n", "#SBATCH --partition=gpu\n", "#SBATCH --array=0,1,2,3%3\n",
                           "#SBATCH --mem=4G\n", "#SBATCH --cpus-per-task=1\n"})
    EXPECT_NE(script2.find(line), std::string::npos) << line << script2;
  Result none = run_command("cd " + dir.string() + " && PATH=" + dir.string() + " " + std::string(LOPPER_SWEEP) + " " + f +
                            " slurm --submit");
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.err.find("'sbatch' is not on PATH"), std::string::npos) << none.err;
  // On a one-node Slurm: submit, wait for the array to leave the queue, collect.
  std::string script_cmd = std::string(LOPPER_SWEEP) + " " + f + " slurm --submit > jobid && while squeue -h | grep -q .; do sleep 0.2; done";
  Result r = run_command("cd " + dir.string() + " && timeout 300 " + std::string(LOPPER_SOURCE_DIR) +
                         "/tests/slurm/local_slurm.sh bash -c '" + script_cmd + "'");
  if (r.code == 77) GTEST_SKIP() << r.err;
  ASSERT_EQ(r.code, 0) << r.err;
  Result c = sweep(f + " collect --no-latency");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_NE(c.err.find("4 of 4 runs done"), std::string::npos) << c.err;
  // Submitting again: nothing left.
  Result again = sweep(f + " slurm --submit");
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("every run is done"), std::string::npos) << again.err;
}
