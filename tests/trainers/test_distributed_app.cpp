// finetune_prune as 2 MPI ranks, launched by mpirun as a user would: rank 0 alone writes,
// the sharded evaluation gives one process's metrics, and the failures a cluster sees: a
// bad input on one rank only, a rank killed mid-run, a signal reaching one rank. Each job
// runs under `timeout`, so a hang fails the test (exit 124) instead of stalling ctest.
#include <set>

#include "workspace.h"

using namespace lopper::testing;

namespace {

class DistributedApp : public Workspace {
 protected:
  void SetUp() override {
    Workspace::SetUp();
    json e = json::parse(std::ifstream(exp()));
    // 96 examples, 2 ranks x 8 = 6 steps per epoch, 120 in all, at twice the lr of one
    // process with batch 8 (linear scaling); 5 dev batches of 8: 3 for rank 0, 2 for rank 1.
    e["stages"][0]["lr"] = 6e-4;
    e["stages"][0]["eval_batch_size"] = 8;
    write_experiment(e);
  }
  // One mpirun job of app contexts ("ARGS" or "ENV=... ARGS"), ':'-separated as MPMD.
  Result mpirun(const std::vector<std::string>& contexts) {
    std::string cmd = "cd " + dir.string() + " && OMP_NUM_THREADS=1 timeout 240 " + std::string(LOPPER_MPIEXEC) +
                      " --allow-run-as-root --oversubscribe";
    for (size_t i = 0; i < contexts.size(); ++i)
      cmd += std::string(i ? " :" : "") + " -np 1 env " + contexts[i];
    return run_command(cmd);
  }
  std::string app(const std::string& args) { return std::string(LOPPER_FINETUNE_PRUNE) + " " + exp() + " " + args; }
  Result two_ranks(const std::string& args) { return mpirun({app(args), app(args)}); }
};

}  // namespace

TEST_F(DistributedApp, RankZeroWritesOnceAndTheShardedEvaluationIsOneProcesss) {
  Result r = two_ranks("--set output_dir=dp");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("x 2 ranks (mpi)"), std::string::npos) << r.err;
  json s = json::parse(std::ifstream(dir / "dp" / "summary.json"));
  EXPECT_EQ(s["world_size"], 2);
  EXPECT_EQ(json::parse(std::ifstream(dir / "dp" / "config.resolved.json"))["lopper"]["world_size"], 2);
  ASSERT_EQ(s["timing"].size(), 1u) << s.dump();
  EXPECT_EQ(s["timing"][0]["steps"], 120);
  EXPECT_GT(s["timing"][0]["allreduce_share"].get<double>(), 0.0);
  // Every evaluation: the gathered predictions of both ranks, equal to one process
  // evaluating the exported weights alone.
  json one = evaluate_export((dir / "dp" / "model").string());
  EXPECT_EQ(s["final_eval"]["accuracy"], one["final_eval"]["accuracy"]);
  EXPECT_EQ(s["final_eval"]["examples"], 40);
  EXPECT_GT(s["final_eval"]["accuracy"].get<double>(), 0.75) << s.dump();
  // One writer: each metrics line once, the steps in order.
  std::ifstream m(dir / "dp" / "metrics.jsonl");
  std::string line;
  int64_t last = 0, lines = 0;
  while (std::getline(m, line)) {
    json j = json::parse(line);
    if (j.contains("eval")) continue;
    EXPECT_GT(j["step"].get<int64_t>(), last) << line;
    last = j["step"];
    ++lines;
  }
  EXPECT_EQ(lines, 24);  // log_every 5 over 120 steps
}

TEST_F(DistributedApp, BadInputOnOneRankEndsEveryRankWithItsMessage) {
  // As on a cluster whose second node has another dev file: rank 1 alone fails to read it
  // while rank 0 goes on to wait for it in a collective. Two ways: a file rank 1 finds
  // damaged (seen inside the run, which ends the job through MPI_Abort), and one it does
  // not find at all (seen before MPI starts; mpirun ends the job when rank 1 exits 1).
  std::ofstream(dir / "bad_dev.tsv") << "sentence\tlabel\nw5 w6 w7\tmaybe\n";
  for (std::string file : {"bad_dev.tsv", "missing_dev.tsv"}) {
    Result r = mpirun({app("--set output_dir=bad --overwrite"), app("--set output_dir=bad --overwrite --set data.dev=" + file)});
    EXPECT_NE(r.code, 0) << r.err;
    EXPECT_NE(r.code, 124) << "the job hung:\n" << r.err;
    EXPECT_NE(r.err.find("(rank 1 of 2): error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find((dir / file).string()), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "bad" / "summary.json"));
  }
}

TEST_F(DistributedApp, KilledRankEndsTheJobAndResumeGivesTheUninterruptedResult) {
  Result a = two_ranks("--set output_dir=full");
  ASSERT_EQ(a.code, 0) << a.err;
  // Rank 1 dies at step 15 (checkpoints every 4): rank 0, waiting for it in a collective,
  // is ended by mpirun.
  Result k = mpirun({app("--set output_dir=killed"), "LOPPER_KILL_AFTER_STEP=15 " + app("--set output_dir=killed")});
  EXPECT_NE(k.code, 0) << k.err;
  EXPECT_NE(k.code, 124) << "the job hung:\n" << k.err;
  EXPECT_FALSE(fs::exists(dir / "killed" / "summary.json"));
  Result r = two_ranks("--set output_dir=killed --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming from"), std::string::npos) << r.err;
  expect_same_results(dir / "full", dir / "killed");
}

TEST_F(DistributedApp, SignalOnOneRankStopsEveryRankAtTheSameStep) {
  Result a = two_ranks("--set output_dir=full");
  ASSERT_EQ(a.code, 0) << a.err;
  // SIGTERM reaches rank 1 alone after step 15: both ranks stop after step 16 with one
  // checkpoint, and the resumed run ends as the uninterrupted one.
  Result t = mpirun({app("--set output_dir=term"),
                     "LOPPER_KILL_AFTER_STEP=15 LOPPER_KILL_SIGNAL=TERM " + app("--set output_dir=term")});
  EXPECT_EQ(t.code, 130) << t.err;
  EXPECT_NE(t.err.find("interrupted at stages.0 (finetune), step 16"), std::string::npos) << t.err;
  std::string latest;
  std::ifstream(dir / "term" / "checkpoints" / "LATEST") >> latest;
  EXPECT_EQ(json::parse(std::ifstream(dir / "term" / "checkpoints" / latest / "state.json"))["step"], 16);
  Result r = two_ranks("--set output_dir=term --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_results(dir / "full", dir / "term");
}

// Through Slurm, as on a cluster: a one-node Slurm started on localhost by
// tests/slurm/local_slurm.sh (skipped where Slurm is not installed), the job launched by
// `srun -n 2 --mpi=pmix` and by the sbatch script docs/distributed.md shows. Same ranks,
// same batches and the same reduction as under mpirun: the same weights, bit for bit.
TEST_F(DistributedApp, SrunAndSbatchTrainAsMpirunDoes) {
  Result a = two_ranks("--set output_dir=mpirun");
  ASSERT_EQ(a.code, 0) << a.err;
  std::ofstream(dir / "job.sbatch") << "#!/bin/bash\n#SBATCH --job-name=lopper-test --nodes=1 --ntasks-per-node=2\n"
                                    << "#SBATCH --output=" << (dir / "sbatch.out").string() << "\n"
                                    << "export OMP_NUM_THREADS=1\nsrun --mpi=pmix " << app("--set output_dir=sbatch") << "\n";
  std::string script = "cd " + dir.string() + " && OMP_NUM_THREADS=1 srun -n 2 --mpi=pmix " + app("--set output_dir=srun") +
                       " && sbatch --wait " + (dir / "job.sbatch").string();
  Result r = run_command("timeout 300 " + std::string(LOPPER_SOURCE_DIR) + "/tests/slurm/local_slurm.sh bash -c '" + script + "'");
  if (r.code == 77) GTEST_SKIP() << r.err;
  std::ifstream out(dir / "sbatch.out");
  ASSERT_EQ(r.code, 0) << r.err << "\nsbatch.out:\n" << std::string(std::istreambuf_iterator<char>(out), {});
  for (const char* run : {"srun", "sbatch"}) {
    EXPECT_EQ(json::parse(std::ifstream(dir / run / "summary.json"))["world_size"], 2) << run;
    expect_same_results(dir / "mpirun", dir / run);
  }
}
