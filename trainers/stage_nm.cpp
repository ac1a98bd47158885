// nm_prune: N:M sparsity (NVIDIA's ASP, arbitrary N:M up to 32, vector- and block-wise,
// 2d, unstructured) on the encoder Linears the module patterns choose, optionally after a
// channel-permutation search; the masks are folded into the weights and held: every later
// training stage masks those weights' gradients, so they stay exactly zero. Evaluates.
#include <chrono>
#include <cstdio>

#include "pruning/nm_prune.h"
#include "trainers/run.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace {
struct NmStageOptions : StageOptions {
  pruning::NmPruneOptions nm;
  int64_t eval_batch_size = 64;
};

}  // namespace

StageKind nm_prune_stage() {
  StageKind k;
  k.name = "nm_prune";
  k.doc = "N:M sparsity (n, m up to 32; pattern 1d / 2d / unstructured; vector or block units; permute) on the "
          "encoder Linears, held at zero by later training";
  k.masks = StageKind::Masks::none;
  k.holds_zeros = true;
  k.evaluates = true;
  k.parse = [](Fields& s, const Experiment& e) {
    auto o = std::make_shared<NmStageOptions>();
    pruning::NmPruneOptions& nm = o->nm;
    pruning::NmPattern& p = nm.pattern;
    const std::string kind = s.choice("pattern", "1d", {"1d", "2d", "unstructured"});
    p.kind = kind == "1d" ? pruning::NmKind::one_d : kind == "2d" ? pruning::NmKind::two_d : pruning::NmKind::unstructured;
    if (p.kind == pruning::NmKind::unstructured) {
      p.density = s.num("density", 0.5, 0, 1, "a share of units kept in (0, 1]");
    } else {
      p.n = s.integer("n", 2, -1000000, 1000000, "an integer");
      p.m = s.integer("m", 4, -1000000, 1000000, "an integer");
    }
    p.greedy = p.kind == pruning::NmKind::two_d && s.choice("select", "best", {"best", "greedy"}) == "greedy";
    LOPPER_CHECK(!(s.has("vector") && s.has("block")), s.path(), ": vector and block are two kinds of unit; set one");
    if (s.has("vector")) {
      p.unit_rows = s.integer("vector", 4, 1, 4096, "a vector length (weights down a column) >= 1");
    } else if (s.has("block")) {
      nlohmann::json b = s.value("block", nlohmann::json::array());
      LOPPER_CHECK(b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer() &&
                       b[0].get<int64_t>() > 0 && b[1].get<int64_t>() > 0,
                   s.path(), ".block: expected [rows, cols] of positive integers, got ", b.dump());
      p.unit_rows = b[0].get<int64_t>();
      p.unit_cols = b[1].get<int64_t>();
    }
    nm.modules = s.strings("modules");
    nm.dense_fraction = s.num("dense_fraction", 0, 0, 1, "a share of the layers in [0, 1)");
    nm.permute = s.boolean("permute", false);
    o->eval_batch_size = s.integer("eval_batch_size", 64, 1, 65536, "1 or more");
    try {
      pruning::check_pattern(p);
    } catch (const Error& err) {
      LOPPER_FAIL(s.path(), ".", err.what());
    }
    LOPPER_CHECK(!nm.permute || e.teacher.hidden_weight == 0, s.path(), ".permute: the residual-stream permutation ",
                 "reorders hidden channels, which teacher.hidden_weight > 0 compares with the teacher's one by one; ",
                 "turn one of them off");
    return o;
  };
  k.check = [](const StageSpec& s, const nn::BertConfig& c) {
    try {
      pruning::select_linears(c, s.as<NmStageOptions>().nm);
    } catch (const Error& err) {
      LOPPER_FAIL(s.path, ".", err.what());
    }
  };
  k.run = [](Run& run, const StageSpec& s) {
    const auto& o = s.as<NmStageOptions>();
    const pruning::NmPattern& p = o.nm.pattern;
    auto t0 = std::chrono::steady_clock::now();
    std::vector<nn::Linear*> readers;  // a classifier straight on the hidden states
    if (!run.model().bert->pooler) readers.push_back(run.model().classifier.get());
    pruning::NmPruneResult r = pruning::nm_prune(*run.model().bert, readers, o.nm);
    nlohmann::json names = nlohmann::json::array();
    for (auto& [name, mask] : r.masks) names.push_back(name);
    run.held_masks() = r.masks;  // the run's only holding stage (the parser refuses a second)
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.report["seconds"] = seconds;
    run.state().pruning["nm_prune"] = r.report;
    nlohmann::json& sp = run.state().sparsity;
    sp = pruning::pattern_json(p);
    sp["permuted"] = o.nm.permute;
    sp["sparsity"] = r.report["sparsity"];
    sp["weights"] = names;
    nlohmann::json dev = run.dev_data() ? run.evaluate(o.eval_batch_size) : nlohmann::json();  // a collective
    if (!run.writer()) return;
    char kept[64];
    int at = std::snprintf(kept, sizeof kept, "%.2f%%", 100 * r.report["kept_magnitude"].get<double>());
    if (o.nm.permute)
      std::snprintf(kept + at, sizeof kept - at, " (%.2f%% unpermuted)",
                    100 * r.report["kept_magnitude_unpermuted"].get<double>());
    std::fprintf(stderr, "nm_prune: %s on %lld Linears, sparsity %.1f%%, |W| kept %s, %.1f s\n", p.str().c_str(),
                 static_cast<long long>(r.report["linears_pruned"].get<int64_t>()),
                 100 * r.report["sparsity"].get<double>(), kept, seconds);
    if (!dev.is_null()) std::fprintf(stderr, "nm_prune: dev %s\n", dev.dump().c_str());
  };
  return k;
}

}  // namespace lopper::trainers
