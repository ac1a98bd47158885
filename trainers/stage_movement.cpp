// movement: trains block scores with the model (movement, soft_movement) or prunes by
// magnitude, towards a final density on a cubic schedule; remove_heads then folds the masks
// and removes the heads and neurons left with nothing.
#include "pruning/movement.h"
#include "trainers/run.h"
#include "trainers/stages.h"
#include "trainers/train_loop.h"

namespace lopper::trainers {

namespace {
struct MovementStageOptions : TrainOptions {
  pruning::MovementOptions movement;
};

// [rows, cols], each a positive integer or "all" (the whole dimension).
pruning::BlockShape parse_block(const nlohmann::json& v, const std::string& path) {
  auto dim = [&](const nlohmann::json& x) -> int64_t {
    if (x.is_string() && x.get<std::string>() == "all") return 0;
    LOPPER_CHECK(x.is_number_integer() && x.get<int64_t>() > 0, path, ": ", x.dump(),
                 " is not a block size (a positive integer or \"all\")");
    return x.get<int64_t>();
  };
  LOPPER_CHECK(v.is_array() && v.size() == 2, path, ": expected [rows, cols], got ", v.dump());
  return {dim(v[0]), dim(v[1])};
}
}  // namespace

StageKind movement_stage() {
  StageKind k;
  k.name = "movement";
  k.doc = "movement / soft_movement / magnitude pruning of encoder weights in blocks, towards final_density";
  k.masks = StageKind::Masks::open;
  k.trains = true;
  k.parse = [](Fields& s, const Experiment& e) {
    auto o = std::make_shared<MovementStageOptions>();
    parse_train_options(s, e, *o, false, true);
    pruning::MovementOptions& m = o->movement;
    try {
      m.kind = pruning::score_kind_from_name(s.str("method", "movement"));
    } catch (const Error& err) {
      LOPPER_FAIL(join_path(s.path(), "method"), ": ", err.what());
    }
    auto block = [&](const char* key, nlohmann::json def) {
      return parse_block(s.value(key, std::move(def)), join_path(s.path(), key));
    };
    m.blocks.qkv = block("qkv_block", {32, 32});
    m.blocks.attention_output = block("attention_output_block", {32, 32});
    m.blocks.hybrid_ffn = s.boolean("hybrid", false);
    m.blocks.intermediate = block("intermediate_block", {1, 1});
    m.blocks.output = block("output_block", {1, 1});
    m.final_density = s.num("final_density", 0.1, 1e-9, 1, "a share of weights in (0, 1]");
    m.warmup = s.num("warmup", 0.1, 0, 1, "0 to 1 (part of the stage)");
    m.cooldown = s.num("cooldown", 0.1, 0, 1, "0 to 1 (part of the stage)");
    LOPPER_CHECK(m.warmup + m.cooldown < 1, s.path(), ": warmup + cooldown must be below 1");
    m.score_lr = s.num("score_lr", 0.01, 1e-12, 100, "a learning rate > 0");
    m.score_init = s.num("score_init", 0.0, -100, 100, "an initial score");
    m.threshold = s.num("threshold", 0.1, 0, 1, "0 to 1 (final tau of sigmoid(S) > tau)");
    m.lambda = s.num("lambda", 0.0, 0, 1e6, ">= 0");
    m.filled = s.boolean("filled", false);
    return o;
  };
  k.check = [](const StageSpec& s, const nn::BertConfig& c) {
    try {
      pruning::MovementPruning(c, s.as<MovementStageOptions>().movement);  // block shapes divide the matrices
    } catch (const Error& err) {
      LOPPER_FAIL(s.path, ": ", err.what());
    }
  };
  k.methods = [](const StageSpec& s, const nn::BertConfig& c) {
    std::vector<std::unique_ptr<pruning::PruningMethod>> m;
    m.push_back(std::make_unique<pruning::MovementPruning>(c, s.as<MovementStageOptions>().movement));
    return m;
  };
  k.run = [make = k.methods](Run& run, const StageSpec& s) {
    open_methods(run, s, make);
    train_stage(run, s, s.as<MovementStageOptions>());
  };
  return k;
}

}  // namespace lopper::trainers
