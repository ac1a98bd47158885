// A sweep: one base experiment file and the runs made from it by overriding keys, as
// `finetune_prune --set` does. The sweep file (docs/sweeps.md) lists blocks of runs: a grid
// (every combination of its axes), lists that vary together (zip) and named settings; each
// run gets a stable name from its values and its own output folder under the sweep's.
// Here: reading and expanding the file, each run's state on disk, the sbatch script and
// the results table. The processes (local queue, sbatch, plots) are apps/sweep.cpp's.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace lopper::trainers {

struct SweepRun {
  std::string name;
  std::string origin;  // where in the sweep file it comes from: "runs.1 (grid)"
  std::string series;  // its block, for plots: the block's name, else the keys it varies
  std::vector<std::pair<std::string, nlohmann::json>> values;  // key path -> value, in --set order
  // "key=value" for finetune_prune --set (values as JSON).
  std::vector<std::string> overrides() const;
};

struct SlurmSpec {
  int64_t cpus_per_task = 2;
  std::string mem, time, partition, account;  // empty: the cluster's default
  int64_t gpus_per_task = 0;
  int64_t ranks = 1;         // MPI ranks per run (srun --mpi=pmix inside the task)
  int64_t max_parallel = 0;  // array tasks at once (0: as many as Slurm allows)
};

struct Sweep {
  std::string file;        // the sweep file, absolute
  std::string name;
  std::string experiment;  // the base experiment file, absolute
  std::filesystem::path output_dir;  // each run in output_dir / run name
  std::vector<SweepRun> runs;
  // Finished runs made elsewhere (the unpruned model, ...) that collect puts beside the
  // sweep's: name -> run folder (with summary.json and model/), in "baselines".
  std::vector<std::pair<std::string, std::filesystem::path>> baselines;
  int64_t jobs = 1;     // local: runs at a time
  int64_t threads = 0;  // local: threads per run (0: the cores split between the jobs)
  SlurmSpec slurm;
  std::filesystem::path run_dir(const SweepRun& r) const { return output_dir / r.name; }
};

// Reads and expands a sweep file; throws lopper::Error naming the file and the key (an
// empty axis, zip lists of different lengths, two runs with the same name, ...).
Sweep load_sweep(const std::string& path);

// Each run's experiment (base file, the run's overrides, its output folder) parsed and
// validated as `finetune_prune --validate` does; the error names the run and the sweep
// key its values come from.
void validate_sweep(const Sweep& s);

// Where a run stands, from its folder: done (summary.json), failed (the local queue's
// record of a non-zero exit, newer than any checkpoint), interrupted (a checkpoint to
// resume from), not started.
enum class RunStatus { not_started, interrupted, failed, done };
const char* status_name(RunStatus s);
RunStatus run_status(const Sweep& s, const SweepRun& r);

// The finetune_prune arguments of a run after the binary: experiment, --set overrides
// (output_dir and threads included), and --resume when a checkpoint is there now.
std::vector<std::string> run_arguments(const Sweep& s, const SweepRun& r, int64_t threads);

// One sbatch script for a Slurm job array over `todo` (indices into s.runs): per-task
// resources from s.slurm, each task runs its run (resuming if it has a checkpoint by then,
// skipping it if done).
std::string sbatch_script(const Sweep& s, const std::vector<size_t>& todo, const std::string& finetune_prune);

// One row per run, then one per baseline: its values, state, metrics and sizes from
// summary.json.
struct SweepRow {
  std::string name;
  std::string series;  // the run's block; "baseline" for a baseline
  std::filesystem::path dir;
  RunStatus status;
  nlohmann::json values;   // key -> value
  nlohmann::json summary;  // null unless done
};
std::vector<SweepRow> sweep_rows(const Sweep& s);

}  // namespace lopper::trainers
