// remove_heads: finalizes every active pruning method (folds its deterministic masks into
// the weights and removes the pruned heads and neurons for real), measuring the model
// before and after for summary.json.
#include <numeric>

#include "trainers/run.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace {
struct RemoveOptions : StageOptions {
  pruning::FinalizeOptions finalize;
};
}  // namespace

StageKind remove_heads_stage() {
  StageKind k;
  k.name = "remove_heads";
  k.doc = "remove what the masks pruned, for real (threshold, allow_empty_layers); the model gets smaller";
  k.masks = StageKind::Masks::finalize;
  k.parse = [](Fields& s, const Experiment&) {
    auto o = std::make_shared<RemoveOptions>();
    o->finalize.threshold = s.num("threshold", 0.5, 0, 1, "0 to 1");
    o->finalize.allow_empty_layers = s.boolean("allow_empty_layers", false);
    return o;
  };
  k.run = [](Run& run, const StageSpec& s) {
    LOPPER_CHECK(!run.methods().empty(), "[remove_heads] no pruning method is open (a head_gates or movement stage must run first)");
    nn::BertModel& bert = *run.model().bert;
    for (auto& m : run.methods()) m.method->detach(bert);
    nlohmann::json& pruning = run.state().pruning;
    pruning["before"] = run.measure();
    for (auto& m : run.methods()) {
      nlohmann::json removed = m.method->finalize(bert, s.as<RemoveOptions>().finalize);
      for (auto& [key, v] : removed.items()) pruning[key] = v;
    }
    run.methods().clear();
    const nn::BertConfig& c = bert.config;
    int64_t kept = std::accumulate(c.heads_per_layer.begin(), c.heads_per_layer.end(), int64_t{0});
    nlohmann::json dev = run.dev_data() ? run.evaluate(64) : nlohmann::json();  // every rank: a collective
    if (!run.writer()) return;
    std::fprintf(stderr, "remove_heads: %lld heads kept of %lld\n", static_cast<long long>(kept),
                 static_cast<long long>(c.num_attention_heads * c.num_hidden_layers));
    if (!dev.is_null()) std::fprintf(stderr, "remove_heads: dev %s\n", dev.dump().c_str());
  };
  return k;
}

}  // namespace lopper::trainers
