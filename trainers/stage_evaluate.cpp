// evaluate: the dev-set metrics of the model as it is (with deterministic masks while a
// pruning method is open), optionally every example's logits in predictions.jsonl.
#include "trainers/run.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace {
struct EvaluateOptions : StageOptions {
  int64_t eval_batch_size = 64;
  bool write_predictions = false;  // predictions.jsonl: logits per dev example
};
}  // namespace

StageKind evaluate_stage() {
  StageKind k;
  k.name = "evaluate";
  k.doc = "dev-set metrics into metrics.jsonl and summary.json (write_predictions: logits per example)";
  k.masks = StageKind::Masks::inspect;
  k.evaluates = true;
  k.parse = [](Fields& s, const Experiment&) {
    auto o = std::make_shared<EvaluateOptions>();
    o->eval_batch_size = s.integer("eval_batch_size", 64, 1, 65536, "1 or more");
    o->write_predictions = s.boolean("write_predictions", false);
    return o;
  };
  k.run = [](Run& run, const StageSpec& s) {
    const auto& o = s.as<EvaluateOptions>();
    std::vector<std::vector<float>> logits;
    nlohmann::json m = run.evaluate(o.eval_batch_size, true, o.write_predictions ? &logits : nullptr);
    if (run.writer()) std::fprintf(stderr, "evaluate: %s\n", m.dump().c_str());
    if (!o.write_predictions) return;
    std::string text;
    const auto& labels = run.dev_data()->labels();
    for (size_t i = 0; i < logits.size(); ++i) {
      auto& l = logits[i];
      int64_t pred = std::max_element(l.begin(), l.end()) - l.begin();
      text += nlohmann::json{{"index", i}, {"logits", l}, {"prediction", run.regression() ? nlohmann::json(l[0]) : nlohmann::json(pred)},
                             {"label", labels[i]}}.dump() + "\n";
    }
    if (run.writer()) write_atomic(run.out() / "predictions.jsonl", text);
  };
  return k;
}

}  // namespace lopper::trainers
