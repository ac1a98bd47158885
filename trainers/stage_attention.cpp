// attention_prune: masks the attention probabilities in every forward (top k per row, a
// fixed, scheduled or learned threshold, or static per-head position masks), evaluates with
// the mask, fine-tunes with it (distilling from the unpruned teacher by default) and
// evaluates again. The rule stays attached for the rest of the run: evaluation, export
// (config.json's lopper_attention_pruning) and any later training all see it.
#include <cstdio>

#include "pruning/attention_prune.h"
#include "trainers/run.h"
#include "trainers/stages.h"
#include "trainers/train_loop.h"

namespace lopper::trainers {

namespace {
struct AttentionStageOptions : TrainOptions {
  pruning::AttentionPruneOptions attention;
  bool finetune = true;               // false: evaluate with the mask only
  int64_t calibration_batches = 32;   // static_positions: training batches averaged for the start
};

pruning::AttentionPruning& the_method(Run& run) {
  for (auto& m : run.methods())
    if (m.stage == run.state().stage) return dynamic_cast<pruning::AttentionPruning&>(*m.method);
  LOPPER_FAIL("[attention_prune] the stage's method is not open");
}

nlohmann::json evaluation(Run& run, pruning::AttentionPruning& m, int64_t batch_size) {
  nlohmann::json dev = run.evaluate(batch_size);  // attaches the rule, deterministic: counts from here
  if (run.comm().size() > 1) {  // each rank counted its own batches
    Tensor c = m.eval_counts().to(run.device());
    run.comm().all_reduce(c, Reduce::sum);
    m.set_eval_counts(c.to(Device::cpu()));
  }
  return {{"dev", dev}, {"attention", m.sparsity_report()}};
}

void print(const char* when, const nlohmann::json& r, const pruning::AttentionPruning& m) {
  std::fprintf(stderr, "attention_prune: %s: dev %s, attention sparsity %.2f%%\n%s", when, r["dev"].dump().c_str(),
               100 * r["attention"]["sparsity"].get<double>(), m.picture().c_str());
}
}  // namespace

StageKind attention_prune_stage() {
  StageKind k;
  k.name = "attention_prune";
  k.doc = "mask attention probabilities in every forward (rule topk / threshold / learned_threshold / "
          "static_positions), fine-tune with the mask; the rule stays for the rest of the run";
  k.masks = StageKind::Masks::stays;
  k.trains = true;
  k.parse = [](Fields& s, const Experiment& e) {
    auto o = std::make_shared<AttentionStageOptions>();
    parse_train_options(s, e, *o, false, true);
    pruning::AttentionPruneOptions& a = o->attention;
    try {
      a.rule = pruning::attention_rule_from_name(s.str("rule", "topk"));
    } catch (const Error& err) {
      LOPPER_FAIL(join_path(s.path(), "rule"), ": ", err.what());
    }
    const bool ranks = a.rule == pruning::AttentionRule::topk || a.rule == pruning::AttentionRule::static_positions;
    if (ranks) {
      a.k = s.integer("k", 0, -1000000, 1000000, "an integer");
      a.keep = s.num("keep", 0, -1e9, 1e9, "a number");
    } else {
      a.threshold = s.num("threshold", a.rule == pruning::AttentionRule::learned_threshold ? 0.01 : 0.0, -1e9, 1e9,
                          "a number");
    }
    if (!ranks) a.relative = s.boolean("relative", false);
    if (a.rule == pruning::AttentionRule::threshold) a.schedule = s.boolean("schedule", false);
    if (a.rule == pruning::AttentionRule::learned_threshold) {
      a.target_sparsity = s.num("target_sparsity", 0, -1e9, 1e9, "a number");
      a.lagrangian_lr = s.num("lagrangian_lr", 0.05, 0, 1e3, ">= 0");
      a.surrogate_width = s.num("surrogate_width", 0.5, -1e9, 1e9, "a number");
    }
    if (a.rule == pruning::AttentionRule::learned_threshold || a.rule == pruning::AttentionRule::static_positions)
      a.lr = s.num("rule_lr", 0.01, 1e-12, 100, "a learning rate > 0");
    a.warmup = s.num("warmup", 0.1, -1e9, 1e9, "a number");
    a.cooldown = s.num("cooldown", 0.1, -1e9, 1e9, "a number");
    a.renormalize = s.boolean("renormalize", false);
    a.prune_cls_row = s.boolean("prune_cls_row", false);
    a.max_len = e.data.max_seq_len;
    o->finetune = s.boolean("finetune", true);
    if (a.rule == pruning::AttentionRule::static_positions)
      o->calibration_batches = s.integer("calibration_batches", 32, 1, 1 << 20, "1 or more");
    try {
      pruning::check_attention_options(a);
    } catch (const Error& err) {
      LOPPER_FAIL(s.path(), ".", err.what());
    }
    LOPPER_CHECK(o->finetune || a.rule != pruning::AttentionRule::learned_threshold, s.path(),
                 ".finetune: a learned threshold is learned by fine-tuning; set finetune true or use rule threshold");
    return o;
  };
  k.methods = [](const StageSpec& s, const nn::BertConfig& c) {
    std::vector<std::unique_ptr<pruning::PruningMethod>> m;
    m.push_back(std::make_unique<pruning::AttentionPruning>(c, s.as<AttentionStageOptions>().attention));
    return m;
  };
  k.run = [make = k.methods](Run& run, const StageSpec& s) {
    const auto& o = s.as<AttentionStageOptions>();
    open_methods(run, s, make);
    pruning::AttentionPruning& m = the_method(run);
    nlohmann::json& rec = run.state().pruning["attention_prune"];
    if (!rec.contains("before")) {  // not yet done by the run this one resumes
      if (o.attention.rule == pruning::AttentionRule::static_positions) {
        NoGradGuard ng;
        run.model().eval();
        m.calibrate(*run.model().bert, [&] {
          auto batches = data::epoch_batches(*run.train_data(), o.batch_size, true, run.experiment().seed, 0);
          for (size_t i = 0; i < batches.size() && static_cast<int64_t>(i) < o.calibration_batches; ++i) {
            data::Batch b = run.on_device(run.train_data()->collate(batches[i]));
            run.model().forward(b.input_ids, b.token_type_ids, b.attention_mask);
          }
        });
      }
      rec["before"] = evaluation(run, m, o.eval_batch_size);
      if (run.writer()) print("with the mask, before fine-tuning", rec["before"], m);
    }
    if (o.finetune) train_stage(run, s, o);
    m.freeze();
    rec["after"] = evaluation(run, m, o.eval_batch_size);
    rec["rule"] = m.rule_json();
    rec["finetuned"] = o.finetune;
    if (run.writer()) print(o.finetune ? "after fine-tuning with the mask" : "rule frozen", rec["after"], m);
  };
  return k;
}

}  // namespace lopper::trainers
