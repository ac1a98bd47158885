// fisher_search: retraining-free pruning of the fine-tuned model (Kwon et al. 2022, and an
// iterative mode after K-prune): draws `samples` training examples with the run's seed,
// runs pruning/retrain_free on them, removes what it pruned for real and evaluates. No
// optimizer step; every rank computes the same result.
#include <algorithm>
#include <filesystem>
#include <numeric>

#include "pruning/retrain_free.h"
#include "trainers/run.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace {
struct FisherOptions : StageOptions {
  pruning::RetrainFreeOptions prune;
  std::string latency_table;  // absolute, for constraint latency
  int64_t samples = 2048, batch_size = 32, seq_len = 0, eval_batch_size = 64;
};

// `n` distinct training examples drawn with the seed, in batches of similar length.
std::vector<pruning::ExampleBatch> sample_batches(Run& run, int64_t n, int64_t batch_size) {
  const data::Dataset& d = *run.train_data();
  std::vector<int64_t> order(static_cast<size_t>(d.size()));
  std::iota(order.begin(), order.end(), int64_t{0});
  Generator gen(run.experiment().seed);
  data::shuffle_in_place(order, gen);
  order.resize(static_cast<size_t>(n));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return d.length(a) < d.length(b); });
  std::vector<pruning::ExampleBatch> out;
  for (size_t i = 0; i < order.size(); i += static_cast<size_t>(batch_size)) {
    std::vector<int64_t> idx(order.begin() + static_cast<std::ptrdiff_t>(i),
                             order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), i + batch_size)));
    data::Batch b = run.on_device(d.collate(idx));
    out.push_back({b.input_ids, b.token_type_ids, b.attention_mask, b.labels});
  }
  return out;
}

}  // namespace

StageKind fisher_search_stage() {
  StageKind k;
  k.name = "fisher_search";
  k.doc = "retraining-free pruning (Kwon et al.): Fisher search under a flops or latency target, rearrange, tune; "
          "mode iterative: sub-layer by sub-layer with weight refits";
  k.masks = StageKind::Masks::none;
  k.reshapes = true;
  k.trains = true;
  k.parse = [](Fields& s, const Experiment& e) {
    auto o = std::make_shared<FisherOptions>();
    pruning::RetrainFreeOptions& p = o->prune;
    p.constraint = s.choice("constraint", "flops", {"flops", "latency"});
    p.target = s.num("target", 0.5, 0, 1, "a fraction in (0, 1)");
    LOPPER_CHECK(p.target > 0 && p.target < 1, s.path(), ".target: ", p.target, " is not in (0, 1): it is the fraction of ",
                 "the ", p.constraint == "flops" ? "heads' and neurons' FLOPs" : "layers' latency", " that is kept");
    p.iterative = s.choice("mode", "one_shot", {"one_shot", "iterative"}) == "iterative";
    p.rearrange = s.boolean("rearrange", true);
    p.tune = s.boolean("tune", true);
    p.damp = s.num("damp", 1e-4, 0, 1e6, ">= 0 (ridge relative to the mean diagonal)");
    p.cls_only = s.boolean("cls_only", true);
    o->samples = s.integer("samples", 2048, 1, int64_t{1} << 24, "a count of training examples");
    o->batch_size = s.integer("batch_size", 32, 1, 4096, "1 to 4096");
    o->seq_len = s.integer("seq_len", 0, 0, 4096, "0 (the dev set's mean length) or a length");
    o->eval_batch_size = s.integer("eval_batch_size", 64, 1, 65536, "1 or more");
    std::string table = s.str("latency_table", "");
    if (p.constraint == "latency") {
      LOPPER_CHECK(!table.empty(), s.path(), ".latency_table: the latency constraint needs a table of this machine's ",
                   "latency per layer; make one with `build/apps/latency_table MODEL_DIR --batch 32 --seq-len 25 --out ",
                   "lut.json` (a minute or two) and set latency_table to its path");
      o->latency_table = resolve_path(e, table);
      LOPPER_CHECK(std::filesystem::is_regular_file(o->latency_table), s.path(), ".latency_table: '", o->latency_table,
                   "' is not a file (make one with build/apps/latency_table MODEL_DIR --out FILE)");
      s.set("latency_table", o->latency_table);
    } else {
      LOPPER_CHECK(table.empty(), s.path(), ".latency_table: only with \"constraint\": \"latency\"");
    }
    return o;
  };
  k.check = [](const StageSpec& s, const nn::BertConfig& c) {
    const auto& o = s.as<FisherOptions>();
    if (!o.latency_table.empty()) pruning::LatencyTable::load(o.latency_table).check(c, o.latency_table);
  };
  k.run = [](Run& run, const StageSpec& s) {
    const auto& o = s.as<FisherOptions>();
    const data::Dataset& train = *run.train_data();
    LOPPER_CHECK(o.samples <= train.size(), s.path, ".samples: ", o.samples, " examples asked for, but the training set ",
                 "has ", train.size(), "; set samples to at most ", train.size(), " (examples are drawn without ",
                 "replacement, each at most once)");
    pruning::RetrainFreeOptions p = o.prune;
    pruning::LatencyTable table;
    if (!o.latency_table.empty()) {
      table = pruning::LatencyTable::load(o.latency_table);
      table.check(run.model().config(), o.latency_table);
      p.table = &table;
    }
    p.seq_len = o.seq_len > 0 ? o.seq_len : data::mean_length(run.dev_data() ? *run.dev_data() : train);
    p.cls_only = p.cls_only && !run.regression();
    nlohmann::json& pruning = run.state().pruning;
    pruning["before"] = run.measure();
    auto batches = sample_batches(run, o.samples, o.batch_size);
    auto say = [&](const std::string& line) {
      if (run.writer()) std::fprintf(stderr, "fisher_search: %s\n", line.c_str());
    };
    say(std::to_string(o.samples) + " examples, " + (p.iterative ? "iterative" : "one shot") + ", " + p.constraint +
        " target " + std::to_string(p.target) + " at " + std::to_string(p.seq_len) + " tokens");
    nlohmann::json rep = pruning::prune_retrain_free(run.model(), batches, p, say);
    rep["samples"] = o.samples;
    pruning["fisher_search"] = rep;
    nlohmann::json dev = run.dev_data() ? run.evaluate(o.eval_batch_size) : nlohmann::json();  // a collective
    if (!run.writer()) return;
    std::fprintf(stderr, "fisher_search: kept %s heads and %s neurons per layer, %.3f of the %s, in %.1f s\n",
                 rep["kept"]["heads_per_layer"].dump().c_str(), rep["kept"]["neurons_per_layer"].dump().c_str(),
                 rep["cost_fraction"].get<double>(), p.constraint.c_str(), rep["seconds"]["total"].get<double>());
    if (!dev.is_null()) std::fprintf(stderr, "fisher_search: dev %s\n", dev.dump().c_str());
  };
  return k;
}

}  // namespace lopper::trainers
