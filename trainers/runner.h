// The entry point behind finetune_prune: loads the model, data and tokenizer an experiment
// names, runs its stages in order (through the registry, trainers/stages.h), writes
// config.resolved.json, metrics.jsonl, checkpoints and summary.json under output_dir, and
// resumes a killed run from its last checkpoint with the same result. The machinery is
// trainers/run.h; this header is all an app needs.
#pragma once
#include <csignal>
#include <string>

#include "core/error.h"
#include "trainers/experiment.h"

namespace lopper::trainers {

struct RunOptions {
  bool resume = false;     // continue from output_dir's last checkpoint
  bool overwrite = false;  // clear a previous run in output_dir first
  // Testing aid: the process sends itself kill_signal (SIGKILL unless LOPPER_KILL_SIGNAL is
  // TERM or INT) right after this optimizer step (-1: never) of stage kill_stage (-1: any).
  // Set from LOPPER_KILL_AFTER_STEP ("STEP" or "STAGE:STEP").
  int64_t kill_after_step = -1;
  int64_t kill_stage = -1;
  int kill_signal = SIGKILL;
};

// Thrown when SIGINT or SIGTERM stopped a run at a step boundary, after a checkpoint: the
// run can be resumed with --resume. (A second signal stops the process at once.)
class Interrupted : public Error {
 public:
  using Error::Error;
};

// Runs every stage; throws lopper::Error on bad input. Writes nothing before the inputs
// (data files, model, output directory) have been checked.
void run_experiment(const Experiment& e, const RunOptions& options);

// What a run checks before it writes anything (data, tokenizer, model config and weights,
// teacher, stage limits), without running or writing: finetune_prune --validate.
void validate_experiment(const Experiment& e);

}  // namespace lopper::trainers
