// finetune_prune: runs an experiment file's stages (see docs/experiment.md).
// Usage: finetune_prune EXPERIMENT.json [--set key.path=value]... [--validate] [--resume]
//                       [--overwrite] [--threads N]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "trainers/runner.h"

using namespace lopper;

namespace {
const char* kUsage =
    "usage: finetune_prune EXPERIMENT.json [--set key.path=value]... [--validate] [--resume] [--overwrite] "
    "[--threads N]\n"
    "  --set       override a key of the file (stages by index: --set stages.0.lr=3e-5)\n"
    "  --validate  check the file, its paths and values; run nothing\n"
    "  --resume    continue the run in output_dir from its last checkpoint\n"
    "  --overwrite replace a previous run in output_dir\n"
    "stages: finetune, head_gates, remove_heads, mask_tune, evaluate, export (every key: docs/experiment.md)\n";
}

int main(int argc, char** argv) {
  std::string file;
  std::vector<std::string> overrides;
  bool validate = false;
  trainers::RunOptions opts;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw Error("missing value after " + a);
        return argv[++i];
      };
      if (a == "--set") overrides.push_back(next());
      else if (a.rfind("--set=", 0) == 0) overrides.push_back(a.substr(6));
      else if (a == "--validate") validate = true;
      else if (a == "--resume") opts.resume = true;
      else if (a == "--overwrite") opts.overwrite = true;
      else if (a == "--threads") overrides.push_back("threads=" + next());
      else if (a == "--help" || a == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (!a.empty() && a[0] == '-') {
        throw Error("unknown option '" + a + "' (try --help)");
      } else if (file.empty()) {
        file = a;
      } else {
        throw Error("more than one experiment file ('" + file + "' and '" + a + "')");
      }
    }
    if (file.empty()) {
      std::fputs(kUsage, stderr);
      return 2;
    }
    if (const char* k = std::getenv("LOPPER_KILL_AFTER_STEP")) {  // "STEP" or "STAGE:STEP"
      std::string v = k;
      size_t colon = v.find(':');
      if (colon != std::string::npos) opts.kill_stage = std::atoll(v.substr(0, colon).c_str());
      opts.kill_after_step = std::atoll(v.substr(colon == std::string::npos ? 0 : colon + 1).c_str());
    }
    trainers::Experiment e = trainers::load_experiment(file, overrides);
    if (validate) {
      std::printf("%s: valid (%zu stages, output_dir %s)\n", file.c_str(), e.stages.size(), e.output_dir.c_str());
      return 0;
    }
    trainers::run_experiment(e, opts);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "finetune_prune: error: %s\n", ex.what());
    return 1;
  }
  return 0;
}
