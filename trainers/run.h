// One run of an experiment: the model, data, teacher, active pruning methods and where the
// run is (RunState), with the services stages share: evaluation, metrics, checkpoints,
// measurements. run.cpp sets it up and dispatches the stages through the registry;
// checkpoint.cpp saves and restores it; report.cpp measures and writes summary.json. Not a
// stage: each stage kind's code is in its own trainers/stage_*.cpp.
#pragma once
#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "nn/bert.h"
#include "nn/optim.h"
#include "pruning/method.h"
#include "pruning/nm_prune.h"
#include "trainers/communicator.h"
#include "trainers/distill.h"
#include "trainers/experiment.h"
#include "trainers/runner.h"

namespace lopper::trainers {

// Where the run is: saved with every checkpoint, restored on --resume.
struct RunState {
  int64_t stage = 0;           // index of the stage in progress
  int64_t step = 0;            // optimizer steps done in this stage
  int64_t epoch = 0;           // epoch in progress
  int64_t batch_in_epoch = 0;  // batches of that epoch already consumed
  uint64_t dropout_offset = 0;
  double best = -1e300;
  int64_t best_step = -1;
  nlohmann::json last_eval;
  double wall_seconds = 0;                         // run time up to this state, over every resume
  nlohmann::json pruning = nlohmann::json::object();  // before/after measurements, what finalize removed
  nlohmann::json timing = nlohmann::json::object();   // per training stage: steps, seconds, all-reduce seconds
  nlohmann::json sparsity;  // the pattern an nm_prune stage holds (null: none), for export and summary
};

// A pruning method attached by a stage, until a finalize stage removes it.
struct ActiveMethod {
  int64_t stage;  // index of the stage that attached it (recreates it on resume)
  std::unique_ptr<pruning::PruningMethod> method;
};

class Run {
 public:
  Run(const Experiment& e, const RunOptions& o);
  ~Run();
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;
  void execute();
  void validate();  // every check execute() makes before writing, and nothing else

  // ---- for stages ----
  const Experiment& experiment() const { return e_; }
  const RunOptions& options() const { return o_; }
  const std::filesystem::path& out() const { return out_; }
  RunState& state() { return state_; }
  nn::BertForSequenceClassification& model() { return *model_; }
  Device device() const { return device_; }
  const data::Dataset* train_data() const { return train_.get(); }
  const data::Dataset* dev_data() const { return dev_.get(); }
  bool regression() const { return regression_; }
  const data::TaskSpec& task() const { return task_; }
  Generator& dropout_gen() { return dropout_gen_; }
  // The data-parallel ranks (one process: SingleProcess). Rank 0 alone writes output_dir.
  Communicator& comm() { return *comm_; }
  bool writer() const { return comm_->rank() == 0; }
  std::vector<ActiveMethod>& methods() { return methods_; }
  // Weights held at zero (nm_prune's masks, by parameter name): training masks their gradients.
  pruning::HeldMasks& held_masks() { return held_; }
  // The teacher (teacher.path, or the model as it is at the first call, saved to
  // output_dir/teacher so that a resumed run distills from the same one).
  Distiller& teacher();
  // A batch on the run's device.
  data::Batch on_device(data::Batch b) const;

  // Evaluates on the dev set with deterministic masks; logs to metrics.jsonl if log.
  nlohmann::json evaluate(int64_t batch_size, bool log = true, std::vector<std::vector<float>>* logits_out = nullptr);
  void log_metrics(const nlohmann::json& j);
  // A checkpoint of the model, the methods, the optimizer (if given) and the state.
  void save_checkpoint(const nn::Optimizer* opt);
  void save_best();
  void load_best();
  // Size and speed of the model as it is now: parameters, heads, FLOPs, latency.
  nlohmann::json measure();
  double elapsed_seconds() const;
  // Whether a SIGINT or SIGTERM reached this rank or any other (a collective: every rank
  // asks at the same step boundary). Then the caller saves a checkpoint and calls stop().
  bool interrupted();
  [[noreturn]] void stop() const;  // throws Interrupted, naming the stage and step
  // An optimizer state saved by the checkpoint this run resumed from, taken once.
  std::filesystem::path take_resume_optimizer();

 private:
  void execute_here();
  void place();  // this rank's device, NCCL for several GPUs
  void load_inputs();
  void check_device() const;
  void check_limits() const;
  void prepare_output();
  void prepare_output_here();  // rank 0: lock, check, clear
  void lock_output();
  void setup();
  void restore();  // from output_dir's LATEST checkpoint
  void trim_metrics();
  void write_summary();
  double forward_latency_ms(int64_t batch, int64_t seq);
  std::unique_ptr<nn::BertForSequenceClassification> build_model(const nn::BertConfig& c) const;
  std::string check_load(const nn::LoadReport& rep, const std::string& what) const;

  const Experiment& e_;
  RunOptions o_;
  std::filesystem::path out_;
  Device device_;
  std::unique_ptr<Communicator> comm_;  // before dropout_gen_, which is seeded per rank
  Generator dropout_gen_;
  RunState state_;
  data::TaskSpec task_;
  bool regression_ = false;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::unique_ptr<data::Dataset> train_, dev_;
  nn::BertConfig cfg_;
  std::unique_ptr<nn::BertForSequenceClassification> model_;
  std::vector<ActiveMethod> methods_;
  pruning::HeldMasks held_;
  std::unique_ptr<Distiller> distiller_;
  std::string load_notes_;  // what loading the model had to say, printed when the run starts
  std::filesystem::path resume_optimizer_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  double wall_base_ = 0;
  int lock_fd_ = -1;  // output_dir/.lock, held while the run lives
};

// True once SIGINT or SIGTERM arrived during Run::execute; training loops stop at the next
// step boundary, save a checkpoint and throw Interrupted (Run::interrupted, Run::stop).
bool interrupt_requested();

// A training stage's record in RunState::timing as reported (summary.json, the stage's
// last line): kind, steps, ms_per_step, allreduce_ms_per_step, allreduce_share.
nlohmann::json timing_report(const nlohmann::json& t);

// Writes text to path through a temporary file and a rename: never half-written.
void write_atomic(const std::filesystem::path& path, const std::string& text);
nlohmann::json read_json(const std::filesystem::path& p);

}  // namespace lopper::trainers
