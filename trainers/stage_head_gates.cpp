// head_gates: trains Hard-Concrete L0 gates on the attention heads (and optionally the FFN
// neurons) together with the model, towards an l0_penalty or a head-count target.
#include <numeric>

#include "pruning/l0_gates.h"
#include "trainers/run.h"
#include "trainers/stages.h"
#include "trainers/train_loop.h"

namespace lopper::trainers {

namespace {
struct HeadGatesOptions : TrainOptions {
  pruning::L0GateOptions gates;
};
}  // namespace

StageKind head_gates_stage() {
  StageKind k;
  k.name = "head_gates";
  k.doc = "train Hard-Concrete L0 gates on heads (and FFN neurons) with the model: l0_penalty or target_heads";
  k.masks = StageKind::Masks::open;
  k.trains = true;
  k.parse = [](Fields& s, const Experiment& e) {
    auto o = std::make_shared<HeadGatesOptions>();
    parse_train_options(s, e, *o, false, true);
    pruning::L0GateOptions& g = o->gates;
    g.l0_penalty = s.num("l0_penalty", 0, 0, 1e6, ">= 0");
    g.target_heads = s.integer("target_heads", 0, 0, 1 << 20, "0 (use l0_penalty) or a head count");
    LOPPER_CHECK((g.l0_penalty > 0) != (g.target_heads > 0), s.path(), ": set exactly one of l0_penalty (> 0) and ",
                 "target_heads (> 0)");
    g.target_warmup_ratio = s.num("target_warmup_ratio", 0.5, 0, 1, "0 to 1");
    g.lagrangian_lr = s.num("lagrangian_lr", 0.05, 0, 1e3, ">= 0");
    g.gate_lr = s.num("gate_lr", 0.1, 1e-12, 100, "a learning rate > 0");
    g.temperature = s.num("temperature", 2.0 / 3.0, 1e-3, 100, "> 0 (Hard-Concrete beta)");
    g.gate_init = s.num("gate_init", 3.0, -100, 100, "an initial log_alpha");
    g.ffn_gates = s.boolean("ffn_gates", false);
    g.ffn_l0_penalty = s.num("ffn_l0_penalty", 0, 0, 1e6, ">= 0");
    LOPPER_CHECK(g.ffn_gates == (g.ffn_l0_penalty > 0), s.path(), ": ffn_gates needs ffn_l0_penalty > 0, and ",
                 "ffn_l0_penalty needs ffn_gates");
    return o;
  };
  k.check = [](const StageSpec& s, const nn::BertConfig& c) {
    int64_t heads = std::accumulate(c.heads_per_layer.begin(), c.heads_per_layer.end(), int64_t{0});
    int64_t target = s.as<HeadGatesOptions>().gates.target_heads;
    LOPPER_CHECK(target < heads, s.path, ".target_heads: ", target, " is not below the model's ", heads, " heads");
  };
  k.methods = [](const StageSpec& s, const nn::BertConfig& c) {
    std::vector<std::unique_ptr<pruning::PruningMethod>> m;
    m.push_back(std::make_unique<pruning::L0Gates>(c, s.as<HeadGatesOptions>().gates));
    return m;
  };
  k.run = [make = k.methods](Run& run, const StageSpec& s) {
    open_methods(run, s, make);
    train_stage(run, s, s.as<HeadGatesOptions>());
  };
  return k;
}

}  // namespace lopper::trainers
