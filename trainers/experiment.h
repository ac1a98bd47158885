// The experiment file: parsed, defaulted and validated in one place, so every mistake is
// caught before anything runs and named by its JSON path (docs/experiment.md lists every
// key). Not the runner: trainers/runner.h executes what this describes.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "nn/block_sparse.h"

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

// The options of one stage kind. Each kind derives its own struct and parse function
// (trainers/stage_*.cpp, listed in trainers/stages.cpp).
struct StageOptions {
  virtual ~StageOptions() = default;
};

struct StageSpec {
  std::string kind;  // a name in the stage registry (trainers/stages.h)
  std::string path;  // "stages.2", for errors
  std::shared_ptr<const StageOptions> options;

  template <class T>
  const T& as() const {
    const T* t = dynamic_cast<const T*>(options.get());
    LOPPER_CHECK(t != nullptr, path, ": stage '", kind, "' does not carry these options");
    return *t;
  }
};

struct Experiment {
  std::string file;  // the experiment file, absolute
  std::string name;
  uint64_t seed = 42;
  std::string output_dir;
  int64_t threads = 0;  // 0: all cores
  std::string device = "cpu";  // cpu, cuda or cuda:N: the model, batches, optimizer and teacher
  ModelSpec model;
  DataSpec data;
  TeacherSpec teacher;
  // Block-sparse inference for evaluation and latency on the CPU ("block_sparse").
  nn::BlockSparseOptions block_sparse;
  std::vector<StageSpec> stages;
  nlohmann::json resolved;  // after defaults and overrides, relative paths made absolute
};

// A path from the experiment file, relative to the file's folder, made absolute (empty stays
// empty): how every path key is read, stages' own included.
std::string resolve_path(const Experiment& e, const std::string& p);

// Applies one override "a.b.2.c=value" to j; value is JSON if it parses, else a string.
void apply_override(nlohmann::json& j, const std::string& assignment);

// A JSON file parsed strictly: a key given twice in one object is an error naming its path;
// syntax errors give line and column. For experiment and sweep files; `what` names the
// file in the messages ("experiment file").
nlohmann::json read_json_strict(const std::string& path, const std::string& what);

// Reads, overrides, validates. Throws lopper::Error with the JSON path, the value and what
// was expected (and the nearest known key for a typo); JSON syntax errors give line and column.
Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides = {});
Experiment parse_experiment(nlohmann::json j, const std::string& file);

}  // namespace lopper::trainers
