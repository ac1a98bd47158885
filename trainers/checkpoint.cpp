// Checkpoints of a run: model, config, every active pruning method's state, optimizer and
// RunState, written to a temporary folder that LATEST points at only once it is complete;
// --resume restores them bitwise. The best checkpoint of a training stage lives in best/.
#include <algorithm>
#include <fstream>

#include "nn/safetensors.h"
#include "trainers/run.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json state_json(const RunState& s) {
  return {{"stage", s.stage}, {"step", s.step}, {"epoch", s.epoch}, {"batch_in_epoch", s.batch_in_epoch},
          {"dropout_offset", s.dropout_offset}, {"best", s.best}, {"best_step", s.best_step}, {"last_eval", s.last_eval},
          {"pruning", s.pruning}, {"wall_seconds", s.wall_seconds}, {"timing", s.timing}, {"sparsity", s.sparsity}};
}

// A state.json read back and checked: every field present, of its type and in range.
RunState state_from(const json& j, int64_t num_stages, const std::string& where) {
  RunState s;
  try {
    s.stage = j.at("stage");
    s.step = j.at("step");
    s.epoch = j.at("epoch");
    s.batch_in_epoch = j.at("batch_in_epoch");
    s.dropout_offset = j.at("dropout_offset");
    s.best = j.at("best");
    s.best_step = j.at("best_step");
    s.last_eval = j.at("last_eval");
    s.pruning = j.at("pruning");
    s.wall_seconds = j.at("wall_seconds");
    s.timing = j.value("timing", json::object());  // absent from checkpoints older than it
    s.sparsity = j.value("sparsity", json());       // likewise
  } catch (const json::exception& e) {
    LOPPER_FAIL(where, ": damaged (", e.what(), ")");
  }
  LOPPER_CHECK(s.stage >= 0 && s.stage <= num_stages && s.step >= 0 && s.epoch >= 0 && s.batch_in_epoch >= 0 &&
                   s.wall_seconds >= 0,
               where, ": damaged (stage ", s.stage, " of ", num_stages, ", step ", s.step, ", epoch ", s.epoch, ", batch ",
               s.batch_in_epoch, ")");
  return s;
}

// The keys of the resolved experiment that may change between a run and its resume: the
// folder may move, the thread count is the machine's.
json comparable(json resolved) {
  resolved.erase("output_dir");
  resolved.erase("threads");
  return resolved;
}

// "stages.0.batch_size: 8 -> 16; ..." for the differences between two resolved experiments.
std::string differences(const json& was, const json& now) {
  std::string out;
  int shown = 0;
  for (const json& op : json::diff(was, now)) {
    std::string path = op.at("path");
    json::json_pointer ptr(path);
    std::string key = path.substr(1);
    std::replace(key.begin(), key.end(), '/', '.');
    std::string before = was.contains(ptr) ? was.at(ptr).dump() : "(absent)";
    std::string after = now.contains(ptr) ? now.at(ptr).dump() : "(absent)";
    if (shown++ < 4) out += (out.empty() ? "" : "; ") + key + ": " + before + " -> " + after;
  }
  if (shown > 4) out += "; and " + std::to_string(shown - 4) + " more";
  return out;
}

fs::path method_file(const fs::path& dir, const pruning::PruningMethod& m) {
  return dir / ("method." + m.name() + ".safetensors");
}

}  // namespace

void Run::save_checkpoint(const nn::Optimizer* opt) {
  // Each rank's dropout stream stands at its own offset (its batches' lengths differ from
  // the others'): rank 0 records them all.
  std::vector<int64_t> offsets = {static_cast<int64_t>(dropout_gen_.offset())};
  if (comm_->size() > 1) offsets = comm_->all_gather(Tensor::from_vector<int64_t>(offsets, {1})).to_vector<int64_t>();
  if (!writer()) return;
  std::string name = "stage" + std::to_string(state_.stage) + "-step" + std::to_string(state_.step);
  fs::path dir = out_ / "checkpoints" / name, tmp = out_ / "checkpoints" / (name + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  nn::save_safetensors((tmp / "model.safetensors").string(), model_->state_dict());
  model_->config().save((tmp / "config.json").string());
  json methods = json::array();
  for (auto& [stage, m] : methods_) {
    nn::save_safetensors(method_file(tmp, *m).string(), m->state_dict());
    methods.push_back({{"name", m->name()}, {"stage", stage}});
  }
  if (opt) nn::save_safetensors((tmp / "optimizer.safetensors").string(), opt->state_dict());
  if (!held_.empty()) {
    nn::StateDict held;
    for (auto& [name, mask] : held_) held[name] = mask.to(Device::cpu());
    nn::save_safetensors((tmp / "held_masks.safetensors").string(), held);
  }
  state_.wall_seconds = elapsed_seconds();
  json state = state_json(state_);
  state["methods"] = methods;
  state["experiment"] = comparable(e_.resolved);
  state["world_size"] = comm_->size();
  state["dropout_offsets"] = offsets;
  write_atomic(tmp / "state.json", state.dump(2));
  fs::remove_all(dir);
  fs::rename(tmp, dir);
  std::string previous;
  if (fs::exists(out_ / "checkpoints" / "LATEST")) std::ifstream(out_ / "checkpoints" / "LATEST") >> previous;
  write_atomic(out_ / "checkpoints" / "LATEST", name + "\n");
  if (!previous.empty() && previous != name) fs::remove_all(out_ / "checkpoints" / previous);
}

void Run::restore() {
  // A checkpoint carries its own config: the model may have lost heads since the start.
  std::string name;
  std::ifstream(out_ / "checkpoints" / "LATEST") >> name;
  // LATEST names a folder beside it, nothing else.
  LOPPER_CHECK(!name.empty() && name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos,
               "--resume: '", (out_ / "checkpoints" / "LATEST").string(), "' does not name a checkpoint ('", name, "')");
  fs::path dir = out_ / "checkpoints" / name;
  for (const char* f : {"state.json", "model.safetensors", "config.json"})
    LOPPER_CHECK(fs::is_regular_file(dir / f), "--resume: checkpoint '", dir.string(), "' is incomplete (no ", f, ")");
  json state;
  try {
    state = read_json(dir / "state.json");
  } catch (const json::exception& e) {
    LOPPER_FAIL("--resume: '", (dir / "state.json").string(), "' is damaged (", e.what(), ")");
  }
  // The experiment must be the one that wrote the checkpoint.
  LOPPER_CHECK(state.contains("experiment"), "--resume: checkpoint '", dir.string(),
               "' was written by an older Lopper that did not record its experiment; start over with --overwrite");
  json now = comparable(e_.resolved);
  LOPPER_CHECK(state["experiment"] == now, "--resume: the experiment differs from the one that wrote '", dir.string(),
               "': ", differences(state["experiment"], now),
               " (resume with the original file and --set values, or start over with --overwrite)");
  const int saved_world = state.value("world_size", 1);
  LOPPER_CHECK(saved_world == comm_->size(), "--resume: checkpoint '", dir.string(), "' was written by ", saved_world,
               " rank(s) and this run has ", comm_->size(), ": resume with the same number of ranks (the data order ",
               "and the per-rank dropout streams depend on it)");
  state_ = state_from(state, static_cast<int64_t>(e_.stages.size()), (dir / "state.json").string());
  // Mid-stage, the optimizer's moments are part of the state.
  LOPPER_CHECK(state_.step == 0 || fs::is_regular_file(dir / "optimizer.safetensors"), "--resume: checkpoint '",
               dir.string(), "' is at step ", state_.step, " of a stage but has no optimizer.safetensors");
  nn::BertConfig c = nn::BertConfig::from_file((dir / "config.json").string());
  c.num_labels = cfg_.num_labels;
  model_ = build_model(c);
  nn::StateDict weights = nn::load_safetensors((dir / "model.safetensors").string()).tensors;
  nn::check_finite(weights, "--resume: checkpoint '" + dir.string() + "'");
  model_->load_state_dict(weights);
  model_->to(device_);
  // Each method is made again by the stage that attached it, then given its saved state.
  for (const json& entry : state.value("methods", json::array())) {
    std::string mname = entry.at("name");
    int64_t stage = entry.at("stage");
    LOPPER_CHECK(stage >= 0 && stage < static_cast<int64_t>(e_.stages.size()) && stage_kind(e_.stages[stage].kind).methods,
                 "checkpoint ", dir.string(), " holds pruning method '", mname, "' of stage ", stage,
                 ", which attaches none in this experiment file (was it changed since the run started?)");
    const StageSpec& s = e_.stages[stage];
    bool found = false;
    for (auto& m : stage_kind(s.kind).methods(s, model_->config())) {
      if (m->name() != mname) continue;
      m->load_state_dict(nn::load_safetensors(method_file(dir, *m).string()).tensors);
      m->to(device_);
      methods_.push_back({stage, std::move(m)});
      found = true;
    }
    LOPPER_CHECK(found, "checkpoint ", dir.string(), ": stage ", stage, " (", s.kind, ") has no pruning method '", mname, "'");
  }
  held_.clear();
  if (fs::exists(dir / "held_masks.safetensors"))
    for (auto& [name, mask] : nn::load_safetensors((dir / "held_masks.safetensors").string()).tensors)
      held_[name] = mask.to(device_).contiguous();
  LOPPER_CHECK(held_.empty() == state_.sparsity.is_null(), "--resume: checkpoint '", dir.string(), "' is damaged (",
               held_.empty() ? "a sparsity pattern without held_masks.safetensors" : "held masks without a pattern", ")");
  wall_base_ = state_.wall_seconds;
  if (fs::exists(dir / "optimizer.safetensors")) resume_optimizer_ = dir / "optimizer.safetensors";
  uint64_t offset = state_.dropout_offset;  // rank 0's; each rank's in dropout_offsets
  if (json all = state.value("dropout_offsets", json::array()); all.size() == static_cast<size_t>(comm_->size()))
    offset = all[static_cast<size_t>(comm_->rank())].get<uint64_t>();
  dropout_gen_.set_state(dropout_gen_.seed(), offset);
  trim_metrics();
  std::fprintf(stderr, "resuming from %s: stage %lld, step %lld\n", dir.string().c_str(), static_cast<long long>(state_.stage),
               static_cast<long long>(state_.step));
}

fs::path Run::take_resume_optimizer() {
  fs::path p = resume_optimizer_;
  resume_optimizer_.clear();
  return p;
}

// On resume, drop log lines written after the checkpoint (they will be written again).
void Run::trim_metrics() {
  if (!writer()) return;
  fs::path p = out_ / "metrics.jsonl";
  if (!fs::exists(p)) return;
  std::ifstream in(p);
  std::string line, kept;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;  // a line cut by the kill
    int64_t st = j.value("stage", 0), sp = j.value("step", 0);
    if (st < state_.stage || (st == state_.stage && sp <= state_.step)) kept += line + "\n";
  }
  write_atomic(p, kept);
}

void Run::save_best() {
  if (writer()) {
    fs::create_directories(out_ / "best");
    nn::save_safetensors((out_ / "best" / "model.safetensors").string(), model_->state_dict());
    for (auto& [stage, m] : methods_) nn::save_safetensors(method_file(out_ / "best", *m).string(), m->state_dict());
  }
  comm_->barrier();  // a later load_best on every rank reads these files
}

void Run::load_best() {
  model_->load_state_dict(nn::load_safetensors((out_ / "best" / "model.safetensors").string()).tensors);
  for (auto& [stage, m] : methods_) m->load_state_dict(nn::load_safetensors(method_file(out_ / "best", *m).string()).tensors);
}

}  // namespace lopper::trainers
