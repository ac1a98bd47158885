// finetune_prune: runs an experiment file's stages (see docs/experiment.md).
#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "core/error.h"
#include "trainers/communicator.h"
#include "trainers/runner.h"
#include "trainers/stages.h"

using namespace lopper;

int main(int argc, char** argv) {
  CLI::App app{"Fine-tunes and prunes a BERT model as an experiment file says: its stages in order, with "
               "checkpoints,\nmetrics.jsonl, summary.json and the exported model under its output_dir.",
               "finetune_prune"};
  std::string file;
  std::vector<std::string> overrides;
  bool validate = false;
  int64_t threads = 0;
  trainers::RunOptions opts;
  app.add_option("experiment", file, "the experiment file (JSON; every key: docs/experiment.md)")->required();
  app.add_option("--set", overrides, "override a key of the file: --set stages.0.lr=3e-5 (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  app.add_flag("--validate", validate,
               "check the file, its data, model, teacher and limits as a run would before its first step; "
               "run and write nothing");
  app.add_flag("--resume", opts.resume, "continue the run in output_dir from its last checkpoint");
  app.add_flag("--overwrite", opts.overwrite, "replace a previous run in output_dir")
      ->excludes(app.get_option("--resume"));
  app.add_option("--threads", threads, "CPU threads (the file's \"threads\"; 0: all cores)")->check(apps::at_least(0));
  app.footer("stage kinds:\n" + trainers::stage_help() +
             "\nexample: finetune_prune experiments/minilm_sst2.json --set stages.1.target_heads=24");
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    if (threads > 0) overrides.push_back("threads=" + std::to_string(threads));
    if (const char* k = std::getenv("LOPPER_KILL_AFTER_STEP")) {  // testing aid: "STEP" or "STAGE:STEP"
      std::string v = k;
      size_t colon = v.find(':');
      if (colon != std::string::npos) opts.kill_stage = std::atoll(v.substr(0, colon).c_str());
      opts.kill_after_step = std::atoll(v.substr(colon == std::string::npos ? 0 : colon + 1).c_str());
      std::string sig = std::getenv("LOPPER_KILL_SIGNAL") ? std::getenv("LOPPER_KILL_SIGNAL") : "KILL";
      opts.kill_signal = sig == "TERM" ? SIGTERM : sig == "INT" ? SIGINT : SIGKILL;
    }
    trainers::Experiment e = trainers::load_experiment(file, overrides);
    if (validate) {
      trainers::validate_experiment(e);
      std::printf("%s: valid (%zu stages, output_dir %s)\n", file.c_str(), e.stages.size(), e.output_dir.c_str());
      return 0;
    }
    trainers::run_experiment(e, opts);
  } catch (const trainers::Interrupted& ex) {
    std::fprintf(stderr, "finetune_prune: %s\n", ex.what());
    return 130;  // as a shell reports a process stopped by SIGINT
  } catch (const std::exception& ex) {
    return apps::report_error(app, ex, verbose, trainers::launcher_rank_label());
  }
  return 0;
}
