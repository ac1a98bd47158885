// finetune and mask_tune: training stages with no pruning method of their own (mask_tune
// trains what is left after a finalize stage, distilling from the teacher by default).
#include "trainers/stages.h"
#include "trainers/train_loop.h"

namespace lopper::trainers {

namespace {
StageKind training_kind(const std::string& name, const std::string& doc, bool distill_default) {
  StageKind k;
  k.name = name;
  k.doc = doc;
  k.trains = true;
  k.parse = [distill_default](Fields& f, const Experiment& e) {
    auto o = std::make_shared<TrainOptions>();
    parse_train_options(f, e, *o, true, distill_default);
    return o;
  };
  k.run = [](Run& run, const StageSpec& s) { train_stage(run, s, s.as<TrainOptions>()); };
  return k;
}
}  // namespace

StageKind finetune_stage() {
  return training_kind("finetune", "fine-tune every weight on the task (epochs, lr, batch_size, schedule, ...)", false);
}

StageKind mask_tune_stage() {
  return training_kind("mask_tune", "fine-tune what is left after pruning; distills from the teacher if one is set",
                       true);
}

}  // namespace lopper::trainers
