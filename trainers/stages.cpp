// The table of stage kinds, in the order --help lists them.
#include "trainers/stages.h"

#include <cstdio>

#include "core/error.h"
#include "trainers/run.h"

namespace lopper::trainers {

void open_methods(Run& run, const StageSpec& s, const decltype(StageKind::methods)& make) {
  bool resumed = false;  // the checkpoint's methods are there already
  for (auto& m : run.methods()) resumed = resumed || m.stage == run.state().stage;
  if (!resumed) {
    for (auto& m : make(s, run.model().config())) {
      m->to(run.device());
      run.methods().push_back({run.state().stage, std::move(m)});
    }
  }
  for (auto& m : run.methods()) std::fprintf(stderr, "%s: %s\n", s.kind.c_str(), m.method->describe().c_str());
}

const std::vector<StageKind>& stage_kinds() {
  static const std::vector<StageKind> kinds = {
      finetune_stage(),   head_gates_stage(), movement_stage(), remove_heads_stage(),
      mask_tune_stage(),  fisher_search_stage(), nm_prune_stage(), attention_prune_stage(),
      evaluate_stage(),   export_stage(),
  };
  return kinds;
}

std::vector<std::string> stage_names() {
  std::vector<std::string> names;
  for (const StageKind& k : stage_kinds()) names.push_back(k.name);
  return names;
}

const StageKind& stage_kind(const std::string& name) {
  for (const StageKind& k : stage_kinds())
    if (k.name == name) return k;
  std::string all;
  for (auto& n : stage_names()) all += (all.empty() ? "" : ", ") + n;
  LOPPER_FAIL("unknown stage kind '", name, "' (known: ", all, ")");
}

std::string stage_help() {
  std::string s;
  for (const StageKind& k : stage_kinds()) {
    std::string name = k.name;
    name.resize(std::max<size_t>(name.size() + 1, 14), ' ');
    s += "  " + name + k.doc + "\n";
  }
  return s;
}

}  // namespace lopper::trainers
