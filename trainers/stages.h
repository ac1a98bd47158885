// The stage registry: every stage kind with its docs line, how it reads its keys, what it
// needs, how it relates to pruning masks, and its run function. The experiment parser, the
// runner and finetune_prune --help read this one table; adding a stage is one new
// trainers/stage_*.cpp and one line in trainers/stages.cpp. Not the stages' code.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/bert_config.h"
#include "pruning/method.h"
#include "trainers/experiment.h"
#include "trainers/fields.h"

namespace lopper::trainers {

class Run;  // trainers/run.h: what a stage's run function works on

struct StageKind {
  std::string name;
  std::string doc;  // one line, for --help and docs/experiment.md
  // How the stage relates to the masks of pruning methods: `open` attaches methods whose
  // masks train until a `finalize` stage folds them into the weights; between the two only
  // `inspect` stages may run; `none` may run only while no masks are open. `stays` attaches
  // a method that is never finalized (attention_prune: a rule applied in every forward, kept
  // for the rest of the run): no later stage may open masks or change shapes under it.
  enum class Masks { none, open, finalize, inspect, stays } masks = Masks::none;
  bool trains = false;     // needs data.train and data.dev
  bool evaluates = false;  // needs data.dev
  // Changes the weights' shapes without opening masks (fisher_search removes heads and neurons).
  bool reshapes = false;
  // Holds weights at zero for the rest of the run (nm_prune): no later stage may open masks,
  // change shapes or hold another pattern.
  bool holds_zeros = false;
  // Reads the stage's own keys ("kind" is read already); the parser calls finish() after.
  std::function<std::shared_ptr<const StageOptions>(Fields& f, const Experiment& e)> parse;
  // Optional: checks the options against the model before anything is written.
  std::function<void(const StageSpec& s, const nn::BertConfig& c)> check;
  std::function<void(Run& run, const StageSpec& s)> run;
  // For `open` stages: the pruning methods it attaches to a model of config c (the runner
  // recreates them from this when it resumes from a checkpoint).
  std::function<std::vector<std::unique_ptr<pruning::PruningMethod>>(const StageSpec& s, const nn::BertConfig& c)> methods;
};

// For `open` stages: adds the stage's methods (from make), on the run's device, unless the
// checkpoint the run resumed from holds them already; logs each one's describe().
void open_methods(Run& run, const StageSpec& s, const decltype(StageKind::methods)& make);

const std::vector<StageKind>& stage_kinds();
const StageKind& stage_kind(const std::string& name);  // throws, listing the known kinds
std::vector<std::string> stage_names();
std::string stage_help();  // one line per kind: "  finetune      fine-tune the model (...)"

// One function per stage file, each returning its kind(s) for the table in stages.cpp.
StageKind finetune_stage();
StageKind mask_tune_stage();
StageKind head_gates_stage();
StageKind movement_stage();
StageKind remove_heads_stage();
StageKind fisher_search_stage();
StageKind nm_prune_stage();
StageKind attention_prune_stage();
StageKind evaluate_stage();
StageKind export_stage();

}  // namespace lopper::trainers
