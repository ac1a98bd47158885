// The experiment file: parsed, defaulted and validated in one place, so every mistake is
// caught before anything runs and named by its JSON path (docs/experiment.md lists every
// key). Not the runner: trainers/runner.h executes what this describes.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lopper::trainers {

struct ModelSpec {
  std::string path;     // Hugging Face folder (config.json, model.safetensors, vocab)
  int64_t num_labels = 0;  // 0: from the task
};

struct DataSpec {
  std::string task = "sst2";  // a GLUE preset or "custom"
  std::string train, dev;
  std::string format = "tsv";
  bool header = true;
  std::string text, text_pair, label;  // empty: the preset's
  std::string label_type;              // empty: the preset's
  std::vector<std::string> label_names;
  int64_t max_seq_len = 128;
  int64_t max_train_examples = 0;  // 0: all
  int64_t max_eval_examples = 0;
};

struct TeacherSpec {
  bool enabled = false;  // a "teacher" block is present
  // A Hugging Face folder; empty: the model itself as it is when the first distilling stage
  // starts (self-distillation from the fine-tuned model), saved to output_dir/teacher.
  std::string path;
  double temperature = 2.0;
  double alpha = 0.5;          // weight of the logit loss; the task loss gets 1 - alpha
  double hidden_weight = 0.0;  // weight of the hidden-state MSE (0: off)
  // (student, teacher) hidden-state indices, 0 = embeddings, i = layer i's output; empty:
  // each student layer i to teacher layer round(i * teacher_layers / student_layers).
  std::vector<std::pair<int64_t, int64_t>> layer_map;
};

struct StageSpec {
  std::string kind;  // finetune, head_gates, remove_heads, mask_tune, evaluate, export
  // training stages: finetune, head_gates, mask_tune
  double epochs = 1;
  int64_t max_steps = 0;  // 0: from epochs
  double lr = 5e-5;
  int64_t batch_size = 32;
  int64_t eval_batch_size = 64;
  double weight_decay = 0.01;
  double warmup_ratio = 0.06;
  std::string schedule = "linear";
  int64_t grad_accum = 1;
  double max_grad_norm = 1.0;
  double label_smoothing = 0.0;
  int64_t eval_every = 0;        // steps; 0: at the end of each epoch
  int64_t checkpoint_every = 0;  // steps; 0: at each evaluation
  int64_t log_every = 50;
  bool load_best = true;  // default false for head_gates (the best would be the least pruned)
  bool distill = false;   // default: true for head_gates and mask_tune when a teacher is set
  // head_gates
  double l0_penalty = 0;          // coefficient of the expected number of open heads
  int64_t target_heads = 0;       // > 0: a Lagrangian term drives the open heads to this count
  double target_warmup_ratio = 0.5;  // the target falls linearly from all heads over this part
  double lagrangian_lr = 0.05;    // ascent rate of the two multipliers
  double gate_lr = 0.1;
  double temperature = 2.0 / 3.0;  // Hard-Concrete beta
  double gate_init = 3.0;          // initial log_alpha (gates open)
  bool ffn_gates = false;          // gate every FFN neuron too
  double ffn_l0_penalty = 0;       // coefficient of the expected number of open FFN neurons
  // remove_heads
  double threshold = 0.5;  // heads whose deterministic gate is below this are removed
  bool allow_empty_layers = false;
  // evaluate
  bool write_predictions = false;  // predictions.jsonl: logits per dev example
  // export
  std::string format = "safetensors";
};

struct Experiment {
  std::string file;  // the experiment file, absolute
  std::string name;
  uint64_t seed = 42;
  std::string output_dir;
  int64_t threads = 0;  // 0: all cores
  ModelSpec model;
  DataSpec data;
  TeacherSpec teacher;
  std::vector<StageSpec> stages;
  nlohmann::json resolved;  // after defaults and overrides, relative paths made absolute
};

// Applies one override "a.b.2.c=value" to j; value is JSON if it parses, else a string.
void apply_override(nlohmann::json& j, const std::string& assignment);

// Reads, overrides, validates. Throws lopper::Error with the JSON path, the value and what
// was expected (and the nearest known key for a typo); JSON syntax errors give line and column.
Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides = {});
Experiment parse_experiment(nlohmann::json j, const std::string& file);

}  // namespace lopper::trainers
